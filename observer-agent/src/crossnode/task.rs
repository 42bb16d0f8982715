//! The cross-node task: sends inquiries, answers the ones addressed to this node, turns answers
//! (or their absence) into paths, and reads webhook timeouts from Warning Events.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{atomic::Ordering, Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use futures::StreamExt as _;
use k8s_openapi::api::{core::v1::Event as CoreEvent, events::v1::Event};
use kube::{
    api::PostParams,
    runtime::{watcher, WatchStreamExt as _},
    Api, Client,
};
use observer::diagnosis::{
    flows::{FlowMemory, FlowQuery, FlowReport},
    path,
};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{
    budget::{Budget, Verdict},
    webhook, wire, Ask, State, ANSWER_DELAY, ANSWER_TIMEOUT,
};
use observer::{diagnosis::FindingUpdate, inventory::Role};

use crate::state::Shared;

/// Inquiries answered or webhook Events handled, remembered (names) so that a relisted Event is
/// not handled twice.
const MAX_SEEN: usize = 4096;
/// Webhook Events are judged this long after the call's end (the node's events have arrived).
const WEBHOOK_DELAY: Duration = Duration::from_secs(2);
/// Slack before a webhook call's start (the Event's time minus the call's timeout).
const WEBHOOK_SLACK: Duration = Duration::from_secs(5);

/// An inquiry sent, waiting for its answer.
struct Pending {
    key: observer::diagnosis::report::FindingKey,
    to_node: String,
    query: FlowQuery,
    deadline: SystemTime,
}

/// A webhook timeout to judge once its window has passed.
struct WebhookCheck {
    event: String,
    timed_out: webhook::TimedOut,
    window: (SystemTime, SystemTime),
    count: u32,
}

pub(super) struct Task {
    client: Client,
    shared: Arc<Shared>,
    flows: Arc<Mutex<FlowMemory>>,
    state: Arc<Mutex<State>>,
    updates: mpsc::Sender<FindingUpdate>,
    budget: Budget,
    pending: HashMap<String, Pending>,
    /// Inquiries to answer once their window has passed: (due, name, inquiry).
    to_answer: Vec<(SystemTime, String, wire::Inquiry)>,
    webhooks: Vec<(SystemTime, WebhookCheck)>,
    seen: HashSet<String>,
    seen_order: VecDeque<String>,
    /// Since when the eBPF session has been attached without interruption (None: not attached):
    /// the flow memory holds evidence only from then on.
    watching_since: Option<SystemTime>,
}

impl Task {
    pub(super) fn new(
        client: Client,
        shared: Arc<Shared>,
        flows: Arc<Mutex<FlowMemory>>,
        state: Arc<Mutex<State>>,
        updates: mpsc::Sender<FindingUpdate>,
    ) -> Self {
        Self {
            client,
            shared,
            flows,
            state,
            updates,
            budget: Budget::new(Instant::now()),
            pending: HashMap::new(),
            to_answer: Vec::new(),
            webhooks: Vec::new(),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            watching_since: None,
        }
    }

    fn node(&self) -> &str {
        &self.shared.node
    }

