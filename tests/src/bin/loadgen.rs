//! `loadgen`: the benchmark's HTTPS client. Runs the same way directly and inside `harness run`
//! (where it trusts the harness CA through `SSL_CERT_FILE`), and prints one JSON line of figures.
//!
//! `loadgen json URL CONNECT CONCURRENCY REQUESTS` — small JSON POSTs over keep-alive HTTP/1.1
//! connections, one per worker; `loadgen sse URL CONNECT ROUNDS` — time to the first byte of an
//! SSE stream, each round on a new connection.
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
        "usage: loadgen json URL CONNECT CONCURRENCY REQUESTS | loadgen sse URL CONNECT ROUNDS"
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

async fn connect(config: &Arc<rustls::ClientConfig>, host: &str, addr: SocketAddr) -> Sender {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
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
                    let mut sender = connect(&config, &host, addr).await;
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
            for _ in 0..rounds.parse::<usize>().expect("ROUNDS") {
                let mut sender = connect(&config, &host, addr).await;
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
        _ => usage(),
    }
}
