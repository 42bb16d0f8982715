//! Parses `iptables-save -c` / `ip6tables-save -c` output (legacy and nft backends print the
//! same format) into the common model.

use std::net::IpAddr;

use super::{
    ipset::IpSets,
    model::{
        icmp_type_number, Action, Backend, BaseChain, Chain, Counters, Family, Field, HookPoint, MarkChange, Match,
        NatKind, Policy, Rule, Table, Value, CT_DNAT, CT_ESTABLISHED, CT_INVALID, CT_NEW, CT_RELATED, CT_SNAT,
        CT_UNTRACKED,
    },
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IptablesParseError {
    #[error("line {line}: {what} (in `{text}`)")]
    Line { line: usize, what: String, text: String },
}

/// Parses the whole output of one `*-save -c` run, with no ipsets known.
pub fn parse_save(output: &str, backend: Backend, family: Family) -> Result<Vec<Table>, IptablesParseError> {
    parse_save_with(output, backend, family, &IpSets::default())
}

/// Parses the whole output of one `*-save -c` run rule by rule: a match or target this parser
/// does not know becomes an unsupported match of that rule only (a doubt when the rule is
/// reached), never an error. Errors are for output that is not iptables-save's shape at all.
pub fn parse_save_with(
    output: &str,
    backend: Backend,
    family: Family,
    ipsets: &IpSets,
) -> Result<Vec<Table>, IptablesParseError> {
    let mut tables: Vec<Table> = Vec::new();
    for (index, raw) in output.lines().enumerate() {
        let line = raw.trim();
        let error = |what: &str| IptablesParseError::Line { line: index + 1, what: what.into(), text: line.into() };
        if line.is_empty() || line.starts_with('#') || line == "COMMIT" {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            tables.push(Table { backend, family, name: name.to_string(), chains: Vec::new() });
            continue;
        }
        let table = tables.last_mut().ok_or_else(|| error("rule or chain before any `*table` line"))?;
        if let Some(decl) = line.strip_prefix(':') {
            table
                .chains
                .push(parse_chain_declaration(decl, &table.name).ok_or_else(|| error("bad chain declaration"))?);
            continue;
        }
        let (counters, rest) = split_counters(line);
        let words = split_words(rest).map_err(|what| error(&what))?;
        let [flag, chain_name, args @ ..] = words.as_slice() else {
            return Err(error("expected `-A CHAIN ...`"));
        };
        if flag != "-A" {
            return Err(error("expected `-A CHAIN ...`"));
        }
        let known_chains: Vec<String> = table.chains.iter().map(|c| c.name.clone()).collect();
        let chain = table
            .chains
            .iter_mut()
            .find(|c| &c.name == chain_name)
            .ok_or_else(|| error("rule for an undeclared chain"))?;
        let mut rule = parse_rule_args(args, &known_chains, ipsets);
        rule.position = chain.rules.len() + 1;
        rule.text = rest.to_string();
        rule.counters = counters;
        chain.rules.push(rule);
    }
    Ok(tables)
}

/// `FORWARD DROP [12:720]` or `KUBE-FORWARD - [0:0]`.
fn parse_chain_declaration(decl: &str, table: &str) -> Option<Chain> {
    let mut parts = decl.split_whitespace();
    let name = parts.next()?.to_string();
    let policy = parts.next()?;
    let counters = parts.next().and_then(parse_counters);
    let base = match policy {
        "-" => None,
        policy => {
            let hook = HookPoint::from_name(&name)?;
            Some(BaseChain {
                hook,
                priority: builtin_priority(table, hook),
                policy: if policy == "DROP" { Policy::Drop } else { Policy::Accept },
                policy_counters: counters,
            })
        }
    };
    Some(Chain { name, base, rules: Vec::new() })
}

/// The priorities iptables registers its tables at (NF_IP_PRI_*).
pub fn builtin_priority(table: &str, hook: HookPoint) -> i32 {
    match table {
        "raw" => -300,
        "mangle" => -150,
        "nat" if matches!(hook, HookPoint::Prerouting | HookPoint::Output) => -100,
        "nat" => 100,
        "security" => 50,
        _ => 0,
    }
}

fn split_counters(line: &str) -> (Option<Counters>, &str) {
    if line.starts_with('[') {
        if let Some(end) = line.find(']') {
            return (parse_counters(&line[..=end]), line[end + 1..].trim_start());
        }
    }
    (None, line)
}

fn parse_counters(text: &str) -> Option<Counters> {
    let inner = text.strip_prefix('[')?.strip_suffix(']')?;
    let (packets, bytes) = inner.split_once(':')?;
    Some(Counters { packets: packets.parse().ok()?, bytes: bytes.parse().ok()? })
}

/// Shell-like words: iptables-save double-quotes values with spaces and escapes `"` and `\`.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                current.push(chars.next().ok_or("line ends with a backslash")?);
                in_word = true;
            }
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            c => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    if in_word {
        words.push(current);
    }
    Ok(words)
}

