//! `loadgen`: the benchmark's HTTP client. Runs the same way directly and inside `harness run`
//! (where it trusts the harness CA through `SSL_CERT_FILE`), and prints one JSON line of figures.
//! An `https://` URL is spoken over TLS, an `http://` one in the clear.
//!
//! `loadgen json URL CONNECT CONCURRENCY REQUESTS` — small JSON POSTs over keep-alive HTTP/1.1
//! connections, one per worker; `loadgen sse URL CONNECT ROUNDS` — time to the first byte of an
//! SSE stream, each round on a new connection; `loadgen events URL CONNECT ROUNDS` — a stream
//! of events stamped with the time the peer sent each (`GET /stamped/N`), one per round on a new
//! connection: how long after it was sent each event arrived, and the spacing between events;
//! `loadgen hold URL CONNECT CONNECTIONS BYTES` — that many connections opened and kept open
//! (one request each), then BYTES downloaded over one more (`GET /bytes/BYTES`).
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{pem::PemObject as _, CertificateDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

fn usage() -> ! {
    eprintln!(
        "usage: loadgen json URL CONNECT CONCURRENCY REQUESTS | loadgen sse URL CONNECT ROUNDS \
         | loadgen events URL CONNECT ROUNDS | loadgen hold URL CONNECT CONNECTIONS BYTES"
    );
    std::process::exit(2)
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    let roots_file = std::env::var("SSL_CERT_FILE").unwrap_or_else(|_| usage());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&roots_file).expect("reading SSL_CERT_FILE") {
        let _ = roots.add(cert.expect("a PEM certificate"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// One keep-alive HTTP/1.1 connection to `addr`: over TLS for `host` when `tls` is given.
async fn connect(tls: Option<&Arc<rustls::ClientConfig>>, host: &str, addr: SocketAddr) -> Sender {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let Some(config) = tls else {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("HTTP handshake");
        tokio::spawn(conn);
        return sender;
    };
    let name = ServerName::try_from(host.to_owned()).expect("server name");
    let tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP handshake");
    tokio::spawn(conn);
    sender
}

fn request(
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> http::Request<Full<Bytes>> {
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Full::new(Bytes::from(body.to_owned())))
        .expect("request")
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = tls_config();
    let tls = |url: &str| url.starts_with("https:").then_some(config.clone());
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["json", url, addr, concurrency, requests] => {
            let uri: http::Uri = url.parse().expect("URL");
            let host = uri.host().expect("host").to_owned();
            let authority = uri.authority().expect("authority").to_string();
            let path = uri.path().to_owned();
            let addr: SocketAddr = addr.parse().expect("CONNECT");
            let concurrency: usize = concurrency.parse().expect("CONCURRENCY");
            let per_worker: usize = requests.parse::<usize>().expect("REQUESTS") / concurrency;
            let config = tls(url);
            let started = Instant::now();
            let mut workers = Vec::new();
            for _ in 0..concurrency {
                let (config, host, authority, path) = (
                    config.clone(),
                    host.clone(),
                    authority.clone(),
                    path.clone(),
                );
                workers.push(tokio::spawn(async move {
                    let mut sender = connect(config.as_ref(), &host, addr).await;
                    let mut latencies = Vec::with_capacity(per_worker);
                    for i in 0..per_worker {
                        let body = format!(r#"{{"symbol":"ACME","qty":{i},"side":"buy"}}"#);
                        let req = request(
                            "POST",
                            &authority,
                            &path,
                            &[("authorization", "Bearer bench")],
                            &body,
                        );
                        let t = Instant::now();
                        sender.ready().await.expect("ready");
                        let resp = sender.send_request(req).await.expect("response");
                        let _ = resp.into_body().collect().await.expect("body");
                        latencies.push(t.elapsed());
                    }
                    latencies
                }));
            }
            let mut all = Vec::new();
            for w in workers {
                all.extend(w.await.expect("worker"));
            }
            let seconds = started.elapsed().as_secs_f64();
            all.sort();
            println!(
                "{{\"requests\":{},\"seconds\":{seconds:.3},\"rps\":{:.1},\"p50_ms\":{:.3},\"p99_ms\":{:.3}}}",
                all.len(),
                all.len() as f64 / seconds,
                percentile(&all, 0.50),
                percentile(&all, 0.99)
            );
        }
        ["sse", url, addr, rounds] => {
            let uri: http::Uri = url.parse().expect("URL");
            let host = uri.host().expect("host").to_owned();
            let authority = uri.authority().expect("authority").to_string();
            let addr: SocketAddr = addr.parse().expect("CONNECT");
            let body = r#"{"model":"m","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
            let mut firsts = Vec::new();
            let config = tls(url);
            for _ in 0..rounds.parse::<usize>().expect("ROUNDS") {
                let mut sender = connect(config.as_ref(), &host, addr).await;
                let req = request(
                    "POST",
                    &authority,
                    uri.path(),
                    &[("x-api-key", "bench")],
                    body,
                );
                let t = Instant::now();
                let resp = sender.send_request(req).await.expect("response");
                let mut body = resp.into_body();
                let first = body.frame().await;
                firsts.push(t.elapsed());
                assert!(first.is_some(), "an SSE stream with no event");
                while body.frame().await.is_some() {}
            }
            firsts.sort();
            println!(
                "{{\"rounds\":{},\"ttfb_p50_ms\":{:.3},\"ttfb_p99_ms\":{:.3}}}",
                firsts.len(),
                percentile(&firsts, 0.50),
                percentile(&firsts, 0.99)
            );
        }
        ["events", url, addr, rounds] => {
            let uri: http::Uri = url.parse().expect("URL");
            let host = uri.host().expect("host").to_owned();
            let authority = uri.authority().expect("authority").to_string();
            let addr: SocketAddr = addr.parse().expect("CONNECT");
            let config = tls(url);
            let (mut latencies, mut gaps) = (Vec::new(), Vec::new());
            for _ in 0..rounds.parse::<usize>().expect("ROUNDS") {
                let mut sender = connect(config.as_ref(), &host, addr).await;
                let req = http::Request::get(uri.path())
                    .header("host", authority.as_str())
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                let resp = sender.send_request(req).await.expect("response");
                let mut body = resp.into_body();
                let mut pending = Vec::new();
                let mut last: Option<Instant> = None;
                while let Some(frame) = body.frame().await {
                    let Ok(data) = frame.expect("event").into_data() else {
                        continue;
                    };
                    let arrived = now_ns();
                    let at = Instant::now();
                    pending.extend_from_slice(&data);
                    // Each complete event: `data: {"sent_ns":T}` and a blank line.
                    while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
                        let event: Vec<u8> = pending.drain(..end + 2).collect();
                        let text = String::from_utf8_lossy(&event);
                        let sent: u128 = text
                            .split("\"sent_ns\":")
                            .nth(1)
                            .and_then(|t| t.trim_end_matches(['}', '\n']).parse().ok())
                            .expect("a stamped event");
                        latencies.push(Duration::from_nanos(arrived.saturating_sub(sent) as u64));
                        if let Some(last) = last {
                            gaps.push(at - last);
                        }
                        last = Some(at);
                    }
                }
            }
            latencies.sort();
            gaps.sort();
            println!(
                "{{\"events\":{},\"latency_p50_ms\":{:.3},\"latency_p99_ms\":{:.3},\"gap_p50_ms\":{:.3},\"gap_p99_ms\":{:.3}}}",
                latencies.len(),
                percentile(&latencies, 0.50),
                percentile(&latencies, 0.99),
                percentile(&gaps, 0.50),
                percentile(&gaps, 0.99)
            );
        }
        ["hold", url, addr, connections, bytes] => {
            let uri: http::Uri = url.parse().expect("URL");
            let host = uri.host().expect("host").to_owned();
            let authority = uri.authority().expect("authority").to_string();
            let addr: SocketAddr = addr.parse().expect("CONNECT");
            let config = tls(url);
            raise_nofile();
            let get = |path: &str| {
                http::Request::get(path)
                    .header("host", authority.as_str())
                    .body(Full::new(Bytes::new()))
                    .expect("request")
            };
            let mut held = Vec::new();
            for _ in 0..connections.parse::<usize>().expect("CONNECTIONS") {
                let mut sender = connect(config.as_ref(), &host, addr).await;
                let resp = sender.send_request(get("/health")).await.expect("response");
                let _ = resp.into_body().collect().await.expect("body");
                held.push(sender);
            }
            let started = Instant::now();
            let mut sender = connect(config.as_ref(), &host, addr).await;
            let resp = sender
                .send_request(get(&format!("/bytes/{bytes}")))
                .await
                .expect("response");
            let mut body = resp.into_body();
            let mut received = 0u64;
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.expect("body").into_data() {
                    received += data.len() as u64;
                }
            }
            // Every held connection still answers: none was dropped to save memory.
            for sender in &mut held {
                let resp = sender.send_request(get("/health")).await.expect("response");
                let _ = resp.into_body().collect().await.expect("body");
            }
            println!(
                "{{\"held\":{},\"received\":{received},\"seconds\":{:.3}}}",
                held.len(),
                started.elapsed().as_secs_f64()
            );
        }
        _ => usage(),
    }
}

/// Wall-clock nanoseconds (the clock the peer stamps events with, on the same machine).
fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// Soft descriptor limit up to the hard one, for holding many connections.
fn raise_nofile() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read only the struct passed by reference.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
