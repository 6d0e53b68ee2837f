//! WebSocket endpoints (RFC 6455 over HTTP/1.1): `GET /ws`, an echo, and `GET /v1/responses`,
//! the Responses API's WebSocket mode (`openai::responses_ws`). The handshake is answered here
//! (101 with `Sec-WebSocket-Accept`); the framing after it is tungstenite's, so the peer shares
//! no code with the daemon's frame decoder it tests.
//!
//! The echo sends each text message back as `echo: <text>`, each binary message as the same
//! bytes with `echo: ` before them; an endpoint with its own text handler sends what that
//! gives instead. Pings are answered with pongs and a close frame with a close frame (both by
//! tungstenite), after which the connection ends.
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use hyper::upgrade::OnUpgrade;
use hyper::{HeaderMap, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::body::OutBody;

/// What echoed messages start with.
pub const ECHO_PREFIX: &str = "echo: ";

/// What an endpoint answers a text message with: the text messages to send back, in order.
pub(crate) type OnText = Box<dyn FnMut(&str) -> Vec<String> + Send>;

/// Answers a WebSocket handshake and spawns the echo loop on the upgraded connection; a request
/// that is not a valid handshake gets 400 (or 426 without `Upgrade: websocket`).
pub(crate) fn accept(headers: &HeaderMap, upgrade: Option<OnUpgrade>) -> Response<OutBody> {
    let echo = |t: &str| vec![format!("{ECHO_PREFIX}{t}")];
    accept_with(headers, upgrade, Box::new(echo))
}

/// [`accept`], text messages answered by `on_text`.
pub(crate) fn accept_with(
    headers: &HeaderMap,
    upgrade: Option<OnUpgrade>,
    on_text: OnText,
) -> Response<OutBody> {
    let has = |name: &str, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let answer = |status: StatusCode, text: &str| {
        let mut r = Response::new(OutBody::unlogged(format!("{text}\n")));
        *r.status_mut() = status;
        r
    };
    if !has("upgrade", "websocket") || !has("connection", "upgrade") {
        return answer(StatusCode::UPGRADE_REQUIRED, "websocket upgrade required");
    }
    let (Some(key), Some(upgrade)) = (headers.get("sec-websocket-key"), upgrade) else {
        return answer(StatusCode::BAD_REQUEST, "no sec-websocket-key");
    };
    if headers
        .get("sec-websocket-version")
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return answer(StatusCode::BAD_REQUEST, "sec-websocket-version must be 13");
    }
    let accept = derive_accept_key(key.as_bytes());
    tokio::spawn(async move {
        if let Ok(upgraded) = upgrade.await {
            let ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            let mut ws = echo(ws, on_text).await;
            // TLS close_notify and FIN once the closing handshake is done, as servers do.
            let _ = tokio::io::AsyncWriteExt::shutdown(ws.get_mut()).await;
        }
    });
    let mut r = Response::new(OutBody::unlogged(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        "upgrade",
        hyper::header::HeaderValue::from_static("websocket"),
    );
    h.insert(
        "connection",
        hyper::header::HeaderValue::from_static("Upgrade"),
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", v);
    }
    r
}

async fn echo<S>(mut ws: WebSocketStream<S>, mut on_text: OnText) -> WebSocketStream<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(Ok(msg)) = ws.next().await {
        let reply = match msg {
            Message::Text(t) => {
                let mut replies = on_text(t.as_str());
                let last = replies.pop();
                for r in replies {
                    if ws.feed(Message::text(r)).await.is_err() {
                        return ws;
                    }
                }
                match last {
                    Some(r) => Message::text(r),
                    None => continue,
                }
            }
            Message::Binary(b) => {
                let mut out = ECHO_PREFIX.as_bytes().to_vec();
                out.extend_from_slice(&b);
                Message::binary(out)
            }
            // Pongs to pings and the closing handshake are tungstenite's; flush them out.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {
                if ws.flush().await.is_err() {
                    break;
                }
                continue;
            }
            Message::Close(_) => {
                let _ = ws.flush().await;
                continue;
            }
        };
        if ws.send(reply).await.is_err() {
            break;
        }
    }
    ws
}
