//! Kubernetes Events for findings (`events.k8s.io/v1`), written the way a real API server
//! accepts them:
//! - on the affected Pod (the finding's source pod, else its destination pod; none: no Event),
//!   in that Pod's namespace, type `Warning`;
//! - a stable `reason` per finding kind ([`reason`]), `reportingController` `observer`
//!   (`kubectl get events -A --field-selector reportingComponent=observer`),
//!   `reportingInstance` the node, `action` `Diagnosed`, a note of at most 1 kB (requirement,
//!   mechanism, endpoints, culprit rule, fix), the finding as JSON in the annotation
//!   [`FINDING_ANNOTATION`] (read by `observer findings`);
//! - one Event per finding and node (a deterministic name): repeats only change its `series`
//!   (count = connections seen, lastObservedTime) with a merge patch, as the API requires of
//!   updates; an Event the API no longer has (expired, API restarted) is created again;
//! - rate-limited: at most [`WRITES_PER_SEC`] writes per second (burst [`BURST`]) for the whole
//!   agent, and one `series` update per Event per [`MIN_PATCH_INTERVAL`]; what waits is coalesced,
//!   so a flood of drops costs the API server a bounded trickle of writes.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{
        core::v1::ObjectReference,
        events::v1::{Event, EventSeries},
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    api::{Patch, PatchParams, PostParams},
    Api, Client,
};
use observer::{
    diagnosis::{
        report::{self, FindingKey},
        Finding, Kind,
    },
    inventory::Inventory,
};
use tracing::{debug, warn};

use crate::{metrics::plain, state::Shared};

/// The reporting controller (`reportingComponent` in core/v1 Events).
pub const CONTROLLER: &str = "observer";
/// The annotation holding the finding as JSON.
pub const FINDING_ANNOTATION: &str = "observer.dev/finding";
/// The label holding the finding's requirement (R1..R5).
pub const REQUIREMENT_LABEL: &str = "observer.dev/requirement";
/// Writes per second for the whole agent, and the burst allowed.
pub const WRITES_PER_SEC: f64 = 5.0;
pub const BURST: f64 = 20.0;
/// One `series` update per Event per this interval at most.
pub const MIN_PATCH_INTERVAL: Duration = Duration::from_secs(5);
/// The API server's limit on `note` (events.k8s.io/v1).
pub const NOTE_MAX_BYTES: usize = 1024;

/// The stable Event reason of a finding kind.
pub fn reason(kind: Kind) -> &'static str {
    match kind {
        Kind::ControlPlaneBlocked => "ControlPlaneBlocked",
        Kind::ApiserverUnreachable => "ApiserverUnreachable",
        Kind::MeshPortBlocked => "MeshPortBlocked",
        Kind::PolicyConflict => "PolicyConflict",
        Kind::EndpointUnreachable => "EndpointUnreachable",
        Kind::DiscoveryGap => "DiscoveryGap",
    }
}

/// The note: requirement, kind, mechanism, endpoints, evidence, culprit, fix; at most 1 kB.
pub fn note(f: &Finding) -> String {
    let end = |p: &observer::diagnosis::Endpoint| {
        p.pod
            .clone()
            .or_else(|| p.service.clone())
            .or_else(|| p.workload.clone())
            .unwrap_or_else(|| p.ip.map(|i| i.to_string()).unwrap_or_default())
    };
    let port = f.dst.port.map_or(String::new(), |p| match f.dst.istio_port {
        Some(name) => format!(":{p} ({name})"),
        None => format!(":{p}"),
    });
    let mut text = format!(
        "{:?} {} ({}): {} -> {}{port} on node {}",
        f.requirement,
        plain(&f.kind),
        plain(&f.mechanism),
        end(&f.src),
        f.dst.service.clone().unwrap_or_else(|| end(&f.dst)),
        f.node
    );
    if let Some(reason) = &f.evidence.drop_reason {
        text.push_str(&format!("; drop {reason}"));
        if let Some(hook) = f.evidence.hook {
            text.push_str(&format!(" at {hook}"));
        }
        if let Some(interface) = &f.evidence.interface {
            text.push_str(&format!(" {interface}"));
        }
    }
    if let Some(icmp) = f.evidence.icmp {
        text.push_str(&format!("; ICMP {icmp}"));
    }
    if let Some(culprit) = &f.culprit {
        text.push_str(&format!("; culprit: {}", culprit.summary()));
    }
    if let Some(path) = &f.path {
        text.push_str(&format!("; path: {} ({})", plain(&path.location), path.explanation));
    }
    text.push_str(&format!("; fix: {}", f.remediation));
    truncate(text, NOTE_MAX_BYTES)
}

/// Cuts a note to the API server's limit ([`NOTE_MAX_BYTES`]).
pub fn truncate_note(text: String) -> String {
    truncate(text, NOTE_MAX_BYTES)
}

/// Cuts `text` to at most `max` bytes on a character boundary, ending with `…` when cut.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut cut = max - '…'.len_utf8();
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push('…');
    text
}

/// The pod an Event about `f` is attached to: `(namespace, name)`.
pub fn affected_pod(f: &Finding) -> Option<(String, String)> {
    let key = f.src.pod.as_ref().or(f.dst.pod.as_ref())?;
    let (namespace, name) = key.split_once('/')?;
    Some((namespace.to_string(), name.to_string()))
}

/// A deterministic Event name: the pod's name and a hash of the node and the finding's key
/// (FNV-1a), so a restarted agent finds its Event again and two nodes never share one.
pub fn event_name(pod: &str, node: &str, key: &FindingKey) -> String {
    let (src, dst, port, mechanism, kind) = key;
    let text = format!("{node}|{kind:?}|{mechanism:?}|{src}|{dst}|{port}");
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let pod: String = pod.chars().take(200).collect();
    format!("{}.observer-{hash:016x}", pod.trim_end_matches(['.', '-']))
}

