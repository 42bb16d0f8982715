//! The typed vocabulary of observations: TCP flags, socket milestones, TCP-stack events, TCP
//! states, ICMP kinds and drop reasons. Decisions match on these types; their names (the
//! strings operators know) exist only for output, through `Display`/`Serialize`.

use std::{fmt, sync::Arc};

use serde::{Serialize, Serializer};

bitflags::bitflags! {
    /// TCP header flags (RFC 9293 section 3.1), as captured by the TC and cgroup hooks.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct TcpFlags: u8 {
        const FIN = 0x01;
        const SYN = 0x02;
        const RST = 0x04;
        const PSH = 0x08;
        const ACK = 0x10;
    }
}

impl TcpFlags {
    /// A handshake's first packet: SYN without ACK.
    pub fn is_syn(self) -> bool {
        self.contains(Self::SYN) && !self.contains(Self::ACK)
    }

    /// The server's answer: SYN and ACK.
    pub fn is_syn_ack(self) -> bool {
        self.contains(Self::SYN | Self::ACK)
    }

    /// A reset (with or without ACK).
    pub fn is_rst(self) -> bool {
        self.contains(Self::RST)
    }

    /// A connection's close: FIN or RST, no SYN.
    pub fn is_closing(self) -> bool {
        self.intersects(Self::FIN | Self::RST) && !self.contains(Self::SYN)
    }
}

impl fmt::Display for TcpFlags {
    /// `SYN`, `SYN|ACK`, `RST|ACK`...; `-` for none.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names =
            [(Self::SYN, "SYN"), (Self::RST, "RST"), (Self::FIN, "FIN"), (Self::PSH, "PSH"), (Self::ACK, "ACK")];
        // Written piece by piece: a trace formats one per handshake packet.
        let mut first = true;
        for (_, name) in names.iter().filter(|(bit, _)| self.contains(*bit)) {
            if !first {
                f.write_str("|")?;
            }
            f.write_str(name)?;
            first = false;
        }
        if first {
            f.write_str("-")?;
        }
        Ok(())
    }
}

impl Serialize for TcpFlags {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A TCP socket milestone reported by sock_ops (`BPF_SOCK_OPS_*_CB`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SocketMilestone {
    /// connect() is about to send the SYN (the socket's own addresses, before any SNAT).
    Connecting,
    /// The client's handshake completed.
    Established,
    /// The server's handshake completed.
    PassiveEstablished,
    /// A retransmission timeout fired.
    Rto,
    /// The connect attempt failed (retries exhausted or an error came back).
    ConnectFailed,
    /// A callback the decoder does not know.
    Unknown,
}

impl SocketMilestone {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Established => "established",
            Self::PassiveEstablished => "passive-established",
            Self::Rto => "rto",
            Self::ConnectFailed => "connect-failed",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for SocketMilestone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the local TCP stack did (tracepoints `tcp_retransmit_skb`, `tcp_send_reset`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TcpStackEvent {
    Retransmit,
    SendReset,
}

impl TcpStackEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retransmit => "retransmit",
            Self::SendReset => "send-reset",
        }
    }
}

impl fmt::Display for TcpStackEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Kernel TCP states (include/net/tcp_states.h); `None` is a packet without a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TcpState {
    None,
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
    NewSynRecv,
    Unknown(u8),
}

impl TcpState {
    /// From the kernel's `sk_state` value.
    pub fn from_wire(state: u8) -> Self {
        match state {
            0 => Self::None,
            1 => Self::Established,
            2 => Self::SynSent,
            3 => Self::SynRecv,
            4 => Self::FinWait1,
            5 => Self::FinWait2,
            6 => Self::TimeWait,
            7 => Self::Close,
            8 => Self::CloseWait,
            9 => Self::LastAck,
            10 => Self::Listen,
            11 => Self::Closing,
            12 => Self::NewSynRecv,
            n => Self::Unknown(n),
        }
    }

