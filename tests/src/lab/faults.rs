//! Fault injectors: firewall rules at a node, written with the tool a real node would use.

use std::net::IpAddr;

/// Which firewall tool writes the rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `iptables` (Debian's default: the nf_tables backend).
    IptablesNft,
    /// `iptables-legacy` (x_tables).
    IptablesLegacy,
    /// Native nftables (`nft`).
    Nftables,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Filter,
    Raw,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Drop,
    /// REJECT with ICMP admin-prohibited (what firewalld and many CNIs send).
    RejectAdminProhibited,
    /// REJECT with a TCP reset.
    RejectTcpReset,
}

/// One TCP rule: match on source/destination prefix and destination port, then the verdict.
#[derive(Clone, Debug)]
pub struct FirewallRule {
    pub backend: Backend,
    pub table: Table,
    pub hook: Hook,
    pub verdict: Verdict,
    pub src: Option<(IpAddr, u8)>,
    pub dst: Option<(IpAddr, u8)>,
    pub dport: Option<u16>,
    /// Comment attached to the rule (as CNIs do).
    pub comment: Option<String>,
}

impl FirewallRule {
    /// A filter-table DROP of TCP to `dport` in `hook`, via iptables (nft backend).
    pub fn drop_tcp(hook: Hook, dport: u16) -> Self {
        Self {
            backend: Backend::IptablesNft,
            table: Table::Filter,
            hook,
            verdict: Verdict::Drop,
            src: None,
            dst: None,
            dport: Some(dport),
            comment: None,
        }
    }

    /// [`FirewallRule::drop_tcp`] limited to one destination address (/32 or /128).
    pub fn drop_tcp_to(hook: Hook, dst: IpAddr, dport: u16) -> Self {
        let prefix = if dst.is_ipv4() { 32 } else { 128 };
        Self { dst: Some((dst, prefix)), ..Self::drop_tcp(hook, dport) }
    }

    fn chain_name(&self) -> &'static str {
        match self.hook {
            Hook::Prerouting => "PREROUTING",
            Hook::Input => "INPUT",
            Hook::Forward => "FORWARD",
            Hook::Output => "OUTPUT",
        }
    }

    /// Whether the rule matches IPv6 addresses (ip6tables; `ip6` in nft).
    pub fn is_ipv6(&self) -> bool {
        self.src.or(self.dst).is_some_and(|(ip, _)| ip.is_ipv6())
    }

    /// The command (program, args) that installs the rule with an iptables backend.
    pub fn iptables_args(&self) -> (&'static str, Vec<String>) {
        let program = match (self.backend == Backend::IptablesLegacy, self.is_ipv6()) {
            (false, false) => "iptables",
            (false, true) => "ip6tables",
            (true, false) => "iptables-legacy",
            (true, true) => "ip6tables-legacy",
        };
        let table = if self.table == Table::Raw { "raw" } else { "filter" };
        let mut args: Vec<String> =
            ["-w", "-t", table, "-I", self.chain_name(), "1", "-p", "tcp"].map(String::from).to_vec();
        if let Some((ip, len)) = self.src {
            args.extend(["-s".into(), format!("{ip}/{len}")]);
        }
        if let Some((ip, len)) = self.dst {
            args.extend(["-d".into(), format!("{ip}/{len}")]);
        }
        if let Some(port) = self.dport {
            args.extend(["-m".into(), "tcp".into(), "--dport".into(), port.to_string()]);
        }
        if let Some(comment) = &self.comment {
            args.extend(["-m".into(), "comment".into(), "--comment".into(), comment.clone()]);
        }
        match self.verdict {
            Verdict::Drop => args.extend(["-j".into(), "DROP".into()]),
            Verdict::RejectAdminProhibited => {
                let with = if self.is_ipv6() { "icmp6-adm-prohibited" } else { "icmp-admin-prohibited" };
                args.extend(["-j", "REJECT", "--reject-with", with].map(String::from))
            }
            Verdict::RejectTcpReset => args.extend(["-j", "REJECT", "--reject-with", "tcp-reset"].map(String::from)),
        }
        (program, args)
    }

    /// `nft -f -` input that installs the rule in its own table (`inet lab_fault`).
    pub fn nft_script(&self) -> String {
        let (hook, priority) = match (self.hook, self.table) {
            (Hook::Prerouting, _) => ("prerouting", if self.table == Table::Raw { -300 } else { 0 }),
            (Hook::Input, _) => ("input", 0),
            (Hook::Forward, _) => ("forward", 0),
            (Hook::Output, Table::Raw) => ("output", -300),
            (Hook::Output, Table::Filter) => ("output", 0),
        };
        let chain = format!("lab_{hook}");
        let mut matches = String::new();
        let family = if self.is_ipv6() { "ip6" } else { "ip" };
        if let Some((ip, len)) = self.src {
            matches.push_str(&format!("{family} saddr {ip}/{len} "));
        }
        if let Some((ip, len)) = self.dst {
            matches.push_str(&format!("{family} daddr {ip}/{len} "));
        }
        matches.push_str("meta l4proto tcp ");
        if let Some(port) = self.dport {
            matches.push_str(&format!("tcp dport {port} "));
        }
        let verdict = match self.verdict {
            Verdict::Drop => "drop",
            Verdict::RejectAdminProhibited => "reject with icmpx type admin-prohibited",
            Verdict::RejectTcpReset => "reject with tcp reset",
        };
        let comment = self.comment.as_ref().map(|c| format!(" comment \"{c}\"")).unwrap_or_default();
        format!(
            "table inet lab_fault {{\n  chain {chain} {{\n    type filter hook {hook} priority {priority}; policy accept;\n    {matches}{verdict}{comment}\n  }}\n}}\n"
        )
    }
}

