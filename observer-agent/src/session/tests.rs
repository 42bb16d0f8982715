use super::*;
use crate::testing::xds_drop;

fn with_connections(port: u16, connections: u32) -> observer::diagnosis::Finding {
    let mut f = xds_drop(port);
    f.evidence.connections = connections;
    f
}

#[test]
fn a_batch_keeps_the_last_state_of_each_finding_in_first_seen_order() {
    let mut other = xds_drop(1);
    other.dst.port = Some(15017);
    let mut batch = vec![FindingUpdate::New(with_connections(1, 1))];
    batch.extend((2..=1000).map(|n| FindingUpdate::Updated(with_connections(n as u16, n))));
    batch.push(FindingUpdate::New(other));
    let out = coalesce(batch);
    assert_eq!(out.len(), 2, "{out:?}");
    let FindingUpdate::New(f) = &out[0] else { panic!("a New followed by updates stays New: {out:?}") };
    assert_eq!(f.evidence.connections, 1000, "with the last state");
    assert_eq!(out[1].finding().dst.port, Some(15017));
}

#[test]
fn updates_then_a_clear_are_the_clear_and_a_recurrence_after_it_is_new() {
    let out =
        coalesce(vec![FindingUpdate::Updated(with_connections(1, 2)), FindingUpdate::Cleared(with_connections(1, 3))]);
    assert!(matches!(out.as_slice(), [FindingUpdate::Cleared(f)] if f.evidence.connections == 3), "{out:?}");
    let out =
        coalesce(vec![FindingUpdate::Cleared(with_connections(1, 3)), FindingUpdate::New(with_connections(1, 1))]);
    assert!(matches!(out.as_slice(), [FindingUpdate::New(_)]), "{out:?}");
}

#[test]
fn drops_are_counted_by_reason_with_a_bounded_set_of_names() {
    let stats = SessionStats::default();
    let drop = |name: &str| Observation {
        detail: Detail::Drop {
            drop_reason: observer::events::model::DropReason::new(1, name),
            location: "nft_do_chain+0x3e8".into(),
            netns: 1,
            culprit: None,
            quoted: None,
            packet: Default::default(),
            solicited: None,
        },
        time: std::time::SystemTime::UNIX_EPOCH,
        hook: observer::events::model::Hook::KfreeSkb,
        ifindex: 0,
        interface: None,
        flow: None,
        encap: None,
        src: None,
        dst: None,
        process: None,
    };
    for i in 0..(MAX_REASONS + 5) {
        stats.observed(&drop(&format!("REASON_{i}")));
    }
    stats.observed(&drop("REASON_0"));
    let reasons = stats.drops_by_reason();
    assert_eq!(reasons.len(), MAX_REASONS + 1, "the bound plus `other`");
    assert_eq!((reasons["REASON_0"], reasons["other"]), (2, 5));
    assert_eq!(stats.observations.load(Ordering::Relaxed), MAX_REASONS as u64 + 6);
}
