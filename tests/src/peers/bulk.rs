//! Large bodies in bounded memory: `GET /bytes/{n}` streams n deterministic pseudo-random
//! bytes; `POST /upload` hashes a body of any size (the server reads it without keeping it);
//! `GET /stamped/{n}` streams n SSE events, the peer's event delay apart, each holding the
//! wall-clock time it was sent (for the benchmark's per-event release latency).
use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::body::{Chunks, Plan};
use super::log::lock;
use super::server::{error_plan, Ctx, Kind};

/// Size of the chunks `/bytes` streams.
const CHUNK: u64 = 64 * 1024;

/// The 8 bytes at word `i` of the stream (splitmix64: random access, no state).
fn word(i: u64) -> [u8; 8] {
    let mut z = i
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(0x2545_F491_4F6C_DD1D);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)).to_le_bytes()
}

/// Bytes `[start, start + len)` of the deterministic stream that `GET /bytes/{n}` serves (the
/// first n bytes of one endless stream, whatever n is).
pub fn pseudo_random_bytes(start: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut pos = start;
    let end = start + len as u64;
    while pos < end {
        let w = word(pos / 8);
        let from = (pos % 8) as usize;
        let take = (8 - from).min((end - pos) as usize);
        out.extend_from_slice(&w[from..from + take]);
        pos += take as u64;
    }
    out
}

/// SHA-256 (hex) of what `GET /bytes/{n}` serves, computed in bounded memory (cached).
pub fn bytes_sha256(n: u64) -> String {
    static CACHE: Mutex<Option<HashMap<u64, String>>> = Mutex::new(None);
    if let Some(h) = lock(&CACHE).as_ref().and_then(|c| c.get(&n)) {
        return h.clone();
    }
    let mut h = Sha256::new();
    for chunk in chunks(n) {
        h.update(&chunk);
    }
    let hex = hex::encode(h.finalize());
    lock(&CACHE)
        .get_or_insert_with(HashMap::new)
        .insert(n, hex.clone());
    hex
}

fn chunks(n: u64) -> impl Iterator<Item = Bytes> + Send {
    (0..n.div_ceil(CHUNK)).map(move |i| {
        let start = i * CHUNK;
        Bytes::from(pseudo_random_bytes(start, CHUNK.min(n - start) as usize))
    })
}

/// Parses `123`, `64k`, `100M`, `1G` (binary multiples).
fn parse_size(s: &str) -> Option<u64> {
    let (digits, mult) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1 << 10),
        'm' | 'M' => (&s[..s.len() - 1], 1 << 20),
        'g' | 'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

/// `GET /bytes/{n}`: chunked by default; `?length=1` sends a `content-length`.
pub(crate) fn bytes(ctx: &Ctx) -> Plan {
    let Some(n) = parse_size(ctx.path.trim_start_matches("/bytes/")) else {
        return error_plan(
            Kind::Plain,
            StatusCode::BAD_REQUEST,
            "expected /bytes/N (N bytes; k, M, G suffixes allowed)",
        );
    };
    let mut plan = Plan {
        chunks: Chunks {
            count: n.div_ceil(CHUNK) as usize,
            iter: Box::new(chunks(n)),
        },
        ..Plan::empty(StatusCode::OK)
    }
    .content_type("application/octet-stream");
    if ctx.query_param("length") == Some("1") {
        plan = plan.header("content-length", n.to_string());
    }
    if ctx.query_param("sha256") == Some("1") {
        plan = plan.header("x-peer-sha256", bytes_sha256(n));
    }
    plan
}

/// `POST /upload`: the body was hashed while read; answer its length and SHA-256.
pub(crate) fn upload(ctx: &Ctx) -> Plan {
    Plan::json(
        StatusCode::OK,
        &json!({"length": ctx.body_len, "sha256": ctx.body_sha256}),
    )
}

/// `GET /stamped/{n}`: n SSE events `data: {"sent_ns":T}`, the peer's event delay apart, T the
/// wall-clock nanoseconds at which the event was handed to the connection.
pub(crate) fn stamped(ctx: &Ctx) -> Plan {
    let Some(n) = ctx
        .path
        .strip_prefix("/stamped/")
        .and_then(|n| n.parse::<usize>().ok())
    else {
        return error_plan(Kind::Plain, StatusCode::BAD_REQUEST, "bad event count");
    };
    let events = (0..n).map(|_| {
        let sent = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        Bytes::from(format!("data: {{\"sent_ns\":{sent}}}\n\n"))
    });
    let mut plan = Plan::sse(Vec::new(), ctx.event_delay());
    plan.chunks = Chunks {
        count: n,
        iter: Box::new(events),
    };
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_is_position_independent() {
        let whole = pseudo_random_bytes(0, 100);
        assert_eq!(pseudo_random_bytes(13, 50), whole[13..63].to_vec());
        let joined: Vec<u8> = chunks(CHUNK * 2 + 5).flat_map(|b| b.to_vec()).collect();
        assert_eq!(joined, pseudo_random_bytes(0, (CHUNK * 2 + 5) as usize));
        assert_eq!(parse_size("100M"), Some(100 << 20));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("x"), None);
    }
}
