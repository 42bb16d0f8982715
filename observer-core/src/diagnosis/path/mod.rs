//! Where between two nodes a silent packet was lost: a finding's `path` (docs/diagnose-json.md).
//!
//! Decided only from evidence: the source node's own [`FlowReport`] of the flow and the
//! destination node's answer (its [`FlowReport`] for the same flow and window):
//! - the destination saw one of the flow's packets dropped -> `at-destination-node`, with its
//!   drop reason and culprit rule;
//! - it never saw the SYN arrive (and its memory of the window is complete) -> `between-nodes`,
//!   naming where the SYN last left the source node; no rule is blamed on either node;
//! - its SYN-ACK (or RST) left it and the source node never saw a reply arrive -> `reply-lost`;
//! - it saw the SYN, no drop, no reply -> `at-destination-node` without a culprit (last place);
//! - no answer, or an answer whose memory of the window is incomplete -> `unknown` (never a guess).
//!
//! [`before_node`] decides `before-node` for a call from outside every node (a webhook call by
//! a managed API server): the destination node saw no SYN to the address and port in the window.

use std::time::SystemTime;

use serde::Serialize;

use super::flows::{FlowReport, Sighting};
use crate::time::serialize_rfc3339;

/// Where the packet was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Location {
    /// Left the source node, never reached the destination node: the network between them.
    BetweenNodes,
    /// Reached the destination node and was dropped there, or went no further there.
    AtDestinationNode,
    /// The destination answered (SYN-ACK/RST left it); the answer never reached the source.
    ReplyLost,
    /// Never reached the destination node, from a caller outside every node.
    BeforeNode,
    /// The destination node did not answer, or cannot tell: nothing is claimed.
    Unknown,
}

/// The last place one side saw the packet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PathPoint {
    pub node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The hook (`tc-egress`, `tc-ingress`, `kfree_skb`, ...).
    pub hook: String,
    #[serde(serialize_with = "serialize_rfc3339")]
    pub time: SystemTime,
}

impl From<&Sighting> for PathPoint {
    fn from(s: &Sighting) -> Self {
        Self { node: s.node.clone(), interface: s.interface.clone(), hook: s.hook.clone(), time: s.time }
    }
}

/// Where a silent packet was lost, with each side's last sighting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Path {
    pub location: Location,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_node: Option<String>,
    /// The last place the source node saw the packet (for `reply-lost`: the request's last
    /// egress on the source).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<PathPoint>,
    /// The last place the destination node saw it (its drop, the SYN's last hook, or where its
    /// reply left it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<PathPoint>,
    /// `at-destination-node` by a drop: the destination's drop reason and culprit rule (the
    /// diagnose JSON `culprit` object, as the destination's agent reported it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub culprit: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub culprit_summary: Option<String>,
    /// `before-node`: the API server's addresses (`default/kubernetes` endpoints), the callers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub apiserver: Vec<String>,
    /// `before-node`: the Kubernetes Event that recorded the failed call (`namespace/name`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reported_by: Option<String>,
    /// One sentence for people.
    pub explanation: String,
}

impl Path {
    fn new(location: Location, from_node: Option<&str>, to_node: &str, explanation: String) -> Self {
        Self {
            location,
            from_node: from_node.map(String::from),
            to_node: Some(to_node.to_string()),
            source: None,
            destination: None,
            drop_reason: None,
            culprit: None,
            culprit_summary: None,
            apiserver: Vec::new(),
            reported_by: None,
            explanation,
        }
    }
}

fn at(p: &PathPoint) -> String {
    let interface = p.interface.as_deref().map(|i| format!(" {i}")).unwrap_or_default();
    format!("{}{interface} ({}) at {}", p.node, p.hook, crate::time::rfc3339(p.time))
}

/// Where a handshake from `from_node` to `to_node` that got no reply was lost: `own` is the
/// source node's report of the flow, `answer` the destination node's (None: no answer came).
pub fn locate(from_node: &str, to_node: &str, own: &FlowReport, answer: Option<&FlowReport>) -> Path {
    let source = own.syn_left.as_ref().or(own.syn_last.as_ref()).map(PathPoint::from);
    let path = |location, explanation: String| {
        let mut p = Path::new(location, Some(from_node), to_node, explanation);
        p.source = source.clone();
        p
    };
    let Some(answer) = answer else {
        return path(
            Location::Unknown,
            format!("no answer from {to_node}'s observer (not running, or the API did not carry it): where the packet was lost is unknown"),
        );
    };
    if let Some(d) = answer.dropped.first() {
        let mut p = path(
            Location::AtDestinationNode,
            format!(
                "{to_node} dropped the {} ({}){}",
                if d.request { "request" } else { "reply" },
                d.reason,
                d.culprit_summary.as_deref().map(|c| format!(": {c}")).unwrap_or_default()
            ),
        );
        p.destination = Some(PathPoint {
            node: d.node.clone(),
            interface: d.interface.clone(),
            hook: "kfree_skb".into(),
            time: d.time,
        });
        p.drop_reason = Some(d.reason.clone());
        p.culprit = d.culprit.clone();
        p.culprit_summary = d.culprit_summary.clone();
        return p;
    }
    if let Some(reply) = &answer.reply_left {
        if own.reply_arrived.is_some() {
            return path(
                Location::Unknown,
                format!("{to_node}'s reply reached {from_node}: the handshake was answered (late, or another attempt's); nothing shows a loss between the nodes"),
            );
        }
        let mut p =
            path(Location::ReplyLost, format!("{to_node} answered; its reply left it and never reached {from_node}"));
        p.destination = Some(PathPoint::from(reply));
        return p;
    }
    if let Some(last) = &answer.syn_last {
        let mut p = path(
            Location::AtDestinationNode,
            format!("the SYN reached {to_node} and went no further there: no drop recorded, no reply sent"),
        );
        p.destination = Some(PathPoint::from(last));
        return p;
    }
    if !answer.complete {
        return path(
            Location::Unknown,
            format!("{to_node}'s memory of that window is incomplete: its not seeing the SYN proves nothing"),
        );
    }
    let left = source.as_ref().map(|s| format!(" (it left {})", at(s))).unwrap_or_default();
    path(Location::BetweenNodes, format!("the SYN left {from_node}{left} and never reached {to_node}"))
}

/// `before-node` for a call to `to_node` from outside every node (e.g. the API server calling a
/// webhook), recorded as failed by `reported_by`: only when `seen` (the destination node's
/// report of SYNs to that address and port in the call's window, any client) is complete and
/// shows none. A SYN that arrived means the packet reached the node: not before-node (None).
pub fn before_node(to_node: &str, seen: &FlowReport, apiserver: Vec<String>, reported_by: String) -> Option<Path> {
    if !seen.complete || seen.saw_request() {
        return None;
    }
    let mut p = Path::new(
        Location::BeforeNode,
        None,
        to_node,
        format!("{reported_by} recorded the call failing; {to_node} saw no SYN of it arrive: lost before the node"),
    );
    p.apiserver = apiserver;
    p.reported_by = Some(reported_by);
    Some(p)
}

#[cfg(test)]
mod tests;
