//! Shared fixtures of the stage and property tests: a lab of tables (five ports, static
//! neighbors, routes of every kind), a harness around `Pipeline::process`, frame builders on
//! top of etherparse's `PacketBuilder`, and checkers for what the router emits (checksums are
//! verified with an independent implementation, not with `pipelines::wire::checksum`).
#![allow(dead_code)]

use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, Ethernet2Header, IpHeaders, IpNumber,
    Ipv4Extensions, Ipv4Header, Ipv6Header, PacketBuilder,
};
use pipelines::tables::NextHop;
use pipelines::tables::{DfPolicy, InterfaceAddress, RouteTarget, VxlanParams};
use pipelines::wire::EthernetAddress;
use pipelines::NextHopId;
use pipelines::{
    DropReason, Emitted, Event, IpPrefix, Output, Packet, Pipeline, PipelineConfig, PortId,
    TableOp, Tables, Verdict, VrfId,
};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

// ---------------------------------------------------------------------------------------------
// The lab
//
//   port  name  router MAC          MTU   IPv4           IPv6                neighbor (static)
//   0     p0    02:00:00:00:00:10   1500  10.0.0.1/24    2001:db8::1/64      H0  10.0.0.2 / ::2
//   1     p1    02:00:00:00:00:11   1500  10.0.1.1/24    2001:db8:1::1/64    N1  10.0.1.2 / 1::2
//   2     p2    02:00:00:00:00:12   1400  10.0.2.1/24    2001:db8:2::1/64    N2  10.0.2.2 / 2::2
//   3     p3    02:00:00:00:00:13   1500  10.0.3.1/24    2001:db8:3::1/64    N3  10.0.3.2 / 3::2
//   4     p4    02:00:00:00:00:14    576  10.0.4.1/24    -                   N4  10.0.4.2
//
// Routes (VRF 0), besides the connected/receive/broadcast ones:
//   192.168.0.0/16  via 10.0.1.2          2001:db8:100::/48    via 2001:db8:1::2
//   192.168.1.0/24  via 10.0.3.2          2001:db8:100:1::/64  via 2001:db8:3::2
//   172.16.0.0/16   blackhole             2001:db8:dead::/48   blackhole
//   172.17.0.0/16   unreachable           2001:db8:beef::/48   unreachable
//   198.51.100.0/24 multipath N1, N2, N3  2001:db8:200::/48    via 2001:db8:2::2 (MTU 1400)
//   203.0.113.0/24  via 10.0.4.2 (MTU 576)
// No default route. 10.0.3.77 and 2001:db8:3::77 are on p3's subnet without a neighbor entry.
// ---------------------------------------------------------------------------------------------

/// Router MACs, by port.
pub const R: [[u8; 6]; 5] = [
    [0x02, 0, 0, 0, 0, 0x10],
    [0x02, 0, 0, 0, 0, 0x11],
    [0x02, 0, 0, 0, 0, 0x12],
    [0x02, 0, 0, 0, 0, 0x13],
    [0x02, 0, 0, 0, 0, 0x14],
];
/// The host on p0.
pub const H0: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 0x02];
/// Neighbors on p1..p4 (index = port).
pub const N: [[u8; 6]; 5] = [
    H0,
    [0x02, 0xbb, 0, 0, 0, 0x01],
    [0x02, 0xbb, 0, 0, 0, 0x02],
    [0x02, 0xbb, 0, 0, 0, 0x03],
    [0x02, 0xbb, 0, 0, 0, 0x04],
];
/// Port MTUs, by port.
pub const MTU: [u16; 5] = [1500, 1500, 1400, 1500, 576];

pub const H0_V4: [u8; 4] = [10, 0, 0, 2];
pub const H0_V6: [u8; 16] = v6b([0x2001, 0xdb8, 0, 0, 0, 0, 0, 2]);
pub const BROADCAST: [u8; 6] = [0xff; 6];

/// IPv6 address bytes from eight segments.
pub const fn v6b(s: [u16; 8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 8 {
        out[2 * i] = (s[i] >> 8) as u8;
        out[2 * i + 1] = s[i] as u8;
        i += 1;
    }
    out
}

/// The router's IPv4 address on `port`.
pub fn router_v4(port: usize) -> [u8; 4] {
    [10, 0, port as u8, 1]
}

/// The router's IPv6 address on `port` (ports 0..=3).
pub fn router_v6(port: usize) -> [u8; 16] {
    v6b([0x2001, 0xdb8, port as u16, 0, 0, 0, 0, 1])
}

/// The neighbor's IPv4 address on `port`.
pub fn neighbor_v4(port: usize) -> [u8; 4] {
    [10, 0, port as u8, 2]
}

/// The neighbor's IPv6 address on `port` (ports 0..=3).
pub fn neighbor_v6(port: usize) -> [u8; 16] {
    v6b([0x2001, 0xdb8, port as u16, 0, 0, 0, 0, 2])
}

pub fn ea(mac: [u8; 6]) -> EthernetAddress {
    EthernetAddress(mac)
}

pub fn ip4(b: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(b))
}

pub fn ip6(b: [u8; 16]) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(b))
}

pub fn prefix(s: &str) -> IpPrefix {
    s.parse().expect("valid prefix")
}

pub fn iface(s: &str) -> InterfaceAddress {
    let (addr, len) = s.split_once('/').expect("ADDRESS/LEN");
    InterfaceAddress {
        addr: addr.parse().expect("address"),
        prefix_len: len.parse().expect("length"),
    }
}

pub fn via(gateway: &str) -> RouteTarget {
    RouteTarget::Via {
        gateway: gateway.parse().expect("gateway"),
        port: None,
    }
}

pub fn route(p: &str, target: RouteTarget) -> TableOp {
    TableOp::AddRoute {
        vrf: VrfId(0),
        prefix: prefix(p),
        target,
        replace: false,
    }
}

