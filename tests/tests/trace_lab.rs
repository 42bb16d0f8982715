//! `observer trace` against the lab: the exact 5-tuple of a pod's SYN to istiod, and the
//! NETFILTER_DROP of that flow once a node firewall blocks it.

mod support;

use std::{net::SocketAddr, time::Duration};

use observer_lab::{FirewallRule, Hook};
use support::{lab, pod_identity, require_root, Running};

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn trace_sees_the_xds_syn_and_its_netfilter_drop() {
    require_root();
    let lab = lab();
    let node_ns = lab.node_netns("node-a");
    let productpage = lab.pod("productpage").expect("pod").clone();
    let istiod = lab.pod("istiod").expect("pod").clone();
    let observer = Running::start(&["trace", "--netns", &node_ns, "--output", "json"]);
    let xds = SocketAddr::from((istiod.ip, 15012));

    // Healthy: the SYN crosses node-a with the exact 5-tuple, and istiod answers.
    let ok = lab.connect_as_proxy("productpage", xds, Duration::from_secs(3)).expect("connect");
    assert_eq!(ok.result, "ok", "{ok:?}");
    let sport = ok.local_addr().expect("local").port();
    let syn = observer.wait_for("SYN at the pod veth", Duration::from_secs(5), |v| {
        v["type"] == "packet"
            && v["hook"] == "tc-ingress"
            && v["tcp_flags"] == "SYN"
            && v["flow"]["src"] == productpage.ip.to_string()
            && v["flow"]["sport"] == sport
    });
    assert_eq!(syn["flow"]["dst"], istiod.ip.to_string());
    assert_eq!(syn["flow"]["dport"], 15012);
    assert_eq!(syn["flow"]["protocol"], "TCP");
    assert!(syn["interface"].as_str().is_some_and(|i| i.starts_with("veth")), "{syn}");
    observer.wait_for("SYN-ACK back to the pod", Duration::from_secs(5), |v| {
        v["tcp_flags"] == "SYN|ACK" && v["flow"]["dport"] == sport && v["flow"]["src"] == istiod.ip.to_string()
    });
    // No drop of this flow while healthy.
    assert!(!observer.json().iter().any(|v| v["type"] == "drop" && v["flow"]["sport"] == sport));

    // A node firewall rule drops xDS: the SYN is seen, then NETFILTER_DROP for that very flow.
    lab.inject("node-a", &FirewallRule::drop_tcp_to(Hook::Forward, istiod.ip.into(), 15012)).expect("inject");
    let blocked = lab.connect_as_proxy("productpage", xds, Duration::from_millis(1500)).expect("connect");
    assert_eq!(blocked.result, "timeout", "{blocked:?}");
    let sport = blocked.local_addr().expect("local").port();
    let drop = observer.wait_for("NETFILTER_DROP of the blocked SYN", Duration::from_secs(5), |v| {
        v["type"] == "drop" && v["flow"]["sport"] == sport
    });
    assert_eq!(drop["drop_reason"], "NETFILTER_DROP", "{drop}");
    assert_eq!(drop["hook"], "kfree_skb");
    assert_eq!(drop["flow"]["src"], productpage.ip.to_string());
    assert_eq!(drop["flow"]["dst"], istiod.ip.to_string());
    assert_eq!(drop["flow"]["dport"], 15012);
    assert_eq!(drop["interface"], "cni0", "dropped in node-a's FORWARD, arriving on the bridge: {drop}");
    let node_inode =
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(format!("/run/netns/{node_ns}")).expect("netns"));
    assert_eq!(drop["netns"], node_inode, "the drop happened in node-a's namespace");
    let lines = observer.lines();
    let (status, stderr) = observer.stop_with_stderr();
    assert!(status.success(), "observer exit {status}; output:\n{}", lines.join("\n"));
    // Per-flow state: the healthy handshake was answered, the blocked one was not.
    let summary = stderr.iter().find(|l| l.contains("handshakes")).expect("handshake summary");
    let field = |name: &str| -> u64 {
        summary
            .split_whitespace()
            .find_map(|t| t.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name}= in {summary}"))
    };
    assert!(field("answered") >= 1, "{summary}");
    assert!(field("unanswered") >= 1, "{summary}");
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn trace_ignores_drops_in_other_namespaces() {
    require_root();
    let lab = lab();
    let node_ns = lab.node_netns("node-a");
    let istiod = lab.pod("istiod").expect("pod").clone();
    // Watch node-a; the drop happens on node-b (another namespace): not reported.
    let observer = Running::start(&["trace", "--netns", &node_ns, "--output", "json", "--port", "15010"]);
    lab.inject_in_netns(
        &lab.pod_netns("istiod").expect("ns"),
        &FirewallRule::drop_tcp_to(Hook::Input, istiod.ip.into(), 15010),
    )
    .expect("inject");
    let blocked = lab
        .connect_as_proxy("productpage", SocketAddr::from((istiod.ip, 15010)), Duration::from_millis(1200))
        .expect("connect");
    assert_eq!(blocked.result, "timeout", "{blocked:?}");
    let sport = blocked.local_addr().expect("local").port();
    observer.wait_for("the SYN leaving node-a", Duration::from_secs(5), |v| {
        v["hook"] == "tc-egress" && v["interface"] == "eth0" && v["flow"]["sport"] == sport
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !observer.json().iter().any(|v| v["type"] == "drop"),
        "a drop in istiod's namespace is outside node-a: {:?}",
        observer.lines()
    );
    assert!(observer.json().iter().all(|v| v["flow"]["sport"] == 15010 || v["flow"]["dport"] == 15010));
    let status = observer.stop();
    assert!(status.success());
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn trace_ties_an_icmp_admin_prohibited_to_the_rejected_flow() {
    use observer_lab::{Backend, Verdict};
    require_root();
    let lab = lab();
    let istiod = lab.pod("istiod").expect("pod").clone();
    let productpage = lab.pod("productpage").expect("pod").clone();
    let observer =
        Running::start(&["trace", "--netns", &lab.node_netns("node-a"), "--output", "json", "--port", "15014"]);
    let mut rule = FirewallRule::drop_tcp(Hook::Forward, 15014);
    rule.backend = Backend::Nftables;
    rule.verdict = Verdict::RejectAdminProhibited;
    lab.inject("node-a", &rule).expect("inject");
    let out = lab
        .connect_as_proxy("productpage", SocketAddr::from((istiod.ip, 15014)), Duration::from_secs(2))
        .expect("connect");
    assert_eq!(out.result, "unreachable", "{out:?}");
    let sport = out.local_addr().expect("local").port();
    let icmp = observer.wait_for("the ICMP error back to productpage", Duration::from_secs(5), |v| {
        v["type"] == "icmp-error"
            && v["quoted"]["sport"] == sport
            && v["hook"] == "tc-egress"
            && v["interface"].as_str().is_some_and(|i| i.starts_with("veth"))
    });
    assert_eq!(icmp["meaning"], "admin-prohibited", "{icmp}");
    assert_eq!((icmp["icmp_type"].as_u64(), icmp["icmp_code"].as_u64()), (Some(3), Some(13)));
    assert_eq!(icmp["quoted"]["src"], productpage.ip.to_string());
    assert_eq!(icmp["quoted"]["dst"], istiod.ip.to_string());
    assert_eq!(icmp["quoted"]["dport"], 15014);
    assert_eq!(icmp["flow"]["dst"], productpage.ip.to_string(), "the error goes back to the client");
    assert_eq!(icmp["flow"]["protocol"], "ICMP");
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn connect_hook_sees_the_original_destination_and_the_pod() {
    require_root();
    let lab = lab();
    let cgroup_root = lab.cgroup().display().to_string();
    let observer = Running::start(&[
        "trace",
        "--netns",
        &lab.node_netns("node-a"),
        "--cgroup-root",
        &cgroup_root,
        "--output",
        "json",
        "--port",
        "9080",
    ]);
    // The app connects to the reviews Service IP; the sidecar REDIRECTs it to 15001, the proxy
    // (uid 1337) connects to the endpoint after kube-proxy DNAT.
    let reviews_svc = lab.spec.services.iter().find(|s| s.name == "reviews").expect("svc").cluster_ip;
    let out =
        lab.connect("productpage", SocketAddr::from((reviews_svc, 9080)), Duration::from_secs(3)).expect("connect");
    assert_eq!(out.result, "ok", "{out:?}");
    assert_eq!(out.reply, "reviews:9080 ok");
    let (uid, containers) = pod_identity(&lab, "productpage");
    let app_container = &containers.iter().find(|(n, _)| n == "app").expect("app").1;
    let proxy_container = &containers.iter().find(|(n, _)| n == "istio-proxy").expect("proxy").1;
    let app = observer.wait_for("the app's connect()", Duration::from_secs(5), |v| {
        v["type"] == "connect" && v["container_id"] == app_container.as_str()
    });
    assert_eq!(app["hook"], "connect");
    assert_eq!(app["flow"]["dst"], reviews_svc.to_string(), "the destination before the sidecar redirect: {app}");
    assert_eq!(app["flow"]["dport"], 9080);
    assert_eq!(app["comm"], "lab-pod");
    assert_eq!(app["pod_uid"], uid.as_str());
    assert!(app["pid"].as_u64().is_some_and(|p| p > 1));
    // The proxy's own upstream connect goes to the same Service IP (SO_ORIGINAL_DST), from the
    // istio-proxy container.
    let proxy = observer.wait_for("the proxy's upstream connect()", Duration::from_secs(5), |v| {
        v["type"] == "connect" && v["container_id"] == proxy_container.as_str()
    });
    assert_eq!(proxy["flow"]["dst"], reviews_svc.to_string());
    assert_eq!(proxy["pod_uid"], uid.as_str());
    // Packets of the proxy's connection carry its process, learned from connect() and the
    // socket cookie before the SYN left.
    let upstream_syn = observer.wait_for("the proxy's SYN at a node interface", Duration::from_secs(5), |v| {
        v["hook"].as_str().is_some_and(|h| h.starts_with("tc-"))
            && v["tcp_flags"] == "SYN"
            && v["process"]["pid"] == proxy["pid"]
    });
    assert_eq!(upstream_syn["process"]["comm"], "lab-pod");
    // sock_ops reports the proxy's connection established.
    observer.wait_for("established", Duration::from_secs(5), |v| {
        v["type"] == "socket" && v["event"] == "established" && v["flow"]["dst"] == reviews_svc.to_string()
    });
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn sock_ops_reports_syn_retransmits_and_the_failed_connect() {
    require_root();
    let lab = lab();
    let istiod = lab.pod("istiod").expect("pod").clone();
    let productpage = lab.pod("productpage").expect("pod").clone();
    let cgroup_root = lab.cgroup().display().to_string();
    let observer = Running::start(&[
        "trace",
        "--netns",
        &lab.node_netns("node-a"),
        "--cgroup-root",
        &cgroup_root,
        "--output",
        "json",
        "--port",
        "15010",
    ]);
    // Silently dropped in the underlay-facing FORWARD of node-b (not the watched node).
    lab.inject("node-b", &FirewallRule::drop_tcp_to(Hook::Forward, istiod.ip.into(), 15010)).expect("inject");
    let out = lab
        .connect_as_proxy("productpage", SocketAddr::from((istiod.ip, 15010)), Duration::from_millis(2500))
        .expect("connect");
    assert_eq!(out.result, "timeout");
    let sport = out.local_addr().expect("local").port();
    let rto = observer.wait_for("an RTO for the unanswered SYN", Duration::from_secs(5), |v| {
        v["type"] == "socket" && v["event"] == "rto" && v["flow"]["sport"] == sport
    });
    assert_eq!(rto["flow"]["src"], productpage.ip.to_string());
    assert_eq!(rto["flow"]["dst"], istiod.ip.to_string());
    assert_eq!(rto["flow"]["dport"], 15010);
    assert_eq!(rto["retransmits"], 0, "the first RTO fires before the first retransmission");
    let failed = observer.wait_for("the attempt dying in SYN_SENT", Duration::from_secs(5), |v| {
        v["type"] == "socket" && v["event"] == "connect-failed" && v["flow"]["sport"] == sport
    });
    assert_eq!(failed["socket_cookie"], rto["socket_cookie"]);
    let rtos = observer.json().iter().filter(|v| v["event"] == "rto" && v["flow"]["sport"] == sport).count();
    assert!(rtos >= 1, "RTO events: {rtos}");
    // The SYN left node-a (tc-egress on the uplink) and no drop was seen on node-a.
    assert!(observer
        .json()
        .iter()
        .any(|v| v["hook"] == "tc-egress" && v["interface"] == "eth0" && v["flow"]["sport"] == sport));
    assert!(!observer.json().iter().any(|v| v["type"] == "drop" && v["flow"]["sport"] == sport));
}

/// `observer trace` of node-a with the lab's cgroup tree as the socket hooks' root, JSON lines,
/// port 15012 (istiod's XDS) and `extra` arguments.
fn trace_node_a_sockets(lab: &observer_lab::Lab, extra: &[&str]) -> Running {
    let (netns, cgroup_root) = (lab.node_netns("node-a"), lab.cgroup().display().to_string());
    let mut args =
        vec!["trace", "--netns", &netns, "--cgroup-root", &cgroup_root, "--output", "json", "--port", "15012"];
    args.extend_from_slice(extra);
    Running::start(&args)
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn cgroup_skb_sees_the_handshake_at_the_sockets_and_localizes_a_pod_drop() {
    require_root();
    let lab = lab();
    let istiod = lab.pod("istiod").expect("pod").clone();
    let productpage = lab.pod("productpage").expect("pod").clone();
    let observer = trace_node_a_sockets(&lab, &["--port", "15010"]);
    let ok = lab
        .connect_as_proxy("productpage", SocketAddr::from((istiod.ip, 15012)), Duration::from_secs(3))
        .expect("connect");
    assert_eq!(ok.result, "ok");
    let sport = ok.local_addr().expect("local").port();
    for (hook, src, flags) in [
        ("cgroup-egress", productpage.ip, "SYN"),
        ("cgroup-ingress", productpage.ip, "SYN"),
        ("cgroup-ingress", istiod.ip, "SYN|ACK"),
    ] {
        let v = observer.wait_for(&format!("{flags} from {src} at {hook}"), Duration::from_secs(5), |v| {
            v["hook"] == hook
                && v["tcp_flags"] == flags
                && v["flow"]["src"] == src.to_string()
                && (v["flow"]["sport"] == sport || v["flow"]["dport"] == sport)
        });
        assert_eq!(v["interface"], serde_json::Value::Null, "cgroup hooks name no interface of the node: {v}");
    }
    // A DROP inside istiod's own namespace: the SYN leaves productpage's socket, never reaches istiod's.
    lab.inject_in_netns(
        &lab.pod_netns("istiod").expect("ns"),
        &FirewallRule::drop_tcp_to(Hook::Input, istiod.ip.into(), 15010),
    )
    .expect("inject");
    let blocked = lab
        .connect_as_proxy("productpage", SocketAddr::from((istiod.ip, 15010)), Duration::from_millis(1200))
        .expect("connect");
    assert_eq!(blocked.result, "timeout");
    let sport = blocked.local_addr().expect("local").port();
    observer.wait_for("the SYN leaving productpage's socket", Duration::from_secs(5), |v| {
        v["hook"] == "cgroup-egress" && v["flow"]["sport"] == sport
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !observer.json().iter().any(|v| v["hook"] == "cgroup-ingress" && v["flow"]["sport"] == sport),
        "no SYN reached istiod's socket"
    );
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn cgroup_skb_off_leaves_the_sockets_to_connect_and_sock_ops() {
    require_root();
    let lab = lab();
    let istiod = lab.pod("istiod").expect("pod").clone();
    let productpage = lab.pod("productpage").expect("pod").clone();
    let observer = trace_node_a_sockets(&lab, &["--cgroup-skb", "off"]);
    let ready = observer.stderr().into_iter().find(|l| l.contains("ready")).expect("a ready line");
    assert!(ready.contains("cgroup_skb=false") && ready.contains("sock_ops=true"), "{ready}");
    let ok = lab
        .connect_as_proxy("productpage", SocketAddr::from((istiod.ip, 15012)), Duration::from_secs(3))
        .expect("connect");
    assert_eq!(ok.result, "ok");
    let sport = ok.local_addr().expect("local").port();
    // The handshake at the node's interfaces and the socket's own milestones, without the
    // per-packet socket programs.
    let syn = observer.wait_for("the SYN at productpage's veth", Duration::from_secs(5), |v| {
        v["hook"] == "tc-ingress" && v["tcp_flags"] == "SYN" && v["flow"]["sport"] == sport
    });
    assert_eq!(syn["flow"]["src"], productpage.ip.to_string());
    let established = observer.wait_for("established at productpage's socket", Duration::from_secs(5), |v| {
        v["type"] == "socket" && v["event"] == "established" && v["flow"]["sport"] == sport
    });
    assert_eq!(established["flow"]["dst"], istiod.ip.to_string());
    std::thread::sleep(Duration::from_millis(300));
    let socket_packets: Vec<_> =
        observer.json().into_iter().filter(|v| v["hook"].as_str().is_some_and(|h| h.starts_with("cgroup-"))).collect();
    assert!(socket_packets.is_empty(), "no cgroup_skb lines with --cgroup-skb off: {socket_packets:?}");
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn drops_in_pod_namespaces_behind_the_node_are_in_scope() {
    use std::os::unix::fs::MetadataExt as _;
    require_root();
    let lab = lab();
    let istiod = lab.pod("istiod").expect("pod").clone();
    let pod_ns = lab.pod_netns("productpage").expect("ns");
    let observer =
        Running::start(&["trace", "--netns", &lab.node_netns("node-a"), "--output", "json", "--port", "15014"]);
    // A NetworkPolicy-like egress DROP inside productpage's own namespace.
    lab.inject_in_netns(&pod_ns, &FirewallRule::drop_tcp_to(Hook::Output, istiod.ip.into(), 15014)).expect("inject");
    let out = lab
        .connect_as_proxy("productpage", SocketAddr::from((istiod.ip, 15014)), Duration::from_millis(1200))
        .expect("connect");
    assert_eq!(out.result, "timeout");
    let sport = out.local_addr().expect("local").port();
    let drop = observer.wait_for("the drop in the pod namespace", Duration::from_secs(5), |v| {
        v["type"] == "drop" && v["flow"]["sport"] == sport
    });
    let inode = std::fs::metadata(format!("/run/netns/{pod_ns}")).expect("netns").ino();
    assert_eq!(drop["netns"], inode, "{drop}");
    assert_eq!(drop["drop_reason"], "NETFILTER_DROP");
    assert_eq!(drop["interface"], serde_json::Value::Null, "ifindex of another namespace is not named");
}

/// review5 4b: on a Kubernetes node (ip_forward=1) every pod namespace inherits ip_forward=1
/// (devinet_init_net copies init_net's conf/all). Without an inventory such a pod is still a
/// pod: a drop in its own namespace is printed with that namespace.
#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn a_pod_that_inherits_ip_forward_stays_in_scope_without_an_inventory() {
    use std::os::unix::fs::MetadataExt as _;
    require_root();
    let lab = lab();
    let istiod = lab.pod("istiod").expect("pod").clone();
    let pod_ns = lab.pod_netns("productpage").expect("ns");
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &pod_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        .output()
        .expect("sysctl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let observer =
        Running::start(&["trace", "--netns", &lab.node_netns("node-a"), "--output", "json", "--port", "15014"]);
    lab.inject_in_netns(&pod_ns, &FirewallRule::drop_tcp_to(Hook::Output, istiod.ip.into(), 15014)).expect("inject");
    let out = lab
        .connect_as_proxy("productpage", SocketAddr::from((istiod.ip, 15014)), Duration::from_millis(1200))
        .expect("connect");
    assert_eq!(out.result, "timeout", "{out:?}");
    let sport = out.local_addr().expect("local").port();
    let drop = observer.wait_for("the drop in the forwarding pod's namespace", Duration::from_secs(5), |v| {
        v["type"] == "drop" && v["flow"]["sport"] == sport
    });
    let inode = std::fs::metadata(format!("/run/netns/{pod_ns}")).expect("netns").ino();
    assert_eq!(drop["netns"], inode, "{drop}");
    assert_eq!(drop["drop_reason"], "NETFILTER_DROP", "{drop}");
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn a_pod_veth_created_after_start_is_watched_without_restart() {
    require_root();
    let mut lab = lab();
    let istiod = lab.pod("istiod").expect("pod").clone();
    let observer =
        Running::start(&["trace", "--netns", &lab.node_netns("node-a"), "--output", "json", "--port", "15012"]);
    let mut ratings = lab.pod("reviews").expect("pod").clone();
    ratings.name = "ratings-v1-6f7b8c9d5-m3n4p".into();
    ratings.app = "ratings".into();
    ratings.workload = "ratings-v1".into();
    ratings.ip = std::net::Ipv4Addr::new(10, 244, 1, 12);
    lab.add_pod(ratings.clone()).expect("add pod");
    let veth = lab.host_veth(&ratings);
    // Give the monitor a moment to attach, then connect from the new pod.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let out = lab
            .connect_as_proxy("ratings", SocketAddr::from((istiod.ip, 15012)), Duration::from_secs(2))
            .expect("connect");
        assert_eq!(out.result, "ok");
        let sport = out.local_addr().expect("local").port();
        std::thread::sleep(Duration::from_millis(200));
        if observer
            .json()
            .iter()
            .any(|v| v["interface"] == veth.as_str() && v["flow"]["sport"] == sport && v["tcp_flags"] == "SYN")
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no SYN seen on the new veth {veth}: {:?}", observer.lines());
    }
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn ipv6_pod_to_pod_syn_and_drop_have_the_exact_flow() {
    require_root();
    let lab = lab();
    let productpage = lab.pod("productpage").expect("pod").clone();
    let details = lab.pod("details").expect("pod").clone();
    let (src6, dst6) = (productpage.ip6.expect("dual-stack"), details.ip6.expect("dual-stack"));
    let observer =
        Running::start(&["trace", "--netns", &lab.node_netns("node-a"), "--output", "json", "--port", "9080"]);
    let target = SocketAddr::from((dst6, 9080));
    let ok = lab.connect("productpage", target, Duration::from_secs(3)).expect("connect");
    assert_eq!(ok.result, "ok", "{ok:?}");
    assert_eq!(ok.reply, "details:9080 ok");
    let sport = ok.local_addr().expect("local").port();
    let syn = observer.wait_for("the IPv6 SYN at productpage's veth", Duration::from_secs(5), |v| {
        v["hook"] == "tc-ingress"
            && v["tcp_flags"] == "SYN"
            && v["flow"]["sport"] == sport
            && v["interface"] == lab.host_veth(&productpage).as_str()
    });
    assert_eq!(syn["flow"]["src"], src6.to_string());
    assert_eq!(syn["flow"]["dst"], dst6.to_string());
    assert_eq!(syn["flow"]["dport"], 9080);
    // ip6tables DROP at node-a's FORWARD: NETFILTER_DROP with the IPv6 5-tuple.
    let mut rule = FirewallRule::drop_tcp(Hook::Forward, 9080);
    rule.dst = Some((dst6.into(), 128));
    lab.inject("node-a", &rule).expect("inject");
    let blocked = lab.connect("productpage", target, Duration::from_millis(1200)).expect("connect");
    assert_eq!(blocked.result, "timeout", "{blocked:?}");
    let sport = blocked.local_addr().expect("local").port();
    let drop = observer.wait_for("the IPv6 NETFILTER_DROP", Duration::from_secs(5), |v| {
        v["type"] == "drop" && v["flow"]["sport"] == sport
    });
    assert_eq!(drop["drop_reason"], "NETFILTER_DROP");
    assert_eq!(drop["flow"]["src"], src6.to_string());
    assert_eq!(drop["flow"]["dst"], dst6.to_string());
    assert_eq!(drop["flow"]["protocol"], "TCP");
    assert_eq!(drop["interface"], "cni0");
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn tcp_tracepoints_report_retransmits_and_a_closed_ports_reset() {
    use std::os::unix::fs::MetadataExt as _;
    require_root();
    let lab = lab();
    let istiod = lab.pod("istiod").expect("pod").clone();
    let productpage = lab.pod("productpage").expect("pod").clone();
    let inode = |ns: &str| std::fs::metadata(format!("/run/netns/{ns}")).expect("netns").ino();

    // Retransmitted SYNs of productpage's proxy, blackholed at node-b.
    let observer =
        Running::start(&["trace", "--netns", &lab.node_netns("node-a"), "--output", "json", "--port", "15010"]);
    lab.inject("node-b", &FirewallRule::drop_tcp_to(Hook::Forward, istiod.ip.into(), 15010)).expect("inject");
    let out = lab
        .connect_as_proxy("productpage", SocketAddr::from((istiod.ip, 15010)), Duration::from_millis(1500))
        .expect("connect");
    assert_eq!(out.result, "timeout");
    let sport = out.local_addr().expect("local").port();
    let retransmit = observer.wait_for("tcp_retransmit_skb of the SYN", Duration::from_secs(5), |v| {
        v["hook"] == "tcp_retransmit" && v["flow"]["sport"] == sport
    });
    assert_eq!(retransmit["event"], "retransmit");
    assert_eq!(retransmit["state"], "SYN_SENT");
    assert_eq!(retransmit["socket"], true);
    assert_eq!(retransmit["flow"]["src"], productpage.ip.to_string());
    assert_eq!(retransmit["flow"]["dst"], istiod.ip.to_string());
    assert_eq!(retransmit["netns"], inode(&lab.pod_netns("productpage").expect("ns")), "the socket's (pod) namespace");
    drop(observer);

    // A closed port on istiod (behind node-b): its stack answers RST without a socket.
    let observer =
        Running::start(&["trace", "--netns", &lab.node_netns("node-b"), "--output", "json", "--port", "15999"]);
    let out = lab
        .connect_as_proxy("productpage", SocketAddr::from((istiod.ip, 15999)), Duration::from_secs(2))
        .expect("connect");
    assert_eq!(out.result, "refused");
    let sport = out.local_addr().expect("local").port();
    let reset = observer.wait_for("tcp_send_reset for the closed port", Duration::from_secs(5), |v| {
        v["hook"] == "tcp_send_reset" && v["flow"]["dport"] == sport
    });
    assert_eq!(reset["socket"], false, "no socket: the port is closed, not firewalled: {reset}");
    assert_eq!(reset["flow"]["src"], istiod.ip.to_string());
    assert_eq!(reset["flow"]["sport"], 15999);
    assert_eq!(reset["flow"]["dst"], productpage.ip.to_string());
    assert_eq!(reset["netns"], inode(&lab.pod_netns("istiod").expect("ns")));
}
