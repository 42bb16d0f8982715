//! What every packet hook reports: TCP SYN, SYN-ACK and RST, and ICMP/ICMPv6 errors with the
//! flow they quote. Shared by the TC classifiers and the cgroup_skb programs.

use aya_ebpf::programs::sk_buff::SkBuff;
use observer_common::{
    counters,
    event::{
        Encap, FlowTuple, IcmpErrorEvent, PacketEvent, CAPTURE_BYTES, EVENT_KIND_ICMP_ERROR, EVENT_KIND_PACKET,
        HOOK_TC_EGRESS, HOOK_TC_INGRESS, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, TCP_RST, TCP_SYN,
    },
};

use crate::{
    counters::bump,
    emit::{reserve, submit},
    encap::{ordinary_encapsulated_segment, parse_inner},
    fastpath::ordinary_tcp_segment,
    filter::{capture_limit, wanted},
    flow_state::record,
    kmem::opaque,
    maps::{ENCAP_SCRATCH, ENCAP_SLOT_TC},
    packet::{parse_ip, PacketSource, Within, ETH_HLEN, ETH_P_IP, ETH_P_IPV6, L4},
};

struct SkbBytes<'a>(&'a SkBuff);

impl PacketSource for SkbBytes<'_> {
    #[inline(always)]
    fn read<T: Copy>(&self, offset: usize) -> Option<T> {
        self.0.load::<T>(offset).ok()
    }
}

#[inline(always)]
pub fn observe(skb: &SkBuff, hook: u8) {
    bump(counters::TC_PACKETS);
    let ethertype = u16::from_be(skb.protocol() as u16);
    if ethertype != ETH_P_IP && ethertype != ETH_P_IPV6 {
        return;
    }
    if ordinary_tcp_segment(skb, ethertype) {
        return;
    }
    // An overlay uplink's ordinary traffic: outer packets of inner segments without SYN/RST.
    if (hook == HOOK_TC_INGRESS || hook == HOOK_TC_EGRESS) && ordinary_encapsulated_segment(skb) {
        return;
    }
    let src = SkbBytes(skb);
    let mut flow = FlowTuple::default();
    let Some(l3) = network_offset(&src, ethertype) else {
        bump(counters::TC_PARSE_ERRORS);
        return;
    };
    let Some(l4) = parse_ip(&src, l3, ethertype, &mut flow) else {
        bump(counters::TC_PARSE_ERRORS);
        return;
    };
    if l4.later_fragment {
        return;
    }
    if flow.protocol == PROTO_ICMP || flow.protocol == PROTO_ICMPV6 {
        report_icmp_error(skb, &src, hook, &flow, l3, l4, ethertype);
        return;
    }
    if flow.protocol != PROTO_TCP {
        // On the underlay side of an overlay: the pod's packet inside the outer one. Only the
        // TC hooks see outer packets (cgroup hooks see the sockets' own). Its own path, so the
        // verifier never merges it with the plain one: inner TCP handshakes only (an inner ICMP
        // error is reported where it travels decapsulated, on the tunnel device).
        if hook == HOOK_TC_INGRESS || hook == HOOK_TC_EGRESS {
            observe_encapsulated(skb, &src, hook, &mut flow, &l4);
        }
        return;
    }
    report_tcp(skb, &src, hook, &flow, &l4, None);
}

/// An outer packet of a tunnel: its inner TCP handshake packet is reported with the tunnel.
#[inline(always)]
fn observe_encapsulated(skb: &SkBuff, src: &SkbBytes<'_>, hook: u8, flow: &mut FlowTuple, l4: &L4) {
    let Some(scratch) = ENCAP_SCRATCH.get_ptr_mut(ENCAP_SLOT_TC) else { return };
    // SAFETY: this CPU's slot of a per-CPU map, used by this program run alone.
    let Some((_, inner)) = parse_inner(src, flow, l4, unsafe { &mut *scratch }) else { return };
    if inner.later_fragment || flow.protocol != PROTO_TCP {
        return;
    }
    report_tcp(skb, src, hook, flow, &inner, Some(scratch));
}

