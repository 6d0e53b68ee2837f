//! TLS building blocks: the harness CA, per-host leaf certificates, and the enclosure's trust.
//!
//! The daemon terminates the agent's TLS with certificates it mints itself, so the agent's
//! clients must trust the harness CA without being reconfigured:
//!
//! - [`ca`] creates the CA once (ECDSA P-256, key readable by root only) and reloads it later;
//! - [`leaf`] mints a leaf per SNI host name (or per destination IP when the client sent no SNI),
//!   cached, with the extensions strict clients demand, and resolves certificates for rustls;
//! - [`trust`] builds the bundle (system roots + harness CA), the environment variables that point
//!   clients at it, and the mount-namespace step that bind-mounts it over the system bundle paths.
//!
//! Everything here uses the *ring* crypto provider explicitly ([`provider`]); nothing relies on a
//! process-wide default provider being installed.
//!
//! How the pieces fit (the daemon side, then `harness run`'s spawn):
//!
//! ```no_run
//! use std::sync::Arc;
//! use harness::tls::{HarnessCa, LeafMinter, ServerConfigs, TrustBundle};
//! # async fn demo(tcp: tokio::net::TcpStream, original_dst: std::net::SocketAddr)
//! #     -> Result<(), Box<dyn std::error::Error>> {
//! // Once, at daemon start.
//! let ca = HarnessCa::load_or_create("/var/lib/harness/ca".as_ref())?;
//! let bundle = TrustBundle::build(ca.certificate_pem(), "/run/harness/trust.pem".as_ref())?;
//! let configs = ServerConfigs::new(Arc::new(LeafMinter::new(ca)))?;
//!
//! // Per accepted connection: SNI leaf, or a leaf for the original destination IP.
//! let acceptor = tokio_rustls::TlsAcceptor::from(configs.for_connection(original_dst.ip()));
//! let tls = acceptor.accept(tcp).await?;
//! let alpn = tls.get_ref().1.alpn_protocol(); // Some(b"h2") | Some(b"http/1.1") | None
//! # let _ = alpn;
//!
//! // Spawning the agent: environment + private mount namespace, the latter registered
//! // before the pre_exec hook that drops privileges (hooks run in registration order).
//! let mut cmd = std::process::Command::new("agent");
//! cmd.envs(bundle.env());
//! bundle.mounts()?.install(&mut cmd);
//! # Ok(()) }
//! ```
pub mod ca;
pub mod ending;
pub mod leaf;
pub mod trust;

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use ca::{CaError, HarnessCa};
pub use leaf::{LeafError, LeafMinter, ServerConfigs, SniResolver};
pub use trust::{TrustBundle, TrustError, TrustMounts};

/// The crypto provider every TLS configuration in harness uses: rustls' *ring* provider.
///
/// Explicit rather than process-wide so that a second provider linked in by some dependency can
/// never change which one is used.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
