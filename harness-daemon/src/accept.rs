//! Accept redirected connections and recover where each was really going.
//!
//! The kernel side filed the original destination under the enclosed socket's local address
//! (our peer address) when the connection was established, before it could be accepted, so a
//! miss here means the connection did not come through the enclosure (or the map overflowed):
//! it is closed and recorded, never forwarded somewhere guessed.
use crate::hook::{words_ip, Hook};
use crate::ledger::Caller;
use harness_common::OrigDst;
use std::net::SocketAddr;
use tokio::net::TcpStream;

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
