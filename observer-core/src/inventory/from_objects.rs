//! Building the [`Inventory`] from typed Kubernetes objects (k8s-openapi), as a client of the
//! API (the node agent's reflectors) holds them.
//!
//! The file path (`Inventory::from_json`) and this one meet in one builder (`parse::collect`):
//! each typed object is serialized to the same JSON the API server sends (k8s-openapi writes its
//! `apiVersion` and `kind`), so a pod read from a file and one read from the API are understood
//! by the same code, with the same errors. The file path does not go through typed objects: that
//! would trade its item-and-field error messages for serde's.

use k8s_openapi::{
    api::{
        core::v1::{Namespace, Node, Pod, Service},
        discovery::v1::EndpointSlice,
    },
    serde_json::Value,
};

use super::{parse, Inventory, InventoryError};

/// The objects the inventory is built from, as a Kubernetes client lists and watches them.
/// Pods may be trimmed to what the inventory reads (metadata: name, namespace, uid, labels,
/// annotations, ownerReferences; spec: nodeName, hostNetwork, container and init container
/// names; status: podIP, podIPs, phase).
#[derive(Debug, Default, Clone)]
pub struct Objects {
    pub pods: Vec<Pod>,
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub namespaces: Vec<Namespace>,
    pub nodes: Vec<Node>,
}

impl Inventory {
    /// Builds the inventory from typed objects. Errors name the object and field that cannot be
    /// understood (e.g. a pod IP that is not an address), as for a file.
    pub fn from_objects(objects: &Objects) -> Result<Self, InventoryError> {
        let mut items: Vec<Value> = Vec::with_capacity(
            objects.pods.len()
                + objects.services.len()
                + objects.endpoint_slices.len()
                + objects.namespaces.len()
                + objects.nodes.len(),
        );
        // Namespaces first (their labels decide pods' mesh mode), as in any List.
        push_all(&mut items, &objects.namespaces)?;
        push_all(&mut items, &objects.nodes)?;
        push_all(&mut items, &objects.services)?;
        push_all(&mut items, &objects.endpoint_slices)?;
        push_all(&mut items, &objects.pods)?;
        parse::collect(items.iter().collect(), None)
    }
}

fn push_all<T: serde::Serialize>(items: &mut Vec<Value>, objects: &[T]) -> Result<(), InventoryError> {
    for object in objects {
        let value = k8s_openapi::serde_json::to_value(object)
            .map_err(|source| InventoryError::Json { context: "typed object: ".to_string(), source })?;
        items.push(value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use k8s_openapi::serde_json::{self, json};

    use super::*;
    use crate::inventory::{MeshMode, Role};

    fn typed<T: serde::de::DeserializeOwned>(v: Value) -> T {
        serde_json::from_value(v).expect("a valid object")
    }

    fn objects() -> Objects {
        Objects {
            namespaces: vec![typed(json!({"metadata": {"name": "shop", "labels": {"istio-injection": "enabled"}}}))],
            nodes: vec![typed(json!({"metadata": {"name": "node-a"}, "spec": {"podCIDRs": ["10.244.1.0/24"]}}))],
            services: vec![typed(json!({
                "metadata": {"name": "istiod", "namespace": "istio-system"},
                "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "grpc-xds", "port": 15012, "targetPort": 15012}]}
            }))],
            endpoint_slices: vec![typed(json!({
                "metadata": {"name": "istiod-abc", "namespace": "istio-system",
                             "labels": {"kubernetes.io/service-name": "istiod"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.244.1.5"]}]
            }))],
            pods: vec![
                typed(json!({
                    "metadata": {"name": "istiod-7d-x", "namespace": "istio-system", "uid": "u1",
                                 "labels": {"app": "istiod"},
                                 "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "istiod-7d",
                                                      "uid": "r1", "controller": true}]},
                    "spec": {"nodeName": "node-a", "containers": [{"name": "discovery"}]},
                    "status": {"podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}]}
                })),
                typed(json!({
                    "metadata": {"name": "cart-1", "namespace": "shop", "uid": "u2"},
                    "spec": {"nodeName": "node-a", "containers": [{"name": "cart"}, {"name": "istio-proxy"}]},
                    "status": {"podIPs": [{"ip": "10.244.1.9"}]}
                })),
            ],
        }
    }

    #[test]
    fn typed_objects_name_pods_services_and_istio_ports_like_a_file() {
        let inv = Inventory::from_objects(&objects()).expect("inventory");
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let cart = inv.pod_by_ip(ip("10.244.1.9")).expect("cart pod");
        assert_eq!(cart.key(), "shop/cart-1");
        assert_eq!(cart.mesh, MeshMode::Sidecar);
        let istiod = inv.describe(ip("10.96.0.10"), Some(15012));
        assert_eq!(istiod.service.as_deref(), Some("istio-system/istiod"));
        assert_eq!(istiod.role, Some(Role::Istiod));
        assert_eq!(istiod.workload.as_deref(), Some("istiod"), "the ReplicaSet minus its hash");
        assert_eq!(istiod.istio_port, Some("xds-tls"));
        assert_eq!(inv.pod_cidrs.len(), 1);
    }

    #[test]
    fn the_same_objects_from_a_file_give_the_same_inventory() {
        let objects = objects();
        let mut items = Vec::new();
        push_all(&mut items, &objects.namespaces).expect("ns");
        push_all(&mut items, &objects.nodes).expect("nodes");
        push_all(&mut items, &objects.services).expect("svc");
        push_all(&mut items, &objects.endpoint_slices).expect("eps");
        push_all(&mut items, &objects.pods).expect("pods");
        let file = json!({"kind": "List", "apiVersion": "v1", "items": items}).to_string();
        let from_file = Inventory::from_json(&file).expect("file");
        let from_api = Inventory::from_objects(&objects).expect("api");
        assert_eq!(from_file.pods, from_api.pods);
        assert_eq!(from_file.services, from_api.services);
    }

    #[test]
    fn a_bad_pod_ip_is_named() {
        let mut objects = objects();
        objects.pods[1].status.as_mut().expect("status").pod_ips = Some(vec![typed(json!({"ip": "not-an-ip"}))]);
        let err = Inventory::from_objects(&objects).expect_err("bad ip").to_string();
        assert!(err.contains("shop/cart-1") && err.contains("not-an-ip"), "{err}");
    }
}
