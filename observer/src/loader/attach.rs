//! Attaching the TC classifiers to every interface of a network namespace, and the drop
//! tracepoint.

use std::collections::BTreeMap;

use aya::{
    programs::{
        tc,
        tc::{NlOptions, SchedClassifierLinkId, TcAttachOptions},
        BtfTracePoint, LinkOrder, ProgramError, SchedClassifier, TcAttachType,
    },
    util::KernelVersion,
    Ebpf,
};
use tracing::{debug, warn};

use super::{
    netlink::{Link, RouteSocket},
    netns::{NetnsError, NetnsTarget},
    programs::{program_mut, KernelInfo, LoadError, TCP_RETRANSMIT, TCP_SEND_RESET, TC_EGRESS, TC_INGRESS},
};

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Load(#[from] Box<LoadError>),
    #[error("listing interfaces of network namespace `{netns}` (rtnetlink): {source}")]
    ListInterfaces { netns: String, source: std::io::Error },
    #[error("no interface to attach to in network namespace `{0}` (only loopback?)")]
    NoInterfaces(String),
    #[error("attaching `{program}` to {iface} in `{netns}`: {source}")]
    Tc { program: &'static str, iface: String, netns: String, source: Box<ProgramError> },
    #[error("attaching the kfree_skb tracepoint: {0}")]
    Tracepoint(Box<ProgramError>),
}

/// The classifier links observer holds on one interface: (program name, link id) pairs, one
/// per direction. Dropping the id without [`detach_interface`] would keep the link (and its
/// fd) alive until exit.
pub type TcLinks = Vec<(&'static str, SchedClassifierLinkId)>;

/// How the classifiers hang off an interface.
///
/// - `Tcx` (kernel >= 6.6): one BPF link per hook, owned by observer's process, so the kernel
///   detaches it when observer exits for any reason (SIGKILL included). Each attach waits for an
///   RCU grace period inside the RTNL lock (kernel/bpf/tcx.c `tcx_prog_attach` ->
///   `synchronize_rcu`): about 14 ms per hook on a loaded VM, serialised across threads, i.e.
///   seconds on a node with hundreds of pod interfaces.
/// - `Netlink`: a `clsact` qdisc with a `cls_bpf` filter per hook (what `tc filter add ... bpf
///   da` makes; the only way before 6.6), about 0.3 ms per interface. A filter is no file: it
///   stays attached when observer is killed (a clean exit removes it); the next start replaces
///   filters of observer's programs that no running process holds. An interface where the
///   netlink attach fails (e.g. an `ingress` qdisc instead of `clsact`) gets tcx links instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TcAttachMode {
    #[default]
    Tcx,
    Netlink,
}

/// What got attached: interface names by ifindex (in the watched namespace).
#[derive(Debug, Default)]
pub struct Attached {
    /// Every interface of the watched namespace but loopback (names for the hooks' and the
    /// drops' ifindex), bridges included.
    pub interfaces: BTreeMap<u32, String>,
    /// The classifier links of the interfaces in `interfaces` that carry classifiers (all but
    /// bridges, see [`carries_classifiers`]), by the same ifindex.
    pub tc_links: BTreeMap<u32, TcLinks>,
    pub drops: bool,
    pub tcp_tracepoints: bool,
    /// How new interfaces are attached (the mode asked for, or `Netlink` before tcx existed).
    pub tc_mode: TcAttachMode,
}

/// Attaches ingress and egress classifiers to every non-loopback interface of `netns`
/// (entering it on this thread only) in `mode` (`Netlink` on kernels without tcx), then the drop
/// tracepoint when it was loaded.
pub fn attach_all(
    ebpf: &mut Ebpf,
    netns: &NetnsTarget,
    loaded: &KernelInfo,
    mode: TcAttachMode,
) -> Result<Attached, AttachError> {
    let tcx_exists = KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
    let tc_mode = if tcx_exists { mode } else { TcAttachMode::Netlink };
    let (interfaces, tc_links) = netns.run_inside(|| attach_tc_here(ebpf, &netns.name, tc_mode))??;
    let drops = loaded.drops_available && {
        let program: &mut BtfTracePoint = program_mut(ebpf, loaded.drop_program).map_err(Box::new)?;
        program.attach().map_err(|e| AttachError::Tracepoint(Box::new(e)))?;
        true
    };
    let mut tcp_tracepoints = loaded.tcp_tracepoints_available;
    if tcp_tracepoints {
        for name in [TCP_RETRANSMIT, TCP_SEND_RESET].into_iter().filter(|name| loaded.has(name)) {
            let program: &mut BtfTracePoint = program_mut(ebpf, name).map_err(Box::new)?;
            if let Err(err) = program.attach() {
                warn!("{name} not attached: {err}; retransmissions and resets will not be reported");
                tcp_tracepoints = false;
            }
        }
    }
    Ok(Attached { interfaces, tc_links, drops, tcp_tracepoints, tc_mode })
}

type Interfaces = (BTreeMap<u32, String>, BTreeMap<u32, TcLinks>);

/// Whether observer's classifiers go on `link`: every interface but loopback and bridges.
///
/// A bridge device's own hooks would see each packet a second time. A frame entering the bridge
/// from a port passes the port's TC ingress first (`__netif_receive_skb_core` runs the ingress
/// hook before the bridge's `rx_handler`, net/core/dev.c), and a frame the bridge sends out of a
/// port passes the port's TC egress (`br_dev_queue_push_xmit` -> `dev_queue_xmit`,
/// net/bridge/br_forward.c); the bridge device's hooks only see the frames between a port and the
/// host's stack, which a port's hooks already saw. Every port is an interface of the same
/// namespace, so it carries the classifiers itself: two program runs per packet saved on
/// bridge-based CNIs (flannel's `cni0`, the bridge plugin, docker0) at no loss of evidence.
pub fn carries_classifiers(link: &Link) -> bool {
    link.name != "lo" && link.kind.as_deref() != Some("bridge")
}

fn attach_tc_here(ebpf: &mut Ebpf, netns: &str, mode: TcAttachMode) -> Result<Interfaces, AttachError> {
    let listed = RouteSocket::open()
        .and_then(|mut socket| socket.links())
        .map_err(|source| AttachError::ListInterfaces { netns: netns.to_string(), source })?;
    let listed: Vec<&Link> = listed.iter().filter(|l| l.name != "lo").collect();
    if listed.is_empty() {
        return Err(AttachError::NoInterfaces(netns.to_string()));
    }
    let mut interfaces = BTreeMap::new();
    let mut links = BTreeMap::new();
    for link in listed {
        interfaces.insert(link.index, link.name.clone());
        if carries_classifiers(link) {
            links.insert(link.index, attach_interface_here(ebpf, &link.name, netns, mode)?);
        } else {
            debug!(iface = %link.name, "bridge: no classifiers of its own (its ports carry them)");
            // A killed observer of another version (or mode) may have left filters on it.
            super::tc_orphans::remove_here(&link.name);
        }
    }
    Ok((interfaces, links))
}

/// Attaches both classifiers to one interface of the current thread's namespace (in `mode`;
/// see [`TcAttachMode`]) and returns their links (none when the interface vanished before the
/// attach: a warning, not an error). On an error, the links made so far are detached again.
pub fn attach_interface_here(
    ebpf: &mut Ebpf,
    name: &str,
    netns: &str,
    mode: TcAttachMode,
) -> Result<TcLinks, AttachError> {
    let tcx_exists = KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
    if mode == TcAttachMode::Netlink || !tcx_exists {
        // The filters hang off a clsact qdisc; it may already exist, and then hold filters a killed
        // observer left behind (their programs held by no process): those are removed. A qdisc
        // just made holds nothing.
        if let Err(err) = tc::qdisc_add_clsact(name) {
            debug!(iface = %name, "clsact: {err}");
            super::tc_orphans::remove_here(name);
        }
        match attach_each(ebpf, name, netns, true) {
            Err(err) if tcx_exists && nix::net::if_::if_nametoindex(name).is_ok() => {
                warn!(iface = %name, "netlink (cls_bpf) attach failed ({err}); using tcx links there");
            }
            other => return other,
        }
    }
    attach_each(ebpf, name, netns, false)
}

/// Attaches ingress, then egress (as `cls_bpf` filters when `netlink`, else tcx links, last in
/// their hook's order); see [`attach_interface_here`].
fn attach_each(ebpf: &mut Ebpf, name: &str, netns: &str, netlink: bool) -> Result<TcLinks, AttachError> {
    let mut links = TcLinks::new();
    for (program, attach_type) in [(TC_INGRESS, TcAttachType::Ingress), (TC_EGRESS, TcAttachType::Egress)] {
        let options = if netlink {
            TcAttachOptions::Netlink(NlOptions::default())
        } else {
            TcAttachOptions::TcxOrder(LinkOrder::default())
        };
        let attached = program_mut::<SchedClassifier>(ebpf, program)
            .map_err(|e| AttachError::Load(Box::new(e)))
            .and_then(|classifier| {
                classifier.attach_with_options(name, attach_type, options).map_err(|source| AttachError::Tc {
                    program,
                    iface: name.to_string(),
                    netns: netns.to_string(),
                    source: Box::new(source),
                })
            });
        match attached {
            Ok(id) => links.push((program, id)),
            Err(err) => {
                detach_interface(ebpf, name, links);
                if nix::net::if_::if_nametoindex(name).is_err() {
                    warn!(iface = %name, "interface disappeared before attach");
                    return Ok(TcLinks::new());
                }
                return Err(err);
            }
        }
    }
    Ok(links)
}

/// Detaches the classifiers of one interface and closes their links (for a vanished interface:
/// its tcx links are defunct, and only closing their fds frees them). Failures (a netlink
/// filter already gone with its interface) are logged at debug level: nothing is left to undo.
pub fn detach_interface(ebpf: &mut Ebpf, name: &str, links: TcLinks) {
    for (program, id) in links {
        match program_mut::<SchedClassifier>(ebpf, program) {
            Ok(classifier) => {
                if let Err(err) = classifier.detach(id) {
                    debug!(iface = %name, program, "detach: {err}");
                }
            }
            Err(err) => debug!(iface = %name, program, "detach: {err}"),
        }
    }
}

/// Detaches every classifier in `attached` (entering `netns` on this thread: netlink filters
/// are found by ifindex in the namespace of the socket). Needed for `Netlink` filters, which
/// outlive the process; tcx links go with their fds anyway.
pub fn detach_all(ebpf: &mut Ebpf, netns: &NetnsTarget, attached: &mut Attached) {
    let links = std::mem::take(&mut attached.tc_links);
    let detached = netns.run_inside(|| {
        for (index, links) in links {
            let name = attached.interfaces.get(&index).cloned().unwrap_or_default();
            detach_interface(ebpf, &name, links);
        }
    });
    if let Err(err) = detached {
        warn!("detaching the classifiers: {err}; `tc filter show` lists what is left");
    }
}
