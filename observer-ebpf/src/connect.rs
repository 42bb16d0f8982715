//! cgroup connect4/connect6: every `connect()` of a process in the watched cgroup tree, with
//! the destination the application asked for (before any sidecar REDIRECT or kube-proxy DNAT),
//! the caller's pid, command and cgroup. Always allows the call (returns 1).

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_socket_cookie},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use observer_common::{
    counters,
    event::{ConnectEvent, FlowTuple, EVENT_KIND_CONNECT, FAMILY_IPV4, FAMILY_IPV6},
};

use crate::{
    emit::{reserve, submit},
    filter::wanted,
};

/// Let the connect() proceed.
const ALLOW: i32 = 1;

#[cgroup_sock_addr(connect4)]
pub fn observer_connect4(ctx: SockAddrContext) -> i32 {
    report(&ctx, FAMILY_IPV4);
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn observer_connect6(ctx: SockAddrContext) -> i32 {
    report(&ctx, FAMILY_IPV6);
    ALLOW
}

#[inline(always)]
fn report(ctx: &SockAddrContext, family: u8) {
    let addr = ctx.sock_addr;
    let mut flow = FlowTuple { family, ..FlowTuple::default() };
    // SAFETY: the context pointer is valid for the program's run; fields are read-only here.
    unsafe {
        flow.protocol = (*addr).protocol as u8;
        if family == FAMILY_IPV4 {
            // user_ip4 is in network byte order as stored.
            flow.daddr[..4].copy_from_slice(&(*addr).user_ip4.to_ne_bytes());
        } else {
            // Context fields allow only 4-byte loads: read word by word.
            for i in 0..4 {
                let w = core::ptr::read_volatile(&(*addr).user_ip6[i]);
                flow.daddr[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
        }
        // user_port holds the port in network order in its low 16 bits.
        flow.dport = u16::from_be((*addr).user_port as u16);
    }
    if !wanted(&flow) {
        return;
    }
    let Some(mut entry) = reserve::<ConnectEvent>(EVENT_KIND_CONNECT) else {
        return;
    };
    // SAFETY: `reserve` initialised the slot; we own it until submit.
    let event = unsafe { &mut *entry.as_mut_ptr() };
    event.flow = flow;
    // SAFETY: the context pointer is a valid argument for the helpers.
    unsafe {
        event.socket_cookie = bpf_get_socket_cookie(addr.cast());
        event.cgroup_id = bpf_get_current_cgroup_id();
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    event.pid = (pid_tgid >> 32) as u32;
    event.tid = pid_tgid as u32;
    event.comm = bpf_get_current_comm().unwrap_or_default();
    submit(entry, counters::CONNECT_EVENTS);
}
