//! The inventory fed by the Kubernetes API: one watcher + reflector per kind (Pods trimmed,
//! Services, EndpointSlices, Namespaces, Nodes). Watch errors back off and retry; a `410 Gone`
//! (the resourceVersion left the server's history) makes the watcher list again (kube-runtime).
//! The inventory is rebuilt from the reflectors' stores (debounced) and swapped live through a
//! `watch` channel; until every kind has completed its first list nothing is published.
//! Through an API outage the stores, and so the last good inventory, are kept; the outage shows
//! as [`FeedHealth::age`].

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{stream::BoxStream, StreamExt as _};
use k8s_openapi::{
    api::{
        core::v1::{Container, Namespace, Node, Pod, PodSpec, PodStatus, Service},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    api::ListParams,
    runtime::{
        reflector::{self, Store},
        watcher, WatchStreamExt as _,
    },
    Api, Client, Resource,
};
use observer::inventory::{from_objects::Objects, Inventory};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::{info, warn};

/// Rebuilds are at most this often (a burst of pod changes makes one rebuild).
const DEBOUNCE: Duration = Duration::from_millis(250);
/// While a watch is failing, the API is probed this often (a one-item list) to tell when it is
/// back even if nothing changed since.
const PROBE_EVERY: Duration = Duration::from_secs(5);

/// The kinds watched, as labelled in metrics.
pub const KINDS: [&str; 5] = ["pods", "services", "endpointslices", "namespaces", "nodes"];

/// Per-kind state of the watches, shared with the metrics and `/readyz`.
#[derive(Debug, Default)]
pub struct FeedHealth {
    inner: Mutex<HealthInner>,
}

#[derive(Debug, Default)]
struct HealthInner {
    kinds: BTreeMap<&'static str, KindHealth>,
    /// Every kind has completed its first list (the inventory was published once).
    synced: bool,
    /// Objects in the last built inventory, by kind.
    objects: BTreeMap<&'static str, usize>,
    build_errors: u64,
}

/// One kind's watch.
#[derive(Debug, Default, Clone)]
pub struct KindHealth {
    /// The first list has completed.
    pub listed: bool,
    /// Completed lists (the first one and every relist after an error or 410 Gone).
    pub lists: u64,
    /// Watch or list errors (each one is retried with backoff).
    pub errors: u64,
    /// Failing since (None: the watch is up).
    pub down_since: Option<Instant>,
}

impl FeedHealth {
    /// Whether every kind has completed its first list and the inventory was published.
    pub fn synced(&self) -> bool {
        self.lock().synced
    }

    /// Seconds since the inventory was last known to be current: 0 while every watch is up,
    /// else the time since the first of the failing watches failed (the last good inventory is
    /// still used meanwhile).
    pub fn age(&self) -> f64 {
        let inner = self.lock();
        inner.kinds.values().filter_map(|k| k.down_since).min().map_or(0.0, |since| since.elapsed().as_secs_f64())
    }

    /// A copy of every kind's state.
    pub fn kinds(&self) -> BTreeMap<&'static str, KindHealth> {
        self.lock().kinds.clone()
    }

    /// Objects in the last built inventory, by kind.
    pub fn objects(&self) -> BTreeMap<&'static str, usize> {
        self.lock().objects.clone()
    }

    /// Inventory rebuilds that failed (the previous inventory stayed in use).
    pub fn build_errors(&self) -> u64 {
        self.lock().build_errors
    }

    /// A feed that is synced at once: a static inventory from a file.
    pub fn static_file() -> Self {
        let health = Self::default();
        health.lock().synced = true;
        health
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthInner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn up(&self, kind: &'static str, list_done: bool) {
        let mut inner = self.lock();
        let k = inner.kinds.entry(kind).or_default();
        if k.down_since.take().is_some() {
            info!(kind, "inventory: watch is back");
        }
        if list_done {
            k.listed = true;
            k.lists += 1;
        }
    }

    fn down(&self, kind: &'static str) {
        let mut inner = self.lock();
        let k = inner.kinds.entry(kind).or_default();
        k.errors += 1;
        k.down_since.get_or_insert_with(Instant::now);
    }

    fn all_listed(&self) -> bool {
        let inner = self.lock();
        KINDS.iter().all(|kind| inner.kinds.get(kind).is_some_and(|k| k.listed))
    }
}

/// The reflectors' stores.
#[derive(Clone)]
struct Stores {
    pods: Store<Pod>,
    services: Store<Service>,
    endpoint_slices: Store<EndpointSlice>,
    namespaces: Store<Namespace>,
    nodes: Store<Node>,
}

