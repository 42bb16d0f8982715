//! `observer-test-apiserver`: test support only. A Kubernetes API server for the lab (none can
//! be installed on these machines): the real REST protocol over TLS with a bearer token, serving
//! an inventory file (a `List`), taking pod creates/deletes and Events from clients.
//!
//! `observer-test-apiserver --dir DIR --inventory FILE [--listen 127.0.0.1:PORT] [--rv-start N]`
//! writes `DIR/ca.crt`, `DIR/token` and `DIR/kubeconfig` (reused when present, so a restarted
//! server is trusted by the same clients), then prints `listening on https://ADDR` to stderr.
//! `--rv-start` begins a new resourceVersion history (e.g. after a restart: watches resuming from
//! an old resourceVersion get 410 Gone and relist).

mod api;
mod events;
mod store;
mod tls;

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{routing::any, Json, Router};
use clap::Parser;
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(name = "observer-test-apiserver", about = "Test-only Kubernetes API server for observer's lab")]
struct Args {
    /// State directory: CA, server certificate, token, kubeconfig.
    #[arg(long)]
    dir: PathBuf,
    /// Objects served from the start (`kubectl get ... -o json` List).
    #[arg(long)]
    inventory: Option<PathBuf>,
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The resourceVersion the history starts after.
    #[arg(long, default_value_t = 1000)]
    rv_start: u64,
    /// Changes kept for watches resuming from a resourceVersion.
    #[arg(long, default_value_t = 10_000)]
    history: usize,
    /// Seconds between BOOKMARK events on watches that allow them.
    #[arg(long, default_value_t = 5)]
    bookmark_secs: u64,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_target(false).init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("observer-test-apiserver: error: {err}");
            return std::process::ExitCode::from(1);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("observer-test-apiserver: error: {err:#}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let token_path = args.dir.join("token");
    let token = match std::fs::read_to_string(&token_path) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => {
            let t = format!("observer-test-{:x}", std::process::id() as u64 * 2_654_435_761);
            std::fs::write(&token_path, &t).context("writing the token")?;
            t
        }
    };
    let mut store = store::Store::new(args.rv_start, args.history);
    if let Some(path) = &args.inventory {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let list: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
        for mut item in list.get("items").and_then(Value::as_array).cloned().unwrap_or_default() {
            let kind = item.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
            if let Some(storage) = store::storage_of_kind(&kind) {
                if let Some(fields) = item.as_object_mut() {
                    fields.remove("kind");
                    fields.remove("apiVersion");
                }
                store.put(storage, store::key_of(&item), item);
            }
        }
    }
    let tcp = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let addr = tcp.local_addr().context("local address")?;
    let config = tls::server_config(&args.dir, addr.ip())?;
    let listener = tls::TlsListener { tcp, acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)) };
    let kubeconfig = json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "lab",
        "clusters": [{"name": "lab", "cluster": {"server": format!("https://{addr}"),
                      "certificate-authority": args.dir.join("ca.crt")}}],
        "users": [{"name": "lab", "user": {"token": token}}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "lab"}}]
    });
    std::fs::write(args.dir.join("kubeconfig"), kubeconfig.to_string()).context("writing the kubeconfig")?;
    let server = Arc::new(api::Server {
        store: std::sync::Mutex::new(store),
        token,
        bookmark_every: Duration::from_secs(args.bookmark_secs.max(1)),
        requests: Default::default(),
    });
    let debug_server = Arc::clone(&server);
    let app = Router::new()
        .route("/api/{*path}", any(api::core))
        .route("/apis/{*path}", any(api::groups))
        .route(
            "/debug/requests",
            axum::routing::get(move || {
                let server = Arc::clone(&debug_server);
                async move {
                    let requests: HashMap<String, u64> =
                        server.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
                    Json(requests)
                }
            }),
        )
        .with_state(server);
    eprintln!("listening on https://{addr}");
    axum::serve(listener, app).await.context("serving")?;
    Ok(())
}
