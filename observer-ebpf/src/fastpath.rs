//! The per-packet fast path: most packets are TCP segments without SYN or RST, which no hook
//! reports. They are recognised with direct packet access (two bounds checks, no helper calls)
//! and leave before any parsing; everything else (and anything not in the linear area) takes
//! the full, helper-based path.

use aya_ebpf::programs::sk_buff::SkBuff;
use observer_common::event::{PROTO_TCP, TCP_RST, TCP_SYN};

use crate::packet::{ETH_HLEN, ETH_P_IP};

/// Whether the packet is certainly a TCP segment (first fragment or unfragmented) with neither
/// SYN nor RST. `false` means "look closer", never "skip".
#[inline(always)]
pub fn ordinary_tcp_segment(skb: &SkBuff, ethertype: u16) -> bool {
    // SAFETY: reading the context's data pointers; the verifier turns them into packet pointers.
    let (data, end) = unsafe { ((*skb.skb).data as usize, (*skb.skb).data_end as usize) };
    let Some(l3) = network_offset(data, end, ethertype) else { return false };
    let tcp = if ethertype == ETH_P_IP {
        if data + l3 + 20 > end {
            return false;
        }
        let ip = data + l3;
        // SAFETY: ip..ip+20 was bounds-checked above.
        let (ver_ihl, frag_hi, frag_lo, protocol) = unsafe {
            (*(ip as *const u8), *((ip + 6) as *const u8), *((ip + 7) as *const u8), *((ip + 9) as *const u8))
        };
        // A later fragment has no TCP header: the full path skips it as well.
        if protocol != PROTO_TCP || (u16::from(frag_hi & 0x1f) << 8 | u16::from(frag_lo)) != 0 {
            return false;
        }
        let ihl = ((ver_ihl & 0x0f) as usize) * 4;
        if ihl < 20 {
            return false;
        }
        l3 + ihl
    } else {
        if data + l3 + 40 > end {
            return false;
        }
        // SAFETY: the 40-byte IPv6 header was bounds-checked above.
        let next_header = unsafe { *((data + l3 + 6) as *const u8) };
        // Extension headers: the full path walks them.
        if next_header != PROTO_TCP {
            return false;
        }
        l3 + 40
    };
    // The whole 20-byte TCP header (a one-byte check compiles to a form the verifier does not
    // learn a range from).
    let tcp = data + tcp;
    if tcp + 20 > end {
        return false;
    }
    // SAFETY: tcp..tcp+20 was bounds-checked just above.
    let flags = unsafe { *((tcp + 13) as *const u8) };
    flags & (TCP_SYN | TCP_RST) == 0
}

/// The IP header's offset in the linear data: after an Ethernet header on L2 devices, 0 on
/// L3 devices and at cgroup hooks (same rule as the full path's `network_offset`).
#[inline(always)]
fn network_offset(data: usize, end: usize, ethertype: u16) -> Option<usize> {
    let want_version = if ethertype == ETH_P_IP { 4 } else { 6 };
    // Windows of 20 bytes: a one-byte check compiles to a form the verifier learns nothing from.
    if data + ETH_HLEN + 20 <= end {
        // SAFETY: data..data+15 was bounds-checked above.
        let (hi, lo, version) =
            unsafe { (*((data + 12) as *const u8), *((data + 13) as *const u8), *((data + ETH_HLEN) as *const u8)) };
        if u16::from_be_bytes([hi, lo]) == ethertype && version >> 4 == want_version {
            return Some(ETH_HLEN);
        }
    }
    if data + 20 > end {
        return None;
    }
    // SAFETY: bounds-checked above.
    let version = unsafe { *(data as *const u8) };
    (version >> 4 == want_version).then_some(0)
}
