//! Test peers: the far side of every connection harness intercepts in tests and in the demo.
//!
//! One HTTPS server (real TLS from a [`TestCa`], HTTP/1.1 and h2 by ALPN) serving, on a
//! [`world`](crate::world) address (a peer that stands for the outside world) or a loopback one
//! (a peer local to the test, or started inside an enclosure), faithful mocks of:
//!
//! - Anthropic Messages `POST /v1/messages` (JSON and SSE),
//! - OpenAI `POST /v1/chat/completions` and `POST /v1/responses` (JSON and SSE),
//! - Gemini `POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent`,
//! - an MCP server over Streamable HTTP, `POST /mcp` (JSON or SSE answers), whose
//!   `place_order` tool itself calls the brokerage API over HTTPS,
//! - a brokerage JSON API, `GET /v1/quotes/{symbol}` and `POST /v1/orders`,
//! - `GET /bytes/{n}` and `POST /upload` for large bodies in bounded memory,
//! - `GET /ws`: a WebSocket echo (HTTP/1.1 upgrade; text and binary messages come back
//!   prefixed with [`ECHO_PREFIX`], pings get pongs, a close is answered),
//! - `GET /__peer/log`: every request received, as JSON (also [`Peer::requests`]).
//!
//! Any request can be made to fail with the header `x-peer-fail` (see [`Fail`]), or every
//! request by configuration ([`PeerBuilder::fail`], [`Peer::set_fail`]). Other per-request
//! controls, all forwarded untouched by harness so they work through it too:
//!
//! - `x-peer-reply: <JSON Reply>`: what the model says for this request ([`Reply`]);
//!   otherwise the configured reply, or the after-tool reply when the conversation's last
//!   turn carries a tool result (Anthropic `tool_result`, OpenAI `role: tool` /
//!   `function_call_output`, Gemini `functionResponse`);
//! - `x-peer-mcp-sse: 1` or `POST /mcp?sse=1`: MCP answers as SSE (as does an `Accept` of
//!   only `text/event-stream`);
//! - `GET /bytes/{n}?length=1` sends a `content-length` (chunked otherwise), `&sha256=1` an
//!   `x-peer-sha256` header; [`bytes_sha256`] gives the same hash to tests.
//!
//! ```no_run
//! # async fn demo() -> Result<(), harness_tests::peers::Error> {
//! use harness_tests::peers::{Peer, TestCa};
//! let ca = TestCa::create("/tmp/ca")?;
//! let peer = Peer::builder(&ca)
//!     .names(["api.anthropic.test"])
//!     .ip(harness_tests::world::addr(2))
//!     .start()
//!     .await?;
//! println!("{} {}", peer.addr(), ca.cert_path().display());
//! let seen = peer.requests();
//! # Ok(()) }
//! ```
//!
//! Synchronous tests use [`PeerBuilder::spawn_in_thread`], which gives a [`BlockingPeer`]
//! owning its own runtime.
mod anthropic;
mod body;
mod broker;
mod bulk;
mod ca;
mod client;
mod fail;
mod gemini;
mod log;
mod mcp;
mod openai;
mod reply;
mod server;
mod sse;
mod websocket;

pub use bulk::{bytes_sha256, pseudo_random_bytes};
pub use ca::{ServerCert, TestCa};
pub use client::{build, Client, Response};
pub use fail::{Fail, FailRule, DEFAULT_HANG, DEFAULT_SLOW};
pub use log::{BodyRecord, Exchange, Outbound, ResponseRecord, KEEP_BODY_LIMIT};
pub use reply::{Reply, ToolCall};
pub use server::{BlockingPeer, Peer, PeerBuilder, Upstream, DEFAULT_EVENT_DELAY};
pub use websocket::ECHO_PREFIX;

use std::path::{Path, PathBuf};

/// What can go wrong setting up or talking to a peer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done (a path, an address).
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Generating a certificate failed.
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    /// TLS configuration failed.
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    /// An HTTP exchange failed.
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    /// A request could not be built or a value was malformed.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn io(context: impl std::fmt::Display, source: std::io::Error) -> Error {
        Error::Io {
            context: context.to_string(),
            source,
        }
    }
}

/// Reads every certificate in a PEM file (for extra trust roots).
pub fn read_pem_certs(
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, Error> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::Invalid(format!("{}: {e}", PathBuf::from(path).display())))
}
