//! Stalls after the handshake: an established connection whose same segment is retransmitted
//! again and again (RTOs without progress, `tcp_retransmit_skb` after the handshake) with no
//! drop on the node, and when that is a PMTU blackhole.

use std::collections::BTreeMap;

use super::Connection;
use crate::model::{Encapsulation, Segment};

/// Retransmissions of the same segment before the connection is called stalled (the initial
/// RTO and two backoffs: about 1.4 s on a LAN).
pub const STALL_RETRANSMITS: u32 = 3;

/// IPv4 packets of this size or more are "full-size" candidates for a PMTU blackhole (RFC 791's
/// minimum datagram every host must accept); IPv6: the minimum link MTU (RFC 8200).
const MIN_MTU_V4: u32 = 576;
const MIN_MTU_V6: u32 = 1280;

/// What a stalled established connection shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stall {
    /// Retransmissions of the same sequence number (the most repeated one).
    pub retransmits: u32,
    /// The largest retransmitted skb (payload, sequence, MSS), when the kernel told.
    pub segment: Option<Segment>,
    /// Bytes of the largest retransmitted packet on the wire (payload + IP + minimal TCP header).
    pub packet_bytes: Option<u32>,
    /// MTUs of this node's interfaces the connection's packets crossed.
    pub path_mtus: BTreeMap<String, u32>,
    /// The packets are larger than an MTU known on this node's path.
    pub exceeds_known_mtu: bool,
    /// An ICMP fragmentation-needed / packet-too-big quoting the flow was seen.
    pub fragmentation_needed_seen: bool,
    /// The verdict: large packets lost without a PMTU signal (see [`Connection::outcome`]).
    pub pmtu_blackhole: bool,
    /// The connection rides a tunnel: what its retransmitted packets become on the underlay.
    pub tunnel: Option<TunnelPath>,
}

/// A stalled connection's tunnel: the inner packets become larger outer ones on the uplink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelPath {
    pub encap: Encapsulation,
    /// The node's tunnel device the inner packets crossed, and its MTU, when known.
    pub device: Option<(String, Option<u32>)>,
    /// Bytes the encapsulation adds (the minimum for its kind and outer family).
    pub overhead: u32,
}

impl Connection {
    /// The stall of an established connection: the same sequence number retransmitted at least
    /// [`STALL_RETRANSMITS`] times. A PMTU blackhole when no fragmentation-needed came back and
    /// the retransmitted packets are larger than an MTU this node knows on the path, or are
    /// full-size (payload = the sender's MSS, at least the protocol's minimum MTU) while the
    /// handshake's small packets passed: a hop beyond the node with a smaller MTU drops them
    /// and its ICMP is filtered.
    pub(super) fn stall(&self) -> Option<Stall> {
        let retransmits = self.retransmitted_seqs.iter().map(|(_, n)| *n).max()?;
        if retransmits < STALL_RETRANSMITS {
            return None;
        }
        let v6 = self.client.0.is_ipv6();
        let headers = if v6 { 40 + 20 } else { 20 + 20 };
        let packet_bytes = self.largest_retransmit.map(|s| s.largest_packet_payload() + headers);
        let lowest = self.path_mtus.values().copied().min();
        let exceeds_known_mtu = matches!((packet_bytes, lowest), (Some(p), Some(m)) if p > m);
        let full_size = self.largest_retransmit.is_some_and(|s| s.mss > 0 && s.largest_packet_payload() >= s.mss)
            && packet_bytes.is_some_and(|p| p >= if v6 { MIN_MTU_V6 } else { MIN_MTU_V4 });
        // A PMTU signal only explains the loss when the sender had not yet obeyed it: packets no
        // larger than the announced MTU still lost mean a smaller hop beyond, silent.
        let obeyed = matches!((packet_bytes, self.pmtu_signal_mtu), (Some(p), Some(m)) if p <= m);
        // Oriented as the lost segments travel (the server's back to the client, or the client's).
        let oriented = self.tunnel.map(|mut e| {
            if self.server_retransmits {
                (e.outer_src, e.outer_dst) = (e.outer_dst, e.outer_src);
            }
            e
        });
        let tunnel = oriented.map(|encap| TunnelPath {
            encap,
            device: self.tunnel_device.clone().map(|d| {
                let mtu = self.path_mtus.get(&d).copied();
                (d, mtu)
            }),
            overhead: encap.tunnel.overhead(encap.outer_src.is_ipv6()),
        });
        Some(Stall {
            retransmits,
            segment: self.largest_retransmit,
            packet_bytes,
            path_mtus: self.path_mtus.clone(),
            exceeds_known_mtu,
            fragmentation_needed_seen: self.pmtu_signal,
            pmtu_blackhole: (!self.pmtu_signal || obeyed) && (exceeds_known_mtu || full_size),
            tunnel,
        })
    }

    /// Keeps the smallest MTU a fragmentation-needed / packet-too-big announced.
    pub(super) fn note_pmtu_mtu(&mut self, mtu: Option<u32>) {
        if let Some(m) = mtu {
            self.pmtu_signal_mtu = Some(self.pmtu_signal_mtu.map_or(m, |old| old.min(m)));
        }
    }

    pub(super) fn note_retransmit(&mut self, segment: Option<Segment>) {
        self.established_retransmits += 1;
        let Some(segment) = segment else { return };
        if self.largest_retransmit.is_none_or(|l| segment.largest_packet_payload() > l.largest_packet_payload()) {
            self.largest_retransmit = Some(segment);
        }
        match self.retransmitted_seqs.iter_mut().find(|(seq, _)| *seq == segment.seq) {
            Some((_, n)) => *n += 1,
            None => {
                if self.retransmitted_seqs.len() >= 8 {
                    self.retransmitted_seqs.remove(0);
                }
                self.retransmitted_seqs.push((segment.seq, 1));
            }
        }
    }
}
