//! A small HTTPS client (hyper over tokio-rustls, ring): the MCP server uses it to call the
//! brokerage API, and tests use it as their HTTP/1.1 and h2 client.
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, HOST};
use hyper::{Request, StatusCode, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::Error;

/// An HTTPS client trusting exactly the roots it was given. One connection per request.
#[derive(Clone)]
pub struct Client {
    config: Arc<rustls::ClientConfig>,
}

/// A response whose body has not been read yet.
pub struct Response {
    /// Status.
    pub status: StatusCode,
    /// HTTP version spoken.
    pub version: Version,
    /// Headers.
    pub headers: HeaderMap,
    /// ALPN protocol negotiated (`h2`, `http/1.1`).
    pub alpn: Option<String>,
    body: Incoming,
}

impl Client {
    /// A client trusting `roots`, offering ALPN `alpn` (e.g. `[b"h2", b"http/1.1"]`).
    pub fn new(roots: rustls::RootCertStore, alpn: &[&[u8]]) -> Result<Client, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Client {
            config: Arc::new(config),
        })
    }

    /// Sends `req` (its URI absolute: `https://host[:port]/path`) over a new connection to
    /// `connect`, with the URI's host as SNI. HTTP/2 if the server picks `h2`, else HTTP/1.1.
    pub async fn send(
        &self,
        connect: SocketAddr,
        mut req: Request<Full<Bytes>>,
    ) -> Result<Response, Error> {
        let uri = req.uri().clone();
        let host = uri
            .host()
            .ok_or_else(|| Error::Invalid(format!("{uri}: no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let name = ServerName::try_from(host.clone())
            .map_err(|e| Error::Invalid(format!("{host}: {e}")))?;
        let tcp = TcpStream::connect(connect)
            .await
            .map_err(|e| Error::io(format!("connect {connect}"), e))?;
        let _ = tcp.set_nodelay(true);
        let tls = TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| Error::io(format!("TLS with {host} at {connect}"), e))?;
        let alpn = tls
            .get_ref()
            .1
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        let io = TokioIo::new(tls);
        let resp = if alpn.as_deref() == Some("h2") {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            *req.version_mut() = Version::HTTP_2;
            sender.send_request(req).await?
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            if !req.headers().contains_key(HOST) {
                let authority = uri.authority().map(|a| a.as_str()).unwrap_or(&host);
                let value = HeaderValue::from_str(authority)
                    .map_err(|e| Error::Invalid(format!("{authority}: {e}")))?;
                req.headers_mut().insert(HOST, value);
            }
            let origin: Uri = uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
                .parse()
                .map_err(|e| Error::Invalid(format!("{uri}: {e}")))?;
            *req.uri_mut() = origin;
            sender.send_request(req).await?
        };
        let (parts, body) = resp.into_parts();
        Ok(Response {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            alpn,
            body,
        })
    }

    /// `GET url` to `connect`.
    pub async fn get(&self, connect: SocketAddr, url: &str) -> Result<Response, Error> {
        self.send(connect, build("GET", url, &[], Bytes::new())?)
            .await
    }

    /// `POST url` with `body` and extra headers to `connect`.
    pub async fn post(
        &self,
        connect: SocketAddr,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Response, Error> {
        self.send(connect, build("POST", url, headers, body.into())?)
            .await
    }
}

/// Builds a request.
pub fn build(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Request<Full<Bytes>>, Error> {
    let mut b = Request::builder().method(method).uri(url);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(Full::new(body))
        .map_err(|e| Error::Invalid(format!("{method} {url}: {e}")))
}

impl Response {
    /// Reads the whole body.
    pub async fn bytes(self) -> Result<Bytes, Error> {
        Ok(self.body.collect().await?.to_bytes())
    }

    /// Reads the whole body as text (lossy).
    pub async fn text(self) -> Result<String, Error> {
        let b = self.bytes().await?;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }

    /// Reads the whole body as JSON.
    pub async fn json(self) -> Result<serde_json::Value, Error> {
        let b = self.bytes().await?;
        serde_json::from_slice(&b).map_err(|e| Error::Invalid(format!("response JSON: {e}")))
    }

    /// The next chunk of body data as it arrives (`None` at the end).
    pub async fn chunk(&mut self) -> Option<Result<Bytes, Error>> {
        loop {
            match self.body.frame().await? {
                Err(e) => return Some(Err(e.into())),
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        return Some(Ok(data));
                    }
                }
            }
        }
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}
