//! Following each connection across the hooks: keyed by the client's address and port (which
//! survive the sidecar REDIRECT and kube-proxy DNAT on the way), every observation adds
//! evidence; the outcome is decided from all of it.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    time::SystemTime,
};

mod held;
mod neighbour;
mod snat;
mod stall;

pub use held::DEFAULT_CAPACITY;
pub(crate) use neighbour::is_neighbour_failure;
pub use neighbour::SolicitationDrop;

pub use stall::{Stall, STALL_RETRANSMITS};

use crate::{
    inventory::Endpoint,
    model::{
        Detail, DropClass, DropReason, Hook, IcmpKind, Observation, Protocol, Segment, SocketMilestone, TcpStackEvent,
        TcpState,
    },
    netfilter::Culprit,
};

/// SYNs sent (the first and its retransmissions) after which an unanswered handshake whose
/// client has not given up is `silent`: Linux sends them 1 s and 3 s after the first
/// (`TCP_TIMEOUT_INIT`, doubling), so a third SYN means two losses in a row, 3 s into the
/// attempt. One retransmission is ordinary loss (a congested link, a full accept queue) and no
/// infrastructure block; a client's own give-up (`ConnectFailed`) decides at once.
pub const SILENT_AFTER_ATTEMPTS: u32 = 3;
/// How a connection attempt ended, as far as this node saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Established,
    /// The destination's own stack refused it (closed port: RST without socket, NO_SOCKET drop).
    RefusedByApplication,
    /// Dropped by the kernel on this node (reason, location, namespace, interface, hook).
    Dropped {
        reason: DropReason,
        location: String,
        netns: u32,
        interface: Option<String>,
    },
    /// An ICMP error came back.
    Rejected {
        meaning: IcmpKind,
    },
    /// No route: an ICMP error saying so, or a no-route drop.
    NoRoute(NoRouteBy),
    /// SYNs went out, nothing came back, nothing was dropped here.
    Silent,
    /// Established, then the same segment was retransmitted again and again (RTOs without
    /// progress) with no drop here.
    Stalled(Stall),
    /// A reset whose origin this node cannot tell (not enough evidence to blame anyone).
    Reset,
    /// Nothing conclusive yet (a single SYN still in flight).
    Pending,
}

/// What showed that there is no route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoRouteBy {
    Icmp(IcmpKind),
    Drop(DropReason),
}

impl std::fmt::Display for NoRouteBy {
    /// `ICMP host-unreachable`, or the drop reason's name.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoRouteBy::Icmp(kind) => write!(f, "ICMP {kind}"),
            NoRouteBy::Drop(reason) => write!(f, "{reason}"),
        }
    }
}

/// A drop of one of a connection's packets on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionDrop {
    pub reason: DropReason,
    /// Kernel symbol that freed it.
    pub location: String,
    /// Network namespace inode of the drop.
    pub netns: u32,
    /// The interface, when in the watched namespace.
    pub interface: Option<String>,
    pub hook: Hook,
    /// The dropped packet was the outer packet of a tunnel carrying the connection's (the
    /// overlay's transport was dropped, e.g. a firewall closing VXLAN's UDP port).
    pub encap: Option<crate::model::Encapsulation>,
}

/// An address and port.
type HostPort = (IpAddr, u16);

/// A dropped ICMP/ICMPv6 error that quoted a connection's packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IcmpDrop {
    /// The kernel's drop reason (e.g. `QUEUE_PURGE`, `NETFILTER_DROP`).
    pub reason: DropReason,
    /// Kernel symbol that freed it.
    pub location: String,
    /// Network namespace inode of the drop.
    pub netns: u32,
    /// ICMP or ICMPv6.
    pub protocol: Protocol,
}

