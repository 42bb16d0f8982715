use std::{
    net::IpAddr,
    time::{Duration, UNIX_EPOCH},
};

use super::*;
use crate::{
    inventory::Inventory,
    model::{
        Captured, Detail, DropReason, Flow, Hook, IcmpKind, Observation, Protocol, SocketMilestone, TcpFlags,
        TcpStackEvent, TcpState,
    },
};

const LAB: &str = include_str!("../../../observer/tests/fixtures/lab-inventory.json");

struct Scenario {
    inv: Inventory,
    correlator: Correlator,
    t: u64,
    /// What the next observations are seen through: an outer packet of this tunnel, on this
    /// interface (default: not encapsulated, on cni0).
    encap: Option<crate::model::Encapsulation>,
    interface: &'static str,
}

impl Scenario {
    fn new() -> Self {
        Self::with(LAB)
    }

    /// A scenario over another inventory (JSON text).
    fn with(inventory: &str) -> Self {
        Self {
            inv: Inventory::from_json(inventory).expect("inventory"),
            correlator: Correlator::default(),
            t: 0,
            encap: None,
            interface: "cni0",
        }
    }

    fn see(&mut self, hook: Hook, src: (&str, u16), dst: (&str, u16), detail: Detail) {
        self.see_proto(Protocol::TCP, hook, src, dst, detail);
    }

    fn see_proto(&mut self, protocol: Protocol, hook: Hook, src: (&str, u16), dst: (&str, u16), detail: Detail) {
        self.t += 1;
        let flow = Flow { protocol, src: ip(src.0), sport: src.1, dst: ip(dst.0), dport: dst.1 };
        let (s, d) = match &detail {
            Detail::IcmpError { quoted: Some(q), .. } => (q.src, (q.dst, q.dport)),
            _ => (flow.src, (flow.dst, flow.dport)),
        };
        let o = Observation {
            encap: self.encap,
            time: UNIX_EPOCH + Duration::from_secs(self.t),
            hook,
            ifindex: 3,
            interface: Some(self.interface.into()),
            flow: Some(flow),
            detail,
            src: Some(self.inv.describe(s, None)),
            dst: Some(self.inv.describe(d.0, Some(d.1))),
            process: None,
        };
        self.correlator.add(&o);
    }

