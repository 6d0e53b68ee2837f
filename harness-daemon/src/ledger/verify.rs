//! The verifier: checks every session file's lines, chain, bodies and blobs, and its signed
//! checkpoints, and reports each problem with the file, the `seq` and the reason. Read-only;
//! needs nothing but the files and the public key. SPEC.md §12.
use super::canon::{genesis, parse_line, Hash};
use super::merkle::{leaf_hash, Frontier};
use super::note::{origin, Checkpoint, NoteVerifier};
use super::{session_files, session_id, Body, Entry, LedgerError, VERIFIER_KEY};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{BufReader, Read as _};
use std::path::{Path, PathBuf};
use ulid::Ulid;

/// What kind of problem a verifier found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// An entry's bytes changed (invalid, not canonical, or its hash no longer chains).
    Edited,
    /// Entries are missing from the middle of a session, or a whole session file is gone.
    Deleted,
    /// Entries are out of order.
    Reordered,
    /// An entry that the writer did not write was added.
    Inserted,
    /// Entries are missing from the end: a signed checkpoint covers more than the file holds.
    TruncatedTail,
    /// The final line is incomplete (a crash the writer has not recovered from yet).
    TornLine,
    /// A checkpoint's signature is invalid (or it cannot be checked).
    BadSignature,
    /// A validly signed checkpoint does not match the entries (history rewritten).
    CheckpointMismatch,
    /// A closed session lacks its final checkpoint.
    CheckpointMissing,
    /// A blob an entry refers to is missing.
    BlobMissing,
    /// A blob an entry refers to does not have the recorded length or SHA-256.
    BlobAltered,
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProblemKind::Edited => "edited",
            ProblemKind::Deleted => "deleted",
            ProblemKind::Reordered => "reordered",
            ProblemKind::Inserted => "inserted",
            ProblemKind::TruncatedTail => "truncated tail",
            ProblemKind::TornLine => "torn line",
            ProblemKind::BadSignature => "bad signature",
            ProblemKind::CheckpointMismatch => "checkpoint mismatch",
            ProblemKind::CheckpointMissing => "checkpoint missing",
            ProblemKind::BlobMissing => "missing blob",
            ProblemKind::BlobAltered => "altered blob",
        })
    }
}

/// One thing wrong with a ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file concerned.
    pub file: PathBuf,
    /// The entry concerned, when there is one.
    pub seq: Option<u64>,
    /// What kind of problem.
    pub kind: ProblemKind,
    /// Details.
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        if let Some(seq) = self.seq {
            write!(f, "seq {seq}: ")?;
        }
        write!(f, "{}: {}", self.kind, self.reason)
    }
}

/// What the verifier found in one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionReport {
    /// The session file.
    pub file: PathBuf,
    /// Entries read (valid or not).
    pub entries: u64,
    /// Whether the last entry is `session_close`.
    pub closed: bool,
    /// Size of the largest checkpoint whose signature is valid.
    pub checkpoint: Option<u64>,
    /// Root (base64) of that checkpoint.
    pub checkpoint_root: Option<String>,
}

/// How many problems a [`Report`] keeps in full; beyond them it only counts. A file of garbage
/// has a problem on every line: memory stays bounded by the valid entries, not the bad lines.
pub const KEPT_PROBLEMS: usize = 1000;

/// The verifier's findings.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// One per session file checked.
    pub sessions: Vec<SessionReport>,
    /// What is wrong, in the order found: the first [`KEPT_PROBLEMS`] problems. Empty means
    /// intact.
    pub problems: Vec<Problem>,
    /// How many more problems were found beyond those kept.
    pub omitted: u64,
    /// The checkpoint key used, in verifier-key form.
    pub key: Option<String>,
}

impl Report {
    /// Whether no problem was found.
    pub fn intact(&self) -> bool {
        self.problems.is_empty() && self.omitted == 0
    }

    /// How many problems were found, kept or not.
    pub fn problem_count(&self) -> u64 {
        self.problems.len() as u64 + self.omitted
    }

    fn push(&mut self, problem: Problem) {
        if self.problems.len() < KEPT_PROBLEMS {
            self.problems.push(problem);
        } else {
            self.omitted += 1;
        }
    }

    /// Total entries in all sessions.
    pub fn entries(&self) -> u64 {
        self.sessions.iter().map(|s| s.entries).sum()
    }
}

