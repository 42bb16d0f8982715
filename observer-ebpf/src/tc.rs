//! TC classifiers (tcx ingress/egress) on the watched namespace's interfaces. Always
//! `TC_ACT_PIPE`: the packet continues unchanged.

use aya_ebpf::{macros::classifier, programs::TcContext};
use observer_common::event::{HOOK_TC_EGRESS, HOOK_TC_INGRESS};

use crate::handshake::observe;

/// Let the packet continue through the rest of the pipeline (tcx "next").
const TC_ACT_PIPE: i32 = 3;

#[classifier]
pub fn observer_tc_ingress(ctx: TcContext) -> i32 {
    observe(&ctx.skb, HOOK_TC_INGRESS);
    TC_ACT_PIPE
}

#[classifier]
pub fn observer_tc_egress(ctx: TcContext) -> i32 {
    observe(&ctx.skb, HOOK_TC_EGRESS);
    TC_ACT_PIPE
}
