//! Governance end to end, through the real enclosure: an agent built on the official SDKs (the
//! Anthropic SDK for the model, the MCP SDK for tools) asks the mock model, which asks for
//! `place_order`; the MCP server (started by the agent, inside the enclosure) would call the
//! brokerage. The policy's request rules decide before anything goes upstream:
//!
//! - a tool rule refuses an order over the limit — the brokerage never sees it, the agent's SDK
//!   raises the JSON-RPC error, the ledger names the rule and the value — and lets a small one
//!   through, whether the MCP server answers in JSON or as an event stream;
//! - what an agent would send to slip past a rule (a batch hiding the call, duplicate members,
//!   a quoted number, a gzip'd body, path tricks) is refused all the same;
//! - a dollar budget stops a looping agent, with the running total on the record;
//! - an `ask` rule holds a request until a second process decides it (`harness decide`), once
//!   allowing and once denying, and the ledger says who decided and why.
use harness::ledger::{Entry, Recorded};
use harness_tests::peers::{BlockingPeer, Peer, TestCa};
use harness_tests::{
    dns_server, harness_bin, privileged, python_venv, run_enclosed, temp_dir, world, Enclosed,
};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Everything a governance test's agent meets: the model and the brokerage (one mock peer in
/// the world, as `api.anthropic.test`), the MCP server binary it starts inside the enclosure,
/// and the virtualenv with the SDKs.
struct Scene {
    dir: PathBuf,
    ca: TestCa,
    provider: BlockingPeer,
    dns: String,
    venv: PathBuf,
}

fn scene(test: &str) -> Option<Scene> {
    if !privileged(test) {
        return None;
    }
    let dir = temp_dir(test);
    // Sticky, as /tmp is: the enclosed user may leave files here, never replace the ledger.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let venv = python_venv(test, &dir)?;
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
    std::fs::write(dir.join("api-key"), "sk-test-5ecret").unwrap();
    Some(Scene {
        dir,
        ca,
        provider,
        dns,
        venv,
    })
}

/// What every agent script starts with: the MCP server started inside the enclosure (on its
/// loopback, so its own brokerage calls go through harness too), `model` (the Anthropic SDK
/// client), `ask_model(qty)` (the model asks for `place_order` with that qty), `post` (a raw
/// HTTP POST, for what SDKs would not send) and `mcp_url`.
const PRELUDE: &str = r#"
import asyncio, gzip, json, os, subprocess, sys, urllib.request, urllib.error
import anthropic
key = open("@DIR@/api-key").read().strip()
mcp = subprocess.Popen(["@PEERS@", "--ca-dir", "@DIR@/mcp-ca", "--plaintext", "--listen", "127.0.0.3:0",
    "--broker-url", "https://api.anthropic.test:@PORT@", "--broker-addr", "@BROKER@",
    "--trust", os.environ["SSL_CERT_FILE"]], stdout=subprocess.PIPE)
mcp_addr = json.loads(mcp.stdout.readline())["peers"][0]["addr"]
mcp_url = f"http://{mcp_addr}/mcp"
model = anthropic.Anthropic(api_key=key, base_url="https://api.anthropic.test:@PORT@", max_retries=0)
TOOLS = [{"name": "place_order", "description": "Place an order", "input_schema": {"type": "object"}}]

def ask_model(qty, **reply):
    reply = {"tool_calls": [{"name": "place_order", "input": {"symbol": "ACME", "qty": qty, "side": "buy"}}], **reply}
    msg = model.messages.create(model="claude-test", max_tokens=100, tools=TOOLS,
        messages=[{"role": "user", "content": f"Buy {qty} ACME"}],
        extra_headers={"x-peer-reply": json.dumps(reply)})
    return next(b for b in msg.content if b.type == "tool_use")

def post(url, body, headers=None, raw=None, method="POST"):
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
        headers={"content-type": "application/json", "accept": "application/json, text/event-stream", **(headers or {})})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()

