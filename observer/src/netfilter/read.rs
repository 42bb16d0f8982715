//! Reads every ruleset of the network namespace the calling thread is in, with counters and
//! without changing anything: `iptables-*-save -c` (nft and legacy backends, IPv4 and IPv6)
//! and `nft -j list ruleset`, with the members of ipsets (`ipset save`). A missing tool is a note, not an error: the others still count.
//! The tools run side by side, and their end is noticed when they close their output (no
//! polling interval adds to a drop's attribution). iptables-legacy-save runs only where the
//! kernel lists legacy tables for the namespace.

use std::{
    io::Read as _,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread::{self, JoinHandle},
    time::{Duration, Instant, SystemTime},
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
///
/// The tools run at the same time (each is mostly waiting on the kernel's netlink answers or
/// exec): a read takes about as long as the slowest tool, not their sum.
pub fn read_here() -> Snapshot {
    let started = SystemTime::now();
    let mut tables = Vec::new();
    let mut problems = Vec::new();
    let iptables: Vec<_> = IPTABLES
        .iter()
        .filter(|(_, backend, family)| *backend != Backend::IptablesLegacy || has_legacy_tables(*family))
        .map(|(tool, backend, family)| (*tool, *backend, *family, Running::start(tool, &["-c"], TOOL_TIMEOUT)))
        .collect();
    let nft_json = Running::start("nft", &["-j", "list", "ruleset"], TOOL_TIMEOUT);
    let nft_text = Running::start("nft", &["-a", "list", "ruleset"], TOOL_TIMEOUT);
    let outputs: Vec<_> = iptables
        .into_iter()
        .map(|(tool, backend, family, running)| (tool, backend, family, running.and_then(|r| r.finish())))
        .collect();
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
    match (nft_json.and_then(|r| r.finish()), nft_text.and_then(|r| r.finish())) {
        (Ok(json), Ok(text)) => match parse_ruleset(&json, &text, &managed) {
            Ok(parsed) => tables.extend(parsed),
            Err(err) => problems.push(format!("nft: {err}")),
        },
        (Err(err), _) | (_, Err(err)) => problems.push(err),
    }
    Snapshot { tables, started, finished: SystemTime::now(), problems }
}

/// Whether the current thread's namespace has legacy (x_tables) tables of `family`: the kernel
/// lists them in `/proc/thread-self/net/ip_tables_names` (`ip6_tables_names`), the very list
/// iptables-legacy-save dumps. Absent (module not loaded) or empty: nothing to read, and not
/// running the tool also spares loading the module. Unreadable otherwise: read, to be safe.
fn has_legacy_tables(family: Family) -> bool {
    let file = match family {
        Family::Ip6 => "ip6_tables_names",
        _ => "ip_tables_names",
    };
    match std::fs::read_to_string(format!("/proc/thread-self/net/{file}")) {
        Ok(names) => !names.trim().is_empty(),
        Err(err) => err.kind() != std::io::ErrorKind::NotFound,
    }
}

/// How long one ruleset tool may take (a hung `nft` must not hold a drop's attribution forever).
const TOOL_TIMEOUT: Duration = Duration::from_secs(10);

fn run(tool: &str, args: &[&str]) -> Result<String, String> {
    run_within(tool, args, TOOL_TIMEOUT)
}

/// Runs `tool` and returns its stdout; a tool that has not finished within `limit` is killed
/// (the child this function started) and reported.
fn run_within(tool: &str, args: &[&str], limit: Duration) -> Result<String, String> {
    Running::start(tool, args, limit)?.finish()
}

/// A tool started, its stdout and stderr drained by a thread each (so that a full pipe never
/// blocks it), which say when they reached the end of their pipe.
struct Running {
    tool: String,
    child: Child,
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<Vec<u8>>,
    closed: mpsc::Receiver<()>,
    limit: Duration,
    deadline: Instant,
}

impl Running {
    /// Starts `tool`, which gets `limit` to finish.
    fn start(tool: &str, args: &[&str], limit: Duration) -> Result<Self, String> {
        let deadline = Instant::now() + limit;
        let mut child = Command::new(tool)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| format!("{tool}: cannot run ({err}); install it or put it on PATH"))?;
        let (closed_tx, closed) = mpsc::channel();
        let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
            let closed_tx = closed_tx.clone();
            thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut bytes);
                }
                let _ = closed_tx.send(());
                bytes
            })
        };
        let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>));
        let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>));
        Ok(Self { tool: tool.to_owned(), child, stdout, stderr, closed, limit, deadline })
    }

    /// Waits (until its deadline) for the tool to close its output and exit; stops it (the
    /// child this process started) when it has not by then.
    fn finish(mut self) -> Result<String, String> {
        let (tool, deadline) = (self.tool.clone(), self.deadline);
        // Both pipes closed is the tool's end in practice: no polling while it works.
        let mut open = 2;
        while open > 0 {
            match self.closed.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(()) => open -= 1,
                Err(_) => break,
            }
        }
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if open == 0 && Instant::now() < deadline => thread::sleep(EXIT_POLL),
                Ok(None) => return Err(self.stop()),
                Err(err) => return Err(format!("{tool}: waiting for it: {err}")),
            }
        };
        let (stdout, stderr) = (self.stdout.join().unwrap_or_default(), self.stderr.join().unwrap_or_default());
        if !status.success() {
            let stderr = String::from_utf8_lossy(&stderr);
            debug!(tool, %stderr, "ruleset read failed");
            return Err(format!("{tool}: {status} ({})", stderr.trim()));
        }
        String::from_utf8(stdout).map_err(|_| format!("{tool}: output is not UTF-8"))
    }

    /// Kills and reaps the tool (its pipes close with it, which ends the drain threads).
    fn stop(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        format!(
            "{}: no answer within {} s (stopped); its rulesets are not evaluated",
            self.tool,
            self.limit.as_secs_f64()
        )
    }
}

/// How often the exit of a tool that closed its output is checked (it is exiting by then).
const EXIT_POLL: Duration = Duration::from_micros(200);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hanging_tool_is_stopped_and_reported() {
        let started = Instant::now();
        let err = run_within("sleep", &["30"], Duration::from_millis(200)).expect_err("must time out");
        assert!(started.elapsed() < Duration::from_secs(5), "bounded wait");
        assert_eq!(err, "sleep: no answer within 0.2 s (stopped); its rulesets are not evaluated");
    }

    #[test]
    fn a_missing_tool_is_named_and_output_is_returned() {
        let err = run_within("observer-no-such-tool", &[], Duration::from_secs(1)).expect_err("missing");
        assert!(err.starts_with("observer-no-such-tool: cannot run"), "{err}");
        assert_eq!(run_within("echo", &["ruleset"], Duration::from_secs(5)).as_deref(), Ok("ruleset\n"));
        assert!(run_within("false", &[], Duration::from_secs(5)).is_err());
    }

    #[test]
    fn tools_started_together_run_side_by_side() {
        let started = Instant::now();
        let running: Vec<_> = (0..4)
            .map(|i| Running::start("sh", &["-c", &format!("sleep 1; echo {i}")], Duration::from_secs(30)))
            .collect::<Result<_, _>>()
            .expect("sh starts");
        let outputs: Vec<_> = running.into_iter().map(Running::finish).collect();
        assert_eq!(outputs, ["0\n", "1\n", "2\n", "3\n"].map(|o| Ok(o.to_owned())));
        // One after another they would need 4 s.
        assert!(started.elapsed() < Duration::from_millis(3500), "{:?}", started.elapsed());
    }
}
