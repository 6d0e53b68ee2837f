//! Governance: the policy's request rules and the session's budget, applied to every HTTP
//! request once its head and body are durable and before anything of it goes upstream.
//!
//! The HTTP stage asks [`gate`] for each request. The gate reads what the request is
//! ([`facts`]: method, host, normalised path, body as JSON or form, MCP `tools/call`s, the model
//! of a model call), lets [`RequestRules::decide`] find the deciding rule, checks the budget,
//! and then:
//!
//! - **allow** (by a rule): records `request_decision` and lets the request go on;
//! - **deny**: records `request_decision` (durable) and hands back a [`Refusal`] shaped for the
//!   agent's protocol — a JSON-RPC error (code −32003) on the same ids for MCP, the provider's
//!   own error body for a model call, a JSON 403 otherwise (429 for a rate limit) — which the
//!   HTTP stage records as the response (`answered_by: "harness"`) and sends;
//! - **ask**: records `request_decision` (durable) with action `ask`, holds the request until
//!   `harness decide` ([`Asks::decide`], over the control socket) or the policy's
//!   `ask_timeout_seconds` (then deny), records `request_decided`, then goes on as allow or deny.
//!
//! Budgets (`[budget]`) are kept per session in a [`Governor`]: model-call cost (exact, from the
//! pricing table) and tokens are added when each call's usage is known ([`Unsettled::settle`]);
//! a model call is refused once the session has spent its budget. A call's cost is known only
//! once it is done, so the gate first waits (up to [`SETTLE_WAIT`]) for the session's earlier
//! model calls to be counted: an agent cannot outrun its budget by asking fast.
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use serde_json::{json, Value};

use crate::cost::{PriceTable, Tokens, Usd};
use crate::ledger::{BudgetState, Entry, RequestDecided, RequestDecision};
use crate::policy::request::{
    normalize_path, BodyFacts, Hit, RequestFacts, RequestRules, ToolCall, Verb,
};
use crate::policy::Policy;
use crate::record::ConnRecorder;

pub mod cli;

/// How long the gate waits for the session's earlier model calls to be counted before it
/// decides a budget on what is known (the wait is said in `budget.unsettled`).
pub const SETTLE_WAIT: Duration = Duration::from_secs(15);

/// JSON-RPC error code of a tools/call harness refused (in the implementation-defined server
/// error range −32000…−32099).
pub const MCP_DENIED: i64 = -32003;

/// The pricing table budgets count with: the built-in one under `/etc/harness/pricing.toml`.
fn prices() -> &'static PriceTable {
    static PRICES: OnceLock<PriceTable> = OnceLock::new();
    PRICES.get_or_init(|| {
        PriceTable::load(None).unwrap_or_else(|e| {
            tracing::warn!("budgets: {e}; using the built-in pricing table");
            PriceTable::builtin()
        })
    })
}

// === What a request is ===

/// What the rules look at in a request. `body` is the whole body as received (`None` when it
/// was too large to hold and is streamed, so no rule can read it).
pub fn facts(
    method: &str,
    authority: Option<&str>,
    target: &str,
    headers: &[(String, String)],
    body: Option<&[u8]>,
) -> RequestFacts {
    facts_with_names(method, authority, target, headers, body, &[])
}

/// [`facts`], with the other names the request and its connection go by (further `Host`
/// headers, the TLS server name, the name DNS gave the destination), which rules on hosts
/// see too: a request must not pick the host the rules see.
pub fn facts_with_names(
    method: &str,
    authority: Option<&str>,
    target: &str,
    headers: &[(String, String)],
    body: Option<&[u8]>,
    names: &[String],
) -> RequestFacts {
    // An address or an empty name names no host: rules on hosts then see the connection's
    // names, or none (which every deny and ask on a host meets).
    let named = |a: &str| {
        let h = crate::policy::normalize_host(authority_host(a));
        (!h.is_empty()
            && h.trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_err())
        .then_some(h)
    };
    let host = authority.and_then(named);
    let mut other_hosts: Vec<String> = Vec::new();
    for name in names.iter().filter_map(|n| named(n)) {
        if Some(&name) != host.as_ref() && !other_hosts.contains(&name) {
            other_hosts.push(name);
        }
    }
    let path = normalize_path(target);
    let read = match body {
        None => Read {
            facts: BodyFacts::Unreadable("the body is larger than harness holds whole".into()),
            lenient: None,
            json_like: declared_json(headers),
        },
        Some([]) => Read {
            facts: BodyFacts::Empty,
            lenient: None,
            json_like: false,
        },
        Some(b) => read_body(headers, b),
    };
    let body = read.facts;
    let mut tool_calls = Vec::new();
    let mut model = None;
    let mut mcp_unreadable = None;
    match &body {
        BodyFacts::Parsed(v) => {
            if let Some(calls) = crate::semantics::mcp_tool_calls(v) {
                tool_calls = calls
                    .into_iter()
                    .map(|(id, name, args)| ToolCall { id, name, args })
                    .collect();
            }
            if method.eq_ignore_ascii_case("POST") {
                model = crate::semantics::model_request(&path, v)
                    .map(|req| req["model"].as_str().unwrap_or("").to_owned());
            }
        }
        BodyFacts::Unreadable(why) => {
            // Not read, but what it may be matters: a tool rule must not be dodged by a
            // JSON-RPC body it cannot read (malformed, duplicate members, not decodable), nor a
            // model rule by a model call's. A body that is plainly not JSON (an image upload)
            // is no tool call.
            if read.json_like {
                mcp_unreadable = Some(why.clone());
            }
            if method.eq_ignore_ascii_case("POST")
                && crate::semantics::model_request(&path, &Value::Null).is_some()
            {
                model = Some(String::new());
            }
        }
        BodyFacts::Empty => {}
    }
    let other_methods = other_methods(method, target, headers, &body);
    RequestFacts {
        method: method.to_ascii_uppercase(),
        host,
        other_hosts,
        other_methods,
        path,
        body,
        tool_calls,
        model,
        mcp_unreadable,
        lenient: read.lenient,
    }
}

