//! cargo xtask: setup, build, test, demo, lab.

mod bench;
mod demo;
mod fuzz;
mod lab;
mod manifests;
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
    /// Validate deploy/ offline: `kubectl kustomize deploy | kubernetes-validate --strict` (also
    /// part of `test`).
    Manifests,
    /// Setup, build, then show observer catching a blocked xDS connection in the lab.
    Demo,
    /// Measure observer's costs in the lab next to tcpdump and bpftrace (about 10 minutes):
    /// writes bench/results.json and BENCHMARKS.md.
    Bench {
        /// Repetitions of each datapath configuration.
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Seconds per datapath run.
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        /// Detection-latency trials per case.
        #[arg(long, default_value_t = 20)]
        trials: usize,
        /// Run only the churn benchmark (pod namespaces created and deleted while tracing).
        #[arg(long)]
        churn_only: bool,
        /// Seconds of churn.
        #[arg(long, default_value_t = 300.0)]
        churn_secs: f64,
        /// Pod namespaces per churn cycle.
        #[arg(long, default_value_t = 200)]
        churn_pods: usize,
        /// Only the agent's benchmark (idle CPU/RSS, Events under a drop flood): bench/agent.json.
        #[arg(long)]
        agent_only: bool,
        /// Run only these lab sections (overhead, pipeline, latency, scale; comma-separated),
        /// print their results as JSON and write no file: for iterating, not for BENCHMARKS.md.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Fuzz observer's parsers of untrusted input (cargo-fuzz, nightly): every target, or the
    /// ones named, for `--secs` each. Crashes stop the run and are left in fuzz/artifacts.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 300)]
        secs: u64,
        /// Targets to run (default: all).
        targets: Vec<String>,
    },
    /// Create, remove or clean up labs to explore by hand.
    Lab {
        #[command(subcommand)]
        action: lab::LabAction,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::Manifests => manifests::validate(),
        Command::Build => {
            setup::run()?;
            shell::build()
        }
        Command::Test { args } => test::run(&args),
        Command::Demo => demo::run(),
        Command::Bench { reps, secs, trials, churn_only, churn_secs, churn_pods, agent_only, only } => {
            bench::run(&bench::Options {
                reps,
                secs,
                latency_trials: trials,
                churn_only,
                churn_secs,
                churn_pods,
                agent_only,
                only,
            })
        }
        Command::Fuzz { secs, targets } => fuzz::run(secs, &targets),
        Command::Lab { action } => lab::run(action),
    }
}
