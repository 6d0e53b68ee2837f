//! `cargo xtask demo`: encloses a small sample agent (xtask/demo/agent.py, the official Anthropic
//! Python SDK) that asks the project's mock model provider to "Buy 10 ACME", receives a
//! `place_order` tool call, runs it on an MCP tool server it started itself, whose tool places the
//! order with a mock brokerage API over HTTPS; then prints `harness log` of the session, the
//! causal chain, and `harness verify`'s verdict. Fails unless all of that happened and was
//! recorded. Needs root, like `harness run`.
//!
//! Outside the enclosure, in the demo's own network namespace over a veth (the world: the
//! enclosure's loopback is not the host's, so the outside world cannot be the host's loopback):
//! the mock provider (api.anthropic.com → 198.18.<k>.2:443) and brokerage (broker.demo →
//! 198.18.<k>.4:443), one `peers` process serving real TLS with a test CA. On the host's
//! loopback, where harness's resolver forwards: a DNS responder (xtask/demo/dns.py). Inside the
//! enclosure: the agent and its MCP tool server (mcp.demo → 127.0.0.3:8443, on the enclosure's
//! loopback, another `peers`, a child of the agent).
mod world;

use crate::util::{cargo, exec, is_root, note, output, show, step, target_dir, warn};
use anyhow::{bail, Context as _, Result};
use serde_json::Value;
use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[derive(Debug, clap::Parser)]
pub struct Options {
    /// Ledger directory to record into [default: DIR/ledger, DIR a fresh /tmp/harness-demo-PID].
    #[arg(long)]
    pub ledger: Option<PathBuf>,
    /// Policy file passed to `harness run --policy`.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Run the agent as this user (`harness run --user`) [default: the user behind sudo, else
    /// nobody].
    #[arg(long)]
    pub user: Option<String>,
    /// What the user asks the agent.
    #[arg(long, default_value = "Buy 10 ACME")]
    pub prompt: String,
}

/// The demo's names and where they live: the model and the brokerage at world hosts
/// 198.18.<k>.2 and .4, port 443; the MCP server on the enclosure's own loopback.
const MODEL_HOST_N: u8 = 2;
const BROKER_HOST_N: u8 = 4;
const MCP_ADDR: &str = "127.0.0.3:8443";
const MODEL_HOST: &str = "api.anthropic.com";
const MCP_HOST: &str = "mcp.demo";
const BROKER_HOST: &str = "broker.demo";

/// Kills a helper process when the demo ends, however it ends.
struct Helper(Child);

impl Drop for Helper {
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
    step("demo: building harness and the mock peers (model provider, MCP server, brokerage)");
    exec(cargo().args([
        "build",
        "-p",
        "harness-daemon",
        "--bin",
        "harness",
        "-p",
        "harness-tests",
        "--bin",
        "peers",
    ]))?;
    let target = target_dir()?;
    let harness = target.join("debug/harness");
    let venv = crate::venv::ensure()?;
    let demo_dir = crate::util::workspace_root().join("xtask/demo");

