//! The kinds of entry a session ledger holds. Field meanings are specified in SPEC.md; the
//! envelope (`v`, `seq`, `ts`, `prev`, `session`) is added by the writer, not by callers, and
//! no entry kind may use those names for a field of its own.
use super::body::Body;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// One thing that happened in a session, as a caller submits it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    /// First entry of every session file.
    SessionOpen(SessionOpen),
    /// Last entry of a cleanly closed session.
    SessionClose(SessionClose),
    /// The engine put another policy in force while the session was open (a reload).
    PolicyChange(PolicyChange),
    /// A redirected connection was accepted and is being forwarded.
    ConnOpen(ConnOpen),
    /// A connection, datagram or socket was refused (by the kernel or the daemon).
    ConnDenied(ConnDenied),
    /// A forwarded connection ended.
    ConnClose(ConnClose),
    /// A DNS question the enclosure asked.
    DnsQuery(DnsQuery),
    /// The answer given to a DNS question.
    DnsAnswer(DnsAnswer),
    /// The head of an HTTP request the enclosed process sent.
    HttpRequest(HttpRequest),
    /// The body of an HTTP request (the exact bytes, after transfer decoding).
    HttpRequestBody(HttpBody),
    /// The head of an HTTP response the destination sent.
    HttpResponse(HttpResponse),
    /// The body of an HTTP response (the exact bytes, after transfer decoding).
    HttpResponseBody(HttpBody),
    /// One piece of a streamed body (an SSE event, a WebSocket message, an h2 DATA run).
    StreamChunk(StreamChunk),
    /// Bytes of a connection that is not HTTP, in one direction.
    Data(Data),
    /// A TLS handshake failed, on either side of the daemon.
    TlsFailure(TlsFailure),
    /// Both TLS handshakes of an intercepted connection succeeded: what they agreed.
    TlsIntercepted(TlsIntercepted),
    /// A process in the session made a new process (not a thread).
    ProcessFork(ProcessFork),
    /// A process in the session started a program (an `execve` that succeeded).
    ProcessExec(ProcessExec),
    /// A process in the session ended.
    ProcessExit(ProcessExit),
    /// A request rule or budget decided on an HTTP request, before anything of it went on.
    RequestDecision(RequestDecision),
    /// A person (or the timeout) decided a request that a rule held (`ask`).
    RequestDecided(RequestDecided),
    /// What an earlier entry means (an LLM call, a tool call, …), added by the semantics stage.
    Annotation(Annotation),
    /// The writer reopened the session after an unclean shutdown.
    Recovery(Recovery),
    /// Something went wrong that a reader should know about.
    Error(ErrorEntry),
}

/// Each kind of entry and the `kind` string it is written with: the one list that
/// [`Entry::kind`] and [`Entry::read_kind`] are made from (serde's own names for the variants,
/// which a test holds equal).
macro_rules! kinds {
    ($($variant:ident => $name:literal,)*) => {
        impl Entry {
            /// The `kind` string this entry is written with.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Entry::$variant(_) => $name,)*
                }
            }

            /// Reads an entry whose `kind` is `kind` from `members` (whatever members the
            /// kind's type does not have, it skips), straight into the kind's type. Serde's
            /// way for an internally tagged enum first buffers every member of the object,
            /// which was most of what `verify` spent on a line. None for an unknown kind.
            pub fn read_kind<'de, D: serde::Deserializer<'de>>(
                kind: &str,
                members: D,
            ) -> Option<Result<Entry, D::Error>> {
                match kind {
                    $($name => Some(Deserialize::deserialize(members).map(Entry::$variant)),)*
                    _ => None,
                }
            }
        }
    };
}

kinds! {
    SessionOpen => "session_open",
    SessionClose => "session_close",
    PolicyChange => "policy_change",
    ConnOpen => "conn_open",
    ConnDenied => "conn_denied",
    ConnClose => "conn_close",
    DnsQuery => "dns_query",
    DnsAnswer => "dns_answer",
    HttpRequest => "http_request",
    HttpRequestBody => "http_request_body",
    HttpResponse => "http_response",
    HttpResponseBody => "http_response_body",
    StreamChunk => "stream_chunk",
    Data => "data",
    TlsFailure => "tls_failure",
    TlsIntercepted => "tls_intercepted",
    ProcessFork => "process_fork",
    ProcessExec => "process_exec",
    ProcessExit => "process_exit",
    RequestDecision => "request_decision",
    RequestDecided => "request_decided",
    Annotation => "annotation",
    Recovery => "recovery",
    Error => "error",
}

