//! Prometheus metrics (prometheus-client), all prefixed `observer_`. Label sets are bounded:
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `observer_findings` | gauge: current findings | `requirement` (R1..R5), `kind`, `mechanism`, `src_workload`, `dst_service`, `istio_port` |
//! | `observer_finding_updates_total` | counter | `update` (new, updated, cleared) |
//! | `observer_kernel_drops_total` | counter | `reason` (the kernel's `skb_drop_reason` name) |
//! | `observer_events_lost_total` | counter | `source` (ringbuf, findings_channel) |
//! | `observer_drops_not_attributed_total` | counter | — |
//! | `observer_observations_total` | counter | — |
//! | `observer_attach_errors_total` | counter | — |
//! | `observer_attached` | gauge 0/1 | — |
//! | `observer_inventory_synced` | gauge 0/1 | — |
//! | `observer_inventory_age_seconds` | gauge | — |
//! | `observer_inventory_objects` | gauge | `kind` |
//! | `observer_inventory_lists_total`, `observer_inventory_watch_errors_total` | counter | `kind` |
//! | `observer_inventory_build_errors_total` | counter | — |
//! | `observer_kubernetes_events_total` | counter | `result` (created, updated, recreated, rate_limited, failed, no_pod) |
//! | `observer_crossnode_messages_total` | counter | `message` (inquiry, answer, webhook), `result` (sent, received, rate_limited, deduplicated, expired, not_destination, timed_out, failed, before_node, not_before_node, not_istio) |
//! | `observer_build_info` | gauge 1 | `version` |
//!
//! `src_workload` and `dst_service` are bounded by the inventory; in addition at most
//! [`MAX_FINDING_SERIES`] distinct finding label sets are kept: beyond, a finding is counted
//! under the label set whose every value is `other`.

use std::{
    collections::HashSet,
    sync::{atomic::Ordering, Mutex},
};

use observer::diagnosis::Finding;
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::state::Shared;

/// Distinct `observer_findings` label sets kept (documented bound).
pub const MAX_FINDING_SERIES: usize = 500;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FindingLabels {
    pub requirement: String,
    pub kind: String,
    pub mechanism: String,
    pub src_workload: String,
    pub dst_service: String,
    pub istio_port: String,
}

impl FindingLabels {
    pub fn of(f: &Finding) -> Self {
        Self {
            requirement: format!("{:?}", f.requirement),
            kind: plain(&f.kind),
            mechanism: plain(&f.mechanism),
            src_workload: f.src.workload.clone().or_else(|| f.src.pod.clone()).unwrap_or_default(),
            dst_service: f.dst.service.clone().or_else(|| f.dst.pod.clone()).unwrap_or_default(),
            istio_port: f.dst.istio_port.unwrap_or("").to_string(),
        }
    }

    fn other() -> Self {
        let o = || "other".to_string();
        Self { requirement: o(), kind: o(), mechanism: o(), src_workload: o(), dst_service: o(), istio_port: o() }
    }
}

/// The kebab-case name serde gives a unit enum value.
pub fn plain<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

macro_rules! label {
    ($name:ident, $field:ident) => {
        #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
        struct $name {
            $field: String,
        }
    };
}
label!(Reason, reason);
label!(Source, source);
label!(KindLabel, kind);
label!(ResultLabel, result);
label!(UpdateLabel, update);
label!(Version, version);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CrossNodeLabels {
    message: String,
    result: String,
}

/// Registers each `(name, help, metric)` with `registry` (a clone of the metric: the families and
/// counters share their state with the clones).
macro_rules! register {
    ($registry:ident, $(($name:literal, $help:literal, $metric:expr)),+ $(,)?) => {
        $( $registry.register($name, $help, $metric.clone()); )+
    };
}

