//! Tamper suite: each way of changing a ledger after the fact is detected, naming the right
//! `seq`, by the library and by the real `harness verify` (exit 1, one line per problem).
mod ledger_support;

use harness::ledger::verify::{verify_path, ProblemKind, Report, VerifyOptions};
use harness::ledger::*;
use ledger_support::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

struct Fixture {
    dir: PathBuf,
    file: PathBuf,
    blob: String,
    id: ulid::Ulid,
}

const BLOB_SEQ: u64 = 13;
const LAST_SEQ: u64 = 20;

/// A closed session of 21 entries (one with a blob body, one annotation), checkpointed every
/// 5 entries and at close.
async fn fixture(name: &str) -> Fixture {
    let dir = scratch(name);
    let ledger = Ledger::open_with(
        &dir,
        Options {
            checkpoint_every: 5,
            checkpoint_interval: Duration::from_secs(3600),
        },
    )
    .unwrap();
    let (w, d) = ledger.open_session(session_open()).await.unwrap();
    assert_eq!(d.seq(), 0);
    for i in 1..BLOB_SEQ {
        w.append(conn_open(i)).await.unwrap();
    }
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let body = ledger.body(&big).unwrap();
    let Body::Blob { sha256, .. } = &body else {
        panic!("a 200 kB body goes to a blob")
    };
    let blob = sha256.clone();
    let described = w
        .append(Entry::HttpResponseBody(HttpBody {
            conn: 1,
            exchange: 0,
            body,
            trailers: vec![],
        }))
        .await
        .unwrap();
    assert_eq!(described.seq(), BLOB_SEQ);
    for i in BLOB_SEQ + 1..LAST_SEQ - 1 {
        w.append(conn_open(i)).await.unwrap();
    }
    w.append(Entry::Annotation(Annotation {
        of_seq: described.seq(),
        of_hash: described.hash_hex(),
        by: "semantics/test".into(),
        topic: "llm_response".into(),
        data: serde_json::json!({"model": "m", "tokens": 12, "cost": 0.25}),
    }))
    .await
    .unwrap();
    let d = w.close(close()).await.unwrap();
    assert_eq!(d.seq(), LAST_SEQ);
    let id = w.id();
    Fixture {
        file: ledger.session_path(&id),
        dir,
        blob,
        id,
    }
}

fn verify(dir: &Path) -> Report {
    verify_path(dir, &VerifyOptions::default()).unwrap()
}

/// Asserts the library found a problem of `kind` at `seq`, and that `harness verify` exits 1
/// with a line naming the file, the seq and the kind.
fn detected(f: &Fixture, kind: ProblemKind, seq: u64) {
    let report = verify(&f.dir);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == kind && p.seq == Some(seq)),
        "expected {kind} at seq {seq}, got:\n{}",
        report
            .problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let (code, _out, err) = harness(&["verify", f.dir.to_str().unwrap()]);
    assert_eq!(code, 1, "harness verify exit status; stderr:\n{err}");
    let want = format!("seq {seq}: {kind}");
    assert!(
        err.lines()
            .any(|l| l.contains(&want) && l.contains(&f.id.to_string())
                || l.contains(&want) && l.contains("checkpoints")),
        "stderr lacks a line with {want:?}:\n{err}"
    );
}

