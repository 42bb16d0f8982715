//! Converting `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) to wall-clock time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::time::{clock_gettime, ClockId};

/// Wall time = monotonic time + offset, measured once at start.
#[derive(Clone, Copy, Debug)]
pub struct MonotonicClock {
    offset_ns: i128,
}

impl MonotonicClock {
    pub fn now() -> Self {
        let mono = clock_gettime(ClockId::CLOCK_MONOTONIC)
            .map(|ts| ts.tv_sec() as i128 * 1_000_000_000 + ts.tv_nsec() as i128)
            .unwrap_or(0);
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0);
        Self { offset_ns: wall - mono }
    }

    pub fn with_offset_ns(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    /// Wall-clock minus monotonic nanoseconds.
    pub fn offset_ns(self) -> i128 {
        self.offset_ns
    }

    pub fn to_wall(self, monotonic_ns: u64) -> SystemTime {
        let wall = (monotonic_ns as i128 + self.offset_ns).max(0) as u128;
        UNIX_EPOCH + Duration::from_nanos(wall.min(u64::MAX as u128) as u64)
    }
}

pub use observer_core::time::{rfc3339, time_of_day};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_wall_time() {
        let clock = MonotonicClock::with_offset_ns(1_795_000_000_000_000_000);
        let t = clock.to_wall(123_456_789);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.123456Z");
        assert_eq!(time_of_day(t), "11:06:40.123456");
        // A leap day and the epoch itself.
        let leap = UNIX_EPOCH + Duration::from_secs(1_709_164_800);
        assert_eq!(rfc3339(leap), "2024-02-29T00:00:00.000000Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
    }
}
