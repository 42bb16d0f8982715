//! The engine with a fake clock: observations carry the times, `tick` is told "now".

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::*;
use crate::{
    diagnosis::{Kind, Mechanism, Requirement},
    model::{Captured, Detail, DropReason, Flow, Hook, Protocol, SocketMilestone, TcpFlags},
};

const LAB: &str = include_str!("../../../../observer/tests/fixtures/lab-inventory.json");
const PP: &str = "10.244.1.10";
const ISTIOD: &str = "10.244.2.10";

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn obs(inv: &Inventory, t: u64, hook: Hook, src: (&str, u16), dst: (&str, u16), detail: Detail) -> Observation {
    let flow = Flow { protocol: Protocol::TCP, src: ip(src.0), sport: src.1, dst: ip(dst.0), dport: dst.1 };
    Observation {
        encap: None,
        time: at(t),
        hook,
        ifindex: 3,
        interface: Some("cni0".into()),
        flow: Some(flow),
        detail,
        src: Some(inv.describe(flow.src, None)),
        dst: Some(inv.describe(flow.dst, Some(flow.dport))),
        process: None,
    }
}

fn syn() -> Detail {
    Detail::Packet { tcp_flags: TcpFlags::SYN, tcp_seq: 1 }
}

fn syn_ack() -> Detail {
    Detail::Packet { tcp_flags: TcpFlags::SYN | TcpFlags::ACK, tcp_seq: 1 }
}

fn rto() -> Detail {
    Detail::Socket { event: SocketMilestone::Rto, retransmits: 0, socket_cookie: 1 }
}

fn netfilter_drop() -> Detail {
    Detail::Drop {
        drop_reason: DropReason::new(12, "NETFILTER_DROP"),
        location: "nft_do_chain+0x3e8".into(),
        netns: 7,
        culprit: None,
        quoted: None,
        packet: Captured::default(),
        solicited: None,
    }
}

fn engine(inv: &Arc<Inventory>) -> Engine {
    Engine::new(EngineConfig::new("node-a"), Arc::clone(inv))
}

fn inventory() -> Arc<Inventory> {
    Arc::new(Inventory::from_json(LAB).expect("inventory"))
}

#[test]
fn a_silent_connection_is_reported_by_tick_within_the_idle_bound_while_running() {
    let inv = inventory();
    let mut e = engine(&inv);
    // A SYN to istiod's xDS port, retransmitted twice, never answered, nothing dropped here.
    let mut updates = e.observe(&obs(&inv, 0, Hook::TcEgress, (PP, 40000), (ISTIOD, 15012), syn()));
    assert!(updates.is_empty(), "a single SYN in flight decides nothing: {updates:?}");
    updates = e.observe(&obs(&inv, 1, Hook::SockOps, (PP, 40000), (ISTIOD, 15012), rto()));
    assert!(updates.is_empty(), "one retransmission is ordinary loss: {updates:?}");
    updates = e.observe(&obs(&inv, 3, Hook::SockOps, (PP, 40000), (ISTIOD, 15012), rto()));
    let live =
        updates.iter().find(|u| matches!(u, FindingUpdate::New(_))).expect("announced at the second retransmission");
    assert_eq!(live.finding().mechanism, Mechanism::Silent);
    // The process keeps running: nothing else happens to that connection. Before the bound, the
    // connection is still held; at last_seen + idle, tick concludes it.
    assert!(e.tick(at(3) + DEFAULT_IDLE - Duration::from_secs(1)).is_empty());
    assert_eq!(e.connections_held(), 1);
    let concluded = e.tick(at(3) + DEFAULT_IDLE);
    assert_eq!(e.connections_held(), 0, "concluded by time, not by exit");
    assert_eq!(concluded.len(), 1, "{concluded:?}");
    let FindingUpdate::Updated(f) = &concluded[0] else {
        panic!("the announced finding gets its evidence: {concluded:?}")
    };
    assert_eq!((f.requirement, f.kind, f.mechanism), (Requirement::R5, Kind::ControlPlaneBlocked, Mechanism::Silent));
    assert_eq!((f.evidence.attempts, f.evidence.connections), (3, 1));
    assert_eq!(f.dst.ip, Some(ip(ISTIOD)));
    assert_eq!(e.findings().len(), 1);
    assert_eq!(e.stats().connections, 1);
}

