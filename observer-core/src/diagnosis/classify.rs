//! From a connection's outcome and the inventory's view of its ends to a finding: which of
//! Istio's requirements the infrastructure broke, and what to do about it. Only what the
//! evidence shows: an application refusing, an ambiguous reset or a pending SYN is no finding.

use std::net::IpAddr;

use crate::{
    inventory::{istio_ports, MeshMode, Role},
    model::DropClass,
    netfilter::{Confidence, Culprit},
};

use super::{Connection, Endpoint, Evidence, Finding, Kind, Mechanism, Outcome, Requirement, Severity};

/// The finding for one connection, or None when the infrastructure is not to blame.
pub fn classify(c: &Connection, node: &str, pod_cidrs: &[ipnet::IpNet]) -> Option<Finding> {
    let outcome = c.outcome();
    let named = c.culprit.as_deref().filter(|k| k.confidence != Confidence::NotIdentified);
    let mechanism = match &outcome {
        // A REJECT with a TCP reset frees the SYN (NETFILTER_DROP) and answers for the server:
        // the rule named for the drop tells it from the server's own reset (which has no drop).
        Outcome::Dropped { reason, .. } if reason.class == DropClass::Netfilter && named.is_some_and(|k| k.rejects) => {
            Mechanism::Rejected
        }
        Outcome::Dropped { .. } => Mechanism::Dropped,
        Outcome::Rejected { .. } => Mechanism::Rejected,
        Outcome::Silent => Mechanism::Silent,
        Outcome::NoRoute(_) => Mechanism::NoRoute,
        Outcome::Stalled(stall) if stall.pmtu_blackhole => Mechanism::PmtuBlackhole,
        Outcome::Stalled(_) => Mechanism::Stalled,
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
    // The node dropped the tunnel's outer packet: the overlay's transport, not a port policy.
    let tunnel = match &outcome {
        Outcome::Dropped { .. } | Outcome::Rejected { .. } => c.drops.iter().find_map(|d| d.encap),
        _ => None,
    };
    let unnamed_pod_address = !dst_known && src.pod.is_some() && pod_cidrs.iter().any(|c| c.contains(&server_ip));
    if mechanism == Mechanism::Established && !unnamed_pod_address {
        return None;
    }
    // Kubelet's probes of an ambient pod, source-NATed by istio-cni, dropped or rejected: a
    // policy that does not admit the probe address conflicts with the mesh (Istio requires it).
    let ambient_probe = c.snat_source.into_iter().chain([c.client.0]).any(is_ambient_probe_source)
        && dst.pod.is_some()
        && matches!(mechanism, Mechanism::Dropped | Mechanism::Rejected);
    // A drop by routing (the reverse-path filter) is L3 reachability (R3), whatever the port:
    // R5 and R4 are about firewalls.
    let routing_drop = matches!(&outcome, Outcome::Dropped { reason, .. } if reason.class == DropClass::ReversePath);
    let (requirement, kind) = if unnamed_pod_address {
        (Requirement::R1, Kind::DiscoveryGap)
    } else if ambient_probe {
        (Requirement::R4, Kind::PolicyConflict)
    } else if dst.role == Some(Role::Istiod) && istio_port.is_some() && !routing_drop {
        (Requirement::R5, Kind::ControlPlaneBlocked)
    } else if dst.role == Some(Role::ApiServer) && src.role == Some(Role::Istiod) {
        (Requirement::R2, Kind::ApiserverUnreachable)
    } else if istio_port.is_some() && dst_known && !routing_drop {
        (Requirement::R5, Kind::MeshPortBlocked)
    } else if !dst_known {
        // Traffic to something the inventory does not know and that is not a pod address:
        // not the mesh's business.
        return None;
    } else if matches!(
        mechanism,
        Mechanism::Silent | Mechanism::NoRoute | Mechanism::Stalled | Mechanism::PmtuBlackhole
    ) {
        (Requirement::R3, Kind::EndpointUnreachable)
    } else if in_mesh(src.mesh)
        && in_mesh(dst.mesh)
        && by_firewall(&outcome)
        && !named.is_some_and(|k| k.blanket)
        && tunnel.is_none()
    {
        // A firewall rule (netfilter drop, ICMP prohibited) between mesh workloads that singles
        // out ports or peers; any other drop reason, or a rule that blocks everything between
        // the endpoints, is a reachability problem, not a policy.
        (Requirement::R4, Kind::PolicyConflict)
    } else {
        (Requirement::R3, Kind::EndpointUnreachable)
    };
    let severity = match kind {
        Kind::ControlPlaneBlocked | Kind::ApiserverUnreachable => Severity::Critical,
        // istiod unreachable by routing: the control plane is cut off all the same.
        Kind::EndpointUnreachable if dst.role == Some(Role::Istiod) && istio_port.is_some() => Severity::Critical,
        Kind::DiscoveryGap => Severity::Medium,
        _ => Severity::High,
    };
    let mut evidence = Evidence {
        icmp_errors_dropped: icmp_errors_dropped(&c.icmp_drops),
        // Unanswered SYNs that left through a tunnel: which one, towards which node.
        tunnel: tunnel.or_else(|| (mechanism == Mechanism::Silent).then_some(c.tunnel).flatten()),
        neighbour_solicitation: c.neighbour.as_ref().map(|d| super::NeighbourEvidence {
            target: d.target,
            drop_reason: d.reason.name.to_string(),
            location: d.location.clone(),
            netns: d.netns,
        }),
        attempts: c.attempts(),
        connections: 1,
        first_seen: c.first_seen,
        last_seen: c.last_seen,
        drop_reason: None,
        location: None,
        netns: None,
        interface: None,
        hook: None,
        icmp: None,
        stall: None,
    };
    match &outcome {
        Outcome::Dropped { reason, location, netns, interface } => {
            evidence.drop_reason = Some(reason.name.to_string());
            evidence.location = Some(location.clone());
            evidence.netns = Some(*netns);
            evidence.interface = interface.clone();
            evidence.hook = c.evidence_drop().map(|d| d.hook.as_str());
        }
        Outcome::Rejected { meaning } => {
            evidence.icmp = Some(meaning.as_str());
            // The REJECT rule also freed the packet: where it happened.
            if let Some(d) = c.evidence_drop().or(c.drops.first()) {
                evidence.drop_reason = Some(d.reason.name.to_string());
                evidence.location = Some(d.location.clone());
                evidence.netns = Some(d.netns);
                evidence.interface = d.interface.clone();
                evidence.hook = Some(d.hook.as_str());
            }
        }
        Outcome::NoRoute(how) => evidence.drop_reason = Some(how.to_string()),
        Outcome::Stalled(stall) => {
            evidence.stall = Some(super::StallEvidence {
                retransmits: stall.retransmits,
                packet_bytes: stall.packet_bytes,
                payload_bytes: stall.segment.map(|s| s.largest_packet_payload()),
                mss: stall.segment.map(|s| s.mss).filter(|m| *m > 0),
                path_mtus: stall.path_mtus.clone(),
                exceeds_known_mtu: stall.exceeds_known_mtu,
                fragmentation_needed_seen: stall.fragmentation_needed_seen,
                tunnel: stall.tunnel.as_ref().map(|t| super::TunnelMtuEvidence {
                    tunnel: t.encap.tunnel,
                    device: t.device.as_ref().map(|(d, _)| d.clone()),
                    mtu: t.device.as_ref().and_then(|(_, m)| *m),
                    overhead: t.overhead,
                    outer_packet_bytes: stall.packet_bytes.map(|p| p + t.overhead),
                    outer_src: t.encap.outer_src,
                    outer_dst: t.encap.outer_dst,
                }),
            })
        }
        _ => {}
    }
    // A finding's ends: who (as the inventory names them), the addresses, the port. Roles and
    // mesh modes decided the finding's kind and are not repeated.
    let dst_party = Endpoint {
        ip: Some(server_ip),
        port: Some(port),
        pod: dst.pod.clone(),
        workload: dst.workload.clone(),
        service: dst.service.clone(),
        istio_port,
        probe: dst.probe,
        ..Endpoint::default()
    };
    let src_party = Endpoint {
        ip: Some(c.client.0),
        pod: src.pod.clone(),
        workload: src.workload.clone(),
        service: src.service.clone(),
        snat_ip: c.snat_source,
        ..Endpoint::default()
    };
    let culprit =
        matches!(mechanism, Mechanism::Dropped | Mechanism::Rejected).then(|| c.culprit.as_deref().cloned()).flatten();
    let remediation = if let Some(e) = &tunnel {
        super::overlay::remediation(e, &dst_party, culprit.as_ref(), node)
    } else if ambient_probe {
        probe_remediation(mechanism, &dst_party, &evidence, culprit.as_ref(), c.client.0, node)
    } else {
        // A packet freed by failed neighbour resolution: the dropped solicitations explain it.
        let neighbour_failure = matches!(&outcome, Outcome::Dropped { reason, location, .. }
            if mechanism == Mechanism::Dropped && super::correlate::is_neighbour_failure(reason, location));
        let text =
            remediation(kind, mechanism, &dst_party, &evidence, culprit.as_ref(), c.client.0, node, neighbour_failure);
        match (&evidence.tunnel, mechanism) {
            (Some(e), Mechanism::Silent) => format!("{text} {}", super::overlay::silent_advice(e, node)),
            _ => text,
        }
    };
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
        path: None,
    })
}

