//! The one place that composes the stages, in the order the data flows:
//! hook (kernel) → accept/orig-dst → session → policy → ledger → forward;
//! and for DNS: resolver → policy → ledger; and kernel refusals → ledger.
use crate::accept::{self, AcceptFailures, Redirected, Unattributed};
use crate::enclosure::{Enclosure, EnclosureError, EngineLock};
use crate::hook::{ip_words, Hook, HookError};
use crate::http::Version;
use crate::intercept::{self, InterceptError, Interceptor};
use crate::ledger::{
    ConnClose, ConnDenied, ConnOpen, Entry, ErrorEntry, Ledger, LedgerError, PolicyChange,
    SessionClose, SessionOpen,
};
use crate::limits::{self, Limits};
use crate::netns::{self, Dialer, NetnsError, NetnsListeners, Reach, SessionNetns};
use crate::policy::{Action, ConnPolicy, Policy, PolicyError, PolicyHandle};
use crate::record::{recording_relay, ConnRecorder, Counted, Counts};
use crate::resolver;
use crate::session::{Names, Session, Sessions};
use crate::sniff::{self, Kind, Sniffed};
use crate::tls::{CaError, HarnessCa, LeafMinter, ServerConfigs, TrustBundle, TrustError};
use harness_common::{
    event, EnclosureConfig, KernelEvent, DAEMON_DNS_PORT, DAEMON_TCP_PORT, NO_RULE, RELOAD_GATE,
};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::unix::AsyncFd;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// Errors starting or running the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// cgroup trouble.
    #[error(transparent)]
    Enclosure(#[from] EnclosureError),
    /// eBPF trouble.
    #[error(transparent)]
    Hook(#[from] HookError),
    /// Ledger trouble.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The policy cannot be enforced.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The harness CA could not be loaded or created.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The enclosure's trust bundle could not be built.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// TLS interception could not be set up.
    #[error(transparent)]
    Intercept(#[from] InterceptError),
    /// Binding the daemon's listeners failed.
    #[error("binding the daemon's loopback listeners: {0}")]
    Listen(#[source] std::io::Error),
    /// `--require-full-isolation` and this kernel leaves a class of escape open.
    #[error("--require-full-isolation: {0}")]
    Incomplete(String),
    /// A session's network namespace could not be made.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A new policy could not be put in force.
    #[error("reloading the policy: {0}")]
    Reload(String),
}

/// What [`Engine::reload_policy`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The new policy has the bytes of the one in force: nothing changed, nothing recorded.
    Unchanged {
        /// SHA-256 (hex) of the policy in force.
        sha256: String,
    },
    /// The new policy is in force, and open sessions recorded `policy_change`.
    Changed {
        /// SHA-256 (hex) of the policy now in force.
        sha256: String,
        /// SHA-256 (hex) of the policy it replaced.
        previous_sha256: String,
        /// Sessions whose `policy_change` is durable.
        sessions: usize,
        /// Sessions whose ledger refused it, each `session <id>: <reason>`.
        unrecorded: Vec<String>,
    },
}

/// What an engine needs to start.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Engine name: its enclosure is `<cgroup2>/harness/<name>`, its pins `<bpffs>/harness/<name>`.
    pub name: String,
    /// Where sessions are recorded.
    pub ledger: Ledger,
    /// What may be reached, when the engine starts ([`Engine::reload_policy`] replaces it; the
    /// policy in force is [`Engine::policy`]).
    pub policy: Arc<Policy>,
    /// Send every DNS question here instead of to the server the enclosed process addressed.
    pub dns_upstream: Option<SocketAddr>,
    /// TLS interception; `None` forwards TLS as recorded bytes it cannot read.
    pub tls: Option<TlsSetup>,
    /// Refuse to start when this kernel leaves any class of escape open (see [`Isolation`]).
    pub require_full_isolation: bool,
}

/// The class of escape left open where the unix-socket programs cannot run.
pub const UNIX_OPEN: &str =
    "pathname unix sockets of services outside the enclosure stay reachable";

/// What this kernel lets the enclosure refuse, found at engine start. Every class the
/// enclosure closes by namespaces, seccomp and cgroup programs is closed on every kernel
/// harness runs on (≥ 6.1); only unix sockets outside the session need the BPF LSM.
pub struct Isolation {
    /// The kernel's BTF, when the unix-socket programs can run.
    btf: Option<aya::Btf>,
    /// The socket field offsets those programs need.
    unix_offsets: Option<crate::btf::SocketOffsets>,
    /// Classes of escape left open, each with the reason.
    pub open: Vec<String>,
}

impl Isolation {
    /// Looks at the running kernel.
    pub fn probe() -> Isolation {
        let mut open = Vec::new();
        let lsm = match crate::hook::bpf_lsm_active() {
            Ok(true) => Ok(()),
            Ok(false) => {
                Err("the BPF LSM is not active (add `bpf` to the kernel's lsm= list)".to_owned())
            }
            Err(e) => Err(format!("cannot tell whether the BPF LSM is active: {e}")),
        };
        let loaded = lsm.and_then(|()| {
            let types = crate::btf::Types::vmlinux().map_err(|e| e.to_string())?;
            let offsets =
                crate::btf::SocketOffsets::from_types(&types).map_err(|e| e.to_string())?;
            let btf = aya::Btf::from_sys_fs().map_err(|e| format!("reading kernel BTF: {e}"))?;
            Ok((btf, offsets))
        });
        let (btf, unix_offsets) = match loaded {
            Ok((btf, offsets)) => (Some(btf), Some(offsets)),
            Err(reason) => {
                open.push(format!("{UNIX_OPEN}: {reason}"));
                (None, None)
            }
        };
        Isolation {
            btf,
            unix_offsets,
            open,
        }
    }

    /// Says what is left open (a warning), and refuses when full isolation is required.
    fn check(&self, required: bool) -> Result<(), EngineError> {
        for class in &self.open {
            warn!("enclosure is not complete on this kernel: {class}");
        }
        if required && !self.open.is_empty() {
            return Err(EngineError::Incomplete(self.open.join("; ")));
        }
        Ok(())
    }
}

/// Where TLS interception keeps its CA and trust bundle, and whom it trusts upstream.
#[derive(Debug, Clone)]
pub struct TlsSetup {
    /// Directory of the harness CA (`ca.pem`, `ca-key.pem`).
    pub ca_dir: PathBuf,
    /// Where to write the enclosure's trust bundle (system roots + harness CA).
    pub bundle: PathBuf,
    /// Extra roots for verifying destinations (`--upstream-ca`).
    pub upstream_roots: Vec<PathBuf>,
}

/// Default directory of the harness CA.
pub const DEFAULT_CA_DIR: &str = "/var/lib/harness/ca";

/// What `open_session` needs from the caller.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    /// Command and arguments.
    pub command: Vec<String>,
    /// User and group it runs as.
    pub uid: u32,
    /// Group id it runs as.
    pub gid: u32,
}

