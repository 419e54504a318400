//! `nat-hit`, `nat-setup`, `service-select`: NAT through the whole pipeline
//! (`Pipeline::process` on batches of 64 frames), in memory, one core.
//!
//! # Topology
//! ```text
//! pods 10.244.0.0/16 ── port 0 "pod" (VRF 0, 10.244.0.1/16)
//!                       port 1 "uplink" (VRF 0, 192.168.100.1/24) ── gateway 192.168.100.254
//! VRF 0: 0.0.0.0/0 via 192.168.100.254 (static neighbor on the uplink)
//! nat-hit (its NAT half), nat-setup: SNAT 10.244.0.0/16 out of "uplink", to the uplink's
//!   address (masquerade), ports 1024-65535
//! service-select: Service 10.96.0.10:80/TCP, 100 backends 10.244.1.2-101:8080 (weight 1,
//!   static neighbors on "pod", each with its own MAC), no SNAT rule
//! ```
//! Every pipeline has a connection table of 65,536 connections (the default) with
//! kube-proxy's timeouts. The synthetic clock advances 10 us per batch (as in `flow-hit-*`).
//!
//! - `nat-hit`: 1024 UDP flows of 64-byte frames from 200 pods (10.244.1.2-201, source ports
//!   40000 and up) to 128 external servers (203.0.113.1-128:5201), every timed packet a
//!   flow-cache hit of a NAT flow: the cached translation rewrites the source address and port
//!   (incremental IPv4 header and UDP checksum updates), the connection is updated (state,
//!   timer, counters), then the usual hit rewrite (TTL, MACs). The flow cache has 16 slots per
//!   flow (no bucket overflows, as in the overlay scenarios). The same frames, with the same
//!   harness and restore, also go through a second pipeline whose tables have no SNAT rule:
//!   plain routed flow-cache hits (`plain-hit`). The runs of the two alternate (NAT, plain,
//!   NAT, ...), so a drift of the machine (clock, neighbours) affects both alike. Reported:
//!   `ns_per_packet` = the NAT hit, `plain-hit` ns, `ratio` = NAT / plain, and the target of
//!   the issue: the NAT hit path within 1.5x of the plain one.
//! - `nat-setup`: every packet the first packet of a new connection: a TCP SYN of 64 bytes
//!   (20-byte IPv4 header, 28-byte TCP header with MSS and SACK-permitted options, 2 bytes of
//!   Ethernet padding) from a pod to one of 64 external servers (203.0.113.1-64:443).
//!   flow-lookup misses; ip-lookup looks the connection up (miss), routes, finds the SNAT
//!   rule, allocates a port, creates the connection, translates, installs the flow (evicting
//!   the oldest of its 4-way bucket in a cache of 65,536 slots). The table is full after the
//!   warm-up (twice its capacity of connections) and nothing expires (a connection is evicted
//!   65,536 connections after its creation, about 10 ms of synthetic time, long before
//!   SYN_SENT's 120 s): every create first evicts an embryonic connection (the state under a
//!   SYN load; the eviction looks at 32 candidates). With 64 destinations about 1,000 live
//!   connections share each destination's 64,512 ports: allocation never fails.
//! - `service-select`: every packet a new TCP connection (the same SYN) from a pod to the
//!   Service's VIP: connection lookup (miss), Service lookup, Maglev (16,381 entries), route
//!   to the backend, connection create, destination translation (address and port), flow
//!   install; the same full-table steady state as `nat-setup`.
//!
//! # What is timed, what is restored
//! The pipeline rewrites frames in place (translation, TTL, MACs, trimmed padding), so
//! before each batch the harness copies its 64 frames back from pristine copies (length,
//! offset and ingress port reset too); for `nat-setup` and `service-select` it then writes a
//! never-seen (source address, source port) into each frame (10.244.2.2-10.244.255.253 x
//! 1024-65535: 4 x 10^9 pairs before one repeats) and recomputes its IPv4 and TCP checksums.
//! All of that is outside the timed region: each `process` call is timed on its own (two clock
//! reads per batch of 64, included, as in the overlay scenarios), so a batch's frames are in
//! the core's caches when it runs.
//!
//! # Honesty checks
//! Every verdict must be `Transmit` on the expected port and nothing may be emitted; the
//! counters must show every packet transmitted there, no drop, and one flow-cache hit
//! (`nat-hit`, both pipelines) or miss (the others) per packet. Frames are checked after
//! processing, with checksums verified independently (etherparse recomputes them).
//! - `nat-hit`: after the warm-up and after the runs, every frame of the last pass: source =
//!   192.168.100.1 and source port = its connection's translated port, in the rule's range
//!   (plain: source unchanged); destination unchanged, TTL 63, MACs, IPv4 header and UDP
//!   checksums valid. The NAT pipeline must keep exactly 1024 connections (none created
//!   after the warm-up) whose original-direction packet counters grew by exactly the packets
//!   sent; the plain pipeline must have none.
//! - `nat-setup`: every frame after its batch: source = the uplink's address, port in the
//!   rule's range, destination unchanged; the first frame of each batch: checksums, SYN. The
//!   table's counters: one connection created and one embryonic connection evicted per
//!   packet, none refused or expired.
//! - `service-select`: every frame after its batch: destination = a backend with that
//!   backend's MAC, destination port 8080, source the never-seen one written; the first frame
//!   of each batch: checksums. One connection created (and one evicted) per packet; every
//!   backend chosen at least once during the timed runs (the spread is reported as the least
//!   and most chosen backend's share relative to a fair one).