    fn findings(&self) -> Vec<Finding> {
        self.correlator.connections().filter_map(|c| classify(c, "node-a", &self.inv.pod_cidrs)).collect()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn packet(flags: TcpFlags) -> Detail {
    Detail::Packet { tcp_flags: flags, tcp_seq: 1 }
}

fn dropped(reason: &str) -> Detail {
    Detail::Drop {
        drop_reason: DropReason::new(0, reason),
        location: "nft_do_chain+0x3e8".into(),
        netns: 7,
        culprit: None,
        quoted: None,
        packet: Captured::default(),
        solicited: None,
    }
}

fn socket(event: SocketMilestone) -> Detail {
    Detail::Socket { event, retransmits: 0, socket_cookie: 1 }
}

const PP: &str = "10.244.1.10";
const ISTIOD: &str = "10.244.2.10";

#[test]
fn a_netfilter_drop_of_xds_is_r5_and_an_answered_handshake_is_nothing() {
    let mut s = Scenario::new();
    s.see(Hook::TcIngress, (PP, 40000), ("10.96.0.10", 15012), packet(TcpFlags::SYN));
    s.see(Hook::KfreeSkb, (PP, 40000), (ISTIOD, 15012), dropped("NETFILTER_DROP"));
    s.see(Hook::SockOps, (PP, 40000), ("10.96.0.10", 15012), socket(SocketMilestone::Rto));
    s.see(Hook::TcIngress, (PP, 40001), (ISTIOD, 15012), packet(TcpFlags::SYN));
    s.see(Hook::TcIngress, (ISTIOD, 15012), (PP, 40001), packet(TcpFlags::SYN | TcpFlags::ACK));
    let f = s.findings();
    assert_eq!(f.len(), 1);
    let f = &f[0];
    assert_eq!(
        (f.requirement, f.kind, f.mechanism, f.severity),
        (Requirement::R5, Kind::ControlPlaneBlocked, Mechanism::Dropped, Severity::Critical)
    );
    assert_eq!(f.dst.service.as_deref(), Some("istio-system/istiod"));
    assert_eq!(f.dst.pod.as_deref(), Some("istio-system/istiod-6c8d9f7b5-k9v3p"), "the pod, learned after DNAT");
    assert_eq!(f.dst.istio_port, Some("xds-tls"));
    assert_eq!(f.evidence.attempts, 2);
    assert_eq!(f.evidence.drop_reason.as_deref(), Some("NETFILTER_DROP"));
}

#[test]
fn closed_ports_and_ambiguous_resets_are_not_blamed_on_the_network() {
    let mut s = Scenario::new();
    s.see(Hook::TcIngress, (PP, 40000), ("10.244.2.11", 9999), packet(TcpFlags::SYN));
    s.see(Hook::KfreeSkb, (PP, 40000), ("10.244.2.11", 9999), dropped("NO_SOCKET"));
    s.see(Hook::TcIngress, (PP, 40002), ("10.244.2.11", 9998), packet(TcpFlags::SYN));
    s.see(Hook::TcIngress, ("10.244.2.11", 9998), (PP, 40002), packet(TcpFlags::RST | TcpFlags::ACK));
    s.see(Hook::TcIngress, (PP, 40003), ("10.244.2.11", 9080), packet(TcpFlags::SYN));
    assert!(s.findings().is_empty(), "{:?}", s.findings());
    let outcomes: Vec<Outcome> = {
        let mut cs: Vec<&Connection> = s.correlator.connections().collect();
        cs.sort_by_key(|c| c.client.1);
        cs.iter().map(|c| c.outcome()).collect()
    };
    assert_eq!(outcomes, vec![Outcome::RefusedByApplication, Outcome::Reset, Outcome::Pending]);
}

#[test]
fn silence_is_r3_between_known_endpoints_and_unknown_pod_addresses_are_r1() {
    let mut s = Scenario::new();
    s.see(Hook::TcEgress, (PP, 41000), ("10.244.2.11", 9080), packet(TcpFlags::SYN));
    s.see(Hook::SockOps, (PP, 41000), ("10.244.2.11", 9080), socket(SocketMilestone::Rto));
    s.see(Hook::SockOps, (PP, 41000), ("10.244.2.11", 9080), socket(SocketMilestone::ConnectFailed));
    // An address in node-b's pod CIDR that no pod has.
    s.see(Hook::TcEgress, (PP, 41001), ("10.244.2.99", 9080), packet(TcpFlags::SYN));
    s.see(Hook::SockOps, (PP, 41001), ("10.244.2.99", 9080), socket(SocketMilestone::ConnectFailed));
    // Somewhere outside the cluster: none of the mesh's business.
    s.see(Hook::TcEgress, (PP, 41002), ("192.0.2.7", 443), packet(TcpFlags::SYN));
    s.see(Hook::SockOps, (PP, 41002), ("192.0.2.7", 443), socket(SocketMilestone::ConnectFailed));
    let mut f = s.findings();
    f.sort_by_key(|f| f.requirement);
    let kinds: Vec<(Requirement, Kind, Mechanism)> = f.iter().map(|f| (f.requirement, f.kind, f.mechanism)).collect();
    assert_eq!(
        kinds,
        vec![
            (Requirement::R1, Kind::DiscoveryGap, Mechanism::Silent),
            (Requirement::R3, Kind::EndpointUnreachable, Mechanism::Silent),
        ]
    );
}

#[test]
fn icmp_rejections_and_policy_conflicts() {
    let mut s = Scenario::new();
    let quoted = Flow { protocol: Protocol(6), src: ip(PP), sport: 42000, dst: ip("10.244.2.11"), dport: 9080 };
    s.see(Hook::TcEgress, (PP, 42000), ("10.244.2.11", 9080), packet(TcpFlags::SYN));
    s.see(
        Hook::TcIngress,
        ("10.244.1.1", 0),
        (PP, 0),
        Detail::IcmpError {
            icmp_type: 3,
            icmp_code: 13,
            meaning: IcmpKind::AdminProhibited,
            quoted: Some(quoted),
            mtu: 0,
            packet: Captured::default(),
        },
    );
    s.see(Hook::TcEgress, (PP, 42001), ("10.244.1.11", 9080), packet(TcpFlags::SYN));
    s.see(Hook::KfreeSkb, (PP, 42001), ("10.244.1.11", 9080), dropped("NETFILTER_DROP"));
    let mut f = s.findings();
    f.sort_by_key(|f| f.mechanism);
    assert_eq!(f.len(), 2);
    assert_eq!((f[0].kind, f[0].mechanism), (Kind::PolicyConflict, Mechanism::Dropped));
    assert_eq!((f[1].kind, f[1].mechanism), (Kind::PolicyConflict, Mechanism::Rejected));
    assert_eq!(f[1].evidence.icmp, Some("admin-prohibited"));
    let merged = report::aggregate(f.clone());
    assert_eq!(merged.len(), 2, "different mechanisms stay apart");
    let twice = report::aggregate(vec![f[0].clone(), f[0].clone()]);
    assert_eq!((twice.len(), twice[0].evidence.connections), (1, 2));
}

#[test]
fn a_reject_is_rejected_with_the_drop_kept_as_evidence() {
    let mut s = Scenario::new();
    let quoted = Flow { protocol: Protocol(6), src: ip("10.244.2.20"), sport: 43000, dst: ip(ISTIOD), dport: 15017 };
    s.see(Hook::TcIngress, ("10.244.2.20", 43000), (ISTIOD, 15017), packet(TcpFlags::SYN));
    s.see(Hook::KfreeSkb, ("10.244.2.20", 43000), (ISTIOD, 15017), dropped("NETFILTER_DROP"));
    s.see(
        Hook::TcEgress,
        ("10.244.2.1", 0),
        ("10.244.2.20", 0),
        Detail::IcmpError {
            icmp_type: 3,
            icmp_code: 13,
            meaning: IcmpKind::AdminProhibited,
            quoted: Some(quoted),
            mtu: 0,
            packet: Captured::default(),
        },
    );
    let f = s.findings();
    assert_eq!(f.len(), 1);
    assert_eq!(
        (f[0].requirement, f[0].kind, f[0].mechanism),
        (Requirement::R5, Kind::ControlPlaneBlocked, Mechanism::Rejected)
    );
    assert_eq!(f[0].dst.istio_port, Some("webhook"));
    assert_eq!(f[0].evidence.icmp, Some("admin-prohibited"));
    assert_eq!(f[0].evidence.drop_reason.as_deref(), Some("NETFILTER_DROP"), "where the REJECT rule freed the SYN");
}

#[test]
fn working_traffic_to_an_unnamed_pod_address_is_a_discovery_gap() {
    let mut s = Scenario::new();
    s.see(Hook::TcEgress, (PP, 44000), ("10.244.2.30", 9080), packet(TcpFlags::SYN));
    s.see(Hook::TcIngress, ("10.244.2.30", 9080), (PP, 44000), packet(TcpFlags::SYN | TcpFlags::ACK));
    s.see(Hook::TcEgress, (PP, 44001), ("10.244.2.11", 9080), packet(TcpFlags::SYN));
    s.see(Hook::TcIngress, ("10.244.2.11", 9080), (PP, 44001), packet(TcpFlags::SYN | TcpFlags::ACK));
    let f = s.findings();
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(
        (f[0].requirement, f[0].kind, f[0].mechanism, f[0].severity),
        (Requirement::R1, Kind::DiscoveryGap, Mechanism::Established, Severity::Medium)
    );
    assert_eq!(f[0].dst.ip, Some(ip("10.244.2.30")));
}

#[test]
fn the_most_certain_culprit_of_a_connections_drops_is_the_findings() {
    use crate::netfilter::{Confidence, Culprit};
    let with = |confidence: Confidence, chain: &str| {
        let mut c = Culprit::not_identified(Some("FORWARD"), "x");
        (c.confidence, c.backend, c.table, c.chain) =
            (confidence, Some("iptables-nft"), Some("filter".into()), Some(chain.into()));
        c.rule = Some(format!("-A {chain} -p tcp -m tcp --dport 15012 -j DROP"));
        c.note = None;
        Detail::Drop {
            drop_reason: DropReason::new(12, "NETFILTER_DROP"),
            location: "nft_do_chain+0x3e8".into(),
            netns: 7,
            culprit: Some(std::sync::Arc::new(c)),
            quoted: None,
            packet: Captured::default(),
            solicited: None,
        }
    };
    let mut s = Scenario::new();
    s.see(Hook::TcIngress, (PP, 40000), (ISTIOD, 15012), packet(TcpFlags::SYN));
    s.see(Hook::KfreeSkb, (PP, 40000), (ISTIOD, 15012), with(Confidence::Evaluated, "FORWARD"));
    s.see(Hook::KfreeSkb, (PP, 40000), (ISTIOD, 15012), with(Confidence::Confirmed, "MESH"));
    s.see(Hook::KfreeSkb, (PP, 40000), (ISTIOD, 15012), with(Confidence::Evaluated, "OTHER"));
    let findings = report::aggregate(s.findings());
    let c = findings[0].culprit.as_ref().expect("culprit");
    assert_eq!((c.confidence, c.chain.as_deref()), (Confidence::Confirmed, Some("MESH")));
    assert!(findings[0].remediation.contains("-A MESH -p tcp"), "{}", findings[0].remediation);
    let text = report::text(&report::Report { node: "node-a", findings: &findings, stats: Default::default() });
    assert!(
        text.contains(
            "culprit: iptables-nft filter/MESH `-A MESH -p tcp -m tcp --dport 15012 -j DROP` (confirmed by counters)"
        ),
        "{text}"
    );
}

fn dropped_icmp(reason: &str, quoted: Option<Flow>) -> Detail {
    Detail::Drop {
        drop_reason: DropReason::new(0, reason),
        location: "skb_queue_purge_reason+0x9c".into(),
        netns: 7,
        culprit: None,
        quoted,
        packet: Captured::default(),
        solicited: None,
    }
}

fn tcp(src: (&str, u16), dst: (&str, u16)) -> Flow {
    Flow { protocol: Protocol::TCP, src: ip(src.0), sport: src.1, dst: ip(dst.0), dport: dst.1 }
}

#[test]
fn icmp_drops_are_never_findings_of_their_own() {
    let mut s = Scenario::new();
    // A ping from the node to a pod, dropped by a firewall; a neighbour solicitation from the
    // bridge dropped at multicast input; an ICMP error about a flow nobody followed.
    s.see_proto(Protocol::ICMP, Hook::KfreeSkb, ("10.244.1.1", 0), (PP, 0), dropped("NETFILTER_DROP"));
    s.see_proto(
        Protocol::ICMPV6,
        Hook::KfreeSkb,
        ("fd00:10:244:1::1", 0),
        ("fd00:10:244:1::a", 0),
        dropped("IPV6_NDISC_NS_OTHERHOST"),
    );
    let unknown = Some(tcp((PP, 41000), ("10.244.2.11", 9080)));
    s.see_proto(Protocol::ICMP, Hook::KfreeSkb, ("172.31.1.1", 0), (PP, 0), dropped_icmp("QUEUE_PURGE", unknown));
    // UDP is no mesh connection either (DNS to a pod address).
    s.see_proto(Protocol::UDP, Hook::KfreeSkb, (PP, 5353), ("10.244.2.11", 53), dropped("NETFILTER_DROP"));
    assert!(s.correlator.is_empty(), "no connection made of them");
    assert!(s.findings().is_empty(), "{:?}", s.findings());
}

#[test]
fn a_dropped_icmp_error_is_evidence_on_the_connection_it_quotes() {
    let mut s = Scenario::new();
    let details = "10.244.2.11";
    s.see(Hook::TcIngress, (PP, 40000), (details, 9080), packet(TcpFlags::SYN));
    s.see(Hook::SockOps, (PP, 40000), (details, 9080), socket(SocketMilestone::Rto));
    s.see(Hook::SockOps, (PP, 40000), (details, 9080), socket(SocketMilestone::ConnectFailed));
    // The client's socket already closed: the late admin-prohibited error is freed unread.
    let quoted = Some(tcp((PP, 40000), (details, 9080)));
    s.see_proto(Protocol::ICMP, Hook::KfreeSkb, ("172.31.1.1", 0), (PP, 0), dropped_icmp("QUEUE_PURGE", quoted));
    // Also when it quotes the server's segment (server -> client).
    let reverse = Some(tcp((details, 9080), (PP, 40000)));
    s.see_proto(Protocol::ICMP, Hook::KfreeSkb, ("172.31.1.1", 0), (details, 0), dropped_icmp("QUEUE_PURGE", reverse));
    let f = s.findings();
    assert_eq!(f.len(), 1, "{f:?}");
    let f = &f[0];
    assert_eq!((f.requirement, f.kind, f.mechanism), (Requirement::R3, Kind::EndpointUnreachable, Mechanism::Silent));
    assert_eq!((f.dst.port, f.culprit.as_ref()), (Some(9080), None), "the ICMP drop decides nothing");
    assert_eq!(f.evidence.drop_reason, None);
    assert_eq!(
        f.evidence.icmp_errors_dropped,
        vec!["ICMP QUEUE_PURGE at skb_queue_purge_reason+0x9c netns 7".to_string()]
    );
}

fn retransmit(payload: u32, seq: u32, mss: u32) -> Detail {
    Detail::Tcp {
        event: TcpStackEvent::Retransmit,
        state: TcpState::Established,
        socket: true,
        netns: 7,
        reason: 0,
        segment: Some(crate::model::Segment { payload, seq, mss }),
    }
}

/// productpage's proxy connects to istiod (handshake answered), then istiod's socket
/// retransmits `payload`-byte segments of one sequence `times` times.
fn stalled_xds(s: &mut Scenario, payload: u32, times: u32) {
    s.see(Hook::TcEgress, (PP, 40000), (ISTIOD, 15012), packet(TcpFlags::SYN));
    s.see(Hook::TcIngress, (ISTIOD, 15012), (PP, 40000), packet(TcpFlags::SYN | TcpFlags::ACK));
    for _ in 0..times {
        s.see(Hook::TcpRetransmit, (ISTIOD, 15012), (PP, 40000), retransmit(payload, 7_000, 1448));
    }
}

#[test]
fn full_size_segments_retransmitted_without_progress_are_a_pmtu_blackhole() {
    let mut s = Scenario::new();
    s.correlator.set_interface_mtus([("cni0".to_string(), 1500)].into());
    stalled_xds(&mut s, 2896, STALL_RETRANSMITS);
    let f = s.findings();
    assert_eq!(f.len(), 1, "{f:?}");
    let f = &f[0];
    assert_eq!(
        (f.requirement, f.kind, f.mechanism),
        (Requirement::R5, Kind::ControlPlaneBlocked, Mechanism::PmtuBlackhole)
    );
    assert_eq!((f.dst.port, f.dst.istio_port), (Some(15012), Some("xds-tls")));
    let st = f.evidence.stall.as_ref().expect("stall evidence");
    // A GSO skb of two segments: each packet carries one MSS.
    assert_eq!((st.retransmits, st.payload_bytes, st.mss, st.packet_bytes), (3, Some(1448), Some(1448), Some(1488)));
    assert_eq!(st.path_mtus, [("cni0".to_string(), 1500)].into());
    assert!(!st.exceeds_known_mtu && !st.fragmentation_needed_seen);
    assert!(f.remediation.contains("fragmentation-needed"), "{}", f.remediation);
}

#[test]
fn packets_above_a_known_mtu_are_a_blackhole_even_when_not_full_size() {
    let mut s = Scenario::new();
    s.correlator.set_interface_mtus([("cni0".to_string(), 1000)].into());
    stalled_xds(&mut s, 1200, STALL_RETRANSMITS + 1);
    let f = s.findings();
    assert_eq!(f[0].mechanism, Mechanism::PmtuBlackhole);
    assert!(f[0].evidence.stall.as_ref().is_some_and(|st| st.exceeds_known_mtu && st.retransmits == 4));
}

#[test]
fn small_segments_stalling_or_a_pmtu_signal_are_a_plain_stall_and_few_retransmits_nothing() {
    let mut s = Scenario::new();
    stalled_xds(&mut s, 120, STALL_RETRANSMITS);
    assert_eq!(s.findings()[0].mechanism, Mechanism::Stalled);

    let mut s = Scenario::new();
    stalled_xds(&mut s, 1448, STALL_RETRANSMITS);
    // The segment's fragmentation-needed came back (a PMTU signal): not a blackhole.
    let quoted = Some(tcp((ISTIOD, 15012), (PP, 40000)));
    s.see_proto(
        Protocol::ICMP,
        Hook::TcIngress,
        ("172.31.2.1", 0),
        (ISTIOD, 0),
        Detail::IcmpError {
            icmp_type: 3,
            icmp_code: 4,
            meaning: IcmpKind::FragmentationNeeded,
            quoted,
            mtu: 1400,
            packet: Captured::default(),
        },
    );
    let f = s.findings();
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].mechanism, Mechanism::Stalled);
    assert!(f[0].evidence.stall.as_ref().is_some_and(|st| st.fragmentation_needed_seen));

