//! Property tests: arbitrary and mutated frames through `Pipeline::process` on the lab tables,
//! and random transactions against `Tables::apply_batch` (with traffic in between).
//!
//! Invariants checked on every batch:
//! - no panic; every packet gets exactly one verdict (a sentinel the pipeline never writes
//!   must be gone);
//! - per drop reason, the counter grew by exactly the number of packets dropped with it, so
//!   drops + transmits + consumed == packets;
//! - every held packet is eventually released or dropped as `neighbor-unresolved`, once;
//! - what leaves the router is sane: emitted frames come from the egress port's MAC, fit the
//!   egress MTU, IPv4 headers of transmitted and emitted packets have valid checksums, and
//!   ICMP/ICMPv6 messages the router builds have valid checksums.
//!
//! - packets encapsulated by the router (VXLAN from one of our VTEPs) have a well-formed outer
//!   header (lengths, VXLAN flags, a valid UDP checksum if any) and a valid inner IPv4
//!   header checksum; nothing leaves raw on a tunnel port unless it was received there.
//!
//! The traffic tests run on the VXLAN lab (the lab plus an overlay VRF with a pod port and a
//! tunnel), with seeds and generated frames that go into and come out of the tunnel.
//!
//! Case counts are kept small so the file runs in a few seconds in a debug build.

mod common;

use common::*;
use pipelines::tables::{InterfaceAddress, RouteTarget};
use pipelines::{DropReason, IpPrefix, PortId, Stage, TableOp, Tables, Verdict, VrfId};
use proptest::prelude::*;
use proptest::sample::Index;

// --- batch invariants ---------------------------------------------------------------------------

fn ip_len_of(frame: &[u8]) -> Option<usize> {
    match frame.get(12..14)? {
        [0x08, 0x00] => {
            let ip = frame.get(14..)?;
            Some(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]) as usize)
        }
        [0x86, 0xdd] => {
            let ip = frame.get(14..)?;
            Some(40 + u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]) as usize)
        }
        _ => None,
    }
}

fn is_router_address_v4(tables: &Tables, addr: &[u8]) -> bool {
    tables.ports().any(|p| {
        p.addresses
            .iter()
            .any(|a| a.addr == std::net::IpAddr::V4(<[u8; 4]>::try_from(addr).unwrap().into()))
    })
}

/// Checks a frame leaving the router on `port`.
fn check_outgoing(tables: &Tables, port: PortId, frame: &[u8], built_by_router: bool) {
    let egress = tables.port(port).expect("egress port exists");
    assert!(frame.len() >= 14, "runt frame out of {port}");
    assert_eq!(&frame[6..12], &egress.mac.0, "source MAC of {port}");
    if let Some(ip_len) = ip_len_of(frame) {
        assert!(
            ip_len <= egress.mtu as usize,
            "{ip_len}-byte packet out of {port} (MTU {})",
            egress.mtu
        );
        assert!(14 + ip_len <= frame.len());
    }
    if frame[12..14] == [0x08, 0x00] {
        let ip = ipv4_of(frame);
        assert!(ipv4_header_ok(ip), "IPv4 header checksum out of {port}");
        if built_by_router && ip[9] == 1 && is_router_address_v4(tables, &ip[12..16]) {
            assert!(ipv4_l4_ok(ip), "ICMP checksum of a router message");
        }
    }
    if built_by_router && frame[12..14] == [0x86, 0xdd] {
        let ip = ipv6_of(frame);
        let from_router = tables.ports().any(|p| {
            ip[8..24] == p.link_local.octets()
                || p.addresses.iter().any(|a| match a.addr {
                    std::net::IpAddr::V6(v6) => ip[8..24] == v6.octets(),
                    _ => false,
                })
        });
        if from_router && ip[6] == 58 && ip[40] != 129 {
            assert!(
                ipv6_l4_ok(ip, 40, 58),
                "ICMPv6 checksum of a router message"
            );
            assert!(ip.len() <= 1280 || ip[40] >= 128);
        }
    }
    if frame[12..14] == [0x08, 0x06] && !built_by_router {
        assert_eq!(parse_arp(frame).0, 2, "only ARP replies are sent in place");
    }
}

/// True if `frame` is VXLAN sourced from one of our VTEPs.
fn from_our_vtep(tables: &Tables, frame: &[u8]) -> bool {
    is_vxlan(frame)
        && tables
            .ports()
            .any(|p| p.vxlan().is_some_and(|v| frame[26..30] == v.local.octets()))
}

/// Checks a packet the router encapsulated: the outer header (`parse_vxlan` asserts its
/// structure), a known VNI, and the inner frame as it would leave the tunnel port.
fn check_encapsulated(tables: &Tables, frame: &[u8], built_by_router: bool) {
    let outer = parse_vxlan(frame);
    let tunnel = tables
        .ports()
        .find(|p| p.vxlan().is_some_and(|v| v.vni == outer.vni))
        .unwrap_or_else(|| panic!("VNI {} of no tunnel", outer.vni));
    assert_eq!(
        &outer.inner[6..12],
        &tunnel.mac.0,
        "inner source MAC = the tunnel's"
    );
    if let Some(ip_len) = ip_len_of(&outer.inner) {
        assert!(14 + ip_len <= outer.inner.len());
        assert!(
            ip_len <= tunnel.mtu as usize,
            "{ip_len}-byte packet into {} (MTU {})",
            tunnel.name,
            tunnel.mtu
        );
    }
    check_outgoing(tables, tunnel.id, &outer.inner, built_by_router);
}

/// Checks what leaves on `port`: an encapsulated packet outside and inside, or a plain one.
/// `received` is the frame as it arrived when this is a packet transmitted in place.
fn check_leaving(
    tables: &Tables,
    port: PortId,
    frame: &[u8],
    received: Option<&[u8]>,
    raw_on_tunnel_allowed: bool,
) {
    let egress = tables.port(port).expect("egress port exists");
    if egress.vxlan().is_some() {
        assert!(
            raw_on_tunnel_allowed,
            "a frame left raw on tunnel port {}: {frame:02x?}",
            egress.name
        );
    }
    check_outgoing(tables, port, frame, received.is_none());
    // A VXLAN packet from a VTEP forwarded as it came (source spoofed) is not ours.
    let forwarded_as_is = received.is_some_and(|r| is_vxlan(r) && r[26..30] == frame[26..30]);
    if from_our_vtep(tables, frame) && !forwarded_as_is {
        check_encapsulated(tables, frame, received.is_none());
    }
}

