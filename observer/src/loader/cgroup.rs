//! Attaching the cgroup hooks (connect4/connect6, sock_ops, optionally cgroup_skb) to a cgroup v2
//! directory.

use std::{
    fs::File,
    path::{Path, PathBuf},
};

use aya::{
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, SockOps},
    Ebpf,
};
use tracing::warn;

use super::programs::{program_mut, KernelInfo, CGROUP_EGRESS, CGROUP_INGRESS, CONNECT4, CONNECT6, SOCKOPS};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup v2 mount found in /proc/mounts: pass --cgroup-root PATH of a cgroup2 directory")]
    NoCgroup2,
    #[error("cannot open cgroup directory {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
}

/// The cgroup v2 mount (`/sys/fs/cgroup` on unified hosts, `/sys/fs/cgroup/unified` on hybrid).
pub fn default_root() -> Result<PathBuf, CgroupError> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    cgroup2_mounts(&mounts).into_iter().next().ok_or(CgroupError::NoCgroup2)
}

/// cgroup2 mount points, shallowest first.
pub fn cgroup2_mounts(proc_mounts: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = proc_mounts
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (_src, target, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(target))
        })
        .collect();
    found.sort_by_key(|p| p.components().count());
    found
}

/// Which cgroup hooks got attached.
#[derive(Debug, Default, Clone, Copy)]
pub struct CgroupHooks {
    pub connect: bool,
    pub sockops: bool,
    pub skb: bool,
}

/// Attaches the loaded cgroup programs to `root`, the cgroup_skb pair only when `skb` (they run
/// on every packet of every socket below `root`; connect and sock_ops run per connection); a hook
/// that fails is a warning naming it.
///
/// # Errors
/// [`CgroupError::Open`] when `root` cannot be opened.
pub fn attach(ebpf: &mut Ebpf, root: &Path, loaded: &KernelInfo, skb: bool) -> Result<CgroupHooks, CgroupError> {
    let dir = File::open(root).map_err(|source| CgroupError::Open { path: root.to_path_buf(), source })?;
    let mut hooks = CgroupHooks::default();
    if skb && loaded.cgroup_skb_available {
        hooks.skb = attach_each(
            [(CGROUP_INGRESS, CgroupSkbAttachType::Ingress), (CGROUP_EGRESS, CgroupSkbAttachType::Egress)],
            root,
            "packets at the pods' sockets will not be reported",
            |(name, attach_type)| {
                let program = program_mut::<CgroupSkb>(ebpf, name).map_err(|e| e.to_string())?;
                program.attach(&dir, attach_type, CgroupAttachMode::Single).map(drop).map_err(|e| e.to_string())
            },
        );
    }
    if loaded.connect_available {
        hooks.connect = attach_each(
            [(CONNECT4, ()), (CONNECT6, ())],
            root,
            "connect() attempts will not be reported",
            |(name, ())| {
                let program = program_mut::<CgroupSockAddr>(ebpf, name).map_err(|e| e.to_string())?;
                program.attach(&dir, CgroupAttachMode::Single).map(drop).map_err(|e| e.to_string())
            },
        );
    }
    if loaded.sockops_available {
        let attached = program_mut::<SockOps>(ebpf, SOCKOPS)
            .map_err(|e| e.to_string())
            .and_then(|p| p.attach(&dir, CgroupAttachMode::Single).map_err(|e| e.to_string()));
        match attached {
            Ok(_) => hooks.sockops = true,
            Err(err) => warn!(
                "sock_ops not attached to {}: {err}; SYN retransmits and failed connects will not be reported",
                root.display()
            ),
        }
    }
    Ok(hooks)
}

/// Attaches each named program with `attach`; a failure is a warning saying what is lost.
/// Returns whether all of them got attached.
fn attach_each<T: Copy>(
    programs: impl IntoIterator<Item = (&'static str, T)>,
    root: &Path,
    lost: &str,
    mut attach: impl FnMut((&'static str, T)) -> Result<(), String>,
) -> bool {
    let mut ok = true;
    for item in programs {
        if let Err(err) = attach(item) {
            warn!("cgroup program {} not attached to {}: {err}; {lost}", item.0, root.display());
            ok = false;
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_unified_mount_on_hybrid_hosts() {
        let mounts = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(cgroup2_mounts(mounts), vec![PathBuf::from("/sys/fs/cgroup/unified")]);
        assert_eq!(cgroup2_mounts("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n"), vec![PathBuf::from("/sys/fs/cgroup")]);
        assert!(cgroup2_mounts("proc /proc proc rw 0 0\n").is_empty());
    }
}
