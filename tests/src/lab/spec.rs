//! What a lab contains: nodes, pods and services. [`LabSpec::bookinfo`] is the built-in lab.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Which routes a node's uplink carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UplinkRoutes {
    /// A default route via the router (most clouds).
    #[default]
    Default,
    /// No default route: only specific routes to the other nodes' pod CIDRs and uplink subnets
    /// via the router (bare-metal and multi-homed nodes whose default route is elsewhere).
    PeersOnly,
}

/// How a node's pods hang off it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PodAttachment {
    /// A bridge (`cni0`, the bridge plugin's): pods on the pod CIDR's subnet, gateway `.1`.
    #[default]
    Bridge,
    /// Routed veths, as Calico does: `cali*` host veths without addresses, proxy ARP, a /32
    /// (/128) route per pod, the pod's gateway a link-local address (169.254.1.1, fe80::1),
    /// and a blackhole route for the rest of the node's pod CIDR. No bridge.
    Routed,
}

/// How pod traffic crosses between nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overlay {
    /// Routed underlay: the router between the nodes routes the pod CIDRs (no encapsulation).
    #[default]
    None,
    /// VXLAN as flannel's `vxlan` backend builds it: a `flannel.1` device per node (VNI 1, UDP
    /// 8472, local = the node's uplink address, `nolearning`), the pod CIDR's `.0` on it, and
    /// per peer a route via the peer's `.0` (onlink), a permanent neighbour entry and an FDB
    /// entry sending that MAC to the peer's uplink address. IPv6 pod traffic rides the same
    /// device (IPv6 inner, IPv4 outer).
    Vxlan,
    /// IP-in-IP as Calico's IPIP mode: `tunl0` up, the pod CIDR's `.0` on it, a route per peer
    /// to its pod CIDR via the peer's uplink address (onlink) through `tunl0`. IPv4 only, as
    /// Calico's IPIP: IPv6 pod traffic stays routed by the underlay. Needs CONFIG_NET_IPIP.
    Ipip,
    /// Geneve (VNI 1, UDP 6081): one point-to-point `geneve` device per peer (remote = the
    /// peer's uplink address), routed like the VXLAN variant. Needs CONFIG_GENEVE.
    Geneve,
}

impl Overlay {
    /// Bytes the encapsulation adds over an IPv4 underlay (outer IPv4 20 + UDP 8 + VXLAN or
    /// Geneve 8 + inner Ethernet 14; IPIP: outer IPv4 20).
    pub fn overhead(self) -> u32 {
        match self {
            Overlay::None => 0,
            Overlay::Vxlan | Overlay::Geneve => 50,
            Overlay::Ipip => 20,
        }
    }

    /// The UDP port of the encapsulation (VXLAN: flannel's 8472; Geneve: 6081), if any.
    pub fn udp_port(self) -> Option<u16> {
        match self {
            Overlay::Vxlan => Some(8472),
            Overlay::Geneve => Some(6081),
            Overlay::None | Overlay::Ipip => None,
        }
    }

    /// Whether IPv6 pod traffic is encapsulated too (else it stays routed by the underlay).
    pub fn carries_ipv6(self) -> bool {
        matches!(self, Overlay::Vxlan | Overlay::Geneve)
    }

    /// The `ip link` kind of the node's tunnel device (rtnetlink IFLA_INFO_KIND).
    pub fn link_kind(self) -> Option<&'static str> {
        match self {
            Overlay::None => None,
            Overlay::Vxlan => Some("vxlan"),
            Overlay::Ipip => Some("ipip"),
            Overlay::Geneve => Some("geneve"),
        }
    }
}

/// A simulated Kubernetes node: a network namespace with its pods (bridged or routed) and an
/// uplink to the underlay router.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// Kubernetes node name.
    pub name: String,
    /// Pod CIDR (a /24 here); the bridge takes `.1`.
    pub pod_cidr: (Ipv4Addr, u8),
    /// Node address on its uplink, and the router's address on that link (a /24).
    pub uplink_ip: Ipv4Addr,
    pub router_ip: Ipv4Addr,
    /// IPv6 pod CIDR (a /64, bridge `::1`) and uplink/router addresses (a /64): dual-stack.
    pub pod_cidr6: Option<(Ipv6Addr, u8)>,
    pub uplink_ip6: Option<Ipv6Addr>,
    pub router_ip6: Option<Ipv6Addr>,
    /// Routes of the uplink (a default route, or only the peers').
    pub uplink_routes: UplinkRoutes,
    /// Bridge or routed veths.
    pub pod_attachment: PodAttachment,
    /// MTU of the node's underlay link (the router's side and the node's eth0), when lower
    /// than the default 1500. Pods keep 1500: the CNI's MTU was not lowered to the underlay's.
    pub underlay_mtu: Option<u32>,
    /// istio-cni's ambient host rules: node-originated TCP to the node's ambient pods (an ipset
    /// of probe targets) is SNATed to 169.254.7.127 / fd16:9254:7127:1337:ffff:ffff:ffff:ffff.
    pub ambient_probe_snat: bool,
}

