//! One end of a flow, as the inventory names it: shared by observations, connections and
//! findings (what the inventory knows, plus what the flow showed: address, port, SNAT).

use std::net::IpAddr;

use serde::Serialize;

use crate::inventory::{MeshMode, Role};

/// Everything known about one end of a flow. Every field is optional: an observation's ends
/// carry what the inventory knows about the address; a finding's ends also carry the address,
/// the destination port and the source's address after SNAT; verify's required flows name
/// their ends with it too (plus the node).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// The address (findings; observations keep it in their flow).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// The port (a finding's destination).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `namespace/name` of the pod owning the IP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// `namespace/name` of the Service: the IP is its cluster IP, or the pod is one of its endpoints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mesh: Option<MeshMode>,
    /// Istio's name for the port (for destinations), e.g. `xds-tls`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub istio_port: Option<&'static str>,
    /// (destinations) The pod spec's probe on that port: `readiness`, `liveness`, `startup`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<&'static str>,
    /// (source) The address its packets carried after source NAT, when the connection was
    /// followed across it (e.g. istio-cni's ambient probe address 169.254.7.127).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snat_ip: Option<IpAddr>,
    /// The node its pod runs on (verify's flows; a finding names its node once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl Endpoint {
    /// Fills the fields `self` lacks from `from` (the pod is known after DNAT, the service before).
    pub fn merge(&mut self, from: &Endpoint) {
        self.ip = self.ip.or(from.ip);
        self.port = self.port.or(from.port);
        self.pod = self.pod.take().or_else(|| from.pod.clone());
        self.workload = self.workload.take().or_else(|| from.workload.clone());
        self.service = self.service.take().or_else(|| from.service.clone());
        self.role = self.role.or(from.role);
        self.mesh = self.mesh.or(from.mesh);
        self.istio_port = self.istio_port.or(from.istio_port);
        self.probe = self.probe.or(from.probe);
        self.snat_ip = self.snat_ip.or(from.snat_ip);
        self.node = self.node.take().or_else(|| from.node.clone());
    }
}
