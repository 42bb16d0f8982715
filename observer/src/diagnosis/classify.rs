//! From a connection's outcome and the inventory's view of its ends to a finding: which of
//! Istio's requirements the infrastructure broke, and what to do about it. Only what the
//! evidence shows: an application refusing, an ambiguous reset or a pending SYN is no finding.

use crate::{
    inventory::{istio_ports, MeshMode, Role},
    netfilter::{Confidence, Culprit},
};

use super::{Connection, Evidence, Finding, Kind, Mechanism, Outcome, Party, Requirement, Severity};

/// The finding for one connection, or None when the infrastructure is not to blame.
pub fn classify(c: &Connection, node: &str, pod_cidrs: &[crate::loader::filter::Cidr]) -> Option<Finding> {
    let outcome = c.outcome();
    let named = c.culprit.as_deref().filter(|k| k.confidence != Confidence::NotIdentified);
    let mechanism = match &outcome {
        // A REJECT with a TCP reset frees the SYN (NETFILTER_DROP) and answers for the server:
        // the rule named for the drop tells it from the server's own reset (which has no drop).
        Outcome::Dropped { reason, .. } if reason.starts_with("NETFILTER") && named.is_some_and(|k| k.rejects) => {
            Mechanism::Rejected
        }
        Outcome::Dropped { .. } => Mechanism::Dropped,
        Outcome::Rejected { .. } => Mechanism::Rejected,
        Outcome::Silent => Mechanism::Silent,
        Outcome::NoRoute { .. } => Mechanism::NoRoute,
        // Working traffic is only a finding when its endpoint is a pod address nobody names (R1).
        Outcome::Established => Mechanism::Established,
        Outcome::RefusedByApplication | Outcome::Reset | Outcome::Pending => return None,
    };
    let (server_ip, port) = c.server?;
    let (src, dst) = (&c.src, &c.dst);
    let dst_known = dst.pod.is_some() || dst.service.is_some();
    let istio_port = dst.istio_port.or_else(|| {
        (dst.role == Some(Role::Istiod)).then(|| istio_ports::port_name(istio_ports::Component::Istiod, port)).flatten()
    });
    let in_mesh = |m: Option<MeshMode>| matches!(m, Some(MeshMode::Sidecar | MeshMode::Ambient));
    let unnamed_pod_address = !dst_known && src.pod.is_some() && pod_cidrs.iter().any(|c| contains(c, server_ip));
    if mechanism == Mechanism::Established && !unnamed_pod_address {
        return None;
    }
    let (requirement, kind) = if unnamed_pod_address {
        (Requirement::R1, Kind::DiscoveryGap)
    } else if dst.role == Some(Role::Istiod) && istio_port.is_some() {
        (Requirement::R5, Kind::ControlPlaneBlocked)
    } else if dst.role == Some(Role::ApiServer) && src.role == Some(Role::Istiod) {
        (Requirement::R2, Kind::ApiserverUnreachable)
    } else if istio_port.is_some() && dst_known {
        (Requirement::R5, Kind::MeshPortBlocked)
    } else if !dst_known {
        // Traffic to something the inventory does not know and that is not a pod address:
        // not the mesh's business.
        return None;
    } else if matches!(mechanism, Mechanism::Silent | Mechanism::NoRoute) {
        (Requirement::R3, Kind::EndpointUnreachable)
    } else if in_mesh(src.mesh) && in_mesh(dst.mesh) && by_firewall(&outcome) && !named.is_some_and(|k| k.blanket) {
        // A firewall rule (netfilter drop, ICMP prohibited) between mesh workloads that singles
        // out ports or peers; any other drop reason, or a rule that blocks everything between
        // the endpoints, is a reachability problem, not a policy.
        (Requirement::R4, Kind::PolicyConflict)
    } else {
        (Requirement::R3, Kind::EndpointUnreachable)
    };
    let severity = match kind {
        Kind::ControlPlaneBlocked | Kind::ApiserverUnreachable => Severity::Critical,
        Kind::DiscoveryGap => Severity::Medium,
        _ => Severity::High,
    };
    let mut evidence = Evidence {
        attempts: c.attempts(),
        connections: 1,
        first_seen: crate::events::clock::rfc3339(c.first_seen),
        last_seen: crate::events::clock::rfc3339(c.last_seen),
        ..Evidence::default()
    };
    match &outcome {
        Outcome::Dropped { reason, location, netns, interface } => {
            evidence.drop_reason = Some(reason.clone());
            evidence.location = Some(location.clone());
            evidence.netns = Some(*netns);
            evidence.interface = interface.clone();
            evidence.hook = c.drops.first().map(|d| d.4);
        }
        Outcome::Rejected { meaning } => {
            evidence.icmp = Some(meaning);
            // The REJECT rule also freed the packet: where it happened.
            if let Some((reason, location, netns, interface, hook)) = c.drops.first() {
                evidence.drop_reason = Some(reason.clone());
                evidence.location = Some(location.clone());
                evidence.netns = Some(*netns);
                evidence.interface = interface.clone();
                evidence.hook = Some(hook);
            }
        }
        Outcome::NoRoute { how } => evidence.drop_reason = Some(how.clone()),
        _ => {}
    }
    let dst_party = Party {
        ip: Some(server_ip),
        port: Some(port),
        pod: dst.pod.clone(),
        workload: dst.workload.clone(),
        service: dst.service.clone(),
        istio_port,
    };
    let src_party = Party {
        ip: Some(c.client.0),
        port: None,
        pod: src.pod.clone(),
        workload: src.workload.clone(),
        service: src.service.clone(),
        istio_port: None,
    };
    let culprit =
        matches!(mechanism, Mechanism::Dropped | Mechanism::Rejected).then(|| c.culprit.as_deref().cloned()).flatten();
    let remediation = remediation(kind, mechanism, &dst_party, &evidence, culprit.as_ref(), node);
    Some(Finding {
        requirement,
        kind,
        mechanism,
        severity,
        src: src_party,
        dst: dst_party,
        node: node.to_string(),
        evidence,
        culprit,
        remediation,
    })
}

