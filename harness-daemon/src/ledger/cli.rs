//! `harness verify`, `harness log` and `harness prove`: argument types and the functions
//! `main` dispatches to. Each returns the process exit status (0 ok, 1 not intact / invalid —
//! for `log`, a line that is not a valid entry —, 2 usage or I/O error, or no ledger at the
//! path) and prints errors as one line on stderr.
use super::canon::{parse_line, sha256};
use super::merkle::{inclusion_proof, leaf_hash, root, root_from_inclusion};
use super::note::{origin, Checkpoint, NoteVerifier};
use super::verify::{verify_path, Report, VerifyOptions};
use super::{session_files, session_id, Entry, LedgerError, VERIFIER_KEY};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Exit status: success.
pub const EXIT_OK: i32 = 0;
/// Exit status: the ledger (or proof) is not intact.
pub const EXIT_NOT_INTACT: i32 = 1;
/// Exit status: usage or I/O error.
pub const EXIT_ERROR: i32 = 2;

/// `harness verify PATH`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// A session file (`<ULID>.jsonl`) or a whole ledger directory.
    pub path: PathBuf,
    /// Public key to check checkpoints with (a file, or the key text NAME+ID+KEY). Default:
    /// the ledger's own keys/checkpoint.pub.
    #[arg(long)]
    pub key: Option<String>,
}

/// `harness log PATH`.
#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// A session file or a whole ledger directory.
    pub path: PathBuf,
    /// One JSON object per entry (the entry exactly as recorded) instead of a timeline.
    #[arg(long, conflicts_with_all = ["correlations", "entries"])]
    pub json: bool,
    /// Watch a live session: print entries as they are recorded, until `session_close`
    /// (a directory: its newest session).
    #[arg(long, conflicts_with = "correlations")]
    pub follow: bool,
    /// Print the causal chains as JSON: model tool call → MCP call → external requests → the
    /// model request that carried the result.
    #[arg(long, conflicts_with = "entries")]
    pub correlations: bool,
    /// One line per ledger entry instead of the timeline.
    #[arg(long)]
    pub entries: bool,
    /// A pricing table over the built-in one, for the timeline's costs [default:
    /// /etc/harness/pricing.toml, if it exists].
    #[arg(long, value_name = "FILE")]
    pub pricing: Option<PathBuf>,
}

/// `harness prove SESSION SEQ`, or `harness prove --verify PROOF --key KEY`.
#[derive(Debug, clap::Args)]
pub struct ProveArgs {
    /// The session file (`<ULID>.jsonl`).
    #[arg(required_unless_present = "verify")]
    pub session: Option<PathBuf>,
    /// The entry to prove.
    #[arg(required_unless_present = "verify")]
    pub seq: Option<u64>,
    /// Check a proof (a file, `-` for stdin) instead of making one.
    #[arg(long, value_name = "PROOF", conflicts_with_all = ["session", "seq"])]
    pub verify: Option<PathBuf>,
    /// Public key (a file, or the key text NAME+ID+KEY); required with --verify.
    #[arg(long, requires = "verify")]
    pub key: Option<String>,
}

/// Problems `harness verify` prints in full; the rest are counted in one line.
pub const PRINTED_PROBLEMS: usize = 20;

/// Prints a line on stdout; a closed pipe (`harness verify | head`) is not an error.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

fn fail(msg: impl std::fmt::Display) -> i32 {
    eprintln!("harness: {msg}");
    EXIT_ERROR
}

fn load_key(arg: &str) -> Result<NoteVerifier, String> {
    let p = Path::new(arg);
    let text = if p.exists() {
        std::fs::read_to_string(p).map_err(|e| format!("{arg}: {e}"))?
    } else {
        arg.to_owned()
    };
    NoteVerifier::parse(&text).map_err(|e| format!("{arg}: {e}"))
}

