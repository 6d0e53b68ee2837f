//! Mock OpenAI: `POST /v1/chat/completions` and `POST /v1/responses`, JSON or SSE; and
//! `GET /v1/responses` upgraded to WebSocket, the Responses API's WebSocket mode (Codex CLI's
//! default transport): each `response.create` message is answered with the events of the SSE
//! stream, one text message each.
use bytes::Bytes;
use hyper::StatusCode;
use serde_json::{json, Value};

use super::body::Plan;
use super::reply::Reply;
use super::server::{error_plan, Ctx, Kind, Shared};
use super::sse;

/// A fixed creation time keeps answers reproducible.
const CREATED: u64 = 1_750_000_000;

struct Request {
    json: Value,
    model: String,
    reply: Reply,
    stream: bool,
}

fn parse(ctx: &Ctx, after_tool: fn(&Value) -> bool) -> Result<Request, Plan> {
    let bad = |code, msg: &str| error_plan(Kind::OpenAi, code, msg);
    let bearer = ctx
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .is_some_and(|k| !k.trim().is_empty());
    if !bearer && ctx.header("api-key").is_none() {
        return Err(bad(
            StatusCode::UNAUTHORIZED,
            "You didn't provide an API key. You need to provide your API key in an \
             Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        ));
    }
    let json = ctx.json().map_err(|e| bad(StatusCode::BAD_REQUEST, &e))?;
    let model = json["model"]
        .as_str()
        .ok_or_else(|| {
            bad(
                StatusCode::BAD_REQUEST,
                "you must provide a model parameter",
            )
        })?
        .to_string();
    let reply = ctx
        .reply(after_tool(&json))
        .map_err(|e| bad(StatusCode::BAD_REQUEST, &e))?;
    let model = reply.model.clone().unwrap_or(model);
    let stream = json["stream"].as_bool() == Some(true);
    Ok(Request {
        json,
        model,
        reply,
        stream,
    })
}

fn finish_reason(reply: &Reply) -> String {
    match reply.stop_reason().as_str() {
        "end_turn" | "stop_sequence" => "stop".into(),
        "tool_use" => "tool_calls".into(),
        "max_tokens" => "length".into(),
        other => other.into(),
    }
}

// === Chat Completions ===

pub(crate) fn chat(ctx: &Ctx) -> Plan {
    let req = match parse(ctx, |j| {
        j["messages"]
            .as_array()
            .and_then(|m| m.last())
            .is_some_and(|m| m["role"] == "tool")
    }) {
        Ok(r) => r,
        Err(plan) => return plan,
    };
    if !req.json["messages"].is_array() {
        return error_plan(
            Kind::OpenAi,
            StatusCode::BAD_REQUEST,
            "Missing required parameter: 'messages'.",
        );
    }
    let reply = &req.reply;
    let n = req.json["n"].as_u64().unwrap_or(1).clamp(1, 8) as usize;
    let id = format!("chatcmpl-{}", ctx.token());
    let prompt = reply.input_tokens(ctx.body.len());
    let completion = reply.output_tokens() * n as u64;
    let usage = json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    });
    let content = (!reply.texts.is_empty()).then(|| reply.texts.join("\n\n"));
    let calls: Vec<(String, &str, String)> = reply
        .tool_calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (
                reply.call_id(i, "call_", &ctx.token()),
                c.name.as_str(),
                c.input.to_string(),
            )
        })
        .collect();
    let reasoning = reply.thinking.as_ref().filter(|_| reply.chat_reasoning);

    if !req.stream {
        let choices: Vec<Value> = (0..n)
            .map(|index| {
                let mut message = json!({"role": "assistant", "content": content,
                                         "refusal": null, "annotations": []});
                if let Some(r) = reasoning {
                    message["reasoning_content"] = json!(r);
                }
                if !calls.is_empty() {
                    message["tool_calls"] = calls
                        .iter()
                        .map(|(id, name, args)| {
                            json!({"id": id, "type": "function",
                                   "function": {"name": name, "arguments": args}})
                        })
                        .collect();
                }
                json!({"index": index, "message": message, "logprobs": null,
                       "finish_reason": finish_reason(reply)})
            })
            .collect();
        return Plan::json(
            StatusCode::OK,
            &json!({
                "id": id, "object": "chat.completion", "created": CREATED, "model": req.model,
                "choices": choices, "usage": usage, "service_tier": "default",
                "system_fingerprint": "fp_peer",
            }),
        );
    }

    let include_usage = req.json["stream_options"]["include_usage"].as_bool() == Some(true);
    let chunk = |choices: Value| {
        let mut c = json!({"id": id, "object": "chat.completion.chunk", "created": CREATED,
                           "model": req.model, "service_tier": "default",
                           "system_fingerprint": "fp_peer", "choices": choices});
        if include_usage {
            c["usage"] = Value::Null;
        }
        sse::data(&c)
    };
    let delta = |index: usize, d: Value| {
        chunk(json!([{"index": index, "delta": d, "logprobs": null, "finish_reason": null}]))
    };
    let pieces = reply.delta_chars();
    let mut ev: Vec<Bytes> = Vec::new();
    for index in 0..n {
        ev.push(delta(
            index,
            json!({"role": "assistant", "content": "", "refusal": null}),
        ));
        if let Some(r) = reasoning {
            for p in sse::pieces(r, pieces) {
                ev.push(delta(index, json!({"reasoning_content": p})));
            }
        }
        for p in sse::pieces(content.as_deref().unwrap_or(""), pieces) {
            ev.push(delta(index, json!({"content": p})));
        }
        for (i, (call_id, name, args)) in calls.iter().enumerate() {
            ev.push(delta(
                index,
                json!({"tool_calls": [{"index": i, "id": call_id, "type": "function",
                                       "function": {"name": name, "arguments": ""}}]}),
            ));
            for p in sse::pieces(args, pieces) {
                ev.push(delta(
                    index,
                    json!({"tool_calls": [{"index": i, "function": {"arguments": p}}]}),
                ));
            }
        }
        ev.push(chunk(
            json!([{"index": index, "delta": {}, "logprobs": null,
                              "finish_reason": finish_reason(reply)}]),
        ));
    }
    // The usage chunk: always sent (OpenAI sends it when stream_options.include_usage).
    let last = json!({"id": id, "object": "chat.completion.chunk", "created": CREATED,
                      "model": req.model, "service_tier": "default",
                      "system_fingerprint": "fp_peer", "choices": [], "usage": usage});
    ev.push(sse::data(&last));
    ev.push(sse::data_raw("[DONE]"));
    Plan::sse(ev, ctx.event_delay())
}

