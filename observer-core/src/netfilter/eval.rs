//! Walks a packet through the rulesets of one network namespace the way netfilter does:
//! hook by hook, base chains by priority, rules in order, following jumps, gotos and returns.
//! Matches it cannot decide (an ipset not read, an unknown module) are not guessed: every drop
//! reached after such a doubt is kept as a candidate, not as the answer. A doubt only weakens
//! what it can change: an undecided ACCEPT ends its own base chain at most (netfilter runs the
//! next base chain whatever an earlier one accepted), an undecided RETURN its own chain.

use std::net::IpAddr;

use super::model::{
    Action, Field, HookPoint, MarkChange, Match, NatKind, Policy, Rule, Table, Value, CTS_DNAT, CTS_SNAT, CT_DNAT,
    CT_ESTABLISHED, CT_INVALID, CT_NEW, CT_SNAT, CT_UNTRACKED,
};

/// The bridge ports of a bridged packet (br_netfilter): netfilter sees the bridge as both input
/// and output interface and the ports as physdev-in/out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BridgePorts {
    pub bridge: String,
    pub in_port: Option<String>,
    /// `None` when the port the bridge forwards to is not known (no FDB entry read).
    pub out_port: Option<String>,
}

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
    /// Set when the packet is bridged between two ports of one bridge (with
    /// bridge-nf-call-iptables): then `iif` and `oif` are the bridge.
    pub bridged: Option<BridgePorts>,
    /// ARPHRD_* type of the input/output interface, when known.
    pub iif_type: Option<u16>,
    pub oif_type: Option<u16>,
    /// Whether the reverse-path lookup of the source through `iif` finds a route.
    pub rpf_ok: Option<bool>,
    /// ICMP/ICMPv6 type and code, when the packet's ICMP header was captured.
    pub icmp: Option<(u8, u8)>,
    /// What the caller knows of destination NAT in this namespace: `Some(false)` not translated
    /// here (the client connected to the endpoint itself, or the connection came from another
    /// node, whose conntrack translated it); `Some(true)` the client connected to a Service
    /// address in this namespace (translated here if a rule here can); `None` unknown.
    pub dnat: Option<bool>,
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
            bridged: route.bridged,
            iif_type: route.iif_type,
            oif_type: route.oif_type,
            rpf_ok: route.rpf_ok,
            icmp: None,
            dnat: None,
        }
    }

    /// A packet of `proto` between two addresses, seen on no known interface.
    pub fn between(proto: u8, src: IpAddr, dst: IpAddr, sport: u16, dport: u16, tcp_flags: Option<u8>) -> Self {
        Self {
            proto,
            src,
            dst,
            sport,
            dport,
            tcp_flags,
            iif: None,
            oif: None,
            src_local: false,
            dst_local: false,
            bridged: None,
            iif_type: None,
            oif_type: None,
            rpf_ok: None,
            icmp: None,
            dnat: None,
        }
    }

    pub fn ipv6(&self) -> bool {
        self.dst.is_ipv6()
    }

    /// The hooks the packet crosses in this namespace, in order (a bridged packet crosses
    /// PREROUTING, FORWARD and POSTROUTING through br_netfilter).
    pub fn path(&self) -> &'static [HookPoint] {
        use HookPoint::*;
        if self.bridged.is_some() {
            return &[Prerouting, Forward, Postrouting];
        }
        match (self.src_local, self.dst_local) {
            (true, _) => &[Output, Postrouting],
            (false, true) => &[Prerouting, Input],
            (false, false) => &[Prerouting, Forward, Postrouting],
        }
    }

    /// Conntrack state as a CT_* bit: a SYN opens a connection, anything else with ACK or RST
    /// belongs to one; unknown without TCP flags. ICMPv6 neighbour discovery and MLD are never
    /// tracked (`noct_valid_new` of nf_conntrack_proto_icmpv6); other ICMP depends on history.
    fn ct_state(&self) -> Option<u8> {
        if let (1 | 58, Some((kind, _))) = (self.proto, self.icmp) {
            return (self.proto == 58 && matches!(kind, 130..=136 | 143)).then_some(CT_UNTRACKED);
        }
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
    /// The packet is certainly dropped or rejected, even when doubts leave open by which rule
    /// (an undecided drop before a certain one).
    pub blocked: bool,
    /// Undecidable matches met, in order.
    pub doubts: Vec<String>,
    /// The packet meets exactly one drop/reject rule and nothing else on its path could drop
    /// it (no unknown target, no missing chain): when a drop was observed, that rule made it,
    /// whatever the doubts about the accepts before it.
    pub sole: bool,
    /// When base chains at the same hook and priority both drop the packet certainly: indices
    /// into `candidates` of each, in the order read (the kernel's order, registration order, is
    /// not visible from a read).
    pub tied: Vec<usize>,
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

/// Evaluates `packet` against `tables` (see [`Evaluation`]), in the conntrack state its flags
/// give: a SYN is NEW, any other TCP packet ESTABLISHED.
pub fn evaluate(tables: &[Table], packet: &Packet) -> Evaluation {
    let (out, other_drops) = walk_all(tables, packet, packet.ct_state());
    finish(out, other_drops, packet)
}

/// [`evaluate`] for a packet the kernel was seen to drop. A TCP packet without SYN is taken as
/// ESTABLISHED; when that meets no drop at all, the packet may have been INVALID to conntrack
/// (a SYN-ACK or segment whose connection conntrack does not know: asymmetric routing, a SYN
/// that bypassed conntrack, an entry flushed or timed out), which rules like `-m conntrack
/// --ctstate INVALID -j DROP` (kube-proxy's, firewalld's) drop: it is evaluated again as
/// INVALID, every drop it then meets a candidate with that doubt (the rule's counters confirm
/// it). Never for a packet that was not seen dropped: most connections are not INVALID.
pub fn evaluate_dropped(tables: &[Table], packet: &Packet) -> Evaluation {
    let (out, other_drops) = walk_all(tables, packet, packet.ct_state());
    if out.candidates.is_empty() && packet.ct_state() == Some(CT_ESTABLISHED) && packet.proto == 6 {
        let (mut invalid, others) = walk_all(tables, packet, Some(CT_INVALID));
        if !invalid.candidates.is_empty() {
            let doubt = "conntrack state: INVALID assumed, ESTABLISHED meets no drop".to_string();
            for c in &mut invalid.candidates {
                c.doubt.get_or_insert_with(|| doubt.clone());
            }
            invalid.decided = None;
            invalid.doubts.insert(0, doubt);
            return finish(invalid, others, packet);
        }
    }
    finish(out, other_drops, packet)
}

fn finish(mut out: Evaluation, other_drops: bool, packet: &Packet) -> Evaluation {
    // A bridged packet may also meet bridge-family tables, which are not read.
    out.sole = out.candidates.len() == 1 && !other_drops && packet.bridged.is_none();
    out
}

fn walk_all(tables: &[Table], packet: &Packet, ct: Option<u8>) -> (Evaluation, bool) {
    let ct_new = ct == Some(CT_NEW);
    let mut walk = Walk {
        tables,
        packet,
        ct,
        mark: Some(0),
        ctmark: ct_new.then_some(0),
        out: Evaluation::default(),
        hook: HookPoint::Prerouting,
        chain_doubt: None,
        drop_doubt: None,
        dnat: dnat_status(tables, packet),
        snat_rules: has_nat(tables, packet, |k| *k == NatKind::Source),
        other_drops: false,
    };
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
        let mut dropped_at: Option<i32> = None;
        for (priority, ti, ci) in bases {
            if dropped_at.is_some_and(|p| p != priority) {
                return (walk.out, walk.other_drops);
            }
            // What an earlier base chain left undecided, other than a drop, does not matter here
            // (an undecided earlier drop still weakens every candidate: see `candidate`).
            walk.chain_doubt = None;
            let first_new = walk.out.candidates.len();
            let mut flow = walk.run_chain(ti, ci, None, 0);
            if flow == Flow::Return && walk.tables[ti].chains[ci].base.as_ref().map(|b| b.policy) == Some(Policy::Drop)
            {
                walk.candidate(Site { table: ti, chain: ci, rule: None }, None);
                flow = Flow::Drop;
            }
            if flow == Flow::Drop {
                let certain = (first_new..walk.out.candidates.len()).find(|&i| walk.out.candidates[i].doubt.is_none());
                if let (true, Some(first), Some(this)) = (dropped_at == Some(priority), walk.out.decided, certain) {
                    if first != this {
                        if walk.out.tied.is_empty() {
                            walk.out.tied.push(first);
                        }
                        walk.out.tied.push(this);
                    }
                }
                dropped_at = Some(priority);
            }
        }
        if dropped_at.is_some() {
            return (walk.out, walk.other_drops);
        }
    }
    (walk.out, walk.other_drops)
}

