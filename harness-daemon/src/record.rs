//! Recording helpers shared by the stages that see bytes: a per-connection recorder that turns
//! bytes into durable entries, byte counting for `conn_close`, and the recording relay used for
//! anything that is not HTTP (plain TCP or non-HTTP inside TLS, and the bytes after an HTTP
//! upgrade, which a [`Watch`] may annotate as they pass).
use crate::ledger::{
    Body, Data, Direction, Durable, Entry, ErrorEntry, Ledger, LedgerError, SessionWriter,
};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};

/// Records one connection's entries into its session.
#[derive(Clone)]
pub struct ConnRecorder {
    writer: SessionWriter,
    conn: u64,
    next_exchange: Arc<AtomicU64>,
    tasks: tokio_util::task::TaskTracker,
    closing: tokio_util::sync::CancellationToken,
    /// Relays of this connection's upgraded exchanges, which outlive the HTTP stage.
    upgraded: tokio_util::task::TaskTracker,
    /// Cancelled to end those relays (a limit fired).
    abort_upgraded: tokio_util::sync::CancellationToken,
    /// The connection's counts, whose `cut` flag this recorder raises.
    counts: Arc<Counts>,
}

/// How long spawned recording work may go on once its session starts closing (a stream whose
/// upstream never ends must not hold the session open).
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

impl ConnRecorder {
    /// A recorder for connection number `conn` of the session `writer` writes; work it spawns
    /// is tracked by `tasks`, which the session waits for before it closes, and ended
    /// [`CLOSE_GRACE`] after `closing` fires.
    pub fn new(
        writer: SessionWriter,
        conn: u64,
        tasks: tokio_util::task::TaskTracker,
        closing: tokio_util::sync::CancellationToken,
        counts: Arc<Counts>,
    ) -> ConnRecorder {
        ConnRecorder {
            writer,
            conn,
            next_exchange: Arc::new(AtomicU64::new(0)),
            tasks,
            closing,
            upgraded: tokio_util::task::TaskTracker::new(),
            abort_upgraded: tokio_util::sync::CancellationToken::new(),
            counts,
        }
    }

    /// Marks the connection as cut: the enclosed process's end will be reset, never closed
    /// cleanly, so that a cut response can never pass for a complete one (a close-delimited
    /// HTTP/1.0 body, a raw stream). Raised by every ledger failure, and by the stages when the
    /// destination cannot be reached.
    pub fn cut(&self) {
        self.counts.cut.store(true, Ordering::Relaxed);
    }

