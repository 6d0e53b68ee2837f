//! OpenAI Responses (`POST …/v1/responses`): the request (`instructions`, `input` items), and the
//! answer buffered or streamed. Stream events rebuild the `output` items (`output_item.added`,
//! `content_part.added`, `output_text.delta`, `function_call_arguments.delta`,
//! `reasoning_summary_text.delta` …; an `output_item.done` or `response.completed` item replaces
//! what the deltas built), and the items are read by the same code as a buffered answer.
use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::json::{arr, str_of, str_or_null, u64_of};
use super::openai_chat::{parts, text_of};
use super::reply::{error_of, Reply, Thinking, ToolCall, Usage};
use super::{sse, Errs};

/// Positions larger than this in a stream event are not believed (they would only allocate).
const MAX_INDEX: u64 = 4096;

// === Request ===

/// The `llm_request` annotation of a Responses request body. `instructions` and `system` /
/// `developer` input messages make `system`.
pub(super) fn request(v: &Value) -> Value {
    let mut system: Vec<String> = str_of(v, "instructions")
        .map(|s| vec![s.to_string()])
        .unwrap_or_default();
    let mut messages = Vec::new();
    match v.get("input") {
        Some(Value::String(s)) => {
            messages.push(json!({"role": "user", "content": [{"type": "text", "text": s}]}))
        }
        Some(Value::Array(items)) => {
            for item in items {
                let role = str_of(item, "role");
                let kind = str_of(item, "type").unwrap_or("message");
                let (role, content) = match (kind, role) {
                    ("message", Some("system" | "developer")) => {
                        system.push(text_of(item.get("content")));
                        continue;
                    }
                    ("message", role) => (json!(role), parts(item.get("content"))),
                    ("function_call", _) => (json!("assistant"), vec![tool_use(item)]),
                    ("custom_tool_call", _) => (
                        json!("assistant"),
                        vec![
                            json!({"type": "tool_use", "id": str_or_null(item, "call_id"),
                                    "name": call_name(item),
                                    "input": str_or_null(item, "input")}),
                        ],
                    ),
                    ("function_call_output" | "custom_tool_call_output", _) => (
                        json!("tool"),
                        vec![json!({"type": "tool_result",
                                    "tool_use_id": str_or_null(item, "call_id"),
                                    "content": item.get("output").cloned().unwrap_or(Value::Null),
                                    "is_error": false})],
                    ),
                    ("reasoning", _) => {
                        let text: Vec<&str> = arr(item, "summary")
                            .iter()
                            .filter_map(|s| str_of(s, "text"))
                            .collect();
                        (
                            json!("assistant"),
                            vec![json!({"type": "thinking", "text": text.join("\n\n"),
                                        "signature": str_or_null(item, "encrypted_content")})],
                        )
                    }
                    // Tools, not a message: they are listed in `tools`.
                    ("additional_tools", _) => continue,
                    (other, role) => (json!(role), vec![json!({ "type": other })]),
                };
                messages.push(json!({"role": role, "content": content}));
            }
        }
        _ => {}
    }
    // Tools offered: `tools`, and the tools an `additional_tools` input item adds (Codex puts
    // them there when the model wants its tools in the conversation), namespaces unfolded.
    let mut tools = Vec::new();
    tool_names(arr(v, "tools"), None, &mut tools);
    for item in arr(v, "input") {
        if str_of(item, "type") == Some("additional_tools") {
            tool_names(arr(item, "tools"), None, &mut tools);
        }
    }
    let mut req = json!({
        "provider": "openai",
        "api": "responses",
        "model": str_or_null(v, "model"),
        "stream": v.get("stream").and_then(Value::as_bool).unwrap_or(false),
        "system": if system.is_empty() { Value::Null } else { json!(system.join("\n\n")) },
        "messages": messages,
        "tools": tools,
    });
    // A request that continues an earlier response sends only what is new: say which.
    if let Some(prev) = str_of(v, "previous_response_id") {
        req["previous_response_id"] = json!(prev);
    }
    // `generate: false` warms a connection up (Codex does, first thing): nothing is generated.
    if v.get("generate") == Some(&Value::Bool(false)) {
        req["generate"] = json!(false);
    }
    req
}

fn tool_use(item: &Value) -> Value {
    let args = str_of(item, "arguments").unwrap_or("");
    let input = serde_json::from_str::<Value>(args).unwrap_or_else(|_| json!(args));
    json!({"type": "tool_use", "id": str_or_null(item, "call_id"),
           "name": call_name(item), "input": input})
}

