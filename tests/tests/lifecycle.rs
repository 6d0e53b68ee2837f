//! The enclosure's life: a long-lived daemon serving `harness run`, failing closed when the
//! engine dies, and clear refusals when harness cannot work.
use harness_tests::{
    harness_bin, privileged, probe_bin, read_session, session_files, temp_dir, world, Entry, Peer,
};
use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Waits (bounded) for `cond`; panics with `what` if it never holds.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("gave up waiting for {what}");
}

#[test]
fn run_uses_a_running_daemon_and_the_daemon_detaches_on_sigterm() {
    if !privileged("daemon") {
        return;
    }
    let peer = Peer::start(world::addr(2));
    let dir = temp_dir("daemon");
    let ledger = dir.join("ledger");
    let socket = dir.join("control.sock");
    let mut daemon = Command::new(harness_bin())
        .args(["daemon", "--ledger"])
        .arg(&ledger)
        .arg("--control")
        .arg(&socket)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the control socket", || socket.exists());

    let out = Command::new(harness_bin())
        .args(["run", "--user", "nobody", "--control"])
        .arg(&socket)
        .arg("--")
        .arg(probe_bin())
        .args(["tcp", &peer.addr.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["ok"], true, "{result}");

    // --ledger with a daemon running is a usage error, not silently ignored.
    let out = Command::new(harness_bin())
        .args([
            "run",
            "--user",
            "nobody",
            "--ledger",
            "/tmp/elsewhere",
            "--control",
        ])
        .arg(&socket)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(harness::run::EXIT_RUN_FAILED));
    assert!(String::from_utf8_lossy(&out.stderr).contains("daemon is running"));

    nix_kill(daemon.id(), libc::SIGTERM);
    let status = daemon.wait().unwrap();
    let mut stderr = String::new();
    daemon
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "daemon: {status:?} {stderr}");
    let enclosure = harness::enclosure::cgroup2_mount()
        .unwrap()
        .join("harness/daemon");
    assert!(
        !enclosure.exists(),
        "enclosure left behind at {}",
        enclosure.display()
    );

    let files = session_files(&ledger).unwrap();
    assert_eq!(files.len(), 1);
    let entries = read_session(&files[0]).unwrap();
    assert!(entries
        .iter()
        .any(|e| matches!(&e.entry, Entry::ConnOpen(c) if c.dst == peer.addr)));
    assert!(matches!(
        entries.last().unwrap().entry,
        Entry::SessionClose(_)
    ));
}

