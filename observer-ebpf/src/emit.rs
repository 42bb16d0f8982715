//! Writing events into the ring buffer, counting the ones that do not fit.
//!
//! Events are built in place inside the reserved ring-buffer slot: the BPF stack is 512 bytes
//! and copies of 80-byte events add up quickly.

use aya_ebpf::maps::ring_buf::RingBufEntry;
use observer_common::{counters, EventHeader, EVENT_VERSION};

use crate::{counters::bump, klog, maps::EVENTS};

/// Header for an event of type `T`, stamped now.
#[inline(always)]
pub fn header<T>(kind: u16) -> EventHeader {
    EventHeader {
        kind,
        version: EVENT_VERSION,
        size: size_of::<T>() as u32,
        // SAFETY: helper without preconditions.
        timestamp_ns: unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() },
    }
}

/// Reserves a zeroed slot for a `T` with its header set; a full buffer is counted, never silent.
#[inline(always)]
pub fn reserve<T: Default + 'static>(kind: u16) -> Option<RingBufEntry<T>> {
    let Some(mut entry) = EVENTS.reserve::<T>(0) else {
        bump(counters::RINGBUF_FULL);
        if klog::gate(klog::SITE_RINGBUF_FULL) {
            aya_log_ebpf::warn!(
                &(),
                "event ring buffer full: an event of kind {} lost (counted in ringbuf_full)",
                kind
            );
        }
        return None;
    };
    let event = entry.write(T::default());
    // SAFETY: every event struct starts with an EventHeader (#[repr(C)], first field).
    unsafe { *(event as *mut T).cast::<EventHeader>() = header::<T>(kind) };
    Some(entry)
}

/// Hands a filled slot to userspace.
#[inline(always)]
pub fn submit<T>(entry: RingBufEntry<T>, sent_counter: u32) {
    entry.submit(0);
    bump(sent_counter);
}