/// Loads a real ruleset, converted by [`super::rulesets::convert`] (and adapted to the lab with
/// [`super::rulesets::rename`]), into a namespace with the tools that wrote it: `ipset` for the
/// sets its rules name (members from `members`, else empty `hash:net` sets), then
/// `iptables-restore` / `ip6tables-restore` (nft or legacy backend, `--noflush`: the lab's own
/// rules stay) and `nft -f`.
pub fn load_ruleset(
    netns: &str,
    ruleset: &super::rulesets::Pasted,
    members: &[(&str, &[String])],
) -> Result<(), super::LabError> {
    use super::cmd::{in_netns, in_netns_with_input};
    for set in &ruleset.ipsets {
        in_netns(netns, "ipset", &["create", set, "hash:net", "-exist"])?;
        for (_, addrs) in members.iter().filter(|(name, _)| name == set) {
            for addr in addrs.iter() {
                in_netns(netns, "ipset", &["add", set, addr, "-exist"])?;
            }
        }
    }
    for part in &ruleset.iptables {
        let tool = match (part.ipv6, part.legacy) {
            (false, false) => "iptables-nft-restore",
            (true, false) => "ip6tables-nft-restore",
            (false, true) => "iptables-legacy-restore",
            (true, true) => "ip6tables-legacy-restore",
        };
        in_netns_with_input(netns, tool, &["-w", "--noflush"], &part.restore)?;
    }
    if !ruleset.nft.is_empty() {
        in_netns_with_input(netns, "nft", &["-f", "-"], &ruleset.nft)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iptables_rule_text() {
        let mut rule = FirewallRule::drop_tcp(Hook::Forward, 15012);
        rule.src = Some((IpAddr::from([10, 244, 1, 0]), 24));
        let (program, args) = rule.iptables_args();
        assert_eq!(program, "iptables");
        assert_eq!(args.join(" "), "-w -t filter -I FORWARD 1 -p tcp -s 10.244.1.0/24 -m tcp --dport 15012 -j DROP");
    }

    #[test]
    fn nft_rule_text() {
        let mut rule = FirewallRule::drop_tcp(Hook::Forward, 15017);
        rule.backend = Backend::Nftables;
        rule.verdict = Verdict::RejectAdminProhibited;
        let script = rule.nft_script();
        assert!(script.contains("type filter hook forward priority 0; policy accept;"), "{script}");
        assert!(
            script.contains("meta l4proto tcp tcp dport 15017 reject with icmpx type admin-prohibited"),
            "{script}"
        );
    }

    #[test]
    fn ipv6_rules_use_ip6tables_and_ip6_matches() {
        let mut rule = FirewallRule::drop_tcp(Hook::Forward, 9080);
        rule.dst = Some(("fd00:10:244:2::b".parse().expect("ip"), 128));
        let (program, args) = rule.iptables_args();
        assert_eq!(program, "ip6tables");
        assert!(args.join(" ").contains("-d fd00:10:244:2::b/128"));
        rule.backend = Backend::Nftables;
        assert!(rule.nft_script().contains("ip6 daddr fd00:10:244:2::b/128 meta l4proto tcp tcp dport 9080 drop"));
    }
}
