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
//!   fallback. Forwarding alone says nothing: a new namespace copies IPv4's `conf/all` (and so
//!   `ip_forward`) from the initial namespace (`devinet_init_net`, net/ipv4/devinet.c, unless
//!   `net.core.devconf_inherit_init_net` says otherwise), so on a Kubernetes node every pod has
//!   `ip_forward=1`. A pod has one Ethernet interface (eth0; maybe also a tunnel or dummy) and
//!   a default route back to the node; a router forwards *and* has several links or routes to
//!   specific prefixes via gateways. The interface carrying the node's default route leads to
//!   the network, not to a pod. A namespace with no address yet (a pod being set up) is judged
//!   by the fallback too.

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
    /// Its Ethernet-like links (ARPHRD_ETHER, not loopback, not dummy, not a bridge's port).
    pub links: usize,
    /// Its main table routes a specific prefix via a gateway.
    pub gateway_routes: bool,
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
    let router = peer.forwards && (peer.links > 1 || peer.gateway_routes);
    !router && !peer.behind_default_route
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

    /// A namespace with one link and no specific routes (a pod's shape), forwarding or not.
    fn peer(addresses: &[&str], forwards: bool, behind_default_route: bool) -> PeerNamespace {
        PeerNamespace {
            addresses: addresses.iter().map(|s| ip(s)).collect(),
            forwards,
            behind_default_route,
            links: 1,
            gateway_routes: false,
        }
    }

    /// A router's shape: forwarding, with several links or routes via gateways.
    fn router(addresses: &[&str], links: usize, gateway_routes: bool) -> PeerNamespace {
        PeerNamespace { links, gateway_routes, ..peer(addresses, true, false) }
    }

    #[test]
    fn a_router_behind_an_uplink_without_default_route_is_not_a_pod() {
        let inv = known(&["10.244.1.0/24", "10.244.2.0/24"], &["10.244.1.10"]);
        // The uplink carries only a specific route: not behind the default route, and yet the
        // router is the network.
        assert!(!is_pod_namespace(&inv, &router(&["172.31.1.1"], 3, true)));
        assert!(!is_pod_namespace(&inv, &peer(&["172.31.1.1"], false, false)), "addresses decide, not forwarding");
        assert!(is_pod_namespace(&inv, &peer(&["10.244.1.10"], false, false)));
        // A pod the inventory does not list yet, inside the node's pod CIDR.
        assert!(is_pod_namespace(&inv, &peer(&["10.244.1.77"], false, false)));
    }

    #[test]
    fn known_pod_addresses_decide_even_without_cidrs_and_ipv6_counts() {
        let inv = known(&[], &["fd00:10:244:1::10"]);
        assert!(is_pod_namespace(&inv, &peer(&["fd00:10:244:1::10"], true, true)));
        assert!(!is_pod_namespace(&inv, &router(&["172.31.1.1"], 2, true)));
    }

    #[test]
    fn without_an_inventory_a_router_and_the_default_route_exclude() {
        let none = PodAddresses::default();
        assert!(is_pod_namespace(&none, &peer(&["10.0.0.5"], false, false)));
        assert!(!is_pod_namespace(&none, &router(&["172.31.1.1"], 2, false)), "a router has several links");
        assert!(!is_pod_namespace(&none, &router(&["172.31.1.1"], 1, true)), "or routes to other prefixes");
        assert!(!is_pod_namespace(&none, &peer(&["172.31.1.1"], false, true)), "the default route's far end");
        // A pod being set up, no address yet.
        assert!(is_pod_namespace(&none, &peer(&[], false, false)));
    }

    #[test]
    fn pods_of_a_forwarding_node_inherit_ip_forward_and_stay_pods() {
        // review5 4b: the node has ip_forward=1, so every pod namespace has it too.
        let none = PodAddresses::default();
        assert!(is_pod_namespace(&none, &peer(&["10.244.1.11"], true, false)));
        // A pod with several links that does not forward (Multus' net1) is a pod too.
        assert!(is_pod_namespace(&none, &PeerNamespace { links: 2, ..peer(&["10.244.1.12"], false, false) }));
    }
}
