//! Aggregating findings and printing the report (text grouped by requirement, or one JSON
//! object).

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Finding, Kind, Mechanism, Requirement};

/// What findings are aggregated by: (source workload or pod or address, destination service
/// or pod or address, port, mechanism, kind).
pub type FindingKey = (String, String, u16, Mechanism, Kind);

/// The aggregation key of a finding.
pub fn key(f: &Finding) -> FindingKey {
    let src = f.src.workload.clone().or_else(|| f.src.pod.clone()).unwrap_or_else(|| ip(&f.src.ip));
    let dst = f.dst.service.clone().or_else(|| f.dst.pod.clone()).unwrap_or_else(|| ip(&f.dst.ip));
    (src, dst, f.dst.port.unwrap_or(0), f.mechanism, f.kind)
}

/// Folds `f` (same key) into `g`: attempts and connections add up, first/last seen widen, the
/// most certain culprit stays.
pub fn absorb(g: &mut Finding, f: Finding) {
    g.evidence.attempts += f.evidence.attempts;
    g.evidence.connections += f.evidence.connections;
    if f.evidence.first_seen < g.evidence.first_seen {
        g.evidence.first_seen = f.evidence.first_seen;
    }
    if f.evidence.last_seen > g.evidence.last_seen {
        g.evidence.last_seen = f.evidence.last_seen;
    }
    for line in f.evidence.icmp_errors_dropped {
        if !g.evidence.icmp_errors_dropped.contains(&line)
            && g.evidence.icmp_errors_dropped.len() < super::classify::MAX_ICMP_DROPS
        {
            g.evidence.icmp_errors_dropped.push(line);
        }
    }
    if f.culprit.as_ref().map(|c| c.confidence) > g.culprit.as_ref().map(|c| c.confidence) {
        g.culprit = f.culprit;
    }
    if g.path.is_none() {
        g.path = f.path;
    }
}

/// Merges findings of the same [`FindingKey`] ([`absorb`]). Most severe first.
pub fn aggregate(findings: Vec<Finding>) -> Vec<Finding> {
    let mut groups: BTreeMap<FindingKey, Finding> = BTreeMap::new();
    for f in findings {
        match groups.entry(key(&f)) {
            std::collections::btree_map::Entry::Occupied(mut g) => absorb(g.get_mut(), f),
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(f);
            }
        }
    }
    sorted(groups.into_values().collect())
}

/// Most severe first, then by requirement, then oldest first.
pub fn sorted(mut out: Vec<Finding>) -> Vec<Finding> {
    out.sort_by(|a, b| {
        (a.severity, a.requirement, &a.evidence.first_seen).cmp(&(b.severity, b.requirement, &b.evidence.first_seen))
    });
    out
}

fn ip(ip: &Option<std::net::IpAddr>) -> String {
    ip.map(|i| i.to_string()).unwrap_or_default()
}

#[derive(Debug, Serialize)]
pub struct Report<'a> {
    pub node: &'a str,
    pub findings: &'a [Finding],
    pub stats: Stats,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    pub connections: usize,
    pub established: usize,
    pub refused_by_application: usize,
    pub unresolved: usize,
    pub events: u64,
    pub lost_events: u64,
    /// NETFILTER_DROP drops whose culprit rule was not looked up (too many were waiting).
    pub drops_not_attributed: u64,
    pub duration_secs: f64,
}

pub fn json(report: &Report<'_>) -> String {
    serde_json::to_string_pretty(report).unwrap_or_else(crate::json::error_object)
}

