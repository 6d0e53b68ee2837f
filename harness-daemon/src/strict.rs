//! Strict modes for the places harness keeps its records and keys — the ledger directory and
//! the CA directory — as sshd's `StrictModes` checks a user's `~/.ssh`: harness refuses to use
//! a directory that someone other than root (or the user harness runs as) could change.
//!
//! An enclosed agent runs as an unprivileged user. If that user could write the ledger
//! directory, or any directory above it, it could delete or rename earlier sessions (and their
//! checkpoints) and `harness verify` would never hear of them; if it could write the CA
//! directory it could swap the CA. So, for a directory `D` harness writes in:
//!
//! - `D` itself (and each subdirectory harness keeps there) must be a directory owned by root or
//!   by the effective user, and not writable by group or others;
//! - each ancestor of `D` up to `/` must be owned by root or by the effective user, and not
//!   writable by group or others — except a directory with the sticky bit (`/tmp`, mode 1777),
//!   in which nobody but an entry's owner may remove or rename it, so harness's own
//!   root-owned directory there cannot be taken away (the one exception to sshd's rule);
//! - symbolic links are followed (the checks apply to the real path, as sshd's do).
//!
//! Nothing is ever chmodded or chowned to make it pass: an unsafe directory is refused with one
//! line naming it and saying why, for the operator to fix.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

/// Why a directory or file may not be used.
#[derive(Debug, thiserror::Error)]
pub enum StrictError {
    /// It could not be examined.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Someone harness does not trust could change it.
    #[error("{path}: {reason}")]
    Unsafe {
        /// The directory or file at fault (the ancestor, when an ancestor is).
        path: PathBuf,
        /// What is wrong and what it would allow.
        reason: String,
    },
}

/// How strictly a file's permission bits are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Others may read it, nobody but its owner may write it (0644).
    Public,
    /// Nobody but its owner may read or write it (0600): a private key.
    Secret,
}

/// Checks the directory `dir` — called `what` in errors ("the ledger directory") — and all
/// its ancestors, following symbolic links (module docs). `dir` must exist.
pub fn check_dir(dir: &Path, what: &str) -> Result<(), StrictError> {
    let real = dir.canonicalize().map_err(|source| StrictError::Io {
        path: dir.to_owned(),
        source,
    })?;
    check_one(&real, what, None)?;
    for ancestor in real.ancestors().skip(1) {
        check_one(ancestor, what, Some(&real))?;
    }
    Ok(())
}

/// Before `dir` is created: checks its deepest existing ancestor (as [`check_dir`] would check
/// an ancestor, or as `dir` itself if `dir` exists), so that nothing is created in a place
/// others could change.
pub fn check_creatable(dir: &Path, what: &str) -> Result<(), StrictError> {
    let abs = if dir.is_absolute() {
        dir.to_owned()
    } else {
        std::env::current_dir()
            .map_err(|source| StrictError::Io {
                path: dir.to_owned(),
                source,
            })?
            .join(dir)
    };
    let Some(existing) = abs.ancestors().find(|a| a.exists()) else {
        return Ok(());
    };
    if existing == abs {
        return check_dir(dir, what);
    }
    let real = existing.canonicalize().map_err(|source| StrictError::Io {
        path: existing.to_owned(),
        source,
    })?;
    for ancestor in real.ancestors() {
        check_one(ancestor, what, Some(dir))?;
    }
    Ok(())
}

/// Checks a file harness keeps (a key): not a symbolic link, owned by root or the effective
/// user, and not writable — for [`FileKind::Secret`] not readable either — by group or others.
pub fn check_file(path: &Path, what: &str, kind: FileKind) -> Result<(), StrictError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::symlink_metadata(path).map_err(|source| StrictError::Io {
            path: path.to_owned(),
            source,
        })?;
        let unsafe_ = |reason: String| StrictError::Unsafe {
            path: path.to_owned(),
            reason: format!("refusing {what}: {reason}"),
        };
        if !meta.file_type().is_file() {
            return Err(unsafe_("it is not a regular file".into()));
        }
        if let Some(reason) = untrusted_owner(meta.uid()) {
            return Err(unsafe_(reason));
        }
        let mode = meta.mode() & 0o7777;
        let (forbidden, says) = match kind {
            FileKind::Public => (0o022, "writable by group or others"),
            FileKind::Secret => (0o077, "readable or writable by group or others"),
        };
        if mode & forbidden != 0 {
            return Err(unsafe_(format!("it is {says} (mode {mode:04o})")));
        }
    }
    #[cfg(not(unix))]
    let _ = (path, what, kind);
    Ok(())
}

/// Checks one directory: `dir` itself when `beneath` is `None`, else an ancestor of `beneath`.
fn check_one(dir: &Path, what: &str, beneath: Option<&Path>) -> Result<(), StrictError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(dir).map_err(|source| StrictError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let unsafe_ = |reason: String| {
            StrictError::Unsafe {
            path: dir.to_owned(),
            reason: match beneath {
                None => format!("refusing {what}: {reason}"),
                Some(target) => format!(
                    "refusing {what} {} beneath it: {reason}, so whoever can write here could replace what lies beneath",
                    target.display()
                ),
            },
        }
        };
        if !meta.is_dir() {
            return Err(unsafe_("it is not a directory".into()));
        }
        if let Some(reason) = untrusted_owner(meta.uid()) {
            return Err(unsafe_(reason));
        }
        let mode = meta.mode() & 0o7777;
        let sticky = mode & 0o1000 != 0;
        if mode & 0o022 != 0 && (beneath.is_none() || !sticky) {
            let who = if mode & 0o002 != 0 {
                "others"
            } else {
                "its group"
            };
            let hint = if beneath.is_none() {
                " (an enclosed agent could erase or rewrite what harness keeps there; chmod go-w it)"
            } else {
                " and not sticky"
            };
            return Err(unsafe_(format!(
                "it is writable by {who} (mode {mode:04o}){hint}"
            )));
        }
    }
    #[cfg(not(unix))]
    let _ = (dir, what, beneath);
    Ok(())
}

