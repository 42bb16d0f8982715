//! A lab left running (`cargo xtask lab up`) is described by a state file so `lab down` can
//! remove exactly what was made; `lab clean` removes anything left by crashed runs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{cgroups::cgroup2_root, cmd, LabError, LAB_PREFIX};

pub const STATE_DIR: &str = "/run/observer-lab";

/// Everything a lab created, in creation order.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LabState {
    pub name: String,
    pub netns: Vec<String>,
    /// Cgroup directories (parents before children).
    pub cgroups: Vec<PathBuf>,
    /// PIDs of the processes the lab started.
    pub pids: Vec<u32>,
    /// Directory holding the inventory and other files.
    pub dir: PathBuf,
}

impl LabState {
    pub fn path(name: &str) -> PathBuf {
        Path::new(STATE_DIR).join(format!("{name}.json"))
    }

    pub fn save(&self) -> Result<PathBuf, LabError> {
        std::fs::create_dir_all(STATE_DIR).map_err(LabError::io(format!("creating {STATE_DIR}")))?;
        let path = Self::path(&self.name);
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| LabError::State { path: path.clone(), detail: e.to_string() })?;
        std::fs::write(&path, text).map_err(LabError::io(format!("writing {}", path.display())))?;
        Ok(path)
    }

    pub fn load(name: &str) -> Result<Self, LabError> {
        let path = Self::path(name);
        let text = std::fs::read_to_string(&path).map_err(LabError::io(format!("reading {}", path.display())))?;
        serde_json::from_str(&text).map_err(|e| LabError::State { path, detail: e.to_string() })
    }

    /// Kills the lab's processes, deletes its namespaces and cgroups and files. Best effort:
    /// every step runs, the first error is returned.
    pub fn teardown(&self) -> Result<(), LabError> {
        let mut first_err = None;
        for &pid in &self.pids {
            kill_and_reap(pid);
        }
        // Processes placed in the lab's cgroups by it (e.g. a connect cut short) go too.
        for cg in self.cgroups.iter().rev() {
            kill_cgroup_members(cg);
        }
        for ns in self.netns.iter().rev() {
            if Path::new("/run/netns").join(ns).exists() {
                if let Err(e) = cmd::run("ip", &["netns", "del", ns]) {
                    first_err.get_or_insert(e);
                }
            }
        }
        for cg in self.cgroups.iter().rev() {
            if cg.exists() {
                if let Err(e) = remove_cgroup(cg) {
                    first_err.get_or_insert(e);
                }
            }
        }
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        let _ = std::fs::remove_file(Self::path(&self.name));
        first_err.map_or(Ok(()), Err)
    }
}

fn kill_and_reap(pid: u32) {
    // SAFETY: kill(2)/waitpid(2) on a PID the lab started.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
        libc::waitpid(pid as i32, std::ptr::null_mut(), libc::WNOHANG);
    }
}

fn kill_cgroup_members(cg: &Path) {
    let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
        kill_and_reap(pid);
    }
}

/// rmdir, retrying briefly while killed processes exit.
fn remove_cgroup(cg: &Path) -> Result<(), LabError> {
    let mut last = None;
    for _ in 0..50 {
        match std::fs::remove_dir(cg) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                last = Some(e);
                kill_cgroup_members(cg);
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
    Err(LabError::Io {
        what: format!("removing cgroup {}", cg.display()),
        source: last.unwrap_or_else(|| std::io::Error::other("unknown")),
    })
}

/// Labs that exist now: from state files, namespaces and cgroups carrying the lab prefix.
pub fn leftovers() -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    if let Ok(dir) = std::fs::read_dir(STATE_DIR) {
        names.extend(dir.flatten().filter_map(|e| e.file_name().to_str()?.strip_suffix(".json").map(String::from)));
    }
    if let Ok(list) = cmd::run("ip", &["netns", "list"]) {
        names.extend(
            list.lines()
                .filter_map(|l| l.split_whitespace().next())
                .filter(|n| n.starts_with(LAB_PREFIX))
                .filter_map(|n| n.split_once('-').map(|(lab, _)| lab.to_string())),
        );
    }
    if let Ok(root) = cgroup2_root() {
        if let Ok(dir) = std::fs::read_dir(root) {
            names.extend(dir.flatten().filter_map(|e| {
                let n = e.file_name().to_str()?.to_string();
                (n.starts_with(LAB_PREFIX)).then(|| n.trim_end_matches(".slice").to_string())
            }));
        }
    }
    names.retain(|n| is_lab_name(n));
    names.sort();
    names.dedup();
    names
}

/// `obl` followed by 8 hex digits.
pub fn is_lab_name(name: &str) -> bool {
    name.strip_prefix(LAB_PREFIX).is_some_and(|rest| rest.len() == 8 && rest.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Reconstructs what a lab made when its state file is gone (namespaces and cgroups carry its name).
pub fn discover(name: &str) -> LabState {
    if let Ok(state) = LabState::load(name) {
        return state;
    }
    let prefix = format!("{name}-");
    let netns = cmd::run("ip", &["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&prefix))
        .map(String::from)
        .collect();
    let mut cgroups = Vec::new();
    if let Ok(root) = cgroup2_root() {
        collect_dirs(&root.join(format!("{name}.slice")), &mut cgroups);
    }
    LabState { name: name.to_string(), netns, cgroups, pids: Vec::new(), dir: std::env::temp_dir().join(name) }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    if !dir.is_dir() {
        return;
    }
    out.push(dir.to_path_buf());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}
