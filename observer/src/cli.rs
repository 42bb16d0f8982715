//! Command-line interface (clap). Only parses and validates; `main` wires the parts together.

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "observer", version, about = "eBPF node dataplane observer for Istio service meshes")]
pub struct Cli {
    /// Log filter for stderr (tracing's EnvFilter syntax), e.g. `debug` or `observer=trace`.
    #[arg(long, global = true, env = "OBSERVER_LOG", default_value = "info")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print TCP handshake/reset packets and kernel packet drops live, one line per event.
    Trace(TraceArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
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
    /// Also print drops from network namespaces other than the watched one.
    #[arg(long)]
    pub all_netns: bool,
}
