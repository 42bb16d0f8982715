//! Attaching culprits to live netfilter drops. Drops wait a moment (so the rules' counters
//! have moved and several drops share one read), then each namespace with drops is entered
//! once: its rulesets are read (at most every [`MIN_READ_INTERVAL`]), the packet's interfaces
//! and locality are looked up, and every drop is evaluated and compared with the counters of
//! the read before it.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::IpAddr,
    path::PathBuf,
    sync::{mpsc, Arc},
    time::{Duration, Instant},
};

use observer_common::decode::Event;
use tracing::{debug, warn};

use super::{
    culprit::{resolve_observed, Culprit, RuleNamespace},
    eval::{evaluate, Packet, Site},
    model::{Counters, Table},
    read::{read_here, Snapshot},
    route::NamespaceRoutes,
};
use observer_core::model::{Detail, DropClass, Encapsulation, Observation, TunnelKind};

use crate::loader::NetnsTarget;

/// How long a drop waits before it is attributed: none. Drops of the same moment still share a
/// read (those read from the ring buffer together go in one job, later ones wait for the next
/// read), and the counters need no wait: netfilter counts a rule's match before the drop reaches
/// kfree_skb, so they have moved by the time its event is read. How often a namespace's rules
/// are read is bounded by [`MIN_READ_INTERVAL`].
pub const SETTLE: Duration = Duration::ZERO;
/// A namespace's rulesets are read at most this often.
pub const MIN_READ_INTERVAL: Duration = Duration::from_millis(250);
const KEPT_SNAPSHOTS: usize = 3;
const MAX_PENDING: usize = 4096;
const RECENT_CULPRITS: usize = 64;
/// How long the end of a run waits for the culprits still being worked out.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

struct Pending {
    event: Event,
    observation: Observation,
    queued: Instant,
}

/// Drops of one namespace to attribute, with a path to enter it (None: unreachable).
struct Job {
    netns: u32,
    path: Option<PathBuf>,
    drops: Vec<Pending>,
}

/// Holds netfilter drops back until their culprit is known. Reading rulesets (a few tools per
/// namespace) happens on a worker thread, so the event loop never stalls on it.
pub struct Attributor {
    pending: Vec<Pending>,
    /// Drops passed on without a culprit because too many were waiting.
    pub overflowed: u64,
    jobs: Option<mpsc::Sender<Job>>,
    results: mpsc::Receiver<(u32, Vec<(Event, Observation)>)>,
    /// Namespaces with a job at the worker, with its drops (passed on as they are if the worker
    /// does not answer in time), and when each namespace was last sent.
    in_flight: HashMap<u32, Vec<(Event, Observation)>>,
    last_sent: HashMap<u32, Instant>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl Attributor {
    /// Starts the worker; `prime` (the node's namespace) is read first, so that the first drop's
    /// counters have a "before".
    pub fn new(prime: Option<(u32, &std::path::Path)>) -> Self {
        let mut worker = Worker::default();
        if let Some((inode, path)) = prime {
            worker.prime(inode, path);
        }
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (result_tx, results) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("culprits".into())
            .spawn(move || {
                while let Ok(job) = job_rx.recv() {
                    let netns = job.netns;
                    if result_tx.send((netns, worker.attribute(job))).is_err() {
                        break;
                    }
                }
            })
            .map_err(|err| warn!("culprit worker not started: {err}"))
            .ok();
        Self {
            pending: Vec::new(),
            overflowed: 0,
            jobs: handle.as_ref().map(|_| jobs),
            results,
            in_flight: HashMap::new(),
            last_sent: HashMap::new(),
            worker: handle,
        }
    }

    /// Whether this observation is a netfilter drop that gets a culprit.
    pub fn wants(observation: &Observation) -> bool {
        matches!(&observation.detail, Detail::Drop { drop_reason, .. } if drop_reason.class == DropClass::Netfilter)
            && observation.flow.is_some()
    }

    /// Holds a drop back; when too many wait (or there is no worker), it is passed on at once,
    /// without a culprit.
    pub fn push(&mut self, event: Event, observation: Observation) -> Option<(Event, Observation)> {
        if self.pending.len() >= MAX_PENDING || self.jobs.is_none() {
            self.overflowed += 1;
            return Some((event, observation));
        }
        self.pending.push(Pending { event, observation, queued: Instant::now() });
        None
    }

    pub fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.in_flight.is_empty()
    }