/// The ops that build the lab (one transaction).
pub fn lab_ops() -> Vec<TableOp> {
    let mut ops = Vec::new();
    for port in 0..5usize {
        let id = PortId(port as u16);
        ops.push(TableOp::AddPort {
            id,
            name: format!("p{port}"),
            mac: ea(R[port]),
            mtu: MTU[port],
            vrf: VrfId(0),
        });
        ops.push(TableOp::AddAddress {
            port: id,
            address: iface(&format!("10.0.{port}.1/24")),
        });
        ops.push(TableOp::AddNeighbor {
            port: id,
            ip: ip4(neighbor_v4(port)),
            mac: ea(N[port]),
        });
        if port < 4 {
            ops.push(TableOp::AddAddress {
                port: id,
                address: iface(&format!("2001:db8:{port}::1/64")),
            });
            ops.push(TableOp::AddNeighbor {
                port: id,
                ip: ip6(neighbor_v6(port)),
                mac: ea(N[port]),
            });
        }
    }
    ops.extend([
        route("192.168.0.0/16", via("10.0.1.2")),
        route("192.168.1.0/24", via("10.0.3.2")),
        route("172.16.0.0/16", RouteTarget::Blackhole),
        route("172.17.0.0/16", RouteTarget::Unreachable),
        route(
            "198.51.100.0/24",
            RouteTarget::Multipath(vec![via("10.0.1.2"), via("10.0.2.2"), via("10.0.3.2")]),
        ),
        route("203.0.113.0/24", via("10.0.4.2")),
        route("2001:db8:100::/48", via("2001:db8:1::2")),
        route("2001:db8:100:1::/64", via("2001:db8:3::2")),
        route("2001:db8:dead::/48", RouteTarget::Blackhole),
        route("2001:db8:beef::/48", RouteTarget::Unreachable),
        route("2001:db8:200::/48", via("2001:db8:2::2")),
    ]);
    ops
}

pub fn lab_tables() -> Tables {
    let mut tables = Tables::new();
    tables.apply_batch(&lab_ops()).expect("lab tables");
    tables
}

// ---------------------------------------------------------------------------------------------
// The VXLAN lab: the lab plus an overlay VRF 1 with a pod port and a tunnel
//
//   port  name      MAC                MTU   VRF  addresses                          neighbor
//   5     p5        02:00:00:00:00:15  1500  1    10.244.1.1/24, fd00:244:1::1/64    POD .5/::5
//   6     vxlan100  02:00:00:00:01:00  1450  1    -  (VNI 100, VTEP 10.0.1.1 on p1)
//
// Routes (VRF 1), besides the connected ones, all into vxlan100 (inner dst REMOTE_MAC):
//   10.244.2.0/24, fd00:244:2::/64   remote 10.0.1.2     (N1, on p1's subnet, resolved)
//   10.244.3.0/24                     remote 192.168.7.7  (underlay 192.168.0.0/16 via N1)
//   10.244.4.0/24                     remote 10.0.3.77    (on p3's subnet, no neighbor)
//   10.244.5.0/24                     remote 10.99.0.1    (no underlay route)
// ---------------------------------------------------------------------------------------------

pub const P5: u16 = 5;
pub const TUNNEL: u16 = 6;
pub const OVERLAY: VrfId = VrfId(1);
/// MAC of p5.
pub const R5: [u8; 6] = [0x02, 0, 0, 0, 0, 0x15];
/// Overlay MAC of the tunnel (inner source of what we encapsulate).
pub const TUNNEL_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x00];
/// Inner destination MAC the routes name (the remote overlay's MAC).
pub const REMOTE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x00];
/// The pod on p5.
pub const POD: [u8; 6] = [0x02, 0xcc, 0, 0, 0, 0x05];
pub const POD_V4: [u8; 4] = [10, 244, 1, 5];
pub const POD_V6: [u8; 16] = v6b([0xfd00, 0x244, 1, 0, 0, 0, 0, 5]);
pub const P5_V4: [u8; 4] = [10, 244, 1, 1];
pub const P5_V6: [u8; 16] = v6b([0xfd00, 0x244, 1, 0, 0, 0, 0, 1]);
pub const VNI: u32 = 100;
/// Local VTEP (p1's address).
pub const VTEP: [u8; 4] = [10, 0, 1, 1];
/// Remote VTEP of 10.244.2.0/24 (N1).
pub const REMOTE_VTEP: [u8; 4] = [10, 0, 1, 2];
/// Remote VTEP of 10.244.3.0/24, behind the underlay gateway N1.
pub const FAR_VTEP: [u8; 4] = [192, 168, 7, 7];
/// Remote VTEP of 10.244.4.0/24, on p3's subnet without a neighbor entry.
pub const UNRESOLVED_VTEP: [u8; 4] = [10, 0, 3, 77];
/// Remote VTEP of 10.244.5.0/24, with no underlay route.
pub const UNREACHABLE_VTEP: [u8; 4] = [10, 99, 0, 1];
/// A pod behind REMOTE_VTEP.
pub const REMOTE_POD_V4: [u8; 4] = [10, 244, 2, 7];
pub const REMOTE_POD_V6: [u8; 16] = v6b([0xfd00, 0x244, 2, 0, 0, 0, 0, 7]);
/// The UDP port of VXLAN.
pub const VXLAN_PORT: u16 = 4789;
/// Outer Ethernet + IPv4 + UDP + VXLAN.
pub const VXLAN_OVERHEAD: usize = 50;

/// The tunnel's settings in the lab (Linux defaults: TTL 64, DF unset, no UDP checksum).
pub fn lab_vxlan_params() -> VxlanParams {
    VxlanParams {
        vni: VNI,
        local: Ipv4Addr::from(VTEP),
        uplink: PortId(1),
        ttl: 64,
        df: DfPolicy::Unset,
        udp_checksum: false,
    }
}

pub fn vxlan_route(vrf: VrfId, p: &str, remote: [u8; 4]) -> TableOp {
    TableOp::AddRoute {
        vrf,
        prefix: prefix(p),
        target: RouteTarget::Vxlan {
            tunnel: PortId(TUNNEL),
            remote: Ipv4Addr::from(remote),
            mac: Some(ea(REMOTE_MAC)),
        },
        replace: false,
    }
}

/// The ops that add the overlay to the lab, with the tunnel's settings.
pub fn vxlan_ops(params: VxlanParams) -> Vec<TableOp> {
    vec![
        TableOp::AddPort {
            id: PortId(P5),
            name: "p5".into(),
            mac: ea(R5),
            mtu: 1500,
            vrf: OVERLAY,
        },
        TableOp::AddAddress {
            port: PortId(P5),
            address: iface("10.244.1.1/24"),
        },
        TableOp::AddAddress {
            port: PortId(P5),
            address: iface("fd00:244:1::1/64"),
        },
        TableOp::AddNeighbor {
            port: PortId(P5),
            ip: ip4(POD_V4),
            mac: ea(POD),
        },
        TableOp::AddNeighbor {
            port: PortId(P5),
            ip: ip6(POD_V6),
            mac: ea(POD),
        },
        TableOp::AddVxlan {
            id: PortId(TUNNEL),
            name: "vxlan100".into(),
            mac: ea(TUNNEL_MAC),
            mtu: None,
            vrf: OVERLAY,
            params,
        },
        vxlan_route(OVERLAY, "10.244.2.0/24", REMOTE_VTEP),
        vxlan_route(OVERLAY, "fd00:244:2::/64", REMOTE_VTEP),
        vxlan_route(OVERLAY, "10.244.3.0/24", FAR_VTEP),
        vxlan_route(OVERLAY, "10.244.4.0/24", UNRESOLVED_VTEP),
        vxlan_route(OVERLAY, "10.244.5.0/24", UNREACHABLE_VTEP),
    ]
}

