//! Per-worker counters: plain integers written only by their worker (no atomics on the hot
//! path). Readers take a copy (the dataplane publishes snapshots) and sum them with
//! [`Counters::merge`].

use crate::drop::DropReason;
use crate::ids::PortId;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// Stages of the pipeline, for runtime statistics (VPP's `show runtime`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum Stage {
    /// Ethernet/IP parse and validation, flow key extraction.
    EthernetInput,
    /// Flow cache lookup and cached rewrite (the fast path).
    FlowLookup,
    /// ARP requests and replies.
    ArpInput,
    /// Packets addressed to the router: ICMP echo, neighbor discovery, unreachable replies.
    IpLocal,
    /// Slow path: route lookup, ECMP, MTU, neighbor resolution, flow install, rewrite.
    IpLookup,
    /// VXLAN decapsulation: outer UDP checksum, flags, VNI to tunnel port and VRF.
    VxlanInput,
}

impl Stage {
    /// Every stage, in index order.
    pub const ALL: &'static [Stage] = &[
        Stage::EthernetInput,
        Stage::FlowLookup,
        Stage::ArpInput,
        Stage::IpLocal,
        Stage::IpLookup,
        Stage::VxlanInput,
    ];
    /// Number of stages.
    pub const COUNT: usize = Self::ALL.len();

    /// Stable name.
    pub const fn name(self) -> &'static str {
        match self {
            Stage::EthernetInput => "ethernet-input",
            Stage::FlowLookup => "flow-lookup",
            Stage::ArpInput => "arp-input",
            Stage::IpLocal => "ip-local",
            Stage::IpLookup => "ip-lookup",
            Stage::VxlanInput => "vxlan-input",
        }
    }
}

/// Runtime figures of one stage: how often it ran, on how many packets, for how long.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageStats {
    /// Batches in which the stage had at least one packet.
    pub calls: u64,
    /// Packets handled.
    pub packets: u64,
    /// Wall-clock nanoseconds spent (one clock read per stage per batch).
    pub nanos: u64,
}

impl StageStats {
    /// Average nanoseconds per packet, 0 when no packet was seen.
    pub fn ns_per_packet(&self) -> f64 {
        if self.packets == 0 {
            0.0
        } else {
            self.nanos as f64 / self.packets as f64
        }
    }

    /// Average packets per call (VPP's vectors/call).
    pub fn packets_per_call(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.packets as f64 / self.calls as f64
        }
    }
}

/// Per-port traffic counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortCounters {
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received (Ethernet frame, no FCS).
    pub rx_bytes: u64,
    /// Frames handed to the port for transmission.
    pub tx_packets: u64,
    /// Bytes handed to the port for transmission.
    pub tx_bytes: u64,
    /// Frames received on this port that were dropped (any reason).
    pub rx_dropped: u64,
}

/// Flow cache counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowCacheCounters {
    /// Lookups served from the cache.
    pub hits: u64,
    /// Lookups that found no usable entry (stale ones included).
    pub misses: u64,
    /// Of the misses, lookups that found an entry computed from an older table generation
    /// (or idle too long).
    pub stale: u64,
    /// Entries installed.
    pub inserts: u64,
    /// Live entries evicted to make room (bucket full).
    pub evictions: u64,
}

/// Traffic exchanged with one remote VTEP through one tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteCounters {
    /// Tunnel port.
    pub tunnel: PortId,
    /// Remote VTEP.
    pub remote: Ipv4Addr,
    /// Packets decapsulated from it.
    pub rx_packets: u64,
    /// Their outer bytes.
    pub rx_bytes: u64,
    /// Packets encapsulated towards it.
    pub tx_packets: u64,
    /// Their outer bytes.
    pub tx_bytes: u64,
}

/// Everything one worker counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Indexed by `PortId.0`; grows when a packet of a new port is seen.
    pub ports: Vec<PortCounters>,
    /// Indexed by [`DropReason::index`].
    pub drops: Vec<u64>,
    /// Indexed by `Stage as usize`.
    pub stages: Vec<StageStats>,
    /// Flow cache figures.
    pub flow: FlowCacheCounters,
    /// Packets the pipeline generated itself (ARP/ND requests, replies, ICMP errors).
    pub emitted: u64,
    /// ICMP errors not sent because of the rate limit.
    pub icmp_rate_limited: u64,
    /// Packets answered in place (ARP replies, ICMP echo replies).
    pub replied: u64,
    /// Partial TCP/UDP checksums (sender TX offload) completed in software.
    #[serde(default)]
    pub checksums_completed: u64,
    /// Per remote VTEP, sorted by (tunnel, remote).
    #[serde(default)]
    pub remotes: Vec<RemoteCounters>,
    /// TCP resets sent for connections refused by a Service without backends (its UDP
    /// refusals are ICMP errors, counted in `emitted`).
    #[serde(default)]
    pub service_resets: u64,
    /// ICMP errors about a translated packet whose quote and addresses were translated back.
    #[serde(default)]
    pub icmp_errors_translated: u64,
    /// TCP resets sent for packets an ACL rejected (its other rejections are ICMP errors).
    #[serde(default)]
    pub acl_resets: u64,
    /// Per ACL rule: the packets it decided: every denied or rejected packet, and every
    /// packet of the original direction of the connections it allowed (those served by the
    /// flow cache are folded in by the worker once a second), sorted by (target, direction,
    /// rule); `rule: None` is the set's default deny.
    #[serde(default)]
    pub acl_hits: Vec<AclHits>,
}

