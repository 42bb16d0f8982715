use std::time::Duration;

use observer::diagnosis::path::Location;

use super::*;
use crate::testing::xds_drop;

const LAB: &str = include_str!("../../../observer/tests/fixtures/lab-inventory.json");

fn inventory() -> Inventory {
    Inventory::from_json(LAB).expect("inventory")
}

/// productpage (node-a, 10.244.1.10) -> details (node-b, 10.244.2.11):9080, never answered.
fn silent_to_details() -> Finding {
    let mut f = xds_drop(40000);
    f.mechanism = Mechanism::Silent;
    f.src.ip = Some("10.244.1.10".parse().expect("ip"));
    f.dst = observer::diagnosis::Endpoint {
        ip: Some("10.244.2.11".parse().expect("ip")),
        port: Some(9080),
        pod: Some("bookinfo/details-v1-8d6f5c7b9-w4r8t".into()),
        ..Default::default()
    };
    f
}

#[test]
fn a_silent_handshake_to_a_pod_on_another_node_is_asked_about_with_a_widened_window() {
    let f = silent_to_details();
    let key = observer::diagnosis::report::key(&f);
    let ask = ask_for(&f, &key, "node-a", &inventory()).expect("ask");
    assert_eq!(ask.to_node, "node-b");
    assert_eq!(
        (ask.client.to_string(), ask.server.to_string(), ask.port),
        ("10.244.1.10".into(), "10.244.2.11".into(), 9080)
    );
    assert_eq!(ask.window.0 + WINDOW_SLACK, f.evidence.first_seen);
    assert_eq!(ask.window.1, f.evidence.last_seen + WINDOW_SLACK);
}

#[test]
fn nothing_is_asked_about_drops_local_destinations_or_foreign_sources() {
    let inv = inventory();
    let mut dropped = silent_to_details();
    dropped.mechanism = Mechanism::Dropped;
    assert!(
        ask_for(&dropped, &observer::diagnosis::report::key(&dropped), "node-a", &inv).is_none(),
        "this node saw the drop"
    );
    let f = silent_to_details();
    assert!(
        ask_for(&f, &observer::diagnosis::report::key(&f), "node-b", &inv).is_none(),
        "the source is not this node's pod"
    );
    let mut local = silent_to_details();
    local.dst.ip = Some("10.244.1.11".parse().expect("ip")); // reviews, node-a
    local.dst.pod = None;
    assert!(
        ask_for(&local, &observer::diagnosis::report::key(&local), "node-a", &inv).is_none(),
        "same node: nobody to ask"
    );
    let mut unknown = silent_to_details();
    unknown.dst.ip = Some("192.0.2.1".parse().expect("ip"));
    unknown.dst.pod = None;
    assert!(
        ask_for(&unknown, &observer::diagnosis::report::key(&unknown), "node-a", &inv).is_none(),
        "not a pod: no node to ask"
    );
}

#[test]
fn a_service_address_is_asked_about_as_the_pod_behind_it() {
    let mut f = silent_to_details();
    f.dst.ip = Some("10.96.1.12".parse().expect("ip")); // the details Service
    let ask = ask_for(&f, &observer::diagnosis::report::key(&f), "node-a", &inventory()).expect("ask");
    assert_eq!(ask.server.to_string(), "10.244.2.11");
}

#[test]
fn decided_paths_are_bounded_and_resolve_the_hold() {
    let mut state = State::default();
    let f = silent_to_details();
    let key = observer::diagnosis::report::key(&f);
    state.held.insert(key.clone(), Instant::now());
    let own = observer::diagnosis::flows::FlowReport::default();
    state.decide(key.clone(), Some(observer::diagnosis::path::locate("node-a", "node-b", &own, None)));
    assert!(state.held.is_empty());
    assert_eq!(state.resolved, vec![key.clone()]);
    assert_eq!(state.paths.get(&key).map(|p| p.location), Some(Location::Unknown));
    for i in 0..(MAX_PATHS + 3) {
        let mut g = silent_to_details();
        g.src.workload = Some(format!("w{i}"));
        state.decide(
            observer::diagnosis::report::key(&g),
            Some(observer::diagnosis::path::locate("node-a", "node-b", &own, None)),
        );
    }
    assert_eq!(state.paths.len(), MAX_PATHS);
    assert!(!state.paths.contains_key(&key), "the oldest forgotten");
    let _ = Duration::ZERO;
}
