//! WebSocket frames (RFC 6455 §5) decoded as they pass an upgraded connection, so that the
//! ledger says what each message was and not only which bytes passed.
//!
//! The raw `data` entries of the relay stay the record of truth (exact bytes, each durable
//! before it was written on); this module only *reads* them and adds one `websocket.message`
//! annotation per message (data and control), referencing the `data` entry that completed it.
//! Client frames are unmasked; fragmented messages (continuation frames, with control frames
//! between them) are joined; frames split across reads and many frames in one read are both
//! fine, since the decoder keeps its state between reads and never buffers more than a frame
//! header plus [`MESSAGE_CAP`] bytes of one data message and one control frame.
//!
//! Malformed framing (a reserved opcode, a fragmented or oversized control frame, a
//! continuation with nothing to continue, a 64-bit length with its top bit set) never touches
//! the relay: it is annotated once, as a `parse_error`, and that direction is decoded no further.
//!
//! permessage-deflate (RFC 7692): a message whose first frame has RSV1 set, on a connection
//! whose 101 negotiated the extension, is inflated for its annotation (`compressed: true`, the
//! inflated text or base64, `inflated_len`). Each direction keeps one raw-deflate decompressor
//! across its messages, which is what the extension's default context takeover means; it is
//! reset after every message when the 101 said `client_no_context_takeover` (client → server)
//! or `server_no_context_takeover` (server → client). A message that cannot be inflated (cut at
//! the capture cap, corrupt) is annotated with its bytes as they passed and an
//! `inflate_error`; with context takeover, later messages of that direction depend on it, so
//! they are no longer inflated either (their annotations say so).
//!
//! ```
//! use harness::websocket::{Decoder, Event, Opcode};
//! let mut d = Decoder::new(1024);
//! // A masked text frame "Hi", split across two reads.
//! let frame = [0x81, 0x82, 1, 2, 3, 4, b'H' ^ 1, b'i' ^ 2];
//! assert!(d.push(&frame[..3], 7).is_empty());
//! let events = d.push(&frame[3..], 8);
//! let Event::Message(m) = &events[0] else { panic!() };
//! assert_eq!((m.opcode, m.payload.as_slice(), m.start), (Opcode::Text, &b"Hi"[..], 7));
//! ```
use crate::ledger::{Annotation, Direction, Durable, Entry};
use base64::Engine as _;
use serde_json::{json, Map, Value};

/// How much of one message's payload an annotation holds; the rest is only counted (`len`) and
/// the annotation says `truncated: true`. The `data` entries hold every byte regardless.
pub const MESSAGE_CAP: usize = 1024 * 1024;

/// A frame's opcode (RFC 6455 §5.2); reserved opcodes are malformed framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// 0x0: a further fragment of the message in progress.
    Continuation,
    /// 0x1: UTF-8 text.
    Text,
    /// 0x2: binary data.
    Binary,
    /// 0x8: close (optional status code and reason).
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl Opcode {
    fn parse(bits: u8) -> Option<Opcode> {
        Some(match bits {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }

    /// The name annotations use: `text`, `binary`, `close`, `ping`, `pong` (`continuation`
    /// never names a message).
    pub fn name(self) -> &'static str {
        match self {
            Opcode::Continuation => "continuation",
            Opcode::Text => "text",
            Opcode::Binary => "binary",
            Opcode::Close => "close",
            Opcode::Ping => "ping",
            Opcode::Pong => "pong",
        }
    }
}

/// One whole message (a data message, all its fragments joined, or one control frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Text, binary, close, ping or pong.
    pub opcode: Opcode,
    /// The payload, unmasked, at most the decoder's cap.
    pub payload: Vec<u8>,
    /// The whole payload's length (more than `payload.len()` when it was cut at the cap).
    pub len: u64,
    /// How many frames carried it.
    pub frames: u32,
    /// Whether its frames were masked (client frames must be, server frames must not be).
    pub masked: bool,
    /// RSV1 on its first frame (permessage-deflate: the payload is compressed).
    pub rsv1: bool,
    /// The tag of the read in which its first byte arrived.
    pub start: u64,
}

impl Message {
    /// Whether the payload was cut at the cap.
    pub fn truncated(&self) -> bool {
        self.len > self.payload.len() as u64
    }
}

