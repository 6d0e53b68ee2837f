//! What a recorded HTTP exchange means: pure parsers that turn one exchange (heads and complete
//! bodies) into annotations — the LLM request and the model's answer (Anthropic Messages, OpenAI
//! Chat Completions and Responses, Gemini), MCP JSON-RPC calls and results, and for everything
//! a one-line HTTP summary. Buffered and streamed (SSE) answers give the same annotation, and
//! so does the Responses API over WebSocket ([`websocket`]), one call per `response.create`.
//!
//! Nothing here does I/O or alters a byte; a malformed or truncated body never panics and never
//! stops the other annotations: it adds a `parse_error` saying what could not be parsed and
//! where, next to whatever could be.
//!
//! Bodies are read as they mean, not as they travelled: a `Content-Encoding` (gzip, deflate,
//! br, zstd, stacked) is undone first ([`decode`]), within [`crate::http::SEMANTICS_CAP`]. A
//! body that does not decode gets a `parse_error` from `semantics/http` (`what`:
//! `request body` / `response body`) and the parsers read what did decode.
//!
//! Topics (`by` is `semantics/anthropic`, `…/openai`, `…/gemini`, `…/mcp` or `…/http`):
//!
//! ```text
//! http:         {method, url, status, request_type, response_type, request_bytes,
//!                response_bytes, request_truncated?: true, response_truncated?: true,
//!                request_encoding?, request_decoded_bytes?, response_encoding?,
//!                response_decoded_bytes?}
//!   *_bytes as recorded (on the wire); *_encoding the Content-Encoding ("gzip", "gzip, br")
//!   and *_decoded_bytes what the parsers read, when the body was encoded; *_truncated when
//!   the capture or the decoded body was cut at the cap.
//! llm_request:  {provider, api, model, stream, system: string|null,
//!                messages: [{role, content: [block…]}], tools: [name…]}
//!   block: {type:"text",text} | {type:"tool_use",id,name,input}
//!        | {type:"tool_result",tool_use_id,content,is_error,name?} | {type:"image"}
//!        | {type:"thinking",text,signature} | {type:"refusal",text} | {type:OTHER}
//!   roles as sent, except Gemini "model" → "assistant"; OpenAI tool outputs are role "tool";
//!   system/developer messages and `instructions` are folded into `system`.
//!   OpenAI Responses only: `previous_response_id` when the request continues an earlier
//!   response (its `messages` are then only what is new), `generate: false` when it asked for
//!   nothing to be generated (a connection warm-up); `tools` unfolds namespaces (each tool
//!   named `namespace.name`, as calls of it are) and adds an `additional_tools` input item's.
//! llm_response: see `reply` (identical for buffered and streamed answers)
//! mcp_request, mcp_response: see `mcp`
//! parse_error:  {what: "anthropic response"…, where: "byte N" | "event N (byte B)"
//!                | "element N (byte B)" | "end (byte N)" | "headers" | "message N"
//!                | "message N (byte B)" | "connection end", error}
//! ```
//!
//! ```
//! use harness::semantics::{annotate, ExchangeView};
//! let x = ExchangeView {
//!     method: "GET", scheme: "https", authority: Some("example.test"), target: "/",
//!     request_headers: &[], request_body: b"", request_truncated: false,
//!     status: 204, response_headers: &[], response_body: b"", response_truncated: false,
//! };
//! let notes = annotate(&x);
//! assert_eq!(notes[0].topic, "http");
//! assert_eq!(notes[0].data["url"], "https://example.test/");
//! ```
use serde_json::{json, Value};

mod anthropic;
pub mod decode;
mod gemini;
mod json;
mod mcp;
pub use mcp::tool_calls as mcp_tool_calls;
mod openai_chat;
mod openai_responses;
mod reply;
mod sse;
pub mod websocket;

#[cfg(test)]
mod tests;

/// Entry points for the fuzz targets (`harness-daemon/fuzz`) into parsers that are otherwise
/// private. Not an API: it follows the parsers.
#[doc(hidden)]
pub mod fuzzing {
    /// One dispatched server-sent event: index, byte offset, `event` name, `data`, and the data
    /// as JSON when it is.
    pub type SseEvent = (usize, usize, String, String, Option<serde_json::Value>);

