//! `observer agent` on lab nodes against the test API server (agent_lab, crossnode_lab):
//! processes, the API server, HTTP probes, metrics.

use std::{
    io::{BufRead as _, BufReader},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use observer_lab::Lab;
use serde_json::Value;

use super::bin_dir;

/// A background process with its stderr lines collected; killed (SIGTERM) when dropped.
pub struct Proc {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(program: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(program)
            .args(args)
            .env("OBSERVER_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&stderr);
        let err = child.stderr.take().expect("stderr");
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                kept.lock().expect("lock").push(line);
            }
        });
        Self { child, stderr }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("lock").join("\n")
    }

    pub fn wait_line(&self, what: &str, limit: Duration) {
        let start = Instant::now();
        while !self.stderr.lock().expect("lock").iter().any(|l| l.contains(what)) {
            assert!(start.elapsed() < limit, "no line with {what:?} within {limit:?}; stderr:\n{}", self.stderr());
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// A port free now, outside the kernel's ephemeral range (`net.ipv4.ip_local_port_range`), never
/// handed out twice by this process. A port-0 port (the ephemeral range) is free only until
/// someone else takes it: any outgoing connection of this namespace may get it as its local port
/// before the agent or the test API server binds it, and while the API server is down for the
/// outage the agent's own client, retrying `127.0.0.1:PORT`, can even connect to itself on it,
/// so the restarted server cannot bind. Ports below the range are only ever taken by an explicit
/// bind.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let low: u32 = range.split_whitespace().next().and_then(|p| p.parse().ok()).unwrap_or(32768);
    let (first, span) = (10_000u32, low.saturating_sub(10_000).max(1));
    // Spread parallel test processes over the span; this process walks it from there.
    let start = std::process::id().wrapping_mul(2_654_435_761) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = u16::try_from(first + (start + n) % span).expect("port below the ephemeral range");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {first}..{low}");
}

/// The test API server on `port`, serving the lab's inventory, its state in `dir`.
pub struct ApiServer {
    dir: PathBuf,
    port: u16,
    proc: Option<Proc>,
}

impl ApiServer {
    pub fn start(lab: &Lab, dir: &Path, port: u16, rv_start: u64) -> Self {
        let mut server = Self { dir: dir.to_path_buf(), port, proc: None };
        server.restart(lab, rv_start);
        server
    }

    pub fn restart(&mut self, lab: &Lab, rv_start: u64) {
        let bin = bin_dir().join("observer-test-apiserver");
        let (dir, inventory) = (self.dir.display().to_string(), lab.inventory_path().display().to_string());
        let listen = format!("127.0.0.1:{}", self.port);
        let rv = rv_start.to_string();
        let proc =
            Proc::spawn(&bin, &["--dir", &dir, "--inventory", &inventory, "--listen", &listen, "--rv-start", &rv]);
        proc.wait_line("listening on https://", Duration::from_secs(20));
        self.proc = Some(proc);
    }

    pub fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.stop();
        }
    }

    pub fn kubeconfig(&self) -> String {
        self.dir.join("kubeconfig").display().to_string()
    }

    /// A request with the test CA and the bearer token; returns the JSON answer.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let token = std::fs::read_to_string(self.dir.join("token")).expect("token");
        let ca = self.dir.join("ca.crt").display().to_string();
        let url = format!("https://127.0.0.1:{}{path}", self.port);
        let auth = format!("Authorization: Bearer {}", token.trim());
        let mut args = vec!["-sS", "--max-time", "10", "--cacert", &ca, "-H", &auth, "-X", method];
        // A GET is safe to repeat: on a loaded machine a slow answer is retried, not a failure.
        if method == "GET" {
            args.extend(["--retry", "3", "--retry-all-errors", "--retry-delay", "1"]);
        }
        let data;
        if let Some(body) = body {
            data = body.to_string();
            args.extend(["-H", "Content-Type: application/json", "--data-binary", &data]);
        }
        args.push(&url);
        let out = Command::new("curl").args(&args).output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("{method} {path}: not JSON ({e}): {text} (curl: {})", String::from_utf8_lossy(&out.stderr))
        })
    }

    /// observer's Events in a namespace (events.k8s.io/v1).
    pub fn observer_events(&self, namespace: &str) -> Vec<Value> {
        let list = self.call("GET", &format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events"), None);
        list["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["reportingController"] == "observer")
            .collect()
    }
}

/// GET on the agent's HTTP port: (status, body).
pub fn http(port: u16, path: &str) -> (u16, String) {
    let url = format!("http://127.0.0.1:{port}{path}");
    let out =
        Command::new("curl").args(["-s", "--max-time", "5", "-w", "\n%{http_code}", &url]).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

pub fn start_agent(lab: &Lab, api: &ApiServer, node: &str, port: u16) -> Proc {
    start_agent_with(lab, api, node, port, &[])
}

/// [`start_agent`] with more arguments.
pub fn start_agent_with(lab: &Lab, api: &ApiServer, node: &str, port: u16, more: &[&str]) -> Proc {
    let observer = bin_dir().join("observer");
    let (kubeconfig, netns, listen) = (api.kubeconfig(), lab.node_netns(node), format!("127.0.0.1:{port}"));
    let cgroup = lab.node_cgroup(node).display().to_string();
    Proc::spawn(
        &observer,
        &[
            "agent",
            "--kubeconfig",
            &kubeconfig,
            "--node-name",
            node,
            "--netns",
            &netns,
            "--listen",
            &listen,
            "--cgroup-root",
            &cgroup,
        ]
        .into_iter()
        .chain(more.iter().copied())
        .collect::<Vec<_>>(),
    )
}

/// Polls the agent's /findings until one satisfies `pred`.
pub fn wait_finding(port: u16, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let (_, body) = http(port, "/findings");
        let report: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if let Some(f) = report["findings"].as_array().and_then(|fs| fs.iter().find(|f| pred(f)).cloned()) {
            return f;
        }
        assert!(start.elapsed() < limit, "no such finding within {limit:?}; /findings: {body}");
        thread::sleep(Duration::from_millis(200));
    }
}

pub fn wait_until<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        thread::sleep(Duration::from_millis(250));
    }
}

/// A fresh directory (under the temp dir) for one test's API server state: CA, token, store.
pub fn tempdir(name: &str) -> PathBuf {
    // Unique per call: tests of one process run in parallel, several with the same name (a
    // scenario per overlay), and a shared directory would mix their API servers' CA and token.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("observer-agent-test-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// One metric's value (first sample whose line contains every one of `parts`).
pub fn metric(text: &str, name: &str, parts: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && parts.iter().all(|p| l.contains(p)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}
