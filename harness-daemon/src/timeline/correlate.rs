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
//! - a tool call's result is the first later `llm_request` holding a `tool_result` for its id;
//!   a call without an id (Gemini) is paired by name and position: the k-th call of a name is
//!   answered by the first later request holding k results of that name;
//! - a tool call the agent runs itself (no MCP call over the network) is tied to processes:
//!   its window runs from the model request that asked for it to the request that carried its
//!   result (or the session's end). A shell tool's command (`command`, `cmd`, or an argv array
//!   in the input) is looked for in the argv of every process the agent (the pid that made
//!   the model call) started, directly or not, inside the window; the topmost that holds it
//!   is the root of the tool's process tree (`process_match: "command"`). Without a command,
//!   or when no argv holds it, the roots are the agent's children started in the window —
//!   and for a tool without a command, also the agent's descendants that made requests in the
//!   window, such as an MCP server on stdio (`process_match: "window"`; `ambiguous` when the
//!   windows of several such calls overlap). Every exchange made by a process of the tree
//!   while it ran, inside the window, is beneath it.
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
    /// The processes the tool call ran (or that served it), each with the exchanges it made.
    pub processes: Vec<ProcessRun>,
    /// How `processes` were found: `"command"` (the tool's command in their argv) or
    /// `"window"` (started or active while the call ran); absent when there are none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_match: Option<&'static str>,
    /// Whether other calls' windows overlapped and `process_match` is `"window"`: then timing
    /// cannot tell which call the processes served.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ambiguous: bool,
}

/// A process beneath a model tool call, and the exchanges it made.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessRun {
    /// Its pid.
    pub pid: u32,
    /// Its parent.
    pub ppid: Option<u32>,
    /// The program it ran (the last one, when it ran several), if it ran one.
    pub path: Option<String>,
    /// Its arguments.
    pub argv: Vec<String>,
    /// When it began.
    pub at: String,
    /// Seq of its (last) `process_exec`.
    pub exec_seq: Option<u64>,
    /// How many parents up to the root of the tool's process tree (the root is 0).
    pub depth: usize,
    /// Whether it began before the tool call (a server the agent had started earlier).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub started_before: bool,
    /// How it ended, when recorded.
    pub exit: Option<ExitView>,
    /// The exchanges it made during the tool call.
    pub external: Vec<External>,
    /// Index in the session's process list ([`super::process::Processes::list`]).
    #[serde(skip)]
    pub index: usize,
}

/// How a process ended.
#[derive(Debug, Clone, Serialize)]
pub struct ExitView {
    /// Exit status, when it exited.
    pub code: Option<u8>,
    /// The killing signal, when one did.
    pub signal: Option<u8>,
    /// Seq of the `process_exit`.
    pub seq: u64,
}

/// Everything correlated in one session.
#[derive(Debug, Clone, Default)]
pub struct Correlation {
    /// Every MCP `tools/call`, in order, with what happened beneath it.
    pub calls: Vec<McpCall>,
    /// One chain per model tool call, in order.
    pub chains: Vec<Chain>,
    /// Exchanges shown beneath a tool call's processes (indices into the exchanges).
    pub nested: std::collections::HashSet<usize>,
}

impl Correlation {
    /// Whether an exchange is shown beneath something else (an MCP call or a process).
    pub fn is_beneath(&self, exchange: usize) -> bool {
        self.parent_call(exchange).is_some() || self.nested.contains(&exchange)
    }

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
    // A call without an id is the k-th of its name (Gemini gives none).
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    let positions: Vec<Option<usize>> = uses
        .iter()
        .map(|u| {
            u.id.is_empty().then(|| {
                let k = seen.entry(u.name.clone()).or_default();
                *k += 1;
                *k
            })
        })
        .collect();
    for (n, u) in uses.into_iter().enumerate() {
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
            result_seq: result_seq(log, &u, positions[n]),
            tool_use: u,
            mcp_call,
            processes: Vec::new(),
            process_match: None,
            ambiguous: false,
        });
    }
    let nested = tie_processes(log, &mut chains);
    Correlation {
        calls,
        chains,
        nested,
    }
}

