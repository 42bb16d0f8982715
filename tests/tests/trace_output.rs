//! `observer trace` as an operator uses it: inventory names, filters, --count/--duration,
//! --pcap, all asserted on its JSON lines against the lab.

mod support;

use std::{net::SocketAddr, time::Duration};

use observer_lab::{FirewallRule, Hook};
use support::{lab, require_root, Running};

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn trace_stops_by_itself_after_count_events() {
    require_root();
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
    let ok = lab
        .connect_as_proxy("productpage", SocketAddr::from((istiod.ip, 15012)), Duration::from_secs(3))
        .expect("connect");
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
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn inventory_names_pods_services_and_istio_ports() {
    require_root();
    let lab = lab();
    let inventory = lab.inventory_path().display().to_string();
    let productpage = lab.pod("productpage").expect("pod").clone();
    let istiod = lab.pod("istiod").expect("pod").clone();
    let observer = Running::start(&[
        "trace",
        "--netns",
        &lab.node_netns("node-a"),
        "--output",
        "json",
        "--port",
        "15012",
        "--inventory",
        &inventory,
    ]);
    let svc = lab.spec.services.iter().find(|s| s.name == "istiod").expect("svc").cluster_ip;
    let ok =
        lab.connect_as_proxy("productpage", SocketAddr::from((svc, 15012)), Duration::from_secs(3)).expect("connect");
    assert_eq!(ok.result, "ok");
    let sport = ok.local_addr().expect("local").port();
    let at_veth = observer.wait_for("the SYN to the Service IP", Duration::from_secs(5), |v| {
        v["hook"] == "tc-ingress"
            && v["tcp_flags"] == "SYN"
            && v["flow"]["sport"] == sport
            && v["flow"]["dst"] == svc.to_string()
    });
    assert_eq!(at_veth["src"]["pod"], productpage.key().as_str(), "{at_veth}");
    assert_eq!(at_veth["src"]["workload"], "productpage-v1");
    assert_eq!(at_veth["src"]["mesh"], "sidecar");
    assert_eq!(at_veth["dst"]["service"], "istio-system/istiod");
    assert_eq!(at_veth["dst"]["istio_port"], "xds-tls");
    assert_eq!(at_veth["dst"]["role"], "istiod");
    let after_dnat = observer.wait_for("the SYN after kube-proxy DNAT", Duration::from_secs(5), |v| {
        v["hook"] == "tc-egress" && v["interface"] == "eth0" && v["flow"]["sport"] == sport
    });
    assert_eq!(after_dnat["dst"]["pod"], istiod.key().as_str());
    assert_eq!(after_dnat["dst"]["istio_port"], "xds-tls");
    // The connect() has no source address yet: its pod comes from the caller's cgroup.
    let connect = observer.wait_for("the proxy's connect()", Duration::from_secs(5), |v| {
        v["type"] == "connect" && v["src"]["pod"] == productpage.key().as_str()
    });
    assert_eq!(connect["dst"]["istio_port"], "xds-tls");
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn filters_select_exactly_the_expected_events() {
    require_root();
    let lab = lab();
    let inventory = lab.inventory_path().display().to_string();
    let productpage = lab.pod("productpage").expect("pod").clone();
    let istiod = lab.pod("istiod").expect("pod").clone();
    let details = lab.pod("details").expect("pod").clone();
    let node_ns = lab.node_netns("node-a");
    lab.inject("node-a", &FirewallRule::drop_tcp_to(Hook::Forward, istiod.ip.into(), 15012)).expect("inject");

    // --pod + --verdict dropped: only productpage's drops, not reviews' (same rule), no packets.
    let pod = Running::start(&[
        "trace",
        "--netns",
        &node_ns,
        "--output",
        "json",
        "--inventory",
        &inventory,
        "--pod",
        &productpage.key(),
        "--verdict",
        "dropped",
    ]);
    // --istio: Istio ports only (15012 here), not the app port 9080.
    let istio =
        Running::start(&["trace", "--netns", &node_ns, "--output", "json", "--inventory", &inventory, "--istio"]);
    let xds = SocketAddr::from((istiod.ip, 15012));
    for app in ["productpage", "reviews"] {
        let out = lab.connect_as_proxy(app, xds, Duration::from_millis(1200)).expect("connect");
        assert_eq!(out.result, "timeout");
    }
    let ok = lab.connect("productpage", SocketAddr::from((details.ip, 9080)), Duration::from_secs(3)).expect("connect");
    assert_eq!(ok.result, "ok");
    pod.wait_for("productpage's drop", Duration::from_secs(5), |v| v["type"] == "drop");
    istio.wait_for("an xDS SYN", Duration::from_secs(5), |v| v["flow"]["dport"] == 15012);
    std::thread::sleep(Duration::from_millis(500));
    let pod_events = pod.json();
    assert!(!pod_events.is_empty());
    for v in &pod_events {
        assert_eq!(v["type"], "drop", "--verdict dropped: {v}");
        assert_eq!(v["src"]["pod"], productpage.key().as_str(), "--pod: {v}");
        assert_eq!(v["drop_reason"], "NETFILTER_DROP");
    }
    let istio_events = istio.json();
    assert!(istio_events.iter().any(|v| v["type"] == "drop"));
    for v in &istio_events {
        let ports = [&v["flow"]["sport"], &v["flow"]["dport"], &v["quoted"]["sport"], &v["quoted"]["dport"]];
        assert!(!ports.iter().any(|p| **p == 9080), "--istio: no app-port event: {v}");
    }
    let (status, stderr) = istio.stop_with_stderr();
    assert!(status.success());
    assert!(stderr.iter().any(|l| l.starts_with("summary: ") && l.contains(" dropped")), "{stderr:?}");
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn pcap_of_a_blocked_flow_is_read_by_tshark() {
    require_root();
    let lab = lab();
    let istiod = lab.pod("istiod").expect("pod").clone();
    let productpage = lab.pod("productpage").expect("pod").clone();
    let pcap = std::env::temp_dir().join(format!("{}-blocked.pcap", lab.name));
    let pcap_arg = pcap.display().to_string();
    let observer = Running::start(&[
        "trace",
        "--netns",
        &lab.node_netns("node-a"),
        "--output",
        "json",
        "--port",
        "15012",
        "--pcap",
        &pcap_arg,
    ]);
    lab.inject("node-a", &FirewallRule::drop_tcp_to(Hook::Forward, istiod.ip.into(), 15012)).expect("inject");
    let out = lab
        .connect_as_proxy("productpage", SocketAddr::from((istiod.ip, 15012)), Duration::from_millis(1200))
        .expect("connect");
    assert_eq!(out.result, "timeout");
    let sport = out.local_addr().expect("local").port();
    observer.wait_for("the drop", Duration::from_secs(5), |v| v["type"] == "drop" && v["flow"]["sport"] == sport);
    assert!(observer.stop().success());
    let tshark = std::process::Command::new("tshark")
        .args([
            "-r",
            &pcap_arg,
            "-T",
            "fields",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "tcp.srcport",
            "-e",
            "tcp.dstport",
            "-e",
            "tcp.flags.syn",
            "-e",
            "tcp.flags.ack",
        ])
        .output()
        .expect("tshark (installed by cargo xtask setup)");
    let _ = std::fs::remove_file(&pcap);
    assert!(tshark.status.success(), "{}", String::from_utf8_lossy(&tshark.stderr));
    let text = String::from_utf8_lossy(&tshark.stdout);
    let syn = text
        .lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .find(|f| f.len() == 6 && f[2] == sport.to_string())
        .unwrap_or_else(|| panic!("the blocked SYN is not in the pcap:\n{text}"));
    assert_eq!(syn[..4], [productpage.ip.to_string(), istiod.ip.to_string(), sport.to_string(), "15012".to_string()]);
    assert!(matches!(syn[4], "1" | "True"), "SYN flag set: {syn:?}");
    assert!(matches!(syn[5], "0" | "False"), "no ACK: {syn:?}");
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn trace_stops_cleanly_after_duration_with_a_summary() {
    require_root();
    let lab = lab();
    let start = std::time::Instant::now();
    // Port 9 (discard): no lab uses it, so the cgroup hooks (which watch every cgroup of the
    // machine) see none of the traffic of tests running beside this one.
    let out = std::process::Command::new(support::observer_bin())
        .args(["trace", "--netns", &lab.node_netns("node-a"), "--duration", "1", "--port", "9"])
        .output()
        .expect("run");
    let elapsed = start.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(10), "{elapsed:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().next().is_some_and(|l| l.starts_with("TIME ")), "{stdout}");
    assert!(stdout.lines().last().is_some_and(|l| l.starts_with("summary: 0 events")), "{stdout}");
}
