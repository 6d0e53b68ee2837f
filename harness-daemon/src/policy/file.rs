//! The policy file's TOML shape and its validation into [`Rule`]s.
//!
//! serde reads the file into loose `Raw*` structs (`deny_unknown_fields`, so a typo such as
//! `hosts =` is an error rather than a silently ignored rule), keeping each value's position
//! (`Spanned`) so that a rule that is valid TOML but meaningless is reported with its line,
//! column and rule number.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use crate::limits::Limits;

use super::request::{
    normalize_path, Budget, Condition, Glob, HttpRule, ModelRule, Op, RequestRules, ToolRule, Verb,
};
use super::{normalize_host, Action, HostPattern, PolicyError, Rule, Target};

/// The file as TOML sees it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    default: Option<Spanned<String>>,
    #[serde(default, rename = "rule")]
    rules: Vec<RawRule>,
    limits: Option<RawLimits>,
    on_unparsable: Option<Spanned<String>>,
    ask_timeout_seconds: Option<Spanned<i64>>,
    #[serde(default)]
    tool: Vec<Spanned<RawTool>>,
    #[serde(default)]
    http: Vec<Spanned<RawHttp>>,
    #[serde(default)]
    model: Vec<Spanned<RawModel>>,
    budget: Option<RawBudget>,
}

/// `[[tool]]` as TOML sees it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTool {
    action: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    server: Option<Spanned<String>>,
    args: Option<BTreeMap<String, Spanned<RawCondition>>>,
}

/// `[[http]]` as TOML sees it; `method` is one word or a list.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    action: Option<Spanned<String>>,
    method: Option<Spanned<toml::Value>>,
    host: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    body: Option<BTreeMap<String, Spanned<RawCondition>>>,
}

/// `[[model]]` as TOML sees it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    action: Option<Spanned<String>>,
    model: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
}

/// `[budget]` as TOML sees it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    usd: Option<Spanned<toml::Value>>,
    tokens: Option<Spanned<i64>>,
    requests_per_minute: Option<BTreeMap<String, Spanned<i64>>>,
}

/// One condition table (`{ gt = 100 }`) as TOML sees it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    eq: Option<toml::Value>,
    ne: Option<toml::Value>,
    lt: Option<toml::Value>,
    le: Option<toml::Value>,
    gt: Option<toml::Value>,
    ge: Option<toml::Value>,
    #[serde(rename = "in")]
    any_of: Option<Vec<toml::Value>>,
    matches: Option<String>,
    exists: Option<bool>,
}

/// `[limits]` as TOML sees it: whole seconds and a count, each optional (default otherwise).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    connect_seconds: Option<Spanned<i64>>,
    handshake_seconds: Option<Spanned<i64>>,
    request_head_seconds: Option<Spanned<i64>>,
    idle_seconds: Option<Spanned<i64>>,
    connections: Option<Spanned<i64>>,
}

/// The longest timeout a policy may set (a week): beyond that, a limit protects nothing.
const MAX_SECONDS: i64 = 7 * 24 * 3600;

/// One `[[rule]]` as TOML sees it; every field optional so that a missing one is reported
/// with the rule's number rather than as a bare TOML error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    action: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
    cidr: Option<Spanned<String>>,
    ports: Option<Vec<Spanned<i64>>>,
}

/// 1-based line and column of a byte offset, for error messages an editor can jump to.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    // Back off to a char boundary so slicing cannot panic on odd spans.
    let offset = (0..=offset)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// What a policy file says.
pub(super) struct Parsed {
    pub default: Action,
    pub rules: Vec<Rule>,
    pub limits: Limits,
    pub requests: RequestRules,
}

