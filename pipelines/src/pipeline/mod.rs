//! The packet pipeline of one worker: a batch of received frames in, one verdict per frame
//! out, plus the packets the router emits itself.
//!
//! Stages run over the whole batch in turn (VPP-style), each deciding every packet's next
//! stage or its verdict:
//! ```text
//! ethernet-input ─> flow-lookup ─hit─> rewrite ─> Transmit
//!      │                 └─miss─> ip-lookup ─> rewrite + flow install ─> Transmit
//!      │                              ├─> ip-local (router's addresses: echo, ND, unreachable)
//!      │                              └─> neighbor hold (ARP/NS emitted) ─> released later
//!      └─> arp-input (replies in place, learning)
//! ```
//! Contract:
//! - Every packet ends with exactly one [`Verdict`]: `Transmit(port)` (the frame, rewritten in
//!   place, goes out of `port`), `Consumed` (absorbed: an ARP reply learned, or copied into the
//!   neighbor hold queue), `ToHost`, or `Drop(reason)`. Every `Drop` increments exactly one
//!   [`DropReason`] counter; a held packet that later times out increments
//!   `neighbor-unresolved` then, once.
//! - Packets the router builds (ICMP errors, ARP requests and ND messages, fragments, released
//!   held packets) are appended to [`Output::emitted`] as complete Ethernet frames.
//! - Learned neighbors are reported as [`Event`]s; the dataplane applies them to the shared
//!   tables (so every worker sees them) and publishes a new generation.
//! - No input, however malformed, panics any stage (property-tested).
//!
//! Decisions and limitations:
//! - Replies (ICMP echo, ARP, ND) and ICMP errors go back out of the ingress port to the
//!   frame's source MAC: the previous hop. With asymmetric routing the reply path can differ
//!   from what a route lookup would choose.
//! - No IPv4 reassembly: fragments to a router address are dropped (`local-fragment`);
//!   fragments in transit are forwarded, all fragments of a datagram keyed with ports 0 so
//!   they share one path. IPv4 packets larger than the egress MTU without DF are fragmented;
//!   the first fragment keeps every option, later ones only those with the copied flag
//!   (RFC 791).
//! - 802.1Q-tagged frames are dropped (`vlan-unexpected`): ports are untagged.
//! - TCP to a router address gets ICMP port unreachable rather than a TCP reset.
//! - NAT (module `nat`: Services, masquerade, ICMP errors about translated packets) runs in
//!   ip-lookup with the worker's connection table, and its decisions are cached in the flow
//!   cache with the connection's id, so established NAT flows take the hit path (which updates
//!   the connection). The table's memory (`PipelineConfig::conntrack`, 64k connections by
//!   default, ~10 MiB) is allocated per worker up front. Both directions of a connection
//!   must reach the same worker (one table per worker, nothing shared or locked).
//! - ACLs (module `acl`) are checked in ip-lookup for packets that open a connection through
//!   a port with a rule set; allowed connections are tracked so their replies pass, and their
//!   flows are cached like any other.

mod acl;
mod arp;
mod ipv4;
mod ipv6;
mod nat;
mod offload;
mod ratelimit;
mod resolve;
mod vxlan;

pub use ratelimit::TokenBucket;

use crate::counters::{Counters, RemoteCounters, Stage};
use crate::drop::DropReason;
use crate::flow::{FlowAction, FlowCache, FlowKey, FlowRecord, Lookup};
use crate::hash::FastMap;
use crate::ids::PortId;
use crate::tables::{Port, PortKind, Tables};
use crate::wire::{checksum, EtherType, EthernetAddress, ETHERNET_HEADER_LEN};
use resolve::Pending;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

