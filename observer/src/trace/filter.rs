//! Trace filters that compose (every given filter must hold): pod, namespace, IP, verdict,
//! Istio ports, drop reason. Ports and addresses are also pushed into the kernel filter so a
//! narrow trace costs less; the rest is decided here on named observations.

use std::net::IpAddr;

use crate::{
    events::model::{Detail, Flow, Observation, TcpStackEvent},
    inventory::{istio_ports, Endpoint, Inventory},
    kernel::drop_reasons::DropReasons,
    loader::filter::{Cidr, KernelFilter},
};

pub use crate::cli::Verdict;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("--{flag} needs --inventory FILE (the inventory says which addresses a pod or namespace has)")]
    NeedsInventory { flag: &'static str },
    #[error("--pod {0}: no such pod in the inventory (give it as namespace/name)")]
    UnknownPod(String),
    #[error("--drop-reason {given}: not a drop reason of this kernel; valid: {valid}")]
    UnknownDropReason { given: String, valid: String },
    #[error("--istio with --port {ports:?}: none of these is an Istio port")]
    NoIstioPort { ports: Vec<u16> },
}

/// The userspace side of the filters.
#[derive(Debug, Default)]
pub struct TraceFilter {
    pods: Vec<String>,
    namespaces: Vec<String>,
    ips: Vec<IpAddr>,
    verdict: Verdict,
    istio: bool,
    /// Drop-reason numbers asked for (of the running kernel).
    drop_reasons: Vec<u32>,
}

/// What the user asked for on the command line.
pub struct FilterArgs<'a> {
    pub pods: &'a [String],
    pub namespaces: &'a [String],
    pub ips: &'a [IpAddr],
    pub ports: &'a [u16],
    pub cidrs: &'a [Cidr],
    pub verdict: Verdict,
    pub istio: bool,
    pub drop_reasons: &'a [String],
}

/// Builds the userspace filter and the kernel filter that narrows what reaches it.
pub fn build(
    args: &FilterArgs<'_>,
    inventory: Option<&Inventory>,
    reasons: &DropReasons,
) -> Result<(TraceFilter, KernelFilter), FilterError> {
    let mut cidrs: Vec<Cidr> = args.cidrs.to_vec();
    let host = Cidr::host;
    cidrs.extend(args.ips.iter().copied().map(host));
    for pod in args.pods {
        let inv = inventory.ok_or(FilterError::NeedsInventory { flag: "pod" })?;
        let found = inv.pods.iter().find(|p| &p.key() == pod).ok_or_else(|| FilterError::UnknownPod(pod.clone()))?;
        cidrs.extend(found.ips.iter().copied().map(host));
    }
    for ns in args.namespaces {
        let inv = inventory.ok_or(FilterError::NeedsInventory { flag: "namespace" })?;
        cidrs.extend(inv.pods.iter().filter(|p| &p.namespace == ns).flat_map(|p| p.ips.iter().copied().map(host)));
        cidrs.extend(
            inv.services.iter().filter(|s| &s.namespace == ns).flat_map(|s| s.cluster_ips.iter().copied().map(host)),
        );
    }
    let mut drop_reasons = Vec::new();
    for given in args.drop_reasons {
        let value = reasons.value(given).ok_or_else(|| FilterError::UnknownDropReason {
            given: given.clone(),
            valid: reasons.names().join(", "),
        })?;
        drop_reasons.push(value);
    }
    let ports: Vec<u16> = match (args.istio, args.ports.is_empty()) {
        (false, _) => args.ports.to_vec(),
        (true, true) => istio_ports::all_ports(),
        (true, false) => {
            let istio = istio_ports::all_ports();
            let both: Vec<u16> = args.ports.iter().copied().filter(|p| istio.contains(p)).collect();
            if both.is_empty() {
                return Err(FilterError::NoIstioPort { ports: args.ports.to_vec() });
            }
            both
        }
    };
    // Pods and namespaces are matched in userspace by name; the kernel gets their addresses
    // only as a pre-filter (it cannot tell a pod's traffic from its namespace's otherwise).
    let kernel = KernelFilter { ports, cidrs, ..Default::default() };
    let filter = TraceFilter {
        pods: args.pods.to_vec(),
        namespaces: args.namespaces.to_vec(),
        ips: args.ips.to_vec(),
        verdict: if drop_reasons.is_empty() { args.verdict } else { Verdict::Dropped },
        istio: args.istio,
        drop_reasons,
    };
    Ok((filter, kernel))
}

