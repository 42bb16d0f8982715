//! bench/results.json and BENCHMARKS.md.

use serde::Serialize;

use super::{
    agent::AgentResult, latency::LatencyResult, overhead::Overhead, pipeline::FloodResult, scale::Scale,
    userspace::UserspaceResult,
};
use crate::shell;

#[derive(Debug, Serialize)]
pub struct Machine {
    pub kernel: String,
    pub cpu: String,
    pub cpus: usize,
    pub memory_gib: f64,
    pub date: String,
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub machine: Machine,
    pub duration_secs: f64,
    pub overhead: Overhead,
    pub pipeline: Vec<FloodResult>,
    pub latency: Vec<LatencyResult>,
    pub scale: Scale,
    pub userspace: Vec<UserspaceResult>,
    pub agent: AgentResult,
    /// This run's ratios next to the previous run's on this machine (bench/results.json before).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub versus_previous_run: Vec<RatioCheck>,
}

/// One configuration's ratio in this run and the previous one, and whether the difference is
/// within the spread this run measured for it.
#[derive(Debug, Serialize)]
pub struct RatioCheck {
    pub name: String,
    pub metric: &'static str,
    pub previous: f64,
    pub now: f64,
    /// Allowed difference: this row's spread plus the baseline's, relative.
    pub spread: f64,
    pub within_spread: bool,
}

/// Compares with the previous run's `results.json` (if any).
pub fn compare(previous: &serde_json::Value, overhead: &Overhead) -> Vec<RatioCheck> {
    let Some(configs) = previous["overhead"]["configs"].as_array() else { return Vec::new() };
    let base = overhead.configs.iter().find(|c| c.name == "none");
    let mut out = Vec::new();
    for c in overhead.configs.iter().filter(|c| c.name != "none") {
        let Some(prev) = configs.iter().find(|p| p["name"] == c.name) else { continue };
        for (metric, now, prev, spread, base_spread) in [
            ("req/resp ratio", c.rr_ratio, prev["rr_ratio"].as_f64(), c.rr_spread, base.map_or(0.0, |b| b.rr_spread)),
            (
                "bulk ratio",
                c.bulk_ratio,
                prev["bulk_ratio"].as_f64(),
                c.bulk_spread,
                base.map_or(0.0, |b| b.bulk_spread),
            ),
        ] {
            let Some(prev) = prev else { continue };
            let spread = spread + base_spread;
            out.push(RatioCheck {
                name: c.name.to_string(),
                metric,
                previous: prev,
                now,
                spread,
                within_spread: (now - prev).abs() <= spread * now.max(prev),
            });
        }
    }
    out
}

impl Results {
    pub fn new(
        overhead: Overhead,
        pipeline: Vec<FloodResult>,
        latency: Vec<LatencyResult>,
        scale: Scale,
        userspace: Vec<UserspaceResult>,
        agent: AgentResult,
        duration_secs: f64,
    ) -> Self {
        Self {
            machine: machine(),
            duration_secs,
            overhead,
            pipeline,
            latency,
            scale,
            userspace,
            agent,
            versus_previous_run: Vec::new(),
        }
    }
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    Machine {
        kernel: shell::output(shell::command("uname").arg("-r")).trim().to_string(),
        cpu: cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into()),
        cpus: cpuinfo.lines().filter(|l| l.starts_with("processor")).count(),
        memory_gib: meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kib| (kib / 1024.0 / 1024.0 * 10.0).round() / 10.0),
        date: shell::output(shell::command("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])).trim().to_string(),
    }
}