/// What a read completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message ended.
    Message(Message),
    /// The framing could not be parsed from `offset` (bytes into this direction) on; the
    /// decoder reports nothing more.
    Malformed {
        /// Where the offending frame began.
        offset: u64,
        /// What was wrong.
        error: String,
    },
}

/// The frame whose payload is being read.
struct Frame {
    fin: bool,
    control: bool,
    mask: Option<[u8; 4]>,
    remaining: u64,
    done: u64,
}

/// Decodes one direction of a WebSocket connection, read by read.
pub struct Decoder {
    cap: usize,
    offset: u64,
    head: Vec<u8>,
    head_offset: u64,
    head_tag: u64,
    frame: Option<Frame>,
    data: Option<Message>,
    control: Option<Message>,
    failed: bool,
}

impl Decoder {
    /// A decoder keeping at most `cap` payload bytes of each message.
    pub fn new(cap: usize) -> Decoder {
        Decoder {
            cap,
            offset: 0,
            head: Vec::with_capacity(14),
            head_offset: 0,
            head_tag: 0,
            frame: None,
            data: None,
            control: None,
            failed: false,
        }
    }

    /// Feeds the next bytes of the direction; `tag` names this read (the relay passes the
    /// `seq` of its `data` entry) and becomes [`Message::start`] of messages beginning in it.
    /// Returns the messages these bytes completed, in order, or one [`Event::Malformed`].
    pub fn push(&mut self, mut bytes: &[u8], tag: u64) -> Vec<Event> {
        let mut events = Vec::new();
        while !bytes.is_empty() && !self.failed {
            let Some(frame) = self.frame.as_mut() else {
                if self.head.is_empty() {
                    self.head_offset = self.offset;
                    self.head_tag = tag;
                }
                let need = header_len(&self.head).unwrap_or(2);
                let take = (need - self.head.len()).min(bytes.len());
                self.head.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                self.offset += take as u64;
                if header_len(&self.head) == Some(self.head.len()) {
                    if let Err(error) = self.begin_frame() {
                        self.failed = true;
                        events.push(Event::Malformed {
                            offset: self.head_offset,
                            error,
                        });
                        break;
                    }
                    self.head.clear();
                    // A frame with an empty payload ends with its header.
                    if let Some(m) = self.end_frame_if_done() {
                        events.push(Event::Message(m));
                    }
                }
                continue;
            };
            let take = frame.remaining.min(bytes.len() as u64) as usize;
            let (chunk, rest) = bytes.split_at(take);
            let target = if frame.control {
                self.control.as_mut()
            } else {
                self.data.as_mut()
            };
            // begin_frame always sets the message a frame belongs to.
            let message = target.expect("a frame in progress belongs to a message");
            let room = self.cap.saturating_sub(message.payload.len()).min(take);
            let start = message.payload.len();
            message.payload.extend_from_slice(&chunk[..room]);
            if let Some(mask) = frame.mask {
                for (i, b) in message.payload[start..].iter_mut().enumerate() {
                    *b ^= mask[((frame.done + i as u64) % 4) as usize];
                }
            }
            message.len += take as u64;
            frame.remaining -= take as u64;
            frame.done += take as u64;
            self.offset += take as u64;
            bytes = rest;
            if let Some(m) = self.end_frame_if_done() {
                events.push(Event::Message(m));
            }
        }
        events
    }

