//! Entering a network namespace on the current thread only, and coming back.
//!
//! `ip netns exec` would remount /sys (hiding cgroup and tracefs); `setns(CLONE_NEWNET)` on the
//! attaching thread changes nothing else.

use std::{
    fs::File,
    os::{fd::AsFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use nix::sched::{setns, CloneFlags};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace `{name}` not found at {path}: list them with `ip netns list`, or pass a path such as /proc/PID/ns/net")]
    NotFound { name: String, path: PathBuf },
    #[error("cannot open network namespace {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("cannot enter network namespace {path}: {source} (needs CAP_SYS_ADMIN)")]
    Enter { path: PathBuf, source: nix::Error },
    #[error("cannot return to the original network namespace: {0}")]
    Return(nix::Error),
}

/// A network namespace to watch: the current one, or one named by `ip netns` or a path.
#[derive(Debug)]
pub struct NetnsTarget {
    /// Display name (the `--netns` argument, or "current").
    pub name: String,
    path: PathBuf,
    file: File,
    /// Inode number of the namespace (what the kernel reports as `net->ns.inum`).
    pub inode: u64,
}

impl NetnsTarget {
    /// `None` = the current namespace; a bare name = `/run/netns/NAME`; anything with a `/` = a path.
    pub fn resolve(arg: Option<&str>) -> Result<Self, NetnsError> {
        let (name, path) = match arg {
            None => ("current".to_string(), PathBuf::from("/proc/thread-self/ns/net")),
            Some(a) if a.contains('/') => (a.to_string(), PathBuf::from(a)),
            Some(a) => (a.to_string(), Path::new("/run/netns").join(a)),
        };
        if !path.exists() {
            return Err(NetnsError::NotFound { name, path });
        }
        let file = File::open(&path).map_err(|source| NetnsError::Open { path: path.clone(), source })?;
        let inode = file.metadata().map_err(|source| NetnsError::Open { path: path.clone(), source })?.ino();
        Ok(Self { name, path, file, inode })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the current thread inside this namespace, then returns to the original one.
    pub fn run_inside<T>(&self, f: impl FnOnce() -> T) -> Result<T, NetnsError> {
        let original_path = PathBuf::from("/proc/thread-self/ns/net");
        let original = File::open(&original_path).map_err(|source| NetnsError::Open { path: original_path, source })?;
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|source| NetnsError::Enter { path: self.path.clone(), source })?;
        let result = f();
        setns(original.as_fd(), CloneFlags::CLONE_NEWNET).map_err(NetnsError::Return)?;
        Ok(result)
    }
}