    let mut s = Scenario::new();
    stalled_xds(&mut s, 1448, STALL_RETRANSMITS - 1);
    assert!(s.findings().is_empty(), "ordinary loss recovery is no finding");
}

fn vxlan(src: &str, dst: &str) -> crate::model::Encapsulation {
    crate::model::Encapsulation {
        tunnel: crate::model::TunnelKind::Vxlan,
        outer_src: ip(src),
        outer_dst: ip(dst),
        vni: Some(1),
        udp_port: Some(8472),
    }
}

/// A node dropping a tunnel's outer packets (INPUT drops VXLAN's port) cuts every pod flow
/// inside: R3 with the tunnel as evidence, never a port policy between the workloads.
#[test]
fn a_dropped_outer_packet_is_the_overlay_transport_blocked_not_a_policy() {
    let mut s = Scenario::new();
    s.see(Hook::TcEgress, (PP, 40000), ("10.244.2.11", 9080), packet(TcpFlags::SYN));
    s.encap = Some(vxlan("172.31.1.2", "172.31.2.2"));
    s.interface = "eth0";
    for _ in 0..2 {
        s.see(Hook::KfreeSkb, (PP, 40000), ("10.244.2.11", 9080), dropped("NETFILTER_DROP"));
    }
    let f = s.findings();
    assert_eq!(f.len(), 1, "{f:?}");
    let f = &f[0];
    assert_eq!((f.requirement, f.kind, f.mechanism), (Requirement::R3, Kind::EndpointUnreachable, Mechanism::Dropped));
    assert_eq!(f.evidence.tunnel, Some(vxlan("172.31.1.2", "172.31.2.2")));
    assert_eq!(f.evidence.interface.as_deref(), Some("eth0"));
    assert!(f.remediation.contains("overlay's transport is blocked: vxlan UDP 8472"), "{}", f.remediation);
}

