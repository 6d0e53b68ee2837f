//! What the fuzz targets share: a scratch ledger with fixed keys (so checked-in seeds carry
//! checkpoints this ledger's key signed), and one HTTP connection served by the project's own
//! `http::serve` over in-memory streams (the `http_framing` target, and the seeds of `verify`).
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use harness::http::Version;
use harness::ledger::note::NoteSigner;
use harness::ledger::{Entry, ErrorEntry, Ledger, SessionClose, SessionOpen, SessionWriter};
use harness::policy::{ConnPolicy, Policy};
use harness::record::{ConnRecorder, Counts};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The seed of the scratch ledgers' checkpoint key: seeds signed with it verify.
pub const SIGNING_SEED: [u8; 32] = [0x5a; 32];

/// The checkpoint signer of the scratch ledgers.
pub fn signer() -> NoteSigner {
    NoteSigner::from_seed(SIGNING_SEED)
}

/// A fresh ledger directory for `tag` (one per process, on tmpfs when there is one: the
/// writer's fsyncs are then free), opened with the fixed keys. The directory is root's 0755
/// under a sticky `/dev/shm` or `/tmp`, which `Ledger::open`'s strict modes accept.
pub fn scratch_ledger(tag: &str) -> (PathBuf, Ledger) {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("harness-fuzz-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("keys")).expect("scratch ledger directory");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(dir.join("keys"), std::fs::Permissions::from_mode(0o700)).unwrap();
    for (name, text) in [
        ("checkpoint.key", signer().to_text()),
        ("fingerprint.key", "5a".repeat(32)),
    ] {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join("keys").join(name))
            .expect("scratch ledger key");
        std::io::Write::write_all(&mut f, format!("{text}\n").as_bytes()).unwrap();
    }
    let ledger = Ledger::open(&dir).expect("Ledger::open on the scratch directory");
    (dir, ledger)
}

/// Removes session `id`'s file, checkpoints and whatever recovery and blobs left (the scratch
/// ledger holds one session at a time).
pub fn clear_session(dir: &Path, id: &ulid::Ulid) {
    let _ = std::fs::remove_file(dir.join(format!("{id}.jsonl")));
    let _ = std::fs::remove_dir_all(dir.join("checkpoints").join(id.to_string()));
    for sub in ["recovery", "blobs"] {
        if let Ok(rd) = std::fs::read_dir(dir.join(sub)) {
            for e in rd.flatten() {
                let p = e.path();
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
    }
}

/// The `session_open` of a scratch session.
pub fn session_open() -> SessionOpen {
    SessionOpen {
        command: vec!["fuzz".into()],
        uid: 1000,
        gid: 1000,
        cgroup: "/harness/fuzz".into(),
        policy_sha256: String::new(),
        ca_fingerprint: None,
        software: "harness fuzz".into(),
        hostname: "fuzz".into(),
    }
}

/// The policy connections are served under: everything allowed but one host, so that both
/// a forwarded exchange and a refused one (403 by harness) are reachable.
pub fn policy() -> Arc<Policy> {
    Arc::new(
        Policy::parse(
            "default = \"allow\"\n[[rule]]\naction = \"deny\"\nhost = \"denied.example\"\n",
            "fuzz.toml",
        )
        .expect("the fuzz policy parses"),
    )
}

/// One connection for [`serve`]: what the agent sends, and what the destination answers.
#[derive(Debug, Clone)]
pub struct Connection<'a> {
    /// HTTP/2 instead of HTTP/1.
    pub h2: bool,
    /// HTTP/1: the agent's bytes, sent at once, followed by `\r\n` (see [`PAD`]); then its
    /// write side is shut. HTTP/2: one request that a real h2 client sends — a first line
    /// `METHOD TARGET`, header lines `name: value`, an empty line and the body (see
    /// [`H2Request::parse`]) — after which the client waits for the answer.
    pub client: &'a [u8],
    /// HTTP/1: the destination's bytes, sent once a request head arrived; then its write side
    /// is shut. HTTP/2: the destination is a real h2 server answering every request with
    /// status 200 and these bytes as the body.
    pub upstream: &'a [u8],
    /// HTTP/2 only: the answers' content type (`text/event-stream` when set).
    pub sse: bool,
}

/// What the HTTP/1 agent sends after its bytes before it shuts its write side: hyper's server
/// (harness's configuration, without half-close) ends a connection whose client shut its side
/// while a request is in progress and nothing more is buffered, so an agent sending exactly
/// one request and EOF would only ever see that; an empty line, which servers skip before a
/// request line (RFC 9112 §2.2), lets every request in the input be answered first.
pub const PAD: &[u8] = b"\r\n";

impl Connection<'_> {
    /// The input format of the `http_framing` target: `[flags, client length (u16 LE),
    /// client…, upstream…]`; flags bit 0 HTTP/2, bit 1 event-stream answers (HTTP/2).
    pub fn parse(data: &[u8]) -> Option<Connection<'_>> {
        let (&[flags, lo, hi], rest) = data.split_first_chunk::<3>()?;
        let n = usize::from(u16::from_le_bytes([lo, hi])).min(rest.len());
        let (client, upstream) = rest.split_at(n);
        Some(Connection {
            h2: flags & 1 != 0,
            client,
            upstream,
            sse: flags & 2 != 0,
        })
    }

    /// The inverse of [`Connection::parse`] (for seeds).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![u8::from(self.h2) | (u8::from(self.sse) << 1)];
        out.extend_from_slice(&(self.client.len() as u16).to_le_bytes());
        out.extend_from_slice(self.client);
        out.extend_from_slice(self.upstream);
        out
    }
}

