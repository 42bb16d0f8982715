//! `observer trace`: attach, then print one line (or JSON object) per kernel event.

pub mod filter;
pub mod format;
pub mod pcap;

use std::{
    io::Write,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tracing::{info, warn};

use std::io::IsTerminal as _;

use crate::{cli::Colour, inventory::Inventory};

use crate::{
    cli::{OutputFormat, TraceArgs},
    events::{
        cgroups::CgroupNames,
        clock::MonotonicClock,
        flows::handshake_summary,
        model::{Detail, Namer},
        ringbuf::{read_counters, EventSource},
    },
    loader::{self, attach::attach_all, cgroup, node_watch::NodeWatch, NetnsTarget},
};

/// Runs the trace until Ctrl-C/SIGTERM, `--duration` or `--count`.
pub fn run(args: &TraceArgs) -> anyhow::Result<()> {
    let netns = NetnsTarget::resolve(args.netns.as_deref())?;
    let inventory = match &args.inventory {
        Some(path) => {
            let inv = Inventory::from_file(path)?;
            if !inv.skipped.is_empty() {
                info!(skipped = ?inv.skipped, "inventory: kinds not used were skipped");
            }
            info!(pods = inv.pods.len(), services = inv.services.len(), "inventory loaded");
            Some(inv)
        }
        None => None,
    };
    let (mut ebpf, kernel) = loader::load()?;
    let mut events = EventSource::new(&mut ebpf)?;
    let (filter, kernel_filter) = filter::build(
        &filter::FilterArgs {
            pods: &args.pods,
            namespaces: &args.namespaces,
            ips: &args.ips,
            ports: &args.ports,
            cidrs: &args.cidrs,
            verdict: args.verdict,
            istio: args.istio,
            drop_reasons: &args.drop_reasons,
        },
        inventory.as_ref(),
        &kernel.drop_reasons,
    )?;
    kernel_filter.apply(&mut ebpf)?;
    let mut attached = attach_all(&mut ebpf, &netns, &kernel)?;
    let mut watch = NodeWatch::new(&netns)?;
    let cgroup_root = match &args.cgroup_root {
        Some(path) => path.clone(),
        None => cgroup::default_root()?,
    };
    let cgroup_hooks = cgroup::attach(&mut ebpf, &cgroup_root, &kernel)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("installing signal handler")?;
    }
    info!(
        netns = %netns.name,
        interfaces = %attached.interfaces.values().cloned().collect::<Vec<_>>().join(","),
        drops = attached.drops,
        tcp_tracepoints = attached.tcp_tracepoints,
        connect = cgroup_hooks.connect,
        sock_ops = cgroup_hooks.sockops,
        cgroup_skb = cgroup_hooks.skb,
        cgroup_root = %cgroup_root.display(),
        pod_namespaces = watch.scope().len() - 1,
        "ready: attached to {} interfaces",
        attached.interfaces.len()
    );

    let mut namer = Namer {
        clock: MonotonicClock::now(),
        interfaces: attached.interfaces.clone(),
        watched_netns: netns.inode as u32,
        drop_reasons: &kernel.drop_reasons,
        kallsyms: &kernel.kallsyms,
        cgroups: Some(std::cell::RefCell::new(CgroupNames::new(&cgroup_root))),
        inventory: inventory.as_ref(),
    };
    let deadline = args.duration.map(|secs| Instant::now() + Duration::from_secs(secs));
    let mut out = std::io::stdout().lock();
    let mut printed = 0u64;
    let mut out_of_scope = 0u64;
    let mut filtered = 0u64;
    let mut pcap_out = match &args.pcap {
        Some(path) => {
            let file = std::fs::File::create(path).with_context(|| format!("creating pcap file {}", path.display()))?;
            Some(
                pcap::PcapWriter::new(std::io::BufWriter::new(file))
                    .with_context(|| format!("writing {}", path.display()))?,
            )
        }
        None => None,
    };
    let mut pcap_result: std::io::Result<()> = Ok(());
    let mut summary = format::Summary::default();
    let colour = args.output == OutputFormat::Text
        && match args.color {
            Colour::Always => true,
            Colour::Never => false,
            Colour::Auto => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        };
    if args.output == OutputFormat::Text {
        writeln!(out, "{}", format::TEXT_HEADER)?;
    }
    while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        if args.count.is_some_and(|n| printed >= n) {
            break;
        }
        if watch.follow_changes(&mut ebpf, &netns, &mut attached.interfaces)? {
            namer.interfaces = attached.interfaces.clone();
        }
        let mut write_result = Ok(());
        events.poll(100, |event| {
            let observation = namer.observe(&event);
            let raw = pcap::captured(&event);
            // Drops in other namespaces (other nodes/containers on this kernel) are not ours.
            if let Detail::Drop { netns, .. } | Detail::Tcp { netns, .. } = observation.detail {
                if !args.all_netns && !watch.in_scope(netns) {
                    out_of_scope += 1;
                    return;
                }
            }
            if !filter.matches(&observation) {
                filtered += 1;
                return;
            }
            if args.count.is_some_and(|n| printed >= n) || write_result.is_err() {
                return;
            }
            let line = match args.output {
                OutputFormat::Text => format::text_line(&observation),
                OutputFormat::Json => format::json_line(&observation),
            };
            let line = if colour { format::colourize(&observation, line) } else { line };
            if let (Some(writer), Some(bytes)) = (pcap_out.as_mut(), raw) {
                if let Err(err) = writer.write(observation.time, bytes, pcap::ip_length(bytes)) {
                    pcap_result = Err(err);
                }
            }
            write_result = writeln!(out, "{line}").and_then(|()| out.flush());
            summary.add(&observation);
            printed += 1;
        })?;
        if let Err(err) = std::mem::replace(&mut pcap_result, Ok(())) {
            return Err(anyhow::anyhow!("writing the pcap file: {err}"));
        }
        if let Err(err) = write_result {
            // A closed pipe (e.g. `| head`) ends the trace quietly.
            if err.kind() == std::io::ErrorKind::BrokenPipe {
                break;
            }
            return Err(err.into());
        }
    }
    if let (Some(writer), Some(path)) = (&pcap_out, &args.pcap) {
        info!(packets = writer.packets, file = %path.display(), "pcap written");
    }
    report_handshakes(&ebpf);
    let counters = read_counters(&ebpf)?;
    let counter = |name: &str| counters.iter().find(|(n, _)| *n == name).map_or(0, |(_, v)| *v);
    let lost = counter("ringbuf_full");
    let line = summary.line(lost, counter("filtered_out") + filtered + out_of_scope);
    // Text: the summary ends the output; JSON: stdout stays one event per line.
    match args.output {
        OutputFormat::Text => {
            let _ = writeln!(out, "{line}");
        }
        OutputFormat::Json => eprintln!("{line}"),
    }
    info!(
        events = printed,
        out_of_scope_drops = out_of_scope,
        lost,
        undecodable = events.undecodable,
        counters = %counters.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(" "),
        "trace finished"
    );
    Ok(())
}

/// Logs the kernel's per-flow handshake state: how many handshakes were answered, and the
/// unanswered ones (at most 20, oldest first).
fn report_handshakes(ebpf: &aya::Ebpf) {
    const SHOWN: usize = 20;
    match handshake_summary(ebpf) {
        Ok(summary) => {
            info!(
                tracked = summary.tracked,
                answered = summary.answered,
                unanswered = summary.unanswered.len(),
                "handshakes"
            );
            for (flow, state) in summary.unanswered.iter().take(SHOWN) {
                info!(
                    "unanswered handshake {flow}: {} SYN packets seen, no SYN-ACK or RST at any hook",
                    state.syn_packets
                );
            }
        }
        Err(err) => warn!("per-flow handshake state unavailable: {err}"),
    }
}
