//! Flow cache: exact match on (VRF, 5-tuple) holding a forwarding decision and its rewrite, so
//! an established flow costs one hash lookup plus the rewrite.
//!
//! Layout: a power-of-two number of 4-way buckets. Each slot has a 32-bit signature in a
//! separate dense array (one cache line covers four buckets), so a lookup reads one signature
//! line and at most the one 64-byte entry whose signature matches. Signature 0 marks an empty
//! slot. Per-flow packet and byte counters live in a third array, written on hits.
//!
//! Contract:
//! - An entry records the table generation it was computed from; a lookup under any other
//!   generation is a miss (counted as `stale`), so a table change is never served from an old
//!   decision. Entries idle for longer than the idle timeout are misses as well.
//! - Bounded: an insert into a full bucket replaces, in order of preference, the same key, an
//!   empty slot, a stale or idle slot, then the least recently used one (counted as eviction).
//! - One cache per worker; nothing here is shared or locked.

use crate::counters::FlowCacheCounters;
use crate::hash::FlowHasher;
use crate::ids::{NextHopId, PortId, VrfId};
use crate::wire::EthernetAddress;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Slots per bucket.
pub const WAYS: usize = 4;

/// Flow identity. IPv4 addresses are stored in the low 32 bits of the u128 and told apart
/// from IPv6 by `ipv6`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "FlowKeyRepr", from = "FlowKeyRepr")]
#[repr(C)]
pub struct FlowKey {
    /// Source address.
    pub src: u128,
    /// Destination address.
    pub dst: u128,
    /// VRF of the ingress port.
    pub vrf: u16,
    /// IP protocol number.
    pub protocol: u8,
    /// IPv6 flow.
    pub ipv6: bool,
    /// TCP/UDP source port, ICMP echo identifier, 0 otherwise and for every fragment.
    pub src_port: u16,
    /// TCP/UDP destination port, 0 otherwise and for every fragment.
    pub dst_port: u16,
}

/// How a [`FlowKey`] reads in JSON (and any serde format): addresses as addresses, the family
/// implied (`u128` fields are not supported by every format, e.g. serde's internally tagged
/// enums, and would print as numbers).
#[derive(Serialize, Deserialize)]
struct FlowKeyRepr {
    src: IpAddr,
    dst: IpAddr,
    vrf: u16,
    protocol: u8,
    src_port: u16,
    dst_port: u16,
}

/// An address as a `FlowKey` holds it (IPv4 in the low 32 bits).
pub(crate) fn ip_value(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

impl From<FlowKey> for FlowKeyRepr {
    fn from(k: FlowKey) -> Self {
        FlowKeyRepr {
            src: k.src_addr(),
            dst: k.dst_addr(),
            vrf: k.vrf,
            protocol: k.protocol,
            src_port: k.src_port,
            dst_port: k.dst_port,
        }
    }
}

impl From<FlowKeyRepr> for FlowKey {
    fn from(r: FlowKeyRepr) -> Self {
        FlowKey {
            src: ip_value(r.src),
            dst: ip_value(r.dst),
            vrf: r.vrf,
            protocol: r.protocol,
            ipv6: r.src.is_ipv6(),
            src_port: r.src_port,
            dst_port: r.dst_port,
        }
    }
}

impl FlowKey {
    /// The key's hash (also used to choose the ECMP member, so a flow keeps its path).
    #[inline]
    pub fn hash(&self, seed: u64) -> u64 {
        let mut h = FlowHasher::with_seed(seed);
        for word in self.to_words() {
            h.add(word);
        }
        h.finish64()
    }

    /// The key packed into five words, as stored in the cache (keeps entries at 64 bytes:
    /// `u128` fields would force 16-byte alignment and padding).
    #[inline]
    fn to_words(self) -> [u64; 5] {
        [
            self.src as u64,
            (self.src >> 64) as u64,
            self.dst as u64,
            (self.dst >> 64) as u64,
            (self.vrf as u64)
                | (self.protocol as u64) << 16
                | (self.ipv6 as u64) << 24
                | (self.src_port as u64) << 32
                | (self.dst_port as u64) << 48,
        ]
    }

    fn from_words(w: [u64; 5]) -> FlowKey {
        FlowKey {
            src: w[0] as u128 | (w[1] as u128) << 64,
            dst: w[2] as u128 | (w[3] as u128) << 64,
            vrf: w[4] as u16,
            protocol: (w[4] >> 16) as u8,
            ipv6: (w[4] >> 24) & 1 == 1,
            src_port: (w[4] >> 32) as u16,
            dst_port: (w[4] >> 48) as u16,
        }
    }

    /// Source address as an `IpAddr`.
    pub fn src_addr(&self) -> IpAddr {
        to_ip(self.src, self.ipv6)
    }

    /// Destination address as an `IpAddr`.
    pub fn dst_addr(&self) -> IpAddr {
        to_ip(self.dst, self.ipv6)
    }

    /// VRF id.
    pub fn vrf_id(&self) -> VrfId {
        VrfId(self.vrf as u32)
    }
}

/// Key equality without a `memcmp` call (the compiler emits one for `[u64; 5] ==`).
#[inline(always)]
fn same_key(a: &[u64; 5], b: &[u64; 5]) -> bool {
    ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4])) == 0
}

