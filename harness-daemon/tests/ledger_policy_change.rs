//! `policy_change` (SPEC.md §4.18): a session that ran under two policies verifies, with the
//! library and with the real `harness verify`, and `harness log` says what changed.
mod ledger_support;

use harness::ledger::verify::{verify_path, VerifyOptions};
use harness::ledger::*;
use ledger_support::*;

const OLD: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const NEW: &str = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

#[tokio::test]
async fn a_session_that_ran_under_two_policies_verifies_and_says_so() {
    let dir = scratch("policy-change");
    let ledger = Ledger::open(&dir).unwrap();
    let (w, _) = ledger.open_session(session_open()).await.unwrap();
    w.append(conn_open(1)).await.unwrap();
    let change = PolicyChange {
        sha256: NEW.into(),
        previous_sha256: OLD.into(),
        origin: "/etc/harness/policy.toml".into(),
    };
    let durable = w.append(Entry::PolicyChange(change.clone())).await.unwrap();
    assert_eq!(durable.seq(), 2);
    w.append(conn_open(2)).await.unwrap();
    w.close(close()).await.unwrap();
    let file = ledger.session_path(&w.id());

    let entries = read_session(&file).unwrap();
    assert_eq!(entries[2].entry, Entry::PolicyChange(change));
    assert_eq!(entries[2].entry.kind(), "policy_change");
    let report = verify_path(&dir, &VerifyOptions::default()).unwrap();
    assert!(report.intact(), "{:?}", report.problems);

    let (code, out, err) = harness(&["verify", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "harness verify: {out}{err}");
    let said = format!("/etc/harness/policy.toml sha256 {NEW} (was {OLD})");
    let (code, out, err) = harness(&["log", "--entries", file.to_str().unwrap()]);
    assert_eq!(code, 0, "harness log --entries: {out}{err}");
    let line = out
        .lines()
        .find(|l| l.contains("policy_change"))
        .unwrap_or_else(|| panic!("no policy_change line in harness log --entries:\n{out}"));
    assert!(line.contains(&said), "{line}");
    let (code, out, err) = harness(&["log", file.to_str().unwrap()]);
    assert_eq!(code, 0, "harness log: {out}{err}");
    assert!(
        out.lines()
            .any(|l| l.contains("policy changed: ") && l.contains(&said)),
        "no policy change in the timeline:\n{out}"
    );
}
