//! Policy tests: file errors (each message checked), semantics, and kernel/userspace agreement.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use harness_common::{
    prefix_matches, KernelRule, LearnedKey, LearnedVerdict, ACTION_ALLOW, ACTION_DENY, MAX_RULES,
    NO_RULE,
};

use super::*;

fn policy(text: &str) -> Policy {
    match Policy::parse(text, "p.toml") {
        Ok(policy) => policy,
        Err(e) => panic!("policy should parse: {e}"),
    }
}

fn error(text: &str) -> String {
    match Policy::parse(text, "p.toml") {
        Ok(_) => panic!("policy should not parse:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

// === file errors ===

#[test]
fn limits_default_and_set_and_refused() {
    use crate::limits::Limits;
    use std::time::Duration;
    assert_eq!(
        *Policy::parse("", "p.toml").unwrap().limits(),
        Limits::default()
    );
    let p = Policy::parse(
        "[limits]\nidle_seconds = 5\nhandshake_seconds = 2\nconnections = 10\n",
        "p.toml",
    )
    .unwrap();
    assert_eq!(
        *p.limits(),
        Limits {
            idle: Duration::from_secs(5),
            handshake: Duration::from_secs(2),
            connections: 10,
            ..Limits::default()
        }
    );
    assert_eq!(
        error("[limits]\nidle_seconds = 0\n"),
        "p.toml:2:16: limits.idle_seconds = 0: must be 1 to 604800 (seconds)"
    );
    assert_eq!(
        error("[limits]\nconnections = -1\n"),
        "p.toml:2:15: limits.connections = -1: must be 1 to 1000000"
    );
    assert!(error("[limits]\nidle = 5\n").contains("unknown field `idle`"));
}

#[test]
fn syntax_and_shape_errors_name_line_and_column() {
    assert_eq!(
        error("default = \"deny\"\n[[rule]]\naction = \"allow\"\nhosts = \"a.com\"\n"),
        "p.toml:4:1: unknown field `hosts`, expected one of `action`, `host`, `cidr`, `ports`"
    );
    assert_eq!(
        error("defualt = \"deny\"\n"),
        "p.toml:1:1: unknown field `defualt`, expected one of `default`, `rule`, `limits`, `on_unparsable`, `ask_timeout_seconds`, `tool`, `http`, `model`, `budget`"
    );
    assert_eq!(
        error("default = \"maybe\"\n"),
        "p.toml:1:11: default must be \"allow\" or \"deny\", not \"maybe\""
    );
    let e = error("[[rule]\n");
    assert!(e.starts_with("p.toml:1:"), "{e}");
    assert!(!e.contains('\n'), "{e}");
    let e = error("[[rule]]\naction = \"allow\"\nhost = 5\n");
    assert!(
        e.starts_with("p.toml:3:8: invalid type: integer `5`, expected a string"),
        "{e}"
    );
}

#[test]
fn rule_errors_name_rule_number_and_position() {
    let ok = "[[rule]]\naction = \"allow\"\nhost = \"a.com\"\n";
    assert_eq!(
        error(&format!(
            "{ok}[[rule]]\naction = \"permit\"\nhost = \"b.com\"\n"
        )),
        "p.toml:5:10: rule[2]: action must be \"allow\" or \"deny\", not \"permit\""
    );
    assert_eq!(
        error("[[rule]]\nhost = \"b.com\"\n"),
        "p.toml: rule[1]: missing `action` (\"allow\" or \"deny\")"
    );
    assert_eq!(
        error("[[rule]]\naction = \"deny\"\nhost = \"b.com\"\ncidr = \"10.0.0.0/8\"\n"),
        "p.toml:4:8: rule[1]: has both `host` and `cidr`; write two rules"
    );
    assert_eq!(
        error("[[rule]]\naction = \"deny\"\nports = [80]\n"),
        "p.toml: rule[1]: needs one of `host` (a name) or `cidr` (an address range)"
    );
    assert_eq!(
        error("[[rule]]\naction = \"deny\"\ncidr = \"10.0.0.0/33\"\n"),
        "p.toml:3:8: rule[1]: bad CIDR \"10.0.0.0/33\": prefix length must be a number from 0 to 32"
    );
    assert_eq!(
        error("[[rule]]\naction = \"deny\"\ncidr = \"fd00::/129\"\n"),
        "p.toml:3:8: rule[1]: bad CIDR \"fd00::/129\": prefix length must be a number from 0 to 128"
    );
    assert_eq!(
        error("[[rule]]\naction = \"deny\"\ncidr = \"10.0.0/8\"\n"),
        "p.toml:3:8: rule[1]: bad CIDR \"10.0.0/8\": \"10.0.0\" is not an IPv4 or IPv6 address"
    );
    assert_eq!(
        error("[[rule]]\naction = \"deny\"\ncidr = \"10.0.0.0/8\"\nports = [443, 0]\n"),
        "p.toml:4:15: rule[1]: port 0 is not a port; leave `ports` out to mean any port"
    );
    assert_eq!(
        error("[[rule]]\naction = \"deny\"\ncidr = \"10.0.0.0/8\"\nports = [70000]\n"),
        "p.toml:4:10: rule[1]: port 70000 is out of range 1-65535"
    );
    assert_eq!(
        error("[[rule]]\naction = \"deny\"\ncidr = \"10.0.0.0/8\"\nports = [-1]\n"),
        "p.toml:4:10: rule[1]: port -1 is out of range 1-65535"
    );
}

#[test]
fn host_errors_explain_the_fix() {
    let host = |h: &str| error(&format!("[[rule]]\naction = \"deny\"\nhost = {h:?}\n"));
    assert_eq!(host(""), "p.toml:3:8: rule[1]: host is empty");
    assert_eq!(
        host("*"),
        "p.toml:3:8: rule[1]: host \"*\" would match every name; use `default` for that"
    );
    assert_eq!(
        host("api.*.com"),
        "p.toml:3:8: rule[1]: host \"api.*.com\": `*` is allowed only as the whole first label, as in \"*.example.com\""
    );
    assert_eq!(
        host("*foo.com"),
        "p.toml:3:8: rule[1]: host \"*foo.com\": `*` is allowed only as the whole first label, as in \"*.example.com\""
    );
    assert_eq!(
        host("10.0.0.1"),
        "p.toml:3:8: rule[1]: host \"10.0.0.1\" is an IP address; write cidr = \"10.0.0.1\""
    );
    assert_eq!(
        host("[::1]"),
        "p.toml:3:8: rule[1]: host \"[::1]\" is an IP address; write cidr = \"::1\""
    );
    assert_eq!(
        host("bücher.de"),
        "p.toml:3:8: rule[1]: host \"bücher.de\" is not ASCII; write it in its xn-- (punycode) form"
    );
    assert_eq!(
        host("a..com"),
        "p.toml:3:8: rule[1]: host \"a..com\" has an empty label"
    );
    assert_eq!(
        host("a b.com"),
        "p.toml:3:8: rule[1]: host \"a b.com\" contains ' '"
    );
    assert_eq!(
        host(&format!("{}.com", "a".repeat(64))),
        format!(
            "p.toml:3:8: rule[1]: host \"{}.com\" has a label longer than 63 characters",
            "a".repeat(64)
        )
    );
}

#[test]
fn too_many_kernel_rules_is_an_error_naming_the_count() {
    let mut text = String::new();
    for i in 0..33 {
        text.push_str(&format!(
            "[[rule]]\naction = \"deny\"\ncidr = \"10.{i}.0.0/16\"\nports = [1, 2]\n"
        ));
    }
    assert_eq!(
        error(&text),
        "p.toml: the CIDR rules need 66 kernel rules (one per CIDR and port), but the kernel \
         holds at most 64; merge ranges or drop ports"
    );
    // Host rules do not use kernel slots.
    for i in 0..100 {
        text = text.replacen(
            &format!("cidr = \"10.{i}.0.0/16\""),
            &format!("host = \"h{i}.com\""),
            1,
        );
    }
    policy(&text);
}

#[test]
fn load_reads_files_and_names_them_in_errors() {
    let dir = std::env::temp_dir().join(format!("harness-policy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("policy.toml");
    let text = "default = \"deny\"\n[[rule]]\naction = \"allow\"\ncidr = \"127.0.0.0/8\"\n";
    std::fs::write(&path, text).unwrap();
    let loaded = Policy::load(&path).unwrap();
    assert_eq!(loaded.origin(), path.display().to_string());
    assert_eq!(loaded.default_action(), Action::Deny);
    assert_eq!(loaded.sha256_hex(), policy(text).sha256_hex());

    std::fs::write(&path, [0xff, 0xfe, b'\n']).unwrap();
    assert_eq!(
        Policy::load(&path).unwrap_err().to_string(),
        format!("{}: policy file is not UTF-8 text", path.display())
    );
    let missing = dir.join("missing.toml");
    let e = Policy::load(&missing).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}: cannot read policy file: ", missing.display())),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sha256_is_of_the_exact_bytes() {
    // SHA-256("") is well known.
    assert_eq!(
        Policy::allow_all().sha256_hex(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        policy("").sha256_hex(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    // A comment changes the bytes, so the hash, though not the meaning.
    assert_ne!(policy("# x\n").sha256_hex(), policy("").sha256_hex());
    assert_eq!(policy("# x\n").rules(), policy("").rules());
}

// === semantics ===

#[test]
fn default_is_allow_when_absent() {
    let p = policy("");
    assert_eq!(p.default_action(), Action::Allow);
    let d = p.decide(sa("1.2.3.4:80"), None);
    assert_eq!(d.action, Action::Allow);
    assert_eq!(d.rule, None);
    assert_eq!(d.reason, "no rule matched; default allow");
    let p = policy("default = \"deny\"");
    assert_eq!(
        p.decide(sa("1.2.3.4:80"), None).reason,
        "no rule matched; default deny"
    );
    assert_eq!(
        Policy::allow_all().decide(sa("[::1]:1"), Some("x")).action,
        Action::Allow
    );
}

const MIXED: &str = r#"
default = "deny"
[[rule]]
action = "allow"
host = "api.anthropic.com"
ports = [443]
[[rule]]
action = "deny"
cidr = "169.254.0.0/16"
[[rule]]
action = "allow"
cidr = "127.0.0.0/8"
ports = [8080, 8443]
[[rule]]
action = "allow"
host = "*.example.com"
[[rule]]
action = "deny"
host = "evil.example.com"
[[rule]]
action = "allow"
cidr = "0.0.0.0/0"
ports = [53]
[[rule]]
action = "allow"
cidr = "2001:db8::/32"
"#;

#[test]
fn deny_wins_whatever_the_order() {
    let p = policy(MIXED);
    // evil.example.com matches the allow wildcard (rule 3) and the deny (rule 4).
    let d = p.decide(sa("93.184.215.14:443"), Some("evil.example.com"));
    assert_eq!((d.action, d.rule), (Action::Deny, Some(4)));
    assert_eq!(d.reason, "rule[5] deny host evil.example.com");
    // A name does not launder a denied address.
    let d = p.decide(sa("169.254.169.254:443"), Some("api.anthropic.com"));
    assert_eq!((d.action, d.rule), (Action::Deny, Some(1)));
    assert_eq!(d.reason, "rule[2] deny cidr 169.254.0.0/16");
    // The same rules in reverse order decide the same.
    let mut reversed: Vec<&str> = MIXED.split("[[rule]]").skip(1).collect();
    reversed.reverse();
    let text = format!("default = \"deny\"\n[[rule]]{}", reversed.join("[[rule]]"));
    let r = policy(&text);
    for (dst, host) in [
        ("93.184.215.14:443", Some("evil.example.com")),
        ("169.254.169.254:443", Some("api.anthropic.com")),
        ("160.79.104.10:443", Some("api.anthropic.com")),
        ("127.0.0.1:8080", None),
        ("127.0.0.1:8081", None),
        ("8.8.8.8:53", Some("dns.google")),
    ] {
        assert_eq!(
            p.decide(sa(dst), host).action,
            r.decide(sa(dst), host).action,
            "{dst} {host:?}"
        );
    }
}

#[test]
fn decisions_serialise_for_the_ledger() {
    let d = policy(MIXED).decide(sa("169.254.169.254:80"), None);
    assert_eq!(
        serde_json::to_value(&d).unwrap(),
        serde_json::json!({"action": "deny", "rule": 1, "reason": "rule[2] deny cidr 169.254.0.0/16"})
    );
}

#[test]
fn first_allow_is_named_when_several_allow() {
    let p = policy(MIXED);
    let d = p.decide(sa("[2001:db8::1]:53"), Some("a.example.com"));
    assert_eq!((d.action, d.rule), (Action::Allow, Some(3)));
    assert_eq!(d.reason, "rule[4] allow host *.example.com");
}

#[test]
fn host_matching_is_case_insensitive_ignores_trailing_dot_and_excludes_apex() {
    let p = policy(MIXED);
    let at = sa("160.79.104.10:443");
    for host in [
        "api.anthropic.com",
        "API.Anthropic.COM",
        "api.anthropic.com.",
    ] {
        assert_eq!(p.decide(at, Some(host)).rule, Some(0), "{host}");
    }
    for host in [
        "anthropic.com",
        "xapi.anthropic.com",
        "api.anthropic.com.evil",
        "",
        ".",
    ] {
        assert_eq!(p.decide(at, Some(host)).action, Action::Deny, "{host}");
    }
    for host in ["a.example.com", "a.b.c.example.com", "A.EXAMPLE.com."] {
        assert_eq!(p.decide(at, Some(host)).rule, Some(3), "{host}");
    }
    for host in [
        "example.com",
        "example.com.",
        "notexample.com",
        "a.example.com.org",
        ".example.com",
    ] {
        assert_eq!(p.decide(at, Some(host)).action, Action::Deny, "{host}");
    }
    let pattern = HostPattern::Subdomains("example.com".into());
    assert!(pattern.matches("X.Example.Com."));
    assert!(!pattern.matches("example.com"));
    assert_eq!(pattern.to_string(), "*.example.com");
    // Rules in the file are stored normalised.
    let q = policy("[[rule]]\naction = \"deny\"\nhost = \"*.Example.COM.\"\n");
    assert_eq!(q.rules()[0].target, Target::Host(pattern));
}

#[test]
fn ports_restrict_rules() {
    let p = policy(MIXED);
    assert_eq!(
        p.decide(sa("160.79.104.10:80"), Some("api.anthropic.com"))
            .action,
        Action::Deny
    );
    assert_eq!(p.decide(sa("127.0.0.1:8080"), None).rule, Some(2));
    assert_eq!(p.decide(sa("127.0.0.1:8443"), None).rule, Some(2));
    assert_eq!(p.decide(sa("127.0.0.1:8081"), None).rule, None);
    // Duplicate ports are folded.
    let q = policy("[[rule]]\naction = \"deny\"\ncidr = \"10.0.0.0/8\"\nports = [443, 443, 80]\n");
    assert_eq!(q.rules()[0].ports, vec![443, 80]);
    assert_eq!(
        q.rules()[0].to_string(),
        "deny cidr 10.0.0.0/8 ports 443,80"
    );
    assert_eq!(q.kernel_rules().unwrap().rules.len(), 2);
    // An empty list means any port.
    let q = policy("[[rule]]\naction = \"deny\"\ncidr = \"10.0.0.0/8\"\nports = []\n");
    assert_eq!(q.decide(sa("10.9.9.9:1"), None).action, Action::Deny);
}

#[test]
fn ipv4_rules_match_plain_and_mapped_destinations() {
    let p = policy(MIXED);
    for dst in ["169.254.1.2:80", "[::ffff:169.254.1.2]:80"] {
        assert_eq!(p.decide(sa(dst), None).rule, Some(1), "{dst}");
    }
    for dst in ["127.0.0.1:8080", "[::ffff:127.0.0.1]:8080"] {
        assert_eq!(p.decide(sa(dst), None).rule, Some(2), "{dst}");
    }
    // ::1 is IPv6 loopback, not 127/8.
    assert_eq!(p.decide(sa("[::1]:8080"), None).rule, None);
    // IPv6 rules match IPv6 only (2001:db8::/32 contains no mapped address).
    assert_eq!(p.decide(sa("[2001:db8:1::5]:9"), None).rule, Some(6));
    assert_eq!(p.decide(sa("[2001:db9::5]:9"), None).rule, None);
    // An IPv6 rule written over the mapped range matches plain IPv4 too.
    let q = policy("[[rule]]\naction = \"deny\"\ncidr = \"::ffff:10.0.0.0/104\"\n");
    assert_eq!(q.decide(sa("10.1.2.3:1"), None).action, Action::Deny);
    assert_eq!(q.decide(sa("11.1.2.3:1"), None).action, Action::Allow);
    // A bare address is a single host; host bits are cleared.
    let q = policy(
        "[[rule]]\naction = \"deny\"\ncidr = \"10.1.2.3\"\n[[rule]]\naction = \"deny\"\ncidr = \"fd00::1\"\n[[rule]]\naction = \"deny\"\ncidr = \"192.168.7.9/16\"\n",
    );
    assert_eq!(
        q.rules()[0].target,
        Target::Cidr("10.1.2.3/32".parse().unwrap())
    );
    assert_eq!(
        q.rules()[1].target,
        Target::Cidr("fd00::1/128".parse().unwrap())
    );
    assert_eq!(
        q.rules()[2].target,
        Target::Cidr("192.168.0.0/16".parse().unwrap())
    );
    assert_eq!(q.decide(sa("10.1.2.4:1"), None).action, Action::Allow);
    assert_eq!(q.decide(sa("[fd00::1]:1"), None).action, Action::Deny);
}

#[test]
fn decide_name_answers_for_dns() {
    let p = policy(
        r#"
        [[rule]]
        action = "deny"
        host = "*.tracker.com"
        [[rule]]
        action = "deny"
        host = "mail.example.com"
        ports = [25]
        [[rule]]
        action = "allow"
        host = "mail.example.com"
        ports = [443]
        [[rule]]
        action = "deny"
        cidr = "10.0.0.0/8"
        "#,
    );
    // Denied on every port: do not resolve.
    let d = p.decide_name("ads.Tracker.com.", None).unwrap();
    assert_eq!((d.action, d.rule), (Action::Deny, Some(0)));
    // Denied on one port only: the name still resolves; allowed on another.
    let d = p.decide_name("mail.example.com", None).unwrap();
    assert_eq!((d.action, d.rule), (Action::Allow, Some(2)));
    assert_eq!(
        p.decide_name("mail.example.com", Some(25)).unwrap().action,
        Action::Deny
    );
    assert_eq!(
        p.decide_name("mail.example.com", Some(443)).unwrap().action,
        Action::Allow
    );
    assert_eq!(p.decide_name("mail.example.com", Some(80)), None);
    // Host rules silent: CIDR rules and the default are for connect time.
    assert_eq!(p.decide_name("tracker.com", None), None);
    assert_eq!(p.decide_name("other.org", Some(443)), None);
    let q = policy("[[rule]]\naction = \"deny\"\nhost = \"x.com\"\nports = [25]\n");
    assert_eq!(q.decide_name("x.com", None), None);
}

// === kernel ===

#[test]
fn kernel_rules_compile_cidrs_by_port() {
    let k = policy(MIXED).kernel_rules().unwrap();
    assert_eq!(k.default_action, ACTION_DENY);
    let rule = |addr, prefix, port, action, rule_index| KernelRule {
        addr,
        prefix,
        port,
        action,
        rule_index,
    };
    assert_eq!(
        k.rules,
        vec![
            rule([0, 0, 0xffff, 0xa9fe_0000], 96 + 16, 0, ACTION_DENY, 1),
            rule([0, 0, 0xffff, 0x7f00_0000], 96 + 8, 8080, ACTION_ALLOW, 2),
            rule([0, 0, 0xffff, 0x7f00_0000], 96 + 8, 8443, ACTION_ALLOW, 2),
            rule([0, 0, 0xffff, 0], 96, 53, ACTION_ALLOW, 5),
            rule([0x2001_0db8, 0, 0, 0], 32, 0, ACTION_ALLOW, 6),
        ]
    );
    assert_eq!(
        Policy::allow_all().kernel_rules().unwrap().default_action,
        ACTION_ALLOW
    );
    assert!(Policy::allow_all().kernel_rules().unwrap().rules.is_empty());
    // Exactly MAX_RULES fits.
    let mut text = String::new();
    for i in 0..MAX_RULES {
        text.push_str(&format!(
            "[[rule]]\naction = \"deny\"\ncidr = \"10.{i}.0.0/16\"\n"
        ));
    }
    assert_eq!(
        policy(&text).kernel_rules().unwrap().rules.len(),
        MAX_RULES as usize
    );
}

#[test]
fn ip_words_are_host_order_and_mapped() {
    assert_eq!(
        ip_words(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))),
        [0, 0, 0xffff, 0x0a01_0203]
    );
    assert_eq!(
        ip_words("::ffff:10.1.2.3".parse().unwrap()),
        [0, 0, 0xffff, 0x0a01_0203]
    );
    assert_eq!(
        ip_words("2001:db8:1:2:3:4:5:6".parse().unwrap()),
        [0x2001_0db8, 0x0001_0002, 0x0003_0004, 0x0005_0006]
    );
}

/// The eBPF side's `decide` (harness-ebpf/src/programs.rs), transcribed: learned entries
/// (port, then any-port), then the rule array, deny first.
fn kernel_decide(
    program: &KernelProgram,
    learned: &HashMap<LearnedKey, LearnedVerdict>,
    addr: &[u32; 4],
    port: u16,
) -> (u32, u32) {
    let mut allow_rule = NO_RULE;
    for any_port in [false, true] {
        let key = LearnedKey {
            addr: *addr,
            port: if any_port { 0 } else { u32::from(port) },
        };
        if let Some(v) = learned.get(&key) {
            if v.action == ACTION_DENY {
                return (ACTION_DENY, v.rule_index);
            }
            allow_rule = v.rule_index;
        }
    }
    for rule in &program.rules {
        if (rule.port == 0 || rule.port == u32::from(port))
            && prefix_matches(addr, &rule.addr, rule.prefix)
        {
            if rule.action == ACTION_DENY {
                return (ACTION_DENY, rule.rule_index);
            }
            allow_rule = rule.rule_index;
        }
    }
    if allow_rule != NO_RULE {
        (ACTION_ALLOW, allow_rule)
    } else {
        (program.default_action, NO_RULE)
    }
}

/// A small deterministic generator (xorshift), so the "random" addresses are reproducible.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Addresses near the rules' edges as well as anywhere, in every family form.
fn sample_addresses(rng: &mut XorShift, bases: &[IpAddr]) -> Vec<SocketAddr> {
    let ports = [0u16, 1, 53, 80, 443, 8080, 8443, 65535];
    let mut out = Vec::new();
    for _ in 0..4000 {
        let r = rng.next();
        let port = ports[(r % ports.len() as u64) as usize];
        let ip = match (r >> 8) % 4 {
            0 => IpAddr::V4(Ipv4Addr::from(rng.next() as u32)),
            1 => IpAddr::V6(Ipv6Addr::from(
                u128::from(rng.next()) << 64 | u128::from(rng.next()),
            )),
            _ => {
                // Flip a few low bits of a rule's base address: hits and near misses.
                let base = bases[(rng.next() % bases.len() as u64) as usize];
                let flip = rng.next();
                match base {
                    IpAddr::V4(v4) => {
                        let bits = u32::from(v4) ^ ((flip as u32) >> (flip % 32));
                        IpAddr::V4(Ipv4Addr::from(bits))
                    }
                    IpAddr::V6(v6) => {
                        let bits = u128::from(v6) ^ (u128::from(flip) >> (flip % 64));
                        IpAddr::V6(Ipv6Addr::from(bits))
                    }
                }
            }
        };
        out.push(SocketAddr::new(ip, port));
        // The same destination as an IPv6 socket would see it.
        if let IpAddr::V4(v4) = ip {
            out.push(SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), port));
        }
    }
    out
}

#[test]
fn kernel_and_userspace_agree_on_addresses() {
    let text = r#"
        default = "deny"
        [[rule]]
        action = "deny"
        cidr = "10.20.0.0/16"
        ports = [443]
        [[rule]]
        action = "allow"
        cidr = "10.0.0.0/8"
        [[rule]]
        action = "deny"
        cidr = "10.20.30.40"
        [[rule]]
        action = "allow"
        cidr = "192.168.1.128/25"
        ports = [80, 8080]
        [[rule]]
        action = "allow"
        cidr = "2001:db8::/33"
        [[rule]]
        action = "deny"
        cidr = "2001:db8:0:1::/64"
        [[rule]]
        action = "allow"
        cidr = "::ffff:172.16.0.0/108"
        [[rule]]
        action = "deny"
        cidr = "fe80::/10"
        ports = [53]
        [[rule]]
        action = "allow"
        cidr = "0.0.0.0/1"
        ports = [65535]
        [[rule]]
        action = "allow"
        host = "ignored.example"
    "#;
    let bases: Vec<IpAddr> = [
        "10.20.0.0",
        "10.0.0.0",
        "10.20.30.40",
        "192.168.1.128",
        "2001:db8::",
        "2001:db8:0:1::",
        "172.16.0.0",
        "fe80::",
        "0.0.0.0",
        "127.255.255.255",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    for default in ["deny", "allow"] {
        let p = policy(&text.replace("default = \"deny\"", &format!("default = \"{default}\"")));
        let program = p.kernel_rules().unwrap();
        let none = HashMap::new();
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut seen = [0usize; 2];
        for dst in sample_addresses(&mut rng, &bases) {
            let user = p.decide(dst, None);
            let (action, rule) = kernel_decide(&program, &none, &ip_words(dst.ip()), dst.port());
            assert_eq!(action, user.action.kernel_value(), "{dst}: {}", user.reason);
            // For denies both name the first deny; for allows the kernel names the last
            // matching rule, so only "a rule" vs "the default" must agree.
            if action == ACTION_DENY {
                assert_eq!(rule, user.rule.unwrap_or(NO_RULE), "{dst}");
            } else {
                assert_eq!(rule == NO_RULE, user.rule.is_none(), "{dst}");
            }
            seen[usize::from(user.rule.is_some())] += 1;
        }
        // The sample exercised both rule hits and the default.
        assert!(seen[0] > 500 && seen[1] > 500, "{seen:?}");
    }
}

#[test]
fn learned_entries_make_the_kernel_agree_on_named_destinations() {
    let p = policy(
        r#"
        default = "deny"
        [[rule]]
        action = "allow"
        host = "*.example.com"
        ports = [443, 8443]
        [[rule]]
        action = "deny"
        host = "bad.example.com"
        [[rule]]
        action = "allow"
        host = "ok.example.com"
        [[rule]]
        action = "deny"
        cidr = "203.0.113.7"
        "#,
    );
    let v4: IpAddr = "198.51.100.1".parse().unwrap();
    let v6: IpAddr = "2001:db8::1".parse().unwrap();
    let learned = p.learned_for("OK.example.com.", &[v4, v6]);
    let entry = |ip: IpAddr, port, action, rule_index| {
        (
            LearnedKey {
                addr: ip_words(ip),
                port,
            },
            LearnedVerdict { action, rule_index },
        )
    };
    assert_eq!(
        learned,
        vec![
            entry(v4, 0, ACTION_ALLOW, 2),
            entry(v4, 443, ACTION_ALLOW, 0),
            entry(v4, 8443, ACTION_ALLOW, 0),
            entry(v6, 0, ACTION_ALLOW, 2),
            entry(v6, 443, ACTION_ALLOW, 0),
            entry(v6, 8443, ACTION_ALLOW, 0),
        ]
    );
    assert!(p.learned_for("unrelated.org", &[v4]).is_empty());
    assert!(p.learned_for("example.com", &[v4]).is_empty());

    // Simulate DNS answers and check the kernel now decides like the daemon with the name.
    let answers: [(&str, IpAddr); 4] = [
        ("ok.example.com", v4),
        ("bad.example.com", "198.51.100.2".parse().unwrap()),
        ("a.example.com", v6),
        ("x.example.com", "203.0.113.7".parse().unwrap()),
    ];
    let mut map = HashMap::new();
    for (name, ip) in answers {
        map.extend(p.learned_for(name, &[ip]));
    }
    let program = p.kernel_rules().unwrap();
    for (name, ip) in answers {
        for port in [80, 443, 8443, 9999] {
            let mapped = match ip {
                IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
                other => other,
            };
            for dst_ip in [ip, mapped] {
                let dst = SocketAddr::new(dst_ip, port);
                let user = p.decide(dst, Some(name));
                let (action, _) = kernel_decide(&program, &map, &ip_words(dst_ip), port);
                assert_eq!(
                    action,
                    user.action.kernel_value(),
                    "{name} {dst}: {}",
                    user.reason
                );
            }
        }
    }
}

#[test]
fn learned_conflicts_resolve_deny_first_then_lowest_rule() {
    let p = policy(
        r#"
        [[rule]]
        action = "allow"
        host = "*.cdn.net"
        [[rule]]
        action = "deny"
        host = "x.cdn.net"
        [[rule]]
        action = "allow"
        host = "x.cdn.net"
        "#,
    );
    let ip: IpAddr = "192.0.2.1".parse().unwrap();
    let learned = p.learned_for("x.cdn.net", &[ip, ip]);
    assert_eq!(
        learned,
        vec![(
            LearnedKey {
                addr: ip_words(ip),
                port: 0
            },
            LearnedVerdict {
                action: ACTION_DENY,
                rule_index: 1
            }
        )]
    );
}

#[test]
fn a_connection_is_checked_again_for_each_name_it_reveals() {
    let p = std::sync::Arc::new(policy(
        r#"
default = "deny"
[[rule]]
action = "allow"
host = "api.example.test"
[[rule]]
action = "deny"
host = "*.evil.test"
"#,
    ));
    let conn = ConnPolicy::new(p, "10.1.2.3:443".parse().unwrap());
    for allowed in [
        "api.example.test",
        "API.Example.Test.",
        "api.example.test:443",
        // An address names no host rule; the address was decided at accept.
        "10.9.9.9",
        "[fd00::1]:8443",
        "",
    ] {
        assert!(conn.check(allowed).is_ok(), "{allowed}");
    }
    // Forms an upstream might read as a denied name are refused, whatever the rules say.
    for odd in [
        "x.evil.test ",
        "user@x.evil.test",
        "x.evil.test%2e",
        "api.example.test\t",
        "[fd00::1",
    ] {
        let refused = conn.check(odd).unwrap_err();
        assert_eq!(refused.rule, None, "{odd}");
        assert!(
            refused.reason.contains("not a plain host name"),
            "{odd}: {}",
            refused.reason
        );
    }
    let denied = conn.check("x.evil.test:443").unwrap_err();
    assert_eq!(denied.rule, Some(1));
    assert!(denied.reason.contains("rule[2]"), "{}", denied.reason);
    // Not named by any rule: the default (deny) decides.
    let other = conn.check("other.example.test").unwrap_err();
    assert_eq!(other.rule, None);
}

#[test]
fn an_open_connection_follows_the_policy_in_force_at_each_question() {
    let before = std::sync::Arc::new(policy(
        r#"
default = "allow"
[[rule]]
action = "deny"
host = "api.example.test"
"#,
    ));
    let after = std::sync::Arc::new(policy(
        r#"
default = "allow"
[[http]]
action = "deny"
method = "DELETE"
host = "api.example.test"
path = "/*"
"#,
    ));
    let handle = std::sync::Arc::new(PolicyHandle::new(before.clone()));
    let governor = crate::govern::Governor::new("s".into(), std::sync::Arc::default());
    let conn =
        ConnPolicy::current(handle.clone(), "10.1.2.3:443".parse().unwrap()).governed(governor);
    assert!(conn.check("api.example.test").is_err());
    // No request rules: not governed.
    assert!(conn.governance().is_none());

    handle.replace(after.clone());
    // The same connection, its next request: the new policy decides.
    assert!(conn.check("api.example.test").is_ok());
    let (governing, _) = conn.governance().expect("the new policy has request rules");
    assert_eq!(governing.sha256_hex(), after.sha256_hex());

    // Owned: a reload while a request is decided leaves its deciding policy as it was.
    handle.replace(before);
    assert_eq!(governing.sha256_hex(), after.sha256_hex());
    assert!(conn.governance().is_none());
}
