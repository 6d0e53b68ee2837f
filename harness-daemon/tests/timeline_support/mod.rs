//! A recorded session built with the ledger library, as the daemon would record it: an agent
//! (pid 100) asks a model (streamed, with thinking and a tool call), calls the MCP tool server,
//! which (pid 200) calls a brokerage API twice; the agent sends the tool's result back to the
//! model (buffered response). Around it: DNS, a denial, an MCP `tools/list`, an agent request
//! made during the tool call (not the tool server's), a stream cut off without `fin`.
#![allow(dead_code)]
use harness::ledger::*;
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The clear-text API key the agent sent; it must appear nowhere.
pub const SECRET: &str = "sk-ant-test-secret-0123456789";

pub const AGENT: u32 = 100;
pub const TOOL_SERVER: u32 = 200;

/// A fresh scratch directory.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir()
        .join("harness-timeline-tests")
        .join(format!("{name}-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs the real `harness` binary.
pub fn harness(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(args)
        .output()
        .expect("run harness");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn session_open() -> SessionOpen {
    SessionOpen {
        command: vec!["agent.py".into(), "--task".into(), "buy".into()],
        uid: 1000,
        gid: 1000,
        cgroup: "/sys/fs/cgroup/harness/test".into(),
        policy_sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
        ca_fingerprint: None,
        software: "harness 0.1.0".into(),
        hostname: "test-host".into(),
    }
}

fn caller(pid: u32) -> Caller {
    Caller {
        pid,
        tid: pid,
        uid: 1000,
        cgroup_id: 7,
    }
}

/// What was recorded, and where.
pub struct Scenario {
    pub dir: PathBuf,
    pub file: PathBuf,
    /// Named seqs: `model1_req`, `model1_resp`, `mcp_req`, `mcp_resp`, `quote_req`,
    /// `audit_req`, `agent_side_req`, `model2_req`, `model2_resp`, `denied`, `list_req`.
    pub seq: HashMap<&'static str, u64>,
    /// The exact SSE text of the first model response.
    pub sse: String,
    /// The exact binary body of the audit request (a blob).
    pub audit_body: Vec<u8>,
}

/// Appends the entries a real exchange produces.
pub struct Rec<'a> {
    pub ledger: &'a Ledger,
    pub w: &'a SessionWriter,
}

impl Rec<'_> {
    pub async fn add(&self, e: Entry) -> Durable {
        self.w.append(e).await.unwrap()
    }

    pub async fn conn(&self, conn: u64, pid: u32, host: &str, dst: &str) {
        self.add(Entry::ConnOpen(ConnOpen {
            conn,
            proto: "tcp".into(),
            dst: dst.parse().unwrap(),
            host: Some(host.into()),
            src: format!("10.0.0.2:{}", 40000 + conn).parse().unwrap(),
            caller: caller(pid),
            rule: None,
        }))
        .await;
    }

    pub async fn request(
        &self,
        conn: u64,
        exchange: u64,
        method: &str,
        host: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Durable {
        self.add(Entry::HttpRequest(HttpRequest {
            conn,
            exchange,
            version: "HTTP/1.1".into(),
            method: method.into(),
            scheme: "https".into(),
            authority: Some(host.into()),
            target: target.into(),
            uri_scheme: None,
            headers: headers
                .iter()
                .map(|(n, v)| self.ledger.header(n, v.as_bytes()))
                .collect(),
        }))
        .await
    }

    pub async fn request_body(&self, conn: u64, exchange: u64, bytes: &[u8]) -> Durable {
        self.add(Entry::HttpRequestBody(HttpBody {
            conn,
            exchange,
            body: self.ledger.body(bytes).unwrap(),
            trailers: vec![],
        }))
        .await
    }

    pub async fn response(&self, conn: u64, exchange: u64, status: u16, ctype: &str) -> Durable {
        self.add(Entry::HttpResponse(HttpResponse {
            conn,
            exchange,
            version: "HTTP/1.1".into(),
            status,
            reason: None,
            headers: vec![self.ledger.header("content-type", ctype.as_bytes())],
            answered_by: None,
        }))
        .await
    }

    pub async fn response_body(&self, conn: u64, exchange: u64, bytes: &[u8]) -> Durable {
        self.add(Entry::HttpResponseBody(HttpBody {
            conn,
            exchange,
            body: self.ledger.body(bytes).unwrap(),
            trailers: vec![],
        }))
        .await
    }

    pub async fn chunk(&self, conn: u64, exchange: u64, index: u64, bytes: &[u8], fin: bool) {
        self.add(Entry::StreamChunk(StreamChunk {
            conn,
            exchange,
            direction: Direction::Down,
            index,
            body: self.ledger.body(bytes).unwrap(),
            fin,
            trailers: vec![],
        }))
        .await;
    }

    pub async fn note(&self, of: Durable, by: &str, topic: &str, data: serde_json::Value) {
        self.add(Entry::Annotation(Annotation {
            of_seq: of.seq(),
            of_hash: of.hash_hex(),
            by: by.into(),
            topic: topic.into(),
            data,
        }))
        .await;
    }
}

/// Records the scenario into a new ledger.
pub async fn record(name: &str) -> Scenario {
    let dir = scratch(name);
    let ledger = Ledger::open(&dir).unwrap();
    let (w, _) = ledger.open_session(session_open()).await.unwrap();
    let r = Rec {
        ledger: &ledger,
        w: &w,
    };
    let mut seq = HashMap::new();

    // DNS for the model API.
    r.add(Entry::DnsQuery(DnsQuery {
        exchange: 1,
        server: Some("127.0.0.53:53".parse().unwrap()),
        upstream: "10.0.0.1:53".parse().unwrap(),
        caller: Some(caller(AGENT)),
        qname: "api.anthropic.com".into(),
        qtype: "A".into(),
        message_b64: "AAAA".into(),
    }))
    .await;
    r.add(Entry::DnsAnswer(DnsAnswer {
        exchange: 1,
        rcode: Some("NOERROR".into()),
        answers: vec!["api.anthropic.com. 60 A 160.79.104.10".into()],
        message_b64: Some("AAAA".into()),
        error: None,
    }))
    .await;

    // 1. The model call, streamed (SSE).
    r.conn(1, AGENT, "api.anthropic.com", "160.79.104.10:443")
        .await;
    let q = r
        .request(
            1,
            0,
            "POST",
            "api.anthropic.com",
            "/v1/messages",
            &[("content-type", "application/json"), ("x-api-key", SECRET)],
        )
        .await;
    seq.insert("model1_req", q.seq());
    let question = "What is ACME trading at? Buy 10 shares if it is under 20 USD.";
    let body1 = json!({"model": "claude-test", "stream": true, "max_tokens": 1024,
        "tools": [{"name": "get_quote", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": question}]});
    r.request_body(1, 0, body1.to_string().as_bytes()).await;
    let resp1 = r.response(1, 0, 200, "text/event-stream").await;
    seq.insert("model1_resp", resp1.seq());
    let events = [
        "event: message_start\ndata: {\"type\":\"message_start\"}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"thinking_delta\",\"thinking\":\"The user wants a quote for ACME — ünïcödé ✓\"}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"text_delta\",\"text\":\"Let me check the price.\"}\n\n",
        "event: content_block_start\ndata: {\"type\":\"tool_use\",\"id\":\"toolu_01\",\"name\":\"get_quote\"}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    ];
    for (i, e) in events.iter().enumerate() {
        r.chunk(1, 0, i as u64, e.as_bytes(), i == events.len() - 1)
            .await;
    }
    r.note(
        resp1,
        "semantics/http",
        "http",
        json!({"method": "POST", "url": "https://api.anthropic.com/v1/messages", "status": 200,
               "request_type": "application/json", "response_type": "text/event-stream",
               "request_bytes": 200, "response_bytes": 300}),
    )
    .await;
    r.note(
        resp1,
        "semantics/anthropic",
        "llm_request",
        json!({"provider": "anthropic", "api": "messages", "model": "claude-test", "stream": true,
               "system": null,
               "messages": [{"role": "user", "content": [{"type": "text", "text": question}]}],
               "tools": ["get_quote"]}),
    )
    .await;
    r.note(
        resp1,
        "semantics/anthropic",
        "llm_response",
        json!({"provider": "anthropic", "api": "messages", "model": "claude-test", "id": "msg_1",
               "thinking": [{"text": "The user wants a quote for ACME — ünïcödé ✓", "signature": "sig"}],
               "redacted_thinking": 0,
               "text": ["Let me check the price."],
               "tool_calls": [{"id": "toolu_01", "name": "get_quote", "input": {"symbol": "ACME"}}],
               "stop_reason": "tool_use",
               "usage": {"input_tokens": 120, "output_tokens": 45}}),
    )
    .await;

    // 2. MCP: tools/list (not a tool call), then tools/call get_quote.
    r.conn(2, AGENT, "tools.example", "10.0.0.5:443").await;
    let list = r
        .request(
            2,
            0,
            "POST",
            "tools.example",
            "/mcp",
            &[("content-type", "application/json")],
        )
        .await;
    seq.insert("list_req", list.seq());
    r.request_body(2, 0, br#"{"jsonrpc":"2.0","id":0,"method":"tools/list"}"#)
        .await;
    let list_resp = r.response(2, 0, 200, "application/json").await;
    r.response_body(
        2,
        0,
        br#"{"jsonrpc":"2.0","id":0,"result":{"tools":[{"name":"get_quote"}]}}"#,
    )
    .await;
    r.note(
        list_resp,
        "semantics/mcp",
        "mcp_request",
        json!({"session": "mcp-s1", "messages": [{"id": 0, "method": "tools/list", "kind": "request"}]}),
    )
    .await;

    let call_body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_quote","arguments":{"symbol":"ACME"}}}"#;
    let mcp = r
        .request(
            2,
            1,
            "POST",
            "tools.example",
            "/mcp",
            &[
                ("content-type", "application/json"),
                ("mcp-session-id", "mcp-s1"),
            ],
        )
        .await;
    seq.insert("mcp_req", mcp.seq());
    r.request_body(2, 1, call_body).await;

    // 3. Beneath it: the tool server (another pid) calls the brokerage twice …
    r.conn(3, TOOL_SERVER, "api.brokerage.test", "198.51.100.7:443")
        .await;
    let quote = r
        .request(
            3,
            0,
            "GET",
            "api.brokerage.test",
            "/v1/quote?symbol=ACME&fields=price",
            &[("authorization", "Bearer brokerage-secret")],
        )
        .await;
    seq.insert("quote_req", quote.seq());
    let qresp = r.response(3, 0, 200, "application/json").await;
    r.response_body(3, 0, br#"{"symbol":"ACME","price":12.5}"#)
        .await;
    r.note(
        qresp,
        "semantics/http",
        "http",
        json!({"method": "GET", "url": "https://api.brokerage.test/v1/quote?symbol=ACME&fields=price",
               "status": 200}),
    )
    .await;
    let audit_body: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let audit = r
        .request(
            3,
            1,
            "POST",
            "api.brokerage.test",
            "/v1/audit",
            &[("content-type", "application/octet-stream")],
        )
        .await;
    seq.insert("audit_req", audit.seq());
    r.request_body(3, 1, &audit_body).await;
    r.response(3, 1, 204, "text/plain").await;
    // … while the agent itself (same pid as the MCP call) phones home: not beneath the call.
    r.conn(4, AGENT, "telemetry.example", "203.0.113.50:443")
        .await;
    let side = r
        .request(4, 0, "POST", "telemetry.example", "/v1/ping", &[])
        .await;
    seq.insert("agent_side_req", side.seq());
    r.request_body(4, 0, b"{}").await;
    r.response(4, 0, 202, "application/json").await;

    // The MCP result.
    let mresp = r.response(2, 1, 200, "application/json").await;
    seq.insert("mcp_resp", mresp.seq());
    r.response_body(
        2,
        1,
        br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ACME is at 12.50 USD"}],"isError":false}}"#,
    )
    .await;
    r.note(
        mresp,
        "semantics/mcp",
        "mcp_request",
        json!({"session": "mcp-s1", "messages": [{"id": 1, "method": "tools/call", "name": "get_quote",
               "arguments": {"symbol": "ACME"}, "kind": "request"}]}),
    )
    .await;
    r.note(
        mresp,
        "semantics/mcp",
        "mcp_response",
        json!({"session": "mcp-s1", "messages": [{"id": 1, "result": {
               "content": [{"type": "text", "text": "ACME is at 12.50 USD"}],
               "structuredContent": null, "isError": false}}]}),
    )
    .await;

    // 4. The result goes back to the model; buffered answer.
    let q2 = r
        .request(
            1,
            1,
            "POST",
            "api.anthropic.com",
            "/v1/messages",
            &[("content-type", "application/json"), ("x-api-key", SECRET)],
        )
        .await;
    seq.insert("model2_req", q2.seq());
    r.request_body(1, 1, br#"{"model":"claude-test","messages":["..."]}"#)
        .await;
    let resp2 = r.response(1, 1, 200, "application/json").await;
    seq.insert("model2_resp", resp2.seq());
    r.response_body(
        1,
        1,
        "{\"content\":[{\"type\":\"text\",\"text\":\"ACME trades at 12.50 — buying 10.\"}]}"
            .as_bytes(),
    )
    .await;
    r.note(
        resp2,
        "semantics/anthropic",
        "llm_request",
        json!({"provider": "anthropic", "api": "messages", "model": "claude-test", "stream": false,
               "messages": [
                 {"role": "user", "content": [{"type": "text", "text": question}]},
                 {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01", "name": "get_quote", "input": {"symbol": "ACME"}}]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01",
                   "content": "ACME is at 12.50 USD", "is_error": false}]}],
               "tools": ["get_quote"]}),
    )
    .await;
    r.note(
        resp2,
        "semantics/anthropic",
        "llm_response",
        json!({"provider": "anthropic", "api": "messages", "model": "claude-test", "id": "msg_2",
               "thinking": [], "redacted_thinking": 0,
               "text": ["ACME trades at 12.50 — buying 10."], "tool_calls": [],
               "stop_reason": "end_turn", "usage": {"input_tokens": 200, "output_tokens": 20}}),
    )
    .await;

    // 5. A refused destination and a stream cut off without its final chunk.
    let denied = r
        .add(Entry::ConnDenied(ConnDenied {
            conn: None,
            proto: "tcp".into(),
            dst: Some("203.0.113.9:443".parse().unwrap()),
            host: Some("evil.example".into()),
            caller: Some(caller(AGENT)),
            by: "kernel".into(),
            reason: "policy: destination not allowed".into(),
            rule: Some(3),
        }))
        .await;
    seq.insert("denied", denied.seq());
    r.conn(5, AGENT, "events.example", "203.0.113.60:443").await;
    r.request(5, 0, "GET", "events.example", "/events", &[])
        .await;
    r.response(5, 0, 200, "text/event-stream").await;
    r.chunk(5, 0, 0, b"data: one\n\n", false).await;
    r.chunk(5, 0, 1, b"data: two\n\n", false).await;
    for conn in 1..=5 {
        r.add(Entry::ConnClose(ConnClose {
            conn,
            bytes_up: 100,
            bytes_down: 100,
            duration_ms: 10,
            error: None,
            client_tls_end: None,
            upstream_tls_end: None,
        }))
        .await;
    }
    let file = w.path().to_owned();
    w.close(SessionClose::exited(Some(0), None)).await.unwrap();
    Scenario {
        dir,
        file,
        seq,
        sse: events.concat(),
        audit_body,
    }
}

/// The lines of a session file (without newlines).
pub fn lines(path: &Path) -> Vec<Vec<u8>> {
    std::fs::read(path)
        .unwrap()
        .split_inclusive(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\n").unwrap_or(l).to_vec())
        .collect()
}
