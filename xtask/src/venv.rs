//! The project's Python virtualenv, `target/python-venv`: the demo's agent runs in it (the
//! official Anthropic SDK), the governance tests drive MCP with the official MCP SDK (`mcp`), and the interception tests use its `requests` and `httpx`, which —
//! unlike Debian's packages — read certifi's own copy of the roots unless told otherwise, as
//! they do on most agents' machines. Created on first use with pip from PyPI; quick after.
use crate::util::{exec, note, step, target_dir};
use anyhow::{Context as _, Result};
use std::path::PathBuf;
use std::process::Command;

/// What the virtualenv must provide (import names and pip names are the same).
const PACKAGES: &[&str] = &["anthropic", "httpx", "requests", "certifi", "mcp"];

/// Versions pinned where an API the tests use changed between releases: the MCP SDK's 2.x
/// replaced the 1.x client (`streamablehttp_client`, `McpError`) the governance tests drive.
const PINNED: &[(&str, &str)] = &[("mcp", "1.30.0")];

/// The virtualenv, created or completed when a package is missing.
pub fn ensure() -> Result<PathBuf> {
    let venv = target_dir()?.join("python-venv");
    let python = venv.join("bin/python");
    let pins: Vec<String> = PINNED
        .iter()
        .map(|(name, version)| format!("assert m.version({name:?}) == {version:?}"))
        .collect();
    let import = format!(
        "import {}; import importlib.metadata as m; {}",
        PACKAGES.join(", "),
        pins.join("; ")
    );
    if crate::util::succeeds(Command::new(&python).args(["-c", &import])) {
        note(format!(
            "virtualenv {}: {} present",
            venv.display(),
            PACKAGES.join(", ")
        ));
        return Ok(venv);
    }
    step(format!(
        "creating the virtualenv {} with {} (from PyPI)",
        venv.display(),
        PACKAGES.join(", ")
    ));
    if !python.exists() {
        exec(
            Command::new("/usr/bin/python3")
                .args(["-m", "venv"])
                .arg(&venv),
        )
        .context("creating the virtualenv (python3-venv is installed by `cargo xtask setup`)")?;
    }
    exec(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(PACKAGES.iter().map(
                |name| match PINNED.iter().find(|(pinned, _)| pinned == name) {
                    Some((_, version)) => format!("{name}=={version}"),
                    None => (*name).to_owned(),
                },
            )),
    )?;
    Ok(venv)
}
