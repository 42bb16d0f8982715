//! Following a connection across source NAT: a node process's socket (kubelet's probes, which
//! istio-cni SNATs to 169.254.7.127 in ambient mode; a masquerade) has one address, its packets
//! another. The connection stays keyed by the socket's client address and port.

use std::net::IpAddr;

use super::{Correlator, HostPort};
use crate::model::{Detail, Flow, Observation, Protocol};

/// How soon after its socket's last event a source-NATed packet may join a connection.
const SNAT_WINDOW: std::time::Duration = std::time::Duration::from_secs(5);

/// Most node-socket connections remembered for following SNAT.
const MAX_SNAT_CANDIDATES: usize = 16_384;

impl Correlator {
    /// Remembers a connection opened by a socket that is no pod's, for [`Self::before_snat`].
    pub(super) fn note_node_socket(&mut self, server: (IpAddr, u16), client: (IpAddr, u16), o: &Observation) {
        if o.src.as_ref().is_some_and(|e| e.pod.is_some()) {
            return;
        }
        if self.by_server_and_port.len() >= MAX_SNAT_CANDIDATES {
            let now = o.time;
            self.by_server_and_port.retain(|_, (_, t)| now.duration_since(*t).map_or(true, |d| d <= SNAT_WINDOW));
        }
        if self.by_server_and_port.len() < MAX_SNAT_CANDIDATES {
            self.by_server_and_port.insert((server, client.1), (client, o.time));
        }
    }

    /// `flow` with a source-NATed client put back to the address its socket has: one
    /// connection followed across SNAT (as istio-cni's probe SNAT to 169.254.7.127, or a
    /// masquerade), as the client key already follows it across DNAT.
    ///
    /// A packet from an address that is no pod and follows no connection, whose source port
    /// and destination are those of a connection opened moments before by a non-pod socket (a
    /// node process such as kubelet), is that connection after SNAT: netfilter's SNAT keeps
    /// the source port unless it clashes. Two pods' connections are never joined this way.
    pub(super) fn before_snat(&mut self, mut flow: Flow, o: &Observation) -> Flow {
        if let Some(orig) = self.aliases.get(&(flow.src, flow.sport)) {
            (flow.src, flow.sport) = *orig;
            return flow;
        }
        if let Some(orig) = self.aliases.get(&(flow.dst, flow.dport)) {
            (flow.dst, flow.dport) = *orig;
            return flow;
        }
        let from_a_pod = o.src.as_ref().is_some_and(|e| e.pod.is_some());
        if from_a_pod || self.connections.contains(&(flow.src, flow.sport)) {
            return flow;
        }
        let Some(&(orig, seen)) = self.by_server_and_port.get(&((flow.dst, flow.dport), flow.sport)) else {
            return flow;
        };
        let recent = o.time.duration_since(seen).map_or(true, |d| d <= SNAT_WINDOW);
        if orig.0 == flow.src || !recent {
            return flow;
        }
        let c = self.entry(orig, o);
        if c.snat_source.is_some() {
            return flow;
        }
        c.snat_source = Some(flow.src);
        self.aliases.insert((flow.src, flow.sport), orig);
        (flow.src, flow.sport) = orig;
        flow
    }

    /// When `o` is the first packet (a SYN, or a drop) of a TCP flow from an address that is
    /// no pod's and that no followed connection explains: (its source, its destination), the
    /// packet side of a possibly source-NATed connection whose original direction conntrack
    /// can tell (see [`Self::follow_snat`]).
    pub fn snat_candidate(&self, o: &Observation) -> Option<(HostPort, HostPort)> {
        let flow = o.flow?;
        if flow.protocol != Protocol::TCP || o.src.as_ref().is_some_and(|e| e.pod.is_some()) {
            return None;
        }
        let first = match &o.detail {
            Detail::Packet { tcp_flags, .. } => tcp_flags.is_syn(),
            Detail::Drop { .. } => true,
            _ => false,
        };
        let key = (flow.src, flow.sport);
        (first && !self.connections.contains(&key) && !self.aliases.contains_key(&key))
            .then_some((key, (flow.dst, flow.dport)))
    }

    /// Conntrack says packets from `translated` belong to the connection `original` (its
    /// original direction, before source NAT): they join that connection, whatever port the
    /// SNAT chose. Evidence, unlike [`Self::before_snat`]'s port match.
    pub fn follow_snat(&mut self, translated: HostPort, original: HostPort, o: &Observation) {
        if translated == original || self.connections.contains(&translated) {
            return;
        }
        let c = self.entry(original, o);
        c.snat_source.get_or_insert(translated.0);
        self.aliases.insert(translated, original);
    }
}