/// Parse and validate policy text into its default, rules and limits.
pub(super) fn parse(text: &str, origin: &str) -> Result<Parsed, PolicyError> {
    let at = |offset: usize| Some(line_column(text, offset));
    let raw: RawPolicy = toml::from_str(text).map_err(|e| PolicyError::Syntax {
        origin: origin.to_owned(),
        location: e.span().and_then(|span| at(span.start)),
        // toml's message is one line in practice; make sure, since errors must be.
        message: e.message().trim().replace('\n', "; "),
    })?;

    let default = match &raw.default {
        None => Action::Allow,
        Some(value) => parse_action(value.get_ref()).map_err(|reason| PolicyError::Syntax {
            origin: origin.to_owned(),
            location: at(value.span().start),
            message: format!("default {reason}"),
        })?,
    };

    let requests = parse_requests(&raw, text, origin)?;
    let mut rules = Vec::with_capacity(raw.rules.len());
    for (index, raw_rule) in raw.rules.into_iter().enumerate() {
        let fail = |location: Option<usize>, reason: String| PolicyError::Rule {
            origin: origin.to_owned(),
            rule: index + 1,
            location: location.and_then(at),
            reason,
        };
        let action = match &raw_rule.action {
            None => {
                return Err(fail(
                    None,
                    "missing `action` (\"allow\" or \"deny\")".to_owned(),
                ))
            }
            Some(value) => parse_action(value.get_ref())
                .map_err(|reason| fail(Some(value.span().start), format!("action {reason}")))?,
        };
        let target = match (&raw_rule.host, &raw_rule.cidr) {
            (Some(_), Some(cidr)) => {
                return Err(fail(
                    Some(cidr.span().start),
                    "has both `host` and `cidr`; write two rules".to_owned(),
                ))
            }
            (None, None) => {
                return Err(fail(
                    None,
                    "needs one of `host` (a name) or `cidr` (an address range)".to_owned(),
                ))
            }
            (Some(host), None) => Target::Host(
                parse_host(host.get_ref())
                    .map_err(|reason| fail(Some(host.span().start), reason))?,
            ),
            (None, Some(cidr)) => Target::Cidr(
                parse_cidr(cidr.get_ref())
                    .map_err(|reason| fail(Some(cidr.span().start), reason))?,
            ),
        };
        let mut ports = Vec::new();
        for port in raw_rule.ports.iter().flatten() {
            let value = *port.get_ref();
            let port_number = match value {
                0 => {
                    return Err(fail(
                        Some(port.span().start),
                        "port 0 is not a port; leave `ports` out to mean any port".to_owned(),
                    ))
                }
                1..=65535 => value as u16,
                _ => {
                    return Err(fail(
                        Some(port.span().start),
                        format!("port {value} is out of range 1-65535"),
                    ))
                }
            };
            if !ports.contains(&port_number) {
                ports.push(port_number);
            }
        }
        rules.push(Rule {
            action,
            target,
            ports,
        });
    }
    let limits = match &raw.limits {
        None => Limits::default(),
        Some(raw_limits) => {
            parse_limits(raw_limits).map_err(|(offset, message)| PolicyError::Syntax {
                origin: origin.to_owned(),
                location: at(offset),
                message,
            })?
        }
    };
    Ok(Parsed {
        default,
        rules,
        limits,
        requests,
    })
}

