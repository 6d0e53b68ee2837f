//! Anthropic Messages (`POST …/v1/messages`): the request, and the answer buffered or streamed
//! (`message_start`, `content_block_start/delta/stop`, `message_delta`, `message_stop`).
//! Stream blocks are assembled into the buffered blocks' form and read by the same code, so
//! both forms give the same `llm_response`.
use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::json::{arr, str_of, str_or_null, u64_of};
use super::reply::{error_of, Reply, Thinking, ToolCall, Usage};
use super::{sse, Errs};

// === Request ===

/// The `llm_request` annotation of a Messages request body.
pub(super) fn request(v: &Value) -> Value {
    let messages: Vec<Value> = arr(v, "messages")
        .iter()
        .map(|m| json!({"role": str_or_null(m, "role"), "content": content(m.get("content"))}))
        .collect();
    let tools: Vec<Value> = arr(v, "tools")
        .iter()
        .filter_map(|t| str_of(t, "name").or_else(|| str_of(t, "type")))
        .map(|n| json!(n))
        .collect();
    json!({
        "provider": "anthropic",
        "api": "messages",
        "model": str_or_null(v, "model"),
        "stream": v.get("stream").and_then(Value::as_bool).unwrap_or(false),
        "system": system(v.get("system")),
        "messages": messages,
        "tools": tools,
    })
}

/// `system`: a string, or text blocks joined by blank lines.
fn system(s: Option<&Value>) -> Value {
    match s {
        Some(Value::String(s)) => json!(s),
        Some(Value::Array(blocks)) => {
            let texts: Vec<&str> = blocks.iter().filter_map(|b| str_of(b, "text")).collect();
            json!(texts.join("\n\n"))
        }
        _ => Value::Null,
    }
}

/// A message's content as normalised blocks.
fn content(c: Option<&Value>) -> Value {
    match c {
        Some(Value::String(s)) => json!([{"type": "text", "text": s}]),
        Some(Value::Array(blocks)) => blocks.iter().map(block).collect(),
        _ => json!([]),
    }
}

fn block(b: &Value) -> Value {
    let kind = str_of(b, "type").unwrap_or("");
    match kind {
        "text" => json!({"type": "text", "text": str_or_null(b, "text")}),
        "tool_use" | "server_tool_use" => json!({
            "type": "tool_use", "id": str_or_null(b, "id"), "name": str_or_null(b, "name"),
            "input": b.get("input").cloned().unwrap_or(Value::Null),
        }),
        "tool_result" => json!({
            "type": "tool_result",
            "tool_use_id": str_or_null(b, "tool_use_id"),
            "content": b.get("content").cloned().unwrap_or(Value::Null),
            "is_error": b.get("is_error").and_then(Value::as_bool).unwrap_or(false),
        }),
        "thinking" => json!({
            "type": "thinking", "text": str_or_null(b, "thinking"),
            "signature": str_or_null(b, "signature"),
        }),
        _ => json!({ "type": kind }),
    }
}

// === Response ===

/// One content block of the answer.
enum Block {
    Text(String),
    Thinking {
        text: String,
        signature: String,
    },
    Redacted,
    ToolUse {
        id: Option<String>,
        name: Option<String>,
        input: Input,
    },
    Other,
}

/// A tool call's input: parsed (buffered) or the JSON text the stream sent.
enum Input {
    Value(Value),
    Text { initial: Value, text: String },
}

impl Block {
    /// A block as a buffered answer (or a `content_block_start`) gives it.
    fn of(b: &Value, streamed: bool) -> Block {
        let s = |k| str_of(b, k).unwrap_or("").to_string();
        match str_of(b, "type").unwrap_or("") {
            "text" => Block::Text(s("text")),
            "thinking" => Block::Thinking {
                text: s("thinking"),
                signature: s("signature"),
            },
            "redacted_thinking" => Block::Redacted,
            "tool_use" | "server_tool_use" => {
                let input = b.get("input").cloned().unwrap_or(Value::Null);
                Block::ToolUse {
                    id: str_of(b, "id").map(str::to_string),
                    name: str_of(b, "name").map(str::to_string),
                    input: if streamed {
                        Input::Text {
                            initial: input,
                            text: String::new(),
                        }
                    } else {
                        Input::Value(input)
                    },
                }
            }
            _ => Block::Other,
        }
    }

    fn add_to(self, r: &mut Reply) {
        match self {
            Block::Text(t) => r.push_text(0, &t),
            Block::Thinking { text, signature } => r.thinking.push(Thinking {
                text,
                signature: (!signature.is_empty()).then_some(signature),
            }),
            Block::Redacted => r.redacted_thinking += 1,
            Block::ToolUse { id, name, input } => r.tool_calls.push(match input {
                Input::Value(input) => ToolCall {
                    choice: 0,
                    id,
                    name,
                    input,
                    input_error: None,
                },
                Input::Text { initial, text } if text.trim().is_empty() => ToolCall {
                    choice: 0,
                    id,
                    name,
                    input: initial,
                    input_error: None,
                },
                Input::Text { text, .. } => ToolCall::from_text(0, id, name, &text),
            }),
            Block::Other => {}
        }
    }
}