/// A running engine: listeners, eBPF hook, sessions.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    _lock: EngineLock,
    pub(crate) config: EngineConfig,
    pub(crate) enclosure: Enclosure,
    pub(crate) hook: Hook,
    pub(crate) sessions: Sessions,
    /// The policy in force, read at each decision.
    pub(crate) policy: Arc<PolicyHandle>,
    /// Held to open a session, and exclusively to reload the policy: a session is either open
    /// when a reload records `policy_change` in it, or opens under the new policy.
    reloading: tokio::sync::RwLock<()>,
    pub(crate) names: Names,
    pub(crate) daemon_addrs: [SocketAddr; 4],
    /// Resolvers whose answers are believed (they teach host rules addresses): the host's own
    /// and `--dns-upstream`.
    pub(crate) trusted_resolvers: Vec<SocketAddr>,
    interceptor: Option<Interceptor>,
    trust: Option<(TrustBundle, String)>,
    stop: CancellationToken,
    tasks: TaskTracker,
    /// Connections all sessions together may hold: what the open-file limit leaves once the
    /// ledger's own files are set aside ([`FD_RESERVE`]).
    fd_budget: Arc<Semaphore>,
    /// Requests of every session held for a person (`ask` rules), for `harness pending` and
    /// `harness decide`.
    pub(crate) asks: Arc<crate::govern::Asks>,
}

/// Descriptors kept for everything but connections: ledger files, checkpoints, blobs, session
/// namespaces and listeners, the control socket.
const FD_RESERVE: u64 = 1024;

/// Descriptors one connection may hold (the enclosed process's end, the destination's, and one
/// spare for a dial from inside the session's namespace).
const FDS_PER_CONNECTION: u64 = 3;

/// How many connections an open-file limit of `fds` leaves room for, the ledger's reserve set
/// aside ([`FD_RESERVE`], or a quarter of a limit too low for it: a host whose hard limit is
/// 1,024 still serves 256 connections).
fn connection_budget(fds: u64) -> u64 {
    let reserve = FD_RESERVE.min(fds / 4);
    fds.saturating_sub(reserve) / FDS_PER_CONNECTION
}

