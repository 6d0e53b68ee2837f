//! Tests of the test peers themselves, with real clients over real TLS: our hyper client
//! (HTTP/1.1 and h2, trusting only the test CA) and curl when it is installed. The peers here
//! are local to the test, on loopback (these tests need no root), except in the privileged
//! tests that check a peer serves from the world (the test network namespace that stands for
//! the outside world in every enclosure test) just the same.
use std::net::IpAddr;
use std::time::Instant;

use harness_tests::peers::{
    bytes_sha256, pseudo_random_bytes, Client, Fail, FailRule, Peer, Reply, TestCa, ToolCall,
};
use harness_tests::{privileged, temp_dir, world};
use hyper::Version;
use serde_json::{json, Value};

const H2_H1: &[&[u8]] = &[b"h2", b"http/1.1"];
const H1: &[&[u8]] = &[b"http/1.1"];

fn ca(name: &str) -> TestCa {
    TestCa::create(temp_dir(&format!("peers-{name}"))).expect("creating the test CA")
}

fn client(ca: &TestCa, alpn: &[&[u8]]) -> Client {
    Client::new(ca.root_store(), alpn).expect("client config")
}

async fn peer(ca: &TestCa) -> Peer {
    Peer::builder(ca)
        .names(["api.example.test"])
        .start()
        .await
        .expect("starting the peer")
}

/// Splits an event stream into (event name, data) pairs.
fn sse_events(text: &str) -> Vec<(Option<String>, String)> {
    text.replace("\r\n", "\n")
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = None;
            let mut data = String::new();
            for line in e.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            (name, data)
        })
        .collect()
}

fn json_events(text: &str) -> Vec<(Option<String>, Value)> {
    sse_events(text)
        .into_iter()
        .filter(|(_, d)| d != "[DONE]")
        .map(|(n, d)| {
            let v = serde_json::from_str(&d).unwrap_or_else(|e| panic!("event data {d:?}: {e}"));
            (n, v)
        })
        .collect()
}

/// A reply with everything the semantics must cope with.
fn rich_reply() -> Reply {
    Reply {
        thinking: Some("Thinking about 株 and émigré prices… 🤔".into()),
        texts: vec![
            "First block: naïve café ☕.".into(),
            "Second block — 日本語のテキスト.".into(),
        ],
        tool_calls: vec![
            ToolCall {
                id: Some("toolu_A".into()),
                name: "get_quote".into(),
                input: json!({"symbol": "ACME"}),
            },
            ToolCall {
                id: Some("toolu_B".into()),
                name: "place_order".into(),
                input: json!({"symbol": "ACME", "qty": 3, "side": "buy", "note": "ünïcödé"}),
            },
        ],
        delta_chars: Some(5),
        ..Reply::default()
    }
}

// === TLS, versions, logging ===

#[test]
fn certificates_carry_the_extensions_strict_clients_need() {
    let ca = ca("cert");
    let cert = ca
        .issue(
            "leaf",
            &["a.example.test".into()],
            &["127.0.0.9".parse().unwrap()],
        )
        .unwrap();
    assert!(ca.cert_path().exists() && cert.cert_path.exists() && cert.key_path.exists());
    let der = cert.chain()[0].to_vec();
    let has = |needle: &[u8]| der.windows(needle.len()).any(|w| w == needle);
    assert!(
        has(&[0x06, 0x03, 0x55, 0x1d, 0x23]),
        "authority key identifier"
    );
    assert!(
        has(&[0x06, 0x03, 0x55, 0x1d, 0x0e]),
        "subject key identifier"
    );
    assert!(
        has(&[0x06, 0x03, 0x55, 0x1d, 0x11]),
        "subject alternative name"
    );
    assert!(
        has(&[0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01]),
        "EKU serverAuth"
    );
    assert!(has(b"a.example.test") && has(&[127, 0, 0, 9]));
}

#[tokio::test]
async fn serves_http1_and_h2_and_logs_exactly() {
    let ca = ca("versions");
    let peer = peer(&ca).await;
    let url = peer.url("/upload?x=1");
    for (alpn, version, proto) in [
        (H2_H1, Version::HTTP_2, "h2"),
        (H1, Version::HTTP_11, "http/1.1"),
    ] {
        let body = format!("hello over {proto} ✓");
        let resp = client(&ca, alpn)
            .post(peer.addr(), &url, &[("x-test", proto)], body.clone())
            .await
            .unwrap();
        assert_eq!(resp.version, version);
        assert_eq!(resp.alpn.as_deref(), Some(proto));
        assert_eq!(resp.status, 200);
        let answer = resp.json().await.unwrap();
        assert_eq!(answer["length"], body.len());
        let ex = peer.requests().pop().unwrap();
        assert_eq!(ex.alpn.as_deref(), Some(proto));
        assert_eq!(ex.sni.as_deref(), Some("api.example.test"));
        assert_eq!(ex.method, "POST");
        assert_eq!(ex.uri, "/upload?x=1");
        assert_eq!(ex.body.bytes.as_deref(), Some(body.as_bytes()));
        assert_eq!(answer["sha256"], ex.body.sha256);
        assert!(ex.headers.iter().any(|(n, v)| n == "x-test" && v == proto));
        let response = ex.response.expect("response logged");
        assert_eq!(response.status, 200);
        let sent = response.body.expect("response body logged");
        assert!(sent.complete);
        assert_eq!(
            serde_json::from_slice::<Value>(sent.bytes.as_deref().unwrap()).unwrap(),
            answer
        );
    }
    assert_eq!(peer.requests().len(), 2);
}