pub fn text(report: &Report<'_>) -> String {
    let mut out = String::new();
    let s = &report.stats;
    out.push_str(&format!(
        "observer diagnose: node {} — {} connections seen ({} established, {} refused by the application, {} unresolved), {} findings\n",
        report.node, s.connections, s.established, s.refused_by_application, s.unresolved, report.findings.len()
    ));
    if s.lost_events > 0 {
        out.push_str(&format!(
            "WARNING: {} events were lost (ring buffer full): the report may miss evidence\n",
            s.lost_events
        ));
    }
    if s.drops_not_attributed > 0 {
        out.push_str(&format!(
            "WARNING: {} netfilter drops were reported without their culprit rule (too many were waiting for attribution)\n",
            s.drops_not_attributed
        ));
    }
    let mut by_req: BTreeMap<Requirement, Vec<&Finding>> = BTreeMap::new();
    for f in report.findings {
        by_req.entry(f.requirement).or_default().push(f);
    }
    let mut reqs: Vec<(Requirement, Vec<&Finding>)> = by_req.into_iter().collect();
    reqs.sort_by_key(|(r, fs)| (fs.iter().map(|f| f.severity).min(), *r));
    for (req, findings) in reqs {
        out.push_str(&format!("\n{req:?}: {}\n", req.text()));
        for f in findings {
            let src = f.src.pod.clone().or_else(|| f.src.workload.clone()).unwrap_or_else(|| ip(&f.src.ip));
            let dst = f.dst.service.clone().or_else(|| f.dst.pod.clone()).unwrap_or_else(|| ip(&f.dst.ip));
            let port = f
                .dst
                .istio_port
                .map_or(format!("{}", f.dst.port.unwrap_or(0)), |n| format!("{} ({n})", f.dst.port.unwrap_or(0)));
            out.push_str(&format!(
                "  [{}] {} {}: {src} -> {dst}:{port}\n",
                serde_plain(&f.severity),
                serde_plain(&f.kind),
                serde_plain(&f.mechanism)
            ));
            let e = &f.evidence;
            let mut facts = vec![format!(
                "{} attempts over {} connections, {} .. {}",
                e.attempts,
                e.connections,
                crate::time::rfc3339(e.first_seen),
                crate::time::rfc3339(e.last_seen)
            )];
            if let Some(r) = &e.drop_reason {
                facts.push(format!(
                    "drop reason {r} at {} ({} {}, netns {})",
                    e.location.as_deref().unwrap_or("?"),
                    e.hook.unwrap_or("?"),
                    e.interface.as_deref().unwrap_or("-"),
                    e.netns.unwrap_or(0)
                ));
            }
            if let Some(i) = e.icmp {
                facts.push(format!("ICMP {i}"));
            }
            if let Some(st) = &e.stall {
                let mtus: Vec<String> = st.path_mtus.iter().map(|(i, m)| format!("{i} {m}")).collect();
                facts.push(format!(
                    "{} retransmissions of the same segment; largest packet {} bytes (payload {}, MSS {}); MTUs on this node's path: {}; fragmentation-needed seen: {}",
                    st.retransmits,
                    st.packet_bytes.map_or("?".into(), |b| b.to_string()),
                    st.payload_bytes.map_or("?".into(), |b| b.to_string()),
                    st.mss.map_or("?".into(), |b| b.to_string()),
                    if mtus.is_empty() { "unknown".to_string() } else { mtus.join(", ") },
                    if st.fragmentation_needed_seen { "yes" } else { "no" }
                ));
            }
            if let Some(t) = &e.tunnel {
                facts.push(format!("tunnel {t}"));
            }
            if let Some(t) = e.stall.as_ref().and_then(|st| st.tunnel.as_ref()) {
                facts.push(format!(
                    "over {} {} -> {}: device {} (MTU {}), outer packets {} bytes ({} of encapsulation)",
                    t.tunnel.as_str(),
                    t.outer_src,
                    t.outer_dst,
                    t.device.as_deref().unwrap_or("?"),
                    t.mtu.map_or("?".into(), |m| m.to_string()),
                    t.outer_packet_bytes.map_or("?".into(), |b| b.to_string()),
                    t.overhead
                ));
            }
            for d in &e.icmp_errors_dropped {
                facts.push(format!("ICMP error dropped on the node: {d}"));
            }
            out.push_str(&format!("      evidence: {}\n", facts.join("; ")));
            if let Some(c) = &f.culprit {
                out.push_str(&format!("      culprit: {}\n", c.summary()));
            }
            out.push_str(&format!("      fix: {}\n", f.remediation));
        }
    }
    if report.findings.is_empty() {
        out.push_str("\nno infrastructure finding: nothing seen on this node breaks Istio's requirements\n");
    }
    out
}

/// The kebab-case name serde gives a unit enum value.
fn serde_plain<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}
