//! `tcp:tcp_retransmit_skb` and `tcp:tcp_send_reset` (as BTF tracepoints): retransmissions of
//! any connection (not only SYNs: a PMTU blackhole retransmits established segments), and RSTs
//! the local TCP stack sends (with no socket: a closed port, i.e. the application side).
//! Retransmissions carry the skb's payload size, first sequence number and the sender's MSS
//! (offsets from BTF).

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use observer_common::{
    counters,
    event::{FlowTuple, TcpEvent, EVENT_KIND_TCP, TCP_EVENT_RETRANSMIT, TCP_EVENT_SEND_RESET},
};

use crate::{
    emit::{reserve, submit},
    filter::wanted,
    kmem::{read_at, skb_flow, skb_netns, sock_flow, sock_netns},
    maps::offset,
};

/// `trace_tcp_retransmit_skb(const struct sock *sk, const struct sk_buff *skb, int err)`.
#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn observer_tcp_retransmit(ctx: BtfTracePointContext) -> u32 {
    let sk: *const u8 = ctx.arg(0);
    let skb: *const u8 = ctx.arg(1);
    let err: i32 = ctx.arg(2);
    report(TCP_EVENT_RETRANSMIT, sk, skb, err as u32);
    0
}

/// `trace_tcp_send_reset(const struct sock *sk, const struct sk_buff *skb, enum sk_rst_reason)`.
#[btf_tracepoint(function = "tcp_send_reset")]
pub fn observer_tcp_send_reset(ctx: BtfTracePointContext) -> u32 {
    let sk: *const u8 = ctx.arg(0);
    let skb: *const u8 = ctx.arg(1);
    let reason: u32 = ctx.arg(2);
    report(TCP_EVENT_SEND_RESET, sk, skb, reason);
    0
}

#[inline(always)]
fn report(kind: u8, sk: *const u8, skb: *const u8, reason: u32) {
    if offset!(valid) == 0 {
        return;
    }
    let mut flow = FlowTuple::default();
    let mut state = 0u8;
    let has_socket = !sk.is_null();
    let netns_ino = if has_socket {
        match sock_flow(sk, &mut flow) {
            Some(s) => state = s,
            None => return,
        }
        sock_netns(sk)
    } else {
        // No socket (a reset for a closed port): the packet that provoked it, turned around so
        // the flow reads as the reset travels (local -> remote).
        if skb.is_null() || skb_flow(skb, &mut flow).is_none() {
            return;
        }
        core::mem::swap(&mut flow.saddr, &mut flow.daddr);
        core::mem::swap(&mut flow.sport, &mut flow.dport);
        skb_netns(skb)
    };
    if !wanted(&flow) {
        return;
    }
    let Some(mut entry) = reserve::<TcpEvent>(EVENT_KIND_TCP) else {
        return;
    };
    // SAFETY: `reserve` initialised the slot; we own it until submit.
    let event = unsafe { &mut *entry.as_mut_ptr() };
    event.flow = flow;
    event.netns_ino = netns_ino;
    event.kind = kind;
    event.state = state;
    event.has_socket = has_socket as u8;
    event.reason = reason;
    if kind == TCP_EVENT_RETRANSMIT && !skb.is_null() {
        // Segment size, sequence and MSS: a PMTU blackhole retransmits the same large segment.
        let (len_at, seq_at, mss_at) = (offset!(skb_len), offset!(skb_tcp_seq), offset!(tcp_mss_cache));
        if len_at != u32::MAX {
            event.seg_len = read_at::<u32>(skb, len_at).unwrap_or(0);
        }
        if seq_at != u32::MAX {
            event.seq = read_at::<u32>(skb, seq_at).unwrap_or(0);
        }
        if mss_at != u32::MAX && has_socket {
            event.mss = read_at::<u32>(sk, mss_at).unwrap_or(0);
        }
    }
    submit(entry, counters::TCP_EVENTS);
}
