//! Correlation: the model's tool call → the MCP `tools/call` that carries it → the outbound HTTP
//! exchanges the tool server made while serving it → the later model request that hands the
//! result back. Built only from annotations and connection records of one session; nothing
//! here is recorded, so a reader can always recompute it.
//!
//! The rules:
//! - an MCP call carries a tool call when its tool name matches (exactly, or as the suffix of
//!   a prefixed agent-side name such as `mcp__server__get_quote`), its arguments equal the
//!   tool call's input as JSON values, and it was recorded after the model's response;
//! - an exchange is beneath an MCP call when its request was recorded after the MCP request and
//!   before the end of the MCP response, by a process other than the one that made the MCP
//!   call (`conn_open.caller.pid`); an exchange inside the windows of several calls (parallel
//!   tool calls) is listed under each and marked `ambiguous`;
//! - a tool call's result is the first later `llm_request` holding a `tool_result` for its id.
use super::session::SessionLog;
use serde::Serialize;
use serde_json::Value;

/// The model's tool call, as the `llm_response` annotation gives it.
#[derive(Debug, Clone, Serialize)]
pub struct ToolUse {
    /// Seq of the model's `http_response` entry (the annotated entry).
    pub seq: u64,
    /// The tool call id (`tool_use` id / call id).
    pub id: String,
    /// Tool name as the model gave it.
    pub name: String,
    /// Arguments.
    pub input: Value,
    /// Index of the model exchange in [`SessionLog::exchanges`].
    #[serde(skip)]
    pub exchange: usize,
}

/// An MCP `tools/call`, its result, and what the tool server did meanwhile.
#[derive(Debug, Clone, Serialize)]
pub struct McpCall {
    /// Seq of the MCP call's `http_request` entry.
    pub seq: u64,
    /// JSON-RPC id.
    pub id: Value,
    /// Tool name.
    pub name: String,
    /// Arguments.
    pub arguments: Value,
    /// The process that made the call.
    pub pid: Option<u32>,
    /// Host the call went to.
    pub host: Option<String>,
    /// Seq of the MCP response's `http_response` entry, when recorded.
    pub response_seq: Option<u64>,
    /// The tool's result (`content`, `structuredContent`, `isError`), when recorded.
    pub result: Option<Value>,
    /// A JSON-RPC error instead of a result.
    pub error: Option<Value>,
    /// Whether the tool reported failure (`isError`, or a JSON-RPC error).
    pub is_error: bool,
    /// Outbound exchanges made by other processes while the call was being served.
    pub external: Vec<External>,
    /// Index of the MCP exchange.
    #[serde(skip)]
    pub exchange: usize,
}

/// An outbound HTTP exchange beneath an MCP call.
#[derive(Debug, Clone, Serialize)]
pub struct External {
    /// Seq of its `http_request` entry.
    pub seq: u64,
    /// Request method.
    pub method: String,
    /// Request URL.
    pub url: String,
    /// Response status, when recorded.
    pub status: Option<u16>,
    /// The process that made it.
    pub pid: Option<u32>,
    /// Whether it also lies in the window of another MCP call (parallel tool calls served by
    /// other processes): then timing cannot tell which call caused it.
    pub ambiguous: bool,
    /// Index of the exchange.
    #[serde(skip)]
    pub exchange: usize,
}

/// One causal chain, as `harness log --correlations` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Chain {
    /// The session.
    pub session: String,
    /// The model's tool call.
    pub tool_use: ToolUse,
    /// The MCP call that carried it (none for tools the agent ran itself).
    pub mcp_call: Option<McpCall>,
    /// The outbound exchanges beneath the MCP call (a copy of `mcp_call.external`).
    pub external: Vec<External>,
    /// Seq of the `http_request` of the later model call that carried the tool's result.
    pub result_seq: Option<u64>,
}

/// Everything correlated in one session.
#[derive(Debug, Clone, Default)]
pub struct Correlation {
    /// Every MCP `tools/call`, in order, with what happened beneath it.
    pub calls: Vec<McpCall>,
    /// One chain per model tool call, in order.
    pub chains: Vec<Chain>,
}

impl Correlation {
    /// The MCP call (index into `calls`) an exchange is beneath, if any.
    pub fn parent_call(&self, exchange: usize) -> Option<usize> {
        self.calls
            .iter()
            .position(|c| c.external.iter().any(|e| e.exchange == exchange))
    }

    /// The chain whose MCP call is `calls[call]`.
    pub fn chain_of_call(&self, call: &McpCall) -> Option<&Chain> {
        self.chains.iter().find(|c| {
            c.mcp_call
                .as_ref()
                .is_some_and(|m| m.seq == call.seq && m.id == call.id)
        })
    }
}

