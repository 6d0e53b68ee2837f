//! Governance without a ledger: what a request is taken to be, what the rules decide on it
//! (including the ways an agent would try to slip past a rule), and the answer each protocol
//! gets.
use super::*;
use crate::policy::Policy;
use std::io::Write as _;

const BROKER_RULES: &str = r#"
default = "allow"

[[tool]]
action = "deny"
name = "place_order"
args = { "/qty" = { gt = 100 } }

[[http]]
action = "deny"
method = "DELETE"
host = "api.example.com"
path = "/v1/*"

[[http]]
action = "ask"
method = "POST"
host = "api.broker.example"
path = "/v1/orders"
body = { "/amount" = { ge = 10000 } }

[[model]]
action = "deny"
model = "*-opus-*"
"#;

fn policy(text: &str) -> Policy {
    Policy::parse(text, "p.toml").unwrap_or_else(|e| panic!("policy should parse: {e}"))
}

fn json_headers() -> Vec<(String, String)> {
    vec![("content-type".into(), "application/json".into())]
}

fn decide(
    p: &Policy,
    method: &str,
    host: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Option<Hit> {
    let f = facts(method, Some(host), target, headers, Some(body));
    p.requests().decide(&f)
}

fn tools_call(id: u64, qty: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": "place_order", "arguments": {"symbol": "ACME", "qty": qty}}})
}

#[test]
fn a_tool_call_over_the_limit_is_denied_and_one_within_passes() {
    let p = policy(BROKER_RULES);
    let big = tools_call(7, json!(500)).to_string();
    let hit = decide(
        &p,
        "POST",
        "mcp.broker.example",
        "/mcp",
        &json_headers(),
        big.as_bytes(),
    )
    .expect("qty 500 must meet the rule");
    assert_eq!(hit.action, Verb::Deny);
    assert_eq!(hit.rule, "tool[1]");
    assert_eq!(hit.matched, vec![("/qty".to_owned(), json!(500))]);
    assert_eq!(hit.call_id, Some(json!(7)));
    assert!(
        hit.reason().contains("tool[1]") && hit.reason().contains("/qty = 500"),
        "{}",
        hit.reason()
    );
    let small = tools_call(8, json!(5)).to_string();
    assert_eq!(
        decide(
            &p,
            "POST",
            "mcp.broker.example",
            "/mcp",
            &json_headers(),
            small.as_bytes()
        ),
        None
    );
}

#[test]
fn a_quoted_number_an_exponent_or_an_array_does_not_slip_past_a_numeric_rule() {
    let p = policy(BROKER_RULES);
    for qty in [json!("500"), json!(" 500 "), json!(5e2), json!(500.5)] {
        let body = tools_call(1, qty.clone()).to_string();
        let hit = decide(&p, "POST", "h", "/mcp", &json_headers(), body.as_bytes());
        assert_eq!(hit.map(|h| h.action), Some(Verb::Deny), "qty {qty}");
    }
    // Not a number at all: the rule cannot read it, so on_unparsable (deny) decides.
    for qty in [json!([500]), json!({"n": 500}), json!("five hundred")] {
        let body = tools_call(1, qty.clone()).to_string();
        let hit =
            decide(&p, "POST", "h", "/mcp", &json_headers(), body.as_bytes()).expect("decided");
        assert_eq!(hit.action, Verb::Deny, "qty {qty}");
        assert!(hit.unparsable.is_some(), "qty {qty}: {hit:?}");
    }
}

#[test]
fn duplicate_members_are_unreadable_not_first_or_last_wins() {
    let p = policy(BROKER_RULES);
    // serde_json keeps the last, other parsers the first: either way a rule could be fooled.
    let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"place_order","arguments":{"qty":500,"qty":5}}}"#;
    let hit = decide(&p, "POST", "h", "/mcp", &json_headers(), body).expect("decided");
    assert_eq!(hit.action, Verb::Deny);
    assert!(
        hit.unparsable.as_deref().unwrap_or("").contains("twice"),
        "{hit:?}"
    );
    // on_unparsable = "allow" lets it through: the operator said so.
    let lenient = policy(&format!("on_unparsable = \"allow\"\n{BROKER_RULES}"));
    assert_eq!(
        decide(&lenient, "POST", "h", "/mcp", &json_headers(), body).map(|h| h.action),
        Some(Verb::Allow)
    );
}

