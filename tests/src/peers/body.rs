//! Response bodies: what a handler plans to send (a status, headers, chunks and the spacing
//! between them), the task that streams it with failures applied, and the body type that logs
//! exactly what went to the connection.
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper::{Response, StatusCode};
use tokio::sync::{mpsc, Notify};

use super::fail::Fail;
use super::log::{lock, BodyHasher, Log};

/// How long a reset waits after the partial body was handed over, so that it is on the wire
/// before the RST (not a test time limit: only the order of bytes and RST matters).
const FLUSH_BEFORE_RESET: Duration = Duration::from_millis(150);

// === Plan ===

/// What a handler wants sent.
pub(crate) struct Plan {
    pub status: StatusCode,
    pub headers: Vec<(String, String)>,
    pub chunks: Chunks,
    /// Spacing between chunks (SSE events); zero sends them as fast as the client reads.
    pub delay: Duration,
}

/// The chunks of a body: a list, or generated on the fly (large bodies).
pub(crate) struct Chunks {
    pub count: usize,
    pub iter: Box<dyn Iterator<Item = Bytes> + Send>,
}

impl Chunks {
    pub(crate) fn list(list: Vec<Bytes>) -> Chunks {
        Chunks {
            count: list.len(),
            iter: Box::new(list.into_iter()),
        }
    }
}

