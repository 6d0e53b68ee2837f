//! The mount-namespace step of trust injection: in the enclosed child, between fork and exec,
//! a private mount namespace in which the harness bundle is bind-mounted read-only over every
//! system CA bundle path (and certifi's `cacert.pem` files), so that clients ignoring
//! `SSL_CERT_FILE` and friends trust the harness CA too. The host's files are untouched.
//!
//! Everything that allocates — finding the targets, building C strings — happens in
//! [`TrustMounts::discover`] / [`TrustMounts::new`], in the parent. [`TrustMounts::enter`] only
//! makes system calls (`unshare`, `mount`) on those prepared strings: it is async-signal-safe and
//! may run in a `pre_exec` hook of a multi-threaded parent.
//!
//! It needs `CAP_SYS_ADMIN`, so in `pre_exec` it must run **before** the hook drops privileges
//! (setgroups/setgid/setuid). Running as an unprivileged user afterwards, the agent cannot
//! unmount the bundle, and mounts it inherits are locked even in a user namespace of its own.
use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::TrustError;

/// System CA bundle paths covered when they exist (Debian/Ubuntu/Alpine, Fedora/RHEL, macOS-like
/// and LibreSSL layouts).
pub const SYSTEM_BUNDLE_PATHS: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Where Python's certifi keeps its own copy of the Mozilla roots (used by `requests`, `httpx`,
/// `pip`, … unless told otherwise). `*` matches any run of characters within one path component.
pub const CERTIFI_PATTERNS: [&str; 4] = [
    "/usr/lib/python3*/dist-packages/certifi/cacert.pem",
    "/usr/local/lib/python3*/site-packages/certifi/cacert.pem",
    "/root/.pyenv/versions/*/lib/python3*/site-packages/certifi/cacert.pem",
    "/usr/lib/python3*/site-packages/certifi/cacert.pem",
];

/// Where certifi's roots sit inside a virtualenv (relative to its root): its own certifi, and
/// the copy pip vendors.
pub const VENV_CERTIFI_PATTERNS: [&str; 4] = [
    "lib/python3*/site-packages/certifi/cacert.pem",
    "lib64/python3*/site-packages/certifi/cacert.pem",
    "lib/python3*/site-packages/pip/_vendor/certifi/cacert.pem",
    "lib64/python3*/site-packages/pip/_vendor/certifi/cacert.pem",
];

/// The Python virtualenvs an enclosed command will run in, as far as can be told before it
/// starts: the one whose `bin/` holds `program` (found on `path` when it names no directory, as
/// exec would find it; `venv/bin/python` or a console script such as `venv/bin/agent`), and
/// `virtual_env` (an activated `VIRTUAL_ENV`). A directory counts only when it has the
/// `pyvenv.cfg` every virtualenv has. The program's path is not canonicalised: a venv's
/// `python` is a symlink to the system interpreter, and it is the link's directory that says
/// which site-packages it uses.
pub fn command_venvs(
    program: &Path,
    path: Option<&OsStr>,
    virtual_env: Option<&OsStr>,
) -> Vec<PathBuf> {
    let found = if program.components().count() > 1 {
        Some(program.to_path_buf())
    } else {
        path.into_iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    };
    let from_program = found
        .as_deref()
        .and_then(Path::parent)
        .filter(|bin| bin.file_name() == Some(OsStr::new("bin")))
        .and_then(Path::parent)
        .map(Path::to_path_buf);
    let mut venvs = Vec::new();
    for root in from_program
        .into_iter()
        .chain(virtual_env.map(PathBuf::from))
    {
        if root.join("pyvenv.cfg").is_file() && !venvs.contains(&root) {
            venvs.push(root);
        }
    }
    venvs
}

/// Bind mounts prepared before fork, performed by [`enter`](Self::enter) in the child.
#[derive(Debug, Clone)]
pub struct TrustMounts {
    bundle: CString,
    targets: Vec<CString>,
}

// === impl TrustMounts ===

impl TrustMounts {
    /// Mounts of `bundle` over every path of [`SYSTEM_BUNDLE_PATHS`] and [`CERTIFI_PATTERNS`]
    /// that exists here as a regular file (symlinks resolved, duplicates and the bundle itself
    /// dropped).
    pub fn discover(bundle: &Path) -> Result<TrustMounts, TrustError> {
        TrustMounts::discover_for(bundle, &[])
    }

    /// As [`discover`](Self::discover), plus certifi's copies inside the Python virtualenvs
    /// `venvs` (see [`command_venvs`]): a virtualenv's `requests` or `httpx` told to ignore the
    /// environment (`trust_env=False`) reads `certifi/cacert.pem` from its own site-packages,
    /// which no system-wide pattern can name.
    pub fn discover_for(bundle: &Path, venvs: &[PathBuf]) -> Result<TrustMounts, TrustError> {
        let mut candidates: Vec<PathBuf> = SYSTEM_BUNDLE_PATHS.iter().map(PathBuf::from).collect();
        for pattern in CERTIFI_PATTERNS {
            candidates.extend(expand(Path::new(pattern)));
        }
        for venv in venvs {
            for pattern in VENV_CERTIFI_PATTERNS {
                candidates.extend(expand(&venv.join(pattern)));
            }
        }
        TrustMounts::new(bundle, candidates)
    }

