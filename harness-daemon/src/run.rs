//! `harness run`: enclose one command for its lifetime.
//!
//! Creates a session cgroup under the enclosure (starting an engine in-process when no daemon
//! is running), starts the command *already inside* that cgroup and as the invoking user with
//! no_new_privs, waits for it, then closes the session and exits with the command's status.
use crate::control::{self, Request};
use crate::engine::{Engine, EngineConfig, EngineError, SessionSpec, TlsSetup};
use crate::home::{HomeError, ProtectHome};
use crate::ledger::{Ledger, LedgerError, SessionClose};
use crate::policy::{Policy, PolicyError};
use crate::tls::{TrustBundle, TrustError};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `harness run`'s exit status when harness itself fails — not root, a bad policy, an unusable
/// ledger or CA, a daemon error, a command that cannot be started —, as `env`, `timeout` and
/// `docker run` do: distinct from any status the command gives, which passes through as it is.
pub const EXIT_RUN_FAILED: i32 = 125;

/// Where `harness run` records when it embeds the engine and no `--ledger` is given.
pub const DEFAULT_LEDGER: &str = "/var/lib/harness/ledger";

/// What `harness run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Ledger directory (embedded engine only; a daemon records to its own).
    pub ledger: Option<PathBuf>,
    /// Policy file; none allows everything.
    pub policy: Option<PathBuf>,
    /// `--user`: name or uid to run the command as.
    pub user: Option<String>,
    /// Forward DNS here instead of to the server the command addressed.
    pub dns_upstream: Option<SocketAddr>,
    /// Directory of the harness CA.
    pub ca_dir: PathBuf,
    /// Extra roots for verifying destinations' certificates.
    pub upstream_ca: Vec<PathBuf>,
    /// The daemon's control socket.
    pub control: PathBuf,
    /// Never use a running daemon: embed an engine for this command.
    pub no_daemon: bool,
    /// Refuse to run on a kernel that leaves a class of escape open.
    pub require_full_isolation: bool,
    /// `--protect-home`: the command's user's home directory read-only inside the enclosure
    /// (see [`crate::home`]).
    pub protect_home: bool,
    /// `--writable`: directories inside home that stay writable (only with `protect_home`).
    pub writable: Vec<PathBuf>,
    /// The command and its arguments.
    pub command: Vec<OsString>,
}

/// Where an engine writes the trust bundle its enclosed processes are given: a directory every
/// user can read (the agent runs unprivileged), one file per engine.
pub fn trust_bundle_path(engine: &str) -> PathBuf {
    PathBuf::from("/run/harness/trust").join(format!("{engine}.pem"))
}