impl Plan {
    /// A complete body in one chunk.
    pub(crate) fn bytes(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Plan {
        Plan {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            chunks: Chunks::list(vec![body.into()]),
            delay: Duration::ZERO,
        }
    }

    /// A JSON body.
    pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Plan {
        Plan::bytes(status, "application/json", value.to_string())
    }

    /// No body.
    pub(crate) fn empty(status: StatusCode) -> Plan {
        Plan {
            status,
            headers: Vec::new(),
            chunks: Chunks::list(Vec::new()),
            delay: Duration::ZERO,
        }
    }

    /// A `text/event-stream` of already-encoded events, spaced by `delay`.
    pub(crate) fn sse(events: Vec<Bytes>, delay: Duration) -> Plan {
        Plan {
            status: StatusCode::OK,
            headers: vec![
                (
                    "content-type".into(),
                    "text/event-stream; charset=utf-8".into(),
                ),
                ("cache-control".into(), "no-cache".into()),
            ],
            chunks: Chunks::list(events),
            delay,
        }
    }

    /// Adds a header.
    pub(crate) fn header(mut self, name: &str, value: impl Into<String>) -> Plan {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// Replaces the content type.
    pub(crate) fn content_type(mut self, value: &str) -> Plan {
        self.headers.retain(|(n, _)| n != "content-type");
        self.headers.push(("content-type".into(), value.into()));
        self
    }

    /// The plan as a real provider sends it to a client whose `Accept-Encoding` is `accept`:
    /// a complete JSON body gzip'd (`Content-Encoding: gzip`, `Vary: Accept-Encoding`) when
    /// the client takes gzip. Event streams, bulk bytes and anything else stay as they are.
    pub(crate) fn encoded_for(mut self, accept: Option<&str>) -> Plan {
        let json = self
            .headers
            .iter()
            .any(|(n, v)| n == "content-type" && v.trim_start().starts_with("application/json"));
        let encoded = self.headers.iter().any(|(n, _)| n == "content-encoding");
        if !json || encoded || self.chunks.count != 1 || !accepts_gzip(accept) {
            return self;
        }
        let body: Vec<u8> = self.chunks.iter.by_ref().flat_map(|b| b.to_vec()).collect();
        self.chunks = Chunks::list(vec![Bytes::from(gzip(&body))]);
        self.headers
            .push(("content-encoding".into(), "gzip".into()));
        self.headers.push(("vary".into(), "accept-encoding".into()));
        self
    }
}

/// Whether an `Accept-Encoding` value takes gzip (by name or `*`, with a q above zero).
fn accepts_gzip(accept: Option<&str>) -> bool {
    accept.into_iter().flat_map(|a| a.split(',')).any(|item| {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        matches!(coding.as_str(), "gzip" | "x-gzip" | "*") && q > 0.0
    })
}

/// `body` gzip'd, as one member.
pub(crate) fn gzip(body: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = e.write_all(body);
    e.finish().unwrap_or_default()
}

// === ConnCtl ===

/// A handle on one accepted connection that lets a handler end it abruptly.
pub(crate) struct ConnCtl {
    killed: Notify,
    /// A duplicate of the socket's descriptor, to set SO_LINGER 0 before a reset. Dropped
    /// when the connection ends so it never keeps the socket open.
    dup: Mutex<Option<OwnedFd>>,
}

impl ConnCtl {
    pub(crate) fn new(socket: &impl AsFd) -> Arc<ConnCtl> {
        Arc::new(ConnCtl {
            killed: Notify::new(),
            dup: Mutex::new(socket.as_fd().try_clone_to_owned().ok()),
        })
    }

    /// Ends the connection with a TCP reset.
    pub(crate) fn reset(&self) {
        if let Some(fd) = lock(&self.dup).take() {
            let _ = socket2::SockRef::from(&fd).set_linger(Some(Duration::ZERO));
        }
        self.killed.notify_one();
    }

    /// Ends the connection with an ordinary close (FIN, no TLS close_notify).
    pub(crate) fn close(&self) {
        self.disarm();
        self.killed.notify_one();
    }

    /// Forgets the duplicate descriptor (the connection has ended).
    pub(crate) fn disarm(&self) {
        drop(lock(&self.dup).take());
    }

    /// Resolves once a handler asked to end the connection.
    pub(crate) async fn killed(&self) {
        self.killed.notified().await
    }
}

// === OutBody ===

/// A response body that records what it hands to the connection into the peer's log.
pub struct OutBody {
    src: Src,
    hasher: Option<BodyHasher>,
    rec: Option<(Arc<Log>, u64)>,
    /// The declared length: once that much went out the body is complete, even if the
    /// connection never polls for its end.
    expected: Option<u64>,
    sent: u64,
}

enum Src {
    Full(Option<Bytes>),
    Chan(mpsc::Receiver<Bytes>),
}

impl OutBody {
    /// A body not logged anywhere (the peer's own `/__peer/` routes).
    pub(crate) fn unlogged(bytes: impl Into<Bytes>) -> OutBody {
        OutBody {
            src: Src::Full(Some(bytes.into())),
            hasher: None,
            rec: None,
            expected: None,
            sent: 0,
        }
    }

    fn finish(&mut self, complete: bool) {
        if let (Some(h), Some((log, seq))) = (self.hasher.take(), self.rec.as_ref()) {
            log.set_response_body(*seq, h.finish(complete));
        }
    }
}

impl Body for OutBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        let next = match &mut this.src {
            Src::Full(b) => b.take(),
            Src::Chan(rx) => match rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(b) => b,
            },
        };
        match next {
            Some(b) => {
                if let Some(h) = this.hasher.as_mut() {
                    h.update(&b);
                }
                this.sent += b.len() as u64;
                if this.expected == Some(this.sent) {
                    this.finish(true);
                }
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            None => {
                this.finish(true);
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.src, Src::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.src {
            Src::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Src::Chan(_) => SizeHint::default(),
        }
    }
}

impl Drop for OutBody {
    fn drop(&mut self) {
        self.finish(false);
    }
}

// === sending ===

/// Turns a plan into a response, streaming it (with `fail` applied) when it needs to be.
pub(crate) fn send(
    plan: Plan,
    fail: Option<Fail>,
    conn: Arc<ConnCtl>,
    log: Arc<Log>,
    seq: u64,
) -> Response<OutBody> {
    let Plan {
        status,
        headers,
        chunks,
        delay,
    } = plan;
    let delay = match fail {
        Some(Fail::Slow(d)) => d,
        _ => delay,
    };
    let reset = fail == Some(Fail::Reset);
    let mut chunks = chunks;
    // A single-chunk body is cut in pieces so that "part of it" and "slowly" mean something.
    if chunks.count == 1 && (reset || !delay.is_zero()) {
        let whole = chunks.iter.next().unwrap_or_default();
        let pieces = if reset { 2 } else { 8 };
        chunks = Chunks::list(split(whole, pieces));
    }
    let src = if !reset && delay.is_zero() && chunks.count <= 1 {
        Src::Full(Some(chunks.iter.next().unwrap_or_default()))
    } else {
        let (tx, rx) = mpsc::channel::<Bytes>(2);
        tokio::spawn(produce(chunks, delay, reset, conn, tx));
        Src::Chan(rx)
    };
    log.set_response(seq, status.as_u16(), headers.clone());
    let mut builder = Response::builder().status(status);
    for (name, value) in &headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let declared = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok());
    let expected = match &src {
        Src::Full(b) => Some(b.as_ref().map_or(0, |b| b.len() as u64)),
        Src::Chan(_) => declared,
    };
    let mut body = OutBody {
        src,
        hasher: Some(BodyHasher::default()),
        rec: Some((log, seq)),
        expected,
        sent: 0,
    };
    if expected == Some(0) {
        body.finish(true);
    }
    builder.body(body).unwrap_or_else(|e| {
        // Handlers only produce valid header names and values; say so loudly if not.
        let mut r = Response::new(OutBody::unlogged(format!("peer: bad response head: {e}\n")));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

async fn produce(
    chunks: Chunks,
    delay: Duration,
    reset: bool,
    conn: Arc<ConnCtl>,
    tx: mpsc::Sender<Bytes>,
) {
    let cut_after = if reset { chunks.count / 2 } else { usize::MAX };
    let mut iter = chunks.iter;
    for i in 0.. {
        if i == cut_after {
            break;
        }
        if i > 0 && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        // Pulled after the wait: a chunk made on the fly (a stamped event) is made when sent.
        let Some(chunk) = iter.next() else { break };
        if tx.send(chunk).await.is_err() {
            return; // the client went away
        }
    }
    if reset {
        tokio::time::sleep(FLUSH_BEFORE_RESET).await;
        conn.reset();
        // Keep the body open: ending it would let hyper finish the response properly.
        tx.closed().await;
    }
}

/// Splits `b` into `n` nearly equal pieces (fewer if it is short).
fn split(b: Bytes, n: usize) -> Vec<Bytes> {
    if b.len() < n {
        return if b.len() >= 2 {
            let mid = b.len() / 2;
            vec![b.slice(..mid), b.slice(mid..)]
        } else {
            vec![b]
        };
    }
    let step = b.len().div_ceil(n);
    (0..b.len())
        .step_by(step)
        .map(|i| b.slice(i..(i + step).min(b.len())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::accepts_gzip;

    #[test]
    fn accept_encoding_is_read_as_clients_send_it() {
        for yes in [
            "gzip",
            "gzip, deflate",
            "gzip, deflate, br, zstd",
            "br;q=1.0, GZIP;q=0.5",
            "*",
        ] {
            assert!(accepts_gzip(Some(yes)), "{yes}");
        }
        for no in ["identity", "br", "gzip;q=0", "deflate, gzip; q=0.0", ""] {
            assert!(!accepts_gzip(Some(no)), "{no}");
        }
        assert!(!accepts_gzip(None));
    }
}