/// Tunables of a pipeline (one per worker).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Flow cache slots (rounded up to a power of two).
    pub flow_capacity: usize,
    /// A flow unused for this long is a miss.
    pub flow_idle_timeout_ms: u32,
    /// ICMP errors per second per worker (0: unlimited).
    pub icmp_errors_per_sec: u32,
    /// ICMP error burst.
    pub icmp_errors_burst: u32,
    /// Interval between ARP/ND probes for an unresolved neighbor.
    pub neighbor_retry_ms: u32,
    /// Probes before giving up and dropping the held packets.
    pub neighbor_max_probes: u32,
    /// Packets held per unresolved neighbor.
    pub neighbor_queue_per_entry: usize,
    /// Packets held in total.
    pub neighbor_queue_total: usize,
    /// Unresolved neighbors tracked at once.
    pub neighbor_pending_max: usize,
    /// Seed of the flow hash (ECMP member choice and cache index).
    pub hash_seed: u64,
    /// The connection table (NAT).
    pub conntrack: crate::conntrack::ConntrackConfig,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            flow_capacity: 1 << 16,
            flow_idle_timeout_ms: 60_000,
            icmp_errors_per_sec: 1000,
            icmp_errors_burst: 50,
            neighbor_retry_ms: 1000,
            neighbor_max_probes: 3,
            neighbor_queue_per_entry: 16,
            neighbor_queue_total: 1024,
            neighbor_pending_max: 256,
            hash_seed: 0x5bd1_e995_1234_5678,
            conntrack: crate::conntrack::ConntrackConfig {
                timeouts: crate::conntrack::Timeouts::kubernetes(),
                ..crate::conntrack::ConntrackConfig::default()
            },
        }
    }
}

/// One received frame of a batch. `buf` is the whole buffer the frame lives in (its headroom
/// and tailroom included); the frame is `buf[offset..offset + len]`.
#[derive(Debug)]
pub struct Packet<'a> {
    /// The buffer.
    pub buf: &'a mut [u8],
    /// Frame start in `buf`.
    pub offset: usize,
    /// Frame length.
    pub len: usize,
    /// Port the frame arrived on.
    pub in_port: PortId,
}

impl<'a> Packet<'a> {
    /// A frame filling `buf`.
    pub fn new(buf: &'a mut [u8], in_port: PortId) -> Self {
        let len = buf.len();
        Packet {
            buf,
            offset: 0,
            len,
            in_port,
        }
    }

    /// The frame bytes (empty if offset/len do not fit the buffer).
    #[inline]
    pub fn frame(&self) -> &[u8] {
        self.buf
            .get(self.offset..self.offset.saturating_add(self.len))
            .unwrap_or(&[])
    }

    /// The frame bytes, mutable.
    #[inline]
    pub fn frame_mut(&mut self) -> &mut [u8] {
        let end = self.offset.saturating_add(self.len);
        match self.buf.get_mut(self.offset..end) {
            Some(frame) => frame,
            None => &mut [],
        }
    }
}

/// What happens to a received frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Send the (rewritten) frame out of this port.
    Transmit(PortId),
    /// Hand the frame to the host stack (exception path).
    ToHost,
    /// Absorbed by the pipeline; the buffer can be reused.
    #[default]
    Consumed,
    /// Dropped, counted under this reason.
    Drop(DropReason),
}

/// Something the control side must know about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// An ARP or ND message showed `ip` at `mac` on `port`.
    NeighborLearned {
        /// Port.
        port: PortId,
        /// Neighbor address.
        ip: IpAddr,
        /// Its MAC.
        mac: EthernetAddress,
    },
    /// An ACL denied or rejected a packet (sampled: at most 10 a second per worker, bursts of
    /// 20), for the log.
    AclDenied {
        /// The port or VRF whose set decided.
        target: crate::tables::AclTarget,
        /// Its direction.
        direction: crate::tables::AclDirection,
        /// The rule's position in the set (0-based); `None`: no rule allowed it.
        rule: Option<u32>,
        /// Deny or reject.
        action: crate::acl::AclAction,
        /// The packet's tuple (destination as delivered).
        protocol: u8,
        /// Source.
        src: IpAddr,
        /// Source port (ICMP: type).
        src_port: u16,
        /// Destination.
        dst: IpAddr,
        /// Destination port (ICMP: code).
        dst_port: u16,
    },
}

/// A frame built by the pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Emitted {
    /// Egress port.
    pub port: PortId,
    /// The complete Ethernet frame.
    pub frame: Vec<u8>,
}

/// What a batch produced besides the verdicts. Reuse one `Output` across batches: `clear`
/// keeps the frame buffers for reuse.
#[derive(Debug, Default)]
pub struct Output {
    /// Frames to send.
    pub emitted: Vec<Emitted>,
    /// Events for the control side.
    pub events: Vec<Event>,
    spare: Vec<Vec<u8>>,
}