    /// Starts the frame whose complete header is in `head`.
    fn begin_frame(&mut self) -> Result<(), String> {
        let h = &self.head;
        let fin = h[0] & 0x80 != 0;
        let rsv1 = h[0] & 0x40 != 0;
        let opcode = Opcode::parse(h[0] & 0x0f)
            .ok_or_else(|| format!("reserved opcode 0x{:x}", h[0] & 0x0f))?;
        let masked = h[1] & 0x80 != 0;
        let (len, at) = match h[1] & 0x7f {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&h[2..10]);
                let len = u64::from_be_bytes(b);
                if len >> 63 != 0 {
                    return Err("64-bit payload length with its most significant bit set".into());
                }
                (len, 10)
            }
            n => (u64::from(n), 2),
        };
        let mask = masked.then(|| [h[at], h[at + 1], h[at + 2], h[at + 3]]);
        let control = opcode.is_control();
        if control && (!fin || len > 125) {
            return Err(format!(
                "{} frame {} (control frames are single frames of at most 125 bytes)",
                opcode.name(),
                if fin {
                    "longer than 125 bytes"
                } else {
                    "fragmented"
                }
            ));
        }
        let fresh = |opcode| Message {
            opcode,
            payload: Vec::new(),
            len: 0,
            frames: 0,
            masked,
            rsv1,
            start: self.head_tag,
        };
        match opcode {
            Opcode::Continuation if self.data.is_none() => {
                return Err("continuation frame with no fragmented message to continue".into())
            }
            Opcode::Continuation => {}
            Opcode::Text | Opcode::Binary if self.data.is_some() => {
                return Err(format!(
                    "{} frame begins a new message before the fragmented one ended",
                    opcode.name()
                ))
            }
            Opcode::Text | Opcode::Binary => self.data = Some(fresh(opcode)),
            Opcode::Close | Opcode::Ping | Opcode::Pong => self.control = Some(fresh(opcode)),
        }
        let message = if control {
            self.control.as_mut()
        } else {
            self.data.as_mut()
        };
        if let Some(m) = message {
            m.frames += 1;
        }
        self.frame = Some(Frame {
            fin,
            control,
            mask,
            remaining: len,
            done: 0,
        });
        Ok(())
    }

    /// Ends the current frame if its payload is all read; returns the message it completed.
    fn end_frame_if_done(&mut self) -> Option<Message> {
        let frame = self.frame.take_if(|f| f.remaining == 0)?;
        if frame.control {
            self.control.take()
        } else if frame.fin {
            self.data.take()
        } else {
            None
        }
    }
}

/// The full header length once enough of it is known (2, 4 or 10 bytes, plus 4 when masked).
fn header_len(head: &[u8]) -> Option<usize> {
    let b = *head.get(1)?;
    let ext = match b & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    Some(2 + ext + if b & 0x80 != 0 { 4 } else { 0 })
}

// === Tap ===

/// One direction of an upgraded WebSocket connection as the relay sees it: each read, once its
/// `data` entry is durable, is decoded and the messages it completed become annotations.
pub struct Tap {
    decoder: Decoder,
    conn: u64,
    direction: Direction,
    deflate: Option<Inflater>,
    index: u64,
    /// The LLM calls of the connection, shared with the other direction's tap.
    calls: Option<Calls>,
    /// `seq` and entry hash of the last `data` entry watched.
    last: Option<(u64, String)>,
}

/// The LLM conversation a connection's two taps feed (`semantics::websocket`).
pub type Calls = std::sync::Arc<std::sync::Mutex<crate::semantics::websocket::Conversation>>;

/// What a 101 negotiated for permessage-deflate (RFC 7692 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Deflate {
    /// `client_no_context_takeover`: each client → server message is compressed on its own.
    pub client_no_context_takeover: bool,
    /// `server_no_context_takeover`: each server → client message is compressed on its own.
    pub server_no_context_takeover: bool,
}

/// How much one message may inflate to before the inflater gives up on the direction (its
/// annotation keeps the first [`MESSAGE_CAP`] bytes either way).
const INFLATE_LIMIT: usize = 64 * MESSAGE_CAP;

/// One direction's permessage-deflate state.
struct Inflater {
    state: flate2::Decompress,
    reset_each: bool,
    /// Why this direction is no longer inflated (an earlier message could not be).
    broken: Option<String>,
}

impl Inflater {
    fn new(reset_each: bool) -> Inflater {
        Inflater {
            // Raw deflate with the largest window: inflates whatever window the peer chose.
            state: flate2::Decompress::new(false),
            reset_each,
            broken: None,
        }
    }

    /// The inflated payload (at most [`MESSAGE_CAP`] bytes kept) and its whole length.
    fn inflate(&mut self, m: &Message) -> Result<(Vec<u8>, u64), String> {
        if let Some(why) = &self.broken {
            return Err(why.clone());
        }
        let result = self.run(m);
        if let Err(e) = &result {
            if !self.reset_each {
                self.broken = Some(format!("not inflated: an earlier message was not ({e})"));
            }
        }
        if self.reset_each || result.is_err() {
            self.state.reset(false);
        }
        result
    }

