//! The lab's inventory in Kubernetes' own JSON: what
//! `kubectl get pods,services,endpointslices,namespaces,nodes -A -o json` prints (a `List`).

use serde_json::{json, Value};

use super::{
    cgroups::{hex_id, pod_uid},
    spec::{LabSpec, PodRole, PodSpec},
};

/// Container ids of a pod (main container, then istio-proxy when injected), stable per lab.
pub fn container_ids(lab: &str, pod: &PodSpec) -> Vec<(String, String)> {
    let mut names = vec![pod.main_container().to_string()];
    if pod.sidecar {
        names.push("istio-proxy".to_string());
    }
    names
        .into_iter()
        .map(|c| {
            let id = hex_id(&format!("{lab}/{}/{c}", pod.key()), 64);
            (c, id)
        })
        .collect()
}

pub fn inventory(lab: &str, spec: &LabSpec) -> Value {
    let mut items = Vec::new();
    let mut namespaces: Vec<&str> = spec.pods.iter().map(|p| p.namespace.as_str()).collect();
    namespaces.extend(spec.services.iter().map(|s| s.namespace.as_str()));
    namespaces.sort_unstable();
    namespaces.dedup();
    for ns in namespaces {
        let injected = spec.pods.iter().any(|p| p.namespace == ns && p.sidecar);
        let ambient = spec.pods.iter().any(|p| p.namespace == ns && p.ambient);
        let labels = if injected {
            json!({"kubernetes.io/metadata.name": ns, "istio-injection": "enabled"})
        } else if ambient {
            json!({"kubernetes.io/metadata.name": ns, "istio.io/dataplane-mode": "ambient"})
        } else {
            json!({"kubernetes.io/metadata.name": ns})
        };
        items.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}}));
    }
    for node in &spec.nodes {
        items.push(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node.name, "labels": {"kubernetes.io/hostname": node.name}},
            "spec": {"podCIDR": node.pod_cidr_string(), "podCIDRs": node_cidrs(node)},
            "status": {"addresses": [{"type": "InternalIP", "address": node.uplink_ip.to_string()}, {"type": "Hostname", "address": node.name}]}
        }));
    }
    for pod in &spec.pods {
        items.push(pod_json(lab, spec, pod));
    }
    for svc in &spec.services {
        let ports: Vec<Value> = svc
            .ports
            .iter()
            .map(|p| json!({"name": p.name, "port": p.port, "protocol": "TCP", "targetPort": p.target_port}))
            .collect();
        let mut labels = json!({"app": svc.selector_app});
        if LabSpec::is_apiserver(svc) {
            labels = json!({"component": "apiserver", "provider": "kubernetes"});
        }
        items.push(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": svc.name, "namespace": svc.namespace, "labels": labels},
            "spec": {"type": "ClusterIP", "clusterIP": svc.cluster_ip.to_string(), "clusterIPs": [svc.cluster_ip.to_string()],
                     "ipFamilies": ["IPv4"], "ports": ports, "selector": {"app": svc.selector_app}}
        }));
        let endpoints: Vec<Value> = match (&spec.control_plane, LabSpec::is_apiserver(svc)) {
            // A managed API server: an address outside every node, no pod, no node.
            (Some(cp), true) => vec![json!({
                "addresses": [cp.address.to_string()], "conditions": {"ready": true, "serving": true, "terminating": false}
            })],
            _ => spec
                .pods
                .iter()
                .filter(|p| p.app == svc.selector_app)
                .map(|p| json!({
                    "addresses": [p.ip.to_string()], "conditions": {"ready": true, "serving": true, "terminating": false},
                    "nodeName": p.node, "targetRef": {"kind": "Pod", "name": p.name, "namespace": p.namespace, "uid": pod_uid(lab, p)}
                }))
                .collect(),
        };
        let ep_ports: Vec<Value> =
            svc.ports.iter().map(|p| json!({"name": p.name, "port": p.target_port, "protocol": "TCP"})).collect();
        items.push(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": format!("{}-{}", svc.name, &hex_id(&svc.name, 5)), "namespace": svc.namespace,
                         "labels": {"kubernetes.io/service-name": svc.name, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
            "endpoints": endpoints, "ports": ep_ports
        }));
    }
    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items})
}

fn node_cidrs(node: &super::spec::NodeSpec) -> Vec<String> {
    let mut cidrs = vec![node.pod_cidr_string()];
    cidrs.extend(node.pod_cidr6.map(|(net, len)| format!("{net}/{len}")));
    cidrs
}