/// Runs `harness verify`.
pub fn verify(args: &VerifyArgs) -> i32 {
    let key = match args.key.as_deref().map(load_key).transpose() {
        Ok(k) => k,
        Err(e) => return fail(e),
    };
    let report = match verify_path(&args.path, &VerifyOptions { key }) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    if !report.intact() {
        let _ = print_problems(&report, &mut std::io::stderr().lock());
        say!(
            "NOT INTACT: {} problem(s) in {} session(s), {} entries",
            report.problem_count(),
            report.sessions.len(),
            report.entries()
        );
        return EXIT_NOT_INTACT;
    }
    say!(
        "intact: {} entries in {} session(s)",
        report.entries(),
        report.sessions.len()
    );
    match report.sessions.iter().rfind(|s| s.checkpoint.is_some()) {
        Some(s) => say!(
            "last checkpoint: {} size {} root {}",
            s.file.display(),
            s.checkpoint.unwrap_or_default(),
            s.checkpoint_root.as_deref().unwrap_or_default()
        ),
        None => say!("last checkpoint: none"),
    }
    for s in report.sessions.iter().filter(|s| !s.closed) {
        say!(
            "note: {} is not closed (still being written, or awaiting crash recovery); entries after its last checkpoint ({}) are not signed yet",
            s.file.display(),
            s.checkpoint.unwrap_or(0)
        );
    }
    if let Some(k) = &report.key {
        say!("key: {k}");
    }
    EXIT_OK
}

/// Writes the first [`PRINTED_PROBLEMS`] problems, one line each, and then how many more
/// there are: `… and N more problems`.
pub fn print_problems(report: &Report, out: &mut impl std::io::Write) -> std::io::Result<()> {
    for p in report.problems.iter().take(PRINTED_PROBLEMS) {
        writeln!(out, "{p}")?;
    }
    let more = report.problem_count() - report.problems.len().min(PRINTED_PROBLEMS) as u64;
    if more > 0 {
        writeln!(out, "… and {more} more problems")?;
    }
    Ok(())
}

/// Runs `harness log`.
pub fn log(args: &LogArgs) -> i32 {
    match log_inner(args) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("harness: {e}");
            e.exit_status()
        }
    }
}

fn log_inner(args: &LogArgs) -> Result<(), LogError> {
    if args.follow {
        return follow(args);
    }
    if args.correlations {
        let mut chains = Vec::new();
        for log in crate::timeline::read_sessions(&args.path)? {
            chains.extend(crate::timeline::correlate::correlate(&log).chains);
        }
        let text = serde_json::to_string_pretty(&chains).unwrap_or_default();
        let mut out = std::io::stdout().lock();
        return writeln!(out, "{text}").or_else(ignore_pipe);
    }
    if !args.json && !args.entries {
        let prices = crate::cost::PriceTable::load(args.pricing.as_deref())?;
        let mut out = std::io::stdout().lock();
        for log in crate::timeline::read_sessions(&args.path)? {
            let text = crate::timeline::render::render_priced(&log, Default::default(), &prices);
            let text = crate::timeline::render::terminal_safe(&text);
            out.write_all(text.as_bytes()).or_else(ignore_pipe)?;
        }
        return Ok(());
    }
    Ok(log_entries(args)?)
}

/// Why `harness log` failed.
#[derive(Debug, thiserror::Error)]
enum LogError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Timeline(#[from] crate::timeline::TimelineError),
    #[error(transparent)]
    Pricing(#[from] crate::cost::PricingError),
    #[error("<stdout>: {0}")]
    Stdout(#[from] std::io::Error),
}

impl LogError {
    /// 1 when a line is not a valid entry (as `verify` says "not intact"), else 2.
    fn exit_status(&self) -> i32 {
        match self {
            LogError::Ledger(LedgerError::Corrupt { .. })
            | LogError::Timeline(crate::timeline::TimelineError::Entry { .. }) => EXIT_NOT_INTACT,
            LogError::Timeline(crate::timeline::TimelineError::Ledger(LedgerError::Corrupt {
                ..
            })) => EXIT_NOT_INTACT,
            _ => EXIT_ERROR,
        }
    }
}

fn ignore_pipe(e: std::io::Error) -> Result<(), LogError> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(LogError::Stdout(e))
    }
}

