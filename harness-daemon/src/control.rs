//! The daemon's control socket: how `harness run` asks a long-lived `harness daemon` for a
//! session. One JSON object per line over a Unix socket that only root may use.
//!
//! ```text
//! → {"op":"open","command":["agent","--x"],"uid":1000,"gid":1000}
//! ← {"ok":true,"session":"01J…","procs":"/sys/fs/cgroup/…/cgroup.procs",
//!    "netns":"/run/harness/netns/01J…"}
//!   (the client starts the command inside that cgroup and network namespace, waits for it)
//! → {"op":"close","exit_code":0,"signal":null}
//! ← {"ok":true}
//! ```
//! A client that disconnects without `close` ends its session as if the command had vanished:
//! what is left in the cgroup is killed and `session_close` is written.
//!
//! The same socket answers for requests held by an `ask` rule (`harness pending`, `harness
//! decide`), on any connection, before or without a session:
//!
//! ```text
//! → {"op":"pending"}
//! ← {"ok":true,"pending":[{"session":"01J…","id":12,…}]}
//! → {"op":"decide","session":"01J…","id":12,"allow":false,"why":"too large"}
//! ← {"ok":true}
//! ```
//! An engine embedded in `harness run` serves only these two at
//! `/run/harness/asks/<engine>.sock` ([`serve_asks`]), so that its asks can be decided too.
use crate::engine::{Engine, SessionSpec};
use crate::ledger::SessionClose;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::warn;

/// Default control socket path.
pub const DEFAULT_SOCKET: &str = "/run/harness/control.sock";

/// A request on the control socket.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Open a session for a command.
    Open {
        /// The command and its arguments.
        command: Vec<String>,
        /// User id it will run as.
        uid: u32,
        /// Group id it will run as.
        gid: u32,
    },
    /// The command ended.
    Close {
        /// Its exit code.
        exit_code: Option<i32>,
        /// The signal that ended it.
        signal: Option<i32>,
    },
    /// List the requests waiting for a person.
    Pending,
    /// Decide one of them.
    Decide {
        /// Its session id.
        session: String,
        /// Its id (the seq of its `request_decision` entry).
        id: u64,
        /// Allow (else deny).
        allow: bool,
        /// Why, in the decider's words (recorded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        why: Option<String>,
    },
}

/// Where the engines embedded in `harness run` serve their asks.
pub const ASKS_DIR: &str = "/run/harness/asks";

/// A reply on the control socket.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Reply {
    /// Whether the request succeeded.
    pub ok: bool,
    /// Session id (`open`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The session cgroup's `cgroup.procs` (`open`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub procs: Option<PathBuf>,
    /// The session's network namespace, bind-mounted for the client to enter (`open`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<PathBuf>,
    /// The trust bundle to give the command (`open`, when TLS is intercepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<PathBuf>,
    /// What waits for a person (`pending`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Vec<crate::govern::PendingAsk>>,
    /// What went wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Serves the control socket at `path` until the engine stops.
pub async fn serve(engine: Engine, path: &Path) -> std::io::Result<()> {
    listen(engine, path, Ops::All).await
}

/// Serves only `pending` and `decide` at `path` (an engine embedded in `harness run`).
pub async fn serve_asks(engine: Engine, path: &Path) -> std::io::Result<()> {
    listen(engine, path, Ops::AsksOnly).await
}

/// What a socket answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ops {
    All,
    AsksOnly,
}

async fn listen(engine: Engine, path: &Path, ops: Ops) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    loop {
        let (stream, _) = listener.accept().await?;
        let engine = engine.clone();
        tokio::spawn(async move {
            if let Err(e) = client(engine, stream, ops).await {
                warn!("control client: {e}");
            }
        });
    }
}

/// Who is on the other end of the socket, as recorded when they decide an ask.
fn decider(cred: Option<tokio::net::unix::UCred>) -> String {
    match cred {
        Some(c) => format!(
            "uid {} pid {} (harness decide)",
            c.uid(),
            c.pid().map_or("?".to_owned(), |p| p.to_string())
        ),
        None => "an unknown peer (harness decide)".to_owned(),
    }
}

/// `pending` and `decide`, on any connection.
fn asks_op(engine: &Engine, request: &Request, by: &str) -> Option<Reply> {
    Some(match request {
        Request::Pending => Reply {
            ok: true,
            pending: Some(engine.asks().list()),
            ..Reply::default()
        },
        Request::Decide {
            session,
            id,
            allow,
            why,
        } => {
            let how = crate::govern::Resolution {
                allow: *allow,
                by: by.to_owned(),
                why: why.clone(),
            };
            match engine.asks().decide(session, *id, how) {
                Ok(()) => Reply {
                    ok: true,
                    ..Reply::default()
                },
                Err(e) => Reply {
                    error: Some(e),
                    ..Reply::default()
                },
            }
        }
        _ => return None,
    })
}

