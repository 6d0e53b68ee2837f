//! The real agent CLIs the privileged tests enclose (`tests/tests/agents.rs`), pinned in
//! `tests/agents/package.json` and `package-lock.json` and installed from the npm registry
//! alone into `tests/agents/node_modules` by `npm ci --ignore-scripts`.
//!
//! Claude Code ships as a native (Bun) binary in one optional-dependency package per platform
//! (`@anthropic-ai/claude-code-linux-x64`, …); npm installs the one that fits this machine. Its
//! wrapper's postinstall only copies that binary over a placeholder, so no install script
//! runs: the tests execute the platform package's binary itself ([`claude_code`]).
use crate::util::{exec, note, step, which, workspace_root};
use anyhow::{bail, Context as _, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian packages that bring node and npm to a machine that has neither.
const NODE_PACKAGES: &[&str] = &["nodejs", "npm"];

/// The directory of the pinned agents.
pub fn dir() -> PathBuf {
    workspace_root().join("tests/agents")
}

/// The Claude Code binary `npm ci` installs for this machine (linux-x64 with glibc).
pub fn claude_code() -> PathBuf {
    dir().join("node_modules/@anthropic-ai/claude-code-linux-x64/claude")
}

/// The version `package.json` pins for `package` (an exact version, nothing else).
fn pinned(package: &str) -> Result<String> {
    let path = dir().join("package.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    let manifest: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let version = manifest["dependencies"][package]
        .as_str()
        .with_context(|| format!("{}: no dependency {package}", path.display()))?;
    if !version.chars().all(|c| c.is_ascii_digit() || c == '.') {
        bail!(
            "{}: {package} is pinned as {version:?}; pin an exact version",
            path.display()
        );
    }
    Ok(version.to_owned())
}

/// The version of the package installed at `dir`, if any.
fn installed(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("package.json")).ok()?;
    let manifest: serde_json::Value = serde_json::from_str(&text).ok()?;
    manifest["version"].as_str().map(str::to_owned)
}

/// Whether the pinned agents are installed; installs them (and node and npm from Debian, when
/// missing) unless `check`. Returns what is missing when `check` finds something missing.
pub fn ensure(check: bool) -> Result<Option<String>> {
    let want = pinned("@anthropic-ai/claude-code")?;
    let binary = claude_code();
    let platform = binary.parent().expect("the binary lives in its package");
    let have = installed(platform);
    if have.as_deref() == Some(want.as_str()) && binary.exists() {
        note(format!("Claude Code {want} (npm): present"));
        return Ok(None);
    }
    note(match &have {
        Some(v) => format!("Claude Code {v} found; need {want}"),
        None => format!("Claude Code {want} (npm): missing"),
    });
    if check {
        return Ok(Some(format!("Claude Code {want} (npm ci in tests/agents)")));
    }
    if which("npm").is_none() {
        if !crate::util::is_root() {
            bail!("npm is missing: run `cargo xtask setup` as root to install nodejs and npm");
        }
        step(format!("setup: installing {}", NODE_PACKAGES.join(" ")));
        exec(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .arg("update"),
        )?;
        exec(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "--no-install-recommends"])
                .args(NODE_PACKAGES),
        )?;
    }
    step(format!(
        "setup: installing Claude Code {want} from the npm registry (npm ci in {})",
        dir().display()
    ));
    exec(
        Command::new("npm")
            .current_dir(dir())
            .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
            .args(["--loglevel", "error"]),
    )?;
    if installed(platform).as_deref() != Some(want.as_str()) || !binary.exists() {
        bail!(
            "npm ci in {} did not install {} (is this machine linux-x64 with glibc?)",
            dir().display(),
            binary.display()
        );
    }
    Ok(None)
}