/// Over a tunnel, the node's own fragmentation-needed (the tunnel device's MTU) was obeyed and
/// the segments, now sized for it, still vanish: a blackhole beyond the node, with the tunnel.
#[test]
fn segments_sized_for_the_tunnel_mtu_still_lost_are_a_pmtu_blackhole_naming_the_tunnel() {
    let mut s = Scenario::new();
    s.correlator.set_interface_mtus([("cni0".to_string(), 1500), ("flannel.1".to_string(), 1450)].into());
    s.correlator.set_tunnel_interfaces(["flannel.1".to_string()].into());
    s.encap = Some(vxlan("172.31.1.2", "172.31.2.2"));
    s.interface = "eth0";
    s.see(Hook::TcIngress, (PP, 40000), (ISTIOD, 15012), packet(TcpFlags::SYN));
    (s.encap, s.interface) = (None, "flannel.1");
    s.see(Hook::TcIngress, (PP, 40000), (ISTIOD, 15012), packet(TcpFlags::SYN));
    s.interface = "cni0";
    s.see(Hook::TcIngress, (ISTIOD, 15012), (PP, 40000), packet(TcpFlags::SYN | TcpFlags::ACK));
    let frag_needed = Detail::IcmpError {
        icmp_type: 3,
        icmp_code: 4,
        meaning: IcmpKind::FragmentationNeeded,
        quoted: Some(tcp((ISTIOD, 15012), (PP, 40000))),
        mtu: 1450,
        packet: Captured::default(),
    };
    s.see_proto(Protocol::ICMP, Hook::TcEgress, ("10.244.2.0", 0), (ISTIOD, 0), frag_needed);
    for _ in 0..STALL_RETRANSMITS {
        s.see(Hook::TcpRetransmit, (ISTIOD, 15012), (PP, 40000), retransmit(1398, 9_000, 1398));
    }
    let f = s.findings();
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].mechanism, Mechanism::PmtuBlackhole, "{f:?}");
    let st = f[0].evidence.stall.as_ref().expect("stall");
    assert!(st.fragmentation_needed_seen);
    let t = st.tunnel.as_ref().expect("tunnel");
    assert_eq!(
        (t.device.as_deref(), t.mtu, t.overhead, t.outer_packet_bytes),
        (Some("flannel.1"), Some(1450), 50, Some(1488))
    );
    // The lost segments are istiod's: from node-b's address back to node-a's.
    assert_eq!((t.outer_src, t.outer_dst), (ip("172.31.2.2"), ip("172.31.1.2")));
    assert!(f[0].remediation.contains("flannel.1 (MTU 1450)"), "{}", f[0].remediation);

    // Segments larger than the MTU a signal announced: the signal explains the loss (a stall).
    let mut s = Scenario::new();
    stalled_xds(&mut s, 1448, STALL_RETRANSMITS);
    let frag_needed = Detail::IcmpError {
        icmp_type: 3,
        icmp_code: 4,
        meaning: IcmpKind::FragmentationNeeded,
        quoted: Some(tcp((ISTIOD, 15012), (PP, 40000))),
        mtu: 1450,
        packet: Captured::default(),
    };
    s.see_proto(Protocol::ICMP, Hook::TcEgress, ("10.244.2.0", 0), (ISTIOD, 0), frag_needed);
    assert_eq!(s.findings()[0].mechanism, Mechanism::Stalled);
}

#[test]
fn a_node_socket_is_followed_across_the_ambient_probe_snat_and_the_block_is_r4() {
    let mut s = Scenario::new();
    let (node, details, snat) = ("172.31.1.2", "10.244.2.11", "169.254.7.127");
    // kubelet's socket (node address), then its SYN after istio-cni's SNAT, dropped in the pod.
    s.see(Hook::SockOps, (node, 41000), (details, 9080), socket(SocketMilestone::Connecting));
    s.see(Hook::TcEgress, (snat, 41000), (details, 9080), packet(TcpFlags::SYN));
    s.see(Hook::KfreeSkb, (snat, 41000), (details, 9080), dropped("NETFILTER_DROP"));
    s.see(Hook::SockOps, (node, 41000), (details, 9080), socket(SocketMilestone::Rto));
    // A pod that happens to use the same source port to the same server is its own connection.
    s.see(Hook::TcEgress, (PP, 41000), (details, 9080), packet(TcpFlags::SYN));
    s.see(Hook::TcIngress, (details, 9080), (PP, 41000), packet(TcpFlags::SYN | TcpFlags::ACK));
    assert_eq!(s.correlator.len(), 2, "kubelet's connection (one, across SNAT) and the pod's");
    let f = s.findings();
    assert_eq!(f.len(), 1, "{f:?}");
    let f = &f[0];
    assert_eq!((f.requirement, f.kind, f.mechanism), (Requirement::R4, Kind::PolicyConflict, Mechanism::Dropped));
    assert_eq!((f.src.ip, f.src.snat_ip), (Some(ip(node)), Some(ip(snat))));
    assert_eq!((f.dst.pod.as_deref(), f.dst.port), (Some("bookinfo/details-v1-8d6f5c7b9-w4r8t"), Some(9080)));
    assert_eq!(f.evidence.attempts, 2);
    assert!(f.remediation.contains("169.254.7.127/32") && f.remediation.contains("port 9080"), "{}", f.remediation);
}

/// A dropped neighbour solicitation for `target` in netns `netns`, with `culprit`.
fn dropped_solicitation(reason: &str, netns: u32, target: &str, culprit: Option<crate::netfilter::Culprit>) -> Detail {
    Detail::Drop {
        drop_reason: DropReason::new(0, reason),
        location: "nf_hook_slow+0x9c".into(),
        netns,
        culprit: culprit.map(std::sync::Arc::new),
        quoted: None,
        packet: Captured::default(),
        solicited: Some(ip(target)),
    }
}

/// The SYN freed because nobody answered neighbour discovery for its destination.
fn neighbour_failed() -> Detail {
    Detail::Drop {
        drop_reason: DropReason::new(0, "NEIGH_FAILED"),
        location: "neigh_invalidate+0x7e".into(),
        netns: 5,
        culprit: None,
        quoted: None,
        packet: Captured::default(),
        solicited: None,
    }
}

fn input_reject() -> crate::netfilter::Culprit {
    use crate::netfilter::{Confidence, Culprit};
    let mut c = Culprit::not_identified(Some("INPUT"), "x");
    (c.confidence, c.backend, c.family, c.table, c.chain) =
        (Confidence::Confirmed, Some("iptables-nft"), Some("ip6"), Some("filter".into()), Some("INPUT".into()));
    (c.rule, c.position, c.note, c.rejects, c.blanket) =
        (Some("-A INPUT -j REJECT --reject-with icmp6-port-unreachable".into()), Some(3), None, true, true);
    c
}

#[test]
fn a_syn_lost_to_unanswered_neighbour_discovery_names_the_rule_that_refused_the_solicitations() {
    // Solicitations before the SYN's drop (the usual order) and after it (a late read).
    for solicitation_first in [true, false] {
        let mut s = Scenario::new();
        let (pp6, reviews6) = ("fd00:10:244:1::a", "fd00:10:244:1::b");
        s.see(Hook::TcIngress, (pp6, 40000), (reviews6, 9080), packet(TcpFlags::SYN));
        let solicitations = |s: &mut Scenario| {
            // A bystander on the bridge drops the multicast as not its own; the destination's
            // own INPUT chain rejects it; a solicitation for another address is unrelated.
            let other = dropped_solicitation("IPV6_NDISC_NS_OTHERHOST", 8, reviews6, None);
            s.see_proto(Protocol::ICMPV6, Hook::KfreeSkb, ("fe80::1", 0), ("ff02::1:ff00:b", 0), other);
            let refused = dropped_solicitation("NETFILTER_DROP", 9, reviews6, Some(input_reject()));
            s.see_proto(Protocol::ICMPV6, Hook::KfreeSkb, ("fe80::1", 0), ("ff02::1:ff00:b", 0), refused);
            let unrelated = dropped_solicitation("NETFILTER_DROP", 10, "fd00:10:244:1::c", None);
            s.see_proto(Protocol::ICMPV6, Hook::KfreeSkb, ("fe80::1", 0), ("ff02::1:ff00:c", 0), unrelated);
        };
        if solicitation_first {
            solicitations(&mut s);
        }
        s.see(Hook::KfreeSkb, (pp6, 40000), (reviews6, 9080), neighbour_failed());
        if !solicitation_first {
            solicitations(&mut s);
        }
        let f = s.findings();
        assert_eq!(f.len(), 1, "{f:?}");
        let f = &f[0];
        assert_eq!(
            (f.requirement, f.kind, f.mechanism),
            (Requirement::R3, Kind::EndpointUnreachable, Mechanism::Dropped)
        );
        assert_eq!((f.dst.ip, f.dst.port), (Some(ip(reviews6)), Some(9080)));
        let c = f.culprit.as_ref().expect("the INPUT rule");
        assert_eq!((c.chain.as_deref(), c.position), (Some("INPUT"), Some(3)));
        let ns = f.evidence.neighbour_solicitation.as_ref().expect("evidence");
        assert_eq!((ns.target, ns.netns, ns.drop_reason.as_str()), (ip(reviews6), 9, "NETFILTER_DROP"));
        assert!(
            f.remediation.contains("network namespace 9") && !f.remediation.contains("on node"),
            "{}",
            f.remediation
        );
    }
}

