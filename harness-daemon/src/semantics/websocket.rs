//! LLM calls made over a WebSocket: the OpenAI Responses API in WebSocket mode (`GET
//! …/v1/responses` upgraded to WebSocket; Codex CLI's default transport). The client sends
//! `response.create` messages — a Responses request body with `"type": "response.create"` — and
//! the server answers each with the events an SSE stream would carry, one event per text
//! message.
//!
//! Each `response.create` and the events up to the one that ends its response
//! (`response.completed`, `.incomplete`, `.failed`, or `error`) are one call. Its `llm_request`
//! is what the request parser makes of the message, and its `llm_response` what the stream fold
//! of [`openai_responses`](super::openai_responses) makes of the events — the same code, and so
//! the same annotations, as `POST …/v1/responses` streamed over SSE.
//!
//! The API runs one response at a time per connection; a `response.create` sent while one is
//! still streaming is queued here, and the server's events always belong to the oldest call
//! not yet ended. Server messages while no call is open (nothing asked) are left to the
//! `websocket.message` annotations alone.
//!
//! `parse_error`s say where as `message N` (the `index` of the `websocket.message` in its
//! direction), `message N (byte B)` inside a message that is not JSON, or `connection end`
//! for a call still open when the connection ended.
use std::collections::VecDeque;

use super::json::str_of;
use super::openai_responses::{self, Fold};
use super::{path, Annotation, Api, Errs, Notes};

const BY: &str = "semantics/openai";
const WHAT_REQUEST: &str = "openai responses request";
const WHAT_RESPONSE: &str = "openai responses response";

/// The calls of one WebSocket connection, fed its text messages in each direction's order.
#[derive(Default)]
pub struct Conversation {
    open: VecDeque<Call>,
}

/// A call whose response has not ended yet.
struct Call {
    fold: Fold,
    errs: Errs,
}

impl Conversation {
    /// A conversation for an upgrade of `target` (path and query), when the path is one whose
    /// WebSocket speaks an LLM API (the Responses API's).
    pub fn new(target: &str) -> Option<Conversation> {
        (Api::of(path(target)) == Some(Api::OpenAiResponses)).then(Conversation::default)
    }

    /// A text message the client sent, the `index`-th of its direction; `truncated` when the
    /// annotation holds only the first part of it. A `response.create` opens a call and gives
    /// its `llm_request`.
    pub fn client(&mut self, index: u64, text: &str, truncated: bool) -> Vec<Annotation> {
        let mut notes = Notes::default();
        let mut errs = Errs::new(WHAT_REQUEST, truncated);
        let parsed = errs.json(text.as_bytes());
        let create = parsed
            .as_ref()
            .filter(|v| str_of(v, "type") == Some("response.create"));
        match create {
            Some(v) => {
                // The body is the message itself; some servers take it nested in `response`.
                let body = match v.get("response") {
                    Some(r) if r.is_object() && v.get("input").is_none() => r,
                    _ => v,
                };
                notes.push(BY, "llm_request", openai_responses::request(body));
                notes.take(BY, in_message(index, errs));
                self.open.push_back(Call {
                    fold: Fold::new(),
                    errs: Errs::new(WHAT_RESPONSE, false),
                });
            }
            // Not JSON at all: said, as it would be of a request body.
            None if parsed.is_none() => notes.take(BY, in_message(index, errs)),
            // Another client message (a cancel, a session update): no call of its own.
            None => {}
        }
        notes.0
    }

    /// A text message the server sent, the `index`-th of its direction. The event that ends
    /// the open call's response gives its `llm_response` (and the call's `parse_error`s).
    pub fn server(&mut self, index: u64, text: &str, truncated: bool) -> Vec<Annotation> {
        let Some(call) = self.open.front_mut() else {
            return Vec::new();
        };
        // As an SSE event's data is read: half of a surrogate pair, its other half in another
        // delta, stands in for itself.
        let parsed = serde_json::from_str(text).ok().or_else(|| {
            super::json::stand_in_surrogates(text).and_then(|t| serde_json::from_str(&t).ok())
        });
        let Some(event) = parsed else {
            let mut errs = Errs::new(WHAT_RESPONSE, truncated);
            errs.json(text.as_bytes());
            call.errs.list.extend(in_message(index, errs).list);
            return Vec::new();
        };
        let at = || format!("message {index}");
        if !call.fold.event(&event, "message", at, &mut call.errs) {
            return Vec::new();
        }
        let call = self
            .open
            .pop_front()
            .expect("the call that just ended is open");
        finish(call, String::new())
    }

    /// The connection ended: each call still open gets the `llm_response` of what came, and a
    /// `parse_error` saying its response never ended.
    pub fn end(&mut self) -> Vec<Annotation> {
        self.open
            .drain(..)
            .flat_map(|call| finish(call, "connection end".into()))
            .collect()
    }
}

/// The `llm_response` of a call (and its `parse_error`s); `end` is where the events stopped,
/// for a response that did not end.
fn finish(mut call: Call, end: String) -> Vec<Annotation> {
    let mut notes = Notes::default();
    let reply = call.fold.finish(end, &mut call.errs);
    notes.push(BY, "llm_response", reply.to_json());
    notes.take(BY, call.errs);
    notes.0
}

/// Errors met inside message `index`, their places made `message N (byte B)`.
fn in_message(index: u64, errs: Errs) -> Errs {
    Errs {
        list: errs
            .list
            .into_iter()
            .map(|(at, e)| (format!("message {index} ({at})"), e))
            .collect(),
        ..errs
    }
}

impl std::fmt::Debug for Conversation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conversation")
            .field("open_calls", &self.open.len())
            .finish()
    }
}
