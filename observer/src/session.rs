//! A watching session shared by `trace`, `diagnose` and `verify --probe`: load the programs,
//! apply the kernel filter, attach to the node namespace and the cgroup tree, then turn every
//! kernel event into a named, in-scope observation until told to stop.
//!
//! config ([`SessionConfig`]) -> [`Session::load`] -> [`Loaded::start`] -> [`Session::run`];
//! the caller owns the [`StopToken`] that ends the run (the library installs no signal handler).

use std::{
    cell::RefCell,
    ops::ControlFlow,
    path::PathBuf,
    rc::Rc,
    time::{Duration, Instant, SystemTime},
};

use aya::Ebpf;
use observer_common::decode::Event;
use serde::Serialize;
use tracing::{info, warn};

use crate::{
    events::{
        cgroups::CgroupNames,
        clock::MonotonicClock,
        counters::KernelCounters,
        model::{Detail, Observation},
        namer::Namer,
        ringbuf::{read_counters, EventSource},
    },
    inventory::Inventory,
    loader::{
        self,
        attach::{attach_all, detach_all, Attached, TcAttachMode},
        cgroup,
        filter::KernelFilter,
        kernel_log::KernelLog,
        node_watch::NodeWatch,
        pod_scope::PodAddresses,
        programs::{KernelInfo, LoadOptions},
        NetnsTarget,
    },
    netfilter::Attributor,
    record::{self, RecordTo, Recorder},
    stop::StopToken,
};

/// What a session watches and how. `SessionConfig::default()` is: the current network
/// namespace, every process on the node (the cgroup v2 mount), culprit rules named, only the
/// node's namespaces (the watched one and its pods'), no time limit, no kernel log lines, tcx
/// links, no cgroup_skb programs.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The network namespace to watch: None = the current one; a bare name = `/run/netns/NAME`;
    /// anything with a `/` = a path such as `/proc/PID/ns/net`. Default None.
    pub netns: Option<String>,
    /// cgroup v2 directory whose processes' connect() and sockets are watched. Default None: the
    /// cgroup v2 mount, i.e. every process on the node.
    pub cgroup_root: Option<PathBuf>,
    /// Name the netfilter rule behind each NETFILTER_DROP (reads rulesets, never changes them).
    /// Default true.
    pub culprits: bool,
    /// Also pass on drops and TCP events of namespaces outside the node (other nodes or
    /// containers sharing this kernel). Default false.
    pub all_netns: bool,
    /// Stop this long after everything is attached (the `ready` line). Default None: only the
    /// stop token or the consumer end the run.
    pub duration: Option<Duration>,
    /// Record every event handed on, with the facts to name it, to this file (docs/recording.md).
    /// Default None.
    pub record: Option<RecordTo>,
    /// The programs' log lines of rare paths (a parse bound reached, a failed map insert, a full
    /// ring buffer; at most one per second per CPU and site) forwarded to `tracing` under the
    /// target `observer::kernel` ([`crate::loader::kernel_log`]). Default false: the programs
    /// skip them and nothing reads their log buffer.
    pub kernel_log: bool,
    /// How the classifiers are attached to interfaces (see [`TcAttachMode`]). Default tcx.
    pub tc_attach: TcAttachMode,
    /// Also attach the cgroup_skb programs: every packet at the watched sockets (a handshake as
    /// the socket sees it, for `trace`). They run on every packet of every socket (two more runs
    /// per round trip at each local end; BENCHMARKS.md), where connect and sock_ops, always
    /// attached, run per connection and tell the diagnosis the same socket facts. Off, they are
    /// not even loaded (no verifier time at start-up). Default false.
    pub cgroup_skb: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            netns: None,
            cgroup_root: None,
            culprits: true,
            all_netns: false,
            duration: None,
            record: None,
            kernel_log: false,
            tc_attach: TcAttachMode::Tcx,
            cgroup_skb: false,
        }
    }
}

/// What a session counted, read at the end of a run.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct SessionCounters {
    /// The eBPF programs' counters.
    pub kernel: KernelCounters,
    /// Ring-buffer records that could not be decoded.
    pub undecodable: u64,
    /// Drops and TCP events of namespaces outside the node, not passed on.
    pub out_of_scope: u64,
    /// NETFILTER_DROP drops passed on without their culprit rule because too many were waiting
    /// for attribution (or the attribution worker could not start).
    pub drops_not_attributed: u64,
}