    /// The kernel's name (`SYN_SENT`...), `-` for none.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "-",
            Self::Established => "ESTABLISHED",
            Self::SynSent => "SYN_SENT",
            Self::SynRecv => "SYN_RECV",
            Self::FinWait1 => "FIN_WAIT1",
            Self::FinWait2 => "FIN_WAIT2",
            Self::TimeWait => "TIME_WAIT",
            Self::Close => "CLOSE",
            Self::CloseWait => "CLOSE_WAIT",
            Self::LastAck => "LAST_ACK",
            Self::Listen => "LISTEN",
            Self::Closing => "CLOSING",
            Self::NewSynRecv => "NEW_SYN_RECV",
            Self::Unknown(_) => "UNKNOWN",
        }
    }

    /// States after the handshake in which data may still be unacknowledged (also once the
    /// sender closed its side).
    pub fn after_handshake(self) -> bool {
        matches!(self, Self::Established | Self::FinWait1 | Self::CloseWait | Self::LastAck | Self::Closing)
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for TcpState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What an ICMP (RFC 792/1812) or ICMPv6 (RFC 4443) error says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IcmpKind {
    NetUnreachable,
    HostUnreachable,
    ProtocolUnreachable,
    PortUnreachable,
    FragmentationNeeded,
    NetOrHostProhibited,
    AdminProhibited,
    /// Another destination-unreachable code.
    Unreachable,
    /// ICMPv6 "no route to destination".
    NoRoute,
    AddressUnreachable,
    SourcePolicyFailed,
    RejectRoute,
    PacketTooBig,
    /// Any other error type.
    IcmpError,
}

/// IP protocol numbers of ICMP and ICMPv6.
const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = 58;

impl IcmpKind {
    /// From the message's protocol (1 ICMP, 58 ICMPv6), type and code.
    pub fn from_wire(protocol: u8, icmp_type: u8, code: u8) -> Self {
        match (protocol, icmp_type, code) {
            (PROTO_ICMP, 3, 0) => Self::NetUnreachable,
            (PROTO_ICMP, 3, 1) => Self::HostUnreachable,
            (PROTO_ICMP, 3, 2) => Self::ProtocolUnreachable,
            (PROTO_ICMP, 3, 3) => Self::PortUnreachable,
            (PROTO_ICMP, 3, 4) => Self::FragmentationNeeded,
            (PROTO_ICMP, 3, 9) | (PROTO_ICMP, 3, 10) => Self::NetOrHostProhibited,
            (PROTO_ICMP, 3, 13) => Self::AdminProhibited,
            (PROTO_ICMP, 3, _) => Self::Unreachable,
            (PROTO_ICMPV6, 1, 0) => Self::NoRoute,
            (PROTO_ICMPV6, 1, 1) => Self::AdminProhibited,
            (PROTO_ICMPV6, 1, 3) => Self::AddressUnreachable,
            (PROTO_ICMPV6, 1, 4) => Self::PortUnreachable,
            (PROTO_ICMPV6, 1, 5) => Self::SourcePolicyFailed,
            (PROTO_ICMPV6, 1, 6) => Self::RejectRoute,
            (PROTO_ICMPV6, 1, _) => Self::Unreachable,
            (PROTO_ICMPV6, 2, _) => Self::PacketTooBig,
            _ => Self::IcmpError,
        }
    }

    /// The name operators know (`admin-prohibited`...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NetUnreachable => "net-unreachable",
            Self::HostUnreachable => "host-unreachable",
            Self::ProtocolUnreachable => "protocol-unreachable",
            Self::PortUnreachable => "port-unreachable",
            Self::FragmentationNeeded => "fragmentation-needed",
            Self::NetOrHostProhibited => "net-or-host-prohibited",
            Self::AdminProhibited => "admin-prohibited",
            Self::Unreachable => "unreachable",
            Self::NoRoute => "no-route",
            Self::AddressUnreachable => "address-unreachable",
            Self::SourcePolicyFailed => "source-policy-failed",
            Self::RejectRoute => "reject-route",
            Self::PacketTooBig => "packet-too-big",
            Self::IcmpError => "icmp-error",
        }
    }

    /// The error says there is no route to the destination (not a firewall's verdict).
    pub fn is_no_route(self) -> bool {
        matches!(
            self,
            Self::NetUnreachable | Self::HostUnreachable | Self::NoRoute | Self::AddressUnreachable | Self::RejectRoute
        )
    }

    /// A path-MTU signal: fragmentation needed (ICMP 3/4) or packet too big (ICMPv6 2).
    pub fn is_pmtu(self) -> bool {
        matches!(self, Self::FragmentationNeeded | Self::PacketTooBig)
    }
}

