//! Parses `nft -j list ruleset` into the common model, with each rule's text taken from
//! `nft -a list ruleset` (matched by handle).

use std::collections::HashMap;

use serde_json::Value as Json;

use super::{
    iptables::{parse_net, protocol_number},
    model::{
        icmp_type_number, Action, Backend, BaseChain, Chain, Counters, Family, Field, HookPoint, MarkChange, Match,
        NatKind, Policy, Rule, Table, Value, CTS_DNAT, CTS_OTHER, CTS_SNAT, CT_DNAT, CT_ESTABLISHED, CT_INVALID,
        CT_NEW, CT_RELATED, CT_SNAT, CT_UNTRACKED,
    },
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NftParseError {
    #[error("`nft -j list ruleset` output is not JSON: {0}")]
    Json(String),
    #[error("`nft -j list ruleset` output has no `nftables` array")]
    Shape,
}

type SetElements = HashMap<(String, String, String), Vec<Json>>;

/// Named sets and maps of the table a rule belongs to.
struct Sets<'a> {
    all: &'a SetElements,
    family: &'a str,
    table: &'a str,
}

impl<'a> Sets<'a> {
    fn get(&self, name: &str) -> Option<&'a Vec<Json>> {
        self.all.get(&(self.family.to_string(), self.table.to_string(), name.to_string()))
    }
}

/// Tables of the ruleset, minus `skip` (tables managed by iptables-nft, read from its own
/// output) and families the evaluator does not model (bridge, arp, netdev).
pub fn parse_ruleset(json: &str, text: &str, skip: &[(Family, String)]) -> Result<Vec<Table>, NftParseError> {
    let root: Json = serde_json::from_str(json).map_err(|e| NftParseError::Json(e.to_string()))?;
    let items = root.get("nftables").and_then(Json::as_array).ok_or(NftParseError::Shape)?;
    let texts = rule_texts(text);
    let mut sets: SetElements = HashMap::new();
    for item in items {
        if let Some(set) = item.get("set").or_else(|| item.get("map")) {
            let key = (str_of(set, "family"), str_of(set, "table"), str_of(set, "name"));
            sets.insert(key, set.get("elem").and_then(Json::as_array).cloned().unwrap_or_default());
        }
    }
    let mut tables: Vec<Table> = Vec::new();
    for item in items {
        if let Some(t) = item.get("table") {
            let Some(family) = family_of(&str_of(t, "family")) else { continue };
            let name = str_of(t, "name");
            if skip.iter().any(|(f, n)| *f == family && *n == name) {
                continue;
            }
            tables.push(Table { backend: Backend::Nftables, family, name, chains: Vec::new() });
        } else if let Some(c) = item.get("chain") {
            let Some(table) = find_table(&mut tables, c) else { continue };
            table.chains.push(parse_chain(c));
        } else if let Some(r) = item.get("rule") {
            let family_name = str_of(r, "family");
            let table_name = str_of(r, "table");
            let Some(table) = find_table(&mut tables, r) else { continue };
            let chain_name = str_of(r, "chain");
            let Some(chain) = table.chains.iter_mut().find(|c| c.name == chain_name) else { continue };
            let handle = r.get("handle").and_then(Json::as_u64);
            let mut rule = parse_rule(r, &Sets { all: &sets, family: &family_name, table: &table_name });
            rule.position = chain.rules.len() + 1;
            rule.handle = handle;
            rule.text = handle
                .and_then(|h| texts.get(&(family_name.clone(), table_name.clone(), h)).cloned())
                .unwrap_or_else(|| format!("handle {}", handle.unwrap_or(0)));
            chain.rules.push(rule);
        }
    }
    Ok(tables)
}

fn str_of(obj: &Json, key: &str) -> String {
    obj.get(key).and_then(Json::as_str).unwrap_or_default().to_string()
}

fn family_of(name: &str) -> Option<Family> {
    match name {
        "ip" => Some(Family::Ip),
        "ip6" => Some(Family::Ip6),
        "inet" => Some(Family::Inet),
        _ => None,
    }
}

fn find_table<'a>(tables: &'a mut [Table], obj: &Json) -> Option<&'a mut Table> {
    let family = family_of(&str_of(obj, "family"))?;
    let name = str_of(obj, "table");
    tables.iter_mut().find(|t| t.family == family && t.name == name)
}