use super::report::{Figure, RunSet, ScenarioResult, TargetCheck};
use super::traffic::stage_figures;
use super::Settings;
use crate::alloc;
use crate::os::{Reading, Stopwatch};
use etherparse::{IpNumber, Ipv4Header, PacketBuilder, TcpHeader, UdpHeader};
use pipelines::conntrack::ConntrackCounters;
use pipelines::counters::StageStats;
use pipelines::tables::{
    Backend, Frontend, InterfaceAddress, L4Protocol, RouteTarget, Service, ServiceKey, SnatRule,
};
use pipelines::wire::{checksum, EthernetAddress, IpProtocol};
use pipelines::{
    Counters, IpPrefix, Output, Packet, Pipeline, PipelineConfig, PortId, Stage, TableOp, Tables,
    Verdict, VrfId,
};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// Packets per `process` call.
const BATCH: usize = 64;
/// Bytes per frame buffer (frames at its start).
const SLOT: usize = 128;
/// Synthetic clock (see `traffic`).
const START_NS: u64 = 1_000_000_000;
const NS_PER_BATCH: u64 = 10_000;

const POD_PORT: PortId = PortId(0);
const UPLINK: PortId = PortId(1);
const POD_ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 1];
const UPLINK_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 2];
const POD_MAC: [u8; 6] = [0x02, 0, 0, 0, 2, 0];
const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 3, 1];
const POD_ROUTER: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
const UPLINK_ADDR: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 1);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 254);
/// Source ports of the SNAT rule.
const SNAT_PORTS: (u16, u16) = (1024, 65535);

/// Flows of `nat-hit`, from this many pods.
const HIT_FLOWS: usize = 1024;
const HIT_PODS: usize = 200;
const HIT_SERVERS: usize = 128;
const HIT_PORT: u16 = 5201;
/// SYN frames of the new-connection scenarios (16 batches), and the servers of `nat-setup`.
const SYN_FRAMES: usize = 1024;
const SETUP_SERVERS: usize = 64;
const SETUP_PORT: u16 = 443;
/// Connection table capacity (the default).
const CONNTRACK_CAPACITY: usize = 65_536;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const VIP_PORT: u16 = 80;
const BACKEND_PORT: u16 = 8080;
const BACKENDS: usize = 100;

/// Offsets in an Ethernet + IPv4 (no options) frame.
const TTL_AT: usize = 22;
const SRC_AT: usize = 26;
const DST_AT: usize = 30;
const SPORT_AT: usize = 34;
const DPORT_AT: usize = 36;

fn hit_pod(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 1, 2 + (index % HIT_PODS) as u8)
}

fn server(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(203, 0, 113, 1 + (index % 128) as u8)
}

fn backend(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 1, 2 + index as u8)
}

fn backend_mac(index: usize) -> [u8; 6] {
    [0x02, 0, 0, 0, 4, index as u8]
}

/// Client addresses of the new-connection scenarios: 10.244.2.2 up to 10.244.255.253.
const CLIENT_ADDRESSES: u64 = 254 * 252;

/// The `n`th never-seen (source address, source port): all addresses with one port, then the
/// next port (4 x 10^9 pairs before one repeats).
fn fresh_source(n: u64) -> (Ipv4Addr, u16) {
    let a = n % CLIENT_ADDRESSES;
    let port = 1024 + (n / CLIENT_ADDRESSES) % 64_512;
    (
        Ipv4Addr::new(10, 244, 2 + (a / 252) as u8, 2 + (a % 252) as u8),
        port as u16,
    )
}

/// NAT configuration of the tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Nat {
    /// None: plain routing.
    None,
    /// The SNAT rule of the pods out of the uplink.
    Masquerade,
    /// The Service and its backends.
    Service,
}

fn topology(nat: Nat) -> Result<Tables, String> {
    let address = |a: Ipv4Addr, len| InterfaceAddress {
        addr: IpAddr::V4(a),
        prefix_len: len,
    };
    let prefix = |s: &str| s.parse::<IpPrefix>().map_err(|e| e.to_string());
    let mut ops = vec![
        TableOp::AddPort {
            id: POD_PORT,
            name: "pod".into(),
            mac: EthernetAddress(POD_ROUTER_MAC),
            mtu: 1500,
            vrf: VrfId(0),
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
            address: address(POD_ROUTER, 16),
        },
        TableOp::AddAddress {
            port: UPLINK,
            address: address(UPLINK_ADDR, 24),
        },
        TableOp::AddNeighbor {
            port: UPLINK,
            ip: IpAddr::V4(GATEWAY),
            mac: EthernetAddress(GATEWAY_MAC),
        },
        TableOp::AddRoute {
            vrf: VrfId(0),
            prefix: prefix("0.0.0.0/0")?,
            target: RouteTarget::Via {
                gateway: IpAddr::V4(GATEWAY),
                port: Some(UPLINK),
            },
            replace: false,
        },
    ];
    match nat {
        Nat::None => {}
        Nat::Masquerade => ops.push(TableOp::AddSnat {
            rule: SnatRule {
                vrf: VrfId(0),
                source: prefix("10.244.0.0/16")?,
                out_port: UPLINK,
                to: None,
                ports: SNAT_PORTS,
            },
        }),
        Nat::Service => {
            for index in 0..BACKENDS {
                ops.push(TableOp::AddNeighbor {
                    port: POD_PORT,
                    ip: IpAddr::V4(backend(index)),
                    mac: EthernetAddress(backend_mac(index)),
                });
            }
            ops.push(TableOp::AddService {
                service: Service {
                    key: ServiceKey {
                        vrf: VrfId(0),
                        frontend: Frontend::Vip {
                            addr: IpAddr::V4(VIP),
                            port: VIP_PORT,
                        },
                        protocol: L4Protocol::Tcp,
                    },
                    backends: (0..BACKENDS)
                        .map(|i| Backend {
                            addr: IpAddr::V4(backend(i)),
                            port: BACKEND_PORT,
                            weight: 1,
                        })
                        .collect(),
                    affinity_secs: None,
                },
            });
        }
    }
    let mut tables = Tables::new();
    tables
        .apply_batch(&ops)
        .map_err(|e| format!("building the NAT tables failed: {e}"))?;
    Ok(tables)
}

