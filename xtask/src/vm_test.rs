//! `cargo xtask vm-test`: runs the privileged integration tests on Debian's 6.1 kernel.
//!
//! Builds static (musl) `harness`, the `harness-tests` test executables and that package's own
//! binaries, packs them with busybox into an initramfs whose `/init` mounts what the tests need
//! and runs each test executable, then boots the kernel under qemu (TCG by default: Debian's
//! kernel hangs under nested KVM on these machines). The console is streamed to the terminal and
//! to a log file; a per-run marker line carries the outcome, and a timeout catches hangs.
use crate::util::{cargo, exec, human, note, quote, show, step, target_dir, warn, which};
use anyhow::{bail, ensure, Context as _, Result};
mod cpio;

use cpio::Cpio;
use std::collections::BTreeSet;
use std::fs;
use std::io::{BufWriter, Read as _, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";
/// Kernel modules the tests need that Debian builds as modules (veth: netns test peers).
const MODULES: &[&str] = &["veth"];
/// Dynamically linked host tools the tests enclose; copied with their libraries when present.
/// (Debian's python3 and its standard library are added too: see `add_python`.)
const HOST_TOOLS: &[&str] = &["ip", "curl"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// Software emulation: slow but works everywhere (the default).
    Tcg,
    /// Hardware virtualisation (Debian's 6.1 kernel hangs under nested KVM on these machines).
    Kvm,
}

impl Accel {
    fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

/// VM options, shared with `cargo xtask test`.
#[derive(Debug, Clone, clap::Args)]
pub struct VmOptions {
    /// qemu accelerator for the VM test.
    #[arg(long, value_enum, default_value_t = Accel::Tcg)]
    pub accel: Accel,
    /// Seconds before the VM test gives up on the VM (boot + all tests) and kills it.
    #[arg(long, default_value_t = 1500)]
    pub timeout: u64,
    /// Kernel image for the VM test [default: the newest /boot/vmlinuz-6.1*].
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// VM memory in MiB.
    #[arg(long, default_value_t = 1024)]
    pub memory: u32,
    /// Keep debug info in the VM's binaries (a bigger initramfs, slower to boot under TCG).
    #[arg(long)]
    pub keep_debuginfo: bool,
}

#[derive(Debug, clap::Parser)]
pub struct Options {
    #[command(flatten)]
    pub vm: VmOptions,
    /// Passed to every test executable inside the VM (e.g. a test name filter).
    #[arg(last = true)]
    pub args: Vec<String>,
}

pub fn run(opts: &Options, with_setup: bool) -> Result<()> {
    if with_setup {
        crate::setup::run(&crate::setup::Options { check: false })?;
    }
    let kernel = match &opts.vm.kernel {
        Some(path) => path.clone(),
        None => newest_kernel()?,
    };
    ensure!(
        kernel.is_file(),
        "kernel image {} not found",
        kernel.display()
    );
    let kernel_version = kernel
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .map(str::to_owned);
    let qemu = which("qemu-system-x86_64")
        .context("qemu-system-x86_64 not on PATH: run `cargo xtask setup` as root")?;

    step(format!(
        "vm-test: building static ({MUSL_TARGET}) harness and test executables"
    ));
    let target = target_dir()?;
    exec(cargo().args([
        "build",
        "-p",
        "harness-daemon",
        "--bin",
        "harness",
        "--target",
        MUSL_TARGET,
    ]))?;
    let harness = target.join(MUSL_TARGET).join("debug/harness");
    let built = build_tests()?;
    ensure!(
        !built.tests.is_empty(),
        "package harness-tests has no test executables"
    );

    let work = target.join("vm-test");
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let initramfs = work.join("initramfs.cpio.gz");
    let log = work.join("console.log");
    let scratch = work.join("bin");
    fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let nonce = nonce();
    step(format!("vm-test: packing {}", initramfs.display()));
    pack_initramfs(&Initramfs {
        out: &initramfs,
        harness: &harness,
        bins: &built.bins,
        tests: &built.tests,
        kernel_version: kernel_version.as_deref(),
        test_args: &opts.args,
        nonce: &nonce,
        keep_debuginfo: opts.vm.keep_debuginfo,
        scratch: &scratch,
    })?;

    step(format!(
        "vm-test: booting {} under qemu (-accel {}, timeout {} s); console log: {}",
        kernel.display(),
        opts.vm.accel.name(),
        opts.vm.timeout,
        log.display()
    ));
    let mut cmd = Command::new(qemu);
    match opts.vm.accel {
        Accel::Tcg => cmd.args(["-accel", "tcg", "-cpu", "max"]),
        Accel::Kvm => cmd.args(["-accel", "kvm", "-cpu", "host"]),
    };
    cmd.args(["-m", &opts.vm.memory.to_string()])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initramfs)
        .args(["-append", "console=ttyS0 panic=-1 quiet"]);
    let outcome = boot(&mut cmd, &log, &nonce, Duration::from_secs(opts.vm.timeout))?;
    note(format!(
        "VM: /init started {} after qemu did; qemu ran {} in all",
        outcome.booted.map_or("never".to_owned(), human),
        human(outcome.total)
    ));
    match outcome.result {
        Some(VmResult::Pass) => {
            step(format!(
                "vm-test: PASSED on {} ({} test executables; booted in {}, total {})",
                kernel_version.as_deref().unwrap_or("the kernel"),
                built.tests.len(),
                outcome.booted.map_or("?".to_owned(), human),
                human(outcome.total)
            ));
            Ok(())
        }
        Some(VmResult::Fail(n)) => bail!(
            "vm-test: {n} test executable(s) failed inside the VM; console log: {}",
            log.display()
        ),
        None if !outcome.status.success() => bail!(
            "vm-test: qemu failed ({}) before the VM reported a result; console log: {}",
            outcome.status,
            log.display()
        ),
        None => bail!(
            "vm-test: the VM stopped without reporting a result (kernel panic or /init failure?); console log: {}",
            log.display()
        ),
    }
}

// === the kernel ===

/// The newest `/boot/vmlinuz-6.1*`, by version number.
fn newest_kernel() -> Result<PathBuf> {
    let mut found: Vec<(Vec<u64>, PathBuf)> = fs::read_dir("/boot")
        .context("reading /boot")?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let version = name.strip_prefix("vmlinuz-")?;
            version
                .starts_with("6.1.")
                .then(|| (version_key(version), e.path()))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, path)| path).context(
        "no /boot/vmlinuz-6.1* (Debian 12's linux-image-amd64): run `cargo xtask setup` as root, or pass --kernel",
    )
}

