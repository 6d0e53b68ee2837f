//! The world: a network namespace this test process makes for itself, standing for everything
//! outside an enclosure (model providers, brokerages, any "external API"), reached from the host
//! over a veth pair.
//!
//! Why not loopback: an enclosed session gets (or will get) its own network namespace, so a
//! connection from inside it to 127.0.0.0/8, `::1` or `0.0.0.0` reaches the *session's*
//! loopback — where the agent's own MCP servers live — never the host's. Host-local services
//! are not the outside world of an enclosure; a peer that plays one must live elsewhere. The
//! daemon forwards every non-loopback destination from the host's namespace, so a peer here is
//! reachable through harness the way a real remote host is.
//!
//! The world is made on first use and lives as long as the process:
//!
//! ```text
//!   host netns                                world netns "harness-w<pid>"
//!   hworld<k>  198.18.<k>.1/24  ◄── veth ──►  eth0  198.18.<k>.2 … .9/24
//!              fd00:198:18:<k>::1/64                fd00:198:18:<k>::2 … ::9/64
//!                                                   lo up
//! ```
//!
//! `198.18.0.0/15` is RFC 2544's benchmarking range (test hosts only); the IPv6 addresses are
//! unique local ones (`<k>` written in hex there: 198.18.42.2 is fd00:198:18:2a::2). `<k>` is claimed by the host-side interface name `hworld<k>`: creating it
//! fails with `File exists` while another test process (or `cargo xtask demo`) holds that `<k>`,
//! and the next one is tried. The namespace's name is removed at exit (`atexit`); namespaces
//! left by processes that died without exiting (`harness-w<pid>` with no such pid) are removed
//! when the next world is made. Traffic only ever goes to loopback or to these addresses.
//!
//! ```no_run
//! use harness_tests::{world, Peer};
//! let peer = Peer::start(world::addr(2)); // listens inside the world
//! let mut child = std::process::Command::new("/bin/true");
//! world::command(&mut child).status().unwrap(); // runs inside the world
//! ```
//!
//! Making the world needs root (`ip netns add`); its first use panics saying why when it fails.
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// Where `ip netns add` keeps named namespaces.
const NETNS_DIR: &str = "/run/netns";
/// The prefix of every world's namespace name (`harness-w<pid>`).
pub const NETNS_PREFIX: &str = "harness-w";
/// The prefix of the host-side veth's name (`hworld<k>`), which claims `<k>`.
const HOST_IF_PREFIX: &str = "hworld";
/// The world-side veth's name, inside the world.
const WORLD_IF: &str = "eth0";
/// The host addresses every world has: `.2` to `.9` (and `::2` to `::9`).
pub const HOSTS: std::ops::RangeInclusive<u8> = 2..=9;

/// What went wrong making the world.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An `ip` command failed.
    #[error("`ip {args}` failed ({status}): {stderr}")]
    Ip {
        /// Its arguments.
        args: String,
        /// How it ended.
        status: String,
        /// What it said.
        stderr: String,
    },
    /// A file or socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Every `<k>` is taken.
    #[error("all 256 subnets 198.18.0-255.0/24 are taken by other worlds (hworld0..255)")]
    Exhausted,
}

/// One process's world.
struct World {
    /// Its namespace's name (`ip netns exec NAME …`).
    name: String,
    /// Its subnet: 198.18.`k`.0/24.
    k: u8,
    /// The namespace itself (`/run/netns/NAME`), open for the life of the process.
    ns: File,
}

static WORLD: OnceLock<World> = OnceLock::new();

fn world() -> &'static World {
    WORLD.get_or_init(|| {
        World::create().unwrap_or_else(|e| {
            panic!("making the test network namespace (the world; needs root and `ip`): {e}")
        })
    })
}

// === the API ===

/// The world's `n`th host address, `198.18.<k>.<n>` for `n` in 2..=9 (as the tests once used
/// 127.0.0.2, .3, …). Makes the world on first use.
pub fn addr(n: u8) -> IpAddr {
    assert!(HOSTS.contains(&n), "world::addr({n}): hosts are 2..=9");
    IpAddr::V4(Ipv4Addr::new(198, 18, world().k, n))
}

/// The world's `n`th IPv6 host address, `fd00:198:18:<k>::<n>` for `n` in 2..=9.
pub fn addr6(n: u8) -> IpAddr {
    assert!(HOSTS.contains(&n), "world::addr6({n}): hosts are 2..=9");
    IpAddr::V6(v6(world().k, n))
}

/// The host's end of the veth, `198.18.<k>.1`: where a world peer sees connections from the
/// host (the daemon's upstream connections, a test's own clients) come from.
pub fn host_addr() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, world().k, 1))
}