/// Whether conntrack marks the packet's connection as destination-NATed in this namespace:
/// `Some(false)` when no rule here can have translated to the packet's (post-NAT) destination.
fn dnat_status(tables: &[Table], packet: &Packet) -> Option<bool> {
    let could = || {
        has_nat(tables, packet, |kind| match kind {
            NatKind::Destination(Some(to)) => *to == packet.dst,
            NatKind::Destination(None) => true,
            NatKind::Local => packet.dst_local,
            NatKind::Source => false,
        })
    };
    match packet.dnat {
        Some(false) => Some(false),
        Some(true) => Some(could()),
        None => (!could()).then_some(false),
    }
}

fn has_nat(tables: &[Table], packet: &Packet, kind: impl Fn(&NatKind) -> bool) -> bool {
    tables.iter().filter(|t| t.family.sees(packet.ipv6())).any(|t| {
        t.chains.iter().flat_map(|c| &c.rules).any(|r| match &r.action {
            Action::Nat(k) => kind(k),
            Action::Vmap { entries, .. } => entries.iter().any(|(_, a)| matches!(a, Action::Nat(k) if kind(k))),
            _ => false,
        })
    })
}

struct Walk<'a> {
    tables: &'a [Table],
    packet: &'a Packet,
    /// The packet mark as MARK rules set it; `None` once a rule changed it unknowably.
    mark: Option<u32>,
    /// The connection mark: 0 for a new connection until a rule sets it; unknown otherwise.
    ctmark: Option<u32>,
    /// The conntrack state the packet is evaluated in (a CT_* bit; None: unknown).
    ct: Option<u8>,
    out: Evaluation,
    hook: HookPoint,
    /// Why the current base chain may have ended before the current rule (an undecided
    /// ACCEPT, NAT or unknown target in it, or an undecided drop before it).
    chain_doubt: Option<String>,
    /// The first undecided drop: every later base chain is reached only if it did not match.
    drop_doubt: Option<String>,
    dnat: Option<bool>,
    snat_rules: bool,
    /// Something that may drop the packet without being a candidate was met (an unknown
    /// target, a jump to a missing chain, nesting too deep).
    other_drops: bool,
}

