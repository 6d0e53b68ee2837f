//! `harness stats`: sessions, model calls, tokens and cost across a ledger, in all or by day,
//! model or agent (the program the session ran), read back from the ledger and priced by
//! [`crate::cost`].
#![forbid(unsafe_code)]

use crate::cost::{PriceTable, Tally, Tokens};
use crate::ledger::cli::{EXIT_ERROR, EXIT_NOT_INTACT, EXIT_OK};
use crate::timeline::session::{ts_micros, SessionLog};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The default ledger directory, as `harness run` and `harness daemon` use it.
pub const DEFAULT_LEDGER: &str = "/var/lib/harness/ledger";

/// How `harness stats` groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum By {
    /// The UTC day of each model call (a session: the day it opened).
    Day,
    /// The model (and provider) of each call.
    Model,
    /// The program the session ran (its command's first word, without its directory).
    Agent,
}

/// `harness stats [LEDGER]`.
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// A ledger directory or one session file.
    #[arg(default_value = DEFAULT_LEDGER)]
    pub ledger: PathBuf,
    /// Only model calls (and sessions opened) at or after this time: YYYY-MM-DD (UTC midnight)
    /// or an RFC 3339 time.
    #[arg(long, value_name = "DATE")]
    pub since: Option<String>,
    /// One row per day, model or agent, and the total.
    #[arg(long, value_enum)]
    pub by: Option<By>,
    /// One JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// A pricing table over the built-in one [default: /etc/harness/pricing.toml, if it
    /// exists].
    #[arg(long, value_name = "FILE")]
    pub pricing: Option<PathBuf>,
}

/// One row: the sessions that had a part in it and their calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Row {
    /// Session ids.
    pub sessions: BTreeSet<String>,
    /// Their model calls.
    pub tally: Tally,
    /// Their policy decisions on requests (`request_decision`, `request_decided`).
    pub decisions: Decisions,
}

/// Policy decisions on requests, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decisions {
    /// `request_decision` entries by action (`allow`, `ask`, `deny`).
    pub by_action: BTreeMap<String, u64>,
    /// Denials by rule (`tool[1]`, `budget.usd`…).
    pub denied_by_rule: BTreeMap<String, u64>,
    /// Asks decided, by outcome (`allow`, `deny`; a timeout is a `deny`).
    pub asks_decided: BTreeMap<String, u64>,
}

impl Decisions {
    fn count(&mut self, entry: &crate::ledger::Entry) {
        match entry {
            crate::ledger::Entry::RequestDecision(d) => {
                *self.by_action.entry(d.action.clone()).or_default() += 1;
                if d.action == "deny" {
                    *self.denied_by_rule.entry(d.rule.clone()).or_default() += 1;
                }
            }
            crate::ledger::Entry::RequestDecided(d) => {
                *self.asks_decided.entry(d.action.clone()).or_default() += 1;
            }
            _ => {}
        }
    }

    fn json(&self) -> Value {
        json!({"by_action": self.by_action, "denied_by_rule": self.denied_by_rule,
               "asks_decided": self.asks_decided})
    }

    /// `3 denied (tool[1] 2, budget.usd 1) · 2 held for a person (1 allowed, 1 denied) · 1
    /// allowed by a rule`, or `None` when there were none.
    fn line(&self) -> Option<String> {
        let n = |k: &str| self.by_action.get(k).copied().unwrap_or(0);
        let mut parts = Vec::new();
        if n("deny") > 0 {
            let rules: Vec<String> = self
                .denied_by_rule
                .iter()
                .map(|(r, c)| format!("{r} {c}"))
                .collect();
            parts.push(format!("{} denied ({})", n("deny"), rules.join(", ")));
        }
        if n("ask") > 0 {
            let d = |k: &str| self.asks_decided.get(k).copied().unwrap_or(0);
            parts.push(format!(
                "{} held for a person ({} allowed, {} denied)",
                n("ask"),
                d("allow"),
                d("deny")
            ));
        }
        if n("allow") > 0 {
            parts.push(format!("{} allowed by a rule", n("allow")));
        }
        (!parts.is_empty()).then(|| parts.join(" · "))
    }
}

/// The rows (empty without `by`) and the total.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// By key, in key order.
    pub rows: BTreeMap<String, Row>,
    /// Everything.
    pub total: Row,
}

