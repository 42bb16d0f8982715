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

/// AKS's real Calico + kube-proxy filter table
/// (observer/tests/fixtures/netfilter/real/calico-aks-kubenet.txt) adapted to `node` of a lab
/// attached the Calico way: the paste's workload interfaces, and their `cali-fw-`/`cali-tw-`
/// chains, renamed to the node's pods' veths in order. Load it with
/// `observer_lab::lab::faults::load_ruleset`.
pub fn real_calico_for(lab: &Lab, node: &str) -> observer_lab::lab::rulesets::Pasted {
    let path =
        format!("{}/../observer/tests/fixtures/netfilter/real/calico-aks-kubenet.txt", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let pasted = ["calif6abb148530", "cali55f439ddb0e", "cali9d7310e16e7", "cali26cecacb712", "calic5a1f1aa0ed"];
    let veths: Vec<String> = lab.spec.pods_on(node).map(|p| lab.host_veth(p)).collect();
    assert!(!veths.is_empty() && veths.len() <= pasted.len(), "{veths:?}");
    let mut words: Vec<(String, String)> = Vec::new();
    for (from, to) in pasted.iter().zip(&veths) {
        words.push((from.to_string(), to.clone()));
        for prefix in ["cali-fw-", "cali-tw-"] {
            words.push((format!("{prefix}{from}"), format!("{prefix}{to}")));
        }
    }
    let pairs: Vec<(&str, &str)> = words.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    observer_lab::lab::rulesets::convert(&observer_lab::lab::rulesets::rename(&text, &pairs))
}

/// Felix's rendering of an ingress NetworkPolicy that selects the pod behind `tw` (its
/// `cali-tw-` chain) and admits only the members of an (empty) ipset on 9080: a `cali-pi-`
/// chain, "Start of policies" and "Drop if no policies passed packet" (at position 7) in `tw`.
/// Installed with iptables in `node`'s namespace.
pub fn calico_ingress_policy(lab: &Lab, node: &str, tw: &str) {
    let set = "cali40s:Yx3hU0oQ0Yy1rCqbZQ2nX8w";
    lab.firewall(node, "ipset", &["create", set, "hash:net", "-exist"]).expect("ipset");
    let pi = "cali-pi-_Lq4rVw9sKx2bN7dPfTg";
    let policy = "Policy bookinfo/knp.default.reviews-from-ratings ingress";
    let c = |id: &'static str| -> [&'static str; 4] { ["-m", "comment", "--comment", id] };
    let rules: Vec<Vec<&str>> = vec![
        vec!["-N", pi],
        [
            &["-A", pi, "-p", "tcp"][..],
            &c("cali:f0YXQk2GbGkeQb1x"),
            &["-m", "comment", "--comment", policy],
            &[
                "-m",
                "set",
                "--match-set",
                set,
                "src",
                "-m",
                "multiport",
                "--dports",
                "9080",
                "-j",
                "MARK",
                "--set-xmark",
                "0x10000/0x10000",
            ],
        ]
        .concat(),
        [&["-A", pi][..], &c("cali:h8EQhKRrpNUFkGmC"), &["-m", "mark", "--mark", "0x10000/0x10000", "-j", "RETURN"]]
            .concat(),
        [
            &["-I", tw, "4"][..],
            &c("cali:Ux9dpTNqxjCVtMGM"),
            &c("Start of policies"),
            &["-j", "MARK", "--set-xmark", "0x0/0x20000"],
        ]
        .concat(),
        [&["-I", tw, "5"][..], &c("cali:T5hhBmbUZbM6JrHu"), &["-m", "mark", "--mark", "0x0/0x20000", "-j", pi]]
            .concat(),
        [
            &["-I", tw, "6"][..],
            &c("cali:ufE5q5dhjoGzQkCw"),
            &c("Return if policy accepted"),
            &["-m", "mark", "--mark", "0x10000/0x10000", "-j", "RETURN"],
        ]
        .concat(),
        [
            &["-I", tw, "7"][..],
            &c("cali:Yc0dl2pHkBFgtyQT"),
            &c("Drop if no policies passed packet"),
            &["-m", "mark", "--mark", "0x0/0x20000", "-j", "DROP"],
        ]
        .concat(),
    ];
    for rule in &rules {
        let mut args = vec!["-w"];
        args.extend(rule.iter().copied());
        lab.firewall(node, "iptables", &args).unwrap_or_else(|e| panic!("iptables {rule:?}: {e}"));
    }
}
