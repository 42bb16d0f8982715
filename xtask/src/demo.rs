//! `cargo xtask demo`: the built-in lab, a firewall rule at node-a that blocks productpage's
//! xDS connection to istiod on 15012, observer's trace catching the SYNs and the
//! NETFILTER_DROP (recorded), then `observer diagnose`'s report of that recording: the
//! requirement broken, the mechanism, the culprit rule and the remediation.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Stdio},
    sync::{mpsc, Arc, Mutex},
    thread,
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _};
use observer_lab::{FirewallRule, Hook, Lab, LabSpec};

use crate::{lab, setup, shell};

pub fn run() -> anyhow::Result<()> {
    setup::run()?;
    shell::build()?;
    if !shell::is_root() {
        bail!("the demo needs root (it builds network namespaces and loads eBPF programs)");
    }
    let lab = Lab::up(LabSpec::bookinfo(), lab::tools()).context("building the lab")?;
    println!("\n== 1. the lab: a simulated two-node mesh in network namespaces");
    lab::describe(&lab);

    let node = "node-a";
    let node_ns = lab.node_netns(node);
    let productpage = lab.pod("productpage")?.clone();
    let istiod = lab.pod("istiod")?.clone();
    let istiod_svc = lab
        .spec
        .services
        .iter()
        .find(|s| s.name == "istiod")
        .map(|s| s.cluster_ip)
        .ok_or_else(|| anyhow!("lab has no istiod service"))?;
    let xds: SocketAddr = (istiod_svc, 15012).into();

    let inventory = lab.inventory_path().display().to_string();
    let recording = std::env::temp_dir().join(format!("{}-demo.jsonl", lab.name));
    let recording_arg = recording.display().to_string();
    println!("\n== 2. observer trace --netns {node_ns} --port 15012 --inventory {inventory} --cgroup-root {} --record {recording_arg}   (node {node}, where productpage runs)", lab.cgroup().display());
    // The lab's processes only (its cgroup), not every process of this machine.
    let cgroup_root = lab.cgroup().display().to_string();
    let mut observer = Observer::start(&node_ns, &inventory, &cgroup_root, &recording_arg)?;

    println!("\n== 3. healthy: productpage's istio-proxy connects to istiod {xds} (xDS)");
    let ok = lab.connect_as_proxy("productpage", xds, Duration::from_secs(3))?;
    println!("   client: {} from {} -> {}", ok.result, ok.local, ok.reply);
    thread::sleep(Duration::from_millis(300));

    let mut rule = FirewallRule::drop_tcp(Hook::Forward, 15012);
    rule.dst = Some((istiod.ip.into(), 32));
    rule.comment = Some("demo: host firewall blocks xDS".into());
    let (program, args) = rule.iptables_args();
    println!("\n== 4. fault: at {node}: {program} {}", args.join(" "));
    lab.inject(node, &rule)?;

    println!("\n== 5. blocked: productpage's istio-proxy connects to istiod {xds} again");
    let blocked = lab.connect_as_proxy("productpage", xds, Duration::from_secs(3))?;
    println!(
        "   client: {} from {} after {} ms (Istio would report: envoy proxy not connected)",
        blocked.result, blocked.local, blocked.elapsed_ms
    );
    thread::sleep(Duration::from_millis(500));
    let lines = observer.stop()?;

    println!("\n== 6. what observer saw");
    let blocked_port = blocked.local_addr().map(|a| a.port()).unwrap_or(0);
    let syn = lines.iter().any(|l| l.contains(&format!("{}:{blocked_port} -> ", productpage.ip)) && l.contains(" SYN"));
    let dropped = lines.iter().any(|l| {
        l.contains("NETFILTER_DROP") && l.contains(&format!("{}:{blocked_port} -> {}:15012", productpage.ip, istiod.ip))
    });
    println!("   SYN of the blocked connection seen at {node}: {}", yes(syn));
    println!("   NETFILTER_DROP of that flow at {node}: {}", yes(dropped));
    let culprit = lines.iter().any(|l| {
        l.contains("NETFILTER_DROP") && l.contains("filter/FORWARD #1") && l.contains("demo: host firewall blocks xDS")
    });
    println!("   the rule that dropped it named (filter/FORWARD #1, the demo's rule): {}", yes(culprit));

    println!("\n== 7. observer diagnose --replay {recording_arg} --inventory {inventory} --node-name {node}");
    let report = diagnose(&recording_arg, &inventory, node);
    let _ = std::fs::remove_file(&recording);
    drop(lab);
    println!("\nlab torn down.");
    let report = report?;
    let shown = Shown::of(&report, &istiod.ip.to_string());
    println!(
        "\n   the report names: requirement R5 {}, mechanism dropped {}, culprit rule {}, remediation {}",
        yes(shown.requirement),
        yes(shown.mechanism),
        yes(shown.culprit),
        yes(shown.remediation)
    );
    if blocked.result == "ok" || !syn || !dropped || !culprit || !shown.all() {
        bail!(
            "the demo did not show the blocked xDS connection (client: {}, SYN seen: {syn}, drop seen: {dropped}, culprit named: {culprit}, diagnosis: {shown:?})",
            blocked.result
        );
    }
    Ok(())
}