#[test]
fn a_batch_cannot_hide_a_call_behind_a_malformed_first_element() {
    let p = policy(BROKER_RULES);
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": "not an object"},
        {"jsonrpc": "2.0", "method": "notifications/progress"},
        tools_call(3, json!(900)),
    ])
    .to_string();
    let hit = decide(&p, "POST", "h", "/mcp", &json_headers(), batch.as_bytes())
        .expect("the third call is seen");
    assert_eq!(hit.action, Verb::Deny);
    assert_eq!(hit.call_id, Some(json!(3)));
}

#[test]
fn a_compressed_body_is_read_after_decoding() {
    let p = policy(BROKER_RULES);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(tools_call(1, json!(500)).to_string().as_bytes())
        .unwrap();
    let body = gz.finish().unwrap();
    let mut headers = json_headers();
    headers.push(("content-encoding".into(), "gzip".into()));
    let hit = decide(&p, "POST", "h", "/mcp", &headers, &body).expect("decided");
    assert_eq!(hit.action, Verb::Deny);
    assert!(hit.unparsable.is_none(), "{hit:?}");
    // A body that claims gzip and is not: unreadable, so denied.
    let hit = decide(&p, "POST", "h", "/mcp", &headers, b"plain").expect("decided");
    assert_eq!(hit.action, Verb::Deny);
}

#[test]
fn path_tricks_and_host_spelling_do_not_dodge_an_http_rule() {
    let p = policy(BROKER_RULES);
    for target in [
        "/v1/accounts/9",
        "/v1//accounts",
        "/%76%31/accounts",
        "/x/../v1/a",
        "/v1/./a?dry=1",
        "/v1/a/",
    ] {
        let hit = decide(&p, "DELETE", "API.Example.com:443", target, &[], b"");
        assert_eq!(hit.map(|h| h.action), Some(Verb::Deny), "DELETE {target}");
    }
    assert_eq!(
        decide(&p, "delete", "api.example.com.", "/v1/a", &[], b"").map(|h| h.action),
        Some(Verb::Deny)
    );
    assert_eq!(
        decide(&p, "GET", "api.example.com", "/v1/a", &[], b""),
        None
    );
    assert_eq!(
        decide(&p, "DELETE", "api.example.com", "/v2/a", &[], b""),
        None
    );
}

#[test]
fn a_form_body_is_read_as_strings_and_compared_as_numbers() {
    let p = policy(BROKER_RULES);
    let form = vec![(
        "content-type".to_owned(),
        "application/x-www-form-urlencoded".to_owned(),
    )];
    let hit = decide(
        &p,
        "POST",
        "api.broker.example",
        "/v1/orders",
        &form,
        b"amount=25000&to=acct",
    )
    .expect("decided");
    assert_eq!(hit.action, Verb::Ask);
    assert_eq!(hit.rule, "http[2]");
    assert_eq!(
        decide(
            &p,
            "POST",
            "api.broker.example",
            "/v1/orders",
            &form,
            b"amount=25"
        ),
        None
    );
    // The same field twice is unreadable, not the first or the last.
    let hit = decide(
        &p,
        "POST",
        "api.broker.example",
        "/v1/orders",
        &form,
        b"amount=1&amount=99999",
    )
    .expect("decided");
    assert_eq!(hit.action, Verb::Deny);
}

#[test]
fn a_body_too_large_to_hold_is_unreadable_for_a_rule_that_reads_it() {
    let p = policy(BROKER_RULES);
    let f = facts(
        "POST",
        Some("api.broker.example"),
        "/v1/orders",
        &json_headers(),
        None,
    );
    let hit = p.requests().decide(&f).expect("decided");
    assert_eq!(hit.action, Verb::Deny);
    // A model call that cannot be read names no model: a model rule decides as on_unparsable.
    let f = facts(
        "POST",
        Some("api.anthropic.com"),
        "/v1/messages",
        &json_headers(),
        None,
    );
    let hit = p.requests().decide(&f).expect("decided");
    assert_eq!((hit.action, hit.rule.as_str()), (Verb::Deny, "model[1]"));
}

