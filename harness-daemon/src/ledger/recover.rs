//! Crash recovery when a session is reopened: check every line, move a torn final line aside
//! (never delete it), refuse if anything before it is invalid. SPEC.md §11.
use super::canon::{self, parse_line};
use super::merkle::leaf_hash;
use super::writer::Resume;
use super::{fsync_dir, Entry, Ledger, LedgerError, Recovery, SessionLock};
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;
use ulid::Ulid;

/// The valid prefix of a session file, and what follows it.
pub(crate) struct Scan {
    pub resume: Resume,
    /// Whether the last valid entry is `session_close`.
    pub closed: bool,
    /// Bytes after the valid prefix (a torn final line), with the reason they are invalid.
    pub torn: Option<(Vec<u8>, String)>,
}

/// Scans `bytes` of session `id`. Errors if an invalid line is followed by another line.
pub(crate) fn scan(path: &Path, id: &Ulid, bytes: &[u8]) -> Result<Scan, LedgerError> {
    let mut resume = Resume::new(id);
    let mut closed = false;
    let mut offset = 0usize;
    let session = id.to_string();
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let (line, next) = match rest.iter().position(|b| *b == b'\n') {
            Some(n) => (&rest[..n], offset + n + 1),
            None => (rest, bytes.len()),
        };
        let complete = bytes[next - 1] == b'\n';
        let checked = if complete {
            check(line, &session, &resume, closed)
        } else {
            Err("no newline at the end (torn write)".into())
        };
        match checked {
            Ok(l) => {
                closed = matches!(l.entry, Entry::SessionClose(_));
                resume.next_seq += 1;
                resume.prev = l.hash;
                resume.last_ts = l.ts;
                resume.frontier.push(leaf_hash(&l.hash));
                resume.len = next as u64;
                offset = next;
            }
            Err(reason) if next >= bytes.len() => {
                return Ok(Scan {
                    resume,
                    closed,
                    torn: Some((rest.to_vec(), reason)),
                });
            }
            Err(reason) => {
                return Err(LedgerError::Corrupt {
                    path: path.to_owned(),
                    seq: resume.next_seq,
                    reason: format!("{reason}; later lines follow, so this is not a torn write"),
                });
            }
        }
    }
    Ok(Scan {
        resume,
        closed,
        torn: None,
    })
}

fn check(line: &[u8], session: &str, r: &Resume, closed: bool) -> Result<canon::Line, String> {
    let l = parse_line(line)?;
    if l.session != session {
        return Err(format!("belongs to session {}", l.session));
    }
    if l.seq != r.next_seq {
        return Err(format!("has seq {} where {} belongs", l.seq, r.next_seq));
    }
    if l.prev != r.prev {
        return Err("prev does not match the previous entry's hash".into());
    }
    if l.ts < r.last_ts {
        return Err("timestamp earlier than the previous entry's".into());
    }
    if closed {
        return Err("entry after session_close".into());
    }
    if (l.seq == 0) != matches!(l.entry, Entry::SessionOpen(_)) {
        return Err("session_open must be the first entry and only the first".into());
    }
    Ok(l)
}

/// Recovers session `id` for appending from `file` (its session file, opened for reading and
/// appending, by a caller holding the session's lock): returns the file (positioned for append), where the
/// chain resumes, and the `recovery` entry to write first.
pub(crate) fn recover(
    ledger: &Ledger,
    id: &Ulid,
    mut file: File,
) -> Result<(File, Resume, Recovery), LedgerError> {
    let path = ledger.session_path(id);
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| LedgerError::io(&path, e))?;
    let found = scan(&path, id, &bytes)?;
    resume_after(ledger, id, file, found)
}

