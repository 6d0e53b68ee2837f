//! The HTTP stage: serve the enclosed client's HTTP (h1 or h2, as negotiated) with hyper, and
//! forward each exchange over one upstream connection of the same version, recording as it goes.
//!
//! The order of events for every exchange is the point of this module:
//! 1. the request head is durable before anything goes upstream;
//! 2. a small request body is recorded whole (`http_request_body`), in the same group commit as
//!    the head, and then forwarded; a large or streaming one chunk by chunk (`stream_chunk`),
//!    each chunk durable before it is sent;
//! 3. the response head is durable before the client sees it;
//! 4. a small, non-streaming response body is read whole, committed with its head and then
//!    released with it; anything else (SSE, large, unknown length) goes chunk by chunk, each
//!    released only once durable.
//!
//! So a small JSON exchange costs two commits (request, response), each shared by whatever else
//! the session commits at that moment.
//!
//! If the ledger fails: before the response starts, the client gets a 502 with a short reason;
//! once a body is streaming, the stream is cut (the client sees an aborted body, never
//! unrecorded bytes).
use crate::ledger::{
    ConnDenied, Direction, Durable, Entry, Header, HttpBody, HttpRequest, HttpResponse,
    LedgerError, StreamChunk,
};
use crate::limits::{HeadClock, HeadTimed, Limits, TimedOut};
use crate::policy::ConnPolicy;
use crate::record::{watched_relay, ConnRecorder, Watch};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// Bodies up to this size (complete, not event streams) are recorded as one entry.
pub const WHOLE_BODY_MAX: usize = 1024 * 1024;

/// How much of each body the semantics stage gets to read (the ledger always has all of it).
pub const SEMANTICS_CAP: usize = 8 * 1024 * 1024;

/// A copy of a body for the semantics stage, bounded by [`SEMANTICS_CAP`].
#[derive(Default)]
struct Capture {
    bytes: BytesMut,
    truncated: bool,
}

impl Capture {
    fn push(&mut self, data: &[u8]) {
        let room = SEMANTICS_CAP.saturating_sub(self.bytes.len());
        if data.len() > room {
            self.truncated = true;
        }
        self.bytes.extend_from_slice(&data[..data.len().min(room)]);
    }

    fn take(shared: &SharedCapture) -> (Bytes, bool) {
        let c = shared.lock().unwrap_or_else(|e| e.into_inner());
        (c.bytes.clone().freeze(), c.truncated)
    }
}

type SharedCapture = Arc<std::sync::Mutex<Capture>>;

/// What the semantics stage needs besides the response body, gathered as the exchange passes.
struct Pending {
    rec: ConnRecorder,
    of_seq: u64,
    of_hash: String,
    method: String,
    scheme: &'static str,
    authority: Option<String>,
    target: String,
    request_headers: Vec<(String, String)>,
    request: SharedCapture,
    status: u16,
    response_headers: Vec<(String, String)>,
    /// A model call the session's budget counts once its usage is known.
    settle: Option<crate::govern::Unsettled>,
}

impl Pending {
    /// Annotates the finished exchange (after its bytes were released: never on the client's
    /// critical path). Annotations reference the `http_response` entry by seq and hash.
    async fn annotate(mut self, response: &[u8], response_truncated: bool) {
        let (request, request_truncated) = Capture::take(&self.request);
        let view = crate::semantics::ExchangeView {
            method: &self.method,
            scheme: self.scheme,
            authority: self.authority.as_deref(),
            target: &self.target,
            request_headers: &self.request_headers,
            request_body: &request,
            request_truncated,
            status: self.status,
            response_headers: &self.response_headers,
            response_body: response,
            response_truncated,
        };
        let annotations = crate::semantics::annotate(&view);
        if let Some(settle) = self.settle.take() {
            let data = |topic| {
                annotations
                    .iter()
                    .find(|a| a.topic == topic)
                    .map(|a| &a.data)
            };
            if let Some(reply) = data("llm_response") {
                settle.settle(reply, data("llm_request"));
            }
        }
        for a in annotations {
            let entry = Entry::Annotation(crate::ledger::Annotation {
                of_seq: self.of_seq,
                of_hash: self.of_hash.clone(),
                by: a.by.into(),
                topic: a.topic.into(),
                data: a.data,
            });
            if self.rec.append_lazy(entry).await.is_err() {
                return;
            }
        }
    }
}

