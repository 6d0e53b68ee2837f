//! What a model call cost: the `usage` an `llm_response` recorded, the model, and a price
//! table give an exact cost. Pure: nothing here does I/O but [`PriceTable::load`] reading the
//! file it is given, so the timeline, `harness stats` and (later) budgets in the policy engine
//! price a call the same way.
//!
//! Providers count tokens differently, and adding their counters up naively counts cached
//! tokens twice. [`Tokens::from_usage`] turns each provider's counters into disjoint kinds,
//! each billed at one price:
//!
//! | provider  | `input` (uncached)                 | `cache_read`  | `output`                        | `reasoning`        |
//! |-----------|------------------------------------|---------------|---------------------------------|--------------------|
//! | anthropic | `input_tokens` (cache excluded)    | `cache_read`  | `output_tokens` (thinking in it) | —                  |
//! | openai    | `input_tokens − cache_read`        | `cache_read`  | `output_tokens − reasoning`     | `reasoning_tokens` |
//! | gemini    | `input_tokens − cache_read + tool_prompt_tokens` | `cache_read` | `output_tokens` (thoughts apart) | `reasoning_tokens` |
//!
//! Anthropic's cache writes are `cache_write_5m` and `cache_write_1h` (a total with no split is
//! the default lifetime, 5 minutes).
//!
//! Money is counted in pico-dollars (10⁻¹² USD) and prices in micro-dollars per million
//! tokens, both integers: a token count times a price is an exact number of pico-dollars, and
//! sums never drift.
//!
//! ```
//! use harness::cost::{PriceTable, Tokens};
//! let table = PriceTable::builtin();
//! let usage = serde_json::json!({"input_tokens": 1117, "output_tokens": 46, "cache_read": 1024});
//! let tokens = Tokens::from_usage("openai", &usage).unwrap();
//! assert_eq!((tokens.input, tokens.cache_read, tokens.output), (93, 1024, 46));
//! let cost = table.cost("openai", "gpt-4o-2024-08-06", &tokens).unwrap();
//! // 93 × $2.50 + 1024 × $1.25 + 46 × $10 per million tokens = 232.5 + 1280 + 460 µ$
//! assert_eq!(cost.exact(), "0.0019725");
//! ```
#![forbid(unsafe_code)]

use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// The built-in table (`harness-daemon/pricing.toml`).
pub const BUILTIN: &str = include_str!("../pricing.toml");

/// Where a user's own table is read from when no `--pricing FILE` is given (if it exists).
pub const DEFAULT_PRICING: &str = "/etc/harness/pricing.toml";

// === Tokens ===

/// A call's tokens by how they are billed; no token is in two kinds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tokens {
    /// Prompt tokens not read from or written to a cache.
    pub input: u64,
    /// Prompt tokens read from the cache.
    pub cache_read: u64,
    /// Prompt tokens written to the cache for 5 minutes.
    pub cache_write_5m: u64,
    /// Prompt tokens written to the cache for 1 hour.
    pub cache_write_1h: u64,
    /// Output tokens, but for those the provider counted apart as reasoning.
    pub output: u64,
    /// Reasoning tokens the provider counted apart (OpenAI, Gemini; Anthropic counts
    /// thinking in `output`).
    pub reasoning: u64,
}

impl Tokens {
    /// The kinds of a recorded `usage` object (SPEC §4.14.2) of `provider`'s answer; `None`
    /// when there is no usage (null, not an object, no counter in it) or the provider is not
    /// one whose counting is known.
    pub fn from_usage(provider: &str, usage: &Value) -> Option<Tokens> {
        let n = |k: &str| usage.get(k).and_then(Value::as_u64);
        let (input, output) = (n("input_tokens"), n("output_tokens"));
        if input.is_none() && output.is_none() {
            return None;
        }
        let (input, output) = (input.unwrap_or(0), output.unwrap_or(0));
        let cache_read = n("cache_read").unwrap_or(0);
        let reasoning = n("reasoning_tokens").unwrap_or(0);
        match provider {
            "anthropic" => {
                let (w5, w1) = (
                    n("cache_write_5m").unwrap_or(0),
                    n("cache_write_1h").unwrap_or(0),
                );
                // What the split does not account for was written for the default 5 minutes.
                let rest = n("cache_write").unwrap_or(0).saturating_sub(w5 + w1);
                Some(Tokens {
                    input,
                    cache_read,
                    cache_write_5m: w5 + rest,
                    cache_write_1h: w1,
                    output,
                    reasoning,
                })
            }
            "openai" => Some(Tokens {
                input: input.saturating_sub(cache_read),
                cache_read,
                output: output.saturating_sub(reasoning),
                reasoning,
                ..Tokens::default()
            }),
            "gemini" => Some(Tokens {
                input: input.saturating_sub(cache_read) + n("tool_prompt_tokens").unwrap_or(0),
                cache_read,
                output,
                reasoning,
                ..Tokens::default()
            }),
            _ => None,
        }
    }