/// `[[tool]]`, `[[http]]`, `[[model]]`, `[budget]`, `on_unparsable`, `ask_timeout_seconds`.
fn parse_requests(raw: &RawPolicy, text: &str, origin: &str) -> Result<RequestRules, PolicyError> {
    let at = |offset: usize| Some(line_column(text, offset));
    let fail = |rule: String, offset: usize, reason: String| PolicyError::Request {
        origin: origin.to_owned(),
        rule,
        location: at(offset),
        reason,
    };
    let mut out = RequestRules::default();
    if let Some(word) = &raw.on_unparsable {
        out.on_unparsable = Verb::parse(word.get_ref()).map_err(|reason| PolicyError::Syntax {
            origin: origin.to_owned(),
            location: at(word.span().start),
            message: format!("on_unparsable {reason}"),
        })?;
    }
    if let Some(secs) = &raw.ask_timeout_seconds {
        match *secs.get_ref() {
            n @ 1..=MAX_SECONDS => out.ask_timeout = Duration::from_secs(n as u64),
            n => {
                return Err(PolicyError::Syntax {
                    origin: origin.to_owned(),
                    location: at(secs.span().start),
                    message: format!(
                        "ask_timeout_seconds = {n}: must be 1 to {MAX_SECONDS} (seconds)"
                    ),
                })
            }
        }
    }
    let action = |name: &str, at_rule: usize, a: &Option<Spanned<String>>| match a {
        None => Err(fail(
            name.to_owned(),
            at_rule,
            "missing `action` (\"allow\", \"deny\" or \"ask\")".to_owned(),
        )),
        Some(a) => Verb::parse(a.get_ref())
            .map_err(|r| fail(name.to_owned(), a.span().start, format!("action {r}"))),
    };
    let glob = |name: &str, g: &Option<Spanned<String>>, what: &str, fold: bool| match g {
        None => Ok(None),
        Some(g) if g.get_ref().is_empty() => Err(fail(
            name.to_owned(),
            g.span().start,
            format!("{what} is empty; leave it out to mean any"),
        )),
        Some(g) => Ok(Some(Glob::new(g.get_ref(), fold))),
    };
    let conds = |name: &str, table: &Option<BTreeMap<String, Spanned<RawCondition>>>| {
        let mut list = Vec::new();
        for (pointer, cond) in table.iter().flatten() {
            list.push(
                parse_condition(pointer, cond.get_ref())
                    .map_err(|reason| fail(name.to_owned(), cond.span().start, reason))?,
            );
        }
        Ok::<_, PolicyError>(list)
    };
    for (i, rule) in raw.tool.iter().enumerate() {
        let name = format!("tool[{}]", i + 1);
        let (start, r) = (rule.span().start, rule.get_ref());
        out.tools.push(ToolRule {
            action: action(&name, start, &r.action)?,
            name: glob(&name, &r.name, "name", false)?,
            server: glob(&name, &r.server, "server", true)?,
            args: conds(&name, &r.args)?,
        });
    }
    for (i, rule) in raw.http.iter().enumerate() {
        let name = format!("http[{}]", i + 1);
        let (start, r) = (rule.span().start, rule.get_ref());
        let verb = action(&name, start, &r.action)?;
        let methods = match &r.method {
            None => Vec::new(),
            Some(m) => parse_methods(m.get_ref())
                .map_err(|reason| fail(name.clone(), m.span().start, reason))?,
        };
        let path = match &r.path {
            None => None,
            Some(p) if !p.get_ref().starts_with('/') => {
                return Err(fail(
                    name,
                    p.span().start,
                    format!("path {:?} must start with `/`", p.get_ref()),
                ))
            }
            // Normalised as request paths are (a `*` survives: it is not a separator). Many
            // servers route paths without regard to case: a deny or ask covers every case, an
            // allow only the one written.
            Some(p) => Some(Glob::new(&normalize_path(p.get_ref()), verb != Verb::Allow)),
        };
        out.http.push(HttpRule {
            action: verb,
            methods,
            host: glob(&name, &r.host, "host", true)?,
            path,
            body: conds(&name, &r.body)?,
        });
    }
    for (i, rule) in raw.model.iter().enumerate() {
        let name = format!("model[{}]", i + 1);
        let (start, r) = (rule.span().start, rule.get_ref());
        out.models.push(ModelRule {
            action: action(&name, start, &r.action)?,
            model: glob(&name, &r.model, "model", false)?,
            host: glob(&name, &r.host, "host", true)?,
        });
    }
    if let Some(b) = &raw.budget {
        out.budget = parse_budget(b).map_err(|(offset, reason)| PolicyError::Request {
            origin: origin.to_owned(),
            rule: "budget".to_owned(),
            location: at(offset),
            reason,
        })?;
    }
    Ok(out)
}

/// `"DELETE"` or `["PUT", "DELETE"]`, upper-cased; an HTTP token each.
fn parse_methods(v: &toml::Value) -> Result<Vec<String>, String> {
    let words: Vec<&toml::Value> = match v {
        toml::Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    let mut out = Vec::new();
    for w in words {
        let Some(w) = w.as_str() else {
            return Err(format!("method must be a word or a list of words, not {w}"));
        };
        if w.is_empty() || !w.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-') {
            return Err(format!("method {w:?} is not an HTTP method"));
        }
        out.push(w.to_ascii_uppercase());
    }
    Ok(out)
}

