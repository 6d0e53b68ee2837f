//! HTTP framing as harness meets it: all of it is hyper's (requests, chunked bodies, trailers,
//! upgrades, HTTP/2 frames), so this target drives the project's own `http::serve` over
//! in-memory streams — an agent sending the input's client bytes, a destination answering
//! with the input's upstream bytes (HTTP/1: raw, so hyper's client parses them; HTTP/2: a
//! real h2 server) — recorded into a scratch ledger by the real writer, with the policy check
//! of every request's host, heads and bodies recorded, streamed answers, the semantics stage,
//! and WebSocket upgrades handed to the recording relay and its tap.
//!
//! Checks: no panic and no hang (`fuzz::HANG`); the session recorded verifies intact whatever
//! the bytes were; and `harness log` and `harness export` read it (`SessionLog::read`,
//! `render`, `correlate`, HAR, AAT).
//!
//! Input: see `harness_fuzz::Connection::parse`.
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use harness::ledger::verify::{verify_path, VerifyOptions};
use harness::ledger::Ledger;
use harness::policy::Policy;
use harness::timeline::{correlate::correlate, render, session::SessionLog};
use harness_fuzz::{clear_session, policy, scratch_ledger, serve, Connection};
use libfuzzer_sys::fuzz_target;

struct State {
    runtime: tokio::runtime::Runtime,
    dir: PathBuf,
    ledger: Ledger,
    policy: Arc<Policy>,
}

fn state() -> &'static State {
    static STATE: OnceLock<State> = OnceLock::new();
    STATE.get_or_init(|| {
        let (dir, ledger) = scratch_ledger("http");
        State {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            dir,
            ledger,
            policy: policy(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some(conn) = Connection::parse(data) else {
        return;
    };
    let st = state();
    let served = st
        .runtime
        .block_on(serve(&st.ledger, st.policy.clone(), &conn));
    let report = verify_path(&served.session, &VerifyOptions::default()).expect("verify runs");
    assert!(
        report.intact(),
        "the recorded session does not verify: {:?}",
        report.problems
    );
    let log = SessionLog::read(&served.session).expect("harness log reads the session");
    let _ = render::render(&log, render::Limits::default());
    let _ = correlate(&log);
    harness::export::har::har(std::slice::from_ref(&log)).expect("HAR export");
    harness::export::aat::lines(&log).expect("AAT export");
    clear_session(&st.dir, &served.id);
});