impl Engine {
    /// Binds the listeners, creates the enclosure, installs the eBPF programs and starts serving.
    pub async fn start(config: EngineConfig) -> Result<Engine, EngineError> {
        let kernel = config.policy.kernel_rules()?;
        let fds = match limits::raise_fd_limit() {
            Ok((before, after)) => {
                debug!("open-file limit: {before} raised to {after}");
                after
            }
            Err((e, limit)) => {
                warn!("raising the open-file limit (staying at {limit}): {e}");
                limit
            }
        };
        let fd_budget = connection_budget(fds);
        let (interceptor, trust) = match &config.tls {
            Some(setup) => {
                let ca = HarnessCa::load_or_create(&setup.ca_dir)?;
                let fingerprint = ca.fingerprint_sha256_hex();
                if let Some(dir) = setup.bundle.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        EngineError::Listen(std::io::Error::new(
                            e.kind(),
                            format!("{}: {e}", dir.display()),
                        ))
                    })?;
                }
                let bundle = TrustBundle::build(ca.certificate_pem(), &setup.bundle)?;
                let configs = ServerConfigs::new(Arc::new(LeafMinter::new(ca)))
                    .map_err(InterceptError::from)?;
                let interceptor = Interceptor::new(configs, &setup.upstream_roots)?;
                (Some(interceptor), Some((bundle, fingerprint)))
            }
            None => (None, None),
        };
        let lock = EngineLock::take(&config.name)?;
        reap_dead_engines(&config.name).await;
        recover_abandoned_sessions(&config.ledger).await;
        netns::remove_mounts(&config.name);
        let enclosure = Enclosure::create(&config.name)?;
        let orphans = enclosure.reap_orphans().await?;
        if orphans > 0 {
            warn!(
                "killed {orphans} session(s) left by a previous engine {}",
                config.name
            );
        }
        let mut kernel_config = EnclosureConfig {
            daemon_v4: u32::from(Ipv4Addr::LOCALHOST),
            tcp_port: DAEMON_TCP_PORT,
            dns_port: DAEMON_DNS_PORT,
            daemon_v6: ip_words(Ipv6Addr::LOCALHOST.into()),
            default_action: kernel.default_action,
            rule_count: 0,
            sock_net_offset: 0,
            socket_sk_offset: 0,
        };
        let mut isolation = Isolation::probe();
        if let Some(offsets) = isolation.unix_offsets {
            kernel_config.sock_net_offset = offsets.sock_net;
            kernel_config.socket_sk_offset = offsets.socket_sk;
        }
        let mut hook = match Hook::install(
            &enclosure,
            &config.name,
            kernel_config,
            &kernel.rules,
            isolation.btf.as_ref(),
        ) {
            Ok(hook) => hook,
            Err(e) => {
                let _ = enclosure.remove();
                return Err(e.into());
            }
        };
        if isolation.btf.is_some() {
            if let Err(reason) = hook.unix_guard() {
                isolation
                    .open
                    .push(format!("{UNIX_OPEN}: BPF LSM programs: {reason}"));
            }
        }
        if let Err(e) = isolation.check(config.require_full_isolation) {
            hook.uninstall();
            let _ = enclosure.remove();
            return Err(e);
        }
        let processes = watch_processes(&enclosure, &mut hook);
        let events = hook.take_events();
        let logger = hook.take_logger();
        let daemon_addrs = [
            SocketAddr::from((Ipv4Addr::LOCALHOST, DAEMON_TCP_PORT)),
            SocketAddr::from((Ipv6Addr::LOCALHOST, DAEMON_TCP_PORT)),
            SocketAddr::from((Ipv4Addr::LOCALHOST, DAEMON_DNS_PORT)),
            SocketAddr::from((Ipv6Addr::LOCALHOST, DAEMON_DNS_PORT)),
        ];
        let mut trusted_resolvers = resolver::host_resolvers(
            &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        );
        trusted_resolvers.extend(config.dns_upstream);
        let engine = Engine {
            inner: Arc::new(Inner {
                _lock: lock,
                trusted_resolvers,
                policy: Arc::new(PolicyHandle::new(config.policy.clone())),
                reloading: tokio::sync::RwLock::new(()),
                config,
                enclosure,
                hook,
                sessions: Sessions::default(),
                names: Names::default(),
                daemon_addrs,
                interceptor,
                trust,
                stop: CancellationToken::new(),
                tasks: TaskTracker::new(),
                fd_budget: Arc::new(Semaphore::new(fd_budget as usize)),
                asks: Arc::default(),
            }),
        };
        if let Some(events) = events {
            engine.spawn(engine.clone().kernel_events(events));
        }
        if let Some(logger) = logger {
            engine.spawn(ebpf_log(logger));
        }
        if let Some(feed) = processes {
            engine.spawn(engine.clone().process_reports(feed));
        }
        Ok(engine)
    }

    /// The trust bundle enclosed processes are given, when TLS is intercepted.
    pub fn trust_bundle(&self) -> Option<&TrustBundle> {
        self.inner.trust.as_ref().map(|(bundle, _)| bundle)
    }

    /// Requests of every session held for a person.
    pub fn asks(&self) -> &Arc<crate::govern::Asks> {
        &self.inner.asks
    }

    /// The engine's name.
    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    /// The enclosure cgroup.
    pub fn enclosure(&self) -> &Enclosure {
        &self.inner.enclosure
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.inner.policy.current()
    }

    /// Puts `new` in force: in the kernel (rules, default and the verdicts learned from DNS,
    /// decided again by the new rules: [`Hook::reload`] says in which order, and why no connect
    /// gets through that neither policy lets through), then for every decision the daemon
    /// makes — the next request of a connection already open included. Each open session then
    /// records a durable `policy_change`; a session opened meanwhile waits, and opens under
    /// `new`. A policy with the same bytes as the one in force changes nothing and records
    /// nothing.
    pub async fn reload_policy(&self, new: Policy) -> Result<Reloaded, EngineError> {
        let _no_session_opens = self.inner.reloading.write().await;
        let old = self.inner.policy.current();
        if old.sha256_hex() == new.sha256_hex() {
            return Ok(Reloaded::Unchanged {
                sha256: old.sha256_hex(),
            });
        }
        let program = new.kernel_rules()?;
        let new = Arc::new(new);
        let inner = self.inner.clone();
        let put = new.clone();
        // The kernel waits out running eBPF programs (an RCU grace period): off the runtime.
        let reloaded = tokio::task::spawn_blocking(move || {
            let decide = |name: &str, addrs: &[std::net::IpAddr]| put.learned_for(name, addrs);
            let swap = || {
                inner.policy.replace(put.clone());
            };
            inner.hook.reload(&program, decide, swap)
        })
        .await
        .map_err(|e| EngineError::Reload(format!("the reload task failed: {e}")))?;
        reloaded.map_err(|e| {
            EngineError::Reload(format!(
                "{}: {e}; the kernel refuses every connection of the enclosure until a reload \
                 succeeds",
                new.origin()
            ))
        })?;
        let change = PolicyChange {
            sha256: new.sha256_hex(),
            previous_sha256: old.sha256_hex(),
            origin: new.origin().to_owned(),
        };
        let sessions = self.inner.sessions.all();
        let appended = futures_util::future::join_all(sessions.iter().map(|session| {
            let entry = Entry::PolicyChange(change.clone());
            async move {
                (
                    session.writer.id().to_string(),
                    session.writer.append(entry).await,
                )
            }
        }))
        .await;
        let mut unrecorded = Vec::new();
        for (id, result) in appended {
            if let Err(e) = result {
                unrecorded.push(format!("session {id}: {e}"));
            }
        }
        Ok(Reloaded::Changed {
            sha256: change.sha256,
            previous_sha256: change.previous_sha256,
            sessions: sessions.len() - unrecorded.len(),
            unrecorded,
        })
    }

    /// Creates a session: its cgroup under the enclosure and its ledger file, whose first entry
    /// (`session_open`) is durable before this returns.
    pub async fn open_session(&self, spec: SessionSpec) -> Result<Arc<Session>, EngineError> {
        let name = ulid::Ulid::new().to_string();
        let _not_reloading = self.inner.reloading.read().await;
        let policy = self.inner.policy.current();
        let (netns, listeners) = SessionNetns::create()?;
        let cgroup = self.inner.enclosure.create_session(&name)?;
        let ledger = &self.inner.config.ledger;
        let open = SessionOpen {
            command: crate::argv::redact_all(ledger, &spec.command),
            uid: spec.uid,
            gid: spec.gid,
            cgroup: cgroup.path().display().to_string(),
            policy_sha256: policy.sha256_hex(),
            ca_fingerprint: self.inner.trust.as_ref().map(|(_, fp)| fp.clone()),
            software: format!("harness {}", env!("CARGO_PKG_VERSION")),
            hostname: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        let writer = match self.inner.config.ledger.open_session(open).await {
            Ok((writer, _durable)) => writer,
            Err(e) => {
                let _ = cgroup.kill_and_remove().await;
                return Err(e.into());
            }
        };
        let session = Arc::new(Session::new(
            writer,
            cgroup,
            netns,
            policy.limits().connections,
            self.inner.asks.clone(),
        ));
        self.inner.sessions.insert(session.clone());
        self.serve_session(&session, listeners)
            .map_err(EngineError::Listen)?;
        Ok(session)
    }

    /// Starts the daemon's side of a session: its listeners, inside its network namespace,
    /// accept and resolve until the session closes.
    fn serve_session(
        &self,
        session: &Arc<Session>,
        listeners: NetnsListeners,
    ) -> std::io::Result<()> {
        let NetnsListeners {
            tcp_v4,
            tcp_v6,
            dns_v4,
            dns_v6,
        } = listeners;
        for listener in [tcp_v4, tcp_v6] {
            let listener = TcpListener::from_std(listener)?;
            let task = self.clone().accept_loop(session.clone(), listener);
            self.spawn_for(session, task);
        }
        for socket in [dns_v4, dns_v6] {
            let socket = Arc::new(tokio::net::UdpSocket::from_std(socket)?);
            let task = resolver::serve(self.inner.clone(), session.clone(), socket);
            self.spawn_for(session, task);
        }
        Ok(())
    }

    /// Runs `task` until it ends, the session closes or the engine stops.
    fn spawn_for<F: std::future::Future<Output = ()> + Send + 'static>(
        &self,
        session: &Session,
        task: F,
    ) {
        let stop = self.inner.stop.clone();
        let closing = session.closing.clone();
        session.tasks.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = closing.cancelled() => {}
                () = task => {}
            }
        });
    }

    /// Ends a session: kills what is left in its cgroup, ends its connections (each records its
    /// close), writes `session_close` and removes the cgroup.
    pub async fn close_session(
        &self,
        session: &Session,
        close: SessionClose,
    ) -> Result<(), EngineError> {
        let killed = session.cgroup.kill_and_remove().await;
        session.closing.cancel();
        session.tasks.close();
        session.tasks.wait().await;
        self.inner.sessions.remove(session.cgroup.id());
        session.writer.close(close).await?;
        killed?;
        Ok(())
    }

    /// Stops serving, detaches the eBPF programs and removes the enclosure. Sessions still
    /// open are closed first (their processes killed): detaching the programs while enclosed
    /// processes live would let them out.
    pub async fn shutdown(self) -> Result<(), EngineError> {
        let mut still_enclosed = None;
        for session in self.inner.sessions.all() {
            let close = SessionClose::because("the engine shut down");
            if let Err(e) = self.close_session(&session, close).await {
                still_enclosed = Some(e);
            }
        }
        self.inner.stop.cancel();
        if let Some(e) = still_enclosed {
            // Processes survived: leave the programs pinned so they stay enclosed (and their
            // connects keep failing) rather than detach and let them out.
            return Err(e);
        }
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        if let Some((bundle, _)) = &self.inner.trust {
            // Made for this engine alone, which is ending (its stop is cancelled for every
            // clone): removed here, not only by whoever holds the last clone, which may be a
            // task a moment from its end (the lifecycle test saw the file outlive its engine
            // about once in six runs). An enclosure still using it holds it by its bind mount.
            if let Err(e) = std::fs::remove_file(bundle.path()) {
                warn!("removing the trust bundle {}: {e}", bundle.path().display());
            }
        }
        let inner = match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner,
            Err(_) => return Ok(()), // a clone is still alive; it owns the teardown
        };
        inner.hook.uninstall();
        inner.enclosure.remove()?;
        Ok(())
    }

    fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(&self, task: F) {
        let stop = self.inner.stop.clone();
        self.inner.tasks.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = task => {}
            }
        });
    }

    // === TCP: accept → orig-dst → session → policy → ledger → forward ===

    async fn accept_loop(self, session: Arc<Session>, listener: TcpListener) {
        let netns = session.netns.cookie();
        let mut failing = AcceptFailures::default();
        loop {
            let (client, peer) = match listener.accept().await {
                Ok(accepted) => {
                    failing.recovered();
                    accepted
                }
                Err(e) => {
                    // Out of descriptors or memory: the connection waits in the backlog, and
                    // accepting again at once would only fail again (and log it) in a loop.
                    let pause = failing.failed(&e, &session.writer).await;
                    tokio::time::sleep(pause).await;
                    continue;
                }
            };
            // Released bytes go out at once: a response head and its first SSE event are
            // separate small writes, which Nagle's algorithm would hold for the client's
            // delayed ACK (~40 ms).
            let _ = client.set_nodelay(true);
            match accept::recover(&self.inner.hook, client, peer, netns) {
                Ok(redirected) => self.admit(&session, redirected),
                Err(unattributed) => self.refuse_unattributed(&session, unattributed),
            }
        }
    }

    fn admit(&self, session: &Arc<Session>, conn: Redirected) {
        if conn.caller.cgroup_id != session.cgroup.id() {
            // Only the session's own processes live in its namespace; a caller from another
            // cgroup means something we do not understand: it gets nothing.
            self.refuse_unattributed(
                session,
                Unattributed {
                    client: conn.client,
                    peer: conn.peer,
                },
            );
            return;
        }
        // Both permits are held until the connection ends.
        let permits = match (
            session.connections.clone().try_acquire_owned(),
            self.inner.fd_budget.clone().try_acquire_owned(),
        ) {
            (Ok(session_permit), Ok(fd_permit)) => (session_permit, fd_permit),
            (Err(_), _) => {
                let reason = format!(
                    "the session already has {} connections open (limits.connections)",
                    session.connections_limit()
                );
                return self.refuse_over_limit(session, conn, reason);
            }
            (_, Err(_)) => {
                let reason = "harness is out of file descriptors for more connections (every session together)".to_owned();
                return self.refuse_over_limit(session, conn, reason);
            }
        };
        let session = session.clone();
        let engine = self.clone();
        let closing = session.closing.clone();
        let tasks = session.tasks.clone();
        tasks.spawn(async move {
            let _permits = permits;
            tokio::select! {
                () = engine.serve(&session, conn) => {}
                () = closing.cancelled() => {}
            }
        });
    }

    /// Refuses a connection a limit does not leave room for: reset at once (refused, to the
    /// client), recorded as `conn_denied`.
    fn refuse_over_limit(&self, session: &Arc<Session>, conn: Redirected, reason: String) {
        let number = session.next_number();
        let host = self.inner.names.name_of(conn.dst.ip());
        let entry = denied_by_daemon(number, &conn, host, reason);
        crate::record::reset_on_close(std::os::fd::AsRawFd::as_raw_fd(&conn.client));
        drop(conn.client);
        let writer = session.writer.clone();
        session.tasks.spawn(async move {
            let _ = writer.append(entry).await;
        });
    }

    fn refuse_unattributed(&self, session: &Session, conn: Unattributed) {
        drop(conn.client);
        let entry = Entry::Error(ErrorEntry {
            conn: None,
            context: format!("accepting connection from {}", conn.peer),
            message: "original destination not recoverable; connection closed, not forwarded"
                .into(),
        });
        let writer = session.writer.clone();
        session.tasks.spawn(async move {
            let _ = writer.append(entry).await;
        });
    }

    async fn serve(&self, session: &Session, conn: Redirected) {
        let number = session.next_number();
        let host = self.inner.names.name_of(conn.dst.ip());
        let reach = netns::reach(conn.dst.ip());
        let decision = if self.inner.daemon_addrs.contains(&conn.dst) {
            Err("loop: destination is the harness daemon itself".to_owned())
        } else if reach == Reach::HostLocal {
            Err(format!(
                "{} is an address of this host: services outside the enclosure are not reachable from it",
                conn.dst.ip()
            ))
        } else {
            let d = self
                .inner
                .policy
                .current()
                .decide(conn.dst, host.as_deref());
            match d.action {
                Action::Allow => Ok(d.rule),
                Action::Deny => Err(d.reason),
            }
        };
        let rule = match decision {
            Ok(rule) => rule,
            Err(reason) => {
                // Reset, not closed: to the client a refused destination looks refused.
                crate::record::reset_on_close(std::os::fd::AsRawFd::as_raw_fd(&conn.client));
                let entry = denied_by_daemon(number, &conn, host, reason);
                drop(conn.client);
                let _ = session.writer.append(entry).await;
                return;
            }
        };
        // Recorded before anything is forwarded: if the ledger cannot take the entry, the
        // destination is never contacted.
        let opened = session
            .writer
            .append(Entry::ConnOpen(ConnOpen {
                conn: number,
                proto: "tcp".into(),
                dst: conn.dst,
                host,
                src: conn.peer,
                caller: conn.caller,
                rule,
            }))
            .await;
        if let Err(e) = opened {
            warn!(
                "ledger refused conn_open for {}: {e}; connection closed",
                conn.dst
            );
            return;
        }
        let started = Instant::now();
        let counts = Arc::new(Counts::default());
        let client = Counted::resettable(conn.client, counts.clone());
        let rec = ConnRecorder::new(
            session.writer.clone(),
            number,
            session.tasks.clone(),
            session.closing.clone(),
            counts.clone(),
        );
        let dialer = match reach {
            Reach::Session => Dialer::inside(session.netns.clone()),
            _ => Dialer::host(),
        };
        let limits = *self.inner.policy.current().limits();
        let forwarded = async {
            let result = self
                .forward(client, conn.dst, &dialer, rec.clone(), &limits, session)
                .await;
            // An upgraded exchange (WebSocket) goes on after the HTTP stage hands it over: the
            // connection ends when its relay does.
            rec.upgrades_finished().await;
            result
        };
        let idle = async {
            limits::idle(&counts, limits.idle).await;
            // Reset, not closed: a response cut by silence must not pass for a complete one.
            rec.cut();
            rec.abort_upgrades();
        };
        let result = tokio::select! {
            result = forwarded => result,
            () = idle => {
                rec.upgrades_finished().await;
                Err(limits.idle_timeout().to_string())
            }
        };
        let close = ConnClose {
            conn: number,
            bytes_up: counts.up.load(Ordering::Relaxed),
            bytes_down: counts.down.load(Ordering::Relaxed),
            duration_ms: started.elapsed().as_millis() as u64,
            error: result.err(),
            client_tls_end: counts.tls.client.recorded(),
            upstream_tls_end: counts.tls.upstream.recorded(),
        };
        if let Err(e) = session.writer.append(Entry::ConnClose(close)).await {
            warn!("ledger refused conn_close: {e}");
        }
    }

    /// Sniffs what the client speaks and hands the connection to the stage that understands it:
    /// TLS interception, plain HTTP, or a recording byte relay.
    async fn forward(
        &self,
        client: Counted<TcpStream>,
        dst: SocketAddr,
        dialer: &Dialer,
        rec: ConnRecorder,
        limits: &Limits,
        session: &Session,
    ) -> Result<(), String> {
        // A destination that cannot be reached resets the client's connection: to it that
        // looks like the refusal it would have had directly, not a clean end.
        let reach = |rec: &ConnRecorder| {
            let rec = rec.clone();
            let limit = limits.connect;
            async move {
                let connected = match Limits::within(
                    limit,
                    "connect_seconds",
                    "the destination neither accepted nor refused the connection",
                    dialer.connect(dst),
                )
                .await
                {
                    Ok(connected) => connected,
                    Err(timed_out) => Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        timed_out.to_string(),
                    )),
                };
                if connected.is_err() {
                    rec.cut();
                }
                connected
            }
        };
        let destination = sniff::Destination::Connect(reach(&rec));
        let sniffed = sniff::sniff(client, destination, limits.handshake).await;
        let (kind, client, connected) = match sniffed {
            Ok(Sniffed::Client {
                kind,
                client,
                upstream,
            }) => (kind, client, upstream),
            Ok(Sniffed::Server { client, upstream }) => {
                // A protocol in which the server speaks first (SSH, SMTP…): recorded bytes.
                return recording_relay(client, upstream, &rec).await;
            }
            Err(e) => return Err(e.to_string()),
        };
        let mut policy =
            ConnPolicy::current(self.inner.policy.clone(), dst).governed(session.governor.clone());
        if let Some(name) = self.inner.names.name_of(dst.ip()) {
            policy = policy.with_name(&name);
        }
        if let (Kind::Tls, Some(interceptor)) = (kind, &self.inner.interceptor) {
            // Connected only after the SNI is checked, unless the client's silence already
            // made us connect.
            let destination = match connected {
                Some(tcp) => sniff::Destination::Connected(tcp),
                None => sniff::Destination::Connect(reach(&rec)),
            };
            return intercept::serve(interceptor, client, policy, destination, rec, limits).await;
        }
        let upstream = match connected {
            Some(upstream) => upstream,
            None => reach(&rec)
                .await
                .map_err(|e| format!("connecting to {dst}: {e}"))?,
        };
        match kind {
            Kind::Http1 => crate::http::serve(
                client,
                upstream,
                Version::Http1,
                "http",
                policy,
                rec,
                limits,
            )
            .await
            .map_err(|e| e.to_string()),
            Kind::Http2 => crate::http::serve(
                client,
                upstream,
                Version::Http2,
                "http",
                policy,
                rec,
                limits,
            )
            .await
            .map_err(|e| e.to_string()),
            _ => recording_relay(client, upstream, &rec).await,
        }
    }

    // === processes → ledger ===

    async fn process_reports(self, feed: crate::hook::ProcessFeed) {
        let crate::hook::ProcessFeed { events, lost } = feed;
        // SAFETY: the ring buffer owns its map fd and keeps it open and unchanged until the
        // AsyncFd (which owns the ring buffer) is dropped.
        let mut events = match unsafe { AsyncFd::register(events) } {
            Ok(fd) => fd,
            Err(e) => {
                warn!("watching the process ring buffer: {e}; processes are not recorded");
                return;
            }
        };
        let mut lost_before = 0u64;
        loop {
            let mut guard = match events.readable_mut().await {
                Ok(g) => g,
                Err(e) => {
                    warn!("process ring buffer: {e}; processes are no longer recorded");
                    return;
                }
            };
            let clock = crate::process::Clock::now();
            let ring = guard.get_inner_mut();
            while let Some(item) = ring.next() {
                if let Some(report) = crate::process::Report::read(&item) {
                    self.record_process(&report, &clock);
                }
            }
            guard.clear_ready();
            let lost_now = lost
                .get(&0, 0)
                .map(|per_cpu| per_cpu.iter().sum::<u64>())
                .unwrap_or(lost_before);
            if lost_now > lost_before {
                self.say_processes_lost(lost_now - lost_before);
                lost_before = lost_now;
            }
        }
    }

    fn record_process(&self, report: &crate::process::Report, clock: &crate::process::Clock) {
        let Some(session) = self.inner.sessions.get(report.cgroup_id()) else {
            return;
        };
        let ledger = &self.inner.config.ledger;
        let entry = report.entry(
            clock,
            |argv| crate::argv::redact_all(ledger, argv),
            crate::process::cwd_of,
        );
        // Queued now, in the order the kernel reported: an exit never precedes its exec.
        drop(session.writer.queue_lazy(entry));
    }

    fn say_processes_lost(&self, count: u64) {
        warn!("the kernel had no room for {count} process report(s): the process record is incomplete");
        for session in self.inner.sessions.all() {
            drop(session.writer.queue_lazy(Entry::Error(ErrorEntry {
                conn: None,
                context: "recording processes".into(),
                message: format!(
                    "the kernel's process ring buffer was full: {count} fork/exec/exit report(s) \
                     of the engine's sessions were lost, so this session's process record may be \
                     incomplete"
                ),
            })));
        }
    }

    // === kernel refusals → ledger ===

    async fn kernel_events(self, events: aya::maps::RingBuf<aya::maps::MapData>) {
        // SAFETY: the ring buffer owns its map fd and keeps it open and unchanged until the
        // AsyncFd (which owns the ring buffer) is dropped.
        let mut events = match unsafe { AsyncFd::register(events) } {
            Ok(fd) => fd,
            Err(e) => {
                warn!("watching the kernel event ring buffer: {e}");
                return;
            }
        };
        loop {
            let mut guard = match events.readable_mut().await {
                Ok(g) => g,
                Err(e) => {
                    warn!("kernel event ring buffer: {e}");
                    return;
                }
            };
            let ring = guard.get_inner_mut();
            while let Some(item) = ring.next() {
                if item.len() < std::mem::size_of::<KernelEvent>() {
                    continue;
                }
                // SAFETY: the kernel wrote a whole KernelEvent (length checked above); it is
                // plain old data, read unaligned from the ring's bytes.
                let ev: KernelEvent =
                    unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<KernelEvent>()) };
                self.record_kernel_event(ev);
            }
            guard.clear_ready();
        }
    }

    fn record_kernel_event(&self, ev: KernelEvent) {
        let Some(session) = self.inner.sessions.get(ev.dst.cgroup_id) else {
            debug!(
                "kernel event for cgroup {} without a session",
                ev.dst.cgroup_id
            );
            return;
        };
        let dst = (ev.kind != event::SOCKET_REFUSED && ev.kind != event::UNIX_REFUSED)
            .then(|| accept::orig_socket_addr(&ev.dst));
        let (proto, reason) = match ev.kind {
            event::CONNECT_DENIED => (
                proto_name(ev.sock_type, ev.protocol),
                if ev.rule_index == RELOAD_GATE {
                    "denied while the policy was being reloaded (every connect is refused for \
                     the moment the kernel's rules are rewritten)"
                        .to_owned()
                } else if ev.rule_index == NO_RULE {
                    "denied by the policy's default".to_owned()
                } else {
                    format!("denied by policy rule {}", ev.rule_index)
                },
            ),
            // The kernel rejects a datagram sent to port 0 before our sendmsg hook runs: a
            // refusal at port 0 is a connect(), which sends nothing (getaddrinfo connects a UDP
            // socket to each address it found to learn which source address would be used).
            event::UDP_REFUSED if ev.dst.port == 0 => {
                ("udp".to_owned(), UDP_ADDRESS_SELECTION.to_owned())
            }
            event::UDP_REFUSED => (
                "udp".to_owned(),
                "UDP other than DNS (port 53) is refused".to_owned(),
            ),
            event::LOOP_REFUSED => (
                proto_name(ev.sock_type, ev.protocol),
                "loop: destination is the harness daemon itself".to_owned(),
            ),
            event::LOCAL_REFUSED => (
                proto_name(ev.sock_type, ev.protocol),
                "connection refused: nothing listens there on the session's loopback".to_owned(),
            ),
            event::UNIX_REFUSED => (
                "unix".to_owned(),
                "unix socket outside the session (a service outside the enclosure) refused"
                    .to_owned(),
            ),
            _ => (
                proto_name(ev.sock_type, ev.protocol),
                "socket type not allowed in the enclosure (only TCP and UDP)".to_owned(),
            ),
        };
        let host = dst.and_then(|d| self.inner.names.name_of(d.ip()));
        let entry = Entry::ConnDenied(ConnDenied {
            conn: None,
            proto,
            dst,
            host,
            caller: Some(accept::caller(&ev.dst)),
            by: "kernel".into(),
            reason,
            rule: (ev.rule_index != NO_RULE && ev.rule_index != RELOAD_GATE)
                .then_some(ev.rule_index),
        });
        let writer = session.writer.clone();
        session.tasks.spawn(async move {
            let _ = writer.append(entry).await;
        });
    }
}