/// A TOML value as JSON (a date becomes its text).
fn json_of(v: &toml::Value) -> serde_json::Value {
    match v {
        toml::Value::String(s) => s.clone().into(),
        toml::Value::Integer(i) => (*i).into(),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        toml::Value::Boolean(b) => (*b).into(),
        toml::Value::Datetime(d) => d.to_string().into(),
        toml::Value::Array(a) => a.iter().map(json_of).collect(),
        toml::Value::Table(t) => t
            .iter()
            .map(|(k, v)| (k.clone(), json_of(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    }
}

fn parse_condition(pointer: &str, c: &RawCondition) -> Result<Condition, String> {
    if !pointer.starts_with('/') {
        return Err(format!(
            "{pointer:?} is not a JSON pointer: it must start with `/` (as \"/qty\")"
        ));
    }
    let number = |op: &str, v: &toml::Value| match v {
        toml::Value::Integer(i) => Ok(*i as f64),
        toml::Value::Float(f) if f.is_finite() => Ok(*f),
        other => Err(format!("{pointer}: `{op}` needs a number, not {other}")),
    };
    let mut ops = Vec::new();
    if let Some(v) = &c.eq {
        ops.push(Op::Eq(json_of(v)));
    }
    if let Some(v) = &c.ne {
        ops.push(Op::Ne(json_of(v)));
    }
    for (op, v, make) in [
        ("lt", &c.lt, Op::Lt as fn(f64) -> Op),
        ("le", &c.le, Op::Le),
        ("gt", &c.gt, Op::Gt),
        ("ge", &c.ge, Op::Ge),
    ] {
        if let Some(v) = v {
            ops.push(make(number(op, v)?));
        }
    }
    if let Some(set) = &c.any_of {
        if set.is_empty() {
            return Err(format!("{pointer}: `in` is empty, so it never holds"));
        }
        ops.push(Op::In(set.iter().map(json_of).collect()));
    }
    if let Some(re) = &c.matches {
        let re = regex::Regex::new(re)
            .map_err(|e| format!("{pointer}: `matches` is not a regular expression: {e}"))?;
        ops.push(Op::Matches(re));
    }
    if let Some(want) = c.exists {
        ops.push(Op::Exists(want));
    }
    if ops.is_empty() {
        return Err(format!(
            "{pointer}: no condition (eq, ne, lt, le, gt, ge, in, matches, exists)"
        ));
    }
    Ok(Condition {
        pointer: pointer.to_owned(),
        ops,
    })
}

/// `[budget]`; `Err` holds the offending value's offset and why.
fn parse_budget(b: &RawBudget) -> Result<Budget, (usize, String)> {
    let mut out = Budget::default();
    if let Some(usd) = &b.usd {
        let dollars = match usd.get_ref() {
            toml::Value::Integer(i) => *i as f64,
            toml::Value::Float(f) => *f,
            other => {
                return Err((
                    usd.span().start,
                    format!("usd must be a number, not {other}"),
                ))
            }
        };
        if !(dollars.is_finite() && dollars > 0.0 && dollars <= 1e9) {
            return Err((
                usd.span().start,
                format!("usd = {dollars}: must be more than 0 and at most 1e9"),
            ));
        }
        // To the micro-dollar, then exact pico-dollars: a budget is not finer than a cent's
        // ten-thousandth.
        out.usd = Some(crate::cost::Usd(
            (dollars * 1e6).round() as u128 * 1_000_000,
        ));
    }
    if let Some(t) = &b.tokens {
        match *t.get_ref() {
            n @ 1.. => out.tokens = Some(n as u64),
            n => return Err((t.span().start, format!("tokens = {n}: must be at least 1"))),
        }
    }
    for (host, n) in b.requests_per_minute.iter().flatten() {
        let count = match *n.get_ref() {
            c @ 1..=1_000_000 => c as u32,
            c => {
                return Err((
                    n.span().start,
                    format!("requests_per_minute {host:?} = {c}: must be 1 to 1000000"),
                ))
            }
        };
        if host.is_empty() {
            return Err((n.span().start, "requests_per_minute: empty host".to_owned()));
        }
        out.requests_per_minute.push((Glob::new(host, true), count));
    }
    Ok(out)
}

/// `[limits]` over the defaults; `Err` holds the offending value's offset and why.
fn parse_limits(raw: &RawLimits) -> Result<Limits, (usize, String)> {
    let mut limits = Limits::default();
    let seconds = |value: &Option<Spanned<i64>>, key: &str, into: &mut Duration| {
        if let Some(v) = value {
            match *v.get_ref() {
                n @ 1..=MAX_SECONDS => *into = Duration::from_secs(n as u64),
                n => {
                    return Err((
                        v.span().start,
                        format!("limits.{key} = {n}: must be 1 to {MAX_SECONDS} (seconds)"),
                    ))
                }
            }
        }
        Ok(())
    };
    seconds(&raw.connect_seconds, "connect_seconds", &mut limits.connect)?;
    seconds(
        &raw.handshake_seconds,
        "handshake_seconds",
        &mut limits.handshake,
    )?;
    seconds(
        &raw.request_head_seconds,
        "request_head_seconds",
        &mut limits.request_head,
    )?;
    seconds(&raw.idle_seconds, "idle_seconds", &mut limits.idle)?;
    if let Some(v) = &raw.connections {
        match *v.get_ref() {
            n @ 1..=1_000_000 => limits.connections = n as usize,
            n => {
                return Err((
                    v.span().start,
                    format!("limits.connections = {n}: must be 1 to 1000000"),
                ))
            }
        }
    }
    Ok(limits)
}

/// `"allow"` or `"deny"`, exactly: a policy is not the place to guess what "permit" meant.
fn parse_action(word: &str) -> Result<Action, String> {
    match word {
        "allow" => Ok(Action::Allow),
        "deny" => Ok(Action::Deny),
        other => Err(format!("must be \"allow\" or \"deny\", not {other:?}")),
    }
}

/// A host name or `*.parent` wildcard. Rejects what would silently never match (IP literals,
/// non-ASCII, stray `*`), because a rule that never matches is worse than an error.
pub(super) fn parse_host(raw: &str) -> Result<HostPattern, String> {
    let name = normalize_host(raw);
    if name.is_empty() {
        return Err("host is empty".to_owned());
    }
    if name == "*" {
        return Err("host \"*\" would match every name; use `default` for that".to_owned());
    }
    let (wildcard, base) = match name.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, name.as_str()),
    };
    if base.contains('*') {
        return Err(format!(
            "host {raw:?}: `*` is allowed only as the whole first label, as in \"*.example.com\""
        ));
    }
    if base
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok()
    {
        return Err(format!(
            "host {raw:?} is an IP address; write cidr = {:?}",
            base.trim_start_matches('[').trim_end_matches(']')
        ));
    }
    if !base.is_ascii() {
        return Err(format!(
            "host {raw:?} is not ASCII; write it in its xn-- (punycode) form"
        ));
    }
    if base.len() > 253 {
        return Err(format!("host {raw:?} is longer than 253 characters"));
    }
    for label in base.split('.') {
        if label.is_empty() {
            return Err(format!("host {raw:?} has an empty label"));
        }
        if label.len() > 63 {
            return Err(format!(
                "host {raw:?} has a label longer than 63 characters"
            ));
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!("host {raw:?} contains {bad:?}"));
        }
    }
    let base = base.to_owned();
    Ok(if wildcard {
        HostPattern::Subdomains(base)
    } else {
        HostPattern::Exact(base)
    })
}

/// `addr/prefix`, or a bare address meaning /32 or /128. Host bits below the prefix are
/// cleared (`10.1.2.3/8` is `10.0.0.0/8`), as routing tools do.
pub(super) fn parse_cidr(raw: &str) -> Result<IpNet, String> {
    let (addr_text, prefix_text) = match raw.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (raw, None),
    };
    let addr: IpAddr = addr_text
        .trim()
        .parse()
        .map_err(|_| format!("bad CIDR {raw:?}: {addr_text:?} is not an IPv4 or IPv6 address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix_text {
        None => max,
        Some(text) => match text.trim().parse::<u8>() {
            Ok(prefix) if prefix <= max => prefix,
            _ => {
                return Err(format!(
                    "bad CIDR {raw:?}: prefix length must be a number from 0 to {max}"
                ))
            }
        },
    };
    // The prefix was checked against the family's maximum just above.
    IpNet::new(addr, prefix)
        .map(|net| net.trunc())
        .map_err(|e| format!("bad CIDR {raw:?}: {e}"))
}
