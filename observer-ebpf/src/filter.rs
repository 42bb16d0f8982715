//! The kernel-side filter (see `observer_common::filter`): decides whether a flow is worth an
//! event before the ring buffer is touched.

use aya_ebpf::maps::lpm_trie::Key;
use observer_common::{
    counters,
    event::{FlowTuple, CAPTURE_BYTES, FAMILY_IPV4},
    filter::{CAPTURE_PACKET, FILTER_CIDRS, FILTER_EITHER, FILTER_PORTS},
};

use crate::{
    counters::bump,
    maps::{FILTER_CONFIG, WATCHED_PORTS, WATCHED_V4, WATCHED_V6},
};

/// Whether the filter is active at all (`flags != 0`).
#[inline(always)]
pub fn active() -> bool {
    FILTER_CONFIG.get(0).is_some_and(|c| c.flags & (FILTER_PORTS | FILTER_CIDRS) != 0)
}

/// How many packet bytes an event may carry, given that the first `headers` are headers:
/// those only, unless userspace asked for the packet (`CAPTURE_PACKET`, for --pcap).
#[inline(always)]
pub fn capture_limit(headers: usize) -> usize {
    if FILTER_CONFIG.get(0).is_some_and(|c| c.capture == CAPTURE_PACKET) || headers > CAPTURE_BYTES {
        CAPTURE_BYTES
    } else {
        headers
    }
}

/// Whether `flow` passes the configured filter; a rejected flow is counted.
#[inline(always)]
pub fn wanted(flow: &FlowTuple) -> bool {
    let flags = FILTER_CONFIG.get(0).map_or(0, |c| c.flags);
    let (by_port, by_cidr) = (flags & FILTER_PORTS != 0, flags & FILTER_CIDRS != 0);
    if !by_port && !by_cidr {
        return true;
    }
    let port_ok = || port_watched(flow.sport) || port_watched(flow.dport);
    let cidr_ok = || addr_watched(flow, &flow.saddr) || addr_watched(flow, &flow.daddr);
    let pass = if by_port && by_cidr && flags & FILTER_EITHER != 0 {
        port_ok() || cidr_ok()
    } else {
        (!by_port || port_ok()) && (!by_cidr || cidr_ok())
    };
    if !pass {
        bump(counters::FILTERED_OUT);
    }
    pass
}

#[inline(always)]
fn port_watched(port: u16) -> bool {
    port != 0 && WATCHED_PORTS.get_ptr(port).is_some()
}

#[inline(always)]
fn addr_watched(flow: &FlowTuple, addr: &[u8; 16]) -> bool {
    if flow.family == FAMILY_IPV4 {
        WATCHED_V4.get(Key::new(32, [addr[0], addr[1], addr[2], addr[3]])).is_some()
    } else {
        WATCHED_V6.get(Key::new(128, *addr)).is_some()
    }
}