/// What the diagnosis report of the demo must show about the blocked xDS connection.
#[derive(Debug)]
struct Shown {
    requirement: bool,
    mechanism: bool,
    culprit: bool,
    remediation: bool,
}

impl Shown {
    fn of(report: &str, istiod_ip: &str) -> Self {
        Self {
            requirement: report.contains("R5: ") && report.contains("control-plane-blocked dropped"),
            mechanism: report.contains("drop reason NETFILTER_DROP"),
            culprit: report.lines().any(|l| {
                l.contains("culprit:") && l.contains(&format!("-A FORWARD -d {istiod_ip}/32")) && l.contains("15012")
            }),
            remediation: report.lines().any(|l| l.contains("fix: Allow TCP 15012 to istiod")),
        }
    }

    fn all(&self) -> bool {
        self.requirement && self.mechanism && self.culprit && self.remediation
    }
}

/// Runs `observer diagnose` on the trace's recording (no eBPF needed) and prints its report.
fn diagnose(recording: &str, inventory: &str, node: &str) -> anyhow::Result<String> {
    let bin = shell::target_debug().join("observer");
    let out = shell::command(&bin.display().to_string())
        .args(["diagnose", "--replay", recording, "--inventory", inventory, "--node-name", node])
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    for line in report.lines() {
        println!("   | {line}");
    }
    // Exit status 3: findings reported.
    if out.status.code() != Some(3) {
        bail!("observer diagnose exited with {} (3 = findings reported)", out.status);
    }
    Ok(report)
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "NO"
    }
}

/// `observer trace` running in the background, its lines echoed and kept.
struct Observer {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<thread::JoinHandle<()>>,
}

impl Observer {
    fn start(netns: &str, inventory: &str, cgroup_root: &str, record: &str) -> anyhow::Result<Self> {
        let bin = shell::target_debug().join("observer");
        let mut child = shell::command(&bin.display().to_string())
            .args(["trace", "--netns", netns, "--port", "15012", "--inventory", inventory])
            .args(["--cgroup-root", cgroup_root, "--record", record])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("observer has no stdout"))?;
        let stderr = child.stderr.take().ok_or_else(|| anyhow!("observer has no stderr"))?;
        let (ready_tx, ready_rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("   observer: {line}");
                if line.contains("ready") {
                    let _ = ready_tx.send(());
                }
            }
        });
        let lines = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&lines);
        let reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("   | {line}");
                if let Ok(mut v) = kept.lock() {
                    v.push(line);
                }
            }
        });
        let mut observer = Self { child, lines, reader: Some(reader) };
        if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = observer.stop();
            bail!("observer did not report ready within 30 s");
        }
        Ok(observer)
    }

    /// SIGINT (observer prints its summary and exits), then the collected lines.
    fn stop(&mut self) -> anyhow::Result<Vec<String>> {
        // SAFETY: kill(2) on the child we started, by its PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait()?;
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        if !status.success() {
            bail!("observer exited with {status}");
        }
        Ok(self.lines.lock().map(|v| v.clone()).unwrap_or_default())
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