/// Recorded headers as (lower-case name, value or fingerprint) pairs for the semantics stage.
fn header_pairs(recorded: &[Header]) -> Vec<(String, String)> {
    recorded
        .iter()
        .map(|h| {
            let value = h
                .value
                .clone()
                .or_else(|| h.fingerprint.clone())
                .or_else(|| h.value_b64.clone())
                .unwrap_or_default();
            (h.name.to_ascii_lowercase(), value)
        })
        .collect()
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = BoxBody<Bytes, BoxError>;

/// Which HTTP the connection speaks (the same on both sides).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2.
    Http2,
}

/// Errors that end an HTTP connection.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The upstream handshake failed.
    #[error("upstream HTTP handshake: {0}")]
    Upstream(#[source] hyper::Error),
    /// Serving the client failed.
    #[error("serving the client: {0}")]
    Client(#[source] hyper::Error),
    /// The client took too long over a request head.
    #[error("serving the client: {0}")]
    RequestHead(TimedOut),
}

#[derive(Clone)]
enum Upstream {
    Http1(Arc<tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<ProxyBody>>>),
    Http2(hyper::client::conn::http2::SendRequest<ProxyBody>),
}

impl Upstream {
    async fn send(&self, req: Request<ProxyBody>) -> Result<Response<Incoming>, hyper::Error> {
        match self {
            Upstream::Http1(sender) => {
                let mut sender = sender.lock().await;
                sender.ready().await?;
                sender.send_request(req).await
            }
            Upstream::Http2(sender) => {
                let mut sender = sender.clone();
                sender.ready().await?;
                sender.send_request(req).await
            }
        }
    }
}

/// Serves one client connection until it ends.
///
/// Each request's host (`:authority` or `Host`) is put to `policy` before anything of it is
/// forwarded: a denied one is recorded (its head and the denial) and answered 403 by harness.
pub async fn serve<C, U>(
    client: C,
    upstream: U,
    version: Version,
    scheme: &'static str,
    policy: ConnPolicy,
    rec: ConnRecorder,
    limits: &Limits,
) -> Result<(), HttpError>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let upstream = match version {
        Version::Http1 => {
            // Header names go out as recorded (lower case): their case would otherwise be a
            // channel the ledger does not hold.
            let (sender, conn) = hyper::client::conn::http1::Builder::new()
                .handshake(TokioIo::new(upstream))
                .await
                .map_err(HttpError::Upstream)?;
            tokio::spawn(conn.with_upgrades());
            Upstream::Http1(Arc::new(tokio::sync::Mutex::new(sender)))
        }
        Version::Http2 => {
            let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .handshake(TokioIo::new(upstream))
                .await
                .map_err(HttpError::Upstream)?;
            tokio::spawn(conn);
            Upstream::Http2(sender)
        }
    };
    // Slowloris: a head trickled in a byte at a time keeps the connection busy, so the idle
    // limit alone would never end it (HTTP/1; an HTTP/2 head is bounded by its size).
    let head_clock = Arc::new(HeadClock::default());
    let clock = (version == Version::Http1).then(|| head_clock.clone());
    let service = hyper::service::service_fn(move |req| {
        let rec = rec.clone();
        let upstream = upstream.clone();
        let policy = policy.clone();
        let in_exchange = clock.as_ref().map(HeadClock::exchange);
        async move {
            let resp = exchange(rec, upstream, scheme, version, &policy, req).await;
            Ok::<_, Infallible>(held_until_sent(resp, in_exchange))
        }
    });
    match version {
        Version::Http1 => {
            let client = HeadTimed::new(client, head_clock.clone());
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(client), service)
                .with_upgrades();
            tokio::select! {
                served = served => served.map_err(HttpError::Client),
                () = head_clock.expired(limits.request_head) => {
                    Err(HttpError::RequestHead(TimedOut {
                        what: "the client sent no complete request head",
                        limit: limits.request_head,
                        key: "request_head_seconds",
                    }))
                }
            }
        }
        Version::Http2 => hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(client), service)
            .await
            .map_err(HttpError::Client),
    }
}

/// `resp`, holding `in_exchange` until its body has been sent (or dropped): until then, what
/// the client sends is not a new head.
fn held_until_sent(
    resp: Response<ProxyBody>,
    in_exchange: Option<crate::limits::InExchange>,
) -> Response<ProxyBody> {
    let Some(in_exchange) = in_exchange else {
        return resp;
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        // What follows is another protocol's, never a head.
        in_exchange.clock().upgraded();
    }
    resp.map(|body| {
        body.map_frame(move |frame| {
            let _held = &in_exchange;
            frame
        })
        .boxed()
    })
}

