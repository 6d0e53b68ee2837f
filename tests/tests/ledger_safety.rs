//! The ledger and the CA key out of the enclosed agent's reach (issue 10.6): `harness run`
//! refuses a ledger or CA directory the enclosed user could change — the directory itself, or
//! an ancestor that is not sticky — and in the directories harness makes, an enclosed process
//! can neither erase nor rewrite earlier sessions nor read the CA key. And `harness run`'s own
//! failures exit 125, while the command's status passes through (issue 10.10).
use harness_tests::{harness_bin, privileged, session_files, temp_dir};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const DEFAULT_CA: &str = harness::engine::DEFAULT_CA_DIR;

/// `harness run --no-daemon --user nobody --ledger LEDGER [--ca-dir CA] -- /bin/sh -c SCRIPT`.
fn run(ledger: &Path, ca: Option<&Path>, script: &str) -> Output {
    let mut cmd = Command::new(harness_bin());
    cmd.args(["run", "--no-daemon", "--user", "nobody", "--ledger"])
        .arg(ledger);
    if let Some(ca) = ca {
        cmd.arg("--ca-dir").arg(ca);
    }
    cmd.args(["--", "/bin/sh", "-c", script])
        .output()
        .expect("running harness")
}

fn verify(ledger: &Path) -> (Option<i32>, String) {
    let out = Command::new(harness_bin())
        .arg("verify")
        .arg(ledger)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A directory the enclosed `nobody` may leave a file in (sticky, as /tmp is).
fn drop_box(name: &str) -> PathBuf {
    let dir = temp_dir(name);
    chmod(&dir, 0o1777);
    dir
}

/// What an agent that wants its earlier sessions gone and the CA key in hand tries, as the
/// enclosed user: every step fails on a safe ledger. Leaves `MARK` once it has run.
fn attack(ledger: &Path, ca: &Path, mark: &Path) -> String {
    let (l, c) = (ledger.display(), ca.display());
    format!(
        r#"
for d in {l} {l}/checkpoints {l}/keys {l}/blobs {c} {DEFAULT_CA} /var/lib/harness /var/lib/harness/ledger; do
  [ -w "$d" ] && echo "WRITABLE $d"
done
for k in {c}/ca-key.pem {DEFAULT_CA}/ca-key.pem {l}/keys/checkpoint.key {l}/keys/fingerprint.key; do
  [ -r "$k" ] && echo "READABLE $k"
  cat "$k"
done
rm -f {l}/*.jsonl
for f in {l}/*.jsonl; do echo x >> "$f"; done
mv {l}/checkpoints {l}/moved
rm -rf {l}/checkpoints {l}/keys {c}/ca.pem {c}/ca-key.pem
echo ran > {mark}
exit 0
"#,
        mark = mark.display()
    )
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    session_files(dir)
        .unwrap()
        .into_iter()
        .map(|f| {
            let b = std::fs::read(&f).unwrap();
            (f, b)
        })
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// With the directories harness makes (a ledger and a CA under the system's sticky temp dir,
/// and the default CA), the enclosed user can write none of them and read no key: earlier
/// sessions stay whole and verify.
#[test]
fn an_enclosed_agent_can_neither_erase_the_ledger_nor_read_the_ca_key() {
    if !privileged("an_enclosed_agent_can_neither_erase_the_ledger_nor_read_the_ca_key") {
        return;
    }
    let root = temp_dir("ledger-safety");
    let ledger = root.join("ledger");
    let ca = root.join("ca");
    let first = run(&ledger, Some(&ca), "true");
    assert!(first.status.success(), "{}", stderr(&first));
    let before = snapshot(&ledger);
    assert_eq!(before.len(), 1);
    let ca_before = std::fs::read(ca.join("ca-key.pem")).unwrap();
    // The default CA too, which every test here and `harness run` without --ca-dir use.
    let default = run(&ledger, None, "true");
    assert!(default.status.success(), "{}", stderr(&default));
    let before = snapshot(&ledger);

    let mark_dir = drop_box("ledger-safety-mark");
    let mark = mark_dir.join("ran");
    let out = run(&ledger, Some(&ca), &attack(&ledger, &ca, &mark));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(mark.exists(), "the attack did not run: {}", stderr(&out));
    assert!(!stdout.contains("WRITABLE"), "{stdout}");
    assert!(!stdout.contains("READABLE"), "{stdout}");
    assert!(!stdout.contains("PRIVATE"), "a key was read:\n{stdout}");
    // Every earlier session is there, byte for byte, and the whole ledger verifies.
    let after = snapshot(&ledger);
    assert_eq!(after.len(), before.len() + 1);
    assert_eq!(&after[..before.len()], &before[..]);
    let (code, said) = verify(&ledger);
    assert_eq!(code, Some(0), "{said}");
    assert!(ledger.join("checkpoints").is_dir() && ledger.join("keys").is_dir());
    assert_eq!(std::fs::read(ca.join("ca-key.pem")).unwrap(), ca_before);
    assert!(Path::new(DEFAULT_CA).join("ca-key.pem").exists());
}

/// A ledger or CA directory the enclosed user could change — writable by others, owned by
/// that user, beneath a writable directory that is not sticky — is refused before the command
/// runs (exit 125, one line naming the directory and why), never repaired, and the earlier
/// sessions stay whole.
#[test]
fn a_ledger_or_ca_directory_the_agent_could_change_is_refused() {
    if !privileged("a_ledger_or_ca_directory_the_agent_could_change_is_refused") {
        return;
    }
    let root = temp_dir("ledger-unsafe");
    let ledger = root.join("ledger");
    let ca = root.join("ca");
    let first = run(&ledger, Some(&ca), "true");
    assert!(first.status.success(), "{}", stderr(&first));
    let before = snapshot(&ledger);
    let mark_dir = drop_box("ledger-unsafe-mark");
    let mark = mark_dir.join("ran");

    let refused = |case: &str, at: &Path, words: &str| {
        let out = run(&ledger, Some(&ca), &attack(&ledger, &ca, &mark));
        let err = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(harness::run::EXIT_RUN_FAILED),
            "{case}: {err}"
        );
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("harness run:"))
            .collect();
        assert_eq!(lines.len(), 1, "{case}: {err}");
        let at = at.display().to_string();
        assert!(
            lines[0].contains(&format!("{at}: refusing")) && lines[0].contains(words),
            "{case}: {}",
            lines[0]
        );
        assert!(!mark.exists(), "{case}: the command ran");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("PRIVATE"),
            "{case}: a key was read"
        );
        assert_eq!(snapshot(&ledger), before, "{case}: a session changed");
        let (code, said) = verify(&ledger);
        assert_eq!(code, Some(0), "{case}: {said}");
    };

    chmod(&ledger, 0o777);
    refused("ledger 0777", &ledger, "writable by others (mode 0777)");
    let mode = std::fs::metadata(&ledger).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o777, "the ledger's mode was changed, not refused");
    chmod(&ledger, 0o755);

    chmod(&ledger.join("checkpoints"), 0o777);
    refused(
        "checkpoints 0777",
        &ledger.join("checkpoints"),
        "writable by others",
    );
    chmod(&ledger.join("checkpoints"), 0o755);

    std::os::unix::fs::chown(&ledger, Some(65534), Some(65534)).unwrap();
    refused(
        "ledger owned by nobody",
        &ledger,
        "owned by uid 65534, not root",
    );
    std::os::unix::fs::chown(&ledger, Some(0), Some(0)).unwrap();

    chmod(&root, 0o777);
    refused("ancestor 0777", &root, "not sticky");
    chmod(&root, 0o755);

    chmod(&ca, 0o777);
    refused("CA 0777", &ca, "writable by others (mode 0777)");
    chmod(&ca, 0o755);

    // A sticky ancestor, as /tmp is, is a safe base: the run goes ahead and the attack fails.
    chmod(&root, 0o1777);
    let out = run(&ledger, Some(&ca), &attack(&ledger, &ca, &mark));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(mark.exists());
    let after = snapshot(&ledger);
    assert_eq!(&after[..before.len()], &before[..]);
    let (code, said) = verify(&ledger);
    assert_eq!(code, Some(0), "{said}");
    chmod(&root, 0o755);
}

/// `harness run`'s own failures exit 125; the command's status passes through unchanged, 2
/// included.
#[test]
fn harness_run_fails_with_125_and_passes_the_commands_status_through() {
    if !privileged("harness_run_fails_with_125_and_passes_the_commands_status_through") {
        return;
    }
    let root = temp_dir("run-status");
    let ledger = root.join("ledger");
    for (script, want) in [
        ("exit 2", 2),
        ("exit 0", 0),
        ("exit 1", 1),
        ("kill -9 $$", 137),
    ] {
        let out = run(&ledger, None, script);
        assert_eq!(out.status.code(), Some(want), "{script}: {}", stderr(&out));
    }
    let fails = |args: &[&str], words: &str| {
        let mut cmd = Command::new(harness_bin());
        cmd.args(["run", "--no-daemon", "--ledger"]).arg(&ledger);
        if !args.contains(&"--user") {
            cmd.args(["--user", "nobody"]);
        }
        let out = cmd.args(args).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {err}");
        assert!(err.contains(words), "{args:?}: {err}");
    };
    fails(
        &["--policy", "/nonexistent/policy.toml", "--", "true"],
        "/nonexistent/policy.toml",
    );
    fails(&["--", "/nonexistent/command"], "/nonexistent/command");
    fails(&["--no-such-option", "--", "true"], "--no-such-option");
    fails(
        &["--user", "no-such-user-here", "--", "true"],
        "no-such-user-here",
    );
}
