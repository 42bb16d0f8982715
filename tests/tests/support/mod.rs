//! Shared helpers of the lab integration tests.
#![allow(dead_code)]
// Test support: failing loudly with context is the point (STYLE: tests panic with context).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

pub mod agents;
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

use observer_lab::{Lab, LabError, LabSpec, Tools};

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

/// A lab of `spec`, or `None` when the running kernel cannot build its overlay's tunnel devices
/// (this must then be the documented [`LabError::UnsupportedLink`], naming the kernel option; the
/// test says SKIPPED and why).
pub fn overlay_lab(spec: LabSpec) -> Option<Lab> {
    let overlay = spec.overlay;
    let tools = Tools { lab_pod: PathBuf::from(env!("CARGO_BIN_EXE_lab-pod")) };
    match Lab::up(spec, tools) {
        Ok(lab) => Some(lab),
        Err(LabError::UnsupportedLink { kind, config }) => {
            assert_eq!(Some(kind), overlay.link_kind(), "the error names the overlay's link kind");
            assert!(config.starts_with("CONFIG_"), "{config}");
            eprintln!("SKIPPED: this kernel lacks {config}: no {kind} overlay to test");
            None
        }
        Err(err) => panic!("lab up ({overlay:?}): {err}"),
    }
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
                let ready = line.contains("ready");
                // Kept before `ready` is told, so the caller finds the line in `stderr()`.
                kept_err.lock().expect("lock").push(line);
                if ready {
                    let _ = ready_tx.send(());
                }
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
                panic!(
                    "no event {what} within {limit:?}; saw:\n{}\nobserver's stderr:\n{}",
                    self.lines().join("\n"),
                    self.stderr().join("\n")
                );
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

/// Which firewalld zone the node's pod-facing interface is bound to in [`real_firewalld_for`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirewalldPods {
    /// The `public` zone, like the paste's second NIC: forwarded traffic in or out of the pods
    /// meets firewalld's final `reject with icmpx type admin-prohibited`.
    Public,
    /// libvirt's `libvirt` zone and NAT network (the paste's `virbr0`, 192.168.122.0/24): pods
    /// may send anywhere (masqueraded off their subnet), nothing new may come in.
    Libvirt,
}

/// The real RHEL 8 firewalld + libvirt ruleset (`nft list ruleset`,
/// observer/tests/fixtures/netfilter/real/firewalld-rhel8-nft.txt) adapted to bridged `node` of
/// a lab: the paste's uplink (`enp0s3`, public zone) becomes the interface holding the node's
/// uplink address; its pod bridge (the interface holding the pod gateway address) takes the
/// paste's `enp0s8` (public zone) or `virbr0` and its subnet (libvirt zone), per `pods`. Load
/// it with `observer_lab::lab::faults::load_ruleset`.
pub fn real_firewalld_for(lab: &Lab, node: &str, pods: FirewalldPods) -> observer_lab::lab::rulesets::Pasted {
    let spec = lab.spec.node(node).expect("node").clone();
    let path =
        format!("{}/../observer/tests/fixtures/netfilter/real/firewalld-rhel8-nft.txt", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let uplink = interface_with(lab, node, spec.uplink_ip);
    let bridge = interface_with(lab, node, spec.bridge_ip());
    let cidr = spec.pod_cidr_string();
    let gateway = spec.bridge_ip().to_string();
    let pairs: Vec<(&str, &str)> = match pods {
        FirewalldPods::Public => vec![("enp0s3", &uplink), ("enp0s8", &bridge)],
        FirewalldPods::Libvirt => {
            vec![("enp0s3", &uplink), ("virbr0", &bridge), ("192.168.122.0/24", &cidr), ("192.168.122.1", &gateway)]
        }
    };
    observer_lab::lab::rulesets::convert(&observer_lab::lab::rulesets::rename(&text, &pairs))
}

/// Name of the interface of `node`'s namespace that holds `addr`.
fn interface_with(lab: &Lab, node: &str, addr: std::net::Ipv4Addr) -> String {
    let out = std::process::Command::new("ip")
        .args(["-n", &lab.node_netns(node), "-o", "-4", "addr", "show"])
        .output()
        .expect("ip addr");
    let text = String::from_utf8_lossy(&out.stdout);
    let wanted = format!("{addr}/");
    text.lines()
        .find(|l| l.split_whitespace().nth(3).is_some_and(|a| a.starts_with(&wanted)))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_string())
        .unwrap_or_else(|| panic!("no interface with {addr} on {node}:\n{text}"))
}