    /// Every prompt token: uncached, read from and written to the cache.
    pub fn prompt(&self) -> u64 {
        self.input + self.cache_read + self.cache_write_5m + self.cache_write_1h
    }

    /// Every token the model produced: output and reasoning.
    pub fn completion(&self) -> u64 {
        self.output + self.reasoning
    }

    /// `self + other`, kind by kind.
    pub fn add(&mut self, other: &Tokens) {
        self.input += other.input;
        self.cache_read += other.cache_read;
        self.cache_write_5m += other.cache_write_5m;
        self.cache_write_1h += other.cache_write_1h;
        self.output += other.output;
        self.reasoning += other.reasoning;
    }
}

// === Money ===

/// An amount of US dollars, exactly: a count of pico-dollars (10⁻¹² USD).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Usd(pub u128);

impl Usd {
    /// The exact decimal, without trailing zeros: `0.0020725`, `12`.
    pub fn exact(&self) -> String {
        let (whole, frac) = (self.0 / 1_000_000_000_000, self.0 % 1_000_000_000_000);
        if frac == 0 {
            return whole.to_string();
        }
        let frac = format!("{frac:012}");
        format!("{whole}.{}", frac.trim_end_matches('0'))
    }
}

/// `$0.002073`: rounded (half up) to a millionth of a dollar, for people; [`Usd::exact`] for
/// machines.
impl std::fmt::Display for Usd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let micros = (self.0 + 500_000) / 1_000_000;
        write!(f, "${}.{:06}", micros / 1_000_000, micros % 1_000_000)
    }
}

impl std::ops::AddAssign for Usd {
    fn add_assign(&mut self, other: Usd) {
        self.0 += other.0;
    }
}

// === Prices ===

/// Micro-dollars per million tokens (= pico-dollars per token).
type Rate = u64;

/// The prices of one tier.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prices {
    input: Rate,
    output: Rate,
    cache_read: Option<Rate>,
    cache_write_5m: Option<Rate>,
    cache_write_1h: Option<Rate>,
    reasoning: Option<Rate>,
}

/// One `[[model]]` of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceEntry {
    /// `anthropic`, `openai`, `gemini`.
    pub provider: String,
    /// Model id patterns (`*` any run of characters), lower case.
    pub models: Vec<String>,
    prices: Prices,
    /// Above this many prompt tokens, the long-context prices.
    long_context: Option<(u64, Prices)>,
    /// Where the prices come from.
    pub source: Option<String>,
    /// When they were read there.
    pub as_of: Option<String>,
    /// `FILE:LINE` of the entry.
    pub origin: String,
    /// From the user's file (it wins over a built-in entry as specific).
    user: bool,
}

/// Why a call has no price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unpriced {
    /// The answer recorded no usage.
    NoUsage,
    /// Neither the answer nor the request names the model.
    NoModel,
    /// No entry of the table matches the provider and model.
    UnknownModel,
    /// The entry has no price for a kind of token the call used (`cache_write_1h`, …).
    NoPriceFor(&'static str),
}

impl std::fmt::Display for Unpriced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unpriced::NoUsage => f.write_str("no usage recorded"),
            Unpriced::NoModel => f.write_str("no model named"),
            Unpriced::UnknownModel => f.write_str("model not in the pricing table"),
            Unpriced::NoPriceFor(kind) => write!(f, "the pricing table has no {kind} price"),
        }
    }
}

/// Prices by provider and model: the built-in table, and the user's over it.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    entries: Vec<PriceEntry>,
}

