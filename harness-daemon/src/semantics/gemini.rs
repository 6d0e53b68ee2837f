//! Gemini (`…/models/{model}:generateContent` and `:streamGenerateContent`, with `alt=sse` or
//! as one streamed JSON array): the request (`contents`/`parts`, `systemInstruction`, tools),
//! and the answer. A stream cuts parts anywhere, so in both forms a run of consecutive text
//! parts (or of `thought: true` parts) is one text (or one thinking) entry; function calls
//! stand alone. Both spellings the REST API accepts (`functionCall`, `function_call`) are read.
use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::json::{arr, error_offset, str_of, u64_of};
use super::reply::{error_of, Reply, Thinking, ToolCall, Usage};
use super::{sse, Errs};

/// `v[camel]`, or `v[snake]`.
fn get<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel).or_else(|| v.get(snake))
}

// === Request ===

/// The `llm_request` annotation of a Gemini request body; the model comes from the path.
pub(super) fn request(v: &Value, path: &str, stream: bool) -> Value {
    let last = path.rsplit('/').next().unwrap_or("");
    let model = last.split(':').next().filter(|m| !m.is_empty());
    let messages: Vec<Value> = arr(v, "contents")
        .iter()
        .map(|c| {
            let role = match str_of(c, "role") {
                Some("model") => "assistant",
                Some(r) => r,
                None => "user",
            };
            let parts: Vec<Value> = arr(c, "parts").iter().map(part).collect();
            json!({"role": role, "content": parts})
        })
        .collect();
    let system = get(v, "systemInstruction", "system_instruction").map(|s| match s {
        Value::String(s) => s.clone(),
        s => arr(s, "parts")
            .iter()
            .filter_map(|p| str_of(p, "text"))
            .collect::<Vec<_>>()
            .join("\n\n"),
    });
    let mut tools: Vec<Value> = Vec::new();
    for t in arr(v, "tools") {
        let Some(t) = t.as_object() else { continue };
        for (k, x) in t {
            if k == "functionDeclarations" || k == "function_declarations" {
                let names = x.as_array().into_iter().flatten();
                tools.extend(names.filter_map(|f| str_of(f, "name")).map(|n| json!(n)));
            } else {
                tools.push(json!(k));
            }
        }
    }
    json!({
        "provider": "gemini",
        "api": "generateContent",
        "model": model,
        "stream": stream,
        "system": system,
        "messages": messages,
        "tools": tools,
    })
}

fn part(p: &Value) -> Value {
    if let Some(text) = str_of(p, "text") {
        if p.get("thought").and_then(Value::as_bool) == Some(true) {
            let sig = get(p, "thoughtSignature", "thought_signature");
            return json!({"type": "thinking", "text": text, "signature": sig});
        }
        return json!({"type": "text", "text": text});
    }
    if let Some(f) = get(p, "functionCall", "function_call") {
        return json!({"type": "tool_use", "id": f.get("id"), "name": f.get("name"),
                      "input": f.get("args").cloned().unwrap_or(json!({}))});
    }
    if let Some(f) = get(p, "functionResponse", "function_response") {
        return json!({"type": "tool_result", "tool_use_id": f.get("id"), "name": f.get("name"),
                      "content": f.get("response"), "is_error": false});
    }
    if let Some(d) = get(p, "inlineData", "inline_data").or_else(|| get(p, "fileData", "file_data"))
    {
        let mime = get(d, "mimeType", "mime_type")
            .and_then(Value::as_str)
            .unwrap_or("");
        return if mime.starts_with("image/") {
            json!({"type": "image"})
        } else {
            json!({"type": "file", "mime_type": mime})
        };
    }
    let kind = p
        .as_object()
        .and_then(|o| {
            o.keys()
                .find(|k| *k != "thoughtSignature" && *k != "thought_signature")
        })
        .map_or("unknown", String::as_str);
    json!({ "type": kind })
}

// === Response ===

/// One merged piece of a candidate's content.
enum Piece {
    Thought(String, Option<String>),
    Text(String),
    Call(Option<String>, Option<String>, Value),
}

#[derive(Default)]
struct Candidate {
    pieces: Vec<Piece>,
    finish: Option<String>,
}

impl Candidate {
    fn add(&mut self, p: &Value) {
        let sig = get(p, "thoughtSignature", "thought_signature")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(f) = get(p, "functionCall", "function_call") {
            self.pieces.push(Piece::Call(
                str_of(f, "id").map(str::to_string),
                str_of(f, "name").map(str::to_string),
                f.get("args").cloned().unwrap_or(json!({})),
            ));
        } else if let Some(text) = str_of(p, "text") {
            let thought = p.get("thought").and_then(Value::as_bool) == Some(true);
            match (self.pieces.last_mut(), thought) {
                (Some(Piece::Thought(t, s)), true) => {
                    t.push_str(text);
                    if sig.is_some() {
                        *s = sig.clone();
                    }
                }
                (_, true) => self.pieces.push(Piece::Thought(text.into(), sig.clone())),
                (Some(Piece::Text(t)), false) => t.push_str(text),
                (_, false) if !text.is_empty() => self.pieces.push(Piece::Text(text.into())),
                _ => {}
            }
            if thought {
                return;
            }
        }
        // A signature on a part other than a thought belongs to the thinking before it.
        if let Some(sig) = sig {
            let last = self.pieces.iter_mut().rev().find_map(|p| match p {
                Piece::Thought(_, s) => Some(s),
                _ => None,
            });
            if let Some(s) = last.filter(|s| s.is_none()) {
                *s = Some(sig);
            }
        }
    }
}

