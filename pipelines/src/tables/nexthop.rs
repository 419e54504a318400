//! Next hops: what a route resolves to. Identical next hops are stored once and
//! reference-counted, so route count and next-hop count are independent (a million routes via
//! one gateway share one entry, as in Contrail's `nh` table).

use crate::hash::FastMap;
use crate::ids::{NextHopId, PortId};
use crate::wire::EthernetAddress;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};

/// Where a route sends a packet.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NextHop {
    /// One of the router's own addresses: the packet is for us.
    Receive,
    /// Drop silently.
    Blackhole,
    /// Drop and answer with ICMP destination (host) unreachable.
    Unreachable,
    /// The broadcast address of a connected IPv4 subnet: never forwarded.
    Broadcast,
    /// Directly connected on a port: the neighbor is the packet's destination.
    Connected {
        /// Egress port.
        port: PortId,
    },
    /// Via a gateway on a port: the neighbor is the gateway.
    Gateway {
        /// Egress port.
        port: PortId,
        /// Gateway address (same family as the route, or IPv4 over IPv6 not supported).
        gateway: IpAddr,
    },
    /// Into a VXLAN tunnel: encapsulated towards the remote VTEP. The underlay route and
    /// neighbor of `remote` are looked up per flow in the uplink's VRF.
    Vxlan {
        /// The tunnel's logical port (VNI, local VTEP, uplink, overlay VRF).
        tunnel: PortId,
        /// Remote VTEP.
        remote: Ipv4Addr,
        /// Inner destination MAC (the remote overlay's MAC).
        mac: EthernetAddress,
    },
    /// Equal-cost multipath: one member chosen per flow by hash, so a flow never changes path
    /// while the group is unchanged. Members are `Connected` or `Gateway` next hops.
    Ecmp {
        /// Member next hops, in configuration order.
        members: Box<[NextHopId]>,
    },
}

impl NextHop {
    /// The egress port this next hop names directly, if any.
    pub fn port(&self) -> Option<PortId> {
        match self {
            NextHop::Connected { port }
            | NextHop::Gateway { port, .. }
            | NextHop::Vxlan { tunnel: port, .. } => Some(*port),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
struct Slot {
    next_hop: NextHop,
    references: u32,
}

/// The shared next-hop table.
#[derive(Clone, Debug, Default)]
pub struct NextHopTable {
    slots: Vec<Option<Slot>>,
    index: FastMap<NextHop, NextHopId>,
    free: Vec<u32>,
}

impl NextHopTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next hop with `id`, if it exists.
    #[inline]
    pub fn get(&self, id: NextHopId) -> Option<&NextHop> {
        self.slots
            .get(id.0 as usize)
            .and_then(|slot| slot.as_ref())
            .map(|slot| &slot.next_hop)
    }

    /// Takes a reference on `next_hop`, creating it if needed. ECMP members must already be
    /// held by the caller: the group takes its own reference on each.
    pub fn acquire(&mut self, next_hop: NextHop) -> NextHopId {
        if let Some(&id) = self.index.get(&next_hop) {
            if let Some(slot) = self.slots[id.0 as usize].as_mut() {
                slot.references += 1;
            }
            return id;
        }
        if let NextHop::Ecmp { members } = &next_hop {
            for member in members.iter() {
                if let Some(slot) = self
                    .slots
                    .get_mut(member.0 as usize)
                    .and_then(Option::as_mut)
                {
                    slot.references += 1;
                }
            }
        }
        let slot = Slot {
            next_hop: next_hop.clone(),
            references: 1,
        };
        let id = match self.free.pop() {
            Some(index) => {
                self.slots[index as usize] = Some(slot);
                NextHopId(index)
            }
            None => {
                self.slots.push(Some(slot));
                NextHopId(self.slots.len() as u32 - 1)
            }
        };
        self.index.insert(next_hop, id);
        id
    }

    /// Drops a reference; the entry is freed with its last reference.
    pub fn release(&mut self, id: NextHopId) {
        let Some(slot) = self.slots.get_mut(id.0 as usize).and_then(Option::as_mut) else {
            return;
        };
        slot.references -= 1;
        if slot.references > 0 {
            return;
        }
        let Some(slot) = self.slots[id.0 as usize].take() else {
            return;
        };
        self.index.remove(&slot.next_hop);
        self.free.push(id.0);
        if let NextHop::Ecmp { members } = slot.next_hop {
            for member in members.iter() {
                self.release(*member);
            }
        }
    }

    /// Number of live next hops.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when no next hop exists.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Reference count of `id` (0 if absent), for tests and `vrouterctl nh list`.
    pub fn references(&self, id: NextHopId) -> u32 {
        self.slots
            .get(id.0 as usize)
            .and_then(|slot| slot.as_ref())
            .map_or(0, |slot| slot.references)
    }

    /// Live next hops with their ids.
    pub fn iter(&self) -> impl Iterator<Item = (NextHopId, &NextHop)> + '_ {
        self.slots.iter().enumerate().filter_map(|(index, slot)| {
            slot.as_ref()
                .map(|slot| (NextHopId(index as u32), &slot.next_hop))
        })
    }

    /// Approximate heap bytes.
    pub fn memory_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Option<Slot>>()
            + self.index.capacity()
                * (std::mem::size_of::<NextHop>() + std::mem::size_of::<NextHopId>() + 8)
            + self.free.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_next_hops_are_shared_and_freed_with_last_reference() {
        let mut table = NextHopTable::new();
        let a = table.acquire(NextHop::Connected { port: PortId(1) });
        let b = table.acquire(NextHop::Connected { port: PortId(1) });
        assert_eq!(a, b);
        assert_eq!(table.references(a), 2);
        let group = table.acquire(NextHop::Ecmp {
            members: vec![a].into(),
        });
        assert_eq!(table.references(a), 3);
        table.release(a);
        table.release(b);
        assert!(table.get(a).is_some(), "still held by the group");
        table.release(group);
        assert!(table.get(a).is_none());
        assert!(table.is_empty());
    }
}
