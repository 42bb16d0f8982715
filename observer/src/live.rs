//! The diagnosis engine over a live session: the one observation loop shared by `observer
//! diagnose` and the agent. Each observation is followed across source NAT through the node's
//! conntrack (istio-cni's probe SNAT, masquerades), handed to an optional per-observation hook,
//! folded into the engine; the engine is ticked (idle connections concluded) at least every
//! 100 ms by the session. Drops reach the engine once their culprit rule is known (the session
//! holds them for it).

use std::{cell::RefCell, collections::HashSet, net::IpAddr, ops::ControlFlow, rc::Rc, time::SystemTime};

use tracing::{debug, warn};

use crate::{
    diagnosis::{Engine, FindingUpdate},
    events::model::Observation,
    inventory::Inventory,
    netfilter::conntrack::{Conntrack, Tuple},
    record::Recorder,
    session::Session,
};

/// Conntrack lookups remembered (each packet side is looked up once), bounded.
const MAX_LOOKUPS: usize = 131_072;

/// An engine fed by a live session, with what it needs to follow connections across SNAT.
/// Lives as long as the session (across several [`LiveEngine::run`]s, e.g. one per inventory).
pub struct LiveEngine {
    pub engine: Engine,
    /// The node's conntrack (None: no ctnetlink access; SNAT is followed by ports only).
    conntrack: Option<Conntrack>,
    /// Packet sides already looked up.
    looked_up: HashSet<(IpAddr, u16)>,
    /// The session's recording, which keeps the SNAT facts looked up.
    recorder: Option<Rc<RefCell<Recorder>>>,
}

impl LiveEngine {
    /// Prepares `engine` for `session`: the node's interface MTUs and tunnel devices (PMTU
    /// findings, overlays) and its conntrack, opened inside the watched namespace (a warning, not an error, when refused).
    pub fn new(session: &mut Session, mut engine: Engine) -> Self {
        engine.set_interface_mtus(session.interface_mtus());
        engine.set_tunnel_interfaces(session.tunnel_interfaces());
        let conntrack = match session.netns.run_inside(Conntrack::open) {
            Ok(Ok(ct)) => Some(ct),
            Ok(Err(e)) => {
                warn!(error = %e, "no conntrack access (ctnetlink): connections are followed across SNAT by port only");
                None
            }
            Err(e) => {
                warn!(error = %e, "cannot enter the node's namespace for conntrack");
                None
            }
        };
        Self { engine, conntrack, looked_up: HashSet::new(), recorder: session.recorder() }
    }

    /// Folds one observation in (after following it across SNAT); returns the updates it caused.
    pub fn observe(&mut self, observation: &Observation) -> Vec<FindingUpdate> {
        self.follow_snat(observation);
        self.engine.observe(observation)
    }

    /// Concludes the connections idle at `now` (and expires findings, when configured).
    pub fn tick(&mut self, now: SystemTime) -> Vec<FindingUpdate> {
        self.engine.tick(now)
    }

    /// Runs `session` until it stops, with `inventory` naming the observations: each one is
    /// shown to `seen` (before the engine), then folded in; every update (from observations and
    /// ticks) goes to `send` in batches, in order.
    pub fn run(
        &mut self,
        session: &mut Session,
        inventory: Option<&Inventory>,
        mut seen: impl FnMut(&Observation),
        send: impl FnMut(Vec<FindingUpdate>),
    ) -> anyhow::Result<()> {
        let this = RefCell::new(self);
        let send = RefCell::new(send);
        session.run_ticking(
            inventory,
            |_, observation| {
                seen(&observation);
                let updates = this.borrow_mut().observe(&observation);
                if !updates.is_empty() {
                    (send.borrow_mut())(updates);
                }
                ControlFlow::Continue(())
            },
            |now| {
                let updates = this.borrow_mut().tick(now);
                if !updates.is_empty() {
                    (send.borrow_mut())(updates);
                }
            },
        )
    }

    /// Conntrack says which connection a source-NATed packet side belongs to: told to the
    /// engine before it sees the observation (and recorded, when recording).
    fn follow_snat(&mut self, observation: &Observation) {
        let Some(ct) = self.conntrack.as_mut() else { return };
        let Some((packet_side, server)) = self.engine.snat_candidate(observation) else { return };
        if self.looked_up.len() >= MAX_LOOKUPS {
            self.looked_up.clear();
        }
        if !self.looked_up.insert(packet_side) {
            return;
        }
        let reply = Tuple {
            protocol: observer_common::event::PROTO_TCP,
            src: server.0,
            sport: server.1,
            dst: packet_side.0,
            dport: packet_side.1,
        };
        match ct.original_of_reply(reply) {
            Ok(Some(orig)) => {
                let original = (orig.src, orig.sport);
                self.engine.follow_snat(packet_side, original, observation);
                if let Some(r) = self.recorder.as_ref() {
                    r.borrow_mut().snat(packet_side, original);
                }
            }
            Ok(None) => {}
            Err(e) => debug!(error = %e, "conntrack lookup failed"),
        }
    }
}
