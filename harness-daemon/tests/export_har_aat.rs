//! `harness export`: HAR 1.2 that validates structurally and round-trips the exact bodies;
//! AAT records that follow draft-sharif-agent-audit-trail-04, chained over themselves.
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

// === Agent Audit Trail (draft-sharif-agent-audit-trail-04) ===
// Everything below is checked from the draft's rules, written out here, not by calling the
// exporter's own helpers: a test that asks the exporter whether it agrees with itself proves
// nothing.

/// Section 3.1: the twelve mandatory fields.
const AAT_MANDATORY: [&str; 12] = [
    "record_id",
    "timestamp",
    "agent_id",
    "agent_version",
    "session_id",
    "action_type",
    "action_detail",
    "outcome",
    "trust_level",
    "parent_record_id",
    "prev_hash",
    "record_phase",
];
/// Section 7: the action taxonomy, and the action_detail fields each type REQUIRES.
const AAT_ACTIONS: [(&str, &[&str]); 7] = [
    ("tool_call", &["tool_name", "parameters_hash"]),
    (
        "tool_response",
        &["tool_name", "response_hash", "parent_call_id"],
    ),
    ("decision", &["decision_type"]),
    (
        "delegation",
        &[
            "delegate_agent_id",
            "delegate_trust_level",
            "task_description_hash",
        ],
    ),
    ("escalation", &["escalation_reason", "escalation_target"]),
    (
        "error",
        &[
            "error_code",
            "error_message",
            "error_category",
            "recoverable",
        ],
    ),
    ("lifecycle", &["event"]),
];
const AAT_OUTCOMES: [&str; 5] = ["success", "failure", "timeout", "denied", "escalated"];
const AAT_TRUST: [&str; 5] = ["L0", "L1", "L2", "L3", "L4"];
const AAT_PHASES: [&str; 3] = ["pre_execution", "post_execution", "concurrent"];

fn is_hex64(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn is_uuid4(v: &Value) -> bool {
    let Some(s) = v.as_str() else { return false };
    let b = s.as_bytes();
    b.len() == 36
        && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
        && b.iter().enumerate().all(|(i, c)| {
            [8, 13, 18, 23].contains(&i) || c.is_ascii_digit() || (b'a'..=b'f').contains(c)
        })
        && b[14] == b'4'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b')
}

/// Section 6.1 from the formula: prev_hash(N) = hex(SHA-256(JCS(record(N-1)))), the record
/// without `signature`; the genesis prev_hash is null; parent_record_id is record N-1's id.
/// Returns the index of every record whose link does not hold.
fn broken_links(records: &[Value]) -> Vec<usize> {
    let mut bad = Vec::new();
    for (n, r) in records.iter().enumerate() {
        if n == 0 {
            if !r["prev_hash"].is_null() || !r["parent_record_id"].is_null() {
                bad.push(n);
            }
            continue;
        }
        let mut prev = records[n - 1].clone();
        prev.as_object_mut().unwrap().remove("signature");
        let want = hex::encode(Sha256::digest(serde_jcs::to_vec(&prev).unwrap()));
        if r["prev_hash"] != want.as_str() || r["parent_record_id"] != records[n - 1]["record_id"] {
            bad.push(n);
        }
    }
    bad
}

fn aat_export(sc: &Scenario) -> (String, Vec<Value>) {
    let (code, out, err) = harness(&["export", sc.file.to_str().unwrap(), "--format", "aat"]);
    assert_eq!(code, 0, "{err}");
    let records = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out, records)
}