#[test]
fn model_rules_match_the_model_of_every_provider() {
    let p = policy(BROKER_RULES);
    let body = json!({"model": "claude-opus-4", "max_tokens": 10, "messages": []}).to_string();
    let hit = decide(
        &p,
        "POST",
        "api.anthropic.com",
        "/v1/messages",
        &json_headers(),
        body.as_bytes(),
    )
    .expect("decided");
    assert_eq!((hit.action, hit.rule.as_str()), (Verb::Deny, "model[1]"));
    let body = json!({"model": "claude-sonnet-4", "max_tokens": 10, "messages": []}).to_string();
    assert_eq!(
        decide(
            &p,
            "POST",
            "api.anthropic.com",
            "/v1/messages",
            &json_headers(),
            body.as_bytes()
        ),
        None
    );
    let body = json!({"model": "gpt-opus-x", "messages": []}).to_string();
    assert!(decide(
        &p,
        "POST",
        "api.openai.com",
        "/v1/chat/completions",
        &json_headers(),
        body.as_bytes()
    )
    .is_some());
    let body = json!({"contents": []}).to_string();
    assert!(decide(
        &p,
        "POST",
        "generativelanguage.googleapis.com",
        "/v1beta/models/gemini-opus-9:generateContent",
        &json_headers(),
        body.as_bytes()
    )
    .is_some());
}

#[test]
fn deny_wins_over_ask_wins_over_allow() {
    let p = policy(
        r#"
default = "allow"
[[tool]]
action = "allow"
name = "*"
[[tool]]
action = "ask"
name = "place_*"
[[tool]]
action = "deny"
name = "place_order"
args = { "/qty" = { gt = 100 } }
"#,
    );
    let decide_qty = |q| {
        decide(
            &p,
            "POST",
            "h",
            "/mcp",
            &json_headers(),
            tools_call(1, json!(q)).to_string().as_bytes(),
        )
        .map(|h| (h.action, h.rule))
    };
    assert_eq!(decide_qty(500), Some((Verb::Deny, "tool[3]".to_owned())));
    assert_eq!(decide_qty(5), Some((Verb::Ask, "tool[2]".to_owned())));
}

#[test]
fn rule_errors_name_file_line_column_and_rule() {
    let cases = [
        ("[[tool]]\nname = \"x\"\n", "tool[1]", "missing `action`"),
        (
            "[[tool]]\naction = \"maybe\"\n",
            "p.toml:2:",
            "must be \"allow\", \"deny\" or \"ask\"",
        ),
        (
            "[[http]]\naction = \"deny\"\npath = \"v1/*\"\n",
            "p.toml:3:",
            "must start with `/`",
        ),
        (
            "[[tool]]\naction = \"deny\"\nargs = { \"qty\" = { gt = 1 } }\n",
            "tool[1]",
            "not a JSON pointer",
        ),
        (
            "[[tool]]\naction = \"deny\"\nargs = { \"/qty\" = { gt = \"a\" } }\n",
            "tool[1]",
            "needs a number",
        ),
        (
            "[[tool]]\naction = \"deny\"\nargs = { \"/s\" = { matches = \"(\" } }\n",
            "tool[1]",
            "not a regular expression",
        ),
        (
            "[[tool]]\naction = \"deny\"\nargs = { \"/s\" = { within = 3 } }\n",
            "p.toml:3:",
            "within",
        ),
        ("[budget]\nusd = -1\n", "budget", "more than 0"),
        (
            "[[http]]\naction = \"deny\"\nmethod = \"DE LETE\"\n",
            "http[1]",
            "not an HTTP method",
        ),
    ];
    for (text, place, why) in cases {
        let e = match Policy::parse(text, "p.toml") {
            Ok(_) => panic!("should not parse:\n{text}"),
            Err(e) => e.to_string(),
        };
        assert!(e.starts_with("p.toml:"), "{e}");
        assert!(e.contains(place) && e.contains(why), "{text}\n→ {e}");
    }
}

fn mcp_facts(body: &Value) -> RequestFacts {
    facts(
        "POST",
        Some("h"),
        "/mcp",
        &json_headers(),
        Some(body.to_string().as_bytes()),
    )
}