/// Runs one batch and checks the per-batch invariants.
fn run_checked(lab: &mut Lab, frames: &[(u16, Vec<u8>)], now_ns: u64) {
    let before = lab.pipeline.counters();
    let rx_before: u64 = before.ports.iter().map(|p| p.rx_packets).sum();
    let batch = lab.batch_at(frames, now_ns); // asserts every verdict is set
    let after = lab.pipeline.counters();
    assert_eq!(batch.verdicts.len(), frames.len());
    for reason in DropReason::ALL {
        let dropped = batch
            .verdicts
            .iter()
            .filter(|v| **v == Verdict::Drop(*reason))
            .count() as u64;
        let delta = after.drops_for(*reason) - before.drops_for(*reason);
        if *reason == DropReason::NeighborUnresolved {
            // Held packets timing out during this batch are counted here as well.
            assert!(delta >= dropped);
        } else {
            assert_eq!(delta, dropped, "counter {} vs verdicts", reason.name());
        }
    }
    let drops = batch
        .verdicts
        .iter()
        .filter(|v| matches!(v, Verdict::Drop(_)))
        .count();
    let transmits = batch
        .verdicts
        .iter()
        .filter(|v| matches!(v, Verdict::Transmit(_)))
        .count();
    let consumed = batch
        .verdicts
        .iter()
        .filter(|v| **v == Verdict::Consumed)
        .count();
    assert_eq!(
        drops + transmits + consumed,
        frames.len(),
        "{:?}",
        batch.verdicts
    );
    // Decapsulated packets are received twice: on the uplink, then on the tunnel port.
    let rx_after: u64 = after.ports.iter().map(|p| p.rx_packets).sum();
    let decapsulated =
        after.stage(Stage::VxlanInput).packets - before.stage(Stage::VxlanInput).packets;
    let tunnel_drops: u64 = [
        DropReason::VxlanTruncated,
        DropReason::VxlanBadFlags,
        DropReason::VxlanUnknownVni,
        DropReason::VxlanBadChecksum,
    ]
    .iter()
    .map(|r| after.drops_for(*r) - before.drops_for(*r))
    .sum();
    assert_eq!(
        rx_after - rx_before,
        frames.len() as u64 + decapsulated - tunnel_drops
    );
    // Frames received on a tunnel port directly (the port layer never does that; the fuzz
    // does) may be answered there.
    let on_tunnel = frames.iter().any(|(port, _)| {
        lab.tables
            .port(PortId(*port))
            .is_some_and(|p| p.vxlan().is_some())
    });
    for ((verdict, frame), (_, received)) in batch.verdicts.iter().zip(&batch.frames).zip(frames) {
        if let Verdict::Transmit(port) = verdict {
            check_leaving(&lab.tables, *port, frame, Some(received), on_tunnel);
        }
    }
    for emitted in &batch.emitted {
        check_leaving(&lab.tables, emitted.port, &emitted.frame, None, on_tunnel);
    }
}

/// Ticks past the last probe: every held packet must be gone, released or counted as
/// `neighbor-unresolved` exactly once.
fn drain_held(lab: &mut Lab, now_ns: u64) {
    let held = lab.pipeline.held_packets() as u64;
    let unresolved = lab.drops(DropReason::NeighborUnresolved);
    let mut released = 0;
    for step in 1..=5 {
        for emitted in lab.tick(now_ns + step * 1000 * MS) {
            check_leaving(&lab.tables, emitted.port, &emitted.frame, None, false);
            let frame = &emitted.frame;
            let arp = frame[12..14] == [0x08, 0x06];
            let solicitation = frame[12..14] == [0x86, 0xdd] && frame[20] == 58 && frame[54] == 135;
            if !arp && !solicitation {
                released += 1;
            }
        }
    }
    assert_eq!(lab.pipeline.held_packets(), 0, "held packets never expired");
    let dropped = lab.drops(DropReason::NeighborUnresolved) - unresolved;
    assert_eq!(
        released + dropped,
        held,
        "released {released} + dropped {dropped}"
    );
}

// --- seed frames ----------------------------------------------------------------------------------

