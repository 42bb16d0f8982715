//! Per-flow handshake state in the `FLOWS` LRU map: aggregated in the kernel, read by userspace.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use observer_common::event::{FlowState, FlowTuple, TCP_ACK, TCP_RST, TCP_SYN};

use crate::{klog, maps::FLOWS};

/// BPF_NOEXIST: create only (another CPU may have created it meanwhile; then update it).
const BPF_NOEXIST: u64 = 1;
/// -EEXIST: another CPU created the entry first (not a failure).
const EEXIST: i32 = -17;

/// Records a handshake packet of `flow` seen at `hook`.
#[inline(always)]
pub fn record(flow: &FlowTuple, flags: u8, hook: u8) {
    if flags & TCP_SYN != 0 && flags & TCP_ACK == 0 {
        // SAFETY: helper without preconditions.
        let now = unsafe { bpf_ktime_get_ns() };
        if let Some(state) = FLOWS.get_ptr_mut(flow) {
            // SAFETY: a value pointer of the map, valid during the program run.
            unsafe {
                (*state).last_syn_ns = now;
                (*state).syn_packets += 1;
                (*state).syn_hooks |= 1 << (hook & 31);
            }
        } else {
            let state = FlowState {
                first_syn_ns: now,
                last_syn_ns: now,
                syn_packets: 1,
                synack_packets: 0,
                rst_packets: 0,
                syn_hooks: 1 << (hook & 31),
            };
            if let Err(err) = FLOWS.insert(flow, state, BPF_NOEXIST) {
                if err != EEXIST && klog::gate(klog::SITE_FLOW_INSERT) {
                    aya_log_ebpf::warn!(&(), "FLOWS insert failed (error {}): this handshake is not followed", err);
                }
            }
        }
        return;
    }
    // SYN-ACK and RST travel against the SYN: look the flow up reversed (a RST may also come
    // from the client: then the flow itself).
    let reversed = FlowTuple {
        saddr: flow.daddr,
        daddr: flow.saddr,
        sport: flow.dport,
        dport: flow.sport,
        family: flow.family,
        protocol: flow.protocol,
        _pad: [0; 2],
    };
    let state =
        FLOWS.get_ptr_mut(reversed).or_else(|| if flags & TCP_RST != 0 { FLOWS.get_ptr_mut(flow) } else { None });
    if let Some(state) = state {
        // SAFETY: a value pointer of the map, valid during the program run.
        unsafe {
            if flags & TCP_RST != 0 {
                (*state).rst_packets += 1;
            } else {
                (*state).synack_packets += 1;
            }
        }
    }
}