fn version_name(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/?",
    }
}

fn headers(rec: &ConnRecorder, map: &HeaderMap) -> Vec<Header> {
    map.iter()
        .map(|(name, value)| rec.ledger().header(name.as_str(), value.as_bytes()))
        .collect()
}

/// The request target with `key=` query parameters (API keys) replaced by their fingerprint.
fn redacted_target(rec: &ConnRecorder, uri: &http::Uri) -> String {
    let path = uri.path();
    let Some(query) = uri.query() else {
        return path.to_owned();
    };
    let query = crate::record::redact_query(rec.ledger(), query);
    format!("{path}?{query}")
}

/// A short error answer made by harness itself.
fn refusal(status: StatusCode, reason: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from(format!("harness: {reason}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

async fn exchange(
    rec: ConnRecorder,
    upstream: Upstream,
    scheme: &'static str,
    version: Version,
    policy: &ConnPolicy,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    let n = rec.next_exchange();
    let request_version = req.version();
    let client_upgrade = (version == Version::Http1
        && req.headers().contains_key(http::header::UPGRADE))
    .then(|| hyper::upgrade::on(&mut req));
    let head = HttpRequest {
        conn: rec.conn(),
        exchange: n,
        version: version_name(req.version()).into(),
        method: req.method().as_str().into(),
        scheme: scheme.into(),
        authority: req.uri().authority().map(|a| a.to_string()).or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        }),
        target: redacted_target(&rec, req.uri()),
        // An HTTP/1 absolute-form target or HTTP/2 `:scheme` naming another scheme than the
        // connection's reaches the destination as sent: recorded.
        uri_scheme: req
            .uri()
            .scheme_str()
            .filter(|s| !s.eq_ignore_ascii_case(scheme))
            .map(str::to_owned),
        headers: headers(&rec, req.headers()),
    };
    let (method, authority, target) = (
        head.method.clone(),
        head.authority.clone(),
        head.target.clone(),
    );
    let request_headers = header_pairs(&head.headers);
    // Every name the request gives — its target's authority and each Host header (an
    // upstream may read either) — must pass.
    let names = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .into_iter()
        .chain(
            req.headers()
                .get_all(http::header::HOST)
                .iter()
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned()),
        );
    for host in names {
        if let Err(denied) = policy.check(&host) {
            return refuse_host(&rec, head, policy, &host, denied).await;
        }
    }
    let (parts, body) = req.into_parts();
    let request_capture = SharedCapture::default();
    let governance = policy.governance();
    // A rule that reads bodies needs the body whole before it decides: held up to what the
    // semantics stage reads (beyond that it is unreadable, and `on_unparsable` decides).
    let hold = match &governance {
        Some((p, _)) if p.requests().reads_bodies() => SEMANTICS_CAP,
        _ => WHOLE_BODY_MAX,
    };
    let recorded = match request_body(&rec, n, head, body, request_capture.clone(), hold).await {
        Ok(recorded) => recorded,
        Err(reason) => return refusal(StatusCode::BAD_GATEWAY, &reason),
    };
    let mut settle = None;
    if let Some((governing, governor)) = governance {
        let whole = match &recorded {
            Forward::Whole(bytes, _) => Some(&bytes[..]),
            Forward::Streamed(_) => None,
        };
        // Every name the request goes by: each Host header, and the connection's own names.
        let names: Vec<String> = request_headers
            .iter()
            .filter(|(n, _)| n == "host")
            .map(|(_, v)| v.clone())
            .chain(policy.names().iter().cloned())
            .collect();
        let facts = crate::govern::facts_with_names(
            &method,
            authority.as_deref(),
            &target,
            &request_headers,
            whole,
            &names,
        );
        let line = crate::govern::RequestLine {
            method: &method,
            scheme,
            authority: authority.as_deref(),
            target: &target,
            headers: &request_headers,
            upgrade: client_upgrade.is_some(),
        };
        match crate::govern::gate(&rec, governor, &governing, n, &line, &facts).await {
            crate::govern::Gate::Pass(guard) => settle = guard,
            crate::govern::Gate::Refuse(refused) => {
                let answered = Answered {
                    rec: &rec,
                    n,
                    version: request_version,
                    method,
                    scheme,
                    authority,
                    target,
                    request_headers,
                    request: request_capture,
                };
                return answered.refuse(refused).await;
            }
            crate::govern::Gate::Unrecorded(reason) => {
                return refusal(
                    StatusCode::BAD_GATEWAY,
                    &format!("{reason}; the request was not forwarded"),
                )
            }
        }
    }
    let body = match recorded {
        Forward::Whole(bytes, trailers) => whole(bytes, trailers),
        Forward::Streamed(body) => body,
    };
    let mut resp = match upstream.send(Request::from_parts(parts, body)).await {
        Ok(resp) => resp,
        Err(e) => {
            let reason = format!("upstream request failed: {e}");
            rec.error("forwarding request", reason.clone()).await;
            return refusal(StatusCode::BAD_GATEWAY, &reason);
        }
    };
    let upstream_upgrade =
        (resp.status() == StatusCode::SWITCHING_PROTOCOLS).then(|| hyper::upgrade::on(&mut resp));
    // A reason phrase other than the status code's own reaches the client as sent, so it is
    // recorded; one that is not UTF-8 could not be recorded as it is, and is dropped (the client
    // gets the standard one).
    let reason = match resp.extensions_mut().remove::<hyper::ext::ReasonPhrase>() {
        Some(phrase) => match std::str::from_utf8(phrase.as_bytes()) {
            Ok(text) => {
                let text = text.to_owned();
                resp.extensions_mut().insert(phrase);
                Some(text)
            }
            Err(_) => None,
        },
        None => None,
    };
    let head = HttpResponse {
        conn: rec.conn(),
        exchange: n,
        version: version_name(resp.version()).into(),
        status: resp.status().as_u16(),
        reason,
        headers: headers(&rec, resp.headers()),
        answered_by: None,
    };
    let response_headers = header_pairs(&head.headers);
    // A whole body (small, not an event stream) is read before anything is recorded, so that
    // head and body are committed together — one fsync — and released together.
    let streaming = upstream_upgrade.is_some()
        || is_event_stream(resp.headers())
        || content_length(resp.headers()).is_none_or(|len| len > WHOLE_BODY_MAX as u64);
    let gathered = if streaming {
        None
    } else {
        Some(gather(resp.body_mut()).await)
    };
    let (durable, release) = match record_response(&rec, n, head, gathered).await {
        Ok(recorded) => recorded,
        Err(e) => {
            return refusal(
                StatusCode::BAD_GATEWAY,
                &format!("the ledger could not record the response ({e}); it was withheld"),
            )
        }
    };
    let pending = Pending {
        rec: rec.clone(),
        of_seq: durable.seq(),
        of_hash: durable.hash_hex(),
        method,
        scheme,
        authority,
        target,
        request_headers,
        request: request_capture,
        status: resp.status().as_u16(),
        response_headers,
        settle,
    };
    if let (Some(client), Some(upstream)) = (client_upgrade, upstream_upgrade) {
        // WebSocket and other upgrades: after the 101, the bytes both ways are recorded like
        // any non-HTTP stream; WebSocket frames are also decoded into per-message annotations.
        // An upgrade of an LLM API's path (the Responses API's WebSocket mode) also has its
        // calls annotated, both directions feeding one conversation.
        let calls = crate::semantics::websocket::Conversation::new(&pending.target)
            .map(|c| std::sync::Arc::new(std::sync::Mutex::new(c)));
        let taps = crate::websocket::negotiated(resp.headers()).map(|deflate| {
            let tap = |d| {
                let tap = crate::websocket::Tap::new(rec.conn(), d, deflate);
                let tap = match &calls {
                    Some(calls) => tap.with_calls(calls.clone()),
                    None => tap,
                };
                Box::new(tap) as Box<dyn Watch>
            };
            (tap(Direction::Up), tap(Direction::Down))
        });
        let relay_rec = rec.clone();
        rec.spawn_upgraded(async move {
            let rec = relay_rec;
            let (up, down) = taps.unzip();
            match tokio::try_join!(client, upstream) {
                Ok((client, upstream)) => {
                    let (client, upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                    if let Err(e) = watched_relay(client, upstream, &rec, up, down).await {
                        rec.error("upgraded connection", e).await;
                    }
                }
                Err(e) => rec.error("upgrade", e.to_string()).await,
            }
        });
        let (parts, _) = resp.into_parts();
        return Response::from_parts(
            parts,
            http_body_util::Empty::new().map_err(|n| match n {}).boxed(),
        );
    }
    let (parts, body) = resp.into_parts();
    let body = match release {
        Release::Whole(bytes, trailers) => {
            let copy = bytes.clone();
            rec.spawn(async move { pending.annotate(&copy, false).await });
            whole(bytes, trailers)
        }
        Release::Stream(first) => {
            let sink = Sink::Annotate(Box::new(pending));
            stream_through(rec.clone(), n, Direction::Down, first, body, sink)
        }
        Release::Failed(e) => failed_body(format!("upstream: {e}")),
    };
    Response::from_parts(parts, body)
}

/// A request harness answers itself (a request rule or the budget refused it): what the
/// annotation of its exchange needs.
struct Answered<'a> {
    rec: &'a ConnRecorder,
    n: u64,
    version: http::Version,
    method: String,
    scheme: &'static str,
    authority: Option<String>,
    target: String,
    request_headers: Vec<(String, String)>,
    request: SharedCapture,
}

