//! The ledger: an append-only, hash-chained, durable record per session, with signed Merkle
//! checkpoints. The format is specified in SPEC.md at the repository root; this module is the
//! reference writer and verifier. It has no Linux-only dependency, so `harness verify` runs on
//! any platform.
//!
//! ```text
//! Ledger::open(dir) ─► open_session(SessionOpen) ─► SessionWriter ─► append(Entry).await ─► Durable
//!                                                        │ (one writer thread per session:
//!                                                        │  group commit, one fdatasync a batch)
//!                                                        └► close(SessionClose).await (final checkpoint)
//! verify::verify_path(path) ─► Report { problems, … }
//! ```
//!
//! A [`Durable`] can only be made by the writer once an entry is on stable storage; code that
//! releases a response to the agent must hold one.
#![forbid(unsafe_code)]

mod body;
pub(crate) mod canon;
pub mod cli;
mod entry;
pub mod merkle;
pub mod note;
mod recover;
pub mod verify;
mod writer;

pub use body::{blob_path, BlobWriter, Body, INLINE_MAX};
pub use canon::{
    format_ts, genesis, parse_line, sha256, CanonError, Hash, Line, FORMAT_VERSION,
    MAX_SAFE_INTEGER,
};
pub use entry::*;
pub use writer::{Durable, SessionWriter, LAZY_WAIT};

use hmac::{Hmac, Mac as _};
use note::NoteSigner;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use ulid::Ulid;

/// Errors from the ledger, each naming the file (and entry) it concerns.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// An I/O error on a ledger file.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The session stopped accepting entries after an earlier failure (fail-closed).
    #[error("{path}: session ledger failed earlier and accepts no more entries ({reason})")]
    Failed {
        /// The session file.
        path: PathBuf,
        /// The first failure.
        reason: String,
    },
    /// The session was closed; it accepts no more entries.
    #[error("{path}: session is closed")]
    Closed {
        /// The session file.
        path: PathBuf,
    },
    /// An entry cannot be written (nothing was written; the session is unaffected).
    #[error("{path}: entry cannot be recorded: {source}")]
    Entry {
        /// The session file.
        path: PathBuf,
        /// Why.
        #[source]
        source: CanonError,
    },
    /// A line of a session file is invalid and is not its last line: tampering or corruption.
    /// The writer refuses to append to such a session.
    #[error("{path}: seq {seq}: {reason}")]
    Corrupt {
        /// The session file.
        path: PathBuf,
        /// The sequence number the bad line holds or should hold.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// A key file is unreadable or malformed.
    #[error("{path}: {reason}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The ledger directory, one of its ancestors, a subdirectory or a key file could be
    /// changed by someone other than root (or the user harness runs as): refused, never
    /// repaired ([`crate::strict`]).
    #[error("{path}: {reason}")]
    Unsafe {
        /// The directory or file at fault.
        path: PathBuf,
        /// Why, and what it would allow.
        reason: String,
    },
    /// A directory holds no session file (and no checkpoint of a vanished one): it is not a
    /// ledger.
    #[error("{path}: no harness ledger here (no session files)")]
    NoLedger {
        /// The directory.
        path: PathBuf,
    },
}

impl From<crate::strict::StrictError> for LedgerError {
    fn from(e: crate::strict::StrictError) -> LedgerError {
        match e {
            crate::strict::StrictError::Io { path, source } => LedgerError::Io { path, source },
            crate::strict::StrictError::Unsafe { path, reason } => {
                LedgerError::Unsafe { path, reason }
            }
        }
    }
}

impl LedgerError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> LedgerError {
        LedgerError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// When the writer signs a checkpoint (it always signs one when a session closes).
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// After this many entries since the last checkpoint.
    pub checkpoint_every: u64,
    /// After this long since the last checkpoint, if entries were added.
    pub checkpoint_interval: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(10),
        }
    }
}

/// A ledger directory, opened for writing.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<LedgerInner>,
}