impl NodeSpec {
    /// The node's address on its tunnel device (the pod CIDR's `.0`, as flannel and Calico give
    /// their VTEP/tunnel device), and the IPv6 one (`<pod CIDR6>::`).
    pub fn tunnel_ip(&self) -> Ipv4Addr {
        self.pod_cidr.0
    }
    pub fn tunnel_ip6(&self) -> Option<Ipv6Addr> {
        self.pod_cidr6.map(|(net, _)| net)
    }
    /// The node's underlay MTU (1500 unless lowered).
    pub fn underlay_mtu_or_default(&self) -> u32 {
        self.underlay_mtu.unwrap_or(1500)
    }

    pub fn bridge_ip(&self) -> Ipv4Addr {
        let [a, b, c, _] = self.pod_cidr.0.octets();
        Ipv4Addr::new(a, b, c, 1)
    }
    pub fn pod_cidr_string(&self) -> String {
        format!("{}/{}", self.pod_cidr.0, self.pod_cidr.1)
    }
    pub fn bridge_ip6(&self) -> Option<Ipv6Addr> {
        self.pod_cidr6.map(|(net, _)| {
            let mut o = net.octets();
            o[15] = 1;
            Ipv6Addr::from(o)
        })
    }
}

/// What a pod stands in for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodRole {
    /// An application workload (with a sidecar when `PodSpec::sidecar`).
    App,
    /// istiod: listeners on 15010, 15012, 15014, 15017.
    Istiod,
    /// The Kubernetes API server endpoint.
    ApiServer,
}

#[derive(Clone, Debug)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    /// Short handle used by tests and the CLI (the `app` label), e.g. `productpage`.
    pub app: String,
    /// Owning workload (Deployment name), e.g. `productpage-v1`.
    pub workload: String,
    pub node: String,
    pub ip: Ipv4Addr,
    /// IPv6 address on a dual-stack node.
    pub ip6: Option<Ipv6Addr>,
    pub role: PodRole,
    /// Ports the main container listens on.
    pub ports: Vec<u16>,
    /// Istio sidecar injected (istio-iptables capture + proxy on 15001/15006/...).
    pub sidecar: bool,
    /// Ambient mode (namespace labelled `istio.io/dataplane-mode=ambient`): the pod also
    /// listens on HBONE 15008, as ztunnel does inside an ambient pod's namespace.
    pub ambient: bool,
}

impl PodSpec {
    /// `namespace/name`, as Kubernetes tools print it.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
    /// Name of the main container.
    pub fn main_container(&self) -> &'static str {
        match self.role {
            PodRole::App => "app",
            PodRole::Istiod => "discovery",
            PodRole::ApiServer => "kube-apiserver",
        }
    }
}

#[derive(Clone, Debug)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    pub target_port: u16,
}

#[derive(Clone, Debug)]
pub struct ServiceSpec {
    pub namespace: String,
    pub name: String,
    pub cluster_ip: Ipv4Addr,
    pub ports: Vec<ServicePort>,
    /// `app` label of the pods behind it.
    pub selector_app: String,
}

#[derive(Clone, Debug)]
pub struct LabSpec {
    pub nodes: Vec<NodeSpec>,
    pub pods: Vec<PodSpec>,
    pub services: Vec<ServiceSpec>,
    /// How pod traffic crosses between the nodes (default: routed underlay).
    pub overlay: Overlay,
    /// A control plane outside every node (a managed API server's network), or none.
    pub control_plane: Option<ControlPlaneSpec>,
}

/// A control plane outside the nodes, as a managed Kubernetes offering runs it: the API server
/// on a subnet of its own behind the router (its gateway), reaching the pods through the
/// router, not through any node's namespace. The lab's `default/kubernetes` endpoints are its
/// address (with the service's target port), as they are on such clusters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlPlaneSpec {
    /// The control plane's subnet (network address, prefix length).
    pub subnet: (Ipv4Addr, u8),
    /// The API server's address on it.
    pub address: Ipv4Addr,
    /// The router's address on it (the control plane's gateway).
    pub router_ip: Ipv4Addr,
}