/// The registry and its families.
pub struct Metrics {
    registry: Registry,
    findings: Family<FindingLabels, Gauge>,
    finding_series: Mutex<HashSet<FindingLabels>>,
    finding_updates: Family<UpdateLabel, Counter>,
    drops: Family<Reason, Counter>,
    lost: Family<Source, Counter>,
    not_attributed: Counter,
    observations: Counter,
    attach_errors: Counter,
    attached: Gauge,
    synced: Gauge,
    age: Gauge<f64, std::sync::atomic::AtomicU64>,
    objects: Family<KindLabel, Gauge>,
    lists: Family<KindLabel, Counter>,
    watch_errors: Family<KindLabel, Counter>,
    build_errors: Counter,
    k8s_events: Family<ResultLabel, Counter>,
    crossnode: Family<CrossNodeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("observer");
        let m = Self {
            findings: Family::default(),
            finding_series: Mutex::new(HashSet::new()),
            finding_updates: Family::default(),
            drops: Family::default(),
            lost: Family::default(),
            not_attributed: Counter::default(),
            observations: Counter::default(),
            attach_errors: Counter::default(),
            attached: Gauge::default(),
            synced: Gauge::default(),
            age: Gauge::default(),
            objects: Family::default(),
            lists: Family::default(),
            watch_errors: Family::default(),
            build_errors: Counter::default(),
            k8s_events: Family::default(),
            crossnode: Family::default(),
            registry: Registry::default(),
        };
        // name (prefixed `observer_`; counters get `_total`), help, metric: the table of the module doc.
        register!(
            registry,
            ("findings", "Current findings (Istio requirement broken by the infrastructure)", m.findings),
            ("finding_updates", "Finding updates (new, updated, cleared)", m.finding_updates),
            ("kernel_drops", "Packets dropped by the kernel in the node's namespaces, by drop reason", m.drops),
            ("events_lost", "Events lost: kernel ring buffer full, or channel to the publisher full", m.lost),
            ("drops_not_attributed", "Netfilter drops reported without their culprit rule", m.not_attributed),
            ("observations", "Observations handled (in scope)", m.observations),
            ("attach_errors", "Failed attempts to load and attach the eBPF programs", m.attach_errors),
            ("attached", "1 when the eBPF programs are attached", m.attached),
            ("inventory_synced", "1 once every watched kind has been listed", m.synced),
            (
                "inventory_age_seconds",
                "Seconds since the inventory was last known current (0 while every watch is up)",
                m.age
            ),
            ("inventory_objects", "Objects in the inventory, by kind", m.objects),
            ("inventory_lists", "Completed lists (first list and relists), by kind", m.lists),
            ("inventory_watch_errors", "Watch and list errors, by kind", m.watch_errors),
            (
                "inventory_build_errors",
                "Inventory rebuilds that failed (the previous inventory stayed in use)",
                m.build_errors
            ),
            ("kubernetes_events", "Kubernetes Event writes, by result", m.k8s_events),
        );
        registry.register(
            "crossnode_messages",
            "Cross-node inquiries and answers through the Kubernetes API, and webhook timeouts judged, by result",
            m.crossnode.clone(),
        );
        for (message, result) in [
            ("inquiry", "sent"),
            ("inquiry", "received"),
            ("inquiry", "rate_limited"),
            ("answer", "sent"),
            ("answer", "received"),
        ] {
            // Exported at 0 from the start (a healthy node's inquiry rate is zero, not absent).
            m.crossnode.get_or_create(&CrossNodeLabels { message: message.into(), result: result.into() }).inc_by(0);
        }
        let build: Family<Version, Gauge> = Family::default();
        build.get_or_create(&Version { version: env!("CARGO_PKG_VERSION").to_string() }).set(1);
        registry.register("build_info", "Build information", build);
        Self { registry, ..m }
    }

    /// A finding became current (`+1`) or was cleared (`-1`).
    pub fn finding(&self, f: &Finding, delta: i64) {
        let labels = FindingLabels::of(f);
        let mut series = self.finding_series.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let labels = if series.contains(&labels) || series.len() < MAX_FINDING_SERIES {
            series.insert(labels.clone());
            labels
        } else {
            FindingLabels::other()
        };
        self.findings.get_or_create(&labels).inc_by(delta);
    }

    /// Counts a finding update by its kind (new, updated, cleared).
    pub fn update(&self, what: &str) {
        self.finding_updates.get_or_create(&UpdateLabel { update: what.to_string() }).inc();
    }

    /// Counts a Kubernetes Event write by result.
    pub fn k8s_event(&self, result: &str) {
        self.k8s_events.get_or_create(&ResultLabel { result: result.to_string() }).inc();
    }

    /// Counts a cross-node message (`inquiry`, `answer`, `webhook`) by result.
    pub fn crossnode(&self, message: &str, result: &str) {
        self.crossnode.get_or_create(&CrossNodeLabels { message: message.into(), result: result.into() }).inc();
    }

    /// The text exposition, after copying the session's and the feed's counters in.
    pub fn render(&self, shared: &Shared) -> String {
        let s = &shared.session;
        for (reason, total) in s.drops_by_reason() {
            raise(&self.drops.get_or_create(&Reason { reason }), total);
        }
        raise(&self.lost.get_or_create(&Source { source: "ringbuf".into() }), s.ringbuf_lost.load(Ordering::Relaxed));
        raise(
            &self.lost.get_or_create(&Source { source: "findings_channel".into() }),
            s.updates_lost.load(Ordering::Relaxed),
        );
        raise(&self.not_attributed, s.drops_not_attributed.load(Ordering::Relaxed));
        raise(&self.observations, s.observations.load(Ordering::Relaxed));
        raise(&self.attach_errors, s.attach_errors.load(Ordering::Relaxed));
        self.attached.set(i64::from(s.attached.load(Ordering::Relaxed)));
        self.synced.set(i64::from(shared.feed.synced()));
        self.age.set(shared.feed.age());
        for (kind, n) in shared.feed.objects() {
            self.objects.get_or_create(&KindLabel { kind: kind.into() }).set(n as i64);
        }
        for (kind, k) in shared.feed.kinds() {
            raise(&self.lists.get_or_create(&KindLabel { kind: kind.into() }), k.lists);
            raise(&self.watch_errors.get_or_create(&KindLabel { kind: kind.into() }), k.errors);
        }
        raise(&self.build_errors, shared.feed.build_errors());
        let mut out = String::new();
        if let Err(err) = encode(&mut out, &self.registry) {
            tracing::warn!(error = %err, "metrics: encoding failed");
        }
        out
    }
}

/// Raises a counter to `total` (the source keeps the running total).
fn raise(counter: &Counter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}