impl Answered<'_> {
    /// Records harness's answer (`http_response` with `answered_by: "harness"`, and its body,
    /// in one commit) and only then returns it; 502 if it cannot be recorded.
    async fn refuse(self, refused: crate::govern::Refusal) -> Response<ProxyBody> {
        let mut map = HeaderMap::new();
        map.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(refused.content_type),
        );
        map.insert(http::header::CONTENT_LENGTH, refused.body.len().into());
        if let Some(seconds) = refused.retry_after {
            map.insert(http::header::RETRY_AFTER, seconds.into());
        }
        let head = HttpResponse {
            conn: self.rec.conn(),
            exchange: self.n,
            version: version_name(self.version).into(),
            status: refused.status.as_u16(),
            reason: None,
            headers: headers(self.rec, &map),
            answered_by: Some("harness".into()),
        };
        let response_headers = header_pairs(&head.headers);
        let recorded = async {
            let body = whole_body(self.rec, self.n, &refused.body, None).await?;
            self.rec
                .append_all(vec![
                    Entry::HttpResponse(head),
                    Entry::HttpResponseBody(body),
                ])
                .await
        };
        let durable = match recorded.await {
            Ok(durable) => durable[0],
            Err(e) => {
                return refusal(
                    StatusCode::BAD_GATEWAY,
                    &format!("the ledger could not record harness's refusal ({e}); the request was not forwarded"),
                )
            }
        };
        let pending = Pending {
            rec: self.rec.clone(),
            of_seq: durable.seq(),
            of_hash: durable.hash_hex(),
            method: self.method,
            scheme: self.scheme,
            authority: self.authority,
            target: self.target,
            request_headers: self.request_headers,
            request: self.request,
            status: refused.status.as_u16(),
            response_headers,
            settle: None,
        };
        let copy = refused.body.clone();
        self.rec
            .spawn(async move { pending.annotate(&copy, false).await });
        let mut resp = Response::new(
            Full::new(refused.body)
                .map_err(|never| match never {})
                .boxed(),
        );
        *resp.status_mut() = refused.status;
        *resp.headers_mut() = map;
        resp
    }
}

