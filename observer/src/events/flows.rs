//! Reading the kernel's per-flow handshake state (`FLOWS` LRU map).

use aya::{
    maps::{HashMap, MapError},
    Ebpf,
};
use observer_common::{event::FlowState, maps::FLOWS_MAP, FlowTuple};

use super::{model::Flow, wire};

#[derive(Debug, thiserror::Error)]
pub enum FlowsError {
    #[error("map `{FLOWS_MAP}` missing from the eBPF object (build mismatch)")]
    Missing,
    #[error("reading map `{FLOWS_MAP}`: {0}")]
    Map(#[from] MapError),
}

/// Handshakes the kernel tracked: how many were answered (a SYN-ACK or RST came back at some
/// hook) and which were not.
#[derive(Debug, Default)]
pub struct HandshakeSummary {
    pub tracked: usize,
    pub answered: usize,
    /// Unanswered flows, oldest first.
    pub unanswered: Vec<(Flow, FlowState)>,
}

pub fn handshake_summary(ebpf: &Ebpf) -> Result<HandshakeSummary, FlowsError> {
    let map = ebpf.map(FLOWS_MAP).ok_or(FlowsError::Missing)?;
    let flows: HashMap<_, FlowTuple, FlowState> = HashMap::try_from(map)?;
    let mut entries = Vec::new();
    for item in flows.iter() {
        entries.push(item?);
    }
    Ok(summarize(entries))
}

/// Pure part of [`handshake_summary`].
pub fn summarize(entries: impl IntoIterator<Item = (FlowTuple, FlowState)>) -> HandshakeSummary {
    let mut summary = HandshakeSummary::default();
    for (key, state) in entries {
        summary.tracked += 1;
        if state.synack_packets > 0 || state.rst_packets > 0 {
            summary.answered += 1;
        } else if let Some(flow) = wire::flow(&key) {
            summary.unanswered.push((flow, state));
        }
    }
    summary.unanswered.sort_by_key(|(_, s)| s.first_syn_ns);
    summary
}

#[cfg(test)]
mod tests {
    use observer_common::event::{FAMILY_IPV4, PROTO_TCP};

    use super::*;

    fn key(sport: u16) -> FlowTuple {
        let mut t = FlowTuple { family: FAMILY_IPV4, protocol: PROTO_TCP, sport, dport: 15012, ..Default::default() };
        t.saddr[..4].copy_from_slice(&[10, 244, 1, 10]);
        t.daddr[..4].copy_from_slice(&[10, 244, 2, 10]);
        t
    }

    #[test]
    fn tells_answered_from_unanswered_oldest_first() {
        let state = |first, synacks, rsts| FlowState {
            first_syn_ns: first,
            last_syn_ns: first,
            syn_packets: 3,
            synack_packets: synacks,
            rst_packets: rsts,
            syn_hooks: 2,
        };
        let summary = summarize([
            (key(1), state(30, 0, 0)),
            (key(2), state(10, 1, 0)),
            (key(3), state(20, 0, 0)),
            (key(4), state(5, 0, 1)),
        ]);
        assert_eq!((summary.tracked, summary.answered), (4, 2));
        let ports: Vec<u16> = summary.unanswered.iter().map(|(f, _)| f.sport).collect();
        assert_eq!(ports, vec![3, 1]);
    }
}