impl PriceTable {
    /// The built-in table alone.
    pub fn builtin() -> PriceTable {
        // The built-in table is tested to parse (tests below): this cannot fail.
        parse(BUILTIN, "built-in pricing.toml", false)
            .map(|(entries, _)| PriceTable { entries })
            .unwrap_or_default()
    }

    /// The built-in table with the user's file over it: `path`, else [`DEFAULT_PRICING`] when
    /// that file exists. A file that cannot be read or parsed is an error naming it (and the
    /// line and column).
    pub fn load(path: Option<&Path>) -> Result<PriceTable, PricingError> {
        let default = Path::new(DEFAULT_PRICING);
        let path = match path {
            Some(p) => Some(p),
            None => default.exists().then_some(default),
        };
        let mut table = PriceTable::builtin();
        if let Some(path) = path {
            let text = std::fs::read(path).map_err(|source| PricingError::Read {
                path: path.to_owned(),
                source,
            })?;
            let origin = path.display().to_string();
            let text = String::from_utf8(text).map_err(|_| PricingError::Syntax {
                origin: origin.clone(),
                location: None,
                message: "not UTF-8 text".into(),
            })?;
            table.overlay(&text, &origin)?;
        }
        Ok(table)
    }

    /// Puts the entries of a user's table (its text, named `origin` in errors) over this one:
    /// a pattern it gives for a provider replaces the same pattern here; `replace_builtin =
    /// true` drops every entry here first.
    pub fn overlay(&mut self, text: &str, origin: &str) -> Result<(), PricingError> {
        let (entries, replace) = parse(text, origin, true)?;
        if replace {
            self.entries.clear();
        }
        for e in &entries {
            for old in self.entries.iter_mut().filter(|o| o.provider == e.provider) {
                old.models.retain(|m| !e.models.contains(m));
            }
        }
        self.entries.retain(|e| !e.models.is_empty());
        self.entries.extend(entries);
        Ok(())
    }

    /// The entry that prices `provider`'s `model`: of those with a matching pattern, the most
    /// specific (exact before glob, then most literal characters; the user's before the
    /// built-in).
    pub fn entry(&self, provider: &str, model: &str) -> Option<&PriceEntry> {
        let model = normalize_model(model);
        let provider = provider.to_ascii_lowercase();
        self.entries
            .iter()
            .filter(|e| e.provider == provider)
            .filter_map(|e| {
                e.models
                    .iter()
                    .filter(|p| glob(p, &model))
                    .map(|p| (!p.contains('*'), p.chars().filter(|c| *c != '*').count()))
                    .max()
                    .map(|(exact, literal)| ((exact, literal, e.user), e))
            })
            .max_by_key(|(key, _)| *key)
            .map(|(_, e)| e)
    }

    /// What `tokens` of `provider`'s `model` cost.
    pub fn cost(&self, provider: &str, model: &str, tokens: &Tokens) -> Result<Usd, Unpriced> {
        self.entry(provider, model)
            .ok_or(Unpriced::UnknownModel)?
            .cost(tokens)
    }

    /// A call as recorded: its `llm_response` (provider, model, usage) and, for the model when
    /// the answer does not name it, its `llm_request`.
    pub fn price_call(&self, response: &Value, request: Option<&Value>) -> PricedCall {
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let provider = s(response, "provider").unwrap_or_default();
        let model = s(response, "model")
            .or_else(|| request.and_then(|r| s(r, "model")))
            .filter(|m| !m.is_empty());
        let tokens = response
            .get("usage")
            .and_then(|u| Tokens::from_usage(&provider, u));
        let error = response.get("error").is_some_and(|e| !e.is_null());
        let cost = match (&model, &tokens) {
            // An error answer without usage: the provider bills nothing for it.
            (_, None) if error => Ok(Usd(0)),
            (_, None) => Err(Unpriced::NoUsage),
            (None, _) => Err(Unpriced::NoModel),
            (Some(m), Some(t)) => self.cost(&provider, m, t),
        };
        PricedCall {
            provider,
            model,
            tokens,
            cost,
        }
    }
}