/// "6.1.0-56-amd64" → [6, 1, 0, 56]: the numbers in order, for sorting.
fn version_key(version: &str) -> Vec<u64> {
    version
        .split(['.', '-'])
        .map_while(|part| part.parse().ok())
        .collect()
}

/// Modules to load, dependencies first, as paths relative to `/lib/modules/<version>/`.
fn module_load_order(
    modules_dep: &str,
    builtin: &str,
    wanted: &[&str],
) -> (Vec<String>, Vec<String>) {
    let deps: Vec<(&str, Vec<&str>)> = modules_dep
        .lines()
        .filter_map(|line| {
            let (module, deps) = line.split_once(':')?;
            Some((module.trim(), deps.split_whitespace().collect()))
        })
        .collect();
    let module_name = |path: &str| {
        let file = path.rsplit('/').next().unwrap_or(path);
        file.split(".ko").next().unwrap_or(file).replace('-', "_")
    };
    let mut order = Vec::new();
    let mut missing = Vec::new();
    fn visit<'a>(path: &'a str, deps: &[(&'a str, Vec<&'a str>)], order: &mut Vec<String>) {
        if order.iter().any(|p| p == path) {
            return;
        }
        if let Some((_, children)) = deps.iter().find(|(p, _)| *p == path) {
            for child in children.iter().rev() {
                visit(child, deps, order);
            }
        }
        order.push(path.to_owned());
    }
    for name in wanted {
        let name = name.replace('-', "_");
        if builtin.lines().any(|p| module_name(p) == name) {
            continue;
        }
        match deps.iter().find(|(p, _)| module_name(p) == name) {
            Some((path, _)) => visit(path, &deps, &mut order),
            None => missing.push(name),
        }
    }
    (order, missing)
}

