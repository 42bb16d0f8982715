//! The verify checklist: grouped by requirement, failures first, with the rule to change; or
//! one JSON object.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{
    matrix::{Destination, Source},
    paths::{StaticVerdict, Status},
    probe::ProbeResult,
};
use crate::diagnosis::Requirement;

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub requirement: Requirement,
    pub purpose: &'static str,
    pub src: Source,
    pub dst: Destination,
    /// The client reaches `dst` through its Service address (see [`super::matrix::RequiredFlow`]).
    #[serde(skip)]
    pub via_service: bool,
    /// `status`, `at`, `culprit`, `why`.
    #[serde(flatten)]
    pub verdict: StaticVerdict,
    /// With `--probe`: what a real handshake did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeResult>,
}

#[derive(Debug, Serialize)]
pub struct VerifyReport<'a> {
    pub node: &'a str,
    pub checks: &'a [Check],
    /// Ruleset reads that failed (a missing tool): checks may be incomplete.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

pub fn json(report: &VerifyReport<'_>) -> String {
    serde_json::to_string_pretty(report).unwrap_or_else(crate::json::error_object)
}

pub fn text(report: &VerifyReport<'_>) -> String {
    let count = |s: Status| report.checks.iter().filter(|c| c.verdict.status == s).count();
    let mut out = format!(
        "observer verify: node {} — {} required flows: {} pass, {} blocked, {} unknown\n",
        report.node,
        report.checks.len(),
        count(Status::Pass),
        count(Status::Blocked),
        count(Status::Unknown)
    );
    for problem in &report.problems {
        out.push_str(&format!("WARNING: {problem}\n"));
    }
    let mut by_req: BTreeMap<Requirement, Vec<&Check>> = BTreeMap::new();
    for c in report.checks {
        by_req.entry(c.requirement).or_default().push(c);
    }
    let mut groups: Vec<(Requirement, Vec<&Check>)> = by_req.into_iter().collect();
    groups.sort_by_key(|(r, checks)| (checks.iter().map(|c| c.verdict.status).min(), *r));
    for (req, mut checks) in groups {
        checks.sort_by_key(|c| c.verdict.status);
        out.push_str(&format!("\n{req:?}: {}\n", req.text()));
        for c in checks {
            let status = match c.verdict.status {
                Status::Blocked => "BLOCKED",
                Status::Unknown => "unknown",
                Status::Pass => "pass",
            };
            let src = c.src.pod.clone().unwrap_or_else(|| format!("{:?}", c.src.kind).to_lowercase());
            let dst = c.dst.pod.clone().or(c.dst.service.clone()).unwrap_or_else(|| c.dst.ip.to_string());
            let port = c.dst.istio_port.map_or(c.dst.port.to_string(), |n| format!("{} ({n})", c.dst.port));
            out.push_str(&format!(
                "  {status:<8} {}: {src} ({}) -> {dst} ({}):{port}\n",
                c.purpose, c.src.ip, c.dst.ip
            ));
            if let Some(culprit) = &c.verdict.culprit {
                // A block of the reply: the rule must let the destination's answers back.
                let reply = c.verdict.why.as_deref().is_some_and(|w| w.contains("SYN-ACK"));
                let what = if reply {
                    format!("the replies from {}:{} to {} are accepted", c.dst.ip, c.dst.port, c.src.ip)
                } else {
                    format!("TCP {} from {} to {} is accepted", c.dst.port, c.src.ip, c.dst.ip)
                };
                out.push_str(&format!(
                    "           rule: {} in {}\n           fix: change or remove that rule so {what}\n",
                    culprit.summary(),
                    c.verdict.at.as_deref().unwrap_or("?"),
                ));
            }
            if let Some(why) = &c.verdict.why {
                out.push_str(&format!("           why: {why}\n"));
            }
            if let Some(probe) = &c.probe {
                out.push_str(&format!("           probe: {}\n", probe.summary()));
            }
        }
    }
    out
}
