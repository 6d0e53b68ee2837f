//! What a connection may hold: how long each stage waits for the other side, and how many
//! connections a session may have open. Set in the policy file's `[limits]` table (README
//! "Limits"); every limit that fires is recorded — a timeout as its connection's `conn_close`
//! error, a refused connection as a `conn_denied` — and none of them ever cuts a stream that
//! keeps moving bytes (an SSE response that sends an event now and then, a busy WebSocket).
use crate::record::Counts;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The limits of one engine's connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connecting to the destination (TCP): a destination that neither accepts nor refuses.
    pub connect: Duration,
    /// Each TLS handshake (the client's, from its first byte; the destination's) and deciding
    /// what an undecided client speaks.
    pub handshake: Duration,
    /// An HTTP/1 request head, from its first byte to its empty line (slowloris).
    pub request_head: Duration,
    /// A connection on which no byte moved either way (a silent destination, an abandoned
    /// keep-alive connection, a request the destination never answers).
    pub idle: Duration,
    /// Connections one session may have open at once; more are refused and recorded.
    pub connections: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            connect: Duration::from_secs(30),
            handshake: Duration::from_secs(30),
            request_head: Duration::from_secs(30),
            // Long enough for a non-streaming model call that thinks for minutes (the providers'
            // own SDKs wait 10 minutes).
            idle: Duration::from_secs(600),
            connections: 4096,
        }
    }
}

/// A limit that fired: what did not happen in time, and the setting that says how long.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("timed out: {what} within {} s (limits.{key})", .limit.as_secs_f64())]
pub struct TimedOut {
    /// What did not happen ("the client finished no TLS handshake").
    pub what: &'static str,
    /// The limit.
    pub limit: Duration,
    /// Its name in the policy file's `[limits]`.
    pub key: &'static str,
}

impl Limits {
    /// `fut`, or [`TimedOut`] if it takes longer than `limit`.
    pub async fn within<T>(
        limit: Duration,
        key: &'static str,
        what: &'static str,
        fut: impl std::future::Future<Output = T>,
    ) -> Result<T, TimedOut> {
        tokio::time::timeout(limit, fut)
            .await
            .map_err(|_| TimedOut { what, limit, key })
    }

    /// The idle limit as it fires: see [`idle`].
    pub fn idle_timeout(&self) -> TimedOut {
        TimedOut {
            what: "no byte moved either way on the connection",
            limit: self.idle,
            key: "idle_seconds",
        }
    }
}

/// Resolves once no byte has passed the enclosed process's socket, either way, for `limit`
/// (measured to a tenth of it). Progress anywhere — a request body trickling up, stream events
/// coming down — starts the wait again.
pub async fn idle(counts: &Counts, limit: Duration) {
    let moved = || counts.up.load(Ordering::Relaxed) + counts.down.load(Ordering::Relaxed);
    let step = (limit / 10).max(Duration::from_millis(10));
    let mut seen = moved();
    let mut quiet = Duration::ZERO;
    while quiet < limit {
        tokio::time::sleep(step).await;
        let now = moved();
        // A request held for a person (an `ask`) is the connection waiting on harness, not
        // the client gone quiet.
        if counts.held.load(Ordering::Relaxed) > 0 {
            quiet = Duration::ZERO;
            continue;
        }
        if now == seen {
            quiet += step;
        } else {
            seen = now;
            quiet = Duration::ZERO;
        }
    }
}

/// How long the HTTP/1 client has been sending a request head it has not finished, from the
/// head's first byte (slowloris). hyper's own header timeout runs whenever it waits for a head
/// — on a keep-alive connection between requests too — and would close a connection its client
/// expects to reuse; this clock runs only once a byte of a new head came.
#[derive(Debug, Default)]
pub struct HeadClock {
    /// When the first byte of the head being read came; `None` while no head is under way.
    started: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// Exchanges between their head and the end of their response: what is read meanwhile is
    /// a request body, not a head.
    exchanges: std::sync::atomic::AtomicUsize,
    /// After a protocol switch (101) nothing more is HTTP.
    upgraded: std::sync::atomic::AtomicBool,
}

/// Held from a request's head until its response is sent (see [`HeadClock::exchange`]).
#[derive(Debug)]
pub struct InExchange(std::sync::Arc<HeadClock>);

impl InExchange {
    /// The clock it holds.
    pub fn clock(&self) -> &HeadClock {
        &self.0
    }
}

impl Drop for InExchange {
    fn drop(&mut self) {
        self.0.exchanges.fetch_sub(1, Ordering::Relaxed);
    }
}

impl HeadClock {
    /// A head was read whole: its clock stops; what comes until the returned guard is dropped
    /// (the response sent) belongs to this exchange.
    pub fn exchange(self: &std::sync::Arc<Self>) -> InExchange {
        *self.started.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.exchanges.fetch_add(1, Ordering::Relaxed);
        InExchange(self.clone())
    }

    /// The connection switched protocols: the clock never runs again.
    pub fn upgraded(&self) {
        self.upgraded.store(true, Ordering::Relaxed);
    }

    /// Bytes came from the client.
    fn read(&self) {
        if self.exchanges.load(Ordering::Relaxed) == 0 && !self.upgraded.load(Ordering::Relaxed) {
            self.started
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(tokio::time::Instant::now);
        }
    }

