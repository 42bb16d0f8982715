//! `observer agent`: wires the inventory feed, the session thread, the publisher (findings,
//! metrics, Events) and the HTTP endpoint, until SIGINT/SIGTERM.
//!
//! Order: HTTP first (so `/healthz` answers and `/readyz` says why it is not ready), then the
//! first complete inventory, then the eBPF session (attached with the inventory it names
//! connections with), then the `ready` line.

use std::{
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use observer::{diagnosis::FindingUpdate, inventory::Inventory, session::SessionConfig, stop::StopToken};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::{
    cli::AgentArgs,
    crossnode,
    feed::{self, FeedHealth},
    http, kube_client, kube_events,
    metrics::Metrics,
    session::{self, SessionSide, SessionStats},
    state::Shared,
};

/// Finding updates waiting for the publisher; beyond, they are dropped and counted
/// (`observer_events_lost_total{source="findings_channel"}`); the next update of the same
/// finding carries its whole state again.
const UPDATES_CHANNEL: usize = 1024;
/// Events are written (when due and allowed) on this beat.
const EVENTS_BEAT: Duration = Duration::from_secs(1);

pub async fn run(args: &AgentArgs) -> anyhow::Result<()> {
    let shutdown = StopToken::new();
    let segment = StopToken::new();
    spawn_signal_handler(shutdown.clone(), segment.clone())?;

    let client = if args.no_events && args.inventory.is_some() {
        None
    } else {
        match kube_client::client(args.kubeconfig.as_deref(), false).await {
            Ok(client) => Some(client),
            Err(err) if args.inventory.is_some() => {
                warn!(error = %format!("{err:#}"), "no Kubernetes API: findings are not written as Events");
                None
            }
            Err(err) => return Err(err),
        }
    };

    let (inventory_tx, inventory_rx) = watch::channel(Arc::new(Inventory::default()));
    let health = match &args.inventory {
        Some(path) => {
            let inventory = observer::inventory::Inventory::from_file(path)?;
            info!(pods = inventory.pods.len(), services = inventory.services.len(), "inventory loaded from file");
            inventory_tx.send_replace(Arc::new(inventory));
            Arc::new(FeedHealth::static_file())
        }
        None => {
            let health = Arc::new(FeedHealth::default());
            let client = client.clone().context("the inventory needs the Kubernetes API or --inventory FILE")?;
            tokio::spawn(feed::run(client, Arc::clone(&health), inventory_tx));
            health
        }
    };

    let session_stats = Arc::new(SessionStats::default());
    let shared = Arc::new(Shared {
        node: args.node_name.clone(),
        findings: Default::default(),
        session: Arc::clone(&session_stats),
        feed: Arc::clone(&health),
        inventory: inventory_rx.clone(),
        metrics: Metrics::new(),
        started: Instant::now(),
    });

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (choose another --listen ADDR:PORT)", args.listen))?;
    // The bound address (with `--listen ADDR:0`, the port the kernel chose).
    let listen = listener.local_addr().unwrap_or(args.listen);
    info!(%listen, "serving /metrics /healthz /readyz /findings");
    let (http_stop, http_shared) = (shutdown.clone(), Arc::clone(&shared));
    tokio::spawn(async move {
        let served = axum::serve(listener, http::router(http_shared)).with_graceful_shutdown(wait_for(http_stop)).await;
        if let Err(err) = served {
            warn!(error = %err, "HTTP server failed");
        }
    });

    // The session attaches once the inventory is complete: it names connections from the start.
    let mut waiting_since = Instant::now();
    while !health.synced() {
        if shutdown.is_stopped() {
            return Ok(());
        }
        if waiting_since.elapsed() >= Duration::from_secs(10) {
            info!("waiting for the first complete inventory from the Kubernetes API");
            waiting_since = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (updates_tx, mut updates_rx) = mpsc::channel::<FindingUpdate>(UPDATES_CHANNEL);
    let flows = Arc::new(std::sync::Mutex::new(observer::diagnosis::flows::FlowMemory::default()));
    let crossnode = client
        .clone()
        .filter(|_| !args.no_events)
        .map(|c| crossnode::CrossNode::start(c, Arc::clone(&shared), Arc::clone(&flows), updates_tx.clone()));
    let config = SessionConfig {
        netns: args.netns.clone(),
        cgroup_root: args.cgroup_root.clone(),
        kernel_log: args.kernel_log,
        cgroup_skb: args.cgroup_skb.is_on(),
        ..SessionConfig::default()
    };
    let session = session::spawn(SessionSide {
        config,
        node: args.node_name.clone(),
        inventory: inventory_rx.clone(),
        updates: updates_tx,
        stats: Arc::clone(&session_stats),
        segment: segment.clone(),
        shutdown: shutdown.clone(),
        expire: Duration::from_secs(args.clear_after),
        flows,
    })
    .context("starting the session thread")?;
    tokio::spawn(session::segment_beat(inventory_rx, segment.clone(), shutdown.clone()));

    let mut writer = client.filter(|_| !args.no_events).map(|c| kube_events::Writer::new(c, args.node_name.clone()));
    let mut beat = tokio::time::interval(EVENTS_BEAT);
    let mut announced_ready = false;
    while !shutdown.is_stopped() {
        tokio::select! {
            update = updates_rx.recv() => {
                let Some(mut update) = update else { break };
                // A silent finding to another node's pod waits for that node's answer (its path).
                let held = crossnode.as_ref().is_some_and(|c| c.on_update(&mut update));
                shared.apply(&update);
                if let Some(writer) = writer.as_mut().filter(|_| !held) {
                    match &update {
                        FindingUpdate::New(f) | FindingUpdate::Updated(f) => writer.upsert(f, &shared),
                        FindingUpdate::Cleared(f) => writer.clear(&observer::diagnosis::report::key(f)),
                    }
                }
            }
            _ = beat.tick() => {
                if !announced_ready && shared.ready() {
                    announced_ready = true;
                    info!(node = %args.node_name, "ready: attached and inventory synced");
                }
                for f in crossnode.as_ref().map(|c| c.take_resolved()).unwrap_or_default() {
                    shared.apply(&FindingUpdate::Updated(f.clone()));
                    if let Some(writer) = writer.as_mut() {
                        writer.upsert(&f, &shared);
                    }
                }
                if let Some(writer) = writer.as_mut() {
                    writer.flush(&shared).await;
                }
                if session.is_finished() && !session_stats.attached.load(Ordering::Relaxed) && !shutdown.is_stopped() {
                    anyhow::bail!("the session thread ended");
                }
            }
        }
    }
    segment.stop();
    if let Err(err) = tokio::task::spawn_blocking(move || session.join()).await {
        warn!(error = %err, "session thread did not end cleanly");
    }
    if let Some(writer) = writer.as_mut() {
        writer.flush(&shared).await;
    }
    info!("agent stopped");
    Ok(())
}

async fn wait_for(stop: StopToken) {
    while !stop.is_stopped() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SIGINT and SIGTERM stop the agent (the session's segment too, at once).
fn spawn_signal_handler(shutdown: StopToken, segment: StopToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        info!("stopping");
        shutdown.stop();
        segment.stop();
    });
    Ok(())
}
