//! Accept redirected connections and recover where each was really going.
//!
//! The kernel side filed the original destination under the enclosed socket's local address
//! (our peer address) when the connection was established, before it could be accepted, so a
//! miss here means the connection did not come through the enclosure (or the map overflowed):
//! it is closed and recorded, never forwarded somewhere guessed.
use crate::hook::{words_ip, Hook};
use crate::ledger::Caller;
use harness_common::OrigDst;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// The daemon's listeners: TCP and DNS (UDP) on one port pair, on IPv4 and IPv6 loopback.
#[derive(Debug)]
pub struct Listeners {
    /// TCP on 127.0.0.1.
    pub tcp_v4: TcpListener,
    /// TCP on [::1].
    pub tcp_v6: TcpListener,
    /// DNS on 127.0.0.1.
    pub dns_v4: UdpSocket,
    /// DNS on [::1].
    pub dns_v6: UdpSocket,
}

impl Listeners {
    /// Binds all four on ephemeral ports, the same TCP port on both families and the same UDP
    /// port on both families (the kernel side rewrites to one port per protocol).
    pub async fn bind() -> std::io::Result<Listeners> {
        let mut last_err = None;
        for _ in 0..32 {
            let tcp_v4 = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
            let port = tcp_v4.local_addr()?.port();
            let tcp_v6 = match TcpListener::bind((Ipv6Addr::LOCALHOST, port)).await {
                Ok(l) => l,
                Err(e) => {
                    last_err = Some(e);
                    continue;
                }
            };
            let dns_v4 = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
            let dns_port = dns_v4.local_addr()?.port();
            let dns_v6 = match UdpSocket::bind((Ipv6Addr::LOCALHOST, dns_port)).await {
                Ok(s) => s,
                Err(e) => {
                    last_err = Some(e);
                    continue;
                }
            };
            return Ok(Listeners {
                tcp_v4,
                tcp_v6,
                dns_v4,
                dns_v6,
            });
        }
        Err(last_err.unwrap_or_else(|| std::io::Error::other("no free port pair")))
    }

    /// The TCP port.
    pub fn tcp_port(&self) -> u16 {
        self.tcp_v4.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The DNS port.
    pub fn dns_port(&self) -> u16 {
        self.dns_v4.local_addr().map(|a| a.port()).unwrap_or(0)
    }
}

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

/// Looks up the original destination for a freshly accepted connection.
pub fn recover(
    hook: &Hook,
    client: TcpStream,
    peer: SocketAddr,
) -> Result<Redirected, Unattributed> {
    match hook.take_orig_dst(peer) {
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
