//! `cargo xtask fuzz`: the cargo-fuzz targets of fuzz/ (observer's parsers of untrusted input:
//! ring-buffer records, the inventory, iptables-save and nft JSON rulesets, BTF, kubelet cgroup
//! paths). Seeds are kept in fuzz/corpus/TARGET (small, in the repository); what a run adds
//! goes to fuzz/target/corpus/TARGET. A crash stops the run and leaves its input in
//! fuzz/artifacts/TARGET: turn it into a unit test next to the parser, then fix the parser.

use anyhow::Context as _;

use crate::shell::{self, command, output};

/// Every fuzz target (fuzz/Cargo.toml `[[bin]]`s).
pub const TARGETS: [&str; 7] =
    ["decode_event", "inventory", "iptables_save", "nft_json", "btf", "cgroup_path", "recording"];
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// Seconds per target in `cargo xtask test` (a smoke run: the targets build and survive).
pub const SMOKE_SECS: u64 = 5;

/// Installs cargo-fuzz when `cargo +nightly fuzz` is missing (about a minute, once).
pub fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    if output(command("cargo").args(["+nightly", "fuzz", "--version"])).contains(CARGO_FUZZ_VERSION) {
        return Ok(());
    }
    println!("setup: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
    shell::run(command("cargo").args(["install", &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"), "--locked"]))
        .context("installing cargo-fuzz")
}

/// Runs each of `targets` (all when empty) for `secs` seconds, one after the other.
pub fn run(secs: u64, targets: &[String]) -> anyhow::Result<()> {
    ensure_cargo_fuzz()?;
    let chosen: Vec<&str> =
        if targets.is_empty() { TARGETS.to_vec() } else { targets.iter().map(String::as_str).collect() };
    for target in &chosen {
        if !TARGETS.contains(target) {
            anyhow::bail!("unknown fuzz target `{target}`; targets: {}", TARGETS.join(", "));
        }
    }
    for target in chosen {
        let scratch = shell::root().join("fuzz/target/corpus").join(target);
        std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
        let seeds = shell::root().join("fuzz/corpus").join(target);
        println!("fuzz: {target} for {secs} s");
        // The targets never load eBPF: skip building it (observer/build.rs leaves a placeholder).
        let mut cmd = command("cargo");
        cmd.env("AYA_BUILD_SKIP", "1").args(["+nightly", "fuzz", "run", target]).arg(&scratch).arg(&seeds);
        shell::run(cmd.args(["--", &format!("-max_total_time={secs}"), "-rss_limit_mb=2048", "-print_final_stats=1"]))
            .with_context(|| format!("fuzz target {target} failed: its input is in fuzz/artifacts/{target}"))?;
    }
    Ok(())
}
