//! The canonical form of a recorded entry (RFC 8785 JCS), entry hashes, the chain's genesis,
//! timestamps, and parsing one line back into a checked record. SPEC.md §3–§5.
use super::entry::Entry;
use serde_json::Value;
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

/// An entry in canonical form but for its envelope: each member's `"name":value` bytes, in
/// canonical order. Made by [`prepare`] on the caller's task, so that the writer thread, which
/// every entry of a session passes through one at a time, only merges the envelope in
/// ([`seal`]) and hashes.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The members' `"name":value`, concatenated in canonical order.
    bytes: Vec<u8>,
    /// Each member's name and where its bytes end in `bytes`.
    members: Vec<(String, usize)>,
}

/// Serializes a caller's entry into canonical member bytes the writer completes with the
/// envelope, checking that it can be written canonically. Runs on the caller's task, off the
/// writer thread.
pub fn prepare(entry: &Entry) -> Result<Prepared, CanonError> {
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
    let mut bytes = Vec::with_capacity(512);
    let mut members = Vec::with_capacity(map.len());
    for (name, value) in utf16_ordered(&map) {
        jcs_str(name, &mut bytes);
        bytes.push(b':');
        jcs(value, &mut bytes)?;
        members.push((name.clone(), bytes.len()));
    }
    Ok(Prepared { bytes, members })
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

/// Merges the envelope into a prepared entry and returns its canonical bytes (no trailing
/// newline): the envelope's members take their places among the entry's in canonical order.
pub fn seal(entry: &Prepared, session: &Ulid, seq: u64, ts: &str, prev: &Hash) -> Vec<u8> {
    // In canonical order; each written straight into the line (on the writer thread, which
    // every entry of the session passes through, nothing is allocated for them).
    const ENVELOPE: [&str; 5] = ["prev", "seq", "session", "ts", "v"];
    let envelope_member = |name: &str, out: &mut Vec<u8>| {
        jcs_str(name, out);
        out.push(b':');
        match name {
            "prev" => {
                let mut hex = [0u8; 64];
                // 32 bytes always fit 64 hex digits.
                let _ = hex::encode_to_slice(prev, &mut hex);
                out.push(b'"');
                out.extend_from_slice(&hex);
                out.push(b'"');
            }
            "seq" => {
                let _ = std::io::Write::write_fmt(out, format_args!("{seq}"));
            }
            "session" => jcs_str(session.array_to_str(&mut [0; ulid::ULID_LEN]), out),
            "ts" => jcs_str(ts, out),
            _ => {
                let _ = std::io::Write::write_fmt(out, format_args!("{FORMAT_VERSION}"));
            }
        }
    };
    let mut out = Vec::with_capacity(entry.bytes.len() + 200);
    out.push(b'{');
    let mut first = true;
    let mut separate = |out: &mut Vec<u8>| {
        if !first {
            out.push(b',');
        }
        first = false;
    };
    let mut start = 0;
    let mut env = ENVELOPE.iter().peekable();
    for (name, end) in &entry.members {
        while let Some(env_name) = env.next_if(|n| utf16_less(n, name)) {
            separate(&mut out);
            envelope_member(env_name, &mut out);
        }
        separate(&mut out);
        out.extend_from_slice(&entry.bytes[start..*end]);
        start = *end;
    }
    for env_name in env {
        separate(&mut out);
        envelope_member(env_name, &mut out);
    }
    out.push(b'}');
    out
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
/// The line is read once to check its canonical form, which also finds its top-level members;
/// the envelope is read from those, and the entry once more, straight into its kind's type.
pub fn parse_line(bytes: &[u8]) -> Result<Line, String> {
    // The canonical check also checks every string's UTF-8, and so the whole line's.
    let Some(members) = canonical_members(bytes) else {
        // Which of the two: only a line that fails is parsed a second time.
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                Err(e) => format!("not valid JSON ({e})"),
                Ok(_) => "not in canonical form (RFC 8785)".into(),
            },
        );
    };
    if bytes.first() != Some(&b'{') {
        return Err("not a JSON object".into());
    }
    // Canonical names are unique and escaped one way only, so a name is found by its bytes.
    let member = |name: &str| {
        members
            .iter()
            .find(|(n, _)| *n == name.as_bytes())
            .map(|(_, value)| *value)
    };
    let take = |name: &str| member(name).ok_or_else(|| format!("no `{name}` field"));
    let v = take("v")?;
    if safe_uint(v) != Some(FORMAT_VERSION) {
        return Err(format!(
            "unsupported format version {}",
            String::from_utf8_lossy(v)
        ));
    }
    let seq = safe_uint(take("seq")?).ok_or("`seq` is not a non-negative integer")?;
    let session = json_string(take("session")?).ok_or("`session` is not a string")?;
    let ts = json_string(take("ts")?).ok_or("`ts` is not a string")?;
    if !ts_well_formed(&ts) {
        return Err(format!("`ts` {ts:?} is not YYYY-MM-DDTHH:MM:SS.ffffffZ"));
    }
    let prev = json_string(take("prev")?).ok_or("`prev` is not a string")?;
    let prev = decode_hash(&prev).ok_or("`prev` is not 64 lower-case hex digits")?;
    // The entry is read from its own members straight into its kind's type; the envelope's
    // are not the entry's (no entry kind may use their names). A kind the fast way does not
    // know is read the general way, which names what is wrong with it.
    let entry = member("kind")
        .and_then(json_string)
        .and_then(|kind| Entry::read_kind(&kind, EntryMembers::of(&members)))
        .unwrap_or_else(|| serde_json::from_slice::<Entry>(bytes))
        .map_err(|e| format!("bad entry: {e}"))?;
    Ok(Line {
        hash: sha256(bytes),
        seq,
        session: session.into_owned(),
        ts: ts.into_owned(),
        prev,
        entry,
    })
}

