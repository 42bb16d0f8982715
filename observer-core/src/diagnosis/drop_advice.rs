//! What to say about a packet the kernel freed when no netfilter rule was identified for it:
//! the drop reason's meaning decides the words. Only a `NETFILTER_DROP` is "a netfilter rule";
//! rp_filter is routing, a socket filter, an XFRM policy, a tc or cgroup program or an LSM is
//! a policy of its own kind, with its own place to look.

use std::net::IpAddr;

use crate::model::{DropClass, PolicyKind};

use super::Evidence;

/// The "where" of a remediation for a drop of class `class` without an identified rule: what
/// dropped it, where, and how to find or fix it. `client` is the connection's source address
/// (the address the reverse-path filter checks a route back to).
pub(super) fn unattributed(class: DropClass, evidence: &Evidence, client: IpAddr, node: &str) -> String {
    let reason = evidence.drop_reason.as_deref().unwrap_or("?");
    let netns = evidence.netns.unwrap_or(0);
    let iface = evidence.interface.as_deref();
    let on = iface.map_or_else(String::new, |i| format!(" on {i}"));
    match class {
        DropClass::Netfilter => format!(
            "netfilter on node {node} drops it ({reason} in netns {netns}) and no rule of the rulesets read was identified: find the rule with `iptables-save`/`nft list ruleset` there; if no rule matches, netfilter itself may drop it: a full conntrack table (`conntrack -S`: insert_failed/drop rising, `nf_conntrack: table full` in dmesg; raise net.netfilter.nf_conntrack_max), an NFQUEUE rule whose queue has no listener, or a table family observer does not read (arp, bridge, netdev)"
        ),
        DropClass::ReversePath => {
            let iface_name = iface.unwrap_or("the incoming interface");
            let sysctl = iface.map_or_else(|| "all".to_string(), |i| i.replace('.', "/"));
            format!(
                "the reverse-path filter (rp_filter) on node {node} drops it{on} (IP_RPFILTER in netns {netns}): the route back to the source {client} does not leave through {iface_name}, so there is no firewall rule to find. Fix the route to {client} (a stale or asymmetric route, e.g. an old /32 left on another link: `ip route get {client}`), or set loose mode: net.ipv4.conf.{sysctl}.rp_filter=2 (the kernel uses the higher of conf/all and the interface's value)"
            )
        }
        DropClass::Policy => policy(DropClass::policy_kind(reason), reason, iface, &on, netns, node),
        DropClass::NoRoute => format!("no route on node {node} ({reason} in netns {netns}): check `ip route` there"),
        DropClass::Neighbour => format!(
            "neighbour resolution failed on node {node}{on} ({reason} in netns {netns}): nothing answered ARP/neighbour discovery for the next hop"
        ),
        DropClass::NoSocket => format!("no socket listens there ({reason} in netns {netns})"),
        DropClass::Other => format!(
            "the kernel on node {node} dropped it{on} ({reason} at {} in netns {netns}); this reason is no firewall verdict: look up its meaning (include/net/dropreason-core.h)",
            evidence.location.as_deref().unwrap_or("?")
        ),
    }
}

