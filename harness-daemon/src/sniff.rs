//! What is the client speaking? The first bytes a client sends tell TLS, HTTP/1, HTTP/2 with
//! prior knowledge, or something else; they are read, classified, and handed back in front of
//! the stream ([`Rewound`]) so the next stage sees the connection from its first byte.
//!
//! No timing, fragmentation or load may make a TLS or HTTP client look like "other bytes"
//! (which would be relayed without interception, SNI or Host policy, or semantics). So:
//!
//! - the decision is made on what the bytes *are*, reading on until they are decisive: a TLS
//!   handshake record starts with `0x16`; an HTTP/1 request is a whole request line (method
//!   token, target, `HTTP/1.x`, after any empty lines); HTTP/2 its connection preface. A
//!   prefix that could still become one of those is read on, however slowly it comes, for up
//!   to the handshake limit (`limits.handshake_seconds`; then the connection is closed, never
//!   relayed raw);
//! - only a client that sends *nothing* for [`FIRST_BYTES_WAIT`] may be speaking a protocol in
//!   which the server speaks first (SSH, SMTP, …). Then the destination is connected and
//!   whoever speaks first decides: the server (a greeting) → recorded bytes both ways; the
//!   client → its bytes are classified as above. A TLS or HTTP server never speaks first, so a
//!   client that waits before its ClientHello is still intercepted.
use bytes::Bytes;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};

/// How long a client may stay silent before the server is given the chance to speak first.
pub const FIRST_BYTES_WAIT: Duration = Duration::from_secs(1);

/// The most bytes read to decide: an HTTP request line longer than this is handed to the HTTP
/// stage, which refuses it on the record.
pub const DECIDE_LIMIT: usize = 16 * 1024;

/// What the first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A TLS record (handshake, TLS 1.x).
    Tls,
    /// An HTTP/1 request line.
    Http1,
    /// The HTTP/2 connection preface.
    Http2,
    /// Anything else.
    Other,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Classifies a prefix: `None` while more bytes could still change the answer.
pub fn classify(prefix: &[u8]) -> Option<Kind> {
    let first = *prefix.first()?;
    if first == 0x16 {
        return Some(Kind::Tls);
    }
    if prefix.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(prefix) {
        return None;
    }
    if prefix.starts_with(H2_PREFACE) {
        return Some(Kind::Http2);
    }
    http1_request_line(prefix)
}

/// Whether `prefix` is (or could still become) an HTTP/1 request line: `token SP target SP
/// HTTP/d.d CRLF`, after any empty lines (RFC 9112 §2.2 lets servers skip them). Methods are
/// any token (lower case and WebDAV's included: the HTTP stage decides what it accepts).
fn http1_request_line(prefix: &[u8]) -> Option<Kind> {
    let mut i = 0;
    while i < prefix.len() && (prefix[i] == b'\r' || prefix[i] == b'\n') {
        i += 1;
    }
    let line = &prefix[i..];
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    // method
    let method_len = line.iter().take_while(|b| is_tchar(**b)).count();
    let Some(&after_method) = line.get(method_len) else {
        return if prefix.len() >= DECIDE_LIMIT {
            Some(Kind::Other)
        } else {
            None
        };
    };
    if method_len == 0 || after_method != b' ' {
        return Some(Kind::Other);
    }
    // target: visible characters up to the next space
    let rest = &line[method_len + 1..];
    let target_len = rest.iter().take_while(|b| b.is_ascii_graphic()).count();
    let Some(&after_target) = rest.get(target_len) else {
        // Still in the target: a long one is the HTTP stage's to refuse.
        return if prefix.len() >= DECIDE_LIMIT {
            Some(Kind::Http1)
        } else {
            None
        };
    };
    if target_len == 0 || after_target != b' ' {
        return Some(Kind::Other);
    }
    // version and end of line
    let version = &rest[target_len + 1..];
    let expected: &[u8] = b"HTTP/1.";
    for (k, &b) in version.iter().enumerate() {
        let ok = match k {
            0..=6 => b == expected[k],
            7 => b.is_ascii_digit(),
            8 => b == b'\r' || b == b'\n',
            _ => true,
        };
        if !ok {
            return Some(Kind::Other);
        }
        if k == 8 {
            return Some(Kind::Http1);
        }
    }
    // Still in the version: a request line that long is the HTTP stage's to refuse too (sniff
    // reads no further, so undecided here would end the connection as if the client closed).
    if prefix.len() >= DECIDE_LIMIT {
        Some(Kind::Http1)
    } else {
        None
    }
}

/// What [`sniff`] found.
pub enum Sniffed<S, U> {
    /// The client spoke first: what it speaks, its stream rewound, and the upstream connection
    /// when one was already made (to let the server speak first).
    Client {
        /// What the client speaks.
        kind: Kind,
        /// The client, its first bytes put back.
        client: Rewound<S>,
        /// The destination, when already connected.
        upstream: Option<U>,
    },
    /// The server spoke first: relay both ways, the server's greeting put back in front.
    Server {
        /// The client.
        client: S,
        /// The destination, its greeting put back.
        upstream: Rewound<U>,
    },
}