/// The methods a server may take the request for besides its own: GET for HEAD, a
/// method-override header, a `_method` query parameter or body member.
fn other_methods(
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &BodyFacts,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |m: &str| {
        let m = m.trim().to_ascii_uppercase();
        if !m.is_empty() && !m.eq_ignore_ascii_case(method) && !out.contains(&m) {
            out.push(m);
        }
    };
    if method.eq_ignore_ascii_case("HEAD") {
        add("GET");
    }
    for (name, value) in headers {
        if matches!(
            name.as_str(),
            "x-http-method-override" | "x-http-method" | "x-method-override"
        ) {
            add(value);
        }
    }
    if let Some((_, query)) = target.split_once('?') {
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            if k == "_method" {
                add(&v);
            }
        }
    }
    if let BodyFacts::Parsed(v) = body {
        if let Some(m) = v.get("_method").and_then(Value::as_str) {
            add(m);
        }
    }
    out
}

/// A body as read for the rules.
struct Read {
    facts: BodyFacts,
    /// The body as a lenient parser reads it (duplicate members: the last wins), when the
    /// strict reading refused it: only to address harness's answer (the JSON-RPC ids), never
    /// to decide.
    lenient: Option<Value>,
    /// Whether it is, or may be, JSON: declared so, or beginning as JSON does, or not
    /// decodable at all (a body that hides what it is counts as one that may be).
    json_like: bool,
}

/// Whether the headers say the body is JSON (`application/json`, `…+json`).
fn declared_json(headers: &[(String, String)]) -> bool {
    // A header may list several types (`text/plain, application/json`): some servers take any.
    headers
        .iter()
        .filter(|(n, _)| n == "content-type")
        .flat_map(|(_, v)| v.split(','))
        .any(|part| {
            let mime = part
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json")
        })
}

/// A `charset` the content type names other than UTF-8 (or its subset ASCII): a server that
/// decodes by it reads other characters than harness does.
fn foreign_charset(headers: &[(String, String)]) -> Option<String> {
    headers
        .iter()
        .filter(|(n, _)| n == "content-type")
        .flat_map(|(_, v)| v.split([';', ',']))
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("charset")
                .then(|| v.trim().trim_matches('"').to_ascii_lowercase())
        })
        .find(|c| !matches!(c.as_str(), "utf-8" | "utf8" | "us-ascii" | "ascii"))
}

