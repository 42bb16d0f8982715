//! Loading the embedded eBPF object with the running kernel's struct offsets.

use aya::{
    programs::{BtfTracePoint, CgroupSkb, CgroupSockAddr, ProgramError, SchedClassifier, SockOps},
    Btf as AyaBtf, Ebpf, EbpfError, EbpfLoader,
};
use observer_common::{maps::KERNEL_OFFSETS_GLOBAL, KernelOffsets};
use tracing::{debug, warn};

use crate::kernel::{
    btf::{Btf, BtfError},
    drop_reasons::DropReasons,
    kallsyms::Kallsyms,
    offsets::{self, OffsetsError},
};

use super::preflight::{check_btf, check_privileges, PreflightError, VMLINUX_BTF};

/// Program names in the object (the Rust function names).
pub const TC_INGRESS: &str = "observer_tc_ingress";
pub const TC_EGRESS: &str = "observer_tc_egress";
pub const KFREE_SKB: &str = "observer_kfree_skb";
pub const CONNECT4: &str = "observer_connect4";
pub const CONNECT6: &str = "observer_connect6";
pub const SOCKOPS: &str = "observer_sockops";
pub const CGROUP_INGRESS: &str = "observer_cgroup_ingress";
pub const CGROUP_EGRESS: &str = "observer_cgroup_egress";
pub const TCP_RETRANSMIT: &str = "observer_tcp_retransmit";
pub const TCP_SEND_RESET: &str = "observer_tcp_send_reset";

