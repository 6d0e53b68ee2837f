//! Records in the shape of the IETF Agent Audit Trail draft (draft-sharif-agent-audit-trail):
//! one JSON object per action, JSON Lines. Each record is anchored on one ledger entry (`seq`)
//! and carries that entry's chain link (`prev_hash`) and hash (`entry_hash`), so the records
//! can be checked against the ledger and the ledger with `harness verify`. The fields are
//! documented in `README-section.md` beside this file.
use super::ExportError;
use crate::ledger::Entry;
use crate::timeline::correlate::{correlate, Correlation};
use crate::timeline::session::{Exchange, Item, SessionLog};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// `trust_level` of every record: harness identifies the acting process by what the kernel
/// saw, not by a credential the agent presents, so it claims no identity assurance.
pub const TRUST_LEVEL: &str = "L0";

/// The AAT records of one session, in ledger order.
pub fn records(log: &SessionLog) -> Result<Vec<Value>, ExportError> {
    let corr = correlate(log);
    let record_id = |seq: u64| format!("{}:{seq}", log.id);
    // Which record each exchange's record hangs under.
    let mut parent: HashMap<usize, u64> = HashMap::new();
    for call in &corr.calls {
        for e in &call.external {
            parent.insert(e.exchange, call.seq);
        }
        if let Some(chain) = corr.chain_of_call(call) {
            let model = &log.exchanges[chain.tool_use.exchange];
            parent.entry(call.exchange).or_insert(model.seq());
        }
    }
    let open = log.open();
    let hostname = open.map_or("unknown", |o| o.hostname.as_str());
    let agent_id = |pid: Option<u32>| match pid {
        Some(p) => format!("urn:harness:{hostname}:{}:pid:{p}", log.id),
        None => format!("urn:harness:{hostname}:{}", log.id),
    };
    let mut out = Vec::new();
    let mut push = |item: &Item,
                    pid: Option<u32>,
                    action_type: &str,
                    detail: Value,
                    outcome: &str,
                    parent_seq: Option<u64>,
                    extra: Option<(String, String)>| {
        let mut r = json!({
            "record_id": record_id(item.seq),
            "timestamp": item.ts,
            "agent_id": agent_id(pid),
            "agent_version": "unknown",
            "session_id": log.id,
            "action_type": action_type,
            "action_detail": detail,
            "outcome": outcome,
            "trust_level": TRUST_LEVEL,
            "parent_record_id": parent_seq.map(record_id),
            "prev_hash": hex::encode(item.prev),
            "entry_hash": hex::encode(item.hash),
            "seq": item.seq,
        });
        if let Some((input, output)) = extra {
            r["input_hash"] = json!(input);
            r["output_hash"] = json!(output);
        }
        out.push(r);
    };
    let mut done = std::collections::HashSet::new();
    for item in &log.items {
        match &item.entry {
            Entry::SessionOpen(o) => push(
                item,
                None,
                "session_start",
                json!({ "command": o.command, "uid": o.uid, "gid": o.gid, "cgroup": o.cgroup,
                        "hostname": o.hostname, "software": o.software,
                        "policy_sha256": o.policy_sha256, "ca_fingerprint": o.ca_fingerprint }),
                "success",
                None,
                None,
            ),
            Entry::SessionClose(c) => push(
                item,
                None,
                "session_end",
                json!({ "exit_code": c.exit_code, "signal": c.signal }),
                if c.exit_code == Some(0) {
                    "success"
                } else {
                    "failure"
                },
                None,
                None,
            ),
            Entry::HttpRequest(_) => {
                let Some(&i) = log.exchange_of_seq.get(&item.seq) else {
                    continue;
                };
                if !done.insert(i) {
                    continue;
                }
                let x = &log.exchanges[i];
                let (action_type, detail, outcome) = exchange(log, &corr, i, x);
                let hashes = (
                    format!(
                        "sha256:{}",
                        hex::encode(Sha256::digest(x.request_body.bytes(&log.dir)?))
                    ),
                    format!(
                        "sha256:{}",
                        hex::encode(Sha256::digest(x.response_body.bytes(&log.dir)?))
                    ),
                );
                push(
                    item,
                    log.pid_of(x),
                    action_type,
                    detail,
                    outcome,
                    parent.get(&i).copied(),
                    Some(hashes),
                );
            }
            Entry::DnsQuery(q) => {
                let answer = log.dns.get(&q.exchange).and_then(|d| d.answer.as_ref());
                let rcode = answer.and_then(|a| a.head.rcode.clone());
                push(
                    item,
                    q.caller.map(|c| c.pid),
                    "dns_query",
                    json!({ "qname": q.qname, "qtype": q.qtype, "server": q.server,
                            "upstream": q.upstream, "rcode": rcode,
                            "answers": answer.map(|a| a.head.answers.clone()).unwrap_or_default(),
                            "answer_seq": answer.map(|a| a.seq),
                            "error": answer.and_then(|a| a.head.error.clone()) }),
                    if rcode.as_deref() == Some("NOERROR") {
                        "success"
                    } else {
                        "failure"
                    },
                    None,
                    None,
                );
            }
            Entry::ConnDenied(d) => push(
                item,
                d.caller.map(|c| c.pid),
                "connection_denied",
                json!({ "proto": d.proto, "dst": d.dst, "host": d.host, "by": d.by,
                        "reason": d.reason, "rule": d.rule, "conn": d.conn }),
                "denied",
                None,
                None,
            ),
            Entry::TlsFailure(t) => push(
                item,
                log.conn(t.conn).and_then(|c| c.pid()),
                "tls_failure",
                json!({ "conn": t.conn, "side": t.side, "sni": t.sni, "reason": t.reason }),
                "failure",
                None,
                None,
            ),
            Entry::Error(e) => push(
                item,
                e.conn.and_then(|c| log.conn(c)).and_then(|c| c.pid()),
                "error",
                json!({ "conn": e.conn, "context": e.context, "message": e.message }),
                "failure",
                None,
                None,
            ),
            _ => {}
        }
    }
    Ok(out)
}