impl fmt::Display for IcmpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a kernel drop reason means to the diagnosis, decided once from its BTF name
/// (`enum skb_drop_reason`, include/net/dropreason-core.h; checked against Linux 6.18's list).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DropClass {
    /// A netfilter verdict (`NETFILTER_DROP`): a rule, or conntrack itself (table full), or an
    /// NFQUEUE without listener.
    Netfilter,
    /// A filter or policy that is not netfilter: a BPF socket filter (`SOCKET_FILTER`), an IPsec
    /// policy (`XFRM_POLICY`), a cgroup BPF egress program (`BPF_CGROUP_EGRESS`), a tc program or
    /// action (`TC_INGRESS`, `TC_EGRESS`, tc's own failures `TC_CHAIN_NOTFOUND`...), an LSM hook
    /// (`SECURITY_HOOK`). See [`DropClass::policy_kind`].
    Policy,
    /// The reverse-path filter (`IP_RPFILTER`, `net.ipv4.conf.*.rp_filter`): the route back to
    /// the packet's source does not leave through the interface it came in on. Routing (L3
    /// reachability), not a firewall.
    ReversePath,
    /// No socket wanted the packet (`NO_SOCKET`): a closed port, the application's answer.
    NoSocket,
    /// No route (`IP_NOROUTE`, `IP_INNOROUTES`, `IP_OUTNOROUTES`...).
    NoRoute,
    /// Neighbour resolution gave up on the next hop (`NEIGH_FAILED`, `NEIGH_QUEUEFULL`,
    /// `NEIGH_DEAD`...).
    Neighbour,
    /// Anything else (resources, malformed packets, purged queues, a tap device's MAC filter
    /// `TAP_FILTER`...).
    Other,
}

/// Which kind of non-netfilter policy dropped a packet ([`DropClass::Policy`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyKind {
    /// A classic/eBPF socket filter on the receiving socket (`SO_ATTACH_FILTER`/`SO_ATTACH_BPF`).
    SocketFilter,
    /// An IPsec (XFRM) policy of the namespace.
    Xfrm,
    /// A cgroup BPF program (`BPF_CGROUP_EGRESS`; cgroup ingress drops have no reason of their own).
    CgroupBpf,
    /// A tc BPF program or action (`TC_ACT_SHOT`) on the interface: a CNI's eBPF policy or a tc filter.
    Tc,
    /// tc failed to classify (`TC_CHAIN_NOTFOUND`, `TC_RECLASSIFY_LOOP`, `TC_COOKIE_ERROR`): a
    /// broken tc configuration on the interface.
    TcError,
    /// A Linux security module hook (SELinux, AppArmor, a BPF LSM).
    Lsm,
    /// Another name with POLICY in it (a reason newer than this list).
    Other,
}

impl DropClass {
    /// Classifies a reason by its `enum skb_drop_reason` name (without `SKB_DROP_REASON_`).
    pub fn of_name(name: &str) -> Self {
        if name.starts_with("NETFILTER") {
            Self::Netfilter
        } else if name == "NO_SOCKET" {
            Self::NoSocket
        } else if name.contains("RPFILTER") {
            Self::ReversePath
        } else if name.contains("NOROUTE") {
            Self::NoRoute
        } else if name.starts_with("NEIGH_") {
            Self::Neighbour
        } else if Self::policy_kind(name).is_some() {
            Self::Policy
        } else {
            Self::Other
        }
    }

