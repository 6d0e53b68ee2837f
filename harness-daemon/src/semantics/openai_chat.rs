//! OpenAI Chat Completions (`POST …/chat/completions`): the request, and the answer buffered
//! or streamed (`chat.completion.chunk`s with `delta.content`, `delta.tool_calls[i]` argument
//! pieces, a usage chunk, `[DONE]`). Both forms fill the same per-choice state, so they give
//! the same `llm_response`; every choice is kept.
use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::json::{arr, str_of, str_or_null, u64_of};
use super::reply::{error_of, Reply, Thinking, ToolCall, Usage};
use super::{sse, Errs};

// === Request ===

/// The `llm_request` annotation of a Chat Completions request body. `system` and `developer`
/// messages make `system` (joined by blank lines); the others are `messages`.
pub(super) fn request(v: &Value) -> Value {
    let mut system: Vec<String> = Vec::new();
    let mut messages = Vec::new();
    for m in arr(v, "messages") {
        let role = str_of(m, "role").unwrap_or("");
        if role == "system" || role == "developer" {
            system.push(text_of(m.get("content")));
            continue;
        }
        let mut content: Vec<Value> = Vec::new();
        if let Some(r) = str_of(m, "reasoning_content").or_else(|| str_of(m, "reasoning")) {
            content.push(json!({"type": "thinking", "text": r, "signature": null}));
        }
        if role == "tool" || role == "function" {
            let mut b = json!({
                "type": "tool_result",
                "tool_use_id": str_or_null(m, "tool_call_id"),
                "content": m.get("content").cloned().unwrap_or(Value::Null),
                "is_error": false,
            });
            if role == "function" {
                b["name"] = str_or_null(m, "name");
            }
            content.push(b);
        } else {
            content.extend(parts(m.get("content")));
        }
        for c in arr(m, "tool_calls") {
            let f = c.get("function").unwrap_or(&Value::Null);
            content.push(tool_use(str_or_null(c, "id"), f));
        }
        if let Some(f) = m.get("function_call").filter(|f| f.is_object()) {
            content.push(tool_use(Value::Null, f));
        }
        messages.push(json!({"role": role, "content": content}));
    }
    let tools: Vec<Value> = arr(v, "tools")
        .iter()
        .filter_map(|t| {
            let kind = str_of(t, "type").unwrap_or("function");
            t.get(kind)
                .and_then(|f| str_of(f, "name"))
                .or_else(|| str_of(t, "name"))
                .or(Some(kind))
        })
        .chain(arr(v, "functions").iter().filter_map(|f| str_of(f, "name")))
        .map(|n| json!(n))
        .collect();
    json!({
        "provider": "openai",
        "api": "chat.completions",
        "model": str_or_null(v, "model"),
        "stream": v.get("stream").and_then(Value::as_bool).unwrap_or(false),
        "system": if system.is_empty() { Value::Null } else { json!(system.join("\n\n")) },
        "messages": messages,
        "tools": tools,
    })
}

/// A `{name, arguments}` function as a `tool_use` block (arguments parsed when they parse).
fn tool_use(id: Value, f: &Value) -> Value {
    let args = str_of(f, "arguments").unwrap_or("");
    let input = serde_json::from_str::<Value>(args).unwrap_or_else(|_| json!(args));
    json!({"type": "tool_use", "id": id, "name": str_or_null(f, "name"), "input": input})
}

/// Content as text: a string, or its text parts joined (Chat Completions and Responses alike).
pub(super) fn text_of(c: Option<&Value>) -> String {
    match c {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(p)) => p
            .iter()
            .filter_map(|p| str_of(p, "text"))
            .collect::<Vec<_>>()
            .join("\n\n"),
        _ => String::new(),
    }
}

/// Content parts as normalised blocks (the part types of Chat Completions and of Responses).
pub(super) fn parts(c: Option<&Value>) -> Vec<Value> {
    match c {
        Some(Value::String(s)) => vec![json!({"type": "text", "text": s})],
        Some(Value::Array(p)) => p
            .iter()
            .map(|p| match str_of(p, "type").unwrap_or("") {
                "text" | "input_text" | "output_text" => {
                    json!({"type": "text", "text": str_or_null(p, "text")})
                }
                "image_url" | "input_image" => json!({"type": "image"}),
                "input_file" => json!({"type": "file"}),
                "input_audio" => json!({"type": "audio"}),
                "refusal" => json!({"type": "refusal", "text": str_or_null(p, "refusal")}),
                other => json!({ "type": other }),
            })
            .collect(),
        _ => Vec::new(),
    }
}

