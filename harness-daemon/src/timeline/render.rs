//! The timeline for a person: one step per model call, MCP call or HTTP exchange, in the order
//! they were recorded, with the model's thinking, text, tool calls and tokens, each MCP call's
//! result and the external calls beneath it; DNS and denials one line each.
use super::correlate::{correlate, Correlation};
use super::session::{Exchange, SessionLog};
use crate::ledger::{Entry, Header};
use serde_json::Value;
use std::fmt::Write as _;

/// How much of each kind of text a timeline shows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Characters of thinking.
    pub thinking: usize,
    /// Characters of model text.
    pub text: usize,
    /// Characters of tool arguments and results.
    pub tool: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            thinking: 240,
            text: 600,
            tool: 300,
        }
    }
}

/// Whitespace runs collapsed to one space, cut to `max` characters with a note of how much
/// was left out.
pub fn clip(s: &str, max: usize) -> String {
    cut(s.split_whitespace().collect::<Vec<_>>().join(" "), max)
}

/// `text` made safe for a terminal: every control character but the newline (ESC, CSI in
/// its 8-bit form, BEL, backspace, carriage return, …) is written as a visible escape
/// (`\x1b`, `\u{9b}`). What the agent or a server put in the ledger is shown, never obeyed:
/// escape sequences could erase lines of the timeline, retitle the window or write the
/// clipboard (OSC 52).
pub fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char =
        |c: char| c != '\n' && c != '\t' && (c.is_control() || c == '\u{2028}' || c == '\u{2029}');
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            c if !unsafe_char(c) => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `s` as it is, cut to `max` characters with a note of how much was left out.
fn cut(s: String, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s;
    }
    let head: String = s.chars().take(max).collect();
    format!("{head}… (+{} chars)", n - max)
}

/// Compact JSON of a value, cut to `max` characters with a note of how much was left out.
/// Unlike [`clip`], whitespace inside strings is kept: the text is the value's JSON.
pub fn clip_json(v: &Value, max: usize) -> String {
    cut(serde_json::to_string(v).unwrap_or_default(), max)
}

/// `1 tool`, `2 tools`: a count with its noun, singular when it is one.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else if noun.ends_with('s') {
        format!("{n} {noun}es")
    } else {
        format!("{n} {noun}s")
    }
}

/// A model tool call's arguments: compact JSON; arguments that did not parse as JSON (the
/// `input_error` of an `llm_response`) as the text the model sent, saying so.
fn tool_input(tc: &Value, max: usize) -> String {
    let input = tc.get("input").unwrap_or(&Value::Null);
    match (input, tc.get("input_error").and_then(Value::as_str)) {
        (Value::String(raw), Some(e)) => {
            format!(
                "{}  (arguments are not valid JSON: {e})",
                cut(raw.clone(), max)
            )
        }
        (v, _) => clip_json(v, max),
    }
}

/// `HH:MM:SS.mmm` of a ledger `ts`.
pub fn clock(ts: &str) -> &str {
    ts.get(11..23).unwrap_or(ts)
}

const PAD: &str = "               ";

/// Renders a whole session, pricing model calls with the built-in table.
pub fn render(log: &SessionLog, limits: Limits) -> String {
    render_priced(log, limits, &crate::cost::PriceTable::builtin())
}

