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
    /// /proc/loadavg's 1, 5 and 15 minute averages at the end of the run (other work on the machine).
    pub loadavg: String,
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
        loadavg: std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
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
         rerun the command to reproduce it on your machine. Load average (1, 5, 15 min) at the end of\n\
         the run: {} on {} CPUs; anything above the benchmark's own load is other work sharing the machine,\n\
         which the wall-clock rows feel most.\n\n",
        m.cpu, m.cpus, m.memory_gib, m.kernel, m.date, r.duration_secs, m.loadavg, m.cpus
    ));
    push_goals(&mut s, r);
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
    push_floor(&mut s, o);
    push_directions(&mut s, r);
    let per_syn = r.pipeline.iter().map(|f| f.events as f64 / f.syns_sent.max(1) as f64).fold(0.0, f64::max);
    s.push_str(&format!(
        "\n## 2. Event pipeline\n\nSYN floods (raw socket, successive source ports) from `cart` to a port node-a's FORWARD chain\n\
         drops, 2 s each, one fresh `observer trace --port 9999 --output json` (to /dev/null) per rate.\n\
         Each SYN yields up to {per_syn:.1} events here (the SYN at the client's socket, by cgroup_skb egress, and at\n\
         the pod's veth, then its NETFILTER_DROP; bridges carry no classifiers).\n\n"
    ));
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
    s.push_str("\n## 3. Detection latency\n\nFrom just before the client starts its connection to the `finding:` line of `observer diagnose`\n(includes starting the client process; each trial has a fresh `observer diagnose`, started and\nready before the clock starts, since a diagnosis announces a flow's finding once). A netfilter drop is announced once its culprit rule\nis known (drops read from the ring buffer together share one read, and a namespace's rules are read at most every\n250 ms, on a worker thread); a silent drop is decided when the\nclient gives up (the bench's client: 1.3 s) or at its third SYN (3 s).\n\n");
    s.push_str("| case | trials | p50 ms | p99 ms | max ms |\n| --- | ---: | ---: | ---: | ---: |\n");
    for l in &r.latency {
        s.push_str(&format!("| {} | {} | {:.1} | {:.1} | {:.1} |\n", l.case, l.trials, l.p50_ms, l.p99_ms, l.max_ms));
    }
    let sc = &r.scale;
    s.push_str(&format!(
        "\n## 4. Memory and scale\n\n- observer diagnose RSS: {:.1} MiB idle; {:.1} MiB after {} SYNs of distinct connections ({} connections tracked).\n\
         - Time to `ready` (load, verify, attach) of `observer trace --cgroup-skb off` (the programs `diagnose`\n  \
         and the agent load by default): {:.2} s with {} veths in the namespace (tcx links), {:.2} s with\n  \
         `--tc-attach netlink` (cls_bpf filters), {:.2} s with one veth pair ({:.2} s with the cgroup_skb programs\n  \
         loaded and attached too, `trace`'s default).\n\
         - The same veths given an empty classifier by tcx links (ingress and egress): {:.1} ms per link from one\n  \
         thread, {:.1} ms per link from {} threads at once (see \"Datapath cost: directions\" above).\n\
         - New interfaces (a veth pair added to a watched namespace under a running `observer trace`, {} pairs\n  \
         one at a time), from `ip link add` being run to observer's \"classifiers attached\" line for both veths:\n  \
         {} with tcx links, {} with `--tc-attach netlink`. observer's wait for events also wakes on its\n  \
         link monitor, so a new interface is attached without waiting for a timeout.\n\
         - Kernel maps:\n\n| map | max entries | memory (KiB) |\n| --- | ---: | ---: |\n",
        sc.rss_idle_kib as f64 / 1024.0,
        sc.rss_with_flows_kib as f64 / 1024.0,
        sc.syns_sent,
        sc.tracked_connections,
        sc.ready_secs_with_veths,
        sc.veths,
        sc.ready_secs_with_veths_netlink,
        sc.ready_secs_baseline,
        sc.ready_secs_baseline_with_cgroup_skb,
        sc.tcx_attach_ms_serial,
        sc.tcx_attach_ms_parallel,
        sc.parallel_threads,
        sc.new_interface_ms.len(),
        median_max_ms(&sc.new_interface_ms),
        median_max_ms(&sc.new_interface_ms_netlink)
    ));
    for map in &sc.maps {
        s.push_str(&format!("| {} | {} | {} |\n", map.name, map.max_entries, map.memlock_kib));
    }
    s.push_str("\n## 5. Userspace decode/correlate\n\n`cargo bench -p observer --bench pipeline` (divan, 30 samples): 10,000 ring-buffer records\nshaped like blocked xDS connections (SYN at the veth and the bridge, the NETFILTER_DROP, an RTO);\n`decode_name_json_10k_records` is `observer trace --output json`'s per-record path (decode, name, the JSON line).\n\n| benchmark | median per 10k records | records/s |\n| --- | ---: | ---: |\n");
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

