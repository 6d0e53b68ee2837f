//! Helpers shared by the ledger test files: scratch directories, sample entries, running the
//! real `harness` binary, and editing session files the way an attacker would.
#![allow(dead_code)]
use harness::ledger::*;
use std::path::{Path, PathBuf};

/// A fresh scratch directory (kept after the test, under the system temp dir, for post-mortems).
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir()
        .join("harness-ledger-tests")
        .join(format!("{name}-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn session_open() -> SessionOpen {
    SessionOpen {
        command: vec!["agent".into(), "--flag".into()],
        uid: 1000,
        gid: 1000,
        cgroup: "/sys/fs/cgroup/harness/test".into(),
        policy_sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
        ca_fingerprint: None,
        software: "harness 0.1.0".into(),
        hostname: "test-host".into(),
    }
}

pub fn conn_open(i: u64) -> Entry {
    Entry::ConnOpen(ConnOpen {
        conn: i,
        proto: "tcp".into(),
        dst: "93.184.216.34:443".parse().unwrap(),
        host: Some(format!("host{i}.example")),
        src: "10.0.0.2:40000".parse().unwrap(),
        caller: Caller {
            pid: 42,
            tid: 42,
            uid: 1000,
            cgroup_id: 7,
        },
        rule: None,
    })
}

pub fn close() -> SessionClose {
    SessionClose::exited(Some(0), None)
}

/// Runs the real `harness` binary.
pub fn harness(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(args)
        .output()
        .expect("run harness");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The lines of a session file (without newlines).
pub fn lines(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .split_inclusive(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\n").unwrap_or(l).to_vec())
        .collect()
}

/// Rewrites a session file from lines (each followed by a newline).
pub fn write_lines(path: &Path, lines: &[Vec<u8>]) {
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    std::fs::write(path, out).unwrap();
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Whether the ledger root can use root-only features (tmpfs mounts).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
