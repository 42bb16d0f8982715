//! Starting lab processes inside a pod: its cgroup, its network namespace, and a uid.

use std::{
    fs::{File, OpenOptions},
    io::{BufRead, BufReader},
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use super::LabError;

/// Where and as whom a process runs.
pub struct Placement<'a> {
    /// `/run/netns/NAME` of the pod.
    pub netns: &'a str,
    /// The container's cgroup directory.
    pub cgroup: &'a Path,
    /// Run as this uid/gid (the sidecar proxy runs as 1337), or keep root.
    pub uid: Option<u32>,
}

/// Builds a command that, between fork and exec, joins the cgroup, enters the network namespace
/// (`setns`, no /sys remount) and drops to the uid.
pub fn command_in(placement: &Placement<'_>, program: &Path, args: &[&str]) -> Result<(Command, Vec<File>), LabError> {
    let netns_path = format!("/run/netns/{}", placement.netns);
    let netns = File::open(&netns_path).map_err(LabError::io(format!("opening {netns_path}")))?;
    let procs_path = placement.cgroup.join("cgroup.procs");
    let procs = OpenOptions::new()
        .write(true)
        .open(&procs_path)
        .map_err(LabError::io(format!("opening {}", procs_path.display())))?;
    let (netns_fd, procs_fd, uid) = (netns.as_raw_fd(), procs.as_raw_fd(), placement.uid);
    let mut command = Command::new(program);
    command.args(args);
    // SAFETY: only async-signal-safe syscalls (write, setns, setgid, setuid) run in the child.
    unsafe {
        command.pre_exec(move || {
            // "0" moves the writing process.
            if libc::write(procs_fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setns(netns_fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(uid) = uid {
                if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(uid) != 0 || libc::setuid(uid) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    // The files must stay open until spawn; the caller drops them afterwards.
    Ok((command, vec![netns, procs]))
}

/// Starts a long-running helper and waits (bounded) for its `ready` line. Its stderr goes to
/// `log` (so a lab left running holds no terminal or pipe open).
pub fn spawn_ready(
    what: &str,
    placement: &Placement<'_>,
    program: &Path,
    args: &[&str],
    log: &Path,
) -> Result<Child, LabError> {
    let (mut command, _keep_open) = command_in(placement, program, args)?;
    let log_file = File::create(log).map_err(LabError::io(format!("creating {}", log.display())))?;
    let mut child =
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(log_file)).spawn().map_err(
            |source| LabError::Spawn { command: format!("{} {}", program.display(), args.join(" ")), source },
        )?;
    let Some(stdout) = child.stdout.take() else {
        return Err(LabError::NotReady { what: what.into(), detail: "no stdout".into() });
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(line) if line.trim() == "ready" => Ok(child),
        other => {
            let _ = child.kill();
            let _ = child.wait();
            Err(LabError::NotReady { what: what.into(), detail: format!("{other:?}") })
        }
    }
}

/// Runs a short helper to completion, killing it if it outlives `limit`; returns stdout.
pub fn run_bounded(
    placement: &Placement<'_>,
    program: &Path,
    args: &[&str],
    limit: Duration,
) -> Result<String, LabError> {
    let (mut command, _keep_open) = command_in(placement, program, args)?;
    let child =
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|source| {
            LabError::Spawn { command: format!("{} {}", program.display(), args.join(" ")), source }
        })?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if rx.recv_timeout(limit).is_err() {
            // Still running after the limit: end the process we started, by its PID.
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    });
    let output = child.wait_with_output().map_err(LabError::io("waiting for lab-pod connect"))?;
    let _ = tx.send(());
    let _ = watchdog.join();
    if !output.status.success() {
        return Err(LabError::Command {
            command: format!("{} {}", program.display(), args.join(" ")),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
