//! Mock Anthropic Messages API: `POST /v1/messages`, buffered JSON or SSE with `stream: true`.
use bytes::Bytes;
use hyper::StatusCode;
use serde_json::{json, Value};

use super::body::Plan;
use super::reply::Reply;
use super::server::{error_plan, Ctx, Kind};
use super::sse;

pub(crate) fn messages(ctx: &Ctx) -> Plan {
    if ctx.header("x-api-key").is_none() && ctx.header("authorization").is_none() {
        return error_plan(
            Kind::Anthropic,
            StatusCode::UNAUTHORIZED,
            "x-api-key header is required",
        );
    }
    let req = match ctx.json() {
        Ok(v) => v,
        Err(e) => return error_plan(Kind::Anthropic, StatusCode::BAD_REQUEST, &e),
    };
    let Some(model) = req.get("model").and_then(Value::as_str) else {
        return error_plan(
            Kind::Anthropic,
            StatusCode::BAD_REQUEST,
            "model: Field required",
        );
    };
    if !req.get("messages").is_some_and(Value::is_array) {
        return error_plan(
            Kind::Anthropic,
            StatusCode::BAD_REQUEST,
            "messages: Field required",
        );
    }
    // The conversation's last turn; Claude Code puts `role: "system"` messages (its
    // environment notes) among the turns, which are not one.
    let after_tool = req["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] != "system"))
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
        .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_result"));
    let reply = match ctx.reply(after_tool) {
        Ok(r) => r,
        Err(e) => return error_plan(Kind::Anthropic, StatusCode::BAD_REQUEST, &e),
    };
    let model = reply.model.clone().unwrap_or_else(|| model.to_string());
    let id = format!("msg_{}", ctx.token());
    let request_id = format!("req_{}", ctx.token());
    let input_tokens = reply.input_tokens(ctx.body.len());
    let plan = if req["stream"].as_bool() == Some(true) {
        Plan::sse(
            stream(&reply, ctx, &id, &model, input_tokens),
            ctx.event_delay(),
        )
    } else {
        Plan::json(
            StatusCode::OK,
            &buffered(&reply, ctx, &id, &model, input_tokens),
        )
    };
    plan.header("request-id", request_id).header(
        "anthropic-organization-id",
        "00000000-0000-4000-8000-000000000000",
    )
}

/// The content blocks of a reply, complete.
fn blocks(reply: &Reply, ctx: &Ctx) -> Vec<Value> {
    let mut blocks = Vec::new();
    if let Some(thinking) = &reply.thinking {
        blocks.push(
            json!({"type": "thinking", "thinking": thinking, "signature": reply.signature()}),
        );
    }
    if let Some(data) = &reply.redacted_thinking {
        blocks.push(json!({"type": "redacted_thinking", "data": data}));
    }
    for text in &reply.texts {
        blocks.push(json!({"type": "text", "text": text}));
    }
    for (i, call) in reply.tool_calls.iter().enumerate() {
        blocks.push(json!({
            "type": "tool_use",
            "id": reply.call_id(i, "toolu_", &ctx.token()),
            "name": call.name,
            "input": call.input,
        }));
    }
    blocks
}

fn buffered(reply: &Reply, ctx: &Ctx, id: &str, model: &str, input_tokens: u64) -> Value {
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks(reply, ctx),
        "stop_reason": reply.stop_reason(),
        "stop_sequence": null,
        "usage": {
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": reply.output_tokens(),
            "service_tier": "standard",
        },
    })
}

fn stream(reply: &Reply, ctx: &Ctx, id: &str, model: &str, input_tokens: u64) -> Vec<Bytes> {
    let n = reply.delta_chars();
    let mut ev = vec![
        sse::named(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": id, "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": 0,
                          "cache_read_input_tokens": 0, "output_tokens": 1,
                          "service_tier": "standard"},
            }}),
        ),
        sse::named("ping", &json!({"type": "ping"})),
    ];
    for (index, block) in blocks(reply, ctx).into_iter().enumerate() {
        let delta = |d: Value| {
            sse::named(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": d}),
            )
        };
        let start = |b: Value| {
            sse::named(
                "content_block_start",
                &json!({"type": "content_block_start", "index": index, "content_block": b}),
            )
        };
        match block["type"].as_str() {
            Some("thinking") => {
                ev.push(start(
                    json!({"type": "thinking", "thinking": "", "signature": ""}),
                ));
                for p in sse::pieces(block["thinking"].as_str().unwrap_or(""), n) {
                    ev.push(delta(json!({"type": "thinking_delta", "thinking": p})));
                }
                ev.push(delta(
                    json!({"type": "signature_delta", "signature": block["signature"]}),
                ));
            }
            Some("text") => {
                ev.push(start(json!({"type": "text", "text": ""})));
                for p in sse::pieces(block["text"].as_str().unwrap_or(""), n) {
                    ev.push(delta(json!({"type": "text_delta", "text": p})));
                }
            }
            Some("tool_use") => {
                ev.push(start(json!({"type": "tool_use", "id": block["id"],
                                     "name": block["name"], "input": {}})));
                ev.push(delta(
                    json!({"type": "input_json_delta", "partial_json": ""}),
                ));
                for p in sse::pieces(&block["input"].to_string(), n) {
                    ev.push(delta(
                        json!({"type": "input_json_delta", "partial_json": p}),
                    ));
                }
            }
            // redacted_thinking arrives whole in its start event.
            _ => ev.push(start(block.clone())),
        }
        ev.push(sse::named(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        ));
        if index == 0 {
            ev.push(sse::named("ping", &json!({"type": "ping"})));
        }
    }
    ev.push(sse::named(
        "message_delta",
        &json!({"type": "message_delta",
                "delta": {"stop_reason": reply.stop_reason(), "stop_sequence": null},
                "usage": {"output_tokens": reply.output_tokens()}}),
    ));
    ev.push(sse::named("message_stop", &json!({"type": "message_stop"})));
    ev
}