/// The host's end of the veth over IPv6, `fd00:198:18:<k>::1`.
pub fn host_addr6() -> IpAddr {
    IpAddr::V6(v6(world().k, 1))
}

/// The world's namespace name, for `ip netns exec NAME …` or `ip -n NAME …`.
pub fn name() -> &'static str {
    &world().name
}

/// Whether `ip` is a world address: in 198.18.0.0/15 (RFC 2544) or fd00:198:18::/48, also as
/// an IPv4-mapped IPv6 address. Does not make the world.
pub fn contains(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            a == 198 && (b & 0xfe) == 18
        }
        IpAddr::V6(v6) => v6.segments()[..3] == [0xfd00, 0x198, 0x18],
    }
}

/// A TCP listener bound to `addr` inside the world (backlog 1024). A socket keeps the network
/// namespace it was made in, so it serves the world from any thread of this process.
pub fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    inside(|| tcp_here(addr))
}

/// A UDP socket bound to `addr` inside the world.
pub fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    inside(|| udp_here(addr))
}

/// A TCP listener on `addr` wherever `addr` lives: in the world for a world address (see
/// [`contains`]) that this process's own namespace does not have, else here — on loopback, say,
/// or in the world already for a process [`command`] started there (such as the `peers`
/// binary), which then binds like any program.
pub fn listener(addr: SocketAddr) -> io::Result<TcpListener> {
    match tcp_here(addr) {
        Err(e) if contains(addr.ip()) && e.kind() == io::ErrorKind::AddrNotAvailable => {
            bind_tcp(addr)
        }
        other => other,
    }
}

/// A UDP socket on `addr` wherever `addr` lives (as [`listener`]).
pub fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    match udp_here(addr) {
        Err(e) if contains(addr.ip()) && e.kind() == io::ErrorKind::AddrNotAvailable => {
            bind_udp(addr)
        }
        other => other,
    }
}

/// Makes `cmd`'s child run inside the world (its network namespace only: files, users and
/// the rest are the host's). Makes the world now if need be.
pub fn command(cmd: &mut Command) -> &mut Command {
    let fd = world().ns.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and only calls setns(2), a plain
    // system call (async-signal-safe, no allocation, no locks); `fd` is open in the child, as
    // the world's namespace file stays open for the life of this process and fork keeps it.
    unsafe { cmd.pre_exec(move || enter(fd)) }
}

/// Removes the namespaces of worlds whose process is gone (`harness-w<pid>`, no such pid), and
/// returns their names. Making a world does this first; tests may call it too.
pub fn remove_stale() -> Vec<String> {
    remove_dead(false)
}

/// [`remove_stale`]; with `namesake`, also a namespace named for this very process, which can
/// only be a dead namesake's (pids are reused) while this process has not made its world.
fn remove_dead(namesake: bool) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let own = std::process::id();
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(NETNS_PREFIX)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let dead = if pid == own {
            namesake
        } else {
            !Path::new(&format!("/proc/{pid}")).exists()
        };
        if dead && ip(&["netns", "del", &name]).is_ok() {
            removed.push(name);
        }
    }
    removed
}

// === impl World ===

impl World {
    fn create() -> Result<World, Error> {
        remove_dead(true);
        let name = format!("{NETNS_PREFIX}{}", std::process::id());
        ip(&["netns", "add", &name])?;
        let made = Self::wire(&name);
        if made.is_err() {
            let _ = ip(&["netns", "del", &name]);
        }
        let world = made?;
        // SAFETY: registering a plain `extern "C" fn()` with atexit(3) has no preconditions;
        // the handler never unwinds.
        unsafe { libc::atexit(remove_at_exit) };
        Ok(world)
    }

    /// Claims a `<k>` with the veth, addresses both ends, and checks that the world answers.
    fn wire(name: &str) -> Result<World, Error> {
        let ns = File::open(Path::new(NETNS_DIR).join(name)).map_err(|source| Error::Io {
            context: format!("opening {NETNS_DIR}/{name}"),
            source,
        })?;
        let k = Self::claim(name)?;
        let host_if = format!("{HOST_IF_PREFIX}{k}");
        let host = format!(
            "addr add 198.18.{k}.1/24 dev {host_if}\n\
             addr add {}/64 dev {host_if} nodad\n\
             link set {host_if} up\n",
            v6(k, 1)
        );
        ip_batch(&[], &host)?;
        let mut inner = String::from("link set lo up\n");
        for n in HOSTS {
            inner += &format!("addr add 198.18.{k}.{n}/24 dev {WORLD_IF}\n");
            inner += &format!("addr add {}/64 dev {WORLD_IF} nodad\n", v6(k, n));
        }
        inner += &format!("link set {WORLD_IF} up\n");
        ip_batch(&["-n", name], &inner)?;
        let world = World {
            name: name.to_owned(),
            k,
            ns,
        };
        world.check()?;
        Ok(world)
    }

