//! Support for the end-to-end tests: where the binaries are, the privileged-test gate, test
//! peers (in [`world`], the test network namespace that stands for the outside world, or on
//! loopback), and running a command under `harness run`.
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

pub mod peers;
pub mod world;

pub use harness::ledger::{read_session, session_files, Entry, Recorded};

/// Whether privileged tests should run. They run when `HARNESS_PRIVILEGED_TESTS=1` (as
/// `cargo xtask test` sets) and then must be root; otherwise each says loudly it was skipped.
pub fn privileged(test: &str) -> bool {
    if std::env::var("HARNESS_PRIVILEGED_TESTS").as_deref() != Ok("1") {
        eprintln!("\n*** SKIPPED {test}: privileged test; run through `cargo xtask test` as root (HARNESS_PRIVILEGED_TESTS=1) ***\n");
        return false;
    }
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "HARNESS_PRIVILEGED_TESTS=1 but not root: privileged tests need root"
    );
    true
}

fn target_dir_bin(name: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps/; binaries one level up.
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    profile_dir.join(name)
}

/// The `harness` binary under test (`HARNESS_BIN`, else beside the test executable).
pub fn harness_bin() -> PathBuf {
    let path = std::env::var_os("HARNESS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir_bin("harness"));
    assert!(
        path.exists(),
        "{}: no harness binary; build it (cargo build -p harness-daemon) or set HARNESS_BIN",
        path.display()
    );
    path
}

/// The `probe` client binary (`HARNESS_PROBE`, else built alongside this test).
pub fn probe_bin() -> PathBuf {
    std::env::var_os("HARNESS_PROBE")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir_bin("probe"))
}

/// The resident set high-water mark of a process (`VmHWM`), in KiB; 0 once it is gone.
pub fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A fresh empty directory under the system temp dir, world-traversable.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "harness-test-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The project's Python virtualenv (`HARNESS_PYTHON_VENV`, made by `cargo xtask test`: pip's
/// `requests`, `httpx`, `certifi`, `anthropic`), at a path the enclosed user (`nobody`) can
/// use: the venv itself when every user can reach it, else a world-readable copy in `work`.
/// `None`, after saying so loudly, when it is not given or the test runs in the VM (which has
/// no virtualenv).
pub fn python_venv(test: &str, work: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    if std::env::var_os("HARNESS_IN_VM").is_some() {
        eprintln!("\n*** SKIPPED {test}: no Python virtualenv in the VM image ***\n");
        return None;
    }
    let Some(venv) = std::env::var_os("HARNESS_PYTHON_VENV").map(PathBuf::from) else {
        eprintln!("\n*** SKIPPED {test}: HARNESS_PYTHON_VENV is not set; `cargo xtask test` makes the virtualenv and sets it ***\n");
        return None;
    };
    let venv = venv
        .canonicalize()
        .unwrap_or_else(|e| panic!("HARNESS_PYTHON_VENV={}: {e}", venv.display()));
    let open = venv.ancestors().skip(1).all(|dir| {
        dir.metadata()
            .is_ok_and(|m| m.permissions().mode() & 0o001 != 0)
    });
    if open {
        return Some(venv);
    }
    let copy = work.join("python-venv");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&venv)
        .arg(&copy)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&copy)
            .status()
            .is_ok_and(|s| s.success());
    assert!(copied, "copying {} to {}", venv.display(), copy.display());
    std::fs::set_permissions(work, std::fs::Permissions::from_mode(0o755)).unwrap();
    Some(copy)
}

/// A TCP test peer: answers every connection with `hello from <its address>` (HTTP/1.1 if the
/// client spoke HTTP), and remembers what each client sent.
pub struct Peer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What each connection sent, in order.
    pub received: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Peer {
    /// Starts a peer on `ip` (port chosen by the kernel): inside the [`world`] for a world
    /// address ([`world::addr`]), here for any other (loopback).
    pub fn start(ip: IpAddr) -> Peer {
        let listener =
            world::listener(SocketAddr::new(ip, 0)).unwrap_or_else(|e| panic!("bind {ip}: {e}"));
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                        if got.ends_with(b"\r\n\r\n") || got.ends_with(b"hello\n") {
                            break;
                        }
                    }
                    let body = format!("hello from {addr}");
                    let reply = if got.starts_with(b"GET ") {
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    } else {
                        body
                    };
                    let _ = stream.write_all(reply.as_bytes());
                    log.lock().unwrap().push(got);
                });
            }
        });
        Peer { addr, received }
    }
}

/// A DNS test server answering every A question with `answer` (TTL 60), e.g. a
/// [`world::addr`]. It listens on the host's loopback: the daemon's resolver, which forwards to
/// it (`--dns-upstream`), runs in the host's network namespace.
pub fn dns_server(answer: IpAddr) -> SocketAddr {
    let IpAddr::V4(answer) = answer else {
        panic!("dns_server answers A questions: {answer} is not an IPv4 address");
    };
    let answer = answer.octets();
    let socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let q = &buf[..n];
            if q.len() < 12 {
                continue;
            }
            let mut end = 12;
            while end < q.len() && q[end] != 0 {
                end += 1 + q[end] as usize;
            }
            end += 5;
            if end > q.len() {
                continue;
            }
            let mut r = Vec::with_capacity(end + 16);
            r.extend_from_slice(&q[..2]);
            r.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
            r.extend_from_slice(&q[12..end]);
            r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            r.extend_from_slice(&answer);
            let _ = socket.send_to(&r, from);
        }
    });
    addr
}

