//! The evaluator on rulesets parsed from real `iptables-*-save -c` and `nft` output
//! (observer/tests/fixtures/netfilter, recorded from the tools of this repository's lab).

use super::{
    culprit::{resolve, Confidence, Culprit},
    eval::{evaluate, Packet, Site},
    iptables::parse_save,
    model::{Action, Backend, Family, Table},
    nft::parse_ruleset,
};

const IPTABLES_NFT: &str = include_str!("../../../observer/tests/fixtures/netfilter/iptables-nft-save.txt");
const IP6TABLES_NFT: &str = include_str!("../../../observer/tests/fixtures/netfilter/ip6tables-nft-save.txt");
const IPTABLES_LEGACY: &str = include_str!("../../../observer/tests/fixtures/netfilter/iptables-legacy-save.txt");
const NFT_JSON: &str = include_str!("../../../observer/tests/fixtures/netfilter/nft-ruleset.json");
const NFT_TEXT: &str = include_str!("../../../observer/tests/fixtures/netfilter/nft-ruleset.txt");

fn syn(src: &str, dst: &str, dport: u16) -> Packet {
    Packet {
        iif: Some("cni0".into()),
        oif: Some("eth0".into()),
        ..Packet::between(6, src.parse().unwrap(), dst.parse().unwrap(), 40_000, dport, Some(0x02))
    }
}

fn iptables_nft() -> Vec<Table> {
    let mut tables = parse_save(IPTABLES_NFT, Backend::IptablesNft, Family::Ip).unwrap();
    tables.extend(parse_save(IP6TABLES_NFT, Backend::IptablesNft, Family::Ip6).unwrap());
    tables
}

fn nft_only() -> Vec<Table> {
    let skip = [(Family::Ip, "filter".to_string()), (Family::Ip6, "filter".to_string())];
    parse_ruleset(NFT_JSON, NFT_TEXT, &skip).unwrap()
}

fn culprit(tables: &[Table], packet: &Packet) -> Culprit {
    resolve(tables, &evaluate(tables, packet), &|_| None, "test")
}