pub fn markdown(r: &Results) -> String {
    let m = &r.machine;
    let o = &r.overhead;
    let mut s = String::new();
    s.push_str("# Benchmarks\n\n");
    s.push_str(&format!(
        "Produced by `cargo xtask bench` on {} ({} CPUs, {} GiB), Linux {}, {} — {:.0} s in all.\n\
         Raw numbers: [bench/results.json](bench/results.json). Every number below comes from that run;\n\
         rerun the command to reproduce it on your machine.\n\n",
        m.cpu, m.cpus, m.memory_gib, m.kernel, m.date, r.duration_secs
    ));
    s.push_str(&format!(
        "## 1. Datapath overhead\n\nPod-to-pod TCP across node-a (the lab's ambient pod `cart` on node-a -> istiod's pod on\n\
         node-b, no sidecar capture on either end): 1-byte request/response over one connection and an\n\
         iperf3 bulk transfer, {} s each, client and server pinned to CPU 1, the tools on CPU 0.\n\
         {} repetitions, configurations interleaved (each repetition starts with the next one). Ratio =\n\
         median / median without any tool (1.00 = no cost); spread = (max - min) / median of that row.\n\n",
        o.secs_per_run, o.repetitions
    ));
    s.push_str("| configuration | round trips/s (median) | ratio | spread | bulk Gbit/s (median) | ratio | spread | tool CPU s |\n");
    s.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for c in &o.configs {
        s.push_str(&format!(
            "| {} | {:.0} | {:.3} | {:.1} % | {:.2} | {:.3} | {:.1} % | {:.2} |\n",
            label(c.name),
            c.rr_median,
            c.rr_ratio,
            c.rr_spread * 100.0,
            c.bulk_median,
            c.bulk_ratio,
            c.bulk_spread * 100.0,
            c.tool_cpu_secs
        ));
    }
    if !r.versus_previous_run.is_empty() {
        s.push_str("\nAgainst the previous run on this machine (allowed difference = this row's spread + the\nbaseline's spread):\n\n| configuration | metric | previous | this run | allowed | within |\n| --- | --- | ---: | ---: | ---: | --- |\n");
        for c in &r.versus_previous_run {
            s.push_str(&format!(
                "| {} | {} | {:.3} | {:.3} | ±{:.1} % | {} |\n",
                label(&c.name),
                c.metric,
                c.previous,
                c.now,
                c.spread * 100.0,
                if c.within_spread { "yes" } else { "**no**" }
            ));
        }
    }
    s.push_str(&format!(
        "\nPer-program cost from the kernel's BPF run-time statistics (`kernel.bpf_stats_enabled=1`, only\n\
         for this measurement): average ns per run during the request/response load and the bulk\n\
         transfer (ordinary, non-handshake segments) and during a 20k SYN/s flood to a dropped port\n\
         (handshake packets, drops, events emitted). observer's programs together cost **{:.0} ns per\n\
         round trip**, {:.2} % of a round trip without observer.\n\n",
        o.observer_ns_per_round_trip,
        o.observer_share_of_round_trip * 100.0
    ));
    s.push_str("| program | ns/run (req/resp) | runs | ns/run (bulk) | runs | ns/run (SYN flood) | runs |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    let ns = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.0}"));
    for p in &o.programs {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            p.name,
            ns(p.rr_ns_per_run),
            p.rr_runs,
            ns(p.bulk_ns_per_run),
            p.bulk_runs,
            ns(p.handshake_ns_per_run),
            p.handshake_runs
        ));
    }
    s.push_str("\n## 2. Event pipeline\n\nSYN floods (raw socket, successive source ports) from `cart` to a port node-a's FORWARD chain\ndrops, 2 s each, one fresh `observer trace --port 9999 --output json` (to /dev/null) per rate.\nEach SYN yields several events (the SYN at the pod's veth and at the bridge, its NETFILTER_DROP).\n\n");
    s.push_str("| target SYN/s | SYNs sent | events | events/s | ring buffer full | observer CPU s | µs CPU/event |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for f in &r.pipeline {
        s.push_str(&format!(
            "| {} | {} | {} | {:.0} | {} | {:.2} | {:.2} |\n",
            if f.target_rate == 0 { "max".to_string() } else { f.target_rate.to_string() },
            f.syns_sent,
            f.events,
            f.events_per_sec,
            f.ringbuf_full,
            f.cpu_secs,
            f.cpu_us_per_event
        ));
    }
    s.push_str("\n## 3. Detection latency\n\nFrom just before the client starts its connection to the `finding:` line of `observer diagnose`\n(includes starting the client process). A netfilter drop is announced once its culprit rule\nis known (a drop waits 50 ms to be batched, and a namespace's rules are read at most every\n250 ms, on a worker thread); a silent drop needs the first SYN\nretransmission (1 s) to be told from a slow answer.\n\n");
    s.push_str("| case | trials | p50 ms | p99 ms | max ms |\n| --- | ---: | ---: | ---: | ---: |\n");
    for l in &r.latency {
        s.push_str(&format!("| {} | {} | {:.1} | {:.1} | {:.1} |\n", l.case, l.trials, l.p50_ms, l.p99_ms, l.max_ms));
    }
    let sc = &r.scale;
    s.push_str(&format!(
        "\n## 4. Memory and scale\n\n- observer diagnose RSS: {:.1} MiB idle; {:.1} MiB after {} SYNs of distinct connections ({} connections tracked).\n\
         - Time to `ready` (load, verify, attach): {:.2} s with {} veths in the namespace, {:.2} s with one veth pair.\n\
         - Kernel maps:\n\n| map | max entries | memory (KiB) |\n| --- | ---: | ---: |\n",
        sc.rss_idle_kib as f64 / 1024.0,
        sc.rss_with_flows_kib as f64 / 1024.0,
        sc.syns_sent,
        sc.tracked_connections,
        sc.ready_secs_with_veths,
        sc.veths,
        sc.ready_secs_baseline
    ));
    for map in &sc.maps {
        s.push_str(&format!("| {} | {} | {} |\n", map.name, map.max_entries, map.memlock_kib));
    }
    s.push_str("\n## 5. Userspace decode/correlate\n\n`cargo bench -p observer --bench pipeline` (divan, 30 samples): 10,000 ring-buffer records\nshaped like blocked xDS connections (SYN at the veth and the bridge, the NETFILTER_DROP, an RTO).\n\n| benchmark | median per 10k records | records/s |\n| --- | ---: | ---: |\n");
    for u in &r.userspace {
        s.push_str(&format!("| {} | {} | {:.2} M |\n", u.bench, u.median, u.median_items_per_sec / 1e6));
    }
    let a = &r.agent;
    s.push_str(&format!(
        "\n## 7. Agent\n\n`observer agent` on node-a, fed by the test API server (TLS, token, the lab's inventory), \
         metrics and Events on. Idle: attached and synced, no traffic, {idle} s. Flood: {syns} SYNs \
         (distinct dropped connections) in {flood} s, measured until {drain} s after it.\n\n\
         | | CPU | RSS |\n| --- | ---: | ---: |\n| idle | {:.2} % | {} KiB |\n| drop flood | {:.1} % | {} KiB |\n\n\
         Kubernetes Event writes (creates + series patches) reaching the API server during the flood: {} \
         ({:.2}/s; the agent's limit is 5/s, burst 20, one series update per Event per 5 s); the \
         finding's Event series count: {}.\n",
        a.idle_cpu_percent,
        a.idle_rss_kib,
        a.flood_cpu_percent,
        a.flood_rss_kib,
        a.event_writes,
        a.event_writes_per_sec,
        a.series_count,
        idle = 10,
        syns = a.flood_syns_sent,
        flood = a.flood_secs,
        drain = 10,
    ));
    s
}

fn label(config: &str) -> &str {
    match config {
        "none" => "no observer",
        "observer" => "`observer diagnose`",
        "tcpdump" => "`tcpdump` (SYN/RST filter, all node interfaces)",
        "bpftrace" => "`bpftrace` (count skb:kfree_skb)",
        other => other,
    }
}
