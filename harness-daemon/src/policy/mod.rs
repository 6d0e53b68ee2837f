//! Policy: which destinations an enclosed agent may reach.
//!
//! One TOML file (see `policy.md` beside this module) is read once into a [`Policy`], which then
//! answers the same question in the three places that need it, so that they cannot disagree:
//!
//! - the kernel, which sees only addresses and ports ([`Policy::kernel_rules`], plus the
//!   addresses DNS gave for names that rules mention, [`Policy::learned_for`]);
//! - the daemon, which may also know the host name from DNS, TLS SNI or HTTP `Host`
//!   ([`Policy::decide`]);
//! - the DNS resolver, which can refuse to resolve a name that is denied on every port
//!   ([`Policy::decide_name`]).
//!
//! Evaluation is order-independent, because that is what the kernel can do cheaply and what a
//! reader of the file can check at a glance: any matching `deny` rule denies; otherwise any
//! matching `allow` rule allows; otherwise the file's `default` applies.
//!
//! ```
//! use harness::policy::{Action, Policy};
//! let policy = Policy::parse(
//!     r#"
//!     default = "deny"
//!     [[rule]]
//!     action = "allow"
//!     host = "api.anthropic.com"
//!     ports = [443]
//!     "#,
//!     "example.toml",
//! )
//! .unwrap();
//! let dst = "160.79.104.10:443".parse().unwrap();
//! assert_eq!(policy.decide(dst, Some("API.anthropic.com.")).action, Action::Allow);
//! assert_eq!(policy.decide(dst, None).action, Action::Deny);
//! ```

mod current;
mod file;
mod kernel;
pub mod request;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use crate::limits::Limits;
use harness_common::{LearnedKey, LearnedVerdict, ACTION_ALLOW, ACTION_DENY};
use ipnet::IpNet;
use sha2::{Digest, Sha256};

pub use current::PolicyHandle;
pub use kernel::{ip_words, KernelProgram};

/// What a policy decides for a destination. Serialises as `"allow"` / `"deny"`, the words of
/// the file, so ledger entries read like the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Let the connection through (it is still recorded).
    Allow,
    /// Refuse the connection (the refusal is recorded).
    Deny,
}

impl Action {
    /// The word used in the policy file and in the ledger, so records read like the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }

    /// The kernel's encoding ([`ACTION_ALLOW`] / [`ACTION_DENY`]), for the eBPF maps.
    pub fn kernel_value(self) -> u32 {
        match self {
            Action::Allow => ACTION_ALLOW,
            Action::Deny => ACTION_DENY,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A host-name pattern from a rule, held lowercased without a trailing dot so that matching is
/// a plain string comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    /// `api.example.com`: that name only.
    Exact(String),
    /// `*.example.com`: any name below `example.com` (any depth), but not `example.com`
    /// itself — the apex is often a different service, so it must be named on purpose.
    Subdomains(String),
}

impl HostPattern {
    /// Whether `host` (already normalised by [`normalize_host`]) matches this pattern.
    fn matches_normalized(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => host == name,
            HostPattern::Subdomains(parent) => host
                .strip_suffix(parent.as_str())
                .and_then(|head| head.strip_suffix('.'))
                .is_some_and(|head| !head.is_empty()),
        }
    }

    /// Whether `host` matches, comparing case-insensitively and ignoring a trailing dot, because
    /// names arrive from DNS, SNI and `Host` headers in whatever case the agent used.
    pub fn matches(&self, host: &str) -> bool {
        self.matches_normalized(&normalize_host(host))
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Subdomains(parent) => write!(f, "*.{parent}"),
        }
    }
}

/// What a rule matches on: exactly one of a host name or an address range, because a rule that
/// mixed both would be read differently by different people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A host name pattern; matched when the name is known (DNS, SNI, `Host`).
    Host(HostPattern),
    /// An address range; the network address is held truncated to its prefix.
    Cidr(IpNet),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Host(pattern) => write!(f, "host {pattern}"),
            Target::Cidr(net) => write!(f, "cidr {net}"),
        }
    }
}

/// One `[[rule]]` of the policy file, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Allow or deny.
    pub action: Action,
    /// Host pattern or address range.
    pub target: Target,
    /// Destination ports, without duplicates; empty means any port.
    pub ports: Vec<u16>,
}