#[test]
fn parses_iptables_save_with_counters_policies_and_comments() {
    let tables = iptables_nft();
    let filter = &tables[0];
    assert_eq!((filter.name.as_str(), filter.family, filter.backend), ("filter", Family::Ip, Backend::IptablesNft));
    let forward = filter.chain("FORWARD").unwrap();
    assert_eq!(forward.base.as_ref().unwrap().policy, super::model::Policy::Drop);
    assert_eq!(forward.rules.len(), 2);
    assert_eq!(forward.rules[0].action, Action::Jump("KUBE-FIREWALL-X".into()));
    assert_eq!(forward.rules[0].comment.as_deref(), Some("kube-router netpol"));
    assert_eq!(forward.rules[0].text, r#"-A FORWARD -m comment --comment "kube-router netpol" -j KUBE-FIREWALL-X"#);
    assert_eq!(forward.rules[1].action, Action::Reject("icmp-admin-prohibited".into()));
    assert_eq!(forward.rules[1].counters, Some(super::model::Counters { packets: 0, bytes: 0 }));
}

#[test]
fn drop_in_a_user_chain_reached_by_a_jump() {
    let c = culprit(&iptables_nft(), &syn("10.244.1.5", "10.244.2.7", 15012));
    assert_eq!(c.confidence, Confidence::Evaluated);
    assert_eq!(
        (c.backend, c.table.as_deref(), c.chain.as_deref()),
        (Some("iptables-nft"), Some("filter"), Some("KUBE-FIREWALL-X"))
    );
    assert_eq!(c.position, Some(1));
    assert_eq!(c.hook, Some("FORWARD"));
    assert_eq!(
        c.rule.as_deref(),
        Some("-A KUBE-FIREWALL-X -s 10.244.0.0/16 -p tcp -m multiport --dports 15010,15012 -m conntrack --ctstate NEW -j DROP")
    );
    assert_eq!(c.owner, Some("kube-proxy"));
}

#[test]
fn the_earlier_of_two_candidate_rules_decides() {
    // 15017 from a pod: the REJECT (#2) matches; a source outside 10.244/16 skips the user
    // chain's DROP, so the REJECT is first.
    let c = culprit(&iptables_nft(), &{
        let mut p = syn("10.1.0.9", "10.244.2.7", 15017);
        p.oif = Some("cni0".into());
        p
    });
    assert_eq!((c.chain.as_deref(), c.position), (Some("FORWARD"), Some(2)));
    assert_eq!(
        c.rule.as_deref(),
        Some("-A FORWARD -i cni0 ! -o eth0 -p tcp -m tcp --dport 15017 -j REJECT --reject-with icmp-admin-prohibited")
    );
    // From the pod CIDR to 15012 both the user-chain DROP and (for 15017) the REJECT could
    // apply: the jump comes first.
    let c = culprit(&iptables_nft(), &syn("10.244.1.5", "10.244.2.7", 15010));
    assert_eq!(c.chain.as_deref(), Some("KUBE-FIREWALL-X"));
}

#[test]
fn chain_policy_drop_without_a_matching_rule() {
    let c = culprit(&iptables_nft(), &syn("192.168.1.1", "10.244.2.7", 80));
    assert_eq!(c.confidence, Confidence::Evaluated);
    assert_eq!((c.chain.as_deref(), c.rule.as_deref(), c.position), (Some("FORWARD"), Some("policy DROP"), None));
}

#[test]
fn an_unknown_interface_is_a_doubt_not_a_guess() {
    let mut p = syn("10.1.0.9", "10.244.2.7", 15017);
    (p.iif, p.oif) = (None, Some("cni0".into()));
    let c = culprit(&iptables_nft(), &p);
    assert_eq!(c.confidence, Confidence::NotIdentified);
    let note = c.note.unwrap();
    assert!(note.contains("filter/FORWARD rule 2: input interface unknown"), "{note}");
    assert!(note.contains("possibly"), "{note}");
}

#[test]
fn counters_confirm_a_candidate_even_under_a_doubt() {
    let tables = iptables_nft();
    let mut p = syn("10.1.0.9", "10.244.2.7", 15017);
    (p.iif, p.oif) = (None, Some("cni0".into()));
    let evaluation = evaluate(&tables, &p);
    let reject = Site { table: 0, chain: tables[0].chain_index("FORWARD").unwrap(), rule: Some(1) };
    let c = resolve(&tables, &evaluation, &|site| Some(site == reject), "FORWARD");
    assert_eq!((c.confidence, c.position), (Confidence::Confirmed, Some(2)));
    // The evaluated rule's counters did not move: say so instead of naming it.
    let tables = iptables_nft();
    let p = syn("10.244.1.5", "10.244.2.7", 15012);
    let c = resolve(&tables, &evaluate(&tables, &p), &|_| Some(false), "FORWARD");
    assert_eq!(c.confidence, Confidence::NotIdentified);
    assert!(c.note.unwrap().contains("counters did not move"));
}

#[test]
fn ipv6_packets_see_ip6tables_only() {
    let mut p = syn("fd00:10:244:1::5", "fd00:10:244:2::7", 15012);
    p.dst_local = true;
    p.oif = None;
    let c = culprit(&iptables_nft(), &p);
    assert_eq!((c.family, c.chain.as_deref(), c.hook), (Some("ip6"), Some("INPUT"), Some("INPUT")));
    assert_eq!(c.rule.as_deref(), Some("-A INPUT -p tcp -m tcp --dport 15012 -j DROP"));
}

#[test]
fn iptables_legacy_reject_with_tcp_reset() {
    let tables = parse_save(IPTABLES_LEGACY, Backend::IptablesLegacy, Family::Ip).unwrap();
    let mut p = syn("10.244.1.5", "10.244.0.2", 15012);
    (p.dst_local, p.oif) = (true, None);
    let c = culprit(&tables, &p);
    assert_eq!((c.backend, c.chain.as_deref(), c.position), (Some("iptables-legacy"), Some("INPUT"), Some(1)));
    assert_eq!(c.rule.as_deref(), Some("-A INPUT -p tcp -m tcp --dport 15012 -j REJECT --reject-with tcp-reset"));
}

#[test]
fn nftables_set_of_ports_with_rule_text_and_handle() {
    let tables = nft_only();
    assert!(tables.iter().all(|t| t.backend == Backend::Nftables && t.name == "mesh"), "iptables-nft tables skipped");
    let c = culprit(&tables, &syn("10.244.1.5", "10.244.2.7", 15008));
    assert_eq!((c.backend, c.family, c.table.as_deref()), (Some("nftables"), Some("inet"), Some("mesh")));
    assert_eq!((c.chain.as_deref(), c.handle, c.position), (Some("mesh_forward"), Some(5), Some(1)));
    assert_eq!(c.comment.as_deref(), Some("block mesh"));
    assert_eq!(
        c.rule.as_deref(),
        Some(r#"ip saddr 10.244.0.0/16 tcp dport @istio_ports counter packets 0 bytes 0 drop comment "block mesh""#)
    );
    // A port outside the set passes.
    assert_eq!(culprit(&tables, &syn("10.244.1.5", "10.244.2.7", 15009)).confidence, Confidence::NotIdentified);
}

#[test]
fn nftables_wildcard_interface_anonymous_set_and_reject() {
    let mut p = syn("10.9.0.1", "10.244.2.7", 9090);
    p.iif = Some("veth1234".into());
    let c = culprit(&nft_only(), &p);
    assert_eq!((c.handle, c.position), (Some(7), Some(2)));
    p.iif = Some("eth0".into());
    assert_eq!(culprit(&nft_only(), &p).confidence, Confidence::NotIdentified);
}

#[test]
fn nftables_verdict_map_policy_and_jump_into_a_chain() {
    let tables = nft_only();
    let mut local = syn("10.9.0.1", "10.244.0.1", 15017);
    (local.dst_local, local.oif) = (true, None);
    assert_eq!(culprit(&tables, &local).handle, Some(13), "vmap sends 15017 to drop");
    local.dport = 443;
    assert_eq!(culprit(&tables, &local).confidence, Confidence::NotIdentified, "vmap accepts 443");
    local.dport = 8080;
    let c = culprit(&tables, &local);
    assert_eq!((c.chain.as_deref(), c.rule.as_deref()), (Some("input_pol"), Some("policy DROP")));
    local.src = "10.1.7.7".parse().unwrap();
    assert_eq!(culprit(&tables, &local).handle, Some(15), "syn from a set of prefixes is reset");
    local.tcp_flags = Some(0x12);
    assert_eq!(culprit(&tables, &local).confidence, Confidence::NotIdentified, "established is accepted");
    let mut v6 = syn("fd00:1::5", "fd00:2::7", 15021);
    v6.iif = Some("cni0".into());
    let c = culprit(&tables, &v6);
    assert_eq!((c.chain.as_deref(), c.handle), (Some("sub"), Some(3)));
}

#[test]
fn calico_chain_comment_names_the_network_policy() {
    let save = "*filter\n:FORWARD ACCEPT [0:0]\n:cali-FORWARD - [0:0]\n:cali-pi-_abc - [0:0]\n\
        [3:180] -A FORWARD -m comment --comment \"cali:wUHhoiAYhphO9Mso\" -j cali-FORWARD\n\
        [3:180] -A cali-FORWARD -o cali+ -j cali-pi-_abc\n\
        [2:120] -A cali-pi-_abc -p tcp -m comment --comment \"cali:Xyz123\" -m comment --comment \"Policy istio-system/knp.default.deny-xds ingress\" -m multiport --dports 15012 -j DROP\n\
        COMMIT\n";
    let tables = parse_save(save, Backend::IptablesNft, Family::Ip).unwrap();
    let mut p = syn("10.244.1.5", "10.244.2.7", 15012);
    p.oif = Some("cali12ab".into());
    let c = culprit(&tables, &p);
    assert_eq!((c.chain.as_deref(), c.owner), (Some("cali-pi-_abc"), Some("calico")));
    assert_eq!(c.network_policy.as_deref(), Some("istio-system/deny-xds"));
}

#[test]
fn unsupported_matches_make_doubts_and_malformed_lines_are_errors() {
    let save = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m set --match-set blocked src -j DROP\n-A INPUT -p tcp --dport 22 -j DROP\nCOMMIT\n";
    let tables = parse_save(save, Backend::IptablesLegacy, Family::Ip).unwrap();
    let mut p = syn("10.0.0.1", "10.0.0.2", 22);
    (p.dst_local, p.oif) = (true, None);
    let c = culprit(&tables, &p);
    assert_eq!(c.confidence, Confidence::NotIdentified);
    assert!(c.note.as_deref().unwrap().contains("-m set --match-set blocked src"), "{c:?}");
    let err = parse_save("*filter\n-A INPUT -j DROP\n", Backend::IptablesLegacy, Family::Ip).unwrap_err();
    assert_eq!(err.to_string(), "line 2: rule for an undeclared chain (in `-A INPUT -j DROP`)");
    assert!(parse_save("-A INPUT -j DROP\n", Backend::IptablesLegacy, Family::Ip).is_err());
    assert!(parse_save(
        "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m comment --comment \"open\n",
        Backend::IptablesLegacy,
        Family::Ip
    )
    .is_err());
    assert!(parse_ruleset("{not json", "", &[]).is_err());
    assert!(parse_ruleset("{}", "", &[]).is_err());
}

fn tables_of(save: &str) -> Vec<Table> {
    parse_save(save, Backend::IptablesNft, Family::Ip).unwrap()
}

#[test]
fn base_chains_at_one_hook_and_priority_that_both_drop_name_both_unless_counters_tell() {
    let mut tables =
        tables_of("*filter\n:FORWARD ACCEPT [0:0]\n[0:0] -A FORWARD -p tcp --dport 15012 -j DROP\nCOMMIT\n");
    let mut vpn = tables_of("*filter\n:FORWARD ACCEPT [0:0]\n[0:0] -A FORWARD -i cni0 -j DROP\nCOMMIT\n");
    (vpn[0].backend, vpn[0].name) = (Backend::Nftables, "vpn".into());
    tables.extend(vpn);
    let p = syn("10.244.1.5", "10.244.2.7", 15012);
    let evaluation = evaluate(&tables, &p);
    assert_eq!(evaluation.tied.len(), 2, "{evaluation:#?}");
    assert!(evaluation.blocked);
    let c = resolve(&tables, &evaluation, &|_| Some(false), "FORWARD");
    assert_eq!(c.confidence, Confidence::NotIdentified);
    let note = c.note.unwrap();
    assert!(note.contains("filter/FORWARD #1") && note.contains("vpn/FORWARD #1"), "{note}");
    assert!(note.contains("same hook and priority"), "{note}");
    // The counters of the VPN's rule rose: that one dropped it.
    let vpn_rule = Site { table: 1, chain: 0, rule: Some(0) };
    let c = resolve(&tables, &evaluation, &|site| Some(site == vpn_rule), "FORWARD");
    assert_eq!((c.confidence, c.table.as_deref()), (Confidence::Confirmed, Some("vpn")));
    // The iptables rule's counters did not move and the VPN's rule has none: the VPN's chain
    // ran first.
    let iptables_rule = Site { table: 0, chain: 0, rule: Some(0) };
    let c = resolve(&tables, &evaluation, &|site| (site == iptables_rule).then_some(false), "FORWARD");
    assert_eq!((c.confidence, c.table.as_deref()), (Confidence::Evaluated, Some("vpn")));
    assert!(c.note.unwrap().contains("same hook and priority"));
    // Only one of them drops: that one, evaluated.
    let other = syn("10.244.1.5", "10.244.2.7", 9080);
    let c = culprit(&tables, &other);
    assert_eq!((c.confidence, c.table.as_deref()), (Confidence::Evaluated, Some("vpn")));
}

#[test]
fn an_undecided_accept_in_an_earlier_base_chain_does_not_weaken_a_later_reject() {
    // raw PREROUTING accepts on an unread mark (undecidable), then filter FORWARD rejects.
    let tables = tables_of(
        "*raw\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -m rpfilter -j ACCEPT\nCOMMIT\n\
         *filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -p tcp --dport 15012 -j REJECT\nCOMMIT\n",
    );
    let evaluation = evaluate(&tables, &syn("10.244.1.5", "10.244.2.7", 15012));
    assert_eq!(evaluation.doubts.len(), 1, "the doubt is still reported: {evaluation:#?}");
    let c = resolve(&tables, &evaluation, &|_| None, "FORWARD");
    assert_eq!((c.confidence, c.chain.as_deref()), (Confidence::Evaluated, Some("FORWARD")));
    // In the same chain, an undecided accept before the reject does weaken it.
    let tables = tables_of(
        "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -m rpfilter -j ACCEPT\n\
         -A FORWARD -p tcp --dport 15012 -j REJECT\nCOMMIT\n",
    );
    assert_eq!(culprit(&tables, &syn("10.244.1.5", "10.244.2.7", 15012)).confidence, Confidence::NotIdentified);
}

#[test]
fn kube_proxy_dnat_state_and_unknown_options_stay_in_their_rule() {
    // kube-proxy's `! --ctstate RELATED,ESTABLISHED,DNAT` with no DNAT rule to this address,
    // and an option of an unknown match in an earlier rule that cannot match TCP.
    let tables = tables_of(
        "*filter\n:FORWARD ACCEPT [0:0]\n:KUBE-FORWARD - [0:0]\n\
         -A FORWARD -p udp -m frobnicate --level 3 -j DROP\n\
         -A FORWARD -j KUBE-FORWARD\n\
         -A KUBE-FORWARD -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -p tcp --dport 15012 -j DROP\nCOMMIT\n\
         *nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SEP-A - [0:0]\n\
         -A KUBE-SEP-A -p tcp -j DNAT --to-destination 10.244.9.9:8080\nCOMMIT\n",
    );
    let c = culprit(&tables, &syn("10.244.1.5", "10.244.2.7", 15012));
    assert_eq!((c.confidence, c.chain.as_deref()), (Confidence::Evaluated, Some("KUBE-FORWARD")), "{c:?}");
    // To the DNAT target itself the connection may have been translated: undecided.
    let c = culprit(&tables, &syn("10.244.1.5", "10.244.9.9", 15012));
    assert_eq!(c.confidence, Confidence::NotIdentified);
    assert!(c.note.unwrap().contains("conntrack state unknown"));
}

#[test]
fn bridged_packets_see_the_bridge_as_both_interfaces_and_physdev_matches() {
    let tables = tables_of(
        "*filter\n:FORWARD ACCEPT [0:0]\n\
         -A FORWARD -m physdev --physdev-in vethA --physdev-is-bridged -p tcp --dport 9080 -j ACCEPT\n\
         -A FORWARD -i cni0 -o cni0 -j DROP\nCOMMIT\n",
    );
    let mut p = syn("10.244.1.5", "10.244.1.7", 9080);
    p.oif = Some("cni0".into());
    // Routed view (not bridged): the physdev rule cannot match, the DROP names the bridge.
    assert_eq!(culprit(&tables, &p).position, Some(2));
    p.bridged = Some(super::eval::BridgePorts { bridge: "cni0".into(), in_port: Some("vethA".into()), out_port: None });
    assert_eq!(culprit(&tables, &p).confidence, Confidence::NotIdentified, "accepted by the physdev rule");
    p.bridged = Some(super::eval::BridgePorts { bridge: "cni0".into(), in_port: Some("vethB".into()), out_port: None });
    let c = culprit(&tables, &p);
    assert_eq!((c.confidence, c.position), (Confidence::Evaluated, Some(2)));
}

#[test]
fn an_observed_drop_with_one_possible_rule_names_it_despite_doubts_on_accepts() {
    // An accept on something undecidable, then the only reject on the path.
    let tables =
        tables_of("*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -m rpfilter -j ACCEPT\n-A FORWARD -j REJECT\nCOMMIT\n");
    let p = syn("10.244.1.5", "10.244.2.7", 9080);
    let evaluation = evaluate(&tables, &p);
    assert!(evaluation.sole);
    assert_eq!(resolve(&tables, &evaluation, &|_| None, "FORWARD").confidence, Confidence::NotIdentified);
    let c = super::culprit::resolve_observed(&tables, &evaluation, &|_| None, "FORWARD");
    assert_eq!((c.confidence, c.position), (Confidence::Evaluated, Some(2)));
    assert!(c.note.unwrap().contains("unsupported match `-m rpfilter`"));
    // Counters that did not move overrule the inference.
    let c = super::culprit::resolve_observed(&tables, &evaluation, &|_| Some(false), "FORWARD");
    assert_eq!(c.confidence, Confidence::NotIdentified);
    // Two rules that may drop it: no inference.
    let tables =
        tables_of("*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -m rpfilter -j DROP\n-A FORWARD -j REJECT\nCOMMIT\n");
    let evaluation = evaluate(&tables, &p);
    assert!(!evaluation.sole);
    let c = super::culprit::resolve_observed(&tables, &evaluation, &|_| None, "FORWARD");
    assert_eq!(c.confidence, Confidence::NotIdentified);
}

const NFT_EXPRESSIONS_JSON: &str = include_str!("../../../observer/tests/fixtures/netfilter/nft-expressions.json");
const NFT_EXPRESSIONS_TEXT: &str = include_str!("../../../observer/tests/fixtures/netfilter/nft-expressions.txt");

/// A SYN forwarded from cni0 to eth0 (an Ethernet interface, as both ends are here).
fn ether_syn(src: &str, dst: &str, dport: u16) -> Packet {
    Packet { iif_type: Some(1), oif_type: Some(1), ..syn(src, dst, dport) }
}

#[test]
fn nft_expressions_real_firewalls_use_are_evaluated() {
    let tables = parse_ruleset(NFT_EXPRESSIONS_JSON, NFT_EXPRESSIONS_TEXT, &[]).unwrap();
    let named = |p: &Packet| {
        let evaluation = evaluate(&tables, p);
        assert!(evaluation.doubts.is_empty(), "{evaluation:#?}");
        resolve(&tables, &evaluation, &|_| None, "test").comment
    };
    // A concatenated set of (source, port) pairs.
    assert_eq!(named(&ether_syn("10.244.1.5", "10.244.2.7", 15012)).as_deref(), Some("pair"));
    // An interval set: a range and a prefix.
    assert_eq!(named(&ether_syn("10.244.1.9", "10.244.3.15", 80)).as_deref(), Some("range"));
    assert_eq!(named(&ether_syn("10.244.1.9", "10.250.1.1", 80)).as_deref(), Some("range"));
    // The connection mark a new connection got in prerouting.
    assert_eq!(named(&ether_syn("10.244.1.9", "10.244.2.7", 9999)).as_deref(), Some("ctmark"));
    // The output interface's type.
    assert_eq!(named(&ether_syn("10.244.1.9", "10.244.2.7", 7777)).as_deref(), Some("ether"));
    // `ct status dnat`: no rule here translates destinations, so it is not DNATed.
    assert_eq!(named(&ether_syn("10.244.1.9", "10.244.2.7", 8888)).as_deref(), Some("after dnat"));
    // Nothing matches: passes, and the ICMP type sets were no doubt for TCP.
    assert_eq!(named(&ether_syn("10.244.1.5", "10.244.2.7", 15010)), None);
    // An established packet's connection mark is history the read does not have.
    let mut established = ether_syn("10.244.1.9", "10.244.2.7", 9999);
    established.tcp_flags = Some(0x10);
    let evaluation = evaluate(&tables, &established);
    assert!(evaluation.doubts.iter().any(|d| d.contains("connection mark unknown")), "{evaluation:#?}");
    // Without the interface type, `meta iiftype loopback accept` is a doubt that weakens the
    // drops after it in its chain.
    let c = culprit(&tables, &syn("10.244.1.9", "10.244.2.7", 7777));
    assert_eq!(c.confidence, Confidence::NotIdentified);
    assert!(c.note.unwrap().contains("interface type unknown"));
}

#[test]
fn a_packet_dropped_either_by_an_undecided_rule_or_a_later_chain_is_blocked_by_no_named_rule() {
    let tables = tables_of(
        "*raw\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -m rpfilter --invert -j DROP\nCOMMIT\n\
         *filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -p tcp --dport 15012 -j REJECT\nCOMMIT\n",
    );
    let evaluation = evaluate(&tables, &syn("10.244.1.5", "10.244.2.7", 15012));
    assert!(evaluation.blocked, "{evaluation:#?}");
    assert_eq!(evaluation.decided, None);
    assert_eq!(culprit(&tables, &syn("10.244.1.5", "10.244.2.7", 15012)).confidence, Confidence::NotIdentified);
}

#[test]
fn icmp_types_and_untracked_neighbour_discovery_are_decided() {
    // What an old istio-init put in IPv6 pods: only established traffic and loopback come in.
    let tables = parse_save(
        "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type echo-request -j ACCEPT\n\
         -A INPUT -m state --state ESTABLISHED -j ACCEPT\n-A INPUT -i lo -d ::1/128 -j ACCEPT\n-A INPUT -j REJECT\nCOMMIT\n",
        Backend::IptablesNft,
        Family::Ip6,
    )
    .unwrap();
    let ns = |kind: u8| Packet {
        iif: Some("eth0".into()),
        dst_local: true,
        icmp: Some((kind, 0)),
        ..Packet::between(58, "fd00::1".parse().unwrap(), "ff02::1:ff00:b".parse().unwrap(), 0, 0, None)
    };
    // A neighbour solicitation is untracked: not ESTABLISHED, so rejected, with no doubt.
    let evaluation = evaluate(&tables, &ns(135));
    assert!(evaluation.doubts.is_empty(), "{evaluation:#?}");
    let c = resolve(&tables, &evaluation, &|_| None, "INPUT");
    assert_eq!((c.confidence, c.position), (Confidence::Evaluated, Some(4)));
    // An echo request is accepted by type.
    assert!(evaluate(&tables, &ns(128)).candidates.is_empty());
    // firewalld's raw rule for router adverts and solicitations, by nft's type names.
    let nft = parse_ruleset(NFT_EXPRESSIONS_JSON, NFT_EXPRESSIONS_TEXT, &[]).unwrap();
    let forward = nft[0].chain("forward").unwrap();
    assert_eq!(
        forward.rules[2].matches.last(),
        Some(&super::model::Match::Test {
            field: super::model::Field::IcmpType { v6: true, code: false },
            values: vec![super::model::Value::Number(134), super::model::Value::Number(135)],
            negated: false
        })
    );
}

/// A SYN-ACK conntrack has no entry for (its SYN took another path, or bypassed conntrack) is
/// INVALID, and the usual `--ctstate INVALID -j DROP` drops it. Taken as ESTABLISHED it meets no
/// drop (the accept of established traffic), so a packet seen dropped is evaluated again as
/// INVALID: the INVALID rule is the candidate, named by its counters, or as the only drop on
/// the path. A packet not seen dropped (verify's) is not second-guessed.
#[test]
fn a_non_syn_packet_no_rule_drops_as_established_is_evaluated_as_invalid() {
    let tables = tables_of(
        "*filter\n:FORWARD ACCEPT [0:0]\n\
         -A FORWARD -m conntrack --ctstate INVALID -j DROP\n\
         -A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         -A FORWARD -p tcp --dport 15012 -j ACCEPT\nCOMMIT\n",
    );
    let syn_ack = Packet {
        iif: Some("eth0".into()),
        oif: Some("cni0".into()),
        ..Packet::between(6, "10.244.2.7".parse().unwrap(), "10.244.1.5".parse().unwrap(), 15012, 40_000, Some(0x12))
    };
    assert!(evaluate(&tables, &syn_ack).candidates.is_empty(), "as ESTABLISHED: accepted");
    let evaluation = super::eval::evaluate_dropped(&tables, &syn_ack);
    assert_eq!(evaluation.candidates.len(), 1, "{evaluation:?}");
    assert!(evaluation.candidates[0].doubt.as_deref().is_some_and(|d| d.contains("INVALID")), "{evaluation:?}");
    let invalid_rule = evaluation.candidates[0].site;
    let c = resolve(&tables, &evaluation, &|site| Some(site == invalid_rule), "FORWARD");
    assert_eq!((c.confidence, c.position), (Confidence::Confirmed, Some(1)), "{c:?}");
    assert_eq!(c.rule.as_deref(), Some("-A FORWARD -m conntrack --ctstate INVALID -j DROP"));
    let c = super::culprit::resolve_observed(&tables, &evaluation, &|_| None, "FORWARD");
    assert_eq!((c.confidence, c.position), (Confidence::Evaluated, Some(1)), "the only drop on the path: {c:?}");
    // The SYN itself is NEW: accepted by the port's rule, no candidate, no second guess.
    let syn =
        Packet { tcp_flags: Some(0x02), sport: 40_000, dport: 15012, src: syn_ack.dst, dst: syn_ack.src, ..syn_ack };
    assert!(evaluate(&tables, &syn).candidates.is_empty());
}

/// A drop by a table observer does not read (an nft netdev ingress table): the INVALID guess's
/// rule did not count it, so it is not offered as "possibly" the culprit.
#[test]
fn a_candidate_whose_counters_did_not_move_is_not_offered_as_possibly_the_culprit() {
    let tables = tables_of(
        "*filter\n:FORWARD ACCEPT [0:0]\n\
         -A FORWARD -m conntrack --ctstate INVALID -j DROP\n\
         -A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\nCOMMIT\n",
    );
    let data = Packet {
        iif: Some("eth0".into()),
        oif: Some("cni0".into()),
        ..Packet::between(6, "10.244.2.7".parse().unwrap(), "10.244.1.5".parse().unwrap(), 15012, 40_000, Some(0x18))
    };
    let evaluation = super::eval::evaluate_dropped(&tables, &data);
    assert_eq!(evaluation.candidates.len(), 1);
    let c = super::culprit::resolve_observed(&tables, &evaluation, &|_| Some(false), "FORWARD");
    assert_eq!(c.confidence, Confidence::NotIdentified, "{c:?}");
    let note = c.note.unwrap_or_default();
    assert!(!note.contains("possibly"), "{note}");
    assert!(note.contains("did not count it"), "{note}");
    assert_eq!(c.hook, None, "no hook of a rule that did not count it");
}