struct LedgerInner {
    dir: PathBuf,
    signer: NoteSigner,
    fingerprint_key: [u8; 32],
    options: Options,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("dir", &self.inner.dir)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

/// Path of the checkpoint signing key in a ledger directory.
pub const SIGNING_KEY: &str = "keys/checkpoint.key";
/// Path of the checkpoint verifier (public) key in a ledger directory.
pub const VERIFIER_KEY: &str = "keys/checkpoint.pub";
/// Path of the fingerprint (HMAC) key in a ledger directory.
pub const FINGERPRINT_KEY: &str = "keys/fingerprint.key";

impl Ledger {
    /// Opens (creating if needed) the ledger directory, its key files and subdirectories.
    ///
    /// Refuses ([`LedgerError::Unsafe`], naming the path and the reason) a directory that
    /// someone other than root or the user harness runs as could change — the ledger
    /// directory, its subdirectories, or any ancestor up to `/` (sticky ones such as `/tmp`
    /// excepted) — and key files others could read or write: an enclosed agent must not be
    /// able to erase sessions or forge checkpoints ([`crate::strict`]). Nothing is chmodded to
    /// make it pass. What it creates is the daemon's user's (root's): directories 0755
    /// (`keys/` 0700), files 0644 (keys 0600).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Ledger, LedgerError> {
        Ledger::open_with(dir, Options::default())
    }

