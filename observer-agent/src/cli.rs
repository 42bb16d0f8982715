//! Command line of `observer-agent` (also reached as `observer agent` / `observer findings`).

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

/// The address `/metrics`, `/healthz`, `/readyz` and `/findings` are served on by default
/// (9464: the port commonly used by Prometheus exporters of this kind).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9464";

#[derive(Debug, Parser)]
#[command(name = "observer", version, about = "observer's node agent and cluster view, fed by the Kubernetes API")]
pub struct Cli {
    #[command(flatten)]
    pub logging: observer::cli::LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run on a node until SIGINT/SIGTERM: inventory from the Kubernetes API, the diagnosis
    /// continuously, findings as Prometheus metrics, HTTP and Kubernetes Events.
    Agent(AgentArgs),
    /// The cluster's view: the findings the agents reported as Kubernetes Events.
    Findings(FindingsArgs),
}

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// kubeconfig file (default: the in-cluster service account config).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// This node's name (in findings, Events' reportingInstance).
    #[arg(long, value_name = "NODE", env = "NODE_NAME")]
    pub node_name: String,
    /// Watch this network namespace as the node (name from `ip netns list` or a path) instead of
    /// the agent's own.
    #[arg(long)]
    pub netns: Option<String>,
    /// Where to serve /metrics, /healthz, /readyz and /findings.
    #[arg(long, value_name = "ADDR:PORT", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// A static inventory file instead of the API's (`kubectl get pods,services,endpointslices,
    /// namespaces,nodes -A -o json`); Events are still written when an API is configured.
    #[arg(long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,
    /// cgroup v2 directory whose processes are watched (default: the whole node).
    #[arg(long, value_name = "PATH")]
    pub cgroup_root: Option<PathBuf>,
    /// Also attach the cgroup_skb programs (every packet at the watched sockets). Off by default:
    /// they run on every packet of every socket, and connect/sock_ops, always attached, tell the
    /// diagnosis what the sockets did.
    #[arg(long, value_enum, value_name = "on|off", default_value_t = observer::cli::Switch::Off)]
    pub cgroup_skb: observer::cli::Switch,
    /// A finding not seen again for this many seconds (by its last-seen time, none of its
    /// connections still being decided) is cleared; a working connection between the same ends
    /// clears it at once.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub clear_after: u64,
    /// Write no Kubernetes Events (metrics and HTTP only).
    #[arg(long)]
    pub no_events: bool,
    /// Forward the eBPF programs' log lines of rare paths (a parse bound reached, a failed map
    /// insert, a full ring buffer; at most one per second per CPU and site) to the log, target
    /// `observer::kernel`. Off by default.
    #[arg(long)]
    pub kernel_log: bool,
}

#[derive(Debug, clap::Args)]
pub struct FindingsArgs {
    /// kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Only findings on pods of this namespace.
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Only findings of this requirement (R1..R5).
    #[arg(long)]
    pub requirement: Option<String>,
    /// Only findings reported by this node's agent.
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Output {
    Text,
    Json,
}
