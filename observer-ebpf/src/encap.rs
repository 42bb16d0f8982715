//! One level of encapsulation: an outer packet carrying a pod's packet (VXLAN and Geneve over
//! UDP, on the ports userspace put in `TUNNEL_PORTS`; IPv4/IPv6 in IP, protocols 4 and 41).
//! The hooks on the underlay side see only the outer packet; parsing its inner headers ties it
//! to the pod flow. Every read stays within the outer packet's own length; a truncated or
//! malformed inner packet leaves the outer flow as it was (no encapsulation reported).

use observer_common::event::{Encap, FlowTuple, PROTO_UDP, TUNNEL_GENEVE, TUNNEL_IP6IP, TUNNEL_IPIP, TUNNEL_VXLAN};

use crate::{
    maps::TUNNEL_PORTS,
    packet::{parse_ip, PacketSource, Within, ETH_HLEN, ETH_P_IP, ETH_P_IPV6, L4},
};

/// IP protocol numbers of IP-in-IP (RFC 2003) and IPv6-in-IP (RFC 4213 / RFC 2473).
const PROTO_IPIP: u8 = 4;
const PROTO_IPV6_IN_IP: u8 = 41;
/// UDP header, VXLAN header (RFC 7348), Geneve fixed header (RFC 8926 3.4).
const UDP_HLEN: usize = 8;
const VXLAN_HLEN: usize = 8;
const GENEVE_HLEN: usize = 8;
/// VXLAN flags: the I bit (a valid VNI follows).
const VXLAN_FLAG_VNI: u8 = 0x08;
/// Geneve's protocol type of an Ethernet payload ("transparent Ethernet bridging").
const ETH_P_TEB: u16 = 0x6558;

/// When `flow` (parsed; `l4` its transport position) is an encapsulating packet: replaces it
/// with the inner packet's 5-tuple and describes the outer one in `encap`. Returns the inner IP
/// header's offset and its transport position (whose `end` never passes the outer packet's).
/// `None` (and `flow`, `encap` as they were) when not encapsulated, a later fragment, or the
/// inner headers are unreadable. Works in place: the BPF stack has no room for a second tuple.
#[inline(always)]
pub fn parse_inner<S: PacketSource>(src: &S, flow: &mut FlowTuple, l4: &L4, encap: &mut Encap) -> Option<(usize, L4)> {
    if l4.later_fragment {
        return None;
    }
    let within = Within { src, end: l4.end };
    let (kind, l3, ethertype, vni) = match flow.protocol {
        PROTO_IPIP => (TUNNEL_IPIP, l4.offset, ETH_P_IP, 0),
        PROTO_IPV6_IN_IP => (TUNNEL_IP6IP, l4.offset, ETH_P_IPV6, 0),
        PROTO_UDP => {
            // SAFETY: a read-only lookup; the value is copied out at once.
            let kind = unsafe { TUNNEL_PORTS.get(flow.dport) }.copied()?;
            let hdr: [u8; 8] = within.read(l4.offset + UDP_HLEN)?;
            let vni = u32::from_be_bytes([0, hdr[4], hdr[5], hdr[6]]);
            let payload = l4.offset + UDP_HLEN;
            match kind {
                TUNNEL_VXLAN if hdr[0] & VXLAN_FLAG_VNI != 0 => {
                    let eth = payload + VXLAN_HLEN;
                    (kind, eth + ETH_HLEN, u16::from_be(within.read::<u16>(eth + 12)?), vni)
                }
                TUNNEL_GENEVE if hdr[0] >> 6 == 0 => {
                    // Version 0; options length in 4-byte units (at most 252 bytes).
                    let start = payload + GENEVE_HLEN + ((hdr[0] & 0x3f) as usize) * 4;
                    match u16::from_be_bytes([hdr[2], hdr[3]]) {
                        ETH_P_TEB => (kind, start + ETH_HLEN, u16::from_be(within.read::<u16>(start + 12)?), vni),
                        proto @ (ETH_P_IP | ETH_P_IPV6) => (kind, start, proto, vni),
                        _ => return None,
                    }
                }
                _ => return None,
            }
        }
        _ => return None,
    };
    if ethertype != ETH_P_IP && ethertype != ETH_P_IPV6 {
        return None;
    }
    // Keep the outer tuple in `encap` (and the little the inner parse overwrites besides).
    encap.outer_saddr = flow.saddr;
    encap.outer_daddr = flow.daddr;
    encap.outer_family = flow.family;
    encap.outer_dport = if flow.protocol == PROTO_UDP { flow.dport } else { 0 };
    let (sport, dport, protocol) = (flow.sport, flow.dport, flow.protocol);
    flow.sport = 0;
    flow.dport = 0;
    let Some(mut il4) = parse_ip(&within, l3, ethertype, flow) else {
        // Unreadable inner headers: the outer packet stays what is reported.
        flow.saddr = encap.outer_saddr;
        flow.daddr = encap.outer_daddr;
        flow.family = encap.outer_family;
        (flow.sport, flow.dport, flow.protocol) = (sport, dport, protocol);
        *encap = Encap::default();
        return None;
    };
    if il4.end > l4.end {
        il4.end = l4.end;
    }
    encap.vni = vni;
    encap.kind = kind;
    Some((l3, il4))
}