/// Renders a whole session, pricing model calls with `prices`.
pub fn render_priced(log: &SessionLog, limits: Limits, prices: &crate::cost::PriceTable) -> String {
    let corr = correlate(log);
    let calls = super::spend::calls(log, prices);
    let call_of: std::collections::HashMap<usize, &crate::cost::PricedCall> = calls
        .iter()
        .filter_map(|c| Some((c.exchange?, &c.priced)))
        .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "== session {} ({}) · times UTC",
        log.id,
        log.path.display()
    );
    if let Some(o) = log.open() {
        let _ = writeln!(
            out,
            "{PAD}command: {} · uid {} · host {} · {}",
            o.command.join(" "),
            o.uid,
            o.hostname,
            o.software
        );
    }
    let mut shown_exchanges = std::collections::HashSet::new();
    // Execs shown beneath the tool call that ran them, not on their own.
    let beneath_tool: std::collections::HashSet<u64> = corr
        .chains
        .iter()
        .flat_map(|c| &c.processes)
        .filter_map(|p| {
            let k = p.index;
            Some(log.processes.list.get(k)?.execs.iter().map(|e| e.seq))
        })
        .flatten()
        .collect();
    // Connections whose upgraded bytes were decoded as WebSocket (their messages speak).
    let ws_conns: std::collections::HashSet<u64> = log
        .other_notes
        .iter()
        .filter(|n| n.annotation.by == "websocket")
        .filter_map(|n| n.annotation.data.get("conn").and_then(Value::as_u64))
        .collect();
    // Connections whose WebSocket carried LLM calls.
    let call_conns: std::collections::HashSet<u64> = log
        .exchanges
        .iter()
        .filter(|x| x.websocket.is_some())
        .map(|x| x.conn)
        .collect();
    for item in &log.items {
        match &item.entry {
            Entry::SessionOpen(_) => {
                let _ = writeln!(out, "{}  session opened", clock(&item.ts));
            }
            Entry::HttpRequest(_)
            | Entry::HttpResponse(_)
            | Entry::StreamChunk(_)
            | Entry::HttpRequestBody(_)
            | Entry::HttpResponseBody(_) => {
                let Some(&i) = log.exchange_of_seq.get(&item.seq) else {
                    continue;
                };
                if corr.is_beneath(i) || !shown_exchanges.insert(i) {
                    continue;
                }
                let x = &log.exchanges[i];
                exchange(&mut out, log, &corr, i, x, limits);
                if let Some(call) = call_of.get(&i) {
                    super::spend::call_line(&mut out, call);
                }
            }
            Entry::ProcessExec(x) if !beneath_tool.contains(&item.seq) => {
                let exit = log
                    .processes
                    .at(x.pid, &x.at)
                    .and_then(|k| log.processes.list[k].exit.as_ref())
                    .map(|e| format!(" → {}", e.describe()))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{}  exec  pid {} (parent {}) {}{exit}",
                    clock(&x.at),
                    x.pid,
                    x.ppid,
                    clip(&argv_line(&x.argv, &x.path), limits.tool)
                );
            }
            // An LLM call over a WebSocket, where its request was annotated.
            Entry::Annotation(_) if log.websocket_call_of_seq.contains_key(&item.seq) => {
                let i = log.websocket_call_of_seq[&item.seq];
                if !shown_exchanges.insert(i) {
                    continue;
                }
                let x = &log.exchanges[i];
                exchange(&mut out, log, &corr, i, x, limits);
                if let Some(call) = call_of.get(&i) {
                    super::spend::call_line(&mut out, call);
                }
            }
            // The text messages of a connection whose LLM calls are shown are those calls.
            Entry::Annotation(a)
                if a.by == "websocket"
                    && a.data.get("opcode").and_then(Value::as_str) == Some("text")
                    && a.data
                        .get("conn")
                        .and_then(Value::as_u64)
                        .is_some_and(|c| call_conns.contains(&c)) => {}
            Entry::DnsQuery(q) => {
                let answer = log.dns.get(&q.exchange).and_then(|d| d.answer.as_ref());
                let result = match answer {
                    Some(a) if !a.head.answers.is_empty() => a
                        .head
                        .answers
                        .iter()
                        .map(|r| r.rsplit(' ').next().unwrap_or(r))
                        .collect::<Vec<_>>()
                        .join(", "),
                    Some(a) => a
                        .head
                        .rcode
                        .clone()
                        .or(a.head.error.clone())
                        .unwrap_or_else(|| "no answer".into()),
                    None => "no answer recorded".into(),
                };
                let _ = writeln!(
                    out,
                    "{}  dns   {} {} {} → {}",
                    clock(&item.ts),
                    who(q.caller.map(|c| c.pid)),
                    q.qname,
                    q.qtype,
                    result
                );
            }
            Entry::ConnDenied(d) if is_address_selection(d) => {
                let _ = writeln!(out, "{}  {}", clock(&item.ts), address_selection(d));
            }
            Entry::ConnDenied(d) => {
                // A refusal with no destination (a socket family, a unix socket) has no arrow.
                let target = match (d.host.as_deref(), d.dst) {
                    (None, None) => String::new(),
                    (host, dst) => format!(
                        " → {}{}",
                        host.map(|h| format!("{h} ")).unwrap_or_default(),
                        dst.map(|a| a.to_string()).unwrap_or_default()
                    ),
                };
                let _ = writeln!(
                    out,
                    "{}  DENIED {} {}{target} (by {}: {})",
                    clock(&item.ts),
                    who(d.caller.map(|c| c.pid)),
                    d.proto,
                    d.by,
                    d.reason
                );
            }
            Entry::TlsFailure(t) => {
                let _ = writeln!(
                    out,
                    "{}  TLS FAILED conn {} ({:?} side{}): {}",
                    clock(&item.ts),
                    t.conn,
                    t.side,
                    t.sni
                        .as_deref()
                        .map(|s| format!(", {s}"))
                        .unwrap_or_default(),
                    t.reason
                );
            }
            Entry::Error(e) => {
                let _ = writeln!(
                    out,
                    "{}  ERROR {}: {}",
                    clock(&item.ts),
                    e.context,
                    e.message
                );
            }
            Entry::RequestDecision(_) | Entry::RequestDecided(_) => {
                if let Some(line) = decision_line(&item.entry) {
                    let _ = writeln!(out, "{}  {line}", clock(&item.ts));
                }
            }
            Entry::Recovery(r) => {
                let _ = writeln!(out, "{}  recovery: {}", clock(&item.ts), r.reason);
            }
            Entry::PolicyChange(p) => {
                let _ = writeln!(
                    out,
                    "{}  policy changed: {} sha256 {} (was {})",
                    clock(&item.ts),
                    p.origin,
                    p.sha256,
                    p.previous_sha256
                );
            }
            // A connection that did not end cleanly (a limit fired, the ledger cut it): said,
            // as a reader looking for why a call hung or failed needs it.
            Entry::ConnClose(c) if c.error.is_some() => {
                let host = log.conn(c.conn).and_then(|x| x.host()).unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{}  conn {} → {host} ended: {}",
                    clock(&item.ts),
                    c.conn,
                    c.error.as_deref().unwrap_or_default()
                );
            }
            Entry::Data(d)
                if d.index == 0
                    && d.direction == crate::ledger::Direction::Up
                    && !ws_conns.contains(&d.conn) =>
            {
                let host = log.conn(d.conn).and_then(|c| c.host()).unwrap_or_default();
                let upgraded = log.exchanges.iter().any(|x| x.conn == d.conn);
                let _ = writeln!(
                    out,
                    "{}  {} → {host}  {} ({:?}, conn {})",
                    clock(&item.ts),
                    who(log.conn(d.conn).and_then(|c| c.pid())),
                    if upgraded {
                        "bytes after the HTTP upgrade"
                    } else {
                        "non-HTTP bytes"
                    },
                    d.direction,
                    d.conn
                );
            }
            Entry::Annotation(a) if a.by == "websocket" => {
                let c = a
                    .data
                    .get("conn")
                    .and_then(Value::as_u64)
                    .and_then(|c| log.conn(c));
                let _ = writeln!(
                    out,
                    "{}  #{:<4} {} → {}  {}",
                    clock(&item.ts),
                    a.of_seq,
                    who(c.and_then(|c| c.pid())),
                    c.and_then(|c| c.host()).unwrap_or_default(),
                    websocket(&a.topic, &a.data, limits)
                );
            }
            Entry::SessionClose(c) => {
                let how = c.describe();
                let _ = writeln!(out, "{}  session closed: {how}", clock(&item.ts));
            }
            _ => {}
        }
    }
    // A session that used no model tokens says nothing of tokens.
    let mut used = crate::cost::Tokens::default();
    for c in &calls {
        used.add(&c.priced.tokens.unwrap_or_default());
    }
    let tokens = match (used.prompt(), used.completion()) {
        (0, 0) => String::new(),
        (i, o) => format!(" · tokens {i} in, {o} out"),
    };
    let processes = match log.processes.list.len() {
        0 => String::new(),
        n => format!(" · {}", count(n, "process")),
    };
    let ws_calls = websocket_calls(log);
    let ws_calls = match ws_calls {
        0 => String::new(),
        n => format!(" · {}", count(n, "WebSocket model call")),
    };
    let _ = writeln!(
        out,
        "{PAD}{}{ws_calls} · {} · {}{processes}{tokens}",
        count(
            log.exchanges
                .iter()
                .filter(|x| x.websocket.is_none())
                .count(),
            "exchange"
        ),
        count(corr.chains.len(), "model tool call"),
        count(corr.calls.len(), "MCP tool call"),
    );
    super::spend::totals(&mut out, &calls);
    // What the ledger holds, by kind, in order of first appearance.
    let mut kinds: Vec<(&str, usize)> = Vec::new();
    for item in &log.items {
        let k = item.entry.kind();
        match kinds.iter_mut().find(|(n, _)| *n == k) {
            Some((_, c)) => *c += 1,
            None => kinds.push((k, 1)),
        }
    }
    let kinds: Vec<String> = kinds.iter().map(|(k, c)| format!("{c} {k}")).collect();
    let _ = writeln!(
        out,
        "{PAD}ledger: {} entries ({})",
        log.items.len(),
        kinds.join(", ")
    );
    out
}

