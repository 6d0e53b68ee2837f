//! Test vectors: RFC 8785 (JCS) byte for byte, and every ```vector block of SPEC.md, parsed out
//! of SPEC.md itself so that the document and the code cannot drift apart.
//! `HARNESS_PRINT_VECTORS=1` prints what the code computes instead of asserting (for editing
//! SPEC.md).
use base64::Engine as _;
use harness::ledger::merkle::{inclusion_proof, leaf_hash, root};
use harness::ledger::note::{Checkpoint, NoteSigner, NoteVerifier};
use harness::ledger::*;
use std::collections::HashMap;

// === RFC 8785 ===

#[test]
fn rfc8785_section_3_2_2_example() {
    let input = r#"{
  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}"#;
    let v: serde_json::Value = serde_json::from_str(input).unwrap();
    let out = serde_jcs::to_string(&v).unwrap();
    assert_eq!(
        out,
        "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],\"string\":\"\u{20ac}$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}"
    );
}

#[test]
fn rfc8785_section_3_2_3_sorting() {
    let input = r#"{
   "\u20ac": "Euro Sign",
   "\r": "Carriage Return",
   "\ufb33": "Hebrew Letter Dalet With Dagesh",
   "1": "One",
   "\ud83d\ude00": "Emoji: Grinning Face",
   "\u0080": "Control",
   "\u00f6": "Latin Small Letter O With Diaeresis"
}"#;
    let v: serde_json::Value = serde_json::from_str(input).unwrap();
    let out = serde_jcs::to_string(&v).unwrap();
    // Keys sorted by UTF-16 code units: U+FB33 comes after the surrogate pair of U+1F600,
    // which UTF-8 (byte) order would reverse.
    assert_eq!(
        out,
        "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\"\u{1f600}\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}"
    );
}

#[test]
fn rfc8785_appendix_b_numbers() {
    let cases: [(u64, &str); 24] = [
        (0x0000000000000000, "0"),
        (0x8000000000000000, "0"),
        (0x0000000000000001, "5e-324"),
        (0x8000000000000001, "-5e-324"),
        (0x7fefffffffffffff, "1.7976931348623157e+308"),
        (0xffefffffffffffff, "-1.7976931348623157e+308"),
        (0x4340000000000000, "9007199254740992"),
        (0xc340000000000000, "-9007199254740992"),
        (0x4430000000000000, "295147905179352830000"),
        (0x44b52d02c7e14af5, "9.999999999999997e+22"),
        (0x44b52d02c7e14af6, "1e+23"),
        (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
        (0x444b1ae4d6e2ef4e, "999999999999999700000"),
        (0x444b1ae4d6e2ef4f, "999999999999999900000"),
        (0x444b1ae4d6e2ef50, "1e+21"),
        (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
        (0x3eb0c6f7a0b5ed8d, "0.000001"),
        (0x41b3de4355555553, "333333333.3333332"),
        (0x41b3de4355555554, "333333333.33333325"),
        (0x41b3de4355555555, "333333333.3333333"),
        (0x41b3de4355555556, "333333333.3333334"),
        (0x41b3de4355555557, "333333333.33333343"),
        (0xbecbf647612f3696, "-0.0000033333333333333333"),
        (0x43143ff3c1cb0959, "1424953923781206.2"),
    ];
    for (bits, want) in cases {
        let f = f64::from_bits(bits);
        assert_eq!(serde_jcs::to_string(&f).unwrap(), want, "{bits:#018x}");
        // And a parsed number re-serializes the same way (the verifier's canonical check).
        let v: serde_json::Value = serde_json::from_str(&format!("[{want}]")).unwrap();
        assert_eq!(
            serde_jcs::to_string(&v).unwrap(),
            format!("[{want}]"),
            "{want}"
        );
    }
}

#[test]
fn jcs_escapes_control_characters_and_keeps_non_ascii() {
    let v = serde_json::json!({"s": "\u{0}\u{8}\u{9}\u{a}\u{c}\u{d}\u{1f}\u{7f}é/\"\\"});
    assert_eq!(
        serde_jcs::to_string(&v).unwrap(),
        "{\"s\":\"\\u0000\\b\\t\\n\\f\\r\\u001f\u{7f}é/\\\"\\\\\"}"
    );
}

// === SPEC.md vectors ===

fn spec_vectors() -> Vec<HashMap<String, Vec<String>>> {
    let spec = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../SPEC.md"))
        .expect("SPEC.md at the repository root");
    let mut out = Vec::new();
    let mut cur: Option<HashMap<String, Vec<String>>> = None;
    for line in spec.lines() {
        match (&mut cur, line.trim_end()) {
            (None, "```vector") => cur = Some(HashMap::new()),
            (Some(_), "```") => out.push(cur.take().unwrap()),
            (Some(m), l) => {
                let (k, v) = l.split_once(": ").unwrap_or((l.trim_end_matches(':'), ""));
                m.entry(k.to_owned()).or_default().push(v.to_owned());
            }
            _ => {}
        }
    }
    assert!(cur.is_none(), "unterminated vector block");
    out
}

fn one<'a>(v: &'a HashMap<String, Vec<String>>, k: &str) -> &'a str {
    &v.get(k)
        .unwrap_or_else(|| panic!("vector {:?} lacks {k}", v.get("name")))[0]
}

