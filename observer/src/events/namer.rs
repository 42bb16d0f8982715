//! Naming raw events: interface, drop reason, kernel symbol, cgroup -> pod, the process that
//! opened the connection, and the inventory's view of both ends.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use observer_common::{
    decode::Event,
    event::{
        SOCKOPS_ACTIVE_ESTABLISHED, SOCKOPS_CONNECTING, SOCKOPS_CONNECT_FAILED, SOCKOPS_PASSIVE_ESTABLISHED,
        SOCKOPS_RTO, TCP_EVENT_SEND_RESET,
    },
};

use crate::{
    inventory::{Endpoint, Inventory},
    kernel::{drop_reasons::DropReasons, kallsyms::Kallsyms},
};

use super::{
    cgroups::{pod_of, CgroupNames},
    clock::MonotonicClock,
    model::{
        Captured, Detail, Hook, IcmpKind, Observation, Process, Protocol, Segment, SocketMilestone, TcpFlags,
        TcpStackEvent, TcpState,
    },
    wire,
};

/// The captured bytes of a drop or ICMP error event (`len` valid bytes of `buf`).
fn captured(buf: &[u8], len: u16) -> Captured {
    Captured(buf.get(..usize::from(len)).unwrap_or(buf).into())
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
                encap: wire::encap(&p.encap),
                src: None,
                dst: None,
                process: None,
                time: self.clock.to_wall(p.header.timestamp_ns),
                hook: wire::hook(p.hook),
                ifindex: p.ifindex,
                interface: self.interface(wire::hook(p.hook), p.ifindex),
                flow: wire::flow(&p.flow),
                detail: Detail::Packet { tcp_flags: TcpFlags::from_bits_truncate(p.tcp_flags), tcp_seq: p.tcp_seq },
            },
            Event::IcmpError(e) => Observation {
                encap: None,
                src: None,
                dst: None,
                process: None,
                time: self.clock.to_wall(e.header.timestamp_ns),
                hook: wire::hook(e.hook),
                ifindex: e.ifindex,
                interface: self.interface(wire::hook(e.hook), e.ifindex),
                flow: wire::flow(&e.flow),
                detail: Detail::IcmpError {
                    icmp_type: e.icmp_type,
                    icmp_code: e.icmp_code,
                    meaning: IcmpKind::from_wire(e.flow.protocol, e.icmp_type, e.icmp_code),
                    quoted: (e.quoted_valid != 0).then(|| wire::flow(&e.quoted)).flatten(),
                    mtu: e.mtu,
                    packet: captured(&e.packet, e.packet_len),
                },
            },
            Event::Connect(c) => {
                let cgroup = self.cgroups.as_ref().and_then(|names| names.borrow_mut().path(c.cgroup_id));
                let pod = cgroup.as_deref().and_then(pod_of);
                let comm_len = c.comm.iter().position(|&b| b == 0).unwrap_or(c.comm.len());
                Observation {
                    encap: None,
                    src: None,
                    dst: None,
                    process: None,
                    time: self.clock.to_wall(c.header.timestamp_ns),
                    hook: Hook::CgroupConnect,
                    ifindex: 0,
                    interface: None,
                    flow: wire::flow(&c.flow),
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
                encap: None,
                src: None,
                dst: None,
                process: None,
                time: self.clock.to_wall(s.header.timestamp_ns),
                hook: Hook::SockOps,
                ifindex: 0,
                interface: None,
                flow: wire::flow(&s.flow),
                detail: Detail::Socket {
                    event: match s.op {
                        SOCKOPS_ACTIVE_ESTABLISHED => SocketMilestone::Established,
                        SOCKOPS_PASSIVE_ESTABLISHED => SocketMilestone::PassiveEstablished,
                        SOCKOPS_RTO => SocketMilestone::Rto,
                        SOCKOPS_CONNECT_FAILED => SocketMilestone::ConnectFailed,
                        SOCKOPS_CONNECTING => SocketMilestone::Connecting,
                        _ => SocketMilestone::Unknown,
                    },
                    retransmits: s.retransmits,
                    socket_cookie: s.socket_cookie,
                },
            },
            Event::Tcp(t) => Observation {
                encap: None,
                src: None,
                dst: None,
                process: None,
                time: self.clock.to_wall(t.header.timestamp_ns),
                hook: if t.kind == TCP_EVENT_SEND_RESET { Hook::TcpSendReset } else { Hook::TcpRetransmit },
                ifindex: 0,
                interface: None,
                flow: wire::flow(&t.flow),
                detail: Detail::Tcp {
                    event: if t.kind == TCP_EVENT_SEND_RESET {
                        TcpStackEvent::SendReset
                    } else {
                        TcpStackEvent::Retransmit
                    },
                    state: TcpState::from_wire(t.state),
                    socket: t.has_socket != 0,
                    netns: t.netns_ino,
                    reason: t.reason,
                    segment: (t.kind != TCP_EVENT_SEND_RESET && t.seg_len > 0).then_some(Segment {
                        payload: t.seg_len,
                        seq: t.seq,
                        mss: t.mss,
                    }),
                },
            },
            Event::Drop(d) => Observation {
                encap: (d.flow_valid != 0).then(|| wire::encap(&d.encap)).flatten(),
                src: None,
                dst: None,
                process: None,
                time: self.clock.to_wall(d.header.timestamp_ns),
                hook: Hook::KfreeSkb,
                ifindex: d.ifindex,
                interface: (d.netns_ino == self.watched_netns)
                    .then(|| self.interfaces.get(&d.ifindex).cloned())
                    .flatten(),
                flow: (d.flow_valid != 0).then(|| wire::flow(&d.flow)).flatten(),
                detail: Detail::Drop {
                    drop_reason: self.drop_reasons.reason(d.reason),
                    location: self.kallsyms.symbolize(d.location),
                    netns: d.netns_ino,
                    culprit: None,
                    quoted: (d.flow_valid != 0 && Protocol(d.flow.protocol).is_icmp())
                        .then(|| d.packet.get(..usize::from(d.packet_len)).and_then(super::quote::quoted_flow))
                        .flatten(),
                    packet: captured(&d.packet, d.packet_len),
                    solicited: (d.flow_valid != 0 && Protocol(d.flow.protocol) == Protocol::ICMPV6)
                        .then(|| d.packet.get(..usize::from(d.packet_len)).and_then(super::quote::solicited_target))
                        .flatten(),
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use observer_common::event::{DropEvent, PacketEvent, HOOK_TC_INGRESS};
    use observer_common::{
        event::{FAMILY_IPV4, FAMILY_IPV6, PROTO_TCP, TCP_ACK, TCP_RST, TCP_SYN},
        FlowTuple,
    };

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
        assert_eq!(obs.detail, Detail::Packet { tcp_flags: TcpFlags::SYN, tcp_seq: 0 });

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
            Detail::Drop {
                drop_reason: crate::events::model::DropReason::new(12, "NETFILTER_DROP"),
                location: "nf_hook_slow+0x10".into(),
                netns: 78,
                culprit: None,
                quoted: None,
                packet: Captured::default(),
                solicited: None
            }
        );
    }

    #[test]
    fn formats_ipv6_and_flags() {
        let mut t = tuple();
        t.family = FAMILY_IPV6;
        t.saddr = "fd00::1".parse::<Ipv6Addr>().map(|a| a.octets()).unwrap_or_default();
        t.daddr = "fd00::2".parse::<Ipv6Addr>().map(|a| a.octets()).unwrap_or_default();
        let flow = wire::flow(&t).expect("v6");
        assert_eq!(flow.to_string(), "TCP [fd00::1]:43512 -> [fd00::2]:15012");
        assert_eq!(TcpFlags::from_bits_truncate(TCP_SYN | TCP_ACK).to_string(), "SYN|ACK");
        assert_eq!(TcpFlags::from_bits_truncate(TCP_RST | TCP_ACK).to_string(), "RST|ACK");
        t.saddr = "::ffff:10.244.2.10".parse::<Ipv6Addr>().map(|a| a.octets()).unwrap_or_default();
        assert_eq!(wire::flow(&t).expect("v6").src.to_string(), "10.244.2.10", "v4-mapped shown as IPv4");
        t.family = 99;
        assert_eq!(wire::flow(&t), None);
    }
}
