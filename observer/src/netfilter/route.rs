//! Which hooks and interfaces a packet meets in a namespace, from that namespace's own routing
//! (rtnetlink in the calling thread's namespace): the drop attribution and `verify` both ask.

use std::{collections::HashMap, io, net::IpAddr};

use crate::loader::netlink::{Link, RouteLookup, RouteSocket};
use observer_core::netfilter::eval::BridgePorts;

pub use observer_core::netfilter::route::Route;

/// An rtnetlink socket in the calling thread's namespace and its interfaces.
pub struct NamespaceRoutes {
    rtnl: RouteSocket,
    links: HashMap<u32, Link>,
    /// bridge-nf-call-iptables / -ip6tables of this namespace (false when br_netfilter is absent).
    bridge_nf: (bool, bool),
    /// Which bridge port each neighbour sits behind: (bridge, address) -> port, from the
    /// neighbour table and the bridges' forwarding databases, read when opened.
    ports: HashMap<(String, IpAddr), String>,
    /// Route lookups answered so far, by destination: remembered for the life of this value (one
    /// attribution job, one `verify` run), like the interfaces read when it was opened. A SYN
    /// flood's drops share two addresses; one `RTM_GETROUTE` each per drop was most of the culprit
    /// worker's CPU.
    lookups: HashMap<IpAddr, Option<RouteLookup>>,
}

impl NamespaceRoutes {
    /// Opens the socket in the calling thread's namespace (and reads its br_netfilter sysctls,
    /// which /proc/sys/net shows for the calling thread's namespace).
    pub fn here() -> io::Result<Self> {
        let mut rtnl = RouteSocket::open()?;
        let links: HashMap<u32, Link> = rtnl.links()?.into_iter().map(|l| (l.index, l)).collect();
        let sysctl =
            |name: &str| std::fs::read_to_string(format!("/proc/sys/net/bridge/{name}")).is_ok_and(|v| v.trim() == "1");
        let bridge_nf = (sysctl("bridge-nf-call-iptables"), sysctl("bridge-nf-call-ip6tables"));
        let has_bridge = links.values().any(|l| l.kind.as_deref() == Some("bridge"));
        let ports = if has_bridge && (bridge_nf.0 || bridge_nf.1) { bridge_ports() } else { HashMap::new() };
        Ok(Self { rtnl, links, bridge_nf, ports, lookups: HashMap::new() })
    }

    /// The route to `dst` (None: no route, or the lookup failed; a failure is not remembered).
    fn lookup(&mut self, dst: IpAddr) -> Option<RouteLookup> {
        if let Some(known) = self.lookups.get(&dst) {
            return *known;
        }
        let answer = self.rtnl.route_get(dst).ok()?;
        self.lookups.insert(dst, answer);
        answer
    }

