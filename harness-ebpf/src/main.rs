//! The enclosure's eBPF programs, attached to the enclosure cgroup so every session cgroup below
//! it inherits them. Each program is a thin entry over a `try_*` function; everything that
//! thinks lives in the daemon. What each one does:
//!
//! - `connect4`/`connect6`: remember where a socket was really going (by socket cookie), refuse
//!   what policy denies, and rewrite the destination to the daemon (TCP) or its resolver (UDP 53).
//! - `sock_ops`: when the redirected TCP connection is established, file the original
//!   destination under the local address the daemon will see as the peer.
//! - `getpeername4/6`, `recvmsg4/6`: the enclosed process sees the peer it asked for.
//! - `sendmsg4/6`: DNS to the daemon's resolver, every other datagram refused.
//! - `sock_create`: only TCP and UDP sockets may exist inside the enclosure.
//! - `fork`/`exec`/`exit` (raw tracepoints, `process.rs`): what the enclosed processes run.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod process;
#[cfg(target_arch = "bpf")]
mod programs;

#[cfg(not(target_arch = "bpf"))]
fn main() {
    // Built for the host only by workspace-wide commands; the real object is bpfel-unknown-none.
}
