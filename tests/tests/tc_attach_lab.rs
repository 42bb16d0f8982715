//! `--tc-attach netlink`: observer's classifiers as `cls_bpf` filters on clsact (what start-up
//! on nodes with hundreds of pod interfaces needs, see BENCHMARKS.md). Every interface gets one
//! filter per direction, packets are seen at both ends of a veth, a clean exit removes the
//! filters, a killed observer's filters (which the kernel keeps) are replaced at the next start,
//! and a running observer's filters are never taken by another one starting.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::{path::PathBuf, process::Command, time::Duration};

use support::{
    netns::{send_frames, wait_until, Netns},
    require_root, Running,
};

/// A cgroup v2 directory of this test (so that no cgroup hook lands on the node's root), removed
/// on drop.
struct Cgroup(PathBuf);

impl Cgroup {
    fn new(tag: &str) -> Self {
        let dir = PathBuf::from(format!("/sys/fs/cgroup/unified/obsrb{}{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create cgroup");
        Self(dir)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Program ids of the `cls_bpf` filters named `program` on `iface`'s clsact hook `direction`
/// (`ingress`/`egress`) in namespace `ns`, as `tc -j filter show` lists them.
fn filters(ns: &str, iface: &str, direction: &str, program: &str) -> Vec<u64> {
    let out =
        Command::new("tc").args(["-n", ns, "-j", "filter", "show", "dev", iface, direction]).output().expect("run tc");
    assert!(out.status.success(), "tc filter show: {}", String::from_utf8_lossy(&out.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    listed
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["kind"] == "bpf" && f["options"]["bpf_name"] == program)
        .map(|f| f["options"]["prog"]["id"].as_u64().unwrap_or_else(|| panic!("no program id in {f}")))
        .collect()
}

/// (ingress, egress) program ids of observer's filters on `iface`.
fn observer_filters(ns: &str, iface: &str) -> (Vec<u64>, Vec<u64>) {
    (filters(ns, iface, "ingress", "observer_tc_ingress"), filters(ns, iface, "egress", "observer_tc_egress"))
}

/// A TCP SYN from 10.98.0.1:`sport` to 10.98.0.2:80, addressed to `dst_mac`.
fn syn_frame(dst_mac: [u8; 6], sport: u16) -> Vec<u8> {
    let mut f = dst_mac.to_vec();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00]);
    let mut ip = vec![0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 98, 0, 1, 10, 98, 0, 2];
    let sum = ip.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum::<u32>();
    let sum = (sum & 0xffff) + (sum >> 16);
    ip[10..12].copy_from_slice(&(!(((sum & 0xffff) + (sum >> 16)) as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&80u16.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    f
}

/// Sends SYNs from `sport` on out of `ta` and waits until `observer` showed the one of `sport`
/// leaving `ta` (tc-egress) and arriving at `tb` (tc-ingress), with its 5-tuple.
fn syn_seen_at_both_ends(ns: &str, observer: &Running, sport: u16) {
    send_frames(ns, "ta", (0..5).map(|i| syn_frame([2, 0, 0, 0, 0, 2], sport + i)).collect());
    for (hook, iface) in [("tc-egress", "ta"), ("tc-ingress", "tb")] {
        let seen = observer.wait_for(&format!("the SYN at {iface} ({hook})"), Duration::from_secs(10), |v| {
            v["type"] == "packet" && v["hook"] == hook && v["flow"]["sport"] == sport
        });
        assert_eq!(seen["interface"], iface, "{seen}");
        assert_eq!(seen["tcp_flags"], "SYN", "{seen}");
        assert_eq!(seen["flow"]["src"], "10.98.0.1", "{seen}");
        assert_eq!(seen["flow"]["dst"], "10.98.0.2", "{seen}");
        assert_eq!(seen["flow"]["dport"], 80, "{seen}");
    }
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn netlink_filters_see_packets_are_removed_at_exit_and_a_killed_observers_are_replaced() {
    require_root();
    let ns = Netns::new("tcnl");
    ns.ip(&["link", "add", "ta", "type", "veth", "peer", "name", "tb"]);
    ns.ip(&["link", "set", "tb", "address", "02:00:00:00:00:02"]);
    ns.ip(&["addr", "add", "10.98.0.2/24", "dev", "tb"]);
    for iface in ["ta", "tb"] {
        ns.ip(&["link", "set", iface, "up"]);
    }
    ns.add_veths("tx", 10);
    let ifaces: Vec<String> = ["ta".to_string(), "tb".to_string()]
        .into_iter()
        .chain((0..10).flat_map(|i| [format!("tx{i}a"), format!("tx{i}b")]))
        .collect();
    let cgroup = Cgroup::new("tcnl");
    let args = [
        "trace",
        "--netns",
        &ns.0,
        "--cgroup-root",
        cgroup.0.to_str().unwrap(),
        "--tc-attach",
        "netlink",
        "--port",
        "80",
        "--output",
        "json",
    ];
    for iface in &ifaces {
        assert_eq!(observer_filters(&ns.0, iface), (vec![], vec![]), "{iface}: nothing before observer");
    }

    // One observer: one filter per hook on every interface, and packets seen at both ends.
    let first = Running::start(&args);
    let firsts: Vec<(Vec<u64>, Vec<u64>)> = ifaces.iter().map(|i| observer_filters(&ns.0, i)).collect();
    for (iface, (ingress, egress)) in ifaces.iter().zip(&firsts) {
        assert_eq!((ingress.len(), egress.len()), (1, 1), "{iface}: one filter per hook");
    }
    syn_seen_at_both_ends(&ns.0, &first, 1000);

    // A second observer starting meanwhile leaves the first one's filters alone (it holds them).
    let second = Running::start(&args);
    for (iface, (ingress, egress)) in ifaces.iter().zip(&firsts) {
        let (now_in, now_out) = observer_filters(&ns.0, iface);
        assert_eq!((now_in.len(), now_out.len()), (2, 2), "{iface}: both observers' filters");
        assert!(now_in.contains(&ingress[0]) && now_out.contains(&egress[0]), "{iface}: the first's kept");
    }
    syn_seen_at_both_ends(&ns.0, &second, 2000);

    // Killed, the first observer's filters stay (a filter is no fd the kernel closes); the
    // second's clean exit removes its own.
    let status = first.kill_hard();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));
    let (status, stderr) = second.stop_with_stderr();
    assert!(status.success(), "second observer exit {status}: {stderr:?}");
    for (iface, first) in ifaces.iter().zip(&firsts) {
        assert_eq!(&observer_filters(&ns.0, iface), first, "{iface}: only the killed observer's filters left");
    }

    // The next start replaces the orphans: one filter per hook again, none of them the killed one's.
    let third = Running::start(&args);
    for (iface, (ingress, egress)) in ifaces.iter().zip(&firsts) {
        let (now_in, now_out) = observer_filters(&ns.0, iface);
        assert_eq!((now_in.len(), now_out.len()), (1, 1), "{iface}: one filter per hook after the restart");
        assert!(now_in[0] != ingress[0] && now_out[0] != egress[0], "{iface}: the orphans were removed");
    }
    syn_seen_at_both_ends(&ns.0, &third, 3000);
    assert!(
        third.stderr().iter().any(|l| l.contains("removed classifier filters a stopped observer left behind")),
        "the removal is logged"
    );
    let (status, stderr) = third.stop_with_stderr();
    assert!(status.success(), "third observer exit {status}: {stderr:?}");
    wait_until("no observer filter after a clean exit", Duration::from_secs(5), || {
        let left: Vec<_> =
            ifaces.iter().map(|i| observer_filters(&ns.0, i)).filter(|f| *f != (vec![], vec![])).collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    });
}

/// A bridge carries no classifiers of its own: its ports do, and they see every packet that
/// crosses it (a port's ingress runs before the bridge's rx handler, its egress after the
/// bridge forwards). A SYN from a port to the bridge's own address is seen where it enters the
/// port and never at the bridge, and its drop (no TCP checksum) on the bridge is named after the
/// bridge (the name table still holds it); a bridge made while observer runs gets no classifiers
/// either, its new port both.
#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn a_bridge_carries_no_classifiers_and_its_ports_see_its_packets() {
    require_root();
    let ns = Netns::new("tcbr");
    ns.ip(&["link", "add", "br0", "type", "bridge"]);
    ns.ip(&["link", "set", "br0", "address", "02:00:00:00:00:02"]);
    ns.ip(&["addr", "add", "10.98.0.2/24", "dev", "br0"]);
    ns.ip(&["link", "add", "ta", "type", "veth", "peer", "name", "tb"]);
    ns.ip(&["link", "set", "tb", "master", "br0"]);
    for iface in ["br0", "ta", "tb"] {
        ns.ip(&["link", "set", iface, "up"]);
    }
    let cgroup = Cgroup::new("tcbr");
    let args =
        ["trace", "--netns", &ns.0, "--cgroup-root", cgroup.0.to_str().unwrap(), "--port", "80", "--output", "json"];
    let observer = Running::start(&args);
    let programs = |iface| support::bpf_query::tcx_programs(&ns.0, iface);
    assert_eq!(programs("br0"), (0, 0), "no classifier on the bridge");
    assert_eq!((programs("ta"), programs("tb")), ((1, 1), (1, 1)), "both ends of the port's veth");
    let ready = observer.stderr().into_iter().find(|l| l.contains("ready: attached to")).expect("ready line");
    assert!(ready.contains("attached to 2 interfaces") && ready.contains("bridges=br0"), "{ready}");

    // ta -> tb (the bridge's port) -> br0 -> the namespace's stack.
    send_frames(&ns.0, "ta", (0..3).map(|i| syn_frame([2, 0, 0, 0, 0, 2], 4000 + i)).collect());
    let seen = observer.wait_for("the SYN entering the bridge's port", Duration::from_secs(10), |v| {
        v["type"] == "packet" && v["hook"] == "tc-ingress" && v["flow"]["sport"] == 4000
    });
    assert_eq!(seen["interface"], "tb", "{seen}");
    assert_eq!((seen["flow"]["src"].as_str(), seen["flow"]["dst"].as_str()), (Some("10.98.0.1"), Some("10.98.0.2")));
    // The crafted SYN carries no TCP checksum: the bridge's stack drops it, and the drop keeps
    // the bridge's name.
    let drop = observer.wait_for("the drop on the bridge", Duration::from_secs(10), |v| {
        v["type"] == "drop" && v["flow"]["sport"] == 4000
    });
    assert_eq!((drop["interface"].as_str(), drop["drop_reason"].as_str()), (Some("br0"), Some("TCP_CSUM")), "{drop}");
    assert!(!observer.json().iter().any(|v| v["type"] == "packet" && v["interface"] == "br0"), "nothing at br0");

    // A bridge and a port made while observer runs.
    ns.ip(&["link", "add", "br1", "type", "bridge"]);
    ns.ip(&["link", "add", "tc", "type", "veth", "peer", "name", "td"]);
    ns.ip(&["link", "set", "td", "master", "br1"]);
    for iface in ["br1", "tc", "td"] {
        ns.ip(&["link", "set", iface, "up"]);
    }
    wait_until("the new port's classifiers", Duration::from_secs(10), || {
        let state = (programs("tc"), programs("td"));
        if state == ((1, 1), (1, 1)) {
            Ok(())
        } else {
            Err(format!("{state:?}"))
        }
    });
    assert_eq!(programs("br1"), (0, 0), "no classifier on the new bridge");
    assert!(
        observer.stderr().iter().any(|l| l.contains("new bridge") && l.contains("br1")),
        "the new bridge is logged: {:?}",
        observer.stderr()
    );
    let (status, stderr) = observer.stop_with_stderr();
    assert!(status.success(), "observer exit {status}: {stderr:?}");
}

/// Pods whose interface is a macvlan child of a node device (the macvlan/ipvlan CNI plugins,
/// Multus): no veth leads to them, and yet their namespaces are the node's pods. A drop in one
/// pod's own INPUT is in scope (shown with its namespace), and `ready` counts both pods.
#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn macvlan_pods_are_in_the_nodes_scope_and_their_drops_are_shown() {
    require_root();
    let node = Netns::new("mvn");
    let (pod_a, pod_b) = (Netns::new("mva"), Netns::new("mvb"));
    // The parent device: a veth end (this kernel may lack the dummy driver).
    node.ip(&["link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1"]);
    node.ip(&["link", "set", "uplink0", "up"]);
    node.ip(&["link", "set", "uplink1", "up"]);
    for (i, pod) in [&pod_a, &pod_b].into_iter().enumerate() {
        let child = format!("mv{i}");
        node.ip(&["link", "add", &child, "link", "uplink0", "type", "macvlan", "mode", "bridge"]);
        node.ip(&["link", "set", &child, "netns", &pod.0]);
        pod.ip(&["addr", "add", &format!("10.97.0.{}/24", i + 1), "dev", &child]);
        pod.ip(&["link", "set", &child, "up"]);
    }
    let out = Command::new("ip")
        .args(["netns", "exec", &pod_b.0, "iptables", "-w", "-A", "INPUT", "-p", "tcp", "--dport", "9", "-j", "DROP"])
        .output()
        .expect("iptables");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cgroup = Cgroup::new("mv");
    let args = ["trace", "--netns", &node.0, "--cgroup-root", cgroup.0.to_str().unwrap(), "--output", "json"];
    let observer = Running::start(&args);
    let ready = observer.stderr().into_iter().find(|l| l.contains("ready: attached to"));
    let ready = ready.unwrap_or_else(|| panic!("no ready line: {:?}", observer.stderr()));
    assert!(ready.contains("pod_namespaces=2"), "both macvlan pods in scope: {ready}");

    let lab_pod = support::bin_dir().join("lab-pod");
    let connect = Command::new("ip")
        .args(["netns", "exec", &pod_a.0])
        .arg(&lab_pod)
        .args(["connect", "10.97.0.2:9", "1500"])
        .output()
        .expect("lab-pod connect");
    assert!(String::from_utf8_lossy(&connect.stdout).contains("timeout"), "{connect:?}");
    let drop = observer.wait_for("the drop in pod b's INPUT", Duration::from_secs(10), |v| {
        v["type"] == "drop" && v["flow"]["dport"] == 9 && v["flow"]["dst"] == "10.97.0.2"
    });
    assert_eq!(drop["drop_reason"], "NETFILTER_DROP", "{drop}");
    assert_eq!(drop["netns"], pod_b.inode(), "{drop}");
    let (status, stderr) = observer.stop_with_stderr();
    assert!(status.success(), "observer exit {status}: {stderr:?}");
}

/// The drop tracepoint's program reads the receiving socket (`rx_sk`, Linux 6.11+) where the
/// kernel passes it (a socket-layer drop has neither device nor socket on its skb: its
/// namespace comes from `rx_sk`), and the plain one before: the verifier accepts the variant on
/// kernels that have the argument.
#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn the_drop_program_reads_the_receiving_socket_where_the_kernel_passes_it() {
    require_root();
    let ns = Netns::new("rxsk");
    ns.ip(&["link", "add", "ta", "type", "veth", "peer", "name", "tb"]);
    let cgroup = Cgroup::new("rxsk");
    let observer = Running::start(&["trace", "--netns", &ns.0, "--cgroup-root", cgroup.0.to_str().unwrap()]);
    let ready = observer.stderr().into_iter().find(|l| l.contains("ready: attached to")).expect("ready line");
    let release = nix::sys::utsname::uname().expect("uname").release().to_string_lossy().into_owned();
    let mut numbers = release.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u32>().ok());
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    let expected = if version >= (6, 11) { "observer_kfree_skb_rx_sk" } else { "observer_kfree_skb" };
    assert!(ready.contains(&format!("drop_program={expected}")), "kernel {release}: {ready}");
    let (status, stderr) = observer.stop_with_stderr();
    assert!(status.success(), "observer exit {status}: {stderr:?}");
}
