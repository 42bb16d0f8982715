//! A webhook call that timed out, as Kubernetes records it in a Warning Event's message, e.g.
//! a ReplicaSet's `FailedCreate`:
//! `Error creating: Internal error occurred: failed calling webhook "namespace.sidecar-injector.istio.io":
//! failed to call webhook: Post "https://istiod.istio-system.svc:443/inject?timeout=10s": dial tcp
//! 10.244.2.10:15017: i/o timeout` (or `context deadline exceeded`, or `Client.Timeout exceeded`).
//!
//! Only timeouts are read: a refused connection or no route is an answer from somewhere, not
//! a silent loss. The call's target is the dialled address when the message has one (a pod IP
//! with endpoint routing, as managed control planes do, or a Service's cluster IP), else the
//! Service host of the URL (`NAME.NAMESPACE.svc[:PORT]`). [`targets`] turns it into the pod
//! addresses and ports behind it, from the inventory.

use std::{
    net::IpAddr,
    time::{Duration, SystemTime},
};

use observer::{
    diagnosis::{path::Path, Endpoint, Evidence, Finding, Kind, Mechanism, Requirement, Severity},
    inventory::{Inventory, Pod, Role},
};

/// The API server's default webhook timeout (admissionregistration.k8s.io/v1 `timeoutSeconds`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest webhook timeout the API allows.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the call went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Called {
    /// `dial tcp IP:PORT`.
    Address(IpAddr, u16),
    /// The URL's Service host (`NAME.NAMESPACE.svc`) and port (443 when absent).
    Service { namespace: String, name: String, port: u16 },
}

/// A webhook call that timed out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimedOut {
    /// The webhook's name (`namespace.sidecar-injector.istio.io`).
    pub webhook: String,
    pub called: Called,
    /// The call's timeout (the URL's `?timeout=`, else [`DEFAULT_TIMEOUT`]; at most [`MAX_TIMEOUT`]).
    pub timeout: Duration,
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let rest = &text[from..];
    Some(&rest[..rest.find(end)?])
}

/// Reads a timed-out webhook call from an Event message; None for anything else.
pub fn parse(message: &str) -> Option<TimedOut> {
    let webhook = between(message, "failed calling webhook \"", "\"")?.to_string();
    let timed_out = ["i/o timeout", "context deadline exceeded", "Client.Timeout exceeded", "deadline exceeded"]
        .iter()
        .any(|m| message.contains(m));
    if !timed_out {
        return None;
    }
    let url = between(message, "Post \"", "\"");
    let timeout = url
        .and_then(|u| between(&format!("{u}&"), "timeout=", "&").map(str::to_string))
        .and_then(|t| t.strip_suffix('s').and_then(|s| s.parse::<u64>().ok()))
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs)
        .min(MAX_TIMEOUT);
    let dialled = between(message, "dial tcp ", ": ").and_then(|a| a.parse::<std::net::SocketAddr>().ok());
    let called = match dialled {
        Some(addr) => Called::Address(addr.ip(), addr.port()),
        None => {
            let host = url?.strip_prefix("https://")?.split('/').next()?;
            let (host, port) = match host.rsplit_once(':') {
                Some((h, p)) => (h, p.parse().ok()?),
                None => (host, 443),
            };
            let mut parts = host.split('.');
            let (name, namespace) = (parts.next()?, parts.next()?);
            if parts.next() != Some("svc") {
                return None;
            }
            Called::Service { namespace: namespace.to_string(), name: name.to_string(), port }
        }
    };
    Some(TimedOut { webhook, called, timeout })
}