/// Whether `uid` may own harness's directories and keys: root, or the user harness runs as.
#[cfg(unix)]
fn trusted(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

/// Why an owner `uid` is not to be trusted, when it is not (files and directories alike).
#[cfg(unix)]
fn untrusted_owner(uid: u32) -> Option<String> {
    (!trusted(uid)).then(|| format!("it is owned by uid {uid}, not {}", trusted_owners()))
}

#[cfg(unix)]
fn trusted_owners() -> String {
    match nix::unistd::geteuid().as_raw() {
        0 => "root".into(),
        euid => format!("root or uid {euid} (the user harness runs as)"),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("harness-strict-{tag}-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        d
    }

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn refused(r: Result<(), StrictError>, path: &Path, words: &str) {
        match r {
            Err(StrictError::Unsafe { path: p, reason }) => {
                assert_eq!(p, path.canonicalize().unwrap(), "{reason}");
                let line = format!("{}: {reason}", p.display());
                assert!(line.contains(words), "{line}");
                assert_eq!(line.lines().count(), 1, "{line}");
            }
            other => panic!("{}: expected a refusal, got {other:?}", path.display()),
        }
    }

    #[test]
    fn a_private_directory_under_a_sticky_tmp_is_accepted() {
        // The system temp dir is 1777 on these machines: a sticky ancestor is fine.
        let d = scratch("ok");
        check_dir(&d, "the ledger directory").unwrap();
        check_creatable(&d.join("a/b"), "the ledger directory").unwrap();
        chmod(&d, 0o700);
        check_dir(&d, "the ledger directory").unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_group_or_world_writable_directory_is_refused_even_sticky() {
        let d = scratch("mode");
        for mode in [0o777, 0o775, 0o757, 0o1777] {
            chmod(&d, mode);
            refused(
                check_dir(&d, "the ledger directory"),
                &d,
                "refusing the ledger directory: it is writable by",
            );
        }
        chmod(&d, 0o755);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_writable_ancestor_is_refused_unless_sticky() {
        let top = scratch("ancestor");
        let ledger = top.join("mid").join("ledger");
        std::fs::create_dir_all(&ledger).unwrap();
        chmod(&top, 0o777);
        refused(
            check_dir(&ledger, "the ledger directory"),
            &top,
            "not sticky",
        );
        refused(
            check_creatable(&top.join("mid/new"), "the ledger directory"),
            &top,
            "writable by others",
        );
        chmod(&top, 0o1777);
        check_dir(&ledger, "the ledger directory").unwrap();
        // Through a symbolic link, the real path is what counts.
        chmod(&top, 0o777);
        let link = std::env::temp_dir().join(format!("harness-strict-link-{}", ulid::Ulid::new()));
        std::os::unix::fs::symlink(&ledger, &link).unwrap();
        refused(check_dir(&link, "the ledger directory"), &top, "not sticky");
        std::fs::remove_file(&link).unwrap();
        chmod(&top, 0o755);
        std::fs::remove_dir_all(&top).unwrap();
    }

    #[test]
    fn a_directory_owned_by_another_user_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED a_directory_owned_by_another_user_is_refused: needs root to chown");
            return;
        }
        let top = scratch("owner");
        let ledger = top.join("ledger");
        std::fs::create_dir(&ledger).unwrap();
        std::os::unix::fs::chown(&ledger, Some(65534), None).unwrap();
        refused(
            check_dir(&ledger, "the ledger directory"),
            &ledger,
            "owned by uid 65534, not root",
        );
        std::os::unix::fs::chown(&ledger, Some(0), None).unwrap();
        std::os::unix::fs::chown(&top, Some(65534), None).unwrap();
        refused(
            check_dir(&ledger, "the ledger directory"),
            &top,
            "owned by uid 65534",
        );
        std::fs::remove_dir_all(&top).unwrap();
    }

    #[test]
    fn key_files_must_be_private() {
        let d = scratch("keys");
        let key = d.join("k");
        std::fs::write(&key, "x").unwrap();
        chmod(&key, 0o600);
        check_file(&key, "the signing key", FileKind::Secret).unwrap();
        chmod(&key, 0o640);
        refused(
            check_file(&key, "the signing key", FileKind::Secret),
            &key,
            "readable or writable by group or others (mode 0640)",
        );
        check_file(&key, "the public key", FileKind::Public).unwrap();
        chmod(&key, 0o666);
        refused(
            check_file(&key, "the public key", FileKind::Public),
            &key,
            "writable by group or others",
        );
        let link = d.join("link");
        std::os::unix::fs::symlink(&key, &link).unwrap();
        match check_file(&link, "the signing key", FileKind::Secret) {
            Err(StrictError::Unsafe { reason, .. }) => {
                assert!(reason.contains("not a regular file"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}
