//! `vxlan-encap` and `vxlan-decap`: the flow-cache hit path of overlay traffic, in memory.
//!
//! # Topology
//! ```text
//! pods 10.244.1.0/24 ── port 0 "pod" (VRF 1, 10.244.1.1/24)
//!                       port 2 "vxlan100" (tunnel, VNI 100, VRF 1, local 192.168.100.1)
//!                       port 1 "uplink" (VRF 0, 192.168.100.1/24) ── peer VTEP 192.168.100.2
//! VRF 1: 10.244.0.0/16 vxlan 100 remote 192.168.100.2 (the connected /24 is more specific)
//! ```
//! - `vxlan-encap`: 64-byte UDP frames from pods to 10.244.2.0/24, 1024 flows, every packet a
//!   flow-cache hit that is rewritten and gets 50 bytes of outer headers (114 bytes leave).
//! - `vxlan-decap`: 114-byte VXLAN frames from the peer VTEP carrying 64-byte frames to the
//!   pods, 1024 inner flows: outer checks and strip (vxlan-input), then a flow-cache hit. The
//!   outer UDP checksum is zero (RFC 7348's recommendation).
//! - `vxlan-decap-csum`: the same with the outer UDP checksum computed, as a Linux peer sends
//!   by default: decap verifies it (one pass over the datagram).
//!
//! Frames change size and offset, so unlike `flow-hit-*` each batch is restored from a
//! pristine copy before it is processed; the restore is outside the timed region (each
//! `process` call is timed on its own, two clock reads per batch of 64, included).
//!
//! # Honesty checks
//! Every verdict must be `Transmit` on the expected port; after the runs the counters must
//! show every packet transmitted, no drop, no emitted frame, only flow-cache hits and, for
//! decap, every packet through vxlan-input. The first frame of the warm-up is checked byte by
//! byte where it matters (outer addresses, UDP port, VNI; inner TTL and MACs).

use super::report::{RunSet, ScenarioResult};
use super::Settings;
use crate::alloc;
use crate::os::Stopwatch;
use etherparse::PacketBuilder;
use pipelines::counters::StageStats;
use pipelines::tables::{DfPolicy, InterfaceAddress, RouteTarget, VxlanParams};
use pipelines::wire::EthernetAddress;
use pipelines::{
    Counters, IpPrefix, Output, Packet, Pipeline, PipelineConfig, PortId, Stage, TableOp, Tables,
    Verdict, VrfId,
};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// Packets per `process` call.
const BATCH: usize = 64;
/// Distinct flows.
const FLOWS: usize = 1024;
/// Inner frame length: Ethernet 14 + IPv4 20 + UDP 8 + 22 bytes of payload.
const INNER_LEN: usize = 64;
/// Outer headers.
const OUTER_LEN: usize = 50;
/// Headroom before each frame, as in a UMEM frame (XDP_PACKET_HEADROOM).
const HEADROOM: usize = 256;
/// Bytes per frame buffer.
const SLOT: usize = 512;
/// Synthetic clock (see `traffic`).
const START_NS: u64 = 1_000_000_000;
const NS_PER_BATCH: u64 = 10_000;

const POD_PORT: PortId = PortId(0);
const UPLINK: PortId = PortId(1);
const TUNNEL: PortId = PortId(2);
const POD_ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 1];
const UPLINK_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 2];
const TUNNEL_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 3];
const POD_MAC: [u8; 6] = [0x02, 0, 0, 0, 2, 1];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 3, 1];
const PEER_TUNNEL_MAC: [u8; 6] = [0x02, 0, 0, 0, 3, 2];
const LOCAL_VTEP: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 1);
const PEER_VTEP: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 2);
const VNI: u32 = 100;
/// Local pods: 10.244.1.2 up to 10.244.1.201 (static neighbors).
const PODS: usize = 200;

fn pod(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 1, 2 + (index % PODS) as u8)
}

fn remote_pod(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 2, 2 + (index % 250) as u8)
}

