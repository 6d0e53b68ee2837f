//! The enclosure's DNS resolver: every UDP datagram to port 53 from an enclosed process lands
//! here (the kernel side rewrites it). Each question is recorded, checked against the policy's
//! host rules, forwarded to the server the process addressed (or the configured upstream), and
//! the answer is recorded before the process gets it. Addresses in answers teach the engine
//! which host names the process is about to connect to.
use crate::accept;
use crate::dns;
use crate::engine::Inner;
use crate::ledger::{DnsAnswer, DnsQuery, Entry};
use crate::policy::Action;
use base64::Engine as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tracing::warn;

/// How long an upstream resolver gets to answer before the process is told SERVFAIL.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves one of the resolver's sockets until the engine stops.
pub(crate) async fn serve(engine: Arc<Inner>, socket: Arc<UdpSocket>) {
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                warn!("DNS receive: {e}");
                continue;
            }
        };
        let query = buf[..n].to_vec();
        let Some(sender) = engine.hook.dns_sender(peer) else {
            warn!("DNS datagram from {peer} without a recorded sender: dropped");
            continue;
        };
        let Some(session) = engine.sessions.get(sender.cgroup_id) else {
            continue;
        };
        let engine = engine.clone();
        let socket = socket.clone();
        let tasks = session.tasks.clone();
        tasks.spawn(async move {
            let exchange = session.next_number();
            let server = accept::orig_socket_addr(&sender);
            let upstream = engine.config.dns_upstream.unwrap_or(server);
            let parsed = dns::parse_query(&query);
            let (qname, qtype) = match &parsed {
                Ok(q) => (q.qname.clone(), q.qtype.clone()),
                Err(e) => (String::new(), format!("unparsable: {e}")),
            };
            let recorded = session
                .writer
                .append(Entry::DnsQuery(DnsQuery {
                    exchange,
                    server: Some(server),
                    upstream,
                    caller: Some(accept::caller(&sender)),
                    qname: qname.clone(),
                    qtype,
                    message_b64: b64(&query),
                }))
                .await;
            if recorded.is_err() {
                // An unrecorded question is never forwarded; the process gets harness's own
                // SERVFAIL at once (it carries nothing from upstream) instead of a time-out.
                let _ = socket.send_to(&dns::servfail(&query), peer).await;
                return;
            }
            let denied = parsed
                .is_ok()
                .then(|| engine.config.policy.decide_name(&qname, None))
                .flatten()
                .filter(|d| d.action == Action::Deny);
            let (reply, answer) = if let Some(decision) = denied {
                let reply = dns::refused(&query);
                let answer = DnsAnswer {
                    exchange,
                    rcode: Some("REFUSED".into()),
                    answers: Vec::new(),
                    message_b64: Some(b64(&reply)),
                    error: Some(decision.reason),
                };
                (reply, answer)
            } else {
                match ask_upstream(upstream, &query).await {
                    Ok(reply) => {
                        let answer = match dns::parse_answer(&reply) {
                            Ok(a) => {
                                learn(&engine, &qname, &a);
                                DnsAnswer {
                                    exchange,
                                    rcode: Some(a.rcode.clone()),
                                    answers: a.records.clone(),
                                    message_b64: Some(b64(&reply)),
                                    error: None,
                                }
                            }
                            Err(e) => DnsAnswer {
                                exchange,
                                rcode: None,
                                answers: Vec::new(),
                                message_b64: Some(b64(&reply)),
                                error: Some(format!("answer not parsable: {e}")),
                            },
                        };
                        (reply, answer)
                    }
                    Err(e) => {
                        let reply = dns::servfail(&query);
                        let answer = DnsAnswer {
                            exchange,
                            rcode: Some("SERVFAIL".into()),
                            answers: Vec::new(),
                            message_b64: Some(b64(&reply)),
                            error: Some(format!("upstream {upstream}: {e}")),
                        };
                        (reply, answer)
                    }
                }
            };
            // Durable before the process sees a byte of it.
            if session
                .writer
                .append(Entry::DnsAnswer(answer))
                .await
                .is_ok()
            {
                let _ = socket.send_to(&reply, peer).await;
            }
        });
    }
}

/// Teaches the engine (names for the ledger and host rules) and the kernel (host-rule verdicts
/// per address) what the answer says. Only names on the CNAME chain from the question count:
/// an unrelated record smuggled into an answer is never credited to the name asked.
fn learn(engine: &Inner, qname: &str, answer: &dns::Answer) {
    for ip in answer.addresses_for(qname) {
        engine.names.learn(ip, qname);
    }
    for name in answer.chain() {
        let addrs = answer.addresses_for(&name);
        let entries = engine.config.policy.learned_for(&name, &addrs);
        if let Err(e) = engine.hook.learn(&entries) {
            warn!("teaching the kernel addresses of {name}: {e}");
        }
    }
}

async fn ask_upstream(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if upstream.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 65_535];
    let n = tokio::time::timeout(UPSTREAM_TIMEOUT, socket.recv(&mut buf))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer within 5 s"))??;
    buf.truncate(n);
    Ok(buf)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
