//! `cargo xtask demo`: encloses a small sample agent (xtask/demo/agent.py) that looks a name up
//! and calls a local pretend brokerage API (xtask/demo/service.py), then prints what harness
//! recorded. Needs root, like `harness run`.
use crate::util::{cargo, exec, is_root, note, step, target_dir, warn, which};
use anyhow::{bail, Context as _, Result};
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

#[derive(Debug, clap::Parser)]
pub struct Options {
    /// Ledger directory to record into [default: a fresh directory under /tmp].
    #[arg(long)]
    pub ledger: Option<PathBuf>,
    /// Policy file passed to `harness run --policy`.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Run the agent as this user (`harness run --user`) [default: the user behind sudo, else
    /// nobody].
    #[arg(long)]
    pub user: Option<String>,
}

/// Kills the demo service when the demo ends, however it ends.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(opts: &Options) -> Result<()> {
    if !is_root() {
        bail!("`cargo xtask demo` runs `harness run`, which needs root (cgroups and eBPF): run it as root");
    }
    crate::setup::run(&crate::setup::Options { check: false })?;
    step("demo: building the harness binary");
    exec(cargo().args(["build", "-p", "harness-daemon", "--bin", "harness"]))?;
    let harness = target_dir()?.join("debug/harness");
    let python = python()?;
    let demo_dir = crate::util::workspace_root().join("xtask/demo");

    let ledger = match &opts.ledger {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("harness-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&ledger).with_context(|| format!("creating {}", ledger.display()))?;

    step("demo: starting the sample brokerage API on 127.0.0.1 (xtask/demo/service.py)");
    let (_service, url, dns) = start_service(&python, &demo_dir.join("service.py"))?;
    note(format!("HTTP API: {url}; DNS responder: {dns}"));

    step("demo: enclosing the sample agent (xtask/demo/agent.py) with `harness run`");
    let run_help = Command::new(&harness)
        .args(["run", "--help"])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", harness.display()))?;
    if !run_help.status.success() {
        bail!(
            "this build of harness has no `run` subcommand yet ({} run --help failed)",
            harness.display()
        );
    }
    let run_help = String::from_utf8_lossy(&run_help.stdout);
    let mut cmd = Command::new(&harness);
    cmd.arg("run").arg("--ledger").arg(&ledger);
    if run_help.contains("--no-daemon") {
        // A running `harness daemon` would record into its own ledger, not the demo's.
        cmd.arg("--no-daemon");
    }
    if run_help.contains("--dns-upstream") {
        // The agent's DNS query is answered by the demo's responder: no network needed.
        cmd.arg("--dns-upstream").arg(&dns);
    }
    if let Some(policy) = &opts.policy {
        cmd.arg("--policy").arg(policy);
    }
    // The agent runs unprivileged: the invoking user behind sudo, else `nobody`.
    let user = match (&opts.user, std::env::var_os("SUDO_UID")) {
        (Some(user), _) => Some(user.clone()),
        (None, Some(_)) => None,
        (None, None) => Some("nobody".to_owned()),
    };
    if let Some(user) = &user {
        note(format!("the agent runs as user {user}"));
        cmd.args(["--user", user]);
    }
    cmd.arg("--")
        .arg(&python)
        .arg(demo_dir.join("agent.py"))
        .arg(&url);
    let agent = exec(&mut cmd);
    if let Err(err) = &agent {
        warn(format!("the enclosed agent did not succeed: {err:#}"));
    }

    step(format!(
        "demo: what harness recorded in {}",
        ledger.display()
    ));
    if has_subcommand(&harness, "log") {
        exec(Command::new(&harness).arg("log").arg(&ledger))?;
    } else {
        note("(`harness log` not available yet: the raw ledger entries follow)");
        print_jsonl(&ledger)?;
    }
    if has_subcommand(&harness, "verify") {
        step("demo: verifying the ledger");
        exec(Command::new(&harness).arg("verify").arg(&ledger))?;
    }
    agent.context("the demo's enclosed agent failed")?;
    step(format!(
        "demo: done; the ledger stays in {} (try `{} log` / `verify` on it)",
        ledger.display(),
        harness.display()
    ));
    Ok(())
}

/// A python3 that any user can run: the enclosed agent may run as another user than root, and
/// root's own interpreters (pyenv under /root) are out of its reach. Debian's comes first.
fn python() -> Result<PathBuf> {
    let system = Path::new("/usr/bin/python3");
    if system.exists() {
        return Ok(system.to_path_buf());
    }
    which("python3").context("python3 not found: run `cargo xtask setup` as root")
}

/// Starts service.py on free ports; returns it, the API's URL and the DNS responder's address.
fn start_service(python: &Path, script: &Path) -> Result<(Service, String, String)> {
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", script.display()))?;
    let stdout = child.stdout.take().context("service stdout")?;
    let service = Service(child);
    let mut lines = BufReader::new(stdout).lines();
    let mut expect = |prefix: &str| -> Result<String> {
        let line = lines
            .next()
            .transpose()
            .context("reading the demo service's output")?
            .unwrap_or_default();
        line.trim()
            .strip_prefix(prefix)
            .map(str::to_owned)
            .with_context(|| format!("the demo service did not start (said {line:?})"))
    };
    let url = expect("listening on ")?;
    let dns = expect("dns on ")?;
    Ok((service, url, dns))
}

/// Whether `harness SUBCOMMAND --help` works (the subcommand exists).
fn has_subcommand(harness: &Path, subcommand: &str) -> bool {
    crate::util::succeeds(Command::new(harness).args([subcommand, "--help"]))
}

/// Pretty-prints every JSON line of every `*.jsonl` file in the ledger directory.
fn print_jsonl(ledger: &Path) -> Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(ledger)
        .with_context(|| format!("reading {}", ledger.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    if files.is_empty() {
        warn(format!(
            "no session files (*.jsonl) in {}",
            ledger.display()
        ));
    }
    for file in files {
        note(format!("session {}", file.display()));
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<serde_json::Value>(line) {
                Ok(value) => println!("{}", serde_json::to_string_pretty(&value)?),
                Err(_) => println!("{line}"),
            }
        }
    }
    Ok(())
}