/// Programs loaded, nothing attached yet: the kernel's facts (drop-reason names, which optional
/// programs loaded) are known, so the caller can build its kernel filter before starting.
pub struct Loaded {
    ebpf: Ebpf,
    pub kernel: KernelInfo,
    pub netns: NetnsTarget,
    config: SessionConfig,
}

pub struct Session {
    pub ebpf: Ebpf,
    pub kernel: KernelInfo,
    pub netns: NetnsTarget,
    events: EventSource,
    attached: Attached,
    watch: NodeWatch,
    cgroup_root: PathBuf,
    config: SessionConfig,
    stop: StopToken,
    /// When the run ends by itself (`config.duration` after the start).
    deadline: Option<Instant>,
    out_of_scope: u64,
    /// Names the netfilter rule of each NETFILTER_DROP (None: `culprits` off).
    culprits: Option<Attributor>,
    /// Monotonic -> wall clock, measured at the start.
    clock: MonotonicClock,
    /// Writes the recording (`config.record`); shared with the command (facts it looks up).
    recorder: Option<Rc<RefCell<Recorder>>>,
    /// Forwards the programs' log lines (`config.kernel_log`).
    kernel_log: Option<KernelLog>,
}

/// Netlink (`cls_bpf`) classifiers outlive the process: a session removes them when it ends.
impl Drop for Session {
    fn drop(&mut self) {
        if self.attached.tc_mode == TcAttachMode::Netlink {
            detach_all(&mut self.ebpf, &self.netns, &mut self.attached);
        }
    }
}

impl Session {
    /// Resolves the namespace and loads the programs; nothing is attached yet.
    pub fn load(config: SessionConfig) -> anyhow::Result<Loaded> {
        let netns = NetnsTarget::resolve(config.netns.as_deref())?;
        let (ebpf, kernel) = loader::programs::load_options(LoadOptions {
            kernel_log: config.kernel_log,
            cgroup_skb: config.cgroup_skb,
        })?;
        Ok(Loaded { ebpf, kernel, netns, config })
    }
}

impl Loaded {
    /// Applies `filter`, attaches everything and logs the `ready` line. `stop` ends the run when
    /// set (by the caller: a signal handler, another thread).
    pub fn start(self, filter: &KernelFilter, stop: StopToken) -> anyhow::Result<Session> {
        let Self { mut ebpf, kernel, netns, config } = self;
        let events = EventSource::new(&mut ebpf)?;
        let kernel_log = if config.kernel_log {
            match KernelLog::init(&mut ebpf) {
                Ok(log) => Some(log),
                Err(err) => {
                    warn!(error = %err, "kernel log lines are not available");
                    None
                }
            }
        } else {
            None
        };
        filter.apply(&mut ebpf)?;
        loader::tunnel_ports::apply(&mut ebpf, &loader::tunnel_ports::configured()?)?;
        let attached = attach_all(&mut ebpf, &netns, &kernel, config.tc_attach)?;
        let mut watch = NodeWatch::new(&netns)?;
        let cgroup_root = match &config.cgroup_root {
            Some(path) => path.clone(),
            None => cgroup::default_root()?,
        };
        let cgroup_hooks = cgroup::attach(&mut ebpf, &cgroup_root, &kernel, config.cgroup_skb)?;
        // A first read of the node's rulesets: the counters' "before" for the first drop.
        let culprits = config.culprits.then(|| Attributor::new(Some((netns.inode as u32, netns.path()))));
        let clock = MonotonicClock::now();

        let recorder = match &config.record {
            Some(RecordTo { path, node }) => {
                let mut header = record::header(
                    clock,
                    (netns.inode as u32, &netns.name),
                    node,
                    &attached.interfaces,
                    &watch.interface_mtus(),
                    &kernel.drop_reasons,
                );
                header.tunnel_interfaces = watch.tunnel_interfaces().into_iter().collect();
                Some(Rc::new(RefCell::new(Recorder::create(path, &header)?)))
            }
            None => None,
        };
        // Tunnel devices (by link kind): the decapsulated side of an overlay.
        let mut tunnels: Vec<String> = watch.tunnel_interfaces().into_iter().collect();
        tunnels.sort();
        // Bridges carry no classifiers of their own (their ports do): named apart.
        let named = |carries: bool| -> Vec<&str> {
            let listed = attached.interfaces.iter();
            listed
                .filter(|(index, _)| attached.tc_links.contains_key(index) == carries)
                .map(|(_, n)| n.as_str())
                .collect()
        };
        let (with_classifiers, bridges) = (named(true), named(false));
        info!(
            netns = %netns.name,
            interfaces = %with_classifiers.join(","),
            bridges = %bridges.join(","),
            tunnels = %tunnels.join(","),
            drops = attached.drops,
            drop_program = %if attached.drops { kernel.drop_program } else { "none" },
            tcp_tracepoints = attached.tcp_tracepoints,
            connect = cgroup_hooks.connect,
            sock_ops = cgroup_hooks.sockops,
            cgroup_skb = cgroup_hooks.skb,
            cgroup_root = %cgroup_root.display(),
            pod_namespaces = watch.scope().len() - 1,
            "ready: attached to {} interfaces",
            with_classifiers.len()
        );
        Ok(Session {
            ebpf,
            kernel,
            netns,
            events,
            attached,
            watch,
            cgroup_root,
            deadline: config.duration.map(|d| Instant::now() + d),
            config,
            stop,
            out_of_scope: 0,
            culprits,
            clock,
            recorder,
            kernel_log,
        })
    }
}

