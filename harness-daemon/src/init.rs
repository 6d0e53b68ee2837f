//! The session's init: `harness enclosed-init`, what `harness run` executes inside the
//! enclosure, and the pid 1 it forks into the session's own PID namespace.
//!
//! `harness run` starts this program already inside the session's cgroup, network namespace,
//! mount namespace and a new session (`setsid`), with `CLONE_NEWPID | CLONE_NEWIPC` unshared
//! and every inherited descriptor but the two below closed (see [`crate::run`]). From here:
//!
//! ```text
//! harness run ──(liveness pipe, status pipe)──► enclosed-init [host PID ns; relays signals]
//!                                                 └─ fork ─► init, pid 1 of the session PID ns:
//!                                                            mounts its own /proc, reaps,
//!                                                            relays signals to the command
//!                                                              └─ fork ─► the command, as the
//!                                                                         user, no_new_privs,
//!                                                                         seccomp, exec
//! ```
//!
//! Why a PID namespace: the command can name no process outside it. `ptrace`,
//! `process_vm_writev`, `/proc/PID/mem`, `/proc/PID/environ`, `pidfd_open`/`pidfd_getfd` and
//! `kill` all take a PID, and no PID of the operator's shell, of a daemon of the same user, or
//! of another session exists in it; its `/proc` shows only the session.
//!
//! Why the pipes: pid 1 writes the command's wait status on the *status* pipe, so `harness run`
//! learns exactly how it ended (pid 1 itself cannot die of the command's signal). It holds the
//! read end of the *liveness* pipe, whose write end only `harness run` has: if `harness run`
//! (and the engine it embeds) dies, the pipe reads end-of-file, pid 1 exits, and the kernel
//! kills every process of the PID namespace — nothing enclosed outlives its recorder. If
//! `enclosed-init` itself dies, pid 1 follows it (`PR_SET_PDEATHSIG`).
//!
//! This program is single-threaded (no runtime is started for it), so forking here is safe.
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt as _;

/// The hidden subcommand `harness run` executes.
pub const SUBCOMMAND: &str = "enclosed-init";

/// Signals passed on to the command (to its process group, as a terminal would).
pub const RELAYED: [libc::c_int; 7] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGWINCH,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// What pid 1 reports on the status pipe: 8 bytes, a tag and a value (little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// The command ended; its raw wait status (`WIFEXITED`/`WIFSIGNALED` apply).
    Ended(i32),
    /// The command could not be executed; the errno of `execve`.
    ExecFailed(i32),
}

impl Report {
    const ENDED: u32 = 1;
    const EXEC_FAILED: u32 = 2;

    /// The 8 bytes written on the pipe.
    pub fn encode(self) -> [u8; 8] {
        let (tag, value) = match self {
            Report::Ended(status) => (Self::ENDED, status),
            Report::ExecFailed(errno) => (Self::EXEC_FAILED, errno),
        };
        let mut out = [0u8; 8];
        out[..4].copy_from_slice(&tag.to_le_bytes());
        out[4..].copy_from_slice(&value.to_le_bytes());
        out
    }

    /// Reads a report back; `None` for anything else (pid 1 died before reporting).
    pub fn decode(bytes: &[u8]) -> Option<Report> {
        let tag = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?);
        let value = i32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
        match tag {
            Self::ENDED => Some(Report::Ended(value)),
            Self::EXEC_FAILED => Some(Report::ExecFailed(value)),
            _ => None,
        }
    }
}

/// Arguments of `harness enclosed-init`.
#[derive(Debug, Clone, clap::Args)]
pub struct InitArgs {
    /// User id to run the command as.
    #[arg(long)]
    pub uid: u32,
    /// Group id to run the command as.
    #[arg(long)]
    pub gid: u32,
    /// Write end of the status pipe.
    #[arg(long)]
    pub status_fd: RawFd,
    /// Read end of the liveness pipe.
    #[arg(long)]
    pub liveness_fd: RawFd,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<OsString>,
}

/// Runs `enclosed-init`; returns only with a status to exit with when setting up failed.
pub fn run(args: InitArgs) -> i32 {
    match init(args) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("harness enclosed-init: {e}");
            125
        }
    }
}

enum Never {}

