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
        Detail, DropClass, DropReason, Hook, IcmpKind, Observation, Protocol, Segment, SocketMilestone, TcpFlags,
        TcpStackEvent, TcpState,
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
    /// When it was freed.
    pub time: SystemTime,
    /// The packet travelled server -> client (a SYN-ACK or the server's data).
    pub reply: bool,
    /// Its TCP flags, when its header was captured.
    pub tcp_flags: Option<TcpFlags>,
}

impl ConnectionDrop {
    /// A FIN or RST (a connection closing), not a handshake or data segment.
    fn closing(&self) -> bool {
        self.tcp_flags.is_some_and(TcpFlags::is_closing)
    }
}

/// Drops kept per connection: the first ones and the latest (a long stall frees a segment at
/// every retransmission).
const MAX_DROPS: usize = 16;

/// Drop reasons that are the kernel's ordinary work rather than a packet lost on its way, and
/// so never a connection's fate: a frame for another host seen by a bystander on a flooding
/// bridge (`OTHERHOST`), segments purged or refused at and after a normal close or already
/// received (`QUEUE_PURGE`, `TCP_CLOSE`, `TCP_OLD_DATA`, `TCP_OFOMERGE`, ...). Names as in the
/// kernel's `enum skb_drop_reason` (include/net/dropreason-core.h); read from BTF at run time.
const HOUSEKEEPING_DROPS: [&str; 12] = [
    "OTHERHOST",
    "QUEUE_PURGE",
    "TCP_CLOSE",
    "TCP_RESET",
    "TCP_OLD_DATA",
    "TCP_OFOMERGE",
    "TCP_OLD_SEQUENCE",
    "TCP_OLD_ACK",
    "TCP_TOO_OLD_ACK",
    "TCP_ACK_UNSENT_DATA",
    "TCP_ZEROWINDOW",
    "DUP_FRAG",
];

/// Kernel functions (prefixes of the freeing symbol) of the socket layer: a drop there that is
/// no firewall or policy is TCP's own work on a connection the network delivered (a
/// retransmitted SYN freed because its request socket exists, data for a socket the application
/// closed: `TCP_ABORT_ON_DATA`, a segment outside the window), while one in the IP layer
/// (`ip_error` for a blackhole or prohibit route) is a packet lost on its way.
const SOCKET_LAYER: [&str; 5] = ["tcp_", "inet_", "sk_", "__sk_", "skb_queue_purge"];

/// Socket-layer drop reasons that are a packet lost all the same: corrupted on the way
/// (`TCP_CSUM`), or refused by TCP-MD5/TCP-AO authentication.
const SOCKET_LAYER_LOSSES: [&str; 9] = [
    "TCP_CSUM",
    "TCP_MD5NOTFOUND",
    "TCP_MD5UNEXPECTED",
    "TCP_MD5FAILURE",
    "TCP_AONOTFOUND",
    "TCP_AOUNEXPECTED",
    "TCP_AOKEYNOTFOUND",
    "TCP_AOFAILURE",
    "TCP_AUTH_HDR",
];

/// Whether a drop (`reason`, freed at kernel symbol `location`) is the kernel's ordinary work and
/// never what happened to a connection (see [`HOUSEKEEPING_DROPS`], [`SOCKET_LAYER`]).
pub fn is_housekeeping(reason: &DropReason, location: &str) -> bool {
    reason.class == DropClass::Other
        && (HOUSEKEEPING_DROPS.contains(&&*reason.name)
            || (SOCKET_LAYER.iter().any(|p| location.starts_with(p)) && !SOCKET_LAYER_LOSSES.contains(&&*reason.name)))
}

