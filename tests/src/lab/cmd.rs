//! Running the lab's commands (ip, iptables, nft, sysctl) with errors that name the command.

use std::process::{Command, Stdio};

use super::LabError;

/// Runs `program args...`, returning stdout; a non-zero exit is an error carrying stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, LabError> {
    run_with_input(program, args, None)
}

/// Same, feeding `input` on stdin (iptables-restore, nft -f -).
pub fn run_with_input(program: &str, args: &[&str], input: Option<&str>) -> Result<String, LabError> {
    let command = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .env("PATH", path_with_sbin())
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| LabError::Spawn { command: command.clone(), source })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        use std::io::Write as _;
        stdin.write_all(text.as_bytes()).map_err(LabError::io(format!("writing stdin of `{command}`")))?;
    }
    let output = child.wait_with_output().map_err(LabError::io(format!("waiting for `{command}`")))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(LabError::Command {
            command,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

/// `ip netns exec NS program args...` (for tools that act on the current netns: iptables, nft, sysctl).
pub fn in_netns(netns: &str, program: &str, args: &[&str]) -> Result<String, LabError> {
    let mut full = vec!["netns", "exec", netns, program];
    full.extend_from_slice(args);
    run("ip", &full)
}

pub fn in_netns_with_input(netns: &str, program: &str, args: &[&str], input: &str) -> Result<String, LabError> {
    let mut full = vec!["netns", "exec", netns, program];
    full.extend_from_slice(args);
    run_with_input("ip", &full, Some(input))
}

/// PATH with /usr/sbin and /sbin (iptables and ip live there; tests may run with a short PATH).
pub fn path_with_sbin() -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    let mut parts: Vec<&str> = path.split(':').filter(|p| !p.is_empty()).collect();
    for extra in ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        if !parts.contains(&extra) {
            parts.push(extra);
        }
    }
    parts.join(":")
}
