//! Test helpers: findings as the classifier makes them.

use std::time::{Duration, UNIX_EPOCH};

use observer::diagnosis::{Endpoint, Evidence, Finding, Kind, Mechanism, Requirement, Severity};

/// One connection's finding: a sidecar pod's xDS connection to istiod dropped by netfilter.
pub fn xds_drop(client_port: u16) -> Finding {
    Finding {
        requirement: Requirement::R5,
        kind: Kind::ControlPlaneBlocked,
        mechanism: Mechanism::Dropped,
        severity: Severity::Critical,
        src: Endpoint {
            ip: Some("10.244.1.9".parse().expect("ip")),
            port: Some(client_port),
            pod: Some("shop/cart-1".into()),
            workload: Some("shop/cart".into()),
            service: None,
            istio_port: None,
            ..Endpoint::default()
        },
        dst: Endpoint {
            ip: Some("10.96.0.10".parse().expect("ip")),
            port: Some(15012),
            pod: None,
            workload: Some("istio-system/istiod".into()),
            service: Some("istio-system/istiod".into()),
            istio_port: Some("xds-tls"),
            ..Endpoint::default()
        },
        node: "node-a".into(),
        evidence: Evidence {
            drop_reason: Some("NETFILTER_DROP".into()),
            hook: Some("kfree_skb"),
            attempts: 1,
            connections: 1,
            // 2026-11-30T00:00:00Z
            first_seen: UNIX_EPOCH + Duration::from_secs(1_795_996_800),
            last_seen: UNIX_EPOCH + Duration::from_secs(1_795_996_800),
            ..Evidence::default()
        },
        culprit: None,
        remediation: "allow TCP 15012 from the pod CIDR to istiod".into(),
        path: None,
    }
}
