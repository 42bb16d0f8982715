//! Inquiries and answers as Kubernetes Events (docs/agent.md, "Between nodes"): the only channel
//! between two agents is the API server; no agent connects to another.
//!
//! An inquiry is an `events.k8s.io/v1` Event in namespace `default` regarding the destination
//! **Node** (cluster-scoped objects' Events live in `default`), reason [`INQUIRY_REASON`], type
//! `Normal`, reporting controller `observer`, instance the asking node; the question as JSON in
//! the annotation [`INQUIRY_ANNOTATION`]. The destination's agent watches only the Events about
//! its own Node with that reason (a field selector the API server evaluates:
//! `involvedObject.kind=Node,involvedObject.name=<node>,reason=FlowInquiry`), so each agent
//! receives only what is addressed to it. The answer is the same kind of Event regarding the
//! asking Node, reason [`ANSWER_REASON`], the report in [`ANSWER_ANNOTATION`]. The API server
//! expires Events (kube-apiserver `--event-ttl`, 1 h by default); agents ignore inquiries older
//! than [`INQUIRY_TTL`].

use std::time::{Duration, SystemTime};

use k8s_openapi::{
    api::{
        core::v1::{Event as CoreEvent, ObjectReference},
        events::v1::Event,
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use observer::diagnosis::flows::{FlowQuery, FlowReport};
use serde::{Deserialize, Serialize};

use crate::kube_events::CONTROLLER;

pub const INQUIRY_REASON: &str = "FlowInquiry";
pub const ANSWER_REASON: &str = "FlowAnswer";
pub const INQUIRY_ANNOTATION: &str = "observer.dev/flow-inquiry";
pub const ANSWER_ANNOTATION: &str = "observer.dev/flow-answer";
/// The namespace Events about cluster-scoped objects (Nodes) live in.
pub const NAMESPACE: &str = "default";
/// Inquiries older than this are not answered (the asker gave up on them).
pub const INQUIRY_TTL: Duration = Duration::from_secs(120);

/// A question from `from_node` to `to_node`: what did you see of `query`?
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inquiry {
    pub from_node: String,
    pub to_node: String,
    pub query: FlowQuery,
}

/// The answer to the inquiry named `inquiry` (its Event's name).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub inquiry: String,
    pub from_node: String,
    pub to_node: String,
    pub query: FlowQuery,
    pub report: FlowReport,
}

/// FNV-1a of `text`, for deterministic Event names.
fn hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The inquiry's Event name: the asking node and a hash of the question (a retried create of
/// the same question is a 409, not a second inquiry).
pub fn inquiry_name(i: &Inquiry) -> String {
    let q = serde_json::to_string(i).unwrap_or_default();
    format!("{}.observer-inquiry-{:016x}", dns_part(&i.from_node), hash(&q))
}

fn answer_name(a: &Answer) -> String {
    format!("{}.observer-answer-{:016x}", dns_part(&a.from_node), hash(&a.inquiry))
}

/// A node name cut to leave room for the suffix in a 253-character Event name.
fn dns_part(node: &str) -> String {
    node.chars().take(200).collect::<String>().trim_end_matches(['.', '-']).to_string()
}

fn event(
    name: String,
    reason: &str,
    from_node: &str,
    about_node: &str,
    annotation: (&str, String),
    note: String,
) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(NAMESPACE.to_string()),
            annotations: Some([(annotation.0.to_string(), annotation.1)].into()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(Timestamp::now())),
        action: Some(if reason == INQUIRY_REASON { "Inquire" } else { "Answer" }.to_string()),
        reason: Some(reason.to_string()),
        note: Some(crate::kube_events::truncate_note(note)),
        type_: Some("Normal".to_string()),
        reporting_controller: Some(CONTROLLER.to_string()),
        reporting_instance: Some(from_node.chars().take(128).collect()),
        regarding: Some(ObjectReference {
            api_version: Some("v1".to_string()),
            kind: Some("Node".to_string()),
            name: Some(about_node.to_string()),
            ..ObjectReference::default()
        }),
        ..Event::default()
    }
}

/// The Event carrying an inquiry (regarding the destination Node).
pub fn inquiry_event(i: &Inquiry) -> Option<Event> {
    let json = serde_json::to_string(i).ok()?;
    let note = format!(
        "{} asks {} what it saw of TCP {} -> {}:{} between {} and {}",
        i.from_node,
        i.to_node,
        i.query.client.map(|c| c.to_string()).unwrap_or_else(|| "*".into()),
        i.query.server,
        i.query.port,
        observer::diagnosis::flows::rfc3339(i.query.from),
        observer::diagnosis::flows::rfc3339(i.query.until),
    );
    Some(event(inquiry_name(i), INQUIRY_REASON, &i.from_node, &i.to_node, (INQUIRY_ANNOTATION, json), note))
}