#[test]
fn mcp_refusals_answer_each_request_id_on_the_transport_the_client_reads() {
    let p = policy(BROKER_RULES);
    let single = tools_call(42, json!(500));
    let f = mcp_facts(&single);
    let hit = p.requests().decide(&f).unwrap();
    let both = vec![(
        "accept".to_owned(),
        "application/json, text/event-stream".to_owned(),
    )];
    let r = refusal(
        &shape(&f, &both),
        StatusCode::FORBIDDEN,
        "denied: tool[1]",
        "tool[1]",
        Some(&hit),
    );
    assert_eq!(
        (r.status, r.content_type),
        (StatusCode::OK, "application/json")
    );
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["id"], 42);
    assert_eq!(v["error"]["code"], MCP_DENIED);
    assert_eq!(v["error"]["data"]["rule"], "tool[1]");

    let sse_only = vec![("accept".to_owned(), "text/event-stream".to_owned())];
    let r = refusal(
        &shape(&f, &sse_only),
        StatusCode::FORBIDDEN,
        "denied",
        "tool[1]",
        Some(&hit),
    );
    assert_eq!(r.content_type, "text/event-stream");
    let text = std::str::from_utf8(&r.body).unwrap();
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("an SSE data line");
    assert_eq!(serde_json::from_str::<Value>(data).unwrap()["id"], 42);

    // A batch: every request gets its error (the notification none), in one array.
    let batch = json!([tools_call(1, json!(5)), {"jsonrpc": "2.0", "method": "notifications/x"}, tools_call(2, json!(500))]);
    let f = mcp_facts(&batch);
    let hit = p.requests().decide(&f).unwrap();
    let r = refusal(
        &shape(&f, &both),
        StatusCode::FORBIDDEN,
        "denied",
        "tool[1]",
        Some(&hit),
    );
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    let ids: Vec<&Value> = v.as_array().unwrap().iter().map(|e| &e["id"]).collect();
    assert_eq!(ids, [&json!(1), &json!(2)]);
    assert!(v[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("another call of this batch"));
}

#[test]
fn model_refusals_take_the_providers_own_error_shape() {
    let body = json!({"model": "m", "messages": []});
    let cases = [
        ("/v1/messages", "anthropic"),
        ("/v1/chat/completions", "openai"),
        ("/v1/responses", "openai"),
        ("/v1beta/models/gemini-x:streamGenerateContent", "gemini"),
    ];
    for (target, provider) in cases {
        let f = facts(
            "POST",
            Some("h"),
            target,
            &json_headers(),
            Some(body.to_string().as_bytes()),
        );
        let r = refusal(
            &shape(&f, &[]),
            StatusCode::TOO_MANY_REQUESTS,
            "over budget",
            "budget.usd",
            None,
        );
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        match provider {
            "anthropic" => {
                assert_eq!(v["type"], "error");
                assert_eq!(v["error"]["type"], "rate_limit_error");
            }
            "openai" => {
                assert_eq!(v["error"]["code"], "harness_policy");
                assert!(v["error"]["message"].is_string());
            }
            _ => {
                assert_eq!(v["error"]["code"], 429);
                assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED");
            }
        }
    }
    let f = facts("DELETE", Some("api.example.com"), "/v1/a", &[], Some(b""));
    let r = refusal(
        &shape(&f, &[]),
        StatusCode::FORBIDDEN,
        "no",
        "http[1]",
        None,
    );
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        (r.status, &v["error"]["rule"]),
        (StatusCode::FORBIDDEN, &json!("http[1]"))
    );
}