/// One model call priced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedCall {
    /// The answer's provider.
    pub provider: String,
    /// The model, as the answer (or request) named it.
    pub model: Option<String>,
    /// Its tokens, when it recorded usage.
    pub tokens: Option<Tokens>,
    /// Its cost, or why there is none.
    pub cost: Result<Usd, Unpriced>,
}

impl PricedCall {
    /// Why this call has no price, for people: `gpt-9: model not in the pricing table`.
    pub fn why_unpriced(&self) -> Option<String> {
        let e = self.cost.as_ref().err()?;
        Some(match (&self.model, e) {
            (Some(m), Unpriced::UnknownModel | Unpriced::NoPriceFor(_)) => {
                format!("{} {m}: {e}", self.provider)
            }
            _ => e.to_string(),
        })
    }
}

/// Model calls added up: how many, their tokens, the cost of those priced, and why the others
/// are not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Model calls.
    pub calls: u64,
    /// Of them, those with a cost.
    pub priced: u64,
    /// Their tokens (every call that recorded usage, priced or not).
    pub tokens: Tokens,
    /// The cost of the priced calls.
    pub cost: Usd,
    /// Calls without a price, by why ([`PricedCall::why_unpriced`]).
    pub unpriced: std::collections::BTreeMap<String, u64>,
}

impl Tally {
    /// Adds one call.
    pub fn add(&mut self, call: &PricedCall) {
        self.calls += 1;
        if let Some(t) = &call.tokens {
            self.tokens.add(t);
        }
        match (&call.cost, call.why_unpriced()) {
            (Ok(c), _) => {
                self.priced += 1;
                self.cost += *c;
            }
            (Err(_), why) => *self.unpriced.entry(why.unwrap_or_default()).or_default() += 1,
        }
    }

    /// Adds another tally.
    pub fn merge(&mut self, other: &Tally) {
        self.calls += other.calls;
        self.priced += other.priced;
        self.tokens.add(&other.tokens);
        self.cost += other.cost;
        for (why, n) in &other.unpriced {
            *self.unpriced.entry(why.clone()).or_default() += n;
        }
    }

    /// Calls without a price.
    pub fn unpriced_calls(&self) -> u64 {
        self.calls - self.priced
    }
}

impl PriceEntry {
    /// What `tokens` cost at this entry's prices (its long-context prices when the prompt is
    /// over their threshold).
    pub fn cost(&self, tokens: &Tokens) -> Result<Usd, Unpriced> {
        let base = &self.prices;
        let p = match &self.long_context {
            Some((above, long)) if tokens.prompt() > *above => long,
            _ => base,
        };
        let rate = |n: u64, kind: &'static str, r: Option<Rate>| -> Result<u128, Unpriced> {
            match (n, r) {
                (0, _) => Ok(0),
                (n, Some(r)) => Ok(u128::from(n) * u128::from(r)),
                (_, None) => Err(Unpriced::NoPriceFor(kind)),
            }
        };
        let total = rate(tokens.input, "input", Some(p.input))?
            + rate(tokens.cache_read, "cache_read", p.cache_read)?
            + rate(tokens.cache_write_5m, "cache_write_5m", p.cache_write_5m)?
            + rate(tokens.cache_write_1h, "cache_write_1h", p.cache_write_1h)?
            + rate(tokens.output, "output", Some(p.output))?
            + rate(
                tokens.reasoning,
                "reasoning",
                Some(p.reasoning.unwrap_or(p.output)),
            )?;
        Ok(Usd(total))
    }
}

/// Model ids compare in lower case, without an API path's `models/`.
fn normalize_model(model: &str) -> String {
    let m = model.trim();
    m.strip_prefix("models/").unwrap_or(m).to_ascii_lowercase()
}

/// `pattern` (with `*` for any run of characters) matches all of `text`.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

// === The file ===

/// Why a pricing file could not be used; one line naming the file (and line and column).
#[derive(Debug, thiserror::Error)]
pub enum PricingError {
    /// The file could not be read.
    #[error("{}: cannot read pricing file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, or not a pricing table.
    #[error("{}: {message}", locate(origin, *location))]
    Syntax {
        /// The file.
        origin: String,
        /// 1-based line and column, when known.
        location: Option<(usize, usize)>,
        /// What is wrong.
        message: String,
    },
}

