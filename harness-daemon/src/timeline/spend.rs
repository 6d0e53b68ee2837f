//! Tokens and cost in the timeline: one line per model call, and the session's totals by
//! model at the end. The pricing itself is [`crate::cost`]'s; this only says it.
use super::session::SessionLog;
use crate::cost::{PriceTable, PricedCall, Tally, Tokens};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;

const PAD: &str = "               ";

/// One model call of a session, priced.
#[derive(Debug, Clone)]
pub struct Call {
    /// The exchange (index in [`SessionLog::exchanges`]), or `None` for an answer annotated
    /// outside any exchange (a Responses API call over a WebSocket).
    pub exchange: Option<usize>,
    /// When it was made: the request's `ts`, else the annotation's.
    pub ts: String,
    /// Its tokens and cost.
    pub priced: PricedCall,
}

/// Every model call of a session, priced, in the order recorded: the `llm_response` of each
/// exchange (with its `llm_request` for the model when the answer names none), and those
/// annotated outside any exchange.
pub fn calls(log: &SessionLog, prices: &PriceTable) -> Vec<Call> {
    let mut out: Vec<(u64, Call)> = Vec::new();
    for (i, x) in log.exchanges.iter().enumerate() {
        if let Some(resp) = x.note("llm_response") {
            let priced = prices.price_call(resp, x.note("llm_request"));
            let ts = x.ts().to_owned();
            out.push((
                x.seq(),
                Call {
                    exchange: Some(i),
                    ts,
                    priced,
                },
            ));
        }
    }
    for n in &log.other_notes {
        if n.annotation.topic == "llm_response" {
            let priced = prices.price_call(&n.annotation.data, None);
            let ts = log.item(n.seq).map(|i| i.ts.clone()).unwrap_or_default();
            out.push((
                n.seq,
                Call {
                    exchange: None,
                    ts,
                    priced,
                },
            ));
        }
    }
    out.sort_by_key(|(seq, _)| *seq);
    out.into_iter().map(|(_, c)| c).collect()
}

/// `1200 in (128 cache read, 2000 cache write 5m), 301 out (64 reasoning)`: every prompt token
/// and every produced token, with the kinds billed apart in brackets.
pub fn tokens_text(t: &Tokens) -> String {
    let mut prompt = Vec::new();
    for (n, what) in [
        (t.cache_read, "cache read"),
        (t.cache_write_5m, "cache write 5m"),
        (t.cache_write_1h, "cache write 1h"),
    ] {
        if n > 0 {
            prompt.push(format!("{n} {what}"));
        }
    }
    let mut s = format!("{} in", t.prompt());
    if !prompt.is_empty() {
        let _ = write!(s, " ({})", prompt.join(", "));
    }
    let _ = write!(s, ", {} out", t.completion());
    if t.reasoning > 0 {
        let _ = write!(s, " ({} reasoning)", t.reasoning);
    }
    s
}

/// The `tokens:` of an `llm_response`, when its usage is one whose counting is known.
pub fn response_tokens(resp: &Value) -> Option<String> {
    let provider = resp.get("provider").and_then(Value::as_str)?;
    Tokens::from_usage(provider, resp.get("usage")?).map(|t| tokens_text(&t))
}

/// The line under a model call: `cost: $0.002073`, or why there is no price.
pub fn call_line(out: &mut String, call: &PricedCall) {
    match (&call.cost, call.why_unpriced()) {
        (Ok(c), _) if call.tokens.is_none() => {
            let _ = writeln!(out, "{PAD}cost: {c} (an error answer, no usage)");
        }
        (Ok(c), _) => {
            let _ = writeln!(out, "{PAD}cost: {c}");
        }
        (Err(_), why) => {
            let _ = writeln!(
                out,
                "{PAD}cost: unknown price ({})",
                why.unwrap_or_default()
            );
        }
    }
}

/// What a tally cost: `$0.012345`, `$0.012345 for 2 of 3 calls (1 at unknown price: …)`,
/// `unknown price (…)`.
pub fn cost_text(t: &Tally) -> String {
    let why = || {
        t.unpriced
            .iter()
            .map(|(why, n)| {
                if *n == 1 {
                    why.clone()
                } else {
                    format!("{why} ×{n}")
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    match (t.priced, t.unpriced_calls()) {
        (_, 0) => t.cost.to_string(),
        (0, _) => format!("unknown price ({})", why()),
        (p, u) => format!(
            "{} for {p} of {} calls, {u} at unknown price ({})",
            t.cost,
            t.calls,
            why()
        ),
    }
}

/// The session's totals: all model calls, then one line per model.
pub fn totals(out: &mut String, calls: &[Call]) {
    if calls.is_empty() {
        return;
    }
    let mut all = Tally::default();
    let mut by_model: BTreeMap<String, Tally> = BTreeMap::new();
    for c in calls.iter().map(|c| &c.priced) {
        all.add(c);
        let model = c
            .model
            .clone()
            .unwrap_or_else(|| "(model not named)".into());
        by_model
            .entry(format!("{model} ({})", c.provider))
            .or_default()
            .add(c);
    }
    let _ = writeln!(
        out,
        "{PAD}cost: {} · {} · tokens {}",
        cost_text(&all),
        super::render::count(all.calls as usize, "model call"),
        tokens_text(&all.tokens)
    );
    for (model, t) in &by_model {
        let _ = writeln!(
            out,
            "{PAD}  {model}: {} · tokens {} · {}",
            super::render::count(t.calls as usize, "call"),
            tokens_text(&t.tokens),
            cost_text(t)
        );
    }
}
