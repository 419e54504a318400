//! `slow-path` and `flow-hit-*`: the whole pipeline (`Pipeline::process`) on batches of 64
//! prebuilt 64-byte UDP frames, as a worker runs it.
//!
//! # Topology
//! ```text
//! sender 02:..:02 ──> port 0 "bench-in"  (MAC 02:..:01, 10.0.0.1/24)
//!                     port 1 "bench-out" (MAC 02:..:02, 10.1.0.1/24) ──> gateways
//!                     10.1.0.2-5 (static neighbors, MAC 02:..:01)
//! VRF 0: 10k routes (realistic length mix), each via one of the 4 gateways on port 1
//! ```
//! Frames are rewritten in place (TTL, IPv4 checksum, MACs). The MACs are chosen so that the
//! rewrite leaves them as they were: the egress port's MAC is the sender's and the gateways'
//! MAC is the ingress port's. A frame after a pass is its old self with TTL one lower and the
//! checksum updated, so the same frames can go round again with no copy in the timed loop.
//! TTL starts at 255; every 200 passes over the frames, outside the timed region, every frame
//! is restored from a pristine copy.
//!
//! # Honesty checks
//! Every batch's verdicts are reset before `process` and compared with
//! `Transmit(port 1)` after it, inside the timed loop (a worker walks its verdicts too); a
//! single other verdict fails the scenario. After the runs, the pipeline's counters must show
//! exactly the packets sent as transmitted on port 1, no drop, no emitted packet and, for the
//! hit scenarios, only flow-cache hits (for `slow-path`, only misses).

use super::gen::{address_in, v4_prefixes, Rng};
use super::report::{RunSet, ScenarioResult, StageFigure, TargetCheck};
use super::Settings;
use crate::alloc;
use crate::os::{Reading, Stopwatch};
use etherparse::PacketBuilder;
use pipelines::counters::StageStats;
use pipelines::flow::{FlowKey, WAYS};
use pipelines::lpm::Ipv4Prefix;
use pipelines::tables::{InterfaceAddress, RouteTarget};
use pipelines::wire::EthernetAddress;
use pipelines::{
    Counters, IpPrefix, Output, Packet, Pipeline, PipelineConfig, PortId, Stage, TableOp, Tables,
    Verdict, VrfId,
};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// Frame length: Ethernet 14 + IPv4 20 + UDP 8 + 22 bytes of payload.
pub const FRAME_LEN: usize = 64;
/// Packets per `process` call.
pub const BATCH: usize = 64;
/// Routes in VRF 0.
pub const ROUTES: usize = 10_000;
/// Distinct flows of the slow-path scenario.
const SLOW_PATH_FLOWS: usize = 65_536;
/// Passes over the frames between two restores (TTL 255 leaves room for 254).
const PASSES_PER_RESTORE: usize = 200;
/// The clock given to `process`: starts at 1 s and advances [`NS_PER_BATCH`] per batch, a
/// synthetic clock (deterministic, free) at the pace of a worker doing ~150 ns/packet. Flows
/// are revisited well within the idle timeout (60 s) even at 1M flows (one pass: 0.16 s).
const START_NS: u64 = 1_000_000_000;
/// Synthetic time per batch.
const NS_PER_BATCH: u64 = 10_000;

const ROUTER_IN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const SENDER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const IN_PORT: PortId = PortId(0);
const OUT_PORT: PortId = PortId(1);
const GATEWAYS: [Ipv4Addr; 4] = [
    Ipv4Addr::new(10, 1, 0, 2),
    Ipv4Addr::new(10, 1, 0, 3),
    Ipv4Addr::new(10, 1, 0, 4),
    Ipv4Addr::new(10, 1, 0, 5),
];

