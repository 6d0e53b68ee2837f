//! The demo's outside world: a network namespace of its own, reached from the host over a veth
//! pair, where the mock model provider and brokerage live.
//!
//! An enclosed session's loopback is (or will be) its own, not the host's, so services on the
//! host's loopback are not the outside world of an enclosure. The same layout as the tests'
//! `harness_tests::world` (same names, so either removes what the other left behind):
//! namespace `harness-w<pid>`, host side `hworld<k>` with 198.18.<k>.1/24, world side `eth0`
//! with 198.18.<k>.2 … .9/24 (RFC 2544 benchmarking addresses: test hosts only). `<k>` is the
//! first one whose `hworld<k>` does not exist yet.
use crate::util::{display, exec, note, show, step};
use anyhow::{bail, Context as _, Result};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

const NETNS_PREFIX: &str = "harness-w";

/// The demo's world; removed when dropped.
pub struct World {
    name: String,
    k: u8,
}

impl World {
    /// Makes the namespace and the veth, and addresses both ends.
    pub fn create() -> Result<World> {
        remove_stale();
        let name = format!("{NETNS_PREFIX}{}", std::process::id());
        step(format!(
            "demo: making the outside world: network namespace {name}, over a veth from the host"
        ));
        exec(Command::new("ip").args(["netns", "add", &name]))?;
        // From here on, dropping the world removes the namespace (and with it the veth).
        let mut world = World { name, k: 0 };
        world.k = claim(&world.name)?;
        let (k, name) = (world.k, world.name.as_str());
        let host_if = format!("hworld{k}");
        exec(Command::new("ip").args([
            "addr",
            "add",
            &format!("198.18.{k}.1/24"),
            "dev",
            &host_if,
        ]))?;
        exec(Command::new("ip").args(["link", "set", &host_if, "up"]))?;
        exec(Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]))?;
        for n in 2..=9 {
            exec(Command::new("ip").args([
                "-n",
                name,
                "addr",
                "add",
                &format!("198.18.{k}.{n}/24"),
                "dev",
                "eth0",
            ]))?;
        }
        exec(Command::new("ip").args(["-n", name, "link", "set", "eth0", "up"]))?;
        note(format!(
            "host 198.18.{k}.1 (hworld{k}) ↔ world 198.18.{k}.2-9 (eth0 in {name})"
        ));
        Ok(world)
    }

    /// The world's `n`th host address, 198.18.<k>.<n>.
    pub fn addr(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.k, n)
    }

    /// `program` run inside the world (`ip netns exec`, which execs it: same pid).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "del", &self.name]);
        show(&cmd);
        let _ = cmd.stdin(Stdio::null()).status();
    }
}

/// Creates the veth `hworld<k>` ↔ `eth0` (in the world) for the first `<k>` not taken.
fn claim(name: &str) -> Result<u8> {
    let start = std::process::id() % 256;
    for i in 0..256 {
        let k = ((start + i) % 256) as u8;
        let mut cmd = Command::new("ip");
        cmd.args(["link", "add", &format!("hworld{k}"), "type", "veth"])
            .args(["peer", "name", "eth0", "netns", name]);
        show(&cmd);
        let shown = display(&cmd);
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("could not start `{shown}`"))?;
        if out.status.success() {
            return Ok(k);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("File exists") {
            note(format!(
                "hworld{k} exists (another world has 198.18.{k}.0/24): next"
            ));
        } else {
            bail!("`{shown}` failed ({}): {}", out.status, stderr.trim());
        }
    }
    bail!("every subnet 198.18.0-255.0/24 is taken by another world (hworld0..255)")
}

/// Removes worlds (the demo's or the tests') whose process is gone.
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(NETNS_PREFIX)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || !Path::new(&format!("/proc/{pid}")).exists() {
            note(format!(
                "removing {name}, left behind by a process that is gone"
            ));
            let _ = exec(Command::new("ip").args(["netns", "del", &name]));
        }
    }
}