#[test]
fn a_syn_lost_to_neighbour_resolution_without_a_dropped_solicitation_blames_no_rule() {
    let mut s = Scenario::new();
    s.see(Hook::TcIngress, (PP, 40000), ("10.244.1.11", 9080), packet(TcpFlags::SYN));
    s.see(Hook::KfreeSkb, (PP, 40000), ("10.244.1.11", 9080), neighbour_failed());
    let f = s.findings();
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!((f[0].mechanism, f[0].culprit.as_ref()), (Mechanism::Dropped, None));
    assert_eq!(f[0].evidence.neighbour_solicitation, None);
    assert!(f[0].remediation.contains("neighbour resolution of 10.244.1.11 failed"), "{}", f[0].remediation);
    assert!(!f[0].remediation.contains("netfilter rule"), "{}", f[0].remediation);
}

#[test]
fn a_connection_is_followed_across_a_port_changing_snat_by_what_conntrack_says() {
    let mut s = Scenario::new();
    let (node, cart) = ("10.244.1.1", "10.244.1.12");
    // Kubelet's socket (node address, port 41000); its SYN leaves SNATed to another port.
    s.see(Hook::SockOps, (node, 41000), (cart, 8080), socket(SocketMilestone::Connecting));
    let flow = tcp(("169.254.7.127", 20417), (cart, 8080));
    let syn = Observation {
        encap: None,
        time: UNIX_EPOCH + Duration::from_secs(10),
        hook: Hook::TcEgress,
        ifindex: 3,
        interface: Some("veth-cart".into()),
        flow: Some(flow),
        detail: packet(TcpFlags::SYN),
        src: Some(s.inv.describe(flow.src, None)),
        dst: Some(s.inv.describe(flow.dst, Some(8080))),
        process: None,
    };
    let (packet_side, server) = s.correlator.snat_candidate(&syn).expect("a candidate");
    assert_eq!((packet_side, server), ((ip("169.254.7.127"), 20417), (ip(cart), 8080)));
    // The node's conntrack entry: original direction node:41000 -> cart:8080.
    s.correlator.follow_snat(packet_side, (ip(node), 41000), &syn);
    s.correlator.add(&syn);
    assert_eq!(s.correlator.snat_candidate(&syn), None, "already followed");
    s.see(Hook::KfreeSkb, ("169.254.7.127", 20417), (cart, 8080), dropped("NETFILTER_DROP"));
    assert_eq!(s.correlator.len(), 1, "one connection");
    let c = s.correlator.get((ip(node), 41000)).expect("the socket's connection");
    assert_eq!((c.snat_source, c.server, c.drops.len()), (Some(ip("169.254.7.127")), Some((ip(cart), 8080)), 1));
}

#[test]
fn a_routers_address_unreachable_for_a_refused_solicitation_is_no_routing_problem() {
    let mut s = Scenario::new();
    let (pp6, reviews6) = ("fd00:10:244:1::a", "fd00:10:244:1::b");
    s.see(Hook::TcIngress, (pp6, 40000), (reviews6, 9080), packet(TcpFlags::SYN));
    let refused = dropped_solicitation("NETFILTER_DROP", 9, reviews6, Some(input_reject()));
    s.see_proto(Protocol::ICMPV6, Hook::KfreeSkb, ("fe80::1", 0), ("ff02::1:ff00:b", 0), refused);
    s.see(Hook::KfreeSkb, (pp6, 40000), (reviews6, 9080), neighbour_failed());
    // The node (a router here) reports the failed resolution to the client.
    let quoted = Some(tcp((pp6, 40000), (reviews6, 9080)));
    let unreachable = Detail::IcmpError {
        icmp_type: 1,
        icmp_code: 3,
        meaning: IcmpKind::AddressUnreachable,
        quoted,
        mtu: 0,
        packet: Captured::default(),
    };
    s.see_proto(Protocol::ICMPV6, Hook::TcEgress, ("fd00:10:244:1::1", 0), (pp6, 0), unreachable);
    let f = s.findings();
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!((f[0].mechanism, f[0].kind), (Mechanism::Dropped, Kind::EndpointUnreachable));
    assert_eq!(f[0].culprit.as_ref().and_then(|c| c.chain.as_deref()), Some("INPUT"));
}

fn dropped_at(reason: &str, location: &str) -> Detail {
    match dropped(reason) {
        Detail::Drop { drop_reason, netns, culprit, quoted, packet, solicited, .. } => {
            Detail::Drop { drop_reason, location: location.into(), netns, culprit, quoted, packet, solicited }
        }
        other => other,
    }
}

/// A connection opened before observer watched closes normally: the kernel frees its last
/// segments (`NOT_SPECIFIED` in tcp_v4_rcv, `QUEUE_PURGE`, `TCP_CLOSE`, `TCP_OLD_DATA`), and a
/// flooded frame's bystander frees its copy (`OTHERHOST`). None of it is a connection or a
/// finding, whatever its direction.
#[test]
fn the_kernels_ordinary_frees_at_a_normal_close_are_no_connection_and_no_finding() {
    let mut s = Scenario::new();
    s.see(Hook::KfreeSkb, (ISTIOD, 15012), (PP, 54528), dropped_at("NOT_SPECIFIED", "tcp_v4_rcv+0x91"));
    s.see(Hook::KfreeSkb, (PP, 54528), (ISTIOD, 15012), dropped_at("QUEUE_PURGE", "skb_queue_purge_reason+0xdf"));
    s.see(Hook::KfreeSkb, (ISTIOD, 15012), (PP, 54528), dropped_at("TCP_CLOSE", "tcp_rcv_state_process+0x1a"));
    s.see(Hook::KfreeSkb, (ISTIOD, 15012), (PP, 54528), dropped_at("TCP_OLD_DATA", "tcp_rcv_established+0x3"));
    s.see(Hook::KfreeSkb, (PP, 40000), ("10.244.1.11", 15021), dropped_at("OTHERHOST", "ip_rcv_core+0x1"));
    assert_eq!(s.correlator.len(), 0, "no connection made of the kernel's ordinary work");
    assert!(s.findings().is_empty());
    // An unusual drop (a bad checksum) of a connection not followed is no connection either.
    s.see(Hook::KfreeSkb, (PP, 40001), (ISTIOD, 15012), dropped_at("TCP_CSUM", "tcp_v4_rcv+0x40"));
    assert_eq!(s.correlator.len(), 0);
}

/// A bystander's OTHERHOST beside the real drop of a followed connection is no evidence: the
/// finding's drop is the rule's, in its namespace.
#[test]
fn a_bystanders_drop_of_a_flooded_frame_is_not_the_findings_evidence() {
    let mut s = Scenario::new();
    s.see(Hook::TcIngress, (PP, 40000), (ISTIOD, 15012), packet(TcpFlags::SYN));
    s.see(Hook::KfreeSkb, (PP, 40000), (ISTIOD, 15012), dropped_at("OTHERHOST", "ip_rcv_core+0x1"));
    s.see(Hook::KfreeSkb, (PP, 40000), (ISTIOD, 15012), dropped("NETFILTER_DROP"));
    let f = s.findings();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].evidence.drop_reason.as_deref(), Some("NETFILTER_DROP"));
    assert_eq!(f[0].evidence.location.as_deref(), Some("nft_do_chain+0x3e8"));
}

