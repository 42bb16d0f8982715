//! Six real rulesets, written by real tools on real hosts (observer/tests/fixtures/netfilter/real,
//! copied from the issue with their provenance headers): every rule is read, and what stays
//! undecided is only what a read-only view truly cannot decide.
//!
//! The iptables parts are parsed as they are (no privilege needed); then, as root, every part
//! is loaded into a fresh network namespace with the tool that wrote it (`iptables-restore`,
//! `iptables-legacy-restore`, `nft -f`, `ipset`) and read back the way observer reads a node.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

#[path = "../../tests/src/lab/rulesets.rs"]
#[allow(dead_code)]
mod pasted;

use std::{collections::BTreeSet, process::Command};

use observer::{
    loader::NetnsTarget,
    netfilter::{
        culprit::{resolve, Confidence, Culprit},
        eval::{evaluate, BridgePorts, Evaluation, Packet},
        ipset::IpSets,
        iptables::{parse_save, parse_save_with},
        model::{Action, Backend, Family, Match, Table},
        nft::parse_ruleset,
        read::read_here,
    },
};
use support::require_root;

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/netfilter/real/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every undecidable a table holds: unsupported matches and targets, with the chain.
fn undecidables(tables: &[Table]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for table in tables {
        for chain in &table.chains {
            // A rule whose action decides nothing (LOG, an MSS clamp) cannot change a verdict.
            for rule in chain.rules.iter().filter(|r| r.action.decides()) {
                for m in &rule.matches {
                    if let Match::Unsupported(what) = m {
                        out.insert(format!("match {what}"));
                    }
                }
                if let Action::Unsupported(what) = &rule.action {
                    out.insert(format!("target {what}"));
                }
            }
        }
    }
    out
}

fn rules_in(tables: &[Table]) -> usize {
    tables.iter().flat_map(|t| &t.chains).map(|c| c.rules.len()).sum()
}

