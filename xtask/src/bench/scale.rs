//! 4. Memory and scale: observer's RSS idle and after tracking 100k+ connections, the kernel
//!    maps' sizes and memory, and the time to attach to 200 veths.

use std::{thread, time::Duration, time::Instant};

use anyhow::Context;
use serde::Serialize;

use super::{
    procs::{bpf_fds, bpf_name, in_netns, output_of, rss_kib, Background},
    testrun, Bench, TOOLS_CPU,
};

#[derive(Debug, Serialize)]
pub struct MapSize {
    pub name: String,
    pub max_entries: u64,
    pub memlock_kib: u64,
}

#[derive(Debug, Serialize)]
pub struct Scale {
    pub rss_idle_kib: u64,
    pub rss_with_flows_kib: u64,
    /// Connections the diagnosis tracked at the end (from its report).
    pub tracked_connections: u64,
    pub syns_sent: u64,
    pub maps: Vec<MapSize>,
    pub veths: usize,
    /// Start to `ready` of `observer trace --cgroup-skb off` (the programs `diagnose` and the
    /// agent load by default) with the veths present (default tcx links), and on a namespace with
    /// one veth pair.
    pub ready_secs_with_veths: f64,
    /// The same with RCU grace periods expedited (see `tcx_attach_ms_expedited`).
    pub ready_secs_with_veths_expedited: Option<f64>,
    /// Start to `ready` with the veths present and `--tc-attach netlink` (cls_bpf filters).
    pub ready_secs_with_veths_netlink: f64,
    pub ready_secs_baseline: f64,
    /// One veth pair with `--cgroup-skb on` (`trace`'s default): the cgroup_skb programs loaded
    /// and verified too.
    pub ready_secs_baseline_with_cgroup_skb: f64,
    /// The same namespace's veths given an empty classifier by tcx links (ingress and egress)
    /// from one thread, then from [`PARALLEL_THREADS`] threads at once: ms per link.
    pub tcx_attach_ms_serial: f64,
    pub tcx_attach_ms_parallel: f64,
    pub parallel_threads: usize,
    /// The one-thread figure again with the kernel's RCU grace periods expedited
    /// (`/sys/kernel/rcu_expedited` = 1 for that measurement only, restored after; None when the
    /// knob is absent): what the grace period each tcx attach waits for costs. observer never
    /// sets it.
    pub tcx_attach_ms_expedited: Option<f64>,
    /// ms from `ip link add` of a new veth pair being run to a running `observer trace` saying
    /// both veths' classifiers are attached (tcx links, both directions), one pair at a time;
    /// sorted.
    pub new_interface_ms: Vec<f64>,
    /// The same with `--tc-attach netlink` (cls_bpf filters).
    pub new_interface_ms_netlink: Vec<f64>,
}

/// New veth pairs of the new-interface measurement.
pub const NEW_INTERFACES: usize = 20;

/// Threads of the parallel tcx attach measurement.
pub const PARALLEL_THREADS: usize = 8;

