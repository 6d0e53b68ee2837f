//! Writes the checked-in seed corpora (`corpus/<target>/`): small, meaningful inputs built
//! from what the project's own tests and fixtures use — a real rustls ClientHello, HTTP/1
//! requests and responses, an HTTP/2 request for hyper's h2 client, DNS queries
//! and answers, WebSocket frames (masked, fragmented, deflated), the providers' SSE and JSON
//! fixtures (`src/semantics/fixtures`), and sessions recorded by the real ledger writer with
//! the fuzz ledger's key (so their checkpoints verify).
//!
//! `cd harness-daemon/fuzz && cargo run --example seeds` (rewrites the corpus directories'
//! `seed-*` files; whatever the fuzzer added stays).
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use harness_fuzz::{clear_session, policy, scratch_ledger, serve, Connection};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../src/semantics/fixtures");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(FIXTURES).join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

struct Corpus {
    dir: PathBuf,
}

impl Corpus {
    fn new(target: &str) -> Corpus {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            if e.file_name().to_string_lossy().starts_with("seed-") {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
        Corpus { dir }
    }

    fn add(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.dir.join(format!("seed-{name}")), bytes).unwrap();
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    sniff();
    dns();
    websocket();
    sse();
    semantics();
    runtime.block_on(http_and_verify());
    eprintln!("seeds written under {}/corpus", env!("CARGO_MANIFEST_DIR"));
}

/// A ClientHello as rustls (the project's TLS) sends it for an LLM API.
fn client_hello() -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("api.anthropic.com").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

fn sniff() {
    let c = Corpus::new("sniff");
    c.add("client-hello", &client_hello()[..64]);
    c.add(
        "http1-get",
        b"GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\n\r\n",
    );
    c.add(
        "http1-leading-crlf",
        b"\r\n\r\nPOST /v1/messages HTTP/1.0\n",
    );
    c.add(
        "h2-preface",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00",
    );
    c.add("ssh", b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n");
    c.add("redis", b"*1\r\n$4\r\nPING\r\n");
    // The long variant: odd first byte, filler 'a' inserted after "GET /".
    c.add("long-target", b"\x81a\x05GET / HTTP/1.1\r\n");
    c.add("long-method", b"\x7fG\x00 / HTTP/1.1\r\n");
}

fn dns() {
    let c = Corpus::new("dns");
    // `dig example.com A +noedns` (dns/tests.rs EXAMPLE_QUERY).
    let query: &[u8] = &[
        0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 7, b'e', b'x',
        b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0, 0x00, 0x01, 0x00, 0x01,
    ];
    c.add("query", query);
    let mut edns = query.to_vec();
    edns[11] = 1; // ARCOUNT 1: an OPT record, as dig sends by default.
    edns.extend_from_slice(&[0, 0x00, 0x29, 0x04, 0xd0, 0, 0, 0, 0, 0x00, 0x00]);
    c.add("query-edns", &edns);
    // www.example.com CNAME example.com, example.com A (dns/tests.rs CNAME_ANSWER).
    c.add(
        "cname-answer",
        &[
            0xbe, 0xef, 0x81, 0x80, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 3, b'w', b'w',
            b'w', 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0, 0x00, 0x01,
            0x00, 0x01, 0xc0, 0x0c, 0x00, 0x05, 0x00, 0x01, 0x00, 0x00, 0x0e, 0x10, 0x00, 0x02,
            0xc0, 0x10, 0xc0, 0x10, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x01, 0x2c, 0x00, 0x04, 93,
            184, 215, 14,
        ],
    );
    // example.com TXT "v=spf1 -all" and AAAA.
    let mut txt = vec![
        0x00, 0x07, 0x81, 0x80, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 7, b'e', b'x',
        b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0, 0x00, 0x10, 0x00, 0x01,
    ];
    txt.extend_from_slice(&[
        0xc0, 0x0c, 0x00, 0x10, 0x00, 0x01, 0, 0, 0, 60, 0x00, 12, 11,
    ]);
    txt.extend_from_slice(b"v=spf1 -all");
    txt.extend_from_slice(&[0xc0, 0x0c, 0x00, 0x1c, 0x00, 0x01, 0, 0, 0, 60, 0x00, 16]);
    txt.extend_from_slice(&[
        0x26, 0x06, 0x28, 0, 0x02, 0x20, 0, 1, 0x2, 0x48, 0x18, 0x93, 0x25, 0xc8, 0x19, 0x46,
    ]);
    c.add("txt-aaaa-answer", &txt);
}

/// One frame as a sender writes it (websocket.rs tests' `frame`).
fn frame(fin: bool, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(m | n as u8),
        n if n <= 0xffff => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(k) => {
            out.extend_from_slice(&k);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// Messages as a permessage-deflate sender makes them (websocket.rs tests' `deflated`).
fn deflated(texts: &[&str], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut c = flate2::Compress::new(flate2::Compression::default(), false);
    for text in texts {
        let mut payload = Vec::with_capacity(text.len() + 64);
        c.compress_vec(text.as_bytes(), &mut payload, flate2::FlushCompress::Sync)
            .unwrap();
        payload.truncate(payload.len() - 4);
        let mut f = frame(true, 1, mask, &payload);
        f[0] |= 0x40;
        out.extend(f);
    }
    out
}

const KEY: Option<[u8; 4]> = Some([0x37, 0xfa, 0x21, 0x3d]);

fn websocket() {
    let c = Corpus::new("websocket");
    // [config, splits, offsets…, stream…]: cap MESSAGE_CAP (7), deflate (8), down (64).
    let seed = |config: u8, cuts: &[u16], stream: &[u8]| {
        let mut out = vec![config, cuts.len() as u8];
        for cut in cuts {
            out.extend_from_slice(&cut.to_le_bytes());
        }
        out.extend_from_slice(stream);
        out
    };
    let mut mixed = frame(false, 1, KEY, b"Hel");
    mixed.extend(frame(true, 9, KEY, b"ping!"));
    mixed.extend(frame(false, 0, KEY, b"lo, "));
    mixed.extend(frame(true, 0, KEY, "wörld".as_bytes()));
    mixed.extend(frame(true, 2, KEY, &[0, 1, 2, 255]));
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    mixed.extend(frame(true, 8, KEY, &close));
    c.add("fragmented-masked", &seed(7, &[3, 10, 17], &mixed));
    c.add("capped", &seed(4, &[1], &mixed));
    let texts = [
        r#"{"type":"response.create","note":"the same words again and again"}"#,
        r#"{"type":"response.create","note":"the same words again and again"}"#,
        "ünïcode ✓",
    ];
    c.add(
        "deflate-down",
        &seed(7 | 8 | 64, &[5], &deflated(&texts, None)),
    );
    c.add("deflate-up", &seed(7 | 8, &[], &deflated(&texts, KEY)));
    c.add(
        "sixteen-bit",
        &seed(7, &[2, 4], &frame(true, 2, None, &[b'x'; 300])),
    );
    c.add(
        "reserved-opcode",
        &seed(7, &[], &[0x81, 0x02, b'o', b'k', 0x83, 0x00]),
    );
}

fn sse() {
    let c = Corpus::new("sse");
    for name in [
        "anthropic_stream.sse",
        "openai_chat_stream.sse",
        "openai_chat_n2_stream.sse",
        "openai_responses_stream.sse",
        "gemini_stream.sse",
    ] {
        c.add(name, &fixture(name));
    }
    c.add(
        "mcp-stream",
        b"event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"ok\"}],\"isError\":false}}\r\n\r\n: keep-alive\r\n\r\n",
    );
    c.add("framing", b"\xef\xbb\xbf: hi\r\nevent: a\r\ndata: 1\r\ndata:2\r\n\r\ndata: x\n\ndata: y\r\rdata: {\"a\"");
}

/// `[api, method, status, request type, response type, request codings, response codings,
/// flags, request length, request…, response…]` (fuzz_targets/semantics.rs).
#[allow(clippy::too_many_arguments)]
fn exchange(
    api: u8,
    status: u8,
    response_type: u8,
    response_codings: u16,
    flags: u8,
    request: &[u8],
    response: &[u8],
) -> Vec<u8> {
    let mut out = vec![api, 0, status, 0, response_type];
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&response_codings.to_le_bytes());
    out.push(flags);
    out.extend_from_slice(&(request.len() as u16).to_le_bytes());
    out.extend_from_slice(request);
    out.extend_from_slice(response);
    out
}

fn semantics() {
    let c = Corpus::new("semantics");
    // A codings word: how many at bits 0-1, then 3 bits per coding, in the order applied.
    let codings = |ks: &[u16]| {
        ks.iter()
            .enumerate()
            .fold(ks.len() as u16, |word, (i, k)| word | (k << (2 + 3 * i)))
    };
    let one = |k: u16| codings(&[k]);
    let sse = 1;
    let json = 0;
    c.add(
        "anthropic",
        &exchange(
            0,
            0,
            json,
            0,
            0,
            &fixture("anthropic_request.json"),
            &fixture("anthropic_response.json"),
        ),
    );
    c.add(
        "anthropic-stream-gzip",
        &exchange(
            0,
            0,
            sse,
            one(0),
            0,
            &fixture("anthropic_request.json"),
            &fixture("anthropic_stream.sse"),
        ),
    );
    c.add(
        "anthropic-br-as-sent",
        &exchange(
            0,
            0,
            json,
            one(4),
            2,
            &fixture("anthropic_request.json"),
            &fixture("anthropic_response.json.br"),
        ),
    );
    c.add(
        "anthropic-zstd-as-sent",
        &exchange(
            0,
            0,
            json,
            one(5),
            2,
            &fixture("anthropic_request.json"),
            &fixture("anthropic_response.json.zst"),
        ),
    );
    c.add(
        "openai-chat",
        &exchange(
            1,
            0,
            json,
            one(2),
            0,
            &fixture("openai_chat_request.json"),
            &fixture("openai_chat_response.json"),
        ),
    );
    c.add(
        "openai-chat-n2-stream",
        &exchange(
            1,
            0,
            sse,
            0,
            0,
            &fixture("openai_chat_request.json"),
            &fixture("openai_chat_n2_stream.sse"),
        ),
    );
    c.add(
        "openai-responses",
        &exchange(
            2,
            0,
            json,
            one(3),
            0,
            &fixture("openai_responses_request.json"),
            &fixture("openai_responses_response.json"),
        ),
    );
    c.add(
        "openai-responses-stream",
        &exchange(
            3,
            0,
            sse,
            0,
            0,
            &fixture("openai_responses_request.json"),
            &fixture("openai_responses_stream.sse"),
        ),
    );
    c.add(
        "gemini",
        &exchange(
            4,
            0,
            json,
            0,
            0,
            &fixture("gemini_request.json"),
            &fixture("gemini_response.json"),
        ),
    );
    c.add(
        "gemini-array-stream",
        &exchange(
            5,
            0,
            json,
            0,
            0,
            &fixture("gemini_request.json"),
            &fixture("gemini_stream_array.json"),
        ),
    );
    c.add(
        "gemini-sse-stacked",
        // gzip, then zstd.
        &exchange(
            6,
            0,
            sse,
            codings(&[0, 5]),
            0,
            &fixture("gemini_request.json"),
            &fixture("gemini_stream.sse"),
        ),
    );
    c.add(
        "anthropic-error",
        &exchange(
            0,
            5,
            json,
            0,
            0,
            &fixture("anthropic_request.json"),
            br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
        ),
    );
    c.add(
        "mcp-call",
        &exchange(
            7,
            0,
            sse,
            0,
            16,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"q":"x"}}}"#,
            b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"ok\"}]}}\n\n",
        ),
    );
    c.add(
        "mcp-batch-cut",
        &exchange(
            7,
            0,
            json,
            0,
            4,
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":2,"meth"#,
            br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"search"}]}}"#,
        ),
    );
}