/// Decisions of one ACL rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclHits {
    /// The port or VRF the set is attached to.
    pub target: crate::tables::AclTarget,
    /// Direction.
    pub direction: crate::tables::AclDirection,
    /// Rule position in its set (0-based); `None`: no rule matched (default deny).
    pub rule: Option<u32>,
    /// Packets decided.
    pub packets: u64,
}

impl Counters {
    /// Zeroed counters with every array sized.
    pub fn new() -> Self {
        Counters {
            ports: Vec::new(),
            drops: vec![0; DropReason::COUNT],
            stages: vec![StageStats::default(); Stage::COUNT],
            flow: FlowCacheCounters::default(),
            emitted: 0,
            icmp_rate_limited: 0,
            replied: 0,
            checksums_completed: 0,
            remotes: Vec::new(),
            service_resets: 0,
            icmp_errors_translated: 0,
            acl_resets: 0,
            acl_hits: Vec::new(),
        }
    }

    /// The counters of `port`, growing the array if needed.
    #[inline]
    pub fn port(&mut self, port: PortId) -> &mut PortCounters {
        let index = port.0 as usize;
        if index >= self.ports.len() {
            self.ports.resize(index + 1, PortCounters::default());
        }
        &mut self.ports[index]
    }

    /// Counts one drop.
    #[inline]
    pub fn count_drop(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
    }

    /// Drops counted for `reason`.
    pub fn drops_for(&self, reason: DropReason) -> u64 {
        self.drops.get(reason.index()).copied().unwrap_or(0)
    }

    /// Total drops over all reasons.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Stage statistics.
    pub fn stage(&self, stage: Stage) -> &StageStats {
        &self.stages[stage as usize]
    }

    /// Adds `other` into `self` (readers sum per-worker snapshots).
    pub fn merge(&mut self, other: &Counters) {
        if self.ports.len() < other.ports.len() {
            self.ports
                .resize(other.ports.len(), PortCounters::default());
        }
        for (mine, theirs) in self.ports.iter_mut().zip(&other.ports) {
            mine.rx_packets += theirs.rx_packets;
            mine.rx_bytes += theirs.rx_bytes;
            mine.tx_packets += theirs.tx_packets;
            mine.tx_bytes += theirs.tx_bytes;
            mine.rx_dropped += theirs.rx_dropped;
        }
        if self.drops.len() < other.drops.len() {
            self.drops.resize(other.drops.len(), 0);
        }
        for (mine, theirs) in self.drops.iter_mut().zip(&other.drops) {
            *mine += theirs;
        }
        if self.stages.len() < other.stages.len() {
            self.stages
                .resize(other.stages.len(), StageStats::default());
        }
        for (mine, theirs) in self.stages.iter_mut().zip(&other.stages) {
            mine.calls += theirs.calls;
            mine.packets += theirs.packets;
            mine.nanos += theirs.nanos;
        }
        self.flow.hits += other.flow.hits;
        self.flow.misses += other.flow.misses;
        self.flow.stale += other.flow.stale;
        self.flow.inserts += other.flow.inserts;
        self.flow.evictions += other.flow.evictions;
        self.emitted += other.emitted;
        self.icmp_rate_limited += other.icmp_rate_limited;
        self.replied += other.replied;
        self.checksums_completed += other.checksums_completed;
        self.service_resets += other.service_resets;
        self.icmp_errors_translated += other.icmp_errors_translated;
        self.acl_resets += other.acl_resets;
        for theirs in &other.acl_hits {
            let key = (theirs.target, theirs.direction, theirs.rule);
            match self
                .acl_hits
                .iter_mut()
                .find(|h| (h.target, h.direction, h.rule) == key)
            {
                Some(mine) => mine.packets += theirs.packets,
                None => self.acl_hits.push(*theirs),
            }
        }
        self.acl_hits
            .sort_unstable_by_key(|h| (h.target, h.direction, h.rule.map_or(u64::MAX, u64::from)));
        for theirs in &other.remotes {
            match self
                .remotes
                .binary_search_by_key(&(theirs.tunnel, theirs.remote), |r| (r.tunnel, r.remote))
            {
                Ok(index) => {
                    let mine = &mut self.remotes[index];
                    mine.rx_packets += theirs.rx_packets;
                    mine.rx_bytes += theirs.rx_bytes;
                    mine.tx_packets += theirs.tx_packets;
                    mine.tx_bytes += theirs.tx_bytes;
                }
                Err(index) => self.remotes.insert(index, *theirs),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_sums_every_field() {
        let mut a = Counters::new();
        a.port(PortId(2)).rx_packets = 3;
        a.count_drop(DropReason::NoRoute);
        a.flow.hits = 5;
        let mut b = Counters::new();
        b.port(PortId(0)).tx_bytes = 7;
        b.port(PortId(2)).rx_packets = 1;
        b.count_drop(DropReason::NoRoute);
        b.count_drop(DropReason::TtlExceeded);
        b.flow.hits = 1;
        a.merge(&b);
        assert_eq!(a.ports[2].rx_packets, 4);
        assert_eq!(a.ports[0].tx_bytes, 7);
        assert_eq!(a.drops_for(DropReason::NoRoute), 2);
        assert_eq!(a.drops_for(DropReason::TtlExceeded), 1);
        assert_eq!(a.total_drops(), 3);
        assert_eq!(a.flow.hits, 6);
    }
}