/// Parses the iptables parts of a paste: every `-A` line becomes a rule; returns the doubts.
fn parse_iptables(name: &str) -> (usize, BTreeSet<String>) {
    let converted = pasted::convert(&fixture(name));
    let mut doubts = BTreeSet::new();
    let mut total = 0;
    for part in &converted.iptables {
        let backend = if part.legacy { Backend::IptablesLegacy } else { Backend::IptablesNft };
        let family = if part.ipv6 { Family::Ip6 } else { Family::Ip };
        let tables = parse_save(&part.restore, backend, family).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (table, lines) in &part.rule_lines {
            let read: usize =
                tables.iter().filter(|t| &t.name == table).flat_map(|t| &t.chains).map(|c| c.rules.len()).sum();
            assert_eq!(read, *lines, "{name}: table {table}: rules read vs rule lines");
        }
        total += rules_in(&tables);
        doubts.extend(undecidables(&tables));
    }
    assert_eq!(total, converted.iptables_rules(), "{name}");
    (total, doubts)
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// What a paste leaves undecided: parsed alone (no ipset members in a paste) and read live.
struct Expected {
    parsed: Vec<&'static str>,
    live: Vec<&'static str>,
}

/// Parses the paste's iptables parts (no privilege): the doubts left are `expected.parsed`.
fn check_parsed(name: &str, expected: &Expected) {
    let (rules, doubts) = parse_iptables(name);
    assert_eq!(doubts, set(&expected.parsed), "{name}: {rules} iptables rules parsed");
}

/// As root, loads the whole paste into a namespace with the tools that wrote it and reads it
/// back: every rule line is a rule read, and the doubts are `expected.live`.
fn check_live(name: &str, expected: &Expected) {
    let (converted, snapshot) = load_and_read(name);
    assert!(snapshot.problems.is_empty(), "{name}: {:?}", snapshot.problems);
    let read = rules_in(&snapshot.tables);
    let lines = converted.nft_rules() + converted.iptables_rules();
    assert_eq!(read, lines, "{name}: rules read back vs rule lines of the paste");
    assert_eq!(undecidables(&snapshot.tables), set(&expected.live), "{name}: doubts of the live read");
}

/// Calico's marks, gotos, `-p ipencap` and conntrack states are all modelled.
const CALICO: &str = "calico-aks-kubenet.txt";
fn calico() -> Expected {
    Expected { parsed: vec![], live: vec![] }
}

/// kube-proxy's random endpoint choice is random; the paste has no ipset members (a live read
/// has them, from `ipset save`).
const WEAVE: &str = "weave-npc-kubeadm.txt";
fn weave() -> Expected {
    let random = "match -m statistic --mode random --probability 0.50000000000";
    let sets = [
        "match -m set --match-set weave-41s)5vQ^o/xWGz6a20N:~?#|E src: ipset weave-41s)5vQ^o/xWGz6a20N:~?#|E was not read (is `ipset` installed?)",
        "match -m set --match-set weave-;rGqyMIl1HN^cfDki~Z$3]6!N dst: ipset weave-;rGqyMIl1HN^cfDki~Z$3]6!N was not read (is `ipset` installed?)",
        "match -m set --match-set weave-E1ney4o[ojNrLk.6rOHi;7MPE src: ipset weave-E1ney4o[ojNrLk.6rOHi;7MPE was not read (is `ipset` installed?)",
        "match -m set --match-set weave-P.B|!ZhkAr5q=XZ?3}tMBA+0 dst: ipset weave-P.B|!ZhkAr5q=XZ?3}tMBA+0 was not read (is `ipset` installed?)",
        "match -m set --match-set weave-Rzff}h:=]JaaJl/G;(XJpGjZ[ dst: ipset weave-Rzff}h:=]JaaJl/G;(XJpGjZ[ was not read (is `ipset` installed?)",
        "match -m set --match-set weave-s_+ChJId4Uy_$}G;WdH|~TK)I src: ipset weave-s_+ChJId4Uy_$}G;WdH|~TK)I was not read (is `ipset` installed?)",
    ];
    Expected { parsed: std::iter::once(random).chain(sets).collect(), live: vec![random] }
}

const DOCKER: &str = "docker-usernet-noicc.txt";
fn docker() -> Expected {
    let unread = "match -m set --match-set docker-ext-bridges-v4 dst: ipset docker-ext-bridges-v4 was not read (is `ipset` installed?)";
    Expected { parsed: vec![unread], live: vec![] }
}

/// The sending socket's owner is not in the packet.
const ISTIO: &str = "istio-iptables-sidecar.txt";
fn istio() -> Expected {
    let owner = vec!["match -m owner --gid-owner 1337", "match -m owner --uid-owner 1337"];
    Expected { parsed: owner.clone(), live: owner }
}

/// Rate limits depend on history; the MSS clamp's option match changes no verdict.
const K3S: &str = "k3s-kube-router-flannel-netbird.txt";
fn k3s() -> Expected {
    Expected { parsed: vec![], live: vec![] }
}

/// Everything firewalld and libvirt write that can decide a verdict is modelled (its only
/// unmodelled match, `ct helper "tftp"`, is on a rule that decides nothing).
const FIREWALLD: &str = "firewalld-rhel8-nft.txt";
fn firewalld() -> Expected {
    Expected { parsed: vec![], live: vec![] }
}

#[test]
fn every_rule_of_each_real_ruleset_is_parsed() {
    for (name, expected) in [
        (CALICO, calico()),
        (WEAVE, weave()),
        (DOCKER, docker()),
        (ISTIO, istio()),
        (K3S, k3s()),
        (FIREWALLD, firewalld()),
    ] {
        check_parsed(name, &expected);
    }
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn calico_aks_every_rule_is_read_live() {
    require_root();
    check_live(CALICO, &calico());
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn weave_kubeadm_every_rule_is_read_live() {
    require_root();
    check_live(WEAVE, &weave());
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn docker_every_rule_is_read_live() {
    require_root();
    check_live(DOCKER, &docker());
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn istio_iptables_every_rule_is_read_live() {
    require_root();
    check_live(ISTIO, &istio());
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn k3s_every_rule_is_read_live() {
    require_root();
    check_live(K3S, &k3s());
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn firewalld_every_rule_is_read_live() {
    require_root();
    check_live(FIREWALLD, &firewalld());
}

/// A network namespace for one test, removed on drop.
struct Scratch(String);

impl Scratch {
    fn new(tag: &str) -> Self {
        let name = format!("obs-rulesets-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run("ip", &["netns", "add", &name], None);
        Self(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn run(program: &str, args: &[&str], stdin: Option<&str>) {
    use std::io::Write as _;
    let mut child = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    if let Some(input) = stdin {
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        stdin.unwrap_or_default()
    );
}

/// Loads a paste into a fresh namespace and reads it back as observer reads a node.
fn load_and_read(name: &str) -> (pasted::Pasted, observer::netfilter::read::Snapshot) {
    let converted = pasted::convert(&fixture(name));
    let ns = Scratch::new(&name[..name.find('-').unwrap_or(4).min(8)]);
    let exec = |program: &str, args: &[&str], stdin: Option<&str>| {
        let mut all = vec!["netns", "exec", ns.0.as_str(), program];
        all.extend_from_slice(args);
        run("ip", &all, stdin);
    };
    for set in &converted.ipsets {
        exec("ipset", &["create", set, "hash:net"], None);
    }
    for part in &converted.iptables {
        let tool = match (part.ipv6, part.legacy) {
            (false, false) => "iptables-nft-restore",
            (true, false) => "ip6tables-nft-restore",
            (false, true) => "iptables-legacy-restore",
            (true, true) => "ip6tables-legacy-restore",
        };
        exec(tool, &[], Some(&part.restore));
    }
    if !converted.nft.is_empty() {
        exec("nft", &["-f", "-"], Some(&converted.nft));
    }
    let target = NetnsTarget::resolve(Some(&ns.0)).expect("netns");
    let snapshot = target.run_inside(read_here).expect("enter");
    (converted, snapshot)
}

/// The tables of a paste's iptables parts, with `ipsets` (`ipset save` text) for `-m set`.
fn iptables_tables(name: &str, ipsets: &str) -> Vec<Table> {
    let sets = IpSets::parse(ipsets);
    let mut tables = Vec::new();
    for part in pasted::convert(&fixture(name)).iptables {
        let backend = if part.legacy { Backend::IptablesLegacy } else { Backend::IptablesNft };
        let family = if part.ipv6 { Family::Ip6 } else { Family::Ip };
        tables.extend(parse_save_with(&part.restore, backend, family, &sets).expect("parse"));
    }
    tables
}

fn syn(src: &str, dst: &str, dport: u16, iif: &str, oif: &str) -> Packet {
    Packet {
        iif: Some(iif.into()),
        oif: Some(oif.into()),
        ..Packet::between(6, src.parse().unwrap(), dst.parse().unwrap(), 40_000, dport, Some(0x02))
    }
}

fn culprit_of(tables: &[Table], packet: &Packet) -> (Culprit, Evaluation) {
    let evaluation = evaluate(tables, packet);
    (resolve(tables, &evaluation, &|_| None, "test"), evaluation)
}

#[test]
fn calico_routed_pod_to_pod_passes_and_a_missing_profile_is_the_cali_tw_drop() {
    // Routed, no bridge: from one cali veth to another (/32 routes, proxy ARP).
    let packet = syn("10.244.0.11", "10.244.0.4", 8080, "cali112d888c0c2", "cali55f439ddb0e");
    let tables = iptables_tables("calico-aks-kubenet.txt", "");
    let (c, evaluation) = culprit_of(&tables, &packet);
    assert!(evaluation.candidates.is_empty() && evaluation.doubts.is_empty(), "{evaluation:#?}");
    assert_eq!(c.confidence, Confidence::NotIdentified);
    // The same node once the destination's namespace profile no longer accepts: Calico's
    // "Drop if no profiles matched" of the destination's cali-tw- chain, with no doubt.
    let text = fixture("calico-aks-kubenet.txt")
        .lines()
        .filter(|l| !l.contains("Profile kns.calico-system ingress"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut tables = Vec::new();
    for part in pasted::convert(&text).iptables {
        tables.extend(parse_save(&part.restore, Backend::IptablesNft, Family::Ip).expect("parse"));
    }
    let (c, evaluation) = culprit_of(&tables, &packet);
    assert!(evaluation.doubts.is_empty(), "{evaluation:#?}");
    assert_eq!(c.confidence, Confidence::Evaluated, "{c:#?}");
    assert_eq!((c.table.as_deref(), c.chain.as_deref()), (Some("filter"), Some("cali-tw-cali55f439ddb0e")));
    assert_eq!((c.hook, c.position, c.owner), (Some("FORWARD"), Some(8), Some("calico")));
    assert_eq!(c.comment.as_deref(), Some("Drop if no profiles matched"));
    // A Calico-accepted flow still meets the node's own DROP after Calico's chains.
    let to_blocked = syn("10.244.0.11", "198.51.100.16", 80, "cali112d888c0c2", "eth0");
    let tables = iptables_tables("calico-aks-kubenet.txt", "");
    let (c, evaluation) = culprit_of(&tables, &to_blocked);
    assert!(evaluation.doubts.is_empty(), "{evaluation:#?}");
    assert_eq!((c.confidence, c.chain.as_deref(), c.position), (Confidence::Evaluated, Some("FORWARD"), Some(6)));
    // `-p ipencap` (/etc/protocols) is IP-in-IP, protocol 4.
    let fw = tables[0].chain("cali-fw-cali112d888c0c2").unwrap();
    assert!(fw.rules[4].matches.contains(&Match::Test {
        field: observer::netfilter::model::Field::L4Proto,
        values: vec![observer::netfilter::model::Value::Proto(4)],
        negated: false
    }));
}

#[test]
fn docker_inter_container_drop_is_named_for_bridged_traffic() {
    let sets = "create docker-ext-bridges-v4 hash:net family inet\nadd docker-ext-bridges-v4 192.0.2.0/24\n\
                add docker-ext-bridges-v4 172.17.0.0/16\n";
    let tables = iptables_tables("docker-usernet-noicc.txt", sets);
    // Bridged between two ports of bridge1: netfilter sees in = out = bridge1.
    let mut packet = syn("192.0.2.3", "192.0.2.2", 80, "bridge1", "bridge1");
    packet.bridged =
        Some(BridgePorts { bridge: "bridge1".into(), in_port: Some("veth3".into()), out_port: Some("veth2".into()) });
    let (c, evaluation) = culprit_of(&tables, &packet);
    assert!(evaluation.doubts.is_empty(), "{evaluation:#?}");
    assert_eq!(c.confidence, Confidence::Evaluated);
    assert_eq!((c.chain.as_deref(), c.position), (Some("FORWARD"), Some(8)));
    assert_eq!(c.rule.as_deref(), Some("-A FORWARD -i bridge1 -o bridge1 -j DROP"));
    // Leaving the bridge for the uplink is accepted (no finding).
    let out = syn("192.0.2.3", "198.51.100.7", 443, "bridge1", "eth0");
    let (_, evaluation) = culprit_of(&tables, &out);
    assert!(evaluation.candidates.is_empty() && evaluation.doubts.is_empty(), "{evaluation:#?}");
}

#[test]
fn weave_default_deny_is_named_for_bridged_traffic() {
    // Weave's ipsets as `ipset save` shows them, with neither pod in an allowed namespace.
    let text = fixture("weave-npc-kubeadm.txt");
    let mut sets = String::new();
    for name in pasted::convert(&text).ipsets {
        sets.push_str(&format!("create {name} hash:ip family inet\n"));
    }
    let tables = iptables_tables("weave-npc-kubeadm.txt", &sets);
    let mut packet = syn("10.32.0.5", "10.32.0.9", 8080, "weave", "weave");
    packet.bridged = Some(BridgePorts {
        bridge: "weave".into(),
        in_port: Some("vethwepl5".into()),
        out_port: Some("vethwepl9".into()),
    });
    // The source's namespace allows no egress: Weave's egress default deny.
    let (c, evaluation) = culprit_of(&tables, &packet);
    assert!(evaluation.doubts.is_empty(), "{evaluation:#?}");
    assert_eq!(
        (c.confidence, c.chain.as_deref(), c.position),
        (Confidence::Evaluated, Some("WEAVE-NPC-EGRESS"), Some(7))
    );
    assert_eq!(c.owner, Some("weave"));
    // With egress allowed for the source's namespace (marked 0x40000), the destination's
    // ingress isolation is the node's `-o weave -j DROP`.
    sets.push_str("add weave-s_+ChJId4Uy_$}G;WdH|~TK)I 10.32.0.5\n");
    let tables = iptables_tables("weave-npc-kubeadm.txt", &sets);
    let (c, evaluation) = culprit_of(&tables, &packet);
    assert!(evaluation.doubts.is_empty(), "{evaluation:#?}");
    assert_eq!((c.confidence, c.chain.as_deref(), c.position), (Confidence::Evaluated, Some("FORWARD"), Some(4)));
    assert_eq!(c.rule.as_deref(), Some("-A FORWARD -o weave -j DROP"));
    // To the weave router's own port, the policy chain accepts: no finding.
    packet.bridged.as_mut().unwrap().out_port = Some("vethwe-bridge".into());
    let (_, evaluation) = culprit_of(&tables, &packet);
    assert!(evaluation.candidates.is_empty(), "{evaluation:#?}");
}

/// A recorded `nft -j list ruleset` / `nft -a list ruleset` pair of a paste's native tables
/// (loaded with `nft -f` into a namespace by the tools of this repository's lab).
fn nft_tables(stem: &str) -> Vec<Table> {
    parse_ruleset(&fixture(&format!("{stem}.json")), &fixture(&format!("{stem}-a.txt")), &[]).expect("nft json")
}

#[test]
fn firewalld_rejects_forwarded_traffic_and_its_raw_ipv6_rules_are_no_doubt() {
    let tables = nft_tables("firewalld-rhel8-nft");
    // Forwarded from one zone's interface to another: firewalld's final reject of filter_FORWARD.
    let mut packet = syn("198.51.100.9", "192.0.2.7", 15012, "enp0s8", "enp0s3");
    packet.rpf_ok = Some(true);
    let (c, evaluation) = culprit_of(&tables, &packet);
    println!("{c:#?} {evaluation:#?}");
    assert!(evaluation.doubts.is_empty(), "{evaluation:#?}");
    assert_eq!(c.confidence, Confidence::Evaluated, "{c:#?}");
    assert_eq!(
        (c.family, c.table.as_deref(), c.chain.as_deref()),
        (Some("inet"), Some("firewalld"), Some("filter_FORWARD"))
    );
    assert_eq!(c.rule.as_deref(), Some("reject with icmpx admin-prohibited"));
}

#[test]
fn k3s_vpn_forward_drop_beside_iptables_nft_forward_and_kube_proxy_states() {
    let mut tables = iptables_tables("k3s-kube-router-flannel-netbird.txt", "");
    tables.extend(nft_tables("k3s-netbird-nft"));
    // A new connection from the VPN interface to a pod: the VPN's own forward chain drops it,
    // whatever the iptables-nft FORWARD chain at the same hook does.
    let packet = syn("100.90.149.44", "10.42.0.9", 8080, "wt0", "cni0");
    let (c, evaluation) = culprit_of(&tables, &packet);
    println!("{c:#?} {evaluation:#?}");
    assert_eq!(c.confidence, Confidence::Evaluated, "{c:#?}");
    assert_eq!(
        (c.backend, c.table.as_deref(), c.chain.as_deref()),
        (Some("nftables"), Some("netbird"), Some("netbird-acl-forward-filter"))
    );
    assert_eq!(c.rule.as_deref(), Some(r#"iifname "wt0" drop"#));
    // Pod to pod over flannel: accepted by every chain, no doubt left.
    let packet = syn("10.42.0.5", "10.42.1.7", 8080, "cni0", "flannel.1");
    let (_, evaluation) = culprit_of(&tables, &packet);
    assert!(evaluation.candidates.is_empty(), "{evaluation:#?}");
    assert!(evaluation.doubts.is_empty(), "{evaluation:#?}");
}