/// The command a shell tool call asks for, from its input: `command` or `cmd` as a string
/// (Claude Code `Bash`, Gemini `run_shell_command`, Codex `exec_command`), or an argv array
/// (`command`, Codex `shell` / `local_shell` `action.command`), whose last element is taken
/// when it is a shell's `-c`/`-lc` script.
pub fn shell_command(input: &Value) -> Option<String> {
    let field = |v: &Value| -> Option<String> {
        for key in ["command", "cmd"] {
            match v.get(key) {
                Some(Value::String(s)) if !s.trim().is_empty() => return Some(s.clone()),
                Some(Value::Array(argv)) => {
                    let argv: Vec<&str> = argv.iter().filter_map(Value::as_str).collect();
                    let script =
                        argv.len() >= 3 && matches!(argv[argv.len() - 2], "-c" | "-lc" | "-cl");
                    if script {
                        return Some(argv[argv.len() - 1].to_owned());
                    }
                    if !argv.is_empty() {
                        return Some(argv.join(" "));
                    }
                }
                _ => {}
            }
        }
        None
    };
    field(input).or_else(|| input.get("action").and_then(field))
}

/// Whether a recorded argv holds `command`: as is, or as a shell would have quoted it inside
/// single quotes. The argv was recorded with its secrets fingerprinted (SPEC §7) and the
/// command was not, so both are compared with every secret the rules find made alike.
fn argv_holds(argv: &[String], command: &str) -> bool {
    static FINGERPRINT: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new("hmac-sha256:[0-9a-f]{64}").expect("the fingerprint pattern is valid")
    });
    let blank = |_: &[u8]| "hmac-sha256:*".to_owned();
    let joined = FINGERPRINT
        .replace_all(&argv.join(" "), "hmac-sha256:*")
        .into_owned();
    let command = crate::argv::redact_with(blank, &[command.to_owned()]).remove(0);
    joined.contains(&command)
        || joined.contains(&command.replace('\'', "'\\''"))
        || joined.contains(&command.replace('\'', "'\"'\"'"))
}

