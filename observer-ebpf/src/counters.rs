//! Per-CPU counter increments.

use crate::maps::COUNTERS;

#[inline(always)]
pub fn bump(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot; programs do not migrate CPUs while running.
        unsafe { *slot += 1 };
    }
}