    fn run(&mut self, m: &Message) -> Result<(Vec<u8>, u64), String> {
        if m.truncated() {
            return Err("the message was cut at the capture cap".into());
        }
        // RFC 7692 §7.2.2: the sender removed this empty stored block's tail; put it back.
        let mut input = m.payload.clone();
        input.extend_from_slice(&[0x00, 0x00, 0xff, 0xff]);
        let mut kept = Vec::new();
        let mut total = 0u64;
        let mut chunk = vec![0u8; 64 * 1024];
        let mut at = 0;
        loop {
            let (before_in, before_out) = (self.state.total_in(), self.state.total_out());
            self.state
                .decompress(&input[at..], &mut chunk, flate2::FlushDecompress::Sync)
                .map_err(|e| format!("corrupt deflate data: {e}"))?;
            let read = (self.state.total_in() - before_in) as usize;
            let wrote = (self.state.total_out() - before_out) as usize;
            at += read;
            total += wrote as u64;
            let room = MESSAGE_CAP.saturating_sub(kept.len());
            kept.extend_from_slice(&chunk[..wrote.min(room)]);
            if total > INFLATE_LIMIT as u64 {
                return Err(format!("inflates to more than {INFLATE_LIMIT} bytes"));
            }
            if at >= input.len() && wrote < chunk.len() {
                return Ok((kept, total));
            }
            if read == 0 && wrote == 0 {
                return Err("deflate data ends before the message does".into());
            }
        }
    }
}

impl Tap {
    /// A tap for `direction` of connection `conn`; `deflate` when the 101 response negotiated
    /// permessage-deflate.
    pub fn new(conn: u64, direction: Direction, deflate: Option<Deflate>) -> Tap {
        let reset_each = |d: Deflate| match direction {
            Direction::Up => d.client_no_context_takeover,
            Direction::Down => d.server_no_context_takeover,
        };
        Tap {
            decoder: Decoder::new(MESSAGE_CAP),
            conn,
            direction,
            deflate: deflate.map(|d| Inflater::new(reset_each(d))),
            index: 0,
            calls: None,
            last: None,
        }
    }

    /// This tap also feeds its text messages to `calls`, the LLM calls of the connection
    /// (the same for both directions), and appends what they say: `llm_request` for a
    /// client's `response.create`, `llm_response` for the server event that ends it.
    pub fn with_calls(mut self, calls: Calls) -> Tap {
        self.calls = Some(calls);
        self
    }

    /// What the LLM calls make of a message whose annotation is `data`.
    fn calls_of(&mut self, data: &Value) -> Vec<crate::semantics::Annotation> {
        let (Some(calls), Some(text)) = (&self.calls, data.get("text").and_then(Value::as_str))
        else {
            return Vec::new();
        };
        if data.get("opcode").and_then(Value::as_str) != Some("text") {
            return Vec::new();
        }
        let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
        let truncated = data.get("truncated") == Some(&Value::Bool(true))
            || data.get("inflated_truncated") == Some(&Value::Bool(true));
        // A poisoned lock: the other direction panicked mid-message; its state is still whole
        // messages (every update is one call), so carry on with it.
        let mut calls = calls.lock().unwrap_or_else(|p| p.into_inner());
        match self.direction {
            Direction::Up => calls.client(index, text, truncated),
            Direction::Down => calls.server(index, text, truncated),
        }
    }

    fn direction(&self) -> &'static str {
        match self.direction {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }

