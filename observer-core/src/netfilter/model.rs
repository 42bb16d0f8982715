//! One model for every firewall backend: tables of chains of rules, each rule a list of
//! matches and an action. iptables-save and nft output are both parsed into it, and the
//! evaluator only knows this model.

use std::net::IpAddr;

/// Which tool manages a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Backend {
    IptablesNft,
    IptablesLegacy,
    Nftables,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::IptablesNft => "iptables-nft",
            Backend::IptablesLegacy => "iptables-legacy",
            Backend::Nftables => "nftables",
        }
    }
}

/// Address family of a table: `inet` tables see IPv4 and IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Ip,
    Ip6,
    Inet,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
            Family::Inet => "inet",
        }
    }

    /// Whether a table of this family sees a packet of `ipv6`.
    pub fn sees(self, ipv6: bool) -> bool {
        match self {
            Family::Ip => !ipv6,
            Family::Ip6 => ipv6,
            Family::Inet => true,
        }
    }
}

/// The netfilter hooks a routed packet crosses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookPoint {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl HookPoint {
    /// iptables' name of the hook (and of its built-in chains).
    pub fn as_str(self) -> &'static str {
        match self {
            HookPoint::Prerouting => "PREROUTING",
            HookPoint::Input => "INPUT",
            HookPoint::Forward => "FORWARD",
            HookPoint::Output => "OUTPUT",
            HookPoint::Postrouting => "POSTROUTING",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "prerouting" => HookPoint::Prerouting,
            "input" => HookPoint::Input,
            "forward" => HookPoint::Forward,
            "output" => HookPoint::Output,
            "postrouting" => HookPoint::Postrouting,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
}

/// A table as one backend shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub backend: Backend,
    pub family: Family,
    pub name: String,
    pub chains: Vec<Chain>,
}

impl Table {
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }
}

/// Where a base chain hangs in the kernel, and what it does with packets no rule decided.
#[derive(Clone, Debug, PartialEq)]
pub struct BaseChain {
    pub hook: HookPoint,
    pub priority: i32,
    pub policy: Policy,
    /// The policy's own counters (iptables shows them, nft does not).
    pub policy_counters: Option<Counters>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Accept,
    Drop,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Chain {
    pub name: String,
    /// `None` for a user chain (reached only by jump/goto).
    pub base: Option<BaseChain>,
    pub rules: Vec<Rule>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// 1-based position in its chain (what `iptables -L --line-numbers` shows).
    pub position: usize,
    /// nftables rule handle (`nft -a`), for iptables-nft and nftables.
    pub handle: Option<u64>,
    /// The rule as its tool prints it.
    pub text: String,
    pub comment: Option<String>,
    pub matches: Vec<Match>,
    pub action: Action,
    pub counters: Option<Counters>,
}

/// A packet property the rules test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    L4Proto,
    Saddr,
    Daddr,
    Sport,
    Dport,
    IifName,
    OifName,
    CtState,
    /// `(tcp flags & mask) == value`.
    TcpFlags {
        mask: u8,
    },
    /// `fwmark & mask == value`.
    Mark {
        mask: u32,
    },
    /// `-m addrtype --src-type LOCAL` / `fib saddr type local`.
    SrcLocal,
    DstLocal,
    /// Packet's IP version (`meta nfproto`, or implied by `ip saddr` in an inet table).
    Ipv6,
    /// Conntrack status bits ([`CTS_DNAT`], [`CTS_SNAT`]): `ct status dnat`; equal when any
    /// bit of the value is set.
    CtStatus,
    /// Connection mark (`-m connmark --mark`, `ct mark`): `ctmark & mask == value`.
    CtMark {
        mask: u32,
    },
    /// Bridge ports of a bridged packet (`-m physdev --physdev-in/--physdev-out`).
    PhysdevIn,
    PhysdevOut,
    /// `--physdev-is-bridged`: the packet is bridged, not routed (Bool).
    Bridged,
    /// `--physdev-is-in` / `--physdev-is-out`: the packet came in / goes out through a bridge
    /// port (Bool).
    PhysdevIsIn,
    PhysdevIsOut,
    /// Hardware type of the input/output interface (`meta iiftype`; ARPHRD_* numbers).
    IifType,
    OifType,
    /// `fib saddr . iif oif missing`: the reverse path check fails (Bool).
    RpfMissing,
    /// ICMP (`v6: false`) or ICMPv6 type (Number), or its code (`code: true`), from the
    /// packet's ICMP header when captured.
    IcmpType {
        v6: bool,
        code: bool,
    },
    /// A concatenation (`ip saddr . tcp dport`), compared with [`Value::Tuple`]s.
    Concat(Vec<Field>),
}

/// One value a field is compared with; a match holds any number of them (a set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Proto(u8),
    Net {
        addr: IpAddr,
        prefix: u8,
    },
    Ports {
        from: u16,
        to: u16,
    },
    /// An interface name; a trailing `+` (iptables) or `*` (nft) is a prefix wildcard.
    Iface(String),
    /// Bitmask of [`CT_NEW`] etc.
    CtStates(u8),
    Number(u32),
    Bool(bool),
    /// An address interval of an nft interval set (`10.0.0.1-10.0.0.9`), both ends included.
    AddrRange {
        from: IpAddr,
        to: IpAddr,
    },
    /// One element of a concatenated set: a value per field of [`Field::Concat`].
    Tuple(Vec<Value>),
}

