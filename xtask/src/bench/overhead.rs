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
    testrun::{self, SyntheticCost},
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
    /// Round trips of the request/response run the statistics were taken over.
    pub stats_round_trips: f64,
    /// Runs of observer's programs per round trip in that run.
    pub observer_runs_per_round_trip: f64,
    /// ns per run the statistics report for an empty classifier (their own overhead).
    pub stats_floor_ns: Option<f64>,
    /// `observer_ns_per_round_trip` less the floor for each of observer's runs per round trip.
    pub observer_ns_per_round_trip_net: Option<f64>,
    /// The empty classifier and observer's packet programs on a synthetic ordinary segment.
    pub synthetic: Vec<SyntheticCost>,
    /// The empty classifier attached (tcx, both directions) to every interface observer attaches
    /// to, alone, during a request/response run of its own: ns per run by the statistics.
    pub empty_in_traffic_ns: Option<f64>,
    /// Its runs per round trip there.
    pub empty_in_traffic_runs_per_round_trip: Option<f64>,
    /// `observer_ns_per_round_trip` less `empty_in_traffic_ns` for each of observer's runs.
    pub observer_ns_per_round_trip_net_of_empty: Option<f64>,
    /// Test runs per synthetic measurement.
    pub synthetic_repeat: u32,
    /// `observer diagnose --cgroup-skb on` (the socket programs attached too, as `trace` has
    /// them) in a request/response run of its own: (ns per round trip, runs per round trip) of
    /// all its programs by the statistics.
    pub with_cgroup_skb: Option<(f64, f64)>,
}

/// What the statistics pass measured.
struct Costs {
    programs: Vec<ProgramCost>,
    ns_per_round_trip: f64,
    round_trips: f64,
    runs_per_round_trip: f64,
    synthetic: Vec<SyntheticCost>,
    /// (ns per run, runs per round trip) of the empty classifier in traffic.
    empty_in_traffic: Option<(f64, f64)>,
    /// (ns, runs) per round trip of observer with the cgroup_skb programs attached.
    with_cgroup_skb: Option<(f64, f64)>,
}

