//! `websocket::Decoder::push` on one direction's bytes split into reads at fuzzer-chosen points,
//! and every message it completes through `Tap::message` (the annotation, with and without
//! permessage-deflate and context takeover).
//!
//! Checks: the same events come out however the bytes are split (but for `start`, which names
//! the read); a payload is at most the cap and `len` counts the whole of it; control frames are
//! single and at most 125 bytes; a malformed frame is reported once, last, and nothing is
//! decoded after it; annotations number the messages in order; the text messages read as the
//! LLM calls of a Responses WebSocket (`semantics::websocket`) give only `llm_request`,
//! `llm_response` and `parse_error`, never more responses than requests, and every call still
//! open ends with the connection.
//!
//! Input: `[config, splits, (u16 LE offset) × splits, stream…]`; `config` bits 0-2 pick the
//! cap, bit 3 negotiates permessage-deflate, bits 4 and 5 its `client_no_context_takeover` and
//! `server_no_context_takeover`, bit 6 the direction (down).
#![no_main]

use harness::ledger::Direction;
use harness::semantics::websocket::Conversation;
use harness::websocket::{Decoder, Deflate, Event, Message, Opcode, Tap, MESSAGE_CAP};
use libfuzzer_sys::fuzz_target;

const CAPS: [usize; 8] = [0, 1, 2, 3, 16, 125, 1024, MESSAGE_CAP];

fuzz_target!(|data: &[u8]| {
    let [config, splits, rest @ ..] = data else {
        return;
    };
    let splits = usize::from(*splits % 9);
    if rest.len() < 2 * splits {
        return;
    }
    let (offsets, stream) = rest.split_at(2 * splits);
    let mut cuts: Vec<usize> = offsets
        .chunks(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();
    let cap = CAPS[usize::from(config & 7)];

    // All at once, as one read.
    let mut whole = Decoder::new(cap);
    let at_once = whole.push(stream, 0);

    // The same bytes read by read; each read tagged by its number.
    let mut split = Decoder::new(cap);
    let mut events = Vec::new();
    let mut from = 0;
    let mut bounds = cuts.clone();
    bounds.push(stream.len());
    for (tag, &to) in bounds.iter().enumerate() {
        for e in split.push(&stream[from..to], tag as u64) {
            if let Event::Message(m) = &e {
                assert!(
                    m.start <= tag as u64,
                    "message starts in a later read ({}) than the one completing it ({tag})",
                    m.start
                );
            }
            events.push(e);
        }
        from = to;
    }
    assert_eq!(
        without_start(&at_once),
        without_start(&events),
        "the events depend on how the bytes were split"
    );

    let mut seen = 0u64;
    for (i, e) in events.iter().enumerate() {
        match e {
            Event::Message(m) => {
                check_message(m, cap);
                seen += m.len;
            }
            Event::Malformed { offset, error } => {
                assert_eq!(i + 1, events.len(), "events after a malformed frame");
                assert!(*offset < stream.len() as u64, "malformed at {offset}");
                assert!(!error.is_empty());
                assert!(
                    split.push(&[0x81, 0x00], 99).is_empty(),
                    "decoded after a malformed frame"
                );
            }
        }
    }
    assert!(
        seen <= stream.len() as u64,
        "messages hold {seen} payload bytes of {} read",
        stream.len()
    );

    // The annotations, as the relay's tap makes them.
    let deflate = (config & 8 != 0).then_some(Deflate {
        client_no_context_takeover: config & 16 != 0,
        server_no_context_takeover: config & 32 != 0,
    });
    let direction = if config & 64 != 0 {
        Direction::Down
    } else {
        Direction::Up
    };
    let mut tap = Tap::new(7, direction, deflate);
    // The server's messages belong to a call only once one is open.
    let mut calls = Conversation::new("/v1/responses").expect("a Responses path");
    let (mut requests, mut responses) = (0usize, 0usize);
    let mut count = |notes: Vec<harness::semantics::Annotation>| {
        for n in notes {
            match n.topic {
                "llm_request" => requests += 1,
                "llm_response" => responses += 1,
                "parse_error" => {}
                other => panic!("a call annotation of topic {other}"),
            }
            assert!(responses <= requests, "a response with no request");
            serde_json::to_vec(&n.data).expect("a call annotation serialises");
        }
    };
    if direction == Direction::Down {
        count(calls.client(0, r#"{"type":"response.create","model":"m","input":"x"}"#, false));
    }
    for (index, e) in events.into_iter().enumerate() {
        let Event::Message(m) = e else {
            continue;
        };
        let (len, compressed) = (m.len, m.rsv1 && deflate.is_some() && !is_control(m.opcode));
        let (topic, note) = tap.message(m);
        assert_eq!(topic, "websocket.message");
        assert_eq!(note["index"], index as u64);
        assert_eq!(note["len"], len);
        assert_eq!(note["conn"], 7);
        assert_eq!(note.get("compressed").is_some(), compressed, "{note}");
        assert!(note.get("text").is_some() || note.get("base64").is_some());
        serde_json::to_vec(&note).expect("an annotation serialises");
        if let (Some(text), "text") = (note["text"].as_str(), note["opcode"].as_str().unwrap()) {
            let i = index as u64;
            count(match direction {
                Direction::Up => calls.client(i, text, false),
                Direction::Down => calls.server(i, text, false),
            });
        }
    }
    count(calls.end());
    assert_eq!(requests, responses, "every call ends with the connection");
});

fn check_message(m: &Message, cap: usize) {
    assert!(m.payload.len() <= cap, "payload over the cap");
    assert!(m.payload.len() as u64 <= m.len);
    assert_eq!(m.truncated(), m.len > m.payload.len() as u64);
    assert!(m.frames >= 1);
    assert_ne!(
        m.opcode,
        Opcode::Continuation,
        "a message named continuation"
    );
    if is_control(m.opcode) {
        assert_eq!(m.frames, 1, "a fragmented control frame");
        assert!(m.len <= 125, "a control frame of {} bytes", m.len);
    }
}

fn is_control(op: Opcode) -> bool {
    matches!(op, Opcode::Close | Opcode::Ping | Opcode::Pong)
}

fn without_start(events: &[Event]) -> Vec<Event> {
    events
        .iter()
        .cloned()
        .map(|mut e| {
            if let Event::Message(m) = &mut e {
                m.start = 0;
            }
            e
        })
        .collect()
}
