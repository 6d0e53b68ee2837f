//! What the agent did, read back from the ledger: a session's entries grouped into connections
//! and HTTP exchanges ([`session`]), the model's tool calls linked to the MCP calls and the
//! external requests they caused ([`correlate`]), and the timeline a person reads
//! ([`render`]). Nothing here writes to a ledger; everything is recomputed from it.
//!
//! ```no_run
//! use harness::timeline::{correlate::correlate, render, session::SessionLog};
//! let log = SessionLog::read("ledger/01JZ0000000000000000000000.jsonl".as_ref()).unwrap();
//! print!("{}", render::render(&log, render::Limits::default()));
//! for chain in correlate(&log).chains {
//!     println!("{} → {:?}", chain.tool_use.name, chain.mcp_call.map(|c| c.seq));
//! }
//! ```
#![forbid(unsafe_code)]

pub mod correlate;
pub mod process;
pub mod render;
pub mod session;

use crate::ledger::{session_files, LedgerError};
use std::path::{Path, PathBuf};

/// Errors reading a session back, each naming the file (and entry).
#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    /// A file or directory could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a valid entry.
    #[error("{path}: seq {seq}: invalid entry: {reason}")]
    Entry {
        /// The session file.
        path: PathBuf,
        /// The seq the line holds or should hold.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// A body's blob could not be read.
    #[error("{path}: seq {seq}: body: {reason}")]
    Blob {
        /// The blob (or ledger directory).
        path: PathBuf,
        /// The entry that refers to it.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// Listing a ledger directory failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// The session files `path` names: itself, or every session of a ledger directory (one with
/// none is [`LedgerError::NoLedger`]).
pub fn session_paths(path: &Path) -> Result<Vec<PathBuf>, TimelineError> {
    if path.is_dir() {
        let files = session_files(path)?;
        if files.is_empty() {
            return Err(LedgerError::NoLedger {
                path: path.to_owned(),
            }
            .into());
        }
        Ok(files)
    } else if path.exists() {
        Ok(vec![path.to_owned()])
    } else {
        Err(TimelineError::Io {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
        })
    }
}

/// Reads every session `path` names.
pub fn read_sessions(path: &Path) -> Result<Vec<session::SessionLog>, TimelineError> {
    session_paths(path)?
        .iter()
        .map(|p| session::SessionLog::read(p))
        .collect()
}
