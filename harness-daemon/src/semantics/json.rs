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
pub(super) fn complete_prefix(body: &[u8]) -> Option<Value> {
    // Open containers, as their closing bytes.
    let mut open: Vec<u8> = Vec::new();
    // The last cut point: (end of the kept prefix, the closers needed there).
    let mut cut: Option<(usize, Vec<u8>)> = None;
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
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                open.push(if b == b'{' { b'}' } else { b']' });
                cut = Some((i + 1, open.clone()));
            }
            b'}' | b']' => {
                open.pop();
            }
            b',' if !open.is_empty() => cut = Some((i, open.clone())),
            _ => {}
        }
    }
    let (end, closers) = cut?;
    let mut text = body[..end].to_vec();
    text.extend(closers.iter().rev());
    serde_json::from_slice(&text).ok()
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

    #[test]
    fn offsets_count_bytes() {
        let body = b"{\n  \"a\": 1,\n  \"b\": x\n}";
        let e = serde_json::from_slice::<Value>(body).unwrap_err();
        assert_eq!(body[error_offset(body, &e)], b'x');
    }
}
