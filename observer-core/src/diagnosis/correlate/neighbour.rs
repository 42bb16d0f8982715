//! Tying a SYN lost to failed neighbour resolution to the dropped neighbour solicitations for
//! its destination. When nobody answers the solicitations for an address, the kernel frees the
//! packets queued for it in `neigh_invalidate` (after `mcast_solicit` + `ucast_solicit` tries):
//! the drop itself names no rule. If the solicitations were dropped (an `ip6tables` REJECT in
//! the destination pod's own INPUT chain, as an old istio-init installed), that drop and its
//! rule are the cause of the lost connection. The link is typed: the solicitation's target
//! address (RFC 4861 4.3) is the dropped packet's destination (an on-link neighbour, as pods
//! are to their node and to each other on a bridge).

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use crate::{
    model::{DropClass, DropReason},
    netfilter::{Confidence, Culprit},
};

/// An address and port.
type HostPort = (IpAddr, u16);

/// Most solicitation targets (and waiting clients per target) remembered.
const MAX_TARGETS: usize = 4096;
const MAX_WAITING: usize = 64;

/// A dropped IPv6 neighbour solicitation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SolicitationDrop {
    /// The address the solicitation asked for.
    pub target: IpAddr,
    /// The kernel's drop reason (`NETFILTER_DROP`, or e.g. `IPV6_NDISC_NS_OTHERHOST` in a
    /// bystander namespace that received the multicast).
    pub reason: DropReason,
    /// Kernel symbol that freed it.
    pub location: String,
    /// Network namespace inode of the drop.
    pub netns: u32,
    /// The netfilter rule that dropped it, when read.
    pub culprit: Option<Arc<Culprit>>,
}

impl SolicitationDrop {
    /// How telling the drop is about the unanswered solicitations: a rule named beats a
    /// netfilter drop without one, which beats any other reason (a bystander's "not mine").
    fn rank(&self) -> u8 {
        let named = self.culprit.as_deref().map_or(0, |k| match k.confidence {
            Confidence::NotIdentified => 0,
            Confidence::Evaluated => 1,
            Confidence::Confirmed => 2,
        });
        u8::from(self.reason.class == DropClass::Netfilter) * 3 + named
    }

    /// Whether `self` tells more than `other` (or `other` is absent).
    pub fn better_than(&self, other: Option<&SolicitationDrop>) -> bool {
        other.is_none_or(|o| self.rank() > o.rank())
    }
}

/// Whether a packet's drop is neighbour resolution giving up on its next hop: a `NEIGH_*`
/// reason (`NEIGH_FAILED`, `NEIGH_QUEUEFULL`, `NEIGH_DEAD`...) or a free in `neigh_invalidate`
/// (kernels that report no reason there).
pub fn is_neighbour_failure(reason: &DropReason, location: &str) -> bool {
    reason.class == DropClass::Neighbour || location.starts_with("neigh_invalidate")
}

/// Dropped solicitations by target, and the connections whose packets to a target failed
/// neighbour resolution (for solicitation drops seen after the packet's).
#[derive(Debug, Default)]
pub struct Solicitations {
    by_target: HashMap<IpAddr, SolicitationDrop>,
    waiting: HashMap<IpAddr, Vec<HostPort>>,
}

impl Solicitations {
    /// Records a dropped solicitation; returns the most telling drop for its target and the
    /// connections (client keys) that wait on it.
    pub fn dropped(&mut self, d: SolicitationDrop) -> (SolicitationDrop, Vec<HostPort>) {
        if self.by_target.len() >= MAX_TARGETS && !self.by_target.contains_key(&d.target) {
            self.by_target.clear();
        }
        let target = d.target;
        let best = match self.by_target.get(&target) {
            Some(old) if !d.better_than(Some(old)) => old.clone(),
            _ => {
                self.by_target.insert(target, d.clone());
                d
            }
        };
        (best, self.waiting.get(&target).cloned().unwrap_or_default())
    }

    /// A packet of `client`'s connection to `target` was freed by failed neighbour resolution:
    /// returns the dropped solicitation for `target` seen so far, and remembers the client.
    pub fn failed(&mut self, target: IpAddr, client: HostPort) -> Option<SolicitationDrop> {
        if self.waiting.len() >= MAX_TARGETS && !self.waiting.contains_key(&target) {
            self.waiting.clear();
        }
        let clients = self.waiting.entry(target).or_default();
        if !clients.contains(&client) && clients.len() < MAX_WAITING {
            clients.push(client);
        }
        self.by_target.get(&target).cloned()
    }

    /// Forgets clients no longer followed.
    pub fn retain_clients(&mut self, live: impl Fn(&HostPort) -> bool) {
        self.waiting.retain(|_, clients| {
            clients.retain(&live);
            !clients.is_empty()
        });
    }
}