/// Why `harness run` could not run the command (exit status [`EXIT_RUN_FAILED`]).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Not root.
    #[error("harness run must run as root (it creates cgroups and loads eBPF programs); try: sudo harness run …")]
    NotRoot,
    /// The command's user is unknown.
    #[error("{0}")]
    User(String),
    /// Policy file problem.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Ledger problem.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Engine problem.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A daemon is running but options only an embedded engine honours were given.
    #[error("a harness daemon is running ({0}) and records with its own ledger and policy: drop --ledger/--policy/--dns-upstream, or pass --no-daemon")]
    DaemonConflict(String),
    /// The daemon refused or failed.
    #[error("harness daemon ({socket}): {message}")]
    Daemon {
        /// Control socket path.
        socket: String,
        /// What it said.
        message: String,
    },
    /// The trust bundle's mounts could not be prepared.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// `--protect-home` could not be prepared (home, a `--writable` directory, the mount table).
    #[error(transparent)]
    ProtectHome(#[from] HomeError),
    /// The command could not be started.
    #[error("starting {command}: {source}")]
    Spawn {
        /// The command.
        command: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Who the enclosed command runs as.
#[derive(Debug, Clone)]
pub struct Identity {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Name and home, when the user database knows them.
    pub name: Option<String>,
    /// Home directory.
    pub home: Option<PathBuf>,
}

/// Resolves `--user` or the invoking user behind sudo. Root only when asked for by name.
pub fn identity(user: Option<&str>) -> Result<Identity, RunError> {
    use nix::unistd::{Gid, Uid, User};
    let found = match user {
        Some(spec) => {
            let by_name = User::from_name(spec).ok().flatten();
            let by_uid = spec
                .parse::<u32>()
                .ok()
                .and_then(|uid| User::from_uid(Uid::from_raw(uid)).ok().flatten());
            match by_name.or(by_uid) {
                Some(u) => u,
                None => match spec.parse::<u32>() {
                    // A bare uid without a passwd entry runs with gid = uid.
                    Ok(uid) => {
                        return Ok(Identity {
                            uid,
                            gid: uid,
                            name: None,
                            home: None,
                        })
                    }
                    Err(_) => return Err(RunError::User(format!("--user {spec}: no such user"))),
                },
            }
        }
        None => {
            let uid = std::env::var("SUDO_UID")
                .ok()
                .and_then(|v| v.parse::<u32>().ok());
            let gid = std::env::var("SUDO_GID")
                .ok()
                .and_then(|v| v.parse::<u32>().ok());
            let (Some(uid), Some(gid)) = (uid, gid) else {
                return Err(RunError::User(
                    "no invoking user to run the command as (SUDO_UID/SUDO_GID unset): pass --user USER, or --user root to enclose a root command deliberately".into(),
                ));
            };
            let user = User::from_uid(Uid::from_raw(uid)).ok().flatten();
            return Ok(Identity {
                uid,
                gid: Gid::from_raw(gid).as_raw(),
                name: user.as_ref().map(|u| u.name.clone()),
                home: user.map(|u| u.dir),
            });
        }
    };
    Ok(Identity {
        uid: found.uid.as_raw(),
        gid: found.gid.as_raw(),
        name: Some(found.name),
        home: Some(found.dir),
    })
}

/// Runs the command enclosed; returns the exit status `harness run` should exit with.
pub async fn run(options: RunOptions) -> Result<i32, RunError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(RunError::NotRoot);
    }
    let who = identity(options.user.as_deref())?;
    let home = protect_home(&options, &who)?;
    if !options.no_daemon {
        if let Some(client) = control::Client::connect(&options.control).await {
            if options.ledger.is_some()
                || options.policy.is_some()
                || options.dns_upstream.is_some()
            {
                return Err(RunError::DaemonConflict(
                    options.control.display().to_string(),
                ));
            }
            return run_via_daemon(client, &options.control, &who, &options.command, home).await;
        }
    }
    let policy = match &options.policy {
        Some(path) => Policy::load(path)?,
        None => Policy::allow_all(),
    };
    let ledger = Ledger::open(options.ledger.as_deref().unwrap_or(DEFAULT_LEDGER.as_ref()))?;
    let name = format!("run-{}", ulid::Ulid::new());
    let engine = Engine::start(EngineConfig {
        tls: Some(TlsSetup {
            ca_dir: options.ca_dir.clone(),
            bundle: trust_bundle_path(&name),
            upstream_roots: options.upstream_ca.clone(),
        }),
        name,
        ledger,
        policy: Arc::new(policy),
        dns_upstream: options.dns_upstream,
        require_full_isolation: options.require_full_isolation,
    })
    .await?;
    // Its `ask` rules' requests are decided over a socket of its own (`harness decide`).
    let asks_socket =
        std::path::Path::new(control::ASKS_DIR).join(format!("{}.sock", engine.name()));
    let asks = tokio::spawn({
        let (engine, path) = (engine.clone(), asks_socket.clone());
        async move {
            if let Err(e) = control::serve_asks(engine, &path).await {
                tracing::warn!("{}: cannot serve asks: {e}", path.display());
            }
        }
    });
    let result = run_in(&engine, &who, &options.command, home).await;
    asks.abort();
    let _ = std::fs::remove_file(&asks_socket);
    let shutdown = engine.shutdown().await;
    let status = result?;
    shutdown?;
    Ok(status)
}

