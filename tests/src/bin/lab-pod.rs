//! lab-pod: the processes that stand in for a pod's containers in the lab.
//!
//! It runs already inside the pod's network namespace and cgroup (the lab puts it there before
//! exec). Subcommands:
//! - `serve NAME PORT...`: an application or istiod/apiserver stand-in; answers each connection
//!   with one line and closes.
//! - `proxy NAME`: a sidecar stand-in (run as uid 1337): outbound capture on 15001 (connects to
//!   the original destination), inbound capture on 15006 (connects to 127.0.0.1:<original port>),
//!   and the listeners 15008/15020/15021/15090.
//! - `connect IP:PORT [TIMEOUT_MS]`: one connection attempt; prints one JSON line.
//! - `send udp IP:PORT HEX` / `send ip IPV4 PROTOCOL HEX`: one crafted datagram (a UDP payload,
//!   or an IPv4 payload of that protocol through a raw socket), e.g. a tunnel's outer packet.
//!
//! Hand-written argument parsing keeps this helper dependency-free; it is test support only.

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    os::fd::AsRawFd,
    thread,
    time::{Duration, Instant},
};

const PROXY_OUTBOUND: u16 = 15001;
const PROXY_INBOUND: u16 = 15006;
const PROXY_SERVED: [u16; 4] = [15008, 15020, 15021, 15090];
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
const IO_TIMEOUT: Duration = Duration::from_secs(5);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") if args.len() >= 3 => serve(&args[1], &args[2..]),
        Some("proxy") if args.len() == 2 => proxy(&args[1]),
        Some("send") if args.len() >= 4 => send(&args[1..]),
        Some("connect") if args.len() >= 2 => {
            connect(&args[1], args.get(2).map(String::as_str), args.get(3).map(String::as_str))
        }
        _ => Err("usage: lab-pod serve NAME PORT... | proxy NAME | connect IP:PORT [TIMEOUT_MS [bulk:BYTES]]".into()),
    };
    if let Err(err) = result {
        eprintln!("lab-pod: {err}");
        std::process::exit(2);
    }
}

/// Sends one crafted datagram: `udp IP:PORT HEX` or `ip IPV4 PROTOCOL HEX`.
fn send(args: &[String]) -> Result<(), String> {
    let hex = args.last().map(String::as_str).unwrap_or_default();
    if !hex.len().is_multiple_of(2) {
        return Err(format!("odd-length hex `{hex}`"));
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|e| format!("bad hex at {i}: {e}")))
        .collect::<Result<Vec<u8>, String>>()?;
    match (args[0].as_str(), args.len()) {
        ("udp", 3) => {
            let to: SocketAddr = args[1].parse().map_err(|e| format!("bad address {}: {e}", args[1]))?;
            let socket = std::net::UdpSocket::bind(("0.0.0.0", 0)).map_err(|e| format!("bind: {e}"))?;
            socket.send_to(&bytes, to).map_err(|e| format!("send to {to}: {e}"))?;
            Ok(())
        }
        ("ip", 4) => {
            let to: std::net::Ipv4Addr = args[1].parse().map_err(|e| format!("bad address {}: {e}", args[1]))?;
            let protocol: i32 = args[2].parse().map_err(|e| format!("bad protocol {}: {e}", args[2]))?;
            // SAFETY: socket(2), sendto(2) and close(2) on a descriptor we own, with a valid
            // sockaddr_in and a buffer of `bytes.len()` bytes.
            unsafe {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, protocol);
                if fd < 0 {
                    return Err(format!("raw socket for protocol {protocol}: {}", std::io::Error::last_os_error()));
                }
                let mut addr: libc::sockaddr_in = std::mem::zeroed();
                addr.sin_family = libc::AF_INET as libc::sa_family_t;
                addr.sin_addr.s_addr = u32::from_ne_bytes(to.octets());
                let sent = libc::sendto(
                    fd,
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    0,
                    (&addr as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                );
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                if sent < 0 {
                    return Err(format!("sendto {to}: {err}"));
                }
            }
            Ok(())
        }
        _ => Err("usage: lab-pod send udp IP:PORT HEX | send ip IPV4 PROTOCOL HEX".into()),
    }
}

