//! Wire types shared by observer's eBPF programs and its userspace.
//!
//! Everything here is plain data (`#[repr(C)]`, `Copy`, explicit padding, no `bool`, `Option` or
//! Rust enums), so the kernel side can write it into a ring buffer and userspace can read it back
//! with a length-checked decoder ([`decode`], behind the `user` feature).
#![cfg_attr(not(feature = "user"), no_std)]

pub mod config;
pub mod counters;
pub mod event;
pub mod filter;
pub mod maps;

#[cfg(feature = "user")]
pub mod decode;

#[cfg(feature = "user")]
mod pod_impls;

pub use config::KernelOffsets;
pub use event::{
    ConnectEvent, DropEvent, Encap, EventHeader, FlowTuple, IcmpErrorEvent, PacketEvent, SockOpsEvent, TcpEvent,
    EVENT_KIND_CONNECT, EVENT_KIND_DROP, EVENT_KIND_ICMP_ERROR, EVENT_KIND_PACKET, EVENT_KIND_SOCKOPS, EVENT_KIND_TCP,
    EVENT_VERSION, EVENT_VERSION_V2,
};