/// A server's packet dropped by a rule, of a connection observer did not see open: the
/// connection is the client's (the ephemeral port's), towards the server's port.
#[test]
fn a_drop_that_opens_a_connection_is_oriented_towards_the_service_port() {
    let mut s = Scenario::new();
    s.see(Hook::KfreeSkb, (ISTIOD, 15012), (PP, 54528), dropped("NETFILTER_DROP"));
    let c = s.correlator.connections().next().expect("a connection");
    assert_eq!(c.client, (ip(PP), 54528));
    assert_eq!(c.server, Some((ip(ISTIOD), 15012)));
    assert!(c.drops[0].reply, "the dropped packet was the server's");
    let f = s.findings();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].src.pod.as_deref(), Some("bookinfo/productpage-v1-7d9f8c6b5-x2k4q"));
    assert_eq!(f[0].dst.pod.as_deref(), Some("istio-system/istiod-6c8d9f7b5-k9v3p"));
    assert_eq!((f[0].requirement, f[0].mechanism), (Requirement::R5, Mechanism::Dropped));
}

/// The SYN-ACK reaches the node (seen at the uplink's ingress) and the node's FORWARD rule, or
/// its reverse-path filter, drops it: the client never completes its handshake. Not
/// `established`: dropped, with the reply's drop as evidence.
#[test]
fn a_syn_ack_dropped_on_the_node_after_its_ingress_is_dropped_not_established() {
    for (reason, location) in [("NETFILTER_DROP", "nft_do_chain+0x3e8"), ("IP_RPFILTER", "ip_rcv_finish_core+0x2")] {
        let mut s = Scenario::new();
        s.see(Hook::TcEgress, (PP, 40000), (ISTIOD, 15012), packet(TcpFlags::SYN));
        for _ in 0..3 {
            s.see(Hook::TcIngress, (ISTIOD, 15012), (PP, 40000), packet(TcpFlags::SYN | TcpFlags::ACK));
            s.see(Hook::KfreeSkb, (ISTIOD, 15012), (PP, 40000), dropped_at(reason, location));
        }
        s.see(Hook::SockOps, (PP, 40000), (ISTIOD, 15012), socket(SocketMilestone::ConnectFailed));
        let c = s.correlator.get((ip(PP), 40000)).expect("connection");
        assert!(!c.established);
        assert!(c.decisive_drop().is_some_and(|d| d.reply && &*d.reason.name == reason), "{reason}");
        let f = s.findings();
        assert_eq!(f.len(), 1, "{reason}");
        // Whichever requirement and mechanism the reason's class gives (a rule: R5 dropped; the
        // reverse-path filter: routing, R3), never established.
        let requirement = if reason == "IP_RPFILTER" { Requirement::R3 } else { Requirement::R5 };
        assert_eq!(f[0].requirement, requirement, "{reason}");
        assert!(matches!(f[0].mechanism, Mechanism::Dropped | Mechanism::NoRoute), "{reason}: {:?}", f[0].mechanism);
        assert_eq!(f[0].evidence.drop_reason.as_deref(), Some(reason));
    }
}

/// A SYN-ACK that got past the node (left at a TC egress) after an earlier one was dropped, or
/// a SYN dropped once and then answered: the handshake recovered, no finding. A SYN-ACK that
/// arrived with nothing dropped after it is an answer as before.
#[test]
fn a_handshake_that_recovered_from_a_drop_is_established() {
    let mut s = Scenario::new();
    s.see(Hook::TcEgress, (PP, 40000), (ISTIOD, 15012), packet(TcpFlags::SYN));
    s.see(Hook::TcIngress, (ISTIOD, 15012), (PP, 40000), packet(TcpFlags::SYN | TcpFlags::ACK));
    s.see(Hook::KfreeSkb, (ISTIOD, 15012), (PP, 40000), dropped("NETFILTER_DROP"));
    s.see(Hook::TcIngress, (ISTIOD, 15012), (PP, 40000), packet(TcpFlags::SYN | TcpFlags::ACK));
    s.see(Hook::TcEgress, (ISTIOD, 15012), (PP, 40000), packet(TcpFlags::SYN | TcpFlags::ACK));
    s.see(Hook::TcIngress, (PP, 40001), (ISTIOD, 15012), packet(TcpFlags::SYN));
    s.see(Hook::KfreeSkb, (PP, 40001), (ISTIOD, 15012), dropped("NETFILTER_DROP"));
    s.see(Hook::TcIngress, (PP, 40001), (ISTIOD, 15012), packet(TcpFlags::SYN));
    s.see(Hook::TcIngress, (ISTIOD, 15012), (PP, 40001), packet(TcpFlags::SYN | TcpFlags::ACK));
    s.see(Hook::TcIngress, (PP, 40002), (ISTIOD, 15012), packet(TcpFlags::SYN));
    s.see(Hook::TcIngress, (ISTIOD, 15012), (PP, 40002), packet(TcpFlags::SYN | TcpFlags::ACK));
    for port in [40000, 40001, 40002] {
        assert_eq!(s.correlator.get((ip(PP), port)).expect("connection").outcome(), Outcome::Established, "{port}");
    }
    assert!(s.findings().is_empty());
}

/// After the handshake, the node's rule drops the connection's data and the sender retransmits
/// without progress: the node's drop, not "stalled beyond the node". A drop before the handshake
/// completed does not explain a later stall, and a lone drop of a working connection is nothing.
#[test]
fn a_stall_the_node_caused_by_dropping_data_is_dropped_with_its_rule() {
    let mut s = Scenario::new();
    s.see(Hook::TcEgress, (PP, 40000), (ISTIOD, 15012), packet(TcpFlags::SYN));
    s.see(Hook::SockOps, (PP, 40000), (ISTIOD, 15012), socket(SocketMilestone::Established));
    for _ in 0..STALL_RETRANSMITS {
        s.see(Hook::TcpRetransmit, (PP, 40000), (ISTIOD, 15012), retransmit(900, 7_000, 1448));
        s.see(Hook::KfreeSkb, (PP, 40000), (ISTIOD, 15012), dropped("NETFILTER_DROP"));
    }
    let f = s.findings();
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].requirement, f[0].mechanism), (Requirement::R5, Mechanism::Dropped));
    assert_eq!(f[0].evidence.drop_reason.as_deref(), Some("NETFILTER_DROP"));
    assert!(f[0].evidence.stall.is_none());

    // A drop during the handshake, then established, then a stall with nothing dropped: stalled.
    let mut s = Scenario::new();
    s.see(Hook::TcEgress, (PP, 40000), (ISTIOD, 15012), packet(TcpFlags::SYN));
    s.see(Hook::KfreeSkb, (PP, 40000), (ISTIOD, 15012), dropped("NETFILTER_DROP"));
    s.see(Hook::SockOps, (PP, 40000), (ISTIOD, 15012), socket(SocketMilestone::Established));
    for _ in 0..STALL_RETRANSMITS {
        s.see(Hook::TcpRetransmit, (PP, 40000), (ISTIOD, 15012), retransmit(900, 7_000, 1448));
    }
    assert!(matches!(s.correlator.get((ip(PP), 40000)).expect("c").outcome(), Outcome::Stalled(_)));

    // Established, one segment dropped (a late packet after close, conntrack INVALID), no stall.
    let mut s = Scenario::new();
    s.see(Hook::TcEgress, (PP, 40000), (ISTIOD, 15012), packet(TcpFlags::SYN));
    s.see(Hook::SockOps, (PP, 40000), (ISTIOD, 15012), socket(SocketMilestone::Established));
    s.see(Hook::KfreeSkb, (ISTIOD, 15012), (PP, 40000), dropped("NETFILTER_DROP"));
    assert_eq!(s.correlator.get((ip(PP), 40000)).expect("c").outcome(), Outcome::Established);
    assert!(s.findings().is_empty());
}

/// A node that drops a too-big packet (PKT_TOO_BIG in ip_forward, sending fragmentation-needed
/// back) is path-MTU discovery at work: the stall's analysis decides, not the drop.
#[test]
fn a_too_big_drop_after_the_handshake_leaves_the_stall_to_its_analysis() {
    let mut s = Scenario::new();
    s.see(Hook::TcEgress, (PP, 40000), (ISTIOD, 15012), packet(TcpFlags::SYN));
    s.see(Hook::SockOps, (PP, 40000), (ISTIOD, 15012), socket(SocketMilestone::Established));
    for _ in 0..STALL_RETRANSMITS {
        s.see(Hook::TcpRetransmit, (PP, 40000), (ISTIOD, 15012), retransmit(1448, 7_000, 1448));
        s.see(Hook::KfreeSkb, (PP, 40000), (ISTIOD, 15012), dropped_at("PKT_TOO_BIG", "ip_forward+0x2c0"));
    }
    let f = s.findings();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].mechanism, Mechanism::PmtuBlackhole, "{:?}", f[0]);
}