/// Runs `harness stats`.
pub fn run(args: &StatsArgs) -> i32 {
    match run_inner(args) {
        Ok(()) => EXIT_OK,
        Err((code, e)) => {
            eprintln!("harness: {e}");
            code
        }
    }
}

fn run_inner(args: &StatsArgs) -> Result<(), (i32, String)> {
    let since = match &args.since {
        None => None,
        Some(s) => Some(parse_since(s).ok_or_else(|| {
            (
                EXIT_ERROR,
                format!("--since {s:?}: not a date (YYYY-MM-DD) or an RFC 3339 time"),
            )
        })?),
    };
    let prices =
        PriceTable::load(args.pricing.as_deref()).map_err(|e| (EXIT_ERROR, e.to_string()))?;
    let sessions = crate::timeline::read_sessions(&args.ledger).map_err(|e| {
        let code = match &e {
            crate::timeline::TimelineError::Entry { .. } => EXIT_NOT_INTACT,
            _ => EXIT_ERROR,
        };
        (code, e.to_string())
    })?;
    let stats = gather(&sessions, &prices, since, args.by);
    let text = if args.json {
        let mut v = to_json(&stats, args.by);
        v["ledger"] = json!(args.ledger.display().to_string());
        v["since"] = json!(args.since);
        format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default())
    } else {
        table(&stats, args.by, &args.ledger, args.since.as_deref())
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err((EXIT_ERROR, format!("<stdout>: {e}")))
        }
        _ => Ok(()),
    }
}

/// Microseconds since the epoch of `YYYY-MM-DD` (UTC midnight) or an RFC 3339 time.
pub fn parse_since(s: &str) -> Option<i128> {
    let s = s.trim();
    if s.len() == 10 {
        return ts_micros(&format!("{s}T00:00:00Z"));
    }
    ts_micros(s)
}

/// The agent of a session: its command's program, without the directory.
fn agent(log: &SessionLog) -> String {
    log.open()
        .and_then(|o| o.command.first())
        .map(|c| c.rsplit('/').next().unwrap_or(c).to_string())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "(unknown)".into())
}

/// The sessions' model calls at or after `since` (micros), grouped `by`.
pub fn gather(
    sessions: &[SessionLog],
    prices: &PriceTable,
    since: Option<i128>,
    by: Option<By>,
) -> Stats {
    let mut stats = Stats::default();
    let after = |ts: &str| match since {
        None => true,
        Some(s) => ts_micros(ts).is_some_and(|t| t >= s),
    };
    for log in sessions {
        let opened = log.items.first().map(|i| i.ts.as_str()).unwrap_or("");
        let agent = agent(log);
        let mut any = false;
        for c in crate::timeline::spend::calls(log, prices) {
            let (ts, call) = (c.ts.as_str(), &c.priced);
            if !after(ts) {
                continue;
            }
            any = true;
            let key = match by {
                None => None,
                Some(By::Day) => Some(ts.get(..10).unwrap_or(ts).to_string()),
                Some(By::Agent) => Some(agent.clone()),
                Some(By::Model) => Some(format!(
                    "{} ({})",
                    call.model.as_deref().unwrap_or("(model not named)"),
                    call.provider
                )),
            };
            if let Some(k) = key {
                let row = stats.rows.entry(k).or_default();
                row.sessions.insert(log.id.clone());
                row.tally.add(call);
            }
            stats.total.sessions.insert(log.id.clone());
            stats.total.tally.add(call);
        }
        // Its policy decisions, in the total and in its day's or agent's row.
        for item in &log.items {
            if !matches!(
                item.entry,
                crate::ledger::Entry::RequestDecision(_) | crate::ledger::Entry::RequestDecided(_)
            ) || !after(&item.ts)
            {
                continue;
            }
            any = true;
            stats.total.sessions.insert(log.id.clone());
            stats.total.decisions.count(&item.entry);
            let key = match by {
                Some(By::Day) => Some(item.ts.get(..10).unwrap_or(&item.ts).to_string()),
                Some(By::Agent) => Some(agent.clone()),
                _ => None,
            };
            if let Some(k) = key {
                let row = stats.rows.entry(k).or_default();
                row.sessions.insert(log.id.clone());
                row.decisions.count(&item.entry);
            }
        }
        // A session without model calls still counts, where it has a place.
        if !any && after(opened) {
            stats.total.sessions.insert(log.id.clone());
            let key = match by {
                Some(By::Day) => Some(opened.get(..10).unwrap_or(opened).to_string()),
                Some(By::Agent) => Some(agent.clone()),
                _ => None,
            };
            if let Some(k) = key {
                stats
                    .rows
                    .entry(k)
                    .or_default()
                    .sessions
                    .insert(log.id.clone());
            }
        }
    }
    stats
}