impl Output {
    /// Empties the output, keeping buffers.
    pub fn clear(&mut self) {
        for emitted in self.emitted.drain(..) {
            if self.spare.len() < 256 {
                self.spare.push(emitted.frame);
            }
        }
        self.events.clear();
    }

    /// Keeps a frame buffer for reuse.
    fn recycle(&mut self, frame: Vec<u8>) {
        if self.spare.len() < 256 {
            self.spare.push(frame);
        }
    }

    /// A zeroed buffer of `len` bytes, reusing a spare one when possible.
    fn buffer(&mut self, len: usize) -> Vec<u8> {
        let mut frame = self.spare.pop().unwrap_or_default();
        frame.clear();
        frame.resize(len, 0);
        frame
    }
}

/// Where a packet goes next inside the batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Next {
    /// Verdict set.
    #[default]
    Done,
    Flow,
    Arp,
    Lookup,
    Local,
    Decap,
}

impl Next {
    const COUNT: usize = 6;
}

/// Per-packet scratch state between stages.
#[derive(Clone, Copy, Debug, Default)]
struct Meta {
    next: Next,
    /// Offset of the L3 header in the frame.
    l3: u16,
    /// Offset of the L4 header in the frame (0 if none was found).
    l4: u16,
    /// Bytes of the IP packet (IPv4 total length, IPv6 40 + payload length).
    ip_len: u16,
    /// TTL / hop limit on arrival.
    ttl: u8,
    /// IPv4 don't-fragment.
    dont_fragment: bool,
    /// Non-first fragment (no L4 header).
    later_fragment: bool,
    /// Part of a fragmented datagram (IPv4: MF or an offset; IPv6: a Fragment header with M
    /// or an offset, atomic fragments excluded as RFC 8200 4.5 says).
    fragment: bool,
    key: FlowKey,
    hash: u64,
    /// Outer source (remote VTEP) of a packet that came out of a tunnel, 0 otherwise.
    tunnel_src: u32,
    /// Its decision must not be cached (an ICMP error translated by NAT).
    no_cache: bool,
}

/// A worker's pipeline: flow cache, counters, neighbor hold queue, ICMP rate limit.
#[derive(Debug)]
pub struct Pipeline {
    config: PipelineConfig,
    flow: FlowCache,
    counters: Counters,
    icmp_limit: TokenBucket,
    pending: Pending,
    meta: Vec<Meta>,
    now_ns: u64,
    now_ms: u32,
    ip_ident: u16,
    icmp_suppressed: u64,
    remotes: FastMap<(PortId, Ipv4Addr), RemoteCounters>,
    conntrack: crate::conntrack::ConnTable,
    /// Client-IP affinity of Services: (Service, client address) to backend.
    affinity: FastMap<(crate::tables::ServiceKey, u128), nat::Affinity>,
    /// Packets decided per ACL rule: (set, direction, rule or `u32::MAX` for the default).
    acl_hits: FastMap<(crate::tables::AclTarget, crate::tables::AclDirection, u32), u64>,
    /// The distinct ACL decisions that allowed cached flows, which the flow tags name.
    acl_decisions: Vec<acl::Decision>,
    acl_decision_index: FastMap<acl::Decision, u32>,
    /// The tag of the flow the slow path is about to cache (set by the ACL and NAT steps).
    flow_tag: Option<crate::flow::FlowTag>,
    /// When the tagged flows were last accounted ([`Pipeline::account_flows`]).
    last_account_ms: u32,
    /// The accounting pass's list of tagged flows, kept to be reused.
    tag_scratch: Vec<crate::flow::TaggedFlow>,
    /// Samples of denied packets reported as events.
    acl_log: TokenBucket,
    /// When the connection table was last swept.
    last_sweep_ms: u32,
}

