//! What the harness eBPF programs and the daemon share: map value layouts and constants.
//!
//! Everything here is `#[repr(C)]` without implicit padding, because the same bytes are written
//! by the kernel side and read by userspace through BPF maps. Addresses are always held as an
//! IPv6 address (IPv4 as `::ffff:a.b.c.d`) in four *host-order* 32-bit words, so one comparison
//! routine serves both families.
#![no_std]
#![deny(missing_docs)]

/// `AF_INET`.
pub const AF_INET: u16 = 2;
/// `AF_INET6`.
pub const AF_INET6: u16 = 10;
/// `AF_UNIX`.
pub const AF_UNIX: u16 = 1;

/// Capacity of the per-socket original-destination maps.
pub const MAX_CONNECTIONS: u32 = 65_536;
/// Capacity of the policy rule array evaluated in the kernel on every connect.
pub const MAX_RULES: u32 = 64;
/// Slots of the kernel's rule array: [`MAX_RULES`] for a policy, and one more, so that a
/// policy reload always has a free slot above the rules in use for [`RELOAD_GATE`] (the rule
/// that refuses every connect while the others are rewritten).
pub const RULE_SLOTS: u32 = MAX_RULES + 1;
/// `rule_index` of the gate a reload puts in the rule array while it rewrites the rules: a
/// connect refused with it was refused because it came while the policy was being replaced.
pub const RELOAD_GATE: u32 = u32::MAX - 1;
/// Capacity of the map of addresses learned from DNS answers for host-name rules.
pub const MAX_LEARNED: u32 = 16_384;

/// Index of the single [`EnclosureConfig`] in the `CONFIG` array map.
pub const CONFIG_INDEX: u32 = 0;

/// Where a connection was really going, and who asked. Written by connect4/6 and sendmsg4/6
/// keyed by socket cookie; copied by `sock_ops` under the peer address the daemon sees.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrigDst {
    /// Destination address, IPv4 mapped into IPv6, host-order words.
    pub addr: [u32; 4],
    /// Destination port, host order.
    pub port: u16,
    /// Address family of the socket that connected (`AF_INET` or `AF_INET6`).
    pub family: u16,
    /// Process (thread group) id of the caller.
    pub pid: u32,
    /// Thread id of the caller.
    pub tid: u32,
    /// User id of the caller.
    pub uid: u32,
    /// cgroup v2 id of the caller: the session cgroup.
    pub cgroup_id: u64,
    /// Socket cookie of the enclosed socket.
    pub cookie: u64,
    /// Cookie of the network namespace the enclosed socket lives in: each session has its own,
    /// so the same local address and port can be in use in two sessions at once.
    pub netns: u64,
}

/// Key of the `BY_PEER` map: the enclosed socket's local address as the daemon sees it when it
/// accepts the redirected connection (IPv4 mapped into IPv6, host-order words), within the
/// session's network namespace.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerKey {
    /// Local address of the enclosed socket.
    pub addr: [u32; 4],
    /// Local port of the enclosed socket, host order.
    pub port: u32,
    /// Always 0 (explicit padding: the kernel hashes every byte of a key).
    pub reserved: u32,
    /// Cookie of the network namespace (the session's) the address belongs to.
    pub netns: u64,
}

/// The port of the daemon's TCP listener inside every session's network namespace (on
/// 127.0.0.1 and ::1). Below 1024, so that no unprivileged enclosed process can bind it, even
/// after the daemon is gone.
pub const DAEMON_TCP_PORT: u16 = 1023;
/// The port of the daemon's DNS resolver inside every session's network namespace.
pub const DAEMON_DNS_PORT: u16 = 1023;

/// Configuration the daemon writes once into the `CONFIG` array before attaching.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnclosureConfig {
    /// The daemon's IPv4 listener address, host order (normally 127.0.0.1).
    pub daemon_v4: u32,
    /// The daemon's TCP listener port (same on IPv4 and IPv6), host order.
    pub tcp_port: u16,
    /// The daemon's DNS (UDP) port (same on IPv4 and IPv6), host order.
    pub dns_port: u16,
    /// The daemon's IPv6 listener address, host-order words (normally ::1).
    pub daemon_v6: [u32; 4],
    /// Decision when no rule matches: [`ACTION_ALLOW`] or [`ACTION_DENY`].
    pub default_action: u32,
    /// Number of valid entries in the `RULES` array.
    pub rule_count: u32,
    /// Byte offset of the network namespace pointer (`__sk_common.skc_net.net`) in the running
    /// kernel's `struct sock`, read from its BTF by the daemon (layouts differ between kernels).
    pub sock_net_offset: u32,
    /// Byte offset of `sk` (the `struct sock *`) in the running kernel's `struct socket`.
    pub socket_sk_offset: u32,
}

