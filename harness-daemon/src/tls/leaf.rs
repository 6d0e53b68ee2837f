//! Leaf certificates minted per host from the harness CA, cached, and served to rustls.
//!
//! A leaf is minted for the SNI host name the client sent or, when it sent none, for the IP
//! address it connected to (the original destination, which the proxy knows). Leaves carry what
//! strict clients check: a SAN (DNS name or IP), Subject and Authority Key Identifiers (the AKI
//! equal to the CA's SKI — Python 3.13's default context rejects leaves without it), EKU
//! serverAuth, keyUsage digitalSignature, basicConstraints CA:FALSE, a random serial, and a
//! validity from one hour ago to 30 days ahead, never past the CA's own.
//!
//! Per connection the proxy builds a [`ServerConfig`] with
//! [`ServerConfigs::for_connection`]: a clone of a prepared template (a few `Arc` clones and
//! the ALPN list) whose resolver is a small [`SniResolver`] holding the shared [`LeafMinter`] and
//! that connection's original destination IP.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use time::{Duration, OffsetDateTime};

use super::ca::HarnessCa;

/// How many leaves the cache keeps before evicting the least recently used.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;
/// Validity of a leaf from the moment it is minted (capped by the CA's own validity).
const LEAF_VALIDITY: Duration = Duration::days(30);
/// Leaves start being valid this long before they are minted (clock skew).
const BACKDATE: Duration = Duration::hours(1);
/// ALPN protocols offered to clients, in server preference order.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Errors minting a leaf or preparing the TLS server configuration.
#[derive(Debug, thiserror::Error)]
pub enum LeafError {
    /// rcgen could not build or sign the certificate.
    #[error("minting a certificate for {name}: {source}")]
    Generate {
        /// The host name or IP address.
        name: String,
        /// The error.
        #[source]
        source: rcgen::Error,
    },
    /// The minted key could not be loaded into rustls.
    #[error("loading the key minted for {name}: {source}")]
    Key {
        /// The host name or IP address.
        name: String,
        /// The error.
        #[source]
        source: rustls::Error,
    },
    /// The rustls server configuration could not be built.
    #[error("building the TLS server configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// Cache key: a DNS name (lower case, no trailing dot) or an IP address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum LeafName {
    Dns(String),
    Ip(IpAddr),
}

impl LeafName {
    fn from_server_name(name: &ServerName<'_>) -> LeafName {
        match name {
            ServerName::DnsName(dns) => {
                let s = dns.as_ref().trim_end_matches('.').to_ascii_lowercase();
                LeafName::Dns(s)
            }
            // An IPv4 destination reached through a dual-stack socket shows up as ::ffff:a.b.c.d.
            ServerName::IpAddress(ip) => LeafName::Ip(IpAddr::from(*ip).to_canonical()),
            // `ServerName` is non-exhaustive; its Debug form is the best name we have.
            other => LeafName::Dns(format!("{other:?}")),
        }
    }
}

impl std::fmt::Display for LeafName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeafName::Dns(d) => f.write_str(d),
            LeafName::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

struct CacheEntry {
    key: Arc<CertifiedKey>,
    /// Mint a fresh leaf after this instant (half-way through the leaf's validity).
    refresh_at: OffsetDateTime,
    last_used: u64,
}

/// A bounded map with least-recently-used eviction, done in batches so that a full cache costs
/// one O(n) pass per `capacity / 16` insertions rather than per insertion.
struct LeafCache {
    map: HashMap<LeafName, CacheEntry>,
    tick: u64,
    capacity: usize,
}

impl LeafCache {
    fn get(&mut self, name: &LeafName, now: OffsetDateTime) -> Option<Arc<CertifiedKey>> {
        self.tick += 1;
        let tick = self.tick;
        let entry = self.map.get_mut(name)?;
        if now >= entry.refresh_at {
            return None;
        }
        entry.last_used = tick;
        Some(entry.key.clone())
    }