fn locate(origin: &str, location: Option<(usize, usize)>) -> String {
    match location {
        Some((line, column)) => format!("{origin}:{line}:{column}"),
        None => origin.to_owned(),
    }
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = (0..=offset.min(text.len()))
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[start..].chars().count() + 1)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    replace_builtin: bool,
    #[serde(default, rename = "model")]
    models: Vec<Spanned<RawEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    provider: Spanned<String>,
    models: Spanned<Vec<Spanned<String>>>,
    input: Option<Spanned<toml::Value>>,
    output: Option<Spanned<toml::Value>>,
    cache_read: Option<Spanned<toml::Value>>,
    cache_write_5m: Option<Spanned<toml::Value>>,
    cache_write_1h: Option<Spanned<toml::Value>>,
    reasoning: Option<Spanned<toml::Value>>,
    long_context: Option<Spanned<RawLong>>,
    source: Option<String>,
    as_of: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLong {
    above: Spanned<i64>,
    input: Option<Spanned<toml::Value>>,
    output: Option<Spanned<toml::Value>>,
    cache_read: Option<Spanned<toml::Value>>,
    cache_write_5m: Option<Spanned<toml::Value>>,
    cache_write_1h: Option<Spanned<toml::Value>>,
    reasoning: Option<Spanned<toml::Value>>,
}

/// The prices of a `[[model]]` or of its `long_context` (serde's `flatten` would lose the
/// spans).
struct RawPrices {
    input: Option<Spanned<toml::Value>>,
    output: Option<Spanned<toml::Value>>,
    cache_read: Option<Spanned<toml::Value>>,
    cache_write_5m: Option<Spanned<toml::Value>>,
    cache_write_1h: Option<Spanned<toml::Value>>,
    reasoning: Option<Spanned<toml::Value>>,
}

const PROVIDERS: [&str; 3] = ["anthropic", "openai", "gemini"];

/// The entries of a table's text and its `replace_builtin`.
fn parse(text: &str, origin: &str, user: bool) -> Result<(Vec<PriceEntry>, bool), PricingError> {
    let fail = |offset: Option<usize>, message: String| PricingError::Syntax {
        origin: origin.to_owned(),
        location: offset.map(|o| line_column(text, o)),
        message,
    };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        fail(
            e.span().map(|s| s.start),
            e.message().trim().replace('\n', "; "),
        )
    })?;
    let mut entries = Vec::new();
    for (i, spanned) in raw.models.into_iter().enumerate() {
        let start = spanned.span().start;
        let e = spanned.into_inner();
        let what = |m: &str| format!("model[{}]: {m}", i + 1);
        let provider = e.provider.get_ref().to_ascii_lowercase();
        if !PROVIDERS.contains(&provider.as_str()) {
            return Err(fail(
                Some(e.provider.span().start),
                what(&format!(
                    "provider {:?} is not one of {}",
                    e.provider.get_ref(),
                    PROVIDERS.join(", ")
                )),
            ));
        }
        let models_at = e.models.span().start;
        let mut models = Vec::new();
        for m in e.models.into_inner() {
            let p = m.get_ref().trim().to_ascii_lowercase();
            if p.is_empty() || p.chars().all(|c| c == '*') {
                return Err(fail(
                    Some(m.span().start),
                    what("a model pattern needs some characters besides *"),
                ));
            }
            models.push(p);
        }
        if models.is_empty() {
            return Err(fail(Some(models_at), what("models is empty")));
        }
        let raw_prices = RawPrices {
            input: e.input,
            output: e.output,
            cache_read: e.cache_read,
            cache_write_5m: e.cache_write_5m,
            cache_write_1h: e.cache_write_1h,
            reasoning: e.reasoning,
        };
        let base = prices(&raw_prices, None, &|o, m| fail(Some(o), what(&m)), start)?;
        let long_context = match e.long_context {
            None => None,
            Some(l) => {
                let at = l.span().start;
                let l = l.into_inner();
                let above = u64::try_from(*l.above.get_ref()).map_err(|_| {
                    fail(
                        Some(l.above.span().start),
                        what("long_context.above must be a token count (0 or more)"),
                    )
                })?;
                let raw_long = RawPrices {
                    input: l.input,
                    output: l.output,
                    cache_read: l.cache_read,
                    cache_write_5m: l.cache_write_5m,
                    cache_write_1h: l.cache_write_1h,
                    reasoning: l.reasoning,
                };
                let long = prices(&raw_long, Some(&base), &|o, m| fail(Some(o), what(&m)), at)?;
                Some((above, long))
            }
        };
        entries.push(PriceEntry {
            provider,
            models,
            prices: base,
            long_context,
            source: e.source,
            as_of: e.as_of,
            origin: format!("{origin}:{}", line_column(text, start).0),
            user,
        });
    }
    Ok((entries, raw.replace_builtin))
}