impl TraceFilter {
    pub fn matches(&self, o: &Observation) -> bool {
        let flows: Vec<&Flow> = o.flow.iter().chain(quoted(o)).collect();
        let ends = [o.src.as_ref(), o.dst.as_ref()];
        let verdict_ok = match self.verdict {
            Verdict::All => true,
            Verdict::Dropped => matches!(o.detail, Detail::Drop { .. }),
            Verdict::Rejected => match &o.detail {
                Detail::IcmpError { .. } => true,
                Detail::Packet { tcp_flags, .. } => tcp_flags.is_rst(),
                Detail::Tcp { event, .. } => *event == TcpStackEvent::SendReset,
                _ => false,
            },
        };
        let reason_ok = self.drop_reasons.is_empty()
            || matches!(&o.detail, Detail::Drop { drop_reason, .. } if self.drop_reasons.contains(&drop_reason.code));
        let ip_ok = self.ips.is_empty() || flows.iter().any(|f| self.ips.contains(&f.src) || self.ips.contains(&f.dst));
        let pod_ok = self.pods.is_empty()
            || ends.iter().flatten().any(|e| e.pod.as_ref().is_some_and(|p| self.pods.contains(p)));
        let ns_ok = self.namespaces.is_empty() || ends.iter().flatten().any(|e| self.in_namespaces(e));
        let istio_ok = !self.istio || flows.iter().any(|f| is_istio(f.sport) || is_istio(f.dport));
        verdict_ok && reason_ok && ip_ok && pod_ok && ns_ok && istio_ok
    }

    fn in_namespaces(&self, e: &Endpoint) -> bool {
        let ns_of = |key: &Option<String>| key.as_ref().and_then(|k| k.split_once('/')).map(|(ns, _)| ns.to_string());
        [ns_of(&e.pod), ns_of(&e.service)].iter().flatten().any(|ns| self.namespaces.contains(ns))
    }
}

fn quoted(o: &Observation) -> Option<&Flow> {
    match &o.detail {
        Detail::IcmpError { quoted, .. } => quoted.as_ref(),
        _ => None,
    }
}