    // Everything the enclosed user must read lives in (or is copied to) a world-readable
    // directory: the agent may run as `nobody`, who cannot reach /root.
    let work = std::env::temp_dir().join(format!("harness-demo-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o755))?;
    let ledger = opts.ledger.clone().unwrap_or_else(|| work.join("ledger"));
    std::fs::create_dir_all(&ledger).with_context(|| format!("creating {}", ledger.display()))?;
    let peers = reachable(&target.join("debug/peers"), &work)?;
    let agent = reachable(&demo_dir.join("agent.py"), &work)?;
    let venv = reachable(&venv, &work)?;
    let python = venv.join("bin/python");

    let world = world::World::create()?;
    let model_addr = format!("{}:443", world.addr(MODEL_HOST_N));
    let broker_addr = format!("{}:443", world.addr(BROKER_HOST_N));
    step(format!(
        "demo: starting the mock model provider ({MODEL_HOST} at {model_addr}) and brokerage API ({BROKER_HOST} at {broker_addr}), outside the enclosure, in the world"
    ));
    let peer_ca = work.join("peer-ca");
    let mut peers_cmd = world.command(&peers);
    peers_cmd
        .arg("--ca-dir")
        .arg(&peer_ca)
        .args(["--listen", &model_addr, "--listen", &broker_addr])
        .args(["--name", MODEL_HOST, "--name", BROKER_HOST]);
    let (_peers, ready) = start(&mut peers_cmd, "the mock peers")?;
    let ready: Value = serde_json::from_str(&ready)
        .with_context(|| format!("the mock peers' ready line is not JSON: {ready}"))?;
    let peer_ca_pem = ready["ca"]
        .as_str()
        .map(PathBuf::from)
        .context("the mock peers did not say where their CA is")?;
    note(format!(
        "serving TLS with a test CA: {} (harness verifies them with --upstream-ca)",
        peer_ca_pem.display()
    ));

    step("demo: starting a DNS responder for the demo's names on 127.0.0.1 (xtask/demo/dns.py)");
    let mut dns_cmd = Command::new("/usr/bin/python3");
    dns_cmd.arg(demo_dir.join("dns.py")).args([
        format!("{MODEL_HOST}={}", host_of(&model_addr)),
        format!("{MCP_HOST}={}", host_of(MCP_ADDR)),
        format!("{BROKER_HOST}={}", host_of(&broker_addr)),
    ]);
    let (_dns, dns) = start(&mut dns_cmd, "the DNS responder")?;
    let dns = dns
        .strip_prefix("dns on ")
        .map(str::to_owned)
        .with_context(|| format!("the DNS responder did not start (said {dns:?})"))?;
    note(format!(
        "{dns}: {MODEL_HOST} → {}, {MCP_HOST} → {}, {BROKER_HOST} → {} (harness run --dns-upstream)",
        host_of(&model_addr),
        host_of(MCP_ADDR),
        host_of(&broker_addr)
    ));

    step("demo: enclosing the sample agent (xtask/demo/agent.py) with `harness run`");
    note(format!(
        "the agent starts its MCP tool server ({MCP_HOST} at {MCP_ADDR}) inside the enclosure"
    ));
    let before = sessions(&ledger)?;
    let mut cmd = Command::new(&harness);
    cmd.arg("run")
        .arg("--no-daemon")
        .arg("--ledger")
        .arg(&ledger)
        .arg("--ca-dir")
        .arg(work.join("harness-ca"))
        .arg("--upstream-ca")
        .arg(&peer_ca_pem)
        .arg("--dns-upstream")
        .arg(&dns);
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
        cmd.args(["--user", user]);
    }
    cmd.arg("--")
        .arg(&python)
        .arg(&agent)
        .arg("--peers")
        .arg(&peers)
        .arg("--prompt")
        .arg(&opts.prompt)
        .arg("--mcp-listen")
        .arg(MCP_ADDR)
        .arg("--mcp-url")
        .arg(format!("http://{MCP_HOST}:{}/mcp", port_of(MCP_ADDR)))
        .arg("--broker-url")
        .arg(format!("https://{BROKER_HOST}"));
    // The SDK warns on stderr about anything unusual; the demo shows only what matters.
    cmd.env("PYTHONWARNINGS", "ignore::DeprecationWarning");
    let agent_result = exec(&mut cmd);
    if let Err(err) = &agent_result {
        warn(format!("the enclosed agent did not succeed: {err:#}"));
    }

    let session = sessions(&ledger)?
        .into_iter()
        .filter(|s| !before.contains(s))
        .max()
        .with_context(|| format!("harness recorded no new session in {}", ledger.display()))?;

    step(format!(
        "demo: what harness recorded (`harness log {}`)",
        session.display()
    ));
    exec(Command::new(&harness).arg("log").arg(&session))?;

    step("demo: the causal chain (`harness log --correlations`)");
    let mut corr = Command::new(&harness);
    corr.args(["log", "--correlations"]).arg(&session);
    show(&corr);
    let chains: Value = serde_json::from_str(&output(&mut corr)?)
        .context("`harness log --correlations` did not print JSON")?;
    let chain = summarize_chains(&chains);

    step("demo: who made the brokerage call (the session's process_exec entries)");
    let processes = match &chain {
        Ok(pids) => show_processes(&session, *pids),
        Err(_) => Ok(()),
    };

    step("demo: verifying the ledger (`harness verify`)");
    let verified = exec(Command::new(&harness).arg("verify").arg(&ledger));

    agent_result.context("the demo's enclosed agent failed")?;
    chain?;
    processes?;
    verified.context("the ledger did not verify")?;
    // Staged copies are only for the enclosed user's sake; the ledger stays.
    for staged in [&peers, &agent, &venv] {
        if staged.starts_with(&work) {
            let _ = std::fs::remove_dir_all(staged).or_else(|_| std::fs::remove_file(staged));
        }
    }
    step(format!(
        "demo: done; the ledger stays in {} (try `{} log --json`, `export --format har` on it)",
        ledger.display(),
        harness.display()
    ));
    Ok(())
}

/// Prints each chain on a few lines; fails unless one goes model tool call `place_order` → MCP
/// `tools/call place_order` → an external HTTPS request the tool server made (another pid) →
/// the model request that carried the result back. Returns the pids of that chain: the MCP
/// client (the agent) and the maker of the brokerage call (its tool server).
fn summarize_chains(chains: &Value) -> Result<(u64, u64)> {
    let empty = Vec::new();
    let chains = chains.as_array().unwrap_or(&empty);
    let mut complete = None;
    for c in chains {
        let tool = &c["tool_use"];
        let mcp = &c["mcp_call"];
        println!(
            "model tool call {} {} [{}] (#{})",
            tool["name"].as_str().unwrap_or("?"),
            tool["input"],
            tool["id"].as_str().unwrap_or("?"),
            tool["seq"]
        );
        if mcp.is_object() {
            println!(
                "  → MCP tools/call {} on {} by pid {} (#{}){}",
                mcp["name"].as_str().unwrap_or("?"),
                mcp["host"].as_str().unwrap_or("?"),
                mcp["pid"],
                mcp["seq"],
                if mcp["is_error"] == true {
                    " → error"
                } else {
                    ""
                }
            );
        } else {
            println!("  → no MCP call carried it");
        }
        let external = c["external"].as_array().unwrap_or(&empty);
        for x in external {
            println!(
                "    → {} {} → {} by pid {} (#{})",
                x["method"].as_str().unwrap_or("?"),
                x["url"].as_str().unwrap_or("?"),
                x["status"],
                x["pid"],
                x["seq"]
            );
        }
        if c["result_seq"].is_number() {
            println!("  → result back to the model (#{})", c["result_seq"]);
        }
        let brokered = external.iter().find(|x| {
            x["url"]
                .as_str()
                .is_some_and(|u| u.contains(BROKER_HOST) && u.ends_with("/v1/orders"))
                && x["status"]
                    .as_u64()
                    .is_some_and(|s| (200..300).contains(&s))
                && x["pid"] != mcp["pid"]
        });
        if let (Some(broker_call), true) = (
            brokered,
            tool["name"] == "place_order"
                && mcp["name"] == "place_order"
                && c["result_seq"].is_number(),
        ) {
            if let (Some(client), Some(server)) = (mcp["pid"].as_u64(), broker_call["pid"].as_u64())
            {
                complete = Some((client, server));
            }
        }
    }
    let Some(pids) = complete else {
        bail!(
            "no complete chain in the ledger: model tool call place_order → MCP tools/call place_order → POST https://{BROKER_HOST}/v1/orders by the tool server → result back to the model ({} chain(s) found)",
            chains.len()
        );
    };
    Ok(pids)
}

/// Prints the recorded `process_exec` of the agent and of the process that called the brokerage;
/// fails unless the ledger says the latter is the tool server the agent started (its parent).
fn show_processes(session: &Path, (agent, server): (u64, u64)) -> Result<()> {
    let text = std::fs::read_to_string(session)
        .with_context(|| format!("reading {}", session.display()))?;
    let execs: Vec<Value> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|entry| entry["kind"] == "process_exec")
        .collect();
    let exec_of = |pid: u64| execs.iter().rev().find(|e| e["pid"].as_u64() == Some(pid));
    for (role, pid) in [("agent", agent), ("tool server", server)] {
        let Some(exec) = exec_of(pid) else {
            bail!(
                "no process_exec entry for the {role} (pid {pid}) in {}",
                session.display()
            );
        };
        let argv: Vec<&str> = exec["argv"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        println!(
            "{role}: pid {pid} (parent {}, uid {}) ran {} (#{})",
            exec["ppid"],
            exec["uid"],
            argv.join(" "),
            exec["seq"]
        );
    }
    let server_parent = exec_of(server).and_then(|e| e["ppid"].as_u64());
    if server_parent != Some(agent) {
        bail!(
            "the ledger does not say the agent (pid {agent}) started the tool server (pid {server}): its parent is {server_parent:?}"
        );
    }
    println!("the brokerage call came from a process the agent started: the chain holds across processes");
    Ok(())
}

/// `path` itself when every user can read it, else a copy of it in `work` (world-readable).
fn reachable(path: &Path, work: &Path) -> Result<PathBuf> {
    let path = path
        .canonicalize()
        .with_context(|| format!("{} is missing", path.display()))?;
    let open = path.ancestors().skip(1).all(|dir| {
        dir.metadata()
            .is_ok_and(|m| m.permissions().mode() & 0o001 != 0)
    }) && path
        .metadata()
        .is_ok_and(|m| m.permissions().mode() & 0o004 != 0);
    if open {
        return Ok(path);
    }
    let copy = work.join(path.file_name().context("a path without a name")?);
    note(format!(
        "{} is out of other users' reach: copying it to {}",
        path.display(),
        copy.display()
    ));
    exec(Command::new("cp").arg("-a").arg(&path).arg(&copy))?;
    exec(Command::new("chmod").args(["-R", "a+rX"]).arg(&copy))?;
    Ok(copy)
}

/// Starts a helper and waits (up to 30 s) for its first line of stdout.
fn start(cmd: &mut Command, what: &str) -> Result<(Helper, String)> {
    show(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let stdout = child.stdout.take().context("helper stdout")?;
    let helper = Helper(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line).map(|_| line);
        let _ = tx.send(read);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| anyhow::anyhow!("{what} did not say it was ready within 30 s"))?
        .with_context(|| format!("reading {what}'s output"))?;
    if line.trim().is_empty() {
        bail!("{what} exited before it was ready (is another demo running on the same addresses?)");
    }
    Ok((helper, line.trim().to_owned()))
}

/// The session files (`*.jsonl`) in a ledger directory.
fn sessions(ledger: &Path) -> Result<Vec<PathBuf>> {
    Ok(std::fs::read_dir(ledger)
        .with_context(|| format!("reading {}", ledger.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect())
}

fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(host, _)| host)
}

fn port_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or("", |(_, port)| port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(broker_pid: u64, status: u64) -> Value {
        json!([{
            "session": "S",
            "tool_use": {"seq": 46, "id": "toolu_1", "name": "place_order",
                         "input": {"symbol": "ACME", "qty": 10, "side": "buy"}},
            "mcp_call": {"seq": 87, "id": 3, "name": "place_order", "pid": 100,
                         "host": "mcp.demo", "is_error": false, "external": []},
            "external": [{"seq": 94, "method": "POST", "url": "https://broker.demo/v1/orders",
                          "status": status, "pid": broker_pid, "ambiguous": false}],
            "result_seq": 106,
        }])
    }

    #[test]
    fn accepts_the_whole_chain() {
        summarize_chains(&chain(101, 201)).unwrap();
    }

    #[test]
    fn refuses_a_broken_chain() {
        assert!(summarize_chains(&json!([])).is_err());
        // The brokerage call must come from the tool server, not the agent, and succeed.
        assert!(summarize_chains(&chain(100, 201)).is_err());
        assert!(summarize_chains(&chain(101, 500)).is_err());
        let mut no_result = chain(101, 201);
        no_result[0]["result_seq"] = Value::Null;
        assert!(summarize_chains(&no_result).is_err());
        let mut no_mcp = chain(101, 201);
        no_mcp[0]["mcp_call"] = Value::Null;
        assert!(summarize_chains(&no_mcp).is_err());
    }

    #[test]
    fn splits_addresses() {
        assert_eq!(host_of(MCP_ADDR), "127.0.0.3");
        assert_eq!(port_of(MCP_ADDR), "8443");
    }
}
