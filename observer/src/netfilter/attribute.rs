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
    time::{Duration, Instant, SystemTime},
};

use observer_common::decode::Event;
use tracing::{debug, warn};

use super::{
    culprit::{resolve_observed, Culprit, RuleNamespace},
    eval::{evaluate_dropped, Packet, Site},
    model::{Counters, Table},
    read::{read_here, Snapshot},
    route::NamespaceRoutes,
};
use observer_core::model::{Captured, Detail, DropClass, Encapsulation, Flow, Observation, TunnelKind};

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

/// A namespace's drops waiting to be sent to the worker, in arrival order. They go together, as
/// they are (the vector is handed on, not its elements: a drop with its event is ~900 bytes).
struct Queue {
    /// When the oldest arrived.
    since: Instant,
    drops: Vec<(Event, Observation)>,
}

/// What the worker needs of a drop: when, and the packet (flow, tunnel, device, captured
/// bytes; the bytes are shared, not copied). The drop itself stays with the event loop.
struct DropFacts {
    time: SystemTime,
    flow: Option<Flow>,
    encap: Option<Encapsulation>,
    ifindex: u32,
    /// None: not a drop (nothing to evaluate).
    packet: Option<Captured>,
    /// The pods its source and destination addresses name (where a pod's own rule lives).
    src_pod: Option<String>,
    dst_pod: Option<String>,
}

impl DropFacts {
    fn of(o: &Observation) -> Self {
        let packet = match &o.detail {
            Detail::Drop { packet, .. } => Some(packet.clone()),
            _ => None,
        };
        let pod = |e: &Option<observer_core::model::Endpoint>| e.as_ref().and_then(|e| e.pod.clone());
        Self {
            time: o.time,
            flow: o.flow,
            encap: o.encap,
            ifindex: o.ifindex,
            packet,
            src_pod: pod(&o.src),
            dst_pod: pod(&o.dst),
        }
    }
}

/// Drops of one namespace to attribute, with a path to enter it (None: unreachable).
struct Job {
    netns: u32,
    path: Option<PathBuf>,
    drops: Vec<DropFacts>,
}