/// The consumer of a run's observations: once it has broken, it is never called again (drops
/// still waiting for their culprit are then dropped, not handed on).
struct Consumer<F> {
    each: F,
    done: bool,
}

impl<F> Consumer<F> {
    fn new(each: F) -> Self {
        Self { each, done: false }
    }

    fn deliver<E, O>(&mut self, event: &E, observation: O)
    where
        F: FnMut(&E, O) -> ControlFlow<()>,
    {
        if !self.done {
            self.done = (self.each)(event, observation).is_break();
        }
    }
}

impl Session {
    /// Hands every in-scope observation (with its raw event) to `each` until the stop token is
    /// set, the configured duration passes, or `each` breaks (after which it is not called again).
    pub fn run(
        &mut self,
        inventory: Option<&Inventory>,
        each: impl FnMut(&Event, Observation) -> ControlFlow<()>,
    ) -> anyhow::Result<()> {
        self.run_ticking(inventory, each, |_| {})
    }

    /// [`Session::run`], calling `tick` with the wall-clock time at least every 100 ms (also
    /// when no event comes): an engine concludes idle connections then.
    pub fn run_ticking(
        &mut self,
        inventory: Option<&Inventory>,
        each: impl FnMut(&Event, Observation) -> ControlFlow<()>,
        mut tick: impl FnMut(SystemTime),
    ) -> anyhow::Result<()> {
        // Pod namespaces are those holding the inventory's pod addresses (not whatever lies
        // behind a veth that is not the default route's).
        if let Some(inventory) = inventory {
            self.watch.use_pod_addresses(PodAddresses::from_inventory(inventory), &self.netns);
        }
        let mut namer = Namer {
            clock: self.clock,
            interfaces: self.attached.interfaces.clone(),
            watched_netns: self.netns.inode as u32,
            drop_reasons: &self.kernel.drop_reasons,
            kallsyms: &self.kernel.kallsyms,
            cgroups: Some(std::cell::RefCell::new(CgroupNames::new(&self.cgroup_root))),
            inventory,
            processes: Default::default(),
        };
        let (all_netns, deadline) = (self.config.all_netns, self.deadline);
        // What is handed on is recorded first (with the culprit, once attributed).
        let recorder = self.recorder.clone();
        let mut each = each;
        let mut consumer = Consumer::new(|event: &Event, observation: Observation| {
            if let Some(r) = recorder.as_ref() {
                r.borrow_mut().event(event, &observation);
            }
            each(event, observation)
        });
        while !consumer.done && !self.stop.is_stopped() && deadline.is_none_or(|d| Instant::now() < d) {
            if self.watch.follow_changes(&mut self.ebpf, &self.netns, &mut self.attached)? {
                namer.interfaces = self.attached.interfaces.clone();
                if let Some(r) = recorder.as_ref() {
                    r.borrow_mut().interfaces(&namer.interfaces);
                }
            }
            // Drops waiting for their culprit are checked on often (the worker's answer is handed
            // on within 1 ms of arriving); otherwise wake up every 100 ms or at a link change.
            let timeout_ms = if self.culprits.as_ref().is_some_and(|a| !a.is_idle()) { 1 } else { 100 };
            let (watch, out_of_scope, culprits) = (&self.watch, &mut self.out_of_scope, &mut self.culprits);
            // A link notification wakes the wait too: new interfaces are attached within the
            // attach's own time, not after the timeout.
            self.events.poll(timeout_ms, Some(watch.link_monitor_fd()), |event| {
                if consumer.done {
                    return;
                }
                let observation = namer.observe(&event);
                // Drops in other namespaces (other nodes/containers on this kernel) are not ours.
                if let Detail::Drop { netns, .. } | Detail::Tcp { netns, .. } = observation.detail {
                    if !all_netns && !watch.in_scope(netns) {
                        *out_of_scope += 1;
                        return;
                    }
                }
                if let Some(attributor) = culprits.as_mut().filter(|_| Attributor::wants(&observation)) {
                    if let Some((event, observation)) = attributor.push(event, observation) {
                        consumer.deliver(&event, observation);
                    }
                } else {
                    consumer.deliver(&event, observation);
                }
            })?;
            pass_attributed(&mut self.culprits, &self.watch, false, &mut consumer);
            if let Some(log) = self.kernel_log.as_mut() {
                log.flush();
            }
            if !consumer.done {
                tick(SystemTime::now());
            }
        }
        // Drops still waiting for their culprit are attributed now, not lost (unless the
        // consumer has had enough).
        pass_attributed(&mut self.culprits, &self.watch, true, &mut consumer);
        if let Some(log) = self.kernel_log.as_mut() {
            log.flush();
        }
        if let Some(r) = recorder.as_ref() {
            let mut r = r.borrow_mut();
            r.finish();
            info!(events = r.events, "recording written");
        }
        Ok(())
    }

