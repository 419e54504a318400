//! Neighbors (ARP / IPv6 ND): the MAC behind an address on a port.
//!
//! The shared table holds static entries (from the operator) and learned ones (from ARP/ND
//! replies seen by any worker, applied by the control thread as `LearnNeighbor` ops so every
//! worker sees them). Learned entries age out when not confirmed within the configured time.
//! Packets waiting for a resolution are held per worker by the pipeline, not here.

use crate::hash::FastMap;
use crate::ids::PortId;
use crate::wire::EthernetAddress;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// How the entry was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NeighborKind {
    /// Configured by the operator; never ages, never overridden by learning.
    Static,
    /// Learned from ARP or neighbor discovery; ages out.
    Learned,
}

/// A resolved neighbor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Neighbor {
    /// Link-layer address.
    pub mac: EthernetAddress,
    /// Static or learned.
    pub kind: NeighborKind,
    /// Monotonic time (ns) of the last confirmation of a learned entry.
    pub confirmed_ns: u64,
}

/// Neighbors keyed by (port, address).
#[derive(Clone, Debug, Default)]
pub struct NeighborTable {
    entries: FastMap<(PortId, IpAddr), Neighbor>,
}

impl NeighborTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The neighbor `ip` on `port`.
    #[inline]
    pub fn get(&self, port: PortId, ip: IpAddr) -> Option<&Neighbor> {
        self.entries.get(&(port, ip))
    }

    /// Inserts or replaces; returns the previous entry.
    pub fn insert(&mut self, port: PortId, ip: IpAddr, neighbor: Neighbor) -> Option<Neighbor> {
        self.entries.insert((port, ip), neighbor)
    }

    /// Removes; returns the entry.
    pub fn remove(&mut self, port: PortId, ip: IpAddr) -> Option<Neighbor> {
        self.entries.remove(&(port, ip))
    }

    /// All entries (unordered).
    pub fn iter(&self) -> impl Iterator<Item = (&(PortId, IpAddr), &Neighbor)> + '_ {
        self.entries.iter()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes learned entries older than `max_age_ns`; returns how many.
    pub fn expire(&mut self, now_ns: u64, max_age_ns: u64) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, n| {
            n.kind == NeighborKind::Static || now_ns.saturating_sub(n.confirmed_ns) <= max_age_ns
        });
        before - self.entries.len()
    }

    /// Approximate heap bytes.
    pub fn memory_bytes(&self) -> usize {
        self.entries.capacity()
            * (std::mem::size_of::<(PortId, IpAddr)>() + std::mem::size_of::<Neighbor>() + 8)
    }
}