/// Starts the process programs on the enclosure; says why not when they cannot run (the
/// sessions then have no process record, which each session's `harness log` shows as none).
fn watch_processes(enclosure: &Enclosure, hook: &mut Hook) -> Option<crate::hook::ProcessFeed> {
    let config = (|| -> Result<harness_common::ProcessConfig, String> {
        let types = crate::btf::Types::vmlinux().map_err(|e| e.to_string())?;
        let o = crate::btf::ProcessOffsets::from_types(&types).map_err(|e| e.to_string())?;
        let (enclosure_cgroup, enclosure_level) =
            enclosure.id_and_level().map_err(|e| e.to_string())?;
        Ok(harness_common::ProcessConfig {
            enclosure_cgroup,
            enclosure_level,
            task_pid: o.task_pid,
            task_tgid: o.task_tgid,
            task_real_parent: o.task_real_parent,
            task_mm: o.task_mm,
            task_exit_code: o.task_exit_code,
            mm_arg_start: o.mm_arg_start,
            mm_arg_end: o.mm_arg_end,
            bprm_filename: o.bprm_filename,
            reserved: 0,
        })
    })();
    match config.and_then(|c| hook.watch_processes(c).map_err(|e| e.to_string())) {
        Ok(feed) => Some(feed),
        Err(reason) => {
            warn!("processes of enclosed commands will not be recorded: {reason}");
            None
        }
    }
}