    /// `input_ifindex`: the device the packet was seen on (`skb->dev` of a drop), when known;
    /// `from_here`: the packet starts in this namespace whatever its source address (an SNAT
    /// source such as 169.254.7.127). Interfaces otherwise come from route lookups.
    pub fn route(&mut self, src: IpAddr, dst: IpAddr, input_ifindex: Option<u32>, from_here: bool) -> Route {
        let to_dst = self.lookup(dst);
        let to_src = self.lookup(src);
        let src_local = from_here || to_src.is_some_and(|r| r.local);
        // A multicast packet received here (neighbour solicitation, ...) is delivered locally.
        let dst_local = to_dst.is_some_and(|r| r.local) || (!src_local && dst.is_multicast());
        let input = if src_local { None } else { input_ifindex.filter(|i| *i != 0).or(to_src.and_then(|r| r.oif)) };
        let output = if dst_local { None } else { to_dst.and_then(|r| r.oif) };
        let link = |index: Option<u32>| index.and_then(|i| self.links.get(&i));
        let name = |index: Option<u32>| link(index).map(|l| l.name.clone());
        let hw_type = |index: Option<u32>| link(index).map(|l| l.hw_type);
        let rpf_ok = match (input, to_src.and_then(|r| r.oif)) {
            (Some(input), Some(back)) => {
                // A port of a bridge receives for the bridge: the route back names the bridge.
                let master = link(Some(input)).and_then(|l| l.master);
                Some(back == input || Some(back) == master)
            }
            (Some(_), None) => Some(false),
            _ => None,
        };
        let nf_call = if dst.is_ipv6() { self.bridge_nf.1 } else { self.bridge_nf.0 };
        // A packet between two hosts of one bridge is bridged, not routed: the input device
        // is then a port of the bridge the route to the destination leaves through.
        let bridged = match (input, output) {
            (Some(input), Some(output)) if nf_call => {
                let port = link(Some(input)).filter(|l| l.master == Some(output));
                let via_bridge =
                    input == output && link(Some(output)).is_some_and(|l| l.kind.as_deref() == Some("bridge"));
                (port.is_some() || via_bridge).then(|| {
                    let bridge = name(Some(output)).unwrap_or_default();
                    let out_port = self.ports.get(&(bridge.clone(), dst)).cloned();
                    // Without the device the packet came in on, the port the source sits behind.
                    let in_port =
                        port.map(|l| l.name.clone()).or_else(|| self.ports.get(&(bridge.clone(), src)).cloned());
                    BridgePorts { in_port, out_port, bridge }
                })
            }
            _ => None,
        };
        match bridged {
            Some(ports) => Route {
                src_local,
                dst_local,
                iif: Some(ports.bridge.clone()),
                oif: Some(ports.bridge.clone()),
                iif_type: hw_type(output),
                oif_type: hw_type(output),
                rpf_ok,
                bridged: Some(ports),
            },
            None => Route {
                src_local,
                dst_local,
                // A routed packet from a bridge port is received by the bridge.
                iif: name(link(input).and_then(|l| l.master).or(input)),
                oif: name(output),
                bridged: None,
                iif_type: hw_type(input),
                oif_type: hw_type(output),
                rpf_ok,
            },
        }
    }
}

/// Which bridge port each neighbour of a bridge sits behind: its MAC (`ip neigh`) looked up in
/// the bridge's forwarding database (`bridge fdb`), in the calling thread's namespace. Empty
/// when the tools are missing; a neighbour whose MAC the bridge has not learnt is absent (the
/// bridge would flood its packets).
fn bridge_ports() -> HashMap<(String, IpAddr), String> {
    let json = |program: &str, args: &[&str]| -> Option<serde_json::Value> {
        let out = std::process::Command::new(program).args(args).stdin(std::process::Stdio::null()).output().ok()?;
        out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
    };
    let text = |v: &serde_json::Value, key: &str| v.get(key).and_then(|x| x.as_str()).map(str::to_ascii_lowercase);
    let mut out = HashMap::new();
    let (Some(neigh), Some(fdb)) = (json("ip", &["-j", "neigh", "show"]), json("bridge", &["-j", "fdb", "show"]))
    else {
        return out;
    };
    let fdb = fdb.as_array().cloned().unwrap_or_default();
    for n in neigh.as_array().into_iter().flatten() {
        let (Some(dev), Some(mac), Some(Ok(ip))) = (
            n.get("dev").and_then(|d| d.as_str()),
            text(n, "lladdr"),
            n.get("dst").and_then(|d| d.as_str()).map(str::parse::<IpAddr>),
        ) else {
            continue;
        };
        let port = fdb.iter().find_map(|e| {
            let of_bridge = e.get("master").and_then(|m| m.as_str()) == Some(dev);
            (of_bridge && text(e, "mac").as_deref() == Some(mac.as_str())).then(|| text(e, "ifname")).flatten()
        });
        if let Some(port) = port {
            out.insert((dev.to_string(), ip), port);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lookup is asked of the kernel once per address and remembered (loopback: local here).
    #[test]
    fn route_lookups_are_remembered() {
        let mut routes = NamespaceRoutes::here().expect("an rtnetlink socket in this namespace");
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let first = routes.route(lo, lo, None, true);
        assert!(first.dst_local && first.src_local, "{first:?}");
        assert_eq!(routes.lookups.len(), 1);
        assert_eq!(routes.lookups.get(&lo).copied().flatten().map(|r| r.local), Some(true));
        // What is remembered is what is answered: a changed entry shows it is not asked again.
        routes.lookups.insert(lo, Some(RouteLookup { local: false, oif: None }));
        assert!(!routes.route(lo, lo, None, false).dst_local);
    }
}