/// The matches and target of one rule (`-A CHAIN` already removed). What cannot be parsed
/// becomes an [`Match::Unsupported`] of this rule.
fn parse_rule_args(args: &[String], chains: &[String], ipsets: &IpSets) -> Rule {
    let mut rule = Rule {
        position: 0,
        handle: None,
        text: String::new(),
        comment: None,
        matches: Vec::new(),
        action: Action::Continue,
        counters: None,
    };
    let mut module = String::new();
    let mut negated = false;
    let mut i = 0;
    let mut target: Option<String> = None;
    let mut target_args: Vec<(String, String)> = Vec::new();
    while i < args.len() {
        let option = args[i].as_str();
        i += 1;
        if option == "!" {
            negated = true;
            continue;
        }
        let parsed = parse_option(option, args, &mut i, &module, ipsets, target.is_some());
        match parsed {
            Ok(Parsed::Tests(tests)) => {
                rule.matches.extend(tests.into_iter().map(|(field, values)| Match::Test { field, values, negated }))
            }
            Ok(Parsed::Module(m)) => {
                // A module this parser does not model is a doubt even when it has no options
                // (`-m rpfilter`); its options are then added to that one doubt.
                if !KNOWN_MODULES.contains(&m.as_str()) {
                    rule.matches.push(Match::Unsupported(format!("-m {m}")));
                }
                module = m;
            }
            Ok(Parsed::Target(t)) => target = Some(t),
            Ok(Parsed::Goto(chain)) => rule.action = Action::Goto(chain),
            Ok(Parsed::Comment(c)) => {
                // The first comment is the CNI's id (`cali:...`) or the policy; keep both readable.
                rule.comment = Some(match rule.comment.take() {
                    Some(first) if first.starts_with("cali:") => c,
                    Some(first) => first,
                    None => c,
                });
            }
            Ok(Parsed::TargetArg(k, v)) => target_args.push((k, v)),
            Ok(Parsed::Nothing) => {}
            Err(what) => match rule.matches.last_mut() {
                Some(Match::Unsupported(last)) if what.starts_with(last.as_str()) && what.contains(" --") => {
                    *last = what
                }
                Some(Match::Unsupported(last)) if last.starts_with(&format!("-m {module}")) && !module.is_empty() => {
                    last.push_str(what.strip_prefix(&format!("-m {module}")).unwrap_or(&what))
                }
                _ => rule.matches.push(Match::Unsupported(what)),
            },
        }
        negated = false;
    }
    if let Some(target) = target {
        rule.action = target_action(&target, &target_args, chains);
    }
    rule
}

/// Modules whose options this parser models (or which only name a protocol's options).
const KNOWN_MODULES: [&str; 16] = [
    "tcp",
    "udp",
    "sctp",
    "udplite",
    "icmp",
    "icmp6",
    "icmpv6",
    "comment",
    "conntrack",
    "state",
    "mark",
    "connmark",
    "addrtype",
    "set",
    "multiport",
    "physdev",
];

enum Parsed {
    Tests(Vec<(Field, Vec<Value>)>),
    Module(String),
    Target(String),
    Goto(String),
    Comment(String),
    TargetArg(String, String),
    Nothing,
}