    /// [`Ledger::open`] with explicit checkpoint options.
    pub fn open_with(dir: impl Into<PathBuf>, options: Options) -> Result<Ledger, LedgerError> {
        use crate::strict::{check_creatable, check_dir, check_file, FileKind};
        let dir = dir.into();
        check_creatable(&dir, "the ledger directory")?;
        for (sub, mode) in [
            ("", 0o755),
            ("blobs", 0o755),
            ("checkpoints", 0o755),
            ("recovery", 0o755),
            ("keys", 0o700),
            ("locks", 0o700),
        ] {
            let d = dir.join(sub);
            if !d.is_dir() {
                create_dir(&d, mode)?;
                if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
                    fsync_dir(parent)?;
                }
            }
        }
        check_dir(&dir, "the ledger directory")?;
        for (sub, what) in [
            ("blobs", "the ledger's blobs directory"),
            ("checkpoints", "the ledger's checkpoints directory"),
            ("recovery", "the ledger's recovery directory"),
            ("keys", "the ledger's keys directory"),
            ("locks", "the ledger's locks directory"),
        ] {
            check_dir(&dir.join(sub), what)?;
        }
        let signer_path = dir.join(SIGNING_KEY);
        let text = create_once(&signer_path, 0o600, || {
            let mut seed = [0u8; 32];
            random(&mut seed);
            let text = NoteSigner::from_seed(seed).to_text() + "\n";
            seed.fill(0);
            text
        })?;
        check_file(&signer_path, "the checkpoint signing key", FileKind::Secret)?;
        let signer = NoteSigner::parse(&text).map_err(|reason| LedgerError::Key {
            path: signer_path.clone(),
            reason,
        })?;
        let verifier_text = signer.verifier().to_text() + "\n";
        let verifier_path = dir.join(VERIFIER_KEY);
        create_once(&verifier_path, 0o644, || verifier_text.clone())?;
        check_file(
            &verifier_path,
            "the checkpoint public key",
            FileKind::Public,
        )?;
        let fp_path = dir.join(FINGERPRINT_KEY);
        let fp_text = create_once(&fp_path, 0o600, || {
            let mut key = [0u8; 32];
            random(&mut key);
            hex::encode(key) + "\n"
        })?;
        check_file(&fp_path, "the fingerprint key", FileKind::Secret)?;
        let mut fingerprint_key = [0u8; 32];
        hex::decode_to_slice(fp_text.trim(), &mut fingerprint_key).map_err(|_| {
            LedgerError::Key {
                path: fp_path,
                reason: "fingerprint key is not 64 hex digits".into(),
            }
        })?;
        Ok(Ledger {
            inner: Arc::new(LedgerInner {
                dir,
                signer,
                fingerprint_key,
                options,
            }),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The public key that checks this ledger's checkpoints, in signed-note verifier form.
    pub fn verifier_key(&self) -> String {
        self.inner.signer.verifier().to_text()
    }

    /// The keyed fingerprint of a secret: `hmac-sha256:` and the hex HMAC-SHA256 of `secret`
    /// under this ledger's fingerprint key. Equal secrets give equal fingerprints within one
    /// ledger; without the key, a fingerprint reveals nothing about the secret.
    pub fn fingerprint(&self, secret: &[u8]) -> String {
        fingerprint(&self.inner.fingerprint_key, secret)
    }

    /// A header as it may be recorded: secret headers ([`is_secret_header`]) by fingerprint.
    pub fn header(&self, name: &str, value: &[u8]) -> Header {
        if is_secret_header(name) {
            Header::secret(name, self.fingerprint(value))
        } else {
            Header::new(name, value)
        }
    }

    /// A body for `bytes`: inline up to [`INLINE_MAX`] bytes, else a durable blob.
    pub fn body(&self, bytes: &[u8]) -> Result<Body, LedgerError> {
        if bytes.len() <= INLINE_MAX {
            Ok(Body::from_bytes(bytes))
        } else {
            body::write_blob(self.dir(), bytes)
        }
    }

    /// A writer that streams a large body into a blob.
    pub fn blob_writer(&self) -> Result<BlobWriter, LedgerError> {
        BlobWriter::new(self.dir())
    }

    /// Starts a new session file whose first entry is `open`, durable on return.
    pub async fn open_session(
        &self,
        open: SessionOpen,
    ) -> Result<(SessionWriter, Durable), LedgerError> {
        let id = Ulid::new();
        let path = self.session_path(&id);
        // Taken before the session file exists: a session file whose lock is free is one
        // nobody writes.
        let lock = SessionLock::take(self, &id)?;
        let file = file_options(0o644)
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| LedgerError::io(&path, e))?;
        fsync_dir(self.dir())?;
        let writer =
            SessionWriter::start(self.clone(), id, path, file, lock, writer::Resume::new(&id))?;
        let durable = writer.append(Entry::SessionOpen(open)).await?;
        Ok((writer, durable))
    }

    /// Reopens a session that was not closed (after a crash). A torn final line is moved aside
    /// into `recovery/` and recorded by a `recovery` entry, which is durable on return. Waits
    /// until no other writer holds the session. Refuses with [`LedgerError::Corrupt`] if any
    /// other line is invalid, and with [`LedgerError::Closed`] if the session was closed.
    pub async fn reopen_session(&self, id: Ulid) -> Result<(SessionWriter, Durable), LedgerError> {
        let this = self.clone();
        let path = self.session_path(&id);
        let (lock, file, resume, recovery) = tokio::task::spawn_blocking(move || {
            let lock = SessionLock::take(&this, &id)?;
            let file = recover::open_for_writing(&this.session_path(&id))?;
            let (file, resume, recovery) = recover::recover(&this, &id, file)?;
            Ok::<_, LedgerError>((lock, file, resume, recovery))
        })
        .await
        .map_err(|e| LedgerError::Failed {
            path: path.clone(),
            reason: format!("recovery task: {e}"),
        })??;
        let writer = SessionWriter::start(self.clone(), id, path, file, lock, resume)?;
        let durable = writer.append(Entry::Recovery(recovery)).await?;
        Ok((writer, durable))
    }

    /// Recovers every session of this ledger that no live writer holds (SPEC.md §11), as
    /// every engine start does: an unclosed session gets its `recovery` entry (a torn final
    /// line moved aside), then a `session_close` saying its engine died, and a final
    /// checkpoint; a closed session without a final checkpoint gets one. Sessions a live
    /// engine writes are left alone, and so is a session that cannot be recovered (it is
    /// reported). Returns what was done, one item per session touched.
    pub async fn recover_abandoned(&self) -> Vec<Abandoned> {
        let files = match session_files(self.dir()) {
            Ok(files) => files,
            Err(error) => {
                return vec![Abandoned::Refused {
                    path: self.dir().to_owned(),
                    error,
                }]
            }
        };
        let mut done = Vec::new();
        for path in files {
            let Some(id) = session_id(&path) else {
                continue;
            };
            let this = self.clone();
            let found = tokio::task::spawn_blocking(move || recover::inspect(&this, &id))
                .await
                .unwrap_or_else(|e| {
                    Err(LedgerError::Failed {
                        path: path.clone(),
                        reason: format!("recovery task: {e}"),
                    })
                });
            let item = match found {
                Ok(recover::Found::Live | recover::Found::Complete) => continue,
                Ok(recover::Found::Empty) => Abandoned::Empty { path },
                Ok(recover::Found::Checkpointed(entries)) => {
                    Abandoned::Checkpointed { path, entries }
                }
                Ok(recover::Found::Unclosed(lock, file, resume, recovery)) => {
                    match self
                        .close_abandoned(id, file, lock, resume, &recovery)
                        .await
                    {
                        Ok(entries) => Abandoned::Closed {
                            path,
                            recovery,
                            entries,
                        },
                        Err(error) => Abandoned::Refused { path, error },
                    }
                }
                Err(error) => Abandoned::Refused { path, error },
            };
            done.push(item);
        }
        done
    }

    /// Writes the `recovery` entry and a closing `session_close` of an abandoned session.
    /// Returns how many entries the session now holds.
    async fn close_abandoned(
        &self,
        id: Ulid,
        file: File,
        lock: SessionLock,
        resume: writer::Resume,
        recovery: &Recovery,
    ) -> Result<u64, LedgerError> {
        let path = self.session_path(&id);
        let writer = SessionWriter::start(self.clone(), id, path, file, lock, resume)?;
        writer.append(Entry::Recovery(recovery.clone())).await?;
        let close = writer
            .close(SessionClose::because(ABANDONED_REASON))
            .await?;
        Ok(close.seq() + 1)
    }

    /// Path of session `id`'s file.
    pub fn session_path(&self, id: &Ulid) -> PathBuf {
        self.dir().join(format!("{id}.jsonl"))
    }

    pub(crate) fn signer(&self) -> &NoteSigner {
        &self.inner.signer
    }

    pub(crate) fn options(&self) -> Options {
        self.inner.options
    }
}

/// Who writes a session: an exclusive `flock` on `locks/<ULID>.lock`, held by the session's
/// writer from before its file exists until its `session_close` is durable (the kernel drops
/// it when the writer's process dies). It lives in a directory only root can open, so an
/// enclosed agent, which can read session files, cannot hold a session's lock to keep it from
/// being recovered or to stall a new one.
pub(crate) struct SessionLock(File);

impl SessionLock {
    /// Waits for and takes session `id`'s lock.
    pub(crate) fn take(ledger: &Ledger, id: &Ulid) -> Result<SessionLock, LedgerError> {
        let (path, file) = SessionLock::open(ledger, id)?;
        file.lock().map_err(|e| LedgerError::io(&path, e))?;
        Ok(SessionLock(file))
    }