/// Everything seen about one connection.
#[derive(Clone, Debug)]
pub struct Connection {
    pub client: (IpAddr, u16),
    /// Destination of the first SYN seen (before DNAT when seen at the pod's veth).
    pub server: Option<(IpAddr, u16)>,
    pub src: Endpoint,
    pub dst: Endpoint,
    pub syn_seen: bool,
    pub established: bool,
    pub refused_by_application: bool,
    pub server_reset: bool,
    pub failed: bool,
    /// SYN retransmissions, counted by sock_ops RTOs and by tcp_retransmit_skb (both see each
    /// one; the larger count is used).
    pub rtos: u32,
    pub syn_retransmits: u32,
    pub drops: Vec<ConnectionDrop>,
    pub icmp: Option<IcmpKind>,
    /// ICMP/ICMPv6 errors about this connection that the kernel dropped on this node (evidence
    /// only: they never decide the outcome).
    pub icmp_drops: Vec<IcmpDrop>,
    /// Retransmissions in ESTABLISHED (by either end's socket on this node).
    pub established_retransmits: u32,
    /// Per retransmitted sequence number, how often (bounded: the few latest).
    retransmitted_seqs: Vec<(u32, u32)>,
    /// The largest segment retransmitted in ESTABLISHED.
    pub largest_retransmit: Option<Segment>,
    /// An ICMP fragmentation-needed / packet-too-big quoting this flow was seen.
    pub pmtu_signal: bool,
    /// The smallest next-hop MTU such a signal announced (0: none said).
    pub pmtu_signal_mtu: Option<u32>,
    /// Its packets were seen as the inner packets of a tunnel (on the node's uplink), oriented
    /// client -> server (outer source: the client's side).
    pub tunnel: Option<crate::model::Encapsulation>,
    /// The retransmissions in ESTABLISHED were the server's (its segments to the client).
    pub server_retransmits: bool,
    /// The node's tunnel device (by link kind) its packets crossed decapsulated.
    pub tunnel_device: Option<String>,
    /// MTUs of the interfaces of this node its packets crossed (name -> bytes).
    pub path_mtus: BTreeMap<String, u32>,
    /// Its packets were freed by failed neighbour resolution for the destination, and a
    /// solicitation for that address was dropped: the most telling such drop.
    pub neighbour: Option<SolicitationDrop>,
    /// The address its packets carried after source NAT (e.g. istio-cni's 169.254.7.127).
    pub snat_source: Option<IpAddr>,
    /// The netfilter rule behind its drops, the most certain one seen.
    pub culprit: Option<std::sync::Arc<Culprit>>,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
}

impl Connection {
    fn new(client: (IpAddr, u16), time: SystemTime) -> Self {
        Self {
            client,
            server: None,
            src: Endpoint::default(),
            dst: Endpoint::default(),
            syn_seen: false,
            established: false,
            refused_by_application: false,
            server_reset: false,
            failed: false,
            rtos: 0,
            syn_retransmits: 0,
            drops: Vec::new(),
            icmp: None,
            icmp_drops: Vec::new(),
            established_retransmits: 0,
            retransmitted_seqs: Vec::new(),
            largest_retransmit: None,
            pmtu_signal: false,
            pmtu_signal_mtu: None,
            tunnel: None,
            server_retransmits: false,
            tunnel_device: None,
            path_mtus: BTreeMap::new(),
            neighbour: None,
            snat_source: None,
            culprit: None,
            first_seen: time,
            last_seen: time,
        }
    }

    /// Takes a dropped solicitation for its unresolved destination as evidence, and its rule
    /// as the culprit when it names one more certainly than any seen.
    fn note_solicitation_drop(&mut self, d: &SolicitationDrop) {
        if d.better_than(self.neighbour.as_ref()) {
            self.neighbour = Some(d.clone());
        }
        if let Some(k) = d.culprit.as_ref().filter(|k| k.confidence != crate::netfilter::Confidence::NotIdentified) {
            if self.culprit.as_ref().is_none_or(|old| k.confidence > old.confidence) {
                self.culprit = Some(std::sync::Arc::clone(k));
            }
        }
    }

    /// Attempts: the first SYN and every retransmission.
    pub fn attempts(&self) -> u32 {
        1 + self.rtos.max(self.syn_retransmits)
    }

    pub fn outcome(&self) -> Outcome {
        if self.established {
            return self.stall().map_or(Outcome::Established, Outcome::Stalled);
        }
        if self.refused_by_application {
            return Outcome::RefusedByApplication;
        }
        // Neighbour resolution failed and a solicitation for the address was seen dropped: the
        // ICMP address/host-unreachable a router sends for it echoes that failure (it is no
        // routing problem); the freed packet and the solicitation's rule decide.
        if self.neighbour.is_some() {
            if let Some(d) = self.drops.iter().find(|d| neighbour::is_neighbour_failure(&d.reason, &d.location)) {
                return Outcome::Dropped {
                    reason: d.reason.clone(),
                    location: d.location.clone(),
                    netns: d.netns,
                    interface: d.interface.clone(),
                };
            }
        }
        // A REJECT answers with an ICMP error *and* frees the packet (NETFILTER_DROP): the
        // answer decides the mechanism, the drop stays as evidence.
        if let Some(meaning) = self.icmp {
            return if meaning.is_no_route() {
                Outcome::NoRoute(NoRouteBy::Icmp(meaning))
            } else {
                Outcome::Rejected { meaning }
            };
        }
        if let Some(d) = self.drops.first() {
            if d.reason.class == DropClass::NoRoute {
                return Outcome::NoRoute(NoRouteBy::Drop(d.reason.clone()));
            }
            return Outcome::Dropped {
                reason: d.reason.clone(),
                location: d.location.clone(),
                netns: d.netns,
                interface: d.interface.clone(),
            };
        }
        if self.server_reset {
            return Outcome::Reset;
        }
        if self.failed || self.attempts() >= SILENT_AFTER_ATTEMPTS {
            return Outcome::Silent;
        }
        Outcome::Pending
    }
}

