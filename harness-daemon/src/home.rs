//! `harness run --protect-home`: the command's user's home directory read-only inside the
//! enclosure, so that the agent cannot leave code that runs *outside* it at the operator's next
//! login — `~/.bashrc`, `~/.profile`, `~/.ssh/authorized_keys`, `~/.config/systemd/user/`,
//! `~/.config/autostart/` and the like — while the directories it is meant to work in stay
//! writable.
//!
//! In the enclosure's private mount namespace (the one
//! [`TrustMounts::enter`](crate::tls::trust::namespace::TrustMounts::enter) creates, with `/`
//! already recursively private), in the forked child before exec and while it is still root,
//! [`ProtectHome::enter`]:
//!
//! 1. bind-mounts home onto itself, recursively (`MS_BIND|MS_REC`: the mounts beneath it come
//!    along, the trust bundle's mounts included);
//! 2. remounts that bind mount read-only (`MS_BIND|MS_REMOUNT|MS_RDONLY`, keeping its `nosuid`,
//!    `nodev`, `noexec`, `nosymfollow`; atime flags are kept by the kernel);
//! 3. remounts read-only, the same way, each mount beneath home that `/proc/self/mountinfo`
//!    listed when `harness run` prepared these steps and that was reachable by its path;
//! 4. for each writable directory — the working directory when it lies strictly inside home,
//!    and each `--writable DIR` — bind-mounts it onto itself (recursively) and remounts it, and
//!    each mount beneath it, with the flags its own mount had outside: writable, unless it was
//!    read-only there already;
//! 5. changes directory to the working directory again when it lies in home: a working
//!    directory kept from before the mounts would still be on the writable mount beneath them
//!    (from home itself, `.bashrc` would be writable).
//!
//! Everything that allocates — resolving paths, reading mountinfo, finding each path's mount,
//! building C strings — happens in [`ProtectHome::prepare`], in the parent. [`ProtectHome::enter`]
//! only calls `mount(2)` and `chdir(2)` on those prepared strings: it is async-signal-safe and may
//! run in a `pre_exec` hook of a multi-threaded parent. Any failure fails the spawn (fail closed).
//!
//! The agent cannot undo these mounts: it runs unprivileged with `no_new_privs`, without
//! `CAP_SYS_ADMIN` in the user namespace that owns the mount namespace (the initial one), so it
//! can neither unmount nor remount. In a user namespace of its own, the mounts a new mount
//! namespace copies are locked: they cannot be unmounted one by one to uncover what lies
//! beneath, and their read-only flag cannot be cleared.
//!
//! Not covered: a mount made beneath home after `harness run` read mountinfo and before the
//! child entered its namespace (it is copied writable); files under home that are hard links of
//! files in a writable directory (one inode, writable through either name). Outside home,
//! everything stays as writable as it is on the host (`/tmp`, `/dev/shm`, world-writable files).
use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

