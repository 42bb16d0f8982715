//! Offline validation of deploy/: the kustomize rendering (kubectl) checked against the
//! Kubernetes schemas of a recent release (PyPI's kubernetes-validate, bundled schemas, no
//! cluster), strict (unknown fields fail).

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _};

use crate::shell::{self, command, output};

/// The Kubernetes release the manifests are validated against.
pub const KUBERNETES_VERSION: &str = "1.33.0";
/// kubernetes-validate from PyPI, pinned (it bundles the schemas of 1.33).
pub const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.33.1";

/// Installs what the validation needs when absent: kubectl (Debian's kubernetes-client, unless
/// a kubectl with `kustomize` is there) and kubernetes-validate (pip, pinned).
pub fn setup(did: &mut Vec<String>) -> anyhow::Result<()> {
    if output(command("kubectl").args(["kustomize", "--help"])).is_empty() {
        println!("setup: installing Debian's kubernetes-client (kubectl kustomize)");
        let mut apt = command("apt-get");
        apt.env("DEBIAN_FRONTEND", "noninteractive").args([
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "kubernetes-client",
        ]);
        shell::run(&mut apt)?;
        did.push("installed kubernetes-client".into());
    }
    let pinned = KUBERNETES_VALIDATE.trim_start_matches("kubernetes-validate==");
    if !output(command("python3").args(["-m", "pip", "show", "kubernetes-validate"]))
        .lines()
        .any(|l| l.trim() == format!("Version: {pinned}"))
    {
        println!("setup: installing {KUBERNETES_VALIDATE} (pip)");
        shell::run(command("python3").args(["-m", "pip", "install", "-q", KUBERNETES_VALIDATE]))?;
        did.push(format!("installed {KUBERNETES_VALIDATE}"));
    }
    Ok(())
}

/// `kubectl kustomize deploy | kubernetes-validate --strict -k 1.33.0 -`, and the DaemonSet runs
/// `agent`.
pub fn validate() -> anyhow::Result<()> {
    let rendered = Command::new("kubectl")
        .args(["kustomize", "deploy"])
        .current_dir(shell::root())
        .output()
        .context("running kubectl kustomize deploy")?;
    if !rendered.status.success() {
        bail!("kubectl kustomize deploy failed: {}", String::from_utf8_lossy(&rendered.stderr));
    }
    let text = String::from_utf8_lossy(&rendered.stdout);
    if !runs_agent(&text) {
        bail!("deploy/: the DaemonSet does not run `observer agent`:\n{text}");
    }
    let mut validate = Command::new("kubernetes-validate")
        .args(["--strict", "-k", KUBERNETES_VERSION, "-"])
        .stdin(Stdio::piped())
        .spawn()
        .context("running kubernetes-validate (cargo xtask setup installs it)")?;
    validate.stdin.take().context("stdin")?.write_all(&rendered.stdout).context("feeding kubernetes-validate")?;
    let status = validate.wait().context("waiting for kubernetes-validate")?;
    if !status.success() {
        bail!("deploy/ manifests do not validate against Kubernetes {KUBERNETES_VERSION}");
    }
    println!("xtask test: deploy/ manifests valid for Kubernetes {KUBERNETES_VERSION}");
    Ok(())
}

/// Whether a rendered container's `args` start with `agent` (kustomize renders block lists).
fn runs_agent(rendered: &str) -> bool {
    let lines: Vec<&str> = rendered.lines().map(str::trim).collect();
    lines.windows(2).any(|w| w[0].trim_start_matches("- ") == "args:" && w[1] == "- agent")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemonset_must_run_the_agent() {
        assert!(runs_agent("      containers:\n      - args:\n        - agent\n        - --listen\n"));
        assert!(!runs_agent("      containers:\n      - args:\n        - trace\n"));
    }
}
