//! Parses `iptables-save -c` / `ip6tables-save -c` output (legacy and nft backends print the
//! same format) into the common model.

use std::net::IpAddr;

use super::model::{
    Action, Backend, BaseChain, Chain, Counters, Family, Field, HookPoint, Match, Policy, Rule, Table, Value,
    CT_ESTABLISHED, CT_INVALID, CT_NEW, CT_RELATED, CT_UNTRACKED,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IptablesParseError {
    #[error("line {line}: {what} (in `{text}`)")]
    Line { line: usize, what: String, text: String },
}

/// Parses the whole output of one `*-save -c` run.
pub fn parse_save(output: &str, backend: Backend, family: Family) -> Result<Vec<Table>, IptablesParseError> {
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
        let mut rule = parse_rule_args(args, &known_chains).map_err(|what| error(&what))?;
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

/// The matches and target of one rule (`-A CHAIN` already removed).
fn parse_rule_args(args: &[String], chains: &[String]) -> Result<Rule, String> {
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
        let mut value = || take(args, &mut i, option);
        let mut test = |field: Field, values: Vec<Value>, negated: &mut bool| {
            rule.matches.push(Match::Test { field, values, negated: *negated });
            *negated = false;
        };
        match option {
            "-p" | "--protocol" => {
                let proto = value()?;
                if proto != "all" {
                    test(Field::L4Proto, vec![Value::Proto(protocol_number(&proto)?)], &mut negated);
                }
            }
            "-s" | "--source" => test(Field::Saddr, parse_nets(&value()?)?, &mut negated),
            "-d" | "--destination" => test(Field::Daddr, parse_nets(&value()?)?, &mut negated),
            "-i" | "--in-interface" => test(Field::IifName, vec![Value::Iface(value()?)], &mut negated),
            "-o" | "--out-interface" => test(Field::OifName, vec![Value::Iface(value()?)], &mut negated),
            "-m" | "--match" => module = value()?,
            "-j" | "--jump" => target = Some(value()?),
            "-g" | "--goto" => rule.action = Action::Goto(value()?),
            "--dport" | "--destination-port" | "--dports" | "--destination-ports" => {
                test(Field::Dport, parse_ports(&value()?)?, &mut negated)
            }
            "--sport" | "--source-port" | "--sports" | "--source-ports" => {
                test(Field::Sport, parse_ports(&value()?)?, &mut negated)
            }
            "--syn" => test(Field::TcpFlags { mask: 0x17 }, vec![Value::Number(0x02)], &mut negated),
            "--tcp-flags" => {
                let mask = tcp_flag_bits(&value()?)?;
                let set = tcp_flag_bits(&value()?)?;
                test(Field::TcpFlags { mask }, vec![Value::Number(u32::from(set))], &mut negated)
            }
            "--ctstate" | "--state" => test(Field::CtState, vec![Value::CtStates(ct_states(&value()?)?)], &mut negated),
            "--comment" => rule.comment = Some(value()?),
            "--mark" if module == "mark" => {
                let (v, mask) = parse_mark(&value()?)?;
                test(Field::Mark { mask }, vec![Value::Number(v)], &mut negated)
            }
            "--src-type" | "--dst-type" if module == "addrtype" => {
                let kind = value()?;
                let field = if option == "--src-type" { Field::SrcLocal } else { Field::DstLocal };
                if kind == "LOCAL" {
                    test(field, vec![Value::Bool(true)], &mut negated)
                } else {
                    rule.matches.push(Match::Unsupported(format!("-m addrtype {option} {kind}")));
                    negated = false;
                }
            }
            opt if target.is_some() && opt.starts_with("--") => {
                let v = if args.get(i).is_some_and(|a| !a.starts_with("--")) {
                    take(args, &mut i, option)?
                } else {
                    String::new()
                };
                target_args.push((opt.to_string(), v));
            }
            opt if opt.starts_with('-') => {
                // An option of a match this evaluator does not model: its values follow it.
                let mut shown = format!("-m {module} {opt}");
                while args.get(i).is_some_and(|a| !a.starts_with('-') && a != "!") {
                    shown.push(' ');
                    shown.push_str(&args[i]);
                    i += 1;
                }
                rule.matches.push(Match::Unsupported(shown));
                negated = false;
            }
            other => return Err(format!("unexpected word `{other}`")),
        }
    }
    if let Some(target) = target {
        rule.action = target_action(&target, &target_args, chains);
    }
    Ok(rule)
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
        "LOG" | "NFLOG" | "ULOG" | "TRACE" | "CT" | "CONNMARK" | "CHECKSUM" | "TCPMSS" | "NOTRACK" | "AUDIT" => {
            Action::Continue
        }
        "MARK" => match arg("--set-xmark").or(arg("--set-mark")).map(parse_mark) {
            Some(Ok((value, mask))) => Action::SetMark { value, mask },
            _ => Action::UnknownMark,
        },
        "DNAT" | "SNAT" | "MASQUERADE" | "REDIRECT" | "TPROXY" | "NETMAP" => Action::Nat,
        chain if chains.iter().any(|c| c == chain) => Action::Jump(chain.to_string()),
        other => Action::Unsupported(format!("-j {other}")),
    }
}

pub fn protocol_number(name: &str) -> Result<u8, String> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "icmpv6" | "ipv6-icmp" => 58,
        "sctp" => 132,
        "udplite" => 136,
        "gre" => 47,
        "esp" => 50,
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
