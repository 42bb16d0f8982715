//! Walks a packet through the rulesets of one network namespace the way netfilter does:
//! hook by hook, base chains by priority, rules in order, following jumps, gotos and returns.
//! Matches it cannot decide (an ipset, an unknown module) are not guessed: every drop reached
//! after such a doubt is kept as a candidate, not as the answer.

use std::net::IpAddr;

use super::model::{Action, Field, HookPoint, Match, Policy, Rule, Table, Value, CT_ESTABLISHED, CT_NEW};

/// What the evaluator knows about the dropped packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    /// TCP flags, when the packet's TCP header was captured.
    pub tcp_flags: Option<u8>,
    pub iif: Option<String>,
    pub oif: Option<String>,
    /// Whether the source/destination address belongs to the namespace (decides the hooks).
    pub src_local: bool,
    pub dst_local: bool,
}

impl Packet {
    /// A packet with the locality and interfaces of `route`.
    pub fn routed(
        proto: u8,
        src: IpAddr,
        dst: IpAddr,
        sport: u16,
        dport: u16,
        tcp_flags: Option<u8>,
        route: super::route::Route,
    ) -> Self {
        Self {
            proto,
            src,
            dst,
            sport,
            dport,
            tcp_flags,
            iif: route.iif,
            oif: route.oif,
            src_local: route.src_local,
            dst_local: route.dst_local,
        }
    }

    pub fn ipv6(&self) -> bool {
        self.dst.is_ipv6()
    }

    /// The hooks the packet crosses in this namespace, in order.
    pub fn path(&self) -> &'static [HookPoint] {
        use HookPoint::*;
        match (self.src_local, self.dst_local) {
            (true, _) => &[Output, Postrouting],
            (false, true) => &[Prerouting, Input],
            (false, false) => &[Prerouting, Forward, Postrouting],
        }
    }

    /// Conntrack state as a CT_* bit: a SYN opens a connection, anything else with ACK or RST
    /// belongs to one; unknown without TCP flags.
    fn ct_state(&self) -> Option<u8> {
        let flags = self.tcp_flags?;
        Some(if flags & 0x12 == 0x02 { CT_NEW } else { CT_ESTABLISHED })
    }
}

/// A place in the rulesets: a rule, or a base chain's policy (`rule: None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Site {
    pub table: usize,
    pub chain: usize,
    pub rule: Option<usize>,
}

/// A drop or reject the packet may have met.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub site: Site,
    pub hook: HookPoint,
    /// Why it may not be the answer (a doubt met on the way), `None` when it is certain.
    pub doubt: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Evaluation {
    /// Every drop/reject reached, in evaluation order; the last one is where the walk stopped.
    pub candidates: Vec<Candidate>,
    /// Index into `candidates` of the rule that certainly decided, if one did.
    pub decided: Option<usize>,
    /// Undecidable matches met, in order.
    pub doubts: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Yes,
    No,
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    /// The chain ran out or returned.
    Return,
    Accept,
    Drop,
}

const MAX_DEPTH: usize = 64;

pub fn evaluate(tables: &[Table], packet: &Packet) -> Evaluation {
    let mut walk = Walk { tables, packet, mark: Some(0), out: Evaluation::default(), hook: HookPoint::Prerouting };
    for &hook in packet.path() {
        walk.hook = hook;
        let mut bases: Vec<(i32, usize, usize)> = Vec::new();
        for (ti, table) in tables.iter().enumerate() {
            if !table.family.sees(packet.ipv6()) {
                continue;
            }
            for (ci, chain) in table.chains.iter().enumerate() {
                if let Some(base) = chain.base.as_ref().filter(|b| b.hook == hook) {
                    bases.push((base.priority, ti, ci));
                }
            }
        }
        bases.sort_by_key(|(priority, ..)| *priority);
        for (_, ti, ci) in bases {
            let flow = walk.run_chain(ti, ci, false, 0);
            if flow == Flow::Return && walk.tables[ti].chains[ci].base.as_ref().map(|b| b.policy) == Some(Policy::Drop)
            {
                walk.candidate(Site { table: ti, chain: ci, rule: None }, false);
                return walk.out;
            }
            if flow == Flow::Drop {
                return walk.out;
            }
        }
    }
    walk.out
}

