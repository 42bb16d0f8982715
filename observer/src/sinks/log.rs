//! Finding updates as log lines (stderr, `tracing`): an operator watching sees a blocked attempt
//! within moments of it, long before the report.

use observer_core::diagnosis::FindingUpdate;
use tracing::info;

use super::Sink;

/// Logs every finding update: `finding: KIND MECHANISM SRC -> DST:PORT` (also `finding
/// updated:` with the counts so far, `finding cleared:` when the flow works again).
#[derive(Debug, Default)]
pub struct Log {
    /// Log `updated` lines too (a long-running session); otherwise only new and cleared.
    pub updates: bool,
}

impl Sink for Log {
    fn finding(&mut self, update: &FindingUpdate) {
        let what = match update {
            FindingUpdate::New(_) => "finding",
            FindingUpdate::Updated(_) if self.updates => "finding updated",
            FindingUpdate::Updated(_) => return,
            FindingUpdate::Cleared(_) => "finding cleared",
        };
        let f = update.finding();
        let src = f.src.pod.clone().or_else(|| f.src.ip.map(|i| i.to_string())).unwrap_or_default();
        let dst = f.dst.service.clone().or(f.dst.pod.clone()).unwrap_or_default();
        info!(
            requirement = ?f.requirement,
            attempts = f.evidence.attempts,
            connections = f.evidence.connections,
            "{what}: {} {} {src} -> {dst}:{}",
            kebab(&f.kind),
            kebab(&f.mechanism),
            f.dst.port.unwrap_or(0),
        );
    }
}

/// The kebab-case name of one of the finding's enums, as in the JSON report.
fn kebab<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}
