//! The programs themselves (compiled only for the BPF target).
use aya_ebpf::{
    bindings::{
        bpf_sock, bpf_sock_addr, bpf_sock_ops, bpf_sock_tuple,
        bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1, bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2,
    },
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        bpf_probe_read_kernel,
        generated::{
            bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_set_retval, bpf_sk_lookup_tcp,
            bpf_sk_release,
        },
    },
    macros::{cgroup_skb, cgroup_sock, cgroup_sock_addr, lsm_cgroup, map, sock_ops},
    maps::{Array, HashMap, LruHashMap, RingBuf},
    programs::{LsmContext, SkBuffContext, SockAddrContext, SockContext, SockOpsContext},
};
use aya_log_ebpf::debug;
use harness_common::{
    event, is_mapped_v4, mapped_v4, prefix_matches, EnclosureConfig, KernelEvent, KernelRule,
    LearnedKey, LearnedVerdict, OrigDst, PeerKey, ACTION_ALLOW, ACTION_DENY, AF_INET, AF_INET6,
    AF_UNIX, CONFIG_INDEX, MAX_CONNECTIONS, MAX_LEARNED, NO_RULE, RULE_SLOTS,
};

/// Return values of cgroup socket programs: 1 lets the call go on, 0 makes it fail with EPERM.
const PROCEED: i32 = 1;
const REFUSE: i32 = 0;

const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;
const IPPROTO_IP: u32 = 0;
const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;
const DNS_PORT: u16 = 53;
const ECONNREFUSED: i32 = 111;
/// `BPF_F_CURRENT_NETNS`: look the socket up in the caller's network namespace.
const BPF_F_CURRENT_NETNS: u64 = u64::MAX;
const BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB: u32 = 4;

#[map]
static CONFIG: Array<EnclosureConfig> = Array::with_max_entries(1, 0);

/// Socket cookie → where that socket was really going.
#[map]
static CONNECTIONS: LruHashMap<u64, OrigDst> = LruHashMap::with_max_entries(MAX_CONNECTIONS, 0);

/// Enclosed socket's local address (the daemon's view of the peer) → original destination.
#[map]
static BY_PEER: LruHashMap<PeerKey, OrigDst> = LruHashMap::with_max_entries(MAX_CONNECTIONS, 0);

/// DNS datagrams: sender's address as the daemon's resolver sees it → who sent it.
#[map]
static DNS_PEERS: LruHashMap<PeerKey, OrigDst> = LruHashMap::with_max_entries(MAX_CONNECTIONS, 0);

#[map]
static RULES: Array<KernelRule> = Array::with_max_entries(RULE_SLOTS, 0);

/// Addresses DNS gave for host names that rules mention.
#[map]
static LEARNED: HashMap<LearnedKey, LearnedVerdict> = HashMap::with_max_entries(MAX_LEARNED, 0);

/// Refusals, for the daemon to record.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

// === connect ===

#[cgroup_sock_addr(connect4)]
pub fn harness_connect4(ctx: SockAddrContext) -> i32 {
    verdict(try_connect(&ctx, false))
}

#[cgroup_sock_addr(connect6)]
pub fn harness_connect6(ctx: SockAddrContext) -> i32 {
    verdict(try_connect(&ctx, true))
}

