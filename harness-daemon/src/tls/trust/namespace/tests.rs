//! Target discovery, and the mount namespace for real (as root; loudly skipped otherwise).
use std::fs;
use std::os::unix::fs::symlink;
use std::process::Command;

use super::*;
use crate::tls::test_support::{temp_dir, test_ca};
use crate::tls::TrustBundle;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn skipped(test: &str) {
    eprintln!("=== SKIPPED {test}: needs root (CAP_SYS_ADMIN for unshare/mount) ===");
}

#[test]
fn wildcards_match_within_one_component() {
    assert!(wildcard_match(b"python3*", b"python3"));
    assert!(wildcard_match(b"python3*", b"python3.13"));
    assert!(!wildcard_match(b"python3*", b"python2.7"));
    assert!(wildcard_match(b"*", b"3.11.7"));
    assert!(wildcard_match(b"a*b*c", b"aXXbYc"));
    assert!(!wildcard_match(b"a*b*c", b"aXXbY"));
    assert!(wildcard_match(b"cacert.pem", b"cacert.pem"));
}

#[test]
fn expand_finds_certifi_files_under_versioned_dirs() {
    let root = temp_dir("glob");
    for version in ["3.11.7", "3.13.1"] {
        let dir = root.join(format!(
            "versions/{version}/lib/python{}/site-packages/certifi",
            &version[..4]
        ));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("cacert.pem"), "x").unwrap();
    }
    // A python dir without certifi matches nothing.
    fs::create_dir_all(root.join("versions/3.12.0/lib/python3.12/site-packages")).unwrap();
    let pattern = root.join("versions/*/lib/python3*/site-packages/certifi/cacert.pem");
    let found = expand(&pattern);
    assert_eq!(
        found,
        vec![
            root.join("versions/3.11.7/lib/python3.11/site-packages/certifi/cacert.pem"),
            root.join("versions/3.13.1/lib/python3.13/site-packages/certifi/cacert.pem"),
        ]
    );
    assert!(expand(&root.join("nothing/*/here")).is_empty());
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn targets_are_resolved_deduplicated_and_existing_only() {
    let root = temp_dir("targets");
    let bundle = root.join("bundle.pem");
    fs::write(&bundle, "b").unwrap();
    let real = root.join("ca-certificates.crt");
    fs::write(&real, "r").unwrap();
    let link = root.join("cert.pem");
    symlink(&real, &link).unwrap();
    let mounts = TrustMounts::new(
        &bundle,
        [
            real.clone(),
            link,
            root.join("absent.pem"),
            root.clone(), // a directory: not a bundle file
            bundle.clone(),
        ],
    )
    .unwrap();
    let targets: Vec<_> = mounts.targets().map(Path::to_path_buf).collect();
    assert_eq!(targets, vec![real.canonicalize().unwrap()]);
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn discover_covers_the_system_bundle_and_certifi() {
    let root = temp_dir("discover");
    let bundle = root.join("bundle.pem");
    fs::write(&bundle, "b").unwrap();
    let mounts = TrustMounts::discover(&bundle).unwrap();
    let targets: Vec<_> = mounts.targets().map(Path::to_path_buf).collect();
    let system = Path::new(SYSTEM_BUNDLE_PATHS[0]);
    if system.is_file() {
        assert!(
            targets.contains(&system.canonicalize().unwrap()),
            "{targets:?}"
        );
    }
    for pattern in CERTIFI_PATTERNS {
        for certifi in expand(Path::new(pattern)) {
            assert!(
                targets.contains(&certifi.canonicalize().unwrap()),
                "{targets:?}"
            );
        }
    }
    eprintln!("trust mounts on this host: {targets:?}");
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_command_in_a_virtualenv_brings_its_certifi_into_the_mounts() {
    let root = temp_dir("venv");
    let venv = root.join("venv");
    let certifi = venv.join("lib/python3.11/site-packages/certifi");
    fs::create_dir_all(&certifi).unwrap();
    fs::create_dir_all(venv.join("bin")).unwrap();
    fs::write(certifi.join("cacert.pem"), "roots").unwrap();
    fs::write(venv.join("bin/agent"), "#!/bin/sh\n").unwrap();
    // The interpreter is a symlink out of the venv: its directory, not its target, counts.
    symlink("/usr/bin/python3", venv.join("bin/python")).unwrap();
    let not_a_venv = root.join("plain");
    fs::create_dir_all(not_a_venv.join("bin")).unwrap();
    fs::write(not_a_venv.join("bin/agent"), "").unwrap();
    // No pyvenv.cfg yet: nothing is a virtualenv.
    assert!(command_venvs(&venv.join("bin/python"), None, None).is_empty());
    fs::write(venv.join("pyvenv.cfg"), "home = /usr/bin\n").unwrap();

    assert_eq!(
        command_venvs(&venv.join("bin/python"), None, None),
        std::slice::from_ref(&venv)
    );
    // A bare name is looked up on PATH, as exec would.
    let path = std::env::join_paths([not_a_venv.join("nowhere"), venv.join("bin")]).unwrap();
    assert_eq!(
        command_venvs(Path::new("agent"), Some(&path), None),
        std::slice::from_ref(&venv)
    );
    // The first match on PATH wins, and it is not a venv; an activated VIRTUAL_ENV still is.
    let path = std::env::join_paths([not_a_venv.join("bin"), venv.join("bin")]).unwrap();
    assert!(command_venvs(Path::new("agent"), Some(&path), None).is_empty());
    assert_eq!(
        command_venvs(Path::new("agent"), Some(&path), Some(venv.as_os_str())),
        std::slice::from_ref(&venv)
    );
    assert!(command_venvs(Path::new("/usr/bin/python3"), None, None).is_empty());

    let bundle = root.join("bundle.pem");
    fs::write(&bundle, "b").unwrap();
    let mounts = TrustMounts::discover_for(&bundle, std::slice::from_ref(&venv)).unwrap();
    let wanted = certifi.join("cacert.pem").canonicalize().unwrap();
    assert!(mounts.targets().any(|t| t == wanted));
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn enclosed_child_reads_the_bundle_at_the_system_path_and_the_host_file_is_unchanged() {
    if !is_root() {
        return skipped("enclosed_child_reads_the_bundle_at_the_system_path");
    }
    let system = Path::new(SYSTEM_BUNDLE_PATHS[0]);
    if !system.is_file() {
        eprintln!(
            "=== SKIPPED enclosed_child_reads_the_bundle: no {} here ===",
            system.display()
        );
        return;
    }
    let (ca, dir) = test_ca("ns-cat");
    let host_before = fs::read(system).unwrap();
    let bundle = TrustBundle::build(ca.certificate_pem(), &dir.join("trust/bundle.pem")).unwrap();
    let mounts = TrustMounts::new(bundle.path(), [system.to_path_buf()]).unwrap();

    let mut cmd = Command::new("cat");
    cmd.arg(system);
    mounts.install(&mut cmd);
    let out = cmd.output().expect("spawn cat in the mount namespace");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = String::from_utf8(out.stdout).unwrap();
    assert!(
        seen.ends_with(ca.certificate_pem()),
        "the enclosed child must see the harness CA at the end of {}",
        system.display()
    );
    assert!(seen.starts_with(std::str::from_utf8(&host_before).unwrap().trim_end()));

    let host_after = fs::read(system).unwrap();
    assert_eq!(host_before, host_after, "the host's bundle must not change");
    assert!(!String::from_utf8_lossy(&host_after).contains(ca.certificate_pem()));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mounted_bundle_is_read_only_and_private_to_the_child() {
    if !is_root() {
        return skipped("mounted_bundle_is_read_only_and_private_to_the_child");
    }
    let (ca, dir) = test_ca("ns-ro");
    // A stand-in for a system bundle (never write-test the real one).
    let target = dir.join("certifi/cacert.pem");
    fs::create_dir_all(target.parent().unwrap()).unwrap();
    fs::write(&target, "original\n").unwrap();
    let bundle = TrustBundle::build_from(
        &dir.join("absent"),
        ca.certificate_pem(),
        &dir.join("b.pem"),
    )
    .unwrap();
    let mounts = TrustMounts::new(bundle.path(), [target.clone()]).unwrap();

    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"cat "$1"; if echo tampered >> "$1"; then echo WRITABLE; fi; grep -c harness /proc/self/mountinfo >/dev/null || true"#)
        .arg("sh")
        .arg(&target);
    mounts.install(&mut cmd);
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.starts_with("# harness CA"), "{stdout}");
    assert!(
        !stdout.contains("WRITABLE"),
        "bundle writable inside: {stdout}"
    );
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    assert_eq!(fs::read_to_string(&target).unwrap(), "original\n");
    // Nothing leaked into the host's mount table.
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(target.to_str().unwrap()), "{mountinfo}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failing_mount_fails_the_spawn() {
    if !is_root() {
        return skipped("a_failing_mount_fails_the_spawn");
    }
    let dir = temp_dir("ns-fail");
    let bundle = dir.join("b.pem");
    fs::write(&bundle, "b").unwrap();
    let target = dir.join("t.pem");
    fs::write(&target, "t").unwrap();
    let mounts = TrustMounts::new(&bundle, [target.clone()]).unwrap();
    // The target disappears between preparation and spawn: mount(2) fails with ENOENT.
    fs::remove_file(&target).unwrap();
    let mut cmd = Command::new("true");
    mounts.install(&mut cmd);
    let err = cmd.status().unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
    fs::remove_dir_all(&dir).unwrap();
}
