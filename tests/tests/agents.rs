//! Real agent CLIs, enclosed: Claude Code (the npm package pinned in `tests/agents`, installed
//! by `cargo xtask setup`) runs non-interactively against the mock Anthropic provider in the
//! world. The model asks for one `Bash` tool call that runs `curl` against the world's
//! quotes API; Claude Code runs it, sends the result back, and prints the model's final text.
//! What a user of harness must then find in the ledger: the model's tool call, the shell
//! Claude Code started for it, the `curl` under that shell with its connection and exchange,
//! the result going back to the model, and no credential in clear anywhere.
//!
//! Everything Claude Code reaches is in the world or on loopback: the policy allows the two
//! test hosts and denies every other destination, and DNS questions go to the test's own
//! resolver, which knows only the test hosts.
use harness::ledger::Entry;
use harness_tests::peers::{Peer, Reply, TestCa, ToolCall};
use harness_tests::{
    dns_server_for, harness_bin, privileged, run_enclosed_command, temp_dir, world, Recorded,
};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The model provider's name (ANTHROPIC_BASE_URL) and the quotes API's.
const PROVIDER: &str = "api.anthropic.test";
const QUOTES: &str = "quotes.broker.test";
/// Credentials: the provider's key reaches Claude Code in its environment, as a user's does;
/// the quotes API's token too, and the shell command names it (`$BROKER_TOKEN`), so it is in
/// clear only in the environment and then in `curl`'s arguments and request.
const API_KEY: &str = "sk-ant-test-claude-code-3f9a1c7e5b";
const BROKER_TOKEN: &str = "brk-test-71d0c4e2a95f";
/// What the mock model says once the tool result came back.
const FINAL_TEXT: &str = "ACME is quoted in USD; the quotes API answered.";

/// Claude Code: `HARNESS_CLAUDE_CODE` (set by `cargo xtask test`), else where `cargo xtask
/// setup` installs it; `None` after saying loudly why the test is skipped.
fn claude_code(test: &str) -> Option<PathBuf> {
    if std::env::var_os("HARNESS_IN_VM").is_some() {
        eprintln!("\n*** SKIPPED {test}: Claude Code (a 370 MB glibc binary from npm) is not in the VM image; it runs in the host run of these tests ***\n");
        return None;
    }
    if let Some(path) = std::env::var_os("HARNESS_CLAUDE_CODE").map(PathBuf::from) {
        assert!(
            path.exists(),
            "HARNESS_CLAUDE_CODE={}: no such file; `cargo xtask setup` installs it",
            path.display()
        );
        return Some(path);
    }
    let default = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("agents/node_modules/@anthropic-ai/claude-code-linux-x64/claude");
    if default.exists() {
        return Some(default);
    }
    eprintln!(
        "\n*** SKIPPED {test}: Claude Code is not installed ({} missing); run `cargo xtask setup` (npm ci in tests/agents) or set HARNESS_CLAUDE_CODE ***\n",
        default.display()
    );
    None
}

/// `binary` at a path a user other than root can execute: itself when every directory above
/// it is open to all, else a link (or copy) in `dir`.
fn reachable(binary: &Path, dir: &Path) -> PathBuf {
    let open = binary.ancestors().skip(1).all(|d| {
        d.metadata()
            .is_ok_and(|m| m.permissions().mode() & 0o001 != 0)
    });
    if open {
        return binary.to_path_buf();
    }
    let here = dir.join("claude");
    if std::fs::hard_link(binary, &here).is_err() {
        std::fs::copy(binary, &here).unwrap();
    }
    std::fs::set_permissions(&here, std::fs::Permissions::from_mode(0o755)).unwrap();
    here
}

/// A uid the user database does not know (so harness gives the command no HOME of its own and
/// the test's stands), from 64123 up.
fn unnamed_uid() -> u32 {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let known: Vec<u32> = passwd
        .lines()
        .filter_map(|l| l.split(':').nth(2)?.parse().ok())
        .collect();
    (64123..65000).find(|u| !known.contains(u)).unwrap()
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
}

/// The entry at `seq`.
fn at(entries: &[Recorded], seq: u64) -> &Entry {
    &entries
        .iter()
        .find(|r| r.seq == seq)
        .unwrap_or_else(|| panic!("no entry {seq}"))
        .entry
}