/// The source istio-cni gives kubelet's probes of ambient pods: its host rule
/// `-A ISTIO_POSTRT -m owner --socket-exists -p tcp -m set --match-set istio-inpod-probes-v4 dst
/// -j SNAT --to-source 169.254.7.127` (nat POSTROUTING; the ipset holds the ambient pods), and
/// fd16:9254:7127:1337:ffff:ffff:ffff:ffff for IPv6 (istio-cni's `HostProbeSNATAddress`,
/// `HostProbeV6SNATAddress`). Istio's "Ambient and Kubernetes NetworkPolicy" guide
/// (<https://istio.io/latest/docs/ambient/usage/networkpolicy/>) requires policies to admit
/// both, or the probes fail.
pub const AMBIENT_PROBE_SOURCES: [IpAddr; 2] = [
    IpAddr::V4(std::net::Ipv4Addr::new(169, 254, 7, 127)),
    IpAddr::V6(std::net::Ipv6Addr::new(0xfd16, 0x9254, 0x7127, 0x1337, 0xffff, 0xffff, 0xffff, 0xffff)),
];

fn is_ambient_probe_source(ip: IpAddr) -> bool {
    AMBIENT_PROBE_SOURCES.contains(&ip)
}

/// The fix for kubelet's probes blocked after istio-cni's SNAT.
fn probe_remediation(
    mechanism: Mechanism,
    dst: &Endpoint,
    evidence: &Evidence,
    culprit: Option<&Culprit>,
    client: IpAddr,
    node: &str,
) -> String {
    let port = dst.port.unwrap_or(0);
    let target = dst.pod.clone().unwrap_or_else(|| dst.ip.map(|i| i.to_string()).unwrap_or_default());
    let [v4, v6] = AMBIENT_PROBE_SOURCES;
    let where_ = match culprit.filter(|c| c.confidence != Confidence::NotIdentified) {
        Some(c) => format!("the rule that blocks them, {}: {}", c.place(node), c.summary()),
        None => match mechanism {
            Mechanism::Dropped => super::drop_advice::unattributed(dropped_class(evidence), evidence, client, node),
            Mechanism::Rejected => "a firewall rejects them".to_string(),
            _ => format!("no drop on node {node}: a policy beyond it"),
        },
    };
    // The pod spec names the probe on that port (readiness, liveness...), else it is the port
    // kubelet was seen probing.
    let (probes, probe_port) = match dst.probe {
        Some(kind) => (format!("{kind} probes"), format!("{kind} probe port {port} (from the pod spec)")),
        None => ("health probes".to_string(), format!("probe port {port}")),
    };
    format!(
        "Kubelet's {probes} of {target} on port {port} arrive from istio-cni's probe SNAT address {v4} (ambient mode) and are blocked: {where_}. Admit {v4}/32 (and its IPv6 twin {v6}/128) to the pod's {probe_port} in the NetworkPolicy or host firewall; without it the pod is never ready."
    )
}