/// [`recover`] on a session file already read and scanned.
fn resume_after(
    ledger: &Ledger,
    id: &Ulid,
    file: File,
    found: Scan,
) -> Result<(File, Resume, Recovery), LedgerError> {
    let path = ledger.session_path(id);
    let Scan {
        mut resume,
        closed,
        torn,
    } = found;
    if closed {
        return Err(LedgerError::Closed { path });
    }
    if resume.next_seq == 0 {
        return Err(LedgerError::Corrupt {
            path,
            seq: 0,
            reason: "session_open never became durable; nothing to reopen".into(),
        });
    }
    resume.checkpointed = last_checkpoint_size(ledger.dir(), id);
    if resume.checkpointed > resume.next_seq {
        // A checkpoint was signed over entries the file no longer holds (its end was cut off,
        // or the checkpoint is not ours): appending would sign a second history under the
        // same sizes. Left alone, as corrupt; `verify` names what is missing.
        return Err(LedgerError::Corrupt {
            path,
            seq: resume.next_seq,
            reason: format!(
                "a checkpoint covers {} entries but the file holds {}; not reopened",
                resume.checkpointed, resume.next_seq
            ),
        });
    }
    let recovery = match torn {
        None => Recovery {
            reason: "unclean shutdown".into(),
            torn_bytes: 0,
            torn_sha256: None,
            saved_as: None,
        },
        Some((torn, why)) => {
            let dir = ledger.dir().join("recovery");
            let name = format!("{id}.{}.torn", resume.len);
            let saved = dir.join(&name);
            let mut f = super::file_options(0o644)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&saved)
                .map_err(|e| LedgerError::io(&saved, e))?;
            f.write_all(&torn)
                .and_then(|()| f.sync_all())
                .map_err(|e| LedgerError::io(&saved, e))?;
            fsync_dir(&dir)?;
            // Only the torn line goes: the valid prefix is kept byte for byte.
            file.set_len(resume.len)
                .and_then(|()| file.sync_all())
                .map_err(|e| LedgerError::io(&path, e))?;
            Recovery {
                reason: format!("torn final line moved aside: {why}"),
                torn_bytes: torn.len() as u64,
                torn_sha256: Some(hex::encode(canon::sha256(&torn))),
                saved_as: Some(format!("recovery/{name}")),
            }
        }
    };
    Ok((file, resume, recovery))
}

/// Opens session `id`'s file for reading and appending, as its writer does.
pub(crate) fn open_for_writing(path: &Path) -> Result<File, LedgerError> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .open(path)
        .map_err(|e| LedgerError::io(path, e))
}

/// What an engine start found in one session file.
pub(crate) enum Found {
    /// A writer holds the session's lock: a live engine is recording it.
    Live,
    /// Closed, and its final checkpoint covers every entry.
    Complete,
    /// No bytes at all: its engine died before `session_open` became durable.
    Empty,
    /// Closed, but no checkpoint covered every entry (its disk filled up, or its engine died
    /// between `session_close` and the checkpoint): now one does; it covers this many entries.
    Checkpointed(u64),
    /// Not closed and nobody writes it: ready to be reopened (its lock taken).
    Unclosed(SessionLock, File, Resume, Recovery),
}