/// A peer on `ip` answers by name and by IP (its certificate names both); returns it.
async fn serves_on(ca: &TestCa, ip: IpAddr) -> Peer {
    let peer = Peer::builder(ca)
        .names(["multi.example.test"])
        .ip(ip)
        .start()
        .await
        .unwrap();
    assert_eq!(peer.addr().ip(), ip);
    let resp = client(ca, H2_H1)
        .get(peer.addr(), &peer.url("/health"))
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "ok\n");
    // The certificate also names the IP itself.
    let by_ip = format!("https://{}/health", peer.addr());
    let resp = client(ca, H1).get(peer.addr(), &by_ip).await.unwrap();
    assert_eq!(resp.status, 200);
    peer
}

#[tokio::test]
async fn listens_on_other_loopback_addresses_and_ipv6() {
    let ca = ca("addrs");
    for ip in ["127.0.0.2", "::1"] {
        serves_on(&ca, ip.parse().unwrap()).await;
    }
}

#[tokio::test]
async fn listens_in_the_world_over_ipv4_and_ipv6() {
    if !privileged("peer in the world") {
        return;
    }
    let ca = ca("world");
    for (ip, host) in [
        (world::addr(2), world::host_addr()),
        (world::addr6(2), world::host_addr6()),
    ] {
        let peer = serves_on(&ca, ip).await;
        // Reached over the veth: the host's end is who called.
        let seen = peer.requests();
        assert_eq!(seen.len(), 2);
        assert!(seen.iter().all(|r| r.client.ip() == host), "{seen:?}");
        assert!(seen.iter().all(|r| r.local == peer.addr()), "{seen:?}");
    }
}

#[tokio::test]
async fn untrusted_clients_fail_the_handshake() {
    let ca = ca("trust");
    let other = TestCa::create(temp_dir("peers-other-ca")).unwrap();
    let peer = peer(&ca).await;
    let err = client(&other, H2_H1)
        .get(peer.addr(), &peer.url("/health"))
        .await
        .err()
        .expect("a client trusting another CA must fail");
    assert!(err.to_string().contains("TLS"), "{err}");
}

