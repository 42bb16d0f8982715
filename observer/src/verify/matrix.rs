//! The flows Istio needs through this node (ISTIO.md), derived from the inventory: proxies and
//! ztunnel -> istiod xDS, the API server -> istiod's webhook, istiod -> the API server, kubelet
//! -> health ports, scrapes, ambient HBONE between pods, ambient probes from 169.254.7.127,
//! and mesh workloads -> the endpoints of the mesh's services. Only flows with an end on this
//! node are this node's business.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr},
};

use serde::Serialize;

use crate::{
    diagnosis::Requirement,
    inventory::{
        istio_ports::{port_name, Component},
        Endpoint, Inventory, MeshMode, Pod, Role,
    },
};

/// Where a flow starts, as far as this node is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// A pod (on this node or elsewhere).
    Pod,
    /// This node itself (kubelet, a scraper on the host, the ambient probe SNAT).
    Node,
    /// An address outside the pod network (e.g. a host-network API server).
    External,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Source {
    pub ip: IpAddr,
    pub kind: SourceKind,
    /// Who it is (pod, workload, and the node the pod runs on), as findings name their ends.
    #[serde(flatten)]
    pub endpoint: Endpoint,
}

impl std::ops::Deref for Source {
    type Target = Endpoint;
    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Destination {
    pub ip: IpAddr,
    pub port: u16,
    /// Who it is (pod, service, Istio's port name, the pod's node), as findings name their ends.
    #[serde(flatten)]
    pub endpoint: Endpoint,
}

impl std::ops::Deref for Destination {
    type Target = Endpoint;
    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

/// One flow the mesh needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RequiredFlow {
    pub requirement: Requirement,
    /// What the flow is for (`xDS`, `webhook`, ...).
    pub purpose: &'static str,
    pub src: Source,
    pub dst: Destination,
    /// The client reaches the destination through its Service address (kube-proxy's DNAT on
    /// the client's node), not the endpoint itself: the control plane's flows (a proxy's xDS,
    /// the webhook, istiod's API server calls). Mesh proxies connect to endpoints directly;
    /// probes and scrapes target pod addresses.
    #[serde(skip)]
    pub via_service: bool,
}

/// Where kubelet's probes of ambient pods come from (SNAT by istio-cni).
pub const AMBIENT_PROBE_SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(169, 254, 7, 127));

/// Every required flow with an end on `node`; `node_ips` are the node's own addresses, one
/// per family, used as the source of node-originated flows. Pods are on the node by their
/// `spec.nodeName` only; see [`required_flows_on`] for pods found behind the node.
pub fn required_flows(inv: &Inventory, node: &str, node_ips: &[IpAddr]) -> Vec<RequiredFlow> {
    required_flows_on(inv, node, node_ips, &BTreeSet::new())
}