/// Valid frames covering every stage, with the port they arrive on.
fn seeds() -> Vec<(u16, Vec<u8>)> {
    let p = b"seed payload 0123456789";
    let big: Vec<u8> = (0..1200u32).map(|i| i as u8).collect();
    let mut opts = ipv4_header(H0_V4, [192, 168, 1, 5], 64, false);
    opts.options = [1u8, 1, 1, 0].into();
    let mut first_fragment = ipv4_header(H0_V4, [203, 0, 113, 5], 9, false);
    first_fragment.more_fragments = true;
    let mut seeds = vec![
        (0, udp4(H0, R[0], H0_V4, [192, 168, 5, 5], 64, p)),
        (0, udp4(H0, R[0], H0_V4, [198, 51, 100, 3], 64, p)),
        (0, udp4(H0, R[0], H0_V4, [10, 0, 3, 77], 64, p)),
        (0, udp4(H0, R[0], H0_V4, [8, 8, 8, 8], 2, p)),
        (0, udp4(H0, R[0], H0_V4, [172, 17, 0, 1], 64, p)),
        (0, udp4(H0, R[0], H0_V4, router_v4(0), 64, p)),
        (0, udp4_with_header(H0, R[0], opts, p)),
        (
            0,
            udp4_with_header(
                H0,
                R[0],
                ipv4_header(H0_V4, [203, 0, 113, 5], 64, false),
                &big,
            ),
        ),
        (0, udp4_with_header(H0, R[0], first_fragment, &big)),
        (0, tcp4(H0, R[0], H0_V4, [192, 168, 1, 5], 1, p)),
        (0, icmp4_echo(H0, R[0], H0_V4, router_v4(2), 64, 1, 2, p)),
        (0, icmp4_echo(H0, R[0], H0_V4, [192, 168, 1, 1], 1, 1, 2, p)),
        (0, arp(H0, BROADCAST, 1, H0, H0_V4, [0; 6], router_v4(0))),
        (
            3,
            arp(N[3], R[3], 2, N[3], [10, 0, 3, 77], R[3], router_v4(3)),
        ),
        (
            3,
            arp(
                N[3],
                BROADCAST,
                1,
                N[3],
                [10, 0, 3, 2],
                [0; 6],
                [10, 0, 3, 2],
            ),
        ),
        (
            0,
            udp6(
                H0,
                R[0],
                H0_V6,
                v6b([0x2001, 0xdb8, 0x100, 1, 0, 0, 0, 5]),
                64,
                p,
            ),
        ),
        (
            0,
            udp6(
                H0,
                R[0],
                H0_V6,
                v6b([0x2001, 0xdb8, 3, 0, 0, 0, 0, 0x77]),
                64,
                p,
            ),
        ),
        (
            0,
            udp6(
                H0,
                R[0],
                H0_V6,
                v6b([0x2001, 0xdb8, 0x200, 0, 0, 0, 0, 1]),
                9,
                &big,
            ),
        ),
        (0, udp6(H0, R[0], H0_V6, router_v6(1), 1, p)),
        (0, icmp6_echo(H0, R[0], H0_V6, router_v6(0), 64, 3, 4, p)),
        (0, neighbor_solicit(H0, H0_V6, router_v6(0), 255, Some(H0))),
        (
            3,
            neighbor_advert(
                N[3],
                R[3],
                v6b([0x2001, 0xdb8, 3, 0, 0, 0, 0, 0x77]),
                router_v6(3),
                N[3],
            ),
        ),
        (
            0,
            ethernet(
                H0,
                R[0],
                0x86dd,
                &ipv6_raw(
                    H0_V6,
                    v6b([0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 5]),
                    64,
                    0,
                    &[
                        &[43u8, 0, 1, 4, 0, 0, 0, 0][..],
                        &[44, 0, 253, 0, 0, 0, 0, 0],
                        &[17, 0, 0, 1, 0, 0, 0, 1],
                        &[0x9c, 0x40, 0x13, 0x89, 0, 16, 0, 0],
                        &[7u8; 8],
                    ]
                    .concat(),
                ),
            ),
        ),
    ];
    seeds.extend(vxlan_seeds());
    seeds
}

/// Frames into and out of the tunnel of the VXLAN lab.
fn vxlan_seeds() -> Vec<(u16, Vec<u8>)> {
    let p = b"vxlan seed payload 0123456789";
    let big: Vec<u8> = (0..1460u32).map(|i| (i * 3) as u8).collect();
    let remote_pod_in = |ttl: u8| udp4(REMOTE_MAC, TUNNEL_MAC, REMOTE_POD_V4, POD_V4, ttl, p);
    let with_checksum = |inner: &[u8]| {
        vxlan_frame(
            N[1],
            R[1],
            REMOTE_VTEP,
            VTEP,
            50000,
            vxlan_header(0x08, VNI),
            inner,
            true,
        )
    };
    vec![
        // Encapsulation: resolved, behind the gateway, unresolved, unreachable, TTL 1, IPv6,
        // too big with DF, too big without DF.
        (P5, udp4(POD, R5, POD_V4, REMOTE_POD_V4, 64, p)),
        (P5, udp4(POD, R5, POD_V4, [10, 244, 3, 3], 64, p)),
        (P5, udp4(POD, R5, POD_V4, [10, 244, 4, 4], 64, p)),
        (P5, udp4(POD, R5, POD_V4, [10, 244, 5, 5], 64, p)),
        (P5, tcp4(POD, R5, POD_V4, REMOTE_POD_V4, 1, p)),
        (P5, udp6(POD, R5, POD_V6, REMOTE_POD_V6, 64, p)),
        (P5, udp4(POD, R5, POD_V4, REMOTE_POD_V4, 64, &big)),
        (
            P5,
            udp4_with_header(POD, R5, ipv4_header(POD_V4, REMOTE_POD_V4, 64, false), &big),
        ),
        (P5, udp6(POD, R5, POD_V6, REMOTE_POD_V6, 64, &big)),
        // Decapsulation: to the pod, with a checksum, echo to the router, TTL 1, hairpin,
        // IPv6, ARP, ND, from a VTEP with no underlay route.
        (1, from_remote_vtep(&remote_pod_in(64))),
        (1, with_checksum(&remote_pod_in(64))),
        (
            1,
            from_remote_vtep(&icmp4_echo(
                REMOTE_MAC,
                TUNNEL_MAC,
                REMOTE_POD_V4,
                P5_V4,
                64,
                1,
                2,
                p,
            )),
        ),
        (1, from_remote_vtep(&remote_pod_in(1))),
        (
            1,
            from_remote_vtep(&udp4(
                REMOTE_MAC,
                TUNNEL_MAC,
                REMOTE_POD_V4,
                [10, 244, 4, 4],
                64,
                p,
            )),
        ),
        (
            1,
            from_remote_vtep(&udp6(REMOTE_MAC, TUNNEL_MAC, REMOTE_POD_V6, POD_V6, 64, p)),
        ),
        (
            1,
            from_remote_vtep(&arp(
                REMOTE_MAC,
                BROADCAST,
                1,
                REMOTE_MAC,
                [10, 244, 2, 0],
                [0; 6],
                P5_V4,
            )),
        ),
        (
            1,
            from_remote_vtep(&neighbor_solicit(
                REMOTE_MAC,
                REMOTE_POD_V6,
                P5_V6,
                255,
                Some(REMOTE_MAC),
            )),
        ),
        (
            1,
            vxlan_frame(
                N[1],
                R[1],
                UNREACHABLE_VTEP,
                VTEP,
                50000,
                vxlan_header(0x08, VNI),
                &remote_pod_in(1),
                false,
            ),
        ),
    ]
}

