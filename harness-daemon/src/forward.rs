//! Forward bytes both ways between an enclosed client and its real destination, counting them.
//! (TLS interception and HTTP understanding replace this for the protocols they know.)
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// Byte counts of a forwarded connection, readable while it runs.
#[derive(Debug, Default)]
pub struct Counts {
    /// Client → destination.
    pub up: AtomicU64,
    /// Destination → client.
    pub down: AtomicU64,
}

/// Copies both directions until both have ended; a half-close is passed on as a shutdown of
/// the other side's write half. Returns the first error, if any.
pub async fn relay<C, U>(client: C, upstream: U, counts: &Counts) -> std::io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    let (mut up_rd, mut up_wr) = tokio::io::split(upstream);
    let up = pump(&mut client_rd, &mut up_wr, &counts.up);
    let down = pump(&mut up_rd, &mut client_wr, &counts.down);
    let (a, b) = tokio::join!(up, down);
    a.and(b)
}

async fn pump<R, W>(from: &mut R, to: &mut W, count: &AtomicU64) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            let _ = to.shutdown().await;
            return Ok(());
        }
        to.write_all(&buf[..n]).await?;
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn relays_both_ways_and_counts() {
        let (client_app, client_daemon) = tokio::io::duplex(1024);
        let (upstream_daemon, upstream_app) = tokio::io::duplex(1024);
        let counts = Counts::default();
        let peer = async {
            let (mut rd, mut wr) = tokio::io::split(upstream_app);
            let mut got = Vec::new();
            rd.read_to_end(&mut got).await.unwrap();
            wr.write_all(b"pong!").await.unwrap();
            wr.shutdown().await.unwrap();
            got
        };
        let app = async {
            let (mut rd, mut wr) = tokio::io::split(client_app);
            wr.write_all(b"ping").await.unwrap();
            wr.shutdown().await.unwrap();
            let mut got = Vec::new();
            rd.read_to_end(&mut got).await.unwrap();
            got
        };
        let (relayed, at_peer, at_app) =
            tokio::join!(relay(client_daemon, upstream_daemon, &counts), peer, app);
        relayed.unwrap();
        assert_eq!(at_peer, b"ping");
        assert_eq!(at_app, b"pong!");
        assert_eq!(counts.up.load(Ordering::Relaxed), 4);
        assert_eq!(counts.down.load(Ordering::Relaxed), 5);
    }
}
