//! The eBPF session on its own std thread (setns is per thread, so never a tokio worker), and
//! the adapter that turns `diagnose`'s correlator and classifier into typed [`FindingUpdate`]s.
//! When the engine of issue 12 lands (observe/tick with new/updated/cleared), it replaces
//! [`Live`]; the thread, the channel and the publisher stay.
//!
//! The session runs in segments: a segment ends when the inventory changed (the new one is used
//! from the next segment on: a pod scheduled after start is named), every [`SEGMENT`] (so
//! findings are cleared even on an idle node) and at shutdown. Connections and findings live
//! across segments.

use std::{
    collections::{BTreeMap, HashSet},
    net::IpAddr,
    ops::ControlFlow,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use observer::{
    diagnosis::{classify, Correlator, Finding, Outcome},
    events::model::{Detail, Observation},
    inventory::Inventory,
    loader::filter::KernelFilter,
    session::{Session, SessionConfig},
    stop::StopToken,
};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::update::{FindingKey, FindingUpdate};

/// Connections followed at once; beyond, the oldest are forgotten in batches (their findings
/// were announced when they became conclusive).
const MAX_CONNECTIONS: usize = 65_536;
/// Longest session segment (findings are cleared on this beat when nothing happens).
pub const SEGMENT: Duration = Duration::from_secs(10);
/// Repeats of a finding are sent on at most this often (one `Updated` per finding per beat).
const UPDATE_BEAT: Duration = Duration::from_millis(500);
/// Distinct drop reasons counted by name; more (never seen: the kernel has ~100) count as `other`.
const MAX_REASONS: usize = 256;

/// What the session thread counts, read by the metrics.
#[derive(Debug, Default)]
pub struct SessionStats {
    /// Everything is attached (the session runs).
    pub attached: AtomicBool,
    /// Failed attempts to load and attach (each retried with backoff).
    pub attach_errors: AtomicU64,
    /// In-scope observations handled.
    pub observations: AtomicU64,
    /// Finding updates dropped because the channel to the publisher was full.
    pub updates_lost: AtomicU64,
    /// Ring-buffer records lost in the kernel (ring buffer full), from the programs' counters.
    pub ringbuf_lost: AtomicU64,
    /// NETFILTER_DROP drops passed on without their culprit rule.
    pub drops_not_attributed: AtomicU64,
    /// Connections followed (concluded or not).
    pub connections: AtomicU64,
    /// Kernel drops seen in scope, by drop reason name.
    pub drops_by_reason: Mutex<BTreeMap<String, u64>>,
}

impl SessionStats {
    /// A copy of the drop counts by reason.
    pub fn drops_by_reason(&self) -> BTreeMap<String, u64> {
        self.drops_by_reason.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// Everything the session thread needs.
pub struct SessionSide {
    pub config: SessionConfig,
    pub node: String,
    pub inventory: watch::Receiver<Arc<Inventory>>,
    pub updates: mpsc::Sender<FindingUpdate>,
    pub stats: Arc<SessionStats>,
    /// Ends the current segment (set by [`segment_beat`]) or, with `shutdown`, the run.
    pub segment: StopToken,
    pub shutdown: StopToken,
    /// A finding not seen again for this long is cleared.
    pub clear_after: Duration,
    /// What the node saw of recent flows (answers other nodes' inquiries; crate::crossnode).
    pub flows: Arc<Mutex<observer::diagnosis::flows::FlowMemory>>,
}

/// Starts the session thread.
pub fn spawn(side: SessionSide) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("observer-session".into()).spawn(move || side.run())
}

impl SessionSide {
    fn run(self) {
        let Some(mut session) = self.attach() else { return };
        self.stats.attached.store(true, Ordering::Relaxed);
        let mut live = Live::new(self.node.clone(), self.clear_after);
        let mut inventory = self.inventory.clone();
        while !self.shutdown.is_stopped() {
            let current = Arc::clone(&inventory.borrow_and_update());
            self.segment.flag().store(false, Ordering::Relaxed);
            let result = session.run(Some(&current), |_, observation| {
                self.stats.observations.fetch_add(1, Ordering::Relaxed);
                self.flows.lock().unwrap_or_else(std::sync::PoisonError::into_inner).record(&observation);
                live.observe(&observation, &current, &self.stats);
                if live.beat_due() {
                    self.send(live.beat(Instant::now()));
                }
                ControlFlow::Continue(())
            });
            if let Err(err) = result {
                warn!(error = %format!("{err:#}"), "session: reading events failed; retrying");
                self.stats.attach_errors.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_secs(1));
            }
            self.send(live.beat(Instant::now()));
            self.stats.connections.store(live.correlator.len() as u64 + live.retired, Ordering::Relaxed);
            if let Ok(counters) = session.counters() {
                self.stats.ringbuf_lost.store(counters.kernel.ringbuf_full, Ordering::Relaxed);
                self.stats.drops_not_attributed.store(counters.drops_not_attributed, Ordering::Relaxed);
            }
        }
        self.stats.attached.store(false, Ordering::Relaxed);
    }

    /// Loads and attaches, retrying with backoff (1 s doubling to 30 s) until shutdown.
    fn attach(&self) -> Option<Session> {
        let mut backoff = Duration::from_secs(1);
        while !self.shutdown.is_stopped() {
            let attempt = Session::load(self.config.clone())
                .and_then(|loaded| loaded.start(&KernelFilter::default(), self.segment.clone()));
            match attempt {
                Ok(session) => return Some(session),
                Err(err) => {
                    self.stats.attach_errors.fetch_add(1, Ordering::Relaxed);
                    warn!(error = %format!("{err:#}"), retry_in_secs = backoff.as_secs(), "session: cannot attach");
                    let until = Instant::now() + backoff;
                    while Instant::now() < until && !self.shutdown.is_stopped() {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        None
    }

    fn send(&self, updates: Vec<FindingUpdate>) {
        for update in updates {
            if self.updates.try_send(update).is_err() {
                self.stats.updates_lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Ends a session segment whenever the inventory changes, every [`SEGMENT`], and at shutdown.
pub async fn segment_beat(mut inventory: watch::Receiver<Arc<Inventory>>, segment: StopToken, shutdown: StopToken) {
    let mut beat = tokio::time::interval(SEGMENT);
    loop {
        tokio::select! {
            changed = inventory.changed() => if changed.is_err() { break },
            _ = beat.tick() => {}
        }
        segment.stop();
        if shutdown.is_stopped() {
            break;
        }
    }
    segment.stop();
}

/// A current finding and when it last grew.
struct Current {
    finding: Finding,
    changed: Instant,
    /// Grew since the last `Updated` sent.
    dirty: bool,
}

/// The adapter: `diagnose`'s correlator and classifier, with findings kept current.
pub struct Live {
    node: String,
    clear_after: Duration,
    correlator: Correlator,
    /// Connections whose conclusion was already counted in a finding.
    announced: HashSet<(IpAddr, u16)>,
    findings: BTreeMap<FindingKey, Current>,
    /// New findings not yet sent.
    fresh: Vec<FindingUpdate>,
    last_beat: Instant,
    retired: u64,
}

impl Live {
    pub fn new(node: String, clear_after: Duration) -> Self {
        Self {
            node,
            clear_after,
            correlator: Correlator::with_capacity(MAX_CONNECTIONS),
            announced: HashSet::new(),
            findings: BTreeMap::new(),
            fresh: Vec::new(),
            last_beat: Instant::now(),
            retired: 0,
        }
    }

    /// Adds one observation; a connection that became conclusive (dropped, rejected, no route,
    /// silent after a retransmission) makes or grows a finding.
    pub fn observe(&mut self, observation: &Observation, inventory: &Inventory, stats: &SessionStats) {
        if let Detail::Drop { drop_reason, .. } = &observation.detail {
            let mut reasons = stats.drops_by_reason.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let name = if reasons.len() < MAX_REASONS || reasons.contains_key(drop_reason.name.as_ref()) {
                drop_reason.name.to_string()
            } else {
                "other".to_string()
            };
            *reasons.entry(name).or_default() += 1;
        }
        let touched = self.correlator.add(observation);
        // The correlator holds a bounded LRU of connections: those it pushed out are retired.
        for c in self.correlator.take_evicted() {
            self.announced.remove(&c.client);
            self.retired += 1;
        }
        let Some(client) = touched else { return };
        let Some(c) = self.correlator.get(client) else { return };
        let conclusive = matches!(
            c.outcome(),
            Outcome::Dropped { .. } | Outcome::Rejected { .. } | Outcome::NoRoute { .. } | Outcome::Silent
        );
        if !conclusive || self.announced.contains(&client) {
            return;
        }
        let Some(finding) = classify(c, &self.node, &inventory.pod_cidrs) else { return };
        self.announced.insert(client);
        self.add(finding, Instant::now());
    }

    /// Folds one connection's finding into the current ones.
    pub fn add(&mut self, finding: Finding, now: Instant) {
        let key = FindingKey::of(&finding);
        match self.findings.get_mut(&key) {
            Some(current) => {
                let (g, e) = (&mut current.finding, &finding.evidence);
                g.evidence.attempts += e.attempts;
                g.evidence.connections += e.connections;
                if e.last_seen > g.evidence.last_seen {
                    g.evidence.last_seen = e.last_seen;
                }
                if finding.culprit.as_ref().map(|c| c.confidence) > g.culprit.as_ref().map(|c| c.confidence) {
                    g.culprit = finding.culprit;
                }
                current.changed = now;
                current.dirty = true;
            }
            None => {
                info!(
                    requirement = ?finding.requirement,
                    kind = ?finding.kind,
                    src = %key.src,
                    dst = %format!("{}:{}", key.dst, key.port),
                    "finding: new"
                );
                self.fresh.push(FindingUpdate::New(finding.clone()));
                self.findings.insert(key, Current { finding, changed: now, dirty: false });
            }
        }
    }

    fn beat_due(&self) -> bool {
        !self.fresh.is_empty() || self.last_beat.elapsed() >= UPDATE_BEAT
    }

    /// The updates due now: new findings, grown ones (once per beat), cleared ones.
    pub fn beat(&mut self, now: Instant) -> Vec<FindingUpdate> {
        let mut out = std::mem::take(&mut self.fresh);
        if now.saturating_duration_since(self.last_beat) >= UPDATE_BEAT {
            self.last_beat = now;
            for current in self.findings.values_mut().filter(|c| c.dirty) {
                current.dirty = false;
                out.push(FindingUpdate::Updated(current.finding.clone()));
            }
        }
        let clear_after = self.clear_after;
        let stale: Vec<FindingKey> = self
            .findings
            .iter()
            .filter(|(_, c)| now.saturating_duration_since(c.changed) >= clear_after)
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            self.findings.remove(&key);
            info!(src = %key.src, dst = %format!("{}:{}", key.dst, key.port), "finding: cleared");
            out.push(FindingUpdate::Cleared(key));
        }
        out
    }
}

#[cfg(test)]
mod tests;
