//! `observer diagnose`: watch the node, correlate what happens to each connection, and report
//! which of Istio's requirements the infrastructure breaks, where, with the evidence.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tracing::info;

use crate::{
    cli::{DiagnoseArgs, OutputFormat},
    diagnosis::{
        report::{self, Report},
        Engine, EngineConfig,
    },
    inventory::Inventory,
    live::LiveEngine,
    loader::filter::KernelFilter,
    record::{self, RecordTo},
    session::{Session, SessionConfig},
    sinks::{self, Sink},
    stop::StopToken,
    trace::load_inventory,
};

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
        kernel_log: args.node.kernel_log,
        tc_attach: args.tc_attach,
        cgroup_skb: args.cgroup_skb.is_on(),
    };
    let netns = crate::loader::NetnsTarget::resolve(config.netns.as_deref())?;
    let node = args.node.node_name.clone().unwrap_or_else(|| netns.name.clone());
    config.record = args.record.clone().map(|path| RecordTo { path, node: node.clone() });
    let loaded = Session::load(config)?;
    // Every handshake matters to the diagnosis: no kernel-side narrowing.
    let mut session = loaded.start(&KernelFilter::default(), stop.clone())?;
    let started = Instant::now();
    let engine = Engine::new(EngineConfig::new(node.clone()), Arc::clone(&inventory));
    let mut live = LiveEngine::new(&mut session, engine);
    let mut out = sinks();
    live.run(
        &mut session,
        Some(&inventory),
        |_| {},
        |updates| updates.iter().for_each(|u| sinks::finding(&mut out, u)),
    )?;
    let mut engine = live.engine;
    engine.finish().iter().for_each(|u| sinks::finding(&mut out, u));
    sinks::finish(&mut out)?;
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
    engine.set_tunnel_interfaces(replay.header.tunnel_interfaces.iter().cloned().collect());
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