/// Where the mounts of the calling process's namespace are listed.
pub const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Why `--protect-home` could not be set up (each one line, naming the path and the reason).
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    /// The user database gives the command's user no home directory.
    #[error("--protect-home: {user} has no home directory in the user database")]
    NoHome {
        /// The user (name, or `uid N`).
        user: String,
    },
    /// The home directory cannot be used.
    #[error("--protect-home: home directory {}: {source}", path.display())]
    Home {
        /// The home directory, as the user database gives it.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// The home directory is `/`.
    #[error("--protect-home: the home directory of {user} is /: refusing to make the whole file system read-only (run the agent as a dedicated user instead)")]
    HomeIsRoot {
        /// The user.
        user: String,
    },
    /// `--writable` without `--protect-home`.
    #[error("--writable needs --protect-home (without it the whole home directory is writable)")]
    WritableAlone,
    /// `harness run`'s working directory cannot be resolved.
    #[error("--protect-home: the working directory: {source}")]
    WorkingDirectory {
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// A `--writable` directory cannot be made writable.
    #[error("--writable {}: {problem}", path.display())]
    Writable {
        /// The path as given.
        path: PathBuf,
        /// What is wrong with it.
        problem: WritableProblem,
    },
    /// The mount table cannot be read.
    #[error("--protect-home: reading {MOUNTINFO}: {source}")]
    Mountinfo {
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// The mount a path lies on cannot be found.
    #[error("--protect-home: {}: finding its mount: {source}", path.display())]
    MountOf {
        /// The path.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// A path lies on a mount the mount table does not list.
    #[error("--protect-home: {}: its mount (id {id}) is not listed in {MOUNTINFO}", path.display())]
    NotListed {
        /// The path.
        path: PathBuf,
        /// The mount id `statx(2)` gave.
        id: u64,
    },
    /// A path cannot be passed to the kernel.
    #[error("--protect-home: {}: the path contains a NUL byte", path.display())]
    NulInPath {
        /// The path.
        path: PathBuf,
    },
}

/// What is wrong with a `--writable` directory.
#[derive(Debug, thiserror::Error)]
pub enum WritableProblem {
    /// Nothing is there (or a symlink leads nowhere).
    #[error("no such directory")]
    Missing,
    /// It is not a directory.
    #[error("not a directory")]
    NotADirectory,
    /// It cannot be resolved.
    #[error("{0}")]
    Io(io::Error),
    /// It lies outside home (only home is made read-only).
    #[error("not inside the home directory {}, the only directory --protect-home makes read-only", .0.display())]
    OutsideHome(PathBuf),
    /// It is home itself.
    #[error("is the home directory itself: leave out --protect-home to keep all of it writable")]
    IsHome,
}

/// Why a directory under home stays writable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// It is (or holds) the command's working directory.
    WorkingDirectory,
    /// `--writable` named it.
    Asked,
}

/// A directory under home that stays writable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writable {
    /// The directory (canonical).
    pub path: PathBuf,
    /// Why.
    pub why: Why,
}

/// What stays writable under home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WritableSet {
    /// The writable directories, sorted, none inside another.
    pub dirs: Vec<Writable>,
    /// The working directory is home itself, which stays read-only.
    pub cwd_is_home: bool,
}

/// Decides what stays writable under `home`, all paths canonical: each of `asked`
/// (`--writable`), which must lie strictly inside home, and `cwd` when it lies strictly inside
/// home (a working directory that *is* home stays read-only; one outside home needs nothing).
/// A directory inside another of the set is dropped: it is writable already.
pub fn writable_set(home: &Path, cwd: &Path, asked: &[PathBuf]) -> Result<WritableSet, HomeError> {
    let mut candidates = Vec::new();
    if strictly_inside(cwd, home) {
        candidates.push(Writable {
            path: cwd.to_path_buf(),
            why: Why::WorkingDirectory,
        });
    }
    for path in asked {
        let problem = if path == home {
            Some(WritableProblem::IsHome)
        } else if !strictly_inside(path, home) {
            Some(WritableProblem::OutsideHome(home.to_path_buf()))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(HomeError::Writable {
                path: path.clone(),
                problem,
            });
        }
        candidates.push(Writable {
            path: path.clone(),
            why: Why::Asked,
        });
    }
    // Stable: of two equal paths the first (the working directory) is kept.
    candidates.sort_by(|a, b| a.path.cmp(&b.path));
    let mut dirs: Vec<Writable> = Vec::new();
    for candidate in candidates {
        if !dirs
            .iter()
            .any(|kept| candidate.path.starts_with(&kept.path))
        {
            dirs.push(candidate);
        }
    }
    Ok(WritableSet {
        dirs,
        cwd_is_home: cwd == home,
    })
}

/// `path` lies below `dir` (component-wise), and is not `dir` itself.
fn strictly_inside(path: &Path, dir: &Path) -> bool {
    path != dir && path.starts_with(dir)
}

/// The per-mount flags `--protect-home` must state when it remounts a bind mount (a bind
/// remount sets exactly the flags it is given; atime flags, when none are given, are kept).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MountFlags {
    /// `ro`.
    pub read_only: bool,
    /// `nosuid`.
    pub nosuid: bool,
    /// `nodev`.
    pub nodev: bool,
    /// `noexec`.
    pub noexec: bool,
    /// `nosymfollow`.
    pub nosymfollow: bool,
}