    /// The annotation (topic and data) of message `m`, the next of this direction: what
    /// [`Watch::watch`](crate::record::Watch::watch) appends for each message a read completes
    /// (public for the fuzz targets, which have no durable entry to watch).
    pub fn message(&mut self, mut m: Message) -> (&'static str, Value) {
        let mut data = Map::new();
        // Control frames are never compressed (RFC 7692 §6.1); RSV1 on one is the peer's error.
        let inflater = self
            .deflate
            .as_mut()
            .filter(|_| m.rsv1 && !m.opcode.is_control());
        let compressed = inflater.is_some();
        let mut inflated = false;
        if let Some(inflater) = inflater {
            match inflater.inflate(&m) {
                Ok((payload, len)) => {
                    data.insert("inflated_len".into(), len.into());
                    data.insert(
                        "inflated_truncated".into(),
                        (len > payload.len() as u64).into(),
                    );
                    m.payload = payload;
                    inflated = true;
                }
                Err(e) => {
                    data.insert("inflate_error".into(), e.into());
                }
            }
        }
        let readable = !compressed || inflated;
        data.insert("conn".into(), self.conn.into());
        data.insert("direction".into(), self.direction().into());
        data.insert("index".into(), self.index.into());
        data.insert("opcode".into(), m.opcode.name().into());
        data.insert("len".into(), m.len.into());
        data.insert("frames".into(), m.frames.into());
        data.insert("masked".into(), m.masked.into());
        data.insert("truncated".into(), m.truncated().into());
        data.insert("from_seq".into(), m.start.into());
        if compressed {
            data.insert("compressed".into(), true.into());
        }
        match std::str::from_utf8(&m.payload) {
            Ok(text) if readable => data.insert("text".into(), text.into()),
            _ => data.insert(
                "base64".into(),
                base64::engine::general_purpose::STANDARD
                    .encode(&m.payload)
                    .into(),
            ),
        };
        if m.opcode == Opcode::Close {
            if let [hi, lo, reason @ ..] = m.payload.as_slice() {
                data.insert("code".into(), u16::from_be_bytes([*hi, *lo]).into());
                data.insert(
                    "reason".into(),
                    String::from_utf8_lossy(reason).into_owned().into(),
                );
            }
        }
        self.index += 1;
        ("websocket.message", Value::Object(data))
    }
}

impl crate::record::Watch for Tap {
    fn watch(&mut self, bytes: &[u8], recorded: &Durable) -> Vec<Entry> {
        let (seq, hash) = (recorded.seq(), recorded.hash_hex());
        self.last = Some((seq, hash.clone()));
        let mut out = Vec::new();
        for event in self.decoder.push(bytes, seq) {
            let (topic, data) = match event {
                Event::Message(m) => self.message(m),
                Event::Malformed { offset, error } => (
                    "parse_error",
                    json!({
                        "conn": self.conn,
                        "direction": self.direction(),
                        "what": format!("websocket frames ({})", self.direction()),
                        "where": format!("byte {offset}"),
                        "error": error,
                    }),
                ),
            };
            let calls = self.calls_of(&data);
            out.push(annotation(seq, &hash, "websocket", topic, data));
            out.extend(
                calls
                    .into_iter()
                    .map(|a| annotation(seq, &hash, a.by, a.topic, a.data)),
            );
        }
        out
    }

    /// Calls still open when the connection ended get their `llm_response` (what came of
    /// it), on this direction's last `data` entry.
    fn end(&mut self) -> Vec<Entry> {
        let (Some(calls), Some((seq, hash))) = (&self.calls, &self.last) else {
            return Vec::new();
        };
        let ended = calls.lock().unwrap_or_else(|p| p.into_inner()).end();
        ended
            .into_iter()
            .map(|a| annotation(*seq, hash, a.by, a.topic, a.data))
            .collect()
    }
}

fn annotation(of_seq: u64, of_hash: &str, by: &str, topic: &str, data: Value) -> Entry {
    Entry::Annotation(Annotation {
        of_seq,
        of_hash: of_hash.to_owned(),
        by: by.into(),
        topic: topic.into(),
        data,
    })
}