/// Flow `index` of `nat-hit`: a 64-byte UDP frame (22 bytes of payload), TTL 64.
fn hit_frame(index: usize) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(POD_MAC, POD_ROUTER_MAC)
        .ipv4(
            hit_pod(index).octets(),
            server((index / 8) % HIT_SERVERS).octets(),
            64,
        )
        .udp(40_000 + (index / HIT_PODS) as u16, HIT_PORT);
    let mut frame = Vec::with_capacity(64);
    builder
        .write(&mut frame, &[0x5a; 22])
        .expect("writing into a Vec cannot fail");
    frame
}

/// A TCP SYN to `dst`:`dst_port` (MSS 1460, SACK permitted), padded to 64 bytes; its source
/// is written by [`set_source`] before it is sent.
fn syn_frame(dst: Ipv4Addr, dst_port: u16) -> Result<Vec<u8>, String> {
    let builder = PacketBuilder::ethernet2(POD_MAC, POD_ROUTER_MAC)
        .ipv4([10, 244, 2, 2], dst.octets(), 64)
        .tcp(1024, dst_port, 0x1234_5678, 64_240)
        .syn()
        .options_raw(&[2, 4, 0x05, 0xb4, 1, 1, 4, 2])
        .map_err(|e| e.to_string())?;
    let mut frame = Vec::with_capacity(64);
    builder
        .write(&mut frame, &[])
        .expect("writing into a Vec cannot fail");
    frame.resize(64, 0);
    Ok(frame)
}

/// Writes the source address and port of a TCP frame and recomputes its IPv4 and TCP
/// checksums (the harness's untimed restore).
fn set_source(frame: &mut [u8], addr: Ipv4Addr, port: u16) {
    frame[SRC_AT..SRC_AT + 4].copy_from_slice(&addr.octets());
    frame[SPORT_AT..SPORT_AT + 2].copy_from_slice(&port.to_be_bytes());
    frame[24..26].fill(0);
    let header = checksum::checksum(&frame[14..34]);
    frame[24..26].copy_from_slice(&header.to_be_bytes());
    let tcp_len = usize::from(u16_at(frame, 16)).saturating_sub(20);
    frame[50..52].fill(0);
    let dst = ipv4_at(frame, DST_AT);
    let pseudo = checksum::pseudo_header_v4(&addr, &dst, IpProtocol::Tcp, tcp_len as u32);
    let sum = !checksum::combine(&[pseudo, checksum::sum(&frame[34..34 + tcp_len])]);
    frame[50..52].copy_from_slice(&sum.to_be_bytes());
}

fn u16_at(frame: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([frame[at], frame[at + 1]])
}

fn ipv4_at(frame: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(frame[at], frame[at + 1], frame[at + 2], frame[at + 3])
}

/// Verifies the IPv4 header checksum and the UDP or TCP checksum of a frame with etherparse
/// (independent of the pipeline's checksum code).
fn checksums_valid(frame: &[u8]) -> Result<(), String> {
    let total = usize::from(u16_at(frame, 16));
    let ip = frame
        .get(14..14 + total)
        .ok_or("frame shorter than its IP packet")?;
    let (header, l4) = Ipv4Header::from_slice(ip).map_err(|e| e.to_string())?;
    if header.header_checksum != header.calc_header_checksum() {
        return Err("IPv4 header checksum wrong".into());
    }
    let (found, wanted) = match header.protocol {
        IpNumber::UDP => {
            let (udp, payload) = UdpHeader::from_slice(l4).map_err(|e| e.to_string())?;
            let wanted = udp
                .calc_checksum_ipv4(&header, payload)
                .map_err(|e| e.to_string())?;
            (udp.checksum, wanted)
        }
        IpNumber::TCP => {
            let (tcp, payload) = TcpHeader::from_slice(l4).map_err(|e| e.to_string())?;
            let wanted = tcp
                .calc_checksum_ipv4(&header, payload)
                .map_err(|e| e.to_string())?;
            (tcp.checksum, wanted)
        }
        other => return Err(format!("unexpected protocol {other:?}")),
    };
    if found != wanted {
        return Err(format!("L4 checksum {found:#06x}, expected {wanted:#06x}"));
    }
    Ok(())
}