fn topology() -> Result<Tables, String> {
    let address = |a: Ipv4Addr, len| InterfaceAddress {
        addr: IpAddr::V4(a),
        prefix_len: len,
    };
    let mut ops = vec![
        TableOp::AddPort {
            id: POD_PORT,
            name: "pod".into(),
            mac: EthernetAddress(POD_ROUTER_MAC),
            mtu: 1500,
            vrf: VrfId(1),
        },
        TableOp::AddPort {
            id: UPLINK,
            name: "uplink".into(),
            mac: EthernetAddress(UPLINK_MAC),
            mtu: 1500,
            vrf: VrfId(0),
        },
        TableOp::AddAddress {
            port: POD_PORT,
            address: address(Ipv4Addr::new(10, 244, 1, 1), 24),
        },
        TableOp::AddAddress {
            port: UPLINK,
            address: address(LOCAL_VTEP, 24),
        },
        TableOp::AddNeighbor {
            port: UPLINK,
            ip: IpAddr::V4(PEER_VTEP),
            mac: EthernetAddress(PEER_MAC),
        },
        TableOp::AddVxlan {
            id: TUNNEL,
            name: "vxlan100".into(),
            mac: EthernetAddress(TUNNEL_MAC),
            mtu: None,
            vrf: VrfId(1),
            params: VxlanParams {
                vni: VNI,
                local: LOCAL_VTEP,
                uplink: UPLINK,
                ttl: 64,
                df: DfPolicy::Unset,
                udp_checksum: false,
            },
        },
        TableOp::AddRoute {
            vrf: VrfId(1),
            prefix: "10.244.0.0/16"
                .parse::<IpPrefix>()
                .map_err(|e| e.to_string())?,
            target: RouteTarget::Vxlan {
                tunnel: TUNNEL,
                remote: PEER_VTEP,
                mac: Some(EthernetAddress(PEER_TUNNEL_MAC)),
            },
            replace: false,
        },
    ];
    for index in 0..PODS {
        ops.push(TableOp::AddNeighbor {
            port: POD_PORT,
            ip: IpAddr::V4(pod(index)),
            mac: EthernetAddress(POD_MAC),
        });
    }
    let mut tables = Tables::new();
    tables
        .apply_batch(&ops)
        .map_err(|e| format!("building the overlay tables failed: {e}"))?;
    Ok(tables)
}

/// A 64-byte UDP frame, TTL 64, valid checksums.
fn inner_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    src_port: u16,
) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(src_port, 5201);
    let payload = [0x5a_u8; INNER_LEN - 14 - 20 - 8];
    let mut frame = Vec::with_capacity(INNER_LEN);
    builder
        .write(&mut frame, &payload)
        .expect("writing into a Vec cannot fail");
    frame
}

/// The frame of flow `index` as the scenario receives it.
fn received_frame(encap: bool, outer_checksum: bool, index: usize) -> Vec<u8> {
    let src_port = 1024 + (index / PODS) as u16;
    if encap {
        return inner_frame(
            POD_MAC,
            POD_ROUTER_MAC,
            pod(index),
            remote_pod(index),
            src_port,
        );
    }
    let inner = inner_frame(
        PEER_TUNNEL_MAC,
        TUNNEL_MAC,
        remote_pod(index),
        pod(index),
        src_port,
    );
    let mut vxlan = vec![0x08, 0, 0, 0];
    vxlan.extend_from_slice(&(VNI << 8).to_be_bytes());
    vxlan.extend_from_slice(&inner);
    let builder = PacketBuilder::ethernet2(PEER_MAC, UPLINK_MAC)
        .ipv4(PEER_VTEP.octets(), LOCAL_VTEP.octets(), 64)
        .udp(49152 + index as u16 % 16384, 4789);
    let mut frame = Vec::with_capacity(INNER_LEN + OUTER_LEN);
    builder
        .write(&mut frame, &vxlan)
        .expect("writing into a Vec cannot fail");
    // etherparse computed the outer UDP checksum; zero means none (RFC 7348's
    // recommendation, a Linux peer created with `noudpcsum`).
    if !outer_checksum {
        frame[40..42].copy_from_slice(&[0, 0]);
    }
    frame
}

/// Frames of one scenario in their buffers, with the per-batch restore.
struct Overlay<'f> {
    packets: Vec<Packet<'f>>,
    pristine: Vec<Vec<u8>>,
    in_port: PortId,
}

