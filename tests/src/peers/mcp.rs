//! Mock MCP server over Streamable HTTP: `POST /mcp` carrying JSON-RPC 2.0, answered as
//! `application/json` or as a `text/event-stream`. Its `place_order` and `get_quote` tools
//! call the brokerage API over HTTPS — a real outbound request made while serving the call.
use std::net::SocketAddr;

use bytes::Bytes;
use hyper::{Method, StatusCode, Uri};
use serde_json::{json, Value};

use super::body::Plan;
use super::log::{lock, BodyRecord, Outbound};
use super::server::Ctx;
use super::sse;

/// The protocol revision answered when the client asks for one we do not know.
const LATEST: &str = "2025-06-18";
const KNOWN: &[&str] = &["2024-11-05", "2025-03-26", "2025-06-18"];

pub(crate) async fn handle(ctx: &Ctx) -> Plan {
    match ctx.method {
        Method::POST => {}
        Method::DELETE => {
            let known = ctx
                .header("mcp-session-id")
                .is_some_and(|s| lock(&ctx.shared.mcp_sessions).remove(s));
            return if known {
                Plan::empty(StatusCode::OK)
            } else {
                rpc_error_plan(
                    StatusCode::NOT_FOUND,
                    Value::Null,
                    -32001,
                    "Session not found",
                )
            };
        }
        _ => {
            return rpc_error_plan(
                StatusCode::METHOD_NOT_ALLOWED,
                Value::Null,
                -32000,
                "Method not allowed.",
            )
            .header("allow", "POST, DELETE")
        }
    }
    let msg: Value = match serde_json::from_slice(&ctx.body) {
        Ok(v) => v,
        Err(e) => {
            return rpc_error_plan(
                StatusCode::BAD_REQUEST,
                Value::Null,
                -32700,
                &format!("Parse error: {e}"),
            )
        }
    };
    if !msg.is_object() || msg["jsonrpc"] != "2.0" {
        return rpc_error_plan(
            StatusCode::BAD_REQUEST,
            Value::Null,
            -32600,
            "Invalid Request: expected one JSON-RPC 2.0 message",
        );
    }
    // Notifications and responses from the client get 202 and no body.
    let (Some(id), Some(method)) = (msg.get("id").cloned(), msg["method"].as_str()) else {
        return Plan::empty(StatusCode::ACCEPTED);
    };
    let sse = wants_sse(ctx);
    let params = msg.get("params").cloned().unwrap_or(Value::Null);

    if method == "initialize" {
        let asked = params["protocolVersion"].as_str().unwrap_or(LATEST);
        let version = if KNOWN.contains(&asked) {
            asked
        } else {
            LATEST
        };
        let session = format!("{}{}", ctx.token(), super::reply::token(ctx.seq + 7919));
        lock(&ctx.shared.mcp_sessions).insert(session.clone());
        let result = json!({
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": false}, "logging": {}},
            "serverInfo": {"name": "harness-test-peer", "title": "harness test MCP server",
                           "version": env!("CARGO_PKG_VERSION")},
            "instructions": "Brokerage tools for tests: get_quote, place_order, echo, fail.",
        });
        return answer(ctx, sse, vec![ok(&id, result)]).header("mcp-session-id", session);
    }

    match ctx.header("mcp-session-id") {
        None => {
            return rpc_error_plan(
                StatusCode::BAD_REQUEST,
                id,
                -32000,
                "Bad Request: Mcp-Session-Id header is required",
            )
        }
        Some(s) if !lock(&ctx.shared.mcp_sessions).contains(s) => {
            return rpc_error_plan(StatusCode::NOT_FOUND, id, -32001, "Session not found")
        }
        Some(_) => {}
    }

    let mut messages = Vec::new();
    let reply = match method {
        "ping" => ok(&id, json!({})),
        "tools/list" => ok(&id, json!({"tools": tools()})),
        "tools/call" => {
            let name = params["name"].as_str().unwrap_or("");
            let args = params.get("arguments").cloned().unwrap_or(json!({}));
            if let Some(token) = params["_meta"].get("progressToken").filter(|_| sse) {
                messages.push(json!({"jsonrpc": "2.0", "method": "notifications/progress",
                    "params": {"progressToken": token, "progress": 0, "total": 1,
                               "message": format!("calling {name}")}}));
            }
            match call_tool(ctx, name, &args).await {
                Some(result) => ok(&id, result),
                None => error(&id, -32602, &format!("Unknown tool: {name}")),
            }
        }
        _ => error(&id, -32601, &format!("Method not found: {method}")),
    };
    messages.push(reply);
    answer(ctx, sse, messages)
}

/// Whether to answer as SSE: the client accepts only SSE, or accepts both and the peer is
/// set to SSE (configuration, `?sse=1`, or header `x-peer-mcp-sse: 1`).
fn wants_sse(ctx: &Ctx) -> bool {
    let accept = ctx.header("accept").unwrap_or("");
    let json = accept.contains("application/json");
    let stream = accept.contains("text/event-stream");
    match (json, stream) {
        (false, true) => true,
        (true, false) => false,
        _ => {
            ctx.query_param("sse") == Some("1")
                || ctx.header("x-peer-mcp-sse") == Some("1")
                || lock(&ctx.shared.settings).mcp_sse
        }
    }
}

fn answer(ctx: &Ctx, sse: bool, messages: Vec<Value>) -> Plan {
    if sse {
        let events: Vec<Bytes> = messages.iter().map(|m| sse::named("message", m)).collect();
        Plan::sse(events, ctx.event_delay())
    } else {
        // Only the response; notifications need a stream.
        let last = messages.last().cloned().unwrap_or(Value::Null);
        Plan::json(StatusCode::OK, &last)
    }
}