#[test]
fn strict_json_refuses_nested_duplicates_and_trailing_bytes() {
    assert!(strict_json(br#"{"a":{"b":1,"b":2}}"#).is_err());
    assert!(strict_json(br#"[{"a":1},{"a":2}]"#).is_ok());
    assert!(strict_json(br#"{"a":1} x"#).is_err());
    assert_eq!(
        strict_json(br#"{"a":[1,2.5,"x",null,true]}"#).unwrap(),
        json!({"a":[1,2.5,"x",null,true]})
    );
}

#[tokio::test]
async fn asks_are_decided_once_and_listed_while_they_wait() {
    let asks = Arc::new(Asks::default());
    let shown = PendingAsk {
        session: "S".into(),
        id: 9,
        conn: 1,
        exchange: 1,
        reason: "r".into(),
        request: "POST https://h/x".into(),
        waited_seconds: 0,
        timeout_seconds: 60,
    };
    let rx = asks.hold(shown, Duration::from_secs(60));
    assert_eq!(asks.list().len(), 1);
    let how = Resolution {
        allow: true,
        by: "uid 0".into(),
        why: Some("fine".into()),
    };
    asks.decide("S", 9, how.clone()).unwrap();
    assert!(rx.await.unwrap().allow);
    assert!(asks.list().is_empty());
    let again = asks.decide("S", 9, how).unwrap_err();
    assert!(again.contains("no request waiting as 9"), "{again}");
}

#[test]
fn a_body_that_is_plainly_not_json_is_no_tool_call_but_one_that_may_be_is() {
    let p = policy(BROKER_RULES);
    let png = vec![("content-type".to_owned(), "image/png".to_owned())];
    // An upload anywhere is not refused just because a tool rule exists.
    assert_eq!(
        decide(
            &p,
            "POST",
            "files.example",
            "/upload",
            &png,
            b"\x89PNG\r\n\x1a\n..."
        ),
        None
    );
    // JSON sent as text/plain, or JSON-looking bytes that do not parse: may be a tool call.
    let text = vec![("content-type".to_owned(), "text/plain".to_owned())];
    let hidden = tools_call(1, json!(500)).to_string();
    assert_eq!(
        decide(&p, "POST", "h", "/mcp", &text, hidden.as_bytes()).map(|h| h.action),
        Some(Verb::Deny)
    );
    assert_eq!(
        decide(&p, "POST", "h", "/mcp", &text, b" {\"jsonrpc\": ").map(|h| h.action),
        Some(Verb::Deny)
    );
}

#[test]
fn a_refusal_of_an_unreadable_call_still_answers_its_id() {
    let p = policy(BROKER_RULES);
    let body = br#"{"jsonrpc":"2.0","id":20,"method":"tools/call","params":{"name":"place_order","arguments":{"qty":900,"qty":1}}}"#;
    let f = facts("POST", Some("h"), "/mcp", &json_headers(), Some(body));
    let hit = p.requests().decide(&f).expect("decided");
    let r = refusal(
        &shape(&f, &[]),
        StatusCode::FORBIDDEN,
        "denied",
        &hit.rule,
        Some(&hit),
    );
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        (&v["id"], &v["error"]["code"]),
        (&json!(20), &json!(MCP_DENIED))
    );
}

/// The README's governance example, read out of README.md (as SPEC.md's vectors are), so the
/// documentation and the code cannot drift apart: it parses, its SHA-256 is the one SPEC.md's
/// §14.3 vectors name, and it decides as the README and SPEC.md say.
#[test]
fn the_readme_governance_example_parses_and_decides_as_documented() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md at the repository root");
    let section = readme
        .split_once("### Governance")
        .expect("README.md has a Governance section")
        .1;
    let text = section
        .split_once("```toml\n")
        .and_then(|(_, rest)| rest.split_once("```\n"))
        .expect("a toml block in the Governance section")
        .0;
    let p = policy(text);
    assert_eq!(
        p.sha256_hex(),
        "c36f5b3edd11ebabb0ab3e1ca44fa1efc6287f7c9bce788d84272eb3bc5ce6dc",
        "the policy_sha256 of SPEC.md §14.3's governance vectors"
    );
    let rules = p.requests();
    assert_eq!(rules.on_unparsable, Verb::Deny);
    assert_eq!(rules.ask_timeout, Duration::from_secs(300));
    assert_eq!(
        rules.budget.usd.as_ref().map(Usd::exact).as_deref(),
        Some("5")
    );
    assert_eq!(rules.budget.tokens, Some(2_000_000));
    let rpm: Vec<(String, u32)> = rules
        .budget
        .requests_per_minute
        .iter()
        .map(|(g, n)| (g.to_string(), *n))
        .collect();
    assert_eq!(rpm, [("api.broker.example".to_owned(), 60)]);

    let order = |qty: Value, side: &str| {
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
               "params": {"name": "place_order", "arguments": {"qty": qty, "side": side}}})
        .to_string()
    };
    let on_broker = |body: &str| {
        decide(
            &p,
            "POST",
            "mcp.broker.example",
            "/mcp",
            &json_headers(),
            body.as_bytes(),
        )
    };
    let hit = on_broker(&order(json!(500), "buy")).expect("a buy of 500 is refused");
    assert_eq!((hit.action, hit.rule.as_str()), (Verb::Deny, "tool[1]"));
    // SPEC.md §14.3 vector e8 records this decision.
    assert_eq!(
        hit.reason(),
        r#"tool[1] deny tool place_order on mcp.broker.example args /qty > 100, /side in ["buy","sell"] (matched /qty = 500, /side = "buy")"#
    );
    assert_eq!(on_broker(&order(json!(50), "buy")), None);
    assert_eq!(on_broker(&order(json!(500), "hold")), None);
    assert_eq!(
        on_broker(&order(json!("500"), "sell")).map(|h| h.action),
        Some(Verb::Deny),
        "a quoted number is a number"
    );

    let pay = |amount: u64| {
        decide(
            &p,
            "POST",
            "api.broker.example",
            "/v1/payments",
            &json_headers(),
            json!({"amount": amount}).to_string().as_bytes(),
        )
        .map(|h| (h.action, h.rule))
    };
    assert_eq!(pay(25_000), Some((Verb::Ask, "http[1]".to_owned())));
    assert_eq!(pay(100), None);

    let model = |name: &str| {
        let body = json!({"model": name, "max_tokens": 1, "messages": []}).to_string();
        decide(
            &p,
            "POST",
            "api.anthropic.com",
            "/v1/messages",
            &json_headers(),
            body.as_bytes(),
        )
        .map(|h| (h.action, h.rule))
    };
    assert_eq!(
        model("claude-opus-4-1"),
        Some((Verb::Deny, "model[1]".to_owned()))
    );
    assert_eq!(model("claude-sonnet-4-5"), None);
}

#[test]
fn leaving_the_host_out_does_not_dodge_a_deny_but_earns_no_allow() {
    let p = policy(
        r#"
default = "allow"
[[http]]
action = "deny"
method = "DELETE"
host = "api.example.com"
[[http]]
action = "allow"
host = "api.example.com"
"#,
    );
    let f = facts("DELETE", None, "/v1/accounts/9", &[], Some(b""));
    assert_eq!(
        p.requests().decide(&f).map(|h| (h.action, h.rule)),
        Some((Verb::Deny, "http[1]".to_owned()))
    );
    let f = facts("GET", None, "/v1/accounts/9", &[], Some(b""));
    assert_eq!(p.requests().decide(&f), None);
}

#[test]
fn json_declared_a_form_is_read_as_json() {
    let p = policy(BROKER_RULES);
    let form = vec![(
        "content-type".to_owned(),
        "application/x-www-form-urlencoded, application/json".to_owned(),
    )];
    let body = tools_call(1, json!(500)).to_string();
    assert_eq!(
        decide(&p, "POST", "h", "/mcp", &form, body.as_bytes()).map(|h| h.action),
        Some(Verb::Deny)
    );
}

#[test]
fn a_model_call_on_a_dressed_up_path_is_still_a_model_call() {
    let p = policy(BROKER_RULES);
    let body = json!({"model": "claude-opus-4", "max_tokens": 1, "messages": []}).to_string();
    for target in ["/v1//messages", "/v1/./messages", "/%761/messages"] {
        let hit = decide(
            &p,
            "POST",
            "api.anthropic.com",
            target,
            &json_headers(),
            body.as_bytes(),
        );
        assert_eq!(hit.map(|h| h.rule), Some("model[1]".to_owned()), "{target}");
    }
    let gemini = json!({"contents": []}).to_string();
    let hit = decide(
        &p,
        "POST",
        "g",
        "/v1beta/models/gemini%2Dopus%2D1:generateContent",
        &json_headers(),
        gemini.as_bytes(),
    );
    assert_eq!(hit.map(|h| h.rule), Some("model[1]".to_owned()));
}

#[test]
fn a_percent_sign_before_a_signed_number_is_not_an_escape() {
    assert_eq!(normalize_path("/a%+6b"), "/a%+6b");
    assert_eq!(normalize_path("/a%2fb"), "/a/b");
}

#[test]
fn values_beyond_what_canonical_json_holds_are_recorded_as_text() {
    assert_eq!(
        recordable(&json!(18446744073709551615u64)),
        json!("18446744073709551615")
    );
    assert_eq!(
        recordable(&json!(-9007199254740993i64)),
        json!("-9007199254740993")
    );
    assert_eq!(
        recordable(&json!({"a": [9007199254740991u64, 1.5]})),
        json!({"a": [9007199254740991u64, 1.5]})
    );
}

#[test]
fn arguments_that_are_not_an_object_cannot_be_read_by_a_rule_on_them() {
    let p = policy(BROKER_RULES);
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "place_order", "arguments": "{\"qty\": 500}"}});
    let hit = decide(
        &p,
        "POST",
        "h",
        "/mcp",
        &json_headers(),
        call.to_string().as_bytes(),
    )
    .expect("decided");
    assert_eq!(hit.action, Verb::Deny);
    assert!(
        hit.unparsable.as_deref().unwrap_or("").contains("a string"),
        "{hit:?}"
    );
}

