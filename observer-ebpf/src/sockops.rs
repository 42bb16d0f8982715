//! sock_ops on the watched cgroup tree: for each active open, ask the kernel for RTO and state
//! callbacks, then report established connections, retransmission timeouts (a SYN nobody
//! answers) and attempts that die in SYN_SENT. Never changes a socket's behaviour.

use aya_ebpf::{
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, BPF_SOCK_OPS_RTO_CB,
        BPF_SOCK_OPS_RTO_CB_FLAG, BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB,
    },
    helpers::bpf_get_socket_cookie,
    macros::sock_ops,
    programs::SockOpsContext,
};
use observer_common::{
    counters,
    event::{
        FlowTuple, SockOpsEvent, EVENT_KIND_SOCKOPS, FAMILY_IPV4, FAMILY_IPV6, PROTO_TCP, SOCKOPS_ACTIVE_ESTABLISHED,
        SOCKOPS_CONNECTING, SOCKOPS_CONNECT_FAILED, SOCKOPS_PASSIVE_ESTABLISHED, SOCKOPS_RTO, TCP_STATE_CLOSE,
        TCP_STATE_SYN_SENT,
    },
};

use crate::{
    emit::{reserve, submit},
    filter::wanted,
};

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

#[sock_ops]
pub fn observer_sockops(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_TCP_CONNECT_CB => {
            let flags = ctx.cb_flags() | BPF_SOCK_OPS_RTO_CB_FLAG | BPF_SOCK_OPS_STATE_CB_FLAG;
            let _ = ctx.set_cb_flags(flags as i32);
            report(&ctx, SOCKOPS_CONNECTING, 0, 0, 0);
        }
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => report(&ctx, SOCKOPS_ACTIVE_ESTABLISHED, 0, 0, 0),
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => report(&ctx, SOCKOPS_PASSIVE_ESTABLISHED, 0, 0, 0),
        BPF_SOCK_OPS_RTO_CB => report(&ctx, SOCKOPS_RTO, 0, 0, ctx.arg(0)),
        BPF_SOCK_OPS_STATE_CB => {
            let (old, new) = (ctx.arg(0) as u8, ctx.arg(1) as u8);
            if old == TCP_STATE_SYN_SENT && new == TCP_STATE_CLOSE {
                report(&ctx, SOCKOPS_CONNECT_FAILED, old, new, 0);
            }
        }
        _ => {}
    }
    1
}

#[inline(always)]
fn report(ctx: &SockOpsContext, op: u8, old_state: u8, new_state: u8, retransmits: u32) {
    let family = match ctx.family() {
        AF_INET => FAMILY_IPV4,
        AF_INET6 => FAMILY_IPV6,
        _ => return,
    };
    let mut flow = FlowTuple { family, protocol: PROTO_TCP, ..FlowTuple::default() };
    if family == FAMILY_IPV4 {
        // Addresses are stored in network byte order.
        flow.saddr[..4].copy_from_slice(&ctx.local_ip4().to_ne_bytes());
        flow.daddr[..4].copy_from_slice(&ctx.remote_ip4().to_ne_bytes());
    } else {
        // The verifier allows only 4-byte loads of these context fields: read word by word.
        for i in 0..4 {
            // SAFETY: the context pointer is valid for the program's run.
            let (local, remote) = unsafe {
                (
                    core::ptr::read_volatile(&(*ctx.ops).local_ip6[i]),
                    core::ptr::read_volatile(&(*ctx.ops).remote_ip6[i]),
                )
            };
            flow.saddr[i * 4..i * 4 + 4].copy_from_slice(&local.to_ne_bytes());
            flow.daddr[i * 4..i * 4 + 4].copy_from_slice(&remote.to_ne_bytes());
        }
    }
    // local_port is in host order; remote_port holds the network-order port in its upper 16 bits.
    flow.sport = ctx.local_port() as u16;
    flow.dport = u16::from_be((ctx.remote_port() >> 16) as u16);
    if !wanted(&flow) {
        return;
    }
    let Some(mut entry) = reserve::<SockOpsEvent>(EVENT_KIND_SOCKOPS) else {
        return;
    };
    // SAFETY: `reserve` initialised the slot; we own it until submit.
    let event = unsafe { &mut *entry.as_mut_ptr() };
    event.flow = flow;
    // SAFETY: sock_ops context is a valid argument for bpf_get_socket_cookie.
    event.socket_cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
    event.op = op;
    event.old_state = old_state;
    event.new_state = new_state;
    event.retransmits = retransmits;
    submit(entry, counters::SOCKOPS_EVENTS);
}
