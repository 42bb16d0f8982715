//! The lab itself: traffic through the sidecar capture, the inventory, cgroups, a control plane
//! outside the nodes, and teardown (also after a panic).

mod support;

use std::{net::SocketAddr, path::PathBuf, process::Command, time::Duration};

use support::{lab, require_root};

fn netns_exists(name: &str) -> bool {
    PathBuf::from("/run/netns").join(name).exists()
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn sidecar_capture_carries_app_traffic_across_nodes() {
    require_root();
    let lab = lab();
    let details = lab.pod("details").expect("pod").clone();
    // productpage (node-a) -> details (node-b) on the app port: outbound capture (15001) in
    // productpage, inbound capture (15006) in details, then details' app on 9080.
    let out =
        lab.connect("productpage", SocketAddr::from((details.ip, 9080)), Duration::from_secs(3)).expect("connect");
    assert_eq!(out.result, "ok", "{out:?}");
    assert_eq!(out.reply, "details:9080 ok");
    // The proxy's own health port is not captured.
    let out =
        lab.connect("productpage", SocketAddr::from((details.ip, 15021)), Duration::from_secs(3)).expect("connect");
    assert_eq!(out.reply, "details-istio-proxy:15021 ok");
    // A closed port is refused by the destination (through the proxy: the client sees it closed).
    let istiod = lab.pod("istiod").expect("pod").clone();
    let out = lab
        .connect_as_proxy("productpage", SocketAddr::from((istiod.ip, 15999)), Duration::from_secs(2))
        .expect("connect");
    assert_eq!(out.result, "refused", "{out:?}");
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn inventory_and_cgroups_match_the_pods() {
    require_root();
    let lab = lab();
    let text = std::fs::read_to_string(lab.inventory_path()).expect("inventory");
    let inv: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(inv["kind"], "List");
    let pods: Vec<&serde_json::Value> =
        inv["items"].as_array().expect("items").iter().filter(|i| i["kind"] == "Pod").collect();
    assert_eq!(pods.len(), lab.spec.pods.len());
    for pod in pods {
        let uid = pod["metadata"]["uid"].as_str().expect("uid");
        let slice = format!("kubepods-besteffort-pod{}.slice", uid.replace('-', "_"));
        let node = pod["spec"]["nodeName"].as_str().expect("nodeName");
        let dir = lab.node_cgroup(node).join("kubepods.slice/kubepods-besteffort.slice").join(&slice);
        assert!(dir.is_dir(), "missing {}", dir.display());
        for status in pod["status"]["containerStatuses"].as_array().expect("statuses") {
            let id = status["containerID"].as_str().and_then(|s| s.strip_prefix("containerd://")).expect("id");
            let procs =
                std::fs::read_to_string(dir.join(format!("cri-containerd-{id}.scope/cgroup.procs"))).expect("procs");
            assert_eq!(procs.lines().count(), 1, "one stand-in process per container: {}", status["name"]);
        }
    }
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn teardown_removes_everything_even_after_a_panic() {
    require_root();
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let lab = lab();
        tx.send((lab.name.clone(), lab.node_netns("node-a"), lab.cgroup().to_path_buf())).expect("send");
        panic!("a failing test");
    })
    .join();
    assert!(result.is_err());
    let (name, node_ns, cgroup) = rx.recv().expect("lab details");
    assert!(!netns_exists(&node_ns), "{node_ns} left behind");
    assert!(!cgroup.exists(), "{} left behind", cgroup.display());
    let list = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    assert!(!String::from_utf8_lossy(&list.stdout).contains(&name), "namespaces of {name} left");
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn fault_injectors_block_with_each_backend_and_verdict() {
    use observer_lab::{Backend, FirewallRule, Hook, Table, Verdict};
    require_root();
    let lab = lab();
    let istiod = lab.pod("istiod").expect("pod").clone();
    let to = |port: u16| SocketAddr::from((istiod.ip, port));
    let attempt =
        |port: u16| lab.connect_as_proxy("productpage", to(port), Duration::from_millis(1200)).expect("connect").result;
    for port in [15010, 15012, 15014, 15017] {
        assert_eq!(attempt(port), "ok", "port {port} before any fault");
    }
    let rule = |backend, table, hook, verdict, port| FirewallRule {
        backend,
        table,
        hook,
        verdict,
        src: None,
        dst: Some((istiod.ip.into(), 32)),
        dport: Some(port),
        comment: Some(format!("lab fault {port}")),
    };
    // nftables REJECT (ICMP admin-prohibited) in node-a's forward hook.
    lab.inject("node-a", &rule(Backend::Nftables, Table::Filter, Hook::Forward, Verdict::RejectAdminProhibited, 15014))
        .expect("nft");
    // iptables-legacy DROP in the raw table (PREROUTING).
    lab.inject("node-a", &rule(Backend::IptablesLegacy, Table::Raw, Hook::Prerouting, Verdict::Drop, 15010))
        .expect("legacy");
    // iptables (nft backend) REJECT with a TCP reset.
    lab.inject("node-a", &rule(Backend::IptablesNft, Table::Filter, Hook::Forward, Verdict::RejectTcpReset, 15017))
        .expect("iptables");
    assert_eq!(attempt(15014), "unreachable", "ICMP admin-prohibited surfaces as EHOSTUNREACH");
    assert_eq!(attempt(15010), "timeout");
    assert_eq!(attempt(15017), "refused");
    assert_eq!(attempt(15012), "ok", "an unrelated port still works");
}

/// Issue 13 item 9: a checkout in a private folder (mode 0700, as /root is). The lab runs the
/// sidecar's helper as uid 1337, which cannot reach binaries there; the lab must still work.
#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn the_lab_works_when_its_helpers_live_in_a_private_folder() {
    use std::os::unix::fs::PermissionsExt as _;

    use observer_lab::{Lab, LabSpec, Tools};
    require_root();
    let private = std::env::temp_dir().join(format!("observer-private-checkout-{}", std::process::id()));
    let target = private.join("target/debug");
    std::fs::create_dir_all(&target).expect("mkdir");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).expect("chmod 0700");
    let helper = target.join("lab-pod");
    std::fs::copy(env!("CARGO_BIN_EXE_lab-pod"), &helper).expect("copy lab-pod");
    let lab = Lab::up(LabSpec::bookinfo(), Tools { lab_pod: helper });
    let _ = std::fs::remove_dir_all(&private);
    let lab = lab.expect("the lab comes up with its helpers in a 0700 folder");
    let istiod = lab.pod("istiod").expect("pod").clone();
    // The proxy's own connection runs the helper as uid 1337.
    let out = lab
        .connect_as_proxy("productpage", SocketAddr::from((istiod.ip, 15012)), Duration::from_secs(2))
        .expect("connect as the proxy");
    assert_eq!(out.result, "ok", "{out:?}");
}

