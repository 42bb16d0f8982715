//! Istio's port catalogue (../shared/ISTIO.md): names for the ports of sidecars, ztunnel,
//! istiod and east-west gateways.

/// What kind of Istio component listens on a port, which decides what the port means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// The sidecar proxy (Envoy / pilot-agent) in a workload pod.
    Sidecar,
    /// The node proxy in ambient mode.
    Ztunnel,
    Istiod,
    /// A gateway (east-west gateways serve 15443 and expose 15012/15017).
    Gateway,
}

/// The name of `port` on `component`, or None when it is not an Istio port there.
pub fn port_name(component: Component, port: u16) -> Option<&'static str> {
    match component {
        Component::Sidecar => sidecar(port),
        Component::Ztunnel => match port {
            15000 => Some("admin"),
            15001 => Some("outbound-capture"),
            15006 => Some("inbound-plaintext"),
            15008 => Some("hbone"),
            15020 => Some("metrics"),
            15021 => Some("readiness"),
            _ => None,
        },
        Component::Istiod => istiod(port),
        Component::Gateway => match port {
            15443 => Some("eastwest-mtls"),
            15012 => Some("xds-tls"),
            15017 => Some("webhook"),
            15021 => Some("health"),
            15090 => Some("envoy-metrics"),
            _ => None,
        },
    }
}

fn sidecar(port: u16) -> Option<&'static str> {
    Some(match port {
        15000 => "envoy-admin",
        15001 => "outbound-capture",
        15002 => "failure-detection",
        15004 => "debug",
        15006 => "inbound-capture",
        15008 => "hbone",
        15020 => "merged-metrics",
        15021 => "health",
        15053 => "dns-capture",
        15090 => "envoy-metrics",
        _ => return None,
    })
}

fn istiod(port: u16) -> Option<&'static str> {
    Some(match port {
        15010 => "xds",
        15012 => "xds-tls",
        15014 => "monitoring",
        15017 => "webhook",
        // The webhook Service port (443 -> 15017).
        443 => "webhook",
        _ => return None,
    })
}

/// Ports that carry Istio control traffic (R5) wherever they appear.
pub fn is_control_port(port: u16) -> bool {
    matches!(port, 15010 | 15012 | 15014 | 15017)
}

/// Whether any Istio component uses `port` (no allocation: called per event).
pub fn is_istio_port(port: u16) -> bool {
    [Component::Sidecar, Component::Ztunnel, Component::Istiod, Component::Gateway]
        .iter()
        .any(|c| port_name(*c, port).is_some())
        && port != 443
}

/// Every port the catalogue knows (the kernel filter's "Istio ports" set).
pub fn all_ports() -> Vec<u16> {
    (15000..=15443).filter(|p| is_istio_port(*p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ports_by_component() {
        assert_eq!(port_name(Component::Istiod, 15012), Some("xds-tls"));
        assert_eq!(port_name(Component::Istiod, 443), Some("webhook"));
        assert_eq!(port_name(Component::Sidecar, 15008), Some("hbone"));
        assert_eq!(port_name(Component::Ztunnel, 15006), Some("inbound-plaintext"));
        assert_eq!(port_name(Component::Sidecar, 9080), None);
        assert_eq!(port_name(Component::Sidecar, 443), None, "443 means webhook only on istiod");
        let all = all_ports();
        for p in [15000, 15001, 15006, 15008, 15010, 15012, 15014, 15017, 15020, 15021, 15053, 15090, 15443] {
            assert!(all.contains(&p), "{p}");
        }
        assert!(!all.contains(&15003));
        assert!(is_istio_port(15012) && !is_istio_port(9080));
        assert!(!is_istio_port(443), "443 is istiod's webhook Service port, not an Istio port elsewhere");
    }
}
