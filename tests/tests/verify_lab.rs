//! `observer verify` against the lab: static verdicts with no traffic at all, and `--probe`
//! confirming them (or showing where they disagree).
// Test helpers below fail loudly with context (STYLE: tests panic with context).
#![allow(clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;

use observer_lab::{Backend, FirewallRule, Hook, Lab, Verdict};
use serde_json::Value;
use support::{lab, observer_bin, require_root};

/// Runs `observer verify --output json` for `node`; returns (exit code, report).
fn verify(lab: &Lab, node: &str, probe: bool) -> (i32, Value) {
    verify_named(lab, node, Some(node), probe)
}

/// [`verify`], passing `--node-name` only when `name` is given.
fn verify_named(lab: &Lab, node: &str, name: Option<&str>, probe: bool) -> (i32, Value) {
    let inventory = lab.inventory_path().display().to_string();
    let netns = lab.node_netns(node);
    let mut args = vec!["verify", "--inventory", &inventory, "--netns", &netns, "--output", "json"];
    if let Some(name) = name {
        args.extend(["--node-name", name]);
    }
    if probe {
        args.push("--probe");
    }
    let out = Command::new(observer_bin()).args(&args).output().expect("run observer verify");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), report)
}

fn checks(report: &Value) -> Vec<Value> {
    report["checks"].as_array().cloned().unwrap_or_default()
}

