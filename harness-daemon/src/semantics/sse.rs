//! Server-sent events read back from a recorded body, the way a client's parser would
//! (WHATWG HTML "event stream interpretation"): lines end in CRLF, LF or CR; `data:` lines join
//! with LF; a blank line dispatches; `:` starts a comment. An event still open when the body
//! ends is not dispatched (no client saw it) and is reported.
use serde_json::Value;

use super::Errs;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Event {
    /// 0, 1, 2… in the order dispatched.
    pub index: usize,
    /// Byte offset of the event's first line in the body.
    pub offset: usize,
    /// The `event:` field, or `message` when there was none.
    pub name: String,
    /// The `data:` lines joined with LF.
    pub data: String,
}

impl Event {
    /// Where this event is, for a `parse_error`.
    pub fn at(&self) -> String {
        format!("event {} (byte {})", self.index, self.offset)
    }

    /// The event's data as JSON, or a parse error noted against it.
    pub fn json(&self, errs: &mut Errs) -> Option<Value> {
        match serde_json::from_str(&self.data) {
            Ok(v) => Some(v),
            Err(e) => {
                // Half of a surrogate pair, the other half in another delta.
                let fixed = super::json::stand_in_surrogates(&self.data);
                if let Some(v) = fixed.and_then(|t| serde_json::from_str(&t).ok()) {
                    return Some(v);
                }
                errs.add(self.at(), e.to_string());
                None
            }
        }
    }
}

/// Does a body without an event-stream content type still look like one?
pub(super) fn looks_like(body: &[u8]) -> bool {
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(body.len());
    let rest = &body[start..];
    rest.starts_with(b"data:") || rest.starts_with(b"event:") || rest.starts_with(b": ")
}

/// The events of a body; an event left open at the end is noted in `errs`.
pub(super) fn events(body: &[u8], errs: &mut Errs) -> Vec<Event> {
    let mut out = Vec::new();
    let mut name: Option<String> = None;
    let mut data: Option<String> = None;
    let mut start: Option<usize> = None;
    let mut pos = 0;
    // A leading byte order mark is ignored.
    if body.starts_with(&[0xEF, 0xBB, 0xBF]) {
        pos = 3;
    }
    while pos < body.len() {
        let rest = &body[pos..];
        let (len, ending) = match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            Some(i) if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') => (i, 2),
            // A CR as the last byte may be the first half of a CRLF that was cut off.
            Some(i) if rest[i] == b'\r' && i + 1 == rest.len() => (i, 1),
            Some(i) => (i, 1),
            None => (rest.len(), 0),
        };
        let line = &rest[..len];
        let line_start = pos;
        pos += len + ending;
        if ending == 0 {
            // The body ended inside a line: that line never completed.
            if start.is_none() {
                start = Some(line_start);
            }
            data.get_or_insert_with(String::new);
            break;
        }
        if line.is_empty() {
            if let Some(d) = data.take() {
                let d = d.strip_suffix('\n').unwrap_or(&d).to_string();
                out.push(Event {
                    index: out.len(),
                    offset: start.unwrap_or(line_start),
                    name: name.take().unwrap_or_else(|| "message".into()),
                    data: d,
                });
            }
            name = None;
            start = None;
            continue;
        }
        if line[0] == b':' {
            continue;
        }
        if start.is_none() {
            start = Some(line_start);
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match field {
            b"data" => {
                let d = data.get_or_insert_with(String::new);
                d.push_str(&value);
                d.push('\n');
            }
            b"event" => name = Some(value.into_owned()),
            _ => {}
        }
    }
    if let Some(offset) = start {
        errs.add(
            format!("event {} (byte {offset})", out.len()),
            "the stream ends inside an event (no blank line after it), which no client received",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &[u8]) -> (Vec<Event>, usize) {
        let mut errs = Errs::new("t", false);
        let ev = events(body, &mut errs);
        (ev, errs.list.len())
    }

    #[test]
    fn framing() {
        let (ev, n) = parse(b": hi\r\nevent: a\r\ndata: 1\r\ndata:2\r\n\r\ndata: x\n\ndata: y\r\r");
        assert_eq!(n, 0);
        assert_eq!(ev.len(), 3);
        assert_eq!((ev[0].name.as_str(), ev[0].data.as_str()), ("a", "1\n2"));
        assert_eq!(ev[0].offset, 6);
        assert_eq!((ev[1].name.as_str(), ev[1].data.as_str()), ("message", "x"));
        assert_eq!(ev[2].data, "y");
    }

    #[test]
    fn open_event_is_reported() {
        let (ev, n) = parse(b"data: 1\n\ndata: {\"a\"");
        assert_eq!((ev.len(), n), (1, 1));
        let (ev, n) = parse(b"data: 1\n\ndata: 2\n");
        assert_eq!((ev.len(), n), (1, 1));
        let (ev, n) = parse(b"data: 1\n\n");
        assert_eq!((ev.len(), n), (1, 0));
    }
}
