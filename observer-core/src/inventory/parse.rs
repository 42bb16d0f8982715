//! Parsing Kubernetes JSON into an [`Inventory`], with errors that name the item and field.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use serde_json::Value;

use super::{Inventory, MeshMode, Pod, Role, Service, ServicePort};

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("cannot read inventory {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{context}not JSON: {source} (expected `kubectl get pods,services,endpointslices,namespaces,nodes -A -o json` output)")]
    Json { context: String, source: serde_json::Error },
    #[error("{context}{location}: {problem}")]
    Field { context: String, location: String, problem: String },
}

impl InventoryError {
    /// Prefixes the message with the file it came from.
    pub fn in_file(self, path: &std::path::Path) -> Self {
        let context = format!("inventory {}: ", path.display());
        match self {
            Self::Json { source, .. } => Self::Json { context, source },
            Self::Field { location, problem, .. } => Self::Field { context, location, problem },
            other => other,
        }
    }
}

fn field_error(location: impl Into<String>, problem: impl Into<String>) -> InventoryError {
    InventoryError::Field { context: String::new(), location: location.into(), problem: problem.into() }
}

pub fn parse(text: &str) -> Result<Inventory, InventoryError> {
    let root: Value =
        serde_json::from_str(text).map_err(|source| InventoryError::Json { context: String::new(), source })?;
    let kind = root
        .get("kind")
        .and_then(Value::as_str)
        .ok_or_else(|| field_error("top level", "no `kind`: expected a Kubernetes object or a List of them"))?;
    let items: Vec<&Value> = if kind.ends_with("List") {
        let items = root
            .get("items")
            .and_then(Value::as_array)
            .ok_or_else(|| field_error("top level", format!("a {kind} without an `items` array")))?;
        let item_kind = kind.strip_suffix("List").filter(|k| !k.is_empty());
        // Typed lists (PodList) may omit each item's kind.
        return collect(items.iter().collect(), item_kind);
    } else {
        vec![&root]
    };
    collect(items, None)
}

pub(super) fn collect(items: Vec<&Value>, default_kind: Option<&str>) -> Result<Inventory, InventoryError> {
    let mut inv = Inventory::default();
    let mut namespace_labels: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut endpoints: Vec<EndpointsOf> = Vec::new();
    let mut raw_pods = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let kind = item.get("kind").and_then(Value::as_str).or(default_kind).unwrap_or("");
        let at = Location::new(i, kind, item);
        match kind {
            "Pod" => raw_pods.push((at, *item)),
            "Service" => {
                if let Some(svc) = service(&at, item)? {
                    inv.services.push(svc);
                }
            }
            "EndpointSlice" => endpoints.push(endpoint_slice(&at, item)?),
            "Endpoints" => endpoints.push(legacy_endpoints(&at, item)?),
            "Namespace" => {
                namespace_labels.insert(at.name.clone(), string_map(item.pointer("/metadata/labels")));
            }
            "Node" => {
                for (j, c) in item.pointer("/spec/podCIDRs").and_then(Value::as_array).into_iter().flatten().enumerate()
                {
                    let text = c.as_str().unwrap_or("");
                    let cidr = text.parse::<ipnet::IpNet>().map_err(|_| {
                        field_error(at.field(&format!("spec.podCIDRs[{j}]")), format!("`{text}` is not a CIDR"))
                    })?;
                    inv.pod_cidrs.push(cidr);
                }
            }
            "" => return Err(field_error(at.to_string(), "no `kind`")),
            other => *inv.skipped.entry(other.to_string()).or_default() += 1,
        }
    }
    for (at, item) in raw_pods {
        inv.pods.push(pod(&at, item, &namespace_labels)?);
    }
    for (namespace, service, ips) in endpoints {
        if let Some(svc) = inv.services.iter_mut().find(|s| s.namespace == namespace && s.name == service) {
            for (ip, ports) in ips {
                if !svc.endpoints.contains(&ip) {
                    svc.endpoints.push(ip);
                }
                let known = svc.endpoint_ports.entry(ip).or_insert_with(|| Some(BTreeSet::new()));
                match (ports, known.as_mut()) {
                    // A slice lists this address without ports: any port may be served.
                    (None, _) => *known = None,
                    (Some(ports), Some(set)) => set.extend(ports),
                    (Some(_), None) => {}
                }
            }
        }
    }
    Ok(inv.index())
}

