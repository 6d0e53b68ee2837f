//! `cargo xtask bench`: the daemon's benchmarks (each prints ratios against a baseline measured
//! in the same run, DESIGN.md), then where their reports are.
use crate::util::{cargo, exec, note, step, target_dir};
use anyhow::Result;

#[derive(Debug, clap::Parser)]
pub struct Options {
    /// Passed to the bench harness (e.g. a benchmark name filter).
    #[arg(last = true)]
    pub args: Vec<String>,
}

pub fn run(opts: &Options) -> Result<()> {
    crate::setup::run(&crate::setup::Options { check: false })?;
    step("bench: cargo bench -p harness-daemon");
    let mut cmd = cargo();
    cmd.args(["bench", "-p", "harness-daemon"]);
    if !opts.args.is_empty() {
        cmd.arg("--").args(&opts.args);
    }
    exec(&mut cmd)?;
    // The proxy bench runs the release `harness` and `loadgen` binaries under `harness run`.
    step("bench: building release binaries for the proxy bench");
    exec(cargo().args([
        "build",
        "--release",
        "-p",
        "harness-daemon",
        "-p",
        "harness-tests",
        "--bins",
    ]))?;
    step("bench: cargo bench -p harness-tests --bench proxy");
    let mut cmd = cargo();
    cmd.args(["bench", "-p", "harness-tests", "--bench", "proxy"]);
    exec(&mut cmd)?;
    let criterion = target_dir()?.join("criterion");
    if criterion.join("report/index.html").exists() {
        note(format!(
            "results: printed above; HTML report at {}",
            criterion.join("report/index.html").display()
        ));
    } else if criterion.exists() {
        note(format!(
            "results: printed above; raw data under {}",
            criterion.display()
        ));
    } else {
        note("results: printed above (the benches wrote no report files)");
    }
    Ok(())
}
