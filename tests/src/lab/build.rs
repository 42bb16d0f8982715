//! Creating a lab from a [`LabSpec`], and the handle tests drive it with.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Child,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::{
    cgroups::{cgroup2_root, container_cgroup, hex_id, pod_uid},
    cmd::{self, in_netns, in_netns_with_input},
    faults::{Backend, FirewallRule},
    inventory::{container_ids, inventory},
    processes::{run_bounded, spawn_ready, Placement},
    sidecar::{istio_iptables_rules, kube_proxy_rules, PROXY_UID},
    spec::{LabSpec, NodeSpec, Overlay, PodAttachment, PodSpec},
    state::LabState,
    ConnectOutcome, LabError, Tools, LAB_PREFIX,
};

/// A running lab. Dropping it tears everything down (also when a test panics), unless it was
/// handed over with [`Lab::persist`].
pub struct Lab {
    pub name: String,
    pub spec: LabSpec,
    tools: Tools,
    state: LabState,
    children: Vec<Child>,
    cgroup: PathBuf,
    persisted: bool,
}

mod control_plane;
mod overlay;
mod topology;

use topology::lab_dir;

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique_name() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    let seed = format!("{}-{}-{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{LAB_PREFIX}{}", hex_id(&seed, 8))
}

impl Lab {
    /// Builds the lab: namespaces, links, addresses, routes, cgroups, capture rules, processes.
    pub fn up(spec: LabSpec, tools: Tools) -> Result<Self, LabError> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(LabError::NotRoot);
        }
        if !tools.lab_pod.exists() {
            return Err(LabError::Io {
                what: format!("lab helper {}", tools.lab_pod.display()),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "not built (cargo build -p observer-lab)"),
            });
        }
        let name = unique_name();
        let dir = lab_dir(&name);
        let cgroup = cgroup2_root()?.join(format!("{name}.slice"));
        let mut lab = Lab {
            state: LabState { name: name.clone(), dir: dir.clone(), ..LabState::default() },
            name,
            spec,
            tools,
            children: Vec::new(),
            cgroup,
            persisted: false,
        };
        std::fs::create_dir_all(&dir).map_err(LabError::io(format!("creating {}", dir.display())))?;
        lab.install_helpers()?;
        lab.build()?;
        Ok(lab)
    }

    fn build(&mut self) -> Result<(), LabError> {
        self.mkdir_cgroup(&self.cgroup.clone())?;
        let router = self.add_netns("router")?;
        sysctl(&router, "net.ipv4.ip_forward", "1")?;
        for node in self.spec.nodes.clone() {
            self.build_node(&router, &node)?;
        }
        self.build_control_plane(&router)?;
        for node in self.spec.nodes.clone() {
            self.build_overlay(&node)?;
        }
        for pod in self.spec.pods.clone() {
            self.build_pod(&pod)?;
        }
        for node in self.spec.nodes.clone() {
            let kubelet = self.kubelet_cgroup(&node.name);
            self.mkdir_cgroup(&kubelet)?;
            if node.ambient_probe_snat {
                self.install_probe_snat(&node)?;
            }
        }
        let inv = serde_json::to_string_pretty(&inventory(&self.name, &self.spec)).unwrap_or_default();
        let path = self.inventory_path();
        std::fs::write(&path, inv).map_err(LabError::io(format!("writing {}", path.display())))?;
        Ok(())
    }

    fn build_node(&mut self, router: &str, node: &NodeSpec) -> Result<(), LabError> {
        let ns = self.add_netns(&node.name)?;
        sysctl(&ns, "net.ipv4.ip_forward", "1")?;
        // Uplink: a veth from the router to the node's eth0.
        let router_if = format!("to-{}", hex_id(&node.name, 6));
        cmd::run(
            "ip",
            &["-n", router, "link", "add", &router_if, "type", "veth", "peer", "name", "eth0", "netns", &ns],
        )?;
        if let Some(mtu) = node.underlay_mtu {
            let mtu = mtu.to_string();
            cmd::run("ip", &["-n", router, "link", "set", &router_if, "mtu", &mtu])?;
            cmd::run("ip", &["-n", &ns, "link", "set", "eth0", "mtu", &mtu])?;
        }
        cmd::run("ip", &["-n", router, "addr", "add", &format!("{}/24", node.router_ip), "dev", &router_if])?;
        cmd::run("ip", &["-n", router, "link", "set", &router_if, "up"])?;
        cmd::run("ip", &["-n", &ns, "addr", "add", &format!("{}/24", node.uplink_ip), "dev", "eth0"])?;
        cmd::run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
        let (v4_routes, v6_routes) = self.uplink_destinations(node);
        for dst in &v4_routes {
            cmd::run("ip", &["-n", &ns, "route", "add", dst, "via", &node.router_ip.to_string()])?;
        }
        // Over an overlay the router knows only the uplinks: pod traffic reaches it encapsulated.
        if self.spec.overlay == Overlay::None {
            cmd::run(
                "ip",
                &["-n", router, "route", "add", &node.pod_cidr_string(), "via", &node.uplink_ip.to_string()],
            )?;
        }
        if let (Some(up6), Some(rt6), Some((net6, len6))) = (node.uplink_ip6, node.router_ip6, node.pod_cidr6) {
            sysctl(router, "net.ipv6.conf.all.forwarding", "1")?;
            sysctl(&ns, "net.ipv6.conf.all.forwarding", "1")?;
            // nodad: addresses usable at once (no duplicate-address-detection delay).
            cmd::run("ip", &["-n", router, "addr", "add", &format!("{rt6}/64"), "dev", &router_if, "nodad"])?;
            cmd::run("ip", &["-n", &ns, "addr", "add", &format!("{up6}/64"), "dev", "eth0", "nodad"])?;
            for dst in &v6_routes {
                cmd::run("ip", &["-n", &ns, "-6", "route", "add", dst, "via", &rt6.to_string()])?;
            }
            if !self.spec.overlay.carries_ipv6() {
                cmd::run(
                    "ip",
                    &["-n", router, "-6", "route", "add", &format!("{net6}/{len6}"), "via", &up6.to_string()],
                )?;
            }
        }
        if node.pod_attachment == PodAttachment::Routed {
            // Calico: no bridge; a /32 per pod (added with the pod) and a blackhole for the rest
            // of the node's block.
            cmd::run("ip", &["-n", &ns, "route", "add", "blackhole", &node.pod_cidr_string()])?;
            if let Some((net6, len6)) = node.pod_cidr6 {
                cmd::run("ip", &["-n", &ns, "-6", "route", "add", "blackhole", &format!("{net6}/{len6}")])?;
            }
            return self.install_kube_proxy(&ns);
        }
        // The CNI bridge, like cni0 of the bridge plugin.
        cmd::run("ip", &["-n", &ns, "link", "add", "cni0", "type", "bridge"])?;
        cmd::run(
            "ip",
            &["-n", &ns, "addr", "add", &format!("{}/{}", node.bridge_ip(), node.pod_cidr.1), "dev", "cni0"],
        )?;
        if let (Some(bridge6), Some((_, len6))) = (node.bridge_ip6(), node.pod_cidr6) {
            cmd::run("ip", &["-n", &ns, "addr", "add", &format!("{bridge6}/{len6}"), "dev", "cni0", "nodad"])?;
        }
        cmd::run("ip", &["-n", &ns, "link", "set", "cni0", "up"])?;
        // Bridged pod-to-pod traffic goes through iptables, as kubeadm requires (br_netfilter).
        let _ = sysctl(&ns, "net.bridge.bridge-nf-call-iptables", "1");
        let _ = sysctl(&ns, "net.bridge.bridge-nf-call-ip6tables", "1");
        self.install_kube_proxy(&ns)
    }

    fn install_kube_proxy(&self, ns: &str) -> Result<(), LabError> {
        let services: Vec<_> = self
            .spec
            .services
            .iter()
            .flat_map(|svc| {
                let endpoint = self.spec.endpoints(svc).first().copied();
                svc.ports.iter().filter_map(move |p| {
                    endpoint.map(|ep| {
                        (
                            format!("{}/{}:{}", svc.namespace, svc.name, p.name),
                            svc.cluster_ip,
                            p.port,
                            ep,
                            p.target_port,
                        )
                    })
                })
            })
            .collect();
        in_netns_with_input(ns, "iptables-restore", &["-w", "--noflush"], &kube_proxy_rules(&services))?;
        Ok(())
    }

    fn build_pod(&mut self, pod: &PodSpec) -> Result<(), LabError> {
        let node = self.spec.node(&pod.node).cloned().ok_or_else(|| LabError::NoSuchNode(pod.node.clone()))?;
        let node_ns = self.node_netns(&pod.node);
        let ns = self.add_netns(&pod.app)?;
        let host_if = self.host_veth(pod);
        cmd::run(
            "ip",
            &["-n", &node_ns, "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &ns],
        )?;
        match node.pod_attachment {
            PodAttachment::Bridge => {
                cmd::run("ip", &["-n", &node_ns, "link", "set", &host_if, "master", "cni0"])?;
                cmd::run("ip", &["-n", &node_ns, "link", "set", &host_if, "up"])?;
                let addr = format!("{}/{}", pod.ip, node.pod_cidr.1);
                cmd::run("ip", &["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
                cmd::run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
                cmd::run("ip", &["-n", &ns, "route", "add", "default", "via", &node.bridge_ip().to_string()])?;
                if let (Some(ip6), Some(bridge6), Some((_, len6))) = (pod.ip6, node.bridge_ip6(), node.pod_cidr6) {
                    cmd::run("ip", &["-n", &ns, "addr", "add", &format!("{ip6}/{len6}"), "dev", "eth0", "nodad"])?;
                    cmd::run("ip", &["-n", &ns, "-6", "route", "add", "default", "via", &bridge6.to_string()])?;
                }
            }
            PodAttachment::Routed => self.route_pod(&node_ns, &ns, &host_if, pod)?,
        }
        if pod.sidecar {
            in_netns_with_input(&ns, "iptables-restore", &["-w"], &istio_iptables_rules())?;
        }
        for (container, id) in container_ids(&self.name, pod) {
            let cg = self.container_cgroup(pod, &id);
            self.mkdir_cgroup(&cg)?;
            let placement =
                Placement { netns: &ns, cgroup: &cg, uid: (container == "istio-proxy").then_some(PROXY_UID) };
            let what = format!("{}/{container}", pod.key());
            let log = self.state.dir.join(format!("{}-{container}.log", pod.app));
            let child = if container == "istio-proxy" {
                spawn_ready(&what, &placement, &self.tools.lab_pod, &["proxy", &pod.app], &log)?
            } else {
                let ports: Vec<String> = pod.ports.iter().map(u16::to_string).collect();
                let mut args = vec!["serve", pod.app.as_str()];
                args.extend(ports.iter().map(String::as_str));
                spawn_ready(&what, &placement, &self.tools.lab_pod, &args, &log)?
            };
            self.state.pids.push(child.id());
            self.children.push(child);
        }
        Ok(())
    }

    /// A pod's container's cgroup, under its node's.
    fn container_cgroup(&self, pod: &PodSpec, container_id: &str) -> PathBuf {
        container_cgroup(&self.node_cgroup(&pod.node), &pod_uid(&self.name, pod), container_id)
    }

    /// The cgroup the node's kubelet stand-in runs in (under the node's, as systemd places it).
    fn kubelet_cgroup(&self, node: &str) -> PathBuf {
        self.node_cgroup(node).join("system.slice/kubelet.service")
    }

    fn add_netns(&mut self, short: &str) -> Result<String, LabError> {
        let ns = format!("{}-{short}", self.name);
        cmd::run("ip", &["netns", "add", &ns])?;
        self.state.netns.push(ns.clone());
        cmd::run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn mkdir_cgroup(&mut self, path: &Path) -> Result<(), LabError> {
        let mut missing = Vec::new();
        let mut p = path.to_path_buf();
        while !p.exists() {
            missing.push(p.clone());
            if !p.pop() {
                break;
            }
        }
        for dir in missing.into_iter().rev() {
            std::fs::create_dir(&dir).map_err(LabError::io(format!("creating cgroup {}", dir.display())))?;
            self.state.cgroups.push(dir);
        }
        Ok(())
    }

    /// Adds a pod to a running lab (a new veth appears on its node, like a pod being scheduled).
    pub fn add_pod(&mut self, pod: PodSpec) -> Result<(), LabError> {
        self.spec.pods.push(pod.clone());
        self.build_pod(&pod)
    }

    /// Name of the node-side veth of a pod (as the bridge CNI names them: `veth` + 8 hex;
    /// Calico: `cali` + 11 hex).
    pub fn host_veth(&self, pod: &PodSpec) -> String {
        let seed = format!("{}/{}", self.name, pod.key());
        match self.spec.node(&pod.node).map(|n| n.pod_attachment) {
            Some(PodAttachment::Routed) => format!("cali{}", hex_id(&seed, 11)),
            _ => format!("veth{}", hex_id(&seed, 8)),
        }
    }

    /// Network namespace name of a node (e.g. for `observer trace --netns`).
    pub fn node_netns(&self, node: &str) -> String {
        format!("{}-{node}", self.name)
    }

    pub fn pod(&self, app: &str) -> Result<&PodSpec, LabError> {
        self.spec.pod(app).ok_or_else(|| LabError::NoSuchPod(app.to_string()))
    }

    /// Network namespace name of a pod (by its `app` label).
    pub fn pod_netns(&self, app: &str) -> Result<String, LabError> {
        Ok(format!("{}-{}", self.name, self.pod(app)?.app))
    }

    /// The lab's cgroup: the parent of every node's cgroup ([`Lab::node_cgroup`]).
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// A node's cgroup, the parent of its `kubepods.slice`: what a real node's cgroup root holds.
    /// The lab's nodes share one kernel, so an agent that stands for one node watches this
    /// (`--cgroup-root`): the lab's cgroup would show it the other nodes' pods' sockets too.
    pub fn node_cgroup(&self, node: &str) -> PathBuf {
        self.cgroup.join(node)
    }

    /// The inventory file (Kubernetes `List` JSON).
    pub fn inventory_path(&self) -> PathBuf {
        self.state.dir.join("inventory.json")
    }

    /// One connection attempt from the pod's application container (captured by its sidecar).
    pub fn connect(&self, app: &str, target: SocketAddr, timeout: Duration) -> Result<ConnectOutcome, LabError> {
        self.connect_from(app, target, timeout, false)
    }

    /// One connection attempt from the pod's istio-proxy container as uid 1337 (not captured),
    /// like pilot-agent's xDS connection to istiod.
    pub fn connect_as_proxy(
        &self,
        app: &str,
        target: SocketAddr,
        timeout: Duration,
    ) -> Result<ConnectOutcome, LabError> {
        self.connect_from(app, target, timeout, true)
    }

    /// [`Lab::connect_as_proxy`] asking for `bytes` bytes of reply (the lab's servers answer
    /// `bulk N` with N bytes): large segments from the server, as TLS certificates or xDS are.
    pub fn connect_as_proxy_bulk(
        &self,
        app: &str,
        target: SocketAddr,
        timeout: Duration,
        bytes: usize,
    ) -> Result<ConnectOutcome, LabError> {
        self.connect_sending(app, target, timeout, true, Some(&format!("bulk:{bytes}")))
    }

    fn connect_from(
        &self,
        app: &str,
        target: SocketAddr,
        timeout: Duration,
        proxy: bool,
    ) -> Result<ConnectOutcome, LabError> {
        self.connect_sending(app, target, timeout, proxy, None)
    }

    fn connect_sending(
        &self,
        app: &str,
        target: SocketAddr,
        timeout: Duration,
        proxy: bool,
        request: Option<&str>,
    ) -> Result<ConnectOutcome, LabError> {
        let pod = self.pod(app)?;
        let ns = self.pod_netns(app)?;
        let ids = container_ids(&self.name, pod);
        let (_, id) = ids
            .iter()
            .find(|(c, _)| (c == "istio-proxy") == proxy)
            .ok_or_else(|| LabError::NoSuchPod(format!("{app} (no istio-proxy container)")))?;
        let cg = self.container_cgroup(pod, id);
        let placement = Placement { netns: &ns, cgroup: &cg, uid: proxy.then_some(PROXY_UID) };
        let ms = timeout.as_millis().to_string();
        let target_text = target.to_string();
        let mut args = vec!["connect", target_text.as_str(), ms.as_str()];
        args.extend(request);
        let out = run_bounded(&placement, &self.tools.lab_pod, &args, timeout * 2 + Duration::from_secs(2))?;
        serde_json::from_str(out.trim())
            .map_err(|e| LabError::NotReady { what: format!("connect from {app}"), detail: format!("{e}: {out}") })
    }

    /// Sends one crafted datagram from the pod's application container: `lab-pod send` arguments
    /// (`["udp", "IP:PORT", HEX]` or `["ip", IPV4, PROTOCOL, HEX]`), e.g. a tunnel's outer packet.
    pub fn send_from(&self, app: &str, args: &[&str]) -> Result<(), LabError> {
        let pod = self.pod(app)?;
        let ns = self.pod_netns(app)?;
        let ids = container_ids(&self.name, pod);
        let (_, id) = ids
            .iter()
            .find(|(c, _)| c != "istio-proxy")
            .ok_or_else(|| LabError::NoSuchPod(format!("{app} (no application container)")))?;
        let cg = self.container_cgroup(pod, id);
        let placement = Placement { netns: &ns, cgroup: &cg, uid: None };
        let mut all = vec!["send"];
        all.extend_from_slice(args);
        run_bounded(&placement, &self.tools.lab_pod, &all, Duration::from_secs(5)).map(drop)
    }

    /// A kubelet-style probe: one connection attempt from the node's own namespace (a process in
    /// the node's kubelet cgroup), as root.
    pub fn probe_from_node(
        &self,
        node: &str,
        target: SocketAddr,
        timeout: Duration,
    ) -> Result<ConnectOutcome, LabError> {
        self.spec.node(node).ok_or_else(|| LabError::NoSuchNode(node.to_string()))?;
        let ns = self.node_netns(node);
        let cg = self.kubelet_cgroup(node);
        let placement = Placement { netns: &ns, cgroup: &cg, uid: None };
        let ms = timeout.as_millis().to_string();
        let target_text = target.to_string();
        let out = run_bounded(
            &placement,
            &self.tools.lab_pod,
            &["connect", &target_text, &ms],
            timeout * 2 + Duration::from_secs(2),
        )?;
        serde_json::from_str(out.trim())
            .map_err(|e| LabError::NotReady { what: format!("probe from {node}"), detail: format!("{e}: {out}") })
    }

    /// Installs a firewall rule in a node's network namespace.
    pub fn inject(&self, node: &str, rule: &FirewallRule) -> Result<(), LabError> {
        self.spec.node(node).ok_or_else(|| LabError::NoSuchNode(node.to_string()))?;
        let ns = self.node_netns(node);
        self.inject_in_netns(&ns, rule)
    }

    /// Installs a firewall rule in any of the lab's namespaces (a pod's, the router's).
    pub fn inject_in_netns(&self, ns: &str, rule: &FirewallRule) -> Result<(), LabError> {
        match rule.backend {
            Backend::Nftables => in_netns_with_input(ns, "nft", &["-f", "-"], &rule.nft_script()).map(drop),
            Backend::IptablesNft | Backend::IptablesLegacy => {
                let (program, args) = rule.iptables_args();
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                in_netns(ns, program, &args).map(drop)
            }
        }
    }

    /// Runs a firewall tool (`iptables`, `iptables-legacy`, `ip6tables`, ...) in a node's
    /// namespace, for rulesets richer than a [`FirewallRule`] (user chains, comments, policies).
    pub fn firewall(&self, node: &str, program: &str, args: &[&str]) -> Result<(), LabError> {
        self.spec.node(node).ok_or_else(|| LabError::NoSuchNode(node.to_string()))?;
        in_netns(&self.node_netns(node), program, args).map(drop)
    }

    /// Loads an `nft -f` script in any of the lab's namespaces (e.g. `<lab>-router`).
    pub fn nft_in_netns(&self, ns: &str, script: &str) -> Result<(), LabError> {
        in_netns_with_input(ns, "nft", &["-f", "-"], script).map(drop)
    }

    /// Loads an `nft -f` script in a node's namespace.
    pub fn nft(&self, node: &str, script: &str) -> Result<(), LabError> {
        self.spec.node(node).ok_or_else(|| LabError::NoSuchNode(node.to_string()))?;
        in_netns_with_input(&self.node_netns(node), "nft", &["-f", "-"], script).map(drop)
    }

    /// Leaves the lab running and returns its state file (`cargo xtask lab up`).
    pub fn persist(mut self) -> Result<PathBuf, LabError> {
        let path = self.state.save()?;
        self.persisted = true;
        Ok(path)
    }

    /// Tears the lab down now, reporting errors (Drop does the same silently).
    pub fn down(mut self) -> Result<(), LabError> {
        self.persisted = true;
        self.teardown()
    }

    fn teardown(&mut self) -> Result<(), LabError> {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.state.teardown()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.persisted {
            if let Err(err) = self.teardown() {
                eprintln!("lab {}: teardown: {err}", self.name);
            }
        }
    }
}

fn sysctl(ns: &str, key: &str, value: &str) -> Result<(), LabError> {
    in_netns(ns, "sysctl", &["-qw", &format!("{key}={value}")]).map(drop)
}