impl Pipeline {
    /// A pipeline with its own flow cache.
    pub fn new(config: PipelineConfig) -> Self {
        Pipeline {
            flow: FlowCache::new(config.flow_capacity, config.flow_idle_timeout_ms),
            icmp_limit: TokenBucket::new(config.icmp_errors_per_sec, config.icmp_errors_burst),
            counters: Counters::new(),
            pending: Pending::default(),
            meta: Vec::with_capacity(256),
            now_ns: 0,
            now_ms: 0,
            ip_ident: 1,
            icmp_suppressed: 0,
            remotes: FastMap::default(),
            conntrack: crate::conntrack::ConnTable::new(config.conntrack),
            affinity: FastMap::default(),
            acl_hits: FastMap::default(),
            acl_decisions: Vec::new(),
            acl_decision_index: FastMap::default(),
            flow_tag: None,
            last_account_ms: 0,
            tag_scratch: Vec::new(),
            acl_log: TokenBucket::new(10, 20),
            last_sweep_ms: u32::MAX,
            config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// Counters, with the flow cache figures folded in.
    pub fn counters(&self) -> Counters {
        let mut counters = self.counters.clone();
        counters.flow = self.flow.counters;
        counters.remotes = self.remotes.values().copied().collect();
        counters
            .remotes
            .sort_unstable_by_key(|r| (r.tunnel, r.remote));
        counters.acl_hits = self
            .acl_hits
            .iter()
            .map(
                |(&(target, direction, rule), &packets)| crate::counters::AclHits {
                    target,
                    direction,
                    rule: (rule != u32::MAX).then_some(rule),
                    packets,
                },
            )
            .collect();
        counters
            .acl_hits
            .sort_unstable_by_key(|h| (h.target, h.direction, h.rule.map_or(u64::MAX, u64::from)));
        counters
    }

    /// The flow cache.
    pub fn flow_cache(&self) -> &FlowCache {
        &self.flow
    }

    /// Live flows under the tables' generation.
    pub fn flows(&self, tables: &Tables) -> Vec<FlowRecord> {
        self.flow.records(tables.generation(), self.now_ms)
    }

    /// Empties the flow cache (its tagged flows accounted first).
    pub fn flush_flows(&mut self) {
        self.account_flows(None);
        self.flow.clear();
    }

    /// Packets currently held waiting for neighbor resolution.
    pub fn held_packets(&self) -> usize {
        self.pending.held()
    }

    /// ICMP errors not generated because the packet did not qualify (RFC 1812 4.3.2.7), and
    /// answers to a packet that came out of a tunnel that could not be sent back into it (no
    /// underlay route to its VTEP, or the neighbor hold queue full).
    pub fn icmp_errors_suppressed(&self) -> u64 {
        self.icmp_suppressed
    }

    /// Counts a drop decided outside the pipeline (by the port layer), e.g. a full TX ring.
    pub fn count_drop(&mut self, reason: DropReason) {
        self.counters.count_drop(reason);
    }

    /// Runs a batch. `verdicts` must be at least as long as `packets`; `now_ns` is a
    /// monotonic clock read once per batch.
    pub fn process(
        &mut self,
        tables: &Tables,
        packets: &mut [Packet<'_>],
        verdicts: &mut [Verdict],
        out: &mut Output,
        now_ns: u64,
    ) {
        let n = packets.len().min(verdicts.len());
        self.now_ns = now_ns;
        self.now_ms = (now_ns / 1_000_000) as u32;
        let mut meta = std::mem::take(&mut self.meta);
        meta.clear();
        meta.resize(n, Meta::default());

        // Stage clock: one read per stage that runs, each stage's end being the next one's
        // start (stages with no packet are skipped without reading it).
        let mut clock = Instant::now();
        // Packets waiting for each stage, kept up to date instead of rescanning the batch.
        let mut waiting = [0usize; Next::COUNT];

        // ethernet-input
        if n > 0 {
            // Touch every frame's first cache line before parsing any: frames just written by
            // the kernel on another CPU miss in this core's cache, and issuing the loads of
            // the whole batch back to back lets those misses overlap instead of queueing.
            for packet in packets[..n].iter() {
                std::hint::black_box(packet.buf.get(packet.offset).copied());
            }
            for i in 0..n {
                self.ethernet_input(tables, &mut packets[i], &mut meta[i], &mut verdicts[i]);
                waiting[meta[i].next as usize] += 1;
            }
            clock = self.account(Stage::EthernetInput, n, clock);
        }

        // vxlan-input: outer headers checked and stripped; the inner frames went through
        // ethernet-input on their tunnel port and wait for their next stage like the others.
        let decaps = waiting[Next::Decap as usize];
        if decaps > 0 {
            for i in 0..n {
                if meta[i].next != Next::Decap {
                    continue;
                }
                self.vxlan_input(tables, &mut packets[i], &mut meta[i], &mut verdicts[i]);
                waiting[meta[i].next as usize] += 1;
            }
            waiting[Next::Decap as usize] = 0;
            clock = self.account(Stage::VxlanInput, decaps, clock);
        }

        // flow-lookup: hash and touch every bucket first so the cache misses of the batch
        // overlap, then look up and rewrite the hits.
        let flows = waiting[Next::Flow as usize];
        if flows > 0 {
            let seed = self.config.hash_seed;
            for m in meta.iter_mut().filter(|m| m.next == Next::Flow) {
                m.hash = m.key.hash(seed);
                std::hint::black_box(self.flow.touch(m.hash));
            }
            // Then the matching entries: with a cache bigger than the CPU caches, each entry
            // is a DRAM miss, and touching them back to back overlaps those misses.
            for m in meta.iter().filter(|m| m.next == Next::Flow) {
                std::hint::black_box(self.flow.touch_entry(m.hash));
            }
            let generation = tables.generation();
            for i in 0..n {
                if meta[i].next != Next::Flow {
                    continue;
                }
                let m = &mut meta[i];
                let packet = &mut packets[i];
                // A cached flow whose packet the cache cannot finish (TTL expiring, over the
                // path MTU, its NAT connection gone) is a miss: the slow path decides. A NAT
                // flow's connection is updated here (state, timer, counters).
                let (ttl, ip_len, now) = (m.ttl, m.ip_len, self.now_ms);
                let conntrack = &mut self.conntrack;
                let received = &*packet;
                match self.flow.lookup_usable(
                    &m.key,
                    m.hash,
                    generation,
                    now,
                    packet.len as u32,
                    |mtu, nat| {
                        ttl > 1
                            && ip_len <= mtu
                            && nat.is_none_or(|nat| {
                                Pipeline::nat_usable(conntrack, nat, received.frame(), m, now)
                            })
                    },
                ) {
                    Lookup::Hit(slot, action) => {
                        m.next = Next::Done;
                        if action.nat {
                            let translated = match self.flow.nat(slot) {
                                Some(nat) => nat::rewrite_cached(packet.frame_mut(), m, nat),
                                None => Err(DropReason::NextHopInvalid),
                            };
                            if let Err(reason) = translated {
                                self.drop_packet(&mut verdicts[i], packet.in_port, reason);
                                continue;
                            }
                        }
                        match action.encap {
                            None => {
                                rewrite(packet.frame_mut(), m, &action);
                                trim(packet, m);
                                self.transmit(&mut verdicts[i], action.port(), packet.len);
                            }
                            Some(next_hop) => {
                                let m = &meta[i];
                                match self.encapsulate_hit(tables, packet, m, &action, next_hop) {
                                    Ok(()) => {
                                        self.transmit(&mut verdicts[i], action.port(), packet.len)
                                    }
                                    Err(reason) => {
                                        self.drop_packet(&mut verdicts[i], packet.in_port, reason)
                                    }
                                }
                            }
                        }
                    }
                    Lookup::Miss => {
                        m.next = Next::Lookup;
                        waiting[Next::Lookup as usize] += 1;
                    }
                }
            }
            clock = self.account(Stage::FlowLookup, flows, clock);
        }

        for (stage, next) in [
            (Stage::IpLookup, Next::Lookup),
            (Stage::IpLocal, Next::Local),
            (Stage::ArpInput, Next::Arp),
        ] {
            let count = waiting[next as usize];
            if count == 0 {
                continue;
            }
            let to_local = self.run_stage(next, tables, packets, &mut meta, verdicts, out);
            waiting[Next::Local as usize] += to_local;
            clock = self.account(stage, count, clock);
        }

        self.meta = meta;
        self.resolve_pending(tables, out);
        self.expire_connections();
        self.account_flows_every_second(tables);
    }

    /// The connection table (NAT).
    pub fn conntrack(&self) -> &crate::conntrack::ConnTable {
        &self.conntrack
    }

    /// Live connections as of the last batch or tick, in table order (walks the whole table:
    /// for listing, not for the packet path).
    pub fn connections(&self) -> Vec<crate::conntrack::Connection> {
        self.conntrack.iter(self.now_ms).collect()
    }

    /// Forgets every tracked connection (their next packets are new connections: a reply of
    /// a masqueraded one is then for the router and dropped or answered there). Cached NAT
    /// decisions go too. Returns how many connections were removed.
    pub fn flush_connections(&mut self) -> usize {
        let removed = self.conntrack.flush();
        self.account_flows(None);
        self.flow.clear();
        self.affinity.clear();
        removed
    }

    /// Sweeps the connection table for expired connections at 64 slots per elapsed
    /// millisecond (the 64k-slot default table in about a second, whether batches come every
    /// microsecond or an idle worker ticks every 100 ms; at most 16k slots a call), nothing
    /// when the table is empty. Expired connections are also reclaimed when a lookup meets
    /// them. Not per batch: at tens of millions of packets a second a per-batch sweep cost
    /// the hit path ~3 ns/packet.
    fn expire_connections(&mut self) {
        if self.conntrack.is_empty() || self.now_ms == self.last_sweep_ms {
            return;
        }
        let elapsed = if self.last_sweep_ms == u32::MAX {
            1
        } else {
            self.now_ms.wrapping_sub(self.last_sweep_ms).clamp(1, 256)
        };
        self.last_sweep_ms = self.now_ms;
        self.conntrack.expire(self.now_ms, 64 * elapsed as usize);
    }

    /// Accounts the tagged flows once a second ([`Pipeline::account_flows`]): per-rule
    /// counters of cached flows lag by up to a second, and identity connections stay alive
    /// as long as their flows are used.
    fn account_flows_every_second(&mut self, tables: &Tables) {
        if self.now_ms.wrapping_sub(self.last_account_ms) >= 1000 {
            self.last_account_ms = self.now_ms;
            self.account_flows(Some(tables.generation()));
        }
    }

    /// Advances time without traffic: retries and expires neighbor resolutions.
    pub fn tick(&mut self, tables: &Tables, out: &mut Output, now_ns: u64) {
        self.now_ns = now_ns;
        self.now_ms = (now_ns / 1_000_000) as u32;
        self.resolve_pending(tables, out);
        self.expire_connections();
        self.account_flows_every_second(tables);
    }

    /// Runs the packets waiting for `next` through their stage; returns how many the stage
    /// sent on to ip-local.
    fn run_stage(
        &mut self,
        next: Next,
        tables: &Tables,
        packets: &mut [Packet<'_>],
        meta: &mut [Meta],
        verdicts: &mut [Verdict],
        out: &mut Output,
    ) -> usize {
        let mut to_local = 0;
        for i in 0..meta.len() {
            if meta[i].next != next {
                continue;
            }
            let emitted_before = out.emitted.len();
            let mut verdict = match next {
                Next::Lookup => {
                    if meta[i].key.ipv6 {
                        self.ipv6_lookup(tables, &mut packets[i], &mut meta[i], out)
                    } else {
                        self.ipv4_lookup(tables, &mut packets[i], &mut meta[i], out)
                    }
                }
                Next::Local => {
                    if meta[i].key.ipv6 {
                        self.ipv6_local(tables, &mut packets[i], &meta[i], out)
                    } else {
                        self.ipv4_local(tables, &mut packets[i], &meta[i], out)
                    }
                }
                Next::Arp => self.arp_input(tables, &mut packets[i], &meta[i], out),
                Next::Done | Next::Flow | Next::Decap => continue,
            };
            // What answers a packet that came out of a tunnel goes back into it.
            if meta[i].tunnel_src != 0 {
                let remote = Ipv4Addr::from(meta[i].tunnel_src);
                if out.emitted.len() > emitted_before {
                    self.encapsulate_emitted(tables, out, emitted_before, remote, meta[i].hash);
                }
                if let Some(Verdict::Transmit(port)) = verdict {
                    if tables.port(port).is_some_and(|p| p.vxlan().is_some()) {
                        verdict = Some(self.reply_into_tunnel(
                            tables,
                            &mut packets[i],
                            &meta[i],
                            port,
                            out,
                        ));
                    }
                }
            }
            // A slow-path packet routed to the router itself continues in ip-local.
            if let Some(verdict) = verdict {
                meta[i].next = Next::Done;
                self.finish(&mut verdicts[i], &packets[i], verdict);
            } else {
                meta[i].next = Next::Local;
                to_local += 1;
            }
        }
        to_local
    }

    /// Records a stage run that started at `start`; returns its end (the next start).
    fn account(&mut self, stage: Stage, packets: usize, start: Instant) -> Instant {
        let end = Instant::now();
        let stats = &mut self.counters.stages[stage as usize];
        stats.calls += 1;
        stats.packets += packets as u64;
        stats.nanos += end.duration_since(start).as_nanos() as u64;
        end
    }

    #[inline]
    fn transmit(&mut self, verdict: &mut Verdict, port: PortId, len: usize) {
        *verdict = Verdict::Transmit(port);
        let counters = self.counters.port(port);
        counters.tx_packets += 1;
        counters.tx_bytes += len as u64;
    }

    fn finish(&mut self, slot: &mut Verdict, packet: &Packet<'_>, verdict: Verdict) {
        match verdict {
            Verdict::Transmit(port) => self.transmit(slot, port, packet.len),
            Verdict::Drop(reason) => self.drop_packet(slot, packet.in_port, reason),
            other => *slot = other,
        }
    }

    fn drop_packet(&mut self, slot: &mut Verdict, in_port: PortId, reason: DropReason) {
        *slot = Verdict::Drop(reason);
        self.counters.count_drop(reason);
        self.counters.port(in_port).rx_dropped += 1;
    }

    /// Queues a built frame for transmission.
    fn emit(&mut self, out: &mut Output, port: PortId, frame: Vec<u8>) {
        let counters = self.counters.port(port);
        counters.tx_packets += 1;
        counters.tx_bytes += frame.len() as u64;
        self.counters.emitted += 1;
        out.emitted.push(Emitted { port, frame });
    }

    fn next_ident(&mut self) -> u16 {
        self.ip_ident = self.ip_ident.wrapping_add(1);
        self.ip_ident
    }

    /// Ethernet checks, then dispatch by EtherType with the L3 parse and flow key.
    fn ethernet_input(
        &mut self,
        tables: &Tables,
        packet: &mut Packet<'_>,
        m: &mut Meta,
        verdict: &mut Verdict,
    ) {
        let in_port = packet.in_port;
        let len = packet.len;
        {
            let counters = self.counters.port(in_port);
            counters.rx_packets += 1;
            counters.rx_bytes += len as u64;
        }
        let Some(port) = tables.port(in_port) else {
            return self.drop_packet(verdict, in_port, DropReason::PortUnknown);
        };
        match classify_ethernet(port, packet.frame()) {
            Ok(EthernetClass::Arp) => {
                m.l3 = ETHERNET_HEADER_LEN as u16;
                m.next = Next::Arp;
            }
            Ok(EthernetClass::Ipv4) => match ipv4::parse(port, packet.frame(), m) {
                Ok(()) => {
                    if offload::complete_partial_checksum(packet.frame_mut(), m) {
                        self.counters.checksums_completed += 1;
                    }
                    if m.key.dst_port == crate::wire::VXLAN_PORT
                        && m.key.protocol == u8::from(crate::wire::IpProtocol::Udp)
                        && !m.fragment
                        && port.vxlan().is_none()
                        && tables.is_vtep(port.vrf, std::net::Ipv4Addr::from(m.key.dst as u32))
                    {
                        m.next = Next::Decap;
                    }
                }
                Err(reason) => self.drop_packet(verdict, in_port, reason),
            },
            Ok(EthernetClass::Ipv6 { multicast_dst }) => {
                match ipv6::parse(port, packet.frame(), multicast_dst, m) {
                    Ok(()) => {
                        if offload::complete_partial_checksum(packet.frame_mut(), m) {
                            self.counters.checksums_completed += 1;
                        }
                    }
                    Err(reason) => self.drop_packet(verdict, in_port, reason),
                }
            }
            Err(reason) => self.drop_packet(verdict, in_port, reason),
        }
    }
}

enum EthernetClass {
    Arp,
    Ipv4,
    Ipv6 { multicast_dst: bool },
}

/// Ethernet-level checks: length, MTU, source, destination, tag, EtherType.
#[inline]
fn classify_ethernet(port: &Port, frame: &[u8]) -> Result<EthernetClass, DropReason> {
    if frame.len() < ETHERNET_HEADER_LEN {
        return Err(DropReason::EthernetTruncated);
    }
    // What comes out of a tunnel is not limited by the tunnel's MTU (the sender's may be
    // larger; Linux does not check either): routing applies the egress MTU.
    if frame.len() > port.mtu as usize + ETHERNET_HEADER_LEN
        && !matches!(port.kind, PortKind::Vxlan(_))
    {
        return Err(DropReason::FrameTooLong);
    }
    let dst = mac_at(frame, 0);
    let src = mac_at(frame, 6);
    if !src.is_unicast() {
        return Err(DropReason::EthernetSourceInvalid);
    }
    let ethertype = EtherType::from(u16::from_be_bytes([frame[12], frame[13]]));
    // A tunnel is a point-to-point link between routers: whatever unicast MAC the remote
    // end wrote (a Linux peer writes ours, another vrouter may write its own) is for us.
    let for_port = dst == port.mac || (matches!(port.kind, PortKind::Vxlan(_)) && dst.is_unicast());
    match ethertype {
        EtherType::Ipv4 if for_port => Ok(EthernetClass::Ipv4),
        EtherType::Ipv6 if for_port => Ok(EthernetClass::Ipv6 {
            multicast_dst: false,
        }),
        EtherType::Ipv6 if dst.0[0] == 0x33 && dst.0[1] == 0x33 => Ok(EthernetClass::Ipv6 {
            multicast_dst: true,
        }),
        EtherType::Arp if for_port || dst.is_broadcast() => Ok(EthernetClass::Arp),
        EtherType::Vlan => Err(DropReason::VlanUnexpected),
        EtherType::Ipv4 | EtherType::Ipv6 | EtherType::Arp => Err(DropReason::EthernetNotForUs),
        _ => Err(DropReason::EtherTypeUnsupported),
    }
}

#[inline]
fn mac_at(frame: &[u8], offset: usize) -> EthernetAddress {
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&frame[offset..offset + 6]);
    EthernetAddress(mac)
}

/// Drops the bytes after the IP packet (Ethernet padding, or junk) from a forwarded frame:
/// they are not part of the packet, and Linux trims them on receive too. Done where a frame
/// is forwarded rather than on receive, where changing the length costs the hit path more.
#[inline]
fn trim(packet: &mut Packet<'_>, m: &Meta) {
    packet.len = packet.len.min(m.l3 as usize + m.ip_len as usize);
}

/// The forwarding rewrite: TTL/hop limit minus one (IPv4 checksum updated incrementally,
/// RFC 1624), Ethernet addresses from the action.
#[inline]
fn rewrite(frame: &mut [u8], m: &Meta, action: &FlowAction) {
    let l3 = m.l3 as usize;
    if m.key.ipv6 {
        if let Some(hop_limit) = frame.get_mut(l3 + 7) {
            *hop_limit = hop_limit.wrapping_sub(1);
        }
    } else if frame.len() >= l3 + 12 {
        // TTL shares a 16-bit word with the protocol (RFC 1624 incremental update).
        let ttl = frame[l3 + 8];
        let protocol = frame[l3 + 9];
        frame[l3 + 8] = ttl.wrapping_sub(1);
        let checksum = u16::from_be_bytes([frame[l3 + 10], frame[l3 + 11]]);
        let updated = checksum::update_u16(
            checksum,
            u16::from_be_bytes([ttl, protocol]),
            u16::from_be_bytes([ttl.wrapping_sub(1), protocol]),
        );
        frame[l3 + 10..l3 + 12].copy_from_slice(&updated.to_be_bytes());
    }
    if frame.len() >= 12 {
        frame[0..6].copy_from_slice(&action.dst_mac.0);
        frame[6..12].copy_from_slice(&action.src_mac.0);
    }
}
