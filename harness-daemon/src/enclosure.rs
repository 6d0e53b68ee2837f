//! cgroup v2 enclosures: find the cgroup2 mount, create the enclosure an engine's eBPF programs
//! hang on, and the per-session cgroups below it whose processes they govern.
//!
//! Layout: `<cgroup2>/harness/<engine>/` is the enclosure (programs attached here, inherited by
//! everything below), `<cgroup2>/harness/<engine>/<session ULID>/` holds one session's processes.
use std::fs;
use std::io::{self, BufRead as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Errors about cgroups, each naming the path concerned.
#[derive(Debug, thiserror::Error)]
pub enum EnclosureError {
    /// No cgroup2 file system is mounted.
    #[error("no cgroup2 file system is mounted (see /proc/self/mountinfo); harness needs cgroup v2 — mount one with `mount -t cgroup2 none /sys/fs/cgroup/unified`")]
    NoCgroup2,
    /// An operation on a cgroup path failed.
    #[error("{path}: {what}: {source}")]
    Io {
        /// The cgroup file or directory.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Processes would not leave a cgroup being removed.
    #[error("{path}: processes still present after kill; cgroup left in place")]
    NotEmpty {
        /// The cgroup directory.
        path: PathBuf,
    },
}

fn io_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(io::Error) -> EnclosureError + 'a {
    move |source| EnclosureError::Io {
        path: path.to_owned(),
        what,
        source,
    }
}

/// The mount point of the cgroup2 file system, read from `/proc/self/mountinfo` (never assumed:
/// hybrid hosts mount it at `/sys/fs/cgroup/unified`, unified ones at `/sys/fs/cgroup`).
pub fn cgroup2_mount() -> Result<PathBuf, EnclosureError> {
    mount_point("cgroup2")
        .map_err(io_err(Path::new(MOUNTINFO), "reading mount table"))?
        .ok_or(EnclosureError::NoCgroup2)
}

/// The mount table of this process.
pub const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Where a file system of type `fstype` is mounted, if anywhere (the first such mount).
pub fn mount_point(fstype: &str) -> io::Result<Option<PathBuf>> {
    let file = fs::File::open(MOUNTINFO)?;
    for line in io::BufReader::new(file).lines() {
        let line = line?;
        // Fields: id parent major:minor root mountpoint options [optional…] - fstype source super
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split_whitespace().next() == Some(fstype) {
            if let Some(mount_point) = left.split_whitespace().nth(4) {
                return Ok(Some(PathBuf::from(unescape_mount_path(mount_point))));
            }
        }
    }
    Ok(None)
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mount_path(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup v2 id of a cgroup directory: its inode number, which is what
/// `bpf_get_current_cgroup_id()` reports for tasks inside it.
pub fn cgroup_id(path: &Path) -> Result<u64, EnclosureError> {
    Ok(fs::metadata(path)
        .map_err(io_err(path, "reading cgroup id"))?
        .ino())
}

/// An engine's enclosure cgroup. Its eBPF programs govern every session cgroup created under it.
#[derive(Debug, Clone)]
pub struct Enclosure {
    path: PathBuf,
}

impl Enclosure {
    /// Creates (or adopts) `<cgroup2>/harness/<name>`.
    pub fn create(name: &str) -> Result<Enclosure, EnclosureError> {
        let root = cgroup2_mount()?.join("harness");
        let path = root.join(name);
        fs::create_dir_all(&path).map_err(io_err(&path, "creating enclosure cgroup"))?;
        Ok(Enclosure { path })
    }

    /// Kills and removes session cgroups left by an engine of the same name that died. Done
    /// before that engine's stale programs are detached, so its processes are never loose.
    pub async fn reap_orphans(&self) -> Result<usize, EnclosureError> {
        let entries = fs::read_dir(&self.path).map_err(io_err(&self.path, "listing enclosure"))?;
        let mut reaped = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                let id = cgroup_id(&path)?;
                SessionCgroup { path, id }.kill_and_remove().await?;
                reaped += 1;
            }
        }
        Ok(reaped)
    }

    /// The enclosure's cgroup directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its cgroup id and its depth below the cgroup v2 root, as
    /// `bpf_get_current_ancestor_cgroup_id` counts (the root is level 0).
    pub fn id_and_level(&self) -> Result<(u64, u32), EnclosureError> {
        let id = cgroup_id(&self.path)?;
        let root = cgroup2_mount()?;
        let level = self
            .path
            .strip_prefix(&root)
            .map(|p| p.components().count() as u32)
            .unwrap_or(2);
        Ok((id, level))
    }

    /// Creates the cgroup for one session.
    pub fn create_session(&self, name: &str) -> Result<SessionCgroup, EnclosureError> {
        let path = self.path.join(name);
        fs::create_dir(&path).map_err(io_err(&path, "creating session cgroup"))?;
        let id = cgroup_id(&path)?;
        Ok(SessionCgroup { path, id })
    }

    /// Removes the enclosure cgroup (it must hold no sessions any more).
    pub fn remove(&self) -> Result<(), EnclosureError> {
        remove_cgroup_dir(&self.path)
    }
}

/// Where each running engine holds its lock: `<ENGINE_LOCKS>/<name>.lock`, locked (`flock`)
/// for as long as the engine lives. The kernel drops the lock when the process dies, however
/// it dies, so an unlocked (or missing) file means a dead engine.
pub const ENGINE_LOCKS: &str = "/run/harness/engines";

/// Proof that this process is the one live engine of its name (held until dropped).
#[derive(Debug)]
pub struct EngineLock {
    _file: fs::File,
    path: PathBuf,
}

impl EngineLock {
    /// Takes the lock of engine `name`, or says which process-less state is in the way.
    pub fn take(name: &str) -> Result<EngineLock, EnclosureError> {
        let dir = Path::new(ENGINE_LOCKS);
        fs::create_dir_all(dir).map_err(io_err(dir, "creating the engine lock directory"))?;
        let path = dir.join(format!("{name}.lock"));
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path, "opening engine lock"))?;
        if !try_lock(&file) {
            return Err(EnclosureError::Io {
                path,
                what: "locking",
                source: io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another engine of this name is running",
                ),
            });
        }
        Ok(EngineLock { _file: file, path })
    }
}

