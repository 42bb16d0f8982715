//! Section 6, churn: pod namespaces created and deleted in a loop (each with a veth into the
//! watched node namespace, as a CNI makes them) while `observer trace` runs. Attachments follow
//! every cycle, and what observer holds (fds, BPF maps and links) and its RSS return to where
//! they started. Written to bench/churn.json and the "Churn" section of BENCHMARKS.md.

use std::{
    io::Write as _,
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

use super::{
    procs::{in_netns, output_of, rss_kib, Background},
    TOOLS_CPU,
};
use crate::shell;

/// What observer holds at one moment (from /proc/PID).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holdings {
    pub fds: usize,
    pub bpf_maps: usize,
    pub bpf_links: usize,
    pub tcx_links: usize,
    pub rss_kib: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Churn {
    pub secs: f64,
    pub pods_per_cycle: usize,
    pub cycles: usize,
    /// Cycles in which observer was attached to every new pod veth before they were deleted.
    pub cycles_fully_attached: usize,
    /// Mean seconds from creating the cycle's pods to observer holding all their links.
    pub attach_secs_mean: f64,
    pub before: Holdings,
    pub peak: Holdings,
    pub after: Holdings,
}

/// Namespaces of this run, deleted on drop (also when the run fails).
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        let script: String = self.0.iter().map(|n| format!("netns del {n}\n")).collect();
        let _ = ip_batch(None, &script);
    }
}

fn ip_batch(netns: Option<&str>, script: &str) -> anyhow::Result<()> {
    let mut args = vec!["-force", "-batch", "-"];
    if let Some(ns) = netns {
        args.splice(0..0, ["-n", ns]);
    }
    let mut cmd = in_netns(None, None, "ip", &args);
    cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = cmd.spawn().context("ip -batch")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes())?;
    }
    child.wait()?;
    Ok(())
}

/// What process `pid` holds now (fds, BPF maps and links from `/proc/PID/fdinfo`, RSS).
fn holdings(pid: u32) -> Holdings {
    let mut h = Holdings { rss_kib: rss_kib(pid), ..Default::default() };
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return h };
    for entry in dir.flatten() {
        h.fds += 1;
        let info = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if info.lines().any(|l| l.starts_with("map_id:")) {
            h.bpf_maps += 1;
        }
        if let Some(kind) = info.lines().find_map(|l| l.strip_prefix("link_type:")) {
            h.bpf_links += 1;
            if kind.trim() == "tcx" {
                h.tcx_links += 1;
            }
        }
    }
    h
}

fn wait_tcx(pid: u32, want: usize, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if holdings(pid).tcx_links == want {
            return Some(started.elapsed());
        }
        thread::sleep(Duration::from_millis(100));
    }
    None
}