fn init(args: InitArgs) -> io::Result<Never> {
    // SAFETY: the fds were handed to us by `harness run` for exactly this use; we own them.
    let status = unsafe { OwnedFd::from_raw_fd(args.status_fd) };
    // SAFETY: as above.
    let liveness = unsafe { OwnedFd::from_raw_fd(args.liveness_fd) };
    for fd in [&status, &liveness] {
        set_cloexec(fd.as_raw_fd())?;
    }
    let program = c_string(&args.command[0])?;
    let argv = args
        .command
        .iter()
        .map(c_string)
        .collect::<io::Result<Vec<_>>>()?;
    let relayed = block_relayed_signals()?;

    // SAFETY: this process is single-threaded: fork has no lock or allocator state to corrupt.
    let pid1 = unsafe { libc::fork() };
    if pid1 < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid1 == 0 {
        let code = match pid_one(&args, &program, &argv, &status, &liveness, &relayed) {
            Ok(never) => match never {},
            Err(e) => {
                eprintln!("harness enclosed-init (pid 1): {e}");
                125
            }
        };
        // SAFETY: _exit ends the process without running anything else.
        unsafe { libc::_exit(code) };
    }
    drop(status);
    drop(liveness);
    // Relay signals to pid 1 until it ends; then end the same way (its status says little:
    // harness run reads the command's from the status pipe).
    loop {
        let signal = wait_signal(&relayed)?;
        if signal == libc::SIGCHLD {
            let mut raw = 0;
            // SAFETY: waitpid writes the status into our local.
            let got = unsafe { libc::waitpid(pid1, &mut raw, libc::WNOHANG) };
            if got == pid1 {
                // SAFETY: _exit ends the process.
                unsafe { libc::_exit(0) };
            }
        } else {
            // SAFETY: kill takes plain integers.
            unsafe { libc::kill(pid1, signal) };
        }
    }
}

/// Pid 1 of the session's PID namespace.
fn pid_one(
    args: &InitArgs,
    program: &CString,
    argv: &[CString],
    status: &OwnedFd,
    liveness: &OwnedFd,
    relayed: &SignalSet,
) -> io::Result<Never> {
    // SAFETY: prctl with plain integers: die with our parent, enclosed-init.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    nix::mount::mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| io::Error::other(format!("mounting the session's /proc: {e}")))?;
    let filter = crate::seccomp::EnclosureFilter::new()
        .map_err(|e| io::Error::other(format!("preparing the seccomp filter: {e}")))?;
    // An exec failure comes back on this pipe (closed by a successful exec).
    let (exec_r, exec_w) = pipe()?;
    // SAFETY: single-threaded process (see init).
    let command = unsafe { libc::fork() };
    if command < 0 {
        return Err(io::Error::last_os_error());
    }
    if command == 0 {
        drop(exec_r);
        let errno = exec_command(args, program, argv, relayed, &filter);
        let bytes = errno.to_le_bytes();
        // SAFETY: write from a local buffer, then _exit.
        unsafe {
            libc::write(exec_w.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
            libc::_exit(127);
        }
    }
    drop(exec_w);
    let mut errno = [0u8; 4];
    if read_full(exec_r.as_fd(), &mut errno)? == 4 {
        report(status, Report::ExecFailed(i32::from_le_bytes(errno)));
        reap_then_exit(command);
    }
    drop(exec_r);

    let signals = relayed.signalfd()?;
    loop {
        let mut fds = [
            libc::pollfd {
                fd: signals.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: liveness.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll reads and writes the two pollfds we own.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if fds[1].revents != 0 {
            // harness run is gone (or wrote, which it never does): nothing records any more.
            // Exiting pid 1 makes the kernel kill every process of the namespace.
            // SAFETY: _exit ends the process.
            unsafe { libc::_exit(0) };
        }
        if fds[0].revents == 0 {
            continue;
        }
        let signal = read_signal(&signals)?;
        if signal == libc::SIGCHLD {
            loop {
                let mut raw = 0;
                // SAFETY: waitpid writes the status into our local.
                let pid = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG) };
                if pid <= 0 {
                    break;
                }
                if pid == command {
                    report(status, Report::Ended(raw));
                    // The command is done: its leftovers die with this namespace.
                    // SAFETY: _exit ends the process.
                    unsafe { libc::_exit(0) };
                }
            }
        } else {
            // To the command's process group, as a terminal would; to the command alone if
            // it left the group.
            // SAFETY: kill takes plain integers.
            unsafe {
                if libc::kill(-command, signal) != 0 {
                    libc::kill(command, signal);
                }
            }
        }
    }
}

/// In the command's process: drop to the user, lock privileges, filter system calls, exec.
/// Returns the errno when something failed.
fn exec_command(
    args: &InitArgs,
    program: &CString,
    argv: &[CString],
    relayed: &SignalSet,
    filter: &crate::seccomp::EnclosureFilter,
) -> i32 {
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let groups = [args.gid];
    // SAFETY: plain system calls on values we own; execvp gets NUL-terminated strings and a
    // NULL-terminated pointer array that outlive the call.
    unsafe {
        let fail = || {
            io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINVAL)
        };
        // Its own process group, so relayed signals reach it and its children together.
        libc::setpgid(0, 0);
        if libc::setgroups(1, groups.as_ptr()) != 0
            || libc::setgid(args.gid) != 0
            || libc::setuid(args.uid) != 0
            || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
        {
            return fail();
        }
        if filter.install().is_err() {
            return fail();
        }
        relayed.unblock();
        libc::execvp(program.as_ptr(), ptrs.as_ptr());
        fail()
    }
}