    /// The events of an SSE body as `sse::events` reads them, each also read as JSON as the
    /// stream parsers do, and the `parse_error`s met, as (where, error).
    pub fn sse_events(body: &[u8]) -> (Vec<SseEvent>, Vec<(String, String)>) {
        let mut errs = super::Errs::new("sse", false);
        let events = super::sse::events(body, &mut errs)
            .into_iter()
            .map(|e| {
                let json = e.json(&mut errs);
                (e.index, e.offset, e.name, e.data, json)
            })
            .collect();
        (events, errs.list)
    }
}

/// One HTTP exchange as recorded: heads, and bodies once they have fully passed.
#[derive(Debug, Clone, Copy)]
pub struct ExchangeView<'a> {
    /// Request method (`POST`).
    pub method: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// `Host` / `:authority`, when there was one.
    pub authority: Option<&'a str>,
    /// Path and query as recorded (secret query values already fingerprinted).
    pub target: &'a str,
    /// Request headers, names in lower case, secrets replaced by fingerprints.
    pub request_headers: &'a [(String, String)],
    /// The request body (complete, or cut at the capture cap when `request_truncated`).
    pub request_body: &'a [u8],
    /// The request body was cut at a cap.
    pub request_truncated: bool,
    /// Response status.
    pub status: u16,
    /// Response headers, names in lower case.
    pub response_headers: &'a [(String, String)],
    /// The response body as the client received it (SSE text for streams).
    pub response_body: &'a [u8],
    /// The response body was cut at a cap.
    pub response_truncated: bool,
}

/// What an exchange means, for an `annotation` entry (SPEC §4.14).
#[derive(Debug, Clone, PartialEq)]
pub struct Annotation {
    /// What produced it: `semantics/anthropic`, `semantics/openai`, `semantics/gemini`,
    /// `semantics/mcp`, `semantics/http`.
    pub by: &'static str,
    /// `http`, `llm_request`, `llm_response`, `mcp_request`, `mcp_response`, `parse_error`.
    pub topic: &'static str,
    /// The topic's data (shapes in the module docs of each parser and in `reply`).
    pub data: Value,
}

/// Annotates one exchange: always `http` first (and the `parse_error` of a body that does not
/// decode), then what the provider or protocol parsers make of it, each followed by the
/// `parse_error`s met on the way.
pub fn annotate(x: &ExchangeView) -> Vec<Annotation> {
    let cap = crate::http::SEMANTICS_CAP;
    let request = decode::decode(x.request_headers, x.request_body, cap);
    let response = decode::decode(x.response_headers, x.response_body, cap);
    let mut notes = Notes::default();
    notes.push("semantics/http", "http", http(x, &request, &response));
    for (what, d) in [("request body", &request), ("response body", &response)] {
        if let Some(e) = &d.error {
            notes.error("semantics/http", what, &e.place(), e.to_string());
        }
    }
    // The parsers see the decoded bodies, under heads that no longer claim a coding — unless
    // the coding is one `decode` does not know, which they then leave alone.
    let request_headers = decoded_heads(x.request_headers, &request);
    let response_headers = decoded_heads(x.response_headers, &response);
    let x = &ExchangeView {
        request_headers: &request_headers,
        request_body: &request.body,
        request_truncated: x.request_truncated || request.truncated,
        response_headers: &response_headers,
        response_body: &response.body,
        response_truncated: x.response_truncated || response.truncated,
        ..*x
    };
    if x.method.eq_ignore_ascii_case("POST") {
        match Api::of(path(x.target)) {
            Some(api) => llm(x, api, &mut notes),
            None => mcp::annotate(x, &mut notes),
        }
    } else {
        mcp::annotate(x, &mut notes);
    }
    notes.0
}

/// Heads without `content-encoding` once the body was decoded (if only in part: a body that
/// gave nothing, or a coding not known, keeps it, and the parsers leave that body alone).
fn decoded_heads(headers: &[(String, String)], d: &decode::Decoded) -> Vec<(String, String)> {
    let undone = match &d.error {
        None => true,
        Some(decode::DecodeError::Unsupported { .. }) => false,
        Some(decode::DecodeError::Corrupt { .. }) => !d.body.is_empty(),
    };
    headers
        .iter()
        .filter(|(n, _)| !(undone && n.eq_ignore_ascii_case("content-encoding")))
        .cloned()
        .collect()
}