/// Runs cycles of `pods` pod namespaces for `secs` seconds against `observer` (a binary path).
pub fn run(observer: &str, pods: usize, secs: f64) -> anyhow::Result<Churn> {
    let prefix = format!("obsbench-churn{}", std::process::id());
    let node = format!("{prefix}-node");
    let pod_names: Vec<String> = (0..pods).map(|i| format!("{prefix}-p{i}")).collect();
    let mut all = pod_names.clone();
    all.push(node.clone());
    let _cleanup = Namespaces(all);
    output_of(in_netns(None, None, "ip", &["netns", "add", &node]))?;
    ip_batch(Some(&node), "link add cb0 type veth peer name cb1\nlink set cb0 up\nlink set cb1 up\n")?;
    let observer = Background::start(
        in_netns(None, Some(TOOLS_CPU), observer, &["trace", "--netns", &node, "--output", "json"]),
        false,
    )?;
    observer.wait_for("ready", Duration::from_secs(60))?;
    let pid = observer.pid();
    thread::sleep(Duration::from_secs(2));
    let before = holdings(pid);
    let base_tcx = before.tcx_links;
    let (mut peak, mut cycles, mut full, mut attach_total) = (before, 0usize, 0usize, 0.0f64);
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < secs {
        let create: String = pod_names.iter().map(|p| format!("netns add {p}\n")).collect();
        ip_batch(None, &create)?;
        let links: String = pod_names
            .iter()
            .enumerate()
            .flat_map(|(i, p)| {
                [format!("link add cv{i} type veth peer name eth0 netns {p}\n"), format!("link set cv{i} up\n")]
            })
            .collect();
        let created = Instant::now();
        ip_batch(Some(&node), &links)?;
        if let Some(_took) = wait_tcx(pid, base_tcx + 2 * pods, Duration::from_secs(60)) {
            full += 1;
            attach_total += created.elapsed().as_secs_f64();
        }
        let now = holdings(pid);
        peak = Holdings {
            fds: peak.fds.max(now.fds),
            bpf_maps: peak.bpf_maps.max(now.bpf_maps),
            bpf_links: peak.bpf_links.max(now.bpf_links),
            tcx_links: peak.tcx_links.max(now.tcx_links),
            rss_kib: peak.rss_kib.max(now.rss_kib),
        };
        // Deleting a pod's namespace takes its veth pair with it (the kernel's netns cleanup).
        let delete: String = pod_names.iter().map(|p| format!("netns del {p}\n")).collect();
        ip_batch(None, &delete)?;
        if wait_tcx(pid, base_tcx, Duration::from_secs(60)).is_none() {
            bail!("cycle {cycles}: observer still holds {:?} after the pods were deleted", holdings(pid));
        }
        cycles += 1;
        println!("   cycle {cycles}: {pods} pods created and deleted; holding {:?}", holdings(pid));
    }
    let secs_run = started.elapsed().as_secs_f64();
    thread::sleep(Duration::from_secs(3));
    let after = holdings(pid);
    let lines = observer.stop();
    if !lines.iter().any(|l| l.contains("trace finished")) {
        bail!("observer did not finish cleanly: {:?}", lines.iter().rev().take(5).collect::<Vec<_>>());
    }
    Ok(Churn {
        secs: secs_run,
        pods_per_cycle: pods,
        cycles,
        cycles_fully_attached: full,
        attach_secs_mean: if full > 0 { attach_total / full as f64 } else { 0.0 },
        before,
        peak,
        after,
    })
}

/// The BENCHMARKS.md section.
pub fn markdown(c: &Churn) -> String {
    let row = |name: &str, f: &dyn Fn(&Holdings) -> String| {
        format!("| {name} | {} | {} | {} |\n", f(&c.before), f(&c.peak), f(&c.after))
    };
    let mut s = String::from("## 6. Churn\n\n");
    s += &format!(
        "{} pod namespaces created (each with a veth into the watched node namespace, as a CNI makes \
         them) and deleted, in a loop for {:.0} s while `observer trace` watched the node: {} cycles \
         ({} pods), observer attached to every new pod veth in {} of them ({:.2} s on average from \
         creating the pods to holding all their links). Counted from `/proc/PID/fd`, `fdinfo` and \
         `status` of the observer process.\n\n",
        c.pods_per_cycle,
        c.secs,
        c.cycles,
        c.cycles * c.pods_per_cycle,
        c.cycles_fully_attached,
        c.attach_secs_mean
    );
    s += "| observer holds | before | peak (all pods present) | after |\n| --- | --- | --- | --- |\n";
    s += &row("file descriptors", &|h| h.fds.to_string());
    s += &row("BPF maps", &|h| h.bpf_maps.to_string());
    s += &row("BPF links (all)", &|h| h.bpf_links.to_string());
    s += &row("tcx links", &|h| h.tcx_links.to_string());
    s += &row("RSS (MiB)", &|h| format!("{:.1}", h.rss_kib as f64 / 1024.0));
    s += "\nRun it alone with `cargo xtask bench --churn-only` (`--churn-secs`, `--churn-pods`).\n";
    s
}

/// Writes bench/churn.json and puts the section into BENCHMARKS.md (replacing an older one).
pub fn publish(c: &Churn) -> anyhow::Result<()> {
    let dir = shell::root().join("bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("churn.json"), serde_json::to_string_pretty(c)?)?;
    let path = shell::root().join("BENCHMARKS.md");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let section = markdown(c);
    let updated = match text.find("## 6. Churn") {
        Some(start) => {
            let end = text[start + 3..].find("\n## ").map_or(text.len(), |i| start + 3 + i + 1);
            format!("{}{section}{}", &text[..start], &text[end..])
        }
        None => format!("{}\n{section}", text.trim_end_matches('\n').to_string() + "\n"),
    };
    std::fs::write(&path, updated)?;
    Ok(())
}