/// The host of an authority (`host:port`, `[v6]:port`).
fn authority_host(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split_once(']').map_or(authority, |(v6, _)| v6);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// The body as the rules read it: decoded (Content-Encoding), then JSON — refusing duplicate
/// member names, which parsers resolve differently — or a form (an object of strings).
fn read_body(headers: &[(String, String)], body: &[u8]) -> Read {
    let decoded = crate::semantics::decode::decode(headers, body, crate::http::SEMANTICS_CAP);
    let unreadable = |why: String, json_like: bool| Read {
        facts: BodyFacts::Unreadable(why),
        lenient: None,
        json_like,
    };
    if let Some(e) = &decoded.error {
        return unreadable(format!("the body does not decode: {e}"), true);
    }
    if let Some(charset) = foreign_charset(headers) {
        return unreadable(
            format!("the body is declared in charset {charset:?}, which harness does not read"),
            true,
        );
    }
    // What the bytes look like before decoding counts too: a server that ignores the
    // request's Content-Encoding reads the raw bytes.
    let raw_json_like = starts_as_json(body);
    if decoded.truncated {
        return unreadable(
            "the decoded body is larger than harness reads".into(),
            declared_json(headers) || starts_as_json(&decoded.body),
        );
    }
    let content_type = headers
        .iter()
        .find(|(n, _)| n == "content-type")
        .map(|(_, v)| v.to_ascii_lowercase())
        .unwrap_or_default();
    // JSON first, whatever the content type says: a server may read JSON from a body
    // declared a form (or declared twice), so a rule must read it as JSON too.
    let json = strict_json(&decoded.body);
    if json.is_err() && content_type.starts_with("application/x-www-form-urlencoded") {
        let mut form = serde_json::Map::new();
        // `;` separates fields for some parsers and `[…]` nests them for others: a form that
        // reads differently to them cannot be read for sure.
        if decoded.body.contains(&b';') {
            return unreadable(
                "the form holds `;`, a separator to some servers".into(),
                false,
            );
        }
        for (k, v) in form_urlencoded::parse(&decoded.body) {
            if k.contains(['[', ']']) {
                return unreadable(
                    format!("form field {k:?} nests, as some servers read it"),
                    false,
                );
            }
            if form
                .insert(k.to_string(), Value::from(v.to_string()))
                .is_some()
            {
                return unreadable(format!("form field {k:?} is given twice"), false);
            }
        }
        return Read {
            facts: BodyFacts::Parsed(Value::Object(form)),
            lenient: None,
            json_like: false,
        };
    }
    match json {
        Ok(v) => Read {
            facts: BodyFacts::Parsed(v),
            lenient: None,
            json_like: true,
        },
        Err(e) => Read {
            facts: BodyFacts::Unreadable(format!("the body is not JSON: {e}")),
            lenient: serde_json::from_slice(&decoded.body).ok(),
            json_like: declared_json(headers) || starts_as_json(&decoded.body) || raw_json_like,
        },
    }
}

/// Whether the first byte that is not white space opens a JSON object or array.
fn starts_as_json(body: &[u8]) -> bool {
    body.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| matches!(b, b'{' | b'['))
}

/// JSON that names no member twice in any object.
fn strict_json(bytes: &[u8]) -> Result<Value, String> {
    use serde::de::{Deserializer as _, MapAccess, SeqAccess, Visitor};
    struct Strict;
    impl<'de> Visitor<'de> for Strict {
        type Value = Value;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(v.into())
        }
        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(v.into())
        }
        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(v.into())
        }
        fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
            Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
        }
        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(v.into())
        }
        fn visit_string<E>(self, v: String) -> Result<Value, E> {
            Ok(v.into())
        }
        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut out = Vec::new();
            while let Some(v) = seq.next_element_seed(StrictSeed)? {
                out.push(v);
            }
            Ok(Value::Array(out))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut out = serde_json::Map::new();
            while let Some(key) = map.next_key::<String>()? {
                let v = map.next_value_seed(StrictSeed)?;
                if out.insert(key.clone(), v).is_some() {
                    return Err(serde::de::Error::custom(format!(
                        "member {key:?} is given twice"
                    )));
                }
            }
            Ok(Value::Object(out))
        }
    }
    struct StrictSeed;
    impl<'de> serde::de::DeserializeSeed<'de> for StrictSeed {
        type Value = Value;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(Strict)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = (&mut de)
        .deserialize_any(Strict)
        .map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(v)
}

// === The session's budget ===

/// What a session has spent on model calls.
#[derive(Debug, Default, Clone)]
struct Spent {
    usd: Usd,
    tokens: u64,
}

/// One session's governance state: what it spent, its model calls still in flight, its
/// request-rate windows.
pub struct Governor {
    session: String,
    spent: Mutex<Spent>,
    /// Model calls forwarded whose usage is not yet counted.
    in_flight: tokio::sync::watch::Sender<u64>,
    /// Per `requests_per_minute` host glob: when its admitted requests were.
    windows: Mutex<HashMap<String, VecDeque<Instant>>>,
    /// Held while a model call is checked against the budget and counted in flight: calls that
    /// come together are admitted one after the other, each seeing the ones before it.
    admission: tokio::sync::Mutex<()>,
    asks: Arc<Asks>,
}

impl Governor {
    /// The state of session `session`, whose asks wait in `asks`.
    pub fn new(session: String, asks: Arc<Asks>) -> Arc<Governor> {
        Arc::new(Governor {
            session,
            spent: Mutex::new(Spent::default()),
            in_flight: tokio::sync::watch::Sender::new(0),
            windows: Mutex::new(HashMap::new()),
            admission: tokio::sync::Mutex::new(()),
            asks,
        })
    }

    fn spent(&self) -> Spent {
        self.spent.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until every earlier model call is counted, or `limit` passes; how many were not.
    /// Waits until every model call in flight but the caller's own `own` is counted, or
    /// `limit` passes; how many were not.
    async fn settled(&self, limit: Duration, own: u64) -> u64 {
        let mut rx = self.in_flight.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|n| *n <= own)).await;
        let n = *rx.borrow();
        n.saturating_sub(own)
    }

    fn unsettled(self: &Arc<Self>) -> Unsettled {
        self.in_flight.send_modify(|n| *n += 1);
        Unsettled(Some(self.clone()))
    }
}

