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
use crate::session::Session;
use base64::Engine as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tracing::warn;

/// How long an upstream resolver gets to answer before the process is told SERVFAIL.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves one of a session's resolver sockets (inside its network namespace) until the session
/// closes.
pub(crate) async fn serve(engine: Arc<Inner>, session: Arc<Session>, socket: Arc<UdpSocket>) {
    let netns = session.netns.cookie();
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
        let Some(sender) = engine.hook.dns_sender(peer, netns) else {
            warn!("DNS datagram from {peer} without a recorded sender: dropped");
            continue;
        };
        if sender.cgroup_id != session.cgroup.id() {
            continue;
        }
        let session = session.clone();
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
            let trusted = engine.trusted_resolvers.contains(&upstream);
            let refusal = match &parsed {
                // Only DNS goes out on port 53: anything else would be a tunnel.
                Err(e) => Some(format!("not a DNS query ({e}): not forwarded")),
                Ok(_) => engine
                    .policy
                    .current()
                    .decide_name(&qname, None)
                    .filter(|d| d.action == Action::Deny)
                    .map(|d| d.reason)
                    .or_else(|| refuse_resolver(&engine, upstream, trusted)),
            };
            let (reply, answer) = if let Some(reason) = refusal {
                let reply = dns::refused(&query);
                let answer = DnsAnswer {
                    exchange,
                    rcode: Some("REFUSED".into()),
                    answers: Vec::new(),
                    message_b64: Some(b64(&reply)),
                    error: Some(reason),
                };
                (reply, answer)
            } else {
                match ask_upstream(upstream, &query).await {
                    Ok(reply) => {
                        let answer = match dns::parse_answer(&reply) {
                            Ok(a) => {
                                // What a resolver the agent chose says proves nothing: it must
                                // never unlock an address for a host rule.
                                if trusted {
                                    learn(&engine, &qname, &a);
                                }
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

/// Why a question may not go to `upstream`, the server the process addressed, when it is not
/// one of the resolvers the engine trusts (the host's, or `--dns-upstream`): such a server is
/// a destination like any other, and the policy decides on it (port 53).
fn refuse_resolver(engine: &Inner, upstream: SocketAddr, trusted: bool) -> Option<String> {
    if trusted {
        return None;
    }
    if crate::netns::reach(upstream.ip()) != crate::netns::Reach::Outside {
        return Some(format!(
            "resolver {upstream} is on this host but not one it uses (/etc/resolv.conf): not forwarded"
        ));
    }
    let decision = engine.policy.current().decide(upstream, None);
    (decision.action == Action::Deny).then(|| format!("resolver {upstream}: {}", decision.reason))
}

/// The resolvers the host itself uses (`nameserver` lines of `/etc/resolv.conf`, port 53):
/// questions to them are forwarded, and their answers teach host rules their addresses.
pub fn host_resolvers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        .filter_map(|addr| addr.split('%').next()?.parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
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
        // Decided under the hook's lock, by the policy in force then (see `Hook::reload`).
        let decide = |name: &str, addrs: &[std::net::IpAddr]| {
            engine.policy.current().learned_for(name, addrs)
        };
        if let Err(e) = engine.hook.learn(&name, &addrs, decide) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_resolvers_are_read_from_resolv_conf() {
        let conf = "# comment\nnameserver 127.0.0.53\nsearch example\nnameserver fe80::1%eth0\nnameserver  ::1 \noptions edns0\n";
        assert_eq!(
            host_resolvers(conf),
            vec![
                "127.0.0.53:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
    }
}
