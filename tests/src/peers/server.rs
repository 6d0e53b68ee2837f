//! The peer itself: builder, accept loop (TLS with ALPN `h2`/`http/1.1`, hyper auto
//! server), request logging, failure injection, and the router that hands each route to its
//! module.
use std::collections::HashSet;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::body::{self, ConnCtl, OutBody, Plan};
use super::ca::{ServerCert, TestCa};
use super::client::Client;
use super::fail::{Fail, FailRule};
use super::log::{lock, BodyHasher, Exchange, Log, Outbound};
use super::reply::Reply;
use super::{anthropic, broker, bulk, gemini, mcp, openai, read_pem_certs, websocket, Error};

/// Request bodies above this size are refused with 413 (except `/upload`, which streams).
const MAX_BUFFERED_BODY: u64 = 64 << 20;

/// Default spacing between SSE events.
pub const DEFAULT_EVENT_DELAY: Duration = Duration::from_millis(10);

/// Where the MCP server's tools send their brokerage calls.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// Base URL, e.g. `https://broker.example.test` (or with a port).
    pub base_url: String,
    /// Address to connect to; resolved from the URL's host when `None`.
    pub connect: Option<SocketAddr>,
    /// Bearer token sent to it.
    pub token: String,
}

/// Configures and starts a [`Peer`].
pub struct PeerBuilder {
    ca: TestCa,
    names: Vec<String>,
    listen: SocketAddr,
    tls: bool,
    alpn: Vec<Vec<u8>>,
    event_delay: Duration,
    fail: Option<FailRule>,
    reply: Reply,
    after_tool: Option<Reply>,
    mcp_sse: bool,
    upstream: Option<Upstream>,
    trust: Vec<PathBuf>,
}

/// A running peer. Dropping it stops it (its listener and connections).
pub struct Peer {
    shared: Arc<Shared>,
    cert: Option<ServerCert>,
    task: JoinHandle<()>,
}

/// A peer that owns its own runtime, for synchronous tests. Dereferences to [`Peer`].
pub struct BlockingPeer {
    peer: Option<Peer>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// State every connection of one peer shares.
pub(crate) struct Shared {
    pub log: Arc<Log>,
    pub addr: SocketAddr,
    pub names: Vec<String>,
    pub event_delay: Duration,
    pub settings: Mutex<Settings>,
    pub mcp_sessions: Mutex<HashSet<String>>,
    pub orders: Mutex<Vec<Value>>,
    pub upstream: Upstream,
    pub client: Client,
}

pub(crate) struct Settings {
    pub fail: Option<FailRule>,
    pub reply: Reply,
    pub after_tool: Option<Reply>,
    pub mcp_sse: bool,
}

/// One request, read, as the route handlers see it.
pub(crate) struct Ctx {
    pub shared: Arc<Shared>,
    pub seq: u64,
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
    /// The request body's record (for `/upload`, whose bytes are not kept in `body`).
    pub body_len: u64,
    pub body_sha256: String,
}

/// The family of a route, which decides the shape of its error bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Anthropic,
    OpenAi,
    Gemini,
    Mcp,
    Broker,
    Plain,
}

// === impl PeerBuilder ===