/// A forwarded model call whose usage the session's budget still has to count. Dropped without
/// [`Unsettled::settle`] (the exchange failed, the stream was cut), it counts nothing.
pub struct Unsettled(Option<Arc<Governor>>);

impl Unsettled {
    /// Counts the call's usage from its `llm_response` (and `llm_request`) annotation data.
    pub fn settle(mut self, response: &Value, request: Option<&Value>) {
        if let Some(gov) = self.0.take() {
            let priced = prices().price_call(response, request);
            {
                let mut spent = gov.spent.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(t) = &priced.tokens {
                    spent.tokens += total_tokens(t);
                }
                if let Ok(usd) = priced.cost {
                    spent.usd += usd;
                }
            }
            gov.in_flight.send_modify(|n| *n = n.saturating_sub(1));
        }
    }
}

impl Drop for Unsettled {
    fn drop(&mut self) {
        if let Some(gov) = self.0.take() {
            gov.in_flight.send_modify(|n| *n = n.saturating_sub(1));
        }
    }
}

fn total_tokens(t: &Tokens) -> u64 {
    t.prompt() + t.completion()
}

// === Asks ===

/// How a person (or the timeout) decided an ask.
#[derive(Debug, Clone)]
pub struct Resolution {
    /// Allow (else deny).
    pub allow: bool,
    /// Who: `uid 0 pid 42 (harness decide)`.
    pub by: String,
    /// Why, as they said it.
    pub why: Option<String>,
}

/// A request that waits for a person, as `harness pending` lists it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PendingAsk {
    /// The session.
    pub session: String,
    /// Seq of its `request_decision` entry: the id `harness decide` takes.
    pub id: u64,
    /// Its connection and exchange.
    pub conn: u64,
    /// Exchange number.
    pub exchange: u64,
    /// The deciding rule and what it met.
    pub reason: String,
    /// `POST https://host/path`.
    pub request: String,
    /// Seconds it has waited.
    pub waited_seconds: u64,
    /// Seconds until it is denied for want of an answer.
    pub timeout_seconds: u64,
}

struct Waiting {
    shown: PendingAsk,
    since: Instant,
    timeout: Duration,
    answer: tokio::sync::oneshot::Sender<Resolution>,
}

/// Every request held for a person in one engine, by (session, id).
#[derive(Default)]
pub struct Asks {
    waiting: Mutex<BTreeMap<(String, u64), Waiting>>,
}

impl Asks {
    /// What waits now, oldest first.
    pub fn list(&self) -> Vec<PendingAsk> {
        let waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<PendingAsk> = waiting
            .values()
            .map(|w| PendingAsk {
                waited_seconds: w.since.elapsed().as_secs(),
                timeout_seconds: w.timeout.saturating_sub(w.since.elapsed()).as_secs(),
                ..w.shown.clone()
            })
            .collect();
        out.sort_by_key(|p| std::cmp::Reverse(p.waited_seconds));
        out
    }

    /// Decides the ask `id` of `session`; `Err` says why it cannot be (no such ask: already
    /// decided, timed out, or never was).
    pub fn decide(&self, session: &str, id: u64, how: Resolution) -> Result<(), String> {
        let waiting = self
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(session.to_owned(), id));
        match waiting {
            Some(w) => w
                .answer
                .send(how)
                .map_err(|_| format!("session {session} ask {id}: its request is gone")),
            None => Err(format!(
                "session {session} has no request waiting as {id} (decided already, timed out, or never asked)"
            )),
        }
    }

    fn hold(
        &self,
        shown: PendingAsk,
        timeout: Duration,
    ) -> tokio::sync::oneshot::Receiver<Resolution> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let key = (shown.session.clone(), shown.id);
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                key,
                Waiting {
                    shown,
                    since: Instant::now(),
                    timeout,
                    answer: tx,
                },
            );
        rx
    }

    fn forget(&self, session: &str, id: u64) {
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(session.to_owned(), id));
    }
}

// === The gate ===

/// What the HTTP stage does with a request.
pub enum Gate {
    /// Forward it; the guard (for a model call under a budget) goes with its response.
    Pass(Option<Unsettled>),
    /// Answer it with this, in the destination's place.
    Refuse(Refusal),
    /// The ledger could not record the decision: the request must not go on.
    Unrecorded(String),
}

/// The answer harness gives in the destination's place.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// Status code.
    pub status: StatusCode,
    /// Content type of `body`.
    pub content_type: &'static str,
    /// Extra header (`retry-after`), when there is one.
    pub retry_after: Option<u64>,
    /// The body.
    pub body: Bytes,
}