/// The lab tables with the overlay.
pub fn vxlan_lab_tables(params: VxlanParams) -> Tables {
    let mut tables = lab_tables();
    tables
        .apply_batch(&vxlan_ops(params))
        .expect("vxlan lab tables");
    tables
}

/// Test configuration: no ICMP rate limit (tests count errors exactly), small hold queues.
pub fn lab_config() -> PipelineConfig {
    PipelineConfig {
        flow_capacity: 1 << 14,
        icmp_errors_per_sec: 0,
        neighbor_retry_ms: 1000,
        neighbor_max_probes: 3,
        neighbor_queue_per_entry: 4,
        neighbor_queue_total: 64,
        neighbor_pending_max: 16,
        ..PipelineConfig::default()
    }
}

/// Start of the test clock (1 s; tests pass explicit times, no sleeping).
pub const T0: u64 = 1_000_000_000;
pub const MS: u64 = 1_000_000;

/// What one frame produced.
#[derive(Debug)]
pub struct Run {
    pub verdict: Verdict,
    /// The frame after processing (rewritten in place).
    pub frame: Vec<u8>,
    pub emitted: Vec<Emitted>,
    pub events: Vec<Event>,
}

/// What a batch produced.
#[derive(Debug)]
pub struct BatchRun {
    pub verdicts: Vec<Verdict>,
    pub frames: Vec<Vec<u8>>,
    pub emitted: Vec<Emitted>,
    pub events: Vec<Event>,
}

/// A verdict the pipeline never gives (the port layer counts full TX rings): a slot still
/// holding it after `process` got no verdict.
pub const UNSET: Verdict = Verdict::Drop(DropReason::TxRingFull);

/// Bytes in front of a frame in its buffer (the UMEM headroom the dataplane reserves).
pub const HEADROOM: usize = 256;
/// Bytes behind a frame in its buffer.
pub const TAILROOM: usize = 128;
/// What the room around a frame is filled with.
pub const ROOM_MARKER: u8 = 0xa5;

/// Tables plus one pipeline plus a reused `Output`.
pub struct Lab {
    pub tables: Tables,
    pub pipeline: Pipeline,
    pub out: Output,
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

impl Lab {
    pub fn new() -> Lab {
        Lab::with_config(lab_config())
    }

    /// The lab with the overlay (p5, vxlan100 and their routes).
    pub fn vxlan() -> Lab {
        Lab::vxlan_with(lab_vxlan_params(), lab_config())
    }

    pub fn vxlan_with(params: VxlanParams, config: PipelineConfig) -> Lab {
        Lab {
            tables: vxlan_lab_tables(params),
            pipeline: Pipeline::new(config),
            out: Output::default(),
        }
    }

    pub fn with_config(config: PipelineConfig) -> Lab {
        Lab {
            tables: lab_tables(),
            pipeline: Pipeline::new(config),
            out: Output::default(),
        }
    }

    /// One frame on `port` at `now_ns`.
    pub fn send_at(&mut self, port: u16, frame: &[u8], now_ns: u64) -> Run {
        let mut batch = self.batch_at(&[(port, frame.to_vec())], now_ns);
        Run {
            verdict: batch.verdicts[0],
            frame: batch.frames.remove(0),
            emitted: batch.emitted,
            events: batch.events,
        }
    }

    /// One frame on `port` at `T0`.
    pub fn send(&mut self, port: u16, frame: &[u8]) -> Run {
        self.send_at(port, frame, T0)
    }

    /// A batch through one `process` call; asserts every packet got a verdict. Every frame
    /// sits in its buffer like in the real UMEM: `HEADROOM` bytes before it, `TAILROOM`
    /// after.
    pub fn batch_at(&mut self, frames: &[(u16, Vec<u8>)], now_ns: u64) -> BatchRun {
        self.batch_with_room(frames, now_ns, HEADROOM, TAILROOM)
    }

    /// A batch whose frames have `headroom` bytes before them and `tailroom` after in their
    /// buffers (filled with a marker, so reads outside the frame do not see zeros). The
    /// returned frames are the buffers' contents at each packet's final offset and length.
    pub fn batch_with_room(
        &mut self,
        frames: &[(u16, Vec<u8>)],
        now_ns: u64,
        headroom: usize,
        tailroom: usize,
    ) -> BatchRun {
        let mut buffers: Vec<(u16, Vec<u8>)> = frames
            .iter()
            .map(|(port, frame)| {
                let mut buf = vec![ROOM_MARKER; headroom + frame.len() + tailroom];
                buf[headroom..headroom + frame.len()].copy_from_slice(frame);
                (*port, buf)
            })
            .collect();
        let mut packets: Vec<Packet<'_>> = buffers
            .iter_mut()
            .zip(frames)
            .map(|((port, buf), (_, frame))| Packet {
                buf: buf.as_mut_slice(),
                offset: headroom,
                len: frame.len(),
                in_port: PortId(*port),
            })
            .collect();
        let mut verdicts = vec![UNSET; packets.len()];
        self.out.clear();
        self.pipeline.process(
            &self.tables,
            &mut packets,
            &mut verdicts,
            &mut self.out,
            now_ns,
        );
        let spans: Vec<(usize, usize)> = packets.iter().map(|p| (p.offset, p.len)).collect();
        drop(packets);
        assert!(
            !verdicts.contains(&UNSET),
            "a packet got no verdict: {verdicts:?}"
        );
        BatchRun {
            verdicts,
            frames: buffers
                .into_iter()
                .zip(spans)
                .map(|((_, b), (offset, len))| {
                    assert!(
                        offset + len <= b.len(),
                        "frame {offset}+{len} outside its {}-byte buffer",
                        b.len()
                    );
                    b[offset..offset + len].to_vec()
                })
                .collect(),
            emitted: self.out.emitted.clone(),
            events: self.out.events.clone(),
        }
    }

