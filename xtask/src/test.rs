//! `cargo xtask test`: setup, build, rustfmt, clippy (host and BPF target), deploy/ manifests
//! validated offline, every test of both tiers, a short run of every fuzz target, then a check
//! that no lab is left.
//!
//! Tiers: plain `cargo test` runs the host-only tests (no root, no eBPF, no network namespaces);
//! the privileged tests are `#[ignore = "privileged: ..."]` and run here with
//! `--include-ignored`, as root.

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context as _};
use observer_lab::lab::state;

use crate::{fuzz, setup, shell};

/// The environment variable through which the verifier test finds the debug-profile eBPF object.
const DEBUG_OBJECT_VAR: &str = "OBSERVER_EBPF_DEBUG_OBJECT";

pub fn run(extra: &[String]) -> anyhow::Result<()> {
    if !shell::is_root() {
        bail!(
            "cargo xtask test runs the privileged tests (network namespaces, eBPF) and needs root; \
             plain `cargo test` runs the host-only tier without root"
        );
    }
    setup::run()?;
    shell::build()?;
    shell::run(shell::command("cargo").args(["fmt", "--all", "--check"]))?;
    let mut clippy = shell::command("cargo");
    clippy.args(["clippy", "--all-targets", "--quiet", "--", "-D", "warnings"]);
    shell::run(&mut clippy)?;
    shell::run(ebpf_cargo("clippy").args(["--quiet", "--", "-D", "warnings"]))?;
    crate::manifests::validate()?;
    let debug_object = build_debug_object()?;
    let mut test = shell::command("cargo");
    test.args(["test", "--quiet", "--", "--include-ignored"])
        .env("OBSERVER_BIN_DIR", shell::target_debug())
        .env(DEBUG_OBJECT_VAR, &debug_object);
    test.args(extra);
    let result = shell::run(&mut test).and_then(|()| fuzz::run(fuzz::SMOKE_SECS, &[]));
    // Every lab tears itself down, even when a test fails; anything left is a bug.
    let left = state::leftovers();
    for name in &left {
        let _ = state::discover(name).teardown();
    }
    result?;
    if !left.is_empty() {
        bail!("tests left labs behind (now removed): {left:?}");
    }
    println!("xtask test: all passed, no lab left behind");
    Ok(())
}

/// Where the BPF-target builds of this task go (apart from aya-build's release build).
fn ebpf_target_dir() -> PathBuf {
    shell::target_debug().with_file_name("ebpf-debug")
}

/// `cargo +nightly SUBCOMMAND -p observer-ebpf --target bpfel-unknown-none -Z build-std=core`,
/// as aya-template's xtask runs it, in its own target directory.
fn ebpf_cargo(subcommand: &str) -> Command {
    let mut cmd = shell::command("cargo");
    cmd.env("CARGO_TARGET_DIR", ebpf_target_dir()).args([
        "+nightly",
        subcommand,
        "-p",
        "observer-ebpf",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
    ]);
    // Let the nested cargo find rustup's nightly and bpf-linker.
    for var in ["RUSTC", "RUSTC_WRAPPER", "CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "RUSTUP_TOOLCHAIN"] {
        cmd.env_remove(var);
    }
    cmd
}

/// Builds the debug-profile eBPF object (dev profile: full debug info; optimized and without
/// overflow/UB-check panic paths, as every BPF build must be, see the workspace Cargo.toml);
/// returns its path.
fn build_debug_object() -> anyhow::Result<PathBuf> {
    let mut cmd = ebpf_cargo("build");
    // The dependencies (core, aya-ebpf, observer-common) get the same BPF-safe dev settings as
    // observer-ebpf itself has in the workspace manifest.
    for package in ["\"*\"", "observer-common"] {
        for setting in ["opt-level=3", "debug-assertions=false", "overflow-checks=false"] {
            cmd.args(["--config", &format!("profile.dev.package.{package}.{setting}")]);
        }
    }
    shell::run(&mut cmd).context("building the debug-profile eBPF object")?;
    let object = ebpf_target_dir().join("bpfel-unknown-none/debug/observer");
    if !object.exists() {
        bail!("the debug-profile eBPF build left no object at {}", object.display());
    }
    Ok(object)
}
