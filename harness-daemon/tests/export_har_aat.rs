//! `harness export`: HAR 1.2 that validates structurally and round-trips the exact bodies;
//! AAT records with the documented fields whose hashes are the ledger's chain.
mod timeline_support;

use harness::ledger::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use timeline_support::*;

// === HAR 1.2 structure (http://www.softwareishard.com/blog/har-12-spec/) ===

fn s<'a>(v: &'a Value, key: &str, at: &str) -> &'a str {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{at}.{key}: required string, got {:?}", v.get(key)))
}

fn int(v: &Value, key: &str, at: &str) -> i64 {
    v.get(key)
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("{at}.{key}: required integer, got {:?}", v.get(key)))
}

fn num(v: &Value, key: &str, at: &str) -> f64 {
    v.get(key)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{at}.{key}: required number, got {:?}", v.get(key)))
}

fn arr<'a>(v: &'a Value, key: &str, at: &str) -> &'a Vec<Value> {
    v.get(key)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("{at}.{key}: required array, got {:?}", v.get(key)))
}

fn obj<'a>(v: &'a Value, key: &str, at: &str) -> &'a Value {
    let o = v
        .get(key)
        .unwrap_or_else(|| panic!("{at}.{key}: required object"));
    assert!(o.is_object(), "{at}.{key}: not an object");
    o
}

fn opt_str(v: &Value, key: &str, at: &str) {
    if let Some(x) = v.get(key) {
        assert!(x.is_string(), "{at}.{key}: must be a string");
    }
}

fn name_values(v: &Value, key: &str, at: &str) {
    for (i, nv) in arr(v, key, at).iter().enumerate() {
        let at = format!("{at}.{key}[{i}]");
        s(nv, "name", &at);
        s(nv, "value", &at);
        opt_str(nv, "comment", &at);
    }
}

fn iso8601(t: &str, at: &str) {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{at}: {t:?} is not ISO 8601: {e}"));
}

/// Checks every member the HAR 1.2 spec requires, with its type.
fn validate_har(doc: &Value) {
    let log = obj(doc, "log", "");
    assert_eq!(s(log, "version", "log"), "1.2");
    let creator = obj(log, "creator", "log");
    s(creator, "name", "log.creator");
    s(creator, "version", "log.creator");
    opt_str(log, "comment", "log");
    if let Some(pages) = log.get("pages") {
        assert!(pages.is_array(), "log.pages must be an array");
    }
    for (i, e) in arr(log, "entries", "log").iter().enumerate() {
        let at = format!("log.entries[{i}]");
        iso8601(s(e, "startedDateTime", &at), &at);
        assert!(num(e, "time", &at) >= 0.0);
        let req = obj(e, "request", &at);
        let rat = format!("{at}.request");
        s(req, "method", &rat);
        let url = s(req, "url", &rat);
        assert!(
            url.starts_with("http://") || url.starts_with("https://"),
            "{rat}.url"
        );
        s(req, "httpVersion", &rat);
        arr(req, "cookies", &rat);
        name_values(req, "headers", &rat);
        name_values(req, "queryString", &rat);
        int(req, "headersSize", &rat);
        int(req, "bodySize", &rat);
        if let Some(post) = req.get("postData") {
            let pat = format!("{rat}.postData");
            s(post, "mimeType", &pat);
            s(post, "text", &pat);
            if let Some(p) = post.get("params") {
                assert!(p.is_array(), "{pat}.params");
            }
        }
        let resp = obj(e, "response", &at);
        let pat = format!("{at}.response");
        int(resp, "status", &pat);
        s(resp, "statusText", &pat);
        s(resp, "httpVersion", &pat);
        arr(resp, "cookies", &pat);
        name_values(resp, "headers", &pat);
        let content = obj(resp, "content", &pat);
        let cat = format!("{pat}.content");
        int(content, "size", &cat);
        s(content, "mimeType", &cat);
        opt_str(content, "text", &cat);
        opt_str(content, "encoding", &cat);
        s(resp, "redirectURL", &pat);
        int(resp, "headersSize", &pat);
        int(resp, "bodySize", &pat);
        obj(e, "cache", &at);
        let timings = obj(e, "timings", &at);
        let tat = format!("{at}.timings");
        for k in ["send", "wait", "receive"] {
            assert!(num(timings, k, &tat) >= 0.0, "{tat}.{k} must be >= 0");
        }
        for k in ["blocked", "dns", "connect", "ssl"] {
            if timings.get(k).is_some() {
                assert!(num(timings, k, &tat) >= -1.0, "{tat}.{k}");
            }
        }
        opt_str(e, "serverIPAddress", &at);
        opt_str(e, "connection", &at);
        opt_str(e, "comment", &at);
    }
}

