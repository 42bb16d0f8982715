//! Running commands from xtask, and where things are.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _};

/// The workspace root (xtask lives in `<root>/xtask`).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// `target/debug` (or `$CARGO_TARGET_DIR/debug`).
pub fn target_debug() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target")).join("debug")
}

/// PATH with the sbin directories and ~/.cargo/bin.
pub fn path() -> String {
    let mut parts: Vec<String> = std::env::var("PATH").unwrap_or_default().split(':').map(String::from).collect();
    let mut extra = vec!["/usr/local/sbin".to_string(), "/usr/sbin".into(), "/sbin".into()];
    if let Some(home) = std::env::var_os("HOME") {
        extra.push(PathBuf::from(home).join(".cargo/bin").display().to_string());
    }
    for e in extra {
        if !parts.contains(&e) {
            parts.push(e);
        }
    }
    parts.join(":")
}

pub fn command(program: &str) -> Command {
    let mut c = Command::new(program);
    c.env("PATH", path()).current_dir(root());
    c
}

/// Runs to completion with inherited output; fails on non-zero exit.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("running {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}

/// Runs quietly and returns stdout (empty on failure).
pub fn output(cmd: &mut Command) -> String {
    cmd.stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// `cargo build` of the default members: observer (with eBPF) and lab-pod.
pub fn build() -> anyhow::Result<()> {
    run(command("cargo").args(["build", "--bins"]))
}

pub fn is_root() -> bool {
    output(command("id").arg("-u")).trim() == "0"
}