/// One option and its values (consumed from `args` at `i`); `Err` names what is not modelled.
fn parse_option(
    option: &str,
    args: &[String],
    i: &mut usize,
    module: &str,
    ipsets: &IpSets,
    after_target: bool,
) -> Result<Parsed, String> {
    let mut value = || take(args, i, option);
    let one = |field: Field, values: Vec<Value>| Ok(Parsed::Tests(vec![(field, values)]));
    match option {
        "-p" | "--protocol" => {
            let proto = value()?;
            if proto == "all" || proto == "0" {
                return Ok(Parsed::Nothing);
            }
            one(Field::L4Proto, vec![Value::Proto(protocol_number(&proto)?)])
        }
        "-s" | "--source" => one(Field::Saddr, parse_nets(&value()?)?),
        "-d" | "--destination" => one(Field::Daddr, parse_nets(&value()?)?),
        "-i" | "--in-interface" => one(Field::IifName, vec![Value::Iface(value()?)]),
        "-o" | "--out-interface" => one(Field::OifName, vec![Value::Iface(value()?)]),
        "-m" | "--match" => Ok(Parsed::Module(value()?)),
        "-j" | "--jump" => Ok(Parsed::Target(value()?)),
        "-g" | "--goto" => Ok(Parsed::Goto(value()?)),
        "-f" | "--fragment" => Err("-f (fragments)".into()),
        "--dport" | "--destination-port" | "--dports" | "--destination-ports" if !after_target => {
            one(Field::Dport, parse_ports(&value()?)?)
        }
        "--sport" | "--source-port" | "--sports" | "--source-ports" if !after_target => {
            one(Field::Sport, parse_ports(&value()?)?)
        }
        "--syn" => one(Field::TcpFlags { mask: 0x17 }, vec![Value::Number(0x02)]),
        "--tcp-flags" => {
            let mask = tcp_flag_bits(&value()?)?;
            let set = tcp_flag_bits(&value()?)?;
            one(Field::TcpFlags { mask }, vec![Value::Number(u32::from(set))])
        }
        "--ctstate" | "--state" => one(Field::CtState, vec![Value::CtStates(ct_states(&value()?)?)]),
        "--comment" => Ok(Parsed::Comment(value()?)),
        "--mark" if module == "mark" || module == "connmark" => {
            let (v, mask) = parse_mark(&value()?)?;
            let field = if module == "mark" { Field::Mark { mask } } else { Field::CtMark { mask } };
            one(field, vec![Value::Number(v)])
        }
        "--src-type" | "--dst-type" if module == "addrtype" => {
            let kind = value()?;
            let field = if option == "--src-type" { Field::SrcLocal } else { Field::DstLocal };
            match kind.as_str() {
                "LOCAL" => one(field, vec![Value::Bool(true)]),
                _ => Err(format!("-m addrtype {option} {kind}")),
            }
        }
        "--limit-iface-in" | "--limit-iface-out" if module == "addrtype" => Ok(Parsed::Nothing),
        "--match-set" if module == "set" => {
            let name = value()?;
            let dirs = value()?;
            let field = match dirs.as_str() {
                "src" => Field::Saddr,
                "dst" => Field::Daddr,
                _ => return Err(format!("-m set --match-set {name} {dirs}")),
            };
            let members = ipsets.addresses(&name).map_err(|why| format!("-m set --match-set {name} {dirs}: {why}"))?;
            one(field, members)
        }
        "--icmp-type" | "--icmpv6-type" => {
            let v6 = option == "--icmpv6-type";
            let text = value()?;
            if text == "any" {
                return Ok(Parsed::Nothing);
            }
            let (kind, code) = text.split_once('/').map_or((text.as_str(), None), |(t, c)| (t, Some(c)));
            let number = |t: &str| icmp_type_number(t, v6).ok_or_else(|| format!("unknown ICMP type `{text}`"));
            let mut tests = vec![(Field::IcmpType { v6, code: false }, vec![Value::Number(number(kind)?.into())])];
            if let Some(code) = code {
                let code: u8 = code.parse().map_err(|_| format!("bad ICMP code in `{text}`"))?;
                tests.push((Field::IcmpType { v6, code: true }, vec![Value::Number(code.into())]));
            }
            Ok(Parsed::Tests(tests))
        }
        "--physdev-in" => one(Field::PhysdevIn, vec![Value::Iface(value()?)]),
        "--physdev-out" => one(Field::PhysdevOut, vec![Value::Iface(value()?)]),
        "--physdev-is-bridged" => one(Field::Bridged, vec![Value::Bool(true)]),
        "--physdev-is-in" => one(Field::PhysdevIsIn, vec![Value::Bool(true)]),
        "--physdev-is-out" => one(Field::PhysdevIsOut, vec![Value::Bool(true)]),
        opt if after_target && opt.starts_with("--") => {
            let v =
                if args.get(*i).is_some_and(|a| !a.starts_with("--")) { take(args, i, option)? } else { String::new() };
            Ok(Parsed::TargetArg(opt.to_string(), v))
        }
        opt if opt.starts_with('-') => {
            // An option of a match this evaluator does not model: its values follow it.
            let mut shown = format!("-m {module} {opt}");
            while args.get(*i).is_some_and(|a| !a.starts_with('-') && a != "!") {
                shown.push(' ');
                shown.push_str(&args[*i]);
                *i += 1;
            }
            Err(shown)
        }
        other => Err(format!("unexpected word `{other}`")),
    }
}