async fn client(engine: Engine, stream: UnixStream, ops: Ops) -> std::io::Result<()> {
    let cred = stream.peer_cred().ok();
    let root = cred.is_some_and(|c| c.uid() == 0);
    let by = decider(cred);
    let (rd, mut wr) = stream.into_split();
    let mut lines = BufReader::new(rd).lines();
    let mut session = None;
    while let Some(line) = lines.next_line().await? {
        let request = serde_json::from_str::<Request>(&line);
        let asked = request
            .as_ref()
            .ok()
            .filter(|_| root)
            .and_then(|r| asks_op(&engine, r, &by));
        let reply = if !root {
            Reply {
                error: Some("only root may use the control socket".into()),
                ..Reply::default()
            }
        } else if let Some(reply) = asked {
            reply
        } else if ops == Ops::AsksOnly {
            Reply {
                error: Some(
                    "this socket (an engine embedded in harness run) only answers pending and decide"
                        .into(),
                ),
                ..Reply::default()
            }
        } else {
            match (request, &session) {
                (Ok(Request::Open { command, uid, gid }), None) => {
                    let opened = engine.open_session(SessionSpec { command, uid, gid }).await;
                    let mounted = opened.as_ref().map_err(ToString::to_string).and_then(|s| {
                        let id = s.writer.id().to_string();
                        s.netns
                            .mount_at(engine.name(), &id)
                            .map_err(|e| e.to_string())
                    });
                    match (opened, mounted) {
                        (Ok(s), Ok(netns)) => {
                            let reply = Reply {
                                ok: true,
                                session: Some(s.writer.id().to_string()),
                                procs: Some(s.cgroup.procs_file()),
                                netns: Some(netns),
                                bundle: engine.trust_bundle().map(|b| b.path().to_owned()),
                                ..Reply::default()
                            };
                            session = Some(s);
                            reply
                        }
                        (Ok(s), Err(e)) => {
                            let close =
                                SessionClose::because(format!("the session could not start: {e}"));
                            let _ = engine.close_session(&s, close).await;
                            Reply {
                                error: Some(e),
                                ..Reply::default()
                            }
                        }
                        (Err(e), _) => Reply {
                            error: Some(e.to_string()),
                            ..Reply::default()
                        },
                    }
                }
                (Ok(Request::Close { exit_code, signal }), Some(_)) => {
                    let s = session.take().expect("matched Some");
                    match engine
                        .close_session(&s, SessionClose::exited(exit_code, signal))
                        .await
                    {
                        Ok(()) => Reply {
                            ok: true,
                            ..Reply::default()
                        },
                        Err(e) => Reply {
                            error: Some(e.to_string()),
                            ..Reply::default()
                        },
                    }
                }
                (Ok(_), _) => Reply {
                    error: Some("open first, then close, one session per connection".into()),
                    ..Reply::default()
                },
                (Err(e), _) => Reply {
                    error: Some(format!("bad request: {e}")),
                    ..Reply::default()
                },
            }
        };
        let mut out = serde_json::to_vec(&reply).expect("replies serialize");
        out.push(b'\n');
        wr.write_all(&out).await?;
    }
    if let Some(s) = session {
        engine
            .close_session(
                &s,
                SessionClose::because("harness run went away (its control connection closed)"),
            )
            .await
            .map_err(std::io::Error::other)?;
    }
    Ok(())
}

/// The client side, used by `harness run` when a daemon is listening.
pub struct Client {
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    wr: tokio::net::unix::OwnedWriteHalf,
}

impl Client {
    /// Connects to a daemon, or `None` when none listens at `path`.
    pub async fn connect(path: &Path) -> Option<Client> {
        let stream = UnixStream::connect(path).await.ok()?;
        let (rd, wr) = stream.into_split();
        Some(Client {
            lines: BufReader::new(rd).lines(),
            wr,
        })
    }

    /// Completes when the daemon closes the connection (it sends nothing unasked, so any read
    /// that ends means it is gone).
    pub async fn closed(&mut self) {
        let _ = self.lines.next_line().await;
    }

    /// Sends one request and reads the reply.
    pub async fn call(&mut self, request: &Request) -> std::io::Result<Reply> {
        let mut out = serde_json::to_vec(request).expect("requests serialize");
        out.push(b'\n');
        self.wr.write_all(&out).await?;
        let line = self.lines.next_line().await?.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "daemon closed the socket",
            )
        })?;
        serde_json::from_str(&line).map_err(std::io::Error::other)
    }
}