/// The statistics' own cost (an empty classifier under them) and observer's packet programs on
/// a synthetic ordinary segment.
fn push_floor(s: &mut String, o: &Overhead) {
    let ns = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.1}"));
    if let (Some(floor), Some(net)) = (o.stats_floor_ns, o.observer_ns_per_round_trip_net) {
        let runs = o.observer_runs_per_round_trip;
        s.push_str(&format!(
            "\nThe statistics cost something themselves (two clock reads and two additions per run): an empty\n\
             classifier run under them reports **{floor:.1} ns per run**. observer's programs ran {runs:.1} times\n\
             per round trip, so **{net:.0} ns per round trip** of the {:.0} above is observer's own.\n",
            o.observer_ns_per_round_trip
        ));
    }
    if let (Some(empty), Some(per_rt), Some(net)) =
        (o.empty_in_traffic_ns, o.empty_in_traffic_runs_per_round_trip, o.observer_ns_per_round_trip_net_of_empty)
    {
        s.push_str(&format!(
            "\nAn empty classifier attached alone (tcx, both directions) to the same interfaces, in a\n\
             request/response run of its own, costs **{empty:.1} ns per run** by the same statistics ({per_rt:.1} runs\n\
             per round trip): what any program at these hooks costs on this machine, cold caches included.\n\
             Less that for each of observer's runs, observer's own work is **{net:.0} ns per round trip**.\n"
        ));
    }
    if o.synthetic.is_empty() {
        return;
    }
    s.push_str(&format!(
        "\nobserver's packet programs (from the `--cgroup-skb on` run, which loads all four) on a synthetic\n\
         ordinary TCP segment (ACK|PSH, one byte) with\n\
         `BPF_PROG_TEST_RUN` ({} runs each): ns per run by the statistics, and by the test run's own clock\n\
         with the statistics off (the loop's overhead included, as the empty classifier shows):\n\n\
         | program | ns/run (statistics) | ns/run (test run, statistics off) |\n| --- | ---: | ---: |\n",
        o.synthetic_repeat
    ));
    for c in &o.synthetic {
        s.push_str(&format!("| {} | {} | {} |\n", c.program, ns(c.stats_ns_per_run), ns(c.test_run_ns)));
    }
}