/// A DNS test server that knows only `hosts`: an A question for one of their names (any case,
/// with or without the final dot) gets its address (TTL 60), an AAAA question for one of them
/// an empty answer, and a question for any other name `NXDOMAIN` — so an agent that looks up a
/// name the test did not plan for learns nothing, and the ledger shows what it asked. On the
/// host's loopback, as [`dns_server`].
pub fn dns_server_for(hosts: &[(&str, IpAddr)]) -> SocketAddr {
    let hosts: Vec<(String, [u8; 4])> = hosts
        .iter()
        .map(|(name, ip)| match ip {
            IpAddr::V4(v4) => (name.trim_end_matches('.').to_ascii_lowercase(), v4.octets()),
            IpAddr::V6(_) => panic!("dns_server_for answers A questions: {ip} is not IPv4"),
        })
        .collect();
    let socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let q = &buf[..n];
            let mut labels = Vec::new();
            let mut at = 12;
            while at < q.len() && q[at] != 0 && q[at] < 64 {
                let len = q[at] as usize;
                let Some(label) = q.get(at + 1..at + 1 + len) else {
                    break;
                };
                labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
                at += 1 + len;
            }
            let end = at + 5;
            if q.len() < end || q[at] != 0 {
                continue;
            }
            let qtype = u16::from_be_bytes([q[at + 1], q[at + 2]]);
            let name = labels.join(".");
            let known = hosts.iter().find(|(host, _)| *host == name);
            let answer = known.filter(|_| qtype == 1).map(|(_, ip)| ip);
            let mut r = Vec::with_capacity(end + 16);
            r.extend_from_slice(&q[..2]);
            r.extend_from_slice(&[0x81, if known.is_some() { 0x80 } else { 0x83 }]);
            r.extend_from_slice(&[0, 1, 0, u8::from(answer.is_some()), 0, 0, 0, 0]);
            r.extend_from_slice(&q[12..end]);
            if let Some(ip) = answer {
                r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
                r.extend_from_slice(ip);
            }
            let _ = socket.send_to(&r, from);
        }
    });
    addr
}

/// What one `harness run` did.
pub struct Enclosed {
    /// Its exit status and output.
    pub output: Output,
    /// The JSON objects the probe printed, one per line.
    pub results: Vec<serde_json::Value>,
    /// The entries of the session it recorded.
    pub entries: Vec<Recorded>,
}

/// Runs `harness run --ledger <dir> [--user nobody] [extra…] -- <command…>` (as `nobody`
/// unless `extra` names a user) and reads back the one session it recorded.
pub fn run_enclosed(ledger: &Path, extra: &[&str], command: &[&str]) -> Enclosed {
    run_enclosed_from(None, ledger, extra, command)
}

/// As [`run_enclosed`], with `harness run` (and so the command) started in the working
/// directory `cwd` when one is given.
pub fn run_enclosed_from(
    cwd: Option<&Path>,
    ledger: &Path,
    extra: &[&str],
    command: &[&str],
) -> Enclosed {
    let mut cmd = Command::new(harness_bin());
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    enclosed(cmd, ledger, extra, command)
}

/// As [`run_enclosed`], with `harness run` started under an open-file soft limit of `soft`
/// (its hard limit as it is). Set in the child itself: the VM has no `prlimit`.
pub fn run_enclosed_with_fd_limit(
    soft: u64,
    ledger: &Path,
    extra: &[&str],
    command: &[&str],
) -> Enclosed {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = Command::new(harness_bin());
    // SAFETY: runs in the forked child before exec and makes only the async-signal-safe
    // getrlimit and setrlimit system calls, on a struct of its own.
    unsafe {
        cmd.pre_exec(move || {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            limit.rlim_cur = soft.min(limit.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    enclosed(cmd, ledger, extra, command)
}

/// As [`run_enclosed`], with `harness run`'s own command given: `cmd` runs `harness` (or a
/// wrapper that runs it next: `timeout`, say), with the environment, working directory and
/// arguments the test chose; `run --no-daemon --ledger …` and the rest are appended.
pub fn run_enclosed_command(
    cmd: Command,
    ledger: &Path,
    extra: &[&str],
    command: &[&str],
) -> Enclosed {
    enclosed(cmd, ledger, extra, command)
}

fn enclosed(mut cmd: Command, ledger: &Path, extra: &[&str], command: &[&str]) -> Enclosed {
    cmd.arg("run")
        .arg("--no-daemon")
        .arg("--ledger")
        .arg(ledger);
    if !extra.contains(&"--user") {
        cmd.args(["--user", "nobody"]);
    }
    cmd.args(extra).arg("--").args(command);
    let output = cmd.output().expect("running harness");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let results = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let files = session_files(ledger).expect("listing sessions");
    assert_eq!(
        files.len(),
        1,
        "one session expected in {}; harness stderr: {}",
        ledger.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let entries = read_session(&files[0]).expect("reading the session");
    Enclosed {
        output,
        results,
        entries,
    }
}

/// Runs `probe ARGS…` enclosed (one result line expected).
pub fn probe(ledger: &Path, extra: &[&str], args: &[&str]) -> (serde_json::Value, Vec<Recorded>) {
    let probe = probe_bin();
    let mut command = vec![probe.to_str().unwrap()];
    command.extend_from_slice(args);
    let run = run_enclosed(ledger, extra, &command);
    assert!(
        run.output.status.success(),
        "harness run failed ({:?}): {}",
        run.output.status,
        String::from_utf8_lossy(&run.output.stderr)
    );
    let result = run.results.into_iter().next().unwrap_or_else(|| {
        panic!(
            "probe printed nothing; stderr: {}",
            String::from_utf8_lossy(&run.output.stderr)
        )
    });
    (result, run.entries)
}
