//! `cargo xtask test`: everything CI runs, in order — setup, fmt, clippy, build, unit and
//! privileged integration tests on this kernel, then the same tests inside a VM on Debian's 6.1
//! kernel. Stops at the first failure; always ends with one summary line.
use crate::util::{cargo, exec, human, is_root, step, target_dir, timed, warn};
use anyhow::{bail, Result};
use std::time::Duration;

#[derive(Debug, clap::Parser)]
pub struct Options {
    /// Run without root: skip the privileged tests and the VM test (loudly).
    #[arg(long)]
    pub unprivileged: bool,
    /// Skip the VM test.
    #[arg(long)]
    pub no_vm: bool,
    #[command(flatten)]
    pub vm: crate::vm_test::VmOptions,
}

pub fn run(opts: &Options) -> Result<()> {
    if !opts.unprivileged && !is_root() {
        bail!("`cargo xtask test` runs privileged tests (eBPF, cgroups, network namespaces) and must run as root; run it as root, or pass --unprivileged to skip those tests");
    }
    if opts.unprivileged {
        warn("--unprivileged: privileged tests (eBPF, cgroups, netns) and the VM test are SKIPPED; this run does not show that harness works");
    }

    let mut done: Vec<(&str, Duration)> = Vec::new();
    let result = steps(opts, &mut done);
    let list = done
        .iter()
        .map(|(name, took)| format!("{name} ({})", human(*took)))
        .collect::<Vec<_>>()
        .join(", ");
    match &result {
        Ok(()) => {
            let skipped = if opts.unprivileged {
                "; SKIPPED: privileged tests, vm-test"
            } else if opts.no_vm {
                "; SKIPPED: vm-test"
            } else {
                ""
            };
            step(format!("xtask test: PASSED — {list}{skipped}"));
        }
        Err(_) => step(format!(
            "xtask test: FAILED — passed before the failure: {}",
            if list.is_empty() { "nothing" } else { &list }
        )),
    }
    result
}

fn steps(opts: &Options, done: &mut Vec<(&'static str, Duration)>) -> Result<()> {
    let mut run_step = |name: &'static str, f: &mut dyn FnMut() -> Result<()>| -> Result<()> {
        let (result, took) = timed(f);
        result?;
        done.push((name, took));
        Ok(())
    };

    run_step("setup", &mut || {
        crate::setup::run(&crate::setup::Options { check: false }).map(drop)
    })?;
    run_step("fmt", &mut || {
        step("test: cargo fmt --all --check");
        exec(cargo().args(["fmt", "--all", "--check"]))
    })?;
    run_step("clippy", &mut || {
        step("test: cargo clippy --all-targets -- -D warnings");
        exec(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))
    })?;
    run_step("build", &mut || {
        step("test: building the harness binary");
        exec(cargo().args(["build", "-p", "harness-daemon", "--bin", "harness"]))
    })?;
    run_step(
        if opts.unprivileged {
            "cargo test (unprivileged)"
        } else {
            "cargo test (privileged)"
        },
        &mut || {
            let debug = target_dir()?.join("debug");
            let venv = crate::venv::ensure()?;
            let mut cmd = cargo();
            cmd.args([
                "test",
                "--workspace",
                "--exclude",
                "harness-ebpf",
                "--no-fail-fast",
            ])
            .env("HARNESS_BIN", debug.join("harness"))
            .env("HARNESS_PROBE", debug.join("probe"))
            .env("HARNESS_PYTHON_VENV", venv)
            .env("HARNESS_CLAUDE_CODE", crate::agents::claude_code());
            if opts.unprivileged {
                step("test: unit and integration tests, privileged ones SKIPPED");
                cmd.env_remove("HARNESS_PRIVILEGED_TESTS");
            } else {
                step("test: unit and integration tests, privileged ones included (as root, on this kernel)");
                cmd.env("HARNESS_PRIVILEGED_TESTS", "1");
            }
            exec(&mut cmd)
        },
    )?;
    if opts.unprivileged {
        warn("vm-test SKIPPED (--unprivileged)");
    } else if opts.no_vm {
        warn("vm-test SKIPPED (--no-vm)");
    } else {
        run_step("vm-test", &mut || {
            crate::vm_test::run(
                &crate::vm_test::Options {
                    vm: opts.vm.clone(),
                    args: Vec::new(),
                },
                false,
            )
        })?;
    }
    Ok(())
}