// === building ===

struct Built {
    tests: Vec<PathBuf>,
    bins: Vec<PathBuf>,
}

/// `cargo test -p harness-tests --no-run` for musl; the executables from cargo's JSON messages.
fn build_tests() -> Result<Built> {
    let mut cmd = cargo();
    cmd.args([
        "test",
        "-p",
        "harness-tests",
        "--target",
        MUSL_TARGET,
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]);
    show(&cmd);
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    ensure!(
        out.status.success(),
        "building harness-tests for {MUSL_TARGET} failed ({})",
        out.status
    );
    let mut built = Built {
        tests: Vec::new(),
        bins: Vec::new(),
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(exe) = msg["executable"].as_str() else {
            continue;
        };
        let exe = PathBuf::from(exe);
        if msg["profile"]["test"] == true {
            built.tests.push(exe);
        } else if msg["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "bin"))
        {
            built.bins.push(exe);
        }
    }
    built.tests.sort();
    built.tests.dedup();
    built.bins.sort();
    built.bins.dedup();
    for exe in built.tests.iter().chain(&built.bins) {
        note(format!("built {}", exe.display()));
    }
    Ok(built)
}

struct Initramfs<'a> {
    out: &'a Path,
    harness: &'a Path,
    bins: &'a [PathBuf],
    tests: &'a [PathBuf],
    kernel_version: Option<&'a str>,
    test_args: &'a [String],
    nonce: &'a str,
    keep_debuginfo: bool,
    /// A directory for intermediate files.
    scratch: &'a Path,
}

