//! Indexes of the per-CPU counter array ([`crate::maps::COUNTERS_MAP`]).

/// Packets the TC classifiers looked at.
pub const TC_PACKETS: u32 = 0;
/// Packets the TC classifiers reported as events.
pub const TC_EVENTS: u32 = 1;
/// Packets the TC classifiers could not parse (truncated or malformed headers).
pub const TC_PARSE_ERRORS: u32 = 2;
/// `kfree_skb` calls seen (any reason other than "consumed").
pub const DROPS_SEEN: u32 = 3;
/// Drop events sent.
pub const DROP_EVENTS: u32 = 4;
/// Events lost because the ring buffer was full (`bpf_ringbuf_reserve` failed).
pub const RINGBUF_FULL: u32 = 5;
/// Drops whose packet headers could not be read from the skb.
pub const DROP_PARSE_ERRORS: u32 = 6;

/// connect() calls reported by the cgroup connect4/connect6 hooks.
pub const CONNECT_EVENTS: u32 = 7;
/// sock_ops milestones reported (established, RTO, failed connect).
pub const SOCKOPS_EVENTS: u32 = 8;

/// Events not sent because the kernel-side filter excluded them.
pub const FILTERED_OUT: u32 = 9;

/// Retransmissions and locally sent resets reported.
pub const TCP_EVENTS: u32 = 10;

/// Number of counters (size of the array).
pub const COUNT: u32 = 11;

/// Human names, in index order, for reports.
pub const NAMES: [&str; COUNT as usize] = [
    "tc_packets",
    "tc_events",
    "tc_parse_errors",
    "drops_seen",
    "drop_events",
    "ringbuf_full",
    "drop_parse_errors",
    "connect_events",
    "sockops_events",
    "filtered_out",
    "tcp_events",
];
