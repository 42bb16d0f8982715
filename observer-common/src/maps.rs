//! Names and sizes of the maps shared by the kernel side and userspace.

/// Ring buffer carrying [`crate::event`] records to userspace.
pub const EVENTS_MAP: &str = "EVENTS";
/// Size of the ring buffer in bytes as compiled in (a power of two, a multiple of the page
/// size); the loader resizes it to [`events_ringbuf_bytes`] for the machine's CPU count.
pub const EVENTS_RINGBUF_BYTES: u32 = 1 << 20;
/// Ring-buffer bytes per possible CPU: every CPU can produce events at once (one shared buffer,
/// so that userspace reads them in order), and the buffer must absorb what they all produce
/// while the reader is descheduled. 2 MiB holds about 20k packet events per CPU.
pub const EVENTS_RINGBUF_BYTES_PER_CPU: u32 = 2 << 20;
/// Most ring-buffer bytes whatever the CPU count (the kernel maps it twice into userspace).
pub const EVENTS_RINGBUF_MAX_BYTES: u32 = 256 << 20;

/// The ring buffer's size for `cpus` possible CPUs: [`EVENTS_RINGBUF_BYTES_PER_CPU`] per CPU,
/// rounded up to a power of two, at least [`EVENTS_RINGBUF_BYTES`] and at most
/// [`EVENTS_RINGBUF_MAX_BYTES`].
pub fn events_ringbuf_bytes(cpus: u32) -> u32 {
    let wanted = u64::from(cpus.max(1)) * u64::from(EVENTS_RINGBUF_BYTES_PER_CPU);
    let bounded = wanted.clamp(u64::from(EVENTS_RINGBUF_BYTES), u64::from(EVENTS_RINGBUF_MAX_BYTES));
    u32::try_from(bounded.next_power_of_two()).unwrap_or(EVENTS_RINGBUF_MAX_BYTES)
}

/// Per-CPU `u64` counters indexed by [`crate::counters`].
pub const COUNTERS_MAP: &str = "COUNTERS";

/// Global holding [`crate::KernelOffsets`].
pub const KERNEL_OFFSETS_GLOBAL: &str = "KERNEL_OFFSETS";

/// LRU hash map: [`crate::FlowTuple`] (SYN direction) -> [`crate::event::FlowState`].
pub const FLOWS_MAP: &str = "FLOWS";
/// Flows tracked at once (least recently used are evicted): ~80 bytes each.
pub const FLOWS_MAX: u32 = 65_536;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_buffer_grows_with_the_cpu_count_in_powers_of_two() {
        assert_eq!(events_ringbuf_bytes(0), 2 << 20);
        assert_eq!(events_ringbuf_bytes(1), 2 << 20);
        assert_eq!(events_ringbuf_bytes(2), 4 << 20);
        assert_eq!(events_ringbuf_bytes(3), 8 << 20);
        assert_eq!(events_ringbuf_bytes(64), 128 << 20);
        assert_eq!(events_ringbuf_bytes(4096), EVENTS_RINGBUF_MAX_BYTES);
    }
}