/// [`required_flows`], where a pod is also on this node when one of its addresses is in
/// `local_pod_ips`: the addresses found in the pod namespaces behind the node's veths, however
/// they hang off it (a bridge, routed `cali*` veths with /32 routes, ...). The node's own view
/// wins over an inventory whose `spec.nodeName` differs from the name given to the observer.
pub fn required_flows_on(
    inv: &Inventory,
    node: &str,
    node_ips: &[IpAddr],
    local_pod_ips: &BTreeSet<IpAddr>,
) -> Vec<RequiredFlow> {
    let here = Here { node, local_pod_ips };
    let on_node = |p: &Pod| here.node_of(p).as_deref() == Some(node) && !p.host_network;
    // Finished pods (Succeeded/Failed) run no proxy and their addresses may be others' now.
    let pods: Vec<&Pod> = inv.pods.iter().filter(|p| !p.host_network && !p.finished && !p.ips.is_empty()).collect();
    let istiods: Vec<&Pod> = pods.iter().copied().filter(|p| p.role == Role::Istiod).collect();
    let istiod_service = |ip: IpAddr| inv.services_of_endpoint(ip).next().map(|s| s.key());
    let mut out = Vec::new();
    let mut add = |requirement, purpose, src: Source, dst: Destination| {
        let relevant =
            src.kind == SourceKind::Node || src.node.as_deref() == Some(node) || dst.node.as_deref() == Some(node);
        if relevant && src.ip.is_ipv4() == dst.ip.is_ipv4() && src.ip != dst.ip {
            let control_plane = matches!(dst.port, 15012 | 15017) && dst.service.is_some();
            let via_service = requirement == Requirement::R2 || (requirement == Requirement::R5 && control_plane);
            out.push(RequiredFlow { requirement, purpose, src, dst, via_service });
        }
    };

    // R5: every proxy (sidecar, ztunnel, gateway) fetches its configuration from istiod.
    let xds_clients = pods.iter().filter(|p| {
        matches!(p.role, Role::Ztunnel | Role::Gateway) || (p.role == Role::Workload && p.mesh == MeshMode::Sidecar)
    });
    for client in xds_clients {
        for istiod in &istiods {
            for (s, d) in pairs(client, istiod) {
                add(
                    Requirement::R5,
                    "xDS and certificates (proxy -> istiod)",
                    here.pod_source(client, s),
                    here.pod_dest(istiod, d, 15012, istiod_service(d), Component::Istiod),
                );
            }
        }
    }

    // R5: the API server calls istiod's webhook; R2: istiod reaches the API server.
    let apiserver = inv.services.iter().find(|s| s.is_apiserver());
    for endpoint in apiserver.map(|s| s.endpoints.clone()).unwrap_or_default() {
        let api_pod = inv.pod_by_ip(endpoint);
        let api_port = apiserver.and_then(|s| s.ports.first()).map_or(443, |p| p.target_port.unwrap_or(p.port));
        let api_source = match api_pod {
            Some(p) => here.pod_source(p, endpoint),
            None if node_ips.contains(&endpoint) => node_source(node, endpoint),
            None => Source { ip: endpoint, kind: SourceKind::External, endpoint: Endpoint::default() },
        };
        for istiod in &istiods {
            for &ip in istiod.ips.iter().filter(|ip| ip.is_ipv4() == endpoint.is_ipv4()) {
                add(
                    Requirement::R5,
                    "admission webhook (API server -> istiod)",
                    api_source.clone(),
                    here.pod_dest(istiod, ip, 15017, istiod_service(ip), Component::Istiod),
                );
                add(
                    Requirement::R2,
                    "istiod -> API server",
                    here.pod_source(istiod, ip),
                    Destination {
                        ip: endpoint,
                        port: api_port,
                        endpoint: Endpoint {
                            pod: api_pod.map(Pod::key),
                            service: apiserver.map(|s| s.key()),
                            node: api_pod.and_then(|p| here.node_of(p)),
                            ..Endpoint::default()
                        },
                    },
                );
            }
        }
    }

    // R5: kubelet's probes and metric scrapes of this node's mesh pods.
    let scrapers: Vec<&Pod> = pods.iter().copied().filter(|p| p.workload.contains("prometheus")).collect();
    for pod in pods.iter().copied().filter(|p| on_node(p) && p.role == Role::Workload) {
        for &ip in &pod.ips {
            let node_ip = node_ips.iter().copied().find(|n| n.is_ipv4() == ip.is_ipv4());
            match pod.mesh {
                MeshMode::Sidecar => {
                    if let Some(node_ip) = node_ip {
                        add(
                            Requirement::R5,
                            "kubelet health probe",
                            node_source(node, node_ip),
                            here.pod_dest(pod, ip, 15021, None, Component::Sidecar),
                        );
                    }
                    for port in [15020, 15090] {
                        if scrapers.is_empty() {
                            if let Some(node_ip) = node_ip {
                                add(
                                    Requirement::R5,
                                    "metrics scrape",
                                    node_source(node, node_ip),
                                    here.pod_dest(pod, ip, port, None, Component::Sidecar),
                                );
                            }
                        }
                        for scraper in &scrapers {
                            for (s, d) in pairs(scraper, pod).filter(|(_, d)| *d == ip) {
                                add(
                                    Requirement::R5,
                                    "metrics scrape",
                                    here.pod_source(scraper, s),
                                    here.pod_dest(pod, d, port, None, Component::Sidecar),
                                );
                            }
                        }
                    }
                }
                MeshMode::Ambient if ip.is_ipv4() => {
                    for port in probe_ports_of(inv, pod, ip) {
                        add(
                            Requirement::R5,
                            "kubelet probe of an ambient pod (from 169.254.7.127)",
                            node_source(node, AMBIENT_PROBE_SOURCE),
                            here.pod_dest(pod, ip, port, None, Component::Ztunnel),
                        );
                    }
                }
                _ => {}
            }
        }
    }

    // R5: HBONE between ambient pods (in-pod redirection: ztunnel terminates 15008 at pod IPs).
    let ambient: Vec<&Pod> =
        pods.iter().copied().filter(|p| p.mesh == MeshMode::Ambient && p.role == Role::Workload).collect();
    for a in &ambient {
        for b in &ambient {
            if a.key() != b.key() {
                for (s, d) in pairs(a, b) {
                    add(
                        Requirement::R5,
                        "HBONE (ambient pod -> ambient pod)",
                        here.pod_source(a, s),
                        here.pod_dest(b, d, 15008, None, Component::Ztunnel),
                    );
                }
            }
        }
    }

    // R3: mesh workloads reach the endpoints of the mesh's services on their ports.
    let workloads: Vec<&Pod> =
        pods.iter().copied().filter(|p| p.role == Role::Workload && p.mesh != MeshMode::None).collect();
    for service in inv.services.iter().filter(|s| !s.is_apiserver()) {
        for &endpoint in &service.endpoints {
            let Some(dst_pod) =
                inv.pod_by_ip(endpoint).filter(|p| p.role == Role::Workload && p.mesh != MeshMode::None)
            else {
                continue;
            };
            for port in service.ports.iter().filter_map(|p| p.target_port) {
                for src in workloads.iter().filter(|w| w.key() != dst_pod.key()) {
                    for &s in src.ips.iter().filter(|s| s.is_ipv4() == endpoint.is_ipv4()) {
                        let mut dst = here.pod_dest(dst_pod, endpoint, port, Some(service.key()), Component::Sidecar);
                        dst.endpoint.istio_port = None;
                        add(Requirement::R3, "mesh workload -> service endpoint", here.pod_source(src, s), dst);
                    }
                }
            }
        }
    }
    out.sort_by(|a, b| {
        (a.requirement, a.purpose, a.dst.port, a.src.ip, a.dst.ip).cmp(&(
            b.requirement,
            b.purpose,
            b.dst.port,
            b.src.ip,
            b.dst.ip,
        ))
    });
    out.dedup();
    out
}