pub fn run(b: &Bench<'_>) -> anyhow::Result<Scale> {
    let observer = b.start_observer(&["diagnose", "--output", "json"], true)?;
    thread::sleep(Duration::from_secs(2));
    let rss_idle_kib = rss_kib(observer.pid());
    let maps: Vec<MapSize> = bpf_fds(observer.pid())
        .into_iter()
        .filter(|(k, _)| !k.0)
        .map(|(k, fd)| MapSize {
            name: bpf_name(false, k.1),
            max_entries: fd.max_entries,
            memlock_kib: fd.memlock / 1024,
        })
        .collect();
    // Two source addresses x 60,000 successive ports: 120,000 distinct connections.
    let extra = b.second_client_ip();
    output_of(in_netns(Some(&b.client_ns), None, "ip", &["addr", "add", &format!("{extra}/32"), "dev", "eth0"]))?;
    let mut sent = b.syn_flood_from(&b.client_ip.to_string(), 30_000, 2.0)?.0;
    sent += b.syn_flood_from(&extra, 30_000, 2.0)?.0;
    thread::sleep(Duration::from_secs(3));
    let rss_with_flows_kib = rss_kib(observer.pid());
    let report = observer.stop_keep().stdout_text();
    let tracked_connections = serde_json::from_str::<serde_json::Value>(&report)
        .ok()
        .and_then(|v| v["stats"]["connections"].as_u64())
        .unwrap_or(0);
    println!(
        "   RSS idle {} MiB; after {sent} SYNs ({tracked_connections} connections tracked) {} MiB",
        rss_idle_kib / 1024,
        rss_with_flows_kib / 1024
    );
    let at = attach_time(b)?;
    let (serial, parallel) = (at.links.serial_ms, at.links.parallel_ms);
    let expedited = |x: Option<f64>, unit: &str| x.map_or("not measured".to_string(), |v| format!("{v:.2} {unit}"));
    println!(
        "   ready with {} veths: {:.2} s with tcx links ({} with RCU grace periods expedited), \
         {:.2} s with netlink filters (1 veth pair: {:.2} s; {:.2} s with the cgroup_skb programs too)",
        at.veths,
        at.ready_tcx,
        expedited(at.ready_tcx_expedited, "s"),
        at.ready_netlink,
        at.ready_baseline,
        at.ready_baseline_with_cgroup_skb
    );
    println!(
        "   tcx attach: {serial:.2} ms per link from one thread, {parallel:.2} ms with {PARALLEL_THREADS} threads, \
         {} with RCU grace periods expedited",
        expedited(at.links.expedited_ms, "ms")
    );
    Ok(Scale {
        rss_idle_kib,
        rss_with_flows_kib,
        tracked_connections,
        syns_sent: sent,
        maps,
        veths: at.veths,
        ready_secs_with_veths: at.ready_tcx,
        ready_secs_with_veths_expedited: at.ready_tcx_expedited,
        ready_secs_with_veths_netlink: at.ready_netlink,
        ready_secs_baseline: at.ready_baseline,
        ready_secs_baseline_with_cgroup_skb: at.ready_baseline_with_cgroup_skb,
        tcx_attach_ms_serial: serial,
        tcx_attach_ms_parallel: parallel,
        parallel_threads: PARALLEL_THREADS,
        tcx_attach_ms_expedited: at.links.expedited_ms,
        new_interface_ms: at.new_ms,
        new_interface_ms_netlink: at.new_ms_netlink,
    })
}

/// The start-up and attach measurements on the scratch namespaces.
struct AttachTimes {
    veths: usize,
    /// s to `ready` with the 200 veths: tcx links, tcx with RCU grace periods expedited, netlink.
    ready_tcx: f64,
    ready_tcx_expedited: Option<f64>,
    ready_netlink: f64,
    /// s to `ready` with one veth pair (tcx), and with the cgroup_skb programs loaded too.
    ready_baseline: f64,
    ready_baseline_with_cgroup_skb: f64,
    links: LinkTimes,
    /// ms to attach to each new pair, sorted: tcx links, netlink filters.
    new_ms: Vec<f64>,
    new_ms_netlink: Vec<f64>,
}

/// ms per tcx link of an empty classifier: from one thread, from [`PARALLEL_THREADS`], and from
/// one thread with RCU grace periods expedited (None when the kernel has no such knob).
#[derive(Debug, Default, Clone, Copy)]
struct LinkTimes {
    serial_ms: f64,
    parallel_ms: f64,
    expedited_ms: Option<f64>,
}