/// The one request of an HTTP/2 agent.
#[derive(Debug)]
pub struct H2Request {
    /// The request, as far as `http` accepts it (names and values it refuses are left out).
    pub request: http::Request<http_body_util::Full<bytes::Bytes>>,
}

impl H2Request {
    /// `METHOD TARGET\n(name: value\n)*\nbody`, leniently: a method or target `http` refuses
    /// becomes `POST` or `/`, a header it refuses is left out. The authority is the target's
    /// when absolute, else `api.example.test`.
    pub fn parse(bytes: &[u8]) -> H2Request {
        let (head, body) = match bytes.windows(2).position(|w| w == b"\n\n") {
            Some(i) => (&bytes[..i], &bytes[i + 2..]),
            None => (bytes, &[][..]),
        };
        let mut lines = head.split(|b| *b == b'\n');
        let first = lines.next().unwrap_or_default();
        let mut words = first.splitn(2, |b| *b == b' ');
        let method = http::Method::from_bytes(words.next().unwrap_or_default())
            .unwrap_or(http::Method::POST);
        let target = words.next().unwrap_or(b"/");
        let uri = std::str::from_utf8(target)
            .ok()
            .and_then(|t| t.parse::<http::Uri>().ok())
            .filter(|u| u.path_and_query().is_some())
            .unwrap_or_else(|| http::Uri::from_static("/"));
        let uri = if uri.authority().is_some() {
            uri
        } else {
            format!(
                "http://api.example.test{}",
                uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
            )
            .parse()
            .unwrap_or_else(|_| http::Uri::from_static("http://api.example.test/"))
        };
        let mut request = http::Request::new(http_body_util::Full::new(
            bytes::Bytes::copy_from_slice(body),
        ));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.version_mut() = http::Version::HTTP_2;
        for line in lines {
            let Some(colon) = line.iter().position(|b| *b == b':') else {
                continue;
            };
            let value = line[colon + 1..]
                .strip_prefix(b" ")
                .unwrap_or(&line[colon + 1..]);
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(&line[..colon]),
                http::HeaderValue::from_bytes(value),
            ) {
                request.headers_mut().append(name, value);
            }
        }
        H2Request { request }
    }
}

/// How long one connection may take before it counts as a hang.
pub const HANG: Duration = Duration::from_secs(20);

/// What [`serve`] saw: the bytes the agent received, and the session it recorded.
pub struct Served {
    /// Everything harness wrote back to the agent.
    pub to_client: Vec<u8>,
    /// Everything harness sent the destination.
    pub to_upstream: Vec<u8>,
    /// The session file (closed, with its final checkpoint).
    pub session: PathBuf,
    /// Its id.
    pub id: ulid::Ulid,
}

/// Serves one connection with `http::serve`, recorded in a new session of `ledger` that is
/// closed afterwards (as the engine does: the HTTP stage, then upgraded relays, then the
/// recording work the connection spawned). Panics if that takes longer than [`HANG`].
pub async fn serve(ledger: &Ledger, policy: Arc<Policy>, conn: &Connection<'_>) -> Served {
    let (writer, _) = ledger
        .open_session(session_open())
        .await
        .expect("open a scratch session");
    let work = run(writer.clone(), policy, conn);
    let (to_client, to_upstream) = match tokio::time::timeout(HANG, work).await {
        Ok(out) => out,
        Err(_) => panic!("the connection did not end within {HANG:?}: {conn:?}"),
    };
    writer
        .close(SessionClose::exited(Some(0), None))
        .await
        .expect("close the scratch session");
    Served {
        to_client,
        to_upstream,
        session: writer.path().to_owned(),
        id: writer.id(),
    }
}

