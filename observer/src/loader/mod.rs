//! Loading observer's eBPF programs and attaching them to the kernel.

pub mod attach;
pub mod cgroup;
pub mod filter;
pub mod kernel_log;
pub mod link_sync;
pub mod netlink;
pub mod netns;
pub mod node_watch;
pub mod pod_scope;
pub mod preflight;
pub mod programs;
pub mod tc_orphans;
pub mod tunnel_ports;

pub use netns::NetnsTarget;
pub use programs::load;