/// Dual-stack listener on [::]:port (IPv4 arrives as v4-mapped), IPv4-only if IPv6 is off.
fn listen(port: u16) -> Result<TcpListener, String> {
    TcpListener::bind(("::", port))
        .or_else(|_| TcpListener::bind(("0.0.0.0", port)))
        .map_err(|e| format!("bind port {port}: {e}"))
}

/// IPv4-only listener: the capture ports, whose SO_ORIGINAL_DST lookup is IPv4 (istio-iptables
/// rules are installed for IPv4 here).
fn listen_v4(port: u16) -> Result<TcpListener, String> {
    TcpListener::bind(("0.0.0.0", port)).map_err(|e| format!("bind 0.0.0.0:{port}: {e}"))
}

fn serve(name: &str, ports: &[String]) -> Result<(), String> {
    let mut handles = Vec::new();
    for port in ports {
        let port: u16 = port.parse().map_err(|e| format!("bad port {port}: {e}"))?;
        let listener = listen(port)?;
        let name = name.to_string();
        handles.push(thread::spawn(move || accept_loop(listener, move |s| answer(s, &name, port))));
    }
    ready();
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

/// Tells the lab that every listener is bound (it waits for this line).
fn ready() {
    println!("ready");
    let _ = std::io::stdout().flush();
}

fn accept_loop(listener: TcpListener, handle: impl Fn(TcpStream) + Send + Sync + Clone + 'static) {
    for stream in listener.incoming().flatten() {
        let handle = handle.clone();
        thread::spawn(move || handle(stream));
    }
}

/// Largest reply a `bulk N` request gets.
const MAX_BULK: usize = 1 << 20;

fn answer(mut stream: TcpStream, name: &str, port: u16) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).unwrap_or(0);
    // `bulk N`: N bytes first (large segments, like a TLS certificate chain or an xDS push).
    let request = String::from_utf8_lossy(buf.get(..n).unwrap_or_default());
    if let Some(bytes) = request.trim().strip_prefix("bulk ").and_then(|b| b.parse::<usize>().ok()) {
        let _ = stream.write_all(&vec![b'x'; bytes.min(MAX_BULK)]);
    }
    let _ = writeln!(stream, "{name}:{port} ok");
    let _ = stream.shutdown(Shutdown::Write);
}