/// The Event carrying an answer (regarding the asking Node).
pub fn answer_event(a: &Answer) -> Option<Event> {
    let json = serde_json::to_string(a).ok()?;
    let r = &a.report;
    let note = format!(
        "{} answers {}: {} connection(s); SYN {}; reply {}; {} drop(s)",
        a.from_node,
        a.to_node,
        r.connections,
        if r.saw_request() { "seen" } else { "not seen" },
        if r.reply_left.is_some() { "sent" } else { "not sent" },
        r.dropped.len()
    );
    Some(event(answer_name(a), ANSWER_REASON, &a.from_node, &a.to_node, (ANSWER_ANNOTATION, json), note))
}

/// The field selector of the Events about `node` with `reason` (core/v1 Event fields every
/// API server supports).
pub fn selector(node: &str, reason: &str) -> String {
    format!("involvedObject.kind=Node,involvedObject.name={node},reason={reason}")
}

/// The inquiry an Event carries, with its name and creation time; None for anything else
/// (another controller's Event, a malformed annotation).
pub fn read_inquiry(e: &CoreEvent) -> Option<(String, Inquiry, SystemTime)> {
    let i: Inquiry = read(e, INQUIRY_REASON, INQUIRY_ANNOTATION)?;
    Some((e.metadata.name.clone()?, i, created(e)))
}

/// The answer an Event carries.
pub fn read_answer(e: &CoreEvent) -> Option<Answer> {
    read(e, ANSWER_REASON, ANSWER_ANNOTATION)
}

fn read<T: for<'de> Deserialize<'de>>(e: &CoreEvent, reason: &str, annotation: &str) -> Option<T> {
    if e.reporting_component.as_deref() != Some(CONTROLLER) || e.reason.as_deref() != Some(reason) {
        return None;
    }
    let json = e.metadata.annotations.as_ref()?.get(annotation)?;
    serde_json::from_str(json).ok()
}

/// When an Event was written (eventTime, else its creation timestamp, else now).
pub fn created(e: &CoreEvent) -> SystemTime {
    e.event_time
        .as_ref()
        .map(|t| SystemTime::from(t.0))
        .or_else(|| e.last_timestamp.as_ref().map(|t| SystemTime::from(t.0)))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| SystemTime::from(t.0)))
        .unwrap_or_else(SystemTime::now)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn inquiry() -> Inquiry {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_996_800);
        Inquiry {
            from_node: "node-a".into(),
            to_node: "node-b".into(),
            query: FlowQuery {
                client: Some("10.244.1.20".parse().expect("ip")),
                server: "10.244.2.40".parse().expect("ip"),
                port: 8080,
                from: t,
                until: t + Duration::from_secs(5),
            },
        }
    }

    /// The Event as a core/v1 client reads it back (what the API server serves).
    fn as_core(e: &Event) -> CoreEvent {
        CoreEvent {
            metadata: e.metadata.clone(),
            reason: e.reason.clone(),
            reporting_component: e.reporting_controller.clone(),
            involved_object: e.regarding.clone().unwrap_or_default(),
            event_time: e.event_time.clone(),
            ..CoreEvent::default()
        }
    }

    #[test]
    fn an_inquiry_is_an_event_about_the_destination_node_and_reads_back() {
        let i = inquiry();
        let e = inquiry_event(&i).expect("event");
        assert_eq!(e.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(e.reason.as_deref(), Some("FlowInquiry"));
        let regarding = e.regarding.clone().expect("regarding");
        assert_eq!((regarding.kind.as_deref(), regarding.name.as_deref()), (Some("Node"), Some("node-b")));
        assert!(regarding.namespace.is_none(), "a Node is cluster-scoped");
        assert_eq!(e.reporting_instance.as_deref(), Some("node-a"));
        assert!(e.note.as_deref().is_some_and(|n| n.contains("10.244.1.20 -> 10.244.2.40:8080")), "{:?}", e.note);
        let (name, back, _) = read_inquiry(&as_core(&e)).expect("read");
        assert_eq!((name, back), (inquiry_name(&i), i.clone()));
        // The same question has the same name; another has another.
        let mut other = i.clone();
        other.query.port = 9080;
        assert_ne!(inquiry_name(&other), inquiry_name(&i));
        assert!(inquiry_name(&i).starts_with("node-a.observer-inquiry-"));
    }

    #[test]
    fn an_answer_reads_back_and_other_events_are_ignored() {
        let i = inquiry();
        let a = Answer {
            inquiry: inquiry_name(&i),
            from_node: "node-b".into(),
            to_node: "node-a".into(),
            query: i.query.clone(),
            report: FlowReport { node: "node-b".into(), complete: true, ..FlowReport::default() },
        };
        let e = answer_event(&a).expect("event");
        assert_eq!(e.regarding.as_ref().and_then(|r| r.name.as_deref()), Some("node-a"));
        assert_eq!(read_answer(&as_core(&e)), Some(a));
        let mut foreign = as_core(&e);
        foreign.reporting_component = Some("kubelet".into());
        assert_eq!(read_answer(&foreign), None);
        assert!(read_inquiry(&as_core(&e)).is_none(), "an answer is no inquiry");
        assert_eq!(
            selector("node-a", ANSWER_REASON),
            "involvedObject.kind=Node,involvedObject.name=node-a,reason=FlowAnswer"
        );
    }
}