/// Prepares `--protect-home` for the command's user, before any session is opened, and says on
/// stderr what stays writable under home.
fn protect_home(options: &RunOptions, who: &Identity) -> Result<Option<ProtectHome>, RunError> {
    if !options.protect_home {
        if !options.writable.is_empty() {
            return Err(HomeError::WritableAlone.into());
        }
        return Ok(None);
    }
    let user = who
        .name
        .clone()
        .unwrap_or_else(|| format!("uid {}", who.uid));
    let home = ProtectHome::prepare(&user, who.home.as_deref(), &options.writable)?;
    eprintln!("{}", home.summary());
    if let Some(note) = home.cwd_note() {
        eprintln!("{note}");
    }
    Ok(Some(home))
}

async fn run_via_daemon(
    mut client: control::Client,
    socket: &std::path::Path,
    who: &Identity,
    command: &[OsString],
    home: Option<ProtectHome>,
) -> Result<i32, RunError> {
    let daemon_err = |message: String| RunError::Daemon {
        socket: socket.display().to_string(),
        message,
    };
    let reply = client
        .call(&Request::Open {
            command: display_args(command),
            uid: who.uid,
            gid: who.gid,
        })
        .await
        .map_err(|e| daemon_err(e.to_string()))?;
    let procs = match (reply.ok, reply.procs) {
        (true, Some(procs)) => procs,
        _ => {
            return Err(daemon_err(
                reply.error.unwrap_or_else(|| "no session".into()),
            ))
        }
    };
    let bundle = reply.bundle.as_deref().map(TrustBundle::existing);
    let netns_path = reply
        .netns
        .ok_or_else(|| daemon_err("no network namespace for the session".into()))?;
    let netns = std::fs::File::open(&netns_path)
        .map_err(|e| daemon_err(format!("{}: {e}", netns_path.display())))?;
    let spawned = spawn_enclosed(
        procs,
        std::os::fd::AsFd::as_fd(&netns),
        who,
        command,
        bundle.as_ref(),
        home,
    );
    let ended = match spawned {
        Ok(running) => running.wait(client.closed()).await,
        Err(e) => Err(e),
    };
    let (exit_code, signal, spawn_error) = match ended {
        Ok(Ended { exit_code, signal }) => (exit_code, signal, None),
        Err(RunError::Daemon { message, .. }) => return Err(daemon_err(message)),
        Err(e) => (None, None, Some(e)),
    };
    let reply = client
        .call(&Request::Close { exit_code, signal })
        .await
        .map_err(|e| daemon_err(e.to_string()))?;
    if let Some(e) = spawn_error {
        return Err(e);
    }
    if !reply.ok {
        return Err(daemon_err(reply.error.unwrap_or_default()));
    }
    Ok(exit_code.unwrap_or_else(|| 128 + signal.unwrap_or(0)))
}