def mcp_session():
    _, h, _ = post(mcp_url, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    sid = {"mcp-session-id": h.get("mcp-session-id") or h.get("Mcp-Session-Id")}
    post(mcp_url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, sid)
    return sid

def tools_call(id, qty):
    return {"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "place_order", "arguments": {"symbol": "ACME", "qty": qty, "side": "buy"}}}
"#;

const ORDER_LIMIT: &str = r#"
default = "allow"

[[tool]]
action = "deny"
name = "place_order"
args = { "/qty" = { gt = 100 } }
"#;

impl Scene {
    /// Runs `script` (after [`PRELUDE`]) enclosed under `policy`; its stdout's first line is
    /// JSON.
    fn run(&self, policy: &str, script: &str) -> (Value, Enclosed) {
        let policy_file = self.dir.join("policy.toml");
        std::fs::write(&policy_file, policy).unwrap();
        let peers = harness_bin().with_file_name("peers");
        let script = PRELUDE
            .replace("@DIR@", self.dir.to_str().unwrap())
            .replace("@PEERS@", peers.to_str().unwrap())
            .replace("@PORT@", &self.provider.addr().port().to_string())
            .replace("@BROKER@", &self.provider.addr().to_string())
            + script
            + "\nmcp.terminate()\n";
        let python = self.venv.join("bin/python");
        let run = run_enclosed(
            &self.ledger(),
            &[
                "--policy",
                policy_file.to_str().unwrap(),
                "--upstream-ca",
                self.ca.cert_path().to_str().unwrap(),
                "--dns-upstream",
                &self.dns,
            ],
            &[python.to_str().unwrap(), "-c", &script],
        );
        let stderr = String::from_utf8_lossy(&run.output.stderr);
        assert!(run.output.status.success(), "the agent failed: {stderr}");
        let out = String::from_utf8_lossy(&run.output.stdout);
        let line = out
            .lines()
            .find(|l| l.starts_with('{') || l.starts_with('['))
            .unwrap_or_else(|| panic!("the agent printed no JSON: {out}\n{stderr}"));
        let result = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        verify(&self.ledger());
        (result, run)
    }

    fn ledger(&self) -> PathBuf {
        self.dir.join("ledger")
    }
}

fn verify(ledger: &Path) {
    let out = Command::new(harness_bin())
        .arg("verify")
        .arg(ledger)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "harness verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn decisions(entries: &[Recorded]) -> Vec<(u64, harness::ledger::RequestDecision)> {
    entries
        .iter()
        .filter_map(|r| match &r.entry {
            Entry::RequestDecision(d) => Some((r.seq, d.clone())),
            _ => None,
        })
        .collect()
}

/// The response recorded for exchange (`conn`, `exchange`), and its seq.
fn response_of(
    entries: &[Recorded],
    conn: u64,
    exchange: u64,
) -> (u64, harness::ledger::HttpResponse) {
    entries
        .iter()
        .find_map(|r| match &r.entry {
            Entry::HttpResponse(h) if h.conn == conn && h.exchange == exchange => {
                Some((r.seq, h.clone()))
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no http_response for conn {conn} exchange {exchange}"))
}

fn orders(provider: &BlockingPeer) -> Vec<u64> {
    provider
        .orders()
        .iter()
        .filter_map(|o| o["qty"].as_u64())
        .collect()
}

#[test]
fn a_tool_rule_refuses_an_order_the_model_asked_for_and_lets_a_small_one_through() {
    let Some(scene) = scene("governance-tool") else {
        return;
    };
    // The MCP SDK, against the server answering in JSON and then as an event stream.
    let script = r#"
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.exceptions import McpError
async def main():
    out = []
    for mode in ("", "?sse=1"):
        async with streamablehttp_client(mcp_url + mode) as (r, w, _):
            async with ClientSession(r, w) as s:
                await s.initialize()
                for qty in (500, 5):
                    call = ask_model(qty)
                    try:
                        res = await s.call_tool(call.name, call.input)
                        out.append({"mode": mode, "qty": qty, "ok": not res.isError, "text": [c.text for c in res.content if c.type == "text"]})
                    except McpError as e:
                        out.append({"mode": mode, "qty": qty, "code": e.error.code, "message": e.error.message})
    print(json.dumps(out), flush=True)
asyncio.run(main())
"#;
    let (out, run) = scene.run(ORDER_LIMIT, script);
    let out = out.as_array().expect("a list");
    assert_eq!(out.len(), 4, "{out:#?}");
    for o in out {
        if o["qty"] == 500 {
            assert_eq!(o["code"], -32003, "the SDK raised harness's error: {o}");
            let message = o["message"].as_str().unwrap();
            assert!(
                message.contains("tool[1]") && message.contains("/qty = 500"),
                "the error names the rule and the value: {message}"
            );
        } else {
            assert_eq!(o["ok"], true, "qty 5 went through: {o}");
            assert!(o["text"][0].as_str().unwrap().contains("Order"), "{o}");
        }
    }
    assert_eq!(
        orders(&scene.provider),
        [5, 5],
        "the brokerage got only the small orders"
    );
    let denied = decisions(&run.entries);
    assert_eq!(
        denied.len(),
        2,
        "one decision per refused call: {denied:#?}"
    );
    for (seq, d) in &denied {
        assert_eq!((d.action.as_str(), d.rule.as_str()), ("deny", "tool[1]"));
        assert_eq!(d.tool.as_deref(), Some("place_order"));
        assert_eq!(d.matched.get("/qty"), Some(&json!(500)));
        assert_eq!(d.policy_sha256.len(), 64);
        // The request is on the record before the decision, harness's answer after it.
        let request_seq = run
            .entries
            .iter()
            .find_map(|r| match &r.entry {
                Entry::HttpRequest(h) if h.conn == d.conn && h.exchange == d.exchange => {
                    Some(r.seq)
                }
                _ => None,
            })
            .expect("the refused request is recorded");
        let (response_seq, response) = response_of(&run.entries, d.conn, d.exchange);
        assert!(request_seq < *seq && *seq < response_seq);
        assert_eq!(response.answered_by.as_deref(), Some("harness"));
    }
    let log = Command::new(harness_bin())
        .arg("log")
        .arg(scene.ledger())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&log.stdout);
    assert!(
        text.contains("DENIED by policy") && text.contains("tool[1]"),
        "harness log shows the decision inline:\n{text}"
    );
    assert!(text.contains("answered by harness"), "{text}");
    let stats = Command::new(harness_bin())
        .args(["stats", "--json"])
        .arg(scene.ledger())
        .output()
        .unwrap();
    let stats: Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(
        stats["total"]["decisions"]["denied_by_rule"]["tool[1]"], 2,
        "harness stats counts the decisions: {stats:#}"
    );
}

#[test]
fn what_an_agent_would_send_to_slip_past_a_rule_is_refused() {
    let Some(scene) = scene("governance-evasion") else {
        return;
    };
    let policy = format!(
        "{ORDER_LIMIT}\n[[http]]\naction = \"deny\"\nmethod = \"DELETE\"\nhost = \"api.anthropic.test\"\npath = \"/v1/orders/*\"\n"
    );
    let script = r#"
sid = mcp_session()
out = {}
# A batch whose first element is malformed, hiding the large order behind it.
out["batch"] = post(mcp_url, [{"jsonrpc": "2.0", "id": 10, "method": "tools/call", "params": "x"}, tools_call(11, 5), tools_call(12, 900)], sid)
# The same member twice: which one counts depends on the parser.
out["duplicate"] = post(mcp_url, None, sid, raw=b'{"jsonrpc":"2.0","id":20,"method":"tools/call","params":{"name":"place_order","arguments":{"symbol":"ACME","side":"buy","qty":900,"qty":1}}}')
# A number written as a string.
out["quoted"] = post(mcp_url, tools_call(30, "900"), sid)
# The body gzip'd, as a client may send it.
out["gzip"] = post(mcp_url, None, {**sid, "content-encoding": "gzip"}, raw=gzip.compress(json.dumps(tools_call(40, 900)).encode()))
# A client that reads only event streams gets its error as one.
out["sse_only"] = post(mcp_url, tools_call(50, 900), {**sid, "accept": "text/event-stream"})
# A DELETE the http rule forbids, its path dressed up.
out["delete"] = post("https://api.anthropic.test:@PORT@/v1//%6Frders/./x/../ord-1", None, method="DELETE", raw=b"")
# The same, naming an address as its Host (the connection's own name still counts) and in
# another case (servers route /V1/ORDERS as /v1/orders).
out["ip_host"] = post("https://api.anthropic.test:@PORT@/V1/ORDERS/ord-2", None, {"Host": "@IP@"}, method="DELETE", raw=b"")
# A POST that asks to be taken for a DELETE.
out["override"] = post("https://api.anthropic.test:@PORT@/v1/orders/ord-3", None, {"X-HTTP-Method-Override": "DELETE"}, raw=b"")
# An upgrade to cleartext HTTP/2 would carry requests past every rule.
out["h2c"] = post("https://api.anthropic.test:@PORT@/v1/quotes/ACME", None, {"Upgrade": "h2c", "HTTP2-Settings": "AAMAAABkAAQAAP__"}, method="GET", raw=b"")
print(json.dumps(out), flush=True)
"#
    .replace("@PORT@", &scene.provider.addr().port().to_string())
    .replace("@IP@", &scene.provider.addr().ip().to_string());
    let (out, run) = scene.run(&policy, &script);
    let body = |k: &str| -> Value {
        let text = out[k][2].as_str().unwrap_or_else(|| panic!("{k}: {out:#}"));
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{k}: {e}: {text}"))
    };
    // The batch: every request answered with the refusal (the malformed one too), nothing sent.
    let batch = body("batch");
    let ids: Vec<&Value> = batch.as_array().unwrap().iter().map(|m| &m["id"]).collect();
    assert_eq!(ids, [&json!(10), &json!(11), &json!(12)], "{batch:#}");
    assert!(batch
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["error"]["code"] == -32003));
    for (k, id) in [("duplicate", 20), ("quoted", 30), ("gzip", 40)] {
        let v = body(k);
        assert_eq!(
            (&v["id"], &v["error"]["code"]),
            (&json!(id), &json!(-32003)),
            "{k}: {v}"
        );
    }
    assert!(body("duplicate")["error"]["message"]
        .as_str()
        .unwrap()
        .contains("twice"));
    // SSE: one `message` event carrying the error.
    let sse = out["sse_only"][2].as_str().unwrap();
    assert!(
        out["sse_only"][1]["Content-Type"] == "text/event-stream"
            || out["sse_only"][1]["content-type"] == "text/event-stream",
        "{:#}",
        out["sse_only"]
    );
    let data = sse
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("an SSE data line");
    assert_eq!(serde_json::from_str::<Value>(data).unwrap()["id"], 50);
    // The DELETE: a 403 with harness's JSON, naming the rule.
    assert_eq!(out["delete"][0], 403, "{:#}", out["delete"]);
    assert_eq!(body("delete")["error"]["rule"], "http[1]");
    for k in ["ip_host", "override"] {
        assert_eq!(out[k][0], 403, "{k}: {:#}", out[k]);
        assert_eq!(body(k)["error"]["rule"], "http[1]", "{k}");
    }
    assert_eq!(out["h2c"][0], 403, "{:#}", out["h2c"]);
    assert_eq!(body("h2c")["error"]["rule"], "upgrade");

    assert!(
        orders(&scene.provider).is_empty(),
        "nothing reached the brokerage"
    );
    assert!(
        !scene
            .provider
            .requests()
            .iter()
            .any(|r| r.method == "DELETE"
                || r.uri.contains("/v1/orders/ord-")
                || r.uri.contains("/v1/quotes")),
        "no refused request reached the API"
    );
    let rules: Vec<String> = decisions(&run.entries)
        .into_iter()
        .map(|(_, d)| format!("{} {}", d.action, d.rule))
        .collect();
    assert_eq!(
        rules,
        [
            "deny tool[1]",
            "deny tool[1]",
            "deny tool[1]",
            "deny tool[1]",
            "deny tool[1]",
            "deny http[1]",
            "deny http[1]",
            "deny http[1]",
            "deny upgrade"
        ],
        "each attempt decided on the record"
    );
}

#[test]
fn a_dollar_budget_stops_a_looping_agent() {
    let Some(scene) = scene("governance-budget") else {
        return;
    };
    // claude-opus-4-5 costs $5 per million input tokens and $25 per million output tokens
    // (the built-in pricing table): 400,000 in and 40,000 out make $3.00 a call, so a $5 budget
    // lets two calls through ($0, then $3 spent before each) and refuses the third ($6 spent).
    let policy = "default = \"allow\"\n\n[budget]\nusd = 5.0\n";
    let script = r#"
out = []
for i in range(10):
    try:
        model.messages.create(model="claude-opus-4-5", max_tokens=100,
            messages=[{"role": "user", "content": f"step {i}"}],
            extra_headers={"x-peer-reply": json.dumps({"texts": ["again"], "input_tokens": 400000, "output_tokens": 40000})})
        out.append({"call": i, "ok": True})
    except anthropic.APIStatusError as e:
        out.append({"call": i, "status": e.status_code, "body": e.body})
        break
print(json.dumps(out), flush=True)
"#;
    let (out, run) = scene.run(policy, script);
    let out = out.as_array().unwrap();
    assert_eq!(out.len(), 3, "two calls, then the refusal: {out:#?}");
    assert_eq!(out[2]["status"], 403);
    assert_eq!(
        out[2]["body"]["type"], "error",
        "Anthropic's own error shape"
    );
    assert_eq!(out[2]["body"]["error"]["type"], "permission_error");
    assert!(out[2]["body"]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("budget"));
    let model_calls = scene
        .provider
        .requests()
        .iter()
        .filter(|r| r.uri.ends_with("/v1/messages"))
        .count();
    assert_eq!(
        model_calls, 2,
        "the refused call never reached the provider"
    );
    let denied = decisions(&run.entries);
    assert_eq!(denied.len(), 1, "{denied:#?}");
    let d = &denied[0].1;
    assert_eq!((d.action.as_str(), d.rule.as_str()), ("deny", "budget.usd"));
    let budget = d.budget.as_ref().expect("the running total is recorded");
    assert_eq!((budget.limit.as_str(), budget.spent.as_str()), ("5", "6"));
}

#[test]
fn an_ask_is_approved_and_another_denied_from_a_second_process() {
    let Some(scene) = scene("governance-ask") else {
        return;
    };
    let policy = "default = \"allow\"\nask_timeout_seconds = 600\n\n[[tool]]\naction = \"ask\"\nname = \"place_order\"\n";
    let script = r#"
sid = mcp_session()
first = post(mcp_url, tools_call(1, 7), sid)
second = post(mcp_url, tools_call(2, 70), sid)
print(json.dumps({"first": json.loads(first[2]), "second": json.loads(second[2])}), flush=True)
"#;
    // The agent runs (and waits) in another thread; this one plays the person.
    let (out, run) = std::thread::scope(|s| {
        let agent = s.spawn(|| scene.run(policy, script));
        for (verdict, why) in [("allow", "small enough"), ("deny", "not today")] {
            let ask = loop {
                let pending = Command::new(harness_bin())
                    .args(["pending", "--json"])
                    .output()
                    .unwrap();
                assert!(pending.status.success(), "{pending:?}");
                let list: Value = serde_json::from_slice(&pending.stdout).unwrap();
                if let Some(ask) = list
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|a| a["reason"].as_str().unwrap_or("").contains("tool[1]"))
                {
                    break ask.clone();
                }
                assert!(
                    !agent.is_finished(),
                    "the agent ended without its asks decided"
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            };
            let session = ask["session"].as_str().unwrap();
            let decided = Command::new(harness_bin())
                .args([
                    "decide",
                    session,
                    &ask["id"].to_string(),
                    verdict,
                    "--why",
                    why,
                ])
                .output()
                .unwrap();
            assert!(
                decided.status.success(),
                "harness decide: {}",
                String::from_utf8_lossy(&decided.stderr)
            );
            // Decided once: a second decision of the same ask is refused.
            let again = Command::new(harness_bin())
                .args(["decide", session, &ask["id"].to_string(), "allow"])
                .output()
                .unwrap();
            assert_eq!(again.status.code(), Some(2));
        }
        agent.join().unwrap()
    });
    assert!(
        out["first"]["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or("")
            .contains("Order"),
        "{out:#}"
    );
    assert_eq!(out["second"]["error"]["code"], -32003, "{out:#}");
    assert!(out["second"]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not today"));
    assert_eq!(
        orders(&scene.provider),
        [7],
        "only the approved order was placed"
    );
    let asks = decisions(&run.entries);
    assert_eq!(asks.len(), 2);
    let decided: Vec<&harness::ledger::RequestDecided> = run
        .entries
        .iter()
        .filter_map(|r| match &r.entry {
            Entry::RequestDecided(d) => Some(d),
            _ => None,
        })
        .collect();
    assert_eq!(decided.len(), 2);
    for ((seq, ask), (d, (verdict, why))) in asks.iter().zip(
        decided
            .iter()
            .zip([("allow", "small enough"), ("deny", "not today")]),
    ) {
        assert_eq!(ask.action, "ask");
        assert_eq!(d.ask, *seq, "the decision names its ask");
        assert_eq!(d.action, verdict);
        assert_eq!(d.why.as_deref(), Some(why));
        assert!(d.by.starts_with("uid 0 pid "), "who decided: {}", d.by);
    }
}

#[test]
fn a_model_rule_holds_whichever_transport_the_agent_picks() {
    let Some(scene) = scene("governance-model") else {
        return;
    };
    let policy = "default = \"allow\"\n\n[[model]]\naction = \"deny\"\nmodel = \"*-opus-*\"\n";
    let script = r#"
import http.client, ssl, base64
out = {}
try:
    model.messages.create(model="claude-opus-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    out["opus"] = "answered"
except anthropic.PermissionDeniedError as e:
    out["opus"] = e.body
reply = model.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
out["sonnet"] = reply.model
# The Responses API's WebSocket mode, where calls would travel as messages after the upgrade.
conn = http.client.HTTPSConnection("api.anthropic.test", @PORT@, context=ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"]))
conn.request("GET", "/v1/responses", headers={"Upgrade": "websocket", "Connection": "Upgrade",
    "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(), "Sec-WebSocket-Version": "13",
    "Authorization": "Bearer " + key})
r = conn.getresponse()
out["websocket"] = {"status": r.status, "body": json.loads(r.read() or b"null")}
print(json.dumps(out), flush=True)
"#
    .replace("@PORT@", &scene.provider.addr().port().to_string());
    let (out, run) = scene.run(policy, &script);
    assert_eq!(out["opus"]["error"]["type"], "permission_error", "{out:#}");
    assert!(out["opus"]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("model[1]"));
    assert_eq!(out["sonnet"], "claude-sonnet-4-5");
    assert_eq!(out["websocket"]["status"], 403, "{out:#}");
    assert_eq!(out["websocket"]["body"]["error"]["code"], "harness_policy");
    let upgrades = scene
        .provider
        .requests()
        .iter()
        .filter(|r| r.uri.ends_with("/v1/responses"))
        .count();
    assert_eq!(upgrades, 0, "the upgrade never reached the provider");
    let models: Vec<usize> = scene
        .provider
        .requests()
        .iter()
        .filter(|r| r.uri.ends_with("/v1/messages"))
        .map(|r| r.body.len as usize)
        .collect();
    assert_eq!(models.len(), 1, "only the allowed model call went upstream");
    let rules: Vec<String> = decisions(&run.entries)
        .into_iter()
        .map(|(_, d)| format!("{} {}", d.action, d.rule))
        .collect();
    assert_eq!(rules, ["deny model[1]", "deny model.websocket"]);
}

#[test]
fn model_calls_sent_together_cannot_outrun_the_budget() {
    let Some(scene) = scene("governance-race") else {
        return;
    };
    // As above, $3 a call under $5; four calls sent at once. Admitted one after the other,
    // each seeing what the ones before it spent: two go through, two are refused.
    let policy = "default = \"allow\"\n\n[budget]\nusd = 5.0\n";
    let script = r#"
from concurrent.futures import ThreadPoolExecutor
def call(i):
    try:
        model.messages.create(model="claude-opus-4-5", max_tokens=100,
            messages=[{"role": "user", "content": f"step {i}"}],
            extra_headers={"x-peer-reply": json.dumps({"texts": ["again"], "input_tokens": 400000, "output_tokens": 40000})})
        return "ok"
    except anthropic.APIStatusError as e:
        return e.status_code
with ThreadPoolExecutor(4) as pool:
    out = list(pool.map(call, range(4)))
print(json.dumps(out), flush=True)
"#;
    let (out, run) = scene.run(policy, script);
    let mut out: Vec<String> = out
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    out.sort();
    assert_eq!(out, ["\"ok\"", "\"ok\"", "403", "403"]);
    let model_calls = scene
        .provider
        .requests()
        .iter()
        .filter(|r| r.uri.ends_with("/v1/messages"))
        .count();
    assert_eq!(model_calls, 2);
    assert_eq!(decisions(&run.entries).len(), 2);
}
