//! The `harness` command. Exit status: 0 success; 1 "the ledger is not intact" (verify);
//! 2 usage or I/O error; `run` exits with the enclosed command's status.
use clap::{Parser, Subcommand};
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
    /// Run a command inside a new enclosure session (as root).
    Run {
        /// Ledger directory.
        #[arg(long, default_value = "/var/lib/harness/ledger")]
        ledger: PathBuf,
        /// Policy file (TOML); without one every destination is allowed (and recorded).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// User (name or uid) to run the command as; default: the user behind sudo.
        #[arg(long)]
        user: Option<String>,
        /// Forward DNS questions to this resolver instead of the one the command addressed.
        #[arg(long)]
        dns_upstream: Option<SocketAddr>,
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<OsString>,
    },
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HARNESS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = match cli.command {
        Command::Run {
            ledger,
            policy,
            user,
            dns_upstream,
            command,
        } => {
            let options = harness::run::RunOptions {
                ledger,
                policy,
                user,
                dns_upstream,
                command,
            };
            match runtime().block_on(harness::run::run(options)) {
                Ok(status) => status,
                Err(e) => fail("harness run", &e),
            }
        }
    };
    std::process::exit(code);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| {
            eprintln!("harness: starting the async runtime: {e}");
            std::process::exit(2)
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
