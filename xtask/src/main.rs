//! cargo xtask: setup, build, test, demo, lab.

mod demo;
mod lab;
mod setup;
mod shell;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "observer's developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what is missing (Debian packages, nightly rust-src, bpf-linker); idempotent.
    Setup,
    /// Build observer (with its eBPF programs) and the lab helper.
    Build,
    /// Setup, build, rustfmt check, clippy, then every test (unit and privileged lab tests).
    Test {
        /// Extra arguments for `cargo test` (after `--`), e.g. a test name filter.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Setup, build, then show observer catching a blocked xDS connection in the lab.
    Demo,
    /// Create, remove or clean up labs to explore by hand.
    Lab {
        #[command(subcommand)]
        action: lab::LabAction,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::Build => {
            setup::run()?;
            shell::build()
        }
        Command::Test { args } => test::run(&args),
        Command::Demo => demo::run(),
        Command::Lab { action } => lab::run(action),
    }
}