fn display_args(command: &[OsString]) -> Vec<String> {
    command
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

async fn run_in(
    engine: &Engine,
    who: &Identity,
    command: &[OsString],
    home: Option<ProtectHome>,
) -> Result<i32, RunError> {
    let session = engine
        .open_session(SessionSpec {
            command: display_args(command),
            uid: who.uid,
            gid: who.gid,
        })
        .await?;
    let spawned = spawn_enclosed(
        session.cgroup.procs_file(),
        session.netns.fd(),
        who,
        command,
        engine.trust_bundle(),
        home,
    );
    let ended = match spawned {
        // The engine lives in this process: if it dies, so does the liveness pipe.
        Ok(running) => running.wait(std::future::pending()).await,
        Err(e) => Err(e),
    };
    let (exit_code, signal, spawn_error) = match ended {
        Ok(Ended { exit_code, signal }) => (exit_code, signal, None),
        Err(e) => (None, None, Some(e)),
    };
    engine
        .close_session(&session, SessionClose::exited(exit_code, signal))
        .await?;
    if let Some(e) = spawn_error {
        return Err(e);
    }
    Ok(exit_code.unwrap_or_else(|| 128 + signal.unwrap_or(0)))
}

/// An enclosed command that is running: `enclosed-init` (see [`crate::init`]) and the pipes
/// that tie it to this process.
struct Running {
    init: tokio::process::Child,
    /// Where pid 1 reports how the command ended.
    status: std::os::fd::OwnedFd,
    /// Held open for as long as we live: its closing ends the enclosure (see [`crate::init`]).
    _liveness: std::os::fd::OwnedFd,
    shown: String,
}

/// How the enclosed command ended, as `harness run` reports it.
struct Ended {
    exit_code: Option<i32>,
    signal: Option<i32>,
}

impl Running {
    /// Waits for the command (passing signals on), then reads how it ended. If `recorder_gone`
    /// completes first — the daemon recording the session went away — the enclosure is killed:
    /// nothing may run on unrecorded.
    async fn wait(
        mut self,
        recorder_gone: impl std::future::Future<Output = ()>,
    ) -> Result<Ended, RunError> {
        let init_status = tokio::select! {
            status = wait_forwarding_signals(&mut self.init) => status,
            () = recorder_gone => {
                // SIGKILL to enclosed-init: pid 1 follows it (PR_SET_PDEATHSIG), and with pid 1
                // every process of the session.
                let _ = self.init.start_kill();
                let _ = self.init.wait().await;
                return Err(RunError::Daemon {
                    socket: String::new(),
                    message: "the daemon went away: the session was ended".into(),
                });
            }
        };
        let mut bytes = [0u8; 8];
        let n = nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&self.status), &mut bytes)
            .unwrap_or(0);
        match crate::init::Report::decode(&bytes[..n]) {
            Some(crate::init::Report::Ended(raw)) => {
                let status = std::process::ExitStatus::from_raw(raw);
                Ok(Ended {
                    exit_code: status.code(),
                    signal: status.signal(),
                })
            }
            Some(crate::init::Report::ExecFailed(errno)) => Err(RunError::Spawn {
                command: self.shown,
                source: std::io::Error::from_raw_os_error(errno),
            }),
            // Pid 1 died without a word (killed from outside): the command died with it.
            None => Ok(Ended {
                exit_code: None,
                signal: init_status.signal().or(Some(libc::SIGKILL)),
            }),
        }
    }
}