/// Time from start to `ready` of `observer trace` on a scratch namespace with 100 veth pairs
/// (200 veths; netlink filters, tcx links, tcx links with RCU grace periods expedited), the tcx
/// attach cost per link there, and on a namespace with one pair: `ready` (tcx) and new pairs.
fn attach_time(b: &Bench<'_>) -> anyhow::Result<AttachTimes> {
    let mut at = AttachTimes {
        veths: 0,
        ready_tcx: 0.0,
        ready_tcx_expedited: None,
        ready_netlink: 0.0,
        ready_baseline: 0.0,
        ready_baseline_with_cgroup_skb: 0.0,
        links: LinkTimes::default(),
        new_ms: Vec::new(),
        new_ms_netlink: Vec::new(),
    };
    for pairs in [100usize, 1] {
        let ns = format!("{}-scale{pairs}", b.lab.name);
        output_of(in_netns(None, None, "ip", &["netns", "add", &ns]))?;
        let result = (|| {
            let script: String = (0..pairs).map(|i| format!("link add bv{i}a type veth peer name bv{i}b\n")).collect();
            let mut cmd = in_netns(None, None, "ip", &["-n", &ns, "-batch", "-"]);
            cmd.stdin(std::process::Stdio::piped());
            let mut child = cmd.spawn()?;
            if let Some(mut stdin) = child.stdin.take() {
                std::io::Write::write_all(&mut stdin, script.as_bytes())?;
            }
            child.wait()?;
            let up: String =
                (0..pairs).flat_map(|i| [format!("link set bv{i}a up\n"), format!("link set bv{i}b up\n")]).collect();
            let mut cmd = in_netns(None, None, "ip", &["-n", &ns, "-batch", "-"]);
            cmd.stdin(std::process::Stdio::piped());
            let mut child = cmd.spawn()?;
            if let Some(mut stdin) = child.stdin.take() {
                std::io::Write::write_all(&mut stdin, up.as_bytes())?;
            }
            child.wait()?;
            // `--cgroup-skb off` unless asked: the programs diagnose and the agent load by default.
            let ready_with = |mode: &str, cgroup_skb: &str| -> anyhow::Result<f64> {
                let started = Instant::now();
                let args =
                    ["trace", "--netns", &ns, "--output", "json", "--tc-attach", mode, "--cgroup-skb", cgroup_skb];
                let observer = Background::start(in_netns(None, Some(TOOLS_CPU), &b.observer, &args), false)?;
                let at = observer.wait_for("ready", Duration::from_secs(120))?;
                observer.stop();
                Ok(at.duration_since(started).as_secs_f64())
            };
            let ready = |mode: &str| ready_with(mode, "off");
            // Netlink first: a tcx run's exit detaches its links one RCU grace period each, under
            // the RTNL lock the next run's attaches need.
            if pairs > 1 {
                at.veths = 2 * pairs;
                at.ready_netlink = ready("netlink")?;
                at.ready_tcx = ready("tcx")?;
                at.ready_tcx_expedited = match Expedited::set() {
                    Some(_expedited) => Some(ready("tcx")?),
                    None => None,
                };
                at.links = tcx_attach_ms(&ns)?;
            } else {
                at.ready_baseline = ready("tcx")?;
                at.ready_baseline_with_cgroup_skb = ready_with("tcx", "on")?;
                at.new_ms = new_interface_ms(b, &ns, "tcx")?;
                at.new_ms_netlink = new_interface_ms(b, &ns, "netlink")?;
            }
            Ok::<_, anyhow::Error>(())
        })();
        let _ = output_of(in_netns(None, None, "ip", &["netns", "del", &ns]));
        result?;
    }
    Ok(at)
}

/// With `observer trace --tc-attach MODE` watching `ns`, adds [`NEW_INTERFACES`] veth pairs one
/// at a time: ms from `ip link add` being run to observer's "classifiers attached" line for both
/// veths (its stderr, time-stamped on arrival), sorted. The clock includes starting `ip`: an
/// overestimate by a few ms, never an underestimate.
fn new_interface_ms(b: &Bench<'_>, ns: &str, mode: &str) -> anyhow::Result<Vec<f64>> {
    let args = ["trace", "--netns", ns, "--output", "json", "--tc-attach", mode];
    let observer = Background::start(in_netns(None, Some(TOOLS_CPU), &b.observer, &args), false)?;
    observer.wait_for("ready", Duration::from_secs(120))?;
    let mut took = Vec::new();
    for i in 0..NEW_INTERFACES {
        let (a, z) = (format!("n{mode}{i}a"), format!("n{mode}{i}b"));
        let added = Instant::now();
        output_of(in_netns(None, None, "ip", &["-n", ns, "link", "add", &a, "type", "veth", "peer", "name", &z]))?;
        let mut attached = added;
        for name in [&a, &z] {
            let needle = format!("classifiers attached iface={name} ");
            let at = observer
                .wait_for(&needle, Duration::from_secs(10))
                .with_context(|| format!("observer (--tc-attach {mode}) did not attach to the new veth {name}"))?;
            attached = attached.max(at);
        }
        took.push(attached.duration_since(added).as_secs_f64() * 1e3);
        // Up, as a pod's would be, before the next pair.
        output_of(in_netns(None, None, "ip", &["-n", ns, "link", "set", &a, "up"]))?;
        output_of(in_netns(None, None, "ip", &["-n", ns, "link", "set", &z, "up"]))?;
    }
    observer.stop();
    took.sort_by(f64::total_cmp);
    println!(
        "   new interfaces ({mode}): {:.1} ms median, {:.1} ms max from `ip link add` to attached ({NEW_INTERFACES} veth pairs)",
        super::procs::median(&took),
        took.last().copied().unwrap_or(0.0)
    );
    Ok(took)
}

