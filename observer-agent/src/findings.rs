//! `observer findings`: the cluster's view from any workstation with a kubeconfig. Reads the
//! agents' Kubernetes Events (core/v1, `reportingComponent=observer`) — the API is the only
//! channel, no agent is contacted — and prints one finding per Event: text or JSON, filtered
//! by namespace, requirement and node.

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Event;
use kube::{api::ListParams, Api};
use serde::Serialize;

use crate::{
    cli::{FindingsArgs, Output},
    kube_client,
    kube_events::{CONTROLLER, FINDING_ANNOTATION},
};

/// One finding as reported by an agent.
#[derive(Debug, Serialize)]
pub struct Reported {
    /// The node whose agent reported it (the Event's reportingInstance).
    pub node: String,
    /// `namespace/name` of the Pod the Event is on.
    pub pod: String,
    pub reason: String,
    /// Occurrences (connections) so far: the Event's series count, 1 without a series.
    pub count: i64,
    pub last_seen: Option<String>,
    pub note: String,
    /// The finding as the agent published it (the diagnose JSON schema), when present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finding: Option<serde_json::Value>,
}

impl Reported {
    fn requirement(&self) -> Option<&str> {
        self.finding.as_ref()?.get("requirement")?.as_str()
    }
}

/// Prints the findings; returns whether there were any (exit status 3).
pub async fn run(args: &FindingsArgs) -> anyhow::Result<bool> {
    let client = kube_client::client(args.kubeconfig.as_deref(), true).await?;
    let api: Api<Event> = match &args.namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let params = ListParams::default().fields(&format!("reportingComponent={CONTROLLER}"));
    let mut reported = Vec::new();
    let mut continue_token: Option<String> = None;
    loop {
        let mut page = params.clone().limit(500);
        if let Some(token) = &continue_token {
            page = page.continue_token(token);
        }
        let list = api.list(&page).await.context("listing observer's Events")?;
        reported.extend(list.items.into_iter().filter_map(from_event));
        continue_token = list.metadata.continue_.filter(|t| !t.is_empty());
        if continue_token.is_none() {
            break;
        }
    }
    reported.retain(|r| {
        args.node.as_ref().is_none_or(|n| &r.node == n)
            && args.requirement.as_ref().is_none_or(|q| r.requirement().is_some_and(|rq| rq.eq_ignore_ascii_case(q)))
    });
    reported.sort_by(|a, b| (a.requirement(), &a.node, &a.pod).cmp(&(b.requirement(), &b.node, &b.pod)));
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&reported).context("encoding JSON")?),
        Output::Text => print!("{}", text(&reported)),
    }
    Ok(!reported.is_empty())
}

fn from_event(e: Event) -> Option<Reported> {
    // A field selector the server ignored must not let other controllers' Events through.
    if e.reporting_component.as_deref() != Some(CONTROLLER) {
        return None;
    }
    let pod = format!(
        "{}/{}",
        e.involved_object.namespace.clone().unwrap_or_default(),
        e.involved_object.name.clone().unwrap_or_default()
    );
    let finding = e
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(FINDING_ANNOTATION))
        .and_then(|json| serde_json::from_str(json).ok());
    let count = e.series.as_ref().and_then(|s| s.count).map(i64::from).or(e.count.map(i64::from)).unwrap_or(1);
    let last_seen = e
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref())
        .or(e.event_time.as_ref())
        .map(|t| t.0.to_string());
    Some(Reported {
        node: e.reporting_instance.clone().unwrap_or_default(),
        pod,
        reason: e.reason.clone().unwrap_or_default(),
        count,
        last_seen,
        note: e.message.clone().unwrap_or_default(),
        finding,
    })
}

fn text(reported: &[Reported]) -> String {
    if reported.is_empty() {
        return "no findings reported by observer agents\n".to_string();
    }
    let mut out = format!("{} findings reported by observer agents\n", reported.len());
    for r in reported {
        out.push_str(&format!(
            "\n{} on {} (node {}) x{}{}\n  {}\n",
            r.reason,
            r.pod,
            r.node,
            r.count,
            r.last_seen.as_ref().map(|t| format!(", last {t}")).unwrap_or_default(),
            r.note
        ));
    }
    out
}
