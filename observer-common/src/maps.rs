//! Names and sizes of the maps shared by the kernel side and userspace.

/// Ring buffer carrying [`crate::event`] records to userspace.
pub const EVENTS_MAP: &str = "EVENTS";
/// Size of the ring buffer in bytes (a power of two, a multiple of the page size).
pub const EVENTS_RINGBUF_BYTES: u32 = 1 << 20;

/// Per-CPU `u64` counters indexed by [`crate::counters`].
pub const COUNTERS_MAP: &str = "COUNTERS";

/// Global holding [`crate::KernelOffsets`].
pub const KERNEL_OFFSETS_GLOBAL: &str = "KERNEL_OFFSETS";

/// LRU hash map: [`crate::FlowTuple`] (SYN direction) -> [`crate::event::FlowState`].
pub const FLOWS_MAP: &str = "FLOWS";
/// Flows tracked at once (least recently used are evicted): ~80 bytes each.
pub const FLOWS_MAX: u32 = 65_536;
