//! Reads every ruleset of the network namespace the calling thread is in, with counters and
//! without changing anything: `iptables-*-save -c` (nft and legacy backends, IPv4 and IPv6)
//! and `nft -j list ruleset`, with the members of ipsets (`ipset save`). A missing tool is a note, not an error: the others still count.

use std::{
    process::{Command, Stdio},
    time::SystemTime,
};

use tracing::debug;

use super::{
    ipset::IpSets,
    iptables::parse_save_with,
    model::{Backend, Family, Table},
    nft::parse_ruleset,
};

/// The rulesets of one namespace at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub tables: Vec<Table>,
    /// When reading started and ended: counters include every packet before `started`.
    pub started: SystemTime,
    pub finished: SystemTime,
    /// Tools that could not be run or parsed, with why.
    pub problems: Vec<String>,
}

const IPTABLES: [(&str, Backend, Family); 4] = [
    ("iptables-nft-save", Backend::IptablesNft, Family::Ip),
    ("ip6tables-nft-save", Backend::IptablesNft, Family::Ip6),
    ("iptables-legacy-save", Backend::IptablesLegacy, Family::Ip),
    ("ip6tables-legacy-save", Backend::IptablesLegacy, Family::Ip6),
];

/// Reads the current thread's namespace (child processes inherit the thread's namespace).
pub fn read_here() -> Snapshot {
    let started = SystemTime::now();
    let mut tables = Vec::new();
    let mut problems = Vec::new();
    let outputs: Vec<_> =
        IPTABLES.iter().map(|(tool, backend, family)| (*tool, *backend, *family, run(tool, &["-c"]))).collect();
    // `-m set` rules are evaluated against the sets' members (read only when a rule names one).
    let uses_sets = outputs.iter().any(|(.., out)| out.as_ref().is_ok_and(|o| o.contains("--match-set")));
    let ipsets = match uses_sets.then(|| run("ipset", &["save"])) {
        Some(Ok(out)) => IpSets::parse(&out),
        Some(Err(err)) => {
            problems.push(err);
            IpSets::default()
        }
        None => IpSets::default(),
    };
    for (tool, backend, family, output) in outputs {
        match output {
            Ok(out) => match parse_save_with(&out, backend, family, &ipsets) {
                Ok(parsed) => tables.extend(parsed),
                Err(err) => problems.push(format!("{tool}: {err}")),
            },
            Err(err) => problems.push(err),
        }
    }
    // iptables-nft's tables also appear in nft's listing (as xt expressions): read them once,
    // from iptables-nft-save, whose text is what an operator knows.
    let managed: Vec<(Family, String)> = tables
        .iter()
        .filter(|t: &&Table| t.backend == Backend::IptablesNft)
        .map(|t| (t.family, t.name.clone()))
        .collect();
    match (run("nft", &["-j", "list", "ruleset"]), run("nft", &["-a", "list", "ruleset"])) {
        (Ok(json), Ok(text)) => match parse_ruleset(&json, &text, &managed) {
            Ok(parsed) => tables.extend(parsed),
            Err(err) => problems.push(format!("nft: {err}")),
        },
        (Err(err), _) | (_, Err(err)) => problems.push(err),
    }
    Snapshot { tables, started, finished: SystemTime::now(), problems }
}

fn run(tool: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("{tool}: cannot run ({err}); install it or put it on PATH"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        debug!(tool, %stderr, "ruleset read failed");
        return Err(format!("{tool}: {} ({})", output.status, stderr.trim()));
    }
    String::from_utf8(output.stdout).map_err(|_| format!("{tool}: output is not UTF-8"))
}