#[test]
fn an_rp_filter_drop_of_xds_is_routing_r3_with_its_own_advice_not_a_firewall() {
    let mut s = Scenario::new();
    s.interface = "eth0";
    s.see(Hook::TcIngress, (PP, 40000), (ISTIOD, 15012), packet(TcpFlags::SYN));
    s.see(Hook::KfreeSkb, (PP, 40000), (ISTIOD, 15012), dropped("IP_RPFILTER"));
    let f = s.findings();
    assert_eq!(f.len(), 1, "{f:?}");
    let f = &f[0];
    assert_eq!(
        (f.requirement, f.kind, f.mechanism, f.severity),
        (Requirement::R3, Kind::EndpointUnreachable, Mechanism::Dropped, Severity::Critical),
        "rp_filter is routing: R3, and istiod cut off stays critical"
    );
    assert_eq!(f.dst.istio_port, Some("xds-tls"));
    assert_eq!(f.evidence.drop_reason.as_deref(), Some("IP_RPFILTER"));
    let r = &f.remediation;
    assert!(r.contains("reverse-path filter (rp_filter)") && r.contains("on eth0"), "{r}");
    assert!(r.contains("route back to the source 10.244.1.10"), "{r}");
    assert!(r.contains("rp_filter=2"), "{r}");
    assert!(r.contains("proxies get no configuration"), "{r}");
    assert!(!r.contains("netfilter rule") && !r.contains("iptables"), "{r}");

    // Between two mesh workloads the same reason is no policy conflict (R4).
    let mut s = Scenario::new();
    s.see(Hook::TcEgress, (PP, 42001), ("10.244.1.11", 9080), packet(TcpFlags::SYN));
    s.see(Hook::KfreeSkb, (PP, 42001), ("10.244.1.11", 9080), dropped("IP_RPFILTER"));
    let f = s.findings();
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!((f[0].requirement, f[0].kind), (Requirement::R3, Kind::EndpointUnreachable));
}

#[test]
fn a_tc_program_drop_between_mesh_workloads_is_a_policy_named_as_tc_not_netfilter() {
    let mut s = Scenario::new();
    s.interface = "lxc12";
    s.see(Hook::TcEgress, (PP, 42001), ("10.244.1.11", 9080), packet(TcpFlags::SYN));
    s.see(Hook::KfreeSkb, (PP, 42001), ("10.244.1.11", 9080), dropped("TC_INGRESS"));
    let f = s.findings();
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!((f[0].requirement, f[0].kind), (Requirement::R4, Kind::PolicyConflict));
    let r = &f[0].remediation;
    assert!(r.contains("A tc BPF program or action on lxc12 (ingress)"), "{r}");
    assert!(!r.contains("netfilter rule") && !r.contains("iptables"), "{r}");
}

#[test]
fn an_unidentified_netfilter_drop_names_conntrack_and_queues_too() {
    let mut s = Scenario::new();
    s.see(Hook::TcIngress, (PP, 40000), (ISTIOD, 15012), packet(TcpFlags::SYN));
    s.see(Hook::KfreeSkb, (PP, 40000), (ISTIOD, 15012), dropped("NETFILTER_DROP"));
    let f = s.findings();
    assert_eq!(f.len(), 1, "{f:?}");
    let r = &f[0].remediation;
    assert!(r.contains("iptables-save") && r.contains("conntrack -S") && r.contains("NFQUEUE"), "{r}");
}

#[test]
fn the_control_plane_fix_says_what_breaks_on_that_port() {
    let effect = |port: u16| {
        let mut s = Scenario::new();
        s.see(Hook::TcIngress, (PP, 40000), (ISTIOD, port), packet(TcpFlags::SYN));
        s.see(Hook::KfreeSkb, (PP, 40000), (ISTIOD, port), dropped("NETFILTER_DROP"));
        let f = s.findings();
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].kind, Kind::ControlPlaneBlocked, "{port}");
        f[0].remediation.clone()
    };
    let webhook = effect(15017);
    assert!(webhook.contains("failed calling webhook") && webhook.contains("sidecar injection"), "{webhook}");
    assert!(!webhook.contains("get no configuration"), "{webhook}");
    let xds = effect(15010);
    assert!(xds.contains("proxies get no configuration"), "{xds}");
    let monitoring = effect(15014);
    assert!(monitoring.contains("monitoring port") && monitoring.contains("not affected"), "{monitoring}");
}

#[test]
fn istiod_to_a_host_network_api_server_beside_typha_is_r2_to_kubernetes() {
    // review5's inv4: 172.31.1.2 serves the API server on 6443 and calico-typha on 5473.
    let mut s = Scenario::with(&crate::inventory::tests::host_network_apiserver_beside_typha());
    s.see(Hook::TcIngress, (ISTIOD, 41000), ("172.31.1.2", 6443), packet(TcpFlags::SYN));
    s.see(Hook::KfreeSkb, (ISTIOD, 41000), ("172.31.1.2", 6443), dropped("NETFILTER_DROP"));
    let f = s.findings();
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!((f[0].requirement, f[0].kind), (Requirement::R2, Kind::ApiserverUnreachable));
    assert_eq!(f[0].dst.service.as_deref(), Some("default/kubernetes"));
    assert!(!f[0].remediation.contains("calico-typha"), "{}", f[0].remediation);
}

#[test]
fn a_finished_job_holding_istiods_address_leaves_xds_blocking_r5() {
    // review5's inv5: a Succeeded Job pod keeps istiod's current address.
    let mut s = Scenario::with(&crate::inventory::tests::finished_job_holding_istiods_address());
    s.see(Hook::TcIngress, (PP, 40000), (ISTIOD, 15012), packet(TcpFlags::SYN));
    s.see(Hook::KfreeSkb, (PP, 40000), (ISTIOD, 15012), dropped("NETFILTER_DROP"));
    let f = s.findings();
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(
        (f[0].requirement, f[0].kind, f[0].severity),
        (Requirement::R5, Kind::ControlPlaneBlocked, Severity::Critical)
    );
    assert_eq!(f[0].dst.pod.as_deref(), Some("istio-system/istiod-6c8d9f7b5-k9v3p"));
    assert_eq!(f[0].dst.istio_port, Some("xds-tls"));
}

#[test]
fn a_rule_in_a_pods_own_namespace_is_worded_there_not_on_the_node() {
    use crate::netfilter::{Confidence, Culprit, RuleNamespace};
    let with = |netns: Option<RuleNamespace>| {
        let mut c = Culprit::not_identified(Some("INPUT"), "x");
        (c.confidence, c.backend, c.table, c.chain, c.note, c.netns) =
            (Confidence::Confirmed, Some("iptables-nft"), Some("filter".into()), Some("INPUT".into()), None, netns);
        c.rule = Some("-A INPUT -p tcp -m tcp --dport 15021 -j DROP".into());
        Detail::Drop {
            drop_reason: DropReason::new(12, "NETFILTER_DROP"),
            location: "nft_do_chain+0x3e8".into(),
            netns: 4026533804,
            culprit: Some(std::sync::Arc::new(c)),
            quoted: None,
            packet: Captured::default(),
            solicited: None,
        }
    };
    let reviews = "bookinfo/reviews-v1-5b8f7c9d4-q7m2n";
    let finding = |netns: Option<RuleNamespace>| {
        let mut s = Scenario::new();
        s.see(Hook::TcEgress, (PP, 40000), ("10.244.1.11", 15021), packet(TcpFlags::SYN));
        s.see(Hook::KfreeSkb, (PP, 40000), ("10.244.1.11", 15021), with(netns));
        let f = s.findings();
        assert_eq!(f.len(), 1, "{f:?}");
        f[0].clone()
    };
    let f = finding(Some(RuleNamespace::Pod { inode: 4026533804, pod: Some(reviews.into()) }));
    assert_eq!(f.dst.pod.as_deref(), Some(reviews));
    let r = &f.remediation;
    assert!(r.contains(&format!("in pod {reviews}'s network namespace (rules written inside the pod")), "{r}");
    assert!(!r.contains("on node node-a"), "{r}");
    let json = serde_json::to_value(&f).expect("json");
    assert_eq!(json["culprit"]["netns"], serde_json::json!({"kind": "pod", "inode": 4026533804u32, "pod": reviews}));
    let unnamed = finding(Some(RuleNamespace::Pod { inode: 4026533804, pod: None })).remediation;
    assert!(unnamed.contains("in network namespace 4026533804, a pod's on node node-a"), "{unnamed}");
    let node = finding(Some(RuleNamespace::Node { inode: 4026531840 }));
    assert!(node.remediation.contains("on node node-a a DROP decides it"), "{}", node.remediation);
    let json = serde_json::to_value(&node).expect("json");
    assert_eq!(json["culprit"]["netns"], serde_json::json!({"kind": "node", "inode": 4026531840u32}));
}