/// Why sniffing ended the connection.
#[derive(Debug, thiserror::Error)]
pub enum SniffError {
    /// Reading from the client failed.
    #[error("reading from the client: {0}")]
    Client(#[source] std::io::Error),
    /// The client closed before it said what it speaks.
    #[error("the client closed before sending a complete first line or handshake")]
    ClientClosed,
    /// Bytes came, but not enough to decide, within the handshake limit.
    #[error("the client's first bytes did not say what it speaks: closed, not relayed ({0})")]
    Undecided(crate::limits::TimedOut),
    /// Connecting to the destination (to let it speak first) failed.
    #[error("connecting to the destination: {0}")]
    Connect(#[source] std::io::Error),
    /// Reading the destination's greeting failed.
    #[error("reading from the destination: {0}")]
    Upstream(#[source] std::io::Error),
}

/// The destination, as [`sniff`] gets it: already connected, or to be connected (only if the
/// client is silent at first).
pub enum Destination<U, Fut> {
    /// Already connected (e.g. TLS to it is up).
    Connected(U),
    /// Connects when awaited.
    Connect(Fut),
}

/// Reads until the client's bytes decide what it speaks (see the module docs), for at most
/// `decide_within` from its first byte.
pub async fn sniff<S, U, Fut>(
    mut stream: S,
    destination: Destination<U, Fut>,
    decide_within: Duration,
) -> Result<Sniffed<S, U>, SniffError>
where
    S: AsyncRead + Unpin,
    U: AsyncRead + Unpin,
    Fut: std::future::Future<Output = std::io::Result<U>>,
{
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = vec![0u8; 16 * 1024];
    let (mut upstream, connect) = match destination {
        Destination::Connected(up) => (Some(up), None),
        Destination::Connect(fut) => (None, Some(fut)),
    };
    let n = match tokio::time::timeout(FIRST_BYTES_WAIT, stream.read(&mut chunk)).await {
        Ok(read) => read.map_err(SniffError::Client)?,
        Err(_) => {
            // Silent: maybe the server speaks first. Whoever does decides.
            let mut up = match (upstream.take(), connect) {
                (Some(up), _) => up,
                (None, Some(connect)) => connect.await.map_err(SniffError::Connect)?,
                (None, None) => unreachable!("a destination is always given"),
            };
            let mut greeting = vec![0u8; 16 * 1024];
            tokio::select! {
                read = stream.read(&mut chunk) => {
                    upstream = Some(up);
                    read.map_err(SniffError::Client)?
                }
                read = up.read(&mut greeting) => {
                    let n = read.map_err(SniffError::Upstream)?;
                    greeting.truncate(n);
                    return Ok(Sniffed::Server {
                        client: stream,
                        upstream: Rewound::new(Bytes::from(greeting), up),
                    });
                }
            }
        }
    };
    if n == 0 {
        return Err(SniffError::ClientClosed);
    }
    buf.extend_from_slice(&chunk[..n]);
    let decided = crate::limits::Limits::within(
        decide_within,
        "handshake_seconds",
        "the client sent no complete request line or handshake start",
        async {
            loop {
                if let Some(kind) = classify(&buf) {
                    return Ok(kind);
                }
                let room = (DECIDE_LIMIT + 1)
                    .saturating_sub(buf.len())
                    .min(chunk.len());
                let n = stream
                    .read(&mut chunk[..room])
                    .await
                    .map_err(SniffError::Client)?;
                if n == 0 {
                    // Closed mid-way: what came is still someone's bytes, but not a protocol we
                    // could interpret; say so rather than relay it.
                    return Err(SniffError::ClientClosed);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        },
    )
    .await
    .map_err(SniffError::Undecided)??;
    Ok(Sniffed::Client {
        kind: decided,
        client: Rewound::new(Bytes::from(buf), stream),
        upstream,
    })
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
        assert_eq!(classify(&[0x16]), Some(Kind::Tls));
        assert_eq!(classify(&[0x16, 0x03, 0x01, 0x02]), Some(Kind::Tls));
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Kind::Http1));
        assert_eq!(
            classify(b"POST /v1/messages HTTP/1.1\r\n"),
            Some(Kind::Http1)
        );
        assert_eq!(classify(b"\r\nGET / HTTP/1.0\n"), Some(Kind::Http1));
        assert_eq!(classify(b"get / HTTP/1.1\r\n"), Some(Kind::Http1));
        assert_eq!(classify(b"PROPFIND /dav HTTP/1.1\r\n"), Some(Kind::Http1));
        assert_eq!(
            classify(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Some(Kind::Http2)
        );
        assert_eq!(
            classify(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"),
            Some(Kind::Other)
        );
        assert_eq!(
            classify(b"\x00\x00\x00\x08\x04\xd2\x16\x2f"),
            Some(Kind::Other)
        );
        assert_eq!(classify(b"*1\r\n$4\r\nPING\r\n"), Some(Kind::Other));
    }

    #[test]
    fn prefixes_that_could_still_be_http_or_h2_wait_for_more() {
        for prefix in [
            &b""[..],
            b"G",
            b"GE",
            b"GET",
            b"GET ",
            b"GET /v1/x",
            b"GET / HTTP/1",
            b"GET / HTTP/1.1",
            b"\r\n",
            b"PRI * HT",
            b"SSH-2.0-OpenSSH_9.2p1",
        ] {
            assert_eq!(
                classify(prefix),
                None,
                "{:?}",
                String::from_utf8_lossy(prefix)
            );
        }
    }

    #[test]
    fn an_endless_request_target_goes_to_the_http_stage() {
        let mut line = b"GET /".to_vec();
        line.resize(DECIDE_LIMIT + 10, b'a');
        assert_eq!(classify(&line), Some(Kind::Http1));
    }

    /// Found by the `sniff` fuzz target: a request line whose method and target fill
    /// DECIDE_LIMIT and that is still in its version there was undecided, so `sniff`, reading
    /// no further, reported the client as closed instead of handing it to the HTTP stage.
    #[test]
    fn a_request_line_still_in_its_version_at_the_limit_is_http() {
        for method_len in [
            DECIDE_LIMIT - 1,
            DECIDE_LIMIT - 3,
            DECIDE_LIMIT - 64,
            DECIDE_LIMIT + 1,
        ] {
            let mut line = vec![b'G'; method_len];
            line.extend_from_slice(b" / HTTP/1.1\r\n");
            for n in DECIDE_LIMIT + 1..=line.len() {
                assert!(classify(&line[..n]).is_some(), "{method_len} {n}");
            }
        }
        let mut line = b"GET /".to_vec();
        line.resize(DECIDE_LIMIT - 3, b'a');
        line.extend_from_slice(b" HTTP/1.1\r\n");
        assert_eq!(classify(&line[..DECIDE_LIMIT + 1]), Some(Kind::Http1));
        assert_eq!(classify(&line[..DECIDE_LIMIT - 1]), None);
    }

    type Never = std::future::Ready<std::io::Result<tokio::io::DuplexStream>>;

    fn no_upstream() -> Destination<tokio::io::DuplexStream, Never> {
        Destination::Connect(std::future::ready(Err(std::io::Error::other(
            "not to be connected",
        ))))
    }

    #[tokio::test]
    async fn rewound_stream_replays_the_prefix() {
        let (mut a, b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, b"GET / HTTP/1.1\r\n")
            .await
            .unwrap();
        drop(a);
        let Ok(Sniffed::Client {
            kind,
            mut client,
            upstream: None,
        }) = sniff(b, no_upstream(), Duration::from_secs(30)).await
        else {
            panic!("client spoke first");
        };
        assert_eq!(kind, Kind::Http1);
        let mut all = Vec::new();
        client.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"GET / HTTP/1.1\r\n");
    }

    /// A request line sent a byte at a time, with pauses longer than the first-bytes wait, is
    /// still HTTP.
    #[tokio::test(start_paused = true)]
    async fn a_request_line_trickled_in_is_still_http() {
        let (mut a, b) = tokio::io::duplex(64);
        tokio::spawn(async move {
            for byte in b"GET / HTTP/1.1\r\n" {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                tokio::io::AsyncWriteExt::write_all(&mut a, &[*byte])
                    .await
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        let (up_a, _up_b) = tokio::io::duplex(64);
        let connect: Destination<_, Never> = Destination::Connected(up_a);
        match sniff(b, connect, Duration::from_secs(30)).await {
            Ok(Sniffed::Client { kind, upstream, .. }) => {
                assert_eq!(kind, Kind::Http1);
                assert!(upstream.is_some(), "connected while the client was silent");
            }
            Ok(Sniffed::Server { .. }) => panic!("the silent server did not speak"),
            Err(e) => panic!("{e}"),
        }
    }

    /// A silent client and a server that greets: the server's greeting comes back in front.
    #[tokio::test(start_paused = true)]
    async fn a_server_that_speaks_first_is_relayed() {
        let (_a, b) = tokio::io::duplex(64);
        let (up_a, mut up_b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut up_b, b"SSH-2.0-test\r\n")
            .await
            .unwrap();
        let connect = Destination::Connect(std::future::ready(Ok(up_a)));
        let Ok(Sniffed::Server { mut upstream, .. }) =
            sniff(b, connect, Duration::from_secs(30)).await
        else {
            panic!("server spoke first");
        };
        let mut greeting = [0u8; 14];
        upstream.read_exact(&mut greeting).await.unwrap();
        assert_eq!(&greeting, b"SSH-2.0-test\r\n");
    }

    /// Bytes that could be HTTP but never finish: closed, never relayed raw.
    #[tokio::test(start_paused = true)]
    async fn an_undecided_prefix_is_closed_not_relayed() {
        let (mut a, b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, b"GE")
            .await
            .unwrap();
        let result = sniff(b, no_upstream(), Duration::from_secs(30)).await;
        assert!(
            matches!(result, Err(SniffError::Undecided(_))),
            "{:?}",
            result.err()
        );
        drop(a);
    }
}