// === Response ===

/// One choice as it is assembled.
#[derive(Default)]
struct Choice {
    content: String,
    reasoning: String,
    /// By the call's index: (id, name, arguments).
    calls: BTreeMap<u64, (Option<String>, Option<String>, String)>,
    finish: Option<String>,
}

impl Choice {
    /// Adds a message (buffered) or a delta (streamed): both carry the same members.
    fn add(&mut self, m: &Value) {
        if let Some(c) = m.get("content") {
            match c {
                Value::String(s) => self.content.push_str(s),
                Value::Array(_) => self.content.push_str(&text_of(Some(c))),
                _ => {}
            }
        }
        if let Some(r) = str_of(m, "reasoning_content").or_else(|| str_of(m, "reasoning")) {
            self.reasoning.push_str(r);
        }
        for (pos, c) in arr(m, "tool_calls").iter().enumerate() {
            let index = u64_of(c, "index").unwrap_or(pos as u64);
            let slot = self.calls.entry(index).or_default();
            if let Some(id) = str_of(c, "id") {
                slot.0 = Some(id.to_string());
            }
            let f = c.get("function").unwrap_or(&Value::Null);
            if let Some(name) = str_of(f, "name") {
                slot.1.get_or_insert_with(String::new).push_str(name);
            }
            if let Some(a) = str_of(f, "arguments") {
                slot.2.push_str(a);
            }
        }
    }
}

/// The reply of assembled choices.
fn finish(mut r: Reply, choices: BTreeMap<u64, Choice>) -> Reply {
    r.choices = (choices.len() as u64).max(1);
    for (index, c) in choices {
        if !c.reasoning.is_empty() {
            r.thinking.push(Thinking {
                text: c.reasoning,
                signature: None,
            });
        }
        r.push_text(index, &c.content);
        for (_, (id, name, args)) in c.calls {
            r.tool_calls
                .push(ToolCall::from_text(index, id, name, &args));
        }
        if r.stop_reason.is_none() {
            r.stop_reason = c.finish;
        }
    }
    r
}

fn head(r: &mut Reply, v: &Value) {
    if let Some(id) = str_of(v, "id") {
        r.id = Some(id.to_string());
    }
    if let Some(m) = str_of(v, "model") {
        r.model = Some(m.to_string());
    }
    if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
        let details = |k: &str, n: &str| u.get(k).and_then(|d| u64_of(d, n));
        r.usage = Some(Usage {
            input_tokens: u64_of(u, "prompt_tokens"),
            output_tokens: u64_of(u, "completion_tokens"),
            cache_read: details("prompt_tokens_details", "cached_tokens"),
            reasoning_tokens: details("completion_tokens_details", "reasoning_tokens"),
            ..Usage::default()
        });
    }
    if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
        r.error = Some(error_of(e));
    }
}

fn choice_index(c: &Value, pos: usize) -> u64 {
    u64_of(c, "index").unwrap_or(pos as u64)
}

/// A buffered answer.
pub(super) fn response(v: &Value) -> Reply {
    let mut r = Reply::new("openai", "chat.completions");
    head(&mut r, v);
    let mut choices: BTreeMap<u64, Choice> = BTreeMap::new();
    for (pos, c) in arr(v, "choices").iter().enumerate() {
        let choice = choices.entry(choice_index(c, pos)).or_default();
        if let Some(m) = c.get("message") {
            choice.add(m);
        }
        choice.finish = str_of(c, "finish_reason").map(str::to_string);
    }
    finish(r, choices)
}

/// A streamed answer.
pub(super) fn stream(body: &[u8], errs: &mut Errs) -> Reply {
    let mut r = Reply::new("openai", "chat.completions");
    let mut choices: BTreeMap<u64, Choice> = BTreeMap::new();
    let mut done = false;
    for ev in sse::events(body, errs) {
        if ev.data.trim() == "[DONE]" {
            done = true;
            continue;
        }
        let Some(d) = ev.json(errs) else { continue };
        head(&mut r, &d);
        for (pos, c) in arr(&d, "choices").iter().enumerate() {
            let choice = choices.entry(choice_index(c, pos)).or_default();
            if let Some(delta) = c.get("delta") {
                choice.add(delta);
            }
            if let Some(f) = str_of(c, "finish_reason") {
                choice.finish = Some(f.to_string());
            }
        }
    }
    if !done && r.error.is_none() {
        errs.add(
            format!("end (byte {})", body.len()),
            "the stream ends before [DONE]",
        );
    }
    finish(r, choices)
}
