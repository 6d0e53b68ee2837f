//! A seccomp filter for enclosed processes: it closes the ways out of the enclosure that the
//! cgroup eBPF hooks cannot see (socket families other than IP, io_uring, 32-bit system call
//! tables) and refuses pushing input into the operator's terminal.
//!
//! The program is built in the parent by [`EnclosureFilter::new`] (it allocates, and probes the
//! kernel); [`EnclosureFilter::install`] only passes the prepared program to `seccomp(2)`, so it
//! is async-signal-safe and meant for a `Command::pre_exec` hook of a multi-threaded parent,
//! **after** privileges are dropped and `PR_SET_NO_NEW_PRIVS` is set (without
//! `CAP_SYS_ADMIN`, the kernel accepts a filter only from a no-new-privs task). The filter is
//! inherited across `execve`, `fork` and `clone` and cannot be removed; no
//! `SECCOMP_FILTER_FLAG_TSYNC` is used, because the child between fork and exec has one thread.
//!
//! # What the filter does, in order
//!
//! 1. **Architecture.** `seccomp_data.arch` must be the native one (`AUDIT_ARCH_X86_64`, or
//!    `AUDIT_ARCH_AARCH64`); anything else is `SECCOMP_RET_KILL_PROCESS`. A 64-bit x86 process
//!    can still enter the i386 system call table with `int 0x80`, where the numbers differ
//!    (`socket` is 359, `socketcall` 102): a filter matching x86_64 numbers would let those
//!    through. No native program does this, so the process is killed (32-bit binaries do not
//!    run in the enclosure). On aarch64 the same holds for AArch32 compat tasks.
//! 2. **x32** (x86_64 only). x32 system calls arrive with the native arch and
//!    `nr | 0x40000000` (`__X32_SYSCALL_BIT`), so they would miss every number below:
//!    they fail with `ENOSYS`, which is what a kernel built without x32 answers.
//! 3. **`socket(domain, …)`**: `AF_UNIX`, `AF_INET`, `AF_INET6` and `AF_NETLINK` are allowed;
//!    every other family (`AF_VSOCK`, `AF_PACKET`, `AF_ALG`, `AF_TIPC`, `AF_BLUETOOTH`,
//!    `AF_XDP`, `AF_RDS`, `AF_CAN`, …) fails with `EAFNOSUPPORT`, as if the family were not
//!    built in. IP is what the cgroup hooks govern; `AF_UNIX` is local IPC every runtime needs;
//!    `AF_NETLINK` (`NETLINK_ROUTE`) is how libc and runtimes list interfaces and addresses. The
//!    others reach the hypervisor (vsock), raw links (packet, XDP, CAN, Bluetooth), other hosts
//!    without IP (TIPC, RDS), or kernel attack surface (ALG).
//! 4. **`socketpair(domain, …)`**: only `AF_UNIX`, what programs use it for (the IP families do
//!    not implement it and answer `EOPNOTSUPP`); anything else fails with `EAFNOSUPPORT`.
//! 5. **`io_uring_setup`, `io_uring_enter`, `io_uring_register`** fail with `ENOSYS`:
//!    `IORING_OP_SOCKET`, `IORING_OP_CONNECT`, … make sockets and connections that seccomp never
//!    sees (they are not system calls). `ENOSYS` is what a kernel without io_uring answers, and
//!    liburing users, libuv and tokio-uring fall back on it. **`request_key`, `add_key`,
//!    `keyctl`** fail with `ENOSYS` too: a key request can make the kernel start a root helper
//!    outside the enclosure (`/sbin/request-key`; keyutils' `dns_resolver` looks up a name the
//!    caller chose), and nothing an agent needs lives in the kernel keyring.
//! 6. **`ioctl(fd, TIOCSTI | TIOCLINUX, …)`** fails with `EPERM`, whatever `fd` is: `TIOCSTI`
//!    pushes bytes into a terminal's input queue (typed into the operator's shell once the agent
//!    exits), `TIOCLINUX` pastes the console selection in the same way.
//! 7. Everything else is allowed (`SECCOMP_RET_ALLOW`): this is a deny-list of escape hatches,
//!    not a sandbox of its own.
//!
//! # 64-bit arguments
//!
//! seccomp sees each argument as the 64-bit register value, while the kernel declares
//! `socket(int family, …)`, `socketpair(int family, …)` and `ioctl(unsigned int fd,
//! unsigned int cmd, …)`: its `SYSCALL_DEFINEx` wrappers cast the `long` register to the
//! declared type, so **only the low 32 bits count** and the high half is ignored
//! (`socket(0x1_0000_0002, …)` makes an `AF_INET` socket; the tests check this). The filter
//! does the same: it loads and compares only the low 32-bit word of the domain and of the ioctl
//! request, and ignores the high word. It therefore decides on exactly the value the kernel will
//! act on: a refused family cannot be smuggled in with high bits set (`0x1_0000_0028` is
//! `AF_VSOCK` to the kernel and to the filter alike), and callers whose upper register half is
//! not zero (the x86-64 ABI leaves it unspecified for 32-bit arguments) are not broken.
//!
//! Outside this filter's reach: what an `AF_UNIX` socket connects to (a host daemon's socket in
//! the file system), raw IP sockets (`SOCK_RAW`, which need `CAP_NET_RAW`, dropped before the
//! filter is installed), and system calls it allows.
use std::io;
use std::mem::offset_of;

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!(
    "harness's seccomp filter knows the system call numbers and audit arch of x86_64 and \
     aarch64 only; add this architecture's constants to harness-daemon/src/seccomp.rs"
);

#[cfg(all(target_arch = "x86_64", target_pointer_width = "32"))]
compile_error!(
    "harness's seccomp filter refuses x32 system calls; it cannot be built for an x32 target"
);

/// What the filter refuses, one line per rule, for the README's threat model and for
/// `harness run`'s debug log.
pub fn describe() -> &'static str {
    DESCRIPTION
}

