//! What makes a network namespace behind one of the node's veths a pod's namespace (whose drops
//! are the node's business) rather than the network's (an underlay router, a VM host, the kind
//! node's host side, whose drops are "between nodes").
//!
//! The answer comes from what the namespace holds, never from the node's routes: a node whose
//! uplink carries only specific routes (no default route) must not pull the router behind it
//! into its scope.
//! - With an inventory: the namespace holds an address of a (non host-network) pod, or an
//!   address inside one of the nodes' pod CIDRs (`Node.spec.podCIDRs`).
//! - Without one (or when the inventory names no pod CIDR and none of its addresses): the
//!   fallback. A pod's namespace does not forward packets for others; routers and hosts do
//!   (`net.ipv4.ip_forward` / `net.ipv6.conf.all.forwarding`, read inside the namespace), and
//!   the interface carrying a default route leads to the network, not to a pod. A namespace
//!   with no address yet (a pod being set up) is judged by the fallback too.

use std::{collections::BTreeSet, net::IpAddr};

use crate::inventory::Inventory;
use ipnet::IpNet;

/// What is known about pod addresses (built from the inventory, or empty for the fallback).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodAddresses {
    /// Addresses of pods that have their own network namespace.
    pub ips: BTreeSet<IpAddr>,
    /// The nodes' pod CIDRs.
    pub cidrs: Vec<IpNet>,
}

impl PodAddresses {
    /// Pod addresses and pod CIDRs of `inventory` (host-network pods excluded: their address is
    /// their node's; finished pods too: their address may be anyone's now).
    pub fn from_inventory(inventory: &Inventory) -> Self {
        let ips = inventory
            .pods
            .iter()
            .filter(|p| !p.host_network && !p.finished)
            .flat_map(|p| p.ips.iter().copied())
            .collect();
        Self { ips, cidrs: inventory.pod_cidrs.clone() }
    }

    fn is_pod_address(&self, ip: IpAddr) -> bool {
        self.ips.contains(&ip) || self.cidrs.iter().any(|c| c.contains(&ip))
    }
}

/// What was read about one namespace behind a veth of the node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerNamespace {
    /// Its usable addresses (loopback and link-local excluded).
    pub addresses: Vec<IpAddr>,
    /// IPv4 or IPv6 forwarding is on inside it.
    pub forwards: bool,
    /// The node reaches it through the interface of its default route.
    pub behind_default_route: bool,
}

/// Whether `peer` is a pod's namespace (see the module header for the rules).
pub fn is_pod_namespace(known: &PodAddresses, peer: &PeerNamespace) -> bool {
    if peer.addresses.iter().any(|ip| known.is_pod_address(*ip)) {
        return true;
    }
    if !known.cidrs.is_empty() && !peer.addresses.is_empty() {
        // The inventory knows where pods live, and this namespace holds none of it.
        return false;
    }
    !peer.forwards && !peer.behind_default_route
}

/// Usable addresses: neither loopback nor link-local.
pub fn usable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !a.is_loopback() && !a.is_link_local(),
        IpAddr::V6(a) => !a.is_loopback() && !a.is_unicast_link_local(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn known(cidrs: &[&str], ips: &[&str]) -> PodAddresses {
        PodAddresses {
            ips: ips.iter().map(|s| ip(s)).collect(),
            cidrs: cidrs.iter().map(|s| s.parse().expect("cidr")).collect(),
        }
    }

    fn peer(addresses: &[&str], forwards: bool, behind_default_route: bool) -> PeerNamespace {
        PeerNamespace { addresses: addresses.iter().map(|s| ip(s)).collect(), forwards, behind_default_route }
    }

    #[test]
    fn a_router_behind_an_uplink_without_default_route_is_not_a_pod() {
        let inv = known(&["10.244.1.0/24", "10.244.2.0/24"], &["10.244.1.10"]);
        // The uplink carries only a specific route: not behind the default route, and yet the
        // router is the network.
        assert!(!is_pod_namespace(&inv, &peer(&["172.31.1.1"], true, false)));
        assert!(!is_pod_namespace(&inv, &peer(&["172.31.1.1"], false, false)), "addresses decide, not forwarding");
        assert!(is_pod_namespace(&inv, &peer(&["10.244.1.10"], false, false)));
        // A pod the inventory does not list yet, inside the node's pod CIDR.
        assert!(is_pod_namespace(&inv, &peer(&["10.244.1.77"], false, false)));
    }

    #[test]
    fn known_pod_addresses_decide_even_without_cidrs_and_ipv6_counts() {
        let inv = known(&[], &["fd00:10:244:1::10"]);
        assert!(is_pod_namespace(&inv, &peer(&["fd00:10:244:1::10"], true, true)));
        assert!(!is_pod_namespace(&inv, &peer(&["172.31.1.1"], true, false)));
    }

    #[test]
    fn without_an_inventory_forwarding_and_the_default_route_exclude() {
        let none = PodAddresses::default();
        assert!(is_pod_namespace(&none, &peer(&["10.0.0.5"], false, false)));
        assert!(!is_pod_namespace(&none, &peer(&["172.31.1.1"], true, false)), "a router forwards");
        assert!(!is_pod_namespace(&none, &peer(&["172.31.1.1"], false, true)), "the default route's far end");
        // A pod being set up, no address yet.
        assert!(is_pod_namespace(&none, &peer(&[], false, false)));
    }
}
