//! Evaluating a required flow statically along its path through this node: the source pod's
//! namespace (when the source runs here), the node's namespace, and the destination pod's
//! namespace (when it runs here). Each namespace's rulesets are read once.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    path::PathBuf,
};

use serde::Serialize;

use super::matrix::{RequiredFlow, SourceKind};
use crate::{
    inventory::Inventory,
    loader::{netlink::RouteSocket, node_watch::NodeWatch, pod_scope::PodAddresses, NetnsTarget},
    netfilter::{
        culprit::resolve,
        eval::{evaluate, Packet},
        read::{read_here, Snapshot},
        route::NamespaceRoutes,
        Culprit,
    },
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Blocked,
    Unknown,
    Pass,
}

/// The static verdict on one flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StaticVerdict {
    pub status: Status,
    /// The namespace that blocks it (`node`, or `pod NAMESPACE/NAME`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub culprit: Option<Culprit>,
    /// For `unknown`: what could not be decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// The node's namespace, the pod namespaces behind its veths (by pod address), and their
/// rulesets.
pub struct NodePaths {
    node: NetnsTarget,
    pods: BTreeMap<IpAddr, PathBuf>,
    /// The node's own addresses, uplink ones first.
    pub node_ips: Vec<IpAddr>,
    /// Per namespace: its rulesets, read once, and an rtnetlink socket opened inside it (a
    /// socket keeps its namespace, so lookups need no further `setns`).
    namespaces: HashMap<PathBuf, (Snapshot, NamespaceRoutes)>,
}

impl NodePaths {
    /// Finds the node's pod namespaces (by the inventory's pod addresses, see
    /// [`crate::loader::pod_scope`]) and the node's own addresses.
    pub fn discover(node: NetnsTarget, inventory: &Inventory) -> anyhow::Result<Self> {
        let mut watch = NodeWatch::new(&node)?;
        watch.use_pod_addresses(PodAddresses::from_inventory(inventory), &node);
        let mut pods = BTreeMap::new();
        for (inode, path) in watch.scope() {
            if u64::from(*inode) == node.inode {
                continue;
            }
            for ip in addresses_in(path)? {
                pods.insert(ip, path.clone());
            }
        }
        let node_ips = node.run_inside(|| -> std::io::Result<Vec<IpAddr>> {
            let mut rtnl = RouteSocket::open()?;
            let uplinks = rtnl.default_route_interfaces()?;
            let mut all = rtnl.addresses()?;
            all.retain(|(_, ip)| usable(*ip));
            all.sort_by_key(|(index, _)| !uplinks.contains(index));
            Ok(all.into_iter().map(|(_, ip)| ip).collect())
        })??;
        Ok(Self { node, pods, node_ips, namespaces: HashMap::new() })
    }

    /// The addresses of the pods behind this node (however they hang off it).
    pub fn local_pod_ips(&self) -> std::collections::BTreeSet<IpAddr> {
        self.pods.keys().copied().collect()
    }

    /// Whether `ip` is a pod of this node (its namespace is behind one of the node's veths).
    pub fn is_local_pod(&self, ip: IpAddr) -> bool {
        self.pods.contains_key(&ip)
    }

    pub fn pod_netns(&self, ip: IpAddr) -> Option<&PathBuf> {
        self.pods.get(&ip)
    }

    pub fn node(&self) -> &NetnsTarget {
        &self.node
    }

