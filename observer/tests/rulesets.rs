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
        iptables::parse_save,
        model::{Action, Backend, Family, Match, Table},
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

/// Parses the paste's iptables parts (no privilege), then, as root, loads the whole paste into
/// a namespace and reads it back: every rule line is a rule read, and the doubts are `expected`.
fn check(name: &str, unprivileged_doubts: &[&str], live_doubts: &[&str]) {
    let (rules, doubts) = parse_iptables(name);
    assert_eq!(doubts, set(unprivileged_doubts), "{name}: {rules} iptables rules parsed");
    if !require_root() {
        return;
    }
    let (converted, snapshot) = load_and_read(name);
    assert!(snapshot.problems.is_empty(), "{name}: {:?}", snapshot.problems);
    let read = rules_in(&snapshot.tables);
    let lines = converted.nft_rules() + converted.iptables_rules();
    assert_eq!(read, lines, "{name}: rules read back vs rule lines of the paste");
    assert_eq!(undecidables(&snapshot.tables), set(live_doubts), "{name}: doubts of the live read");
}

#[test]
fn calico_aks_every_rule_is_read() {
    // Calico's marks, gotos, `-p ipencap` and conntrack states are all modelled.
    check("calico-aks-kubenet.txt", &[], &[]);
}

#[test]
fn weave_kubeadm_every_rule_is_read() {
    // kube-proxy's random endpoint choice is random; the paste has no ipset members (a live
    // read has them, from `ipset save`).
    let random = ["match -m statistic --mode random", "match -m statistic --probability 0.50000000000"];
    let mut paste: Vec<&str> = random.to_vec();
    let sets = [
        "match -m set --match-set weave-41s)5vQ^o/xWGz6a20N:~?#|E src: ipset weave-41s)5vQ^o/xWGz6a20N:~?#|E was not read (is `ipset` installed?)",
        "match -m set --match-set weave-;rGqyMIl1HN^cfDki~Z$3]6!N dst: ipset weave-;rGqyMIl1HN^cfDki~Z$3]6!N was not read (is `ipset` installed?)",
        "match -m set --match-set weave-E1ney4o[ojNrLk.6rOHi;7MPE src: ipset weave-E1ney4o[ojNrLk.6rOHi;7MPE was not read (is `ipset` installed?)",
        "match -m set --match-set weave-P.B|!ZhkAr5q=XZ?3}tMBA+0 dst: ipset weave-P.B|!ZhkAr5q=XZ?3}tMBA+0 was not read (is `ipset` installed?)",
        "match -m set --match-set weave-Rzff}h:=]JaaJl/G;(XJpGjZ[ dst: ipset weave-Rzff}h:=]JaaJl/G;(XJpGjZ[ was not read (is `ipset` installed?)",
        "match -m set --match-set weave-s_+ChJId4Uy_$}G;WdH|~TK)I src: ipset weave-s_+ChJId4Uy_$}G;WdH|~TK)I was not read (is `ipset` installed?)",
    ];
    paste.extend(sets);
    check("weave-npc-kubeadm.txt", &paste, &random);
}

#[test]
fn docker_every_rule_is_read() {
    let unread = "match -m set --match-set docker-ext-bridges-v4 dst: ipset docker-ext-bridges-v4 was not read (is `ipset` installed?)";
    check("docker-usernet-noicc.txt", &[unread], &[]);
}

#[test]
fn istio_iptables_every_rule_is_read() {
    // The sending socket's owner is not in the packet.
    check(
        "istio-iptables-sidecar.txt",
        &["match -m owner --gid-owner 1337", "match -m owner --uid-owner 1337"],
        &["match -m owner --gid-owner 1337", "match -m owner --uid-owner 1337"],
    );
}

#[test]
fn k3s_every_rule_is_read() {
    // Rate limits depend on history; the MSS clamp's option match changes no verdict.
    check("k3s-kube-router-flannel-netbird.txt", &[], &[]);
}

#[test]
fn firewalld_every_rule_is_read() {
    // Everything firewalld and libvirt write that can decide a verdict is modelled (its only
    // unmodelled match, `ct helper "tftp"`, is on a rule that decides nothing).
    check("firewalld-rhel8-nft.txt", &[], &[]);
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