/// A process's command line for one line of the timeline: its argv, else its path.
fn argv_line(argv: &[String], path: &str) -> String {
    if argv.is_empty() {
        path.to_owned()
    } else {
        argv.join(" ")
    }
}

/// What a tool call the agent ran itself caused: its processes as a tree, each with the
/// exchanges it made beneath it.
fn tool_processes(
    out: &mut String,
    log: &SessionLog,
    chain: &crate::timeline::correlate::Chain,
    limits: Limits,
) {
    if chain.processes.is_empty() {
        return;
    }
    let how = match (chain.process_match, chain.ambiguous) {
        (Some("command"), _) => "ran",
        (_, true) => "ran, by timing only (other tool calls ran at the same time)",
        _ => "ran, by timing",
    };
    let _ = writeln!(
        out,
        "{PAD}tool call {} ({}) {how}:",
        chain.tool_use.name,
        if chain.tool_use.id.is_empty() {
            "no id"
        } else {
            chain.tool_use.id.as_str()
        }
    );
    for p in &chain.processes {
        let indent = "  ".repeat(p.depth + 1);
        let exit = p
            .exit
            .as_ref()
            .map(|e| {
                crate::ledger::exit_words(e.code, e.signal)
                    .map(|w| format!(" → {w}"))
                    .unwrap_or_default()
            })
            .unwrap_or_else(|| " → still running".into());
        let what = match &p.path {
            Some(path) => argv_line(&p.argv, path),
            None => "(forked, ran no program)".into(),
        };
        let _ = writeln!(
            out,
            "{PAD}{indent}└ {}  process {} {}{exit}{}",
            clock(&p.at),
            p.pid,
            clip(&what, limits.tool),
            if p.started_before {
                " (started earlier)"
            } else {
                ""
            }
        );
        for e in &p.external {
            let ex = &log.exchanges[e.exchange];
            let _ = writeln!(
                out,
                "{PAD}{indent}    └ {}  #{:<4} pid {} → {}  {} {} → {}",
                clock(ex.ts()),
                e.seq,
                p.pid,
                log.conn(ex.conn).and_then(|c| c.host()).unwrap_or_default(),
                e.method,
                e.url,
                e.status
                    .map_or_else(|| "no response".into(), |s| s.to_string())
            );
        }
    }
}