fn check(print: bool, name: &str, field: &str, want: &str, got: &str) {
    if print {
        println!("[{name}] {field}: {got}");
    } else {
        assert_eq!(got, want, "SPEC.md vector {name}: {field}");
    }
}

#[test]
fn spec_md_vectors() {
    let print = std::env::var_os("HARNESS_PRINT_VECTORS").is_some();
    let vectors = spec_vectors();
    assert!(
        vectors.len() >= 13,
        "SPEC.md has only {} vectors",
        vectors.len()
    );
    // Every kind governance adds has a vector (§4.9 `answered_by`, §4.18, §4.19).
    let entries: Vec<&str> = vectors
        .iter()
        .filter(|v| one(v, "type") == "entry")
        .map(|v| one(v, "entry"))
        .collect();
    for needle in [
        r#""kind":"request_decision""#,
        r#""kind":"request_decided""#,
        r#""answered_by":"harness""#,
        r#""budget":{"#,
        r#""call_id":"#,
    ] {
        assert!(
            entries.iter().any(|e| e.contains(needle)),
            "SPEC.md §14.3 has no entry vector with {needle}"
        );
    }
    let mut entry_hashes: HashMap<String, String> = HashMap::new();
    let b64 = base64::engine::general_purpose::STANDARD;
    for v in &vectors {
        let name = one(v, "name");
        match one(v, "type") {
            "jcs" => {
                let input: serde_json::Value = serde_json::from_str(one(v, "input")).unwrap();
                let c = serde_jcs::to_string(&input).unwrap();
                check(print, name, "canonical", one(v, "canonical"), &c);
                check(
                    print,
                    name,
                    "sha256",
                    one(v, "sha256"),
                    &hex::encode(sha256(c.as_bytes())),
                );
            }
            "genesis" => {
                let id: ulid::Ulid = one(v, "session").parse().unwrap();
                check(
                    print,
                    name,
                    "prev",
                    one(v, "prev"),
                    &hex::encode(genesis(&id)),
                );
            }
            "entry" => {
                let id: ulid::Ulid = one(v, "session").parse().unwrap();
                let entry: Entry = serde_json::from_str(one(v, "entry")).unwrap();
                let prev = match one(v, "prev") {
                    "genesis" => genesis(&id),
                    other => {
                        let h = entry_hashes.get(other).map(String::as_str).unwrap_or(other);
                        let mut p = [0u8; 32];
                        hex::decode_to_slice(h, &mut p).unwrap();
                        p
                    }
                };
                let seq: u64 = one(v, "seq").parse().unwrap();
                let line = canonical_entry(&entry, &id, seq, one(v, "ts"), &prev).unwrap();
                let line = String::from_utf8(line).unwrap();
                check(print, name, "canonical", one(v, "canonical"), &line);
                let h = hex::encode(sha256(line.as_bytes()));
                check(print, name, "sha256", one(v, "sha256"), &h);
                // The verifier's parser accepts it.
                let parsed = parse_line(line.as_bytes()).unwrap();
                assert_eq!(parsed.seq, seq);
                entry_hashes.insert(name.to_owned(), h);
            }
            "merkle" => {
                let hashes: Vec<Hash> = one(v, "entries")
                    .split_whitespace()
                    .map(|n| {
                        let h = entry_hashes.get(n).map(String::as_str).unwrap_or(n);
                        let mut out = [0u8; 32];
                        hex::decode_to_slice(h, &mut out).unwrap();
                        out
                    })
                    .collect();
                let leaves: Vec<Hash> = hashes.iter().map(leaf_hash).collect();
                let got: Vec<String> = leaves.iter().map(hex::encode).collect();
                check(print, name, "leaves", one(v, "leaves"), &got.join(" "));
                check(
                    print,
                    name,
                    "root",
                    one(v, "root"),
                    &b64.encode(root(&leaves)),
                );
                let p: Vec<String> = inclusion_proof(0, &leaves)
                    .iter()
                    .map(|h| b64.encode(h))
                    .collect();
                check(print, name, "proof-0", one(v, "proof-0"), &p.join(" "));
            }
            "checkpoint" => {
                let mut seed = [0u8; 32];
                hex::decode_to_slice(one(v, "seed"), &mut seed).unwrap();
                let s = NoteSigner::from_seed(seed);
                check(
                    print,
                    name,
                    "signer-key",
                    one(v, "signer-key"),
                    &s.to_text(),
                );
                check(
                    print,
                    name,
                    "verifier-key",
                    one(v, "verifier-key"),
                    &s.verifier().to_text(),
                );
                let body: String = v["body"].iter().map(|l| format!("{l}\n")).collect();
                let note = s.sign(&body);
                let want: String = v["note"].iter().map(|l| format!("{l}\n")).collect();
                if print {
                    for l in note.lines() {
                        println!("[{name}] note: {l}");
                    }
                } else {
                    assert_eq!(note, want, "SPEC.md vector {name}: note");
                }
                let key = NoteVerifier::parse(one(v, "verifier-key")).unwrap();
                if !print {
                    Checkpoint::open(&want, &key).unwrap();
                }
            }
            "fingerprint" => {
                let key = hex::decode(one(v, "key")).unwrap();
                let fp = fingerprint(&key, one(v, "secret").as_bytes());
                check(print, name, "fingerprint", one(v, "fingerprint"), &fp);
            }
            other => panic!("vector {name}: unknown type {other}"),
        }
    }
}
