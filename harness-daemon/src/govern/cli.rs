//! `harness pending` and `harness decide`: the person's side of an `ask` rule.
//!
//! Asks wait in the engine that holds their request: the daemon (its control socket) or an
//! engine embedded in `harness run` (a socket of its own under [`ASKS_DIR`]). Both commands ask
//! every such socket; only root can use them, and the engine records who decided (uid and pid,
//! from the socket's peer credentials).
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use crate::control::{Reply, Request, ASKS_DIR, DEFAULT_SOCKET};
use crate::govern::PendingAsk;

/// `harness pending`.
#[derive(clap::Args, Debug)]
pub struct PendingArgs {
    /// One JSON array instead of lines.
    #[arg(long)]
    pub json: bool,
    /// The daemon's control socket.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub control: PathBuf,
}

/// `harness decide`.
#[derive(clap::Args, Debug)]
pub struct DecideArgs {
    /// The session (its id, or a prefix only it has).
    pub session: String,
    /// The ask's id, as `harness pending` shows it.
    pub id: u64,
    /// `allow` or `deny`.
    #[arg(value_parser = ["allow", "deny"])]
    pub verdict: String,
    /// Why (recorded in the ledger with the decision).
    #[arg(long)]
    pub why: Option<String>,
    /// The daemon's control socket.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub control: PathBuf,
}

/// Every socket an engine may answer asks on.
fn sockets(control: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if control.exists() {
        out.push(control.to_owned());
    }
    if let Ok(dir) = std::fs::read_dir(ASKS_DIR) {
        let mut embedded: Vec<PathBuf> = dir
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "sock"))
            .collect();
        embedded.sort();
        out.extend(embedded);
    }
    out
}

fn call(socket: &Path, request: &Request) -> Result<Reply, String> {
    let fail = |e: std::io::Error| format!("{}: {e}", socket.display());
    let mut stream = UnixStream::connect(socket).map_err(fail)?;
    let mut line = serde_json::to_vec(request).expect("requests serialize");
    line.push(b'\n');
    stream.write_all(&line).map_err(fail)?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(fail)?;
    serde_json::from_str(&answer).map_err(|e| {
        format!(
            "{}: not a control reply ({e}): {answer:?}",
            socket.display()
        )
    })
}

/// Every ask waiting in every engine reachable, with the socket that holds it; the sockets
/// that could not be asked, and why.
fn gather(control: &Path) -> (Vec<(PathBuf, PendingAsk)>, Vec<String>) {
    let (mut asks, mut problems) = (Vec::new(), Vec::new());
    for socket in sockets(control) {
        match call(&socket, &Request::Pending) {
            Ok(Reply {
                ok: true,
                pending: Some(list),
                ..
            }) => asks.extend(list.into_iter().map(|a| (socket.clone(), a))),
            Ok(reply) => problems.push(format!(
                "{}: {}",
                socket.display(),
                reply.error.unwrap_or_else(|| "refused".into())
            )),
            // An embedded engine that ended leaves no socket, or one nobody listens on.
            Err(_) if socket != control => {}
            Err(e) => problems.push(e),
        }
    }
    (asks, problems)
}

/// `harness pending`: exit 0 (even when nothing waits), 2 when no engine could be asked.
pub fn pending(args: &PendingArgs) -> i32 {
    let (asks, problems) = gather(&args.control);
    for p in &problems {
        eprintln!("harness pending: {p}");
    }
    if asks.is_empty() && !problems.is_empty() {
        return 2;
    }
    if args.json {
        let list: Vec<&PendingAsk> = asks.iter().map(|(_, a)| a).collect();
        println!("{}", serde_json::to_string(&list).expect("asks serialize"));
        return 0;
    }
    if asks.is_empty() {
        println!("nothing waits for a decision");
    }
    for (_, a) in &asks {
        println!(
            "{} {}  {}  waited {} s, denied in {} s unless decided\n    {}",
            a.session, a.id, a.request, a.waited_seconds, a.timeout_seconds, a.reason
        );
    }
    0
}

/// `harness decide`: exit 0 when decided, 2 otherwise (no such ask, not root, no engine).
pub fn decide(args: &DecideArgs) -> i32 {
    let (asks, problems) = gather(&args.control);
    let matching: Vec<&(PathBuf, PendingAsk)> = asks
        .iter()
        .filter(|(_, a)| a.id == args.id && a.session.starts_with(&args.session))
        .collect();
    let (socket, ask) = match matching.as_slice() {
        [one] => one,
        [] => {
            for p in &problems {
                eprintln!("harness decide: {p}");
            }
            eprintln!(
                "harness decide: no request of session {} waits as {} (decided already, timed out, or never asked; `harness pending` lists what waits)",
                args.session, args.id
            );
            return 2;
        }
        _ => {
            eprintln!(
                "harness decide: {:?} names more than one session with an ask {}: give more of the id",
                args.session, args.id
            );
            return 2;
        }
    };
    let request = Request::Decide {
        session: ask.session.clone(),
        id: ask.id,
        allow: args.verdict == "allow",
        why: args.why.clone(),
    };
    match call(socket, &request) {
        Ok(Reply { ok: true, .. }) => {
            println!("{} {}: {}", ask.session, ask.id, args.verdict);
            0
        }
        Ok(reply) => {
            eprintln!(
                "harness decide: {}",
                reply.error.unwrap_or_else(|| "refused".into())
            );
            2
        }
        Err(e) => {
            eprintln!("harness decide: {e}");
            2
        }
    }
}