    /// Evaluates the flow in each namespace on its path; the first that blocks decides.
    pub fn check(&mut self, flow: &RequiredFlow) -> anyhow::Result<StaticVerdict> {
        let mut stages: Vec<(String, PathBuf, bool)> = Vec::new();
        if let Some(path) = self.pods.get(&flow.src.ip).filter(|_| flow.src.kind == SourceKind::Pod) {
            stages.push((format!("pod {}", flow.src.pod.as_deref().unwrap_or("?")), path.clone(), false));
        }
        stages.push(("node".to_string(), self.node.path().to_path_buf(), flow.src.kind == SourceKind::Node));
        if let Some(path) = self.pods.get(&flow.dst.ip) {
            stages.push((format!("pod {}", flow.dst.pod.as_deref().unwrap_or("?")), path.clone(), false));
        }
        let mut doubt: Option<String> = None;
        let src_is_local_pod = self.pods.contains_key(&flow.src.ip);
        for (name, path, from_here) in stages.iter().cloned() {
            let Some((snapshot, routes)) = self.namespace(&path)? else { continue };
            let route = routes.route(flow.src.ip, flow.dst.ip, None, from_here);
            // The flow's SYN, from an ephemeral source port (rules rarely match on it).
            let mut packet = Packet::routed(6, flow.src.ip, flow.dst.ip, 40_000, flow.dst.port, Some(0x02), route);
            // Conntrack is per namespace: a Service address is translated on the client's side
            // (its node, or this node for the node itself), once; an endpoint reached directly
            // is translated nowhere.
            let client_side = match flow.src.kind {
                SourceKind::Pod => src_is_local_pod && name == "node",
                SourceKind::Node => from_here,
                SourceKind::External => false,
            };
            packet.dnat = Some(flow.via_service && client_side);
            let evaluation = evaluate(&snapshot.tables, &packet);
            let hooks: Vec<&str> = packet.path().iter().map(|h| h.as_str()).collect();
            // Blocked when the packet is dropped for certain, even if doubts leave open by which rule.
            if evaluation.blocked && doubt.is_none() {
                let culprit = resolve(&snapshot.tables, &evaluation, &|_| None, &hooks.join("/"));
                return Ok(StaticVerdict {
                    status: Status::Blocked,
                    at: Some(name),
                    culprit: Some(culprit),
                    why: None,
                });
            }
            if !evaluation.candidates.is_empty() {
                let culprit = resolve(&snapshot.tables, &evaluation, &|_| None, &hooks.join("/"));
                doubt.get_or_insert_with(|| format!("{name}: {}", culprit.note.unwrap_or_default()));
            }
        }
        if let Some(blocked) = self.reply_blocked(flow, &stages)? {
            return Ok(blocked);
        }
        Ok(match doubt {
            Some(why) => StaticVerdict { status: Status::Unknown, at: None, culprit: None, why: Some(why) },
            None => StaticVerdict { status: Status::Pass, at: None, culprit: None, why: None },
        })
    }

    /// The flow's SYN-ACK, from the destination back through `stages` (reversed), conntrack
    /// ESTABLISHED: `Blocked` when a rule drops it for certain (a rule written for the wrong
    /// direction, a return path filtered by port or flags). Doubts about the reply are not
    /// reported: the SYN's verdict stands unless the reply is certainly dropped.
    fn reply_blocked(
        &mut self,
        flow: &RequiredFlow,
        stages: &[(String, PathBuf, bool)],
    ) -> anyhow::Result<Option<StaticVerdict>> {
        for (name, path, _) in stages.iter().rev() {
            let Some((snapshot, routes)) = self.namespace(path)? else { continue };
            let route = routes.route(flow.dst.ip, flow.src.ip, None, false);
            let mut packet = Packet::routed(6, flow.dst.ip, flow.src.ip, flow.dst.port, 40_000, Some(0x12), route);
            packet.dnat = Some(false);
            let evaluation = evaluate(&snapshot.tables, &packet);
            if evaluation.blocked && evaluation.doubts.is_empty() {
                let hooks: Vec<&str> = packet.path().iter().map(|h| h.as_str()).collect();
                let culprit = resolve(&snapshot.tables, &evaluation, &|_| None, &hooks.join("/"));
                return Ok(Some(StaticVerdict {
                    status: Status::Blocked,
                    at: Some(name.clone()),
                    culprit: Some(culprit),
                    why: Some("the reply (SYN-ACK) is dropped: the handshake cannot complete".into()),
                }));
            }
        }
        Ok(None)
    }

    /// The ruleset and routes of the namespace at `path`, read once.
    fn namespace(&mut self, path: &PathBuf) -> anyhow::Result<Option<&mut (Snapshot, NamespaceRoutes)>> {
        if !self.namespaces.contains_key(path) {
            let target = NetnsTarget::resolve(path.to_str())?;
            let read = target.run_inside(|| NamespaceRoutes::here().map(|routes| (read_here(), routes)))??;
            self.namespaces.insert(path.clone(), read);
        }
        Ok(self.namespaces.get_mut(path))
    }

    /// Problems met reading rulesets (missing tools), once per namespace.
    pub fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self.namespaces.values().flat_map(|(s, _)| s.problems.iter().cloned()).collect();
        out.sort();
        out.dedup();
        out
    }
}

fn usable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !a.is_loopback() && !a.is_link_local(),
        IpAddr::V6(a) => !a.is_loopback() && !a.is_unicast_link_local(),
    }
}

fn addresses_in(path: &std::path::Path) -> anyhow::Result<Vec<IpAddr>> {
    let target = NetnsTarget::resolve(path.to_str())?;
    let found = target.run_inside(|| RouteSocket::open().and_then(|mut r| r.addresses()))??;
    Ok(found.into_iter().map(|(_, ip)| ip).filter(|ip| usable(*ip)).collect())
}
