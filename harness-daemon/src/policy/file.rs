//! The policy file's TOML shape and its validation into [`Rule`]s.
//!
//! serde reads the file into loose `Raw*` structs (`deny_unknown_fields`, so a typo such as
//! `hosts =` is an error rather than a silently ignored rule), keeping each value's position
//! (`Spanned`) so that a rule that is valid TOML but meaningless is reported with its line,
//! column and rule number.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use crate::limits::Limits;

use super::{normalize_host, Action, HostPattern, PolicyError, Rule, Target};

/// The file as TOML sees it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    default: Option<Spanned<String>>,
    #[serde(default, rename = "rule")]
    rules: Vec<RawRule>,
    limits: Option<RawLimits>,
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
    })
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
