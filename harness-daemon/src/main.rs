//! The `harness` command.
use clap::{Parser, Subcommand};
use harness::ledger::cli;

/// Enclose an AI agent, record every exchange, prove the record intact.
#[derive(Debug, Parser)]
#[command(name = "harness", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a session file or ledger directory: chain, blobs, signed checkpoints.
    /// Exit 0 intact, 1 not intact (one line per problem), 2 usage or I/O error.
    Verify(cli::VerifyArgs),
    /// Print a session's timeline (or one JSON object per entry with --json).
    Log(cli::LogArgs),
    /// Print an inclusion proof for one entry, or check one with --verify and --key.
    Prove(cli::ProveArgs),
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Help and version are successes; everything else is a usage error.
            std::process::exit(if e.use_stderr() { cli::EXIT_ERROR } else { 0 });
        }
    };
    let code = match &cli.command {
        Command::Verify(args) => cli::verify(args),
        Command::Log(args) => cli::log(args),
        Command::Prove(args) => cli::prove(args),
    };
    std::process::exit(code);
}
