//! Tokens and cost, end to end without root: real provider answers with cache reads and writes
//! (buffered and streamed, for every provider) are annotated by the real semantics stage,
//! recorded in a ledger as the daemon records them, and read back by `harness log` and
//! `harness stats`. Every cost is computed by hand below (prices from `pricing.toml`, USD per
//! million tokens, so tokens × price is micro-dollars).
//!
//! | fixture | model | tokens → cost (µ$) |
//! |---|---|---|
//! | anthropic buffered | claude-sonnet-4-5 ($3 in, $3.75 5m write, $6 1h write, $0.30 read, $15 out) | 1200×3 + 2000×3.75 + 1000×6 + 10000×0.30 + 500×15 = 3600 + 7500 + 6000 + 3000 + 7500 = **27600** |
//! | anthropic streamed | claude-haiku-4-5 ($1, $1.25, $2, $0.10, $5) | 800×1 + 400×2 (1h) + 6000×0.10 + 250×5 = 800 + 800 + 600 + 1250 = **3450** (`message_delta` repeats the cumulative counts: added to `message_start`'s they would double) |
//! | openai chat buffered | gpt-4.1 ($2, $0.50 cached, $8) | prompt 5000 of which 4096 cached: 904×2 + 4096×0.50 + 300×8 = 1808 + 2048 + 2400 = **6256** (pricing all 5000 as input too would be 14448) |
//! | openai chat streamed | o4-mini ($1.10, $0.275, $4.40) | 464×1.10 + 1536×0.275 + 900×4.40 (640 of them reasoning, within the 900) = 510.4 + 422.4 + 3960 = **4892.8** |
//! | responses buffered | gpt-5 ($1.25, $0.125, $10) | 736×1.25 + 11264×0.125 + 1500×10 = 920 + 1408 + 15000 = **17328** |
//! | responses streamed | gpt-5-mini ($0.25, $0.025, $2) | 952×0.25 + 2048×0.025 + 700×2 = 238 + 51.2 + 1400 = **1689.2** |
//! | gemini buffered | gemini-2.5-pro ($1.25, $0.125, $10) | (50000 − 32768 + 300 tool prompt)×1.25 + 32768×0.125 + (1200 + 2400 thoughts)×10 = 21915 + 4096 + 36000 = **62011** |
//! | gemini streamed | gemini-2.5-flash ($0.30, $0.03, $2.50) | 3904×0.30 + 4096×0.03 + (600 + 900)×2.50 = 1171.2 + 122.88 + 3750 = **5044.08** |
//!
//! Sessions: claude 27600 + 3450 = 31050; codex 6256 + 4892.8 + 17328 + 1689.2 = 30166 (and one
//! call of a model the table does not know); gemini 62011 + 5044.08 = 67055.08. All:
//! 128271.08 µ$ = $0.12827108.
mod timeline_support;

use harness::ledger::*;
use harness::semantics::{annotate, ExchangeView};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use timeline_support::{harness, scratch, session_open, Rec};

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/semantics/fixtures/cost/",
            $name
        ))
        .as_slice()
    };
}

/// One model call: where it went and what came back.
struct Call {
    host: &'static str,
    target: &'static str,
    request: Value,
    /// `text/event-stream` or `application/json`.
    ctype: &'static str,
    response: &'static [u8],
}

fn caller() -> Caller {
    Caller {
        pid: 100,
        tid: 100,
        uid: 1000,
        cgroup_id: 7,
    }
}

