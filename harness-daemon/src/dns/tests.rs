//! DNS helper tests: real wire bytes (hand-written and built with hickory), hostile input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query as HQuery, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::*;

/// `dig example.com A +noedns` as sent on the wire: id 0x1234, RD, one question.
const EXAMPLE_QUERY: [u8; 29] = [
    0x12, 0x34, // id
    0x01, 0x00, // flags: RD
    0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // QD=1 AN=0 NS=0 AR=0
    7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0, // example.com
    0x00, 0x01, // type A
    0x00, 0x01, // class IN
];

/// A resolver's answer to `www.example.com A` with a CNAME, using compression pointers:
/// `www.example.com. 3600 CNAME example.com.` and `example.com. 300 A 93.184.215.14`.
const CNAME_ANSWER: [u8; 63] = [
    0xbe, 0xef, // id
    0x81, 0x80, // flags: QR RD RA, NOERROR
    0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, // QD=1 AN=2
    3, b'w', b'w', b'w', 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm',
    0, // www.example.com at offset 12; example.com at 16
    0x00, 0x01, 0x00, 0x01, // A IN
    0xc0, 0x0c, // -> www.example.com
    0x00, 0x05, 0x00, 0x01, // CNAME IN
    0x00, 0x00, 0x0e, 0x10, // TTL 3600
    0x00, 0x02, 0xc0, 0x10, // rdata -> example.com
    0xc0, 0x10, // -> example.com
    0x00, 0x01, 0x00, 0x01, // A IN
    0x00, 0x00, 0x01, 0x2c, // TTL 300
    0x00, 0x04, 93, 184, 215, 14, // rdata
];

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn query_message(id: u16, qname: &str, qtype: RecordType) -> Message {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(HQuery::query(name(qname), qtype));
    message
}

fn response_to(query: &Message, rcode: ResponseCode, answers: Vec<Record>) -> Vec<u8> {
    let mut response = Message::response(query.metadata.id, OpCode::Query);
    response.metadata.response_code = rcode;
    response.queries = query.queries.clone();
    response.answers = answers;
    response.to_vec().unwrap()
}

fn a(owner: &str, ttl: u32, ip: [u8; 4]) -> Record {
    Record::from_rdata(name(owner), ttl, RData::A(A(Ipv4Addr::from(ip))))
}

fn aaaa(owner: &str, ttl: u32, ip: &str) -> Record {
    Record::from_rdata(
        name(owner),
        ttl,
        RData::AAAA(AAAA(ip.parse::<Ipv6Addr>().unwrap())),
    )
}

