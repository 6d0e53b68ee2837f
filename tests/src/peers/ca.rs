//! The test CA: an ECDSA P-256 root and the server certificates it signs, written as PEM so a
//! test can hand the CA to harness (`--upstream-ca ca.pem`) or to curl (`--cacert ca.pem`).
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::Error;

/// A certificate authority that exists only for tests. Cheap to clone.
#[derive(Clone)]
pub struct TestCa {
    inner: Arc<CaInner>,
}

struct CaInner {
    dir: PathBuf,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

/// A server certificate signed by a [`TestCa`], with its key.
#[derive(Clone, Debug)]
pub struct ServerCert {
    /// The leaf certificate, PEM.
    pub cert_pem: String,
    /// The leaf's private key, PKCS#8 PEM.
    pub key_pem: String,
    /// Where the leaf was written (PEM; the chain file holds leaf then CA).
    pub cert_path: PathBuf,
    /// Where the key was written.
    pub key_path: PathBuf,
    /// The DNS names the certificate is valid for.
    pub names: Vec<String>,
    /// The IP addresses the certificate is valid for.
    pub ips: Vec<IpAddr>,
    cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
    ca_der: CertificateDer<'static>,
}

// === impl TestCa ===

impl TestCa {
    /// Creates a fresh CA and writes `ca.pem` (certificate) and `ca.key.pem` into `dir`
    /// (created if missing). An existing CA in `dir` is replaced.
    pub fn create(dir: impl AsRef<Path>) -> Result<TestCa, Error> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display(), e))?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "harness test CA");
        dn.push(DnType::OrganizationName, "harness tests");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2099, 12, 31);
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        write(&dir.join("ca.pem"), &cert_pem)?;
        write(&dir.join("ca.key.pem"), &key.serialize_pem())?;
        Ok(TestCa {
            inner: Arc::new(CaInner {
                dir,
                cert_pem,
                cert_der: cert.der().clone(),
                issuer: Issuer::new(params, key),
            }),
        })
    }

    /// The directory the CA writes into.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Path of the CA certificate (PEM): what `--upstream-ca` and `curl --cacert` take.
    pub fn cert_path(&self) -> PathBuf {
        self.inner.dir.join("ca.pem")
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.inner.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.inner.cert_der.clone()
    }

    /// A root store that trusts this CA and nothing else.
    pub fn root_store(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        // The CA certificate was generated just above; it always parses.
        roots
            .add(self.cert_der())
            .expect("the test CA is a valid trust anchor");
        roots
    }

    /// Issues a server certificate for `names` and `ips` (SAN, AKI, SKI, EKU serverAuth),
    /// writing `<label>.pem` (leaf + CA chain) and `<label>.key.pem` into the CA's directory.
    pub fn issue(
        &self,
        label: &str,
        names: &[String],
        ips: &[IpAddr],
    ) -> Result<ServerCert, Error> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let mut dn = DistinguishedName::new();
        let cn = names
            .first()
            .cloned()
            .or_else(|| ips.first().map(IpAddr::to_string))
            .unwrap_or_else(|| "harness test peer".into());
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        // ExplicitNoCa writes basicConstraints CA:FALSE and the subject key identifier.
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2099, 12, 31);
        let cert = params.signed_by(&key, &self.inner.issuer)?;
        let label: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let cert_path = self.inner.dir.join(format!("{label}.pem"));
        let key_path = self.inner.dir.join(format!("{label}.key.pem"));
        let cert_pem = cert.pem();
        let key_pem = key.serialize_pem();
        write(&cert_path, &format!("{cert_pem}{}", self.inner.cert_pem))?;
        write(&key_path, &key_pem)?;
        Ok(ServerCert {
            cert_pem,
            key_pem,
            cert_path,
            key_path,
            names: names.to_vec(),
            ips: ips.to_vec(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
            ca_der: self.cert_der(),
        })
    }
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

// === impl ServerCert ===

impl ServerCert {
    /// The chain to present: leaf, then CA.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert_der.clone(), self.ca_der.clone()]
    }

    /// The private key, for rustls.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|e| Error::io(path.display(), e))
}