    /// One frame on `port` at `now_ns`, with the given room around it in its buffer.
    pub fn send_with_room(
        &mut self,
        port: u16,
        frame: &[u8],
        now_ns: u64,
        headroom: usize,
        tailroom: usize,
    ) -> Run {
        let mut batch = self.batch_with_room(&[(port, frame.to_vec())], now_ns, headroom, tailroom);
        Run {
            verdict: batch.verdicts[0],
            frame: batch.frames.remove(0),
            emitted: batch.emitted,
            events: batch.events,
        }
    }

    pub fn tick(&mut self, now_ns: u64) -> Vec<Emitted> {
        self.out.clear();
        self.pipeline.tick(&self.tables, &mut self.out, now_ns);
        self.out.emitted.clone()
    }

    pub fn apply(&mut self, ops: &[TableOp]) {
        self.tables.apply_batch(ops).expect("batch accepted");
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        self.pipeline.counters().drops_for(reason)
    }

    /// Asserts that exactly the given drop counters are non-zero, with these values.
    pub fn assert_drops(&self, expected: &[(DropReason, u64)]) {
        let counters = self.pipeline.counters();
        for reason in DropReason::ALL {
            let want = expected
                .iter()
                .find(|(r, _)| r == reason)
                .map_or(0, |(_, n)| *n);
            assert_eq!(
                counters.drops_for(*reason),
                want,
                "drop counter {} (all: {:?})",
                reason.name(),
                nonzero_drops(&counters)
            );
        }
    }
}

pub fn nonzero_drops(counters: &pipelines::Counters) -> Vec<(&'static str, u64)> {
    DropReason::ALL
        .iter()
        .filter(|r| counters.drops_for(**r) > 0)
        .map(|r| (r.name(), counters.drops_for(*r)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Frame builders (etherparse)
// ---------------------------------------------------------------------------------------------

pub const SPORT: u16 = 40000;
pub const DPORT: u16 = 5001;

fn build<B>(builder: B, payload: &[u8]) -> Vec<u8>
where
    B: FnOnce(&mut Vec<u8>, &[u8]),
{
    let mut out = Vec::new();
    builder(&mut out, payload);
    out
}

/// UDP over IPv4, DF set (etherparse's default), ports `SPORT` -> `DPORT`.
pub fn udp4(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    ttl: u8,
    payload: &[u8],
) -> Vec<u8> {
    udp4_ports(src_mac, dst_mac, src, dst, ttl, SPORT, DPORT, payload)
}

#[allow(clippy::too_many_arguments)]
pub fn udp4_ports(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    ttl: u8,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    build(
        |out, payload| {
            PacketBuilder::ethernet2(src_mac, dst_mac)
                .ipv4(src, dst, ttl)
                .udp(sport, dport)
                .write(out, payload)
                .expect("udp4")
        },
        payload,
    )
}

/// UDP over IPv4 with a caller-made header (flags, options, ident); lengths, protocol and
/// checksums are filled in by etherparse.
pub fn udp4_with_header(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    header: Ipv4Header,
    payload: &[u8],
) -> Vec<u8> {
    build(
        |out, payload| {
            PacketBuilder::ethernet2(src_mac, dst_mac)
                .ip(IpHeaders::Ipv4(header, Ipv4Extensions::default()))
                .udp(SPORT, DPORT)
                .write(out, payload)
                .expect("udp4 custom")
        },
        payload,
    )
}

/// An IPv4 header for `udp4_with_header`.
pub fn ipv4_header(src: [u8; 4], dst: [u8; 4], ttl: u8, dont_fragment: bool) -> Ipv4Header {
    let mut header = Ipv4Header::new(0, ttl, IpNumber::UDP, src, dst).expect("header");
    header.dont_fragment = dont_fragment;
    header.identification = 0x4242;
    header
}

pub fn tcp4(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    ttl: u8,
    payload: &[u8],
) -> Vec<u8> {
    build(
        |out, payload| {
            PacketBuilder::ethernet2(src_mac, dst_mac)
                .ipv4(src, dst, ttl)
                .tcp(SPORT, 80, 1000, 65535)
                .syn()
                .write(out, payload)
                .expect("tcp4")
        },
        payload,
    )
}

#[allow(clippy::too_many_arguments)]
pub fn icmp4_echo(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    ttl: u8,
    id: u16,
    seq: u16,
    payload: &[u8],
) -> Vec<u8> {
    build(
        |out, payload| {
            PacketBuilder::ethernet2(src_mac, dst_mac)
                .ipv4(src, dst, ttl)
                .icmpv4_echo_request(id, seq)
                .write(out, payload)
                .expect("icmp4 echo")
        },
        payload,
    )
}

#[allow(clippy::too_many_arguments)]
pub fn icmp4_raw(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    ttl: u8,
    icmp_type: u8,
    code: u8,
    payload: &[u8],
) -> Vec<u8> {
    build(
        |out, payload| {
            PacketBuilder::ethernet2(src_mac, dst_mac)
                .ipv4(src, dst, ttl)
                .icmpv4_raw(icmp_type, code, [0; 4])
                .write(out, payload)
                .expect("icmp4 raw")
        },
        payload,
    )
}

pub fn udp6(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 16],
    dst: [u8; 16],
    hop_limit: u8,
    payload: &[u8],
) -> Vec<u8> {
    udp6_ports(src_mac, dst_mac, src, dst, hop_limit, SPORT, DPORT, payload)
}

#[allow(clippy::too_many_arguments)]
pub fn udp6_ports(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 16],
    dst: [u8; 16],
    hop_limit: u8,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    build(
        |out, payload| {
            PacketBuilder::ethernet2(src_mac, dst_mac)
                .ipv6(src, dst, hop_limit)
                .udp(sport, dport)
                .write(out, payload)
                .expect("udp6")
        },
        payload,
    )
}

#[allow(clippy::too_many_arguments)]
pub fn icmp6_echo(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 16],
    dst: [u8; 16],
    hop_limit: u8,
    id: u16,
    seq: u16,
    payload: &[u8],
) -> Vec<u8> {
    build(
        |out, payload| {
            PacketBuilder::ethernet2(src_mac, dst_mac)
                .ipv6(src, dst, hop_limit)
                .icmpv6_echo_request(id, seq)
                .write(out, payload)
                .expect("icmp6 echo")
        },
        payload,
    )
}

/// An ICMPv6 message of any type: `rest` is bytes 4..8, `body` what follows.
#[allow(clippy::too_many_arguments)]
pub fn icmp6_raw(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 16],
    dst: [u8; 16],
    hop_limit: u8,
    icmp_type: u8,
    code: u8,
    rest: [u8; 4],
    body: &[u8],
) -> Vec<u8> {
    build(
        |out, body| {
            PacketBuilder::ethernet2(src_mac, dst_mac)
                .ipv6(src, dst, hop_limit)
                .icmpv6_raw(icmp_type, code, rest)
                .write(out, body)
                .expect("icmp6 raw")
        },
        body,
    )
}

