//! Concurrency: 64 tasks × 1,000 entries into one session make one unbroken chain with every
//! seq exactly once, and group commit batches them (far fewer syncs than entries).
mod ledger_support;

use harness::ledger::verify::{verify_path, VerifyOptions};
use harness::ledger::*;
use ledger_support::*;
use std::collections::HashSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_one_unbroken_chain() {
    const TASKS: u64 = 64;
    const EACH: u64 = 1000;
    let dir = scratch("concurrency");
    let ledger = Ledger::open(&dir).unwrap();
    let (w, _) = ledger.open_session(session_open()).await.unwrap();
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let w = w.clone();
        handles.push(tokio::spawn(async move {
            let mut got = Vec::with_capacity(EACH as usize);
            for i in 0..EACH {
                let d = w.append(conn_open(t * EACH + i)).await.unwrap();
                got.push((d.seq(), d.hash_hex(), t * EACH + i));
            }
            got
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        let got = h.await.unwrap();
        // Each task's own entries are in the order it submitted them.
        assert!(got.windows(2).all(|p| p[0].0 < p[1].0));
        all.extend(got);
    }
    let close = w.close(close()).await.unwrap();
    assert_eq!(close.seq(), TASKS * EACH + 1);
    let seqs: HashSet<u64> = all.iter().map(|a| a.0).collect();
    assert_eq!(seqs.len() as u64, TASKS * EACH, "duplicate seq");
    assert_eq!(
        seqs,
        (1..=TASKS * EACH).collect::<HashSet<_>>(),
        "missing seq"
    );

    let recs = read_session(&ledger.session_path(&w.id())).unwrap();
    assert_eq!(recs.len() as u64, TASKS * EACH + 2);
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r.seq, i as u64);
    }
    // Every acknowledged hash is the hash of the line with that seq.
    let lines = lines(&ledger.session_path(&w.id()));
    for (seq, hash, conn) in &all {
        assert_eq!(hex::encode(sha256(&lines[*seq as usize])), *hash);
        match &recs[*seq as usize].entry {
            Entry::ConnOpen(c) => assert_eq!(c.conn, *conn),
            other => panic!("seq {seq}: {other:?}"),
        }
    }
    let report = verify_path(&dir, &VerifyOptions::default()).unwrap();
    assert!(report.intact(), "{:?}", report.problems);
    assert_eq!(report.sessions[0].checkpoint, Some(TASKS * EACH + 2));
    // Checkpoints every 1,000 entries (or fewer, batches permitting) and at close.
    let cps = std::fs::read_dir(dir.join("checkpoints").join(w.id().to_string()))
        .unwrap()
        .count();
    assert!(cps >= 2, "{cps} checkpoints");
    // Appending after close is refused.
    assert!(matches!(
        w.append(conn_open(0)).await,
        Err(LedgerError::Closed { .. })
    ));
}

/// An entry RFC 8785 cannot represent: u64::MAX is beyond the integers an IEEE double holds
/// exactly.
fn uncanonical() -> Entry {
    Entry::ConnClose(ConnClose {
        conn: u64::MAX,
        bytes_up: 0,
        bytes_down: 0,
        duration_ms: 0,
        error: None,
        client_tls_end: None,
        upstream_tls_end: None,
    })
}