/// The `http` summary every exchange gets.
fn http(x: &ExchangeView, request: &decode::Decoded, response: &decode::Decoded) -> Value {
    let mut data = json!({
        "method": x.method,
        "url": format!("{}://{}{}", x.scheme, x.authority.unwrap_or(""), x.target),
        "status": x.status,
        "request_type": header(x.request_headers, "content-type"),
        "response_type": header(x.response_headers, "content-type"),
        "request_bytes": x.request_body.len(),
        "response_bytes": x.response_body.len(),
    });
    if x.request_truncated || request.truncated {
        data["request_truncated"] = json!(true);
    }
    if x.response_truncated || response.truncated {
        data["response_truncated"] = json!(true);
    }
    for (side, d) in [("request", request), ("response", response)] {
        if d.is_encoded() {
            data[format!("{side}_encoding")] = json!(d.codings_list());
            data[format!("{side}_decoded_bytes")] = json!(d.body.len());
        }
    }
    data
}

// === Providers ===

/// The LLM APIs recognised, by path alone (any host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    AnthropicMessages,
    OpenAiChat,
    OpenAiResponses,
    /// `…/models/{model}:generateContent` or `:streamGenerateContent`.
    Gemini {
        stream: bool,
    },
}

impl Api {
    fn of(path: &str) -> Option<Api> {
        let path = path.trim_end_matches('/');
        let last = path.rsplit('/').next().unwrap_or("");
        if path.ends_with("/v1/messages") {
            Some(Api::AnthropicMessages)
        } else if path.ends_with("/chat/completions") {
            Some(Api::OpenAiChat)
        } else if path.ends_with("/v1/responses") || path.ends_with("/openai/responses") {
            Some(Api::OpenAiResponses)
        } else if last.ends_with(":generateContent") {
            Some(Api::Gemini { stream: false })
        } else if last.ends_with(":streamGenerateContent") {
            Some(Api::Gemini { stream: true })
        } else {
            None
        }
    }

    fn by(self) -> &'static str {
        match self {
            Api::AnthropicMessages => "semantics/anthropic",
            Api::OpenAiChat | Api::OpenAiResponses => "semantics/openai",
            Api::Gemini { .. } => "semantics/gemini",
        }
    }

    /// The provider's name in `parse_error.what`.
    fn provider(self) -> &'static str {
        match self {
            Api::AnthropicMessages => "anthropic",
            Api::OpenAiChat => "openai chat",
            Api::OpenAiResponses => "openai responses",
            Api::Gemini { .. } => "gemini",
        }
    }
}

/// A model call as the policy sees it before it is sent: its `llm_request` annotation (the
/// same one the ledger gets: `provider`, `model`, `tools`…), when `target` is a model API's
/// path. `body` is the request's JSON.
pub fn model_request(target: &str, body: &Value) -> Option<Value> {
    let api = Api::of(path(target))?;
    Some(match api {
        Api::AnthropicMessages => anthropic::request(body),
        Api::OpenAiChat => openai_chat::request(body),
        Api::OpenAiResponses => openai_responses::request(body),
        Api::Gemini { stream } => gemini::request(body, path(target), stream),
    })
}