fn blocked(report: &Value) -> Vec<Value> {
    checks(report).into_iter().filter(|c| c["status"] == "blocked").collect()
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn a_clean_lab_passes_every_check_on_both_nodes() {
    require_root();
    let lab = lab();
    for node in ["node-a", "node-b"] {
        let (code, report) = verify(&lab, node, true);
        assert_eq!(code, 0, "{report:#}");
        let all = checks(&report);
        assert!(all.len() >= 10, "{node}: a meaningful matrix: {report:#}");
        assert!(all.iter().all(|c| c["status"] == "pass"), "{report:#}");
        assert_eq!(report["node"], node);
        assert_probes_agree(&report);
    }
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn a_forward_rule_dropping_xds_from_the_pod_cidr_blocks_the_pods_flows_to_istiod() {
    require_root();
    let lab = lab();
    let node_a = lab.spec.node("node-a").expect("node");
    let cidr = format!("{}/{}", node_a.pod_cidr.0, node_a.pod_cidr.1);
    lab.firewall(
        "node-a",
        "iptables",
        &["-w", "-I", "FORWARD", "1", "-s", &cidr, "-p", "tcp", "--dport", "15012", "-j", "DROP"],
    )
    .expect("rule");
    let (code, report) = verify(&lab, "node-a", true);
    assert_eq!(code, 3, "a required flow is blocked: {report:#}");
    let blocked = blocked(&report);
    let sources: Vec<&str> = blocked.iter().filter_map(|c| c["src"]["pod"].as_str()).collect();
    assert_eq!(blocked.len(), 2, "productpage's and reviews' IPv4 xDS flows: {report:#}");
    assert!(
        sources.iter().any(|s| s.starts_with("bookinfo/productpage"))
            && sources.iter().any(|s| s.starts_with("bookinfo/reviews"))
    );
    for c in &blocked {
        assert_eq!((c["requirement"].as_str(), c["dst"]["port"].as_u64()), (Some("R5"), Some(15012)), "{c:#}");
        assert_eq!(c["dst"]["istio_port"], "xds-tls");
        assert_eq!(c["dst"]["service"], "istio-system/istiod");
        assert_eq!(c["at"], "node");
        let culprit = &c["culprit"];
        assert_eq!(culprit["rule"], format!("-A FORWARD -s {cidr} -p tcp -m tcp --dport 15012 -j DROP"), "{c:#}");
        assert_eq!((culprit["chain"].as_str(), culprit["confidence"].as_str()), (Some("FORWARD"), Some("evaluated")));
        // The probe confirms it: the SYN was dropped by that very rule.
        let probe = &c["probe"];
        assert_eq!((probe["outcome"].as_str(), probe["agrees"].as_bool()), (Some("dropped"), Some(true)), "{c:#}");
        assert_eq!(probe["drop_reason"], "NETFILTER_DROP");
        assert_eq!(probe["culprit"]["rule"], culprit["rule"]);
    }
    // IPv6 xDS is not matched by an IPv4 rule; everything else passes, and its probes agree.
    for c in checks(&report).iter().filter(|c| c["status"] == "pass") {
        let probe = &c["probe"];
        if probe["outcome"] != "not-probed" {
            assert_eq!(probe["agrees"], true, "{c:#}");
        }
    }
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn a_rule_for_a_port_no_mesh_flow_uses_leaves_every_check_passing() {
    require_root();
    let lab = lab();
    lab.inject("node-a", &FirewallRule::drop_tcp(Hook::Forward, 5432)).expect("rule");
    lab.inject("node-a", &FirewallRule::drop_tcp(Hook::Input, 22)).expect("rule");
    let (code, report) = verify(&lab, "node-a", true);
    assert_eq!(code, 0, "{report:#}");
    assert!(checks(&report).iter().all(|c| c["status"] == "pass"), "{report:#}");
    assert_probes_agree(&report);
}

/// Every flow probed from this node agrees with its static verdict, and some were probed.
fn assert_probes_agree(report: &Value) {
    let probed: Vec<Value> = checks(report).into_iter().filter(|c| c["probe"]["outcome"] != "not-probed").collect();
    assert!(!probed.is_empty(), "{report:#}");
    for c in &probed {
        assert_eq!(c["probe"]["agrees"], true, "{c:#}");
    }
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn an_nftables_drop_of_hbone_blocks_the_ambient_flows() {
    require_root();
    let lab = lab();
    let mut rule = FirewallRule::drop_tcp(Hook::Forward, 15008);
    rule.backend = Backend::Nftables;
    lab.inject("node-a", &rule).expect("rule");
    let (code, report) = verify(&lab, "node-a", true);
    assert_eq!(code, 3, "{report:#}");
    let blocked = blocked(&report);
    assert!(!blocked.is_empty());
    assert!(blocked.iter().all(|c| c["dst"]["port"] == 15008 && c["dst"]["istio_port"] == "hbone"), "{report:#}");
    let hbone = checks(&report).into_iter().filter(|c| c["dst"]["port"] == 15008).count();
    assert_eq!(blocked.len(), hbone, "every HBONE flow through node-a, both directions and families: {report:#}");
    for c in &blocked {
        assert_eq!(
            (c["culprit"]["backend"].as_str(), c["culprit"]["table"].as_str()),
            (Some("nftables"), Some("lab_fault"))
        );
    }
    let from_here =
        blocked.iter().find(|c| c["src"]["node"] == "node-a").expect("an HBONE flow from node-a's ambient pod");
    assert_eq!(from_here["probe"]["outcome"], "dropped", "{from_here:#}");
    assert_eq!(from_here["probe"]["agrees"], true);
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn a_reject_of_the_webhook_port_blocks_the_api_servers_calls_to_istiod() {
    require_root();
    let lab = lab();
    let mut rule = FirewallRule::drop_tcp(Hook::Forward, 15017);
    rule.verdict = Verdict::RejectAdminProhibited;
    lab.inject("node-b", &rule).expect("rule");
    let (code, report) = verify(&lab, "node-b", true);
    assert_eq!(code, 3, "{report:#}");
    let blocked = blocked(&report);
    assert_eq!(blocked.len(), 1, "{report:#}");
    let c = &blocked[0];
    assert_eq!(
        (c["requirement"].as_str(), c["purpose"].as_str()),
        (Some("R5"), Some("admission webhook (API server -> istiod)"))
    );
    assert!(c["src"]["pod"].as_str().is_some_and(|p| p.starts_with("kube-system/kube-apiserver")), "{c:#}");
    assert_eq!(c["dst"]["istio_port"], "webhook");
    assert_eq!(
        c["culprit"]["rule"],
        "-A FORWARD -p tcp -m tcp --dport 15017 -j REJECT --reject-with icmp-admin-prohibited"
    );
    assert_eq!(
        (c["probe"]["outcome"].as_str(), c["probe"]["agrees"].as_bool()),
        (Some("rejected"), Some(true)),
        "{c:#}"
    );
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn a_drop_beyond_the_node_passes_statically_and_the_probe_says_they_disagree() {
    require_root();
    let lab = lab();
    // The underlay router drops xDS between the nodes: nothing in node-a's rulesets.
    lab.inject_in_netns(&format!("{}-router", lab.name), &FirewallRule::drop_tcp(Hook::Forward, 15012)).expect("rule");
    let (code, report) = verify(&lab, "node-a", true);
    assert_eq!(code, 0, "statically nothing is blocked on node-a: {report:#}");
    // (An iptables rule: IPv4 only; the IPv6 flows keep passing, and their probes agree.)
    let xds: Vec<Value> = checks(&report)
        .into_iter()
        .filter(|c| c["dst"]["port"] == 15012 && c["dst"]["ip"].as_str().is_some_and(|ip| !ip.contains(':')))
        .collect();
    assert_eq!(xds.len(), 2, "{report:#}");
    for c in &xds {
        assert_eq!(c["status"], "pass", "{c:#}");
        assert_eq!(
            (c["probe"]["outcome"].as_str(), c["probe"]["agrees"].as_bool()),
            (Some("silent"), Some(false)),
            "{c:#}"
        );
        assert!(c["probe"]["note"].as_str().is_some_and(|n| n.contains("beyond")), "{c:#}");
    }
}

/// Issue 13 item 8: a Calico-style routed node (cali* veths, /32 routes, proxy ARP, no bridge).
/// The matrix covers its pods as on a bridged node, and a FORWARD rule dropping xDS from its
/// pods blocks exactly their flows to istiod, confirmed by probes.
#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn on_a_routed_node_the_matrix_covers_its_pods_and_finds_the_xds_drop() {
    use observer_lab::{LabSpec, PodAttachment};
    require_root();
    let lab = support::lab_with(LabSpec::bookinfo().with_pod_attachment("node-a", PodAttachment::Routed));
    let productpage = lab.pod("productpage").expect("pod").clone();
    let host_if = lab.host_veth(&productpage);
    assert!(host_if.starts_with("cali"), "{host_if}");
    let links = Command::new("ip").args(["-n", &lab.node_netns("node-a"), "-br", "link"]).output().expect("ip");
    assert!(!String::from_utf8_lossy(&links.stdout).contains("cni0"), "no bridge on the routed node");

    let (code, clean) = verify(&lab, "node-a", true);
    assert_eq!(code, 0, "{clean:#}");
    assert!(clean_checks_cover_sidecars(&clean), "{clean:#}");
    // Not told its name, verify finds it from the pods behind the node: the same matrix.
    let (code, unnamed) = verify_named(&lab, "node-a", None, false);
    assert_eq!((code, unnamed["node"].as_str()), (0, Some("node-a")), "{unnamed:#}");
    assert_eq!(checks(&unnamed).len(), checks(&clean).len(), "{unnamed:#}");
    assert!(checks(&clean).iter().all(|c| c["status"] == "pass"), "{clean:#}");
    assert_probes_agree(&clean);

    let node_a = lab.spec.node("node-a").expect("node");
    let cidr = format!("{}/{}", node_a.pod_cidr.0, node_a.pod_cidr.1);
    lab.firewall(
        "node-a",
        "iptables",
        &["-w", "-I", "FORWARD", "1", "-s", &cidr, "-p", "tcp", "--dport", "15012", "-j", "DROP"],
    )
    .expect("rule");
    let (code, report) = verify(&lab, "node-a", true);
    assert_eq!(code, 3, "{report:#}");
    let blocked = blocked(&report);
    let mut sources: Vec<&str> = blocked.iter().filter_map(|c| c["src"]["pod"].as_str()).collect();
    sources.sort_unstable();
    assert_eq!(sources.len(), 2, "productpage's and reviews' IPv4 xDS flows, nothing else: {report:#}");
    assert!(sources[0].starts_with("bookinfo/productpage") && sources[1].starts_with("bookinfo/reviews"));
    for c in &blocked {
        assert_eq!((c["requirement"].as_str(), c["dst"]["port"].as_u64()), (Some("R5"), Some(15012)), "{c:#}");
        assert_eq!(c["at"], "node");
        assert_eq!(c["culprit"]["rule"], format!("-A FORWARD -s {cidr} -p tcp -m tcp --dport 15012 -j DROP"));
        assert_eq!(
            (c["probe"]["outcome"].as_str(), c["probe"]["agrees"].as_bool()),
            (Some("dropped"), Some(true)),
            "{c:#}"
        );
    }
}

/// Every sidecar pod of node-a has its xDS flow to istiod checked (both families).
fn clean_checks_cover_sidecars(report: &Value) -> bool {
    ["bookinfo/productpage", "bookinfo/reviews"].iter().all(|pod| {
        checks(report)
            .iter()
            .filter(|c| c["dst"]["port"] == 15012 && c["src"]["pod"].as_str().is_some_and(|p| p.starts_with(pod)))
            .count()
            == 2
    })
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn dockers_ruleset_blocks_flows_into_its_bridge_and_every_other_check_passes() {
    require_root();
    let lab = lab();
    let node_a = lab.spec.node("node-a").expect("node").clone();
    let cidr = node_a.pod_cidr_string();
    let path =
        format!("{}/../observer/tests/fixtures/netfilter/real/docker-usernet-noicc.txt", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture");
    let text = observer_lab::lab::rulesets::rename(&text, &[("bridge1", "cni0"), ("192.0.2.0/24", &cidr)]);
    let ruleset = observer_lab::lab::rulesets::convert(&text);
    let members = [cidr.clone()];
    observer_lab::lab::faults::load_ruleset(
        &lab.node_netns("node-a"),
        &ruleset,
        &[("docker-ext-bridges-v4", &members)],
    )
    .expect("load");
    let (code, report) = verify(&lab, "node-a", true);
    assert_eq!(code, 3, "{report:#}");
    let all = checks(&report);
    assert!(all.iter().all(|c| c["status"] != "unknown"), "every verdict decided: {report:#}");
    let blocked = blocked(&report);
    assert!(!blocked.is_empty(), "{report:#}");
    let on_node_a = |ip: &str| lab.spec.pods_on("node-a").any(|p| p.ip.to_string() == ip);
    let mut bridged = 0;
    for c in &blocked {
        // Only IPv4 flows into node-a's pods: between two of them (bridged) inter-container
        // traffic is off; from elsewhere only published ports may enter.
        let (src, dst) = (c["src"]["ip"].as_str().unwrap_or_default(), c["dst"]["ip"].as_str().unwrap_or_default());
        assert!(on_node_a(dst), "{c:#}");
        assert_eq!(c["at"], "node", "{c:#}");
        assert_eq!(c["culprit"]["confidence"], "evaluated", "{c:#}");
        let rule = if on_node_a(src) {
            bridged += 1;
            "-A FORWARD -i cni0 -o cni0 -j DROP"
        } else {
            "-A DOCKER ! -i cni0 -o cni0 -j DROP"
        };
        assert_eq!(c["culprit"]["rule"], rule, "{c:#}");
    }
    assert!(bridged >= 1, "{report:#}");
    for c in all.iter().filter(|c| c["status"] == "pass") {
        let dst = c["dst"]["ip"].as_str().unwrap_or_default();
        assert!(!(on_node_a(dst) && c["src"]["kind"] == "pod"), "a flow into a pod passed: {c:#}");
    }
    assert_probes_agree(&report);
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn a_k3s_node_with_kube_router_flannel_and_a_vpns_own_tables_passes_every_mesh_flow() {
    require_root();
    let lab = lab();
    // k3s's real rulesets (kube-router policies, flannel, kube-proxy via iptables-nft, and the
    // VPN's native nft tables at the same hooks) with the cluster CIDR adapted to the lab: they
    // accept every mesh flow, and each verdict is decided.
    let path = format!(
        "{}/../observer/tests/fixtures/netfilter/real/k3s-kube-router-flannel-netbird.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).expect("fixture");
    let text = observer_lab::lab::rulesets::rename(&text, &[("10.42.0.0/16", "10.244.0.0/16")]);
    let ruleset = observer_lab::lab::rulesets::convert(&text);
    observer_lab::lab::faults::load_ruleset(&lab.node_netns("node-a"), &ruleset, &[]).expect("load");
    let (code, report) = verify(&lab, "node-a", false);
    let not_passing: Vec<&Value> =
        report["checks"].as_array().into_iter().flatten().filter(|c| c["status"] != "pass").collect();
    assert!(not_passing.is_empty(), "{not_passing:#?}");
    assert_eq!(code, 0, "{report:#}");
}

/// firewalld's forward chain (nftables backend, RHEL 9): base rules, inbound to the pods
/// allowed, everything else forwarded rejected.
const FIREWALLD_FORWARD: &str = r#"table inet firewalld {
	chain filter_FORWARD {
		type filter hook forward priority filter + 10; policy accept;
		ct state established,related accept
		ct status dnat accept
		iifname "lo" accept
		ip6 daddr { ::/96, ::ffff:0.0.0.0/96, 2002::/24 } reject with icmpv6 type addr-unreachable
		jump filter_FORWARD_ZONES
		ct state invalid drop
		reject with icmpx type admin-prohibited
	}

	chain filter_FORWARD_ZONES {
		iifname "eth0" oifname "cni0" accept
	}
}
"#;

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn a_firewalld_forward_reject_blocks_what_node_a_pods_send_and_inbound_and_service_traffic_passes() {
    require_root();
    let lab = lab();
    lab.nft("node-a", FIREWALLD_FORWARD).expect("nft");
    let (code, report) = verify(&lab, "node-a", true);
    assert_eq!(code, 3, "{report:#}");
    let all = checks(&report);
    assert!(all.iter().all(|c| c["status"] != "unknown"), "every verdict decided: {report:#}");
    let on_node_a = |ip: &str| {
        lab.spec.pods_on("node-a").any(|p| p.ip.to_string() == ip || p.ip6.is_some_and(|a| a.to_string() == ip))
    };
    for c in &all {
        let (src, dst) = (c["src"]["ip"].as_str().unwrap_or_default(), c["dst"]["ip"].as_str().unwrap_or_default());
        // Forwarded from one of node-a's pods (routed out, or bridged to a neighbour, which
        // br_netfilter passes through FORWARD too), not through a Service.
        let _ = dst;
        let leaves = c["src"]["kind"] == "pod" && on_node_a(src);
        let through_service =
            c["purpose"].as_str().is_some_and(|p| p.starts_with("xDS")) && c["dst"]["service"].is_string();
        if leaves && !through_service {
            assert_eq!(c["status"], "blocked", "{c:#}");
            assert_eq!(c["culprit"]["rule"], "reject with icmpx admin-prohibited", "{c:#}");
            assert_eq!(
                (c["culprit"]["table"].as_str(), c["culprit"]["confidence"].as_str()),
                (Some("firewalld"), Some("evaluated"))
            );
        } else {
            // Inbound is allowed; a proxy's xDS goes through istiod's Service (DNAT here:
            // `ct status dnat accept`).
            assert_eq!(c["status"], "pass", "{c:#}");
        }
    }
    assert_probes_agree(&report);
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn weaves_ingress_isolation_blocks_bridged_flows_with_the_bridge_ports_read_from_the_fdb() {
    require_root();
    let lab = lab();
    let productpage = lab.pod("productpage").expect("pod").clone();
    let reviews = lab.pod("reviews").expect("pod").clone();
    let path =
        format!("{}/../observer/tests/fixtures/netfilter/real/weave-npc-kubeadm.txt", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture");
    let text = observer_lab::lab::rulesets::rename(&text, &[("weave", "cni0"), ("10.32.0.0/12", "10.244.0.0/16")]);
    let ruleset = observer_lab::lab::rulesets::convert(&text);
    // Egress is allowed for the pods of node-a (they are in the namespace's egress set); no
    // namespace allows ingress.
    let egress_allowed = [productpage.ip.to_string(), reviews.ip.to_string()];
    let node_ns = lab.node_netns("node-a");
    observer_lab::lab::faults::load_ruleset(
        &node_ns,
        &ruleset,
        &[("weave-s_+ChJId4Uy_$}G;WdH|~TK)I", &egress_allowed)],
    )
    .expect("load");
    // Each pod talks to istiod through its gateway: the node learns their addresses from their
    // ARP (neighbour table) and the bridge their ports (FDB).
    let istiod = lab.pod("istiod").expect("pod").ip;
    for app in ["productpage", "reviews"] {
        let out = lab
            .connect_as_proxy(app, std::net::SocketAddr::from((istiod, 15012)), std::time::Duration::from_secs(2))
            .expect("connect");
        assert_eq!(out.result, "ok", "{out:?}");
    }
    let (_, report) = verify(&lab, "node-a", false);
    let check = checks(&report)
        .into_iter()
        .find(|c| c["src"]["ip"] == productpage.ip.to_string() && c["dst"]["ip"] == reviews.ip.to_string())
        .unwrap_or_else(|| panic!("no productpage -> reviews check: {report:#}"));
    assert_eq!(check["status"], "blocked", "{check:#}");
    let c = &check["culprit"];
    assert_eq!(
        (c["backend"].as_str(), c["confidence"].as_str()),
        (Some("iptables-legacy"), Some("evaluated")),
        "{c:#}"
    );
    assert_eq!((c["chain"].as_str(), c["position"].as_u64()), (Some("FORWARD"), Some(4)), "{c:#}");
    assert_eq!(c["rule"], "-A FORWARD -o cni0 -j DROP");
}

/// Issue 14 on the routed Calico-style node: AKS's real Calico ruleset (adapted to node-a's
/// cali* veths) accepts every mesh flow, each verdict decided (`pass`); with an ingress
/// NetworkPolicy on reviews (Felix's chains), the flows into reviews on 9080 are `blocked` by
/// its `cali-tw-` "Drop if no policies passed packet" and nothing else changes.
#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn the_real_calico_ruleset_on_a_routed_node_passes_mesh_flows_and_blocks_what_its_policy_drops() {
    use observer_lab::{LabSpec, PodAttachment};
    require_root();
    let lab = support::lab_with(LabSpec::bookinfo().with_pod_attachment("node-a", PodAttachment::Routed));
    let ruleset = support::real_calico_for(&lab, "node-a");
    observer_lab::lab::faults::load_ruleset(&lab.node_netns("node-a"), &ruleset, &[]).expect("load");
    let (code, report) = verify(&lab, "node-a", false);
    let not_passing: Vec<Value> = checks(&report).into_iter().filter(|c| c["status"] != "pass").collect();
    assert!(not_passing.is_empty(), "{not_passing:#?}");
    assert_eq!(code, 0, "{report:#}");
    assert!(clean_checks_cover_sidecars(&report), "{report:#}");
    let before = checks(&report).len();

    let reviews = lab.pod("reviews").expect("pod").clone();
    let tw = format!("cali-tw-{}", lab.host_veth(&reviews));
    support::calico_ingress_policy(&lab, "node-a", &tw);
    let (code, report) = verify(&lab, "node-a", false);
    assert_eq!(code, 3, "{report:#}");
    let all = checks(&report);
    assert_eq!(all.len(), before, "{report:#}");
    assert!(all.iter().all(|c| c["status"] != "unknown"), "every verdict decided: {report:#}");
    let blocked = blocked(&report);
    assert!(!blocked.is_empty(), "{report:#}");
    for c in &blocked {
        assert_eq!(c["dst"]["ip"], reviews.ip.to_string(), "only flows into reviews: {c:#}");
        assert_eq!(c["dst"]["port"], 9080, "{c:#}");
        let k = &c["culprit"];
        assert_eq!((k["chain"].as_str(), k["position"].as_u64()), (Some(tw.as_str()), Some(7)), "{c:#}");
        assert_eq!(k["owner"], "calico", "{c:#}");
        assert!(k["rule"].as_str().is_some_and(|r| r.contains("Drop if no policies passed packet")), "{c:#}");
    }
}

/// Issue 14: the REAL RHEL 8 firewalld + libvirt ruleset (loaded whole with `nft -f`) with
/// node-a's pod bridge as libvirt's NAT network: every flow the pods start (on the bridge, to
/// other nodes, to istiod's Service) is decided `pass`; every flow into the pods from off the
/// node is `blocked` by libvirt's counted `oifname ... reject` in `ip filter` FORWARD. With the
/// bridge in the `public` zone instead, the pods' flows off the node are `blocked` by
/// firewalld's final `reject with icmpx type admin-prohibited` (`evaluated`). Nothing `unknown`.
#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn the_real_firewalld_ruleset_passes_what_it_admits_and_blocks_what_it_rejects() {
    require_root();
    let lab = lab();
    let ns = lab.node_netns("node-a");
    let local: Vec<String> = lab.spec.pods_on("node-a").map(|p| p.ip.to_string()).collect();
    let on_node = |c: &Value, side: &str| c[side]["ip"].as_str().is_some_and(|ip| local.iter().any(|l| l == ip));

    let ruleset = support::real_firewalld_for(&lab, "node-a", support::FirewalldPods::Libvirt);
    observer_lab::lab::faults::load_ruleset(&ns, &ruleset, &[]).expect("load");
    let (_, report) = verify(&lab, "node-a", false);
    let all = checks(&report);
    assert!(all.iter().all(|c| c["status"] != "unknown"), "every verdict decided: {report:#}");
    // What node-a's pods start, and the node's own probes of them (OUTPUT, not forwarded).
    let admitted: Vec<&Value> = all.iter().filter(|c| on_node(c, "src") || c["src"]["node"] == "node-a").collect();
    assert!(admitted.len() >= 4, "{report:#}");
    for c in &admitted {
        assert_eq!(c["status"], "pass", "{c:#}");
    }
    let inbound: Vec<&Value> =
        all.iter().filter(|c| !on_node(c, "src") && c["src"]["node"] != "node-a" && on_node(c, "dst")).collect();
    assert!(!inbound.is_empty(), "{report:#}");
    for c in &inbound {
        assert_eq!(c["status"], "blocked", "{c:#}");
        let k = &c["culprit"];
        assert_eq!(
            (k["family"].as_str(), k["table"].as_str(), k["chain"].as_str(), k["position"].as_u64()),
            (Some("ip"), Some("filter"), Some("FORWARD"), Some(4)),
            "{c:#}"
        );
    }

    // The same ruleset, the pods' bridge in the public zone.
    drop(lab);
    let lab = support::lab();
    let ruleset = support::real_firewalld_for(&lab, "node-a", support::FirewalldPods::Public);
    observer_lab::lab::faults::load_ruleset(&lab.node_netns("node-a"), &ruleset, &[]).expect("load");
    let (code, report) = verify(&lab, "node-a", false);
    assert_eq!(code, 3, "{report:#}");
    let all = checks(&report);
    assert!(all.iter().all(|c| c["status"] != "unknown"), "every verdict decided: {report:#}");
    // Forwarded: between node-a's pods and anything but node-a itself.
    let crossing: Vec<&Value> = all
        .iter()
        .filter(|c| (on_node(c, "src") || on_node(c, "dst")) && c["src"]["node"] != "node-a" || on_node(c, "src"))
        .collect();
    assert!(!crossing.is_empty(), "{report:#}");
    for c in &crossing {
        assert_eq!(c["status"], "blocked", "{c:#}");
        let k = &c["culprit"];
        assert_eq!(k["confidence"], "evaluated", "{c:#}");
        assert_eq!(
            (k["table"].as_str(), k["chain"].as_str(), k["position"].as_u64()),
            (Some("firewalld"), Some("filter_FORWARD"), Some(9)),
            "{c:#}"
        );
    }
}

/// A rule on the return path (node-a's FORWARD drops SYN-ACKs from 15012): every SYN passes, the
/// handshake cannot complete. The xDS flows of node-a's pods to istiod on node-b are blocked at
/// the node by that rule, the reason being the reply.
#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn a_rule_dropping_the_replies_blocks_the_flows_whose_syn_passes() {
    require_root();
    let lab = lab();
    let rule = "-w -I FORWARD 1 -p tcp --sport 15012 --tcp-flags SYN,ACK SYN,ACK -j DROP";
    lab.firewall("node-a", "iptables", &rule.split(' ').collect::<Vec<_>>()).expect("rule");
    let (code, report) = verify(&lab, "node-a", false);
    assert_eq!(code, 3, "a required flow is blocked: {report:#}");
    let blocked = blocked(&report);
    assert!(!blocked.is_empty(), "{report:#}");
    for c in &blocked {
        assert_eq!((c["dst"]["port"].as_u64(), c["at"].as_str()), (Some(15012), Some("node")), "{c:#}");
        assert_eq!(
            c["culprit"]["rule"], "-A FORWARD -p tcp -m tcp --sport 15012 --tcp-flags SYN,ACK SYN,ACK -j DROP",
            "{c:#}"
        );
        assert!(c["why"].as_str().is_some_and(|w| w.contains("SYN-ACK")), "{c:#}");
    }
    assert!(
        blocked.iter().any(|c| c["src"]["pod"].as_str().is_some_and(|p| p.starts_with("bookinfo/productpage"))),
        "{report:#}"
    );
    // Flows to other ports are untouched.
    assert!(checks(&report).iter().filter(|c| c["dst"]["port"] != 15012).all(|c| c["status"] == "pass"), "{report:#}");
}