/// How to verify.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// The public key to check checkpoints with. Default: `keys/checkpoint.pub` in the ledger
    /// directory (which whoever can rewrite the ledger can also replace: pass the key you
    /// trust when it matters).
    pub key: Option<NoteVerifier>,
}

/// Verifies a session file or a whole ledger directory. `Err` for I/O or usage errors, and
/// ([`LedgerError::NoLedger`]) for a directory that holds no session file and no checkpoint of
/// a vanished one; problems with the ledger's content are in the report.
pub fn verify_path(path: &Path, opts: &VerifyOptions) -> Result<Report, LedgerError> {
    let meta = std::fs::metadata(path).map_err(|e| LedgerError::io(path, e))?;
    let (dir, files) = if meta.is_dir() {
        (path.to_owned(), session_files(path)?)
    } else {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        (dir, vec![path.to_owned()])
    };
    let mut report = Report::default();
    let key = match &opts.key {
        Some(k) => Some(k.clone()),
        None => {
            let kp = dir.join(VERIFIER_KEY);
            match std::fs::read_to_string(&kp) {
                Ok(text) => match NoteVerifier::parse(&text) {
                    Ok(k) => Some(k),
                    Err(reason) => {
                        report.push(Problem {
                            file: kp,
                            seq: None,
                            kind: ProblemKind::BadSignature,
                            reason,
                        });
                        None
                    }
                },
                Err(_) => None,
            }
        }
    };
    report.key = key.as_ref().map(NoteVerifier::to_text);
    let mut blobs = BlobCache::default();
    for file in &files {
        let s = verify_session(file, &dir, key.as_ref(), &mut blobs, &mut report)?;
        report.sessions.push(s);
    }
    if meta.is_dir() {
        // A session whose file is gone but whose checkpoints remain was deleted.
        let mut gone: Vec<String> = match std::fs::read_dir(dir.join("checkpoints")) {
            Ok(rd) => rd
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.parse::<Ulid>().is_ok() && !dir.join(format!("{n}.jsonl")).exists())
                .collect(),
            Err(_) => Vec::new(),
        };
        gone.sort();
        if files.is_empty() && gone.is_empty() {
            return Err(LedgerError::NoLedger {
                path: path.to_owned(),
            });
        }
        for n in gone {
            report.push(Problem {
                file: dir.join(format!("{n}.jsonl")),
                seq: None,
                kind: ProblemKind::Deleted,
                reason: "session file is missing but its signed checkpoints exist".into(),
            });
        }
    }
    Ok(report)
}

/// What the verifier keeps of one line.
struct Checked {
    hash: Hash,
    /// The entry's Merkle leaf hash, made here on all cores rather than in the fold.
    leaf: Hash,
    seq: u64,
    session_ok: bool,
    ts: [u8; 27],
    prev: Hash,
    what: What,
    blobs: Vec<(String, u64)>,
    body_error: Option<String>,
}

enum What {
    Open,
    Close,
    Annotation { of_seq: u64, of_hash: String },
    Other,
}

enum Parsed {
    Ok(Checked),
    Bad(String),
}

fn check_line(line: &[u8], session: &str) -> Parsed {
    let l = match parse_line(line) {
        Ok(l) => l,
        Err(e) => return Parsed::Bad(e),
    };
    let mut ts = [0u8; 27];
    ts.copy_from_slice(l.ts.as_bytes());
    let mut blobs = Vec::new();
    let mut body_error = None;
    for b in l.entry.bodies() {
        if let Body::Blob { len, sha256 } = b {
            blobs.push((sha256.clone(), *len));
        } else if let Err(e) = b.check_inline() {
            body_error = Some(e);
        }
    }
    let what = match l.entry {
        Entry::SessionOpen(_) => What::Open,
        Entry::SessionClose(_) => What::Close,
        Entry::Annotation(a) => What::Annotation {
            of_seq: a.of_seq,
            of_hash: a.of_hash,
        },
        _ => What::Other,
    };
    Parsed::Ok(Checked {
        hash: l.hash,
        leaf: leaf_hash(&l.hash),
        seq: l.seq,
        session_ok: l.session == session,
        ts,
        prev: l.prev,
        what,
        blobs,
        body_error,
    })
}