/// The pod addresses and ports the call was meant for: the dialled pod, or the endpoints of the
/// Service (by cluster IP or by name) with the Service port's target port.
pub fn targets(called: &Called, inventory: &Inventory) -> Vec<(IpAddr, u16)> {
    let service = match called {
        Called::Address(ip, port) => match inventory.service_by_cluster_ip(*ip) {
            Some(svc) => Some((svc, *port)),
            None => return vec![(*ip, *port)],
        },
        Called::Service { namespace, name, port } => {
            inventory.services.iter().find(|s| &s.namespace == namespace && &s.name == name).map(|s| (s, *port))
        }
    };
    let Some((svc, port)) = service else { return Vec::new() };
    let target = svc.ports.iter().find(|p| p.port == port).map_or(port, |p| p.target_port.unwrap_or(p.port));
    svc.endpoints.iter().map(|ip| (*ip, target)).collect()
}

/// The API server's addresses (`default/kubernetes` endpoints, with their target port).
pub fn apiserver(inventory: &Inventory) -> Vec<String> {
    let Some(svc) = inventory.services.iter().find(|s| s.is_apiserver()) else { return Vec::new() };
    let port = svc.ports.first().map(|p| p.target_port.unwrap_or(p.port));
    svc.endpoints
        .iter()
        .map(|ip| match (ip, port) {
            (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
            (a, Some(p)) => format!("{a}:{p}"),
            (a, None) => a.to_string(),
        })
        .collect()
}

/// A call that never reached this node's pod `pod` at `ip:port`: `count` occurrences in `window`.
pub struct Call<'a> {
    pub node: &'a str,
    pub pod: &'a Pod,
    pub ip: IpAddr,
    pub port: u16,
    pub count: u32,
    pub window: (SystemTime, SystemTime),
}

