//! `harness export PATH --format har|aat`: a session (or a whole ledger) in formats other
//! tools read — HTTP Archive 1.2 ([`har`]) and Agent Audit Trail records ([`aat`]). Exports are
//! recomputed from the ledger each time and never change it.
#![forbid(unsafe_code)]

pub mod aat;
pub mod har;

use crate::timeline::{read_sessions, TimelineError};
use std::io::Write as _;
use std::path::PathBuf;

/// Errors exporting, each naming the file (and entry).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the session failed.
    #[error(transparent)]
    Read(#[from] TimelineError),
    /// A record could not be put in canonical form (RFC 8785).
    #[error("canonical JSON: {0}")]
    Canon(#[from] serde_json::Error),
    /// Writing the output failed.
    #[error("{path}: {source}")]
    Write {
        /// The output file (`<stdout>` for standard output).
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// HTTP Archive 1.2 (one JSON document; opens in browsers' HAR viewers).
    Har,
    /// Agent Audit Trail records (JSON Lines, one record per action).
    Aat,
}

/// `harness export PATH --format har|aat [--out FILE]`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// A session file or a whole ledger directory.
    pub path: PathBuf,
    /// Output format.
    #[arg(long, value_enum)]
    pub format: Format,
    /// Write to this file instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The export of `args.path` in `args.format`, as bytes.
pub fn export(args: &ExportArgs) -> Result<Vec<u8>, ExportError> {
    let sessions = read_sessions(&args.path)?;
    let mut out = Vec::new();
    match args.format {
        Format::Har => {
            let doc = har::har(&sessions)?;
            // A serde_json::Value always serializes.
            out = serde_json::to_vec_pretty(&doc).unwrap_or_default();
            out.push(b'\n');
        }
        Format::Aat => {
            for log in &sessions {
                out.extend(aat::lines(log)?);
            }
        }
    }
    Ok(out)
}

/// Runs `harness export`; returns the exit status: 0; 1 when a line is not a valid entry; 2
/// for other errors (one line on stderr).
pub fn run(args: &ExportArgs) -> i32 {
    let result = export(args).and_then(|bytes| match &args.out {
        Some(path) => std::fs::write(path, &bytes).map_err(|source| ExportError::Write {
            path: path.clone(),
            source,
        }),
        None => {
            let mut stdout = std::io::stdout().lock();
            match stdout.write_all(&bytes).and_then(|()| stdout.flush()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(ExportError::Write {
                    path: "<stdout>".into(),
                    source: e,
                }),
                _ => Ok(()),
            }
        }
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("harness: {e}");
            // A line that is not a valid entry: "not intact", as `harness verify` says.
            match e {
                ExportError::Read(TimelineError::Entry { .. }) => 1,
                _ => 2,
            }
        }
    }
}