struct Walk<'a> {
    tables: &'a [Table],
    packet: &'a Packet,
    /// The packet mark as MARK rules set it; `None` once a rule changed it unknowably.
    mark: Option<u32>,
    out: Evaluation,
    hook: HookPoint,
}

impl Walk<'_> {
    fn candidate(&mut self, site: Site, uncertain: bool) {
        let doubt = self.out.doubts.first().cloned().or_else(|| uncertain.then(|| "reached under a doubt".into()));
        let certain = doubt.is_none();
        self.out.candidates.push(Candidate { site, hook: self.hook, doubt });
        if certain && self.out.decided.is_none() {
            self.out.decided = Some(self.out.candidates.len() - 1);
        }
    }

    fn run_chain(&mut self, ti: usize, ci: usize, uncertain: bool, depth: usize) -> Flow {
        let table = &self.tables[ti];
        let chain = &table.chains[ci];
        if depth > MAX_DEPTH {
            self.out.doubts.push(format!("{}/{}: jumps nested deeper than {MAX_DEPTH}", table.name, chain.name));
            return Flow::Return;
        }
        for (ri, rule) in chain.rules.iter().enumerate() {
            let (outcome, why) = self.matches(rule);
            if outcome == Outcome::No {
                continue;
            }
            let unsure = uncertain || outcome == Outcome::Unknown;
            if outcome == Outcome::Unknown && rule.action.decides() {
                self.out.doubts.push(format!(
                    "{} {}/{} rule {}: {}",
                    table.backend.as_str(),
                    table.name,
                    chain.name,
                    rule.position,
                    why.unwrap_or_default()
                ));
            }
            let site = Site { table: ti, chain: ci, rule: Some(ri) };
            let flow = self.act(&rule.action, site, unsure, depth);
            if !unsure && flow != Flow::Return {
                return flow;
            }
            if !unsure && matches!(rule.action, Action::Return | Action::Goto(_)) {
                return Flow::Return;
            }
        }
        Flow::Return
    }

    /// Applies an action; `Flow::Return` means "go on with the next rule" except for RETURN/goto
    /// (handled by the caller).
    fn act(&mut self, action: &Action, site: Site, unsure: bool, depth: usize) -> Flow {
        match action {
            Action::Accept | Action::Nat => Flow::Accept,
            Action::Drop | Action::Reject(_) => {
                self.candidate(site, unsure);
                Flow::Drop
            }
            Action::Jump(target) | Action::Goto(target) => match self.tables[site.table].chain_index(target) {
                Some(ci) => self.run_chain(site.table, ci, unsure, depth + 1),
                None => {
                    self.out.doubts.push(format!("jump to missing chain {target}"));
                    Flow::Return
                }
            },
            Action::Return | Action::Continue => Flow::Return,
            Action::SetMark { value, mask } => {
                self.mark = if unsure { None } else { self.mark.map(|m| (m & !mask) ^ value) };
                Flow::Return
            }
            Action::UnknownMark => {
                self.mark = None;
                Flow::Return
            }
            Action::Vmap { field, entries } => {
                for (value, entry_action) in entries {
                    match self.test(field, std::slice::from_ref(value)) {
                        Outcome::No => continue,
                        Outcome::Yes => return self.act(entry_action, site, unsure, depth),
                        Outcome::Unknown => {
                            self.out.doubts.push(format!("verdict map on {field:?}: value unknown"));
                            return Flow::Return;
                        }
                    }
                }
                Flow::Return
            }
            Action::Unsupported(what) => {
                self.out.doubts.push(format!("unsupported target {what}"));
                Flow::Return
            }
        }
    }

    fn matches(&self, rule: &Rule) -> (Outcome, Option<String>) {
        let mut unknown = None;
        for m in &rule.matches {
            let outcome = match m {
                Match::Unsupported(what) => {
                    unknown.get_or_insert_with(|| format!("unsupported match `{what}`"));
                    continue;
                }
                Match::Test { field, values, negated } => match self.test(field, values) {
                    Outcome::Yes if *negated => Outcome::No,
                    Outcome::No if *negated => Outcome::Yes,
                    other => other,
                },
            };
            match outcome {
                Outcome::No => return (Outcome::No, None),
                Outcome::Unknown => {
                    unknown.get_or_insert_with(|| format!("{field} unknown", field = field_name(m)));
                }
                Outcome::Yes => {}
            }
        }
        match unknown {
            Some(why) => (Outcome::Unknown, Some(why)),
            None => (Outcome::Yes, None),
        }
    }

    /// Whether the packet's `field` equals any of `values`.
    fn test(&self, field: &Field, values: &[Value]) -> Outcome {
        let p = self.packet;
        let ports = matches!(p.proto, 6 | 17 | 132);
        let known = |b: bool| if b { Outcome::Yes } else { Outcome::No };
        let any = |f: &dyn Fn(&Value) -> bool| known(values.iter().any(f));
        match field {
            Field::L4Proto => any(&|v| *v == Value::Proto(p.proto)),
            Field::Saddr => any(&|v| contains(v, p.src)),
            Field::Daddr => any(&|v| contains(v, p.dst)),
            Field::Sport if ports => any(&|v| in_ports(v, p.sport)),
            Field::Dport if ports => any(&|v| in_ports(v, p.dport)),
            Field::Sport | Field::Dport => Outcome::No,
            Field::IifName => p.iif.as_deref().map_or(Outcome::Unknown, |name| any(&|v| iface_matches(v, name))),
            Field::OifName => p.oif.as_deref().map_or(Outcome::Unknown, |name| any(&|v| iface_matches(v, name))),
            Field::CtState => match p.ct_state() {
                Some(state) => any(&|v| matches!(v, Value::CtStates(bits) if bits & state != 0)),
                None => Outcome::Unknown,
            },
            Field::TcpFlags { mask } => match p.tcp_flags {
                Some(flags) if p.proto == 6 => any(&|v| *v == Value::Number(u32::from(flags & mask))),
                _ if p.proto != 6 => Outcome::No,
                _ => Outcome::Unknown,
            },
            Field::Mark { mask } => match self.mark {
                Some(mark) => any(&|v| *v == Value::Number(mark & mask)),
                None => Outcome::Unknown,
            },
            Field::SrcLocal => any(&|v| *v == Value::Bool(p.src_local)),
            Field::DstLocal => any(&|v| *v == Value::Bool(p.dst_local)),
            Field::Ipv6 => any(&|v| *v == Value::Bool(p.ipv6())),
        }
    }
}

