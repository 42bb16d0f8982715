//! The inquiry budget of one node: a token bucket ([`PER_SEC`] inquiries per second, burst
//! [`BURST`]) and deduplication per flow key (client address, server address and port): the
//! same flow is asked about at most once per [`DEDUP_FOR`]. At most [`MAX_KEYS`] keys are
//! remembered; when full (after forgetting expired ones) new keys are refused as rate-limited.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

/// Inquiries per second per node, and the burst allowed.
pub const PER_SEC: f64 = 1.0;
pub const BURST: f64 = 5.0;
/// A flow key is asked about again only after this long.
pub const DEDUP_FOR: Duration = Duration::from_secs(300);
/// Flow keys remembered for deduplication.
pub const MAX_KEYS: usize = 4096;

/// What an inquiry is about: (client address, server address, server port).
pub type FlowKey = (IpAddr, IpAddr, u16);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// Asked about recently.
    Duplicate,
    /// Over the rate (or too many keys remembered).
    RateLimited,
}

pub struct Budget {
    tokens: f64,
    at: Instant,
    asked: HashMap<FlowKey, Instant>,
}

impl Budget {
    pub fn new(now: Instant) -> Self {
        Self { tokens: BURST, at: now, asked: HashMap::new() }
    }

    /// May an inquiry about `key` be sent at `now`? (`Send` takes a token and remembers it.)
    pub fn check(&mut self, key: FlowKey, now: Instant) -> Verdict {
        if self.asked.get(&key).is_some_and(|&t| now.saturating_duration_since(t) < DEDUP_FOR) {
            return Verdict::Duplicate;
        }
        if self.asked.len() >= MAX_KEYS {
            self.asked.retain(|_, &mut t| now.saturating_duration_since(t) < DEDUP_FOR);
            if self.asked.len() >= MAX_KEYS {
                return Verdict::RateLimited;
            }
        }
        self.tokens = (self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * PER_SEC).min(BURST);
        self.at = now;
        if self.tokens < 1.0 {
            return Verdict::RateLimited;
        }
        self.tokens -= 1.0;
        self.asked.insert(key, now);
        Verdict::Send
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> FlowKey {
        (IpAddr::from([10, 244, 1, n]), IpAddr::from([10, 244, 2, 40]), 8080)
    }

    #[test]
    fn a_burst_then_the_rate_and_each_flow_once() {
        let t0 = Instant::now();
        let mut b = Budget::new(t0);
        for n in 0..5 {
            assert_eq!(b.check(key(n), t0), Verdict::Send, "burst of {BURST}");
        }
        assert_eq!(b.check(key(5), t0), Verdict::RateLimited);
        assert_eq!(b.check(key(0), t0), Verdict::Duplicate);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.check(key(5), t1), Verdict::Send, "one more per second");
        assert_eq!(b.check(key(6), t1), Verdict::RateLimited);
        assert_eq!(b.check(key(0), t0 + DEDUP_FOR), Verdict::Send, "asked again after {DEDUP_FOR:?}");
    }
}