fn pack_initramfs(spec: &Initramfs) -> Result<()> {
    let busybox = Path::new("/bin/busybox");
    let busybox_elf = fs::read(busybox)
        .context("reading /bin/busybox: run `cargo xtask setup` as root (busybox-static)")?;
    ensure!(
        !has_interpreter(&busybox_elf),
        "/bin/busybox is dynamically linked: install busybox-static (`cargo xtask setup` as root)"
    );

    let file =
        fs::File::create(spec.out).with_context(|| format!("creating {}", spec.out.display()))?;
    let mut gzip = Command::new("gzip")
        .args(["-6", "-n", "-c"])
        .stdin(Stdio::piped())
        .stdout(file)
        .spawn()
        .context("starting gzip")?;
    let stdin = gzip.stdin.take().context("gzip's stdin")?;
    let mut cpio = Cpio::new(BufWriter::with_capacity(1 << 20, stdin));

    for dir in [
        "dev", "proc", "sys", "tmp", "run", "root", "etc", "var", "mnt", "lib", "lib64",
    ] {
        cpio.dir(dir)?;
    }
    cpio.file("bin/busybox", 0o755, &busybox_elf)?;
    let applets = crate::util::output(Command::new(busybox).arg("--list-full"))?;
    for applet in applets.lines().map(str::trim).filter(|a| !a.is_empty()) {
        if applet != "bin/busybox" {
            cpio.symlink(applet, "/bin/busybox")?;
        }
    }

    // Dynamically linked host programs the tests enclose (iproute2's `ip` for netns, curl,
    // Debian's python3 and its standard library), with their libraries; they replace busybox's
    // applets of the same name.
    let mut libs = BTreeSet::new();
    for tool in HOST_TOOLS {
        match which(tool) {
            Some(path) => add_host_program(&mut cpio, &path, tool, &mut libs)?,
            None => warn(format!(
                "{tool} not found on this host: the VM will have busybox's or none"
            )),
        }
    }
    add_python(&mut cpio, &mut libs)?;
    for lib in &libs {
        let data = fs::read(lib).with_context(|| format!("reading {}", lib.display()))?;
        cpio.file(&inside(lib), 0o755, &data)?;
    }

    cpio.file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    cpio.file("etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n")?;
    cpio.file(
        "etc/hosts",
        0o644,
        b"127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
    )?;
    // glibc programs (python3, curl) read /etc/hosts before DNS only when told so.
    cpio.file(
        "etc/nsswitch.conf",
        0o644,
        b"passwd: files\ngroup: files\nhosts: files dns\n",
    )?;
    cpio.file("etc/resolv.conf", 0o644, b"nameserver 127.0.0.1\n")?;

    // Our own binaries, without debug info unless asked: it is most of their size, and the
    // kernel unpacks the initramfs at emulation speed (symbols stay, so backtraces name
    // functions; panic messages carry file and line anyway).
    let strip = (!spec.keep_debuginfo).then(strip_tool).flatten();
    if strip.is_none() && !spec.keep_debuginfo {
        warn("neither llvm-strip nor strip found: binaries keep their debug info");
    }
    let ours = std::iter::once((spec.harness, "harness/bin/harness".to_owned()))
        .chain(
            spec.bins
                .iter()
                .map(|b| Ok((b.as_path(), format!("harness/bin/{}", file_name(b)?))))
                .collect::<Result<Vec<_>>>()?,
        )
        .chain(
            spec.tests
                .iter()
                .map(|t| Ok((t.as_path(), format!("harness/tests/{}", file_name(t)?))))
                .collect::<Result<Vec<_>>>()?,
        );
    for (path, inside) in ours {
        let data = match &strip {
            Some(tool) => stripped(tool, path, spec.scratch)?,
            None => fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        };
        cpio.file(&inside, 0o755, &data)?;
    }

    let mut insmods = Vec::new();
    match spec.kernel_version {
        Some(version) => {
            let dir = Path::new("/lib/modules").join(version);
            let deps = fs::read_to_string(dir.join("modules.dep"))
                .with_context(|| format!("reading {}/modules.dep", dir.display()))?;
            let builtin = fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
            let (order, missing) = module_load_order(&deps, &builtin, MODULES);
            for name in missing {
                warn(format!(
                    "kernel module {name} not found for {version}; tests that need it will fail"
                ));
            }
            for rel in order {
                let data = read_module(&dir.join(&rel))?;
                let rel = strip_compression(&rel);
                let inside = format!("lib/modules/{version}/{rel}");
                cpio.file(&inside, 0o644, &data)?;
                note(format!("added module {rel}"));
                insmods.push(format!("/{inside}"));
            }
        }
        None => warn("kernel image not named vmlinuz-<version>: no modules added"),
    }

    cpio.file("init", 0o755, init_script(spec, &insmods).as_bytes())?;
    let writer = cpio.finish()?;
    drop(
        writer
            .into_inner()
            .map_err(|e| e.into_error())
            .context("flushing to gzip")?,
    );
    let status = gzip.wait().context("waiting for gzip")?;
    ensure!(status.success(), "gzip failed ({status})");
    let size = fs::metadata(spec.out)?.len();
    note(format!(
        "initramfs: {} ({} MiB)",
        spec.out.display(),
        size >> 20
    ));
    Ok(())
}