/// The members of a line that are the entry's own (all but the envelope's and `kind`), offered
/// to serde as one map whose values are each read from their own bytes: the envelope is not
/// parsed again, and neither is the line as a whole.
struct EntryMembers<'a> {
    members: std::slice::Iter<'a, Member<'a>>,
    value: &'a [u8],
}

impl<'a> EntryMembers<'a> {
    fn of(members: &'a [Member<'a>]) -> EntryMembers<'a> {
        EntryMembers {
            members: members.iter(),
            value: b"",
        }
    }
}

/// The members of a line that are not its entry's.
const NOT_THE_ENTRY: [&[u8]; 6] = [b"kind", b"prev", b"seq", b"session", b"ts", b"v"];

impl<'de> serde::Deserializer<'de> for EntryMembers<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(
        self,
        visitor: V,
    ) -> serde_json::Result<V::Value> {
        visitor.visit_map(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

impl<'de> serde::de::MapAccess<'de> for EntryMembers<'de> {
    type Error = serde_json::Error;

    fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> serde_json::Result<Option<K::Value>> {
        use serde::de::{value::StrDeserializer, Error as _, IntoDeserializer as _};
        for (name, value) in self.members.by_ref() {
            if NOT_THE_ENTRY.contains(name) {
                continue;
            }
            self.value = value;
            if plain_name(name) {
                // A field name is matched by its bytes: no text is made of it.
                let name = serde::de::value::BytesDeserializer::<serde_json::Error>::new(name);
                return seed.deserialize(name).map(Some);
            }
            let name = key_text(name).ok_or_else(|| serde_json::Error::custom("bad name"))?;
            let name: StrDeserializer<'_, serde_json::Error> = name.as_ref().into_deserializer();
            return seed.deserialize(name).map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<V: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> serde_json::Result<V::Value> {
        let mut value = serde_json::Deserializer::from_slice(self.value);
        let read = seed.deserialize(&mut value)?;
        value.end()?;
        Ok(read)
    }
}

/// The text of a JSON string value, as written in a canonical line; None for another value.
fn json_string(raw: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
    key_text(raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?)
}

/// A canonical JSON number that is a non-negative safe integer (digits only: canonical form
/// has no leading zeros, fraction or exponent on an integer), as written in a line.
fn safe_uint(raw: &[u8]) -> Option<u64> {
    if raw.is_empty() || !raw.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(raw)
        .ok()?
        .parse::<u64>()
        .ok()
        .filter(|n| *n <= MAX_SAFE_INTEGER)
}

/// A member of a line's top-level object as [`canonical_members`] found it: its name's and
/// its value's bytes, as written.
type Member<'a> = (&'a [u8], &'a [u8]);

/// Whether `bytes` (valid JSON) are exactly what [`jcs`] writes for the value they hold: no
/// whitespace, object members in strictly increasing UTF-16 order of their names, strings
/// escaped as RFC 8785 escapes them, numbers as it formats them. Reads the bytes once without
/// building the value, which is what makes `verify` fast; it agrees with re-serializing and
/// comparing (a test holds the two equal). For canonical bytes, returns the top-level object's
/// members in order (none for another value), which `verify` reads the envelope from.
fn canonical_members(bytes: &[u8]) -> Option<Vec<Member<'_>>> {
    let mut c = Canonical {
        b: bytes,
        i: 0,
        top: Vec::new(),
    };
    (c.value(0) && c.i == bytes.len()).then_some(c.top)
}

/// Deepest nesting [`canonical_members`] follows (serde_json refuses deeper input anyway).
const MAX_DEPTH: usize = 128;

/// A cursor over bytes that are checked to be canonical as they are read.
struct Canonical<'a> {
    b: &'a [u8],
    i: usize,
    /// The top-level object's members, when the value is one.
    top: Vec<Member<'a>>,
}

impl<'a> Canonical<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, lit: &[u8]) -> bool {
        if self.b[self.i..].starts_with(lit) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> bool {
        if depth > MAX_DEPTH {
            return false;
        }
        match self.peek() {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().is_some(),
            Some(b't') => self.eat(b"true"),
            Some(b'f') => self.eat(b"false"),
            Some(b'n') => self.eat(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => false,
        }
    }

    fn array(&mut self, depth: usize) -> bool {
        self.i += 1;
        if self.eat(b"]") {
            return true;
        }
        loop {
            if !self.value(depth + 1) {
                return false;
            }
            if self.eat(b"]") {
                return true;
            }
            if !self.eat(b",") {
                return false;
            }
        }
    }

    fn object(&mut self, depth: usize) -> bool {
        self.i += 1;
        if self.eat(b"}") {
            return true;
        }
        let mut last: Option<&'a [u8]> = None;
        loop {
            let Some(name) = self.string() else {
                return false;
            };
            if let Some(last) = last {
                if !name_less(last, name) {
                    return false; // out of order, or a duplicate
                }
            } else if !plain_name(name) && key_text(name).is_none() {
                return false;
            }
            last = Some(name);
            if !self.eat(b":") {
                return false;
            }
            let start = self.i;
            if !self.value(depth + 1) {
                return false;
            }
            if depth == 0 {
                // Allocated at the first member only: a line that is no object costs nothing.
                self.top.reserve(16);
                self.top.push((name, &self.b[start..self.i]));
            }
            if self.eat(b"}") {
                return true;
            }
            if !self.eat(b",") {
                return false;
            }
        }
    }

    /// A canonically escaped string; returns its raw contents (between the quotes).
    fn string(&mut self) -> Option<&'a [u8]> {
        let b = self.b;
        if b.get(self.i) != Some(&b'"') {
            return None;
        }
        let start = self.i + 1;
        let mut i = start;
        loop {
            // Runs of plain bytes are skipped at once: the next quote or backslash is found by
            // memchr, and the run is checked for control characters and UTF-8 in one pass.
            let run = memchr::memchr2(b'"', b'\\', &b[i..])?;
            let plain = &b[i..i + run];
            let (control, high) = plain.iter().fold((false, false), |(c, h), &x| {
                (c | (x < 0x20), h | (x >= 0x80))
            });
            // A multi-byte sequence holds no quote or backslash, so a run is whole UTF-8.
            if control || (high && std::str::from_utf8(plain).is_err()) {
                return None;
            }
            i += run;
            if b[i] == b'"' {
                self.i = i + 1;
                return Some(&b[start..i]);
            }
            match *b.get(i + 1)? {
                b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                // Only a control character without a short escape is written `\u00xx`
                // (lower-case hex).
                b'u' => {
                    let hex = b.get(i + 2..i + 6)?;
                    let lower = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
                    if hex[0] != b'0' || hex[1] != b'0' || !lower(hex[2]) || !lower(hex[3]) {
                        return None;
                    }
                    let code = u8::from_str_radix(std::str::from_utf8(&hex[2..]).ok()?, 16).ok()?;
                    if code >= 0x20 || matches!(code, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d) {
                        return None;
                    }
                    i += 6;
                }
                _ => return None,
            }
        }
    }

    fn number(&mut self) -> bool {
        let start = self.i;
        let b = self.b;
        let mut i = start;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        let digits = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let simple = !matches!(b.get(i), Some(b'.' | b'e' | b'E'));
        while b
            .get(i)
            .is_some_and(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))
        {
            i += 1;
        }
        self.i = i;
        let token = &b[start..i];
        let int = &b[digits..i];
        // The common case: a safe integer, written without leading zeros and not as `-0`.
        if simple && !int.is_empty() && int.len() <= 16 {
            let leading_zero = int.len() > 1 && int[0] == b'0';
            let minus_zero = int == b"0" && digits > start;
            let magnitude: u64 = std::str::from_utf8(int)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(u64::MAX);
            if magnitude <= MAX_SAFE_INTEGER {
                return !leading_zero && !minus_zero;
            }
        }
        // Anything else is formatted as the writer would and compared.
        let Ok(value) = serde_json::from_slice::<Value>(token) else {
            return false;
        };
        let mut canonical = Vec::new();
        jcs(&value, &mut canonical).is_ok() && canonical == token
    }
}

