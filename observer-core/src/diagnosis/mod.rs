//! The diagnosis core: turns named observations into findings about the infrastructure
//! breaking the mesh (Istio's requirements R1..R5). It knows no aya, no files: replayable on
//! the host from recorded observations.

mod classify;
mod correlate;
mod drop_advice;
pub mod engine;
pub mod flows;
mod overlay;
pub mod path;
pub mod report;

use std::{net::IpAddr, time::SystemTime};

use serde::Serialize;

pub use crate::model::Endpoint;

pub use classify::classify;
pub use correlate::{
    Connection, ConnectionDrop, Correlator, IcmpDrop, NoRouteBy, Outcome, SolicitationDrop, Stall, DEFAULT_CAPACITY,
    STALL_RETRANSMITS,
};
pub use engine::{Engine, EngineConfig, FindingUpdate};

/// Istio's requirements of the network beneath the mesh (../shared/ISTIO.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Requirement {
    R1,
    R2,
    R3,
    R4,
    R5,
}

impl Requirement {
    pub fn text(self) -> &'static str {
        match self {
            Requirement::R1 => "service endpoints are discoverable (service name -> workload IPs)",
            Requirement::R2 => "istiod reaches the Kubernetes API server",
            Requirement::R3 => "endpoints have L3 reachability to the mesh's endpoints",
            Requirement::R4 => "infrastructure firewall rules do not conflict with Istio's traffic rules",
            Requirement::R5 => "infrastructure firewall rules do not block Istio's control ports",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    ControlPlaneBlocked,
    ApiserverUnreachable,
    MeshPortBlocked,
    PolicyConflict,
    EndpointUnreachable,
    DiscoveryGap,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mechanism {
    /// The kernel dropped the packet (drop reason known).
    Dropped,
    /// A firewall answered with an ICMP error.
    Rejected,
    /// The handshake was never answered and no drop was seen on this node.
    Silent,
    /// No route (ICMP net/host unreachable, or a no-route drop).
    NoRoute,
    /// Established, then the same segment retransmitted again and again (RTOs without
    /// progress), no drop on this node: the path broke after the handshake.
    Stalled,
    /// A stall of large packets with no ICMP fragmentation-needed/packet-too-big back: a hop
    /// with a smaller MTU drops them and its ICMP is filtered (`evidence.stall` has the MTUs).
    PmtuBlackhole,
    /// The connection works (only for `discovery-gap`: the endpoint is unknown, not unreachable).
    Established,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    Critical,
    High,
    Medium,
}

/// What the events show.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Evidence {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp: Option<&'static str>,
    /// ICMP/ICMPv6 errors about this flow that the node dropped (`REASON at LOCATION netns N`):
    /// e.g. an error freed with `QUEUE_PURGE` because the socket had already closed, or a
    /// firewall dropping ICMP. Evidence only; distinct entries, at most a few.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub icmp_errors_dropped: Vec<String>,
    /// The flow's packets were freed by failed neighbour resolution (`location`
    /// `neigh_invalidate`) and a solicitation for their destination was dropped: where.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub neighbour_solicitation: Option<NeighbourEvidence>,
    /// The dropped packet was the outer packet of a tunnel (the overlay's transport): which
    /// tunnel, between which node addresses, on which port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<crate::model::Encapsulation>,
    /// For `stalled` / `pmtu-blackhole`: the retransmissions and the MTUs seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stall: Option<StallEvidence>,
    /// Connection attempts (SYNs sent, retransmissions included) over all connections.
    pub attempts: u32,
    /// Distinct connections aggregated in this finding.
    pub connections: u32,
    /// When the first and last evidence was seen (RFC 3339 in JSON).
    #[serde(serialize_with = "crate::time::serialize_rfc3339")]
    pub first_seen: SystemTime,
    #[serde(serialize_with = "crate::time::serialize_rfc3339")]
    pub last_seen: SystemTime,
}

impl Default for Evidence {
    /// No evidence; first/last seen at the Unix epoch.
    fn default() -> Self {
        Self {
            drop_reason: None,
            location: None,
            netns: None,
            interface: None,
            hook: None,
            icmp: None,
            icmp_errors_dropped: Vec::new(),
            neighbour_solicitation: None,
            tunnel: None,
            stall: None,
            attempts: 0,
            connections: 0,
            first_seen: SystemTime::UNIX_EPOCH,
            last_seen: SystemTime::UNIX_EPOCH,
        }
    }
}

/// A dropped IPv6 neighbour solicitation for the address a flow's packets waited for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NeighbourEvidence {
    /// The solicited address (the packets' destination).
    pub target: IpAddr,
    /// The kernel's drop reason of the solicitation (`NETFILTER_DROP` when a rule refused it).
    pub drop_reason: String,
    /// Kernel symbol that freed it.
    pub location: String,
    /// Network namespace inode where it was dropped (the namespace that received it: for a
    /// rule at its INPUT hook, the one holding the solicited address).
    pub netns: u32,
}

/// What a stalled connection showed (sizes in bytes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StallEvidence {
    /// Retransmissions of the same segment without progress.
    pub retransmits: u32,
    /// Largest retransmitted packet on the wire (payload + IP + minimal TCP header).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packet_bytes: Option<u32>,
    /// Its TCP payload, and the sender's MSS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_bytes: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mss: Option<u32>,
    /// MTUs of this node's interfaces on the path (interface -> bytes).
    pub path_mtus: std::collections::BTreeMap<String, u32>,
    /// The packets are larger than one of those MTUs (else: full-size packets lost beyond the node).
    pub exceeds_known_mtu: bool,
    /// An ICMP fragmentation-needed / packet-too-big about the flow came back.
    pub fragmentation_needed_seen: bool,
    /// The connection rides a tunnel (seen encapsulated on the uplink): its device and MTU, and
    /// the size of the outer packets the retransmitted ones became.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelMtuEvidence>,
}

/// The tunnel of a stalled connection (sizes in bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TunnelMtuEvidence {
    #[serde(rename = "type")]
    pub tunnel: crate::model::TunnelKind,
    /// The node's tunnel device (by link kind) and its MTU, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Bytes the encapsulation adds, and the outer packets' size.
    pub overhead: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outer_packet_bytes: Option<u32>,
    /// The tunnel's endpoints (this node's and the peer's underlay addresses).
    pub outer_src: IpAddr,
    pub outer_dst: IpAddr,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub requirement: Requirement,
    pub kind: Kind,
    pub mechanism: Mechanism,
    pub severity: Severity,
    pub src: Endpoint,
    pub dst: Endpoint,
    pub node: String,
    pub evidence: Evidence,
    /// The netfilter rule that dropped or rejected the traffic (`dropped`/`rejected` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub culprit: Option<crate::netfilter::Culprit>,
    pub remediation: String,
    /// Where between nodes a silent packet was lost (the agent, from the other node's answer
    /// through the Kubernetes API; `before-node` for calls from outside every node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<path::Path>,
}
#[cfg(test)]
mod tests;