/// Solicited-node multicast group of `target`.
pub fn solicited_node(target: [u8; 16]) -> [u8; 16] {
    let mut group = v6b([0xff02, 0, 0, 0, 0, 1, 0xff00, 0]);
    group[13..16].copy_from_slice(&target[13..16]);
    group
}

pub fn multicast_mac(group: [u8; 16]) -> [u8; 6] {
    [0x33, 0x33, group[12], group[13], group[14], group[15]]
}

/// A neighbor solicitation for `target` from `src` (multicast to the solicited-node group),
/// with a source link-layer address option when `sll` is given.
pub fn neighbor_solicit(
    src_mac: [u8; 6],
    src: [u8; 16],
    target: [u8; 16],
    hop_limit: u8,
    sll: Option<[u8; 6]>,
) -> Vec<u8> {
    let group = solicited_node(target);
    let mut body = target.to_vec();
    if let Some(mac) = sll {
        body.extend_from_slice(&[1, 1]);
        body.extend_from_slice(&mac);
    }
    icmp6_raw(
        src_mac,
        multicast_mac(group),
        src,
        group,
        hop_limit,
        135,
        0,
        [0; 4],
        &body,
    )
}

/// A solicited neighbor advertisement for `target` at `mac`, unicast to `dst` / `dst_mac`.
pub fn neighbor_advert(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    target: [u8; 16],
    dst: [u8; 16],
    mac: [u8; 6],
) -> Vec<u8> {
    let mut body = target.to_vec();
    body.extend_from_slice(&[2, 1]);
    body.extend_from_slice(&mac);
    icmp6_raw(
        src_mac,
        dst_mac,
        target,
        dst,
        255,
        136,
        0,
        [0x60, 0, 0, 0],
        &body,
    )
}

/// An Ethernet/IPv4 ARP frame.
pub fn arp(
    eth_src: [u8; 6],
    eth_dst: [u8; 6],
    operation: u16,
    sha: [u8; 6],
    spa: [u8; 4],
    tha: [u8; 6],
    tpa: [u8; 4],
) -> Vec<u8> {
    let packet = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation(operation),
        &sha,
        &spa,
        &tha,
        &tpa,
    )
    .expect("arp");
    let mut out = Vec::new();
    PacketBuilder::ethernet2(eth_src, eth_dst)
        .arp(packet)
        .write(&mut out)
        .expect("arp frame");
    out
}

/// An Ethernet header followed by `rest` (for hand-made, malformed or unusual packets).
pub fn ethernet(src_mac: [u8; 6], dst_mac: [u8; 6], ethertype: u16, rest: &[u8]) -> Vec<u8> {
    let mut out = Ethernet2Header {
        source: src_mac,
        destination: dst_mac,
        ether_type: EtherType(ethertype),
    }
    .to_bytes()
    .to_vec();
    out.extend_from_slice(rest);
    out
}

/// An IPv6 base header (payload length set to `payload.len()`) followed by `payload`, with
/// `next_header` as given: for extension chains built by hand.
pub fn ipv6_raw(
    src: [u8; 16],
    dst: [u8; 16],
    hop_limit: u8,
    next_header: u8,
    payload: &[u8],
) -> Vec<u8> {
    let header = Ipv6Header {
        traffic_class: 0,
        flow_label: Default::default(),
        payload_length: payload.len() as u16,
        next_header: IpNumber(next_header),
        hop_limit,
        source: src,
        destination: dst,
    };
    let mut out = header.to_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// A VXLAN header: `flags` byte, 24-bit VNI, everything else zero.
pub fn vxlan_header(flags: u8, vni: u32) -> [u8; 8] {
    let v = vni.to_be_bytes();
    [flags, 0, 0, 0, v[1], v[2], v[3], 0]
}

/// An outer Ethernet/IPv4/UDP frame to port 4789 carrying `vxlan` (8 bytes, as given) and
/// the inner frame. The UDP checksum is computed (etherparse) when `udp_checksum`, else 0.
#[allow(clippy::too_many_arguments)]
pub fn vxlan_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    vxlan: [u8; 8],
    inner: &[u8],
    udp_checksum: bool,
) -> Vec<u8> {
    let payload = [&vxlan[..], inner].concat();
    let mut frame = udp4_ports(src_mac, dst_mac, src, dst, 64, sport, VXLAN_PORT, &payload);
    if !udp_checksum {
        frame[14 + 20 + 6] = 0;
        frame[14 + 20 + 7] = 0;
    } else {
        assert_ne!(&frame[40..42], &[0, 0], "etherparse computed a checksum");
    }
    frame
}

/// A VXLAN frame from N1 (the remote VTEP 10.0.1.2) to our VTEP on p1, VNI 100, no UDP
/// checksum.
pub fn from_remote_vtep(inner: &[u8]) -> Vec<u8> {
    vxlan_frame(
        N[1],
        R[1],
        REMOTE_VTEP,
        VTEP,
        50000,
        vxlan_header(0x08, VNI),
        inner,
        false,
    )
}

/// Rewrites the UDP checksum of an outer VXLAN frame built by `vxlan_frame` after an edit
/// (0 stays 0).
pub fn refresh_outer_udp_checksum(frame: &mut [u8]) {
    if frame[40..42] == [0, 0] {
        return;
    }
    frame[40] = 0;
    frame[41] = 0;
    let ip = ipv4_of(frame).to_vec();
    let udp = &ip[20..];
    let len = (udp.len() as u16).to_be_bytes();
    let pseudo = [&ip[12..20], &[0, 17], &len[..]].concat();
    let mut sum = !ones_sum(&[&pseudo, udp]);
    if sum == 0 {
        sum = 0xffff;
    }
    frame[40..42].copy_from_slice(&sum.to_be_bytes());
}

// ---------------------------------------------------------------------------------------------
// Checksums (independent implementation) and output checkers
// ---------------------------------------------------------------------------------------------