impl Rule {
    /// Whether the rule covers `port`.
    fn port_matches(&self, port: u16) -> bool {
        self.ports.is_empty() || self.ports.contains(&port)
    }

    /// Whether the rule's host pattern matches a normalised name (false for CIDR rules).
    fn host_matches(&self, host: &str) -> bool {
        matches!(&self.target, Target::Host(pattern) if pattern.matches_normalized(host))
    }
}

impl fmt::Display for Rule {
    /// `deny host *.example.com ports 80,443`: the form used in decision reasons and logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.action, self.target)?;
        if !self.ports.is_empty() {
            let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
            write!(f, " ports {}", ports.join(","))?;
        }
        Ok(())
    }
}

/// The outcome of evaluating a policy, carried into the ledger so that every refusal (and every
/// admission) says which rule made it (serialisable for that reason).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    /// Allow or deny.
    pub action: Action,
    /// 0-based index of the deciding rule in the file (the kernel's `rule_index`), `None` when
    /// the default decided.
    pub rule: Option<u32>,
    /// A human-readable account, e.g. `rule[2] deny cidr 169.254.0.0/16` (1-based, like the
    /// file errors) or `no rule matched; default deny`.
    pub reason: String,
}

/// Why a policy file could not be used. Every message is one line naming the file and, where
/// there is one, the line/column or the rule (1-based, `rule[N]`), because an operator fixing a
/// policy needs to know where to look.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The file could not be read.
    #[error("{path}: cannot read policy file: {source}")]
    Read {
        /// The path given.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not UTF-8, so it cannot be TOML.
    #[error("{origin}: policy file is not UTF-8 text")]
    NotUtf8 {
        /// The file name.
        origin: String,
    },
    /// TOML syntax or shape error (unknown key, wrong type, bad `default`…).
    #[error("{}: {message}", locate(origin, *location))]
    Syntax {
        /// The file name.
        origin: String,
        /// 1-based line and column, when known.
        location: Option<(usize, usize)>,
        /// What is wrong.
        message: String,
    },
    /// A rule is well-formed TOML but does not make sense.
    #[error("{}: rule[{rule}]: {reason}", locate(origin, *location))]
    Rule {
        /// The file name.
        origin: String,
        /// 1-based rule number, counting `[[rule]]` tables from the top of the file.
        rule: usize,
        /// 1-based line and column of the offending value, when there is one.
        location: Option<(usize, usize)>,
        /// What is wrong.
        reason: String,
    },
    /// A request rule (`[[tool]]`, `[[http]]`, `[[model]]`) or `[budget]` is well-formed TOML
    /// but does not make sense.
    #[error("{}: {rule}: {reason}", locate(origin, *location))]
    Request {
        /// The file name.
        origin: String,
        /// `tool[N]`, `http[N]`, `model[N]` (1-based within its kind) or `budget`.
        rule: String,
        /// 1-based line and column, when known.
        location: Option<(usize, usize)>,
        /// What is wrong.
        reason: String,
    },
    /// The CIDR rules need more kernel slots than the kernel's rule array holds.
    #[error(
        "{origin}: the CIDR rules need {count} kernel rules (one per CIDR and port), \
         but the kernel holds at most {max}; merge ranges or drop ports"
    )]
    TooManyKernelRules {
        /// The file name.
        origin: String,
        /// Kernel rules needed.
        count: usize,
        /// [`harness_common::MAX_RULES`].
        max: u32,
    },
}

/// `file` or `file:line:col`, the prefix of every error message.
fn locate(origin: &str, location: Option<(usize, usize)>) -> String {
    match location {
        Some((line, column)) => format!("{origin}:{line}:{column}"),
        None => origin.to_owned(),
    }
}

/// Lowercase and drop one trailing dot, so `API.Example.com.` and `api.example.com` compare
/// equal, as DNS names do.
pub fn normalize_host(host: &str) -> String {
    let host = host.strip_suffix('.').unwrap_or(host);
    host.to_ascii_lowercase()
}