    /// Mounts of `bundle` over each of `targets` that exists as a regular file (after resolving
    /// symlinks; missing ones are skipped, duplicates and the bundle itself dropped).
    pub fn new(
        bundle: &Path,
        targets: impl IntoIterator<Item = PathBuf>,
    ) -> Result<TrustMounts, TrustError> {
        let bundle_real = bundle.canonicalize().map_err(|source| TrustError::Io {
            path: bundle.to_path_buf(),
            source,
        })?;
        let mut resolved: Vec<PathBuf> = Vec::new();
        for target in targets {
            // A bind mount onto a path follows its symlinks, so mount onto the final file: two
            // names for one file (e.g. /etc/ssl/cert.pem -> certs/ca-certificates.crt) become one.
            let Ok(real) = target.canonicalize() else {
                continue;
            };
            if !real.is_file() || real == bundle_real || resolved.contains(&real) {
                continue;
            }
            resolved.push(real);
        }
        Ok(TrustMounts {
            bundle: c_path(&bundle_real)?,
            targets: resolved
                .iter()
                .map(|p| c_path(p))
                .collect::<Result<_, _>>()?,
        })
    }

    /// A private mount namespace with nothing mounted in it: what an enclosure gets when TLS
    /// is not intercepted (the session still needs a mount namespace of its own for its
    /// `/proc`).
    pub fn none() -> TrustMounts {
        TrustMounts {
            bundle: CString::default(),
            targets: Vec::new(),
        }
    }

    /// The files the bundle will be mounted over.
    pub fn targets(&self) -> impl Iterator<Item = &Path> {
        self.targets
            .iter()
            .map(|c| Path::new(OsStr::from_bytes(c.as_bytes())))
    }

    /// Registers [`enter`](Self::enter) as a `pre_exec` hook of `cmd`. Hooks run in the order
    /// they were registered, so call this **before** registering the hook that drops privileges.
    pub fn install(self, cmd: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        // SAFETY: the hook runs in the forked child before exec; `enter` only makes the
        // async-signal-safe system calls unshare(2) and mount(2) on C strings prepared before the
        // fork and owned by the closure, and allocates nothing.
        unsafe {
            cmd.pre_exec(move || self.enter());
        }
    }

    /// In the calling process: a new mount namespace, `/` made recursively private (nothing
    /// done here propagates back to the host), then the bundle bind-mounted read-only over each
    /// target.
    ///
    /// Async-signal-safe: no allocation, no locks, only `unshare(2)` and `mount(2)` on strings
    /// prepared beforehand; errors are bare errno values. Meant for `Command::pre_exec`, before
    /// privileges are dropped. A failure fails the spawn (fail closed: an agent that would not
    /// trust the harness CA, or would trust the host's unmodified bundle, is not started).
    pub fn enter(&self) -> io::Result<()> {
        // SAFETY: unshare takes only a flag word and touches no memory of ours.
        if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the target is a NUL-terminated static string; null source, fstype and data are
        // what mount(2) documents for a propagation change.
        let rc = unsafe {
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        for target in &self.targets {
            // SAFETY: `self.bundle` and `target` are NUL-terminated strings owned by `self`, alive
            // for the whole call; null fstype and data are ignored for MS_BIND.
            let rc = unsafe {
                libc::mount(
                    self.bundle.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            // A bind mount's read-only flag can only be set by remounting it.
            // SAFETY: as above; a null source is what mount(2) documents for MS_REMOUNT.
            let rc = unsafe {
                libc::mount(
                    std::ptr::null(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                    std::ptr::null(),
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

fn c_path(path: &Path) -> Result<CString, TrustError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| TrustError::NulInPath {
        path: path.to_path_buf(),
    })
}

/// Expands a pattern whose components may contain `*` (any run of characters, not `/`) into
/// the existing paths it matches, sorted. Unreadable directories match nothing.
pub fn expand(pattern: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::new()];
    for component in pattern.components() {
        let part = component.as_os_str().as_bytes();
        let mut next = Vec::new();
        for base in &found {
            if !part.contains(&b'*') {
                next.push(base.join(component));
                continue;
            }
            let Ok(entries) = std::fs::read_dir(if base.as_os_str().is_empty() {
                Path::new(".")
            } else {
                base
            }) else {
                continue;
            };
            let mut names: Vec<_> = entries
                .filter_map(Result::ok)
                .map(|e| e.file_name())
                .filter(|n| wildcard_match(part, n.as_bytes()))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| base.join(n)));
        }
        found = next;
    }
    found.retain(|p| p.exists());
    found
}

/// `*`-only glob match of a whole file name.
fn wildcard_match(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.iter().position(|&b| b == b'*') {
        None => pattern == name,
        Some(star) => {
            let (prefix, rest) = (&pattern[..star], &pattern[star + 1..]);
            if !name.starts_with(prefix) {
                return false;
            }
            let name = &name[prefix.len()..];
            (0..=name.len()).any(|i| wildcard_match(rest, &name[i..]))
        }
    }
}

#[cfg(test)]
mod tests;
