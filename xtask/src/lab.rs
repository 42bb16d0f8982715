//! `cargo xtask lab up|down|clean|list`: labs to explore by hand.

use anyhow::{bail, Context as _};
use clap::Subcommand;
use observer_lab::{
    lab::state::{self, LabState},
    Lab, LabSpec, Tools,
};

use crate::{setup, shell};

#[derive(Subcommand)]
pub enum LabAction {
    /// Build the built-in lab (two nodes, istiod, API server, bookinfo pods) and leave it running.
    Up,
    /// Tear down a lab created by `lab up`.
    Down {
        /// The lab's name (printed by `lab up`; `lab list` shows them).
        name: String,
    },
    /// Remove every lab left on this machine (namespaces, cgroups, processes, state files).
    Clean,
    /// List the labs present on this machine.
    List,
}

pub fn tools() -> Tools {
    Tools { lab_pod: shell::target_debug().join("lab-pod") }
}

pub fn run(action: LabAction) -> anyhow::Result<()> {
    if !shell::is_root() {
        bail!("the lab needs root (network namespaces, cgroups, iptables)");
    }
    match action {
        LabAction::Up => {
            setup::run()?;
            shell::build()?;
            let lab = Lab::up(LabSpec::bookinfo(), tools()).context("building the lab")?;
            describe(&lab);
            let name = lab.name.clone();
            let state = lab.persist()?;
            println!("\nlab {name} is up (state: {}). Remove it with: cargo xtask lab down {name}", state.display());
            Ok(())
        }
        LabAction::Down { name } => {
            state::discover(&name).teardown()?;
            println!("lab {name} removed");
            Ok(())
        }
        LabAction::Clean => {
            let names = state::leftovers();
            for name in &names {
                state::discover(name).teardown().with_context(|| format!("cleaning lab {name}"))?;
                println!("removed lab {name}");
            }
            if names.is_empty() {
                println!("no lab to clean");
            }
            Ok(())
        }
        LabAction::List => {
            for name in state::leftovers() {
                let s: LabState = state::discover(&name);
                println!("{name}: {} namespaces, {} processes", s.netns.len(), s.pids.len());
            }
            Ok(())
        }
    }
}

/// Prints the lab's nodes, pods and how to look around.
pub fn describe(lab: &Lab) {
    println!("lab {}", lab.name);
    for node in &lab.spec.nodes {
        println!(
            "  node {:<7} netns {:<22} pod CIDR {:<15} uplink {}",
            node.name,
            lab.node_netns(&node.name),
            node.pod_cidr_string(),
            node.uplink_ip
        );
        for pod in lab.spec.pods_on(&node.name) {
            let ns = lab.pod_netns(&pod.app).unwrap_or_default();
            let ports: Vec<String> = pod.ports.iter().map(u16::to_string).collect();
            println!(
                "    pod {:<45} {:<12} netns {:<26} ports {}{}",
                pod.key(),
                pod.ip,
                ns,
                ports.join(","),
                if pod.sidecar { " + sidecar (15001/15006/15008/15020/15021/15090)" } else { "" }
            );
        }
    }
    println!("  inventory {}", lab.inventory_path().display());
    println!("  cgroup    {}", lab.cgroup().display());
}