#[inline(always)]
fn try_connect(ctx: &SockAddrContext, v6: bool) -> Result<i32, i32> {
    let config = config()?;
    let sa = ctx.sock_addr;
    // SAFETY: the kernel hands sock_addr programs a valid bpf_sock_addr for their whole run.
    let (sock_type, protocol) = unsafe { ((*sa).type_, (*sa).protocol) };
    let dst = read_user_dst(ctx, v6);
    let orig = who_asked(ctx, dst.0, dst.1, if v6 { AF_INET6 } else { AF_INET });

    if is_daemon(&config, &orig.addr, orig.port) {
        report(
            ctx,
            event::LOOP_REFUSED,
            sock_type,
            protocol,
            NO_RULE,
            &orig,
        );
        return Ok(REFUSE);
    }
    if sock_type == SOCK_DGRAM && orig.port != DNS_PORT {
        report(ctx, event::UDP_REFUSED, sock_type, protocol, NO_RULE, &orig);
        return Ok(REFUSE);
    }
    if sock_type != SOCK_STREAM && sock_type != SOCK_DGRAM {
        report(
            ctx,
            event::SOCKET_REFUSED,
            sock_type,
            protocol,
            NO_RULE,
            &orig,
        );
        return Ok(REFUSE);
    }
    // DNS is always answered by the daemon's resolver, which applies policy to names itself.
    if sock_type == SOCK_STREAM {
        let (action, rule) = decide(&config, &orig.addr, orig.port);
        if action != ACTION_ALLOW {
            debug!(ctx, "harness: connect denied by rule {}", rule);
            report(ctx, event::CONNECT_DENIED, sock_type, protocol, rule, &orig);
            return Ok(REFUSE);
        }
    }
    // A connect to the session's own loopback where nothing listens is refused here, exactly
    // as the kernel would have refused it (ECONNREFUSED): the daemon would otherwise accept
    // it, and wait-for-port loops would see "ready" too early.
    if sock_type == SOCK_STREAM && !local_listener(ctx, &orig.addr, orig.port) {
        report(
            ctx,
            event::LOCAL_REFUSED,
            sock_type,
            protocol,
            NO_RULE,
            &orig,
        );
        // SAFETY: bpf_set_retval only sets the value the system call returns.
        unsafe { bpf_set_retval(-ECONNREFUSED) };
        return Ok(REFUSE);
    }
    CONNECTIONS
        .insert(&orig.cookie, &orig, 0)
        .map_err(|_| REFUSE)?;
    let port = if sock_type == SOCK_STREAM {
        config.tcp_port
    } else {
        config.dns_port
    };
    write_user_dst(ctx, v6, &orig.addr, &config, port);
    Ok(PROCEED)
}

/// For a loopback or unspecified destination (the session's own): whether a TCP socket
/// listens on it in the caller's network namespace. Other destinations: true (the daemon
/// finds out, and resets the connection if they refuse).
#[inline(always)]
fn local_listener(ctx: &SockAddrContext, addr: &[u32; 4], port: u16) -> bool {
    let v4 = is_mapped_v4(addr);
    let loopback = if v4 {
        addr[3] >> 24 == 127 || addr[3] == 0
    } else {
        (addr[0] | addr[1] | addr[2]) == 0 && (addr[3] == 1 || addr[3] == 0)
    };
    if !loopback {
        return true;
    }
    // SAFETY: bpf_sock_tuple is plain old data; all-zero is a valid value.
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    let size = if v4 {
        // 0.0.0.0 means this host: the kernel connects it to 127.0.0.1.
        let ip = if addr[3] == 0 { 0x7f00_0001 } else { addr[3] };
        tuple.__bindgen_anon_1.ipv4 = bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 {
            saddr: 0,
            daddr: ip.to_be(),
            sport: 0,
            dport: port.to_be(),
        };
        core::mem::size_of::<bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1>()
    } else {
        tuple.__bindgen_anon_1.ipv6 = bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2 {
            saddr: [0; 4],
            daddr: [0, 0, 0, 1u32.to_be()],
            sport: 0,
            dport: port.to_be(),
        };
        core::mem::size_of::<bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2>()
    };
    // SAFETY: the helper reads `size` bytes of the tuple we own and returns a referenced
    // socket (or null), released right below as the verifier requires.
    unsafe {
        let sk = bpf_sk_lookup_tcp(
            ctx.sock_addr.cast(),
            &mut tuple,
            size as u32,
            BPF_F_CURRENT_NETNS,
            0,
        );
        if sk.is_null() {
            return false;
        }
        bpf_sk_release(sk.cast());
    }
    true
}

// === sendmsg / recvmsg (unconnected UDP) ===

#[cgroup_sock_addr(sendmsg4)]
pub fn harness_sendmsg4(ctx: SockAddrContext) -> i32 {
    verdict(try_sendmsg(&ctx, false))
}

#[cgroup_sock_addr(sendmsg6)]
pub fn harness_sendmsg6(ctx: SockAddrContext) -> i32 {
    verdict(try_sendmsg(&ctx, true))
}