/// Ties each tool call the agent ran itself to its processes (the module's rules); returns
/// the exchanges now shown beneath a process.
fn tie_processes(log: &SessionLog, chains: &mut [Chain]) -> std::collections::HashSet<usize> {
    let procs = &log.processes;
    let mut nested = std::collections::HashSet::new();
    if procs.is_empty() {
        return nested;
    }
    let end_of_session = log.items.last().map(|i| i.ts.clone()).unwrap_or_default();
    // Each call's window: from its model request to the request that carried its result.
    let windows: Vec<(String, String)> = chains
        .iter()
        .map(|c| {
            let x = &log.exchanges[c.tool_use.exchange];
            let end = c
                .result_seq
                .and_then(|seq| log.exchange_of_seq.get(&seq))
                .map(|&i| log.exchanges[i].ts().to_owned())
                .unwrap_or_else(|| end_of_session.clone());
            (x.ts().to_owned(), end)
        })
        .collect();
    let mut by_window = vec![false; chains.len()];
    for (n, chain) in chains.iter_mut().enumerate() {
        if chain.mcp_call.is_some() {
            continue;
        }
        let x = &log.exchanges[chain.tool_use.exchange];
        let (start, end) = (&windows[n].0, &windows[n].1);
        let Some(agent) = log.pid_of(x).and_then(|pid| procs.at(pid, x.ts())) else {
            continue;
        };
        let in_window = |ts: &str| ts >= start.as_str() && ts <= end.as_str();
        let started: Vec<usize> = (0..procs.list.len())
            .filter(|&k| in_window(procs.list[k].started()) && procs.descends_from(k, agent))
            .collect();
        let command = shell_command(&chain.tool_use.input);
        let holds = |k: usize| {
            command
                .as_deref()
                .is_some_and(|cmd| procs.list[k].execs.iter().any(|e| argv_holds(&e.argv, cmd)))
        };
        let mut roots: Vec<usize> = started
            .iter()
            .copied()
            .filter(|&k| holds(k))
            .filter(|&k| procs.parent(k).is_none_or(|p| !holds(p)))
            .collect();
        if !roots.is_empty() {
            chain.process_match = Some("command");
        } else {
            roots = started
                .iter()
                .copied()
                .filter(|&k| procs.parent(k) == Some(agent))
                .collect();
            if command.is_none() {
                // A server the agent started earlier (MCP over stdio) that made requests
                // while the call ran.
                for (i, ex) in log.exchanges.iter().enumerate() {
                    if i == chain.tool_use.exchange || !in_window(ex.ts()) {
                        continue;
                    }
                    let Some(k) = log.pid_of(ex).and_then(|pid| procs.at(pid, ex.ts())) else {
                        continue;
                    };
                    let under = roots.iter().any(|&r| r == k || procs.descends_from(k, r));
                    if k != agent && !under && procs.descends_from(k, agent) {
                        roots.push(k);
                    }
                }
            }
            if !roots.is_empty() {
                chain.process_match = Some("window");
                by_window[n] = true;
            }
        }
        let mut tree: Vec<(usize, usize)> = Vec::new();
        for &root in &roots {
            tree.push((root, 0));
            for &k in &started {
                if procs.descends_from(k, root) {
                    let mut depth = 0;
                    let mut cur = k;
                    while let Some(p) = procs.parent(cur) {
                        depth += 1;
                        if p == root || depth > procs.list.len() {
                            break;
                        }
                        cur = p;
                    }
                    tree.push((k, depth));
                }
            }
        }
        tree.sort_by(|a, b| {
            procs.list[a.0]
                .started()
                .cmp(procs.list[b.0].started())
                .then(a.0.cmp(&b.0))
        });
        tree.dedup_by_key(|t| t.0);
        for (k, depth) in tree {
            let p = &procs.list[k];
            let external: Vec<External> = log
                .exchanges
                .iter()
                .enumerate()
                .filter(|(_, ex)| {
                    in_window(ex.ts())
                        && log
                            .pid_of(ex)
                            .and_then(|pid| procs.at(pid, ex.ts()))
                            .is_some_and(|j| j == k)
                })
                .map(|(i, ex)| external_of(log, i, ex))
                .collect();
            nested.extend(external.iter().map(|e| e.exchange));
            let exec = p.last_exec();
            chain.processes.push(ProcessRun {
                pid: p.pid,
                ppid: p.ppid,
                path: exec.map(|e| e.path.clone()),
                argv: exec.map(|e| e.argv.clone()).unwrap_or_default(),
                at: p.started().to_owned(),
                exec_seq: exec.map(|e| e.seq),
                depth,
                started_before: p.started() < start.as_str(),
                exit: p.exit.as_ref().map(|e| ExitView {
                    code: e.code,
                    signal: e.signal,
                    seq: e.seq,
                }),
                external,
                index: k,
            });
        }
    }
    // Window matches of calls whose windows overlap cannot be told apart.
    for n in 0..chains.len() {
        if !by_window[n] {
            continue;
        }
        chains[n].ambiguous = (0..chains.len()).any(|m| {
            m != n
                && chains[m].mcp_call.is_none()
                && windows[m].0 <= windows[n].1
                && windows[n].0 <= windows[m].1
        });
    }
    nested
}

/// An exchange as listed beneath a call or a process.
fn external_of(log: &SessionLog, i: usize, x: &super::session::Exchange) -> External {
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
        .map(|(i, x)| external_of(log, i, x))
        .collect()
}

/// Seq of the first later model request that carries a `tool_result` for `u`: by id, or for
/// a call without one, by name and position.
fn result_seq(log: &SessionLog, u: &ToolUse, position: Option<usize>) -> Option<u64> {
    let results = |req: &Value| {
        array(req, "messages")
            .iter()
            .flat_map(|m| array(m, "content").iter())
            .filter(|c| c.get("type").and_then(Value::as_str) == Some("tool_result"))
            .cloned()
            .collect::<Vec<Value>>()
    };
    log.exchanges
        .iter()
        .filter(|x| x.seq() > u.seq)
        .find(|x| {
            x.note("llm_request").is_some_and(|req| {
                let results = results(req);
                match position {
                    None => results
                        .iter()
                        .any(|c| c.get("tool_use_id").and_then(Value::as_str) == Some(&u.id)),
                    Some(k) => {
                        results
                            .iter()
                            .filter(|c| c.get("name").and_then(Value::as_str) == Some(&u.name))
                            .count()
                            >= k
                    }
                }
            })
        })
        .map(|x| x.seq())
}
