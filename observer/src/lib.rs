//! observer: eBPF node dataplane observer for Istio service meshes (library side of the CLI).

pub mod agent_exec;
pub mod cli;
pub mod diagnose;
pub mod diagnosis;
pub mod events;
pub mod inventory;
pub mod json;
pub mod kernel;
pub mod loader;
pub mod netfilter;
pub mod session;
pub mod stop;
pub mod trace;
pub mod verify;