    /// Takes session `id`'s lock if nobody holds it.
    pub(crate) fn try_take(ledger: &Ledger, id: &Ulid) -> Result<Option<SessionLock>, LedgerError> {
        let (path, file) = SessionLock::open(ledger, id)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(SessionLock(file))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(LedgerError::io(&path, e)),
        }
    }

    fn open(ledger: &Ledger, id: &Ulid) -> Result<(PathBuf, File), LedgerError> {
        let path = ledger.dir().join("locks").join(format!("{id}.lock"));
        let file = file_options(0o600)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| LedgerError::io(&path, e))?;
        Ok((path, file))
    }

    /// Lets the lock go (the session is closed).
    pub(crate) fn release(&self) {
        let _ = self.0.unlock();
    }
}

/// The `session_close` reason of a session closed by recovery.
pub const ABANDONED_REASON: &str = "recovered: the engine recording this session died";

/// What an engine start did to a session no live engine was writing
/// ([`Ledger::recover_abandoned`]).
#[derive(Debug)]
pub enum Abandoned {
    /// Unclosed: reopened (its `recovery` entry says what was moved aside) and closed.
    Closed {
        /// The session file.
        path: PathBuf,
        /// The `recovery` entry written.
        recovery: Recovery,
        /// Entries the session holds now, `session_close` included.
        entries: u64,
    },
    /// Closed without a checkpoint of every entry: the final checkpoint is now written.
    Checkpointed {
        /// The session file.
        path: PathBuf,
        /// Entries the new checkpoint covers.
        entries: u64,
    },
    /// An empty session file (its engine died before `session_open` was durable): left.
    Empty {
        /// The session file.
        path: PathBuf,
    },
    /// Could not be recovered (corrupt, or an I/O error): left as it is.
    Refused {
        /// The session file (or the ledger directory, when it could not be listed).
        path: PathBuf,
        /// Why.
        error: LedgerError,
    },
}

