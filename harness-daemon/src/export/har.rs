//! HTTP Archive 1.2 (<http://www.softwareishard.com/blog/har-12-spec/>): one `entries[]` item
//! per recorded HTTP exchange, so HAR viewers open a session. Bodies are the recorded bytes
//! (streamed bodies joined in index order) with their `Content-Encoding` undone, as HAR's
//! `text` is "HTTP decoded": text when UTF-8, else base64 with `encoding: "base64"`;
//! `content.size` is the decoded length and `content.compression` the bytes the coding saved,
//! while `bodySize` and `_sha256` stay those of the exact recorded (encoded) bytes. A body
//! that does not decode (corrupt, cut, an unknown coding, over [`DECODE_CAP`]) is given as
//! recorded, with a `comment` saying why. Secret headers appear as their fingerprints, which
//! is all the ledger holds. Extra members start with `_` as the spec allows: `_sha256` of each
//! body, `_harness` (session, seqs, pid) and `_cutOff` for streams that ended without their
//! final chunk. A WebSocket upgrade's entry also carries the connection's messages as Chrome's
//! HAR export does (`_webSocketMessages`) and the LLM calls made over it
//! (`_harness.websocket_calls`).
use super::ExportError;
use crate::ledger::Header;
use crate::semantics::decode::{decode, Decoded};
use crate::timeline::session::{ms_between, ts_micros, BodyParts, Exchange, SessionLog};
use base64::Engine as _;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// The HAR document for `sessions`.
pub fn har(sessions: &[SessionLog]) -> Result<Value, ExportError> {
    let mut entries = Vec::new();
    for log in sessions {
        for (i, x) in log.exchanges.iter().enumerate() {
            if x.request.is_some() {
                entries.push(entry(log, i, x)?);
            }
        }
    }
    // LLM calls over a WebSocket are not HTTP exchanges: they are told on their upgrade's
    // entry (`_webSocketMessages`, `_harness.websocket_calls`).
    Ok(json!({
        "log": {
            "version": "1.2",
            "creator": { "name": "harness", "version": env!("CARGO_PKG_VERSION") },
            "pages": [],
            "entries": entries,
            "comment": "recorded by harness; bodies are decoded from their content-encoding, \
                        each _sha256 is of the exact bytes in the ledger",
        }
    }))
}

fn headers(hs: &[Header]) -> Vec<Value> {
    hs.iter()
        .map(|h| {
            if let Some(v) = &h.value {
                json!({ "name": h.name, "value": v })
            } else if let Some(fp) = &h.fingerprint {
                json!({ "name": h.name, "value": fp, "comment": "secret: recorded only as its keyed fingerprint" })
            } else {
                json!({
                    "name": h.name,
                    "value": h.value_b64.clone().unwrap_or_default(),
                    "comment": "value is not UTF-8: base64",
                })
            }
        })
        .collect()
}

fn header<'a>(hs: &'a [Header], name: &str) -> Option<&'a str> {
    hs.iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .and_then(|h| h.value.as_deref())
}

/// The most a body is decoded to: past it, the export gives the recorded bytes (a
/// decompression bomb must not take the exporter's memory).
pub const DECODE_CAP: usize = 64 * 1024 * 1024;

/// A body as HAR shows it: decoded when it was encoded and decodes whole.
struct Shown<'a> {
    decoded: Decoded<'a>,
    /// Why the recorded bytes are shown although they were encoded.
    undecoded: Option<String>,
}

impl Shown<'_> {
    /// The bytes `text` holds.
    fn bytes(&self) -> &[u8] {
        &self.decoded.body
    }

    /// The `comment` for the body, if it was encoded.
    fn comment(&self) -> Option<String> {
        let codings = self.decoded.codings_list();
        if let Some(why) = &self.undecoded {
            Some(format!(
                "content-encoding {codings} not undone ({why}): text is the recorded bytes"
            ))
        } else if self.decoded.is_encoded() {
            Some(format!(
                "decoded from content-encoding {codings}; _sha256 is of the recorded bytes"
            ))
        } else {
            None
        }
    }
}

/// `wire` decoded by the `content-encoding` of `hs`, or as it is when it does not decode.
fn shown<'a>(hs: &[Header], wire: &'a [u8]) -> Shown<'a> {
    let pairs: Vec<(String, String)> = hs
        .iter()
        .filter_map(|h| Some((h.name.clone(), h.value.clone()?)))
        .collect();
    let decoded = decode(&pairs, wire, DECODE_CAP);
    let undecoded = if let Some(e) = &decoded.error {
        Some(format!("{e} at {}", e.place()))
    } else if decoded.truncated {
        Some(format!(
            "it decodes to more than {} MiB",
            DECODE_CAP / (1024 * 1024)
        ))
    } else {
        None
    };
    match undecoded {
        Some(why) => Shown {
            decoded: Decoded {
                body: std::borrow::Cow::Borrowed(wire),
                ..decoded
            },
            undecoded: Some(why),
        },
        None => Shown {
            decoded,
            undecoded: None,
        },
    }
}