fn parse_chain(c: &Json) -> Chain {
    let base = c.get("hook").and_then(Json::as_str).and_then(HookPoint::from_name).map(|hook| BaseChain {
        hook,
        priority: c.get("prio").and_then(Json::as_i64).unwrap_or(0) as i32,
        policy: if str_of(c, "policy") == "drop" { Policy::Drop } else { Policy::Accept },
        policy_counters: None,
    });
    Chain { name: str_of(c, "name"), base, rules: Vec::new() }
}

/// `(family, table, handle)` -> the rule as `nft -a list ruleset` prints it (without the handle).
fn rule_texts(text: &str) -> HashMap<(String, String, u64), String> {
    let mut out = HashMap::new();
    let mut table = (String::new(), String::new());
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("table ") {
            let mut words = rest.split_whitespace();
            table = (words.next().unwrap_or_default().into(), words.next().unwrap_or_default().into());
            continue;
        }
        if line.starts_with("chain ") || line.starts_with("set ") || line.starts_with("map ") {
            continue;
        }
        if let Some((rule, handle)) = line.rsplit_once(" # handle ") {
            if let Ok(handle) = handle.trim().parse() {
                out.insert((table.0.clone(), table.1.clone(), handle), rule.trim().to_string());
            }
        }
    }
    out
}

fn parse_rule(r: &Json, set: &Sets<'_>) -> Rule {
    let mut rule = Rule {
        position: 0,
        handle: None,
        text: String::new(),
        comment: r.get("comment").and_then(Json::as_str).map(str::to_string),
        matches: Vec::new(),
        action: Action::Continue,
        counters: None,
    };
    for expr in r.get("expr").and_then(Json::as_array).into_iter().flatten() {
        let Some((name, body)) = expr.as_object().and_then(|o| o.iter().next()) else { continue };
        match name.as_str() {
            "match" => rule.matches.extend(parse_match(body, set)),
            "counter" => {
                rule.counters = Some(Counters {
                    packets: body.get("packets").and_then(Json::as_u64).unwrap_or(0),
                    bytes: body.get("bytes").and_then(Json::as_u64).unwrap_or(0),
                })
            }
            "accept" => rule.action = Action::Accept,
            "drop" => rule.action = Action::Drop,
            "return" => rule.action = Action::Return,
            "reject" => {
                let how = body.get("expr").and_then(Json::as_str).or(body.get("type").and_then(Json::as_str));
                rule.action = Action::Reject(how.unwrap_or("icmp port-unreachable").to_string());
            }
            "jump" => rule.action = Action::Jump(str_of(body, "target")),
            "goto" => rule.action = Action::Goto(str_of(body, "target")),
            "log" => {}
            "dnat" => {
                let to = body.get("addr").and_then(Json::as_str).and_then(|a| a.parse().ok());
                rule.action = Action::Nat(NatKind::Destination(to));
            }
            "snat" | "masquerade" => rule.action = Action::Nat(NatKind::Source),
            "redirect" | "tproxy" => rule.action = Action::Nat(NatKind::Local),
            "mangle" => rule.action = mangle(body).unwrap_or(rule.action),
            "vmap" => rule.action = parse_vmap(body, set),
            "xt" => {
                let xt_name = str_of(body, "name");
                if str_of(body, "type") == "target" {
                    rule.action = match xt_name.as_str() {
                        "REJECT" => Action::Reject("REJECT".into()),
                        "LOG" | "NFLOG" => Action::Continue,
                        "MARK" => Action::UnknownMark,
                        "CONNMARK" => Action::SetCtMark(MarkChange::Unknown),
                        other => Action::Unsupported(format!("xt target {other}")),
                    };
                } else if xt_name != "comment" {
                    rule.matches.push(Match::Unsupported(format!("xt match {xt_name}")));
                }
            }
            "queue" => rule.action = Action::Unsupported("queue".into()),
            // Rate and quota matches depend on history this evaluator does not have.
            "quota" | "limit" => rule.matches.push(Match::Unsupported(name.clone())),
            // Statements that do not decide a packet's fate (notrack, ct/meta set, dup, ...).
            _ => {}
        }
    }
    rule
}