impl Entry {
    /// Every body this entry carries (to check blobs and inline hashes).
    pub fn bodies(&self) -> Vec<&Body> {
        match self {
            Entry::HttpRequestBody(b) | Entry::HttpResponseBody(b) => vec![&b.body],
            Entry::StreamChunk(c) => vec![&c.body],
            Entry::Data(d) => vec![&d.bytes],
            _ => Vec::new(),
        }
    }
}

/// Which way bytes travelled.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the enclosed process towards the destination (requests).
    Up,
    /// From the destination towards the enclosed process (responses).
    Down,
}

/// One header field. Exactly one of `value`, `value_b64`, `fingerprint` is present.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Field name as sent (HTTP/2 and HTTP/3 names are lower case).
    pub name: String,
    /// The value, when it is UTF-8 and not a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The value in base64, when it is not UTF-8 and not a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_b64: Option<String>,
    /// The keyed fingerprint of a secret value (see [`crate::ledger::Ledger::fingerprint`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

impl Header {
    /// A header whose value is written as is (UTF-8) or in base64.
    pub fn new(name: impl Into<String>, value: &[u8]) -> Header {
        let name = name.into();
        match std::str::from_utf8(value) {
            Ok(text) => Header {
                name,
                value: Some(text.to_owned()),
                value_b64: None,
                fingerprint: None,
            },
            Err(_) => {
                use base64::Engine as _;
                Header {
                    name,
                    value: None,
                    value_b64: Some(base64::engine::general_purpose::STANDARD.encode(value)),
                    fingerprint: None,
                }
            }
        }
    }

    /// A header whose value is a secret, recorded only by its fingerprint.
    pub fn secret(name: impl Into<String>, fingerprint: String) -> Header {
        Header {
            name: name.into(),
            value: None,
            value_b64: None,
            fingerprint: Some(fingerprint),
        }
    }
}

/// Whether a header carries a credential that must never be written in clear
/// (`authorization`, `proxy-authorization`, `x-api-key`, `api-key`, `x-goog-api-key`,
/// `cookie`, `set-cookie`), compared case-insensitively.
pub fn is_secret_header(name: &str) -> bool {
    const SECRET: [&str; 7] = [
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "cookie",
        "set-cookie",
    ];
    SECRET.iter().any(|s| s.eq_ignore_ascii_case(name))
}

/// `http_request`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct HttpRequest {
    /// Connection number from `conn_open`.
    pub conn: u64,
    /// Exchange number within the connection (h1: 0, 1, … in order; h2: the stream id).
    pub exchange: u64,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`.
    pub version: String,
    /// Request method.
    pub method: String,
    /// `http` or `https`.
    pub scheme: String,
    /// `Host` / `:authority`, when present.
    pub authority: Option<String>,
    /// Path and query as sent; secret query parameters replaced by their fingerprint.
    pub target: String,
    /// The scheme the request itself named (an HTTP/1 target in absolute form, HTTP/2's
    /// `:scheme`) when it is not `scheme`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_scheme: Option<String>,
    /// Header fields in the order sent.
    pub headers: Vec<Header>,
}

/// `http_response`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct HttpResponse {
    /// Connection number from `conn_open`.
    pub conn: u64,
    /// Exchange number of the request this answers.
    pub exchange: u64,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`.
    pub version: String,
    /// Status code.
    pub status: u16,
    /// The HTTP/1 reason phrase, when it is not the status code's standard one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Header fields in the order received.
    pub headers: Vec<Header>,
    /// `"harness"` when harness answered in the destination's place (a request rule refused
    /// the request: see `request_decision`); absent when the destination answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<String>,
}

/// `http_request_body` and `http_response_body`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct HttpBody {
    /// Connection number from `conn_open`.
    pub conn: u64,
    /// Exchange number of the request or response.
    pub exchange: u64,
    /// The exact body bytes.
    pub body: Body,
    /// Trailer fields, if any.
    pub trailers: Vec<Header>,
}

/// `stream_chunk`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StreamChunk {
    /// Connection number from `conn_open`.
    pub conn: u64,
    /// Exchange number of the request or response the chunk belongs to.
    pub exchange: u64,
    /// Which body: `up` (request) or `down` (response).
    pub direction: Direction,
    /// 0, 1, 2, … within this exchange and direction.
    pub index: u64,
    /// The chunk's exact bytes.
    pub body: Body,
    /// Set on the last chunk of a body (which may be empty); absent (false) otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fin: bool,
    /// Trailer fields, on the last chunk only; absent when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trailers: Vec<Header>,
}

