//! `harness daemon`: the engine as a long-lived service. `harness run` finds it through the
//! control socket and asks it for sessions instead of embedding an engine of its own.
use crate::control;
use crate::engine::{Engine, EngineConfig, EngineError, Reloaded, TlsSetup};
use crate::ledger::{Ledger, LedgerError};
use crate::policy::{Policy, PolicyError};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::signal::unix::SignalKind;

/// What `harness daemon` was asked to do.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Ledger directory.
    pub ledger: PathBuf,
    /// Policy file; none allows everything.
    pub policy: Option<PathBuf>,
    /// Forward DNS here instead of to the server a command addressed.
    pub dns_upstream: Option<SocketAddr>,
    /// Control socket path.
    pub control: PathBuf,
    /// Directory of the harness CA.
    pub ca_dir: PathBuf,
    /// Extra roots for verifying destinations' certificates.
    pub upstream_ca: Vec<PathBuf>,
    /// Refuse to start on a kernel that leaves a class of escape open.
    pub require_full_isolation: bool,
}

/// Why the daemon stopped with an error (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Not root.
    #[error("harness daemon must run as root (it creates cgroups and loads eBPF programs)")]
    NotRoot,
    /// Policy file problem.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Ledger problem.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Engine problem.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Control socket problem.
    #[error("control socket {path}: {source}")]
    Control {
        /// Its path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Runs until SIGINT or SIGTERM, then closes every session and detaches. SIGHUP reloads the
/// policy file ([`reload`]).
pub async fn run(options: DaemonOptions) -> Result<(), DaemonError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(DaemonError::NotRoot);
    }
    let signal = |kind: SignalKind| {
        tokio::signal::unix::signal(kind).map_err(|source| DaemonError::Control {
            path: options.control.clone(),
            source,
        })
    };
    // Before anything is served: from the first session on, a SIGHUP reloads, never kills.
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let policy = match &options.policy {
        Some(path) => Policy::load(path)?,
        None => Policy::allow_all(),
    };
    let engine = Engine::start(EngineConfig {
        name: "daemon".into(),
        ledger: Ledger::open(&options.ledger)?,
        policy: Arc::new(policy),
        dns_upstream: options.dns_upstream,
        tls: Some(TlsSetup {
            ca_dir: options.ca_dir.clone(),
            bundle: crate::run::trust_bundle_path("daemon"),
            upstream_roots: options.upstream_ca.clone(),
        }),
        require_full_isolation: options.require_full_isolation,
    })
    .await?;
    let served = {
        let serving = control::serve(engine.clone(), &options.control);
        tokio::pin!(serving);
        loop {
            tokio::select! {
                served = &mut serving => break served,
                _ = tokio::signal::ctrl_c() => break Ok(()),
                _ = term.recv() => break Ok(()),
                _ = hup.recv() => {
                    for line in reload(&engine, options.policy.as_deref()).await {
                        eprintln!("{line}");
                    }
                }
            }
        }
    };
    let _ = std::fs::remove_file(&options.control);
    engine.shutdown().await?;
    served.map_err(|source| DaemonError::Control {
        path: options.control,
        source,
    })
}

/// What a SIGHUP does: reads the policy file the daemon was started with again and puts it in
/// force ([`Engine::reload_policy`]). A file that cannot be read or does not parse leaves the
/// policy in force as it is, and nothing is recorded. Returns what to say on stderr: one line,
/// and one more for each session whose ledger refused the `policy_change`.
pub async fn reload(engine: &Engine, path: Option<&Path>) -> Vec<String> {
    let old = engine.policy();
    let Some(path) = path else {
        return vec![format!(
            "policy not reloaded: the daemon was started without --policy (it allows \
             everything, sha256 {}); restart it with --policy FILE",
            old.sha256_hex()
        )];
    };
    let new = match Policy::load(path) {
        Ok(new) => new,
        Err(e) => {
            return vec![format!(
                "policy not reloaded, the one in force stays (sha256 {}): {e}",
                old.sha256_hex()
            )]
        }
    };
    let origin = new.origin().to_owned();
    match engine.reload_policy(new).await {
        Ok(Reloaded::Unchanged { sha256 }) => vec![format!(
            "policy unchanged: {origin} sha256 {sha256} (the same bytes; nothing recorded)"
        )],
        Ok(Reloaded::Changed {
            sha256,
            previous_sha256,
            unrecorded,
            ..
        }) => std::iter::once(format!(
            "policy reloaded: {origin} sha256 {sha256} (was {previous_sha256})"
        ))
        .chain(
            unrecorded
                .into_iter()
                .map(|failed| format!("policy_change not recorded: {failed}")),
        )
        .collect(),
        Err(e) => vec![format!("policy not reloaded: {e}")],
    }
}