impl PeerBuilder {
    /// DNS names for the certificate (SAN); the first is the peer's name in URLs.
    pub fn names<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.names.extend(names.into_iter().map(Into::into));
        self
    }

    /// Listens on `ip` (port chosen by the kernel); the IP goes into the certificate too. A
    /// world address ([`crate::world::addr`]) is bound inside the test network namespace that
    /// stands for the outside world; loopback stays for peers local to the test (or started
    /// inside an enclosure).
    pub fn ip(mut self, ip: IpAddr) -> Self {
        self.listen = SocketAddr::new(ip, 0);
        self
    }

    /// Listens on `addr` exactly (in the world for a world address, as [`PeerBuilder::ip`]).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Serves plain HTTP (no TLS) instead.
    pub fn plaintext(mut self) -> Self {
        self.tls = false;
        self
    }

    /// Offers only HTTP/1.1 in ALPN.
    pub fn http1_only(mut self) -> Self {
        self.alpn = vec![b"http/1.1".to_vec()];
        self
    }

    /// Offers no ALPN at all (clients fall back to HTTP/1.1).
    pub fn no_alpn(mut self) -> Self {
        self.alpn.clear();
        self
    }

    /// Spacing between SSE events (default 10 ms; `x-peer-fail: slow` overrides).
    pub fn event_delay(mut self, delay: Duration) -> Self {
        self.event_delay = delay;
        self
    }

    /// Every request fails this way.
    pub fn fail(self, fail: Fail) -> Self {
        self.fail_rule(FailRule::always(fail))
    }

    /// Requests matching the rule fail.
    pub fn fail_rule(mut self, rule: FailRule) -> Self {
        self.fail = Some(rule);
        self
    }

    /// What the mock models answer (default [`Reply::default_first`]).
    pub fn reply(mut self, reply: Reply) -> Self {
        self.reply = reply;
        self
    }

    /// What the mock models answer when the last message carries a tool result (default
    /// [`Reply::default_after_tool`]).
    pub fn reply_after_tool(mut self, reply: Reply) -> Self {
        self.after_tool = Some(reply);
        self
    }

    /// MCP answers requests as SSE (`text/event-stream`) when the client accepts both.
    pub fn mcp_sse(mut self, sse: bool) -> Self {
        self.mcp_sse = sse;
        self
    }

    /// Where the MCP tools send brokerage calls (default: this peer itself).
    pub fn upstream(mut self, upstream: Upstream) -> Self {
        self.upstream = Some(upstream);
        self
    }

    /// Also trust these PEM roots for the peer's own outbound calls. (`SSL_CERT_FILE`, when
    /// set, is trusted too, so a peer running inside harness trusts harness's CA.)
    pub fn trust(mut self, pem: impl Into<PathBuf>) -> Self {
        self.trust.push(pem.into());
        self
    }

    /// Binds, issues the certificate and starts serving.
    pub async fn start(self) -> Result<Peer, Error> {
        let bind = |e| Error::io(format!("bind {}", self.listen), e);
        let listener = crate::world::listener(self.listen).map_err(bind)?;
        listener.set_nonblocking(true).map_err(bind)?;
        let listener = TcpListener::from_std(listener).map_err(bind)?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io(format!("bind {}", self.listen), e))?;
        let mut names = self.names.clone();
        let mut ips = Vec::new();
        if !addr.ip().is_unspecified() {
            ips.push(addr.ip());
        }
        if names.is_empty() {
            names.push("localhost".into());
        }
        let (cert, acceptor) = if self.tls {
            let label = format!("{}_{}", names[0], addr.port());
            let cert = self.ca.issue(&label, &names, &ips)?;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(cert.chain(), cert.key())?;
            config.alpn_protocols = self.alpn.clone();
            (Some(cert), Some(TlsAcceptor::from(Arc::new(config))))
        } else {
            (None, None)
        };

        let mut roots = self.ca.root_store();
        let mut trust = self.trust.clone();
        if let Some(file) = std::env::var_os("SSL_CERT_FILE") {
            trust.push(file.into());
        }
        for path in &trust {
            for c in read_pem_certs(path)? {
                let _ = roots.add(c);
            }
        }
        let client = Client::new(roots, &[b"h2", b"http/1.1"])?;
        let reachable = if addr.ip().is_unspecified() {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        } else {
            addr
        };
        let upstream = self.upstream.clone().unwrap_or_else(|| Upstream {
            base_url: format!(
                "{}://{}:{}",
                if self.tls { "https" } else { "http" },
                names[0],
                addr.port()
            ),
            connect: Some(reachable),
            token: "peer-broker-token".into(),
        });
        let shared = Arc::new(Shared {
            log: Arc::new(Log::default()),
            addr,
            names,
            event_delay: self.event_delay,
            settings: Mutex::new(Settings {
                fail: self.fail,
                reply: self.reply,
                after_tool: self
                    .after_tool
                    .or_else(|| Some(Reply::default_after_tool())),
                mcp_sse: self.mcp_sse,
            }),
            mcp_sessions: Mutex::new(HashSet::new()),
            orders: Mutex::new(Vec::new()),
            upstream,
            client,
        });
        let task = tokio::spawn(accept_loop(listener, acceptor, shared.clone()));
        Ok(Peer { shared, cert, task })
    }

    /// Starts the peer on a runtime of its own, for synchronous tests.
    pub fn spawn_in_thread(self) -> Result<BlockingPeer, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-peer")
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting a runtime for the peer", e))?;
        let peer = runtime.block_on(self.start())?;
        Ok(BlockingPeer {
            peer: Some(peer),
            runtime: Some(runtime),
        })
    }
}

