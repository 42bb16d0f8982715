//! observer: eBPF node dataplane observer for Istio service meshes.

use observer::{cli, diagnose, trace, verify};
use std::io::IsTerminal as _;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::try_new(&cli.log).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = match &cli.command {
        cli::Command::Trace(args) => trace::run(args).map(|()| false),
        cli::Command::Diagnose(args) => diagnose::run(args),
        cli::Command::Verify(args) => verify::run(args),
    };
    match result {
        Ok(false) => std::process::ExitCode::SUCCESS,
        // Findings present (documented exit status).
        Ok(true) => std::process::ExitCode::from(3),
        Err(err) => {
            eprintln!("observer: error: {err:#}");
            std::process::ExitCode::from(1)
        }
    }
}
