//! The publisher's input: typed finding updates. Whatever produces findings (today the adapter
//! over `diagnose`'s correlator in [`crate::adapter`]; later the engine of issue 12) hands them
//! over as [`FindingUpdate`]s; metrics, `/findings` and Kubernetes Events consume only these.

use observer::diagnosis::{Finding, Kind, Mechanism, Requirement};

/// What identifies one finding over time: the same blocked flow between the same workloads
/// (as `diagnose` aggregates them). Repeats of it update the finding, they make no new one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FindingKey {
    pub requirement: Requirement,
    pub kind: Kind,
    pub mechanism: Mechanism,
    /// Source workload, else pod, else IP.
    pub src: String,
    /// Destination service, else pod, else IP.
    pub dst: String,
    /// Destination port (0 when unknown).
    pub port: u16,
}

impl FindingKey {
    /// The key of `finding`.
    pub fn of(finding: &Finding) -> Self {
        let ip = |ip: &Option<std::net::IpAddr>| ip.map(|i| i.to_string()).unwrap_or_default();
        Self {
            requirement: finding.requirement,
            kind: finding.kind,
            mechanism: finding.mechanism,
            src: finding
                .src
                .workload
                .clone()
                .or_else(|| finding.src.pod.clone())
                .unwrap_or_else(|| ip(&finding.src.ip)),
            dst: finding.dst.service.clone().or_else(|| finding.dst.pod.clone()).unwrap_or_else(|| ip(&finding.dst.ip)),
            port: finding.dst.port.unwrap_or(0),
        }
    }
}

/// A change of the current findings. `New` and `Updated` carry the whole finding as it stands
/// (counts cumulative), so a consumer that missed an update is corrected by the next one.
#[derive(Clone, Debug)]
pub enum FindingUpdate {
    /// First seen.
    New(Finding),
    /// Seen again: counts and last-seen grew, the culprit may be more certain.
    Updated(Finding),
    /// Not seen for the clearing time: no longer current.
    Cleared(FindingKey),
}