/// One pod as the API serves it (e.g. to create it through the test API server).
pub fn pod_json(lab: &str, spec: &LabSpec, pod: &PodSpec) -> Value {
    let node = spec.node(&pod.node);
    let host_ip = node.map(|n| n.uplink_ip.to_string()).unwrap_or_default();
    let ids = container_ids(lab, pod);
    let mut containers = vec![json!({
        "name": pod.main_container(),
        "image": match pod.role { PodRole::Istiod => "docker.io/istio/pilot:1.24.0", PodRole::ApiServer => "registry.k8s.io/kube-apiserver:v1.31.0", PodRole::App => "docker.io/istio/examples-bookinfo:1.20.2" },
        "ports": pod.ports.iter().enumerate().map(|(i, p)| if i == 0 {
            json!({"containerPort": p, "name": "http", "protocol": "TCP"})
        } else {
            json!({"containerPort": p, "protocol": "TCP"})
        }).collect::<Vec<_>>()
    })];
    // Apps are probed for readiness on their first (named) port, as Deployments usually are.
    if pod.role == PodRole::App && !pod.ports.is_empty() {
        containers[0]["readinessProbe"] = json!({"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 10});
    }
    let mut annotations = json!({});
    let mut labels = json!({"app": pod.app});
    if pod.sidecar {
        containers.push(json!({"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.0",
            "ports": [{"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}],
            "securityContext": {"runAsUser": 1337, "runAsGroup": 1337}}));
        annotations = json!({"sidecar.istio.io/status": "{\"initContainers\":[\"istio-init\"],\"containers\":[\"istio-proxy\"],\"volumes\":[\"istio-envoy\",\"istio-data\",\"istio-podinfo\",\"istio-token\",\"istiod-ca-cert\"],\"revision\":\"default\"}"});
        labels =
            json!({"app": pod.app, "security.istio.io/tlsMode": "istio", "service.istio.io/canonical-name": pod.app});
    }
    if pod.role == PodRole::Istiod {
        labels = json!({"app": "istiod", "istio": "pilot", "istio.io/rev": "default"});
    }
    if pod.role == PodRole::ApiServer {
        labels = json!({"component": "kube-apiserver", "tier": "control-plane", "app": pod.app});
    }
    let owner = match pod.role {
        PodRole::ApiServer => json!([{"apiVersion": "v1", "kind": "Node", "name": pod.node, "controller": true}]),
        _ => {
            json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": pod.name.rsplit_once('-').map_or(pod.name.as_str(), |(rs, _)| rs), "controller": true}])
        }
    };
    let mut pod_ips = vec![json!({"ip": pod.ip.to_string()})];
    pod_ips.extend(pod.ip6.map(|ip6| json!({"ip": ip6.to_string()})));
    let statuses: Vec<Value> = ids
        .iter()
        .map(|(name, id)| json!({"name": name, "containerID": format!("containerd://{id}"), "ready": true, "started": true}))
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod_uid(lab, pod), "labels": labels,
                     "annotations": annotations, "ownerReferences": owner},
        "spec": {"nodeName": pod.node, "containers": containers},
        "status": {"phase": "Running", "hostIP": host_ip, "podIP": pod.ip.to_string(), "podIPs": pod_ips,
                   "qosClass": "BestEffort", "containerStatuses": statuses}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inventory_is_a_kubernetes_list_with_every_kind() {
        let spec = LabSpec::bookinfo();
        let inv = inventory("obl00000", &spec);
        assert_eq!(inv["kind"], "List");
        let items = inv["items"].as_array().expect("items");
        let count = |kind: &str| items.iter().filter(|i| i["kind"] == kind).count();
        assert_eq!(count("Pod"), spec.pods.len());
        assert_eq!(count("Service"), spec.services.len());
        assert_eq!(count("EndpointSlice"), spec.services.len());
        assert_eq!(count("Node"), 2);
        let pp =
            items.iter().find(|i| i["kind"] == "Pod" && i["metadata"]["labels"]["app"] == "productpage").expect("pod");
        assert_eq!(pp["status"]["podIP"], "10.244.1.10");
        assert_eq!(pp["spec"]["containers"][1]["name"], "istio-proxy");
        assert!(pp["metadata"]["annotations"]["sidecar.istio.io/status"].is_string());
        let istiod = items.iter().find(|i| i["kind"] == "Service" && i["metadata"]["name"] == "istiod").expect("svc");
        assert_eq!(istiod["spec"]["ports"][2]["targetPort"], 15017);
    }

    #[test]
    fn a_managed_control_plane_is_the_kubernetes_endpoint_and_no_pod() {
        let spec = LabSpec::bookinfo().with_control_plane();
        let inv = inventory("obl00000", &spec);
        let items = inv["items"].as_array().expect("items");
        assert!(!items.iter().any(|i| i["kind"] == "Pod" && i["metadata"]["labels"]["component"] == "kube-apiserver"));
        let slice = items
            .iter()
            .find(|i| {
                i["kind"] == "EndpointSlice" && i["metadata"]["labels"]["kubernetes.io/service-name"] == "kubernetes"
            })
            .expect("kubernetes slice");
        assert_eq!(
            slice["endpoints"],
            json!([{"addresses": ["172.31.250.10"], "conditions": {"ready": true, "serving": true, "terminating": false}}])
        );
        assert_eq!(slice["ports"][0]["port"], 6443);
        // The other services keep their pods.
        let istiod = items
            .iter()
            .find(|i| i["kind"] == "EndpointSlice" && i["metadata"]["labels"]["kubernetes.io/service-name"] == "istiod")
            .expect("istiod slice");
        assert_eq!(istiod["endpoints"][0]["addresses"], json!(["10.244.2.10"]));
    }
}
