//! 1. Datapath overhead: pod-to-pod request/response rate and bulk throughput across node-a,
//!    with no observer, `observer diagnose`, tcpdump (SYN/RST filter on the node's interfaces) and
//!    bpftrace (counting skb:kfree_skb); interleaved repetitions, medians, ratios to none. Then
//!    the per-program cost of observer's programs from the kernel's BPF run-time statistics.

use std::{collections::BTreeMap, thread, time::Duration};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::Value;

use super::{
    procs::{bpf_fds, bpf_name, cpu_seconds, in_netns, median, output_of, Background},
    Bench, CLIENT_CPU, TOOLS_CPU,
};

#[derive(Debug, Serialize)]
pub struct ConfigResult {
    pub name: &'static str,
    /// Round trips per second, one per repetition.
    pub rr: Vec<f64>,
    /// Bulk throughput, Gbit/s, one per repetition.
    pub bulk_gbps: Vec<f64>,
    pub rr_median: f64,
    pub bulk_median: f64,
    /// Median relative to no observer (1.0 = no cost).
    pub rr_ratio: f64,
    pub bulk_ratio: f64,
    /// (max - min) / median of this configuration's repetitions.
    pub rr_spread: f64,
    pub bulk_spread: f64,
    /// CPU seconds the tool itself used over all its runs.
    pub tool_cpu_secs: f64,
}

#[derive(Debug, Serialize)]
pub struct ProgramCost {
    pub name: String,
    /// Average ns per run while the request/response load ran (ordinary data segments).
    pub rr_ns_per_run: Option<f64>,
    pub rr_runs: u64,
    /// During the bulk transfer (ordinary segments, large).
    pub bulk_ns_per_run: Option<f64>,
    pub bulk_runs: u64,
    /// During a SYN flood to a dropped port (handshake packets and drops: events emitted).
    pub handshake_ns_per_run: Option<f64>,
    pub handshake_runs: u64,
}

#[derive(Debug, Serialize)]
pub struct Overhead {
    pub repetitions: usize,
    pub secs_per_run: f64,
    pub configs: Vec<ConfigResult>,
    pub programs: Vec<ProgramCost>,
    /// Sum over observer's programs of their run time per request/response round trip.
    pub observer_ns_per_round_trip: f64,
    /// That time as a share of one round trip without observer.
    pub observer_share_of_round_trip: f64,
}

const CONFIGS: [&str; 4] = ["none", "observer", "tcpdump", "bpftrace"];
const RR_PORT: &str = "7100";
const BULK_PORT: &str = "5201";

pub fn run(b: &Bench<'_>) -> anyhow::Result<Overhead> {
    let server = b.server_ip.to_string();
    let _rr_server =
        Background::start(in_netns(Some(&b.server_ns), Some(CLIENT_CPU), &b.load, &["rr-server", RR_PORT]), false)?;
    let _bulk_server =
        Background::start(in_netns(Some(&b.server_ns), Some(CLIENT_CPU), "iperf3", &["-s", "-p", BULK_PORT]), false)?;
    thread::sleep(Duration::from_millis(500));
    let mut rr: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut bulk: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut cpu: BTreeMap<&str, f64> = BTreeMap::new();
    for rep in 0..b.reps {
        // Interleaved, and each repetition starts with another configuration.
        for i in 0..CONFIGS.len() {
            let config = CONFIGS[(rep + i) % CONFIGS.len()];
            let tool = start_config(b, config)?;
            let (r, g) = (rr_run(b, &server)?.0, bulk_run(b, &server)?);
            if let Some(tool) = tool {
                *cpu.entry(config).or_default() += cpu_seconds(tool.pid());
                tool.stop();
            }
            println!("   rep {}/{} {config:<9} {r:>9.0} round trips/s  {g:>6.2} Gbit/s", rep + 1, b.reps);
            rr.entry(config).or_default().push(r);
            bulk.entry(config).or_default().push(g);
        }
    }
    let base_rr = median(rr.get("none").map(Vec::as_slice).unwrap_or_default());
    let base_bulk = median(bulk.get("none").map(Vec::as_slice).unwrap_or_default());
    let spread = |v: &[f64]| {
        let m = median(v);
        let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        if m > 0.0 {
            (hi - lo) / m
        } else {
            0.0
        }
    };
    let configs = CONFIGS
        .iter()
        .map(|&name| {
            let r = rr.remove(name).unwrap_or_default();
            let g = bulk.remove(name).unwrap_or_default();
            ConfigResult {
                name,
                rr_median: median(&r),
                bulk_median: median(&g),
                rr_ratio: if base_rr > 0.0 { median(&r) / base_rr } else { 0.0 },
                bulk_ratio: if base_bulk > 0.0 { median(&g) / base_bulk } else { 0.0 },
                rr_spread: spread(&r),
                bulk_spread: spread(&g),
                tool_cpu_secs: cpu.get(name).copied().unwrap_or(0.0),
                rr: r,
                bulk_gbps: g,
            }
        })
        .collect();
    let (programs, ns_per_rt) = program_costs(b, &server)?;
    Ok(Overhead {
        repetitions: b.reps,
        secs_per_run: b.secs,
        configs,
        programs,
        observer_ns_per_round_trip: ns_per_rt,
        observer_share_of_round_trip: if base_rr > 0.0 { ns_per_rt * base_rr / 1e9 } else { 0.0 },
    })
}