impl Overlay<'_> {
    fn restore(&mut self, first: usize) {
        for (packet, pristine) in self.packets[first..first + BATCH]
            .iter_mut()
            .zip(&self.pristine[first..first + BATCH])
        {
            packet.buf[HEADROOM..HEADROOM + pristine.len()].copy_from_slice(pristine);
            packet.offset = HEADROOM;
            packet.len = pristine.len();
            packet.in_port = self.in_port;
        }
    }
}

/// Checks the first transmitted frame of a scenario.
fn check_frame(encap: bool, frame: &[u8]) -> Result<(), String> {
    let fail = |what: &str| Err(format!("first frame: {what}: {frame:02x?}"));
    if encap {
        if frame.len() != INNER_LEN + OUTER_LEN
            || frame[0..6] != PEER_MAC
            || frame[6..12] != UPLINK_MAC
            || frame[26..30] != LOCAL_VTEP.octets()
            || frame[30..34] != PEER_VTEP.octets()
            || frame[36..38] != 4789u16.to_be_bytes()
            || frame[42] != 0x08
            || frame[46..49] != VNI.to_be_bytes()[1..4]
        {
            return fail("outer headers wrong");
        }
        if frame[50..56] != PEER_TUNNEL_MAC || frame[56..62] != TUNNEL_MAC || frame[50 + 22] != 63 {
            return fail("inner rewrite wrong");
        }
    } else if frame.len() != INNER_LEN
        || frame[0..6] != POD_MAC
        || frame[6..12] != POD_ROUTER_MAC
        || frame[22] != 63
    {
        return fail("decapsulated frame wrong");
    }
    Ok(())
}

