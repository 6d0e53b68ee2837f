//! Request rules: what an enclosed agent may *do* once a destination is allowed — which MCP tool
//! calls (`[[tool]]`), which HTTP requests (`[[http]]`) and which model calls (`[[model]]`) go
//! through, are refused, or wait for a person (`ask`); and what a session may spend (`[budget]`,
//! enforced by [`crate::govern`], which also holds the running totals).
//!
//! Evaluation mirrors destination rules: every rule of every section that applies to a request
//! is matched; any matching `deny` wins, else any `ask`, else any `allow`; the lowest index of
//! the winning kind is named. No matching rule means the request rules are silent (the
//! destination policy already let the connection through).
//!
//! A rule that looks inside a body which cannot be read as JSON (not JSON, not read whole,
//! duplicate member names — which two parsers may read differently —, a value of a type the
//! condition cannot compare) decides as the file's `on_unparsable` (default `deny`) instead of
//! silently not matching: an agent must not pass a rule by sending what the rule cannot read.
use std::fmt;
use std::time::Duration;

use regex::Regex;
use serde_json::Value;

/// What a request rule decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    /// Let it through (recorded).
    Allow,
    /// Hold it until a person decides, or the ask times out (then deny).
    Ask,
    /// Refuse it: it never reaches upstream; the agent gets an answer shaped for its protocol.
    Deny,
}

impl Verb {
    /// The word of the file and of the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Allow => "allow",
            Verb::Ask => "ask",
            Verb::Deny => "deny",
        }
    }

    pub(super) fn parse(word: &str) -> Result<Verb, String> {
        match word {
            "allow" => Ok(Verb::Allow),
            "ask" => Ok(Verb::Ask),
            "deny" => Ok(Verb::Deny),
            other => Err(format!(
                "must be \"allow\", \"deny\" or \"ask\", not {other:?}"
            )),
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `*`/`?` glob, matched against the whole text. `*` matches any run of characters, `/` and
/// `.` included (a path rule `/v1/*` covers `/v1/a/b`: in a deny rule, broader is safer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
    /// Compare ASCII case-insensitively (host names, methods).
    fold_case: bool,
}

impl Glob {
    pub(super) fn new(pattern: &str, fold_case: bool) -> Glob {
        let pattern = if fold_case {
            pattern.to_ascii_lowercase()
        } else {
            pattern.to_owned()
        };
        Glob { pattern, fold_case }
    }

    /// Whether `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        let text = if self.fold_case {
            text.to_ascii_lowercase()
        } else {
            text.to_owned()
        };
        glob_match(self.pattern.as_bytes(), text.as_bytes())
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

/// Iterative glob matching with one backtrack point (linear in practice, no recursion).
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// One condition on the value at a JSON pointer; every operator given must hold.
#[derive(Clone, Debug)]
pub struct Condition {
    /// RFC 6901 pointer into the arguments or body (`/qty`, `/items/0/price`).
    pub pointer: String,
    /// The operators, in file order of kind (`eq`, `ne`, `lt`, …).
    pub ops: Vec<Op>,
}

/// A comparison.
#[derive(Clone, Debug)]
pub enum Op {
    /// Equal as JSON values (numbers by value: `1` = `1.0`).
    Eq(Value),
    /// Not equal.
    Ne(Value),
    /// Numerically less than (a number, or a string that is one — form bodies are strings).
    Lt(f64),
    /// ≤.
    Le(f64),
    /// >.
    Gt(f64),
    /// ≥.
    Ge(f64),
    /// Equal to one of these.
    In(Vec<Value>),
    /// A string matching this regular expression (unanchored, as `regex` finds).
    Matches(Regex),
    /// Present (`true`) or absent (`false`).
    Exists(bool),
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Eq(v) => write!(f, "= {v}"),
            Op::Ne(v) => write!(f, "≠ {v}"),
            Op::Lt(n) => write!(f, "< {n}"),
            Op::Le(n) => write!(f, "≤ {n}"),
            Op::Gt(n) => write!(f, "> {n}"),
            Op::Ge(n) => write!(f, "≥ {n}"),
            Op::In(vs) => write!(f, "in {}", Value::Array(vs.clone())),
            Op::Matches(re) => write!(f, "matches /{}/", re.as_str()),
            Op::Exists(true) => f.write_str("exists"),
            Op::Exists(false) => f.write_str("absent"),
        }
    }
}

