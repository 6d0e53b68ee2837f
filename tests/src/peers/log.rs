//! What a peer received and sent, kept in memory so tests can compare it with what harness
//! recorded: heads exactly, bodies exactly when small and by SHA-256 always.
use std::net::SocketAddr;
use std::sync::Mutex;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Bodies up to this size are kept byte for byte; larger ones only by length and hash.
pub const KEEP_BODY_LIMIT: u64 = 1 << 20;

/// One request a peer received, and what it answered.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Exchange {
    /// Order of arrival at this peer, from 0.
    pub seq: u64,
    /// When the request's body had been read, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The client's address as the peer saw it.
    pub client: SocketAddr,
    /// The address the peer accepted on.
    pub local: SocketAddr,
    /// TLS server name the client sent, if any.
    pub sni: Option<String>,
    /// ALPN protocol negotiated, if any (`h2`, `http/1.1`).
    pub alpn: Option<String>,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// The method.
    pub method: String,
    /// Path and query, exactly as received.
    pub uri: String,
    /// Request headers in order (names lower-case, values lossy UTF-8).
    pub headers: Vec<(String, String)>,
    /// The request body.
    pub body: BodyRecord,
    /// What the peer answered (`None` while the handler runs, or if it never answered).
    pub response: Option<ResponseRecord>,
}

/// A body: its length and SHA-256 always, its bytes when at most [`KEEP_BODY_LIMIT`].
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BodyRecord {
    /// Bytes seen.
    pub len: u64,
    /// SHA-256 of those bytes, lower-case hex.
    pub sha256: String,
    /// The bytes, when small enough (serialised as base64).
    #[serde(with = "opt_base64", default)]
    pub bytes: Option<Vec<u8>>,
    /// Whether the body ended normally (false: cut by a reset, a hang or the client leaving).
    pub complete: bool,
}

/// The response a peer sent.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResponseRecord {
    /// Status code.
    pub status: u16,
    /// Headers in order (names lower-case).
    pub headers: Vec<(String, String)>,
    /// The body as handed to the connection (`None` until it ends or is dropped).
    pub body: Option<BodyRecord>,
}

/// An HTTP request a peer made itself (the MCP server's call to the brokerage API).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Outbound {
    /// `seq` of the request being served when this call was made.
    pub during: u64,
    /// Method.
    pub method: String,
    /// Full URL.
    pub url: String,
    /// Where it connected.
    pub connect: SocketAddr,
    /// Request body.
    pub request_body: BodyRecord,
    /// Response status, or the error text if the call failed.
    pub outcome: Result<u16, String>,
    /// Response body (when the call got one).
    pub response_body: Option<BodyRecord>,
}

// === impl BodyRecord ===

impl BodyRecord {
    /// The record of a complete body held in memory.
    pub fn of(bytes: &[u8]) -> BodyRecord {
        let mut h = BodyHasher::default();
        h.update(bytes);
        h.finish(true)
    }

    /// The body as UTF-8 text, if kept and valid.
    pub fn text(&self) -> Option<&str> {
        self.bytes
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The body parsed as JSON, if kept and valid.
    pub fn json(&self) -> Option<serde_json::Value> {
        self.bytes
            .as_deref()
            .and_then(|b| serde_json::from_slice(b).ok())
    }
}

/// Accumulates a body's hash and, while small, its bytes.
#[derive(Default)]
pub(crate) struct BodyHasher {
    len: u64,
    hash: Sha256,
    kept: Option<Vec<u8>>,
    overflow: bool,
}

impl BodyHasher {
    pub(crate) fn update(&mut self, chunk: &[u8]) {
        self.len += chunk.len() as u64;
        self.hash.update(chunk);
        if self.overflow {
            return;
        }
        if self.len > KEEP_BODY_LIMIT {
            self.overflow = true;
            self.kept = None;
        } else {
            self.kept
                .get_or_insert_with(Vec::new)
                .extend_from_slice(chunk);
        }
    }

    pub(crate) fn finish(self, complete: bool) -> BodyRecord {
        BodyRecord {
            len: self.len,
            sha256: hex::encode(self.hash.finalize()),
            bytes: if self.overflow {
                None
            } else {
                Some(self.kept.unwrap_or_default())
            },
            complete,
        }
    }
}

/// The in-memory log of one peer.
#[derive(Default)]
pub(crate) struct Log {
    exchanges: Mutex<Vec<Exchange>>,
    outbound: Mutex<Vec<Outbound>>,
}

impl Log {
    /// Appends an exchange, giving it its `seq`; returns that `seq`.
    pub(crate) fn push(&self, mut ex: Exchange) -> u64 {
        let mut all = lock(&self.exchanges);
        ex.seq = all.len() as u64;
        all.push(ex);
        all.len() as u64 - 1
    }

    pub(crate) fn set_response(&self, seq: u64, status: u16, headers: Vec<(String, String)>) {
        if let Some(ex) = lock(&self.exchanges).get_mut(seq as usize) {
            ex.response = Some(ResponseRecord {
                status,
                headers,
                body: None,
            });
        }
    }

    pub(crate) fn set_response_body(&self, seq: u64, body: BodyRecord) {
        if let Some(r) = lock(&self.exchanges)
            .get_mut(seq as usize)
            .and_then(|ex| ex.response.as_mut())
        {
            r.body = Some(body);
        }
    }

    pub(crate) fn exchanges(&self) -> Vec<Exchange> {
        lock(&self.exchanges).clone()
    }

    pub(crate) fn clear(&self) {
        lock(&self.exchanges).clear();
        lock(&self.outbound).clear();
    }

    pub(crate) fn push_outbound(&self, o: Outbound) {
        lock(&self.outbound).push(o);
    }

    pub(crate) fn outbound(&self) -> Vec<Outbound> {
        lock(&self.outbound).clone()
    }
}

/// Locks a mutex, carrying on past poisoning (a panicking test thread must not hide the log).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

mod opt_base64 {
    use super::*;

    pub fn serialize<S: serde::Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&base64::engine::general_purpose::STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| {
            base64::engine::general_purpose::STANDARD
                .decode(t)
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}
