//! A control plane outside every node ([`crate::lab::spec::ControlPlaneSpec`]): its own
//! namespace on its own subnet behind the router, as a managed API server's network is.

use std::{net::SocketAddr, time::Duration};

use super::Lab;
use crate::lab::{cmd, spec::Overlay, ConnectOutcome, LabError};

/// The router's routing table for traffic from the control plane's subnet over an overlay
/// (a cloud's per-subnet route table).
const CONTROL_PLANE_TABLE: &str = "250";

impl Lab {
    /// Builds the control-plane namespace (after the nodes): a veth to the router, the API
    /// server's address with the router as its gateway, and, over an overlay (where the router
    /// routes no pod CIDR for the nodes), a route table for the control plane's subnet sending
    /// each node's pod CIDR to that node's uplink address. The nodes reach it back through their
    /// default route, or (peers-only uplinks) a route to its subnet ([`Lab::uplink_destinations`]).
    pub(super) fn build_control_plane(&mut self, router: &str) -> Result<(), LabError> {
        let Some(cp) = self.spec.control_plane.clone() else { return Ok(()) };
        let ns = self.add_netns("control-plane")?;
        cmd::run("ip", &["-n", router, "link", "add", "to-cp", "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
        let len = cp.subnet.1;
        cmd::run("ip", &["-n", router, "addr", "add", &format!("{}/{len}", cp.router_ip), "dev", "to-cp"])?;
        cmd::run("ip", &["-n", router, "link", "set", "to-cp", "up"])?;
        cmd::run("ip", &["-n", &ns, "addr", "add", &format!("{}/{len}", cp.address), "dev", "eth0"])?;
        cmd::run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
        cmd::run("ip", &["-n", &ns, "route", "add", "default", "via", &cp.router_ip.to_string()])?;
        if self.spec.overlay != Overlay::None {
            let subnet = cp.subnet_string();
            cmd::run("ip", &["-n", router, "rule", "add", "from", &subnet, "lookup", CONTROL_PLANE_TABLE])?;
            for node in &self.spec.nodes {
                cmd::run(
                    "ip",
                    &[
                        "-n",
                        router,
                        "route",
                        "add",
                        &node.pod_cidr_string(),
                        "via",
                        &node.uplink_ip.to_string(),
                        "table",
                        CONTROL_PLANE_TABLE,
                    ],
                )?;
            }
        }
        Ok(())
    }

    /// The control plane's network namespace, when the lab has one
    /// ([`crate::lab::spec::LabSpec::with_control_plane`]).
    pub fn control_plane_netns(&self) -> Option<String> {
        self.spec.control_plane.as_ref().map(|_| format!("{}-control-plane", self.name))
    }

    /// One connection attempt from the control plane (the API server calling a webhook, say):
    /// `lab-pod connect` in its namespace, bounded by `timeout`.
    ///
    /// Errors: [`LabError::NoControlPlane`] when the lab was built without one.
    pub fn connect_from_control_plane(
        &self,
        target: SocketAddr,
        timeout: Duration,
    ) -> Result<ConnectOutcome, LabError> {
        let ns = self.control_plane_netns().ok_or(LabError::NoControlPlane)?;
        let lab_pod = self.tools.lab_pod.display().to_string();
        let out = cmd::in_netns(&ns, &lab_pod, &["connect", &target.to_string(), &timeout.as_millis().to_string()])?;
        serde_json::from_str(out.trim()).map_err(|e| LabError::NotReady {
            what: "connect from the control plane".into(),
            detail: format!("{e}: {out}"),
        })
    }
}