impl ControlPlaneSpec {
    /// `net/len` of the control plane's subnet.
    pub fn subnet_string(&self) -> String {
        format!("{}/{}", self.subnet.0, self.subnet.1)
    }
}

fn port(name: &str, port: u16, target_port: u16) -> ServicePort {
    ServicePort { name: name.into(), port, target_port }
}

impl LabSpec {
    /// Two nodes joined by a router. node-a runs bookinfo's productpage and reviews (sidecars)
    /// and shop's cart (ambient); node-b runs istiod, the API server endpoint, details (sidecar)
    /// and shop's catalog (ambient).
    pub fn bookinfo() -> Self {
        let node = |name: &str, n: u8| NodeSpec {
            name: name.into(),
            pod_cidr: (Ipv4Addr::new(10, 244, n, 0), 24),
            uplink_ip: Ipv4Addr::new(172, 31, n, 2),
            router_ip: Ipv4Addr::new(172, 31, n, 1),
            pod_cidr6: Some((Ipv6Addr::new(0xfd00, 0x10, 0x244, n.into(), 0, 0, 0, 0), 64)),
            uplink_ip6: Some(Ipv6Addr::new(0xfd00, 0x172, 0x31, n.into(), 0, 0, 0, 2)),
            router_ip6: Some(Ipv6Addr::new(0xfd00, 0x172, 0x31, n.into(), 0, 0, 0, 1)),
            uplink_routes: UplinkRoutes::Default,
            pod_attachment: PodAttachment::Bridge,
            underlay_mtu: None,
            ambient_probe_snat: false,
        };
        let pod =
            |ns: &str, name: &str, app: &str, workload: &str, node: &str, ip: [u8; 4], role, ports: &[u16], sidecar| {
                PodSpec {
                    namespace: ns.into(),
                    name: name.into(),
                    app: app.into(),
                    workload: workload.into(),
                    node: node.into(),
                    ip: Ipv4Addr::from(ip),
                    // fd00:10:244:<node>::<host>, mirroring the IPv4 address.
                    ip6: Some(Ipv6Addr::new(0xfd00, 0x10, 0x244, ip[2].into(), 0, 0, 0, ip[3].into())),
                    role,
                    ports: ports.to_vec(),
                    sidecar,
                    ambient: false,
                }
            };
        let svc = |ns: &str, name: &str, ip: [u8; 4], app: &str, ports: Vec<ServicePort>| ServiceSpec {
            namespace: ns.into(),
            name: name.into(),
            cluster_ip: Ipv4Addr::from(ip),
            ports,
            selector_app: app.into(),
        };
        Self {
            nodes: vec![node("node-a", 1), node("node-b", 2)],
            pods: vec![
                pod(
                    "bookinfo",
                    "productpage-v1-7d9f8c6b5-x2k4q",
                    "productpage",
                    "productpage-v1",
                    "node-a",
                    [10, 244, 1, 10],
                    PodRole::App,
                    &[9080],
                    true,
                ),
                pod(
                    "bookinfo",
                    "reviews-v1-5b8f7c9d4-q7m2n",
                    "reviews",
                    "reviews-v1",
                    "node-a",
                    [10, 244, 1, 11],
                    PodRole::App,
                    &[9080],
                    true,
                ),
                pod(
                    "istio-system",
                    "istiod-6c8d9f7b5-k9v3p",
                    "istiod",
                    "istiod",
                    "node-b",
                    [10, 244, 2, 10],
                    PodRole::Istiod,
                    &[15010, 15012, 15014, 15017],
                    false,
                ),
                pod(
                    "kube-system",
                    "kube-apiserver-node-b",
                    "kube-apiserver",
                    "kube-apiserver",
                    "node-b",
                    [10, 244, 2, 20],
                    PodRole::ApiServer,
                    &[6443],
                    false,
                ),
                pod(
                    "bookinfo",
                    "details-v1-8d6f5c7b9-w4r8t",
                    "details",
                    "details-v1",
                    "node-b",
                    [10, 244, 2, 11],
                    PodRole::App,
                    &[9080],
                    true,
                ),
                PodSpec {
                    ambient: true,
                    ..pod(
                        "shop",
                        "cart-5f6d7c8b9-abcde",
                        "cart",
                        "cart",
                        "node-a",
                        [10, 244, 1, 20],
                        PodRole::App,
                        &[8080, 15008],
                        false,
                    )
                },
                PodSpec {
                    ambient: true,
                    ..pod(
                        "shop",
                        "catalog-6b7c8d9e4-fghij",
                        "catalog",
                        "catalog",
                        "node-b",
                        [10, 244, 2, 40],
                        PodRole::App,
                        &[8080, 15008],
                        false,
                    )
                },
            ],
            services: vec![
                svc("default", "kubernetes", [10, 96, 0, 1], "kube-apiserver", vec![port("https", 443, 6443)]),
                svc(
                    "istio-system",
                    "istiod",
                    [10, 96, 0, 10],
                    "istiod",
                    vec![
                        port("grpc-xds", 15010, 15010),
                        port("https-dns", 15012, 15012),
                        port("https-webhook", 443, 15017),
                        port("http-monitoring", 15014, 15014),
                    ],
                ),
                svc("bookinfo", "productpage", [10, 96, 1, 10], "productpage", vec![port("http", 9080, 9080)]),
                svc("bookinfo", "reviews", [10, 96, 1, 11], "reviews", vec![port("http", 9080, 9080)]),
                svc("bookinfo", "details", [10, 96, 1, 12], "details", vec![port("http", 9080, 9080)]),
            ],
            overlay: Overlay::None,
            control_plane: None,
        }
    }

