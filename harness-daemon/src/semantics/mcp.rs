//! MCP over Streamable HTTP: a POST whose body is JSON-RPC 2.0 (one message or a batch, on any
//! path), answered as `application/json` or as a `text/event-stream` of JSON-RPC messages; and a
//! GET that opens such a stream for the server's own messages.
//!
//! ```text
//! mcp_request:  {session, messages: [{id, method, name?, arguments?, kind}]}
//!               kind: "request" | "notification" | "response" (the client answering a
//!               server's request; then result?/error? instead of name/arguments)
//! mcp_response: {session, messages: [{id, result?, error?: {code, message}, method?,
//!                                     for_method?}]}
//! ```
//! `result` is `{content, structuredContent, isError}` for a `tools/call`, `{tools: [names]}`
//! for a `tools/list`, and the result as sent otherwise. `method` is set for the server's own
//! notifications and requests in a stream; `for_method` is the method of the request in this
//! exchange with the same id. `session` is the `mcp-session-id` header of the request, else of
//! the response (the one `initialize` gets).
use std::collections::HashMap;

use serde_json::{json, Value};

use super::json::str_of;
use super::{encoded, header, is_sse, sse, Errs, ExchangeView, Notes};

const BY: &str = "semantics/mcp";

/// Is this value one JSON-RPC 2.0 message, or a batch of them?
fn is_jsonrpc(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.first().is_some_and(|m| m["jsonrpc"] == "2.0"),
        m => m["jsonrpc"] == "2.0",
    }
}

/// The `tools/call` requests of a JSON-RPC body (one message or a batch) as (id, tool name,
/// arguments); `None` when no message of it has a `jsonrpc` or `method` member. Every message
/// is looked at, whatever the first one is: a batch must not hide a call behind a malformed
/// head. A call without a string name gets the name `""`.
pub fn tool_calls(v: &Value) -> Option<Vec<(Option<Value>, String, Value)>> {
    let rpc = messages(v)
        .iter()
        .any(|m| m.get("jsonrpc").is_some() || m.get("method").is_some());
    if !rpc {
        return None;
    }
    Some(
        messages(v)
            .iter()
            .filter(|m| m["method"] == "tools/call")
            .map(|m| {
                let params = &m["params"];
                (
                    m.get("id").cloned(),
                    params["name"].as_str().unwrap_or("").to_owned(),
                    params.get("arguments").cloned().unwrap_or(Value::Null),
                )
            })
            .collect(),
    )
}

fn messages(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) => a,
        m => std::slice::from_ref(m),
    }
}

