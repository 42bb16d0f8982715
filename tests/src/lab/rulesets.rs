//! Real rulesets as people paste them (`iptables -S` lines, `iptables-save` output, `nft list
//! ruleset` output, shell prompts, a route table beside them), turned into what the tools load:
//! `iptables-restore` input per family and `nft -f` input. Tables that iptables-nft wrote and
//! nft merely printed (`# Warning: table ... is managed by iptables-nft`) are taken from the
//! iptables-save part, never from nft's compatibility view.
//!
//! Std only: the observer crate's tests include this file too.

/// One iptables-restore input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IptablesPart {
    pub ipv6: bool,
    /// The paste names iptables-legacy (else the nf_tables backend, Debian's default).
    pub legacy: bool,
    /// `iptables-restore` input: `*table`, chain declarations, `-A` rules, `COMMIT`.
    pub restore: String,
    /// Rules (`-A` lines) in the paste, per table name.
    pub rule_lines: Vec<(String, usize)>,
}

/// A pasted ruleset, converted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pasted {
    pub iptables: Vec<IptablesPart>,
    /// `nft -f` input of the native nftables tables (empty when none).
    pub nft: String,
    /// Rule lines of `nft`, per `(family, table)`.
    pub nft_rule_lines: Vec<((String, String), usize)>,
    /// ipsets the iptables rules name (`-m set --match-set NAME`): they must exist to load.
    pub ipsets: Vec<String>,
}

impl Pasted {
    pub fn iptables_rules(&self) -> usize {
        self.iptables.iter().flat_map(|p| &p.rule_lines).map(|(_, n)| n).sum()
    }

    pub fn nft_rules(&self) -> usize {
        self.nft_rule_lines.iter().map(|(_, n)| n).sum()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Section {
    Skip,
    Iptables { ipv6: bool, table: Option<&'static str> },
    Nft,
}

/// Converts a paste (see the module doc). Sections are told apart by the command that printed
/// them (a prompt or a `## command` heading) or by their own shape.
pub fn convert(text: &str) -> Pasted {
    let legacy = text.lines().take_while(|l| l.starts_with('#')).any(|l| l.contains("iptables-legacy"));
    let mut blocks: Vec<(Section, Vec<&str>)> = Vec::new();
    let mut section = Section::Skip;
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(next) = heading(trimmed) {
            section = next;
            blocks.push((section, Vec::new()));
            continue;
        }
        if section == Section::Skip {
            // Shape alone: the first `table`/`*table`/`-A` line opens a section.
            if trimmed.starts_with("table ") {
                section = Section::Nft;
            } else if trimmed.starts_with('*') || trimmed.starts_with("-A ") || trimmed.starts_with("-P ") {
                section = Section::Iptables { ipv6: false, table: None };
            } else {
                continue;
            }
            blocks.push((section, Vec::new()));
        }
        if let Some((_, lines)) = blocks.last_mut() {
            lines.push(line);
        }
    }
    let mut out = Pasted::default();
    for (section, lines) in blocks {
        match section {
            Section::Skip => {}
            Section::Nft => nft_block(&lines, &mut out),
            Section::Iptables { ipv6, table } => iptables_block(&lines, ipv6, table, legacy, &mut out),
        }
    }
    out.ipsets.sort();
    out.ipsets.dedup();
    out
}

/// What a heading or prompt line opens, if it is one.
fn heading(line: &str) -> Option<Section> {
    let command = if let Some((_, cmd)) = line.split_once("$ ") {
        cmd.trim_start_matches("sudo ").trim()
    } else if let Some(h) = line.strip_prefix("## ") {
        h.trim()
    } else if matches!(line, "iptables-save" | "ip6tables-save") {
        line
    } else {
        return None;
    };
    let first = command.split_whitespace().next().unwrap_or_default();
    Some(match first {
        "nft" => Section::Nft,
        "iptables" | "iptables-save" | "iptables-nft-save" | "iptables-legacy-save" => {
            Section::Iptables { ipv6: false, table: table_of(command) }
        }
        "ip6tables" | "ip6tables-save" | "ip6tables-nft-save" | "ip6tables-legacy-save" => {
            Section::Iptables { ipv6: true, table: table_of(command) }
        }
        "filter" | "nat" | "mangle" | "raw" | "security" => Section::Iptables { ipv6: false, table: table_of(first) },
        _ => Section::Skip,
    })
}

fn table_of(command: &str) -> Option<&'static str> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let named = words.iter().position(|w| *w == "-t").and_then(|i| words.get(i + 1)).copied();
    let name = named.or_else(|| words.first().copied().filter(|w| TABLES.contains(w)));
    match name {
        Some(name) => TABLES.iter().find(|t| **t == name).copied(),
        // `iptables -S` / `--list-rules` without `-t` lists the filter table.
        None if words.iter().any(|w| *w == "-S" || *w == "--list-rules") => Some("filter"),
        None => None,
    }
}

const TABLES: [&str; 5] = ["filter", "nat", "mangle", "raw", "security"];

/// The chains each table has built in.
fn builtins(table: &str) -> &'static [&'static str] {
    match table {
        "filter" | "security" => &["INPUT", "FORWARD", "OUTPUT"],
        "nat" => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        "raw" => &["PREROUTING", "OUTPUT"],
        _ => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
    }
}