/// The benchmark's tables and the prefixes of its routes.
fn topology(rng: &mut Rng) -> Result<(Tables, Vec<Ipv4Prefix>), String> {
    let prefixes = v4_prefixes(ROUTES, rng);
    let mut ops = vec![
        TableOp::AddPort {
            id: IN_PORT,
            name: "bench-in".into(),
            mac: EthernetAddress(ROUTER_IN_MAC),
            mtu: 1500,
            vrf: VrfId(0),
        },
        TableOp::AddPort {
            id: OUT_PORT,
            name: "bench-out".into(),
            mac: EthernetAddress(SENDER_MAC),
            mtu: 1500,
            vrf: VrfId(0),
        },
        TableOp::AddAddress {
            port: IN_PORT,
            address: InterfaceAddress {
                addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                prefix_len: 24,
            },
        },
        TableOp::AddAddress {
            port: OUT_PORT,
            address: InterfaceAddress {
                addr: IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1)),
                prefix_len: 24,
            },
        },
    ];
    for gateway in GATEWAYS {
        ops.push(TableOp::AddNeighbor {
            port: OUT_PORT,
            ip: IpAddr::V4(gateway),
            mac: EthernetAddress(ROUTER_IN_MAC),
        });
    }
    for (i, prefix) in prefixes.iter().enumerate() {
        ops.push(TableOp::AddRoute {
            vrf: VrfId(0),
            prefix: IpPrefix::V4(*prefix),
            target: RouteTarget::Via {
                gateway: IpAddr::V4(GATEWAYS[i % GATEWAYS.len()]),
                port: Some(OUT_PORT),
            },
            replace: false,
        });
    }
    let mut tables = Tables::new();
    tables
        .apply_batch(&ops)
        .map_err(|e| format!("building the benchmark tables failed: {e}"))?;
    Ok((tables, prefixes))
}

/// One UDP flow from the sender's subnet to a routed destination.
#[derive(Clone, Copy, Debug)]
struct Flow {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
}

impl Flow {
    /// The `index`-th flow: (source address, source port) is unique per index below 12.8M;
    /// destination (inside a random route) and destination port are random.
    fn new(index: usize, prefixes: &[Ipv4Prefix], rng: &mut Rng) -> Self {
        let prefix = &prefixes[rng.below(prefixes.len() as u64) as usize];
        Flow {
            src: Ipv4Addr::new(10, 0, 0, 2 + (index % 200) as u8),
            dst: Ipv4Addr::from(address_in(prefix, rng)),
            src_port: 1024 + (index / 200) as u16,
            dst_port: 1 + rng.below(65_000) as u16,
        }
    }

    /// The key the pipeline derives from this flow's frames.
    fn key(&self) -> FlowKey {
        FlowKey {
            src: u128::from(u32::from(self.src)),
            dst: u128::from(u32::from(self.dst)),
            vrf: 0,
            protocol: 17,
            ipv6: false,
            src_port: self.src_port,
            dst_port: self.dst_port,
        }
    }

    /// A 64-byte frame of the flow, TTL 255, valid checksums.
    fn frame(&self) -> [u8; FRAME_LEN] {
        let builder = PacketBuilder::ethernet2(SENDER_MAC, ROUTER_IN_MAC)
            .ipv4(self.src.octets(), self.dst.octets(), 255)
            .udp(self.src_port, self.dst_port);
        let payload = [0x5a_u8; FRAME_LEN - 14 - 20 - 8];
        let mut frame = Vec::with_capacity(FRAME_LEN);
        builder
            .write(&mut frame, &payload)
            .expect("writing into a Vec cannot fail");
        let mut out = [0u8; FRAME_LEN];
        out.copy_from_slice(&frame);
        out
    }
}

/// Frames for `flows`: `count` frames (a multiple of [`BATCH`]), frame `i` of flow
/// `i % flows.len()`, contiguous.
fn frames(flows: &[Flow], count: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(count * FRAME_LEN);
    for i in 0..count {
        buf.extend_from_slice(&flows[i % flows.len()].frame());
    }
    buf
}

/// Cost of one `Instant::now()` (the clock read the pipeline's stage statistics do twice per
/// stage per batch): the fastest of 5 rounds, the one least disturbed by other processes.
pub fn clock_read_ns() -> f64 {
    const READS: u32 = 100_000;
    let mut rounds = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..READS {
            black_box(Instant::now());
        }
        rounds.push(start.elapsed().as_nanos() as f64 / f64::from(READS));
    }
    rounds.into_iter().fold(f64::MAX, f64::min)
}