fn str_of(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn array<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Whether an agent-side tool name refers to MCP tool `mcp`.
fn same_tool(model: &str, mcp: &str) -> bool {
    model == mcp
        || ["__", ".", "/", ":"]
            .iter()
            .any(|sep| model.ends_with(&format!("{sep}{mcp}")))
}

/// Whether tool-call input and MCP arguments are the same (absent and `{}` are alike).
fn same_arguments(input: &Value, arguments: &Value) -> bool {
    let empty = |v: &Value| v.is_null() || v.as_object().is_some_and(|o| o.is_empty());
    input == arguments || (empty(input) && empty(arguments))
}

/// Correlates one session.
pub fn correlate(log: &SessionLog) -> Correlation {
    let mut uses = Vec::new();
    let mut calls = Vec::new();
    for (i, x) in log.exchanges.iter().enumerate() {
        if let Some(resp) = x.note("llm_response") {
            let seq = x
                .notes
                .iter()
                .rev()
                .find(|n| n.annotation.topic == "llm_response")
                .map_or(x.seq(), |n| n.annotation.of_seq);
            for tc in array(resp, "tool_calls") {
                uses.push(ToolUse {
                    seq,
                    id: str_of(tc, "id").unwrap_or_default(),
                    name: str_of(tc, "name").unwrap_or_default(),
                    input: tc.get("input").cloned().unwrap_or(Value::Null),
                    exchange: i,
                });
            }
        }
        let Some(req) = x.note("mcp_request") else {
            continue;
        };
        for m in array(req, "messages") {
            if m.get("method").and_then(Value::as_str) != Some("tools/call") {
                continue;
            }
            let id = m.get("id").cloned().unwrap_or(Value::Null);
            let (result, error) = mcp_result(log, i, &id, req.get("session"));
            let is_error = error.is_some()
                || result
                    .as_ref()
                    .and_then(|r| r.get("isError"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
            calls.push(McpCall {
                seq: x.seq(),
                id,
                name: str_of(m, "name").unwrap_or_default(),
                arguments: m.get("arguments").cloned().unwrap_or(Value::Null),
                pid: log.pid_of(x),
                host: log.conn(x.conn).and_then(|c| c.host()),
                response_seq: x.response.as_ref().map(|r| r.seq),
                result,
                error,
                is_error,
                external: beneath(log, i),
                exchange: i,
            });
        }
    }
    let mut windows: std::collections::HashMap<usize, usize> = Default::default();
    for e in calls.iter().flat_map(|c| &c.external) {
        *windows.entry(e.exchange).or_default() += 1;
    }
    for e in calls.iter_mut().flat_map(|c| &mut c.external) {
        e.ambiguous = windows[&e.exchange] > 1;
    }
    let mut taken = vec![false; calls.len()];
    let mut chains = Vec::new();
    for u in uses {
        let call = calls.iter().enumerate().position(|(k, c)| {
            !taken[k]
                && c.seq > u.seq
                && same_tool(&u.name, &c.name)
                && same_arguments(&u.input, &c.arguments)
        });
        if let Some(k) = call {
            taken[k] = true;
        }
        let mcp_call = call.map(|k| calls[k].clone());
        chains.push(Chain {
            session: log.id.clone(),
            external: mcp_call
                .as_ref()
                .map(|c| c.external.clone())
                .unwrap_or_default(),
            result_seq: result_seq(log, &u),
            tool_use: u,
            mcp_call,
        });
    }
    Correlation { calls, chains }
}

/// The result (or error) of JSON-RPC call `id`: in the same exchange's `mcp_response`, else in
/// a later exchange's with the same MCP session.
fn mcp_result(
    log: &SessionLog,
    exchange: usize,
    id: &Value,
    session: Option<&Value>,
) -> (Option<Value>, Option<Value>) {
    let find = |x: &super::session::Exchange| {
        let resp = x.note("mcp_response")?;
        array(resp, "messages")
            .iter()
            .find(|m| m.get("id") == Some(id))
            .map(|m| (m.get("result").cloned(), m.get("error").cloned()))
    };
    if let Some(r) = find(&log.exchanges[exchange]) {
        return r;
    }
    log.exchanges[exchange + 1..]
        .iter()
        .filter(|x| {
            session.is_none_or(Value::is_null)
                || x.note("mcp_response").and_then(|r| r.get("session")) == session
        })
        .find_map(find)
        .unwrap_or((None, None))
}

/// The exchanges beneath MCP exchange `exchange`: requested inside its window by another pid.
fn beneath(log: &SessionLog, exchange: usize) -> Vec<External> {
    let call = &log.exchanges[exchange];
    let start = call.seq();
    let end = call
        .response_end()
        .unwrap_or_else(|| log.items.last().map_or(u64::MAX, |i| i.seq));
    let Some(pid) = log.pid_of(call) else {
        return Vec::new();
    };
    log.exchanges
        .iter()
        .enumerate()
        .filter(|(i, x)| {
            *i != exchange
                && x.request
                    .as_ref()
                    .is_some_and(|r| r.seq > start && r.seq < end)
                && log.pid_of(x).is_some_and(|p| p != pid)
        })
        .map(|(i, x)| {
            let r = x.request.as_ref().map(|r| &r.head);
            External {
                seq: x.seq(),
                method: r.map(|r| r.method.clone()).unwrap_or_default(),
                url: x.url(log.conn(x.conn)),
                status: x.response.as_ref().map(|r| r.head.status),
                pid: log.pid_of(x),
                ambiguous: false,
                exchange: i,
            }
        })
        .collect()
}

/// Seq of the first later model request that carries a `tool_result` for `u`.
fn result_seq(log: &SessionLog, u: &ToolUse) -> Option<u64> {
    log.exchanges
        .iter()
        .filter(|x| x.seq() > u.seq)
        .find(|x| {
            x.note("llm_request").is_some_and(|req| {
                array(req, "messages").iter().any(|m| {
                    array(m, "content").iter().any(|c| {
                        c.get("type").and_then(Value::as_str) == Some("tool_result")
                            && c.get("tool_use_id").and_then(Value::as_str) == Some(&u.id)
                    })
                })
            })
        })
        .map(|x| x.seq())
}
