//! The `harness` command. Exit status: 0 success; 1 "the ledger is not intact" (verify);
//! 2 usage or I/O error; `run` exits with the enclosed command's status, or 125 when harness
//! itself fails (as `env`, `timeout` and `docker run` do), so that the two never mix.
use clap::{Parser, Subcommand};
use harness::ledger::cli;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "harness",
    version,
    about = "Enclose an AI agent; record everything it exchanges; prove the record intact."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a session file or ledger directory: chain, blobs, signed checkpoints.
    /// Exit 0 intact, 1 not intact (one line per problem), 2 usage or I/O error.
    Verify(cli::VerifyArgs),
    /// Print a session's timeline: model calls, tool calls and what they caused (--json: one
    /// object per entry; --follow: watch a live session; --correlations: the causal chains).
    Log(cli::LogArgs),
    /// Sessions, model calls, tokens and cost across a ledger (--by day|model|agent, --since
    /// DATE, --json).
    Stats(harness::stats::StatsArgs),
    /// Export a session or ledger as HTTP Archive 1.2 (--format har) or Agent Audit Trail
    /// records (--format aat).
    Export(harness::export::ExportArgs),
    /// List the requests an `ask` rule holds for a person, in every engine (as root).
    Pending(harness::govern::cli::PendingArgs),
    /// Allow or deny a request an `ask` rule holds: SESSION ID allow|deny [--why TEXT] (as
    /// root; who decided is recorded).
    Decide(harness::govern::cli::DecideArgs),
    /// Print an inclusion proof for one entry, or check one with --verify and --key.
    Prove(cli::ProveArgs),
    /// Run a command inside a new enclosure session (as root). Exit status: the command's
    /// (128 + N when killed by signal N); 125 when harness itself fails.
    Run {
        /// Ledger directory [default: /var/lib/harness/ledger]; only without a running daemon.
        #[arg(long)]
        ledger: Option<PathBuf>,
        /// Policy file (TOML); without one every destination is allowed (and recorded).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// User (name or uid) to run the command as; default: the user behind sudo.
        #[arg(long)]
        user: Option<String>,
        /// Forward DNS questions to this resolver instead of the one the command addressed.
        #[arg(long)]
        dns_upstream: Option<SocketAddr>,
        /// Directory of the harness CA (created on first use).
        #[arg(long, default_value = harness::engine::DEFAULT_CA_DIR)]
        ca_dir: PathBuf,
        /// Extra root certificates (PEM) to trust when verifying destinations; repeatable.
        #[arg(long)]
        upstream_ca: Vec<PathBuf>,
        /// The daemon's control socket, used when a daemon listens there.
        #[arg(long, default_value = harness::control::DEFAULT_SOCKET)]
        control: PathBuf,
        /// Embed an engine for this command even if a daemon is running.
        #[arg(long)]
        no_daemon: bool,
        /// Refuse to run when this kernel leaves any class of escape open (see README,
        /// "Threat model"); without it harness runs and says what is open.
        #[arg(long)]
        require_full_isolation: bool,
        /// Make the command's user's home directory read-only inside the enclosure (its working
        /// directory, when inside home, and each --writable DIR stay writable).
        #[arg(long)]
        protect_home: bool,
        /// With --protect-home: a directory inside home that stays writable; repeatable.
        #[arg(long, value_name = "DIR", requires = "protect_home")]
        writable: Vec<PathBuf>,
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<OsString>,
    },
    /// The harness CA that enclosed clients are made to trust: print or export its certificate.
    Ca {
        /// Directory of the harness CA (created on first use).
        #[arg(long, default_value = harness::engine::DEFAULT_CA_DIR)]
        ca_dir: PathBuf,
        /// Write the CA certificate (PEM) to this file.
        #[arg(long)]
        export: Option<PathBuf>,
    },
    /// What `harness run` executes inside the enclosure (not for direct use).
    #[command(name = "enclosed-init", hide = true)]
    EnclosedInit(harness::init::InitArgs),
    /// Run the engine as a long-lived service that `harness run` uses (as root).
    Daemon {
        /// Ledger directory.
        #[arg(long, default_value = "/var/lib/harness/ledger")]
        ledger: PathBuf,
        /// Policy file (TOML); without one every destination is allowed (and recorded).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Forward DNS questions to this resolver instead of the one a command addressed.
        #[arg(long)]
        dns_upstream: Option<SocketAddr>,
        /// Directory of the harness CA (created on first use).
        #[arg(long, default_value = harness::engine::DEFAULT_CA_DIR)]
        ca_dir: PathBuf,
        /// Extra root certificates (PEM) to trust when verifying destinations; repeatable.
        #[arg(long)]
        upstream_ca: Vec<PathBuf>,
        /// Control socket path.
        #[arg(long, default_value = harness::control::DEFAULT_SOCKET)]
        control: PathBuf,
        /// Refuse to start when this kernel leaves any class of escape open.
        #[arg(long)]
        require_full_isolation: bool,
    },
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Help and version are successes; everything else is a usage error — for `run`,
            // one of harness's own failures, never to be taken for the command's status.
            let usage = if std::env::args_os().nth(1).is_some_and(|a| a == "run") {
                harness::run::EXIT_RUN_FAILED
            } else {
                cli::EXIT_ERROR
            };
            std::process::exit(if e.use_stderr() { usage } else { 0 });
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HARNESS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colour only for a terminal: a log file or a pipe gets plain lines.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let code = match cli.command {
        // Single-threaded on purpose (it forks): no runtime, no tracing threads.
        Command::EnclosedInit(args) => harness::init::run(args),
        Command::Verify(args) => cli::verify(&args),
        Command::Log(args) => cli::log(&args),
        Command::Prove(args) => cli::prove(&args),
        Command::Pending(args) => harness::govern::cli::pending(&args),
        Command::Decide(args) => harness::govern::cli::decide(&args),
        Command::Stats(args) => harness::stats::run(&args),
        Command::Export(args) => harness::export::run(&args),
        Command::Run {
            ledger,
            policy,
            user,
            dns_upstream,
            ca_dir,
            upstream_ca,
            control,
            no_daemon,
            require_full_isolation,
            protect_home,
            writable,
            command,
        } => {
            let options = harness::run::RunOptions {
                ledger,
                policy,
                user,
                dns_upstream,
                ca_dir,
                upstream_ca,
                control,
                no_daemon,
                require_full_isolation,
                protect_home,
                writable,
                command,
            };
            match runtime(harness::run::EXIT_RUN_FAILED).block_on(harness::run::run(options)) {
                Ok(status) => status,
                Err(e) => {
                    fail("harness run", &e);
                    harness::run::EXIT_RUN_FAILED
                }
            }
        }
        Command::Ca { ca_dir, export } => match harness::tls::HarnessCa::load_or_create(&ca_dir) {
            Ok(ca) => {
                let exported = match &export {
                    Some(path) => ca
                        .export(path)
                        .map(|()| eprintln!("exported the harness CA to {}", path.display())),
                    None => {
                        print!("{}", ca.certificate_pem());
                        Ok(())
                    }
                };
                match exported {
                    Ok(()) => {
                        eprintln!("sha256 fingerprint: {}", ca.fingerprint_sha256_hex());
                        0
                    }
                    Err(e) => fail("harness ca", &e),
                }
            }
            Err(e) => fail("harness ca", &e),
        },
        Command::Daemon {
            ledger,
            policy,
            dns_upstream,
            ca_dir,
            upstream_ca,
            control,
            require_full_isolation,
        } => {
            let options = harness::daemon::DaemonOptions {
                ledger,
                policy,
                dns_upstream,
                ca_dir,
                upstream_ca,
                control,
                require_full_isolation,
            };
            match runtime(cli::EXIT_ERROR).block_on(harness::daemon::run(options)) {
                Ok(()) => 0,
                Err(e) => fail("harness daemon", &e),
            }
        }
    };
    std::process::exit(code);
}

/// The async runtime; if it cannot start, harness exits with `status`.
fn runtime(status: i32) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| {
            eprintln!("harness: starting the async runtime: {e}");
            std::process::exit(status)
        })
}

/// Prints one line — the error and its causes — and gives exit status 2.
fn fail(what: &str, error: &dyn std::error::Error) -> i32 {
    let mut line = format!("{what}: {error}");
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    eprintln!("{line}");
    2
}