/// The outcome of one condition against a document.
enum Outcome {
    Holds(Option<Value>),
    Fails,
    /// The value is there but the condition cannot compare it (`gt` on an object): why.
    Unreadable(String),
}

/// A number, or a string that is one (form fields, agents that quote numbers): `"500"` must
/// not pass a rule on `500`.
fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
        _ => None,
    }
}

/// JSON equality with numbers compared by value, and a numeric string equal to its number.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), _) | (_, Value::Number(_)) => {
            matches!((as_number(a), as_number(b)), (Some(x), Some(y)) if x == y)
        }
        // Servers coerce booleans leniently (pydantic takes "yes", "on", "1" for true).
        (Value::Bool(_), _) | (_, Value::Bool(_)) => {
            matches!((as_bool(a), as_bool(b)), (Some(x), Some(y)) if x == y)
        }
        _ => a == b,
    }
}

/// A boolean, or a string a lenient server reads as one.
fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" | "t" | "y" => Some(true),
            "false" | "0" | "no" | "off" | "f" | "n" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// When `pointer` finds nothing in `doc` because its way passes through a string that holds
/// JSON (`{"order": "{\"qty\": 5000}"}`, which some servers unpack), the member it passes
/// through.
fn through_a_string(doc: &Value, pointer: &str) -> Option<String> {
    let mut at = String::new();
    let mut node = doc;
    for token in pointer.split('/').skip(1) {
        if let Value::String(s) = node {
            let t = s.trim_start();
            return (t.starts_with('{') || t.starts_with('[')).then(|| {
                if at.is_empty() {
                    "/".to_owned()
                } else {
                    at
                }
            });
        }
        at.push('/');
        at.push_str(token);
        let key = token.replace("~1", "/").replace("~0", "~");
        node = match node {
            Value::Object(o) => o.get(&key)?,
            Value::Array(a) => a.get(key.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    None
}

impl Condition {
    fn check(&self, doc: &Value) -> Outcome {
        let value = doc.pointer(&self.pointer);
        if value.is_none() {
            if let Some(at) = through_a_string(doc, &self.pointer) {
                return Outcome::Unreadable(format!(
                    "{} passes through {at}, a string holding JSON, which a server may unpack",
                    self.pointer
                ));
            }
        }
        for op in &self.ops {
            let holds = match (op, value) {
                (Op::Exists(want), v) => v.is_some() == *want,
                (_, None) => false,
                (Op::Eq(want), Some(v)) => same(v, want),
                (Op::Ne(want), Some(v)) => !same(v, want),
                (Op::In(set), Some(v)) => set.iter().any(|w| same(v, w)),
                (Op::Matches(re), Some(Value::String(s))) => re.is_match(s),
                (Op::Matches(_), Some(v)) => {
                    return Outcome::Unreadable(format!(
                        "{} is {v}, not a string, for `matches`",
                        self.pointer
                    ))
                }
                (Op::Lt(n) | Op::Le(n) | Op::Gt(n) | Op::Ge(n), Some(v)) => {
                    let Some(x) = as_number(v) else {
                        return Outcome::Unreadable(format!(
                            "{} is {v}, not a number, for `{op}`",
                            self.pointer
                        ));
                    };
                    match op {
                        Op::Lt(_) => x < *n,
                        Op::Le(_) => x <= *n,
                        Op::Gt(_) => x > *n,
                        _ => x >= *n,
                    }
                }
            };
            if !holds {
                return Outcome::Fails;
            }
        }
        Outcome::Holds(value.cloned())
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ops: Vec<String> = self.ops.iter().map(Op::to_string).collect();
        write!(f, "{} {}", self.pointer, ops.join(" and "))
    }
}

/// `[[tool]]`: an MCP `tools/call`.
#[derive(Clone, Debug)]
pub struct ToolRule {
    /// What it decides.
    pub action: Verb,
    /// Glob on the tool name.
    pub name: Option<Glob>,
    /// Glob on the MCP server's host.
    pub server: Option<Glob>,
    /// Conditions on `params.arguments`.
    pub args: Vec<Condition>,
}

/// `[[http]]`: any HTTP request.
#[derive(Clone, Debug)]
pub struct HttpRule {
    /// What it decides.
    pub action: Verb,
    /// Methods (upper case); empty: any.
    pub methods: Vec<String>,
    /// Glob on the host.
    pub host: Option<Glob>,
    /// Glob on the normalised path (no query; see [`normalize_path`]).
    pub path: Option<Glob>,
    /// Conditions on the body (JSON, or a form as an object of strings).
    pub body: Vec<Condition>,
}

/// `[[model]]`: a model call (any provider harness understands).
#[derive(Clone, Debug)]
pub struct ModelRule {
    /// What it decides.
    pub action: Verb,
    /// Glob on the model name as the request gives it.
    pub model: Option<Glob>,
    /// Glob on the provider's host.
    pub host: Option<Glob>,
}

/// `[budget]`: what one session may spend. Enforced by [`crate::govern`].
#[derive(Clone, Debug, Default)]
pub struct Budget {
    /// US dollars, in pico-dollars ([`crate::cost::Usd`]).
    pub usd: Option<crate::cost::Usd>,
    /// Tokens, all kinds added up (input, output, cache reads and writes).
    pub tokens: Option<u64>,
    /// At most N requests per 60 s to hosts matching the glob.
    pub requests_per_minute: Vec<(Glob, u32)>,
}

impl Budget {
    /// Whether any budget is set.
    pub fn is_set(&self) -> bool {
        self.usd.is_some() || self.tokens.is_some() || !self.requests_per_minute.is_empty()
    }
}

/// Everything a policy says about requests.
#[derive(Clone, Debug)]
pub struct RequestRules {
    /// `[[tool]]` in file order.
    pub tools: Vec<ToolRule>,
    /// `[[http]]` in file order.
    pub http: Vec<HttpRule>,
    /// `[[model]]` in file order.
    pub models: Vec<ModelRule>,
    /// `[budget]`.
    pub budget: Budget,
    /// How a rule decides when it cannot read the body it looks into.
    pub on_unparsable: Verb,
    /// How long an `ask` waits for a person before it is denied.
    pub ask_timeout: Duration,
}

/// Default [`RequestRules::ask_timeout`].
pub const ASK_TIMEOUT: Duration = Duration::from_secs(300);

impl Default for RequestRules {
    fn default() -> RequestRules {
        RequestRules {
            tools: Vec::new(),
            http: Vec::new(),
            models: Vec::new(),
            budget: Budget::default(),
            on_unparsable: Verb::Deny,
            ask_timeout: ASK_TIMEOUT,
        }
    }
}

/// A request body as the rules see it.
#[derive(Clone, Debug)]
pub enum BodyFacts {
    /// No body.
    Empty,
    /// Parsed (JSON; a form as an object of strings).
    Parsed(Value),
    /// Cannot be read as the rules need: why.
    Unreadable(String),
}

/// One MCP `tools/call` inside a request (a batch holds several).
#[derive(Clone, Debug)]
pub struct ToolCall {
    /// JSON-RPC id (absent for a notification).
    pub id: Option<Value>,
    /// The tool's name.
    pub name: String,
    /// `params.arguments` (`null` when absent).
    pub args: Value,
}

/// What the rules look at in one HTTP request.
#[derive(Clone, Debug)]
pub struct RequestFacts {
    /// Method, upper case.
    pub method: String,
    /// Host (normalised: lower case, no port, no trailing dot), when the request names one
    /// (an address or an empty name is none).
    pub host: Option<String>,
    /// Every other name the request or its connection goes by: further `Host` headers, the TLS
    /// server name, the name DNS gave the destination. A deny or ask on a host meets the request
    /// when any name matches; an allow only when all do.
    pub other_hosts: Vec<String>,
    /// Every other method the request may be read as: `GET` for `HEAD` (servers run the GET
    /// handler), a method-override header or `_method` field. A deny or ask on a method meets
    /// any of them.
    pub other_methods: Vec<String>,
    /// Path, normalised ([`normalize_path`]), without the query.
    pub path: String,
    /// The body.
    pub body: BodyFacts,
    /// MCP tool calls the body carries (empty when it is not MCP).
    pub tool_calls: Vec<ToolCall>,
    /// The model, when the request is a model call harness understands.
    pub model: Option<String>,
    /// The body may be MCP JSON-RPC but could not be read (a tool rule then decides as
    /// `on_unparsable`).
    pub mcp_unreadable: Option<String>,
    /// The body as a lenient parser reads it when the strict reading refused it: for
    /// addressing harness's answer (JSON-RPC ids) only, never for deciding.
    pub lenient: Option<Value>,
}

/// Which rule decided, and on what.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Hit {
    /// What it decided.
    pub action: Verb,
    /// `tool[1]`, `http[2]`, `model[1]` (1-based, per section, as file errors count).
    pub rule: String,
    /// The rule in words: `deny tool place_order args /qty > 100`.
    pub text: String,
    /// Pointer → value for each condition that held.
    pub matched: Vec<(String, Value)>,
    /// Set when the rule decided as `on_unparsable`: what could not be read.
    pub unparsable: Option<String>,
    /// For a tool rule: the id of the call it matched (in a batch, which one).
    pub call_id: Option<Value>,
    /// For a tool rule: the tool's name.
    pub tool: Option<String>,
}

impl Hit {
    /// One line for the agent's error and the ledger's reason.
    pub fn reason(&self) -> String {
        let mut s = format!("{} {}", self.rule, self.text);
        if !self.matched.is_empty() {
            let m: Vec<String> = self
                .matched
                .iter()
                .map(|(p, v)| format!("{p} = {v}"))
                .collect();
            s.push_str(&format!(" (matched {})", m.join(", ")));
        }
        if let Some(why) = &self.unparsable {
            s.push_str(&format!(" (decided as on_unparsable: {why})"));
        }
        s
    }
}

/// The outcome of a rule's conditions against a document.
enum Matched {
    No,
    Yes(Vec<(String, Value)>),
    Unreadable(String),
}

fn conditions(conds: &[Condition], doc: Result<&Value, &str>) -> Matched {
    if conds.is_empty() {
        return Matched::Yes(Vec::new());
    }
    let doc = match doc {
        Ok(doc) => doc,
        Err(why) => return Matched::Unreadable(why.to_owned()),
    };
    let mut matched = Vec::new();
    for c in conds {
        match c.check(doc) {
            Outcome::Holds(Some(v)) => matched.push((c.pointer.clone(), v)),
            Outcome::Holds(None) => {}
            Outcome::Fails => return Matched::No,
            Outcome::Unreadable(why) => return Matched::Unreadable(why),
        }
    }
    Matched::Yes(matched)
}

impl fmt::Display for ToolRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} tool {}", self.action, opt(&self.name))?;
        if let Some(s) = &self.server {
            write!(f, " on {s}")?;
        }
        if !self.args.is_empty() {
            write!(f, " args {}", joined(&self.args))?;
        }
        Ok(())
    }
}

