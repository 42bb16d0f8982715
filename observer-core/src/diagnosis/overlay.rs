//! Findings over an overlay: when the packet a node dropped was the outer packet of a tunnel
//! (VXLAN, Geneve, IP-in-IP) carrying a pod's connection, the overlay's transport itself was
//! blocked: every pod connection between those nodes through that tunnel is lost, not one
//! port (the classic "firewalld blocks 8472" report). Say so, with the tunnel and the rule.

use crate::{
    model::{Encapsulation, TunnelKind},
    netfilter::{Confidence, Culprit},
};

use super::Endpoint;

/// The transport a tunnel needs between the nodes, as a firewall names it (`UDP 8472`,
/// `IP protocol 4`).
pub fn transport(e: &Encapsulation) -> String {
    match (e.tunnel, e.udp_port) {
        (TunnelKind::Vxlan | TunnelKind::Geneve, Some(port)) => format!("UDP {port}"),
        (TunnelKind::Vxlan | TunnelKind::Geneve, None) => "UDP".to_string(),
        (TunnelKind::Ipip, _) => "IP protocol 4 (IP-in-IP)".to_string(),
        (TunnelKind::Ip6InIp, _) => "IP protocol 41 (IPv6-in-IP)".to_string(),
    }
}

/// The remediation of a connection whose tunnel packets were dropped on `node`.
pub fn remediation(e: &Encapsulation, dst: &Endpoint, culprit: Option<&Culprit>, node: &str) -> String {
    let target = dst
        .service
        .clone()
        .or_else(|| dst.pod.clone())
        .unwrap_or_else(|| dst.ip.map(|i| i.to_string()).unwrap_or_default());
    let port = dst.port.unwrap_or(0);
    let transport = transport(e);
    let rule = match culprit.filter(|c| c.confidence != Confidence::NotIdentified) {
        Some(c) => format!("on node {node} a rule drops it: {}", c.summary()),
        None => format!(
            "a rule on node {node} drops it: find it with `iptables-save`/`nft list ruleset` there (look for {transport})"
        ),
    };
    format!(
        "The overlay's transport is blocked: {} {transport} from {} to {} (carrying TCP {port} to {target}) is dropped, {rule}. \
         Every pod connection between these nodes through the tunnel is lost: allow {transport} between the nodes' \
         addresses in the host/cloud firewall (firewalld: `--add-port` for it, or trust the nodes' subnet).",
        e.tunnel.as_str(),
        e.outer_src,
        e.outer_dst,
    )
}

/// The advice for large packets lost over a tunnel: they left this node as outer packets too
/// large for a hop of the underlay beyond it, and neither its fragmentation-needed nor the
/// fragments came through.
pub fn pmtu_advice(t: &super::TunnelMtuEvidence, packet: &str, mtus: &str, node: &str) -> String {
    let device = match (&t.device, t.mtu) {
        (Some(d), Some(m)) => format!("tunnel device {d} (MTU {m})"),
        (Some(d), None) => format!("tunnel device {d}"),
        _ => "the tunnel".to_string(),
    };
    let outer = t.outer_packet_bytes.map_or_else(String::new, |o| format!(" as {o}-byte outer packets"));
    format!(
        "{packet} packets cross {device} and leave node {node}{outer} ({} {} -> {}, {} bytes of encapsulation), and are lost beyond node {node} on the underlay towards {}: a hop there has a smaller MTU and neither its ICMP fragmentation-needed nor the fragments come through (MTUs on this node's path: {mtus}). Set the tunnel MTU to the underlay path's MTU minus {} (the CNI's MTU setting), or let ICMP type 3 code 4 and IP fragments through the underlay",
        t.tunnel.as_str(),
        t.outer_src,
        t.outer_dst,
        t.overhead,
        t.outer_dst,
        t.overhead,
    )
}

/// What to add when unanswered SYNs left this node through a tunnel: where they went.
pub fn silent_advice(e: &Encapsulation, node: &str) -> String {
    format!(
        "The SYNs left node {node} encapsulated ({} {} -> {}, {}): check the underlay between the nodes for {} (cloud firewall, security group) and the node at {}.",
        e.tunnel.as_str(),
        e.outer_src,
        e.outer_dst,
        transport(e),
        transport(e),
        e.outer_dst
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_tunnel_transport_and_the_nodes() {
        let e = Encapsulation {
            tunnel: TunnelKind::Vxlan,
            outer_src: "172.31.1.2".parse().expect("ip"),
            outer_dst: "172.31.2.2".parse().expect("ip"),
            vni: Some(1),
            udp_port: Some(8472),
        };
        assert_eq!(transport(&e), "UDP 8472");
        assert_eq!(
            transport(&Encapsulation { tunnel: TunnelKind::Ipip, udp_port: None, vni: None, ..e }),
            "IP protocol 4 (IP-in-IP)"
        );
        let dst = Endpoint { pod: Some("bookinfo/details".into()), port: Some(9080), ..Endpoint::default() };
        let text = remediation(&e, &dst, None, "node-b");
        assert!(text.contains("vxlan UDP 8472 from 172.31.1.2 to 172.31.2.2"), "{text}");
        assert!(text.contains("TCP 9080 to bookinfo/details") && text.contains("node node-b"), "{text}");
    }
}
