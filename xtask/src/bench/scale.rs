//! 4. Memory and scale: observer's RSS idle and after tracking 100k+ connections, the kernel
//!    maps' sizes and memory, and the time to attach to 200 veths.

use std::{thread, time::Duration, time::Instant};

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
    /// Start to `ready` with the veths present (default tcx links), and on a namespace with one
    /// veth pair.
    pub ready_secs_with_veths: f64,
    /// Start to `ready` with the veths present and `--tc-attach netlink` (cls_bpf filters).
    pub ready_secs_with_veths_netlink: f64,
    pub ready_secs_baseline: f64,
    /// The same namespace's veths given an empty classifier by tcx links (ingress and egress)
    /// from one thread, then from [`PARALLEL_THREADS`] threads at once: ms per link.
    pub tcx_attach_ms_serial: f64,
    pub tcx_attach_ms_parallel: f64,
    pub parallel_threads: usize,
}

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
    let (veths, (ready_secs_with_veths, ready_secs_with_veths_netlink), ready_secs_baseline, (serial, parallel)) =
        attach_time(b)?;
    println!(
        "   ready with {veths} veths: {ready_secs_with_veths:.2} s with tcx links, \
         {ready_secs_with_veths_netlink:.2} s with netlink filters (1 veth pair: {ready_secs_baseline:.2} s)"
    );
    println!(
        "   tcx attach: {serial:.2} ms per link from one thread, {parallel:.2} ms with {PARALLEL_THREADS} threads"
    );
    Ok(Scale {
        rss_idle_kib,
        rss_with_flows_kib,
        tracked_connections,
        syns_sent: sent,
        maps,
        veths,
        ready_secs_with_veths,
        ready_secs_with_veths_netlink,
        ready_secs_baseline,
        tcx_attach_ms_serial: serial,
        tcx_attach_ms_parallel: parallel,
        parallel_threads: PARALLEL_THREADS,
    })
}

/// (veths, (s to ready with tcx, with netlink), s to ready with one pair, (ms per tcx link from
/// one thread, from several)).
type AttachTimes = (usize, (f64, f64), f64, (f64, f64));

/// Time from start to `ready` of `observer trace` on a scratch namespace with 100 veth pairs
/// (200 veths; tcx links, then netlink filters), and with one pair (tcx).
fn attach_time(b: &Bench<'_>) -> anyhow::Result<AttachTimes> {
    let mut measured = Vec::new();
    let mut netlink = 0.0;
    let mut links_ms = (0.0, 0.0);
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
            let ready = |mode: &str| -> anyhow::Result<f64> {
                let started = Instant::now();
                let args = ["trace", "--netns", &ns, "--output", "json", "--tc-attach", mode];
                let observer = Background::start(in_netns(None, Some(TOOLS_CPU), &b.observer, &args), false)?;
                let at = observer.wait_for("ready", Duration::from_secs(120))?;
                observer.stop();
                Ok(at.duration_since(started).as_secs_f64())
            };
            // Netlink first: a tcx run's exit detaches its links one RCU grace period each, under
            // the RTNL lock the next run's attaches need.
            if pairs > 1 {
                netlink = ready("netlink")?;
            }
            let tcx = ready("tcx")?;
            if pairs > 1 {
                links_ms = tcx_attach_ms(&ns)?;
            }
            Ok::<_, anyhow::Error>(tcx)
        })();
        let _ = output_of(in_netns(None, None, "ip", &["netns", "del", &ns]));
        measured.push(result?);
    }
    Ok((200, (measured[0], netlink), measured[1], links_ms))
}

/// ms per tcx link of an empty classifier on every interface of `ns` (ingress and egress),
/// attached from one thread, then (after detaching) from [`PARALLEL_THREADS`] threads at once.
fn tcx_attach_ms(ns: &str) -> anyhow::Result<(f64, f64)> {
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
    Ok((serial_ms, parallel_ms))
}
