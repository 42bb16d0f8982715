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
            let kind = unsafe { TUNNEL_PORTS.get(&flow.dport) }.copied()?;
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