/// Whether `net` contains `ip`, treating IPv4 and IPv4-mapped IPv6 as the same address, as the
/// kernel does (it sees `::ffff:a.b.c.d` from AF_INET6 sockets connecting to IPv4 peers).
/// Written independently of the kernel's word arithmetic so that tests can check one against
/// the other.
fn cidr_contains(net: &IpNet, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpNet::V4(net), IpAddr::V4(ip)) => net.contains(&ip),
        (IpNet::V4(net), IpAddr::V6(ip)) => ip.to_ipv4_mapped().is_some_and(|v4| net.contains(&v4)),
        (IpNet::V6(net), IpAddr::V6(ip)) => net.contains(&ip),
        (IpNet::V6(net), IpAddr::V4(ip)) => net.contains(&ip.to_ipv6_mapped()),
    }
}

/// The policy as it applies to one accepted connection: asked again for every name the
/// connection reveals after it was allowed — the TLS server name, then each HTTP request's
/// `Host` / `:authority` — so that a connection allowed for one name cannot carry requests for
/// a name the policy denies (domain fronting, a forged Host).
///
/// Each question is put to the policy in force when it is asked ([`PolicyHandle::current`]):
/// after a reload, the next request of a connection already open is decided by the new policy.
#[derive(Clone)]
pub struct ConnPolicy {
    policy: std::sync::Arc<PolicyHandle>,
    dst: SocketAddr,
    /// The session's governance state (budget, asks), when the connection belongs to one.
    governor: Option<std::sync::Arc<crate::govern::Governor>>,
    /// Names the connection goes by, lower case (TLS server name, DNS-learned name).
    names: Vec<String>,
}

impl std::fmt::Debug for ConnPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnPolicy")
            .field("policy", &self.policy.current().origin())
            .field("dst", &self.dst)
            .finish()
    }
}

impl ConnPolicy {
    /// A fixed policy for a connection to `dst` (one that no reload replaces).
    pub fn new(policy: std::sync::Arc<Policy>, dst: SocketAddr) -> ConnPolicy {
        ConnPolicy::current(std::sync::Arc::new(PolicyHandle::new(policy)), dst)
    }

    /// The policy in force in `handle`, whatever it is when each question is asked, for a
    /// connection to `dst`.
    pub fn current(handle: std::sync::Arc<PolicyHandle>, dst: SocketAddr) -> ConnPolicy {
        ConnPolicy {
            policy: handle,
            dst,
            governor: None,
            names: Vec::new(),
        }
    }

    /// The same, knowing one more name the connection goes by (the TLS server name, the name
    /// DNS gave its address): request rules on hosts see it beside each request's own, so a
    /// request cannot pick the host the rules see.
    pub fn with_name(mut self, name: &str) -> ConnPolicy {
        let name = normalize_host(name);
        if !name.is_empty() && !self.names.contains(&name) {
            self.names.push(name);
        }
        self
    }

    /// The names the connection goes by ([`ConnPolicy::with_name`]).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The same, with the request rules and budget applied through `governor`.
    pub fn governed(mut self, governor: std::sync::Arc<crate::govern::Governor>) -> ConnPolicy {
        self.governor = Some(governor);
        self
    }

    /// The policy in force, and the session's governor, when requests on this connection are
    /// governed (the policy in force has request rules or a budget). The policy is returned
    /// owned: the one that decides a request is the one asked here, even if a reload replaces
    /// it while the request is decided.
    pub fn governance(
        &self,
    ) -> Option<(
        std::sync::Arc<Policy>,
        &std::sync::Arc<crate::govern::Governor>,
    )> {
        let gov = self.governor.as_ref()?;
        let policy = self.policy.current();
        let rules = policy.requests();
        let governed = !rules.is_empty() || rules.budget.is_set();
        governed.then_some((policy, gov))
    }

    /// The connection's destination.
    pub fn dst(&self) -> SocketAddr {
        self.dst
    }

    /// Whether the connection may go on under the name `host` (a bare name or an HTTP
    /// authority: a `:port` and IPv6 brackets are dropped). An address in place of a name names
    /// no host rule, and the address itself was decided when the connection was accepted, so
    /// it passes. `Err` holds the deciding deny.
    pub fn check(&self, host: &str) -> Result<(), Decision> {
        let name = authority_host(host);
        if name.is_empty() || name.parse::<IpAddr>().is_ok() {
            return Ok(());
        }
        // Anything but a plain name could be read differently upstream (`x.evil.test ` with a
        // space, `user@x.evil.test`, escapes) and slip past a host rule: refused.
        let plain = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !plain {
            return Err(Decision {
                action: Action::Deny,
                rule: None,
                reason: format!("{host:?} is not a plain host name"),
            });
        }
        let decision = self.policy.current().decide(self.dst, Some(name));
        match decision.action {
            Action::Allow => Ok(()),
            Action::Deny => Err(decision),
        }
    }
}

