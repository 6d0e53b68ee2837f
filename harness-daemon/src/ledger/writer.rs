//! One writer per session: a dedicated thread that takes every entry queued since its last
//! sync, chains them in order, writes them with one `write` and makes them durable with one
//! `fdatasync` (group commit), then resolves each caller's future with a [`Durable`]. The first
//! failed write or sync fails every waiter and ends the session (fail-closed; a failed sync is
//! never retried). SPEC.md §10.
use super::canon::{self, Hash};
use super::merkle::{leaf_hash, Frontier};
use super::note::{origin, Checkpoint};
use super::{fsync_dir, Entry, Ledger, LedgerError, SessionClose};
use std::fs::File;
use std::io::Write as _;
use std::os::fd::AsRawFd as _;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::oneshot;
use ulid::Ulid;

/// Most entries one batch takes (bounds the write buffer).
const MAX_BATCH: usize = 4096;

/// Space kept allocated past the end of every session file for what closing needs (a
/// `session_close` line is far smaller). Normal entries may not eat into it: when the disk
/// cannot give a batch room *and* this reserve, the batch is refused and the writer closes the
/// session itself, in the reserve, so a full disk never leaves a session without its close
/// and final checkpoint (which would read as tampering).
pub const CLOSE_RESERVE: u64 = 64 * 1024;

/// How much more is allocated at a time when the reserve runs short.
const GROW: u64 = 256 * 1024;

/// The file, allocated at session start, that the final checkpoint is written into.
const SPARE: &str = ".spare";

/// Size of the spare (a signed checkpoint note is a few hundred bytes).
const SPARE_LEN: u64 = 4096;

/// How long a batch of lazy entries only (annotations) waits for an entry someone is waiting
/// on, to share its fsync, before it is committed alone.
pub const LAZY_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

/// Proof that an entry is durable on disk. Only the ledger can make one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durable {
    seq: u64,
    hash: Hash,
}

impl Durable {
    /// Sequence number of the durable entry.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Entry hash: SHA-256 of the entry's canonical bytes.
    pub fn hash(&self) -> Hash {
        self.hash
    }

    /// Entry hash in lower-case hex (as `prev` and `of_hash` hold it).
    pub fn hash_hex(&self) -> String {
        hex::encode(self.hash)
    }
}

/// Where a writer resumes: the state of the chain after the file's last valid entry.
#[derive(Debug, Clone)]
pub(crate) struct Resume {
    pub next_seq: u64,
    pub prev: Hash,
    pub last_ts: String,
    pub frontier: Frontier,
    pub len: u64,
    pub checkpointed: u64,
}

impl Resume {
    pub fn new(id: &Ulid) -> Resume {
        Resume {
            next_seq: 0,
            prev: canon::genesis(id),
            last_ts: String::new(),
            frontier: Frontier::new(),
            len: 0,
            checkpointed: 0,
        }
    }
}

/// Entries that must land in one batch, in order: either all of them are durable or none is
/// reported so.
struct Submit {
    objects: Vec<canon::Prepared>,
    close: bool,
    /// Nobody waits on it to release bytes: it may wait for company (see [`LAZY_WAIT`]).
    lazy: bool,
    done: oneshot::Sender<Result<Vec<Durable>, LedgerError>>,
}

#[derive(Clone)]
enum End {
    Failed(String),
    Closed,
}

/// Appends entries to one session file. Cheap to clone; all clones share one writer thread.
/// When the last clone is dropped without [`SessionWriter::close`], the thread signs a final
/// checkpoint and stops; the session stays unclosed (and can be reopened).
#[derive(Clone)]
pub struct SessionWriter {
    shared: Arc<Shared>,
}

struct Shared {
    id: Ulid,
    path: PathBuf,
    ledger: Ledger,
    tx: mpsc::Sender<Submit>,
    end: Arc<Mutex<Option<End>>>,
}

impl std::fmt::Debug for SessionWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionWriter")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

impl SessionWriter {
    pub(crate) fn start(
        ledger: Ledger,
        id: Ulid,
        path: PathBuf,
        file: File,
        lock: super::SessionLock,
        resume: Resume,
    ) -> Result<SessionWriter, LedgerError> {
        let (tx, rx) = mpsc::channel();
        let end = Arc::new(Mutex::new(None));
        // What closing needs is set aside before anything else is accepted.
        let allocated = reserve(&file, &path, resume.len, CLOSE_RESERVE)?;
        make_spare(ledger.dir(), &id)?;
        let thread = Thread {
            id,
            path: path.clone(),
            ledger: ledger.clone(),
            file,
            st: resume,
            cp_time: Instant::now(),
            end: end.clone(),
            closed: false,
            buf: Vec::new(),
            allocated,
            lock,
        };
        std::thread::Builder::new()
            .name(format!("ledger-{id}"))
            .spawn(move || thread.run(rx))
            .map_err(|e| LedgerError::io(&path, e))?;
        Ok(SessionWriter {
            shared: Arc::new(Shared {
                id,
                path,
                ledger,
                tx,
                end,
            }),
        })
    }