#[derive(Clone, Debug)]
enum Mutation {
    Xor(Index, u8),
    Set(Index, u8),
    /// Mutate a byte among the first 112 (headers, inner ones of VXLAN frames included).
    Header(u8, u8),
    Truncate(Index),
    Extend(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 1u8..=255).prop_map(|(i, x)| Mutation::Xor(i, x)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, v)| Mutation::Set(i, v)),
        (0u8..112, any::<u8>()).prop_map(|(i, v)| Mutation::Header(i, v)),
        any::<Index>().prop_map(Mutation::Truncate),
        prop::collection::vec(any::<u8>(), 1..64).prop_map(Mutation::Extend),
    ]
}

fn apply_mutation(frame: &mut Vec<u8>, mutation: &Mutation) {
    match mutation {
        Mutation::Xor(i, x) if !frame.is_empty() => {
            let at = i.index(frame.len());
            frame[at] ^= x;
        }
        Mutation::Set(i, v) if !frame.is_empty() => {
            let at = i.index(frame.len());
            frame[at] = *v;
        }
        Mutation::Header(i, v) => {
            if let Some(byte) = frame.get_mut(*i as usize) {
                *byte = *v;
            }
        }
        Mutation::Truncate(i) => {
            let len = i.index(frame.len() + 1);
            frame.truncate(len);
        }
        Mutation::Extend(bytes) => frame.extend_from_slice(bytes),
        _ => {}
    }
}

/// Recomputes the IPv4 header checksum when the header is intact enough to have one, so that
/// mutations get past checksum verification and reach the later stages.
fn fix_ipv4_checksum(frame: &mut [u8]) {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] {
        return;
    }
    let header_len = ((frame[14] & 0x0f) as usize) * 4;
    if header_len < 20 || frame.len() < 14 + header_len {
        return;
    }
    // A VXLAN frame: the inner IPv4 header, then the outer UDP checksum if there is one.
    if header_len == 20 && is_vxlan(frame) {
        if let Some(inner) = frame.get_mut(50..) {
            fix_ipv4_checksum(inner);
        }
        let total = u16::from_be_bytes([frame[16], frame[17]]) as usize;
        if frame[40..42] != [0, 0] && total >= 28 && 14 + total <= frame.len() {
            frame[40] = 0;
            frame[41] = 0;
            let ip = &frame[14..14 + total];
            let len = ((total - 20) as u16).to_be_bytes();
            let pseudo = [&ip[12..20], &[0, 17], &len[..]].concat();
            let sum = match !ones_sum(&[&pseudo, &ip[20..]]) {
                0 => 0xffff,
                sum => sum,
            };
            frame[40..42].copy_from_slice(&sum.to_be_bytes());
        }
    }
    let ip = &mut frame[14..14 + header_len];
    ip[10] = 0;
    ip[11] = 0;
    let sum = !ones_sum(&[ip]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
}

/// The router MAC a frame to `port` is addressed to (ports of the VXLAN lab).
fn router_mac(port: u16) -> [u8; 6] {
    match port {
        0..=4 => R[port as usize],
        P5 => R5,
        TUNNEL => TUNNEL_MAC,
        _ => R[0],
    }
}

/// An inner frame for a VXLAN packet: a valid packet of the overlay or random bytes behind a
/// plausible Ethernet header.
fn inner_frame() -> impl Strategy<Value = Vec<u8>> {
    let p = b"inner";
    let valid = prop::sample::select(vec![
        udp4(REMOTE_MAC, TUNNEL_MAC, REMOTE_POD_V4, POD_V4, 64, p),
        udp4(REMOTE_MAC, TUNNEL_MAC, REMOTE_POD_V4, POD_V4, 1, p),
        udp4(
            REMOTE_MAC,
            TUNNEL_MAC,
            REMOTE_POD_V4,
            [10, 244, 3, 1],
            64,
            p,
        ),
        udp4(REMOTE_MAC, TUNNEL_MAC, REMOTE_POD_V4, [10, 9, 9, 9], 64, p),
        icmp4_echo(REMOTE_MAC, TUNNEL_MAC, REMOTE_POD_V4, P5_V4, 64, 1, 1, p),
        udp6(REMOTE_MAC, TUNNEL_MAC, REMOTE_POD_V6, POD_V6, 64, p),
        udp6(REMOTE_MAC, TUNNEL_MAC, REMOTE_POD_V6, POD_V6, 1, p),
        arp(
            REMOTE_MAC,
            BROADCAST,
            1,
            REMOTE_MAC,
            [10, 244, 2, 0],
            [0; 6],
            P5_V4,
        ),
    ]);
    let random = (
        prop::sample::select(vec![
            TUNNEL_MAC,
            REMOTE_MAC,
            BROADCAST,
            [0x33, 0x33, 0xff, 0, 0, 1],
            [0x0a, 1, 2, 3, 4, 5],
        ]),
        prop_oneof![
            Just(0x0800u16),
            Just(0x86dd),
            Just(0x0806),
            Just(0x8100),
            any::<u16>()
        ],
        prop::collection::vec(any::<u8>(), 0..120),
    )
        .prop_map(|(dst_mac, ethertype, mut body)| {
            if let Some(first) = body.first_mut() {
                match ethertype {
                    0x0800 => *first = 0x45,
                    0x86dd => *first = 0x60 | (*first & 0x0f),
                    _ => {}
                }
            }
            ethernet(REMOTE_MAC, dst_mac, ethertype, &body)
        });
    prop_oneof![
        2 => (valid, prop::collection::vec(mutation(), 0..3)).prop_map(|(mut frame, ms)| {
            for m in &ms {
                apply_mutation(&mut frame, m);
            }
            fix_ipv4_checksum(&mut frame);
            frame
        }),
        2 => random,
        1 => prop::collection::vec(any::<u8>(), 0..40),
    ]
}

