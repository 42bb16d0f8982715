//! Between nodes, through the Kubernetes API: two lab nodes with an agent each and the test API
//! server. A silent handshake from node-a's cart to node-b's catalog is located from node-b's
//! answer: lost between the nodes (the router drops the SYN), at the destination node (node-b's
//! FORWARD rule, named), or on the way back (the router drops the SYN-ACK); a webhook call from
//! the control-plane namespace behind the router that the router dropped is `before-node`;
//! healthy traffic asks nothing.
//!
//! Each scenario is a function of the lab's spec, so that it runs on the routed underlay here
//! and on each overlay variant with one more test of one line.
// Test helpers below fail loudly with context (STYLE: tests panic with context).
#![allow(clippy::expect_used, clippy::panic)]

mod support;

use std::{
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use observer_lab::{FirewallRule, Hook, Lab, LabSpec, Overlay, PodSpec};
use serde_json::{json, Value};
use support::agents::{free_port, http, metric, start_agent, tempdir, wait_finding, wait_until, ApiServer, Proc};
use support::{overlay_lab, require_root};

/// A lab with the API server and an agent on each of its two nodes, both ready.
/// Fields drop in order: the agents stop before the API server and the lab go.
struct TwoNodes {
    a: Proc,
    /// None: node-b's agent is not running (it cannot answer).
    b: Option<Proc>,
    api: ApiServer,
    lab: Lab,
    port_a: u16,
    port_b: u16,
    /// When the last connect attempt ended (for the time-to-path the test prints).
    connected: std::cell::Cell<Option<Instant>>,
}

impl TwoNodes {
    /// `None` (the test is skipped, saying why) when the kernel cannot build the spec's overlay.
    fn up(spec: LabSpec, tag: &str) -> Option<Self> {
        Self::with_agents(spec, tag, true)
    }

    fn with_agents(spec: LabSpec, tag: &str, on_b: bool) -> Option<Self> {
        let lab = overlay_lab(spec)?;
        let dir = tempdir(tag);
        let api = ApiServer::start(&lab, &dir, free_port(), 1000);
        let (port_a, port_b) = (free_port(), free_port());
        let a = start_agent(&lab, &api, "node-a", port_a);
        let b = on_b.then(|| start_agent(&lab, &api, "node-b", port_b));
        a.wait_line("ready: attached and inventory synced", Duration::from_secs(90));
        if let Some(b) = &b {
            b.wait_line("ready: attached and inventory synced", Duration::from_secs(90));
        }
        // The agents' Event watches list first; the flow memory must cover the slack before the
        // first SYN (a window starting before the agent watched is answered as incomplete).
        thread::sleep(Duration::from_secs(6));
        Some(Self { a, b, api, lab, port_a, port_b, connected: std::cell::Cell::new(None) })
    }

    fn pod(&self, app: &str) -> PodSpec {
        self.lab.pod(app).expect("pod").clone()
    }

    /// Drops, at the router, the TCP segments of the pod flow that match `what` (see
    /// [`inner_tcp`]) however they cross the underlay.
    fn drop_at_router(&self, what: &str) {
        let script = format!(
            "table inet crossnode_fault {{\n  chain lab_forward {{\n    type filter hook forward priority 0; policy accept;\n    {what} drop\n  }}\n}}\n"
        );
        self.lab.nft_in_netns(&self.router(), &script).expect("router rule");
    }

    fn router(&self) -> String {
        format!("{}-router", self.lab.name)
    }

    fn metrics(&self, port: u16) -> String {
        http(port, "/metrics").1
    }

    fn crossnode(&self, port: u16, message: &str, result: &str) -> f64 {
        let text = self.metrics(port);
        metric(
            &text,
            "observer_crossnode_messages_total{",
            &[&format!("message=\"{message}\""), &format!("result=\"{result}\"")],
        )
        .unwrap_or(0.0)
    }

    /// cart (node-a) -> catalog:`port` (node-b), one attempt that times out.
    fn cart_to_catalog_times_out(&self, port: u16) {
        let catalog = self.pod("catalog");
        let out = self
            .lab
            .connect("cart", SocketAddr::from((catalog.ip, port)), Duration::from_millis(3000))
            .expect("connect");
        assert_eq!(out.result, "timeout", "{out:?}");
        self.connected.set(Some(Instant::now()));
    }

    fn since_connect(&self) -> f64 {
        self.connected.get().map_or(0.0, |t| t.elapsed().as_secs_f64())
    }

    /// node-a's finding about cart -> catalog once its path is decided.
    fn located(&self) -> Value {
        let (cart, catalog) = (self.pod("cart"), self.pod("catalog"));
        let start = Instant::now();
        let f = loop {
            let found = findings(self.port_a).into_iter().find(|f| {
                f["src"]["pod"] == cart.key().as_str()
                    && f["dst"]["pod"] == catalog.key().as_str()
                    && f["path"].is_object()
            });
            if let Some(f) = found {
                break f;
            }
            assert!(
                start.elapsed() < Duration::from_secs(40),
                "no located finding within 40 s; node-a: {:#?}\nnode-a's log:\n{}\nnode-b's log:\n{}",
                findings(self.port_a),
                self.a.stderr(),
                self.b.as_ref().map(Proc::stderr).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(250));
        };
        assert_eq!(f["node"], "node-a", "{f:#}");
        assert_eq!(f["mechanism"], "silent", "node-a saw no drop of its own: {f:#}");
        let p = &f["path"];
        assert_eq!((p["from_node"].as_str(), p["to_node"].as_str()), (Some("node-a"), Some("node-b")), "{f:#}");
        assert_eq!(self.crossnode(self.port_a, "inquiry", "sent"), 1.0, "one inquiry for the flow");
        if self.b.is_some() {
            assert_eq!(self.crossnode(self.port_b, "inquiry", "received"), 1.0);
            assert_eq!(self.crossnode(self.port_b, "answer", "sent"), 1.0);
            assert_eq!(self.crossnode(self.port_a, "answer", "received"), 1.0);
        }
        eprintln!("located {:.1} s after the connect ended", self.since_connect());
        f
    }

    /// node-a's Event on cart carries the path in its note (written once the path was decided).
    /// node-b's agent may write its own about the same pod (a drop it saw itself).
    fn event_note(&self) -> String {
        let cart = self.pod("cart");
        let e = wait_until("node-a's Event on cart", Duration::from_secs(20), || {
            self.api
                .observer_events(&cart.namespace)
                .into_iter()
                .find(|e| e["regarding"]["name"] == cart.name.as_str() && e["reportingInstance"] == "node-a")
        });
        e["note"].as_str().expect("note").to_string()
    }
}

fn between_nodes(spec: LabSpec, uplink: &str) {
    let overlay = spec.overlay;
    let Some(n) = TwoNodes::up(spec, "between") else { return };
    n.drop_at_router(&inner_tcp(overlay, None, Some(8080), Flags::Syn));
    n.cart_to_catalog_times_out(8080);
    let f = n.located();
    let p = &f["path"];
    assert_eq!(p["location"], "between-nodes", "{f:#}");
    let source = &p["source"];
    assert_eq!(source["node"], "node-a", "{f:#}");
    assert_eq!(source["hook"], "tc-egress", "{f:#}");
    assert_eq!(source["interface"], uplink, "node-a's egress interface: {f:#}");
    assert!(source["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{f:#}");
    assert!(p["destination"].is_null(), "node-b never saw it: {f:#}");
    assert!(f["culprit"].is_null() && p["culprit"].is_null(), "no rule blamed on either node: {f:#}");
    let note = n.event_note();
    assert!(note.contains("path: between-nodes"), "{note}");
    drop(n);
}

fn at_destination_node(spec: LabSpec) {
    let Some(n) = TwoNodes::up(spec, "atdest") else { return };
    let catalog = n.pod("catalog");
    n.lab.inject("node-b", &FirewallRule::drop_tcp_to(Hook::Forward, catalog.ip.into(), 8080)).expect("rule");
    n.cart_to_catalog_times_out(8080);
    let f = n.located();
    let p = &f["path"];
    assert_eq!(p["location"], "at-destination-node", "{f:#}");
    assert_eq!(p["drop_reason"], "NETFILTER_DROP", "{f:#}");
    assert_eq!(p["destination"]["node"], "node-b", "{f:#}");
    assert_eq!(
        p["culprit"]["rule"],
        format!("-A FORWARD -d {}/32 -p tcp -m tcp --dport 8080 -j DROP", catalog.ip),
        "node-b's culprit rule, named on node-a's finding: {f:#}"
    );
    assert_eq!(p["culprit"]["chain"], "FORWARD", "{f:#}");
    assert!(f["culprit"].is_null(), "no rule of node-a is blamed: {f:#}");
    let note = n.event_note();
    assert!(note.contains("path: at-destination-node (node-b dropped the request"), "{note}");
    assert!(note.contains("--dport 8080 -j DROP"), "{note}");
    drop(n);
}

/// Which handshake segment a router rule matches.
#[derive(Clone, Copy)]
enum Flags {
    /// A SYN (no ACK): the request.
    Syn,
    /// A SYN-ACK: the reply.
    SynAck,
}

/// An nft match for a TCP segment of the pod flow as the router sees it: the routed segment
/// itself, or, inside a VXLAN/Geneve (outer UDP) or IPIP (outer IPv4) packet, the inner TCP
/// header at its fixed offset (outer and inner IPv4 without options, no Geneve options: the lab's
/// overlays). Raw payload offsets are in bits: VXLAN/Geneve: UDP 8 + header 8 + Ethernet 14 +
/// IPv4 20 = the inner TCP header 50 bytes after the outer transport header; IPIP: outer IPv4
/// 20 + inner IPv4 20 = 40 bytes after the outer network header.
fn inner_tcp(overlay: Overlay, sport: Option<u16>, dport: Option<u16>, flags: Flags) -> String {
    let bits = match flags {
        Flags::Syn => "0x02",
        Flags::SynAck => "0x12",
    };
    let (carrier, base, at) = match overlay {
        Overlay::None => {
            let mut m = String::from("meta l4proto tcp");
            if let Some(p) = sport {
                m += &format!(" tcp sport {p}");
            }
            if let Some(p) = dport {
                m += &format!(" tcp dport {p}");
            }
            return format!("{m} tcp flags & (syn | ack) == {bits}");
        }
        Overlay::Vxlan | Overlay::Geneve => {
            (format!("udp dport {}", overlay.udp_port().expect("UDP overlay")), "th", 50 * 8)
        }
        Overlay::Ipip => ("ip protocol 4".to_string(), "nh", 40 * 8),
    };
    let mut m = carrier;
    if let Some(p) = sport {
        m += &format!(" @{base},{at},16 {p}");
    }
    if let Some(p) = dport {
        m += &format!(" @{base},{},16 {p}", at + 16);
    }
    format!("{m} @{base},{},8 & 0x12 == {bits}", at + 13 * 8)
}

/// A listener in a pod's network namespace, opened by this test process (outside every lab
/// cgroup: no agent's cgroup hooks see its socket, only the TC hooks its SYN-ACK crosses).
fn listen_in(netns: &str, port: u16) -> TcpListener {
    let path = format!("/run/netns/{netns}");
    thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("netns");
        // SAFETY: setns on this thread only, with a namespace file descriptor we hold open.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}");
        TcpListener::bind(("0.0.0.0", port)).expect("listen")
    })
    .join()
    .expect("listener thread")
}