fn nix_kill(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a child we spawned.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Undoes what a killed engine left: kills its processes, unpins its links, removes cgroups.
fn clean_up_dead_engine(session_cgroup: &Path) {
    let _ = std::fs::write(session_cgroup.join("cgroup.kill"), "1");
    wait_for("the session's processes to die", || {
        std::fs::read_to_string(session_cgroup.join("cgroup.procs"))
            .map(|s| s.trim().is_empty())
            .unwrap_or(true)
    });
    let _ = std::fs::remove_dir(session_cgroup);
    let enclosure = session_cgroup.parent().unwrap();
    let engine = enclosure.file_name().unwrap();
    let pins = PathBuf::from("/sys/fs/bpf/harness").join(engine);
    if let Ok(entries) = std::fs::read_dir(&pins) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let _ = std::fs::remove_dir(&pins);
    let _ = std::fs::remove_dir(enclosure);
}

#[test]
fn a_killed_engine_fails_closed() {
    if !privileged("fail-closed") {
        return;
    }
    let peer = Peer::start(world::addr(2));
    let dir = temp_dir("fail-closed");
    // Sticky, as /tmp is: the enclosed user may leave files here, never replace the ledger.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let ledger = dir.join("ledger");
    let go = dir.join("go");
    let mut run = Command::new(harness_bin())
        .args(["run", "--no-daemon", "--user", "nobody", "--ledger"])
        .arg(&ledger)
        .arg("--")
        .arg(probe_bin())
        .arg("wait-then-tcp")
        .arg(&go)
        .arg(peer.addr.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The session file exists a moment before its first entry is in it.
    let mut first = None;
    wait_for("the session to open", || {
        first = session_files(&ledger)
            .ok()
            .and_then(|files| files.first().cloned())
            .and_then(|file| read_session(&file).ok())
            .and_then(|entries| entries.into_iter().next());
        first.is_some()
    });
    let cgroup = match first.map(|r| r.entry) {
        Some(Entry::SessionOpen(open)) => PathBuf::from(&open.cgroup),
        other => panic!("first entry {other:?}"),
    };
    wait_for("the probe to run inside the session", || {
        std::fs::read_to_string(cgroup.join("cgroup.procs"))
            .map(|s| !s.trim().is_empty())
            .unwrap_or(false)
    });
    // The engine dies without a chance to clean up.
    nix_kill(run.id(), libc::SIGKILL);
    run.wait().unwrap();
    // Now the enclosed process would connect: it must not get through, directly or otherwise.
    // It does not even get to try: the session's pid 1 saw its engine go and took every
    // enclosed process with it (its stdout closes with nothing written). Were one to survive,
    // the pinned programs would still send its connect to a port nobody listens on.
    std::fs::write(&go, "").unwrap();
    let mut out = String::new();
    run.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    clean_up_dead_engine(&cgroup);
    assert!(
        out.trim().is_empty(),
        "the enclosed process outlived its engine and said: {out}"
    );
    assert!(
        peer.received.lock().unwrap().is_empty(),
        "the peer was reached"
    );
}

/// After `kill -9` of `harness run`, the next `harness run` on the same ledger recovers what the
/// dead engine left (issue 10.7): it closes the abandoned session on the record, says so, and
/// removes the dead session's cgroup; `verify` finds the ledger intact.
#[test]
fn the_next_run_recovers_what_a_killed_engine_left() {
    if !privileged("the_next_run_recovers_what_a_killed_engine_left") {
        return;
    }
    let dir = temp_dir("recover-next-run");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let ledger = dir.join("ledger");
    let go = dir.join("go");
    let mut run = Command::new(harness_bin())
        .args(["run", "--no-daemon", "--user", "nobody", "--ledger"])
        .arg(&ledger)
        .arg("--")
        .arg(probe_bin())
        .arg("wait-then-tcp")
        .arg(&go)
        // Never reached: the probe waits for a file nobody writes.
        .arg(std::net::SocketAddr::new(world::addr(2), 9).to_string())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = None;
    wait_for("the session to open", || {
        first = session_files(&ledger)
            .ok()
            .and_then(|files| files.first().cloned())
            .and_then(|file| read_session(&file).ok())
            .and_then(|entries| entries.into_iter().next());
        first.is_some()
    });
    let cgroup = match first.map(|r| r.entry) {
        Some(Entry::SessionOpen(open)) => PathBuf::from(&open.cgroup),
        other => panic!("first entry {other:?}"),
    };
    wait_for("the probe to run inside the session", || {
        std::fs::read_to_string(cgroup.join("cgroup.procs"))
            .map(|s| !s.trim().is_empty())
            .unwrap_or(false)
    });
    nix_kill(run.id(), libc::SIGKILL);
    run.wait().unwrap();
    let dead = session_files(&ledger).unwrap().remove(0);

    let next = Command::new(harness_bin())
        .args(["run", "--no-daemon", "--user", "nobody", "--ledger"])
        .arg(&ledger)
        .args(["--", "/bin/true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&next.stderr);
    assert!(next.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: recovered an abandoned session and closed it",
            dead.display()
        )),
        "the next run says what it recovered: {stderr}"
    );
    let entries = read_session(&dead).unwrap();
    match &entries.last().unwrap().entry {
        Entry::SessionClose(close) => assert_eq!(
            close.reason.as_deref(),
            Some("recovered: the engine recording this session died")
        ),
        other => panic!("the dead session ends with {other:?}"),
    }
    assert!(
        !cgroup.exists(),
        "the dead session's cgroup {} was removed",
        cgroup.display()
    );
    let verified = Command::new(harness_bin())
        .arg("verify")
        .arg(&ledger)
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
}

#[test]
fn run_refuses_clearly_when_not_root() {
    let out = Command::new(harness_bin())
        .uid(65534)
        .gid(65534)
        .args(["run", "--no-daemon", "--ledger", "/tmp/never", "--", "true"])
        .output();
    let out = match out {
        Ok(out) => out,
        // Dropping to another uid needs root; as non-root we already are "not root".
        Err(_) => Command::new(harness_bin())
            .args(["run", "--no-daemon", "--ledger", "/tmp/never", "--", "true"])
            .output()
            .unwrap(),
    };
    // Harness's own failure: 125, never a status the command could have given.
    assert_eq!(out.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("must run as root"), "{stderr}");
}

/// The trust bundle an embedded engine writes for its enclosure is its own, and goes with it:
/// `/run/harness/trust` does not fill up with one file per `harness run`.
#[test]
fn an_embedded_engine_removes_its_trust_bundle_when_it_ends() {
    if !privileged("trust-bundle-cleanup") {
        return;
    }
    let dir = temp_dir("trust-cleanup");
    let out = Command::new(harness_bin())
        .args(["run", "--no-daemon", "--user", "nobody", "--ledger"])
        .arg(dir.join("ledger"))
        .args([
            "--",
            "/bin/sh",
            "-c",
            "cat \"$SSL_CERT_FILE\" >/dev/null && echo \"$SSL_CERT_FILE\"",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bundle = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        bundle.starts_with("/run/harness/trust"),
        "{}",
        bundle.display()
    );
    assert!(!bundle.exists(), "{} outlived its engine", bundle.display());
}
