//! Following the watched node namespace: interfaces that appear (new pod veths get the
//! classifiers without a restart) and the pod namespaces behind its veths (whose drops are in
//! scope, like the node's own). Which of those namespaces are pods' is decided by
//! [`super::pod_scope`] from what they hold, not from the node's routes.

use std::{
    collections::BTreeMap,
    fs::File,
    os::{fd::AsFd, unix::fs::MetadataExt},
    path::PathBuf,
};

use aya::Ebpf;
use tracing::{debug, warn};

use super::{
    attach::{AttachError, Attached},
    link_sync,
    netlink::RouteSocket,
    netns::{NetnsError, NetnsTarget},
    pod_scope::{is_pod_namespace, usable, PeerNamespace, PodAddresses},
};

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("rtnetlink in network namespace `{netns}`: {source}")]
    Netlink { netns: String, source: std::io::Error },
    #[error(transparent)]
    Attach(#[from] AttachError),
}

/// rtnetlink sockets living in the watched namespace, and the namespaces it is responsible for.
pub struct NodeWatch {
    requests: RouteSocket,
    monitor: RouteSocket,
    /// Inodes of the watched namespace and of the pod namespaces behind its veths, with a path
    /// to enter each.
    scope: BTreeMap<u32, PathBuf>,
    /// Pod addresses and CIDRs known from the inventory (empty: the fallback rules).
    known: PodAddresses,
}

impl NodeWatch {
    pub fn new(netns: &NetnsTarget) -> Result<Self, WatchError> {
        let sockets =
            netns.run_inside(|| Ok::<_, std::io::Error>((RouteSocket::open()?, RouteSocket::link_monitor()?)))?;
        let (requests, monitor) =
            sockets.map_err(|source| WatchError::Netlink { netns: netns.name.clone(), source })?;
        let mut watch = Self { requests, monitor, scope: BTreeMap::new(), known: PodAddresses::default() };
        watch.refresh_scope(netns);
        Ok(watch)
    }

    /// Decides pod namespaces by the inventory's pod addresses and CIDRs from now on, and
    /// recomputes the scope.
    pub fn use_pod_addresses(&mut self, known: PodAddresses, netns: &NetnsTarget) {
        if known != self.known {
            self.known = known;
            self.refresh_scope(netns);
        }
    }

    /// MTUs of the watched namespace's interfaces (name -> bytes), read via rtnetlink; empty
    /// (with a warning) when they cannot be listed.
    pub fn interface_mtus(&mut self) -> std::collections::HashMap<String, u32> {
        match self.requests.links() {
            Ok(links) => links.into_iter().filter_map(|l| l.mtu.map(|m| (l.name, m))).collect(),
            Err(err) => {
                warn!("listing links for their MTUs: {err}; PMTU findings will name no MTU");
                Default::default()
            }
        }
    }

    /// Names of the watched namespace's tunnel devices, by their link kind (rtnetlink
    /// IFLA_INFO_KIND in [`observer_core::model::TUNNEL_LINK_KINDS`]), never by name; empty
    /// (with a warning) when the links cannot be listed.
    pub fn tunnel_interfaces(&mut self) -> std::collections::HashSet<String> {
        match self.requests.links() {
            Ok(links) => links
                .into_iter()
                .filter(|l| l.kind.as_deref().is_some_and(|k| observer_core::model::TUNNEL_LINK_KINDS.contains(&k)))
                .map(|l| l.name)
                .collect(),
            Err(err) => {
                warn!("listing links for their kinds: {err}; tunnel devices will not be named");
                Default::default()
            }
        }
    }

