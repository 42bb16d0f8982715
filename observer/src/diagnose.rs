//! `observer diagnose`: watch the node, correlate what happens to each connection, and report
//! which of Istio's requirements the infrastructure breaks, where, with the evidence.

use std::{
    ops::ControlFlow,
    sync::Arc,
    time::{Duration, Instant},
};

use tracing::{debug, info, warn};

use crate::{
    cli::{DiagnoseArgs, OutputFormat},
    diagnosis::{
        report::{self, Report},
        Engine, EngineConfig, FindingUpdate,
    },
    inventory::Inventory,
    loader::filter::KernelFilter,
    record::{self, RecordTo},
    session::{Session, SessionConfig},
    sinks::{self, Sink},
    stop::StopToken,
    trace::load_inventory,
};

/// Conntrack lookups remembered (each packet side is looked up once), bounded.
const MAX_LOOKUPS: usize = 131_072;

/// The sinks of a diagnosis' finding updates (the report is printed at the end).
fn sinks() -> Vec<Box<dyn Sink>> {
    vec![Box::new(sinks::log::Log::default())]
}

/// Runs the diagnosis until `stop` is set (the CLI sets it on Ctrl-C/SIGTERM) or `--duration`;
/// returns whether findings were reported (exit status 3).
pub fn run(args: &DiagnoseArgs, stop: &StopToken) -> anyhow::Result<bool> {
    let inventory = Arc::new(load_inventory(&args.node.inventory)?);
    if let Some(path) = &args.replay {
        return replay(path, args, &inventory);
    }
    let mut config = SessionConfig {
        netns: args.node.netns.clone(),
        cgroup_root: args.cgroup_root.clone(),
        culprits: !args.no_culprit,
        all_netns: false,
        duration: args.duration.map(Duration::from_secs),
        record: None,
        tc_attach: args.tc_attach,
    };
    let netns = crate::loader::NetnsTarget::resolve(config.netns.as_deref())?;
    let node = args.node.node_name.clone().unwrap_or_else(|| netns.name.clone());
    config.record = args.record.clone().map(|path| RecordTo { path, node: node.clone() });
    let loaded = Session::load(config)?;
    // Every handshake matters to the diagnosis: no kernel-side narrowing.
    let mut session = loaded.start(&KernelFilter::default(), stop.clone())?;
    let started = Instant::now();
    let mut engine = Engine::new(EngineConfig::new(node.clone()), Arc::clone(&inventory));
    // Interface MTUs on the node's path, for PMTU findings.
    engine.set_interface_mtus(session.interface_mtus());
    // The node's conntrack, to follow connections across source NAT (istio-cni's probe SNAT,
    // masquerades) by their entries rather than by matching ports.
    let mut conntrack = match session.netns.run_inside(crate::netfilter::conntrack::Conntrack::open) {
        Ok(Ok(ct)) => Some(ct),
        Ok(Err(e)) => {
            warn!(error = %e, "no conntrack access (ctnetlink): connections are followed across SNAT by port only");
            None
        }
        Err(e) => {
            warn!(error = %e, "cannot enter the node's namespace for conntrack");
            None
        }
    };
    let mut looked_up: std::collections::HashSet<(std::net::IpAddr, u16)> = std::collections::HashSet::new();
    let recorder = session.recorder();
    let engine = std::cell::RefCell::new(engine);
    let out = std::cell::RefCell::new(sinks());
    let send = |updates: Vec<FindingUpdate>| updates.iter().for_each(|u| sinks::finding(&mut out.borrow_mut(), u));
    session.run_ticking(
        Some(&inventory),
        |_, observation| {
            let candidate = engine.borrow().snat_candidate(&observation);
            if let (Some(ct), Some((packet_side, server))) = (conntrack.as_mut(), candidate) {
                if looked_up.len() >= MAX_LOOKUPS {
                    looked_up.clear();
                }
                if looked_up.insert(packet_side) {
                    let reply = crate::netfilter::conntrack::Tuple {
                        protocol: observer_common::event::PROTO_TCP,
                        src: server.0,
                        sport: server.1,
                        dst: packet_side.0,
                        dport: packet_side.1,
                    };
                    match ct.original_of_reply(reply) {
                        Ok(Some(orig)) => {
                            let original = (orig.src, orig.sport);
                            engine.borrow_mut().follow_snat(packet_side, original, &observation);
                            if let Some(r) = recorder.as_ref() {
                                r.borrow_mut().snat(packet_side, original);
                            }
                        }
                        Ok(None) => {}
                        Err(e) => debug!(error = %e, "conntrack lookup failed"),
                    }
                }
            }
            send(engine.borrow_mut().observe(&observation));
            ControlFlow::Continue(())
        },
        |now| send(engine.borrow_mut().tick(now)),
    )?;
    let mut engine = engine.into_inner();
    send(engine.finish());
    sinks::finish(&mut out.borrow_mut())?;
    let counters = session.counters()?;
    let mut stats = engine.stats();
    (stats.lost_events, stats.duration_secs) = (counters.kernel.ringbuf_full, started.elapsed().as_secs_f64());
    stats.drops_not_attributed = counters.drops_not_attributed;
    let findings = engine.findings();
    print_report(&Report { node: &node, findings: &findings, stats }, args.output);
    info!(findings = findings.len(), "diagnosis finished");
    Ok(!findings.is_empty())
}

