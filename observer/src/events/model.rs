//! Observations: decoded kernel events with names attached (interface, drop reason, symbol).

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::SystemTime,
};

use observer_common::{
    decode::Event,
    event::{
        FlowTuple, FAMILY_IPV4, FAMILY_IPV6, HOOK_CGROUP_EGRESS, HOOK_CGROUP_INGRESS, HOOK_TC_EGRESS, PROTO_ICMP,
        PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, SOCKOPS_ACTIVE_ESTABLISHED, SOCKOPS_CONNECTING, SOCKOPS_CONNECT_FAILED,
        SOCKOPS_PASSIVE_ESTABLISHED, SOCKOPS_RTO, TCP_ACK, TCP_EVENT_SEND_RESET, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN,
    },
};
use serde::Serialize;

use crate::{
    inventory::{Endpoint, Inventory},
    kernel::{drop_reasons::DropReasons, kallsyms::Kallsyms},
};

use super::{
    cgroups::{pod_of, CgroupNames},
    clock::MonotonicClock,
};

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
    pub fn name(self) -> String {
        match self.0 {
            PROTO_TCP => "TCP".into(),
            PROTO_UDP => "UDP".into(),
            PROTO_ICMP => "ICMP".into(),
            PROTO_ICMPV6 => "ICMPv6".into(),
            n => format!("proto#{n}"),
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl Flow {
    /// `None` for an unknown address family.
    pub fn from_wire(t: &FlowTuple) -> Option<Self> {
        let (src, dst) = match t.family {
            FAMILY_IPV4 => {
                let v4 = |a: &[u8; 16]| IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]));
                (v4(&t.saddr), v4(&t.daddr))
            }
            // A dual-stack socket talking IPv4 reports v4-mapped addresses: show them as IPv4.
            FAMILY_IPV6 => (unmap(Ipv6Addr::from(t.saddr)), unmap(Ipv6Addr::from(t.daddr))),
            _ => return None,
        };
        Some(Self { protocol: Protocol(t.protocol), src, sport: t.sport, dst, dport: t.dport })
    }
}

fn unmap(a: Ipv6Addr) -> IpAddr {
    a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4)
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
    /// The hook of a packet or ICMP event (`HOOK_*` wire values).
    pub fn from_wire(hook: u8) -> Self {
        match hook {
            HOOK_TC_EGRESS => Hook::TcEgress,
            HOOK_CGROUP_INGRESS => Hook::CgroupIngress,
            HOOK_CGROUP_EGRESS => Hook::CgroupEgress,
            _ => Hook::TcIngress,
        }
    }

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
    Packet { tcp_flags: String, tcp_seq: u32 },
    /// A packet the kernel dropped.
    Drop { drop_reason: String, location: String, netns: u32 },
    /// An ICMP/ICMPv6 error about another packet (`quoted`): a REJECT, an unreachable, a PMTU signal.
    IcmpError { icmp_type: u8, icmp_code: u8, meaning: &'static str, quoted: Option<Flow>, mtu: u32 },
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
    /// A TCP socket milestone: `established`, `passive-established`, `rto`, `connect-failed`.
    Socket { event: &'static str, retransmits: u32, socket_cookie: u64 },
    /// A segment retransmitted, or a RST sent by the local TCP stack (`socket` false: no socket
    /// matched, e.g. a closed port).
    Tcp { event: &'static str, state: &'static str, socket: bool, netns: u32, reason: u32 },
}

/// Kernel TCP state names (include/net/tcp_states.h).
pub fn tcp_state_name(state: u8) -> &'static str {
    match state {
        0 => "-",
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Observation {
    #[serde(serialize_with = "serialize_time")]
    pub time: SystemTime,
    pub hook: Hook,
    pub ifindex: u32,
    /// Interface name when the ifindex belongs to the watched namespace.
    pub interface: Option<String>,
    pub flow: Option<Flow>,
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

fn serialize_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&super::clock::rfc3339(*t))
}

/// A process, as the connect hook saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Process {
    pub pid: u32,
    pub comm: String,
}

/// Remembers which process opened which connection: socket cookie -> process (connect hook),
/// then client address:port -> process (sock_ops, before the SYN leaves). Bounded.
#[derive(Debug, Default)]
pub struct Processes {
    by_cookie: HashMap<u64, Process>,
    by_client: HashMap<(IpAddr, u16), Process>,
}

impl Processes {
    const MAX: usize = 65_536;