/// A piece of a session file for a worker: whole lines, `range` of `chunk`.
struct Job {
    index: u64,
    chunk: std::sync::Arc<Vec<u8>>,
    range: std::ops::Range<usize>,
}

/// What a worker made of a [`Job`]: each line parsed, or the panic that stopped it.
type Done = (u64, std::thread::Result<Vec<Parsed>>);

/// Reads a session file and parses its lines on all cores while the next part is read, handing
/// each line's result to `fold` in file order. Returns whether the final line is torn (ends
/// without a newline; it is not parsed).
fn parse_file(
    file: &Path,
    session: &str,
    mut fold: impl FnMut(Parsed),
) -> Result<bool, LedgerError> {
    let mut f = std::fs::File::open(file).map_err(|e| LedgerError::io(file, e))?;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let (jobs, job_rx) = std::sync::mpsc::channel::<Job>();
    let job_rx = std::sync::Mutex::new(job_rx);
    let (done_tx, done) = std::sync::mpsc::channel::<Done>();
    std::thread::scope(|s| {
        // Owned here, so that however this returns, the workers see the end of their jobs.
        let jobs = jobs;
        for _ in 0..workers {
            let (job_rx, done_tx) = (&job_rx, done_tx.clone());
            s.spawn(move || loop {
                // The lock is held only to take a job; a poisoned one still hands them out.
                let job = job_rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok(job) = job else { break };
                let lines = &job.chunk[job.range];
                let parsed = std::panic::catch_unwind(|| {
                    let mut parsed =
                        Vec::with_capacity(memchr::memchr_iter(b'\n', lines).count() + 1);
                    let mut start = 0;
                    for end in memchr::memchr_iter(b'\n', lines).chain([lines.len()]) {
                        parsed.push(check_line(&lines[start..end], session));
                        start = end + 1;
                    }
                    parsed
                });
                if done_tx.send((job.index, parsed)).is_err() {
                    break;
                }
            });
        }
        drop(done_tx);
        // Results come back in any order; they are folded in the order of the file.
        let mut waiting: BTreeMap<u64, Vec<Parsed>> = BTreeMap::new();
        let (mut sent, mut folded) = (0u64, 0u64);
        let mut take = |block: bool, folded: &mut u64| {
            let got = if block {
                done.recv().ok()
            } else {
                done.try_recv().ok()
            };
            let Some((index, parsed)) = got else {
                return false;
            };
            waiting.insert(
                index,
                parsed.unwrap_or_else(|p| std::panic::resume_unwind(p)),
            );
            while let Some(parsed) = waiting.remove(folded) {
                *folded += 1;
                parsed.into_iter().for_each(&mut fold);
            }
            true
        };
        let mut carry: Vec<u8> = Vec::new();
        let torn = loop {
            let mut chunk = Vec::with_capacity(carry.len() + CHUNK_BYTES);
            chunk.append(&mut carry);
            let have = chunk.len();
            (&mut f)
                .take(CHUNK_BYTES as u64)
                .read_to_end(&mut chunk)
                .map_err(|e| LedgerError::io(file, e))?;
            let eof = chunk.len() < have + CHUNK_BYTES;
            let Some(cut) = memchr::memrchr(b'\n', &chunk) else {
                if eof {
                    break !chunk.is_empty();
                }
                carry = chunk; // A line longer than a chunk: read on.
                continue;
            };
            carry = chunk[cut + 1..].to_vec();
            chunk.truncate(cut);
            // Pieces of about BATCH_BYTES, each ending at a line's end.
            let chunk = std::sync::Arc::new(chunk);
            let mut start = 0;
            while start <= chunk.len() {
                let mut end = (start + BATCH_BYTES).min(chunk.len());
                if end < chunk.len() {
                    end = memchr::memchr(b'\n', &chunk[end..]).map_or(chunk.len(), |n| end + n);
                }
                let job = Job {
                    index: sent,
                    chunk: chunk.clone(),
                    range: start..end,
                };
                sent += 1;
                if jobs.send(job).is_err() {
                    break;
                }
                start = end + 1;
                // Bounded read-ahead: what is held for lines not yet folded in.
                while sent - folded > IN_FLIGHT as u64 && take(true, &mut folded) {}
                take(false, &mut folded);
            }
            if eof {
                break !carry.is_empty();
            }
        };
        drop(jobs);
        while folded < sent && take(true, &mut folded) {}
        Ok(torn)
    })
}