#[test]
fn findings_are_new_then_updated_then_cleared_when_the_flow_works_again() {
    let inv = inventory();
    let mut e = engine(&inv);
    e.observe(&obs(&inv, 0, Hook::TcEgress, (PP, 40000), (ISTIOD, 15012), syn()));
    let first = e.observe(&obs(&inv, 0, Hook::KfreeSkb, (PP, 40000), (ISTIOD, 15012), netfilter_drop()));
    assert!(matches!(first.as_slice(), [FindingUpdate::New(f)] if f.mechanism == Mechanism::Dropped), "{first:?}");
    e.observe(&obs(&inv, 1, Hook::TcEgress, (PP, 40001), (ISTIOD, 15012), syn()));
    let again = e.observe(&obs(&inv, 1, Hook::KfreeSkb, (PP, 40001), (ISTIOD, 15012), netfilter_drop()));
    assert!(again.is_empty(), "the same finding is not announced twice: {again:?}");
    let concluded = e.tick(at(100));
    assert_eq!(concluded.len(), 2);
    assert!(concluded.iter().all(|u| matches!(u, FindingUpdate::Updated(_))), "{concluded:?}");
    assert_eq!(concluded[1].finding().evidence.connections, 2, "one aggregate, both connections");
    // The rule is gone: the next attempt is answered.
    e.observe(&obs(&inv, 200, Hook::TcEgress, (PP, 40002), (ISTIOD, 15012), syn()));
    e.observe(&obs(&inv, 200, Hook::TcIngress, (ISTIOD, 15012), (PP, 40002), syn_ack()));
    let cleared = e.finish();
    assert!(
        matches!(cleared.as_slice(), [FindingUpdate::Cleared(f)] if f.mechanism == Mechanism::Dropped),
        "{cleared:?}"
    );
    assert_eq!(e.findings().len(), 1, "the report keeps what happened");
    let s = e.stats();
    assert_eq!((s.connections, s.established), (3, 1));
}

#[test]
fn memory_is_bounded_and_the_least_recent_connection_is_concluded_first() {
    let inv = inventory();
    let mut e = Engine::new(EngineConfig { capacity: 2, ..EngineConfig::new("node-a") }, Arc::clone(&inv));
    e.observe(&obs(&inv, 0, Hook::TcEgress, (PP, 40000), (ISTIOD, 15012), syn()));
    e.observe(&obs(&inv, 1, Hook::TcEgress, (PP, 40001), (ISTIOD, 15012), syn()));
    // Touching the first makes the second the least recently seen.
    e.observe(&obs(&inv, 2, Hook::SockOps, (PP, 40000), (ISTIOD, 15012), rto()));
    e.observe(&obs(&inv, 2, Hook::SockOps, (PP, 40000), (ISTIOD, 15012), rto()));
    let pushed = e.observe(&obs(&inv, 3, Hook::TcEgress, (PP, 40002), (ISTIOD, 15012), syn()));
    assert_eq!(e.connections_held(), 2);
    assert_eq!(e.stats().connections, 1, "one concluded to make room: {pushed:?}");
    assert_eq!(e.stats().unresolved, 1, "the pending single SYN (40001), not the retransmitted one");
    let rest = e.finish();
    assert!(rest.iter().any(|u| u.finding().mechanism == Mechanism::Silent));
}

#[test]
fn quiet_established_connections_are_kept_aside_and_counted_at_the_end() {
    let inv = inventory();
    let mut e = engine(&inv);
    e.observe(&obs(&inv, 0, Hook::TcEgress, (PP, 40000), (ISTIOD, 15012), syn()));
    e.observe(&obs(&inv, 0, Hook::TcIngress, (ISTIOD, 15012), (PP, 40000), syn_ack()));
    assert!(e.tick(at(1000)).is_empty(), "a healthy connection is no finding");
    assert_eq!(e.connections_held(), 1, "kept quiet, not forgotten");
    assert_eq!(e.stats().connections, 0);
    let done = e.finish();
    assert!(done.is_empty());
    assert_eq!((e.stats().connections, e.stats().established), (1, 1));
}