// === impl Peer ===

impl Peer {
    /// A builder for a peer whose certificate `ca` signs. Defaults: `127.0.0.1`, a kernel
    /// chosen port, name `localhost`, TLS with ALPN `h2` and `http/1.1`.
    pub fn builder(ca: &TestCa) -> PeerBuilder {
        PeerBuilder {
            ca: ca.clone(),
            names: Vec::new(),
            listen: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0),
            tls: true,
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            event_delay: DEFAULT_EVENT_DELAY,
            fail: None,
            reply: Reply::default_first(),
            after_tool: None,
            mcp_sse: false,
            upstream: None,
            trust: Vec::new(),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Its DNS names (the first is used in [`Peer::url`]).
    pub fn names(&self) -> &[String] {
        &self.shared.names
    }

    /// `https://<first name>:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!(
            "{}://{}:{}{path}",
            if self.cert.is_some() { "https" } else { "http" },
            self.shared.names[0],
            self.shared.addr.port()
        )
    }

    /// Its certificate (`None` for a plaintext peer).
    pub fn cert(&self) -> Option<&ServerCert> {
        self.cert.as_ref()
    }

    /// Every request received so far, in order of arrival.
    pub fn requests(&self) -> Vec<Exchange> {
        self.shared.log.exchanges()
    }

    /// Requests its own tools made (MCP `place_order` → brokerage).
    pub fn outbound(&self) -> Vec<Outbound> {
        self.shared.log.outbound()
    }

    /// Orders the brokerage API accepted.
    pub fn orders(&self) -> Vec<Value> {
        lock(&self.shared.orders).clone()
    }

    /// Forgets the logged requests.
    pub fn clear_requests(&self) {
        self.shared.log.clear();
    }

    /// Changes (or removes) the configured failure.
    pub fn set_fail(&self, rule: Option<FailRule>) {
        lock(&self.shared.settings).fail = rule;
    }

    /// Changes what the mock models answer.
    pub fn set_reply(&self, reply: Reply) {
        lock(&self.shared.settings).reply = reply;
    }

    /// Changes what the mock models answer after a tool result (`None`: same as the first).
    pub fn set_reply_after_tool(&self, reply: Option<Reply>) {
        lock(&self.shared.settings).after_tool = reply;
    }

    /// Changes whether MCP answers as SSE.
    pub fn set_mcp_sse(&self, sse: bool) {
        lock(&self.shared.settings).mcp_sse = sse;
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// === impl BlockingPeer ===

impl BlockingPeer {
    /// Runs a future on the peer's runtime (e.g. a [`Client`] call from a synchronous test).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        // Both are Some until drop.
        self.runtime.as_ref().expect("runtime alive").block_on(f)
    }
}

impl std::ops::Deref for BlockingPeer {
    type Target = Peer;
    fn deref(&self) -> &Peer {
        // Some until drop.
        self.peer.as_ref().expect("peer alive")
    }
}