fn no_answer(spec: LabSpec) {
    let overlay = spec.overlay;
    let Some(n) = TwoNodes::with_agents(spec, "noanswer", false) else { return };
    n.drop_at_router(&inner_tcp(overlay, None, Some(8080), Flags::Syn));
    n.cart_to_catalog_times_out(8080);
    let f = n.located();
    let p = &f["path"];
    assert_eq!(p["location"], "unknown", "node-b's agent is down: no guess: {f:#}");
    assert!(p["explanation"].as_str().is_some_and(|e| e.contains("no answer from node-b")), "{f:#}");
    assert!(p["destination"].is_null() && p["culprit"].is_null() && f["culprit"].is_null(), "{f:#}");
    assert_eq!(p["source"]["node"], "node-a", "what node-a itself saw is still said: {f:#}");
    assert_eq!(n.crossnode(n.port_a, "answer", "timed_out"), 1.0);
    assert_eq!(n.crossnode(n.port_a, "answer", "received"), 0.0);
    assert!(n.event_note().contains("path: unknown"));
    drop(n);
}

fn reply_lost(spec: LabSpec, uplink: &str) {
    let overlay = spec.overlay;
    let Some(n) = TwoNodes::up(spec, "reply") else { return };
    let _server = listen_in(&n.lab.pod_netns("catalog").expect("netns"), 18080);
    n.drop_at_router(&inner_tcp(overlay, Some(18080), None, Flags::SynAck));
    n.cart_to_catalog_times_out(18080);
    let f = n.located();
    let p = &f["path"];
    assert_eq!(p["location"], "reply-lost", "{f:#}");
    let d = &p["destination"];
    assert_eq!((d["node"].as_str(), d["hook"].as_str()), (Some("node-b"), Some("tc-egress")), "{f:#}");
    assert_eq!(d["interface"], uplink, "where node-b's SYN-ACK left it: {f:#}");
    assert_eq!(p["source"]["node"], "node-a", "{f:#}");
    assert!(f["culprit"].is_null() && p["culprit"].is_null(), "{f:#}");
    assert!(n.event_note().contains("path: reply-lost"));
    drop(n);
}