fn take(args: &[String], i: &mut usize, option: &str) -> Result<String, String> {
    let v = args.get(*i).cloned().ok_or_else(|| format!("{option} needs a value"))?;
    *i += 1;
    Ok(v)
}

fn target_action(target: &str, args: &[(String, String)], chains: &[String]) -> Action {
    let arg = |name: &str| args.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    match target {
        "ACCEPT" => Action::Accept,
        "DROP" => Action::Drop,
        "REJECT" => Action::Reject(arg("--reject-with").unwrap_or("icmp-port-unreachable").to_string()),
        "RETURN" => Action::Return,
        "LOG" | "NFLOG" | "ULOG" | "TRACE" | "CT" | "CHECKSUM" | "TCPMSS" | "NOTRACK" | "AUDIT" | "DSCP" | "TOS"
        | "CLASSIFY" | "TTL" | "HL" | "SECMARK" | "CONNSECMARK" | "IDLETIMER" | "RATEEST" | "TEE" => Action::Continue,
        "CONNMARK" => Action::SetCtMark(connmark_change(args)),
        "MARK" => match arg("--set-xmark").or(arg("--set-mark")).map(parse_mark) {
            Some(Ok((value, mask))) => Action::SetMark { value, mask },
            _ => Action::UnknownMark,
        },
        "DNAT" => {
            let to = arg("--to-destination").and_then(dnat_address);
            Action::Nat(NatKind::Destination(to))
        }
        "SNAT" | "MASQUERADE" | "NETMAP" => Action::Nat(NatKind::Source),
        "REDIRECT" | "TPROXY" => Action::Nat(NatKind::Local),
        chain if chains.iter().any(|c| c == chain) => Action::Jump(chain.to_string()),
        other => Action::Unsupported(format!("-j {other}")),
    }
}

/// `CONNMARK --set-xmark v/m`, `--save-mark [--mask m]`, `--restore-mark [--mask m]`.
fn connmark_change(args: &[(String, String)]) -> MarkChange {
    let arg = |name: &str| args.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let mask = || {
        arg("--mask").or(arg("--nfmask")).or(arg("--ctmask")).map_or(Ok(u32::MAX), |m| parse_mark(m).map(|(v, _)| v))
    };
    if let Some(Ok((value, mask))) = arg("--set-xmark").or(arg("--set-mark")).map(parse_mark) {
        return MarkChange::Set { value, mask };
    }
    match (arg("--save-mark").is_some(), arg("--restore-mark").is_some(), mask()) {
        (true, false, Ok(mask)) => MarkChange::Save { mask },
        (false, true, Ok(mask)) => MarkChange::Restore { mask },
        _ => MarkChange::Unknown,
    }
}

/// The single address of a DNAT target (`10.0.0.5:80`, `[fd00::5]:80`, `10.0.0.5`), or `None`
/// for a range.
fn dnat_address(to: &str) -> Option<IpAddr> {
    if let Some(rest) = to.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    to.parse().ok().or_else(|| to.rsplit_once(':').and_then(|(addr, _)| addr.parse().ok()))
}

/// A protocol's number from its name: the well-known ones, then `/etc/protocols` (names and
/// aliases, as iptables itself resolves them), then a number.
pub fn protocol_number(name: &str) -> Result<u8, String> {
    if let Ok(n) = builtin_protocol(name) {
        return Ok(n);
    }
    static PROTOCOLS: std::sync::OnceLock<Vec<(String, u8)>> = std::sync::OnceLock::new();
    let table =
        PROTOCOLS.get_or_init(|| parse_protocols(&std::fs::read_to_string("/etc/protocols").unwrap_or_default()));
    let lower = name.to_ascii_lowercase();
    table
        .iter()
        .find(|(n, _)| *n == lower)
        .map(|(_, number)| *number)
        .ok_or_else(|| format!("unknown protocol `{name}` (not in /etc/protocols)"))
}

