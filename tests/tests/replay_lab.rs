//! Record and replay in the lab: `observer diagnose --record` on a scenario, then
//! `observer diagnose --replay` of that recording as an unprivileged user (no root, no eBPF)
//! gives the same findings (requirement, kind, mechanism, endpoints, culprit) as the live run.
//!
//! These tests also regenerate the recordings checked in under observer/tests/recordings/ (the
//! host tier replays them in plain `cargo test`): run them with
//! `OBSERVER_RECORDINGS_OUT=$PWD/observer/tests/recordings` to rewrite the files.
// Test helpers below fail loudly with context (STYLE: tests panic with context).
#![allow(clippy::expect_used, clippy::panic)]

mod support;

use std::{
    net::SocketAddr,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use observer_lab::{FirewallRule, Hook, Lab};
use support::{lab, require_root, run_observer_as, Running};

/// The fields a replay must reproduce, per finding.
fn essentials(report: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut out: Vec<serde_json::Value> = report["findings"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|f| {
            serde_json::json!({
                "requirement": f["requirement"],
                "kind": f["kind"],
                "mechanism": f["mechanism"],
                "src": f["src"],
                "dst": f["dst"],
                "culprit": f["culprit"],
            })
        })
        .collect();
    out.sort_by_key(|v| v.to_string());
    out
}

/// A private directory readable by everyone (the replay runs as nobody).
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("observer-replay-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// Runs `diagnose --record` on `node` while `traffic` runs; replays the recording as nobody;
/// asserts both reports have the same findings; returns them (and writes the checked-in
/// artifacts when OBSERVER_RECORDINGS_OUT is set).
fn record_and_replay(lab: &Lab, node: &str, name: &str, traffic: impl FnOnce()) -> Vec<serde_json::Value> {
    let dir = scratch(name);
    let recording = dir.join("recording.jsonl");
    let inventory = dir.join("inventory.json");
    std::fs::copy(lab.inventory_path(), &inventory).expect("inventory copy");
    let cgroup_root = lab.cgroup().display().to_string();
    let running = Running::start(&[
        "diagnose",
        "--inventory",
        &inventory.display().to_string(),
        "--netns",
        &lab.node_netns(node),
        "--node-name",
        node,
        "--cgroup-root",
        &cgroup_root,
        "--output",
        "json",
        "--record",
        &recording.display().to_string(),
    ]);
    traffic();
    std::thread::sleep(Duration::from_millis(500));
    let lines = running.lines_handle();
    let (_, stderr) = running.stop_with_stderr();
    let text = lines.lock().expect("lock").join("\n");
    let live: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("live report is not JSON ({e}):\n{text}\n{stderr:?}"));
    for f in [&recording, &inventory] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let replayed = replay_as_nobody(&recording, &inventory);
    let (live_findings, replayed_findings) = (essentials(&live), essentials(&replayed));
    assert_eq!(replayed_findings, live_findings, "replay differs from live:\nlive {live:#}\nreplay {replayed:#}");
    for stat in ["connections", "established", "refused_by_application", "unresolved", "events"] {
        assert_eq!(replayed["stats"][stat], live["stats"][stat], "stats.{stat}: live {live:#}\nreplay {replayed:#}");
    }
    if let Some(out) = std::env::var_os("OBSERVER_RECORDINGS_OUT") {
        let target = Path::new(&out).join(name);
        std::fs::create_dir_all(&target).expect("recordings dir");
        std::fs::copy(&recording, target.join("recording.jsonl")).expect("copy recording");
        std::fs::copy(&inventory, target.join("inventory.json")).expect("copy inventory");
        let expected = serde_json::json!({ "node": node, "findings": live_findings, "stats": live["stats"] });
        std::fs::write(target.join("expected.json"), serde_json::to_string_pretty(&expected).expect("json") + "\n")
            .expect("write expected");
    }
    let _ = std::fs::remove_dir_all(&dir);
    live_findings
}

fn replay_as_nobody(recording: &Path, inventory: &Path) -> serde_json::Value {
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(support::observer_bin())
        .args(["diagnose", "--replay"])
        .arg(recording)
        .arg("--inventory")
        .arg(inventory)
        .args(["--output", "json"])
        .output()
        .expect("run the replay");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "replay failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("replay report is not JSON ({e}):\n{stdout}"))
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn replay_of_a_dropped_xds_connection_names_the_same_rule() {
    require_root();
    let lab = lab();
    let istiod = lab.pod("istiod").expect("pod").clone();
    let svc = lab.spec.services.iter().find(|s| s.name == "istiod").expect("svc").cluster_ip;
    let f = record_and_replay(&lab, "node-a", "xds-dropped", || {
        lab.inject("node-a", &FirewallRule::drop_tcp_to(Hook::Forward, istiod.ip.into(), 15012)).expect("inject");
        lab.connect_as_proxy("productpage", SocketAddr::from((svc, 15012)), Duration::from_millis(2500))
            .expect("connect");
    });
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!((f[0]["requirement"].as_str(), f[0]["mechanism"].as_str()), (Some("R5"), Some("dropped")));
    assert_eq!(f[0]["culprit"]["confidence"], "confirmed", "the culprit replays too: {f:#?}");
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn replay_of_an_app_port_drop_between_sidecars_is_r4() {
    require_root();
    let lab = lab();
    let details = lab.pod("details").expect("pod").clone();
    let f = record_and_replay(&lab, "node-a", "app-port-dropped", || {
        lab.inject("node-a", &FirewallRule::drop_tcp_to(Hook::Forward, details.ip.into(), 9080)).expect("inject");
        lab.connect("productpage", SocketAddr::from((details.ip, 9080)), Duration::from_millis(2500)).expect("connect");
    });
    assert!(f.iter().any(|f| f["kind"] == "policy-conflict"), "{f:#?}");
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn replay_of_an_underlay_drop_is_silent_r3() {
    require_root();
    let lab = lab();
    let details = lab.pod("details").expect("pod").clone();
    let f = record_and_replay(&lab, "node-a", "underlay-silent", || {
        let mut rule = FirewallRule::drop_tcp(Hook::Forward, 9080);
        rule.dst = Some((details.ip.into(), 32));
        lab.inject_in_netns(&format!("{}-router", lab.name), &rule).expect("inject");
        lab.connect_as_proxy("productpage", SocketAddr::from((details.ip, 9080)), Duration::from_millis(2500))
            .expect("connect");
    });
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(f[0]["mechanism"], "silent");
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn replay_of_a_blackhole_route_is_r3() {
    require_root();
    let lab = lab();
    let details = lab.pod("details").expect("pod").clone();
    let f = record_and_replay(&lab, "node-a", "blackhole-route", || {
        let out = std::process::Command::new("ip")
            .args(["-n", &lab.node_netns("node-a"), "route", "add", "blackhole", "10.244.2.0/24"])
            .output()
            .expect("ip route");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        lab.connect_as_proxy("productpage", SocketAddr::from((details.ip, 9080)), Duration::from_millis(2500))
            .expect("connect");
    });
    assert!(!f.is_empty() && f.iter().all(|f| f["requirement"] == "R3"), "{f:#?}");
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn replay_of_istiod_cut_off_from_the_api_server_is_r2() {
    require_root();
    let lab = lab();
    let apiserver = lab.pod("kube-apiserver").expect("pod").clone();
    let kubernetes = lab.spec.services.iter().find(|s| s.name == "kubernetes").expect("svc").cluster_ip;
    let f = record_and_replay(&lab, "node-b", "apiserver-cut", || {
        lab.inject("node-b", &FirewallRule::drop_tcp_to(Hook::Forward, apiserver.ip.into(), 6443)).expect("inject");
        lab.connect("istiod", SocketAddr::from((kubernetes, 443)), Duration::from_millis(2500)).expect("connect");
    });
    assert!(f.iter().any(|f| f["kind"] == "apiserver-unreachable"), "{f:#?}");
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn replay_of_a_rejected_webhook_call_is_r5_rejected() {
    use observer_lab::Verdict;
    require_root();
    let lab = lab();
    let istiod = lab.pod("istiod").expect("pod").clone();
    let f = record_and_replay(&lab, "node-b", "webhook-rejected", || {
        let mut rule = FirewallRule::drop_tcp(Hook::Forward, 15017);
        rule.dst = Some((istiod.ip.into(), 32));
        rule.verdict = Verdict::RejectAdminProhibited;
        lab.inject("node-b", &rule).expect("inject");
        lab.connect("kube-apiserver", SocketAddr::from((istiod.ip, 15017)), Duration::from_secs(2)).expect("connect");
    });
    let f = f.iter().find(|f| f["kind"] == "control-plane-blocked").unwrap_or_else(|| panic!("{f:#?}"));
    assert_eq!((f["mechanism"].as_str(), f["culprit"]["chain"].as_str()), (Some("rejected"), Some("FORWARD")));
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn replay_of_a_closed_port_is_no_finding() {
    require_root();
    let lab = lab();
    let istiod = lab.pod("istiod").expect("pod").clone();
    let f = record_and_replay(&lab, "node-b", "closed-port", || {
        lab.connect_as_proxy("productpage", SocketAddr::from((istiod.ip, 15999)), Duration::from_secs(2))
            .expect("connect");
    });
    assert!(f.is_empty(), "{f:#?}");
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn replay_of_healthy_mesh_traffic_is_no_finding() {
    require_root();
    let lab = lab();
    let reviews = lab.pod("reviews").expect("pod").clone();
    let svc = lab.spec.services.iter().find(|s| s.name == "istiod").expect("svc").cluster_ip;
    let f = record_and_replay(&lab, "node-a", "healthy", || {
        for _ in 0..5 {
            let out = lab.connect("productpage", SocketAddr::from((reviews.ip, 9080)), Duration::from_secs(2));
            assert_eq!(out.expect("connect").result, "ok");
            let out = lab.connect_as_proxy("reviews", SocketAddr::from((svc, 15012)), Duration::from_secs(2));
            assert_eq!(out.expect("connect").result, "ok");
        }
    });
    assert!(f.is_empty(), "{f:#?}");
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn a_trace_recording_replays_into_the_diagnosis() {
    require_root();
    let lab = lab();
    let istiod = lab.pod("istiod").expect("pod").clone();
    let dir = scratch("trace");
    let recording = dir.join("trace.jsonl");
    let inventory = dir.join("inventory.json");
    std::fs::copy(lab.inventory_path(), &inventory).expect("inventory copy");
    let cgroup_root = lab.cgroup().display().to_string();
    let running = Running::start(&[
        "trace",
        "--inventory",
        &inventory.display().to_string(),
        "--netns",
        &lab.node_netns("node-a"),
        "--cgroup-root",
        &cgroup_root,
        "--output",
        "json",
        "--record",
        &recording.display().to_string(),
    ]);
    lab.inject("node-a", &FirewallRule::drop_tcp_to(Hook::Forward, istiod.ip.into(), 15012)).expect("inject");
    lab.connect_as_proxy("productpage", SocketAddr::from((istiod.ip, 15012)), Duration::from_millis(2500))
        .expect("connect");
    std::thread::sleep(Duration::from_millis(500));
    let printed = running.json();
    running.stop();
    for f in [&recording, &inventory] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    // The trace of the recording prints what the live trace printed.
    let (code, _) = run_observer_as(65534, &["trace", "--replay", &recording.display().to_string()]);
    assert_eq!(code, 0);
    let replayed = replay_as_nobody(&recording, &inventory);
    let f = essentials(&replayed);
    assert_eq!(f.len(), 1, "{replayed:#}");
    assert_eq!((f[0]["requirement"].as_str(), f[0]["mechanism"].as_str()), (Some("R5"), Some("dropped")));
    assert_eq!(f[0]["culprit"]["rule"], format!("-A FORWARD -d {}/32 -p tcp -m tcp --dport 15012 -j DROP", istiod.ip));
    assert!(printed.iter().any(|o| o["drop_reason"] == "NETFILTER_DROP"), "{printed:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}