async fn run(
    writer: SessionWriter,
    policy: Arc<Policy>,
    conn: &Connection<'_>,
) -> (Vec<u8>, Vec<u8>) {
    let tasks = tokio_util::task::TaskTracker::new();
    let closing = tokio_util::sync::CancellationToken::new();
    let rec = ConnRecorder::new(
        writer.clone(),
        0,
        tasks.clone(),
        closing.clone(),
        Arc::new(Counts::default()),
    );
    let (client, agent) = tokio::io::duplex(256 * 1024);
    let (upstream, server) = tokio::io::duplex(256 * 1024);
    let policy = ConnPolicy::new(policy, "192.0.2.80:80".parse().unwrap());
    let version = if conn.h2 {
        Version::Http2
    } else {
        Version::Http1
    };

    let agent = if conn.h2 {
        tokio::spawn(h2_agent(agent, H2Request::parse(conn.client)))
    } else {
        tokio::spawn(h1_agent(agent, [conn.client, PAD].concat()))
    };
    let upstream_bytes = conn.upstream.to_vec();
    let destination = if conn.h2 {
        tokio::spawn(h2_destination(server, upstream_bytes, conn.sse))
    } else {
        tokio::spawn(h1_destination(server, upstream_bytes))
    };

    let rec2 = rec.clone();
    let limits = harness::limits::Limits::default();
    let _ = harness::http::serve(client, upstream, version, "http", policy, rec2, &limits).await;
    rec.upgrades_finished().await;
    drop(rec);
    tasks.close();
    // The semantics stage's annotations are lazy: each waits up to LAZY_WAIT for an entry
    // someone waits on. Give them one, again and again, until the connection's recording work
    // is done (otherwise every exchange costs tens of milliseconds of waiting).
    let flush = || {
        writer.append(Entry::Error(ErrorEntry {
            conn: None,
            context: "fuzz".into(),
            message: "flush".into(),
        }))
    };
    loop {
        tokio::select! {
            () = tasks.wait() => break,
            _ = flush() => tokio::task::yield_now().await,
        }
    }
    drop(closing);
    let to_client = agent.await.expect("the agent task");
    let to_upstream = destination.await.expect("the destination task");
    (to_client, to_upstream)
}

/// An HTTP/1 agent: sends `bytes`, shuts its write side, reads everything harness answers.
async fn h1_agent(agent: tokio::io::DuplexStream, bytes: Vec<u8>) -> Vec<u8> {
    let (mut r, mut w) = tokio::io::split(agent);
    let send = async move {
        let _ = w.write_all(&bytes).await;
        let _ = w.shutdown().await;
    };
    let mut got = Vec::new();
    let recv = r.read_to_end(&mut got);
    let _ = tokio::join!(send, recv);
    got
}

/// An HTTP/2 agent: a real h2 client sending one request and reading the whole answer; what
/// it got is the answer's status line and body.
async fn h2_agent(agent: tokio::io::DuplexStream, req: H2Request) -> Vec<u8> {
    use http_body_util::BodyExt as _;
    let Ok((mut sender, conn)) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(hyper_util::rt::TokioIo::new(agent))
            .await
    else {
        return Vec::new();
    };
    let driver = tokio::spawn(conn);
    let mut got = Vec::new();
    if let Ok(resp) = sender.send_request(req.request).await {
        got.extend_from_slice(format!("{}\n", resp.status()).as_bytes());
        if let Ok(body) = resp.into_body().collect().await {
            got.extend_from_slice(&body.to_bytes());
        }
    }
    drop(sender);
    let _ = driver.await;
    got
}

/// An HTTP/1 destination that answers with fixed bytes once a request head has arrived.
async fn h1_destination(server: tokio::io::DuplexStream, answer: Vec<u8>) -> Vec<u8> {
    let (mut r, mut w) = tokio::io::split(server);
    let mut got = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        if got.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let _ = w.write_all(&answer).await;
    let _ = w.shutdown().await;
    let _ = r.read_to_end(&mut got).await;
    got
}

/// An HTTP/2 destination: a real h2 server answering every request with `body`.
async fn h2_destination(server: tokio::io::DuplexStream, body: Vec<u8>, sse: bool) -> Vec<u8> {
    use http_body_util::Full;
    let body = bytes::Bytes::from(body);
    let service = hyper::service::service_fn(move |_req| {
        let body = body.clone();
        async move {
            let mut resp = http::Response::new(Full::new(body));
            let ct = if sse {
                "text/event-stream"
            } else {
                "application/json"
            };
            resp.headers_mut()
                .insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(hyper_util::rt::TokioIo::new(server), service)
        .await;
    Vec::new()
}
