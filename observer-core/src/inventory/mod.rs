//! The mesh's inventory: pods, services, endpoints, namespaces and nodes, read from Kubernetes'
//! own JSON, and the questions the observer asks of it (who is this IP, what is this port).

pub mod from_objects;
pub mod istio_ports;
mod parse;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use serde::Serialize;

use istio_ports::{port_name, Component};
pub use parse::InventoryError;

/// How a pod takes part in the mesh.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MeshMode {
    Sidecar,
    Ambient,
    None,
}

/// What a pod is, as far as the mesh is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Istiod,
    Ztunnel,
    Gateway,
    ApiServer,
    Workload,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: Option<String>,
    pub ips: Vec<IpAddr>,
    /// Owning workload: Deployment (ReplicaSet minus its hash), DaemonSet, StatefulSet, Job...
    pub workload: String,
    pub role: Role,
    pub mesh: MeshMode,
    pub host_network: bool,
    /// The pod has terminated (`status.phase` Succeeded or Failed: a finished Job, an evicted
    /// pod). It keeps `status.podIP(s)`, but the address is free and may be reused by a live pod,
    /// so a finished pod never names an address.
    pub finished: bool,
    /// Ports kubelet probes (`spec.containers[].readinessProbe` / `livenessProbe` /
    /// `startupProbe`: `tcpSocket`, `httpGet` or `grpc` port, named ports resolved through the
    /// container's `ports[]`), with the probe's kind (`readiness`, `liveness`, `startup`).
    pub probe_ports: Vec<(u16, &'static str)>,
}

impl Pod {
    /// The kind of probe kubelet sends to `port` (readiness before liveness before startup).
    pub fn probe_on(&self, port: u16) -> Option<&'static str> {
        self.probe_ports.iter().find(|(p, _)| *p == port).map(|(_, kind)| *kind)
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    /// Numeric target port (None when named: resolved per pod, not known here).
    pub target_port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    pub cluster_ips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    /// Endpoint addresses (from EndpointSlices), each once.
    pub endpoints: Vec<IpAddr>,
    /// The ports each endpoint address serves for this Service (the slices' `ports[].port`);
    /// None when a slice lists the address without port numbers (all ports). A host-network
    /// address (a node IP) often backs several Services on different ports.
    pub endpoint_ports: BTreeMap<IpAddr, Option<BTreeSet<u16>>>,
}

impl Service {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether `ip` may serve `port` for this Service: listed with that port, or with no port
    /// numbers. False when `ip` is no endpoint of it.
    pub fn serves(&self, ip: IpAddr, port: u16) -> bool {
        match self.endpoint_ports.get(&ip) {
            Some(Some(ports)) => ports.contains(&port),
            Some(None) => true,
            None => false,
        }
    }

    /// The Kubernetes API server's Service (`default/kubernetes`).
    pub fn is_apiserver(&self) -> bool {
        self.namespace == "default" && self.name == "kubernetes"
    }
}

pub use crate::model::endpoint::Endpoint;

/// The parsed inventory with its lookup indexes.
#[derive(Debug, Default)]
pub struct Inventory {
    pub pods: Vec<Pod>,
    pub services: Vec<Service>,
    /// Pod CIDRs of the nodes (`spec.podCIDRs`): addresses that should belong to pods.
    pub pod_cidrs: Vec<ipnet::IpNet>,
    /// Items of kinds the observer does not use, by kind (reported, not an error).
    pub skipped: BTreeMap<String, usize>,
    pod_by_ip: HashMap<IpAddr, usize>,
    service_by_cluster_ip: HashMap<IpAddr, usize>,
    services_by_endpoint: HashMap<IpAddr, Vec<usize>>,
}

impl Inventory {
    /// Parses `kubectl get pods,services,endpointslices,namespaces,nodes -A -o json` output
    /// (a `List`), a single object, or a typed list (`PodList`...).
    pub fn from_json(text: &str) -> Result<Self, InventoryError> {
        parse::parse(text)
    }

