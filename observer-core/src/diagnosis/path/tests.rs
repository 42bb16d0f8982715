use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::diagnosis::flows::{DropSeen, PacketKind};

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_996_800 + secs)
}

fn seen(node: &str, interface: &str, hook: &str, packet: PacketKind, at: u64) -> Sighting {
    Sighting { node: node.into(), interface: Some(interface.into()), hook: hook.into(), packet, time: t(at), count: 1 }
}

/// node-a's own view: the SYN left by eth0, no reply arrived.
fn source_view() -> FlowReport {
    FlowReport {
        node: "node-a".into(),
        connections: 1,
        syn_arrived: Some(seen("node-a", "veth1", "tc-ingress", PacketKind::Syn, 1)),
        syn_left: Some(seen("node-a", "eth0", "tc-egress", PacketKind::Syn, 2)),
        syn_last: Some(seen("node-a", "eth0", "tc-egress", PacketKind::Syn, 2)),
        complete: true,
        ..FlowReport::default()
    }
}

fn answer() -> FlowReport {
    FlowReport { node: "node-b".into(), complete: true, ..FlowReport::default() }
}

#[test]
fn never_seen_by_the_destination_is_between_nodes_naming_the_source_egress_and_no_rule() {
    let p = locate("node-a", "node-b", &source_view(), Some(&answer()));
    assert_eq!(p.location, Location::BetweenNodes);
    let source = p.source.expect("source");
    assert_eq!(
        (source.node.as_str(), source.interface.as_deref(), source.hook.as_str()),
        ("node-a", Some("eth0"), "tc-egress")
    );
    assert_eq!(source.time, t(2));
    assert!(p.destination.is_none() && p.culprit.is_none() && p.drop_reason.is_none());
    assert_eq!((p.from_node.as_deref(), p.to_node.as_deref()), (Some("node-a"), Some("node-b")));
    let json = serde_json::to_value(p.location).expect("json");
    assert_eq!(json, "between-nodes");
}

#[test]
fn a_drop_at_the_destination_names_its_reason_and_culprit() {
    let mut b = answer();
    b.syn_last = Some(seen("node-b", "eth0", "tc-ingress", PacketKind::Syn, 2));
    b.dropped.push(DropSeen {
        node: "node-b".into(),
        interface: None,
        request: true,
        reason: "NETFILTER_DROP".into(),
        location: "nf_hook_slow".into(),
        time: t(2),
        culprit: Some(serde_json::json!({"chain": "FORWARD", "rule": "-A FORWARD -p tcp -m tcp --dport 9080 -j DROP"})),
        culprit_summary: Some("iptables-nft filter/FORWARD #1 `-A FORWARD -p tcp -m tcp --dport 9080 -j DROP`".into()),
    });
    let p = locate("node-a", "node-b", &source_view(), Some(&b));
    assert_eq!(p.location, Location::AtDestinationNode);
    assert_eq!(p.drop_reason.as_deref(), Some("NETFILTER_DROP"));
    assert_eq!(p.culprit.as_ref().and_then(|c| c["chain"].as_str()), Some("FORWARD"));
    assert_eq!(p.destination.as_ref().map(|d| (d.node.as_str(), d.hook.as_str())), Some(("node-b", "kfree_skb")));
    assert!(p.explanation.contains("node-b dropped the request"), "{}", p.explanation);
}

#[test]
fn a_reply_that_left_the_destination_and_never_arrived_is_reply_lost() {
    let mut b = answer();
    b.syn_arrived = Some(seen("node-b", "eth0", "tc-ingress", PacketKind::Syn, 2));
    b.syn_last = b.syn_arrived.clone();
    b.reply_left = Some(seen("node-b", "eth0", "tc-egress", PacketKind::SynAck, 3));
    let p = locate("node-a", "node-b", &source_view(), Some(&b));
    assert_eq!(p.location, Location::ReplyLost);
    assert_eq!(p.destination.as_ref().and_then(|d| d.interface.as_deref()), Some("eth0"));
    assert!(p.culprit.is_none());
    // The reply did arrive on the source: not lost between the nodes.
    let mut a = source_view();
    a.reply_arrived = Some(seen("node-a", "eth0", "tc-ingress", PacketKind::SynAck, 3));
    assert_eq!(locate("node-a", "node-b", &a, Some(&b)).location, Location::Unknown);
}

#[test]
fn no_answer_or_an_incomplete_one_is_unknown_never_a_guess() {
    let p = locate("node-a", "node-b", &source_view(), None);
    assert_eq!(p.location, Location::Unknown);
    assert!(p.culprit.is_none() && p.destination.is_none());
    let incomplete = FlowReport { complete: false, ..answer() };
    assert_eq!(locate("node-a", "node-b", &source_view(), Some(&incomplete)).location, Location::Unknown);
}

#[test]
fn seen_without_a_drop_or_reply_is_at_the_destination_without_blame() {
    let mut b = answer();
    b.syn_last = Some(seen("node-b", "veth9", "tc-egress", PacketKind::Syn, 2));
    let p = locate("node-a", "node-b", &source_view(), Some(&b));
    assert_eq!(p.location, Location::AtDestinationNode);
    assert!(p.culprit.is_none());
    assert_eq!(p.destination.and_then(|d| d.interface), Some("veth9".into()));
}

#[test]
fn before_node_only_when_no_syn_arrived_and_the_memory_is_complete() {
    let apiserver = vec!["10.244.2.20:6443".to_string()];
    let p = before_node("node-b", &answer(), apiserver.clone(), "ns/ev".into()).expect("before-node");
    assert_eq!(p.location, Location::BeforeNode);
    assert_eq!((p.from_node, p.to_node.as_deref()), (None, Some("node-b")));
    assert_eq!(p.apiserver, apiserver);
    assert_eq!(p.reported_by.as_deref(), Some("ns/ev"));
    let mut arrived = answer();
    arrived.syn_last = Some(seen("node-b", "eth0", "tc-ingress", PacketKind::Syn, 2));
    assert!(before_node("node-b", &arrived, vec![], "ns/ev".into()).is_none(), "a SYN arrived");
    let incomplete = FlowReport { complete: false, ..answer() };
    assert!(before_node("node-b", &incomplete, vec![], "ns/ev".into()).is_none());
}