/// What a decision is about, for the refusal's shape.
enum Shape {
    /// JSON-RPC: the ids to answer (requests only; notifications get none), whether the body
    /// was a batch, whether to answer as an event stream.
    Mcp {
        ids: Vec<Value>,
        batch: bool,
        sse: bool,
    },
    Model(&'static str),
    Http,
}

fn shape(facts: &RequestFacts, headers: &[(String, String)]) -> Shape {
    let body = match &facts.body {
        BodyFacts::Parsed(v) => Some(v),
        _ => facts.lenient.as_ref(),
    };
    if let Some(v) = body {
        if crate::semantics::mcp_tool_calls(v).is_some() {
            let batch = v.is_array();
            let messages: Vec<&Value> = match v {
                Value::Array(a) => a.iter().collect(),
                m => vec![m],
            };
            let ids = messages
                .iter()
                .filter(|m| m.get("method").is_some())
                .filter_map(|m| m.get("id").cloned())
                .collect();
            let accept = headers
                .iter()
                .find(|(n, _)| n == "accept")
                .map(|(_, v)| v.to_ascii_lowercase())
                .unwrap_or_default();
            let sse = accept.contains("text/event-stream")
                && !accept.contains("application/json")
                && !accept.contains("*/*");
            return Shape::Mcp { ids, batch, sse };
        }
    }
    if facts.model.is_some() {
        let path = facts.path.as_str();
        let provider = if path.ends_with("/v1/messages") {
            "anthropic"
        } else if path.contains(":generateContent") || path.contains(":streamGenerateContent") {
            "gemini"
        } else {
            "openai"
        };
        return Shape::Model(provider);
    }
    Shape::Http
}

/// The refusal of a request, shaped for its protocol; `status` for HTTP and model calls
/// (MCP errors travel in a 200, as JSON-RPC over HTTP does).
fn refusal(
    shape: &Shape,
    status: StatusCode,
    message: &str,
    rule: &str,
    hit: Option<&Hit>,
) -> Refusal {
    let json_refusal = |status, body: Value| Refusal {
        status,
        content_type: "application/json",
        retry_after: None,
        body: Bytes::from(body.to_string()),
    };
    match shape {
        Shape::Mcp { ids, batch, sse } => {
            let denied_id = hit.and_then(|h| h.call_id.clone());
            let error = |id: &Value| {
                let text = match &denied_id {
                    Some(d) if d != id && *batch => {
                        format!("not sent: another call of this batch (id {d}) was {message}")
                    }
                    _ => message.to_owned(),
                };
                json!({"jsonrpc": "2.0", "id": id, "error": {
                    "code": MCP_DENIED, "message": text,
                    "data": {"by": "harness", "rule": rule}}})
            };
            let answers: Vec<Value> = ids.iter().map(error).collect();
            let body = if *batch {
                Value::Array(answers)
            } else {
                answers.into_iter().next().unwrap_or_else(|| {
                    json!({"jsonrpc": "2.0", "id": null, "error": {
                        "code": MCP_DENIED, "message": message,
                        "data": {"by": "harness", "rule": rule}}})
                })
            };
            if *sse {
                Refusal {
                    status: StatusCode::OK,
                    content_type: "text/event-stream",
                    retry_after: None,
                    body: Bytes::from(format!("event: message\ndata: {body}\n\n")),
                }
            } else {
                json_refusal(StatusCode::OK, body)
            }
        }
        Shape::Model("anthropic") => json_refusal(
            status,
            json!({"type": "error", "error": {
                "type": if status == StatusCode::TOO_MANY_REQUESTS { "rate_limit_error" } else { "permission_error" },
                "message": message}}),
        ),
        Shape::Model("gemini") => json_refusal(
            status,
            json!({"error": {"code": status.as_u16(), "message": message,
                "status": if status == StatusCode::TOO_MANY_REQUESTS { "RESOURCE_EXHAUSTED" } else { "PERMISSION_DENIED" }}}),
        ),
        Shape::Model(_) => json_refusal(
            status,
            json!({"error": {"message": message,
                "type": if status == StatusCode::TOO_MANY_REQUESTS { "rate_limit_exceeded" } else { "permission_denied" },
                "param": null, "code": "harness_policy"}}),
        ),
        Shape::Http => json_refusal(
            status,
            json!({"error": {"by": "harness", "message": message, "rule": rule}}),
        ),
    }
}

/// A budget's verdict: which, its state, and why.
struct OverBudget {
    rule: &'static str,
    state: BudgetState,
    reason: String,
    status: StatusCode,
    retry_after: Option<u64>,
}

/// Why a model call's usage would never reach harness, if it would not: a Chat Completions
/// stream that does not ask for usage (`stream_options.include_usage`), a Responses call run
/// in the background (its answer is fetched later, by another request).
fn uncountable(facts: &RequestFacts) -> Option<&'static str> {
    let BodyFacts::Parsed(body) = &facts.body else {
        return None;
    };
    if facts.path.ends_with("/chat/completions")
        && body["stream"] == Value::Bool(true)
        && body["stream_options"]["include_usage"] != Value::Bool(true)
    {
        return Some("a streamed chat completion that does not ask for usage (stream_options.include_usage) reports none");
    }
    if body["background"] == Value::Bool(true) {
        return Some("a model call run in the background reports its usage to another request");
    }
    None
}