/// Rule decision: let the connection through to the daemon.
pub const ACTION_ALLOW: u32 = 1;
/// Rule decision: refuse with `EPERM` in the kernel.
pub const ACTION_DENY: u32 = 2;

/// A policy rule the kernel can evaluate: an address prefix and a port. Any matching deny rule
/// refuses; otherwise any matching allow rule admits; otherwise the default applies.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelRule {
    /// Network address, IPv4 mapped into IPv6, host-order words.
    pub addr: [u32; 4],
    /// Prefix length over the 128-bit (mapped) address.
    pub prefix: u32,
    /// Destination port, 0 for any.
    pub port: u32,
    /// [`ACTION_ALLOW`] or [`ACTION_DENY`].
    pub action: u32,
    /// Index of the rule in the policy file, reported back in events.
    pub rule_index: u32,
}

/// Key of the `LEARNED` map: an address that DNS answered for a host named in a rule, and the
/// rule's port (0 for any).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LearnedKey {
    /// Address, IPv4 mapped into IPv6, host-order words.
    pub addr: [u32; 4],
    /// Port, 0 for any.
    pub port: u32,
}

/// Value of the `LEARNED` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LearnedVerdict {
    /// [`ACTION_ALLOW`] or [`ACTION_DENY`].
    pub action: u32,
    /// Index of the rule in the policy file.
    pub rule_index: u32,
}

/// Kinds of [`KernelEvent`].
pub mod event {
    /// A TCP or UDP connect refused by policy in the kernel.
    pub const CONNECT_DENIED: u32 = 1;
    /// A UDP datagram or connect to a port other than 53 refused.
    pub const UDP_REFUSED: u32 = 2;
    /// A socket of a type the enclosure does not allow (raw, ICMP, SCTP, MPTCP…).
    pub const SOCKET_REFUSED: u32 = 3;
    /// A connect straight at the daemon's own listener, refused.
    pub const LOOP_REFUSED: u32 = 4;
    /// A unix socket connect or send to a socket outside the session, refused.
    pub const UNIX_REFUSED: u32 = 5;
    /// A TCP connect to the session's own loopback where nothing listens (ECONNREFUSED).
    pub const LOCAL_REFUSED: u32 = 6;
}

/// Something the kernel side refused, reported to the daemon through the `EVENTS` ring buffer so
/// it can be recorded in the session's ledger.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelEvent {
    /// One of the [`event`] constants.
    pub kind: u32,
    /// Socket type (`SOCK_STREAM` = 1, `SOCK_DGRAM` = 2, `SOCK_RAW` = 3).
    pub sock_type: u32,
    /// IP protocol of the socket (6 TCP, 17 UDP, 1 ICMP…), when known.
    pub protocol: u32,
    /// Index of the policy rule that decided, or `u32::MAX` for the default or a fixed rule.
    pub rule_index: u32,
    /// The destination that was refused and who asked (addr/port zero for `SOCKET_REFUSED`).
    pub dst: OrigDst,
}

/// `rule_index` for a decision not made by a numbered rule.
pub const NO_RULE: u32 = u32::MAX;

/// Kinds of [`ProcessEvent`].
pub mod process {
    /// A process made a new process (`pid` the child, `ppid` the parent); threads are not
    /// reported.
    pub const FORK: u32 = 1;
    /// A process started a program; the event is the head of an [`super::ExecEvent`].
    pub const EXEC: u32 = 2;
    /// A process (its thread group leader) ended; `exit_code` is the kernel's wait status.
    pub const EXIT: u32 = 3;
}

/// How many bytes of a new program's arguments the kernel side reads.
pub const ARGV_MAX: usize = 4096;
/// How many bytes of a new program's path the kernel side reads.
pub const EXEC_PATH_MAX: usize = 256;