#[derive(Default)]
struct BlobCache {
    checked: HashMap<String, Result<u64, (ProblemKind, String)>>,
}

impl BlobCache {
    fn check(&mut self, dir: &Path, sha: &str) -> Result<u64, (ProblemKind, String)> {
        self.checked
            .entry(sha.to_owned())
            .or_insert_with(|| {
                let path = super::blob_path(dir, sha);
                let f = std::fs::File::open(&path)
                    .map_err(|e| (ProblemKind::BlobMissing, format!("blob {sha}: {e}")))?;
                let mut r = BufReader::new(f);
                let mut h = Sha256::new();
                let mut buf = vec![0u8; 64 * 1024];
                let mut len = 0u64;
                loop {
                    let n = r
                        .read(&mut buf)
                        .map_err(|e| (ProblemKind::BlobMissing, format!("blob {sha}: {e}")))?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                    len += n as u64;
                }
                if hex::encode(h.finalize()) != sha {
                    return Err((
                        ProblemKind::BlobAltered,
                        format!("blob {sha}: content does not match its SHA-256"),
                    ));
                }
                Ok(len)
            })
            .clone()
    }
}

/// Bytes read at a time.
const CHUNK_BYTES: usize = 16 << 20;
/// Bytes of whole lines a worker parses at a time.
const BATCH_BYTES: usize = 256 << 10;
/// Pieces read ahead of the fold: bounds what is held for lines not yet folded in (a piece of
/// short garbage lines makes some 3 MB of results).
const IN_FLIGHT: usize = 8;

/// The problems of one session as they are found: into the report, remembering the smallest
/// seq named (to tell whether a checkpoint mismatch is explained by a problem below it).
struct Found<'a> {
    report: &'a mut Report,
    file: &'a Path,
    first_seq: Option<u64>,
}

impl Found<'_> {
    /// A problem with the session file.
    fn add(&mut self, seq: Option<u64>, kind: ProblemKind, reason: String) {
        self.add_with(seq, kind, || reason);
    }

    /// Like [`Found::add`], the reason made only if the problem is kept (a file of garbage has
    /// a problem on every line, and only the first few are kept).
    fn add_with(&mut self, seq: Option<u64>, kind: ProblemKind, reason: impl FnOnce() -> String) {
        if let Some(s) = seq {
            self.first_seq = Some(self.first_seq.map_or(s, |f| f.min(s)));
        }
        if self.report.problems.len() >= KEPT_PROBLEMS {
            self.report.omitted += 1;
            return;
        }
        self.report.push(Problem {
            file: self.file.to_owned(),
            seq,
            kind,
            reason: reason(),
        });
    }

    /// A problem with another file of the session (a checkpoint).
    fn add_at(&mut self, path: &Path, seq: Option<u64>, kind: ProblemKind, reason: String) {
        self.report.push(Problem {
            file: path.to_owned(),
            seq,
            kind,
            reason,
        });
    }

    /// Whether a problem with the session file names a seq below `size`.
    fn any_below(&self, size: u64) -> bool {
        self.first_seq.is_some_and(|s| s < size)
    }
}

