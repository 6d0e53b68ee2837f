//! The harness CA: created on first use, reloaded afterwards, its private key readable by root only.
//!
//! On disk, in the CA directory:
//!
//! - `ca.pem` — the CA certificate (mode 0644): the thing enclosures trust and
//!   `harness ca --export PATH` hands out;
//! - `ca-key.pem` — its PKCS#8 private key (mode 0600, owned by the daemon's user, i.e. root),
//!   created with that mode from the start so it is never readable by anyone else, not even for
//!   an instant.
//!
//! A key whose mode is not exactly 0600, or whose owner is not the daemon's effective user, is
//! refused with an error naming the file: a CA key others could have read can mint certificates
//! for any host the enclosure talks to. So is a CA directory that someone other than root (the
//! daemon's user) could change — it, or an ancestor up to `/` other than a sticky one like
//! `/tmp` ([`crate::strict`]): an enclosed agent must not be able to swap the CA.
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyIdMethod,
    KeyPair, KeyUsagePurpose, PublicKeyData,
};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

/// File name of the CA certificate inside the CA directory.
pub const CERT_FILE: &str = "ca.pem";
/// File name of the CA private key inside the CA directory.
pub const KEY_FILE: &str = "ca-key.pem";

/// How long a newly created CA is valid.
const CA_VALIDITY: Duration = Duration::days(10 * 365);
/// How far in the past a new CA's validity starts (clock skew between host and enclosure peers).
const BACKDATE: Duration = Duration::hours(1);

