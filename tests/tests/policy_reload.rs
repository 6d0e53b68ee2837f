//! `harness daemon` reloads its policy on SIGHUP: the kernel and the daemon follow the new
//! file at once, the open session records `policy_change` with both hashes, and a file that
//! does not parse (or has not changed) keeps the policy in force and records nothing.
use harness_tests::{
    harness_bin, privileged, probe_bin, read_session, session_files, temp_dir, world, Entry, Peer,
};
use sha2::{Digest as _, Sha256};
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

/// Waits (bounded) for a line from `lines` that `want` accepts; panics with `what` and every
/// line seen if none comes.
fn wait_line(what: &str, lines: &Receiver<String>, want: impl Fn(&str) -> bool) -> String {
    let mut seen = Vec::new();
    for _ in 0..1000 {
        match lines.recv_timeout(Duration::from_millis(20)) {
            Ok(line) if want(&line) => return line,
            Ok(line) => seen.push(line),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    panic!("gave up waiting for {what}; saw:\n{}", seen.join("\n"));
}

/// The lines a child writes to one of its pipes, as they come.
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (send, recv) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            eprintln!("| {line}");
            if send.send(line).is_err() {
                return;
            }
        }
    });
    recv
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on a child we spawned and have not waited for.
    unsafe { libc::kill(child.id() as i32, sig) };
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn probe_result(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("probe said {line:?}: {e}"))
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

#[test]
fn sighup_reloads_the_policy_and_the_open_session_records_each_version() {
    if !privileged("policy reload") {
        return;
    }
    let peer = Peer::start(world::addr(2));
    let dir = temp_dir("policy-reload");
    let ledger = dir.join("ledger");
    let socket = dir.join("control.sock");
    let policy = dir.join("policy.toml");
    let other = world::addr(3);
    let denying = format!(
        "default = \"deny\"\n\
         [[rule]]\n\
         action = \"allow\"\n\
         cidr = \"{other}/32\"\n"
    );
    let allowing = format!(
        "{denying}\
         [[rule]]\n\
         action = \"allow\"\n\
         cidr = \"{}/32\"\n\
         ports = [{}]\n",
        peer.addr.ip(),
        peer.addr.port()
    );
    // rule[3]'s cidr, on the file's last line (11), column 8, is not a range.
    let broken = format!("{allowing}[[rule]]\naction = \"allow\"\ncidr = \"10.0.0.0/33\"\n");
    assert_eq!(broken.lines().count(), 11);
    write(&policy, &denying);

    let mut daemon = Command::new(harness_bin())
        .args(["daemon", "--ledger"])
        .arg(&ledger)
        .arg("--control")
        .arg(&socket)
        .arg("--policy")
        .arg(&policy)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let said = lines_of(daemon.stderr.take().unwrap());
    for _ in 0..1000 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        socket.exists(),
        "the daemon's control socket never appeared"
    );

    // One session across the reloads: a connect now, and one after each `go` file appears.
    let go = [dir.join("go-1"), dir.join("go-2")];
    let probe = probe_bin();
    let script = format!(
        "{p} tcp {a}; {p} wait-then-tcp {g1} {a}; {p} wait-then-tcp {g2} {a}",
        p = probe.display(),
        a = peer.addr,
        g1 = go[0].display(),
        g2 = go[1].display(),
    );
    let mut run = Command::new(harness_bin())
        .args(["run", "--user", "nobody", "--control"])
        .arg(&socket)
        .args(["--", "/bin/sh", "-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let results = lines_of(run.stdout.take().unwrap());

    let first = probe_result(&wait_line("the first probe", &results, |_| true));
    assert_eq!(first["ok"], false, "denied by the first policy: {first}");
    assert_eq!(
        first["errno"],
        libc::EPERM,
        "refused by the kernel: {first}"
    );

    // The file now allows the peer; SIGHUP.
    write(&policy, &allowing);
    signal(&daemon, libc::SIGHUP);
    let reloaded = wait_line("the reload", &said, |l| l.starts_with("policy "));
    assert_eq!(
        reloaded,
        format!(
            "policy reloaded: {} sha256 {} (was {})",
            policy.display(),
            sha256_hex(allowing.as_bytes()),
            sha256_hex(denying.as_bytes())
        )
    );
    std::fs::write(&go[0], b"").unwrap();
    let second = probe_result(&wait_line("the second probe", &results, |_| true));
    assert_eq!(second["ok"], true, "allowed after the reload: {second}");

    // The same bytes again: unchanged, nothing recorded.
    signal(&daemon, libc::SIGHUP);
    let unchanged = wait_line("the unchanged reload", &said, |l| l.starts_with("policy "));
    assert!(unchanged.starts_with("policy unchanged: "), "{unchanged}");

    // A file that does not parse: the allowing policy stays, and stderr says where and why.
    write(&policy, &broken);
    signal(&daemon, libc::SIGHUP);
    let refused = wait_line("the refused reload", &said, |l| l.starts_with("policy "));
    assert!(refused.starts_with("policy not reloaded"), "{refused}");
    assert!(
        refused.contains(&format!("{}:11:8: rule[3]", policy.display())),
        "names the file, line and rule: {refused}"
    );
    assert!(
        refused.contains(&sha256_hex(allowing.as_bytes())),
        "names the policy that stays: {refused}"
    );
    std::fs::write(&go[1], b"").unwrap();
    let third = probe_result(&wait_line("the third probe", &results, |_| true));
    assert_eq!(third["ok"], true, "still allowed: {third}");

    let status = run.wait().unwrap();
    assert!(status.success(), "harness run: {status:?}");
    signal(&daemon, libc::SIGTERM);
    let status = daemon.wait().unwrap();
    assert!(status.success(), "daemon: {status:?}");

    let files = session_files(&ledger).unwrap();
    assert_eq!(files.len(), 1);
    let entries = read_session(&files[0]).unwrap();
    let Entry::SessionOpen(open) = &entries[0].entry else {
        panic!("first entry: {:?}", entries[0].entry)
    };
    assert_eq!(open.policy_sha256, sha256_hex(denying.as_bytes()));
    let changes: Vec<_> = entries
        .iter()
        .filter_map(|e| match &e.entry {
            Entry::PolicyChange(c) => Some((e.seq, c)),
            _ => None,
        })
        .collect();
    assert_eq!(changes.len(), 1, "one change recorded: {changes:?}");
    let (change_seq, change) = changes[0];
    assert_eq!(change.sha256, sha256_hex(allowing.as_bytes()));
    assert_eq!(change.previous_sha256, sha256_hex(denying.as_bytes()));
    assert_eq!(change.origin, policy.display().to_string());
    let denied = entries.iter().find(|e| {
        matches!(&e.entry, Entry::ConnDenied(d) if d.dst == Some(peer.addr) && d.by == "kernel")
    });
    assert!(denied.is_some(), "the first connect's refusal is recorded");
    let opened: Vec<u64> = entries
        .iter()
        .filter(|e| matches!(&e.entry, Entry::ConnOpen(c) if c.dst == peer.addr))
        .map(|e| e.seq)
        .collect();
    assert_eq!(opened.len(), 2, "both later connects went through");
    assert!(
        opened.iter().all(|&seq| seq > change_seq),
        "allowed only after the change: {opened:?} vs {change_seq}"
    );

    let out = Command::new(harness_bin())
        .arg("verify")
        .arg(&ledger)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "harness verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
