//! `semantics::annotate` on exchanges built from the input: the providers' real paths
//! (Anthropic Messages, OpenAI Chat Completions and Responses, Gemini buffered and streamed,
//! MCP JSON-RPC, anything else), JSON or `text/event-stream`, 2xx or error statuses, and
//! bodies under a `Content-Encoding` (gzip, x-gzip, deflate as zlib or raw, br, zstd, stacked,
//! identity, or one not supported) that this target applies itself, or claims without applying
//! (a corrupt body), through `semantics/decode.rs`.
//!
//! Checks: `http` comes first and counts the bytes as recorded; a body encoded here decodes to
//! exactly what was encoded, with no error; every annotation's data serialises, and a
//! `parse_error` says what, where and why.
//!
//! Input: `[api, method, status, request type, response type, request codings (u16 LE),
//! response codings (u16 LE), flags, request length (u16 LE), request…, response…]`. A codings
//! word: bits 0-1 how many (0-3), then 3 bits per coding, applied in order. Flags: bit 0 the
//! request body is sent as given under its codings, bit 1 the same for the response, bit 2/3
//! the request/response was cut at the capture cap, bit 4 an `mcp-session-id`, bit 5 each
//! coding on a header line of its own.
#![no_main]

use std::io::Write as _;

use harness::semantics::decode::decode;
use harness::semantics::{annotate, ExchangeView};
use libfuzzer_sys::fuzz_target;

const PATHS: [&str; 10] = [
    "/v1/messages",
    "/v1/chat/completions",
    "/v1/responses",
    "/openai/responses",
    "/v1beta/models/gemini-2.0-flash:generateContent",
    "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
    "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse&key=k",
    "/mcp",
    "/",
    "/proxy/v1/messages/?beta=true",
];
const METHODS: [&str; 4] = ["POST", "post", "GET", "PUT"];
const STATUSES: [u16; 10] = [200, 201, 204, 400, 401, 429, 500, 529, 101, 304];
const TYPES: [Option<&str>; 6] = [
    Some("application/json"),
    Some("text/event-stream"),
    Some(" text/event-stream; charset=utf-8"),
    Some("application/json; charset=utf-8"),
    Some("text/plain"),
    None,
];
const CODINGS: [&str; 8] = [
    "gzip", "x-gzip", "deflate", "deflate", "br", "zstd", "identity", "compress",
];
/// `annotate`'s decoding cap (`http::SEMANTICS_CAP`).
const CAP: usize = 8 * 1024 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<12>() else {
        return;
    };
    let request_len = usize::from(u16::from_le_bytes([head[10], head[11]])).min(rest.len());
    let (request, response) = rest.split_at(request_len);
    let flags = head[9];
    let target = PATHS[usize::from(head[0]) % PATHS.len()];
    let method = METHODS[usize::from(head[1]) % METHODS.len()];
    let status = STATUSES[usize::from(head[2]) % STATUSES.len()];

    let mut request_headers = Vec::new();
    let mut response_headers = Vec::new();
    if let Some(t) = TYPES[usize::from(head[3]) % TYPES.len()] {
        request_headers.push(("content-type".to_string(), t.to_string()));
    }
    if let Some(t) = TYPES[usize::from(head[4]) % TYPES.len()] {
        response_headers.push(("content-type".to_string(), t.to_string()));
    }
    if flags & 16 != 0 {
        request_headers.push(("mcp-session-id".to_string(), "s-1".to_string()));
    }
    let separate = flags & 32 != 0;
    let request_wire = encoded(
        request,
        u16::from_le_bytes([head[5], head[6]]),
        flags & 1 != 0,
        separate,
        &mut request_headers,
    );
    let response_wire = encoded(
        response,
        u16::from_le_bytes([head[7], head[8]]),
        flags & 2 != 0,
        separate,
        &mut response_headers,
    );

    // What this target encoded decodes to exactly what it encoded.
    for (wire, plain, raw, headers) in [
        (&request_wire, request, flags & 1 != 0, &request_headers),
        (&response_wire, response, flags & 2 != 0, &response_headers),
    ] {
        let Some(wire) = wire else { continue };
        if raw || headers.iter().any(|(_, v)| v.contains("compress")) {
            continue;
        }
        let d = decode(headers, wire, CAP);
        assert_eq!(d.error, None, "{headers:?}");
        assert!(!d.truncated);
        assert!(
            d.body.as_ref() == plain,
            "{headers:?} decoded to other bytes"
        );
    }

    let request_body = request_wire.as_deref().unwrap_or(request);
    let response_body = response_wire.as_deref().unwrap_or(response);
    let x = ExchangeView {
        method,
        scheme: "https",
        authority: Some("api.example.test"),
        target,
        request_headers: &request_headers,
        request_body,
        request_truncated: flags & 4 != 0,
        status,
        response_headers: &response_headers,
        response_body,
        response_truncated: flags & 8 != 0,
    };
    let notes = annotate(&x);
    assert_eq!(notes[0].topic, "http");
    assert_eq!(notes[0].by, "semantics/http");
    assert_eq!(notes[0].data["request_bytes"], request_body.len());
    assert_eq!(notes[0].data["response_bytes"], response_body.len());
    for n in &notes[1..] {
        assert_ne!(n.topic, "http", "a second http annotation");
    }
    for n in &notes {
        serde_json::to_vec(&n.data).expect("annotation data serialises");
        if n.topic == "parse_error" {
            for key in ["what", "where", "error"] {
                assert!(
                    n.data[key].is_string(),
                    "parse_error without {key}: {}",
                    n.data
                );
            }
        }
    }
});

/// `body` under the codings `word` names (added to `headers`); `None` when it names none.
/// `raw`: the header claims them but the body is left as it is.
fn encoded(
    body: &[u8],
    word: u16,
    raw: bool,
    separate: bool,
    headers: &mut Vec<(String, String)>,
) -> Option<Vec<u8>> {
    let count = usize::from(word & 3);
    if count == 0 {
        return None;
    }
    let picks: Vec<usize> = (0..count)
        .map(|i| usize::from((word >> (2 + 3 * i)) & 7))
        .collect();
    let names: Vec<&str> = picks.iter().map(|&p| CODINGS[p]).collect();
    if separate {
        for n in &names {
            headers.push(("content-encoding".to_string(), n.to_string()));
        }
    } else {
        headers.push(("content-encoding".to_string(), names.join(", ")));
    }
    let mut out = body.to_vec();
    if raw {
        return Some(out);
    }
    for p in picks {
        out = match p {
            0 | 1 => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&out).unwrap();
                e.finish().unwrap()
            }
            2 => {
                let mut e =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&out).unwrap();
                e.finish().unwrap()
            }
            3 => {
                let mut e =
                    flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&out).unwrap();
                e.finish().unwrap()
            }
            4 => {
                let mut v = Vec::new();
                {
                    let mut w = brotli::CompressorWriter::new(&mut v, 4096, 1, 22);
                    w.write_all(&out).unwrap();
                }
                v
            }
            5 => ruzstd::encoding::compress_to_vec(
                out.as_slice(),
                ruzstd::encoding::CompressionLevel::Fastest,
            ),
            // identity: nothing to do; an unsupported coding: left as it is (and claimed).
            _ => out,
        };
    }
    Some(out)
}