/// The names of tool definitions: a function's or custom tool's `name`, a built-in tool's
/// `type` (`web_search`); a `namespace` stands for the tools it holds, each named
/// `namespace.name`, which is how a call of one names it (see [`call_name`]).
fn tool_names(tools: &[Value], namespace: Option<&str>, out: &mut Vec<Value>) {
    for t in tools {
        let name = str_of(t, "name");
        if str_of(t, "type") == Some("namespace") {
            let inner = match (namespace, name) {
                (Some(outer), Some(n)) => Some(format!("{outer}.{n}")),
                (outer, n) => n.or(outer).map(str::to_string),
            };
            tool_names(arr(t, "tools"), inner.as_deref(), out);
            continue;
        }
        if let Some(n) = name.or_else(|| str_of(t, "type")) {
            out.push(json!(match namespace {
                Some(ns) => format!("{ns}.{n}"),
                None => n.to_string(),
            }));
        }
    }
}

/// A call's tool name: `name`, prefixed `namespace.` when the call names the namespace its tool
/// was offered in.
fn call_name(item: &Value) -> Value {
    match (str_of(item, "namespace"), str_of(item, "name")) {
        (Some(ns), Some(n)) if !ns.is_empty() => json!(format!("{ns}.{n}")),
        _ => str_or_null(item, "name"),
    }
}

// === Response ===

/// Response-level members: id, model, status, usage, error.
fn head(r: &mut Reply, v: &Value) {
    if let Some(id) = str_of(v, "id") {
        r.id = Some(id.to_string());
    }
    if let Some(m) = str_of(v, "model") {
        r.model = Some(m.to_string());
    }
    let reason = v
        .get("incomplete_details")
        .and_then(|d| str_of(d, "reason"))
        .or_else(|| str_of(v, "status"));
    if let Some(s) = reason {
        r.stop_reason = Some(s.to_string());
    }
    if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
        let details = |k: &str, n: &str| u.get(k).and_then(|d| u64_of(d, n));
        r.usage = Some(Usage {
            input_tokens: u64_of(u, "input_tokens"),
            output_tokens: u64_of(u, "output_tokens"),
            cache_read: details("input_tokens_details", "cached_tokens"),
            reasoning_tokens: details("output_tokens_details", "reasoning_tokens"),
            ..Usage::default()
        });
    }
    if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
        r.error = Some(error_of(e));
    }
}

/// Adds the output items to the reply.
fn items<'a>(r: &mut Reply, items: impl IntoIterator<Item = &'a Value>) {
    for item in items {
        match str_of(item, "type").unwrap_or("") {
            "reasoning" => {
                let signature = str_of(item, "encrypted_content").map(str::to_string);
                let texts: Vec<&str> = arr(item, "summary")
                    .iter()
                    .chain(arr(item, "content"))
                    .filter_map(|p| str_of(p, "text"))
                    .filter(|t| !t.is_empty())
                    .collect();
                if texts.is_empty() {
                    r.redacted_thinking += 1;
                }
                for text in texts {
                    r.thinking.push(Thinking {
                        text: text.to_string(),
                        signature: signature.clone(),
                    });
                }
            }
            "message" => {
                for p in arr(item, "content") {
                    if str_of(p, "type") == Some("output_text") {
                        r.push_text(0, str_of(p, "text").unwrap_or(""));
                    }
                }
            }
            "function_call" => r.tool_calls.push(ToolCall::from_text(
                0,
                str_of(item, "call_id").map(str::to_string),
                call_name(item).as_str().map(str::to_string),
                str_of(item, "arguments").unwrap_or(""),
            )),
            "custom_tool_call" => r.tool_calls.push(ToolCall {
                choice: 0,
                id: str_of(item, "call_id").map(str::to_string),
                name: call_name(item).as_str().map(str::to_string),
                input: str_or_null(item, "input"),
                input_error: None,
            }),
            _ => {}
        }
    }
}

/// A buffered answer.
pub(super) fn response(v: &Value) -> Reply {
    let mut r = Reply::new("openai", "responses");
    head(&mut r, v);
    items(&mut r, arr(v, "output"));
    r
}

/// `v[key][i]`, made an object in an array when it is not there yet.
fn slot<'a>(v: &'a mut Value, key: &str, i: u64) -> Option<&'a mut Value> {
    if i > MAX_INDEX || !v.is_object() {
        return None;
    }
    if !v[key].is_array() {
        v[key] = json!([]);
    }
    let a = v[key].as_array_mut()?;
    while a.len() as u64 <= i {
        a.push(json!({}));
    }
    a.get_mut(i as usize).filter(|x| x.is_object())
}

/// Appends a delta to a string member.
fn append(v: &mut Value, key: &str, piece: &str) {
    if !v.is_object() {
        return;
    }
    match &mut v[key] {
        Value::String(s) => s.push_str(piece),
        other => *other = json!(piece),
    }
}

/// The output item at `oi`, made when it is not there yet.
fn item(out: &mut BTreeMap<u64, Value>, oi: Option<u64>) -> Option<&mut Value> {
    oi.map(|i| out.entry(i).or_insert(json!({})))
        .filter(|v| v.is_object())
}

