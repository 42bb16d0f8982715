//! bench-load: the load generators of `cargo xtask bench`, run inside lab namespaces.
//!
//! - `rr-server PORT`: answers every 1-byte request with 1 byte (TCP_NODELAY), one thread per
//!   connection, until killed.
//! - `rr-client IP:PORT SECS`: one connection, 1-byte ping-pong for SECS seconds; prints
//!   `{"round_trips":N,"secs":S,"rate":R}`.
//! - `syn-flood SRC_IP DST_IP DPORT RATE SECS`: IPv4 SYNs from successive source ports (raw socket),
//!   at most RATE per second (0: as fast as possible) for SECS seconds; prints `{"sent":N,...}`.
//!
//! Every loop is bounded in time; hand-written argument parsing keeps it dependency-free.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    thread,
    time::{Duration, Instant},
};

const MAX_SECS: u64 = 120;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match words.as_slice() {
        ["rr-server", port] => rr_server(port),
        ["rr-client", target, secs] => rr_client(target, secs),
        ["syn-flood", src, dst, dport, rate, secs] => syn_flood(src, dst, dport, rate, secs),
        _ => {
            Err("usage: bench-load rr-server PORT | rr-client IP:PORT SECS | syn-flood SRC DST DPORT RATE SECS".into())
        }
    };
    if let Err(err) = result {
        eprintln!("bench-load: {err}");
        std::process::exit(2);
    }
}

fn secs(text: &str) -> Result<Duration, String> {
    let secs: f64 = text.parse().map_err(|e| format!("bad seconds `{text}`: {e}"))?;
    if !(0.0..=MAX_SECS as f64).contains(&secs) {
        return Err(format!("seconds must be within 0..{MAX_SECS}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn rr_server(port: &str) -> Result<(), String> {
    let port: u16 = port.parse().map_err(|e| format!("bad port: {e}"))?;
    let listener = TcpListener::bind(("0.0.0.0", port)).map_err(|e| format!("bind {port}: {e}"))?;
    for stream in listener.incoming().flatten() {
        thread::spawn(move || {
            let mut stream = stream;
            let _ = stream.set_nodelay(true);
            let mut byte = [0u8; 1];
            while matches!(stream.read(&mut byte), Ok(1)) {
                if stream.write_all(&byte).is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}

fn rr_client(target: &str, duration: &str) -> Result<(), String> {
    let target: SocketAddr = target.parse().map_err(|e| format!("bad target: {e}"))?;
    let duration = secs(duration)?;
    let mut stream =
        TcpStream::connect_timeout(&target, Duration::from_secs(3)).map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut round_trips = 0u64;
    let mut byte = [1u8; 1];
    while started.elapsed() < duration {
        // Check the clock every 256 round trips only.
        for _ in 0..256 {
            stream.write_all(&byte).map_err(|e| format!("write: {e}"))?;
            stream.read_exact(&mut byte).map_err(|e| format!("read: {e}"))?;
        }
        round_trips += 256;
    }
    let secs = started.elapsed().as_secs_f64();
    println!("{{\"round_trips\":{round_trips},\"secs\":{secs:.3},\"rate\":{:.1}}}", round_trips as f64 / secs);
    Ok(())
}

fn syn_flood(src: &str, dst: &str, dport: &str, rate: &str, duration: &str) -> Result<(), String> {
    let src: Ipv4Addr = src.parse().map_err(|e| format!("bad source: {e}"))?;
    let dst: Ipv4Addr = dst.parse().map_err(|e| format!("bad destination: {e}"))?;
    let dport: u16 = dport.parse().map_err(|e| format!("bad port: {e}"))?;
    let rate: u64 = rate.parse().map_err(|e| format!("bad rate: {e}"))?;
    let duration = secs(duration)?;
    // SAFETY: plain socket(2); closed at exit.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        return Err(format!("raw socket: {} (needs CAP_NET_RAW)", std::io::Error::last_os_error()));
    }
    let mut to: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    to.sin_family = libc::AF_INET as libc::sa_family_t;
    to.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(dst.octets()) };
    let started = Instant::now();
    let (mut sent, mut failed) = (0u64, 0u64);
    let mut seed = 0x2545_f491_4f6c_dd1du64 ^ u64::from(std::process::id());
    while started.elapsed() < duration {
        // Batches of 64, then sleep until the schedule allows the next batch.
        for _ in 0..64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Successive ports: up to 64,000 distinct connections per source address.
            let sport = 1024 + ((sent + failed) % 64_000) as u16;
            let packet = syn_packet(src, dst, sport, dport, seed as u32);
            // SAFETY: `packet` and `to` are valid for their lengths.
            let n = unsafe {
                libc::sendto(
                    fd,
                    packet.as_ptr().cast(),
                    packet.len(),
                    0,
                    (&to as *const libc::sockaddr_in).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if n < 0 {
                failed += 1;
            } else {
                sent += 1;
            }
        }
        if rate > 0 {
            let due = Duration::from_secs_f64((sent + failed) as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                thread::sleep(wait);
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!("{{\"sent\":{sent},\"failed\":{failed},\"secs\":{secs:.3},\"rate\":{:.1}}}", sent as f64 / secs);
    Ok(())
}

/// IPv4 + TCP SYN (40 bytes) with valid checksums.
fn syn_packet(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, seq: u32) -> [u8; 40] {
    let mut p = [0u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let ip_sum = checksum(&p[..20], 0);
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[24..28].copy_from_slice(&seq.to_be_bytes());
    p[32] = 0x50; // data offset 5
    p[33] = 0x02; // SYN
    p[34..36].copy_from_slice(&64240u16.to_be_bytes());
    let mut pseudo = 0u32;
    for chunk in [&src.octets()[..], &dst.octets()[..]] {
        pseudo +=
            u32::from(u16::from_be_bytes([chunk[0], chunk[1]])) + u32::from(u16::from_be_bytes([chunk[2], chunk[3]]));
    }
    pseudo += 6 + 20;
    let tcp_sum = checksum(&p[20..], pseudo);
    p[36..38].copy_from_slice(&tcp_sum.to_be_bytes());
    p
}

fn checksum(bytes: &[u8], initial: u32) -> u16 {
    let mut sum = initial;
    for pair in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
