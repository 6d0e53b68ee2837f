//! A UDP `connect()` to port 0 (getaddrinfo choosing a source address; nothing is sent) is
//! recorded as the refusal it is, but the timeline shows it as a note, not as DENIED; a UDP
//! datagram to another port is still a denial.
mod timeline_support;

use harness::ledger::*;
use timeline_support::{harness, scratch, session_open, Rec};

#[tokio::test]
async fn a_udp_connect_to_port_zero_is_a_note_not_a_denial() {
    let dir = scratch("udp-note");
    let ledger = Ledger::open(&dir).unwrap();
    let (w, _) = ledger.open_session(session_open()).await.unwrap();
    let r = Rec {
        ledger: &ledger,
        w: &w,
    };
    let caller = Some(Caller {
        pid: 100,
        tid: 100,
        uid: 1000,
        cgroup_id: 7,
    });
    for (dst, reason) in [
        ("160.79.104.10:0", harness::engine::UDP_ADDRESS_SELECTION),
        ("[2607:6bc0::10]:0", harness::engine::UDP_ADDRESS_SELECTION),
        // An older ledger's wording: still a connect, as only a connect is seen at port 0.
        ("160.79.104.10:0", "UDP other than DNS (port 53) is refused"),
        (
            "198.51.100.7:443",
            "UDP other than DNS (port 53) is refused",
        ),
    ] {
        r.add(Entry::ConnDenied(ConnDenied {
            conn: None,
            proto: "udp".into(),
            dst: Some(dst.parse().unwrap()),
            host: None,
            caller,
            by: "kernel".into(),
            reason: reason.into(),
            rule: None,
        }))
        .await;
    }
    let file = w.path().to_owned();
    w.close(SessionClose::exited(Some(0), None)).await.unwrap();

    let (code, out, err) = harness(&["log", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let notes: Vec<&str> = out
        .lines()
        .filter(|l| l.contains(" udp "))
        .map(|l| &l[14..])
        .collect();
    assert_eq!(
        notes,
        [
            "note  pid 100 udp connect() to 160.79.104.10:0 refused (address selection, no data)",
            "note  pid 100 udp connect() to [2607:6bc0::10]:0 refused (address selection, no data)",
            "note  pid 100 udp connect() to 160.79.104.10:0 refused (address selection, no data)",
            "DENIED pid 100 udp → 198.51.100.7:443 (by kernel: UDP other than DNS (port 53) is refused)",
        ],
        "{out}"
    );
    // The record itself is unchanged: a refusal by the kernel, with what it was.
    let (_, json, _) = harness(&["log", file.to_str().unwrap(), "--json"]);
    assert!(
        json.contains(harness::engine::UDP_ADDRESS_SELECTION),
        "{json}"
    );
}