// === Responses ===

pub(crate) fn responses(ctx: &Ctx) -> Plan {
    let req = match parse(ctx, |j| {
        j["input"]
            .as_array()
            .and_then(|m| m.last())
            .is_some_and(|m| m["type"] == "function_call_output")
    }) {
        Ok(r) => r,
        Err(plan) => return plan,
    };
    if req.json.get("input").is_none() {
        return error_plan(
            Kind::OpenAi,
            StatusCode::BAD_REQUEST,
            "Missing required parameter: 'input'.",
        );
    }
    let reply = &req.reply;
    let tok = ctx.token();
    let id = format!("resp_{tok}");
    let input_tokens = reply.input_tokens(ctx.body.len());
    let output_tokens = reply.output_tokens();
    let reasoning_tokens = reply.thinking.as_deref().map_or(0, |t| t.len() as u64 / 4);
    let usage = json!({
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": input_tokens + output_tokens,
    });
    let incomplete = reply.stop_reason() == "max_tokens";

    // The output items, complete.
    let mut items: Vec<Value> = Vec::new();
    if let Some(thinking) = &reply.thinking {
        items.push(json!({"id": format!("rs_{tok}"), "type": "reasoning",
                          "summary": [{"type": "summary_text", "text": thinking}]}));
    }
    if !reply.texts.is_empty() {
        let parts: Vec<Value> = reply
            .texts
            .iter()
            .map(|t| json!({"type": "output_text", "text": t, "annotations": [], "logprobs": []}))
            .collect();
        items.push(
            json!({"id": format!("msg_{tok}"), "type": "message", "status": "completed",
                          "role": "assistant", "content": parts}),
        );
    }
    for (i, call) in reply.tool_calls.iter().enumerate() {
        items.push(
            json!({"id": format!("fc_{tok}{i:02}"), "type": "function_call",
                          "status": "completed", "call_id": reply.call_id(i, "call_", &tok),
                          "name": call.name, "arguments": call.input.to_string()}),
        );
    }
    let response = |status: &str, output: Value, usage: Value| {
        json!({
            "id": id, "object": "response", "created_at": CREATED, "status": status,
            "background": false, "error": null,
            "incomplete_details": if incomplete && status != "in_progress" {
                json!({"reason": "max_output_tokens"}) } else { Value::Null },
            "instructions": req.json.get("instructions").cloned().unwrap_or(Value::Null),
            "max_output_tokens": req.json.get("max_output_tokens").cloned().unwrap_or(Value::Null),
            "model": req.model, "output": output, "parallel_tool_calls": true,
            "previous_response_id": req.json.get("previous_response_id").cloned()
                .unwrap_or(Value::Null),
            "reasoning": {"effort": null, "summary": null}, "store": true,
            "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
            "tools": req.json.get("tools").cloned().unwrap_or(json!([])), "top_p": 1.0,
            "truncation": "disabled", "usage": usage, "user": null, "metadata": {},
        })
    };
    let final_status = if incomplete {
        "incomplete"
    } else {
        "completed"
    };
    if !req.stream {
        return Plan::json(
            StatusCode::OK,
            &response(final_status, Value::Array(items), usage),
        );
    }

    let mut seq = 0u64;
    let mut ev: Vec<Bytes> = Vec::new();
    let mut push = |kind: &str, mut data: Value| {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(seq);
        seq += 1;
        ev.push(sse::named(kind, &data));
    };
    let n = reply.delta_chars();
    let created = response("in_progress", json!([]), Value::Null);
    push("response.created", json!({"response": created}));
    push("response.in_progress", json!({"response": created}));
    for (output_index, item) in items.iter().enumerate() {
        let item_id = item["id"].clone();
        match item["type"].as_str() {
            Some("reasoning") => {
                push(
                    "response.output_item.added",
                    json!({"output_index": output_index,
                    "item": {"id": item_id, "type": "reasoning", "summary": []}}),
                );
                let text = item["summary"][0]["text"].as_str().unwrap_or("");
                let at = json!({"item_id": item_id, "output_index": output_index,
                                "summary_index": 0});
                let with = |mut v: Value, extra: Value| {
                    for (k, x) in extra.as_object().into_iter().flatten() {
                        v[k] = x.clone();
                    }
                    v
                };
                push(
                    "response.reasoning_summary_part.added",
                    with(
                        at.clone(),
                        json!({"part": {"type": "summary_text", "text": ""}}),
                    ),
                );
                for p in sse::pieces(text, n) {
                    push(
                        "response.reasoning_summary_text.delta",
                        with(at.clone(), json!({"delta": p})),
                    );
                }
                push(
                    "response.reasoning_summary_text.done",
                    with(at.clone(), json!({"text": text})),
                );
                push(
                    "response.reasoning_summary_part.done",
                    with(at, json!({"part": {"type": "summary_text", "text": text}})),
                );
            }
            Some("message") => {
                push(
                    "response.output_item.added",
                    json!({"output_index": output_index,
                    "item": {"id": item_id, "type": "message", "status": "in_progress",
                             "role": "assistant", "content": []}}),
                );
                for (content_index, part) in
                    item["content"].as_array().into_iter().flatten().enumerate()
                {
                    let text = part["text"].as_str().unwrap_or("");
                    let at = |extra: Value| {
                        let mut v = json!({"item_id": item_id, "output_index": output_index,
                                           "content_index": content_index});
                        for (k, x) in extra.as_object().into_iter().flatten() {
                            v[k] = x.clone();
                        }
                        v
                    };
                    push(
                        "response.content_part.added",
                        at(json!({"part":
                        {"type": "output_text", "text": "", "annotations": [], "logprobs": []}})),
                    );
                    for p in sse::pieces(text, n) {
                        push(
                            "response.output_text.delta",
                            at(json!({"delta": p, "logprobs": []})),
                        );
                    }
                    push(
                        "response.output_text.done",
                        at(json!({"text": text, "logprobs": []})),
                    );
                    push("response.content_part.done", at(json!({"part": part})));
                }
            }
            _ => {
                let mut added = item.clone();
                added["status"] = json!("in_progress");
                added["arguments"] = json!("");
                push(
                    "response.output_item.added",
                    json!({"output_index": output_index, "item": added}),
                );
                let args = item["arguments"].as_str().unwrap_or("");
                for p in sse::pieces(args, n) {
                    push(
                        "response.function_call_arguments.delta",
                        json!({"item_id": item_id, "output_index": output_index, "delta": p}),
                    );
                }
                push(
                    "response.function_call_arguments.done",
                    json!({"item_id": item_id, "output_index": output_index, "arguments": args}),
                );
            }
        }
        push(
            "response.output_item.done",
            json!({"output_index": output_index, "item": item}),
        );
    }
    let done = if incomplete {
        "response.incomplete"
    } else {
        "response.completed"
    };
    push(
        done,
        json!({"response": response(final_status, Value::Array(items.clone()), usage)}),
    );
    Plan::sse(ev, ctx.event_delay())
}