/// Errors loading, creating or exporting the harness CA; each names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// An I/O error on a CA file or directory.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The private key file's permissions let someone other than its owner read or write it.
    #[error("{path}: the CA private key must have mode 0600, but has {mode:04o}")]
    KeyMode {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The private key file belongs to another user than the daemon's.
    #[error(
        "{path}: the CA private key must be owned by uid {expected}, but is owned by uid {found}"
    )]
    KeyOwner {
        /// The key file.
        path: PathBuf,
        /// The daemon's effective uid.
        expected: u32,
        /// The file's owner.
        found: u32,
    },
    /// The private key file does not hold a usable key.
    #[error("{path}: not a usable private key: {reason}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The certificate file does not hold a usable CA certificate.
    #[error("{path}: not a usable CA certificate: {reason}")]
    Cert {
        /// The certificate file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The certificate and the key do not belong together.
    #[error("{cert}: certificate does not match the private key in {key}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A certificate without its key: nothing can be signed with it.
    #[error("{cert}: CA certificate present but its key {key} is missing; remove {cert} to create a new CA")]
    MissingKey {
        /// The certificate file.
        cert: PathBuf,
        /// The missing key file.
        key: PathBuf,
    },
    /// The CA certificate is no longer valid.
    #[error("{path}: the CA certificate expired at {not_after}; remove it and {KEY_FILE} to create a new CA")]
    Expired {
        /// The certificate file.
        path: PathBuf,
        /// When it expired.
        not_after: OffsetDateTime,
    },
    /// The CA directory (or an ancestor) could be changed by someone other than root or the
    /// daemon's user.
    #[error("{path}: {reason}")]
    Unsafe {
        /// The directory at fault.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rcgen failed to generate the CA.
    #[error("generating the harness CA in {dir}: {source}")]
    Generate {
        /// The CA directory.
        dir: PathBuf,
        /// The error.
        #[source]
        source: rcgen::Error,
    },
}

impl From<crate::strict::StrictError> for CaError {
    fn from(e: crate::strict::StrictError) -> CaError {
        match e {
            crate::strict::StrictError::Io { path, source } => CaError::Io { path, source },
            crate::strict::StrictError::Unsafe { path, reason } => CaError::Unsafe { path, reason },
        }
    }
}

/// The harness CA: its certificate and signing key, ready to issue leaves.
pub struct HarnessCa {
    cert_path: PathBuf,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    not_after: OffsetDateTime,
    issuer: Issuer<'static, KeyPair>,
}

// === impl HarnessCa ===

impl HarnessCa {
    /// Loads the CA from `dir`, creating it (and `dir`) on first use.
    ///
    /// - Neither file present (or only a key left by an interrupted creation, whose certificate
    ///   was therefore never handed out): a new CA is generated and written.
    /// - Both present: both are loaded; the key must be mode 0600 and owned by the effective uid,
    ///   and must match the certificate.
    /// - Certificate without key: an error (it cannot sign, and regenerating silently would
    ///   invalidate every exported copy).
    ///
    /// `dir` and its ancestors must pass [`crate::strict::check_dir`]; `dir` is created 0755.
    pub fn load_or_create(dir: &Path) -> Result<HarnessCa, CaError> {
        crate::strict::check_creatable(dir, "the CA directory")?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|source| CaError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        crate::strict::check_dir(dir, "the CA directory")?;
        // Two harness processes starting together must not both create a CA.
        let _lock = lock_dir(dir)?;
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        let cert_exists = exists(&cert_path)?;
        let key_exists = exists(&key_path)?;
        match (cert_exists, key_exists) {
            (true, true) => Self::load(&cert_path, &key_path),
            (true, false) => Err(CaError::MissingKey {
                cert: cert_path,
                key: key_path,
            }),
            (false, _) => Self::create(dir, &cert_path, &key_path),
        }
    }

    /// The CA certificate, PEM-encoded (exactly the contents of `ca.pem`).
    pub fn certificate_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER-encoded.
    pub fn certificate_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Lower-case hex SHA-256 of the certificate's DER: what `openssl x509 -fingerprint -sha256`
    /// shows, without the colons.
    pub fn fingerprint_sha256_hex(&self) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(self.cert_der.as_ref()))
    }

    /// Where the CA certificate lives (`DIR/ca.pem`).
    pub fn certificate_path(&self) -> &Path {
        &self.cert_path
    }

    /// End of the CA's validity; leaves never outlive it.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Writes the CA certificate (never the key) to `path`, mode 0644, for
    /// `harness ca --export PATH`. The file is written beside `path` and renamed over it, so a
    /// symlink planted at `path` is replaced, never followed (the daemon runs as root). To print
    /// the certificate instead, use [`certificate_pem`](Self::certificate_pem).
    pub fn export(&self, path: &Path) -> Result<(), CaError> {
        write_new(path, self.cert_pem.as_bytes(), 0o644)
    }

    /// The issuer leaves are signed by (distinguished name, SKI, key).
    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    fn create(dir: &Path, cert_path: &Path, key_path: &Path) -> Result<HarnessCa, CaError> {
        let generate = |source| CaError::Generate {
            dir: dir.to_path_buf(),
            source,
        };
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate)?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = ca_name();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.key_identifier_method = KeyIdMethod::Sha256;
        params.serial_number = Some(crate::tls::leaf::random_serial());
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;
        let cert = params.self_signed(&key).map_err(generate)?;

        // Key first, so an interruption leaves at worst a key without certificate, which the next
        // run replaces (its certificate was never handed out).
        write_new(key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_new(cert_path, cert.pem().as_bytes(), 0o644)?;
        sync_dir(dir)?;
        tracing::info!(
            cert = %cert_path.display(),
            "created the harness CA"
        );
        Self::from_parts(cert_path, cert.pem(), key_path, key)
    }

    fn load(cert_path: &Path, key_path: &Path) -> Result<HarnessCa, CaError> {
        let key_pem = read_private_key(key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CaError::Key {
            path: key_path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let cert_pem = fs::read_to_string(cert_path).map_err(|source| CaError::Io {
            path: cert_path.to_path_buf(),
            source,
        })?;
        Self::from_parts(cert_path, cert_pem, key_path, key)
    }

    /// Checks that the PEM certificate is a CA matching `key`, and builds the issuer from the
    /// certificate itself (subject and SKI as written, so leaves' AKI matches exactly).
    fn from_parts(
        cert_path: &Path,
        cert_pem: String,
        key_path: &Path,
        key: KeyPair,
    ) -> Result<HarnessCa, CaError> {
        let bad_cert = |reason: String| CaError::Cert {
            path: cert_path.to_path_buf(),
            reason,
        };
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
            .map(|d: CertificateDer<'_>| d.into_owned())
            .map_err(|e| bad_cert(format!("no PEM certificate: {e}")))?;
        let (_, x509) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| bad_cert(format!("cannot parse: {e}")))?;
        if !x509.is_ca() {
            return Err(bad_cert("basicConstraints does not say CA:TRUE".into()));
        }
        let has_ski = x509.extensions().iter().any(|e| {
            matches!(
                e.parsed_extension(),
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(_)
            )
        });
        if !has_ski {
            return Err(bad_cert("no Subject Key Identifier".into()));
        }
        if x509.tbs_certificate.subject_pki.raw != key.subject_public_key_info().as_slice() {
            return Err(CaError::Mismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
            });
        }
        let not_after = x509.validity().not_after.to_datetime();
        if not_after <= OffsetDateTime::now_utc() {
            return Err(CaError::Expired {
                path: cert_path.to_path_buf(),
                not_after,
            });
        }
        drop(x509);
        let issuer = Issuer::from_ca_cert_der(&der, key)
            .map_err(|e| bad_cert(format!("cannot use as issuer: {e}")))?;
        Ok(HarnessCa {
            cert_path: cert_path.to_path_buf(),
            cert_pem,
            cert_der: der,
            not_after,
            issuer,
        })
    }
}

