//! `aya::Pod` for the types userspace writes into maps or globals.

// SAFETY: plain `#[repr(C)]` structs of integers with explicit padding; every bit pattern is valid.
unsafe impl aya::Pod for crate::KernelOffsets {}

// SAFETY: as above.
unsafe impl aya::Pod for crate::filter::FilterConfig {}

// SAFETY: as above (integers and byte arrays, explicit padding).
unsafe impl aya::Pod for crate::FlowTuple {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::event::FlowState {}
