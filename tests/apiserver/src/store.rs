//! The server's state: objects by resource and `namespace/name`, one resourceVersion counter for
//! all of them (as etcd's revision), a bounded history of changes for watches that resume from a
//! resourceVersion (older than the history: `410 Gone`), and a broadcast of live changes.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{json, Value};
use tokio::sync::broadcast;

/// One change: resourceVersion, resource, `ADDED`/`MODIFIED`/`DELETED`, the object after it.
#[derive(Clone, Debug)]
pub struct Change {
    pub rv: u64,
    pub resource: &'static str,
    pub kind: &'static str,
    pub object: Value,
}

/// A served resource: its plural, its kind, its group/version, whether namespaced.
#[derive(Clone, Copy, Debug)]
pub struct Resource {
    /// Storage name (events of both APIs share one).
    pub storage: &'static str,
    pub kind: &'static str,
    pub api_version: &'static str,
    pub namespaced: bool,
}

/// The resources served: (group, plural) -> resource.
pub fn resource(group: &str, plural: &str) -> Option<Resource> {
    let r = |storage, kind, api_version, namespaced| Resource { storage, kind, api_version, namespaced };
    Some(match (group, plural) {
        ("", "pods") => r("pods", "Pod", "v1", true),
        ("", "services") => r("services", "Service", "v1", true),
        ("", "namespaces") => r("namespaces", "Namespace", "v1", false),
        ("", "nodes") => r("nodes", "Node", "v1", false),
        ("", "events") => r("events", "Event", "v1", true),
        ("discovery.k8s.io", "endpointslices") => r("endpointslices", "EndpointSlice", "discovery.k8s.io/v1", true),
        ("events.k8s.io", "events") => r("events", "Event", "events.k8s.io/v1", true),
        _ => return None,
    })
}

/// The storage of a kind found in an inventory file.
pub fn storage_of_kind(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Pod" => "pods",
        "Service" => "services",
        "Namespace" => "namespaces",
        "Node" => "nodes",
        "EndpointSlice" => "endpointslices",
        _ => return None,
    })
}

pub struct Store {
    rv: u64,
    objects: BTreeMap<&'static str, BTreeMap<String, Value>>,
    history: VecDeque<Change>,
    history_max: usize,
    pub changes: broadcast::Sender<Change>,
    uid_seq: u64,
}

impl Store {
    /// An empty store whose first change gets resourceVersion `rv_start + 1`.
    pub fn new(rv_start: u64, history_max: usize) -> Self {
        let (changes, _) = broadcast::channel(4096);
        Self { rv: rv_start, objects: BTreeMap::new(), history: VecDeque::new(), history_max, changes, uid_seq: 0 }
    }

    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// The oldest resourceVersion a watch can resume from (older ones are gone).
    pub fn oldest_resumable(&self) -> u64 {
        self.history.front().map_or(self.rv, |c| c.rv - 1)
    }

    /// Objects of a storage, in key order, from key `after` on (exclusive).
    pub fn list(&self, storage: &str) -> impl Iterator<Item = (&String, &Value)> {
        self.objects.get(storage).into_iter().flatten()
    }

    pub fn get(&self, storage: &str, key: &str) -> Option<&Value> {
        self.objects.get(storage)?.get(key)
    }

    /// Changes of `storage` after `rv`, from the history.
    pub fn since(&self, storage: &str, rv: u64) -> Vec<Change> {
        self.history.iter().filter(|c| c.rv > rv && c.resource == storage).cloned().collect()
    }

    /// Stores `object` (created or replaced): sets its resourceVersion (and uid and
    /// creationTimestamp when new), records and broadcasts the change.
    pub fn put(&mut self, storage: &'static str, key: String, mut object: Value) -> Value {
        self.rv += 1;
        let existed = self.get(storage, &key).is_some();
        let meta = &mut object["metadata"];
        meta["resourceVersion"] = json!(self.rv.to_string());
        if meta.get("uid").and_then(Value::as_str).is_none_or(str::is_empty) {
            self.uid_seq += 1;
            meta["uid"] = json!(format!("00000000-0000-4000-8000-{:012x}", self.rv * 1000 + self.uid_seq));
        }
        if meta.get("creationTimestamp").is_none_or(Value::is_null) {
            meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        self.objects.entry(storage).or_default().insert(key, object.clone());
        self.record(storage, if existed { "MODIFIED" } else { "ADDED" }, object.clone());
        object
    }

    /// Removes an object; the DELETED change carries it with a new resourceVersion.
    pub fn delete(&mut self, storage: &'static str, key: &str) -> Option<Value> {
        let mut object = self.objects.get_mut(storage)?.remove(key)?;
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record(storage, "DELETED", object.clone());
        Some(object)
    }

    fn record(&mut self, resource: &'static str, kind: &'static str, object: Value) {
        let change = Change { rv: self.rv, resource, kind, object };
        self.history.push_back(change.clone());
        while self.history.len() > self.history_max {
            self.history.pop_front();
        }
        // No watcher listening is fine.
        let _ = self.changes.send(change);
    }
}

/// `namespace/name` (or `name` for cluster-scoped objects) of an object.
pub fn key_of(object: &Value) -> String {
    let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    match object.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_bounded_and_resume_points_follow_it() {
        let mut store = Store::new(100, 3);
        for i in 0..5 {
            store.put("pods", format!("ns/p{i}"), json!({"metadata": {"name": format!("p{i}"), "namespace": "ns"}}));
        }
        assert_eq!(store.rv(), 105);
        assert_eq!(store.oldest_resumable(), 102, "only the last 3 changes are kept");
        assert_eq!(store.since("pods", 103).len(), 2);
        let deleted = store.delete("pods", "ns/p0").expect("deleted");
        assert_eq!(deleted["metadata"]["resourceVersion"], "106");
        assert!(store.get("pods", "ns/p0").is_none());
    }
}
