//! Observations: kernel events with names attached (interface, drop reason, symbol), as the
//! engine and every sink consume them. Built by `observer`'s namer from wire events (live or
//! replayed); nothing here knows the wire format.

use std::{fmt, net::IpAddr, time::SystemTime};

use serde::Serialize;

use super::kinds::{Captured, DropReason, IcmpKind, SocketMilestone, TcpFlags, TcpStackEvent, TcpState};
use crate::{inventory::Endpoint, netfilter::Culprit};

/// A packet's 5-tuple with real address types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Flow {
    pub protocol: Protocol,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Protocol(pub u8);

impl Protocol {
    pub const TCP: Self = Self(6);
    pub const UDP: Self = Self(17);
    pub const ICMP: Self = Self(1);
    pub const ICMPV6: Self = Self(58);

    /// ICMP or ICMPv6: control messages, never a connection of their own.
    pub fn is_icmp(self) -> bool {
        self == Self::ICMP || self == Self::ICMPV6
    }

    pub fn name(self) -> String {
        match self {
            Self::TCP => "TCP".into(),
            Self::UDP => "UDP".into(),
            Self::ICMP => "ICMP".into(),
            Self::ICMPV6 => "ICMPv6".into(),
            Self(n) => format!("proto#{n}"),
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // The known names without a String each (one per flow of every traced event).
        match *self {
            Self::TCP => s.serialize_str("TCP"),
            Self::UDP => s.serialize_str("UDP"),
            Self::ICMP => s.serialize_str("ICMP"),
            Self::ICMPV6 => s.serialize_str("ICMPv6"),
            other => s.serialize_str(&other.name()),
        }
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ep = |ip: IpAddr, port: u16| match ip {
            IpAddr::V4(a) => format!("{a}:{port}"),
            IpAddr::V6(a) => format!("[{a}]:{port}"),
        };
        write!(f, "{} {} -> {}", self.protocol.name(), ep(self.src, self.sport), ep(self.dst, self.dport))
    }
}

/// Where in the kernel the observation was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    TcIngress,
    TcEgress,
    KfreeSkb,
    CgroupConnect,
    SockOps,
    CgroupIngress,
    CgroupEgress,
    TcpRetransmit,
    TcpSendReset,
}

impl Hook {
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::TcIngress => "tc-ingress",
            Hook::TcEgress => "tc-egress",
            Hook::KfreeSkb => "kfree_skb",
            Hook::CgroupConnect => "connect",
            Hook::SockOps => "sock_ops",
            Hook::CgroupIngress => "cgroup-ingress",
            Hook::CgroupEgress => "cgroup-egress",
            Hook::TcpRetransmit => "tcp_retransmit",
            Hook::TcpSendReset => "tcp_send_reset",
        }
    }
}

impl Hook {
    /// Whether `ifindex` of the event is an interface of the watched namespace (TC hooks) rather
    /// than of the socket's namespace (cgroup hooks).
    pub fn is_tc(self) -> bool {
        matches!(self, Hook::TcIngress | Hook::TcEgress)
    }
}

impl Serialize for Hook {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What was seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Detail {
    /// A TCP handshake or reset packet.
    Packet { tcp_flags: TcpFlags, tcp_seq: u32 },
    /// A packet the kernel dropped.
    Drop {
        drop_reason: DropReason,
        location: String,
        netns: u32,
        /// The netfilter rule that decided a `NETFILTER_DROP` (attached after the rulesets are read).
        #[serde(skip_serializing_if = "Option::is_none")]
        culprit: Option<std::sync::Arc<Culprit>>,
        /// For a dropped ICMP/ICMPv6 error: the flow it is about (read from the captured packet).
        #[serde(skip_serializing_if = "Option::is_none")]
        quoted: Option<Flow>,
        /// The dropped packet's first bytes (IP header onwards).
        #[serde(skip)]
        packet: Captured,
        /// For a dropped IPv6 neighbour solicitation: the address it asked for (its target), so
        /// the drop can be tied to the connections that waited for that neighbour.
        #[serde(skip_serializing_if = "Option::is_none")]
        solicited: Option<std::net::IpAddr>,
    },
    /// An ICMP/ICMPv6 error about another packet (`quoted`): a REJECT, an unreachable, a PMTU signal.
    IcmpError {
        icmp_type: u8,
        icmp_code: u8,
        meaning: IcmpKind,
        quoted: Option<Flow>,
        mtu: u32,
        /// The error's first bytes (IP header onwards).
        #[serde(skip)]
        packet: Captured,
    },
    /// An application's connect() (destination before any redirect/DNAT).
    Connect {
        pid: u32,
        tid: u32,
        comm: String,
        cgroup_id: u64,
        /// cgroup path relative to the watched root, when found.
        cgroup: Option<String>,
        /// Kubernetes pod uid and container id parsed from the cgroup path.
        pod_uid: Option<String>,
        container_id: Option<String>,
        socket_cookie: u64,
    },
    /// A TCP socket milestone.
    Socket { event: SocketMilestone, retransmits: u32, socket_cookie: u64 },
    /// A segment retransmitted, or a RST sent by the local TCP stack (`socket` false: no socket
    /// matched, e.g. a closed port).
    Tcp {
        event: TcpStackEvent,
        state: TcpState,
        socket: bool,
        netns: u32,
        reason: u32,
        /// For a retransmission: what was sent again (when the kernel's BTF allowed reading it).
        #[serde(skip_serializing_if = "Option::is_none")]
        segment: Option<Segment>,
    },
}

impl Detail {
    /// The captured packet bytes (drops and ICMP errors), if any.
    pub fn captured(&self) -> Option<&[u8]> {
        match self {
            Detail::Drop { packet, .. } | Detail::IcmpError { packet, .. } if !packet.is_empty() => {
                Some(packet.bytes())
            }
            _ => None,
        }
    }
}

/// A retransmitted TCP skb: its payload, first sequence number, and the sender's MSS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Segment {
    /// Payload bytes of the skb (may span several segments of `mss` bytes).
    pub payload: u32,
    pub seq: u32,
    /// The sender's MSS at the time (0 if unknown).
    pub mss: u32,
}

