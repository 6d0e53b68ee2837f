//! The OpenAI Responses API over WebSocket (Codex CLI's default transport), end to end through
//! the real enclosure: a real WebSocket client (Node's) opens `wss://…/v1/responses` to the mock
//! provider over TLS, sends a `response.create` with tools, gets a function call back, and sends
//! the tool's output in a second `response.create`. The ledger says it as it says a streamed
//! HTTP call: an `llm_request` (model, tools offered, namespaced ones too) and an `llm_response`
//! (the tool call, the usage) per call, on the connection's `data` entries; `harness log` shows
//! the calls and the tool call, `--correlations` links the call to the request that returned
//! its result, and the HAR export carries the messages on the upgrade's entry.
use harness::ledger::Entry;
use harness_tests::peers::{Peer, TestCa};
use harness_tests::{dns_server, harness_bin, privileged, run_enclosed, temp_dir, world};
use serde_json::{json, Value};
use std::process::Command;

#[test]
fn responses_over_websocket_are_annotated_as_llm_calls() {
    if !privileged("responses over websocket") {
        return;
    }
    if std::env::var("HARNESS_IN_VM").is_ok() {
        eprintln!("\n*** SKIPPED responses over websocket: no node in the VM image ***\n");
        return;
    }
    let dir = temp_dir("llm-websocket");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let ca = TestCa::create(dir.join("test-ca")).unwrap();
    let provider = Peer::builder(&ca)
        .names(["api.openai.test"])
        .ip(world::addr(2))
        .spawn_in_thread()
        .unwrap();
    let dns = dns_server(world::addr(2)).to_string();
    // The key reaches the client from a file, as real keys do: it must appear nowhere in clear.
    let key_file = dir.join("api-key");
    std::fs::write(&key_file, "sk-test-w5secret").unwrap();
    let url = provider
        .url("/v1/responses")
        .replacen("https://", "wss://", 1);
    // As Codex does: tools at the top level, some in a namespace; the second call continues
    // the first (`previous_response_id`) with only the tool's output.
    let first = json!({
        "type": "response.create", "model": "gpt-test", "stream": true, "store": false,
        "input": [{"type": "message", "role": "user",
                   "content": [{"type": "input_text", "text": "Buy 10 ACME"}]}],
        "tools": [
            {"type": "function", "name": "place_order", "parameters": {"type": "object"}},
            {"type": "namespace", "name": "brokerage", "description": "quotes",
             "tools": [{"type": "function", "name": "get_quote",
                        "parameters": {"type": "object"}}]},
        ],
    });
    let script = format!(
        r#"
const fs = require('fs');
const key = fs.readFileSync({key_file:?}, 'utf8').trim();
const ws = new WebSocket({url:?}, {{ headers: {{ authorization: 'Bearer ' + key }} }});
const guard = setTimeout(() => {{ console.error('no answer in time'); process.exit(2) }}, 60000);
const out = {{ calls: 0 }};
ws.onopen = () => ws.send(JSON.stringify({first}));
ws.onmessage = (e) => {{
  const ev = JSON.parse(e.data);
  if (ev.type === 'error') {{ console.error('error event', e.data); process.exit(3) }}
  if (ev.type !== 'response.completed') return;
  out.calls += 1;
  if (out.calls === 1) {{
    const call = ev.response.output.find((i) => i.type === 'function_call');
    out.tool = call.name; out.call_id = call.call_id; out.arguments = JSON.parse(call.arguments);
    ws.send(JSON.stringify({{ type: 'response.create', model: 'gpt-test', stream: true,
      previous_response_id: ev.response.id,
      input: [{{ type: 'function_call_output', call_id: call.call_id, output: '{{"status":"filled"}}' }}] }}));
  }} else {{
    out.text = ev.response.output.filter((i) => i.type === 'message')
      .flatMap((i) => i.content.map((c) => c.text));
    ws.close(1000, 'done');
  }}
}};
ws.onerror = (e) => {{ console.error('websocket error', e.message || e); process.exit(1) }};
ws.onclose = () => {{ clearTimeout(guard); console.log(JSON.stringify(out)); }};
"#,
        key_file = key_file.display().to_string(),
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
        &["/usr/bin/node", "--experimental-websocket", "-e", &script],
    );
    assert!(
        run.output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.output.stdout),
        String::from_utf8_lossy(&run.output.stderr)
    );
    let seen = run.results.first().expect("the client printed its result");
    assert_eq!(seen["calls"], 2, "{seen}");
    assert_eq!(seen["tool"], "place_order", "{seen}");
    let call_id = seen["call_id"].as_str().unwrap().to_owned();

    // The annotations: one llm_request and one llm_response per call, on data entries of the
    // upgraded connection.
    let notes: Vec<(&Entry, &harness::ledger::Annotation)> = run
        .entries
        .iter()
        .filter_map(|r| match &r.entry {
            Entry::Annotation(a) if a.by == "semantics/openai" => {
                let of = &run
                    .entries
                    .iter()
                    .find(|e| e.seq == a.of_seq)
                    .unwrap()
                    .entry;
                Some((of, a))
            }
            _ => None,
        })
        .collect();
    assert!(
        notes.iter().all(|(_, a)| a.topic != "parse_error"),
        "{notes:#?}"
    );
    let of_topic = |t: &str| -> Vec<&Value> {
        notes
            .iter()
            .filter(|(_, a)| a.topic == t)
            .map(|(_, a)| &a.data)
            .collect()
    };
    let (requests, responses) = (of_topic("llm_request"), of_topic("llm_response"));
    assert_eq!((requests.len(), responses.len()), (2, 2), "{notes:#?}");
    for (of, a) in &notes {
        let Entry::Data(d) = of else {
            panic!("{a:?} annotates {of:?}, not a data entry")
        };
        let expected = if a.topic == "llm_request" {
            harness::ledger::Direction::Up
        } else {
            harness::ledger::Direction::Down
        };
        assert_eq!(d.direction, expected, "{a:?}");
    }
    assert_eq!(requests[0]["model"], "gpt-test");
    assert_eq!(requests[0]["stream"], true);
    assert_eq!(
        requests[0]["tools"],
        json!(["place_order", "brokerage.get_quote"])
    );
    assert_eq!(
        requests[0]["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "Buy 10 ACME"}]}])
    );
    let tool_calls = responses[0]["tool_calls"].as_array().unwrap();
    assert_eq!(tool_calls.len(), 1, "{}", responses[0]);
    assert_eq!(tool_calls[0]["name"], "place_order");
    assert_eq!(tool_calls[0]["id"], call_id.as_str());
    assert_eq!(tool_calls[0]["input"], seen["arguments"]);
    assert_eq!(responses[0]["model"], "gpt-test");
    assert!(!responses[0]["thinking"].as_array().unwrap().is_empty());
    let usage = &responses[0]["usage"];
    assert!(usage["input_tokens"].as_u64().unwrap() > 0, "{usage}");
    assert!(usage["output_tokens"].as_u64().unwrap() > 0, "{usage}");
    assert_eq!(requests[1]["previous_response_id"], responses[0]["id"]);
    assert_eq!(
        requests[1]["messages"][0]["content"][0]["tool_use_id"],
        call_id.as_str()
    );
    assert_eq!(responses[1]["text"], json!(seen["text"]));
    assert_eq!(responses[1]["stop_reason"], "completed");

    // `harness log`: the calls, the tool call, the session's tokens.
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
    assert!(text.contains("GET /v1/responses → 101"), "{text}");
    assert!(
        text.contains("WebSocket /v1/responses call 0") && text.contains("call 1"),
        "{text}"
    );
    assert!(text.contains("place_order"), "{text}");
    assert!(text.contains("2 WebSocket model calls"), "{text}");
    let tokens: u64 = responses
        .iter()
        .map(|r| r["usage"]["input_tokens"].as_u64().unwrap())
        .sum();
    assert!(text.contains(&format!("tokens {tokens} in")), "{text}");
    assert!(
        !text.contains("sk-test"),
        "a secret in clear in the timeline"
    );

    // `--correlations`: the tool call, and the later call that handed its result back.
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
        .and_then(|c| c.iter().find(|c| c["tool_use"]["name"] == "place_order"))
        .unwrap_or_else(|| panic!("no chain for place_order: {chains:#}"));
    assert_eq!(chain["tool_use"]["id"], call_id.as_str());
    assert!(!chain["result_seq"].is_null(), "{chain:#}");

    // HAR: the upgrade's entry carries the messages and the calls.
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
    let har: Value = serde_json::from_slice(&har.stdout).unwrap();
    let upgrade = har["log"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["response"]["status"] == 101)
        .expect("the upgrade in the HAR");
    let messages = upgrade["_webSocketMessages"].as_array().unwrap();
    let sent: Vec<&Value> = messages.iter().filter(|m| m["type"] == "send").collect();
    assert!(sent[0]["data"]
        .as_str()
        .unwrap()
        .contains("\"type\":\"response.create\""));
    assert!(messages.iter().any(|m| m["type"] == "receive"
        && m["data"]
            .as_str()
            .unwrap_or("")
            .contains("response.completed")));
    let calls = upgrade["_harness"]["websocket_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "{upgrade:#}");
    assert_eq!(
        calls[0]["annotations"],
        json!(["llm_request", "llm_response"])
    );

    let verify = Command::new(harness_bin())
        .arg("verify")
        .arg(&ledger)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// The real Codex CLI (`HARNESS_CODEX_BIN`: the `codex` binary of the npm package
/// `@openai/codex`), enclosed, against the mock provider in the test world: its WebSocket
/// conversation (a warm-up, a turn whose answer is a tool call, the turn that returns the
/// tool's output) is annotated call by call. Skipped, loudly, without the binary.
#[test]
fn codex_cli_conversation_is_annotated() {
    if !privileged("codex cli over websocket") {
        return;
    }
    let Some(codex) = std::env::var_os("HARNESS_CODEX_BIN") else {
        eprintln!("\n*** SKIPPED codex cli over websocket: HARNESS_CODEX_BIN is not set ***\n");
        return;
    };
    let dir = temp_dir("codex-ws");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let ca = TestCa::create(dir.join("test-ca")).unwrap();
    let provider = Peer::builder(&ca)
        .names(["api.openai.test"])
        .ip(world::addr(2))
        .spawn_in_thread()
        .unwrap();
    // Every name resolves to the mock: whatever else Codex asks for stays in the test world.
    let dns = dns_server(world::addr(2)).to_string();
    let home = dir.join("codex-home");
    let work = dir.join("work");
    for d in [&home, &work] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    }
    std::fs::write(
        home.join("config.toml"),
        format!(
            "model = \"gpt-test\"\nmodel_provider = \"mock\"\n\n[model_providers.mock]\n\
             name = \"mock\"\nbase_url = \"{}\"\nenv_key = \"CODEX_API_KEY\"\n\
             wire_api = \"responses\"\nsupports_websockets = true\n\
             request_max_retries = 0\nstream_max_retries = 0\n",
            provider.url("/v1")
        ),
    )
    .unwrap();
    let ledger = dir.join("ledger");
    let codex = codex.to_str().unwrap().to_owned();
    let script = format!(
        "cd {work} && CODEX_HOME={home} CODEX_API_KEY=sk-test-codex exec {codex} exec \
         --skip-git-repo-check -s danger-full-access 'Buy 10 ACME' </dev/null",
        work = work.display(),
        home = home.display(),
    );
    let run = run_enclosed(
        &ledger,
        &[
            "--upstream-ca",
            ca.cert_path().to_str().unwrap(),
            "--dns-upstream",
            &dns,
        ],
        &["/bin/sh", "-c", &script],
    );
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&run.output.stdout),
        String::from_utf8_lossy(&run.output.stderr)
    );
    assert!(run.output.status.success(), "{out}");
    let notes: Vec<&harness::ledger::Annotation> = run
        .entries
        .iter()
        .filter_map(|r| match &r.entry {
            Entry::Annotation(a) if a.by == "semantics/openai" => Some(a),
            _ => None,
        })
        .collect();
    let of = |t: &str| -> Vec<&Value> {
        notes
            .iter()
            .filter(|a| a.topic == t)
            .map(|a| &a.data)
            .collect()
    };
    let (requests, responses) = (of("llm_request"), of("llm_response"));
    assert!(requests.len() >= 3, "{notes:#?}\n{out}");
    assert_eq!(requests.len(), responses.len(), "{notes:#?}");
    assert_eq!(requests[0]["generate"], false, "Codex warms up first");
    let tools = requests[1]["tools"].as_array().unwrap();
    assert!(tools.contains(&json!("exec_command")), "{tools:?}");
    assert!(
        tools.iter().any(|t| t.as_str().unwrap().contains('.')),
        "namespaced tools listed by their own names: {tools:?}"
    );
    let call = &responses[1]["tool_calls"][0];
    assert_eq!(call["name"], "place_order", "{}", responses[1]);
    // Codex has no such tool and says so in the next call, which returns it.
    let returned = requests.iter().skip(2).any(|r| {
        r["messages"].as_array().unwrap().iter().any(|m| {
            m["content"][0]["type"] == "tool_result" && m["content"][0]["tool_use_id"] == call["id"]
        })
    });
    assert!(returned, "{requests:#?}");
    let log = Command::new(harness_bin())
        .arg("log")
        .arg(&ledger)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&log.stdout);
    assert!(text.contains("tool call place_order"), "{text}");
}
