//! Accept redirected connections and recover where each was really going.
//!
//! The kernel side filed the original destination under the enclosed socket's local address
//! (our peer address) when the connection was established, before it could be accepted, so a
//! miss here means the connection did not come through the enclosure (or the map overflowed):
//! it is closed and recorded, never forwarded somewhere guessed.
use crate::hook::{words_ip, Hook};
use crate::ledger::{Caller, Entry, ErrorEntry, SessionWriter};
use harness_common::OrigDst;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tracing::warn;

/// A redirected connection whose original destination is known.
#[derive(Debug)]
pub struct Redirected {
    /// The enclosed process's end, accepted by the daemon.
    pub client: TcpStream,
    /// The enclosed socket's own address.
    pub peer: SocketAddr,
    /// Where it was really going.
    pub dst: SocketAddr,
    /// Who connected.
    pub caller: Caller,
}

/// An accepted connection whose original destination could not be recovered.
#[derive(Debug)]
pub struct Unattributed {
    /// The accepted socket (to be closed).
    pub client: TcpStream,
    /// Its peer address.
    pub peer: SocketAddr,
}

/// Looks up the original destination for a connection freshly accepted on a listener in the
/// network namespace `netns`.
pub fn recover(
    hook: &Hook,
    client: TcpStream,
    peer: SocketAddr,
    netns: u64,
) -> Result<Redirected, Unattributed> {
    match hook.take_orig_dst(peer, netns) {
        Some(orig) => Ok(Redirected {
            client,
            peer,
            dst: orig_socket_addr(&orig),
            caller: caller(&orig),
        }),
        None => Err(Unattributed { client, peer }),
    }
}

/// The destination held in an [`OrigDst`].
pub fn orig_socket_addr(orig: &OrigDst) -> SocketAddr {
    SocketAddr::new(words_ip(orig.addr), orig.port)
}

/// The caller held in an [`OrigDst`].
pub fn caller(orig: &OrigDst) -> Caller {
    Caller {
        pid: orig.pid,
        tid: orig.tid,
        uid: orig.uid,
        cgroup_id: orig.cgroup_id,
    }
}

/// How often a run of failing accepts is said (on stderr and in the ledger), at most.
const SAY_EVERY: Duration = Duration::from_secs(10);

/// The longest pause between two accepts that fail.
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// A listener's failing accepts (out of descriptors, out of memory): how long to pause before
/// the next, and what to say — one line per [`SAY_EVERY`] with the count, not one per failure
/// (1,500 connections under a low descriptor limit once printed 2.6 million lines).
#[derive(Debug, Default)]
pub struct AcceptFailures {
    /// Failures in a row.
    streak: u32,
    /// Failures since the last line.
    unsaid: u64,
    /// When the last line was said.
    said_at: Option<Instant>,
}

impl AcceptFailures {
    /// An accept succeeded: the next failure starts a new run.
    pub fn recovered(&mut self) {
        self.streak = 0;
    }

    /// An accept failed with `e`: says so when due, in `writer`'s session and on stderr, and
    /// returns how long to pause (5 ms, doubling, at most [`MAX_PAUSE`]).
    pub async fn failed(&mut self, e: &std::io::Error, writer: &SessionWriter) -> Duration {
        self.streak = self.streak.saturating_add(1);
        self.unsaid += 1;
        if self.said_at.is_none_or(|at| at.elapsed() >= SAY_EVERY) {
            let message = format!(
                "accepting a connection failed {} time(s) since last said, last: {e}; \
                 pausing before the next accept",
                self.unsaid
            );
            warn!("{}: {message}", writer.id());
            let _ = writer
                .append(Entry::Error(ErrorEntry {
                    conn: None,
                    context: "accepting connections".into(),
                    message,
                }))
                .await;
            self.said_at = Some(Instant::now());
            self.unsaid = 0;
        }
        let doublings = self.streak.saturating_sub(1).min(8);
        (Duration::from_millis(5) * (1 << doublings)).min(MAX_PAUSE)
    }
}