/// `meta mark set 0x10`, `ct mark set meta mark`, `meta mark set ct mark`, `ct mark set 0x1`;
/// `None` for a statement that changes no mark.
fn mangle(body: &Json) -> Option<Action> {
    let key = body.get("key")?;
    let value = body.get("value");
    let number = value.and_then(Json::as_u64).map(|v| v as u32);
    let reads = |kind: &str| value.and_then(|v| v.get(kind)).is_some_and(|m| str_of(m, "key") == "mark");
    if key.get("meta").is_some_and(|m| str_of(m, "key") == "mark") {
        return Some(match number {
            Some(value) => Action::SetMark { value, mask: u32::MAX },
            None if reads("ct") => Action::SetCtMark(MarkChange::Restore { mask: u32::MAX }),
            None => Action::UnknownMark,
        });
    }
    if key.get("ct").is_some_and(|m| str_of(m, "key") == "mark") {
        return Some(Action::SetCtMark(match number {
            Some(value) => MarkChange::Set { value, mask: u32::MAX },
            None if reads("meta") => MarkChange::Save { mask: u32::MAX },
            None => MarkChange::Unknown,
        }));
    }
    None
}

/// A `match` expression: one or two tests (an `ip saddr` in an inet table also tests the family).
fn parse_match(body: &Json, set: &Sets<'_>) -> Vec<Match> {
    let op = body.get("op").and_then(Json::as_str).unwrap_or("==");
    let negated = op == "!=";
    let unsupported = || vec![Match::Unsupported(format!("nft match {}", body))];
    if !matches!(op, "==" | "!=" | "in") {
        return unsupported();
    }
    let (Some(left), Some(right)) = (body.get("left"), body.get("right")) else { return unsupported() };
    let Some((field, implied)) = field_of(left) else { return unsupported() };
    let Some(values) = values_of(&field, right, set) else { return unsupported() };
    let mut out: Vec<Match> =
        implied.into_iter().map(|(field, value)| Match::Test { field, values: vec![value], negated: false }).collect();
    out.push(Match::Test { field, values, negated });
    out
}

/// The field a left-hand expression reads, and what it implies (`tcp dport` implies TCP).
fn field_of(left: &Json) -> Option<(Field, Vec<(Field, Value)>)> {
    if let Some(p) = left.get("payload") {
        let protocol = str_of(p, "protocol");
        let field = str_of(p, "field");
        let mut implied = Vec::new();
        match protocol.as_str() {
            "ip" => implied.push((Field::Ipv6, Value::Bool(false))),
            "ip6" => implied.push((Field::Ipv6, Value::Bool(true))),
            "tcp" => implied.push((Field::L4Proto, Value::Proto(6))),
            "udp" => implied.push((Field::L4Proto, Value::Proto(17))),
            "sctp" => implied.push((Field::L4Proto, Value::Proto(132))),
            "udplite" => implied.push((Field::L4Proto, Value::Proto(136))),
            "icmp" => implied.extend([(Field::Ipv6, Value::Bool(false)), (Field::L4Proto, Value::Proto(1))]),
            "icmpv6" => implied.extend([(Field::Ipv6, Value::Bool(true)), (Field::L4Proto, Value::Proto(58))]),
            "th" => {}
            _ => return None,
        }
        let f = match (protocol.as_str(), field.as_str()) {
            (_, "saddr") => Field::Saddr,
            (_, "daddr") => Field::Daddr,
            (_, "sport") => Field::Sport,
            (_, "dport") => Field::Dport,
            ("tcp", "flags") => Field::TcpFlags { mask: 0xff },
            ("ip", "protocol") | ("ip6", "nexthdr") => Field::L4Proto,
            ("icmp" | "icmpv6", "type" | "code") => Field::IcmpType { v6: protocol == "icmpv6", code: field == "code" },
            _ => return None,
        };
        return Some((f, implied));
    }
    if let Some(parts) = left.get("concat").and_then(Json::as_array) {
        let mut fields = Vec::new();
        let mut implied = Vec::new();
        for part in parts {
            let (f, i) = field_of(part)?;
            fields.push(f);
            implied.extend(i);
        }
        return Some((Field::Concat(fields), implied));
    }
    if let Some(m) = left.get("meta") {
        let f = match str_of(m, "key").as_str() {
            "l4proto" => Field::L4Proto,
            "iifname" | "iif" => Field::IifName,
            "oifname" | "oif" => Field::OifName,
            "nfproto" => Field::Ipv6,
            "mark" => Field::Mark { mask: u32::MAX },
            "iiftype" => Field::IifType,
            "oiftype" => Field::OifType,
            _ => return None,
        };
        return Some((f, Vec::new()));
    }
    if let Some(ct) = left.get("ct") {
        if ct.get("dir").is_some() {
            return None;
        }
        return match str_of(ct, "key").as_str() {
            "state" => Some((Field::CtState, Vec::new())),
            "status" => Some((Field::CtStatus, Vec::new())),
            "mark" => Some((Field::CtMark { mask: u32::MAX }, Vec::new())),
            _ => None,
        };
    }
    if let Some(fib) = left.get("fib") {
        let flags: Vec<&str> = fib.get("flags").and_then(Json::as_array)?.iter().filter_map(Json::as_str).collect();
        let result = str_of(fib, "result");
        let has = |f: &str| flags.contains(&f);
        return match result.as_str() {
            // `fib daddr type local` (also `. iif`: local to the input interface, which a
            // packet that is delivered locally is).
            "type" if has("daddr") && !has("saddr") => Some((Field::DstLocal, Vec::new())),
            "type" if has("saddr") && !has("daddr") => Some((Field::SrcLocal, Vec::new())),
            // `fib saddr . iif oif missing`: the reverse path filter.
            "oif" | "oifname" if has("saddr") && has("iif") => Some((Field::RpfMissing, Vec::new())),
            _ => None,
        };
    }
    if let Some([inner, mask]) = left.get("&").and_then(Json::as_array).map(Vec::as_slice) {
        let (field, implied) = field_of(inner)?;
        return match field {
            Field::Mark { .. } => Some((Field::Mark { mask: mask.as_u64()? as u32 }, implied)),
            Field::CtMark { .. } => Some((Field::CtMark { mask: mask.as_u64()? as u32 }, implied)),
            Field::TcpFlags { .. } => Some((Field::TcpFlags { mask: tcp_flags(mask)? }, implied)),
            _ => None,
        };
    }
    None
}