#[tokio::test]
async fn an_entry_that_cannot_be_canonical_is_refused_without_harm() {
    let dir = scratch("refuse");
    let ledger = Ledger::open(&dir).unwrap();
    let (w, _) = ledger.open_session(session_open()).await.unwrap();
    let bad = uncanonical();
    assert!(matches!(
        w.append(bad).await,
        Err(LedgerError::Entry { .. })
    ));
    assert_eq!(w.append(conn_open(1)).await.unwrap().seq(), 1);
    w.close(close()).await.unwrap();
    assert!(verify_path(&dir, &VerifyOptions::default())
        .unwrap()
        .intact());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn entries_appended_together_are_consecutive_and_refused_together() {
    let dir = scratch("append-all");
    let ledger = Ledger::open(&dir).unwrap();
    let (w, _) = ledger.open_session(session_open()).await.unwrap();
    // Groups of three from 16 tasks at once: each group's seqs are consecutive, whatever the
    // other tasks interleave.
    let mut handles = Vec::new();
    for t in 0..16u64 {
        let w = w.clone();
        handles.push(tokio::spawn(async move {
            let mut groups = Vec::new();
            for i in 0..50u64 {
                let base = (t * 50 + i) * 3;
                let entries = (base..base + 3).map(conn_open).collect();
                let durable = w.append_all(entries).await.unwrap();
                groups.push((base, durable));
            }
            groups
        }));
    }
    let mut groups = Vec::new();
    for h in handles {
        groups.extend(h.await.unwrap());
    }
    let recs = read_session(&ledger.session_path(&w.id())).unwrap();
    for (base, durable) in &groups {
        assert_eq!(durable.len(), 3);
        let first = durable[0].seq();
        assert_eq!(
            durable.iter().map(|d| d.seq()).collect::<Vec<_>>(),
            [first, first + 1, first + 2]
        );
        for (k, d) in durable.iter().enumerate() {
            match &recs[d.seq() as usize].entry {
                Entry::ConnOpen(c) => assert_eq!(c.conn, base + k as u64),
                other => panic!("seq {}: {other:?}", d.seq()),
            }
        }
    }
    // A group with one entry that cannot be canonical is refused whole: none of it is written
    // and the chain goes on unbroken.
    let before = read_session(&ledger.session_path(&w.id())).unwrap().len();
    let bad = uncanonical();
    assert!(matches!(
        w.append_all(vec![conn_open(7), bad]).await,
        Err(LedgerError::Entry { .. })
    ));
    let next = w.append(conn_open(8)).await.unwrap();
    assert_eq!(next.seq() as usize, before);
    w.close(close()).await.unwrap();
    assert!(verify_path(&dir, &VerifyOptions::default())
        .unwrap()
        .intact());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_entries_become_durable_alone_or_with_the_next_commit() {
    let dir = scratch("lazy");
    let ledger = Ledger::open(&dir).unwrap();
    let (w, _) = ledger.open_session(session_open()).await.unwrap();
    // Alone: committed after its short wait.
    let alone = w.append_lazy(conn_open(1)).await.unwrap();
    assert_eq!(alone.seq(), 1);
    // With an eager entry submitted behind it: both durable, in submission order.
    let lazy = tokio::spawn({
        let w = w.clone();
        async move { w.append_lazy(conn_open(2)).await }
    });
    tokio::task::yield_now().await;
    let eager = w.append(conn_open(3)).await.unwrap();
    let lazy = lazy.await.unwrap().unwrap();
    assert_eq!([lazy.seq(), eager.seq()].iter().max(), Some(&3));
    w.close(close()).await.unwrap();
    assert_eq!(
        read_session(&ledger.session_path(&w.id())).unwrap().len(),
        5
    );
    assert!(verify_path(&dir, &VerifyOptions::default())
        .unwrap()
        .intact());
}

#[tokio::test]
async fn secrets_are_fingerprinted_and_blobs_stream() {
    let dir = scratch("secrets");
    let ledger = Ledger::open(&dir).unwrap();
    let h = ledger.header("X-Api-Key", b"sk-secret-value");
    assert_eq!(h.value, None);
    let fp = h.fingerprint.clone().unwrap();
    assert!(fp.starts_with("hmac-sha256:") && fp.len() == 12 + 64);
    assert_eq!(ledger.fingerprint(b"sk-secret-value"), fp);
    assert_ne!(ledger.fingerprint(b"sk-other"), fp);
    // The same ledger reopened keeps its key; another ledger has another.
    assert_eq!(
        Ledger::open(&dir).unwrap().fingerprint(b"sk-secret-value"),
        fp
    );
    assert_ne!(
        Ledger::open(scratch("secrets2"))
            .unwrap()
            .fingerprint(b"sk-secret-value"),
        fp
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        for k in [SIGNING_KEY, FINGERPRINT_KEY] {
            let mode = std::fs::metadata(dir.join(k)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{k}");
        }
    }
    let (w, _) = ledger.open_session(session_open()).await.unwrap();
    let mut bw = ledger.blob_writer().unwrap();
    let mut all = Vec::new();
    for i in 0..100u32 {
        let chunk = vec![(i % 256) as u8; 10_000];
        bw.write(&chunk).unwrap();
        all.extend_from_slice(&chunk);
    }
    let body = bw.finish().unwrap();
    assert_eq!(body.len(), 1_000_000);
    assert_eq!(body.sha256(), hex::encode(sha256(&all)));
    assert_eq!(std::fs::read(blob_path(&dir, body.sha256())).unwrap(), all);
    w.append(Entry::HttpRequest(HttpRequest {
        conn: 1,
        exchange: 0,
        version: "HTTP/1.1".into(),
        method: "POST".into(),
        scheme: "https".into(),
        authority: Some("api.example".into()),
        target: "/v1".into(),
        uri_scheme: None,
        headers: vec![h, ledger.header("content-type", b"application/json")],
    }))
    .await
    .unwrap();
    w.append(Entry::HttpRequestBody(HttpBody {
        conn: 1,
        exchange: 0,
        body,
        trailers: vec![],
    }))
    .await
    .unwrap();
    w.close(close()).await.unwrap();
    assert!(verify_path(&dir, &VerifyOptions::default())
        .unwrap()
        .intact());
    let text = std::fs::read_to_string(ledger.session_path(&w.id())).unwrap();
    assert!(!text.contains("sk-secret-value"));
}