impl std::fmt::Display for Abandoned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Abandoned::Closed {
                path,
                recovery,
                entries,
            } => {
                write!(f, "{}: recovered an abandoned session and closed it ({entries} entries", path.display())?;
                match &recovery.saved_as {
                    Some(saved) => write!(
                        f,
                        "; a torn final line of {} bytes moved to {saved})",
                        recovery.torn_bytes
                    ),
                    None => write!(f, "; no torn line)"),
                }
            }
            Abandoned::Checkpointed { path, entries } => write!(
                f,
                "{}: closed session had no final checkpoint; signed one covering {entries} entries",
                path.display()
            ),
            Abandoned::Empty { path } => write!(
                f,
                "{}: empty session file (its engine died before session_open was durable); left as it is",
                path.display()
            ),
            Abandoned::Refused { path, error } => write!(
                f,
                "{}: abandoned session not recovered, left as it is: {error}",
                path.display()
            ),
        }
    }
}

/// The canonical bytes (SPEC.md §3) of `entry` recorded as `seq` of `session` at `ts` after
/// the entry whose hash is `prev`: what the writer writes as one line, without the newline.
pub fn canonical_entry(
    entry: &Entry,
    session: &Ulid,
    seq: u64,
    ts: &str,
    prev: &Hash,
) -> Result<Vec<u8>, CanonError> {
    Ok(canon::seal(&canon::prepare(entry)?, session, seq, ts, prev))
}

/// `hmac-sha256:<hex>` of `secret` under `key` (SPEC.md §7).
pub fn fingerprint(key: &[u8], secret: &[u8]) -> String {
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(secret);
    format!("hmac-sha256:{}", hex::encode(mac.finalize().into_bytes()))
}

fn random(buf: &mut [u8]) {
    // The OS random source failing is not something a ledger can work around.
    getrandom::fill(buf).expect("the operating system's random source failed");
}

/// Creates `path` with `make()`'s contents unless it exists (never replacing it, even when two
/// processes race), and returns the contents that are there.
fn create_once(
    path: &Path,
    mode: u32,
    make: impl FnOnce() -> String,
) -> Result<String, LedgerError> {
    if !path.exists() {
        let tmp = path.with_extension(format!("tmp-{}", Ulid::new()));
        let mut f = new_file(&tmp, mode)?;
        f.write_all(make().as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| LedgerError::io(&tmp, e))?;
        drop(f);
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(LedgerError::io(path, e)),
        }
        if let Some(parent) = path.parent() {
            fsync_dir(parent)?;
        }
    }
    std::fs::read_to_string(path).map_err(|e| LedgerError::io(path, e))
}

fn new_file(path: &Path, mode: u32) -> Result<File, LedgerError> {
    file_options(mode)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| LedgerError::io(path, e))
}

/// Options for creating a ledger file with `mode` (0644, or 0600 for keys): the umask can only
/// narrow it, never widen it to something others could write.
pub(crate) fn file_options(mode: u32) -> OpenOptions {
    let mut o = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        o.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    o
}

/// Creates directory `path` (and missing parents) with `mode` (0755, or 0700 for keys).
pub(crate) fn create_dir(path: &Path, mode: u32) -> Result<(), LedgerError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        b.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    b.create(path).map_err(|e| LedgerError::io(path, e))
}

/// fsync a directory, so that names created in it are durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), LedgerError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| LedgerError::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// One entry as read back from a session file.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// Sequence number within the session.
    pub seq: u64,
    /// RFC 3339 UTC timestamp the writer gave it.
    pub ts: String,
    /// What happened.
    pub entry: Entry,
}

