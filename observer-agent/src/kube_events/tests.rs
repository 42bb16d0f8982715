use super::*;
use crate::testing::xds_drop;

#[test]
fn the_event_is_on_the_source_pod_with_the_fields_the_api_requires() {
    let f = xds_drop(40000);
    let key = report::key(&f);
    let e = new_event(&f, "node-a", &key, Some("uid-1".into())).expect("event");
    assert_eq!(e.metadata.namespace.as_deref(), Some("shop"));
    let regarding = e.regarding.as_ref().expect("regarding");
    assert_eq!(
        (regarding.kind.as_deref(), regarding.name.as_deref(), regarding.uid.as_deref()),
        (Some("Pod"), Some("cart-1"), Some("uid-1"))
    );
    assert_eq!(e.type_.as_deref(), Some("Warning"));
    assert_eq!(e.reason.as_deref(), Some("ControlPlaneBlocked"));
    assert_eq!(e.reporting_controller.as_deref(), Some("observer"));
    assert_eq!(e.reporting_instance.as_deref(), Some("node-a"));
    assert!(e.action.is_some() && e.event_time.is_some());
    assert!(e.series.is_none(), "one occurrence: no series (the API wants count >= 2)");
    let note = e.note.as_deref().expect("note");
    assert!(
        note.starts_with("R5 control-plane-blocked (dropped): shop/cart-1 -> istio-system/istiod:15012 (xds-tls)"),
        "{note}"
    );
    let annotation = &e.metadata.annotations.as_ref().expect("annotations")[FINDING_ANNOTATION];
    let back: serde_json::Value = serde_json::from_str(annotation).expect("json");
    assert_eq!(back["requirement"], "R5");
}

#[test]
fn names_are_stable_per_node_and_finding_and_valid() {
    let key = report::key(&xds_drop(1));
    assert_eq!(event_name("cart-1", "node-a", &key), event_name("cart-1", "node-a", &report::key(&xds_drop(2))));
    assert_ne!(event_name("cart-1", "node-a", &key), event_name("cart-1", "node-b", &key));
    let long = event_name(&"p".repeat(300), "node-a", &key);
    assert!(long.len() <= 253, "{}", long.len());
    assert!(long.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'), "{long}");
}

#[test]
fn the_note_is_cut_to_1_kb_on_a_character_boundary() {
    let mut f = xds_drop(1);
    f.remediation = "é".repeat(2000);
    let note = note(&f);
    assert!(note.len() <= NOTE_MAX_BYTES, "{}", note.len());
    assert!(note.ends_with('…'));
}

#[test]
fn the_bucket_allows_the_burst_then_the_rate() {
    let t0 = Instant::now();
    let mut bucket = Bucket { tokens: BURST, at: t0 };
    let burst = (0..100).filter(|_| bucket.take(t0)).count();
    assert_eq!(burst, BURST as usize);
    let after_one_second = (0..100).filter(|_| bucket.take(t0 + Duration::from_secs(1))).count();
    assert_eq!(after_one_second, WRITES_PER_SEC as usize);
}