/// Whether the outcome shows a firewall rule at work (not a routing or resource problem).
fn by_firewall(outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Dropped { reason, .. } => {
            reason.starts_with("NETFILTER") || reason.contains("POLICY") || reason.contains("FILTER")
        }
        Outcome::Rejected { meaning } => *meaning != "fragmentation-needed" && *meaning != "packet-too-big",
        _ => false,
    }
}

fn contains(cidr: &crate::loader::filter::Cidr, ip: std::net::IpAddr) -> bool {
    match (cidr.addr, ip) {
        (std::net::IpAddr::V4(net), std::net::IpAddr::V4(a)) => {
            let mask = if cidr.prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(cidr.prefix)) };
            u32::from(net) & mask == u32::from(a) & mask
        }
        (std::net::IpAddr::V6(net), std::net::IpAddr::V6(a)) => {
            let mask = if cidr.prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(cidr.prefix)) };
            u128::from(net) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

fn remediation(
    kind: Kind,
    mechanism: Mechanism,
    dst: &Party,
    evidence: &Evidence,
    culprit: Option<&Culprit>,
    node: &str,
) -> String {
    let port = dst.port.unwrap_or(0);
    let target = dst
        .service
        .clone()
        .or_else(|| dst.pod.clone())
        .unwrap_or_else(|| dst.ip.map(|i| i.to_string()).unwrap_or_default());
    let identified = culprit.filter(|c| c.confidence != Confidence::NotIdentified);
    let where_ = match (mechanism, identified) {
        (Mechanism::Dropped | Mechanism::Rejected, Some(c)) => {
            let source = match (c.network_policy.as_deref(), c.owner) {
                (Some(policy), Some(owner)) => format!(" (written by {owner} for NetworkPolicy {policy}: change the policy)"),
                (None, Some(owner)) => format!(" (written by {owner}: change its configuration, not the rule)"),
                _ => String::new(),
            };
            format!(
                "on node {node} {} decides it: {}{source}",
                if mechanism == Mechanism::Rejected { "a REJECT" } else { "a DROP" },
                c.summary()
            )
        }
        (Mechanism::Dropped, None) => format!(
            "a netfilter rule on node {node} drops it ({} in netns {}): find it with `iptables-save`/`nft list ruleset` there",
            evidence.drop_reason.as_deref().unwrap_or("?"),
            evidence.netns.unwrap_or(0)
        ),
        (Mechanism::Rejected, None) => format!("a firewall rejects it (ICMP {}); find the REJECT rule on the path", evidence.icmp.unwrap_or("error")),
        (Mechanism::Silent, _) => format!("no drop on node {node}: look beyond it (cloud firewall, security group, underlay, the destination node)"),
        (Mechanism::NoRoute, _) => format!("no route: check the routes to {target} on node {node} and the CNI's routing"),
        (Mechanism::Established, _) => "the connection itself works".to_string(),
    };
    match kind {
        Kind::ControlPlaneBlocked => format!("Allow TCP {port} to istiod ({target}): {where_}. Proxies get no configuration while it is blocked."),
        Kind::ApiserverUnreachable => format!("Allow istiod to reach the API server ({target}:{port}): {where_}."),
        Kind::MeshPortBlocked => format!("Allow Istio's port {port} ({}) to {target}: {where_}.", dst.istio_port.unwrap_or("mesh")),
        Kind::PolicyConflict => format!("An infrastructure rule blocks traffic between mesh workloads that Istio's policies govern: allow TCP {port} to {target} in the host/CNI firewall and keep authorization in Istio. {where_}."),
        Kind::EndpointUnreachable => format!("Restore L3 reachability to {target}:{port}: {where_}."),
        Kind::DiscoveryGap => format!("{target}:{port} is a pod address the inventory does not name ({where_}): check that the endpoint is registered (EndpointSlices) and that istiod sees it, or refresh the inventory."),
    }
}
