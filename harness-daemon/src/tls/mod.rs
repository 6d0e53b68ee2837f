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
pub mod ca;
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
