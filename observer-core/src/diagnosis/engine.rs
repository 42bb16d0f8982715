//! The diagnosis engine: observations and time in, typed finding updates out.
//!
//! [`Engine::observe`] folds one observation into its connection; a connection whose outcome
//! becomes conclusive (dropped, rejected, no route, silent after a retransmission, stalled) is
//! announced at once as a finding. [`Engine::tick`] concludes connections nothing was seen of
//! for [`EngineConfig::idle`], so a long-running process reports without waiting for its exit:
//! a silent connection is concluded by the first tick at or after `last_seen + idle` (plus, in
//! a live session, however long a drop was held back for its culprit: at most a few seconds).
//! Memory is bounded: at most [`EngineConfig::capacity`] connections are being decided (and as
//! many quiet established ones, kept in case they stall later); beyond, the least recently seen
//! is concluded (an O(1) LRU eviction). Concluded connections fold into aggregated findings
//! ([`report::aggregate`]'s key) and counts.
//!
//! Updates: `new` the first time a finding's key is reported, `updated` when a concluded
//! connection adds evidence to it, `cleared` when a later connection between the same ends on
//! the same port was established (the problem is gone; the finding stays in the report, as it
//! happened): when that connection is concluded or, kept open, goes quiet at a tick (so a
//! long-running process clears without waiting for its end), or, with [`EngineConfig::expire`],
//! when the finding had no new evidence for that long.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use serde::Serialize;

use super::{
    classify,
    report::{self, FindingKey, Stats},
    Connection, Correlator, Finding, Outcome, DEFAULT_CAPACITY,
};
use crate::{inventory::Inventory, model::Observation};

/// How long a connection may go without any observation before [`Engine::tick`] concludes it:
/// longer than a SYN's first retransmissions (1 s, 3 s, 7 s, 15 s after the first), so an
/// attempt still being retried is not cut short, short enough for an operator watching.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(30);

/// How an engine decides.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The node the findings are about (named in every finding).
    pub node: String,
    /// Conclude connections idle this long (default [`DEFAULT_IDLE`]).
    pub idle: Duration,
    /// Connections being decided at once (default [`DEFAULT_CAPACITY`]).
    pub capacity: usize,
    /// A reported finding with no new evidence for this long (by its last-seen time, none of
    /// its connections still being decided) is cleared by [`Engine::tick`]: a long-running
    /// process (the agent) stops showing a problem that no longer happens even when no working
    /// connection came to clear it. Default None: findings clear only by a working connection.
    pub expire: Option<Duration>,
}

impl EngineConfig {
    pub fn new(node: impl Into<String>) -> Self {
        Self { node: node.into(), idle: DEFAULT_IDLE, capacity: DEFAULT_CAPACITY, expire: None }
    }
}

/// A change to the engine's findings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "update", content = "finding", rename_all = "kebab-case")]
pub enum FindingUpdate {
    /// A finding reported for the first time.
    New(Finding),
    /// A reported finding with more evidence (the aggregate so far).
    Updated(Finding),
    /// A reported finding whose flow works again, or (with [`EngineConfig::expire`]) that was
    /// not seen for that long (the aggregate as it was).
    Cleared(Finding),
}

impl FindingUpdate {
    pub fn finding(&self) -> &Finding {
        match self {
            FindingUpdate::New(f) | FindingUpdate::Updated(f) | FindingUpdate::Cleared(f) => f,
        }
    }
}

/// An address and port.
pub type HostPort = (IpAddr, u16);

/// Correlates observations into connections, concludes them, and keeps the findings.
pub struct Engine {
    config: EngineConfig,
    inventory: Arc<Inventory>,
    correlator: Correlator,
    /// Aggregated findings of concluded (and announced) connections, by key.
    findings: BTreeMap<FindingKey, Finding>,
    /// Keys reported to the caller (new sent), and those cleared since.
    reported: BTreeSet<FindingKey>,
    cleared: BTreeSet<FindingKey>,
    /// Connections already announced live, with the key they were announced under.
    announced: HashMap<HostPort, FindingKey>,
    stats: Stats,
    /// The latest observation time (the engine's notion of "now" for a replay).
    latest: Option<SystemTime>,
}