    /// Drops whose culprit is now known (when `flush`: all of them, waiting for the worker), in
    /// arrival order. `path_of` finds a namespace file for a namespace inode.
    pub fn ready(&mut self, flush: bool, path_of: &dyn Fn(u32) -> Option<PathBuf>) -> Vec<(Event, Observation)> {
        let mut out = Vec::new();
        self.collect(&mut out, None);
        self.send_due(flush, path_of, &mut out);
        if flush {
            // Bounded: each job is a few tool runs.
            let deadline = Instant::now() + FLUSH_TIMEOUT;
            while !self.in_flight.is_empty() && Instant::now() < deadline {
                self.collect(&mut out, Some(deadline));
                self.send_due(true, path_of, &mut out);
            }
            // What the worker did not finish in time is passed on without a culprit, not lost.
            out.extend(self.in_flight.drain().flat_map(|(_, drops)| drops));
            out.extend(self.pending.drain(..).map(|p| (p.event, p.observation)));
        }
        out.sort_by_key(|(_, o)| o.time);
        out
    }

    /// Sends the worker the drops that are due (all when `flush`), one job per namespace that
    /// has none in flight.
    fn send_due(&mut self, flush: bool, path_of: &dyn Fn(u32) -> Option<PathBuf>, out: &mut Vec<(Event, Observation)>) {
        let now = Instant::now();
        let mut by_netns: BTreeMap<u32, Vec<Pending>> = BTreeMap::new();
        let mut waiting = Vec::new();
        for p in self.pending.drain(..) {
            let netns = netns_of(&p.observation);
            let free = !self.in_flight.contains_key(&netns);
            let settled = now.duration_since(p.queued) >= SETTLE;
            let may_read = self.last_sent.get(&netns).is_none_or(|t| now.duration_since(*t) >= MIN_READ_INTERVAL);
            if free && (flush || (settled && may_read) || by_netns.contains_key(&netns)) {
                by_netns.entry(netns).or_default().push(p);
            } else {
                waiting.push(p);
            }
        }
        self.pending = waiting;
        for (netns, drops) in by_netns {
            let copies: Vec<(Event, Observation)> = drops.iter().map(|p| (p.event, p.observation.clone())).collect();
            let job = Job { netns, path: path_of(netns), drops };
            match self.jobs.as_ref().map(|jobs| jobs.send(job)) {
                Some(Ok(())) => {
                    self.in_flight.insert(netns, copies);
                    self.last_sent.insert(netns, now);
                }
                // The worker is gone: pass the drops on without a culprit.
                _ => out.extend(copies),
            }
        }
    }

    /// Takes finished jobs (blocking until `until` for the first when given).
    fn collect(&mut self, out: &mut Vec<(Event, Observation)>, until: Option<Instant>) {
        if let Some(until) = until {
            if let Ok((netns, batch)) = self.results.recv_timeout(until.saturating_duration_since(Instant::now())) {
                self.in_flight.remove(&netns);
                out.extend(batch);
            }
        }
        while let Ok((netns, batch)) = self.results.try_recv() {
            self.in_flight.remove(&netns);
            out.extend(batch);
        }
    }
}

impl Drop for Attributor {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// The worker's state: the last rulesets read per namespace, and recent culprits to share.
#[derive(Default)]
struct Worker {
    /// The node's namespace (the one primed): its rules are the node's, all others a pod's.
    node: Option<u32>,
    namespaces: HashMap<u32, Namespace>,
    recent: VecDeque<Arc<Culprit>>,
}

#[derive(Default)]
struct Namespace {
    snapshots: VecDeque<Snapshot>,
}

impl Worker {
    fn prime(&mut self, inode: u32, path: &std::path::Path) {
        self.node = Some(inode);
        match NetnsTarget::resolve(path.to_str()) {
            Ok(target) => match target.run_inside(read_here) {
                Ok(snapshot) => self.store(inode, snapshot),
                Err(err) => warn!("reading the rulesets of {}: {err}", path.display()),
            },
            Err(err) => warn!("reading the rulesets of {}: {err}", path.display()),
        }
    }

    fn store(&mut self, inode: u32, snapshot: Snapshot) {
        for problem in &snapshot.problems {
            debug!(netns = inode, "{problem}");
        }
        let ns = self.namespaces.entry(inode).or_default();
        ns.snapshots.push_back(snapshot);
        while ns.snapshots.len() > KEPT_SNAPSHOTS {
            ns.snapshots.pop_front();
        }
    }

