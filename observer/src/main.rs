//! observer: eBPF node dataplane observer for Istio service meshes.

use observer::{agent_exec, cli, diagnose, stop::StopToken, trace, verify};

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    // The agent's heavy dependencies live in their own binary: hand over to it.
    match &cli.command {
        cli::Command::Agent(p) => return agent_exec::exec("agent", &cli.logging.log, &p.args),
        cli::Command::Findings(p) => return agent_exec::exec("findings", &cli.logging.log, &p.args),
        _ => {}
    }
    cli.logging.init();
    // Ctrl-C/SIGTERM stop a watching session through its token (the library installs no
    // handler); the command then ends normally, with its summary or report, and detaches.
    // A static `verify` watches nothing: the signals keep their default action there.
    let stop = StopToken::new();
    let watches = !matches!(&cli.command, cli::Command::Verify(args) if !args.probe);
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM].into_iter().filter(|_| watches) {
        if let Err(err) = signal_hook::flag::register(signal, stop.flag()) {
            eprintln!("observer: error: installing the signal handler: {err}");
            return std::process::ExitCode::from(1);
        }
    }
    let result = match &cli.command {
        cli::Command::Trace(args) => trace::run(args, &stop).map(|()| false),
        cli::Command::Diagnose(args) => diagnose::run(args, &stop),
        cli::Command::Verify(args) => verify::run(args, &stop),
        cli::Command::Agent(_) | cli::Command::Findings(_) => Ok(false),
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
