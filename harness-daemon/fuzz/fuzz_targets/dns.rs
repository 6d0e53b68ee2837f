//! The resolver's DNS wire helpers on hostile datagrams: `dns::parse_query`,
//! `dns::parse_answer`, `dns::refused`, `dns::servfail` and the `Answer` methods (`chain`,
//! `addresses_for`, `names_for`).
//!
//! Checks: nothing panics; a refusal or SERVFAIL is always a parseable response with the
//! query's id and the right rcode (the client must stop waiting whatever it sent), echoing the
//! question when the query parsed; recorded text is one line (no control characters); a
//! chain is bounded, loop-free and starts at the question; `addresses_for` and `names_for`
//! agree (an address of a name names that name).
#![no_main]

use std::collections::HashSet;

use harness::dns::{self, Answer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let query = dns::parse_query(data);
    if let Ok(q) = &query {
        one_line(&q.qname);
        one_line(&q.qtype);
        assert_eq!(q.id, u16::from_be_bytes([data[0], data[1]]));
    }
    // The id bytes the datagram has (a missing byte is 0).
    let id = u16::from_be_bytes([
        data.first().copied().unwrap_or(0),
        data.get(1).copied().unwrap_or(0),
    ]);
    for (bytes, rcode) in [
        (dns::refused(data), "REFUSED"),
        (dns::servfail(data), "SERVFAIL"),
    ] {
        let answer = dns::parse_answer(&bytes)
            .unwrap_or_else(|e| panic!("our own {rcode} does not parse: {e}"));
        assert_eq!(answer.id, id, "{rcode} with another id");
        assert_eq!(answer.rcode, rcode);
        assert!(answer.records.is_empty());
        if let Ok(q) = &query {
            assert_eq!(answer.qname.as_deref(), Some(q.qname.as_str()));
        }
        check_answer(&answer);
    }
    if let Ok(answer) = dns::parse_answer(data) {
        check_answer(&answer);
    }
});

fn one_line(text: &str) {
    assert!(
        !text.chars().any(char::is_control),
        "control character in {text:?}"
    );
}

fn check_answer(a: &Answer) {
    one_line(&a.rcode);
    if let Some(q) = &a.qname {
        one_line(q);
    }
    for r in &a.records {
        one_line(r);
    }
    let chain = a.chain();
    assert!(chain.len() <= 16, "a chain of {}", chain.len());
    assert_eq!(chain.first(), a.qname.as_ref());
    assert_eq!(
        chain.iter().collect::<HashSet<_>>().len(),
        chain.len(),
        "a name twice on the chain"
    );
    let names: Vec<&String> = a
        .addresses
        .iter()
        .map(|(owner, _)| owner)
        .chain(chain.iter())
        .collect();
    for name in names {
        let addresses = a.addresses_for(name);
        for ip in &addresses {
            assert!(a.addresses.iter().any(|(_, x)| x == ip));
            let of = a.names_for(*ip);
            assert!(
                of.contains(name),
                "{ip} is an address of {name} but names_for gives {of:?}"
            );
        }
        // Names are compared case-insensitively, a trailing dot left out.
        assert_eq!(
            a.addresses_for(&format!("{}.", name.to_ascii_uppercase())),
            addresses
        );
    }
    for (_, ip) in &a.addresses {
        for name in a.names_for(*ip) {
            assert!(chain.contains(&name), "{name} is not on the chain");
        }
    }
}