/// Whether a 101 response switched to WebSocket (`Upgrade: websocket`), and whether it
/// negotiated permessage-deflate.
pub fn negotiated(headers: &http::HeaderMap) -> Option<Option<Deflate>> {
    let upgrade = headers.get_all(http::header::UPGRADE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("websocket"))
        })
    });
    if !upgrade {
        return None;
    }
    // The server accepts at most one permessage-deflate offer: `permessage-deflate; p1; p2=v`.
    let deflate = headers
        .get_all(http::header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|ext| {
            let mut params = ext.split(';').map(str::trim);
            let name = params.next()?;
            name.eq_ignore_ascii_case("permessage-deflate").then(|| {
                let mut d = Deflate::default();
                for p in params {
                    let key = p.split('=').next().unwrap_or_default().trim();
                    if key.eq_ignore_ascii_case("client_no_context_takeover") {
                        d.client_no_context_takeover = true;
                    } else if key.eq_ignore_ascii_case("server_no_context_takeover") {
                        d.server_no_context_takeover = true;
                    }
                }
                d
            })
        });
    Some(deflate)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One frame as a sender would write it.
    fn frame(fin: bool, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        let m = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(m | n as u8),
            n if n <= 0xffff => {
                out.push(m | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(m | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match mask {
            Some(k) => {
                out.extend_from_slice(&k);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
            }
            None => out.extend_from_slice(payload),
        }
        out
    }

    fn messages(events: Vec<Event>) -> Vec<Message> {
        events
            .into_iter()
            .map(|e| match e {
                Event::Message(m) => m,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    const KEY: Option<[u8; 4]> = Some([0x37, 0xfa, 0x21, 0x3d]);

    #[test]
    fn masked_and_unmasked_text() {
        for mask in [None, KEY] {
            let mut d = Decoder::new(MESSAGE_CAP);
            let m = messages(d.push(&frame(true, 1, mask, "héllo ✓".as_bytes()), 3));
            assert_eq!(m.len(), 1);
            assert_eq!(m[0].opcode, Opcode::Text);
            assert_eq!(m[0].payload, "héllo ✓".as_bytes());
            assert_eq!(m[0].masked, mask.is_some());
            assert_eq!((m[0].frames, m[0].start), (1, 3));
        }
    }

    #[test]
    fn many_frames_in_one_read_and_empty_payloads() {
        let mut bytes = frame(true, 1, KEY, b"one");
        bytes.extend(frame(true, 2, KEY, &[0, 1, 2, 255]));
        bytes.extend(frame(true, 9, KEY, b""));
        bytes.extend(frame(true, 1, KEY, b""));
        let m = messages(Decoder::new(64).push(&bytes, 0));
        let got: Vec<_> = m.iter().map(|m| (m.opcode, m.payload.clone())).collect();
        assert_eq!(
            got,
            [
                (Opcode::Text, b"one".to_vec()),
                (Opcode::Binary, vec![0, 1, 2, 255]),
                (Opcode::Ping, vec![]),
                (Opcode::Text, vec![]),
            ]
        );
    }

    #[test]
    fn split_at_every_byte() {
        let payload: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        let mut bytes = frame(true, 2, KEY, &payload);
        bytes.extend(frame(true, 1, None, b"after"));
        let mut d = Decoder::new(MESSAGE_CAP);
        let mut got = Vec::new();
        for (i, b) in bytes.iter().enumerate() {
            got.extend(messages(d.push(std::slice::from_ref(b), i as u64)));
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].payload, payload);
        assert_eq!(got[0].len, 300);
        assert_eq!(
            got[0].start, 0,
            "tag of the read holding the first header byte"
        );
        assert_eq!(got[1].payload, b"after");
        assert_eq!(got[1].start, (bytes.len() - 7) as u64);
    }

    #[test]
    fn sixteen_and_sixty_four_bit_lengths() {
        for n in [125usize, 126, 65_535, 65_536, 70_000] {
            let payload = vec![b'x'; n];
            let bytes = frame(true, 2, KEY, &payload);
            let expected_header = 2
                + 4
                + if n < 126 {
                    0
                } else if n <= 0xffff {
                    2
                } else {
                    8
                };
            assert_eq!(bytes.len(), n + expected_header);
            let m = messages(Decoder::new(MESSAGE_CAP).push(&bytes, 0));
            assert_eq!(m[0].payload, payload, "{n}");
        }
    }

    #[test]
    fn fragments_are_joined_around_a_control_frame() {
        let mut bytes = frame(false, 1, KEY, b"Hel");
        bytes.extend(frame(true, 9, KEY, b"ping!"));
        bytes.extend(frame(false, 0, KEY, b"lo, "));
        bytes.extend(frame(true, 0, KEY, "wörld".as_bytes()));
        let mut d = Decoder::new(MESSAGE_CAP);
        let (a, b) = bytes.split_at(5);
        let mut m = messages(d.push(a, 1));
        m.extend(messages(d.push(b, 2)));
        assert_eq!(m.len(), 2);
        assert_eq!(
            (m[0].opcode, m[0].payload.as_slice()),
            (Opcode::Ping, &b"ping!"[..])
        );
        assert_eq!(m[0].start, 2);
        assert_eq!(m[1].opcode, Opcode::Text);
        assert_eq!(m[1].payload, "Hello, wörld".as_bytes());
        assert_eq!((m[1].frames, m[1].start), (3, 1));
    }

    #[test]
    fn payload_is_capped_and_the_length_counted() {
        let payload = [7u8; 100];
        let mut bytes = frame(false, 2, KEY, &payload[..60]);
        bytes.extend(frame(true, 0, KEY, &payload[60..]));
        let m = messages(Decoder::new(50).push(&bytes, 0));
        assert_eq!(m[0].payload, vec![7u8; 50]);
        assert_eq!(m[0].len, 100);
        assert!(m[0].truncated());
    }

    #[test]
    fn close_with_code_and_reason() {
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        let m = messages(Decoder::new(64).push(&frame(true, 8, None, &payload), 0));
        assert_eq!(m[0].opcode, Opcode::Close);
        let mut tap = Tap::new(5, Direction::Down, None);
        let (topic, data) = tap.message(m[0].clone());
        assert_eq!(topic, "websocket.message");
        assert_eq!(data["code"], 1000);
        assert_eq!(data["reason"], "bye");
        assert_eq!(data["opcode"], "close");
        assert_eq!(data["direction"], "down");
        assert_eq!(data["conn"], 5);
    }

    #[test]
    fn annotation_data_text_binary_and_compressed() {
        let mut tap = Tap::new(5, Direction::Up, Some(Deflate::default()));
        let mut bytes = frame(true, 1, KEY, "naïve ✓".as_bytes());
        bytes.extend(frame(true, 2, KEY, &[0xff, 0x00]));
        // "Hi" compressed by a permessage-deflate sender (raw deflate, sync flush, tail cut).
        let mut compressed = frame(true, 1, KEY, &[0xf2, 0xc8, 0x04, 0x00]);
        compressed[0] |= 0x40;
        bytes.extend(compressed);
        let m = messages(Decoder::new(64).push(&bytes, 4));
        let notes: Vec<_> = m.into_iter().map(|m| tap.message(m).1).collect();
        assert_eq!(notes[0]["text"], "naïve ✓");
        assert_eq!(notes[0]["index"], 0);
        assert_eq!(notes[0]["masked"], true);
        assert_eq!(notes[0]["from_seq"], 4);
        assert_eq!(notes[1]["base64"], "/wA=");
        assert_eq!(notes[1]["index"], 1);
        assert_eq!(notes[2]["compressed"], true);
        assert_eq!(notes[2]["text"], "Hi", "{}", notes[2]);
        assert_eq!(notes[2]["inflated_len"], 2);
        assert_eq!(notes[2]["len"], 4);
        assert!(notes[0].get("compressed").is_none());
    }

    /// Messages as a permessage-deflate sender makes them: raw deflate, each ended with a
    /// sync flush whose 00 00 ff ff tail is cut; one compressor for all of them (context
    /// takeover) unless `reset_each`.
    fn deflated(texts: &[&str], reset_each: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut c = flate2::Compress::new(flate2::Compression::default(), false);
        for text in texts {
            if reset_each {
                c.reset();
            }
            let mut payload = Vec::with_capacity(text.len() + 64);
            c.compress_vec(text.as_bytes(), &mut payload, flate2::FlushCompress::Sync)
                .unwrap();
            assert!(payload.ends_with(&[0, 0, 0xff, 0xff]));
            payload.truncate(payload.len() - 4);
            let mut f = frame(true, 1, None, &payload);
            f[0] |= 0x40;
            out.extend(f);
        }
        out
    }

    fn inflated(tap: &mut Tap, bytes: &[u8]) -> Vec<Value> {
        messages(Decoder::new(MESSAGE_CAP).push(bytes, 0))
            .into_iter()
            .map(|m| tap.message(m).1)
            .collect()
    }

    #[test]
    fn deflated_messages_inflate_with_and_without_context_takeover() {
        let texts = [
            r#"{"type":"response.create","note":"the same words again and again"}"#,
            r#"{"type":"response.create","note":"the same words again and again"}"#,
            "ünïcode ✓",
        ];
        // Context takeover: the second message is mostly a back-reference into the first.
        let bytes = deflated(&texts, false);
        let mut tap = Tap::new(1, Direction::Down, Some(Deflate::default()));
        let notes = inflated(&mut tap, &bytes);
        for (note, text) in notes.iter().zip(texts) {
            assert_eq!(note["text"], text, "{note}");
        }
        assert!(notes[1]["len"].as_u64() < notes[0]["len"].as_u64());
        // No context takeover, as negotiated for this direction.
        let bytes = deflated(&texts, true);
        let deflate = Deflate {
            server_no_context_takeover: true,
            ..Deflate::default()
        };
        let mut tap = Tap::new(1, Direction::Down, Some(deflate));
        for (note, text) in inflated(&mut tap, &bytes).iter().zip(texts) {
            assert_eq!(note["text"], text, "{note}");
        }
    }

    #[test]
    fn a_message_that_will_not_inflate_stops_inflation_of_its_direction() {
        let mut bytes = frame(true, 1, None, &[0xff, 0xff, 0xff, 0xff]);
        bytes[0] |= 0x40;
        bytes.extend(deflated(&["next"], false));
        let mut tap = Tap::new(1, Direction::Down, Some(Deflate::default()));
        let notes = inflated(&mut tap, &bytes);
        assert!(notes[0]["inflate_error"]
            .as_str()
            .unwrap()
            .contains("corrupt"));
        assert_eq!(notes[0]["base64"], "/////w==");
        assert!(notes[1]["inflate_error"]
            .as_str()
            .unwrap()
            .contains("earlier message"));
        assert!(notes[1].get("text").is_none());
    }

    #[test]
    fn malformed_framing_is_reported_once_then_decoding_stops() {
        let cases: [(Vec<u8>, &str); 5] = [
            (vec![0x83, 0x00], "reserved opcode 0x3"),
            (frame(false, 9, None, b"x"), "fragmented"),
            (frame(true, 8, None, &[0; 126]), "longer than 125"),
            (frame(true, 0, None, b"x"), "no fragmented message"),
            (
                [0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0].to_vec(),
                "most significant bit",
            ),
        ];
        for (bad, why) in cases {
            let mut d = Decoder::new(64);
            let mut bytes = frame(true, 1, None, b"ok");
            let at = bytes.len() as u64;
            bytes.extend(bad);
            let events = d.push(&bytes, 0);
            assert_eq!(events.len(), 2, "{why}: {events:?}");
            match &events[1] {
                Event::Malformed { offset, error } => {
                    assert_eq!(*offset, at);
                    assert!(error.contains(why), "{error}");
                }
                other => panic!("{other:?}"),
            }
            assert!(d.push(&frame(true, 1, None, b"later"), 1).is_empty());
        }
        let mut d = Decoder::new(64);
        let mut bytes = frame(false, 1, None, b"a");
        bytes.extend(frame(true, 2, None, b"b"));
        assert!(matches!(&d.push(&bytes, 0)[..], [Event::Malformed { .. }]));
    }

    #[test]
    fn only_websocket_upgrades_are_decoded() {
        let mut h = http::HeaderMap::new();
        assert_eq!(negotiated(&h), None);
        h.insert("upgrade", "h2c".parse().unwrap());
        assert_eq!(negotiated(&h), None);
        h.insert("upgrade", "WebSocket".parse().unwrap());
        assert_eq!(negotiated(&h), Some(None));
        h.insert(
            "sec-websocket-extensions",
            "permessage-deflate; client_max_window_bits"
                .parse()
                .unwrap(),
        );
        assert_eq!(negotiated(&h), Some(Some(Deflate::default())));
        h.insert(
            "sec-websocket-extensions",
            "x-other, permessage-deflate; server_no_context_takeover; client_max_window_bits=10"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            negotiated(&h),
            Some(Some(Deflate {
                server_no_context_takeover: true,
                client_no_context_takeover: false,
            }))
        );
    }
}
