//! The enclosure's trust: a bundle of the system roots plus the harness CA, the environment
//! variables that point clients at it, and (in [`namespace`]) the bind mounts that put it over
//! the system's CA bundle paths for clients that ignore those variables.
//!
//! `harness run` builds the bundle before spawning the agent, gives it [`TrustBundle::env`], and
//! calls [`TrustMounts::enter`] in the child between fork and exec.
//!
//! The enclosed process runs as the invoking user, so the bundle's directory must be searchable
//! by that user for the environment variables to work (the bind mounts work regardless: they are
//! reached through the system paths).
pub mod namespace;

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub use namespace::TrustMounts;

/// The system roots the bundle starts from (Debian, Ubuntu, Alpine, Arch).
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Errors building the trust bundle or preparing its mounts; each names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// An I/O error on a file or directory.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The harness CA given to the bundle is not a PEM certificate.
    #[error("the harness CA to add to {path} is not a PEM certificate")]
    NotPem {
        /// The bundle being built.
        path: PathBuf,
    },
    /// A path that cannot be passed to the kernel (it contains a NUL byte).
    #[error("{path}: path contains a NUL byte")]
    NulInPath {
        /// The path.
        path: PathBuf,
    },
}

/// A CA bundle written for an enclosure: the system roots followed by the harness CA.
#[derive(Debug, Clone)]
pub struct TrustBundle {
    path: PathBuf,
    system_roots: Option<PathBuf>,
}

// === impl TrustBundle ===

impl TrustBundle {
    /// Writes the bundle to `out_path` (mode 0644, replaced atomically): the contents of
    /// [`SYSTEM_ROOTS`] if present (otherwise none, with a warning) followed by `ca_pem`.
    pub fn build(ca_pem: &str, out_path: &Path) -> Result<TrustBundle, TrustError> {
        TrustBundle::build_from(Path::new(SYSTEM_ROOTS), ca_pem, out_path)
    }

    /// As [`build`](Self::build), with the system roots read from `system_roots`.
    pub fn build_from(
        system_roots: &Path,
        ca_pem: &str,
        out_path: &Path,
    ) -> Result<TrustBundle, TrustError> {
        if !ca_pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(TrustError::NotPem {
                path: out_path.to_path_buf(),
            });
        }
        let (mut text, source) = match fs::read_to_string(system_roots) {
            Ok(text) => (text, Some(system_roots.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::warn!(
                    path = %system_roots.display(),
                    "no system CA bundle: the enclosure will trust only the harness CA"
                );
                (String::new(), None)
            }
            Err(source) => {
                return Err(TrustError::Io {
                    path: system_roots.to_path_buf(),
                    source,
                })
            }
        };
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str("# harness CA (added by harness for this enclosure)\n");
        text.push_str(ca_pem);
        if !text.ends_with('\n') {
            text.push('\n');
        }
        write_replace(out_path, text.as_bytes())?;
        Ok(TrustBundle {
            path: out_path.to_path_buf(),
            system_roots: source,
        })
    }

    /// A bundle already built at `path` (by the daemon, for `harness run` to hand on).
    pub fn existing(path: &Path) -> TrustBundle {
        TrustBundle {
            path: path.to_path_buf(),
            system_roots: None,
        }
    }

    /// Where the bundle was written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The system bundle the roots were copied from, if there was one.
    pub fn system_roots(&self) -> Option<&Path> {
        self.system_roots.as_deref()
    }

