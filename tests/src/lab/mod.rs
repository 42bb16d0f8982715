//! Building, driving and tearing down a lab.

mod build;
pub mod cgroups;
pub mod cmd;
pub mod faults;
pub mod inventory;
pub mod processes;
pub mod rulesets;
pub mod sidecar;
pub mod spec;
pub mod state;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

pub use build::Lab;

/// Name prefix of every lab resource (namespaces, cgroups, state files).
pub const LAB_PREFIX: &str = "obl";

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("`{command}` failed ({status}): {stderr}")]
    Command { command: String, status: String, stderr: String },
    #[error(
        "cannot run `{command}`: {source} (is it installed? `cargo xtask setup` installs iproute2, iptables, nftables)"
    )]
    Spawn { command: String, source: std::io::Error },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("no pod named `{0}` in the lab")]
    NoSuchPod(String),
    #[error("no node named `{0}` in the lab")]
    NoSuchNode(String),
    #[error("the lab has no control-plane namespace (build it with `LabSpec::with_control_plane()`)")]
    NoControlPlane,
    #[error("lab process `{what}` did not become ready: {detail}")]
    NotReady { what: String, detail: String },
    #[error("the lab needs root (network namespaces, cgroups, iptables)")]
    NotRoot,
    #[error("no cgroup v2 mount found (looked in /proc/mounts for cgroup2)")]
    NoCgroup2,
    #[error("this kernel cannot create `{kind}` links (it lacks {config}): the overlay variant needs them")]
    UnsupportedLink { kind: &'static str, config: &'static str },
    #[error("lab state file {}: {detail}", path.display())]
    State { path: PathBuf, detail: String },
}

impl LabError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| LabError::Io { what, source }
    }
}

/// Programs the lab runs.
#[derive(Clone, Debug)]
pub struct Tools {
    /// The `lab-pod` helper binary (built from this crate).
    pub lab_pod: PathBuf,
}

impl Tools {
    /// `lab-pod` next to the running executable (target/debug or target/debug/deps/..).
    pub fn beside_current_exe() -> Result<Self, LabError> {
        let exe = std::env::current_exe().map_err(LabError::io("locating the current executable"))?;
        let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
        if dir.ends_with("deps") {
            dir.pop();
        }
        Ok(Self { lab_pod: dir.join("lab-pod") })
    }
}

/// Result of one connection attempt made from inside a pod (`lab-pod connect`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ConnectOutcome {
    pub target: String,
    /// Source address:port the client used ("" when the connect failed).
    pub local: String,
    /// `ok`, `timeout`, `refused`, `reset`, `closed`, `unreachable`, `error`.
    pub result: String,
    pub reply: String,
    pub elapsed_ms: u64,
}

impl ConnectOutcome {
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local.parse().ok()
    }
}