/// A request whose host the policy denies: its head and the denial are recorded, nothing of
/// it goes upstream, and harness answers 403 (502 if even that cannot be recorded).
async fn refuse_host(
    rec: &ConnRecorder,
    head: HttpRequest,
    policy: &ConnPolicy,
    host: &str,
    denied: crate::policy::Decision,
) -> Response<ProxyBody> {
    let reason = format!("HTTP host {host}: {}", denied.reason);
    let denial = Entry::ConnDenied(ConnDenied {
        conn: Some(rec.conn()),
        proto: "http".into(),
        dst: Some(policy.dst()),
        host: Some(host.to_owned()),
        caller: None,
        by: "daemon".into(),
        reason: reason.clone(),
        rule: denied.rule,
    });
    match rec.append_all(vec![Entry::HttpRequest(head), denial]).await {
        Ok(_) => refusal(
            StatusCode::FORBIDDEN,
            &format!("denied by policy: {reason}"),
        ),
        Err(e) => refusal(
            StatusCode::BAD_GATEWAY,
            &format!("the ledger could not record the request ({e}); it was not forwarded"),
        ),
    }
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// What was read of a body before deciding how to pass it on.
enum Gathered {
    /// All of it (up to [`WHOLE_BODY_MAX`]), and its trailers.
    Whole(Bytes, Option<HeaderMap>),
    /// The first part of a larger body; the rest is still to be read.
    Partial(Bytes),
}

async fn gather(body: &mut Incoming) -> Result<Gathered, hyper::Error> {
    gather_up_to(body, WHOLE_BODY_MAX).await
}

/// [`gather`] with another bound.
async fn gather_up_to(body: &mut Incoming, max: usize) -> Result<Gathered, hyper::Error> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        match frame.into_data() {
            Ok(data) => {
                buf.extend_from_slice(&data);
                if buf.len() > max {
                    return Ok(Gathered::Partial(buf.freeze()));
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    return Ok(Gathered::Whole(buf.freeze(), Some(trailers)));
                }
            }
        }
    }
    Ok(Gathered::Whole(buf.freeze(), None))
}

