//! Loading the embedded eBPF object with the running kernel's struct offsets.

use aya::{
    programs::{BtfTracePoint, CgroupSkb, CgroupSockAddr, ProgramError, SchedClassifier, SockOps},
    Btf as AyaBtf, Ebpf, EbpfError, EbpfLoader,
};
use observer_common::{
    maps::{events_ringbuf_bytes, EVENTS_MAP, KERNEL_OFFSETS_GLOBAL},
    KernelOffsets,
};
use tracing::{debug, warn};

use crate::kernel::{
    btf::{Btf, BtfError},
    drop_reasons::DropReasons,
    kallsyms::Kallsyms,
    offsets::{self, OffsetsError},
};

use super::{
    kernel_log,
    preflight::{check_btf, check_privileges, PreflightError, VMLINUX_BTF},
};

/// Program names in the object (the Rust function names).
pub const TC_INGRESS: &str = "observer_tc_ingress";
pub const TC_EGRESS: &str = "observer_tc_egress";
pub const KFREE_SKB: &str = "observer_kfree_skb";
/// [`KFREE_SKB`] reading the tracepoint's `rx_sk` (Linux 6.11+), loaded in its place when the
/// kernel has it.
pub const KFREE_SKB_RX_SK: &str = "observer_kfree_skb_rx_sk";
pub const CONNECT4: &str = "observer_connect4";
pub const CONNECT6: &str = "observer_connect6";
pub const SOCKOPS: &str = "observer_sockops";
pub const CGROUP_INGRESS: &str = "observer_cgroup_ingress";
pub const CGROUP_EGRESS: &str = "observer_cgroup_egress";
/// The cgroup_skb pair, loaded only when [`LoadOptions::cgroup_skb`] asks for it.
pub const CGROUP_SKB_PROGRAMS: [&str; 2] = [CGROUP_INGRESS, CGROUP_EGRESS];
pub const TCP_RETRANSMIT: &str = "observer_tcp_retransmit";
pub const TCP_SEND_RESET: &str = "observer_tcp_send_reset";

/// A program observer works without: what it reports, and the kernel it needs (the hook and the
/// helpers and tracepoint arguments the program uses; sources: the kernel commits adding them).
pub struct OptionalProgram {
    /// Its name in the object.
    pub name: &'static str,
    /// What is missing without it, and the minimum kernel, for the warning when it is refused.
    pub feature: &'static str,
}

/// Every optional program, each loaded (and, when refused, warned about) on its own, so that one
/// refused program costs only what it reports; the cgroup_skb ones only when
/// [`LoadOptions::cgroup_skb`] asks for them.
pub const OPTIONAL_PROGRAMS: [OptionalProgram; 8] = [
    OptionalProgram {
        name: KFREE_SKB,
        feature: "drop tracing (BTF tracepoint skb:kfree_skb with its drop-reason argument, Linux 5.17+)",
    },
    OptionalProgram {
        name: CONNECT4,
        feature: "IPv4 connect() attempts (cgroup/connect4, Linux 4.17+; the socket-cookie, pid and \
                  command helpers it calls need a newer kernel)",
    },
    OptionalProgram {
        name: CONNECT6,
        feature: "IPv6 connect() attempts (cgroup/connect6, Linux 4.17+; the socket-cookie, pid and \
                  command helpers it calls need a newer kernel)",
    },
    OptionalProgram {
        name: SOCKOPS,
        feature: "TCP socket milestones (sock_ops with RTO and state callbacks, 4.16+, and the socket \
                  cookie, Linux 4.19+)",
    },
    OptionalProgram {
        name: CGROUP_INGRESS,
        feature: "packets arriving at the watched sockets (cgroup_skb ingress, Linux 4.10+)",
    },
    OptionalProgram {
        name: CGROUP_EGRESS,
        feature: "packets leaving the watched sockets (cgroup_skb egress, Linux 4.10+)",
    },
    OptionalProgram {
        name: TCP_RETRANSMIT,
        feature: "retransmissions (BTF tracepoint tcp:tcp_retransmit_skb with its err argument, Linux 6.17+)",
    },
    OptionalProgram {
        name: TCP_SEND_RESET,
        feature: "resets sent by the local TCP stack (BTF tracepoint tcp:tcp_send_reset with its reason \
                  argument, Linux 6.10+)",
    },
];

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
    /// The drop program loaded: [`KFREE_SKB_RX_SK`] where the kernel passes `rx_sk`, else
    /// [`KFREE_SKB`].
    pub drop_program: &'static str,
    /// cgroup connect4/connect6 loaded.
    pub connect_available: bool,
    /// sock_ops loaded.
    pub sockops_available: bool,
    /// cgroup_skb ingress/egress loaded (false too when [`LoadOptions::cgroup_skb`] did not ask
    /// for them).
    pub cgroup_skb_available: bool,
    /// tcp_retransmit_skb or tcp_send_reset BTF tracepoint loaded (see `loaded` for which).
    pub tcp_tracepoints_available: bool,
    /// The optional programs ([`OPTIONAL_PROGRAMS`]) the kernel accepted, by name.
    pub loaded: Vec<&'static str>,
}