/// Chunks (or one buffered answer) merged into one reply.
#[derive(Default)]
struct Merge {
    reply: Option<Reply>,
    candidates: BTreeMap<u64, Candidate>,
    finished: bool,
}

impl Merge {
    fn add(&mut self, v: &Value) {
        let r = self
            .reply
            .get_or_insert_with(|| Reply::new("gemini", "generateContent"));
        if let Some(id) = str_of(v, "responseId").or_else(|| str_of(v, "response_id")) {
            r.id = Some(id.to_string());
        }
        if let Some(m) = str_of(v, "modelVersion").or_else(|| str_of(v, "model_version")) {
            r.model = Some(m.to_string());
        }
        if let Some(u) = get(v, "usageMetadata", "usage_metadata").filter(|u| u.is_object()) {
            let n = |camel, snake| u64_of(u, camel).or_else(|| u64_of(u, snake));
            r.usage = Some(Usage {
                input_tokens: n("promptTokenCount", "prompt_token_count"),
                output_tokens: n("candidatesTokenCount", "candidates_token_count"),
                cache_read: n("cachedContentTokenCount", "cached_content_token_count"),
                reasoning_tokens: n("thoughtsTokenCount", "thoughts_token_count"),
                tool_prompt_tokens: n("toolUsePromptTokenCount", "tool_use_prompt_token_count"),
                ..Usage::default()
            });
        }
        if let Some(e) = v.get("error") {
            r.error = Some(error_of(e));
            self.finished = true;
        }
        if let Some(b) = get(v, "promptFeedback", "prompt_feedback")
            .and_then(|f| get(f, "blockReason", "block_reason"))
            .and_then(Value::as_str)
        {
            r.stop_reason = Some(b.to_string());
            self.finished = true;
        }
        for (pos, c) in arr(v, "candidates").iter().enumerate() {
            let cand = self
                .candidates
                .entry(u64_of(c, "index").unwrap_or(pos as u64))
                .or_default();
            for p in c.get("content").map_or(&[][..], |c| arr(c, "parts")) {
                cand.add(p);
            }
            if let Some(f) = get(c, "finishReason", "finish_reason").and_then(Value::as_str) {
                cand.finish = Some(f.to_string());
                self.finished = true;
            }
        }
    }

    fn finish(self) -> Reply {
        let mut r = self
            .reply
            .unwrap_or_else(|| Reply::new("gemini", "generateContent"));
        r.choices = (self.candidates.len() as u64).max(1);
        for (i, c) in self.candidates {
            for p in c.pieces {
                match p {
                    Piece::Thought(text, signature) => {
                        r.thinking.push(Thinking { text, signature })
                    }
                    Piece::Text(t) => r.push_text(i, &t),
                    Piece::Call(id, name, input) => r.tool_calls.push(ToolCall {
                        choice: i,
                        id,
                        name,
                        input,
                        input_error: None,
                    }),
                }
            }
            if r.stop_reason.is_none() {
                r.stop_reason = c.finish;
            }
        }
        r
    }
}

/// A buffered answer.
pub(super) fn response(v: &Value) -> Reply {
    let mut m = Merge::default();
    m.add(v);
    m.finish()
}

fn unfinished(m: &Merge, body: &[u8], errs: &mut Errs) {
    if !m.finished {
        errs.add(
            format!("end (byte {})", body.len()),
            "the stream ends before a finishReason",
        );
    }
}

/// A stream with `alt=sse`: one response chunk per event.
pub(super) fn sse_stream(body: &[u8], errs: &mut Errs) -> Reply {
    let mut m = Merge::default();
    for ev in sse::events(body, errs) {
        if let Some(d) = ev.json(errs) {
            m.add(&d);
        }
    }
    unfinished(&m, body, errs);
    m.finish()
}

/// A stream without `alt=sse`: one JSON array whose elements are response chunks, read element
/// by element so that a cut array still gives its complete elements.
pub(super) fn array_stream(body: &[u8], errs: &mut Errs) -> Reply {
    // Halves of a surrogate pair in two elements (offsets then count the stand-ins' bytes).
    let fixed = std::str::from_utf8(body)
        .ok()
        .and_then(super::json::stand_in_surrogates);
    let body = fixed.as_deref().map_or(body, str::as_bytes);
    let mut m = Merge::default();
    let skip = |mut i: usize| {
        while i < body.len() && body[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut i = skip(0);
    if body.get(i) != Some(&b'[') {
        // Not an array: perhaps one object (an error, or an answer not streamed after all).
        if let Some(v) = errs.json(body) {
            m.add(&v);
        }
        unfinished(&m, body, errs);
        return m.finish();
    }
    i = skip(i + 1);
    let mut element = 0;
    let mut closed = false;
    while i < body.len() {
        if body[i] == b']' {
            closed = true;
            break;
        }
        let mut it = serde_json::Deserializer::from_slice(&body[i..]).into_iter::<Value>();
        match it.next() {
            Some(Ok(v)) => {
                m.add(&v);
                i = skip(i + it.byte_offset());
            }
            Some(Err(e)) => {
                let at = i + error_offset(&body[i..], &e);
                errs.add(format!("element {element} (byte {at})"), e.to_string());
                break;
            }
            None => break,
        }
        element += 1;
        match body.get(i) {
            Some(b',') => i = skip(i + 1),
            Some(b']') => {
                closed = true;
                break;
            }
            Some(_) => {
                errs.add(format!("byte {i}"), "expected , or ] after an element");
                break;
            }
            None => {}
        }
    }
    if !closed {
        errs.add(
            format!("end (byte {})", body.len()),
            "the array ends before its closing ]",
        );
    }
    unfinished(&m, body, errs);
    m.finish()
}