/// Every engine start recovers the sessions of its ledger that no live engine writes (SPEC.md
/// §11) and says what it did: a session left unclosed by an engine that died is reopened,
/// its torn line moved aside, and closed.
/// The `conn_denied` of a TCP connection the daemon accepted and refused (by policy or by a
/// limit), numbered `number`.
fn denied_by_daemon(number: u64, conn: &Redirected, host: Option<String>, reason: String) -> Entry {
    Entry::ConnDenied(ConnDenied {
        conn: Some(number),
        proto: "tcp".into(),
        dst: Some(conn.dst),
        host,
        caller: Some(conn.caller),
        by: "daemon".into(),
        reason,
        rule: None,
    })
}

async fn recover_abandoned_sessions(ledger: &Ledger) {
    for done in ledger.recover_abandoned().await {
        warn!("{done}");
    }
}

/// Clears what engines that died left behind: kills their sessions' processes, then detaches
/// their programs and removes their cgroups and namespace mounts. Each `harness run` embeds an
/// engine of its own name, so without this a `kill -9` would leave them for ever.
async fn reap_dead_engines(own: &str) {
    let dead = match crate::enclosure::dead_engines(own) {
        Ok(dead) => dead,
        Err(e) => {
            warn!("looking for enclosures of dead engines: {e}");
            return;
        }
    };
    for (name, _lock) in dead {
        let reaped = async {
            let enclosure = Enclosure::create(&name)?;
            let sessions = enclosure.reap_orphans().await?;
            crate::hook::remove_pins(&name)?;
            netns::remove_mounts(&name);
            enclosure.remove()?;
            Ok::<usize, EngineError>(sessions)
        };
        match reaped.await {
            Ok(sessions) => warn!(
                "engine {name} had died: killed its {sessions} session(s) and removed its enclosure"
            ),
            Err(e) => warn!("cleaning up after dead engine {name}: {e}"),
        }
        let _ = std::fs::remove_file(
            std::path::Path::new(crate::enclosure::ENGINE_LOCKS).join(format!("{name}.lock")),
        );
    }
}

