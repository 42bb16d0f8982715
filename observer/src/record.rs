//! Recording a session (`--record FILE`) and replaying a recording (`--replay FILE`) through
//! the same naming and engine, without root and without eBPF. The format is observer-core's
//! [`observer_core::recording`] (docs/recording.md).

use std::{
    cell::RefCell,
    collections::{BTreeMap, HashMap},
    fs::File,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;
use observer_common::{
    decode::{decode, encode, Event},
    event::{EVENT_VERSION, EVENT_VERSION_V2},
};
use observer_core::{
    inventory::Inventory,
    model::{Detail, Observation},
    recording::{from_hex, to_hex, Header, Record, RecordedCulprit, Recording, RecordingError},
};
use tracing::warn;

use crate::{
    events::{cgroups::CgroupNames, clock::MonotonicClock, namer::Namer},
    kernel::{drop_reasons::DropReasons, kallsyms::Kallsyms},
};

/// Where to record, and the node's name for the header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordTo {
    pub path: PathBuf,
    pub node: String,
}

/// Writes a recording: the header, then one line per event handed on, and interface changes.
/// A write error is logged once and ends the recording (never the session).
pub struct Recorder {
    out: Option<BufWriter<File>>,
    path: PathBuf,
    /// Events written.
    pub events: u64,
}

impl Recorder {
    /// Creates `path` and writes `header`.
    pub fn create(path: &Path, header: &Header) -> anyhow::Result<Self> {
        let file = File::create(path).with_context(|| format!("creating the recording {}", path.display()))?;
        let mut recorder = Self { out: Some(BufWriter::new(file)), path: path.to_path_buf(), events: 0 };
        recorder.line(&serde_json::to_string(header)?);
        Ok(recorder)
    }

    fn line(&mut self, line: &str) {
        let Some(out) = self.out.as_mut() else { return };
        if let Err(err) = writeln!(out, "{line}") {
            warn!("writing the recording {}: {err}; recording stopped", self.path.display());
            self.out = None;
        }
    }

    fn record(&mut self, record: &Record) {
        match serde_json::to_string(record) {
            Ok(line) => self.line(&line),
            Err(err) => warn!("a record could not be written: {err}"),
        }
    }

    /// One event as handed on, with the facts decided for it live.
    pub fn event(&mut self, event: &Event, observation: &Observation) {
        let wire = match event {
            Event::Packet(e) => encode(e),
            Event::Drop(e) => encode(e),
            Event::IcmpError(e) => encode(e),
            Event::Connect(e) => encode(e),
            Event::SockOps(e) => encode(e),
            Event::Tcp(e) => encode(e),
        };
        let (location, cgroup, culprit) = match &observation.detail {
            Detail::Drop { location, culprit, .. } => {
                (Some(location.clone()), None, culprit.as_deref().map(|c| Box::new(RecordedCulprit::from(c))))
            }
            Detail::Connect { cgroup, .. } => (None, cgroup.clone(), None),
            _ => (None, None, None),
        };
        self.record(&Record::Event { wire: to_hex(&wire), location, cgroup, culprit });
        self.events += 1;
    }

    /// Conntrack's answer for the event just recorded: `translated` is `original` before SNAT.
    pub fn snat(&mut self, translated: HostPort, original: HostPort) {
        self.record(&Record::Snat { translated, original });
    }

    /// The watched namespace's interfaces changed.
    pub fn interfaces(&mut self, interfaces: &BTreeMap<u32, String>) {
        self.record(&Record::Interfaces { interfaces: interfaces.clone() });
    }

    /// Flushes what is buffered.
    pub fn finish(&mut self) {
        if let Some(out) = self.out.as_mut() {
            if let Err(err) = out.flush() {
                warn!("writing the recording {}: {err}", self.path.display());
            }
        }
    }
}