/// The first ephemeral port of Linux's default `net.ipv4.ip_local_port_range` (32768-60999):
/// a connection known only from a dropped packet is oriented by it (a service port below, the
/// client's port at or above).
const EPHEMERAL_PORTS_START: u16 = 32768;

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
    /// A socket on this node saw the handshake complete (sock_ops), or the SYN-ACK reached the
    /// client's socket (cgroup_skb ingress); when first.
    pub established: bool,
    pub established_at: Option<SystemTime>,
    /// The latest SYN-ACK seen at any TC hook (it reached this node; it may still be dropped
    /// here: a TC ingress runs before the node's routing and netfilter).
    pub answered_at: Option<SystemTime>,
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
            established_at: None,
            answered_at: None,
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

    fn set_established(&mut self, at: SystemTime) {
        self.established = true;
        self.established_at = Some(self.established_at.map_or(at, |t| t.min(at)));
    }

    /// Keeps a drop: the first [`MAX_DROPS`]` - 1` and the latest.
    fn note_drop(&mut self, d: ConnectionDrop) {
        if self.drops.len() >= MAX_DROPS {
            self.drops.pop();
        }
        self.drops.push(d);
    }

    /// Attempts: the first SYN and every retransmission.
    pub fn attempts(&self) -> u32 {
        1 + self.rtos.max(self.syn_retransmits)
    }

    /// Whether drop `d` of the handshake still explains the connection: no SYN-ACK came after it
    /// (a dropped SYN retransmitted and answered, or a dropped SYN-ACK sent again and not
    /// dropped: the handshake recovered; each dropped SYN-ACK is seen arriving just before its
    /// own drop).
    fn drop_stands(&self, d: &ConnectionDrop) -> bool {
        self.answered_at.is_none_or(|t| t <= d.time)
    }

    /// Whether drop `d` came after the handshake: once a socket saw it complete, or a data
    /// segment (TCP flags known, no SYN) after the SYN-ACK reached the node.
    fn after_handshake(&self, d: &ConnectionDrop) -> bool {
        let data = d.tcp_flags.is_some_and(|f| !f.contains(TcpFlags::SYN));
        self.established_at.is_some_and(|at| d.time >= at) || (data && self.answered_at.is_some_and(|at| d.time >= at))
    }

    /// The most telling of `drops` (a firewall or policy, then no route or the reverse-path
    /// filter, a failed neighbour, anything else), the first of it.
    fn most_telling<'a>(drops: impl Iterator<Item = &'a ConnectionDrop>) -> Option<&'a ConnectionDrop> {
        let rank = |d: &ConnectionDrop| match d.reason.class {
            DropClass::Netfilter | DropClass::Policy => 0,
            DropClass::NoRoute | DropClass::ReversePath => 1,
            DropClass::Neighbour => 2,
            _ => 3,
        };
        let mut best: Option<&ConnectionDrop> = None;
        for d in drops {
            if best.is_none_or(|b| rank(d) < rank(b)) {
                best = Some(d);
            }
        }
        best
    }

    /// The drop that decides the connection's handshake, if any: of its handshake's drops that
    /// still stand ([`Connection::drop_stands`]) the most telling. A lost FIN or RST never
    /// decides (a connection's close whose conntrack entry was gone).
    pub fn decisive_drop(&self) -> Option<&ConnectionDrop> {
        Self::most_telling(
            self.drops.iter().filter(|d| !d.closing() && !self.after_handshake(d) && self.drop_stands(d)),
        )
    }

    /// The firewall, route or neighbour drops of its segments after the handshake (not of a
    /// closing FIN/RST): the most telling, and how many.
    /// The count is of the direction with more of them (a sender's retransmissions are dropped
    /// one after another in its own direction).
    fn late_drops(&self) -> (Option<&ConnectionDrop>, u32) {
        let late = || {
            self.drops.iter().filter(|d| d.reason.class != DropClass::Other && !d.closing() && self.after_handshake(d))
        };
        let replies = late().filter(|d| d.reply).count() as u32;
        let requests = late().count() as u32 - replies;
        (Self::most_telling(late()), replies.max(requests))
    }

    /// The drop a finding shows: the handshake's decisive one, else the most telling after it.
    pub fn evidence_drop(&self) -> Option<&ConnectionDrop> {
        self.decisive_drop().or_else(|| self.late_drops().0)
    }

    fn dropped(d: &ConnectionDrop) -> Outcome {
        if d.reason.class == DropClass::NoRoute {
            return Outcome::NoRoute(NoRouteBy::Drop(d.reason.clone()));
        }
        Outcome::Dropped {
            reason: d.reason.clone(),
            location: d.location.clone(),
            netns: d.netns,
            interface: d.interface.clone(),
        }
    }

    /// How the connection ended as far as this node saw. A handshake is complete when a
    /// socket here saw it, or when its SYN-ACK reached this node and no drop here explains a
    /// failure (a SYN-ACK seen at the uplink's ingress may still be dropped by the node's
    /// netfilter or reverse-path filter). An established connection that stalls is `Dropped`
    /// when this node dropped its packets after the handshake, else `Stalled`.
    pub fn outcome(&self) -> Outcome {
        let decisive = self.decisive_drop();
        if self.established || (self.answered_at.is_some() && !self.failed && decisive.is_none()) {
            // A firewall, route or neighbour drop after the handshake explains a stall; another
            // (PKT_TOO_BIG: the node's own part of path-MTU discovery, a full queue) leaves it
            // to the stall's analysis. A remote sender's retransmissions are no stall seen here:
            // its segments dropped here again and again ([`STALL_RETRANSMITS`] times) are.
            let (late, count) = self.late_drops();
            return match (self.stall(), late) {
                (Some(_), Some(d)) => Self::dropped(d),
                (Some(stall), None) => Outcome::Stalled(stall),
                (None, Some(d)) if count >= STALL_RETRANSMITS => Self::dropped(d),
                (None, _) => Outcome::Established,
            };
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
        if let Some(d) = decisive {
            return Self::dropped(d);
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
                        let at = Some(o.time);
                        match o.hook {
                            Hook::TcIngress | Hook::TcEgress => c.answered_at = c.answered_at.max(at),
                            // The client's socket got it.
                            Hook::CgroupIngress => c.set_established(o.time),
                            _ => {}
                        }
                    }
                } else if tcp_flags.is_rst() {
                    if let Some(c) = self.existing((flow.dst, flow.dport), o) {
                        c.server_reset = true;
                    }
                }
            }
            // The kernel's ordinary work (a normal close, a bystander of a flooded frame): no
            // connection's fate.
            Detail::Drop { drop_reason, location, .. } if is_housekeeping(drop_reason, location) => {}
            Detail::Drop { drop_reason, location, netns, culprit, packet, .. } => {
                let (forward, backward) = ((flow.src, flow.sport), (flow.dst, flow.dport));
                let tcp_flags = packet.tcp_flags(flow.src);
                // A FIN or RST of a connection observer did not see open: its close, whose
                // conntrack entry is gone (flushed, timed out): no reachability problem.
                let closing = tcp_flags.is_some_and(TcpFlags::is_closing);
                let key = if self.connections.contains(&backward) {
                    backward
                } else if self.connections.contains(&forward) {
                    forward
                } else if drop_reason.class == DropClass::Other || closing {
                    // Of a connection not followed: an unusual drop (a checksum, a full queue)
                    // is evidence on a followed connection, never one by itself.
                    return;
                } else if flow.sport < EPHEMERAL_PORTS_START && flow.dport >= EPHEMERAL_PORTS_START {
                    // A server's packet of a connection opened before observer watched.
                    backward
                } else {
                    forward
                };
                let reply = key == backward;
                let c = self.entry(key, o);
                let new = c.server.is_none();
                c.server.get_or_insert(if reply { forward } else { backward });
                // Names from the packet: its own direction's always (the pod is known after
                // DNAT, the service before), a reply's only for a connection it made.
                if !reply {
                    merge(&mut c.src, &o.src);
                    merge(&mut c.dst, &o.dst);
                } else if new {
                    merge(&mut c.src, &o.dst);
                    merge(&mut c.dst, &o.src);
                }
                if drop_reason.class == DropClass::NoSocket {
                    c.refused_by_application = true;
                } else if neighbour::is_neighbour_failure(drop_reason, location) {
                    c.note_drop(ConnectionDrop {
                        reason: drop_reason.clone(),
                        location: location.clone(),
                        netns: *netns,
                        interface: o.interface.clone(),
                        hook: o.hook,
                        encap: o.encap,
                        time: o.time,
                        reply,
                        tcp_flags,
                    });
                    let client = c.client;
                    if let Some(d) = self.solicitations.failed(flow.dst, client) {
                        if let Some(c) = self.connections.get_mut(&client) {
                            c.note_solicitation_drop(&d);
                        }
                    }
                } else {
                    c.note_drop(ConnectionDrop {
                        reason: drop_reason.clone(),
                        location: location.clone(),
                        netns: *netns,
                        interface: o.interface.clone(),
                        hook: o.hook,
                        encap: o.encap,
                        time: o.time,
                        reply,
                        tcp_flags,
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
                SocketMilestone::Established => self.entry((flow.src, flow.sport), o).set_established(o.time),
                SocketMilestone::PassiveEstablished => self.entry((flow.dst, flow.dport), o).set_established(o.time),
                // A SYN's retransmission timeout (after the handshake an RTO is a data
                // segment's, which is no attempt).
                SocketMilestone::Rto => {
                    let c = self.entry((flow.src, flow.sport), o);
                    if !c.established {
                        c.rtos += 1;
                    }
                }
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
