//! Test helpers shared by the tls module's tests: a throw-away CA, a client trusting only it,
//! and a TLS server on 127.0.0.1 that uses [`SniResolver`](super::SniResolver).
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{HarnessCa, LeafMinter};
use crate::tls::leaf::ServerConfigs;

/// A fresh directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "harness-tls-{tag}-{}-{}",
        std::process::id(),
        ulid::Ulid::new()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A CA created in a fresh temp dir (returned so the test can clean it up).
pub fn test_ca(tag: &str) -> (HarnessCa, PathBuf) {
    let dir = temp_dir(tag);
    (HarnessCa::load_or_create(&dir.join("ca")).unwrap(), dir)
}

/// Roots holding only `ca`.
pub fn roots(ca: &HarnessCa) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.certificate_der().clone()).unwrap();
    Arc::new(roots)
}

/// A rustls client (ring provider) trusting only `ca`, offering `alpn`.
pub fn client_config(ca: &HarnessCa, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(ca))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS server on 127.0.0.1 building one `ServerConfig` per connection, as the proxy will.
/// Each connection gets: the negotiated ALPN protocol (or "none"), then the SNI (or "no-sni"),
/// one line, then close.
pub async fn serve(minter: Arc<LeafMinter>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let configs = ServerConfigs::new(minter).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            // The proxy passes the connection's original destination; here that is our address.
            let config = configs.for_connection(tcp.local_addr().unwrap().ip());
            tokio::spawn(async move {
                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let (_, conn) = tls.get_ref();
                let alpn = conn
                    .alpn_protocol()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .unwrap_or_else(|| "none".into());
                let sni = conn.server_name().unwrap_or("no-sni").to_owned();
                let _ = tls.write_all(format!("{alpn} {sni}\n").as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

/// Connects to `addr` as `name` with `config`; returns (negotiated ALPN, what the server said).
pub async fn fetch(
    addr: SocketAddr,
    name: ServerName<'static>,
    config: Arc<ClientConfig>,
) -> Result<(Option<Vec<u8>>, String), std::io::Error> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let mut tls = connector.connect(name, tcp).await?;
    let alpn = tls.get_ref().1.alpn_protocol().map(|p| p.to_vec());
    let mut said = String::new();
    tls.read_to_string(&mut said).await?;
    Ok((alpn, said))
}
