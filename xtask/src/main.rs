//! `cargo xtask`: the project's chores. One subcommand per file; shared helpers in `util.rs`.
#![forbid(unsafe_code)]

mod agents;
mod bench;
mod demo;
mod fuzz;
mod setup;
mod test;
mod util;
mod venv;
mod vm_test;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "harness project chores")]
enum Subcommand {
    /// Install what this machine lacks to build and test harness (idempotent, quick when done).
    Setup(setup::Options),
    /// Everything CI runs: setup, fmt, clippy, unit + privileged integration tests, the VM test.
    Test(test::Options),
    /// Boot Debian's 6.1 kernel under qemu and run the privileged integration tests inside.
    VmTest(vm_test::Options),
    /// Enclose a small sample agent that calls a local service; print what was recorded.
    Demo(demo::Options),
    /// Run the daemon's benchmarks.
    Bench(bench::Options),
    /// Run the parsers' fuzz targets (cargo-fuzz), each for a bounded time.
    Fuzz(fuzz::Options),
}

fn main() {
    let result = match Subcommand::parse() {
        Subcommand::Setup(opts) => setup::run(&opts).map(drop),
        Subcommand::Test(opts) => test::run(&opts),
        Subcommand::VmTest(opts) => vm_test::run(&opts, true),
        Subcommand::Demo(opts) => demo::run(&opts),
        Subcommand::Bench(opts) => bench::run(&opts),
        Subcommand::Fuzz(opts) => fuzz::run(&opts),
    };
    if let Err(err) = result {
        eprintln!("{} {err:#}", util::styled("1;31", "error:"));
        std::process::exit(1);
    }
}