fn llm(x: &ExchangeView, api: Api, notes: &mut Notes) {
    let by = api.by();
    let what_req = format!("{} request", api.provider());
    if let Some(body) = notes.json_body(
        by,
        &what_req,
        x.request_body,
        x.request_truncated,
        x.request_headers,
    ) {
        let req = match api {
            Api::AnthropicMessages => anthropic::request(&body),
            Api::OpenAiChat => openai_chat::request(&body),
            Api::OpenAiResponses => openai_responses::request(&body),
            Api::Gemini { stream } => gemini::request(&body, path(x.target), stream),
        };
        notes.push(by, "llm_request", req);
    }

    let what = format!("{} response", api.provider());
    // A coding `decode` does not know: `semantics/http` said so.
    if encoded(x.response_headers).is_some() {
        return;
    }
    let body = x.response_body;
    if body.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    let mut errs = Errs::new(&what, x.response_truncated);
    let sse = is_sse(x.response_headers) || sse::looks_like(body);
    let reply = if !(200..300).contains(&x.status) {
        reply::error_reply(api, body, &mut errs)
    } else {
        match api {
            Api::AnthropicMessages if sse => Some(anthropic::stream(body, &mut errs)),
            Api::AnthropicMessages => errs.json(body).map(|v| anthropic::response(&v)),
            Api::OpenAiChat if sse => Some(openai_chat::stream(body, &mut errs)),
            Api::OpenAiChat => errs.json(body).map(|v| openai_chat::response(&v)),
            Api::OpenAiResponses if sse => Some(openai_responses::stream(body, &mut errs)),
            Api::OpenAiResponses => errs.json(body).map(|v| openai_responses::response(&v)),
            Api::Gemini { .. } if sse => Some(gemini::sse_stream(body, &mut errs)),
            Api::Gemini { stream: true } => Some(gemini::array_stream(body, &mut errs)),
            Api::Gemini { stream: false } => errs.json(body).map(|v| gemini::response(&v)),
        }
    };
    if let Some(reply) = reply {
        notes.push(by, "llm_response", reply.to_json());
    }
    notes.take(by, errs);
}

// === Helpers shared by the parsers ===

/// The path of a target, without its query.
fn path(target: &str) -> &str {
    target.split(['?', '#']).next().unwrap_or("")
}

/// The first value of a header (names are lower case).
fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn is_sse(headers: &[(String, String)]) -> bool {
    header(headers, "content-type").is_some_and(|t| {
        t.trim_start()
            .to_ascii_lowercase()
            .starts_with("text/event-stream")
    })
}

/// A content encoding still claimed after decoding (one `decode` does not know): the body
/// cannot be read.
fn encoded(headers: &[(String, String)]) -> Option<&str> {
    header(headers, "content-encoding")
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("identity"))
}

/// Annotations gathered in order.
#[derive(Default)]
struct Notes(Vec<Annotation>);

impl Notes {
    fn push(&mut self, by: &'static str, topic: &'static str, data: Value) {
        self.0.push(Annotation { by, topic, data });
    }

    fn error(&mut self, by: &'static str, what: &str, at: &str, error: String) {
        self.push(
            by,
            "parse_error",
            json!({"what": what, "where": at, "error": error}),
        );
    }

    fn take(&mut self, by: &'static str, errs: Errs) {
        for (at, error) in errs.list {
            self.error(by, &errs.what, &at, error);
        }
    }

    /// A request body as JSON (whole, or what a cut one holds), noting what went wrong.
    fn json_body(
        &mut self,
        by: &'static str,
        what: &str,
        body: &[u8],
        truncated: bool,
        headers: &[(String, String)],
    ) -> Option<Value> {
        if encoded(headers).is_some() {
            // `semantics/http` said which coding is not supported.
            return None;
        }
        let mut errs = Errs::new(what, truncated);
        let v = errs.json(body);
        self.take(by, errs);
        v
    }
}

/// Parse errors of one body: (where, error).
struct Errs {
    what: String,
    truncated: bool,
    list: Vec<(String, String)>,
}

impl Errs {
    fn new(what: &str, truncated: bool) -> Errs {
        Errs {
            what: what.to_string(),
            truncated,
            list: Vec::new(),
        }
    }

    fn add(&mut self, at: impl Into<String>, error: impl Into<String>) {
        let mut error = error.into();
        if self.truncated {
            error.push_str(" (the body was cut at the capture cap)");
        }
        self.list.push((at.into(), error));
    }

    /// A whole body as one JSON value; a body cut short gives what its complete members hold.
    fn json(&mut self, body: &[u8]) -> Option<Value> {
        match serde_json::from_slice::<Value>(body) {
            Ok(v) => Some(v),
            Err(e) => {
                let at = json::error_offset(body, &e);
                self.add(format!("byte {at}"), e.to_string());
                if e.is_eof() {
                    json::complete_prefix(body)
                } else {
                    None
                }
            }
        }
    }
}