impl Segment {
    /// Payload bytes of the largest packet the retransmission puts on the wire.
    pub fn largest_packet_payload(self) -> u32 {
        if self.mss == 0 {
            self.payload
        } else {
            self.payload.min(self.mss)
        }
    }
}

/// One kernel event, named: when, where (hook, interface), which flow, what, by whom.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Observation {
    #[serde(serialize_with = "crate::time::serialize_rfc3339")]
    pub time: SystemTime,
    pub hook: Hook,
    pub ifindex: u32,
    /// Interface name when the ifindex belongs to the watched namespace.
    pub interface: Option<String>,
    pub flow: Option<Flow>,
    /// When the hook saw the outer packet of an encapsulation (an uplink of an overlay node):
    /// the tunnel; `flow` is the inner packet's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encap: Option<Encapsulation>,
    #[serde(flatten)]
    pub detail: Detail,
    /// The process that opened the connection (from its connect() and the socket's cookie).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
    /// Who the flow's ends are, from the inventory (`--inventory`): for ICMP errors, the ends
    /// of the quoted (rejected) flow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<Endpoint>,
}

/// Link kinds (rtnetlink `IFLA_INFO_KIND`) of tunnel devices: the decapsulated side of an
/// overlay (flannel's `vxlan`, Calico's `ipip` tunl0 and `vxlan`, OVN's `geneve`, 6in4 `sit`,
/// `ip6tnl`, GRE, WireGuard).
pub const TUNNEL_LINK_KINDS: [&str; 10] =
    ["vxlan", "geneve", "ipip", "sit", "ip6tnl", "gre", "gretap", "ip6gre", "ip6gretap", "wireguard"];

/// What kind of tunnel carried an encapsulated packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TunnelKind {
    /// VXLAN over UDP (RFC 7348): flannel, Calico VXLAN, Cilium.
    Vxlan,
    /// Geneve over UDP (RFC 8926): OVN-Kubernetes, Cilium.
    Geneve,
    /// IPv4 in IP (protocol 4): Calico IPIP.
    Ipip,
    /// IPv6 in IP (protocol 41).
    Ip6InIp,
}

impl TunnelKind {
    /// Bytes the encapsulation adds to the inner packet over an outer header of `outer_v6`
    /// (VXLAN/Geneve: outer IP + UDP 8 + 8 + inner Ethernet 14, Geneve options not counted).
    pub fn overhead(self, outer_v6: bool) -> u32 {
        let ip = if outer_v6 { 40 } else { 20 };
        match self {
            TunnelKind::Vxlan | TunnelKind::Geneve => ip + 8 + 8 + 14,
            TunnelKind::Ipip | TunnelKind::Ip6InIp => ip,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TunnelKind::Vxlan => "vxlan",
            TunnelKind::Geneve => "geneve",
            TunnelKind::Ipip => "ipip",
            TunnelKind::Ip6InIp => "ip6-in-ip",
        }
    }
}

/// The outer packet of an encapsulated one, as a hook on the underlay side saw it; the
/// observation's `flow` is then the inner (pod) packet's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Encapsulation {
    pub tunnel: TunnelKind,
    /// Outer source and destination: the tunnel's endpoints (node addresses).
    pub outer_src: IpAddr,
    pub outer_dst: IpAddr,
    /// VXLAN/Geneve virtual network identifier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// Outer UDP destination port (VXLAN/Geneve).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_port: Option<u16>,
}

impl fmt::Display for Encapsulation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> {}", self.tunnel.as_str(), self.outer_src, self.outer_dst)?;
        if let Some(port) = self.udp_port {
            write!(f, " udp/{port}")?;
        }
        if let Some(vni) = self.vni {
            write!(f, " vni {vni}")?;
        }
        Ok(())
    }
}

/// A process, as the connect hook saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Process {
    pub pid: u32,
    pub comm: String,
}

#[cfg(test)]
mod tests {
    use super::Protocol;

    #[test]
    fn a_protocol_serializes_as_its_name() {
        for (n, name) in [(6, "TCP"), (17, "UDP"), (1, "ICMP"), (58, "ICMPv6"), (132, "proto#132")] {
            assert_eq!(Protocol(n).name(), name);
            assert_eq!(serde_json::to_string(&Protocol(n)).unwrap(), format!("\"{name}\""));
        }
    }
}