/// Holds netfilter drops back until their culprit is known. Reading rulesets (a few tools per
/// namespace) happens on a worker thread, so the event loop never stalls on it.
pub struct Attributor {
    /// Drops not yet sent to the worker, by namespace, in arrival order. Kept apart per
    /// namespace so that a drain with a job in flight leaves the waiting drops where they are
    /// (re-sorting every waiting drop at each drain cost a flood most of the reader's CPU).
    pending: BTreeMap<u32, Queue>,
    /// How many drops `pending` holds in all.
    pending_count: usize,
    /// Drops passed on without a culprit because too many were waiting.
    pub overflowed: u64,
    jobs: Option<mpsc::Sender<Job>>,
    /// Each job's culprits, in the order of its drops.
    results: mpsc::Receiver<(u32, Vec<Arc<Culprit>>)>,
    /// Namespaces with a job at the worker, with its drops (the culprits are set on them when
    /// the worker answers; passed on as they are if it does not answer in time), and when each
    /// namespace was last sent.
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
            pending: BTreeMap::new(),
            pending_count: 0,
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
        if self.pending_count >= MAX_PENDING || self.jobs.is_none() {
            self.overflowed += 1;
            return Some((event, observation));
        }
        let netns = netns_of(&observation);
        let queue = self.pending.entry(netns).or_insert_with(|| Queue { since: Instant::now(), drops: Vec::new() });
        queue.drops.push((event, observation));
        self.pending_count += 1;
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
            let pending = std::mem::take(&mut self.pending);
            self.pending_count = 0;
            out.extend(pending.into_values().flat_map(|queue| queue.drops));
        }
        out.sort_by_key(|(_, o)| o.time);
        out
    }

    /// Sends the worker the drops that are due (all when `flush`), one job per namespace that
    /// has none in flight. A namespace's drops go together: they are due once the oldest has
    /// settled and the namespace may be read again. Namespaces that are not due are not touched.
    fn send_due(&mut self, flush: bool, path_of: &dyn Fn(u32) -> Option<PathBuf>, out: &mut Vec<(Event, Observation)>) {
        let now = Instant::now();
        let due: Vec<u32> = self
            .pending
            .iter()
            .filter(|(netns, queue)| {
                let free = !self.in_flight.contains_key(netns);
                let settled = now.duration_since(queue.since) >= SETTLE;
                let may_read = self.last_sent.get(netns).is_none_or(|t| now.duration_since(*t) >= MIN_READ_INTERVAL);
                free && (flush || (settled && may_read))
            })
            .map(|(netns, _)| *netns)
            .collect();
        for netns in due {
            let Some(Queue { drops, .. }) = self.pending.remove(&netns) else { continue };
            self.pending_count -= drops.len();
            let facts = drops.iter().map(|(_, o)| DropFacts::of(o)).collect();
            let job = Job { netns, path: path_of(netns), drops: facts };
            match self.jobs.as_ref().map(|jobs| jobs.send(job)) {
                Some(Ok(())) => {
                    self.in_flight.insert(netns, drops);
                    self.last_sent.insert(netns, now);
                }
                // The worker is gone: pass the drops on without a culprit.
                _ => out.extend(drops),
            }
        }
    }

    /// Takes finished jobs (blocking until `until` for the first when given).
    fn collect(&mut self, out: &mut Vec<(Event, Observation)>, until: Option<Instant>) {
        if let Some(until) = until {
            if let Ok((netns, culprits)) = self.results.recv_timeout(until.saturating_duration_since(Instant::now())) {
                self.answered(netns, culprits, out);
            }
        }
        while let Ok((netns, culprits)) = self.results.try_recv() {
            self.answered(netns, culprits, out);
        }
    }

    /// Sets the culprits of a namespace's job on its drops and passes them on.
    fn answered(&mut self, netns: u32, culprits: Vec<Arc<Culprit>>, out: &mut Vec<(Event, Observation)>) {
        let Some(mut drops) = self.in_flight.remove(&netns) else { return };
        for ((_, observation), culprit) in drops.iter_mut().zip(culprits) {
            if let Detail::Drop { culprit: slot, .. } = &mut observation.detail {
                *slot = Some(culprit);
            }
        }
        if out.is_empty() {
            *out = drops;
        } else {
            out.append(&mut drops);
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

    /// The culprit of each of the job's drops, in order.
    fn attribute(&mut self, job: Job) -> Vec<Arc<Culprit>> {
        let culprits = self.attribute_in(job.netns, &job.drops, job.path.as_deref());
        culprits.into_iter().map(|culprit| self.shared(culprit)).collect()
    }

    fn attribute_in(&mut self, netns: u32, drops: &[DropFacts], path: Option<&std::path::Path>) -> Vec<Culprit> {
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
                Ok(mut routes) => drops.iter().map(|d| packet_of(d, &mut routes)).collect(),
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
            .map(|(d, packet)| {
                let mut culprit = match &packet {
                    Some(packet) => culprit_for(&ns.snapshots, d.time, packet),
                    None => Culprit::not_identified(None, "the dropped packet's addresses could not be read"),
                };
                culprit.netns = Some(rule_namespace(netns, node, d, packet.as_ref()));
                culprit
            })
            .collect()
    }
}

/// Where the rules read for a drop in namespace `netns` live: the node's namespace, or a pod's,
/// named by the end of the packet whose address is local there (the destination at INPUT, the
/// source at OUTPUT), as the inventory names it.
fn rule_namespace(netns: u32, node: Option<u32>, d: &DropFacts, packet: Option<&Packet>) -> RuleNamespace {
    if node == Some(netns) {
        return RuleNamespace::Node { inode: netns };
    }
    let end = |local: bool, pod: &Option<String>| local.then(|| pod.clone()).flatten();
    let pod = packet.and_then(|p| end(p.dst_local, &d.dst_pod).or_else(|| end(p.src_local, &d.src_pod)));
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
    let evaluation = evaluate_dropped(&after.tables, packet);
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
fn packet_of(drop: &DropFacts, routes: &mut NamespaceRoutes) -> Option<Packet> {
    let flow = drop.flow?;
    let captured = drop.packet.as_ref()?.bytes();
    // An outer packet (its inner flow is the observation's): netfilter judged the outer one.
    if let Some(encap) = drop.encap {
        return Some(outer_packet_of(&encap, captured, drop.ifindex, routes));
    }
    // skb->dev at a drop is the input device, except on output where it is not set yet.
    let route = routes.route(flow.src, flow.dst, Some(drop.ifindex), false);
    let flags = drop.packet.as_ref().and_then(|p| p.tcp_flags_byte(flow.src));
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

#[cfg(test)]
mod tests {
    use std::{
        collections::VecDeque,
        time::{Duration, SystemTime},
    };

    use observer_common::decode::Event;
    use observer_core::model::{Detail, Observation};

    use super::{culprit_for, icmp_header, Attributor, MAX_PENDING};
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

    fn drop_in(netns: u32, micros: u64) -> (Event, Observation) {
        use observer_core::model::{DropReason, Flow, Hook, Protocol};
        let observation = Observation {
            time: SystemTime::UNIX_EPOCH + Duration::from_micros(micros),
            hook: Hook::KfreeSkb,
            ifindex: 4,
            interface: None,
            flow: Some(Flow {
                protocol: Protocol(6),
                src: "10.244.1.20".parse().unwrap(),
                sport: 40_000u16.wrapping_add(micros as u16),
                dst: "10.244.2.10".parse().unwrap(),
                dport: 9999,
            }),
            encap: None,
            detail: Detail::Drop {
                drop_reason: DropReason::new(12, "NETFILTER_DROP"),
                location: "nf_hook_slow+0x10".into(),
                netns,
                culprit: None,
                quoted: None,
                packet: Default::default(),
                solicited: None,
            },
            process: None,
            src: None,
            dst: None,
        };
        (Event::Drop(Default::default()), observation)
    }

    /// Drops of a namespace whose job is at the worker wait (counted, in order) without being
    /// sent again; another namespace's drops go at once; the flush hands on every drop, each
    /// with its culprit (here: the namespace is unreachable, so the culprit says so).
    #[test]
    fn drops_wait_per_namespace_while_its_job_is_in_flight() {
        let mut attributor = Attributor::new(None);
        let nowhere = |_: u32| None;
        for micros in 0..3 {
            let (event, observation) = drop_in(7, micros);
            assert!(Attributor::wants(&observation));
            assert!(attributor.push(event, observation).is_none(), "held back");
        }
        assert_eq!(attributor.pending_count, 3);
        let first = attributor.ready(false, &nowhere);
        assert_eq!(attributor.pending_count, 0, "sent as one job");
        assert!(attributor.in_flight.contains_key(&7));
        // The namespace was just read: its next drops wait, another namespace's do not.
        let mut later = Vec::new();
        for micros in 3..6 {
            let (event, observation) = drop_in(7, micros);
            assert!(attributor.push(event, observation).is_none());
        }
        let (event, observation) = drop_in(8, 6);
        assert!(attributor.push(event, observation).is_none());
        later.extend(attributor.ready(false, &nowhere));
        assert_eq!(attributor.pending.get(&7).map(|q| q.drops.len()), Some(3), "namespace 7 waits");
        assert!(!attributor.pending.contains_key(&8), "namespace 8 was sent");
        assert_eq!(attributor.pending_count, 3);
        let rest = attributor.ready(true, &nowhere);
        assert!(attributor.is_idle());
        let all: Vec<Observation> = first.into_iter().chain(later).chain(rest).map(|(_, o)| o).collect();
        let mut times: Vec<u64> =
            all.iter().map(|o| o.time.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_micros() as u64).collect();
        times.sort_unstable();
        assert_eq!(times, (0..7).collect::<Vec<_>>(), "every drop handed on once");
        for o in &all {
            let Detail::Drop { culprit: Some(culprit), .. } = &o.detail else { panic!("no culprit: {o:?}") };
            assert_eq!(culprit.confidence, Confidence::NotIdentified);
            assert!(culprit.note.as_deref().is_some_and(|n| n.contains("not reachable")), "{culprit:?}");
        }
    }

    /// Past [`MAX_PENDING`] waiting drops, a drop is handed back at once and counted.
    #[test]
    fn a_full_queue_passes_drops_on_and_counts_them() {
        let mut attributor = Attributor::new(None);
        for micros in 0..MAX_PENDING as u64 {
            let (event, observation) = drop_in(1 + (micros % 3) as u32, micros);
            assert!(attributor.push(event, observation).is_none());
        }
        let (event, observation) = drop_in(1, 99_999);
        assert!(attributor.push(event, observation).is_some_and(|(_, o)| o.time > SystemTime::UNIX_EPOCH));
        assert_eq!(attributor.overflowed, 1);
        assert_eq!(attributor.ready(true, &|_| None).len(), MAX_PENDING);
        assert_eq!(attributor.pending_count, 0);
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
        let flags = |p: &[u8]| observer_core::model::Captured(p.into()).tcp_flags_byte("10.0.0.1".parse().unwrap());
        let mut p = vec![0u8; 60];
        p[0] = 0x46; // IHL 6: 4 bytes of options
        p[9] = 6;
        p[24 + 13] = 0x02;
        assert_eq!(flags(&p), Some(0x02));
        p[9] = 17;
        assert_eq!(flags(&p), None);
        assert_eq!(flags(&p[..20]), None);
    }
}