/// A host path as a path inside the initramfs (no leading slash).
fn inside(path: &Path) -> String {
    path.strip_prefix("/")
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// Copies a host program (symlinks resolved) and links it as `name` in the usual bin dirs;
/// collects the libraries it needs into `libs`.
fn add_host_program<W: Write>(
    cpio: &mut Cpio<W>,
    path: &Path,
    name: &str,
    libs: &mut BTreeSet<PathBuf>,
) -> Result<()> {
    let path = fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))?;
    libs.extend(shared_libraries(&path)?);
    let data = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let real = inside(&path);
    cpio.file(&real, 0o755, &data)?;
    for dir in ["bin", "sbin", "usr/bin", "usr/sbin"] {
        let link = format!("{dir}/{name}");
        if link != real {
            cpio.symlink(&link, &format!("/{real}"))?;
        }
    }
    note(format!(
        "added {} as {name} (from the host, with its libraries)",
        path.display()
    ));
    Ok(())
}

/// Parts of Python's standard library the tests never need (tests, GUI, docs, build files).
const PYTHON_SKIP: &[&str] = &[
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "dist-packages",
    "site-packages",
];

/// Debian's python3 (not a pyenv or venv one) and its standard library, when installed.
fn add_python<W: Write>(cpio: &mut Cpio<W>, libs: &mut BTreeSet<PathBuf>) -> Result<()> {
    let Ok(exe) = fs::canonicalize("/usr/bin/python3") else {
        warn("/usr/bin/python3 not found: the VM will have no Python");
        return Ok(());
    };
    let stdlib = Path::new("/usr/lib").join(file_name(&exe)?);
    if !stdlib.is_dir() {
        warn(format!(
            "{} not found: the VM will have no Python",
            stdlib.display()
        ));
        return Ok(());
    }
    add_host_program(cpio, &exe, "python3", libs)?;
    let mut files = 0;
    let mut stack = vec![stdlib.clone()];
    while let Some(dir) = stack.pop() {
        let entries = fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let top = dir == stdlib;
            if (top && (PYTHON_SKIP.contains(&name.as_ref()) || name.starts_with("config-")))
                || name.ends_with(".opt-1.pyc")
                || name.ends_with(".opt-2.pyc")
            {
                continue;
            }
            let meta = fs::symlink_metadata(&path)?;
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&path)?;
                cpio.symlink(&inside(&path), &target.to_string_lossy())?;
            } else if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                use std::os::unix::fs::PermissionsExt as _;
                if name.ends_with(".so") {
                    libs.extend(shared_libraries(&path)?);
                }
                let data =
                    fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                cpio.file(&inside(&path), meta.permissions().mode() & 0o777, &data)?;
                files += 1;
            }
        }
    }
    note(format!("added {} ({files} files)", stdlib.display()));
    Ok(())
}

/// LLVM 22's strip (installed by setup), else binutils'.
fn strip_tool() -> Option<PathBuf> {
    let llvm = Path::new("/usr/lib/llvm-22/bin/llvm-strip");
    if llvm.exists() {
        Some(llvm.to_path_buf())
    } else {
        which("llvm-strip").or_else(|| which("strip"))
    }
}

/// `path`'s bytes without debug info (written through a file in `scratch`).
fn stripped(tool: &Path, path: &Path, scratch: &Path) -> Result<Vec<u8>> {
    let out = scratch.join(file_name(path)?);
    crate::util::output(
        Command::new(tool)
            .arg("--strip-debug")
            .arg("-o")
            .arg(&out)
            .arg(path),
    )?;
    fs::read(&out).with_context(|| format!("reading {}", out.display()))
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .with_context(|| format!("no file name in {}", path.display()))
}

/// The libraries (and the dynamic loader) `ldd` says `binary` needs; empty for static ones.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// A module's bytes, decompressed on the host (busybox's insmod may not decompress).
fn read_module(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".ko.xz") {
        Some(("xz", "xz-utils"))
    } else if name.ends_with(".ko.zst") {
        Some(("zstd", "zstd"))
    } else if name.ends_with(".ko.gz") {
        Some(("gzip", "gzip"))
    } else {
        None
    };
    match tool {
        None => fs::read(path).with_context(|| format!("reading {}", path.display())),
        Some((program, package)) => {
            let out = Command::new(program)
                .arg("-dc")
                .arg(path)
                .output()
                .with_context(|| {
                    format!(
                        "running {program} to decompress {} (apt-get install {package})",
                        path.display()
                    )
                })?;
            ensure!(
                out.status.success(),
                "{program} -dc {} failed",
                path.display()
            );
            Ok(out.stdout)
        }
    }
}

