//! The VM runner's own check (`cargo xtask vm-test`): inside the VM, the kernel is Debian's 6.1,
//! and /init mounted cgroup2, bpffs and the tmpfs the tests rely on, loaded the modules they
//! need, and handed over the binaries. Outside the VM there is nothing to check, and it says so.
use std::path::Path;

fn in_vm() -> bool {
    if std::env::var_os("HARNESS_IN_VM").is_some_and(|v| v == "1") {
        true
    } else {
        eprintln!("vm_smoke: not inside `cargo xtask vm-test` (HARNESS_IN_VM unset): skipped");
        false
    }
}

/// The filesystem type mounted at `point`, from /proc/self/mountinfo.
fn fs_type(point: &str) -> Option<String> {
    let info =
        std::fs::read_to_string("/proc/self/mountinfo").expect("reading /proc/self/mountinfo");
    info.lines().rev().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mount_point = left.split_whitespace().nth(4)?;
        (mount_point == point).then(|| right.split_whitespace().next().unwrap_or("").to_owned())
    })
}

#[test]
fn runs_on_debian_6_1_kernel() {
    if !in_vm() {
        return;
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("reading osrelease");
    assert!(
        release.starts_with("6.1."),
        "VM kernel is {release:?}, expected Debian's 6.1"
    );
}

#[test]
fn init_mounted_what_tests_need() {
    if !in_vm() {
        return;
    }
    for (point, fs) in [
        ("/sys/fs/cgroup", "cgroup2"),
        ("/sys/fs/bpf", "bpf"),
        ("/tmp", "tmpfs"),
        ("/proc", "proc"),
    ] {
        assert_eq!(
            fs_type(point).as_deref(),
            Some(fs),
            "{point} should be {fs}"
        );
    }
    assert!(Path::new("/sys/fs/cgroup/cgroup.subtree_control").exists());
}

#[test]
fn init_prepared_the_environment() {
    if !in_vm() {
        return;
    }
    let bin = std::env::var("HARNESS_BIN").expect("HARNESS_BIN set by /init");
    assert!(Path::new(&bin).is_file(), "HARNESS_BIN={bin} missing");
    assert_eq!(
        std::env::var("HARNESS_PRIVILEGED_TESTS").as_deref(),
        Ok("1")
    );
    assert!(
        Path::new("/sys/module/veth").exists(),
        "veth module not loaded"
    );
    let passwd = std::fs::read_to_string("/etc/passwd").expect("reading /etc/passwd");
    assert!(
        passwd.lines().any(|l| l.starts_with("nobody:")),
        "no user nobody"
    );
    let lo = std::fs::read_to_string("/sys/class/net/lo/operstate").expect("lo operstate");
    assert_ne!(lo.trim(), "down", "lo is down");
}

/// Runs a program and panics with its output unless it succeeds.
fn run_ok(program: &str, args: &[&str]) {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn host_programs_work_in_the_vm() {
    if !in_vm() {
        return;
    }
    run_ok("ip", &["netns", "add", "vm-smoke"]);
    run_ok(
        "ip",
        &[
            "link",
            "add",
            "vm-smoke0",
            "type",
            "veth",
            "peer",
            "name",
            "vm-smoke1",
        ],
    );
    run_ok("ip", &["link", "set", "vm-smoke1", "netns", "vm-smoke"]);
    run_ok(
        "ip",
        &["netns", "exec", "vm-smoke", "ip", "link", "set", "lo", "up"],
    );
    run_ok("ip", &["link", "del", "vm-smoke0"]);
    run_ok("ip", &["netns", "del", "vm-smoke"]);
    run_ok("curl", &["--version"]);
    run_ok(
        "python3",
        &[
            "-c",
            "import socket, ssl, json, http.client, urllib.request, asyncio",
        ],
    );
}