#[tokio::test]
async fn log_endpoint_reports_every_request() {
    let ca = ca("log");
    let peer = peer(&ca).await;
    let c = client(&ca, H2_H1);
    c.post(
        peer.addr(),
        &peer.url("/upload"),
        &[],
        &b"\x00\xffbinary"[..],
    )
    .await
    .unwrap()
    .bytes()
    .await
    .unwrap();
    let log = c
        .get(peer.addr(), &peer.url("/__peer/log"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reqs = log["requests"].as_array().unwrap();
    assert_eq!(reqs.len(), 1, "the log route does not log itself: {log}");
    assert_eq!(reqs[0]["uri"], "/upload");
    assert_eq!(reqs[0]["body"]["bytes"], "AP9iaW5hcnk=");
    let back: Vec<harness_tests::peers::Exchange> =
        serde_json::from_value(log["requests"].clone()).unwrap();
    assert_eq!(back[0].body.bytes.as_deref(), Some(&b"\x00\xffbinary"[..]));
}

// === providers ===

/// Rebuilds Anthropic content blocks from a stream of events.
fn anthropic_assemble(events: &[(Option<String>, Value)]) -> (Vec<Value>, Value) {
    let mut blocks: Vec<Value> = Vec::new();
    let mut partial: Vec<String> = Vec::new();
    let mut stop = Value::Null;
    for (name, data) in events {
        assert_eq!(
            name.as_deref(),
            data["type"].as_str(),
            "event name = data.type"
        );
        match data["type"].as_str().unwrap() {
            "content_block_start" => {
                blocks.push(data["content_block"].clone());
                partial.push(String::new());
            }
            "content_block_delta" => {
                let i = data["index"].as_u64().unwrap() as usize;
                let d = &data["delta"];
                let b = &mut blocks[i];
                match d["type"].as_str().unwrap() {
                    "text_delta" => {
                        b["text"] = json!(format!(
                            "{}{}",
                            b["text"].as_str().unwrap(),
                            d["text"].as_str().unwrap()
                        ))
                    }
                    "thinking_delta" => {
                        b["thinking"] = json!(format!(
                            "{}{}",
                            b["thinking"].as_str().unwrap(),
                            d["thinking"].as_str().unwrap()
                        ))
                    }
                    "signature_delta" => b["signature"] = d["signature"].clone(),
                    "input_json_delta" => partial[i].push_str(d["partial_json"].as_str().unwrap()),
                    other => panic!("unexpected delta {other}"),
                }
            }
            "content_block_stop" => {
                let i = data["index"].as_u64().unwrap() as usize;
                if blocks[i]["type"] == "tool_use" {
                    blocks[i]["input"] = serde_json::from_str(&partial[i]).unwrap();
                }
            }
            "message_delta" => stop = data["delta"]["stop_reason"].clone(),
            _ => {}
        }
    }
    (blocks, stop)
}

#[tokio::test]
async fn anthropic_stream_and_buffered_say_the_same() {
    let ca = ca("anthropic");
    let peer = peer(&ca).await;
    let c = client(&ca, H2_H1);
    let reply = serde_json::to_string(&rich_reply()).unwrap();
    let headers = [("x-api-key", "sk-test"), ("x-peer-reply", reply.as_str())];
    let request = |stream: bool| {
        json!({"model": "claude-test", "max_tokens": 100, "stream": stream,
               "messages": [{"role": "user", "content": "buy ACME"}]})
        .to_string()
    };
    let url = peer.url("/v1/messages");
    let buffered = c
        .post(peer.addr(), &url, &headers, request(false))
        .await
        .unwrap();
    assert_eq!(buffered.status, 200);
    assert!(buffered.header("request-id").unwrap().starts_with("req_"));
    let buffered = buffered.json().await.unwrap();
    assert_eq!(buffered["stop_reason"], "tool_use");
    assert_eq!(buffered["content"].as_array().unwrap().len(), 5);

    let streamed = c
        .post(peer.addr(), &url, &headers, request(true))
        .await
        .unwrap();
    assert!(streamed
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    let events = json_events(&streamed.text().await.unwrap());
    let names: Vec<_> = events.iter().map(|(n, _)| n.clone().unwrap()).collect();
    assert_eq!(names.first().unwrap(), "message_start");
    assert_eq!(names.last().unwrap(), "message_stop");
    assert!(names.contains(&"ping".to_string()));
    let (blocks, stop) = anthropic_assemble(&events);
    assert_eq!(Value::Array(blocks), buffered["content"]);
    assert_eq!(stop, "tool_use");

    // Without a key: Anthropic's own error shape.
    let denied = c
        .post(peer.addr(), &url, &[], request(false))
        .await
        .unwrap();
    assert_eq!(denied.status, 401);
    assert_eq!(
        denied.json().await.unwrap()["error"]["type"],
        "authentication_error"
    );
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    use std::io::Read as _;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .expect("a gzip body");
    out
}

#[tokio::test]
async fn json_answers_are_gzipped_for_clients_that_accept_it() {
    let ca = ca("gzip");
    let peer = peer(&ca).await;
    let c = client(&ca, H2_H1);
    let request = |stream: bool| {
        json!({"model": "claude-test", "max_tokens": 100, "stream": stream,
               "messages": [{"role": "user", "content": "buy ACME"}]})
        .to_string()
    };
    let url = peer.url("/v1/messages");
    let key = ("x-api-key", "sk-test");
    let plain = c
        .post(peer.addr(), &url, &[key], request(false))
        .await
        .unwrap();
    assert!(plain.header("content-encoding").is_none());
    let plain = plain.bytes().await.unwrap();
    // As the Python SDK (httpx) asks.
    let accept = ("accept-encoding", "gzip, deflate");
    let gz = c
        .post(peer.addr(), &url, &[key, accept], request(false))
        .await
        .unwrap();
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert_eq!(gz.header("vary"), Some("accept-encoding"));
    let wire = gz.bytes().await.unwrap();
    let answer: Value = serde_json::from_slice(&gunzip(&wire)).unwrap();
    let plain: Value = serde_json::from_slice(&plain).unwrap();
    // Ids are per request; the rest is the same answer.
    assert_eq!(answer["content"][0], plain["content"][0]);
    assert_eq!(answer["content"][1], plain["content"][1]);
    assert_eq!(answer["content"][2]["input"], plain["content"][2]["input"]);
    assert_eq!(answer["stop_reason"], plain["stop_reason"]);
    // The log holds what went on the wire: the gzip bytes.
    let ex = peer.requests().pop().unwrap();
    let response = ex.response.unwrap();
    assert!(response
        .headers
        .iter()
        .any(|(n, v)| n == "content-encoding" && v == "gzip"));
    assert_eq!(response.body.unwrap().bytes.as_deref(), Some(wire.as_ref()));
    // Errors are JSON too, and gzip'd alike.
    let denied = c
        .post(peer.addr(), &url, &[accept], request(false))
        .await
        .unwrap();
    assert_eq!(denied.status, 401);
    assert_eq!(denied.header("content-encoding"), Some("gzip"));
    // Event streams and bulk bytes are never encoded; nor is anything for gzip;q=0.
    let sse = c
        .post(peer.addr(), &url, &[key, accept], request(true))
        .await
        .unwrap();
    assert!(sse.header("content-encoding").is_none());
    let bulk = c
        .send(
            peer.addr(),
            harness_tests::peers::build(
                "GET",
                &peer.url("/bytes/1000"),
                &[accept],
                Default::default(),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    assert!(bulk.header("content-encoding").is_none());
    let refused = c
        .post(
            peer.addr(),
            &url,
            &[key, ("accept-encoding", "gzip;q=0, identity")],
            request(false),
        )
        .await
        .unwrap();
    assert!(refused.header("content-encoding").is_none());
}

#[tokio::test]
async fn anthropic_answers_a_tool_result_with_the_after_tool_reply() {
    let ca = ca("after-tool");
    let peer = peer(&ca).await;
    let c = client(&ca, H1);
    let first = c
        .post(
            peer.addr(),
            &peer.url("/v1/messages"),
            &[("x-api-key", "k")],
            json!({"model": "m", "max_tokens": 10,
                   "messages": [{"role": "user", "content": "buy"}]})
            .to_string(),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tool_use = first["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "tool_use")
        .unwrap()
        .clone();
    assert_eq!(tool_use["name"], "place_order");
    let second = c
        .post(
            peer.addr(),
            &peer.url("/v1/messages"),
            &[("x-api-key", "k")],
            json!({"model": "m", "max_tokens": 10, "messages": [
                {"role": "user", "content": "buy"},
                {"role": "assistant", "content": first["content"]},
                {"role": "user", "content": [{"type": "tool_result",
                    "tool_use_id": tool_use["id"], "content": "ok"}]}]})
            .to_string(),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(second["stop_reason"], "end_turn");
    assert_eq!(second["content"][0]["type"], "text");
}

#[tokio::test]
async fn openai_chat_stream_assembles_to_the_buffered_answer() {
    let ca = ca("chat");
    let peer = peer(&ca).await;
    let c = client(&ca, H2_H1);
    let reply = serde_json::to_string(&rich_reply()).unwrap();
    let headers = [
        ("authorization", "Bearer sk-test"),
        ("x-peer-reply", reply.as_str()),
    ];
    let url = peer.url("/v1/chat/completions");
    let req = |stream: bool| {
        json!({"model": "gpt-test", "stream": stream, "n": 2,
               "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
    };
    let buffered = c
        .post(peer.addr(), &url, &headers, req(false))
        .await
        .unwrap();
    let buffered = buffered.json().await.unwrap();
    assert_eq!(buffered["object"], "chat.completion");
    assert_eq!(buffered["choices"].as_array().unwrap().len(), 2);
    let message = &buffered["choices"][1]["message"];
    assert_eq!(buffered["choices"][1]["finish_reason"], "tool_calls");

    let text = c
        .post(peer.addr(), &url, &headers, req(true))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let raw = sse_events(&text);
    assert_eq!(raw.last().unwrap().1, "[DONE]");
    let events = json_events(&text);
    let mut content = String::new();
    let mut calls: Vec<(String, String, String)> = Vec::new();
    let mut finish = Value::Null;
    for (_, e) in &events {
        assert_eq!(e["object"], "chat.completion.chunk");
        for ch in e["choices"].as_array().unwrap() {
            if ch["index"] != 1 {
                continue;
            }
            let d = &ch["delta"];
            if let Some(s) = d["content"].as_str() {
                content.push_str(s);
            }
            for tc in d["tool_calls"].as_array().into_iter().flatten() {
                let i = tc["index"].as_u64().unwrap() as usize;
                if calls.len() <= i {
                    calls.push((
                        tc["id"].as_str().unwrap().into(),
                        tc["function"]["name"].as_str().unwrap().into(),
                        String::new(),
                    ));
                }
                calls[i]
                    .2
                    .push_str(tc["function"]["arguments"].as_str().unwrap());
            }
            if !ch["finish_reason"].is_null() {
                finish = ch["finish_reason"].clone();
            }
        }
    }
    assert_eq!(content, message["content"].as_str().unwrap());
    assert_eq!(finish, "tool_calls");
    let buffered_calls: Vec<(String, String, String)> = message["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap().into(),
                t["function"]["name"].as_str().unwrap().into(),
                t["function"]["arguments"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(calls, buffered_calls);
    let last = &events.last().unwrap().1;
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"], buffered["usage"]);
}

#[tokio::test]
async fn openai_responses_stream_assembles_to_the_buffered_answer() {
    let ca = ca("responses");
    let peer = peer(&ca).await;
    let c = client(&ca, H2_H1);
    let reply = serde_json::to_string(&rich_reply()).unwrap();
    let headers = [
        ("authorization", "Bearer sk-test"),
        ("x-peer-reply", reply.as_str()),
    ];
    let url = peer.url("/v1/responses");
    let req =
        |stream: bool| json!({"model": "o-test", "stream": stream, "input": "hi"}).to_string();
    let buffered = c
        .post(peer.addr(), &url, &headers, req(false))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(buffered["status"], "completed");
    let output = buffered["output"].as_array().unwrap();
    let kinds: Vec<_> = output.iter().map(|o| o["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["reasoning", "message", "function_call", "function_call"]
    );

    let text = c
        .post(peer.addr(), &url, &headers, req(true))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events = json_events(&text);
    let mut texts = String::new();
    let mut args = String::new();
    let mut summary = String::new();
    for (i, (name, e)) in events.iter().enumerate() {
        assert_eq!(name.as_deref(), e["type"].as_str());
        assert_eq!(e["sequence_number"], i);
        match e["type"].as_str().unwrap() {
            "response.output_text.delta" => texts.push_str(e["delta"].as_str().unwrap()),
            "response.function_call_arguments.delta" => args.push_str(e["delta"].as_str().unwrap()),
            "response.reasoning_summary_text.delta" => {
                summary.push_str(e["delta"].as_str().unwrap())
            }
            _ => {}
        }
    }
    assert_eq!(events[0].1["type"], "response.created");
    let done = &events.last().unwrap().1;
    assert_eq!(done["type"], "response.completed");
    let out = &done["response"]["output"];
    assert_eq!(summary, out[0]["summary"][0]["text"].as_str().unwrap());
    assert_eq!(
        texts,
        format!(
            "{}{}",
            out[1]["content"][0]["text"].as_str().unwrap(),
            out[1]["content"][1]["text"].as_str().unwrap()
        )
    );
    assert_eq!(
        args,
        format!(
            "{}{}",
            out[2]["arguments"].as_str().unwrap(),
            out[3]["arguments"].as_str().unwrap()
        )
    );
    // Same content as the buffered answer (item ids are per response).
    let strip = |v: &Value| {
        let mut v = v.clone();
        for item in v.as_array_mut().unwrap() {
            item.as_object_mut().unwrap().remove("id");
        }
        v
    };
    assert_eq!(strip(out), strip(&buffered["output"]));
}

#[tokio::test]
async fn gemini_generate_and_stream() {
    let ca = ca("gemini");
    let peer = peer(&ca).await;
    let c = client(&ca, H2_H1);
    let reply = serde_json::to_string(&rich_reply()).unwrap();
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}).to_string();
    let base = peer.url("/v1beta/models/gemini-test");

    let denied = c
        .post(
            peer.addr(),
            &format!("{base}:generateContent"),
            &[],
            body.clone(),
        )
        .await
        .unwrap();
    assert_eq!(denied.status, 403);
    assert_eq!(
        denied.json().await.unwrap()["error"]["status"],
        "PERMISSION_DENIED"
    );

    let buffered = c
        .post(
            peer.addr(),
            &format!("{base}:generateContent"),
            &[("x-goog-api-key", "g-key"), ("x-peer-reply", &reply)],
            body.clone(),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let parts = buffered["candidates"][0]["content"]["parts"]
        .as_array()
        .unwrap();
    assert_eq!(parts[0]["thought"], true);
    assert_eq!(parts[3]["functionCall"]["name"], "get_quote");
    assert_eq!(buffered["candidates"][0]["finishReason"], "STOP");

    // Key in the query, SSE framing.
    let sse = c
        .post(
            peer.addr(),
            &format!("{base}:streamGenerateContent?alt=sse&key=g-key"),
            &[("x-peer-reply", &reply)],
            body.clone(),
        )
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(sse.contains("\r\n\r\n"));
    let chunks: Vec<Value> = json_events(&sse).into_iter().map(|(_, v)| v).collect();
    let array = c
        .post(
            peer.addr(),
            &format!("{base}:streamGenerateContent?key=g-key"),
            &[("x-peer-reply", &reply)],
            body,
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(array.as_array().unwrap().len(), chunks.len());
    // Reassemble: consecutive text parts of the same kind concatenate.
    let mut thought = String::new();
    let mut text = String::new();
    let mut calls = Vec::new();
    for ch in &chunks {
        for p in ch["candidates"][0]["content"]["parts"].as_array().unwrap() {
            if p["thought"] == true {
                thought.push_str(p["text"].as_str().unwrap());
            } else if let Some(t) = p["text"].as_str() {
                text.push_str(t);
            } else {
                calls.push(p["functionCall"].clone());
            }
        }
    }
    assert_eq!(thought, parts[0]["text"].as_str().unwrap());
    assert_eq!(
        text,
        format!(
            "{}{}",
            parts[1]["text"].as_str().unwrap(),
            parts[2]["text"].as_str().unwrap()
        )
    );
    assert_eq!(
        calls,
        vec![
            parts[3]["functionCall"].clone(),
            parts[4]["functionCall"].clone()
        ]
    );
    assert_eq!(
        chunks.last().unwrap()["candidates"][0]["finishReason"],
        "STOP"
    );
}

// === MCP and brokerage ===

async fn mcp(
    c: &Client,
    peer: &Peer,
    session: Option<&str>,
    accept: &str,
    msg: Value,
) -> harness_tests::peers::Response {
    let mut headers = vec![("content-type", "application/json"), ("accept", accept)];
    if let Some(s) = session {
        headers.push(("mcp-session-id", s));
    }
    c.post(peer.addr(), &peer.url("/mcp"), &headers, msg.to_string())
        .await
        .unwrap()
}

const BOTH: &str = "application/json, text/event-stream";

#[tokio::test]
async fn mcp_session_tools_and_a_tool_that_calls_the_brokerage() {
    let ca = ca("mcp");
    let peer = peer(&ca).await;
    let c = client(&ca, H2_H1);

    let init = mcp(
        &c,
        &peer,
        None,
        BOTH,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "test", "version": "1"}}}),
    )
    .await;
    assert_eq!(init.status, 200);
    let session = init.header("mcp-session-id").unwrap().to_string();
    let init = init.json().await.unwrap();
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
    assert!(init["result"]["capabilities"]["tools"].is_object());

    let note = mcp(
        &c,
        &peer,
        Some(&session),
        BOTH,
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!(note.status, 202);
    assert!(note.bytes().await.unwrap().is_empty());

    let no_session = mcp(
        &c,
        &peer,
        None,
        BOTH,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    )
    .await;
    assert_eq!(no_session.status, 400);
    let bad_session = mcp(
        &c,
        &peer,
        Some("nope"),
        BOTH,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    )
    .await;
    assert_eq!(bad_session.status, 404);

    let list = mcp(
        &c,
        &peer,
        Some(&session),
        BOTH,
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}),
    )
    .await
    .json()
    .await
    .unwrap();
    let names: Vec<_> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"place_order".into()) && names.contains(&"get_quote".into()));

    // tools/call place_order, answered as JSON: the server calls the brokerage over HTTPS.
    let args = json!({"symbol": "ACME", "qty": 10, "side": "buy"});
    let call = mcp(
        &c,
        &peer,
        Some(&session),
        BOTH,
        json!({"jsonrpc": "2.0", "id": "c-1",
        "method": "tools/call", "params": {"name": "place_order", "arguments": args}}),
    )
    .await;
    assert!(call
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let call = call.json().await.unwrap();
    assert_eq!(call["id"], "c-1");
    let result = &call["result"];
    assert_eq!(result["isError"], false);
    assert_eq!(result["structuredContent"]["status"], "filled");
    assert_eq!(result["structuredContent"]["symbol"], "ACME");
    assert!(result["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("ord_000001"));
    let out = peer.outbound();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].method, "POST");
    assert!(out[0].url.ends_with("/v1/orders"));
    assert_eq!(out[0].outcome, Ok(201));
    let broker_req = peer
        .requests()
        .into_iter()
        .find(|r| r.uri == "/v1/orders")
        .expect("the brokerage saw the order");
    assert_eq!(broker_req.body.json().unwrap(), args);
    assert!(broker_req
        .headers
        .iter()
        .any(|(n, v)| n == "authorization" && v.starts_with("Bearer ")));
    assert_eq!(out[0].request_body.sha256, broker_req.body.sha256);
    assert_eq!(peer.orders().len(), 1);

    // The same as SSE (only text/event-stream accepted), with a progress notification.
    let call = mcp(
        &c,
        &peer,
        Some(&session),
        "text/event-stream",
        json!({"jsonrpc": "2.0",
        "id": 7, "method": "tools/call", "params": {"name": "get_quote",
        "arguments": {"symbol": "ACME"}, "_meta": {"progressToken": "p"}}}),
    )
    .await;
    assert!(call
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    let events = json_events(&call.text().await.unwrap());
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].0.as_deref(), Some("message"));
    assert_eq!(events[0].1["method"], "notifications/progress");
    assert_eq!(events[1].1["id"], 7);
    assert_eq!(events[1].1["result"]["structuredContent"]["symbol"], "ACME");

    // A failing tool, an unknown tool, an unknown method.
    let fail = mcp(
        &c,
        &peer,
        Some(&session),
        BOTH,
        json!({"jsonrpc": "2.0", "id": 8,
        "method": "tools/call", "params": {"name": "fail", "arguments": {}}}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(fail["result"]["isError"], true);
    let unknown = mcp(
        &c,
        &peer,
        Some(&session),
        BOTH,
        json!({"jsonrpc": "2.0", "id": 9,
        "method": "tools/call", "params": {"name": "nope"}}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(unknown["error"]["code"], -32602);
    let method = mcp(
        &c,
        &peer,
        Some(&session),
        BOTH,
        json!({"jsonrpc": "2.0", "id": 10, "method": "resources/list"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(method["error"]["code"], -32601);
}

#[tokio::test]
async fn mcp_tool_reports_a_failing_brokerage_as_is_error() {
    let ca = ca("mcp-broker-down");
    let broker = Peer::builder(&ca)
        .names(["broker.example.test"])
        .fail(Fail::Status(503))
        .start()
        .await
        .unwrap();
    let peer = Peer::builder(&ca)
        .names(["mcp.example.test"])
        .upstream(harness_tests::peers::Upstream {
            base_url: broker.url(""),
            connect: Some(broker.addr()),
            token: "t".into(),
        })
        .mcp_sse(true)
        .start()
        .await
        .unwrap();
    let c = client(&ca, H1);
    let init = mcp(
        &c,
        &peer,
        None,
        BOTH,
        json!({"jsonrpc": "2.0", "id": 1,
        "method": "initialize", "params": {}}),
    )
    .await;
    let session = init.header("mcp-session-id").unwrap().to_string();
    assert!(init
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    let call = mcp(
        &c,
        &peer,
        Some(&session),
        BOTH,
        json!({"jsonrpc": "2.0", "id": 2,
        "method": "tools/call", "params": {"name": "place_order",
        "arguments": {"symbol": "ACME", "qty": 1, "side": "sell"}}}),
    )
    .await;
    let events = json_events(&call.text().await.unwrap());
    assert_eq!(events[0].1["result"]["isError"], true);
    assert_eq!(broker.requests().len(), 1);
    assert_eq!(peer.outbound()[0].outcome, Ok(503));
}

#[tokio::test]
async fn brokerage_requires_a_bearer_token() {
    let ca = ca("broker");
    let peer = peer(&ca).await;
    let c = client(&ca, H2_H1);
    let url = peer.url("/v1/quotes/ACME");
    let denied = c.get(peer.addr(), &url).await.unwrap();
    assert_eq!(denied.status, 401);
    let quote = c
        .send(
            peer.addr(),
            hyper::Request::get(&url)
                .header("authorization", "Bearer abc")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(quote["symbol"], "ACME");
    assert!(quote["last"].as_f64().unwrap() > 0.0);
    let bad = c
        .post(
            peer.addr(),
            &peer.url("/v1/orders"),
            &[("authorization", "Bearer abc")],
            r#"{"symbol":"ACME","qty":0,"side":"buy"}"#,
        )
        .await
        .unwrap();
    assert_eq!(bad.status, 422);
}

// === streaming and failures ===

#[tokio::test]
async fn sse_events_arrive_one_by_one_when_slow() {
    let ca = ca("slow");
    let peer = peer(&ca).await;
    for alpn in [H2_H1, H1] {
        let mut resp = client(&ca, alpn)
            .post(
                peer.addr(),
                &peer.url("/v1/messages"),
                &[("x-api-key", "k"), ("x-peer-fail", "slow=60")],
                json!({"model": "m", "max_tokens": 5, "stream": true,
                       "messages": [{"role": "user", "content": "hi"}]})
                .to_string(),
            )
            .await
            .unwrap();
        let mut arrivals: Vec<(Instant, String)> = Vec::new();
        while let Some(chunk) = resp.chunk().await {
            let chunk = chunk.unwrap();
            arrivals.push((Instant::now(), String::from_utf8(chunk.to_vec()).unwrap()));
        }
        let whole: String = arrivals.iter().map(|(_, c)| c.as_str()).collect();
        let events = sse_events(&whole);
        // No read completed two events at once: the stream was not buffered. (An event may
        // span reads; the arrival times only order the reads.)
        let mut text = String::new();
        let mut completed = 0;
        for (_, chunk) in &arrivals {
            text.push_str(chunk);
            let now = text.matches("\n\n").count();
            assert!(
                now - completed <= 1,
                "{alpn:?}: two events in one read: {chunk:?}"
            );
            completed = now;
        }
        assert_eq!(completed, events.len());
        assert!(arrivals.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(events[0].0.as_deref(), Some("message_start"));
        assert_eq!(events.last().unwrap().0.as_deref(), Some("message_stop"));
    }
}

#[tokio::test]
async fn injected_statuses_keep_their_headers_and_error_shapes() {
    let ca = ca("status");
    let peer = peer(&ca).await;
    let c = client(&ca, H2_H1);
    let cases = [
        (
            "/v1/messages",
            "status=429",
            429,
            "/error/type",
            json!("rate_limit_error"),
        ),
        (
            "/v1/chat/completions",
            "status=429",
            429,
            "/error/code",
            json!("rate_limit_exceeded"),
        ),
        (
            "/v1beta/models/g:generateContent",
            "status=500",
            500,
            "/error/status",
            json!("INTERNAL"),
        ),
        (
            "/v1/orders",
            "status=500",
            500,
            "/error/code",
            json!("internal_server_error"),
        ),
    ];
    for (path, fail, status, pointer, expected) in cases {
        let resp = c
            .post(peer.addr(), &peer.url(path), &[("x-peer-fail", fail)], "{}")
            .await
            .unwrap();
        assert_eq!(resp.status, status, "{path}");
        if status == 429 {
            assert_eq!(resp.header("retry-after"), Some("7"));
        }
        let body = resp.json().await.unwrap();
        assert_eq!(body.pointer(pointer), Some(&expected), "{path}: {body}");
    }
    let bad = c
        .post(
            peer.addr(),
            &peer.url("/upload"),
            &[("x-peer-fail", "explode")],
            "",
        )
        .await
        .unwrap();
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn reset_cuts_the_response_after_its_head() {
    let ca = ca("reset");
    let peer = peer(&ca).await;
    for alpn in [H1, H2_H1] {
        for stream in [false, true] {
            let mut resp = client(&ca, alpn)
                .post(
                    peer.addr(),
                    &peer.url("/v1/messages"),
                    &[("x-api-key", "k"), ("x-peer-fail", "reset")],
                    json!({"model": "m", "max_tokens": 5, "stream": stream,
                           "messages": [{"role": "user", "content": "hi"}]})
                    .to_string(),
                )
                .await
                .unwrap();
            assert_eq!(resp.status, 200);
            let mut got = Vec::new();
            let mut failed = false;
            while let Some(chunk) = resp.chunk().await {
                match chunk {
                    Ok(c) => got.extend_from_slice(&c),
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            assert!(
                failed,
                "{alpn:?} stream={stream}: the body must end in an error"
            );
            assert!(!got.is_empty(), "part of the body arrives first");
            let ex = peer.requests().pop().unwrap();
            let sent = ex.response.unwrap().body.unwrap();
            assert!(!sent.complete);
            assert_eq!(sent.bytes.unwrap(), got);
        }
    }
}

#[tokio::test]
async fn hang_then_close_gives_no_response() {
    let ca = ca("hang");
    let peer = peer(&ca).await;
    for alpn in [H1, H2_H1] {
        let result = client(&ca, alpn)
            .post(
                peer.addr(),
                &peer.url("/v1/chat/completions"),
                &[
                    ("authorization", "Bearer k"),
                    ("x-peer-fail", "hang-then-close=100"),
                ],
                "{}",
            )
            .await;
        assert!(result.is_err(), "{alpn:?}: no response expected");
    }
    assert_eq!(peer.requests().len(), 2, "the requests were received");
    assert!(peer.requests().iter().all(|r| r.response.is_none()));
}

#[tokio::test]
async fn configured_failures_apply_by_path_and_count() {
    let ca = ca("rule");
    let peer = Peer::builder(&ca)
        .fail_rule(FailRule {
            fail: Fail::Status(500),
            path_prefix: Some("/upload".into()),
            times: Some(1),
        })
        .start()
        .await
        .unwrap();
    let c = client(&ca, H2_H1);
    let get = |path: &'static str| {
        let c = c.clone();
        let url = peer.url(path);
        let addr = peer.addr();
        async move { c.post(addr, &url, &[], "x").await.unwrap().status }
    };
    assert_eq!(get("/health").await, 405);
    assert_eq!(get("/upload").await, 500);
    assert_eq!(get("/upload").await, 200);
    peer.set_fail(Some(FailRule::always(Fail::Status(429))));
    assert_eq!(get("/upload").await, 429);
    peer.set_fail(None);
    assert_eq!(get("/upload").await, 200);
}

// === large bodies ===

#[tokio::test]
async fn bytes_and_upload_hash_correctly() {
    let ca = ca("bulk");
    let peer = peer(&ca).await;
    let c = client(&ca, H2_H1);
    let n: u64 = 5 * 1024 * 1024 + 17;
    for (query, alpn) in [("", H2_H1), ("?length=1&sha256=1", H1)] {
        let resp = client(&ca, alpn)
            .get(peer.addr(), &peer.url(&format!("/bytes/{n}{query}")))
            .await
            .unwrap();
        if query.is_empty() {
            assert!(resp.header("content-length").is_none());
        } else {
            assert_eq!(resp.header("content-length"), Some(n.to_string().as_str()));
            assert_eq!(resp.header("x-peer-sha256"), Some(bytes_sha256(n).as_str()));
        }
        let body = resp.bytes().await.unwrap();
        assert_eq!(body.len() as u64, n);
        assert_eq!(&body[..4096], &pseudo_random_bytes(0, 4096)[..]);
        assert_eq!(
            hex_sha256(&body),
            bytes_sha256(n),
            "the served bytes hash as bytes_sha256 says"
        );
        let sent = peer
            .requests()
            .pop()
            .unwrap()
            .response
            .unwrap()
            .body
            .unwrap();
        assert_eq!(
            (sent.len, sent.sha256.as_str(), sent.bytes.is_none()),
            (n, bytes_sha256(n).as_str(), true)
        );
    }

    let upload = pseudo_random_bytes(1000, 3 * 1024 * 1024 + 5);
    let answer = c
        .post(peer.addr(), &peer.url("/upload"), &[], upload.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["length"], upload.len());
    assert_eq!(answer["sha256"], hex_sha256(&upload));
    let ex = peer.requests().pop().unwrap();
    assert_eq!(ex.body.sha256, hex_sha256(&upload));
    assert!(
        ex.body.bytes.is_none(),
        "large bodies are logged by hash only"
    );
}

fn hex_sha256(b: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(b))
}

// === other clients and harnesses ===

#[test]
fn blocking_peer_serves_synchronous_tests() {
    let ca = ca("blocking");
    let peer = Peer::builder(&ca)
        .names(["sync.example.test"])
        .spawn_in_thread()
        .unwrap();
    let c = client(&ca, H1);
    let status = peer.block_on(async {
        c.get(peer.addr(), &peer.url("/health"))
            .await
            .unwrap()
            .status
    });
    assert_eq!(status, 200);
    // Plain blocking socket: the peer keeps running between calls on its own threads.
    let mut tcp = std::net::TcpStream::connect(peer.addr()).unwrap();
    use std::io::Write as _;
    tcp.write_all(b"\x16\x03\x01").unwrap();
    assert_eq!(peer.requests().len(), 1);
}

fn curl() -> Option<std::path::PathBuf> {
    let found = std::process::Command::new("curl")
        .arg("--version")
        .output()
        .ok()?;
    if !found.status.success() {
        return None;
    }
    Some("curl".into())
}

#[test]
fn curl_with_cacert_talks_http1_and_h2() {
    curl_case(
        "curl_with_cacert_talks_http1_and_h2",
        &["127.0.0.3".parse().unwrap(), "::1".parse().unwrap()],
    );
}

#[test]
fn curl_reaches_a_peer_in_the_world() {
    if !privileged("curl to the world") {
        return;
    }
    curl_case(
        "curl_reaches_a_peer_in_the_world",
        &[world::addr(3), world::addr6(3)],
    );
}

fn curl_case(name: &str, ips: &[IpAddr]) {
    let Some(curl) = curl() else {
        eprintln!("*** SKIPPED {name}: no curl on PATH ***");
        return;
    };
    let ca = ca("curl");
    for &ip in ips {
        let peer = Peer::builder(&ca)
            .names(["curl.example.test"])
            .ip(ip)
            .spawn_in_thread()
            .unwrap();
        let resolve = format!(
            "curl.example.test:{}:{}",
            peer.addr().port(),
            if ip.is_ipv6() {
                format!("[{ip}]")
            } else {
                ip.to_string()
            }
        );
        for version in ["--http1.1", "--http2"] {
            let out = std::process::Command::new(&curl)
                .args(["-sS", "--fail-with-body", version, "--cacert"])
                .arg(ca.cert_path())
                .args(["--resolve", &resolve, "-H", "x-api-key: k", "-d"])
                .arg(r#"{"model":"m","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#)
                .arg(peer.url("/v1/messages"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "curl {version} {ip}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8(out.stdout).unwrap();
            assert_eq!(
                sse_events(&text).last().unwrap().0.as_deref(),
                Some("message_stop")
            );
            let ex = peer.requests().pop().unwrap();
            let expected = if version == "--http2" {
                "HTTP/2.0"
            } else {
                "HTTP/1.1"
            };
            assert_eq!(ex.version, expected);
            assert_eq!(
                ex.response.unwrap().body.unwrap().bytes.unwrap(),
                text.as_bytes()
            );
        }
    }
}

#[test]
fn peers_binary_prints_its_addresses_and_serves() {
    peers_binary_case(&["127.0.0.4:0", "[::1]:0"], false);
}

/// As the tests and the demo run it for the outside world: inside the world's namespace,
/// where it binds the world's addresses like any program.
#[test]
fn peers_binary_serves_from_inside_the_world() {
    if !privileged("peers binary in the world") {
        return;
    }
    let v4 = format!("{}:0", world::addr(4));
    let v6 = format!("[{}]:0", world::addr6(4));
    peers_binary_case(&[&v4, &v6], true);
}

fn peers_binary_case(listen: &[&str], in_world: bool) {
    let dir = temp_dir("peers-bin");
    // Beside the harness binary under test (the VM has its own copies, not cargo's paths).
    let peers = std::env::var_os("HARNESS_BIN")
        .map(|h| std::path::PathBuf::from(h).with_file_name("peers"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_peers").into());
    let mut cmd = std::process::Command::new(peers);
    if in_world {
        world::command(&mut cmd);
    }
    for addr in listen {
        cmd.args(["--listen", addr]);
    }
    let mut child = cmd
        .arg("--ca-dir")
        .arg(&dir)
        .args([
            "--name",
            "api.anthropic.test",
            "--name",
            "broker.example.test",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    use std::io::BufRead as _;
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    let ca_path = ready["ca"].as_str().unwrap().to_string();
    assert!(std::path::Path::new(&ca_path).exists());
    let peers = ready["peers"].as_array().unwrap();
    assert_eq!(peers.len(), listen.len());
    for (p, asked) in peers.iter().zip(listen) {
        let at: std::net::SocketAddr = p["addr"].as_str().unwrap().parse().unwrap();
        let asked: std::net::SocketAddr = asked.parse().unwrap();
        assert_eq!(at.ip(), asked.ip(), "{line}");
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in harness_tests::peers::read_pem_certs(std::path::Path::new(&ca_path)).unwrap() {
        roots.add(cert).unwrap();
    }
    let c = Client::new(roots, H2_H1).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for p in peers {
        let addr = p["addr"].as_str().unwrap().parse().unwrap();
        let url = format!("{}/health", p["url"].as_str().unwrap());
        let status = rt.block_on(async { c.get(addr, &url).await.unwrap().status });
        assert_eq!(status, 200);
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn plaintext_peer_speaks_plain_http() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let ca = ca("plain");
    let peer = Peer::builder(&ca).plaintext().start().await.unwrap();
    assert!(peer.url("/").starts_with("http://"));
    let mut tcp = tokio::net::TcpStream::connect(peer.addr()).await.unwrap();
    tcp.write_all(
        b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc",
    )
    .await
    .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(&hex_sha256(b"abc")));
    assert_eq!(peer.requests()[0].sni, None);
}