/// `data`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Data {
    /// Connection number from `conn_open`.
    pub conn: u64,
    /// `up` or `down`.
    pub direction: Direction,
    /// 0, 1, 2, … within this connection and direction.
    pub index: u64,
    /// Offset of the first byte within this direction of the connection.
    pub offset: u64,
    /// The exact bytes.
    pub bytes: Body,
}

/// Which side of the daemon a TLS handshake failed on.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TlsSide {
    /// Between the enclosed process and the daemon.
    Client,
    /// Between the daemon and the destination.
    Upstream,
}

/// `tls_intercepted`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TlsIntercepted {
    /// Connection number from `conn_open`.
    pub conn: u64,
    /// The server name the client asked for (and harness asked the destination for).
    pub sni: Option<String>,
    /// The application protocol both sides agreed (`h2`, `http/1.1`), if any.
    pub alpn: Option<String>,
    /// The TLS version between the enclosed client and harness (`TLSv1.3`, `TLSv1.2`).
    pub client_version: String,
    /// The TLS version between harness and the destination.
    pub upstream_version: String,
}

/// `tls_failure`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TlsFailure {
    /// Connection number from `conn_open`.
    pub conn: u64,
    /// `client` or `upstream`.
    pub side: TlsSide,
    /// Server name the client asked for, when known.
    pub sni: Option<String>,
    /// Why, in words.
    pub reason: String,
}

/// `request_decision`: what the policy's request rules (or the session's budget) decided for
/// request `exchange` of connection `conn`, whose head (and body) are already durable. Written
/// only when a rule or budget decided; a request no rule speaks of has none.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RequestDecision {
    /// Connection number from `conn_open`.
    pub conn: u64,
    /// Exchange number of the request.
    pub exchange: u64,
    /// `allow`, `deny` or `ask`.
    pub action: String,
    /// The deciding rule: `tool[N]`, `http[N]`, `model[N]` (1-based within its kind),
    /// `budget.usd`, `budget.tokens` or `budget.requests_per_minute`; `model.websocket` for a
    /// refused WebSocket upgrade of a model API.
    pub rule: String,
    /// The rule and what it met, in words (the agent's error message says the same).
    pub reason: String,
    /// JSON pointer (or `model`) → the request's value, for each condition that held.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub matched: std::collections::BTreeMap<String, serde_json::Value>,
    /// For a tool rule: the tool's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// For a tool rule: the JSON-RPC id of the call it matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<serde_json::Value>,
    /// For a budget: what the session had spent when the request came (`usd` exact decimal
    /// string, `tokens`, `requests` in the last 60 s) and the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetState>,
    /// SHA-256 (hex) of the policy file that decided.
    pub policy_sha256: String,
}

/// A budget's state when it decided.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BudgetState {
    /// The limit, as the file's unit says (`5` USD, `2000000` tokens, `60` requests).
    pub limit: String,
    /// What was spent (same unit), before this request.
    pub spent: String,
    /// Model calls whose usage was not yet known when this request was decided.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unsettled: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `request_decided`: how an `ask` ended. Until this entry the request was held: nothing of it
/// went on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RequestDecided {
    /// Connection number from `conn_open`.
    pub conn: u64,
    /// Exchange number of the request.
    pub exchange: u64,
    /// Seq of the `request_decision` entry (action `ask`) this decides: the id
    /// `harness pending` shows and `harness decide` takes.
    pub ask: u64,
    /// `allow` or `deny`.
    pub action: String,
    /// Who decided: `uid 0 pid 4242 (harness decide)`, or `timeout after 300 s`.
    pub by: String,
    /// What they said (`harness decide --why`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// `process_fork`: `ppid` made `pid`, a new process (a new thread group; threads are not
/// recorded). Process ids are the kernel's own (the initial PID namespace's), as in
/// [`Caller::pid`], not the numbers the session's PID namespace shows its processes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ProcessFork {
    /// The new process.
    pub pid: u32,
    /// The process that made it.
    pub ppid: u32,
    /// When, as the kernel saw it (same format as the envelope's `ts`).
    pub at: String,
}

