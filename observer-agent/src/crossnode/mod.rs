//! Between nodes, through the Kubernetes API (docs/agent.md "Between nodes"):
//! - a silent finding (a handshake never answered) whose destination pod runs on another node
//!   makes this agent ask that node's agent, with an inquiry Event ([`wire`]), what it saw of the
//!   flow in the finding's window; inquiries are rate-limited and deduplicated ([`budget`]);
//! - this agent answers the inquiries addressed to its node, for flows whose destination is one
//!   of its pods, from its flow memory ([`observer::diagnosis::flows`]);
//! - an answer (or its absence after [`ANSWER_TIMEOUT`]) decides the finding's `path`
//!   ([`observer::diagnosis::path::locate`]); the finding's Kubernetes Event waits for it (at most
//!   that long) so its note carries the path;
//! - a Warning Event recording a webhook call that timed out ([`webhook`]) to one of this node's
//!   pods, with no SYN of it seen arriving in the call's window, is an R5 `control-plane-blocked`
//!   `silent` finding with path `before-node`.
//!
//! The agent loop calls [`CrossNode::on_update`] on each finding update and
//! [`CrossNode::take_resolved`] on its beat; everything else runs in this module's task.

mod budget;
mod task;
mod webhook;
pub mod wire;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use kube::Client;
use observer::{
    diagnosis::{flows::FlowMemory, path::Path, Finding, Mechanism},
    inventory::Inventory,
};
use tokio::sync::mpsc;

use observer::diagnosis::{
    report::{self, FindingKey},
    FindingUpdate,
};

use crate::state::Shared;

/// How long after the inquiry's window an answer is waited for; then the path is `unknown`.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);
/// Slack around a finding's first and last sighting in an inquiry's window (the clocks of two
/// nodes differ a little; NTP keeps them within milliseconds).
pub const WINDOW_SLACK: Duration = Duration::from_secs(2);
/// The destination answers once its own events of the window have arrived: this long after it.
pub const ANSWER_DELAY: Duration = Duration::from_secs(1);
/// Paths remembered (findings' keys); beyond, the oldest are forgotten.
const MAX_PATHS: usize = 4096;
/// Inquiries waiting for the task; beyond, they are counted as rate-limited.
const ASKS_CHANNEL: usize = 64;

/// A question for the task: ask `to_node` about `client -> server:port` in `window`.
#[derive(Clone, Debug)]
struct Ask {
    key: FindingKey,
    client: IpAddr,
    server: IpAddr,
    port: u16,
    to_node: String,
    window: (SystemTime, SystemTime),
}

#[derive(Default)]
struct State {
    /// Findings whose Event waits for their path, since when.
    held: BTreeMap<FindingKey, Instant>,
    /// Decided paths by finding (insertion order kept for the bound).
    paths: BTreeMap<FindingKey, Path>,
    order: std::collections::VecDeque<FindingKey>,
    /// Findings whose path was decided (or given up on) since the last beat.
    resolved: Vec<FindingKey>,
}

impl State {
    fn decide(&mut self, key: FindingKey, path: Option<Path>) {
        if let Some(path) = path {
            if self.paths.insert(key.clone(), path).is_none() {
                self.order.push_back(key.clone());
            }
            while self.order.len() > MAX_PATHS {
                if let Some(old) = self.order.pop_front() {
                    self.paths.remove(&old);
                }
            }
        }
        self.held.remove(&key);
        self.resolved.push(key);
    }
}

/// The handle the agent loop holds.
pub struct CrossNode {
    node: String,
    asks: mpsc::Sender<Ask>,
    state: Arc<Mutex<State>>,
    shared: Arc<Shared>,
}