/// Per-batch work of a scenario around the timed `process` call, both untimed.
trait Hooks {
    /// After the batch's frames were restored from their pristine copies.
    fn prepare(&mut self, _batch: &mut [Packet<'_>]) {}
    /// After the batch's verdicts were checked: checks (or counts) its frames.
    fn inspect(&mut self, _batch: &[Packet<'_>]) -> Result<(), String> {
        Ok(())
    }
}

/// The frames as they are (`nat-hit`).
struct Unchanged;

impl Hooks for Unchanged {}

/// Writes a never-seen source into every frame and remembers what it wrote.
struct FreshSources {
    next: u64,
    written: [(Ipv4Addr, u16); BATCH],
}

impl FreshSources {
    fn new() -> Self {
        FreshSources {
            next: 0,
            written: [(Ipv4Addr::UNSPECIFIED, 0); BATCH],
        }
    }

    fn write(&mut self, batch: &mut [Packet<'_>]) {
        for (packet, written) in batch.iter_mut().zip(self.written.iter_mut()) {
            let (addr, port) = fresh_source(self.next);
            self.next += 1;
            set_source(packet.frame_mut(), addr, port);
            *written = (addr, port);
        }
    }
}

/// `nat-setup`: fresh sources; after processing, every frame masqueraded.
struct Masqueraded {
    sources: FreshSources,
}

impl Hooks for Masqueraded {
    fn prepare(&mut self, batch: &mut [Packet<'_>]) {
        self.sources.write(batch);
    }

    fn inspect(&mut self, batch: &[Packet<'_>]) -> Result<(), String> {
        for (i, packet) in batch.iter().enumerate() {
            let frame = packet.frame();
            let port = u16_at(frame, SPORT_AT);
            if ipv4_at(frame, SRC_AT) != UPLINK_ADDR
                || !(SNAT_PORTS.0..=SNAT_PORTS.1).contains(&port)
                || ipv4_at(frame, DST_AT).octets()[..3] != [203, 0, 113]
                || u16_at(frame, DPORT_AT) != SETUP_PORT
            {
                return Err(format!("frame {i} not masqueraded: {frame:02x?}"));
            }
        }
        let first = batch[0].frame();
        checksums_valid(first).map_err(|e| format!("first frame: {e}: {first:02x?}"))?;
        if first[SPORT_AT + 13] != 0x02 {
            return Err(format!("first frame: not a SYN: {first:02x?}"));
        }
        Ok(())
    }
}

/// `service-select`: fresh sources; after processing, every frame sent to a backend, counted.
struct ToBackends {
    sources: FreshSources,
    chosen: Vec<u64>,
}

impl Hooks for ToBackends {
    fn prepare(&mut self, batch: &mut [Packet<'_>]) {
        self.sources.write(batch);
    }

    fn inspect(&mut self, batch: &[Packet<'_>]) -> Result<(), String> {
        for (i, packet) in batch.iter().enumerate() {
            let frame = packet.frame();
            let dst = ipv4_at(frame, DST_AT).octets();
            let index = usize::from(dst[3]).wrapping_sub(2);
            let to_backend = dst[..3] == [10, 244, 1]
                && index < BACKENDS
                && frame[0..6] == backend_mac(index)
                && u16_at(frame, DPORT_AT) == BACKEND_PORT;
            let source = (ipv4_at(frame, SRC_AT), u16_at(frame, SPORT_AT));
            if !to_backend || source != self.sources.written[i] {
                return Err(format!(
                    "frame {i} not sent from {:?} to a backend: {frame:02x?}",
                    self.sources.written[i]
                ));
            }
            self.chosen[index] += 1;
        }
        let first = batch[0].frame();
        checksums_valid(first).map_err(|e| format!("first frame: {e}: {first:02x?}"))
    }
}

/// One pipeline with its tables and frames, run in batches that are restored before they are
/// processed.
struct Bench<'t, 'f> {
    tables: &'t Tables,
    pipeline: Pipeline,
    packets: Vec<Packet<'f>>,
    pristine: Vec<Vec<u8>>,
    in_port: PortId,
    expected: Verdict,
    verdicts: Vec<Verdict>,
    out: Output,
    now_ns: u64,
    next_batch: usize,
}

/// What one call of [`Bench::run`] measured.
struct RunFigures {
    /// Time inside `process`.
    elapsed: Duration,
    /// CPU share and machine load of the whole call.
    reading: Reading,
    /// Heap allocations inside `process`.
    allocations: u64,
}

impl<'t, 'f> Bench<'t, 'f> {
    fn new(
        tables: &'t Tables,
        config: PipelineConfig,
        buffers: &'f mut [u8],
        pristine: Vec<Vec<u8>>,
        in_port: PortId,
        out_port: PortId,
    ) -> Self {
        Bench {
            tables,
            pipeline: Pipeline::new(config),
            packets: buffers
                .chunks_exact_mut(SLOT)
                .map(|buf| Packet::new(buf, in_port))
                .collect(),
            pristine,
            in_port,
            expected: Verdict::Transmit(out_port),
            verdicts: vec![Verdict::Consumed; BATCH],
            out: Output::default(),
            now_ns: START_NS,
            next_batch: 0,
        }
    }

    fn batches_per_pass(&self) -> usize {
        self.packets.len() / BATCH
    }

    /// Processes `batches` batches, continuing where the previous call stopped; only the
    /// `process` calls are timed. Fails on any verdict but the expected one, on any emitted
    /// frame or event, and on whatever `hooks.inspect` refuses.
    fn run(&mut self, batches: usize, hooks: &mut impl Hooks) -> Result<RunFigures, String> {
        let stopwatch = Stopwatch::start();
        let mut elapsed = Duration::ZERO;
        let mut allocations = 0;
        for _ in 0..batches {
            let first = self.next_batch * BATCH;
            let batch = &mut self.packets[first..first + BATCH];
            for (packet, pristine) in batch.iter_mut().zip(&self.pristine[first..]) {
                packet.buf[..pristine.len()].copy_from_slice(pristine);
                packet.offset = 0;
                packet.len = pristine.len();
                packet.in_port = self.in_port;
            }
            hooks.prepare(batch);
            self.verdicts.fill(Verdict::Consumed);
            let allocations_before = alloc::allocations();
            let start = Instant::now();
            self.pipeline.process(
                self.tables,
                batch,
                &mut self.verdicts,
                &mut self.out,
                self.now_ns,
            );
            elapsed += start.elapsed();
            allocations += alloc::allocations() - allocations_before;
            self.now_ns += NS_PER_BATCH;
            if let Some(at) = self.verdicts.iter().position(|v| *v != self.expected) {
                return Err(format!(
                    "frame {} got {:?}, expected {:?}",
                    first + at,
                    self.verdicts[at],
                    self.expected
                ));
            }
            if !self.out.emitted.is_empty() || !self.out.events.is_empty() {
                return Err(format!(
                    "the pipeline emitted {} frames and {} events; expected none",
                    self.out.emitted.len(),
                    self.out.events.len()
                ));
            }
            hooks
                .inspect(&self.packets[first..first + BATCH])
                .map_err(|e| format!("batch at frame {first}: {e}"))?;
            self.next_batch = (self.next_batch + 1) % self.batches_per_pass();
        }
        Ok(RunFigures {
            elapsed,
            reading: stopwatch.read(),
            allocations,
        })
    }
}

/// Counter snapshots around every timed run of one [`Bench`].
struct Timed {
    snapshots: Vec<Counters>,
    conntrack: Vec<ConntrackCounters>,
    allocations: u64,
    attempts: u64,
    batches: usize,
}

impl Timed {
    fn new(bench: &Bench<'_, '_>, settings: &Settings) -> Self {
        Timed {
            snapshots: vec![bench.pipeline.counters()],
            conntrack: vec![bench.pipeline.conntrack().counters()],
            allocations: 0,
            attempts: 0,
            batches: (settings.packets as usize / BATCH).max(1),
        }
    }

    /// Packets per run.
    fn packets(&self) -> u64 {
        (self.batches * BATCH) as u64
    }

    /// Packets of every run so far (kept or not).
    fn all_packets(&self) -> u64 {
        self.packets() * self.attempts
    }

    /// One timed run: its ns per packet and CPU share.
    fn run(
        &mut self,
        bench: &mut Bench<'_, '_>,
        hooks: &mut impl Hooks,
    ) -> Result<(f64, Reading), String> {
        self.attempts += 1;
        let run = bench.run(self.batches, hooks)?;
        self.allocations += run.allocations;
        self.snapshots.push(bench.pipeline.counters());
        self.conntrack.push(bench.pipeline.conntrack().counters());
        Ok((
            run.elapsed.as_nanos() as f64 / self.packets() as f64,
            run.reading,
        ))
    }

    fn counters(&self) -> (&Counters, &Counters) {
        (
            &self.snapshots[0],
            &self.snapshots[self.snapshots.len() - 1],
        )
    }

    fn conntrack(&self) -> (&ConntrackCounters, &ConntrackCounters) {
        (
            &self.conntrack[0],
            &self.conntrack[self.conntrack.len() - 1],
        )
    }

    /// Fills the result's run figures, stage figures (kept runs only) and stats cost.
    fn finish(&self, runs: RunSet, clock_ns: f64, result: &mut ScenarioResult) {
        let mut stages: Vec<StageStats> = vec![StageStats::default(); Stage::COUNT];
        for &call in &runs.kept_calls {
            let (before, after) = (&self.snapshots[call], &self.snapshots[call + 1]);
            for (i, sum) in stages.iter_mut().enumerate() {
                let (b, a) = (&before.stages[i], &after.stages[i]);
                sum.calls += a.calls - b.calls;
                sum.packets += a.packets - b.packets;
                sum.nanos += a.nanos - b.nanos;
            }
        }
        let (figures, reads) = stage_figures(&stages);
        let kept = self.packets() * runs.kept_calls.len() as u64;
        result.stages = figures;
        // The pipeline's own clock reads plus the two per batch of this harness.
        result.stats_overhead_ns_per_packet =
            Some((reads + 2 * (kept / BATCH as u64)) as f64 * clock_ns / kept.max(1) as f64);
        result.allocations_in_timed_loop = Some(self.allocations);
        result.packets_per_run = Some(self.packets());
        result.set_runs(runs);
    }
}

/// Runs of two measurements taken alternately (a, b, a, b, ...), each kept or repeated as
/// `RunSet::collect` does, so that a drift of the machine affects both alike.
fn collect_alternately(
    settings: &Settings,
    mut a: impl FnMut() -> Result<(f64, Reading), String>,
    mut b: impl FnMut() -> Result<(f64, Reading), String>,
) -> Result<(RunSet, RunSet), String> {
    let one = Settings {
        runs: 1,
        ..*settings
    };
    let (mut set_a, mut set_b) = (RunSet::default(), RunSet::default());
    let (mut calls_a, mut calls_b) = (0, 0);
    for _ in 0..settings.runs {
        let offset = calls_a;
        let part = RunSet::collect(&one, || {
            calls_a += 1;
            a()
        })?;
        append(&mut set_a, part, offset);
        let offset = calls_b;
        let part = RunSet::collect(&one, || {
            calls_b += 1;
            b()
        })?;
        append(&mut set_b, part, offset);
    }
    Ok((set_a, set_b))
}

/// Appends the runs of `part`, whose calls started at call `offset`, to `total`.
fn append(total: &mut RunSet, part: RunSet, offset: usize) {
    total.cpu_share = if total.values.is_empty() {
        part.cpu_share
    } else {
        total.cpu_share.min(part.cpu_share)
    };
    total.others_busy = match (total.others_busy, part.others_busy) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    };
    total.discarded += part.discarded;
    total
        .kept_calls
        .extend(part.kept_calls.iter().map(|call| call + offset));
    total.values.extend(part.values);
}

/// Checks the counters' story of `packets` packets: all transmitted on `port`, no drop,
/// nothing emitted, and as many flow-cache hits (`hits`) or misses as packets.
fn check_counters(
    before: &Counters,
    after: &Counters,
    packets: u64,
    port: PortId,
    hits: bool,
) -> Result<(), String> {
    let tx = |c: &Counters| c.ports.get(port.0 as usize).map_or(0, |p| p.tx_packets);
    let transmitted = tx(after) - tx(before);
    let drops = after.total_drops() - before.total_drops();
    let emitted = after.emitted - before.emitted;
    let (flow_hits, misses) = (
        after.flow.hits - before.flow.hits,
        after.flow.misses - before.flow.misses,
    );
    let wanted = if hits { flow_hits } else { misses };
    if transmitted != packets || drops != 0 || emitted != 0 || wanted != packets {
        return Err(format!(
            "counters: {transmitted} transmitted on port {}, {drops} dropped, {emitted} \
             emitted, {flow_hits} flow-cache hits and {misses} misses for {packets} packets",
            port.0
        ));
    }
    Ok(())
}

/// Checks the connection table's story of `packets` new connections in a full table: one
/// created and one embryonic evicted per packet, none refused, expired or removed.
fn check_new_connections(
    before: &ConntrackCounters,
    after: &ConntrackCounters,
    packets: u64,
) -> Result<(), String> {
    let created = after.created - before.created;
    let evicted = after.evicted_embryonic - before.evicted_embryonic;
    let others = (after.refused_full - before.refused_full)
        + (after.expired - before.expired)
        + (after.removed - before.removed)
        + (after.evicted_closing - before.evicted_closing);
    if created != packets || evicted != packets || others != 0 {
        return Err(format!(
            "conntrack: {created} created, {evicted} embryonic evicted, {others} refused, \
             expired, removed or closing evicted, for {packets} new connections"
        ));
    }
    Ok(())
}

/// Sum of the original-direction packet counters of the pipeline's connections.
fn connection_packets(pipeline: &Pipeline) -> u64 {
    pipeline.connections().iter().map(|c| c.packets[0]).sum()
}

/// Checks every frame of `nat-hit` as the last pass left it: translated as its connection
/// says (`masqueraded`), or with its source unchanged.
fn check_hit_frames(bench: &Bench<'_, '_>, masqueraded: bool) -> Result<(), String> {
    // Original (source, source port, destination, destination port) -> translated source.
    let translated: HashMap<(u32, u16, u32, u16), (u32, u16)> = bench
        .pipeline
        .connections()
        .iter()
        .map(|c| {
            let o = &c.original;
            (
                (o.src as u32, o.src_port, o.dst as u32, o.dst_port),
                (c.reply.dst as u32, c.reply.dst_port),
            )
        })
        .collect();
    for (i, (packet, pristine)) in bench.packets.iter().zip(&bench.pristine).enumerate() {
        let frame = packet.frame();
        let fail = |what: &str| Err(format!("frame {i}: {what}: {frame:02x?}"));
        if frame.len() != pristine.len()
            || frame[0..6] != GATEWAY_MAC
            || frame[6..12] != UPLINK_MAC
            || frame[TTL_AT] != 63
            || frame[DST_AT..DST_AT + 4] != pristine[DST_AT..DST_AT + 4]
            || frame[DPORT_AT..DPORT_AT + 2] != pristine[DPORT_AT..DPORT_AT + 2]
        {
            return fail("not routed to the gateway as it should");
        }
        let source = (u32::from(ipv4_at(frame, SRC_AT)), u16_at(frame, SPORT_AT));
        if masqueraded {
            let original = (
                u32::from(ipv4_at(pristine, SRC_AT)),
                u16_at(pristine, SPORT_AT),
                u32::from(ipv4_at(pristine, DST_AT)),
                u16_at(pristine, DPORT_AT),
            );
            let expected = translated.get(&original).copied();
            if source.0 != u32::from(UPLINK_ADDR)
                || !(SNAT_PORTS.0..=SNAT_PORTS.1).contains(&source.1)
                || expected != Some(source)
            {
                return fail(&format!(
                    "source not translated as its connection says ({expected:?})"
                ));
            }
        } else if frame[SRC_AT..SRC_AT + 4] != pristine[SRC_AT..SRC_AT + 4]
            || frame[SPORT_AT..SPORT_AT + 2] != pristine[SPORT_AT..SPORT_AT + 2]
        {
            return fail("source changed without NAT");
        }
        if let Err(e) = checksums_valid(frame) {
            return fail(&e);
        }
    }
    Ok(())
}

fn figure(name: &str, value: f64, unit: &'static str) -> Figure {
    Figure {
        name: name.to_string(),
        value,
        unit,
    }
}

/// `nat-hit`: masqueraded UDP flows on the flow-cache hit path, against the same frames
/// without NAT.
pub fn hit(settings: &Settings, clock_ns: f64) -> Result<ScenarioResult, String> {
    let nat_tables = topology(Nat::Masquerade)?;
    let plain_tables = topology(Nat::None)?;
    let pristine: Vec<Vec<u8>> = (0..HIT_FLOWS).map(hit_frame).collect();
    let config = PipelineConfig {
        flow_capacity: 16 * HIT_FLOWS,
        ..PipelineConfig::default()
    };
    let mut nat_buffers = vec![0u8; HIT_FLOWS * SLOT];
    let mut plain_buffers = vec![0u8; HIT_FLOWS * SLOT];
    let mut nat = Bench::new(
        &nat_tables,
        config.clone(),
        &mut nat_buffers,
        pristine.clone(),
        POD_PORT,
        UPLINK,
    );
    let mut plain = Bench::new(
        &plain_tables,
        config,
        &mut plain_buffers,
        pristine,
        POD_PORT,
        UPLINK,
    );

    // Warm-up: the first pass installs the flows (and creates the connections), the second is
    // all hits.
    let pass = nat.batches_per_pass();
    for (bench, what) in [(&mut nat, "NAT"), (&mut plain, "plain")] {
        bench.run(pass, &mut Unchanged)?;
        let before = bench.pipeline.counters();
        bench.run(pass, &mut Unchanged)?;
        check_counters(
            &before,
            &bench.pipeline.counters(),
            HIT_FLOWS as u64,
            UPLINK,
            true,
        )
        .map_err(|e| format!("{what} warm-up pass: {e}"))?;
    }
    let check_pipelines = |nat: &Bench<'_, '_>, plain: &Bench<'_, '_>| -> Result<(), String> {
        check_hit_frames(nat, true).map_err(|e| format!("NAT: {e}"))?;
        check_hit_frames(plain, false).map_err(|e| format!("plain: {e}"))?;
        let (connections, created) = (
            nat.pipeline.conntrack().len(),
            nat.pipeline.conntrack().counters().created,
        );
        if connections != HIT_FLOWS || created != HIT_FLOWS as u64 {
            return Err(format!(
                "NAT: {connections} connections, {created} created; expected {HIT_FLOWS}"
            ));
        }
        if !plain.pipeline.conntrack().is_empty() {
            return Err("plain: connections tracked without NAT".into());
        }
        Ok(())
    };
    check_pipelines(&nat, &plain).map_err(|e| format!("after the warm-up: {e}"))?;
    let connection_packets_before = connection_packets(&nat.pipeline);

    let mut nat_timed = Timed::new(&nat, settings);
    let mut plain_timed = Timed::new(&plain, settings);
    let (nat_runs, plain_runs) = collect_alternately(
        settings,
        || nat_timed.run(&mut nat, &mut Unchanged),
        || plain_timed.run(&mut plain, &mut Unchanged),
    )?;
    for (timed, what) in [(&nat_timed, "NAT"), (&plain_timed, "plain")] {
        let (before, after) = timed.counters();
        check_counters(before, after, timed.all_packets(), UPLINK, true)
            .map_err(|e| format!("{what}: {e}"))?;
    }
    check_pipelines(&nat, &plain).map_err(|e| format!("after the runs: {e}"))?;
    let counted = connection_packets(&nat.pipeline) - connection_packets_before;
    if counted != nat_timed.all_packets() {
        return Err(format!(
            "NAT: the connections counted {counted} packets for {} sent",
            nat_timed.all_packets()
        ));
    }

    let plain_ns = plain_runs.median();
    let mut result = ScenarioResult {
        scenario: "nat-hit",
        description: format!(
            "Pipeline::process, batches of {BATCH} x 64 B UDP frames, {HIT_FLOWS} masqueraded \
             flows, every packet a flow-cache hit translated (source address and port) that \
             updates its connection; against the same frames without an SNAT rule \
             (plain-hit), runs alternating; per-batch restore untimed"
        ),
        flows: Some(HIT_FLOWS),
        table_bytes: nat_tables.memory_bytes(),
        flow_cache_bytes: Some(nat.pipeline.flow_cache().memory_bytes()),
        flow_cache_slots: Some(nat.pipeline.flow_cache().capacity()),
        ..ScenarioResult::default()
    };
    nat_timed.finish(nat_runs, clock_ns, &mut result);
    let ratio = result.ns_per_packet.unwrap_or(f64::MAX) / plain_ns;
    result.figures.push(figure("plain-hit", plain_ns, "ns"));
    if plain_runs.cpu_share < super::report::DISTURBED_BELOW {
        result.figures.push(figure(
            "plain-hit-cpu-share",
            plain_runs.cpu_share * 100.0,
            "%",
        ));
    }
    // The text line prints one decimal: the difference in ns says more.
    result.figures.push(figure("ratio", ratio, "x"));
    result.figures.push(figure(
        "nat-cost",
        result.ns_per_packet.unwrap_or(0.0) - plain_ns,
        "ns",
    ));
    result
        .targets
        .push(TargetCheck::at_most("nat_hit_vs_plain", 1.5, ratio));
    Ok(result)
}

/// Runs the warm-up and the timed runs of a new-connection scenario; returns the runs and
/// the counter story of the timed runs has been checked.
fn new_connections(
    bench: &mut Bench<'_, '_>,
    hooks: &mut impl Hooks,
    settings: &Settings,
    out_port: PortId,
) -> Result<(Timed, RunSet), String> {
    // Warm-up: twice the table's capacity, so that it is full and evicting.
    let warm_batches = 2 * CONNTRACK_CAPACITY / BATCH;
    let before = bench.pipeline.counters();
    bench.run(warm_batches, hooks)?;
    check_counters(
        &before,
        &bench.pipeline.counters(),
        (warm_batches * BATCH) as u64,
        out_port,
        false,
    )
    .map_err(|e| format!("warm-up: {e}"))?;
    let table = bench.pipeline.conntrack();
    if table.len() != table.capacity() {
        return Err(format!(
            "warm-up: {} connections in a table of {}; expected it full",
            table.len(),
            table.capacity()
        ));
    }
    let mut timed = Timed::new(bench, settings);
    let runs = RunSet::collect(settings, || timed.run(bench, hooks))?;
    let (before, after) = timed.counters();
    check_counters(before, after, timed.all_packets(), out_port, false)?;
    let (before, after) = timed.conntrack();
    check_new_connections(before, after, timed.all_packets())?;
    Ok((timed, runs))
}

/// Connection-table figures of the timed runs.
fn conntrack_figures(bench: &Bench<'_, '_>, timed: &Timed, result: &mut ScenarioResult) {
    let (before, after) = timed.conntrack();
    let table = bench.pipeline.conntrack();
    result.figures.push(figure(
        "created",
        (after.created - before.created) as f64,
        "",
    ));
    result.figures.push(figure(
        "evicted",
        (after.evicted_embryonic - before.evicted_embryonic) as f64,
        "",
    ));
    result.figures.push(figure("live", table.len() as f64, ""));
    result.figures.push(figure(
        "conntrack",
        table.memory_bytes() as f64 / f64::from(1 << 20),
        "MiB",
    ));
}

fn new_connection_config() -> PipelineConfig {
    let defaults = PipelineConfig::default();
    PipelineConfig {
        conntrack: pipelines::conntrack::ConntrackConfig {
            capacity: CONNTRACK_CAPACITY,
            ..defaults.conntrack
        },
        ..defaults
    }
}

/// `nat-setup`: every packet a new masqueraded TCP connection.
pub fn setup(settings: &Settings, clock_ns: f64) -> Result<ScenarioResult, String> {
    let tables = topology(Nat::Masquerade)?;
    let pristine = (0..SYN_FRAMES)
        .map(|i| syn_frame(server(i % SETUP_SERVERS), SETUP_PORT))
        .collect::<Result<Vec<_>, _>>()?;
    let mut buffers = vec![0u8; SYN_FRAMES * SLOT];
    let mut bench = Bench::new(
        &tables,
        new_connection_config(),
        &mut buffers,
        pristine,
        POD_PORT,
        UPLINK,
    );
    let mut hooks = Masqueraded {
        sources: FreshSources::new(),
    };
    let (timed, runs) = new_connections(&mut bench, &mut hooks, settings, UPLINK)?;
    let mut result = ScenarioResult {
        scenario: "nat-setup",
        description: format!(
            "Pipeline::process, batches of {BATCH} x 64 B TCP SYNs, every packet a new \
             masqueraded connection (flow miss, conntrack miss, route, SNAT rule, port \
             allocation, conntrack create evicting an embryonic one from a full table of \
             {CONNTRACK_CAPACITY}, translation, flow install) to {SETUP_SERVERS} servers; \
             per-batch restore with never-seen sources untimed"
        ),
        table_bytes: tables.memory_bytes(),
        flow_cache_bytes: Some(bench.pipeline.flow_cache().memory_bytes()),
        flow_cache_slots: Some(bench.pipeline.flow_cache().capacity()),
        ..ScenarioResult::default()
    };
    timed.finish(runs, clock_ns, &mut result);
    let per_sec = result.mpps.unwrap_or(0.0);
    result.figures.push(figure("conns/s", per_sec, "M"));
    conntrack_figures(&bench, &timed, &mut result);
    result.targets.push(TargetCheck::at_least(
        "new_connections_per_sec_millions",
        1.0,
        per_sec,
    ));
    Ok(result)
}

/// `service-select`: every packet a new TCP connection to a Service of 100 backends.
pub fn service_select(settings: &Settings, clock_ns: f64) -> Result<ScenarioResult, String> {
    let tables = topology(Nat::Service)?;
    let pristine = (0..SYN_FRAMES)
        .map(|_| syn_frame(VIP, VIP_PORT))
        .collect::<Result<Vec<_>, _>>()?;
    let mut buffers = vec![0u8; SYN_FRAMES * SLOT];
    let mut bench = Bench::new(
        &tables,
        new_connection_config(),
        &mut buffers,
        pristine,
        POD_PORT,
        POD_PORT,
    );
    let mut hooks = ToBackends {
        sources: FreshSources::new(),
        chosen: vec![0; BACKENDS],
    };
    // Counted over the timed runs only (the warm-up's are cleared when they start).
    let (timed, runs) = {
        let mut cleared = ClearAfterWarmUp {
            inner: &mut hooks,
            warm_batches: 2 * CONNTRACK_CAPACITY / BATCH,
            batches: 0,
        };
        new_connections(&mut bench, &mut cleared, settings, POD_PORT)?
    };
    let total: u64 = hooks.chosen.iter().sum();
    if total != timed.all_packets() {
        return Err(format!(
            "{total} connections counted at backends for {} packets",
            timed.all_packets()
        ));
    }
    if let Some(never) = hooks.chosen.iter().position(|&n| n == 0) {
        return Err(format!("backend {} never chosen", backend(never)));
    }
    let fair = total as f64 / BACKENDS as f64;
    let least = hooks.chosen.iter().copied().min().unwrap_or(0) as f64 / fair;
    let most = hooks.chosen.iter().copied().max().unwrap_or(0) as f64 / fair;
    let mut result = ScenarioResult {
        scenario: "service-select",
        description: format!(
            "Pipeline::process, batches of {BATCH} x 64 B TCP SYNs to a Service VIP with \
             {BACKENDS} backends, every packet a new connection (flow miss, conntrack miss, \
             Service lookup, Maglev, route, conntrack create evicting an embryonic one from a \
             full table of {CONNTRACK_CAPACITY}, DNAT, flow install); per-batch restore with \
             never-seen sources untimed"
        ),
        table_bytes: tables.memory_bytes(),
        flow_cache_bytes: Some(bench.pipeline.flow_cache().memory_bytes()),
        flow_cache_slots: Some(bench.pipeline.flow_cache().capacity()),
        ..ScenarioResult::default()
    };
    timed.finish(runs, clock_ns, &mut result);
    let per_sec = result.mpps.unwrap_or(0.0);
    result.figures.push(figure("conns/s", per_sec, "M"));
    result
        .figures
        .push(figure("backend-min", least * 100.0, "% of fair share"));
    result
        .figures
        .push(figure("backend-max", most * 100.0, "% of fair share"));
    conntrack_figures(&bench, &timed, &mut result);
    Ok(result)
}

/// Hooks that clear the backend counts once the warm-up's batches are done.
struct ClearAfterWarmUp<'h> {
    inner: &'h mut ToBackends,
    warm_batches: usize,
    batches: usize,
}

impl Hooks for ClearAfterWarmUp<'_> {
    fn prepare(&mut self, batch: &mut [Packet<'_>]) {
        if self.batches == self.warm_batches {
            self.inner.chosen.fill(0);
        }
        self.batches += 1;
        self.inner.prepare(batch);
    }

    fn inspect(&mut self, batch: &[Packet<'_>]) -> Result<(), String> {
        self.inner.inspect(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_64_bytes_with_valid_checksums() {
        let hit = hit_frame(7);
        assert_eq!(hit.len(), 64);
        checksums_valid(&hit).unwrap();
        let mut syn = syn_frame(server(3), SETUP_PORT).unwrap();
        assert_eq!(syn.len(), 64);
        set_source(&mut syn, Ipv4Addr::new(10, 244, 7, 9), 4321);
        checksums_valid(&syn).unwrap();
        assert_eq!(ipv4_at(&syn, SRC_AT), Ipv4Addr::new(10, 244, 7, 9));
        assert_eq!(u16_at(&syn, SPORT_AT), 4321);
    }

    #[test]
    fn fresh_sources_do_not_repeat_and_stay_in_the_pods() {
        let mut seen = std::collections::HashSet::new();
        for n in (0..200_000).chain(CLIENT_ADDRESSES * 64_511..CLIENT_ADDRESSES * 64_511 + 10) {
            let (addr, port) = fresh_source(n);
            let o = addr.octets();
            assert!(o[0] == 10 && o[1] == 244 && o[2] >= 2 && (2..=253).contains(&o[3]));
            assert!(port >= 1024);
            assert!(seen.insert((addr, port)));
        }
    }

    #[test]
    fn every_scenario_passes_its_checks_on_a_few_batches() {
        let settings = Settings {
            packets: 4 * BATCH as u64,
            runs: 1,
            repeat_disturbed: false,
        };
        let hit = hit(&settings, 0.0).unwrap();
        assert!(hit.ns_per_packet.is_some());
        assert!(setup(&settings, 0.0).unwrap().ns_per_packet.is_some());
        let service = service_select(
            &Settings {
                packets: 64 * BATCH as u64,
                ..settings
            },
            0.0,
        )
        .unwrap();
        assert!(service.ns_per_packet.is_some());
    }
}