/// A UDP `connect()` to port 0 the kernel refused: what getaddrinfo does to learn which
/// source address an address would be reached from. It sends nothing (the kernel refuses a
/// datagram to port 0 before the enclosure's hook sees it, so only a connect is recorded at
/// port 0): a note, not a denial.
/// A governance decision in one line, the same in the timeline and the live view: what was
/// decided, by which rule and on what, and (for a budget) the running total.
fn decision_line(entry: &Entry) -> Option<String> {
    match entry {
        Entry::RequestDecision(d) => {
            // The reason already says the limit and what was spent; a total that may still
            // grow (calls not yet counted when it decided) is said apart.
            let budget = d
                .budget
                .as_ref()
                .filter(|b| b.unsettled > 0)
                .map(|b| format!(" ({} earlier call(s) not yet counted)", b.unsettled))
                .unwrap_or_default();
            let word = match d.action.as_str() {
                "deny" => "DENIED by policy",
                "ask" => "HELD for a person (harness decide)",
                _ => "allowed by policy",
            };
            Some(format!(
                "{word}: conn {} request {}: {}{budget}",
                d.conn, d.exchange, d.reason
            ))
        }
        Entry::RequestDecided(d) => Some(format!(
            "decided: conn {} request {} (ask #{}) {} by {}{}",
            d.conn,
            d.exchange,
            d.ask,
            if d.action == "allow" {
                "allowed"
            } else {
                "DENIED"
            },
            d.by,
            d.why
                .as_deref()
                .map(|w| format!(": {w}"))
                .unwrap_or_default()
        )),
        _ => None,
    }
}

fn is_address_selection(d: &crate::ledger::ConnDenied) -> bool {
    d.by == "kernel" && d.proto == "udp" && d.dst.is_some_and(|a| a.port() == 0)
}

fn address_selection(d: &crate::ledger::ConnDenied) -> String {
    format!(
        "note  {} udp connect() to {} refused (address selection, no data)",
        who(d.caller.map(|c| c.pid)),
        d.dst.map(|a| a.to_string()).unwrap_or_default()
    )
}

/// How many LLM calls were made over WebSockets.
fn websocket_calls(log: &SessionLog) -> usize {
    log.exchanges
        .iter()
        .filter(|x| x.websocket.is_some())
        .count()
}

fn who(pid: Option<u32>) -> String {
    pid.map_or_else(|| "pid ?".into(), |p| format!("pid {p}"))
}

fn status_of(x: &Exchange) -> String {
    match &x.response {
        // harness's own answer (a policy refusal) must not read as the destination's.
        Some(r) if r.head.answered_by.is_some() => format!(
            "{} (answered by {})",
            r.head.status,
            r.head.answered_by.as_deref().unwrap_or_default()
        ),
        Some(r) => r.head.status.to_string(),
        None => "no response".into(),
    }
}

fn header<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .and_then(|h| h.value.as_deref())
}

