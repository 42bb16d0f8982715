//! `observer-agent`: the node agent (`agent`) and the cluster view (`findings`). The heavy
//! dependencies (kube-rs, rustls, axum, tokio) live here so that `observer`'s trace, diagnose and
//! verify keep a lean build; `observer agent ...` and `observer findings ...` run this binary.

mod agent;
mod cli;
mod crossnode;
mod feed;
mod findings;
mod http;
mod kube_client;
mod kube_events;
mod metrics;
mod session;
mod state;
#[cfg(test)]
mod testing;

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    cli.logging.init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("observer: error: starting the async runtime: {err}");
            return std::process::ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            cli::Command::Agent(args) => agent::run(args).await.map(|()| false),
            cli::Command::Findings(args) => findings::run(args).await,
        }
    });
    match result {
        Ok(false) => std::process::ExitCode::SUCCESS,
        Ok(true) => std::process::ExitCode::from(3),
        Err(err) => {
            eprintln!("observer: error: {err:#}");
            std::process::ExitCode::from(1)
        }
    }
}