/// The MCP annotations of an exchange, if it is one.
pub(super) fn annotate(x: &ExchangeView, notes: &mut Notes) {
    let session = header(x.request_headers, "mcp-session-id")
        .or_else(|| header(x.response_headers, "mcp-session-id"));
    let mut ids: HashMap<String, String> = HashMap::new();
    // Request ids in the order sent, to tell which got no answer.
    let mut asked: Vec<(String, Value)> = Vec::new();
    let mut is_mcp = false;
    if x.method.eq_ignore_ascii_case("POST") && encoded(x.request_headers).is_none() {
        let body = x.request_body;
        let start = body.iter().position(|b| !b.is_ascii_whitespace());
        if start.is_some_and(|s| body[s] == b'{' || body[s] == b'[') {
            let mut errs = Errs::new("mcp request", x.request_truncated);
            let parsed = match serde_json::from_slice::<Value>(body) {
                Ok(v) => Some(v),
                // A cut body is still MCP when what it holds is.
                Err(_) => super::json::complete_prefix(body)
                    .filter(is_jsonrpc)
                    .inspect(|_| {
                        errs.json(body);
                    }),
            };
            if let Some(v) = parsed.filter(is_jsonrpc) {
                is_mcp = true;
                let list: Vec<Value> = messages(&v)
                    .iter()
                    .map(|m| {
                        if let (Some(id), Some(method)) = (id_key(m), str_of(m, "method")) {
                            ids.insert(id.clone(), method.to_string());
                            asked.push((id, m["id"].clone()));
                        }
                        request_message(m)
                    })
                    .collect();
                notes.push(
                    BY,
                    "mcp_request",
                    json!({"session": session, "messages": list}),
                );
                notes.take(BY, errs);
            }
        }
    }

    let body = x.response_body;
    if body.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    // A coding `decode` does not know: `semantics/http` said so.
    if encoded(x.response_headers).is_some() {
        return;
    }
    let mut errs = Errs::new("mcp response", x.response_truncated);
    let mut list = Vec::new();
    if is_sse(x.response_headers) || (is_mcp && sse::looks_like(body)) {
        let events = sse::events(body, &mut errs);
        // Only a stream of JSON-RPC is MCP; other event streams are someone else's.
        let rpc = events
            .iter()
            .any(|e| serde_json::from_str::<Value>(&e.data).is_ok_and(|v| is_jsonrpc(&v)));
        if !is_mcp && !rpc {
            return;
        }
        for ev in events {
            if ev.data.trim().is_empty() {
                continue;
            }
            if let Some(v) = ev.json(&mut errs) {
                list.extend(messages(&v).iter().map(|m| response_message(m, &ids)));
            }
        }
    } else {
        if !is_mcp {
            return;
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(v) if is_jsonrpc(&v) => {
                list.extend(messages(&v).iter().map(|m| response_message(m, &ids)))
            }
            // Not JSON-RPC (an HTTP error page, say): the `http` annotation tells the status.
            Ok(_) => return,
            Err(_) => {
                if let Some(v) = errs.json(body).filter(is_jsonrpc) {
                    list.extend(messages(&v).iter().map(|m| response_message(m, &ids)))
                }
            }
        }
    }
    // A stream that ends before answering every request was cut (or the server broke off).
    for (key, id) in &asked {
        let answered = list
            .iter()
            .any(|m| m.get("method").is_none() && id_key(m).as_ref() == Some(key));
        if !answered && (200..300).contains(&x.status) {
            errs.add(
                format!("end (byte {})", body.len()),
                format!("no response to request id {id}"),
            );
        }
    }
    notes.push(
        BY,
        "mcp_response",
        json!({"session": session, "messages": list}),
    );
    notes.take(BY, errs);
}

/// A JSON-RPC id as a map key (ids are strings or numbers).
fn id_key(m: &Value) -> Option<String> {
    match m.get("id") {
        Some(Value::Null) | None => None,
        Some(id) => Some(id.to_string()),
    }
}

fn request_message(m: &Value) -> Value {
    let id = m.get("id").cloned().unwrap_or(Value::Null);
    let Some(method) = str_of(m, "method") else {
        let mut out = json!({"id": id, "method": null, "kind": "response"});
        answer(&mut out, m, None);
        return out;
    };
    let kind = if id.is_null() {
        "notification"
    } else {
        "request"
    };
    let mut out = json!({"id": id, "method": method, "kind": kind});
    let params = m.get("params").unwrap_or(&Value::Null);
    if matches!(method, "tools/call" | "prompts/get") {
        out["name"] = params.get("name").cloned().unwrap_or(Value::Null);
        out["arguments"] = params.get("arguments").cloned().unwrap_or(json!({}));
    }
    out
}

fn response_message(m: &Value, ids: &HashMap<String, String>) -> Value {
    let id = m.get("id").cloned().unwrap_or(Value::Null);
    let mut out = json!({ "id": id });
    if let Some(method) = str_of(m, "method") {
        // The server's own notification or request.
        out["method"] = json!(method);
        return out;
    }
    let asked = id_key(m).and_then(|k| ids.get(&k)).map(String::as_str);
    if let Some(method) = asked {
        out["for_method"] = json!(method);
    }
    answer(&mut out, m, asked);
    out
}

/// `result` or `error` of a response message.
fn answer(out: &mut Value, m: &Value, method: Option<&str>) {
    if let Some(e) = m.get("error") {
        out["error"] = json!({"code": e.get("code"), "message": e.get("message")});
    }
    let Some(r) = m.get("result") else { return };
    let tool_result = method == Some("tools/call")
        || (method.is_none() && (r.get("content").is_some() || r.get("isError").is_some()));
    out["result"] = if tool_result {
        json!({
            "content": r.get("content").cloned().unwrap_or(Value::Null),
            "structuredContent": r.get("structuredContent").cloned().unwrap_or(Value::Null),
            "isError": r.get("isError").and_then(Value::as_bool).unwrap_or(false),
        })
    } else if method == Some("tools/list") {
        let names: Vec<&Value> = r
            .get("tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| t.get("name"))
            .collect();
        json!({ "tools": names })
    } else {
        r.clone()
    };
}