/// Starts the command enclosed. The child joins the session cgroup and network namespace, gets
/// a private mount namespace (with the trust bundle mounted over the system CA files and, with
/// `--protect-home`, the user's home read-only but for its writable directories), new PID
/// and IPC namespaces and a session of its own (no controlling terminal: `TIOCSTI` cannot push
/// input into the operator's shell), loses every inherited descriptor but its standard three,
/// and executes `harness enclosed-init`, which mounts the session's `/proc` as pid 1 and runs
/// the command as `who` with `no_new_privs` and the seccomp filter. Not one instruction of the
/// command runs outside the enclosure or with privileges it could regain.
fn spawn_enclosed(
    procs_file: PathBuf,
    netns: std::os::fd::BorrowedFd<'_>,
    who: &Identity,
    command: &[OsString],
    trust: Option<&TrustBundle>,
    home: Option<ProtectHome>,
) -> Result<Running, RunError> {
    use std::os::fd::AsRawFd as _;
    let shown = command
        .iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let spawn_err = |source| RunError::Spawn {
        command: shown.clone(),
        source,
    };
    let program = command
        .first()
        .ok_or_else(|| spawn_err(std::io::Error::other("no command given")))?;
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(&procs_file)
        .map_err(|e| {
            spawn_err(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", procs_file.display()),
            ))
        })?;
    let (status_r, status_w) = crate::init::pipe().map_err(spawn_err)?;
    let (liveness_r, liveness_w) = crate::init::pipe().map_err(spawn_err)?;
    let procs_fd = procs.as_raw_fd();
    let netns_fd = netns.as_raw_fd();
    let keep = [status_w.as_raw_fd(), liveness_r.as_raw_fd()];
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.arg(crate::init::SUBCOMMAND)
        .arg("--uid")
        .arg(who.uid.to_string())
        .arg("--gid")
        .arg(who.gid.to_string())
        .arg("--status-fd")
        .arg(keep[0].to_string())
        .arg("--liveness-fd")
        .arg(keep[1].to_string())
        .arg("--")
        .args(command);
    if let Some(name) = &who.name {
        cmd.env("USER", name).env("LOGNAME", name);
    }
    if let Some(home) = &who.home {
        cmd.env("HOME", home);
    }
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // system calls (write, setns) on integers captured by copy; `procs` and the namespace fd
    // stay open in the parent until spawn returns, so both fds are valid in the child.
    unsafe {
        cmd.pre_exec(move || {
            let zero = b"0";
            if libc::write(procs_fd, zero.as_ptr().cast(), zero.len()) != zero.len() as isize {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setns(netns_fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    match trust {
        Some(bundle) => {
            // Clients that honour these variables trust the harness CA; the bind mounts catch
            // those that do not.
            cmd.envs(bundle.env());
            // A directory of hashed host certificates would be searched without the harness
            // CA (OpenSSL consults it when SSL_CERT_FILE is unset by a client).
            cmd.env_remove("SSL_CERT_DIR");
            let venvs = crate::tls::trust::namespace::command_venvs(
                Path::new(program),
                std::env::var_os("PATH").as_deref(),
                std::env::var_os("VIRTUAL_ENV").as_deref(),
            );
            bundle.mounts_for(&venvs)?.install(&mut cmd);
        }
        None => crate::tls::trust::namespace::TrustMounts::none().install(&mut cmd),
    }
    // In the mount namespace just entered, still as root: home read-only but for its writable
    // directories, and the working directory entered again through those mounts.
    if let Some(home) = home {
        home.install(&mut cmd);
    }
    let fd_limit = crate::limits::original_fd_limit();
    // SAFETY: runs in the forked child before exec, after the hooks above; only the
    // async-signal-safe system calls unshare, setsid, close_range, fcntl and setrlimit on
    // integers and a struct captured by copy.
    unsafe {
        cmd.pre_exec(move || {
            // The command's own open-file limit, not the one the engine raised for itself.
            if let Some(limit) = fd_limit {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::unshare(libc::CLONE_NEWPID | libc::CLONE_NEWIPC) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // A session of its own: no controlling terminal, so TIOCSTI on an inherited tty
            // fails and the operator's shell never reads what the command types.
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Nothing inherited beyond stdin, stdout and stderr (and the two pipes for
            // enclosed-init): sockets of the caller would lead outside the enclosure. Marked
            // close-on-exec rather than closed, so spawn's own error pipe still works.
            if libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            for fd in keep {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let init = tokio::process::Command::from(cmd)
        .spawn()
        .map_err(spawn_err)?;
    drop(procs);
    drop(status_w);
    drop(liveness_r);
    Ok(Running {
        init,
        status: status_r,
        _liveness: liveness_w,
        shown,
    })
}

/// Waits for the child, passing on the signals a terminal or a supervisor sends.
async fn wait_forwarding_signals(child: &mut tokio::process::Child) -> std::process::ExitStatus {
    use tokio::signal::unix::{signal, SignalKind};
    let pid = child.id().map(|p| nix::unistd::Pid::from_raw(p as i32));
    let mut sigs = [
        (SignalKind::interrupt(), nix::sys::signal::Signal::SIGINT),
        (SignalKind::terminate(), nix::sys::signal::Signal::SIGTERM),
        (SignalKind::hangup(), nix::sys::signal::Signal::SIGHUP),
        (
            SignalKind::window_change(),
            nix::sys::signal::Signal::SIGWINCH,
        ),
    ]
    .map(|(kind, sig)| (signal(kind).ok(), sig));
    loop {
        let [(a, sa), (b, sb), (c, sc), (d, sd)] = &mut sigs;
        let forwarded = tokio::select! {
            status = child.wait() => {
                return status.unwrap_or_else(|_| std::process::ExitStatus::from_raw(1 << 8));
            }
            Some(()) = async { a.as_mut()?.recv().await } => *sa,
            Some(()) = async { b.as_mut()?.recv().await } => *sb,
            Some(()) = async { c.as_mut()?.recv().await } => *sc,
            Some(()) = async { d.as_mut()?.recv().await } => *sd,
        };
        if let Some(pid) = pid {
            let _ = nix::sys::signal::kill(pid, forwarded);
        }
    }
}
