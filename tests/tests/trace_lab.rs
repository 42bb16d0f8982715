//! `observer trace` against the lab: the exact 5-tuple of a pod's SYN to istiod, and the
//! NETFILTER_DROP of that flow once a node firewall blocks it.

mod support;

use std::{net::SocketAddr, time::Duration};

use observer_lab::{FirewallRule, Hook};
use support::{lab, require_root, Running};

#[test]
fn trace_sees_the_xds_syn_and_its_netfilter_drop() {
    if !require_root() {
        return;
    }
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
    let mut rule = FirewallRule::drop_tcp(Hook::Forward, 15012);
    rule.dst = Some((istiod.ip, 32));
    lab.inject("node-a", &rule).expect("inject");
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
    let lines = observer.lines();
    let status = observer.stop();
    assert!(status.success(), "observer exit {status}; output:\n{}", lines.join("\n"));
}

#[test]
fn trace_ignores_drops_in_other_namespaces() {
    if !require_root() {
        return;
    }
    let lab = lab();
    let node_ns = lab.node_netns("node-a");
    let istiod = lab.pod("istiod").expect("pod").clone();
    // Watch node-a; the drop happens on node-b (another namespace): not reported.
    let observer = Running::start(&["trace", "--netns", &node_ns, "--output", "json", "--port", "15010"]);
    let mut rule = FirewallRule::drop_tcp(Hook::Input, 15010);
    rule.dst = Some((istiod.ip, 32));
    lab.inject_in_netns(&lab.pod_netns("istiod").expect("ns"), &rule).expect("inject");
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
fn trace_stops_by_itself_after_count_events() {
    if !require_root() {
        return;
    }
    let lab = lab();
    let node_ns = lab.node_netns("node-a");
    let istiod = lab.pod("istiod").expect("pod").clone();
    let mut observer = std::process::Command::new(support::observer_bin())
        .args(["trace", "--netns", &node_ns, "--output", "json", "--count", "2", "--duration", "20"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // Wait for attach (the ready line) before making traffic.
    let mut stderr = std::io::BufReader::new(observer.stderr.take().expect("stderr"));
    let mut line = String::new();
    while std::io::BufRead::read_line(&mut stderr, &mut line).expect("read") > 0 && !line.contains("ready") {
        line.clear();
    }
    let started = std::time::Instant::now();
    let ok = lab.connect_as_proxy("productpage", SocketAddr::from((istiod.ip, 15012)), Duration::from_secs(3)).expect("connect");
    assert_eq!(ok.result, "ok");
    let out = observer.wait_with_output().expect("wait");
    assert!(out.status.success());
    assert!(started.elapsed() < Duration::from_secs(15), "stopped by --count, not --duration");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    for l in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(l).expect("json line");
        assert!(v["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{v}");
    }
}

#[test]
fn trace_ties_an_icmp_admin_prohibited_to_the_rejected_flow() {
    use observer_lab::{Backend, Verdict};
    if !require_root() {
        return;
    }
    let lab = lab();
    let istiod = lab.pod("istiod").expect("pod").clone();
    let productpage = lab.pod("productpage").expect("pod").clone();
    let observer = Running::start(&["trace", "--netns", &lab.node_netns("node-a"), "--output", "json", "--port", "15014"]);
    let mut rule = FirewallRule::drop_tcp(Hook::Forward, 15014);
    rule.backend = Backend::Nftables;
    rule.verdict = Verdict::RejectAdminProhibited;
    lab.inject("node-a", &rule).expect("inject");
    let out = lab.connect_as_proxy("productpage", SocketAddr::from((istiod.ip, 15014)), Duration::from_secs(2)).expect("connect");
    assert_eq!(out.result, "unreachable", "{out:?}");
    let sport = out.local_addr().expect("local").port();
    let icmp = observer.wait_for("the ICMP error back to productpage", Duration::from_secs(5), |v| {
        v["type"] == "icmp-error" && v["quoted"]["sport"] == sport && v["hook"] == "tc-egress" && v["interface"].as_str().is_some_and(|i| i.starts_with("veth"))
    });
    assert_eq!(icmp["meaning"], "admin-prohibited", "{icmp}");
    assert_eq!((icmp["icmp_type"].as_u64(), icmp["icmp_code"].as_u64()), (Some(3), Some(13)));
    assert_eq!(icmp["quoted"]["src"], productpage.ip.to_string());
    assert_eq!(icmp["quoted"]["dst"], istiod.ip.to_string());
    assert_eq!(icmp["quoted"]["dport"], 15014);
    assert_eq!(icmp["flow"]["dst"], productpage.ip.to_string(), "the error goes back to the client");
    assert_eq!(icmp["flow"]["protocol"], "ICMP");
}
