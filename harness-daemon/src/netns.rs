//! Per-session network namespaces: the enclosure's only way out is the daemon.
//!
//! Every session runs in a network namespace of its own that holds nothing but `lo`. The
//! daemon's listeners (TCP and DNS, on 127.0.0.1 and ::1, port [`DAEMON_TCP_PORT`] /
//! [`DAEMON_DNS_PORT`]) are created *inside* it, and the kernel side rewrites every connect to
//! them. So, by construction rather than by rule:
//!
//! - host-local services (anything listening on the host's loopback, abstract unix sockets,
//!   D-Bus' abstract address, …) are not there to be reached: the session's loopback and its
//!   abstract socket namespace are its own;
//! - nothing from the network, and no process outside, can reach an enclosed listener: the
//!   namespace has no interface but `lo`;
//! - the daemon's port cannot be taken over by anyone else: it exists only inside the session,
//!   below 1024, where only the enclosed (unprivileged) processes live.
//!
//! A socket keeps the namespace it was created in. The daemon makes the few sockets it needs
//! inside a session's namespace — its listeners, and upstream connections to the session's own
//! loopback (the agent's MCP servers) — on a short-lived thread that enters the namespace
//! (`setns`), creates the socket and ends; everything else it does from the host's namespace.
use harness_common::{DAEMON_DNS_PORT, DAEMON_TCP_PORT};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Where namespaces of sessions opened over the control socket are bind-mounted, so that the
/// `harness run` client can enter them: `<NETNS_DIR>/<engine>/<session ULID>`.
pub const NETNS_DIR: &str = "/run/harness/netns";

/// Errors creating or entering a session's namespace, each saying what was being done.
#[derive(Debug, thiserror::Error)]
#[error("session network namespace: {what}: {source}")]
pub struct NetnsError {
    what: String,
    #[source]
    source: io::Error,
}

fn err(what: impl Into<String>) -> impl FnOnce(io::Error) -> NetnsError {
    let what = what.into();
    move |source| NetnsError { what, source }
}

/// The daemon's sockets inside one session's namespace.
#[derive(Debug)]
pub struct NetnsListeners {
    /// TCP on 127.0.0.1:[`DAEMON_TCP_PORT`].
    pub tcp_v4: std::net::TcpListener,
    /// TCP on [::1]:[`DAEMON_TCP_PORT`].
    pub tcp_v6: std::net::TcpListener,
    /// DNS on 127.0.0.1:[`DAEMON_DNS_PORT`].
    pub dns_v4: std::net::UdpSocket,
    /// DNS on [::1]:[`DAEMON_DNS_PORT`].
    pub dns_v6: std::net::UdpSocket,
}

/// One session's network namespace.
#[derive(Debug)]
pub struct SessionNetns {
    ns: OwnedFd,
    cookie: u64,
    mounted: Mutex<Option<PathBuf>>,
}

// === impl SessionNetns ===

