//! Crash suite: a real child process writing with many concurrent submitters is killed with
//! SIGKILL mid-batch, again and again. After each kill the session is reopened (recovery moves
//! a torn final line aside), the ledger verifies, and every entry the child was told is durable
//! is present with the hash it was told.
//!
//! The child is this test binary itself, re-executed with `HARNESS_CRASH_CHILD_DIR` set; it
//! runs `child_writer`, which reports each acknowledged entry on stdout (a pipe).
mod ledger_support;

use harness::ledger::verify::{verify_path, ProblemKind, VerifyOptions};
use harness::ledger::*;
use ledger_support::*;
use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};

const ROUNDS: u64 = 20;
const SUBMITTERS: u64 = 32;

/// The child: appends as fast as it can from many tasks until it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_writer() {
    let Some(dir) = std::env::var_os("HARNESS_CRASH_CHILD_DIR") else {
        return; // Not a child: nothing to do.
    };
    let ledger = Ledger::open(&dir).unwrap();
    let w = match std::env::var("HARNESS_CRASH_CHILD_SESSION") {
        Ok(id) => ledger.reopen_session(id.parse().unwrap()).await.unwrap().0,
        Err(_) => ledger.open_session(session_open()).await.unwrap().0,
    };
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "SESSION {}", w.id()).unwrap();
        out.flush().unwrap();
    }
    let mut tasks = Vec::new();
    for t in 0..SUBMITTERS {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0u64.. {
                // Entries of up to a kB, so that a batch spans several pages.
                let n = 100 + ((t * 7919 + i * 104729) % 1000) as usize;
                let bytes: Vec<u8> = (0..n).map(|k| b'a' + ((k as u64 + i) % 26) as u8).collect();
                let d = w
                    .append(Entry::Data(Data {
                        conn: t,
                        direction: Direction::Up,
                        index: i,
                        offset: 0,
                        bytes: Body::from_bytes(&bytes),
                    }))
                    .await
                    .unwrap();
                let mut out = std::io::stdout().lock();
                writeln!(out, "ACK {} {}", d.seq(), d.hash_hex()).unwrap();
                out.flush().unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn kill_9_mid_batch_loses_no_acknowledged_entry() {
    let dir = scratch("crash");
    let mut session: Option<String> = None;
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    let mut torn_rounds = 0;
    for round in 0..ROUNDS {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
            .env("HARNESS_CRASH_CHILD_DIR", &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(s) = &session {
            cmd.env("HARNESS_CRASH_CHILD_SESSION", s);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        // Kill after a varying number of acknowledgements (pseudo-random, reproducible).
        let kill_after = 20 + (round * 2654435761) % 400;
        let mut seen = 0;
        let mut killed = false;
        for line in stdout.lines() {
            let line = line.unwrap();
            // The test harness may have printed "test child_writer ... " on the same line.
            if let Some((_, id)) = line.split_once("SESSION ") {
                session = Some(id.trim().to_owned());
            } else if let Some((_, rest)) = line.split_once("ACK ") {
                let (seq, hash) = rest.split_once(' ').unwrap();
                let seq: u64 = seq.parse().unwrap();
                if let Some(old) = acked.insert(seq, hash.to_owned()) {
                    panic!("seq {seq} acknowledged twice ({old}, {hash})");
                }
                seen += 1;
                if seen >= kill_after && !killed {
                    child.kill().unwrap(); // SIGKILL
                    killed = true;
                }
            }
        }
        let status = child.wait().unwrap();
        if std::env::var_os("HARNESS_CRASH_TRACE").is_some() {
            eprintln!(
                "round {round}: killed after {seen} acks at {:?}",
                std::time::SystemTime::now()
            );
        }
        assert!(killed, "round {round}: child ended by itself: {status}");

        // Recover in this process, then everything must verify and every ack be present.
        let id: ulid::Ulid = session.as_deref().unwrap().parse().unwrap();
        let ledger = Ledger::open(&dir).unwrap();
        let (w, d) = ledger.reopen_session(id).await.unwrap();
        let recs = read_session(&ledger.session_path(&id)).unwrap();
        match &recs[d.seq() as usize].entry {
            Entry::Recovery(r) if r.torn_bytes > 0 => {
                torn_rounds += 1;
                let saved = dir.join(r.saved_as.as_deref().unwrap());
                assert_eq!(std::fs::metadata(saved).unwrap().len(), r.torn_bytes);
            }
            Entry::Recovery(_) => {}
            other => panic!("first entry after reopening: {other:?}"),
        }
        let report = verify_path(&dir, &VerifyOptions::default()).unwrap();
        assert!(
            report.intact(),
            "round {round}: {:?}",
            report
                .problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
        );
        let lines = lines(&ledger.session_path(&id));
        for (seq, hash) in &acked {
            let line = lines
                .get(*seq as usize)
                .unwrap_or_else(|| panic!("round {round}: acknowledged seq {seq} is gone"));
            assert_eq!(hex::encode(sha256(line)), *hash, "round {round}: seq {seq}");
        }
        drop(w);
    }
    eprintln!(
        "crash suite: {ROUNDS} kills, {} acknowledged entries all present, {torn_rounds} rounds had a torn final line to move aside",
        acked.len()
    );
    // Finally close it cleanly; a last full verification.
    let id: ulid::Ulid = session.unwrap().parse().unwrap();
    let ledger = Ledger::open(&dir).unwrap();
    let (w, _) = ledger.reopen_session(id).await.unwrap();
    w.close(close()).await.unwrap();
    let report = verify_path(&dir, &VerifyOptions::default()).unwrap();
    assert!(report.intact(), "{:?}", report.problems);
}

#[tokio::test]
async fn torn_line_is_moved_aside_and_invalid_middle_line_refused() {
    let dir = scratch("torn");
    let ledger = Ledger::open(&dir).unwrap();
    let (w, _) = ledger.open_session(session_open()).await.unwrap();
    for i in 1..10 {
        w.append(conn_open(i)).await.unwrap();
    }
    let id = w.id();
    drop(w);
    let path = ledger.session_path(&id);
    let original = std::fs::read(&path).unwrap();
    // A torn write: half of a line, no newline.
    let mut torn = original.clone();
    torn.extend_from_slice(b"{\"caller\":{\"cgroup_id\":7,\"pid\"");
    std::fs::write(&path, &torn).unwrap();
    let report = verify_path(&dir, &VerifyOptions::default()).unwrap();
    assert!(report
        .problems
        .iter()
        .any(|p| p.kind == ProblemKind::TornLine && p.seq == Some(10)));
    let (w, d) = ledger.reopen_session(id).await.unwrap();
    assert_eq!(d.seq(), 10);
    let now = std::fs::read(&path).unwrap();
    assert_eq!(
        &now[..original.len()],
        &original[..],
        "valid prefix kept byte for byte"
    );
    let recs = read_session(&path).unwrap();
    let Entry::Recovery(r) = &recs[10].entry else {
        panic!("{:?}", recs[10])
    };
    assert_eq!(r.torn_bytes, 30);
    assert_eq!(
        std::fs::read(dir.join(r.saved_as.as_deref().unwrap())).unwrap(),
        b"{\"caller\":{\"cgroup_id\":7,\"pid\""
    );
    w.close(close()).await.unwrap();
    assert!(verify_path(&dir, &VerifyOptions::default())
        .unwrap()
        .intact());
    // A closed session cannot be reopened.
    assert!(matches!(
        ledger.reopen_session(id).await,
        Err(LedgerError::Closed { .. })
    ));

    // An invalid line that is not the last: refuse to append, name the seq.
    let (w, _) = ledger.open_session(session_open()).await.unwrap();
    for i in 1..10 {
        w.append(conn_open(i)).await.unwrap();
    }
    let id = w.id();
    drop(w);
    let path = ledger.session_path(&id);
    let mut l = lines(&path);
    l[4][10] = b'#';
    write_lines(&path, &l);
    let before = std::fs::read(&path).unwrap();
    match ledger.reopen_session(id).await {
        Err(LedgerError::Corrupt { seq, .. }) => assert_eq!(seq, 4),
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), before, "nothing changed");
}

/// What every engine start does (`Ledger::recover_abandoned`, SPEC.md §11): a session whose
/// writer was killed is reopened, its torn line moved aside and closed; a closed session that
/// lost its final checkpoint gets one; a session a live writer holds is left alone; a second
/// start finds nothing to do.
#[tokio::test]
async fn an_engine_start_recovers_dead_sessions_and_leaves_live_ones() {
    let dir = scratch("abandoned");
    // A writer in another process, killed mid-batch.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
        .env("HARNESS_CRASH_CHILD_DIR", &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut dead = None;
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some((_, id)) = line.split_once("SESSION ") {
            dead = Some(id.trim().parse::<ulid::Ulid>().unwrap());
        } else if let Some((_, rest)) = line.split_once("ACK ") {
            let (seq, hash) = rest.split_once(' ').unwrap();
            acked.insert(seq.parse().unwrap(), hash.to_owned());
            if acked.len() == 200 {
                child.kill().unwrap();
            }
        }
    }
    child.wait().unwrap();
    let dead = dead.unwrap();

    let ledger = Ledger::open(&dir).unwrap();
    // A live session in this process: its writer holds the session's lock.
    let (live, _) = ledger.open_session(session_open()).await.unwrap();
    live.append(conn_open(1)).await.unwrap();
    // A closed session whose final checkpoint never made it to disk.
    let (w, _) = ledger.open_session(session_open()).await.unwrap();
    w.append(conn_open(1)).await.unwrap();
    let unsigned = w.id();
    w.close(close()).await.unwrap();
    drop(w);
    std::fs::remove_dir_all(dir.join("checkpoints").join(unsigned.to_string())).unwrap();
    let report = verify_path(&dir, &VerifyOptions::default()).unwrap();
    assert!(report
        .problems
        .iter()
        .any(|p| p.kind == ProblemKind::CheckpointMissing));

    // An enclosed agent can read session files and flock them; holding one must not keep a
    // dead session from being recovered. The locks that count are where it cannot reach.
    let agents_hold = std::fs::File::open(ledger.session_path(&dead)).unwrap();
    agents_hold.lock_shared().unwrap();
    let locks = std::fs::metadata(dir.join("locks")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&locks.permissions()) & 0o777,
        0o700
    );

    let done = ledger.recover_abandoned().await;
    let said: Vec<String> = done.iter().map(|d| d.to_string()).collect();
    assert_eq!(done.len(), 2, "{said:?}");
    match &done[0] {
        Abandoned::Closed { path, entries, .. } => {
            assert_eq!(path, &ledger.session_path(&dead));
            assert!(*entries as usize >= acked.len() + 3, "{said:?}");
        }
        other => panic!("{other}"),
    }
    match &done[1] {
        Abandoned::Checkpointed { path, entries } => {
            assert_eq!(path, &ledger.session_path(&unsigned));
            assert_eq!(*entries, 3);
        }
        other => panic!("{other}"),
    }
    assert!(
        said[0].contains("recovered an abandoned session and closed it"),
        "{said:?}"
    );

    // The dead session: every acknowledged entry, then recovery, then a close saying why.
    let recs = read_session(&ledger.session_path(&dead)).unwrap();
    let n = recs.len();
    assert!(
        matches!(recs[n - 2].entry, Entry::Recovery(_)),
        "{:?}",
        recs[n - 2]
    );
    match &recs[n - 1].entry {
        Entry::SessionClose(c) => assert_eq!(c.reason.as_deref(), Some(ABANDONED_REASON)),
        other => panic!("{other:?}"),
    }
    let lines = lines(&ledger.session_path(&dead));
    for (seq, hash) in &acked {
        assert_eq!(
            hex::encode(sha256(&lines[*seq as usize])),
            *hash,
            "seq {seq}"
        );
    }
    let report = verify_path(&dir, &VerifyOptions::default()).unwrap();
    assert!(report.intact(), "{:?}", report.problems);

    // The live session was not touched and goes on; a second start has nothing to do.
    assert_eq!(read_session(live.path()).unwrap().len(), 2);
    assert!(ledger.recover_abandoned().await.is_empty());
    live.append(conn_open(2)).await.unwrap();
    live.close(close()).await.unwrap();
    assert!(ledger.recover_abandoned().await.is_empty());
    let report = verify_path(&dir, &VerifyOptions::default()).unwrap();
    assert!(report.intact(), "{:?}", report.problems);
}