#[inline(always)]
fn try_sendmsg(ctx: &SockAddrContext, v6: bool) -> Result<i32, i32> {
    let config = config()?;
    let sa = ctx.sock_addr;
    // SAFETY: valid context for the program's run (see try_connect).
    let (sock_type, protocol) = unsafe { ((*sa).type_, (*sa).protocol) };
    let dst = read_user_dst(ctx, v6);
    // A v6 socket connected to a mapped IPv4 resolver sends through the IPv4 path with the
    // (already rewritten) connected address: it is going to our resolver, let it.
    if is_daemon_any_port(&config, &dst.0) && dst.1 == config.dns_port {
        return Ok(PROCEED);
    }
    let orig = who_asked(ctx, dst.0, dst.1, if v6 { AF_INET6 } else { AF_INET });
    if orig.port != DNS_PORT || is_daemon(&config, &orig.addr, orig.port) {
        report(ctx, event::UDP_REFUSED, sock_type, protocol, NO_RULE, &orig);
        return Ok(REFUSE);
    }
    CONNECTIONS
        .insert(&orig.cookie, &orig, 0)
        .map_err(|_| REFUSE)?;
    write_user_dst(ctx, v6, &orig.addr, &config, config.dns_port);
    Ok(PROCEED)
}

#[cgroup_sock_addr(recvmsg4)]
pub fn harness_recvmsg4(ctx: SockAddrContext) -> i32 {
    restore_peer(&ctx, false);
    PROCEED
}

#[cgroup_sock_addr(recvmsg6)]
pub fn harness_recvmsg6(ctx: SockAddrContext) -> i32 {
    restore_peer(&ctx, true);
    PROCEED
}

// === getpeername ===

#[cgroup_sock_addr(getpeername4)]
pub fn harness_getpeername4(ctx: SockAddrContext) -> i32 {
    restore_peer(&ctx, false);
    PROCEED
}

#[cgroup_sock_addr(getpeername6)]
pub fn harness_getpeername6(ctx: SockAddrContext) -> i32 {
    restore_peer(&ctx, true);
    PROCEED
}

/// Show the enclosed process the peer it asked for instead of the daemon.
fn restore_peer(ctx: &SockAddrContext, v6: bool) {
    let Ok(config) = config() else { return };
    let (addr, port) = read_user_dst(ctx, v6);
    if !is_daemon_any_port(&config, &addr) {
        return;
    }
    // SAFETY: the context pointer is valid; the helper only reads the socket behind it.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    // SAFETY: the value is copied out at once; a concurrent LRU eviction can at worst give a
    // stale copy of another socket's entry, and the cookie check below rejects it.
    let Some(orig) = (unsafe { CONNECTIONS.get(&cookie) }).copied() else {
        return;
    };
    if orig.cookie != cookie || (port != config.tcp_port && port != config.dns_port) {
        return;
    }
    write_user_dst_exact(ctx, v6, &orig.addr, orig.port);
}

// === sock_ops: file the original destination under the daemon's view of the peer ===

#[sock_ops]
pub fn harness_sockops(ctx: SockOpsContext) -> u32 {
    try_sockops(&ctx);
    1
}

fn try_sockops(ctx: &SockOpsContext) {
    if ctx.op() != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        return;
    }
    // SAFETY: valid context for the program's run; the helper reads the socket's cookie.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast::<bpf_sock_ops>().cast()) };
    // SAFETY: copied out at once (see restore_peer).
    let Some(orig) = (unsafe { CONNECTIONS.get(&cookie) }).copied() else {
        return;
    };
    let addr = if ctx.family() == u32::from(AF_INET) {
        mapped_v4(u32::from_be(ctx.local_ip4()))
    } else {
        // Each word read on its own: the verifier refuses a load through a ctx pointer the
        // compiler has offset (which an array copy produces).
        let ops = ctx.ops;
        // SAFETY: valid context for the program's run; local_ip6 is readable in sock_ops.
        unsafe {
            words_from_be([
                core::ptr::read_volatile(&(*ops).local_ip6[0]),
                core::ptr::read_volatile(&(*ops).local_ip6[1]),
                core::ptr::read_volatile(&(*ops).local_ip6[2]),
                core::ptr::read_volatile(&(*ops).local_ip6[3]),
            ])
        }
    };
    // local_port is in host order in bpf_sock_ops (unlike remote_port).
    let key = PeerKey {
        addr,
        port: ctx.local_port(),
        reserved: 0,
        netns: orig.netns,
    };
    let _ = BY_PEER.insert(&key, &orig, 0);
}

// === cgroup_skb egress: the second wall, and who sent each DNS datagram ===

/// Every packet an enclosed socket sends must go to the daemon; anything else is dropped (a
/// socket that somehow escaped the connect/sendmsg rewrite still cannot reach the network).
/// DNS datagrams to the resolver are filed under their source so the resolver knows who asked.
#[cgroup_skb(egress)]
pub fn harness_egress(ctx: SkBuffContext) -> i32 {
    verdict(try_egress(&ctx))
}

