//! `cargo xtask setup`: installs what a fresh Debian 12 machine lacks to build and test harness.
//! Idempotent: every item is checked first, and nothing is installed when nothing is missing, so
//! a second run takes well under a second. Every other command that needs the toolchain runs it.
use crate::util::{exec, note, output, step, succeeds, warn, which};
use anyhow::{bail, Context as _, Result};
use std::process::Command;

#[derive(Debug, clap::Parser)]
pub struct Options {
    /// Only report what is missing; install nothing (exit 1 if something is missing).
    #[arg(long)]
    pub check: bool,
}

/// Debian packages, each with why we need it.
const PACKAGES: &[(&str, &str)] = &[
    ("gcc", "linker for every Rust build"),
    ("libc6-dev", "linker for every Rust build"),
    (
        "llvm-22-dev",
        "bpf-linker is built against LLVM 22 (rustc's LLVM)",
    ),
    ("libpolly-22-dev", "bpf-linker links LLVM 22 statically"),
    ("libzstd-dev", "bpf-linker links LLVM 22 statically"),
    ("zlib1g-dev", "bpf-linker links LLVM 22 statically"),
    ("musl-tools", "static binaries for the VM test's initramfs"),
    ("qemu-system-x86", "the VM test boots its kernel under qemu"),
    ("linux-image-amd64", "the VM test boots Debian's 6.1 kernel"),
    ("busybox-static", "the VM test's initramfs userland"),
    ("cpio", "inspecting the VM test's initramfs"),
    (
        "iproute2",
        "privileged tests make network namespaces (`ip netns`)",
    ),
    ("curl", "privileged tests enclose curl"),
    (
        "python3",
        "privileged tests and the demo enclose Python clients",
    ),
    (
        "python3-venv",
        "the demo's agent runs in a virtualenv with the Anthropic SDK",
    ),
];

/// The bpf-linker release the eBPF build is proven with (DESIGN.md).
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// What setup found: the toolchain the eBPF build will use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EbpfToolchain {
    Nightly,
    /// No nightly: stable with RUSTC_BOOTSTRAP=1 (harness-daemon's build.rs does this itself).
    StableBootstrap,
}

pub fn run(opts: &Options) -> Result<EbpfToolchain> {
    step("setup: checking the toolchain (cargo xtask setup)");
    let mut missing = Vec::new();

    // 1. Debian packages (first: bpf-linker's build needs LLVM).
    let packages = missing_packages()?;
    if packages.is_empty() {
        note(format!("Debian packages: all {} present", PACKAGES.len()));
    } else {
        for name in &packages {
            let why = PACKAGES.iter().find(|(p, _)| p == name).map_or("", |p| p.1);
            note(format!("Debian package missing: {name} ({why})"));
        }
        if opts.check {
            missing.extend(packages.iter().map(|p| format!("apt package {p}")));
        } else {
            install_packages(&packages)?;
        }
    }

    // 2. Rust: rustup, rust-src for the eBPF build-std, the musl target, fmt and clippy.
    if which("rustup").is_none() {
        bail!("rustup is not on PATH: install it from https://rustup.rs (and add ~/.cargo/bin to PATH), then rerun `cargo xtask setup`");
    }
    let toolchain = if succeeds(Command::new("rustup").args([
        "run",
        "nightly",
        "rustc",
        "--version",
    ])) {
        EbpfToolchain::Nightly
    } else {
        warn("no nightly toolchain: the eBPF object will be built with stable and RUSTC_BOOTSTRAP=1 (harness-daemon's build.rs does this); `rustup toolchain install nightly` to use nightly");
        EbpfToolchain::StableBootstrap
    };
    let ebpf_toolchain = match toolchain {
        EbpfToolchain::Nightly => "nightly",
        EbpfToolchain::StableBootstrap => "stable",
    };
    ensure_components(ebpf_toolchain, &["rust-src"], opts.check, &mut missing)?;
    // The toolchain that builds everything else (the directory's active one: no `--toolchain`).
    ensure_components_active(&["rustfmt", "clippy"], opts.check, &mut missing)?;
    ensure_target(MUSL_TARGET, opts.check, &mut missing)?;

    // 3. bpf-linker, built against Debian's LLVM 22.
    match bpf_linker_version() {
        Some(v) if v.starts_with("0.13") => note(format!("bpf-linker {v}: present")),
        found => {
            note(match &found {
                Some(v) => format!("bpf-linker {v} found; need {BPF_LINKER_VERSION}"),
                None => "bpf-linker: missing".to_owned(),
            });
            if opts.check {
                missing.push(format!("bpf-linker {BPF_LINKER_VERSION}"));
            } else {
                install_bpf_linker(found.is_some())?;
            }
        }
    }

    // 4. The agent CLIs the privileged tests enclose, from npm (tests/agents).
    if let Some(agents) = crate::agents::ensure(opts.check)? {
        missing.push(agents);
    }

    if !missing.is_empty() {
        bail!(
            "missing: {} (run `cargo xtask setup` as root to install)",
            missing.join(", ")
        );
    }
    note(format!(
        "setup complete; eBPF builds use the {} toolchain",
        match toolchain {
            EbpfToolchain::Nightly => "nightly",
            EbpfToolchain::StableBootstrap => "stable (+RUSTC_BOOTSTRAP=1)",
        }
    ));
    Ok(toolchain)
}

