//! cgroup_skb ingress/egress: handshake packets as the sockets of the watched cgroups see them
//! (after the pod's own netfilter on egress, before delivery to the socket on ingress), so a
//! drop between the host veth and the socket can be localized. Always allows the packet.

use aya_ebpf::{macros::cgroup_skb, programs::SkBuffContext};
use observer_common::event::{HOOK_CGROUP_EGRESS, HOOK_CGROUP_INGRESS};

use crate::handshake::observe;

const ALLOW: i32 = 1;

#[cgroup_skb(ingress)]
pub fn observer_cgroup_ingress(ctx: SkBuffContext) -> i32 {
    observe(&ctx.skb, HOOK_CGROUP_INGRESS);
    ALLOW
}

#[cgroup_skb(egress)]
pub fn observer_cgroup_egress(ctx: SkBuffContext) -> i32 {
    observe(&ctx.skb, HOOK_CGROUP_EGRESS);
    ALLOW
}
