//! The process ledger end to end, on every kernel the suite runs on (the host's and the 6.1 VM's:
//! only a shell and its core utilities are used, busybox's in the VM): every process an enclosed
//! command starts is recorded with its parent, its arguments (secrets fingerprinted) and how it
//! ended, short-lived ones included; and what the kernel could not report is said, not lost in
//! silence.
use harness::ledger::{ProcessExec, ProcessExit, ProcessFork};
use harness_tests::{harness_bin, privileged, run_enclosed, session_files, temp_dir, Entry};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn execs(entries: &[harness_tests::Recorded]) -> Vec<&ProcessExec> {
    entries
        .iter()
        .filter_map(|r| match &r.entry {
            Entry::ProcessExec(x) => Some(x),
            _ => None,
        })
        .collect()
}

fn exits(entries: &[harness_tests::Recorded]) -> Vec<&ProcessExit> {
    entries
        .iter()
        .filter_map(|r| match &r.entry {
            Entry::ProcessExit(x) => Some(x),
            _ => None,
        })
        .collect()
}

fn forks(entries: &[harness_tests::Recorded]) -> Vec<&ProcessFork> {
    entries
        .iter()
        .filter_map(|r| match &r.entry {
            Entry::ProcessFork(x) => Some(x),
            _ => None,
        })
        .collect()
}

fn exit_of(entries: &[harness_tests::Recorded], pid: u32) -> Option<&ProcessExit> {
    exits(entries).into_iter().rev().find(|x| x.pid == pid)
}

/// Where `name` lives here (`/bin` or `/usr/bin`). Called by its full path, because busybox's
/// shell (the VM's) runs an applet named bare inside itself, without an exec.
fn program(name: &str) -> String {
    ["/bin", "/usr/bin"]
        .iter()
        .map(|dir| format!("{dir}/{name}"))
        .find(|path| Path::new(path).exists())
        .unwrap_or_else(|| panic!("no {name} in /bin or /usr/bin"))
}