    fn cut_on_err<T>(&self, result: Result<T, LedgerError>) -> Result<T, LedgerError> {
        if let Err(e) = &result {
            self.cut();
            // Said once per connection: its `conn_close` says it again if the ledger can still
            // take one, and the session's `session_close` says why the ledger stopped.
            if !self.counts.said_cut.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "session {} connection {}: the ledger refused an entry ({e}); the connection is cut",
                    self.writer.id(),
                    self.conn
                );
            }
        }
        result
    }

    /// Spawns the relay of an upgraded exchange (WebSocket): tracked like [`Self::spawn`], and
    /// waited for by [`Self::upgrades_finished`], so that the connection's `conn_close` comes
    /// after its last byte.
    pub fn spawn_upgraded<F>(&self, relay: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let abort = self.abort_upgraded.clone();
        self.spawn(self.upgraded.track_future(async move {
            tokio::select! {
                () = relay => {}
                () = abort.cancelled() => {}
            }
        }));
    }

    /// Ends the relays [`Self::spawn_upgraded`] started (their sockets are dropped: reset if
    /// the connection was [cut](Self::cut) first).
    pub fn abort_upgrades(&self) {
        self.abort_upgraded.cancel();
    }

    /// Resolves once every relay [`Self::spawn_upgraded`] started has ended (at once if none
    /// did). Call it when the connection's HTTP stage is done.
    pub async fn upgrades_finished(&self) {
        self.upgraded.close();
        self.upgraded.wait().await;
    }

    /// Spawns recording work that must finish before the session's last entry (stream pumps,
    /// annotations).
    pub fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let closing = self.closing.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = task => {}
                () = async {
                    closing.cancelled().await;
                    tokio::time::sleep(CLOSE_GRACE).await;
                } => {}
            }
        });
    }

    /// Marks a request of this connection as held for a person until the guard drops: the idle
    /// limit does not end a connection whose request waits for a decision.
    pub fn hold(&self) -> Held {
        self.counts.held.fetch_add(1, Ordering::Relaxed);
        Held(self.counts.clone())
    }

    /// Where the TLS stage notes how each side ended its TLS.
    pub fn tls_ends(&self) -> Arc<crate::tls::ending::TlsEnds> {
        self.counts.tls.clone()
    }

    /// The connection number.
    pub fn conn(&self) -> u64 {
        self.conn
    }

    /// The ledger (for headers, fingerprints and bodies).
    pub fn ledger(&self) -> &Ledger {
        self.writer.ledger()
    }

    /// The next exchange number on this connection (0, 1, 2, …).
    pub fn next_exchange(&self) -> u64 {
        self.next_exchange.fetch_add(1, Ordering::Relaxed)
    }

    /// Appends an entry; resolves once it is durable.
    pub async fn append(&self, entry: Entry) -> Result<Durable, LedgerError> {
        self.cut_on_err(self.writer.append(entry).await)
    }

    /// Queues an entry now, before anything appended after this call, without waiting for it
    /// (see [`SessionWriter::queue_lazy`]); a ledger failure cuts the connection as usual.
    pub fn queue_lazy(&self, entry: Entry) {
        let durable = self.writer.queue_lazy(entry);
        let rec = self.clone();
        self.spawn(async move {
            let _ = rec.cut_on_err(durable.await);
        });
    }

    /// Appends an entry nobody waits on before releasing bytes (an annotation): it is written
    /// with the next commit that someone does wait on, or on its own after at most
    /// [`LAZY_WAIT`](crate::ledger::LAZY_WAIT), so that it does not cost an fsync of its own
    /// on a busy connection. Resolves once durable, like [`append`](Self::append).
    pub async fn append_lazy(&self, entry: Entry) -> Result<Durable, LedgerError> {
        self.cut_on_err(self.writer.append_lazy(entry).await)
    }

    /// Appends `entries` in one group commit; resolves once all are durable, in order.
    pub async fn append_all(&self, entries: Vec<Entry>) -> Result<Vec<Durable>, LedgerError> {
        self.cut_on_err(self.writer.append_all(entries).await)
    }

    /// The recorded form of `bytes`: inline, or a durable blob for large ones (written off the
    /// async threads, since a blob write ends in an fsync).
    pub async fn body(&self, bytes: bytes::Bytes) -> Result<Body, LedgerError> {
        if bytes.len() <= crate::ledger::INLINE_MAX {
            // Inline: no file, no fsync, nothing to move off this thread.
            return self.cut_on_err(self.ledger().body(&bytes));
        }
        let ledger = self.ledger().clone();
        let written = tokio::task::spawn_blocking(move || ledger.body(&bytes))
            .await
            .map_err(|e| LedgerError::io(ledger_dir(&self.writer), std::io::Error::other(e)))
            .and_then(|body| body);
        self.cut_on_err(written)
    }

    /// Records an error that belongs to this connection (best effort: a failing ledger already
    /// makes the connection fail).
    pub async fn error(&self, context: &str, message: String) {
        let _ = self
            .append(Entry::Error(ErrorEntry {
                conn: Some(self.conn),
                context: context.into(),
                message,
            }))
            .await;
    }
}

/// A URL query as it may be recorded: `key=` parameters (API keys, as Gemini takes them)
/// replaced by their keyed fingerprint, everything else as it was.
pub fn redact_query(ledger: &Ledger, query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) if name.eq_ignore_ascii_case("key") => {
                format!("{name}={}", ledger.fingerprint(value.as_bytes()))
            }
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn ledger_dir(writer: &SessionWriter) -> &std::path::Path {
    writer.ledger().dir()
}

/// Byte counts of a connection as seen on the enclosed process's socket.
#[derive(Debug, Default)]
pub struct Counts {
    /// Bytes the enclosed process sent.
    pub up: AtomicU64,
    /// Bytes the enclosed process received.
    pub down: AtomicU64,
    /// Set when the connection was cut (see [`ConnRecorder::cut`]).
    pub cut: std::sync::atomic::AtomicBool,
    /// Set once a ledger failure that cut the connection was said on stderr.
    pub said_cut: std::sync::atomic::AtomicBool,
    /// How each side ended its TLS, for an intercepted connection.
    pub tls: Arc<crate::tls::ending::TlsEnds>,
    /// Requests of this connection held for a person (`ask`): while one waits, the connection
    /// is not idle, whatever passes.
    pub held: AtomicU64,
}

