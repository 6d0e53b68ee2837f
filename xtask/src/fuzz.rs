//! `cargo xtask fuzz [--seconds N] [--sanitizer S] [--build-only] [TARGET...]`: runs the
//! libFuzzer targets of `harness-daemon/fuzz` (README "Fuzzing") one after another, each for N
//! seconds, and fails naming the crashing input if one finds a crash, a panic, a hang or an
//! out-of-memory.
//!
//! - cargo-fuzz is installed when missing (`cargo install cargo-fuzz --locked`); `cargo xtask
//!   setup` does not install it, and `cargo xtask test` does not fuzz.
//! - Toolchain: cargo-fuzz builds with unstable flags (`-Zsanitizer=address`, `-Cpasses=
//!   sancov-module`, `--cfg fuzzing`…). They work on this project's stable toolchain with
//!   `RUSTC_BOOTSTRAP=1`, which this command sets (no nightly needed: the ASan runtime,
//!   `librustc-stable_rt.asan.a`, ships with stable's rust-std for x86_64-unknown-linux-gnu).
//!   harness-daemon's build script still builds the eBPF object as usual (aya-build gives that
//!   build flags of its own, so the fuzzing flags do not reach it). The instrumented build
//!   goes to the fuzz workspace's own `harness-daemon/fuzz/target/`.
//! - Each target starts from the checked-in seeds, `harness-daemon/fuzz/corpus/<target>/`,
//!   which stay untouched: what the fuzzer adds goes to `<target dir>/fuzz-corpus/<target>/`,
//!   kept between runs. Crashing inputs go to `harness-daemon/fuzz/artifacts/<target>/`; one
//!   that shows a bug becomes a `#[test]` next to the parser it broke.
//! - One fuzzer process at a time (`-jobs` is never used): the machine is shared.
use crate::util::{cargo, display, human, note, output, show, step, succeeds, target_dir, warn};
use anyhow::{bail, Context as _, Result};
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

#[derive(Debug, clap::Parser)]
pub struct Options {
    /// How long to run each target, in seconds.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// The sanitizer to build with (`none` runs about twice as fast; harness has no unsafe
    /// code of its own, but its dependencies do).
    #[arg(long, default_value = "address")]
    pub sanitizer: String,
    /// Only build the targets.
    #[arg(long)]
    pub build_only: bool,
    /// The targets to run (default: all of them, in the order `cargo fuzz list` gives).
    pub targets: Vec<String>,
}

/// What one target's run came to.
struct Outcome {
    target: String,
    took: std::time::Duration,
    /// libFuzzer's last status line (`#N DONE cov: … ft: … corp: … exec/s: …`).
    stats: Option<String>,
    /// Executions, from `-print_final_stats`.
    runs: Option<String>,
    /// The crashing input, when there was one.
    artifact: Option<String>,
    ok: bool,
}

pub fn run(opts: &Options) -> Result<()> {
    let dir = crate::util::workspace_root().join("harness-daemon/fuzz");
    ensure_cargo_fuzz()?;
    let all = list(&dir)?;
    let targets = if opts.targets.is_empty() {
        all.clone()
    } else {
        for t in &opts.targets {
            if !all.contains(t) {
                bail!("no fuzz target `{t}` (there are: {})", all.join(", "));
            }
        }
        opts.targets.clone()
    };

    step("fuzz: building the targets (cargo fuzz build)");
    let mut build = fuzz_cmd(&dir);
    build.args(["build", "--sanitizer", &opts.sanitizer]);
    if opts.targets.len() == 1 {
        build.arg(&opts.targets[0]);
    }
    crate::util::exec(&mut build)?;
    if opts.build_only {
        return Ok(());
    }

    let corpora = target_dir()?.join("fuzz-corpus");
    let mut outcomes = Vec::new();
    for target in &targets {
        step(format!("fuzz: {target} for {} s", opts.seconds));
        let outcome = run_target(&dir, &corpora, target, opts)?;
        outcomes.push(outcome);
    }

    step("fuzz: summary");
    for o in &outcomes {
        note(format!(
            "{:<13} {:<7} {:>8}  {} runs  {}",
            o.target,
            if o.ok { "ok" } else { "FAILED" },
            human(o.took),
            o.runs.as_deref().unwrap_or("?"),
            o.stats.as_deref().unwrap_or("(no libFuzzer status line)")
        ));
    }
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.ok).collect();
    if failed.is_empty() {
        return Ok(());
    }
    for o in &failed {
        match &o.artifact {
            Some(a) => warn(format!(
                "{}: crashing input {a}; reproduce with `RUSTC_BOOTSTRAP=1 cargo fuzz run {} {a}` in harness-daemon/fuzz",
                o.target, o.target
            )),
            None => warn(format!("{}: the fuzzer failed (see its output above)", o.target)),
        }
    }
    bail!(
        "{} of {} fuzz targets failed: {}",
        failed.len(),
        outcomes.len(),
        failed
            .iter()
            .map(|o| o.target.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// `cargo fuzz …` in the fuzz crate, on this toolchain with its unstable flags allowed.
fn fuzz_cmd(dir: &Path) -> Command {
    let mut cmd = cargo();
    cmd.current_dir(dir).env("RUSTC_BOOTSTRAP", "1").arg("fuzz");
    cmd
}

fn ensure_cargo_fuzz() -> Result<()> {
    if succeeds(cargo().args(["fuzz", "--version"])) {
        return Ok(());
    }
    step("fuzz: installing cargo-fuzz (cargo install cargo-fuzz --locked)");
    crate::util::exec(cargo().args(["install", "cargo-fuzz", "--locked"]))
}

fn list(dir: &Path) -> Result<Vec<String>> {
    let out = output(fuzz_cmd(dir).arg("list"))?;
    Ok(out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

fn run_target(dir: &Path, corpora: &Path, target: &str, opts: &Options) -> Result<Outcome> {
    let seeds = dir.join("corpus").join(target);
    let corpus = corpora.join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let mut cmd = fuzz_cmd(dir);
    cmd.args(["run", "--sanitizer", &opts.sanitizer, target])
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={}", opts.seconds))
        // A single input taking this long is a hang; the targets' own limits are shorter.
        .arg("-timeout=60")
        .arg("-print_final_stats=1");
    show(&cmd);
    let shown = display(&cmd);
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{shown}`"))?;
    let mut stats = None;
    let mut runs = None;
    let mut artifact = None;
    let stderr = child.stderr.take().context("the fuzzer's stderr")?;
    for line in BufReader::new(stderr).lines() {
        let line = line.context("reading the fuzzer's output")?;
        eprintln!("{line}");
        if line.starts_with('#') && line.contains(" cov: ") {
            stats = Some(line.clone());
        }
        if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
            runs = Some(n.trim().to_owned());
        }
        if let Some(rest) = line.split("Test unit written to ").nth(1) {
            artifact = Some(absolute(dir, rest.trim()));
        }
    }
    let status = child.wait().context("waiting for the fuzzer")?;
    Ok(Outcome {
        target: target.to_owned(),
        took: started.elapsed(),
        stats,
        runs,
        artifact,
        ok: status.success(),
    })
}

/// libFuzzer names artifacts relative to where it runs (the fuzz crate).
fn absolute(dir: &Path, path: &str) -> String {
    let p = PathBuf::from(path);
    if p.is_absolute() {
        path.to_owned()
    } else {
        dir.join(p).display().to_string()
    }
}
