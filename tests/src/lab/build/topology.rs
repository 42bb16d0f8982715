//! The lab's topology variants and the plumbing they need: uplinks without a default route,
//! Calico-style routed pods, istio-cni's ambient probe SNAT, and the helpers' own directory.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use super::{sysctl, Lab};
use crate::lab::{
    cmd::{self, in_netns, in_netns_with_input},
    spec::{NodeSpec, Overlay, PodSpec, UplinkRoutes},
    state::STATE_DIR,
    LabError,
};

/// istio-cni's SNAT address for kubelet's probes of ambient pods (IPv4, IPv6).
const AMBIENT_PROBE_SNAT: &str = "169.254.7.127";
const AMBIENT_PROBE_SNAT6: &str = "fd16:9254:7127:1337:ffff:ffff:ffff:ffff";

/// The gateway of a routed pod (Calico's): link-local, answered by the host veth.
const ROUTED_GATEWAY: &str = "169.254.1.1";
const ROUTED_GATEWAY6: &str = "fe80::1";

impl Lab {
    /// Copies the helper binaries into the lab's own directory, readable and executable by
    /// every uid: the lab runs some as the proxy's uid 1337, which may not be able to reach
    /// them where they were built (a checkout under a 0700 folder such as /root).
    pub(super) fn install_helpers(&mut self) -> Result<(), LabError> {
        let bin = self.state.dir.join("bin");
        std::fs::create_dir_all(&bin).map_err(LabError::io(format!("creating {}", bin.display())))?;
        for dir in [&self.state.dir, &bin] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .map_err(LabError::io(format!("making {} traversable", dir.display())))?;
        }
        let copy = bin.join("lab-pod");
        std::fs::copy(&self.tools.lab_pod, &copy).map_err(LabError::io(format!(
            "copying {} to {}",
            self.tools.lab_pod.display(),
            copy.display()
        )))?;
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
            .map_err(LabError::io(format!("making {} executable", copy.display())))?;
        self.tools.lab_pod = copy;
        Ok(())
    }

    /// What the node's uplink routes via the router: everything (a default route), or only the
    /// other nodes' pod CIDRs and uplink subnets and the control plane's subnet. (IPv4, IPv6)
    /// destinations.
    pub(super) fn uplink_destinations(&self, node: &NodeSpec) -> (Vec<String>, Vec<String>) {
        if node.uplink_routes == UplinkRoutes::Default {
            return (vec!["default".into()], vec!["default".into()]);
        }
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for peer in self.spec.nodes.iter().filter(|n| n.name != node.name) {
            let [a, b, c, _] = peer.uplink_ip.octets();
            // Over an overlay the peers' pod CIDRs are routed through the tunnel instead.
            if self.spec.overlay == Overlay::None {
                v4.push(peer.pod_cidr_string());
            }
            v4.push(format!("{a}.{b}.{c}.0/24"));
            if let (Some((net6, len6)), false) = (peer.pod_cidr6, self.spec.overlay.carries_ipv6()) {
                v6.push(format!("{net6}/{len6}"));
            }
            if let Some(up6) = peer.uplink_ip6 {
                let mut o = up6.octets();
                o[8..].fill(0);
                v6.push(format!("{}/64", std::net::Ipv6Addr::from(o)));
            }
        }
        // The control plane outside the nodes reaches the pods, and they answer it, via the router.
        v4.extend(self.spec.control_plane.as_ref().map(|cp| cp.subnet_string()));
        (v4, v6)
    }

    /// istio-cni's ambient host rules on a node: ipsets of the node's ambient pods and the nat
    /// POSTROUTING SNAT of node-originated TCP to them (kubelet's probes) to the probe address.
    pub(super) fn install_probe_snat(&self, node: &NodeSpec) -> Result<(), LabError> {
        let ns = self.node_netns(&node.name);
        let pods: Vec<PodSpec> = self.spec.pods_on(&node.name).filter(|p| p.ambient).cloned().collect();
        for (set, family, tool, snat, addrs) in [
            (
                "istio-inpod-probes-v4",
                "inet",
                "iptables-restore",
                AMBIENT_PROBE_SNAT,
                pods.iter().map(|p| p.ip.to_string()).collect::<Vec<_>>(),
            ),
            (
                "istio-inpod-probes-v6",
                "inet6",
                "ip6tables-restore",
                AMBIENT_PROBE_SNAT6,
                pods.iter().filter_map(|p| p.ip6).map(|ip| ip.to_string()).collect(),
            ),
        ] {
            in_netns(&ns, "ipset", &["create", set, "hash:ip", "family", family])?;
            for addr in &addrs {
                in_netns(&ns, "ipset", &["add", set, addr])?;
            }
            let rules = format!(
                "*nat\n:ISTIO_POSTRT - [0:0]\n-A POSTROUTING -j ISTIO_POSTRT\n-A ISTIO_POSTRT -m owner --socket-exists -p tcp -m set --match-set {set} dst -j SNAT --to-source {snat}\nCOMMIT\n"
            );
            in_netns_with_input(&ns, tool, &["-w", "--noflush"], &rules)?;
        }
        Ok(())
    }

    /// Calico-style plumbing of one pod: the host veth answers ARP for the pod's link-local
    /// gateway (proxy ARP), the node routes the pod's /32 (/128) to the veth.
    pub(super) fn route_pod(&self, node_ns: &str, ns: &str, host_if: &str, pod: &PodSpec) -> Result<(), LabError> {
        cmd::run("ip", &["-n", node_ns, "link", "set", host_if, "up"])?;
        sysctl(node_ns, &format!("net.ipv4.conf.{host_if}.proxy_arp"), "1")?;
        // Calico answers at once (the kernel's default delays proxy ARP replies up to 0.8 s).
        sysctl(node_ns, &format!("net.ipv4.neigh.{host_if}.proxy_delay"), "0")?;
        cmd::run("ip", &["-n", node_ns, "route", "add", &format!("{}/32", pod.ip), "dev", host_if])?;
        cmd::run("ip", &["-n", ns, "addr", "add", &format!("{}/32", pod.ip), "dev", "eth0"])?;
        cmd::run("ip", &["-n", ns, "link", "set", "eth0", "up"])?;
        cmd::run("ip", &["-n", ns, "route", "add", ROUTED_GATEWAY, "dev", "eth0", "scope", "link"])?;
        cmd::run("ip", &["-n", ns, "route", "add", "default", "via", ROUTED_GATEWAY, "dev", "eth0"])?;
        if let Some(ip6) = pod.ip6 {
            cmd::run("ip", &["-n", node_ns, "addr", "add", &format!("{ROUTED_GATEWAY6}/64"), "dev", host_if, "nodad"])?;
            cmd::run("ip", &["-n", node_ns, "-6", "route", "add", &format!("{ip6}/128"), "dev", host_if])?;
            cmd::run("ip", &["-n", ns, "addr", "add", &format!("{ip6}/128"), "dev", "eth0", "nodad"])?;
            cmd::run("ip", &["-n", ns, "-6", "route", "add", "default", "via", ROUTED_GATEWAY6, "dev", "eth0"])?;
        }
        Ok(())
    }
}

/// The lab's directory: under the temporary directory when every uid can traverse it, else
/// under the lab state directory (root-owned, 0755).
pub(super) fn lab_dir(name: &str) -> PathBuf {
    let tmp = std::env::temp_dir();
    if world_traversable(&tmp) {
        tmp.join(name)
    } else {
        Path::new(STATE_DIR).join(name)
    }
}

/// Whether every directory from `/` down to `path` lets others through (`o+x`).
fn world_traversable(path: &Path) -> bool {
    path.ancestors().all(|dir| std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}
