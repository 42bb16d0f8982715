//! Kernel-side log lines (aya-log) for rare paths only: a parse bound reached, a failed map
//! insert, a full ring buffer. Never per packet: each site logs at most once per
//! [`INTERVAL_NS`] per CPU (a per-CPU gate), so a flood of hostile packets costs a handful of
//! lines, while the per-CPU counters keep the exact numbers. Off by default: userspace sets
//! `AYA_LOG_LEVEL` to 0 unless asked (`--kernel-log`), and then the gate is not even read.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::map, maps::PerCpuArray};
use aya_log_ebpf::macro_support::{level_enabled, Level};

/// One log line per site per CPU per second at most.
pub const INTERVAL_NS: u64 = 1_000_000_000;

/// The log sites (indexes into [`LOG_GATE`]).
pub const SITE_RINGBUF_FULL: u32 = 0;
pub const SITE_FLOW_INSERT: u32 = 1;
pub const SITE_IPV6_EXT_LIMIT: u32 = 2;
const SITES: u32 = 3;

/// When each site last logged on this CPU (ns since boot; 0: never).
#[map(name = "LOG_GATE")]
static LOG_GATE: PerCpuArray<u64> = PerCpuArray::with_max_entries(SITES, 0);

/// Whether `site` may log a warning now: logging is on and the site has not logged on this CPU
/// within [`INTERVAL_NS`] (then the gate is moved to now).
#[inline(always)]
pub fn gate(site: u32) -> bool {
    if !level_enabled(Level::Warn) {
        return false;
    }
    let Some(slot) = LOG_GATE.get_ptr_mut(site) else { return false };
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: per-CPU slot; programs do not migrate CPUs while running.
    unsafe {
        if *slot != 0 && now.wrapping_sub(*slot) < INTERVAL_NS {
            return false;
        }
        *slot = now;
    }
    true
}