/// Folds observations into connections.
#[derive(Debug, Default)]
pub struct Correlator {
    connections: held::Held,
    last_touched: Option<(IpAddr, u16)>,
    /// MTUs of the watched node's interfaces, by name (read via rtnetlink by the caller).
    mtus: HashMap<String, u32>,
    /// Names of the watched node's tunnel devices (by link kind).
    tunnels: std::collections::HashSet<String>,
    /// (server, client port) -> client and when, of connections opened by sockets that are no
    /// pod's (a node's processes: their packets may be source-NATed), to follow them across SNAT.
    by_server_and_port: HashMap<(HostPort, u16), (HostPort, SystemTime)>,
    /// Source-NATed client -> the client its socket has.
    aliases: HashMap<(IpAddr, u16), (IpAddr, u16)>,
    /// Dropped neighbour solicitations and the connections waiting on their targets.
    solicitations: neighbour::Solicitations,
}

impl Correlator {
    /// Sets the MTUs of the node's interfaces (name -> bytes) recorded on connections crossing them.
    pub fn set_interface_mtus(&mut self, mtus: HashMap<String, u32>) {
        self.mtus = mtus;
    }

    /// Sets which of the node's interfaces are tunnel devices (by their link kind, see
    /// [`crate::model::TUNNEL_LINK_KINDS`]), recorded on connections crossing them.
    pub fn set_tunnel_interfaces(&mut self, names: std::collections::HashSet<String>) {
        self.tunnels = names;
    }

    /// A correlator holding at most `capacity` connections being decided (and as many quiet
    /// established ones); beyond, the least recently seen are pushed out to be concluded.
    pub fn with_capacity(capacity: usize) -> Self {
        Self { connections: held::Held::with_capacity(capacity), ..Self::default() }
    }

    /// Every connection held.
    pub fn connections(&self) -> impl Iterator<Item = &Connection> {
        self.connections.iter()
    }

    pub fn len(&self) -> usize {
        self.connections.len()
    }

    pub fn is_empty(&self) -> bool {
        self.connections.len() == 0
    }

    /// Connections pushed out by newer ones (the capacity was reached), to be concluded.
    pub fn take_evicted(&mut self) -> Vec<Connection> {
        let out = self.connections.take_evicted();
        if !out.is_empty() {
            self.forget_aliases();
        }
        out
    }

    /// Connections nothing was seen of for `idle` at `now`, to be concluded; healthy established
    /// ones are kept aside, quiet, in case they stall later: their clients are added to
    /// `quieted` (still held: [`Correlator::get`] finds them).
    pub fn take_idle(
        &mut self,
        now: SystemTime,
        idle: std::time::Duration,
        quieted: &mut Vec<(IpAddr, u16)>,
    ) -> Vec<Connection> {
        let out = self.connections.take_idle(now, idle, quieted);
        if !out.is_empty() {
            self.forget_aliases();
        }
        out
    }

    /// Every connection, emptying the correlator.
    pub fn drain(&mut self) -> Vec<Connection> {
        self.by_server_and_port.clear();
        self.aliases.clear();
        self.connections.drain()
    }

    /// SNAT aliases of connections no longer held (node sockets' only: a small map).
    fn forget_aliases(&mut self) {
        let live = &self.connections;
        self.by_server_and_port.retain(|_, (client, _)| live.contains(client));
        self.aliases.retain(|_, client| live.contains(client));
        self.solicitations.retain_clients(|client| live.contains(client));
    }

    /// The connection of `client`, if held.
    pub fn get(&self, client: (IpAddr, u16)) -> Option<&Connection> {
        self.connections.peek(&client)
    }