    /// Environment variables for the enclosed process, each pointing at the bundle:
    ///
    /// - `SSL_CERT_FILE` — OpenSSL (curl built on it, Python's `ssl`, Ruby), Go, rustls-native-certs;
    /// - `REQUESTS_CA_BUNDLE` — Python `requests` (which otherwise uses certifi);
    /// - `CURL_CA_BUNDLE` — curl, and `requests` too;
    /// - `NODE_EXTRA_CA_CERTS` — Node adds these certificates to its own compiled-in Mozilla
    ///   roots. It points at the whole bundle, not the harness CA alone: Node then also trusts the
    ///   host's own additions to its system roots (a corporate root, an operator's test CA) like
    ///   every other client in the enclosure does, and there is one file to keep right rather
    ///   than two. The cost is parsing ~150 more certificates at Node start-up (milliseconds);
    /// - `GIT_SSL_CAINFO` — git over HTTPS.
    pub fn env(&self) -> [(&'static str, &Path); 5] {
        let p = self.path.as_path();
        [
            ("SSL_CERT_FILE", p),
            ("REQUESTS_CA_BUNDLE", p),
            ("CURL_CA_BUNDLE", p),
            ("NODE_EXTRA_CA_CERTS", p),
            ("GIT_SSL_CAINFO", p),
        ]
    }

    /// The bind mounts of this bundle over every system CA bundle path that exists on this host
    /// (see [`TrustMounts::discover`]); found now, before any fork.
    pub fn mounts(&self) -> Result<TrustMounts, TrustError> {
        TrustMounts::discover(&self.path)
    }

    /// As [`mounts`](Self::mounts), plus certifi's copies in the virtualenvs the enclosed
    /// command will use ([`namespace::command_venvs`]).
    pub fn mounts_for(&self, venvs: &[PathBuf]) -> Result<TrustMounts, TrustError> {
        TrustMounts::discover_for(&self.path, venvs)
    }
}

/// Writes `bytes` to `path` through a temporary file renamed over it, mode 0644. A bundle
/// already bind-mounted into a running enclosure keeps its old contents (the mount holds the old
/// inode); new enclosures get the new one.
fn write_replace(path: &Path, bytes: &[u8]) -> Result<(), TrustError> {
    let io_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| TrustError::Io { path: p, source }
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(io_err(parent))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        // Readable by the enclosed user whatever the daemon's umask.
        file.set_permissions(fs::Permissions::from_mode(0o644))?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(&tmp)(e));
    }
    fs::rename(&tmp, path).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAKE_CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn tempdir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "harness-trust-test-{tag}-{}-{}",
            std::process::id(),
            ulid::Ulid::new()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn bundle_is_system_roots_then_the_harness_ca() {
        let dir = tempdir("bundle");
        let system = dir.join("system.crt");
        // No trailing newline: the CA must still start on a line of its own.
        fs::write(
            &system,
            "-----BEGIN CERTIFICATE-----\nSYS\n-----END CERTIFICATE-----",
        )
        .unwrap();
        let out = dir.join("sub/bundle.pem");
        let bundle = TrustBundle::build_from(&system, FAKE_CA, &out).unwrap();
        let text = fs::read_to_string(&out).unwrap();
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----\nSYS\n-----END CERTIFICATE-----\n"));
        assert!(text.ends_with(FAKE_CA));
        assert_eq!(bundle.system_roots(), Some(system.as_path()));
        let mode = fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        // Rebuilding replaces, never appends.
        TrustBundle::build_from(&system, FAKE_CA, &out).unwrap();
        assert_eq!(fs::read_to_string(&out).unwrap(), text);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_system_roots_give_a_bundle_of_the_ca_alone() {
        let dir = tempdir("nosys");
        let out = dir.join("bundle.pem");
        let bundle = TrustBundle::build_from(&dir.join("absent.crt"), FAKE_CA, &out).unwrap();
        assert_eq!(bundle.system_roots(), None);
        let text = fs::read_to_string(&out).unwrap();
        assert!(text.ends_with(FAKE_CA));
        assert_eq!(text.matches("BEGIN CERTIFICATE").count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_a_ca_that_is_not_pem_and_names_the_bundle() {
        let dir = tempdir("notpem");
        let out = dir.join("bundle.pem");
        let err = TrustBundle::build_from(&dir.join("absent"), "garbage", &out).unwrap_err();
        assert!(err.to_string().contains("bundle.pem"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn env_points_every_variable_at_the_bundle() {
        let dir = tempdir("env");
        let out = dir.join("bundle.pem");
        let bundle = TrustBundle::build_from(&dir.join("absent"), FAKE_CA, &out).unwrap();
        let env = bundle.env();
        let names: Vec<_> = env.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            [
                "SSL_CERT_FILE",
                "REQUESTS_CA_BUNDLE",
                "CURL_CA_BUNDLE",
                "NODE_EXTRA_CA_CERTS",
                "GIT_SSL_CAINFO"
            ]
        );
        assert!(env.iter().all(|(_, p)| *p == out.as_path()));
        fs::remove_dir_all(&dir).unwrap();
    }
}
