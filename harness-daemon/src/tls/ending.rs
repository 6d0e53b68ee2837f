//! How each side ended its TLS: with close_notify, or with a bare TCP end.
//!
//! A bare end (a "ragged EOF") is common — Python's ssl server sends no close_notify, nor do
//! many load balancers — and mainstream clients take it as the end of a close-delimited body
//! (browsers, Python's `suppress_ragged_eofs`); a body framed by its length or by chunks is
//! still checked by HTTP itself, so a truncated one is still an error. harness does the same:
//! [`Ending`] turns a ragged EOF into a plain end of stream, and notes which ending it was, for
//! the connection's `conn_close` (`client_tls_end`, `upstream_tls_end`).
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What `conn_close` says of a side that sent close_notify.
pub const CLOSE_NOTIFY: &str = "close_notify";

/// What `conn_close` says of a side that ended TCP without close_notify.
pub const NO_CLOSE_NOTIFY: &str = "no close_notify";

const OPEN: u8 = 0;
const CLEAN: u8 = 1;
const RAGGED: u8 = 2;

/// How one side's TLS ended, as far as harness read it.
#[derive(Debug, Default)]
pub struct TlsEnd(AtomicU8);

impl TlsEnd {
    /// [`CLOSE_NOTIFY`] or [`NO_CLOSE_NOTIFY`] once the side ended; `None` while it had not
    /// when the connection closed (harness ended it first), or for a side without TLS.
    pub fn recorded(&self) -> Option<String> {
        match self.0.load(Ordering::Relaxed) {
            CLEAN => Some(CLOSE_NOTIFY.to_owned()),
            RAGGED => Some(NO_CLOSE_NOTIFY.to_owned()),
            _ => None,
        }
    }

    fn ended(&self, how: u8) {
        let _ = self
            .0
            .compare_exchange(OPEN, how, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// The TLS endings of one connection's two sides.
#[derive(Debug, Default)]
pub struct TlsEnds {
    /// The enclosed client's.
    pub client: TlsEnd,
    /// The destination's.
    pub upstream: TlsEnd,
}

/// A TLS stream whose ragged EOF reads as a plain end, noted in a [`TlsEnd`].
pub struct Ending<S> {
    inner: S,
    ends: Arc<TlsEnds>,
    upstream: bool,
}

impl<S> Ending<S> {
    /// `inner`, the enclosed client's TLS stream, noting its end in `ends.client`.
    pub fn client(inner: S, ends: Arc<TlsEnds>) -> Ending<S> {
        Ending {
            inner,
            ends,
            upstream: false,
        }
    }

    /// `inner`, the destination's TLS stream, noting its end in `ends.upstream`.
    pub fn upstream(inner: S, ends: Arc<TlsEnds>) -> Ending<S> {
        Ending {
            inner,
            ends,
            upstream: true,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn end(&self) -> &TlsEnd {
        if self.upstream {
            &self.ends.upstream
        } else {
            &self.ends.client
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Ending<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() == before && buf.remaining() > 0 => {
                self.end().ended(CLEAN);
                Poll::Ready(Ok(()))
            }
            // rustls's word for a TCP end without close_notify.
            Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                self.end().ended(RAGGED);
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Ending<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    /// A stream that yields `data`, then ends as told.
    struct Scripted {
        data: Vec<u8>,
        ragged: bool,
    }

    impl AsyncRead for Scripted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            if !self.data.is_empty() {
                let n = self.data.len().min(buf.remaining());
                buf.put_slice(&self.data[..n]);
                self.data.drain(..n);
                return Poll::Ready(Ok(()));
            }
            if self.ragged {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "peer closed connection without sending TLS close_notify",
                )));
            }
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_ragged_end_reads_as_the_end_and_is_noted() {
        for ragged in [false, true] {
            let ends = Arc::new(TlsEnds::default());
            let inner = Scripted {
                data: b"body".to_vec(),
                ragged,
            };
            let mut s = Ending::upstream(inner, ends.clone());
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"body");
            let want = if ragged {
                NO_CLOSE_NOTIFY
            } else {
                CLOSE_NOTIFY
            };
            assert_eq!(ends.upstream.recorded().as_deref(), Some(want));
            assert_eq!(ends.client.recorded(), None);
        }
    }
}