/// What the flow cache must have done for every timed packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Hits,
    Misses,
}

/// A pipeline with its frames, run in batches.
struct Traffic<'t, 'f> {
    tables: &'t Tables,
    pipeline: Pipeline,
    packets: Vec<Packet<'f>>,
    pristine: Vec<u8>,
    verdicts: Vec<Verdict>,
    out: Output,
    next_batch: usize,
    batches_since_restore: usize,
    now_ns: u64,
}

impl<'t, 'f> Traffic<'t, 'f> {
    fn new(tables: &'t Tables, pipeline: Pipeline, frames: &'f mut [u8]) -> Self {
        let pristine = frames.to_vec();
        let packets = frames
            .chunks_exact_mut(FRAME_LEN)
            .map(|buf| Packet::new(buf, IN_PORT))
            .collect();
        Traffic {
            tables,
            pipeline,
            packets,
            pristine,
            verdicts: vec![Verdict::Consumed; BATCH],
            out: Output::default(),
            next_batch: 0,
            batches_since_restore: 0,
            now_ns: START_NS,
        }
    }

    fn batches_per_pass(&self) -> usize {
        self.packets.len() / BATCH
    }

    /// Copies every frame back from the pristine copy (TTL 255 again).
    fn restore(&mut self) {
        for (packet, pristine) in self
            .packets
            .iter_mut()
            .zip(self.pristine.chunks_exact(FRAME_LEN))
        {
            packet.buf.copy_from_slice(pristine);
        }
        self.batches_since_restore = 0;
    }

    /// Processes `batches` batches, continuing where the previous call stopped, and returns
    /// the time spent in the batch loop (restores excluded) and the CPU share of the run. Fails
    /// on any verdict other than `Transmit(port 1)`.
    fn run(&mut self, batches: usize) -> Result<RunFigures, String> {
        let stopwatch = Stopwatch::start();
        let mut allocations = 0;
        let restore_every = PASSES_PER_RESTORE * self.batches_per_pass();
        let expected = Verdict::Transmit(OUT_PORT);
        let mut elapsed = Duration::ZERO;
        let mut wrong = 0usize;
        let mut first_wrong = None;
        let mut done = 0;
        while done < batches {
            if self.batches_since_restore >= restore_every {
                self.restore();
            }
            let chunk = (batches - done).min(restore_every - self.batches_since_restore);
            let allocations_before = alloc::allocations();
            let start = Instant::now();
            for _ in 0..chunk {
                let first = self.next_batch * BATCH;
                let batch = &mut self.packets[first..first + BATCH];
                self.verdicts.fill(Verdict::Consumed);
                self.pipeline.process(
                    self.tables,
                    batch,
                    &mut self.verdicts,
                    &mut self.out,
                    self.now_ns,
                );
                self.now_ns += NS_PER_BATCH;
                let bad = self.verdicts.iter().filter(|v| **v != expected).count();
                if bad != 0 {
                    wrong += bad;
                    first_wrong.get_or_insert_with(|| {
                        let at = self.verdicts.iter().position(|v| *v != expected);
                        (first + at.unwrap_or(0), at.map(|i| self.verdicts[i]))
                    });
                }
                self.next_batch += 1;
                if self.next_batch == self.batches_per_pass() {
                    self.next_batch = 0;
                }
            }
            elapsed += start.elapsed();
            allocations += alloc::allocations() - allocations_before;
            self.batches_since_restore += chunk;
            done += chunk;
        }
        if let Some((frame, verdict)) = first_wrong {
            return Err(format!(
                "{wrong} of {} packets did not get Transmit({}); first: frame {frame} got {verdict:?}",
                batches * BATCH,
                OUT_PORT.0
            ));
        }
        if !self.out.emitted.is_empty() || !self.out.events.is_empty() {
            return Err(format!(
                "the pipeline emitted {} frames and {} events; expected none",
                self.out.emitted.len(),
                self.out.events.len()
            ));
        }
        Ok(RunFigures {
            elapsed,
            reading: stopwatch.read(),
            allocations,
        })
    }
}