// === Responses over WebSocket ===

/// The text handler of a `GET /v1/responses` WebSocket: a `response.create` message is the
/// Responses request body (with `type`), answered as `POST /v1/responses` with `stream: true`
/// would be, each SSE event's data sent as one text message; what that route would refuse (a
/// missing key, a bad body) gets an `error` event, as the API sends, and so does any other
/// message.
pub(crate) fn responses_ws(
    shared: std::sync::Arc<Shared>,
    seq: u64,
    headers: hyper::HeaderMap,
) -> super::websocket::OnText {
    let mut calls = 0u64;
    Box::new(move |text: &str| {
        let error = |status: u16, message: &str| {
            vec![json!({"type": "error", "status": status,
                        "error": {"type": "invalid_request_error", "message": message}})
            .to_string()]
        };
        let mut body: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => return error(400, &format!("message is not JSON: {e}")),
        };
        if body["type"] != "response.create" {
            return error(400, "unsupported message type");
        }
        if let Some(o) = body.as_object_mut() {
            o.remove("type");
            o.insert("stream".into(), json!(true));
        }
        calls += 1;
        // A warm-up (`generate: false`, Codex's first message): a response, nothing generated.
        if body["generate"] == json!(false) {
            let id = format!("resp_warmup{calls}");
            let response = |status: &str| {
                json!({"id": id, "object": "response", "created_at": CREATED, "status": status,
                       "model": body["model"], "output": [],
                       "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}})
            };
            return vec![
                json!({"type": "response.created", "sequence_number": 0,
                       "response": response("in_progress")})
                .to_string(),
                json!({"type": "response.completed", "sequence_number": 1,
                       "response": response("completed")})
                .to_string(),
            ];
        }
        let ctx = Ctx {
            shared: shared.clone(),
            // Each call its own ids.
            seq: seq | (calls << 32),
            method: hyper::Method::POST,
            path: "/v1/responses".into(),
            query: None,
            headers: headers.clone(),
            body: Bytes::from(body.to_string()),
            body_len: 0,
            body_sha256: String::new(),
        };
        let plan = responses(&ctx);
        let chunks: Vec<Bytes> = plan.chunks.iter.collect();
        if plan.status != StatusCode::OK {
            let body: Vec<u8> = chunks.concat();
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let message = v["error"]["message"].as_str().unwrap_or("refused");
            return error(plan.status.as_u16(), message);
        }
        chunks
            .iter()
            .filter_map(|c| {
                let event = std::str::from_utf8(c).ok()?;
                event
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .map(str::to_string)
            })
            .collect()
    })
}
