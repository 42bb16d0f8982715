//! The eBPF session on its own std thread (setns is per thread, so never a tokio worker),
//! driving `diagnose`'s engine ([`observer::live::LiveEngine`]: SNAT follow, culprit wait,
//! 30 s idle conclusion, bounded LRU) and handing its typed [`FindingUpdate`]s to the async
//! side over a bounded channel whose overflow is counted.
//!
//! The session runs in segments, one [`LiveEngine::run`] each: a segment ends when the inventory
//! changed (the new one names observations and classifies from the next segment on: a pod
//! scheduled after start is named), every [`SEGMENT`] (the kernel's counters are read between
//! segments) and at shutdown. The engine, its connections and findings live across segments.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use observer::{
    diagnosis::{report, Engine, EngineConfig, FindingUpdate},
    events::model::{Detail, Observation},
    inventory::Inventory,
    live::LiveEngine,
    loader::filter::KernelFilter,
    session::{Session, SessionConfig},
    sinks::{log::Log, Sink as _},
    stop::StopToken,
};
use tokio::sync::{mpsc, watch};
use tracing::warn;

/// Longest session segment: the kernel's counters (ring-buffer losses, drops passed on without
/// their culprit) are read on this beat.
pub const SEGMENT: Duration = Duration::from_secs(10);
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
    /// Connections followed (concluded, and held now).
    pub connections: AtomicU64,
    /// Kernel drops seen in scope, by drop reason name.
    pub drops_by_reason: Mutex<BTreeMap<String, u64>>,
}

impl SessionStats {
    /// A copy of the drop counts by reason.
    pub fn drops_by_reason(&self) -> BTreeMap<String, u64> {
        self.drops_by_reason.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Counts one in-scope observation (and its drop reason, for a drop).
    pub fn observed(&self, observation: &Observation) {
        self.observations.fetch_add(1, Ordering::Relaxed);
        if let Detail::Drop { drop_reason, .. } = &observation.detail {
            let mut reasons = self.drops_by_reason.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let name = if reasons.len() < MAX_REASONS || reasons.contains_key(drop_reason.name.as_ref()) {
                drop_reason.name.to_string()
            } else {
                "other".to_string()
            };
            *reasons.entry(name).or_default() += 1;
        }
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
    /// A finding not seen again for this long is cleared ([`EngineConfig::expire`]).
    pub expire: Duration,
    /// What the node saw of recent flows (answers other nodes' inquiries; crate::crossnode).
    pub flows: Arc<Mutex<observer::diagnosis::flows::FlowMemory>>,
}

/// Starts the session thread.
pub fn spawn(side: SessionSide) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("observer-session".into()).spawn(move || side.run())
}

impl SessionSide {
    fn run(mut self) {
        let Some(mut session) = self.attach() else { return };
        self.stats.attached.store(true, Ordering::Relaxed);
        let config = EngineConfig { expire: Some(self.expire), ..EngineConfig::new(self.node.clone()) };
        let first = Arc::clone(&self.inventory.borrow());
        let mut live = LiveEngine::new(&mut session, Engine::new(config, first));
        let mut log = Log::default();
        while !self.shutdown.is_stopped() {
            // Reset before reading the inventory: a change after this ends the segment at once.
            self.segment.flag().store(false, Ordering::Relaxed);
            let current = Arc::clone(&self.inventory.borrow_and_update());
            live.engine.set_inventory(Arc::clone(&current));
            let (stats, updates, flows) = (&self.stats, &self.updates, &self.flows);
            let result = live.run(
                &mut session,
                Some(&current),
                |observation| {
                    stats.observed(observation);
                    flows.lock().unwrap_or_else(std::sync::PoisonError::into_inner).record(observation);
                },
                |batch| send(updates, stats, &mut log, batch),
            );
            if let Err(err) = result {
                warn!(error = %format!("{err:#}"), "session: reading events failed; retrying");
                self.stats.attach_errors.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_secs(1));
            }
            let engine = &live.engine;
            let connections = engine.stats().connections + engine.connections_held();
            self.stats.connections.store(connections as u64, Ordering::Relaxed);
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
}

/// Logs a batch of the engine's updates (new and cleared findings) and hands it on, coalesced;
/// what the full channel cannot take is counted as lost (the next update of the same finding
/// carries its whole state again).
fn send(updates: &mpsc::Sender<FindingUpdate>, stats: &SessionStats, log: &mut Log, batch: Vec<FindingUpdate>) {
    for update in coalesce(batch) {
        log.finding(&update);
        if updates.try_send(update).is_err() {
            stats.updates_lost.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Keeps the last update per finding of one batch (each carries the finding's whole state, so
/// the earlier ones add nothing), in the order findings first appear; an update after a `New`
/// stays `New` (the consumer has not seen the finding yet). A tick concluding a flood of
/// connections of one flow thus sends one update, not one per connection.
pub fn coalesce(batch: Vec<FindingUpdate>) -> Vec<FindingUpdate> {
    if batch.len() < 2 {
        return batch;
    }
    let mut out: Vec<FindingUpdate> = Vec::new();
    let mut at: BTreeMap<report::FindingKey, usize> = BTreeMap::new();
    for update in batch {
        let key = report::key(update.finding());
        match at.get(&key) {
            Some(&i) => {
                out[i] = match (&out[i], update) {
                    (FindingUpdate::New(_), FindingUpdate::Updated(f)) => FindingUpdate::New(f),
                    (_, later) => later,
                };
            }
            None => {
                at.insert(key, out.len());
                out.push(update);
            }
        }
    }
    out
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

#[cfg(test)]
mod tests;
