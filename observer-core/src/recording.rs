//! The recording format (docs/recording.md): JSON Lines, versioned. The first line is the
//! [`Header`] (the kernel facts needed to name the events: drop-reason names, interface names
//! and MTUs, the watched namespace, the boot-time offset); each further line is a [`Record`]:
//! one raw ring-buffer record (hex of its wire bytes) with the facts decided live for it (the
//! kernel symbol of a drop, the cgroup path of a connect, the netfilter culprit of a drop), or
//! a change of the watched namespace's interfaces. Only events in the session's scope are
//! recorded (the pod-scope decision is made live).

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Mutex, OnceLock},
};

use serde::{Deserialize, Serialize};

use crate::netfilter::{Confidence, Culprit};

/// Written in every header; readers refuse other values.
pub const FORMAT: &str = "observer-recording";
/// This build's format version. Readers accept exactly this version.
pub const VERSION: u32 = 1;

/// The first line of a recording.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`] of the writer.
    pub version: u32,
    /// observer-common's `EVENT_VERSION` of the recorded wire records.
    pub wire_version: u16,
    /// Wall-clock nanoseconds minus CLOCK_MONOTONIC nanoseconds at the start (event timestamps
    /// are monotonic: wall time = timestamp + offset).
    pub boot_offset_ns: i64,
    /// Inode of the watched network namespace, and its name as given.
    pub netns: u32,
    pub netns_name: String,
    /// The node the recording is of (`--node-name`, else the namespace's name).
    pub node: String,
    /// The watched namespace's interfaces at the start (ifindex -> name).
    pub interfaces: BTreeMap<u32, String>,
    /// Their MTUs (name -> bytes), for PMTU findings.
    pub interface_mtus: BTreeMap<String, u32>,
    /// Which of them are tunnel devices (by rtnetlink link kind), for findings over an overlay.
    /// Absent in recordings made before overlays were followed.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub tunnel_interfaces: std::collections::BTreeSet<String>,
    /// The running kernel's `enum skb_drop_reason` (number -> name without `SKB_DROP_REASON_`).
    pub drop_reasons: BTreeMap<u32, String>,
}

impl Header {
    /// A header of this format and version, with no facts yet.
    pub fn new() -> Self {
        Self { format: FORMAT.into(), version: VERSION, ..Self::default() }
    }
}

/// One line after the header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Record {
    /// A ring-buffer record as the kernel wrote it.
    Event {
        /// Its bytes, hex.
        wire: String,
        /// The kernel symbol (`func+0xoff`) of a drop's location.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        location: Option<String>,
        /// A connect's cgroup path (relative to the watched cgroup root).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cgroup: Option<String>,
        /// The rule named for a netfilter drop.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        culprit: Option<Box<RecordedCulprit>>,
    },
    /// The watched namespace's interfaces changed (ifindex -> name): events after this line
    /// are named by this table.
    Interfaces { interfaces: BTreeMap<u32, String> },
    /// The node's conntrack said the packets of the event before this line (from `translated`)
    /// belong to the connection `original` (before source NAT), as `diagnose` looked it up.
    Snat { translated: (std::net::IpAddr, u16), original: (std::net::IpAddr, u16) },
}

/// A [`Culprit`] with everything the diagnosis uses, including what its JSON leaves out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedCulprit {
    pub confidence: Confidence,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Where the rule lives (absent in recordings made before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<crate::netfilter::RuleNamespace>,
    pub rejects: bool,
    pub blanket: bool,
}

impl From<&Culprit> for RecordedCulprit {
    fn from(c: &Culprit) -> Self {
        Self {
            confidence: c.confidence,
            hook: c.hook.map(String::from),
            backend: c.backend.map(String::from),
            family: c.family.map(String::from),
            table: c.table.clone(),
            chain: c.chain.clone(),
            rule: c.rule.clone(),
            position: c.position,
            handle: c.handle,
            comment: c.comment.clone(),
            owner: c.owner.map(String::from),
            network_policy: c.network_policy.clone(),
            note: c.note.clone(),
            netns: c.netns.clone(),
            rejects: c.rejects,
            blanket: c.blanket,
        }
    }
}

impl RecordedCulprit {
    /// The culprit as the live session had it.
    pub fn to_culprit(&self) -> Culprit {
        Culprit {
            confidence: self.confidence,
            hook: self.hook.as_deref().map(intern),
            backend: self.backend.as_deref().map(intern),
            family: self.family.as_deref().map(intern),
            table: self.table.clone(),
            chain: self.chain.clone(),
            rule: self.rule.clone(),
            position: self.position,
            handle: self.handle,
            comment: self.comment.clone(),
            owner: self.owner.as_deref().map(intern),
            network_policy: self.network_policy.clone(),
            note: self.note.clone(),
            netns: self.netns.clone(),
            rejects: self.rejects,
            blanket: self.blanket,
        }
    }
}

