//! Following the watched node namespace: interfaces that appear (new pod veths get the
//! classifiers without a restart) and the pod namespaces behind its veths (whose drops are in
//! scope, like the node's own).

use std::{
    collections::{BTreeMap, BTreeSet},
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
}

impl NodeWatch {
    pub fn new(netns: &NetnsTarget) -> Result<Self, WatchError> {
        let sockets =
            netns.run_inside(|| Ok::<_, std::io::Error>((RouteSocket::open()?, RouteSocket::link_monitor()?)))?;
        let (requests, monitor) =
            sockets.map_err(|source| WatchError::Netlink { netns: netns.name.clone(), source })?;
        let mut watch = Self { requests, monitor, scope: BTreeMap::new() };
        watch.refresh_scope(netns);
        Ok(watch)
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
    /// one of its veths, the uplink's excepted.
    pub fn refresh_scope(&mut self, netns: &NetnsTarget) {
        let links = match self.requests.links() {
            Ok(links) => links,
            Err(err) => {
                warn!("listing links of `{}`: {err}; drop scope limited to the node namespace", netns.name);
                Vec::new()
            }
        };
        // The uplink (the interface of the default route) may be a veth too (a VM, a lab, a
        // kind node): what lies behind it is the network, not this node's pods.
        let uplinks = self.requests.default_route_interfaces().unwrap_or_default();
        let peer_ids: BTreeSet<i32> =
            links.iter().filter(|l| !uplinks.contains(&l.index)).filter_map(|l| l.link_netnsid).collect();
        let mut scope = BTreeMap::from([(netns.inode as u32, netns.path().to_path_buf())]);
        if !peer_ids.is_empty() {
            for (inode, path) in candidate_namespaces() {
                if inode == netns.inode {
                    continue;
                }
                let Ok(file) = File::open(&path) else { continue };
                match self.requests.nsid_of(file.as_fd()) {
                    Ok(Some(id)) if peer_ids.contains(&id) => {
                        scope.insert(inode as u32, path);
                    }
                    Ok(_) => {}
                    Err(err) => debug!(path = %path.display(), "nsid: {err}"),
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