/// A VXLAN packet with a valid outer header (usually from N1 to our VTEP on p1), a VXLAN
/// header that is usually right, and an inner frame from `inner_frame`.
fn vxlan_frame_strategy() -> impl Strategy<Value = (u16, Vec<u8>)> {
    let header = prop_oneof![
        4 => Just(vxlan_header(0x08, VNI)),
        1 => prop::sample::select(vec![0u32, 1, 101, 0xff_ffff]).prop_map(|v| vxlan_header(0x08, v)),
        2 => any::<[u8; 8]>(),
    ];
    (
        prop_oneof![8 => Just(1u16), 1 => 0u16..7],
        prop_oneof![
            6 => Just(REMOTE_VTEP),
            1 => Just(FAR_VTEP),
            1 => Just(UNRESOLVED_VTEP),
            1 => Just(UNREACHABLE_VTEP),
        ],
        prop_oneof![8 => Just(VTEP), 1 => Just([10, 0, 3, 2])],
        header,
        inner_frame(),
        any::<bool>(),
        prop::option::weighted(0.15, any::<u16>()),
    )
        .prop_map(|(port, src, dst, header, inner, checksum, udp_len)| {
            let mut frame = vxlan_frame(
                N[1],
                router_mac(port),
                src,
                dst,
                49152 + inner.len() as u16,
                header,
                &inner,
                checksum,
            );
            if let Some(len) = udp_len {
                frame[38..40].copy_from_slice(&len.to_be_bytes());
                fix_ipv4_checksum(&mut frame);
            }
            (port, frame)
        })
}

/// A frame built around random bytes: usually a plausible Ethernet header (our MAC or
/// broadcast, a known EtherType) so that the random part reaches the IP and ARP parsers.
fn arbitrary_frame() -> impl Strategy<Value = (u16, Vec<u8>)> {
    let header = (
        0u16..7,
        prop_oneof![Just(0u8), Just(1u8), Just(2u8)],
        prop_oneof![
            Just(0x0800u16),
            Just(0x86dd),
            Just(0x0806),
            Just(0x8100),
            any::<u16>()
        ],
        prop::collection::vec(any::<u8>(), 0..160),
    )
        .prop_map(|(port, dst, ethertype, body)| {
            let dst_mac = match dst {
                0 => router_mac(port),
                1 => BROADCAST,
                _ => [0x33, 0x33, 0xff, 0, 0, 1],
            };
            let mut body = body;
            // Bias the first nibble towards the right IP version.
            if let Some(first) = body.first_mut() {
                match ethertype {
                    0x0800 => *first = 0x40 | (*first & 0x0f),
                    0x86dd => *first = 0x60 | (*first & 0x0f),
                    _ => {}
                }
            }
            (port, ethernet(H0, dst_mac, ethertype, &body))
        });
    prop_oneof![
        3 => header,
        2 => vxlan_frame_strategy(),
        1 => (0u16..7, prop::collection::vec(any::<u8>(), 0..100)),
    ]
}

fn mutated_frame() -> impl Strategy<Value = (u16, Vec<u8>)> {
    let count = seeds().len();
    (
        0..count,
        prop::collection::vec(mutation(), 0..4),
        any::<bool>(),
        prop::option::weighted(0.1, 0u16..7),
    )
        .prop_map(|(seed, mutations, fix, port)| {
            let (seed_port, mut frame) = seeds().swap_remove(seed);
            for m in &mutations {
                apply_mutation(&mut frame, m);
            }
            if fix {
                fix_ipv4_checksum(&mut frame);
            }
            (port.unwrap_or(seed_port), frame)
        })
}

/// Small by default (debug builds, shared CPUs); `PROPTEST_CASES=N` runs a longer hunt.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(96),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_frames_never_break_the_pipeline(
        batches in prop::collection::vec(prop::collection::vec(arbitrary_frame(), 1..24), 1..4)
    ) {
        let mut lab = Lab::vxlan();
        for (i, batch) in batches.iter().enumerate() {
            run_checked(&mut lab, batch, T0 + i as u64 * 10 * MS);
        }
        drain_held(&mut lab, T0);
    }

    #[test]
    fn mutated_frames_never_break_the_pipeline(
        batches in prop::collection::vec(prop::collection::vec(mutated_frame(), 1..24), 1..4),
        rate_limited in any::<bool>(),
    ) {
        let mut config = lab_config();
        if rate_limited {
            config.icmp_errors_per_sec = 5;
            config.icmp_errors_burst = 3;
        }
        let mut lab = Lab::vxlan_with(lab_vxlan_params(), config);
        for (i, batch) in batches.iter().enumerate() {
            run_checked(&mut lab, batch, T0 + i as u64 * 400 * MS);
        }
        drain_held(&mut lab, T0 + 2000 * MS);
    }
}

proptest! {
    #![proptest_config(config())]

    /// The same traffic with H0's subnets masqueraded out of p1 and p3, and Services on the
    /// destinations the generator uses (a UDP VIP with a remote and a hairpin backend, a TCP
    /// VIP without backends, a node port): translated packets keep every invariant (valid
    /// headers and checksums), replies and refusals included.
    #[test]
    fn mutated_frames_through_masquerade_never_break_the_pipeline(
        batches in prop::collection::vec(prop::collection::vec(mutated_frame(), 1..24), 1..4),
        ports in (1u16..=65535, 0u16..64),
        affinity in prop::option::of(1u32..5),
    ) {
        let mut lab = Lab::vxlan();
        let ops = nat_ops(ports, affinity);
        lab.apply(&ops);
        for (i, batch) in batches.iter().enumerate() {
            run_checked(&mut lab, batch, T0 + i as u64 * 400 * MS);
        }
        drain_held(&mut lab, T0 + 2000 * MS);
        prop_assert!(lab.pipeline.conntrack().check_consistency().is_ok());
    }
}

