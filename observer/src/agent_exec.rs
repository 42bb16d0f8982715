//! `observer agent` and `observer findings` run the `observer-agent` binary (crate
//! `observer-agent`), so the agent's heavy dependencies (kube-rs, rustls, axum, tokio) stay out
//! of the build of `trace`, `diagnose` and `verify`. It is looked up beside the running
//! `observer`, then on `PATH`.

use std::{ffi::OsString, os::unix::process::CommandExt as _, path::PathBuf, process::ExitCode};

/// The agent's binary name.
pub const AGENT_BINARY: &str = "observer-agent";

/// Where `observer-agent` is: beside the current executable when there, else its bare name
/// (found on `PATH` by exec).
pub fn agent_path() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(AGENT_BINARY)))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from(AGENT_BINARY))
}

/// Replaces this process with `observer-agent SUBCOMMAND --log LOG ARGS...`; returns only when
/// that fails (exit status 1, with a message saying what to install).
pub fn exec(subcommand: &str, log: &str, args: &[OsString]) -> ExitCode {
    let path = agent_path();
    let err = std::process::Command::new(&path).arg(subcommand).arg("--log").arg(log).args(args).exec();
    eprintln!(
        "observer: error: cannot run {} for `observer {subcommand}`: {err} (build it with `cargo build --bins` and install it beside observer)",
        path.display()
    );
    ExitCode::from(1)
}
