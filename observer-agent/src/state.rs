//! What the agent's async side shares: the current findings (from [`FindingUpdate`]s), the
//! session's and the feed's state, the metrics.

use std::{
    collections::BTreeMap,
    sync::{atomic::Ordering, Arc, RwLock},
    time::Instant,
};

use observer::{
    diagnosis::{
        report::{self, Report, Stats},
        Finding,
    },
    inventory::Inventory,
};
use tokio::sync::watch;

use crate::{
    adapter::SessionStats,
    feed::FeedHealth,
    metrics::Metrics,
    update::{FindingKey, FindingUpdate},
};

/// Shared by the HTTP handlers, the publisher and the Events writer.
pub struct Shared {
    pub node: String,
    pub findings: RwLock<BTreeMap<FindingKey, Finding>>,
    pub session: Arc<SessionStats>,
    pub feed: Arc<FeedHealth>,
    pub inventory: watch::Receiver<Arc<Inventory>>,
    pub metrics: Metrics,
    pub started: Instant,
}

impl Shared {
    /// Attached and the inventory synced (`/readyz`).
    pub fn ready(&self) -> bool {
        self.session.attached.load(Ordering::Relaxed) && self.feed.synced()
    }

    /// Applies one update to the current findings and the metrics.
    pub fn apply(&self, update: &FindingUpdate) {
        let mut findings = self.findings.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        match update {
            FindingUpdate::New(f) | FindingUpdate::Updated(f) => {
                let previous = findings.insert(FindingKey::of(f), f.clone());
                if previous.is_none() {
                    self.metrics.finding(f, 1);
                }
                self.metrics.update(if matches!(update, FindingUpdate::New(_)) { "new" } else { "updated" });
            }
            FindingUpdate::Cleared(key) => {
                if let Some(f) = findings.remove(key) {
                    self.metrics.finding(&f, -1);
                }
                self.metrics.update("cleared");
            }
        }
    }

    /// The current findings as `diagnose --output json` prints its report (docs/diagnose-json.md).
    pub fn findings_json(&self) -> String {
        let findings: Vec<Finding> = report::aggregate(
            self.findings.read().unwrap_or_else(std::sync::PoisonError::into_inner).values().cloned().collect(),
        );
        let s = &self.session;
        let stats = Stats {
            connections: s.connections.load(Ordering::Relaxed) as usize,
            events: s.observations.load(Ordering::Relaxed),
            lost_events: s.ringbuf_lost.load(Ordering::Relaxed),
            drops_not_attributed: s.drops_not_attributed.load(Ordering::Relaxed),
            duration_secs: self.started.elapsed().as_secs_f64(),
            ..Stats::default()
        };
        report::json(&Report { node: &self.node, findings: &findings, stats })
    }
}
