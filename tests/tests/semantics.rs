//! What the agent did, end to end through the real proxy: a model call whose answer is a tool
//! call, the MCP `tools/call` that carries it (to a tool server running inside the enclosure,
//! on loopback), and the brokerage call that tool server made (to the world, like the model) —
//! recorded, annotated, and linked as one chain by `harness log --correlations`; exported as
//! HAR. The agent asks for gzip, as SDKs do, so the answers it gets (and harness records) are
//! gzip'd.
use harness_tests::peers::{Peer, TestCa};
use harness_tests::{dns_server, harness_bin, privileged, run_enclosed, temp_dir, world};
use std::process::Command;

#[test]
fn model_tool_call_mcp_call_and_brokerage_call_are_one_chain() {
    if !privileged("chain") {
        return;
    }
    if std::env::var("HARNESS_IN_VM").is_ok() {
        eprintln!("\n*** SKIPPED agent chain: needs the host's python3 and peers binary ***\n");
        return;
    }
    let dir = temp_dir("chain");
    // Sticky, as /tmp is: the enclosed user may leave files here, never replace the ledger.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let ca = TestCa::create(dir.join("test-ca")).unwrap();
    let provider = Peer::builder(&ca)
        .names(["api.anthropic.test"])
        .ip(world::addr(2))
        .spawn_in_thread()
        .unwrap();
    let dns = dns_server(world::addr(2)).to_string();
    let mcp_dir = dir.join("mcp-ca");
    std::fs::create_dir_all(&mcp_dir).unwrap();
    std::fs::set_permissions(
        &mcp_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let peers = harness_bin().with_file_name("peers");
    // The API key reaches the agent as real keys do (not on its command line), so it must
    // appear nowhere in what harness writes.
    let key_file = dir.join("api-key");
    std::fs::write(&key_file, "sk-test-5ecret").unwrap();
    let agent = format!(
        r#"
import gzip, json, os, subprocess, urllib.request
key = open("{key_file}").read().strip()
# The tool server runs inside the enclosure too, on the enclosure's loopback: its own calls
# (to the brokerage, in the world) go through harness.
mcp = subprocess.Popen(["{peers}", "--ca-dir", "{mcp_dir}", "--plaintext", "--listen", "127.0.0.3:0",
    "--broker-url", "https://api.anthropic.test:{port}", "--broker-addr", "{broker}",
    "--trust", os.environ["SSL_CERT_FILE"]], stdout=subprocess.PIPE)
mcp_addr = json.loads(mcp.stdout.readline())["peers"][0]["addr"]
# As the SDKs (httpx, fetch) do: ask for gzip, and undo it.
def post(url, body, headers):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={{"content-type": "application/json", "accept-encoding": "gzip, deflate", **headers}})
    with urllib.request.urlopen(req) as r:
        data = r.read()
        if r.headers.get("content-encoding") == "gzip":
            data = gzip.decompress(data)
        return r.headers, json.loads(data or b"null")
_, reply = post("https://api.anthropic.test:{port}/v1/messages",
    {{"model": "claude-test", "max_tokens": 100, "messages": [{{"role": "user", "content": "Buy 10 ACME"}}],
      "tools": [{{"name": "place_order", "input_schema": {{"type": "object"}}}}]}}, {{"x-api-key": key}})
call = [b for b in reply["content"] if b["type"] == "tool_use"][0]
mcp_url = f"http://{{mcp_addr}}/mcp"
h, _ = post(mcp_url, {{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {{"protocolVersion": "2025-03-26", "capabilities": {{}}, "clientInfo": {{"name": "t", "version": "1"}}}}}}, {{"accept": "application/json, text/event-stream"}})
sid = {{"mcp-session-id": h["mcp-session-id"], "accept": "application/json, text/event-stream"}}
post(mcp_url, {{"jsonrpc": "2.0", "method": "notifications/initialized"}}, sid)
_, result = post(mcp_url, {{"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {{"name": call["name"], "arguments": call["input"]}}}}, sid)
_, final = post("https://api.anthropic.test:{port}/v1/messages",
    {{"model": "claude-test", "max_tokens": 100, "messages": [{{"role": "user", "content": "Buy 10 ACME"}},
      {{"role": "assistant", "content": reply["content"]}},
      {{"role": "user", "content": [{{"type": "tool_result", "tool_use_id": call["id"], "content": json.dumps(result["result"]["content"])}}]}}]}}, {{"x-api-key": key}})
print(json.dumps({{"tool": call["name"], "final": [b.get("text") for b in final["content"]]}}))
mcp.terminate()
"#,
        peers = peers.display(),
        key_file = key_file.display(),
        mcp_dir = mcp_dir.display(),
        port = provider.addr().port(),
        broker = provider.addr(),
    );
    let ledger = dir.join("ledger");
    let run = run_enclosed(
        &ledger,
        &[
            "--upstream-ca",
            ca.cert_path().to_str().unwrap(),
            "--dns-upstream",
            &dns,
        ],
        &["/usr/bin/python3", "-c", &agent],
    );
    assert!(
        run.output.status.success(),
        "{}",
        String::from_utf8_lossy(&run.output.stderr)
    );
    assert!(!provider.orders().is_empty(), "the brokerage got no order");

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
    let chains: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let chain = chains
        .as_array()
        .and_then(|c| c.iter().find(|c| c["tool_use"]["name"] == "place_order"))
        .unwrap_or_else(|| panic!("no chain for place_order: {chains:#}"));
    assert!(!chain["mcp_call"].is_null(), "{chain:#}");
    assert_eq!(chain["mcp_call"]["name"], "place_order");
    let external = chain["mcp_call"]["external"]
        .as_array()
        .or_else(|| chain["external"].as_array())
        .expect("external calls");
    assert!(
        external
            .iter()
            .any(|e| e["method"] == "POST"
                && e["url"].as_str().unwrap_or("").ends_with("/v1/orders")),
        "{chain:#}"
    );
    assert_ne!(
        chain["mcp_call"]["pid"], external[0]["pid"],
        "the brokerage call comes from the tool server, not the agent"
    );
    assert!(
        !chain["result_seq"].is_null(),
        "the tool result went back to the model: {chain:#}"
    );

    let timeline = Command::new(harness_bin())
        .arg("log")
        .arg(&ledger)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&timeline.stdout);
    assert!(text.contains("place_order"), "{text}");
    assert!(
        !text.contains("sk-test"),
        "a secret in clear in the timeline"
    );

    let har = Command::new(harness_bin())
        .args(["export", "--format", "har"])
        .arg(&ledger)
        .output()
        .unwrap();
    assert!(
        har.status.success(),
        "{}",
        String::from_utf8_lossy(&har.stderr)
    );
    let har: serde_json::Value = serde_json::from_slice(&har.stdout).unwrap();
    let entries = har["log"]["entries"].as_array().unwrap();
    assert!(entries.len() >= 6, "{} HAR entries", entries.len());
    assert_eq!(har["log"]["version"], "1.2");
    // The model's answers came gzip'd (the agent asked, as SDKs do): HAR shows them decoded.
    let model = entries
        .iter()
        .find(|e| {
            e["request"]["url"]
                .as_str()
                .is_some_and(|u| u.ends_with("/v1/messages"))
        })
        .expect("a model call in the HAR");
    let content = &model["response"]["content"];
    assert!(
        model["response"]["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["name"] == "content-encoding" && h["value"] == "gzip"),
        "{model:#}"
    );
    let answer: serde_json::Value =
        serde_json::from_str(content["text"].as_str().unwrap_or("")).expect("decoded JSON");
    assert!(answer["content"].is_array(), "{model:#}");
    assert!(content["compression"].is_i64(), "{model:#}");
}

/// A shell tool call, as Claude Code's `Bash` makes one: the model asks for a command, the
/// agent runs it with `sh -c`, the command's `curl` calls an API, and the output goes back to
/// the model (followed, as Claude Code does, by a text block after the `tool_result`).
/// `harness log` ties them: the tool call → the `sh` and `curl` processes (argv, exit) → the
/// HTTPS exchange curl made → the model request that carried the result.
#[test]
fn a_shell_tool_call_is_tied_to_its_processes_and_their_calls() {
    use harness_tests::peers::{Reply, ToolCall};
    if !privileged("shell chain") {
        return;
    }
    if std::env::var("HARNESS_IN_VM").is_ok() {
        eprintln!("\n*** SKIPPED shell chain: needs the host's python3 and curl ***\n");
        return;
    }
    let dir = temp_dir("shell-chain");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let ca = TestCa::create(dir.join("test-ca")).unwrap();
    let provider = Peer::builder(&ca)
        .names(["api.anthropic.test"])
        .ip(world::addr(2))
        .spawn_in_thread()
        .unwrap();
    let port = provider.addr().port();
    // The brokerage wants a bearer token: the command carries a secret, which the process
    // record holds only as a fingerprint — and the tie to the tool call must still be made.
    let command = format!(
        "curl -sS --fail -H 'Authorization: Bearer tok-br0ker' https://api.anthropic.test:{port}/v1/quotes/ACME"
    );
    provider.set_reply(Reply {
        texts: vec!["I'll look up the quote.".into()],
        tool_calls: vec![ToolCall::new(
            "Bash",
            serde_json::json!({"command": command, "description": "Get the ACME quote"}),
        )],
        ..Reply::default()
    });
    let dns = dns_server(world::addr(2)).to_string();
    let agent = format!(
        r#"
import json, subprocess, urllib.request
def post(body):
    req = urllib.request.Request("https://api.anthropic.test:{port}/v1/messages", data=json.dumps(body).encode(),
        headers={{"content-type": "application/json", "x-api-key": "sk-test-shell"}})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())
ask = {{"model": "claude-test", "max_tokens": 100, "messages": [{{"role": "user", "content": "What does ACME cost?"}}],
       "tools": [{{"name": "Bash", "input_schema": {{"type": "object"}}}}]}}
reply = post(ask)
call = [b for b in reply["content"] if b["type"] == "tool_use"][0]
cmd = call["input"]["command"]
ran = subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, text=True)
ask["messages"] += [{{"role": "assistant", "content": reply["content"]}},
    {{"role": "user", "content": [{{"type": "tool_result", "tool_use_id": call["id"], "content": ran.stdout}},
                                {{"type": "text", "text": "<system-reminder>the tool ran</system-reminder>"}}]}}]
final = post(ask)
print(json.dumps({{"exit": ran.returncode, "out": ran.stdout, "final": [b.get("text") for b in final["content"]]}}))
"#
    );
    let ledger = dir.join("ledger");
    let run = run_enclosed(
        &ledger,
        &[
            "--upstream-ca",
            ca.cert_path().to_str().unwrap(),
            "--dns-upstream",
            &dns,
        ],
        &["/usr/bin/python3", "-c", &agent],
    );
    assert!(
        run.output.status.success(),
        "{}",
        String::from_utf8_lossy(&run.output.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&run.output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&run.output.stdout)));
    assert_eq!(
        printed["exit"], 0,
        "curl failed inside the enclosure: {printed}"
    );
    assert!(
        printed["out"].as_str().unwrap_or("").contains("ACME"),
        "{printed}"
    );

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
    let chains: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let chain = chains
        .as_array()
        .and_then(|c| c.iter().find(|c| c["tool_use"]["name"] == "Bash"))
        .unwrap_or_else(|| panic!("no chain for Bash: {chains:#}"));
    assert_eq!(chain["process_match"], "command", "{chain:#}");
    let processes = chain["processes"].as_array().expect("processes");
    let sh = processes
        .iter()
        .find(|p| {
            p["argv"][0] == "/bin/sh"
                && p["argv"][1] == "-c"
                && p["argv"][2].as_str().is_some_and(|a| {
                    a.starts_with("curl -sS --fail -H 'Authorization: hmac-sha256:")
                })
        })
        .unwrap_or_else(|| panic!("no sh -c process with the secret fingerprinted: {chain:#}"));
    assert!(!sh["argv"][2].as_str().unwrap().contains("tok-br0ker"));
    assert_eq!(sh["depth"], 0, "{chain:#}");
    assert_eq!(sh["exit"]["code"], 0, "{chain:#}");
    let curl = processes
        .iter()
        .find(|p| p["argv"][0] == "curl")
        .unwrap_or_else(|| panic!("no curl process: {chain:#}"));
    assert_eq!(curl["ppid"], sh["pid"], "curl is sh's child: {chain:#}");
    assert_eq!(curl["depth"], 1, "{chain:#}");
    assert_eq!(curl["exit"]["code"], 0, "{chain:#}");
    assert!(
        curl["path"].as_str().unwrap_or("").ends_with("/curl"),
        "{chain:#}"
    );
    let calls = curl["external"].as_array().expect("curl's exchanges");
    assert_eq!(calls.len(), 1, "{chain:#}");
    assert_eq!(calls[0]["method"], "GET");
    assert_eq!(calls[0]["status"], 200);
    assert_eq!(calls[0]["pid"], curl["pid"]);
    assert!(
        calls[0]["url"]
            .as_str()
            .unwrap_or("")
            .ends_with("/v1/quotes/ACME"),
        "{chain:#}"
    );
    assert!(
        !chain["result_seq"].is_null(),
        "the result went back to the model (a text block follows the tool_result): {chain:#}"
    );

    // The timeline reads in that order: the tool call, sh, curl beneath it, curl's request
    // beneath curl, then the model request carrying the result.
    let timeline = Command::new(harness_bin())
        .arg("log")
        .arg(&ledger)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&timeline.stdout);
    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in the timeline:\n{text}"))
    };
    let tool = at("tool call Bash");
    let sh_line = at(&format!("process {} /bin/sh -c curl", sh["pid"]));
    // The model's own tool input is a request body, recorded exactly; the process lines
    // show the secret only as its fingerprint.
    assert!(
        text.lines()
            .filter(|l| l.contains("process "))
            .all(|l| !l.contains("tok-br0ker")),
        "{text}"
    );
    let curl_line = at(&format!("process {} curl -sS", curl["pid"]));
    let request = at(&format!("pid {} → api.anthropic.test  GET", curl["pid"]));
    let result = text
        .rfind("tool result for")
        .expect("the tool result in the timeline");
    assert!(
        tool < sh_line && sh_line < curl_line && curl_line < request && request < result,
        "out of order:\n{text}"
    );
    assert!(text.contains("→ exit 0"), "{text}");
}
