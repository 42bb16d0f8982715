//! Attaching the TC classifiers to every interface of a network namespace, and the drop
//! tracepoint.

use std::collections::BTreeMap;

use aya::{
    programs::{tc, tc::SchedClassifierLinkId, BtfTracePoint, ProgramError, SchedClassifier, TcAttachType},
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

/// What got attached: interface names by ifindex (in the watched namespace).
#[derive(Debug, Default)]
pub struct Attached {
    pub interfaces: BTreeMap<u32, String>,
    /// The classifier links of each interface in `interfaces`, by the same ifindex.
    pub tc_links: BTreeMap<u32, TcLinks>,
    pub drops: bool,
    pub tcp_tracepoints: bool,
}

/// Attaches ingress and egress classifiers to every non-loopback interface of `netns`
/// (entering it on this thread only), then the drop tracepoint when it was loaded.
pub fn attach_all(ebpf: &mut Ebpf, netns: &NetnsTarget, loaded: &KernelInfo) -> Result<Attached, AttachError> {
    let (interfaces, tc_links) = netns.run_inside(|| attach_tc_here(ebpf, &netns.name))??;
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
    Ok(Attached { interfaces, tc_links, drops, tcp_tracepoints })
}

type Interfaces = (BTreeMap<u32, String>, BTreeMap<u32, TcLinks>);

fn attach_tc_here(ebpf: &mut Ebpf, netns: &str) -> Result<Interfaces, AttachError> {
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
        links.insert(*index, attach_interface_here(ebpf, name, netns)?);
    }
    Ok((interfaces, links))
}

/// Attaches both classifiers to one interface of the current thread's namespace and returns
/// their links (none when the interface vanished before the attach: a warning, not an error).
/// On an error, the links made so far are detached again.
pub fn attach_interface_here(ebpf: &mut Ebpf, name: &str, netns: &str) -> Result<TcLinks, AttachError> {
    let use_netlink = !KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
    if use_netlink {
        // Before tcx (6.6), TC programs hang off a clsact qdisc; it may already exist.
        if let Err(err) = tc::qdisc_add_clsact(name) {
            debug!(iface = %name, "clsact: {err}");
        }
    }
    let mut links = TcLinks::new();
    for (program, attach_type) in [(TC_INGRESS, TcAttachType::Ingress), (TC_EGRESS, TcAttachType::Egress)] {
        let attached = program_mut::<SchedClassifier>(ebpf, program)
            .map_err(|e| AttachError::Load(Box::new(e)))
            .and_then(|classifier| {
                classifier.attach(name, attach_type).map_err(|source| AttachError::Tc {
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