#[derive(Default)]
struct TableText {
    name: String,
    declared: Vec<String>,
    rules: Vec<String>,
}

fn iptables_block(lines: &[&str], ipv6: bool, table: Option<&'static str>, legacy: bool, out: &mut Pasted) {
    let mut tables: Vec<TableText> = Vec::new();
    let current = |tables: &mut Vec<TableText>| {
        if tables.is_empty() {
            tables.push(TableText { name: table.unwrap_or("filter").into(), ..TableText::default() });
        }
        tables.len() - 1
    };
    let mut v4 = false;
    let mut v6 = false;
    for raw in lines {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line == "COMMIT" {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            tables.push(TableText { name: name.trim().into(), ..TableText::default() });
            continue;
        }
        let t = current(&mut tables);
        let table = &mut tables[t];
        if let Some(decl) = line.strip_prefix(':') {
            table.declared.push(format!(":{decl}"));
        } else if let Some(name) = line.strip_prefix("-N ") {
            table.declared.push(format!(":{} - [0:0]", name.trim()));
        } else if let Some(rest) = line.strip_prefix("-P ") {
            let mut words = rest.split_whitespace();
            let (chain, policy) = (words.next().unwrap_or_default(), words.next().unwrap_or("ACCEPT"));
            table.declared.push(format!(":{chain} {policy} [0:0]"));
        } else if line.starts_with("-A ") || (line.starts_with('[') && line.contains("-A ")) {
            for (i, word) in line.split_whitespace().enumerate() {
                let addr = word.split('/').next().unwrap_or_default();
                if i > 0 && addr.parse::<std::net::Ipv4Addr>().is_ok() {
                    v4 = true;
                }
                if i > 0 && addr.contains(':') && addr.parse::<std::net::Ipv6Addr>().is_ok() {
                    v6 = true;
                }
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            if let Some(i) = words.iter().position(|w| *w == "--match-set") {
                if let Some(name) = words.get(i + 1) {
                    out.ipsets.push((*name).to_string());
                }
            }
            table.rules.push(line.to_string());
        }
    }
    // A restore input's family shows in its addresses when the paste does not say.
    let ipv6 = if v4 != v6 { v6 } else { ipv6 };
    let mut part = IptablesPart { ipv6, legacy, ..IptablesPart::default() };
    for table in tables {
        if table.rules.is_empty() && table.declared.is_empty() {
            continue;
        }
        part.restore.push_str(&format!("*{}\n", table.name));
        for builtin in builtins(&table.name) {
            let prefix = format!(":{builtin} ");
            if !table.declared.iter().any(|d| d.starts_with(&prefix)) {
                part.restore.push_str(&format!(":{builtin} ACCEPT [0:0]\n"));
            }
        }
        for decl in &table.declared {
            part.restore.push_str(decl);
            part.restore.push('\n');
        }
        for rule in &table.rules {
            part.restore.push_str(rule);
            part.restore.push('\n');
        }
        part.restore.push_str("COMMIT\n");
        part.rule_lines.push((table.name.clone(), table.rules.len()));
    }
    if !part.restore.is_empty() {
        out.iptables.push(part);
    }
}

fn nft_block(lines: &[&str], out: &mut Pasted) {
    let mut depth = 0usize;
    let mut skipping = false;
    let mut managed_next = false;
    let mut in_chain = false;
    let mut table: Option<(String, String)> = None;
    for raw in lines {
        let line = raw.trim();
        if depth == 0 {
            if line.starts_with("# Warning: table") && line.contains("managed by iptables") {
                managed_next = true;
                continue;
            }
            if let Some(rest) = line.strip_prefix("table ") {
                let mut words = rest.split_whitespace();
                let key = (words.next().unwrap_or_default().to_string(), words.next().unwrap_or_default().to_string());
                skipping = managed_next;
                managed_next = false;
                if !skipping {
                    out.nft_rule_lines.push((key.clone(), 0));
                }
                table = Some(key);
            } else if line.is_empty() || line.starts_with('#') {
                continue;
            }
        }
        let opens = line.ends_with('{');
        let closes = line == "}";
        if depth == 1 && opens {
            in_chain = line.starts_with("chain ");
        }
        if depth == 2
            && in_chain
            && !closes
            && !line.is_empty()
            && !line.starts_with('#')
            && !line.starts_with("type ")
            && !line.starts_with("policy ")
            && !line.starts_with("comment ")
            && !skipping
        {
            if let Some(entry) = out.nft_rule_lines.last_mut().filter(|(k, _)| Some(k) == table.as_ref()) {
                entry.1 += 1;
            }
        }
        if !(skipping || depth == 0 && line.is_empty()) {
            out.nft.push_str(raw);
            out.nft.push('\n');
        }
        if opens {
            depth += 1;
        }
        if closes {
            depth = depth.saturating_sub(1);
            if depth == 1 {
                in_chain = false;
            }
        }
    }
}

/// Replaces whole words (interface names, addresses) of a ruleset: `pairs` of (from, to). A
/// word boundary is anything but a letter, digit, `-`, `_`, `.` or `:`, so `eth0` does not
/// rename `eth01` and `10.0.0.1` does not rename `10.0.0.10`, but renames the `eth0` of a
/// wildcard `eth0+`.
pub fn rename(text: &str, pairs: &[(&str, &str)]) -> String {
    let word_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'outer: while !rest.is_empty() {
        let before = out.chars().last();
        for (from, to) in pairs {
            if rest.starts_with(from) && !before.is_some_and(word_char) {
                let after = rest[from.len()..].chars().next();
                if !after.is_some_and(word_char) {
                    out.push_str(to);
                    rest = &rest[from.len()..];
                    continue 'outer;
                }
            }
        }
        let c = rest.chars().next().unwrap_or_default();
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_rules_become_restore_input_with_builtins_declared() {
        let paste = "# header\n\n## nat\n    -P PREROUTING ACCEPT\n    -N DOCKER\n    -A DOCKER -i br0 -j RETURN\n\
                     \n## filter\n-N X\n-A FORWARD -m set --match-set s1 dst -j X\n-A X -j DROP\n";
        let out = convert(paste);
        assert_eq!(out.iptables.len(), 2);
        assert_eq!(
            out.iptables[0].restore,
            "*nat\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
             :PREROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n-A DOCKER -i br0 -j RETURN\nCOMMIT\n"
        );
        assert_eq!(out.iptables[1].rule_lines, vec![("filter".to_string(), 2)]);
        assert_eq!(out.ipsets, vec!["s1".to_string()]);
        assert_eq!(out.iptables_rules(), 3);
    }

    #[test]
    fn nft_listings_skip_tables_iptables_nft_wrote_and_count_rule_lines() {
        let paste = "user@host:~$ sudo nft list ruleset\n# Warning: table ip filter is managed by iptables-nft, do not touch!\n\
                     table ip filter {\n\tchain FORWARD {\n\t\ttype filter hook forward priority filter; policy accept;\n\
                     \t\tcounter packets 0 bytes 0 # Warning: XT target DNAT not found\nxt target \"DNAT\"\n\t}\n}\n\
                     table inet vpn {\n\tset s {\n\t\ttype ipv4_addr\n\t\telements = { 10.0.0.1 }\n\t}\n\
                     \tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n\t\tip saddr @s accept\n\t\tdrop\n\t}\n}\n";
        let out = convert(paste);
        assert!(!out.nft.contains("table ip filter") && out.nft.contains("table inet vpn"), "{}", out.nft);
        assert_eq!(out.nft_rule_lines, vec![(("inet".to_string(), "vpn".to_string()), 2)]);
    }

    #[test]
    fn rename_replaces_whole_words_only() {
        let text = "-A FORWARD -i eth0 -o eth01 -d 10.0.0.1/32 -s 10.0.0.10 -j DROP # eth0+";
        assert_eq!(
            rename(text, &[("eth0", "uplink"), ("10.0.0.1/32", "10.9.9.9/32")]),
            "-A FORWARD -i uplink -o eth01 -d 10.9.9.9/32 -s 10.0.0.10 -j DROP # uplink+"
        );
    }
}