/// A `'static` copy of one of the culprit's names (hook, backend, family, owner): each
/// distinct value is allocated once per process (a handful: the netfilter hooks, backends,
/// families and rule owners observer knows).
fn intern(s: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let names = NAMES.get_or_init(|| Mutex::new(HashSet::new()));
    let mut names = match names.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Some(known) = names.get(s) {
        return known;
    }
    let leaked: &'static str = Box::leak(s.to_string().into_boxed_str());
    names.insert(leaked);
    leaked
}

/// What is wrong with a recording.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("the recording is empty: its first line must be the header")]
    Empty,
    #[error("line {line}: {source}")]
    Json { line: usize, source: serde_json::Error },
    #[error("line 1 is not an observer recording (format `{found}`, expected `{FORMAT}`)")]
    Format { found: String },
    #[error("recording version {found} is not readable by this build (it reads version {VERSION}): replay it with the observer that wrote it")]
    Version { found: u32 },
    #[error("line {line}: `wire` is not hex: {why}")]
    Hex { line: usize, why: &'static str },
}

/// A recording, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recording {
    pub header: Header,
    /// The records with their 1-based line numbers.
    pub records: Vec<(usize, Record)>,
}

impl Recording {
    /// Parses a whole recording (blank lines are skipped).
    pub fn parse(text: &str) -> Result<Self, RecordingError> {
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l)).filter(|(_, l)| !l.trim().is_empty());
        let (line, first) = lines.next().ok_or(RecordingError::Empty)?;
        // Format and version first: another file, or another version's header, is named as such.
        let json = |source| RecordingError::Json { line, source };
        let raw: serde_json::Value = serde_json::from_str(first).map_err(json)?;
        let format = raw.get("format").and_then(serde_json::Value::as_str).unwrap_or_default();
        if format != FORMAT {
            return Err(RecordingError::Format { found: format.to_string() });
        }
        let version = raw.get("version").and_then(serde_json::Value::as_u64).unwrap_or_default();
        if version != u64::from(VERSION) {
            return Err(RecordingError::Version { found: u32::try_from(version).unwrap_or(u32::MAX) });
        }
        let header: Header = serde_json::from_value(raw).map_err(json)?;
        let records = lines
            .map(|(line, l)| {
                serde_json::from_str(l).map(|r| (line, r)).map_err(|source| RecordingError::Json { line, source })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { header, records })
    }
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The bytes of a hex string (either case).
pub fn from_hex(text: &str) -> Result<Vec<u8>, &'static str> {
    if !text.len().is_multiple_of(2) {
        return Err("odd number of digits");
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err("a character that is no hex digit"),
    };
    text.as_bytes().chunks(2).map(|pair| Ok(digit(pair[0])? << 4 | digit(pair[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        let bytes = [0u8, 1, 0x7f, 0x80, 0xff];
        assert_eq!(to_hex(&bytes), "00017f80ff");
        assert_eq!(from_hex("00017F80ff").as_deref(), Ok(&bytes[..]));
        assert!(from_hex("abc").is_err());
        assert!(from_hex("zz").is_err());
    }

    #[test]
    fn a_header_and_records_parse_and_bad_ones_are_named() {
        let mut header = Header::new();
        header.drop_reasons.insert(12, "NETFILTER_DROP".into());
        let culprit = Culprit::not_identified(Some("FORWARD"), "x");
        let record = Record::Event {
            wire: "00".into(),
            location: None,
            cgroup: None,
            culprit: Some(Box::new((&culprit).into())),
        };
        let text = format!(
            "{}\n\n{}\n",
            serde_json::to_string(&header).expect("header"),
            serde_json::to_string(&record).expect("record")
        );
        let parsed = Recording::parse(&text).expect("parses");
        assert_eq!(parsed.header, header);
        assert_eq!(parsed.records, vec![(3, record.clone())]);
        let Record::Event { culprit: Some(c), .. } = &parsed.records[0].1 else { panic!("an event") };
        assert_eq!(c.to_culprit(), culprit, "the culprit replays as it was");

        assert!(matches!(Recording::parse(""), Err(RecordingError::Empty)));
        let old = text.replacen("\"version\":1", "\"version\":99", 1);
        assert!(matches!(Recording::parse(&old), Err(RecordingError::Version { found: 99 })));
        let broken = format!("{}\n{{\"kind\":\"event\"}}\n", serde_json::to_string(&header).expect("header"));
        let err = Recording::parse(&broken).expect_err("no wire");
        assert!(err.to_string().starts_with("line 2:"), "{err}");
    }
}