/// Runs `vxlan-encap` (`encap`) or `vxlan-decap` (with a computed outer checksum if
/// `outer_checksum`).
pub fn run(
    name: &'static str,
    encap: bool,
    outer_checksum: bool,
    settings: &Settings,
    clock_ns: f64,
) -> Result<ScenarioResult, String> {
    let tables = topology()?;
    let config = PipelineConfig {
        // Sixteen slots per flow: no 4-way bucket overflows, every packet after the first
        // pass hits (the scenario measures encapsulation, not the eviction policy).
        flow_capacity: 16 * FLOWS,
        ..PipelineConfig::default()
    };
    let mut pipeline = Pipeline::new(config);
    let frames: Vec<Vec<u8>> = (0..FLOWS)
        .map(|i| received_frame(encap, outer_checksum, i))
        .collect();
    let mut buffers = vec![0u8; FLOWS * SLOT];
    let (in_port, out_port) = if encap {
        (POD_PORT, UPLINK)
    } else {
        (UPLINK, POD_PORT)
    };
    let mut overlay = Overlay {
        packets: buffers
            .chunks_exact_mut(SLOT)
            .map(|buf| Packet::new(buf, in_port))
            .collect(),
        pristine: frames,
        in_port,
    };
    let mut out = Output::default();
    let mut verdicts = vec![Verdict::Consumed; BATCH];
    let expected = Verdict::Transmit(out_port);
    let mut now_ns = START_NS;
    let batches_per_pass = FLOWS / BATCH;

    // One pass of batches; returns the time inside `process`.
    let mut pass_count = |overlay: &mut Overlay<'_>,
                          pipeline: &mut Pipeline,
                          batches: usize,
                          check_first: bool|
     -> Result<(Duration, u64), String> {
        let mut elapsed = Duration::ZERO;
        let mut allocations = 0;
        for b in 0..batches {
            let first = (b % batches_per_pass) * BATCH;
            overlay.restore(first);
            verdicts.fill(Verdict::Consumed);
            let allocations_before = alloc::allocations();
            let start = Instant::now();
            pipeline.process(
                &tables,
                &mut overlay.packets[first..first + BATCH],
                &mut verdicts,
                &mut out,
                now_ns,
            );
            elapsed += start.elapsed();
            allocations += alloc::allocations() - allocations_before;
            now_ns += NS_PER_BATCH;
            if let Some(at) = verdicts.iter().position(|v| *v != expected) {
                return Err(format!(
                    "frame {} got {:?}, expected {expected:?}",
                    first + at,
                    verdicts[at]
                ));
            }
            if !out.emitted.is_empty() {
                return Err(format!(
                    "{} frames emitted, expected none",
                    out.emitted.len()
                ));
            }
            if check_first && b == 0 {
                check_frame(encap, overlay.packets[first].frame())?;
            }
        }
        Ok((elapsed, allocations))
    };

    // Warm-up: the first pass installs the flows, the second is all hits.
    pass_count(&mut overlay, &mut pipeline, batches_per_pass, true)?;
    let warm = pipeline.counters();
    pass_count(&mut overlay, &mut pipeline, batches_per_pass, true)?;
    check_counters(&warm, &pipeline.counters(), (FLOWS) as u64, out_port, encap)
        .map_err(|e| format!("warm-up pass: {e}"))?;

    let batches = (settings.packets as usize / BATCH).max(1);
    let packets = (batches * BATCH) as u64;
    let mut snapshots = vec![pipeline.counters()];
    let mut allocs = 0;
    let mut attempts = 0u64;
    let runs = RunSet::collect(settings, || {
        attempts += 1;
        let stopwatch = Stopwatch::start();
        let (elapsed, allocations) = pass_count(&mut overlay, &mut pipeline, batches, false)?;
        allocs += allocations;
        snapshots.push(pipeline.counters());
        Ok((elapsed.as_nanos() as f64 / packets as f64, stopwatch.read()))
    })?;
    let (first, last) = (&snapshots[0], &snapshots[snapshots.len() - 1]);
    check_counters(first, last, packets * attempts, out_port, encap)?;
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
    let (figures, reads) = super::traffic::stage_figures(&stages);
    let kept_packets = packets * runs.kept_calls.len() as u64;
    let (what, sizes) = if encap {
        ("encapsulated", "64 B in, 114 B out")
    } else {
        ("decapsulated", "114 B in, 64 B out")
    };
    let mut result = ScenarioResult {
        scenario: name,
        description: format!(
            "Pipeline::process, batches of {BATCH}, {FLOWS} flows, every packet {what} on a \
             flow-cache hit ({sizes}); per-batch restore untimed"
        ),
        flows: Some(FLOWS),
        table_bytes: tables.memory_bytes(),
        flow_cache_bytes: Some(pipeline.flow_cache().memory_bytes()),
        flow_cache_slots: Some(pipeline.flow_cache().capacity()),
        ..ScenarioResult::default()
    };
    result.stages = figures;
    // The pipeline's own clock reads plus the two per batch of this harness.
    result.stats_overhead_ns_per_packet =
        Some((reads + 2 * (kept_packets / BATCH as u64)) as f64 * clock_ns / kept_packets as f64);
    result.allocations_in_timed_loop = Some(allocs);
    result.packets_per_run = Some(packets);
    result.set_runs(runs);
    Ok(result)
}

fn check_counters(
    before: &Counters,
    after: &Counters,
    packets: u64,
    out_port: PortId,
    encap: bool,
) -> Result<(), String> {
    let tx = |c: &Counters| c.ports.get(out_port.0 as usize).map_or(0, |p| p.tx_packets);
    let transmitted = tx(after) - tx(before);
    let drops = after.total_drops() - before.total_drops();
    let hits = after.flow.hits - before.flow.hits;
    let decapsulated =
        after.stage(Stage::VxlanInput).packets - before.stage(Stage::VxlanInput).packets;
    let encapsulated = {
        let t = |c: &Counters| c.ports.get(TUNNEL.0 as usize).map_or(0, |p| p.tx_packets);
        t(after) - t(before)
    };
    if transmitted != packets || drops != 0 || hits != packets {
        return Err(format!(
            "counters: {transmitted} transmitted, {drops} dropped, {hits} flow-cache hits for \
             {packets} packets"
        ));
    }
    if encap && encapsulated != packets {
        return Err(format!("{encapsulated} encapsulated for {packets} packets"));
    }
    if !encap && decapsulated != packets {
        return Err(format!(
            "{decapsulated} through vxlan-input for {packets} packets"
        ));
    }
    Ok(())
}
