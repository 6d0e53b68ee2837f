//! `escape`: what an agent that wants out of its enclosure would try, one attempt per mode.
//! The escape tests run it inside `harness run`; it prints one JSON line: `"escaped":true` and
//! what got through when an attempt worked, else the errno each step met.
//!
//! It never connects an AF_VSOCK socket (that could reach the hypervisor): creating one is
//! all it tries.
use std::io::{Read as _, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let line = match args.as_slice() {
        ["process", pid] => process(pid.parse().expect("pid")),
        ["tiocsti"] => tiocsti(),
        ["socket", family] => socket(family),
        ["unix", path] => unix(path.as_bytes()),
        ["abstract", name] => {
            let mut addr = vec![0u8];
            addr.extend_from_slice(name.as_bytes());
            unix(&addr)
        }
        ["fd", fd] => fd_write(fd.parse().expect("fd")),
        ["listen", addr, ready, secs] => listen(addr, ready, secs.parse().expect("secs")),
        ["recv-udp", addr, ready, secs] => recv_udp(addr, ready, secs.parse().expect("secs")),
        ["bind", addr] => match std::net::TcpListener::bind(addr) {
            Ok(_) => escaped(&format!("bound {addr}")),
            Err(e) => held(&[("bind", &e)]),
        },
        ["uring"] => uring(),
        ["unprotect", dir, file] => unprotect(dir, file),
        ["write", path] => match std::fs::OpenOptions::new().append(true).open(path) {
            Ok(mut f) => match f.write_all(b"# written from inside the enclosure\n") {
                Ok(()) => escaped(&format!("appended to {path}")),
                Err(e) => held(&[("write", &e)]),
            },
            Err(e) => held(&[("open", &e)]),
        },
        _ => panic!("usage: escape MODE ARGS… (see the source)"),
    };
    println!("{line}");
}

fn escaped(what: &str) -> String {
    format!("{{\"escaped\":true,\"what\":{}}}", json_str(what))
}

/// Every step failed: each step's name and errno.
fn held(steps: &[(&str, &std::io::Error)]) -> String {
    let fields: Vec<String> = steps
        .iter()
        .map(|(step, e)| {
            format!(
                "{}:{{\"errno\":{},\"error\":{}}}",
                json_str(step),
                e.raw_os_error().unwrap_or(0),
                json_str(&e.to_string())
            )
        })
        .collect();
    format!("{{\"escaped\":false,{}}}", fields.join(","))
}

fn last() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Every way to act on another process by its pid: signal it, read its environment, attach
/// to it, take a descriptor from it, read its memory.
fn process(pid: libc::pid_t) -> String {
    let mut failed = Vec::new();
    // SAFETY: kill with signal 0 only checks existence and permission.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return escaped("kill(pid, 0) reached the process");
    }
    failed.push(("kill", last()));
    match std::fs::read(format!("/proc/{pid}/environ")) {
        Ok(_) => return escaped("read /proc/PID/environ"),
        Err(e) => failed.push(("environ", e)),
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/mem"))
    {
        Ok(_) => return escaped("opened /proc/PID/mem for writing"),
        Err(e) => failed.push(("mem", e)),
    }
    // SAFETY: PTRACE_SEIZE takes a pid and no memory of ours.
    if unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0, 0) } == 0 {
        return escaped("ptrace(PTRACE_SEIZE) attached");
    }
    failed.push(("ptrace", last()));
    // SAFETY: pidfd_open takes plain integers; a returned fd is owned below.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd >= 0 {
        // SAFETY: a fresh fd from pidfd_open.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
        // SAFETY: pidfd_getfd takes plain integers.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), 0, 0) };
        if fd >= 0 {
            return escaped("pidfd_getfd took a descriptor");
        }
        failed.push(("pidfd_getfd", last()));
    } else {
        failed.push(("pidfd_open", last()));
    }
    let mut byte = [0u8; 1];
    let local = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let remote = libc::iovec {
        iov_base: 0x400000 as *mut libc::c_void,
        iov_len: 1,
    };
    // SAFETY: reads at most one byte into our buffer; the remote address is the other
    // process's, which the kernel checks.
    if unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) } >= 0 {
        return escaped("process_vm_readv read the process's memory");
    }
    failed.push(("process_vm_readv", last()));
    let steps: Vec<(&str, &std::io::Error)> = failed.iter().map(|(s, e)| (*s, e)).collect();
    held(&steps)
}