    pub fn from_file(path: &std::path::Path) -> Result<Self, InventoryError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| InventoryError::Read { path: path.display().to_string(), source })?;
        Self::from_json(&text).map_err(|e| e.in_file(path))
    }

    fn index(mut self) -> Self {
        for (i, pod) in self.pods.iter().enumerate() {
            // A finished pod's address may be a live pod's now: only live pods name addresses.
            if !pod.host_network && !pod.finished {
                for ip in &pod.ips {
                    self.pod_by_ip.insert(*ip, i);
                }
            }
        }
        for (i, svc) in self.services.iter().enumerate() {
            for ip in &svc.cluster_ips {
                self.service_by_cluster_ip.insert(*ip, i);
            }
            for ip in &svc.endpoints {
                self.services_by_endpoint.entry(*ip).or_default().push(i);
            }
        }
        self
    }

    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<&Pod> {
        self.pod_by_ip.get(&ip).map(|&i| &self.pods[i])
    }

    pub fn pod_by_uid(&self, uid: &str) -> Option<&Pod> {
        self.pods.iter().find(|p| p.uid == uid)
    }

    /// Names a pod itself (e.g. the caller of a connect(), found by its cgroup's pod uid).
    pub fn describe_pod(&self, pod: &Pod) -> Endpoint {
        Endpoint {
            pod: Some(pod.key()),
            workload: Some(pod.workload.clone()),
            // A host-network pod's address is its node's: named only when one Service has it.
            service: pod.ips.iter().find_map(|ip| self.service_of_endpoint(*ip, None)).map(Service::key),
            role: Some(pod.role),
            mesh: Some(pod.mesh),
            ..Endpoint::default()
        }
    }

    pub fn service_by_cluster_ip(&self, ip: IpAddr) -> Option<&Service> {
        self.service_by_cluster_ip.get(&ip).map(|&i| &self.services[i])
    }

    /// The Service `ip` serves on `port`: the one whose endpoints list `ip` with `port` (a node
    /// IP serves the API server on 6443 and calico-typha on 5473). Without a port, or when none
    /// matches: the one Service `ip` backs, or for a pod's own address its first Service; None
    /// when the address backs several Services and the port tells none of them.
    pub fn service_of_endpoint(&self, ip: IpAddr, port: Option<u16>) -> Option<&Service> {
        let candidates: Vec<&Service> = self.services_of_endpoint(ip).collect();
        if let Some(port) = port {
            if let Some(serving) = candidates.iter().find(|s| s.serves(ip, port)) {
                return Some(serving);
            }
        }
        match candidates[..] {
            [one] => Some(one),
            [first, ..] if self.pod_by_ip(ip).is_some() => Some(first),
            _ => None,
        }
    }

    /// Services with `ip` among their endpoints.
    pub fn services_of_endpoint(&self, ip: IpAddr) -> impl Iterator<Item = &Service> {
        self.services_by_endpoint.get(&ip).into_iter().flatten().map(|&i| &self.services[i])
    }

    /// Names `ip` (and `port`, when the IP is a destination).
    pub fn describe(&self, ip: IpAddr, port: Option<u16>) -> Endpoint {
        if let Some(svc) = self.service_by_cluster_ip(ip) {
            let backing = svc.endpoints.iter().find_map(|e| self.pod_by_ip(*e));
            let target = port.and_then(|p| svc.ports.iter().find(|sp| sp.port == p));
            let role = if svc.is_apiserver() { Some(Role::ApiServer) } else { backing.map(|p| p.role) };
            let istio_port = match (role, target, port) {
                // istiod's Service port 443 is the webhook (-> 15017): name by the service port.
                (Some(Role::Istiod), _, Some(p)) => port_name(Component::Istiod, p)
                    .or_else(|| target.and_then(|t| t.target_port).and_then(|t| port_name(Component::Istiod, t))),
                (Some(r), Some(t), _) => t.target_port.and_then(|tp| component_port(r, backing.map(|p| p.mesh), tp)),
                _ => None,
            };
            return Endpoint {
                pod: None,
                workload: backing.map(|p| p.workload.clone()),
                service: Some(svc.key()),
                role,
                mesh: backing.map(|p| p.mesh),
                istio_port,
                ..Endpoint::default()
            };
        }
        let service = self.service_of_endpoint(ip, port);
        match self.pod_by_ip(ip) {
            Some(pod) => Endpoint {
                pod: Some(pod.key()),
                workload: Some(pod.workload.clone()),
                service: service.map(Service::key),
                role: Some(pod.role),
                mesh: Some(pod.mesh),
                istio_port: port.and_then(|p| component_port(pod.role, Some(pod.mesh), p)),
                probe: port.and_then(|p| pod.probe_on(p)),
                ..Endpoint::default()
            },
            None => Endpoint {
                service: service.map(Service::key),
                role: service.filter(|s| s.is_apiserver()).map(|_| Role::ApiServer),
                ..Endpoint::default()
            },
        }
    }
}

/// Istio's name of `port` on a pod of this role and mesh mode.
fn component_port(role: Role, mesh: Option<MeshMode>, port: u16) -> Option<&'static str> {
    let component = match (role, mesh) {
        (Role::Istiod, _) => Component::Istiod,
        (Role::Ztunnel, _) => Component::Ztunnel,
        (Role::Gateway, _) => Component::Gateway,
        (_, Some(MeshMode::Sidecar)) => Component::Sidecar,
        // An ambient pod's traffic is carried by ztunnel: HBONE 15008 arrives at the pod's IP.
        (_, Some(MeshMode::Ambient)) => Component::Ztunnel,
        _ => return None,
    };
    port_name(component, port)
}

#[cfg(test)]
pub(crate) mod tests;