fn decide_named(
    p: &Policy,
    method: &str,
    host: Option<&str>,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
    names: &[&str],
) -> Option<Hit> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    p.requests().decide(&facts_with_names(
        method,
        host,
        target,
        headers,
        Some(body),
        &names,
    ))
}

#[test]
fn the_request_cannot_pick_the_host_the_rules_see() {
    let p = policy(BROKER_RULES_WITH_SERVER);
    let call = tools_call(1, json!(5000)).to_string();
    // An address, an empty name or another name in Host: the connection's own name counts.
    for host in [Some("203.0.113.7"), Some(""), Some("other.example"), None] {
        let hit = decide_named(
            &p,
            "POST",
            host,
            "/mcp",
            &json_headers(),
            call.as_bytes(),
            &["mcp.broker.example"],
        );
        assert_eq!(hit.map(|h| h.action), Some(Verb::Deny), "Host {host:?}");
    }
    // A second Host header naming the server.
    let hit = decide_named(
        &p,
        "POST",
        Some("other.example"),
        "/mcp",
        &json_headers(),
        call.as_bytes(),
        &["mcp.broker.example"],
    );
    assert!(hit.is_some());
    // An allow needs every name to match.
    let allow =
        policy("default = \"allow\"\n[[http]]\naction = \"allow\"\nhost = \"api.example.com\"\n");
    assert!(decide_named(
        &allow,
        "GET",
        Some("api.example.com"),
        "/",
        &[],
        b"",
        &["api.example.com"]
    )
    .is_some());
    assert!(decide_named(
        &allow,
        "GET",
        Some("api.example.com"),
        "/",
        &[],
        b"",
        &["evil.example"]
    )
    .is_none());
}