fn verify_session(
    file: &Path,
    dir: &Path,
    key: Option<&NoteVerifier>,
    blobs: &mut BlobCache,
    report: &mut Report,
) -> Result<SessionReport, LedgerError> {
    let mut found = Found {
        report,
        file,
        first_seq: None,
    };
    let id = session_id(file);
    if id.is_none() {
        found.add(
            None,
            ProblemKind::Inserted,
            "file name is not <ULID>.jsonl".into(),
        );
    }
    let session = id.map(|i| i.to_string()).unwrap_or_default();

    // 1. Every line on its own (in parallel), keeping a compact record of each valid entry.
    //    An invalid line is reported at once, at the seq after the last valid entry before
    //    it, and not kept: time and memory stay linear in the file, bounded by its valid
    //    entries.
    let mut recs: Vec<Checked> = Vec::new();
    let mut lines_read = 0u64;
    let mut bad_lines = 0u64;
    let mut bad_seqs = std::collections::HashSet::new();
    let mut next_seq = 0u64;
    let torn = parse_file(file, &session, |parsed| {
        lines_read += 1;
        match parsed {
            Parsed::Ok(c) => {
                next_seq = c.seq.saturating_add(1);
                recs.push(c);
            }
            Parsed::Bad(reason) => {
                bad_lines += 1;
                bad_seqs.insert(next_seq);
                found.add_with(Some(next_seq), ProblemKind::Edited, || {
                    format!("line {lines_read}: not a valid entry: {reason}")
                });
            }
        }
    })?;

    // 2. A torn final line, and entries of another session.
    if torn {
        found.add(
            Some(next_seq),
            ProblemKind::TornLine,
            "final line is incomplete (crash not yet recovered; reopening the session moves it aside)"
                .into(),
        );
    }
    let good: Vec<&Checked> = recs.iter().collect();
    for c in &good {
        if !c.session_ok {
            found.add(
                Some(c.seq),
                ProblemKind::Inserted,
                "entry belongs to another session".into(),
            );
        }
    }

    // 3. Order, gaps and duplicates.
    for w in good.windows(2) {
        if w[1].seq < w[0].seq {
            found.add(
                Some(w[1].seq),
                ProblemKind::Reordered,
                format!("seq {} appears after seq {}", w[1].seq, w[0].seq),
            );
        }
    }
    let in_order = bad_lines == 0 && good.iter().enumerate().all(|(i, c)| c.seq == i as u64);
    let slots: Vec<Option<&Checked>> = if in_order {
        good.iter().map(|c| Some(*c)).collect()
    } else {
        slots_of(&good, &bad_seqs, &mut |seq, kind, reason| {
            found.add(seq, kind, reason)
        })
    };
    let count = slots.len() as u64;
    let contiguous = slots.iter().take_while(|s| s.is_some()).count() as u64;
    // 4. The chain, timestamps and structure, in seq order, while the checkpoint files are
    //    opened and the roots they are compared with made on another core.
    let ((opened, roots), closed) = std::thread::scope(|s| {
        let read_checkpoints = s.spawn(|| {
            let opened = open_checkpoints(&dir.join("checkpoints").join(&session), id, key);
            let mut sizes: Vec<u64> = opened
                .iter()
                .filter_map(|(_, _, cp)| cp.as_ref().ok().map(|cp| cp.size))
                .filter(|size| *size <= contiguous)
                .collect();
            sizes.sort_unstable();
            (
                opened,
                merkle_roots(slots.iter().flatten().map(|c| &c.leaf), &sizes),
            )
        });
        let closed = check_chain(&slots, id, dir, blobs, &mut found);
        let read = read_checkpoints
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (read, closed)
    });

    // 5. Checkpoints.
    let mut cps: Vec<Checkpoint> = Vec::new();
    for (path, seq, opened) in opened {
        match opened {
            Ok(cp) => cps.push(cp),
            Err((kind, reason)) => found.add_at(&path, seq, kind, reason),
        }
    }
    cps.sort_by_key(|c| c.size);
    let mut last_ok = 0u64;
    if let Some(cp) = cps.last().filter(|cp| cp.size > count) {
        found.add(
        Some(count),
        ProblemKind::TruncatedTail,
        format!(
            "a signed checkpoint covers {} entries but the file ends at seq {}; seq {}..{} were cut off",
            cp.size,
            count as i64 - 1,
            count,
            cp.size - 1
        ),
    );
    }
    for cp in &cps {
        if cp.size > contiguous {
            break; // Gaps below it are reported already.
        }
        if roots.get(&cp.size) != Some(&cp.root) {
            if !found.any_below(cp.size) {
                found.add(
                Some(last_ok),
                ProblemKind::CheckpointMismatch,
                match cp.size.checked_sub(1) {
                    Some(last) => format!(
                        "entries seq {last_ok}..{last} do not match the signed checkpoint of size {} (history rewritten)",
                        cp.size
                    ),
                    None => "the signed checkpoint of size 0 does not hold the empty tree's root (not a checkpoint of this history)".to_owned(),
                },
            );
            }
            break;
        }
        last_ok = cp.size;
    }
    let best = cps.last();
    if closed && key.is_some() && best.map(|c| c.size) != Some(count) {
        found.add(
        Some(best.map_or(0, |c| c.size)),
        ProblemKind::CheckpointMissing,
        format!(
            "session is closed but no valid checkpoint covers all {count} entries (the final checkpoint was removed?)"
        ),
    );
    }
    Ok(SessionReport {
        file: file.to_owned(),
        entries: lines_read,
        closed,
        checkpoint: best.map(|c| c.size),
        checkpoint_root: best.map(|c| base64::engine::general_purpose::STANDARD.encode(c.root)),
    })
}

