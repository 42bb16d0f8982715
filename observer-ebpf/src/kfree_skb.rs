//! `skb:kfree_skb` (as a BTF tracepoint): every packet the kernel frees with a drop reason.
//! The packet's headers are read from the skb through offsets userspace resolved from BTF.

use aya_ebpf::{helpers::bpf_probe_read_kernel, macros::btf_tracepoint, programs::BtfTracePointContext};
use observer_common::{
    counters,
    event::{DropEvent, FlowTuple, EVENT_KIND_DROP},
};

use crate::{
    counters::bump,
    emit::{reserve, submit},
    filter::{active, wanted},
    maps::offset,
    packet::{parse_ip, PacketSource},
};

/// Reads packet bytes from kernel memory starting at the skb's network header.
struct KernelBytes {
    base: *const u8,
}

impl PacketSource for KernelBytes {
    #[inline(always)]
    fn read<T: Copy>(&self, offset: usize) -> Option<T> {
        // SAFETY: bpf_probe_read_kernel validates the address and fails instead of faulting.
        unsafe { bpf_probe_read_kernel(self.base.wrapping_add(offset).cast::<T>()).ok() }
    }
}

/// `trace_kfree_skb(struct sk_buff *skb, void *location, enum skb_drop_reason reason, ...)`.
#[btf_tracepoint(function = "kfree_skb")]
pub fn observer_kfree_skb(ctx: BtfTracePointContext) -> u32 {
    let skb: *const u8 = ctx.arg(0);
    let location: u64 = ctx.arg(1);
    let reason: u32 = ctx.arg(2);
    on_drop(skb, location, reason);
    0
}

#[inline(always)]
fn on_drop(skb: *const u8, location: u64, reason: u32) {
    if offset!(valid) == 0 || reason == offset!(reason_consumed) || skb.is_null() {
        return;
    }
    bump(counters::DROPS_SEEN);
    // Parse first (on the stack) so the filter can decide before the ring buffer is touched;
    // a drop whose headers cannot be read is only reported when no filter is set.
    let mut flow = FlowTuple::default();
    let parsed = read_headers(skb, &mut flow).is_some();
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
    let dev: *const u8 = read_at(skb, offset!(skb_dev)).unwrap_or(core::ptr::null());
    if !dev.is_null() {
        event.ifindex = read_at::<i32>(dev, offset!(dev_ifindex)).unwrap_or(0) as u32;
        event.netns_ino = netns_inum(dev, offset!(dev_nd_net));
    }
    if event.netns_ino == 0 {
        let sk: *const u8 = read_at(skb, offset!(skb_sk)).unwrap_or(core::ptr::null());
        if !sk.is_null() {
            event.netns_ino = netns_inum(sk, offset!(sk_net));
        }
    }
    if parsed {
        event.flow = flow;
        event.flow_valid = 1;
    } else {
        bump(counters::DROP_PARSE_ERRORS);
    }
    submit(entry, counters::DROP_EVENTS);
}

#[inline(always)]
fn read_headers(skb: *const u8, flow: &mut FlowTuple) -> Option<()> {
    let head: *const u8 = read_at(skb, offset!(skb_head))?;
    let network_header: u16 = read_at(skb, offset!(skb_network_header))?;
    let ethertype = u16::from_be(read_at::<u16>(skb, offset!(skb_protocol))?);
    if head.is_null() || network_header == u16::MAX {
        return None;
    }
    let bytes = KernelBytes { base: head.wrapping_add(network_header as usize) };
    parse_ip(&bytes, 0, ethertype, flow).map(|_| ())
}

/// `obj->...possible_net_t.net->ns.inum`, 0 when any pointer on the way is unreadable.
#[inline(always)]
fn netns_inum(obj: *const u8, net_field: u32) -> u32 {
    let net: *const u8 = read_at(obj, net_field).unwrap_or(core::ptr::null());
    if net.is_null() {
        return 0;
    }
    read_at::<u32>(net, offset!(net_ns_inum)).unwrap_or(0)
}

#[inline(always)]
fn read_at<T: Copy>(base: *const u8, offset: u32) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel validates the address and fails instead of faulting.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize).cast::<T>()).ok() }
}
