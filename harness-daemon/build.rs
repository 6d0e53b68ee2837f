//! Builds the eBPF object (harness-ebpf) for the BPF target and leaves it in OUT_DIR, where
//! `hook.rs` embeds it. The toolchain it needs is installed by `cargo xtask setup`.
use anyhow::{anyhow, Context as _};
use std::process::{Command, Stdio};

fn main() -> anyhow::Result<()> {
    let ebpf_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("harness-daemon has no parent directory"))?
        .join("harness-ebpf");
    let root_dir = ebpf_dir
        .to_str()
        .context("harness-ebpf path is not UTF-8")?;
    println!("cargo:rerun-if-env-changed=HARNESS_EBPF_TOOLCHAIN");
    let toolchain = match std::env::var("HARNESS_EBPF_TOOLCHAIN") {
        Ok(name) => name,
        Err(_) if nightly_installed() => "nightly".to_owned(),
        Err(_) => {
            // No nightly: the stable toolchain can still build core for the BPF target when
            // told to accept -Z flags (DESIGN.md: fall back rather than fail).
            println!("cargo:warning=nightly toolchain missing; building eBPF with stable and RUSTC_BOOTSTRAP=1");
            // SAFETY-free: build scripts are single-threaded at this point.
            std::env::set_var("RUSTC_BOOTSTRAP", "1");
            "stable".to_owned()
        }
    };
    let toolchain: &'static str = Box::leak(toolchain.into_boxed_str());
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "harness-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(toolchain),
    )
    .context(
        "building the eBPF programs (run `cargo xtask setup` if bpf-linker or rust-src is missing)",
    )
}

fn nightly_installed() -> bool {
    Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