    /// Inserts `key` unless a fresh entry appeared meanwhile (another connection minted the
    /// same name concurrently); returns whichever is cached, so all connections share one leaf.
    fn insert(
        &mut self,
        name: LeafName,
        key: Arc<CertifiedKey>,
        refresh_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Arc<CertifiedKey> {
        if let Some(existing) = self.get(&name, now) {
            return existing;
        }
        if !self.map.contains_key(&name) && self.map.len() >= self.capacity {
            self.evict();
        }
        self.tick += 1;
        self.map.insert(
            name,
            CacheEntry {
                key: key.clone(),
                refresh_at,
                last_used: self.tick,
            },
        );
        key
    }

    /// Drops the least recently used sixteenth of the entries (at least one).
    fn evict(&mut self) {
        let n = (self.map.len() / 16).max(1);
        let mut ticks: Vec<u64> = self.map.values().map(|e| e.last_used).collect();
        if n >= ticks.len() {
            self.map.clear();
            return;
        }
        let (_, &mut threshold, _) = ticks.select_nth_unstable(n - 1);
        // Ticks are unique, so exactly `n` entries are at or below the threshold.
        self.map.retain(|_, e| e.last_used > threshold);
    }
}

/// Mints and caches leaf certificates signed by the harness CA. Shared by all connections
/// (`Arc<LeafMinter>`); thread-safe.
pub struct LeafMinter {
    ca: HarnessCa,
    provider: Arc<CryptoProvider>,
    cache: Mutex<LeafCache>,
}

// === impl LeafMinter ===

impl LeafMinter {
    /// A minter with the default cache capacity ([`DEFAULT_CACHE_CAPACITY`]).
    pub fn new(ca: HarnessCa) -> LeafMinter {
        LeafMinter::with_capacity(ca, DEFAULT_CACHE_CAPACITY)
    }

    /// A minter whose cache holds at most `capacity` leaves (at least one).
    pub fn with_capacity(ca: HarnessCa, capacity: usize) -> LeafMinter {
        LeafMinter {
            ca,
            provider: super::provider(),
            cache: Mutex::new(LeafCache {
                map: HashMap::new(),
                tick: 0,
                capacity: capacity.max(1),
            }),
        }
    }

    /// The CA leaves are signed by.
    pub fn ca(&self) -> &HarnessCa {
        &self.ca
    }

    /// How many leaves are cached now.
    pub fn cached(&self) -> usize {
        self.lock().map.len()
    }

    /// The certificate and key to present for `name`: from the cache, or minted now.
    ///
    /// Minting happens outside the cache lock (an ECDSA key generation and one signature,
    /// well under a millisecond), so a slow mint never stalls other connections' lookups.
    pub fn leaf_for(&self, name: &ServerName<'_>) -> Result<Arc<CertifiedKey>, LeafError> {
        let name = LeafName::from_server_name(name);
        let now = OffsetDateTime::now_utc();
        if let Some(hit) = self.lock().get(&name, now) {
            return Ok(hit);
        }
        let (key, refresh_at) = self.mint(&name, now)?;
        Ok(self.lock().insert(name, key, refresh_at, now))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LeafCache> {
        // A panic while holding the lock cannot leave the map inconsistent (every mutation is a
        // single HashMap call), so a poisoned lock is still usable.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mint(
        &self,
        name: &LeafName,
        now: OffsetDateTime,
    ) -> Result<(Arc<CertifiedKey>, OffsetDateTime), LeafError> {
        let generate = |source| LeafError::Generate {
            name: name.to_string(),
            source,
        };
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        let text = name.to_string();
        // CN is informative only (clients match the SAN); X.520 caps it at 64 characters.
        if text.len() <= 64 {
            dn.push(DnType::CommonName, text.as_str());
        }
        dn.push(DnType::OrganizationName, "harness");
        params.distinguished_name = dn;
        params.subject_alt_names = match name {
            LeafName::Dns(d) => vec![SanType::DnsName(d.as_str().try_into().map_err(generate)?)],
            // Both spellings of an IPv4 address, whichever one the client verifies against.
            LeafName::Ip(IpAddr::V4(v4)) => vec![
                SanType::IpAddress(IpAddr::V4(*v4)),
                SanType::IpAddress(IpAddr::V6(v4.to_ipv6_mapped())),
            ],
            LeafName::Ip(ip) => vec![SanType::IpAddress(*ip)],
        };
        // ExplicitNoCa writes basicConstraints CA:FALSE and the Subject Key Identifier.
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        params.not_before = now - BACKDATE;
        let not_after = (now + LEAF_VALIDITY).min(self.ca.not_after());
        params.not_after = not_after;

        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate)?;
        let cert = params.signed_by(&key, self.ca.issuer()).map_err(generate)?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signer = self
            .provider
            .key_provider
            .load_private_key(der)
            .map_err(|source| LeafError::Key {
                name: name.to_string(),
                source,
            })?;
        let certified = CertifiedKey::new(vec![cert.der().clone()], signer);
        let refresh_at = now + (not_after - now) / 2;
        tracing::debug!(leaf = %name, "minted leaf certificate");
        Ok((Arc::new(certified), refresh_at))
    }
}

impl std::fmt::Debug for LeafMinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafMinter")
            .field("ca", &self.ca)
            .field("cached", &self.cached())
            .finish_non_exhaustive()
    }
}

