//! The captured bytes of drops and ICMP errors as a pcap file (LINKTYPE_RAW).

use std::{fs::File, io::BufWriter, ops::ControlFlow, path::PathBuf};

use anyhow::Context as _;
use observer_core::model::Observation;
use tracing::info;

use super::Sink;
use crate::trace::pcap::{ip_length, PcapWriter};

/// Writes every observation's captured packet (drops, ICMP errors) to a pcap file.
pub struct Pcap {
    writer: PcapWriter<BufWriter<File>>,
    path: PathBuf,
    failure: Option<anyhow::Error>,
}

impl Pcap {
    /// Creates the file and writes the pcap header.
    pub fn create(path: PathBuf) -> anyhow::Result<Self> {
        let file = File::create(&path).with_context(|| format!("creating pcap file {}", path.display()))?;
        let writer = PcapWriter::new(BufWriter::new(file)).with_context(|| format!("writing {}", path.display()))?;
        Ok(Self { writer, path, failure: None })
    }
}

impl Sink for Pcap {
    fn observation(&mut self, o: &Observation) -> ControlFlow<()> {
        let Some(bytes) = o.detail.captured() else { return ControlFlow::Continue(()) };
        match self.writer.write(o.time, bytes, ip_length(bytes)) {
            Ok(()) => ControlFlow::Continue(()),
            Err(err) => {
                self.failure = Some(anyhow::anyhow!("writing the pcap file {}: {err}", self.path.display()));
                ControlFlow::Break(())
            }
        }
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        if let Some(err) = self.failure.take() {
            return Err(err);
        }
        info!(packets = self.writer.packets, file = %self.path.display(), "pcap written");
        Ok(())
    }
}