/// `harness log --follow`: polls the session file and prints each complete new line (raw with
/// `--json`, rendered otherwise) until `session_close`.
fn follow(args: &LogArgs) -> Result<(), LogError> {
    use crate::timeline::session::parse_lines;
    let file = if args.path.is_dir() {
        session_files(&args.path)?
            .pop()
            .ok_or_else(|| LedgerError::NoLedger {
                path: args.path.clone(),
            })?
    } else {
        args.path.clone()
    };
    let mut live = crate::timeline::render::Live::new();
    let mut offset = 0usize;
    let mut next_seq = 0u64;
    loop {
        let bytes = std::fs::read(&file).map_err(|e| LedgerError::io(&file, e))?;
        let complete = bytes[offset.min(bytes.len())..]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(offset, |p| offset + p + 1);
        let new = &bytes[offset.min(complete)..complete];
        let items = parse_lines(&file, new, next_seq)?;
        let mut out = std::io::stdout().lock();
        let mut closed = false;
        for (item, raw) in items.iter().zip(new.split(|b| *b == b'\n')) {
            if args.json {
                out.write_all(raw).and_then(|()| out.write_all(b"\n"))
            } else {
                let text = live.entry(item);
                out.write_all(crate::timeline::render::terminal_safe(&text).as_bytes())
            }
            .or_else(ignore_pipe)?;
            closed |= matches!(item.entry, Entry::SessionClose(_));
        }
        out.flush().or_else(ignore_pipe)?;
        next_seq += items.len() as u64;
        offset = complete;
        if closed {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// `harness log --json` and `--entries`. `--json` stops at the first line that is not a valid
/// entry (an error naming the file, the line and the seq it stands at); `--entries` lists
/// such lines as invalid and fails once all are listed. A final line without its newline is
/// still being written (or torn by a crash): it is left out.
fn log_entries(args: &LogArgs) -> Result<(), LedgerError> {
    let files = crate::timeline::session_paths(&args.path).map_err(|e| match e {
        crate::timeline::TimelineError::Ledger(e) => e,
        crate::timeline::TimelineError::Io { path, source } => LedgerError::Io { path, source },
        other => LedgerError::io(&args.path, std::io::Error::other(other.to_string())),
    })?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let io = |e| LedgerError::io(Path::new("<stdout>"), e);
    let mut invalid: Option<(PathBuf, u64, u64, String)> = None;
    let mut invalid_lines = 0u64;
    for file in files {
        let bytes = std::fs::read(&file).map_err(|e| LedgerError::io(&file, e))?;
        if !args.json {
            writeln!(out, "== {}", file.display()).map_err(io)?;
        }
        let mut next_seq = 0u64;
        for (i, line) in bytes.split_inclusive(|b| *b == b'\n').enumerate() {
            let Some(line) = line.strip_suffix(b"\n") else {
                break;
            };
            let l = match parse_line(line) {
                Ok(l) => l,
                Err(reason) => {
                    invalid_lines += 1;
                    invalid.get_or_insert((file.clone(), next_seq, i as u64 + 1, reason.clone()));
                    if args.json {
                        break;
                    }
                    writeln!(out, "line {}: invalid entry: {reason}", i + 1).map_err(io)?;
                    continue;
                }
            };
            next_seq = l.seq.saturating_add(1);
            if args.json {
                out.write_all(line).map_err(io)?;
                out.write_all(b"\n").map_err(io)?;
            } else {
                writeln!(
                    out,
                    "{} #{:<5} {:<18} {}",
                    l.ts,
                    l.seq,
                    l.entry.kind(),
                    summary(&l.entry)
                )
                .map_err(io)?;
            }
        }
        if args.json && invalid.is_some() {
            break;
        }
    }
    out.flush().map_err(io)?;
    match invalid {
        None => Ok(()),
        Some((path, seq, line, reason)) => Err(LedgerError::Corrupt {
            path,
            seq,
            reason: if invalid_lines > 1 && !args.json {
                format!("line {line}: not a valid entry: {reason} (and {} more invalid lines; run harness verify)", invalid_lines - 1)
            } else {
                format!("line {line}: not a valid entry: {reason}")
            },
        }),
    }
}

fn summary(e: &Entry) -> String {
    match e {
        Entry::SessionOpen(o) => format!("{} (uid {}) {}", o.command.join(" "), o.uid, o.software),
        Entry::SessionClose(c) => match (c.exit_code, c.signal) {
            (Some(code), _) => format!("exit {code}"),
            (_, Some(sig)) => format!("signal {sig}"),
            _ => String::new(),
        },
        Entry::PolicyChange(p) => format!(
            "{} sha256 {} (was {})",
            p.origin, p.sha256, p.previous_sha256
        ),
        Entry::ConnOpen(c) => format!(
            "conn {} → {} {}",
            c.conn,
            c.dst,
            c.host.as_deref().unwrap_or("")
        ),
        Entry::ConnDenied(d) => format!(
            "{} {} denied by {}: {}",
            d.proto,
            d.dst.map(|d| d.to_string()).unwrap_or_default(),
            d.by,
            d.reason
        ),
        Entry::ConnClose(c) => format!(
            "conn {} ↑{} ↓{} {}ms",
            c.conn, c.bytes_up, c.bytes_down, c.duration_ms
        ),
        Entry::DnsQuery(q) => format!("{} {} #{}", q.qname, q.qtype, q.exchange),
        Entry::DnsAnswer(a) => format!(
            "#{} {} {}",
            a.exchange,
            a.rcode.as_deref().unwrap_or("-"),
            a.answers.join(", ")
        ),
        Entry::HttpRequest(r) => format!(
            "conn {} #{} {} {}{}",
            r.conn,
            r.exchange,
            r.method,
            r.authority.as_deref().unwrap_or(""),
            r.target
        ),
        Entry::HttpResponse(r) => format!("conn {} #{} {}", r.conn, r.exchange, r.status),
        Entry::HttpRequestBody(b) | Entry::HttpResponseBody(b) => {
            format!("conn {} #{} {} bytes", b.conn, b.exchange, b.body.len())
        }
        Entry::StreamChunk(c) => format!(
            "conn {} #{} {:?} [{}] {} bytes",
            c.conn,
            c.exchange,
            c.direction,
            c.index,
            c.body.len()
        ),
        Entry::Data(d) => format!(
            "conn {} {:?} @{} {} bytes",
            d.conn,
            d.direction,
            d.offset,
            d.bytes.len()
        ),
        Entry::TlsFailure(t) => format!("conn {} {:?}: {}", t.conn, t.side, t.reason),
        Entry::TlsIntercepted(t) => format!(
            "conn {} sni {} alpn {} ({} / {})",
            t.conn,
            t.sni.as_deref().unwrap_or("-"),
            t.alpn.as_deref().unwrap_or("-"),
            t.client_version,
            t.upstream_version
        ),
        Entry::ProcessFork(f) => format!("pid {} from {}", f.pid, f.ppid),
        Entry::ProcessExec(x) => format!("pid {} (parent {}) {}", x.pid, x.ppid, x.argv.join(" ")),
        Entry::ProcessExit(x) => match x.describe() {
            Some(how) => format!("pid {} {how}", x.pid),
            None => format!("pid {}", x.pid),
        },
        Entry::RequestDecision(d) => format!(
            "conn {} exchange {} {} by {}: {}",
            d.conn, d.exchange, d.action, d.rule, d.reason
        ),
        Entry::RequestDecided(d) => format!(
            "conn {} exchange {} ask #{} {} by {}",
            d.conn, d.exchange, d.ask, d.action, d.by
        ),
        Entry::Annotation(a) => format!("of #{} {} {}", a.of_seq, a.by, a.topic),
        Entry::Recovery(r) => r.reason.clone(),
        Entry::Error(e) => format!("{}: {}", e.context, e.message),
    }
}

/// An inclusion proof: `entry` (its canonical bytes) is leaf `seq` of the tree the signed
/// `checkpoint` commits to. SPEC.md §9.3.
#[derive(Debug, Serialize, Deserialize)]
pub struct Proof {
    /// `harness-inclusion-proof/1`.
    pub format: String,
    /// The session.
    pub session: String,
    /// The entry's seq (= its leaf index).
    pub seq: u64,
    /// The entry's canonical bytes.
    pub entry: String,
    /// The tree size of `checkpoint`.
    pub tree_size: u64,
    /// RFC 9162 inclusion path, base64 hashes, leaf to root.
    pub path: Vec<String>,
    /// The signed checkpoint note.
    pub checkpoint: String,
}

/// The proof format tag.
pub const PROOF_FORMAT: &str = "harness-inclusion-proof/1";

/// Runs `harness prove`.
pub fn prove(args: &ProveArgs) -> i32 {
    if let Some(proof) = &args.verify {
        let Some(key) = &args.key else {
            return fail("prove --verify needs --key (the ledger's public key)");
        };
        let key = match load_key(key) {
            Ok(k) => k,
            Err(e) => return fail(e),
        };
        let text = if proof.as_os_str() == "-" {
            let mut s = String::new();
            if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut s) {
                return fail(format!("<stdin>: {e}"));
            }
            s
        } else {
            match std::fs::read_to_string(proof) {
                Ok(s) => s,
                Err(e) => return fail(format!("{}: {e}", proof.display())),
            }
        };
        return match check_proof(&text, &key) {
            Ok(msg) => {
                say!("{msg}");
                EXIT_OK
            }
            Err(e) => {
                eprintln!("{}: proof is not valid: {e}", proof.display());
                EXIT_NOT_INTACT
            }
        };
    }
    let (Some(session), Some(seq)) = (&args.session, args.seq) else {
        return fail("usage: harness prove SESSION SEQ | harness prove --verify PROOF --key KEY");
    };
    match make_proof(session, seq) {
        Ok(p) => {
            say!(
                "{}",
                serde_json::to_string_pretty(&p).expect("a proof always serializes")
            );
            EXIT_OK
        }
        Err((code, msg)) => {
            eprintln!("{}: seq {seq}: {msg}", session.display());
            code
        }
    }
}

/// Makes the inclusion proof of entry `seq` of `session` against the smallest signed
/// checkpoint that covers it.
pub fn make_proof(session: &Path, seq: u64) -> Result<Proof, (i32, String)> {
    let id = session_id(session).ok_or((EXIT_ERROR, "file name is not <ULID>.jsonl".into()))?;
    let dir = match session.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let bytes = std::fs::read(session).map_err(|e| (EXIT_ERROR, e.to_string()))?;
    let lines: Vec<&[u8]> = bytes
        .split_inclusive(|b| *b == b'\n')
        .filter_map(|l| l.strip_suffix(b"\n"))
        .collect();
    let entry = *lines.get(seq as usize).ok_or((
        EXIT_ERROR,
        format!("the session has {} entries", lines.len()),
    ))?;
    let key_text = std::fs::read_to_string(dir.join(VERIFIER_KEY))
        .map_err(|e| (EXIT_ERROR, format!("{VERIFIER_KEY}: {e}")))?;
    let key = NoteVerifier::parse(&key_text).map_err(|e| (EXIT_ERROR, e))?;
    let cp_dir = dir.join("checkpoints").join(id.to_string());
    let mut notes: Vec<(u64, PathBuf)> = std::fs::read_dir(&cp_dir)
        .map_err(|e| (EXIT_ERROR, format!("{}: {e}", cp_dir.display())))?
        .filter_map(|e| {
            let p = e.ok()?.path();
            let size = p.file_stem()?.to_str()?.parse().ok()?;
            (p.extension()? == "note").then_some((size, p))
        })
        .filter(|(size, _)| *size > seq)
        .collect();
    notes.sort();
    let (_, note_path) = notes.first().ok_or((
        EXIT_ERROR,
        "no signed checkpoint covers this entry yet".to_string(),
    ))?;
    let note = std::fs::read_to_string(note_path).map_err(|e| (EXIT_ERROR, e.to_string()))?;
    let cp = Checkpoint::open(&note, &key)
        .map_err(|e| (EXIT_NOT_INTACT, format!("{}: {e}", note_path.display())))?;
    let size = cp.size as usize;
    if lines.len() < size {
        return Err((
            EXIT_NOT_INTACT,
            format!(
                "the file holds {} entries, the checkpoint {size}",
                lines.len()
            ),
        ));
    }
    let leaves: Vec<_> = lines[..size]
        .iter()
        .map(|l| leaf_hash(&sha256(l)))
        .collect();
    if root(&leaves) != cp.root {
        return Err((
            EXIT_NOT_INTACT,
            "entries do not match the signed checkpoint (run harness verify)".into(),
        ));
    }
    let path = inclusion_proof(seq as usize, &leaves)
        .iter()
        .map(|h| B64.encode(h))
        .collect();
    Ok(Proof {
        format: PROOF_FORMAT.into(),
        session: id.to_string(),
        seq,
        entry: String::from_utf8_lossy(entry).into_owned(),
        tree_size: cp.size,
        path,
        checkpoint: note,
    })
}

/// Checks a proof with nothing but the public key.
pub fn check_proof(text: &str, key: &NoteVerifier) -> Result<String, String> {
    let p: Proof = serde_json::from_str(text).map_err(|e| format!("not a proof: {e}"))?;
    if p.format != PROOF_FORMAT {
        return Err(format!("unknown format {:?}", p.format));
    }
    let cp = Checkpoint::open(&p.checkpoint, key).map_err(|e| format!("checkpoint: {e}"))?;
    let id: ulid::Ulid = p.session.parse().map_err(|_| "session is not a ULID")?;
    if cp.origin != origin(&id) {
        return Err(format!(
            "checkpoint is for {}, not {}",
            cp.origin, p.session
        ));
    }
    if cp.size != p.tree_size {
        return Err("tree_size differs from the checkpoint's".into());
    }
    let line = parse_line(p.entry.as_bytes()).map_err(|e| format!("entry: {e}"))?;
    if line.seq != p.seq || line.session != p.session {
        return Err("entry's seq or session differ from the proof's".into());
    }
    let path = p
        .path
        .iter()
        .map(|h| {
            B64.decode(h)
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v).ok())
                .ok_or("path: not 32-byte base64 hashes")
        })
        .collect::<Result<Vec<_>, _>>()?;
    let leaf = leaf_hash(&sha256(p.entry.as_bytes()));
    match root_from_inclusion(p.seq, cp.size, &leaf, &path) {
        Some(r) if r == cp.root => Ok(format!(
            "proof ok: seq {} ({}) of session {} is in the checkpoint of size {} signed by {}",
            p.seq,
            line.entry.kind(),
            p.session,
            cp.size,
            key.name
        )),
        _ => Err("inclusion path does not lead to the signed root".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::verify::{Problem, ProblemKind, KEPT_PROBLEMS};

    fn report(kept: usize, omitted: u64) -> Report {
        Report {
            problems: (0..kept)
                .map(|i| Problem {
                    file: "01J00000000000000000000000.jsonl".into(),
                    seq: Some(0),
                    kind: ProblemKind::Edited,
                    reason: format!("line {}: not a valid entry", i + 1),
                })
                .collect(),
            omitted,
            ..Report::default()
        }
    }

    fn printed(r: &Report) -> Vec<String> {
        let mut out = Vec::new();
        print_problems(r, &mut out).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn verify_prints_the_first_problems_and_counts_the_rest() {
        let lines = printed(&report(KEPT_PROBLEMS, 5000));
        assert_eq!(lines.len(), PRINTED_PROBLEMS + 1, "{lines:?}");
        assert!(
            lines[0].ends_with("line 1: not a valid entry"),
            "{}",
            lines[0]
        );
        assert_eq!(
            lines[PRINTED_PROBLEMS],
            format!(
                "… and {} more problems",
                KEPT_PROBLEMS as u64 + 5000 - PRINTED_PROBLEMS as u64
            )
        );
        // Few problems: all of them, and no count.
        let lines = printed(&report(3, 0));
        assert_eq!(lines.len(), 3, "{lines:?}");
        let lines = printed(&report(PRINTED_PROBLEMS + 1, 0));
        assert_eq!(lines.last().unwrap(), "… and 1 more problems");
    }
}
