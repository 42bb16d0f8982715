//! Naming cgroup ids (from the connect hook) by their path, and the Kubernetes pod and
//! container a path belongs to (kubelet's systemd and cgroupfs naming).

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Deepest directory level walked under the root, and the most directories remembered.
const MAX_DEPTH: usize = 12;
const MAX_ENTRIES: usize = 200_000;
/// A miss re-walks the tree at most this often (new pods appear; walks are not per event).
const REWALK_EVERY: Duration = Duration::from_secs(1);

/// cgroup id (the cgroup directory's inode on cgroup v2) -> path relative to the root.
pub struct CgroupNames {
    root: PathBuf,
    by_id: HashMap<u64, String>,
    last_walk: Option<Instant>,
    /// Names known in advance (a replay): the file system is never read.
    known_only: bool,
}

impl CgroupNames {
    pub fn new(root: &Path) -> Self {
        Self { root: root.to_path_buf(), by_id: HashMap::new(), last_walk: None, known_only: false }
    }

    /// Names only these (id -> path), as recorded: for replaying on another host.
    pub fn known(by_id: HashMap<u64, String>) -> Self {
        Self { root: PathBuf::new(), by_id, last_walk: None, known_only: true }
    }

    /// Path of the cgroup relative to the root (`/` for the root itself).
    pub fn path(&mut self, id: u64) -> Option<String> {
        if let Some(p) = self.by_id.get(&id) {
            return Some(p.clone());
        }
        if self.known_only || self.last_walk.is_some_and(|t| t.elapsed() < REWALK_EVERY) {
            return None;
        }
        self.walk();
        self.by_id.get(&id).cloned()
    }

    fn walk(&mut self) {
        self.last_walk = Some(Instant::now());
        self.by_id.clear();
        let mut stack = vec![(self.root.clone(), 0usize)];
        while let Some((dir, depth)) = stack.pop() {
            if self.by_id.len() >= MAX_ENTRIES {
                break;
            }
            let Ok(meta) = std::fs::metadata(&dir) else { continue };
            let rel = dir.strip_prefix(&self.root).map(|p| format!("/{}", p.display())).unwrap_or_default();
            self.by_id.insert(meta.ino(), rel);
            if depth >= MAX_DEPTH {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push((entry.path(), depth + 1));
                }
            }
        }
    }
}

/// The pod (uid) and container a cgroup path belongs to, when kubelet made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodCgroup {
    pub pod_uid: String,
    pub container_id: Option<String>,
}

/// Parses `...kubepods-besteffort-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope`
/// (systemd driver) or `.../kubepods/besteffort/pod<uid>/<id>` (cgroupfs driver).
pub fn pod_of(path: &str) -> Option<PodCgroup> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let (idx, uid) = parts.iter().enumerate().find_map(|(i, part)| {
        let stem = part.strip_suffix(".slice").unwrap_or(part);
        let pod = stem.rsplit_once("-pod").map(|(_, u)| u).or_else(|| stem.strip_prefix("pod"))?;
        let uid = pod.replace('_', "-");
        (uid.len() == 36 && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-')).then_some((i, uid))
    })?;
    let container_id = parts.get(idx + 1).map(|c| {
        let c = c.strip_suffix(".scope").unwrap_or(c);
        c.rsplit_once('-').map_or(c, |(_, id)| id).to_string()
    });
    Some(PodCgroup { pod_uid: uid, container_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubelet_systemd_and_cgroupfs_paths() {
        let systemd = "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod3f2a9c1e_0b4d_4e6f_8a7b_1c2d3e4f5a6b.slice/cri-containerd-ab12cd.scope";
        assert_eq!(
            pod_of(systemd),
            Some(PodCgroup {
                pod_uid: "3f2a9c1e-0b4d-4e6f-8a7b-1c2d3e4f5a6b".into(),
                container_id: Some("ab12cd".into())
            })
        );
        let guaranteed = "/kubepods.slice/kubepods-pod3f2a9c1e_0b4d_4e6f_8a7b_1c2d3e4f5a6b.slice";
        assert_eq!(pod_of(guaranteed).map(|p| p.container_id), Some(None));
        let cgroupfs = "/kubepods/burstable/pod3f2a9c1e-0b4d-4e6f-8a7b-1c2d3e4f5a6b/0123abcd";
        assert_eq!(pod_of(cgroupfs).and_then(|p| p.container_id).as_deref(), Some("0123abcd"));
        assert_eq!(pod_of("/system.slice/sshd.service"), None);
        assert_eq!(pod_of("/kubepods.slice/kubepods-podnothex.slice"), None);
    }

    #[test]
    fn names_cgroup_directories_by_inode() {
        let root = std::env::temp_dir().join(format!("observer-cg-test-{}", std::process::id()));
        let leaf = root.join("a.slice/b.scope");
        std::fs::create_dir_all(&leaf).expect("mkdir");
        let ino = std::fs::metadata(&leaf).expect("meta").ino();
        let mut names = CgroupNames::new(&root);
        assert_eq!(names.path(ino).as_deref(), Some("/a.slice/b.scope"));
        assert_eq!(names.path(u64::MAX), None);
        std::fs::remove_dir_all(&root).expect("cleanup");
    }
}