fn values_of(field: &Field, right: &Json, set: &Sets<'_>) -> Option<Vec<Value>> {
    if let Some(name) = right.as_str().and_then(|s| s.strip_prefix('@')) {
        return set.get(name)?.iter().map(|e| value_of(field, element(e))).collect();
    }
    if let Some(items) = right.get("set").and_then(Json::as_array) {
        return items.iter().map(|e| value_of(field, element(e))).collect();
    }
    Some(vec![value_of(field, right)?])
}

/// A set element may be wrapped: `{"elem": {"val": ..., "timeout": ...}}`.
fn element(e: &Json) -> &Json {
    e.get("elem").and_then(|x| x.get("val")).unwrap_or(e)
}

fn value_of(field: &Field, v: &Json) -> Option<Value> {
    match field {
        Field::Concat(fields) => {
            let parts = v.get("concat").and_then(Json::as_array)?;
            if parts.len() != fields.len() {
                return None;
            }
            let values: Option<Vec<Value>> = fields.iter().zip(parts).map(|(f, p)| value_of(f, p)).collect();
            Some(Value::Tuple(values?))
        }
        Field::CtStatus => {
            let names: Vec<&str> = match v {
                Json::String(s) => vec![s.as_str()],
                Json::Array(a) => a.iter().filter_map(Json::as_str).collect(),
                _ => return None,
            };
            Some(Value::Number(names.iter().fold(0, |bits, n| {
                bits | match *n {
                    "dnat" => CTS_DNAT,
                    "snat" => CTS_SNAT,
                    _ => CTS_OTHER,
                }
            })))
        }
        Field::CtMark { .. } => Some(Value::Number(v.as_u64()? as u32)),
        Field::IcmpType { v6, code } => match v {
            Json::Number(n) => Some(Value::Number(n.as_u64()? as u32)),
            Json::String(s) if !code => icmp_type_number(s, *v6).map(|n| Value::Number(n.into())),
            _ => None,
        },
        Field::IifType | Field::OifType => Some(Value::Number(match v {
            Json::Number(n) => n.as_u64()? as u32,
            Json::String(s) => match s.as_str() {
                "ether" => 1,
                "ppp" => 512,
                "ipip" => 768,
                "ipip6" => 769,
                "loopback" => 772,
                "sit" => 776,
                "ipgre" => 778,
                "none" => 65534,
                _ => return None,
            },
            _ => return None,
        })),
        // `oif missing` is `== false`.
        Field::RpfMissing => Some(Value::Bool(!v.as_bool()?)),
        Field::Bridged | Field::PhysdevIn | Field::PhysdevOut | Field::PhysdevIsIn | Field::PhysdevIsOut => None,
        Field::Saddr | Field::Daddr => {
            if let Some(p) = v.get("prefix") {
                let addr = p.get("addr")?.as_str()?;
                let len = p.get("len")?.as_u64()?;
                return parse_net(&format!("{addr}/{len}")).ok();
            }
            if let Some([a, b]) = v.get("range").and_then(Json::as_array).map(Vec::as_slice) {
                let (from, to) = (a.as_str()?.parse().ok()?, b.as_str()?.parse().ok()?);
                return Some(Value::AddrRange { from, to });
            }
            parse_net(v.as_str()?).ok()
        }
        Field::Sport | Field::Dport => {
            if let Some([a, b]) = v.get("range").and_then(Json::as_array).map(Vec::as_slice) {
                return Some(Value::Ports { from: a.as_u64()? as u16, to: b.as_u64()? as u16 });
            }
            let port = v.as_u64()? as u16;
            Some(Value::Ports { from: port, to: port })
        }
        Field::L4Proto => match v {
            Json::Number(n) => Some(Value::Proto(n.as_u64()? as u8)),
            Json::String(s) => protocol_number(s).ok().map(Value::Proto),
            _ => None,
        },
        Field::IifName | Field::OifName => Some(Value::Iface(v.as_str()?.to_string())),
        Field::CtState => {
            let names: Vec<&str> = match v {
                Json::String(s) => vec![s.as_str()],
                Json::Array(a) => a.iter().filter_map(Json::as_str).collect(),
                _ => return None,
            };
            let mut bits = 0;
            for n in names {
                bits |= match n {
                    "new" => CT_NEW,
                    "established" => CT_ESTABLISHED,
                    "related" => CT_RELATED,
                    "invalid" => CT_INVALID,
                    "untracked" => CT_UNTRACKED,
                    "snat" => CT_SNAT,
                    "dnat" => CT_DNAT,
                    _ => return None,
                };
            }
            Some(Value::CtStates(bits))
        }
        Field::TcpFlags { .. } => Some(Value::Number(u32::from(tcp_flags(v)?))),
        Field::Mark { .. } => Some(Value::Number(v.as_u64()? as u32)),
        Field::Ipv6 => match v.as_str()? {
            "ipv4" => Some(Value::Bool(false)),
            "ipv6" => Some(Value::Bool(true)),
            _ => None,
        },
        Field::SrcLocal | Field::DstLocal => match v.as_str()? {
            "local" => Some(Value::Bool(true)),
            _ => None,
        },
    }
}

