//! From wire values (observer-common) to the model's types: the only place that knows both.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use observer_common::event::{
    Encap, FlowTuple, FAMILY_IPV4, FAMILY_IPV6, HOOK_CGROUP_EGRESS, HOOK_CGROUP_INGRESS, HOOK_TC_EGRESS, TUNNEL_GENEVE,
    TUNNEL_IP6IP, TUNNEL_IPIP, TUNNEL_VXLAN,
};

use super::model::{Encapsulation, Flow, Hook, Protocol, TunnelKind};

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

/// The encapsulation of a wire record; `None` when not encapsulated (or an unknown kind or
/// outer family: a newer kernel side).
pub fn encap(e: &Encap) -> Option<Encapsulation> {
    let tunnel = match e.kind {
        TUNNEL_VXLAN => TunnelKind::Vxlan,
        TUNNEL_GENEVE => TunnelKind::Geneve,
        TUNNEL_IPIP => TunnelKind::Ipip,
        TUNNEL_IP6IP => TunnelKind::Ip6InIp,
        _ => return None,
    };
    let (outer_src, outer_dst) = match e.outer_family {
        FAMILY_IPV4 => {
            let v4 = |a: &[u8; 16]| IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]));
            (v4(&e.outer_saddr), v4(&e.outer_daddr))
        }
        FAMILY_IPV6 => (IpAddr::V6(Ipv6Addr::from(e.outer_saddr)), IpAddr::V6(Ipv6Addr::from(e.outer_daddr))),
        _ => return None,
    };
    let udp = matches!(tunnel, TunnelKind::Vxlan | TunnelKind::Geneve);
    Some(Encapsulation {
        tunnel,
        outer_src,
        outer_dst,
        vni: udp.then_some(e.vni),
        udp_port: udp.then_some(e.outer_dport),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_a_vxlan_encapsulation_and_ignores_none_and_unknown_kinds() {
        let mut e =
            Encap { kind: TUNNEL_VXLAN, outer_family: FAMILY_IPV4, vni: 1, outer_dport: 8472, ..Encap::default() };
        e.outer_saddr[..4].copy_from_slice(&[172, 31, 1, 2]);
        e.outer_daddr[..4].copy_from_slice(&[172, 31, 2, 2]);
        let named = encap(&e).expect("vxlan");
        assert_eq!(named.tunnel, TunnelKind::Vxlan);
        assert_eq!(
            (named.outer_src.to_string(), named.outer_dst.to_string()),
            ("172.31.1.2".into(), "172.31.2.2".into())
        );
        assert_eq!((named.vni, named.udp_port), (Some(1), Some(8472)));
        assert_eq!(named.to_string(), "vxlan 172.31.1.2 -> 172.31.2.2 udp/8472 vni 1");
        let ipip = encap(&Encap { kind: TUNNEL_IPIP, ..e }).expect("ipip");
        assert_eq!((ipip.tunnel, ipip.vni, ipip.udp_port), (TunnelKind::Ipip, None, None));
        assert_eq!(encap(&Encap::default()), None);
        assert_eq!(encap(&Encap { kind: 99, ..e }), None);
        assert_eq!(encap(&Encap { outer_family: 0, ..e }), None);
    }
}
