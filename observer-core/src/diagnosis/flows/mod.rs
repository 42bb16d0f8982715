//! Flow memory: what this node's kernel saw of recent TCP flows, kept so that another node's
//! question ("did the SYN from 10.244.1.10 to 10.244.2.11:9080 between t0 and t1 reach you?")
//! can be answered from evidence, and so that a webhook call that never arrived can be told
//! from one that did.
//!
//! Fed by every [`Observation`] through one entry point, [`FlowMemory::record`]. Per connection
//! (TCP 5-tuple, both directions together) it keeps, per place (interface, hook, direction,
//! packet kind: SYN, SYN-ACK, RST), the first and last sighting and a count, and the drops seen
//! of it (reason, kernel location, culprit rule). Bounded: at most [`FlowMemory::capacity`]
//! connections (default [`DEFAULT_FLOWS`], an LRU: the least recently seen is forgotten first)
//! and [`MAX_PLACES`] places and [`MAX_DROPS`] drops per connection. Forgetting is tracked
//! ([`FlowMemory::complete_since`]): a question about a window whose evidence may have been
//! pushed out is answered as incomplete, never as "not seen".
//!
//! Only packets with a 5-tuple seen on the node's interfaces are kept (TC hooks' handshake
//! packets) and drops with a parsed header; which way a packet went is decided when asked (towards the server asked about, or
//! back). Other observations are ignored.

use std::{
    net::IpAddr,
    num::NonZeroUsize,
    sync::Arc,
    time::{Duration, SystemTime},
};

use lru::LruCache;
use serde::{Deserialize, Serialize};

use crate::{
    model::{Detail, DropClass, Flow, Hook, Observation, Protocol},
    netfilter::Culprit,
};

mod report;

/// Times in reports and queries are RFC 3339 UTC (re-exported for their users).
pub use crate::time::{parse_rfc3339, rfc3339};
pub use report::{DropSeen, FlowQuery, FlowReport, Sighting};

/// Connections remembered by default. A connection takes about 0.5 kB (2 to 6 places, an LRU
/// node): ~8 MB when full; at most ~2.3 kB if it filled all its places and drops (~38 MB).
pub const DEFAULT_FLOWS: usize = 16_384;
/// Places (interface, hook, direction, packet kind) kept per connection.
pub const MAX_PLACES: usize = 16;
/// Drops kept per connection.
pub const MAX_DROPS: usize = 4;

/// The handshake packet a sighting is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PacketKind {
    /// SYN without ACK: a connection attempt.
    Syn,
    /// SYN and ACK: the server's answer.
    SynAck,
    /// A reset.
    Rst,
}

/// Where a packet was seen, with the first and last time and how often.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Place {
    interface: Option<String>,
    hook: Hook,
    /// The packet's source (address, port): which way it went.
    src: (IpAddr, u16),
    kind: PacketKind,
    first: SystemTime,
    last: SystemTime,
    count: u32,
}

/// A drop of one of the connection's packets.
#[derive(Clone, Debug, PartialEq)]
struct Dropped {
    /// The dropped packet's source (address, port).
    src: (IpAddr, u16),
    time: SystemTime,
    reason: String,
    location: String,
    interface: Option<String>,
    /// Shared with the observation (no copy): serialized only when a report is asked for.
    culprit: Option<Arc<Culprit>>,
}

/// One connection's memory.
#[derive(Clone, Debug, Default)]
struct Entry {
    places: Vec<Place>,
    drops: Vec<Dropped>,
}

/// Both ends of a TCP connection in a canonical order (the lower end first).
type Key = ((IpAddr, u16), (IpAddr, u16));

fn key(flow: &Flow) -> Key {
    let (a, b) = ((flow.src, flow.sport), (flow.dst, flow.dport));
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

/// The node's memory of recent TCP flows (see the module docs).
pub struct FlowMemory {
    entries: LruCache<Key, Entry>,
    /// The latest evidence time of a connection pushed out (evidence before it may be gone).
    forgotten_until: Option<SystemTime>,
    recorded: u64,
}

impl Default for FlowMemory {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_FLOWS)
    }
}

impl FlowMemory {
    /// A memory of at most `capacity` connections (at least 1).
    pub fn with_capacity(capacity: usize) -> Self {
        let cap = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        Self { entries: LruCache::new(cap), forgotten_until: None, recorded: 0 }
    }

    /// Connections remembered at most.
    pub fn capacity(&self) -> usize {
        self.entries.cap().get()
    }

