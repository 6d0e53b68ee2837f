//! The verifier and the other readers of a session file, on hostile files: the input is
//! written as `<ULID>.jsonl` (the session its first line names, else a fixed one) in a scratch
//! ledger, with checkpoints the ledger's key signs as the input asks, and then read by
//! `ledger::parse_line` (each line), `verify::verify_path` (the file and the directory),
//! `ledger::read_session`, `harness log`'s `SessionLog::read` → `render` / `correlate`,
//! `harness export`'s HAR and AAT, and crash recovery (`Ledger::reopen_session`, whose scan of
//! the file is `ledger/recover.rs`).
//!
//! Checks: nothing panics; the file and its directory give the same problems; an intact
//! session can be read, logged and exported; an intact open session, or one whose only problem
//! is a torn final line, can be reopened (if it has a complete first line: an empty file's
//! session_open never became durable), and after recovery and a clean close it verifies
//! intact; a closed one cannot be reopened.
//!
//! Input: `session bytes [0x00 checkpoint specs]`. Each spec is `[size, mode]`: a checkpoint of
//! `size` entries; `mode & 3`: 0 the true root of the first `size` lines, 1 a wrong root, 2
//! another session's origin, 3 the rest of the input as the note's text, unsigned; `mode & 4`
//! files it under the wrong size.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use harness::ledger::merkle::{leaf_hash, Frontier};
use harness::ledger::note::{origin, Checkpoint, NoteSigner};
use harness::ledger::verify::{verify_path, ProblemKind, VerifyOptions};
use harness::ledger::{parse_line, read_session, sha256, Entry, Ledger, LedgerError, SessionClose};
use harness::timeline::{correlate::correlate, render, session::SessionLog};
use harness_fuzz::{clear_session, scratch_ledger, signer};
use libfuzzer_sys::fuzz_target;
use ulid::Ulid;

struct State {
    runtime: tokio::runtime::Runtime,
    dir: PathBuf,
    ledger: Ledger,
    signer: NoteSigner,
}

fn state() -> &'static State {
    static STATE: OnceLock<State> = OnceLock::new();
    STATE.get_or_init(|| {
        let (dir, ledger) = scratch_ledger("verify");
        State {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            dir,
            ledger,
            signer: signer(),
        }
    })
}

/// The session of inputs whose first line names none.
const FALLBACK: &str = "01JAAAAAAAAAAAAAAAAAAAAAAA";
const OTHER: &str = "01JBBBBBBBBBBBBBBBBBBBBBBB";

fuzz_target!(|data: &[u8]| {
    let st = state();
    let (session, specs) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };

    // Each complete line on its own, as every reader parses it.
    let lines: Vec<&[u8]> = session
        .split_inclusive(|b| *b == b'\n')
        .filter_map(|l| l.strip_suffix(b"\n"))
        .collect();
    let mut closed = false;
    let mut first_session = None;
    for (i, line) in lines.iter().enumerate() {
        if let Ok(l) = parse_line(line) {
            if i == 0 {
                first_session = l.session.parse::<Ulid>().ok();
            }
            closed = matches!(l.entry, Entry::SessionClose(_));
        } else {
            closed = false;
        }
    }
    let id = first_session.unwrap_or_else(|| FALLBACK.parse().unwrap());
    let file = st.dir.join(format!("{id}.jsonl"));
    std::fs::write(&file, session).unwrap();
    write_checkpoints(&st.dir, &st.signer, &id, &lines, specs);

    let one = verify_path(&file, &VerifyOptions::default()).expect("verify the file");
    let all = verify_path(&st.dir, &VerifyOptions::default()).expect("verify the directory");
    assert_eq!(
        one.problems, all.problems,
        "the file and its directory disagree"
    );
    assert_eq!(one.omitted, all.omitted);
    let intact = one.intact();

    let read = read_session(&file);
    if intact {
        let entries = read.expect("an intact session reads");
        assert_eq!(entries.len() as u64, one.entries());
    }
    match SessionLog::read(&file) {
        Ok(log) => {
            let _ = render::render(&log, render::Limits::default());
            let _ = correlate(&log);
            let har = harness::export::har::har(std::slice::from_ref(&log));
            let aat = harness::export::aat::lines(&log);
            if intact {
                har.expect("an intact session exports as HAR");
                aat.expect("an intact session exports as AAT");
            }
        }
        Err(e) => assert!(!intact, "an intact session does not read: {e}"),
    }

    // Crash recovery, as the engine reopens a session it did not close.
    // A file with no complete line has nothing to reopen (its session_open never became
    // durable): recovery refuses it.
    let torn_only = !lines.is_empty()
        && !one.problems.is_empty()
        && one.omitted == 0
        && one.problems.iter().all(|p| p.kind == ProblemKind::TornLine);
    let reopened = st
        .runtime
        .block_on(async { st.ledger.reopen_session(id).await });
    match reopened {
        Ok((writer, _)) => {
            assert!(!(intact && closed), "a closed session was reopened");
            st.runtime
                .block_on(writer.close(SessionClose::exited(None, None)))
                .expect("close the reopened session");
            drop(writer);
            if (intact && !lines.is_empty()) || torn_only {
                let again = verify_path(&file, &VerifyOptions::default()).unwrap();
                assert!(
                    again.intact(),
                    "recovered from {:?}, but then: {:?}",
                    one.problems,
                    again.problems
                );
            }
        }
        Err(LedgerError::Closed { .. }) => {}
        Err(e) => assert!(
            !((intact && !lines.is_empty()) || torn_only) || (intact && closed),
            "an {} session was not reopened: {e}",
            if intact { "intact" } else { "only torn" }
        ),
    }
    clear_session(&st.dir, &id);
});

/// Writes `checkpoints/<id>/<size>.note` as `specs` ask.
fn write_checkpoints(dir: &Path, signer: &NoteSigner, id: &Ulid, lines: &[&[u8]], specs: &[u8]) {
    let cps = dir.join("checkpoints").join(id.to_string());
    let mut i = 0;
    while let [size, mode, ..] = specs[i..] {
        i += 2;
        let size = u64::from(size);
        let mut frontier = Frontier::new();
        for line in lines.iter().take(size as usize) {
            frontier.push(leaf_hash(&sha256(line)));
        }
        let mut cp = Checkpoint {
            origin: origin(id),
            size,
            root: frontier.root(),
        };
        let text = match mode & 3 {
            0 => signer.sign(&cp.body()),
            1 => {
                cp.root = sha256(&[mode]);
                signer.sign(&cp.body())
            }
            2 => {
                cp.origin = origin(&OTHER.parse().unwrap());
                signer.sign(&cp.body())
            }
            _ => String::from_utf8_lossy(&specs[i..]).into_owned(),
        };
        let named = if mode & 4 != 0 { size + 1 } else { size };
        std::fs::create_dir_all(&cps).unwrap();
        std::fs::write(cps.join(format!("{named:020}.note")), text).unwrap();
        if mode & 3 == 3 {
            break;
        }
    }
}