#[test]
fn with_expire_a_finding_not_seen_again_is_cleared_by_tick_and_a_recurrence_is_new_again() {
    let inv = inventory();
    let expire = Duration::from_secs(300);
    let mut e = Engine::new(EngineConfig { expire: Some(expire), ..EngineConfig::new("node-a") }, Arc::clone(&inv));
    e.observe(&obs(&inv, 0, Hook::TcEgress, (PP, 40000), (ISTIOD, 15012), syn()));
    let first = e.observe(&obs(&inv, 0, Hook::KfreeSkb, (PP, 40000), (ISTIOD, 15012), netfilter_drop()));
    assert!(matches!(first.as_slice(), [FindingUpdate::New(_)]), "{first:?}");
    // A second connection of the same flow is still being decided at 299 s: not expired.
    e.observe(&obs(&inv, 299, Hook::TcEgress, (PP, 40001), (ISTIOD, 15012), syn()));
    e.observe(&obs(&inv, 299, Hook::KfreeSkb, (PP, 40001), (ISTIOD, 15012), netfilter_drop()));
    let concluded = e.tick(at(60));
    assert!(
        matches!(concluded.as_slice(), [FindingUpdate::Updated(f)] if f.evidence.connections == 1),
        "{concluded:?}"
    );
    assert!(e.tick(at(310)).is_empty(), "last seen at 0 but a connection of it is pending (seen at 299)");
    let grown = e.tick(at(299) + DEFAULT_IDLE);
    assert!(matches!(grown.as_slice(), [FindingUpdate::Updated(f)] if f.evidence.connections == 2), "{grown:?}");
    assert!(e.tick(at(299 + 299)).is_empty(), "seen 299 s ago: still current");
    let cleared = e.tick(at(299 + 300));
    let [FindingUpdate::Cleared(f)] = cleared.as_slice() else { panic!("expired: {cleared:?}") };
    assert_eq!((f.kind, f.mechanism, f.evidence.connections), (Kind::ControlPlaneBlocked, Mechanism::Dropped, 2));
    assert!(e.tick(at(2000)).is_empty(), "cleared once");
    assert_eq!(e.findings().len(), 1, "the report keeps what happened");
    // It happens again: announced as new.
    e.observe(&obs(&inv, 3000, Hook::TcEgress, (PP, 40002), (ISTIOD, 15012), syn()));
    let again = e.observe(&obs(&inv, 3000, Hook::KfreeSkb, (PP, 40002), (ISTIOD, 15012), netfilter_drop()));
    assert!(matches!(again.as_slice(), [FindingUpdate::New(_)]), "{again:?}");
}

#[test]
fn without_expire_findings_stay_current() {
    let inv = inventory();
    let mut e = engine(&inv);
    e.observe(&obs(&inv, 0, Hook::TcEgress, (PP, 40000), (ISTIOD, 15012), syn()));
    e.observe(&obs(&inv, 0, Hook::KfreeSkb, (PP, 40000), (ISTIOD, 15012), netfilter_drop()));
    assert_eq!(e.tick(at(60)).len(), 1);
    assert!(e.tick(at(1_000_000)).is_empty());
}

#[test]
fn a_working_connection_clears_the_finding_while_running_when_it_goes_quiet() {
    let inv = inventory();
    let mut e = engine(&inv);
    e.observe(&obs(&inv, 0, Hook::TcEgress, (PP, 40000), (ISTIOD, 15012), syn()));
    e.observe(&obs(&inv, 0, Hook::KfreeSkb, (PP, 40000), (ISTIOD, 15012), netfilter_drop()));
    // The rule is removed: the next attempt is answered and the connection stays open, quiet.
    e.observe(&obs(&inv, 10, Hook::TcEgress, (PP, 40001), (ISTIOD, 15012), syn()));
    e.observe(&obs(&inv, 10, Hook::TcIngress, (ISTIOD, 15012), (PP, 40001), syn_ack()));
    let concluded = e.tick(at(30));
    assert!(matches!(concluded.as_slice(), [FindingUpdate::Updated(_)]), "the drop concluded: {concluded:?}");
    let cleared = e.tick(at(40));
    assert!(
        matches!(cleared.as_slice(), [FindingUpdate::Cleared(f)] if f.mechanism == Mechanism::Dropped),
        "cleared when the working connection goes quiet, not at the end of the run: {cleared:?}"
    );
    assert_eq!(e.connections_held(), 1, "the working connection is kept (a later stall is still seen)");
    assert!(e.finish().is_empty(), "cleared once");
}

#[test]
fn a_working_connection_does_not_clear_a_drop_seen_after_it_started() {
    let inv = inventory();
    let mut e = engine(&inv);
    e.observe(&obs(&inv, 10, Hook::TcEgress, (PP, 40001), (ISTIOD, 15012), syn()));
    e.observe(&obs(&inv, 10, Hook::TcIngress, (ISTIOD, 15012), (PP, 40001), syn_ack()));
    // Another pod of the same workload is still dropped after the working connection started.
    e.observe(&obs(&inv, 11, Hook::TcEgress, (PP, 40002), (ISTIOD, 15012), syn()));
    e.observe(&obs(&inv, 11, Hook::KfreeSkb, (PP, 40002), (ISTIOD, 15012), netfilter_drop()));
    let updates = e.tick(at(41));
    assert!(matches!(updates.as_slice(), [FindingUpdate::Updated(_)]), "{updates:?}");
    assert!(e.tick(at(100)).is_empty(), "the drop is newer than the working connection: still current");
}
