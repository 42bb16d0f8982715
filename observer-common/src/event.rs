//! Events the kernel side sends through the ring buffer. Each starts with an [`EventHeader`].

/// Version of the wire layout; bumped whenever a struct below changes.
/// Version 3 appended [`Encap`] to [`PacketEvent`] and [`DropEvent`]; version 2 records are
/// still read (`decode`: as not encapsulated).
pub const EVENT_VERSION: u16 = 3;
/// The previous wire version, still decoded.
pub const EVENT_VERSION_V2: u16 = 2;

/// Bytes of a dropped or rejecting packet kept for `--pcap` (from its IP header on).
pub const CAPTURE_BYTES: usize = 128;

/// A TCP handshake/reset packet seen by a TC classifier ([`PacketEvent`]).
pub const EVENT_KIND_PACKET: u16 = 1;
/// A packet freed by the kernel with a drop reason (`skb:kfree_skb`, [`DropEvent`]).
pub const EVENT_KIND_DROP: u16 = 2;

/// An ICMP/ICMPv6 error (destination unreachable, packet too big) quoting a packet
/// ([`IcmpErrorEvent`]).
pub const EVENT_KIND_ICMP_ERROR: u16 = 3;

/// A `connect()` seen by the cgroup connect4/connect6 hook ([`ConnectEvent`]).
pub const EVENT_KIND_CONNECT: u16 = 4;
/// A TCP socket milestone from sock_ops ([`SockOpsEvent`]).
pub const EVENT_KIND_SOCKOPS: u16 = 5;

/// [`SockOpsEvent::op`] values.
pub const SOCKOPS_ACTIVE_ESTABLISHED: u8 = 1;
pub const SOCKOPS_PASSIVE_ESTABLISHED: u8 = 2;
/// A retransmission timeout fired (for a connecting socket: its SYN is retransmitted).
pub const SOCKOPS_RTO: u8 = 3;
/// The socket left SYN_SENT for CLOSE: the connection attempt failed (timeout, reset, unreachable).
pub const SOCKOPS_CONNECT_FAILED: u8 = 4;
/// An active open is starting (TCP_CONNECT_CB, before the SYN leaves): ties the socket cookie
/// to its 5-tuple.
pub const SOCKOPS_CONNECTING: u8 = 5;

/// Kernel TCP states used in [`SockOpsEvent`].
pub const TCP_STATE_SYN_SENT: u8 = 2;
pub const TCP_STATE_CLOSE: u8 = 7;

/// A TCP retransmission or a reset sent by the local stack ([`TcpEvent`]).
pub const EVENT_KIND_TCP: u16 = 6;
/// [`TcpEvent::kind`] values.
pub const TCP_EVENT_RETRANSMIT: u8 = 1;
pub const TCP_EVENT_SEND_RESET: u8 = 2;

/// Address family values of [`FlowTuple::family`] (the kernel's `AF_INET`/`AF_INET6`).
pub const FAMILY_IPV4: u8 = 2;
pub const FAMILY_IPV6: u8 = 10;

/// IP protocol numbers used in [`FlowTuple::protocol`].
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

/// TCP flag bits as they sit in the TCP header's 13th byte.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

/// Where a [`PacketEvent`] was seen.
pub const HOOK_TC_INGRESS: u8 = 1;
pub const HOOK_TC_EGRESS: u8 = 2;
/// cgroup_skb on the watched cgroup tree (the packet as the pod's sockets see it).
pub const HOOK_CGROUP_INGRESS: u8 = 3;
pub const HOOK_CGROUP_EGRESS: u8 = 4;

/// [`Encap::kind`] values: what encapsulated the packet whose inner flow an event carries.
/// 0: not encapsulated (the flow is the packet's own).
pub const TUNNEL_NONE: u8 = 0;
/// VXLAN (RFC 7348) over UDP: flannel, Calico VXLAN, Cilium VXLAN (ports 4789, 8472).
pub const TUNNEL_VXLAN: u8 = 1;
/// Geneve (RFC 8926) over UDP (port 6081): OVN-Kubernetes, Cilium Geneve, AWS GWLB.
pub const TUNNEL_GENEVE: u8 = 2;
/// IPv4 in IP (IP protocol 4): Calico IPIP.
pub const TUNNEL_IPIP: u8 = 3;
/// IPv6 in IP (IP protocol 41: 6in4 / IP6-in-IP6).
pub const TUNNEL_IP6IP: u8 = 4;