fn verify(ledger: &Path) {
    let out = Command::new(harness_bin())
        .arg("verify")
        .arg(ledger)
        .output()
        .expect("running harness verify");
    assert!(
        out.status.success(),
        "harness verify {}: {}{}",
        ledger.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A shell that runs a program, a subshell that exits 3 without exec, a shell that kills itself
/// with SIGKILL, and `env` with a token on its command line: each is a process the ledger holds,
/// with its parent and how it ended; the token is nowhere in the file.
#[test]
fn every_process_of_a_session_is_recorded_with_its_parent_and_how_it_ended() {
    if !privileged("every_process_of_a_session_is_recorded_with_its_parent_and_how_it_ended") {
        return;
    }
    let ledger = temp_dir("processes");
    let secret = "hunter2-do-not-record-me-0123456789";
    let (ls_path, env_path, true_path) = (program("ls"), program("env"), program("true"));
    let script = format!(
        "{ls_path} / >/dev/null; (exit 3); sh -c 'kill -9 $$'; \
         {env_path} API_TOKEN={secret} {true_path}; exit 7"
    );
    let run = run_enclosed(&ledger, &[], &["/bin/sh", "-c", &script]);
    assert_eq!(
        run.output.status.code(),
        Some(7),
        "harness run exits with the command's status; stderr: {}",
        String::from_utf8_lossy(&run.output.stderr)
    );
    let entries = &run.entries;
    let execs = execs(entries);
    let shell = execs
        .iter()
        .find(|x| {
            x.path == "/bin/sh"
                && x.argv.get(1).is_some_and(|a| a == "-c")
                && x.argv.get(2).is_some_and(|a| a.starts_with(&ls_path))
        })
        .unwrap_or_else(|| panic!("no process_exec of the enclosed shell: {execs:#?}"));
    assert_eq!(shell.uid, 65534, "the command runs as nobody: {shell:?}");
    assert_eq!(
        exit_of(entries, shell.pid).and_then(|x| x.code),
        Some(7),
        "the shell's exit status"
    );

    // `ls`: a short-lived child of the shell, with its arguments and exit 0.
    let ls = execs
        .iter()
        .find(|x| x.argv == [ls_path.as_str(), "/"])
        .unwrap_or_else(|| panic!("no process_exec of {ls_path} /: {execs:#?}"));
    assert_eq!(ls.ppid, shell.pid, "ls is the shell's child: {ls:?}");
    assert_eq!(ls.path, ls_path, "{ls:?}");
    assert_eq!(exit_of(entries, ls.pid).and_then(|x| x.code), Some(0));

    // The subshell: forked by the shell, never exec'd, exit 3.
    let subshell = forks(entries)
        .into_iter()
        .filter(|f| f.ppid == shell.pid)
        .find(|f| {
            !execs.iter().any(|x| x.pid == f.pid)
                && exit_of(entries, f.pid).and_then(|x| x.code) == Some(3)
        });
    assert!(
        subshell.is_some(),
        "no fork of the shell that exited 3 without exec: forks {:#?} exits {:#?}",
        forks(entries),
        exits(entries)
    );

    // The shell that killed itself: signal 9, no exit code.
    let killer = execs
        .iter()
        .find(|x| x.argv.iter().any(|a| a == "kill -9 $$"))
        .unwrap_or_else(|| panic!("no process_exec of the self-killing shell: {execs:#?}"));
    let killed = exit_of(entries, killer.pid).expect("its process_exit");
    assert_eq!((killed.signal, killed.code), (Some(9), None), "{killed:?}");

    // `env API_TOKEN=… true`: recorded, the token fingerprinted, then `true` in the same pid.
    let env = execs
        .iter()
        .find(|x| x.argv.first() == Some(&env_path))
        .unwrap_or_else(|| panic!("no process_exec of env: {execs:#?}"));
    let token_arg = env
        .argv
        .iter()
        .find(|a| a.starts_with("API_TOKEN="))
        .unwrap_or_else(|| panic!("env's argv lost its NAME=VALUE: {env:?}"));
    assert!(
        token_arg.contains("sha256:"),
        "the token is fingerprinted: {token_arg}"
    );
    assert!(
        execs
            .iter()
            .any(|x| x.pid == env.pid && x.argv == [true_path.as_str()]),
        "env's exec of true, in the same process"
    );
    // The script itself carried the token too: made alike there as well.
    assert!(
        shell.argv[2].contains("API_TOKEN=hmac-sha256:"),
        "{shell:?}"
    );
    let file = &session_files(&ledger).unwrap()[0];
    let text = std::fs::read_to_string(file).unwrap();
    assert!(
        !text.contains(secret),
        "the token is in clear in {}",
        file.display()
    );
    // Every exec'd process ended, and each exit names a process the ledger saw begin.
    for x in &execs {
        assert!(
            exit_of(entries, x.pid).is_some(),
            "no process_exit for {x:?}"
        );
    }
    verify(&ledger);
}

/// An agent that hides the tail of a command behind 5 KiB of padding: the kernel side reads at
/// most 4 KiB of arguments, so the rest is not in the record, and the entry says so.
#[test]
fn arguments_beyond_what_the_kernel_reads_are_marked_truncated() {
    if !privileged("arguments_beyond_what_the_kernel_reads_are_marked_truncated") {
        return;
    }
    let ledger = temp_dir("processes-argv");
    let padding = "p".repeat(5 * 1024);
    let true_path = program("true");
    let script = format!("{true_path} {padding} hidden-tail; {true_path} short");
    let run = run_enclosed(&ledger, &[], &["/bin/sh", "-c", &script]);
    assert!(run.output.status.success());
    let execs = execs(&run.entries);
    let padded = execs
        .iter()
        .find(|x| {
            x.argv.first() == Some(&true_path)
                && x.argv.get(1).is_some_and(|a| a.starts_with("ppp"))
        })
        .unwrap_or_else(|| panic!("no process_exec of the padded true: {execs:#?}"));
    assert!(padded.argv_truncated, "{padded:?}");
    assert!(!padded.argv.iter().any(|a| a == "hidden-tail"));
    let short = execs
        .iter()
        .find(|x| x.argv == [true_path.as_str(), "short"])
        .unwrap_or_else(|| panic!("no process_exec of `true short`: {execs:#?}"));
    assert!(!short.argv_truncated, "{short:?}");
    verify(&ledger);
}

/// An agent that floods the kernel's process ring while harness cannot drain it (stopped): the
/// reports that found no room are counted, and every session says its process record is
/// incomplete in an `error` entry. Nothing pretends the record is whole.
#[test]
fn process_reports_the_kernel_had_no_room_for_are_said_in_the_ledger() {
    if !privileged("process_reports_the_kernel_had_no_room_for_are_said_in_the_ledger") {
        return;
    }
    let ledger = temp_dir("processes-storm");
    let marks = temp_dir("processes-storm-marks");
    std::fs::set_permissions(&marks, std::fs::Permissions::from_mode(0o777)).unwrap();
    let started = marks.join("started");
    let done = marks.join("done");
    let release = marks.join("release");
    // 1,500 execs each carrying ~4 KiB of arguments: ~6 MiB of reports for a 4 MiB ring.
    let padding = "x".repeat(4000);
    let true_path = program("true");
    let script = format!(
        "touch {started}; while [ ! -e {release}.go ]; do sleep 0.1; done; \
         i=0; while [ $i -lt 1500 ]; do {true_path} {padding}; i=$((i+1)); done; \
         touch {done}; while [ ! -e {release} ]; do sleep 0.1; done",
        started = started.display(),
        done = done.display(),
        release = release.display(),
    );
    let harness = Command::new(harness_bin())
        .args(["run", "--no-daemon", "--user", "nobody", "--ledger"])
        .arg(&ledger)
        .args(["--", "/bin/sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting harness run");
    let wait_for = |path: &Path| {
        while !path.exists() {
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for(&started);
    let pid = harness.id() as libc::pid_t;
    // SIGSTOP: the engine (in `harness run`) stops draining; the enclosed shell runs on.
    // SAFETY: kill has no memory preconditions; pid is our own child, not yet reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    std::fs::File::create(format!("{}.go", release.display())).unwrap();
    wait_for(&done);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    // Give the engine a moment to drain and count before the session ends.
    std::thread::sleep(Duration::from_millis(500));
    std::fs::File::create(&release).unwrap();
    let out = harness.wait_with_output().expect("waiting for harness run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let files = session_files(&ledger).unwrap();
    let entries = harness_tests::read_session(&files[0]).unwrap();
    let padded = execs(&entries)
        .into_iter()
        .filter(|x| x.argv.first() == Some(&true_path))
        .count();
    let lost: Vec<&str> = entries
        .iter()
        .filter_map(|r| match &r.entry {
            Entry::Error(e) if e.context == "recording processes" => Some(e.message.as_str()),
            _ => None,
        })
        .collect();
    eprintln!("storm: {padded} of 1500 padded execs recorded; error entries: {lost:?}");
    assert!(
        padded < 1500,
        "all 1500 execs fit a 4 MiB ring while harness was stopped? ({padded} recorded)"
    );
    assert!(
        !lost.is_empty(),
        "{padded} of 1500 execs recorded and no error entry says reports were lost"
    );
    let counted: u64 = lost
        .iter()
        .filter_map(|m| {
            m.split_once(": ")
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
        })
        .sum();
    assert!(
        counted as usize + padded >= 1500,
        "lost {counted} + recorded {padded} execs < 1500 spawned: {lost:?}"
    );
    verify(&ledger);
}