/// A request held for a person on a connection; see [`Counts::held`].
pub struct Held(Arc<Counts>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that counts what passes through it into [`Counts`] (reads as `up`, writes as
/// `down`: it wraps the enclosed process's end).
pub struct Counted<S> {
    inner: S,
    counts: Arc<Counts>,
    /// The socket to reset when the connection was cut.
    reset_fd: Option<std::os::fd::RawFd>,
}

impl<S> Counted<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, counts: Arc<Counts>) -> Counted<S> {
        Counted {
            inner,
            counts,
            reset_fd: None,
        }
    }

    /// Wraps the enclosed process's TCP socket: if the connection is cut, the socket is reset
    /// (RST) when dropped rather than closed (FIN), and never shut down cleanly.
    pub fn resettable(inner: S, counts: Arc<Counts>) -> Counted<S>
    where
        S: std::os::fd::AsRawFd,
    {
        let fd = inner.as_raw_fd();
        Counted {
            inner,
            counts,
            reset_fd: Some(fd),
        }
    }

    fn is_cut(&self) -> bool {
        self.counts.cut.load(Ordering::Relaxed)
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.counts.up.fetch_add(n as u64, Ordering::Relaxed);
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &res {
            self.counts.down.fetch_add(*n as u64, Ordering::Relaxed);
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.is_cut() {
            // No clean end for a cut connection: the drop resets it.
            return Poll::Ready(Err(std::io::Error::other("connection cut: no clean close")));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S> Drop for Counted<S> {
    fn drop(&mut self) {
        if let (true, Some(fd)) = (self.is_cut(), self.reset_fd) {
            // `fd` belongs to `inner`, still open: fields drop after this.
            reset_on_close(fd);
        }
    }
}

/// Makes the coming close of socket `fd` a reset (RST) instead of a clean end (FIN): a zero
/// linger, which does not block (nothing is waited for).
pub fn reset_on_close(fd: std::os::fd::RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on an fd the caller holds open, reading the linger struct we own.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Watches one direction of a recording relay: sees each read once its `data` entry is durable
/// and the bytes were written on, and returns what to append about them (annotations). It
/// never changes or holds up the bytes.
pub trait Watch: Send {
    /// `bytes` were recorded as the entry `recorded` and passed on.
    fn watch(&mut self, bytes: &[u8], recorded: &Durable) -> Vec<Entry>;

    /// The connection ended (either way, or failed): what is still to be said of what was
    /// watched. Called for the down direction's watch first, then the up one's.
    fn end(&mut self) -> Vec<Entry> {
        Vec::new()
    }
}

/// How many watch entries may wait for the ledger before the relay waits for them.
const WATCH_QUEUE: usize = 64;

/// Relays bytes both ways, recording every read as a `data` entry that is durable before the
/// bytes are written on: nothing passes that the ledger does not hold. A ledger failure cuts
/// the connection.
pub async fn recording_relay<C, U>(client: C, upstream: U, rec: &ConnRecorder) -> Result<(), String>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    watched_relay(client, upstream, rec, None, None).await
}

/// [`recording_relay`], with a [`Watch`] on either direction. What the watches return is
/// appended in order by a task of its own, off the relay's path.
pub async fn watched_relay<C, U>(
    client: C,
    upstream: U,
    rec: &ConnRecorder,
    up: Option<Box<dyn Watch>>,
    down: Option<Box<dyn Watch>>,
) -> Result<(), String>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let notes = (up.is_some() || down.is_some()).then(|| {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Entry>(WATCH_QUEUE);
        let writer = rec.clone();
        rec.spawn(async move {
            while let Some(entry) = rx.recv().await {
                if writer.append(entry).await.is_err() {
                    return;
                }
            }
        });
        tx
    });
    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    let (mut up_rd, mut up_wr) = tokio::io::split(upstream);
    let (mut up_watch, mut down_watch) = (up, down);
    let result = {
        let up = pump(
            &mut client_rd,
            &mut up_wr,
            rec,
            Direction::Up,
            up_watch.as_deref_mut().zip(notes.clone()),
        );
        let down = pump(
            &mut up_rd,
            &mut client_wr,
            rec,
            Direction::Down,
            down_watch.as_deref_mut().zip(notes.clone()),
        );
        // A direction that fails (a reset, a TLS stream cut without close_notify) ends both:
        // the halves are dropped, so the other side sees the connection end too, not a silent
        // hang.
        tokio::try_join!(up, down).map(|_| ())
    };
    if let Some(notes) = notes {
        for watch in [down_watch.as_deref_mut(), up_watch.as_deref_mut()]
            .into_iter()
            .flatten()
        {
            for entry in watch.end() {
                let _ = notes.send(entry).await;
            }
        }
    }
    result
}

async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    rec: &ConnRecorder,
    direction: Direction,
    mut watch: Option<(&mut (dyn Watch + 'static), tokio::sync::mpsc::Sender<Entry>)>,
) -> Result<(), String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    let mut index = 0;
    let mut offset = 0u64;
    loop {
        let n = from
            .read(&mut buf)
            .await
            .map_err(|e| format!("reading ({direction:?}): {e}"))?;
        if n == 0 {
            let _ = to.shutdown().await;
            return Ok(());
        }
        let bytes = bytes::Bytes::copy_from_slice(&buf[..n]);
        let body = rec
            .body(bytes)
            .await
            .map_err(|e| format!("ledger: {e}; connection cut"))?;
        let recorded = rec
            .append(Entry::Data(Data {
                conn: rec.conn(),
                direction,
                index,
                offset,
                bytes: body,
            }))
            .await
            .map_err(|e| format!("ledger: {e}; connection cut"))?;
        to.write_all(&buf[..n])
            .await
            .map_err(|e| format!("writing ({direction:?}): {e}"))?;
        if let Some((watch, notes)) = watch.as_mut() {
            for entry in watch.watch(&buf[..n], &recorded) {
                // The appender ends only when the ledger failed; the relay goes on regardless.
                let _ = notes.send(entry).await;
            }
        }
        index += 1;
        offset += n as u64;
    }
}
