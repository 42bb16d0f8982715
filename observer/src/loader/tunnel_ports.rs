//! The UDP ports whose payload the kernel side parses as VXLAN or Geneve (`TUNNEL_PORTS`):
//! the well-known ones by default, or the set given in [`TUNNEL_PORTS_ENV`] (a CNI on a custom
//! port, e.g. Cilium's `tunnel-port`, Calico's `vxlanPort`).

use aya::{
    maps::{HashMap, MapError},
    Ebpf,
};
use observer_common::{
    event::{TUNNEL_GENEVE, TUNNEL_VXLAN},
    filter::{DEFAULT_TUNNEL_PORTS, MAX_TUNNEL_PORTS, TUNNEL_PORTS_MAP},
};

/// Environment variable replacing the default set: `PORT=vxlan|geneve`, comma-separated
/// (e.g. `8472=vxlan,6081=geneve`); empty disables UDP tunnel parsing.
pub const TUNNEL_PORTS_ENV: &str = "OBSERVER_TUNNEL_PORTS";

#[derive(Debug, thiserror::Error)]
pub enum TunnelPortsError {
    #[error(
        "{TUNNEL_PORTS_ENV}: `{0}` is not PORT=vxlan or PORT=geneve (e.g. {TUNNEL_PORTS_ENV}=4789=vxlan,6081=geneve)"
    )]
    Bad(String),
    #[error("{TUNNEL_PORTS_ENV}: {0} ports given, the kernel side holds at most {MAX_TUNNEL_PORTS}")]
    TooMany(usize),
    #[error("map `{TUNNEL_PORTS_MAP}` missing from the eBPF object (build mismatch)")]
    MissingMap,
    #[error("writing map `{TUNNEL_PORTS_MAP}`: {0}")]
    Map(#[from] MapError),
}

/// Parses a `PORT=kind,...` list into (port, `TUNNEL_*` kind) pairs.
pub fn parse(text: &str) -> Result<Vec<(u16, u8)>, TunnelPortsError> {
    let ports: Vec<(u16, u8)> = text
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let bad = || TunnelPortsError::Bad(item.to_string());
            let (port, kind) = item.split_once('=').ok_or_else(bad)?;
            let port: u16 = port.trim().parse().ok().filter(|p| *p != 0).ok_or_else(bad)?;
            let kind = match kind.trim().to_ascii_lowercase().as_str() {
                "vxlan" => TUNNEL_VXLAN,
                "geneve" => TUNNEL_GENEVE,
                _ => return Err(bad()),
            };
            Ok((port, kind))
        })
        .collect::<Result<_, _>>()?;
    if ports.len() > MAX_TUNNEL_PORTS as usize {
        return Err(TunnelPortsError::TooMany(ports.len()));
    }
    Ok(ports)
}

/// The configured set: [`TUNNEL_PORTS_ENV`] when set, else [`DEFAULT_TUNNEL_PORTS`].
pub fn configured() -> Result<Vec<(u16, u8)>, TunnelPortsError> {
    match std::env::var(TUNNEL_PORTS_ENV) {
        Ok(text) => parse(&text),
        Err(_) => Ok(DEFAULT_TUNNEL_PORTS.to_vec()),
    }
}

/// Writes `ports` into the kernel's `TUNNEL_PORTS` map.
pub fn apply(ebpf: &mut Ebpf, ports: &[(u16, u8)]) -> Result<(), TunnelPortsError> {
    let mut map: HashMap<_, u16, u8> =
        HashMap::try_from(ebpf.map_mut(TUNNEL_PORTS_MAP).ok_or(TunnelPortsError::MissingMap)?)?;
    for (port, kind) in ports {
        map.insert(port, kind, 0)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_port_lists_and_names_a_bad_item() {
        assert_eq!(parse("8472=vxlan, 6081=Geneve").ok(), Some(vec![(8472, TUNNEL_VXLAN), (6081, TUNNEL_GENEVE)]));
        assert_eq!(parse("").ok(), Some(vec![]));
        for bad in ["8472", "x=vxlan", "0=vxlan", "4789=gre", "70000=vxlan"] {
            let err = parse(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(&format!("`{bad}`")) && err.contains("PORT=vxlan"), "{bad}: {err}");
        }
        let many = (1..=17).map(|p| format!("{p}=vxlan")).collect::<Vec<_>>().join(",");
        assert!(matches!(parse(&many), Err(TunnelPortsError::TooMany(17))));
    }
}
