//! observer's eBPF programs. Every program returns "continue": the observer never changes a
//! packet's fate.
#![no_std]
#![no_main]

mod cgroup_skb;
mod connect;
mod counters;
mod emit;
mod encap;
mod fastpath;
mod filter;
mod flow_state;
mod handshake;
mod kfree_skb;
mod klog;
mod kmem;
mod maps;
mod packet;
mod sockops;
mod tc;
mod tcp_events;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// GPL-compatible licence: `bpf_probe_read_kernel` is a GPL-only helper.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