/// What each direction of issue 18 measured here, and whether it was kept.
fn push_directions(s: &mut String, r: &Results) {
    let o = &r.overhead;
    let sc = &r.scale;
    let f = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.0}"));
    s.push_str("\n### Datapath cost: directions\n\n");
    if let Some(empty) = o.empty_in_traffic_ns {
        s.push_str("Each packet program's ns per run in the request/response load, less the empty classifier's in\nthe same kind of load (what observer adds at that hook):\n\n| program | ns/run | less empty | runs per round trip |\n| --- | ---: | ---: | ---: |\n");
        for p in o.programs.iter().filter(|p| p.rr_runs > 0 && o.stats_round_trips > 0.0) {
            let per_rt = p.rr_runs as f64 / o.stats_round_trips;
            if per_rt < 0.5 {
                continue;
            }
            s.push_str(&format!(
                "| {} | {} | {} | {per_rt:.1} |\n",
                p.name,
                f(p.rr_ns_per_run),
                f(p.rr_ns_per_run.map(|x| x - empty))
            ));
        }
    }
    let synthetic = |name: &str| o.synthetic.iter().find(|c| c.program == name).and_then(|c| c.test_run_ns);
    s.push_str(&format!(
        "\n- **Cheapest early exit** (kept, as it was): an ordinary segment is recognised by direct packet\n  \
         access (ethertype, IP version, protocol, fragment offset, TCP flags; no helper call, no map but\n  \
         the per-CPU packet counter, whose lookup the verifier inlines) and leaves. By the test run's clock\n  \
         observer's classifier takes {} ns per ordinary segment where the empty classifier takes {} ns.\n  \
         Splitting the handshake path into a tail call was dropped: the hot path never reaches it, so it\n  \
         could save nothing measurable on ordinary segments, and it would add a program-array lookup to\n  \
         every handshake packet.\n\
         - **Flow state only for handshake packets** (kept, as it was): the FLOWS map is touched only after a\n  \
         SYN or RST was seen; the filter's maps only for packets that would make an event.\n\
         - **What is left** is the hooks' own cost: any program at these hooks costs about {} ns per run\n  \
         under the statistics in this load; at ingress observer is also the first to read the packet's\n  \
         headers, likely a cache miss the kernel's own IP receive would otherwise pay a moment later (not\n  \
         measured separately).\n\
         - **Attach only where evidence is needed** (bridges: kept): a pod-to-pod round trip across the\n  \
         node crosses {:.1} observer program runs (the pod's veth and the uplink each way; 10.0 with the bridges\n  \
         and the cgroup_skb hooks at both sockets). A bridge device carries no classifiers any more: every frame\n  \
         crossing a bridge passes a port's ingress before the bridge's rx handler and a port's egress after\n  \
         the bridge forwards, and every port is an interface observer attaches to, so the bridge's own\n  \
         hooks saw each packet between a port and the host stack a second time (2 of the 10 runs). The sum per\n  \
         round trip dropped less than the runs: the bridge's runs were cheap second looks at headers the\n  \
         veth's run had just brought into cache (first run on a 2-CPU VM under load: 524 ns per round trip in\n  \
         8 runs against 510 ns in 10 in a quieter run). Drops on the bridge keep its name; the diagnosis,\n  \
         trace, culprit, overlay and cross-node lab scenarios pass unchanged.\n\
         - **cgroup_skb only where its evidence is wanted** (kept: off by default for `diagnose` and the\n  \
         agent, on for `trace`, `--cgroup-skb on|off` on each): the cgroup_skb programs run on every packet\n  \
         of every socket of the node, two runs per round trip at each local end, to show a handshake as the\n  \
         socket sees it. What the diagnosis takes from them, connect4/6 and sock_ops (always attached, run\n  \
         per connection) already tell it: the SYN sent (TCP_CONNECT_CB), the answer at the client's socket\n  \
         (ACTIVE_ESTABLISHED_CB), the server's (PASSIVE_ESTABLISHED_CB), a SYN's retransmission timeouts\n  \
         (RTO_CB) and an attempt's end in SYN_SENT (a reset or the client's give-up, STATE_CB); drops\n  \
         between the veth and the socket come from kfree_skb with their reason. `diagnose --cgroup-skb on`\n  \
         in a request/response run of its own: {}. Off, they are not loaded either: their\n  \
         verification is part of every start (`ready` with one veth pair in {:.2} s without them, {:.2} s with\n  \
         them). The diagnosis, culprit, verify, agent, overlay and cross-node lab scenarios pass with them\n  \
         off; `trace`'s socket lines (`cgroup-ingress`, `cgroup-egress`) stay on by default, where a person\n  \
         watches for minutes.\n\
         - **Parallel attach** ({}): a tcx link costs {:.1} ms from one thread and {:.1} ms per link\n  \
         from {} threads. The kernel attaches under the RTNL lock and waits for an RCU grace period\n  \
         (`synchronize_rcu`) inside it, so attaches serialise whoever issues them. The start-up with {}\n  \
         veths took {:.2} s.\n\
         - **Legacy TC attach** (kept, as `--tc-attach netlink`; tcx stays the default): a clsact qdisc and a\n  \
         cls_bpf filter per direction cost no RCU grace period: `ready` with the same {} veths in {:.2} s\n  \
         (program load and verification included: {:.2} s with one veth pair). The price: a filter is no\n  \
         file, so a killed observer's filters stay attached until the next start removes them (those whose\n  \
         program no process holds; tests/tests/tc_attach_lab.rs), where tcx links go with the process.\n",
        f(synthetic("observer_tc_ingress")),
        f(synthetic(super::overhead::EMPTY)),
        f(o.empty_in_traffic_ns),
        o.observer_runs_per_round_trip,
        o.with_cgroup_skb.map_or("not measured".to_string(), |(ns, runs)| format!(
            "{ns:.0} ns in {runs:.1} runs per round trip, against {:.0} ns in {:.1} runs without them above",
            o.observer_ns_per_round_trip, o.observer_runs_per_round_trip
        )),
        sc.ready_secs_baseline,
        sc.ready_secs_baseline_with_cgroup_skb,
        if sc.tcx_attach_ms_parallel * 2.0 < sc.tcx_attach_ms_serial {
            "it would pay here; observer still attaches from one thread".to_string()
        } else {
            let gain = (sc.tcx_attach_ms_serial / sc.tcx_attach_ms_parallel.max(1e-9) - 1.0) * 100.0;
            let change = if gain.abs() < 1.0 {
                "no faster".to_string()
            } else {
                format!("{:.0} % {}", gain.abs(), if gain > 0.0 { "faster" } else { "slower" })
            };
            format!("dropped: {change}, where start-up under 1 s needs {:.0} times faster", sc.ready_secs_with_veths)
        },
        sc.tcx_attach_ms_serial,
        sc.tcx_attach_ms_parallel,
        sc.parallel_threads,
        sc.veths,
        sc.ready_secs_with_veths,
        sc.veths,
        sc.ready_secs_with_veths_netlink,
        sc.ready_secs_baseline,
    ));
    s.push_str(&format!(
        "- **Link notifications, not rescans** (kept): observer subscribes to the watched namespace's link\n  \
         notifications (rtnetlink RTMGRP_LINK), attaches to an interface when its RTM_NEWLINK arrives and relists\n  \
         the links only after the socket overflowed (ENOBUFS, counted in a warning); its wait for events (100 ms\n  \
         when idle) now also wakes on that socket. A new veth pair is attached {} after `ip link add` (tcx links:\n  \
         four attaches, each waiting for an RCU grace period), {} with `--tc-attach netlink`.\n",
        median_max_ms(&sc.new_interface_ms),
        median_max_ms(&sc.new_interface_ms_netlink)
    ));
    if let (Some(link_ms), Some(ready)) = (sc.tcx_attach_ms_expedited, sc.ready_secs_with_veths_expedited) {
        s.push_str(&format!(
            "- **Expedited RCU grace periods** (measured, not adopted): with `/sys/kernel/rcu_expedited` set to 1\n  \
             for the measurement (restored after), a tcx link costs {link_ms:.2} ms from one thread (against {:.2} ms)\n  \
             and `observer trace` is ready with the {} veths in {ready:.2} s (against {:.2} s; {:.2} s with one veth\n  \
             pair): the grace period is all but {:.1} % of a tcx attach. The knob is node-wide: every\n  \
             synchronize_rcu() of every subsystem then interrupts all CPUs (IPIs) instead of waiting for them, a\n  \
             cost latency-sensitive workloads pay; a node observer does not change it. {}\n",
            sc.tcx_attach_ms_serial,
            sc.veths,
            sc.ready_secs_with_veths,
            sc.ready_secs_baseline,
            link_ms / sc.tcx_attach_ms_serial.max(1e-9) * 100.0,
            if ready < 1.0 {
                "An operator who wants tcx links and a start under 1 s can set it around observer's start."
            } else {
                "What is left of the start-up is program load and verification (the one-pair figure)."
            }
        ));
    }
    let events_map = sc.maps.iter().find(|m| m.name == "EVENTS").map_or(0, |m| m.max_entries);
    let lossy =
        r.pipeline.iter().filter(|f| f.ringbuf_full > 0).min_by(|a, b| a.events_per_sec.total_cmp(&b.events_per_sec));
    s.push_str(&format!(
        "- **Ring buffer sized by CPU count** (kept): 2 MiB per possible CPU, a power of two, {} MiB here (1 MiB\n  \
         before). {}\n",
        events_map >> 20,
        lossy.map_or("No loss at any rate of section 2.".to_string(), |f| format!(
            "Losses began at {:.0} events/s ({} lost): the single reader, sharing its CPU, fell behind; a bigger\n  \
             buffer only delays that.",
            f.events_per_sec, f.ringbuf_full
        ))
    ));
    s.push_str(
        "- **Trace lines written per drain** (kept): `observer trace` wrote and flushed every line (one\n  \
         `write(2)` per event); its lines are now buffered (64 KiB) and written once the ring buffer is\n  \
         drained, before observer waits again, so no line is held back while it waits. Interleaved\n  \
         `--only pipeline` runs on the loaded 2-CPU machine (perf3, 03:13-03:33 UTC, load 1.7-3.7): at\n  \
         100k SYN/s (400k events/s) 0 lost before and after in the quieter runs (823 lost in one loaded\n  \
         run after); flat out, before: 929,616 events/s with 282,719 lost, 483,008/s with 103,041 lost,\n  \
         391,590/s with 214,707 lost, 471,770/s with 219,981 lost; after: 926,370/s with 118,716 lost,\n  \
         451,680/s with 75,584 lost, 412,074/s with 246,701 lost. The runs swing more than the change:\n  \
         kept as the cheaper design, not as a proven gain.\n\
         - **Reader nap under load** (dropped): after a drain of 256+ records, sleeping 1 ms and draining\n  \
         instead of `poll(2)` (the kernel wakes a waiting reader for the first record after it caught up,\n  \
         so a reader keeping up with a flood pays a wake-up every few records). Quiet pair: 2.40 -> 1.70 us\n  \
         CPU per event at 400k events/s, flat out 282,719 -> 111,565 lost at ~929k events/s; but in a\n  \
         loaded run it lost 54,745 at 129k events/s where the reader without the nap, just after, lost\n  \
         none at 692k/s: a reader that sleeps while records wait gives its CPU away on a busy node.\n  \
         `BPF_RB_NO_WAKEUP` with a threshold (`bpf_ringbuf_query`) was not tried.\n\
         - **Trace reader CPU per event** (kept; perf4, 04:55-05:35 UTC): `perf record` of `observer trace\n  \
         --output json` under the section 2 flood: 28 % of the process's samples were memmove and 11 %\n  \
         `Attributor::send_due`, which moved every waiting NETFILTER_DROP (up to 4,096 records of ~900\n  \
         bytes) into a new vector at every drain while its namespace's read was in flight; then the culprit\n  \
         worker's two `RTM_GETROUTE`s per drop (17 %) and JSON (26 % of the samples, 43 % of the reader\n  \
         thread's: serde's flatten map path escaping every key, two `format!`s per RFC 3339 time). Now: the\n  \
         waiting drops are queued per namespace and handed on as one vector; the worker gets only what it\n  \
         evaluates (time, flow, tunnel, device, the shared captured bytes) and answers with the culprits,\n  \
         so no drop is cloned; route lookups are remembered per job; packets and drops are written as JSON\n  \
         field by field into one reused buffer (keys constant, values by serde_json; a unit test holds the\n  \
         bytes equal to serde's), times (the text up to the second remembered), protocol names and TCP\n  \
         flags without allocating. Interleaved runs of the same flood by hand (process utime+stime over\n  \
         the 2 s flood and 1.5 s after; 10 pairs at 100k and 133k SYN/s offered, 120k-398k events/s\n  \
         reached, load 4.7-5.7): before, median 2.02 µs CPU per event (1.42-3.93), ring buffer full in 8\n  \
         of 10 runs (1,311-145,619 lost); after, median 0.93 µs (0.87-2.52; the 2.52 a run where the\n  \
         reader kept up and woke 15,647 times), full in 2 of 10 (930 and 7,404 lost); after, 398k events/s\n  \
         and 394k events/s with none lost (the flood generator's limit on the loaded machine). An earlier\n  \
         10-pair round without the last two changes: 2.55 -> 1.31 µs. `decode_name_json_10k_records`\n  \
         (section 5), three interleaved runs each: 4.77-4.82 -> 2.48-2.54 ms per 10k records (fastest of\n  \
         30; medians 4.91-5.10 -> 2.60-2.69 ms). Left: the\n  \
         wake-up per catch-up (`poll(2)` about 10 % of the reader's samples when it keeps up), the culprit\n  \
         worker's ruleset tools (nft, iptables-save, ip, bridge: 25-30 % of the samples of the process\n  \
         and its children, on the reader's CPU under `taskset`, not in the process's CPU time), the\n  \
         namer's strings per event.\n",
    );
    if let Some(l) = r.latency.iter().find(|l| l.case.contains("culprit named")) {
        let plain = r.latency.iter().find(|l| l.case.contains("no-culprit")).map_or(0.0, |l| l.p50_ms);
        s.push_str(&format!(
            "- **Culprit sooner** (kept; reads per namespace stay at most one per 250 ms): the ruleset tools\n  \
             (iptables-save variants, two nft listings) run side by side and their end is noticed when they\n  \
             close their output (they ran one after another, each polled every 5 ms: p50 64.7 ms in the\n  \
             previous full run); iptables-legacy-save runs only where the kernel lists legacy tables for the\n  \
             namespace; a drop no longer waits (5 ms before) to share a read; the event loop checks for the worker's\n  \
             answer every 1 ms (10 before): p50 {:.1} ms with the culprit, {plain:.1} ms without.\n  \
             Not done: skipping reads of unchanged rulesets (nftables' generation id) cannot help here,\n  \
             since the culprit's evidence is the counters, which move without a new generation.\n",
            l.p50_ms
        ));
    }
}