#[inline(always)]
fn try_egress(ctx: &SkBuffContext) -> Result<i32, i32> {
    let config = config()?;
    let first: u8 = ctx.load(0).map_err(|_| REFUSE)?;
    let (src, dst, proto, l4) = match first >> 4 {
        4 => {
            let ihl = usize::from(first & 0x0f) * 4;
            let proto: u8 = ctx.load(9).map_err(|_| REFUSE)?;
            let saddr: u32 = ctx.load(12).map_err(|_| REFUSE)?;
            let daddr: u32 = ctx.load(16).map_err(|_| REFUSE)?;
            (
                mapped_v4(u32::from_be(saddr)),
                mapped_v4(u32::from_be(daddr)),
                proto,
                ihl,
            )
        }
        6 => {
            let proto: u8 = ctx.load(6).map_err(|_| REFUSE)?;
            let saddr: [u32; 4] = ctx.load(8).map_err(|_| REFUSE)?;
            let daddr: [u32; 4] = ctx.load(24).map_err(|_| REFUSE)?;
            (words_from_be(saddr), words_from_be(daddr), proto, 40)
        }
        _ => return Ok(REFUSE),
    };
    if !is_daemon_any_port(&config, &dst) {
        return Ok(REFUSE);
    }
    if u32::from(proto) == IPPROTO_UDP {
        let sport: u16 = ctx.load(l4).map_err(|_| REFUSE)?;
        let dport: u16 = ctx.load(l4 + 2).map_err(|_| REFUSE)?;
        if u16::from_be(dport) == config.dns_port {
            // SAFETY: the helper reads the cookie of the skb's socket; the context is valid.
            let cookie = unsafe { bpf_get_socket_cookie(ctx.skb.skb.cast()) };
            // SAFETY: copied out at once (see restore_peer).
            if let Some(orig) = (unsafe { CONNECTIONS.get(&cookie) }).copied() {
                let key = PeerKey {
                    addr: src,
                    port: u32::from(u16::from_be(sport)),
                    reserved: 0,
                    netns: orig.netns,
                };
                let _ = DNS_PEERS.insert(&key, &orig, 0);
            }
        }
    }
    Ok(PROCEED)
}

fn words_from_be(raw: [u32; 4]) -> [u32; 4] {
    [
        u32::from_be(raw[0]),
        u32::from_be(raw[1]),
        u32::from_be(raw[2]),
        u32::from_be(raw[3]),
    ]
}

// === sock_create: only TCP and UDP inside the enclosure ===

#[cgroup_sock(sock_create)]
pub fn harness_sock_create(ctx: SockContext) -> i32 {
    let sk: *mut bpf_sock = ctx.sock;
    // SAFETY: the kernel hands sock programs a valid bpf_sock for their whole run.
    let (family, sock_type, protocol) = unsafe { ((*sk).family, (*sk).type_, (*sk).protocol) };
    let allowed = match sock_type {
        SOCK_STREAM => protocol == IPPROTO_TCP || protocol == IPPROTO_IP,
        SOCK_DGRAM => protocol == IPPROTO_UDP || protocol == IPPROTO_IP,
        _ => false,
    };
    if allowed {
        return PROCEED;
    }
    let mut who = empty_orig();
    who.family = family as u16;
    fill_caller(&mut who);
    emit(event::SOCKET_REFUSED, sock_type, protocol, NO_RULE, &who);
    REFUSE
}

// === unix sockets: only within the session ===

/// A stream connect to a unix socket (pathname or abstract) that lives in another network
/// namespace than the connecting socket — a service outside the session (docker.sock, the
/// D-Bus system bus, an agent of the user's) — is refused with EPERM. Sockets the session made
/// itself live in its namespace and stay reachable. Runs for sockets created in the enclosure
/// (BPF_LSM_CGROUP takes the cgroup from the hook's first argument, the connecting socket).
#[lsm_cgroup(hook = "unix_stream_connect")]
pub fn harness_unix_connect(ctx: LsmContext) -> i32 {
    // unix_stream_connect(struct sock *sock, struct sock *other, struct sock *newsk): the first
    // two arguments are the kernel's socket pointers, only ever read through
    // bpf_probe_read_kernel.
    let (sock, other): (*const u8, *const u8) = (ctx.arg(0), ctx.arg(1));
    unix_verdict(sock, other)
}