/// Step 4 of [`verify_session`]: the chain, timestamps and structure of the entries placed by
/// seq, their bodies and blobs. Returns whether the session is closed (its last entry is
/// `session_close`).
fn check_chain(
    slots: &[Option<&Checked>],
    id: Option<Ulid>,
    dir: &Path,
    blobs: &mut BlobCache,
    found: &mut Found<'_>,
) -> bool {
    let gen = id.map(|i| genesis(&i));
    let last = slots.iter().rposition(Option::is_some).map(|l| l as u64);
    let at = |seq: u64| slots.get(seq as usize).copied().flatten();
    for (seq, c) in slots
        .iter()
        .enumerate()
        .filter_map(|(s, c)| c.map(|c| (s as u64, c)))
    {
        if seq == 0 {
            if gen.is_some_and(|g| g != c.prev) {
                found.add(
                    Some(0),
                    ProblemKind::Edited,
                    "prev is not the session's genesis hash".into(),
                );
            }
            if !matches!(c.what, What::Open) {
                found.add(
                    Some(0),
                    ProblemKind::Edited,
                    "first entry is not session_open".into(),
                );
            }
        } else {
            if let Some(p) = at(seq - 1) {
                if p.hash != c.prev {
                    found.add(
                        Some(seq - 1),
                        ProblemKind::Edited,
                        format!("entry hash does not match the prev of seq {seq}"),
                    );
                }
                if c.ts < p.ts {
                    found.add(
                        Some(seq),
                        ProblemKind::Reordered,
                        format!("timestamp is earlier than seq {}'s", seq - 1),
                    );
                }
            }
            if matches!(c.what, What::Open) {
                found.add(
                    Some(seq),
                    ProblemKind::Inserted,
                    "session_open after seq 0".into(),
                );
            }
        }
        if matches!(c.what, What::Close) && Some(seq) != last {
            found.add(
                Some(seq + 1),
                ProblemKind::Inserted,
                "entries follow session_close".into(),
            );
        }
        if let What::Annotation { of_seq, of_hash } = &c.what {
            let ok = *of_seq < seq
                && at(*of_seq).is_some_and(|t| super::canon::decode_hash(of_hash) == Some(t.hash));
            if !ok {
                found.add(
                    Some(seq),
                    ProblemKind::Edited,
                    format!("annotation refers to seq {of_seq}, whose hash is not {of_hash}"),
                );
            }
        }
        if let Some(e) = &c.body_error {
            found.add(Some(seq), ProblemKind::Edited, e.clone());
        }
        for (sha, len) in &c.blobs {
            match blobs.check(dir, sha) {
                Ok(n) if n == *len => {}
                Ok(n) => found.add(
                    Some(seq),
                    ProblemKind::BlobAltered,
                    format!("blob {sha} has {n} bytes, entry says {len}"),
                ),
                Err((kind, reason)) => found.add(Some(seq), kind, reason),
            }
        }
    }
    last.and_then(at)
        .is_some_and(|c| matches!(c.what, What::Close))
}

/// A checkpoint file as [`open_checkpoints`] found it: its path, the seq its name points at,
/// and the checkpoint, or the problem with it.
type Opened = (
    PathBuf,
    Option<u64>,
    Result<Checkpoint, (ProblemKind, String)>,
);

/// Opens each of a session's checkpoint files (in name order) and checks its signature, its
/// origin and its name against its size.
fn open_checkpoints(cp_dir: &Path, id: Option<Ulid>, key: Option<&NoteVerifier>) -> Vec<Opened> {
    let mut names: Vec<PathBuf> = match std::fs::read_dir(cp_dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "note"))
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
        .into_iter()
        .map(|path| {
            let named: Option<u64> = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse().ok());
            let seq = named.map(|n| n.saturating_sub(1));
            let opened = open_checkpoint(&path, named, id, key);
            (path, seq, opened)
        })
        .collect()
}

