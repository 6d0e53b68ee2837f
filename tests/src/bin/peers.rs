//! `peers`: runs the test peers (mock LLM providers, MCP server, brokerage API) until killed,
//! for the demo and the tests. Standing for the outside world, it runs inside a test network
//! namespace (`harness_tests::world::command`, or `ip netns exec` in the demo) and listens on
//! that namespace's addresses; as an agent's own MCP server, inside an enclosure, on loopback.
//! Prints one JSON line when ready:
//! `{"ca": "DIR/ca.pem", "peers": [{"addr": …, "names": […], "url": …, "cert": …}]}`.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use harness_tests::peers::{Fail, FailRule, Peer, Reply, TestCa, Upstream};
use serde_json::json;

const USAGE: &str = "\
usage: peers --ca-dir DIR [--listen ADDR]... [--name NAME]... [options]

Starts one test peer per --listen address (default 127.0.0.1:0), each serving every route
over TLS with a certificate, signed by a fresh test CA in DIR, for all --name values and its
own IP. Prints one JSON line with the addresses and the CA path, then runs until killed.

options:
  --ca-dir DIR             where the CA (ca.pem) and server certificates are written
  --listen ADDR            address to listen on (repeatable), e.g. 198.18.7.2:443 in a test
                           network namespace, 127.0.0.3:8443 inside an enclosure
  --name NAME              DNS name for the certificates (repeatable)
  --plaintext              plain HTTP instead of TLS
  --http1-only             offer only http/1.1 in ALPN
  --event-delay MS         spacing between SSE events (default 10)
  --fail SPEC              fail requests: status=N, reset, slow[=MS], hang-then-close[=MS]
  --fail-path PREFIX       only requests whose path starts with PREFIX
  --fail-times N           only the next N matching requests
  --reply JSON             the models' answer (a Reply: texts, thinking, tool_calls…)
  --reply-after-tool JSON  the answer once the last message carries a tool result
  --mcp-sse                MCP answers as text/event-stream when the client accepts both
  --broker-url URL         base URL the MCP tools call (default: the first peer itself)
  --broker-addr ADDR       address to connect to for it (default: resolve the URL's host)
  --broker-token TOKEN     bearer token for it (default: peer-broker-token)
  --trust PEM              extra roots for the MCP tools' own calls (repeatable)
";

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut ca_dir: Option<PathBuf> = None;
    let mut listen: Vec<SocketAddr> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut plaintext = false;
    let mut http1_only = false;
    let mut event_delay: Option<Duration> = None;
    let mut fail: Option<Fail> = None;
    let mut fail_path: Option<String> = None;
    let mut fail_times: Option<u64> = None;
    let mut reply: Option<Reply> = None;
    let mut after_tool: Option<Reply> = None;
    let mut mcp_sse = false;
    let mut broker_url: Option<String> = None;
    let mut broker_addr: Option<SocketAddr> = None;
    let mut broker_token = "peer-broker-token".to_string();
    let mut trust: Vec<PathBuf> = Vec::new();

    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(());
            }
            "--ca-dir" => ca_dir = Some(value()?.into()),
            "--listen" => listen.push(value()?.parse().context("--listen")?),
            "--name" => names.push(value()?),
            "--plaintext" => plaintext = true,
            "--http1-only" => http1_only = true,
            "--event-delay" => {
                event_delay = Some(Duration::from_millis(
                    value()?.parse().context("--event-delay")?,
                ))
            }
            "--fail" => fail = Some(value()?.parse().map_err(anyhow::Error::msg)?),
            "--fail-path" => fail_path = Some(value()?),
            "--fail-times" => fail_times = Some(value()?.parse().context("--fail-times")?),
            "--reply" => reply = Some(serde_json::from_str(&value()?).context("--reply")?),
            "--reply-after-tool" => {
                after_tool = Some(serde_json::from_str(&value()?).context("--reply-after-tool")?)
            }
            "--mcp-sse" => mcp_sse = true,
            "--broker-url" => broker_url = Some(value()?),
            "--broker-addr" => broker_addr = Some(value()?.parse().context("--broker-addr")?),
            "--broker-token" => broker_token = value()?,
            "--trust" => trust.push(value()?.into()),
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    let Some(ca_dir) = ca_dir else {
        bail!("--ca-dir is required\n\n{USAGE}");
    };
    if listen.is_empty() {
        listen.push("127.0.0.1:0".parse()?);
    }

    let runtime = tokio::runtime::Runtime::new().context("starting tokio")?;
    runtime.block_on(async move {
        let ca = TestCa::create(&ca_dir).context("creating the test CA")?;
        let mut peers = Vec::new();
        for addr in &listen {
            let mut b = Peer::builder(&ca)
                .names(names.iter().cloned())
                .listen(*addr)
                .mcp_sse(mcp_sse);
            if plaintext {
                b = b.plaintext();
            }
            if http1_only {
                b = b.http1_only();
            }
            if let Some(d) = event_delay {
                b = b.event_delay(d);
            }
            if let Some(f) = fail {
                b = b.fail_rule(FailRule {
                    fail: f,
                    path_prefix: fail_path.clone(),
                    times: fail_times,
                });
            }
            if let Some(r) = &reply {
                b = b.reply(r.clone());
            }
            if let Some(r) = &after_tool {
                b = b.reply_after_tool(r.clone());
            }
            for t in &trust {
                b = b.trust(t.clone());
            }
            // By default the MCP tools of every peer call the first peer's brokerage API.
            let upstream = match (&broker_url, peers.first()) {
                (Some(url), _) => Some(Upstream {
                    base_url: url.clone(),
                    connect: broker_addr,
                    token: broker_token.clone(),
                }),
                (None, Some(first)) => {
                    let first: &Peer = first;
                    Some(Upstream {
                        base_url: first.url(""),
                        connect: Some(first.addr()),
                        token: broker_token.clone(),
                    })
                }
                (None, None) => None,
            };
            if let Some(u) = upstream {
                b = b.upstream(u);
            }
            let peer = b
                .start()
                .await
                .with_context(|| format!("starting a peer on {addr}"))?;
            peers.push(peer);
        }
        let line = json!({
            "ca": ca.cert_path(),
            "ca_dir": ca.dir(),
            "peers": peers.iter().map(|p| json!({
                "addr": p.addr(),
                "names": p.names(),
                "url": p.url(""),
                "cert": p.cert().map(|c| c.cert_path.clone()),
                "log": p.url("/__peer/log"),
            })).collect::<Vec<_>>(),
        });
        println!("{line}");
        use std::io::Write as _;
        std::io::stdout().flush().ok();
        std::future::pending::<()>().await;
        Ok(())
    })
}