fn ok(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

fn error(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn rpc_error_plan(status: StatusCode, id: Value, code: i64, message: &str) -> Plan {
    Plan::json(status, &error(&id, code, message))
}

fn tools() -> Value {
    json!([
        {
            "name": "get_quote",
            "title": "Get quote",
            "description": "Current bid/ask/last for a stock symbol, from the brokerage API.",
            "inputSchema": {"type": "object", "properties": {
                "symbol": {"type": "string", "description": "Ticker symbol"}},
                "required": ["symbol"]},
            "outputSchema": {"type": "object", "properties": {
                "symbol": {"type": "string"}, "bid": {"type": "number"},
                "ask": {"type": "number"}, "last": {"type": "number"},
                "currency": {"type": "string"}}, "required": ["symbol", "last"]},
        },
        {
            "name": "place_order",
            "title": "Place order",
            "description": "Places a stock order through the brokerage API.",
            "inputSchema": {"type": "object", "properties": {
                "symbol": {"type": "string"},
                "qty": {"type": "integer", "minimum": 1},
                "side": {"type": "string", "enum": ["buy", "sell"]},
                "limit_price": {"type": "number"}},
                "required": ["symbol", "qty", "side"]},
            "outputSchema": {"type": "object", "properties": {
                "id": {"type": "string"}, "status": {"type": "string"},
                "symbol": {"type": "string"}, "qty": {"type": "integer"},
                "side": {"type": "string"}, "filled_price": {"type": "number"}},
                "required": ["id", "status"]},
        },
        {
            "name": "echo",
            "description": "Returns its arguments.",
            "inputSchema": {"type": "object"},
        },
        {
            "name": "fail",
            "description": "Always fails (isError: true).",
            "inputSchema": {"type": "object"},
        },
    ])
}

/// Runs a tool; `None` if there is no such tool.
async fn call_tool(ctx: &Ctx, name: &str, args: &Value) -> Option<Value> {
    let text_result = |text: String, structured: Value, is_error: bool| {
        let mut r = json!({"content": [{"type": "text", "text": text}], "isError": is_error});
        if !structured.is_null() {
            r["structuredContent"] = structured;
        }
        r
    };
    Some(match name {
        "echo" => text_result(args.to_string(), args.clone(), false),
        "fail" => text_result("the tool failed, as asked".into(), Value::Null, true),
        "get_quote" | "place_order" => {
            let symbol = args["symbol"].as_str().unwrap_or("").to_string();
            if symbol.is_empty() {
                return Some(text_result(
                    "invalid arguments: symbol is required".into(),
                    Value::Null,
                    true,
                ));
            }
            let (method, path, body) = if name == "get_quote" {
                ("GET", format!("/v1/quotes/{symbol}"), Bytes::new())
            } else {
                (
                    "POST",
                    "/v1/orders".to_string(),
                    Bytes::from(args.to_string()),
                )
            };
            match upstream_call(ctx, method, &path, body).await {
                Ok((status, value)) if (200..300).contains(&status) => {
                    let text = if name == "get_quote" {
                        format!(
                            "{symbol}: last {} (bid {}, ask {}) {}",
                            value["last"], value["bid"], value["ask"], value["currency"]
                        )
                    } else {
                        format!(
                            "Order {} {}: {} {} {} at {}",
                            value["id"].as_str().unwrap_or("?"),
                            value["status"].as_str().unwrap_or("?"),
                            value["side"].as_str().unwrap_or("?"),
                            value["qty"],
                            value["symbol"].as_str().unwrap_or("?"),
                            value["filled_price"]
                        )
                    };
                    text_result(text, value, false)
                }
                Ok((status, value)) => text_result(
                    format!("brokerage API answered {status}: {value}"),
                    Value::Null,
                    true,
                ),
                Err(e) => text_result(format!("brokerage API unreachable: {e}"), Value::Null, true),
            }
        }
        _ => return None,
    })
}

/// One HTTPS request to the configured brokerage API, recorded as outbound.
async fn upstream_call(
    ctx: &Ctx,
    method: &str,
    path: &str,
    body: Bytes,
) -> Result<(u16, Value), String> {
    let up = &ctx.shared.upstream;
    let url = format!("{}{path}", up.base_url.trim_end_matches('/'));
    let uri: Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let host = uri.host().unwrap_or("").to_string();
    let port = uri.port_u16().unwrap_or(443);
    let connect: SocketAddr = match up.connect {
        Some(a) => a,
        None => tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| format!("resolving {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("resolving {host}: no address"))?,
    };
    let auth = format!("Bearer {}", up.token);
    let mut headers = vec![
        ("authorization", auth.as_str()),
        ("accept", "application/json"),
    ];
    if method == "POST" {
        headers.push(("content-type", "application/json"));
    }
    let request_body = BodyRecord::of(&body);
    let result = async {
        let req = super::client::build(method, &url, &headers, body).map_err(|e| e.to_string())?;
        let resp = ctx
            .shared
            .client
            .send(connect, req)
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status.as_u16();
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((status, bytes))
    }
    .await;
    ctx.record_outbound(Outbound {
        during: ctx.seq,
        method: method.into(),
        url: url.clone(),
        connect,
        request_body,
        outcome: result.as_ref().map(|(s, _)| *s).map_err(Clone::clone),
        response_body: result.as_ref().ok().map(|(_, b)| BodyRecord::of(b)),
    });
    let (status, bytes) = result?;
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok((status, value))
}
