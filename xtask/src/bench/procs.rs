//! Processes of a benchmark run: started in a namespace (optionally pinned to a CPU), stopped by
//! their PID, their stderr lines time-stamped on arrival; CPU time and memory from /proc; BPF
//! program run-time statistics from the fdinfo of a process's program descriptors.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use crate::shell;

/// `target/release/NAME`.
pub fn release_bin(name: &str) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| shell::root().join("target"))
        .join("release")
        .join(name)
}

/// A command inside network namespace `netns` (None: the current one), pinned to `cpu`.
pub fn in_netns(netns: Option<&str>, cpu: Option<usize>, program: &str, args: &[&str]) -> Command {
    let mut words: Vec<String> = Vec::new();
    if let Some(ns) = netns {
        words.extend(["ip", "netns", "exec", ns].map(String::from));
    }
    if let Some(cpu) = cpu {
        words.extend(["taskset".to_string(), "-c".to_string(), cpu.to_string()]);
    }
    words.push(program.to_string());
    words.extend(args.iter().map(|a| a.to_string()));
    let mut cmd = shell::command(&words[0]);
    cmd.args(&words[1..]);
    cmd
}

/// Runs to completion and returns stdout; fails with stderr on a non-zero exit.
pub fn output_of(mut cmd: Command) -> anyhow::Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("running {shown}"))?;
    if !out.status.success() {
        bail!("{shown} failed: {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A background process; killed (by its PID) when dropped.
pub struct Background {
    child: Child,
    /// Lines as they arrived: (when, from stdout, text).
    pub stderr: Arc<Mutex<Vec<(Instant, bool, String)>>>,
}

impl Background {
    /// Starts `cmd`; stderr lines (and stdout's, when `with_stdout`) are collected.
    pub fn start(mut cmd: Command, with_stdout: bool) -> anyhow::Result<Self> {
        let shown = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(if with_stdout { Stdio::piped() } else { Stdio::null() })
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {shown}"))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers: Vec<(bool, Box<dyn std::io::Read + Send>)> = [
            child.stderr.take().map(|p| (false, Box::new(p) as Box<dyn std::io::Read + Send>)),
            child.stdout.take().map(|p| (true, Box::new(p) as Box<dyn std::io::Read + Send>)),
        ]
        .into_iter()
        .flatten()
        .collect();
        for (is_stdout, pipe) in readers {
            let lines = Arc::clone(&stderr);
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Ok(mut l) = lines.lock() {
                        l.push((Instant::now(), is_stdout, line));
                    }
                }
            });
        }
        Ok(Self { child, stderr })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) until a stderr line contains `needle`; returns when it arrived.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(at) = self.find(needle, None) {
                return Ok(at);
            }
            thread::sleep(Duration::from_millis(20));
        }
        bail!("no `{needle}` within {timeout:?}; stderr: {:?}", self.lines().iter().rev().take(5).collect::<Vec<_>>())
    }

    /// When the first line containing `needle` (after `since`) arrived.
    pub fn find(&self, needle: &str, since: Option<Instant>) -> Option<Instant> {
        let lines = self.stderr.lock().ok()?;
        lines.iter().find(|(at, _, l)| l.contains(needle) && since.is_none_or(|s| *at >= s)).map(|(at, _, _)| *at)
    }

    /// When the first line containing both `a` and `b` arrived at or after `since`.
    pub fn find_after(&self, a: &str, b: &str, since: Instant) -> Option<Instant> {
        let lines = self.stderr.lock().ok()?;
        lines.iter().find(|(at, _, l)| *at >= since && l.contains(a) && l.contains(b)).map(|(at, _, _)| *at)
    }

    pub fn lines(&self) -> Vec<String> {
        self.stderr.lock().map(|l| l.iter().map(|(_, _, s)| s.clone()).collect()).unwrap_or_default()
    }

    /// Everything the process wrote to stdout, in order.
    pub fn stdout_text(&self) -> String {
        self.stderr
            .lock()
            .map(|l| l.iter().filter(|(_, out, _)| *out).map(|(_, _, s)| s.as_str()).collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    /// SIGINT, then waits up to 10 s (SIGKILL after) and returns the output lines.
    pub fn stop(self) -> Vec<String> {
        self.stop_keep().lines()
    }

    /// [`Background::stop`], keeping the collected output.
    pub fn stop_keep(mut self) -> Self {
        // SAFETY: signalling our own child by its PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        thread::sleep(Duration::from_millis(50));
        self
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The process and its children's CPU time (user + system), in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks: f64 = [11, 12].iter().filter_map(|i| fields.get(*i).and_then(|v| v.parse::<f64>().ok())).sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks / hz
}

/// Resident set size in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// One BPF object held by a process, from `/proc/PID/fdinfo`.
#[derive(Clone, Debug, Default)]
pub struct BpfFd {
    pub prog_id: Option<u64>,
    pub map_id: Option<u64>,
    pub run_time_ns: u64,
    pub run_cnt: u64,
    pub memlock: u64,
    pub max_entries: u64,
}

/// BPF programs and maps of `pid`, keyed by id.
pub fn bpf_fds(pid: u32) -> BTreeMap<(bool, u64), BpfFd> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return out };
    for entry in dir.flatten() {
        let fd = parse_fdinfo(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        match (fd.prog_id, fd.map_id) {
            (Some(id), _) => {
                out.insert((true, id), fd);
            }
            (_, Some(id)) => {
                out.insert((false, id), fd);
            }
            _ => {}
        }
    }
    out
}

fn parse_fdinfo(text: &str) -> BpfFd {
    let mut fd = BpfFd::default();
    // Link descriptors name their program too (`prog_id`) but carry no statistics.
    if text.lines().any(|l| l.starts_with("link_type:")) {
        return fd;
    }
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let value = value.trim().parse::<u64>().ok();
        match key {
            "prog_id" => fd.prog_id = value,
            "map_id" => fd.map_id = value,
            "run_time_ns" => fd.run_time_ns = value.unwrap_or(0),
            "run_cnt" => fd.run_cnt = value.unwrap_or(0),
            "memlock" => fd.memlock = value.unwrap_or(0),
            "max_entries" => fd.max_entries = value.unwrap_or(0),
            _ => {}
        }
    }
    fd
}

/// `bpftool prog show id ID` / `map show` name.
pub fn bpf_name(prog: bool, id: u64) -> String {
    let kind = if prog { "prog" } else { "map" };
    let out = shell::output(shell::command("bpftool").args(["-j", kind, "show", "id", &id.to_string()]));
    serde_json::from_str::<serde_json::Value>(&out)
        .ok()
        .and_then(|v| v["name"].as_str().map(String::from))
        .unwrap_or_else(|| format!("{kind}#{id}"))
}

/// Median of `values` (0 for none).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

/// The `q` quantile (0..=1) by nearest rank.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = values.to_vec();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_a_programs_fdinfo() {
        let fd = super::parse_fdinfo("pos:\t0\nflags:\t02000002\nprog_type:\t3\nprog_id:\t11999\nrun_time_ns:\t92732110\nrun_cnt:\t234746\nmemlock:\t16384\n");
        assert_eq!((fd.prog_id, fd.run_time_ns, fd.run_cnt, fd.memlock), (Some(11999), 92_732_110, 234_746, 16384));
        let link = super::parse_fdinfo("link_type:\ttcx\nlink_id:\t7\nprog_tag:\tc4c1\nprog_id:\t11999\n");
        assert_eq!(link.prog_id, None, "a link is not the program");
    }
}
