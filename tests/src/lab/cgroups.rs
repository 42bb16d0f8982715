//! Kubelet-style per-pod cgroups (systemd driver naming) under the cgroup v2 hierarchy.

use std::path::{Path, PathBuf};

use super::{spec::PodSpec, LabError};

/// The cgroup v2 mount: `/sys/fs/cgroup` on unified hosts, `/sys/fs/cgroup/unified` on hybrid ones.
pub fn cgroup2_root() -> Result<PathBuf, LabError> {
    let mounts = std::fs::read_to_string("/proc/mounts").map_err(LabError::io("reading /proc/mounts"))?;
    let mut found: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (_src, target, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(target))
        })
        .collect();
    found.sort_by_key(|p| p.components().count());
    found.into_iter().next().ok_or(LabError::NoCgroup2)
}

/// `kubepods-besteffort-pod<uid with _>.slice`, as kubelet's systemd cgroup driver names it.
pub fn pod_slice(uid: &str) -> String {
    format!("kubepods-besteffort-pod{}.slice", uid.replace('-', "_"))
}

/// Container scope as containerd names it under systemd.
pub fn container_scope(container_id: &str) -> String {
    format!("cri-containerd-{container_id}.scope")
}

/// Path of a pod container's cgroup inside the lab's cgroup.
pub fn container_cgroup(lab_cgroup: &Path, pod_uid: &str, container_id: &str) -> PathBuf {
    lab_cgroup
        .join("kubepods.slice")
        .join("kubepods-besteffort.slice")
        .join(pod_slice(pod_uid))
        .join(container_scope(container_id))
}

/// Deterministic pseudo-random hex derived from `seed` (uids and container ids per lab).
pub fn hex_id(seed: &str, len: usize) -> String {
    let mut out = String::new();
    let mut state: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes() {
        state = (state ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.push_str(&format!("{state:016x}"));
    }
    out.truncate(len);
    out
}

/// A Kubernetes-style uid (8-4-4-4-12) for a pod of a lab.
pub fn pod_uid(lab: &str, pod: &PodSpec) -> String {
    let h = hex_id(&format!("{lab}/{}", pod.key()), 32);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_like_kubelet() {
        assert_eq!(
            pod_slice("3f2a9c1e-0b4d-4e6f-8a7b-1c2d3e4f5a6b"),
            "kubepods-besteffort-pod3f2a9c1e_0b4d_4e6f_8a7b_1c2d3e4f5a6b.slice"
        );
        assert_eq!(container_scope("ab12"), "cri-containerd-ab12.scope");
        assert_eq!(hex_id("x", 64).len(), 64);
        assert_ne!(hex_id("a", 16), hex_id("b", 16));
    }
}
