//! Kernel events as userspace sees them: decoded from the ring buffer and turned into
//! [`model::Observation`]s that name interfaces, drop reasons and kernel symbols.

pub mod cgroups;
pub mod clock;
pub mod counters;
pub mod flows;
pub mod namer;
pub mod quote;
pub mod ringbuf;
pub mod wire;

pub use observer_core::model;
