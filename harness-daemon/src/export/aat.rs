//! Agent Audit Trail records (IETF draft-sharif-agent-audit-trail, conformed to revision -04):
//! one JSON object per action, JSON Lines, each line in its RFC 8785 (JCS) form.
//!
//! The records form their own chain, as the draft defines it: `prev_hash` of record N is
//! `hex(SHA-256(JCS(record N-1)))` (records are unsigned, so there is no `signature` to leave
//! out), null for the genesis record, and `parent_record_id` is the `record_id` of record N-1.
//! The genesis is a `lifecycle`/`session_start` record (`record_phase` `concurrent`); a closed
//! session ends in a `lifecycle`/`session_end` record carrying `session_hash`.
//!
//! Every record also names the ledger entry it stands on (`ledger_session`, `ledger_seq`,
//! `ledger_entry_hash`, `ledger_prev`), so it can be checked against the session file, and the
//! session file with `harness verify`. The fields are documented in the README section
//! "Agent Audit Trail (`--format aat`)".
use super::ExportError;
use crate::ledger::{Entry, Hash};
use crate::timeline::correlate::{correlate, Correlation, McpCall};
use crate::timeline::session::{Exchange, Item, SessionLog};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// The draft revision these records follow.
pub const DRAFT: &str = "draft-sharif-agent-audit-trail-04";

/// The mandatory fields of every record (draft Section 3.1).
pub const MANDATORY_FIELDS: [&str; 12] = [
    "record_id",
    "timestamp",
    "agent_id",
    "agent_version",
    "session_id",
    "action_type",
    "action_detail",
    "outcome",
    "trust_level",
    "parent_record_id",
    "prev_hash",
    "record_phase",
];

/// The draft's `action_type` vocabulary (Section 7).
pub const ACTION_TYPES: [&str; 7] = [
    "tool_call",
    "tool_response",
    "decision",
    "delegation",
    "escalation",
    "error",
    "lifecycle",
];

/// The draft's `outcome` vocabulary.
pub const OUTCOMES: [&str; 5] = ["success", "failure", "timeout", "denied", "escalated"];

/// The draft's `record_phase` vocabulary.
pub const RECORD_PHASES: [&str; 3] = ["pre_execution", "post_execution", "concurrent"];

/// `trust_level` of every record: harness identifies the acting process by what the kernel
/// saw, not by a credential the agent presents, so it claims no identity assurance.
pub const TRUST_LEVEL: &str = "L0";

/// `agent_version`: harness observes the agent; it does not know its version.
pub const AGENT_VERSION: &str = "unknown";

/// A record larger than this (in JCS form) has its bulkiest details replaced by their digests
/// (the draft: records SHOULD NOT exceed 64 KB and MUST NOT exceed 256 KB).
const RECORD_SIZE_MAX: usize = 64 * 1024;

/// `hex(SHA-256(bytes))`.
fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The RFC 8785 form of `v`.
fn jcs(v: &Value) -> Result<Vec<u8>, ExportError> {
    Ok(serde_jcs::to_vec(v)?)
}