    /// The kind of policy a reason named `name` stands for, None when it is no policy.
    pub fn policy_kind(name: &str) -> Option<PolicyKind> {
        Some(match name {
            "SOCKET_FILTER" => PolicyKind::SocketFilter,
            "XFRM_POLICY" => PolicyKind::Xfrm,
            "BPF_CGROUP_EGRESS" => PolicyKind::CgroupBpf,
            "TC_INGRESS" | "TC_EGRESS" => PolicyKind::Tc,
            "TC_CHAIN_NOTFOUND" | "TC_RECLASSIFY_LOOP" | "TC_COOKIE_ERROR" => PolicyKind::TcError,
            "SECURITY_HOOK" => PolicyKind::Lsm,
            n if n.starts_with("TC_") && n.contains("POLICY") => PolicyKind::Tc,
            n if n.contains("POLICY") => PolicyKind::Other,
            _ => return None,
        })
    }

    /// A firewall or policy decided the drop (not routing, resources or the application).
    pub fn is_firewall(self) -> bool {
        matches!(self, Self::Netfilter | Self::Policy)
    }
}

/// A kernel drop reason: its number in the running kernel, its name there, its meaning.
/// Serialized as the name (`NETFILTER_DROP`), as docs/ documents.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DropReason {
    pub code: u32,
    pub name: Arc<str>,
    pub class: DropClass,
}

impl DropReason {
    /// A reason named `name` (classified from it).
    pub fn new(code: u32, name: &str) -> Self {
        Self { code, name: Arc::from(name), class: DropClass::of_name(name) }
    }