/// H0's subnets masqueraded out of p1 and p3 (source ports `low..=low + width` from
/// `ports`), Services on the destinations the generator uses (a UDP VIP with a remote and a
/// hairpin backend, a TCP VIP without backends, a node port), and ACLs on p2 and p3.
fn nat_ops(ports: (u16, u16), affinity: Option<u32>) -> Vec<TableOp> {
    let low = ports.0.min(65535 - ports.1);
    let mut ops = Vec::new();
    for out_port in [1u16, 3] {
        for source in ["10.0.0.0/24", "2001:db8::/64"] {
            ops.push(TableOp::AddSnat {
                rule: pipelines::tables::SnatRule {
                    vrf: VrfId(0),
                    source: source.parse().expect("prefix"),
                    out_port: PortId(out_port),
                    to: None,
                    ports: (low, low + ports.1),
                },
            });
        }
    }
    use pipelines::tables::{Backend, Frontend, L4Protocol, Service, ServiceKey};
    let service = |frontend, protocol, backends: Vec<([u8; 4], u16)>| TableOp::AddService {
        service: Service {
            key: ServiceKey {
                vrf: VrfId(0),
                frontend,
                protocol,
            },
            backends: backends
                .into_iter()
                .map(|(a, port)| Backend {
                    addr: ip4(a),
                    port,
                    weight: 1,
                })
                .collect(),
            affinity_secs: affinity,
        },
    };
    ops.push(service(
        Frontend::Vip {
            addr: ip4([192, 168, 5, 5]),
            port: DPORT,
        },
        L4Protocol::Udp,
        vec![([10, 0, 2, 2], 53), (H0_V4, 53)],
    ));
    ops.push(service(
        Frontend::Vip {
            addr: ip4([192, 168, 1, 5]),
            port: 80,
        },
        L4Protocol::Tcp,
        vec![],
    ));
    ops.push(service(
        Frontend::NodePort { port: DPORT },
        L4Protocol::Udp,
        vec![([10, 0, 3, 2], 5353)],
    ));
    // ACLs: p2 admits only UDP to 53 (the Service's backend port) and ICMP, rejecting TCP;
    // p3 sends nothing it did not answer (an empty In set).
    use pipelines::acl::{AclAction, AclRule};
    let rule = |protocol, dst_ports, action| AclRule {
        priority: 1,
        src: None,
        dst: None,
        protocol,
        src_ports: None,
        dst_ports,
        icmp_type: None,
        icmp_code: None,
        action,
    };
    ops.push(TableOp::SetAcl {
        port: PortId(2),
        direction: pipelines::tables::AclDirection::Out,
        rules: vec![
            rule(Some(17), Some((53, 53)), AclAction::Allow),
            rule(Some(1), None, AclAction::Allow),
            rule(Some(6), None, AclAction::Reject),
        ],
    });
    ops.push(TableOp::SetAcl {
        port: PortId(3),
        direction: pipelines::tables::AclDirection::In,
        rules: vec![],
    });
    // A VRF set on top: SCTP (and nothing else) is refused anywhere in VRF 0.
    ops.push(TableOp::SetVrfAcl {
        vrf: pipelines::VrfId(0),
        direction: pipelines::tables::AclDirection::In,
        rules: vec![
            rule(Some(132), None, AclAction::Deny),
            rule(None, None, AclAction::Allow),
        ],
    });
    ops
}

