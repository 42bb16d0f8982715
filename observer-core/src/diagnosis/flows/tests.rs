use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::*;
use crate::model::{Captured, DropReason, TcpFlags};

pub(crate) fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_996_800 + secs)
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

pub(crate) fn packet(
    at: SystemTime,
    hook: Hook,
    interface: &str,
    src: (&str, u16),
    dst: (&str, u16),
    flags: TcpFlags,
) -> Observation {
    Observation {
        time: at,
        hook,
        ifindex: 3,
        interface: Some(interface.into()),
        flow: Some(Flow { protocol: Protocol::TCP, src: ip(src.0), sport: src.1, dst: ip(dst.0), dport: dst.1 }),
        encap: None,
        detail: Detail::Packet { tcp_flags: flags, tcp_seq: 1 },
        process: None,
        src: None,
        dst: None,
    }
}

pub(crate) fn drop_of(at: SystemTime, src: (&str, u16), dst: (&str, u16)) -> Observation {
    Observation {
        detail: Detail::Drop {
            drop_reason: DropReason::new(12, "NETFILTER_DROP"),
            location: "nf_hook_slow".into(),
            netns: 4026532000,
            culprit: None,
            quoted: None,
            packet: Captured(Arc::from(Vec::new())),
            solicited: None,
        },
        hook: Hook::KfreeSkb,
        interface: None,
        ..packet(at, Hook::KfreeSkb, "-", src, dst, TcpFlags::SYN)
    }
}

const CLIENT: (&str, u16) = ("10.244.1.10", 40000);
const SERVER: (&str, u16) = ("10.244.2.11", 9080);

fn query(from: u64, until: u64) -> FlowQuery {
    FlowQuery { client: Some(ip(CLIENT.0)), server: ip(SERVER.0), port: SERVER.1, from: t(from), until: t(until) }
}

#[test]
fn a_syn_that_arrived_was_delivered_and_answered_is_told_with_places_and_times() {
    let mut m = FlowMemory::default();
    m.record(&packet(t(1), Hook::TcIngress, "eth0", CLIENT, SERVER, TcpFlags::SYN));
    m.record(&packet(t(1), Hook::TcEgress, "veth1", CLIENT, SERVER, TcpFlags::SYN));
    m.record(&packet(t(2), Hook::TcIngress, "eth0", CLIENT, SERVER, TcpFlags::SYN));
    m.record(&packet(t(2), Hook::TcIngress, "veth1", SERVER, CLIENT, TcpFlags::SYN | TcpFlags::ACK));
    m.record(&packet(t(3), Hook::TcEgress, "eth0", SERVER, CLIENT, TcpFlags::SYN | TcpFlags::ACK));
    // Other flows and packets are not this flow's.
    m.record(&packet(t(2), Hook::TcIngress, "eth0", ("10.244.1.11", 40000), SERVER, TcpFlags::SYN));
    m.record(&packet(t(2), Hook::TcIngress, "eth0", CLIENT, SERVER, TcpFlags::ACK));
    // A socket-level hook is no place on the node's path.
    m.record(&packet(t(5), Hook::CgroupEgress, "eth0", CLIENT, SERVER, TcpFlags::SYN));
    let r = m.report("node-b", &query(0, 10));
    assert_eq!(r.connections, 1);
    let arrived = r.syn_arrived.expect("arrived");
    assert_eq!((arrived.interface.as_deref(), arrived.hook.as_str(), arrived.time), (Some("eth0"), "tc-ingress", t(1)));
    assert_eq!(arrived.count, 2, "two SYNs (a retransmission) arrived there");
    let last = r.syn_last.expect("last");
    assert_eq!((last.interface.as_deref(), last.time), (Some("eth0"), t(2)), "the latest sighting");
    assert_eq!(r.syn_left.expect("left").interface.as_deref(), Some("veth1"), "delivered to the pod's veth");
    let reply = r.reply_left.expect("reply");
    assert_eq!((reply.interface.as_deref(), reply.packet, reply.time), (Some("eth0"), PacketKind::SynAck, t(3)));
    let entered = r.reply_arrived.expect("the pod's answer entered the node");
    assert_eq!(entered.interface.as_deref(), Some("veth1"), "on the server's node: from the pod's veth");
    assert!(r.dropped.is_empty() && r.complete);
}