/// Test runs per synthetic measurement.
const TEST_RUN_REPEAT: u32 = 2_000_000;
/// observer's programs that see every packet (the others run per connection or per drop).
const PACKET_PROGRAMS: [&str; 4] =
    ["observer_tc_ingress", "observer_tc_egress", "observer_cgroup_ingress", "observer_cgroup_egress"];

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
    let costs = program_costs(b, &server)?;
    let ns_per_rt = costs.ns_per_round_trip;
    let floor = costs.synthetic.iter().find(|c| c.program == EMPTY).and_then(|c| c.stats_ns_per_run);
    Ok(Overhead {
        repetitions: b.reps,
        secs_per_run: b.secs,
        configs,
        programs: costs.programs,
        observer_ns_per_round_trip: ns_per_rt,
        observer_share_of_round_trip: if base_rr > 0.0 { ns_per_rt * base_rr / 1e9 } else { 0.0 },
        stats_round_trips: costs.round_trips,
        observer_runs_per_round_trip: costs.runs_per_round_trip,
        stats_floor_ns: floor,
        observer_ns_per_round_trip_net: floor.map(|f| ns_per_rt - f * costs.runs_per_round_trip),
        synthetic: costs.synthetic,
        synthetic_repeat: TEST_RUN_REPEAT,
        with_cgroup_skb: costs.with_cgroup_skb,
        empty_in_traffic_ns: costs.empty_in_traffic.map(|e| e.0),
        empty_in_traffic_runs_per_round_trip: costs.empty_in_traffic.map(|e| e.1),
        observer_ns_per_round_trip_net_of_empty: costs
            .empty_in_traffic
            .map(|e| ns_per_rt - e.0 * costs.runs_per_round_trip),
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
fn program_costs(b: &Bench<'_>, server: &str) -> anyhow::Result<Costs> {
    let previous = output_of(in_netns(None, None, "sysctl", &["-n", "kernel.bpf_stats_enabled"]))?.trim().to_string();
    output_of(in_netns(None, None, "sysctl", &["-w", "kernel.bpf_stats_enabled=1"]))?;
    let result = (|| {
        let empty_in_traffic = empty_in_traffic(b, server)?;
        let (with_cgroup_skb, synthetic) = with_cgroup_skb(b, server)?;
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
        let (mut rr_total_ns, mut rr_total_runs) = (0.0, 0u64);
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
            rr_total_runs += rr_runs;
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
        let per_rt = |x: f64| if round_trips > 0.0 { x / round_trips } else { 0.0 };
        Ok::<_, anyhow::Error>(Costs {
            programs,
            ns_per_round_trip: per_rt(rr_total_ns),
            round_trips,
            runs_per_round_trip: per_rt(rr_total_runs as f64),
            synthetic,
            empty_in_traffic,
            with_cgroup_skb,
        })
    })();
    output_of(in_netns(None, None, "sysctl", &["-w", &format!("kernel.bpf_stats_enabled={previous}")]))?;
    result
}

/// Name of the empty classifier's row.
pub const EMPTY: &str = "empty classifier (r0 = 3; exit)";

/// The empty classifier and observer's packet programs (`names`: id -> name of the running
/// observer's programs) run on a synthetic ordinary segment, with the statistics on and off.
/// Leaves the statistics off.
fn synthetic_costs(names: &BTreeMap<u64, String>) -> anyhow::Result<Vec<SyntheticCost>> {
    let set_stats = |on: bool| {
        let value = if on { "kernel.bpf_stats_enabled=1" } else { "kernel.bpf_stats_enabled=0" };
        output_of(in_netns(None, None, "sysctl", &["-w", value])).map(drop)
    };
    let segment = testrun::ordinary_segment();
    let packet = ("ordinary segment", segment.as_slice());
    let empty = testrun::load_empty()?;
    let mut out = vec![testrun::measure(EMPTY, &empty, packet, TEST_RUN_REPEAT, &set_stats)?];
    for name in PACKET_PROGRAMS {
        if let Some((id, _)) = names.iter().find(|(_, n)| *n == name) {
            let prog = testrun::open_by_id(*id)?;
            out.push(testrun::measure(name, &prog, packet, TEST_RUN_REPEAT, &set_stats)?);
        }
    }
    for c in &out {
        println!(
            "   test run {:<36} stats {:>5.1} ns/run  test-run clock {:>5.1} ns/run",
            c.program,
            c.stats_ns_per_run.unwrap_or(f64::NAN),
            c.test_run_ns.unwrap_or(f64::NAN)
        );
    }
    Ok(out)
}

/// The empty classifier attached alone where observer attaches its classifiers (every interface
/// of the node's namespace but loopback and bridges) during a request/response run (the
/// statistics on): (ns per run, runs per round trip), None when it made no runs.
fn empty_in_traffic(b: &Bench<'_>, server: &str) -> anyhow::Result<Option<(f64, f64)>> {
    let listed = output_of(in_netns(None, None, "ip", &["-n", &b.node_ns, "-j", "-d", "link", "show"]))?;
    let listed: serde_json::Value = serde_json::from_str(&listed).context("`ip -j -d link show`'s JSON")?;
    let ifindexes: Vec<u32> = listed
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["ifname"] != "lo" && l["linkinfo"]["info_kind"] != "bridge")
        .filter_map(|l| l["ifindex"].as_u64().and_then(|i| u32::try_from(i).ok()))
        .collect();
    let empty = testrun::load_empty()?;
    let links = testrun::attach_tcx(&empty, std::path::Path::new(&format!("/run/netns/{}", b.node_ns)), &ifindexes)?;
    let (t0, n0) = testrun::stats_of(&empty)?;
    let (_, round_trips) = rr_run(b, server)?;
    let (t1, n1) = testrun::stats_of(&empty)?;
    drop(links);
    let runs = n1.saturating_sub(n0);
    let result = (runs > 0 && round_trips > 0.0)
        .then(|| (t1.saturating_sub(t0) as f64 / runs as f64, runs as f64 / round_trips));
    if let Some((ns, per_rt)) = result {
        println!("   empty classifier in traffic: {ns:.1} ns/run, {per_rt:.1} runs per round trip");
    }
    Ok(result)
}

/// (ns, program runs) per round trip.
type NsAndRuns = (f64, f64);

/// `observer diagnose --cgroup-skb on` during a request/response run of its own (the statistics
/// on): (ns, runs) per round trip of all its programs (None when the run made no round trips),
/// and the synthetic test runs of its packet programs (all of them loaded here; `diagnose`
/// without the switch does not load the cgroup_skb ones).
fn with_cgroup_skb(b: &Bench<'_>, server: &str) -> anyhow::Result<(Option<NsAndRuns>, Vec<SyntheticCost>)> {
    let observer = b.start_observer(&["diagnose", "--output", "json", "--cgroup-skb", "on"], true)?;
    let pid = observer.pid();
    let total = |s: &BTreeMap<(bool, u64), super::procs::BpfFd>| {
        s.iter().filter(|(k, _)| k.0).fold((0u64, 0u64), |(ns, runs), (_, fd)| (ns + fd.run_time_ns, runs + fd.run_cnt))
    };
    let (ns0, runs0) = total(&bpf_fds(pid));
    let (_, round_trips) = rr_run(b, server)?;
    let after = bpf_fds(pid);
    let (ns1, runs1) = total(&after);
    let names: BTreeMap<u64, String> = after.keys().filter(|k| k.0).map(|k| (k.1, bpf_name(true, k.1))).collect();
    let synthetic = synthetic_costs(&names);
    observer.stop();
    // The test runs leave the statistics off; the measurements after this need them.
    output_of(in_netns(None, None, "sysctl", &["-w", "kernel.bpf_stats_enabled=1"]))?;
    let result = (round_trips > 0.0)
        .then(|| (ns1.saturating_sub(ns0) as f64 / round_trips, runs1.saturating_sub(runs0) as f64 / round_trips));
    if let Some((ns, runs)) = result {
        println!("   with --cgroup-skb on: {ns:.0} ns and {runs:.1} program runs per round trip");
    }
    Ok((result, synthetic?))
}