/// The exchange `(conn, exchange)` of the HTTP entry at `seq` (annotations name the response
/// head of the exchange they describe).
fn exchange_of(entries: &[Recorded], seq: u64) -> (u64, u64) {
    match at(entries, seq) {
        Entry::HttpRequest(h) => (h.conn, h.exchange),
        Entry::HttpResponse(h) => (h.conn, h.exchange),
        Entry::HttpRequestBody(b) | Entry::HttpResponseBody(b) => (b.conn, b.exchange),
        other => panic!("entry {seq} is not HTTP: {other:?}"),
    }
}

/// The seq of the last entry of the exchange `x` that `pick` selects.
fn last_of(entries: &[Recorded], x: (u64, u64), pick: fn(&Entry) -> Option<(u64, u64)>) -> u64 {
    entries
        .iter()
        .filter(|r| pick(&r.entry) == Some(x))
        .map(|r| r.seq)
        .max()
        .unwrap_or_else(|| panic!("no such entry of exchange {x:?}"))
}

/// `(seq of the entry annotated, what it says)` for every annotation on `topic`.
fn annotations<'a>(entries: &'a [Recorded], topic: &str) -> Vec<(u64, &'a Value)> {
    entries
        .iter()
        .filter_map(|r| match &r.entry {
            Entry::Annotation(a) if a.topic == topic => Some((a.of_seq, &a.data)),
            _ => None,
        })
        .collect()
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn claude_code_runs_a_shell_tool_whose_curl_is_recorded_under_it() {
    if !privileged("claude-code") {
        return;
    }
    let Some(claude) = claude_code("claude-code") else {
        return;
    };
    let dir = temp_dir("claude-code");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let claude = reachable(&claude, &dir);
    let uid = unnamed_uid();
    let home = dir.join("home");
    let work = dir.join("work");
    for d in [&home, &work] {
        std::fs::create_dir(d).unwrap();
        chown(d, uid);
    }

    let ca = TestCa::create(dir.join("test-ca")).unwrap();
    let quotes = Peer::builder(&ca)
        .names([QUOTES])
        .ip(world::addr(3))
        .spawn_in_thread()
        .unwrap();
    let url = format!("https://{QUOTES}:{}/v1/quotes/ACME", quotes.addr().port());
    let command = format!("curl -s -H \"Authorization: Bearer $BROKER_TOKEN\" {url}");
    let provider = Peer::builder(&ca)
        .names([PROVIDER])
        .ip(world::addr(2))
        .reply(Reply {
            texts: vec!["I'll look the quote up.".into()],
            tool_calls: vec![ToolCall {
                id: Some("toolu_01CurlQuoteAcme".into()),
                name: "Bash".into(),
                input: json!({"command": command, "description": "Fetch the ACME quote"}),
            }],
            ..Reply::default()
        })
        .reply_after_tool(Reply::text(FINAL_TEXT))
        .spawn_in_thread()
        .unwrap();
    let dns = dns_server_for(&[(PROVIDER, world::addr(2)), (QUOTES, world::addr(3))]);
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "default = \"deny\"\n\
             [[rule]]\naction = \"allow\"\nhost = \"{PROVIDER}\"\n\
             [[rule]]\naction = \"allow\"\nhost = \"{QUOTES}\"\n"
        ),
    )
    .unwrap();

    // harness run's own environment, and so Claude Code's: nothing of the test's but what a
    // user would set. Claude Code's non-essential traffic (telemetry, error reports, update
    // checks) is switched off as a careful user would; whatever it still tries is refused by
    // the policy and recorded.
    let mut cmd = Command::new("/usr/bin/timeout");
    // A bound on a hang, not a time limit: a passing run takes a few seconds.
    cmd.args(["-k", "10", "300"])
        .arg(harness_bin())
        .current_dir(&work)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", &home)
        .env("LANG", "C.UTF-8")
        .env(
            "ANTHROPIC_BASE_URL",
            format!("https://{PROVIDER}:{}", provider.addr().port()),
        )
        .env("ANTHROPIC_API_KEY", API_KEY)
        .env("BROKER_TOKEN", BROKER_TOKEN)
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
        .env("DISABLE_AUTOUPDATER", "1");
    let ledger = dir.join("ledger");
    let uid_arg = uid.to_string();
    let dns_arg = dns.to_string();
    let prompt = "What is ACME trading at? Ask the quotes API with curl.";
    let run = run_enclosed_command(
        cmd,
        &ledger,
        &[
            "--user",
            &uid_arg,
            "--policy",
            policy.to_str().unwrap(),
            "--dns-upstream",
            &dns_arg,
            "--upstream-ca",
            ca.cert_path().to_str().unwrap(),
        ],
        &[
            claude.to_str().unwrap(),
            "-p",
            prompt,
            "--allowedTools",
            "Bash",
        ],
    );
    let stdout = String::from_utf8_lossy(&run.output.stdout);
    let stderr = String::from_utf8_lossy(&run.output.stderr);
    assert!(
        run.output.status.success(),
        "claude -p failed ({:?})\nstdout: {stdout}\nstderr: {stderr}",
        run.output.status
    );
    assert_eq!(stdout.trim(), FINAL_TEXT, "stderr: {stderr}");
    let entries = &run.entries;

    // The model's answer: a Bash tool call with the command as the mock sent it.
    let (response_seq, response) = annotations(entries, "llm_response")
        .into_iter()
        .find(|(_, r)| !r["tool_calls"].as_array().is_none_or(Vec::is_empty))
        .unwrap_or_else(|| panic!("no llm_response with a tool call: {entries:#?}"));
    let call = &response["tool_calls"][0];
    assert_eq!(call["name"], "Bash", "{response:#}");
    assert_eq!(call["id"], "toolu_01CurlQuoteAcme", "{response:#}");
    assert_eq!(call["input"]["command"], command.as_str(), "{response:#}");

    // The processes. Claude Code runs each Bash command in a login shell of its own; the
    // exact wrapping is Claude Code's business, so the test asks only that some program it
    // started carries the command (the header's value fingerprinted, as harness does for any
    // `Authorization:` in a command line), and that `curl` ran with the URL.
    let execs: Vec<(u64, &harness::ledger::ProcessExec)> = entries
        .iter()
        .filter_map(|r| match &r.entry {
            Entry::ProcessExec(p) => Some((r.seq, p)),
            _ => None,
        })
        .collect();
    let shown = || {
        execs
            .iter()
            .map(|(_, p)| format!("{} ({} ← {}) {:?}", p.path, p.pid, p.ppid, p.argv))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let (before_header, after_header) = command
        .split_once("Bearer $BROKER_TOKEN")
        .expect("the command names the token");
    let shell = execs
        .iter()
        .find(|(_, p)| {
            p.argv.iter().any(|a| {
                a.contains(&format!("{before_header}hmac-sha256:")) && a.contains(after_header)
            })
        })
        .unwrap_or_else(|| panic!("no process ran the tool's command:\n{}", shown()));
    let (curl_seq, curl) = execs
        .iter()
        .find(|(_, p)| p.path.ends_with("/curl") && p.argv.iter().any(|a| a == &url))
        .unwrap_or_else(|| panic!("no curl of {url}:\n{}", shown()));
    // What the model said reached Claude Code only once durable: curl started after the
    // last piece of that answer was recorded.
    let answer_end = last_of(entries, exchange_of(entries, response_seq), |e| match e {
        Entry::StreamChunk(c) => Some((c.conn, c.exchange)),
        _ => None,
    });
    assert!(
        *curl_seq > answer_end,
        "curl ({curl_seq}) ran before the answer asking for it was recorded ({answer_end})"
    );
    assert_eq!(curl.uid, uid, "curl ran as the enclosed user");
    // curl descends from the shell (directly, or through the shell's own children).
    let parent_of = |pid: u32| {
        execs
            .iter()
            .rev()
            .find(|(_, p)| p.pid == pid)
            .map(|(_, p)| p.ppid)
            .or_else(|| {
                entries.iter().find_map(|r| match &r.entry {
                    Entry::ProcessFork(f) if f.pid == pid => Some(f.ppid),
                    _ => None,
                })
            })
    };
    let mut ancestor = Some(curl.pid);
    let mut hops = 0;
    while ancestor.is_some_and(|a| a != shell.1.pid) && hops < 16 {
        ancestor = ancestor.and_then(parent_of);
        hops += 1;
    }
    assert_eq!(
        ancestor,
        Some(shell.1.pid),
        "curl ({}) is not under the shell ({}):\n{}",
        curl.pid,
        shell.1.pid,
        shown()
    );
    let curl_header = curl
        .argv
        .iter()
        .find(|a| a.starts_with("Authorization: "))
        .unwrap_or_else(|| panic!("curl's header argument: {:?}", curl.argv));
    let argv_fingerprint = curl_header
        .strip_prefix("Authorization: ")
        .filter(|f| f.starts_with("hmac-sha256:"))
        .unwrap_or_else(|| panic!("the token in curl's argv is not fingerprinted: {curl_header}"));
    let exit = entries
        .iter()
        .find_map(|r| match &r.entry {
            Entry::ProcessExit(e) if e.pid == curl.pid => Some(e),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no process_exit of curl ({})", curl.pid));
    assert_eq!(
        (exit.code, exit.signal),
        (Some(0), None),
        "curl's exit: {exit:?}"
    );
    let exit_seq = entries
        .iter()
        .find(|r| matches!(&r.entry, Entry::ProcessExit(e) if e.pid == curl.pid))
        .map(|r| r.seq)
        .unwrap();

    // curl's own connection to the quotes API, and its exchange.
    let conn = entries
        .iter()
        .find_map(|r| match &r.entry {
            Entry::ConnOpen(c) if c.caller.pid == curl.pid => Some(c),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no conn_open by curl ({})", curl.pid));
    assert_eq!(conn.dst, quotes.addr(), "{conn:?}");
    let (request_seq, request) = entries
        .iter()
        .find_map(|r| match &r.entry {
            Entry::HttpRequest(h) if h.conn == conn.conn => Some((r.seq, h)),
            _ => None,
        })
        .expect("curl's request head");
    assert_eq!(request.method, "GET");
    assert_eq!(request.target, "/v1/quotes/ACME");
    let auth = request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("authorization"))
        .expect("curl sent the token");
    assert_eq!(auth.value, None, "the token in clear in a request head");
    assert_eq!(
        auth.fingerprint.as_deref(),
        Some(argv_fingerprint),
        "the same secret has the same fingerprint in argv and in the header"
    );
    let status = entries.iter().find_map(|r| match &r.entry {
        Entry::HttpResponse(h) if h.conn == conn.conn => Some(h.status),
        _ => None,
    });
    assert_eq!(status, Some(200), "the quotes API's answer to curl");
    let api_body = entries
        .iter()
        .find_map(|r| match &r.entry {
            Entry::HttpResponseBody(b) if b.conn == conn.conn => Some(&b.body),
            _ => None,
        })
        .expect("the quotes API's body");
    let api_body = match api_body {
        harness::ledger::Body::Utf8 { text, .. } => text.clone(),
        other => panic!("the quotes API's JSON recorded as {other:?}"),
    };
    let quote: Value = serde_json::from_str(&api_body).unwrap();
    assert_eq!(quote["symbol"], "ACME", "{api_body}");

    // The next model request carries the tool result: the API's body, as curl printed it.
    let (result_seq, result) = annotations(entries, "llm_request")
        .into_iter()
        .filter(|(seq, _)| *seq > response_seq)
        .find_map(|(seq, r)| {
            r["messages"]
                .as_array()?
                .iter()
                .flat_map(|m| m["content"].as_array().into_iter().flatten())
                .find(|b| b["type"] == "tool_result" && b["tool_use_id"] == "toolu_01CurlQuoteAcme")
                .map(|b| (seq, b.clone()))
        })
        .unwrap_or_else(|| panic!("no llm_request after the tool call carries its result"));
    let content = match &result["content"] {
        Value::String(s) => s.clone(),
        blocks => blocks
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b["text"].as_str())
            .collect(),
    };
    assert_eq!(content.trim(), api_body.trim(), "{result:#}");
    assert_eq!(result["is_error"], false, "{result:#}");
    let result_head = last_of(entries, exchange_of(entries, result_seq), |e| match e {
        Entry::HttpRequest(h) => Some((h.conn, h.exchange)),
        _ => None,
    });
    assert!(
        result_head > *curl_seq,
        "the result went to the model after curl ran"
    );
    // Nothing but the two test hosts was reached; anything else Claude Code tried was refused.
    for r in entries {
        if let Entry::ConnOpen(c) = &r.entry {
            assert!(
                c.dst == quotes.addr() || c.dst == provider.addr(),
                "a connection to {} was let through: {c:?}",
                c.dst
            );
        }
    }
    // Every model call went to the mock and was annotated.
    let requests = annotations(entries, "llm_request");
    assert!(requests.len() >= 2, "{} model requests", requests.len());
    for (_, r) in &requests {
        assert_eq!(r["provider"], "anthropic");
        assert!(
            r["tools"]
                .as_array()
                .is_some_and(|t| t.contains(&json!("Bash"))),
            "Claude Code offers Bash: {}",
            r["tools"]
        );
    }

    // No credential in clear anywhere harness wrote.
    for file in files(&ledger) {
        let bytes = std::fs::read(&file).unwrap();
        for secret in [API_KEY, BROKER_TOKEN] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} in clear in {}",
                file.display()
            );
        }
    }

    // The chain: the Bash call, and its result going back to the model.
    let out = Command::new(harness_bin())
        .args(["log", "--correlations"])
        .arg(&ledger)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let chains: Value = serde_json::from_slice(&out.stdout).unwrap();
    let chain = chains
        .as_array()
        .and_then(|c| c.iter().find(|c| c["tool_use"]["name"] == "Bash"))
        .unwrap_or_else(|| panic!("no chain for the Bash call: {chains:#}"));
    assert_eq!(chain["result_seq"], result_head, "{chain:#}");
    // The processes beneath the call: found by the command in the shell's argv (inside Claude
    // Code's `eval '…'`, its secret-looking header made alike by fingerprinting), the shell at
    // the top, curl its child, curl's exchange beneath curl.
    assert_eq!(chain["process_match"], "command", "{chain:#}");
    let processes = chain["processes"].as_array().expect("processes");
    let process = |pid: u32| {
        processes
            .iter()
            .find(|p| p["pid"] == pid)
            .unwrap_or_else(|| panic!("process {pid} not under the Bash call: {chain:#}"))
    };
    let top = process(shell.1.pid);
    assert_eq!(top["depth"], 0, "{chain:#}");
    assert_eq!(top["exec_seq"], shell.0, "{chain:#}");
    assert_eq!(top["exit"]["code"], 0, "{chain:#}");
    assert!(
        top["external"].as_array().is_some_and(Vec::is_empty),
        "{chain:#}"
    );
    let nested = process(curl.pid);
    assert_eq!(nested["ppid"], shell.1.pid, "{chain:#}");
    assert_eq!(nested["depth"], 1, "{chain:#}");
    assert_eq!(nested["exec_seq"], *curl_seq, "{chain:#}");
    assert_eq!(nested["path"], curl.path.as_str(), "{chain:#}");
    assert_eq!(nested["argv"], json!(curl.argv), "{chain:#}");
    assert_eq!(
        nested["exit"],
        json!({"code": 0, "signal": null, "seq": exit_seq}),
        "{chain:#}"
    );
    assert_eq!(
        nested["external"],
        json!([{"seq": request_seq, "method": "GET", "url": url, "status": 200,
                "pid": curl.pid, "ambiguous": false}]),
        "{chain:#}"
    );
    // Claude Code's own shells outside the call (its environment probe and shell snapshot,
    // run before the model answered) are not the call's.
    for p in processes {
        let seq = p["exec_seq"].as_u64().unwrap_or(0);
        assert!(seq > answer_end, "a process from before the call: {p:#}");
    }

    // The timeline a person reads: the prompt, the tool call, the shell, curl beneath it,
    // curl's exchange beneath curl, then the result going back and the final answer.
    let log = Command::new(harness_bin())
        .arg("log")
        .arg(&ledger)
        .output()
        .unwrap();
    assert!(
        log.status.success(),
        "{}",
        String::from_utf8_lossy(&log.stderr)
    );
    let text = String::from_utf8_lossy(&log.stdout);
    let find = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in the timeline:\n{text}"))
    };
    let order = [
        find(&format!("user: {prompt}")),
        find("tool call Bash {"),
        find(&format!("process {} /bin/bash -c source ", shell.1.pid)),
        find(&format!(
            "process {} curl -s -H Authorization: hmac-sha256:",
            curl.pid
        )),
        find(&format!("pid {} → {QUOTES}  GET {url} → 200", curl.pid)),
        find("tool result for toolu_01CurlQuoteAcme: {"),
        find(&format!("text: {FINAL_TEXT}")),
    ];
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "out of order:\n{text}"
    );

    let verify = Command::new(harness_bin())
        .arg("verify")
        .arg(&ledger)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "harness verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}
