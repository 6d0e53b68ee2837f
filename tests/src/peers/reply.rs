//! What the mock model says: one provider-neutral [`Reply`] that each provider module renders
//! in its own wire format, buffered or streamed.
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The content of one model answer. Deserialisable, so a test can send one per request in the
/// header `x-peer-reply` (JSON) and the peers binary can take one with `--reply`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Reply {
    /// Model name to answer with (default: the one the request asked for).
    pub model: Option<String>,
    /// Thinking / reasoning text (Anthropic `thinking`, OpenAI Responses reasoning summary,
    /// Gemini `thought: true` part).
    pub thinking: Option<String>,
    /// Signature of the thinking block (Anthropic); derived from the text when `None`.
    pub signature: Option<String>,
    /// Opaque data of a `redacted_thinking` block (Anthropic only).
    pub redacted_thinking: Option<String>,
    /// Also render `thinking` in Chat Completions as `reasoning_content` (a common extension
    /// of OpenAI-compatible servers; OpenAI's own Chat Completions never return reasoning).
    pub chat_reasoning: bool,
    /// Text blocks, in order (Chat Completions joins them with a blank line).
    pub texts: Vec<String>,
    /// Tool calls, in order; several make a parallel call.
    pub tool_calls: Vec<ToolCall>,
    /// Stop reason in Anthropic's words (`end_turn`, `tool_use`, `max_tokens`…); derived
    /// from the content when `None` and mapped for the other providers.
    pub stop_reason: Option<String>,
    /// Input tokens to report (default: request body length / 4).
    pub input_tokens: Option<u64>,
    /// Output tokens to report (default: content length / 4 + 1).
    pub output_tokens: Option<u64>,
    /// Characters per streamed delta (default 12).
    pub delta_chars: Option<usize>,
}

/// One tool call the model makes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCall {
    /// Call id (`toolu_…` / `call_…`); generated per request when `None`.
    #[serde(default)]
    pub id: Option<String>,
    /// Tool name.
    pub name: String,
    /// Arguments (a JSON object).
    #[serde(default)]
    pub input: Value,
}

impl ToolCall {
    /// A call of `name` with `input`, its id generated.
    pub fn new(name: &str, input: Value) -> ToolCall {
        ToolCall {
            id: None,
            name: name.into(),
            input,
        }
    }
}

impl Reply {
    /// A reply of one text block.
    pub fn text(text: &str) -> Reply {
        Reply {
            texts: vec![text.into()],
            ..Reply::default()
        }
    }

    /// The demo's first answer: a thought, a sentence, and a `place_order` tool call.
    pub fn default_first() -> Reply {
        Reply {
            thinking: Some(
                "The user wants to buy 10 shares of ACME at market. I have a place_order tool; \
                 I'll call it with symbol ACME, qty 10, side buy."
                    .into(),
            ),
            texts: vec!["I'll place that order for you now.".into()],
            tool_calls: vec![ToolCall::new(
                "place_order",
                json!({"symbol": "ACME", "qty": 10, "side": "buy"}),
            )],
            ..Reply::default()
        }
    }

    /// The demo's answer once a tool result came back.
    pub fn default_after_tool() -> Reply {
        Reply::text("Done — your order for 10 ACME shares was placed. ✅")
    }

    pub(crate) fn stop_reason(&self) -> String {
        self.stop_reason.clone().unwrap_or_else(|| {
            if self.tool_calls.is_empty() {
                "end_turn".into()
            } else {
                "tool_use".into()
            }
        })
    }

    pub(crate) fn delta_chars(&self) -> usize {
        self.delta_chars.unwrap_or(12).max(1)
    }

    pub(crate) fn signature(&self) -> String {
        self.signature.clone().unwrap_or_else(|| {
            use base64::Engine as _;
            use sha2::Digest as _;
            let digest = sha2::Sha256::digest(self.thinking.as_deref().unwrap_or("").as_bytes());
            base64::engine::general_purpose::STANDARD.encode(digest)
        })
    }

    pub(crate) fn input_tokens(&self, request_len: usize) -> u64 {
        self.input_tokens.unwrap_or((request_len / 4) as u64 + 1)
    }

    pub(crate) fn output_tokens(&self) -> u64 {
        self.output_tokens.unwrap_or_else(|| {
            let chars: usize = self.texts.iter().map(String::len).sum::<usize>()
                + self.thinking.as_deref().map_or(0, str::len)
                + self
                    .tool_calls
                    .iter()
                    .map(|t| t.input.to_string().len())
                    .sum::<usize>();
            (chars / 4) as u64 + 1
        })
    }

    /// The id of tool call `i`: its own, or `prefix` + a token unique to this request.
    pub(crate) fn call_id(&self, i: usize, prefix: &str, token: &str) -> String {
        self.tool_calls[i]
            .id
            .clone()
            .unwrap_or_else(|| format!("{prefix}{token}{i:02}"))
    }
}

/// A deterministic alphanumeric token for ids (`msg_…`, `toolu_…`), from a counter.
pub(crate) fn token(n: u64) -> String {
    // splitmix64 keeps neighbouring counters far apart.
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZabcdefghijkmnopqrstuvwxyz";
    (0..16)
        .map(|i| ALPHABET[((z >> (i * 4)) as usize + i * 7) % ALPHABET.len()] as char)
        .collect()
}
