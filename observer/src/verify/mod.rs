//! `observer verify`: checks this node's firewalls against the flows Istio needs, before
//! traffic fails. Static by default (reads rulesets, sends nothing); `--probe` also tries a
//! bounded handshake per flow while the eBPF datapath watches.

pub mod matrix;
pub mod paths;
pub mod probe;
pub mod report;

use std::{ops::ControlFlow, time::Duration};

use tracing::{info, warn};

use crate::{
    cli::{OutputFormat, VerifyArgs},
    diagnosis::Correlator,
    inventory::{Inventory, MeshMode},
    loader::{filter::KernelFilter, NetnsTarget},
    session::{Session, SessionConfig},
    stop::StopToken,
    trace::load_inventory,
};
use matrix::{node_name_of, required_flows_on, SourceKind, AMBIENT_PROBE_SOURCE};
use paths::{NodePaths, Status};
use probe::{handshake, ProbeResult};
use report::{Check, VerifyReport};

/// Runs the verification; returns whether a required flow is blocked (exit status 3).
/// `stop` (set by the CLI on Ctrl-C/SIGTERM) ends a `--probe` run early; the probe also sets it
/// itself once its handshakes are done.
pub fn run(args: &VerifyArgs, stop: &StopToken) -> anyhow::Result<bool> {
    let inventory = load_inventory(&args.node.inventory)?;
    let netns = NetnsTarget::resolve(args.node.netns.as_deref())?;
    let netns_name = netns.name.clone();
    let mut paths = NodePaths::discover(netns, &inventory)?;
    let local_pods = paths.local_pod_ips();
    // Without --node-name: the node the inventory places the pods found behind this node on.
    let node = args.node.node_name.clone().or_else(|| node_name_of(&inventory, &local_pods)).unwrap_or(netns_name);
    if !inventory
        .pods
        .iter()
        .any(|p| p.node.as_deref() == Some(node.as_str()) || p.ips.iter().any(|ip| local_pods.contains(ip)))
    {
        warn!("no pod of the inventory runs on node `{node}`: is --node-name right? Only flows from this node are checked");
    }
    let flows = required_flows_on(&inventory, &node, &paths.node_ips, &local_pods);
    info!(flows = flows.len(), node = %node, "required flows");
    let mut checks = Vec::with_capacity(flows.len());
    for flow in flows {
        let verdict = paths.check(&flow)?;
        checks.push(Check {
            requirement: flow.requirement,
            purpose: flow.purpose,
            src: flow.src,
            dst: flow.dst,
            via_service: flow.via_service,
            verdict,
            probe: None,
        });
    }
    if args.probe {
        probe_all(args, &inventory, &paths, &mut checks, stop)?;
    }
    let report = VerifyReport { node: &node, checks: &checks, problems: paths.problems() };
    match args.output {
        OutputFormat::Json => println!("{}", report::json(&report)),
        OutputFormat::Text => print!("{}", report::text(&report)),
    }
    Ok(checks.iter().any(|c| c.verdict.status == Status::Blocked))
}

/// Probes every flow whose source is on this node, one handshake at a time on a worker thread,
/// while this thread runs the datapath and folds its events into connections.
fn probe_all(
    args: &VerifyArgs,
    inventory: &Inventory,
    paths: &NodePaths,
    checks: &mut [Check],
    stop: &StopToken,
) -> anyhow::Result<()> {
    let mut plan = Vec::new();
    for (i, c) in checks.iter_mut().enumerate() {
        let (netns, as_proxy) = match c.src.kind {
            SourceKind::Pod => match paths.pod_netns(c.src.ip) {
                Some(path) => {
                    let sidecar = inventory.pod_by_ip(c.src.ip).is_some_and(|p| p.mesh == MeshMode::Sidecar);
                    (path.clone(), sidecar)
                }
                None => {
                    c.probe = Some(ProbeResult::not_probed("the source pod runs on another node"));
                    continue;
                }
            },
            SourceKind::Node if c.src.ip == AMBIENT_PROBE_SOURCE => {
                c.probe = Some(ProbeResult::not_probed(
                    "169.254.7.127 is istio-cni's SNAT of kubelet probes; not reproduced",
                ));
                continue;
            }
            SourceKind::Node => (paths.node().path().to_path_buf(), false),
            SourceKind::External => {
                c.probe = Some(ProbeResult::not_probed("the source is outside this node"));
                continue;
            }
        };
        plan.push((i, netns, c.src.ip, probe_target(inventory, c), as_proxy));
    }
    let config =
        SessionConfig { netns: args.node.netns.clone(), kernel_log: args.node.kernel_log, ..SessionConfig::default() };
    let mut session = Session::load(config)?.start(&KernelFilter::default(), stop.clone())?;
    let stop = stop.clone();
    let worker = std::thread::spawn(move || {
        let results: Vec<_> = plan
            .into_iter()
            .map(|(i, netns, src, dst, as_proxy)| (i, handshake(&netns, src, dst, as_proxy).map_err(|e| e.to_string())))
            .collect();
        // Let the last drops reach the ring buffer before stopping.
        std::thread::sleep(Duration::from_millis(400));
        stop.stop();
        results
    });
    let mut correlator = Correlator::default();
    session.run(Some(inventory), |_, observation| {
        correlator.add(&observation);
        ControlFlow::Continue(())
    })?;
    let results = worker.join().map_err(|_| anyhow::anyhow!("the probe thread panicked"))?;
    for (i, result) in results {
        let Some(check) = checks.get_mut(i) else { continue };
        check.probe = Some(match result {
            Ok((sport, handshake)) => {
                let mut r = probe::outcome(handshake, correlator.get((check.src.ip, sport)), check.verdict.status);
                r.sport = Some(sport);
                r
            }
            Err(err) => ProbeResult::not_probed(format!("probe failed: {err}")),
        });
    }
    Ok(())
}

/// Where a probe connects: the Service address (and its port for the target port) when the
/// flow's client goes through the Service, so the probe meets the same DNAT; else the endpoint.
fn probe_target(inventory: &Inventory, check: &Check) -> std::net::SocketAddr {
    let endpoint = std::net::SocketAddr::new(check.dst.ip, check.dst.port);
    if !check.via_service {
        return endpoint;
    }
    inventory
        .services_of_endpoint(check.dst.ip)
        .find_map(|svc| {
            let port = svc.ports.iter().find(|p| p.target_port.unwrap_or(p.port) == check.dst.port)?;
            let ip = svc.cluster_ips.iter().find(|ip| ip.is_ipv4() == check.dst.ip.is_ipv4())?;
            Some(std::net::SocketAddr::new(*ip, port.port))
        })
        .unwrap_or(endpoint)
}

#[cfg(test)]
mod tests;
