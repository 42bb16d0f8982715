//! Writing the kernel-side filter (`observer_common::filter`): watched ports and CIDRs.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use ipnet::IpNet;

use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapError},
    Ebpf,
};
use observer_common::filter::{
    FilterConfig, CAPTURE_HEADERS, CAPTURE_PACKET, FILTER_CIDRS, FILTER_CONFIG_MAP, FILTER_EITHER, FILTER_PORTS,
    MAX_WATCHED_CIDRS, MAX_WATCHED_PORTS, WATCHED_PORTS_MAP, WATCHED_V4_MAP, WATCHED_V6_MAP,
};

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("`{0}` is not a CIDR: expected ADDRESS/PREFIX such as 10.244.0.0/16 or fd00::/8 (or a single address)")]
    BadCidr(String),
    #[error("too many {what}: {count} given, the kernel filter holds at most {max}")]
    TooMany { what: &'static str, count: usize, max: u32 },
    #[error("map `{0}` missing from the eBPF object (build mismatch)")]
    MissingMap(&'static str),
    #[error("writing map `{name}`: {source}")]
    Map { name: &'static str, source: MapError },
}

/// An address prefix (ipnet's), as the command line gives it: `ADDRESS/PREFIX` or a single
/// address (a host prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr(pub IpNet);

impl Cidr {
    /// The host prefix of one address (/32 or /128).
    pub fn host(ip: IpAddr) -> Self {
        Self(IpNet::from(ip))
    }

    pub fn addr(&self) -> IpAddr {
        self.0.addr()
    }

    pub fn prefix(&self) -> u8 {
        self.0.prefix_len()
    }
}

impl FromStr for Cidr {
    type Err = FilterError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || FilterError::BadCidr(s.to_string());
        match s.parse::<IpNet>() {
            Ok(net) => Ok(Self(net)),
            Err(_) if !s.contains('/') => s.parse::<IpAddr>().map(Self::host).map_err(|_| bad()),
            Err(_) => Err(bad()),
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What the kernel reports: everything (both lists empty), or flows touching a watched port
/// and/or a watched prefix (both must hold unless `either`); and how much of a dropped or
/// ICMP-error packet it copies out (headers only unless `capture_payload`, e.g. for `--pcap`).
#[derive(Clone, Debug, Default)]
pub struct KernelFilter {
    pub ports: Vec<u16>,
    pub cidrs: Vec<Cidr>,
    pub either: bool,
    pub capture_payload: bool,
}

impl KernelFilter {
    /// What the kernel side would decide for this observation's flow (observer-ebpf's
    /// `filter::wanted`), for a replay: events without a flow pass.
    pub fn passes(&self, o: &observer_core::model::Observation) -> bool {
        let Some(flow) = o.flow else { return true };
        let (by_port, by_cidr) = (!self.ports.is_empty(), !self.cidrs.is_empty());
        let port_ok = || [flow.sport, flow.dport].iter().any(|p| *p != 0 && self.ports.contains(p));
        let cidr_ok = || self.cidrs.iter().any(|c| c.0.contains(&flow.src) || c.0.contains(&flow.dst));
        if by_port && by_cidr && self.either {
            port_ok() || cidr_ok()
        } else {
            (!by_port || port_ok()) && (!by_cidr || cidr_ok())
        }
    }

    pub fn flags(&self) -> u32 {
        let mut flags = 0;
        if !self.ports.is_empty() {
            flags |= FILTER_PORTS;
        }
        if !self.cidrs.is_empty() {
            flags |= FILTER_CIDRS;
        }
        if self.either {
            flags |= FILTER_EITHER;
        }
        flags
    }

    /// Fills the maps, then switches the mode on (so no half-written filter is ever in force).
    pub fn apply(&self, ebpf: &mut Ebpf) -> Result<(), FilterError> {
        if self.ports.len() > MAX_WATCHED_PORTS as usize {
            return Err(FilterError::TooMany { what: "ports", count: self.ports.len(), max: MAX_WATCHED_PORTS });
        }
        let (v4, v6): (Vec<&Cidr>, Vec<&Cidr>) = self.cidrs.iter().partition(|c| c.addr().is_ipv4());
        for (what, list) in [("IPv4 CIDRs", &v4), ("IPv6 CIDRs", &v6)] {
            if list.len() > MAX_WATCHED_CIDRS as usize {
                return Err(FilterError::TooMany { what, count: list.len(), max: MAX_WATCHED_CIDRS });
            }
        }
        let map_err = |name| move |source| FilterError::Map { name, source };
        let mut ports: HashMap<_, u16, u8> =
            HashMap::try_from(ebpf.map_mut(WATCHED_PORTS_MAP).ok_or(FilterError::MissingMap(WATCHED_PORTS_MAP))?)
                .map_err(map_err(WATCHED_PORTS_MAP))?;
        for port in &self.ports {
            ports.insert(port, 1, 0).map_err(map_err(WATCHED_PORTS_MAP))?;
        }
        let mut trie4: LpmTrie<_, [u8; 4], u8> =
            LpmTrie::try_from(ebpf.map_mut(WATCHED_V4_MAP).ok_or(FilterError::MissingMap(WATCHED_V4_MAP))?)
                .map_err(map_err(WATCHED_V4_MAP))?;
        for c in &v4 {
            let IpAddr::V4(a) = c.addr() else { continue };
            trie4
                .insert(&Key::new(c.prefix().into(), masked_v4(a, c.prefix())), 1, 0)
                .map_err(map_err(WATCHED_V4_MAP))?;
        }
        let mut trie6: LpmTrie<_, [u8; 16], u8> =
            LpmTrie::try_from(ebpf.map_mut(WATCHED_V6_MAP).ok_or(FilterError::MissingMap(WATCHED_V6_MAP))?)
                .map_err(map_err(WATCHED_V6_MAP))?;
        for c in &v6 {
            let IpAddr::V6(a) = c.addr() else { continue };
            trie6
                .insert(&Key::new(c.prefix().into(), masked_v6(a, c.prefix())), 1, 0)
                .map_err(map_err(WATCHED_V6_MAP))?;
        }
        let mut config: Array<_, FilterConfig> =
            Array::try_from(ebpf.map_mut(FILTER_CONFIG_MAP).ok_or(FilterError::MissingMap(FILTER_CONFIG_MAP))?)
                .map_err(map_err(FILTER_CONFIG_MAP))?;
        let capture = if self.capture_payload { CAPTURE_PACKET } else { CAPTURE_HEADERS };
        config.set(0, FilterConfig { flags: self.flags(), capture }, 0).map_err(map_err(FILTER_CONFIG_MAP))
    }
}

fn masked_v4(a: Ipv4Addr, prefix: u8) -> [u8; 4] {
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) };
    (u32::from(a) & mask).to_be_bytes()
}

fn masked_v6(a: Ipv6Addr, prefix: u8) -> [u8; 16] {
    let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix)) };
    (u128::from(a) & mask).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cidrs_and_rejects_bad_ones_by_name() {
        assert_eq!("10.244.0.0/16".parse::<Cidr>().expect("v4").to_string(), "10.244.0.0/16");
        assert_eq!("fd00::/8".parse::<Cidr>().expect("v6").prefix(), 8);
        assert_eq!("10.96.0.1".parse::<Cidr>().expect("host").prefix(), 32);
        for bad in ["10.244.0.0/33", "nope", "10.0.0.0/x", "fd00::/129", ""] {
            let err = bad.parse::<Cidr>().expect_err(bad).to_string();
            assert!(err.contains(&format!("`{bad}` is not a CIDR")), "{err}");
        }
    }

    #[test]
    fn masks_host_bits_and_sets_flags() {
        assert_eq!(masked_v4(Ipv4Addr::new(10, 244, 1, 10), 16), [10, 244, 0, 0]);
        assert_eq!(masked_v4(Ipv4Addr::new(10, 244, 1, 10), 0), [0, 0, 0, 0]);
        assert_eq!(masked_v6("fd00:10:244:1::a".parse().expect("v6"), 64)[..8], [0xfd, 0, 0, 0x10, 0x02, 0x44, 0, 1]);
        let f = KernelFilter { ports: vec![15012], ..Default::default() };
        assert_eq!(f.flags(), FILTER_PORTS);
        assert_eq!(KernelFilter::default().flags(), 0);
    }
}
