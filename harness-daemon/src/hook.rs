//! The kernel side, seen from userspace: load the harness eBPF object, attach its programs to an
//! enclosure cgroup, pin the links, and give the daemon typed access to the maps.
//!
//! Links are pinned in a bpffs so that they outlive the daemon: if the daemon dies, the
//! programs stay attached and keep rewriting connects to the daemon's (now closed) port, so an
//! enclosed process gets `ECONNREFUSED` instead of a direct connection (fail closed). A clean
//! shutdown unpins them.
use crate::enclosure::Enclosure;
use aya::maps::{Array, HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{
    links::{FdLink, PinnedLink},
    CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, CgroupSockAddr, LsmCgroup,
    RawTracePoint, SockOps,
};
use aya::{Ebpf, EbpfLoader};
use harness_common::{
    EnclosureConfig, KernelRule, LearnedKey, LearnedVerdict, OrigDst, PeerKey, ProcessConfig,
    ACTION_DENY, CONFIG_INDEX, MAX_RULES, RELOAD_GATE,
};
use std::collections::{BTreeSet, HashMap as StdHashMap};
use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The compiled eBPF object, built by build.rs (aya-build) for the BPF target.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/harness-ebpf"));

/// Errors from loading or attaching the eBPF side, each naming the program or map.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The object could not be parsed or its maps created.
    #[error("loading the harness eBPF object: {0}")]
    Load(#[source] aya::EbpfError),
    /// The object lacks a program or map the daemon expects (a build mismatch).
    #[error("the harness eBPF object has no {kind} named {name}")]
    Missing {
        /// "program" or "map".
        kind: &'static str,
        /// Its name.
        name: &'static str,
    },
    /// The kernel refused a program (the verifier's message is in the source).
    #[error("eBPF program {program}: {source}")]
    Program {
        /// Program name.
        program: &'static str,
        /// What the kernel said, including the verifier log.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A map operation failed.
    #[error("eBPF map {map}: {source}")]
    Map {
        /// Map name.
        map: &'static str,
        /// The error.
        #[source]
        source: aya::maps::MapError,
    },
    /// Pinning or unpinning a link failed.
    #[error("pinning eBPF link at {path}: {message}")]
    Pin {
        /// The bpffs path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Opening the cgroup or the bpffs failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Attach points, in the order they are attached (the connect hooks last, so that by the time
/// a connect is redirected everything that serves it is in place).
const SOCK_ADDR_PROGRAMS: [&str; 8] = [
    "harness_getpeername4",
    "harness_getpeername6",
    "harness_recvmsg4",
    "harness_recvmsg6",
    "harness_sendmsg4",
    "harness_sendmsg6",
    "harness_connect4",
    "harness_connect6",
];

/// The unix-socket programs (BPF_LSM_CGROUP) and the LSM hooks they attach to.
const UNIX_PROGRAMS: [(&str, &str); 2] = [
    ("harness_unix_connect", "unix_stream_connect"),
    ("harness_unix_send", "unix_may_send"),
];

/// The process programs and the scheduler tracepoints they attach to. Not pinned: they only
/// report, and a session whose engine is gone is killed with it.
const PROCESS_PROGRAMS: [(&str, &str); 3] = [
    ("harness_fork", "sched_process_fork"),
    ("harness_exec", "sched_process_exec"),
    ("harness_exit", "sched_process_exit"),
];

/// What the process programs report through: the ring buffer, and the per-CPU count of the
/// events it had no room for.
pub struct ProcessFeed {
    /// `PROCESSES`: [`harness_common::ProcessEvent`]s and [`harness_common::ExecEvent`]s.
    pub events: RingBuf<MapData>,
    /// `PROCESSES_LOST`.
    pub lost: PerCpuArray<MapData, u64>,
}

/// Whether the BPF LSM is active (listed in `/sys/kernel/security/lsm`): without it, LSM
/// programs attach but never run. securityfs is mounted when the host has not.
pub fn bpf_lsm_active() -> Result<bool, HookError> {
    let dir = Path::new("/sys/kernel/security");
    let list = dir.join("lsm");
    if !list.exists() {
        let _ = nix::mount::mount(
            Some("securityfs"),
            dir,
            Some("securityfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        );
    }
    let text = fs::read_to_string(&list).map_err(|source| HookError::Io {
        path: list.clone(),
        source,
    })?;
    Ok(text.trim().split(',').any(|lsm| lsm == "bpf"))
}

/// The enclosure's eBPF programs, attached and pinned, with the maps the daemon uses.
pub struct Hook {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    unix_guard: Result<(), String>,
    links: Vec<PinnedLink>,
    by_peer: Mutex<HashMap<MapData, PeerKey, OrigDst>>,
    dns_peers: Mutex<HashMap<MapData, PeerKey, OrigDst>>,
    policy: Mutex<KernelPolicy>,
    events: Option<RingBuf<MapData>>,
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
}

/// What the kernel enforces of the policy, behind one lock: a reload and a DNS answer that
/// teaches addresses never interleave.
struct KernelPolicy {
    /// `CONFIG`: `rule_count` and `default_action` are the policy's.
    config: Array<MapData, EnclosureConfig>,
    /// `RULES`: the CIDR rules, `rule_count` of them in use.
    rules: Array<MapData, KernelRule>,
    /// `LEARNED`: what host rules decided for addresses DNS gave.
    learned: HashMap<MapData, LearnedKey, LearnedVerdict>,
    /// Every address DNS gave for each name (normalised), whether a rule spoke of the name or
    /// not, so that a reload can decide them all again under the new rules.
    taught: StdHashMap<String, BTreeSet<IpAddr>>,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hook")
            .field("pin_dir", &self.pin_dir)
            .finish()
    }
}

impl Hook {
    /// Loads the programs, writes `config` and `rules`, attaches everything to `enclosure` and
    /// pins the links under `<bpffs>/harness/<engine>/`. The unix-socket programs (BPF LSM)
    /// are attached when `lsm_btf` is given: the kernel's BTF, which also gave
    /// `config`'s socket offsets.
    pub fn install(
        enclosure: &Enclosure,
        engine: &str,
        config: EnclosureConfig,
        rules: &[KernelRule],
        lsm_btf: Option<&aya::Btf>,
    ) -> Result<Hook, HookError> {
        let pin_dir = pin_dir(engine)?;
        remove_stale_pins(&pin_dir);
        fs::create_dir_all(&pin_dir).map_err(|source| HookError::Io {
            path: pin_dir.clone(),
            source,
        })?;
        let mut ebpf = EbpfLoader::new()
            .load(EBPF_OBJECT)
            .map_err(HookError::Load)?;
        // The eBPF side's own logging (aya-log); absent when the object logs nothing.
        let logger = aya_log::EbpfLogger::init(&mut ebpf).ok();

        let mut config_map: Array<&mut MapData, EnclosureConfig> =
            Array::try_from(ebpf.map_mut("CONFIG").ok_or(HookError::Missing {
                kind: "map",
                name: "CONFIG",
            })?)
            .map_err(|source| HookError::Map {
                map: "CONFIG",
                source,
            })?;
        let mut config = config;
        config.rule_count = rules.len() as u32;
        config_map
            .set(CONFIG_INDEX, config, 0)
            .map_err(|source| HookError::Map {
                map: "CONFIG",
                source,
            })?;
        let mut rules_map: Array<&mut MapData, KernelRule> =
            Array::try_from(ebpf.map_mut("RULES").ok_or(HookError::Missing {
                kind: "map",
                name: "RULES",
            })?)
            .map_err(|source| HookError::Map {
                map: "RULES",
                source,
            })?;
        for (i, rule) in rules.iter().enumerate() {
            rules_map
                .set(i as u32, *rule, 0)
                .map_err(|source| HookError::Map {
                    map: "RULES",
                    source,
                })?;
        }

        let cgroup = fs::File::open(enclosure.path()).map_err(|source| HookError::Io {
            path: enclosure.path().to_owned(),
            source,
        })?;
        let mut links = Vec::new();
        let mut pin = |name: &'static str, link: FdLink| -> Result<(), HookError> {
            let path = pin_dir.join(name);
            let pinned = link.pin(&path).map_err(|e| HookError::Pin {
                path: path.clone(),
                message: e.to_string(),
            })?;
            links.push(pinned);
            Ok(())
        };
        let program_err = |program: &'static str| {
            move |source: aya::programs::ProgramError| HookError::Program { program, source }
        };

        // Load, attach to the enclosure, and pin: the same four steps for every program; only
        // the program type and the attach call differ.
        macro_rules! attach_pinned {
            ($ty:ty, $name:expr, |$prog:ident| $attach:expr) => {{
                let name: &'static str = $name;
                let $prog: &mut $ty = program(&mut ebpf, name)?;
                $prog.load().map_err(program_err(name))?;
                let id = $attach.map_err(program_err(name))?;
                let link = $prog.take_link(id).map_err(program_err(name))?;
                pin(name, link.try_into().map_err(fd_link_err(name))?)?;
            }};
        }
        attach_pinned!(CgroupSock, "harness_sock_create", |prog| prog
            .attach(&cgroup, CgroupAttachMode::Single));
        attach_pinned!(CgroupSkb, "harness_egress", |prog| prog.attach(
            &cgroup,
            CgroupSkbAttachType::Egress,
            CgroupAttachMode::Single
        ));
        attach_pinned!(SockOps, "harness_sockops", |prog| prog
            .attach(&cgroup, CgroupAttachMode::Single));
        // Some kernels refuse BPF LSM programs even to root (seen: EPERM on a vendor 6.18
        // with the BPF LSM listed as active): the engine is told, and says what stays open.
        let mut unix_guard = Err("the BPF LSM is not active".to_owned());
        if let Some(btf) = lsm_btf {
            let mut attach_unix = || -> Result<(), HookError> {
                for (name, hook) in UNIX_PROGRAMS {
                    let prog: &mut LsmCgroup = program(&mut ebpf, name)?;
                    prog.load(hook, btf).map_err(program_err(name))?;
                    let id = prog.attach(&cgroup).map_err(program_err(name))?;
                    let link: FdLink = prog.take_link(id).map_err(program_err(name))?.into();
                    pin(name, link)?;
                }
                Ok(())
            };
            unix_guard = attach_unix().map_err(|e| format!("this kernel refused them: {e}"));
        }
        for name in SOCK_ADDR_PROGRAMS {
            attach_pinned!(CgroupSockAddr, name, |prog| prog
                .attach(&cgroup, CgroupAttachMode::Single));
        }

        let by_peer = take_hash(&mut ebpf, "BY_PEER")?;
        let dns_peers = take_hash(&mut ebpf, "DNS_PEERS")?;
        let learned = take_hash(&mut ebpf, "LEARNED")?;
        let config = take_array(&mut ebpf, "CONFIG")?;
        let rules = take_array(&mut ebpf, "RULES")?;
        let events = RingBuf::try_from(ebpf.take_map("EVENTS").ok_or(HookError::Missing {
            kind: "map",
            name: "EVENTS",
        })?)
        .map_err(|source| HookError::Map {
            map: "EVENTS",
            source,
        })?;
        Ok(Hook {
            ebpf,
            pin_dir,
            unix_guard,
            links,
            by_peer: Mutex::new(by_peer),
            dns_peers: Mutex::new(dns_peers),
            policy: Mutex::new(KernelPolicy {
                config,
                rules,
                learned,
                taught: StdHashMap::new(),
            }),
            events: Some(events),
            logger,
        })
    }

    /// Whether the unix-socket programs (BPF LSM) are attached, or why not.
    pub fn unix_guard(&self) -> Result<(), &str> {
        self.unix_guard.as_ref().map(|_| ()).map_err(String::as_str)
    }

    /// Where the enclosed socket whose local address the daemon sees as `peer`, in the
    /// network namespace `netns`, was really going. The entry is removed: each accepted
    /// connection claims its own.
    pub fn take_orig_dst(&self, peer: SocketAddr, netns: u64) -> Option<OrigDst> {
        let key = peer_key(peer, netns);
        let mut map = self.by_peer.lock().unwrap_or_else(|e| e.into_inner());
        let orig = map.get(&key, 0).ok()?;
        let _ = map.remove(&key);
        Some(orig)
    }

    /// Who sent the DNS datagram that arrived from `peer`. The entry stays: one socket sends
    /// several questions (glibc sends A and AAAA together), and the kernel side rewrites it on
    /// every datagram, so it is never stale.
    pub fn dns_sender(&self, peer: SocketAddr, netns: u64) -> Option<OrigDst> {
        let map = self.dns_peers.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&peer_key(peer, netns), 0).ok()
    }

    /// Tells the kernel what host-name rules decide for `addrs`, which DNS just gave for
    /// `name`. `decide` (the policy in force's [`crate::policy::Policy::learned_for`]) is asked
    /// under the same lock as [`Hook::reload`] takes, so verdicts of a policy that a reload has
    /// replaced are never written after it. The addresses are remembered for the next reload.
    pub fn learn<F>(&self, name: &str, addrs: &[IpAddr], decide: F) -> Result<(), HookError>
    where
        F: FnOnce(&str, &[IpAddr]) -> Vec<(LearnedKey, LearnedVerdict)>,
    {
        let mut kernel = self.policy.lock().unwrap_or_else(|e| e.into_inner());
        kernel
            .taught
            .entry(crate::policy::normalize_host(name))
            .or_default()
            .extend(addrs.iter().map(IpAddr::to_canonical));
        for (key, verdict) in decide(name, addrs) {
            kernel
                .learned
                .insert(key, verdict, 0)
                .map_err(|source| HookError::Map {
                    map: "LEARNED",
                    source,
                })?;
        }
        Ok(())
    }

    /// Puts a new policy in force in the kernel: `program` (its CIDR rules and default) in
    /// `RULES` and `CONFIG`, and what `relearn` (its `learned_for`) decides for every name and
    /// address DNS taught so far in `LEARNED`, replacing what the old rules decided. `swap`
    /// puts the policy in force in userspace; it runs under the lock [`Hook::learn`] takes,
    /// once the kernel's maps hold the new verdicts.
    ///
    /// The order makes sure that no connect is ever let through that neither policy lets
    /// through — not even by a program that reads a map while it is being written (an array
    /// or hash update is a plain copy, and a reader may see half of it):
    ///
    /// 1. a gate — deny every address on every port — goes into the slot `gate` = max(old
    ///    count, new count), which no program reads (each reads the slots below the
    ///    `rule_count` it read, the old count);
    /// 2. `rule_count` becomes `gate + 1`, and we wait until every program run that began
    ///    before has ended: from then on every run meets the gate, and any deny refuses;
    /// 3. behind the gate, the rules below it and every learned verdict are rewritten (torn
    ///    reads of them can only add a deny or an allow that the gate overrides);
    /// 4. `default_action` becomes the new one, still behind the gate;
    /// 5. `rule_count` becomes the new count: only that word changes, so a run reads either
    ///    the gated count or the finished new policy; we wait again, so that no run still
    ///    reads the old count when the next reload writes its gate.
    ///
    /// A connect that comes during the few milliseconds of steps 2–5 is refused (EPERM), and
    /// recorded with the rule index [`RELOAD_GATE`]. If a map write fails after step 2, the
    /// gate stays: every connect is refused until a reload succeeds (fail closed).
    pub fn reload<R, S>(
        &self,
        program: &crate::policy::KernelProgram,
        relearn: R,
        swap: S,
    ) -> Result<(), HookError>
    where
        R: Fn(&str, &[IpAddr]) -> Vec<(LearnedKey, LearnedVerdict)>,
        S: FnOnce(),
    {
        let map_err = |map: &'static str| move |source| HookError::Map { map, source };
        let mut kernel = self.policy.lock().unwrap_or_else(|e| e.into_inner());
        let kernel = &mut *kernel;
        let mut config = kernel
            .config
            .get(&CONFIG_INDEX, 0)
            .map_err(map_err("CONFIG"))?;
        // At most MAX_RULES: `Policy::kernel_rules` checks it.
        let new_count = program.rules.len() as u32;
        // A failed reload may have left the gate in force at MAX_RULES: it is written there
        // again with the same bytes, which no reader can see half-changed.
        let gate = config.rule_count.max(new_count).min(MAX_RULES);
        // 1.
        let deny_all = KernelRule {
            addr: [0; 4],
            prefix: 0,
            port: 0,
            action: ACTION_DENY,
            rule_index: RELOAD_GATE,
        };
        kernel
            .rules
            .set(gate, deny_all, 0)
            .map_err(map_err("RULES"))?;
        // 2.
        config.rule_count = gate + 1;
        kernel
            .config
            .set(CONFIG_INDEX, config, 0)
            .map_err(map_err("CONFIG"))?;
        wait_for_running_programs();
        // 3.
        for (i, rule) in program.rules.iter().enumerate() {
            kernel
                .rules
                .set(i as u32, *rule, 0)
                .map_err(map_err("RULES"))?;
        }
        let stale: Vec<LearnedKey> = kernel.learned.keys().filter_map(Result::ok).collect();
        for key in &stale {
            // Gone already is as good as removed.
            let _ = kernel.learned.remove(key);
        }
        for (name, addrs) in &kernel.taught {
            let addrs: Vec<IpAddr> = addrs.iter().copied().collect();
            for (key, verdict) in relearn(name, &addrs) {
                // As when DNS teaches (resolver.rs): an address the full map cannot take is
                // decided by the CIDR rules and the default, and the daemon still checks its
                // name.
                if let Err(e) = kernel.learned.insert(key, verdict, 0) {
                    tracing::warn!("eBPF map LEARNED: {name}: {e}");
                }
            }
        }
        swap();
        // 4.
        config.default_action = program.default_action;
        kernel
            .config
            .set(CONFIG_INDEX, config, 0)
            .map_err(map_err("CONFIG"))?;
        // 5.
        config.rule_count = new_count;
        kernel
            .config
            .set(CONFIG_INDEX, config, 0)
            .map_err(map_err("CONFIG"))?;
        wait_for_running_programs();
        Ok(())
    }

    /// Starts reporting the forks, execs and exits of enclosed processes: writes `config`,
    /// attaches the process programs, and hands over what they report through (once).
    pub fn watch_processes(&mut self, config: ProcessConfig) -> Result<ProcessFeed, HookError> {
        let ebpf = &mut self.ebpf;
        let mut config_map: Array<&mut MapData, ProcessConfig> =
            Array::try_from(ebpf.map_mut("PROCESS_CONFIG").ok_or(HookError::Missing {
                kind: "map",
                name: "PROCESS_CONFIG",
            })?)
            .map_err(|source| HookError::Map {
                map: "PROCESS_CONFIG",
                source,
            })?;
        config_map
            .set(CONFIG_INDEX, config, 0)
            .map_err(|source| HookError::Map {
                map: "PROCESS_CONFIG",
                source,
            })?;
        let events = RingBuf::try_from(ebpf.take_map("PROCESSES").ok_or(HookError::Missing {
            kind: "map",
            name: "PROCESSES",
        })?)
        .map_err(|source| HookError::Map {
            map: "PROCESSES",
            source,
        })?;
        let lost =
            PerCpuArray::try_from(ebpf.take_map("PROCESSES_LOST").ok_or(HookError::Missing {
                kind: "map",
                name: "PROCESSES_LOST",
            })?)
            .map_err(|source| HookError::Map {
                map: "PROCESSES_LOST",
                source,
            })?;
        for (name, tracepoint) in PROCESS_PROGRAMS {
            let prog: &mut RawTracePoint = program(ebpf, name)?;
            prog.load().map_err(|source| HookError::Program {
                program: name,
                source,
            })?;
            // The link stays owned by the program, which the loaded object keeps until the
            // hook is dropped.
            prog.attach(tracepoint)
                .map_err(|source| HookError::Program {
                    program: name,
                    source,
                })?;
        }
        Ok(ProcessFeed { events, lost })
    }

    /// The ring buffer of kernel refusals (taken once, by the event reader).
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    /// The eBPF side's log reader (taken once, by the engine).
    pub fn take_logger(&mut self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        self.logger.take()
    }

    /// Detaches everything: unpins the links (dropping them detaches the programs).
    pub fn uninstall(self) {
        for link in self.links {
            let _ = link.unpin();
        }
        let _ = fs::remove_dir(&self.pin_dir);
    }
}

/// The map key for a peer address in a session's namespace: IPv4 mapped into IPv6,
/// host-order words.
pub fn peer_key(peer: SocketAddr, netns: u64) -> PeerKey {
    PeerKey {
        addr: ip_words(peer.ip()),
        port: u32::from(peer.port()),
        reserved: 0,
        netns,
    }
}

/// An address as four host-order words of its (IPv4-mapped) IPv6 form.
pub fn ip_words(ip: IpAddr) -> [u32; 4] {
    let v6 = match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    let n = u128::from(v6);
    [
        (n >> 96) as u32,
        (n >> 64) as u32,
        (n >> 32) as u32,
        n as u32,
    ]
}

/// The address held in host-order words, IPv4-mapped addresses given back as IPv4.
pub fn words_ip(words: [u32; 4]) -> IpAddr {
    let n = (u128::from(words[0]) << 96)
        | (u128::from(words[1]) << 64)
        | (u128::from(words[2]) << 32)
        | u128::from(words[3]);
    let v6 = std::net::Ipv6Addr::from(n);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, HookError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(HookError::Missing {
            kind: "program",
            name,
        })?
        .try_into()
        .map_err(|source| HookError::Program {
            program: name,
            source,
        })
}

fn fd_link_err(program: &'static str) -> impl Fn(aya::programs::links::LinkError) -> HookError {
    move |e| HookError::Pin {
        path: PathBuf::from(program),
        message: format!("link of {program} is not an fd link (kernel too old for bpf_link?): {e}"),
    }
}

fn take_array<V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<Array<MapData, V>, HookError> {
    Array::try_from(
        ebpf.take_map(name)
            .ok_or(HookError::Missing { kind: "map", name })?,
    )
    .map_err(|source| HookError::Map { map: name, source })
}

/// Returns once every eBPF program run that began before the call has ended. The enclosure's
/// programs run inside an RCU read-side section, and `membarrier(MEMBARRIER_CMD_GLOBAL)`
/// returns only after `synchronize_rcu()`. Where the kernel refuses it (`nohz_full` CPUs), a
/// pause a thousand times longer than a program run (microseconds) stands in for it.
fn wait_for_running_programs() {
    const MEMBARRIER_CMD_GLOBAL: libc::c_int = 1;
    // SAFETY: membarrier takes two integers and no memory; it only waits.
    let done = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if done != 0 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn take_hash<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<HashMap<MapData, K, V>, HookError> {
    HashMap::try_from(
        ebpf.take_map(name)
            .ok_or(HookError::Missing { kind: "map", name })?,
    )
    .map_err(|source| HookError::Map { map: name, source })
}

/// A mounted bpffs, mounting one at /sys/fs/bpf when the host has none (as systemd would).
fn bpffs() -> Result<PathBuf, HookError> {
    let mounted = crate::enclosure::mount_point("bpf").map_err(|source| HookError::Io {
        path: PathBuf::from(crate::enclosure::MOUNTINFO),
        source,
    })?;
    if let Some(mount_point) = mounted {
        return Ok(mount_point);
    }
    let target = PathBuf::from("/sys/fs/bpf");
    fs::create_dir_all(&target).map_err(|source| HookError::Io {
        path: target.clone(),
        source,
    })?;
    nix::mount::mount(
        Some("bpf"),
        &target,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| HookError::Io {
        path: target.clone(),
        source: std::io::Error::from(e),
    })?;
    Ok(target)
}

fn pin_dir(engine: &str) -> Result<PathBuf, HookError> {
    Ok(bpffs()?.join("harness").join(engine))
}

/// Detaches what a dead engine left pinned, and its pin directory. Its sessions must be gone
/// first: detaching lets whatever is still in its enclosure out.
pub fn remove_pins(engine: &str) -> Result<(), HookError> {
    let dir = pin_dir(engine)?;
    remove_stale_pins(&dir);
    let _ = fs::remove_dir(&dir);
    Ok(())
}

/// Links pinned by an engine of the same name that died: unpinning detaches them, so the new
/// programs can be attached in `Single` mode.
fn remove_stale_pins(pin_dir: &Path) {
    let Ok(entries) = fs::read_dir(pin_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match PinnedLink::from_pin(&path) {
            Ok(link) => {
                let _ = link.unpin();
            }
            Err(_) => {
                let _ = fs::remove_file(&path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_through_words() {
        for ip in ["127.0.0.1", "::1", "2001:db8::7", "::ffff:10.1.2.3"] {
            let ip: IpAddr = ip.parse().unwrap();
            let back = words_ip(ip_words(ip));
            assert_eq!(back, ip.to_canonical());
        }
        assert_eq!(
            ip_words("127.0.0.1".parse().unwrap()),
            harness_common::mapped_v4(0x7f00_0001)
        );
    }
}