/// Whether the session's dollar or token budget is spent (for a model call); `own` is how
/// many of the calls in flight are this one (its reservation, once admitted).
async fn spending(
    gov: &Governor,
    rules: &RequestRules,
    facts: &RequestFacts,
    provider: Option<&str>,
    own: u64,
) -> Option<OverBudget> {
    let b = &rules.budget;
    if facts.model.is_some() && (b.usd.is_some() || b.tokens.is_some()) {
        let unsettled = gov.settled(SETTLE_WAIT, own).await;
        let spent = gov.spent();
        if let Some(why) = uncountable(facts) {
            let (rule, limit, spent) = match b.usd {
                Some(limit) => ("budget.usd", limit.exact(), spent.usd.exact()),
                None => (
                    "budget.tokens",
                    b.tokens.unwrap_or(0).to_string(),
                    spent.tokens.to_string(),
                ),
            };
            return Some(OverBudget {
                rule,
                reason: format!("{why}, so a budget cannot count it"),
                state: BudgetState {
                    limit,
                    spent,
                    unsettled,
                },
                status: StatusCode::FORBIDDEN,
                retry_after: None,
            });
        }
        if let Some(limit) = b.usd {
            if spent.usd >= limit {
                return Some(OverBudget {
                    rule: "budget.usd",
                    reason: format!(
                        "the session's budget of ${} is spent (${} so far)",
                        limit.exact(),
                        spent.usd.exact()
                    ),
                    state: BudgetState {
                        limit: limit.exact(),
                        spent: spent.usd.exact(),
                        unsettled,
                    },
                    status: StatusCode::FORBIDDEN,
                    retry_after: None,
                });
            }
            // A call that cannot be priced cannot be kept within a dollar budget.
            let model = facts.model.as_deref().unwrap_or("");
            if prices().entry(provider.unwrap_or(""), model).is_none() {
                return Some(OverBudget {
                    rule: "budget.usd",
                    reason: format!(
                        "model {model:?} of {} is not in the pricing table, so a dollar budget cannot be kept",
                        provider.unwrap_or("?")
                    ),
                    state: BudgetState {
                        limit: limit.exact(),
                        spent: spent.usd.exact(),
                        unsettled,
                    },
                    status: StatusCode::FORBIDDEN,
                    retry_after: None,
                });
            }
        }
        if let Some(limit) = b.tokens {
            if spent.tokens >= limit {
                return Some(OverBudget {
                    rule: "budget.tokens",
                    reason: format!(
                        "the session's budget of {limit} tokens is spent ({} so far)",
                        spent.tokens
                    ),
                    state: BudgetState {
                        limit: limit.to_string(),
                        spent: spent.tokens.to_string(),
                        unsettled,
                    },
                    status: StatusCode::FORBIDDEN,
                    retry_after: None,
                });
            }
        }
    }
    None
}

/// Whether a `requests_per_minute` window is full; counts the request in its windows when not.
fn rate(gov: &Governor, rules: &RequestRules, facts: &RequestFacts) -> Option<OverBudget> {
    let b = &rules.budget;
    let names: Vec<&str> = facts
        .host
        .as_deref()
        .into_iter()
        .chain(facts.other_hosts.iter().map(String::as_str))
        .collect();
    let host = names.first().copied().unwrap_or("");
    let mut windows = gov.windows.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    let minute = Duration::from_secs(60);
    let matching: Vec<_> = b
        .requests_per_minute
        .iter()
        .filter(|(glob, _)| names.iter().any(|n| glob.matches(n)) || names.is_empty())
        .collect();
    for (glob, limit) in &matching {
        let window = windows.entry(glob.to_string()).or_default();
        while window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= minute)
        {
            window.pop_front();
        }
        if window.len() >= *limit as usize {
            let free_in = window
                .front()
                .map_or(60, |t| (minute - now.duration_since(*t)).as_secs() + 1);
            return Some(OverBudget {
                rule: "budget.requests_per_minute",
                reason: format!(
                    "{host}: at most {limit} requests per minute to {glob} (next in {free_in} s)"
                ),
                state: BudgetState {
                    limit: limit.to_string(),
                    spent: window.len().to_string(),
                    unsettled: 0,
                },
                status: StatusCode::TOO_MANY_REQUESTS,
                retry_after: Some(free_in),
            });
        }
    }
    for (glob, _) in matching {
        windows.entry(glob.to_string()).or_default().push_back(now);
    }
    None
}

