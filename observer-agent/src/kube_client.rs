//! The Kubernetes client: from `--kubeconfig`, else the in-cluster service account (agent) or the
//! usual inference ($KUBECONFIG, ~/.kube/config, in-cluster: `findings`).

use std::path::Path;

use anyhow::Context as _;
use kube::{
    config::{KubeConfigOptions, Kubeconfig},
    Client, Config,
};

/// A client from `kubeconfig`, or the in-cluster config (`infer`: the usual search instead).
pub async fn client(kubeconfig: Option<&Path>, infer: bool) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {} (pass a valid --kubeconfig FILE)", path.display()))?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("kubeconfig {}", path.display()))?
        }
        None if infer => Config::infer().await.context("no Kubernetes config found: pass --kubeconfig FILE")?,
        None => Config::incluster().context(
            "not in a cluster (no service account): pass --kubeconfig FILE, or run as the DaemonSet in deploy/",
        )?,
    };
    Client::try_from(config).context("building the Kubernetes client")
}
