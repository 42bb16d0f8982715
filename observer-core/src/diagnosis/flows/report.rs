//! The answer to "what did you see of flow X between t0 and t1": the first arrival, the last
//! place and where the request and the reply last left the node, and the drops, in a compact
//! form that travels between nodes as JSON (times RFC 3339 UTC).

use std::{net::IpAddr, time::SystemTime};

use serde::{Deserialize, Serialize};

use super::{Entry, Key, PacketKind, Place};
use crate::{
    model::Hook,
    time::{deserialize_rfc3339, serialize_rfc3339},
};

/// A question about the TCP connections from `client` (any port; `None`: any client) to
/// `server:port` with evidence between `from` and `until`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<IpAddr>,
    pub server: IpAddr,
    pub port: u16,
    #[serde(serialize_with = "serialize_rfc3339", deserialize_with = "deserialize_rfc3339")]
    pub from: SystemTime,
    #[serde(serialize_with = "serialize_rfc3339", deserialize_with = "deserialize_rfc3339")]
    pub until: SystemTime,
}

/// One place a node saw one kind of handshake packet of the flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sighting {
    pub node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The hook (`tc-ingress`, `tc-egress`, ...).
    pub hook: String,
    pub packet: PacketKind,
    /// When (the first sighting for an arrival, the last one otherwise).
    #[serde(serialize_with = "serialize_rfc3339", deserialize_with = "deserialize_rfc3339")]
    pub time: SystemTime,
    /// Packets of that kind seen there in the window (retransmissions and connections).
    pub count: u32,
}

/// A drop of one of the flow's packets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DropSeen {
    pub node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The packet went to the server (`true`: the request, e.g. a SYN) or back (the reply).
    pub request: bool,
    /// The kernel's drop reason (`NETFILTER_DROP`...) and the symbol that freed the packet.
    pub reason: String,
    pub location: String,
    #[serde(serialize_with = "serialize_rfc3339", deserialize_with = "deserialize_rfc3339")]
    pub time: SystemTime,
    /// The netfilter rule that decided it (the diagnose JSON `culprit` object), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub culprit: Option<serde_json::Value>,
    /// The rule in one line (`iptables-nft filter/FORWARD #1 \`-A FORWARD ...\` (...)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub culprit_summary: Option<String>,
}

/// What one node saw of the flows a [`FlowQuery`] asked about.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FlowReport {
    pub node: String,
    /// Connections with evidence in the window.
    pub connections: u32,
    /// The first SYN to the server arriving at a TC ingress hook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syn_arrived: Option<Sighting>,
    /// The last place the SYN to the server was seen (any hook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syn_last: Option<Sighting>,
    /// The last TC egress hook the SYN to the server left by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syn_left: Option<Sighting>,
    /// The first reply (SYN-ACK or RST from the server) entering at a TC ingress hook: on the
    /// client's node, the reply arriving from the network; on the server's node, from the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_arrived: Option<Sighting>,
    /// The last TC egress hook a reply left by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_left: Option<Sighting>,
    /// Drops of the flow's packets (at most a few, the latest).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<DropSeen>,
    /// Every sighting in the window is still remembered (false: some may have been forgotten,
    /// so an absence proves nothing).
    pub complete: bool,
}

impl FlowReport {
    /// Whether a SYN to the server was seen at all in the window.
    pub fn saw_request(&self) -> bool {
        self.syn_last.is_some() || self.dropped.iter().any(|d| d.request)
    }
}

fn sighting(node: &str, p: &Place, time: SystemTime) -> Sighting {
    Sighting {
        node: node.to_string(),
        interface: p.interface.clone(),
        hook: p.hook.as_str().to_string(),
        packet: p.kind,
        time,
        count: p.count,
    }
}

/// Keeps `new` in `slot` if `better(new, old)`.
fn keep(slot: &mut Option<Sighting>, new: Sighting, later: bool) {
    let replace = match slot {
        None => true,
        Some(old) => (later && new.time > old.time) || (!later && new.time < old.time),
    };
    if replace {
        *slot = Some(new);
    }
}

pub(super) fn build<'a>(node: &str, entries: impl Iterator<Item = (&'a Key, &'a Entry)>, q: &FlowQuery) -> FlowReport {
    let server = (q.server, q.port);
    let mut r = FlowReport { node: node.to_string(), ..FlowReport::default() };
    let in_window = |first: SystemTime, last: SystemTime| last >= q.from && first <= q.until;
    for ((a, b), entry) in entries {
        let client = match (*a == server, *b == server) {
            (true, _) => *b,
            (_, true) => *a,
            _ => continue,
        };
        if q.client.is_some_and(|c| c != client.0) {
            continue;
        }
        let mut any = false;
        for p in entry.places.iter().filter(|p| in_window(p.first, p.last)) {
            any = true;
            let request = p.src == client;
            match (request, p.kind, p.hook) {
                (true, PacketKind::Syn, hook) => {
                    if hook == Hook::TcIngress {
                        keep(&mut r.syn_arrived, sighting(node, p, p.first), false);
                    }
                    if hook == Hook::TcEgress {
                        keep(&mut r.syn_left, sighting(node, p, p.last), true);
                    }
                    keep(&mut r.syn_last, sighting(node, p, p.last), true);
                }
                (false, PacketKind::SynAck | PacketKind::Rst, Hook::TcIngress) => {
                    keep(&mut r.reply_arrived, sighting(node, p, p.first), false);
                }
                (false, PacketKind::SynAck | PacketKind::Rst, Hook::TcEgress) => {
                    keep(&mut r.reply_left, sighting(node, p, p.last), true);
                }
                _ => {}
            }
        }
        for d in entry.drops.iter().filter(|d| in_window(d.time, d.time)) {
            any = true;
            r.dropped.push(DropSeen {
                node: node.to_string(),
                interface: d.interface.clone(),
                request: d.src == client,
                reason: d.reason.clone(),
                location: d.location.clone(),
                time: d.time,
                culprit: d.culprit.as_ref().and_then(|c| serde_json::to_value(c.as_ref()).ok()),
                culprit_summary: d.culprit.as_ref().map(|c| c.summary()),
            });
        }
        if any {
            r.connections += 1;
        }
    }
    r.dropped.sort_by_key(|d| std::cmp::Reverse(d.time));
    r.dropped.truncate(super::MAX_DROPS);
    r
}
