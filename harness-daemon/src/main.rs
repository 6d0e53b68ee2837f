//! The `harness` command.
fn main() {
    std::process::exit(2);
}
