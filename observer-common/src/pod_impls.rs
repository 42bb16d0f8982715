//! `aya::Pod` for the types userspace writes into maps or globals.

// SAFETY: plain `#[repr(C)]` structs of integers with explicit padding; every bit pattern is valid.
unsafe impl aya::Pod for crate::KernelOffsets {}

// SAFETY: as above.
unsafe impl aya::Pod for crate::filter::FilterConfig {}