    /// The recording being written (`config.record`), for facts a command looks up about an
    /// event it was handed (written right after that event).
    pub fn recorder(&self) -> Option<Rc<RefCell<Recorder>>> {
        self.recorder.clone()
    }

    /// What the session counted so far: the kernel's counters and userspace's own.
    pub fn counters(&self) -> anyhow::Result<SessionCounters> {
        Ok(SessionCounters {
            kernel: read_counters(&self.ebpf)?,
            undecodable: self.events.undecodable,
            out_of_scope: self.out_of_scope,
            drops_not_attributed: self.culprits.as_ref().map_or(0, |a| a.overflowed),
        })
    }

    /// MTUs of the watched node's interfaces (name -> bytes).
    pub fn interface_mtus(&mut self) -> std::collections::HashMap<String, u32> {
        self.watch.interface_mtus()
    }

    /// The watched node's tunnel devices (by link kind).
    pub fn tunnel_interfaces(&mut self) -> std::collections::HashSet<String> {
        self.watch.tunnel_interfaces()
    }
}

/// Hands on the netfilter drops whose culprit is known (all of them when `flush`), as long as
/// the consumer wants more.
fn pass_attributed<F: FnMut(&Event, Observation) -> ControlFlow<()>>(
    culprits: &mut Option<Attributor>,
    watch: &NodeWatch,
    flush: bool,
    consumer: &mut Consumer<F>,
) {
    let Some(attributor) = culprits.as_mut().filter(|a| !a.is_idle()) else {
        return;
    };
    if consumer.done {
        return;
    }
    for (event, observation) in attributor.ready(flush, &|inode| watch.path_of(inode)) {
        consumer.deliver(&event, observation);
        if consumer.done {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumer_that_broke_is_never_called_again() {
        let calls = std::cell::Cell::new(0);
        // Stand-ins for (event, observation): the consumer does not look at them.
        let mut consumer = Consumer::new(|_: &u32, _: String| {
            calls.set(calls.get() + 1);
            if calls.get() >= 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        for i in 0..5 {
            consumer.deliver(&i, format!("observation {i}"));
        }
        assert!(consumer.done);
        assert_eq!(calls.get(), 2, "deliveries after the break (e.g. the final culprit flush) must not reach it");
    }

    #[test]
    fn the_default_config_is_the_documented_one() {
        let c = SessionConfig::default();
        assert_eq!(c.netns, None);
        assert_eq!(c.cgroup_root, None);
        assert!(c.culprits, "culprit rules are named by default");
        assert!(!c.all_netns, "only the node's namespaces by default");
        assert_eq!(c.duration, None);
        assert!(!c.kernel_log, "no kernel log lines by default");
        assert!(!c.cgroup_skb, "no per-packet socket programs by default");
    }
}