impl SessionNetns {
    /// Creates a namespace with `lo` up and the daemon's listeners bound inside it.
    pub fn create() -> Result<(SessionNetns, NetnsListeners), NetnsError> {
        let made = std::thread::spawn(|| -> Result<_, NetnsError> {
            // SAFETY: unshare takes a flag word; it moves only this (short-lived) thread.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(err("unshare(CLONE_NEWNET)")(io::Error::last_os_error()));
            }
            loopback_up().map_err(err("bringing lo up"))?;
            let ns = std::fs::File::open("/proc/thread-self/ns/net")
                .map_err(err("opening /proc/thread-self/ns/net"))?;
            let bind_err = |addr: SocketAddr| err(format!("binding the daemon's {addr}"));
            let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, DAEMON_TCP_PORT));
            let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, DAEMON_TCP_PORT));
            let d4 = SocketAddr::from((Ipv4Addr::LOCALHOST, DAEMON_DNS_PORT));
            let d6 = SocketAddr::from((Ipv6Addr::LOCALHOST, DAEMON_DNS_PORT));
            let listeners = NetnsListeners {
                tcp_v4: std::net::TcpListener::bind(v4).map_err(bind_err(v4))?,
                tcp_v6: std::net::TcpListener::bind(v6).map_err(bind_err(v6))?,
                dns_v4: std::net::UdpSocket::bind(d4).map_err(bind_err(d4))?,
                dns_v6: std::net::UdpSocket::bind(d6).map_err(bind_err(d6))?,
            };
            let cookie =
                netns_cookie(listeners.tcp_v4.as_fd()).map_err(err("reading SO_NETNS_COOKIE"))?;
            Ok((OwnedFd::from(ns), cookie, listeners))
        })
        .join()
        .map_err(|_| err("creating")(io::Error::other("thread panicked")))?;
        let (ns, cookie, listeners) = made?;
        for l in [&listeners.tcp_v4, &listeners.tcp_v6] {
            l.set_nonblocking(true).map_err(err("listener"))?;
            // std listens with a backlog of 128: a burst of connections beyond it would wait
            // for SYN retransmits (a second or more each). Listening again raises it to the
            // kernel's somaxconn.
            nix::sys::socket::listen(l, nix::sys::socket::Backlog::MAXCONN)
                .map_err(|e| err("listener backlog")(e.into()))?;
        }
        for s in [&listeners.dns_v4, &listeners.dns_v6] {
            s.set_nonblocking(true).map_err(err("resolver socket"))?;
        }
        let netns = SessionNetns {
            ns,
            cookie,
            mounted: Mutex::new(None),
        };
        Ok((netns, listeners))
    }

    /// The namespace's file descriptor (for `setns` in the enclosed child).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.ns.as_fd()
    }

    /// The namespace's cookie, as the kernel side records it for each enclosed socket.
    pub fn cookie(&self) -> u64 {
        self.cookie
    }

    /// Connects to `dst` from inside the namespace: the session's own loopback (its MCP
    /// servers), never the host's.
    pub async fn connect_tcp(&self, dst: SocketAddr) -> io::Result<tokio::net::TcpStream> {
        let domain = if dst.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        let socket = self.socket(domain, libc::SOCK_STREAM)?;
        let socket = tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
        socket.connect(dst).await
    }

    /// A new non-blocking socket created inside the namespace.
    fn socket(&self, domain: i32, ty: i32) -> io::Result<OwnedFd> {
        let ns = self.ns.try_clone()?;
        std::thread::spawn(move || -> io::Result<OwnedFd> {
            enter(ns.as_fd())?;
            // SAFETY: socket takes plain integers; the returned fd is checked and owned below.
            let fd =
                unsafe { libc::socket(domain, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        })
        .join()
        .map_err(|_| io::Error::other("namespace thread panicked"))?
    }

    /// Bind-mounts the namespace at `<NETNS_DIR>/<engine>/<name>` so that another process (the
    /// `harness run` client of a daemon) can open and enter it; undone by [`Drop`].
    pub fn mount_at(&self, engine: &str, name: &str) -> Result<PathBuf, NetnsError> {
        let dir = Path::new(NETNS_DIR).join(engine);
        std::fs::create_dir_all(&dir).map_err(err(format!("creating {}", dir.display())))?;
        let path = dir.join(name);
        std::fs::File::create(&path).map_err(err(format!("creating {}", path.display())))?;
        let source = format!("/proc/self/fd/{}", self.ns.as_raw_fd());
        nix::mount::mount(
            Some(source.as_str()),
            &path,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| err(format!("bind-mounting onto {}", path.display()))(e.into()))?;
        *self.mounted.lock().unwrap_or_else(|e| e.into_inner()) = Some(path.clone());
        Ok(path)
    }
}

impl Drop for SessionNetns {
    fn drop(&mut self) {
        if let Some(path) = self
            .mounted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            unmount_and_remove(&path);
        }
    }
}

/// How the daemon reaches a connection's destination: from inside the session's namespace
/// (its own loopback) or from the host's.
#[derive(Debug, Clone)]
pub struct Dialer {
    inside: Option<std::sync::Arc<SessionNetns>>,
}

// === impl Dialer ===

impl Dialer {
    /// Connects from the host's namespace.
    pub fn host() -> Dialer {
        Dialer { inside: None }
    }

    /// Connects from inside `netns`.
    pub fn inside(netns: std::sync::Arc<SessionNetns>) -> Dialer {
        Dialer {
            inside: Some(netns),
        }
    }