/// The host of an HTTP authority (`host`, `host:port`, `[v6]:port`, `[v6]`).
fn authority_host(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        // Unclosed: left whole, so that it is not taken for an address.
        return rest.split_once(']').map_or(authority, |(v6, _)| v6);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// A validated policy, ready to be evaluated. Two are equal when they came from the same
/// origin with the same bytes (the same bytes parse the same).
#[derive(Clone, Debug)]
pub struct Policy {
    origin: String,
    default: Action,
    rules: Vec<Rule>,
    limits: Limits,
    requests: request::RequestRules,
    sha256: [u8; 32],
}

impl PartialEq for Policy {
    fn eq(&self, other: &Policy) -> bool {
        self.origin == other.origin && self.sha256 == other.sha256
    }
}

impl Eq for Policy {}

impl Policy {
    /// Read and validate a policy file. Everything that could fail later (kernel capacity
    /// included) is checked here, so a daemon that starts has a policy it can enforce.
    pub fn load(path: impl AsRef<Path>) -> Result<Policy, PolicyError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| PolicyError::Read {
            path: origin.clone(),
            source,
        })?;
        let text = std::str::from_utf8(&bytes).map_err(|_| PolicyError::NotUtf8 {
            origin: origin.clone(),
        })?;
        Policy::parse(text, &origin)
    }

    /// Validate policy text; `origin` names it in errors (normally the file path).
    pub fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let file::Parsed {
            default,
            rules,
            limits,
            requests,
        } = file::parse(text, origin)?;
        let policy = Policy {
            origin: origin.to_owned(),
            default,
            rules,
            limits,
            requests,
            sha256: Sha256::digest(text.as_bytes()).into(),
        };
        policy.kernel_rules()?;
        Ok(policy)
    }

    /// The policy when no file is given: no rules, default allow — everything is recorded,
    /// nothing is refused.
    pub fn allow_all() -> Policy {
        Policy {
            origin: "(no policy file)".to_owned(),
            default: Action::Allow,
            rules: Vec::new(),
            limits: Limits::default(),
            requests: request::RequestRules::default(),
            sha256: Sha256::digest(b"").into(),
        }
    }

    /// SHA-256 of the exact file bytes (of the empty string for [`Policy::allow_all`]), so the
    /// ledger can name the policy a session ran under without copying it.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }

    /// Where the policy came from, as given to [`Policy::load`] or [`Policy::parse`].
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The decision when no rule matches.
    pub fn default_action(&self) -> Action {
        self.default
    }

    /// What connections may hold (`[limits]`, or the defaults).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// What the policy says about requests: tool, HTTP and model rules, and budgets.
    pub fn requests(&self) -> &request::RequestRules {
        &self.requests
    }

    /// The rules in file order (index = `Decision::rule`).
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Among the matching rules (index, rule), any deny wins, else any allow; the lowest index
    /// of the winning kind is reported, so the first line a reader would look at is named.
    fn verdict<'a>(
        matching: impl Iterator<Item = (usize, &'a Rule)>,
    ) -> Option<(Action, usize, &'a Rule)> {
        let mut allow = None;
        for (index, rule) in matching {
            match rule.action {
                Action::Deny => return Some((Action::Deny, index, rule)),
                Action::Allow => {
                    allow.get_or_insert((Action::Allow, index, rule));
                }
            }
        }
        allow
    }

    /// Build a [`Decision`] for a winning rule.
    fn rule_decision(action: Action, index: usize, rule: &Rule) -> Decision {
        Decision {
            action,
            rule: Some(index as u32),
            reason: format!("rule[{}] {rule}", index + 1),
        }
    }

    /// The daemon's decision for a connection to `dst`, when the host name may be known (from
    /// DNS, TLS SNI or HTTP `Host`). Host rules only match when `host` is given; CIDR rules
    /// always see the address — so a name cannot launder a denied address, nor an address a
    /// denied name. `host` is a bare name (no `:port`, no brackets), as SNI gives it.
    pub fn decide(&self, dst: SocketAddr, host: Option<&str>) -> Decision {
        let host = host.map(normalize_host);
        let matching = self.rules.iter().enumerate().filter(|(_, rule)| {
            rule.port_matches(dst.port())
                && match &rule.target {
                    Target::Host(pattern) => host
                        .as_deref()
                        .is_some_and(|h| pattern.matches_normalized(h)),
                    Target::Cidr(net) => cidr_contains(net, dst.ip()),
                }
        });
        match Self::verdict(matching) {
            Some((action, index, rule)) => Self::rule_decision(action, index, rule),
            None => Decision {
                action: self.default,
                rule: None,
                reason: format!("no rule matched; default {}", self.default),
            },
        }
    }

    /// What host rules alone say about a name, for the DNS resolver.
    ///
    /// With `Some(port)`: the verdict of host rules covering that port. With `None` (DNS does
    /// not know the port): `Deny` only from a rule that denies the name on *every* port — a name
    /// denied for all ports should not even resolve — else `Allow` if any rule allows the name
    /// on some port. `None` means host rules are silent: addresses and the default will decide
    /// at connect time.
    pub fn decide_name(&self, host: &str, port: Option<u16>) -> Option<Decision> {
        let host = normalize_host(host);
        let matching = self
            .rules
            .iter()
            .enumerate()
            .filter(|(_, rule)| rule.host_matches(&host))
            .filter(|(_, rule)| match port {
                Some(port) => rule.port_matches(port),
                // A port-specific deny does not make the name unresolvable.
                None => rule.action == Action::Allow || rule.ports.is_empty(),
            });
        Self::verdict(matching)
            .map(|(action, index, rule)| Self::rule_decision(action, index, rule))
    }

    /// The CIDR rules compiled for the kernel's rule array, with the default action.
    pub fn kernel_rules(&self) -> Result<KernelProgram, PolicyError> {
        kernel::compile(&self.rules, self.default).map_err(|count| {
            PolicyError::TooManyKernelRules {
                origin: self.origin.clone(),
                count,
                max: harness_common::MAX_RULES,
            }
        })
    }

    /// Entries for the kernel's `LEARNED` map after DNS answered `addrs` for `host`: for every
    /// host rule matching `host`, each address with each of the rule's ports (0 for any), so
    /// the kernel can refuse or admit those addresses without asking the daemon.
    ///
    /// Keys are unique: where two rules give the same (address, port), deny wins, then the
    /// lower rule index — the order-independent semantics, per key. The kernel looks up both
    /// (address, port) and (address, 0), and a deny in either wins. Note that the kernel sees
    /// only addresses: an address shared by several names (a CDN) carries the verdict of every
    /// name it was learned for.
    pub fn learned_for(&self, host: &str, addrs: &[IpAddr]) -> Vec<(LearnedKey, LearnedVerdict)> {
        let host = normalize_host(host);
        let mut learned: HashMap<LearnedKey, LearnedVerdict> = HashMap::new();
        for (index, rule) in self.rules.iter().enumerate() {
            if !rule.host_matches(&host) {
                continue;
            }
            let verdict = LearnedVerdict {
                action: rule.action.kernel_value(),
                rule_index: index as u32,
            };
            let ports: Vec<u32> = if rule.ports.is_empty() {
                vec![0]
            } else {
                rule.ports.iter().map(|&p| u32::from(p)).collect()
            };
            for addr in addrs {
                for &port in &ports {
                    let key = LearnedKey {
                        addr: ip_words(*addr),
                        port,
                    };
                    learned
                        .entry(key)
                        .and_modify(|old| {
                            // Rules are visited in index order, so an existing entry has the
                            // lower index: replace it only when a deny beats an allow.
                            if old.action == ACTION_ALLOW && verdict.action == ACTION_DENY {
                                *old = verdict;
                            }
                        })
                        .or_insert(verdict);
                }
            }
        }
        let mut learned: Vec<_> = learned.into_iter().collect();
        learned.sort_by_key(|(key, _)| (key.addr, key.port));
        learned
    }
}

#[cfg(test)]
mod tests;