const BROKER_RULES_WITH_SERVER: &str = r#"
default = "allow"
[[tool]]
action = "deny"
name = "place_order"
server = "mcp.broker.example"
args = { "/qty" = { gt = 100 } }
"#;

#[test]
fn a_body_in_another_charset_or_under_a_listed_json_type_is_not_read_as_harness_reads_it() {
    let p = policy(BROKER_RULES);
    let utf7 = vec![(
        "content-type".to_owned(),
        "application/json; charset=utf-7".to_owned(),
    )];
    let benign = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string();
    let hit = decide(&p, "POST", "h", "/mcp", &utf7, benign.as_bytes()).expect("decided");
    assert_eq!(hit.action, Verb::Deny);
    assert!(
        hit.unparsable.as_deref().unwrap_or("").contains("utf-7"),
        "{hit:?}"
    );
    let listed = vec![(
        "content-type".to_owned(),
        "text/plain, application/json".to_owned(),
    )];
    assert_eq!(
        decide(&p, "POST", "h", "/mcp", &listed, b"{\"jsonrpc\": \"2.0\"").map(|h| h.action),
        Some(Verb::Deny)
    );
}

#[test]
fn forms_that_parsers_split_differently_are_unreadable() {
    let p = policy(BROKER_RULES);
    let form = vec![(
        "content-type".to_owned(),
        "application/x-www-form-urlencoded".to_owned(),
    )];
    for body in [
        &b"to=acct-9;amount=50000"[..],
        b"to=acct-9&payment[amount]=50000",
    ] {
        let hit =
            decide(&p, "POST", "api.broker.example", "/v1/orders", &form, body).expect("decided");
        assert_eq!(hit.action, Verb::Deny, "{}", String::from_utf8_lossy(body));
    }
}