/// The findings an agent reports now.
fn findings(port: u16) -> Vec<Value> {
    let body = http(port, "/findings").1;
    let report: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("/findings ({e}): {body}"));
    report["findings"].as_array().cloned().unwrap_or_else(|| panic!("/findings: {body}"))
}

/// RFC 3339 UTC with microseconds (what `eventTime` takes).
fn now_rfc3339() -> String {
    let out = Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%S.%6NZ"]).output().expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The Event kube-controller-manager writes when the injection webhook timed out.
fn failed_create(n: &TwoNodes, name: &str, istiod: IpAddr) -> Value {
    let note = format!(
        "Error creating: Internal error occurred: failed calling webhook \"namespace.sidecar-injector.istio.io\": failed to call webhook: Post \"https://istiod.istio-system.svc:443/inject?timeout=3s\": dial tcp {istiod}:15017: i/o timeout"
    );
    failed_create_with(n, name, &note)
}

/// A `FailedCreate` Warning Event with `note`.
fn failed_create_with(n: &TwoNodes, name: &str, note: &str) -> Value {
    let event = json!({
        "metadata": {"name": name, "namespace": "bookinfo"},
        "eventTime": now_rfc3339(), "reportingController": "replicaset-controller",
        "reportingInstance": "kube-controller-manager", "action": "Create", "reason": "FailedCreate",
        "type": "Warning", "note": note,
        "regarding": {"apiVersion": "apps/v1", "kind": "ReplicaSet", "namespace": "bookinfo", "name": "ratings-v1-6f8d9c7b5"}
    });
    n.api.call("POST", "/apis/events.k8s.io/v1/namespaces/bookinfo/events", Some(&event))
}

/// The API server's call from outside every node: one connect to istiod's webhook port from the
/// lab's control-plane namespace (a managed API server's network behind the router).
fn call_from_outside(n: &TwoNodes, istiod: IpAddr) -> String {
    let target = SocketAddr::from((istiod, 15017));
    n.lab
        .connect_from_control_plane(target, Duration::from_millis(3000))
        .expect("connect from the control plane")
        .result
}

fn before_node(spec: LabSpec) {
    let Some(n) = TwoNodes::up(spec.with_control_plane(), "before") else { return };
    let cp = n.lab.spec.control_plane.clone().expect("control plane");
    let istiod = n.pod("istiod");
    let ip = IpAddr::from(istiod.ip);
    // A slow webhook whose SYN did arrive: the same timeout message is no evidence of a loss
    // before the node.
    assert_eq!(call_from_outside(&n, ip), "ok", "the control plane reaches istiod's pod through the router");
    failed_create(&n, "ratings-v1-6f8d9c7b5.arrived", ip);
    wait_until("the arrived call judged", Duration::from_secs(20), || {
        (n.crossnode(n.port_b, "webhook", "not_before_node") >= 1.0).then_some(())
    });
    assert_eq!(findings(n.port_b), Vec::<Value>::new(), "a SYN arrived: not before-node");
    // Another admission webhook (a policy engine's, served by a pod of node-b) timed out and no
    // SYN of it arrived: no Istio requirement, not judged, whatever the network did.
    let catalog = n.pod("catalog");
    let other = format!(
        "Error creating: admission webhook \"validate.kyverno.svc-fail\" denied the request: failed calling webhook \"validate.kyverno.svc-fail\": failed to call webhook: Post \"https://kyverno-svc.kyverno.svc:443/validate/fail?timeout=10s\": dial tcp {}:9443: i/o timeout",
        catalog.ip
    );
    failed_create_with(&n, "ratings-v1-6f8d9c7b5.kyverno", &other);
    wait_until("the other webhook's timeout seen", Duration::from_secs(30), || {
        (n.crossnode(n.port_b, "webhook", "not_istio") >= 1.0).then_some(())
    });
    assert_eq!(findings(n.port_b), Vec::<Value>::new(), "not Istio's webhook: no R5");
    // Out of that call's window, the network between the control plane and the nodes (the
    // router's FORWARD chain, a cloud firewall) drops 15017 to istiod.
    thread::sleep(Duration::from_secs(9));
    n.lab.inject_in_netns(&n.router(), &FirewallRule::drop_tcp_to(Hook::Forward, ip, 15017)).expect("router rule");
    assert_eq!(call_from_outside(&n, ip), "timeout");
    failed_create(&n, "ratings-v1-6f8d9c7b5.lost", ip);
    let f = wait_finding(n.port_b, Duration::from_secs(20), |f| f["path"]["location"] == "before-node");
    assert_eq!((f["requirement"].as_str(), f["kind"].as_str()), (Some("R5"), Some("control-plane-blocked")), "{f:#}");
    assert_eq!(f["mechanism"], "silent", "{f:#}");
    assert_eq!(f["node"], "node-b", "{f:#}");
    assert_eq!(f["dst"]["pod"], istiod.key().as_str(), "{f:#}");
    assert_eq!(f["dst"]["port"], 15017, "{f:#}");
    assert_eq!(f["src"]["service"], "default/kubernetes", "{f:#}");
    // The caller: the control plane's address, from the `kubernetes` endpoints the API serves.
    assert_eq!(f["src"]["ip"], cp.address.to_string(), "{f:#}");
    assert_eq!(f["path"]["apiserver"], json!([format!("{}:6443", cp.address)]), "{f:#}");
    assert_eq!(f["path"]["to_node"], "node-b", "{f:#}");
    assert_eq!(f["path"]["reported_by"], "bookinfo/ratings-v1-6f8d9c7b5.lost", "{f:#}");
    assert!(f["culprit"].is_null(), "no rule of node-b is blamed: {f:#}");
    assert_eq!(n.crossnode(n.port_b, "webhook", "before_node"), 1.0);
    assert_eq!(n.crossnode(n.port_b, "webhook", "not_before_node"), 1.0, "only the arrived call");
    // node-a has no istiod pod: it says nothing, about either call.
    assert_eq!(findings(n.port_a), Vec::<Value>::new());
    assert_eq!(n.crossnode(n.port_a, "webhook", "before_node"), 0.0);
    let e = wait_until("istiod's Event", Duration::from_secs(20), || {
        n.api.observer_events(&istiod.namespace).into_iter().find(|e| e["regarding"]["name"] == istiod.name.as_str())
    });
    assert!(e["note"].as_str().is_some_and(|t| t.contains("path: before-node")), "{e:#}");
    drop(n);
}

/// `count` connections from a pod's namespace (entered on a thread of its own), each closed at
/// once, paced (`every`) so that the lab's server (one accept loop on a shared 2-core machine)
/// keeps its accept queue short: an overflowing queue drops SYNs, which is no healthy traffic.
/// Bounded by `limit`. Returns those established.
fn connections_from(netns: &str, target: SocketAddr, count: usize, every: Duration, limit: Duration) -> usize {
    let path = format!("/run/netns/{netns}");
    thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("netns");
        // SAFETY: setns on this thread only, with a namespace file descriptor we hold open.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}");
        let start = Instant::now();
        let mut ok = 0;
        for _ in 0..count {
            if start.elapsed() > limit {
                break;
            }
            if TcpStream::connect_timeout(&target, Duration::from_secs(5)).is_ok() {
                ok += 1;
            }
            thread::sleep(every);
        }
        ok
    })
    .join()
    .expect("connections thread")
}