/// The outer packet of an encapsulated one (one level): set when a hook saw the outer packet
/// (on the underlay side) and parsed the inner headers, whose 5-tuple is the event's `flow`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Encap {
    /// Outer source and destination (network order; IPv4 in the first 4 bytes).
    pub outer_saddr: [u8; 16],
    pub outer_daddr: [u8; 16],
    /// VXLAN/Geneve virtual network identifier (24 bits), 0 for IP-in-IP.
    pub vni: u32,
    /// Outer UDP destination port (host order) for VXLAN/Geneve, 0 for IP-in-IP.
    pub outer_dport: u16,
    /// One of the `TUNNEL_*` values (`TUNNEL_NONE`: not encapsulated, the rest is zero).
    pub kind: u8,
    /// `FAMILY_IPV4` or `FAMILY_IPV6` of the outer header.
    pub outer_family: u8,
}

/// First bytes of every record in the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EventHeader {
    /// One of the `EVENT_KIND_*` constants.
    pub kind: u16,
    /// [`EVENT_VERSION`] of the writer.
    pub version: u16,
    /// Size in bytes of the whole record, header included.
    pub size: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the event was recorded.
    pub timestamp_ns: u64,
}

/// A packet's 5-tuple. Addresses are in network byte order; IPv4 uses the first 4 bytes.
/// Ports are in host byte order (0 when the protocol has none).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowTuple {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    /// `FAMILY_IPV4` or `FAMILY_IPV6`.
    pub family: u8,
    /// IP protocol number of the transport header (after IPv6 extension headers).
    pub protocol: u8,
    pub _pad: [u8; 2],
}

/// A TCP SYN, SYN-ACK or RST seen at a TC hook.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PacketEvent {
    pub header: EventHeader,
    pub flow: FlowTuple,
    /// Interface index in the network namespace the classifier is attached in.
    pub ifindex: u32,
    /// One of the `HOOK_*` values.
    pub hook: u8,
    /// TCP flags byte (`TCP_*` bits).
    pub tcp_flags: u8,
    pub _pad: [u8; 2],
    /// TCP sequence number (host order), to tell retransmissions from new attempts.
    pub tcp_seq: u32,
    pub _pad2: u32,
    /// What encapsulated the packet when the hook saw its outer packet (`flow` is the inner).
    pub encap: Encap,
}

/// A packet the kernel dropped, from the `skb:kfree_skb` tracepoint.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropEvent {
    pub header: EventHeader,
    /// The dropped packet's 5-tuple (zeroed when the headers could not be read).
    pub flow: FlowTuple,
    /// Value of the running kernel's `enum skb_drop_reason` (names come from BTF).
    pub reason: u32,
    /// `skb->dev->ifindex`, 0 when the skb had no device.
    pub ifindex: u32,
    /// Inode number of the network namespace of the drop (`skb->dev` or `skb->sk`), 0 if unknown.
    pub netns_ino: u32,
    /// Non-zero when `flow` holds parsed headers.
    pub flow_valid: u8,
    pub _pad: [u8; 3],
    /// Kernel text address that dropped the packet (symbolized in userspace).
    pub location: u64,
    /// How many bytes of `packet` are valid (0 when the headers were unreadable).
    pub packet_len: u16,
    pub _pad2: [u8; 6],
    /// The dropped packet from its IP header on (first [`CAPTURE_BYTES`]); for an encapsulated
    /// packet, the outer IP header on.
    pub packet: [u8; CAPTURE_BYTES],
    /// What encapsulated the dropped packet, when it was an outer packet (`flow` is the inner).
    pub encap: Encap,
}

/// An ICMP or ICMPv6 error seen at a TC hook, with the flow it quotes: a firewall REJECT
/// (admin-prohibited), an unreachable host/port/net, or a PMTU signal, tied to the rejected flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpErrorEvent {
    pub header: EventHeader,
    /// The ICMP packet itself (its source is whoever generated the error).
    pub flow: FlowTuple,
    /// The original packet quoted inside the error (the flow that was rejected).
    pub quoted: FlowTuple,
    pub ifindex: u32,
    /// `HOOK_TC_INGRESS` or `HOOK_TC_EGRESS`.
    pub hook: u8,
    /// ICMP type and code (ICMPv6 when `flow.protocol == PROTO_ICMPV6`).
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// Non-zero when `quoted` holds a parsed header.
    pub quoted_valid: u8,
    /// Next-hop MTU of fragmentation-needed / packet-too-big, else 0.
    pub mtu: u32,
    /// How many bytes of `packet` are valid.
    pub packet_len: u16,
    pub _pad: u16,
    /// The ICMP packet from its IP header on (first [`CAPTURE_BYTES`]).
    pub packet: [u8; CAPTURE_BYTES],
}