    fn learn(&mut self, o: &Observation) {
        match (&o.detail, o.flow) {
            (Detail::Connect { pid, comm, socket_cookie, .. }, _) => {
                if self.by_cookie.len() >= Self::MAX {
                    self.by_cookie.clear();
                }
                self.by_cookie.insert(*socket_cookie, Process { pid: *pid, comm: comm.clone() });
            }
            (Detail::Socket { socket_cookie, .. }, Some(flow)) => {
                if let Some(p) = self.by_cookie.get(socket_cookie) {
                    if self.by_client.len() >= Self::MAX {
                        self.by_client.clear();
                    }
                    self.by_client.insert((flow.src, flow.sport), p.clone());
                }
            }
            _ => {}
        }
    }

    fn of(&self, o: &Observation) -> Option<Process> {
        let flow = match &o.detail {
            Detail::IcmpError { quoted: Some(q), .. } => *q,
            Detail::Connect { pid, comm, .. } => return Some(Process { pid: *pid, comm: comm.clone() }),
            _ => o.flow?,
        };
        self.by_client.get(&(flow.src, flow.sport)).or_else(|| self.by_client.get(&(flow.dst, flow.dport))).cloned()
    }
}

/// Everything needed to name what a raw event refers to.
pub struct Namer<'a> {
    pub clock: MonotonicClock,
    pub interfaces: BTreeMap<u32, String>,
    /// Inode of the watched network namespace (interface names are only valid there).
    pub watched_netns: u32,
    pub drop_reasons: &'a DropReasons,
    pub kallsyms: &'a Kallsyms,
    /// Names cgroup ids of connect events (None: ids only).
    pub cgroups: Option<std::cell::RefCell<CgroupNames>>,
    /// Names IPs and ports (None: addresses only).
    pub inventory: Option<&'a Inventory>,
    /// Which process opened which connection.
    pub processes: std::cell::RefCell<Processes>,
}