fn cname(owner: &str, target: &str) -> Record {
    Record::from_rdata(name(owner), 60, RData::CNAME(CNAME(name(target))))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

// === queries ===

#[test]
fn hand_written_example_query_parses() {
    let q = parse_query(&EXAMPLE_QUERY).unwrap();
    assert_eq!(
        q,
        Query {
            id: 0x1234,
            qname: "example.com".into(),
            qtype: "A".into()
        }
    );
}

#[test]
fn built_queries_parse_with_normalised_names_and_type_mnemonics() {
    for (qname, qtype, expect_name, expect_type) in [
        (
            "WwW.ExAmPle.COM.",
            RecordType::AAAA,
            "www.example.com",
            "AAAA",
        ),
        ("example.com", RecordType::HTTPS, "example.com", "HTTPS"),
        (".", RecordType::NS, ".", "NS"),
        (
            "_dmarc.example.com.",
            RecordType::TXT,
            "_dmarc.example.com",
            "TXT",
        ),
        (
            "x.example.",
            RecordType::Unknown(65_300),
            "x.example",
            "TYPE65300",
        ),
    ] {
        let bytes = query_message(7, qname, qtype).to_vec().unwrap();
        let q = parse_query(&bytes).unwrap();
        assert_eq!(
            (q.id, q.qname.as_str(), q.qtype.as_str()),
            (7, expect_name, expect_type)
        );
    }
}

#[test]
fn queries_must_be_standard_single_question_queries() {
    let mut two = query_message(1, "a.com.", RecordType::A);
    two.add_query(HQuery::query(name("b.com."), RecordType::A));
    assert_eq!(
        parse_query(&two.to_vec().unwrap()),
        Err(DnsError::QuestionCount(2))
    );
    let none = Message::new(1, MessageType::Query, OpCode::Query);
    assert_eq!(
        parse_query(&none.to_vec().unwrap()),
        Err(DnsError::QuestionCount(0))
    );
    let mut notify = query_message(1, "a.com.", RecordType::SOA);
    notify.metadata.op_code = OpCode::Notify;
    assert_eq!(
        parse_query(&notify.to_vec().unwrap()),
        Err(DnsError::OpCode("NOTIFY".into()))
    );
    assert_eq!(parse_query(&CNAME_ANSWER), Err(DnsError::NotAQuery));
    assert_eq!(
        DnsError::QuestionCount(2).to_string(),
        "DNS query has 2 questions; exactly one is supported"
    );
}

// === answers ===

#[test]
fn hand_written_cname_answer_parses_and_attributes_to_the_queried_name() {
    let answer = parse_answer(&CNAME_ANSWER).unwrap();
    assert_eq!(answer.id, 0xbeef);
    assert_eq!(answer.rcode, "NOERROR");
    assert_eq!(answer.qname.as_deref(), Some("www.example.com"));
    assert_eq!(
        answer.records,
        vec![
            "www.example.com. 3600 CNAME example.com.".to_owned(),
            "example.com. 300 A 93.184.215.14".to_owned(),
        ]
    );
    assert_eq!(
        answer.addresses,
        vec![("example.com".to_owned(), ip("93.184.215.14"))]
    );
    assert_eq!(
        answer.cnames,
        vec![("www.example.com".to_owned(), "example.com".to_owned())]
    );
    assert_eq!(answer.chain(), vec!["www.example.com", "example.com"]);
    assert_eq!(
        answer.names_for(ip("93.184.215.14")),
        vec!["www.example.com", "example.com"]
    );
    assert!(answer.names_for(ip("1.1.1.1")).is_empty());
    assert_eq!(
        answer.addresses_for("WWW.example.com."),
        vec![ip("93.184.215.14")]
    );
    assert_eq!(
        answer.addresses_for("example.com"),
        vec![ip("93.184.215.14")]
    );
    assert!(answer.addresses_for("other.com").is_empty());
    assert_eq!(parse_answer(&EXAMPLE_QUERY), Err(DnsError::NotAResponse));
}

#[test]
fn built_answers_with_chains_v4_and_v6() {
    let query = query_message(42, "Api.Service.com.", RecordType::AAAA);
    let bytes = response_to(
        &query,
        ResponseCode::NoError,
        vec![
            cname("api.service.com.", "edge.CDN.net."),
            cname("edge.cdn.net.", "pop7.cdn.net."),
            aaaa("pop7.cdn.net.", 20, "2001:db8::7"),
            aaaa("pop7.cdn.net.", 20, "2001:db8::8"),
            a("pop7.cdn.net.", 20, [192, 0, 2, 7]),
            // Not on the question's chain: must not be attributed to anything.
            a("api.anthropic.com.", 20, [203, 0, 113, 66]),
        ],
    );
    let answer = parse_answer(&bytes).unwrap();
    assert_eq!(answer.id, 42);
    assert_eq!(answer.qname.as_deref(), Some("api.service.com"));
    assert_eq!(answer.records.len(), 6);
    assert_eq!(answer.records[2], "pop7.cdn.net. 20 AAAA 2001:db8::7");
    assert_eq!(answer.addresses.len(), 4);
    assert_eq!(
        answer.addresses[3],
        ("api.anthropic.com".to_owned(), ip("203.0.113.66"))
    );
    assert_eq!(
        answer.chain(),
        vec!["api.service.com", "edge.cdn.net", "pop7.cdn.net"]
    );
    assert_eq!(
        answer.addresses_for("api.service.com"),
        vec![ip("2001:db8::7"), ip("2001:db8::8"), ip("192.0.2.7")]
    );
    assert_eq!(answer.addresses_for("edge.cdn.net").len(), 3);
    assert_eq!(
        answer.names_for(ip("2001:db8::8")),
        vec!["api.service.com", "edge.cdn.net", "pop7.cdn.net"]
    );
    assert!(answer.names_for(ip("203.0.113.66")).is_empty());
    assert!(answer.addresses_for("api.anthropic.com").is_empty());
}

#[test]
fn cname_loops_end() {
    let query = query_message(1, "a.loop.", RecordType::A);
    let bytes = response_to(
        &query,
        ResponseCode::NoError,
        vec![
            cname("a.loop.", "b.loop."),
            cname("b.loop.", "a.loop."),
            a("b.loop.", 1, [192, 0, 2, 1]),
        ],
    );
    let answer = parse_answer(&bytes).unwrap();
    assert_eq!(answer.chain(), vec!["a.loop", "b.loop"]);
    assert_eq!(answer.names_for(ip("192.0.2.1")), vec!["a.loop", "b.loop"]);
    // A chain longer than MAX_CHAIN is cut, not followed forever.
    let long: Vec<Record> = (0..40)
        .map(|i| cname(&format!("n{i}.x."), &format!("n{}.x.", i + 1)))
        .collect();
    let answer = parse_answer(&response_to(
        &query_message(1, "n0.x.", RecordType::A),
        ResponseCode::NoError,
        long,
    ))
    .unwrap();
    assert_eq!(answer.chain().len(), MAX_CHAIN);
}

#[test]
fn error_answers_and_other_record_types() {
    let query = query_message(9, "nope.example.", RecordType::A);
    let answer = parse_answer(&response_to(&query, ResponseCode::NXDomain, vec![])).unwrap();
    assert_eq!(answer.rcode, "NXDOMAIN");
    assert!(answer.records.is_empty() && answer.addresses.is_empty());
    let txt = Record::from_rdata(
        name("nope.example."),
        5,
        RData::TXT(TXT::new(vec!["v=spf1 -all".into()])),
    );
    let answer = parse_answer(&response_to(&query, ResponseCode::NoError, vec![txt])).unwrap();
    assert_eq!(
        answer.records,
        vec!["nope.example. 5 TXT \"v=spf1 -all\"".to_owned()]
    );
    let txt = Record::from_rdata(
        name("nope.example."),
        5,
        RData::TXT(TXT::from_bytes(vec![b"a \"q\" \\", b"line\nbreak\xff"])),
    );
    let answer = parse_answer(&response_to(&query, ResponseCode::NoError, vec![txt])).unwrap();
    assert_eq!(
        answer.records,
        vec![r#"nope.example. 5 TXT "a \"q\" \\" "line\010break\255""#.to_owned()]
    );
    assert!(answer.addresses.is_empty());
    // No question at all: nothing is attributed.
    let bare = Message::error_msg(3, OpCode::Query, ResponseCode::FormErr);
    let answer = parse_answer(&bare.to_vec().unwrap()).unwrap();
    assert_eq!(
        (answer.rcode.as_str(), answer.qname.as_deref()),
        ("FORMERR", None)
    );
    assert!(answer.chain().is_empty());
    assert_eq!(rcode_mnemonic(ResponseCode::Unknown(3000)), "RCODE3000");
    assert_eq!(rcode_mnemonic(ResponseCode::BADCOOKIE), "BADCOOKIE");
}

// === refusals ===

#[test]
fn refused_and_servfail_echo_id_flags_and_question() {
    for (build, rcode, mnemonic) in [
        (
            refused as fn(&[u8]) -> Vec<u8>,
            ResponseCode::Refused,
            "REFUSED",
        ),
        (servfail, ResponseCode::ServFail, "SERVFAIL"),
    ] {
        let bytes = build(&EXAMPLE_QUERY);
        let message = Message::from_vec(&bytes).unwrap();
        assert_eq!(message.metadata.id, 0x1234);
        assert_eq!(message.metadata.message_type, MessageType::Response);
        assert_eq!(message.metadata.response_code, rcode);
        assert!(message.metadata.recursion_desired);
        assert!(message.answers.is_empty());
        assert_eq!(
            message.queries,
            Message::from_vec(&EXAMPLE_QUERY).unwrap().queries
        );
        assert!(message.edns.is_none());
        // Our own parser reads it too, as the resolver loop will.
        let answer = parse_answer(&bytes).unwrap();
        assert_eq!((answer.id, answer.rcode.as_str()), (0x1234, mnemonic));
        assert_eq!(answer.qname.as_deref(), Some("example.com"));
        // The question section is byte-identical to the query's.
        assert_eq!(&bytes[12..], &EXAMPLE_QUERY[12..]);
    }
}

#[test]
fn refusals_keep_the_question_case_and_answer_edns_with_edns() {
    let mut query = query_message(0xabcd, "ExAmPlE.cOm.", RecordType::AAAA);
    query.edns = Some(Edns::new());
    let bytes = refused(&query.to_vec().unwrap());
    let message = Message::from_vec(&bytes).unwrap();
    assert_eq!(message.metadata.id, 0xabcd);
    assert_eq!(message.queries[0].name.to_ascii(), "ExAmPlE.cOm.");
    assert!(message.edns.is_some());
    assert_eq!(message.metadata.response_code, ResponseCode::Refused);
}

#[test]
fn refusals_of_garbage_are_still_well_formed_headers() {
    for input in [
        &[][..],
        &[0x77][..],
        &[0x77, 0x88, 0x01][..],
        &EXAMPLE_QUERY[..20],
        &[0xff; 40][..],
    ] {
        for (build, rcode) in [
            (refused as fn(&[u8]) -> Vec<u8>, ResponseCode::Refused),
            (servfail, ResponseCode::ServFail),
        ] {
            let bytes = build(input);
            let message = Message::from_vec(&bytes).unwrap();
            let id = u16::from_be_bytes([
                input.first().copied().unwrap_or(0),
                input.get(1).copied().unwrap_or(0),
            ]);
            assert_eq!(message.metadata.id, id, "{input:?}");
            assert_eq!(message.metadata.message_type, MessageType::Response);
            assert_eq!(message.metadata.response_code, rcode);
            assert!(message.queries.is_empty());
        }
    }
    // RD is echoed from a truncated query.
    let message = Message::from_vec(&refused(&EXAMPLE_QUERY[..20])).unwrap();
    assert!(message.metadata.recursion_desired);
}

// === malformed input ===

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    for len in 0..EXAMPLE_QUERY.len() {
        assert!(
            matches!(
                parse_query(&EXAMPLE_QUERY[..len]),
                Err(DnsError::Malformed(_))
            ),
            "query truncated to {len}"
        );
    }
    for len in 0..CNAME_ANSWER.len() {
        assert!(
            matches!(
                parse_answer(&CNAME_ANSWER[..len]),
                Err(DnsError::Malformed(_))
            ),
            "answer truncated to {len}"
        );
    }
}

#[test]
fn hostile_bytes_give_errors() {
    // A name that points at itself.
    let mut looped = EXAMPLE_QUERY[..12].to_vec();
    looped.extend_from_slice(&[0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01]);
    assert!(matches!(parse_query(&looped), Err(DnsError::Malformed(_))));
    // A forward pointer past the end.
    let mut forward = EXAMPLE_QUERY[..12].to_vec();
    forward.extend_from_slice(&[0xc0, 0xff, 0x00, 0x01, 0x00, 0x01]);
    assert!(matches!(parse_query(&forward), Err(DnsError::Malformed(_))));
    // A label length running past the end.
    let mut long_label = EXAMPLE_QUERY.to_vec();
    long_label[12] = 60;
    assert!(matches!(
        parse_query(&long_label),
        Err(DnsError::Malformed(_))
    ));
    // An answer whose rdlength lies.
    let mut bad_rdlength = CNAME_ANSWER.to_vec();
    let at = bad_rdlength.len() - 6;
    bad_rdlength[at + 1] = 200;
    assert!(matches!(
        parse_answer(&bad_rdlength),
        Err(DnsError::Malformed(_))
    ));
    let e = parse_query(b"GET / HTTP/1.1\r\n\r\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("malformed DNS message: ") && !e.contains('\n'),
        "{e}"
    );
}

#[test]
fn random_garbage_never_panics() {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..3000 {
        let len = (next() % 96) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if round % 2 == 0 && bytes.len() >= 12 {
            // Plausible header, so the decoder gets past it into the sections.
            bytes[4..12].copy_from_slice(&[0, 1, 0, 1, 0, 0, 0, 0]);
        }
        let _ = parse_query(&bytes);
        let _ = parse_answer(&bytes);
        assert!(Message::from_vec(&refused(&bytes)).is_ok());
        assert!(Message::from_vec(&servfail(&bytes)).is_ok());
        // Mutate a real answer too.
        let mut mutated = CNAME_ANSWER.to_vec();
        let at = (next() as usize) % mutated.len();
        mutated[at] = next() as u8;
        if let Ok(answer) = parse_answer(&mutated) {
            let _ = answer.chain();
            let _ = answer.names_for(ip("93.184.215.14"));
        }
    }
}

/// Found by the `dns` fuzz target: a chain ending at the root (`CNAME .`, and an A record for
/// `.`) named the root `.`, but `addresses_for(".")` cut its dot off and looked up `""`, so
/// the root's own addresses were not found under the name `chain()` gives it (and `learn`
/// asked for exactly that).
#[test]
fn the_root_on_a_chain_is_looked_up_by_its_name() {
    let query = query_message(7, "a.example.", RecordType::A);
    let bytes = response_to(
        &query,
        ResponseCode::NoError,
        vec![cname("a.example.", "."), a(".", 60, [93, 184, 215, 14])],
    );
    let answer = parse_answer(&bytes).unwrap();
    assert_eq!(answer.chain(), vec!["a.example", "."]);
    for name in [".", "a.example", "A.Example."] {
        assert_eq!(
            answer.addresses_for(name),
            vec![ip("93.184.215.14")],
            "{name}"
        );
    }
    assert_eq!(
        answer.names_for(ip("93.184.215.14")),
        vec!["a.example", "."]
    );
}