impl Drop for BlockingPeer {
    fn drop(&mut self) {
        drop(self.peer.take());
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

// === accepting ===

async fn accept_loop(listener: TcpListener, acceptor: Option<TlsAcceptor>, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, client)) = accepted else {
                    // EMFILE and the like: back off a little rather than spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                conns.spawn(serve_conn(tcp, client, acceptor.clone(), shared.clone()));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Who is on the other end of a connection.
#[derive(Clone)]
struct ConnInfo {
    client: SocketAddr,
    local: SocketAddr,
    sni: Option<String>,
    alpn: Option<String>,
}

async fn serve_conn(
    tcp: TcpStream,
    client: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    shared: Arc<Shared>,
) {
    let _ = tcp.set_nodelay(true);
    let local = tcp.local_addr().unwrap_or(shared.addr);
    let ctl = ConnCtl::new(&tcp);
    match acceptor {
        Some(acceptor) => {
            if let Ok(tls) = acceptor.accept(tcp).await {
                let (_, conn) = tls.get_ref();
                let info = ConnInfo {
                    client,
                    local,
                    sni: conn.server_name().map(str::to_string),
                    alpn: conn
                        .alpn_protocol()
                        .map(|p| String::from_utf8_lossy(p).into_owned()),
                };
                serve_http(tls, info, ctl.clone(), shared).await;
            }
        }
        None => {
            let info = ConnInfo {
                client,
                local,
                sni: None,
                alpn: None,
            };
            serve_http(tcp, info, ctl.clone(), shared).await;
        }
    }
    ctl.disarm();
}

async fn serve_http<I>(io: I, info: ConnInfo, ctl: Arc<ConnCtl>, shared: Arc<Shared>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let ctl = ctl.clone();
        service_fn(move |req| {
            let (shared, info, ctl) = (shared.clone(), info.clone(), ctl.clone());
            async move { Ok::<_, Infallible>(handle(shared, info, ctl, req).await) }
        })
    };
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::select! {
        _ = conn => {}
        _ = ctl.killed() => {}
    }
}

// === handling ===

async fn handle(
    shared: Arc<Shared>,
    info: ConnInfo,
    ctl: Arc<ConnCtl>,
    mut req: Request<Incoming>,
) -> Response<OutBody> {
    let upgradable =
        matches!(req.uri().path(), "/ws" | "/v1/responses") && req.method() == Method::GET;
    let upgrade = upgradable.then(|| hyper::upgrade::on(&mut req));
    let (parts, incoming) = req.into_parts();
    let path = parts.uri.path().to_string();
    if let Some(internal) = path.strip_prefix("/__peer/") {
        return internal_route(&shared, &parts.method, internal);
    }
    let kind = kind_of(&path);

    // The failure to inject: the header first, then the configured rule.
    let header_fail = parts
        .headers
        .get("x-peer-fail")
        .map(|v| v.to_str().unwrap_or("").parse::<Fail>());
    let fail = match header_fail {
        Some(Ok(f)) => Some(f),
        Some(Err(_)) | None => lock(&shared.settings).take_fail(&path),
    };

    // Read the body: buffered (up to a cap), or only hashed for /upload.
    let streaming = path == "/upload";
    let mut hasher = BodyHasher::default();
    let mut buf = BytesMut::new();
    let mut complete = true;
    let mut too_large = false;
    let mut body = incoming;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    hasher.update(&data);
                    if !streaming && !too_large {
                        if (buf.len() + data.len()) as u64 > MAX_BUFFERED_BODY {
                            too_large = true;
                            buf = BytesMut::new();
                        } else {
                            buf.extend_from_slice(&data);
                        }
                    }
                }
            }
            Err(_) => {
                complete = false;
                break;
            }
        }
    }
    let record = hasher.finish(complete);
    let (body_len, body_sha256) = (record.len, record.sha256.clone());
    let headers = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let seq = shared.log.push(Exchange {
        seq: 0,
        at_ms: now_ms(),
        client: info.client,
        local: info.local,
        sni: info.sni.clone(),
        alpn: info.alpn.clone(),
        version: format!("{:?}", parts.version),
        method: parts.method.to_string(),
        uri: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| path.clone()),
        headers,
        body: record,
        response: None,
    });
    // Like a real provider: complete JSON answers gzip'd for clients that accept it.
    let accept = parts
        .headers
        .get(hyper::header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let send = |plan: Plan, fail: Option<Fail>| {
        let plan = plan.encoded_for(accept.as_deref());
        body::send(plan, fail, ctl.clone(), shared.log.clone(), seq)
    };

    if let Some(Err(e)) = header_fail {
        return send(error_plan(kind, StatusCode::BAD_REQUEST, &e), None);
    }
    if !complete {
        return send(
            error_plan(kind, StatusCode::BAD_REQUEST, "request body cut short"),
            None,
        );
    }
    if too_large {
        return send(
            error_plan(
                kind,
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large",
            ),
            None,
        );
    }
    match fail {
        Some(Fail::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let plan = error_plan(kind, status, "failure injected by the test peer");
            return send(plan, None);
        }
        Some(Fail::HangThenClose(d)) => {
            tokio::time::sleep(d).await;
            ctl.close();
            return std::future::pending().await;
        }
        _ => {}
    }

    if path == "/ws" && parts.method == Method::GET {
        return websocket::accept(&parts.headers, upgrade);
    }
    if path == "/v1/responses" && parts.method == Method::GET {
        let on_text = openai::responses_ws(shared.clone(), seq, parts.headers.clone());
        return websocket::accept_with(&parts.headers, upgrade, on_text);
    }
    let ctx = Ctx {
        shared: shared.clone(),
        seq,
        method: parts.method,
        path,
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        body: buf.freeze(),
        body_len,
        body_sha256,
    };
    let plan = route(&ctx, kind).await;
    send(plan, fail)
}

