//! What a namespace's routing says about one packet (read live by `observer`, via rtnetlink):
//! the hooks and interfaces the evaluator walks it through.

use super::eval::BridgePorts;

/// What the namespace's routes say about one packet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Route {
    /// The source is (or the packet starts in) this namespace: OUTPUT, not PREROUTING.
    pub src_local: bool,
    /// The destination is an address of this namespace: INPUT, not FORWARD.
    pub dst_local: bool,
    pub iif: Option<String>,
    pub oif: Option<String>,
    /// Both ends hang off one bridge and the bridge passes bridged packets to iptables
    /// (`net.bridge.bridge-nf-call-ip(6)tables`): netfilter sees the bridge as `iif` and `oif`.
    pub bridged: Option<BridgePorts>,
    /// ARPHRD_* hardware types of `iif` and `oif`.
    pub iif_type: Option<u16>,
    pub oif_type: Option<u16>,
    /// Whether the route back to the source leaves through `iif` (what `fib saddr . iif oif`
    /// and rp_filter check).
    pub rpf_ok: Option<bool>,
}