const DESCRIPTION: &str = "\
seccomp filter of enclosed processes (anything not listed is allowed):
- a system call of another architecture (i386 int 0x80 on x86_64, AArch32 on aarch64): process killed (SIGSYS)
- an x32 system call (x86_64): ENOSYS
- socket() of any family but AF_UNIX, AF_INET, AF_INET6, AF_NETLINK (AF_VSOCK, AF_PACKET, AF_ALG, AF_TIPC, AF_BLUETOOTH, AF_XDP, AF_RDS, AF_CAN, ...): EAFNOSUPPORT
- socketpair() of any family but AF_UNIX: EAFNOSUPPORT
- io_uring_setup(), io_uring_enter(), io_uring_register(): ENOSYS
- request_key(), add_key(), keyctl(): ENOSYS
- ioctl() TIOCSTI and TIOCLINUX (pushing input into a terminal): EPERM
(families and ioctl requests are compared on their low 32 bits, as the kernel reads them)";

/// Errors preparing the filter, each saying what the kernel or the program lacked.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The kernel cannot carry out one of the filter's actions (too old, built without
    /// `CONFIG_SECCOMP_FILTER`, or the harness itself runs under a filter refusing `seccomp(2)`).
    #[error(
        "the kernel cannot enforce the enclosure's seccomp filter: action {action} is not \
         available (seccomp SECCOMP_GET_ACTION_AVAIL: {source}); Linux 4.14 or later with \
         CONFIG_SECCOMP_FILTER is needed"
    )]
    ActionUnavailable {
        /// The `SECCOMP_RET_*` action probed.
        action: &'static str,
        /// What `seccomp(2)` answered.
        #[source]
        source: io::Error,
    },
    /// A jump in the program cannot be encoded (a bug in this module's program).
    #[error("seccomp program: the jump at instruction {at} to label {label} {reason}")]
    BadJump {
        /// Index of the jump instruction.
        at: usize,
        /// The label jumped to.
        label: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The program is longer than the kernel accepts (a bug in this module's program).
    #[error("seccomp program: {len} instructions, more than the kernel's limit of {max}")]
    TooLong {
        /// Instructions in the program.
        len: usize,
        /// `BPF_MAXINSNS`.
        max: usize,
    },
}

// === the native architecture ===

/// `__AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE` (the latter only on little-endian targets).
const AUDIT_ARCH_FLAGS: u32 = 0x8000_0000
    | if cfg!(target_endian = "little") {
        0x4000_0000
    } else {
        0
    };

/// `AUDIT_ARCH_X86_64`: `EM_X86_64` (62) with the flags above.
#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: u32 = 62 | AUDIT_ARCH_FLAGS;
/// `AUDIT_ARCH_AARCH64` (or `AUDIT_ARCH_AARCH64BE`): `EM_AARCH64` (183) with the flags above.
#[cfg(target_arch = "aarch64")]
const NATIVE_ARCH: u32 = 183 | AUDIT_ARCH_FLAGS;

/// `__X32_SYSCALL_BIT`: set in the number of every x32 system call.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// System call numbers of the native table (`libc` has them per architecture).
mod nr {
    pub const SOCKET: u32 = libc::SYS_socket as u32;
    pub const SOCKETPAIR: u32 = libc::SYS_socketpair as u32;
    pub const IOCTL: u32 = libc::SYS_ioctl as u32;
    pub const IO_URING_SETUP: u32 = libc::SYS_io_uring_setup as u32;
    pub const IO_URING_ENTER: u32 = libc::SYS_io_uring_enter as u32;
    pub const IO_URING_REGISTER: u32 = libc::SYS_io_uring_register as u32;
    pub const REQUEST_KEY: u32 = libc::SYS_request_key as u32;
    pub const ADD_KEY: u32 = libc::SYS_add_key as u32;
    pub const KEYCTL: u32 = libc::SYS_keyctl as u32;
}

// === seccomp_data offsets and classic BPF encoding ===

/// Offset of `seccomp_data.nr` (an `int`).
const OFF_NR: u32 = offset_of!(libc::seccomp_data, nr) as u32;
/// Offset of `seccomp_data.arch` (a `__u32`).
const OFF_ARCH: u32 = offset_of!(libc::seccomp_data, arch) as u32;

/// Offset of the low 32-bit word of `seccomp_data.args[i]`: seccomp's BPF loads 32-bit words
/// only, and the low word of a native-endian `__u64` is the first on little-endian targets.
const fn off_arg_low(i: usize) -> u32 {
    let low = if cfg!(target_endian = "little") { 0 } else { 4 };
    (offset_of!(libc::seccomp_data, args) + 8 * i + low) as u32
}

/// `BPF_LD | BPF_W | BPF_ABS` (0x00 | 0x00 | 0x20): `A = seccomp_data[k]`, a 32-bit word.
const LD_W_ABS: u16 = 0x20;
/// `BPF_JMP | BPF_JEQ | BPF_K`: `pc += (A == k) ? jt : jf`.
const JEQ_K: u16 = 0x05 | 0x10;
/// `BPF_JMP | BPF_JSET | BPF_K`: `pc += (A & k) != 0 ? jt : jf`.
const JSET_K: u16 = 0x05 | 0x40;
/// `BPF_RET | BPF_K`: return `k`.
const RET_K: u16 = 0x06;
/// `BPF_MAXINSNS`: the longest program the kernel accepts.
const BPF_MAXINSNS: usize = 4096;

const fn errno(e: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (e as u32 & libc::SECCOMP_RET_DATA)
}

// === the program, with labels ===

/// A place in the program a jump can name; a label occupies no instruction.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Label {
    Allow,
    Kill,
    Enosys,
    Eafnosupport,
    Eperm,
    Socket,
    Socketpair,
    Ioctl,
}

impl Label {
    fn name(self) -> &'static str {
        match self {
            Label::Allow => "allow",
            Label::Kill => "kill",
            Label::Enosys => "enosys",
            Label::Eafnosupport => "eafnosupport",
            Label::Eperm => "eperm",
            Label::Socket => "socket",
            Label::Socketpair => "socketpair",
            Label::Ioctl => "ioctl",
        }
    }
}

