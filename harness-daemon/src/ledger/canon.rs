//! The canonical form of a recorded entry (RFC 8785 JCS), entry hashes, the chain's genesis,
//! timestamps, and parsing one line back into a checked record. SPEC.md §3–§5.
use super::entry::Entry;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use ulid::Ulid;

/// Format version written in every entry's `v`.
pub const FORMAT_VERSION: u64 = 1;

/// Field names the envelope owns; no entry kind may use them.
pub const ENVELOPE_FIELDS: [&str; 5] = ["v", "session", "seq", "ts", "prev"];

/// Largest integer an entry may hold (I-JSON, RFC 7493: exact in an IEEE 754 double).
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

/// The `prev` of a session's first entry: SHA-256 of `harness-ledger-v1 genesis <ULID>`.
pub fn genesis(session: &Ulid) -> Hash {
    sha256(format!("harness-ledger-v1 genesis {session}").as_bytes())
}

/// The timestamp format: RFC 3339, UTC, exactly six fractional digits, `Z`.
pub fn format_ts(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// Whether `ts` has exactly the form [`format_ts`] writes.
pub fn ts_well_formed(ts: &str) -> bool {
    let b = ts.as_bytes();
    b.len() == 27
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            26 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
        && time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).is_ok()
}

/// Why an entry could not be put in canonical form.
#[derive(Debug, thiserror::Error)]
pub enum CanonError {
    /// The entry did not serialize to a JSON object.
    #[error("entry does not serialize to a JSON object")]
    NotObject,
    /// An entry field uses a name the envelope owns.
    #[error("entry field `{0}` collides with the envelope")]
    Reserved(String),
    /// An integer outside ±(2^53−1), or a non-finite number.
    #[error("number {0} cannot be represented exactly in canonical JSON")]
    Number(String),
    /// serde_json / serde_jcs failed.
    #[error("serialization: {0}")]
    Json(#[from] serde_json::Error),
}

/// Serializes a caller's entry into the object the writer completes with the envelope, and
/// checks that it can be written canonically. Runs on the caller's task, off the writer thread.
pub fn entry_object(entry: &Entry) -> Result<Map<String, Value>, CanonError> {
    let Value::Object(map) = serde_json::to_value(entry)? else {
        return Err(CanonError::NotObject);
    };
    for f in ENVELOPE_FIELDS {
        if map.contains_key(f) {
            return Err(CanonError::Reserved(f.into()));
        }
    }
    for v in map.values() {
        check_numbers(v)?;
    }
    Ok(map)
}

fn check_numbers(v: &Value) -> Result<(), CanonError> {
    match v {
        Value::Number(n) => {
            let ok = if let Some(u) = n.as_u64() {
                u <= MAX_SAFE_INTEGER
            } else if let Some(i) = n.as_i64() {
                i.unsigned_abs() <= MAX_SAFE_INTEGER
            } else {
                n.as_f64().is_some_and(f64::is_finite)
            };
            if ok {
                Ok(())
            } else {
                Err(CanonError::Number(n.to_string()))
            }
        }
        Value::Array(a) => a.iter().try_for_each(check_numbers),
        Value::Object(o) => o.values().try_for_each(check_numbers),
        _ => Ok(()),
    }
}

/// Adds the envelope to `object` and returns its canonical bytes (no trailing newline).
pub fn seal(
    mut object: Map<String, Value>,
    session: &Ulid,
    seq: u64,
    ts: &str,
    prev: &Hash,
) -> Result<Vec<u8>, CanonError> {
    object.insert("v".into(), Value::from(FORMAT_VERSION));
    object.insert("session".into(), Value::from(session.to_string()));
    object.insert("seq".into(), Value::from(seq));
    object.insert("ts".into(), Value::from(ts));
    object.insert("prev".into(), Value::from(hex::encode(prev)));
    Ok(serde_jcs::to_vec(&Value::Object(object))?)
}

/// One line of a session file, parsed and checked on its own (not yet against its neighbours).
#[derive(Debug, Clone)]
pub struct Line {
    /// SHA-256 of the line's bytes (without the newline): the entry hash.
    pub hash: Hash,
    /// `seq`.
    pub seq: u64,
    /// `session`.
    pub session: String,
    /// `ts`.
    pub ts: String,
    /// `prev`, decoded.
    pub prev: Hash,
    /// The entry.
    pub entry: Entry,
}

/// Parses and checks one line (without its newline): JSON, canonical form, envelope, entry.
pub fn parse_line(bytes: &[u8]) -> Result<Line, String> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON ({e})"))?;
    let mut canonical = Vec::with_capacity(bytes.len());
    jcs(&value, &mut canonical).map_err(|e| format!("not canonical ({e})"))?;
    if canonical != bytes {
        return Err("not in canonical form (RFC 8785)".into());
    }
    let Value::Object(mut map) = value else {
        return Err("not a JSON object".into());
    };
    let mut take = |k: &str| map.remove(k).ok_or_else(|| format!("no `{k}` field"));
    let v = take("v")?;
    if v.as_u64() != Some(FORMAT_VERSION) {
        return Err(format!("unsupported format version {v}"));
    }
    let seq = take("seq")?
        .as_u64()
        .filter(|s| *s <= MAX_SAFE_INTEGER)
        .ok_or("`seq` is not a non-negative integer")?;
    let Value::String(session) = take("session")? else {
        return Err("`session` is not a string".into());
    };
    let Value::String(ts) = take("ts")? else {
        return Err("`ts` is not a string".into());
    };
    if !ts_well_formed(&ts) {
        return Err(format!("`ts` {ts:?} is not YYYY-MM-DDTHH:MM:SS.ffffffZ"));
    }
    let Value::String(prev_hex) = take("prev")? else {
        return Err("`prev` is not a string".into());
    };
    let prev = decode_hash(&prev_hex).ok_or("`prev` is not 64 lower-case hex digits")?;
    let entry: Entry =
        serde_json::from_value(Value::Object(map)).map_err(|e| format!("bad entry: {e}"))?;
    Ok(Line {
        hash: sha256(bytes),
        seq,
        session,
        ts,
        prev,
        entry,
    })
}