/// The Event to create for a finding.
pub fn new_event(f: &Finding, node: &str, key: &FindingKey, pod_uid: Option<String>) -> Option<Event> {
    let (namespace, pod) = affected_pod(f)?;
    let now = MicroTime(Timestamp::now());
    let connections = f.evidence.connections.max(1);
    Some(Event {
        metadata: ObjectMeta {
            name: Some(event_name(&pod, node, key)),
            namespace: Some(namespace.clone()),
            labels: Some([(REQUIREMENT_LABEL.to_string(), format!("{:?}", f.requirement))].into()),
            annotations: serde_json::to_string(f).ok().map(|json| [(FINDING_ANNOTATION.to_string(), json)].into()),
            ..ObjectMeta::default()
        },
        event_time: Some(now.clone()),
        action: Some("Diagnosed".to_string()),
        reason: Some(reason(f.kind).to_string()),
        note: Some(note(f)),
        type_: Some("Warning".to_string()),
        reporting_controller: Some(CONTROLLER.to_string()),
        reporting_instance: Some(node.chars().take(128).collect()),
        regarding: Some(ObjectReference {
            api_version: Some("v1".to_string()),
            kind: Some("Pod".to_string()),
            namespace: Some(namespace),
            name: Some(pod),
            uid: pod_uid,
            ..ObjectReference::default()
        }),
        // The API requires count >= 2 in a series: one occurrence has none.
        series: (connections >= 2).then(|| EventSeries { count: saturating_i32(connections), last_observed_time: now }),
        ..Event::default()
    })
}

fn saturating_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// One finding's Event.
struct Entry {
    namespace: String,
    name: String,
    finding: Finding,
    /// The Event exists on the API server (as far as we know).
    created: bool,
    /// The count last written (1 when created without a series).
    written: u32,
    last_write: Option<Instant>,
}

/// A token bucket: `rate` tokens per second up to `burst`.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant) -> bool {
        self.tokens = (self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * WRITES_PER_SEC).min(BURST);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Writes and updates the Events of the current findings.
pub struct Writer {
    client: Client,
    node: String,
    entries: BTreeMap<FindingKey, Entry>,
    bucket: Bucket,
}

impl Writer {
    pub fn new(client: Client, node: String) -> Self {
        Self { client, node, entries: BTreeMap::new(), bucket: Bucket { tokens: BURST, at: Instant::now() } }
    }

    /// A finding is new or grew: its Event is written on the next [`Writer::flush`] allowed.
    pub fn upsert(&mut self, f: &Finding, shared: &Shared) {
        let key = report::key(f);
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.finding = f.clone();
            return;
        }
        let Some((namespace, pod)) = affected_pod(f) else {
            shared.metrics.k8s_event("no_pod");
            return;
        };
        let name = event_name(&pod, &self.node, &key);
        self.entries
            .insert(key, Entry { namespace, name, finding: f.clone(), created: false, written: 0, last_write: None });
    }

    /// A cleared finding's Event stays as history (the API server expires it); it is not
    /// updated any more.
    pub fn clear(&mut self, key: &FindingKey) {
        self.entries.remove(key);
    }

    /// Writes what is due and allowed by the rate limits.
    pub async fn flush(&mut self, shared: &Shared) {
        let now = Instant::now();
        let inventory = shared.inventory.borrow().clone();
        let keys: Vec<FindingKey> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                !e.created
                    || (e.finding.evidence.connections > e.written
                        && e.last_write.is_none_or(|t| now.saturating_duration_since(t) >= MIN_PATCH_INTERVAL))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            if !self.bucket.take(Instant::now()) {
                shared.metrics.k8s_event("rate_limited");
                break;
            }
            let result = self.write(&key, &inventory).await;
            shared.metrics.k8s_event(result);
        }
    }

    async fn write(&mut self, key: &FindingKey, inventory: &Inventory) -> &'static str {
        let Some(entry) = self.entries.get_mut(key) else { return "failed" };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &entry.namespace);
        let count = entry.finding.evidence.connections.max(1);
        entry.last_write = Some(Instant::now());
        if entry.created {
            let patch = serde_json::json!({
                "series": { "count": saturating_i32(count.max(2)), "lastObservedTime": MicroTime(Timestamp::now()) }
            });
            return match api.patch(&entry.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    entry.written = count;
                    "updated"
                }
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    // Gone from the API (expired, or a new API server): written again next flush.
                    entry.created = false;
                    "recreated"
                }
                Err(err) => {
                    warn!(event = %entry.name, error = %err, "kubernetes event: update failed");
                    "failed"
                }
            };
        }
        let uid = entry.finding.src.pod.as_ref().or(entry.finding.dst.pod.as_ref()).and_then(|k| {
            inventory.pods.iter().find(|p| &p.key() == k).map(|p| p.uid.clone()).filter(|u| !u.is_empty())
        });
        let Some(event) = new_event(&entry.finding, &self.node, key, uid) else { return "no_pod" };
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {
                debug!(event = %entry.name, "kubernetes event: created");
                entry.created = true;
                entry.written = count;
                "created"
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                // Written by this node before a restart: its series is updated from now on.
                entry.created = true;
                entry.written = 0;
                "updated"
            }
            Err(err) => {
                warn!(event = %entry.name, error = %err, "kubernetes event: create failed");
                "failed"
            }
        }
    }
}

#[cfg(test)]
mod tests;