fn tokens_json(t: &Tokens) -> Value {
    json!({
        "input": t.input, "cache_read": t.cache_read, "cache_write_5m": t.cache_write_5m,
        "cache_write_1h": t.cache_write_1h, "output": t.output, "reasoning": t.reasoning,
    })
}

fn row_json(r: &Row) -> Value {
    let t = &r.tally;
    json!({
        "sessions": r.sessions.len(),
        "model_calls": t.calls,
        "tokens": tokens_json(&t.tokens),
        "cost_usd": (t.priced > 0 || t.calls == 0).then(|| t.cost.exact()),
        "cost_complete": t.unpriced_calls() == 0,
        "priced_calls": t.priced,
        "unpriced_calls": t.unpriced_calls(),
        "unpriced": t.unpriced.iter()
            .map(|(why, n)| json!({"reason": why, "calls": n}))
            .collect::<Vec<_>>(),
        "decisions": r.decisions.json(),
    })
}

/// `harness stats --json`.
pub fn to_json(stats: &Stats, by: Option<By>) -> Value {
    let by_name = by.map(|b| match b {
        By::Day => "day",
        By::Model => "model",
        By::Agent => "agent",
    });
    let rows: Vec<Value> = stats
        .rows
        .iter()
        .map(|(k, r)| {
            let mut v = row_json(r);
            v["key"] = json!(k);
            v
        })
        .collect();
    json!({"by": by_name, "rows": rows, "total": row_json(&stats.total)})
}

/// The table a person reads.
pub fn table(stats: &Stats, by: Option<By>, ledger: &Path, since: Option<&str>) -> String {
    let head = match by {
        None => "",
        Some(By::Day) => "day",
        Some(By::Model) => "model",
        Some(By::Agent) => "agent",
    };
    let mut lines: Vec<[String; 10]> = vec![[
        head.to_string(),
        "sessions".into(),
        "calls".into(),
        "input".into(),
        "cache read".into(),
        "cache write 5m".into(),
        "cache write 1h".into(),
        "output".into(),
        "reasoning".into(),
        "cost".into(),
    ]];
    let line = |key: &str, r: &Row| -> [String; 10] {
        let t = &r.tally.tokens;
        [
            key.to_string(),
            r.sessions.len().to_string(),
            r.tally.calls.to_string(),
            t.input.to_string(),
            t.cache_read.to_string(),
            t.cache_write_5m.to_string(),
            t.cache_write_1h.to_string(),
            t.output.to_string(),
            t.reasoning.to_string(),
            if r.tally.calls == 0 {
                "-".into()
            } else {
                crate::timeline::spend::cost_text(&r.tally)
            },
        ]
    };
    for (k, r) in &stats.rows {
        lines.push(line(k, r));
    }
    lines.push(line("total", &stats.total));
    let widths: Vec<usize> = (0..9)
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = format!(
        "harness stats: {}{}\n",
        ledger.display(),
        since.map(|s| format!(" · since {s}")).unwrap_or_default()
    );
    for l in &lines {
        let mut s = format!("{:<w$}", l[0], w = widths[0]);
        for c in 1..9 {
            s.push_str(&format!("  {:>w$}", l[c], w = widths[c]));
        }
        s.push_str("  ");
        s.push_str(&l[9]);
        out.push_str(s.trim_end());
        out.push('\n');
    }
    out.push_str(
        "(input: uncached prompt tokens; output: produced tokens other than reasoning counted apart)\n",
    );
    if let Some(decided) = stats.total.decisions.line() {
        out.push_str(&format!("policy decisions on requests: {decided}\n"));
    }
    crate::timeline::render::terminal_safe(&out).into_owned()
}