#[tokio::test]
async fn aat_records_follow_the_draft() {
    let sc = record("aat").await;
    let (out, records) = aat_export(&sc);
    assert!(!out.contains(SECRET));
    assert!(records.len() > 10);
    let ledger_lines = lines(&sc.file);
    let ulid = sc.file.file_stem().unwrap().to_str().unwrap();
    let mut ids = std::collections::HashSet::new();
    let mut last_ts = String::new();
    for (n, (r, line)) in records.iter().zip(out.lines()).enumerate() {
        // Each line is its record's JCS form (so prev_hash is also SHA-256 of the line before).
        assert_eq!(
            serde_jcs::to_string(r).unwrap(),
            line,
            "line {n} is not JCS"
        );
        assert!(
            line.len() <= 64 * 1024,
            "record {n} exceeds 64 KB (Section 3.3)"
        );
        for k in AAT_MANDATORY {
            assert!(r.get(k).is_some(), "record {n}: mandatory {k} missing: {r}");
        }
        let at = r["action_type"].as_str().unwrap();
        let (_, required) = AAT_ACTIONS
            .iter()
            .find(|(t, _)| *t == at)
            .unwrap_or_else(|| panic!("record {n}: action_type {at} not in Section 7"));
        let d = &r["action_detail"];
        assert!(d.is_object(), "record {n}");
        for k in *required {
            assert!(
                d.get(*k).is_some(),
                "record {n} ({at}): action_detail.{k} missing"
            );
        }
        if at == "error" {
            assert!(d["recoverable"].is_boolean());
        }
        for k in ["parameters_hash", "response_hash"] {
            if let Some(h) = d.get(k) {
                assert!(is_hex64(h), "record {n}: {k}");
            }
        }
        assert!(d
            .as_object()
            .unwrap()
            .keys()
            .all(|k| !k.starts_with("aat_")));
        assert!(
            AAT_OUTCOMES.contains(&r["outcome"].as_str().unwrap()),
            "record {n}"
        );
        assert!(
            AAT_TRUST.contains(&r["trust_level"].as_str().unwrap()),
            "record {n}"
        );
        assert!(
            AAT_PHASES.contains(&r["record_phase"].as_str().unwrap()),
            "record {n}"
        );
        if (at, r["outcome"].as_str().unwrap()) == ("decision", "denied") {
            assert_eq!(r["record_phase"], "pre_execution", "Section 4.2");
        }
        assert!(
            is_uuid4(&r["record_id"]) && is_uuid4(&r["session_id"]),
            "record {n}"
        );
        assert!(
            ids.insert(r["record_id"].as_str().unwrap().to_owned()),
            "duplicate record_id"
        );
        assert_eq!(
            r["session_id"], records[0]["session_id"],
            "one chain, one session"
        );
        assert_eq!(
            r["agent_id"], records[0]["agent_id"],
            "one chain, one agent"
        );
        assert!(r["agent_id"].as_str().unwrap().starts_with("urn:harness:"));
        assert!(r["agent_version"].as_str().is_some_and(|v| !v.is_empty()));
        let ts = r["timestamp"].as_str().unwrap();
        iso8601(ts, &format!("record {n}"));
        assert!(ts >= last_ts.as_str(), "record {n}: timestamps go back");
        last_ts = ts.to_owned();
        for k in ["input_hash", "output_hash"] {
            if let Some(h) = r.get(k) {
                assert!(is_hex64(h), "record {n}: {k} is not lowercase hex SHA-256");
            }
        }
        assert_eq!(r["sequence_number"], n);
        // The ledger linkage: the entry the record stands on, checked against the file.
        assert_eq!(r["ledger_session"], ulid);
        let seq = r["ledger_seq"].as_u64().unwrap();
        let entry_line = &ledger_lines[seq as usize];
        let entry: Value = serde_json::from_slice(entry_line).unwrap();
        assert_eq!(
            r["ledger_entry_hash"],
            hex::encode(Sha256::digest(entry_line))
        );
        assert_eq!(r["ledger_prev"], entry["prev"]);
        assert_eq!(r["timestamp"], entry["ts"]);
        if n > 0 {
            assert!(r["ledger_seq"].as_u64() >= records[n - 1]["ledger_seq"].as_u64());
            assert_eq!(
                r["prev_hash"].as_str().unwrap(),
                hex::encode(Sha256::digest(out.lines().nth(n - 1).unwrap()))
            );
        }
    }
    assert_eq!(broken_links(&records), Vec::<usize>::new());

    // Genesis (Section 8.1): lifecycle/session_start, concurrent, nulls; the only one.
    let g = &records[0];
    assert_eq!(g["action_type"], "lifecycle");
    assert_eq!(g["action_detail"]["event"], "session_start");
    assert_eq!(g["record_phase"], "concurrent");
    assert!(g["prev_hash"].is_null() && g["parent_record_id"].is_null());
    assert_eq!(g["ledger_seq"], 0);
    let starts = records
        .iter()
        .filter(|r| r["action_detail"]["event"] == "session_start")
        .count();
    assert_eq!(starts, 1);
    // Close (Section 8.3): last, post_execution, session_hash over the raw prev_hash digests.
    let c = records.last().unwrap();
    assert_eq!(c["action_type"], "lifecycle");
    assert_eq!(c["action_detail"]["event"], "session_end");
    assert_eq!(c["record_phase"], "post_execution");
    let mut raw = Vec::new();
    for r in &records[1..] {
        raw.extend(hex::decode(r["prev_hash"].as_str().unwrap()).unwrap());
    }
    assert_eq!(
        c["action_detail"]["session_hash"],
        hex::encode(Sha256::digest(&raw))
    );
    assert_eq!(c["action_detail"]["record_count"], records.len());
    // No signature is claimed: the export is unsigned.
    assert!(records.iter().all(|r| r.get("signature").is_none()));

    // The ledger itself is intact.
    let (code, _, err) = harness(&["verify", sc.dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
}

#[tokio::test]
async fn aat_maps_exchanges_onto_the_taxonomy() {
    let sc = record("aat-map").await;
    let (_, records) = aat_export(&sc);
    let at = |seq: u64, t: &str| -> &Value {
        records
            .iter()
            .find(|r| r["ledger_seq"] == seq && r["action_type"] == t)
            .unwrap_or_else(|| panic!("no {t} record on seq {seq}"))
    };
    // A model call: the request (recorded before it was forwarded) and the response.
    let call = at(sc.seq["model1_req"], "tool_call");
    assert_eq!(call["record_phase"], "pre_execution");
    assert_eq!(call["outcome"], "success");
    assert_eq!(call["action_detail"]["harness_kind"], "llm_call");
    assert_eq!(call["action_detail"]["tool_name"], "llm:anthropic:messages");
    assert_eq!(call["action_detail"]["model"], "claude-test");
    assert_eq!(call["action_detail"]["pid"], 100);
    let answer = at(sc.seq["model1_resp"], "tool_response");
    assert_eq!(answer["record_phase"], "post_execution");
    assert_eq!(answer["action_detail"]["parent_call_id"], call["record_id"]);
    assert_eq!(answer["action_detail"]["tool_calls"][0]["id"], "toolu_01");
    assert_eq!(
        answer["output_hash"],
        hex::encode(Sha256::digest(sc.sse.as_bytes()))
    );
    // The MCP tools/call the model asked for: its parameters hash is over JCS(arguments).
    let tool = at(sc.seq["mcp_req"], "tool_call");
    assert_eq!(tool["action_detail"]["tool_name"], "get_quote");
    assert_eq!(tool["action_detail"]["tool_use_id"], "toolu_01");
    assert_eq!(
        tool["action_detail"]["parameters_hash"],
        hex::encode(Sha256::digest(br#"{"symbol":"ACME"}"#))
    );
    assert_eq!(
        tool["action_detail"]["caused_by_record_id"],
        answer["record_id"]
    );
    let result = at(sc.seq["mcp_resp"], "tool_response");
    assert_eq!(result["action_detail"]["parent_call_id"], tool["record_id"]);
    assert_eq!(result["outcome"], "success");
    // The tool server's requests beneath it.
    for k in ["quote_req", "audit_req"] {
        let ext = at(sc.seq[k], "tool_call");
        assert_eq!(ext["action_detail"]["harness_kind"], "http_request");
        assert_eq!(
            ext["action_detail"]["caused_by_record_id"], tool["record_id"],
            "{k}"
        );
        assert_eq!(ext["action_detail"]["pid"], 200);
    }
    let audit = at(sc.seq["audit_req"], "tool_call");
    assert_eq!(
        audit["input_hash"],
        hex::encode(Sha256::digest(&sc.audit_body))
    );
    assert_eq!(
        audit["action_detail"]["parameters_hash"],
        audit["input_hash"]
    );
    let side = at(sc.seq["agent_side_req"], "tool_call");
    assert!(side["action_detail"].get("caused_by_record_id").is_none());
    assert_eq!(
        at(sc.seq["list_req"], "tool_call")["action_detail"]["tool_name"],
        "mcp:tools/list"
    );
    // The refused destination is an enforcement decision, taken before anything was sent.
    let denied = at(sc.seq["denied"], "decision");
    assert_eq!(denied["outcome"], "denied");
    assert_eq!(denied["record_phase"], "pre_execution");
    assert_eq!(denied["action_detail"]["rule"], 3);
    // DNS: question and answer.
    let q = records
        .iter()
        .find(|r| r["action_detail"]["harness_kind"] == "dns_query")
        .unwrap();
    let a = records
        .iter()
        .find(|r| r["action_detail"]["harness_kind"] == "dns_answer")
        .unwrap();
    assert_eq!(a["action_detail"]["parent_call_id"], q["record_id"]);
    assert_eq!(a["outcome"], "success");
    // The cut-off stream failed.
    let cut = records
        .iter()
        .find(|r| r["action_detail"]["url"] == "https://events.example/events")
        .unwrap();
    let cut_resp = records
        .iter()
        .find(|r| r["action_detail"]["parent_call_id"] == cut["record_id"])
        .unwrap();
    assert_eq!(cut_resp["outcome"], "failure");
    assert_eq!(cut_resp["action_detail"]["cut_off"], true);
    // Exporting twice gives the same bytes (record ids are derived, not random).
    assert_eq!(aat_export(&sc).0, aat_export(&sc).0);
}

#[tokio::test]
async fn aat_tampering_breaks_the_recomputed_chain() {
    let sc = record("aat-tamper").await;
    let (_, records) = aat_export(&sc);
    assert!(broken_links(&records).is_empty());
    let mid = records.len() / 2;
    // An altered record: the next record's prev_hash no longer matches.
    let mut t = records.clone();
    t[mid]["outcome"] = "denied".into();
    assert_eq!(broken_links(&t), vec![mid + 1]);
    let mut t = records.clone();
    t[mid]["action_detail"]["tool_name"] = "delete_everything".into();
    assert_eq!(broken_links(&t), vec![mid + 1]);
    // A removed record, and two records swapped.
    let mut t = records.clone();
    t.remove(mid);
    assert_eq!(broken_links(&t), vec![mid]);
    let mut t = records.clone();
    t.swap(mid, mid + 1);
    assert!(broken_links(&t).contains(&mid));
    // A forged genesis link.
    let mut t = records.clone();
    t[0]["prev_hash"] = hex::encode([0u8; 32]).into();
    assert!(broken_links(&t).contains(&0) && broken_links(&t).contains(&1));
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
        reason: None,
        headers: vec![
            ledger.header("content-type", b"application/json"),
            ledger.header("content-encoding", coding.as_bytes()),
        ],
        answered_by: None,
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
    w.close(SessionClose::exited(Some(0), None)).await.unwrap();

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