    /// The session's id (its file name).
    pub fn id(&self) -> Ulid {
        self.shared.id
    }

    /// The session file.
    pub fn path(&self) -> &std::path::Path {
        &self.shared.path
    }

    /// The ledger this session belongs to (for bodies, blobs and fingerprints).
    pub fn ledger(&self) -> &Ledger {
        &self.shared.ledger
    }

    /// Appends `entry`; resolves once it is durable, or with the error that ended the session.
    /// An entry whose future is dropped before it resolves may or may not be written.
    pub async fn append(&self, entry: Entry) -> Result<Durable, LedgerError> {
        self.submit_one(entry, false, false).await
    }

    /// Appends `entry` without asking for a commit of its own: it is written with the next
    /// entry appended by [`append`](Self::append) or [`append_all`](Self::append_all), or
    /// alone after at most [`LAZY_WAIT`]. For entries nobody waits on before releasing bytes
    /// (annotations). Resolves once durable.
    pub async fn append_lazy(&self, entry: Entry) -> Result<Durable, LedgerError> {
        self.submit_one(entry, false, true).await
    }

    /// Appends `entries` consecutively and in one group commit (one `fdatasync` for all of
    /// them: a request head with its body, say); resolves once all are durable, in order.
    pub async fn append_all(&self, entries: Vec<Entry>) -> Result<Vec<Durable>, LedgerError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        self.submit(entries, false, false).await
    }

    /// Writes `session_close` and a final signed checkpoint; resolves when both are durable.
    /// The session accepts nothing after it.
    pub async fn close(&self, close: SessionClose) -> Result<Durable, LedgerError> {
        self.submit_one(Entry::SessionClose(close), true, false)
            .await
    }

    async fn submit_one(
        &self,
        entry: Entry,
        close: bool,
        lazy: bool,
    ) -> Result<Durable, LedgerError> {
        let mut durable = self.submit(vec![entry], close, lazy).await?;
        Ok(durable.remove(0))
    }

    /// Queues `entry` at once, as [`append_lazy`](Self::append_lazy) would when first polled,
    /// and returns a future that resolves once it is durable: an entry queued now comes before
    /// anything the caller appends next, whether or not the caller waits for it.
    pub fn queue_lazy(
        &self,
        entry: Entry,
    ) -> impl std::future::Future<Output = Result<Durable, LedgerError>> + Send + 'static {
        let queued = self.enqueue(vec![entry], false, true);
        let writer = self.clone();
        async move {
            match queued?.await {
                Ok(result) => result.map(|mut durable| durable.remove(0)),
                Err(_) => Err(writer.gone()),
            }
        }
    }

    async fn submit(
        &self,
        entries: Vec<Entry>,
        close: bool,
        lazy: bool,
    ) -> Result<Vec<Durable>, LedgerError> {
        match self.enqueue(entries, close, lazy)?.await {
            Ok(result) => result,
            Err(_) => Err(self.gone()),
        }
    }

    /// Hands `entries` to the writer thread; the receiver gets their fate.
    fn enqueue(
        &self,
        entries: Vec<Entry>,
        close: bool,
        lazy: bool,
    ) -> Result<oneshot::Receiver<Result<Vec<Durable>, LedgerError>>, LedgerError> {
        if let Some(end) = self.ended() {
            return Err(self.end_error(end));
        }
        let objects = entries
            .iter()
            .map(canon::prepare)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| LedgerError::Entry {
                path: self.shared.path.clone(),
                source,
            })?;
        let (done, rx) = oneshot::channel();
        if self
            .shared
            .tx
            .send(Submit {
                objects,
                close,
                lazy,
                done,
            })
            .is_err()
        {
            return Err(self.gone());
        }
        Ok(rx)
    }

    fn ended(&self) -> Option<End> {
        lock(&self.shared.end).clone()
    }

    fn gone(&self) -> LedgerError {
        let end = self
            .ended()
            .unwrap_or_else(|| End::Failed("ledger writer thread ended".into()));
        self.end_error(end)
    }

    fn end_error(&self, end: End) -> LedgerError {
        let path = self.shared.path.clone();
        match end {
            End::Failed(reason) => LedgerError::Failed { path, reason },
            End::Closed => LedgerError::Closed { path },
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded value is a plain Option that a panic cannot leave half-updated.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// === impl Thread ===

struct Thread {
    id: Ulid,
    path: PathBuf,
    ledger: Ledger,
    file: File,
    st: Resume,
    cp_time: Instant,
    end: Arc<Mutex<Option<End>>>,
    closed: bool,
    buf: Vec<u8>,
    /// Where the space allocated for the session file ends (at least `st.len` plus
    /// [`CLOSE_RESERVE`] while the session is open).
    allocated: u64,
    /// Held until the session is closed; dropped with the thread otherwise.
    lock: super::SessionLock,
}

type Waiter = (
    oneshot::Sender<Result<Vec<Durable>, LedgerError>>,
    Vec<Durable>,
);

impl Thread {
    fn run(mut self, rx: mpsc::Receiver<Submit>) {
        let interval = self.ledger.options().checkpoint_interval;
        let mut batch = Vec::new();
        loop {
            let first = if self.st.frontier.size() > self.st.checkpointed {
                match rx.recv_timeout(interval.saturating_sub(self.cp_time.elapsed())) {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) => {
                        if let Err(e) = self.checkpoint() {
                            if is_full(&e) {
                                // As after a batch: closed in its reserve, not left failed.
                                self.close_on_full_disk(&e.to_string());
                            } else {
                                self.fail(&e.to_string());
                            }
                            return;
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                }
            };
            batch.push(first);
            let lazy_until = Instant::now() + LAZY_WAIT;
            loop {
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(m) => batch.push(m),
                        Err(_) => break,
                    }
                }
                // Only lazy entries so far: wait a little for one that someone waits on.
                if batch.len() >= MAX_BATCH || !batch.iter().all(|m| m.lazy) {
                    break;
                }
                match rx.recv_timeout(lazy_until.saturating_duration_since(Instant::now())) {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            if !self.commit(&mut batch) {
                // Fail-closed: dropping `rx` fails everything still queued.
                return;
            }
        }
        if self.st.frontier.size() > self.st.checkpointed {
            if let Err(e) = self.checkpoint() {
                self.fail(&e.to_string());
            }
        }
    }

    /// Writes one batch. Returns false when the session has failed.
    fn commit(&mut self, batch: &mut Vec<Submit>) -> bool {
        self.buf.clear();
        let before = (
            self.st.next_seq,
            self.st.prev,
            self.st.last_ts.clone(),
            self.closed,
        );
        let mut waiters: Vec<Waiter> = Vec::with_capacity(batch.len());
        let mut close_waiter = None;
        let mut leaves = Vec::with_capacity(batch.len());
        for m in batch.drain(..) {
            if self.closed {
                let _ = m.done.send(Err(LedgerError::Closed {
                    path: self.path.clone(),
                }));
                continue;
            }
            // Seal the submission's entries on a copy of the chain state (prepared entries
            // always seal: whatever could refuse an entry refused it in `prepare`).
            let mut st = (self.st.next_seq, self.st.prev, self.st.last_ts.clone());
            let mut sealed = Vec::with_capacity(m.objects.len());
            for object in &m.objects {
                let seq = st.0;
                let ts = self.next_ts(&st.2);
                let bytes = canon::seal(object, &self.id, seq, &ts, &st.1);
                let hash = canon::sha256(&bytes);
                st = (seq + 1, hash, ts);
                sealed.push((bytes, Durable { seq, hash }));
            }
            (self.st.next_seq, self.st.prev, self.st.last_ts) = st;
            let mut durable = Vec::with_capacity(sealed.len());
            for (bytes, d) in sealed {
                self.buf.extend_from_slice(&bytes);
                self.buf.push(b'\n');
                leaves.push(leaf_hash(&d.hash));
                durable.push(d);
            }
            if m.close {
                self.closed = true;
                close_waiter = Some((m.done, durable));
            } else {
                waiters.push((m.done, durable));
            }
        }
        if leaves.is_empty() {
            return true;
        }
        // Room for this batch and, unless it closes the session, for closing after it.
        let room = self.buf.len() as u64
            + if close_waiter.is_some() {
                0
            } else {
                CLOSE_RESERVE
            };
        if let Err(full) = self.make_room(room) {
            (self.st.next_seq, self.st.prev, self.st.last_ts, self.closed) = before;
            let reason = if close_waiter.is_some() && waiters.is_empty() {
                // Not even a close fits: left unclosed, for the next engine start (§11).
                let reason = full.to_string();
                self.fail(&reason);
                reason
            } else {
                self.close_on_full_disk(&full.to_string())
            };
            for (done, _) in waiters.into_iter().chain(close_waiter) {
                let _ = done.send(Err(LedgerError::Failed {
                    path: self.path.clone(),
                    reason: reason.clone(),
                }));
            }
            return false;
        }
        let written = self
            .file
            .write_all(&self.buf)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            let reason = e.to_string();
            // Best effort: drop the bytes nobody was told are durable. Never retry the sync.
            let _ = self.file.set_len(self.st.len);
            self.fail(&reason);
            for (done, _) in waiters.into_iter().chain(close_waiter) {
                let _ = done.send(Err(LedgerError::Io {
                    path: self.path.clone(),
                    source: std::io::Error::new(e.kind(), reason.clone()),
                }));
            }
            return false;
        }
        self.st.len += self.buf.len() as u64;
        for l in leaves {
            self.st.frontier.push(l);
        }
        for (done, durable) in waiters {
            let _ = done.send(Ok(durable));
        }
        let opts = self.ledger.options();
        let due = self.closed
            || self.st.frontier.size() - self.st.checkpointed >= opts.checkpoint_every
            || self.cp_time.elapsed() >= opts.checkpoint_interval;
        if due {
            if let Err(e) = self.checkpoint() {
                if close_waiter.is_none() && is_full(&e) {
                    // The entries are durable and acknowledged; the disk cannot take another
                    // checkpoint file: close the session in its reserve while it still can.
                    self.close_on_full_disk(&e.to_string());
                    return false;
                }
                let reason = e.to_string();
                self.fail(&reason);
                if let Some((done, _)) = close_waiter {
                    let _ = done.send(Err(e));
                }
                return false;
            }
        }
        if let Some((done, durable)) = close_waiter {
            // A session closed because its disk filled up has already been marked failed (its
            // callers are told why): that stands.
            lock(&self.end).get_or_insert(End::Closed);
            self.release();
            let _ = done.send(Ok(durable));
        }
        true
    }

    /// Makes sure `n` more bytes can be appended without the disk refusing them.
    fn make_room(&mut self, n: u64) -> Result<(), LedgerError> {
        if self.st.len + n > self.allocated {
            self.allocated = reserve(&self.file, &self.path, self.st.len, n)?;
        }
        Ok(())
    }

    /// The disk is full: commits a `session_close` saying so, alone, into the reserve (and so
    /// the final checkpoint into the spare), and ends the session. Returns the reason every
    /// later caller is given.
    fn close_on_full_disk(&mut self, why: &str) -> String {
        let reason = format!("the ledger's disk is full ({why}); the session was closed");
        tracing::error!("{}: {reason}", self.path.display());
        let close = Entry::SessionClose(SessionClose::because(format!(
            "the ledger's disk is full: {why}"
        )));
        // Callers that come while the close is being written are told why too: never that the
        // session is merely closed.
        *lock(&self.end) = Some(End::Failed(reason.clone()));
        let (done, mut result) = oneshot::channel();
        let closed = match canon::prepare(&close) {
            Ok(object) => {
                let mut batch = vec![Submit {
                    objects: vec![object],
                    close: true,
                    lazy: false,
                    done,
                }];
                self.commit(&mut batch);
                // `commit` has answered by now.
                match result.try_recv() {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("the close was not answered".to_owned()),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        let reason = match closed {
            Ok(()) => reason,
            // Left unclosed: the next engine start recovers it (SPEC.md §11).
            Err(e) => format!("{reason}, but closing it failed too: {e}"),
        };
        // Later callers are told why, not just that the session is closed.
        *lock(&self.end) = Some(End::Failed(reason.clone()));
        reason
    }

    /// After `session_close`: gives back the space allocated past the end of the file and
    /// the session's lock, before `close` returns, so whoever looks next finds it closed, not
    /// held.
    fn release(&mut self) {
        if self.allocated > self.st.len {
            let _ = nix::fcntl::fallocate(
                self.file.as_raw_fd(),
                nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
                    | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
                self.st.len as i64,
                (self.allocated - self.st.len) as i64,
            );
            self.allocated = self.st.len;
        }
        self.lock.release();
    }

    /// The timestamp of an entry following one stamped `last_ts`.
    fn next_ts(&self, last_ts: &str) -> String {
        let now = canon::format_ts(time::OffsetDateTime::now_utc());
        // Fixed-width UTC: string order is time order. Timestamps never go backwards.
        if now.as_str() < last_ts {
            last_ts.to_owned()
        } else {
            now
        }
    }

    fn fail(&mut self, reason: &str) {
        let mut end = lock(&self.end);
        if end.is_none() {
            *end = Some(End::Failed(reason.to_owned()));
        }
    }

    /// Signs and durably writes a checkpoint for everything committed so far.
    fn checkpoint(&mut self) -> Result<(), LedgerError> {
        self.st.checkpointed =
            sign_checkpoint(&self.ledger, &self.id, &self.st.frontier, self.closed)?;
        self.cp_time = Instant::now();
        Ok(())
    }
}

/// Signs a checkpoint of session `id` covering the entries of `frontier` and writes it
/// durably; the `last` one goes into the session's spare (allocated when the session
/// started), so it is written even on a full disk. Returns the number of entries it covers.
pub(super) fn sign_checkpoint(
    ledger: &Ledger,
    id: &Ulid,
    frontier: &Frontier,
    last: bool,
) -> Result<u64, LedgerError> {
    let size = frontier.size();
    let cp = Checkpoint {
        origin: origin(id),
        size,
        root: frontier.root(),
    };
    let note = ledger.signer().sign(&cp.body());
    write_checkpoint(ledger.dir(), id, size, &note, last)?;
    Ok(size)
}

/// Whether a ledger error is the disk (or quota) being full.
fn is_full(e: &LedgerError) -> bool {
    use std::error::Error as _;
    let mut source: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT));
        }
        source = s.source();
    }
    false
}

/// Allocates `[from, from + want)` of `file` (and [`GROW`] more when the disk has it) without
/// changing its size. Returns where the allocation ends.
fn reserve(file: &File, path: &std::path::Path, from: u64, want: u64) -> Result<u64, LedgerError> {
    use nix::fcntl::{fallocate, FallocateFlags};
    let keep = FallocateFlags::FALLOC_FL_KEEP_SIZE;
    if fallocate(file.as_raw_fd(), keep, from as i64, (want + GROW) as i64).is_ok() {
        return Ok(from + want + GROW);
    }
    fallocate(file.as_raw_fd(), keep, from as i64, want as i64)
        .map_err(|e| LedgerError::io(path, std::io::Error::from(e)))?;
    Ok(from + want)
}

/// Creates `checkpoints/<id>/.spare`, allocated, for the session's final checkpoint.
fn make_spare(dir: &std::path::Path, id: &Ulid) -> Result<(), LedgerError> {
    let sdir = checkpoint_dir(dir, id)?;
    let path = sdir.join(SPARE);
    let f = super::file_options(0o644)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| LedgerError::io(&path, e))?;
    nix::fcntl::fallocate(
        f.as_raw_fd(),
        nix::fcntl::FallocateFlags::empty(),
        0,
        SPARE_LEN as i64,
    )
    .map_err(|e| LedgerError::io(&path, std::io::Error::from(e)))?;
    f.sync_all().map_err(|e| LedgerError::io(&path, e))?;
    fsync_dir(&sdir)
}

