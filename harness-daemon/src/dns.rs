//! DNS wire helpers for the daemon's resolver: read queries and answers, write refusals.
//!
//! The enclosure sends every DNS datagram to the daemon, which records the question, asks
//! policy whether the name may resolve, forwards it, records the answer, and learns which
//! addresses belong to which names (so the kernel can apply host rules to bare addresses).
//! This module is the byte-level part of that, with no sockets, so it can be tested on
//! constructed and hostile input alone. Parsing never panics: anything malformed is a
//! [`DnsError`], because the bytes come from an agent or an upstream we do not control.
//!
//! ```
//! use harness::dns;
//! // A real query for example.com A, as `dig` sends it (no EDNS).
//! let query = [
//!     0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
//!     7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0,
//!     0x00, 0x01, 0x00, 0x01,
//! ];
//! let q = dns::parse_query(&query).unwrap();
//! assert_eq!((q.id, q.qname.as_str(), q.qtype.as_str()), (0x1234, "example.com", "A"));
//! let refused = dns::parse_answer(&dns::refused(&query)).unwrap();
//! assert_eq!((refused.id, refused.rcode.as_str()), (0x1234, "REFUSED"));
//! ```

use std::collections::HashSet;
use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

/// CNAME chains longer than this are not followed: resolvers give up well before (and a loop
/// must not hang the daemon).
const MAX_CHAIN: usize = 16;

/// Why bytes could not be read as the DNS message expected. One line each, since these end up
/// in the ledger and in logs.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DnsError {
    /// The bytes are not a DNS message (truncated, bad label, bad pointer, garbage…).
    #[error("malformed DNS message: {0}")]
    Malformed(String),
    /// A response arrived where a query was expected (an agent replaying answers at us).
    #[error("DNS message is a response where a query was expected")]
    NotAQuery,
    /// A query arrived where a response was expected (an upstream echoing our question).
    #[error("DNS message is a query where a response was expected")]
    NotAResponse,
    /// A query with an opcode other than QUERY (NOTIFY, UPDATE…): not something an agent's
    /// resolver should relay.
    #[error("DNS opcode {0} is not supported; only QUERY is relayed")]
    OpCode(String),
    /// A query without exactly one question: servers reject these (FORMERR) and policy could
    /// not judge more than one name at once.
    #[error("DNS query has {0} questions; exactly one is supported")]
    QuestionCount(usize),
}

/// A DNS question, as the resolver needs it for policy and the ledger (hence serialisable).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Query {
    /// Message id, to match the answer.
    pub id: u16,
    /// Queried name, lowercased, without the trailing dot (`.` for the root).
    pub qname: String,
    /// Query type mnemonic (`A`, `AAAA`, `HTTPS`…), or `TYPEn` (RFC 3597) for unknown types.
    pub qtype: String,
}

/// A DNS response, as the resolver needs it for the ledger (hence serialisable) and for
/// learning addresses.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Answer {
    /// Message id.
    pub id: u16,
    /// Response code mnemonic (`NOERROR`, `NXDOMAIN`, `SERVFAIL`, `REFUSED`…), or `RCODEn`.
    pub rcode: String,
    /// The question's name, normalised like [`Query::qname`]; `None` if the response carries
    /// no question (some error responses), in which case nothing is attributed to any name.
    pub qname: Option<String>,
    /// The answer section in presentation form, one record each: `name TTL TYPE data`.
    pub records: Vec<String>,
    /// Every A/AAAA record of the answer section: (owner name, normalised; address).
    pub addresses: Vec<(String, IpAddr)>,
    /// Every CNAME of the answer section: (owner name, target name), both normalised.
    pub cnames: Vec<(String, String)>,
}

