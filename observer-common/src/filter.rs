//! The kernel-side filter: which packets, drops, connects and socket events are worth an event.
//! Userspace writes [`FilterConfig`] into the one-slot `FILTER_CONFIG` array and fills the
//! port set and CIDR tries; a narrow filter costs less (fewer ring-buffer records).

/// Report only flows with a watched port (either end) in `WATCHED_PORTS`.
pub const FILTER_PORTS: u32 = 1;
/// Report only flows with an address (either end) inside a `WATCHED_V4`/`WATCHED_V6` prefix.
pub const FILTER_CIDRS: u32 = 2;
/// With both: either condition is enough (default: both must hold).
pub const FILTER_EITHER: u32 = 4;

/// Packet bytes copied into drop and ICMP-error events: the headers only (IP, transport, and
/// for ICMP errors the quoted IP header and its first 8 bytes). The default: no payload
/// leaves the kernel unless asked.
pub const CAPTURE_HEADERS: u32 = 0;
/// Packet bytes copied: up to [`crate::event::CAPTURE_BYTES`] from the IP header, payload
/// included (`trace --pcap`).
pub const CAPTURE_PACKET: u32 = 1;

/// One-slot array value. `flags == 0` reports everything the hooks look at (tracing).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilterConfig {
    pub flags: u32,
    /// [`CAPTURE_HEADERS`] or [`CAPTURE_PACKET`].
    pub capture: u32,
}

pub const FILTER_CONFIG_MAP: &str = "FILTER_CONFIG";
pub const WATCHED_PORTS_MAP: &str = "WATCHED_PORTS";
pub const WATCHED_V4_MAP: &str = "WATCHED_V4";
pub const WATCHED_V6_MAP: &str = "WATCHED_V6";
/// Capacity of the port set and of each CIDR trie.
pub const MAX_WATCHED_PORTS: u32 = 1024;
pub const MAX_WATCHED_CIDRS: u32 = 256;

/// UDP destination ports (host order) whose payload is parsed as an encapsulation header:
/// port -> `TUNNEL_VXLAN` or `TUNNEL_GENEVE` (`crate::event`). Filled by userspace at load
/// time (defaults: [`DEFAULT_TUNNEL_PORTS`]); a port not in it is plain UDP.
pub const TUNNEL_PORTS_MAP: &str = "TUNNEL_PORTS";
/// Capacity of [`TUNNEL_PORTS_MAP`].
pub const MAX_TUNNEL_PORTS: u32 = 16;
/// The well-known encapsulation ports: VXLAN's IANA port 4789 (Calico VXLAN, Cilium), the Linux
/// kernel's and flannel's 8472, Geneve's 6081.
pub const DEFAULT_TUNNEL_PORTS: [(u16, u8); 3] =
    [(4789, crate::event::TUNNEL_VXLAN), (8472, crate::event::TUNNEL_VXLAN), (6081, crate::event::TUNNEL_GENEVE)];
