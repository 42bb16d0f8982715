//! Attaching the TC classifiers to every interface of a network namespace, and the drop
//! tracepoint.

use std::collections::BTreeMap;

use aya::{
    programs::{tc, BtfTracePoint, ProgramError, SchedClassifier, TcAttachType},
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

/// What got attached: interface names by ifindex (in the watched namespace).
#[derive(Debug, Default)]
pub struct Attached {
    pub interfaces: BTreeMap<u32, String>,
    pub drops: bool,
    pub tcp_tracepoints: bool,
}

/// Attaches ingress and egress classifiers to every non-loopback interface of `netns`
/// (entering it on this thread only), then the drop tracepoint when it was loaded.
pub fn attach_all(ebpf: &mut Ebpf, netns: &NetnsTarget, loaded: &KernelInfo) -> Result<Attached, AttachError> {
    let interfaces = netns.run_inside(|| attach_tc_here(ebpf, &netns.name))??;
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
    Ok(Attached { interfaces, drops, tcp_tracepoints })
}

fn attach_tc_here(ebpf: &mut Ebpf, netns: &str) -> Result<BTreeMap<u32, String>, AttachError> {
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
    for name in interfaces.values() {
        attach_interface_here(ebpf, name, netns)?;
    }
    Ok(interfaces)
}

/// Attaches both classifiers to one interface of the current thread's namespace. An interface
/// that vanished before the attach is a warning, not an error.
pub fn attach_interface_here(ebpf: &mut Ebpf, name: &str, netns: &str) -> Result<(), AttachError> {
    let use_netlink = !KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
    if use_netlink {
        // Before tcx (6.6), TC programs hang off a clsact qdisc; it may already exist.
        if let Err(err) = tc::qdisc_add_clsact(name) {
            debug!(iface = %name, "clsact: {err}");
        }
    }
    for (program, attach_type) in [(TC_INGRESS, TcAttachType::Ingress), (TC_EGRESS, TcAttachType::Egress)] {
        let classifier: &mut SchedClassifier = program_mut(ebpf, program).map_err(Box::new)?;
        if let Err(source) = classifier.attach(name, attach_type) {
            if nix::net::if_::if_nametoindex(name).is_err() {
                warn!(iface = %name, "interface disappeared before attach");
                return Ok(());
            }
            return Err(AttachError::Tc {
                program,
                iface: name.to_string(),
                netns: netns.to_string(),
                source: Box::new(source),
            });
        }
    }
    Ok(())
}