impl Namer<'_> {
    /// [`Namer::name`] then the inventory's view of the flow's ends.
    pub fn observe(&self, event: &Event) -> Observation {
        let mut o = self.name(event);
        self.processes.borrow_mut().learn(&o);
        o.process = self.processes.borrow().of(&o);
        if let Some(inv) = self.inventory {
            let flow = match &o.detail {
                Detail::IcmpError { quoted: Some(q), .. } => Some(*q),
                _ => o.flow,
            };
            if let Some(f) = flow {
                o.src = match &o.detail {
                    // A connect() has no source address yet: the caller's pod comes from its cgroup.
                    Detail::Connect { pod_uid, .. } => {
                        pod_uid.as_deref().and_then(|uid| inv.pod_by_uid(uid)).map(|p| inv.describe_pod(p))
                    }
                    _ => Some(inv.describe(f.src, None)).filter(|e| *e != Endpoint::default()),
                };
                o.dst = Some(inv.describe(f.dst, Some(f.dport))).filter(|e| *e != Endpoint::default());
            }
        }
        o
    }

    fn interface(&self, hook: Hook, ifindex: u32) -> Option<String> {
        hook.is_tc().then(|| self.interfaces.get(&ifindex).cloned()).flatten()
    }

    fn name(&self, event: &Event) -> Observation {
        match event {
            Event::Packet(p) => Observation {
                src: None,
                dst: None,
                process: None,
                time: self.clock.to_wall(p.header.timestamp_ns),
                hook: Hook::from_wire(p.hook),
                ifindex: p.ifindex,
                interface: self.interface(Hook::from_wire(p.hook), p.ifindex),
                flow: Flow::from_wire(&p.flow),
                detail: Detail::Packet { tcp_flags: tcp_flags(p.tcp_flags), tcp_seq: p.tcp_seq },
            },
            Event::IcmpError(e) => Observation {
                src: None,
                dst: None,
                process: None,
                time: self.clock.to_wall(e.header.timestamp_ns),
                hook: Hook::from_wire(e.hook),
                ifindex: e.ifindex,
                interface: self.interface(Hook::from_wire(e.hook), e.ifindex),
                flow: Flow::from_wire(&e.flow),
                detail: Detail::IcmpError {
                    icmp_type: e.icmp_type,
                    icmp_code: e.icmp_code,
                    meaning: icmp_meaning(e.flow.protocol, e.icmp_type, e.icmp_code),
                    quoted: (e.quoted_valid != 0).then(|| Flow::from_wire(&e.quoted)).flatten(),
                    mtu: e.mtu,
                },
            },
            Event::Connect(c) => {
                let cgroup = self.cgroups.as_ref().and_then(|names| names.borrow_mut().path(c.cgroup_id));
                let pod = cgroup.as_deref().and_then(pod_of);
                let comm_len = c.comm.iter().position(|&b| b == 0).unwrap_or(c.comm.len());
                Observation {
                    src: None,
                    dst: None,
                    process: None,
                    time: self.clock.to_wall(c.header.timestamp_ns),
                    hook: Hook::CgroupConnect,
                    ifindex: 0,
                    interface: None,
                    flow: Flow::from_wire(&c.flow),
                    detail: Detail::Connect {
                        pid: c.pid,
                        tid: c.tid,
                        comm: String::from_utf8_lossy(&c.comm[..comm_len]).into_owned(),
                        cgroup_id: c.cgroup_id,
                        cgroup,
                        pod_uid: pod.as_ref().map(|p| p.pod_uid.clone()),
                        container_id: pod.and_then(|p| p.container_id),
                        socket_cookie: c.socket_cookie,
                    },
                }
            }
            Event::SockOps(s) => Observation {
                src: None,
                dst: None,
                process: None,
                time: self.clock.to_wall(s.header.timestamp_ns),
                hook: Hook::SockOps,
                ifindex: 0,
                interface: None,
                flow: Flow::from_wire(&s.flow),
                detail: Detail::Socket {
                    event: match s.op {
                        SOCKOPS_ACTIVE_ESTABLISHED => "established",
                        SOCKOPS_PASSIVE_ESTABLISHED => "passive-established",
                        SOCKOPS_RTO => "rto",
                        SOCKOPS_CONNECT_FAILED => "connect-failed",
                        SOCKOPS_CONNECTING => "connecting",
                        _ => "unknown",
                    },
                    retransmits: s.retransmits,
                    socket_cookie: s.socket_cookie,
                },
            },
            Event::Tcp(t) => Observation {
                src: None,
                dst: None,
                process: None,
                time: self.clock.to_wall(t.header.timestamp_ns),
                hook: if t.kind == TCP_EVENT_SEND_RESET { Hook::TcpSendReset } else { Hook::TcpRetransmit },
                ifindex: 0,
                interface: None,
                flow: Flow::from_wire(&t.flow),
                detail: Detail::Tcp {
                    event: if t.kind == TCP_EVENT_SEND_RESET { "send-reset" } else { "retransmit" },
                    state: tcp_state_name(t.state),
                    socket: t.has_socket != 0,
                    netns: t.netns_ino,
                    reason: t.reason,
                },
            },
            Event::Drop(d) => Observation {
                src: None,
                dst: None,
                process: None,
                time: self.clock.to_wall(d.header.timestamp_ns),
                hook: Hook::KfreeSkb,
                ifindex: d.ifindex,
                interface: (d.netns_ino == self.watched_netns)
                    .then(|| self.interfaces.get(&d.ifindex).cloned())
                    .flatten(),
                flow: (d.flow_valid != 0).then(|| Flow::from_wire(&d.flow)).flatten(),
                detail: Detail::Drop {
                    drop_reason: self.drop_reasons.name(d.reason),
                    location: self.kallsyms.symbolize(d.location),
                    netns: d.netns_ino,
                },
            },
        }
    }
}

/// What an ICMP (RFC 792/1812) or ICMPv6 (RFC 4443) error says, as an operator would name it.
pub fn icmp_meaning(protocol: u8, icmp_type: u8, code: u8) -> &'static str {
    match (protocol, icmp_type, code) {
        (PROTO_ICMP, 3, 0) => "net-unreachable",
        (PROTO_ICMP, 3, 1) => "host-unreachable",
        (PROTO_ICMP, 3, 2) => "protocol-unreachable",
        (PROTO_ICMP, 3, 3) => "port-unreachable",
        (PROTO_ICMP, 3, 4) => "fragmentation-needed",
        (PROTO_ICMP, 3, 9) | (PROTO_ICMP, 3, 10) => "net-or-host-prohibited",
        (PROTO_ICMP, 3, 13) => "admin-prohibited",
        (PROTO_ICMP, 3, _) => "unreachable",
        (PROTO_ICMPV6, 1, 0) => "no-route",
        (PROTO_ICMPV6, 1, 1) => "admin-prohibited",
        (PROTO_ICMPV6, 1, 3) => "address-unreachable",
        (PROTO_ICMPV6, 1, 4) => "port-unreachable",
        (PROTO_ICMPV6, 1, 5) => "source-policy-failed",
        (PROTO_ICMPV6, 1, 6) => "reject-route",
        (PROTO_ICMPV6, 1, _) => "unreachable",
        (PROTO_ICMPV6, 2, _) => "packet-too-big",
        _ => "icmp-error",
    }
}