// === impl MountFlags ===

impl MountFlags {
    /// From a mountinfo line's per-mount options (`rw,nosuid,nodev,relatime`).
    pub fn parse(options: &str) -> MountFlags {
        let mut flags = MountFlags::default();
        for option in options.split(',') {
            match option {
                "ro" => flags.read_only = true,
                "nosuid" => flags.nosuid = true,
                "nodev" => flags.nodev = true,
                "noexec" => flags.noexec = true,
                "nosymfollow" => flags.nosymfollow = true,
                _ => {}
            }
        }
        flags
    }

    /// The same, read-only.
    pub fn read_only(self) -> MountFlags {
        MountFlags {
            read_only: true,
            ..self
        }
    }

    /// The `mount(2)` flags that remount a bind mount with these per-mount flags.
    pub fn remount(self) -> libc::c_ulong {
        let mut flags = libc::MS_BIND | libc::MS_REMOUNT;
        for (set, flag) in [
            (self.read_only, libc::MS_RDONLY),
            (self.nosuid, libc::MS_NOSUID),
            (self.nodev, libc::MS_NODEV),
            (self.noexec, libc::MS_NOEXEC),
            (self.nosymfollow, libc::MS_NOSYMFOLLOW),
        ] {
            if set {
                flags |= flag;
            }
        }
        flags
    }
}

/// What `--protect-home` needs of one line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The mount's id (what `statx(2)` reports as `stx_mnt_id`).
    pub id: u64,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Its per-mount flags.
    pub flags: MountFlags,
}

/// Parses `/proc/self/mountinfo` (`36 35 98:0 /root /mount/point rw,noatime master:1 - ext4
/// /dev/sda1 rw`); lines that do not parse are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let id = fields.next()?.parse().ok()?;
            let _parent = fields.next()?;
            let _device = fields.next()?;
            let _root = fields.next()?;
            let mount_point = unescape(fields.next()?);
            let options = fields.next()?;
            Some(MountEntry {
                id,
                mount_point,
                flags: MountFlags::parse(options),
            })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .map(|d| d.iter().fold(0u32, |n, b| n * 8 + u32::from(b - b'0')));
        match octal.and_then(|n| u8::try_from(n).ok()) {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(OsStr::from_bytes(&out))
}

/// One mount operation of [`ProtectHome::enter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Bind-mount the path onto itself, with the mounts beneath it (`MS_BIND|MS_REC`).
    Bind(PathBuf),
    /// Remount the bind mount at the path with these flags (`MS_BIND|MS_REMOUNT|…`).
    Remount(PathBuf, MountFlags),
}

/// The mount steps that make `home` read-only but for `writable` (see the module docs).
/// `mounts` is the mount table; `mount_of` gives the id of the mount a path resolves to (the
/// topmost one at a mount point). A mount listed beneath home whose mount point resolves to
/// another mount is covered (by one mounted over it or over a directory above it): no path
/// reaches it, so it needs no step.
pub fn plan(
    home: &Path,
    mounts: &[MountEntry],
    mount_of: impl Fn(&Path) -> io::Result<u64>,
    writable: &[Writable],
) -> Result<Vec<Step>, HomeError> {
    let flags_of = |path: &Path| -> Result<MountFlags, HomeError> {
        let id = mount_of(path).map_err(|source| HomeError::MountOf {
            path: path.to_path_buf(),
            source,
        })?;
        mounts
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.flags)
            .ok_or_else(|| HomeError::NotListed {
                path: path.to_path_buf(),
                id,
            })
    };
    let reachable_beneath = |dir: &Path| -> Vec<&MountEntry> {
        mounts
            .iter()
            .filter(|m| strictly_inside(&m.mount_point, dir))
            .filter(|m| mount_of(&m.mount_point).is_ok_and(|id| id == m.id))
            .collect()
    };
    let mut steps = vec![
        Step::Bind(home.to_path_buf()),
        Step::Remount(home.to_path_buf(), flags_of(home)?.read_only()),
    ];
    for mount in reachable_beneath(home) {
        steps.push(Step::Remount(
            mount.mount_point.clone(),
            mount.flags.read_only(),
        ));
    }
    for dir in writable {
        let flags = flags_of(&dir.path)?;
        steps.push(Step::Bind(dir.path.clone()));
        steps.push(Step::Remount(dir.path.clone(), flags));
        for mount in reachable_beneath(&dir.path) {
            steps.push(Step::Remount(mount.mount_point.clone(), mount.flags));
        }
    }
    Ok(steps)
}