/// Where a conditional jump goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum To {
    /// The next instruction.
    Next,
    /// A label further on (classic BPF jumps only forwards).
    L(Label),
}

/// One step of the program before assembly.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// `A = seccomp_data[offset]` (32 bits).
    Load(u32),
    /// `if A == k { then } else { otherwise }`.
    IfEq(u32, To, To),
    /// `if A & k != 0 { then } else { otherwise }`.
    IfSet(u32, To, To),
    /// Return an action.
    Ret(u32),
    /// The label of the next instruction.
    Here(Label),
}

use Label::*;
use Step::*;
use To::{Next, L};

/// The filter, step by step; each line's reason is in the module doc.
fn program() -> Vec<Step> {
    let mut p = vec![
        // 1. Another architecture's table (i386 `int 0x80`, AArch32): kill the process.
        Load(OFF_ARCH),
        IfEq(NATIVE_ARCH, Next, L(Kill)),
        Load(OFF_NR),
    ];
    // 2. x32 numbers would miss every comparison below: ENOSYS, as without x32 support.
    #[cfg(target_arch = "x86_64")]
    p.push(IfSet(X32_SYSCALL_BIT, L(Enosys), Next));
    p.extend([
        IfEq(nr::SOCKET, L(Socket), Next),
        IfEq(nr::SOCKETPAIR, L(Socketpair), Next),
        IfEq(nr::IOCTL, L(Ioctl), Next),
        // 5. io_uring makes sockets and connections seccomp never sees.
        IfEq(nr::IO_URING_SETUP, L(Enosys), Next),
        IfEq(nr::IO_URING_ENTER, L(Enosys), Next),
        IfEq(nr::IO_URING_REGISTER, L(Enosys), Next),
        // 5b. The kernel keyring: request_key() can make the kernel run a root helper outside
        // the enclosure (`/sbin/request-key`, e.g. a DNS lookup of a name the agent chose for
        // keyutils' dns_resolver), unrecorded. Docker's default profile refuses these too.
        IfEq(nr::REQUEST_KEY, L(Enosys), Next),
        IfEq(nr::ADD_KEY, L(Enosys), Next),
        IfEq(nr::KEYCTL, L(Enosys), Next),
        // 7. Everything else.
        Ret(libc::SECCOMP_RET_ALLOW),
        // 3. socket(domain, …): the low 32 bits of the domain, which is all the kernel reads.
        Here(Socket),
        Load(off_arg_low(0)),
        IfEq(libc::AF_UNIX as u32, L(Allow), Next),
        IfEq(libc::AF_INET as u32, L(Allow), Next),
        IfEq(libc::AF_INET6 as u32, L(Allow), Next),
        IfEq(libc::AF_NETLINK as u32, L(Allow), L(Eafnosupport)),
        // 4. socketpair(domain, …): AF_UNIX only, same 32-bit reading.
        Here(Socketpair),
        Load(off_arg_low(0)),
        IfEq(libc::AF_UNIX as u32, L(Allow), L(Eafnosupport)),
        // 6. ioctl(fd, cmd, …): `unsigned int cmd`, so its low 32 bits.
        Here(Ioctl),
        Load(off_arg_low(1)),
        IfEq(libc::TIOCSTI as u32, L(Eperm), Next),
        IfEq(libc::TIOCLINUX as u32, L(Eperm), L(Allow)),
        // The verdicts.
        Here(Allow),
        Ret(libc::SECCOMP_RET_ALLOW),
        Here(Kill),
        Ret(libc::SECCOMP_RET_KILL_PROCESS),
        Here(Enosys),
        Ret(errno(libc::ENOSYS)),
        Here(Eafnosupport),
        Ret(errno(libc::EAFNOSUPPORT)),
        Here(Eperm),
        Ret(errno(libc::EPERM)),
    ]);
    p
}

/// Resolves labels into classic BPF instructions.
fn assemble(steps: &[Step]) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let mut labels: Vec<(Label, usize)> = Vec::new();
    let mut len = 0;
    for step in steps {
        match step {
            Here(label) => labels.push((*label, len)),
            _ => len += 1,
        }
    }
    if len > BPF_MAXINSNS {
        return Err(SeccompError::TooLong {
            len,
            max: BPF_MAXINSNS,
        });
    }
    let mut out = Vec::with_capacity(len);
    for step in steps {
        let at = out.len();
        let offset = |to: To| -> Result<u8, SeccompError> {
            let L(label) = to else { return Ok(0) };
            let bad = |reason| SeccompError::BadJump {
                at,
                label: label.name(),
                reason,
            };
            let mut places = labels.iter().filter(|(l, _)| *l == label).map(|(_, i)| *i);
            let target = places.next().ok_or_else(|| bad("is not defined"))?;
            if places.next().is_some() {
                return Err(bad("is defined twice"));
            }
            let skip = target
                .checked_sub(at + 1)
                .ok_or_else(|| bad("goes backwards"))?;
            u8::try_from(skip).map_err(|_| bad("is more than 255 instructions ahead"))
        };
        let insn = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
        out.push(match *step {
            Load(off) => insn(LD_W_ABS, 0, 0, off),
            IfEq(k, then, otherwise) => insn(JEQ_K, offset(then)?, offset(otherwise)?, k),
            IfSet(k, then, otherwise) => insn(JSET_K, offset(then)?, offset(otherwise)?, k),
            Ret(k) => insn(RET_K, 0, 0, k),
            Here(_) => continue,
        });
    }
    Ok(out)
}

// === impl EnclosureFilter ===

/// The enclosure's seccomp program, compiled in the parent and installed in the child.
pub struct EnclosureFilter {
    program: Box<[libc::sock_filter]>,
}

impl std::fmt::Debug for EnclosureFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnclosureFilter")
            .field("instructions", &self.program.len())
            .finish()
    }
}