/// Where the request came from, for `harness pending`.
pub struct RequestLine<'a> {
    /// Method.
    pub method: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// Host.
    pub authority: Option<&'a str>,
    /// Path and query as recorded.
    pub target: &'a str,
    /// Request headers (lower-case names, secrets fingerprinted).
    pub headers: &'a [(String, String)],
    /// Whether it asks to upgrade the connection (WebSocket).
    pub upgrade: bool,
}

/// Decides request `exchange` of the connection `rec` records under `policy`; see the module
/// docs. Nothing is decided (and nothing recorded) when the policy has no request rule and no
/// budget.
pub async fn gate(
    rec: &ConnRecorder,
    gov: &Arc<Governor>,
    policy: &Policy,
    exchange: u64,
    line: &RequestLine<'_>,
    facts: &RequestFacts,
) -> Gate {
    let rules = policy.requests();
    let shape = shape(facts, line.headers);
    let provider = match &shape {
        Shape::Model(p) => Some(*p),
        _ => None,
    };
    let decision = |action: Verb, rule: &str, reason: &str, hit: Option<&Hit>| RequestDecision {
        conn: rec.conn(),
        exchange,
        action: action.as_str().into(),
        rule: rule.into(),
        reason: reason.into(),
        matched: hit
            .map(|h| {
                h.matched
                    .iter()
                    .map(|(k, v)| (k.clone(), recordable(v)))
                    .collect()
            })
            .unwrap_or_default(),
        tool: hit.and_then(|h| h.tool.clone()),
        call_id: hit.and_then(|h| h.call_id.as_ref().map(recordable)),
        budget: None,
        policy_sha256: policy.sha256_hex(),
    };
    // Model calls over a WebSocket (the Responses API's WebSocket mode) travel as messages
    // after the upgrade, where no rule can hold them: under rules or a budget that look at model
    // calls, the upgrade itself is refused (clients fall back to HTTP, where each call is
    // decided), so that the transport cannot be a way around them.
    let models_governed =
        !rules.models.is_empty() || rules.budget.usd.is_some() || rules.budget.tokens.is_some();
    if line.upgrade && models_governed {
        if let Some(api) = crate::semantics::model_request(&facts.path, &Value::Null) {
            let provider = match api["provider"].as_str() {
                Some("anthropic") => "anthropic",
                Some("gemini") => "gemini",
                _ => "openai",
            };
            let reason = format!(
                "{} {}: model calls over a WebSocket cannot be held for the policy's model rules and budget; the upgrade is refused (use HTTP)",
                line.method, facts.path
            );
            let entry = decision(Verb::Deny, "model.websocket", &reason, None);
            return deny(
                rec,
                entry,
                &Shape::Model(provider),
                StatusCode::FORBIDDEN,
                None,
                None,
            )
            .await;
        }
    }
    // Other upgrades: HTTP/2 over cleartext (`h2c`) would carry further requests past every
    // rule; a WebSocket to a host a tool rule names, tool calls as messages.
    if line.upgrade {
        let to = line
            .headers
            .iter()
            .filter(|(n, _)| n == "upgrade")
            .map(|(_, v)| v.to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join(",");
        let h2c = to.contains("h2c") && !(rules.tools.is_empty() && rules.http.is_empty());
        let tool_socket = !h2c && rules.names_a_tool_server(facts);
        if h2c || tool_socket {
            let reason = if h2c {
                format!("{} {}: an upgrade to h2c would carry requests past the policy's request rules; refused", line.method, facts.path)
            } else {
                format!("{} {}: an upgrade to {to} on a host a [[tool]] rule names would carry tool calls past it; refused", line.method, facts.path)
            };
            let entry = decision(Verb::Deny, "upgrade", &reason, None);
            return deny(rec, entry, &Shape::Http, StatusCode::FORBIDDEN, None, None).await;
        }
    }
    let hit = rules.decide(facts);
    if let Some(h) = hit.as_ref().filter(|h| h.action == Verb::Deny) {
        let reason = h.reason();
        let entry = decision(Verb::Deny, &h.rule, &reason, Some(h));
        return deny(rec, entry, &shape, StatusCode::FORBIDDEN, None, Some(h)).await;
    }
    // A model call under a dollar or token budget is checked and counted in flight under one
    // lock, so that calls sent together cannot all pass on the same total; its reservation
    // goes with it to its response (or is given back if it goes no further).
    let budgeted =
        facts.model.is_some() && (rules.budget.usd.is_some() || rules.budget.tokens.is_some());
    let mut guard = None;
    if budgeted {
        let _admission = gov.admission.lock().await;
        if let Some(over) = spending(gov, rules, facts, provider, 0).await {
            let mut entry = decision(Verb::Deny, over.rule, &over.reason, None);
            entry.budget = Some(over.state);
            return deny(rec, entry, &shape, over.status, over.retry_after, None).await;
        }
        guard = Some(gov.unsettled());
    }
    if let Some(over) = rate(gov, rules, facts) {
        let mut entry = decision(Verb::Deny, over.rule, &over.reason, None);
        entry.budget = Some(over.state);
        return deny(rec, entry, &shape, over.status, over.retry_after, None).await;
    }
    if let Some(h) = hit.as_ref().filter(|h| h.action == Verb::Ask) {
        let reason = h.reason();
        let entry = decision(Verb::Ask, &h.rule, &reason, Some(h));
        let ask = match rec.append(Entry::RequestDecision(entry)).await {
            Ok(durable) => durable.seq(),
            Err(e) => {
                return Gate::Unrecorded(format!("the ledger could not record the ask ({e})"))
            }
        };
        let timeout = rules.ask_timeout;
        let shown = PendingAsk {
            session: gov.session.clone(),
            id: ask,
            conn: rec.conn(),
            exchange,
            reason: reason.clone(),
            request: format!(
                "{} {}://{}{}",
                line.method,
                line.scheme,
                line.authority.unwrap_or(""),
                line.target
            ),
            waited_seconds: 0,
            timeout_seconds: timeout.as_secs(),
        };
        let answer = gov.asks.hold(shown, timeout);
        // Whichever way this ends — decided, timed out, or the request gone (the client reset,
        // the session closed) —, it no longer waits.
        let _held = rec.hold();
        let _listed = Listed {
            asks: &gov.asks,
            session: &gov.session,
            id: ask,
        };
        let resolution = match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(r)) => r,
            _ => Resolution {
                allow: false,
                by: format!("timeout after {} s", timeout.as_secs()),
                why: None,
            },
        };
        let decided = RequestDecided {
            conn: rec.conn(),
            exchange,
            ask,
            action: if resolution.allow { "allow" } else { "deny" }.into(),
            by: resolution.by.clone(),
            why: resolution.why.clone(),
        };
        if let Err(e) = rec.append(Entry::RequestDecided(decided)).await {
            return Gate::Unrecorded(format!("the ledger could not record the decision ({e})"));
        }
        if !resolution.allow {
            let message = format!(
                "denied by harness: {reason}; held for a person and refused by {}{}",
                resolution.by,
                resolution.why.map(|w| format!(": {w}")).unwrap_or_default()
            );
            return Gate::Refuse(refusal(
                &shape,
                StatusCode::FORBIDDEN,
                &message,
                &h.rule,
                Some(h),
            ));
        }
        // The wait may have been long: what the session spent meanwhile counts.
        if let Some(over) = spending(gov, rules, facts, provider, u64::from(budgeted)).await {
            let mut entry = decision(Verb::Deny, over.rule, &over.reason, None);
            entry.budget = Some(over.state);
            return deny(rec, entry, &shape, over.status, over.retry_after, None).await;
        }
    } else if let Some(h) = hit.as_ref().filter(|h| h.action == Verb::Allow) {
        // Recorded, but the request need not wait for it: nothing is refused.
        rec.queue_lazy(Entry::RequestDecision(decision(
            Verb::Allow,
            &h.rule,
            &h.reason(),
            Some(h),
        )));
    }
    Gate::Pass(guard)
}