impl std::fmt::Debug for HarnessCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HarnessCa")
            .field("cert_path", &self.cert_path)
            .field("fingerprint_sha256", &self.fingerprint_sha256_hex())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// CN "harness CA <hostname>", O "harness", OU "instance <random hex>".
fn ca_name() -> DistinguishedName {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let mut cn = format!("harness CA {host}");
    // X.520 ub-common-name: at most 64 characters.
    if cn.chars().count() > 64 {
        cn = cn.chars().take(64).collect();
    }
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, cn);
    name.push(DnType::OrganizationName, "harness");
    // Two CAs created on one host (or on hosts with one name) would otherwise have the same
    // subject, and a verifier trusting one may try to build chains through the other.
    let serial = crate::tls::leaf::random_serial();
    name.push(
        DnType::OrganizationalUnitName,
        format!("instance {}", hex::encode(&serial.to_bytes()[..6])),
    );
    name
}

/// File name of the lock taken while loading or creating the CA.
const LOCK_FILE: &str = ".lock";

/// An exclusive `flock` on `DIR/.lock`, released when dropped.
fn lock_dir(dir: &Path) -> Result<nix::fcntl::Flock<File>, CaError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|source| CaError::Io {
            path: path.clone(),
            source,
        })?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, errno)| {
        CaError::Io {
            path,
            source: errno.into(),
        }
    })
}

fn exists(path: &Path) -> Result<bool, CaError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(CaError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Opens the key, checks owner and mode on the open file (no race between check and read),
/// and reads it.
fn read_private_key(path: &Path) -> Result<String, CaError> {
    let io_err = |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode != 0o600 {
        return Err(CaError::KeyMode {
            path: path.to_path_buf(),
            mode,
        });
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(CaError::KeyOwner {
            path: path.to_path_buf(),
            expected: euid,
            found: meta.uid(),
        });
    }
    io::read_to_string(file).map_err(io_err)
}

/// Writes `bytes` to a fresh file at `path` created with `mode` (a temporary file renamed into
/// place, so readers never see a half-written file). The mode is given at creation: the key is
/// never, even briefly, readable by others. For the 0644 certificate, the permission is set
/// again on the open descriptor in case the umask removed read bits.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let io_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| CaError::Io { path: p, source }
    };
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&tmp)(e)),
    }
    let mut file: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    if mode & 0o077 != 0 {
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err(&tmp))?;
    }
    file.write_all(bytes).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