    /// One allocation per distinct culprit: a flood of drops by one rule shares it.
    fn shared(&mut self, culprit: Culprit) -> Arc<Culprit> {
        if let Some(known) = self.recent.iter().find(|c| ***c == culprit) {
            return Arc::clone(known);
        }
        let new = Arc::new(culprit);
        if self.recent.len() >= RECENT_CULPRITS {
            self.recent.pop_front();
        }
        self.recent.push_back(Arc::clone(&new));
        new
    }

    fn attribute(&mut self, job: Job) -> Vec<(Event, Observation)> {
        let culprits = self.attribute_in(job.netns, &job.drops, job.path.as_deref());
        job.drops
            .into_iter()
            .zip(culprits)
            .map(|(mut p, culprit)| {
                if let Detail::Drop { culprit: slot, .. } = &mut p.observation.detail {
                    *slot = Some(self.shared(culprit));
                }
                (p.event, p.observation)
            })
            .collect()
    }

    fn attribute_in(&mut self, netns: u32, drops: &[Pending], path: Option<&std::path::Path>) -> Vec<Culprit> {
        let unreachable = |why: String| drops.iter().map(|_| Culprit::not_identified(None, why.clone())).collect();
        let Some(path) = path else {
            return unreachable(format!("network namespace {netns} is not reachable from here (no process or name)"));
        };
        let target = match NetnsTarget::resolve(path.to_str()) {
            Ok(t) => t,
            Err(err) => return unreachable(err.to_string()),
        };
        let inside = target.run_inside(|| {
            let snapshot = read_here();
            let packets: Vec<Option<Packet>> = match NamespaceRoutes::here() {
                Ok(mut routes) => drops.iter().map(|p| packet_of(&p.observation, &mut routes)).collect(),
                Err(_) => drops.iter().map(|_| None).collect(),
            };
            (snapshot, packets)
        });
        let (snapshot, packets) = match inside {
            Ok(v) => v,
            Err(err) => return unreachable(err.to_string()),
        };
        self.store(netns, snapshot);
        let Some(ns) = self.namespaces.get(&netns) else { return unreachable("no ruleset read".into()) };
        let node = self.node;
        drops
            .iter()
            .zip(packets)
            .map(|(p, packet)| {
                let mut culprit = match &packet {
                    Some(packet) => culprit_for(&ns.snapshots, p.observation.time, packet),
                    None => Culprit::not_identified(None, "the dropped packet's addresses could not be read"),
                };
                culprit.netns = Some(rule_namespace(netns, node, &p.observation, packet.as_ref()));
                culprit
            })
            .collect()
    }
}

/// Where the rules read for a drop in namespace `netns` live: the node's namespace, or a pod's,
/// named by the end of the packet whose address is local there (the destination at INPUT, the
/// source at OUTPUT), as the inventory names it.
fn rule_namespace(netns: u32, node: Option<u32>, o: &Observation, packet: Option<&Packet>) -> RuleNamespace {
    if node == Some(netns) {
        return RuleNamespace::Node { inode: netns };
    }
    let end = |local: bool, e: &Option<observer_core::model::Endpoint>| {
        local.then(|| e.as_ref().and_then(|e| e.pod.clone())).flatten()
    };
    let pod = packet.and_then(|p| end(p.dst_local, &o.dst).or_else(|| end(p.src_local, &o.src)));
    RuleNamespace::Pod { inode: netns, pod }
}

fn netns_of(o: &Observation) -> u32 {
    match o.detail {
        Detail::Drop { netns, .. } => netns,
        _ => 0,
    }
}

/// Evaluates against the first read after the drop and compares counters with the last read
/// before it.
fn culprit_for(snapshots: &VecDeque<Snapshot>, time: std::time::SystemTime, packet: &Packet) -> Culprit {
    let Some(after) = snapshots.iter().rev().find(|s| s.started >= time).or(snapshots.back()) else {
        return Culprit::not_identified(None, "no ruleset could be read");
    };
    let before = snapshots.iter().rev().find(|s| s.finished <= time);
    let evaluation = evaluate(&after.tables, packet);
    let rose = |site: Site| -> Option<bool> {
        let now = counters_at(&after.tables, site)?;
        // With no read from before the drop, a counter still at zero in a read started after it
        // tells enough: that rule has dropped nothing (e.g. it replaced the one that did).
        let Some(before) = before else { return (now.packets == 0 && after.started >= time).then_some(false) };
        // A rule added since the read before the drop started from zero.
        let then = match locate(&after.tables, site, &before.tables) {
            Some(old) => counters_at(&before.tables, old)?,
            None => Counters::default(),
        };
        Some(now.packets > then.packets)
    };
    let hooks: Vec<&str> = packet.path().iter().map(|h| h.as_str()).collect();
    let mut culprit = resolve_observed(&after.tables, &evaluation, &rose, &hooks.join("/"));
    if after.tables.is_empty() && !after.problems.is_empty() {
        culprit.note = Some(after.problems.join("; "));
    }
    culprit
}

fn counters_at(tables: &[Table], site: Site) -> Option<Counters> {
    let chain = tables.get(site.table)?.chains.get(site.chain)?;
    match site.rule {
        Some(r) => chain.rules.get(r)?.counters,
        None => chain.base.as_ref()?.policy_counters,
    }
}

/// The same rule in an older read: same table and chain, same handle (nft) or same text.
fn locate(tables: &[Table], site: Site, older: &[Table]) -> Option<Site> {
    let table = tables.get(site.table)?;
    let chain = table.chains.get(site.chain)?;
    let ti =
        older.iter().position(|t| t.backend == table.backend && t.family == table.family && t.name == table.name)?;
    let ci = older[ti].chain_index(&chain.name)?;
    let rule = match site.rule {
        None => None,
        Some(r) => {
            let rule = chain.rules.get(r)?;
            Some(older[ti].chains[ci].rules.iter().position(|o| match (o.handle, rule.handle) {
                (Some(a), Some(b)) => a == b,
                _ => o.text == rule.text,
            })?)
        }
    };
    Some(Site { table: ti, chain: ci, rule })
}

/// What the evaluator needs: the 5-tuple, TCP flags from the captured header, which ends are
/// local, and the interfaces (skb->dev at the drop is the input device except on output).
fn packet_of(observation: &Observation, routes: &mut NamespaceRoutes) -> Option<Packet> {
    let flow = observation.flow?;
    let Detail::Drop { packet, .. } = &observation.detail else { return None };
    let captured = packet.bytes();
    // An outer packet (its inner flow is the observation's): netfilter judged the outer one.
    if let Some(encap) = observation.encap {
        return Some(outer_packet_of(&encap, captured, observation.ifindex, routes));
    }
    // skb->dev at a drop is the input device, except on output where it is not set yet.
    let route = routes.route(flow.src, flow.dst, Some(observation.ifindex), false);
    let flags = tcp_flags(captured, flow.src);
    let mut packet = Packet::routed(flow.protocol.0, flow.src, flow.dst, flow.sport, flow.dport, flags, route);
    packet.icmp = icmp_header(captured, flow.src);
    Some(packet)
}

/// The outer packet of an encapsulated drop as netfilter saw it: the tunnel's endpoints, the
/// outer protocol and (UDP tunnels) ports read from the captured outer headers.
fn outer_packet_of(encap: &Encapsulation, captured: &[u8], ifindex: u32, routes: &mut NamespaceRoutes) -> Packet {
    let (src, dst) = (encap.outer_src, encap.outer_dst);
    let (protocol, l4) = match src {
        IpAddr::V4(_) => (captured.get(9).copied(), captured.first().map(|b| usize::from(b & 0x0f) * 4)),
        IpAddr::V6(_) => (captured.get(6).copied(), Some(40)),
    };
    let udp = matches!(encap.tunnel, TunnelKind::Vxlan | TunnelKind::Geneve);
    let protocol = protocol.unwrap_or(match encap.tunnel {
        TunnelKind::Vxlan | TunnelKind::Geneve => 17,
        TunnelKind::Ipip => 4,
        TunnelKind::Ip6InIp => 41,
    });
    let port =
        |at: usize| l4.and_then(|l4| Some(u16::from_be_bytes([*captured.get(l4 + at)?, *captured.get(l4 + at + 1)?])));
    let (sport, dport) = if udp { (port(0).unwrap_or(0), port(2).or(encap.udp_port).unwrap_or(0)) } else { (0, 0) };
    let route = routes.route(src, dst, Some(ifindex), false);
    Packet::routed(protocol, src, dst, sport, dport, None, route)
}

/// ICMP/ICMPv6 type and code of a captured packet (IP header first; IPv6 without extension
/// headers).
fn icmp_header(packet: &[u8], src: IpAddr) -> Option<(u8, u8)> {
    let offset = match src {
        IpAddr::V4(_) if packet.get(9) == Some(&1) => usize::from(packet.first()? & 0x0f) * 4,
        IpAddr::V6(_) if packet.get(6) == Some(&58) => 40,
        _ => return None,
    };
    Some((*packet.get(offset)?, *packet.get(offset + 1)?))
}

/// TCP flags of a captured packet (IP header first): IPv4 with options, IPv6 without
/// extension headers (with them, the flags stay unknown).
fn tcp_flags(packet: &[u8], src: IpAddr) -> Option<u8> {
    let offset = match src {
        IpAddr::V4(_) => {
            if packet.get(9) != Some(&6) {
                return None;
            }
            usize::from(packet.first()? & 0x0f) * 4
        }
        IpAddr::V6(_) => {
            if packet.get(6) != Some(&6) {
                return None;
            }
            40
        }
    };
    packet.get(offset + 13).copied()
}

#[cfg(test)]
mod tests {
    use std::{
        collections::VecDeque,
        time::{Duration, SystemTime},
    };