fn open_checkpoint(
    path: &Path,
    named: Option<u64>,
    id: Option<Ulid>,
    key: Option<&NoteVerifier>,
) -> Result<Checkpoint, (ProblemKind, String)> {
    let Some(key) = key else {
        return Err((
            ProblemKind::BadSignature,
            format!("cannot check: no public key ({VERIFIER_KEY} missing; pass --key)"),
        ));
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| (ProblemKind::BadSignature, format!("unreadable: {e}")))?;
    let cp = Checkpoint::open(&text, key).map_err(|reason| (ProblemKind::BadSignature, reason))?;
    if id.is_some_and(|i| cp.origin != origin(&i)) {
        Err((
            ProblemKind::CheckpointMismatch,
            format!("checkpoint is for {}, not this session", cp.origin),
        ))
    } else if named != Some(cp.size) {
        Err((
            ProblemKind::CheckpointMismatch,
            format!("file name does not match its size {}", cp.size),
        ))
    } else {
        Ok(cp)
    }
}

/// The Merkle tree root of the first `size` leaves, for each of `sizes` (ascending) that
/// `leaves` reaches.
fn merkle_roots<'a>(
    mut leaves: impl Iterator<Item = &'a Hash>,
    sizes: &[u64],
) -> HashMap<u64, Hash> {
    let mut frontier = Frontier::new();
    let mut roots = HashMap::with_capacity(sizes.len());
    for &size in sizes {
        while frontier.size() < size {
            match leaves.next() {
                Some(leaf) => frontier.push(*leaf),
                None => return roots,
            }
        }
        roots.insert(size, frontier.root());
    }
    roots
}

