//! Mock Gemini API: `POST /v1beta/models/{model}:generateContent` and
//! `:streamGenerateContent` (`?alt=sse` for SSE, otherwise a streamed JSON array).
use bytes::Bytes;
use hyper::StatusCode;
use serde_json::{json, Value};

use super::body::{Chunks, Plan};
use super::server::{error_plan, Ctx, Kind};
use super::sse;

pub(crate) fn handle(ctx: &Ctx) -> Plan {
    let bad = |code, msg: &str| error_plan(Kind::Gemini, code, msg);
    let rest = ctx
        .path
        .strip_prefix("/v1beta/models/")
        .or_else(|| ctx.path.strip_prefix("/v1/models/"))
        .unwrap_or("");
    let Some((model, method)) = rest.split_once(':') else {
        return bad(StatusCode::NOT_FOUND, &format!("no route {}", ctx.path));
    };
    let streaming = match method {
        "generateContent" => false,
        "streamGenerateContent" => true,
        _ => return bad(StatusCode::NOT_FOUND, &format!("unknown method {method}")),
    };
    let key = ctx
        .header("x-goog-api-key")
        .or_else(|| ctx.query_param("key"))
        .is_some_and(|k| !k.is_empty());
    if !key {
        return bad(
            StatusCode::FORBIDDEN,
            "Method doesn't allow unregistered callers (callers without established identity). \
             Please use API Key or other form of API consumer identity to call this API.",
        );
    }
    let req = match ctx.json() {
        Ok(v) => v,
        Err(e) => return bad(StatusCode::BAD_REQUEST, &e),
    };
    if !req["contents"].is_array() {
        return bad(
            StatusCode::BAD_REQUEST,
            "* contents: contents is not specified",
        );
    }
    let after_tool = req["contents"]
        .as_array()
        .and_then(|c| c.last())
        .and_then(|c| c["parts"].as_array())
        .is_some_and(|parts| parts.iter().any(|p| p.get("functionResponse").is_some()));
    let reply = match ctx.reply(after_tool) {
        Ok(r) => r,
        Err(e) => return bad(StatusCode::BAD_REQUEST, &e),
    };
    let model = reply.model.clone().unwrap_or_else(|| model.to_string());
    let prompt = reply.input_tokens(ctx.body.len());
    let candidates = reply.output_tokens();
    let thoughts = reply.thinking.as_deref().map_or(0, |t| t.len() as u64 / 4);
    let usage = json!({
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates + thoughts,
        "thoughtsTokenCount": thoughts,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    });
    let finish = if reply.stop_reason() == "max_tokens" {
        "MAX_TOKENS"
    } else {
        "STOP"
    };
    let response_id = ctx.token();
    let function_call = |i: usize| {
        let call = &reply.tool_calls[i];
        let mut fc = json!({"name": call.name, "args": call.input});
        if let Some(id) = &call.id {
            fc["id"] = json!(id);
        }
        json!({"functionCall": fc})
    };
    let chunk = |parts: Vec<Value>, last: bool| {
        let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
        if last {
            candidate["finishReason"] = json!(finish);
        }
        json!({"candidates": [candidate], "usageMetadata": usage,
               "modelVersion": model, "responseId": response_id})
    };

    if !streaming {
        let mut parts = Vec::new();
        if let Some(t) = &reply.thinking {
            parts.push(json!({"text": t, "thought": true}));
        }
        parts.extend(reply.texts.iter().map(|t| json!({"text": t})));
        parts.extend((0..reply.tool_calls.len()).map(function_call));
        return Plan::json(StatusCode::OK, &chunk(parts, true));
    }

    // One part (a piece of thought or text, or a whole function call) per chunk.
    let n = reply.delta_chars() * 3;
    let mut parts: Vec<Value> = Vec::new();
    if let Some(t) = &reply.thinking {
        parts.extend(
            sse::pieces(t, n)
                .into_iter()
                .map(|p| json!({"text": p, "thought": true})),
        );
    }
    for t in &reply.texts {
        parts.extend(sse::pieces(t, n).into_iter().map(|p| json!({"text": p})));
    }
    parts.extend((0..reply.tool_calls.len()).map(function_call));
    if parts.is_empty() {
        parts.push(json!({"text": ""}));
    }
    let count = parts.len();
    let chunks: Vec<Value> = parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| chunk(vec![p], i + 1 == count))
        .collect();
    if ctx.query_param("alt") == Some("sse") {
        return Plan::sse(
            chunks.iter().map(sse::data_crlf).collect(),
            ctx.event_delay(),
        );
    }
    // Without alt=sse: one JSON array, streamed element by element.
    let mut pieces: Vec<Bytes> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| Bytes::from(format!("{}{c}", if i == 0 { "[" } else { ",\r\n" })))
        .collect();
    pieces.push(Bytes::from_static(b"]"));
    Plan {
        chunks: Chunks::list(pieces),
        ..Plan::sse(Vec::new(), ctx.event_delay())
    }
    .content_type("application/json; charset=UTF-8")
}