    /// Connections remembered now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Observations kept so far (handshake packets and drops of TCP flows).
    pub fn recorded(&self) -> u64 {
        self.recorded
    }

    /// Whether every sighting at or after `t0` is still remembered (no connection with evidence
    /// at or after `t0` was pushed out by the capacity).
    pub fn complete_since(&self, t0: SystemTime) -> bool {
        self.forgotten_until.is_none_or(|t| t < t0)
    }

    /// Folds one observation in: a TCP handshake packet (SYN, SYN-ACK, RST) at a hook, or a drop
    /// of a TCP packet. Anything else is ignored.
    pub fn record(&mut self, o: &Observation) {
        let Some(flow) = o.flow.filter(|f| f.protocol == Protocol::TCP) else { return };
        match &o.detail {
            // Places are the node's interfaces (TC hooks). Socket-level hooks (cgroup, sock_ops)
            // say what a local socket did, not where a packet went: a cgroup hierarchy may even
            // span several network namespaces (the lab's nodes share one).
            Detail::Packet { tcp_flags, .. } if o.hook.is_tc() => {
                let kind = if tcp_flags.is_syn() {
                    PacketKind::Syn
                } else if tcp_flags.is_syn_ack() {
                    PacketKind::SynAck
                } else if tcp_flags.is_rst() {
                    PacketKind::Rst
                } else {
                    return;
                };
                let src = (flow.src, flow.sport);
                let entry = self.entry(&flow);
                let place = entry
                    .places
                    .iter_mut()
                    .find(|p| p.hook == o.hook && p.src == src && p.kind == kind && p.interface == o.interface);
                match place {
                    Some(p) => {
                        p.first = p.first.min(o.time);
                        p.last = p.last.max(o.time);
                        p.count = p.count.saturating_add(1);
                    }
                    None => {
                        if entry.places.len() >= MAX_PLACES {
                            // The oldest place makes room: the latest evidence matters most.
                            if let Some(i) = (0..entry.places.len()).min_by_key(|&i| entry.places[i].last) {
                                entry.places.swap_remove(i);
                            }
                        }
                        entry.places.push(Place {
                            interface: o.interface.clone(),
                            hook: o.hook,
                            src,
                            kind,
                            first: o.time,
                            last: o.time,
                            count: 1,
                        });
                    }
                }
            }
            // Only drops that decide a packet's fate: a firewall or policy, no route, a failed
            // neighbour, no socket. Others (`NOT_SPECIFIED`...) are mostly the kernel's normal
            // work, e.g. a retransmitted SYN freed because its request socket exists already:
            // blaming them would be a wrong blame.
            Detail::Drop { drop_reason, location, culprit, .. } if drop_reason.class != DropClass::Other => {
                let entry = self.entry(&flow);
                if entry.drops.len() >= MAX_DROPS {
                    entry.drops.remove(0);
                }
                entry.drops.push(Dropped {
                    src: (flow.src, flow.sport),
                    time: o.time,
                    reason: drop_reason.name.to_string(),
                    location: location.clone(),
                    interface: o.interface.clone(),
                    culprit: culprit.clone(),
                });
            }
            _ => return,
        }
        self.recorded += 1;
    }

    fn entry(&mut self, flow: &Flow) -> &mut Entry {
        let k = key(flow);
        if !self.entries.contains(&k) {
            if let Some((_, old)) = self.entries.push(k, Entry::default()) {
                let last = old.places.iter().map(|p| p.last).chain(old.drops.iter().map(|d| d.time)).max();
                if let Some(last) = last {
                    self.forgotten_until = Some(self.forgotten_until.map_or(last, |t| t.max(last)));
                }
            }
        }
        self.entries.get_or_insert_mut(k, Entry::default)
    }

    /// What this node saw of the connections matching `q` (see [`FlowQuery`]), as `node`.
    /// `complete` says whether an absence in it is evidence.
    pub fn report(&self, node: &str, q: &FlowQuery) -> FlowReport {
        let mut r = report::build(node, self.entries.iter(), q);
        r.complete = self.complete_since(q.from);
        r
    }
}

/// Widens a window by `slack` on both sides (clocks of two nodes differ a little).
pub fn widen(window: (SystemTime, SystemTime), slack: Duration) -> (SystemTime, SystemTime) {
    (window.0.checked_sub(slack).unwrap_or(window.0), window.1 + slack)
}

#[cfg(test)]
mod tests;
