//! Command-line interface (clap). Only parses and validates; `main` wires the parts together.

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "observer", version, about = "eBPF node dataplane observer for Istio service meshes")]
pub struct Cli {
    #[command(flatten)]
    pub logging: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The log option of `observer` and `observer-agent` (the agent's binary flattens it too).
#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// Log filter for stderr (tracing's EnvFilter syntax), e.g. `debug`, `observer=trace`,
    /// `observer_agent=debug` or `observer::kernel=warn`.
    #[arg(long, global = true, env = "OBSERVER_LOG", default_value = "info")]
    pub log: String,
}

impl LogArgs {
    /// Installs the stderr log: this filter (`info` when it does not parse), no targets,
    /// colours only on a terminal.
    pub fn init(&self) {
        use std::io::IsTerminal as _;
        let filter = tracing_subscriber::EnvFilter::try_new(&self.log)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print TCP handshake/reset packets and kernel packet drops live, one line per event.
    Trace(TraceArgs),
    /// Watch the node and report what in the infrastructure breaks Istio's requirements
    /// (R1..R5). Exit status: 0 no finding, 3 findings, 1 error, 2 bad usage.
    Diagnose(DiagnoseArgs),
    /// Check this node's firewalls against the flows Istio needs (R1..R5), before traffic
    /// fails. Static by default (reads the rulesets, sends nothing). Exit status: 0 nothing
    /// blocked, 3 a required flow is blocked, 1 error, 2 bad usage.
    Verify(VerifyArgs),
    /// The node agent (Kubernetes API inventory, metrics, Events): runs `observer-agent agent`
    /// (installed beside `observer`); see `observer agent --help`.
    #[command(disable_help_flag = true)]
    Agent(Passthrough),
    /// The cluster view of the agents' findings: runs `observer-agent findings`; see
    /// `observer findings --help`.
    #[command(disable_help_flag = true)]
    Findings(Passthrough),
}

/// Arguments handed unchanged to `observer-agent` (which parses them).
#[derive(Debug, clap::Args)]
pub struct Passthrough {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    pub args: Vec<std::ffi::OsString>,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Also try one bounded TCP handshake per flow whose source is on this node, from inside the
    /// source's namespace (as uid 1337 for sidecar pods, like their proxy), watched by the eBPF
    /// datapath, and compare with the static verdict.
    #[arg(long)]
    pub probe: bool,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// Which node, and what the mesh on it is (diagnose and verify).
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// Kubernetes inventory (`kubectl get pods,services,endpointslices,namespaces,nodes -A -o json`).
    #[arg(long, value_name = "FILE")]
    pub inventory: std::path::PathBuf,
    /// Network namespace of the node (name from `ip netns list` or a path); default: current.
    #[arg(long)]
    pub netns: Option<String>,
    /// The node's name in the inventory and in findings (default: the namespace's name).
    #[arg(long, value_name = "NODE")]
    pub node_name: Option<String>,
    /// Forward the eBPF programs' log lines of rare paths (a parse bound reached, a failed map
    /// insert, a full ring buffer; at most one per second per CPU and site) to the log, target
    /// `observer::kernel`. Off by default.
    #[arg(long)]
    pub kernel_log: bool,
}

#[derive(Debug, clap::Args)]
pub struct DiagnoseArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// cgroup v2 directory whose processes are watched (default: the whole node).
    #[arg(long, value_name = "PATH")]
    pub cgroup_root: Option<std::path::PathBuf>,
    /// Watch this many seconds (default: until Ctrl-C).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<u64>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Do not name the netfilter rule behind NETFILTER_DROP drops (by default the rulesets of
    /// the namespace of each drop are read with iptables-*-save and nft, never changed).
    #[arg(long)]
    pub no_culprit: bool,
    /// How the classifiers hang off interfaces: `tcx` links (default; the kernel removes them
    /// when observer exits, even killed) or `netlink` `cls_bpf` filters on a clsact qdisc (about
    /// 40 times cheaper to attach on nodes with hundreds of pod interfaces; a killed observer's
    /// filters stay until the next start removes them).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = crate::loader::attach::TcAttachMode::Tcx)]
    pub tc_attach: crate::loader::attach::TcAttachMode,
    /// Also attach the cgroup_skb programs (every packet at the watched sockets). Off by default:
    /// they run on every packet of every socket, and connect/sock_ops, always attached, tell the
    /// diagnosis what the sockets did (BENCHMARKS.md, "Datapath cost: directions").
    #[arg(long, value_enum, value_name = "on|off", default_value_t = Switch::Off)]
    pub cgroup_skb: Switch,
    /// Also record every event, with the kernel facts to name it, to FILE (docs/recording.md).
    #[arg(long, value_name = "FILE", conflicts_with = "replay")]
    pub record: Option<std::path::PathBuf>,
    /// Diagnose a recording (`trace --record`/`diagnose --record`) instead of the live kernel:
    /// no root, no eBPF. `--netns`, `--cgroup-root`, `--duration` and `--no-culprit` do not
    /// apply (the recording holds what they decided).
    #[arg(long, value_name = "FILE")]
    pub replay: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Colour {
    Auto,
    Always,
    Never,
}

#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// Network namespace to watch: a name from `ip netns list` or a path like /proc/PID/ns/net.
    /// Default: the current one.
    #[arg(long)]
    pub netns: Option<String>,
    /// cgroup v2 directory whose processes' connect() and TCP sockets are watched
    /// (default: the cgroup v2 mount, i.e. every process on the node).
    #[arg(long, value_name = "PATH")]
    pub cgroup_root: Option<std::path::PathBuf>,
    /// Kubernetes inventory (`kubectl get pods,services,endpointslices,namespaces,nodes -A -o json`)
    /// to name each flow's pods, services and Istio ports.
    #[arg(long, value_name = "FILE")]
    pub inventory: Option<std::path::PathBuf>,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<u64>,
    /// Stop after printing this many events.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Forward the eBPF programs' log lines of rare paths (a parse bound reached, a failed map
    /// insert, a full ring buffer; at most one per second per CPU and site) to the log, target
    /// `observer::kernel`. Off by default.
    #[arg(long)]
    pub kernel_log: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Only events whose source or destination port is one of these (repeatable). Applied in
    /// the kernel: unwanted events never reach the ring buffer.
    #[arg(long = "port", value_name = "PORT")]
    pub ports: Vec<u16>,
    /// Only events with an address (either end) in one of these prefixes, e.g. the pod and
    /// service CIDRs (repeatable; with --port, both must match). Applied in the kernel.
    #[arg(long = "cidr", value_name = "CIDR")]
    pub cidrs: Vec<crate::loader::filter::Cidr>,
    /// Only events of this pod (`namespace/name`, needs --inventory; repeatable).
    #[arg(long = "pod", value_name = "NAMESPACE/NAME")]
    pub pods: Vec<String>,
    /// Only events of pods or services of this namespace (needs --inventory; repeatable).
    #[arg(long = "namespace", value_name = "NAMESPACE")]
    pub namespaces: Vec<String>,
    /// Only events with this address at either end (repeatable).
    #[arg(long = "ip", value_name = "IP")]
    pub ips: Vec<std::net::IpAddr>,
    /// Only drops, only rejections (ICMP errors, resets), or everything.
    #[arg(long, value_enum, default_value_t = Verdict::All)]
    pub verdict: Verdict,
    /// Only flows on Istio's ports (sidecar, ztunnel, istiod, gateways).
    #[arg(long)]
    pub istio: bool,
    /// Only drops with this reason (e.g. NETFILTER_DROP; names from this kernel; repeatable).
    #[arg(long = "drop-reason", value_name = "NAME")]
    pub drop_reasons: Vec<String>,
    /// Write the dropped and rejecting packets (from their IP header, first 128 bytes) to this
    /// pcap file (tshark -r FILE, Wireshark).
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<std::path::PathBuf>,
    /// Colour in text output: auto (on a terminal, unless NO_COLOR is set), always, never.
    #[arg(long, value_enum, default_value_t = Colour::Auto)]
    pub color: Colour,
    /// Also print drops from network namespaces other than the watched one.
    #[arg(long)]
    pub all_netns: bool,
    /// Do not name the netfilter rule behind NETFILTER_DROP drops (by default the rulesets of
    /// the namespace of each drop are read with iptables-*-save and nft, never changed).
    #[arg(long)]
    pub no_culprit: bool,
    /// How the classifiers hang off interfaces: `tcx` links (default; the kernel removes them
    /// when observer exits, even killed) or `netlink` `cls_bpf` filters on a clsact qdisc (about
    /// 40 times cheaper to attach on nodes with hundreds of pod interfaces; a killed observer's
    /// filters stay until the next start removes them).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = crate::loader::attach::TcAttachMode::Tcx)]
    pub tc_attach: crate::loader::attach::TcAttachMode,
    /// The cgroup_skb programs: the handshake at the watched sockets (`cgroup-ingress`,
    /// `cgroup-egress` lines). On by default here; `off` spares their cost (two more program runs
    /// per round trip at each local end, about twice observer's cost per round trip in
    /// BENCHMARKS.md) and their load at start-up.
    #[arg(long, value_enum, value_name = "on|off", default_value_t = Switch::On)]
    pub cgroup_skb: Switch,
    /// Record every event handed on (before the userspace filters), with the kernel facts to
    /// name it, to FILE (docs/recording.md); `diagnose --replay FILE` diagnoses it later.
    #[arg(long, value_name = "FILE", conflicts_with = "replay")]
    pub record: Option<std::path::PathBuf>,
    /// Print a recording instead of the live kernel: no root, no eBPF (`--netns`,
    /// `--cgroup-root`, `--all-netns` and `--no-culprit` do not apply).
    #[arg(long, value_name = "FILE")]
    pub replay: Option<std::path::PathBuf>,
}

/// An on/off option (`--cgroup-skb on|off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// `on`: the feature is used.
    On,
    /// `off`: the feature is not used (for programs: not loaded either).
    Off,
}

