//! `observer diagnose`: watch the node, correlate what happens to each connection, and report
//! which of Istio's requirements the infrastructure breaks, where, with the evidence.

use std::{
    ops::ControlFlow,
    time::{Duration, Instant},
};

use tracing::{debug, info, warn};

use crate::{
    cli::{DiagnoseArgs, OutputFormat},
    diagnosis::{
        classify,
        report::{self, Report, Stats},
        Correlator, Outcome,
    },
    loader::filter::KernelFilter,
    session::{Session, SessionConfig},
    stop::StopToken,
    trace::load_inventory,
};

/// Connections followed at once; beyond, the oldest are concluded in batches.
const MAX_CONNECTIONS: usize = 131_072;
const RETIRE_BATCH: usize = 16_384;

/// Concluded connections: counts and findings.
#[derive(Default)]
struct Tally {
    stats: Stats,
    findings: Vec<crate::diagnosis::Finding>,
}

impl Tally {
    fn fold(&mut self, c: &crate::diagnosis::Connection, node: &str, inventory: &crate::inventory::Inventory) {
        self.stats.connections += 1;
        let outcome = c.outcome();
        match &outcome {
            Outcome::Established => self.stats.established += 1,
            Outcome::RefusedByApplication => self.stats.refused_by_application += 1,
            _ => {}
        }
        match classify(c, node, &inventory.pod_cidrs) {
            Some(f) => self.findings.push(f),
            None if !matches!(outcome, Outcome::Established | Outcome::RefusedByApplication) => {
                self.stats.unresolved += 1
            }
            None => {}
        }
    }

    /// Merges findings of the same kind so that retired connections cost no memory.
    fn compact(&mut self) {
        self.findings = report::aggregate(std::mem::take(&mut self.findings));
    }
}

/// Runs the diagnosis until `stop` is set (the CLI sets it on Ctrl-C/SIGTERM) or `--duration`;
/// returns whether findings were reported (exit status 3).
pub fn run(args: &DiagnoseArgs, stop: &StopToken) -> anyhow::Result<bool> {
    let inventory = load_inventory(&args.node.inventory)?;
    let config = SessionConfig {
        netns: args.node.netns.clone(),
        cgroup_root: args.cgroup_root.clone(),
        culprits: !args.no_culprit,
        all_netns: false,
        duration: args.duration.map(Duration::from_secs),
    };
    let loaded = Session::load(config)?;
    let node = args.node.node_name.clone().unwrap_or_else(|| loaded.netns.name.clone());
    // Every handshake matters to the diagnosis: no kernel-side narrowing.
    let mut session = loaded.start(&KernelFilter::default(), stop.clone())?;
    let started = Instant::now();
    let mut correlator = Correlator::default();
    // Interface MTUs on the node's path, for PMTU findings.
    correlator.set_interface_mtus(session.interface_mtus());
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
    let mut events = 0u64;
    let mut announced = std::collections::HashSet::new();
    let mut tally = Tally::default();
    session.run(Some(&inventory), |_, observation| {
        events += 1;
        // Bounded memory under a flood of distinct connections: the oldest are concluded and
        // folded into the (aggregated) findings.
        if correlator.len() >= MAX_CONNECTIONS {
            for c in correlator.retire_oldest(RETIRE_BATCH) {
                announced.remove(&c.client);
                tally.fold(&c, &node, &inventory);
            }
            tally.compact();
        }
        // A drop or rejection is conclusive at once: announce it live (stderr) so an operator
        // watching sees it within moments of the first blocked attempt; the report follows.
        if let (Some(ct), Some((packet_side, server))) = (conntrack.as_mut(), correlator.snat_candidate(&observation)) {
            if looked_up.len() >= MAX_CONNECTIONS {
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
                    Ok(Some(orig)) => correlator.follow_snat(packet_side, (orig.src, orig.sport), &observation),
                    Ok(None) => {}
                    Err(e) => debug!(error = %e, "conntrack lookup failed"),
                }
            }
        }
        if let Some(client) = correlator.add(&observation) {
            if let Some(c) = correlator.get(client) {
                // Silence is conclusive once the SYN had to be retransmitted (or the attempt died).
                let conclusive = matches!(
                    c.outcome(),
                    Outcome::Dropped { .. }
                        | Outcome::Rejected { .. }
                        | Outcome::NoRoute { .. }
                        | Outcome::Silent
                        | Outcome::Stalled(_)
                );
                if conclusive && announced.insert(client) {
                    if let Some(f) = classify(c, &node, &inventory.pod_cidrs) {
                        info!(
                            requirement = ?f.requirement,
                            client = %format!("{}:{}", client.0, client.1),
                            "finding: {} {} {} -> {}:{}",
                            serde_json::to_value(f.kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
                            serde_json::to_value(f.mechanism).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
                            f.src.pod.clone().unwrap_or_else(|| client.0.to_string()),
                            f.dst.service.clone().or(f.dst.pod.clone()).unwrap_or_default(),
                            f.dst.port.unwrap_or(0),
                        );
                    }
                }
            }
        }
        ControlFlow::Continue(())
    })?;
    let counters = session.counters()?;
    for c in correlator.connections() {
        tally.fold(c, &node, &inventory);
    }
    let Tally { mut stats, findings } = tally;
    (stats.events, stats.lost_events, stats.duration_secs) =
        (events, counters.kernel.ringbuf_full, started.elapsed().as_secs_f64());
    stats.drops_not_attributed = counters.drops_not_attributed;
    let findings = report::aggregate(findings);
    let report = Report { node: &node, findings: &findings, stats };
    match args.output {
        OutputFormat::Text => print!("{}", report::text(&report)),
        OutputFormat::Json => println!("{}", report::json(&report)),
    }
    info!(findings = findings.len(), "diagnosis finished");
    Ok(!findings.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_reported_without_their_culprit_are_in_the_text_and_json_report() {
        let stats = Stats { drops_not_attributed: 3, ..Stats::default() };
        let report = Report { node: "node-a", findings: &[], stats };
        let text = report::text(&report);
        assert!(text.contains("WARNING: 3 netfilter drops were reported without their culprit rule"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&report::json(&report)).expect("json");
        assert_eq!(json["stats"]["drops_not_attributed"], 3);
        let quiet = Report { node: "node-a", findings: &[], stats: Stats::default() };
        assert!(!report::text(&quiet).contains("culprit rule"), "no warning when every drop was attributed");
    }
}