/// One exchange as a step (an MCP call with the external calls beneath it).
fn exchange(
    out: &mut String,
    log: &SessionLog,
    corr: &Correlation,
    i: usize,
    x: &Exchange,
    limits: Limits,
) {
    let conn = log.conn(x.conn);
    let host = conn.and_then(|c| c.host()).unwrap_or_default();
    if let Some(ws) = &x.websocket {
        // A call over a WebSocket: the upgrade's target, which call of the connection it is,
        // and how its response ended.
        let target = ws
            .upgrade
            .and_then(|u| log.exchanges[u].request.as_ref())
            .map_or("", |r| r.head.target.as_str());
        let ended = match x.note("llm_response") {
            Some(r) => r
                .get("error")
                .filter(|e| !e.is_null())
                .map(|_| "error".to_string())
                .or_else(|| {
                    r.get("stop_reason")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .unwrap_or_else(|| "answered".into()),
            None => "no answer recorded".into(),
        };
        let _ = writeln!(
            out,
            "{}  #{:<4} {} → {host}  WebSocket {target} call {} (conn {}) → {ended}",
            clock(x.ts()),
            x.seq(),
            who(log.pid_of(x)),
            ws.index,
            x.conn,
        );
    }
    let method = x
        .request
        .as_ref()
        .map(|r| r.head.method.as_str())
        .unwrap_or("?");
    let target = x
        .request
        .as_ref()
        .map(|r| r.head.target.as_str())
        .unwrap_or("");
    if x.websocket.is_none() {
        let _ = writeln!(
            out,
            "{}  #{:<4} {} → {host}  {method} {target} → {}",
            clock(x.ts()),
            x.seq(),
            who(log.pid_of(x)),
            status_of(x)
        );
    }
    let mut cut = Vec::new();
    if x.request_body.is_cut_off() {
        cut.push("request");
    }
    if x.response_body.is_cut_off() {
        cut.push("response");
    }
    for side in cut {
        let _ = writeln!(
            out,
            "{PAD}(the {side} stream was cut off: no final chunk recorded)"
        );
    }
    if let Some(req) = x.note("llm_request") {
        llm_request(out, req, limits);
    }
    if let Some(resp) = x.note("llm_response") {
        llm_response(out, resp, limits);
        for chain in corr.chains.iter().filter(|c| c.tool_use.exchange == i) {
            tool_processes(out, log, chain, limits);
        }
    }
    if let Some(req) = x.note("mcp_request") {
        for m in req
            .get("messages")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let method = m.get("method").and_then(Value::as_str).unwrap_or("?");
            if method != "tools/call" {
                let _ = writeln!(out, "{PAD}MCP {method}");
                continue;
            }
            let call = corr
                .calls
                .iter()
                .find(|c| c.exchange == i && Some(&c.id) == m.get("id"));
            let Some(call) = call else { continue };
            let why = corr
                .chain_of_call(call)
                .map(|c| format!("  (model tool call {})", c.tool_use.id))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{PAD}MCP tools/call {} {}{why}",
                call.name,
                clip_json(&call.arguments, limits.tool)
            );
            for e in &call.external {
                let ex = &log.exchanges[e.exchange];
                let _ = writeln!(
                    out,
                    "{PAD}  └ {}  #{:<4} {} → {}  {} {} → {}",
                    clock(ex.ts()),
                    e.seq,
                    who(e.pid),
                    log.conn(ex.conn).and_then(|c| c.host()).unwrap_or_default(),
                    e.method,
                    e.url,
                    e.status
                        .map_or_else(|| "no response".into(), |s| s.to_string())
                );
                if e.ambiguous {
                    let _ = writeln!(
                        out,
                        "{PAD}    (made while other MCP calls were also running: may belong to one of them)"
                    );
                }
            }
            match (&call.result, &call.error) {
                (_, Some(err)) => {
                    let _ = writeln!(out, "{PAD}error: {}", clip_json(err, limits.tool));
                }
                (Some(r), None) => {
                    let text = result_text(r);
                    let mark = if call.is_error {
                        "result (isError)"
                    } else {
                        "result"
                    };
                    let _ = writeln!(out, "{PAD}{mark}: {}", clip(&text, limits.tool));
                }
                (None, None) => {
                    let _ = writeln!(out, "{PAD}result: none recorded");
                }
            }
        }
    }
    // Every parse error, in order: a body that did not decode comes first, then what the
    // parsers made of what did.
    for pe in x
        .notes
        .iter()
        .filter(|n| n.annotation.topic == "parse_error")
        .map(|n| &n.annotation.data)
    {
        let _ = writeln!(
            out,
            "{PAD}(could not parse {} at {}: {})",
            pe.get("what").and_then(Value::as_str).unwrap_or("?"),
            pe.get("where").and_then(Value::as_str).unwrap_or("?"),
            pe.get("error").and_then(Value::as_str).unwrap_or("?")
        );
    }
    if x.note("llm_request").is_none()
        && x.note("llm_response").is_none()
        && x.note("mcp_request").is_none()
    {
        let ctype = x
            .response
            .as_ref()
            .and_then(|r| header(&r.head.headers, "content-type"))
            .unwrap_or("");
        // Sizes as recorded; an encoded body also says its coding and decoded size.
        let http = x.note("http");
        let side = |name: &str, len: u64| {
            let coding = http.and_then(|h| h.get(format!("{name}_encoding")));
            let decoded = http.and_then(|h| h.get(format!("{name}_decoded_bytes")));
            match (
                coding.and_then(Value::as_str),
                decoded.and_then(Value::as_u64),
            ) {
                (Some(c), Some(d)) => format!("{len} bytes {c} ({d} decoded)"),
                _ => count(len as usize, "byte"),
            }
        };
        let _ = writeln!(
            out,
            "{PAD}{} up, {} down{}{}",
            side("request", x.request_body.len()),
            side("response", x.response_body.len()),
            if ctype.is_empty() { "" } else { " · " },
            ctype
        );
    }
}

/// A `websocket.message` (or the decoder's `parse_error`) in a few words: direction, opcode,
/// the text clipped, a binary payload's length and first bytes, a close's code and reason.
pub fn websocket(topic: &str, d: &Value, limits: Limits) -> String {
    let arrow = if d.get("direction").and_then(Value::as_str) == Some("up") {
        "↑"
    } else {
        "↓"
    };
    if topic != "websocket.message" {
        return format!(
            "websocket {arrow} frames not parsed from {} on: {}",
            d.get("where").and_then(Value::as_str).unwrap_or("?"),
            d.get("error").and_then(Value::as_str).unwrap_or("?")
        );
    }
    let op = d.get("opcode").and_then(Value::as_str).unwrap_or("?");
    let wire_len = d.get("len").and_then(Value::as_u64).unwrap_or(0);
    // An inflated permessage-deflate message: its content's length, not the wire's.
    let len = d
        .get("inflated_len")
        .and_then(Value::as_u64)
        .unwrap_or(wire_len);
    let text = d.get("text").and_then(Value::as_str);
    let what = match (op, text) {
        ("close", _) => match d.get("code").and_then(Value::as_u64) {
            Some(code) => format!(
                "{code} \"{}\"",
                clip(
                    d.get("reason").and_then(Value::as_str).unwrap_or(""),
                    limits.text
                )
            ),
            None => "(no status)".into(),
        },
        ("text", Some(t)) => format!("\"{}\"", clip(t, limits.text)),
        _ => {
            use base64::Engine as _;
            let bytes = match text {
                Some(t) => t.as_bytes().to_vec(),
                None => d
                    .get("base64")
                    .and_then(Value::as_str)
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                    .unwrap_or_default(),
            };
            let head: Vec<String> = bytes.iter().take(16).map(|b| format!("{b:02x}")).collect();
            let more = if len > 16 { " …" } else { "" };
            format!(
                "{len} bytes{}{}{more}",
                if head.is_empty() { "" } else { ": " },
                head.join(" ")
            )
        }
    };
    let mut notes = String::new();
    if d.get("compressed").and_then(Value::as_bool) == Some(true) {
        match d.get("inflate_error").and_then(Value::as_str) {
            Some(e) => {
                let _ = write!(notes, " (permessage-deflate, compressed bytes: {e})");
            }
            None => {
                let _ = write!(notes, " (permessage-deflate, {wire_len} bytes on the wire)");
            }
        }
    }
    if d.get("inflated_truncated").and_then(Value::as_bool) == Some(true) {
        let _ = write!(notes, " (inflated message cut; {len} bytes in all)");
    }
    if d.get("truncated").and_then(Value::as_bool) == Some(true) {
        let len = wire_len;
        let _ = write!(notes, " (recorded message cut; {len} bytes in all)");
    }
    format!("websocket {arrow} {op} {what}{notes}")
}

