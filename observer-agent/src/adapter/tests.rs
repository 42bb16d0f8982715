use super::*;
use crate::testing::xds_drop;

#[test]
fn repeats_of_one_finding_make_one_new_then_coalesced_updates_then_a_clear() {
    let mut live = Live::new("node-a".into(), Duration::from_secs(300));
    let t0 = Instant::now();
    for port in 0..1000u16 {
        live.add(xds_drop(40000 + port), t0);
    }
    let first = live.beat(t0);
    assert_eq!(first.len(), 1, "one New for 1,000 connections of the same flow: {first:?}");
    let FindingUpdate::New(new) = &first[0] else { panic!("expected New, got {first:?}") };
    assert_eq!(new.evidence.connections, 1);
    // The 999 repeats arrive as one Updated at the next beat, with cumulative counts.
    let second = live.beat(t0 + UPDATE_BEAT);
    assert_eq!(second.len(), 1, "{second:?}");
    let FindingUpdate::Updated(updated) = &second[0] else { panic!("expected Updated, got {second:?}") };
    assert_eq!(updated.evidence.connections, 1000);
    assert_eq!(updated.evidence.attempts, 1000);
    assert!(live.beat(t0 + UPDATE_BEAT * 2).is_empty(), "nothing new: nothing sent");
    let cleared = live.beat(t0 + Duration::from_secs(300));
    assert!(
        matches!(&cleared[..], [FindingUpdate::Cleared(k)] if k.src == "shop/cart" && k.port == 15012),
        "{cleared:?}"
    );
}

#[test]
fn different_flows_are_different_findings() {
    let mut live = Live::new("node-a".into(), Duration::from_secs(300));
    let mut other = xds_drop(1);
    other.dst.port = Some(15017);
    live.add(xds_drop(2), Instant::now());
    live.add(other, Instant::now());
    let news = live.beat(Instant::now());
    assert_eq!(news.iter().filter(|u| matches!(u, FindingUpdate::New(_))).count(), 2, "{news:?}");
}