/// `checkpoints/<id>/`, created if needed.
fn checkpoint_dir(dir: &std::path::Path, id: &Ulid) -> Result<PathBuf, LedgerError> {
    let cps = dir.join("checkpoints");
    let sdir = cps.join(id.to_string());
    if !sdir.is_dir() {
        super::create_dir(&sdir, 0o755)?;
        fsync_dir(&cps)?;
    }
    Ok(sdir)
}

/// Writes `checkpoints/<id>/<size, 20 digits>.note` atomically and durably: into a new
/// temporary file, or into the session's spare when it is the `last` one and the spare exists.
fn write_checkpoint(
    dir: &std::path::Path,
    id: &Ulid,
    size: u64,
    note: &str,
    last: bool,
) -> Result<(), LedgerError> {
    let sdir = checkpoint_dir(dir, id)?;
    let path = sdir.join(format!("{size:020}.note"));
    let spare = sdir.join(SPARE);
    let tmp = if last && spare.is_file() {
        spare
    } else {
        sdir.join(format!(".tmp-{size:020}"))
    };
    let mut f = super::file_options(0o644)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&tmp)
        .map_err(|e| LedgerError::io(&tmp, e))?;
    // Written over the spare's allocated zeros, then cut to the note's length.
    let written = f
        .write_all(note.as_bytes())
        .and_then(|()| f.set_len(note.len() as u64))
        .and_then(|()| f.sync_all());
    if let Err(e) = written {
        if tmp.file_name() != Some(SPARE.as_ref()) {
            // Its pages go back to a disk that may be full (the spare is kept).
            let _ = std::fs::remove_file(&tmp);
        }
        return Err(LedgerError::io(&tmp, e));
    }
    drop(f);
    std::fs::rename(&tmp, &path).map_err(|e| LedgerError::io(&path, e))?;
    fsync_dir(&sdir)
}
