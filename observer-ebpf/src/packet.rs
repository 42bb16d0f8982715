//! Defensive IPv4/IPv6 + TCP/UDP header parsing shared by the TC classifiers and the drop
//! tracepoint. Every read is bounds-checked twice: by the source against the packet's real data
//! (`bpf_skb_load_bytes` against `skb->len`; the drop tracepoint against the skb's linear end,
//! `tail`), and by the IP header's own length (IPv4 total length, IPv6 payload length), so
//! Ethernet padding or stale buffer bytes are never taken for a header. A TCP/UDP packet whose
//! ports cannot be read this way has no flow: the parse fails (and the caller counts it).

use observer_common::event::{FlowTuple, FAMILY_IPV4, FAMILY_IPV6, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_HLEN: usize = 14;

/// Most IPv6 extension headers walked before giving up (bounded loop).
const MAX_IPV6_EXT_HEADERS: usize = 8;

/// Something packet bytes can be read from at an offset.
pub trait PacketSource {
    fn read<T: Copy>(&self, offset: usize) -> Option<T>;
}

/// Reads of `src` that must end at or before `end` (an IP packet's own length).
pub struct Within<'a, S> {
    pub src: &'a S,
    pub end: usize,
}

impl<S: PacketSource> PacketSource for Within<'_, S> {
    #[inline(always)]
    fn read<T: Copy>(&self, offset: usize) -> Option<T> {
        if offset + core::mem::size_of::<T>() > self.end {
            return None;
        }
        self.src.read(offset)
    }
}

/// Where the transport header starts, whether the packet is a non-first fragment (which
/// carries no transport header), and where the IP packet ends by its own header (`usize::MAX`
/// when the header does not say: IPv4 BIG TCP's zero total length, IPv6 jumbograms).
#[derive(Clone, Copy)]
pub struct L4 {
    pub offset: usize,
    pub later_fragment: bool,
    pub end: usize,
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
        read_ports(&Within { src, end: l4.end }, l4.offset, flow)?;
    }
    Some(l4)
}

/// The end of an IP packet that says its length is `len` bytes from `start` (0: unsaid).
#[inline(always)]
fn packet_end(start: usize, len: u16) -> usize {
    if len == 0 {
        usize::MAX
    } else {
        start + len as usize
    }
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
    let total: u16 = u16::from_be(src.read::<u16>(offset + 2)?);
    if total != 0 && (total as usize) < ihl {
        return None;
    }
    let frag: u16 = u16::from_be(src.read::<u16>(offset + 6)?);
    let protocol: u8 = src.read(offset + 9)?;
    let saddr: [u8; 4] = src.read(offset + 12)?;
    let daddr: [u8; 4] = src.read(offset + 16)?;
    // The options must be there too: a header cut inside them is no header.
    src.read::<u8>(offset + ihl - 1)?;
    flow.family = FAMILY_IPV4;
    flow.protocol = protocol;
    flow.saddr[..4].copy_from_slice(&saddr);
    flow.daddr[..4].copy_from_slice(&daddr);
    Some(L4 { offset: offset + ihl, later_fragment: frag & 0x1fff != 0, end: packet_end(offset, total) })
}

#[inline(always)]
fn parse_ipv6<S: PacketSource>(src: &S, offset: usize, flow: &mut FlowTuple) -> Option<L4> {
    let ver: u8 = src.read(offset)?;
    if ver >> 4 != 6 {
        return None;
    }
    let payload: u16 = u16::from_be(src.read::<u16>(offset + 4)?);
    let mut next: u8 = src.read(offset + 6)?;
    flow.saddr = src.read(offset + 8)?;
    flow.daddr = src.read(offset + 24)?;
    let end = packet_end(offset + 40, payload);
    let src = &Within { src, end };
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
    if !later_fragment && matches!(next, 0 | 43 | 44 | 51 | 60) && crate::klog::gate(crate::klog::SITE_IPV6_EXT_LIMIT) {
        // Still an extension header after the bounded walk: the transport header is not reached.
        aya_log_ebpf::warn!(
            &(),
            "IPv6 extension header walk limit ({}) reached (next header {}): the packet's ports are not read",
            MAX_IPV6_EXT_HEADERS,
            next
        );
    }
    flow.family = FAMILY_IPV6;
    flow.protocol = next;
    Some(L4 { offset: l4, later_fragment, end })
}

/// TCP/UDP ports; `None` when they lie beyond the packet (truncated: no flow to report).
#[inline(always)]
fn read_ports<S: PacketSource>(src: &S, offset: usize, flow: &mut FlowTuple) -> Option<()> {
    if flow.protocol == PROTO_TCP || flow.protocol == PROTO_UDP {
        let ports = src.read::<[u8; 4]>(offset)?;
        flow.sport = u16::from_be_bytes([ports[0], ports[1]]);
        flow.dport = u16::from_be_bytes([ports[2], ports[3]]);
    }
    Some(())
}

/// ICMPv6 neighbour discovery message types (RFC 4861 section 4).
const ND_NEIGHBOR_SOLICIT: u8 = 135;
const ND_NEIGHBOR_ADVERT: u8 = 136;
const ND_REDIRECT: u8 = 137;

/// How many bytes from the IP header at `l3` are headers: the IP header (with options or
/// extension headers), the transport header (TCP: its data offset; UDP and ICMP: 8 bytes) and,
/// for ICMP/ICMPv6 errors, the quoted IP header and the 8 bytes after it; for neighbour
/// discovery, the addresses in its fixed part (RFC 4861 4.3-4.5: a solicitation's or an
/// advertisement's target, 24 bytes; a redirect's target and destination, 40 bytes), which name
/// the neighbour the message is about. What follows is payload, copied out of the kernel only
/// when asked (`trace --pcap`).
#[inline(always)]
pub fn headers_len<S: PacketSource>(src: &S, l3: usize, l4: &L4, protocol: u8) -> usize {
    let ip = l4.offset - l3;
    if l4.later_fragment {
        return ip;
    }
    let transport = match protocol {
        PROTO_TCP => match src.read::<u8>(l4.offset + 12) {
            Some(doff) if doff >> 4 >= 5 => ((doff >> 4) as usize) * 4,
            _ => 20,
        },
        PROTO_UDP => 8,
        PROTO_ICMP | PROTO_ICMPV6 => {
            let icmp_type: u8 = src.read(l4.offset).unwrap_or(0);
            let error = if protocol == PROTO_ICMP { matches!(icmp_type, 3 | 4 | 5 | 11 | 12) } else { icmp_type < 128 };
            match (error, src.read::<u8>(l4.offset + 8)) {
                (true, Some(ver_ihl)) if ver_ihl >> 4 == 4 => 8 + ((ver_ihl & 0x0f) as usize) * 4 + 8,
                (true, Some(ver)) if ver >> 4 == 6 => 8 + 40 + 8,
                _ if protocol == PROTO_ICMPV6 && matches!(icmp_type, ND_NEIGHBOR_SOLICIT | ND_NEIGHBOR_ADVERT) => 24,
                _ if protocol == PROTO_ICMPV6 && icmp_type == ND_REDIRECT => 40,
                _ => 8,
            }
        }
        _ => 0,
    };
    ip + transport
}