/// Records `calls` in a new session of ledger `dir` run as `command`, each as the daemon
/// does: conn, request head and body, response head, body (streams chunk by chunk), then the
/// semantics stage's annotations of the exchange.
async fn session(dir: &Path, command: &str, calls: &[Call]) -> PathBuf {
    let ledger = Ledger::open(dir).unwrap();
    let mut open = session_open();
    open.command = vec![command.into(), "--print".into()];
    let (w, _) = ledger.open_session(open).await.unwrap();
    let r = Rec {
        ledger: &ledger,
        w: &w,
    };
    for (n, c) in calls.iter().enumerate() {
        let conn = n as u64 + 1;
        r.add(Entry::ConnOpen(ConnOpen {
            conn,
            proto: "tcp".into(),
            dst: "192.0.2.10:443".parse().unwrap(),
            host: Some(c.host.into()),
            src: format!("10.0.0.2:{}", 40000 + conn).parse().unwrap(),
            caller: caller(),
            rule: None,
        }))
        .await;
        let body = c.request.to_string();
        r.request(
            conn,
            0,
            "POST",
            c.host,
            c.target,
            &[("content-type", "application/json")],
        )
        .await;
        r.request_body(conn, 0, body.as_bytes()).await;
        let head = r.response(conn, 0, 200, c.ctype).await;
        let last = if c.ctype == "text/event-stream" {
            // One chunk per event, as the stream arrived.
            let text = std::str::from_utf8(c.response).unwrap();
            let events: Vec<&str> = text.split_inclusive("\n\n").collect();
            let mut last = head;
            for (i, e) in events.iter().enumerate() {
                last = r
                    .add(Entry::StreamChunk(StreamChunk {
                        conn,
                        exchange: 0,
                        direction: Direction::Down,
                        index: i as u64,
                        body: ledger.body(e.as_bytes()).unwrap(),
                        fin: i + 1 == events.len(),
                        trailers: vec![],
                    }))
                    .await;
            }
            last
        } else {
            r.response_body(conn, 0, c.response).await
        };
        let view = ExchangeView {
            method: "POST",
            scheme: "https",
            authority: Some(c.host),
            target: c.target,
            request_headers: &[("content-type".into(), "application/json".into())],
            request_body: body.as_bytes(),
            request_truncated: false,
            status: 200,
            response_headers: &[("content-type".into(), c.ctype.into())],
            response_body: c.response,
            response_truncated: false,
        };
        for a in annotate(&view) {
            assert_ne!(a.topic, "parse_error", "{}: {}", c.target, a.data);
            r.note(last, a.by, a.topic, a.data).await;
        }
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
    file
}

const SSE: &str = "text/event-stream";
const JSON: &str = "application/json";

fn messages(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "max_tokens": 1024,
           "messages": [{"role": "user", "content": "Summarise the report."}]})
}

fn claude_calls() -> Vec<Call> {
    vec![
        Call {
            host: "api.anthropic.com",
            target: "/v1/messages",
            request: messages("claude-sonnet-4-5", false),
            ctype: JSON,
            response: fixture!("anthropic_response.json"),
        },
        Call {
            host: "api.anthropic.com",
            target: "/v1/messages",
            request: messages("claude-haiku-4-5", true),
            ctype: SSE,
            response: fixture!("anthropic_stream.sse"),
        },
    ]
}

fn codex_calls() -> Vec<Call> {
    vec![
        Call {
            host: "api.openai.com",
            target: "/v1/chat/completions",
            request: messages("gpt-4.1", false),
            ctype: JSON,
            response: fixture!("openai_chat_response.json"),
        },
        Call {
            host: "api.openai.com",
            target: "/v1/chat/completions",
            request: messages("o4-mini", true),
            ctype: SSE,
            response: fixture!("openai_chat_stream.sse"),
        },
        Call {
            host: "api.openai.com",
            target: "/v1/responses",
            request: json!({"model": "gpt-5", "input": "Summarise the report."}),
            ctype: JSON,
            response: fixture!("openai_responses_response.json"),
        },
        Call {
            host: "api.openai.com",
            target: "/v1/responses",
            request: json!({"model": "gpt-5-mini", "stream": true, "input": "Summarise."}),
            ctype: SSE,
            response: fixture!("openai_responses_stream.sse"),
        },
        // A model no pricing table knows: counted, and said to have no price.
        Call {
            host: "api.openai.com",
            target: "/v1/chat/completions",
            request: messages("gpt-9-preview", false),
            ctype: JSON,
            response: br#"{"id":"c9","object":"chat.completion","model":"gpt-9-preview","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":2}}"#,
        },
    ]
}