/// What one call of [`Traffic::run`] measured.
#[derive(Clone, Copy, Debug)]
struct RunFigures {
    /// Time in the batch loop (restores excluded).
    elapsed: Duration,
    /// CPU share and machine load of the whole call.
    reading: Reading,
    /// Heap allocations inside the batch loop.
    allocations: u64,
}

/// Checks the counters' story of `packets` packets between `before` and `after`.
fn check_counters(
    before: &Counters,
    after: &Counters,
    packets: u64,
    expect: Expect,
) -> Result<(), String> {
    let tx = |c: &Counters| c.ports.get(OUT_PORT.0 as usize).map_or(0, |p| p.tx_packets);
    let transmitted = tx(after) - tx(before);
    let drops = after.total_drops() - before.total_drops();
    let emitted = after.emitted - before.emitted;
    let hits = after.flow.hits - before.flow.hits;
    let misses = after.flow.misses - before.flow.misses;
    if transmitted != packets || drops != 0 || emitted != 0 {
        return Err(format!(
            "counters: {transmitted} transmitted on port {}, {drops} dropped, {emitted} emitted \
             for {packets} packets",
            OUT_PORT.0
        ));
    }
    let (wanted, what) = match expect {
        Expect::Hits => (hits, "flow-cache hits"),
        Expect::Misses => (misses, "flow-cache misses"),
    };
    if wanted != packets {
        return Err(format!(
            "{wanted} {what} for {packets} packets (hits {hits}, misses {misses}, stale {})",
            after.flow.stale - before.flow.stale
        ));
    }
    Ok(())
}

/// Stage figures from summed stage statistics, and the number of clock reads they took.
pub(super) fn stage_figures(stages: &[StageStats]) -> (Vec<StageFigure>, u64) {
    let mut figures = Vec::new();
    let mut reads = 0;
    for &stage in Stage::ALL {
        let Some(stats) = stages.get(stage as usize) else {
            continue;
        };
        if stats.packets == 0 {
            continue;
        }
        // The pipeline reads the clock once per batch and once at the end of each stage that
        // ran (one stage's end is the next one's start); every batch runs ethernet-input.
        reads += stats.calls;
        if stage == Stage::EthernetInput {
            reads += stats.calls;
        }
        figures.push(StageFigure {
            stage: stage.name(),
            ns_per_packet: stats.ns_per_packet(),
            packets_per_call: stats.packets_per_call(),
        });
    }
    (figures, reads)
}

/// Runs warm-up and the timed runs of a prepared [`Traffic`] and fills the result.
fn measure(
    traffic: &mut Traffic<'_, '_>,
    settings: &Settings,
    expect: Expect,
    clock_ns: f64,
    result: &mut ScenarioResult,
) -> Result<(), String> {
    let pass = traffic.batches_per_pass();
    // Warm-up: one pass installs every flow (all misses for a fresh cache), a second one is
    // the steady state; both are checked like the timed runs.
    traffic.run(pass)?;
    traffic.restore();
    let before = traffic.pipeline.counters();
    traffic.run(pass)?;
    let after = traffic.pipeline.counters();
    check_counters(&before, &after, (pass * BATCH) as u64, expect)
        .map_err(|e| format!("warm-up pass: {e}"))?;
    traffic.restore();

    let batches = (settings.packets as usize / BATCH).max(1);
    let packets = (batches * BATCH) as u64;
    let mut attempts = 0u64;
    let mut allocs = 0;
    // Counter snapshots around every run: stage figures come from the kept runs only.
    let mut snapshots = Vec::with_capacity(3 * settings.runs + 1);
    snapshots.push(traffic.pipeline.counters());
    let runs = RunSet::collect(settings, || {
        attempts += 1;
        let run = traffic.run(batches)?;
        allocs += run.allocations;
        snapshots.push(traffic.pipeline.counters());
        Ok((run.elapsed.as_nanos() as f64 / packets as f64, run.reading))
    })?;
    let (first, last) = (&snapshots[0], &snapshots[snapshots.len() - 1]);
    check_counters(first, last, packets * attempts, expect)?;
    let mut stages: Vec<StageStats> = vec![StageStats::default(); Stage::COUNT];
    for &call in &runs.kept_calls {
        let (before, after) = (&snapshots[call], &snapshots[call + 1]);
        for (i, sum) in stages.iter_mut().enumerate() {
            let (b, a) = (&before.stages[i], &after.stages[i]);
            sum.calls += a.calls - b.calls;
            sum.packets += a.packets - b.packets;
            sum.nanos += a.nanos - b.nanos;
        }
    }
    let (figures, reads) = stage_figures(&stages);
    let kept_packets = packets * runs.kept_calls.len() as u64;
    result.stages = figures;
    result.stats_overhead_ns_per_packet = Some(reads as f64 * clock_ns / kept_packets as f64);
    result.allocations_in_timed_loop = Some(allocs);
    result.packets_per_run = Some(packets);
    result.set_runs(runs);
    Ok(())
}