fn new_reply() -> Reply {
    Reply::new("anthropic", "messages")
}

/// Message-level members (id, model, stop reason, usage) of a message object.
fn message_head(r: &mut Reply, m: &Value) {
    if let Some(id) = str_of(m, "id") {
        r.id = Some(id.to_string());
    }
    if let Some(model) = str_of(m, "model") {
        r.model = Some(model.to_string());
    }
    if let Some(s) = str_of(m, "stop_reason") {
        r.stop_reason = Some(s.to_string());
    }
    if let Some(u) = m.get("usage") {
        usage(r, u);
    }
}

/// Merges a usage object: a stream's `message_delta` usage (cumulative counts) updates
/// `message_start`'s, member by member.
fn usage(r: &mut Reply, u: &Value) {
    if !u.is_object() {
        return;
    }
    let to = r.usage.get_or_insert_with(Usage::default);
    let set = |slot: &mut Option<u64>, key| {
        if let Some(n) = u64_of(u, key) {
            *slot = Some(n);
        }
    };
    set(&mut to.input_tokens, "input_tokens");
    set(&mut to.output_tokens, "output_tokens");
    set(&mut to.cache_read, "cache_read_input_tokens");
    set(&mut to.cache_write, "cache_creation_input_tokens");
    // The split of the cache writes by lifetime (billed differently).
    if let Some(split) = u.get("cache_creation").filter(|c| c.is_object()) {
        if let Some(n) = u64_of(split, "ephemeral_5m_input_tokens") {
            to.cache_write_5m = Some(n);
        }
        if let Some(n) = u64_of(split, "ephemeral_1h_input_tokens") {
            to.cache_write_1h = Some(n);
        }
    }
}

/// A buffered answer.
pub(super) fn response(v: &Value) -> Reply {
    let mut r = new_reply();
    message_head(&mut r, v);
    for b in arr(v, "content") {
        Block::of(b, false).add_to(&mut r);
    }
    r
}

/// A streamed answer.
pub(super) fn stream(body: &[u8], errs: &mut Errs) -> Reply {
    let mut r = new_reply();
    let mut blocks: BTreeMap<u64, Block> = BTreeMap::new();
    let mut stopped = false;
    let mut started = false;
    for ev in sse::events(body, errs) {
        let Some(d) = ev.json(errs) else { continue };
        let kind = str_of(&d, "type").unwrap_or(&ev.name);
        let index = u64_of(&d, "index");
        match kind {
            "message_start" => {
                started = true;
                if let Some(m) = d.get("message") {
                    message_head(&mut r, m);
                }
            }
            "content_block_start" => match (index, d.get("content_block")) {
                (Some(i), Some(b)) => {
                    blocks.insert(i, Block::of(b, true));
                }
                _ => errs.add(
                    ev.at(),
                    "content_block_start without index or content_block",
                ),
            },
            "content_block_delta" => {
                let block = index.and_then(|i| blocks.get_mut(&i));
                let (Some(block), Some(delta)) = (block, d.get("delta")) else {
                    errs.add(
                        ev.at(),
                        "content_block_delta for a block that never started",
                    );
                    continue;
                };
                let piece = |k| str_of(delta, k).unwrap_or("");
                match (block, str_of(delta, "type").unwrap_or("")) {
                    (Block::Text(t), "text_delta") => t.push_str(piece("text")),
                    (Block::Thinking { text, .. }, "thinking_delta") => {
                        text.push_str(piece("thinking"))
                    }
                    (Block::Thinking { signature, .. }, "signature_delta") => {
                        signature.push_str(piece("signature"))
                    }
                    (
                        Block::ToolUse {
                            input: Input::Text { text, .. },
                            ..
                        },
                        "input_json_delta",
                    ) => text.push_str(piece("partial_json")),
                    (Block::Other, _) | (_, "citations_delta") => {}
                    (_, other) => {
                        errs.add(ev.at(), format!("delta {other:?} does not fit its block"))
                    }
                }
            }
            "message_delta" => {
                if let Some(s) = d.get("delta").and_then(|x| str_of(x, "stop_reason")) {
                    r.stop_reason = Some(s.to_string());
                }
                if let Some(u) = d.get("usage") {
                    usage(&mut r, u);
                }
            }
            "message_stop" => stopped = true,
            "error" => {
                r.error = Some(error_of(d.get("error").unwrap_or(&Value::Null)));
                stopped = true;
            }
            _ => {}
        }
    }
    if !started && !stopped {
        errs.add("start", "no message_start event");
    }
    if !stopped {
        errs.add(
            format!("end (byte {})", body.len()),
            "the stream ends before message_stop",
        );
    }
    for b in blocks.into_values() {
        b.add_to(&mut r);
    }
    r
}
