//! Network namespaces owned by one test, for tests that need bare interfaces rather than the
//! whole lab.

use std::{
    io::Write as _,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

/// A network namespace of this test process, deleted (with its interfaces) on drop.
pub struct Netns(pub String);

impl Netns {
    pub fn new(tag: &str) -> Self {
        let name = format!("obsrb{}{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "delete", &name]).status();
        let ns = Self(name);
        ns.run(&["netns", "add", &ns.0]);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's inode (what observer reports as `netns`).
    pub fn inode(&self) -> u64 {
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(format!("/run/netns/{}", self.0)).expect("netns"))
    }

    /// Sends raw Ethernet frames out of `iface` of this namespace: see [`send_frames`].
    pub fn send_frames(&self, iface: &str, frames: &[Vec<u8>]) {
        send_frames(&self.0, iface, frames.to_vec());
    }

    pub fn run(&self, args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("run ip");
        assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// `ip -n NS ARGS`.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", self.0.as_str()];
        full.extend_from_slice(args);
        self.run(&full);
    }

    /// Runs many `ip` commands in this namespace at once (`ip -batch`): one burst of changes.
    pub fn batch(&self, commands: &[String]) {
        let mut child = Command::new("ip")
            .args(["-n", &self.0, "-batch", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ip -batch");
        child.stdin.take().expect("stdin").write_all(commands.join("\n").as_bytes()).expect("write batch");
        let out = child.wait_with_output().expect("ip -batch");
        assert!(out.status.success(), "ip -batch: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Adds veth pairs `{prefix}{i}a`/`{prefix}{i}b` (both ends here, up) in one burst.
    pub fn add_veths(&self, prefix: &str, count: usize) {
        let mut commands: Vec<String> =
            (0..count).map(|i| format!("link add {prefix}{i}a type veth peer name {prefix}{i}b")).collect();
        commands.extend(
            (0..count).flat_map(|i| [format!("link set {prefix}{i}a up"), format!("link set {prefix}{i}b up")]),
        );
        self.batch(&commands);
    }

    pub fn delete_veths(&self, prefix: &str, count: usize) {
        self.batch(&(0..count).map(|i| format!("link del {prefix}{i}a")).collect::<Vec<_>>());
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).status();
    }
}

/// Polls until `done` holds; panics with `what` and the last state otherwise.
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    loop {
        match done() {
            Ok(()) => return,
            Err(state) if start.elapsed() > limit => panic!("{what} not reached within {limit:?}: {state}"),
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Sends raw Ethernet frames out of `iface` of namespace `/run/netns/NETNS` (AF_PACKET, on a
/// thread that enters the namespace): frames the kernel's own stack would never build.
pub fn send_frames(netns: &str, iface: &str, frames: Vec<Vec<u8>>) {
    let path = format!("/run/netns/{netns}");
    let iface = iface.to_string();
    thread::spawn(move || {
        let ns = std::fs::File::open(&path).expect("open netns");
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let index = nix::net::if_::if_nametoindex(iface.as_str()).expect("ifindex");
        // SAFETY: plain socket(2); closed below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
        // SAFETY: all-zero is a valid sockaddr_ll; the fields we need are set.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = index as i32;
        addr.sll_halen = 6;
        for frame in &frames {
            // SAFETY: `frame` and `addr` are valid for the given lengths.
            let n = unsafe {
                libc::sendto(
                    fd,
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(n, frame.len() as isize, "send: {}", std::io::Error::last_os_error());
        }
        // SAFETY: closing the socket opened above.
        unsafe { libc::close(fd) };
    })
    .join()
    .expect("sender thread");
}
