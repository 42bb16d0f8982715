//! Every map and load-time global of the eBPF side, in one place.
//! Names and sizes come from `observer_common::maps` so userspace finds them by the same names.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use observer_common::{
    counters,
    event::{Encap, FlowState},
    filter::{FilterConfig, MAX_TUNNEL_PORTS, MAX_WATCHED_CIDRS, MAX_WATCHED_PORTS},
    maps::{EVENTS_RINGBUF_BYTES, FLOWS_MAX},
    FlowTuple, KernelOffsets,
};

/// Discrete events to userspace (`observer_common::event`).
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RINGBUF_BYTES, 0);

/// Per-CPU counters indexed by `observer_common::counters`.
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counters::COUNT, 0);

/// Per-flow handshake state, keyed by the flow in the SYN's direction.
#[map(name = "FLOWS")]
pub static FLOWS: LruHashMap<FlowTuple, FlowState> = LruHashMap::with_max_entries(FLOWS_MAX, 0);

/// The filter's mode (`observer_common::filter`); slot 0.
#[map(name = "FILTER_CONFIG")]
pub static FILTER_CONFIG: Array<FilterConfig> = Array::with_max_entries(1, 0);

/// Watched ports (host order).
#[map(name = "WATCHED_PORTS")]
pub static WATCHED_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(MAX_WATCHED_PORTS, 0);

/// UDP ports carrying VXLAN/Geneve (host order) -> `TUNNEL_*` kind.
#[map(name = "TUNNEL_PORTS")]
pub static TUNNEL_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(MAX_TUNNEL_PORTS, 0);

/// Per-CPU scratch for an [`Encap`] (the 512-byte stack has no room for it): slot
/// [`ENCAP_SLOT_TC`] for the TC hooks, [`ENCAP_SLOT_DROP`] for the drop tracepoint (which may
/// run in process context and be interrupted by a TC hook on the same CPU).
#[map(name = "ENCAP_SCRATCH")]
pub static ENCAP_SCRATCH: PerCpuArray<Encap> = PerCpuArray::with_max_entries(2, 0);
pub const ENCAP_SLOT_TC: u32 = 0;
pub const ENCAP_SLOT_DROP: u32 = 1;

/// Watched IPv4 and IPv6 prefixes (addresses in network order).
#[map(name = "WATCHED_V4")]
pub static WATCHED_V4: LpmTrie<[u8; 4], u8> = LpmTrie::with_max_entries(MAX_WATCHED_CIDRS, 0);
#[map(name = "WATCHED_V6")]
pub static WATCHED_V6: LpmTrie<[u8; 16], u8> = LpmTrie::with_max_entries(MAX_WATCHED_CIDRS, 0);

/// Kernel struct offsets resolved from BTF by userspace at load time (`override_global`).
#[unsafe(no_mangle)]
pub static KERNEL_OFFSETS: KernelOffsets = KernelOffsets {
    skb_head: 0,
    skb_network_header: 0,
    skb_transport_header: 0,
    skb_tail: 0,
    skb_protocol: 0,
    skb_dev: 0,
    skb_sk: 0,
    dev_ifindex: 0,
    dev_nd_net: 0,
    sk_net: 0,
    net_ns_inum: 0,
    sk_family: 0,
    sk_state: 0,
    sk_num: 0,
    sk_dport: 0,
    sk_rcv_saddr: 0,
    sk_daddr: 0,
    sk_v6_rcv_saddr: 0,
    sk_v6_daddr: 0,
    reason_consumed: u32::MAX,
    valid: 0,
    skb_len: u32::MAX,
    skb_tcp_seq: u32::MAX,
    tcp_mss_cache: u32::MAX,
};

/// Reads one field of [`KERNEL_OFFSETS`] with a volatile load, so the compiler cannot fold the
/// zero defaults (the loader rewrites the global before the program is loaded).
macro_rules! offset {
    ($field:ident) => {
        // SAFETY: a plain static of integers.
        unsafe { core::ptr::read_volatile(&raw const $crate::maps::KERNEL_OFFSETS.$field) }
    };
}
pub(crate) use offset;