/// Appends the RFC 8785 serialization of `v` to `out`. Byte-for-byte the same as
/// `serde_jcs::to_vec(v)` (the writer's serializer; a test holds them equal), but several times
/// faster, which matters to the verifier. Numbers other than safe integers are formatted by
/// serde_jcs itself.
pub fn jcs(v: &Value, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) if u <= MAX_SAFE_INTEGER => {
                out.extend_from_slice(u.to_string().as_bytes())
            }
            (None, Some(i)) if i.unsigned_abs() <= MAX_SAFE_INTEGER => {
                out.extend_from_slice(i.to_string().as_bytes())
            }
            _ => out.extend_from_slice(&serde_jcs::to_vec(n)?),
        },
        Value::String(s) => jcs_str(s, out),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                jcs(x, out)?;
            }
            out.push(b']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            if !keys.iter().all(|k| k.is_ascii()) {
                // UTF-16 code unit order; for ASCII names it equals byte order (the map's).
                keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            }
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                jcs_str(k, out);
                out.push(b':');
                jcs(&m[k], out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn jcs_str(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x09 => b"\\t",
            0x0a => b"\\n",
            0x0c => b"\\f",
            0x0d => b"\\r",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 15) as usize],
            ]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Decodes 64 lower-case hex digits.
pub fn decode_hash(s: &str) -> Option<Hash> {
    if s.len() != 64 || s.bytes().any(|c| c.is_ascii_uppercase()) {
        return None;
    }
    let mut h = [0u8; 32];
    hex::decode_to_slice(s, &mut h).ok()?;
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ts_format() {
        let t = time::macros::datetime!(2026-05-01 12:34:56.789 UTC);
        let s = format_ts(t);
        assert_eq!(s, "2026-05-01T12:34:56.789000Z");
        assert!(ts_well_formed(&s));
        assert!(!ts_well_formed("2026-05-01T12:34:56Z"));
    }

    #[test]
    fn fast_jcs_equals_serde_jcs() {
        let samples = [
            r#"{"b":1,"a":[true,false,null,-0.0,1e30,4.50,2e-3,333333333.33333329,-7,9007199254740991,9007199254740993,18446744073709551615,-9007199254740993]}"#,
            r#"{"\u20ac":"Euro","\r":"CR","\ufb33":"x","1":"One","\ud83d\ude00":"e","\u0080":"c","\u00f6":"o"}"#,
            r#"{"s":"\u0000\u0008\t\n\u000b\f\r\u001f\u007f\"\\/é€😀","n":{"z":[],"y":{}}}"#,
        ];
        for s in samples {
            let v: Value = serde_json::from_str(s).unwrap();
            let mut fast = Vec::new();
            jcs(&v, &mut fast).unwrap();
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                serde_jcs::to_string(&v).unwrap(),
                "{s}"
            );
        }
    }

    #[test]
    fn big_numbers_refused() {
        let e = Entry::ConnClose(super::super::ConnClose {
            conn: u64::MAX,
            bytes_up: 0,
            bytes_down: 0,
            duration_ms: 0,
            error: None,
            client_tls_end: None,
            upstream_tls_end: None,
        });
        assert!(matches!(entry_object(&e), Err(CanonError::Number(_))));
    }
}