impl Engine {
    pub fn new(config: EngineConfig, inventory: Arc<Inventory>) -> Self {
        let correlator = Correlator::with_capacity(config.capacity);
        Self {
            config,
            inventory,
            correlator,
            findings: BTreeMap::new(),
            reported: BTreeSet::new(),
            cleared: BTreeSet::new(),
            announced: HashMap::new(),
            stats: Stats::default(),
            latest: None,
        }
    }

    /// Sets the MTUs of the node's interfaces (name -> bytes), for PMTU findings.
    pub fn set_interface_mtus(&mut self, mtus: HashMap<String, u32>) {
        self.correlator.set_interface_mtus(mtus);
    }

    /// Sets which of the node's interfaces are tunnel devices (by rtnetlink link kind), for
    /// findings over an overlay.
    pub fn set_tunnel_interfaces(&mut self, names: std::collections::HashSet<String>) {
        self.correlator.set_tunnel_interfaces(names);
    }

    /// Replaces the inventory (e.g. an agent's watch saw pods change); connections already
    /// held keep the names they were given.
    pub fn set_inventory(&mut self, inventory: Arc<Inventory>) {
        self.inventory = inventory;
    }

    pub fn inventory(&self) -> &Arc<Inventory> {
        &self.inventory
    }

    /// Connections held now (being decided, and quiet established ones).
    pub fn connections_held(&self) -> usize {
        self.correlator.len()
    }

    /// The latest observation time seen.
    pub fn latest(&self) -> Option<SystemTime> {
        self.latest
    }

    /// Folds one observation in; returns the updates it caused (a conclusive connection's
    /// finding, connections pushed out by the capacity).
    pub fn observe(&mut self, o: &Observation) -> Vec<FindingUpdate> {
        self.stats.events += 1;
        self.latest = Some(self.latest.map_or(o.time, |t| t.max(o.time)));
        let mut updates = Vec::new();
        if let Some(client) = self.correlator.add(o) {
            self.announce(client, &mut updates);
        }
        for c in self.correlator.take_evicted() {
            self.conclude(c, &mut updates);
        }
        updates
    }

    /// When `o` may be the packet side of a source-NATed connection whose original direction
    /// conntrack can tell: (its source, its destination) to look up (see [`Engine::follow_snat`]).
    pub fn snat_candidate(&self, o: &Observation) -> Option<(HostPort, HostPort)> {
        self.correlator.snat_candidate(o)
    }

    /// Conntrack says packets from `translated` belong to the connection `original` (before
    /// source NAT): call before [`Engine::observe`] of the observation it was looked up for.
    pub fn follow_snat(&mut self, translated: HostPort, original: HostPort, o: &Observation) {
        self.correlator.follow_snat(translated, original, o);
    }

    /// Concludes the connections idle for [`EngineConfig::idle`] at `now`, then clears the
    /// findings expired at `now` ([`EngineConfig::expire`]).
    pub fn tick(&mut self, now: SystemTime) -> Vec<FindingUpdate> {
        let mut updates = Vec::new();
        let mut quieted = Vec::new();
        for c in self.correlator.take_idle(now, self.config.idle, &mut quieted) {
            self.conclude(c, &mut updates);
        }
        // A working connection gone quiet (kept, not concluded) clears as a concluded one would.
        for client in quieted {
            if let Some(c) = self.correlator.get(client).filter(|c| self.may_clear(c)).cloned() {
                self.clear_for(&c, &mut updates);
            }
        }
        if let Some(expire) = self.config.expire {
            self.expire(now, expire, &mut updates);
        }
        updates
    }