/// The datagram counterpart: `connect` or `sendmsg` of a unix datagram socket to one outside
/// the session (`/dev/log`, `/run/systemd/notify`, …) is refused.
#[lsm_cgroup(hook = "unix_may_send")]
pub fn harness_unix_send(ctx: LsmContext) -> i32 {
    let Ok(config) = config() else {
        return REFUSE;
    };
    // unix_may_send(struct socket *sock, struct socket *other): kernel pointers, read only
    // through bpf_probe_read_kernel.
    let (sock, other): (*const u8, *const u8) = (ctx.arg(0), ctx.arg(1));
    let off = config.socket_sk_offset as usize;
    // SAFETY: probe reads of the `sk` pointers at the offset the daemon read from BTF; a bad
    // read fails and refuses.
    let sks = unsafe {
        (
            bpf_probe_read_kernel(sock.wrapping_add(off) as *const *const u8),
            bpf_probe_read_kernel(other.wrapping_add(off) as *const *const u8),
        )
    };
    match sks {
        (Ok(sk), Ok(other_sk)) => unix_verdict(sk, other_sk),
        _ => REFUSE,
    }
}

/// PROCEED when both sockets share a network namespace, else REFUSE (and report).
#[inline(always)]
fn unix_verdict(sk: *const u8, other: *const u8) -> i32 {
    let Ok(config) = config() else {
        return REFUSE;
    };
    let off = config.sock_net_offset as usize;
    // SAFETY: probe reads of each socket's namespace pointer at the offset the daemon read from
    // the running kernel's BTF; a failed read refuses.
    let nets = unsafe {
        (
            bpf_probe_read_kernel(sk.wrapping_add(off) as *const u64),
            bpf_probe_read_kernel(other.wrapping_add(off) as *const u64),
        )
    };
    match nets {
        (Ok(mine), Ok(theirs)) if mine == theirs && mine != 0 => PROCEED,
        _ => {
            let mut who = empty_orig();
            who.family = AF_UNIX;
            fill_caller(&mut who);
            emit(event::UNIX_REFUSED, 0, 0, NO_RULE, &who);
            REFUSE
        }
    }
}

// === helpers ===

/// The verifier must see the program return exactly 0 or 1, so the outcome becomes a literal
/// here rather than flowing out of a `Result` through the stack.
#[inline(always)]
fn verdict(outcome: Result<i32, i32>) -> i32 {
    match outcome {
        Ok(PROCEED) => PROCEED,
        _ => REFUSE,
    }
}

fn config() -> Result<EnclosureConfig, i32> {
    // An enclosure without configuration must not let anything out: refuse.
    CONFIG.get(CONFIG_INDEX).copied().ok_or(REFUSE)
}

/// The destination the caller gave, as mapped-IPv6 words and a host-order port.
fn read_user_dst(ctx: &SockAddrContext, v6: bool) -> ([u32; 4], u16) {
    let sa: *mut bpf_sock_addr = ctx.sock_addr;
    // SAFETY: valid context; user_ip4/user_ip6/user_port are readable in every sock_addr hook.
    unsafe {
        let port = u16::from_be((*sa).user_port as u16);
        if v6 {
            // Word by word: see try_sockops.
            let raw = [
                core::ptr::read_volatile(&(*sa).user_ip6[0]),
                core::ptr::read_volatile(&(*sa).user_ip6[1]),
                core::ptr::read_volatile(&(*sa).user_ip6[2]),
                core::ptr::read_volatile(&(*sa).user_ip6[3]),
            ];
            (words_from_be(raw), port)
        } else {
            (mapped_v4(u32::from_be((*sa).user_ip4)), port)
        }
    }
}

/// Point the caller at the daemon: for an IPv6 socket aiming at a mapped IPv4 address, the
/// daemon's IPv4 address mapped; for real IPv6, the daemon's IPv6 address.
fn write_user_dst(
    ctx: &SockAddrContext,
    v6: bool,
    orig: &[u32; 4],
    config: &EnclosureConfig,
    port: u16,
) {
    let target = if !v6 || is_mapped_v4(orig) {
        mapped_v4(config.daemon_v4)
    } else {
        config.daemon_v6
    };
    write_user_dst_exact(ctx, v6, &target, port);
}

