//! The writable set, mountinfo parsing and the mount plan (with a fake `statx`), and the mounts
//! for real (as root; loudly skipped otherwise).
use std::collections::HashMap;
use std::fs;
use std::process::Command;

use super::*;

fn p(path: &str) -> PathBuf {
    PathBuf::from(path)
}

fn asked(path: &str) -> Writable {
    Writable {
        path: p(path),
        why: Why::Asked,
    }
}

// === writable_set ===

#[test]
fn a_working_directory_inside_home_stays_writable() {
    let set = writable_set(&p("/home/u"), &p("/home/u/proj"), &[]).unwrap();
    assert_eq!(
        set.dirs,
        [Writable {
            path: p("/home/u/proj"),
            why: Why::WorkingDirectory
        }]
    );
    assert!(!set.cwd_is_home);
}

#[test]
fn home_itself_as_working_directory_stays_read_only() {
    let set = writable_set(&p("/home/u"), &p("/home/u"), &[]).unwrap();
    assert!(set.dirs.is_empty());
    assert!(set.cwd_is_home);
}

#[test]
fn a_working_directory_outside_home_needs_nothing() {
    for cwd in ["/srv/project", "/home", "/", "/home/user2", "/home/u2/x"] {
        let set = writable_set(&p("/home/u"), &p(cwd), &[]).unwrap();
        assert!(set.dirs.is_empty(), "{cwd}: {set:?}");
        assert!(!set.cwd_is_home, "{cwd}");
    }
}

#[test]
fn writable_dirs_are_sorted_and_nested_ones_dropped() {
    let set = writable_set(
        &p("/home/u"),
        &p("/home/u/proj/src"),
        &[
            p("/home/u/.cache/pip"),
            p("/home/u/proj"),
            p("/home/u/.cache"),
            p("/home/u/proj"),
            p("/home/u/projects"),
        ],
    )
    .unwrap();
    assert_eq!(
        set.dirs,
        [
            asked("/home/u/.cache"),
            asked("/home/u/proj"),
            asked("/home/u/projects"),
        ]
    );
}

#[test]
fn the_working_directory_keeps_its_reason_when_also_asked_for() {
    let set = writable_set(&p("/home/u"), &p("/home/u/proj"), &[p("/home/u/proj")]).unwrap();
    assert_eq!(
        set.dirs,
        [Writable {
            path: p("/home/u/proj"),
            why: Why::WorkingDirectory
        }]
    );
}

#[test]
fn writable_dirs_outside_home_or_home_itself_are_refused() {
    let err = writable_set(&p("/home/u"), &p("/"), &[p("/home/u2")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--writable /home/u2: not inside the home directory /home/u, the only directory --protect-home makes read-only"
    );
    let err = writable_set(&p("/home/u"), &p("/"), &[p("/home/u")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--writable /home/u: is the home directory itself: leave out --protect-home to keep all of it writable"
    );
}

#[test]
fn writable_paths_must_be_existing_directories() {
    let dir = std::env::temp_dir().join(format!("harness-home-canon-{}", std::process::id()));
    fs::create_dir_all(dir.join("d")).unwrap();
    fs::write(dir.join("f"), "").unwrap();
    std::os::unix::fs::symlink(dir.join("d"), dir.join("link")).unwrap();
    assert_eq!(
        canonical_dir(&dir.join("link")).unwrap(),
        dir.join("d").canonicalize().unwrap()
    );
    let err = canonical_dir(&dir.join("nope")).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "--writable {}: no such directory",
            dir.join("nope").display()
        )
    );
    let err = canonical_dir(&dir.join("f")).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("--writable {}: not a directory", dir.join("f").display())
    );
    let err = canonical_dir(&dir.join("f/below")).unwrap_err();
    assert!(err.to_string().ends_with("not a directory"), "{err}");
    fs::remove_dir_all(&dir).unwrap();
}

// === mountinfo ===