/// The goals of issue 18 against this run's numbers.
fn push_goals(s: &mut String, r: &Results) {
    let o = &r.overhead;
    let yes = |b: bool| if b { "yes" } else { "**no**" };
    let config = |name: &str| o.configs.iter().find(|c| c.name == name);
    s.push_str("## Goals (issue 18) in this run\n\n| goal | target | this run | met |\n| --- | --- | --- | --- |\n");
    let net = o.observer_ns_per_round_trip_net_of_empty;
    s.push_str(&format!(
        "| observer's programs per round trip (BPF statistics) | <= 250 ns | {:.0} ns as reported; {} ns less an empty classifier's cost per run in the same load; {} ns less the statistics' floor alone | {} |\n",
        o.observer_ns_per_round_trip,
        net.map_or("-".into(), |x| format!("{x:.0}")),
        o.observer_ns_per_round_trip_net.map_or("-".into(), |x| format!("{x:.0}")),
        if o.observer_ns_per_round_trip <= 250.0 {
            "yes"
        } else if net.is_some_and(|n| n <= 250.0) {
            "**no** as reported; yes less the empty classifier"
        } else {
            "**no**"
        }
    ));
    let worst = o
        .programs
        .iter()
        .filter(|p| o.stats_round_trips > 0.0 && p.rr_runs as f64 / o.stats_round_trips >= 0.5)
        .filter_map(|p| Some((p.name.as_str(), p.rr_ns_per_run? - o.empty_in_traffic_ns?)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((name, ns)) = worst {
        s.push_str(&format!(
            "| each hook on an ordinary segment, less an empty classifier | <= 30 ns | worst {name}: {ns:.0} ns | {} |\n",
            yes(ns <= 30.0)
        ));
    }
    if let (Some(obs), Some(tcpdump), Some(bpftrace)) = (config("observer"), config("tcpdump"), config("bpftrace")) {
        let (none_rr, none_bulk) = config("none").map_or((0.0, 0.0), |c| (c.rr_spread, c.bulk_spread));
        // A wall-clock goal counts only when both spreads are small next to what is claimed.
        let verdict = |ok: bool, spreads: [f64; 2]| {
            if !ok {
                "**no**".to_string()
            } else if spreads.iter().all(|x| *x < WALL_CLOCK_MAX_SPREAD) {
                "yes".to_string()
            } else {
                format!("unprovable (spreads {:.0} % / {:.0} %)", spreads[0] * 100.0, spreads[1] * 100.0)
            }
        };
        s.push_str(&format!(
            "| request/response rate vs none, ahead of tcpdump and bpftrace | >= 0.99 | {:.3} (spread {:.1} %; none's spread {:.1} %); tcpdump {:.3}, bpftrace {:.3} | {} |\n",
            obs.rr_ratio,
            obs.rr_spread * 100.0,
            none_rr * 100.0,
            tcpdump.rr_ratio,
            bpftrace.rr_ratio,
            verdict(
                obs.rr_ratio >= 0.99 && obs.rr_ratio > tcpdump.rr_ratio && obs.rr_ratio > bpftrace.rr_ratio,
                [obs.rr_spread, none_rr]
            )
        ));
        s.push_str(&format!(
            "| bulk throughput vs none | >= 0.995 | {:.3} (spread {:.1} %; none's spread {:.1} %) | {} |\n",
            obs.bulk_ratio,
            obs.bulk_spread * 100.0,
            none_bulk * 100.0,
            verdict(obs.bulk_ratio >= 0.995, [obs.bulk_spread, none_bulk])
        ));
    }
    // The goal is a rate: the offered rates' rows judge it; the flat-out row says where losses begin.
    let offered = r.pipeline.iter().filter(|f| f.target_rate > 0);
    if let Some(top) = offered.clone().max_by(|a, b| a.events_per_sec.total_cmp(&b.events_per_sec)) {
        let flat_out =
            r.pipeline.iter().find(|f| f.target_rate == 0).map_or(String::new(), |f| {
                format!("; flat out {:.0} events/s: {} lost", f.events_per_sec, f.ringbuf_full)
            });
        s.push_str(&format!(
            "| no ring-buffer loss at 400k events/s | 0 lost | highest rate reached at an offered rate: {:.0} events/s, {} lost; {} lost at the lower rates{flat_out} | {} |\n",
            top.events_per_sec,
            top.ringbuf_full,
            offered.clone().filter(|f| !std::ptr::eq(*f, top)).map(|f| f.ringbuf_full).sum::<u64>(),
            yes(offered.clone().all(|f| f.ringbuf_full == 0) && top.events_per_sec >= 400_000.0)
        ));
    }
    if !r.scale.new_interface_ms.is_empty() {
        let max = |v: &[f64]| v.last().copied().unwrap_or(f64::INFINITY);
        s.push_str(&format!(
            "| new interfaces attached | within 100 ms of appearing | {} (tcx links, the default); {} with `--tc-attach netlink` ({} veth pairs each) | {} (tcx); {} (netlink) |\n",
            median_max_ms(&r.scale.new_interface_ms),
            median_max_ms(&r.scale.new_interface_ms_netlink),
            r.scale.new_interface_ms.len(),
            yes(max(&r.scale.new_interface_ms) <= 100.0),
            yes(max(&r.scale.new_interface_ms_netlink) <= 100.0)
        ));
    }
    s.push_str(&format!(
        "| start-up with {} pod interfaces | < 1 s to `ready` | {:.2} s (tcx links, the default; the programs `diagnose` and the agent load); {:.2} s with `--tc-attach netlink`{} | {} (tcx); {} (netlink) |\n",
        r.scale.veths,
        r.scale.ready_secs_with_veths,
        r.scale.ready_secs_with_veths_netlink,
        r.scale.ready_secs_with_veths_expedited.map_or(String::new(), |x| format!(
            "; {x:.2} s tcx with RCU grace periods expedited (a node-wide knob observer does not set)"
        )),
        yes(r.scale.ready_secs_with_veths < 1.0),
        yes(r.scale.ready_secs_with_veths_netlink < 1.0)
    ));
    if let Some(l) = r.latency.iter().find(|l| l.case.contains("culprit named")) {
        s.push_str(&format!(
            "| culprit-named detection | p50 < 30 ms | p50 {:.1} ms (p99 {:.1} ms, {} trials) | {} |\n",
            l.p50_ms,
            l.p99_ms,
            l.trials,
            yes(l.p50_ms < 30.0)
        ));
    }
    s.push_str(&format!(
        "\nA wall-clock goal counts as met only when observer's and the baseline's spreads are both under\n\
         {:.0} %; above that, the noise is larger than the difference claimed.\n\n",
        WALL_CLOCK_MAX_SPREAD * 100.0
    ));
}

/// Largest spread (max - min over median) under which a wall-clock ratio is taken as shown.
const WALL_CLOCK_MAX_SPREAD: f64 = 0.05;

/// "median X ms, max Y ms" of sorted samples ("not measured" when there are none).
fn median_max_ms(sorted: &[f64]) -> String {
    match sorted.last() {
        Some(max) => format!("median {:.1} ms, max {max:.1} ms", super::procs::median(sorted)),
        None => "not measured".to_string(),
    }
}