fn reap_then_exit(pid: libc::pid_t) -> ! {
    let mut raw = 0;
    // SAFETY: waitpid into a local, then _exit.
    unsafe {
        libc::waitpid(pid, &mut raw, 0);
        libc::_exit(0)
    }
}

fn report(status: &OwnedFd, report: Report) {
    let bytes = report.encode();
    // SAFETY: write from a local buffer to a pipe we own. Eight bytes are below PIPE_BUF, so
    // the write is atomic.
    unsafe {
        libc::write(status.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
    }
}

/// The relayed signals plus SIGCHLD, blocked (to be read from a signalfd) and given a handler:
/// an init process receives only signals it has a handler for, even from outside its
/// namespace, and a blocked signal with a handler stays pending for the signalfd.
struct SignalSet {
    set: libc::sigset_t,
}

impl SignalSet {
    fn signalfd(&self) -> io::Result<OwnedFd> {
        // SAFETY: signalfd reads the set we own; the fd returned is checked and owned.
        let fd = unsafe { libc::signalfd(-1, &self.set, libc::SFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd from signalfd.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn unblock(&self) {
        // SAFETY: sigprocmask reads the set we own; handlers are reset to default by exec.
        unsafe {
            libc::sigprocmask(libc::SIG_UNBLOCK, &self.set, std::ptr::null_mut());
        }
    }
}

extern "C" fn ignore_signal(_: libc::c_int) {}

fn block_relayed_signals() -> io::Result<SignalSet> {
    // SAFETY: sigemptyset/sigaddset/sigaction/sigprocmask on structures we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in RELAYED.iter().copied().chain([libc::SIGCHLD]) {
            libc::sigaddset(&mut set, signal);
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = ignore_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(SignalSet { set })
    }
}

/// Waits for one of the blocked signals.
fn wait_signal(set: &SignalSet) -> io::Result<libc::c_int> {
    loop {
        let mut signal = 0;
        // SAFETY: sigwait reads the set and writes the signal number into our local.
        let rc = unsafe { libc::sigwait(&set.set, &mut signal) };
        if rc == 0 {
            return Ok(signal);
        }
        if rc != libc::EINTR {
            return Err(io::Error::from_raw_os_error(rc));
        }
    }
}

fn read_signal(signals: &OwnedFd) -> io::Result<libc::c_int> {
    // SAFETY: signalfd_siginfo is plain old data.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: read into the struct we own, at most its size.
    let n = unsafe {
        libc::read(
            signals.as_raw_fd(),
            (&mut info as *mut libc::signalfd_siginfo).cast(),
            size,
        )
    };
    if n != size as isize {
        return Err(io::Error::last_os_error());
    }
    Ok(info.ssi_signo as libc::c_int)
}

fn read_full(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: read into the unread tail of a buffer we own.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                buf[got..].as_mut_ptr().cast(),
                buf.len() - got,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        got += n as usize;
    }
    Ok(got)
}

/// A pipe, both ends close-on-exec.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array we own; both are owned right below.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fds from pipe2, owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd we own, with plain integers.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn c_string(arg: &OsString) -> io::Result<CString> {
    CString::new(arg.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "argument contains a NUL byte"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        for r in [
            Report::Ended(0),
            Report::Ended(9),
            Report::ExecFailed(libc::ENOENT),
        ] {
            assert_eq!(Report::decode(&r.encode()), Some(r));
        }
        assert_eq!(Report::decode(&[]), None);
        assert_eq!(Report::decode(&[9, 0, 0, 0, 0, 0, 0, 0]), None);
    }
}