/// A random, positive, 16-byte certificate serial number (RFC 5280: at most 20 octets;
/// CA/B Forum: at least 64 bits of randomness).
pub(crate) fn random_serial() -> SerialNumber {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    // SystemRandom reads the kernel's getrandom(); it only fails if the kernel cannot provide
    // randomness at all, in which case no certificate can be made safely.
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the kernel's random number generator failed");
    // Positive (top bit clear) and exactly 16 octets (second-highest bit set: no leading zero
    // octet for DER to strip).
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

/// Per-connection certificate resolver: the leaf for the ClientHello's SNI, or for the
/// connection's original destination IP when the client sent no SNI.
#[derive(Debug, Clone)]
pub struct SniResolver {
    minter: Arc<LeafMinter>,
    fallback_ip: IpAddr,
}

// === impl SniResolver ===

impl SniResolver {
    /// A resolver for one connection whose original destination is `fallback_ip`.
    pub fn new(minter: Arc<LeafMinter>, fallback_ip: IpAddr) -> SniResolver {
        SniResolver {
            minter,
            fallback_ip,
        }
    }

    /// The name a leaf would be minted for, given the SNI the client sent (if any).
    pub fn name_for(&self, sni: Option<&str>) -> ServerName<'static> {
        sni.and_then(|s| ServerName::try_from(s).ok())
            .map(|n| n.to_owned())
            .unwrap_or_else(|| ServerName::IpAddress(self.fallback_ip.into()))
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = self.name_for(client_hello.server_name());
        match self.minter.leaf_for(&name) {
            Ok(key) => Some(key),
            Err(e) => {
                // rustls then fails the handshake (no certificate), which the proxy records.
                tracing::warn!(error = %e, "no leaf certificate for this connection");
                None
            }
        }
    }
}

/// Builds a client-facing [`ServerConfig`] per accepted connection, cheaply: a clone of a
/// prepared template (ring provider, TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`, shared session
/// cache) with that connection's [`SniResolver`].
#[derive(Debug, Clone)]
pub struct ServerConfigs {
    minter: Arc<LeafMinter>,
    template: Arc<ServerConfig>,
}

// === impl ServerConfigs ===

impl ServerConfigs {
    /// Prepares the template for `minter`'s leaves.
    pub fn new(minter: Arc<LeafMinter>) -> Result<ServerConfigs, LeafError> {
        let mut template = ServerConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()
            .map_err(LeafError::Config)?
            .with_no_client_auth()
            // Replaced per connection; resolving through it would be a bug, so it fails closed.
            .with_cert_resolver(Arc::new(NoCertificate));
        template.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(ServerConfigs {
            minter,
            template: Arc::new(template),
        })
    }

    /// The shared minter.
    pub fn minter(&self) -> &Arc<LeafMinter> {
        &self.minter
    }

    /// The configuration for one connection whose original destination is `original_dst_ip`.
    pub fn for_connection(&self, original_dst_ip: IpAddr) -> Arc<ServerConfig> {
        let mut config = (*self.template).clone();
        config.cert_resolver = Arc::new(SniResolver::new(self.minter.clone(), original_dst_ip));
        Arc::new(config)
    }
}

/// The template's placeholder resolver: never yields a certificate.
#[derive(Debug)]
struct NoCertificate;

impl ResolvesServerCert for NoCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}

#[cfg(test)]
mod tests;
