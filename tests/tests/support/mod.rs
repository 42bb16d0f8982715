//! Shared helpers of the lab integration tests.
#![allow(dead_code)]
// Test support: failing loudly with context is the point (STYLE: tests panic with context).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

pub mod bpf_query;
pub mod netns;

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use observer_lab::{Lab, LabSpec, Tools};

/// The first statement of every privileged test (netns, eBPF, firewall rules): such a test is
/// marked `#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]`, so plain
/// `cargo test` reports it as ignored; run with `--include-ignored` (as `cargo xtask test` does)
/// by a non-root user, it fails here, loudly, instead of passing without testing anything.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "this privileged test needs root (network namespaces, eBPF) and runs as uid {euid}: \
         run `cargo xtask test` as root, or plain `cargo test` for the host-only tier"
    );
}

/// Directory of the built binaries (`observer`, `lab-pod`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("OBSERVER_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

pub fn observer_bin() -> PathBuf {
    let bin = bin_dir().join("observer");
    assert!(bin.exists(), "{} not built: run `cargo build --bins` (cargo xtask test does)", bin.display());
    bin
}

/// Runs observer as an unprivileged uid/gid; returns (exit code, stderr).
pub fn run_observer_as(uid: u32, args: &[&str]) -> (i32, String) {
    use std::os::unix::process::CommandExt as _;
    let out = Command::new(observer_bin()).args(args).uid(uid).gid(uid).output().expect("run observer");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

pub fn lab() -> Lab {
    lab_with(LabSpec::bookinfo())
}

/// A lab of another topology (a variant of [`LabSpec::bookinfo`]).
pub fn lab_with(spec: LabSpec) -> Lab {
    let tools = Tools { lab_pod: PathBuf::from(env!("CARGO_BIN_EXE_lab-pod")) };
    Lab::up(spec, tools).expect("lab up")
}

/// `observer` running in the background with its stdout lines collected.
pub struct Running {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    stderr_reader: Option<thread::JoinHandle<()>>,
    stdout_reader: Option<thread::JoinHandle<()>>,
}

impl Running {
    /// Starts `observer ARGS...` and waits for its `ready` log line.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// [`Running::start`] with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(observer_bin())
            .args(args)
            .env("OBSERVER_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn observer");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let err = child.stderr.take().expect("stderr");
        let kept_err = Arc::clone(&stderr_lines);
        let stderr_reader = thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if line.contains("ready") {
                    let _ = ready_tx.send(());
                }
                kept_err.lock().expect("lock").push(line);
            }
        });
        let out = child.stdout.take().expect("stdout");
        let kept = Arc::clone(&lines);
        let stdout_reader = thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                kept.lock().expect("lock").push(line);
            }
        });
        let mut running = Self {
            child,
            lines,
            stderr: stderr_lines,
            stderr_reader: Some(stderr_reader),
            stdout_reader: Some(stdout_reader),
        };
        if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let err = running.stderr();
            let _ = running.child.kill();
            panic!("observer not ready within 30 s; stderr: {err:?}");
        }
        running
    }

    /// The observer process's PID (for /proc/PID inspection).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the observer process is still running (not exited).
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// The shared stdout lines (still filled after `stop_with_stderr`).
    pub fn lines_handle(&self) -> Arc<Mutex<Vec<String>>> {
        Arc::clone(&self.lines)
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lock").clone()
    }

    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().expect("lock").clone()
    }

    /// JSON lines parsed (for `--output json`).
    pub fn json(&self) -> Vec<serde_json::Value> {
        self.lines().iter().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// Polls until `pred` holds for some JSON event, or fails after `limit`.
    pub fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = Instant::now();
        loop {
            if let Some(v) = self.json().into_iter().find(|v| pred(v)) {
                return v;
            }
            if start.elapsed() > limit {
                panic!("no event {what} within {limit:?}; saw:\n{}", self.lines().join("\n"));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL (no chance to clean up), then wait; returns the exit status.
    pub fn kill_hard(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on the child we started, by its PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        self.child.wait().expect("wait observer")
    }

    /// SIGINT, then wait; returns the exit status.
    pub fn stop(self) -> std::process::ExitStatus {
        self.stop_with_stderr().0
    }

    /// SIGINT, wait, and every stderr line (the exit summary included).
    pub fn stop_with_stderr(mut self) -> (std::process::ExitStatus, Vec<String>) {
        // SAFETY: kill(2) on the child we started, by its PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait().expect("wait observer");
        for reader in [self.stderr_reader.take(), self.stdout_reader.take()].into_iter().flatten() {
            let _ = reader.join();
        }
        (status, self.stderr())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// uid and container ids of a pod, from the lab's inventory.
pub fn pod_identity(lab: &observer_lab::Lab, app: &str) -> (String, Vec<(String, String)>) {
    let inv: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lab.inventory_path()).expect("inventory")).expect("json");
    let pod = inv["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["kind"] == "Pod" && i["metadata"]["labels"]["app"] == app)
        .expect("pod in inventory");
    let containers = pod["status"]["containerStatuses"]
        .as_array()
        .expect("statuses")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().expect("name").to_string(),
                c["containerID"].as_str().expect("id").trim_start_matches("containerd://").to_string(),
            )
        })
        .collect();
    (pod["metadata"]["uid"].as_str().expect("uid").to_string(), containers)
}