impl Drop for EngineLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn try_lock(file: &fs::File) -> bool {
    use std::os::fd::AsRawFd as _;
    // SAFETY: flock on an fd we own, with plain flags.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Engines (other than `own`) whose enclosure is still there but whose process is gone: their
/// lock file is missing or can be taken. Taking it proves the engine dead, and holding it
/// while reaping keeps a new engine of the same name from starting meanwhile.
pub fn dead_engines(own: &str) -> Result<Vec<(String, Option<fs::File>)>, EnclosureError> {
    let root = cgroup2_mount()?.join("harness");
    let Ok(entries) = fs::read_dir(&root) else {
        return Ok(Vec::new());
    };
    let mut dead = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == own || !entry.path().is_dir() {
            continue;
        }
        let lock = Path::new(ENGINE_LOCKS).join(format!("{name}.lock"));
        match fs::OpenOptions::new().write(true).open(&lock) {
            Ok(file) if try_lock(&file) => dead.push((name, Some(file))),
            Ok(_) => {} // alive
            Err(_) => dead.push((name, None)),
        }
    }
    Ok(dead)
}

/// One session's cgroup.
#[derive(Debug, Clone)]
pub struct SessionCgroup {
    path: PathBuf,
    id: u64,
}

impl SessionCgroup {
    /// The cgroup directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cgroup id the kernel side reports for the session's processes.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The `cgroup.procs` file a process writes `0` to in order to move itself in.
    pub fn procs_file(&self) -> PathBuf {
        self.path.join("cgroup.procs")
    }

    /// Process ids currently in the session.
    pub fn pids(&self) -> Result<Vec<u32>, EnclosureError> {
        let procs = self.procs_file();
        let text = fs::read_to_string(&procs).map_err(io_err(&procs, "reading"))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Kills every process left in the session (the enclosed command's stragglers) and removes
    /// the cgroup once it is empty.
    pub async fn kill_and_remove(&self) -> Result<(), EnclosureError> {
        for _ in 0..200 {
            let pids = self.pids()?;
            if pids.is_empty() {
                return remove_cgroup_dir(&self.path);
            }
            let kill = self.path.join("cgroup.kill");
            if fs::write(&kill, "1").is_err() {
                // cgroup.kill is 5.14+; older kernels get SIGKILL per process.
                for pid in pids {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(EnclosureError::NotEmpty {
            path: self.path.clone(),
        })
    }
}

fn remove_cgroup_dir(path: &Path) -> Result<(), EnclosureError> {
    match fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path, "removing cgroup")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape_mount_path(r"/a\040b"), "/a b");
        assert_eq!(unescape_mount_path("/sys/fs/cgroup"), "/sys/fs/cgroup");
        assert_eq!(unescape_mount_path(r"/x\"), r"/x\");
    }
}
