//! The hostile frames of observer/tests/hostile/frames.py on the wire: sent raw from a peer
//! namespace into a watched one, once without observer and once with it. The packets' fate
//! (every counter of the receiving namespace's IP/ICMP/TCP/UDP stacks, and both interfaces'
//! packet counts) is the same, and observer keeps running.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::{collections::BTreeMap, process::Command, thread, time::Duration};

use support::{netns::Netns, require_root, Running};

fn frames() -> Vec<Vec<u8>> {
    named_frames().into_iter().map(|(_, frame)| frame).collect()
}

/// The frames with their names.
fn named_frames() -> Vec<(String, Vec<u8>)> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../observer/tests/hostile/frames.py");
    let out = Command::new("python3").arg(script).output().expect("run python3");
    assert!(
        out.status.success(),
        "{script}: {} (`cargo xtask setup` installs scapy)",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            let hex = v["hex"].as_str().expect("hex");
            let bytes = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"));
            (v["name"].as_str().expect("name").to_string(), bytes.collect())
        })
        .collect()
}

/// Every counter of a namespace's stack (/proc/net/snmp, snmp6, netstat) and of its interface.
fn counters(ns: &Netns, iface: &str) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for file in ["snmp", "netstat"] {
        let text = ns_output(ns, &["cat", &format!("/proc/net/{file}")]);
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.chunks(2) {
            let (Some(names), Some(values)) = (pair.first(), pair.get(1)) else { continue };
            let prefix = names.split(':').next().unwrap_or_default();
            for (n, v) in names.split_whitespace().skip(1).zip(values.split_whitespace().skip(1)) {
                out.insert(format!("{prefix}.{n}"), v.parse().unwrap_or(0));
            }
        }
    }
    for line in ns_output(ns, &["cat", "/proc/net/snmp6"]).lines() {
        if let Some((n, v)) = line.split_once(char::is_whitespace) {
            out.insert(n.to_string(), v.trim().parse().unwrap_or(0));
        }
    }
    let link: serde_json::Value =
        serde_json::from_str(&ns_output(ns, &["ip", "-s", "-j", "link", "show", iface])).expect("link json");
    for dir in ["rx", "tx"] {
        for field in ["packets", "bytes", "dropped", "errors"] {
            out.insert(format!("{iface}.{dir}.{field}"), link[0]["stats64"][dir][field].as_i64().unwrap_or(-1));
        }
    }
    out
}

fn ns_output(ns: &Netns, cmd: &[&str]) -> String {
    let out = Command::new("ip").args(["netns", "exec", &ns.0]).args(cmd).output().expect("ip netns exec");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn delta(before: &BTreeMap<String, i64>, after: &BTreeMap<String, i64>) -> BTreeMap<String, i64> {
    after.iter().map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0))).filter(|(_, d)| *d != 0).collect()
}