async fn route(ctx: &Ctx, kind: Kind) -> Plan {
    let path = ctx.path.as_str();
    let m = &ctx.method;
    match (m, path) {
        (&Method::POST, "/v1/messages") => anthropic::messages(ctx),
        (&Method::POST, "/v1/chat/completions") => openai::chat(ctx),
        (&Method::POST, "/v1/responses") => openai::responses(ctx),
        (&Method::POST, _) if kind == Kind::Gemini => gemini::handle(ctx),
        (_, "/mcp") => mcp::handle(ctx).await,
        (&Method::GET, _) if path.starts_with("/v1/quotes/") => broker::quote(ctx),
        (&Method::POST, "/v1/orders") => broker::order(ctx),
        (&Method::GET, _) if path.starts_with("/v1/orders/") => broker::get_order(ctx),
        (&Method::GET, _) if path.starts_with("/bytes/") => bulk::bytes(ctx),
        (&Method::GET, _) if path.starts_with("/stamped/") => bulk::stamped(ctx),
        (&Method::POST | &Method::PUT, "/upload") => bulk::upload(ctx),
        (&Method::GET, "/" | "/health") => Plan::bytes(StatusCode::OK, "text/plain", "ok\n"),
        _ if kind != Kind::Plain && !known_path(path) => {
            error_plan(kind, StatusCode::NOT_FOUND, &format!("no route {path}"))
        }
        _ => error_plan(
            kind,
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{m} not allowed on {path}"),
        ),
    }
}

fn known_path(path: &str) -> bool {
    matches!(
        path,
        "/v1/messages" | "/v1/chat/completions" | "/v1/responses" | "/mcp" | "/v1/orders"
    )
}

fn kind_of(path: &str) -> Kind {
    match path {
        "/v1/messages" => Kind::Anthropic,
        "/v1/chat/completions" | "/v1/responses" => Kind::OpenAi,
        "/mcp" => Kind::Mcp,
        p if p.starts_with("/v1beta/") || (p.starts_with("/v1/models/") && p.contains(':')) => {
            Kind::Gemini
        }
        p if p.starts_with("/v1/quotes") || p.starts_with("/v1/orders") => Kind::Broker,
        _ => Kind::Plain,
    }
}

