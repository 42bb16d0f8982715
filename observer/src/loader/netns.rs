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
    #[error("{path} is not a network namespace file (setns: EINVAL): pass a name from `ip netns list`, or a path such as /proc/PID/ns/net or /run/netns/NAME")]
    NotANetns { path: PathBuf },
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

    /// Runs `f` with the current thread inside this namespace, then returns to the original one,
    /// also when `f` fails or panics (a [`Return`] guard does it on drop). An error `f` returns
    /// is `f`'s to report: it comes back in `T`.
    pub fn run_inside<T>(&self, f: impl FnOnce() -> T) -> Result<T, NetnsError> {
        let guard = self.enter()?;
        let result = f();
        guard.restore()?;
        Ok(result)
    }

    /// Moves the current thread into this namespace; the returned guard moves it back.
    fn enter(&self) -> Result<Return, NetnsError> {
        let original_path = PathBuf::from("/proc/thread-self/ns/net");
        let original = File::open(&original_path).map_err(|source| NetnsError::Open { path: original_path, source })?;
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| enter_error(&self.path, source))?;
        Ok(Return { original: Some(original) })
    }
}

/// What a failed `setns(fd, CLONE_NEWNET)` means: EINVAL is a file that is no network namespace
/// (setns(2): "fd refers to a namespace whose type does not match nstype", or to no namespace at
/// all), EPERM is a missing CAP_SYS_ADMIN; anything else is reported as it is.
fn enter_error(path: &Path, source: nix::Error) -> NetnsError {
    match source {
        nix::Error::EINVAL => NetnsError::NotANetns { path: path.to_path_buf() },
        source => NetnsError::Enter { path: path.to_path_buf(), source },
    }
}

/// Returns the current thread to the network namespace it was in before [`NetnsTarget::enter`]:
/// explicitly with [`Return::restore`] (its error reported), or when dropped, e.g. while a panic
/// unwinds through `run_inside` (then a failure is logged: there is no caller left to tell).
struct Return {
    /// The original namespace; None once restored.
    original: Option<File>,
}

impl Return {
    fn restore(mut self) -> Result<(), NetnsError> {
        match self.original.take() {
            Some(original) => setns(original.as_fd(), CloneFlags::CLONE_NEWNET).map_err(NetnsError::Return),
            None => Ok(()),
        }
    }
}

impl Drop for Return {
    fn drop(&mut self) {
        if let Some(original) = self.original.take() {
            if let Err(err) = setns(original.as_fd(), CloneFlags::CLONE_NEWNET) {
                tracing::error!("{}", NetnsError::Return(err));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current_inode() -> u64 {
        std::fs::metadata("/proc/thread-self/ns/net").map(|m| m.ino()).unwrap_or_default()
    }

    /// A fresh network namespace, made by a helper thread that unshares and opens its own.
    fn new_namespace() -> NetnsTarget {
        std::thread::spawn(|| {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())?;
            NetnsTarget::resolve(None).map_err(|e| e.to_string())
        })
        .join()
        .unwrap_or_else(|_| Err("helper thread panicked".into()))
        .unwrap_or_else(|e| panic!("creating a test network namespace: {e}"))
    }

    #[test]
    fn a_file_that_is_no_namespace_is_named_so_not_a_missing_capability() {
        // setns checks the file's type before any capability: EINVAL with or without root.
        let file = std::env::temp_dir().join(format!("observer-not-a-netns-{}", std::process::id()));
        std::fs::write(&file, "node-a\n").expect("temp file");
        let target = NetnsTarget::resolve(Some(&file.to_string_lossy())).expect("the file exists");
        let err = target.run_inside(|| ()).expect_err("not a namespace");
        let _ = std::fs::remove_file(&file);
        assert!(matches!(err, NetnsError::NotANetns { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("is not a network namespace file"), "{text}");
        assert!(!text.contains("CAP_SYS_ADMIN"), "{text}");
        let eperm = enter_error(Path::new("/run/netns/x"), nix::Error::EPERM).to_string();
        assert!(eperm.contains("needs CAP_SYS_ADMIN"), "{eperm}");
    }

    #[test]
    #[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
    fn the_thread_returns_to_its_namespace_after_success_failure_and_panic() {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "this privileged test needs root (setns)");
        let target = new_namespace();
        // On a thread of its own, so that a failure cannot leave the test harness's threads moved.
        std::thread::spawn(move || {
            let home = current_inode();
            assert_ne!(home, target.inode, "the test namespace must differ from the thread's");
            let inside = target.run_inside(current_inode).expect("run_inside");
            assert_eq!(inside, target.inode, "the closure runs inside the target namespace");
            assert_eq!(current_inode(), home, "back after success");

            let failed = target.run_inside(|| Err::<(), _>("closure failed")).expect("run_inside");
            assert_eq!(failed, Err("closure failed"), "the closure's error is handed back");
            assert_eq!(current_inode(), home, "back after the closure failed");

            let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                target.run_inside(|| -> () { panic!("closure panicked") })
            }));
            assert!(panicked.is_err(), "the panic propagates");
            assert_eq!(current_inode(), home, "back after the closure panicked");
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    }
}
