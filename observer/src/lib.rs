//! observer: eBPF node dataplane observer for Istio service meshes (library side of the CLI).

pub mod agent_exec;
pub mod cli;
pub mod diagnose;
pub mod events;
pub mod kernel;
pub mod live;
pub mod loader;
pub mod netfilter;
pub mod record;
pub mod session;
pub mod sinks;
pub mod stop;
pub mod trace;
pub mod verify;

pub use observer_core::{diagnosis, inventory, json};