impl fmt::Display for HttpRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let methods = if self.methods.is_empty() {
            "*".to_owned()
        } else {
            self.methods.join("|")
        };
        write!(
            f,
            "{} http {methods} {}{}",
            self.action,
            opt(&self.host),
            self.path
                .as_ref()
                .map_or("/*".to_owned(), |p| p.to_string())
        )?;
        if !self.body.is_empty() {
            write!(f, " body {}", joined(&self.body))?;
        }
        Ok(())
    }
}

impl fmt::Display for ModelRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} model {}", self.action, opt(&self.model))?;
        if let Some(h) = &self.host {
            write!(f, " on {h}")?;
        }
        Ok(())
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn opt(g: &Option<Glob>) -> String {
    g.as_ref().map_or("*".to_owned(), Glob::to_string)
}

fn joined(conds: &[Condition]) -> String {
    let c: Vec<String> = conds.iter().map(Condition::to_string).collect();
    c.join(", ")
}

fn glob_ok(g: &Option<Glob>, text: Option<&str>) -> bool {
    match (g, text) {
        (None, _) => true,
        (Some(g), Some(t)) => g.matches(t),
        (Some(g), None) => g.matches(""),
    }
}

/// Whether a rule's host glob admits every name a request goes by: a deny or ask meets it
/// when any name matches, or when it names none (leaving the host out must not dodge one); an
/// allow only when every name does.
fn hosts_ok(g: &Option<Glob>, facts: &RequestFacts, action: Verb) -> bool {
    let Some(glob) = g else { return true };
    let names: Vec<&str> = facts
        .host
        .as_deref()
        .into_iter()
        .chain(facts.other_hosts.iter().map(String::as_str))
        .collect();
    if names.is_empty() {
        return action != Verb::Allow;
    }
    if action == Verb::Allow {
        names.iter().all(|n| glob.matches(n))
    } else {
        names.iter().any(|n| glob.matches(n))
    }
}