    /// A number the kernel's BTF does not name (`reason#N`).
    pub fn unnamed(code: u32) -> Self {
        Self { code, name: Arc::from(format!("reason#{code}")), class: DropClass::Other }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl Serialize for DropReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

/// The bytes of a packet captured by the kernel (IP header onwards, truncated to the capture
/// size), shared between consumers. Not serialized in observations (pcap writes them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Captured(pub Arc<[u8]>);

impl Captured {
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The TCP flags of the captured packet (IP header first) whose source address is of the
    /// family of `src`: IPv4 with options, IPv6 without extension headers (with them, or when
    /// the packet is not TCP or too short, None). Bits beyond [`TcpFlags`]' (URG, ECE, CWR)
    /// are dropped.
    pub fn tcp_flags(&self, src: std::net::IpAddr) -> Option<TcpFlags> {
        self.tcp_flags_byte(src).map(TcpFlags::from_bits_truncate)
    }

    /// The TCP flags byte itself (see [`Captured::tcp_flags`]), every bit kept, as netfilter
    /// matches it.
    pub fn tcp_flags_byte(&self, src: std::net::IpAddr) -> Option<u8> {
        let packet = self.bytes();
        let offset = match src {
            std::net::IpAddr::V4(_) => {
                if packet.get(9) != Some(&6) {
                    return None;
                }
                usize::from(packet.first()? & 0x0f) * 4
            }
            std::net::IpAddr::V6(_) => {
                if packet.get(6) != Some(&6) {
                    return None;
                }
                40
            }
        };
        packet.get(offset + 13).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_print_as_operators_know_them() {
        assert_eq!(TcpFlags::from_bits_truncate(0x12).to_string(), "SYN|ACK");
        assert_eq!((TcpFlags::RST | TcpFlags::ACK).to_string(), "RST|ACK");
        assert_eq!(TcpFlags::empty().to_string(), "-");
        assert!(TcpFlags::SYN.is_syn() && !(TcpFlags::SYN | TcpFlags::ACK).is_syn());
        assert_eq!(serde_json::to_value(TcpFlags::SYN).ok(), Some(serde_json::json!("SYN")));
    }

    #[test]
    fn drop_reasons_are_classified_once_by_name() {
        assert_eq!(DropReason::new(12, "NETFILTER_DROP").class, DropClass::Netfilter);
        assert_eq!(DropReason::new(2, "NO_SOCKET").class, DropClass::NoSocket);
        assert_eq!(DropReason::new(3, "IP_NOROUTE").class, DropClass::NoRoute);
        assert_eq!(DropReason::new(4, "TC_EGRESS_POLICY").class, DropClass::Policy);
        assert_eq!(DropReason::new(5, "QUEUE_PURGE").class, DropClass::Other);
        assert_eq!(DropReason::new(6, "NEIGH_FAILED").class, DropClass::Neighbour);
        // "FILTER" in a name is no firewall: rp_filter is routing, a tap's filter is the device's.
        assert_eq!(DropReason::new(7, "IP_RPFILTER").class, DropClass::ReversePath);
        assert!(!DropClass::ReversePath.is_firewall());
        assert_eq!(DropReason::new(8, "TAP_FILTER").class, DropClass::Other);
        assert_eq!(DropReason::new(9, "TAP_TXFILTER").class, DropClass::Other);
        for (name, kind) in [
            ("SOCKET_FILTER", PolicyKind::SocketFilter),
            ("XFRM_POLICY", PolicyKind::Xfrm),
            ("BPF_CGROUP_EGRESS", PolicyKind::CgroupBpf),
            ("TC_INGRESS", PolicyKind::Tc),
            ("TC_EGRESS", PolicyKind::Tc),
            ("TC_CHAIN_NOTFOUND", PolicyKind::TcError),
            ("SECURITY_HOOK", PolicyKind::Lsm),
        ] {
            assert_eq!(
                (DropReason::new(10, name).class, DropClass::policy_kind(name)),
                (DropClass::Policy, Some(kind))
            );
        }
        for name in ["IP_INNOROUTES", "IP_OUTNOROUTES"] {
            assert_eq!(DropReason::new(11, name).class, DropClass::NoRoute, "{name}");
        }
        for name in ["NOT_SPECIFIED", "OTHERHOST", "TCP_OLD_DATA", "QDISC_DROP", "IP_INADDRERRORS", "PSP_INPUT"] {
            assert_eq!(DropReason::new(12, name).class, DropClass::Other, "{name}");
        }
        assert_eq!(DropReason::unnamed(999).to_string(), "reason#999");
        assert_eq!(serde_json::to_value(DropReason::new(12, "NETFILTER_DROP")).ok(), Some("NETFILTER_DROP".into()));
    }

    #[test]
    fn icmp_kinds_from_type_and_code() {
        assert_eq!(IcmpKind::from_wire(1, 3, 13), IcmpKind::AdminProhibited);
        assert_eq!(IcmpKind::from_wire(1, 3, 3).as_str(), "port-unreachable");
        assert!(IcmpKind::from_wire(1, 3, 4).is_pmtu());
        assert_eq!(IcmpKind::from_wire(58, 1, 1), IcmpKind::AdminProhibited);
        assert!(IcmpKind::from_wire(58, 2, 0).is_pmtu());
        assert!(IcmpKind::from_wire(58, 1, 0).is_no_route());
        assert_eq!(IcmpKind::from_wire(1, 11, 0), IcmpKind::IcmpError);
    }

    #[test]
    fn states_and_milestones_keep_their_names() {
        assert_eq!(TcpState::from_wire(2).as_str(), "SYN_SENT");
        assert!(TcpState::from_wire(8).after_handshake());
        assert_eq!(serde_json::to_value(SocketMilestone::PassiveEstablished).ok(), Some("passive-established".into()));
        assert_eq!(serde_json::to_value(TcpStackEvent::SendReset).ok(), Some("send-reset".into()));
    }
}
