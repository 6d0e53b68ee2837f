//! What is the client speaking? The first bytes a client sends tell TLS, HTTP/1, HTTP/2 with
//! prior knowledge, or something else; they are read, classified, and handed back in front of
//! the stream ([`Rewound`]) so the next stage sees the connection from its first byte.
use bytes::Bytes;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};

/// How long to wait for a client's first bytes before treating the connection as one where the
/// server speaks first (SSH, SMTP…): recorded as bytes.
pub const FIRST_BYTES_WAIT: Duration = Duration::from_secs(1);

/// What the first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A TLS record (handshake, TLS 1.x).
    Tls,
    /// An HTTP/1 request line.
    Http1,
    /// The HTTP/2 connection preface.
    Http2,
    /// Anything else, or nothing yet.
    Other,
}

/// Classifies a prefix.
pub fn classify(prefix: &[u8]) -> Kind {
    const METHODS: [&[u8]; 9] = [
        b"GET ",
        b"POST ",
        b"PUT ",
        b"DELETE ",
        b"HEAD ",
        b"OPTIONS ",
        b"PATCH ",
        b"CONNECT ",
        b"TRACE ",
    ];
    if prefix.len() >= 2 && prefix[0] == 0x16 && prefix[1] == 0x03 {
        Kind::Tls
    } else if prefix.starts_with(b"PRI * HTTP/2.0") {
        Kind::Http2
    } else if METHODS.iter().any(|m| prefix.starts_with(m)) {
        Kind::Http1
    } else {
        Kind::Other
    }
}

/// Reads what the client sends first (waiting at most [`FIRST_BYTES_WAIT`]) and classifies it.
pub async fn sniff<S: AsyncRead + Unpin>(mut stream: S) -> std::io::Result<(Kind, Rewound<S>)> {
    let mut buf = vec![0u8; 16 * 1024];
    let n = match tokio::time::timeout(FIRST_BYTES_WAIT, stream.read(&mut buf)).await {
        Ok(read) => read?,
        Err(_) => 0,
    };
    buf.truncate(n);
    let kind = classify(&buf);
    Ok((kind, Rewound::new(Bytes::from(buf), stream)))
}

/// A stream with bytes already read put back in front of it.
pub struct Rewound<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Rewound<S> {
    /// `prefix` is returned by reads before anything from `inner`.
    pub fn new(prefix: Bytes, inner: S) -> Rewound<S> {
        Rewound { prefix, inner }
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewound<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let chunk = self.prefix.split_to(n);
            buf.put_slice(&chunk);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewound<S> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_first_bytes() {
        assert_eq!(classify(&[0x16, 0x03, 0x01, 0x02]), Kind::Tls);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Kind::Http1);
        assert_eq!(classify(b"POST /v1/messages HTTP/1.1\r\n"), Kind::Http1);
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Kind::Http2);
        assert_eq!(classify(b"SSH-2.0-OpenSSH"), Kind::Other);
        assert_eq!(classify(b""), Kind::Other);
    }

    #[tokio::test]
    async fn rewound_stream_replays_the_prefix() {
        let (mut a, b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, b"GET / HTTP/1.1\r\n")
            .await
            .unwrap();
        drop(a);
        let (kind, mut s) = sniff(b).await.unwrap();
        assert_eq!(kind, Kind::Http1);
        let mut all = Vec::new();
        s.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"GET / HTTP/1.1\r\n");
    }
}