pub const CT_NEW: u8 = 1;
pub const CT_ESTABLISHED: u8 = 2;
pub const CT_RELATED: u8 = 4;
pub const CT_INVALID: u8 = 8;
pub const CT_UNTRACKED: u8 = 16;
/// conntrack's virtual states (`--ctstate SNAT,DNAT`): the connection's addresses were
/// translated; decided from the conntrack status.
pub const CT_SNAT: u8 = 32;
pub const CT_DNAT: u8 = 64;
/// Conntrack status bits (IPS_SRC_NAT, IPS_DST_NAT), for [`Field::CtStatus`].
pub const CTS_SNAT: u32 = 1 << 4;
pub const CTS_DNAT: u32 = 1 << 5;
/// Other status bits a rule may test (`ct status confirmed`, ...): never decidable here.
pub const CTS_OTHER: u32 = !(CTS_SNAT | CTS_DNAT);

/// What a NAT rule translates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NatKind {
    /// SNAT, MASQUERADE, NETMAP of the source.
    Source,
    /// DNAT to this address (`None`: a map, a range or an unreadable target).
    Destination(Option<IpAddr>),
    /// REDIRECT/TPROXY: to an address of the namespace itself.
    Local,
}

/// How `CONNMARK` changes marks (the packet mark `mark`, the connection mark `ctmark`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkChange {
    /// `--set-xmark value/mask`: `ctmark = (ctmark & !mask) ^ value`.
    Set { value: u32, mask: u32 },
    /// `--save-mark`: `ctmark = (ctmark & !mask) | (mark & mask)`.
    Save { mask: u32 },
    /// `--restore-mark`: `mark = (mark & !mask) | (ctmark & mask)`.
    Restore { mask: u32 },
    /// A change the evaluator cannot follow.
    Unknown,
}

/// A rule's condition: the field equals one of `values` (or none of them, when negated), or a
/// match the evaluator does not understand (which makes the rule's outcome unknown).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Match {
    Test { field: Field, values: Vec<Value>, negated: bool },
    Unsupported(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Accept,
    Drop,
    /// REJECT, with how (`icmp-admin-prohibited`, `tcp-reset`, ...).
    Reject(String),
    Jump(String),
    Goto(String),
    Return,
    /// A non-terminal statement (LOG, counter, ...): evaluation goes on with the next rule.
    Continue,
    /// `MARK --set-xmark value/mask`: `mark = (mark & !mask) ^ value`.
    SetMark {
        value: u32,
        mask: u32,
    },
    /// A mark change the evaluator cannot follow: the mark becomes unknown.
    UnknownMark,
    /// DNAT/SNAT/MASQUERADE/REDIRECT: ends the chain like ACCEPT as far as a drop goes.
    Nat(NatKind),
    /// `CONNMARK`/`ct mark set`: the connection mark as the packet leaves this rule.
    SetCtMark(MarkChange),
    /// A verdict map: the first entry whose value matches `field` decides.
    Vmap {
        field: Field,
        entries: Vec<(Value, Action)>,
    },
    /// A target the evaluator does not know (NFQUEUE, a CNI-specific target, ...).
    Unsupported(String),
}

impl Action {
    /// Whether taking this action can decide (or change the path to) the packet's fate.
    pub fn decides(&self) -> bool {
        !matches!(self, Action::Continue | Action::SetMark { .. } | Action::UnknownMark | Action::SetCtMark(_))
    }
}

/// The number of an ICMP (`v6 = false`) or ICMPv6 type by the names nft and iptables print
/// (RFC 792/4443/4861 numbers), or a number.
pub fn icmp_type_number(name: &str, v6: bool) -> Option<u8> {
    if let Ok(n) = name.parse() {
        return Some(n);
    }
    let name = name.to_ascii_lowercase().replace("neighbour", "neighbor");
    Some(match (v6, name.as_str()) {
        (false, "echo-reply" | "pong") => 0,
        (false, "destination-unreachable") => 3,
        (false, "source-quench") => 4,
        (false, "redirect") => 5,
        (false, "echo-request" | "ping") => 8,
        (false, "router-advertisement") => 9,
        (false, "router-solicitation") => 10,
        (false, "time-exceeded" | "ttl-exceeded") => 11,
        (false, "parameter-problem") => 12,
        (false, "timestamp-request") => 13,
        (false, "timestamp-reply") => 14,
        (false, "info-request") => 15,
        (false, "info-reply") => 16,
        (false, "address-mask-request") => 17,
        (false, "address-mask-reply") => 18,
        (true, "destination-unreachable") => 1,
        (true, "packet-too-big") => 2,
        (true, "time-exceeded" | "ttl-exceeded") => 3,
        (true, "parameter-problem") => 4,
        (true, "echo-request") => 128,
        (true, "echo-reply") => 129,
        (true, "mld-listener-query") => 130,
        (true, "mld-listener-report") => 131,
        (true, "mld-listener-done" | "mld-listener-reduction") => 132,
        (true, "nd-router-solicit" | "router-solicitation") => 133,
        (true, "nd-router-advert" | "router-advertisement") => 134,
        (true, "nd-neighbor-solicit" | "neighbor-solicitation") => 135,
        (true, "nd-neighbor-advert" | "neighbor-advertisement") => 136,
        (true, "nd-redirect" | "redirect") => 137,
        (true, "router-renumbering") => 138,
        (true, "ind-neighbor-solicit") => 141,
        (true, "ind-neighbor-advert") => 142,
        (true, "mld2-listener-report") => 143,
        _ => return None,
    })
}