const MOUNTINFO_SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
40 22 0:35 / /home/u/my\\040files rw,nosuid,nodev,nosymfollow shared:20 - tmpfs tmpfs rw
41 22 0:36 /sub /home/u/back\\134slash ro,noexec - tmpfs tmpfs rw
garbage line
";

#[test]
fn mountinfo_lines_parse_with_their_escapes() {
    let mounts = parse_mountinfo(MOUNTINFO_SAMPLE);
    assert_eq!(mounts.len(), 4, "{mounts:?}");
    assert_eq!(
        mounts[0],
        MountEntry {
            id: 22,
            mount_point: p("/"),
            flags: MountFlags::default()
        }
    );
    assert_eq!(
        mounts[1].flags,
        MountFlags {
            nosuid: true,
            nodev: true,
            noexec: true,
            ..MountFlags::default()
        }
    );
    assert_eq!(mounts[2].mount_point, p("/home/u/my files"));
    assert_eq!(
        mounts[2].flags,
        MountFlags {
            nosuid: true,
            nodev: true,
            nosymfollow: true,
            ..MountFlags::default()
        }
    );
    assert_eq!(mounts[3].mount_point, p("/home/u/back\\slash"));
    assert!(mounts[3].flags.read_only && mounts[3].flags.noexec);
}

#[test]
fn unescape_leaves_what_is_not_an_octal_escape() {
    assert_eq!(unescape("a\\011b\\012c"), p("a\tb\nc"));
    assert_eq!(unescape("a\\9b\\"), p("a\\9b\\"));
    assert_eq!(unescape("\\04"), p("\\04"));
}

#[test]
fn remount_flags_say_every_per_mount_flag() {
    let base = libc::MS_BIND | libc::MS_REMOUNT;
    assert_eq!(MountFlags::default().remount(), base);
    assert_eq!(
        MountFlags::default().read_only().remount(),
        base | libc::MS_RDONLY
    );
    let all = MountFlags::parse("ro,nosuid,nodev,noexec,nosymfollow,noatime");
    assert_eq!(
        all.remount(),
        base | libc::MS_RDONLY
            | libc::MS_NOSUID
            | libc::MS_NODEV
            | libc::MS_NOEXEC
            | libc::MS_NOSYMFOLLOW
    );
    // No atime flag: a bind remount without one keeps the mount's atime behaviour.
    assert_eq!(
        all.remount() & (libc::MS_NOATIME | libc::MS_RELATIME | libc::MS_STRICTATIME),
        0
    );
}

// === plan ===

/// A fake statx: the mount each path resolves to.
fn fake(ids: &[(&str, u64)]) -> impl Fn(&Path) -> io::Result<u64> {
    let ids: HashMap<PathBuf, u64> = ids.iter().map(|(path, id)| (p(path), *id)).collect();
    move |path: &Path| {
        ids.get(path)
            .copied()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
    }
}

fn entry(id: u64, mount_point: &str, options: &str) -> MountEntry {
    MountEntry {
        id,
        mount_point: p(mount_point),
        flags: MountFlags::parse(options),
    }
}