/// The id of the mount `path` resolves to (not following a final symlink, not triggering an
/// automount), from `statx(2)`.
pub fn mount_id(path: &Path) -> io::Result<u64> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: statx is plain old data; all zeroes is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: statx(2) reads the NUL-terminated path we own and writes one struct statx into
    // `stx`, which outlives the call. Called through syscall(2): older musl has no wrapper.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_statx,
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW | libc::AT_NO_AUTOMOUNT,
            libc::STATX_MNT_ID,
            &mut stx as *mut libc::statx,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if stx.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the kernel does not report mount ids (statx STATX_MNT_ID, Linux 5.8)",
        ));
    }
    Ok(stx.stx_mnt_id)
}

/// A step as the child performs it: a C string and `mount(2)` flags.
#[derive(Debug, Clone)]
enum Prepared {
    Bind(CString),
    Remount(CString, libc::c_ulong),
}

/// `--protect-home`, prepared in the parent and performed by [`enter`](Self::enter) in the
/// child (see the module docs).
#[derive(Debug, Clone)]
pub struct ProtectHome {
    home: PathBuf,
    set: WritableSet,
    steps: Vec<Prepared>,
    /// The working directory to enter again after the mounts, when it lies in home.
    cwd: Option<CString>,
}

// === impl ProtectHome ===