fn tcp_flags(v: &Json) -> Option<u8> {
    let one = |s: &str| {
        Some(match s {
            "fin" => 0x01,
            "syn" => 0x02,
            "rst" => 0x04,
            "psh" => 0x08,
            "ack" => 0x10,
            "urg" => 0x20,
            "ecn" => 0x40,
            "cwr" => 0x80,
            _ => return None,
        })
    };
    match v {
        Json::String(s) => one(s),
        Json::Array(a) => a.iter().try_fold(0u8, |bits, f| Some(bits | one(f.as_str()?)?)),
        Json::Number(n) => Some(n.as_u64()? as u8),
        _ => None,
    }
}

/// `tcp dport vmap { 443 : accept, 15017 : drop }` or `vmap @name`.
fn parse_vmap(body: &Json, set: &Sets<'_>) -> Action {
    let unsupported = || Action::Unsupported(format!("vmap {body}"));
    let Some((field, _)) = body.get("key").and_then(field_of) else { return unsupported() };
    let data = body.get("data");
    let entries: Option<&Vec<Json>> = match data.and_then(Json::as_str).and_then(|s| s.strip_prefix('@')) {
        Some(name) => set.get(name),
        None => data.and_then(|d| d.get("set")).and_then(Json::as_array),
    };
    let Some(entries) = entries else { return unsupported() };
    let mut out = Vec::new();
    for entry in entries {
        let Some([key, verdict]) = entry.as_array().map(Vec::as_slice) else { return unsupported() };
        let Some(value) = value_of(&field, element(key)) else { return unsupported() };
        let action = match verdict.as_object().and_then(|o| o.iter().next()) {
            Some((v, _)) if v == "accept" => Action::Accept,
            Some((v, _)) if v == "drop" => Action::Drop,
            Some((v, _)) if v == "return" => Action::Return,
            Some((v, t)) if v == "jump" => Action::Jump(str_of(t, "target")),
            Some((v, t)) if v == "goto" => Action::Goto(str_of(t, "target")),
            _ => return unsupported(),
        };
        out.push((value, action));
    }
    Action::Vmap { field, entries: out }
}