/// The R5 `control-plane-blocked` `silent` finding of a webhook call lost before the node: the
/// API server (`default/kubernetes`, its first address) -> the pod, with the `before-node` path.
pub fn finding(call: &Call<'_>, webhook: &str, inventory: &Inventory, apiserver: Vec<String>, path: Path) -> Finding {
    let mut dst = inventory.describe(call.ip, Some(call.port));
    dst.ip = Some(call.ip);
    dst.port = Some(call.port);
    let src = Endpoint {
        ip: apiserver
            .first()
            .and_then(|a| a.rsplit_once(':'))
            .and_then(|(h, _)| h.trim_matches(['[', ']']).parse::<IpAddr>().ok()),
        service: Some("default/kubernetes".into()),
        role: Some(Role::ApiServer),
        ..Endpoint::default()
    };
    let callers = if apiserver.is_empty() { "the API server".to_string() } else { apiserver.join(", ") };
    Finding {
        requirement: Requirement::R5,
        kind: Kind::ControlPlaneBlocked,
        mechanism: Mechanism::Silent,
        severity: Severity::Critical,
        src,
        dst,
        node: call.node.to_string(),
        evidence: Evidence {
            attempts: call.count,
            connections: call.count,
            first_seen: call.window.0,
            last_seen: call.window.1,
            ..Evidence::default()
        },
        culprit: None,
        remediation: format!(
            "webhook {webhook} timed out and no SYN of it reached node {}: allow TCP {} from the API server ({callers}) to {} in the firewall in front of the nodes (cloud firewall rule, security group, private-cluster control-plane firewall)",
            call.node,
            call.port,
            call.pod.key()
        ),
        path: Some(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIAL: &str = "Error creating: Internal error occurred: failed calling webhook \"namespace.sidecar-injector.istio.io\": failed to call webhook: Post \"https://istiod.istio-system.svc:443/inject?timeout=10s\": dial tcp 10.244.2.10:15017: i/o timeout";

    #[test]
    fn a_dial_timeout_names_the_webhook_the_address_and_the_timeout() {
        let t = parse(DIAL).expect("parsed");
        assert_eq!(t.webhook, "namespace.sidecar-injector.istio.io");
        assert_eq!(t.called, Called::Address("10.244.2.10".parse().expect("ip"), 15017));
        assert_eq!(t.timeout, Duration::from_secs(10));
    }

    #[test]
    fn a_deadline_without_a_dial_names_the_service() {
        let m = "Error creating: Internal error occurred: failed calling webhook \"rev.validation.istio.io\": failed to call webhook: Post \"https://istiod.istio-system.svc:443/validate?timeout=30s\": context deadline exceeded";
        let t = parse(m).expect("parsed");
        assert_eq!(t.called, Called::Service { namespace: "istio-system".into(), name: "istiod".into(), port: 443 });
        assert_eq!(t.timeout, Duration::from_secs(30));
    }

    #[test]
    fn the_call_is_followed_to_the_pods_behind_it_and_the_api_server_is_named() {
        let inv = Inventory::from_json(include_str!("../../../observer/tests/fixtures/lab-inventory.json"))
            .expect("inventory");
        let istiod: Vec<(IpAddr, u16)> = vec![("10.244.2.10".parse().expect("ip"), 15017)];
        let by_name = Called::Service { namespace: "istio-system".into(), name: "istiod".into(), port: 443 };
        assert_eq!(targets(&by_name, &inv), istiod, "Service port 443 -> targetPort 15017");
        let by_cluster_ip = Called::Address("10.96.0.10".parse().expect("ip"), 443);
        assert_eq!(targets(&by_cluster_ip, &inv), istiod);
        let by_pod = Called::Address("10.244.2.10".parse().expect("ip"), 15017);
        assert_eq!(targets(&by_pod, &inv), istiod);
        let unknown = Called::Service { namespace: "x".into(), name: "y".into(), port: 443 };
        assert!(targets(&unknown, &inv).is_empty());
        assert_eq!(apiserver(&inv), vec!["10.244.2.20:6443".to_string()]);
    }

    #[test]
    fn a_call_lost_before_the_node_is_an_r5_silent_finding_from_the_api_server() {
        use observer::diagnosis::flows::FlowReport;
        let inv = Inventory::from_json(include_str!("../../../observer/tests/fixtures/lab-inventory.json"))
            .expect("inventory");
        let ip: IpAddr = "10.244.2.10".parse().expect("ip");
        let pod = inv.pod_by_ip(ip).expect("istiod");
        let t = std::time::UNIX_EPOCH + Duration::from_secs(1_795_996_800);
        let seen = FlowReport { node: "node-b".into(), complete: true, ..FlowReport::default() };
        let path = observer::diagnosis::path::before_node("node-b", &seen, apiserver(&inv), "bookinfo/ev".into())
            .expect("before-node");
        let call = Call { node: "node-b", pod, ip, port: 15017, count: 2, window: (t, t + Duration::from_secs(16)) };
        let f = finding(&call, "namespace.sidecar-injector.istio.io", &inv, apiserver(&inv), path);
        assert_eq!(
            (f.requirement, f.kind, f.mechanism),
            (Requirement::R5, Kind::ControlPlaneBlocked, Mechanism::Silent)
        );
        assert_eq!(f.src.ip, Some("10.244.2.20".parse().expect("ip")));
        assert_eq!(f.src.service.as_deref(), Some("default/kubernetes"));
        assert_eq!(f.dst.pod.as_deref(), Some("istio-system/istiod-6c8d9f7b5-k9v3p"));
        assert_eq!((f.dst.port, f.dst.istio_port), (Some(15017), Some("webhook")));
        assert_eq!((f.evidence.attempts, f.evidence.first_seen), (2, t));
        assert!(f.culprit.is_none(), "nothing on a node decided it");
        assert!(f.remediation.contains("10.244.2.20:6443"), "{}", f.remediation);
        assert_eq!(f.path.map(|p| p.location), Some(observer::diagnosis::path::Location::BeforeNode));
    }

    #[test]
    fn refusals_and_other_messages_are_not_timeouts() {
        assert_eq!(parse(&DIAL.replace("i/o timeout", "connect: connection refused")), None);
        assert_eq!(parse("Back-off restarting failed container"), None);
        assert_eq!(parse("failed calling webhook \"x\": i/o timeout"), None, "no target at all");
    }
}
