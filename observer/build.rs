//! Builds observer-ebpf for bpfel-unknown-none with aya-build and leaves the object in OUT_DIR.
//! With `AYA_BUILD_SKIP=1` (the fuzz targets, which never load programs) the object is an empty
//! placeholder and `loader::load` refuses it with a clear error.
use std::path::PathBuf;

use anyhow::{anyhow, Context as _};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?);
    let ebpf_dir =
        manifest_dir.parent().ok_or_else(|| anyhow!("observer crate has no parent directory"))?.join("observer-ebpf");
    let root_dir = ebpf_dir.to_str().ok_or_else(|| anyhow!("path {} is not UTF-8", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package { name: "observer-ebpf", root_dir, ..Default::default() }],
        Toolchain::default(),
    )?;
    let object = PathBuf::from(std::env::var("OUT_DIR").context("OUT_DIR")?).join("observer");
    if !object.exists() {
        // aya-build skipped the eBPF build (AYA_BUILD_SKIP): leave an empty object behind.
        std::fs::write(&object, b"").with_context(|| format!("writing {}", object.display()))?;
    }
    Ok(())
}