/// Reads every entry of one session file, in order. Each line must be a well-formed entry, but
/// the chain, blobs and checkpoints are not checked: that is [`verify`]. A torn final line
/// (no newline) is ignored.
pub fn read_session(path: &Path) -> Result<Vec<Recorded>, LedgerError> {
    let bytes = std::fs::read(path).map_err(|e| LedgerError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in bytes.split_inclusive(|b| *b == b'\n').enumerate() {
        let Some(line) = line.strip_suffix(b"\n") else {
            break;
        };
        let l = parse_line(line).map_err(|reason| LedgerError::Corrupt {
            path: path.to_owned(),
            seq: i as u64,
            reason,
        })?;
        out.push(Recorded {
            seq: l.seq,
            ts: l.ts,
            entry: l.entry,
        });
    }
    Ok(out)
}

/// The session files of a ledger directory, oldest first (ULIDs sort by time).
pub fn session_files(dir: &Path) -> Result<Vec<PathBuf>, LedgerError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| LedgerError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// The session id a session file is named by.
pub fn session_id(path: &Path) -> Option<Ulid> {
    path.file_stem()?.to_str()?.parse().ok()
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

    fn scratch(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("harness-ledger-open-{tag}-{}", Ulid::new()))
    }

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o7777
    }

    fn unsafe_at(r: Result<Ledger, LedgerError>, at: &Path, words: &str) {
        match r {
            Err(e @ LedgerError::Unsafe { .. }) => {
                let line = e.to_string();
                assert!(line.starts_with(&format!("{}: ", at.display())), "{line}");
                assert!(line.contains(words), "{line}");
                assert_eq!(line.lines().count(), 1, "{line}");
            }
            other => panic!("{}: expected a refusal, got {other:?}", at.display()),
        }
    }

    #[test]
    fn a_ledger_others_can_write_is_refused_not_repaired() {
        let dir = scratch("mode");
        Ledger::open(&dir).unwrap();
        for m in [0o777, 0o775, 0o1777] {
            chmod(&dir, m);
            unsafe_at(Ledger::open(&dir), &dir, "writable by");
            assert_eq!(mode(&dir), m, "the mode was changed");
        }
        chmod(&dir, 0o755);
        for sub in ["blobs", "checkpoints", "recovery", "keys"] {
            let d = dir.join(sub);
            let was = mode(&d);
            chmod(&d, 0o777);
            unsafe_at(Ledger::open(&dir), &d, "writable by others");
            chmod(&d, was);
        }
        Ledger::open(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_ledger_beneath_a_writable_directory_is_refused_unless_sticky() {
        let top = scratch("ancestor");
        std::fs::create_dir(&top).unwrap();
        chmod(&top, 0o777);
        let dir = top.join("ledger");
        unsafe_at(Ledger::open(&dir), &top, "not sticky");
        assert!(!dir.exists(), "nothing is created in an unsafe place");
        // A sticky, root-owned directory such as /tmp is a safe base.
        chmod(&top, 0o1777);
        Ledger::open(&dir).unwrap();
        chmod(&top, 0o777);
        unsafe_at(Ledger::open(&dir), &top, "not sticky");
        chmod(&top, 0o755);
        std::fs::remove_dir_all(&top).unwrap();
    }

    #[test]
    fn key_files_others_can_read_are_refused() {
        let dir = scratch("keys");
        Ledger::open(&dir).unwrap();
        for (key, m, words) in [
            (
                SIGNING_KEY,
                0o644,
                "readable or writable by group or others (mode 0644)",
            ),
            (
                FINGERPRINT_KEY,
                0o640,
                "readable or writable by group or others (mode 0640)",
            ),
            (
                VERIFIER_KEY,
                0o666,
                "writable by group or others (mode 0666)",
            ),
        ] {
            let path = dir.join(key);
            let was = mode(&path);
            chmod(&path, m);
            unsafe_at(Ledger::open(&dir), &path, words);
            chmod(&path, was);
        }
        Ledger::open(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_ledger_owned_by_another_user_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED a_ledger_owned_by_another_user_is_refused: needs root to chown");
            return;
        }
        let dir = scratch("owner");
        Ledger::open(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        unsafe_at(Ledger::open(&dir), &dir, "owned by uid 65534, not root");
        std::os::unix::fs::chown(&dir, Some(0), Some(0)).unwrap();
        let sessions = dir.join("checkpoints");
        std::os::unix::fs::chown(&sessions, Some(65534), None).unwrap();
        unsafe_at(Ledger::open(&dir), &sessions, "owned by uid 65534");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