/// The bytes a HAR body text stands for.
fn har_bytes(v: &Value) -> Vec<u8> {
    use base64::Engine as _;
    let text = v["text"].as_str().unwrap_or("");
    if v.get("encoding").and_then(Value::as_str) == Some("base64") {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap()
    } else {
        text.as_bytes().to_vec()
    }
}

fn body_bytes(dir: &std::path::Path, b: &Body) -> Vec<u8> {
    b.inline_bytes()
        .unwrap_or_else(|| std::fs::read(blob_path(dir, b.sha256())).unwrap())
}

#[tokio::test]
async fn har_validates_and_round_trips_exact_bodies() {
    let sc = record("har").await;
    let (code, out, err) = harness(&["export", sc.file.to_str().unwrap(), "--format", "har"]);
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    validate_har(&doc);
    assert!(!out.contains(SECRET), "a secret in clear in the HAR");
    assert!(
        !out.contains("brokerage-secret"),
        "a secret in clear in the HAR"
    );

    // The ledger's bodies, by (conn, exchange, direction).
    let recorded = read_session(&sc.file).unwrap();
    let mut whole: HashMap<(u64, u64, bool), Body> = HashMap::new();
    let mut streamed: HashMap<(u64, u64, bool), Vec<u8>> = HashMap::new();
    for r in &recorded {
        match &r.entry {
            Entry::HttpRequestBody(b) => {
                whole.insert((b.conn, b.exchange, true), b.body.clone());
            }
            Entry::HttpResponseBody(b) => {
                whole.insert((b.conn, b.exchange, false), b.body.clone());
            }
            Entry::StreamChunk(c) => streamed
                .entry((c.conn, c.exchange, c.direction == Direction::Up))
                .or_default()
                .extend(body_bytes(&sc.dir, &c.body)),
            _ => {}
        }
    }
    let entries = doc["log"]["entries"].as_array().unwrap();
    let requests = recorded
        .iter()
        .filter(|r| matches!(r.entry, Entry::HttpRequest(_)))
        .count();
    assert_eq!(entries.len(), requests);
    let mut checked = 0;
    for e in entries {
        let conn: u64 = e["connection"].as_str().unwrap().parse().unwrap();
        let exchange = e["_harness"]["exchange"].as_u64().unwrap();
        for (up, part) in [
            (true, e["request"].get("postData")),
            (false, e["response"].get("content")),
        ] {
            let key = (conn, exchange, up);
            let Some(part) = part else {
                assert!(!whole.contains_key(&key) && !streamed.contains_key(&key));
                continue;
            };
            let got = har_bytes(part);
            if let Some(b) = whole.get(&key) {
                assert_eq!(hex::encode(Sha256::digest(&got)), b.sha256(), "{key:?}");
                assert_eq!(got.len() as u64, b.len());
                checked += 1;
            } else if let Some(want) = streamed.get(&key) {
                assert_eq!(&got, want, "{key:?}");
                checked += 1;
            } else {
                assert!(got.is_empty(), "{key:?}");
            }
        }
    }
    assert!(checked >= 12, "only {checked} bodies checked");
    // The SSE stream is text, reassembled in order; the binary blob body is base64.
    let sse = entries
        .iter()
        .find(|e| {
            e["response"]["content"]["mimeType"] == "text/event-stream" && e["connection"] == "1"
        })
        .unwrap();
    assert_eq!(sse["response"]["content"]["text"], sc.sse.as_str());
    assert!(sse["response"]["content"].get("encoding").is_none());
    let audit = entries
        .iter()
        .find(|e| e["request"]["url"] == "https://api.brokerage.test/v1/audit")
        .unwrap();
    assert_eq!(audit["request"]["postData"]["encoding"], "base64");
    assert_eq!(har_bytes(&audit["request"]["postData"]), sc.audit_body);
    assert_eq!(audit["request"]["bodySize"], sc.audit_body.len());
    // Secrets are their fingerprints; query strings are split.
    let model = &entries[0];
    let key = model["request"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "x-api-key")
        .unwrap();
    assert!(key["value"].as_str().unwrap().starts_with("hmac-sha256:"));
    let quote = entries
        .iter()
        .find(|e| e["request"]["method"] == "GET" && e["connection"] == "3")
        .unwrap();
    assert_eq!(
        quote["request"]["queryString"],
        serde_json::json!([{"name": "symbol", "value": "ACME"}, {"name": "fields", "value": "price"}])
    );
    assert_eq!(quote["serverIPAddress"], "198.51.100.7");
    assert_eq!(quote["response"]["statusText"], "OK");
    // The cut-off stream says so.
    let cut = entries
        .iter()
        .find(|e| e["request"]["url"] == "https://events.example/events")
        .unwrap();
    assert_eq!(cut["response"]["content"]["_cutOff"], true);
    assert_eq!(
        cut["response"]["content"]["text"],
        "data: one\n\ndata: two\n\n"
    );

    // --out writes the same document; a ledger directory exports its sessions.
    let out_file = sc.dir.join("export.har");
    let (code, _, err) = harness(&[
        "export",
        sc.dir.to_str().unwrap(),
        "--format",
        "har",
        "--out",
        out_file.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), out);
}