/// Address pairs of the same family between two pods.
fn pairs<'a>(a: &'a Pod, b: &'a Pod) -> impl Iterator<Item = (IpAddr, IpAddr)> + 'a {
    a.ips.iter().flat_map(move |s| b.ips.iter().filter(move |d| d.is_ipv4() == s.is_ipv4()).map(move |d| (*s, *d)))
}

/// The node name the inventory gives the pods found behind this node (the most common
/// `spec.nodeName` among them), for when the observer is not told its node's name.
pub fn node_name_of(inv: &Inventory, local_pod_ips: &BTreeSet<IpAddr>) -> Option<String> {
    let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    let live = |p: &&Pod| !p.host_network && !p.finished;
    for pod in inv.pods.iter().filter(live).filter(|p| p.ips.iter().any(|ip| local_pod_ips.contains(ip))) {
        if let Some(node) = pod.node.as_deref() {
            *counts.entry(node).or_default() += 1;
        }
    }
    counts.into_iter().max_by_key(|(_, n)| *n).map(|(node, _)| node.to_string())
}

/// This node: its name and the pod addresses found behind it.
struct Here<'a> {
    node: &'a str,
    local_pod_ips: &'a BTreeSet<IpAddr>,
}

impl Here<'_> {
    /// The node `pod` runs on: this one when its address is behind this node, else its
    /// `spec.nodeName`.
    fn node_of(&self, pod: &Pod) -> Option<String> {
        if !pod.host_network && pod.ips.iter().any(|ip| self.local_pod_ips.contains(ip)) {
            return Some(self.node.to_string());
        }
        pod.node.clone()
    }

    fn pod_source(&self, pod: &Pod, ip: IpAddr) -> Source {
        Source {
            ip,
            kind: SourceKind::Pod,
            endpoint: Endpoint {
                pod: Some(pod.key()),
                workload: Some(pod.workload.clone()),
                node: self.node_of(pod),
                ..Endpoint::default()
            },
        }
    }

    fn pod_dest(&self, pod: &Pod, ip: IpAddr, port: u16, service: Option<String>, component: Component) -> Destination {
        Destination {
            ip,
            port,
            endpoint: Endpoint {
                pod: Some(pod.key()),
                service,
                istio_port: port_name(component, port),
                node: self.node_of(pod),
                ..Endpoint::default()
            },
        }
    }
}

fn node_source(node: &str, ip: IpAddr) -> Source {
    Source { ip, kind: SourceKind::Node, endpoint: Endpoint { node: Some(node.to_string()), ..Endpoint::default() } }
}

/// The ports kubelet probes on `pod`: its spec's probe ports when the inventory has them, else
/// the numeric target ports of the services `ip` backs.
fn probe_ports_of(inv: &Inventory, pod: &Pod, ip: IpAddr) -> Vec<u16> {
    if pod.probe_ports.is_empty() {
        return service_ports_of(inv, ip);
    }
    pod.probe_ports.iter().map(|(port, _)| *port).collect()
}