/// `SYN`, `SYN|ACK`, `RST|ACK`...
pub fn tcp_flags(flags: u8) -> String {
    let names = [(TCP_SYN, "SYN"), (TCP_RST, "RST"), (TCP_FIN, "FIN"), (TCP_PSH, "PSH"), (TCP_ACK, "ACK")];
    let set: Vec<&str> = names.iter().filter(|(bit, _)| flags & bit != 0).map(|(_, n)| *n).collect();
    if set.is_empty() {
        "-".into()
    } else {
        set.join("|")
    }
}

#[cfg(test)]
mod tests {
    use observer_common::event::{DropEvent, PacketEvent, HOOK_TC_INGRESS};

    use super::*;

    fn tuple() -> FlowTuple {
        let mut t =
            FlowTuple { family: FAMILY_IPV4, protocol: PROTO_TCP, sport: 43512, dport: 15012, ..Default::default() };
        t.saddr[..4].copy_from_slice(&[10, 244, 1, 10]);
        t.daddr[..4].copy_from_slice(&[10, 244, 2, 10]);
        t
    }

    #[test]
    fn names_a_syn_and_a_drop() {
        let interfaces = BTreeMap::from([(4, "cni0".to_string())]);
        let reasons = DropReasons::from_pairs([(12, "NETFILTER_DROP")]);
        let syms = Kallsyms::parse("ffffffff81a00000 t nf_hook_slow\n");
        let namer = Namer {
            clock: MonotonicClock::with_offset_ns(0),
            interfaces,
            watched_netns: 77,
            drop_reasons: &reasons,
            kallsyms: &syms,
            cgroups: None,
            inventory: None,
            processes: Default::default(),
        };
        let syn =
            PacketEvent { flow: tuple(), ifindex: 4, hook: HOOK_TC_INGRESS, tcp_flags: TCP_SYN, ..Default::default() };
        let obs = namer.observe(&Event::Packet(syn));
        assert_eq!(obs.hook, Hook::TcIngress);
        assert_eq!(obs.interface.as_deref(), Some("cni0"));
        assert_eq!(obs.flow.map(|f| f.to_string()).as_deref(), Some("TCP 10.244.1.10:43512 -> 10.244.2.10:15012"));
        assert_eq!(obs.detail, Detail::Packet { tcp_flags: "SYN".into(), tcp_seq: 0 });

        let drop = DropEvent {
            flow: tuple(),
            flow_valid: 1,
            reason: 12,
            ifindex: 4,
            netns_ino: 78,
            location: 0xffffffff81a00010,
            ..Default::default()
        };
        let obs = namer.observe(&Event::Drop(drop));
        // Same ifindex, but another namespace: no name.
        assert_eq!(obs.interface, None);
        assert_eq!(
            obs.detail,
            Detail::Drop { drop_reason: "NETFILTER_DROP".into(), location: "nf_hook_slow+0x10".into(), netns: 78 }
        );
    }

    #[test]
    fn names_icmp_errors() {
        assert_eq!(icmp_meaning(PROTO_ICMP, 3, 13), "admin-prohibited");
        assert_eq!(icmp_meaning(PROTO_ICMP, 3, 3), "port-unreachable");
        assert_eq!(icmp_meaning(PROTO_ICMP, 3, 4), "fragmentation-needed");
        assert_eq!(icmp_meaning(PROTO_ICMPV6, 1, 1), "admin-prohibited");
        assert_eq!(icmp_meaning(PROTO_ICMPV6, 2, 0), "packet-too-big");
        assert_eq!(icmp_meaning(PROTO_ICMP, 11, 0), "icmp-error");
    }

    #[test]
    fn formats_ipv6_and_flags() {
        let mut t = tuple();
        t.family = FAMILY_IPV6;
        t.saddr = "fd00::1".parse::<Ipv6Addr>().map(|a| a.octets()).unwrap_or_default();
        t.daddr = "fd00::2".parse::<Ipv6Addr>().map(|a| a.octets()).unwrap_or_default();
        let flow = Flow::from_wire(&t).expect("v6");
        assert_eq!(flow.to_string(), "TCP [fd00::1]:43512 -> [fd00::2]:15012");
        assert_eq!(tcp_flags(TCP_SYN | TCP_ACK), "SYN|ACK");
        assert_eq!(tcp_flags(TCP_RST | TCP_ACK), "RST|ACK");
        t.saddr = "::ffff:10.244.2.10".parse::<Ipv6Addr>().map(|a| a.octets()).unwrap_or_default();
        assert_eq!(Flow::from_wire(&t).expect("v6").src.to_string(), "10.244.2.10", "v4-mapped shown as IPv4");
        t.family = 99;
        assert_eq!(Flow::from_wire(&t), None);
    }
}