/// Text of an MCP tool result: its text content joined, else its JSON.
fn result_text(r: &Value) -> String {
    let texts: Vec<&str> = r
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("text").and_then(Value::as_str))
        .collect();
    if texts.is_empty() {
        serde_json::to_string(r).unwrap_or_default()
    } else {
        texts.join(" ")
    }
}

fn llm_request(out: &mut String, req: &Value, limits: Limits) {
    let model = req.get("model").and_then(Value::as_str).unwrap_or("?");
    let provider = req.get("provider").and_then(Value::as_str).unwrap_or("?");
    let api = req.get("api").and_then(Value::as_str).unwrap_or("");
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let tools = req
        .get("tools")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let _ = writeln!(
        out,
        "{PAD}model call: {model} ({provider} {api}{}, {} offered)",
        if stream { ", streamed" } else { "" },
        count(tools, "tool")
    );
    // What the model saw that is new: the last turn. Claude Code puts `role: "system"` notes
    // (its environment, reminders) among and after the turns; they are not the turn, and
    // showing one instead would hide the user's prompt or the tool's result.
    let Some(last) = req.get("messages").and_then(Value::as_array).and_then(|m| {
        m.iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) != Some("system"))
            .or(m.last())
    }) else {
        return;
    };
    let role = last.get("role").and_then(Value::as_str).unwrap_or("?");
    for c in content_blocks(last) {
        match c.get("type").and_then(Value::as_str) {
            Some("text") => {
                let t = c.get("text").and_then(Value::as_str).unwrap_or("");
                let _ = writeln!(out, "{PAD}{role}: {}", clip(t, limits.text));
            }
            Some("tool_result") => {
                let id = c.get("tool_use_id").and_then(Value::as_str).unwrap_or("?");
                let content = match c.get("content") {
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => result_text(&serde_json::json!({ "content": v })),
                    None => String::new(),
                };
                let _ = writeln!(
                    out,
                    "{PAD}tool result for {id}: {}",
                    clip(&content, limits.tool)
                );
            }
            _ => {}
        }
    }
}

fn content_blocks(message: &Value) -> Vec<Value> {
    match message.get("content") {
        Some(Value::Array(a)) => a.clone(),
        Some(Value::String(s)) => vec![serde_json::json!({"type": "text", "text": s})],
        _ => Vec::new(),
    }
}

fn llm_response(out: &mut String, resp: &Value, limits: Limits) {
    for t in resp
        .get("thinking")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let text = t.get("text").and_then(Value::as_str).unwrap_or("");
        let _ = writeln!(out, "{PAD}thinking: {}", clip(text, limits.thinking));
    }
    if let Some(n) = resp.get("redacted_thinking").and_then(Value::as_u64) {
        if n > 0 {
            let _ = writeln!(
                out,
                "{PAD}thinking: ({} redacted)",
                count(n as usize, "block")
            );
        }
    }
    for t in resp
        .get("text")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let _ = writeln!(
            out,
            "{PAD}text: {}",
            clip(t.as_str().unwrap_or(""), limits.text)
        );
    }
    for tc in resp
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let _ = writeln!(
            out,
            "{PAD}tool call {} {}  [{}]",
            tc.get("name").and_then(Value::as_str).unwrap_or("?"),
            tool_input(tc, limits.tool),
            tc.get("id").and_then(Value::as_str).unwrap_or("?")
        );
    }
    let usage = resp.get("usage");
    let n = |k: &str| usage.and_then(|u| u.get(k)).and_then(Value::as_u64);
    let mut line = String::new();
    if let Some(t) = super::spend::response_tokens(resp) {
        line = format!("tokens: {t}");
    } else if let (Some(i), Some(o)) = (n("input_tokens"), n("output_tokens")) {
        line = format!("tokens: {i} in, {o} out");
    }
    if let Some(stop) = resp.get("stop_reason").and_then(Value::as_str) {
        if !line.is_empty() {
            line.push_str(" · ");
        }
        line.push_str("stop: ");
        line.push_str(stop);
    }
    if !line.is_empty() {
        let _ = writeln!(out, "{PAD}{line}");
    }
}

/// Renders entries as they arrive (`harness log --follow`): one or a few lines per entry that
/// a person cares about. Keeps what it needs from earlier entries (hosts and pids of
/// connections).
#[derive(Debug, Default)]
pub struct Live {
    conns: std::collections::HashMap<u64, (Option<u32>, String)>,
    limits: Limits,
}

impl Live {
    /// A live renderer with the default limits.
    pub fn new() -> Live {
        Live::default()
    }