/// Numeric target ports of the services `ip` backs (an ambient pod's probe ports, as far as
/// the inventory tells without probes in the pod spec).
fn service_ports_of(inv: &Inventory, ip: IpAddr) -> Vec<u16> {
    let mut ports: Vec<u16> =
        inv.services_of_endpoint(ip).flat_map(|s| s.ports.iter().filter_map(|p| p.target_port)).collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAB: &str = include_str!("../../tests/fixtures/lab-inventory.json");

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn pods_found_behind_the_node_are_its_pods_whatever_name_the_observer_was_given() {
        let inv = Inventory::from_json(LAB).expect("inventory");
        let local: BTreeSet<IpAddr> = ["10.244.1.10", "10.244.1.11"].iter().map(|s| ip(s)).collect();
        assert_eq!(node_name_of(&inv, &local).as_deref(), Some("node-a"));
        // By name alone, "worker-7" has no pods; by what hangs off it, it runs productpage and
        // reviews: their xDS flows to istiod are required.
        assert!(required_flows(&inv, "worker-7", &[ip("172.31.1.2")]).is_empty());
        let flows = required_flows_on(&inv, "worker-7", &[ip("172.31.1.2")], &local);
        let xds: Vec<_> = flows.iter().filter(|f| f.dst.port == 15012 && f.src.ip.is_ipv4()).collect();
        assert_eq!(xds.len(), 2, "{xds:#?}");
        assert!(xds.iter().all(|f| f.src.node.as_deref() == Some("worker-7") && f.dst.ip == ip("10.244.2.10")));
        assert!(flows.iter().any(|f| f.dst.port == 15021 && f.dst.ip == ip("10.244.1.10")), "kubelet probes too");
        assert_eq!(node_name_of(&inv, &BTreeSet::new()), None);
    }

    #[test]
    fn a_finished_pod_needs_no_flows() {
        let mut list: serde_json::Value = serde_json::from_str(LAB).expect("lab json");
        let items = list["items"].as_array_mut().expect("items");
        items.push(serde_json::json!({
            "kind": "Pod", "metadata": {"name": "migrate-1", "namespace": "bookinfo", "uid": "j1"},
            "spec": {"nodeName": "node-a", "containers": [{"name": "m"}, {"name": "istio-proxy"}]},
            "status": {"phase": "Succeeded", "podIP": "10.244.1.99"}
        }));
        let inv = Inventory::from_json(&list.to_string()).expect("inventory");
        let flows = required_flows(&inv, "node-a", &[ip("172.31.1.2")]);
        assert!(flows.iter().any(|f| f.dst.port == 15012), "the live proxies' xDS flows stay");
        assert!(!flows.iter().any(|f| f.src.ip == ip("10.244.1.99") || f.dst.ip == ip("10.244.1.99")), "{flows:#?}");
    }

    #[test]
    fn an_ambient_pods_probe_flows_go_to_its_spec_probe_ports_else_its_services_target_ports() {
        let inventory = |probe: &str| {
            format!(
                r#"{{"kind":"List","items":[
                  {{"kind":"Namespace","metadata":{{"name":"shop","labels":{{"istio.io/dataplane-mode":"ambient"}}}}}},
                  {{"kind":"Pod","metadata":{{"name":"cart-1","namespace":"shop","labels":{{"app":"cart"}}}},
                    "spec":{{"nodeName":"n1","containers":[{{"name":"app"{probe}}}]}},"status":{{"podIP":"10.1.0.5"}}}},
                  {{"kind":"Service","metadata":{{"name":"cart","namespace":"shop"}},
                    "spec":{{"clusterIP":"10.96.0.9","ports":[{{"port":80,"targetPort":8080}}],"selector":{{"app":"cart"}}}}}},
                  {{"kind":"EndpointSlice","metadata":{{"name":"cart-x","namespace":"shop","labels":{{"kubernetes.io/service-name":"cart"}}}},
                    "endpoints":[{{"addresses":["10.1.0.5"]}}],"ports":[{{"port":8080}}]}}
                ]}}"#
            )
        };
        let probed = |text: &str| -> Vec<u16> {
            let inv = Inventory::from_json(text).expect("inventory");
            let mut ports: Vec<u16> = required_flows(&inv, "n1", &[ip("172.31.1.2")])
                .iter()
                .filter(|f| f.src.ip == AMBIENT_PROBE_SOURCE)
                .map(|f| f.dst.port)
                .collect();
            ports.sort_unstable();
            ports
        };
        assert_eq!(probed(&inventory("")), vec![8080]);
        assert_eq!(probed(&inventory(r#","readinessProbe":{"tcpSocket":{"port":8081}}"#)), vec![8081]);
    }
}