/// Parse a query from an enclosed process. Only standard queries with one question pass.
pub fn parse_query(bytes: &[u8]) -> Result<Query, DnsError> {
    let message = decode(bytes)?;
    if message.metadata.message_type != MessageType::Query {
        return Err(DnsError::NotAQuery);
    }
    if message.metadata.op_code != OpCode::Query {
        return Err(DnsError::OpCode(
            format!("{:?}", message.metadata.op_code).to_uppercase(),
        ));
    }
    let [question] = message.queries.as_slice() else {
        return Err(DnsError::QuestionCount(message.queries.len()));
    };
    Ok(Query {
        id: message.metadata.id,
        qname: normalize_name(&question.name),
        qtype: type_mnemonic(question.query_type),
    })
}

/// Parse a response from the upstream resolver.
pub fn parse_answer(bytes: &[u8]) -> Result<Answer, DnsError> {
    let message = decode(bytes)?;
    if message.metadata.message_type != MessageType::Response {
        return Err(DnsError::NotAResponse);
    }
    let mut answer = Answer {
        id: message.metadata.id,
        rcode: rcode_mnemonic(message.metadata.response_code),
        qname: message.queries.first().map(|q| normalize_name(&q.name)),
        records: Vec::with_capacity(message.answers.len()),
        addresses: Vec::new(),
        cnames: Vec::new(),
    };
    for record in &message.answers {
        let data = match &record.data {
            // hickory runs TXT strings together unquoted; the presentation form quotes each.
            RData::TXT(txt) => txt
                .txt_data
                .iter()
                .map(|s| quote_character_string(s))
                .collect::<Vec<_>>()
                .join(" "),
            other => escape_controls(&other.to_string()),
        };
        answer.records.push(format!(
            "{} {} {} {}",
            record.name,
            record.ttl,
            type_mnemonic(record.record_type()),
            data
        ));
        let owner = normalize_name(&record.name);
        match &record.data {
            RData::A(a) => answer.addresses.push((owner, IpAddr::V4(a.0))),
            RData::AAAA(aaaa) => answer.addresses.push((owner, IpAddr::V6(aaaa.0))),
            RData::CNAME(target) => answer.cnames.push((owner, normalize_name(&target.0))),
            _ => {}
        }
    }
    Ok(answer)
}

impl Answer {
    /// The names the question leads to: the queried name, then each CNAME target in turn.
    /// Stops at a loop or after a bounded number of steps.
    pub fn chain(&self) -> Vec<String> {
        let mut chain = Vec::new();
        let Some(mut name) = self.qname.clone() else {
            return chain;
        };
        let mut seen = HashSet::new();
        while chain.len() < MAX_CHAIN && seen.insert(name.clone()) {
            chain.push(name.clone());
            match self.cnames.iter().find(|(owner, _)| *owner == name) {
                Some((_, target)) => name = target.clone(),
                None => break,
            }
        }
        chain
    }

    /// The addresses `name` resolves to according to this answer, following its CNAMEs. Only
    /// names on the question's chain count: records the upstream added for unrelated names are
    /// not believed, so an answer cannot attach an address to a name nobody asked about.
    pub fn addresses_for(&self, name: &str) -> Vec<IpAddr> {
        let name = normal(name);
        let chain = self.chain();
        let Some(start) = chain.iter().position(|n| *n == name) else {
            return Vec::new();
        };
        let tail = &chain[start..];
        let mut out = Vec::new();
        for (owner, ip) in &self.addresses {
            if tail.contains(owner) && !out.contains(ip) {
                out.push(*ip);
            }
        }
        out
    }

    /// The names `ip` belongs to according to this answer: the owner of its A/AAAA record and
    /// every name before it on the question's chain (so an address under a CNAME target is
    /// attributed to the queried name too). Empty when the record is not on the chain.
    pub fn names_for(&self, ip: IpAddr) -> Vec<String> {
        let chain = self.chain();
        let last = self
            .addresses
            .iter()
            .filter(|(_, addr)| *addr == ip)
            .filter_map(|(owner, _)| chain.iter().position(|n| n == owner))
            .max();
        match last {
            Some(last) => chain[..=last].to_vec(),
            None => Vec::new(),
        }
    }
}