#[tokio::test]
async fn aat_records_carry_the_ledger_chain() {
    let sc = record("aat").await;
    let (code, out, err) = harness(&["export", sc.file.to_str().unwrap(), "--format", "aat"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains(SECRET));
    let lines = lines(&sc.file);
    let records: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let id = sc.file.file_stem().unwrap().to_str().unwrap();
    let mut ids = std::collections::HashSet::new();
    let mut last_seq = None;
    for r in &records {
        for k in [
            "record_id",
            "timestamp",
            "agent_id",
            "agent_version",
            "session_id",
            "action_type",
            "outcome",
            "trust_level",
            "prev_hash",
            "entry_hash",
        ] {
            assert!(r[k].is_string(), "{k} missing or not a string in {r}");
        }
        assert!(r["action_detail"].is_object(), "{r}");
        assert!(r["parent_record_id"].is_string() || r["parent_record_id"].is_null());
        assert!(
            ids.insert(r["record_id"].as_str().unwrap().to_owned()),
            "duplicate record_id"
        );
        assert_eq!(r["session_id"], id);
        assert!(["success", "failure", "denied"].contains(&r["outcome"].as_str().unwrap()));
        let seq = r["seq"].as_u64().unwrap();
        assert!(last_seq < Some(seq), "records out of ledger order");
        last_seq = Some(seq);
        // The chain: prev_hash is the ledger entry's prev, entry_hash its hash.
        let line = &lines[seq as usize];
        let entry: Value = serde_json::from_slice(line).unwrap();
        assert_eq!(r["prev_hash"], entry["prev"], "seq {seq}");
        assert_eq!(
            r["entry_hash"],
            hex::encode(Sha256::digest(line)),
            "seq {seq}"
        );
        assert_eq!(r["timestamp"], entry["ts"]);
        if seq > 0 {
            assert_eq!(
                r["prev_hash"].as_str().unwrap(),
                hex::encode(Sha256::digest(&lines[seq as usize - 1]))
            );
        }
    }
    let by_seq = |seq: u64| records.iter().find(|r| r["seq"] == seq).unwrap();
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["action_type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"session_start"));
    assert_eq!(kinds.last(), Some(&"session_end"));
    assert!(kinds.contains(&"dns_query"));
    assert_eq!(kinds.iter().filter(|k| **k == "llm_call").count(), 2);
    assert_eq!(kinds.iter().filter(|k| **k == "tool_call").count(), 1);
    assert_eq!(kinds.iter().filter(|k| **k == "mcp_message").count(), 1);
    let model = by_seq(sc.seq["model1_req"]);
    assert_eq!(model["action_type"], "llm_call");
    assert_eq!(model["action_detail"]["model"], "claude-test");
    assert_eq!(model["action_detail"]["tool_calls"][0]["id"], "toolu_01");
    assert!(model["agent_id"].as_str().unwrap().ends_with(":pid:100"));
    let tool = by_seq(sc.seq["mcp_req"]);
    assert_eq!(tool["action_type"], "tool_call");
    assert_eq!(tool["outcome"], "success");
    assert_eq!(tool["parent_record_id"], model["record_id"]);
    assert_eq!(
        tool["action_detail"]["tool_calls"][0]["tool_use_id"],
        "toolu_01"
    );
    for k in ["quote_req", "audit_req"] {
        let ext = by_seq(sc.seq[k]);
        assert_eq!(ext["action_type"], "http_request");
        assert_eq!(ext["parent_record_id"], tool["record_id"], "{k}");
        assert!(ext["agent_id"].as_str().unwrap().ends_with(":pid:200"));
    }
    let audit = by_seq(sc.seq["audit_req"]);
    assert_eq!(
        audit["input_hash"],
        format!("sha256:{}", hex::encode(Sha256::digest(&sc.audit_body)))
    );
    assert!(by_seq(sc.seq["agent_side_req"])["parent_record_id"].is_null());
    let denied = by_seq(sc.seq["denied"]);
    assert_eq!(denied["action_type"], "connection_denied");
    assert_eq!(denied["outcome"], "denied");
    // The cut-off stream failed.
    let cut = records
        .iter()
        .find(|r| r["action_detail"]["url"] == "https://events.example/events")
        .unwrap();
    assert_eq!(cut["outcome"], "failure");
    // The ledger itself is intact.
    let (code, _, err) = harness(&["verify", sc.dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
}

#[tokio::test]
async fn export_errors_are_one_line() {
    let (code, _, err) = harness(&["export", "/nonexistent/x.jsonl", "--format", "har"]);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    let (code, _, _) = harness(&["export", "/nonexistent/x.jsonl", "--format", "zip"]);
    assert_eq!(code, 2);
}

fn gzip(b: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn har_text_is_decoded_and_sha256_is_of_the_recorded_bytes() {
    let dir = scratch("har-gzip");
    let ledger = Ledger::open(&dir).unwrap();
    let (w, _) = ledger.open_session(session_open()).await.unwrap();
    let r = Rec {
        ledger: &ledger,
        w: &w,
    };
    let json = r#"{"content":[{"type":"text","text":"ACME trades at 12.50 — buying 10. ünïcödé ✓"}],"stop_reason":"end_turn","usage":{"input_tokens":20,"output_tokens":9}}"#.repeat(20);
    let wire = gzip(json.as_bytes());
    let question = br#"{"model":"claude-test","messages":[{"role":"user","content":"hi"}]}"#;
    let question_wire = gzip(question);
    r.conn(1, AGENT, "api.anthropic.com", "160.79.104.10:443")
        .await;
    r.request(
        1,
        0,
        "POST",
        "api.anthropic.com",
        "/v1/messages",
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
    )
    .await;
    r.request_body(1, 0, &question_wire).await;
    let head = |status, coding: &str| HttpResponse {
        conn: 1,
        exchange: 0,
        version: "HTTP/1.1".into(),
        status,
        headers: vec![
            ledger.header("content-type", b"application/json"),
            ledger.header("content-encoding", coding.as_bytes()),
        ],
    };
    r.add(Entry::HttpResponse(head(200, "gzip"))).await;
    r.response_body(1, 0, &wire).await;
    // A second exchange whose gzip body is cut: shown as recorded, saying why.
    let cut = &wire[..wire.len() / 2];
    r.request(1, 1, "GET", "api.anthropic.com", "/v1/models", &[])
        .await;
    r.add(Entry::HttpResponse(HttpResponse {
        exchange: 1,
        ..head(200, "gzip")
    }))
    .await;
    r.response_body(1, 1, cut).await;
    let file = w.path().to_owned();
    w.close(SessionClose {
        exit_code: Some(0),
        signal: None,
    })
    .await
    .unwrap();

    let (code, out, err) = harness(&["export", file.to_str().unwrap(), "--format", "har"]);
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    validate_har(&doc);
    let entries = doc["log"]["entries"].as_array().unwrap();
    let (req, resp) = (&entries[0]["request"], &entries[0]["response"]);
    let content = &resp["content"];
    assert_eq!(content["text"], json.as_str());
    assert!(content.get("encoding").is_none());
    assert_eq!(content["size"], json.len());
    assert_eq!(content["compression"], json.len() - wire.len());
    assert_eq!(content["_sha256"], hex::encode(Sha256::digest(&wire)));
    assert_eq!(resp["bodySize"], wire.len());
    let comment = content["comment"].as_str().unwrap();
    assert!(
        comment.starts_with("decoded from content-encoding gzip"),
        "{comment}"
    );
    assert_eq!(har_bytes(&req["postData"]), question);
    assert_eq!(
        req["postData"]["_sha256"],
        hex::encode(Sha256::digest(&question_wire))
    );
    assert_eq!(req["bodySize"], question_wire.len());

    let content = &entries[1]["response"]["content"];
    assert_eq!(content["encoding"], "base64");
    assert_eq!(har_bytes(content), cut);
    assert_eq!(content["size"], cut.len());
    assert!(content.get("compression").is_none());
    let comment = content["comment"].as_str().unwrap();
    assert!(
        comment.starts_with("content-encoding gzip not undone (gzip data ends early"),
        "{comment}"
    );
}
