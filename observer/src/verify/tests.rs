use std::net::IpAddr;

use super::matrix::{required_flows, SourceKind};
use crate::{diagnosis::Requirement, inventory::Inventory};

const LAB: &str = include_str!("../../tests/fixtures/lab-inventory.json");

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

#[test]
fn the_required_flows_of_a_node_are_those_with_an_end_on_it() {
    let inv = Inventory::from_json(LAB).expect("inventory");
    let node_a = required_flows(&inv, "node-a", &[ip("172.31.1.2"), ip("fd00:172:31:1::2")]);
    let xds: Vec<_> = node_a.iter().filter(|f| f.dst.port == 15012).collect();
    // productpage and reviews (sidecars on node-a) -> istiod (node-b), IPv4 and IPv6.
    assert_eq!(xds.len(), 4, "{xds:#?}");
    let pp = xds.iter().find(|f| f.src.ip == ip("10.244.1.10")).expect("productpage's xDS flow");
    assert_eq!((pp.requirement, pp.dst.ip, pp.dst.istio_port), (Requirement::R5, ip("10.244.2.10"), Some("xds-tls")));
    assert_eq!(pp.dst.service.as_deref(), Some("istio-system/istiod"));
    assert_eq!(pp.src.pod.as_deref(), Some("bookinfo/productpage-v1-7d9f8c6b5-x2k4q"));
    // The webhook and istiod -> API server flows live on node-b only.
    assert!(node_a.iter().all(|f| f.dst.port != 15017 && f.requirement != Requirement::R2));
    let health: Vec<_> = node_a.iter().filter(|f| f.dst.port == 15021).collect();
    assert_eq!(health.len(), 4);
    assert!(health.iter().all(|f| f.src.kind == SourceKind::Node && f.src.ip.is_ipv4() == f.dst.ip.is_ipv4()));
    // Workloads reach the mesh's service endpoints; never themselves.
    assert!(node_a.iter().filter(|f| f.requirement == Requirement::R3).all(|f| f.src.pod != f.dst.pod));
    assert!(node_a.iter().any(|f| f.requirement == Requirement::R3
        && f.src.ip == ip("10.244.1.10")
        && f.dst.ip == ip("10.244.2.11")
        && f.dst.port == 9080));

    let node_b = required_flows(&inv, "node-b", &[ip("172.31.2.2")]);
    let webhook: Vec<_> = node_b.iter().filter(|f| f.dst.port == 15017).collect();
    assert_eq!(webhook.len(), 1, "from the `kubernetes` Service's one (IPv4) endpoint: {webhook:#?}");
    assert_eq!(webhook[0].src.pod.as_deref(), Some("kube-system/kube-apiserver-node-b"));
    let r2: Vec<_> = node_b.iter().filter(|f| f.requirement == Requirement::R2).collect();
    assert!(
        r2.iter().any(|f| f.src.ip == ip("10.244.2.10") && f.dst.ip == ip("10.244.2.20") && f.dst.port == 6443),
        "{r2:#?}"
    );
    // A node the inventory does not know has nothing but its own (node-originated) flows: none here.
    assert!(required_flows(&inv, "node-z", &[]).is_empty());
}