/// `slow-path`: every packet misses the flow cache. The cache has a single 4-way bucket
/// (capacity 4) and 65,536 distinct flows cycle through it, so each lookup misses and each
/// packet runs route lookup, next-hop and neighbor lookup, rewrite and a flow install (which
/// evicts).
pub fn slow_path(settings: &Settings, clock_ns: f64) -> Result<ScenarioResult, String> {
    let mut rng = Rng::new(0x510e_7a7b);
    let (tables, prefixes) = topology(&mut rng)?;
    let flows: Vec<Flow> = (0..SLOW_PATH_FLOWS)
        .map(|i| Flow::new(i, &prefixes, &mut rng))
        .collect();
    let mut buf = frames(&flows, SLOW_PATH_FLOWS);
    let config = PipelineConfig {
        flow_capacity: WAYS,
        ..PipelineConfig::default()
    };
    let pipeline = Pipeline::new(config);
    let mut result = ScenarioResult {
        scenario: "slow-path",
        description: format!(
            "Pipeline::process, batches of {BATCH} x {FRAME_LEN} B UDP frames, every packet a \
             flow-cache miss ({SLOW_PATH_FLOWS} flows cycling through a 4-slot cache): \
             route lookup ({ROUTES} routes) + neighbor + rewrite + flow install"
        ),
        routes: Some(ROUTES),
        flows: Some(SLOW_PATH_FLOWS),
        table_bytes: tables.memory_bytes(),
        flow_cache_bytes: Some(pipeline.flow_cache().memory_bytes()),
        flow_cache_slots: Some(pipeline.flow_cache().capacity()),
        ..ScenarioResult::default()
    };
    let mut traffic = Traffic::new(&tables, pipeline, &mut buf);
    measure(
        &mut traffic,
        settings,
        Expect::Misses,
        clock_ns,
        &mut result,
    )?;
    Ok(result)
}

/// `flow-hit-N`: `n` distinct flows, all in the flow cache. The cache has `2n` slots rounded
/// up to a power of two; flows are drawn so that none lands in a full 4-way bucket (the
/// scenario measures hits, not the eviction policy; the counters prove every timed packet
/// hit). Frames: one per flow (at least 64), in flow order, contiguous.
pub fn flow_hit(
    name: &'static str,
    n: usize,
    settings: &Settings,
    clock_ns: f64,
) -> Result<ScenarioResult, String> {
    flow_hit_with(name, n, &[], settings, clock_ns)
}

/// `acl-established`: `flow-hit-10k` with rule sets of 10,003 rules attached to both ports
/// (the traffic allowed by a UDP rule in front of a NetworkPolicy-like set): established
/// flows are flow-cache hits, so this should cost what `flow-hit-10k` costs.
pub fn acl_established(settings: &Settings, clock_ns: f64) -> Result<ScenarioResult, String> {
    use pipelines::acl::{AclAction, AclRule};
    use pipelines::tables::AclDirection;
    let mut rules = vec![AclRule {
        priority: 0,
        src: None,
        dst: None,
        protocol: Some(17),
        src_ports: None,
        dst_ports: None,
        icmp_type: None,
        icmp_code: None,
        action: AclAction::Allow,
    }];
    rules.extend(super::acl::policy(10_000));
    let ops = [
        TableOp::SetAcl {
            port: IN_PORT,
            direction: AclDirection::In,
            rules: rules.clone(),
        },
        TableOp::SetAcl {
            port: OUT_PORT,
            direction: AclDirection::Out,
            rules,
        },
    ];
    flow_hit_with("acl-established", 10_000, &ops, settings, clock_ns)
}

