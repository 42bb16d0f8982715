//! `cargo xtask test`: setup, build, clippy, every test, a short run of every fuzz target, then
//! a check that no lab is left.

use anyhow::bail;
use observer_lab::lab::state;

use crate::{fuzz, setup, shell};

pub fn run(extra: &[String]) -> anyhow::Result<()> {
    setup::run()?;
    shell::build()?;
    shell::run(shell::command("cargo").args(["fmt", "--all", "--check"]))?;
    let mut clippy = shell::command("cargo");
    clippy.args(["clippy", "--all-targets", "--quiet", "--", "-D", "warnings"]);
    shell::run(&mut clippy)?;
    let mut test = shell::command("cargo");
    test.args(["test", "--quiet"]).env("OBSERVER_BIN_DIR", shell::target_debug());
    if !extra.is_empty() {
        test.arg("--").args(extra);
    }
    let result = shell::run(&mut test).and_then(|()| fuzz::run(fuzz::SMOKE_SECS, &[]));
    // Every lab tears itself down, even when a test fails; anything left is a bug.
    let left = if shell::is_root() { state::leftovers() } else { Vec::new() };
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