    /// Clears the reported findings last seen `expire` or longer before `now`, unless one of
    /// their connections is still being decided.
    fn expire(&mut self, now: SystemTime, expire: Duration, updates: &mut Vec<FindingUpdate>) {
        let pending: BTreeSet<&FindingKey> = self.announced.values().collect();
        let stale: Vec<FindingKey> = self
            .findings
            .iter()
            .filter(|(k, f)| {
                self.reported.contains(*k)
                    && !pending.contains(k)
                    && f.evidence.last_seen.checked_add(expire).is_some_and(|t| t <= now)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            if let Some(f) = self.findings.get(&key) {
                updates.push(FindingUpdate::Cleared(f.clone()));
            }
            // A recurrence is new again.
            self.reported.remove(&key);
            self.cleared.insert(key);
        }
    }

    /// Concludes every connection held (the end of a run); returns the last updates.
    pub fn finish(&mut self) -> Vec<FindingUpdate> {
        let mut updates = Vec::new();
        for c in self.correlator.drain() {
            self.conclude(c, &mut updates);
        }
        updates
    }

    /// The aggregated findings so far, most severe first.
    pub fn findings(&self) -> Vec<Finding> {
        report::sorted(self.findings.values().cloned().collect())
    }

    /// Counts so far (events, concluded connections by outcome).
    pub fn stats(&self) -> Stats {
        self.stats.clone()
    }

    fn classify(&self, c: &Connection) -> Option<Finding> {
        classify(c, &self.config.node, &self.inventory.pod_cidrs)
    }

    /// A connection whose outcome became conclusive is reported at once (once).
    fn announce(&mut self, client: HostPort, updates: &mut Vec<FindingUpdate>) {
        if self.announced.contains_key(&client) {
            return;
        }
        let Some(c) = self.correlator.get(client) else { return };
        let conclusive = matches!(
            c.outcome(),
            Outcome::Dropped { .. }
                | Outcome::Rejected { .. }
                | Outcome::NoRoute(_)
                | Outcome::Silent
                | Outcome::Stalled(_)
        );
        if !conclusive {
            return;
        }
        let Some(f) = self.classify(c) else { return };
        let key = report::key(&f);
        self.announced.insert(client, key.clone());
        // Shown now (once per key); its evidence is counted when the connection is concluded.
        if self.reported.insert(key.clone()) {
            self.cleared.remove(&key);
            updates.push(FindingUpdate::New(f));
        }
    }

    /// Folds a concluded connection into the counts and findings.
    fn conclude(&mut self, c: Connection, updates: &mut Vec<FindingUpdate>) {
        self.announced.remove(&c.client);
        self.stats.connections += 1;
        let outcome = c.outcome();
        match &outcome {
            Outcome::Established => self.stats.established += 1,
            Outcome::RefusedByApplication => self.stats.refused_by_application += 1,
            _ => {}
        }
        match self.classify(&c) {
            Some(f) => {
                let key = report::key(&f);
                let first = !self.reported.contains(&key);
                match self.findings.get_mut(&key) {
                    Some(g) => report::absorb(g, f),
                    None => {
                        self.findings.insert(key.clone(), f);
                    }
                }
                self.reported.insert(key.clone());
                self.cleared.remove(&key);
                if let Some(g) = self.findings.get(&key) {
                    updates.push(if first { FindingUpdate::New(g.clone()) } else { FindingUpdate::Updated(g.clone()) });
                }
            }
            None if outcome == Outcome::Established => self.clear_for(&c, updates),
            None if outcome != Outcome::RefusedByApplication => self.stats.unresolved += 1,
            None => {}
        }
    }

    /// The ends and port a working connection `c` would clear findings of.
    fn clear_key(c: &Connection) -> Option<(String, String, u16)> {
        let (server, port) = c.server?;
        let src = c.src.workload.clone().or_else(|| c.src.pod.clone()).unwrap_or_else(|| c.client.0.to_string());
        let dst = c.dst.service.clone().or_else(|| c.dst.pod.clone()).unwrap_or_else(|| server.to_string());
        Some((src, dst, port))
    }

    /// Whether a working connection `c` may clear a finding (cheap: no finding, nothing to do).
    fn may_clear(&self, c: &Connection) -> bool {
        !self.findings.is_empty() && c.outcome() == Outcome::Established
    }

    /// A working connection clears the findings about the same ends and port.
    fn clear_for(&mut self, c: &Connection, updates: &mut Vec<FindingUpdate>) {
        let Some((src, dst, port)) = Self::clear_key(c) else { return };
        let keys: Vec<FindingKey> = self
            .findings
            .range((src.clone(), dst.clone(), port, super::Mechanism::Dropped, super::Kind::ControlPlaneBlocked)..)
            .take_while(|(k, _)| k.0 == src && k.1 == dst && k.2 == port)
            .map(|(k, _)| k.clone())
            .filter(|k| !self.cleared.contains(k))
            .collect();
        for key in keys {
            if let Some(f) = self.findings.get(&key).filter(|f| f.evidence.last_seen <= c.first_seen) {
                updates.push(FindingUpdate::Cleared(f.clone()));
                // A recurrence is new again.
                self.reported.remove(&key);
                self.cleared.insert(key);
            }
        }
    }
}

#[cfg(test)]
mod tests;