fn flow_hit_with(
    name: &'static str,
    n: usize,
    extra: &[TableOp],
    settings: &Settings,
    clock_ns: f64,
) -> Result<ScenarioResult, String> {
    let mut rng = Rng::new(0xf10e_0000 ^ n as u64);
    let (mut tables, prefixes) = topology(&mut rng)?;
    tables
        .apply_batch(extra)
        .map_err(|e| format!("{name}: {e}"))?;
    let config = PipelineConfig {
        flow_capacity: (2 * n).next_power_of_two(),
        ..PipelineConfig::default()
    };
    let seed = config.hash_seed;
    let pipeline = Pipeline::new(config);
    let capacity = pipeline.flow_cache().capacity();
    let bucket_mask = (capacity / WAYS - 1) as u64;
    let mut occupancy = vec![0u8; capacity / WAYS];
    let mut flows = Vec::with_capacity(n);
    let mut index = 0;
    let mut rejected = 0usize;
    while flows.len() < n {
        let flow = Flow::new(index, &prefixes, &mut rng);
        index += 1;
        let bucket = (flow.key().hash(seed) & bucket_mask) as usize;
        if usize::from(occupancy[bucket]) < WAYS {
            occupancy[bucket] += 1;
            flows.push(flow);
        } else {
            rejected += 1;
        }
    }
    let frame_count = n.div_ceil(BATCH) * BATCH;
    let mut buf = frames(&flows, frame_count);
    let mut result = ScenarioResult {
        scenario: name,
        description: format!(
            "Pipeline::process, batches of {BATCH} x {FRAME_LEN} B UDP frames, every packet a \
             flow-cache hit; {n} flows, {frame_count} frames in order; {rejected} candidate \
             flows rejected for full buckets"
        ),
        routes: Some(ROUTES),
        flows: Some(n),
        table_bytes: tables.memory_bytes(),
        flow_cache_bytes: Some(pipeline.flow_cache().memory_bytes()),
        flow_cache_slots: Some(capacity),
        ..ScenarioResult::default()
    };
    let mut traffic = Traffic::new(&tables, pipeline, &mut buf);
    measure(&mut traffic, settings, Expect::Hits, clock_ns, &mut result)?;
    let ns = result.ns_per_packet.unwrap_or(f64::MAX);
    result
        .targets
        .push(TargetCheck::at_most("ns_per_packet", 40.0, ns));
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_64_bytes_and_parse() {
        let flow = Flow {
            src: Ipv4Addr::new(10, 0, 0, 2),
            dst: Ipv4Addr::new(192, 0, 2, 1),
            src_port: 1024,
            dst_port: 53,
        };
        let frame = flow.frame();
        let parsed = etherparse::SlicedPacket::from_ethernet(&frame).unwrap();
        assert!(parsed.net.is_some());
        assert_eq!(frame[14 + 8], 255);
    }

    #[test]
    fn small_traffic_is_all_transmitted_and_rewrite_is_identity_but_ttl() {
        let mut rng = Rng::new(1);
        let (tables, prefixes) = topology(&mut rng).unwrap();
        let flows: Vec<Flow> = (0..BATCH)
            .map(|i| Flow::new(i, &prefixes, &mut rng))
            .collect();
        let mut buf = frames(&flows, BATCH);
        let original = buf.clone();
        let pipeline = Pipeline::new(PipelineConfig::default());
        let mut traffic = Traffic::new(&tables, pipeline, &mut buf);
        traffic.run(1).unwrap();
        traffic.run(1).unwrap();
        let hits = traffic.pipeline.counters().flow.hits;
        assert_eq!(hits, BATCH as u64);
        drop(traffic);
        for (after, before) in buf.chunks(FRAME_LEN).zip(original.chunks(FRAME_LEN)) {
            assert_eq!(after[..22], before[..22]);
            assert_eq!(after[22], 253);
            assert_eq!(after[26..], before[26..]);
        }
    }
}