/// Reports a TCP SYN, SYN-ACK or RST (with what encapsulated it, if anything).
#[inline(always)]
fn report_tcp(skb: &SkBuff, src: &SkbBytes<'_>, hook: u8, flow: &FlowTuple, l4: &L4, encap: Option<*mut Encap>) {
    // Bytes 4..8: sequence number; byte 13: flags (within the IP packet's own length).
    let l4_bytes = Within { src, end: l4.end };
    let (Some(seq), Some(flags)) = (l4_bytes.read::<[u8; 4]>(l4.offset + 4), l4_bytes.read::<u8>(l4.offset + 13))
    else {
        bump(counters::TC_PARSE_ERRORS);
        return;
    };
    if flags & (TCP_SYN | TCP_RST) == 0 || !wanted(flow) {
        return;
    }
    record(flow, flags, hook);
    let Some(mut entry) = reserve::<PacketEvent>(EVENT_KIND_PACKET) else {
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `reserve` initialised the slot; we own it until submit.
    unsafe {
        (*event).flow = *flow;
        // SAFETY: the context pointer is valid for the program's run.
        (*event).ifindex = (*skb.skb).ifindex;
        (*event).hook = hook;
        (*event).tcp_flags = flags;
        (*event).tcp_seq = u32::from_be_bytes(seq);
        if let Some(scratch) = encap {
            // SAFETY: the per-CPU slot `parse_inner` filled in this run.
            (*event).encap = *scratch;
        }
    }
    submit(entry, counters::TC_EVENTS);
}

/// Reports ICMP destination-unreachable / fragmentation-needed and ICMPv6 destination-unreachable
/// / packet-too-big, with the quoted packet's flow (what was rejected). Other ICMP is ignored.
#[inline(always)]
fn report_icmp_error(skb: &SkBuff, src: &SkbBytes<'_>, hook: u8, flow: &FlowTuple, l3: usize, l4: L4, ethertype: u16) {
    let (src, icmp) = (&Within { src, end: l4.end }, l4.offset);
    let Some(head) = src.read::<[u8; 8]>(icmp) else {
        bump(counters::TC_PARSE_ERRORS);
        return;
    };
    let (icmp_type, icmp_code) = (head[0], head[1]);
    let mtu = match (flow.protocol, icmp_type) {
        // Destination unreachable; code 4 (fragmentation needed) carries the next-hop MTU.
        (PROTO_ICMP, 3) => {
            if icmp_code == 4 {
                u16::from_be_bytes([head[6], head[7]]) as u32
            } else {
                0
            }
        }
        (PROTO_ICMPV6, 1) => 0,
        // Packet too big: the MTU is the second word.
        (PROTO_ICMPV6, 2) => u32::from_be_bytes([head[4], head[5], head[6], head[7]]),
        _ => return,
    };
    // Filter on the quoted flow (the connection the error is about), parsed on the stack first.
    let mut quoted = FlowTuple::default();
    let quoted_l4 = parse_ip(src, icmp + 8, ethertype, &mut quoted);
    let quoted_valid = quoted_l4.is_some();
    // Headers: the ICMP header, the quoted IP header and the 8 bytes after it; payload beyond
    // that leaves the kernel only when asked.
    let headers = opaque((quoted_l4.map_or(icmp + 8, |q| q.offset + 8) - l3) as u32) as usize;
    if !wanted(if quoted_valid { &quoted } else { flow }) {
        return;
    }
    let Some(mut entry) = reserve::<IcmpErrorEvent>(EVENT_KIND_ICMP_ERROR) else {
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `reserve` initialised the slot; we own it until submit.
    let event = unsafe { &mut *event };
    event.flow = *flow;
    // SAFETY: the context pointer is valid for the program's run.
    event.ifindex = unsafe { (*skb.skb).ifindex };
    event.hook = hook;
    event.icmp_type = icmp_type;
    event.icmp_code = icmp_code;
    event.mtu = mtu;
    // The quoted packet (IP header + at least 8 bytes of its transport) follows the 8-byte ICMP header.
    // The ICMP packet itself, from its IP header, for --pcap.
    event.packet_len = capture(skb, l3, &mut event.packet, capture_limit(headers));
    if quoted_valid {
        event.quoted = quoted;
        event.quoted_valid = 1;
    } else {
        bump(counters::TC_PARSE_ERRORS);
    }
    submit(entry, counters::TC_EVENTS);
}

/// Copies up to `limit` (<= `CAPTURE_BYTES`) bytes of the packet from `offset` into `out`;
/// returns the count.
#[inline(always)]
fn capture(skb: &SkBuff, offset: usize, out: &mut [u8; CAPTURE_BYTES], limit: usize) -> u16 {
    let len = skb.len() as usize;
    if offset >= len {
        return 0;
    }
    let n = len - offset;
    let n = if n > limit { limit } else { n };
    // The verifier needs the size visibly within [1, CAPTURE_BYTES].
    if n == 0 || n > CAPTURE_BYTES {
        return 0;
    }
    // SAFETY: `out` is writable for `n` <= its length bytes; the helper bounds-checks the skb.
    let rc = unsafe {
        aya_ebpf::helpers::generated::bpf_skb_load_bytes(
            skb.skb.cast(),
            offset as u32,
            out.as_mut_ptr().cast(),
            n as u32,
        )
    };
    if rc == 0 {
        n as u16
    } else {
        0
    }
}

/// Where the IP header starts: after an Ethernet header on L2 devices, at 0 on L3 devices
/// (tun, wireguard), told apart by whether bytes 12..14 repeat the skb's ethertype and the
/// version nibble then agrees.
#[inline(always)]
fn network_offset(src: &SkbBytes<'_>, ethertype: u16) -> Option<usize> {
    let want_version = if ethertype == ETH_P_IP { 4 } else { 6 };
    if let Some(eth_type) = src.read::<u16>(12) {
        if u16::from_be(eth_type) == ethertype {
            let version: u8 = src.read(ETH_HLEN)?;
            if version >> 4 == want_version {
                return Some(ETH_HLEN);
            }
        }
    }
    let version: u8 = src.read(0)?;
    (version >> 4 == want_version).then_some(0)
}