fn field_name(m: &Match) -> String {
    match m {
        Match::Test { field: Field::IifName, .. } => "input interface".into(),
        Match::Test { field: Field::OifName, .. } => "output interface".into(),
        Match::Test { field: Field::CtState, .. } => "conntrack state".into(),
        Match::Test { field: Field::Mark { .. }, .. } => "packet mark".into(),
        Match::Test { field, .. } => format!("{field:?}"),
        Match::Unsupported(what) => what.clone(),
    }
}

impl Table {
    pub fn chain_index(&self, name: &str) -> Option<usize> {
        self.chains.iter().position(|c| c.name == name)
    }
}

pub fn contains(net: &Value, ip: IpAddr) -> bool {
    let Value::Net { addr, prefix } = net else { return false };
    match (addr, ip) {
        (IpAddr::V4(net), IpAddr::V4(ip)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
            u32::from(*net) & mask == u32::from(ip) & mask
        }
        (IpAddr::V6(net), IpAddr::V6(ip)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(*prefix)).unwrap_or(0);
            u128::from(*net) & mask == u128::from(ip) & mask
        }
        _ => false,
    }
}

fn in_ports(v: &Value, port: u16) -> bool {
    matches!(v, Value::Ports { from, to } if (*from..=*to).contains(&port))
}

/// iptables writes a wildcard as `veth+`, nft as `veth*`.
fn iface_matches(v: &Value, name: &str) -> bool {
    let Value::Iface(pattern) = v else { return false };
    match pattern.strip_suffix('+').or_else(|| pattern.strip_suffix('*')) {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}