/// A REFUSED response to `query` (same id and question): what the resolver sends when policy
/// denies the name. Never fails: even for garbage a well-formed header comes back, so the
/// client stops waiting.
pub fn refused(query: &[u8]) -> Vec<u8> {
    error_response(query, ResponseCode::Refused)
}

/// A SERVFAIL response to `query` (same id and question): what the resolver sends when the
/// upstream fails or cannot be recorded. Never fails, like [`refused`].
pub fn servfail(query: &[u8]) -> Vec<u8> {
    error_response(query, ResponseCode::ServFail)
}

/// Build an error response echoing the query's id, opcode, RD flag and question (and an OPT
/// record if the query had one, as RFC 6891 asks).
fn error_response(query: &[u8], rcode: ResponseCode) -> Vec<u8> {
    if let Ok(request) = Message::from_vec(query) {
        let mut response = Message::error_msg(request.metadata.id, request.metadata.op_code, rcode);
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        response.metadata.recursion_available = true;
        response.metadata.checking_disabled = request.metadata.checking_disabled;
        response.queries = request.queries;
        if request.edns.is_some() {
            response.edns = Some(Edns::new());
        }
        if let Ok(bytes) = response.to_vec() {
            return bytes;
        }
    }
    header_only(query, rcode)
}

/// A 12-byte response header with the query's id (or 0 when there is none), its opcode and RD
/// bit, no sections: the best answer to a query that cannot be parsed.
fn header_only(query: &[u8], rcode: ResponseCode) -> Vec<u8> {
    let id = [
        query.first().copied().unwrap_or(0),
        query.get(1).copied().unwrap_or(0),
    ];
    let request_flags = query.get(2).copied().unwrap_or(0);
    // QR=1, opcode and RD copied; RA=1; counts all zero.
    let flags_high = 0x80 | (request_flags & 0x79);
    let flags_low = 0x80 | (u16::from(rcode).min(15) as u8);
    vec![id[0], id[1], flags_high, flags_low, 0, 0, 0, 0, 0, 0, 0, 0]
}

/// Decode with hickory, mapping its error to ours.
fn decode(bytes: &[u8]) -> Result<Message, DnsError> {
    Message::from_vec(bytes).map_err(|e| DnsError::Malformed(e.to_string().replace('\n', " ")))
}

/// Lowercase, no trailing dot (`.` for the root), matching how policy compares names.
fn normalize_name(name: &Name) -> String {
    normal(&name.to_ascii())
}

/// A name in presentation form as answers hold it: lower case, no trailing dot, but the root
/// is `.` (so a name that [`Answer::chain`] gives is found again by [`Answer::addresses_for`]).
fn normal(text: &str) -> String {
    let text = text.to_ascii_lowercase();
    match text.strip_suffix('.').unwrap_or(&text) {
        "" => ".".to_owned(),
        trimmed => trimmed.to_owned(),
    }
}

/// A DNS `<character-string>` in presentation form (RFC 1035 §5.1): quoted, with `"` and `\`
/// escaped and bytes outside printable ASCII as `\DDD`, so a record is always one line.
fn quote_character_string(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
    out.push('"');
    out
}

/// Escape control characters as `\DDD` so that record text from the wire cannot break a
/// line-oriented log or forge a second record.
fn escape_controls(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                format!("\\{:03}", u32::from(c))
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Record type mnemonic, `TYPEn` for types hickory does not know (RFC 3597 presentation).
fn type_mnemonic(record_type: RecordType) -> String {
    match record_type {
        RecordType::Unknown(code) => format!("TYPE{code}"),
        known => known.to_string(),
    }
}

/// RCODE mnemonic as dig prints it (hickory's own `Display` gives prose).
fn rcode_mnemonic(rcode: ResponseCode) -> String {
    let code = u16::from(rcode);
    let name = match code {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        16 => "BADVERS",
        17 => "BADKEY",
        18 => "BADTIME",
        19 => "BADMODE",
        20 => "BADNAME",
        21 => "BADALG",
        22 => "BADTRUNC",
        23 => "BADCOOKIE",
        _ => return format!("RCODE{code}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests;