/// The text of a string read by [`Canonical::string`] (its raw contents, escapes undone).
fn key_text(raw: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
    if !raw.contains(&b'\\') {
        return std::str::from_utf8(raw)
            .ok()
            .map(std::borrow::Cow::Borrowed);
    }
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    serde_json::from_slice::<String>(&quoted)
        .ok()
        .map(std::borrow::Cow::Owned)
}

/// Whether a member name as written is its own text: ASCII, nothing escaped.
fn plain_name(raw: &[u8]) -> bool {
    raw.iter().all(|b| *b < 0x80 && *b != b'\\')
}

/// Whether member name `a` comes before `b` (both as written, checked strings), in UTF-16
/// code-unit order: byte order for the plain names nearly every line has.
fn name_less(a: &[u8], b: &[u8]) -> bool {
    if plain_name(a) && plain_name(b) {
        return a < b;
    }
    match (key_text(a), key_text(b)) {
        (Some(a), Some(b)) => utf16_less(&a, &b),
        _ => false,
    }
}

/// `a < b` in UTF-16 code-unit order (RFC 8785 §3.2.3); byte order when both are ASCII.
fn utf16_less(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        a < b
    } else {
        a.encode_utf16().lt(b.encode_utf16())
    }
}

/// An object's members in UTF-16 code-unit order of their names (RFC 8785 §3.2.3).
fn utf16_ordered(m: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut pairs: Vec<(&String, &Value)> = m.iter().collect();
    if !m.keys().all(|k| k.is_ascii()) {
        // For ASCII names UTF-16 order is byte order, the map's own.
        pairs.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
    }
    pairs
}