fn whole(bytes: Bytes, trailers: Option<HeaderMap>) -> ProxyBody {
    let data = (!bytes.is_empty()).then(|| Ok(Frame::data(bytes)));
    let trailers = trailers.map(|t| Ok(Frame::trailers(t)));
    let frames = data.into_iter().chain(trailers);
    StreamBody::new(futures_util::stream::iter(frames)).boxed()
}

/// The entry for a body read whole (inline, or a blob made durable first) with its trailers.
async fn whole_body(
    rec: &ConnRecorder,
    n: u64,
    bytes: &Bytes,
    trailers: Option<&HeaderMap>,
) -> Result<HttpBody, LedgerError> {
    Ok(HttpBody {
        conn: rec.conn(),
        exchange: n,
        body: rec.body(bytes.clone()).await?,
        trailers: trailers.map(|t| headers(rec, t)).unwrap_or_default(),
    })
}

/// A recorded request's body, as it is to be forwarded.
enum Forward {
    /// Read whole and durable with the head.
    Whole(Bytes, Option<HeaderMap>),
    /// Larger than was held: each chunk is recorded as it is forwarded.
    Streamed(ProxyBody),
}

/// Records the request — its head, then its body — and returns the body to forward. A whole
/// body (up to `hold` bytes) is committed together with the head, one fsync for both; a larger
/// one follows the durable head chunk by chunk. Either way nothing is forwarded before it is
/// durable; the error is the client's 502 reason.
async fn request_body(
    rec: &ConnRecorder,
    n: u64,
    head: HttpRequest,
    mut body: Incoming,
    capture: SharedCapture,
    hold: usize,
) -> Result<Forward, String> {
    let not_recorded = |what: &str, e: &dyn std::fmt::Display| {
        format!("the ledger could not record the request {what} ({e}); it was not forwarded")
    };
    let gathered = match gather_up_to(&mut body, hold).await {
        Ok(gathered) => gathered,
        Err(e) => {
            // The head is still recorded: the request was made, even if its body never came.
            let reason = format!("reading the request body: {e}");
            rec.append(Entry::HttpRequest(head))
                .await
                .map_err(|e| not_recorded("head", &e))?;
            rec.error("reading the request body", e.to_string()).await;
            return Err(reason);
        }
    };
    match gathered {
        Gathered::Whole(bytes, trailers) => {
            capture
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(&bytes);
            let entry = whole_body(rec, n, &bytes, trailers.as_ref())
                .await
                .map_err(|e| not_recorded("body", &e))?;
            rec.append_all(vec![
                Entry::HttpRequest(head),
                Entry::HttpRequestBody(entry),
            ])
            .await
            .map_err(|e| not_recorded("head and body", &e))?;
            Ok(Forward::Whole(bytes, trailers))
        }
        Gathered::Partial(first) => {
            rec.append(Entry::HttpRequest(head))
                .await
                .map_err(|e| not_recorded("head", &e))?;
            Ok(Forward::Streamed(stream_through(
                rec.clone(),
                n,
                Direction::Up,
                Some(first),
                body,
                Sink::Capture(capture),
            )))
        }
    }
}

/// How a response's body goes to the client once its head is durable.
enum Release {
    /// All of it, already durable with the head.
    Whole(Bytes, Option<HeaderMap>),
    /// Chunk by chunk as each becomes durable, starting with what was already read.
    Stream(Option<Bytes>),
    /// Not at all: reading it from upstream failed with this error; the client sees the
    /// head, then the body cut.
    Failed(String),
}