/// The eBPF object built by build.rs (aya-build), embedded at compile time.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/observer"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    #[error("reading {VMLINUX_BTF}: {0}")]
    ReadBtf(std::io::Error),
    #[error("parsing the kernel's BTF: {0}")]
    ParseBtf(#[from] BtfError),
    #[error("resolving kernel struct offsets from BTF: {0}")]
    Offsets(#[from] OffsetsError),
    #[error("loading the eBPF object: {0}")]
    Object(Box<EbpfError>),
    #[error("this observer was built without its eBPF programs (AYA_BUILD_SKIP was set): rebuild without it")]
    NoObject,
    #[error("program `{name}` missing from the eBPF object (build mismatch)")]
    MissingProgram { name: &'static str },
    #[error("loading program `{name}` into the kernel: {source}")]
    Program { name: &'static str, source: Box<ProgramError> },
}

/// What userspace learned about the running kernel while loading.
pub struct KernelInfo {
    pub offsets: KernelOffsets,
    pub drop_reasons: DropReasons,
    pub kallsyms: Kallsyms,
    /// False when the drop tracepoint could not be loaded (drops are then not reported).
    pub drops_available: bool,
    /// cgroup connect4/connect6 loaded.
    pub connect_available: bool,
    /// sock_ops loaded.
    pub sockops_available: bool,
    /// cgroup_skb ingress/egress loaded.
    pub cgroup_skb_available: bool,
    /// tcp_retransmit_skb / tcp_send_reset BTF tracepoints loaded.
    pub tcp_tracepoints_available: bool,
}

/// Checks privileges and BTF, resolves offsets, loads the object and its programs (not attached).
pub fn load() -> Result<(Ebpf, KernelInfo), LoadError> {
    load_object(OBJECT)
}

/// [`load`] for another build of the same programs (tests load the debug-profile object too).
pub fn load_object(object: &[u8]) -> Result<(Ebpf, KernelInfo), LoadError> {
    if object.is_empty() {
        return Err(LoadError::NoObject);
    }
    check_privileges()?;
    check_btf()?;
    let raw_btf = Btf::from_sys_fs().map_err(LoadError::ReadBtf)?;
    let btf = Btf::parse(&raw_btf)?;
    let offsets = offsets::resolve(&btf)?;
    debug!(?offsets, "kernel struct offsets from BTF");
    let drop_reasons = DropReasons::from_btf(&btf);
    drop(btf);

    let mut ebpf = EbpfLoader::new()
        .override_global(KERNEL_OFFSETS_GLOBAL, &offsets, true)
        .load(object)
        .map_err(|e| LoadError::Object(Box::new(e)))?;
    for name in [TC_INGRESS, TC_EGRESS] {
        let program: &mut SchedClassifier = program_mut(&mut ebpf, name)?;
        program.load().map_err(|source| LoadError::Program { name, source: Box::new(source) })?;
    }
    let drops_available = optional("drop tracing (BTF tracepoint kfree_skb, Linux 5.5+)", || load_kfree_skb(&mut ebpf));
    let connect_available = optional("cgroup connect4/connect6 (Linux 4.17+)", || {
        for name in [CONNECT4, CONNECT6] {
            let program: &mut CgroupSockAddr = program_mut(&mut ebpf, name)?;
            program.load().map_err(|source| LoadError::Program { name, source: Box::new(source) })?;
        }
        Ok(())
    });
    let sockops_available = optional("sock_ops with RTO/state callbacks (Linux 4.16+)", || {
        let program: &mut SockOps = program_mut(&mut ebpf, SOCKOPS)?;
        program.load().map_err(|source| LoadError::Program { name: SOCKOPS, source: Box::new(source) })
    });
    let cgroup_skb_available = optional("cgroup_skb ingress/egress (Linux 4.10+)", || {
        for name in [CGROUP_INGRESS, CGROUP_EGRESS] {
            let program: &mut CgroupSkb = program_mut(&mut ebpf, name)?;
            program.load().map_err(|source| LoadError::Program { name, source: Box::new(source) })?;
        }
        Ok(())
    });
    let tcp_tracepoints_available = optional("tcp_retransmit_skb/tcp_send_reset BTF tracepoints", || {
        let btf = AyaBtf::from_sys_fs().map_err(|e| LoadError::Object(Box::new(EbpfError::BtfError(e))))?;
        for (name, tracepoint) in [(TCP_RETRANSMIT, "tcp_retransmit_skb"), (TCP_SEND_RESET, "tcp_send_reset")] {
            let program: &mut BtfTracePoint = program_mut(&mut ebpf, name)?;
            program.load(tracepoint, &btf).map_err(|source| LoadError::Program { name, source: Box::new(source) })?;
        }
        Ok(())
    });
    let info = KernelInfo {
        offsets,
        drop_reasons,
        kallsyms: Kallsyms::load(),
        drops_available,
        connect_available,
        sockops_available,
        cgroup_skb_available,
        tcp_tracepoints_available,
    };
    Ok((ebpf, info))
}

/// Loads an optional hook; a failure is a warning naming the feature, and the rest keeps working.
fn optional(feature: &str, load: impl FnOnce() -> Result<(), LoadError>) -> bool {
    match load() {
        Ok(()) => true,
        Err(err) => {
            warn!("{feature} unavailable, continuing without it: {}", brief(&err.to_string()));
            false
        }
    }
}

/// The first line of an error and, for verifier logs, the lines that say why (the last ones).
pub fn brief(message: &str) -> String {
    let lines: Vec<&str> = message.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() <= 6 {
        return lines.join(" | ");
    }
    format!("{} | ... | {}", lines[0], lines[lines.len() - 5..].join(" | "))
}

fn load_kfree_skb(ebpf: &mut Ebpf) -> Result<(), LoadError> {
    let btf = AyaBtf::from_sys_fs().map_err(|e| LoadError::Object(Box::new(EbpfError::BtfError(e))))?;
    let program: &mut BtfTracePoint = program_mut(ebpf, KFREE_SKB)?;
    program.load("kfree_skb", &btf).map_err(|source| LoadError::Program { name: KFREE_SKB, source: Box::new(source) })
}

pub fn program_mut<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, LoadError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let program = ebpf.program_mut(name).ok_or(LoadError::MissingProgram { name })?;
    program.try_into().map_err(|source| LoadError::Program { name, source: Box::new(source) })
}