fn healthy(spec: LabSpec) {
    let Some(n) = TwoNodes::up(spec, "healthy") else { return };
    let catalog = n.pod("catalog");
    let netns = n.lab.pod_netns("cart").expect("netns");
    let ok = connections_from(
        &netns,
        SocketAddr::from((catalog.ip, 8080)),
        1000,
        Duration::from_millis(20),
        Duration::from_secs(90),
    );
    assert_eq!(ok, 1000, "every connection established");
    // Past the agents' conclusion of those connections (and any inquiry's window).
    thread::sleep(Duration::from_secs(5));
    for port in [n.port_a, n.port_b] {
        assert_eq!(findings(port), Vec::<Value>::new(), "node on port {port}");
        assert_eq!(n.crossnode(port, "inquiry", "sent"), 0.0, "{}", n.metrics(port));
        assert_eq!(n.crossnode(port, "inquiry", "rate_limited"), 0.0);
        assert_eq!(n.crossnode(port, "answer", "sent"), 0.0);
        assert!(n.metrics(port).contains("observer_crossnode_messages_total{message=\"inquiry\",result=\"sent\"} 0"));
    }
    let observations = metric(&n.metrics(n.port_a), "observer_observations_total", &[]).unwrap_or(0.0);
    assert!(observations >= 2000.0, "node-a saw the handshakes: {observations}");
    drop(n);
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn a_syn_dropped_between_the_nodes_is_between_nodes_naming_the_egress_interface_and_no_rule() {
    require_root();
    between_nodes(LabSpec::bookinfo(), "eth0");
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn a_syn_dropped_by_the_destination_nodes_forward_rule_names_that_node_and_rule() {
    require_root();
    at_destination_node(LabSpec::bookinfo());
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn without_the_destination_nodes_agent_the_path_is_unknown_never_a_guess() {
    require_root();
    no_answer(LabSpec::bookinfo());
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn a_syn_ack_dropped_on_its_way_back_is_reply_lost() {
    require_root();
    reply_lost(LabSpec::bookinfo(), "eth0");
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn a_webhook_call_dropped_before_the_nodes_is_before_node_on_istiods_node_only_from_evidence() {
    require_root();
    before_node(LabSpec::bookinfo());
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn healthy_cross_node_traffic_makes_no_finding_and_no_inquiry() {
    require_root();
    healthy(LabSpec::bookinfo());
}

/// The scenarios over the overlays (issue 17, acceptance 4 and 7): the router sees only outer
/// packets, so its rules match the inner TCP header inside them ([`inner_tcp`]); the last place
/// node-a saw the SYN is its uplink, where it left encapsulated.
macro_rules! over_overlay {
    ($($name:ident: $overlay:expr),+ $(,)?) => {
        $(
            mod $name {
                use super::*;

                #[test]
                #[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
                fn a_syn_dropped_between_the_nodes_is_between_nodes() {
                    require_root();
                    between_nodes(LabSpec::bookinfo().with_overlay($overlay), "eth0");
                }

                #[test]
                #[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
                fn a_syn_dropped_by_the_destination_nodes_forward_rule_names_that_node_and_rule() {
                    require_root();
                    at_destination_node(LabSpec::bookinfo().with_overlay($overlay));
                }

                #[test]
                #[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
                fn a_syn_ack_dropped_on_its_way_back_is_reply_lost() {
                    require_root();
                    reply_lost(LabSpec::bookinfo().with_overlay($overlay), "eth0");
                }

                #[test]
                #[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
                fn a_webhook_call_dropped_before_the_nodes_is_before_node_on_istiods_node_only_from_evidence() {
                    require_root();
                    before_node(LabSpec::bookinfo().with_overlay($overlay));
                }

                #[test]
                #[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
                fn healthy_cross_node_traffic_makes_no_finding_and_no_inquiry() {
                    require_root();
                    healthy(LabSpec::bookinfo().with_overlay($overlay));
                }
            }
        )+
    };
}

over_overlay!(vxlan: Overlay::Vxlan, ipip: Overlay::Ipip, geneve: Overlay::Geneve);