/// Records the response head — together with the whole body when `gathered` holds it (one
/// group commit for both) — and says how the body is to be released. `Err` means the head is
/// not durable: nothing of the response may reach the client.
async fn record_response(
    rec: &ConnRecorder,
    n: u64,
    head: HttpResponse,
    gathered: Option<Result<Gathered, hyper::Error>>,
) -> Result<(Durable, Release), LedgerError> {
    let release = match gathered {
        Some(Ok(Gathered::Whole(bytes, trailers))) => {
            let body = whole_body(rec, n, &bytes, trailers.as_ref()).await?;
            let durable = rec
                .append_all(vec![
                    Entry::HttpResponse(head),
                    Entry::HttpResponseBody(body),
                ])
                .await?;
            return Ok((durable[0], Release::Whole(bytes, trailers)));
        }
        None => Release::Stream(None),
        Some(Ok(Gathered::Partial(first))) => Release::Stream(Some(first)),
        Some(Err(e)) => Release::Failed(e.to_string()),
    };
    let durable = rec.append(Entry::HttpResponse(head)).await?;
    if let Release::Failed(e) = &release {
        rec.error("reading the response body", e.clone()).await;
    }
    Ok((durable, release))
}

/// A body that fails at once: the client sees the response cut.
fn failed_body(reason: String) -> ProxyBody {
    let frames = [Err::<Frame<Bytes>, BoxError>(reason.into())];
    StreamBody::new(futures_util::stream::iter(frames)).boxed()
}

/// Passes a body on chunk by chunk, each recorded as a `stream_chunk` and released only once
/// durable. The channel holds one chunk, so memory stays bounded whatever the body's size.
/// Where a streamed body's copy goes: into the request's capture, or (response) into the
/// annotations made once the stream ends.
enum Sink {
    Capture(SharedCapture),
    Annotate(Box<Pending>),
}

fn stream_through(
    rec: ConnRecorder,
    n: u64,
    direction: Direction,
    first: Option<Bytes>,
    mut body: Incoming,
    sink: Sink,
) -> ProxyBody {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
    let tracker = rec.clone();
    tracker.spawn(async move {
        let (capture, annotation) = match sink {
            Sink::Capture(c) => (c, None),
            Sink::Annotate(p) => (SharedCapture::default(), Some(p)),
        };
        let mut index = 0u64;
        let mut pending = first;
        // A model call the session's budget counts is read to its end even when the client
        // stops reading: an agent must not dodge its budget by closing a stream before the
        // usage arrives (the provider bills the call all the same).
        let counted = annotation.as_ref().is_some_and(|p| p.settle.is_some());
        let mut client_gone = false;
        loop {
            let (data, trailers, fin) = match pending.take() {
                Some(data) => (data, None, false),
                None => match body.frame().await {
                    None => (Bytes::new(), None, true),
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => (data, None, false),
                        Err(frame) => match frame.into_trailers() {
                            Ok(t) => (Bytes::new(), Some(t), true),
                            Err(_) => continue,
                        },
                    },
                    Some(Err(e)) => {
                        rec.error("streaming a body", format!("{direction:?}: {e}"))
                            .await;
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                },
            };
            let recorded = match rec.body(data.clone()).await {
                Ok(b) => b,
                Err(e) => {
                    let _ = tx.send(Err(format!("ledger: {e}").into())).await;
                    return;
                }
            };
            let chunk = StreamChunk {
                conn: rec.conn(),
                exchange: n,
                direction,
                index,
                body: recorded,
                fin,
                trailers: trailers
                    .as_ref()
                    .map(|t| headers(&rec, t))
                    .unwrap_or_default(),
            };
            if let Err(e) = rec.append(Entry::StreamChunk(chunk)).await {
                let _ = tx.send(Err(format!("ledger: {e}").into())).await;
                return;
            }
            index += 1;
            capture
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(&data);
            if !data.is_empty() && !client_gone && tx.send(Ok(Frame::data(data))).await.is_err() {
                if !counted {
                    return;
                }
                client_gone = true;
            }
            if let Some(t) = trailers.filter(|_| !client_gone) {
                let _ = tx.send(Ok(Frame::trailers(t))).await;
            }
            if fin {
                drop(tx);
                if let Some(annotation) = annotation {
                    let (bytes, truncated) = Capture::take(&capture);
                    annotation.annotate(&bytes, truncated).await;
                }
                return;
            }
        }
    });
    StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed()
}