/// Most ICMP drops listed in a finding's evidence.
pub(super) const MAX_ICMP_DROPS: usize = 4;

/// The distinct dropped ICMP errors of a connection, printed.
fn icmp_errors_dropped(drops: &[super::IcmpDrop]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in drops {
        let line = format!("{} {} at {} netns {}", d.protocol.name(), d.reason, d.location, d.netns);
        if !out.contains(&line) && out.len() < MAX_ICMP_DROPS {
            out.push(line);
        }
    }
    out
}

/// What a PMTU blackhole calls for, with the sizes and MTUs seen.
fn pmtu_advice(stall: Option<&super::StallEvidence>, node: &str) -> String {
    let packet = stall.and_then(|s| s.packet_bytes).map_or_else(|| "large".to_string(), |p| format!("{p}-byte"));
    let mtus = stall
        .map(|s| s.path_mtus.iter().map(|(i, m)| format!("{i} {m}")).collect::<Vec<_>>().join(", "))
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    let beyond = if stall.is_some_and(|s| s.exceeds_known_mtu) {
        format!("they exceed an MTU on node {node}'s own path")
    } else {
        format!("they fit node {node}'s MTUs, so a hop beyond it has a smaller MTU")
    };
    if let Some(t) = stall.and_then(|s| s.tunnel.as_ref()) {
        return super::overlay::pmtu_advice(t, &packet, &mtus, node);
    }
    format!(
        "{packet} packets are retransmitted without progress and no ICMP fragmentation-needed/packet-too-big came back ({beyond}; MTUs on this node's path: {mtus}): let ICMP type 3 code 4 and ICMPv6 type 2 through the underlay's firewalls, or set the CNI/pod MTU to the underlay's (minus any encapsulation), or enable net.ipv4.tcp_mtu_probing"
    )
}