/// ms per tcx link of an empty classifier on every interface of `ns` (ingress and egress),
/// attached from one thread, then (after detaching) from [`PARALLEL_THREADS`] threads at once,
/// then from one thread with RCU grace periods expedited.
fn tcx_attach_ms(ns: &str) -> anyhow::Result<LinkTimes> {
    let listed = output_of(in_netns(None, None, "ip", &["-n", ns, "-o", "link", "show"]))?;
    let ifindexes: Vec<u32> = listed
        .lines()
        .filter_map(|l| {
            let mut parts = l.split(':');
            let index = parts.next()?.trim().parse().ok()?;
            (parts.next()?.trim() != "lo").then_some(index)
        })
        .collect();
    let path = std::path::PathBuf::from(format!("/run/netns/{ns}"));
    let empty = testrun::load_empty()?;
    let links = (ifindexes.len() * 2).max(1) as f64;
    let started = Instant::now();
    let serial = testrun::attach_tcx(&empty, &path, &ifindexes)?;
    let serial_ms = started.elapsed().as_secs_f64() * 1e3 / links;
    drop(serial);
    let chunk = ifindexes.len().div_ceil(PARALLEL_THREADS).max(1);
    let started = Instant::now();
    let parallel: Vec<_> = thread::scope(|scope| {
        let handles: Vec<_> =
            ifindexes.chunks(chunk).map(|part| scope.spawn(|| testrun::attach_tcx(&empty, &path, part))).collect();
        handles.into_iter().map(|h| h.join().map_err(|_| anyhow::anyhow!("an attaching thread panicked"))?).collect()
    });
    let parallel_ms = started.elapsed().as_secs_f64() * 1e3 / links;
    for result in parallel {
        drop(result?);
    }
    let expedited_ms = match Expedited::set() {
        Some(_expedited) => {
            let started = Instant::now();
            let links_held = testrun::attach_tcx(&empty, &path, &ifindexes)?;
            let ms = started.elapsed().as_secs_f64() * 1e3 / links;
            drop(links_held);
            Some(ms)
        }
        None => None,
    };
    Ok(LinkTimes { serial_ms, parallel_ms, expedited_ms })
}

/// `/sys/kernel/rcu_expedited` set to 1 (synchronize_rcu() behaves as synchronize_rcu_expedited(),
/// Documentation/RCU/Design/Expedited-Grace-Periods), the earlier value written back on drop.
struct Expedited {
    before: String,
}

/// The kernel's switch making every synchronize_rcu() expedited (Documentation/RCU/Design/
/// Expedited-Grace-Periods): "0" or "1".
const RCU_EXPEDITED: &str = "/sys/kernel/rcu_expedited";

impl Expedited {
    /// None when the knob is absent or cannot be written (then nothing was changed).
    fn set() -> Option<Self> {
        let before = std::fs::read_to_string(RCU_EXPEDITED).ok()?.trim().to_string();
        println!("   setting {RCU_EXPEDITED} to 1 for one measurement (if interrupted, write {before} back)");
        std::fs::write(RCU_EXPEDITED, "1").ok()?;
        Some(Self { before })
    }
}

impl Drop for Expedited {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(RCU_EXPEDITED, &self.before) {
            eprintln!("could not restore {RCU_EXPEDITED} to {}: {e}; write it back by hand", self.before);
        }
    }
}
