//! A watching session shared by `trace` and `diagnose`: load the programs, apply the kernel
//! filter, attach to the node namespace and the cgroup tree, then turn every kernel event
//! into a named, in-scope observation until told to stop.

use std::{
    ops::ControlFlow,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Instant,
};

use anyhow::Context as _;
use aya::Ebpf;
use observer_common::decode::Event;
use tracing::info;

use crate::{
    events::{
        cgroups::CgroupNames,
        clock::MonotonicClock,
        model::{Detail, Namer, Observation},
        ringbuf::{read_counters, EventSource},
    },
    inventory::Inventory,
    loader::{
        self,
        attach::{attach_all, Attached},
        cgroup,
        filter::KernelFilter,
        node_watch::NodeWatch,
        programs::KernelInfo,
        NetnsTarget,
    },
    netfilter::Attributor,
};

pub struct Session {
    pub ebpf: Ebpf,
    pub kernel: KernelInfo,
    pub netns: NetnsTarget,
    events: EventSource,
    attached: Attached,
    watch: NodeWatch,
    cgroup_root: PathBuf,
    stop: Arc<AtomicBool>,
    /// Drops and TCP events of namespaces outside the node, not passed on.
    pub out_of_scope: u64,
    /// Names the netfilter rule of each NETFILTER_DROP (None: `--no-culprit`).
    culprits: Option<Attributor>,
}

impl Session {
    /// Loads the programs and prepares the kernel filter; nothing is attached yet.
    pub fn load(netns: Option<&str>) -> anyhow::Result<(Ebpf, KernelInfo, NetnsTarget)> {
        let netns = NetnsTarget::resolve(netns)?;
        let (ebpf, kernel) = loader::load()?;
        Ok((ebpf, kernel, netns))
    }

    /// Applies `filter`, attaches everything and logs the `ready` line.
    pub fn start(
        mut ebpf: Ebpf,
        kernel: KernelInfo,
        netns: NetnsTarget,
        filter: &KernelFilter,
        cgroup_root: Option<PathBuf>,
        culprits: bool,
    ) -> anyhow::Result<Self> {
        let events = EventSource::new(&mut ebpf)?;
        filter.apply(&mut ebpf)?;
        let attached = attach_all(&mut ebpf, &netns, &kernel)?;
        let watch = NodeWatch::new(&netns)?;
        let cgroup_root = match cgroup_root {
            Some(path) => path,
            None => cgroup::default_root()?,
        };
        let cgroup_hooks = cgroup::attach(&mut ebpf, &cgroup_root, &kernel)?;
        let stop = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(signal, Arc::clone(&stop)).context("installing signal handler")?;
        }
        // A first read of the node's rulesets: the counters' "before" for the first drop.
        let culprits = culprits.then(|| Attributor::new(Some((netns.inode as u32, netns.path()))));
        info!(
            netns = %netns.name,
            interfaces = %attached.interfaces.values().cloned().collect::<Vec<_>>().join(","),
            drops = attached.drops,
            tcp_tracepoints = attached.tcp_tracepoints,
            connect = cgroup_hooks.connect,
            sock_ops = cgroup_hooks.sockops,
            cgroup_skb = cgroup_hooks.skb,
            cgroup_root = %cgroup_root.display(),
            pod_namespaces = watch.scope().len() - 1,
            "ready: attached to {} interfaces",
            attached.interfaces.len()
        );
        Ok(Self { ebpf, kernel, netns, events, attached, watch, cgroup_root, stop, out_of_scope: 0, culprits })
    }

    /// Hands every in-scope observation (with its raw event) to `each` until Ctrl-C/SIGTERM,
    /// `deadline`, or `each` breaks.
    pub fn run(
        &mut self,
        inventory: Option<&Inventory>,
        deadline: Option<Instant>,
        all_netns: bool,
        mut each: impl FnMut(&Event, Observation) -> ControlFlow<()>,
    ) -> anyhow::Result<()> {
        let mut namer = Namer {
            clock: MonotonicClock::now(),
            interfaces: self.attached.interfaces.clone(),
            watched_netns: self.netns.inode as u32,
            drop_reasons: &self.kernel.drop_reasons,
            kallsyms: &self.kernel.kallsyms,
            cgroups: Some(std::cell::RefCell::new(CgroupNames::new(&self.cgroup_root))),
            inventory,
            processes: Default::default(),
        };
        let mut done = false;
        while !done && !self.stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
            if self.watch.follow_changes(&mut self.ebpf, &self.netns, &mut self.attached)? {
                namer.interfaces = self.attached.interfaces.clone();
            }
            // Drops waiting for their culprit are checked on often; otherwise wake up every 100 ms.
            let timeout_ms = if self.culprits.as_ref().is_some_and(|a| !a.is_idle()) { 10 } else { 100 };
            let (watch, out_of_scope, culprits) = (&self.watch, &mut self.out_of_scope, &mut self.culprits);
            self.events.poll(timeout_ms, |event| {
                if done {
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
                        done = each(&event, observation).is_break();
                    }
                } else {
                    done = each(&event, observation).is_break();
                }
            })?;
            done = done || pass_attributed(&mut self.culprits, &self.watch, false, &mut each).is_break();
        }
        // Drops still waiting for their culprit are attributed now, not lost.
        let _ = pass_attributed(&mut self.culprits, &self.watch, true, &mut each);
        Ok(())
    }

    /// Setting this flag ends `run` (as Ctrl-C does).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// Kernel counters by name, and records that could not be decoded.
    pub fn counters(&self) -> anyhow::Result<(Vec<(&'static str, u64)>, u64)> {
        Ok((read_counters(&self.ebpf)?, self.events.undecodable))
    }
}

/// Hands on the netfilter drops whose culprit is known (all of them when `flush`).
fn pass_attributed(
    culprits: &mut Option<Attributor>,
    watch: &NodeWatch,
    flush: bool,
    each: &mut impl FnMut(&Event, Observation) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let Some(attributor) = culprits.as_mut().filter(|a| !a.is_idle()) else {
        return ControlFlow::Continue(());
    };
    for (event, observation) in attributor.ready(flush, &|inode| watch.path_of(inode)) {
        each(&event, observation)?;
    }
    ControlFlow::Continue(())
}