/// A UUID in the version-4 format, derived from `seed` (the draft asks for UUID v4 identifiers;
/// deriving them keeps the export reproducible: the same session exports byte-for-byte alike).
fn uuid4_from(seed: &str) -> String {
    let d = Sha256::digest(seed.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// One record before it is chained: where it stands in the ledger and what it says.
struct Draft {
    /// The ledger entry the record stands on.
    seq: u64,
    /// Which record of those standing on one entry (an entry may carry several).
    role: String,
    action_type: &'static str,
    record_phase: &'static str,
    outcome: &'static str,
    detail: Value,
    input_hash: Option<String>,
    output_hash: Option<String>,
}

/// The AAT records of one session, in chain order.
pub fn records(log: &SessionLog) -> Result<Vec<Value>, ExportError> {
    Ok(chain(log)?.into_iter().map(|(r, _)| r).collect())
}

/// The AAT records of one session as JSON Lines bytes: each line is the record's JCS form, so
/// `prev_hash` of a line is the SHA-256 of the line before it.
pub fn lines(log: &SessionLog) -> Result<Vec<u8>, ExportError> {
    let mut out = Vec::new();
    for (_, line) in chain(log)? {
        out.extend(line);
        out.push(b'\n');
    }
    Ok(out)
}

/// The session's records with their JCS bytes, chained.
fn chain(log: &SessionLog) -> Result<Vec<(Value, Vec<u8>)>, ExportError> {
    let ids = Ids::new(&log.id);
    let mut drafts = drafts(log, &ids)?;
    drafts.sort_by_key(|d| d.seq);
    let by_seq: HashMap<u64, &Item> = log.items.iter().map(|i| (i.seq, i)).collect();
    let first = log.items.first();
    let starts = drafts.first().is_some_and(|d| d.role == "session_start");
    if !starts {
        if let Some(item) = first {
            // Without its session_open entry a session still needs a genesis (Section 8.1).
            drafts.insert(
                0,
                Draft {
                    seq: item.seq,
                    role: "session_start".into(),
                    action_type: "lifecycle",
                    record_phase: "concurrent",
                    outcome: "success",
                    detail: json!({ "event": "session_start",
                                    "note": "the session file holds no session_open entry" }),
                    input_hash: None,
                    output_hash: None,
                },
            );
        }
    }
    let hostname = log.open().map_or("unknown", |o| o.hostname.as_str());
    let agent_id = format!("urn:harness:{hostname}:{}", log.id);
    let session_id = uuid4_from(&format!("harness-aat session {}", log.id));
    let total = drafts.len();
    let mut out: Vec<(Value, Vec<u8>)> = Vec::with_capacity(total);
    let mut prev: Option<(String, Hash)> = None;
    let mut prev_hashes: Vec<u8> = Vec::new();
    for (n, d) in drafts.into_iter().enumerate() {
        let Some(item) = by_seq.get(&d.seq) else {
            continue;
        };
        let mut detail = d.detail;
        if d.role == "session_end" {
            // Section 8.3: SHA-256 over the raw prev_hash digests of records 1..N, N = this one.
            let mut all = prev_hashes.clone();
            if let Some((_, h)) = &prev {
                all.extend_from_slice(h);
            }
            detail["session_hash"] = json!(sha256_hex(&all));
            detail["record_count"] = json!(total);
        }
        let mut r = json!({
            "record_id": ids.record(d.seq, &d.role),
            "timestamp": item.ts,
            "agent_id": agent_id,
            "agent_version": AGENT_VERSION,
            "session_id": session_id,
            "action_type": d.action_type,
            "action_detail": detail,
            "outcome": d.outcome,
            "trust_level": TRUST_LEVEL,
            "parent_record_id": prev.as_ref().map(|(id, _)| id.clone()),
            "prev_hash": prev.as_ref().map(|(_, h)| hex::encode(h)),
            "record_phase": d.record_phase,
            "sequence_number": n,
            "ledger_session": log.id,
            "ledger_seq": item.seq,
            "ledger_entry_hash": hex::encode(item.hash),
            "ledger_prev": hex::encode(item.prev),
        });
        if let Some(h) = d.input_hash {
            r["input_hash"] = json!(h);
        }
        if let Some(h) = d.output_hash {
            r["output_hash"] = json!(h);
        }
        let line = fit(&mut r)?;
        if let Some((_, h)) = &prev {
            prev_hashes.extend_from_slice(h);
        }
        prev = Some((
            r["record_id"].as_str().unwrap_or_default().to_owned(),
            Sha256::digest(&line).into(),
        ));
        out.push((r, line));
    }
    Ok(out)
}

/// The record's JCS bytes, its bulkiest details replaced by their digests while it is larger
/// than [`RECORD_SIZE_MAX`].
fn fit(r: &mut Value) -> Result<Vec<u8>, ExportError> {
    let mut line = jcs(r)?;
    for key in ["tool_calls", "arguments", "answers", "command", "usage"] {
        if line.len() <= RECORD_SIZE_MAX {
            break;
        }
        let Some(v) = r["action_detail"].get(key).cloned() else {
            continue;
        };
        r["action_detail"][key] = json!({
            "omitted": "record size bound (draft Section 3.3); the ledger holds the value",
            "sha256_jcs": sha256_hex(&jcs(&v)?),
        });
        line = jcs(r)?;
    }
    Ok(line)
}

/// Record identifiers of one session.
struct Ids<'a> {
    session: &'a str,
}

impl<'a> Ids<'a> {
    fn new(session: &'a str) -> Self {
        Ids { session }
    }

    /// The `record_id` of the record with `role` standing on ledger entry `seq`.
    fn record(&self, seq: u64, role: &str) -> String {
        uuid4_from(&format!("harness-aat record {} {seq} {role}", self.session))
    }
}

/// The records of one session, unordered and unchained.
fn drafts(log: &SessionLog, ids: &Ids) -> Result<Vec<Draft>, ExportError> {
    let corr = correlate(log);
    // The record an exchange's request-side record was caused by: an external request's MCP
    // tool call; an MCP tool call's model response (the one that asked for the tool).
    let mut caused_by: HashMap<usize, String> = HashMap::new();
    // Which MCP call of its exchange each call is, for its role.
    let mut call_index: HashMap<u64, usize> = HashMap::new();
    let mut per_exchange: HashMap<usize, usize> = HashMap::new();
    for c in &corr.calls {
        let k = per_exchange.entry(c.exchange).or_default();
        call_index.insert(c.seq, *k);
        *k += 1;
    }
    for call in &corr.calls {
        let k = call_index.get(&call.seq).copied().unwrap_or(0);
        for e in &call.external {
            caused_by
                .entry(e.exchange)
                .or_insert_with(|| ids.record(call.seq, &format!("request:{k}")));
        }
    }
    let mut out = Vec::new();
    let mut done = std::collections::HashSet::new();
    for item in &log.items {
        match &item.entry {
            Entry::SessionOpen(o) => out.push(Draft {
                seq: item.seq,
                role: "session_start".into(),
                action_type: "lifecycle",
                record_phase: "concurrent",
                outcome: "success",
                detail: json!({ "event": "session_start", "command": o.command, "uid": o.uid,
                                "gid": o.gid, "cgroup": o.cgroup, "hostname": o.hostname,
                                "software": o.software, "policy_sha256": o.policy_sha256,
                                "ca_fingerprint": o.ca_fingerprint }),
                input_hash: None,
                output_hash: None,
            }),
            Entry::SessionClose(c) => out.push(Draft {
                seq: item.seq,
                role: "session_end".into(),
                action_type: "lifecycle",
                record_phase: "post_execution",
                outcome: if c.exit_code == Some(0) {
                    "success"
                } else {
                    "failure"
                },
                detail: json!({ "event": "session_end", "exit_code": c.exit_code,
                                "signal": c.signal, "reason": c.reason }),
                input_hash: None,
                output_hash: None,
            }),
            Entry::HttpRequest(_) => {
                let Some(&i) = log.exchange_of_seq.get(&item.seq) else {
                    continue;
                };
                if !done.insert(i) {
                    continue;
                }
                exchange(log, &corr, ids, i, caused_by.get(&i), &mut out)?;
            }
            Entry::DnsQuery(q) => {
                let answer = log.dns.get(&q.exchange).and_then(|d| d.answer.as_ref());
                let question = json!({ "qname": q.qname, "qtype": q.qtype });
                let call_id = ids.record(item.seq, "dns_query");
                out.push(Draft {
                    seq: item.seq,
                    role: "dns_query".into(),
                    action_type: "tool_call",
                    record_phase: "pre_execution",
                    outcome: "success",
                    detail: json!({ "tool_name": "dns", "parameters_hash": sha256_hex(&jcs(&question)?),
                                    "parameters_hash_over": "JCS({qname, qtype})",
                                    "harness_kind": "dns_query",
                                    "qname": q.qname, "qtype": q.qtype, "server": q.server,
                                    "upstream": q.upstream, "pid": q.caller.map(|c| c.pid),
                                    "dns_exchange": q.exchange }),
                    input_hash: None,
                    output_hash: None,
                });
                if let Some(a) = answer {
                    let rcode = a.head.rcode.clone();
                    out.push(Draft {
                        seq: a.seq,
                        role: "dns_answer".into(),
                        action_type: "tool_response",
                        record_phase: "post_execution",
                        outcome: if rcode.as_deref() == Some("NOERROR") {
                            "success"
                        } else {
                            "failure"
                        },
                        detail: json!({ "tool_name": "dns",
                                        "response_hash": sha256_hex(&jcs(&json!(a.head.answers))?),
                                        "response_hash_over": "JCS(answers)",
                                        "parent_call_id": call_id, "harness_kind": "dns_answer",
                                        "rcode": rcode, "answers": a.head.answers,
                                        "error": a.head.error, "dns_exchange": q.exchange }),
                        input_hash: None,
                        output_hash: None,
                    });
                }
            }
            Entry::ConnDenied(d) => out.push(Draft {
                seq: item.seq,
                role: "conn_denied".into(),
                action_type: "decision",
                record_phase: "pre_execution",
                outcome: "denied",
                detail: json!({ "decision_type": "deny_connection", "harness_kind": "conn_denied",
                                "proto": d.proto, "dst": d.dst, "host": d.host, "by": d.by,
                                "reason": d.reason, "rule": d.rule, "conn": d.conn,
                                "pid": d.caller.map(|c| c.pid) }),
                input_hash: None,
                output_hash: None,
            }),
            Entry::TlsFailure(t) => out.push(Draft {
                seq: item.seq,
                role: "tls_failure".into(),
                action_type: "error",
                record_phase: "post_execution",
                outcome: "failure",
                detail: json!({ "error_code": "tls_failure", "error_message": t.reason,
                                "error_category": "transport", "recoverable": false,
                                "harness_kind": "tls_failure", "conn": t.conn, "side": t.side,
                                "sni": t.sni,
                                "pid": log.conn(t.conn).and_then(|c| c.pid()) }),
                input_hash: None,
                output_hash: None,
            }),
            Entry::Error(e) => out.push(Draft {
                seq: item.seq,
                role: "error".into(),
                action_type: "error",
                record_phase: "post_execution",
                outcome: "failure",
                detail: json!({ "error_code": "harness_error", "error_message": e.message,
                                "error_category": "internal", "recoverable": false,
                                "harness_kind": "error", "conn": e.conn, "context": e.context,
                                "pid": e.conn.and_then(|c| log.conn(c)).and_then(|c| c.pid()) }),
                input_hash: None,
                output_hash: None,
            }),
            _ => {}
        }
    }
    Ok(out)
}

/// The records of one HTTP exchange: a `tool_call` standing on the request (recorded before it
/// was forwarded: `pre_execution`) and, when a response was recorded, a `tool_response` standing
/// on it (`post_execution`). An exchange carrying MCP `tools/call`s gets one pair per call.
fn exchange(
    log: &SessionLog,
    corr: &Correlation,
    ids: &Ids,
    i: usize,
    caused_by: Option<&String>,
    out: &mut Vec<Draft>,
) -> Result<(), ExportError> {
    let x = &log.exchanges[i];
    let Some(req) = &x.request else {
        return Ok(());
    };
    let conn = log.conn(x.conn);
    let host = conn.and_then(|c| c.host());
    let request_body = x.request_body.bytes(&log.dir)?;
    let response_body = x.response_body.bytes(&log.dir)?;
    let input_hash = sha256_hex(&request_body);
    let output_hash = sha256_hex(&response_body);
    let status = x.response.as_ref().map(|r| r.head.status);
    let cut_off = x.response_body.is_cut_off() || x.request_body.is_cut_off();
    let ok = status.is_some_and(|s| s < 400) && !cut_off;
    let denied = denial_of(log, x, req.seq);
    let ledger = json!({ "conn": x.conn, "exchange": x.exchange, "request_seq": req.seq,
                         "response_seq": x.response.as_ref().map(|r| r.seq),
                         "last_seq": x.last_seq });
    let mut call_detail = json!({
        "method": req.head.method,
        "url": x.url(conn),
        "host": host,
        "pid": log.pid_of(x),
        "request_bytes": x.request_body.len(),
        "ledger": ledger,
    });
    let mut resp_detail = json!({
        "status": status,
        "response_bytes": x.response_body.len(),
        "streamed": x.response_body.is_streamed(),
        "cut_off": cut_off,
        "ledger": ledger,
    });
    if let Some(c) = caused_by {
        call_detail["caused_by_record_id"] = json!(c);
    }
    let calls: Vec<&McpCall> = corr.calls.iter().filter(|c| c.exchange == i).collect();
    let llm = x.note("llm_response").or(x.note("llm_request"));
    let mut pairs: Vec<Call> = Vec::new();
    if let Some(resp) = llm {
        let note_req = x.note("llm_request");
        let pick = |k: &str| {
            resp.get(k)
                .or(note_req.and_then(|r| r.get(k)))
                .cloned()
                .unwrap_or(Value::Null)
        };
        let (provider, api, model) = (pick("provider"), pick("api"), pick("model"));
        let name = format!(
            "llm:{}:{}",
            provider.as_str().unwrap_or("unknown"),
            api.as_str().unwrap_or("unknown")
        );
        call_detail["provider"] = provider;
        call_detail["api"] = api;
        call_detail["model"] = model;
        if let Some(r) = x.note("llm_response") {
            resp_detail["response_id"] = r.get("id").cloned().unwrap_or(Value::Null);
            resp_detail["stop_reason"] = r.get("stop_reason").cloned().unwrap_or(Value::Null);
            resp_detail["usage"] = r.get("usage").cloned().unwrap_or(Value::Null);
            resp_detail["tool_calls"] = r.get("tool_calls").cloned().unwrap_or(json!([]));
        }
        pairs.push(Call {
            index: "0".into(),
            name,
            kind: "llm_call",
            params: input_hash.clone(),
            over: "the exact request body",
            extra: Map::new(),
            failed: false,
        });
    } else if !calls.is_empty() {
        for (k, c) in calls.iter().enumerate() {
            let mut extra = Map::new();
            extra.insert("jsonrpc_id".into(), c.id.clone());
            extra.insert("arguments".into(), c.arguments.clone());
            extra.insert(
                "tool_use_id".into(),
                json!(corr.chain_of_call(c).map(|ch| ch.tool_use.id.clone())),
            );
            if let Some(ch) = corr.chain_of_call(c) {
                let model = &log.exchanges[ch.tool_use.exchange];
                if let Some(r) = &model.response {
                    extra.insert(
                        "caused_by_record_id".into(),
                        json!(ids.record(r.seq, "response:0")),
                    );
                }
            }
            extra.insert(
                "external_seqs".into(),
                json!(c.external.iter().map(|e| e.seq).collect::<Vec<_>>()),
            );
            pairs.push(Call {
                index: k.to_string(),
                name: c.name.clone(),
                kind: "mcp_tools_call",
                params: sha256_hex(&jcs(&c.arguments)?),
                over: "JCS(arguments)",
                extra,
                failed: c.is_error,
            });
        }
    } else if let Some(note) = x.note("mcp_request") {
        let methods: Vec<Value> = note
            .get("messages")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|m| m.get("method").cloned())
            .collect();
        let name = methods
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(",");
        let mut extra = Map::new();
        extra.insert("mcp_methods".into(), json!(methods));
        pairs.push(Call {
            index: "0".into(),
            name: format!("mcp:{name}"),
            kind: "mcp_message",
            params: input_hash.clone(),
            over: "the exact request body",
            extra,
            failed: false,
        });
    } else {
        pairs.push(Call {
            index: "0".into(),
            name: format!("http:{}", host.as_deref().unwrap_or("unknown")),
            kind: "http_request",
            params: input_hash.clone(),
            over: "the exact request body",
            extra: Map::new(),
            failed: false,
        });
    }
    for Call {
        index: k,
        name,
        kind,
        params,
        over,
        extra,
        failed,
    } in pairs
    {
        let mut detail = call_detail.clone();
        detail["tool_name"] = json!(name);
        detail["parameters_hash"] = json!(params);
        detail["parameters_hash_over"] = json!(over);
        detail["harness_kind"] = json!(kind);
        for (key, v) in extra {
            detail[key] = v;
        }
        let call_role = format!("request:{k}");
        out.push(Draft {
            seq: req.seq,
            role: call_role.clone(),
            action_type: "tool_call",
            record_phase: "pre_execution",
            outcome: if denied { "denied" } else { "success" },
            detail,
            input_hash: Some(input_hash.clone()),
            output_hash: None,
        });
        let Some(resp) = &x.response else {
            continue;
        };
        let mut detail = resp_detail.clone();
        detail["tool_name"] = json!(name);
        detail["response_hash"] = json!(output_hash);
        detail["response_hash_over"] = json!("the exact response body");
        detail["parent_call_id"] = json!(ids.record(req.seq, &call_role));
        detail["harness_kind"] = json!(kind);
        if kind == "mcp_tools_call" {
            detail["is_error"] = json!(failed);
        }
        out.push(Draft {
            seq: resp.seq,
            role: format!("response:{k}"),
            action_type: "tool_response",
            record_phase: "post_execution",
            outcome: if ok && !failed { "success" } else { "failure" },
            detail,
            input_hash: None,
            output_hash: Some(output_hash.clone()),
        });
    }
    Ok(())
}

/// One call an exchange carries, before it becomes a `tool_call`/`tool_response` pair.
struct Call {
    /// Which call of the exchange (for the record roles).
    index: String,
    /// `tool_name`.
    name: String,
    /// What harness saw it as (`llm_call`, `mcp_tools_call`, `mcp_message`, `http_request`).
    kind: &'static str,
    /// `parameters_hash`.
    params: String,
    /// What `parameters_hash` is over.
    over: &'static str,
    /// More details of the call.
    extra: Map<String, Value>,
    /// Whether the call itself failed (an MCP tool error).
    failed: bool,
}

/// Whether the policy refused the exchange's request before forwarding it (its head is followed
/// by an HTTP `conn_denied` for the same connection).
fn denial_of(log: &SessionLog, x: &Exchange, request_seq: u64) -> bool {
    log.items.iter().any(|item| {
        item.seq == request_seq + 1
            && matches!(&item.entry, Entry::ConnDenied(d)
                if d.proto == "http" && d.conn == Some(x.conn))
    })
}
