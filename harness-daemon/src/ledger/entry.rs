//! The kinds of entry a session ledger holds. Field meanings are specified in SPEC.md; the
//! envelope (`v`, `seq`, `ts`, `prev`, `session`) is added by the writer, not by callers.
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
    /// Something went wrong that a reader should know about.
    Error(ErrorEntry),
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