/// The packages of [`PACKAGES`] that dpkg does not report as installed.
fn missing_packages() -> Result<Vec<&'static str>> {
    if which("dpkg-query").is_none() {
        warn(
            "dpkg-query not found: not a Debian system? Install the equivalents of these yourself:",
        );
        for (name, why) in PACKAGES {
            note(format!("{name} ({why})"));
        }
        return Ok(Vec::new());
    }
    // Unknown packages make dpkg-query exit 1 with a message on stderr; the known ones are still
    // printed, so read stdout regardless of the status.
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Package} ${Status}\\n"])
        .args(PACKAGES.iter().map(|(p, _)| p))
        .output()
        .context("running dpkg-query")?;
    let listing = String::from_utf8_lossy(&out.stdout);
    Ok(PACKAGES
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !package_installed(&listing, p))
        .collect())
}

/// Whether dpkg-query's `${Package} ${Status}` listing shows `package` as installed.
fn package_installed(listing: &str, package: &str) -> bool {
    listing.lines().any(|line| {
        let mut words = line.splitn(2, ' ');
        let name = words.next().unwrap_or_default();
        let status = words.next().unwrap_or_default();
        (name == package || name.split(':').next() == Some(package))
            && status.ends_with("ok installed")
    })
}

fn install_packages(packages: &[&str]) -> Result<()> {
    if !crate::util::is_root() {
        bail!(
            "Debian packages missing ({}): run `cargo xtask setup` as root to install them",
            packages.join(" ")
        );
    }
    step(format!("setup: installing {}", packages.join(" ")));
    exec(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .arg("update"),
    )?;
    exec(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends"])
            .args(packages),
    )
}

fn ensure_components(
    toolchain: &str,
    components: &[&str],
    check: bool,
    missing: &mut Vec<String>,
) -> Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        toolchain,
    ]))?;
    for component in components {
        if has_component(&installed, component) {
            note(format!("{component} ({toolchain}): present"));
        } else if check {
            missing.push(format!("{component} for {toolchain}"));
        } else {
            exec(Command::new("rustup").args([
                "component",
                "add",
                component,
                "--toolchain",
                toolchain,
            ]))?;
        }
    }
    Ok(())
}

fn ensure_components_active(
    components: &[&str],
    check: bool,
    missing: &mut Vec<String>,
) -> Result<()> {
    let installed = output(
        Command::new("rustup")
            .current_dir(crate::util::workspace_root())
            .args(["component", "list", "--installed"]),
    )?;
    for component in components {
        if has_component(&installed, component) {
            note(format!("{component}: present"));
        } else if check {
            missing.push(component.to_string());
        } else {
            exec(
                Command::new("rustup")
                    .current_dir(crate::util::workspace_root())
                    .args(["component", "add", component]),
            )?;
        }
    }
    Ok(())
}

/// `rustup component list --installed` prints `rust-src` bare and others with the host triple.
fn has_component(listing: &str, component: &str) -> bool {
    listing
        .lines()
        .map(str::trim)
        .any(|line| line == component || line.starts_with(&format!("{component}-")))
}

fn ensure_target(target: &str, check: bool, missing: &mut Vec<String>) -> Result<()> {
    let installed = output(
        Command::new("rustup")
            .current_dir(crate::util::workspace_root())
            .args(["target", "list", "--installed"]),
    )?;
    if installed.lines().any(|l| l.trim() == target) {
        note(format!("target {target}: present"));
    } else if check {
        missing.push(format!("target {target}"));
    } else {
        exec(
            Command::new("rustup")
                .current_dir(crate::util::workspace_root())
                .args(["target", "add", target]),
        )?;
    }
    Ok(())
}

/// `bpf-linker --version` prints "bpf-linker 0.13.0"; None when it is absent or silent.
fn bpf_linker_version() -> Option<String> {
    let out = Command::new("bpf-linker").arg("--version").output().ok()?;
    if !out.status.success() {
        return None;
    }
    parse_bpf_linker_version(&String::from_utf8_lossy(&out.stdout))
}

fn parse_bpf_linker_version(text: &str) -> Option<String> {
    text.split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(str::to_owned)
}

fn install_bpf_linker(replace: bool) -> Result<()> {
    if !std::path::Path::new(LLVM_PREFIX)
        .join("bin/llvm-config")
        .exists()
    {
        bail!("{LLVM_PREFIX}/bin/llvm-config missing: install llvm-22-dev (run `cargo xtask setup` as root)");
    }
    step(format!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (takes a few minutes)"
    ));
    let mut cmd = Command::new("cargo");
    cmd.env("LLVM_PREFIX", LLVM_PREFIX).args([
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--no-default-features",
        "--features",
        "llvm-22",
    ]);
    if replace {
        cmd.arg("--force");
    }
    exec(&mut cmd)?;
    if which("bpf-linker").is_none() {
        bail!("bpf-linker installed but not on PATH: add ~/.cargo/bin to PATH");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_dpkg_listing() {
        let listing = "curl install ok installed\nllvm-22-dev deinstall ok config-files\nlibzstd-dev:amd64 install ok installed\n";
        assert!(package_installed(listing, "curl"));
        assert!(!package_installed(listing, "llvm-22-dev"));
        assert!(package_installed(listing, "libzstd-dev"));
        assert!(!package_installed(listing, "cpio"));
    }

    #[test]
    fn reads_rustup_components() {
        let listing = "cargo-x86_64-unknown-linux-gnu\nrust-src\nclippy-x86_64-unknown-linux-gnu\n";
        assert!(has_component(listing, "rust-src"));
        assert!(has_component(listing, "clippy"));
        assert!(!has_component(listing, "rustfmt"));
    }

    #[test]
    fn reads_bpf_linker_version() {
        assert_eq!(
            parse_bpf_linker_version("bpf-linker 0.13.0\n").as_deref(),
            Some("0.13.0")
        );
        assert_eq!(parse_bpf_linker_version(""), None);
    }
}