/// Outer IPv4 header without options, UDP, VXLAN, inner Ethernet: where the inner IP header
/// starts in an Ethernet frame.
const VXLAN_INNER_L3: usize = ETH_HLEN + 20 + UDP_HLEN + VXLAN_HLEN + ETH_HLEN;
/// IP-in-IP (outer IPv4 without options): the inner IP header's offset.
const IPIP_INNER_L3: usize = ETH_HLEN + 20;

/// The fast path of the uplink of an overlay node: whether the frame is certainly an outer
/// packet (IPv4 without options, not a fragment; VXLAN on a `TUNNEL_PORTS` port, or IP-in-IP)
/// whose inner packet is a TCP segment without SYN or RST (inner IPv4 without options, or IPv6
/// without extension headers), read with direct packet access. Such packets are most of an
/// overlay uplink's traffic and no hook reports them. `false` means "look closer", never
/// "skip": anything else (Geneve, options, headers outside the linear data) takes the full path.
#[inline(always)]
pub fn ordinary_encapsulated_segment(skb: &aya_ebpf::programs::sk_buff::SkBuff) -> bool {
    // SAFETY: reading the context's data pointers; the verifier turns them into packet pointers.
    let (data, end) = unsafe { ((*skb.skb).data as usize, (*skb.skb).data_end as usize) };
    // Outer Ethernet + IPv4 (20) + UDP ports: enough to tell VXLAN or IP-in-IP apart.
    if data + ETH_HLEN + 20 + 4 > end {
        return false;
    }
    // SAFETY: data..data+38 was bounds-checked above.
    let (type_hi, type_lo, ver_ihl, frag_hi, frag_lo, protocol) = unsafe {
        (
            *((data + 12) as *const u8),
            *((data + 13) as *const u8),
            *((data + ETH_HLEN) as *const u8),
            *((data + ETH_HLEN + 6) as *const u8),
            *((data + ETH_HLEN + 7) as *const u8),
            *((data + ETH_HLEN + 9) as *const u8),
        )
    };
    if u16::from_be_bytes([type_hi, type_lo]) != ETH_P_IP || ver_ihl != 0x45 || (frag_hi & 0x3f) | frag_lo != 0 {
        return false;
    }
    let inner = match protocol {
        PROTO_IPIP => IPIP_INNER_L3,
        PROTO_UDP => {
            // SAFETY: the UDP ports are within the 38 bytes checked above.
            let dport = unsafe {
                u16::from_be_bytes([*((data + ETH_HLEN + 22) as *const u8), *((data + ETH_HLEN + 23) as *const u8)])
            };
            // SAFETY: a read-only lookup; the value is copied out at once.
            if unsafe { TUNNEL_PORTS.get(dport) }.copied() != Some(TUNNEL_VXLAN) {
                return false;
            }
            VXLAN_INNER_L3
        }
        _ => return false,
    };
    // The inner IP header and a whole TCP header (IPv4 without options: 40 bytes; IPv6 without
    // extension headers: 60), one window each (a one-byte check teaches the verifier nothing).
    if data + inner + 40 > end {
        return false;
    }
    // SAFETY: data..data+inner+40 was bounds-checked above.
    let (version, v4_frag_hi, v4_frag_lo, v4_protocol) = unsafe {
        (
            *((data + inner) as *const u8),
            *((data + inner + 6) as *const u8),
            *((data + inner + 7) as *const u8),
            *((data + inner + 9) as *const u8),
        )
    };
    if protocol == PROTO_UDP {
        // VXLAN's I flag, and an IPv4 or IPv6 inner Ethernet type agreeing with the version.
        // SAFETY: within the bounds checked above (the VXLAN header precedes the inner IP header).
        let (flags, eth_hi, eth_lo) = unsafe {
            (
                *((data + ETH_HLEN + 20 + UDP_HLEN) as *const u8),
                *((data + inner - 2) as *const u8),
                *((data + inner - 1) as *const u8),
            )
        };
        let want = if version == 0x45 { ETH_P_IP } else { ETH_P_IPV6 };
        if flags & VXLAN_FLAG_VNI == 0 || u16::from_be_bytes([eth_hi, eth_lo]) != want {
            return false;
        }
    }
    let tcp_flags = if version == 0x45 {
        if v4_protocol != observer_common::event::PROTO_TCP || (v4_frag_hi & 0x1f) | v4_frag_lo != 0 {
            return false;
        }
        // SAFETY: inner+20+13 < inner+40, checked above.
        unsafe { *((data + inner + 20 + 13) as *const u8) }
    } else if version >> 4 == 6 && protocol == PROTO_UDP {
        if data + inner + 60 > end {
            return false;
        }
        // SAFETY: data..data+inner+60 was bounds-checked just above.
        let (next, flags) = unsafe { (*((data + inner + 6) as *const u8), *((data + inner + 40 + 13) as *const u8)) };
        if next != observer_common::event::PROTO_TCP {
            return false;
        }
        flags
    } else {
        return false;
    };
    tcp_flags & (observer_common::event::TCP_SYN | observer_common::event::TCP_RST) == 0
}
