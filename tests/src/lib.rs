//! The lab: a simulated Kubernetes node pair with Istio plumbing, built from network namespaces,
//! veths, a bridge, kubelet-style cgroups and stand-in processes. Test support only: the
//! product never depends on it.

pub mod lab;

pub use lab::{
    faults::{Backend, FirewallRule, Hook, Table, Verdict},
    spec::{ControlPlaneSpec, LabSpec, NodeSpec, Overlay, PodAttachment, PodSpec, UplinkRoutes},
    ConnectOutcome, Lab, LabError, Tools,
};
