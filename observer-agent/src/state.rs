//! What the agent's async side shares: the current findings (from the engine's
//! [`FindingUpdate`]s), the session's and the feed's state, the metrics.

use std::{
    collections::BTreeMap,
    sync::{atomic::Ordering, Arc, RwLock},
    time::Instant,
};

use observer::{
    diagnosis::{
        report::{self, FindingKey, Report, Stats},
        Finding, FindingUpdate,
    },
    inventory::Inventory,
};
use tokio::sync::watch;

use crate::{feed::FeedHealth, metrics::Metrics, session::SessionStats};

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
                let previous = findings.insert(report::key(f), f.clone());
                if previous.is_none() {
                    self.metrics.finding(f, 1);
                }
                self.metrics.update(if matches!(update, FindingUpdate::New(_)) { "new" } else { "updated" });
            }
            FindingUpdate::Cleared(f) => {
                if let Some(f) = findings.remove(&report::key(f)) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::xds_drop;

    fn shared() -> Shared {
        let (_, inventory) = watch::channel(Arc::new(Inventory::default()));
        Shared {
            node: "node-a".into(),
            findings: Default::default(),
            session: Arc::default(),
            feed: Arc::new(FeedHealth::static_file()),
            inventory,
            metrics: Metrics::new(),
            started: Instant::now(),
        }
    }

    fn sample(text: &str, prefix: &str) -> Option<f64> {
        text.lines().find(|l| l.starts_with(prefix))?.rsplit(' ').next()?.parse().ok()
    }

    #[test]
    fn updates_drive_findings_metrics_and_the_findings_json() {
        let s = shared();
        s.apply(&FindingUpdate::New(xds_drop(1)));
        let mut grown = xds_drop(2);
        grown.evidence.connections = 5;
        s.apply(&FindingUpdate::Updated(grown));
        let text = s.metrics.render(&s);
        let series = "observer_findings{requirement=\"R5\",kind=\"control-plane-blocked\",mechanism=\"dropped\",src_workload=\"shop/cart\",dst_service=\"istio-system/istiod\",istio_port=\"xds-tls\"}";
        assert_eq!(sample(&text, series), Some(1.0), "{text}");
        assert_eq!(sample(&text, "observer_finding_updates_total{update=\"updated\"}"), Some(1.0), "{text}");
        assert_eq!(sample(&text, "observer_inventory_synced"), Some(1.0));
        let json: serde_json::Value = serde_json::from_str(&s.findings_json()).expect("json");
        assert_eq!(json["node"], "node-a");
        assert_eq!(json["findings"][0]["evidence"]["connections"], 5);
        s.apply(&FindingUpdate::Cleared(xds_drop(3)));
        let text = s.metrics.render(&s);
        assert_eq!(sample(&text, series), Some(0.0), "{text}");
        assert!(serde_json::from_str::<serde_json::Value>(&s.findings_json()).expect("json")["findings"]
            .as_array()
            .is_some_and(Vec::is_empty));
    }

    /// Every metric of the module doc's table that has a sample here (the per-kind inventory
    /// families stay empty with a static inventory, and empty families are not encoded).
    #[test]
    fn every_documented_metric_is_registered() {
        let s = shared();
        s.apply(&FindingUpdate::New(xds_drop(1)));
        s.metrics.k8s_event("created");
        s.session.drops_by_reason.lock().expect("lock").insert("NETFILTER_DROP".into(), 3);
        let text = s.metrics.render(&s);
        let documented = [
            "findings",
            "finding_updates_total",
            "kernel_drops_total",
            "events_lost_total",
            "drops_not_attributed_total",
            "observations_total",
            "attach_errors_total",
            "attached",
            "inventory_synced",
            "inventory_age_seconds",
            "inventory_build_errors_total",
            "kubernetes_events_total",
            "build_info",
        ];
        for name in documented {
            assert!(text.lines().any(|l| l.starts_with(&format!("observer_{name}"))), "no observer_{name}:\n{text}");
        }
        assert_eq!(sample(&text, "observer_kernel_drops_total{reason=\"NETFILTER_DROP\"}"), Some(3.0), "{text}");
    }

    #[test]
    fn finding_label_sets_are_bounded() {
        let s = shared();
        for i in 0..(crate::metrics::MAX_FINDING_SERIES + 10) {
            let mut f = xds_drop(1);
            f.src.workload = Some(format!("shop/w{i}"));
            s.apply(&FindingUpdate::New(f));
        }
        let text = s.metrics.render(&s);
        let series = text.lines().filter(|l| l.starts_with("observer_findings{")).count();
        assert_eq!(series, crate::metrics::MAX_FINDING_SERIES + 1, "the bound plus the `other` series");
        assert_eq!(sample(&text, "observer_findings{requirement=\"other\""), Some(10.0));
    }
}