    /// The link monitor's socket, readable when interfaces changed: a caller waiting for events
    /// polls it too, so a new interface is followed at once, not at its next timeout.
    pub fn link_monitor_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.monitor.as_fd()
    }

    /// Whether a drop in namespace `inode` belongs to this node.
    pub fn in_scope(&self, inode: u32) -> bool {
        self.scope.contains_key(&inode)
    }

    pub fn scope(&self) -> &BTreeMap<u32, PathBuf> {
        &self.scope
    }

    /// A path to enter namespace `inode`: the node's, a pod's, or any other of the machine's.
    pub fn path_of(&self, inode: u32) -> Option<PathBuf> {
        self.scope
            .get(&inode)
            .cloned()
            .or_else(|| candidate_namespaces().into_iter().find(|(ino, _)| *ino as u32 == inode).map(|(_, path)| path))
    }

    /// Recomputes the pod namespaces: every namespace on the machine (named ones and those of
    /// running processes) whose id, as the watched namespace sees it, is the peer namespace of
    /// one of its veths, or that holds a macvlan/ipvlan device of one of its devices, and that
    /// [`is_pod_namespace`] judges a pod's by what it holds.
    pub fn refresh_scope(&mut self, netns: &NetnsTarget) {
        let links = match self.requests.links() {
            Ok(links) => links,
            Err(err) => {
                warn!("listing links of `{}`: {err}; drop scope limited to the node namespace", netns.name);
                Vec::new()
            }
        };
        // Only a hint for the fallback (no inventory): what lies behind the default route's
        // interface is the network. With an inventory, addresses decide.
        let uplinks = self.requests.default_route_interfaces().unwrap_or_default();
        let peer_ids: BTreeMap<i32, bool> =
            links.iter().filter_map(|l| l.link_netnsid.map(|id| (id, l))).fold(BTreeMap::new(), |mut ids, (id, l)| {
                *ids.entry(id).or_insert(false) |= uplinks.contains(&l.index);
                ids
            });
        let mut scope = BTreeMap::from([(netns.inode as u32, netns.path().to_path_buf())]);
        let candidates = candidate_namespaces();
        if !peer_ids.is_empty() {
            for (inode, path) in candidates.clone() {
                if inode == netns.inode {
                    continue;
                }
                let Ok(file) = File::open(&path) else { continue };
                let behind_default_route = match self.requests.nsid_of(file.as_fd()) {
                    Ok(Some(id)) => match peer_ids.get(&id) {
                        Some(behind) => *behind,
                        None => continue,
                    },
                    Ok(None) => continue,
                    Err(err) => {
                        debug!(path = %path.display(), "nsid: {err}");
                        continue;
                    }
                };
                let Some(mut peer) = read_peer(&path) else { continue };
                peer.behind_default_route = behind_default_route;
                if is_pod_namespace(&self.known, &peer) {
                    scope.insert(inode as u32, path);
                } else {
                    debug!(path = %path.display(), addresses = ?peer.addresses, "behind a veth, not a pod namespace");
                }
            }
        }
        // Pods whose interface is a macvlan/ipvlan child of one of the node's devices: no veth
        // leads to them, their links point back at the node.
        let node_indices: Vec<u32> = links.iter().map(|l| l.index).collect();
        if let Ok(node_file) = File::open(netns.path()) {
            for (inode, path) in candidates {
                if inode == netns.inode || scope.contains_key(&(inode as u32)) {
                    continue;
                }
                if !hangs_off(&path, &node_file, &node_indices) {
                    continue;
                }
                let Some(peer) = read_peer(&path) else { continue };
                if is_pod_namespace(&self.known, &peer) {
                    scope.insert(inode as u32, path);
                }
            }
        }
        if scope != self.scope {
            debug!(namespaces = ?scope.keys().collect::<Vec<_>>(), "drop scope");
        }
        self.scope = scope;
    }

    /// Applies link changes: new interfaces get the classifiers (entering the namespace on this
    /// thread), deleted ones are detached and leave the name table; the pod-namespace scope is
    /// refreshed. After lost notifications (the monitor overflowed in a burst), the namespace's
    /// links are listed again and compared with what is attached. Returns whether anything changed.
    pub fn follow_changes(
        &mut self,
        ebpf: &mut Ebpf,
        netns: &NetnsTarget,
        attached: &mut Attached,
    ) -> Result<bool, WatchError> {
        let netlink = |source| WatchError::Netlink { netns: netns.name.clone(), source };
        let batch = self.monitor.changes().map_err(netlink)?;
        let changes = if batch.overflowed {
            warn!(netns = %netns.name, "link notifications lost (burst of interface changes); relisting interfaces");
            link_sync::reconcile(&attached.interfaces, &self.requests.links().map_err(netlink)?)
        } else {
            batch.changes
        };
        let changed = link_sync::apply(ebpf, netns, attached, changes)?;
        if changed {
            self.refresh_scope(netns);
        }
        Ok(changed)
    }
}