/// The `reason` of a refused UDP `connect()` to port 0: source-address selection, no data.
pub const UDP_ADDRESS_SELECTION: &str =
    "UDP connect() to port 0 without data (source-address selection), refused";

/// A readable name for a socket's kind.
fn proto_name(sock_type: u32, protocol: u32) -> String {
    match (sock_type, protocol) {
        (1, 0 | 6) => "tcp".into(),
        (2, 0 | 17) => "udp".into(),
        (_, 1) => "icmp".into(),
        (_, 58) => "icmpv6".into(),
        (_, 132) => "sctp".into(),
        (_, 136) => "udplite".into(),
        (_, 262) => "mptcp".into(),
        (3, p) => format!("raw/{p}"),
        (t, p) => format!("type{t}/proto{p}"),
    }
}

/// Relays the eBPF programs' own log lines (aya-log) into our log.
async fn ebpf_log(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    // SAFETY: the logger owns its ring buffer's fd for as long as the AsyncFd owns the logger.
    let Ok(mut fd) = (unsafe { AsyncFd::register(logger) }) else {
        return;
    };
    loop {
        let Ok(mut guard) = fd.readable_mut().await else {
            return;
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_open_file_limit_leaves_room_for_connections() {
        assert_eq!(super::connection_budget(20_000), 6325);
        assert_eq!(super::connection_budget(1024), 256);
        assert_eq!(super::connection_budget(1 << 20), 349_184);
        assert!(super::connection_budget(16) > 0);
    }
}