/// `process_exec`: process `pid` now runs `path` with `argv`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ProcessExec {
    /// The process (thread group id; the same before and after the exec).
    pub pid: u32,
    /// Its parent at the time of the exec.
    pub ppid: u32,
    /// Real user id.
    pub uid: u32,
    /// The program, as the caller named it to `execve` (after the caller's own `PATH` search).
    pub path: String,
    /// The arguments the program received, secrets replaced by fingerprints (SPEC §7); a
    /// non-UTF-8 argument is written with U+FFFD for each invalid sequence.
    pub argv: Vec<String>,
    /// Set when the arguments were longer than the kernel side reads (`argv` then ends with
    /// the last whole argument that fit, or a cut one); absent (false) otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub argv_truncated: bool,
    /// The working directory, when the process still existed when harness read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// When, as the kernel saw it (same format as the envelope's `ts`).
    pub at: String,
}

/// `process_exit`: process `pid` ended.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ProcessExit {
    /// The process.
    pub pid: u32,
    /// Its exit status (0–255), when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u8>,
    /// The signal that killed it, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<u8>,
    /// Set when a killing signal dumped core; absent (false) otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub core_dumped: bool,
    /// When, as the kernel saw it (same format as the envelope's `ts`).
    pub at: String,
}

impl ProcessExit {
    /// `exit 0`, `signal 9`; `None` when the entry says neither.
    pub fn describe(&self) -> Option<String> {
        exit_words(self.code, self.signal)
    }
}

/// How a process ended, in words: `exit N` or `signal N`.
pub fn exit_words(code: Option<u8>, signal: Option<u8>) -> Option<String> {
    match (code, signal) {
        (Some(code), _) => Some(format!("exit {code}")),
        (_, Some(signal)) => Some(format!("signal {signal}")),
        _ => None,
    }
}

/// `annotation`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Annotation {
    /// Sequence number of the (earlier) entry described.
    pub of_seq: u64,
    /// Entry hash (hex) of that entry.
    pub of_hash: String,
    /// What produced the annotation, e.g. `semantics/anthropic`.
    pub by: String,
    /// What it is about, e.g. `llm_request`, `tool_call`.
    pub topic: String,
    /// Free-form details (any JSON value).
    pub data: serde_json::Value,
}

/// `recovery`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Recovery {
    /// Why: `unclean shutdown` or `torn final line moved aside`.
    pub reason: String,
    /// Length of the torn final line that was moved aside, 0 if there was none.
    pub torn_bytes: u64,
    /// SHA-256 (hex) of those bytes, when there were some.
    pub torn_sha256: Option<String>,
    /// Where they were saved, relative to the ledger directory.
    pub saved_as: Option<String>,
}

/// Who made a call, as the kernel saw it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Process id (thread group id).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// User id.
    pub uid: u32,
    /// cgroup v2 id of the session cgroup.
    pub cgroup_id: u64,
}

/// `session_open`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SessionOpen {
    /// The enclosed command and its arguments.
    pub command: Vec<String>,
    /// User id the command runs as.
    pub uid: u32,
    /// Group id the command runs as.
    pub gid: u32,
    /// Path of the session cgroup.
    pub cgroup: String,
    /// SHA-256 (hex) of the policy file's exact bytes, or of the empty string for none.
    pub policy_sha256: String,
    /// SHA-256 (hex) of the harness CA certificate (DER), when TLS interception is on.
    pub ca_fingerprint: Option<String>,
    /// `harness <version>` that wrote the session.
    pub software: String,
    /// Host name of the machine.
    pub hostname: String,
}

/// `session_close`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SessionClose {
    /// Exit code of the enclosed command, if it exited.
    pub exit_code: Option<i32>,
    /// Signal that ended the enclosed command, if one did.
    pub signal: Option<i32>,
    /// Why the session ended, when not (only) because its command did: the engine shut down,
    /// `harness run` went away, the ledger's disk filled up, or recovery closed a session
    /// whose engine had died. Omitted when the command ended it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl SessionClose {
    /// The command ended the session: exited with `exit_code` or was killed by `signal`.
    pub fn exited(exit_code: Option<i32>, signal: Option<i32>) -> SessionClose {
        SessionClose {
            exit_code,
            signal,
            reason: None,
        }
    }

    /// How the session ended, for people: `exit 0`, `signal 9`, or the reason, or both.
    pub fn describe(&self) -> String {
        let status = match (self.exit_code, self.signal) {
            (Some(code), _) => Some(format!("exit {code}")),
            (_, Some(sig)) => Some(format!("signal {sig}")),
            _ => None,
        };
        match (status, &self.reason) {
            (Some(s), Some(r)) => format!("{s} ({r})"),
            (Some(s), None) => s,
            (None, Some(r)) => r.clone(),
            (None, None) => "no exit status".into(),
        }
    }

    /// Something other than the command ended the session.
    pub fn because(reason: impl Into<String>) -> SessionClose {
        SessionClose {
            exit_code: None,
            signal: None,
            reason: Some(reason.into()),
        }
    }
}