/// Where a flow lost to failed neighbour resolution went wrong: the destination never answered
/// neighbour discovery (ARP / NDP). Not a rule of the watched node's path: the packet was
/// routed, then nobody answered for its next hop. When a solicitation for the address was
/// dropped, that namespace's rule (if named) is what to change.
fn neighbour_advice(dst: &Endpoint, evidence: &Evidence, culprit: Option<&Culprit>) -> String {
    let addr = dst.ip.map(|i| i.to_string()).unwrap_or_default();
    match (&evidence.neighbour_solicitation, culprit) {
        (Some(ns), Some(c)) => format!(
            "{addr} never answered neighbour discovery: the neighbour solicitations for {} were refused in network namespace {} (the one that received them at its {} hook) by {}; that namespace's own rules must admit ICMPv6 neighbour discovery (types 135/136) before any REJECT/DROP",
            ns.target,
            ns.netns,
            c.hook.unwrap_or("netfilter"),
            c.summary()
        ),
        (Some(ns), None) => format!(
            "{addr} never answered neighbour discovery: the neighbour solicitations for {} were dropped in network namespace {} ({} at {}); check that namespace's ip6tables/nft rules admit ICMPv6 neighbour discovery (types 135/136)",
            ns.target, ns.netns, ns.drop_reason, ns.location
        ),
        (None, _) => format!(
            "neighbour resolution of {addr} failed ({} at {}): nothing answered ARP/neighbour discovery for it on its link; check that the destination is up with that address and that ARP/ICMPv6 neighbour discovery is not filtered",
            evidence.drop_reason.as_deref().unwrap_or("?"),
            evidence.location.as_deref().unwrap_or("?")
        ),
    }
}

/// Whether the outcome shows a firewall rule at work (not a routing or resource problem).
fn by_firewall(outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Dropped { reason, .. } => reason.class.is_firewall(),
        Outcome::Rejected { meaning } => !meaning.is_pmtu(),
        _ => false,
    }
}

/// `text` with its first letter in upper case (a sentence of its own).
fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| first.to_uppercase().chain(chars).collect())
}

/// What a rule dropping conntrack-INVALID packets means for the fix.
const INVALID_STATE_ADVICE: &str = ". That rule drops packets conntrack has no connection for: \
    opening the port changes nothing. The cause is a reply or segment whose connection conntrack \
    does not know: an asymmetric path (the request left through another node or interface), a \
    request that bypassed conntrack (a NOTRACK/raw rule), an entry flushed or timed out; \
    compare the routes back to the client with the way the request came (`conntrack -L`)";

/// Whether the culprit rule matches conntrack state INVALID (iptables `--ctstate`/`--state
/// INVALID`, nft `ct state invalid`), by its text.
fn matches_invalid_state(c: &Culprit) -> bool {
    c.rule.as_deref().is_some_and(|r| {
        let r = r.to_ascii_lowercase();
        (r.contains("--ctstate") || r.contains("--state") || r.contains("ct state"))
            && r.contains("invalid")
            && !r.contains("new")
    })
}

/// The class of the evidence's drop reason (Other when there is none).
fn dropped_class(evidence: &Evidence) -> DropClass {
    evidence.drop_reason.as_deref().map_or(DropClass::Other, DropClass::of_name)
}