impl Walk<'_> {
    /// Records a drop/reject; `local` is why this rule may not be reached within its chain.
    fn candidate(&mut self, site: Site, local: Option<String>) {
        let reach = self.chain_doubt.clone().or(local);
        // Reached for sure unless an earlier drop took the packet: dropped either way.
        self.out.blocked |= reach.is_none();
        let doubt = reach.or_else(|| self.drop_doubt.clone());
        let certain = doubt.is_none();
        self.out.candidates.push(Candidate { site, hook: self.hook, doubt: doubt.clone() });
        if certain && self.out.decided.is_none() {
            self.out.decided = Some(self.out.candidates.len() - 1);
        }
        if let Some(doubt) = doubt {
            self.drop_doubt.get_or_insert(doubt);
        }
    }

    fn doubt_text(&self, ti: usize, ci: usize, rule: &Rule, why: &str) -> String {
        let table = &self.tables[ti];
        format!("{} {}/{} rule {}: {why}", table.backend.as_str(), table.name, table.chains[ci].name, rule.position)
    }

    /// Runs a chain; `local` is why its rules may not be reached at all (an undecided jump).
    fn run_chain(&mut self, ti: usize, ci: usize, local: Option<String>, depth: usize) -> Flow {
        let table = &self.tables[ti];
        let chain = &table.chains[ci];
        if depth > MAX_DEPTH {
            let doubt = format!("{}/{}: jumps nested deeper than {MAX_DEPTH}", table.name, chain.name);
            self.out.doubts.push(doubt.clone());
            self.chain_doubt.get_or_insert(doubt);
            self.other_drops = true;
            return Flow::Return;
        }
        let mut local = local;
        for (ri, rule) in chain.rules.iter().enumerate() {
            let (outcome, why) = self.matches(rule);
            if outcome == Outcome::No {
                continue;
            }
            let mut unsure = local.clone();
            if outcome == Outcome::Unknown && rule.action.decides() {
                let doubt = self.doubt_text(ti, ci, rule, &why.unwrap_or_default());
                self.out.doubts.push(doubt.clone());
                unsure.get_or_insert(doubt);
            }
            let site = Site { table: ti, chain: ci, rule: Some(ri) };
            let flow = self.act(&rule.action, site, unsure.clone(), depth);
            if unsure.is_none() {
                if flow != Flow::Return {
                    return flow;
                }
                if matches!(rule.action, Action::Return | Action::Goto(_)) {
                    return Flow::Return;
                }
            } else if matches!(rule.action, Action::Return | Action::Goto(_)) {
                // The rest of this chain runs only if that rule did not match.
                local = local.or(unsure);
            }
        }
        Flow::Return
    }

    /// Applies an action; `Flow::Return` means "go on with the next rule" except for RETURN/goto
    /// (handled by the caller). `unsure`: why the action may not be taken.
    fn act(&mut self, action: &Action, site: Site, unsure: Option<String>, depth: usize) -> Flow {
        match action {
            Action::Accept | Action::Nat(_) => {
                if let Some(doubt) = unsure {
                    self.chain_doubt.get_or_insert(doubt);
                }
                Flow::Accept
            }
            Action::Drop | Action::Reject(_) => {
                self.candidate(site, unsure);
                Flow::Drop
            }
            Action::Jump(target) | Action::Goto(target) => match self.tables[site.table].chain_index(target) {
                Some(ci) => self.run_chain(site.table, ci, unsure, depth + 1),
                None => {
                    self.other_drops = true;
                    let doubt = format!("jump to missing chain {target}");
                    self.out.doubts.push(doubt.clone());
                    self.chain_doubt.get_or_insert(doubt);
                    Flow::Return
                }
            },
            Action::Return | Action::Continue => Flow::Return,
            Action::SetMark { value, mask } => {
                self.mark = if unsure.is_some() { None } else { self.mark.map(|m| (m & !mask) ^ value) };
                Flow::Return
            }
            Action::UnknownMark => {
                self.mark = None;
                Flow::Return
            }
            Action::SetCtMark(change) => {
                let (mark, ctmark) = (self.mark, self.ctmark);
                match change {
                    _ if unsure.is_some() => (self.mark, self.ctmark) = (None, None),
                    MarkChange::Set { value, mask } => self.ctmark = ctmark.map(|c| (c & !mask) ^ value),
                    MarkChange::Save { mask } => {
                        let mask = *mask;
                        self.ctmark = mark.zip(ctmark).map(|(m, c)| (c & !mask) | (m & mask));
                    }
                    MarkChange::Restore { mask } => {
                        let mask = *mask;
                        self.mark = mark.zip(ctmark).map(|(m, c)| (m & !mask) | (c & mask));
                    }
                    MarkChange::Unknown => self.ctmark = None,
                }
                Flow::Return
            }
            Action::Vmap { field, entries } => {
                for (value, entry_action) in entries {
                    match self.test(field, std::slice::from_ref(value)) {
                        Outcome::No => continue,
                        Outcome::Yes => return self.act(entry_action, site, unsure, depth),
                        Outcome::Unknown => {
                            let doubt = format!("verdict map on {}: value unknown", field_label(field));
                            self.out.doubts.push(doubt.clone());
                            let doubt = unsure.clone().unwrap_or(doubt);
                            return self.act(entry_action, site, Some(doubt), depth);
                        }
                    }
                }
                Flow::Return
            }
            Action::Unsupported(what) => {
                // It may drop the packet or end the chain: both are doubts.
                self.other_drops = true;
                let doubt = unsure.unwrap_or_else(|| format!("unsupported target {what}"));
                self.out.doubts.push(doubt.clone());
                self.chain_doubt.get_or_insert(doubt.clone());
                self.drop_doubt.get_or_insert(doubt);
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
        let ports = matches!(p.proto, 6 | 17 | 132 | 136);
        let known = |b: bool| if b { Outcome::Yes } else { Outcome::No };
        let any = |f: &dyn Fn(&Value) -> bool| known(values.iter().any(f));
        let iface = |name: Option<&str>| name.map_or(Outcome::Unknown, |name| any(&|v| iface_matches(v, name)));
        let number = |n: Option<u32>| n.map_or(Outcome::Unknown, |n| any(&|v| *v == Value::Number(n)));
        let boolean = |b: Option<bool>| b.map_or(Outcome::Unknown, |b| any(&|v| *v == Value::Bool(b)));
        match field {
            Field::L4Proto => any(&|v| *v == Value::Proto(p.proto)),
            Field::Saddr => any(&|v| contains(v, p.src)),
            Field::Daddr => any(&|v| contains(v, p.dst)),
            Field::Sport if ports => any(&|v| in_ports(v, p.sport)),
            Field::Dport if ports => any(&|v| in_ports(v, p.dport)),
            Field::Sport | Field::Dport => Outcome::No,
            Field::IifName => iface(p.iif.as_deref()),
            Field::OifName => iface(p.oif.as_deref()),
            Field::CtState => match self.ct {
                Some(state) => self.ct_state_in(state, values),
                None => Outcome::Unknown,
            },
            Field::CtStatus => self.ct_status_in(values),
            Field::TcpFlags { mask } => match p.tcp_flags {
                Some(flags) if p.proto == 6 => any(&|v| *v == Value::Number(u32::from(flags & mask))),
                _ if p.proto != 6 => Outcome::No,
                _ => Outcome::Unknown,
            },
            Field::Mark { mask } => number(self.mark.map(|m| m & mask)),
            Field::CtMark { mask } => number(self.ctmark.map(|m| m & mask)),
            Field::SrcLocal => any(&|v| *v == Value::Bool(p.src_local)),
            Field::DstLocal => any(&|v| *v == Value::Bool(p.dst_local)),
            Field::Ipv6 => any(&|v| *v == Value::Bool(p.ipv6())),
            Field::Bridged | Field::PhysdevIsIn | Field::PhysdevIsOut => {
                any(&|v| *v == Value::Bool(p.bridged.is_some()))
            }
            Field::PhysdevIn => match &p.bridged {
                Some(ports) => iface(ports.in_port.as_deref()),
                None => Outcome::No,
            },
            Field::PhysdevOut => match &p.bridged {
                Some(ports) => iface(ports.out_port.as_deref()),
                None => Outcome::No,
            },
            Field::IifType => number(p.iif_type.map(u32::from)),
            Field::OifType => number(p.oif_type.map(u32::from)),
            Field::RpfMissing => boolean(p.rpf_ok.map(|ok| !ok)),
            Field::IcmpType { v6, code } if p.proto == if *v6 { 58 } else { 1 } => {
                number(p.icmp.map(|(kind, c)| u32::from(if *code { c } else { kind })))
            }
            Field::IcmpType { .. } => Outcome::No,
            Field::Concat(fields) => {
                let mut result = Outcome::No;
                for value in values {
                    let Value::Tuple(parts) = value else { continue };
                    let mut tuple = Outcome::Yes;
                    for (f, v) in fields.iter().zip(parts) {
                        match self.test(f, std::slice::from_ref(v)) {
                            Outcome::No => {
                                tuple = Outcome::No;
                                break;
                            }
                            Outcome::Unknown => tuple = Outcome::Unknown,
                            Outcome::Yes => {}
                        }
                    }
                    match tuple {
                        Outcome::Yes => return Outcome::Yes,
                        Outcome::Unknown => result = Outcome::Unknown,
                        Outcome::No => {}
                    }
                }
                result
            }
        }
    }

    /// `--ctstate`/`ct state`: the conntrack state, plus the virtual SNAT/DNAT states.
    fn ct_state_in(&self, state: u8, values: &[Value]) -> Outcome {
        let mut result = Outcome::No;
        for v in values {
            let Value::CtStates(bits) = v else { continue };
            if bits & state != 0 {
                return Outcome::Yes;
            }
            for (bit, status) in [(CT_DNAT, self.dnat), (CT_SNAT, self.snat())] {
                if bits & bit != 0 {
                    match status {
                        Some(true) => return Outcome::Yes,
                        Some(false) => {}
                        None => result = Outcome::Unknown,
                    }
                }
            }
        }
        result
    }

    fn ct_status_in(&self, values: &[Value]) -> Outcome {
        let mut result = Outcome::No;
        for v in values {
            let Value::Number(bits) = v else { continue };
            for (bit, status) in [(CTS_DNAT, self.dnat), (CTS_SNAT, self.snat())] {
                if bits & bit != 0 {
                    match status {
                        Some(true) => return Outcome::Yes,
                        Some(false) => {}
                        None => result = Outcome::Unknown,
                    }
                }
            }
            if bits & !(CTS_DNAT | CTS_SNAT) != 0 {
                result = Outcome::Unknown;
            }
        }
        result
    }

    /// Source NAT is set up at POSTROUTING of a connection's first packet: before it, a new
    /// connection is not source-NATed; nor is any where no rule translates sources.
    fn snat(&self) -> Option<bool> {
        let new = self.ct == Some(CT_NEW);
        let before_snat = self.hook != HookPoint::Postrouting && self.hook != HookPoint::Input;
        (!self.snat_rules || (new && before_snat)).then_some(false)
    }
}

fn field_name(m: &Match) -> String {
    match m {
        Match::Test { field, .. } => field_label(field),
        Match::Unsupported(what) => what.clone(),
    }
}

/// How a doubt names a packet property.
fn field_label(field: &Field) -> String {
    match field {
        Field::IifName => "input interface".into(),
        Field::OifName => "output interface".into(),
        Field::CtState => "conntrack state".into(),
        Field::CtStatus => "conntrack status".into(),
        Field::Mark { .. } => "packet mark".into(),
        Field::CtMark { .. } => "connection mark".into(),
        Field::PhysdevIn => "bridge input port".into(),
        Field::PhysdevOut => "bridge output port".into(),
        Field::IifType | Field::OifType => "interface type".into(),
        Field::RpfMissing => "reverse path".into(),
        Field::IcmpType { .. } => "ICMP type".into(),
        Field::Concat(fields) => fields.iter().map(field_label).collect::<Vec<_>>().join(" . "),
        other => format!("{other:?}"),
    }
}

impl Table {
    pub fn chain_index(&self, name: &str) -> Option<usize> {
        self.chains.iter().position(|c| c.name == name)
    }
}

pub fn contains(net: &Value, ip: IpAddr) -> bool {
    if let Value::AddrRange { from, to } = net {
        return match (from, to, ip) {
            (IpAddr::V4(a), IpAddr::V4(b), IpAddr::V4(ip)) => (u32::from(*a)..=u32::from(*b)).contains(&u32::from(ip)),
            (IpAddr::V6(a), IpAddr::V6(b), IpAddr::V6(ip)) => {
                (u128::from(*a)..=u128::from(*b)).contains(&u128::from(ip))
            }
            _ => false,
        };
    }
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
