//! JSON helpers: where an error is in bytes, and what a body cut short still holds.
use serde_json::Value;

/// The byte offset of a serde_json error (its line and column are 1-based; column in bytes).
pub(super) fn error_offset(body: &[u8], e: &serde_json::Error) -> usize {
    if e.line() == 0 {
        return body.len();
    }
    let mut line = 1;
    let mut start = 0;
    for (i, b) in body.iter().enumerate() {
        if line == e.line() {
            break;
        }
        if *b == b'\n' {
            line += 1;
            start = i + 1;
        }
    }
    (start + e.column().saturating_sub(1)).min(body.len())
}

/// The value a JSON text cut short would have held, keeping only members and elements that
/// were complete: the text is cut back to the last point where a container had just opened or
/// a member had just ended, and the open containers are closed. `None` when nothing is left.
///
/// Linear in the body: the containers open at the cut are found by reading the kept prefix
/// again, not copied at every cut point (which made a deeply nested body quadratic).
pub(super) fn complete_prefix(body: &[u8]) -> Option<Value> {
    let mut cut: Option<usize> = None;
    scan(body, |i, b, depth| match b {
        b'{' | b'[' => cut = Some(i + 1),
        b',' if depth > 0 => cut = Some(i),
        _ => {}
    });
    let end = cut?;
    // The containers still open where the text is cut, as their closing bytes.
    let mut open: Vec<u8> = Vec::new();
    scan(&body[..end], |_, b, _| match b {
        b'{' => open.push(b'}'),
        b'[' => open.push(b']'),
        b'}' | b']' => {
            open.pop();
        }
        _ => {}
    });
    let mut text = body[..end].to_vec();
    text.extend(open.iter().rev());
    serde_json::from_slice(&text).ok()
}

/// Calls `f(offset, byte, depth)` for every byte of `body` outside strings (`depth`: the
/// containers open before it).
fn scan(body: &[u8], mut f: impl FnMut(usize, u8, usize)) {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in body.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        f(i, b, depth);
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
}

/// `v[key]` as a string.
pub(super) fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// `v[key]` as a string value, or null.
pub(super) fn str_or_null(v: &Value, key: &str) -> Value {
    str_of(v, key).map_or(Value::Null, |s| Value::String(s.to_string()))
}