impl KernelInfo {
    /// Whether the optional program `name` was loaded.
    pub fn has(&self, name: &str) -> bool {
        self.loaded.contains(&name)
    }
}

/// How the programs are loaded. `LoadOptions::default()`: kernel log lines off, every program
/// loaded.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// The programs' log lines of rare paths ([`super::kernel_log`]) on; off, the programs skip
    /// them (`AYA_LOG_LEVEL` 0) and their log ring buffer is one page.
    pub kernel_log: bool,
    /// Load the cgroup_skb programs ([`CGROUP_SKB_PROGRAMS`]). Off when they will
    /// not be attached (`--cgroup-skb off`): their verification is about half of the start-up on
    /// a node with few interfaces (BENCHMARKS.md section 4), and [`KernelInfo`] then says they
    /// are not available.
    pub cgroup_skb: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { kernel_log: false, cgroup_skb: true }
    }
}

/// Checks privileges and BTF, resolves offsets, loads the object and its programs (not attached).
pub fn load() -> Result<(Ebpf, KernelInfo), LoadError> {
    load_with(OBJECT, LoadOptions::default())
}

/// [`load`] for another build of the same programs (tests load the debug-profile object too).
pub fn load_object(object: &[u8]) -> Result<(Ebpf, KernelInfo), LoadError> {
    load_with(object, LoadOptions::default())
}

/// [`load`] with `options`.
pub fn load_options(options: LoadOptions) -> Result<(Ebpf, KernelInfo), LoadError> {
    load_with(OBJECT, options)
}

/// [`load_object`] with `options`.
pub fn load_with(object: &[u8], options: LoadOptions) -> Result<(Ebpf, KernelInfo), LoadError> {
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

    let ring_bytes = ring_buffer_bytes();
    debug!(ring_bytes, "event ring buffer size");
    let mut loader = EbpfLoader::new();
    loader.override_global(KERNEL_OFFSETS_GLOBAL, &offsets, true).map_max_entries(EVENTS_MAP, ring_bytes);
    let log_level = if options.kernel_log { kernel_log::LEVEL_ON } else { kernel_log::LEVEL_OFF };
    // Not must-exist: an object built without any log statement has neither.
    loader.override_global(kernel_log::LEVEL_GLOBAL, &log_level, false);
    if !options.kernel_log {
        loader.map_max_entries(kernel_log::LOG_MAP, page_size());
    }
    let mut ebpf = loader.load(object).map_err(|e| LoadError::Object(Box::new(e)))?;
    for name in [TC_INGRESS, TC_EGRESS] {
        let program: &mut SchedClassifier = program_mut(&mut ebpf, name)?;
        program.load().map_err(|source| LoadError::Program { name, source: Box::new(source) })?;
    }
    let btf = AyaBtf::from_sys_fs().map_err(|e| LoadError::Object(Box::new(EbpfError::BtfError(e))))?;
    let wanted = |name: &str| options.cgroup_skb || !CGROUP_SKB_PROGRAMS.contains(&name);
    let loaded: Vec<&'static str> = OPTIONAL_PROGRAMS
        .iter()
        .filter(|p| wanted(p.name) && optional(p.feature, || load_optional(&mut ebpf, p.name, &btf)))
        .map(|p| p.name)
        .collect();
    let has = |name: &str| loaded.contains(&name);
    let drop_program =
        if ebpf.program(KFREE_SKB_RX_SK).is_some_and(|p| p.fd().is_ok()) { KFREE_SKB_RX_SK } else { KFREE_SKB };
    let info = KernelInfo {
        drop_program,
        offsets,
        drop_reasons,
        kallsyms: Kallsyms::load(),
        drops_available: has(KFREE_SKB),
        connect_available: has(CONNECT4) && has(CONNECT6),
        sockops_available: has(SOCKOPS),
        cgroup_skb_available: has(CGROUP_INGRESS) && has(CGROUP_EGRESS),
        tcp_tracepoints_available: has(TCP_RETRANSMIT) || has(TCP_SEND_RESET),
        loaded,
    };
    Ok((ebpf, info))
}

/// Loads an optional program; a failure is a warning naming what is lost and the kernel it needs,
/// with the kernel's reason, and the rest keeps working.
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

