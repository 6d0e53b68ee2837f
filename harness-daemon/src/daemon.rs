//! `harness daemon`: the engine as a long-lived service. `harness run` finds it through the
//! control socket and asks it for sessions instead of embedding an engine of its own.
use crate::control;
use crate::engine::{Engine, EngineConfig, EngineError, TlsSetup};
use crate::ledger::{Ledger, LedgerError};
use crate::policy::{Policy, PolicyError};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

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

/// Runs until SIGINT or SIGTERM, then closes every session and detaches.
pub async fn run(options: DaemonOptions) -> Result<(), DaemonError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(DaemonError::NotRoot);
    }
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
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| DaemonError::Control {
            path: options.control.clone(),
            source,
        })?;
    let served = tokio::select! {
        served = control::serve(engine.clone(), &options.control) => served,
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
    };
    let _ = std::fs::remove_file(&options.control);
    engine.shutdown().await?;
    served.map_err(|source| DaemonError::Control {
        path: options.control,
        source,
    })
}