    /// Folds `o` in; returns the client key of the connection it touched.
    pub fn add(&mut self, o: &Observation) -> Option<(IpAddr, u16)> {
        self.last_touched = None;
        self.add_inner(o);
        self.last_touched.take()
    }

    fn add_inner(&mut self, o: &Observation) {
        let Some(flow) = o.flow else { return };
        let flow = if flow.protocol == Protocol::TCP { self.before_snat(flow, o) } else { flow };
        match &o.detail {
            // A connection is TCP. ICMP/ICMPv6 (an error freed with QUEUE_PURGE after its socket
            // closed, a neighbour solicitation dropped at multicast input, a ping) and other
            // protocols' drops are evidence on the TCP flow they quote, or nothing.
            // A neighbour solicitation dropped (refused by a rule, or not wanted): evidence for
            // the connections whose packets wait(ed) for that neighbour.
            Detail::Drop { drop_reason, location, netns, culprit, solicited: Some(target), .. } => {
                let d = SolicitationDrop {
                    target: *target,
                    reason: drop_reason.clone(),
                    location: location.clone(),
                    netns: *netns,
                    culprit: culprit.clone(),
                };
                let (best, waiting) = self.solicitations.dropped(d);
                for client in waiting {
                    if let Some(c) = self.existing(client, o) {
                        c.note_solicitation_drop(&best);
                    }
                }
            }
            Detail::Drop { drop_reason, location, netns, quoted, .. } if flow.protocol != Protocol::TCP => {
                let Some(q) = quoted.filter(|q| q.protocol == Protocol::TCP) else { return };
                let key = [(q.src, q.sport), (q.dst, q.dport)].into_iter().find(|k| self.connections.contains(k));
                if let Some(c) = key.and_then(|k| self.existing(k, o)) {
                    c.icmp_drops.push(IcmpDrop {
                        reason: drop_reason.clone(),
                        location: location.clone(),
                        netns: *netns,
                        protocol: flow.protocol,
                    });
                }
            }
            _ if flow.protocol != Protocol::TCP && !matches!(o.detail, Detail::IcmpError { .. }) => {}
            Detail::IcmpError { quoted: Some(q), .. } if q.protocol != Protocol::TCP => {}
            Detail::Packet { tcp_flags, .. } => {
                if tcp_flags.is_syn() {
                    let c = self.entry((flow.src, flow.sport), o);
                    c.syn_seen = true;
                    let server = *c.server.get_or_insert((flow.dst, flow.dport));
                    merge(&mut c.src, &o.src);
                    merge(&mut c.dst, &o.dst);
                    self.note_node_socket(server, (flow.src, flow.sport), o);
                } else if tcp_flags.is_syn_ack() {
                    if let Some(c) = self.existing((flow.dst, flow.dport), o) {
                        c.established = true;
                    }
                } else if tcp_flags.is_rst() {
                    if let Some(c) = self.existing((flow.dst, flow.dport), o) {
                        c.server_reset = true;
                    }
                }
            }
            Detail::Drop { drop_reason, location, netns, culprit, .. } => {
                let key = if self.connections.contains(&(flow.dst, flow.dport)) {
                    (flow.dst, flow.dport)
                } else {
                    (flow.src, flow.sport)
                };
                let c = self.entry(key, o);
                if key == (flow.src, flow.sport) {
                    c.server.get_or_insert((flow.dst, flow.dport));
                    merge(&mut c.src, &o.src);
                    merge(&mut c.dst, &o.dst);
                }
                if drop_reason.class == DropClass::NoSocket {
                    c.refused_by_application = true;
                } else if neighbour::is_neighbour_failure(drop_reason, location) {
                    c.drops.push(ConnectionDrop {
                        reason: drop_reason.clone(),
                        location: location.clone(),
                        netns: *netns,
                        interface: o.interface.clone(),
                        hook: o.hook,
                        encap: o.encap,
                    });
                    let client = c.client;
                    if let Some(d) = self.solicitations.failed(flow.dst, client) {
                        if let Some(c) = self.connections.get_mut(&client) {
                            c.note_solicitation_drop(&d);
                        }
                    }
                } else {
                    c.drops.push(ConnectionDrop {
                        reason: drop_reason.clone(),
                        location: location.clone(),
                        netns: *netns,
                        interface: o.interface.clone(),
                        hook: o.hook,
                        encap: o.encap,
                    });
                    if let Some(new) = culprit {
                        if c.culprit.as_ref().is_none_or(|old| new.confidence > old.confidence) {
                            c.culprit = Some(std::sync::Arc::clone(new));
                        }
                    }
                }
            }
            Detail::IcmpError { meaning, quoted: Some(q), mtu, .. } => {
                let pmtu = meaning.is_pmtu();
                let signalled = (pmtu && *mtu > 0).then_some(*mtu);
                // About the server's segment (server -> client) of a followed connection.
                if !self.connections.contains(&(q.src, q.sport)) && self.connections.contains(&(q.dst, q.dport)) {
                    if let Some(c) = self.existing((q.dst, q.dport), o) {
                        c.pmtu_signal |= pmtu;
                        c.note_pmtu_mtu(signalled);
                    }
                    return;
                }
                let c = self.entry((q.src, q.sport), o);
                c.server.get_or_insert((q.dst, q.dport));
                c.icmp = Some(*meaning);
                c.pmtu_signal |= pmtu;
                c.note_pmtu_mtu(signalled);
                merge(&mut c.src, &o.src);
                merge(&mut c.dst, &o.dst);
            }
            Detail::Socket { event, .. } => match *event {
                // Before the SYN leaves (and before any SNAT): the socket's own addresses.
                SocketMilestone::Connecting => self.note_node_socket((flow.dst, flow.dport), (flow.src, flow.sport), o),
                SocketMilestone::Established => self.entry((flow.src, flow.sport), o).established = true,
                SocketMilestone::PassiveEstablished => self.entry((flow.dst, flow.dport), o).established = true,
                SocketMilestone::Rto => self.entry((flow.src, flow.sport), o).rtos += 1,
                SocketMilestone::ConnectFailed => self.entry((flow.src, flow.sport), o).failed = true,
                SocketMilestone::Unknown => {}
            },
            Detail::Tcp { event, socket, state, segment, .. } => match (*event, *socket) {
                (TcpStackEvent::SendReset, false) => {
                    if let Some(c) = self.existing((flow.dst, flow.dport), o) {
                        c.refused_by_application = true;
                    }
                }
                (TcpStackEvent::Retransmit, true) if *state == TcpState::SynSent => {
                    self.entry((flow.src, flow.sport), o).syn_retransmits += 1
                }
                // After the handshake (data still unacknowledged, also once the sender closed its
                // side). The socket's flow is local -> remote: the client's own, or the server's.
                (TcpStackEvent::Retransmit, true) if state.after_handshake() => {
                    let key = [(flow.src, flow.sport), (flow.dst, flow.dport)]
                        .into_iter()
                        .find(|k| self.connections.contains(k));
                    let by_server = key == Some((flow.dst, flow.dport));
                    if let Some(c) = key.and_then(|k| self.existing(k, o)) {
                        c.server_retransmits |= by_server;
                        c.note_retransmit(*segment);
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }

    fn entry(&mut self, client: (IpAddr, u16), o: &Observation) -> &mut Connection {
        self.last_touched = Some(client);
        let c = self.connections.get_or_insert(client, || Connection::new(client, o.time));
        c.last_seen = c.last_seen.max(o.time);
        c.first_seen = c.first_seen.min(o.time);
        // The node's interfaces its packets cross, with their MTUs (a few at most).
        if let Some(mut e) = o.encap {
            if o.flow.is_some_and(|f| (f.dst, f.dport) == client) {
                (e.outer_src, e.outer_dst) = (e.outer_dst, e.outer_src);
            }
            c.tunnel.get_or_insert(e);
        }
        if let Some(name) = o.interface.as_ref().filter(|i| o.hook.is_tc() && self.tunnels.contains(*i)) {
            c.tunnel_device.get_or_insert_with(|| name.clone());
        }
        if let Some(mtu) = o.interface.as_ref().filter(|_| o.hook.is_tc()).and_then(|i| self.mtus.get(i)) {
            if let Some(name) = o.interface.clone() {
                c.path_mtus.insert(name, *mtu);
            }
        }
        c
    }

    fn existing(&mut self, client: (IpAddr, u16), o: &Observation) -> Option<&mut Connection> {
        self.connections.contains(&client).then(|| self.entry(client, o))
    }
}

/// Fills the fields `into` lacks from `from` (the pod is known after DNAT, the service before).
fn merge(into: &mut Endpoint, from: &Option<Endpoint>) {
    if let Some(from) = from {
        into.merge(from);
    }
}