    /// The first free `<k>`, starting from one derived from the pid.
    fn claim(name: &str) -> Result<u8, Error> {
        let start = std::process::id() % 256;
        for i in 0..256 {
            let k = ((start + i) % 256) as u8;
            let host_if = format!("{HOST_IF_PREFIX}{k}");
            let args = [
                "link", "add", &host_if, "type", "veth", "peer", "name", WORLD_IF, "netns", name,
            ];
            match ip(&args) {
                Ok(()) => return Ok(k),
                Err(Error::Ip { stderr, .. }) if stderr.contains("File exists") => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Exhausted)
    }

    /// The link comes up asynchronously: waits (bounded) until the host reaches a listener in
    /// the world over IPv4 and IPv6.
    fn check(&self) -> Result<(), Error> {
        for ip in [
            IpAddr::V4(Ipv4Addr::new(198, 18, self.k, 2)),
            IpAddr::V6(v6(self.k, 2)),
        ] {
            let io = |context: String| move |source| Error::Io { context, source };
            let listener = in_ns(&self.ns, || tcp_here(SocketAddr::new(ip, 0)))
                .map_err(io(format!("binding {ip} in the world")))?;
            let at = listener
                .local_addr()
                .map_err(io(format!("binding {ip} in the world")))?;
            let mut last = None;
            for _ in 0..250 {
                match std::net::TcpStream::connect_timeout(&at, Duration::from_millis(200)) {
                    Ok(_) => {
                        last = None;
                        break;
                    }
                    Err(e) => {
                        last = Some(e);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
            if let Some(e) = last {
                return Err(io(format!("connecting from the host to {at} in the world"))(e));
            }
        }
        Ok(())
    }
}

extern "C" fn remove_at_exit() {
    if let Some(world) = WORLD.get() {
        // Best effort, and never a panic across the C boundary.
        let _ = std::panic::catch_unwind(|| ip(&["netns", "del", &world.name]));
    }
}

// === sockets and namespaces ===

fn v6(k: u8, n: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x198, 0x18, k.into(), 0, 0, 0, n.into())
}

/// Runs `f` on a short-lived thread inside the world's network namespace.
fn inside<T: Send>(f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    in_ns(&world().ns, f)
}

fn in_ns<T: Send>(ns: &File, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    let fd = ns.as_raw_fd();
    std::thread::scope(|s| {
        s.spawn(move || {
            // Only this thread moves; it ends when `f` has made its socket.
            enter(fd)?;
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// setns(2) into the network namespace `fd` names, for the calling thread.
fn enter(fd: std::os::fd::RawFd) -> io::Result<()> {
    // SAFETY: setns only reads its arguments; a bad fd is reported as an error, not UB.
    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn tcp_here(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

fn udp_here(addr: SocketAddr) -> io::Result<UdpSocket> {
    UdpSocket::bind(addr)
}

// === ip(8) ===

fn ip(args: &[&str]) -> Result<(), Error> {
    run_ip(args, None)
}

/// `ip [global…] -batch -` with `commands` on stdin: one process for many changes.
fn ip_batch(global: &[&str], commands: &str) -> Result<(), Error> {
    let args = [global, &["-batch", "-"]].concat();
    run_ip(&args, Some(commands))
}

fn run_ip(args: &[&str], stdin: Option<&str>) -> Result<(), Error> {
    let shown = args.join(" ");
    let io = |source| Error::Io {
        context: format!("running `ip {shown}`"),
        source,
    };
    let mut child = Command::new("ip")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io)?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use std::io::Write as _;
        pipe.write_all(text.as_bytes()).map_err(io)?;
    }
    let out = child.wait_with_output().map_err(io)?;
    if !out.status.success() {
        return Err(Error::Ip {
            args: match stdin {
                Some(text) => format!("{shown} <<< {:?}", text),
                None => shown,
            },
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn world_addresses_are_recognised_without_making_a_world() {
        for ip in [
            "198.18.0.2",
            "198.18.255.9",
            "198.19.1.1",
            "fd00:198:18:7::2",
            "::ffff:198.18.3.4",
        ] {
            assert!(contains(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "127.0.0.2",
            "198.17.0.1",
            "198.20.0.1",
            "::1",
            "fd00::2",
            "fd00:198:19::1",
            "0.0.0.0",
        ] {
            assert!(!contains(ip.parse().unwrap()), "{ip}");
        }
        assert!(WORLD.get().is_none());
    }

    #[test]
    fn ipv6_hosts_spell_the_subnet() {
        assert_eq!(v6(42, 3).to_string(), "fd00:198:18:2a::3");
    }
}
