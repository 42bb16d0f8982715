//! The observation model: what the kernel saw, named and typed. Decisions match on these types;
//! strings exist only in `Display`/`Serialize` (the output edge).

pub mod endpoint;
pub mod kinds;
pub mod observation;

pub use endpoint::Endpoint;
pub use kinds::{
    Captured, DropClass, DropReason, IcmpKind, PolicyKind, SocketMilestone, TcpFlags, TcpStackEvent, TcpState,
};
pub use observation::{
    Detail, Encapsulation, Flow, Hook, Observation, Process, Protocol, Segment, TunnelKind, TUNNEL_LINK_KINDS,
};