fn sync_dir(dir: &Path) -> Result<(), CaError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| CaError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "harness-ca-test-{tag}-{}-{}",
            std::process::id(),
            ulid::Ulid::new()
        ));
        dir
    }

    #[test]
    fn creates_then_reloads_the_same_ca() {
        let dir = tempdir("reload");
        let ca = HarnessCa::load_or_create(&dir).expect("create");
        let key_meta = fs::metadata(dir.join(KEY_FILE)).unwrap();
        assert_eq!(key_meta.permissions().mode() & 0o777, 0o600);
        let cert_meta = fs::metadata(dir.join(CERT_FILE)).unwrap();
        assert_eq!(cert_meta.permissions().mode() & 0o777, 0o644);
        assert_eq!(
            fs::read_to_string(dir.join(CERT_FILE)).unwrap(),
            ca.certificate_pem()
        );

        let again = HarnessCa::load_or_create(&dir).expect("reload");
        assert_eq!(again.certificate_der(), ca.certificate_der());
        assert_eq!(again.fingerprint_sha256_hex(), ca.fingerprint_sha256_hex());
        assert_eq!(ca.fingerprint_sha256_hex().len(), 64);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn concurrent_first_use_creates_one_ca() {
        let dir = tempdir("race");
        let fingerprints: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| HarnessCa::load_or_create(&dir).unwrap()))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().fingerprint_sha256_hex())
                .collect()
        });
        assert!(
            fingerprints.windows(2).all(|w| w[0] == w[1]),
            "{fingerprints:?}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ca_certificate_has_the_required_extensions() {
        use x509_parser::extensions::ParsedExtension;
        let dir = tempdir("ext");
        let ca = HarnessCa::load_or_create(&dir).unwrap();
        let (_, x509) = x509_parser::parse_x509_certificate(ca.certificate_der()).unwrap();
        let cn = x509.subject().iter_common_name().next().unwrap();
        assert!(cn.as_str().unwrap().starts_with("harness CA "));
        let bc = x509.basic_constraints().unwrap().unwrap();
        assert!(bc.critical);
        assert!(bc.value.ca);
        assert_eq!(bc.value.path_len_constraint, Some(0));
        let ku = x509.key_usage().unwrap().unwrap();
        assert!(ku.critical);
        assert!(ku.value.key_cert_sign() && ku.value.crl_sign());
        assert!(!ku.value.digital_signature());
        assert!(x509.extensions().iter().any(|e| matches!(
            e.parsed_extension(),
            ParsedExtension::SubjectKeyIdentifier(_)
        )));
        let not_after = x509.validity().not_after.to_datetime();
        assert!(not_after > OffsetDateTime::now_utc() + Duration::days(3000));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_a_key_readable_by_others() {
        let dir = tempdir("mode");
        HarnessCa::load_or_create(&dir).unwrap();
        let key = dir.join(KEY_FILE);
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let err = HarnessCa::load_or_create(&dir).unwrap_err();
        assert!(matches!(err, CaError::KeyMode { mode: 0o644, .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(KEY_FILE) && msg.contains("0600"), "{msg}");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            HarnessCa::load_or_create(&dir),
            Err(CaError::KeyMode { mode: 0o640, .. })
        ));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_an_unreadable_or_garbled_key() {
        let dir = tempdir("garbled");
        HarnessCa::load_or_create(&dir).unwrap();
        let key = dir.join(KEY_FILE);
        fs::write(&key, "not a key").unwrap();
        let err = HarnessCa::load_or_create(&dir).unwrap_err();
        assert!(matches!(err, CaError::Key { .. }), "{err}");
        assert!(err.to_string().contains(KEY_FILE));
        // A directory where the key should be: unreadable as a key file.
        fs::remove_file(&key).unwrap();
        fs::create_dir(&key).unwrap();
        let err = HarnessCa::load_or_create(&dir).unwrap_err();
        assert!(err.to_string().contains(KEY_FILE), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_a_ca_directory_others_can_write() {
        let dir = tempdir("dir-mode");
        HarnessCa::load_or_create(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let err = HarnessCa::load_or_create(&dir).expect_err("refused");
        assert!(matches!(err, CaError::Unsafe { .. }), "{err}");
        let line = err.to_string();
        assert!(
            line.starts_with(&format!("{}: refusing the CA directory", dir.display())),
            "{line}"
        );
        assert!(line.contains("writable by others (mode 0777)"), "{line}");
        // Refused, not repaired.
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o777);
        // Nor is a new CA directory made beneath a directory others can write.
        let beneath = dir.join("ca");
        let err = HarnessCa::load_or_create(&beneath).expect_err("refused");
        assert!(err.to_string().contains("not sticky"), "{err}");
        assert!(!beneath.exists());
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_a_key_owned_by_someone_else() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED refuses_a_key_owned_by_someone_else: needs root to chown");
            return;
        }
        let dir = tempdir("owner");
        HarnessCa::load_or_create(&dir).unwrap();
        let key = dir.join(KEY_FILE);
        std::os::unix::fs::chown(&key, Some(65534), None).unwrap();
        let err = HarnessCa::load_or_create(&dir).unwrap_err();
        assert!(
            matches!(err, CaError::KeyOwner { found: 65534, .. }),
            "{err}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_a_certificate_that_does_not_match_the_key() {
        let a = tempdir("mismatch-a");
        let b = tempdir("mismatch-b");
        HarnessCa::load_or_create(&a).unwrap();
        HarnessCa::load_or_create(&b).unwrap();
        fs::copy(b.join(CERT_FILE), a.join(CERT_FILE)).unwrap();
        let err = HarnessCa::load_or_create(&a).unwrap_err();
        assert!(matches!(err, CaError::Mismatch { .. }), "{err}");
        fs::remove_dir_all(&a).unwrap();
        fs::remove_dir_all(&b).unwrap();
    }

    #[test]
    fn certificate_without_key_is_an_error_key_without_certificate_is_replaced() {
        let dir = tempdir("halves");
        let first = HarnessCa::load_or_create(&dir).unwrap();
        fs::remove_file(dir.join(KEY_FILE)).unwrap();
        let err = HarnessCa::load_or_create(&dir).unwrap_err();
        assert!(matches!(err, CaError::MissingKey { .. }), "{err}");

        fs::remove_file(dir.join(CERT_FILE)).unwrap();
        fs::write(dir.join(KEY_FILE), "stale").unwrap();
        let second = HarnessCa::load_or_create(&dir).unwrap();
        assert_ne!(first.certificate_der(), second.certificate_der());
        let mode = fs::metadata(dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn export_writes_only_the_certificate() {
        let dir = tempdir("export");
        let ca = HarnessCa::load_or_create(&dir).unwrap();
        let out = dir.join("exported.pem");
        ca.export(&out).unwrap();
        let text = fs::read_to_string(&out).unwrap();
        assert_eq!(text, ca.certificate_pem());
        assert!(!text.contains("PRIVATE KEY"));
        // A symlink at the destination is replaced, not written through.
        let victim = dir.join("victim");
        fs::write(&victim, "precious").unwrap();
        let link = dir.join("link.pem");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        ca.export(&link).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(fs::read_to_string(&link).unwrap(), ca.certificate_pem());
        assert!(!fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        let err = ca.export(&dir.join("no/such/dir/x.pem")).unwrap_err();
        assert!(err.to_string().contains("no/such/dir/x.pem"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
