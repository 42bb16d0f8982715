//! Events as a real API server treats them: stored once (`events.k8s.io/v1` shape), served as
//! `v1` Events too (`involvedObject`, `message`, `reportingComponent`...), and validated like
//! the real server's `events.k8s.io/v1` validation: on create `eventTime`, `reportingController`,
//! `reportingInstance`, `action` and `reason` are required, `note` is at most 1 kB, the Event
//! lives in the namespace of the object it is about (an Event about a cluster-scoped object, such
//! as a Node, in `default`), a `series` has count >= 2; an update may change only `series` (and
//! metadata bookkeeping).

use serde_json::{json, Map, Value};

const NOTE_MAX_BYTES: usize = 1024;

fn text<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get(field).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Checks a new `events.k8s.io/v1` Event.
pub fn validate_create(event: &Value) -> Result<(), String> {
    let mut problems = Vec::new();
    for field in ["eventTime", "reportingController", "reportingInstance", "action", "reason"] {
        if text(event, field).is_none() {
            problems.push(format!("{field}: Required value"));
        }
    }
    for field in ["reportingInstance", "action", "reason"] {
        if text(event, field).is_some_and(|v| v.len() > 128) {
            problems.push(format!("{field}: Too long: may not be longer than 128"));
        }
    }
    if text(event, "note").is_some_and(|n| n.len() > NOTE_MAX_BYTES) {
        problems.push(format!("note: Too long: may not be longer than {NOTE_MAX_BYTES}"));
    }
    if !matches!(text(event, "type"), Some("Normal" | "Warning")) {
        problems.push("type: Unsupported value: must be Normal or Warning".to_string());
    }
    let namespace = event.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
    if let Some(regarding) = event.pointer("/regarding/namespace").and_then(Value::as_str).filter(|n| !n.is_empty()) {
        if regarding != namespace {
            problems.push(format!(
                "metadata.namespace: Invalid value: \"{namespace}\": does not match regarding.namespace"
            ));
        }
    }
    let regarding_cluster_scoped = event.get("regarding").is_some_and(|r| r.is_object())
        && event.pointer("/regarding/namespace").and_then(Value::as_str).is_none_or(str::is_empty);
    if regarding_cluster_scoped && !namespace.is_empty() && namespace != "default" {
        // kube-apiserver: "event.Namespace must also be empty (or "default", for compatibility)".
        problems
            .push(format!("regarding.namespace: Invalid value: \"\": does not match event.namespace \"{namespace}\""));
    }
    if let Some(series) = event.get("series").filter(|s| !s.is_null()) {
        if series.get("count").and_then(Value::as_i64).is_none_or(|c| c < 2) {
            problems.push("series.count: Invalid value: should be at least 2".to_string());
        }
        if series.get("lastObservedTime").is_none_or(Value::is_null) {
            problems.push("series.lastObservedTime: Required value".to_string());
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("Event is invalid: {}", problems.join(", ")))
    }
}

/// Checks an update: only `series` may change (besides metadata the server keeps).
pub fn validate_update(before: &Value, after: &Value) -> Result<(), String> {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("series");
        }
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
            m.remove("managedFields");
        }
        v
    };
    if strip(before) != strip(after) {
        return Err("Event is invalid: an update may only change series".to_string());
    }
    match after.get("series") {
        Some(s) if s.get("count").and_then(Value::as_i64).is_none_or(|c| c < 2) => {
            Err("Event is invalid: series.count: should be at least 2".to_string())
        }
        _ => Ok(()),
    }
}

/// The stored (`events.k8s.io/v1`) Event as a `v1` Event.
pub fn to_core(event: &Value) -> Value {
    let mut out = Map::new();
    out.insert("metadata".into(), event.get("metadata").cloned().unwrap_or(json!({})));
    let copy = |out: &mut Map<String, Value>, from: &str, to: &str| {
        if let Some(v) = event.get(from).filter(|v| !v.is_null()) {
            out.insert(to.into(), v.clone());
        }
    };
    copy(&mut out, "regarding", "involvedObject");
    copy(&mut out, "related", "related");
    copy(&mut out, "note", "message");
    copy(&mut out, "reason", "reason");
    copy(&mut out, "type", "type");
    copy(&mut out, "action", "action");
    copy(&mut out, "eventTime", "eventTime");
    copy(&mut out, "reportingController", "reportingComponent");
    copy(&mut out, "reportingInstance", "reportingInstance");
    copy(&mut out, "series", "series");
    if !out.contains_key("involvedObject") {
        out.insert("involvedObject".into(), json!({}));
    }
    out.insert(
        "source".into(),
        json!({"component": event.get("reportingController"), "host": event.get("reportingInstance")}),
    );
    Value::Object(out)
}

/// A `v1` Event as stored.
pub fn from_core(event: &Value) -> Value {
    let mut out = Map::new();
    out.insert("metadata".into(), event.get("metadata").cloned().unwrap_or(json!({})));
    for (from, to) in [
        ("involvedObject", "regarding"),
        ("related", "related"),
        ("message", "note"),
        ("reason", "reason"),
        ("type", "type"),
        ("action", "action"),
        ("eventTime", "eventTime"),
        ("reportingComponent", "reportingController"),
        ("reportingInstance", "reportingInstance"),
        ("series", "series"),
    ] {
        if let Some(v) = event.get(from).filter(|v| !v.is_null()) {
            out.insert(to.into(), v.clone());
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Value {
        json!({
            "metadata": {"name": "cart-1.observer-1", "namespace": "shop"},
            "eventTime": "2026-11-30T00:00:00.000000Z", "reportingController": "observer",
            "reportingInstance": "node-a", "action": "Diagnosed", "reason": "ControlPlaneBlocked",
            "type": "Warning", "note": "R5 ...",
            "regarding": {"apiVersion": "v1", "kind": "Pod", "namespace": "shop", "name": "cart-1"}
        })
    }

    #[test]
    fn creates_need_what_the_real_server_requires() {
        assert_eq!(validate_create(&event()), Ok(()));
        let mut e = event();
        e.as_object_mut().expect("object").remove("action");
        assert!(validate_create(&e).expect_err("no action").contains("action: Required"));
        let mut e = event();
        e["note"] = json!("x".repeat(1025));
        assert!(validate_create(&e).expect_err("long note").contains("note: Too long"));
        let mut e = event();
        e["metadata"]["namespace"] = json!("default");
        assert!(validate_create(&e).is_err(), "an Event lives in its object's namespace");
        // About a Node (cluster-scoped): in `default` only.
        let mut node = event();
        node["regarding"] = json!({"apiVersion": "v1", "kind": "Node", "name": "node-b"});
        assert!(validate_create(&node).expect_err("in shop").contains("does not match event.namespace"));
        node["metadata"]["namespace"] = json!("default");
        assert_eq!(validate_create(&node), Ok(()));
    }

    #[test]
    fn updates_may_change_only_the_series() {
        let before = event();
        let mut after = before.clone();
        after["series"] = json!({"count": 5, "lastObservedTime": "2026-11-30T00:01:00.000000Z"});
        assert_eq!(validate_update(&before, &after), Ok(()));
        after["note"] = json!("changed");
        assert!(validate_update(&before, &after).is_err());
    }

    #[test]
    fn core_view_names_the_reporting_component() {
        let core = to_core(&event());
        assert_eq!(core["reportingComponent"], "observer");
        assert_eq!(core["involvedObject"]["name"], "cart-1");
        assert_eq!(core["message"], "R5 ...");
        assert_eq!(from_core(&core)["reportingController"], "observer");
    }
}