impl ProtectHome {
    /// Prepares `--protect-home` for `user` (how errors name them), whose home the user
    /// database gives as `home`, with `asked` (`--writable`) writable, from this process's
    /// working directory and mount table. Each `--writable` directory must exist and be a
    /// directory strictly inside home (symlinks resolved).
    pub fn prepare(
        user: &str,
        home: Option<&Path>,
        asked: &[PathBuf],
    ) -> Result<ProtectHome, HomeError> {
        let given = home.ok_or_else(|| HomeError::NoHome {
            user: user.to_owned(),
        })?;
        let home_err = |source| HomeError::Home {
            path: given.to_path_buf(),
            source,
        };
        let home = given.canonicalize().map_err(home_err)?;
        if !home.is_dir() {
            return Err(home_err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory",
            )));
        }
        if home == Path::new("/") {
            return Err(HomeError::HomeIsRoot {
                user: user.to_owned(),
            });
        }
        let cwd = std::env::current_dir()
            .and_then(|d| d.canonicalize())
            .map_err(|source| HomeError::WorkingDirectory { source })?;
        ProtectHome::prepare_at(&home, &cwd, asked)
    }

    /// [`prepare`](Self::prepare) with `home` checked and canonical, for a command that starts in
    /// `cwd` (canonical).
    fn prepare_at(home: &Path, cwd: &Path, asked: &[PathBuf]) -> Result<ProtectHome, HomeError> {
        let asked = asked
            .iter()
            .map(|path| canonical_dir(path))
            .collect::<Result<Vec<_>, _>>()?;
        let set = writable_set(home, cwd, &asked)?;
        let text =
            std::fs::read_to_string(MOUNTINFO).map_err(|source| HomeError::Mountinfo { source })?;
        let steps = plan(home, &parse_mountinfo(&text), mount_id, &set.dirs)?;
        let steps = steps
            .iter()
            .map(|step| {
                Ok(match step {
                    Step::Bind(path) => Prepared::Bind(c_path(path)?),
                    Step::Remount(path, flags) => Prepared::Remount(c_path(path)?, flags.remount()),
                })
            })
            .collect::<Result<_, HomeError>>()?;
        let cwd = match cwd.starts_with(home) {
            true => Some(c_path(cwd)?),
            false => None,
        };
        Ok(ProtectHome {
            home: home.to_path_buf(),
            set,
            steps,
            cwd,
        })
    }

    /// The home directory made read-only (canonical).
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// What stays writable under home.
    pub fn writable(&self) -> &WritableSet {
        &self.set
    }

    /// The line `harness run` prints at start: what is read-only, what stays writable.
    pub fn summary(&self) -> String {
        let writable = if self.set.dirs.is_empty() {
            "nothing under it stays writable".to_owned()
        } else {
            let dirs: Vec<String> = self
                .set
                .dirs
                .iter()
                .map(|w| {
                    let why = match w.why {
                        Why::WorkingDirectory => "working directory",
                        Why::Asked => "--writable",
                    };
                    format!("{} ({why})", w.path.display())
                })
                .collect();
            format!("writable under it: {}", dirs.join(", "))
        };
        format!(
            "harness run: --protect-home: {} is read-only in the enclosure; {writable}",
            self.home.display()
        )
    }

    /// The line `harness run` prints when the working directory is home itself, which stays
    /// read-only; `None` otherwise.
    pub fn cwd_note(&self) -> Option<String> {
        self.set.cwd_is_home.then(|| {
            format!(
                "harness run: --protect-home: the working directory is the home directory {} itself, which stays read-only; run from a directory inside it, or pass --writable DIR, for the agent to write there",
                self.home.display()
            )
        })
    }

    /// Registers [`enter`](Self::enter) as a `pre_exec` hook of `cmd`. Hooks run in the order
    /// they were registered: register it after the one that enters the private mount namespace
    /// (`TrustMounts::install`) and before any that drops privileges.
    pub fn install(self, cmd: &mut std::process::Command) {
        use std::os::unix::process::CommandExt as _;
        // SAFETY: the hook runs in the forked child before exec; `enter` only makes the
        // async-signal-safe system calls mount(2) and chdir(2) on C strings prepared before the
        // fork and owned by the closure, and allocates nothing.
        unsafe {
            cmd.pre_exec(move || self.enter());
        }
    }

    /// In the calling process, already in a private mount namespace: the prepared mounts, then
    /// back into the working directory through them.
    ///
    /// Async-signal-safe: no allocation, no locks, only `mount(2)` and `chdir(2)` on strings
    /// prepared beforehand; errors are bare errno values.
    pub fn enter(&self) -> io::Result<()> {
        for step in &self.steps {
            let rc = match step {
                // SAFETY: `path` is a NUL-terminated string owned by `self`, alive for the call;
                // null fstype and data are ignored for MS_BIND.
                Prepared::Bind(path) => unsafe {
                    libc::mount(
                        path.as_ptr(),
                        path.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REC,
                        std::ptr::null(),
                    )
                },
                // SAFETY: as above; a null source is what mount(2) documents for MS_REMOUNT.
                Prepared::Remount(path, flags) => unsafe {
                    libc::mount(
                        std::ptr::null(),
                        path.as_ptr(),
                        std::ptr::null(),
                        *flags,
                        std::ptr::null(),
                    )
                },
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if let Some(cwd) = &self.cwd {
            // SAFETY: chdir reads the NUL-terminated string owned by `self`.
            if unsafe { libc::chdir(cwd.as_ptr()) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// A `--writable` path resolved: it must exist and be a directory.
fn canonical_dir(path: &Path) -> Result<PathBuf, HomeError> {
    let problem = |problem| HomeError::Writable {
        path: path.to_path_buf(),
        problem,
    };
    let real = path.canonicalize().map_err(|e| {
        problem(match e.kind() {
            io::ErrorKind::NotFound => WritableProblem::Missing,
            io::ErrorKind::NotADirectory => WritableProblem::NotADirectory,
            _ => WritableProblem::Io(e),
        })
    })?;
    if !real.is_dir() {
        return Err(problem(WritableProblem::NotADirectory));
    }
    Ok(real)
}

fn c_path(path: &Path) -> Result<CString, HomeError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| HomeError::NulInPath {
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests;
