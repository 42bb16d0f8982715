//! `observer trace`: attach, then print one line (or JSON object) per kernel event.

pub mod filter;
pub mod format;
pub mod pcap;

use std::{io::IsTerminal as _, ops::ControlFlow, sync::Arc, time::Duration};

use tracing::{info, warn};

use crate::{
    cli::{Colour, OutputFormat, TraceArgs},
    events::flows::handshake_summary,
    events::model::Observation,
    inventory::Inventory,
    loader::filter::KernelFilter,
    record::RecordTo,
    session::{Session, SessionConfig},
    sinks::{self, lines::Lines, Sink},
    stop::StopToken,
};

/// Runs the trace until `stop` is set (the CLI sets it on Ctrl-C/SIGTERM), `--duration` or
/// `--count`; with `--replay`, prints a recording instead.
pub fn run(args: &TraceArgs, stop: &StopToken) -> anyhow::Result<()> {
    let inventory = match &args.inventory {
        Some(path) => Some(Arc::new(load_inventory(path)?)),
        None => None,
    };
    if let Some(path) = &args.replay {
        return replay(path, args, inventory.as_ref());
    }
    let netns = crate::loader::NetnsTarget::resolve(args.netns.as_deref())?;
    let config = SessionConfig {
        netns: args.netns.clone(),
        cgroup_root: args.cgroup_root.clone(),
        culprits: !args.no_culprit,
        all_netns: args.all_netns,
        duration: args.duration.map(Duration::from_secs),
        record: args.record.clone().map(|path| RecordTo { path, node: netns.name.clone() }),
        kernel_log: args.kernel_log,
        tc_attach: args.tc_attach,
        cgroup_skb: args.cgroup_skb.is_on(),
    };
    let loaded = Session::load(config)?;
    let kernel = &loaded.kernel;
    let (filter, kernel_filter) = filter::build(&filter_args(args), inventory.as_deref(), &kernel.drop_reasons)?;
    // Payload leaves the kernel only for the pcap file (headers only otherwise).
    let kernel_filter = KernelFilter { capture_payload: args.pcap.is_some(), ..kernel_filter };
    let mut session = loaded.start(&kernel_filter, stop.clone())?;
    let output = std::cell::RefCell::new(Output::new(args, filter)?);
    if args.count != Some(0) {
        // Lines are written once per ring-buffer drain (the tick follows each), not one by one.
        session.run_ticking(
            inventory.as_deref(),
            |_, observation| output.borrow_mut().observe(observation),
            |_| {
                let _ = output.borrow_mut().lines.flush();
            },
        )?;
    }
    let mut output = output.into_inner();
    output.end()?;
    report_handshakes(&session.ebpf);
    let counters = session.counters()?;
    let lost = counters.kernel.ringbuf_full;
    let not_shown = counters.kernel.filtered_out + output.filtered + counters.out_of_scope;
    output.summary_line(lost, not_shown, counters.drops_not_attributed);
    info!(
        events = output.printed,
        out_of_scope_drops = counters.out_of_scope,
        lost,
        undecodable = counters.undecodable,
        drops_not_attributed = counters.drops_not_attributed,
        counters = %counters.kernel.log_line(),
        "trace finished"
    );
    Ok(())
}

/// Prints a recording, through the same filters and output as a live trace.
fn replay(path: &std::path::Path, args: &TraceArgs, inventory: Option<&Arc<Inventory>>) -> anyhow::Result<()> {
    let replay = crate::record::replay(path, inventory)?;
    let reasons = crate::kernel::drop_reasons::DropReasons::from_pairs(
        replay.header.drop_reasons.iter().map(|(k, v)| (*k, v.as_str())),
    );
    let (filter, kernel_filter) = filter::build(&filter_args(args), inventory.map(|i| i.as_ref()), &reasons)?;
    let mut output = Output::new(args, filter)?;
    let mut not_in_kernel_filter = 0;
    if args.count != Some(0) {
        for o in replay.observations {
            // What the kernel filter would have let through.
            if !kernel_filter.passes(&o) {
                not_in_kernel_filter += 1;
                continue;
            }
            if output.observe(o).is_break() {
                break;
            }
        }
    }
    output.end()?;
    output.summary_line(0, output.filtered + not_in_kernel_filter, 0);
    info!(events = output.printed, "trace of the recording finished");
    Ok(())
}

fn filter_args(args: &TraceArgs) -> filter::FilterArgs<'_> {
    filter::FilterArgs {
        pods: &args.pods,
        namespaces: &args.namespaces,
        ips: &args.ips,
        ports: &args.ports,
        cidrs: &args.cidrs,
        verdict: args.verdict,
        istio: args.istio,
        drop_reasons: &args.drop_reasons,
    }
}

/// The trace's output: the filter, `--count`, and the sinks (pcap file, then text/JSON lines).
struct Output {
    filter: filter::TraceFilter,
    count: Option<u64>,
    lines: Lines,
    sinks: Vec<Box<dyn Sink>>,
    printed: u64,
    filtered: u64,
}

impl Output {
    fn new(args: &TraceArgs, filter: filter::TraceFilter) -> anyhow::Result<Self> {
        let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
        if let Some(path) = &args.pcap {
            sinks.push(Box::new(sinks::pcap::Pcap::create(path.clone())?));
        }
        let colour = args.output == OutputFormat::Text
            && match args.color {
                Colour::Always => true,
                Colour::Never => false,
                Colour::Auto => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            };
        let lines = Lines::new(args.output, colour)?;
        Ok(Self { filter, count: args.count, lines, sinks, printed: 0, filtered: 0 })
    }

    /// Hands one observation to the sinks (if it passes the filter); breaks after `--count`
    /// lines or when a sink breaks (stdout gone, pcap write failed).
    fn observe(&mut self, observation: Observation) -> ControlFlow<()> {
        if self.count.is_some_and(|n| self.printed >= n) {
            return ControlFlow::Break(());
        }
        if !self.filter.matches(&observation) {
            self.filtered += 1;
            return ControlFlow::Continue(());
        }
        if sinks::observation(&mut self.sinks, &observation).is_break()
            || self.lines.observation(&observation).is_break()
        {
            return ControlFlow::Break(());
        }
        self.printed += 1;
        if self.count.is_some_and(|n| self.printed >= n) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    /// Finishes the sinks: the first failure, if any.
    fn end(&mut self) -> anyhow::Result<()> {
        let others = sinks::finish(&mut self.sinks);
        self.lines.finish().and(others)
    }

    fn summary_line(&mut self, lost: u64, not_shown: u64, not_attributed: u64) {
        self.lines.summary_line(lost, not_shown, not_attributed);
    }
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