fn is_istio(port: u16) -> bool {
    istio_ports::is_istio_port(port)
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::events::model::{Captured, DropReason, Hook, IcmpKind, Protocol, TcpFlags};

    const LAB: &str = include_str!("../../tests/fixtures/lab-inventory.json");

    fn obs(src: &str, sport: u16, dst: &str, dport: u16, detail: Detail, inv: &Inventory) -> Observation {
        let flow =
            Flow { protocol: Protocol(6), src: src.parse().expect("ip"), sport, dst: dst.parse().expect("ip"), dport };
        Observation {
            encap: None,
            time: UNIX_EPOCH,
            hook: Hook::TcIngress,
            ifindex: 1,
            interface: None,
            flow: Some(flow),
            detail,
            src: Some(inv.describe(flow.src, None)),
            dst: Some(inv.describe(flow.dst, Some(dport))),
            process: None,
        }
    }

    fn syn() -> Detail {
        Detail::Packet { tcp_flags: TcpFlags::SYN, tcp_seq: 1 }
    }

    fn drop(reason: &str) -> Detail {
        let reasons = DropReasons::from_pairs([(12, "NETFILTER_DROP"), (2, "NO_SOCKET")]);
        let code = reasons.value(reason).unwrap_or(0);
        Detail::Drop {
            drop_reason: DropReason::new(code, reason),
            location: "x".into(),
            netns: 1,
            culprit: None,
            quoted: None,
            packet: Captured::default(),
            solicited: None,
        }
    }

    fn args<'a>(pods: &'a [String], namespaces: &'a [String], ips: &'a [IpAddr], ports: &'a [u16]) -> FilterArgs<'a> {
        FilterArgs { pods, namespaces, ips, ports, cidrs: &[], verdict: Verdict::All, istio: false, drop_reasons: &[] }
    }

    #[test]
    fn filters_compose_and_push_addresses_and_ports_to_the_kernel() {
        let inv = Inventory::from_json(LAB).expect("inventory");
        let reasons = DropReasons::from_pairs([(12, "NETFILTER_DROP"), (3, "NO_SOCKET")]);
        let pods = ["bookinfo/productpage-v1-7d9f8c6b5-x2k4q".to_string()];
        let (f, k) = build(&args(&pods, &[], &[], &[]), Some(&inv), &reasons).expect("build");
        assert_eq!(
            k.cidrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["10.244.1.10/32", "fd00:10:244:1::a/128"]
        );
        let xds = obs("10.244.1.10", 40000, "10.244.2.10", 15012, syn(), &inv);
        let other = obs("10.244.1.11", 40000, "10.244.2.10", 15012, syn(), &inv);
        assert!(f.matches(&xds));
        assert!(!f.matches(&other));

        let namespaces = ["istio-system".to_string()];
        let (f, k) = build(&args(&[], &namespaces, &[], &[]), Some(&inv), &reasons).expect("build");
        assert!(k.cidrs.iter().any(|c| c.to_string() == "10.96.0.10/32"), "service IPs of the namespace too");
        assert!(f.matches(&xds) && f.matches(&other), "both talk to istiod");
        let app = obs("10.244.1.10", 40000, "10.244.2.11", 9080, syn(), &inv);
        assert!(!f.matches(&app));

        let mut a = args(&[], &[], &[], &[]);
        a.istio = true;
        let (f, k) = build(&a, Some(&inv), &reasons).expect("build");
        assert!(k.ports.contains(&15012) && !k.ports.contains(&9080));
        assert!(f.matches(&xds) && !f.matches(&app));

        let reason = ["netfilter_drop".to_string()];
        let mut a = args(&[], &[], &[], &[]);
        a.drop_reasons = &reason;
        let (f, _) = build(&a, Some(&inv), &reasons).expect("build");
        assert!(f.matches(&obs("10.244.1.10", 1, "10.244.2.10", 15012, drop("NETFILTER_DROP"), &inv)));
        assert!(!f.matches(&obs("10.244.1.10", 1, "10.244.2.10", 15012, drop("NO_SOCKET"), &inv)));
        assert!(!f.matches(&xds), "a drop reason implies --verdict dropped");

        let ips: [IpAddr; 1] = ["10.244.2.11".parse().expect("ip")];
        let (f, _) = build(&args(&[], &[], &ips, &[]), None, &reasons).expect("build");
        assert!(f.matches(&app) && !f.matches(&xds));
    }

    #[test]
    fn verdicts_select_drops_and_rejections() {
        let inv = Inventory::default();
        let mut a = args(&[], &[], &[], &[]);
        a.verdict = Verdict::Rejected;
        let (f, _) = build(&a, None, &DropReasons::default()).expect("build");
        let rst = obs(
            "10.0.0.2",
            80,
            "10.0.0.1",
            4000,
            Detail::Packet { tcp_flags: TcpFlags::RST | TcpFlags::ACK, tcp_seq: 0 },
            &inv,
        );
        let icmp = obs(
            "10.0.0.2",
            0,
            "10.0.0.1",
            0,
            Detail::IcmpError {
                icmp_type: 3,
                icmp_code: 13,
                meaning: IcmpKind::AdminProhibited,
                quoted: None,
                mtu: 0,
                packet: Captured::default(),
            },
            &inv,
        );
        assert!(f.matches(&rst) && f.matches(&icmp));
        assert!(!f.matches(&obs("10.0.0.1", 4000, "10.0.0.2", 80, syn(), &inv)));
        a.verdict = Verdict::Dropped;
        let (f, _) = build(&a, None, &DropReasons::default()).expect("build");
        assert!(!f.matches(&rst) && f.matches(&obs("10.0.0.1", 1, "10.0.0.2", 2, drop("NETFILTER_DROP"), &inv)));
    }

    #[test]
    fn bad_filter_values_name_what_is_valid() {
        let reasons = DropReasons::from_pairs([(12, "NETFILTER_DROP"), (3, "NO_SOCKET")]);
        let pods = ["ns/p".to_string()];
        assert_eq!(
            build(&args(&pods, &[], &[], &[]), None, &reasons).err(),
            Some(FilterError::NeedsInventory { flag: "pod" })
        );
        let inv = Inventory::from_json(LAB).expect("inventory");
        assert_eq!(
            build(&args(&pods, &[], &[], &[]), Some(&inv), &reasons).err(),
            Some(FilterError::UnknownPod("ns/p".into()))
        );
        let bad = ["FIREWALL".to_string()];
        let mut a = args(&[], &[], &[], &[]);
        a.drop_reasons = &bad;
        let err = build(&a, None, &reasons).err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(err, "--drop-reason FIREWALL: not a drop reason of this kernel; valid: NO_SOCKET, NETFILTER_DROP");
        let ports = [9080u16];
        let mut a = args(&[], &[], &[], &ports);
        a.istio = true;
        assert_eq!(build(&a, None, &reasons).err(), Some(FilterError::NoIstioPort { ports: vec![9080] }));
    }
}
