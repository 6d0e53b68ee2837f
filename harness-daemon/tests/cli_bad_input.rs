//! The CLI on what is not a ledger: a directory with no session files is said to be no
//! ledger (exit 2, one line), never "intact"; a `.jsonl` of garbage is not intact (exit 1,
//! the first line naming the file and the line, the rest capped with a count) for `verify`,
//! `log` in every form and `export`.
mod ledger_support;

use ledger_support::*;
use std::path::Path;

fn garbage(dir: &Path, lines: usize) -> std::path::PathBuf {
    let file = dir.join(format!("{}.jsonl", ulid::Ulid::new()));
    let text: String = (0..lines).map(|i| format!("garbage line {i}\n")).collect();
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn a_directory_without_session_files_is_no_ledger() {
    let empty = scratch("no-ledger-empty");
    let others = scratch("no-ledger-others");
    std::fs::write(others.join("README"), "not a ledger").unwrap();
    std::fs::write(others.join("data.json"), "{}\n").unwrap();
    for dir in [&empty, &others] {
        let want = format!(
            "harness: {}: no harness ledger here (no session files)",
            dir.display()
        );
        let d = dir.to_str().unwrap();
        for args in [
            &["verify", d][..],
            &["log", d],
            &["log", d, "--json"],
            &["log", d, "--entries"],
            &["log", d, "--correlations"],
            &["log", d, "--follow"],
            &["export", d, "--format", "har"],
        ] {
            let (code, out, err) = harness(args);
            assert_eq!(code, 2, "{args:?}: {out}{err}");
            assert_eq!(err.trim_end(), want, "{args:?}");
            assert!(!out.contains("intact"), "{args:?}: {out}");
        }
    }
}

#[test]
fn verify_on_garbage_is_not_intact_with_the_problems_capped() {
    let dir = scratch("garbage-verify");
    let file = garbage(&dir, 5000);
    for path in [&dir, &file] {
        let (code, out, err) = harness(&["verify", path.to_str().unwrap()]);
        assert_eq!(code, 1, "{out}{err}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 21, "{err}");
        assert!(
            lines[0].starts_with(&format!(
                "{}: seq 0: edited: line 1: not a valid entry",
                file.display()
            )),
            "{}",
            lines[0]
        );
        assert_eq!(lines[20], "… and 4980 more problems");
        assert!(
            out.starts_with("NOT INTACT: 5000 problem(s) in 1 session(s)"),
            "{out}"
        );
    }
    // A file that is not named as a session is still checked as one: not intact.
    let notes = dir.join("notes.jsonl");
    std::fs::write(&notes, "hello\n").unwrap();
    let (code, _, err) = harness(&["verify", notes.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("file name is not <ULID>.jsonl"), "{err}");
    assert!(err.contains("line 1: not a valid entry"), "{err}");
}

#[test]
fn log_and_export_on_garbage_fail_naming_the_file_and_line() {
    let dir = scratch("garbage-log");
    let file = garbage(&dir, 3);
    let f = file.to_str().unwrap();
    for args in [
        &["log", f, "--json"][..],
        &["log", dir.to_str().unwrap(), "--json"],
        &["log", f],
        &["log", f, "--correlations"],
        &["export", f, "--format", "har"],
        &["export", f, "--format", "aat"],
    ] {
        let (code, out, err) = harness(args);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(f), "{args:?}: {err}");
        assert!(err.contains("seq 0"), "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
    }
    let (code, _, err) = harness(&["log", f, "--json"]);
    assert_eq!(code, 1);
    assert!(err.contains("line 1: not a valid entry"), "{err}");
    // --entries lists every line, invalid ones as such, then fails.
    let (code, out, err) = harness(&["log", f, "--entries"]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(out.matches("invalid entry").count(), 3, "{out}");
    assert!(err.contains("and 2 more invalid lines"), "{err}");
}