/// The words for a non-netfilter policy drop.
fn policy(kind: Option<PolicyKind>, reason: &str, iface: Option<&str>, on: &str, netns: u32, node: &str) -> String {
    let dev = iface.unwrap_or("DEV");
    match kind {
        Some(PolicyKind::SocketFilter) => format!(
            "a BPF socket filter on the receiving socket drops it ({reason} in netns {netns} on node {node}): the application or an agent attached SO_ATTACH_FILTER/SO_ATTACH_BPF to it (`ss -0 -b`, `bpftool prog`), not a firewall rule"
        ),
        Some(PolicyKind::Xfrm) => format!(
            "an IPsec (XFRM) policy drops it ({reason} in netns {netns} on node {node}): check `ip xfrm policy` and `ip xfrm state` there (a CNI's encryption, e.g. Calico/Cilium IPsec, without a matching state)"
        ),
        Some(PolicyKind::CgroupBpf) => format!(
            "a cgroup BPF egress program drops it ({reason} in netns {netns} on node {node}): list them with `bpftool cgroup tree` (a CNI's or a security agent's socket policy)"
        ),
        Some(PolicyKind::Tc) => {
            let dir = if reason.contains("EGRESS") { "egress" } else { "ingress" };
            format!(
                "a tc BPF program or action{on} ({dir}) drops it ({reason} in netns {netns} on node {node}): an eBPF CNI's policy (e.g. Cilium) or a tc filter; list them with `tc filter show dev {dev} {dir}` and `bpftool net` there, and fix the policy that program enforces"
            )
        }
        Some(PolicyKind::TcError) => format!(
            "tc could not classify the packet{on} ({reason} in netns {netns} on node {node}): a broken tc configuration (a goto to a missing chain, a reclassify loop); check `tc filter show dev {dev}` there"
        ),
        Some(PolicyKind::Lsm) => format!(
            "a Linux security module hook drops it ({reason} in netns {netns} on node {node}): SELinux/AppArmor network labels or a BPF LSM program; check the audit log there"
        ),
        Some(PolicyKind::Other) | None => format!(
            "a non-netfilter policy drops it ({reason} in netns {netns} on node {node}); look up this reason's meaning (include/net/dropreason-core.h)"
        ),
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    fn evidence(reason: &str, iface: &str) -> Evidence {
        Evidence {
            drop_reason: Some(reason.into()),
            location: Some("ip_rcv_finish_core+0x1a0".into()),
            netns: Some(4026533735),
            interface: Some(iface.into()),
            attempts: 1,
            connections: 1,
            ..Evidence::default()
        }
    }

    fn said(reason: &str, iface: &str) -> String {
        let client: IpAddr = "10.244.1.10".parse().expect("ip");
        unattributed(DropClass::of_name(reason), &evidence(reason, iface), client, "node-a")
    }

    #[test]
    fn only_netfilter_is_a_netfilter_rule_and_it_names_the_non_rule_causes() {
        let nf = said("NETFILTER_DROP", "eth0");
        for needle in ["iptables-save", "conntrack -S", "insert_failed", "NFQUEUE", "table family"] {
            assert!(nf.contains(needle), "{needle}: {nf}");
        }
        for reason in ["IP_RPFILTER", "SOCKET_FILTER", "XFRM_POLICY", "BPF_CGROUP_EGRESS", "TC_INGRESS", "QDISC_DROP"] {
            let text = said(reason, "eth0");
            assert!(!text.contains("netfilter rule") && !text.contains("iptables"), "{reason}: {text}");
            assert!(text.contains(reason), "{reason}: {text}");
        }
    }

    #[test]
    fn rp_filter_names_the_interface_the_route_back_and_loose_mode() {
        let text = said("IP_RPFILTER", "eth0");
        assert!(text.contains("reverse-path filter (rp_filter) on node node-a drops it on eth0"), "{text}");
        assert!(text.contains("route back to the source 10.244.1.10 does not leave through eth0"), "{text}");
        assert!(text.contains("net.ipv4.conf.eth0.rp_filter=2"), "{text}");
        assert!(text.contains("ip route get 10.244.1.10"), "{text}");
        // A VLAN's sysctl path uses '/' for its dot.
        assert!(said("IP_RPFILTER", "eth0.100").contains("net.ipv4.conf.eth0/100.rp_filter=2"));
    }

    #[test]
    fn each_policy_kind_says_where_to_look() {
        assert!(said("SOCKET_FILTER", "eth0").contains("SO_ATTACH_FILTER"));
        assert!(said("XFRM_POLICY", "eth0").contains("ip xfrm policy"));
        assert!(said("BPF_CGROUP_EGRESS", "eth0").contains("bpftool cgroup tree"));
        let tc = said("TC_EGRESS", "lxc12");
        assert!(tc.contains("tc filter show dev lxc12 egress"), "{tc}");
        assert!(said("TC_CHAIN_NOTFOUND", "eth0").contains("missing chain"));
        assert!(said("SECURITY_HOOK", "eth0").contains("security module"));
    }
}