impl Stores {
    fn objects(&self) -> Objects {
        fn owned<K>(store: &Store<K>) -> Vec<K>
        where
            K: kube::Resource + Clone + 'static,
            K::DynamicType: std::hash::Hash + Eq + Clone,
        {
            store.state().iter().map(|k| K::clone(k)).collect()
        }
        Objects {
            pods: owned(&self.pods),
            services: owned(&self.services),
            endpoint_slices: owned(&self.endpoint_slices),
            namespaces: owned(&self.namespaces),
            nodes: owned(&self.nodes),
        }
    }
}

/// What one watch reported: up (and whether a list completed), or an error.
type Report = (&'static str, Result<bool, String>);

fn watch_kind<K>(kind: &'static str, api: Api<K>, trim: fn(&mut K)) -> (Store<K>, BoxStream<'static, Report>)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(trim)
        .reflect(writer)
        .map(move |event| match event {
            Ok(watcher::Event::InitDone) => (kind, Ok(true)),
            Ok(_) => (kind, Ok(false)),
            Err(err) => (kind, Err(err.to_string())),
        })
        .boxed();
    (reader, stream)
}

/// Runs the feed until the process ends: publishes every rebuilt inventory on `tx` and keeps
/// `health` current.
pub async fn run(client: Client, health: Arc<FeedHealth>, tx: watch::Sender<Arc<Inventory>>) {
    let (pods, pod_stream) = watch_kind("pods", Api::<Pod>::all(client.clone()), trim_pod);
    let (services, svc_stream) = watch_kind("services", Api::<Service>::all(client.clone()), trim_meta);
    let (endpoint_slices, eps_stream) =
        watch_kind("endpointslices", Api::<EndpointSlice>::all(client.clone()), trim_meta);
    let (namespaces, ns_stream) = watch_kind("namespaces", Api::<Namespace>::all(client.clone()), trim_meta);
    let (nodes, node_stream) = watch_kind("nodes", Api::<Node>::all(client.clone()), trim_node);
    let stores = Stores { pods, services, endpoint_slices, namespaces, nodes };
    let mut reports = futures::stream::select_all([pod_stream, svc_stream, eps_stream, ns_stream, node_stream]);
    let mut tick = tokio::time::interval(DEBOUNCE);
    let mut probe = tokio::time::interval(PROBE_EVERY);
    let (mut dirty, mut last_build) = (false, Instant::now() - DEBOUNCE);
    loop {
        tokio::select! {
            report = reports.next() => {
                let Some((kind, outcome)) = report else { break };
                match outcome {
                    Ok(list_done) => {
                        health.up(kind, list_done);
                        dirty = true;
                    }
                    Err(err) => {
                        warn!(kind, error = %err, "inventory: watch failed; keeping the last inventory, retrying with backoff");
                        health.down(kind);
                    }
                }
            }
            _ = tick.tick() => {}
            _ = probe.tick() => probe_failing(&client, &health).await,
        }
        if dirty && last_build.elapsed() >= DEBOUNCE && health.all_listed() {
            dirty = false;
            last_build = Instant::now();
            publish(&stores, &health, &tx);
        }
    }
}

fn publish(stores: &Stores, health: &FeedHealth, tx: &watch::Sender<Arc<Inventory>>) {
    let objects = stores.objects();
    match Inventory::from_objects(&objects) {
        Ok(inventory) => {
            let first = !health.synced();
            {
                let mut inner = health.lock();
                inner.objects = BTreeMap::from([
                    ("pods", objects.pods.len()),
                    ("services", objects.services.len()),
                    ("endpointslices", objects.endpoint_slices.len()),
                    ("namespaces", objects.namespaces.len()),
                    ("nodes", objects.nodes.len()),
                ]);
                inner.synced = true;
            }
            if first {
                info!(
                    pods = inventory.pods.len(),
                    services = inventory.services.len(),
                    "inventory: synced from the Kubernetes API"
                );
            }
            tx.send_replace(Arc::new(inventory));
        }
        Err(err) => {
            health.lock().build_errors += 1;
            warn!(error = %err, "inventory: cannot build from the API's objects; keeping the previous one");
        }
    }
}