    use super::{culprit_for, icmp_header, tcp_flags};
    use crate::netfilter::{
        culprit::Confidence,
        eval::Packet,
        iptables::parse_save,
        model::{Backend, Family},
        read::Snapshot,
    };

    fn read_at(save: &str, started: SystemTime) -> Snapshot {
        let tables = parse_save(save, Backend::IptablesNft, Family::Ip).unwrap();
        Snapshot { tables, started, finished: started + Duration::from_millis(5), problems: Vec::new() }
    }

    /// A namespace first read after its drop (no read from before it): a matching rule whose
    /// counter is still zero replaced the one that dropped, and is not named; one whose counter
    /// moved is (evaluated: when it counted cannot be told).
    #[test]
    fn with_no_read_before_the_drop_a_zero_counter_rule_is_not_blamed() {
        let drop = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let packet = Packet::between(6, "10.0.0.2".parse().unwrap(), "10.0.0.1".parse().unwrap(), 40_000, 80, Some(2));
        let save = |n: u64| {
            format!(
                "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                     [{n}:60] -A FORWARD -p tcp -m tcp --dport 80 -j DROP\nCOMMIT\n"
            )
        };
        let after = |n| VecDeque::from([read_at(&save(n), drop + Duration::from_millis(60))]);
        let replaced = culprit_for(&after(0), drop, &packet);
        assert_eq!(replaced.confidence, Confidence::NotIdentified, "{replaced:?}");
        assert!(replaced.note.as_deref().is_some_and(|n| n.contains("did not move")), "{replaced:?}");
        let counted = culprit_for(&after(1), drop, &packet);
        assert_eq!(counted.confidence, Confidence::Evaluated, "{counted:?}");
        // A read that started before the drop (and ended after it) says nothing about it.
        let stale = VecDeque::from([read_at(&save(0), drop - Duration::from_millis(2))]);
        assert_eq!(culprit_for(&stale, drop, &packet).confidence, Confidence::Evaluated);
    }

    #[test]
    fn reads_icmp_and_icmpv6_type_and_code() {
        let mut v4 = vec![0u8; 28];
        (v4[0], v4[9], v4[20], v4[21]) = (0x45, 1, 3, 13);
        assert_eq!(icmp_header(&v4, "10.0.0.1".parse().unwrap()), Some((3, 13)));
        let mut v6 = vec![0u8; 48];
        (v6[6], v6[40]) = (58, 135);
        assert_eq!(icmp_header(&v6, "fd00::1".parse().unwrap()), Some((135, 0)));
        v6[6] = 6;
        assert_eq!(icmp_header(&v6, "fd00::1".parse().unwrap()), None);
    }

    #[test]
    fn reads_tcp_flags_past_ipv4_options() {
        let mut p = vec![0u8; 60];
        p[0] = 0x46; // IHL 6: 4 bytes of options
        p[9] = 6;
        p[24 + 13] = 0x02;
        assert_eq!(tcp_flags(&p, "10.0.0.1".parse().unwrap()), Some(0x02));
        p[9] = 17;
        assert_eq!(tcp_flags(&p, "10.0.0.1".parse().unwrap()), None);
        assert_eq!(tcp_flags(&p[..20], "10.0.0.1".parse().unwrap()), None);
    }
}
