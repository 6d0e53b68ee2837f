//! The model's answer in one shape for every provider: the `llm_response` annotation.
//!
//! ```text
//! {provider, api, model, id,
//!  thinking: [{text, signature}], redacted_thinking: n,
//!  text: [string…],                        every text block, in order
//!  tool_calls: [{id, name, input, input_error?}],
//!  stop_reason, usage: {input_tokens, output_tokens, cache_read?, cache_write?,
//!                       cache_write_5m?, cache_write_1h?, reasoning_tokens?,
//!                       tool_prompt_tokens?} | null,
//!  choices?: n, text_choice?: [i…],         only with several choices: the choice of
//!                                          each `text` entry; each tool call gets `choice`
//!  error?: {type, message}}                 when the provider answered with an error
//! ```
//! `input` is the parsed JSON of the call's arguments; when they do not parse it is the raw
//! string and `input_error` says why.
//!
//! `usage` holds the provider's counters under one set of names, each as the provider counts
//! it (SPEC §4.14.2 says, per provider, which counts include which): Anthropic's
//! `input_tokens` leaves out the cache reads and writes, OpenAI's and Gemini's include the
//! cache reads; OpenAI's `output_tokens` include the reasoning, Gemini's do not. Nothing is
//! added up or subtracted here: [`crate::cost`] does that, once.
use serde_json::{json, Map, Value};

use super::json::{rejoin, str_of, u64_of};
use super::{Api, Errs};

/// The model's answer, assembled from a buffered body or a stream.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct Reply {
    pub provider: &'static str,
    pub api: &'static str,
    pub model: Option<String>,
    pub id: Option<String>,
    pub thinking: Vec<Thinking>,
    pub redacted_thinking: u64,
    /// (choice, text)
    pub text: Vec<(u64, String)>,
    pub tool_calls: Vec<ToolCall>,
    pub stop_reason: Option<String>,
    pub usage: Option<Usage>,
    /// Number of choices (OpenAI `n`, Gemini candidates); 1 unless there were more.
    pub choices: u64,
    pub error: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Thinking {
    pub text: String,
    pub signature: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct ToolCall {
    pub choice: u64,
    pub id: Option<String>,
    pub name: Option<String>,
    pub input: Value,
    pub input_error: Option<String>,
}

impl ToolCall {
    /// A call whose arguments came as a JSON text (OpenAI, Anthropic streams); empty
    /// arguments are an empty object, as the providers treat them.
    pub fn from_text(choice: u64, id: Option<String>, name: Option<String>, args: &str) -> Self {
        let args = rejoin(args);
        let (input, input_error) = if args.trim().is_empty() {
            (json!({}), None)
        } else {
            match serde_json::from_str::<Value>(&args) {
                Ok(v) => (v, None),
                Err(e) => (Value::String(args.into_owned()), Some(e.to_string())),
            }
        };
        ToolCall {
            choice,
            id,
            name,
            input,
            input_error,
        }
    }
}

/// The provider's token counters, as it counts them (see the module docs).
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct Usage {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    /// Prompt tokens read from the provider's cache.
    pub cache_read: Option<u64>,
    /// Prompt tokens written to the cache (Anthropic `cache_creation_input_tokens`).
    pub cache_write: Option<u64>,
    /// Of `cache_write`, those written for 5 minutes / for 1 hour (Anthropic
    /// `cache_creation.ephemeral_5m_input_tokens` / `ephemeral_1h_input_tokens`).
    pub cache_write_5m: Option<u64>,
    pub cache_write_1h: Option<u64>,
    /// Reasoning (thinking) tokens the provider counts apart.
    pub reasoning_tokens: Option<u64>,
    /// Gemini `toolUsePromptTokenCount`: prompt tokens of tool use, not in `input_tokens`.
    pub tool_prompt_tokens: Option<u64>,
}

impl Reply {
    pub fn new(provider: &'static str, api: &'static str) -> Self {
        Reply {
            provider,
            api,
            choices: 1,
            ..Reply::default()
        }
    }

    pub fn push_text(&mut self, choice: u64, text: &str) {
        if !text.is_empty() {
            self.text.push((choice, text.to_string()));
        }
    }

    pub fn to_json(&self) -> Value {
        let several = self.choices > 1;
        let calls: Vec<Value> = self
            .tool_calls
            .iter()
            .map(|c| {
                let mut v = json!({"id": c.id, "name": c.name, "input": c.input});
                if let Some(e) = &c.input_error {
                    v["input_error"] = json!(e);
                }
                if several {
                    v["choice"] = json!(c.choice);
                }
                v
            })
            .collect();
        let mut v = json!({
            "provider": self.provider,
            "api": self.api,
            "model": self.model,
            "id": self.id,
            "thinking": self.thinking.iter()
                .map(|t| json!({"text": rejoin(&t.text), "signature": t.signature}))
                .collect::<Vec<_>>(),
            "redacted_thinking": self.redacted_thinking,
            "text": self.text.iter().map(|(_, t)| rejoin(t)).collect::<Vec<_>>(),
            "tool_calls": calls,
            "stop_reason": self.stop_reason,
            "usage": self.usage.as_ref().map(Usage::to_json),
        });
        if several {
            v["choices"] = json!(self.choices);
            v["text_choice"] = json!(self.text.iter().map(|(c, _)| *c).collect::<Vec<_>>());
        }
        if let Some(e) = &self.error {
            v["error"] = e.clone();
        }
        v
    }
}

impl Usage {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("input_tokens".into(), json!(self.input_tokens));
        m.insert("output_tokens".into(), json!(self.output_tokens));
        for (k, v) in [
            ("cache_read", self.cache_read),
            ("cache_write", self.cache_write),
            ("cache_write_5m", self.cache_write_5m),
            ("cache_write_1h", self.cache_write_1h),
            ("reasoning_tokens", self.reasoning_tokens),
            ("tool_prompt_tokens", self.tool_prompt_tokens),
        ] {
            if let Some(n) = v {
                m.insert(k.into(), json!(n));
            }
        }
        Value::Object(m)
    }
}

/// An error answer (status not 2xx) in the provider's JSON, as an `llm_response` with `error`;
/// `None` when the body is not JSON (the `http` annotation already has the status).
pub(super) fn error_reply(api: Api, body: &[u8], _errs: &mut Errs) -> Option<Reply> {
    let v: Value = serde_json::from_slice(body).ok()?;
    // Gemini streams errors as a one-element array.
    let v = match v {
        Value::Array(mut a) if !a.is_empty() => a.swap_remove(0),
        v => v,
    };
    let e = v.get("error")?;
    let (provider, name) = match api {
        Api::AnthropicMessages => ("anthropic", "messages"),
        Api::OpenAiChat => ("openai", "chat.completions"),
        Api::OpenAiResponses => ("openai", "responses"),
        Api::Gemini { .. } => ("gemini", "generateContent"),
    };
    let mut r = Reply::new(provider, name);
    r.error = Some(error_of(e));
    Some(r)
}

/// `{type, message}` from a provider's error object (or string).
pub(super) fn error_of(e: &Value) -> Value {
    if let Some(s) = e.as_str() {
        return json!({"type": null, "message": s});
    }
    let kind = str_of(e, "type")
        .or_else(|| str_of(e, "status"))
        .or_else(|| str_of(e, "code"))
        .map(str::to_string)
        .or_else(|| u64_of(e, "code").map(|c| c.to_string()));
    json!({"type": kind, "message": str_of(e, "message")})
}
