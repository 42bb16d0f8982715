//! `cargo xtask bench`: observer's costs measured in the lab, side by side with tcpdump and
//! bpftrace on the same machine: datapath overhead, event pipeline, detection latency, memory
//! and scale, the userspace decode/correlate throughput, interface churn and the node agent (idle
//! footprint, Kubernetes Events under a drop flood). Results go to bench/results.json
//! (bench/churn.json, bench/agent.json) and BENCHMARKS.md; `--churn-only` and `--agent-only` run
//! one part alone.

mod agent;
mod churn;
mod latency;
mod overhead;
mod pipeline;
mod procs;
mod report;
mod scale;
mod testrun;
mod userspace;

use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use observer_lab::{FirewallRule, Hook, Lab, LabSpec};

use crate::{lab, setup, shell};
use procs::{in_netns, output_of, release_bin, Background};

/// The CPU the load (client and server) is pinned to; tools run on the other one.
pub const CLIENT_CPU: usize = 1;
pub const TOOLS_CPU: usize = 0;
/// A port node-a's FORWARD chain drops (netfilter), and one the underlay drops (silent).
pub const DROPPED_PORT: u16 = 9999;
pub const SILENT_PORT: u16 = 9998;

/// Options of one run.
pub struct Options {
    pub reps: usize,
    pub secs: f64,
    pub latency_trials: usize,
    /// Only the churn benchmark (its section of BENCHMARKS.md is replaced, the rest kept).
    pub churn_only: bool,
    pub churn_secs: f64,
    pub churn_pods: usize,
    /// Only the agent's benchmark (section 7), written to bench/agent.json.
    pub agent_only: bool,
    /// Only these lab sections, results printed, no file written (empty: the full run).
    pub only: Vec<String>,
}

/// The lab sections `--only` may name.
const SECTIONS: [&str; 4] = ["overhead", "pipeline", "latency", "scale"];

/// The lab and the programs a benchmark uses.
pub struct Bench<'a> {
    pub lab: &'a Lab,
    pub node_ns: String,
    /// The load's client: an ambient pod on node-a (no traffic capture in its namespace).
    pub client_app: String,
    pub client_ns: String,
    pub client_ip: Ipv4Addr,
    /// The server: istiod's pod on node-b (no capture), so traffic crosses node-a.
    pub server_ns: String,
    pub server_ip: Ipv4Addr,
    pub inventory: String,
    pub observer: String,
    pub load: String,
    pub reps: usize,
    pub secs: f64,
}