/// Text (or base64) of body bytes, with their encoding.
fn text(bytes: &[u8]) -> (String, Option<&'static str>) {
    match std::str::from_utf8(bytes) {
        Ok(t) => (t.to_owned(), None),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(bytes),
            Some("base64"),
        ),
    }
}

fn query_string(target: &str) -> Vec<Value> {
    let Some((_, q)) = target.split_once('?') else {
        return Vec::new();
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            json!({ "name": n, "value": v })
        })
        .collect()
}

fn entry(log: &SessionLog, i: usize, x: &Exchange) -> Result<Value, ExportError> {
    let conn = log.conn(x.conn);
    // Callers pass only exchanges with a request.
    let Some(req) = x.request.as_ref() else {
        return Ok(Value::Null);
    };
    let started = req.ts.clone();
    let mut request = Map::new();
    request.insert("method".into(), json!(req.head.method));
    request.insert("url".into(), json!(x.url(conn)));
    request.insert("httpVersion".into(), json!(req.head.version));
    request.insert("cookies".into(), json!([]));
    request.insert("headers".into(), json!(headers(&req.head.headers)));
    request.insert("queryString".into(), json!(query_string(&req.head.target)));
    request.insert("headersSize".into(), json!(-1));
    request.insert("bodySize".into(), json!(x.request_body.len()));
    if !matches!(x.request_body, BodyParts::None) {
        let bytes = x.request_body.bytes(&log.dir)?;
        let body = shown(&req.head.headers, &bytes);
        let (t, enc) = text(body.bytes());
        let mut post = Map::new();
        post.insert(
            "mimeType".into(),
            json!(header(&req.head.headers, "content-type").unwrap_or("")),
        );
        post.insert("text".into(), json!(t));
        if let Some(e) = enc {
            post.insert("encoding".into(), json!(e));
        }
        post.insert("_sha256".into(), json!(hex::encode(Sha256::digest(&bytes))));
        if let Some(c) = body.comment() {
            post.insert("comment".into(), json!(c));
        }
        if x.request_body.is_cut_off() {
            post.insert("_cutOff".into(), json!(true));
        }
        request.insert("postData".into(), Value::Object(post));
    }

    let mut response = Map::new();
    let (send_end, wait_end, end) = {
        let send_end = x.request_body.end().map_or(req.ts.as_str(), |(_, t)| t);
        let wait_end = x.response.as_ref().map_or(send_end, |r| r.ts.as_str());
        let end = x.response_body.end().map_or(wait_end, |(_, t)| t);
        (send_end, wait_end, end)
    };
    match &x.response {
        Some(r) => {
            let bytes = x.response_body.bytes(&log.dir)?;
            let body = shown(&r.head.headers, &bytes);
            let (t, enc) = text(body.bytes());
            let mut content = Map::new();
            content.insert("size".into(), json!(body.bytes().len()));
            if body.decoded.is_encoded() && body.undecoded.is_none() {
                let saved = body.bytes().len() as i64 - bytes.len() as i64;
                content.insert("compression".into(), json!(saved));
            }
            content.insert(
                "mimeType".into(),
                json!(header(&r.head.headers, "content-type").unwrap_or("")),
            );
            content.insert("text".into(), json!(t));
            if let Some(e) = enc {
                content.insert("encoding".into(), json!(e));
            }
            content.insert("_sha256".into(), json!(hex::encode(Sha256::digest(&bytes))));
            let mut comments: Vec<String> = body.comment().into_iter().collect();
            if x.response_body.is_cut_off() {
                content.insert("_cutOff".into(), json!(true));
                comments.push("stream cut off: no final chunk was recorded".into());
            }
            if !comments.is_empty() {
                content.insert("comment".into(), json!(comments.join("; ")));
            }
            response.insert("status".into(), json!(r.head.status));
            response.insert(
                "statusText".into(),
                json!(http::StatusCode::from_u16(r.head.status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("")),
            );
            response.insert("httpVersion".into(), json!(r.head.version));
            response.insert("cookies".into(), json!([]));
            response.insert("headers".into(), json!(headers(&r.head.headers)));
            response.insert("content".into(), Value::Object(content));
            response.insert(
                "redirectURL".into(),
                json!(header(&r.head.headers, "location").unwrap_or("")),
            );
            response.insert("headersSize".into(), json!(-1));
            response.insert("bodySize".into(), json!(bytes.len()));
        }
        None => {
            response.insert("status".into(), json!(0));
            response.insert("statusText".into(), json!(""));
            response.insert("httpVersion".into(), json!(req.head.version));
            response.insert("cookies".into(), json!([]));
            response.insert("headers".into(), json!([]));
            response.insert(
                "content".into(),
                json!({ "size": 0, "mimeType": "x-unknown", "text": "" }),
            );
            response.insert("redirectURL".into(), json!(""));
            response.insert("headersSize".into(), json!(-1));
            response.insert("bodySize".into(), json!(-1));
            response.insert("comment".into(), json!("no response was recorded"));
        }
    }
    // Timestamps have microseconds: milliseconds with three decimals say all they know.
    let ms = |a: &str, b: &str| (ms_between(a, b) * 1000.0).round() / 1000.0;
    let send = ms(&started, send_end);
    let wait = ms(send_end, wait_end);
    let receive = ms(wait_end, end);
    let mut e = Map::new();
    e.insert("startedDateTime".into(), json!(started));
    e.insert(
        "time".into(),
        json!(((send + wait + receive) * 1000.0).round() / 1000.0),
    );
    e.insert("request".into(), Value::Object(request));
    e.insert("response".into(), Value::Object(response));
    e.insert("cache".into(), json!({}));
    e.insert(
        "timings".into(),
        json!({ "blocked": -1, "dns": -1, "connect": -1, "ssl": -1,
                "send": send, "wait": wait, "receive": receive }),
    );
    if let Some(o) = conn.and_then(|c| c.open.as_ref()) {
        e.insert("serverIPAddress".into(), json!(o.dst.ip().to_string()));
    }
    e.insert("connection".into(), json!(x.conn.to_string()));
    e.insert(
        "_harness".into(),
        json!({
            "session": log.id,
            "conn": x.conn,
            "exchange": x.exchange,
            "request_seq": req.seq,
            "response_seq": x.response.as_ref().map(|r| r.seq),
            "pid": log.pid_of(x),
            "annotations": x.notes.iter().map(|n| n.annotation.topic.clone()).collect::<Vec<_>>(),
        }),
    );
    if x.response.as_ref().is_some_and(|r| r.head.status == 101) {
        websocket(log, i, x, &mut e);
    }
    Ok(Value::Object(e))
}

/// The messages of an upgraded connection (`x`, `exchanges[upgrade]`) as Chrome's HAR export
/// gives them
/// (`_webSocketMessages`: `type` send/receive, `time` in seconds since the epoch, `opcode`,
/// `data`; `_encoding: "base64"` for bytes that are not UTF-8), and the LLM calls made over it
/// (`_harness.websocket_calls`: the seqs of the `data` entries of each call's request and
/// end, and its annotations' topics).
fn websocket(log: &SessionLog, upgrade: usize, x: &Exchange, e: &mut Map<String, Value>) {
    let opcode = |name: &str| match name {
        "text" => 1,
        "binary" => 2,
        "close" => 8,
        "ping" => 9,
        "pong" => 10,
        _ => 0,
    };
    let messages: Vec<Value> = log
        .other_notes
        .iter()
        .map(|n| &n.annotation)
        .filter(|a| a.by == "websocket" && a.topic == "websocket.message")
        .filter(|a| a.data.get("conn").and_then(Value::as_u64) == Some(x.conn))
        .map(|a| {
            let d = &a.data;
            let ts = log.item(a.of_seq).map(|i| i.ts.as_str()).unwrap_or("");
            let time = ts_micros(ts).map_or(0.0, |us| us as f64 / 1e6);
            let kind = if d.get("direction").and_then(Value::as_str) == Some("up") {
                "send"
            } else {
                "receive"
            };
            let mut m = json!({
                "type": kind,
                "time": time,
                "opcode": opcode(d.get("opcode").and_then(Value::as_str).unwrap_or("")),
                "data": d.get("text").or(d.get("base64")).cloned().unwrap_or(json!("")),
            });
            if d.get("base64").is_some() {
                m["_encoding"] = json!("base64");
            }
            m
        })
        .collect();
    if !messages.is_empty() {
        e.insert("_webSocketMessages".into(), json!(messages));
    }
    let calls: Vec<Value> = log
        .exchanges
        .iter()
        .filter(|c| c.websocket.as_ref().is_some_and(|w| w.upgrade == Some(upgrade)))
        .map(|c| {
            json!({
                "request_seq": c.first_seq,
                "response_seq": c.note("llm_response").map(|_| c.last_seq),
                "annotations": c.notes.iter().map(|n| n.annotation.topic.clone()).collect::<Vec<_>>(),
            })
        })
        .collect();
    if !calls.is_empty() {
        if let Some(h) = e.get_mut("_harness") {
            h["websocket_calls"] = json!(calls);
        }
    }
}