fn strip_compression(rel: &str) -> &str {
    [".xz", ".zst", ".gz"]
        .iter()
        .find_map(|ext| rel.strip_suffix(ext))
        .unwrap_or(rel)
}

/// Whether an ELF file asks for a dynamic loader (has a PT_INTERP program header).
fn has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |at: usize| {
        elf.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(|b| u64::from_le_bytes(b) as usize)
    };
    // 64-bit little-endian ELF only (x86_64); anything else counts as "needs a loader".
    if elf.get(..6) != Some(b"\x7fELF\x02\x01") {
        return true;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return true;
    };
    const PT_INTERP: u32 = 3;
    (0..phnum).any(|i| u32_at(phoff + i * phentsize) == Some(PT_INTERP))
}

/// The VM's `/init`: mount what the tests need, run each test executable, report, power off.
fn init_script(spec: &Initramfs, insmods: &[String]) -> String {
    let args: Vec<String> = spec.test_args.iter().map(|a| quote(a)).collect();
    let args = args.join(" ");
    let insmods: String = insmods
        .iter()
        .map(|m| format!("insmod {m} || echo \"init: insmod {m} failed\"\n"))
        .collect();
    let nonce = spec.nonce;
    format!(
        r#"#!/bin/sh
# Generated by `cargo xtask vm-test` (xtask/src/vm_test.rs).
export PATH=/harness/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
[ -d /sys/kernel/debug ] && mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
hostname harness-vm
ip link set lo up
{insmods}echo "HARNESS-VM-BOOTED {nonce} $(uname -r)"
export HARNESS_BIN=/harness/bin/harness
export HARNESS_PROBE=/harness/bin/probe
export HARNESS_PRIVILEGED_TESTS=1
export HARNESS_IN_VM=1
export RUST_BACKTRACE=1
cd /tmp
failed=0
for t in /harness/tests/*; do
    echo "==> vm: running $t"
    if "$t" --test-threads=1 {args}; then
        echo "<== vm: ok $t"
    else
        echo "<== vm: FAILED $t (exit $?)"
        failed=$((failed + 1))
    fi
done
if [ "$failed" -eq 0 ]; then
    echo "HARNESS-VM-RESULT {nonce} PASS"
else
    echo "HARNESS-VM-RESULT {nonce} FAIL $failed"
fi
sync
poweroff -f
"#
    )
}

/// A per-run token, so that no test output can fake the outcome line.
fn nonce() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{:x}-{:x}", std::process::id(), nanos)
}

// === booting ===

enum VmResult {
    Pass,
    Fail(u32),
}

struct Outcome {
    status: std::process::ExitStatus,
    result: Option<VmResult>,
    booted: Option<Duration>,
    total: Duration,
}

/// Runs qemu, copying its console to our stdout and to `log`, until it exits or `timeout`.
fn boot(cmd: &mut Command, log: &Path, nonce: &str, timeout: Duration) -> Result<Outcome> {
    show(cmd);
    let mut log_file =
        fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let mut console = child.stdout.take().context("qemu's stdout")?;
    let booted_marker = format!("HARNESS-VM-BOOTED {nonce}");
    let result_marker = format!("HARNESS-VM-RESULT {nonce} ");
    let reader = std::thread::spawn(move || {
        let mut stdout = std::io::stdout();
        let mut line = Vec::new();
        let mut buf = [0u8; 4096];
        let mut booted = None;
        let mut result = None;
        let mut escapes = EscapeFilter::default();
        let mut clean = Vec::new();
        loop {
            let n = match console.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            clean.clear();
            escapes.filter(&buf[..n], &mut clean);
            let _ = stdout.write_all(&clean);
            let _ = stdout.flush();
            let _ = log_file.write_all(&clean);
            for &byte in &clean {
                if byte != b'\n' {
                    line.push(byte);
                    continue;
                }
                let text = String::from_utf8_lossy(&line);
                if booted.is_none() && text.contains(&booted_marker) {
                    booted = Some(start.elapsed());
                }
                if let Some((_, verdict)) = text.split_once(&result_marker) {
                    let verdict = verdict.trim();
                    result = Some(if verdict == "PASS" {
                        VmResult::Pass
                    } else {
                        VmResult::Fail(
                            verdict
                                .strip_prefix("FAIL")
                                .and_then(|n| n.trim().parse().ok())
                                .unwrap_or(1),
                        )
                    });
                }
                line.clear();
            }
        }
        let _ = log_file.flush();
        (booted, result)
    });

    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for qemu")? {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let _ = reader.join();
            bail!(
                "vm-test: the VM did not finish within {} s (hang?); qemu killed; console log: {}",
                timeout.as_secs(),
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let total = start.elapsed();
    let (booted, result) = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the console reader panicked"))?;
    eprintln!();
    Ok(Outcome {
        status,
        result,
        booted,
        total,
    })
}

/// Drops terminal escape sequences (the firmware's `ESC c` would reset the user's terminal).
#[derive(Default)]
struct EscapeFilter {
    state: EscapeState,
}

#[derive(Default, Clone, Copy)]
enum EscapeState {
    #[default]
    Text,
    Escape,
    Csi,
}

impl EscapeFilter {
    fn filter(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &byte in input {
            self.state = match (self.state, byte) {
                (EscapeState::Text, 0x1b) => EscapeState::Escape,
                (EscapeState::Text, b'\r') => EscapeState::Text,
                (EscapeState::Text, _) => {
                    out.push(byte);
                    EscapeState::Text
                }
                (EscapeState::Escape, b'[') => EscapeState::Csi,
                (EscapeState::Escape, _) => EscapeState::Text,
                (EscapeState::Csi, 0x40..=0x7e) => EscapeState::Text,
                (EscapeState::Csi, _) => EscapeState::Csi,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_are_dropped() {
        let mut filter = EscapeFilter::default();
        let mut out = Vec::new();
        filter.filter(b"\x1bc\x1b[?7l\x1b[2", &mut out);
        filter.filter(b"JSeaBIOS\r\nok\n", &mut out);
        assert_eq!(out, b"SeaBIOS\nok\n");
    }

    #[test]
    fn kernel_versions_sort_numerically() {
        assert!(version_key("6.1.0-56-amd64") > version_key("6.1.0-9-amd64"));
        assert_eq!(version_key("6.1.0-56-amd64"), vec![6, 1, 0, 56]);
    }

    #[test]
    fn modules_load_dependencies_first() {
        let dep = "kernel/a.ko: kernel/b.ko kernel/c.ko.xz\nkernel/b.ko: kernel/c.ko.xz\nkernel/c.ko.xz:\nkernel/drivers/net/veth.ko:\n";
        let (order, missing) = module_load_order(
            dep,
            "kernel/net/ipv6/ipv6.ko\n",
            &["a", "veth", "ipv6", "nope"],
        );
        assert_eq!(
            order,
            [
                "kernel/c.ko.xz",
                "kernel/b.ko",
                "kernel/a.ko",
                "kernel/drivers/net/veth.ko"
            ]
        );
        assert_eq!(missing, ["nope"]);
        assert_eq!(strip_compression("kernel/c.ko.xz"), "kernel/c.ko");
    }

    #[test]
    fn finds_the_dynamic_loader_request() {
        // This test executable is linked against glibc (dynamic); a truncated file is not ELF.
        let me = fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(has_interpreter(&me));
        assert!(has_interpreter(b"\x7fELF"));
    }
}