/// One's complement sum over the concatenation of `parts` (RFC 1071), folded.
pub fn ones_sum(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.concat();
    let mut acc: u32 = 0;
    for chunk in bytes.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        acc += u32::from(word);
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The IPv4 packet inside an Ethernet frame (header + payload up to the total length).
pub fn ipv4_of(frame: &[u8]) -> &[u8] {
    assert_eq!(&frame[12..14], &[0x08, 0x00], "not IPv4");
    let ip = &frame[14..];
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    &ip[..total]
}

pub fn ihl(ip: &[u8]) -> usize {
    ((ip[0] & 0x0f) as usize) * 4
}

pub fn ipv4_header_ok(ip: &[u8]) -> bool {
    ones_sum(&[&ip[..ihl(ip)]]) == 0xffff
}

/// The IPv4 transport checksum (ICMP: plain; UDP/TCP: with pseudo-header) verifies.
pub fn ipv4_l4_ok(ip: &[u8]) -> bool {
    let l4 = &ip[ihl(ip)..];
    match ip[9] {
        1 => ones_sum(&[l4]) == 0xffff,
        6 | 17 => {
            let len = (l4.len() as u16).to_be_bytes();
            let pseudo = [&ip[12..20], &[0, ip[9]], &len[..]].concat();
            ones_sum(&[&pseudo, l4]) == 0xffff
        }
        _ => true,
    }
}

/// The upper-layer checksum of an IPv6 packet whose upper layer starts at `l4` (offset in
/// `ip`) with protocol `next`, over the pseudo-header (RFC 8200 8.1).
pub fn ipv6_l4_ok(ip: &[u8], l4: usize, next: u8) -> bool {
    let end = 40 + u16::from_be_bytes([ip[4], ip[5]]) as usize;
    let body = &ip[l4..end];
    let len = (body.len() as u32).to_be_bytes();
    let pseudo = [&ip[8..40], &len[..], &[0, 0, 0, next]].concat();
    ones_sum(&[&pseudo, body]) == 0xffff
}

/// The IPv6 packet inside an Ethernet frame (header + payload length).
pub fn ipv6_of(frame: &[u8]) -> &[u8] {
    assert_eq!(&frame[12..14], &[0x86, 0xdd], "not IPv6");
    let ip = &frame[14..];
    let end = 40 + u16::from_be_bytes([ip[4], ip[5]]) as usize;
    &ip[..end]
}

/// Checks an emitted ICMPv4 error completely and returns ICMP bytes 4..8 (e.g. the MTU of
/// frag-needed in the last two). `original` is the offending frame as received.
#[allow(clippy::too_many_arguments)]
pub fn check_icmp4_error(
    emitted: &Emitted,
    port: usize,
    to_mac: [u8; 6],
    to_ip: [u8; 4],
    icmp_type: u8,
    code: u8,
    original: &[u8],
) -> [u8; 4] {
    assert_eq!(
        emitted.port,
        PortId(port as u16),
        "egress port of the error"
    );
    check_icmp4_error_frame(
        &emitted.frame,
        R[port],
        router_v4(port),
        to_mac,
        to_ip,
        icmp_type,
        code,
        original,
    )
}

/// Checks an ICMPv4 error frame (from `from_mac` / `from_ip` to `to_mac` / `to_ip`) and
/// returns ICMP bytes 4..8.
#[allow(clippy::too_many_arguments)]
pub fn check_icmp4_error_frame(
    frame: &[u8],
    from_mac: [u8; 6],
    from_ip: [u8; 4],
    to_mac: [u8; 6],
    to_ip: [u8; 4],
    icmp_type: u8,
    code: u8,
    original: &[u8],
) -> [u8; 4] {
    let (eth, _) = Ethernet2Header::from_slice(frame).expect("ethernet");
    assert_eq!(
        eth.destination, to_mac,
        "error goes back to the sender's MAC"
    );
    assert_eq!(eth.source, from_mac, "error comes from the port's MAC");
    let ip = ipv4_of(frame);
    let (header, _) = Ipv4Header::from_slice(ip).expect("ipv4 header");
    assert!(ipv4_header_ok(ip), "IPv4 header checksum of the error");
    assert_eq!(header.protocol, IpNumber::ICMP);
    assert_eq!(
        header.source, from_ip,
        "error source = ingress port address"
    );
    assert_eq!(header.destination, to_ip, "error destination = the sender");
    assert!(header.time_to_live >= 32);
    assert!(ipv4_l4_ok(ip), "ICMP checksum of the error");
    let icmp = &ip[ihl(ip)..];
    assert_eq!(icmp[0], icmp_type, "ICMP type");
    assert_eq!(icmp[1], code, "ICMP code");
    let quoted_ip = ipv4_of(original);
    let want = (ihl(quoted_ip) + 8).min(quoted_ip.len());
    assert!(icmp.len() - 8 >= want, "quote holds the header and 8 bytes");
    assert_eq!(
        &icmp[8..8 + want],
        &quoted_ip[..want],
        "quoted header and first 8 payload bytes, as received"
    );
    [icmp[4], icmp[5], icmp[6], icmp[7]]
}

/// Checks an emitted ICMPv6 error completely and returns ICMPv6 bytes 4..8.
#[allow(clippy::too_many_arguments)]
pub fn check_icmp6_error(
    emitted: &Emitted,
    port: usize,
    to_mac: [u8; 6],
    to_ip: [u8; 16],
    icmp_type: u8,
    code: u8,
    original: &[u8],
) -> [u8; 4] {
    assert_eq!(
        emitted.port,
        PortId(port as u16),
        "egress port of the error"
    );
    check_icmp6_error_frame(
        &emitted.frame,
        R[port],
        router_v6(port),
        to_mac,
        to_ip,
        icmp_type,
        code,
        original,
    )
}

/// Checks an ICMPv6 error frame (from `from_mac` / `from_ip` to `to_mac` / `to_ip`) and
/// returns ICMPv6 bytes 4..8.
#[allow(clippy::too_many_arguments)]
pub fn check_icmp6_error_frame(
    frame: &[u8],
    from_mac: [u8; 6],
    from_ip: [u8; 16],
    to_mac: [u8; 6],
    to_ip: [u8; 16],
    icmp_type: u8,
    code: u8,
    original: &[u8],
) -> [u8; 4] {
    let (eth, _) = Ethernet2Header::from_slice(frame).expect("ethernet");
    assert_eq!(
        eth.destination, to_mac,
        "error goes back to the sender's MAC"
    );
    assert_eq!(eth.source, from_mac, "error comes from the port's MAC");
    let ip = ipv6_of(frame);
    let (header, _) = Ipv6Header::from_slice(ip).expect("ipv6 header");
    assert_eq!(header.next_header, IpNumber::IPV6_ICMP);
    assert_eq!(
        header.source, from_ip,
        "error source = ingress port address"
    );
    assert_eq!(header.destination, to_ip, "error destination = the sender");
    assert!(ip.len() <= 1280, "ICMPv6 errors fit the minimum MTU");
    assert!(ipv6_l4_ok(ip, 40, 58), "ICMPv6 checksum of the error");
    let icmp = &ip[40..];
    assert_eq!(icmp[0], icmp_type, "ICMPv6 type");
    assert_eq!(icmp[1], code, "ICMPv6 code");
    let quoted = ipv6_of(original);
    let want = quoted.len().min(1280 - 48);
    assert_eq!(icmp.len() - 8, want, "quote as much as fits in 1280 bytes");
    assert_eq!(&icmp[8..], &quoted[..want], "quoted packet, as received");
    [icmp[4], icmp[5], icmp[6], icmp[7]]
}

/// Checks a frame forwarded to the neighbor of `port`: MACs rewritten, TTL one less, header
/// checksum valid, everything after the TTL/checksum unchanged.
pub fn check_forwarded_v4(frame: &[u8], original: &[u8], port: usize, next_mac: [u8; 6]) {
    check_forwarded_v4_macs(frame, original, R[port], next_mac);
}

/// Same, with the expected source MAC given.
pub fn check_forwarded_v4_macs(frame: &[u8], original: &[u8], src_mac: [u8; 6], next_mac: [u8; 6]) {
    assert_eq!(&frame[0..6], &next_mac, "destination MAC = next hop");
    assert_eq!(&frame[6..12], &src_mac, "source MAC = egress port");
    let ip = ipv4_of(frame);
    let before = ipv4_of(original);
    assert_eq!(ip.len(), before.len());
    assert_eq!(ip[8], before[8] - 1, "TTL decremented");
    assert!(ipv4_header_ok(ip), "IPv4 header checksum after forwarding");
    assert_eq!(&ip[..8], &before[..8]);
    assert_eq!(ip[9], before[9]);
    assert_eq!(&ip[12..], &before[12..], "addresses and payload unchanged");
    assert!(ipv4_l4_ok(ip), "transport checksum still valid");
}

/// Same for IPv6: hop limit one less, rest unchanged.
pub fn check_forwarded_v6(frame: &[u8], original: &[u8], port: usize, next_mac: [u8; 6]) {
    check_forwarded_v6_macs(frame, original, R[port], next_mac);
}

/// Same, with the expected source MAC given.
pub fn check_forwarded_v6_macs(frame: &[u8], original: &[u8], src_mac: [u8; 6], next_mac: [u8; 6]) {
    assert_eq!(&frame[0..6], &next_mac, "destination MAC = next hop");
    assert_eq!(&frame[6..12], &src_mac, "source MAC = egress port");
    let ip = ipv6_of(frame);
    let before = ipv6_of(original);
    assert_eq!(ip.len(), before.len());
    assert_eq!(ip[7], before[7] - 1, "hop limit decremented");
    assert_eq!(&ip[..7], &before[..7]);
    assert_eq!(&ip[8..], &before[8..], "addresses and payload unchanged");
}

/// Parses an emitted ARP request and returns (sender MAC, sender IP, target IP).
pub fn parse_arp(frame: &[u8]) -> (u16, [u8; 6], [u8; 4], [u8; 6], [u8; 4]) {
    let (eth, rest) = Ethernet2Header::from_slice(frame).expect("ethernet");
    assert_eq!(eth.ether_type, EtherType::ARP);
    let arp = ArpPacket::from_slice(rest).expect("arp");
    let eth_arp = arp.try_eth_ipv4().expect("ethernet/ipv4 arp");
    (
        arp.operation.0,
        eth_arp.sender_mac,
        eth_arp.sender_ipv4,
        eth_arp.target_mac,
        eth_arp.target_ipv4,
    )
}

/// An encapsulated frame, parsed by hand and checked for everything that does not depend on
/// the tunnel's settings: outer Ethernet type IPv4, IHL 5 and no options, valid header
/// checksum, protocol UDP, total length = the frame, not a fragment; UDP to 4789 from the
/// dynamic range with the right length, a valid checksum if not zero; VXLAN flags exactly I,
/// reserved bytes zero.
#[derive(Debug, Clone)]
pub struct Vxlan {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub ttl: u8,
    pub dont_fragment: bool,
    pub ident: u16,
    pub sport: u16,
    pub udp_checksum: u16,
    pub vni: u32,
    /// The inner Ethernet frame.
    pub inner: Vec<u8>,
}

pub fn parse_vxlan(frame: &[u8]) -> Vxlan {
    assert!(frame.len() >= VXLAN_OVERHEAD + 14, "runt VXLAN frame");
    assert_eq!(&frame[12..14], &[0x08, 0x00], "outer EtherType IPv4");
    let ip = &frame[14..];
    assert_eq!(ip[0], 0x45, "outer IPv4, IHL 5");
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    assert_eq!(total, frame.len() - 14, "outer total length = the frame");
    let ip = &ip[..total];
    assert!(ipv4_header_ok(ip), "outer IPv4 header checksum");
    let flags = u16::from_be_bytes([ip[6], ip[7]]);
    assert_eq!(
        flags & 0xbfff,
        0,
        "outer: no MF, no offset, reserved bit clear"
    );
    assert_eq!(ip[9], 17, "outer protocol UDP");
    let udp = &ip[20..];
    let sport = u16::from_be_bytes([udp[0], udp[1]]);
    assert!(
        sport >= 49152,
        "UDP source port {sport} in the dynamic range"
    );
    assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), VXLAN_PORT);
    assert_eq!(
        u16::from_be_bytes([udp[4], udp[5]]) as usize,
        udp.len(),
        "UDP length"
    );
    let udp_checksum = u16::from_be_bytes([udp[6], udp[7]]);
    if udp_checksum != 0 {
        assert!(ipv4_l4_ok(ip), "outer UDP checksum");
    }
    let vxlan = &udp[8..16];
    assert_eq!(vxlan[0], 0x08, "VXLAN flags: I only");
    assert_eq!(&vxlan[1..4], &[0, 0, 0], "VXLAN reserved");
    assert_eq!(vxlan[7], 0, "VXLAN reserved");
    Vxlan {
        dst_mac: frame[0..6].try_into().unwrap(),
        src_mac: frame[6..12].try_into().unwrap(),
        src: ip[12..16].try_into().unwrap(),
        dst: ip[16..20].try_into().unwrap(),
        ttl: ip[8],
        dont_fragment: flags & 0x4000 != 0,
        ident: u16::from_be_bytes([ip[4], ip[5]]),
        sport,
        udp_checksum,
        vni: u32::from_be_bytes([0, vxlan[4], vxlan[5], vxlan[6]]),
        inner: udp[16..].to_vec(),
    }
}