impl Bench<'_> {
    /// Starts observer on node-a (on the tools CPU) and waits for `ready`.
    pub fn start_observer(&self, args: &[&str], with_stdout: bool) -> anyhow::Result<Background> {
        let mut full: Vec<&str> = args.to_vec();
        full.extend(["--netns", &self.node_ns]);
        if args.first() == Some(&"diagnose") {
            full.extend(["--inventory", &self.inventory, "--node-name", "node-a"]);
        }
        let observer = Background::start(in_netns(None, Some(TOOLS_CPU), &self.observer, &full), with_stdout)?;
        observer.wait_for("ready", Duration::from_secs(60))?;
        Ok(observer)
    }

    /// A bounded SYN flood from the client pod to the dropped port: (sent, rate).
    pub fn syn_flood(&self, rate: u64, secs: f64) -> anyhow::Result<(u64, f64)> {
        self.syn_flood_from(&self.client_ip.to_string(), rate, secs)
    }

    pub fn syn_flood_from(&self, src: &str, rate: u64, secs: f64) -> anyhow::Result<(u64, f64)> {
        let out = output_of(in_netns(
            Some(&self.client_ns),
            Some(CLIENT_CPU),
            &self.load,
            &[
                "syn-flood",
                src,
                &self.server_ip.to_string(),
                &DROPPED_PORT.to_string(),
                &rate.to_string(),
                &secs.to_string(),
            ],
        ))?;
        let v: serde_json::Value = serde_json::from_str(out.trim()).with_context(|| format!("syn-flood said {out}"))?;
        Ok((v["sent"].as_u64().unwrap_or(0), v["rate"].as_f64().unwrap_or(0.0)))
    }

    /// Another address in the client pod's subnet (for more distinct connections).
    pub fn second_client_ip(&self) -> String {
        let [a, b, c, _] = self.client_ip.octets();
        Ipv4Addr::new(a, b, c, 250).to_string()
    }
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    let started = Instant::now();
    setup::run_with(&setup::BENCH_PACKAGES)?;
    shell::run(shell::command("cargo").args(["build", "--release", "--bins"]))?;
    if !shell::is_root() {
        bail!("the benchmarks need root (lab namespaces, eBPF, raw sockets)");
    }
    if opts.churn_only {
        return run_churn(opts);
    }
    if let Some(unknown) = opts.only.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
        bail!("--only: no section `{unknown}` (sections: {})", SECTIONS.join(", "));
    }
    ensure_tracefs()?;
    let lab = Lab::up(LabSpec::bookinfo(), lab::tools()).context("building the lab")?;
    let client = lab.pod("cart").context("the lab's ambient pod `cart`")?.clone();
    let server = lab.pod("istiod")?.clone();
    let bench = Bench {
        lab: &lab,
        node_ns: lab.node_netns("node-a"),
        client_app: "cart".into(),
        client_ns: lab.pod_netns("cart")?,
        client_ip: client.ip,
        server_ns: lab.pod_netns("istiod")?,
        server_ip: server.ip,
        inventory: lab.inventory_path().display().to_string(),
        observer: release_bin("observer").display().to_string(),
        load: release_bin("bench-load").display().to_string(),
        reps: opts.reps,
        secs: opts.secs,
    };
    let mut rule = FirewallRule::drop_tcp(Hook::Forward, DROPPED_PORT);
    rule.dst = Some((IpAddr::V4(server.ip), 32));
    lab.inject("node-a", &rule)?;
    lab.inject_in_netns(&format!("{}-router", lab.name), &FirewallRule::drop_tcp(Hook::Forward, SILENT_PORT))?;
    if opts.agent_only {
        println!("\n== 7. agent (API-fed inventory, Kubernetes Events)");
        let agent = agent::run(&bench)?;
        drop(lab);
        let path = shell::root().join("bench").join("agent.json");
        std::fs::create_dir_all(shell::root().join("bench"))?;
        std::fs::write(&path, serde_json::to_string_pretty(&agent)?)?;
        println!("\nwrote {}", path.display());
        return Ok(());
    }

    if !opts.only.is_empty() {
        return run_only(&bench, opts);
    }
    println!(
        "\n== 1. datapath overhead ({} repetitions x {} s, client and server pinned to CPU {CLIENT_CPU})",
        opts.reps, opts.secs
    );
    let overhead = overhead::run(&bench)?;
    println!("\n== 2. event pipeline (SYN floods to a dropped port)");
    let pipeline = pipeline::run(&bench)?;
    println!("\n== 3. detection latency");
    let latency = latency::run(&bench, opts.latency_trials)?;
    println!("\n== 4. memory and scale");
    let scale = scale::run(&bench)?;
    println!("\n== 7. agent (API-fed inventory, Kubernetes Events)");
    let agent = agent::run(&bench)?;
    drop(lab);
    println!("\n== 5. userspace decode/correlate (divan)");
    let userspace = userspace::run()?;
    let mut results =
        report::Results::new(overhead, pipeline, latency, scale, userspace, agent, started.elapsed().as_secs_f64());
    let dir = shell::root().join("bench");
    std::fs::create_dir_all(&dir)?;
    let json_path: PathBuf = dir.join("results.json");
    if let Some(previous) =
        std::fs::read_to_string(&json_path).ok().and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    {
        results.versus_previous_run = report::compare(&previous, &results.overhead);
        for c in &results.versus_previous_run {
            println!(
                "   vs previous run: {} {}: {:.3} -> {:.3} (allowed ±{:.1} %): {}",
                c.name,
                c.metric,
                c.previous,
                c.now,
                c.spread * 100.0,
                if c.within_spread { "within" } else { "OUTSIDE" }
            );
        }
    }
    std::fs::write(&json_path, serde_json::to_string_pretty(&results)?)?;
    std::fs::write(shell::root().join("BENCHMARKS.md"), report::markdown(&results))?;
    run_churn(opts)?;
    println!("\nwrote {} and BENCHMARKS.md ({:.0} s)", json_path.display(), started.elapsed().as_secs_f64());
    Ok(())
}

/// The sections of `opts.only`, in their usual order, printed as JSON.
fn run_only(bench: &Bench<'_>, opts: &Options) -> anyhow::Result<()> {
    let wanted = |name: &str| opts.only.iter().any(|s| s == name);
    let mut out = serde_json::Map::new();
    if wanted("overhead") {
        println!("\n== 1. datapath overhead ({} repetitions x {} s)", opts.reps, opts.secs);
        out.insert("overhead".into(), serde_json::to_value(overhead::run(bench)?)?);
    }
    if wanted("pipeline") {
        println!("\n== 2. event pipeline (SYN floods to a dropped port)");
        out.insert("pipeline".into(), serde_json::to_value(pipeline::run(bench)?)?);
    }
    if wanted("latency") {
        println!("\n== 3. detection latency");
        out.insert("latency".into(), serde_json::to_value(latency::run(bench, opts.latency_trials)?)?);
    }
    if wanted("scale") {
        println!("\n== 4. memory and scale");
        out.insert("scale".into(), serde_json::to_value(scale::run(bench)?)?);
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn run_churn(opts: &Options) -> anyhow::Result<()> {
    println!("\n== 6. churn ({} pod namespaces per cycle for {:.0} s)", opts.churn_pods, opts.churn_secs);
    let result = churn::run(&release_bin("observer").display().to_string(), opts.churn_pods, opts.churn_secs)?;
    println!(
        "   {} cycles; before {:?}, peak {:?}, after {:?}",
        result.cycles, result.before, result.peak, result.after
    );
    churn::publish(&result)
}

/// bpftrace reads tracepoint formats from tracefs: mount it when the machine has not.
fn ensure_tracefs() -> anyhow::Result<()> {
    if std::path::Path::new("/sys/kernel/tracing/events").exists() {
        return Ok(());
    }
    println!("bench: mounting tracefs at /sys/kernel/tracing (bpftrace needs it)");
    output_of(in_netns(None, None, "mount", &["-t", "tracefs", "nodev", "/sys/kernel/tracing"])).map(drop)
}