/// Looks at session `id` for an engine start: leaves sessions a live writer holds alone,
/// signs the missing final checkpoint of a closed one, and prepares an abandoned one for its
/// `recovery` entry. Errors (a corrupt session, I/O) leave the file as it is.
pub(crate) fn inspect(ledger: &Ledger, id: &Ulid) -> Result<Found, LedgerError> {
    let path = ledger.session_path(id);
    let Some(lock) = SessionLock::try_take(ledger, id)? else {
        return Ok(Found::Live);
    };
    let mut file = open_for_writing(&path)?;
    let len = file
        .metadata()
        .map_err(|e| LedgerError::io(&path, e))?
        .len();
    if len == 0 {
        return Ok(Found::Empty);
    }
    // The common case — closed and checkpointed — is decided by the last line alone, so an
    // engine start does not read every session ever recorded.
    if let Some(last) = last_line(&mut file, len).map_err(|e| LedgerError::io(&path, e))? {
        if let Ok(l) = parse_line(&last) {
            if matches!(l.entry, Entry::SessionClose(_))
                && last_checkpoint_size(ledger.dir(), id) > l.seq
            {
                return Ok(Found::Complete);
            }
        }
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(|e| LedgerError::io(&path, e))?;
    let found = scan(&path, id, &bytes)?;
    if found.closed && found.torn.is_none() {
        let size = super::writer::sign_checkpoint(ledger, id, &found.resume.frontier, true)?;
        return Ok(Found::Checkpointed(size));
    }
    if found.closed {
        // Bytes after session_close: not a torn write of ours (nothing follows a close).
        return Err(LedgerError::Corrupt {
            path,
            seq: found.resume.next_seq,
            reason: "bytes after session_close".into(),
        });
    }
    let (file, resume, recovery) = resume_after(ledger, id, file, found)?;
    Ok(Found::Unclosed(lock, file, resume, recovery))
}

/// The last complete line of a file of `len` bytes (without its newline), or None when the
/// file does not end with a newline (a torn write).
fn last_line(file: &mut File, len: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut window = 64 * 1024u64;
    loop {
        let start = len.saturating_sub(window);
        let mut tail = vec![0u8; (len - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut tail)?;
        if tail.last() != Some(&b'\n') {
            return Ok(None);
        }
        let body = &tail[..tail.len() - 1];
        match body.iter().rposition(|b| *b == b'\n') {
            Some(n) => return Ok(Some(body[n + 1..].to_vec())),
            None if start == 0 => return Ok(Some(body.to_vec())),
            None => window *= 4,
        }
    }
}

/// Size of the largest checkpoint of session `id` (by file name), 0 if none.
pub(crate) fn last_checkpoint_size(dir: &Path, id: &Ulid) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir.join("checkpoints").join(id.to_string())) else {
        return 0;
    };
    rd.filter_map(|e| {
        let name = e.ok()?.file_name();
        name.to_str()?.strip_suffix(".note")?.parse::<u64>().ok()
    })
    .max()
    .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::SessionOpen;

    /// Found by the `verify` fuzz target: a session whose checkpoints directory holds a note
    /// named for more entries than the file has (its end cut off, or a note that is not ours)
    /// was reopened with the writer believing that many entries were checkpointed, and the
    /// writer's first commit underflowed (`frontier.size() - checkpointed`) and killed its
    /// thread. Recovery now refuses such a session, as corrupt.
    #[tokio::test]
    async fn a_checkpoint_beyond_the_end_of_the_file_is_not_reopened() {
        let dir = std::env::temp_dir().join(format!("harness-recover-beyond-{}", Ulid::new()));
        let ledger = Ledger::open(&dir).unwrap();
        let (w, _) = ledger
            .open_session(SessionOpen {
                command: vec!["x".into()],
                uid: 0,
                gid: 0,
                cgroup: "/".into(),
                policy_sha256: String::new(),
                ca_fingerprint: None,
                software: "t".into(),
                hostname: "t".into(),
            })
            .await
            .unwrap();
        let id = w.id();
        drop(w); // Unclosed, as if its engine died.
        let path = ledger.session_path(&id);
        let before = std::fs::read(&path).unwrap();
        let cps = dir.join("checkpoints").join(id.to_string());
        std::fs::create_dir_all(&cps).unwrap();
        std::fs::write(cps.join(format!("{:020}.note", 5)), "not a note\n").unwrap();
        match ledger.reopen_session(id).await {
            Err(LedgerError::Corrupt { seq, reason, .. }) => {
                assert_eq!(seq, 1);
                assert!(reason.contains("covers 5 entries"), "{reason}");
            }
            Err(e) => panic!("refused for another reason: {e}"),
            Ok(_) => panic!("reopened"),
        }
        assert_eq!(std::fs::read(&path).unwrap(), before, "nothing changed");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