impl RequestRules {
    /// Whether the file has any request rule or budget (else nothing here needs a body).
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty() && self.http.is_empty() && self.models.is_empty()
    }

    /// Whether a `[[tool]]` rule names, by its `server`, a host this request goes by (a
    /// connection upgraded there could carry tool calls as messages no rule could hold).
    pub fn names_a_tool_server(&self, facts: &RequestFacts) -> bool {
        self.tools
            .iter()
            .any(|r| r.server.is_some() && hosts_ok(&r.server, facts, Verb::Deny))
    }

    /// Whether any rule looks into bodies, so that a body must be read before forwarding.
    pub fn reads_bodies(&self) -> bool {
        !self.tools.is_empty()
            || !self.models.is_empty()
            || self.http.iter().any(|r| !r.body.is_empty())
            // A dollar or token budget must know the model of every model call.
            || self.budget.usd.is_some()
            || self.budget.tokens.is_some()
    }

    /// The rules' verdict on one request: `None` when no rule applies.
    pub fn decide(&self, facts: &RequestFacts) -> Option<Hit> {
        let mut hits: Vec<Hit> = Vec::new();
        let body: Result<&Value, &str> = match &facts.body {
            BodyFacts::Parsed(v) => Ok(v),
            BodyFacts::Empty => Err("the request has no body"),
            BodyFacts::Unreadable(why) => Err(why.as_str()),
        };
        for (i, rule) in self.http.iter().enumerate() {
            let head = (rule.methods.is_empty()
                || rule.methods.iter().any(|m| {
                    m.eq_ignore_ascii_case(&facts.method)
                        || (rule.action != Verb::Allow
                            && facts
                                .other_methods
                                .iter()
                                .any(|o| m.eq_ignore_ascii_case(o)))
                }))
                && hosts_ok(&rule.host, facts, rule.action)
                && glob_ok(&rule.path, Some(&facts.path));
            if !head {
                continue;
            }
            let found = conditions(&rule.body, body);
            if let Some(hit) = self.hit(format!("http[{}]", i + 1), rule.action, rule, found) {
                hits.push(hit);
            }
        }
        if let Some(model) = &facts.model {
            // A model call whose body could not be read names no model: a rule on the model
            // cannot be dodged that way (it decides as `on_unparsable`).
            let unread = match (&facts.body, model.is_empty()) {
                (BodyFacts::Unreadable(why), true) => Some(why.clone()),
                (_, true) => Some("the model call names no model".to_owned()),
                _ => None,
            };
            for (i, rule) in self.models.iter().enumerate() {
                if !hosts_ok(&rule.host, facts, rule.action) {
                    continue;
                }
                if let Some(why) = &unread {
                    let found = Matched::Unreadable(why.clone());
                    if let Some(hit) =
                        self.hit(format!("model[{}]", i + 1), rule.action, rule, found)
                    {
                        hits.push(hit);
                    }
                    continue;
                }
                if glob_ok(&rule.model, Some(model)) {
                    let found =
                        Matched::Yes(vec![("model".to_owned(), Value::from(model.clone()))]);
                    if let Some(hit) =
                        self.hit(format!("model[{}]", i + 1), rule.action, rule, found)
                    {
                        hits.push(hit);
                    }
                }
            }
        }
        for (i, rule) in self.tools.iter().enumerate() {
            if !hosts_ok(&rule.server, facts, rule.action) {
                continue;
            }
            if let Some(why) = &facts.mcp_unreadable {
                let found = Matched::Unreadable(why.clone());
                if let Some(hit) = self.hit(format!("tool[{}]", i + 1), rule.action, rule, found) {
                    hits.push(hit);
                }
                continue;
            }
            for call in &facts.tool_calls {
                if !glob_ok(&rule.name, Some(&call.name)) {
                    continue;
                }
                // Arguments that are not an object (a JSON string holding one, say) have no
                // members a pointer can reach, yet a lenient server might unpack them: a rule
                // on them cannot read them.
                let found = match &call.args {
                    Value::Object(_) | Value::Null => conditions(&rule.args, Ok(&call.args)),
                    _ if rule.args.is_empty() => Matched::Yes(Vec::new()),
                    other => Matched::Unreadable(format!(
                        "the call's arguments are {}, not an object",
                        kind_of(other)
                    )),
                };
                if let Some(mut hit) =
                    self.hit(format!("tool[{}]", i + 1), rule.action, rule, found)
                {
                    hit.call_id = call.id.clone();
                    hit.tool = Some(call.name.clone());
                    hits.push(hit);
                }
            }
        }
        // Deny beats ask beats allow; among equals, the first found (http, model, tool; in
        // file order within each).
        let best = hits.iter().map(|h| h.action).max()?;
        hits.into_iter().find(|h| h.action == best)
    }

    fn hit(
        &self,
        rule: String,
        action: Verb,
        text: &dyn fmt::Display,
        found: Matched,
    ) -> Option<Hit> {
        let (action, matched, unparsable) = match found {
            Matched::No => return None,
            Matched::Yes(m) => (action, m, None),
            // An allow rule that cannot read its body does not allow; a deny or ask cannot be
            // dodged by an unreadable body: `on_unparsable` decides.
            Matched::Unreadable(why) => match (action, self.on_unparsable) {
                (Verb::Allow, Verb::Allow) => (Verb::Allow, Vec::new(), Some(why)),
                (Verb::Allow, _) => return None,
                (_, verdict) => (verdict, Vec::new(), Some(why)),
            },
        };
        Some(Hit {
            action,
            rule,
            text: text.to_string(),
            matched,
            unparsable,
            call_id: None,
            tool: None,
        })
    }
}

/// A request path as a rule compares it: percent-escapes decoded, empty and `.` segments
/// dropped, `..` applied, no trailing `/` — so `/v1//%6Frders/./x/../` is `/v1/orders`, as
/// most servers route it (rule paths are normalised the same way). (A server that treats `%2F` as data, not a separator, is stricter than this: the rule
/// then covers more, never less.)
pub fn normalize_path(target: &str) -> String {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1..i + 3].iter().all(u8::is_ascii_hexdigit)
        {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                decoded.push(b);
                i += 3;
                continue;
            }
        }
        decoded.push(bytes[i]);
        i += 1;
    }
    let decoded = String::from_utf8_lossy(&decoded);
    let mut segments: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    format!("/{}", segments.join("/"))
}