/// Diagnoses a recording: the same engine, fed the recorded observations, ticked by their
/// times (as the live session ticks by the clock). No root, no eBPF.
fn replay(path: &std::path::Path, args: &DiagnoseArgs, inventory: &Arc<Inventory>) -> anyhow::Result<bool> {
    let replayed = diagnose_recording(path, inventory, args.node.node_name.as_deref())?;
    let findings = &replayed.findings;
    print_report(&Report { node: &replayed.node, findings, stats: replayed.stats }, args.output);
    info!(findings = findings.len(), "diagnosis of the recording finished");
    Ok(!findings.is_empty())
}

/// What diagnosing a recording found.
pub struct Replayed {
    /// `node` as given, else the recording's.
    pub node: String,
    pub findings: Vec<crate::diagnosis::Finding>,
    pub stats: report::Stats,
}

/// Runs the engine over a recording (finding updates are logged as live); `node` overrides the
/// node named in the recording.
pub fn diagnose_recording(
    path: &std::path::Path,
    inventory: &Arc<Inventory>,
    node: Option<&str>,
) -> anyhow::Result<Replayed> {
    let replay = record::replay(path, Some(inventory))?;
    let node = node.map_or_else(|| replay.header.node.clone(), String::from);
    let mut engine = Engine::new(EngineConfig::new(node.clone()), Arc::clone(inventory));
    engine.set_interface_mtus(replay.header.interface_mtus.clone().into_iter().collect());
    let (first, last) = (replay.observations.first().map(|o| o.time), replay.observations.last().map(|o| o.time));
    let mut out = sinks();
    for (i, o) in replay.observations.iter().enumerate() {
        if let Some((translated, original)) = replay.snat.get(&i) {
            engine.follow_snat(*translated, *original, o);
        }
        let mut updates = engine.observe(o);
        updates.extend(engine.tick(o.time));
        updates.iter().for_each(|u| sinks::finding(&mut out, u));
    }
    engine.finish().iter().for_each(|u| sinks::finding(&mut out, u));
    sinks::finish(&mut out)?;
    let mut stats = engine.stats();
    stats.duration_secs = first.zip(last).and_then(|(a, b)| b.duration_since(a).ok()).map_or(0.0, |d| d.as_secs_f64());
    Ok(Replayed { node, findings: engine.findings(), stats })
}

/// Prints the report on stdout, as text or one JSON object.
pub fn print_report(report: &Report<'_>, output: OutputFormat) {
    match output {
        OutputFormat::Text => print!("{}", report::text(report)),
        OutputFormat::Json => println!("{}", report::json(report)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_reported_without_their_culprit_are_in_the_text_and_json_report() {
        let stats = report::Stats { drops_not_attributed: 3, ..report::Stats::default() };
        let report = Report { node: "node-a", findings: &[], stats };
        let text = report::text(&report);
        assert!(text.contains("WARNING: 3 netfilter drops were reported without their culprit rule"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&report::json(&report)).expect("json");
        assert_eq!(json["stats"]["drops_not_attributed"], 3);
        let quiet = Report { node: "node-a", findings: &[], stats: report::Stats::default() };
        assert!(!report::text(&quiet).contains("culprit rule"), "no warning when every drop was attributed");
    }
}
