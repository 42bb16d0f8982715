//! The kernel's per-CPU counters, decoded once into named fields (indexes from
//! `observer_common::counters`, shared with the eBPF programs).

use observer_common::counters as index;
use serde::Serialize;

/// Sums over all CPUs of the eBPF programs' counters, since the programs were loaded.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KernelCounters {
    /// Packets the TC classifiers looked at.
    pub tc_packets: u64,
    /// Packets the TC classifiers reported as events.
    pub tc_events: u64,
    /// Packets the TC classifiers could not parse (truncated or malformed headers).
    pub tc_parse_errors: u64,
    /// `kfree_skb` calls seen (any reason other than "consumed").
    pub drops_seen: u64,
    /// Drop events sent.
    pub drop_events: u64,
    /// Events lost because the ring buffer was full.
    pub ringbuf_full: u64,
    /// Drops whose packet headers could not be read from the skb.
    pub drop_parse_errors: u64,
    /// connect() calls reported by the cgroup connect4/connect6 hooks.
    pub connect_events: u64,
    /// sock_ops milestones reported.
    pub sockops_events: u64,
    /// Events not sent because the kernel-side filter excluded them.
    pub filtered_out: u64,
    /// Retransmissions and locally sent resets reported.
    pub tcp_events: u64,
}

impl KernelCounters {
    /// Decodes the counter array: `sum_at(i)` is counter `i` summed over the CPUs. Every index of
    /// `observer_common::counters` is read exactly once.
    pub fn decode<E>(mut sum_at: impl FnMut(u32) -> Result<u64, E>) -> Result<Self, E> {
        Ok(Self {
            tc_packets: sum_at(index::TC_PACKETS)?,
            tc_events: sum_at(index::TC_EVENTS)?,
            tc_parse_errors: sum_at(index::TC_PARSE_ERRORS)?,
            drops_seen: sum_at(index::DROPS_SEEN)?,
            drop_events: sum_at(index::DROP_EVENTS)?,
            ringbuf_full: sum_at(index::RINGBUF_FULL)?,
            drop_parse_errors: sum_at(index::DROP_PARSE_ERRORS)?,
            connect_events: sum_at(index::CONNECT_EVENTS)?,
            sockops_events: sum_at(index::SOCKOPS_EVENTS)?,
            filtered_out: sum_at(index::FILTERED_OUT)?,
            tcp_events: sum_at(index::TCP_EVENTS)?,
        })
    }

    /// `(name, value)` pairs in index order, for logs (names from `observer_common::counters::NAMES`).
    pub fn named(&self) -> [(&'static str, u64); index::COUNT as usize] {
        let values = [
            self.tc_packets,
            self.tc_events,
            self.tc_parse_errors,
            self.drops_seen,
            self.drop_events,
            self.ringbuf_full,
            self.drop_parse_errors,
            self.connect_events,
            self.sockops_events,
            self.filtered_out,
            self.tcp_events,
        ];
        let mut out = [("", 0); index::COUNT as usize];
        for (slot, (name, value)) in out.iter_mut().zip(index::NAMES.iter().zip(values)) {
            *slot = (*name, value);
        }
        out
    }

    /// `name=value ...` for a log line.
    pub fn log_line(&self) -> String {
        self.named().iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_field_is_decoded_from_its_own_index_and_named_in_order() {
        // Counter i holds 100 + i: every field must come from its own index.
        let counters = KernelCounters::decode(|i| Ok::<_, ()>(100 + u64::from(i))).expect("decode");
        assert_eq!(counters.tc_packets, 100 + u64::from(index::TC_PACKETS));
        assert_eq!(counters.ringbuf_full, 100 + u64::from(index::RINGBUF_FULL));
        assert_eq!(counters.filtered_out, 100 + u64::from(index::FILTERED_OUT));
        assert_eq!(counters.tcp_events, 100 + u64::from(index::TCP_EVENTS));
        let named = counters.named();
        for (i, (name, value)) in named.iter().enumerate() {
            assert_eq!(*name, index::NAMES[i]);
            assert_eq!(*value, 100 + i as u64, "{name} is counter {i}");
        }
        assert!(counters.log_line().contains("ringbuf_full=105"), "{}", counters.log_line());
    }

    #[test]
    fn a_read_error_is_passed_on() {
        assert_eq!(KernelCounters::decode(|i| if i == index::DROP_EVENTS { Err(i) } else { Ok(1) }), Err(4));
    }
}