/// `items[3] (Pod bookinfo/productpage-...)`, for error messages.
struct Location {
    index: usize,
    kind: String,
    namespace: String,
    name: String,
}

impl Location {
    fn new(index: usize, kind: &str, item: &Value) -> Self {
        let meta = |f: &str| item.pointer(&format!("/metadata/{f}")).and_then(Value::as_str).unwrap_or("").to_string();
        let namespace = meta("namespace");
        Self {
            index,
            kind: kind.to_string(),
            namespace: if namespace.is_empty() { "default".into() } else { namespace },
            name: meta("name"),
        }
    }
    fn field(&self, path: &str) -> String {
        format!("{self}: {path}")
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "items[{}] ({} {}/{})", self.index, self.kind, self.namespace, self.name)
    }
}

fn require_name(at: &Location) -> Result<(), InventoryError> {
    if at.name.is_empty() {
        return Err(field_error(at.field("metadata.name"), "missing"));
    }
    Ok(())
}

fn string_map(value: Option<&Value>) -> HashMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

fn ip(at: &Location, path: &str, value: &Value) -> Result<IpAddr, InventoryError> {
    let text = value.as_str().ok_or_else(|| field_error(at.field(path), format!("{value} is not a string")))?;
    text.parse().map_err(|_| field_error(at.field(path), format!("`{text}` is not an IP address")))
}