/// Push a command into the terminal on standard input.
fn tiocsti() -> String {
    let mut failed = Vec::new();
    // SAFETY: TIOCSTI reads one byte from the pointer we pass.
    if unsafe { libc::ioctl(0, libc::TIOCSTI as _, b"i".as_ptr()) } == 0 {
        return escaped("TIOCSTI pushed input into the terminal");
    }
    failed.push(("tiocsti", last()));
    // Make it the controlling terminal first, as an attacker would.
    // SAFETY: TIOCSCTTY takes an integer argument.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY as _, 0) } == 0 {
        // SAFETY: as above.
        if unsafe { libc::ioctl(0, libc::TIOCSTI as _, b"i".as_ptr()) } == 0 {
            return escaped("TIOCSTI after TIOCSCTTY pushed input");
        }
    }
    failed.push(("tiocsctty", last()));
    let steps: Vec<(&str, &std::io::Error)> = failed.iter().map(|(s, e)| (*s, e)).collect();
    held(&steps)
}

/// Create (never connect) a socket of a family the enclosure does not carry.
fn socket(family: &str) -> String {
    let (domain, ty) = match family {
        "vsock" => (libc::AF_VSOCK, libc::SOCK_STREAM),
        "tipc" => (libc::AF_TIPC, libc::SOCK_RDM),
        "packet" => (libc::AF_PACKET, libc::SOCK_RAW),
        "alg" => (libc::AF_ALG, libc::SOCK_SEQPACKET),
        "bluetooth" => (libc::AF_BLUETOOTH, libc::SOCK_STREAM),
        "xdp" => (libc::AF_XDP, libc::SOCK_RAW),
        "rds" => (libc::AF_RDS, libc::SOCK_SEQPACKET),
        "netlink" => (libc::AF_NETLINK, libc::SOCK_RAW),
        other => panic!("unknown family {other}"),
    };
    // SAFETY: socket takes plain integers; a returned fd is owned (and closed) at once.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, 0) };
    if fd >= 0 {
        // SAFETY: a fresh fd from socket(2).
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
        return escaped(&format!("created an {family} socket"));
    }
    held(&[("socket", &last())])
}

/// Connect to a unix socket (pathname, or abstract when `addr` starts with NUL) and trade a
/// line with whatever listens there.
fn unix(addr: &[u8]) -> String {
    // SAFETY: socket takes plain integers; the fd is owned right below.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return held(&[("socket", &last())]);
    }
    // SAFETY: a fresh fd from socket(2).
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_un is plain old data; all-zero is valid.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in sa.sun_path.iter_mut().zip(addr) {
        *dst = *src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + addr.len();
    // SAFETY: connect reads `len` bytes of the sockaddr we own.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    if rc != 0 {
        return held(&[("connect", &last())]);
    }
    let mut stream = std::os::unix::net::UnixStream::from(fd);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.write_all(b"hello\n");
    let mut reply = [0u8; 256];
    let n = stream.read(&mut reply).unwrap_or(0);
    escaped(&format!(
        "connected; the other side said {:?}",
        String::from_utf8_lossy(&reply[..n])
    ))
}

/// Use a descriptor inherited from whoever started `harness run`.
fn fd_write(fd: i32) -> String {
    // SAFETY: write from a static buffer to an fd number; the kernel checks it.
    if unsafe { libc::write(fd, b"hello\n".as_ptr().cast(), 6) } >= 0 {
        return escaped(&format!("wrote to inherited fd {fd}"));
    }
    held(&[("write", &last())])
}