/// An ask's place in `harness pending`, given up when dropped.
struct Listed<'a> {
    asks: &'a Asks,
    session: &'a str,
    id: u64,
}

impl Drop for Listed<'_> {
    fn drop(&mut self) {
        self.asks.forget(self.session, self.id);
    }
}

/// A request's value as the ledger can hold it: an integer beyond ±(2^53−1) (which canonical
/// JSON cannot carry exactly) as its decimal text, everywhere inside.
fn recordable(v: &Value) -> Value {
    const MAX_SAFE: u64 = (1 << 53) - 1;
    match v {
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) if i.unsigned_abs() <= MAX_SAFE => v.clone(),
            (_, Some(u)) if u <= MAX_SAFE => v.clone(),
            (None, None) => v.clone(),
            _ => Value::String(n.to_string()),
        },
        Value::Array(a) => Value::Array(a.iter().map(recordable).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), recordable(v))).collect())
        }
        other => other.clone(),
    }
}

async fn deny(
    rec: &ConnRecorder,
    entry: RequestDecision,
    shape: &Shape,
    status: StatusCode,
    retry_after: Option<u64>,
    hit: Option<&Hit>,
) -> Gate {
    let message = format!("denied by harness policy: {}", entry.reason);
    let rule = entry.rule.clone();
    if let Err(e) = rec.append(Entry::RequestDecision(entry)).await {
        return Gate::Unrecorded(format!("the ledger could not record the denial ({e})"));
    }
    let mut r = refusal(shape, status, &message, &rule, hit);
    r.retry_after = retry_after;
    Gate::Refuse(r)
}

#[cfg(test)]
mod tests;