/// A streamed answer (SSE): its events folded as a WebSocket connection's are.
pub(super) fn stream(body: &[u8], errs: &mut Errs) -> Reply {
    let mut fold = Fold::new();
    for ev in sse::events(body, errs) {
        let Some(d) = ev.json(errs) else { continue };
        fold.event(&d, &ev.name, || ev.at(), errs);
    }
    fold.finish(format!("end (byte {})", body.len()), errs)
}

/// The answer rebuilt event by event, whichever transport carried the events (SSE events, or
/// the text messages of a WebSocket connection).
pub(super) struct Fold {
    r: Reply,
    out: BTreeMap<u64, Value>,
    finished: bool,
}

impl Fold {
    pub(super) fn new() -> Fold {
        Fold {
            r: Reply::new("openai", "responses"),
            out: BTreeMap::new(),
            finished: false,
        }
    }

    /// One event: `d` its JSON, `name` its SSE event name (`message` on a WebSocket) used when
    /// `d` has no `type`, `at` where it is for a `parse_error`. Returns whether it ended the
    /// response (`response.completed`, `.incomplete`, `.failed`, `error`).
    pub(super) fn event(
        &mut self,
        d: &Value,
        name: &str,
        at: impl Fn() -> String,
        errs: &mut Errs,
    ) -> bool {
        let (r, out) = (&mut self.r, &mut self.out);
        let kind = str_of(d, "type").unwrap_or(name).to_string();
        let oi = u64_of(d, "output_index").filter(|&i| i <= MAX_INDEX);
        let delta = str_of(d, "delta").unwrap_or("");
        match kind.as_str() {
            "response.created"
            | "response.in_progress"
            | "response.completed"
            | "response.incomplete"
            | "response.failed" => {
                let Some(resp) = d.get("response") else {
                    errs.add(at(), format!("{kind} without a response"));
                    return false;
                };
                head(r, resp);
                let output = arr(resp, "output");
                if !output.is_empty() {
                    *out = output
                        .iter()
                        .cloned()
                        .zip(0..)
                        .map(|(v, i)| (i, v))
                        .collect();
                }
                if kind != "response.created" && kind != "response.in_progress" {
                    self.finished = true;
                }
            }
            "response.output_item.added" | "response.output_item.done" => {
                match (oi, d.get("item").filter(|i| i.is_object())) {
                    (Some(i), Some(it)) => {
                        out.insert(i, it.clone());
                    }
                    _ => errs.add(at(), format!("{kind} without output_index or item")),
                }
            }
            "response.content_part.added" | "response.reasoning_summary_part.added" => {
                let (key, idx) = if kind == "response.content_part.added" {
                    ("content", "content_index")
                } else {
                    ("summary", "summary_index")
                };
                if let (Some(it), Some(i), Some(part)) =
                    (item(out, oi), u64_of(d, idx), d.get("part"))
                {
                    if let Some(s) = slot(it, key, i) {
                        *s = part.clone();
                    }
                }
            }
            "response.output_text.delta"
            | "response.reasoning_text.delta"
            | "response.reasoning_summary_text.delta" => {
                let (key, idx) = if kind == "response.reasoning_summary_text.delta" {
                    ("summary", "summary_index")
                } else {
                    ("content", "content_index")
                };
                let Some(it) = item(out, oi) else {
                    errs.add(at(), format!("{kind} without output_index"));
                    return false;
                };
                if let Some(s) = slot(it, key, u64_of(d, idx).unwrap_or(0)) {
                    if s.get("type").is_none() {
                        let t = match kind.as_str() {
                            "response.output_text.delta" => "output_text",
                            "response.reasoning_text.delta" => "reasoning_text",
                            _ => "summary_text",
                        };
                        s["type"] = json!(t);
                    }
                    append(s, "text", delta);
                }
            }
            "response.function_call_arguments.delta" | "response.custom_tool_call_input.delta" => {
                let key = if kind.starts_with("response.function") {
                    "arguments"
                } else {
                    "input"
                };
                match item(out, oi) {
                    Some(it) => append(it, key, delta),
                    None => errs.add(at(), format!("{kind} without output_index")),
                }
            }
            "error" => {
                // `{type: "error", code, message}`: the code says what kind.
                r.error = Some(match d.get("error") {
                    Some(e) => error_of(e),
                    None => json!({"type": d.get("code"), "message": d.get("message")}),
                });
                self.finished = true;
            }
            _ => {}
        }
        self.finished
    }

    /// The answer so far; `end` is where the events stopped, for the `parse_error` of a
    /// response that never finished.
    pub(super) fn finish(self, end: String, errs: &mut Errs) -> Reply {
        let Fold {
            mut r,
            out,
            finished,
        } = self;
        if !finished {
            errs.add(end, "the stream ends before response.completed");
        }
        items(&mut r, out.values());
        r
    }
}