/// Action type, detail and outcome of one HTTP exchange.
fn exchange(
    log: &SessionLog,
    corr: &Correlation,
    i: usize,
    x: &Exchange,
) -> (&'static str, Value, &'static str) {
    let conn = log.conn(x.conn);
    let status = x.response.as_ref().map(|r| r.head.status);
    let ok = status.is_some_and(|s| s < 400)
        && !x.response_body.is_cut_off()
        && !x.request_body.is_cut_off();
    let mut detail = json!({
        "method": x.request.as_ref().map(|r| r.head.method.clone()),
        "url": x.url(conn),
        "status": status,
        "host": conn.and_then(|c| c.host()),
        "pid": log.pid_of(x),
        "request_bytes": x.request_body.len(),
        "response_bytes": x.response_body.len(),
        "streamed": x.response_body.is_streamed(),
        "cut_off": x.response_body.is_cut_off() || x.request_body.is_cut_off(),
        "ledger": { "conn": x.conn, "exchange": x.exchange,
                    "request_seq": x.request.as_ref().map(|r| r.seq),
                    "response_seq": x.response.as_ref().map(|r| r.seq),
                    "last_seq": x.last_seq },
    });
    let outcome = |ok: bool| if ok { "success" } else { "failure" };
    if let Some(resp) = x.note("llm_response").or(x.note("llm_request")) {
        let req = x.note("llm_request");
        let pick = |k: &str| resp.get(k).or(req.and_then(|r| r.get(k))).cloned();
        detail["provider"] = pick("provider").unwrap_or(Value::Null);
        detail["api"] = pick("api").unwrap_or(Value::Null);
        detail["model"] = pick("model").unwrap_or(Value::Null);
        if let Some(r) = x.note("llm_response") {
            detail["response_id"] = r.get("id").cloned().unwrap_or(Value::Null);
            detail["stop_reason"] = r.get("stop_reason").cloned().unwrap_or(Value::Null);
            detail["usage"] = r.get("usage").cloned().unwrap_or(Value::Null);
            detail["tool_calls"] = r.get("tool_calls").cloned().unwrap_or(json!([]));
        }
        return ("llm_call", detail, outcome(ok));
    }
    let calls: Vec<_> = corr.calls.iter().filter(|c| c.exchange == i).collect();
    if !calls.is_empty() {
        detail["tool_calls"] = json!(calls
            .iter()
            .map(|c| json!({
                "jsonrpc_id": c.id, "name": c.name, "arguments": c.arguments,
                "is_error": c.is_error,
                "tool_use_id": corr.chain_of_call(c).map(|ch| ch.tool_use.id.clone()),
                "external_seqs": c.external.iter().map(|e| e.seq).collect::<Vec<_>>(),
            }))
            .collect::<Vec<_>>());
        let failed = calls.iter().any(|c| c.is_error);
        return ("tool_call", detail, outcome(ok && !failed));
    }
    if let Some(req) = x.note("mcp_request") {
        detail["mcp_methods"] = json!(req
            .get("messages")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|m| m.get("method").cloned())
            .collect::<Vec<_>>());
        return ("mcp_message", detail, outcome(ok));
    }
    ("http_request", detail, outcome(ok))
}
