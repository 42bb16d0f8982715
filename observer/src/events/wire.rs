//! From wire values (observer-common) to the model's types: the only place that knows both.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use observer_common::event::{
    FlowTuple, FAMILY_IPV4, FAMILY_IPV6, HOOK_CGROUP_EGRESS, HOOK_CGROUP_INGRESS, HOOK_TC_EGRESS,
};

use super::model::{Flow, Hook, Protocol};

/// The flow of a wire tuple; `None` for an unknown address family.
pub fn flow(t: &FlowTuple) -> Option<Flow> {
    let (src, dst) = match t.family {
        FAMILY_IPV4 => {
            let v4 = |a: &[u8; 16]| IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]));
            (v4(&t.saddr), v4(&t.daddr))
        }
        // A dual-stack socket talking IPv4 reports v4-mapped addresses: show them as IPv4.
        FAMILY_IPV6 => (unmap(Ipv6Addr::from(t.saddr)), unmap(Ipv6Addr::from(t.daddr))),
        _ => return None,
    };
    Some(Flow { protocol: Protocol(t.protocol), src, sport: t.sport, dst, dport: t.dport })
}

fn unmap(a: Ipv6Addr) -> IpAddr {
    a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4)
}

/// The hook of a packet or ICMP event (`HOOK_*` wire values).
pub fn hook(hook: u8) -> Hook {
    match hook {
        HOOK_TC_EGRESS => Hook::TcEgress,
        HOOK_CGROUP_INGRESS => Hook::CgroupIngress,
        HOOK_CGROUP_EGRESS => Hook::CgroupEgress,
        _ => Hook::TcIngress,
    }
}