/// Places entries by seq when the file is not simply in order: reports gaps (deleted),
/// duplicates (inserted: the copy the next entry does not chain to) and absurd seqs.
fn slots_of<'a>(
    good: &[&'a Checked],
    bad_seqs: &std::collections::HashSet<u64>,
    problem: &mut impl FnMut(Option<u64>, ProblemKind, String),
) -> Vec<Option<&'a Checked>> {
    let limit = 2 * good.len() as u64 + 1024;
    let mut by_seq: BTreeMap<u64, Vec<&Checked>> = BTreeMap::new();
    for c in good {
        if c.seq >= limit {
            problem(
                Some(c.seq),
                ProblemKind::Inserted,
                "seq far beyond the end of the session".into(),
            );
        } else {
            by_seq.entry(c.seq).or_default().push(c);
        }
    }
    let count = by_seq.keys().next_back().map_or(0, |m| m + 1);
    // Gaps, as ranges; a seq where an invalid line stands is reported as edited already.
    let mut expect = 0u64;
    for &seq in by_seq.keys().chain(std::iter::once(&count)) {
        let mut start = expect;
        while start < seq && bad_seqs.contains(&start) {
            start += 1;
        }
        if start < seq {
            let reason = if seq - start == 1 {
                format!("seq {start} is missing")
            } else {
                format!("seq {start}..{} are missing", seq - 1)
            };
            problem(Some(start), ProblemKind::Deleted, reason);
        }
        expect = seq + 1;
    }
    let mut slots = vec![None; count as usize];
    for (&seq, v) in &by_seq {
        if v.len() == 1 {
            slots[seq as usize] = Some(v[0]);
            continue;
        }
        // The genuine entry of a duplicated seq is the one the next entry chains to.
        let next_prev = by_seq
            .get(&(seq + 1))
            .and_then(|n| (n.len() == 1).then(|| n[0].prev));
        let genuine = v.iter().position(|c| Some(c.hash) == next_prev);
        for (i, c) in v.iter().enumerate() {
            if Some(i) == genuine {
                slots[seq as usize] = Some(*c);
            } else {
                problem(
                    Some(seq),
                    ProblemKind::Inserted,
                    format!(
                        "seq {seq} appears {} times; this one is not in the chain",
                        v.len()
                    ),
                );
            }
        }
    }
    slots
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("harness-verify-{tag}-{}", Ulid::new()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn garbage(dir: &Path, lines: usize) -> PathBuf {
        let file = dir.join(format!("{}.jsonl", Ulid::new()));
        let text: String = (0..lines).map(|i| format!("garbage {i}\n")).collect();
        std::fs::write(&file, text).unwrap();
        file
    }

    #[test]
    fn garbage_keeps_a_bounded_number_of_problems_and_counts_the_rest() {
        let dir = scratch("garbage");
        let file = garbage(&dir, KEPT_PROBLEMS + 2500);
        let report = verify_path(&dir, &VerifyOptions::default()).unwrap();
        assert!(!report.intact());
        assert_eq!(report.problems.len(), KEPT_PROBLEMS);
        assert_eq!(report.omitted, 2500);
        assert_eq!(report.problem_count(), KEPT_PROBLEMS as u64 + 2500);
        assert_eq!(report.entries(), KEPT_PROBLEMS as u64 + 2500);
        let first = report.problems[0].to_string();
        assert!(
            first.starts_with(&format!(
                "{}: seq 0: edited: line 1: not a valid entry",
                file.display()
            )),
            "{first}"
        );
        assert!(report.problems[999].to_string().contains("line 1000:"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_invalid_line_is_placed_after_the_last_valid_entry_before_it() {
        // A valid entry, then garbage, then the next entry: the garbage stands where seq 1
        // belongs, whatever follows.
        let dir = scratch("placed");
        let id = Ulid::new();
        let open = Entry::SessionOpen(crate::ledger::SessionOpen {
            command: vec!["x".into()],
            uid: 0,
            gid: 0,
            cgroup: "/".into(),
            policy_sha256: String::new(),
            ca_fingerprint: None,
            software: "t".into(),
            hostname: "t".into(),
        });
        let e0 = crate::ledger::canonical_entry(
            &open,
            &id,
            0,
            "2025-01-01T00:00:00.000000Z",
            &genesis(&id),
        )
        .unwrap();
        let mut text = e0.clone();
        text.extend_from_slice(b"\nnot an entry\nnor this\n");
        std::fs::write(dir.join(format!("{id}.jsonl")), text).unwrap();
        let report = verify_path(&dir, &VerifyOptions::default()).unwrap();
        let lines: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
        assert!(lines[0].contains("seq 1: edited: line 2:"), "{lines:?}");
        assert!(lines[1].contains("seq 1: edited: line 3:"), "{lines:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_without_sessions_is_no_ledger() {
        let dir = scratch("empty");
        let err = verify_path(&dir, &VerifyOptions::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: no harness ledger here (no session files)",
                dir.display()
            )
        );
        std::fs::write(dir.join("notes.txt"), "hello").unwrap();
        std::fs::create_dir(dir.join("keys")).unwrap();
        assert!(matches!(
            verify_path(&dir, &VerifyOptions::default()),
            Err(LedgerError::NoLedger { .. })
        ));
        // Checkpoints of a session whose file is gone: a ledger whose session vanished.
        let gone = Ulid::new();
        std::fs::create_dir_all(dir.join("checkpoints").join(gone.to_string())).unwrap();
        let report = verify_path(&dir, &VerifyOptions::default()).unwrap();
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert_eq!(report.problems[0].kind, ProblemKind::Deleted);
        assert_eq!(report.problems[0].file, dir.join(format!("{gone}.jsonl")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Found by the `verify` fuzz target: a validly signed checkpoint of size 0 whose root is
    /// not the empty tree's made the mismatch message compute `size - 1` and panic (wrap, in
    /// a release build).
    #[tokio::test]
    async fn a_signed_checkpoint_of_size_zero_with_another_root_is_a_mismatch() {
        let dir = scratch("size-zero");
        let ledger = crate::ledger::Ledger::open(&dir).unwrap();
        let (w, _) = ledger
            .open_session(crate::ledger::SessionOpen {
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
        w.close(crate::ledger::SessionClose::exited(Some(0), None))
            .await
            .unwrap();
        let key = std::fs::read_to_string(dir.join(crate::ledger::SIGNING_KEY)).unwrap();
        let signer = super::super::note::NoteSigner::parse(&key).unwrap();
        let cp = Checkpoint {
            origin: origin(&id),
            size: 0,
            root: crate::ledger::sha256(b"not the empty tree"),
        };
        let file = dir.join("checkpoints").join(id.to_string());
        std::fs::write(
            file.join(format!("{:020}.note", 0)),
            signer.sign(&cp.body()),
        )
        .unwrap();
        let report = verify_path(&dir, &VerifyOptions::default()).unwrap();
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.kind == ProblemKind::CheckpointMismatch
                    && p.to_string().contains("size 0")),
            "{:?}",
            report.problems
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