/// A NETFILTER_DROP of a packet whose captured IPv4 + TCP header carries `flags`.
fn dropped_with_flags(flags: u8) -> Detail {
    let mut bytes = vec![0u8; 40];
    bytes[0] = 0x45;
    bytes[9] = 6;
    bytes[20 + 13] = flags;
    match dropped("NETFILTER_DROP") {
        Detail::Drop { drop_reason, location, netns, culprit, quoted, solicited, .. } => {
            Detail::Drop { drop_reason, location, netns, culprit, quoted, packet: Captured(bytes.into()), solicited }
        }
        other => other,
    }
}

/// A remote server's answers (data) dropped by this node's rule again and again, to a local
/// client whose socket saw the handshake: no stall is seen here (the sender is remote), the
/// repeated drops are the finding. A lone one is not.
#[test]
fn a_remote_senders_data_dropped_here_again_and_again_is_dropped() {
    let mut s = Scenario::new();
    s.see(Hook::TcEgress, (PP, 40000), (ISTIOD, 15012), packet(TcpFlags::SYN));
    s.see(Hook::SockOps, (PP, 40000), (ISTIOD, 15012), socket(SocketMilestone::Established));
    s.see(Hook::KfreeSkb, (ISTIOD, 15012), (PP, 40000), dropped_with_flags(0x18));
    assert_eq!(s.correlator.get((ip(PP), 40000)).expect("c").outcome(), Outcome::Established);
    for _ in 1..STALL_RETRANSMITS {
        s.see(Hook::KfreeSkb, (ISTIOD, 15012), (PP, 40000), dropped_with_flags(0x18));
    }
    let f = s.findings();
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].requirement, f[0].mechanism), (Requirement::R5, Mechanism::Dropped));
}

/// FINs and RSTs dropped (conntrack lost the connection: flushed, timed out, and a rule drops
/// INVALID packets): of a connection observer never saw open, no connection; of one it saw
/// answered, no finding, however often the FIN is retransmitted.
#[test]
fn dropped_fins_and_rsts_of_a_connection_whose_conntrack_entry_is_gone_are_no_finding() {
    let mut s = Scenario::new();
    for flags in [0x11, 0x14, 0x04] {
        s.see(Hook::KfreeSkb, (PP, 40000), (ISTIOD, 15012), dropped_with_flags(flags));
    }
    assert_eq!(s.correlator.len(), 0);
    s.see(Hook::TcEgress, (PP, 40001), (ISTIOD, 15012), packet(TcpFlags::SYN));
    s.see(Hook::TcIngress, (ISTIOD, 15012), (PP, 40001), packet(TcpFlags::SYN | TcpFlags::ACK));
    for _ in 0..5 {
        s.see(Hook::KfreeSkb, (PP, 40001), (ISTIOD, 15012), dropped_with_flags(0x11));
    }
    assert_eq!(s.correlator.get((ip(PP), 40001)).expect("c").outcome(), Outcome::Established);
    assert!(s.findings().is_empty());
}

/// A node process outside the watched cgroup: its SYN-ACK is dropped once, the next one arrives
/// and is not dropped (delivered to its socket, no TC egress on the way): recovered.
#[test]
fn a_syn_ack_dropped_once_then_delivered_to_a_node_socket_is_established() {
    let mut s = Scenario::new();
    s.see(Hook::TcEgress, ("172.31.1.2", 40000), (ISTIOD, 15012), packet(TcpFlags::SYN));
    s.see(Hook::TcIngress, (ISTIOD, 15012), ("172.31.1.2", 40000), packet(TcpFlags::SYN | TcpFlags::ACK));
    s.see(Hook::KfreeSkb, (ISTIOD, 15012), ("172.31.1.2", 40000), dropped_with_flags(0x12));
    s.see(Hook::TcIngress, (ISTIOD, 15012), ("172.31.1.2", 40000), packet(TcpFlags::SYN | TcpFlags::ACK));
    let c = s.correlator.get((ip("172.31.1.2"), 40000)).expect("c");
    assert_eq!(c.outcome(), Outcome::Established);
}

/// Data for a socket its application closed (`TCP_ABORT_ON_DATA` in tcp_v4_do_rcv) and other
/// socket-layer frees are TCP's own work: no drop of the connection. A bad checksum there is a
/// packet lost all the same.
#[test]
fn socket_layer_frees_are_the_connections_own_work_but_a_bad_checksum_is_a_loss() {
    use crate::diagnosis::correlate::is_housekeeping;
    let reason = |name: &str| DropReason::new(0, name);
    assert!(is_housekeeping(&reason("TCP_ABORT_ON_DATA"), "tcp_v4_do_rcv+0x7c"));
    assert!(is_housekeeping(&reason("NOT_SPECIFIED"), "tcp_v4_rcv+0x91"));
    assert!(!is_housekeeping(&reason("NOT_SPECIFIED"), "ip_error+0x94"), "a blackhole route");
    assert!(!is_housekeeping(&reason("TCP_CSUM"), "tcp_v4_rcv+0x40"));
    assert!(!is_housekeeping(&reason("NETFILTER_DROP"), "nft_do_chain+0x3e8"));
}

/// A SYN-ACK dropped by an INVALID-state rule: the fix does not stop at "allow the port" but
/// says what INVALID means (conntrack has no connection for the reply).
#[test]
fn a_reply_dropped_by_an_invalid_state_rule_says_what_invalid_means() {
    use crate::netfilter::{Confidence, Culprit};
    let mut c = Culprit::not_identified(Some("FORWARD"), "x");
    (c.confidence, c.backend, c.family, c.table, c.chain) =
        (Confidence::Confirmed, Some("iptables-nft"), Some("ip"), Some("filter".into()), Some("FORWARD".into()));
    (c.rule, c.position, c.note) = (Some("-A FORWARD -m conntrack --ctstate INVALID -j DROP".into()), Some(1), None);
    let drop = match dropped_with_flags(0x12) {
        Detail::Drop { drop_reason, location, netns, quoted, packet, solicited, .. } => Detail::Drop {
            drop_reason,
            location,
            netns,
            culprit: Some(std::sync::Arc::new(c)),
            quoted,
            packet,
            solicited,
        },
        other => other,
    };
    let mut s = Scenario::new();
    s.see(Hook::TcEgress, (PP, 40000), (ISTIOD, 15012), packet(TcpFlags::SYN));
    s.see(Hook::TcIngress, (ISTIOD, 15012), (PP, 40000), packet(TcpFlags::SYN | TcpFlags::ACK));
    s.see(Hook::KfreeSkb, (ISTIOD, 15012), (PP, 40000), drop);
    let f = s.findings();
    assert_eq!(f.len(), 1);
    assert!(f[0].remediation.contains("conntrack has no connection"), "{}", f[0].remediation);
    assert!(f[0].remediation.contains("asymmetric path"), "{}", f[0].remediation);
}