/// `/etc/protocols` lines: `name number [aliases...] [# comment]`, as (lowercase name, number).
pub fn parse_protocols(text: &str) -> Vec<(String, u8)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_whitespace();
        let (Some(name), Some(Ok(number))) = (words.next(), words.next().map(str::parse::<u8>)) else { continue };
        out.push((name.to_ascii_lowercase(), number));
        out.extend(words.map(|alias| (alias.to_ascii_lowercase(), number)));
    }
    out
}

fn builtin_protocol(name: &str) -> Result<u8, String> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "icmpv6" | "ipv6-icmp" => 58,
        "sctp" => 132,
        "udplite" => 136,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "ipencap" => 4,
        "ipip" => 94,
        "igmp" => 2,
        "vrrp" => 112,
        "ospf" => 89,
        other => other.parse().map_err(|_| format!("unknown protocol `{other}`"))?,
    })
}

/// `10.0.0.0/8`, `10.1.2.3`, `fd00::/8`, `10.0.0.0/255.255.0.0`, comma-separated lists.
pub fn parse_nets(text: &str) -> Result<Vec<Value>, String> {
    text.split(',').map(parse_net).collect()
}

pub fn parse_net(text: &str) -> Result<Value, String> {
    let (addr, prefix) = text.split_once('/').unwrap_or((text, ""));
    let addr: IpAddr = addr.parse().map_err(|_| format!("bad address `{text}`"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = if prefix.is_empty() {
        max
    } else if let Ok(n) = prefix.parse::<u8>() {
        n
    } else {
        let mask: std::net::Ipv4Addr = prefix.parse().map_err(|_| format!("bad prefix in `{text}`"))?;
        let bits = u32::from(mask);
        if bits.leading_ones() + bits.trailing_zeros() != 32 {
            return Err(format!("non-contiguous mask in `{text}`"));
        }
        bits.leading_ones() as u8
    };
    if prefix > max {
        return Err(format!("prefix too long in `{text}`"));
    }
    Ok(Value::Net { addr, prefix })
}

/// `80`, `8000:8080`, `80,443,15010:15012`.
fn parse_ports(text: &str) -> Result<Vec<Value>, String> {
    text.split(',')
        .map(|part| {
            let (from, to) = part.split_once(':').unwrap_or((part, part));
            let port = |p: &str| p.parse::<u16>().map_err(|_| format!("bad port `{part}`"));
            Ok(Value::Ports { from: port(from)?, to: port(to)? })
        })
        .collect()
}

fn tcp_flag_bits(text: &str) -> Result<u8, String> {
    text.split(',').try_fold(0u8, |bits, flag| {
        Ok(bits
            | match flag {
                "FIN" => 0x01,
                "SYN" => 0x02,
                "RST" => 0x04,
                "PSH" => 0x08,
                "ACK" => 0x10,
                "URG" => 0x20,
                "ECE" => 0x40,
                "CWR" => 0x80,
                "ALL" => 0xff,
                "NONE" => 0,
                other => return Err(format!("unknown TCP flag `{other}`")),
            })
    })
}

fn ct_states(text: &str) -> Result<u8, String> {
    text.split(',').try_fold(0u8, |bits, state| {
        Ok(bits
            | match state.to_ascii_uppercase().as_str() {
                "NEW" => CT_NEW,
                "ESTABLISHED" => CT_ESTABLISHED,
                "RELATED" => CT_RELATED,
                "INVALID" => CT_INVALID,
                "UNTRACKED" => CT_UNTRACKED,
                "SNAT" => CT_SNAT,
                "DNAT" => CT_DNAT,
                other => return Err(format!("unknown conntrack state `{other}`")),
            })
    })
}

/// `0x4000/0x4000` or `0x1`.
fn parse_mark(text: &str) -> Result<(u32, u32), String> {
    let number = |s: &str| {
        let s = s.trim();
        match s.strip_prefix("0x") {
            Some(hex) => u32::from_str_radix(hex, 16),
            None => s.parse(),
        }
        .map_err(|_| format!("bad mark `{text}`"))
    };
    match text.split_once('/') {
        Some((v, m)) => Ok((number(v)?, number(m)?)),
        None => Ok((number(text)?, u32::MAX)),
    }
}
