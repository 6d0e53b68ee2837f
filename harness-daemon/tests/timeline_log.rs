//! `harness log`: the readable timeline tells the two-way story in order; `--correlations`
//! links the model's tool call → the MCP call → the brokerage calls → the result handed back;
//! `--json` is one object per entry exactly as recorded; `--follow` watches a live session.
mod timeline_support;

use harness::ledger::*;
use std::io::Read as _;
use std::time::{Duration, Instant};
use timeline_support::*;

fn pos(out: &str, needle: &str) -> usize {
    out.find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in the timeline:\n{out}"))
}

#[tokio::test]
async fn the_timeline_tells_the_story_in_order() {
    let s = record("story").await;
    let (code, out, err) = harness(&["log", s.file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let order = [
        "session opened",
        "api.anthropic.com A → 160.79.104.10",
        "pid 100 → api.anthropic.com  POST /v1/messages → 200",
        "user: What is ACME trading at?",
        "thinking: The user wants a quote for ACME — ünïcödé ✓",
        "text: Let me check the price.",
        "tool call get_quote {\"symbol\":\"ACME\"}  [toolu_01]",
        "tokens: 120 in, 45 out · stop: tool_use",
        "MCP tools/list",
        "MCP tools/call get_quote {\"symbol\":\"ACME\"}  (model tool call toolu_01)",
        "└",
        "pid 200 → api.brokerage.test  GET https://api.brokerage.test/v1/quote?symbol=ACME&fields=price → 200",
        "POST https://api.brokerage.test/v1/audit → 204",
        "result: ACME is at 12.50 USD",
        "tool result for toolu_01: ACME is at 12.50 USD",
        "text: ACME trades at 12.50 — buying 10.",
        "tokens: 200 in, 20 out · stop: end_turn",
        "DENIED pid 100 tcp → evil.example 203.0.113.9:443 (by kernel: policy: destination not allowed)",
        "the response stream was cut off",
        "session closed: exit 0",
    ];
    let mut last = 0;
    for needle in order {
        let p = pos(&out, needle);
        assert!(p >= last, "{needle:?} is out of order:\n{out}");
        last = p;
    }
    // The brokerage calls appear once, beneath the MCP call; the agent's own request made
    // meanwhile is a step of its own, not beneath the call.
    assert_eq!(out.matches("/v1/quote").count(), 1, "{out}");
    let under: Vec<&str> = out.lines().filter(|l| l.contains('└')).collect();
    assert_eq!(under.len(), 2, "{out}");
    assert!(!under.iter().any(|l| l.contains("telemetry")), "{out}");
    assert!(!out.contains("may belong to one of them"), "{out}");
    assert!(
        out.contains("pid 100 → telemetry.example  POST /v1/ping → 202"),
        "{out}"
    );
    assert!(
        out.contains("8 exchanges · 1 model tool call · 1 MCP tool call · tokens 320 in, 65 out"),
        "{out}"
    );
    assert!(
        out.contains("(anthropic messages, streamed, 1 tool offered)"),
        "{out}"
    );
    assert!(
        out.contains("2 bytes up, 0 bytes down · application/json"),
        "{out}"
    );
    assert!(!out.contains(SECRET), "{out}");
    // A ledger directory gives every session.
    let (code, dir_out, err) = harness(&["log", s.dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(dir_out, out);
}

#[tokio::test]
async fn correlations_link_tool_call_mcp_call_brokerage_and_result() {
    let s = record("chain").await;
    let (code, out, err) = harness(&["log", "--correlations", s.file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let chains: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(chains.len(), 1, "{out}");
    let c = &chains[0];
    assert_eq!(c["tool_use"]["id"], "toolu_01");
    assert_eq!(c["tool_use"]["name"], "get_quote");
    assert_eq!(
        c["tool_use"]["input"],
        serde_json::json!({"symbol": "ACME"})
    );
    assert_eq!(c["tool_use"]["seq"], s.seq["model1_resp"]);
    assert_eq!(c["mcp_call"]["seq"], s.seq["mcp_req"]);
    assert_eq!(c["mcp_call"]["name"], "get_quote");
    assert_eq!(c["mcp_call"]["id"], 1);
    assert_eq!(c["mcp_call"]["pid"], AGENT);
    assert_eq!(c["mcp_call"]["response_seq"], s.seq["mcp_resp"]);
    assert_eq!(c["mcp_call"]["is_error"], false);
    assert_eq!(
        c["mcp_call"]["result"]["content"][0]["text"],
        "ACME is at 12.50 USD"
    );
    let ext: Vec<u64> = c["external"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(ext, vec![s.seq["quote_req"], s.seq["audit_req"]], "{out}");
    assert_eq!(c["external"][0]["method"], "GET");
    assert_eq!(
        c["external"][0]["url"],
        "https://api.brokerage.test/v1/quote?symbol=ACME&fields=price"
    );
    assert_eq!(c["external"][0]["status"], 200);
    assert_eq!(c["external"][0]["pid"], TOOL_SERVER);
    assert_eq!(c["external"][1]["status"], 204);
    assert_eq!(c["result_seq"], s.seq["model2_req"]);
}

#[tokio::test]
async fn no_link_without_matching_arguments_or_when_the_call_came_first() {
    use harness::timeline::{correlate::correlate, session::SessionLog};
    let s = record("nolink").await;
    let log = SessionLog::read(&s.file).unwrap();
    let c = correlate(&log);
    assert_eq!(c.calls.len(), 1);
    assert_eq!(c.chains.len(), 1);
    assert!(c.chains[0].mcp_call.is_some());
    // Same session with the model asking for other arguments: the MCP call is not its.
    let mut log2 = log.clone();
    for x in &mut log2.exchanges {
        for n in &mut x.notes {
            if n.annotation.topic == "llm_response" {
                if let Some(tc) = n.annotation.data["tool_calls"].get_mut(0) {
                    tc["input"] = serde_json::json!({"symbol": "OTHER"});
                }
            }
        }
    }
    let c2 = correlate(&log2);
    assert_eq!(c2.chains.len(), 1);
    assert!(c2.chains[0].mcp_call.is_none());
    assert!(c2.chains[0].external.is_empty());
    // The MCP call still has its external calls (rendered beneath it).
    assert_eq!(c2.calls[0].external.len(), 2);
}

#[tokio::test]
async fn json_is_one_object_per_entry_exactly_as_recorded() {
    let s = record("json").await;
    let (code, out, err) = harness(&["log", "--json", s.file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let got: Vec<&[u8]> = out
        .as_bytes()
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let want = lines(&s.file);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(*g, w.as_slice());
    }
}

#[tokio::test]
async fn errors_are_one_line_naming_file_and_seq() {
    let s = record("errors").await;
    let (code, _, err) = harness(&["log", "/nonexistent/ledger/x.jsonl"]);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/ledger/x.jsonl"), "{err}");
    // An edited line in the middle.
    let mut ls = lines(&s.file);
    ls[5] = b"{\"not\":\"an entry\"}".to_vec();
    let mut bytes = Vec::new();
    for l in &ls {
        bytes.extend_from_slice(l);
        bytes.push(b'\n');
    }
    std::fs::write(&s.file, bytes).unwrap();
    // Not a valid entry: "not intact", as `harness verify` says (exit 1).
    let (code, _, err) = harness(&["log", s.file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("seq 5"), "{err}");
    assert!(err.contains(s.file.to_str().unwrap()), "{err}");
}

#[tokio::test]
async fn follow_prints_entries_as_they_are_recorded_until_session_close() {
    let dir = scratch("follow");
    let ledger = Ledger::open(&dir).unwrap();
    let (w, _) = ledger.open_session(session_open()).await.unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["log", "--follow", dir.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).unwrap();
        s
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    w.append(Entry::ConnOpen(ConnOpen {
        conn: 1,
        proto: "tcp".into(),
        dst: "160.79.104.10:443".parse().unwrap(),
        host: Some("api.anthropic.com".into()),
        src: "10.0.0.2:40001".parse().unwrap(),
        caller: Caller {
            pid: 4242,
            tid: 4242,
            uid: 1000,
            cgroup_id: 7,
        },
        rule: None,
    }))
    .await
    .unwrap();
    w.append(Entry::HttpRequest(HttpRequest {
        conn: 1,
        exchange: 0,
        version: "HTTP/2".into(),
        method: "POST".into(),
        scheme: "https".into(),
        authority: Some("api.anthropic.com".into()),
        target: "/v1/messages".into(),
        uri_scheme: None,
        headers: vec![],
    }))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Still running: the session is open.
    assert!(child.try_wait().unwrap().is_none(), "--follow ended early");
    let resp = w
        .append(Entry::HttpResponse(HttpResponse {
            conn: 1,
            exchange: 0,
            version: "HTTP/2".into(),
            status: 200,
            reason: None,
            headers: vec![],
            answered_by: None,
        }))
        .await
        .unwrap();
    w.append(Entry::Annotation(Annotation {
        of_seq: resp.seq(),
        of_hash: resp.hash_hex(),
        by: "semantics/anthropic".into(),
        topic: "llm_response".into(),
        data: serde_json::json!({"text": ["hello from the model"], "tool_calls": [],
            "usage": {"input_tokens": 3, "output_tokens": 4}}),
    }))
    .await
    .unwrap();
    w.close(SessionClose::exited(Some(0), None)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("harness log --follow did not stop after session_close");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success());
    let out = reader.join().unwrap();
    for needle in [
        "session opened: agent.py --task buy",
        "pid 4242 → api.anthropic.com  POST /v1/messages",
        "← 200",
        "text: hello from the model",
        "tokens: 3 in, 4 out",
        "session closed: exit 0",
    ] {
        assert!(out.contains(needle), "{needle:?} not in:\n{out}");
    }
}

#[tokio::test]
async fn parallel_tool_calls_mark_shared_external_calls_ambiguous() {
    use harness::timeline::{correlate::correlate, session::SessionLog};
    let dir = scratch("parallel");
    let ledger = Ledger::open(&dir).unwrap();
    let (w, _) = ledger.open_session(session_open()).await.unwrap();
    let r = Rec {
        ledger: &ledger,
        w: &w,
    };
    r.conn(1, AGENT, "tools.example", "10.0.0.5:443").await;
    r.conn(2, AGENT, "tools.example", "10.0.0.5:443").await;
    r.conn(3, TOOL_SERVER, "api.brokerage.test", "198.51.100.7:443")
        .await;
    // Two tools/call in flight at once; the brokerage call lies in both windows.
    r.request(1, 0, "POST", "tools.example", "/mcp", &[]).await;
    r.request(2, 0, "POST", "tools.example", "/mcp", &[]).await;
    r.request(3, 0, "GET", "api.brokerage.test", "/v1/quote", &[])
        .await;
    r.response(3, 0, 200, "application/json").await;
    for (conn, id, symbol) in [(1u64, 1, "ACME"), (2, 2, "INIT")] {
        let resp = r.response(conn, 0, 200, "application/json").await;
        r.note(
            resp,
            "semantics/mcp",
            "mcp_request",
            serde_json::json!({"session": "s", "messages": [{"id": id, "method": "tools/call",
                "name": "get_quote", "arguments": {"symbol": symbol}, "kind": "request"}]}),
        )
        .await;
    }
    let file = w.path().to_owned();
    w.close(SessionClose::exited(Some(0), None)).await.unwrap();
    let c = correlate(&SessionLog::read(&file).unwrap());
    assert_eq!(c.calls.len(), 2);
    for call in &c.calls {
        assert_eq!(call.external.len(), 1);
        assert!(call.external[0].ambiguous);
    }
    let (code, out, err) = harness(&["log", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("may belong to one of them"), "{out}");
}

#[tokio::test]
async fn tool_arguments_are_compact_json_and_encoded_bodies_say_so() {
    let dir = scratch("args");
    let ledger = Ledger::open(&dir).unwrap();
    let (w, _) = ledger.open_session(session_open()).await.unwrap();
    let r = Rec {
        ledger: &ledger,
        w: &w,
    };
    r.conn(1, AGENT, "api.openai.com", "162.159.140.245:443")
        .await;
    r.request(1, 0, "POST", "api.openai.com", "/v1/chat/completions", &[])
        .await;
    let resp = r.response(1, 0, 200, "application/json").await;
    let long = "x".repeat(400);
    r.note(
        resp,
        "semantics/openai",
        "llm_response",
        serde_json::json!({"text": [], "redacted_thinking": 1, "tool_calls": [
            {"id": "call_1", "name": "place_order",
             "input": {"symbol": "ACME", "qty": 10, "note": "two  spaces\nand a newline"}},
            {"id": "call_2", "name": "broken", "input": "{\"symbol\": \"AC",
             "input_error": "EOF while parsing a string at line 1 column 14"},
            {"id": "call_3", "name": "long", "input": {"text": long}}],
            "stop_reason": "tool_calls"}),
    )
    .await;
    r.conn(2, AGENT, "api.example.test", "192.0.2.1:443").await;
    r.request(2, 0, "GET", "api.example.test", "/v1/things", &[])
        .await;
    let resp = r.response(2, 0, 200, "application/json").await;
    r.response_body(2, 0, &[0x1f; 31]).await;
    r.note(
        resp,
        "semantics/http",
        "http",
        serde_json::json!({"method": "GET", "status": 200, "request_bytes": 0,
            "response_bytes": 31, "response_encoding": "gzip", "response_decoded_bytes": 1204}),
    )
    .await;
    let file = w.path().to_owned();
    w.close(SessionClose::exited(Some(0), None)).await.unwrap();
    let (code, out, err) = harness(&["log", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for needle in [
        // Whitespace inside strings is the value's, not collapsed. (Keys come sorted: ledger
        // entries are RFC 8785 canonical.)
        r#"tool call place_order {"note":"two  spaces\nand a newline","qty":10,"symbol":"ACME"}  [call_1]"#,
        r#"tool call broken {"symbol": "AC  (arguments are not valid JSON: EOF while parsing a string at line 1 column 14)  [call_2]"#,
        "… (+111 chars)  [call_3]",
        "thinking: (1 block redacted)",
        "0 bytes up, 31 bytes gzip (1204 decoded) down · application/json",
        "2 exchanges · 3 model tool calls · 0 MCP tool calls",
    ] {
        assert!(out.contains(needle), "{needle:?} not in:\n{out}");
    }
}
