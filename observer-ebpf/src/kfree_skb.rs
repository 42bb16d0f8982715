//! `skb:kfree_skb` (as a BTF tracepoint): every packet the kernel frees with a drop reason.
//! The packet's headers are read from the skb through offsets userspace resolved from BTF.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use observer_common::{
    counters,
    event::{DropEvent, Encap, FlowTuple, EVENT_KIND_DROP},
};

use crate::{
    counters::bump,
    emit::{reserve, submit},
    filter::{active, capture_limit, wanted},
    kmem::{opaque, read_at, read_ptr, skb_capture, skb_flow_encap, skb_netns, sock_netns},
    maps::{offset, ENCAP_SCRATCH, ENCAP_SLOT_DROP},
};

/// `trace_kfree_skb(struct sk_buff *skb, void *location, enum skb_drop_reason reason)` (5.17+).
#[btf_tracepoint(function = "kfree_skb")]
pub fn observer_kfree_skb(ctx: BtfTracePointContext) -> u32 {
    let skb: *const u8 = ctx.arg(0);
    let location: u64 = ctx.arg(1);
    let reason: u32 = ctx.arg(2);
    on_drop(skb, location, reason, core::ptr::null());
    0
}

/// The same with the tracepoint's fourth argument, `struct sock *rx_sk` (Linux 6.11+, "net:
/// add rx_sk to trace_kfree_skb", include/trace/events/skb.h): the receiving socket of a packet dropped
/// in the socket layer, where the skb has neither device (TCP clears `skb->dev` before socket
/// processing) nor socket, so the drop's namespace is the socket's. The verifier refuses the
/// fourth argument on older kernels; userspace then loads [`observer_kfree_skb`].
#[btf_tracepoint(function = "kfree_skb")]
pub fn observer_kfree_skb_rx_sk(ctx: BtfTracePointContext) -> u32 {
    let skb: *const u8 = ctx.arg(0);
    let location: u64 = ctx.arg(1);
    let reason: u32 = ctx.arg(2);
    let rx_sk: *const u8 = ctx.arg(3);
    on_drop(skb, location, reason, rx_sk);
    0
}

#[inline(always)]
fn on_drop(skb: *const u8, location: u64, reason: u32, rx_sk: *const u8) {
    if offset!(valid) == 0 || reason == offset!(reason_consumed) || skb.is_null() {
        return;
    }
    bump(counters::DROPS_SEEN);
    // Parse first (on the stack) so the filter can decide before the ring buffer is touched;
    // a drop whose headers cannot be read is only reported when no filter is set.
    // An outer packet (dropped on the underlay side) is reported with its inner (pod) flow.
    // The tunnel's description lives in this program's per-CPU scratch slot (stack is short).
    let Some(scratch) = ENCAP_SCRATCH.get_ptr_mut(ENCAP_SLOT_DROP) else { return };
    // SAFETY: this CPU's slot for the drop tracepoint, which does not nest on a CPU (tracing
    // programs' recursion protection); reset for this run.
    let encap = unsafe { &mut *scratch };
    *encap = Encap::default();
    let mut flow = FlowTuple::default();
    let headers = skb_flow_encap(skb, &mut flow, encap).map(|h| opaque(h as u32) as usize);
    let parsed = headers.is_some();
    if (parsed && !wanted(&flow)) || (!parsed && active()) {
        return;
    }
    let Some(mut entry) = reserve::<DropEvent>(EVENT_KIND_DROP) else {
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `reserve` initialised the slot; we own it until submit.
    let event = unsafe { &mut *event };
    event.reason = reason;
    event.location = location;
    let dev = read_ptr(skb, offset!(skb_dev));
    if !dev.is_null() {
        event.ifindex = read_at::<i32>(dev, offset!(dev_ifindex)).unwrap_or(0) as u32;
    }
    event.netns_ino = match skb_netns(skb) {
        0 if !rx_sk.is_null() => sock_netns(rx_sk),
        netns => netns,
    };
    if let Some(headers) = headers {
        event.flow = flow;
        event.flow_valid = 1;
        event.encap = *encap;
        event.packet_len = skb_capture(skb, &mut event.packet, capture_limit(headers));
    } else {
        bump(counters::DROP_PARSE_ERRORS);
    }
    submit(entry, counters::DROP_EVENTS);
}