fn to_ip(value: u128, ipv6: bool) -> IpAddr {
    if ipv6 {
        IpAddr::V6(value.into())
    } else {
        IpAddr::V4((value as u32).into())
    }
}

/// A cached forwarding decision: everything needed to rewrite and send the packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowAction {
    /// Egress port (the underlay port for an encapsulated flow).
    pub out_port: u16,
    /// Largest IP packet (before any encapsulation) the path takes: a larger one takes the
    /// slow path (fragmentation or ICMP).
    pub mtu: u16,
    /// New Ethernet source (egress port MAC; the outer one when encapsulating).
    pub src_mac: EthernetAddress,
    /// New Ethernet destination (next hop's MAC; the outer one when encapsulating).
    pub dst_mac: EthernetAddress,
    /// VXLAN next hop to encapsulate with (valid under the entry's generation).
    #[serde(default)]
    pub encap: Option<NextHopId>,
    /// The flow is translated: its [`NatAction`] is in the cache's side array
    /// ([`FlowCache::nat`]).
    #[serde(default)]
    pub nat: bool,
}

/// The translation of a cached NAT flow: the tuple its packets leave with, and the connection
/// they belong to (whose state and counters every hit updates; a hit on a connection that is
/// gone is a miss).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatAction {
    /// Source address the packet leaves with (IPv4 in the low 32 bits, as in [`FlowKey`]).
    #[serde(with = "address")]
    pub src: u128,
    /// Destination address it leaves with.
    #[serde(with = "address")]
    pub dst: u128,
    /// Source port (ICMP echo: identifier) it leaves with.
    pub src_port: u16,
    /// Destination port it leaves with.
    pub dst_port: u16,
    /// The connection.
    pub conn: crate::conntrack::ConnId,
    /// Which direction of it this flow is.
    pub direction: crate::conntrack::Direction,
    /// Folded checksum adjustment of the IPv4 header for this rewrite (0 for IPv6).
    pub ip_delta: u16,
    /// Folded checksum adjustment of the L4 checksum (pseudo-header addresses and ports, or
    /// an echo's identifier).
    pub l4_delta: u16,
}

impl FlowAction {
    /// Egress port id.
    pub fn port(&self) -> PortId {
        PortId(self.out_port)
    }
}

/// An address held as a `u128` (IPv4 in the low 32 bits), serialised as a string: IPv4 when
/// it fits 32 bits (no IPv6 address the router translates to does: global and unique-local
/// addresses have high bits set).
mod address {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    pub fn serialize<S: Serializer>(value: &u128, s: S) -> Result<S::Ok, S::Error> {
        let addr = if *value <= u32::MAX as u128 {
            IpAddr::V4(Ipv4Addr::from(*value as u32))
        } else {
            IpAddr::V6(Ipv6Addr::from(*value))
        };
        s.collect_str(&addr)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let addr: IpAddr = String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)?;
        Ok(super::ip_value(addr))
    }
}