/// Where the process programs look, written once by the daemon into `PROCESS_CONFIG`. The
/// offsets are those of the running kernel's structures, read from its BTF (Rust eBPF has no
/// CO-RE relocations).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessConfig {
    /// cgroup v2 id of the engine's enclosure: a process is enclosed when its cgroup's
    /// ancestor at `enclosure_level` is this one.
    pub enclosure_cgroup: u64,
    /// Depth of the enclosure cgroup below the cgroup v2 root (the root is level 0).
    pub enclosure_level: u32,
    /// `struct task_struct`: `pid`.
    pub task_pid: u32,
    /// `struct task_struct`: `tgid`.
    pub task_tgid: u32,
    /// `struct task_struct`: `real_parent`.
    pub task_real_parent: u32,
    /// `struct task_struct`: `mm`.
    pub task_mm: u32,
    /// `struct task_struct`: `exit_code`.
    pub task_exit_code: u32,
    /// `struct mm_struct`: `arg_start`.
    pub mm_arg_start: u32,
    /// `struct mm_struct`: `arg_end`.
    pub mm_arg_end: u32,
    /// `struct linux_binprm`: `filename`.
    pub bprm_filename: u32,
    /// Always 0 (explicit padding).
    pub reserved: u32,
}

/// A fork, exec or exit of an enclosed process, reported through the `PROCESSES` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessEvent {
    /// One of the [`process`] constants.
    pub kind: u32,
    /// The process (thread group id, as the initial PID namespace numbers it).
    pub pid: u32,
    /// Its parent (for a fork, the process that forked).
    pub ppid: u32,
    /// Real user id of the process that ran the hook.
    pub uid: u32,
    /// For an exit: the wait status (`code << 8 | signal`, `0x80` for a core dump).
    pub exit_code: u32,
    /// For an exec: how many bytes the arguments take in all (may exceed [`ARGV_MAX`]).
    pub argv_len: u32,
    /// For an exec: how many bytes of `argv` were read.
    pub argv_read: u32,
    /// Always 0 (explicit padding).
    pub reserved: u32,
    /// cgroup v2 id of the process that ran the hook: the session cgroup.
    pub cgroup_id: u64,
    /// `CLOCK_MONOTONIC` nanoseconds when the hook ran.
    pub time_ns: u64,
}

/// A [`process::EXEC`] event: the head, then the program's path and arguments.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecEvent {
    /// Who, when.
    pub head: ProcessEvent,
    /// The path given to `execve`, NUL-terminated (cut at [`EXEC_PATH_MAX`] − 1 bytes).
    pub path: [u8; EXEC_PATH_MAX],
    /// The arguments as the new program's stack holds them: each NUL-terminated, `argv_read`
    /// bytes valid.
    pub argv: [u8; ARGV_MAX],
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all these types are repr(C), Copy, and have no padding or invalid bit patterns.
    unsafe impl aya::Pod for super::OrigDst {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PeerKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::EnclosureConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::KernelRule {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LearnedKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LearnedVerdict {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::KernelEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProcessConfig {}
}

/// Words of an IPv4 address mapped into IPv6 (`::ffff:a.b.c.d`), host order.
pub const fn mapped_v4(ip_host_order: u32) -> [u32; 4] {
    [0, 0, 0xffff, ip_host_order]
}

/// Whether host-order words hold an IPv4-mapped IPv6 address.
pub const fn is_mapped_v4(addr: &[u32; 4]) -> bool {
    addr[0] == 0 && addr[1] == 0 && addr[2] == 0xffff
}

/// Whether `addr` lies inside `net/prefix` (both host-order words over 128 bits).
#[inline(always)]
pub fn prefix_matches(addr: &[u32; 4], net: &[u32; 4], prefix: u32) -> bool {
    let mut i = 0;
    while i < 4 {
        let start = (i as u32) * 32;
        let bits = if prefix <= start {
            0
        } else if prefix - start >= 32 {
            32
        } else {
            prefix - start
        };
        let mask: u32 = if bits == 0 {
            0
        } else {
            u32::MAX << (32 - bits)
        };
        if (addr[i] & mask) != (net[i] & mask) {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_match_covers_mapped_v4_and_v6() {
        let ten = mapped_v4(0x0a00_0000);
        assert!(prefix_matches(&mapped_v4(0x0a01_0203), &ten, 96 + 8));
        assert!(!prefix_matches(&mapped_v4(0x0b01_0203), &ten, 96 + 8));
        assert!(prefix_matches(&mapped_v4(0x0b01_0203), &ten, 0));
        let v6 = [0x2001_0db8, 0, 0, 1];
        assert!(prefix_matches(&v6, &[0x2001_0db8, 0, 0, 0], 32));
        assert!(!prefix_matches(&v6, &[0x2001_0db8, 0, 0, 0], 128));
        assert!(prefix_matches(&v6, &v6, 128));
    }
}