/// A watch that failed and has nothing to report since may simply have resumed with no change:
/// a one-item list tells whether the API answers again.
async fn probe_failing(client: &Client, health: &FeedHealth) {
    let failing: Vec<&'static str> =
        health.kinds().into_iter().filter(|(_, k)| k.down_since.is_some()).map(|(kind, _)| kind).collect();
    for kind in failing {
        let params = ListParams::default().limit(1);
        let answered = match kind {
            "pods" => Api::<Pod>::all(client.clone()).list_metadata(&params).await.is_ok(),
            "services" => Api::<Service>::all(client.clone()).list_metadata(&params).await.is_ok(),
            "endpointslices" => Api::<EndpointSlice>::all(client.clone()).list_metadata(&params).await.is_ok(),
            "namespaces" => Api::<Namespace>::all(client.clone()).list_metadata(&params).await.is_ok(),
            _ => Api::<Node>::all(client.clone()).list_metadata(&params).await.is_ok(),
        };
        if answered {
            health.up(kind, false);
        }
    }
}

/// Keeps what the inventory reads of any object's metadata.
fn trim_metadata(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|k, _| k.contains("istio.io"));
    }
}

fn trim_meta<K: Resource>(object: &mut K) {
    trim_metadata(object.meta_mut());
}

/// Nodes: only their pod CIDRs are read.
fn trim_node(node: &mut Node) {
    trim_metadata(&mut node.metadata);
    node.status = None;
    node.metadata.labels = None;
    if let Some(spec) = node.spec.as_mut() {
        spec.taints = None;
    }
}

/// Pods trimmed to what the inventory reads: identity, owner, labels, Istio annotations, node,
/// host network, container names, IPs.
fn trim_pod(pod: &mut Pod) {
    trim_metadata(&mut pod.metadata);
    let names =
        |cs: &[Container]| cs.iter().map(|c| Container { name: c.name.clone(), ..Container::default() }).collect();
    pod.spec = pod.spec.take().map(|spec| PodSpec {
        containers: names(&spec.containers),
        init_containers: spec.init_containers.as_deref().map(names),
        node_name: spec.node_name,
        host_network: spec.host_network,
        ..PodSpec::default()
    });
    pod.status = pod.status.take().map(|status| PodStatus {
        pod_ip: status.pod_ip,
        pod_ips: status.pod_ips,
        phase: status.phase,
        ..PodStatus::default()
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::serde_json::{self, json};

    #[test]
    fn trimmed_pods_keep_what_the_inventory_reads() {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "cart-1", "namespace": "shop", "uid": "u2",
                         "annotations": {"sidecar.istio.io/status": "{}", "kubectl.kubernetes.io/last-applied-configuration": "{...}"},
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {"nodeName": "node-a", "containers": [{"name": "cart", "image": "cart:1", "env": [{"name": "A", "value": "b"}]},
                                                          {"name": "istio-proxy", "image": "proxyv2"}]},
            "status": {"podIPs": [{"ip": "10.244.1.9"}], "conditions": [{"type": "Ready", "status": "True"}], "phase": "Succeeded"}
        }))
        .expect("pod");
        trim_pod(&mut pod);
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(spec.containers.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["cart", "istio-proxy"]);
        assert!(spec.containers.iter().all(|c| c.image.is_none() && c.env.is_none()));
        assert_eq!(spec.node_name.as_deref(), Some("node-a"));
        let annotations = pod.metadata.annotations.as_ref().expect("annotations");
        assert!(annotations.contains_key("sidecar.istio.io/status") && annotations.len() == 1);
        assert!(pod.metadata.managed_fields.is_none());
        assert!(pod.status.as_ref().expect("status").conditions.is_none());
        let inv = Inventory::from_objects(&Objects { pods: vec![pod], ..Objects::default() }).expect("inventory");
        assert_eq!(inv.pods[0].mesh, observer::inventory::MeshMode::Sidecar);
        // The phase is kept: a finished pod's reused address must not name it.
        assert!(inv.pods[0].finished && inv.pod_by_ip("10.244.1.9".parse().expect("ip")).is_none());
    }

    #[test]
    fn age_is_zero_while_up_and_grows_while_a_watch_fails() {
        let health = FeedHealth::default();
        for kind in KINDS {
            health.up(kind, true);
        }
        assert!(health.all_listed());
        assert_eq!(health.age(), 0.0);
        health.down("pods");
        std::thread::sleep(Duration::from_millis(20));
        assert!(health.age() >= 0.02, "{}", health.age());
        health.up("pods", true);
        assert_eq!(health.age(), 0.0);
        assert_eq!(health.kinds()["pods"].lists, 2);
        assert_eq!(health.kinds()["pods"].errors, 1);
    }
}
