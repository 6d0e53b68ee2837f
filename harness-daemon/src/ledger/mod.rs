//! The ledger: an append-only, durable record per session.
//!
//! PLACEHOLDER WRITER: this is the minimal append-only writer the enclosure work writes through
//! until the real ledger (hash chain, group commit, checkpoints; issue "The ledger") lands
//! behind the same API. Each entry is one JSON line, fdatasync'd before `append` returns.
mod entry;

pub use entry::*;

use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use ulid::Ulid;

/// Errors from the ledger, each naming the file it concerns.
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
    #[error("{path}: session ledger failed earlier and accepts no more entries")]
    Failed {
        /// The session file.
        path: PathBuf,
    },
}

/// Proof that an entry is durable on disk. Only the ledger can make one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durable {
    seq: u64,
}

impl Durable {
    /// Sequence number of the durable entry.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

/// A ledger directory.
#[derive(Debug, Clone)]
pub struct Ledger {
    dir: PathBuf,
}

impl Ledger {
    /// Opens (creating if needed) the ledger directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Ledger, LedgerError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| LedgerError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Ledger { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts a new session file whose first entry is `open`, durable on return.
    pub async fn open_session(
        &self,
        open: SessionOpen,
    ) -> Result<(SessionWriter, Durable), LedgerError> {
        let id = Ulid::new();
        let path = self.dir.join(format!("{id}.jsonl"));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|source| LedgerError::Io {
                path: path.clone(),
                source,
            })?;
        let writer = SessionWriter {
            id,
            inner: Arc::new(Mutex::new(Inner {
                path,
                file,
                next_seq: 0,
                failed: false,
            })),
        };
        let durable = writer.append(Entry::SessionOpen(open)).await?;
        Ok((writer, durable))
    }
}

struct Inner {
    path: PathBuf,
    file: File,
    next_seq: u64,
    failed: bool,
}

/// Appends entries to one session file. Cheap to clone; all clones share one writer.
#[derive(Clone)]
pub struct SessionWriter {
    id: Ulid,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    ts: String,
    #[serde(flatten)]
    entry: &'a Entry,
}

impl SessionWriter {
    /// The session's id (its file name).
    pub fn id(&self) -> Ulid {
        self.id
    }

    /// Appends `entry`; resolves once it is durable.
    pub async fn append(&self, entry: Entry) -> Result<Durable, LedgerError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut inner = inner.lock().unwrap_or_else(|e| e.into_inner());
            if inner.failed {
                return Err(LedgerError::Failed {
                    path: inner.path.clone(),
                });
            }
            let seq = inner.next_seq;
            let ts = time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            let mut line = serde_json::to_vec(&Line {
                seq,
                ts,
                entry: &entry,
            })
            .expect("entries always serialize");
            line.push(b'\n');
            let result = inner
                .file
                .write_all(&line)
                .and_then(|()| inner.file.sync_data());
            if let Err(source) = result {
                inner.failed = true;
                return Err(LedgerError::Io {
                    path: inner.path.clone(),
                    source,
                });
            }
            inner.next_seq += 1;
            Ok(Durable { seq })
        })
        .await
        .expect("ledger append task panicked")
    }

    /// Writes `session_close`; the session accepts nothing after it.
    pub async fn close(&self, close: SessionClose) -> Result<Durable, LedgerError> {
        self.append(Entry::SessionClose(close)).await
    }
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

/// Reads every entry of one session file, in order (no integrity checks: that is `verify`).
pub fn read_session(path: &Path) -> Result<Vec<Recorded>, LedgerError> {
    #[derive(serde::Deserialize)]
    struct Owned {
        seq: u64,
        ts: String,
        #[serde(flatten)]
        entry: Entry,
    }
    let io = |source| LedgerError::Io {
        path: path.to_owned(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(io)?;
    text.lines()
        .map(|line| {
            let o: Owned = serde_json::from_str(line)
                .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
            Ok(Recorded {
                seq: o.seq,
                ts: o.ts,
                entry: o.entry,
            })
        })
        .collect()
}

/// The session files of a ledger directory, oldest first (ULIDs sort by time).
pub fn session_files(dir: &Path) -> Result<Vec<PathBuf>, LedgerError> {
    let io = |source| LedgerError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    Ok(files)
}