    /// The lines for one entry (possibly none).
    pub fn entry(&mut self, item: &super::session::Item) -> String {
        let mut out = String::new();
        let t = clock(&item.ts);
        let seq = item.seq;
        let conn = |c: u64, conns: &std::collections::HashMap<u64, (Option<u32>, String)>| {
            conns
                .get(&c)
                .map(|(p, h)| format!("{} → {h}", who(*p)))
                .unwrap_or_else(|| format!("conn {c}"))
        };
        match &item.entry {
            Entry::SessionOpen(o) => {
                let _ = writeln!(
                    out,
                    "{t}  #{seq:<4} session opened: {}",
                    o.command.join(" ")
                );
            }
            Entry::ConnOpen(o) => {
                let host = o.host.clone().unwrap_or_else(|| o.dst.to_string());
                self.conns.insert(o.conn, (Some(o.caller.pid), host));
            }
            Entry::ProcessExec(x) => {
                let _ = writeln!(
                    out,
                    "{}  #{seq:<4} exec  pid {} (parent {}) {}",
                    clock(&x.at),
                    x.pid,
                    x.ppid,
                    clip(&argv_line(&x.argv, &x.path), 200)
                );
            }
            Entry::ProcessExit(x) => {
                let _ = writeln!(
                    out,
                    "{}  #{seq:<4} exit  pid {} {}",
                    clock(&x.at),
                    x.pid,
                    x.describe().unwrap_or_default()
                );
            }
            Entry::HttpRequest(r) => {
                let _ = writeln!(
                    out,
                    "{t}  #{seq:<4} {}  {} {}",
                    conn(r.conn, &self.conns),
                    r.method,
                    r.target
                );
            }
            Entry::HttpResponse(r) => {
                let _ = writeln!(
                    out,
                    "{t}  #{seq:<4} {}  ← {}{}",
                    conn(r.conn, &self.conns),
                    r.status,
                    r.answered_by
                        .as_deref()
                        .map(|by| format!(" (answered by {by})"))
                        .unwrap_or_default()
                );
            }
            Entry::Annotation(a) => {
                let mut body = String::new();
                match a.topic.as_str() {
                    "llm_request" => llm_request(&mut body, &a.data, self.limits),
                    "llm_response" => llm_response(&mut body, &a.data, self.limits),
                    "mcp_request" => {
                        for m in a
                            .data
                            .get("messages")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                        {
                            let mut line = format!(
                                "{PAD}MCP {}",
                                m.get("method").and_then(Value::as_str).unwrap_or("?")
                            );
                            if let Some(name) = m.get("name").and_then(Value::as_str) {
                                line.push(' ');
                                line.push_str(name);
                            }
                            if let Some(args) = m.get("arguments") {
                                line.push(' ');
                                line.push_str(&clip_json(args, self.limits.tool));
                            }
                            let _ = writeln!(body, "{line}");
                        }
                    }
                    "mcp_response" => {
                        for m in a
                            .data
                            .get("messages")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                        {
                            if let Some(r) = m.get("result") {
                                let _ = writeln!(
                                    body,
                                    "{PAD}MCP result: {}",
                                    clip(&result_text(r), self.limits.tool)
                                );
                            }
                            if let Some(e) = m.get("error") {
                                let _ = writeln!(
                                    body,
                                    "{PAD}MCP error: {}",
                                    clip_json(e, self.limits.tool)
                                );
                            }
                        }
                    }
                    _ if a.by == "websocket" => {
                        let c = a.data.get("conn").and_then(Value::as_u64).unwrap_or(0);
                        let _ = writeln!(
                            body,
                            "{t}  #{:<4} {}  {}",
                            a.of_seq,
                            conn(c, &self.conns),
                            websocket(&a.topic, &a.data, self.limits)
                        );
                    }
                    _ => {}
                }
                out.push_str(&body);
            }
            Entry::StreamChunk(c) if !c.fin => {}
            Entry::StreamChunk(c) => {
                let side = match c.direction {
                    crate::ledger::Direction::Up => "request",
                    crate::ledger::Direction::Down => "response",
                };
                let _ = writeln!(
                    out,
                    "{t}  #{seq:<4} {}  {side} stream complete ({})",
                    conn(c.conn, &self.conns),
                    count(c.index as usize + 1, "chunk")
                );
            }
            Entry::DnsQuery(q) => {
                let _ = writeln!(
                    out,
                    "{t}  #{seq:<4} dns {} {} {}",
                    who(q.caller.map(|c| c.pid)),
                    q.qname,
                    q.qtype
                );
            }
            Entry::DnsAnswer(a) => {
                let _ = writeln!(
                    out,
                    "{t}  #{seq:<4} dns answer {}",
                    if a.answers.is_empty() {
                        a.rcode.clone().unwrap_or_default()
                    } else {
                        a.answers.join(", ")
                    }
                );
            }
            Entry::ConnDenied(d) if is_address_selection(d) => {
                let _ = writeln!(out, "{t}  #{seq:<4} {}", address_selection(d));
            }
            Entry::ConnDenied(d) => {
                let _ = writeln!(
                    out,
                    "{t}  #{seq:<4} DENIED {} {} {} (by {}: {})",
                    who(d.caller.map(|c| c.pid)),
                    d.proto,
                    d.host
                        .clone()
                        .or(d.dst.map(|a| a.to_string()))
                        .unwrap_or_default(),
                    d.by,
                    d.reason
                );
            }
            Entry::TlsFailure(f) => {
                let _ = writeln!(
                    out,
                    "{t}  #{seq:<4} TLS FAILED {}: {}",
                    conn(f.conn, &self.conns),
                    f.reason
                );
            }
            Entry::ConnClose(c) if c.error.is_some() => {
                let _ = writeln!(
                    out,
                    "{t}  #{seq:<4} {} ended: {}",
                    conn(c.conn, &self.conns),
                    c.error.as_deref().unwrap_or_default()
                );
            }
            Entry::Error(e) => {
                let _ = writeln!(out, "{t}  #{seq:<4} ERROR {}: {}", e.context, e.message);
            }
            Entry::RequestDecision(_) | Entry::RequestDecided(_) => {
                if let Some(line) = decision_line(&item.entry) {
                    let _ = writeln!(out, "{t}  #{seq:<4} {line}");
                }
            }
            Entry::PolicyChange(p) => {
                let _ = writeln!(
                    out,
                    "{t}  #{seq:<4} policy changed: {} sha256 {} (was {})",
                    p.origin, p.sha256, p.previous_sha256
                );
            }
            Entry::SessionClose(c) => {
                let _ = writeln!(out, "{t}  #{seq:<4} session closed: {}", c.describe());
            }
            _ => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn escape_sequences_are_shown_not_obeyed() {
        let hostile =
            "text: ok\u{1b}[1A\u{1b}[2K\u{1b}]52;c;cm0gLXJmIH4=\u{7}\u{9b}2J\r\nnext\tline\n";
        let safe = super::terminal_safe(hostile);
        assert_eq!(
            safe,
            "text: ok\\x1b[1A\\x1b[2K\\x1b]52;c;cm0gLXJmIH4=\\x07\\u{9b}2J\\x0d\nnext\tline\n"
        );
        assert!(!safe
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t'));
        assert!(matches!(
            super::terminal_safe("plain\n"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn a_model_call_shows_its_last_turn_not_a_system_note_after_it() {
        // As Claude Code 2.1.328 sends them (annotated): the prompt, then a system message.
        let first = json!({"model": "claude-opus-5-5", "provider": "anthropic", "api": "messages",
            "stream": true, "tools": ["Bash"], "messages": [
                {"role": "user", "content": [{"type": "text", "text": "What is ACME at?"}]},
                {"role": "system", "content": [{"type": "text", "text": "# Environment"}]}]});
        let mut out = String::new();
        llm_request(&mut out, &first, Limits::default());
        assert!(out.contains("user: What is ACME at?"), "{out}");
        assert!(!out.contains("# Environment"), "{out}");
        let after = json!({"model": "m", "provider": "anthropic", "api": "messages", "messages": [
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                "content": "{\"symbol\":\"ACME\"}"}]},
            {"role": "system", "content": [{"type": "text", "text": "reminder"}]}]});
        let mut out = String::new();
        llm_request(&mut out, &after, Limits::default());
        assert!(
            out.contains("tool result for toolu_1: {\"symbol\":\"ACME\"}"),
            "{out}"
        );
        // Only system messages: the last is still shown.
        let only = json!({"model": "m", "messages": [
            {"role": "system", "content": [{"type": "text", "text": "be brief"}]}]});
        let mut out = String::new();
        llm_request(&mut out, &only, Limits::default());
        assert!(out.contains("system: be brief"), "{out}");
    }

    #[test]
    fn websocket_messages_in_a_few_words() {
        let l = Limits::default();
        let text = json!({"direction": "up", "opcode": "text", "len": 7, "text": "héllo\n✓", "truncated": false});
        assert_eq!(
            websocket("websocket.message", &text, l),
            "websocket ↑ text \"héllo ✓\""
        );
        let binary = json!({"direction": "down", "opcode": "binary", "len": 20, "base64": "AAECgP7/", "truncated": true});
        assert_eq!(
            websocket("websocket.message", &binary, l),
            "websocket ↓ binary 20 bytes: 00 01 02 80 fe ff … (recorded message cut; 20 bytes in all)"
        );
        let close = json!({"direction": "up", "opcode": "close", "len": 6, "code": 1000, "reason": "done", "base64": "A+hkb25l"});
        assert_eq!(
            websocket("websocket.message", &close, l),
            "websocket ↑ close 1000 \"done\""
        );
        let ping = json!({"direction": "down", "opcode": "ping", "len": 0, "text": ""});
        assert_eq!(
            websocket("websocket.message", &ping, l),
            "websocket ↓ ping 0 bytes"
        );
        let inflated = json!({"direction": "down", "opcode": "text", "len": 4, "compressed": true, "inflated_len": 2, "text": "Hi", "truncated": false});
        assert_eq!(
            websocket("websocket.message", &inflated, l),
            "websocket ↓ text \"Hi\" (permessage-deflate, 4 bytes on the wire)"
        );
        let not = json!({"direction": "up", "opcode": "binary", "len": 2, "compressed": true, "inflate_error": "corrupt deflate data", "base64": "//8=", "truncated": false});
        assert_eq!(
            websocket("websocket.message", &not, l),
            "websocket ↑ binary 2 bytes: ff ff (permessage-deflate, compressed bytes: corrupt deflate data)"
        );
        let bad = json!({"direction": "down", "where": "byte 12", "error": "reserved opcode 0x3"});
        assert_eq!(
            websocket("parse_error", &bad, l),
            "websocket ↓ frames not parsed from byte 12 on: reserved opcode 0x3"
        );
    }
}