fn gemini_calls() -> Vec<Call> {
    let req = json!({"contents": [{"role": "user", "parts": [{"text": "Summarise the report."}]}]});
    vec![
        Call {
            host: "generativelanguage.googleapis.com",
            target: "/v1beta/models/gemini-2.5-pro:generateContent",
            request: req.clone(),
            ctype: JSON,
            response: fixture!("gemini_response.json"),
        },
        Call {
            host: "generativelanguage.googleapis.com",
            target: "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            request: req,
            ctype: SSE,
            response: fixture!("gemini_stream.sse"),
        },
    ]
}

/// The three sessions in one ledger: (dir, claude's, codex's, gemini's session file).
async fn ledger(name: &str) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let dir = scratch(name);
    let claude = session(&dir, "/usr/local/bin/claude", &claude_calls()).await;
    let codex = session(&dir, "codex", &codex_calls()).await;
    let gemini = session(&dir, "gemini", &gemini_calls()).await;
    (dir, claude, codex, gemini)
}

fn lines_with<'a>(out: &'a str, needle: &str) -> Vec<&'a str> {
    out.lines().filter(|l| l.contains(needle)).collect()
}

#[tokio::test]
async fn the_timeline_prices_each_call_and_totals_by_model() {
    let (_, claude, codex, gemini) = ledger("log").await;

    let (code, out, err) = harness(&["log", claude.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    // Every prompt token counted once: 1200 + 3000 written + 10000 read = 14200.
    assert!(
        out.contains("tokens: 14200 in (10000 cache read, 2000 cache write 5m, 1000 cache write 1h), 500 out · stop: end_turn"),
        "{out}"
    );
    // The stream: message_start's counts updated by message_delta's, not added to them.
    assert!(
        out.contains(
            "tokens: 7200 in (6000 cache read, 400 cache write 1h), 250 out · stop: end_turn"
        ),
        "{out}"
    );
    assert_eq!(
        lines_with(&out, "cost:"),
        [
            "               cost: $0.027600",
            "               cost: $0.003450",
            "               cost: $0.031050 · 2 model calls · tokens 21400 in (16000 cache read, 2000 cache write 5m, 1400 cache write 1h), 750 out",
        ],
        "{out}"
    );
    // Then one line per model.
    let lines: Vec<&str> = out.lines().collect();
    let total = lines
        .iter()
        .position(|l| l.contains("cost: $0.031050"))
        .unwrap();
    assert_eq!(
        lines[total + 1..total + 3],
        [
            "                 claude-haiku-4-5-20251001 (anthropic): 1 call · tokens 7200 in (6000 cache read, 400 cache write 1h), 250 out · $0.003450",
            "                 claude-sonnet-4-5-20250929 (anthropic): 1 call · tokens 14200 in (10000 cache read, 2000 cache write 5m, 1000 cache write 1h), 500 out · $0.027600",
        ],
        "{out}"
    );
    assert!(out.contains("· tokens 21400 in, 750 out"), "{out}");

    let (code, out, err) = harness(&["log", codex.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    // OpenAI's prompt tokens already hold the cached ones: 5000 in, not 9096.
    assert!(
        out.contains("tokens: 5000 in (4096 cache read), 300 out"),
        "{out}"
    );
    assert!(
        out.contains("tokens: 2000 in (1536 cache read), 900 out (640 reasoning)"),
        "{out}"
    );
    assert!(
        out.contains("tokens: 12000 in (11264 cache read), 1500 out (1024 reasoning)"),
        "{out}"
    );
    let costs = lines_with(&out, "cost:");
    assert_eq!(
        &costs[..5],
        [
            "               cost: $0.006256",
            "               cost: $0.004893",
            "               cost: $0.017328",
            "               cost: $0.001689",
            "               cost: unknown price (openai gpt-9-preview: model not in the pricing table)",
        ],
        "{out}"
    );
    // Never a silent 0: the total says which call it could not price.
    assert_eq!(
        costs[5],
        "               cost: $0.030166 for 4 of 5 calls, 1 at unknown price (openai gpt-9-preview: model not in the pricing table) · 5 model calls · tokens 22010 in (18944 cache read), 3402 out (2112 reasoning)",
        "{out}"
    );
    assert!(
        out.contains("gpt-9-preview (openai): 1 call · tokens 10 in, 2 out · unknown price (openai gpt-9-preview: model not in the pricing table)"),
        "{out}"
    );

    let (code, out, err) = harness(&["log", gemini.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    // Gemini's thoughts are apart from its candidates and billed as output; the tool-use
    // prompt is apart from the prompt.
    assert!(
        out.contains("tokens: 50300 in (32768 cache read), 3600 out (2400 reasoning)"),
        "{out}"
    );
    assert!(
        out.contains("tokens: 8000 in (4096 cache read), 1500 out (900 reasoning)"),
        "{out}"
    );
    assert_eq!(
        &lines_with(&out, "cost:")[..3],
        [
            "               cost: $0.062011",
            "               cost: $0.005044",
            "               cost: $0.067055 · 2 model calls · tokens 58300 in (36864 cache read), 5100 out (3300 reasoning)",
        ],
        "{out}"
    );
}

#[tokio::test]
async fn stats_add_up_sessions_calls_tokens_and_cost_exactly() {
    let (dir, ..) = ledger("stats").await;
    let stats = |args: &[&str]| {
        let mut all = vec!["stats", dir.to_str().unwrap(), "--json"];
        all.extend_from_slice(args);
        let (code, out, err) = harness(&all);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<Value>(&out).unwrap()
    };

    let v = stats(&[]);
    let total = &v["total"];
    assert_eq!(total["sessions"], 3);
    assert_eq!(total["model_calls"], 9);
    assert_eq!(total["priced_calls"], 8);
    assert_eq!(total["unpriced_calls"], 1);
    assert_eq!(total["cost_complete"], false);
    // 31050 + 30166 + 67055.08 µ$, exactly.
    assert_eq!(total["cost_usd"], "0.12827108");
    assert_eq!(
        total["tokens"],
        json!({"input": 1200 + 800 + 904 + 464 + 736 + 952 + 10 + 17532 + 3904,
               "cache_read": 10000 + 6000 + 4096 + 1536 + 11264 + 2048 + 32768 + 4096,
               "cache_write_5m": 2000, "cache_write_1h": 1000 + 400,
               "output": 500 + 250 + 300 + 260 + 476 + 252 + 2 + 1200 + 600,
               "reasoning": 640 + 1024 + 448 + 2400 + 900})
    );
    assert_eq!(
        total["unpriced"],
        json!([{"reason": "openai gpt-9-preview: model not in the pricing table", "calls": 1}])
    );

    let v = stats(&["--by", "agent"]);
    let rows: Vec<(&str, u64, u64, Value)> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap(),
                r["sessions"].as_u64().unwrap(),
                r["model_calls"].as_u64().unwrap(),
                r["cost_usd"].clone(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("claude", 1, 2, json!("0.03105")),
            ("codex", 1, 5, json!("0.030166")),
            ("gemini", 1, 2, json!("0.06705508")),
        ]
    );

    let v = stats(&["--by", "model"]);
    let row = |key: &str| {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == key)
            .unwrap_or_else(|| panic!("no row {key}: {v}"))
            .clone()
    };
    assert_eq!(row("o4-mini-2025-04-16 (openai)")["cost_usd"], "0.0048928");
    assert_eq!(row("gemini-2.5-flash (gemini)")["cost_usd"], "0.00504408");
    let unknown = row("gpt-9-preview (openai)");
    assert_eq!(unknown["cost_usd"], Value::Null);
    assert_eq!(unknown["unpriced_calls"], 1);
    assert_eq!(v["rows"].as_array().unwrap().len(), 9);

    let v = stats(&["--by", "day"]);
    assert_eq!(v["rows"].as_array().unwrap().len(), 1);
    assert_eq!(v["rows"][0]["cost_usd"], "0.12827108");

    // Nothing since tomorrow; everything since long ago.
    let tomorrow = (time::OffsetDateTime::now_utc() + time::Duration::days(1)).date();
    let v = stats(&["--since", &tomorrow.to_string()]);
    assert_eq!(v["total"]["sessions"], 0);
    assert_eq!(v["total"]["model_calls"], 0);
    assert_eq!(v["total"]["cost_usd"], "0");
    let v = stats(&["--since", "2000-01-01"]);
    assert_eq!(v["total"]["model_calls"], 9);

    // The table for a person says the same.
    let (code, out, err) = harness(&["stats", dir.to_str().unwrap(), "--by", "agent"]);
    assert_eq!(code, 0, "{err}");
    let total = out.lines().find(|l| l.starts_with("total")).unwrap();
    assert!(
        total.contains("$0.128271 for 8 of 9 calls, 1 at unknown price"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("claude ") && l.ends_with("$0.031050")),
        "{out}"
    );
}

#[tokio::test]
async fn a_users_pricing_file_overrides_and_a_bad_one_names_file_line_and_column() {
    let (dir, claude, ..) = ledger("override").await;
    let mine = dir.join("my-pricing.toml");
    std::fs::write(
        &mine,
        "# our negotiated rates\n\
         [[model]]\n\
         provider = \"anthropic\"\n\
         models = [\"claude-sonnet-4-5*\"]\n\
         input = 2\noutput = 10\ncache_read = 0.2\ncache_write_5m = 2.5\ncache_write_1h = 4\n\
         [[model]]\n\
         provider = \"openai\"\n\
         models = [\"gpt-9*\"]\n\
         input = 10\noutput = 40\n",
    )
    .unwrap();
    // 1200×2 + 2000×2.5 + 1000×4 + 10000×0.2 + 500×10 = 2400 + 5000 + 4000 + 2000 + 5000
    let (code, out, err) = harness(&[
        "log",
        claude.to_str().unwrap(),
        "--pricing",
        mine.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cost: $0.018400\n"), "{out}");
    // The built-in entries the file does not name stay.
    assert!(out.contains("cost: $0.003450\n"), "{out}");
    // gpt-9-preview is now priced: 10×10 + 2×40 = 180 µ$, so the total is complete.
    let (code, out, err) = harness(&[
        "stats",
        dir.to_str().unwrap(),
        "--json",
        "--pricing",
        mine.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["total"]["cost_complete"], true);
    // 128271.08 − 27600 + 18400 + 180 µ$
    assert_eq!(v["total"]["cost_usd"], "0.11925108");

    let bad = dir.join("bad-pricing.toml");
    std::fs::write(
        &bad,
        "[[model]]\nprovider = \"openai\"\nmodels = [\"gpt-9*\"]\ninput = 1\noutput = \"ten\"\n",
    )
    .unwrap();
    for cmd in ["log", "stats"] {
        let (code, out, err) = harness(&[
            cmd,
            dir.to_str().unwrap(),
            "--pricing",
            bad.to_str().unwrap(),
        ]);
        assert_eq!(code, 2, "{cmd}: {out}");
        assert_eq!(
            err,
            format!(
                "harness: {}:5:10: model[1]: output: \"ten\" is not a price (USD per million tokens, at most 6 decimals)\n",
                bad.display()
            ),
            "{cmd}"
        );
    }
    let missing = dir.join("nope.toml");
    let (code, _, err) = harness(&[
        "stats",
        dir.to_str().unwrap(),
        "--pricing",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(
        err.starts_with(&format!(
            "harness: {}: cannot read pricing file:",
            missing.display()
        )),
        "{err}"
    );
}
