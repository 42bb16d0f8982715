//! 6. The agent: `observer agent` on node-a fed by the test API server (observer-test-apiserver,
//!    the lab's inventory, TLS + token): CPU and RSS while idle (attached, synced, no traffic),
//!    then under a bounded drop flood: Kubernetes Event writes per second reaching the API
//!    server (rate-limited and coalesced: bounded whatever the flood), the series count they
//!    carry, the agent's CPU and RSS.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde::Serialize;

use super::{
    procs::{cpu_seconds, in_netns, release_bin, rss_kib, Background},
    Bench, TOOLS_CPU,
};

/// Seconds of idle measurement, of flood, and of drain after it. The drain outlasts the engine's
/// 30 s idle conclusion (the flood's connections are counted then) plus one Event series update
/// interval (5 s), so the series count and the writes include the conclusion.
const IDLE_SECS: u64 = 10;
const FLOOD_SECS: f64 = 5.0;
const DRAIN_SECS: u64 = 40;
/// SYNs per second of the flood (each SYN is a distinct dropped connection).
const FLOOD_RATE: u64 = 20_000;

#[derive(Debug, Serialize)]
pub struct AgentResult {
    pub idle_cpu_percent: f64,
    pub idle_rss_kib: u64,
    pub flood_syns_sent: u64,
    pub flood_secs: f64,
    /// Event creates + patches the API server received from the flood's start to the drain's end.
    pub event_writes: u64,
    pub event_writes_per_sec: f64,
    /// The finding's Event series count at the end (connections counted).
    pub series_count: u64,
    pub flood_cpu_percent: f64,
    pub flood_rss_kib: u64,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A GET to the test API server (its CA and token from `dir`).
fn api_get(dir: &Path, port: u16, path: &str) -> anyhow::Result<serde_json::Value> {
    let token = std::fs::read_to_string(dir.join("token")).context("token")?;
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(dir.join("ca.crt"))
        .args(["-H", &format!("Authorization: Bearer {}", token.trim())])
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .context("curl")?;
    serde_json::from_slice(&out.stdout).with_context(|| format!("GET {path}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn event_writes(dir: &Path, port: u16) -> anyhow::Result<u64> {
    let requests = api_get(dir, port, "/debug/requests")?;
    Ok(["POST events", "PATCH events"].iter().filter_map(|k| requests[*k].as_u64()).sum())
}

pub fn run(b: &Bench<'_>) -> anyhow::Result<AgentResult> {
    let dir: PathBuf = std::env::temp_dir().join(format!("observer-bench-agent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let api_port = free_port()?;
    let api_bin = release_bin("observer-test-apiserver").display().to_string();
    let (dir_s, listen) = (dir.display().to_string(), format!("127.0.0.1:{api_port}"));
    let api = Background::start(
        in_netns(None, Some(TOOLS_CPU), &api_bin, &["--dir", &dir_s, "--inventory", &b.inventory, "--listen", &listen]),
        false,
    )?;
    api.wait_for("listening on", Duration::from_secs(20))?;
    let port = free_port()?;
    let kubeconfig = dir.join("kubeconfig").display().to_string();
    let agent_listen = format!("127.0.0.1:{port}");
    let cgroup = b.lab.cgroup().display().to_string();
    let agent = Background::start(
        in_netns(
            None,
            Some(TOOLS_CPU),
            &b.observer,
            &[
                "agent",
                "--kubeconfig",
                &kubeconfig,
                "--node-name",
                "node-a",
                "--netns",
                &b.node_ns,
                "--listen",
                &agent_listen,
                "--cgroup-root",
                &cgroup,
            ],
        ),
        false,
    )?;
    agent.wait_for("ready: attached and inventory synced", Duration::from_secs(60))?;
    thread::sleep(Duration::from_secs(2));
    let cpu0 = cpu_seconds(agent.pid());
    thread::sleep(Duration::from_secs(IDLE_SECS));
    let idle_cpu = (cpu_seconds(agent.pid()) - cpu0) / IDLE_SECS as f64 * 100.0;
    let idle_rss = rss_kib(agent.pid());
    println!("   agent idle: {idle_cpu:.2} % CPU, RSS {idle_rss} KiB");

    let writes0 = event_writes(&dir, api_port)?;
    let cpu0 = cpu_seconds(agent.pid());
    let started = Instant::now();
    let (sent, _) = b.syn_flood(FLOOD_RATE, FLOOD_SECS)?;
    thread::sleep(Duration::from_secs(DRAIN_SECS));
    let window = started.elapsed().as_secs_f64();
    let flood_cpu = (cpu_seconds(agent.pid()) - cpu0) / window * 100.0;
    let flood_rss = rss_kib(agent.pid());
    let writes = event_writes(&dir, api_port)? - writes0;
    let events = api_get(&dir, api_port, "/api/v1/events?fieldSelector=reportingComponent%3Dobserver")?;
    let series_count = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["series"]["count"].as_u64())
        .max()
        .unwrap_or(0);
    if sent == 0 {
        bail!("the flood sent nothing");
    }
    let result = AgentResult {
        idle_cpu_percent: idle_cpu,
        idle_rss_kib: idle_rss,
        flood_syns_sent: sent,
        flood_secs: FLOOD_SECS,
        event_writes: writes,
        event_writes_per_sec: writes as f64 / window,
        series_count,
        flood_cpu_percent: flood_cpu,
        flood_rss_kib: flood_rss,
    };
    println!(
        "   agent under a {FLOOD_RATE}/s drop flood ({sent} SYNs): {} Event writes in {window:.0} s ({:.2}/s), series count {series_count}, {flood_cpu:.1} % CPU, RSS {flood_rss} KiB",
        result.event_writes, result.event_writes_per_sec
    );
    drop(agent);
    drop(api);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(result)
}