#[test]
fn outside_the_window_or_from_another_client_nothing_is_told() {
    let mut m = FlowMemory::default();
    m.record(&packet(t(1), Hook::TcIngress, "eth0", CLIENT, SERVER, TcpFlags::SYN));
    let r = m.report("node-b", &query(5, 10));
    assert_eq!((r.connections, r.saw_request()), (0, false));
    let other = FlowQuery { client: Some(ip("10.244.1.99")), ..query(0, 10) };
    assert!(!m.report("node-b", &other).saw_request());
    let any = FlowQuery { client: None, ..query(0, 10) };
    assert!(m.report("node-b", &any).saw_request(), "any client");
}

#[test]
fn drops_keep_reason_direction_and_time() {
    let mut m = FlowMemory::default();
    m.record(&packet(t(1), Hook::TcIngress, "eth0", CLIENT, SERVER, TcpFlags::SYN));
    m.record(&drop_of(t(1), CLIENT, SERVER));
    m.record(&drop_of(t(4), SERVER, CLIENT));
    // A retransmitted SYN freed by the TCP stack (its request socket exists) is no loss.
    let mut routine = drop_of(t(5), CLIENT, SERVER);
    if let Detail::Drop { drop_reason, .. } = &mut routine.detail {
        *drop_reason = DropReason::new(2, "NOT_SPECIFIED");
    }
    m.record(&routine);
    let r = m.report("node-b", &query(0, 10));
    assert_eq!(r.dropped.len(), 2);
    assert_eq!((r.dropped[0].request, r.dropped[0].time), (false, t(4)), "latest first: the reply");
    assert_eq!((r.dropped[1].request, r.dropped[1].reason.as_str()), (true, "NETFILTER_DROP"));
    assert!(r.saw_request());
}

#[test]
fn capacity_bounds_the_memory_and_forgetting_makes_absence_unprovable() {
    let mut m = FlowMemory::with_capacity(2);
    for (i, port) in [40001u16, 40002, 40003].into_iter().enumerate() {
        m.record(&packet(t(i as u64), Hook::TcIngress, "eth0", (CLIENT.0, port), SERVER, TcpFlags::SYN));
    }
    assert_eq!((m.len(), m.capacity(), m.recorded()), (2, 2, 3));
    assert!(!m.complete_since(t(0)), "the first connection (t=0) was pushed out");
    assert!(m.complete_since(t(1)));
    let r = m.report("node-b", &query(0, 10));
    assert_eq!((r.connections, r.complete), (2, false));
    assert!(m.report("node-b", &query(1, 10)).complete);
}

#[test]
fn places_per_connection_are_bounded() {
    let mut m = FlowMemory::default();
    for i in 0..(MAX_PLACES as u64 + 5) {
        m.record(&packet(t(i), Hook::TcIngress, &format!("veth{i}"), CLIENT, SERVER, TcpFlags::SYN));
    }
    let r = m.report("node-b", &query(0, 100));
    assert_eq!(r.syn_last.expect("last").interface, Some(format!("veth{}", MAX_PLACES + 4)), "latest kept");
    assert_eq!(r.syn_arrived.expect("first").interface.as_deref(), Some("veth5"), "the oldest made room");
}

#[test]
fn reports_travel_as_json() {
    let mut m = FlowMemory::default();
    m.record(&packet(t(1), Hook::TcIngress, "eth0", CLIENT, SERVER, TcpFlags::SYN));
    m.record(&drop_of(t(1), CLIENT, SERVER));
    let r = m.report("node-b", &query(0, 10));
    let json = serde_json::to_value(&r).expect("json");
    assert_eq!(json["syn_arrived"]["time"], "2026-11-30T00:00:01.000000Z");
    assert_eq!(json["syn_arrived"]["packet"], "syn");
    let back: FlowReport = serde_json::from_value(json).expect("back");
    assert_eq!(back, r);
    let q: FlowQuery = serde_json::from_value(serde_json::to_value(query(0, 10)).expect("json")).expect("back");
    assert_eq!(q, query(0, 10));
}
