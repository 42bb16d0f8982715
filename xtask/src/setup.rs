//! `cargo xtask setup`: install what is missing, skip what is there (see TOOLCHAIN notes in
//! the README). On a machine where everything is present it only probes (seconds).

use anyhow::{bail, Context as _};

use crate::shell::{self, command, output};

/// Debian packages: LLVM 22 for bpf-linker, the firewall tools and iproute2 for the lab,
/// ipset (observer reads sets; the real rulesets' tests create them), procps for sysctl, tshark
/// for reading the pcaps observer writes, tmux for the terminal test, curl for the agent's tests
/// (its HTTP endpoint, the test API server).
const PACKAGES: [&str; 11] = [
    "llvm-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "iptables",
    "nftables",
    "ipset",
    "iproute2",
    "procps",
    "tshark",
    "tmux",
    "curl",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
/// scapy (PyPI) writes the hostile frames of observer/tests/hostile (a packet library, so the
/// frames are what a real stack's dissector agrees they are).
const SCAPY_VERSION: &str = "2.8.0";

/// The peers `cargo xtask bench` compares observer with (and bpftool for BPF run-time stats).
pub const BENCH_PACKAGES: [&str; 4] = ["iperf3", "bpftrace", "tcpdump", "bpftool"];

pub fn run() -> anyhow::Result<()> {
    run_with(&[])
}

/// [`run`], plus `extra` Debian packages.
pub fn run_with(extra: &[&str]) -> anyhow::Result<()> {
    let mut did = Vec::new();
    let missing: Vec<&str> = PACKAGES.iter().chain(extra).copied().filter(|p| !package_installed(p)).collect();
    if !missing.is_empty() {
        if !crate::shell::is_root() {
            bail!("packages {missing:?} are missing and installing them needs root: run as root or install them with apt-get");
        }
        println!("setup: installing Debian packages {missing:?}");
        run_apt(&["update", "-qq"])?;
        let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
        args.extend(&missing);
        run_apt(&args)?;
        did.push(format!("installed {}", missing.join(" ")));
    }
    if !output(command("rustup").args(["component", "list", "--installed", "--toolchain", "nightly"]))
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        println!("setup: adding rust-src to the nightly toolchain");
        shell::run(command("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
        did.push("added nightly rust-src".into());
    }
    let linker = output(command("bpf-linker").arg("--version"));
    if !linker.contains(BPF_LINKER_VERSION) {
        println!("setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)");
        let mut cmd = command("cargo");
        cmd.env("LLVM_PREFIX", "/usr/lib/llvm-22").args([
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--locked",
            "--no-default-features",
            "--features",
            "llvm-22",
        ]);
        shell::run(&mut cmd).context("installing bpf-linker")?;
        did.push(format!("installed bpf-linker {BPF_LINKER_VERSION}"));
    }
    let scapy = output(command("python3").args(["-c", "import scapy; print(scapy.VERSION)"]));
    if scapy.trim() != SCAPY_VERSION {
        println!("setup: installing scapy {SCAPY_VERSION} (PyPI) for the hostile-packet tests");
        let mut cmd = command("python3");
        cmd.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("scapy=={SCAPY_VERSION}"),
        ]);
        shell::run(&mut cmd).context("installing scapy")?;
        did.push(format!("installed scapy {SCAPY_VERSION}"));
    }
    crate::manifests::setup(&mut did)?;
    if did.is_empty() {
        println!(
            "setup: everything present (packages, nightly rust-src, bpf-linker {BPF_LINKER_VERSION}, scapy {SCAPY_VERSION})"
        );
    } else {
        println!("setup: {}", did.join("; "));
    }
    Ok(())
}

fn package_installed(name: &str) -> bool {
    output(command("dpkg-query").args(["-W", "-f", "${Status}", name])).contains("install ok installed")
}

fn run_apt(args: &[&str]) -> anyhow::Result<()> {
    let mut cmd = command("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive").args(args);
    shell::run(&mut cmd)
}