async fn http_and_verify() {
    let http = Corpus::new("http_framing");
    let verify = Corpus::new("verify");
    let (dir, ledger) = scratch_ledger("seeds");
    let policy = policy();

    let anthropic_request = fixture("anthropic_request.json");
    let post = |target: &str, body: &[u8]| {
        let mut r = format!(
            "POST {target} HTTP/1.1\r\nHost: api.example.test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nx-api-key: sk-secret\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    let sse_answer = {
        let stream = fixture("anthropic_stream.sse");
        let mut r = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for piece in stream.chunks(700) {
            r.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            r.extend_from_slice(piece);
            r.extend_from_slice(b"\r\n");
        }
        r.extend_from_slice(b"0\r\n\r\n");
        r
    };
    let json_answer = {
        let body = fixture("openai_chat_response.json");
        let mut r = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(&body);
        r
    };
    let mut ws_client = b"GET /v1/realtime HTTP/1.1\r\nHost: api.example.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n".to_vec();
    ws_client.extend(frame(true, 1, KEY, br#"{"type":"session.update"}"#));
    ws_client.extend(deflated(&["compressed hello", "compressed hello"], KEY));
    ws_client.extend(frame(true, 8, KEY, &1000u16.to_be_bytes()));
    let mut ws_server = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n\r\n".to_vec();
    ws_server.extend(frame(true, 1, None, br#"{"type":"session.created"}"#));
    ws_server.extend(frame(true, 8, None, &1000u16.to_be_bytes()));
    let chunked_request = b"POST /mcp HTTP/1.1\r\nHost: mcp.example.test\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n1e\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"metho\r\n1c\r\nd\":\"tools/list\",\"params\":{}}\r\n0\r\nx-trailer: yes\r\n\r\n".to_vec();
    let mcp_answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nmcp-session-id: s-1\r\ncontent-length: 61\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"find\"}]}}".to_vec();
    let h2: &[u8] = b"POST /v1/messages\ncontent-type: application/json\nx-api-key: sk-secret\n\n{\"model\":\"claude-x\",\"max_tokens\":5,\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    let h2_sse = fixture("anthropic_stream.sse");
    let anthropic_post = post("/v1/messages", &anthropic_request);
    let two_posts = [
        post("/v1/chat/completions", b"{}"),
        post("/v1/chat/completions", b"{}"),
    ]
    .concat();
    let two_answers = [json_answer.clone(), json_answer.clone()].concat();

    let conns: Vec<(&str, Connection)> = vec![
        (
            "get",
            Connection {
                h2: false,
                client: b"GET /v1/models?key=AIza-secret&x=1 HTTP/1.1\r\nHost: api.example.test\r\nAuthorization: Bearer sk-x\r\n\r\n",
                upstream: b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
                sse: false,
            },
        ),
        (
            "anthropic-sse-chunked",
            Connection {
                h2: false,
                client: &anthropic_post,
                upstream: &sse_answer,
                sse: false,
            },
        ),
        (
            "openai-keepalive-two",
            Connection {
                h2: false,
                client: &two_posts,
                upstream: &two_answers,
                sse: false,
            },
        ),
        (
            "denied-host",
            Connection {
                h2: false,
                client: b"GET / HTTP/1.1\r\nHost: denied.example\r\nConnection: close\r\n\r\n",
                upstream: b"",
                sse: false,
            },
        ),
        (
            "mcp-chunked-trailers",
            Connection {
                h2: false,
                client: &chunked_request,
                upstream: &mcp_answer,
                sse: false,
            },
        ),
        (
            "websocket-deflate",
            Connection {
                h2: false,
                client: &ws_client,
                upstream: &ws_server,
                sse: false,
            },
        ),
        (
            "h2-anthropic-sse",
            Connection {
                h2: true,
                client: h2,
                upstream: &h2_sse,
                sse: true,
            },
        ),
    ];
    for (name, conn) in &conns {
        http.add(name, &conn.to_bytes());
        let served = serve(&ledger, policy.clone(), conn).await;
        if served.to_client.is_empty() {
            eprintln!(
                "warning: seed {name}: the agent got nothing back; recorded:\n{}",
                String::from_utf8_lossy(&std::fs::read(&served.session).unwrap())
            );
        }
        // The recorded session, with a spec asking for each checkpoint the writer made.
        let session = std::fs::read(&served.session).unwrap();
        let mut specs = Vec::new();
        let cps = dir.join("checkpoints").join(served.id.to_string());
        let mut names: Vec<_> = std::fs::read_dir(&cps)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        names.sort();
        for p in names {
            let size: u64 = p.file_stem().unwrap().to_str().unwrap().parse().unwrap();
            specs.extend_from_slice(&[u8::try_from(size).expect("a small session"), 0]);
        }
        let mut seed = session.clone();
        seed.push(0);
        seed.extend_from_slice(&specs);
        verify.add(name, &seed);
        eprintln!(
            "{name}: {} bytes to the agent, {} to the destination, session of {} bytes",
            served.to_client.len(),
            served.to_upstream.len(),
            session.len()
        );
        if *name == "anthropic-sse-chunked" {
            // Unclosed (no session_close) and torn: what recovery meets after a crash.
            let lines: Vec<&[u8]> = session.split_inclusive(|b| *b == b'\n').collect();
            let open = lines[..lines.len() - 1].concat();
            verify.add("unclosed", &open);
            let mut torn = open.clone();
            torn.extend_from_slice(&lines[lines.len() - 1][..40]);
            verify.add("torn", &torn);
        }
        clear_session(&dir, &served.id);
    }
    let mut f = std::fs::File::create(verify.dir.join("seed-garbage")).unwrap();
    f.write_all(b"{\"v\":1}\nnot an entry\n\x00\x02\x03-- bad note\n")
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