/// The error body each family of routes really uses. A 429 carries `retry-after: 7`.
pub(crate) fn error_plan(kind: Kind, status: StatusCode, message: &str) -> Plan {
    let code = status.as_u16();
    let plan = match kind {
        Kind::Anthropic => {
            let kind = match code {
                400 | 413 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            Plan::json(
                status,
                &json!({"type": "error", "error": {"type": kind, "message": message}}),
            )
        }
        Kind::OpenAi => {
            let (kind, c) = match code {
                401 => ("invalid_request_error", json!("invalid_api_key")),
                429 => ("requests", json!("rate_limit_exceeded")),
                400..=499 => ("invalid_request_error", Value::Null),
                _ => ("server_error", Value::Null),
            };
            Plan::json(
                status,
                &json!({"error": {"message": message, "type": kind, "param": null, "code": c}}),
            )
        }
        Kind::Gemini => {
            let s = match code {
                400 | 413 => "INVALID_ARGUMENT",
                401 => "UNAUTHENTICATED",
                403 => "PERMISSION_DENIED",
                404 => "NOT_FOUND",
                429 => "RESOURCE_EXHAUSTED",
                503 => "UNAVAILABLE",
                _ => "INTERNAL",
            };
            Plan::json(
                status,
                &json!({"error": {"code": code, "message": message, "status": s}}),
            )
        }
        Kind::Mcp => Plan::json(
            status,
            &json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32603, "message": message}}),
        ),
        Kind::Broker => Plan::json(
            status,
            &json!({"error": {"code": status.canonical_reason().unwrap_or("error")
                .to_ascii_lowercase().replace(' ', "_"), "message": message}}),
        ),
        Kind::Plain => Plan::bytes(status, "text/plain; charset=utf-8", format!("{message}\n")),
    };
    let plan = if kind == Kind::Anthropic {
        plan.header(
            "request-id",
            format!("req_{}", super::reply::token(code as u64)),
        )
    } else {
        plan
    };
    if code == 429 {
        plan.header("retry-after", "7")
    } else {
        plan
    }
}

fn internal_route(shared: &Shared, method: &Method, path: &str) -> Response<OutBody> {
    let (status, body) = match (method, path) {
        (&Method::GET, "log") => (
            StatusCode::OK,
            serde_json::to_string(&json!({
                "requests": shared.log.exchanges(),
                "outbound": shared.log.outbound(),
                "orders": *lock(&shared.orders),
            }))
            .unwrap_or_default(),
        ),
        (&Method::POST, "clear") => {
            shared.log.clear();
            (StatusCode::OK, "{}".into())
        }
        (&Method::GET, "health") => (StatusCode::OK, "{\"ok\":true}".into()),
        _ => (
            StatusCode::NOT_FOUND,
            "{\"error\":\"no such peer route\"}".into(),
        ),
    };
    let mut r = Response::new(OutBody::unlogged(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

// === impl Settings ===

impl Settings {
    fn take_fail(&mut self, path: &str) -> Option<Fail> {
        let rule = self.fail.as_mut()?;
        if let Some(prefix) = &rule.path_prefix {
            if !path.starts_with(prefix.as_str()) {
                return None;
            }
        }
        if let Some(times) = rule.times.as_mut() {
            if *times == 0 {
                return None;
            }
            *times -= 1;
        }
        Some(rule.fail)
    }
}

// === impl Ctx ===

impl Ctx {
    /// A header's value as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A query parameter's raw value.
    pub(crate) fn query_param(&self, key: &str) -> Option<&str> {
        self.query.as_deref()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == key).then_some(v)
        })
    }

    /// The request body as JSON.
    pub(crate) fn json(&self) -> Result<Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("request body is not JSON: {e}"))
    }

    /// Spacing between SSE events.
    pub(crate) fn event_delay(&self) -> Duration {
        self.shared.event_delay
    }

    /// A token unique to this request at this peer, for ids.
    pub(crate) fn token(&self) -> String {
        super::reply::token(self.seq ^ ((self.shared.addr.port() as u64) << 40))
    }

    /// The reply to give: `x-peer-reply` if present, else the after-tool reply if the
    /// conversation's last turn carries a tool result, else the configured reply.
    pub(crate) fn reply(&self, after_tool: bool) -> Result<Reply, String> {
        // Raw bytes: the JSON may hold UTF-8, which `HeaderValue::to_str` refuses.
        if let Some(raw) = self.headers.get("x-peer-reply") {
            return serde_json::from_slice(raw.as_bytes())
                .map_err(|e| format!("x-peer-reply: {e}"));
        }
        let settings = lock(&self.shared.settings);
        Ok(match (&settings.after_tool, after_tool) {
            (Some(r), true) => r.clone(),
            _ => settings.reply.clone(),
        })
    }

    /// Records a call the peer itself made.
    pub(crate) fn record_outbound(&self, o: Outbound) {
        self.shared.log.push_outbound(o);
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