impl Switch {
    /// Whether it is on.
    pub fn is_on(self) -> bool {
        self == Self::On
    }
}

/// Which events `trace --verdict` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Verdict {
    /// Packets the kernel dropped (kfree_skb).
    Dropped,
    /// ICMP/ICMPv6 errors and TCP resets (who sent them is for the diagnosis to say).
    Rejected,
    /// Everything.
    #[default]
    All,
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("observer").chain(args.iter().copied())).map(|c| c.command)
    }

    #[test]
    fn cgroup_skb_is_on_for_trace_and_off_for_diagnose_by_default() {
        let Ok(Command::Trace(trace)) = parse(&["trace"]) else { panic!("trace parses") };
        assert_eq!(trace.cgroup_skb, Switch::On);
        let Ok(Command::Diagnose(diagnose)) = parse(&["diagnose", "--inventory", "i.json"]) else {
            panic!("diagnose parses")
        };
        assert_eq!(diagnose.cgroup_skb, Switch::Off);
        let Ok(Command::Diagnose(on)) = parse(&["diagnose", "--inventory", "i.json", "--cgroup-skb", "on"]) else {
            panic!("--cgroup-skb on parses")
        };
        assert!(on.cgroup_skb.is_on());
        let Ok(Command::Trace(off)) = parse(&["trace", "--cgroup-skb", "off"]) else { panic!("off parses") };
        assert!(!off.cgroup_skb.is_on());
        let err = parse(&["trace", "--cgroup-skb", "maybe"]).expect_err("not a switch");
        assert!(err.to_string().contains("possible values: on, off"), "{err}");
    }
}
