//! Server-sent events: the SSE reader of `semantics/sse.rs` on the input, then each provider's
//! stream parser (and MCP's) on it through `semantics::annotate`, as a `text/event-stream`
//! answer to a request on that provider's path.
//!
//! Checks: events are numbered in order at increasing offsets inside the body; names and data
//! hold no CR (lines end at CR, LF or CRLF); the same stream with LF, CRLF or CR line ends
//! gives the same events; `annotate` starts with `http`, gives an `llm_response` for every
//! non-blank 2xx stream of an LLM API, and its data always serialises.
#![no_main]

use harness::semantics::fuzzing::sse_events;
use harness::semantics::{annotate, ExchangeView};
use libfuzzer_sys::fuzz_target;

/// (path, request body) of each API whose streams are parsed.
const APIS: [(&str, &[u8], bool); 5] = [
    (
        "/v1/messages",
        br#"{"model":"claude-x","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        true,
    ),
    (
        "/v1/chat/completions",
        br#"{"model":"gpt-x","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        true,
    ),
    (
        "/v1/responses",
        br#"{"model":"gpt-x","stream":true,"input":"hi"}"#,
        true,
    ),
    (
        "/v1beta/models/gemini-x:streamGenerateContent?alt=sse",
        br#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#,
        true,
    ),
    (
        "/mcp",
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{}}}"#,
        false,
    ),
];

fuzz_target!(|data: &[u8]| {
    let (events, errors) = sse_events(data);
    let mut last = None;
    for (i, (index, offset, name, text, _)) in events.iter().enumerate() {
        assert_eq!(*index, i);
        assert!(
            *offset < data.len(),
            "event {i} at {offset} of {}",
            data.len()
        );
        assert!(last.is_none_or(|l| l < *offset), "offsets out of order");
        last = Some(*offset);
        assert!(!name.contains(['\r', '\n']), "name {name:?}");
        assert!(!text.contains('\r'), "data {text:?}");
    }
    if !data.contains(&b'\r') {
        let same = |events: &[(usize, usize, String, String, Option<serde_json::Value>)]| {
            events
                .iter()
                .map(|(_, _, n, d, j)| (n.clone(), d.clone(), j.clone()))
                .collect::<Vec<_>>()
        };
        for ending in [&b"\r\n"[..], b"\r"] {
            let mut other = Vec::with_capacity(data.len() * 2);
            for &b in data {
                if b == b'\n' {
                    other.extend_from_slice(ending);
                } else {
                    other.push(b);
                }
            }
            let (events2, errors2) = sse_events(&other);
            assert_eq!(
                same(&events),
                same(&events2),
                "line ends {ending:?} read differently"
            );
            assert_eq!(errors.len(), errors2.len(), "{errors:?} / {errors2:?}");
        }
    }

    let request_headers = [("content-type".to_string(), "application/json".to_string())];
    let response_headers = [(
        "content-type".to_string(),
        "text/event-stream; charset=utf-8".to_string(),
    )];
    for (target, request, llm) in APIS {
        let x = ExchangeView {
            method: "POST",
            scheme: "https",
            authority: Some("api.example.test"),
            target,
            request_headers: &request_headers,
            request_body: request,
            request_truncated: false,
            status: 200,
            response_headers: &response_headers,
            response_body: data,
            response_truncated: false,
        };
        let notes = annotate(&x);
        assert_eq!(notes[0].topic, "http");
        let blank = data.iter().all(u8::is_ascii_whitespace);
        if llm && !blank {
            assert!(
                notes.iter().any(|n| n.topic == "llm_response"),
                "no llm_response for {target}: {notes:?}"
            );
        }
        for n in &notes {
            serde_json::to_vec(&n.data).expect("annotation data serialises");
        }
    }
});