/// Link kinds whose device hangs off a lower device of another namespace (IFLA_LINK +
/// IFLA_LINK_NETNSID name it): macvlan/ipvlan pods (the CNI plugins of those names, Multus).
const CHILD_LINK_KINDS: [&str; 4] = ["macvlan", "macvtap", "ipvlan", "ipvtap"];

/// Whether the namespace at `path` (entered on this thread) has a macvlan/ipvlan device whose
/// lower device is one of `node_indices` in the node's namespace (`node`, an open fd of it).
fn hangs_off(path: &std::path::Path, node: &File, node_indices: &[u32]) -> bool {
    let Ok(target) = NetnsTarget::resolve(path.to_str()) else { return false };
    let found = target.run_inside(|| -> std::io::Result<bool> {
        let mut rtnl = RouteSocket::open()?;
        let links = rtnl.links()?;
        let children: Vec<_> =
            links.iter().filter(|l| l.kind.as_deref().is_some_and(|k| CHILD_LINK_KINDS.contains(&k))).collect();
        if children.is_empty() {
            return Ok(false);
        }
        let Some(node_id) = rtnl.nsid_of(node.as_fd())? else { return Ok(false) };
        Ok(children
            .iter()
            .any(|l| l.link_netnsid == Some(node_id) && l.peer_index.is_some_and(|i| node_indices.contains(&i))))
    });
    match found {
        Ok(Ok(found)) => found,
        Ok(Err(err)) => {
            debug!(path = %path.display(), "links: {err}");
            false
        }
        Err(err) => {
            debug!(path = %path.display(), "{err}");
            false
        }
    }
}

/// Addresses, forwarding, links and gateway routes of the namespace at `path` (entered on this
/// thread), or None when it cannot be read.
fn read_peer(path: &std::path::Path) -> Option<PeerNamespace> {
    let target = NetnsTarget::resolve(path.to_str()).ok()?;
    let read = target.run_inside(|| {
        let routing = RouteSocket::open().and_then(|mut r| {
            let addresses = r.addresses()?;
            let links = r.links()?.iter().filter(|l| is_ethernet_link(l)).count();
            Ok((addresses, links, r.has_specific_gateway_route()?))
        });
        // Net sysctls are those of the reading thread's namespace.
        let on = |key: &str| std::fs::read_to_string(key).is_ok_and(|v| v.trim() != "0");
        let forwards = on("/proc/sys/net/ipv4/ip_forward") || on("/proc/sys/net/ipv6/conf/all/forwarding");
        (routing, forwards)
    });
    match read {
        Ok((Ok((addresses, links, gateway_routes)), forwards)) => Some(PeerNamespace {
            addresses: addresses.into_iter().map(|(_, ip)| ip).filter(|ip| usable(*ip)).collect(),
            forwards,
            links,
            gateway_routes,
            behind_default_route: false,
        }),
        Ok((Err(err), _)) => {
            debug!(path = %path.display(), "addresses, links, routes: {err}");
            None
        }
        Err(err) => {
            debug!(path = %path.display(), "{err}");
            None
        }
    }
}

/// An interface that connects the namespace to a network: Ethernet-like (ARPHRD_ETHER: veth,
/// macvlan, a NIC, a bridge), not a bridge's port (the bridge counts), not a dummy. Loopback and
/// the fallback tunnel devices every namespace gets (tunl0, sit0, gre0...) have other types.
fn is_ethernet_link(link: &super::netlink::Link) -> bool {
    const ARPHRD_ETHER: u16 = 1;
    link.hw_type == ARPHRD_ETHER && link.master.is_none() && link.kind.as_deref() != Some("dummy")
}

/// Network namespaces reachable by path: `/run/netns/*` and `/proc/PID/ns/net`, one per inode.
fn candidate_namespaces() -> BTreeMap<u64, PathBuf> {
    let mut out = BTreeMap::new();
    let named = std::fs::read_dir("/run/netns").into_iter().flatten().flatten().map(|e| e.path());
    let procs = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
        .map(|e| e.path().join("ns/net"));
    for path in named.chain(procs) {
        if let Ok(meta) = std::fs::metadata(&path) {
            out.entry(meta.ino()).or_insert(path);
        }
    }
    out
}