/// An application's `connect()` as the cgroup hook sees it: before any iptables REDIRECT/DNAT,
/// so `flow.daddr:dport` is the destination the application asked for. The source is not
/// chosen yet (zero).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ConnectEvent {
    pub header: EventHeader,
    pub flow: FlowTuple,
    /// Thread group id (the process) and thread id of the caller.
    pub pid: u32,
    pub tid: u32,
    /// cgroup v2 id (inode of the cgroup directory) of the caller.
    pub cgroup_id: u64,
    /// Socket cookie: joins this event with the socket's sock_ops events.
    pub socket_cookie: u64,
    /// Caller's command name (NUL-padded).
    pub comm: [u8; 16],
}

/// A TCP socket milestone from sock_ops: established, a retransmission timeout, or a failed
/// connection attempt.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SockOpsEvent {
    pub header: EventHeader,
    /// Local -> remote, as the socket sees it (before NAT on the way).
    pub flow: FlowTuple,
    pub socket_cookie: u64,
    /// One of the `SOCKOPS_*` values.
    pub op: u8,
    /// For state changes: old and new kernel TCP state.
    pub old_state: u8,
    pub new_state: u8,
    pub _pad: u8,
    /// For RTO: retransmissions so far (`icsk_retransmits`).
    pub retransmits: u32,
}

/// From the `tcp:tcp_retransmit_skb` and `tcp:tcp_send_reset` tracepoints: a segment the kernel
/// retransmits (any state: also established flows, e.g. a PMTU blackhole), or a RST the local
/// TCP stack sends (a closed port answers with one: that is the application, not a firewall).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TcpEvent {
    pub header: EventHeader,
    /// Local -> remote of the socket (for a reset without socket: the reset's own direction).
    pub flow: FlowTuple,
    /// Network namespace of the socket (or of the packet's device), 0 if unknown.
    pub netns_ino: u32,
    /// `TCP_EVENT_RETRANSMIT` or `TCP_EVENT_SEND_RESET`.
    pub kind: u8,
    /// Kernel TCP state of the socket (0 without socket).
    pub state: u8,
    /// Non-zero when the event came with a socket.
    pub has_socket: u8,
    pub _pad: u8,
    /// Reset reason (`enum sk_rst_reason`) or the retransmit's error code.
    pub reason: u32,
    /// Retransmissions: bytes of TCP payload in the retransmitted skb (`skb->len`; may span
    /// several segments of `mss` bytes), 0 if unknown.
    pub seg_len: u32,
    /// Retransmissions: first sequence number of the retransmitted skb (the same one again and
    /// again: no progress), 0 if unknown.
    pub seq: u32,
    /// Retransmissions: the sender's current MSS (`tcp_sock.mss_cache`), 0 if unknown.
    pub mss: u32,
}

/// Per-flow handshake state kept in the kernel's `FLOWS` LRU map, keyed by the flow in the
/// SYN's direction (client -> server, as seen at the hook: before or after NAT). Userspace
/// reads it to tell answered handshakes from unanswered ones without streaming every packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowState {
    /// First and latest SYN (`bpf_ktime_get_ns`).
    pub first_syn_ns: u64,
    pub last_syn_ns: u64,
    /// Packets seen, summed over every hook the flow crosses (one SYN crossing three hooks
    /// counts three).
    pub syn_packets: u32,
    pub synack_packets: u32,
    pub rst_packets: u32,
    /// Bitmask of `1 << HOOK_*` where the SYN was seen.
    pub syn_hooks: u32,
}

// `Default` by hand: arrays longer than 32 have no derived Default.
impl Default for DropEvent {
    fn default() -> Self {
        Self {
            header: EventHeader::default(),
            flow: FlowTuple::default(),
            reason: 0,
            ifindex: 0,
            netns_ino: 0,
            flow_valid: 0,
            _pad: [0; 3],
            location: 0,
            packet_len: 0,
            _pad2: [0; 6],
            packet: [0; CAPTURE_BYTES],
            encap: Encap::default(),
        }
    }
}

impl Default for IcmpErrorEvent {
    fn default() -> Self {
        Self {
            header: EventHeader::default(),
            flow: FlowTuple::default(),
            quoted: FlowTuple::default(),
            ifindex: 0,
            hook: 0,
            icmp_type: 0,
            icmp_code: 0,
            quoted_valid: 0,
            mtu: 0,
            packet_len: 0,
            _pad: 0,
            packet: [0; CAPTURE_BYTES],
        }
    }
}