/// A control plane outside the nodes (issue 17): its namespace reaches a pod on every node
/// through the router, on the routed underlay, over an overlay (the router's table for its
/// subnet), and with peers-only uplinks (the nodes' route back to its subnet); the pods see the
/// control plane's own address (no NAT); a FORWARD rule in the router stops it; teardown removes it.
#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn a_control_plane_behind_the_router_reaches_every_nodes_pods_and_is_torn_down() {
    use observer_lab::{FirewallRule, Hook, LabSpec, Overlay, UplinkRoutes};
    require_root();
    let specs = [
        LabSpec::bookinfo(),
        LabSpec::bookinfo().with_overlay(Overlay::Vxlan),
        LabSpec::bookinfo().with_uplink_routes(UplinkRoutes::PeersOnly),
    ];
    for spec in specs {
        let what = format!("{:?} {:?}", spec.overlay, spec.nodes[0].uplink_routes);
        let Some(lab) = support::overlay_lab(spec.with_control_plane()) else { continue };
        let cp = lab.spec.control_plane.clone().expect("control plane");
        let ns = lab.control_plane_netns().expect("control-plane netns");
        assert!(netns_exists(&ns), "{what}: {ns}");
        for app in ["productpage", "istiod"] {
            let pod = lab.pod(app).expect("pod").clone();
            let out = lab
                .connect_from_control_plane(
                    SocketAddr::from((pod.ip, *pod.ports.first().expect("a port"))),
                    Duration::from_secs(3),
                )
                .expect("connect");
            assert_eq!(out.result, "ok", "{what}: control plane -> {app} on {}: {out:?}", pod.node);
            assert!(out.local.starts_with(&format!("{}:", cp.address)), "{what}: {out:?}");
        }
        assert!(lab.pod("kube-apiserver").is_err(), "a managed control plane has no pod on the nodes");
        let istiod = lab.pod("istiod").expect("pod").clone();
        lab.inject_in_netns(
            &format!("{}-router", lab.name),
            &FirewallRule::drop_tcp_to(Hook::Forward, istiod.ip.into(), 15017),
        )
        .expect("router rule");
        let out = lab
            .connect_from_control_plane(SocketAddr::from((istiod.ip, 15017)), Duration::from_millis(1500))
            .expect("connect");
        assert_eq!(out.result, "timeout", "{what}: the router's FORWARD rule drops it: {out:?}");
        lab.down().expect("teardown");
        assert!(!netns_exists(&ns), "{what}: {ns} left behind");
    }
    let plain = lab();
    assert_eq!(plain.control_plane_netns(), None);
    let err = plain.connect_from_control_plane("10.244.2.10:15017".parse().expect("addr"), Duration::from_secs(1));
    assert!(matches!(err, Err(observer_lab::LabError::NoControlPlane)), "{err:?}");
}