    pub(super) async fn run(mut self, mut asks: mpsc::Receiver<Ask>) {
        let events: Api<CoreEvent> = Api::all(self.client.clone());
        let watch = |fields: String| {
            watcher(events.clone(), watcher::Config::default().fields(&fields)).default_backoff().applied_objects()
        };
        let mut inquiries = Box::pin(watch(wire::selector(self.node(), wire::INQUIRY_REASON)));
        let mut answers = Box::pin(watch(wire::selector(self.node(), wire::ANSWER_REASON)));
        let mut warnings = Box::pin(watch("type=Warning".to_string()));
        let mut beat = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                ask = asks.recv() => match ask {
                    Some(ask) => self.ask(ask).await,
                    None => break,
                },
                e = inquiries.next() => match e {
                    Some(Ok(e)) => self.inquired(&e),
                    Some(Err(err)) => debug!(error = %err, "cross-node: inquiry watch"),
                    None => break,
                },
                e = answers.next() => match e {
                    Some(Ok(e)) => self.answered(&e),
                    Some(Err(err)) => debug!(error = %err, "cross-node: answer watch"),
                    None => break,
                },
                e = warnings.next() => match e {
                    Some(Ok(e)) => self.warning(&e),
                    Some(Err(err)) => debug!(error = %err, "cross-node: warning watch"),
                    None => break,
                },
                _ = beat.tick() => self.beat().await,
            }
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self, message: &str, result: &str) {
        self.shared.metrics.crossnode(message, result);
    }

    /// Remembers a handled Event name; false if it was handled before.
    fn first_time(&mut self, name: &str) -> bool {
        if !self.seen.insert(name.to_string()) {
            return false;
        }
        self.seen_order.push_back(name.to_string());
        while self.seen_order.len() > MAX_SEEN {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }

    /// What this node saw of `q`: complete only if the session watched the whole window.
    fn report(&self, q: &FlowQuery) -> FlowReport {
        let mut r = self.flows.lock().unwrap_or_else(PoisonError::into_inner).report(self.node(), q);
        r.complete &= self.watching_since.is_some_and(|since| since <= q.from);
        r
    }

    async fn ask(&mut self, ask: Ask) {
        match self.budget.check((ask.client, ask.server, ask.port), Instant::now()) {
            Verdict::Send => {}
            Verdict::Duplicate => {
                self.count("inquiry", "deduplicated");
                self.state().decide(ask.key, None);
                return;
            }
            Verdict::RateLimited => {
                self.count("inquiry", "rate_limited");
                self.state().decide(ask.key, None);
                return;
            }
        }
        let query = FlowQuery {
            client: Some(ask.client),
            server: ask.server,
            port: ask.port,
            from: ask.window.0,
            until: ask.window.1,
        };
        let inquiry = wire::Inquiry { from_node: self.node().to_string(), to_node: ask.to_node.clone(), query };
        let name = wire::inquiry_name(&inquiry);
        let Some(event) = wire::inquiry_event(&inquiry) else { return };
        let api: Api<Event> = Api::namespaced(self.client.clone(), wire::NAMESPACE);
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {
                info!(to = %ask.to_node, flow = %format!("{} -> {}:{}", ask.client, ask.server, ask.port), "cross-node: inquiry sent");
                self.count("inquiry", "sent");
                let deadline = inquiry.query.until.max(SystemTime::now()) + ANSWER_DELAY + ANSWER_TIMEOUT;
                self.pending
                    .insert(name, Pending { key: ask.key, to_node: ask.to_node, query: inquiry.query, deadline });
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                // Written before (the same question): its answer is still awaited.
                self.count("inquiry", "deduplicated");
                let deadline = inquiry.query.until.max(SystemTime::now()) + ANSWER_DELAY + ANSWER_TIMEOUT;
                self.pending
                    .insert(name, Pending { key: ask.key, to_node: ask.to_node, query: inquiry.query, deadline });
            }
            Err(err) => {
                warn!(error = %err, "cross-node: inquiry not written");
                self.count("inquiry", "failed");
                self.state().decide(ask.key, None);
            }
        }
    }

    /// An inquiry about this node: answered later (once its window has passed) if the flow's
    /// destination is one of this node's pods and the inquiry is recent.
    fn inquired(&mut self, e: &CoreEvent) {
        let Some((name, inquiry, created)) = wire::read_inquiry(e) else { return };
        if inquiry.to_node != self.node() || !self.first_time(&name) {
            return;
        }
        self.count("inquiry", "received");
        if SystemTime::now().duration_since(created).unwrap_or_default() > wire::INQUIRY_TTL {
            self.count("inquiry", "expired");
            return;
        }
        let inventory = self.shared.inventory.borrow().clone();
        let ours = inventory.pod_by_ip(inquiry.query.server).and_then(|p| p.node.as_deref()) == Some(self.node());
        if !ours {
            self.count("inquiry", "not_destination");
            return;
        }
        self.to_answer.push((inquiry.query.until + ANSWER_DELAY, name, inquiry));
    }

    async fn answer(&mut self, name: String, inquiry: wire::Inquiry) {
        let report = self.report(&inquiry.query);
        let answer = wire::Answer {
            inquiry: name,
            from_node: self.node().to_string(),
            to_node: inquiry.from_node,
            query: inquiry.query,
            report,
        };
        let Some(event) = wire::answer_event(&answer) else { return };
        let api: Api<Event> = Api::namespaced(self.client.clone(), wire::NAMESPACE);
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {
                info!(to = %answer.to_node, seen = answer.report.saw_request(), "cross-node: answer sent");
                self.count("answer", "sent");
            }
            Err(kube::Error::Api(status)) if status.code == 409 => self.count("answer", "deduplicated"),
            Err(err) => {
                warn!(error = %err, "cross-node: answer not written");
                self.count("answer", "failed");
            }
        }
    }

    /// An answer to one of our inquiries decides its finding's path.
    fn answered(&mut self, e: &CoreEvent) {
        let Some(answer) = wire::read_answer(e) else { return };
        if answer.to_node != self.node() {
            return;
        }
        let Some(pending) = self.pending.remove(&answer.inquiry) else { return };
        self.count("answer", "received");
        let own = self.report(&pending.query);
        let path = path::locate(self.node(), &pending.to_node, &own, Some(&answer.report));
        info!(location = ?path.location, to = %pending.to_node, "cross-node: path decided");
        self.state().decide(pending.key, Some(path));
    }

    fn warning(&mut self, e: &CoreEvent) {
        let Some(timed_out) = e.message.as_deref().and_then(webhook::parse) else { return };
        let name = format!(
            "{}/{}",
            e.metadata.namespace.clone().unwrap_or_default(),
            e.metadata.name.clone().unwrap_or_default()
        );
        let end = last_seen(e);
        let count = e.series.as_ref().and_then(|s| s.count).or(e.count).unwrap_or(1).max(1) as u32;
        // A repeat (series or count grown) is judged again.
        if !self.first_time(&format!("{name}@{count}")) {
            return;
        }
        let start = end.checked_sub(timed_out.timeout + WEBHOOK_SLACK).unwrap_or(end);
        let check = WebhookCheck { event: name, timed_out, window: (start, end + ANSWER_DELAY), count };
        self.webhooks.push((end + WEBHOOK_DELAY, check));
    }

    /// Judges a webhook timeout: for each of this node's istiod pods the call was meant for, no
    /// SYN seen arriving in the window (complete memory) -> a before-node finding. Another
    /// admission webhook's timeout (Kyverno, cert-manager, ...) is no Istio requirement: it is
    /// not judged (R5 is the API server reaching istiod, ../shared/ISTIO.md).
    async fn judge(&mut self, check: WebhookCheck) {
        let inventory = self.shared.inventory.borrow().clone();
        for (ip, port) in webhook::targets(&check.timed_out.called, &inventory) {
            let Some(pod) = inventory.pod_by_ip(ip).filter(|p| p.node.as_deref() == Some(self.node())) else {
                continue;
            };
            if pod.role != Role::Istiod {
                info!(event = %check.event, pod = %pod.key(), "webhook timeout: not Istio's control plane");
                self.count("webhook", "not_istio");
                continue;
            }
            let q = FlowQuery { client: None, server: ip, port, from: check.window.0, until: check.window.1 };
            let seen = self.report(&q);
            let apiserver = webhook::apiserver(&inventory);
            let Some(path) = path::before_node(self.node(), &seen, apiserver.clone(), check.event.clone()) else {
                let why = if seen.complete { "a SYN arrived" } else { "the window is not fully observed" };
                info!(event = %check.event, pod = %pod.key(), why, "webhook timeout: not before-node");
                self.count("webhook", "not_before_node");
                continue;
            };
            let call = webhook::Call { node: self.node(), pod, ip, port, count: check.count, window: check.window };
            let finding = webhook::finding(&call, &check.timed_out.webhook, &inventory, apiserver, path);
            info!(event = %check.event, pod = %pod.key(), "webhook timeout: before-node");
            self.count("webhook", "before_node");
            let update = FindingUpdate::New(finding);
            if self.updates.try_send(update).is_err() {
                self.shared.session.updates_lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    async fn beat(&mut self) {
        let attached = self.shared.session.attached.load(Ordering::Relaxed);
        match (attached, self.watching_since) {
            (true, None) => self.watching_since = Some(SystemTime::now()),
            (false, Some(_)) => self.watching_since = None,
            _ => {}
        }
        let now = SystemTime::now();
        let (due, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.to_answer).into_iter().partition(|(t, ..)| *t <= now);
        self.to_answer = later;
        for (_, name, inquiry) in due {
            self.answer(name, inquiry).await;
        }
        let (due, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.webhooks).into_iter().partition(|(t, _)| *t <= now);
        self.webhooks = later;
        for (_, check) in due {
            self.judge(check).await;
        }
        let expired: Vec<String> =
            self.pending.iter().filter(|(_, p)| p.deadline <= now).map(|(n, _)| n.clone()).collect();
        for name in expired {
            let Some(p) = self.pending.remove(&name) else { continue };
            self.count("answer", "timed_out");
            let own = self.report(&p.query);
            let path = path::locate(self.node(), &p.to_node, &own, None);
            info!(to = %p.to_node, "cross-node: no answer; path unknown");
            self.state().decide(p.key, Some(path));
        }
    }
}

/// When a (possibly repeated) Event last happened: its series' last observation, its
/// lastTimestamp, its eventTime, its creation.
fn last_seen(e: &CoreEvent) -> SystemTime {
    e.series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref())
        .map(|t| SystemTime::from(t.0))
        .unwrap_or_else(|| wire::created(e))
}