/// Starts the tool of a configuration on the other CPU, ready when this returns.
fn start_config(b: &Bench<'_>, config: &str) -> anyhow::Result<Option<Background>> {
    Ok(match config {
        "observer" => Some(b.start_observer(&["diagnose", "--output", "json"], true)?),
        "tcpdump" => {
            let tool = Background::start(
                in_netns(
                    Some(&b.node_ns),
                    Some(TOOLS_CPU),
                    "tcpdump",
                    &["-i", "any", "-n", "-w", "/dev/null", "tcp[tcpflags] & (tcp-syn|tcp-rst) != 0"],
                ),
                true,
            )?;
            tool.wait_for("listening on", Duration::from_secs(15))?;
            Some(tool)
        }
        "bpftrace" => {
            let tool = Background::start(
                in_netns(
                    None,
                    Some(TOOLS_CPU),
                    "bpftrace",
                    &["-e", "tracepoint:skb:kfree_skb { @drops[args->reason] = count(); }"],
                ),
                true,
            )?;
            tool.wait_for("Attaching", Duration::from_secs(30))?;
            Some(tool)
        }
        _ => None,
    })
}

/// One request/response run: (round trips per second, round trips).
fn rr_run(b: &Bench<'_>, server: &str) -> anyhow::Result<(f64, f64)> {
    let out = output_of(in_netns(
        Some(&b.client_ns),
        Some(CLIENT_CPU),
        &b.load,
        &["rr-client", &format!("{server}:{RR_PORT}"), &b.secs.to_string()],
    ))?;
    let v: Value = serde_json::from_str(out.trim()).with_context(|| format!("rr-client said {out}"))?;
    Ok((v["rate"].as_f64().context("rr-client: no rate")?, v["round_trips"].as_f64().unwrap_or(0.0)))
}

fn bulk_run(b: &Bench<'_>, server: &str) -> anyhow::Result<f64> {
    let secs = b.secs.max(1.0).round().to_string();
    let out = output_of(in_netns(
        Some(&b.client_ns),
        Some(CLIENT_CPU),
        "iperf3",
        &["-c", server, "-p", BULK_PORT, "-t", &secs, "-J"],
    ))?;
    let v: Value = serde_json::from_str(&out).context("iperf3 -J output")?;
    let bps = v["end"]["sum_received"]["bits_per_second"].as_f64().context("iperf3: no sum_received")?;
    Ok(bps / 1e9)
}

/// Kernel BPF statistics (`kernel.bpf_stats_enabled`, on only for this measurement) of every
/// observer program, per workload.
fn program_costs(b: &Bench<'_>, server: &str) -> anyhow::Result<(Vec<ProgramCost>, f64)> {
    let previous = output_of(in_netns(None, None, "sysctl", &["-n", "kernel.bpf_stats_enabled"]))?.trim().to_string();
    output_of(in_netns(None, None, "sysctl", &["-w", "kernel.bpf_stats_enabled=1"]))?;
    let result = (|| {
        let observer = b.start_observer(&["diagnose", "--output", "json"], true)?;
        let pid = observer.pid();
        let s0 = bpf_fds(pid);
        let (_, round_trips) = rr_run(b, server)?;
        let s1 = bpf_fds(pid);
        bulk_run(b, server)?;
        let s2 = bpf_fds(pid);
        b.syn_flood(20_000, 2.0)?;
        let s3 = bpf_fds(pid);
        let names: BTreeMap<u64, String> = s3.keys().filter(|k| k.0).map(|k| (k.1, bpf_name(true, k.1))).collect();
        observer.stop();
        let mut programs = Vec::new();
        let mut rr_total_ns = 0.0;
        for (key, end) in s3.iter().filter(|(k, _)| k.0) {
            let at = |s: &BTreeMap<(bool, u64), super::procs::BpfFd>| s.get(key).cloned().unwrap_or_default();
            let delta = |a: &super::procs::BpfFd, z: &super::procs::BpfFd| {
                let runs = z.run_cnt.saturating_sub(a.run_cnt);
                let ns = z.run_time_ns.saturating_sub(a.run_time_ns);
                (runs, (runs > 0).then(|| ns as f64 / runs as f64), ns)
            };
            let (rr_runs, rr_ns, rr_time) = delta(&at(&s0), &at(&s1));
            let (bulk_runs, bulk_ns, _) = delta(&at(&s1), &at(&s2));
            let (hs_runs, hs_ns, _) = delta(&at(&s2), end);
            rr_total_ns += rr_time as f64;
            programs.push(ProgramCost {
                name: names.get(&key.1).cloned().unwrap_or_default(),
                rr_ns_per_run: rr_ns,
                rr_runs,
                bulk_ns_per_run: bulk_ns,
                bulk_runs,
                handshake_ns_per_run: hs_ns,
                handshake_runs: hs_runs,
            });
        }
        programs.sort_by(|a, b| a.name.cmp(&b.name));
        let per_rt = if round_trips > 0.0 { rr_total_ns / round_trips } else { 0.0 };
        Ok::<_, anyhow::Error>((programs, per_rt))
    })();
    output_of(in_netns(None, None, "sysctl", &["-w", &format!("kernel.bpf_stats_enabled={previous}")]))?;
    result
}