/// The prices of one tier; `base` fills in what a long-context tier leaves out.
fn prices(
    raw: &RawPrices,
    base: Option<&Prices>,
    fail: &dyn Fn(usize, String) -> PricingError,
    at: usize,
) -> Result<Prices, PricingError> {
    let one = |v: &Option<Spanned<toml::Value>>,
               name: &str|
     -> Result<Option<Rate>, PricingError> {
        v.as_ref()
            .map(|v| rate(v.get_ref()).map_err(|m| fail(v.span().start, format!("{name}: {m}"))))
            .transpose()
    };
    let required = |v: Option<Rate>, base: Option<Rate>, name: &str| {
        v.or(base)
            .ok_or_else(|| fail(at, format!("{name} is required (USD per million tokens)")))
    };
    let or = |v: Option<Rate>, b: Option<Rate>| v.or(b);
    Ok(Prices {
        input: required(one(&raw.input, "input")?, base.map(|b| b.input), "input")?,
        output: required(
            one(&raw.output, "output")?,
            base.map(|b| b.output),
            "output",
        )?,
        cache_read: or(
            one(&raw.cache_read, "cache_read")?,
            base.and_then(|b| b.cache_read),
        ),
        cache_write_5m: or(
            one(&raw.cache_write_5m, "cache_write_5m")?,
            base.and_then(|b| b.cache_write_5m),
        ),
        cache_write_1h: or(
            one(&raw.cache_write_1h, "cache_write_1h")?,
            base.and_then(|b| b.cache_write_1h),
        ),
        reasoning: or(
            one(&raw.reasoning, "reasoning")?,
            base.and_then(|b| b.reasoning),
        ),
    })
}

