//! Facts about the running kernel read in userspace: BTF types (struct offsets, enum names) and
//! kernel symbols.

pub mod btf;
pub mod drop_reasons;
pub mod kallsyms;
pub mod offsets;
