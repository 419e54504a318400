//! Typed identifiers. Table entries refer to each other by these small integers, never by
//! reference, so tables can be cloned and replayed (left-right publication) cheaply.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A dataplane port (one Linux interface with its AF_XDP sockets). Dense, assigned by the
/// dataplane when the port is added; the operator names ports by interface name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortId(pub u16);

/// A VRF (routing instance). `VrfId(0)` always exists. Ids are bounded by [`VrfId::MAX`] so
/// the dataplane can index VRFs directly.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct VrfId(pub u32);

impl VrfId {
    /// Highest VRF id accepted (Contrail's default table count is 4096).
    pub const MAX: u32 = 4095;
}

/// A next hop in the shared next-hop table. Routes carry this id; identical next hops are
/// shared (reference-counted), so a million routes via one gateway cost one next hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NextHopId(pub u32);

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "port{}", self.0)
    }
}

impl fmt::Display for VrfId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for NextHopId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "nh{}", self.0)
    }
}