proptest! {
    #![proptest_config(config())]

    /// The fast path is the slow path remembered: a packet served from the flow cache leaves
    /// exactly as it would from a fresh pipeline.
    #[test]
    fn cached_output_equals_slow_path(frame in mutated_frame()) {
        let mut warm = Lab::vxlan();
        let first = warm.send_at(frame.0, &frame.1, T0);
        let second = warm.send_at(frame.0, &frame.1, T0 + MS);
        let mut cold = Lab::vxlan();
        let fresh = cold.send_at(frame.0, &frame.1, T0 + MS);
        if matches!(first.verdict, Verdict::Transmit(_)) {
            prop_assert_eq!(second.verdict, fresh.verdict);
            // Encapsulated packets differ in their outer IP ident (a per-pipeline counter).
            prop_assert_eq!(without_outer_ident(&second.frame), without_outer_ident(&fresh.frame));
            prop_assert_eq!(second.emitted.len(), fresh.emitted.len());
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// The same with NAT: a packet of a translated flow served from the flow cache (rewritten
    /// with the flow's precomputed checksum adjustments) leaves exactly as the slow path's
    /// field-by-field translation of a fresh pipeline makes it.
    #[test]
    fn cached_nat_output_equals_slow_path(
        frame in mutated_frame(),
        ports in (1u16..=65535, 0u16..64),
    ) {
        let ops = nat_ops(ports, None);
        let mut warm = Lab::vxlan();
        warm.apply(&ops);
        let first = warm.send_at(frame.0, &frame.1, T0);
        let second = warm.send_at(frame.0, &frame.1, T0 + MS);
        let mut cold = Lab::vxlan();
        cold.apply(&ops);
        let fresh = cold.send_at(frame.0, &frame.1, T0 + MS);
        if matches!(first.verdict, Verdict::Transmit(_)) {
            prop_assert_eq!(second.verdict, fresh.verdict);
            prop_assert_eq!(without_outer_ident(&second.frame), without_outer_ident(&fresh.frame));
            prop_assert_eq!(second.emitted.len(), fresh.emitted.len());
        }
    }
}

/// The frame with the IP ident and header checksum of an encapsulated packet zeroed.
fn without_outer_ident(frame: &[u8]) -> Vec<u8> {
    let mut frame = frame.to_vec();
    if is_vxlan(&frame) {
        frame[18..20].copy_from_slice(&[0, 0]);
        frame[24..26].copy_from_slice(&[0, 0]);
    }
    frame
}

proptest! {
    #![proptest_config(config())]

    /// Generated VXLAN packets (valid outer header, random VXLAN header and inner frame)
    /// through decapsulation, alone and mixed with other traffic.
    #[test]
    fn vxlan_frames_never_break_the_pipeline(
        batches in prop::collection::vec(
            prop::collection::vec(
                prop_oneof![3 => vxlan_frame_strategy(), 1 => mutated_frame()],
                1..24,
            ),
            1..4,
        ),
    ) {
        let mut lab = Lab::vxlan();
        for (i, batch) in batches.iter().enumerate() {
            run_checked(&mut lab, batch, T0 + i as u64 * 300 * MS);
        }
        drain_held(&mut lab, T0 + 2000 * MS);
    }
}

// --- random transactions ------------------------------------------------------------------------

fn small_mac() -> impl Strategy<Value = [u8; 6]> {
    prop_oneof![
        8 => (0u8..4).prop_map(|i| [0x02, 0x42, 0, 0, 0, i]),
        1 => Just([0x01, 0, 0x5e, 0, 0, 1]),
        1 => Just([0u8; 6]),
    ]
}

fn port_id() -> impl Strategy<Value = PortId> {
    prop_oneof![9 => (0u16..8).prop_map(PortId), 1 => Just(PortId(2000))]
}

fn vrf_id() -> impl Strategy<Value = VrfId> {
    prop_oneof![9 => (0u32..3).prop_map(VrfId), 1 => Just(VrfId(5000))]
}

fn interface_address() -> impl Strategy<Value = InterfaceAddress> {
    prop::sample::select(vec![
        "10.0.0.1/24",
        "10.0.0.2/24",
        "10.0.0.9/16",
        "10.0.1.1/24",
        "10.1.0.1/30",
        "10.1.0.2/31",
        "10.2.0.1/32",
        "10.0.0.0/24",
        "10.0.0.255/24",
        "224.0.0.1/4",
        "2001:db8::1/64",
        "2001:db8::2/64",
        "2001:db8:1::1/64",
        "2001:db8::1/48",
        "fe80::1/64",
    ])
    .prop_map(iface)
}

fn ip_prefix() -> impl Strategy<Value = IpPrefix> {
    prop::sample::select(vec![
        "0.0.0.0/0",
        "10.0.0.0/24",
        "10.0.0.1/32",
        "10.0.0.255/32",
        "192.168.0.0/16",
        "192.168.1.0/24",
        "::/0",
        "2001:db8::/64",
        "2001:db8:100::/48",
    ])
    .prop_map(prefix)
}

fn gateway_ip() -> impl Strategy<Value = std::net::IpAddr> {
    prop::sample::select(vec![
        "10.0.0.5",
        "10.0.1.5",
        "10.1.0.1",
        "10.9.9.9",
        "255.255.255.255",
        "2001:db8::5",
        "2001:db8:1::5",
    ])
    .prop_map(|s| s.parse().expect("ip"))
}

fn single_target() -> impl Strategy<Value = RouteTarget> {
    prop_oneof![
        Just(RouteTarget::Blackhole),
        Just(RouteTarget::Unreachable),
        port_id().prop_map(|port| RouteTarget::Dev { port }),
        (gateway_ip(), prop::option::of(port_id()))
            .prop_map(|(gateway, port)| RouteTarget::Via { gateway, port }),
    ]
}

fn vxlan_target() -> impl Strategy<Value = RouteTarget> {
    (
        prop_oneof![3 => Just(PortId(TUNNEL)), 1 => port_id()],
        prop::sample::select(vec![
            [10, 0, 1, 2],
            [10, 0, 0, 7],
            [192, 168, 7, 7],
            [10, 99, 0, 1],
            [0, 0, 0, 0],
            [224, 0, 0, 1],
        ]),
        prop::option::of(small_mac()),
    )
        .prop_map(|(tunnel, remote, mac)| RouteTarget::Vxlan {
            tunnel,
            remote: remote.into(),
            mac: mac.map(ea),
        })
}

fn route_target() -> impl Strategy<Value = RouteTarget> {
    prop_oneof![
        3 => single_target(),
        1 => vxlan_target(),
        2 => prop::collection::vec(
            prop_oneof![4 => single_target(), 1 => vxlan_target()],
            0..4,
        )
        .prop_map(RouteTarget::Multipath),
    ]
}

fn vxlan_op() -> impl Strategy<Value = TableOp> {
    let name = prop::sample::select(vec!["vx1", "vx2", "a", ""]);
    let local = prop::sample::select(vec![
        [10, 0, 0, 1],
        [10, 0, 1, 1],
        [10, 0, 1, 1],
        [10, 0, 0, 2],
        [10, 9, 9, 9],
    ]);
    let id = prop_oneof![2 => Just(PortId(7)), 1 => port_id()];
    let vni = prop::sample::select(vec![1u32, 100, 200, 0xff_ffff, 0x100_0000]);
    let df = prop::sample::select(vec![
        pipelines::tables::DfPolicy::Unset,
        pipelines::tables::DfPolicy::Set,
        pipelines::tables::DfPolicy::Inherit,
    ]);
    let mtu = prop::option::of(prop::sample::select(vec![60u16, 1400, 9000]));
    let uplink = prop_oneof![2 => Just(PortId(1)), 1 => port_id()];
    (
        (id, name, small_mac(), mtu, vrf_id()),
        (vni, local, uplink, any::<u8>(), df, any::<bool>()),
    )
        .prop_map(
            |((id, name, mac, mtu, vrf), (vni, local, uplink, ttl, df, udp_checksum))| {
                TableOp::AddVxlan {
                    id,
                    name: name.to_string(),
                    mac: ea(mac),
                    mtu,
                    vrf,
                    params: pipelines::tables::VxlanParams {
                        vni,
                        local: local.into(),
                        uplink,
                        ttl,
                        df,
                        udp_checksum,
                    },
                }
            },
        )
}

fn port_op() -> impl Strategy<Value = TableOp> {
    let name = prop::sample::select(vec!["a", "b", "c", "d", "bad/name", ""]);
    let mtu = prop::sample::select(vec![60u16, 576, 1500, 9000, 9001]);
    prop_oneof![
        1 => vrf_id().prop_map(|vrf| TableOp::AddVrf { vrf }),
        1 => vrf_id().prop_map(|vrf| TableOp::DelVrf { vrf }),
        4 => (port_id(), name, small_mac(), mtu.clone(), vrf_id()).prop_map(
            |(id, name, mac, mtu, vrf)| TableOp::AddPort {
                id,
                name: name.to_string(),
                mac: ea(mac),
                mtu,
                vrf,
            }
        ),
        1 => (port_id(), mtu).prop_map(|(id, mtu)| TableOp::SetPortMtu { id, mtu }),
        1 => port_id().prop_map(|id| TableOp::DelPort { id }),
        4 => (port_id(), interface_address())
            .prop_map(|(port, address)| TableOp::AddAddress { port, address }),
        2 => (port_id(), interface_address())
            .prop_map(|(port, address)| TableOp::DelAddress { port, address }),
    ]
}

fn route_or_neighbor_op() -> impl Strategy<Value = TableOp> {
    prop_oneof![
        4 => (vrf_id(), ip_prefix(), route_target(), any::<bool>()).prop_map(
            |(vrf, prefix, target, replace)| TableOp::AddRoute {
                vrf,
                prefix,
                target,
                replace,
            }
        ),
        2 => (vrf_id(), ip_prefix()).prop_map(|(vrf, prefix)| TableOp::DelRoute { vrf, prefix }),
        1 => (port_id(), gateway_ip(), small_mac())
            .prop_map(|(port, ip, mac)| TableOp::AddNeighbor { port, ip, mac: ea(mac) }),
        1 => (port_id(), gateway_ip()).prop_map(|(port, ip)| TableOp::DelNeighbor { port, ip }),
        1 => (port_id(), gateway_ip(), small_mac(), 0u64..10).prop_map(
            |(port, ip, mac, now_ns)| TableOp::LearnNeighbor {
                port,
                ip,
                mac: ea(mac),
                now_ns,
            }
        ),
    ]
}

/// Ops around the tunnel of the VXLAN lab: routes into it, its removal and its uplink's.
fn tunnel_op() -> impl Strategy<Value = TableOp> {
    prop_oneof![
        3 => (ip_prefix(), vxlan_target(), any::<bool>()).prop_map(|(prefix, target, replace)| {
            TableOp::AddRoute {
                vrf: OVERLAY,
                prefix,
                target,
                replace,
            }
        }),
        1 => Just(TableOp::DelPort { id: PortId(TUNNEL) }),
        1 => Just(TableOp::DelPort { id: PortId(1) }),
        1 => Just(TableOp::DelAddress {
            port: PortId(1),
            address: iface("10.0.1.1/24"),
        }),
        1 => Just(TableOp::AddAddress {
            port: PortId(TUNNEL),
            address: iface("10.245.0.1/32"),
        }),
    ]
}

fn table_op() -> impl Strategy<Value = TableOp> {
    prop_oneof![
        3 => port_op(),
        3 => route_or_neighbor_op(),
        1 => vxlan_op(),
        1 => tunnel_op(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(128), ..config() })]

    #[test]
    fn random_transactions_are_atomic(
        batches in prop::collection::vec(prop::collection::vec(table_op(), 1..6), 1..16),
        from_lab in any::<bool>(),
    ) {
        // From empty tables, or from the VXLAN lab (tunnel, uplink, overlay routes).
        let mut tables = if from_lab {
            vxlan_lab_tables(lab_vxlan_params())
        } else {
            Tables::new()
        };
        for ops in &batches {
            let before = snapshot(&tables);
            match tables.apply_batch(ops) {
                Ok(()) => {
                    prop_assert!(tables.generation() >= before.generation);
                }
                Err(error) => {
                    prop_assert!(error.index < ops.len());
                    prop_assert_eq!(&snapshot(&tables), &before, "rejected: {}", error);
                }
            }
            check_references(&tables);
        }
        // Tearing everything down (tunnels before their uplinks) leaves no next hop behind.
        let mut ports: Vec<PortId> = tables.ports().map(|p| p.id).collect();
        ports.sort_by_key(|id| tables.port(*id).is_some_and(|p| p.vxlan().is_none()));
        let teardown: Vec<TableOp> = ports.into_iter().map(|id| TableOp::DelPort { id }).collect();
        tables.apply_batch(&teardown).expect("delete every port");
        let vrfs: Vec<VrfId> = tables.vrf_ids().filter(|v| v.0 != 0).collect();
        let teardown: Vec<TableOp> = vrfs.into_iter().map(|vrf| TableOp::DelVrf { vrf }).collect();
        tables.apply_batch(&teardown).expect("delete every VRF");
        for (prefix, _) in tables.routes(VrfId(0)) {
            tables
                .apply_batch(&[TableOp::DelRoute { vrf: VrfId(0), prefix }])
                .expect("delete route");
        }
        prop_assert_eq!(tables.next_hops().len(), 0);
        prop_assert_eq!(tables.neighbors().len(), 0);
    }

    #[test]
    fn traffic_between_random_transactions(
        batches in prop::collection::vec(prop::collection::vec(table_op(), 1..4), 1..6),
        frames in prop::collection::vec(mutated_frame(), 1..12),
    ) {
        let mut lab = Lab::vxlan();
        for (i, ops) in batches.iter().enumerate() {
            let _ = lab.tables.apply_batch(ops);
            check_references(&lab.tables);
            run_checked(&mut lab, &frames, T0 + i as u64 * 300 * MS);
        }
        drain_held(&mut lab, T0 + 2000 * MS);
    }
}

#[test]
fn seeds_are_handled_without_drops_of_malformed_kinds() {
    // The unmutated seeds are valid: none may be dropped as malformed.
    let mut lab = Lab::vxlan();
    let batch = lab.batch_at(&seeds(), T0);
    for (verdict, (port, frame)) in batch.verdicts.iter().zip(seeds()) {
        if let Verdict::Drop(reason) = verdict {
            assert!(
                !matches!(
                    reason,
                    DropReason::EthernetTruncated
                        | DropReason::Ipv4Truncated
                        | DropReason::Ipv4BadChecksum
                        | DropReason::Ipv4BadHeaderLength
                        | DropReason::Ipv4BadTotalLength
                        | DropReason::Ipv6Truncated
                        | DropReason::Ipv6ExtensionHeaders
                        | DropReason::L4Truncated
                        | DropReason::ArpMalformed
                        | DropReason::NdMalformed
                        | DropReason::IcmpMalformed
                        | DropReason::VxlanTruncated
                        | DropReason::VxlanBadFlags
                        | DropReason::VxlanUnknownVni
                        | DropReason::VxlanBadChecksum
                        | DropReason::EncapNoHeadroom
                ),
                "seed on port {port} dropped as {}: {frame:02x?}",
                reason.name()
            );
        }
    }
}