/// Sends every frame, lets the stack finish with them, and returns what changed on both sides.
fn fate(node: &Netns, peer: &Netns, frames: &[Vec<u8>]) -> (BTreeMap<String, i64>, BTreeMap<String, i64>) {
    let (node0, peer0) = (counters(node, "hb"), counters(peer, "ha"));
    for chunk in frames.chunks(64) {
        peer.send_frames("ha", chunk);
        thread::sleep(Duration::from_millis(5));
    }
    thread::sleep(Duration::from_millis(1500));
    (delta(&node0, &counters(node, "hb")), delta(&peer0, &counters(peer, "ha")))
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn hostile_frames_have_the_same_fate_with_and_without_observer() {
    require_root();
    let frames = frames();
    assert!(frames.len() >= 60);
    let (node, peer) = (Netns::new("hwn"), Netns::new("hwp"));
    node.ip(&["link", "add", "hb", "type", "veth", "peer", "name", "ha", "netns", &peer.0]);
    // IPv4 only, no link-local IPv6 (no MLD/ND chatter in the counters); the frames' source has
    // a permanent neighbour entry (answers leave at once, no ARP timing), ICMP errors are not
    // rate-limited (the second run must not be throttled by the first).
    node.ip(&["link", "set", "hb", "address", "02:00:00:00:00:02", "addrgenmode", "none"]);
    node.ip(&["addr", "add", "10.244.2.10/16", "dev", "hb"]);
    node.ip(&["link", "set", "hb", "up"]);
    node.ip(&["neigh", "add", "10.244.1.10", "lladdr", "02:00:00:00:00:01", "dev", "hb", "nud", "permanent"]);
    ns_output(&node, &["sysctl", "-q", "-w", "net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0"]);
    peer.ip(&["link", "set", "ha", "address", "02:00:00:00:00:01", "addrgenmode", "none"]);
    peer.ip(&["link", "set", "ha", "up"]);
    thread::sleep(Duration::from_millis(500));

    let without = fate(&node, &peer, &frames);
    let mut observer = Running::start(&["trace", "--netns", &node.0, "--output", "json"]);
    let with = fate(&node, &peer, &frames);
    assert!(observer.alive(), "observer exited: {:?}", observer.stderr());
    let (status, stderr) = observer.stop_with_stderr();
    assert!(status.success(), "observer exit {status}: {stderr:?}");
    assert!(without.0.get("hb.rx.packets").copied().unwrap_or(0) >= frames.len() as i64, "frames arrived: {without:?}");
    assert_eq!(with.0, without.0, "the receiving namespace's counters differ with observer attached");
    assert_eq!(with.1, without.1, "the sender's counters (answers received) differ with observer attached");
}

/// `--kernel-log` end to end: `observer trace` on a namespace receiving 200 IPv6 SYNs behind 9
/// destination-options headers (one more than the programs' bounded walk) logs the parse bound
/// reached, at most once per CPU within the second (never per packet); without the flag, the
/// same frames log nothing from the kernel.
#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn kernel_log_lines_of_a_parse_bound_reach_the_log_only_with_the_flag_and_never_per_packet() {
    require_root();
    let frame = named_frames()
        .into_iter()
        .find(|(name, _)| name == "ipv6 9 destination-option headers")
        .map(|(_, frame)| frame)
        .expect("the 9-header frame of frames.py");
    let (node, peer) = (Netns::new("kln"), Netns::new("klp"));
    node.ip(&["link", "add", "kb", "type", "veth", "peer", "name", "ka", "netns", &peer.0]);
    node.ip(&["link", "set", "kb", "up"]);
    peer.ip(&["link", "set", "ka", "up"]);
    let burst = vec![frame; 200];
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let kernel_lines = |stderr: &[String]| -> Vec<String> {
        stderr.iter().filter(|l| l.contains("kernel: IPv6 extension header walk limit")).cloned().collect()
    };
    for flag in [true, false] {
        let mut args = vec!["trace", "--netns", &node.0, "--output", "json"];
        if flag {
            args.push("--kernel-log");
        }
        let mut observer = Running::start(&args);
        peer.send_frames("ka", &burst);
        // The log buffer is read at least every 100 ms.
        thread::sleep(Duration::from_millis(1000));
        assert!(observer.alive(), "observer exited: {:?}", observer.stderr());
        let (status, stderr) = observer.stop_with_stderr();
        assert!(status.success(), "observer exit {status}: {stderr:?}");
        let lines = kernel_lines(&stderr);
        if flag {
            assert!(
                (1..=cpus).contains(&lines.len()),
                "one line per CPU within the second for 200 packets, got {}: {lines:#?}",
                lines.len()
            );
            assert!(lines[0].contains("WARN"), "{}", lines[0]);
            assert!(lines[0].contains("limit (8) reached (next header 60)"), "{}", lines[0]);
        } else {
            assert!(lines.is_empty(), "kernel log lines without --kernel-log: {lines:#?}");
            assert!(!stderr.iter().any(|l| l.contains("kernel: ")), "{stderr:#?}");
        }
    }
}
