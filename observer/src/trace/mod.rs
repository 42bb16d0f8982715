//! `observer trace`: attach, then print one line (or JSON object) per kernel event.

pub mod filter;
pub mod format;
pub mod pcap;

use std::{
    io::{IsTerminal as _, Write},
    ops::ControlFlow,
    time::Duration,
};

use anyhow::Context as _;
use tracing::{info, warn};

use crate::{
    cli::{Colour, OutputFormat, TraceArgs},
    events::flows::handshake_summary,
    inventory::Inventory,
    session::{Session, SessionConfig},
    stop::StopToken,
};

/// Runs the trace until `stop` is set (the CLI sets it on Ctrl-C/SIGTERM), `--duration` or
/// `--count`.
pub fn run(args: &TraceArgs, stop: &StopToken) -> anyhow::Result<()> {
    let inventory = match &args.inventory {
        Some(path) => Some(load_inventory(path)?),
        None => None,
    };
    let config = SessionConfig {
        netns: args.netns.clone(),
        cgroup_root: args.cgroup_root.clone(),
        culprits: !args.no_culprit,
        all_netns: args.all_netns,
        duration: args.duration.map(Duration::from_secs),
    };
    let loaded = Session::load(config)?;
    let kernel = &loaded.kernel;
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
    let mut session = loaded.start(&kernel_filter, stop.clone())?;
    let mut out = std::io::stdout().lock();
    let mut printed = 0u64;
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
    let mut failure: Option<anyhow::Error> = None;
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
    if args.count != Some(0) {
        session.run(inventory.as_ref(), |_, observation| {
            if args.count.is_some_and(|n| printed >= n) {
                return ControlFlow::Break(());
            }
            if !filter.matches(&observation) {
                filtered += 1;
                return ControlFlow::Continue(());
            }
            let line = match args.output {
                OutputFormat::Text => format::text_line(&observation),
                OutputFormat::Json => format::json_line(&observation),
            };
            let line = if colour { format::colourize(&observation, line) } else { line };
            if let (Some(writer), Some(bytes)) = (pcap_out.as_mut(), observation.detail.captured()) {
                if let Err(err) = writer.write(observation.time, bytes, pcap::ip_length(bytes)) {
                    failure = Some(anyhow::anyhow!("writing the pcap file: {err}"));
                    return ControlFlow::Break(());
                }
            }
            if let Err(err) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                // A closed pipe (e.g. `| head`) ends the trace quietly.
                if err.kind() != std::io::ErrorKind::BrokenPipe {
                    failure = Some(err.into());
                }
                return ControlFlow::Break(());
            }
            summary.add(&observation);
            printed += 1;
            if args.count.is_some_and(|n| printed >= n) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
    }
    if let Some(err) = failure {
        return Err(err);
    }
    if let (Some(writer), Some(path)) = (&pcap_out, &args.pcap) {
        info!(packets = writer.packets, file = %path.display(), "pcap written");
    }
    report_handshakes(&session.ebpf);
    let counters = session.counters()?;
    let lost = counters.kernel.ringbuf_full;
    let not_shown = counters.kernel.filtered_out + filtered + counters.out_of_scope;
    let line = summary.line(lost, not_shown, counters.drops_not_attributed);
    // Text: the summary ends the output; JSON: stdout stays one event per line.
    match args.output {
        OutputFormat::Text => {
            let _ = writeln!(out, "{line}");
        }
        OutputFormat::Json => eprintln!("{line}"),
    }
    info!(
        events = printed,
        out_of_scope_drops = counters.out_of_scope,
        lost,
        undecodable = counters.undecodable,
        drops_not_attributed = counters.drops_not_attributed,
        counters = %counters.kernel.log_line(),
        "trace finished"
    );
    Ok(())
}

/// Reads the inventory file, logging what it holds and what it skipped.
pub fn load_inventory(path: &std::path::Path) -> anyhow::Result<Inventory> {
    let inv = Inventory::from_file(path)?;
    if !inv.skipped.is_empty() {
        info!(skipped = ?inv.skipped, "inventory: kinds not used were skipped");
    }
    info!(pods = inv.pods.len(), services = inv.services.len(), "inventory loaded");
    Ok(inv)
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