    /// Resolves once a head has been under way for `limit` (measured to a tenth of it).
    pub async fn expired(&self, limit: Duration) {
        let step = (limit / 10).max(Duration::from_millis(10));
        loop {
            tokio::time::sleep(step).await;
            let started = *self.started.lock().unwrap_or_else(|e| e.into_inner());
            if started.is_some_and(|at| at.elapsed() >= limit) {
                return;
            }
        }
    }
}

/// The client's stream, telling a [`HeadClock`] when bytes come.
pub struct HeadTimed<S> {
    inner: S,
    clock: std::sync::Arc<HeadClock>,
}

impl<S> HeadTimed<S> {
    /// `inner`, read under `clock`.
    pub fn new(inner: S, clock: std::sync::Arc<HeadClock>) -> HeadTimed<S> {
        HeadTimed { inner, clock }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for HeadTimed<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.clock.read();
        }
        res
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for HeadTimed<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The open-file limit this process had before [`raise_fd_limit`]: what enclosed commands get
/// back (a program that walks every possible descriptor, or sizes a table by the limit, should
/// not pay for harness's needs).
static ORIGINAL_FD_LIMIT: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();

/// The limit to give an enclosed command: this process's own from before [`raise_fd_limit`]
/// (`None` if it was never raised).
pub fn original_fd_limit() -> Option<libc::rlimit> {
    ORIGINAL_FD_LIMIT.get().map(|&(soft, hard)| libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    })
}

/// The open-file limit harness asks for: enough for many sessions of [`Limits::connections`]
/// each (two descriptors per connection) and the ledger's files.
const NOFILE_WANTED: u64 = 1 << 20;

/// Raises this process's open-file limit (soft to hard, and hard to [`NOFILE_WANTED`] when
/// privileged and the kernel allows), so that a storm of connections meets the per-session cap
/// long before the process runs out of descriptors. Returns (before, after) soft limits, or
/// why not with the limit that stays.
pub fn raise_fd_limit() -> Result<(u64, u64), (std::io::Error, u64)> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| (std::io::Error::from(e), 1024))?;
    let _ = ORIGINAL_FD_LIMIT.set((soft, hard));
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(hard);
    let wanted = NOFILE_WANTED.min(nr_open).max(hard);
    if setrlimit(Resource::RLIMIT_NOFILE, wanted, wanted).is_ok() {
        return Ok((soft, wanted));
    }
    // Not allowed to raise the hard limit: the soft one up to it.
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(|e| (std::io::Error::from(e), soft))?;
    Ok((soft, hard))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn a_request_held_for_a_person_keeps_its_connection_from_idling() {
        let counts = Arc::new(Counts::default());
        let limit = Duration::from_secs(10);
        let started = tokio::time::Instant::now();
        counts.held.fetch_add(1, Ordering::Relaxed);
        let decided = {
            let counts = counts.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                counts.held.fetch_sub(1, Ordering::Relaxed);
            })
        };
        idle(&counts, limit).await;
        decided.await.unwrap();
        assert!(
            started.elapsed() >= Duration::from_secs(3600) + limit,
            "fired after {:?} while a request waited for a decision",
            started.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_fires_only_after_the_limit_of_silence() {
        let counts = Arc::new(Counts::default());
        let limit = Duration::from_secs(10);
        let started = tokio::time::Instant::now();
        // Bytes every 5 s for a minute: never idle.
        let busy = {
            let counts = counts.clone();
            tokio::spawn(async move {
                for _ in 0..12 {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    counts.down.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        idle(&counts, limit).await;
        busy.await.unwrap();
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(60) + limit,
            "fired after {waited:?} while bytes still moved"
        );
        assert!(
            waited <= Duration::from_secs(60) + limit + limit / 5,
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_head_clock_runs_only_while_a_head_is_under_way() {
        let clock = Arc::new(HeadClock::default());
        let limit = Duration::from_secs(30);
        // Idle (a keep-alive connection between requests): never expires.
        let idle = tokio::time::timeout(Duration::from_secs(3600), clock.expired(limit)).await;
        assert!(idle.is_err(), "an idle connection is not a head under way");
        // Inside an exchange, bytes are its body.
        let guard = clock.exchange();
        clock.read();
        let body = tokio::time::timeout(Duration::from_secs(3600), clock.expired(limit)).await;
        assert!(body.is_err(), "a slow request body is not a slow head");
        drop(guard);
        // A byte of a new head starts the clock.
        let started = tokio::time::Instant::now();
        clock.read();
        clock.expired(limit).await;
        assert!(started.elapsed() >= limit && started.elapsed() <= limit + limit / 5);
        // After a protocol switch, nothing is a head.
        let upgraded = Arc::new(HeadClock::default());
        upgraded.upgraded();
        upgraded.read();
        let after = tokio::time::timeout(Duration::from_secs(3600), upgraded.expired(limit)).await;
        assert!(after.is_err());
    }

    #[test]
    fn a_timeout_names_its_setting() {
        let t = Limits::default().idle_timeout();
        assert_eq!(
            t.to_string(),
            "timed out: no byte moved either way on the connection within 600 s (limits.idle_seconds)"
        );
    }
}