impl CrossNode {
    /// Starts the task (inquiries, answers, webhook Events) and returns the loop's handle.
    /// `updates` takes the `before-node` findings (the same channel as the session's).
    pub fn start(
        client: Client,
        shared: Arc<Shared>,
        flows: Arc<Mutex<FlowMemory>>,
        updates: mpsc::Sender<FindingUpdate>,
    ) -> Self {
        let (asks, asks_rx) = mpsc::channel(ASKS_CHANNEL);
        let state = Arc::new(Mutex::new(State::default()));
        let node = shared.node.clone();
        tokio::spawn(task::Task::new(client, Arc::clone(&shared), flows, Arc::clone(&state), updates).run(asks_rx));
        Self { node, asks, state, shared }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Before an update is applied: a decided path is attached to the finding; a silent
    /// cross-node finding not asked about yet is asked about. Returns whether the finding's
    /// Event should wait (its path is being found out).
    pub fn on_update(&self, update: &mut FindingUpdate) -> bool {
        let f = match update {
            FindingUpdate::New(f) | FindingUpdate::Updated(f) => f,
            FindingUpdate::Cleared(f) => {
                let key = report::key(f);
                let mut state = self.state();
                state.held.remove(&key);
                state.paths.remove(&key);
                return false;
            }
        };
        let key = report::key(f);
        let mut state = self.state();
        if let Some(path) = state.paths.get(&key) {
            if f.path.is_none() {
                f.path = Some(path.clone());
            }
            return false;
        }
        if state.held.contains_key(&key) {
            return true;
        }
        let inventory = self.shared.inventory.borrow().clone();
        let Some(ask) = ask_for(f, &key, &self.node, &inventory) else { return false };
        match self.asks.try_send(ask) {
            Ok(()) => {
                state.held.insert(key, Instant::now());
                true
            }
            Err(_) => {
                self.shared.metrics.crossnode("inquiry", "rate_limited");
                false
            }
        }
    }

    /// The current findings whose path was decided since the last call, with their path (to be
    /// applied and published again), and those given up on (published without one).
    pub fn take_resolved(&self) -> Vec<Finding> {
        let (keys, paths) = {
            let mut state = self.state();
            // A finding held too long (the task is stuck or gone) is published without a path.
            let stale: Vec<FindingKey> =
                state.held.iter().filter(|(_, t)| t.elapsed() > ANSWER_TIMEOUT * 4).map(|(k, _)| k.clone()).collect();
            for key in stale {
                state.decide(key, None);
            }
            let keys = std::mem::take(&mut state.resolved);
            let paths: Vec<Option<Path>> = keys.iter().map(|k| state.paths.get(k).cloned()).collect();
            (keys, paths)
        };
        let findings = self.shared.findings.read().unwrap_or_else(PoisonError::into_inner);
        keys.iter()
            .zip(paths)
            .filter_map(|(key, path)| {
                let mut f = findings.get(key)?.clone();
                if path.is_some() {
                    f.path = path;
                }
                Some(f)
            })
            .collect()
    }
}

/// The inquiry a finding calls for: a silent handshake from one of this node's pods to a pod
/// the inventory places on another node. None otherwise (nothing to ask, nobody to ask).
fn ask_for(f: &Finding, key: &FindingKey, node: &str, inventory: &Inventory) -> Option<Ask> {
    if f.mechanism != Mechanism::Silent {
        return None;
    }
    let client = f.src.ip?;
    let port = f.dst.port?;
    let mine = |ip: IpAddr| inventory.pod_by_ip(ip).and_then(|p| p.node.as_deref()) == Some(node);
    if !mine(client) {
        return None;
    }
    // The destination pod: the address itself, else the pod the finding names (after DNAT).
    let server = f.dst.ip.filter(|ip| inventory.pod_by_ip(*ip).is_some()).or_else(|| {
        let named = f.dst.pod.as_ref()?;
        inventory.pods.iter().find(|p| &p.key() == named)?.ips.first().copied()
    })?;
    let to_node = inventory.pod_by_ip(server)?.node.clone().filter(|n| n != node)?;
    let from = f.evidence.first_seen.checked_sub(WINDOW_SLACK).unwrap_or(f.evidence.first_seen);
    Some(Ask { key: key.clone(), client, server, port, to_node, window: (from, f.evidence.last_seen + WINDOW_SLACK) })
}

#[cfg(test)]
mod tests;
