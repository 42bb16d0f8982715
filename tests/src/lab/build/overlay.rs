//! Overlay plumbing between the lab's nodes, built as the CNIs build it: flannel's VXLAN
//! backend, Calico's IPIP mode, and Geneve with one point-to-point device per peer. The router
//! between the nodes then forwards only the outer packets (it has no route to the pod CIDRs).

use super::Lab;
use crate::lab::{
    cgroups::hex_id,
    cmd,
    spec::{NodeSpec, Overlay},
    LabError,
};

/// flannel's VXLAN device name and VNI.
const VXLAN_DEVICE: &str = "flannel.1";
const VNI: &str = "1";
/// Calico's IPIP device (the ipip module's fallback tunnel, which takes every IPIP packet).
const IPIP_DEVICE: &str = "tunl0";

impl Lab {
    /// Builds the tunnel of `node` towards every other node (after all nodes exist).
    pub(super) fn build_overlay(&self, node: &NodeSpec) -> Result<(), LabError> {
        let overlay = self.spec.overlay;
        let ns = self.node_netns(&node.name);
        let mtu = node.underlay_mtu_or_default().saturating_sub(overlay.overhead()).to_string();
        let peers: Vec<&NodeSpec> = self.spec.nodes.iter().filter(|n| n.name != node.name).collect();
        match overlay {
            Overlay::None => Ok(()),
            Overlay::Vxlan => {
                let port = overlay.udp_port().unwrap_or(8472).to_string();
                let mac = self.vtep_mac(node);
                let local = node.uplink_ip.to_string();
                cmd::run(
                    "ip",
                    &[
                        "-n",
                        &ns,
                        "link",
                        "add",
                        VXLAN_DEVICE,
                        "address",
                        &mac,
                        "type",
                        "vxlan",
                        "id",
                        VNI,
                        "local",
                        &local,
                        "dev",
                        "eth0",
                        "dstport",
                        &port,
                        "nolearning",
                    ],
                )?;
                self.tunnel_up(&ns, VXLAN_DEVICE, &mtu, node)?;
                for peer in peers {
                    let peer_mac = self.vtep_mac(peer);
                    let dst = peer.uplink_ip.to_string();
                    cmd::run("bridge", &["-n", &ns, "fdb", "append", &peer_mac, "dev", VXLAN_DEVICE, "dst", &dst])?;
                    self.route_via_peer_vtep(&ns, VXLAN_DEVICE, peer, &peer_mac)?;
                }
                Ok(())
            }
            Overlay::Geneve => {
                let port = overlay.udp_port().unwrap_or(6081).to_string();
                let mac = self.vtep_mac(node);
                for peer in peers {
                    let dev = geneve_device(peer);
                    let remote = peer.uplink_ip.to_string();
                    cmd::run(
                        "ip",
                        &[
                            "-n", &ns, "link", "add", &dev, "address", &mac, "type", "geneve", "id", VNI, "remote",
                            &remote, "dstport", &port,
                        ],
                    )
                    .map_err(|e| unsupported("geneve", "CONFIG_GENEVE", e))?;
                    self.tunnel_up(&ns, &dev, &mtu, node)?;
                    self.route_via_peer_vtep(&ns, &dev, peer, &self.vtep_mac(peer))?;
                }
                Ok(())
            }
            Overlay::Ipip => {
                // The fallback device exists in every namespace once the ipip module is loaded.
                if cmd::run("ip", &["-n", &ns, "link", "show", IPIP_DEVICE]).is_err() {
                    cmd::run("ip", &["-n", &ns, "link", "add", IPIP_DEVICE, "type", "ipip"])
                        .map_err(|e| unsupported("ipip", "CONFIG_NET_IPIP", e))?;
                }
                cmd::run("ip", &["-n", &ns, "link", "set", IPIP_DEVICE, "mtu", &mtu, "up"])?;
                cmd::run("ip", &["-n", &ns, "addr", "add", &format!("{}/32", node.tunnel_ip()), "dev", IPIP_DEVICE])?;
                for peer in peers {
                    cmd::run(
                        "ip",
                        &[
                            "-n",
                            &ns,
                            "route",
                            "add",
                            &peer.pod_cidr_string(),
                            "via",
                            &peer.uplink_ip.to_string(),
                            "dev",
                            IPIP_DEVICE,
                            "onlink",
                        ],
                    )?;
                }
                Ok(())
            }
        }
    }

    /// Sets a VTEP device's MTU, addresses (the pod CIDR's `.0`) and brings it up.
    fn tunnel_up(&self, ns: &str, dev: &str, mtu: &str, node: &NodeSpec) -> Result<(), LabError> {
        cmd::run("ip", &["-n", ns, "link", "set", dev, "mtu", mtu])?;
        // The same address on several per-peer devices (Geneve) is fine: only forwarding uses them.
        let _ = cmd::run("ip", &["-n", ns, "addr", "add", &format!("{}/32", node.tunnel_ip()), "dev", dev]);
        cmd::run("ip", &["-n", ns, "link", "set", dev, "up"])?;
        Ok(())
    }

    /// flannel's per-peer entries: the peer's pod CIDR via its VTEP address (onlink) and a
    /// permanent neighbour entry with its VTEP MAC; the same for the IPv6 pod CIDR.
    fn route_via_peer_vtep(&self, ns: &str, dev: &str, peer: &NodeSpec, peer_mac: &str) -> Result<(), LabError> {
        let gw = peer.tunnel_ip().to_string();
        cmd::run("ip", &["-n", ns, "neigh", "replace", &gw, "lladdr", peer_mac, "dev", dev, "nud", "permanent"])?;
        cmd::run("ip", &["-n", ns, "route", "add", &peer.pod_cidr_string(), "via", &gw, "dev", dev, "onlink"])?;
        if let (Some(gw6), Some((net6, len6))) = (peer.tunnel_ip6(), peer.pod_cidr6) {
            let gw6 = gw6.to_string();
            cmd::run(
                "ip",
                &["-n", ns, "-6", "neigh", "replace", &gw6, "lladdr", peer_mac, "dev", dev, "nud", "permanent"],
            )?;
            cmd::run(
                "ip",
                &["-n", ns, "-6", "route", "add", &format!("{net6}/{len6}"), "via", &gw6, "dev", dev, "onlink"],
            )?;
        }
        Ok(())
    }

    /// A node's VTEP MAC: locally administered, stable for the lab and node.
    fn vtep_mac(&self, node: &NodeSpec) -> String {
        let hex = hex_id(&format!("{}/{}/vtep", self.name, node.name), 10);
        let b = hex.as_bytes();
        let pair = |i: usize| std::str::from_utf8(&b[i..i + 2]).unwrap_or("00").to_string();
        format!("02:{}:{}:{}:{}:{}", pair(0), pair(2), pair(4), pair(6), pair(8))
    }
}

/// The Geneve device towards `peer`.
fn geneve_device(peer: &NodeSpec) -> String {
    format!("gnv-{}", hex_id(&peer.name, 6))
}

/// A tunnel type the running kernel lacks: [`LabError::UnsupportedLink`], naming the option.
fn unsupported(kind: &'static str, config: &'static str, err: LabError) -> LabError {
    match err {
        LabError::Command { stderr, .. } if stderr.contains("Unknown device type") => {
            LabError::UnsupportedLink { kind, config }
        }
        other => other,
    }
}