fn proxy(name: &str) -> Result<(), String> {
    let outbound = listen_v4(PROXY_OUTBOUND)?;
    let inbound = listen_v4(PROXY_INBOUND)?;
    let mut handles = vec![
        thread::spawn(move || accept_loop(outbound, |s| relay_to_original(s, false))),
        thread::spawn(move || accept_loop(inbound, |s| relay_to_original(s, true))),
    ];
    for port in PROXY_SERVED {
        let listener = listen(port)?;
        let name = format!("{name}-istio-proxy");
        handles.push(thread::spawn(move || accept_loop(listener, move |s| answer(s, &name, port))));
    }
    ready();
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

/// Connects to where the client meant to go (iptables REDIRECT keeps it in SO_ORIGINAL_DST)
/// and copies bytes both ways; inbound connections go to the app on loopback.
fn relay_to_original(downstream: TcpStream, inbound: bool) {
    let Some(original) = original_destination(&downstream) else { return };
    let upstream_addr =
        if inbound { SocketAddr::from(([127, 0, 0, 1], original.port())) } else { SocketAddr::V4(original) };
    let Ok(upstream) = TcpStream::connect_timeout(&upstream_addr, UPSTREAM_TIMEOUT) else {
        return; // dropping `downstream` closes it: the client sees the failure
    };
    for s in [&downstream, &upstream] {
        let _ = s.set_read_timeout(Some(IO_TIMEOUT));
    }
    let (Ok(mut down_r), Ok(mut up_w)) = (downstream.try_clone(), upstream.try_clone()) else { return };
    let forward = thread::spawn(move || {
        let _ = std::io::copy(&mut down_r, &mut up_w);
        let _ = up_w.shutdown(Shutdown::Write);
    });
    let (mut up_r, mut down_w) = (upstream, downstream);
    let _ = std::io::copy(&mut up_r, &mut down_w);
    let _ = down_w.shutdown(Shutdown::Write);
    let _ = forward.join();
}

fn original_destination(stream: &TcpStream) -> Option<SocketAddrV4> {
    const SO_ORIGINAL_DST: libc::c_int = 80;
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: valid socket fd, `addr` is writable for `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_IP,
            SO_ORIGINAL_DST,
            (&mut addr as *mut libc::sockaddr_in).cast(),
            &mut len,
        )
    };
    (rc == 0).then(|| SocketAddrV4::new(u32::from_be(addr.sin_addr.s_addr).into(), u16::from_be(addr.sin_port)))
}

fn connect(target: &str, timeout_ms: Option<&str>, request: Option<&str>) -> Result<(), String> {
    let message = match request.and_then(|r| r.strip_prefix("bulk:")) {
        Some(bytes) => format!("bulk {}\n", bytes.parse::<usize>().map_err(|e| format!("bad bulk size: {e}"))?),
        None => "hello from the lab\n".to_string(),
    };
    let addr: SocketAddr = target.parse().map_err(|e| format!("bad target {target}: {e}"))?;
    let timeout =
        Duration::from_millis(timeout_ms.map_or(Ok(2000), str::parse).map_err(|e| format!("bad timeout: {e}"))?);
    let start = Instant::now();
    // The source address is bound before connecting so it is known even when the handshake
    // fails (tests match the exact 5-tuple of a blocked SYN).
    let (stream, local) = bound_socket(&addr)?;
    let (result, reply, local) = match connect_with_timeout(&stream, &addr, timeout) {
        Ok(()) => {
            // Now the source IP is chosen too.
            let local = stream.local_addr().unwrap_or(local);
            let mut stream = stream;
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(timeout));
            let _ = stream.write_all(message.as_bytes());
            let mut reply = String::new();
            let (result, reply) = match stream.read_to_string(&mut reply) {
                // A bulk reply is summed up: its last line and its size.
                Ok(_) if reply.len() > 256 => {
                    ("ok", format!("{} ({} bytes)", reply.trim().rsplit('\n').next().unwrap_or_default(), reply.len()))
                }
                Ok(_) if !reply.is_empty() => ("ok", reply.trim().to_string()),
                Ok(_) => ("closed", String::new()),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => ("reset", String::new()),
                Err(e) => ("read-error", e.to_string()),
            };
            (result, reply, local)
        }
        Err(e) => {
            let kind = match e.raw_os_error() {
                Some(libc::ETIMEDOUT) => "timeout",
                Some(libc::ECONNREFUSED) => "refused",
                Some(libc::EHOSTUNREACH) | Some(libc::ENETUNREACH) => "unreachable",
                Some(libc::EACCES) | Some(libc::EPERM) => "prohibited",
                _ => "error",
            };
            (kind, e.to_string(), local)
        }
    };
    println!(
        "{{\"target\":\"{target}\",\"local\":\"{local}\",\"result\":\"{result}\",\"reply\":{},\"elapsed_ms\":{}}}",
        json_string(&reply),
        start.elapsed().as_millis()
    );
    Ok(())
}

/// A non-blocking TCP socket bound to an ephemeral port of the right family, and that address.
fn bound_socket(target: &SocketAddr) -> Result<(TcpStream, SocketAddr), String> {
    use std::os::fd::FromRawFd;
    let family = if target.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket(2); the fd is owned by the TcpStream right after.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh socket we own.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let any: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().map_err(|e| format!("{e}"))?
    } else {
        "[::]:0".parse().map_err(|e| format!("{e}"))?
    };
    let (storage, len) = sockaddr(&any);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes.
    if unsafe { libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), len) } != 0 {
        return Err(format!("bind: {}", std::io::Error::last_os_error()));
    }
    let local = stream.local_addr().map_err(|e| format!("getsockname: {e}"))?;
    Ok((stream, local))
}

fn connect_with_timeout(stream: &TcpStream, target: &SocketAddr, timeout: Duration) -> std::io::Result<()> {
    let fd = stream.as_raw_fd();
    let (storage, len) = sockaddr(target);
    // SAFETY: valid fd and sockaddr.
    let rc = unsafe { libc::connect(fd, (&storage as *const libc::sockaddr_storage).cast(), len) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EINPROGRESS) {
        return Err(err);
    }
    let mut pfd = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis().min(i32::MAX as u128) as i32) };
    if n == 0 {
        return Err(std::io::Error::from_raw_os_error(libc::ETIMEDOUT));
    }
    match stream.take_error()? {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            (storage, std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t)
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            (storage, std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        }
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