fn write_user_dst_exact(ctx: &SockAddrContext, v6: bool, addr: &[u32; 4], port: u16) {
    let sa: *mut bpf_sock_addr = ctx.sock_addr;
    // SAFETY: valid context; these fields are writable in connect, sendmsg, recvmsg and
    // getpeername hooks (user_ip4 only in the *4 ones, user_ip6 only in the *6 ones).
    unsafe {
        if v6 {
            // Word by word: see try_sockops.
            core::ptr::write_volatile(&mut (*sa).user_ip6[0], addr[0].to_be());
            core::ptr::write_volatile(&mut (*sa).user_ip6[1], addr[1].to_be());
            core::ptr::write_volatile(&mut (*sa).user_ip6[2], addr[2].to_be());
            core::ptr::write_volatile(&mut (*sa).user_ip6[3], addr[3].to_be());
        } else {
            (*sa).user_ip4 = addr[3].to_be();
        }
        (*sa).user_port = u32::from(port.to_be());
    }
}

fn is_daemon_any_port(config: &EnclosureConfig, addr: &[u32; 4]) -> bool {
    *addr == mapped_v4(config.daemon_v4) || *addr == config.daemon_v6
}

fn is_daemon(config: &EnclosureConfig, addr: &[u32; 4], port: u16) -> bool {
    is_daemon_any_port(config, addr) && (port == config.tcp_port || port == config.dns_port)
}

fn who_asked(ctx: &SockAddrContext, addr: [u32; 4], port: u16, family: u16) -> OrigDst {
    let mut orig = empty_orig();
    orig.addr = addr;
    orig.port = port;
    orig.family = family;
    // SAFETY: valid context; the helper reads the socket's cookie.
    orig.cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    // SAFETY: valid context; the helper reads the network namespace of the socket's owner.
    orig.netns = unsafe { bpf_get_netns_cookie(ctx.sock_addr.cast()) };
    fill_caller(&mut orig);
    orig
}

fn fill_caller(orig: &mut OrigDst) {
    // SAFETY: these helpers only read the current task; always valid in process context.
    unsafe {
        let pid_tgid = bpf_get_current_pid_tgid();
        orig.pid = (pid_tgid >> 32) as u32;
        orig.tid = pid_tgid as u32;
        orig.uid = bpf_get_current_uid_gid() as u32;
        orig.cgroup_id = bpf_get_current_cgroup_id();
    }
}

const fn empty_orig() -> OrigDst {
    OrigDst {
        addr: [0; 4],
        port: 0,
        family: 0,
        pid: 0,
        tid: 0,
        uid: 0,
        cgroup_id: 0,
        cookie: 0,
        netns: 0,
    }
}

/// Policy in the kernel: any matching deny refuses, else any matching allow admits, else the
/// default. Returns the action and the deciding rule's index.
fn decide(config: &EnclosureConfig, addr: &[u32; 4], port: u16) -> (u32, u32) {
    let mut allow_rule = NO_RULE;
    for any_port in [false, true] {
        let key = LearnedKey {
            addr: *addr,
            port: if any_port { 0 } else { u32::from(port) },
        };
        // SAFETY: copied out at once (see restore_peer).
        if let Some(v) = unsafe { LEARNED.get(&key) }.copied() {
            if v.action == ACTION_DENY {
                return (ACTION_DENY, v.rule_index);
            }
            allow_rule = v.rule_index;
        }
    }
    let count = if config.rule_count > RULE_SLOTS {
        RULE_SLOTS
    } else {
        config.rule_count
    };
    let mut i = 0;
    while i < RULE_SLOTS {
        if i >= count {
            break;
        }
        if let Some(rule) = RULES.get(i) {
            if (rule.port == 0 || rule.port == u32::from(port))
                && prefix_matches(addr, &rule.addr, rule.prefix)
            {
                if rule.action == ACTION_DENY {
                    return (ACTION_DENY, rule.rule_index);
                }
                allow_rule = rule.rule_index;
            }
        }
        i += 1;
    }
    if allow_rule != NO_RULE {
        (ACTION_ALLOW, allow_rule)
    } else {
        (config.default_action, NO_RULE)
    }
}

fn report(
    _ctx: &SockAddrContext,
    kind: u32,
    sock_type: u32,
    protocol: u32,
    rule_index: u32,
    orig: &OrigDst,
) {
    emit(kind, sock_type, protocol, rule_index, orig);
}

fn emit(kind: u32, sock_type: u32, protocol: u32, rule_index: u32, dst: &OrigDst) {
    // A full ring buffer loses the report, not the refusal: the connect still fails.
    let _ = EVENTS.output::<KernelEvent>(
        &KernelEvent {
            kind,
            sock_type,
            protocol,
            rule_index,
            dst: *dst,
        },
        0,
    );
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