#[test]
fn a_deny_on_a_path_covers_every_case() {
    let p = policy(BROKER_RULES);
    assert_eq!(
        decide(&p, "DELETE", "api.example.com", "/V1/ACCOUNTS/9", &[], b"").map(|h| h.action),
        Some(Verb::Deny)
    );
}

#[test]
fn booleans_compare_as_lenient_servers_read_them() {
    let p = policy(
        "default = \"allow\"\n[[http]]\naction = \"deny\"\nbody = { \"/force\" = { eq = true } }\n",
    );
    for force in [
        json!(true),
        json!("yes"),
        json!("on"),
        json!("1"),
        json!("True"),
    ] {
        let body = json!({"force": force}).to_string();
        assert_eq!(
            decide(&p, "POST", "h", "/x", &json_headers(), body.as_bytes()).map(|h| h.action),
            Some(Verb::Deny),
            "{force}"
        );
    }
    let body = json!({"force": "no"}).to_string();
    assert_eq!(
        decide(&p, "POST", "h", "/x", &json_headers(), body.as_bytes()),
        None
    );
}

#[test]
fn a_pointer_through_a_string_holding_json_cannot_be_read() {
    let p = policy("default = \"allow\"\n[[tool]]\naction = \"deny\"\nname = \"place_order\"\nargs = { \"/order/qty\" = { gt = 100 } }\n");
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "place_order", "arguments": {"order": "{\"qty\": 5000}"}}});
    let hit = decide(
        &p,
        "POST",
        "h",
        "/mcp",
        &json_headers(),
        call.to_string().as_bytes(),
    )
    .expect("decided");
    assert_eq!(hit.action, Verb::Deny);
    assert!(
        hit.unparsable.as_deref().unwrap_or("").contains("/order"),
        "{hit:?}"
    );
}

#[test]
fn a_method_rule_meets_head_and_method_overrides() {
    let p = policy("default = \"allow\"\n[[http]]\naction = \"deny\"\nmethod = \"DELETE\"\n[[http]]\naction = \"deny\"\nmethod = \"GET\"\npath = \"/admin/*\"\n");
    let overridden = vec![("x-http-method-override".to_owned(), "delete".to_owned())];
    assert!(decide(&p, "POST", "h", "/repos/x", &overridden, b"").is_some());
    assert!(decide(&p, "POST", "h", "/repos/x?_method=DELETE", &[], b"").is_some());
    let body = json!({"_method": "DELETE"}).to_string();
    assert!(decide(
        &p,
        "POST",
        "h",
        "/repos/x",
        &json_headers(),
        body.as_bytes()
    )
    .is_some());
    assert!(decide(&p, "HEAD", "h", "/admin/reset", &[], b"").is_some());
    assert!(decide(&p, "POST", "h", "/repos/x", &[], b"").is_none());
}

#[test]
fn a_model_call_that_names_no_model_decides_as_on_unparsable() {
    let p = policy(BROKER_RULES);
    let body = json!({"messages": [], "max_tokens": 1}).to_string();
    let hit = decide(
        &p,
        "POST",
        "api.anthropic.com",
        "/v1/messages",
        &json_headers(),
        body.as_bytes(),
    )
    .expect("decided");
    assert_eq!((hit.action, hit.rule.as_str()), (Verb::Deny, "model[1]"));
}

#[test]
fn a_model_call_whose_usage_would_never_come_cannot_be_budgeted() {
    let chat = |body: Value| {
        facts(
            "POST",
            Some("api.openai.com"),
            "/v1/chat/completions",
            &json_headers(),
            Some(body.to_string().as_bytes()),
        )
    };
    assert!(uncountable(&chat(
        json!({"model": "gpt-5", "stream": true, "messages": []})
    ))
    .is_some());
    assert!(uncountable(&chat(json!({"model": "gpt-5", "stream": true, "stream_options": {"include_usage": true}, "messages": []}))).is_none());
    assert!(uncountable(&chat(json!({"model": "gpt-5", "messages": []}))).is_none());
    let background = facts(
        "POST",
        Some("api.openai.com"),
        "/v1/responses",
        &json_headers(),
        Some(
            json!({"model": "gpt-5", "background": true, "input": "x"})
                .to_string()
                .as_bytes(),
        ),
    );
    assert!(uncountable(&background).is_some());
}