/// Bit of [`PackedAction::out_port`] saying the slot's encapsulation next hop is in
/// `FlowCache::encaps`. Port ids stay below `MAX_PORTS` (1024), far from it.
const ENCAP_FLAG: u16 = 0x8000;
/// Bit of [`PackedAction::out_port`] saying the slot's translation is in `FlowCache::nats`.
const NAT_FLAG: u16 = 0x4000;
/// Both flags.
const FLAGS: u16 = ENCAP_FLAG | NAT_FLAG;

/// A [`FlowAction`] in 16 bytes, so an entry stays one 64-byte line: the encapsulation next
/// hop, needed by few flows, lives in a side array read only when the flag is set.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
struct PackedAction {
    out_port: u16,
    mtu: u16,
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
}

#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(64))]
struct Entry {
    key: [u64; 5],
    action: PackedAction,
    generation: u32,
    last_used: u32,
}

/// Per-flow traffic counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowStats {
    /// Packets forwarded from the cache (the first packet included).
    pub packets: u64,
    /// Bytes forwarded.
    pub bytes: u64,
}

/// One live flow, for listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// Key.
    pub key: FlowKey,
    /// Decision.
    pub action: FlowAction,
    /// Translation, for a NAT flow.
    #[serde(default)]
    pub nat: Option<NatAction>,
    /// Counters.
    pub stats: FlowStats,
    /// Ticks since the last packet.
    pub idle_ticks: u32,
}

/// What the pipeline keeps about a cached flow off the hit path: the ACL decision that
/// allowed it (so its rules count the packets the cache serves) and the identity connection
/// its hits keep alive. Kept in a map beside the cache, read only by [`FlowCache::tags`]
/// passes and when the entry is replaced: the hit path never touches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowTag {
    /// The pipeline's index of the ACL decision, or [`FlowTag::NO_DECISION`].
    pub decision: u32,
    /// A connection that the flow's hits keep alive.
    pub conn: Option<crate::conntrack::ConnId>,
}

impl FlowTag {
    /// `decision` of a flow no ACL decided.
    pub const NO_DECISION: u32 = u32::MAX;
}

/// A tag with the entry's packet count when it was last accounted.
#[derive(Clone, Copy, Debug)]
struct TagSlot {
    tag: FlowTag,
    accounted: u64,
}

/// A tagged flow as a [`FlowCache::tags`] pass sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaggedFlow {
    /// The tag.
    pub tag: FlowTag,
    /// Packets served since the last pass (or since the insert; the inserting packet is the
    /// slow path's to count).
    pub packets: u64,
    /// When the entry was last used (cache ticks).
    pub last_used: u32,
}

/// Outcome of a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Served from the cache: the slot and its action.
    Hit(usize, FlowAction),
    /// No usable entry.
    Miss,
}

/// The flow cache of one worker.
#[derive(Clone, Debug)]
pub struct FlowCache {
    signatures: Vec<u32>,
    entries: Vec<Entry>,
    stats: Vec<FlowStats>,
    /// Encapsulation next hop of each slot whose action has `ENCAP_FLAG`.
    encaps: Vec<u32>,
    /// Translation of each slot whose action has `NAT_FLAG` (64 bytes a slot, allocated up
    /// front: growing it on the first NAT flow would stall that packet for milliseconds).
    nats: Vec<Option<NatAction>>,
    /// Tags by slot (flows that ACLs decided or whose connection must be kept alive).
    tags: crate::hash::FastMap<u32, TagSlot>,
    bucket_mask: usize,
    idle_timeout_ticks: u32,
    live: usize,
    /// Hit/miss/eviction counters.
    pub counters: FlowCacheCounters,
}