/// The header of a live session's recording.
pub fn header(
    clock: MonotonicClock,
    netns: (u32, &str),
    node: &str,
    interfaces: &BTreeMap<u32, String>,
    mtus: &HashMap<String, u32>,
    drop_reasons: &DropReasons,
) -> Header {
    Header {
        wire_version: EVENT_VERSION,
        boot_offset_ns: i64::try_from(clock.offset_ns()).unwrap_or(0),
        netns: netns.0,
        netns_name: netns.1.to_string(),
        node: node.to_string(),
        interfaces: interfaces.clone(),
        interface_mtus: mtus.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        drop_reasons: drop_reasons.pairs().into_iter().collect(),
        ..Header::new()
    }
}

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("reading the recording {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the recording {path}: {source}")]
    Format { path: PathBuf, source: RecordingError },
    #[error("the recording {path}, line {line}: {why}")]
    Record { path: PathBuf, line: usize, why: String },
}

/// A replayed recording: its header and the observations, named as the live session named them.
pub struct Replay {
    pub header: Header,
    pub observations: Vec<Observation>,
    /// Conntrack's SNAT answers, by the index of the observation they were looked up for.
    pub snat: HashMap<usize, (HostPort, HostPort)>,
}

/// Reads `path` and names every event in it (with the inventory's view of both ends).
pub fn replay(path: &Path, inventory: Option<&Arc<Inventory>>) -> Result<Replay, ReplayError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReplayError::Read { path: path.into(), source })?;
    let recording = Recording::parse(&text).map_err(|source| ReplayError::Format { path: path.into(), source })?;
    let bad = |line: usize, why: String| ReplayError::Record { path: path.into(), line, why };
    let header = recording.header;
    if header.wire_version != EVENT_VERSION && header.wire_version != EVENT_VERSION_V2 {
        return Err(bad(
            1,
            format!(
                "wire version {} (this build decodes versions {EVENT_VERSION_V2} and {EVENT_VERSION})",
                header.wire_version
            ),
        ));
    }
    // Decode first: the cgroup paths recorded with connects name them all.
    let mut decoded = Vec::with_capacity(recording.records.len());
    let mut cgroups = HashMap::new();
    for (line, record) in recording.records {
        match record {
            Record::Event { wire, location, cgroup, culprit } => {
                let bytes = from_hex(&wire).map_err(|why| bad(line, format!("`wire` is not hex: {why}")))?;
                let event = decode(&bytes).map_err(|err| bad(line, err.to_string()))?;
                if let (Event::Connect(c), Some(path)) = (&event, &cgroup) {
                    cgroups.insert(c.cgroup_id, path.clone());
                }
                decoded.push(Decoded::Event(event, location, culprit));
            }
            Record::Interfaces { interfaces } => decoded.push(Decoded::Interfaces(interfaces)),
            Record::Snat { translated, original } => decoded.push(Decoded::Snat(translated, original)),
        }
    }
    let reasons = DropReasons::from_pairs(header.drop_reasons.iter().map(|(k, v)| (*k, v.as_str())));
    let kallsyms = Kallsyms::default();
    let mut namer = Namer {
        clock: MonotonicClock::with_offset_ns(i128::from(header.boot_offset_ns)),
        interfaces: header.interfaces.clone(),
        watched_netns: header.netns,
        drop_reasons: &reasons,
        kallsyms: &kallsyms,
        cgroups: Some(RefCell::new(CgroupNames::known(cgroups))),
        inventory: inventory.map(|i| i.as_ref()),
        processes: Default::default(),
    };
    let mut observations: Vec<Observation> = Vec::with_capacity(decoded.len());
    let mut snat = HashMap::new();
    for d in decoded {
        match d {
            Decoded::Interfaces(interfaces) => namer.interfaces = interfaces,
            Decoded::Snat(translated, original) => {
                if let Some(last) = observations.len().checked_sub(1) {
                    snat.insert(last, (translated, original));
                }
            }
            Decoded::Event(event, location, culprit) => {
                let mut o = namer.observe(&event);
                if let Detail::Drop { location: slot, culprit: named, .. } = &mut o.detail {
                    if let Some(location) = location {
                        *slot = location;
                    }
                    *named = culprit.map(|c| Arc::new(c.to_culprit()));
                }
                observations.push(o);
            }
        }
    }
    Ok(Replay { header, observations, snat })
}

#[allow(clippy::large_enum_variant)] // short-lived, one per record: no point boxing the event
enum Decoded {
    Event(Event, Option<String>, Option<Box<RecordedCulprit>>),
    Interfaces(BTreeMap<u32, String>),
    Snat(HostPort, HostPort),
}

/// An address and port.
type HostPort = (std::net::IpAddr, u16);