impl EnclosureFilter {
    /// Compiles the filter described in the [module doc](self) and checks that the running
    /// kernel can carry out each of its actions, so that a missing feature fails here, in the
    /// parent, with a clear error rather than as a failed spawn.
    pub fn new() -> Result<EnclosureFilter, SeccompError> {
        for (action, value) in [
            ("SECCOMP_RET_KILL_PROCESS", libc::SECCOMP_RET_KILL_PROCESS),
            ("SECCOMP_RET_ERRNO", libc::SECCOMP_RET_ERRNO),
            ("SECCOMP_RET_ALLOW", libc::SECCOMP_RET_ALLOW),
        ] {
            // SAFETY: SECCOMP_GET_ACTION_AVAIL reads one u32 through the pointer, which points at
            // a live local for the whole call; flags must be 0.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_GET_ACTION_AVAIL as libc::c_ulong,
                    0 as libc::c_ulong,
                    &value as *const u32,
                )
            };
            if rc != 0 {
                return Err(SeccompError::ActionUnavailable {
                    action,
                    source: io::Error::last_os_error(),
                });
            }
        }
        Ok(EnclosureFilter {
            program: assemble(&program())?.into_boxed_slice(),
        })
    }

    /// Installs the filter on the calling thread (and so on everything it later forks or
    /// execs). The caller must have set `PR_SET_NO_NEW_PRIVS` or hold `CAP_SYS_ADMIN`, or the
    /// kernel refuses with `EACCES`.
    ///
    /// Async-signal-safe: no allocation, no locks, one `seccomp(SECCOMP_SET_MODE_FILTER)` system
    /// call on the program prepared by [`new`](Self::new); an error is the bare errno. Meant for
    /// `Command::pre_exec`, where a failure fails the spawn (fail closed).
    pub fn install(&self) -> io::Result<()> {
        let prog = libc::sock_fprog {
            // `new` keeps the program within BPF_MAXINSNS (4096), which fits a u16.
            len: self.program.len() as libc::c_ushort,
            filter: self.program.as_ptr().cast_mut(),
        };
        // SAFETY: `prog` points at `self.program`, which outlives the call; the kernel only reads
        // (copies) the instructions. Flags 0: no TSYNC, the caller is a single-threaded child.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
                0 as libc::c_ulong,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Unit tests run the program in a small classic-BPF interpreter over made-up
    //! `seccomp_data`; the kernel tests install it for real in a child: the test binary itself,
    //! spawned with `pre_exec` hooks as `harness run` would (no-new-privs, then
    //! [`EnclosureFilter::install`]) and told by an environment variable which checks to run,
    //! plus one child made with a bare `fork` to show `install` needs nothing but the call.
    //! None needs root.
    use super::*;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::{Command, Output};

    // Not in libc for every target (musl lacks some).
    const AF_VSOCK: i32 = 40;
    const AF_XDP: i32 = 44;

    // === the program, interpreted ===

    struct Data {
        nr: i32,
        arch: u32,
        args: [u64; 6],
    }

    fn word(d: &Data, off: u32) -> u32 {
        let off = off as usize;
        let args = offset_of!(libc::seccomp_data, args);
        if off == offset_of!(libc::seccomp_data, nr) {
            d.nr as u32
        } else if off == offset_of!(libc::seccomp_data, arch) {
            d.arch
        } else if off >= args && off < args + 48 {
            let arg = d.args[(off - args) / 8];
            let low_first = cfg!(target_endian = "little");
            if (off - args).is_multiple_of(8) == low_first {
                arg as u32
            } else {
                (arg >> 32) as u32
            }
        } else {
            panic!("load from unexpected offset {off}")
        }
    }

    /// Runs a classic BPF program the way the kernel's seccomp does, for the codes we emit.
    fn run(prog: &[libc::sock_filter], d: &Data) -> u32 {
        let (mut pc, mut a) = (0usize, 0u32);
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                LD_W_ABS => a = word(d, i.k),
                JEQ_K => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                JSET_K => pc += usize::from(if a & i.k != 0 { i.jt } else { i.jf }),
                RET_K => return i.k,
                code => panic!("unexpected code {code:#x}"),
            }
        }
    }

    fn verdict(arch: u32, nr: i64, args: [u64; 6]) -> u32 {
        let prog = assemble(&program()).expect("the program assembles");
        run(
            &prog,
            &Data {
                nr: nr as i32,
                arch,
                args,
            },
        )
    }

    fn native(nr: i64, a0: u64, a1: u64) -> u32 {
        verdict(NATIVE_ARCH, nr, [a0, a1, 0, 0, 0, 0])
    }

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

    #[test]
    fn program_verdicts() {
        // 1. Other architectures: i386 (AUDIT_ARCH_I386), ARM, the other 64-bit one.
        for arch in [0x4000_0003, 0x4000_0028, 0xC000_00B7, 0xC000_003E] {
            if arch != NATIVE_ARCH {
                assert_eq!(
                    verdict(arch, libc::SYS_read, [0; 6]),
                    libc::SECCOMP_RET_KILL_PROCESS,
                    "arch {arch:#x}"
                );
            }
        }
        // 2. x32.
        #[cfg(target_arch = "x86_64")]
        for n in [libc::SYS_socket, libc::SYS_read, 0] {
            assert_eq!(native(n | 0x4000_0000, 40, 0), errno(libc::ENOSYS));
        }
        // 3. socket.
        for family in [
            libc::AF_UNIX,
            libc::AF_INET,
            libc::AF_INET6,
            libc::AF_NETLINK,
        ] {
            assert_eq!(native(libc::SYS_socket, family as u64, 0), ALLOW);
        }
        for family in [
            AF_VSOCK,
            libc::AF_TIPC,
            libc::AF_PACKET,
            libc::AF_ALG,
            libc::AF_BLUETOOTH,
            AF_XDP,
            libc::AF_RDS,
            libc::AF_CAN,
            0,
            -1,
            46,
            255,
        ] {
            assert_eq!(
                native(libc::SYS_socket, family as u32 as u64, 0),
                errno(libc::EAFNOSUPPORT),
                "family {family}"
            );
        }
        // Only the low word counts, as for the kernel.
        assert_eq!(native(libc::SYS_socket, 0x1_0000_0002, 0), ALLOW);
        assert_eq!(native(libc::SYS_socket, 0x28_0000_0001, 0), ALLOW);
        for domain in [
            0x1_0000_0028,
            0xFFFF_FFFF_0000_0028,
            u64::MAX,
            0x2_0000_0000,
        ] {
            assert_eq!(
                native(libc::SYS_socket, domain, 0),
                errno(libc::EAFNOSUPPORT),
                "domain {domain:#x}"
            );
        }
        // 4. socketpair.
        assert_eq!(native(libc::SYS_socketpair, 1, 0), ALLOW);
        assert_eq!(native(libc::SYS_socketpair, 0x5_0000_0001, 0), ALLOW);
        for domain in [2, 10, 16, 40, 0x1_0000_0002] {
            assert_eq!(
                native(libc::SYS_socketpair, domain, 0),
                errno(libc::EAFNOSUPPORT),
                "domain {domain:#x}"
            );
        }
        // 5. io_uring.
        for n in [
            libc::SYS_io_uring_setup,
            libc::SYS_io_uring_enter,
            libc::SYS_io_uring_register,
        ] {
            assert_eq!(native(n, 0, 0), errno(libc::ENOSYS));
        }
        // 5b. keyrings.
        for n in [libc::SYS_request_key, libc::SYS_add_key, libc::SYS_keyctl] {
            assert_eq!(native(n, 0, 0), errno(libc::ENOSYS), "nr {n}");
        }
        // 6. ioctl: the request's low 32 bits, any fd.
        let (sti, linux) = (req(libc::TIOCSTI), req(libc::TIOCLINUX));
        for cmd in [sti, linux, sti | 1 << 32, linux | 0xFFFF_FFFF << 32] {
            assert_eq!(
                native(libc::SYS_ioctl, 0, cmd),
                errno(libc::EPERM),
                "{cmd:#x}"
            );
            assert_eq!(
                native(libc::SYS_ioctl, 7, cmd),
                errno(libc::EPERM),
                "{cmd:#x}"
            );
        }
        assert_eq!(native(libc::SYS_ioctl, 0, req(libc::TIOCGWINSZ)), ALLOW);
        assert_eq!(native(libc::SYS_ioctl, sti, 0), ALLOW, "fd, not request");
        // 7. The rest, including numbers no table has (the kernel answers ENOSYS itself).
        for n in [
            libc::SYS_read,
            libc::SYS_connect,
            libc::SYS_execve,
            0x0FFF_0029,
            0x8000_0029,
        ] {
            assert_eq!(native(n, 40, sti), ALLOW, "nr {n:#x}");
        }
    }

    #[test]
    fn syscall_numbers_are_the_kernels() {
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            [nr::SOCKET, nr::SOCKETPAIR, nr::IOCTL, nr::IO_URING_SETUP],
            [41, 53, 16, 425]
        );
        #[cfg(target_arch = "aarch64")]
        assert_eq!(
            [nr::SOCKET, nr::SOCKETPAIR, nr::IOCTL, nr::IO_URING_SETUP],
            [198, 199, 29, 425]
        );
        assert_eq!([nr::IO_URING_ENTER, nr::IO_URING_REGISTER], [426, 427]);
        assert_eq!(
            [libc::TIOCSTI as u32, libc::TIOCLINUX as u32],
            [0x5412, 0x541C]
        );
        assert_eq!(
            (OFF_NR, OFF_ARCH, off_arg_low(0), off_arg_low(1)),
            (0, 4, 16, 24)
        );
        #[cfg(target_arch = "x86_64")]
        assert_eq!(NATIVE_ARCH, 0xC000_003E);
    }

    #[test]
    fn assembler_refuses_bad_jumps() {
        let err = assemble(&[IfEq(1, L(Allow), Next), Ret(0)]).unwrap_err();
        assert!(err.to_string().contains("allow is not defined"), "{err}");
        let err = assemble(&[Here(Kill), IfEq(1, L(Kill), Next), Ret(0)]).unwrap_err();
        assert!(err.to_string().contains("goes backwards"), "{err}");
        let mut far = vec![IfEq(1, L(Eperm), Next)];
        far.extend([Load(0); 256]);
        far.extend([Here(Eperm), Ret(0)]);
        let err = assemble(&far).unwrap_err();
        assert!(err.to_string().contains("more than 255"), "{err}");
        let long = vec![Ret(0); BPF_MAXINSNS + 1];
        assert!(matches!(assemble(&long), Err(SeccompError::TooLong { .. })));
    }

    #[test]
    fn describe_names_every_rule() {
        let d = describe();
        for word in [
            "int 0x80",
            "x32",
            "AF_VSOCK",
            "AF_PACKET",
            "AF_ALG",
            "AF_TIPC",
            "socketpair",
            "io_uring_setup",
            "TIOCSTI",
            "TIOCLINUX",
            "EAFNOSUPPORT",
            "ENOSYS",
            "EPERM",
        ] {
            assert!(d.contains(word), "{word}");
        }
    }

    #[test]
    fn filter_is_send_sync_for_pre_exec() {
        fn check<T: Send + Sync + 'static>() {}
        check::<EnclosureFilter>();
        let f = EnclosureFilter::new().expect("seccomp filters are available");
        assert!(format!("{f:?}").contains("instructions"));
    }

    // === system calls for the kernel tests (raw, so 64-bit arguments reach the kernel) ===

    fn errno_now() -> i32 {
        io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    /// `syscall(nr, a, b, c, d)` (the kernel ignores arguments a call does not take), as a
    /// result with the errno.
    fn sys(nr: libc::c_long, [a, b, c, d]: [u64; 4]) -> Result<libc::c_long, i32> {
        // SAFETY: used only for calls whose pointer arguments (if any) the callers pass as
        // addresses of live locals sized as the kernel expects, or null where it is refused.
        let rc = unsafe { libc::syscall(nr, a, b, c, d) };
        if rc == -1 {
            Err(errno_now())
        } else {
            Ok(rc)
        }
    }

    fn owned(fd: libc::c_long) -> OwnedFd {
        // SAFETY: `fd` was just returned by the kernel as a new descriptor owned by no one else.
        unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
    }

    fn socket(domain: u64, ty: i32, proto: i32) -> Result<OwnedFd, i32> {
        sys(libc::SYS_socket, [domain, ty as u64, proto as u64, 0]).map(owned)
    }

    fn socketpair(domain: u64, ty: i32) -> Result<(OwnedFd, OwnedFd), i32> {
        let mut fds = [-1 as libc::c_int; 2];
        sys(
            libc::SYS_socketpair,
            [domain, ty as u64, 0, fds.as_mut_ptr() as u64],
        )?;
        Ok((owned(fds[0].into()), owned(fds[1].into())))
    }

    fn so_domain(fd: &OwnedFd) -> i32 {
        let mut v: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` and `len` are live locals of the sizes getsockopt(2) expects.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_DOMAIN,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(
            rc,
            0,
            "getsockopt(SO_DOMAIN): {}",
            io::Error::last_os_error()
        );
        v
    }

    /// An ioctl request as a register value (libc's `Ioctl` is `c_ulong` on glibc, `c_int` on
    /// musl; requests are 32-bit).
    fn req(request: libc::Ioctl) -> u64 {
        u64::from(request as u32)
    }

    fn ioctl(fd: &OwnedFd, cmd: u64, arg: *mut libc::c_void) -> Result<libc::c_long, i32> {
        sys(libc::SYS_ioctl, [fd.as_raw_fd() as u64, cmd, arg as u64, 0])
    }

    // === the child: the test binary itself, run with an environment variable ===

    const MODE: &str = "HARNESS_SECCOMP_TEST_CHILD";
    const FILTERED: &str = "HARNESS_SECCOMP_TEST_FILTERED";

    /// Spawns this test binary to run `mode` in [`child`], under the filter when `filtered`
    /// (installed from `pre_exec` after `PR_SET_NO_NEW_PRIVS`, as `harness run` does).
    fn run_child(mode: &str, filtered: bool) -> Output {
        let mut cmd = Command::new(std::env::current_exe().expect("the test binary's path"));
        cmd.args([
            "seccomp::tests::child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(MODE, mode)
        .env(FILTERED, if filtered { "1" } else { "0" })
        .current_dir(std::env::temp_dir());
        if filtered {
            let filter = EnclosureFilter::new().expect("seccomp filters are available");
            // SAFETY: the hook runs between fork and exec and only makes the async-signal-safe
            // system calls prctl(2) and seccomp(2), on a program prepared before the fork.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    filter.install()
                });
            }
        }
        cmd.output().expect("spawn the test binary")
    }

    fn expect_success(mode: &str, filtered: bool) -> String {
        let out = run_child(mode, filtered);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "child {mode} (filtered: {filtered}): {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Not a test of its own: the child side of the kernel tests (it does nothing unless
    /// [`MODE`] is set).
    #[test]
    fn child() {
        let Ok(mode) = std::env::var(MODE) else {
            return;
        };
        let filtered = std::env::var(FILTERED).as_deref() == Ok("1");
        match mode.as_str() {
            "families" => child_families(),
            "high-bits" => child_high_bits(),
            "socketpair" => child_socketpair(),
            "io_uring" => child_io_uring(),
            "tty" => child_tty(filtered),
            "ordinary" => child_ordinary(),
            #[cfg(target_arch = "x86_64")]
            "int80" => child_int80(filtered),
            #[cfg(target_arch = "x86_64")]
            "x32" => child_x32(filtered),
            other => panic!("unknown child mode {other}"),
        }
    }

    fn child_families() {
        let refused = [
            (AF_VSOCK, libc::SOCK_STREAM, "AF_VSOCK"),
            (libc::AF_TIPC, libc::SOCK_RDM, "AF_TIPC"),
            (libc::AF_PACKET, libc::SOCK_DGRAM, "AF_PACKET"),
            (libc::AF_ALG, libc::SOCK_SEQPACKET, "AF_ALG"),
            (libc::AF_BLUETOOTH, libc::SOCK_STREAM, "AF_BLUETOOTH"),
            (AF_XDP, libc::SOCK_RAW, "AF_XDP"),
            (libc::AF_RDS, libc::SOCK_SEQPACKET, "AF_RDS"),
            (libc::AF_CAN, libc::SOCK_RAW, "AF_CAN"),
        ];
        for (family, ty, name) in refused {
            // A socket made by mistake is dropped (closed) at once, never connected.
            let got = socket(family as u64, ty | libc::SOCK_CLOEXEC, 0).map(drop);
            assert_eq!(got, Err(libc::EAFNOSUPPORT), "{name}");
        }
        let allowed = [
            (libc::AF_INET, libc::SOCK_STREAM, 0, "AF_INET"),
            (libc::AF_INET6, libc::SOCK_STREAM, 0, "AF_INET6"),
            (libc::AF_UNIX, libc::SOCK_STREAM, 0, "AF_UNIX"),
            (
                libc::AF_NETLINK,
                libc::SOCK_RAW,
                libc::NETLINK_ROUTE,
                "AF_NETLINK",
            ),
        ];
        for (family, ty, proto, name) in allowed {
            if family == libc::AF_INET6 && !std::path::Path::new("/proc/net/if_inet6").exists() {
                println!("AF_INET6 not checked: this kernel has no IPv6");
                continue;
            }
            let fd = socket(family as u64, ty | libc::SOCK_CLOEXEC, proto)
                .unwrap_or_else(|e| panic!("{name}: errno {e}"));
            assert_eq!(so_domain(&fd), family, "{name}");
        }
    }

    fn child_high_bits() {
        let stream = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
        // Low word AF_INET / AF_UNIX: allowed, and the kernel makes exactly that family.
        for (domain, family) in [
            (0x1_0000_0002, libc::AF_INET),
            (0x28_0000_0001, libc::AF_UNIX),
        ] {
            let fd = socket(domain, stream, 0).unwrap_or_else(|e| panic!("{domain:#x}: {e}"));
            assert_eq!(so_domain(&fd), family, "{domain:#x}");
        }
        // Low word AF_VSOCK, or not a family: refused whatever the high word says.
        for domain in [
            0x1_0000_0028,
            0xFFFF_FFFF_0000_0028,
            0x2_0000_0000,
            u64::MAX,
        ] {
            let got = socket(domain, stream, 0).map(drop);
            assert_eq!(got, Err(libc::EAFNOSUPPORT), "{domain:#x}");
        }
        assert!(socketpair(0x1_0000_0001, stream).is_ok());
        assert_eq!(
            socketpair(0x1_0000_0002, stream).map(drop),
            Err(libc::EAFNOSUPPORT)
        );
    }

    fn child_socketpair() {
        let stream = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
        for family in [libc::AF_INET, libc::AF_INET6, libc::AF_NETLINK, AF_VSOCK] {
            let got = socketpair(family as u64, stream).map(drop);
            assert_eq!(got, Err(libc::EAFNOSUPPORT), "family {family}");
        }
        let (a, b) = socketpair(libc::AF_UNIX as u64, stream).expect("AF_UNIX socketpair");
        let (mut a, mut b) = (std::fs::File::from(a), std::fs::File::from(b));
        use std::io::{Read as _, Write as _};
        a.write_all(b"ping").unwrap();
        let mut buf = [0; 4];
        b.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
    }

    fn child_io_uring() {
        let mut params = [0u8; 120]; // struct io_uring_params, zeroed
        let setup = sys(
            libc::SYS_io_uring_setup,
            [4, params.as_mut_ptr() as u64, 0, 0],
        );
        assert_eq!(setup.map(drop), Err(libc::ENOSYS), "io_uring_setup");
        let enter = sys(libc::SYS_io_uring_enter, [u32::MAX as u64, 0, 0, 0]);
        assert_eq!(enter, Err(libc::ENOSYS), "io_uring_enter");
        let register = sys(libc::SYS_io_uring_register, [u32::MAX as u64, 0, 0, 0]);
        assert_eq!(register, Err(libc::ENOSYS), "io_uring_register");
    }

    /// A fresh pty whose slave is this (new) session's controlling terminal, so that the
    /// kernel itself would allow `TIOCSTI` on it: an `EPERM` under the filter is the filter's.
    fn child_tty(filtered: bool) {
        // Closing the pty at the end hangs up this session's terminal, which sends SIGHUP.
        // SAFETY: signal(2) with SIG_IGN installs no handler of ours.
        unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
        // SAFETY: setsid takes no arguments; this child is not a process group leader.
        assert_ne!(
            unsafe { libc::setsid() },
            -1,
            "setsid: {}",
            io::Error::last_os_error()
        );
        // SAFETY: posix_openpt, grantpt and unlockpt take flags or a descriptor we own.
        let master = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
        assert!(master >= 0, "posix_openpt: {}", io::Error::last_os_error());
        let master = owned(master.into());
        // SAFETY: as above.
        let rc = unsafe { libc::grantpt(master.as_raw_fd()) };
        assert_eq!(rc, 0, "grantpt: {}", io::Error::last_os_error());
        // SAFETY: as above.
        let rc = unsafe { libc::unlockpt(master.as_raw_fd()) };
        assert_eq!(rc, 0, "unlockpt: {}", io::Error::last_os_error());
        let mut n: libc::c_uint = 0;
        ioctl(
            &master,
            req(libc::TIOCGPTN),
            (&mut n as *mut libc::c_uint).cast(),
        )
        .unwrap();
        let path = std::ffi::CString::new(format!("/dev/pts/{n}")).unwrap();
        // SAFETY: `path` is a NUL-terminated string alive for the call.
        let slave = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        assert!(slave >= 0, "open {path:?}: {}", io::Error::last_os_error());
        let slave = owned(slave.into());
        ioctl(&slave, req(libc::TIOCSCTTY), std::ptr::null_mut()).expect("TIOCSCTTY");

        let mut ws: libc::winsize = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let winsize = ioctl(
            &slave,
            req(libc::TIOCGWINSZ),
            (&mut ws as *mut libc::winsize).cast(),
        );
        assert_eq!(winsize, Ok(0), "TIOCGWINSZ");

        let mut c = b'x';
        let sti = req(libc::TIOCSTI);
        let plain = ioctl(&slave, sti, (&mut c as *mut u8).cast()).map(drop);
        let high = ioctl(&slave, sti | 1 << 32, (&mut c as *mut u8).cast()).map(drop);
        let console = ioctl(&slave, req(libc::TIOCLINUX), (&mut c as *mut u8).cast()).map(drop);
        println!("TIOCSTI: {plain:?}; TIOCSTI | 1 << 32: {high:?}; TIOCLINUX: {console:?}");
        if filtered {
            assert_eq!(plain, Err(libc::EPERM), "TIOCSTI");
            assert_eq!(high, Err(libc::EPERM), "TIOCSTI with high bits");
            assert_eq!(console, Err(libc::EPERM), "TIOCLINUX");
        } else {
            // Our controlling terminal: the kernel allows it, or refuses with EIO when
            // dev.tty.legacy_tiocsti is 0 — never EPERM. It reads only the low 32 bits of cmd.
            assert_ne!(plain, Err(libc::EPERM), "TIOCSTI unfiltered");
            assert_eq!(
                high, plain,
                "the kernel truncates the ioctl request to 32 bits"
            );
            assert_ne!(console, Err(libc::EPERM), "TIOCLINUX unfiltered on a pty");
        }
    }

    fn child_ordinary() {
        let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
        assert!(status.contains("NoNewPrivs:\t1"), "{status}");
        assert!(status.contains("Seccomp:\t2"), "{status}");
        let path = std::env::temp_dir().join(format!("harness-seccomp-{}", std::process::id()));
        std::fs::write(&path, b"enclosed").expect("write a file");
        let back = std::fs::read(&path);
        let _ = std::fs::remove_file(&path);
        assert_eq!(back.expect("read it back"), b"enclosed");
        let t = Command::new("/bin/true").status().expect("spawn /bin/true");
        assert!(t.success(), "/bin/true: {t}");
        assert_eq!(std::thread::spawn(|| 7).join().unwrap(), 7);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        use std::io::{Read as _, Write as _};
        client.write_all(b"hi").unwrap();
        let mut buf = [0; 2];
        server.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
        let (_a, _b) = std::os::unix::net::UnixStream::pair().expect("UnixStream::pair");
    }

    /// i386 `getpid` through `int 0x80`: prints the pid when it returns.
    #[cfg(target_arch = "x86_64")]
    fn child_int80(filtered: bool) {
        // No core file from the SIGSYS kill.
        // SAFETY: prctl and setrlimit take flag words and a pointer to a live local.
        unsafe {
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
            let zero = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &zero);
        }
        let ret: i32;
        // SAFETY: i386 system call 20 (getpid) takes no arguments and touches no memory; the
        // registers the 32-bit entry may clobber are declared.
        unsafe {
            std::arch::asm!(
                "int 0x80",
                inlateout("eax") 20i32 => ret,
                lateout("r8") _, lateout("r9") _, lateout("r10") _, lateout("r11") _,
                options(nostack),
            );
        }
        println!("int 0x80 getpid returned {ret}");
        assert!(!filtered, "an i386 system call returned under the filter");
        assert_eq!(ret as u32, std::process::id(), "i386 getpid");
    }

    /// x32 `getpid` (39 | `__X32_SYSCALL_BIT`).
    #[cfg(target_arch = "x86_64")]
    fn child_x32(filtered: bool) {
        let got = sys(0x4000_0000 | 39, [0; 4]);
        println!("x32 getpid: {got:?}");
        if filtered {
            assert_eq!(got, Err(libc::ENOSYS));
        }
    }

    // === the kernel tests ===

    #[test]
    fn kernel_refuses_other_socket_families() {
        // Families refused under the filter that this kernel would make without it (AF_VSOCK
        // and AF_TIPC are not tried here either: not even an unconnected vsock is wanted).
        for (family, ty, name) in [
            (libc::AF_ALG, libc::SOCK_SEQPACKET, "AF_ALG"),
            (libc::AF_PACKET, libc::SOCK_DGRAM, "AF_PACKET"),
        ] {
            let got = socket(family as u64, ty | libc::SOCK_CLOEXEC, 0).map(drop);
            println!("unfiltered {name}: {got:?}");
        }
        expect_success("families", true);
    }

    #[test]
    fn kernel_reads_the_low_32_bits_of_the_domain_and_so_does_the_filter() {
        // Unfiltered, in this process: the kernel truncates the 64-bit register to `int`.
        let fd = socket(0x1_0000_0002, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0)
            .expect("socket(0x1_0000_0002) makes an AF_INET socket");
        assert_eq!(so_domain(&fd), libc::AF_INET);
        let fd = socket(
            0xFFFF_FFFF_0000_0001,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
        )
        .expect("socket(0xFFFF_FFFF_0000_0001) makes an AF_UNIX socket");
        assert_eq!(so_domain(&fd), libc::AF_UNIX);
        expect_success("high-bits", true);
    }

    #[test]
    fn kernel_socketpair_only_unix() {
        // Unfiltered the kernel answers EOPNOTSUPP for AF_INET: EAFNOSUPPORT is the filter's.
        let got = socketpair(libc::AF_INET as u64, libc::SOCK_STREAM).map(drop);
        assert_eq!(got, Err(libc::EOPNOTSUPP));
        expect_success("socketpair", true);
    }

    #[test]
    fn kernel_io_uring_is_enosys() {
        let enter = sys(libc::SYS_io_uring_enter, [u32::MAX as u64, 0, 0, 0]);
        println!("unfiltered io_uring_enter(-1): {enter:?}");
        expect_success("io_uring", true);
    }

    #[test]
    fn kernel_refuses_tiocsti_and_tioclinux_on_a_pty() {
        println!("{}", expect_success("tty", false));
        println!("{}", expect_success("tty", true));
    }

    #[test]
    fn kernel_ordinary_work_survives() {
        expect_success("ordinary", true);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn kernel_kills_i386_system_calls() {
        let control = run_child("int80", false);
        println!(
            "unfiltered: {}: {}",
            control.status,
            String::from_utf8_lossy(&control.stdout)
        );
        let out = run_child("int80", true);
        println!("filtered: {}", out.status);
        assert!(
            !out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        if control.status.success() {
            assert_eq!(out.status.signal(), Some(libc::SIGSYS), "{}", out.status);
        } else {
            println!(
                "no i386 emulation in this kernel ({}): checked only that the child died",
                control.status
            );
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn kernel_x32_is_enosys() {
        println!("unfiltered: {}", expect_success("x32", false));
        expect_success("x32", true);
    }

    /// `install` in a bare `fork` child of this multi-threaded test process: nothing but the
    /// system calls (an allocation here could deadlock on a lock another thread held).
    #[test]
    fn kernel_install_after_bare_fork() {
        let filter = EnclosureFilter::new().expect("seccomp filters are available");
        // SAFETY: the child only makes async-signal-safe calls (prctl, seccomp, socket, close,
        // _exit) and reads errno, then exits without returning into the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
        if pid == 0 {
            let code = (|| {
                // SAFETY: as above, for each call.
                unsafe {
                    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                        return 10;
                    }
                    if filter.install().is_err() {
                        return 11;
                    }
                    let fd = libc::socket(AF_VSOCK, libc::SOCK_STREAM, 0);
                    if fd != -1 {
                        libc::close(fd);
                        return 12;
                    }
                    if errno_now() != libc::EAFNOSUPPORT {
                        return 13;
                    }
                    let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                    if fd == -1 {
                        return 14;
                    }
                    libc::close(fd);
                }
                0
            })();
            // SAFETY: _exit ends the child at once, running no destructors or atexit handlers.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: `pid` is our child; `status` is a live local.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(rc, pid, "waitpid: {}", io::Error::last_os_error());
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child status {status:#x} (exit code {})",
            libc::WEXITSTATUS(status)
        );
    }
}
