//! TC classifiers (tcx ingress/egress) on the watched namespace's interfaces: report TCP SYN,
//! SYN-ACK and RST packets. Always `TC_ACT_PIPE`: the packet continues unchanged.

use aya_ebpf::{macros::classifier, programs::TcContext};
use observer_common::{
    counters,
    event::{
        FlowTuple, PacketEvent, EVENT_KIND_PACKET, HOOK_TC_EGRESS, HOOK_TC_INGRESS, PROTO_TCP,
        TCP_RST, TCP_SYN,
    },
};

use crate::{
    counters::bump,
    emit::{reserve, submit},
    packet::{parse_ip, PacketSource, ETH_HLEN, ETH_P_IP, ETH_P_IPV6},
};

/// Let the packet continue through the rest of the pipeline (tcx "next").
const TC_ACT_PIPE: i32 = 3;

struct SkbBytes<'a>(&'a TcContext);

impl PacketSource for SkbBytes<'_> {
    #[inline(always)]
    fn read<T: Copy>(&self, offset: usize) -> Option<T> {
        self.0.load::<T>(offset).ok()
    }
}

#[classifier]
pub fn observer_tc_ingress(ctx: TcContext) -> i32 {
    observe(&ctx, HOOK_TC_INGRESS);
    TC_ACT_PIPE
}

#[classifier]
pub fn observer_tc_egress(ctx: TcContext) -> i32 {
    observe(&ctx, HOOK_TC_EGRESS);
    TC_ACT_PIPE
}

#[inline(always)]
fn observe(ctx: &TcContext, hook: u8) {
    bump(counters::TC_PACKETS);
    let ethertype = u16::from_be(ctx.skb.protocol() as u16);
    if ethertype != ETH_P_IP && ethertype != ETH_P_IPV6 {
        return;
    }
    let src = SkbBytes(ctx);
    let mut flow = FlowTuple::default();
    let Some(l4) = network_offset(&src, ethertype).and_then(|l3| parse_ip(&src, l3, ethertype, &mut flow)) else {
        bump(counters::TC_PARSE_ERRORS);
        return;
    };
    if flow.protocol != PROTO_TCP || l4.later_fragment {
        return;
    }
    // Bytes 4..8: sequence number; byte 13: flags.
    let (Some(seq), Some(flags)) = (src.read::<[u8; 4]>(l4.offset + 4), src.read::<u8>(l4.offset + 13)) else {
        bump(counters::TC_PARSE_ERRORS);
        return;
    };
    if flags & (TCP_SYN | TCP_RST) == 0 {
        return;
    }
    let Some(mut entry) = reserve::<PacketEvent>(EVENT_KIND_PACKET) else {
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `reserve` initialised the slot; we own it until submit.
    unsafe {
        (*event).flow = flow;
        // SAFETY: the context pointer is valid for the program's run.
        (*event).ifindex = (*ctx.skb.skb).ifindex;
        (*event).hook = hook;
        (*event).tcp_flags = flags;
        (*event).tcp_seq = u32::from_be_bytes(seq);
    }
    submit(entry, counters::TC_EVENTS);
}

/// Where the IP header starts: after an Ethernet header on L2 devices, at 0 on L3 devices
/// (tun, wireguard), told apart by whether bytes 12..14 repeat the skb's ethertype and the
/// version nibble then agrees.
#[inline(always)]
fn network_offset(src: &SkbBytes<'_>, ethertype: u16) -> Option<usize> {
    let want_version = if ethertype == ETH_P_IP { 4 } else { 6 };
    if let Some(eth_type) = src.read::<u16>(12) {
        if u16::from_be(eth_type) == ethertype {
            let version: u8 = src.read(ETH_HLEN)?;
            if version >> 4 == want_version {
                return Some(ETH_HLEN);
            }
        }
    }
    let version: u8 = src.read(0)?;
    (version >> 4 == want_version).then_some(0)
}
