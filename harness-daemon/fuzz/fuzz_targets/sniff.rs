//! `sniff::classify` on every prefix of the input (and on those of a long variant reaching past
//! `DECIDE_LIMIT` that can differ), checking its contract:
//!
//! - the empty prefix is undecided;
//! - a decision is final: once a prefix shorter than `DECIDE_LIMIT` is decided, every longer
//!   prefix gets the same answer ("`None` while more bytes could still change the answer");
//! - a prefix longer than `DECIDE_LIMIT` is always decided (`sniff` reads no more than
//!   `DECIDE_LIMIT + 1` bytes, so an undecided one would end the connection as if the client
//!   had closed it, instead of handing it to a stage that records it).
//!
//! Input: the bytes. If the first byte is odd, a second run also checks
//! `tail[..at] ++ [fill; DECIDE_LIMIT - 64 + first/2] ++ tail[at..]` for `[first, fill, at,
//! tail @ ..]`, so that the fuzzer reaches the limit without 16 KiB inputs. (Found with it: a
//! request line still in its version at the limit was undecided; `sniff.rs` has the test.)
#![no_main]

use harness::sniff::{classify, Kind, DECIDE_LIMIT};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check(data, 1..=data.len());
    if let [mode, fill, at, tail @ ..] = data {
        if mode & 1 == 1 {
            let at = usize::from(*at).min(tail.len());
            let run = DECIDE_LIMIT - 64 + usize::from(mode >> 1);
            let mut long = tail[..at].to_vec();
            long.resize(at + run, *fill);
            long.extend_from_slice(&tail[at..]);
            // Inside the run of `fill` nothing changes but the length: the prefixes that can
            // differ are those in the input's own bytes, at the run's ends, and at the limit.
            let len = long.len();
            let near = |n: usize, m: usize| n.abs_diff(m) <= 2;
            check(
                &long,
                (1..=len).filter(|&n| {
                    n <= at + 2 || n + tail.len() - at + 2 >= len || near(n, DECIDE_LIMIT)
                }),
            );
        }
    }
});

fn check(bytes: &[u8], prefixes: impl Iterator<Item = usize>) {
    assert_eq!(classify(&[]), None);
    let mut decided: Option<(usize, Kind)> = None;
    for n in prefixes {
        let kind = classify(&bytes[..n]);
        match decided {
            Some((at, first)) if at < DECIDE_LIMIT => assert_eq!(
                kind,
                Some(first),
                "decided {first:?} at {at} bytes, but {n} bytes give {kind:?}"
            ),
            Some(_) => {}
            None => decided = kind.map(|k| (n, k)),
        }
        if n > DECIDE_LIMIT {
            assert!(kind.is_some(), "{n} bytes (> DECIDE_LIMIT) are undecided");
        }
    }
}