    /// The same lab with a managed control plane: the API server in a namespace of its own on
    /// 172.31.250.0/24 behind the router (`.1`), at 172.31.250.10, which becomes the
    /// `default/kubernetes` endpoint; the in-cluster `kube-apiserver` pod goes (a managed
    /// cluster has none on its nodes). The router reaches every node's pod CIDR: routed on the
    /// underlay, and over an overlay via each node's uplink address, as a cloud's route table
    /// sends pod CIDRs to the node that owns them (the node forwards it to the pod unencapsulated).
    pub fn with_control_plane(mut self) -> Self {
        self.pods.retain(|p| p.role != PodRole::ApiServer);
        self.control_plane = Some(ControlPlaneSpec {
            subnet: (Ipv4Addr::new(172, 31, 250, 0), 24),
            address: Ipv4Addr::new(172, 31, 250, 10),
            router_ip: Ipv4Addr::new(172, 31, 250, 1),
        });
        self
    }

    /// Whether `svc` is the API server's service (`default/kubernetes`).
    pub fn is_apiserver(svc: &ServiceSpec) -> bool {
        svc.namespace == "default" && svc.name == "kubernetes"
    }

    /// The same lab with pod traffic between nodes encapsulated by `overlay` (the router then
    /// sees, and can drop, only the outer packets). Composes with [`Self::with_underlay_mtu`]:
    /// the tunnel's MTU is the node's underlay MTU minus [`Overlay::overhead`]; pods keep 1500.
    pub fn with_overlay(mut self, overlay: Overlay) -> Self {
        self.overlay = overlay;
        self
    }

    /// The same lab with every node's uplink carrying only routes to its peers (no default
    /// route).
    pub fn with_uplink_routes(mut self, routes: UplinkRoutes) -> Self {
        for node in &mut self.nodes {
            node.uplink_routes = routes;
        }
        self
    }

    /// The same lab with the pods of `node` attached that way (e.g. Calico-style routed veths).
    pub fn with_pod_attachment(mut self, node: &str, attachment: PodAttachment) -> Self {
        for n in self.nodes.iter_mut().filter(|n| n.name == node) {
            n.pod_attachment = attachment;
        }
        self
    }

    /// The same lab with istio-cni's ambient probe SNAT on every node.
    pub fn with_ambient_probe_snat(mut self) -> Self {
        for n in &mut self.nodes {
            n.ambient_probe_snat = true;
        }
        self
    }

    /// The same lab with `node`'s underlay link at `mtu` (a lower-MTU underlay segment).
    pub fn with_underlay_mtu(mut self, node: &str, mtu: u32) -> Self {
        for n in self.nodes.iter_mut().filter(|n| n.name == node) {
            n.underlay_mtu = Some(mtu);
        }
        self
    }

    pub fn pod(&self, app_or_key: &str) -> Option<&PodSpec> {
        self.pods.iter().find(|p| p.app == app_or_key || p.key() == app_or_key || p.name == app_or_key)
    }

    pub fn node(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn pods_on<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a PodSpec> + 'a {
        self.pods.iter().filter(move |p| p.node == node)
    }

    /// Endpoints (pod IP, target port) behind a service port; for `default/kubernetes` with a
    /// control plane outside the nodes, its address.
    pub fn endpoints(&self, svc: &ServiceSpec) -> Vec<Ipv4Addr> {
        if let (Some(cp), true) = (&self.control_plane, Self::is_apiserver(svc)) {
            return vec![cp.address];
        }
        self.pods.iter().filter(|p| p.app == svc.selector_app).map(|p| p.ip).collect()
    }
}
