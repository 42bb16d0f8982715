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
    netns::{NetnsError, NetnsTarget},
    programs::{program_mut, KernelInfo, LoadError, KFREE_SKB, TCP_RETRANSMIT, TCP_SEND_RESET, TC_EGRESS, TC_INGRESS},
};

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Load(#[from] Box<LoadError>),
    #[error("listing interfaces of network namespace `{netns}`: {source}")]
    ListInterfaces { netns: String, source: nix::Error },
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
    pub interfaces: BTreeMap<u32, String>,
    /// The classifier links of each interface in `interfaces`, by the same ifindex.
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
        let program: &mut BtfTracePoint = program_mut(ebpf, KFREE_SKB).map_err(Box::new)?;
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

fn attach_tc_here(ebpf: &mut Ebpf, netns: &str, mode: TcAttachMode) -> Result<Interfaces, AttachError> {
    let listed = nix::net::if_::if_nameindex()
        .map_err(|source| AttachError::ListInterfaces { netns: netns.to_string(), source })?;
    let interfaces: BTreeMap<u32, String> = listed
        .iter()
        .map(|iface| (iface.index(), iface.name().to_string_lossy().into_owned()))
        .filter(|(_, name)| name != "lo")
        .collect();
    if interfaces.is_empty() {
        return Err(AttachError::NoInterfaces(netns.to_string()));
    }
    let mut links = BTreeMap::new();
    for (index, name) in &interfaces {
        links.insert(*index, attach_interface_here(ebpf, name, netns, mode)?);
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