    /// Opens a TCP connection to `dst`, with Nagle off (released bytes go out at once).
    pub async fn connect(&self, dst: SocketAddr) -> io::Result<tokio::net::TcpStream> {
        let stream = match &self.inside {
            Some(netns) => netns.connect_tcp(dst).await?,
            None => tokio::net::TcpStream::connect(dst).await?,
        };
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

fn unmount_and_remove(path: &Path) {
    let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(path);
}

/// Removes the namespace bind mounts an engine of this name left when it died.
pub fn remove_mounts(engine: &str) {
    let dir = Path::new(NETNS_DIR).join(engine);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            unmount_and_remove(&entry.path());
        }
    }
    let _ = std::fs::remove_dir(&dir);
}

/// Moves the calling thread into the namespace `ns`.
pub fn enter(ns: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: setns takes an fd we borrow for the call and a flag word.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Where a destination is, seen from an enclosed process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The session's own loopback (127/8, ::1, 0.0.0.0, ::): reached inside its namespace.
    Session,
    /// One of the host's own addresses: a service outside the enclosure, refused.
    HostLocal,
    /// Elsewhere: reached from the host's namespace.
    Outside,
}

/// Decides where `dst` is. Loopback and unspecified addresses mean the session's own loopback
/// (as they would to a process in its namespace); an address this host would answer for
/// itself means a service on this host outside the enclosure.
pub fn reach(dst: IpAddr) -> Reach {
    let ip = dst.to_canonical();
    if ip.is_loopback() || ip.is_unspecified() {
        return Reach::Session;
    }
    if is_host_local(ip) {
        Reach::HostLocal
    } else {
        Reach::Outside
    }
}

/// Whether the host answers for `ip` itself. Asked of the kernel, live, for each connection:
/// binding a socket to an address succeeds only where the host's routing table holds it as
/// local — interface addresses, and whole `local` routes as AnyIP setups add them — and an
/// address added a moment ago counts at once. Where binding to foreign addresses is enabled
/// (`ip_nonlocal_bind`), that test says nothing, and the interface addresses decide. Anything
/// unclear counts as local: refused, never let through to a host service.
fn is_host_local(ip: IpAddr) -> bool {
    let sysctl = if ip.is_ipv4() {
        "/proc/sys/net/ipv4/ip_nonlocal_bind"
    } else {
        "/proc/sys/net/ipv6/ip_nonlocal_bind"
    };
    let nonlocal_bind = std::fs::read_to_string(sysctl).map_or(true, |v| v.trim() != "0");
    if nonlocal_bind {
        return nix::ifaddrs::getifaddrs().map_or(true, |mut all| {
            all.any(|ifa| {
                ifa.address.is_some_and(|a| {
                    a.as_sockaddr_in().map(|v4| IpAddr::V4(v4.ip())) == Some(ip)
                        || a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())) == Some(ip)
                })
            })
        });
    }
    match std::net::UdpSocket::bind(SocketAddr::new(ip, 0)) {
        Ok(_) => true,
        Err(e) => e.raw_os_error() != Some(libc::EADDRNOTAVAIL),
    }
}

/// `ip link set lo up` in the calling thread's namespace.
fn loopback_up() -> io::Result<()> {
    // SAFETY: socket takes plain integers; the fd is owned right below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd from socket(2), owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own, for the call only.
    // (`as libc::Ioctl`: the request is a c_ulong for glibc, a c_int for musl.)
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) != 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `SO_NETNS_COOKIE` of a socket: the namespace's cookie, as `bpf_get_netns_cookie` gives it.
fn netns_cookie(socket: BorrowedFd<'_>) -> io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`, which we own.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_unspecified_are_the_sessions_own() {
        for ip in [
            "127.0.0.1",
            "127.9.9.9",
            "::1",
            "0.0.0.0",
            "::",
            "::ffff:127.0.0.2",
        ] {
            assert_eq!(reach(ip.parse().unwrap()), Reach::Session, "{ip}");
        }
        assert_eq!(reach("198.18.0.2".parse().unwrap()), Reach::Outside);
    }
}