#[tokio::test]
async fn intact_ledger_verifies() {
    let f = fixture("intact").await;
    let report = verify(&f.dir);
    assert!(report.intact(), "{:?}", report.problems);
    assert_eq!(report.entries(), LAST_SEQ + 1);
    assert_eq!(report.sessions[0].checkpoint, Some(LAST_SEQ + 1));
    let (code, out, err) = harness(&["verify", f.dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("intact: 21 entries in 1 session(s)"), "{out}");
    assert!(out.contains("last checkpoint"), "{out}");
    // A single session file verifies the same way.
    let (code, _, err) = harness(&["verify", f.file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    // The reader API reads it back.
    let recs = read_session(&f.file).unwrap();
    assert_eq!(recs.len() as u64, LAST_SEQ + 1);
    assert!(recs.iter().enumerate().all(|(i, r)| r.seq == i as u64));
}

#[tokio::test]
async fn edited_byte_is_detected() {
    let f = fixture("edit").await;
    let mut l = lines(&f.file);
    let pos = l[7].windows(5).position(|w| w == b"host7").unwrap();
    l[7][pos + 3] = b'X';
    write_lines(&f.file, &l);
    detected(&f, ProblemKind::Edited, 7);
}

#[tokio::test]
async fn edit_that_breaks_json_is_detected() {
    let f = fixture("edit-json").await;
    let mut l = lines(&f.file);
    l[9][0] = b'[';
    write_lines(&f.file, &l);
    detected(&f, ProblemKind::Edited, 9);
}

#[tokio::test]
async fn deleted_entry_is_detected() {
    let f = fixture("delete").await;
    let mut l = lines(&f.file);
    l.remove(7);
    write_lines(&f.file, &l);
    detected(&f, ProblemKind::Deleted, 7);
}

#[tokio::test]
async fn swapped_entries_are_detected() {
    let f = fixture("swap").await;
    let mut l = lines(&f.file);
    l.swap(7, 8);
    write_lines(&f.file, &l);
    detected(&f, ProblemKind::Reordered, 7);
}

#[tokio::test]
async fn inserted_forged_entry_is_detected() {
    let f = fixture("insert").await;
    let mut l = lines(&f.file);
    // A well-formed, canonical entry with the right seq and prev (chained to seq 6).
    let mut v: serde_json::Value = serde_json::from_slice(&l[7]).unwrap();
    v["host"] = "evil.example".into();
    let forged = serde_jcs::to_vec(&v).unwrap();
    l.insert(7, forged);
    write_lines(&f.file, &l);
    detected(&f, ProblemKind::Inserted, 7);
}

#[tokio::test]
async fn cut_tail_is_detected() {
    let f = fixture("cut").await;
    let mut l = lines(&f.file);
    l.truncate(16);
    write_lines(&f.file, &l);
    detected(&f, ProblemKind::TruncatedTail, 16);
}

#[tokio::test]
async fn rewritten_history_is_caught_by_checkpoints() {
    // An attacker who edits seq 18 and recomputes every later hash keeps the chain intact;
    // the signed checkpoints still catch it.
    let f = fixture("rechain").await;
    let mut l = lines(&f.file);
    let mut prev = sha256(&l[17]);
    for (i, line) in l.iter_mut().enumerate().skip(18) {
        let mut v: serde_json::Value = serde_json::from_slice(line).unwrap();
        if i == 18 {
            v["host"] = "evil.example".into();
        }
        v["prev"] = hex::encode(prev).into();
        *line = serde_jcs::to_vec(&v).unwrap();
        prev = sha256(line);
    }
    write_lines(&f.file, &l);
    // Chain links are fine now; the checkpoint of size 20 no longer matches.
    detected(&f, ProblemKind::CheckpointMismatch, 15);
}

#[tokio::test]
async fn altered_blob_is_detected() {
    let f = fixture("blob").await;
    let path = blob_path(&f.dir, &f.blob);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1000] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    detected(&f, ProblemKind::BlobAltered, BLOB_SEQ);
}

#[tokio::test]
async fn missing_blob_is_detected() {
    let f = fixture("blob-missing").await;
    std::fs::remove_file(blob_path(&f.dir, &f.blob)).unwrap();
    detected(&f, ProblemKind::BlobMissing, BLOB_SEQ);
}

#[tokio::test]
async fn forged_checkpoint_is_detected() {
    let f = fixture("forge-cp").await;
    let cp = f
        .dir
        .join("checkpoints")
        .join(f.id.to_string())
        .join(format!("{:020}.note", 10));
    let text = std::fs::read_to_string(&cp).unwrap();
    let forged = text.replacen("\n10\n", "\n11\n", 1);
    assert_ne!(text, forged);
    std::fs::write(&cp, forged).unwrap();
    detected(&f, ProblemKind::BadSignature, 9);
}

#[tokio::test]
async fn checkpoint_signed_by_another_key_is_detected() {
    let f = fixture("forge-key").await;
    let cp = f
        .dir
        .join("checkpoints")
        .join(f.id.to_string())
        .join(format!("{:020}.note", LAST_SEQ + 1));
    let text = std::fs::read_to_string(&cp).unwrap();
    let body = text.split_once("\n\n").unwrap().0.to_owned() + "\n";
    let other = note::NoteSigner::from_seed([42; 32]);
    std::fs::write(&cp, other.sign(&body)).unwrap();
    detected(&f, ProblemKind::BadSignature, LAST_SEQ);
}

#[tokio::test]
async fn removed_final_checkpoint_is_detected() {
    let f = fixture("rm-cp").await;
    let cps = f.dir.join("checkpoints").join(f.id.to_string());
    std::fs::remove_file(cps.join(format!("{:020}.note", LAST_SEQ + 1))).unwrap();
    detected(&f, ProblemKind::CheckpointMissing, 20);
}

#[tokio::test]
async fn deleted_session_file_is_detected() {
    let f = fixture("rm-session").await;
    std::fs::remove_file(&f.file).unwrap();
    let report = verify(&f.dir);
    assert!(report
        .problems
        .iter()
        .any(|p| p.kind == ProblemKind::Deleted && p.file == f.file));
    let (code, _, err) = harness(&["verify", f.dir.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
}

#[tokio::test]
async fn verify_with_an_explicit_key_and_usage_errors() {
    let f = fixture("key").await;
    let pubkey = std::fs::read_to_string(f.dir.join(VERIFIER_KEY)).unwrap();
    let (code, _, err) = harness(&["verify", f.dir.to_str().unwrap(), "--key", pubkey.trim()]);
    assert_eq!(code, 0, "{err}");
    // The wrong key: every checkpoint is unsigned as far as it knows.
    let other = note::NoteSigner::from_seed([1; 32]).verifier().to_text();
    let (code, _, err) = harness(&["verify", f.dir.to_str().unwrap(), "--key", &other]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("bad signature"), "{err}");
    // I/O and usage errors: exit 2, one line.
    let (code, _, err) = harness(&["verify", "/nonexistent/ledger"]);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    let (code, _, _) = harness(&["verify"]);
    assert_eq!(code, 2);
}

#[tokio::test]
async fn log_prints_a_timeline_and_json() {
    let f = fixture("log").await;
    let (code, out, err) = harness(&["log", f.dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("session_open"), "{out}");
    assert!(out.contains("http_response_body"), "{out}");
    assert!(out.contains("session_close"), "{out}");
    let (code, out, _) = harness(&["log", f.file.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0);
    let objs: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objs.len() as u64, LAST_SEQ + 1);
    assert_eq!(objs[0]["kind"], "session_open");
    assert_eq!(objs[13]["body"]["encoding"], "blob");
}

#[tokio::test]
async fn inclusion_proofs_verify_with_only_the_public_key() {
    let f = fixture("prove").await;
    let (code, proof, err) = harness(&["prove", f.file.to_str().unwrap(), "13"]);
    assert_eq!(code, 0, "{err}");
    let elsewhere = scratch("prove-check");
    let proof_path = elsewhere.join("proof.json");
    std::fs::write(&proof_path, &proof).unwrap();
    let key_path = elsewhere.join("ledger.pub");
    std::fs::copy(f.dir.join(VERIFIER_KEY), &key_path).unwrap();
    let (code, out, err) = harness(&[
        "prove",
        "--verify",
        proof_path.to_str().unwrap(),
        "--key",
        key_path.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("proof ok: seq 13"), "{out}");
    // A proof for a changed entry fails.
    let mut p: serde_json::Value = serde_json::from_str(&proof).unwrap();
    let entry = p["entry"]
        .as_str()
        .unwrap()
        .replace("\"conn\":1", "\"conn\":2");
    p["entry"] = entry.into();
    std::fs::write(&proof_path, p.to_string()).unwrap();
    let (code, _, err) = harness(&[
        "prove",
        "--verify",
        proof_path.to_str().unwrap(),
        "--key",
        key_path.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    // Every seq has a proof that checks.
    for seq in 0..=LAST_SEQ {
        let p = harness::ledger::cli::make_proof(&f.file, seq).unwrap();
        let key = note::NoteVerifier::parse(&std::fs::read_to_string(&key_path).unwrap()).unwrap();
        harness::ledger::cli::check_proof(&serde_json::to_string(&p).unwrap(), &key).unwrap();
    }
}

/// Governance's entries (SPEC.md §4.9 `answered_by`, §4.18, §4.19) are written by the writer,
/// read back as written, and verify — by the library and by `harness verify`; a deny edited into
/// an allow afterwards is caught.
#[tokio::test]
async fn governance_entries_verify_and_a_deny_edited_to_allow_is_detected() {
    let dir = scratch("governance");
    let ledger = Ledger::open(&dir).unwrap();
    let (w, _) = ledger.open_session(session_open()).await.unwrap();
    let policy_sha256 = "c36f5b3edd11ebabb0ab3e1ca44fa1efc6287f7c9bce788d84272eb3bc5ce6dc";
    w.append(conn_open(1)).await.unwrap();
    let request = |exchange| {
        Entry::HttpRequest(HttpRequest {
            conn: 1,
            exchange,
            version: "HTTP/1.1".into(),
            method: "POST".into(),
            scheme: "https".into(),
            authority: Some("mcp.broker.example".into()),
            target: "/mcp".into(),
            uri_scheme: None,
            headers: vec![],
        })
    };
    let refused = |exchange| {
        Entry::HttpResponse(HttpResponse {
            conn: 1,
            exchange,
            version: "HTTP/1.1".into(),
            status: 200,
            reason: None,
            headers: vec![],
            answered_by: Some("harness".into()),
        })
    };
    // A tool call refused by a rule (its matched value a non-integer: §3 allows it here).
    w.append(request(0)).await.unwrap();
    let deny = w
        .append(Entry::RequestDecision(RequestDecision {
            conn: 1,
            exchange: 0,
            action: "deny".into(),
            rule: "tool[1]".into(),
            reason: "tool[1] deny tool place_order args /qty > 100 (matched /qty = 500.5)".into(),
            matched: [("/qty".to_owned(), serde_json::json!(500.5))].into(),
            tool: Some("place_order".into()),
            call_id: Some(serde_json::json!("call-7")),
            budget: None,
            policy_sha256: policy_sha256.into(),
        }))
        .await
        .unwrap();
    w.append(refused(0)).await.unwrap();
    // One held by an ask and refused by the timeout.
    w.append(request(1)).await.unwrap();
    let ask = w
        .append(Entry::RequestDecision(RequestDecision {
            conn: 1,
            exchange: 1,
            action: "ask".into(),
            rule: "tool[2]".into(),
            reason: "tool[2] ask tool *".into(),
            matched: Default::default(),
            tool: Some("get_quote".into()),
            call_id: Some(serde_json::json!(8)),
            budget: None,
            policy_sha256: policy_sha256.into(),
        }))
        .await
        .unwrap();
    w.append(Entry::RequestDecided(RequestDecided {
        conn: 1,
        exchange: 1,
        ask: ask.seq(),
        action: "deny".into(),
        by: "timeout after 300 s".into(),
        why: None,
    }))
    .await
    .unwrap();
    w.append(refused(1)).await.unwrap();
    // One refused by the budget.
    w.append(request(2)).await.unwrap();
    w.append(Entry::RequestDecision(RequestDecision {
        conn: 1,
        exchange: 2,
        action: "deny".into(),
        rule: "budget.requests_per_minute".into(),
        reason: "mcp.broker.example: at most 60 requests per minute".into(),
        matched: Default::default(),
        tool: None,
        call_id: None,
        budget: Some(BudgetState {
            limit: "60".into(),
            spent: "60".into(),
            unsettled: 0,
        }),
        policy_sha256: policy_sha256.into(),
    }))
    .await
    .unwrap();
    w.append(refused(2)).await.unwrap();
    w.close(close()).await.unwrap();
    let file = ledger.session_path(&w.id());

    let report = verify(&dir);
    assert!(report.intact(), "{:?}", report.problems);
    let (code, out, err) = harness(&["verify", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let recs = read_session(&file).unwrap();
    let kinds: Vec<&str> = recs.iter().map(|r| r.entry.kind()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "request_decision").count(),
        3
    );
    assert!(kinds.contains(&"request_decided"));
    match &recs[deny.seq() as usize].entry {
        Entry::RequestDecision(d) => {
            assert_eq!(d.matched["/qty"], serde_json::json!(500.5));
            assert_eq!(d.call_id, Some(serde_json::json!("call-7")));
        }
        other => panic!("seq {} is {other:?}", deny.seq()),
    }

    // The deny rewritten as an allow, still canonical: its hash is no longer the next prev.
    let mut all = lines(&file);
    let at = deny.seq() as usize;
    let edited = String::from_utf8(all[at].clone())
        .unwrap()
        .replace(r#""action":"deny""#, r#""action":"allow""#);
    assert_ne!(edited.as_bytes(), &all[at][..]);
    all[at] = edited.into_bytes();
    write_lines(&file, &all);
    let report = verify(&dir);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::Edited && p.seq == Some(deny.seq())),
        "{:?}",
        report.problems
    );
}
