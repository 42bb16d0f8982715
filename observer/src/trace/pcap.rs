//! `--pcap FILE`: the dropped and rejecting packets (from their IP header on) as a pcap file
//! that tshark and Wireshark open (LINKTYPE_RAW: each record is an IPv4 or IPv6 packet).

use std::{
    io::{self, Write},
    time::{SystemTime, UNIX_EPOCH},
};

/// LINKTYPE_RAW: the packet begins with an IPv4 or IPv6 header.
const LINKTYPE_RAW: u32 = 101;
const SNAPLEN: u32 = 65_535;

pub struct PcapWriter<W: Write> {
    out: W,
    pub packets: u64,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the pcap global header (microsecond timestamps, little-endian).
    pub fn new(mut out: W) -> io::Result<Self> {
        let mut header = Vec::with_capacity(24);
        header.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        header.extend_from_slice(&2u16.to_le_bytes());
        header.extend_from_slice(&4u16.to_le_bytes());
        header.extend_from_slice(&0i32.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&SNAPLEN.to_le_bytes());
        header.extend_from_slice(&LINKTYPE_RAW.to_le_bytes());
        out.write_all(&header)?;
        Ok(Self { out, packets: 0 })
    }

    /// One record: `data` captured, `original_len` on the wire.
    pub fn write(&mut self, time: SystemTime, data: &[u8], original_len: u32) -> io::Result<()> {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let mut record = Vec::with_capacity(16 + data.len());
        record.extend_from_slice(&(since.as_secs() as u32).to_le_bytes());
        record.extend_from_slice(&since.subsec_micros().to_le_bytes());
        record.extend_from_slice(&(data.len() as u32).to_le_bytes());
        record.extend_from_slice(&original_len.max(data.len() as u32).to_le_bytes());
        record.extend_from_slice(data);
        self.out.write_all(&record)?;
        self.out.flush()?;
        self.packets += 1;
        Ok(())
    }
}

/// Length on the wire from the IP header (IPv4 total length, IPv6 payload length + 40).
pub fn ip_length(packet: &[u8]) -> u32 {
    match packet.first().map(|b| b >> 4) {
        Some(4) if packet.len() >= 4 => u32::from(u16::from_be_bytes([packet[2], packet[3]])),
        Some(6) if packet.len() >= 6 => u32::from(u16::from_be_bytes([packet[4], packet[5]])) + 40,
        _ => packet.len() as u32,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn writes_a_raw_ip_pcap() {
        let mut buf = Vec::new();
        let mut w = PcapWriter::new(&mut buf).expect("header");
        let packet = [0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 244, 1, 10, 10, 244, 2, 10];
        w.write(UNIX_EPOCH + Duration::from_micros(1_500_000), &packet, ip_length(&packet)).expect("record");
        assert_eq!(w.packets, 1);
        assert_eq!(&buf[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(u32::from_le_bytes(buf[20..24].try_into().expect("4")), 101);
        let rec = &buf[24..];
        assert_eq!(u32::from_le_bytes(rec[0..4].try_into().expect("4")), 1);
        assert_eq!(u32::from_le_bytes(rec[4..8].try_into().expect("4")), 500_000);
        assert_eq!(u32::from_le_bytes(rec[8..12].try_into().expect("4")), 20);
        assert_eq!(u32::from_le_bytes(rec[12..16].try_into().expect("4")), 60, "original length from the IP header");
        assert_eq!(&rec[16..], &packet);
        assert_eq!(ip_length(&[0x60, 0, 0, 0, 0, 20]), 60);
        assert_eq!(ip_length(&[0x12]), 1);
    }
}
