//! The TLS stage: read the client's ClientHello, apply policy to its SNI, open TLS to the real
//! destination with the same SNI and ALPN offer, then finish the client's handshake with a leaf
//! from the harness CA, offering exactly the protocol the destination chose — so both sides
//! speak the same HTTP version and the HTTP stage can forward exchange by exchange.
use crate::http::{self, Version};
use crate::ledger::{ConnDenied, Entry, TlsFailure, TlsIntercepted, TlsSide};
use crate::limits::Limits;
use crate::policy::ConnPolicy;
use crate::record::{recording_relay, ConnRecorder};
use crate::sniff::{Destination, Kind, Sniffed};
use crate::tls::ending::Ending;
use crate::tls::{provider, ServerConfigs};
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// Errors setting up interception (at engine start).
#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    /// A root certificate file could not be read or parsed.
    #[error("{path}: {reason}")]
    Roots {
        /// The PEM file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The CA or leaf machinery failed.
    #[error(transparent)]
    Leaf(#[from] crate::tls::LeafError),
}

/// Where the system's trusted roots live on Debian-like hosts.
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Everything the TLS stage needs, built once per engine.
pub struct Interceptor {
    server_configs: ServerConfigs,
    roots: Arc<rustls::RootCertStore>,
}

impl Interceptor {
    /// Leaves from `server_configs`; upstream certificates verified against the system roots
    /// plus every certificate in `extra_roots` (`--upstream-ca`).
    pub fn new(
        server_configs: ServerConfigs,
        extra_roots: &[PathBuf],
    ) -> Result<Interceptor, InterceptError> {
        let mut roots = rustls::RootCertStore::empty();
        if Path::new(SYSTEM_ROOTS).exists() {
            for cert in read_pem_certs(Path::new(SYSTEM_ROOTS))? {
                // A malformed system root is skipped, not fatal: the others still verify.
                let _ = roots.add(cert);
            }
        }
        for path in extra_roots {
            let certs = read_pem_certs(path)?;
            if certs.is_empty() {
                return Err(InterceptError::Roots {
                    path: path.clone(),
                    reason: "no certificate in the file".into(),
                });
            }
            for cert in certs {
                roots.add(cert).map_err(|e| InterceptError::Roots {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            }
        }
        Ok(Interceptor {
            server_configs,
            roots: Arc::new(roots),
        })
    }

    fn client_config(&self, alpn: Vec<Vec<u8>>) -> Result<rustls::ClientConfig, rustls::Error> {
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = alpn;
        Ok(config)
    }
}

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, InterceptError> {
    use rustls::pki_types::pem::PemObject as _;
    let err = |reason: String| InterceptError::Roots {
        path: path.to_owned(),
        reason,
    };
    CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))
}

/// What the client's ClientHello said, for policy and the ledger.
#[derive(Debug, Clone)]
pub struct Hello {
    /// The server name, if the client sent one.
    pub sni: Option<String>,
}

/// Serves one TLS connection: handshake both ways, then HTTP (or recorded bytes). `policy` is
/// asked about the SNI before anything goes upstream (a deny is recorded and closes the
/// connection), and then about each HTTP request's host.
pub async fn serve<C, Fut>(
    interceptor: &Interceptor,
    client: C,
    policy: ConnPolicy,
    destination: Destination<tokio::net::TcpStream, Fut>,
    rec: ConnRecorder,
    limits: &Limits,
) -> Result<(), String>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Fut: std::future::Future<Output = std::io::Result<tokio::net::TcpStream>>,
{
    let acceptor =
        tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), client);
    let start = Limits::within(
        limits.handshake,
        "handshake_seconds",
        "the client sent no complete TLS ClientHello",
        acceptor,
    )
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("reading the client's TLS hello: {e}"))?;
    let hello = start.client_hello();
    let info = Hello {
        sni: hello.server_name().map(str::to_owned),
    };
    let offered: Vec<Vec<u8>> = hello
        .alpn()
        .map(|protos| {
            protos
                .filter(|p| *p == b"h2" || *p == b"http/1.1")
                .map(<[u8]>::to_vec)
                .collect()
        })
        .unwrap_or_default();
    let dst = policy.dst();
    let policy = match info.sni.as_deref() {
        Some(sni) => policy.with_name(sni),
        None => policy,
    };
    let denied = info
        .sni
        .as_deref()
        .and_then(|sni| policy.check(sni).err().map(|d| (sni, d)));
    if let Some((sni, denied)) = denied {
        let reason = format!("TLS server name {sni}: {}", denied.reason);
        let _ = rec
            .append(Entry::ConnDenied(ConnDenied {
                conn: Some(rec.conn()),
                proto: "tcp".into(),
                dst: Some(dst),
                host: info.sni.clone(),
                caller: None,
                by: "daemon".into(),
                reason: reason.clone(),
                rule: denied.rule,
            }))
            .await;
        return Err(reason);
    }

    let server_name: ServerName<'static> = match &info.sni {
        Some(name) => ServerName::try_from(name.clone())
            .map_err(|e| format!("client SNI {name:?} is not a valid server name: {e}"))?,
        None => ServerName::IpAddress(dst.ip().into()),
    };
    let upstream_config = interceptor
        .client_config(offered)
        .map_err(|e| format!("upstream TLS configuration: {e}"))?;
    let tcp = match destination {
        Destination::Connected(tcp) => tcp,
        Destination::Connect(connect) => connect
            .await
            .map_err(|e| format!("connecting to {dst}: {e}"))?,
    };
    let handshake = Limits::within(
        limits.handshake,
        "handshake_seconds",
        "the destination finished no TLS handshake",
        tokio_rustls::TlsConnector::from(Arc::new(upstream_config)).connect(server_name, tcp),
    );
    let upstream = match handshake.await {
        Ok(Ok(tls)) => tls,
        Err(timed_out) => {
            let reason = format!("upstream TLS handshake with {dst}: {timed_out}");
            record_failure(&rec, TlsSide::Upstream, &info, &reason).await;
            return Err(reason);
        }
        Ok(Err(e)) => {
            let reason = format!("upstream TLS handshake with {dst}: {e}");
            record_failure(&rec, TlsSide::Upstream, &info, &reason).await;
            return Err(reason);
        }
    };
    let chosen = upstream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let upstream = Ending::upstream(upstream, rec.tls_ends());

    let mut server_config = (*interceptor.server_configs.for_connection(dst.ip())).clone();
    server_config.alpn_protocols = chosen.iter().cloned().collect();
    let handshake = Limits::within(
        limits.handshake,
        "handshake_seconds",
        "the client finished no TLS handshake",
        start.into_stream(Arc::new(server_config)),
    );
    let client = match handshake.await {
        Ok(Ok(tls)) => Ending::client(tls, rec.tls_ends()),
        Err(timed_out) => {
            let reason = format!("client TLS handshake: {timed_out}");
            record_failure(&rec, TlsSide::Client, &info, &reason).await;
            return Err(reason);
        }
        Ok(Err(e)) => {
            // Pinning clients and clients that do not trust the harness CA end here: recorded,
            // never passed through unrecorded.
            let reason = format!("client refused the harness certificate or handshake: {e}");
            record_failure(&rec, TlsSide::Client, &info, &reason).await;
            return Err(reason);
        }
    };
    // What both handshakes agreed, queued before the first exchange's entries (and committed
    // with them: no fsync of its own).
    let agreed = Entry::TlsIntercepted(TlsIntercepted {
        conn: rec.conn(),
        sni: info.sni.clone(),
        alpn: chosen
            .as_deref()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
        client_version: tls_version(client.get_ref().get_ref().1.protocol_version()),
        upstream_version: tls_version(upstream.get_ref().get_ref().1.protocol_version()),
    });
    rec.queue_lazy(agreed);
    match chosen.as_deref() {
        Some(b"h2") => http::serve(
            client,
            upstream,
            Version::Http2,
            "https",
            policy,
            rec,
            limits,
        )
        .await
        .map_err(|e| e.to_string()),
        Some(b"http/1.1") => http::serve(
            client,
            upstream,
            Version::Http1,
            "https",
            policy,
            rec,
            limits,
        )
        .await
        .map_err(|e| e.to_string()),
        _ => {
            // No ALPN: HTTP/1 if it looks like it, else recorded bytes (and a server that
            // speaks first, as IMAPS or SMTPS do, is heard first).
            type Never = std::future::Pending<
                std::io::Result<Ending<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>,
            >;
            let destination: Destination<_, Never> = Destination::Connected(upstream);
            match crate::sniff::sniff(client, destination, limits.handshake).await {
                Ok(Sniffed::Client {
                    kind: Kind::Http1,
                    client,
                    upstream: Some(upstream),
                }) => http::serve(
                    client,
                    upstream,
                    Version::Http1,
                    "https",
                    policy,
                    rec,
                    limits,
                )
                .await
                .map_err(|e| e.to_string()),
                Ok(Sniffed::Client {
                    client,
                    upstream: Some(upstream),
                    ..
                }) => recording_relay(client, upstream, &rec).await,
                Ok(Sniffed::Client { upstream: None, .. }) => {
                    unreachable!("a connected destination comes back")
                }
                Ok(Sniffed::Server { client, upstream }) => {
                    recording_relay(client, upstream, &rec).await
                }
                Err(e) => Err(e.to_string()),
            }
        }
    }
}

/// `TLSv1.3`, `TLSv1.2`, … as the ledger writes a TLS version.
fn tls_version(version: Option<rustls::ProtocolVersion>) -> String {
    match version {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".into(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".into(),
        Some(other) => format!("{other:?}"),
        None => "unknown".into(),
    }
}

async fn record_failure(rec: &ConnRecorder, side: TlsSide, hello: &Hello, reason: &str) {
    let _ = rec
        .append(Entry::TlsFailure(TlsFailure {
            conn: rec.conn(),
            side,
            sni: hello.sni.clone(),
            reason: reason.to_owned(),
        }))
        .await;
}
