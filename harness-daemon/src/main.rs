//! The `harness` command.
fn main() {
    let enc = harness::enclosure::Enclosure::create("probe-load").unwrap();
    let cfg = harness_common::EnclosureConfig { daemon_v4: 0x7f000001, tcp_port: 1, dns_port: 2, daemon_v6: [0,0,0,1], default_action: 1, rule_count: 0 };
    match harness::hook::Hook::install(&enc, "probe-load", cfg, &[]) {
        Ok(h) => { println!("installed {h:?}"); h.uninstall(); }
        Err(e) => { eprintln!("{e}"); let mut s: &dyn std::error::Error = &e; while let Some(x) = s.source() { eprintln!("  caused by: {x}"); s = x; } }
    }
    enc.remove().unwrap();
}