/// Wait for someone outside to connect to a listener inside.
fn listen(addr: &str, ready: &str, secs: u64) -> String {
    let listener = match std::net::TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => return held(&[("bind", &e)]),
    };
    let _ = listener.set_nonblocking(true);
    let _ = std::fs::write(ready, listener.local_addr().unwrap().to_string());
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        match listener.accept() {
            Ok((_, from)) => return escaped(&format!("accepted a connection from {from}")),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    held(&[(
        "accept",
        &std::io::Error::new(std::io::ErrorKind::TimedOut, "nobody connected"),
    )])
}

/// Wait for a datagram from outside.
fn recv_udp(addr: &str, ready: &str, secs: u64) -> String {
    let socket = match std::net::UdpSocket::bind(addr) {
        Ok(s) => s,
        Err(e) => return held(&[("bind", &e)]),
    };
    let _ = socket.set_read_timeout(Some(Duration::from_secs(secs)));
    let _ = std::fs::write(ready, socket.local_addr().unwrap().to_string());
    let mut buf = [0u8; 1500];
    match socket.recv_from(&mut buf) {
        Ok((n, from)) => escaped(&format!("received {n} bytes from {from}")),
        Err(e) => held(&[("recv", &e)]),
    }
}

/// Undo a read-only mount over `dir`, then append to `file` beneath it: unmount it, remount it
/// writable, and both again from a user namespace of its own with a new mount namespace (where
/// it holds `CAP_SYS_ADMIN`).
fn unprotect(dir: &str, file: &str) -> String {
    let c_dir = std::ffi::CString::new(dir).expect("dir");
    let mut failed: Vec<(String, std::io::Error)> = Vec::new();
    let mut undone = Vec::new();
    let mut undo = |failed: &mut Vec<(String, std::io::Error)>, prefix: &str| {
        // SAFETY: umount2 reads the NUL-terminated path we own.
        if unsafe { libc::umount2(c_dir.as_ptr(), libc::MNT_DETACH) } == 0 {
            undone.push(format!("{prefix}umount"));
        } else {
            failed.push((format!("{prefix}umount"), last()));
        }
        // SAFETY: mount reads the NUL-terminated path we own; null source, type and data are
        // what a remount takes.
        let rc = unsafe {
            libc::mount(
                std::ptr::null(),
                c_dir.as_ptr(),
                std::ptr::null(),
                libc::MS_REMOUNT | libc::MS_BIND,
                std::ptr::null(),
            )
        };
        if rc == 0 {
            undone.push(format!("{prefix}remount"));
        } else {
            failed.push((format!("{prefix}remount"), last()));
        }
    };
    undo(&mut failed, "");
    // SAFETY: unshare takes a flag word (this program is single-threaded).
    if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } == 0 {
        // SAFETY: a propagation change on a static path: null source, type and data.
        unsafe {
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        };
        undo(&mut failed, "userns_");
    } else {
        failed.push(("unshare".into(), last()));
    }
    match std::fs::OpenOptions::new()
        .append(true)
        .open(file)
        .and_then(|mut f| f.write_all(b"# written from inside the enclosure\n"))
    {
        Ok(()) => escaped(&format!("appended to {file} (undone: {undone:?})")),
        Err(e) => {
            failed.push(("write".into(), e));
            let steps: Vec<(&str, &std::io::Error)> =
                failed.iter().map(|(s, e)| (s.as_str(), e)).collect();
            held(&steps)
        }
    }
}

/// io_uring creates sockets without socket(2).
fn uring() -> String {
    // SAFETY: io_uring_params is plain old data; the kernel writes into ours.
    let mut params: [u8; 120] = [0; 120];
    // SAFETY: io_uring_setup reads and writes the params buffer we own (120 bytes is the
    // struct's size); a returned fd is owned at once.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if fd >= 0 {
        // SAFETY: a fresh fd.
        drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        return escaped("set up an io_uring");
    }
    held(&[("io_uring_setup", &last())])
}

/// `s` as a JSON string literal.
fn json_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}