/// Appends the RFC 8785 serialization of `v` to `out`. Byte-for-byte the same as
/// `serde_jcs::to_vec(v)` (a test holds them equal), but several times faster, which matters to
/// the writer and the verifier. Numbers other than safe integers are formatted by
/// serde_jcs itself.
pub fn jcs(v: &Value, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            // Written into `out` as they are formatted: no string per number.
            (Some(u), _) if u <= MAX_SAFE_INTEGER => {
                let _ = std::io::Write::write_fmt(out, format_args!("{u}"));
            }
            (None, Some(i)) if i.unsigned_abs() <= MAX_SAFE_INTEGER => {
                let _ = std::io::Write::write_fmt(out, format_args!("{i}"));
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
            out.push(b'{');
            let member = |i: usize, (k, v): (&String, &Value), out: &mut Vec<u8>| {
                if i > 0 {
                    out.push(b',');
                }
                jcs_str(k, out);
                out.push(b':');
                jcs(v, out)
            };
            if m.keys().all(|k| k.is_ascii()) {
                // ASCII names: the map's byte order is UTF-16 order, and nothing is sorted.
                for (i, pair) in m.iter().enumerate() {
                    member(i, pair, out)?;
                }
            } else {
                for (i, pair) in utf16_ordered(m).into_iter().enumerate() {
                    member(i, pair, out)?;
                }
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
    let plain = |b: &u8| *b >= 0x20 && *b != b'"' && *b != b'\\';
    if bytes.iter().all(plain) {
        // Most strings: nothing to escape.
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
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
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut h = [0u8; 32];
    let mut bad = 0u8;
    for (out, pair) in h.iter_mut().zip(b.chunks_exact(2)) {
        let (hi, lo) = (HEX_DIGIT[pair[0] as usize], HEX_DIGIT[pair[1] as usize]);
        bad |= hi | lo;
        *out = hi << 4 | lo;
    }
    (bad & 0xf0 == 0).then_some(h)
}

/// Each byte's value as a lower-case hex digit, 0xff for any other byte (upper case too: the
/// form is lower-case only).
const HEX_DIGIT: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = match c as u8 {
            d @ b'0'..=b'9' => d - b'0',
            d @ b'a'..=b'f' => d - b'a' + 10,
            _ => 0xff,
        };
        c += 1;
    }
    t
};

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

    /// What `canonical_members` must agree with: re-serializing and comparing.
    fn canonical_by_roundtrip(bytes: &[u8]) -> bool {
        let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
            return false;
        };
        let mut out = Vec::new();
        jcs(&v, &mut out).is_ok() && out == bytes
    }

    #[test]
    fn canonical_check_agrees_with_reserializing() {
        let texts = [
            r#"{"a":1,"b":[true,false,null]}"#,
            r#"{"b":1,"a":2}"#,
            r#"{"a":1,"a":1}"#,
            r#"{ "a":1}"#,
            r#"{"a":1}  "#,
            r#"{"a":"\/"}"#,
            r#"{"a":"\u0041"}"#,
            r#"{"a":"\u001f"}"#,
            r#"{"a":"\u001F"}"#,
            r#"{"a":"\u000a"}"#,
            r#"{"a":"\n\t\"\\\b\f\r"}"#,
            r#"{"a":"\u007f"}"#,
            "{\"a\":\"\u{7f}é€😀\"}",
            r#"{"a":-0}"#,
            r#"{"a":0}"#,
            r#"{"a":-7}"#,
            r#"{"a":1.0}"#,
            r#"{"a":1.5}"#,
            r#"{"a":1e3}"#,
            r#"{"a":1E3}"#,
            r#"{"a":1e30}"#,
            r#"{"a":9007199254740991}"#,
            r#"{"a":9007199254740992}"#,
            r#"{"a":9007199254740993}"#,
            r#"{"a":1152921504606846976}"#,
            r#"{"a":18446744073709551616}"#,
            r#"{"a":0.000001}"#,
            r#"{"a":1e-7}"#,
            r#"{"\u20ac":1,"\ud83d\ude00":2}"#,
            "{\"\u{20ac}\":1,\"\u{1f600}\":2}",
            "{\"\u{1f600}\":1,\"\u{ffff}\":2}",
            "{\"\u{ffff}\":1,\"\u{1f600}\":2}",
            r#"{"\n":1,"a":2}"#,
            r#"[]"#,
            r#"{}"#,
            r#"[{},[],"",0]"#,
            r#""x""#,
        ];
        for t in texts {
            assert_eq!(
                canonical_members(t.as_bytes()).is_some(),
                canonical_by_roundtrip(t.as_bytes()),
                "{t}"
            );
        }
        // Every single-byte edit of canonical lines that still parses as JSON.
        let line = br#"{"a":[1,-2,30,"x\n\u0001\"y",{"k":true,"l":null}],"b":"\u00e9","c":12.5,"d":-0.25,"\u20ac":0}"#;
        let alphabet = b" \t\n{}[]\":,.-+0123456789eEabkuxl\\/";
        let mut edits = 0;
        for pos in 0..=line.len() {
            for &c in alphabet {
                for insert in [false, true] {
                    let mut t = line.to_vec();
                    if insert {
                        t.insert(pos, c);
                    } else if pos < t.len() {
                        t[pos] = c;
                    } else {
                        continue;
                    }
                    if serde_json::from_slice::<Value>(&t).is_ok() {
                        edits += 1;
                        assert_eq!(
                            canonical_members(&t).is_some(),
                            canonical_by_roundtrip(&t),
                            "{}",
                            String::from_utf8_lossy(&t)
                        );
                    }
                }
            }
        }
        assert!(edits > 100, "only {edits} edits parsed");
    }

    #[test]
    fn sealing_a_prepared_entry_equals_serializing_it_whole() {
        let request = Entry::HttpRequest(super::super::HttpRequest {
            conn: 3,
            exchange: 1,
            version: "HTTP/1.1".into(),
            method: "POST".into(),
            scheme: "https".into(),
            authority: Some("api.example.test".into()),
            target: "/v1/orders?x=\"1\"".into(),
            uri_scheme: None,
            headers: Vec::new(),
        });
        let annotation = Entry::Annotation(super::super::Annotation {
            of_seq: 2,
            of_hash: "ab".repeat(32),
            by: "semantics/http".into(),
            topic: "http".into(),
            data: serde_json::json!({"é": 1, "z": [1, "\u{1}"], "\u{1f600}": {"b": 2, "a": 1}}),
        });
        let session = Ulid::from_string("01HZY3K5W8V6XQ2N4M7P9R0T1S").unwrap();
        for entry in [request, annotation] {
            let Value::Object(mut whole) = serde_json::to_value(&entry).unwrap() else {
                panic!("not an object");
            };
            whole.insert("v".into(), Value::from(FORMAT_VERSION));
            whole.insert("session".into(), Value::from(session.to_string()));
            whole.insert("seq".into(), Value::from(7u64));
            whole.insert("ts".into(), Value::from("2026-12-03T12:00:00.000000Z"));
            whole.insert("prev".into(), Value::from(hex::encode([9u8; 32])));
            let expected = serde_jcs::to_vec(&Value::Object(whole)).unwrap();
            let sealed = seal(
                &prepare(&entry).unwrap(),
                &session,
                7,
                "2026-12-03T12:00:00.000000Z",
                &[9u8; 32],
            );
            assert_eq!(
                String::from_utf8(sealed).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
    }

    #[test]
    fn the_envelope_is_read_from_the_top_level_only_and_as_written_canonically() {
        let session = Ulid::from_string("01HZY3K5W8V6XQ2N4M7P9R0T1S").unwrap();
        let line = seal(
            &prepare(&Entry::SessionClose(super::super::SessionClose::because(
                "x",
            )))
            .unwrap(),
            &session,
            3,
            "2026-12-03T12:00:00.000000Z",
            &[1; 32],
        );
        let text = String::from_utf8(line).unwrap();
        assert_eq!(parse_line(text.as_bytes()).unwrap().seq, 3);
        // An attacker who moves `seq` into a nested object (canonically) has no `seq`.
        let Value::Object(mut top) = serde_json::from_str::<Value>(&text).unwrap() else {
            panic!("not an object");
        };
        let seq = top.remove("seq").unwrap();
        top.insert("error".into(), serde_json::json!({ "seq": seq }));
        let mut moved = Vec::new();
        jcs(&Value::Object(top), &mut moved).unwrap();
        assert_eq!(parse_line(&moved).unwrap_err(), "no `seq` field");
        // A name spelled with an escape is not canonical, so it names nothing.
        let escaped = text.replace("\"seq\":", "\"s\\u0065q\":");
        assert_ne!(escaped, text);
        assert_eq!(
            parse_line(escaped.as_bytes()).unwrap_err(),
            "not in canonical form (RFC 8785)"
        );
        // seq and v as canonical numbers only.
        for (from, to) in [("\"seq\":3", "\"seq\":3.5"), ("\"seq\":3", "\"seq\":-3")] {
            let bad = text.replace(from, to);
            assert_eq!(
                parse_line(bad.as_bytes()).unwrap_err(),
                "`seq` is not a non-negative integer"
            );
        }
        let bad = text.replace("\"v\":1", "\"v\":2");
        assert_eq!(
            parse_line(bad.as_bytes()).unwrap_err(),
            "unsupported format version 2"
        );
    }

    #[test]
    fn a_line_is_read_into_its_kind_as_serde_reads_it() {
        use super::super::{Body, HttpBody, ProcessExit, StreamChunk};
        let body = |b: &[u8]| HttpBody {
            conn: 1,
            exchange: 2,
            body: Body::from_bytes(b),
            trailers: Vec::new(),
        };
        let entries = [
            Entry::HttpRequestBody(body(b"{\"q\":1}")),
            Entry::HttpResponseBody(body(&[0, 159, 146, 150])),
            Entry::StreamChunk(StreamChunk {
                conn: 1,
                exchange: 2,
                direction: super::super::Direction::Down,
                index: 3,
                body: Body::from_bytes(b"data: x\n\n"),
                fin: true,
                trailers: Vec::new(),
            }),
            Entry::ProcessExit(ProcessExit {
                pid: 7,
                code: Some(1),
                signal: None,
                core_dumped: false,
                at: "2026-12-03T12:00:00.000000Z".into(),
            }),
            Entry::SessionClose(super::super::SessionClose::because("done")),
        ];
        let session = Ulid::from_string("01HZY3K5W8V6XQ2N4M7P9R0T1S").unwrap();
        for entry in entries {
            let line = seal(
                &prepare(&entry).unwrap(),
                &session,
                1,
                "2026-12-03T12:00:00.000000Z",
                &[1; 32],
            );
            let text = std::str::from_utf8(&line).unwrap();
            // The kind's name is serde's, and the fast way reads what serde's general way reads.
            let kind = serde_json::from_str::<Value>(text).unwrap()["kind"].clone();
            assert_eq!(kind, entry.kind());
            let fast =
                Entry::read_kind(entry.kind(), &mut serde_json::Deserializer::from_str(text))
                    .unwrap()
                    .unwrap();
            assert_eq!(fast, serde_json::from_str::<Entry>(text).unwrap());
            assert_eq!(parse_line(&line).unwrap().entry, entry);
        }
        // A kind nobody knows, or none: the general way says what is wrong.
        let mut line = seal(
            &prepare(&Entry::SessionClose(super::super::SessionClose::because(
                "x",
            )))
            .unwrap(),
            &session,
            1,
            "2026-12-03T12:00:00.000000Z",
            &[1; 32],
        );
        let at = line
            .windows(15)
            .position(|w| w == b"\"session_close\"")
            .unwrap();
        line.splice(at..at + 15, b"\"session_clone\"".iter().copied());
        let err = parse_line(&line).unwrap_err();
        assert!(
            err.starts_with("bad entry: unknown variant `session_clone`"),
            "{err}"
        );
    }

    #[test]
    fn a_hash_is_64_lower_case_hex_digits() {
        let h: Hash = std::array::from_fn(|i| (i * 37) as u8);
        assert_eq!(decode_hash(&hex::encode(h)), Some(h));
        assert_eq!(decode_hash(&hex::encode_upper(h)), None);
        assert_eq!(decode_hash(&hex::encode(&h[..31])), None);
        for bad in ['g', 'G', ' ', '/', ':', '`', '\u{e9}'] {
            let mut s = hex::encode(h);
            s.replace_range(10..11, &bad.to_string());
            if s.len() == 64 {
                assert_eq!(decode_hash(&s), None, "{s}");
            }
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
        assert!(matches!(prepare(&e), Err(CanonError::Number(_))));
    }
}
