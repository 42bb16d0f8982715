//! Defensive IPv4/IPv6 + TCP/UDP header parsing shared by the TC classifiers and the drop
//! tracepoint. Every read is bounds-checked by the source (`bpf_skb_load_bytes` or
//! `bpf_probe_read_kernel`), so truncated packets end the parse instead of reading garbage.

use observer_common::event::{FlowTuple, FAMILY_IPV4, FAMILY_IPV6, PROTO_TCP, PROTO_UDP};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_HLEN: usize = 14;

/// Most IPv6 extension headers walked before giving up (bounded loop).
const MAX_IPV6_EXT_HEADERS: usize = 8;

/// Something packet bytes can be read from at an offset.
pub trait PacketSource {
    fn read<T: Copy>(&self, offset: usize) -> Option<T>;
}

/// Where the transport header starts, and whether the packet is a non-first fragment (which
/// carries no transport header).
#[derive(Clone, Copy)]
pub struct L4 {
    pub offset: usize,
    pub later_fragment: bool,
}

/// Parses an IPv4 or IPv6 header at `offset` (per `ethertype`) and then the transport ports,
/// writing the 5-tuple into `flow` in place (events live in the ring buffer, not on the
/// 512-byte stack).
#[inline(always)]
pub fn parse_ip<S: PacketSource>(src: &S, offset: usize, ethertype: u16, flow: &mut FlowTuple) -> Option<L4> {
    let l4 = match ethertype {
        ETH_P_IP => parse_ipv4(src, offset, flow)?,
        ETH_P_IPV6 => parse_ipv6(src, offset, flow)?,
        _ => return None,
    };
    if !l4.later_fragment {
        read_ports(src, l4.offset, flow);
    }
    Some(l4)
}

#[inline(always)]
fn parse_ipv4<S: PacketSource>(src: &S, offset: usize, flow: &mut FlowTuple) -> Option<L4> {
    let ver_ihl: u8 = src.read(offset)?;
    if ver_ihl >> 4 != 4 {
        return None;
    }
    let ihl = ((ver_ihl & 0x0f) as usize) * 4;
    if ihl < 20 {
        return None;
    }
    let frag: u16 = u16::from_be(src.read::<u16>(offset + 6)?);
    let protocol: u8 = src.read(offset + 9)?;
    let saddr: [u8; 4] = src.read(offset + 12)?;
    let daddr: [u8; 4] = src.read(offset + 16)?;
    flow.family = FAMILY_IPV4;
    flow.protocol = protocol;
    flow.saddr[..4].copy_from_slice(&saddr);
    flow.daddr[..4].copy_from_slice(&daddr);
    Some(L4 { offset: offset + ihl, later_fragment: frag & 0x1fff != 0 })
}

#[inline(always)]
fn parse_ipv6<S: PacketSource>(src: &S, offset: usize, flow: &mut FlowTuple) -> Option<L4> {
    let ver: u8 = src.read(offset)?;
    if ver >> 4 != 6 {
        return None;
    }
    let mut next: u8 = src.read(offset + 6)?;
    flow.saddr = src.read(offset + 8)?;
    flow.daddr = src.read(offset + 24)?;
    let mut l4 = offset + 40;
    let mut later_fragment = false;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match next {
            // Hop-by-hop, routing, destination options: length in 8-byte units, not counting the first 8.
            0 | 43 | 60 => {
                let hdr: [u8; 2] = src.read(l4)?;
                next = hdr[0];
                l4 += (hdr[1] as usize + 1) * 8;
            }
            // Fragment header: 8 bytes; only the first fragment carries the transport header.
            44 => {
                let hdr: [u8; 4] = src.read(l4)?;
                next = hdr[0];
                let frag_offset = u16::from_be_bytes([hdr[2], hdr[3]]) >> 3;
                later_fragment = frag_offset != 0;
                l4 += 8;
                if later_fragment {
                    break;
                }
            }
            // Authentication header: length in 4-byte units, minus 2.
            51 => {
                let hdr: [u8; 2] = src.read(l4)?;
                next = hdr[0];
                l4 += (hdr[1] as usize + 2) * 4;
            }
            _ => break,
        }
    }
    flow.family = FAMILY_IPV6;
    flow.protocol = next;
    Some(L4 { offset: l4, later_fragment })
}

#[inline(always)]
fn read_ports<S: PacketSource>(src: &S, offset: usize, flow: &mut FlowTuple) {
    if flow.protocol == PROTO_TCP || flow.protocol == PROTO_UDP {
        if let Some(ports) = src.read::<[u8; 4]>(offset) {
            flow.sport = u16::from_be_bytes([ports[0], ports[1]]);
            flow.dport = u16::from_be_bytes([ports[2], ports[3]]);
        }
    }
}