/// A price in USD per million tokens (an integer, a decimal, or a decimal string) as
/// micro-dollars per million tokens, exactly.
fn rate(v: &toml::Value) -> Result<Rate, String> {
    let text = match v {
        toml::Value::Integer(i) => i.to_string(),
        // A float's shortest round-trip form is the decimal that was written (for any price
        // with at most 15 significant digits), so nothing is lost by going through it.
        toml::Value::Float(f) if f.is_finite() => format!("{f}"),
        toml::Value::String(s) => s.trim().to_owned(),
        _ => return Err("a price is a number of USD per million tokens".into()),
    };
    let bad = || format!("{text:?} is not a price (USD per million tokens, at most 6 decimals)");
    if text.starts_with('-') {
        return Err(format!("{text} is negative"));
    }
    let (whole, frac) = text.split_once('.').unwrap_or((&text, ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 6
    {
        return Err(bad());
    }
    let whole: u64 = whole.parse().map_err(|_| bad())?;
    let frac: u64 = format!("{frac:0<6}").parse().map_err(|_| bad())?;
    whole
        .checked_mul(1_000_000)
        .and_then(|w| w.checked_add(frac))
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_builtin_table_parses_and_every_entry_says_where_and_when() {
        let (entries, replace) = parse(BUILTIN, "pricing.toml", false).unwrap();
        assert!(!replace);
        assert!(entries.len() > 20, "{}", entries.len());
        for e in &entries {
            assert!(e.source.is_some() && e.as_of.is_some(), "{}", e.origin);
        }
        // No pattern is in two entries of one provider: which price wins would be an accident.
        let mut seen = std::collections::HashSet::new();
        for e in &entries {
            for m in &e.models {
                assert!(seen.insert((e.provider.clone(), m.clone())), "{m} twice");
            }
        }
    }

    #[test]
    fn prices_are_read_exactly() {
        let r = |s: &str| rate(&s.parse::<toml::Table>().unwrap()["x"]);
        assert_eq!(r("x = 3"), Ok(3_000_000));
        assert_eq!(r("x = 0.075"), Ok(75_000));
        assert_eq!(r("x = 18.75"), Ok(18_750_000));
        assert_eq!(r("x = 0.000001"), Ok(1));
        assert_eq!(r("x = \"0.30\""), Ok(300_000));
        assert!(r("x = 0.0000001").is_err());
        assert!(r("x = -1").is_err());
        assert!(r("x = \"abc\"").is_err());
        assert!(r("x = true").is_err());
    }

    #[test]
    fn the_most_specific_pattern_wins() {
        let t = PriceTable::builtin();
        let input = |p: &str, m: &str| t.entry(p, m).map(|e| e.prices.input);
        assert_eq!(input("openai", "gpt-4o-mini-2024-07-18"), Some(150_000));
        assert_eq!(input("openai", "gpt-4o-2024-08-06"), Some(2_500_000));
        assert_eq!(input("openai", "gpt-5-mini-2025-08-07"), Some(250_000));
        assert_eq!(input("openai", "gpt-5-2025-08-07"), Some(1_250_000));
        assert_eq!(input("openai", "gpt-5.2-pro"), Some(21_000_000));
        assert_eq!(input("openai", "o3-mini-2025-01-31"), Some(1_100_000));
        assert_eq!(
            input("anthropic", "claude-sonnet-4-5-20250929"),
            Some(3_000_000)
        );
        assert_eq!(
            input("anthropic", "claude-opus-4-5-20251101"),
            Some(5_000_000)
        );
        assert_eq!(
            input("anthropic", "claude-opus-4-1-20250805"),
            Some(15_000_000)
        );
        assert_eq!(
            input("gemini", "models/gemini-2.5-flash-lite"),
            Some(100_000)
        );
        assert_eq!(input("gemini", "gemini-2.5-flash"), Some(300_000));
        // Not in the table: no guess from a near name.
        assert_eq!(input("openai", "gpt-9"), None);
        assert_eq!(input("anthropic", "claude-opus-4-7"), None);
        assert_eq!(input("gemini", "claude-sonnet-4-5"), None);
    }

    #[test]
    fn globs() {
        assert!(glob("claude-sonnet-4-5*", "claude-sonnet-4-5-20250929"));
        assert!(glob("claude-sonnet-4-5*", "claude-sonnet-4-5"));
        assert!(!glob("claude-sonnet-4-5*", "claude-sonnet-4"));
        assert!(glob("*sonnet*", "claude-3-7-sonnet-latest"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(glob("gpt-4o", "gpt-4o"));
        assert!(!glob("gpt-4o", "gpt-4o-mini"));
    }

    #[test]
    fn a_users_file_overrides_and_adds() {
        let mut t = PriceTable::builtin();
        t.overlay(
            "[[model]]\nprovider = \"openai\"\nmodels = [\"gpt-4o\"]\ninput = 1\noutput = 2\n\
             [[model]]\nprovider = \"openai\"\nmodels = [\"gpt-9*\"]\ninput = 7\noutput = 8\n",
            "mine.toml",
        )
        .unwrap();
        assert_eq!(t.entry("openai", "gpt-4o").unwrap().prices.input, 1_000_000);
        assert_eq!(t.entry("openai", "gpt-4o").unwrap().origin, "mine.toml:1");
        // The built-in entry's other patterns stay.
        assert_eq!(
            t.entry("openai", "gpt-4o-2024-08-06").unwrap().prices.input,
            2_500_000
        );
        assert_eq!(
            t.entry("openai", "gpt-9-turbo").unwrap().prices.output,
            8_000_000
        );
        t.overlay("replace_builtin = true\n", "empty.toml").unwrap();
        assert!(t.entry("openai", "gpt-4o").is_none());
    }

    #[test]
    fn bad_files_name_file_line_and_column() {
        let err = |text: &str| {
            PriceTable::builtin()
                .overlay(text, "p.toml")
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("[[model]]\nprovider = \"openai\"\nmodels = [\"m\"]\ninput = 1\noutput = -2\n"),
            "p.toml:5:10: model[1]: output: -2 is negative"
        );
        assert_eq!(
            err("[[model]]\nprovider = \"acme\"\nmodels = [\"m\"]\ninput = 1\noutput = 2\n"),
            "p.toml:2:12: model[1]: provider \"acme\" is not one of anthropic, openai, gemini"
        );
        assert_eq!(
            err("[[model]]\nprovider = \"openai\"\nmodels = [\"m\"]\ninput = 1\n"),
            "p.toml:1:1: model[1]: output is required (USD per million tokens)"
        );
        let e = err("[[model]]\nprovider = \"openai\"\nmodles = [\"m\"]\n");
        assert!(e.starts_with("p.toml:3:1: unknown field `modles`"), "{e}");
        let e = err("[[model]\n");
        assert!(e.starts_with("p.toml:1:"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn usage_becomes_disjoint_kinds() {
        let a = json!({"input_tokens": 10, "output_tokens": 5, "cache_read": 100,
                       "cache_write": 50, "cache_write_5m": 20, "cache_write_1h": 30});
        assert_eq!(
            Tokens::from_usage("anthropic", &a),
            Some(Tokens {
                input: 10,
                cache_read: 100,
                cache_write_5m: 20,
                cache_write_1h: 30,
                output: 5,
                reasoning: 0
            })
        );
        // A total with no split: the default lifetime.
        let a = json!({"input_tokens": 10, "output_tokens": 5, "cache_write": 50});
        assert_eq!(
            Tokens::from_usage("anthropic", &a).unwrap().cache_write_5m,
            50
        );
        let o = json!({"input_tokens": 1000, "output_tokens": 300, "cache_read": 800,
                       "reasoning_tokens": 200});
        assert_eq!(
            Tokens::from_usage("openai", &o),
            Some(Tokens {
                input: 200,
                cache_read: 800,
                output: 100,
                reasoning: 200,
                ..Tokens::default()
            })
        );
        let g = json!({"input_tokens": 90, "output_tokens": 40, "cache_read": 64,
                       "reasoning_tokens": 50, "tool_prompt_tokens": 7});
        assert_eq!(
            Tokens::from_usage("gemini", &g),
            Some(Tokens {
                input: 33,
                cache_read: 64,
                output: 40,
                reasoning: 50,
                ..Tokens::default()
            })
        );
        assert_eq!(Tokens::from_usage("openai", &Value::Null), None);
        assert_eq!(Tokens::from_usage("openai", &json!({})), None);
        assert_eq!(Tokens::from_usage("acme", &o), None);
    }

    #[test]
    fn long_context_prices_apply_above_the_threshold() {
        let t = PriceTable::builtin();
        let at = |input| {
            let tokens = Tokens {
                input,
                output: 1_000,
                ..Tokens::default()
            };
            t.cost("gemini", "gemini-2.5-pro", &tokens).unwrap().exact()
        };
        // 200,000 × $1.25 + 1,000 × $10 per MTok = $0.25 + $0.01
        assert_eq!(at(200_000), "0.26");
        // 200,001 × $2.50 + 1,000 × $15 per MTok = $0.5000025 + $0.015
        assert_eq!(at(200_001), "0.5150025");
    }

    #[test]
    fn a_kind_with_no_price_is_unpriced_not_free() {
        let t = PriceTable::builtin();
        let tokens = Tokens {
            input: 10,
            cache_read: 5,
            output: 1,
            ..Tokens::default()
        };
        assert_eq!(
            t.cost("openai", "gpt-5-pro", &tokens),
            Err(Unpriced::NoPriceFor("cache_read"))
        );
        assert_eq!(
            t.cost("openai", "gpt-9", &tokens),
            Err(Unpriced::UnknownModel)
        );
    }

    #[test]
    fn dollars_print_exactly_and_rounded() {
        assert_eq!(Usd(2_072_500_000).exact(), "0.0020725");
        assert_eq!(Usd(2_072_500_000).to_string(), "$0.002073");
        assert_eq!(Usd(12_000_000_000_000).exact(), "12");
        assert_eq!(Usd(12_000_000_000_000).to_string(), "$12.000000");
        assert_eq!(Usd(1).exact(), "0.000000000001");
        assert_eq!(Usd(0).to_string(), "$0.000000");
    }
}