fn pod(
    at: &Location,
    item: &Value,
    namespaces: &HashMap<String, HashMap<String, String>>,
) -> Result<Pod, InventoryError> {
    require_name(at)?;
    let labels = string_map(item.pointer("/metadata/labels"));
    let annotations = string_map(item.pointer("/metadata/annotations"));
    let mut ips = Vec::new();
    if let Some(list) = item.pointer("/status/podIPs").and_then(Value::as_array) {
        for (i, entry) in list.iter().enumerate() {
            ips.push(ip(at, &format!("status.podIPs[{i}].ip"), entry.get("ip").unwrap_or(&Value::Null))?);
        }
    } else if let Some(single) = item.pointer("/status/podIP") {
        ips.push(ip(at, "status.podIP", single)?);
    }
    let containers = |path: &str| -> Vec<String> {
        item.pointer(path)
            .and_then(Value::as_array)
            .map(|cs| cs.iter().filter_map(|c| c.get("name")?.as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    // istio-proxy as a container, or as a native sidecar (an init container that keeps running).
    let has_proxy = containers("/spec/containers")
        .iter()
        .chain(containers("/spec/initContainers").iter())
        .any(|c| c == "istio-proxy")
        || annotations.contains_key("sidecar.istio.io/status");
    let ns_labels = namespaces.get(&at.namespace);
    let dataplane = labels
        .get("istio.io/dataplane-mode")
        .or_else(|| ns_labels.and_then(|l| l.get("istio.io/dataplane-mode")))
        .map(String::as_str);
    let role = role_of(&labels);
    let mesh = if has_proxy && role != Role::Gateway {
        MeshMode::Sidecar
    } else if dataplane == Some("ambient") && role == Role::Workload {
        MeshMode::Ambient
    } else {
        MeshMode::None
    };
    Ok(Pod {
        namespace: at.namespace.clone(),
        name: at.name.clone(),
        uid: item.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("").to_string(),
        node: item.pointer("/spec/nodeName").and_then(Value::as_str).map(String::from),
        ips,
        workload: workload_of(item, &at.name, &labels),
        role,
        mesh,
        host_network: item.pointer("/spec/hostNetwork").and_then(Value::as_bool).unwrap_or(false),
        finished: matches!(item.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed")),
        probe_ports: probe_ports(item),
    })
}

/// The ports kubelet probes, from each container's probes (Kubernetes `Probe`: `tcpSocket`,
/// `httpGet` or `grpc` with a port number or a name of the container's `ports[]`); probes
/// without a resolvable port (exec, unknown name) are skipped.
fn probe_ports(item: &Value) -> Vec<(u16, &'static str)> {
    let mut out: Vec<(u16, &'static str)> = Vec::new();
    let containers = item.pointer("/spec/containers").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    for (field, kind) in [("readinessProbe", "readiness"), ("livenessProbe", "liveness"), ("startupProbe", "startup")] {
        for c in containers {
            let Some(probe) = c.get(field) else { continue };
            let port = ["tcpSocket", "httpGet", "grpc"].iter().find_map(|h| probe.get(*h)?.get("port"));
            let number = match port {
                Some(Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
                Some(Value::String(name)) => name
                    .parse()
                    .ok()
                    .or_else(|| {
                        c.get("ports")?.as_array()?.iter().find_map(|p| {
                            (p.get("name")?.as_str()? == name).then(|| p.get("containerPort")?.as_u64())?
                        })
                    })
                    .and_then(|n| u16::try_from(n).ok()),
                _ => None,
            };
            if let Some(n) = number.filter(|n| !out.iter().any(|(p, _)| p == n)) {
                out.push((n, kind));
            }
        }
    }
    out
}

fn role_of(labels: &HashMap<String, String>) -> Role {
    let label = |k: &str| labels.get(k).map(String::as_str);
    if label("app") == Some("istiod") || label("istio") == Some("pilot") {
        Role::Istiod
    } else if label("app") == Some("ztunnel") {
        Role::Ztunnel
    } else if label("istio").is_some_and(|v| v.ends_with("gateway"))
        || label("gateway.networking.k8s.io/gateway-name").is_some()
    {
        Role::Gateway
    } else if label("component") == Some("kube-apiserver") {
        Role::ApiServer
    } else {
        Role::Workload
    }
}

/// The controller owner: a ReplicaSet stands for its Deployment (name minus the template hash).
fn workload_of(item: &Value, pod_name: &str, labels: &HashMap<String, String>) -> String {
    let owners = item.pointer("/metadata/ownerReferences").and_then(Value::as_array);
    let controller = owners.and_then(|o| {
        o.iter().find(|r| r.get("controller").and_then(Value::as_bool) == Some(true)).or_else(|| o.first())
    });
    let Some(owner) = controller else { return pod_name.to_string() };
    let kind = owner.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = owner.get("name").and_then(Value::as_str).unwrap_or(pod_name);
    match kind {
        "ReplicaSet" => match labels.get("pod-template-hash") {
            Some(hash) => name.strip_suffix(&format!("-{hash}")).unwrap_or(name).to_string(),
            None => name.rsplit_once('-').map_or(name, |(deployment, _)| deployment).to_string(),
        },
        // Static pods are owned by their Node: the pod is the workload.
        "Node" => pod_name.to_string(),
        _ => name.to_string(),
    }
}

fn service(at: &Location, item: &Value) -> Result<Option<Service>, InventoryError> {
    require_name(at)?;
    let mut cluster_ips = Vec::new();
    let list: Vec<&Value> = match item.pointer("/spec/clusterIPs").and_then(Value::as_array) {
        Some(l) => l.iter().collect(),
        None => item.pointer("/spec/clusterIP").into_iter().collect(),
    };
    for (i, value) in list.into_iter().enumerate() {
        if value.as_str().is_some_and(|s| s == "None" || s.is_empty()) {
            continue; // headless
        }
        cluster_ips.push(ip(at, &format!("spec.clusterIPs[{i}]"), value)?);
    }
    let mut ports = Vec::new();
    for (i, p) in item.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let port =
            p.get("port").and_then(Value::as_u64).and_then(|n| u16::try_from(n).ok()).ok_or_else(|| {
                field_error(at.field(&format!("spec.ports[{i}].port")), "missing or not a port number")
            })?;
        let target_port = match p.get("targetPort") {
            None => Some(port),
            Some(Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
            Some(_) => None, // a named port
        };
        ports.push(ServicePort {
            name: p.get("name").and_then(Value::as_str).unwrap_or("").to_string(),
            port,
            target_port,
        });
    }
    Ok(Some(Service {
        namespace: at.namespace.clone(),
        name: at.name.clone(),
        cluster_ips,
        ports,
        endpoints: Vec::new(),
        endpoint_ports: BTreeMap::new(),
    }))
}

/// An EndpointSlice's Service and its addresses, each with the slice's ports (`ports[].port`;
/// None when the slice lists no ports or a port without number, which means all ports).
fn endpoint_slice(at: &Location, item: &Value) -> Result<EndpointsOf, InventoryError> {
    let service =
        item.pointer("/metadata/labels/kubernetes.io~1service-name").and_then(Value::as_str).ok_or_else(|| {
            field_error(
                at.field("metadata.labels[kubernetes.io/service-name]"),
                "missing: cannot tell which Service this slice serves",
            )
        })?;
    let ports = ports_of(at, "ports", item.get("ports"))?;
    let mut ips = Vec::new();
    for (i, e) in item.get("endpoints").and_then(Value::as_array).into_iter().flatten().enumerate() {
        for (j, a) in e.get("addresses").and_then(Value::as_array).into_iter().flatten().enumerate() {
            ips.push((ip(at, &format!("endpoints[{i}].addresses[{j}]"), a)?, ports.clone()));
        }
    }
    Ok((at.namespace.clone(), service.to_string(), ips))
}

/// A Service's endpoints as one EndpointSlice or Endpoints object lists them: namespace,
/// Service name, each address with its ports (None: all ports).
type EndpointsOf = (String, String, Vec<(IpAddr, Option<Vec<u16>>)>);

/// The port numbers of an EndpointSlice's or an Endpoints subset's `ports[]` (at `field`); None
/// when absent, empty, or one entry has no number (all ports, per the EndpointSlice API).
///
/// Errors: a `port` that is no number from 1 to 65535, naming the field.
fn ports_of(at: &Location, field: &str, ports: Option<&Value>) -> Result<Option<Vec<u16>>, InventoryError> {
    let Some(list) = ports.and_then(Value::as_array).filter(|l| !l.is_empty()) else { return Ok(None) };
    let mut out = Vec::with_capacity(list.len());
    for (i, p) in list.iter().enumerate() {
        let Some(value) = p.get("port").filter(|v| !v.is_null()) else { return Ok(None) };
        match value.as_u64().and_then(|n| u16::try_from(n).ok()).filter(|n| *n > 0) {
            Some(n) => out.push(n),
            None => {
                return Err(field_error(
                    at.field(&format!("{field}[{i}].port")),
                    format!("{value} is no port number (1-65535)"),
                ))
            }
        }
    }
    Ok(Some(out))
}

fn legacy_endpoints(at: &Location, item: &Value) -> Result<EndpointsOf, InventoryError> {
    require_name(at)?;
    let mut ips = Vec::new();
    for (i, subset) in item.get("subsets").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let ports = ports_of(at, &format!("subsets[{i}].ports"), subset.get("ports"))?;
        for (j, a) in subset.get("addresses").and_then(Value::as_array).into_iter().flatten().enumerate() {
            let addr = ip(at, &format!("subsets[{i}].addresses[{j}].ip"), a.get("ip").unwrap_or(&Value::Null))?;
            ips.push((addr, ports.clone()));
        }
    }
    Ok((at.namespace.clone(), at.name.clone(), ips))
}