#[allow(clippy::too_many_arguments)]
fn remediation(
    kind: Kind,
    mechanism: Mechanism,
    dst: &Endpoint,
    evidence: &Evidence,
    culprit: Option<&Culprit>,
    client: IpAddr,
    node: &str,
    neighbour_failure: bool,
) -> String {
    let port = dst.port.unwrap_or(0);
    let target = dst
        .service
        .clone()
        .or_else(|| dst.pod.clone())
        .unwrap_or_else(|| dst.ip.map(|i| i.to_string()).unwrap_or_default());
    let identified = culprit.filter(|c| c.confidence != Confidence::NotIdentified);
    let where_ = match (mechanism, identified) {
        _ if neighbour_failure => neighbour_advice(dst, evidence, identified),
        (Mechanism::Dropped | Mechanism::Rejected, Some(c)) => {
            let source = match (c.network_policy.as_deref(), c.owner) {
                (Some(policy), Some(owner)) => format!(" (written by {owner} for NetworkPolicy {policy}: change the policy)"),
                (None, Some(owner)) => format!(" (written by {owner}: change its configuration, not the rule)"),
                _ => String::new(),
            };
            format!(
                "{} {} decides it: {}{source}{}",
                c.place(node),
                if mechanism == Mechanism::Rejected { "a REJECT" } else { "a DROP" },
                c.summary(),
                if matches_invalid_state(c) { INVALID_STATE_ADVICE } else { "" }
            )
        }
        (Mechanism::Dropped, None) => super::drop_advice::unattributed(dropped_class(evidence), evidence, client, node),
        (Mechanism::Rejected, None) => format!("a firewall rejects it (ICMP {}); find the REJECT rule on the path", evidence.icmp.unwrap_or("error")),
        (Mechanism::Silent, _) => format!("no drop on node {node}: look beyond it (cloud firewall, security group, underlay, the destination node)"),
        (Mechanism::NoRoute, _) => format!("no route: check the routes to {target} on node {node} and the CNI's routing"),
        (Mechanism::Established, _) => "the connection itself works".to_string(),
        (Mechanism::Stalled, _) => format!(
            "the handshake succeeded, then the same segment was retransmitted {} times without progress and nothing was dropped on node {node}: the path broke beyond it after the handshake (underlay, peer node, conntrack state)",
            evidence.stall.as_ref().map_or(0, |s| s.retransmits)
        ),
        (Mechanism::PmtuBlackhole, _) => pmtu_advice(evidence.stall.as_ref(), node),
    };
    if matches!(mechanism, Mechanism::Stalled | Mechanism::PmtuBlackhole) {
        let what = dst.istio_port.map_or_else(|| "application traffic".to_string(), |p| format!("Istio's {p}"));
        return format!("Connections to {target}:{port} ({what}) stall after the handshake: {where_}.");
    }
    match kind {
        Kind::ControlPlaneBlocked => {
            format!("Allow TCP {port} to istiod ({target}): {where_}. {}", control_port_effect(dst.istio_port, port))
        }
        Kind::ApiserverUnreachable => format!("Allow istiod to reach the API server ({target}:{port}): {where_}."),
        Kind::MeshPortBlocked => format!("Allow Istio's port {port} ({}) to {target}: {where_}.", dst.istio_port.unwrap_or("mesh")),
        Kind::PolicyConflict => format!(
            "An infrastructure rule blocks traffic between mesh workloads that Istio's policies govern: allow TCP {port} to {target} where that rule lives and keep authorization in Istio. {}.",
            capitalized(&where_)
        ),
        Kind::EndpointUnreachable => match dst.istio_port {
            Some(name) => format!(
                "Restore L3 reachability to {target}:{port} (Istio's {name}): {where_}. {}",
                control_port_effect(dst.istio_port, port)
            ),
            None => format!("Restore L3 reachability to {target}:{port}: {where_}."),
        },
        Kind::DiscoveryGap => format!("{target}:{port} is a pod address the inventory does not name ({where_}): check that the endpoint is registered (EndpointSlices) and that istiod sees it, or refresh the inventory."),
    }
}

/// What breaks while istiod's `port` (named `istio_port` by the catalogue) is blocked
/// (../shared/ISTIO.md's port table; Istio's "Ports used by Istio" page).
fn control_port_effect(istio_port: Option<&str>, port: u16) -> &'static str {
    match (istio_port, port) {
        (Some("webhook"), _) | (_, 15017) => {
            "While it is blocked the API server's admission webhooks fail (`failed calling webhook \"...istio.io\"`): sidecar injection of new pods and validation of Istio configuration fail; running proxies keep their configuration."
        }
        (Some("xds" | "xds-tls"), _) | (_, 15010 | 15012) => {
            "While it is blocked proxies get no configuration (xDS) nor certificates: new pods never become ready, running ones keep stale configuration until their certificates expire."
        }
        (Some("monitoring"), _) | (_, 15014) => {
            "This is istiod's monitoring port (control plane metrics): mesh traffic is not affected, only scraping of istiod's metrics."
        }
        (Some("health" | "readiness"), _) | (_, 15021) => {
            "This is the health check port: the kubelet's probes (and load balancers' checks) fail, so the pod is taken out of rotation."
        }
        (Some("hbone"), _) | (_, 15008) => {
            "This is HBONE (mTLS tunnel of ambient mode and east-west traffic): mesh traffic tunnelled through it fails."
        }
        _ => "Istio's control traffic on this port fails while it is blocked.",
    }
}