/// Loads one optional program by its name in the object.
fn load_optional(ebpf: &mut Ebpf, name: &'static str, btf: &AyaBtf) -> Result<(), LoadError> {
    let failed = |source| LoadError::Program { name, source: Box::new(source) };
    match name {
        KFREE_SKB => {
            // The variant with `rx_sk` where the kernel has it (the verifier refuses the fourth
            // argument before 6.11), else the plain one.
            match program_mut::<BtfTracePoint>(ebpf, KFREE_SKB_RX_SK)?.load("kfree_skb", btf) {
                Ok(()) => Ok(()),
                Err(err) => {
                    debug!("{KFREE_SKB_RX_SK} refused ({}); loading {KFREE_SKB}", brief(&err.to_string()));
                    program_mut::<BtfTracePoint>(ebpf, name)?.load("kfree_skb", btf).map_err(failed)
                }
            }
        }
        TCP_RETRANSMIT => program_mut::<BtfTracePoint>(ebpf, name)?.load("tcp_retransmit_skb", btf).map_err(failed),
        TCP_SEND_RESET => program_mut::<BtfTracePoint>(ebpf, name)?.load("tcp_send_reset", btf).map_err(failed),
        CONNECT4 | CONNECT6 => program_mut::<CgroupSockAddr>(ebpf, name)?.load().map_err(failed),
        SOCKOPS => program_mut::<SockOps>(ebpf, name)?.load().map_err(failed),
        CGROUP_INGRESS | CGROUP_EGRESS => program_mut::<CgroupSkb>(ebpf, name)?.load().map_err(failed),
        _ => Err(LoadError::MissingProgram { name }),
    }
}

pub fn program_mut<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, LoadError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let program = ebpf.program_mut(name).ok_or(LoadError::MissingProgram { name })?;
    program.try_into().map_err(|source| LoadError::Program { name, source: Box::new(source) })
}

/// Overrides the event ring buffer's size (bytes; a power of two and a multiple of the page
/// size, as the kernel requires of `BPF_MAP_TYPE_RINGBUF`): for nodes whose event rate needs
/// more than the default, and for tests that must overflow it.
pub const RINGBUF_BYTES_ENV: &str = "OBSERVER_RINGBUF_BYTES";

/// The event ring buffer's size for this machine's possible CPUs
/// (`observer_common::maps::events_ringbuf_bytes`), or [`RINGBUF_BYTES_ENV`] when it holds a
/// valid size (an invalid one is a warning and the default is used); when the CPU count cannot be
/// read, the size for one CPU, with a warning.
/// The page size (the smallest ring buffer), 4096 when unknown.
fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(bytes).ok().filter(|b| *b > 0).unwrap_or(4096)
}

fn ring_buffer_bytes() -> u32 {
    if let Ok(text) = std::env::var(RINGBUF_BYTES_ENV) {
        match valid_ring_size(&text) {
            Some(bytes) => return bytes,
            None => warn!(
                "{RINGBUF_BYTES_ENV}={text:?} is not a power of two of at least 4096 bytes; using the default size"
            ),
        }
    }
    let cpus = aya::util::nr_cpus().unwrap_or_else(|(path, err)| {
        warn!("reading {path}: {err}; sizing the event ring buffer for one CPU");
        1
    });
    events_ringbuf_bytes(u32::try_from(cpus).unwrap_or(u32::MAX))
}

/// `text` as a ring buffer size: a power of two of at least one 4 KiB page.
fn valid_ring_size(text: &str) -> Option<u32> {
    text.trim().parse::<u32>().ok().filter(|b| b.is_power_of_two() && *b >= 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_size_override_must_be_a_power_of_two_of_at_least_a_page() {
        assert_eq!(valid_ring_size("262144"), Some(262_144));
        assert_eq!(valid_ring_size(" 4096\n"), Some(4096));
        for bad in ["0", "2048", "300000", "-4096", "1MiB", ""] {
            assert_eq!(valid_ring_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn each_optional_program_has_its_own_probe_and_minimum_kernel() {
        let names: Vec<&str> = OPTIONAL_PROGRAMS.iter().map(|p| p.name).collect();
        for name in
            [KFREE_SKB, CONNECT4, CONNECT6, SOCKOPS, CGROUP_INGRESS, CGROUP_EGRESS, TCP_RETRANSMIT, TCP_SEND_RESET]
        {
            assert_eq!(names.iter().filter(|n| **n == name).count(), 1, "{name} has exactly one entry");
        }
        let feature = |name: &str| OPTIONAL_PROGRAMS.iter().find(|p| p.name == name).map_or("", |p| p.feature);
        // The drop-reason argument of skb:kfree_skb appeared in 5.17 (5.5 only had BTF tracepoints).
        assert!(feature(KFREE_SKB).contains("Linux 5.17+"), "{}", feature(KFREE_SKB));
        assert!(feature(TCP_SEND_RESET).contains("Linux 6.10+"), "{}", feature(TCP_SEND_RESET));
        assert!(feature(TCP_RETRANSMIT).contains("Linux 6.17+"), "{}", feature(TCP_RETRANSMIT));
        for p in &OPTIONAL_PROGRAMS {
            assert!(p.feature.contains("Linux "), "{} names its minimum kernel: {}", p.name, p.feature);
        }
    }
}