/// `v[key]` as an array (empty when absent or not an array).
pub(super) fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// `v[key]` as an unsigned integer.
pub(super) fn u64_of(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prefix_keeps_complete_members() {
        let full = br#"{"a": [1, 2, {"b": "xyz"}], "c": "hello"}"#;
        for n in 0..full.len() {
            // Never panics; a non-empty result is always an object.
            if let Some(v) = complete_prefix(&full[..n]) {
                assert!(v.is_object(), "{n}");
            }
        }
        assert_eq!(
            complete_prefix(br#"{"a": [1, 2, {"b": "xy"#),
            Some(json!({"a": [1, 2, {}]}))
        );
        assert_eq!(
            complete_prefix(br#"{"a": [1, 2], "c": "he"#),
            Some(json!({"a": [1, 2]}))
        );
    }

    /// Found writing the `semantics` fuzz target: each cut point copied the stack of open
    /// containers, so an MCP request body of 64 KiB of `[` (any JSON error sends an MCP body
    /// here) took 2 s and 2 GB under the fuzzer, and one of 8 MiB (`SEMANTICS_CAP`) hours of a
    /// runtime thread. This test holds what such bodies give; the cost is watched by the
    /// `semantics` fuzz target (libFuzzer's `-timeout` and `-rss_limit_mb`), not by a clock.
    #[test]
    fn a_deeply_nested_body_is_linear() {
        for open in [b'[', b'{'] {
            let body = vec![open; 8 * 1024 * 1024];
            assert_eq!(complete_prefix(&body), None);
        }
        let mut body = b"[".repeat(200);
        body.extend_from_slice(&b"1,".repeat(4 * 1024 * 1024));
        assert_eq!(
            complete_prefix(&body),
            None,
            "nested beyond serde_json's limit"
        );
        assert_eq!(
            complete_prefix(br#"[{"a": [1, {"b": 2}, 3], "c"#),
            Some(json!([{"a": [1, {"b": 2}, 3]}]))
        );
        // A mismatched closer still closes the container (as before the change): the last cut
        // is after `1`, and what follows at the top level is no member of anything.
        assert_eq!(complete_prefix(br#"[1, 2}, 3"#), Some(json!([1])));
    }

    #[test]
    fn offsets_count_bytes() {
        let body = b"{\n  \"a\": 1,\n  \"b\": x\n}";
        let e = serde_json::from_slice::<Value>(body).unwrap_err();
        assert_eq!(body[error_offset(body, &e)], b'x');
    }
}

// === Surrogate halves split across stream deltas ===
//
// A stream may cut a character outside the Basic Multilingual Plane between two deltas, each
// carrying half of its UTF-16 surrogate pair as a `\uD83D` / `\uDE80` escape. Such a JSON text
// does not parse into strings, so each lone half is stood in for by a private-use character
// (planes 16: U+100000 + the half's offset) and [`rejoin`] pairs them up again once the pieces
// are joined.

const HIGH: u32 = 0x10_0000;
const LOW: u32 = 0x10_0400;

/// The JSON text with each lone surrogate escape replaced by its stand-in; `None` if it had
/// none.
pub(super) fn stand_in_surrogates(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let hex = |i: usize| -> Option<u32> {
        let s = text.get(i..i + 4)?;
        u32::from_str_radix(s, 16).ok()
    };
    let escape_at = |i: usize| -> Option<u32> {
        (b.get(i) == Some(&b'\\') && b.get(i + 1) == Some(&b'u'))
            .then(|| hex(i + 2))
            .flatten()
    };
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    let mut last = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        let Some(u) = escape_at(i) else {
            i += 2;
            continue;
        };
        let lone = match u {
            0xD800..=0xDBFF => {
                if escape_at(i + 6).is_some_and(|l| (0xDC00..=0xDFFF).contains(&l)) {
                    i += 12;
                    continue;
                }
                Some(HIGH + (u - 0xD800))
            }
            0xDC00..=0xDFFF => Some(LOW + (u - 0xDC00)),
            _ => None,
        };
        if let Some(c) = lone.and_then(char::from_u32) {
            out.push_str(&text[last..i]);
            out.push(c);
            last = i + 6;
            changed = true;
        }
        i += 6;
    }
    out.push_str(&text[last..]);
    changed.then_some(out)
}

/// Pairs stand-ins of surrogate halves back into characters; a half left alone becomes U+FFFD.
pub(super) fn rejoin(s: &str) -> std::borrow::Cow<'_, str> {
    let is_stand_in = |c: char| (HIGH..LOW + 0x400).contains(&(c as u32));
    if !s.chars().any(is_stand_in) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        let n = c as u32;
        if (HIGH..LOW).contains(&n) {
            if let Some(&next) = chars.peek() {
                let m = next as u32;
                if (LOW..LOW + 0x400).contains(&m) {
                    chars.next();
                    let cp = 0x1_0000 + ((n - HIGH) << 10) + (m - LOW);
                    out.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
                    continue;
                }
            }
            out.push('\u{FFFD}');
        } else if (LOW..LOW + 0x400).contains(&n) {
            out.push('\u{FFFD}');
        } else {
            out.push(c);
        }
    }
    out.into()
}

#[cfg(test)]
mod surrogate_tests {
    use super::*;

    #[test]
    fn halves_rejoin() {
        let a = stand_in_surrogates(r#"{"d":"x \ud83d"}"#).unwrap();
        let b = stand_in_surrogates(r#"{"d":"\ude80 y"}"#).unwrap();
        let a: Value = serde_json::from_str(&a).unwrap();
        let b: Value = serde_json::from_str(&b).unwrap();
        let joined = format!("{}{}", a["d"].as_str().unwrap(), b["d"].as_str().unwrap());
        assert_eq!(rejoin(&joined), "x 🚀 y");
        assert_eq!(stand_in_surrogates(r#"{"d":"\ud83d\ude80 \\ud83d"}"#), None);
        let lone: Value =
            serde_json::from_str(&stand_in_surrogates(r#""\ud83d!""#).unwrap()).unwrap();
        assert_eq!(rejoin(lone.as_str().unwrap()), "\u{FFFD}!");
    }
}