/// True if `frame` looks like a VXLAN packet (outer IPv4 without options, UDP to 4789).
pub fn is_vxlan(frame: &[u8]) -> bool {
    frame.len() >= VXLAN_OVERHEAD
        && frame[12..14] == [0x08, 0x00]
        && frame[14] == 0x45
        && frame[23] == 17
        && frame[36..38] == VXLAN_PORT.to_be_bytes()
}

// ---------------------------------------------------------------------------------------------
// Table snapshots and invariants
// ---------------------------------------------------------------------------------------------

/// Everything observable about the tables, with next hops by value (ids of re-created ECMP
/// groups may differ after an undo; what they point at may not).
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub generation: u64,
    pub ports: Vec<String>,
    pub vrfs: Vec<VrfId>,
    pub routes: Vec<(VrfId, IpPrefix, String)>,
    pub next_hops: usize,
    pub references: BTreeMap<String, u32>,
    pub neighbors: Vec<String>,
    /// What decapsulation sees: VTEPs by uplink, and the tunnel each VNI resolves to.
    pub decap: Vec<String>,
}

fn value(tables: &Tables, next_hop: &NextHop) -> String {
    match next_hop {
        NextHop::Ecmp { members } => {
            let members: Vec<String> = members
                .iter()
                .map(|m| format!("{:?}", tables.next_hop(*m)))
                .collect();
            format!("Ecmp{members:?}")
        }
        other => format!("{other:?}"),
    }
}