/// `policy_change`: from this entry on, the session runs under another policy — the daemon
/// reloaded its policy file (SIGHUP) while the session was open. Decisions recorded after it
/// were made by the new policy; a decision in flight when it came may still have been made by
/// the old one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PolicyChange {
    /// SHA-256 (hex) of the exact bytes of the policy now in force.
    pub sha256: String,
    /// SHA-256 (hex) of the policy it replaced: `session_open`'s `policy_sha256`, or the
    /// `sha256` of the session's previous `policy_change`.
    pub previous_sha256: String,
    /// Where the new policy came from: the policy file's path as the daemon was given it.
    pub origin: String,
}

/// `conn_open`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ConnOpen {
    /// Connection number, unique within the session.
    pub conn: u64,
    /// `tcp`.
    pub proto: String,
    /// Where the enclosed process was really connecting.
    pub dst: SocketAddr,
    /// Host name for `dst`, when known (DNS answer, later TLS SNI or HTTP Host).
    pub host: Option<String>,
    /// The enclosed socket's own address.
    pub src: SocketAddr,
    /// Who connected.
    pub caller: Caller,
    /// Index of the policy rule that allowed it, `None` for the default.
    pub rule: Option<u32>,
}

/// `conn_denied`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ConnDenied {
    /// Connection number when the daemon had accepted it, else `None`.
    pub conn: Option<u64>,
    /// `tcp`, `udp`, or the refused socket's kind (`raw`, `icmp`, `sctp`, …).
    pub proto: String,
    /// The refused destination, when there is one.
    pub dst: Option<SocketAddr>,
    /// Host name for `dst`, when known.
    pub host: Option<String>,
    /// Who asked, when known.
    pub caller: Option<Caller>,
    /// `kernel` (EPERM at connect/sendmsg/socket) or `daemon` (closed after accept).
    pub by: String,
    /// Why, in words.
    pub reason: String,
    /// Index of the policy rule that denied it, `None` for the default or a fixed rule.
    pub rule: Option<u32>,
}

/// `conn_close`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ConnClose {
    /// Connection number from `conn_open`.
    pub conn: u64,
    /// Bytes the enclosed process sent to the destination.
    pub bytes_up: u64,
    /// Bytes the destination sent to the enclosed process.
    pub bytes_down: u64,
    /// How long the connection lasted, in milliseconds.
    pub duration_ms: u64,
    /// Why it ended, if not a clean close by either side.
    pub error: Option<String>,
    /// How the enclosed client ended its TLS (`"close_notify"` or `"no close_notify"`), when
    /// it did before harness ended the connection. Absent for plain TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_tls_end: Option<String>,
    /// How the destination ended its TLS, as for `client_tls_end`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_tls_end: Option<String>,
}

/// `dns_query`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DnsQuery {
    /// Exchange number, unique within the session; the answer carries the same.
    pub exchange: u64,
    /// The resolver the enclosed process addressed, when known.
    pub server: Option<SocketAddr>,
    /// The resolver the daemon forwarded to.
    pub upstream: SocketAddr,
    /// Who asked, when known.
    pub caller: Option<Caller>,
    /// First question's name.
    pub qname: String,
    /// First question's type (`A`, `AAAA`, …, or the number).
    pub qtype: String,
    /// The exact query message, base64.
    pub message_b64: String,
}

/// `dns_answer`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DnsAnswer {
    /// Exchange number of the question.
    pub exchange: u64,
    /// Response code (`NOERROR`, `NXDOMAIN`, …), or `None` when no answer came.
    pub rcode: Option<String>,
    /// Answer records, one string each: `name TTL TYPE data`.
    pub answers: Vec<String>,
    /// The exact answer message given to the enclosed process, base64.
    pub message_b64: Option<String>,
    /// Why there was no answer.
    pub error: Option<String>,
}

/// `error`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ErrorEntry {
    /// Connection number, when the error belongs to one.
    pub conn: Option<u64>,
    /// What the daemon was doing.
    pub context: String,
    /// What went wrong.
    pub message: String,
}