impl FlowCache {
    /// A cache with room for at least `capacity` flows (rounded up to a power of two, at least
    /// one bucket), expiring entries idle for more than `idle_timeout_ticks` (a tick is a unit
    /// of the caller's clock, milliseconds in the dataplane).
    pub fn new(capacity: usize, idle_timeout_ticks: u32) -> Self {
        let slots = capacity.clamp(WAYS, 1 << 28).next_power_of_two();
        FlowCache {
            signatures: vec![0; slots],
            entries: vec![Entry::default(); slots],
            stats: vec![FlowStats::default(); slots],
            encaps: vec![0; slots],
            nats: vec![None; slots],
            tags: crate::hash::FastMap::default(),
            bucket_mask: slots / WAYS - 1,
            idle_timeout_ticks,
            live: 0,
            counters: FlowCacheCounters::default(),
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.signatures.len()
    }

    /// Occupied slots (including stale entries not yet overwritten).
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when no slot is occupied.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Heap bytes.
    pub fn memory_bytes(&self) -> usize {
        self.capacity()
            * (std::mem::size_of::<u32>()
                + std::mem::size_of::<Entry>()
                + std::mem::size_of::<FlowStats>()
                + std::mem::size_of::<u32>())
            + self.nats.capacity() * std::mem::size_of::<Option<NatAction>>()
            + self.tags.capacity() * (std::mem::size_of::<(u32, TagSlot)>() + 1)
    }

    #[inline]
    fn signature(hash: u64) -> u32 {
        ((hash >> 32) as u32) | 1
    }

    #[inline]
    fn bucket(&self, hash: u64) -> usize {
        (hash as usize & self.bucket_mask) * WAYS
    }

    /// Reads the signature line of `hash`'s bucket so a later lookup finds it in cache; the
    /// pipeline calls this for a whole batch before looking up (memory-level parallelism
    /// without `unsafe` prefetch intrinsics).
    #[inline]
    pub fn touch(&self, hash: u64) -> u32 {
        self.signatures[self.bucket(hash)]
    }

    /// Second touch, once the signature lines are cached: reads the entry (and its counters)
    /// whose signature matches, so the batch's entry misses overlap too. Returns a value only
    /// to keep the loads alive.
    #[inline]
    pub fn touch_entry(&self, hash: u64) -> u64 {
        let base = self.bucket(hash);
        let signature = Self::signature(hash);
        for slot in base..base + WAYS {
            if self.signatures[slot] == signature {
                let entry = &self.entries[slot];
                let nat = if entry.action.out_port & NAT_FLAG != 0 {
                    self.nats[slot].map_or(0, |n| n.src as u64)
                } else {
                    0
                };
                return entry.key[0] ^ self.stats[slot].packets ^ nat;
            }
        }
        0
    }

    /// Looks `key` up under table `generation` at time `now`; on a hit refreshes the entry's
    /// age and adds `bytes` to its counters.
    #[inline]
    pub fn lookup(
        &mut self,
        key: &FlowKey,
        hash: u64,
        generation: u64,
        now: u32,
        bytes: u32,
    ) -> Lookup {
        self.lookup_usable(key, hash, generation, now, bytes, |_, _| true)
    }

    /// [`FlowCache::lookup`] for a packet the cached action may not fit: an entry for which
    /// `usable(mtu, nat)` (given the action's path MTU and translation) is false (TTL
    /// expiring, packet over the path MTU, connection gone) is a miss, counted as one, with
    /// its age and counters left alone; the slow path decides for that packet.
    #[inline]
    pub fn lookup_usable(
        &mut self,
        key: &FlowKey,
        hash: u64,
        generation: u64,
        now: u32,
        bytes: u32,
        usable: impl FnOnce(u16, Option<&NatAction>) -> bool,
    ) -> Lookup {
        let base = self.bucket(hash);
        let signature = Self::signature(hash);
        let words = key.to_words();
        for slot in base..base + WAYS {
            if self.signatures[slot] != signature {
                continue;
            }
            let entry = &mut self.entries[slot];
            if !same_key(&entry.key, &words) {
                continue;
            }
            if entry.generation != generation as u32
                || now.wrapping_sub(entry.last_used) > self.idle_timeout_ticks
            {
                self.counters.stale += 1;
                self.counters.misses += 1;
                return Lookup::Miss;
            }
            let nat = if entry.action.out_port & NAT_FLAG != 0 {
                self.nats.get(slot).and_then(Option::as_ref)
            } else {
                None
            };
            if !usable(entry.action.mtu, nat) {
                self.counters.misses += 1;
                return Lookup::Miss;
            }
            entry.last_used = now;
            let stats = &mut self.stats[slot];
            stats.packets += 1;
            stats.bytes += bytes as u64;
            self.counters.hits += 1;
            let packed = entry.action;
            return Lookup::Hit(slot, self.unpack(slot, packed));
        }
        self.counters.misses += 1;
        Lookup::Miss
    }

    /// Installs (or refreshes) a flow computed under `generation`, counting the packet that
    /// created it. `action.nat` is ignored: a translated flow goes through
    /// [`FlowCache::insert_nat`].
    pub fn insert(
        &mut self,
        key: FlowKey,
        hash: u64,
        action: FlowAction,
        generation: u64,
        now: u32,
        bytes: u32,
    ) {
        self.insert_nat(key, hash, action, None, None, generation, now, bytes);
    }

    /// [`FlowCache::insert`] with the flow's translation and tag, if it has them. Returns
    /// the tag of the entry it replaced (another flow, or this one under an older decision)
    /// with the packets that entry served since it was last accounted.
    #[allow(clippy::too_many_arguments)]
    pub fn insert_nat(
        &mut self,
        key: FlowKey,
        hash: u64,
        action: FlowAction,
        nat: Option<NatAction>,
        tag: Option<FlowTag>,
        generation: u64,
        now: u32,
        bytes: u32,
    ) -> Option<TaggedFlow> {
        let base = self.bucket(hash);
        let signature = Self::signature(hash);
        let words = key.to_words();
        let mut chosen = None;
        let mut oldest = (0u32, usize::MAX);
        for slot in base..base + WAYS {
            let sig = self.signatures[slot];
            if sig == signature && same_key(&self.entries[slot].key, &words) {
                chosen = Some(slot);
                break;
            }
            if sig == 0 {
                chosen.get_or_insert(slot);
                continue;
            }
            let entry = &self.entries[slot];
            let age = now.wrapping_sub(entry.last_used);
            if entry.generation != generation as u32 || age > self.idle_timeout_ticks {
                chosen.get_or_insert(slot);
            } else if age > oldest.0 || oldest.1 == usize::MAX {
                // Strictly older wins: on a tie the earlier way (inserted first) goes, never
                // the newest entry.
                oldest = (age, slot);
            }
        }
        let slot = match chosen {
            Some(slot) => slot,
            None => {
                self.counters.evictions += 1;
                oldest.1
            }
        };
        if self.signatures[slot] == 0 {
            self.live += 1;
        }
        let same_flow =
            self.signatures[slot] == signature && same_key(&self.entries[slot].key, &words);
        self.signatures[slot] = signature;
        let mut packed = PackedAction {
            out_port: action.out_port & !FLAGS,
            mtu: action.mtu,
            src_mac: action.src_mac,
            dst_mac: action.dst_mac,
        };
        if let Some(next_hop) = action.encap {
            packed.out_port |= ENCAP_FLAG;
            self.encaps[slot] = next_hop.0;
        }
        if let Some(nat) = nat {
            packed.out_port |= NAT_FLAG;
            self.nats[slot] = Some(nat);
        }
        // Most caches hold no tags (no ACLs on the node): no hashing for them.
        let old_tag = if self.tags.is_empty() {
            None
        } else {
            self.tags.remove(&(slot as u32))
        };
        let replaced = old_tag.map(|old| TaggedFlow {
            tag: old.tag,
            packets: self.stats[slot].packets - old.accounted,
            last_used: self.entries[slot].last_used,
        });
        self.entries[slot] = Entry {
            key: words,
            action: packed,
            generation: generation as u32,
            last_used: now,
        };
        let stats = &mut self.stats[slot];
        if !same_flow {
            *stats = FlowStats::default();
        }
        stats.packets += 1;
        stats.bytes += bytes as u64;
        if let Some(tag) = tag {
            let accounted = stats.packets;
            self.tags.insert(slot as u32, TagSlot { tag, accounted });
        }
        self.counters.inserts += 1;
        replaced
    }

    /// Tagged flows: `visit` sees each with the packets it served since the last pass, which
    /// then count as accounted. Tags of entries that can take no more hits (stale under
    /// `generation`, or idle at `now` past the timeout) are dropped after their last visit;
    /// with `generation` `None`, every tag is (before [`FlowCache::clear`]).
    /// Walks the tags only (one per tagged flow), not the cache.
    pub fn tags(&mut self, generation: Option<u64>, now: u32, mut visit: impl FnMut(TaggedFlow)) {
        let (entries, stats, timeout) = (&self.entries, &self.stats, self.idle_timeout_ticks);
        self.tags.retain(|&slot, tagged| {
            let slot = slot as usize;
            let entry = &entries[slot];
            let packets = stats[slot].packets - tagged.accounted;
            tagged.accounted = stats[slot].packets;
            visit(TaggedFlow {
                tag: tagged.tag,
                packets,
                last_used: entry.last_used,
            });
            generation.is_some_and(|g| entry.generation == g as u32)
                && now.wrapping_sub(entry.last_used) <= timeout
        });
    }

    /// Number of tagged flows.
    pub fn tagged(&self) -> usize {
        self.tags.len()
    }

    /// Renumbers the decisions of every tag (`map(old)`), after the pipeline compacted its
    /// decision table.
    pub fn retag(&mut self, mut map: impl FnMut(u32) -> u32) {
        for tagged in self.tags.values_mut() {
            if tagged.tag.decision != FlowTag::NO_DECISION {
                tagged.tag.decision = map(tagged.tag.decision);
            }
        }
    }

    #[inline]
    fn unpack(&self, slot: usize, packed: PackedAction) -> FlowAction {
        let encap = (packed.out_port & ENCAP_FLAG != 0).then(|| NextHopId(self.encaps[slot]));
        FlowAction {
            out_port: packed.out_port & !FLAGS,
            mtu: packed.mtu,
            src_mac: packed.src_mac,
            dst_mac: packed.dst_mac,
            encap,
            nat: packed.out_port & NAT_FLAG != 0,
        }
    }

    /// The translation of a slot whose action has `nat` set.
    #[inline]
    pub fn nat(&self, slot: usize) -> Option<&NatAction> {
        self.nats.get(slot).and_then(Option::as_ref)
    }

    /// Empties the cache. Account the tags first ([`FlowCache::tags`]): they go too.
    pub fn clear(&mut self) {
        self.signatures.fill(0);
        self.tags.clear();
        self.live = 0;
    }

    /// Live entries valid under `generation` at `now`.
    pub fn records(&self, generation: u64, now: u32) -> Vec<FlowRecord> {
        let mut out = Vec::new();
        for (slot, &sig) in self.signatures.iter().enumerate() {
            if sig == 0 {
                continue;
            }
            let entry = &self.entries[slot];
            let idle = now.wrapping_sub(entry.last_used);
            if entry.generation != generation as u32 || idle > self.idle_timeout_ticks {
                continue;
            }
            let action = self.unpack(slot, entry.action);
            out.push(FlowRecord {
                key: FlowKey::from_words(entry.key),
                nat: if action.nat {
                    self.nat(slot).copied()
                } else {
                    None
                },
                action,
                stats: self.stats[slot],
                idle_ticks: idle,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> FlowKey {
        FlowKey {
            src: 0x0a00_0001,
            dst: n as u128,
            vrf: 0,
            protocol: 17,
            ipv6: false,
            src_port: 1000,
            dst_port: 2000,
        }
    }

    fn action(port: u16) -> FlowAction {
        FlowAction {
            out_port: port,
            mtu: 1500,
            ..FlowAction::default()
        }
    }

    #[test]
    fn hit_after_insert_and_miss_after_generation_change() {
        let mut cache = FlowCache::new(64, 1000);
        let k = key(1);
        let h = k.hash(7);
        assert_eq!(cache.lookup(&k, h, 1, 0, 64), Lookup::Miss);
        cache.insert(k, h, action(3), 1, 0, 64);
        assert!(matches!(cache.lookup(&k, h, 1, 5, 64), Lookup::Hit(_, a) if a.out_port == 3));
        assert_eq!(cache.lookup(&k, h, 2, 5, 64), Lookup::Miss);
        assert_eq!(cache.counters.stale, 1);
        let records = cache.records(1, 5);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].stats.packets, 2);
    }

    #[test]
    fn idle_entries_expire() {
        let mut cache = FlowCache::new(64, 100);
        let k = key(1);
        let h = k.hash(7);
        cache.insert(k, h, action(1), 1, 0, 64);
        assert!(matches!(cache.lookup(&k, h, 1, 100, 64), Lookup::Hit(..)));
        assert_eq!(cache.lookup(&k, h, 1, 201, 64), Lookup::Miss);
    }

    #[test]
    fn bounded_with_lru_eviction() {
        let mut cache = FlowCache::new(4, 1_000_000); // one bucket
        for n in 0..4 {
            let k = key(n);
            cache.insert(k, k.hash(7), action(n as u16), 1, n, 64);
        }
        assert_eq!(cache.len(), 4);
        // Refresh flow 0 so flow 1 is the least recently used.
        let k0 = key(0);
        assert!(matches!(
            cache.lookup(&k0, k0.hash(7), 1, 10, 64),
            Lookup::Hit(..)
        ));
        let k9 = key(9);
        cache.insert(k9, k9.hash(7), action(9), 1, 11, 64);
        assert_eq!(cache.len(), 4);
        assert_eq!(cache.counters.evictions, 1);
        let k1 = key(1);
        assert_eq!(cache.lookup(&k1, k1.hash(7), 1, 12, 64), Lookup::Miss);
        assert!(matches!(
            cache.lookup(&k0, k0.hash(7), 1, 12, 64),
            Lookup::Hit(..)
        ));
    }

    #[test]
    fn eviction_on_a_tie_keeps_the_newest_entry() {
        let mut cache = FlowCache::new(4, 1_000_000); // one bucket, constant clock
        for n in 0..100 {
            let k = key(n);
            cache.insert(k, k.hash(7), action(1), 1, 5, 64);
        }
        let k99 = key(99);
        assert!(matches!(
            cache.lookup(&k99, k99.hash(7), 1, 5, 64),
            Lookup::Hit(..)
        ));
        let k0 = key(0);
        assert_eq!(cache.lookup(&k0, k0.hash(7), 1, 5, 64), Lookup::Miss);
    }

    #[test]
    fn entry_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Entry>(), 64);
    }

    #[test]
    fn keys_serialise_with_addresses_and_round_trip_through_tagged_enums() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        #[serde(tag = "type")]
        enum Tagged {
            Key { key: FlowKey },
        }
        for key in [
            key(7),
            FlowKey {
                src: u128::from(std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
                dst: u128::from(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)),
                vrf: 3,
                protocol: 58,
                ipv6: true,
                src_port: 9,
                dst_port: 0,
            },
        ] {
            let json = serde_json::to_string(&Tagged::Key { key }).expect("serialise");
            assert!(
                json.contains(&format!("\"src\":\"{}\"", key.src_addr())),
                "{json}"
            );
            let back: Tagged = serde_json::from_str(&json).expect("deserialise");
            assert_eq!(back, Tagged::Key { key });
        }
    }

    #[test]
    fn key_words_round_trip() {
        let k = FlowKey {
            src: u128::MAX - 5,
            dst: 77,
            vrf: 4095,
            protocol: 58,
            ipv6: true,
            src_port: 65535,
            dst_port: 1,
        };
        assert_eq!(FlowKey::from_words(k.to_words()), k);
    }
}