pub fn snapshot(tables: &Tables) -> Snapshot {
    let vrfs: Vec<VrfId> = tables.vrf_ids().collect();
    let mut routes = Vec::new();
    for vrf in &vrfs {
        for (prefix, next_hop) in tables.routes(*vrf) {
            routes.push((*vrf, prefix, value(tables, &next_hop)));
        }
    }
    let references = tables
        .next_hops()
        .iter()
        .map(|(id, nh)| (value(tables, nh), tables.next_hops().references(id)))
        .collect();
    let mut neighbors: Vec<String> = tables
        .neighbors()
        .iter()
        .map(|(key, n)| format!("{key:?} {n:?}"))
        .collect();
    neighbors.sort();
    let mut decap = Vec::new();
    let candidates = vtep_candidates(tables);
    for vrf in tables.vrf_ids() {
        for addr in &candidates {
            if tables.is_vtep(vrf, *addr) {
                decap.push(format!("vtep {vrf} {addr}"));
            }
        }
    }
    for port in tables.ports() {
        if let Some(params) = port.vxlan() {
            let underlay = tables.port(params.uplink).map(|p| p.vrf);
            decap.push(format!(
                "vni {} -> {:?}",
                params.vni,
                underlay.and_then(|vrf| {
                    tables
                        .tunnel_for(vrf, params.local, params.vni)
                        .map(|p| p.id)
                })
            ));
        }
    }
    Snapshot {
        decap,
        generation: tables.generation(),
        ports: tables.ports().map(|p| format!("{p:?}")).collect(),
        vrfs,
        routes,
        next_hops: tables.next_hops().len(),
        references,
        neighbors,
    }
}

/// Every IPv4 address of every port and every tunnel's local VTEP.
fn vtep_candidates(tables: &Tables) -> Vec<Ipv4Addr> {
    let mut candidates: Vec<Ipv4Addr> = tables
        .ports()
        .flat_map(|p| p.addresses.iter())
        .filter_map(|a| match a.addr {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
        .chain(tables.ports().filter_map(|p| p.vxlan().map(|v| v.local)))
        .collect();
    candidates.sort();
    candidates.dedup();
    candidates
}

/// The decapsulation index agrees with the tunnel ports: an address is a VTEP in a VRF
/// exactly when a tunnel has it as local VTEP on an uplink in that VRF, and every tunnel is
/// found by its (underlay VRF, VTEP, VNI).
pub fn check_tunnel_index(tables: &Tables) {
    let candidates = vtep_candidates(tables);
    let underlay_of = |port: PortId| tables.port(port).map(|p| p.vrf);
    for vrf in tables.vrf_ids() {
        for addr in &candidates {
            let expected = tables.ports().any(|t| {
                t.vxlan()
                    .is_some_and(|v| underlay_of(v.uplink) == Some(vrf) && v.local == *addr)
            });
            assert_eq!(
                tables.is_vtep(vrf, *addr),
                expected,
                "is_vtep({vrf}, {addr})"
            );
        }
    }
    for port in tables.ports() {
        if let Some(params) = port.vxlan() {
            let underlay = underlay_of(params.uplink).expect("a tunnel's uplink exists");
            assert_eq!(
                tables
                    .tunnel_for(underlay, params.local, params.vni)
                    .map(|p| p.id),
                Some(port.id),
                "tunnel_for of {}",
                port.name
            );
        }
    }
}

/// Reference counts equal the uses: one per route plus one per ECMP group membership; no
/// next hop is alive without a use; every route points at a live next hop.
pub fn check_references(tables: &Tables) {
    let mut uses: BTreeMap<NextHopId, u32> = BTreeMap::new();
    for vrf in tables.vrf_ids() {
        let table = tables.vrf(vrf).expect("vrf");
        for (prefix, _) in tables.routes(vrf) {
            let id = table.get(prefix).expect("route id");
            *uses.entry(id).or_default() += 1;
        }
        assert_eq!(
            tables.routes(vrf).len(),
            table.route_count(),
            "every route resolves to a live next hop"
        );
    }
    for (_, next_hop) in tables.next_hops().iter() {
        if let NextHop::Ecmp { members } = next_hop {
            for member in members.iter() {
                *uses.entry(*member).or_default() += 1;
            }
        }
    }
    let live: Vec<NextHopId> = tables.next_hops().iter().map(|(id, _)| id).collect();
    assert_eq!(live.len(), tables.next_hops().len());
    for id in &live {
        assert_eq!(
            tables.next_hops().references(*id),
            uses.get(id).copied().unwrap_or(0),
            "references of {id} = {:?}",
            tables.next_hop(*id)
        );
    }
    for id in uses.keys() {
        assert!(live.contains(id), "{id} used but not alive");
    }
    check_tunnel_index(tables);
}