#[test]
fn the_plan_makes_home_and_its_mounts_read_only_then_the_writable_dirs_writable() {
    let mounts = [
        entry(1, "/", "rw,relatime"),
        entry(2, "/home", "rw,nosuid,nodev"),
        entry(3, "/home/u/mnt", "rw,noexec"),
        // Covered by 5, mounted over it later: unreachable by its path.
        entry(4, "/home/u/old", "rw"),
        entry(5, "/home/u/old", "rw,nodev"),
        entry(6, "/home/u/proj/data", "ro"),
        entry(7, "/home/u/proj/tmp", "rw,nosuid"),
        // Covered by a mount over a directory above it.
        entry(8, "/home/u/mnt/deep", "rw"),
        entry(9, "/home/u2", "rw"),
    ];
    let statx = fake(&[
        ("/home/u", 2),
        ("/home/u/mnt", 3),
        ("/home/u/old", 5),
        ("/home/u/proj", 2),
        ("/home/u/proj/data", 6),
        ("/home/u/proj/tmp", 7),
        ("/home/u/mnt/deep", 3),
        ("/home/u/mnt/w", 3),
    ]);
    let writable = [asked("/home/u/mnt/w"), asked("/home/u/proj")];
    let steps = plan(&p("/home/u"), &mounts, statx, &writable).unwrap();
    let ro = |options: &str| MountFlags::parse(options).read_only();
    let as_was = MountFlags::parse;
    assert_eq!(
        steps,
        [
            Step::Bind(p("/home/u")),
            Step::Remount(p("/home/u"), ro("nosuid,nodev")),
            Step::Remount(p("/home/u/mnt"), ro("noexec")),
            Step::Remount(p("/home/u/old"), ro("nodev")),
            Step::Remount(p("/home/u/proj/data"), ro("")),
            Step::Remount(p("/home/u/proj/tmp"), ro("nosuid")),
            Step::Bind(p("/home/u/mnt/w")),
            Step::Remount(p("/home/u/mnt/w"), as_was("noexec")),
            Step::Bind(p("/home/u/proj")),
            Step::Remount(p("/home/u/proj"), as_was("nosuid,nodev")),
            // Read-only outside, read-only inside.
            Step::Remount(p("/home/u/proj/data"), as_was("ro")),
            Step::Remount(p("/home/u/proj/tmp"), as_was("nosuid")),
        ]
    );
}

#[test]
fn the_plan_names_a_path_whose_mount_it_cannot_find() {
    let mounts = [entry(1, "/", "rw")];
    let err = plan(&p("/home/u"), &mounts, fake(&[]), &[]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("--protect-home: /home/u: finding its mount: "),
        "{err}"
    );
    let err = plan(&p("/home/u"), &mounts, fake(&[("/home/u", 9)]), &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--protect-home: /home/u: its mount (id 9) is not listed in /proc/self/mountinfo"
    );
}

#[test]
fn statx_mount_ids_are_those_of_mountinfo() {
    let mounts = parse_mountinfo(&fs::read_to_string(MOUNTINFO).unwrap());
    for path in ["/", "/proc"] {
        let id = mount_id(Path::new(path)).unwrap();
        let listed = mounts.iter().rev().find(|m| m.mount_point == p(path));
        assert_eq!(listed.map(|m| m.id), Some(id), "{path}");
    }
    assert_eq!(
        mount_id(Path::new("/proc/self")).unwrap(),
        mount_id(Path::new("/proc")).unwrap()
    );
}

// === ProtectHome ===

fn protect(home: &str, dirs: Vec<Writable>, cwd_is_home: bool) -> ProtectHome {
    ProtectHome {
        home: p(home),
        set: WritableSet { dirs, cwd_is_home },
        steps: Vec::new(),
        cwd: None,
    }
}

#[test]
fn the_summary_lists_what_stays_writable() {
    let both = protect(
        "/home/u",
        vec![
            asked("/home/u/.cache"),
            Writable {
                path: p("/home/u/proj"),
                why: Why::WorkingDirectory,
            },
        ],
        false,
    );
    assert_eq!(
        both.summary(),
        "harness run: --protect-home: /home/u is read-only in the enclosure; writable under it: /home/u/.cache (--writable), /home/u/proj (working directory)"
    );
    assert_eq!(both.cwd_note(), None);
    let none = protect("/home/u", Vec::new(), true);
    assert_eq!(
        none.summary(),
        "harness run: --protect-home: /home/u is read-only in the enclosure; nothing under it stays writable"
    );
    assert!(none.cwd_note().unwrap().contains(
        "the working directory is the home directory /home/u itself, which stays read-only"
    ));
}

