//! The answer for one drop: which rule decided it, how sure we are, and who owns the rule.

use serde::Serialize;

use super::{
    eval::{Evaluation, Site},
    model::{Action, Field, Match, Policy, Table},
    owner::owner_of,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Confidence {
    /// No rule could be named (see `note`).
    NotIdentified,
    /// The evaluator walked the packet to this rule; counters did not (or could not) confirm.
    Evaluated,
    /// The rule matches the packet and its counters rose across the drop.
    Confirmed,
}

/// Where a rule lives: the watched node's network namespace, or a pod's own (rules that
/// istio-init / istio-cni or the CNI wrote inside the pod). Serialized as `{"kind": "node",
/// "inode": N}` or `{"kind": "pod", "inode": N, "pod": "namespace/name"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum RuleNamespace {
    /// The node's network namespace (the one observer watches).
    Node { inode: u32 },
    /// A pod's network namespace; `pod` is the pod holding an end of the dropped packet there
    /// (as the inventory names it), absent when no inventory names it.
    Pod {
        inode: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pod: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Culprit {
    pub confidence: Confidence,
    /// The netfilter hook (`FORWARD`, `INPUT`, ...) the packet was dropped at, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    /// The rule as its tool prints it, or `policy DROP` for a chain's default policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// 1-based position in the chain (absent for a policy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handle: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<&'static str>,
    /// The Kubernetes NetworkPolicy (`namespace/name`) the CNI encoded in the rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<String>,
    /// Why the rule is not identified, or what weakens the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The network namespace whose rulesets hold the rule (set by the attribution, which knows
    /// which namespace it read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<RuleNamespace>,
    /// The rule answers (REJECT: an ICMP error or a TCP reset), rather than dropping silently.
    #[serde(skip)]
    pub rejects: bool,
    /// The rule blocks everything that reaches it: it tests no protocol, port, address, mark
    /// or set (only interfaces and conntrack state), or it is a chain's policy, and no network
    /// policy engine wrote it. Such a rule cuts endpoints off (R3), it does not single out
    /// the mesh's ports or peers (R4).
    #[serde(skip)]
    pub blanket: bool,
}

impl Culprit {
    pub fn not_identified(hook: Option<&'static str>, note: impl Into<String>) -> Self {
        Self {
            confidence: Confidence::NotIdentified,
            hook,
            backend: None,
            family: None,
            table: None,
            chain: None,
            rule: None,
            position: None,
            handle: None,
            comment: None,
            owner: None,
            network_policy: None,
            note: Some(note.into()),
            netns: None,
            rejects: false,
            blanket: false,
        }
    }

    fn at(tables: &[Table], site: Site, hook: &'static str, confidence: Confidence, note: Option<String>) -> Self {
        let table = &tables[site.table];
        let chain = &table.chains[site.chain];
        let rule = site.rule.map(|r| &chain.rules[r]);
        let comment = rule.and_then(|r| r.comment.clone());
        let (owner, network_policy) = owner_of(&table.name, &chain.name, comment.as_deref());
        let policy = chain.base.as_ref().map(|b| b.policy);
        let policy_engine = matches!(owner, Some("calico" | "kube-router" | "weave" | "cilium" | "antrea"));
        let blanket = !policy_engine && rule.is_none_or(|r| r.matches.iter().all(is_blanket));
        let rejects = rule.is_some_and(|r| matches!(r.action, Action::Reject(_)));
        Self {
            confidence,
            hook: Some(hook),
            backend: Some(table.backend.as_str()),
            family: Some(table.family.as_str()),
            table: Some(table.name.clone()),
            chain: Some(chain.name.clone()),
            rule: Some(match rule {
                Some(r) => r.text.clone(),
                None => format!("policy {}", if policy == Some(Policy::Drop) { "DROP" } else { "ACCEPT" }),
            }),
            position: rule.map(|r| r.position),
            handle: rule.and_then(|r| r.handle),
            comment,
            owner,
            network_policy,
            note,
            netns: None,
            rejects,
            blanket,
        }
    }

    /// Where the rule is, for a sentence: `on node NODE`, or `in pod NS/NAME's network
    /// namespace (rules written inside the pod by istio-init/istio-cni or the CNI)`, or for an
    /// unnamed pod `in network namespace INODE (a pod's, not the node's) ...`.
    pub fn place(&self, node: &str) -> String {
        const INSIDE: &str = "rules written inside the pod by istio-init/istio-cni or the CNI, not the node's: read them with `nsenter -n -t PID iptables-save` (or `nft list ruleset`), PID a process of the pod";
        match &self.netns {
            Some(RuleNamespace::Pod { pod: Some(pod), .. }) => format!("in pod {pod}'s network namespace ({INSIDE})"),
            Some(RuleNamespace::Pod { inode, pod: None }) => {
                format!("in network namespace {inode}, a pod's on node {node} ({INSIDE})")
            }
            Some(RuleNamespace::Node { .. }) | None => format!("on node {node}"),
        }
    }

    /// One line for terminals: `iptables-nft filter/FORWARD #2 "-A FORWARD ..." (confirmed)`.
    pub fn summary(&self) -> String {
        match (&self.table, &self.chain, &self.rule) {
            (Some(table), Some(chain), Some(rule)) => {
                let position = self.position.map(|p| format!(" #{p}")).unwrap_or_default();
                let owner = self.owner.map(|o| format!(", owner {o}")).unwrap_or_default();
                let policy = self.network_policy.as_ref().map(|p| format!(", policy {p}")).unwrap_or_default();
                let confidence = match self.confidence {
                    Confidence::Confirmed => "confirmed by counters",
                    Confidence::Evaluated => "evaluated",
                    Confidence::NotIdentified => "not identified",
                };
                format!(
                    "{} {table}/{chain}{position} `{rule}` ({confidence}{owner}{policy})",
                    self.backend.unwrap_or("netfilter")
                )
            }
            _ => format!(
                "netfilter, hook {}, rule not identified: {}",
                self.hook.unwrap_or("unknown"),
                self.note.as_deref().unwrap_or("no rule matched")
            ),
        }
    }
}

/// Whether a match selects nothing narrower than "traffic through these interfaces / in this
/// conntrack state".
fn is_blanket(m: &Match) -> bool {
    matches!(
        m,
        Match::Test {
            field: Field::IifName
                | Field::OifName
                | Field::CtState
                | Field::CtStatus
                | Field::Ipv6
                | Field::Bridged
                | Field::PhysdevIn
                | Field::PhysdevOut
                | Field::PhysdevIsIn
                | Field::PhysdevIsOut
                | Field::IifType
                | Field::OifType,
            ..
        }
    )
}

/// How a rule's counters moved across the drop: `Some(true)` rose, `Some(false)` did not,
/// `None` cannot tell (no counters, or no snapshot from before the drop).
pub type CounterDelta<'a> = &'a dyn Fn(Site) -> Option<bool>;

/// Decides the culprit of a drop that was observed: as [`resolve`], and when doubts remain but
/// only one rule on the packet's path can drop it at all ([`Evaluation::sole`]), that rule: the
/// drop happened, so the undecided accepts before it did not match.
pub fn resolve_observed(tables: &[Table], evaluation: &Evaluation, rose: CounterDelta<'_>, hooks: &str) -> Culprit {
    let culprit = resolve(tables, evaluation, rose, hooks);
    match evaluation.candidates.first() {
        Some(c)
            if culprit.confidence == Confidence::NotIdentified && evaluation.sole && rose(c.site) != Some(false) =>
        {
            let why = c.doubt.clone().unwrap_or_default();
            Culprit::at(
                tables,
                c.site,
                c.hook.as_str(),
                Confidence::Evaluated,
                Some(format!("the only rule on the packet's path that drops it, so it did ({why}: not matched)")),
            )
        }
        _ => culprit,
    }
}

/// Decides the culprit from the evaluation and the counters.
pub fn resolve(tables: &[Table], evaluation: &Evaluation, rose: CounterDelta<'_>, hooks: &str) -> Culprit {
    // Counters are the strongest evidence: the first candidate (in the order the kernel walks
    // the rules) whose counters rose is the rule that dropped, doubts notwithstanding.
    if let Some(c) = evaluation.candidates.iter().find(|c| rose(c.site) == Some(true)) {
        return Culprit::at(tables, c.site, c.hook.as_str(), Confidence::Confirmed, None);
    }
    // Of base chains at one hook and priority that both drop it, the one whose peers' counters
    // did not move dropped it (the kernel ran it first).
    let untouched: Vec<&usize> = evaluation
        .tied
        .iter()
        .filter(|i| evaluation.candidates.get(**i).is_some_and(|c| rose(c.site) != Some(false)))
        .collect();
    if let ([only], true) = (untouched.as_slice(), evaluation.tied.len() > 1) {
        if let Some(c) = evaluation.candidates.get(**only) {
            return Culprit::at(
                tables,
                c.site,
                c.hook.as_str(),
                Confidence::Evaluated,
                Some("a base chain at the same hook and priority drops it too, but its counters did not move".into()),
            );
        }
    }
    if let [first, rest @ ..] = evaluation.tied.as_slice() {
        let named: Vec<String> = std::iter::once(first)
            .chain(rest)
            .filter_map(|i| evaluation.candidates.get(*i))
            .map(|c| Culprit::at(tables, c.site, c.hook.as_str(), Confidence::Evaluated, None).summary())
            .collect();
        let hook = evaluation.candidates.get(*first).map(|c| c.hook.as_str());
        return Culprit::not_identified(
            hook,
            format!(
                "either {}: base chains at the same hook and priority each drop it, the kernel runs them in \
                 registration order, which a ruleset read does not show, and no counter moved",
                named.join(" or ")
            ),
        );
    }
    if let Some(c) = evaluation.decided.and_then(|i| evaluation.candidates.get(i)) {
        if rose(c.site) == Some(false) {
            let found = Culprit::at(tables, c.site, c.hook.as_str(), Confidence::Evaluated, None);
            return Culprit::not_identified(
                Some(c.hook.as_str()),
                format!(
                    "the rulesets lead to {} but its counters did not move across the drop (was the ruleset changed?)",
                    found.summary()
                ),
            );
        }
        return Culprit::at(tables, c.site, c.hook.as_str(), Confidence::Evaluated, None);
    }
    // A candidate whose counters are known not to have moved did not drop it: never "possibly",
    // and its hook is not the drop's.
    let possible = evaluation.candidates.iter().find(|c| rose(c.site) != Some(false));
    let hook =
        possible.or(evaluation.candidates.first().filter(|_| evaluation.doubts.is_empty())).map(|c| c.hook.as_str());
    let note = match (evaluation.doubts.first(), possible) {
        (Some(doubt), Some(c)) => format!(
            "{doubt}; possibly {} (counters did not tell)",
            Culprit::at(tables, c.site, c.hook.as_str(), Confidence::Evaluated, None).summary()
        ),
        (Some(doubt), None) if !evaluation.candidates.is_empty() => format!(
            "{doubt}; the rules that may drop it did not count it: something the rulesets read do not \
             show did (a table of a family observer does not read: nft netdev, bridge, arp)"
        ),
        (Some(doubt), None) => format!("{doubt}; no rule after it drops the packet"),
        (None, _) => format!("no rule of the rulesets read drops this packet at {hooks}"),
    };
    Culprit::not_identified(hook, note)
}