#[test]
fn prepare_refuses_a_missing_home_and_root_as_home() {
    let err = ProtectHome::prepare("u", None, &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--protect-home: u has no home directory in the user database"
    );
    let err = ProtectHome::prepare("nobody", Some(Path::new("/nonexistent/x")), &[]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("--protect-home: home directory /nonexistent/x: "),
        "{err}"
    );
    let err = ProtectHome::prepare("u", Some(Path::new("/")), &[]).unwrap_err();
    assert!(matches!(err, HomeError::HomeIsRoot { .. }), "{err}");
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The mounts for real, in a child's private mount namespace: home read-only (through its own
/// path and relative to a working directory inside it), a mount beneath home read-only, the
/// working directory and a `--writable` directory writable, the host's mount table untouched.
#[test]
fn enter_makes_home_read_only_but_for_the_writable_dirs() {
    if !is_root() {
        eprintln!("=== SKIPPED enter_makes_home_read_only_but_for_the_writable_dirs: needs root (CAP_SYS_ADMIN for unshare/mount) ===");
        return;
    }
    let base = std::env::temp_dir().join(format!(
        "harness-home-enter-{}-{}",
        std::process::id(),
        ulid::Ulid::new()
    ));
    let home = base.join("home");
    for dir in ["proj", "cache", "mnt"] {
        fs::create_dir_all(home.join(dir)).unwrap();
    }
    let home = home.canonicalize().unwrap();
    fs::write(home.join(".bashrc"), "original\n").unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "harness-home-test"])
        .arg(home.join("mnt"))
        .status()
        .unwrap();
    assert!(status.success(), "mount -t tmpfs");
    fs::write(home.join("mnt/notes"), "original\n").unwrap();

    let run = |cwd: &Path, script: &str| {
        let protect = ProtectHome::prepare_at(&home, cwd, &[home.join("cache")])?;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(script)
            .arg("sh")
            .arg(&home)
            .current_dir(cwd);
        crate::tls::trust::namespace::TrustMounts::none().install(&mut cmd);
        protect.install(&mut cmd);
        Ok::<_, HomeError>(cmd.output())
    };
    let script = r#"
        echo x >> ../.bashrc && echo WROTE-RELATIVE
        echo x >> "$1/.bashrc" && echo WROTE-BASHRC
        echo x >> "$1/mnt/notes" && echo WROTE-MNT
        echo x >> notes && echo WROTE-PROJ
        echo x >> "$1/cache/notes" && echo WROTE-CACHE
        true"#;
    let out = run(&home.join("proj"), script);
    // From home itself: the working directory was entered again through the read-only mount
    // (the one it had before the mounts would still be writable).
    let from_home = run(&home, "echo x >> .bashrc && echo WROTE-FROM-HOME; true");
    let host_mounts = fs::read_to_string(MOUNTINFO).unwrap();
    let _ = Command::new("umount").arg(home.join("mnt")).status();
    let out = out.unwrap_or_else(|e| panic!("{e}")).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["WROTE-PROJ", "WROTE-CACHE"],
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("Read-only file system").count(),
        3,
        "{stderr}"
    );
    assert_eq!(
        fs::read_to_string(home.join(".bashrc")).unwrap(),
        "original\n"
    );
    assert_eq!(fs::read_to_string(home.join("proj/notes")).unwrap(), "x\n");
    let from_home = from_home.unwrap_or_else(|e| panic!("{e}")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&from_home.stdout),
        "",
        "{}",
        String::from_utf8_lossy(&from_home.stderr)
    );
    assert_eq!(
        fs::read_to_string(home.join(".bashrc")).unwrap(),
        "original\n"
    );
    // Only the tmpfs this test mounted is under home in the host's mount table.
    let under_home = parse_mountinfo(&host_mounts)
        .into_iter()
        .filter(|m| m.mount_point.starts_with(&home))
        .count();
    assert_eq!(under_home, 1, "{host_mounts}");
    fs::remove_dir_all(&base).unwrap();
}
