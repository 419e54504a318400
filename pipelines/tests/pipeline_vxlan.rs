//! Stage tests of VXLAN (RFC 7348): encapsulation of pod traffic routed into a tunnel,
//! decapsulation of what arrives at our VTEP, path MTU through the overlay, replies and ICMP
//! errors back through the tunnel, underlay resolution. Outer and inner headers are checked
//! by hand and with etherparse, checksums with the independent helpers of `common`.

mod common;

use common::*;
use etherparse::{Ipv4Header, Ipv6Header, PacketHeaders};
use pipelines::tables::{DfPolicy, VxlanParams};
use pipelines::{DropReason, PortId, Stage, TableOp, Verdict};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

const PAYLOAD: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
const TUNNEL_MTU: usize = 1450;

fn from_pod_udp(dst: [u8; 4], ttl: u8, payload: &[u8]) -> Vec<u8> {
    udp4(POD, R5, POD_V4, dst, ttl, payload)
}

fn from_pod_udp_ports(dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    udp4_ports(POD, R5, POD_V4, dst, 64, sport, dport, PAYLOAD)
}

/// A UDP packet from the pod with the DF bit as given, `ip_len` bytes of IPv4 in all.
fn from_pod_sized(dst: [u8; 4], ip_len: usize, dont_fragment: bool) -> Vec<u8> {
    let payload: Vec<u8> = (0..ip_len - 28).map(|i| (i * 7 + 3) as u8).collect();
    let frame = udp4_with_header(
        POD,
        R5,
        ipv4_header(POD_V4, dst, 64, dont_fragment),
        &payload,
    );
    assert_eq!(ipv4_of(&frame).len(), ip_len);
    frame
}

fn params(ttl: u8, df: DfPolicy, udp_checksum: bool) -> VxlanParams {
    VxlanParams {
        ttl,
        df,
        udp_checksum,
        ..lab_vxlan_params()
    }
}

/// Checks the outer headers of a frame encapsulated with the lab's defaults towards
/// `remote` through the underlay neighbor `next_mac` out of `port`, and returns it parsed.
fn check_outer(frame: &[u8], port: usize, next_mac: [u8; 6], remote: [u8; 4]) -> Vxlan {
    let outer = parse_vxlan(frame);
    assert_eq!(
        outer.dst_mac, next_mac,
        "outer destination MAC = underlay next hop"
    );
    assert_eq!(
        outer.src_mac, R[port],
        "outer source MAC = underlay egress port"
    );
    assert_eq!(outer.src, VTEP, "outer source = local VTEP");
    assert_eq!(outer.dst, remote, "outer destination = remote VTEP");
    assert_eq!(outer.vni, VNI);
    outer
}

/// The outer frame with the fields that legitimately change per packet zeroed: IP ident and
/// header checksum.
fn without_ident(frame: &[u8]) -> Vec<u8> {
    let mut frame = frame.to_vec();
    frame[18..20].copy_from_slice(&[0, 0]);
    frame[24..26].copy_from_slice(&[0, 0]);
    frame
}

// --- encapsulation ------------------------------------------------------------------------------

#[test]
fn udp_from_a_pod_is_encapsulated_towards_the_remote_vtep() {
    let mut lab = Lab::vxlan();
    let frame = from_pod_udp(REMOTE_POD_V4, 64, PAYLOAD);
    let run = lab.send(P5, &frame);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
    assert!(run.emitted.is_empty());
    lab.assert_drops(&[]);
    assert_eq!(run.frame.len(), frame.len() + VXLAN_OVERHEAD);

    // Outer headers, by hand.
    let f = &run.frame;
    assert_eq!(&f[0..6], &N[1], "outer destination MAC = N1");
    assert_eq!(&f[6..12], &R[1], "outer source MAC = p1");
    assert_eq!(&f[12..14], &[0x08, 0x00]);
    let ip = &f[14..34];
    assert_eq!(ip[0], 0x45, "version 4, IHL 5");
    assert_eq!(ip[1], 0, "TOS");
    assert_eq!(
        u16::from_be_bytes([ip[2], ip[3]]) as usize,
        f.len() - 14,
        "outer total length"
    );
    assert_eq!(
        &ip[6..8],
        &[0, 0],
        "DF clear (DfPolicy::Unset), no fragment"
    );
    assert_eq!(ip[8], 64, "outer TTL");
    assert_eq!(ip[9], 17, "UDP");
    assert!(ipv4_header_ok(ip), "outer header checksum");
    assert_eq!(&ip[12..16], &VTEP);
    assert_eq!(&ip[16..20], &REMOTE_VTEP);
    let udp = &f[34..42];
    let sport = u16::from_be_bytes([udp[0], udp[1]]);
    assert!((49152..=65535).contains(&sport), "source port {sport}");
    assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 4789);
    assert_eq!(
        u16::from_be_bytes([udp[4], udp[5]]) as usize,
        f.len() - 34,
        "UDP length"
    );
    assert_eq!(&udp[6..8], &[0, 0], "no outer UDP checksum by default");
    assert_eq!(&f[42..50], &[0x08, 0, 0, 0, 0, 0, 100, 0], "VXLAN header");

    // Inner frame: rewritten as forwarded, MACs of the overlay.
    let inner = &f[50..];
    check_forwarded_v4_macs(inner, &frame, TUNNEL_MAC, REMOTE_MAC);
    let (headers, payload) = {
        let h = PacketHeaders::from_ethernet_slice(inner).expect("inner parses");
        (h.net.clone(), h.payload.slice().to_vec())
    };
    assert!(headers.is_some());
    assert_eq!(payload, PAYLOAD, "payload intact");

    // The same through the etherparse-free parser of common.
    let parsed = check_outer(&run.frame, 1, N[1], REMOTE_VTEP);
    assert_eq!(parsed.ttl, 64);
    assert!(!parsed.dont_fragment);
    assert_eq!(parsed.udp_checksum, 0);

    // Counters: the tunnel transmits the inner bytes, p1 the outer ones, the remote counts.
    let counters = lab.pipeline.counters();
    assert_eq!(counters.ports[5].rx_packets, 1);
    assert_eq!(counters.ports[6].tx_packets, 1);
    assert_eq!(counters.ports[6].tx_bytes, frame.len() as u64);
    assert_eq!(counters.ports[1].tx_packets, 1);
    assert_eq!(counters.ports[1].tx_bytes, run.frame.len() as u64);
    assert_eq!(counters.remotes.len(), 1);
    let remote = counters.remotes[0];
    assert_eq!(remote.tunnel, PortId(TUNNEL));
    assert_eq!(remote.remote, Ipv4Addr::from(REMOTE_VTEP));
    assert_eq!(
        (remote.tx_packets, remote.tx_bytes),
        (1, run.frame.len() as u64)
    );
    assert_eq!((remote.rx_packets, remote.rx_bytes), (0, 0));

    // Second packet of the flow: from the flow cache, the same bytes but for the IP ident.
    let hits = lab.pipeline.counters().flow.hits;
    let second = lab.send(P5, &frame);
    assert_eq!(second.verdict, Verdict::Transmit(PortId(1)));
    assert_eq!(
        lab.pipeline.counters().flow.hits,
        hits + 1,
        "flow-cache hit"
    );
    let again = check_outer(&second.frame, 1, N[1], REMOTE_VTEP);
    assert_ne!(again.ident, parsed.ident, "a fresh IP ident per packet");
    assert_eq!(without_ident(&second.frame), without_ident(&run.frame));
    let counters = lab.pipeline.counters();
    assert_eq!(counters.ports[6].tx_packets, 2);
    assert_eq!(counters.ports[1].tx_packets, 2);
    assert_eq!(counters.remotes[0].tx_packets, 2);
    lab.assert_drops(&[]);
}

#[test]
fn source_port_is_stable_per_flow_and_spreads_flows() {
    let mut lab = Lab::vxlan();
    let frames: Vec<(u16, Vec<u8>)> = (0..64u16)
        .map(|i| (P5, from_pod_udp_ports(REMOTE_POD_V4, 30000 + i, 80)))
        .collect();
    let first = lab.batch_at(&frames, T0);
    let second = lab.batch_at(&frames, T0 + MS);
    let mut ports = BTreeSet::new();
    for (a, b) in first.frames.iter().zip(&second.frames) {
        let a = check_outer(a, 1, N[1], REMOTE_VTEP);
        let b = check_outer(b, 1, N[1], REMOTE_VTEP);
        assert_eq!(a.sport, b.sport, "a flow keeps its source port");
        ports.insert(a.sport);
    }
    assert!(
        first
            .verdicts
            .iter()
            .chain(&second.verdicts)
            .all(|v| *v == Verdict::Transmit(PortId(1))),
        "{:?}",
        first.verdicts
    );
    assert_eq!(lab.pipeline.counters().flow.hits, 64);
    assert!(
        ports.len() >= 32,
        "64 flows over only {} source ports",
        ports.len()
    );
}

#[test]
fn ipv6_inner_goes_over_the_ipv4_underlay() {
    let mut lab = Lab::vxlan();
    let frame = udp6(POD, R5, POD_V6, REMOTE_POD_V6, 64, PAYLOAD);
    let run = lab.send(P5, &frame);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
    lab.assert_drops(&[]);
    let outer = check_outer(&run.frame, 1, N[1], REMOTE_VTEP);
    assert_eq!(outer.ttl, 64);
    assert!(!outer.dont_fragment);
    assert_eq!(&outer.inner[12..14], &[0x86, 0xdd], "inner EtherType IPv6");
    check_forwarded_v6_macs(&outer.inner, &frame, TUNNEL_MAC, REMOTE_MAC);
    assert_eq!(ipv6_of(&outer.inner)[7], 63, "hop limit decremented once");
    let ip = ipv6_of(&outer.inner);
    assert!(ipv6_l4_ok(ip, 40, 17), "inner UDP checksum still valid");

    // And from the flow cache.
    let second = lab.send(P5, &frame);
    assert_eq!(second.verdict, Verdict::Transmit(PortId(1)));
    assert_eq!(lab.pipeline.counters().flow.hits, 1);
    assert_eq!(without_ident(&second.frame), without_ident(&run.frame));
}

#[test]
fn remote_behind_an_underlay_gateway() {
    // 10.244.3.0/24 is behind 192.168.7.7, reached by the underlay route via N1.
    let mut lab = Lab::vxlan();
    let frame = from_pod_udp([10, 244, 3, 9], 64, PAYLOAD);
    let run = lab.send(P5, &frame);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
    let outer = check_outer(&run.frame, 1, N[1], FAR_VTEP);
    check_forwarded_v4_macs(&outer.inner, &frame, TUNNEL_MAC, REMOTE_MAC);
    lab.assert_drops(&[]);
}

// --- tunnel settings ----------------------------------------------------------------------------

#[test]
fn outer_udp_checksum_when_configured() {
    let mut lab = Lab::vxlan_with(params(64, DfPolicy::Unset, true), lab_config());
    for frame in [
        from_pod_udp(REMOTE_POD_V4, 64, PAYLOAD),
        from_pod_udp(REMOTE_POD_V4, 64, b"odd"),
        udp6(POD, R5, POD_V6, REMOTE_POD_V6, 64, PAYLOAD),
    ] {
        for _ in 0..2 {
            // Slow path, then flow-cache hit.
            let run = lab.send(P5, &frame);
            assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
            let outer = check_outer(&run.frame, 1, N[1], REMOTE_VTEP);
            assert_ne!(outer.udp_checksum, 0, "checksum computed");
            // Independent pseudo-header sum over the outer UDP datagram.
            let ip = ipv4_of(&run.frame);
            let udp = &ip[20..];
            let len = (udp.len() as u16).to_be_bytes();
            let pseudo = [&VTEP[..], &REMOTE_VTEP[..], &[0, 17], &len[..]].concat();
            assert_eq!(ones_sum(&[&pseudo, udp]), 0xffff, "outer UDP checksum");
        }
    }
    lab.assert_drops(&[]);
}

#[test]
fn df_policies_and_ttl_inheritance() {
    let df_clear = from_pod_sized(REMOTE_POD_V4, 100, false);
    let df_set = from_pod_sized(REMOTE_POD_V4, 100, true);
    let v6 = udp6(POD, R5, POD_V6, REMOTE_POD_V6, 64, PAYLOAD);
    let cases = [
        (DfPolicy::Unset, [false, false, false]),
        (DfPolicy::Set, [true, true, true]),
        (DfPolicy::Inherit, [false, true, false]),
    ];
    for (df, expected) in cases {
        let mut lab = Lab::vxlan_with(params(0, df, false), lab_config());
        for (frame, want) in [&df_clear, &df_set, &v6].into_iter().zip(expected) {
            // Different flows so each goes through the slow path, then the cache.
            for pass in 0..2 {
                let run = lab.send(P5, frame);
                assert_eq!(run.verdict, Verdict::Transmit(PortId(1)), "{df:?}");
                let outer = check_outer(&run.frame, 1, N[1], REMOTE_VTEP);
                assert_eq!(outer.dont_fragment, want, "{df:?} pass {pass}");
                // TTL 0: the outer TTL is the inner one as sent (64 - 1).
                assert_eq!(outer.ttl, 63, "{df:?} inherited TTL, pass {pass}");
            }
        }
        lab.assert_drops(&[]);
    }
    // A fixed TTL other than 64.
    let mut lab = Lab::vxlan_with(params(9, DfPolicy::Unset, false), lab_config());
    let run = lab.send(P5, &from_pod_udp(REMOTE_POD_V4, 30, PAYLOAD));
    assert_eq!(check_outer(&run.frame, 1, N[1], REMOTE_VTEP).ttl, 9);
    // Inherited from a low inner TTL.
    let mut lab = Lab::vxlan_with(params(0, DfPolicy::Unset, false), lab_config());
    let run = lab.send(P5, &from_pod_udp(REMOTE_POD_V4, 2, PAYLOAD));
    assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
    assert_eq!(check_outer(&run.frame, 1, N[1], REMOTE_VTEP).ttl, 1);
}

// --- headroom -----------------------------------------------------------------------------------

#[test]
fn encapsulation_without_room_is_dropped() {
    let mut lab = Lab::vxlan();
    let frame = from_pod_udp(REMOTE_POD_V4, 64, PAYLOAD);
    let run = lab.send_with_room(P5, &frame, T0, 0, 0);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::EncapNoHeadroom));
    lab.assert_drops(&[(DropReason::EncapNoHeadroom, 1)]);
    assert_eq!(lab.pipeline.counters().ports[5].rx_dropped, 1);
    assert_eq!(lab.pipeline.counters().ports[1].tx_packets, 0);
    // 49 bytes of room in all is still one short.
    let run = lab.send_with_room(P5, &frame, T0, 20, 29);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::EncapNoHeadroom));
    lab.assert_drops(&[(DropReason::EncapNoHeadroom, 2)]);
    // On the fast path too: the flow is installed by a packet with room, then one without.
    let run = lab.send(P5, &frame);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
    let hits = lab.pipeline.counters().flow.hits;
    let run = lab.send_with_room(P5, &frame, T0 + MS, 0, 0);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::EncapNoHeadroom));
    assert_eq!(lab.pipeline.counters().flow.hits, hits + 1);
    lab.assert_drops(&[(DropReason::EncapNoHeadroom, 3)]);
    let counters = lab.pipeline.counters();
    assert_eq!(
        counters.ports[1].tx_packets, 1,
        "only the packet with room left"
    );
    assert_eq!(counters.ports[6].tx_packets, 1);
    assert_eq!(counters.remotes[0].tx_packets, 1);
}

#[test]
fn encapsulation_moves_the_frame_when_the_room_is_behind_it() {
    let mut reference = Lab::vxlan();
    let frame = from_pod_udp(REMOTE_POD_V4, 64, PAYLOAD);
    let expected = reference.send(P5, &frame);
    for (headroom, tailroom) in [(0, 50), (10, 40), (49, 1), (0, 500)] {
        let mut lab = Lab::vxlan();
        let run = lab.send_with_room(P5, &frame, T0, headroom, tailroom);
        assert_eq!(
            run.verdict,
            Verdict::Transmit(PortId(1)),
            "{headroom}/{tailroom}"
        );
        assert_eq!(run.frame, expected.frame, "{headroom}/{tailroom}");
        // And on the fast path.
        let run = lab.send_with_room(P5, &frame, T0 + MS, headroom, tailroom);
        assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
        assert_eq!(without_ident(&run.frame), without_ident(&expected.frame));
        lab.assert_drops(&[]);
    }
}

// --- decapsulation ------------------------------------------------------------------------------

fn inner_to_pod(ttl: u8) -> Vec<u8> {
    udp4(REMOTE_MAC, TUNNEL_MAC, REMOTE_POD_V4, POD_V4, ttl, PAYLOAD)
}

#[test]
fn vxlan_to_our_vtep_is_decapsulated_and_routed_in_the_overlay() {
    let mut lab = Lab::vxlan();
    let inner = inner_to_pod(64);
    let outer = from_remote_vtep(&inner);
    let run = lab.send(1, &outer);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(P5)));
    assert_eq!(run.frame.len(), inner.len(), "exactly the inner frame");
    check_forwarded_v4_macs(&run.frame, &inner, R5, POD);
    assert!(run.emitted.is_empty());
    lab.assert_drops(&[]);

    let counters = lab.pipeline.counters();
    assert_eq!(counters.ports[1].rx_packets, 1);
    assert_eq!(counters.ports[1].rx_bytes, outer.len() as u64);
    assert_eq!(
        counters.ports[6].rx_packets, 1,
        "tunnel port received the inner frame"
    );
    assert_eq!(counters.ports[6].rx_bytes, inner.len() as u64);
    assert_eq!(counters.ports[5].tx_packets, 1);
    assert_eq!(counters.ports[5].tx_bytes, inner.len() as u64);
    assert_eq!(counters.stage(Stage::VxlanInput).packets, 1);
    assert_eq!(counters.stage(Stage::VxlanInput).calls, 1);
    assert_eq!(counters.remotes.len(), 1);
    let remote = counters.remotes[0];
    assert_eq!(remote.tunnel, PortId(TUNNEL));
    assert_eq!(remote.remote, Ipv4Addr::from(REMOTE_VTEP));
    assert_eq!(
        (remote.rx_packets, remote.rx_bytes),
        (1, outer.len() as u64)
    );
    assert_eq!(remote.tx_packets, 0);

    // The second packet of the flow is served from the cache, identically.
    let second = lab.send(1, &outer);
    assert_eq!(second.verdict, Verdict::Transmit(PortId(P5)));
    assert_eq!(second.frame, run.frame);
    let counters = lab.pipeline.counters();
    assert_eq!(counters.flow.hits, 1);
    assert_eq!(counters.stage(Stage::VxlanInput).packets, 2);
    assert_eq!(counters.remotes[0].rx_packets, 2);
}

#[test]
fn decapsulated_ipv6_reaches_the_pod() {
    let mut lab = Lab::vxlan();
    let inner = udp6(REMOTE_MAC, TUNNEL_MAC, REMOTE_POD_V6, POD_V6, 64, PAYLOAD);
    let run = lab.send(1, &from_remote_vtep(&inner));
    assert_eq!(run.verdict, Verdict::Transmit(PortId(P5)));
    check_forwarded_v6_macs(&run.frame, &inner, R5, POD);
    lab.assert_drops(&[]);
}

#[test]
fn inner_destination_mac_may_be_any_unicast() {
    for dst_mac in [
        TUNNEL_MAC,
        REMOTE_MAC,
        [0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f],
        R[1],
    ] {
        let mut lab = Lab::vxlan();
        let inner = udp4(REMOTE_MAC, dst_mac, REMOTE_POD_V4, POD_V4, 64, PAYLOAD);
        let run = lab.send(1, &from_remote_vtep(&inner));
        assert_eq!(run.verdict, Verdict::Transmit(PortId(P5)), "{dst_mac:02x?}");
        check_forwarded_v4_macs(&run.frame, &inner, R5, POD);
    }
    // A multicast inner destination is not a routed frame.
    let mut lab = Lab::vxlan();
    let inner = udp4(
        REMOTE_MAC,
        [0x01, 0, 0x5e, 0, 0, 1],
        REMOTE_POD_V4,
        POD_V4,
        64,
        PAYLOAD,
    );
    let run = lab.send(1, &from_remote_vtep(&inner));
    assert_eq!(run.verdict, Verdict::Drop(DropReason::EthernetNotForUs));
}

#[test]
fn valid_outer_udp_checksum_passes() {
    let mut lab = Lab::vxlan();
    let inner = inner_to_pod(64);
    let outer = vxlan_frame(
        N[1],
        R[1],
        REMOTE_VTEP,
        VTEP,
        51234,
        vxlan_header(0x08, VNI),
        &inner,
        true,
    );
    let run = lab.send(1, &outer);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(P5)));
    check_forwarded_v4_macs(&run.frame, &inner, R5, POD);
    lab.assert_drops(&[]);
}

#[test]
fn outer_ethernet_padding_and_udp_length() {
    // Trailing bytes after the outer IP packet (Ethernet padding) are not part of the inner
    // frame; neither are bytes after the UDP datagram inside the IP packet.
    let mut lab = Lab::vxlan();
    let inner = inner_to_pod(64);
    let mut outer = from_remote_vtep(&inner);
    outer.extend_from_slice(&[0xee; 6]);
    let run = lab.send(1, &outer);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(P5)));
    assert_eq!(run.frame.len(), inner.len());
    check_forwarded_v4_macs(&run.frame, &inner, R5, POD);
}

/// Decapsulation of `outer` on `port` is dropped as `reason`, counted once, on p1's rx_dropped.
fn decap_drop(outer: &[u8], reason: DropReason) {
    let mut lab = Lab::vxlan();
    let run = lab.send(1, outer);
    assert_eq!(run.verdict, Verdict::Drop(reason), "{outer:02x?}");
    lab.assert_drops(&[(reason, 1)]);
    assert!(run.emitted.is_empty(), "no answer to a bad VXLAN packet");
    let counters = lab.pipeline.counters();
    assert_eq!(counters.ports[1].rx_dropped, 1);
    assert_eq!(counters.stage(Stage::VxlanInput).packets, 1);
    assert_eq!(
        counters.ports.get(6).map_or(0, |p| p.rx_packets),
        0,
        "nothing reached the tunnel port"
    );
    assert!(counters.remotes.is_empty());
}

fn with_outer(inner: &[u8], vxlan: [u8; 8], checksum: bool) -> Vec<u8> {
    vxlan_frame(N[1], R[1], REMOTE_VTEP, VTEP, 50000, vxlan, inner, checksum)
}

#[test]
fn unknown_vni_is_dropped() {
    let inner = inner_to_pod(64);
    for vni in [0, 99, 101, 0xff_ffff] {
        decap_drop(
            &with_outer(&inner, vxlan_header(0x08, vni), false),
            DropReason::VxlanUnknownVni,
        );
    }
}

#[test]
fn bad_flags_and_reserved_bits_are_dropped() {
    let inner = inner_to_pod(64);
    let good = vxlan_header(0x08, VNI);
    let mut bad = Vec::new();
    for flags in [0x00, 0x0c, 0x88, 0x09, 0xff, 0x80] {
        let mut h = good;
        h[0] = flags;
        bad.push(h);
    }
    for index in [1, 2, 3, 7] {
        let mut h = good;
        h[index] = 0x01;
        bad.push(h);
    }
    for header in bad {
        for checksum in [false, true] {
            decap_drop(
                &with_outer(&inner, header, checksum),
                DropReason::VxlanBadFlags,
            );
        }
    }
}

/// Sets the outer UDP length and keeps the IP packet as it is.
fn with_udp_length(outer: &[u8], udp_len: u16) -> Vec<u8> {
    let mut frame = outer.to_vec();
    frame[38..40].copy_from_slice(&udp_len.to_be_bytes());
    frame
}

#[test]
fn truncated_vxlan_is_dropped() {
    let inner = inner_to_pod(64);
    let outer = from_remote_vtep(&inner);
    let udp_len = (outer.len() - 34) as u16;
    // UDP length too short for VXLAN + an inner Ethernet header.
    for len in [8u16, 9, 16, 8 + 8 + 13] {
        decap_drop(&with_udp_length(&outer, len), DropReason::VxlanTruncated);
    }
    // Beyond the IP packet.
    decap_drop(
        &with_udp_length(&outer, udp_len + 1),
        DropReason::VxlanTruncated,
    );
    decap_drop(&with_udp_length(&outer, 0xffff), DropReason::VxlanTruncated);
    // An IP packet too short for a VXLAN header and an inner Ethernet header.
    for inner_len in [0usize, 5, 13] {
        decap_drop(
            &with_outer(&inner[..inner_len], vxlan_header(0x08, VNI), false),
            DropReason::VxlanTruncated,
        );
    }
    // Just an inner Ethernet header is enough for vxlan-input (ethernet-input judges it).
    let mut lab = Lab::vxlan();
    let run = lab.send(1, &with_outer(&inner[..14], vxlan_header(0x08, VNI), false));
    assert_eq!(run.verdict, Verdict::Drop(DropReason::Ipv4Truncated));
}

#[test]
fn shorter_udp_length_ends_the_inner_frame() {
    // A UDP length shorter than the IP payload (with bytes after it) is the datagram's end.
    let mut lab = Lab::vxlan();
    let inner = inner_to_pod(64);
    let mut outer = from_remote_vtep(&inner);
    let udp_len = (outer.len() - 34) as u16;
    outer.extend_from_slice(&[0xee; 4]);
    let total = (outer.len() - 14) as u16;
    outer[16..18].copy_from_slice(&total.to_be_bytes());
    outer[24..26].copy_from_slice(&[0, 0]);
    let sum = !ones_sum(&[&outer[14..34]]);
    outer[24..26].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(u16::from_be_bytes([outer[38], outer[39]]), udp_len);
    let run = lab.send(1, &outer);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(P5)));
    assert_eq!(run.frame.len(), inner.len());
    check_forwarded_v4_macs(&run.frame, &inner, R5, POD);
}

#[test]
fn wrong_outer_udp_checksum_is_dropped() {
    let inner = inner_to_pod(64);
    let mut outer = with_outer(&inner, vxlan_header(0x08, VNI), true);
    outer[41] ^= 0x01;
    decap_drop(&outer, DropReason::VxlanBadChecksum);
    // A payload byte changed under a valid checksum.
    let mut outer = with_outer(&inner, vxlan_header(0x08, VNI), true);
    let last = outer.len() - 1;
    outer[last] ^= 0x40;
    decap_drop(&outer, DropReason::VxlanBadChecksum);
}

#[test]
fn vxlan_to_the_vtep_on_another_underlay_port_is_decapsulated() {
    // 4789 to 10.0.1.1 arriving on p0, another port of the underlay VRF (a multi-homed node
    // whose underlay ECMP brings it in there): decapsulated, as Linux does.
    let mut lab = Lab::vxlan();
    let inner = inner_to_pod(64);
    let outer = vxlan_frame(
        H0,
        R[0],
        H0_V4,
        VTEP,
        50000,
        vxlan_header(0x08, VNI),
        &inner,
        false,
    );
    let run = lab.send(0, &outer);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(P5)));
    check_forwarded_v4_macs(&run.frame, &inner, R5, POD);
    lab.assert_drops(&[]);
    let counters = lab.pipeline.counters();
    assert_eq!(counters.stage(Stage::VxlanInput).packets, 1);
    assert_eq!(counters.remotes[0].remote, Ipv4Addr::from(H0_V4));
}

#[test]
fn vxlan_from_the_overlay_to_the_vtep_address_is_not_decapsulated() {
    // A pod (VRF 1) sending VXLAN to the VTEP address: the VTEP is not in the pod's VRF, so
    // the packet is routed like any other (10.0.1.0/24 has no route in VRF 1).
    let mut lab = Lab::vxlan();
    let inner = inner_to_pod(64);
    let outer = vxlan_frame(
        POD,
        R5,
        POD_V4,
        VTEP,
        50000,
        vxlan_header(0x08, VNI),
        &inner,
        false,
    );
    let run = lab.send(P5, &outer);
    assert_ne!(run.verdict, Verdict::Transmit(PortId(P5)));
    let counters = lab.pipeline.counters();
    assert_eq!(counters.stage(Stage::VxlanInput).packets, 0);
    assert_eq!(counters.ports.get(6).map_or(0, |p| p.rx_packets), 0);
}

#[test]
fn vxlan_to_another_address_or_port_is_not_decapsulated() {
    let mut lab = Lab::vxlan();
    let inner = inner_to_pod(64);
    // Another UDP port to the VTEP: local, port unreachable.
    let mut frame = udp4_ports(N[1], R[1], REMOTE_VTEP, VTEP, 64, 50000, 4790, &inner);
    let run = lab.send(1, &frame);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::LocalUnhandled));
    // 4789 to an address that is not a VTEP: forwarded like any packet.
    frame = udp4_ports(
        N[1],
        R[1],
        REMOTE_VTEP,
        [10, 0, 3, 2],
        64,
        50000,
        4789,
        &inner,
    );
    let run = lab.send(1, &frame);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(3)));
    check_forwarded_v4(&run.frame, &frame, 3, N[3]);
    assert_eq!(lab.pipeline.counters().stage(Stage::VxlanInput).packets, 0);
}

#[test]
fn outer_fragments_to_the_vtep_are_not_reassembled() {
    let mut lab = Lab::vxlan();
    let inner = inner_to_pod(64);
    let mut outer = from_remote_vtep(&inner);
    // Set MF: a first fragment.
    outer[20] = 0x20;
    outer[24..26].copy_from_slice(&[0, 0]);
    let sum = !ones_sum(&[&outer[14..34]]);
    outer[24..26].copy_from_slice(&sum.to_be_bytes());
    let run = lab.send(1, &outer);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::LocalFragment));
    assert_eq!(lab.pipeline.counters().stage(Stage::VxlanInput).packets, 0);
}

#[test]
fn decapsulation_in_a_batch_with_other_traffic() {
    // Every packet of a mixed batch gets its verdict, decapsulated ones included.
    let mut lab = Lab::vxlan();
    let inner = inner_to_pod(64);
    let frames = vec![
        (0, udp4(H0, R[0], H0_V4, [192, 168, 5, 5], 64, PAYLOAD)),
        (1, from_remote_vtep(&inner)),
        (P5, from_pod_udp(REMOTE_POD_V4, 64, PAYLOAD)),
        (1, with_outer(&inner, vxlan_header(0x08, 7), false)),
        (1, from_remote_vtep(&inner)),
    ];
    let batch = lab.batch_at(&frames, T0);
    assert_eq!(
        batch.verdicts,
        vec![
            Verdict::Transmit(PortId(1)),
            Verdict::Transmit(PortId(P5)),
            Verdict::Transmit(PortId(1)),
            Verdict::Drop(DropReason::VxlanUnknownVni),
            Verdict::Transmit(PortId(P5)),
        ]
    );
    check_forwarded_v4_macs(&batch.frames[1], &inner, R5, POD);
    check_forwarded_v4_macs(&batch.frames[4], &inner, R5, POD);
    assert_eq!(lab.pipeline.counters().stage(Stage::VxlanInput).packets, 3);
}

// --- path MTU -----------------------------------------------------------------------------------

#[test]
fn tunnel_mtu_defaults_to_the_uplink_minus_50() {
    let lab = Lab::vxlan();
    assert_eq!(lab.tables.port(PortId(TUNNEL)).expect("tunnel").mtu, 1450);
}

#[test]
fn df_packet_too_big_for_the_tunnel_gets_fragmentation_needed() {
    for ip_len in [1451, 1500] {
        let mut lab = Lab::vxlan();
        let frame = from_pod_sized(REMOTE_POD_V4, ip_len, true);
        let run = lab.send(P5, &frame);
        assert_eq!(run.verdict, Verdict::Drop(DropReason::FragmentationNeeded));
        lab.assert_drops(&[(DropReason::FragmentationNeeded, 1)]);
        assert_eq!(run.emitted.len(), 1);
        assert_eq!(run.emitted[0].port, PortId(P5));
        let rest =
            check_icmp4_error_frame(&run.emitted[0].frame, R5, P5_V4, POD, POD_V4, 3, 4, &frame);
        assert_eq!(
            u16::from_be_bytes([rest[2], rest[3]]),
            TUNNEL_MTU as u16,
            "next-hop MTU"
        );
        assert_eq!(lab.pipeline.counters().ports[1].tx_packets, 0);
    }
}

#[test]
fn df_packet_of_exactly_the_tunnel_mtu_passes() {
    let mut lab = Lab::vxlan();
    let frame = from_pod_sized(REMOTE_POD_V4, TUNNEL_MTU, true);
    let run = lab.send(P5, &frame);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
    assert_eq!(run.frame.len(), 14 + 1500, "a full-size underlay frame");
    let outer = check_outer(&run.frame, 1, N[1], REMOTE_VTEP);
    check_forwarded_v4_macs(&outer.inner, &frame, TUNNEL_MAC, REMOTE_MAC);
    // The flow is cached with the tunnel MTU: a bigger packet of the same flow still gets
    // fragmentation-needed rather than the cached encapsulation.
    let big = from_pod_sized(REMOTE_POD_V4, 1500, true);
    let run = lab.send(P5, &big);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::FragmentationNeeded));
    assert_eq!(run.emitted.len(), 1);
    let run = lab.send(P5, &frame);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
    // Both later packets found the flow; only the one that fits used it, and only that one
    // counts as a hit (the other went to the slow path: a miss).
    let flow = lab.pipeline.counters().flow;
    assert_eq!((flow.hits, flow.misses), (1, 2));
    assert_eq!(flow.inserts, 1);
}

/// Reassembles IPv4 fragments (inner packets): returns the header of the first one and the
/// whole payload, checking offsets and the MF bits.
fn reassemble(fragments: &[Vec<u8>]) -> (Vec<u8>, Vec<u8>) {
    let mut pieces: Vec<(usize, bool, Vec<u8>, Vec<u8>)> = fragments
        .iter()
        .map(|ip| {
            let (header, _) = Ipv4Header::from_slice(ip).expect("fragment header");
            let offset = header.fragment_offset.value() as usize * 8;
            (
                offset,
                header.more_fragments,
                ip[..ihl(ip)].to_vec(),
                ip[ihl(ip)..].to_vec(),
            )
        })
        .collect();
    pieces.sort_by_key(|p| p.0);
    let mut payload = Vec::new();
    for (i, (offset, more, _, data)) in pieces.iter().enumerate() {
        assert_eq!(*offset, payload.len(), "fragments are contiguous");
        assert_eq!(*more, i + 1 < pieces.len(), "MF on all but the last");
        payload.extend_from_slice(data);
    }
    (pieces[0].2.clone(), payload)
}

#[test]
fn packet_without_df_is_fragmented_then_each_fragment_encapsulated() {
    let mut lab = Lab::vxlan();
    let frame = from_pod_sized(REMOTE_POD_V4, 1500, false);
    let run = lab.send(P5, &frame);
    assert_eq!(run.verdict, Verdict::Consumed);
    lab.assert_drops(&[]);
    assert_eq!(run.emitted.len(), 2, "1480 bytes of UDP in two fragments");
    let original = ipv4_of(&frame);
    let mut inner_packets = Vec::new();
    let mut idents = BTreeSet::new();
    for emitted in &run.emitted {
        assert_eq!(emitted.port, PortId(1));
        assert!(emitted.frame.len() <= 14 + 1500, "fits the underlay");
        let outer = check_outer(&emitted.frame, 1, N[1], REMOTE_VTEP);
        assert!(!outer.dont_fragment);
        idents.insert(outer.ident);
        let inner = &outer.inner;
        assert_eq!(&inner[0..6], &REMOTE_MAC);
        assert_eq!(&inner[6..12], &TUNNEL_MAC);
        let ip = ipv4_of(inner);
        assert!(ip.len() <= TUNNEL_MTU, "{}-byte fragment", ip.len());
        assert!(ipv4_header_ok(ip), "fragment header checksum");
        assert_eq!(ip[8], 63, "TTL decremented once");
        assert_eq!(&ip[4..6], &original[4..6], "ident of the datagram kept");
        assert_eq!(&ip[12..20], &original[12..20]);
        inner_packets.push(ip.to_vec());
    }
    assert_eq!(idents.len(), 2, "each outer packet has its own ident");
    let (_, payload) = reassemble(&inner_packets);
    assert_eq!(
        payload,
        &original[20..],
        "reassembles to the original datagram"
    );
    let counters = lab.pipeline.counters();
    assert_eq!(counters.ports[1].tx_packets, 2);
    assert_eq!(counters.ports[6].tx_packets, 2);
    assert_eq!(counters.remotes[0].tx_packets, 2);
}

#[test]
fn ipv6_too_big_for_the_tunnel_gets_packet_too_big() {
    let mut lab = Lab::vxlan();
    let payload = vec![0x5a; 1500 - 48];
    let frame = udp6(POD, R5, POD_V6, REMOTE_POD_V6, 64, &payload);
    assert_eq!(ipv6_of(&frame).len(), 1500);
    let run = lab.send(P5, &frame);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::FragmentationNeeded));
    lab.assert_drops(&[(DropReason::FragmentationNeeded, 1)]);
    assert_eq!(run.emitted.len(), 1);
    assert_eq!(run.emitted[0].port, PortId(P5));
    let rest = check_icmp6_error_frame(&run.emitted[0].frame, R5, P5_V6, POD, POD_V6, 2, 0, &frame);
    assert_eq!(u32::from_be_bytes(rest), 1450);
    // 1450 passes.
    let payload = vec![0x5a; 1450 - 48];
    let frame = udp6(POD, R5, POD_V6, REMOTE_POD_V6, 64, &payload);
    let run = lab.send(P5, &frame);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
    assert_eq!(run.frame.len(), 14 + 1500);
}

#[test]
fn a_smaller_underlay_mtu_lowers_the_path_mtu() {
    // p1's MTU drops to 1400: the tunnel (still 1450) is capped at 1400 - 50.
    let mut lab = Lab::vxlan();
    lab.apply(&[TableOp::SetPortMtu {
        id: PortId(1),
        mtu: 1400,
    }]);
    let frame = from_pod_sized(REMOTE_POD_V4, 1400, true);
    let run = lab.send(P5, &frame);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::FragmentationNeeded));
    let rest = check_icmp4_error_frame(&run.emitted[0].frame, R5, P5_V4, POD, POD_V4, 3, 4, &frame);
    assert_eq!(u16::from_be_bytes([rest[2], rest[3]]), 1350);
    let run = lab.send(P5, &from_pod_sized(REMOTE_POD_V4, 1350, true));
    assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
    assert_eq!(run.frame.len(), 14 + 1400);
}

// --- replies through the tunnel -----------------------------------------------------------------

#[test]
fn echo_request_through_the_tunnel_is_answered_through_it() {
    // From the remote VTEP of the route and from another one: the reply goes back to the
    // outer source, whatever the routes say.
    for (vtep, next_mac) in [(REMOTE_VTEP, N[1]), (FAR_VTEP, N[1])] {
        let mut lab = Lab::vxlan();
        let inner = icmp4_echo(
            REMOTE_MAC,
            TUNNEL_MAC,
            REMOTE_POD_V4,
            P5_V4,
            64,
            7,
            9,
            PAYLOAD,
        );
        let outer = vxlan_frame(
            N[1],
            R[1],
            vtep,
            VTEP,
            50001,
            vxlan_header(0x08, VNI),
            &inner,
            false,
        );
        let run = lab.send(1, &outer);
        assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
        lab.assert_drops(&[]);
        let reply = check_outer(&run.frame, 1, next_mac, vtep);
        let frame = &reply.inner;
        assert_eq!(
            &frame[0..6],
            &REMOTE_MAC,
            "inner reply to the requester's MAC"
        );
        assert_eq!(
            &frame[6..12],
            &TUNNEL_MAC,
            "inner reply from the tunnel's MAC"
        );
        let ip = ipv4_of(frame);
        assert!(ipv4_header_ok(ip));
        assert!(ipv4_l4_ok(ip), "ICMP checksum of the reply");
        assert_eq!(&ip[12..16], &P5_V4);
        assert_eq!(&ip[16..20], &REMOTE_POD_V4);
        let icmp = &ip[20..];
        assert_eq!((icmp[0], icmp[1]), (0, 0), "echo reply");
        assert_eq!(&icmp[4..8], &[0, 7, 0, 9], "identifier and sequence");
        assert_eq!(&icmp[8..], PAYLOAD);
        let counters = lab.pipeline.counters();
        assert_eq!(counters.replied, 1);
        assert_eq!(counters.ports[1].tx_packets, 1);
        assert_eq!(counters.ports[6].rx_packets, 1);
        assert_eq!(counters.ports[6].tx_packets, 1);
        let remote = counters.remotes[0];
        assert_eq!(remote.remote, Ipv4Addr::from(vtep));
        assert_eq!((remote.rx_packets, remote.tx_packets), (1, 1));
        assert_eq!(remote.tx_bytes, run.frame.len() as u64);
    }
}

#[test]
fn ipv6_echo_through_the_tunnel_is_answered_through_it() {
    let mut lab = Lab::vxlan();
    let inner = icmp6_echo(
        REMOTE_MAC,
        TUNNEL_MAC,
        REMOTE_POD_V6,
        P5_V6,
        64,
        3,
        4,
        PAYLOAD,
    );
    let run = lab.send(1, &from_remote_vtep(&inner));
    assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
    let reply = check_outer(&run.frame, 1, N[1], REMOTE_VTEP);
    let frame = &reply.inner;
    assert_eq!(&frame[0..6], &REMOTE_MAC);
    assert_eq!(&frame[6..12], &TUNNEL_MAC);
    let ip = ipv6_of(frame);
    let (header, _) = Ipv6Header::from_slice(ip).expect("ipv6");
    assert_eq!(header.source, P5_V6);
    assert_eq!(header.destination, REMOTE_POD_V6);
    assert!(ipv6_l4_ok(ip, 40, 58));
    assert_eq!(ip[40], 129, "echo reply");
}

#[test]
fn ttl_expiring_in_the_overlay_gets_time_exceeded_through_the_tunnel() {
    let mut lab = Lab::vxlan();
    let inner = inner_to_pod(1);
    let outer = vxlan_frame(
        N[1],
        R[1],
        FAR_VTEP,
        VTEP,
        50002,
        vxlan_header(0x08, VNI),
        &inner,
        false,
    );
    let run = lab.send(1, &outer);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::TtlExceeded));
    lab.assert_drops(&[(DropReason::TtlExceeded, 1)]);
    assert_eq!(run.emitted.len(), 1);
    let emitted = &run.emitted[0];
    assert_eq!(
        emitted.port,
        PortId(1),
        "emitted on the underlay, not the tunnel"
    );
    let error = check_outer(&emitted.frame, 1, N[1], FAR_VTEP);
    assert!(!error.dont_fragment);
    // The inner error: from an address of VRF 1, to the sender, quoting the inner packet.
    let rest = check_icmp4_error_frame(
        &error.inner,
        TUNNEL_MAC,
        P5_V4,
        REMOTE_MAC,
        REMOTE_POD_V4,
        11,
        0,
        &inner,
    );
    assert_eq!(rest, [0; 4]);
    let counters = lab.pipeline.counters();
    assert_eq!(counters.ports[1].tx_packets, 1);
    assert_eq!(counters.remotes.len(), 1);
    assert_eq!(counters.remotes[0].remote, Ipv4Addr::from(FAR_VTEP));
    assert_eq!(counters.remotes[0].tx_packets, 1);
}

#[test]
fn hop_limit_expiring_in_the_overlay_gets_time_exceeded_through_the_tunnel() {
    let mut lab = Lab::vxlan();
    let inner = udp6(REMOTE_MAC, TUNNEL_MAC, REMOTE_POD_V6, POD_V6, 1, PAYLOAD);
    let run = lab.send(1, &from_remote_vtep(&inner));
    assert_eq!(run.verdict, Verdict::Drop(DropReason::TtlExceeded));
    assert_eq!(run.emitted.len(), 1);
    assert_eq!(run.emitted[0].port, PortId(1));
    let error = check_outer(&run.emitted[0].frame, 1, N[1], REMOTE_VTEP);
    check_icmp6_error_frame(
        &error.inner,
        TUNNEL_MAC,
        P5_V6,
        REMOTE_MAC,
        REMOTE_POD_V6,
        3,
        0,
        &inner,
    );
}

#[test]
fn error_about_a_tunnelled_packet_to_an_unreachable_overlay_destination() {
    // Routed from the tunnel to an overlay destination with no route: net unreachable back
    // through the tunnel.
    let mut lab = Lab::vxlan();
    let inner = udp4(
        REMOTE_MAC,
        TUNNEL_MAC,
        REMOTE_POD_V4,
        [10, 250, 0, 1],
        64,
        PAYLOAD,
    );
    let run = lab.send(1, &from_remote_vtep(&inner));
    assert_eq!(run.verdict, Verdict::Drop(DropReason::NoRoute));
    assert_eq!(run.emitted.len(), 1);
    assert_eq!(run.emitted[0].port, PortId(1));
    let error = check_outer(&run.emitted[0].frame, 1, N[1], REMOTE_VTEP);
    check_icmp4_error_frame(
        &error.inner,
        TUNNEL_MAC,
        P5_V4,
        REMOTE_MAC,
        REMOTE_POD_V4,
        3,
        0,
        &inner,
    );
}

#[test]
fn tunnel_to_tunnel_hairpin_is_reencapsulated() {
    // A packet from one remote to another remote's overlay subnet goes back into the tunnel.
    let mut lab = Lab::vxlan();
    let inner = udp4(
        REMOTE_MAC,
        TUNNEL_MAC,
        REMOTE_POD_V4,
        [10, 244, 3, 3],
        64,
        PAYLOAD,
    );
    let outer = from_remote_vtep(&inner);
    for _ in 0..2 {
        let run = lab.send(1, &outer);
        assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
        let out = check_outer(&run.frame, 1, N[1], FAR_VTEP);
        check_forwarded_v4_macs(&out.inner, &inner, TUNNEL_MAC, REMOTE_MAC);
    }
    assert_eq!(lab.pipeline.counters().flow.hits, 1);
}

// --- underlay resolution ------------------------------------------------------------------------

const UNRESOLVED_MAC: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 0x77];

#[test]
fn unresolved_underlay_neighbor_holds_then_releases_on_arp_reply() {
    let mut lab = Lab::vxlan();
    let frame = from_pod_udp([10, 244, 4, 9], 64, PAYLOAD);
    let run = lab.send(P5, &frame);
    assert_eq!(run.verdict, Verdict::Consumed);
    lab.assert_drops(&[]);
    assert_eq!(lab.pipeline.held_packets(), 1);
    assert_eq!(run.emitted.len(), 1);
    assert_eq!(run.emitted[0].port, PortId(3));
    let (op, sha, spa, _, tpa) = parse_arp(&run.emitted[0].frame);
    assert_eq!(op, 1);
    assert_eq!(sha, R[3]);
    assert_eq!(spa, router_v4(3));
    assert_eq!(tpa, UNRESOLVED_VTEP);
    assert_eq!(&run.emitted[0].frame[0..6], &BROADCAST);

    let reply = arp(
        UNRESOLVED_MAC,
        R[3],
        2,
        UNRESOLVED_MAC,
        UNRESOLVED_VTEP,
        R[3],
        router_v4(3),
    );
    let run = lab.send_at(3, &reply, T0 + 10 * MS);
    assert_eq!(run.verdict, Verdict::Consumed);
    assert_eq!(lab.pipeline.held_packets(), 0);
    assert_eq!(run.emitted.len(), 1, "the held packet is released");
    let released = &run.emitted[0];
    assert_eq!(released.port, PortId(3));
    let outer = check_outer(&released.frame, 3, UNRESOLVED_MAC, UNRESOLVED_VTEP);
    check_forwarded_v4_macs(&outer.inner, &frame, TUNNEL_MAC, REMOTE_MAC);
    lab.assert_drops(&[]);
}

#[test]
fn unresolved_underlay_neighbor_released_after_a_table_update() {
    let mut lab = Lab::vxlan();
    let frames: Vec<(u16, Vec<u8>)> = (0..3u16)
        .map(|i| {
            (
                P5,
                udp4_ports(POD, R5, POD_V4, [10, 244, 4, 9], 64, 1000 + i, 80, PAYLOAD),
            )
        })
        .collect();
    let batch = lab.batch_at(&frames, T0);
    assert!(batch.verdicts.iter().all(|v| *v == Verdict::Consumed));
    assert_eq!(lab.pipeline.held_packets(), 3);
    let arps = batch
        .emitted
        .iter()
        .filter(|e| e.frame[12..14] == [0x08, 0x06])
        .count();
    assert_eq!(arps, 1, "one ARP request for the neighbor");
    lab.apply(&[TableOp::LearnNeighbor {
        port: PortId(3),
        ip: ip4(UNRESOLVED_VTEP),
        mac: ea(UNRESOLVED_MAC),
        now_ns: T0,
    }]);
    let released = lab.tick(T0 + 10 * MS);
    assert_eq!(released.len(), 3);
    for (emitted, (_, frame)) in released.iter().zip(&frames) {
        assert_eq!(emitted.port, PortId(3));
        let outer = check_outer(&emitted.frame, 3, UNRESOLVED_MAC, UNRESOLVED_VTEP);
        assert!(
            outer.inner == {
                let mut expected = frame.clone();
                expected[0..6].copy_from_slice(&REMOTE_MAC);
                expected[6..12].copy_from_slice(&TUNNEL_MAC);
                expected[14 + 8] -= 1;
                let sum = !ones_sum(&[&{
                    let mut h = expected[14..34].to_vec();
                    h[10] = 0;
                    h[11] = 0;
                    h
                }]);
                expected[24..26].copy_from_slice(&sum.to_be_bytes());
                expected
            }
        );
    }
    assert_eq!(lab.pipeline.held_packets(), 0);
    // Now resolved: the next packet is transmitted and installs a flow.
    let run = lab.send_at(P5, &frames[0].1, T0 + 20 * MS);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(3)));
    check_outer(&run.frame, 3, UNRESOLVED_MAC, UNRESOLVED_VTEP);
    lab.assert_drops(&[]);
}

#[test]
fn unresolved_underlay_neighbor_times_out_once() {
    let mut lab = Lab::vxlan();
    let run = lab.send(P5, &from_pod_udp([10, 244, 4, 9], 64, PAYLOAD));
    assert_eq!(run.verdict, Verdict::Consumed);
    for step in 1..=5 {
        lab.tick(T0 + step * 1000 * MS);
    }
    assert_eq!(lab.pipeline.held_packets(), 0);
    lab.assert_drops(&[(DropReason::NeighborUnresolved, 1)]);
}

#[test]
fn underlay_unreachable_is_dropped() {
    let mut lab = Lab::vxlan();
    let run = lab.send(P5, &from_pod_udp([10, 244, 5, 9], 64, PAYLOAD));
    assert_eq!(
        run.verdict,
        Verdict::Drop(DropReason::VxlanUnderlayUnreachable)
    );
    lab.assert_drops(&[(DropReason::VxlanUnderlayUnreachable, 1)]);
    assert!(run.emitted.is_empty());
    let counters = lab.pipeline.counters();
    assert_eq!(counters.ports[5].rx_dropped, 1);
    assert!(counters.remotes.is_empty());
    // A remote that is one of our own addresses is no underlay either.
    lab.apply(&[vxlan_route(OVERLAY, "10.244.6.0/24", router_v4(2))]);
    let run = lab.send(P5, &from_pod_udp([10, 244, 6, 9], 64, PAYLOAD));
    assert_eq!(
        run.verdict,
        Verdict::Drop(DropReason::VxlanUnderlayUnreachable)
    );
}

#[test]
fn ttl_expiring_towards_the_tunnel_is_answered_to_the_pod() {
    let mut lab = Lab::vxlan();
    let frame = from_pod_udp(REMOTE_POD_V4, 1, PAYLOAD);
    let run = lab.send(P5, &frame);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::TtlExceeded));
    assert_eq!(run.emitted.len(), 1);
    assert_eq!(run.emitted[0].port, PortId(P5));
    check_icmp4_error_frame(&run.emitted[0].frame, R5, P5_V4, POD, POD_V4, 11, 0, &frame);
}

// --- table changes ------------------------------------------------------------------------------

#[test]
fn removing_the_tunnel_stops_encapsulation_and_decapsulation() {
    let mut lab = Lab::vxlan();
    let frame = from_pod_udp(REMOTE_POD_V4, 64, PAYLOAD);
    assert_eq!(lab.send(P5, &frame).verdict, Verdict::Transmit(PortId(1)));
    lab.apply(&[TableOp::DelPort { id: PortId(TUNNEL) }]);
    // The cached flow is stale; the route went with the tunnel.
    let run = lab.send(P5, &frame);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::NoRoute));
    // 4789 to 10.0.1.1 is a local packet again.
    let run = lab.send(1, &from_remote_vtep(&inner_to_pod(64)));
    assert_eq!(run.verdict, Verdict::Drop(DropReason::LocalUnhandled));
}

#[test]
fn underlay_neighbor_change_is_followed_by_cached_flows() {
    let mut lab = Lab::vxlan();
    let frame = from_pod_udp(REMOTE_POD_V4, 64, PAYLOAD);
    assert_eq!(lab.send(P5, &frame).verdict, Verdict::Transmit(PortId(1)));
    let new_mac = [0x02, 0xbb, 0, 0, 0, 0x42];
    lab.apply(&[TableOp::AddNeighbor {
        port: PortId(1),
        ip: ip4(REMOTE_VTEP),
        mac: ea(new_mac),
    }]);
    let run = lab.send(P5, &frame);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
    check_outer(&run.frame, 1, new_mac, REMOTE_VTEP);
}

#[test]
fn bytes_after_the_inner_ip_packet_are_not_encapsulated() {
    // Ethernet padding or junk behind the IP packet: the outer packet must carry the IP
    // packet only, or a full-size inner packet would make an outer one beyond the underlay
    // MTU.
    let mut lab = Lab::vxlan();
    let frame = from_pod_sized(REMOTE_POD_V4, TUNNEL_MTU, true);
    let mut padded = frame.clone();
    padded.extend_from_slice(&[0xee; 50]);
    assert_eq!(padded.len(), 14 + 1500, "still fits p5");
    for _ in 0..2 {
        // Slow path, then the cached flow.
        let run = lab.send(P5, &padded);
        assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
        assert_eq!(run.frame.len(), 14 + 1500, "outer frame fits the underlay");
        let outer = check_outer(&run.frame, 1, N[1], REMOTE_VTEP);
        check_forwarded_v4_macs(&outer.inner, &frame, TUNNEL_MAC, REMOTE_MAC);
        assert_eq!(outer.inner.len(), frame.len());
    }
    // A minimum-size pod frame (60 bytes, padded by the sender).
    let mut small = from_pod_udp(REMOTE_POD_V4, 64, b"x");
    let ip_len = ipv4_of(&small).len();
    small.resize(60, 0);
    let run = lab.send(P5, &small);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
    assert_eq!(run.frame.len(), VXLAN_OVERHEAD + 14 + ip_len);
    let v6 = {
        let mut f = udp6(POD, R5, POD_V6, REMOTE_POD_V6, 64, PAYLOAD);
        f.extend_from_slice(&[0xee; 7]);
        f
    };
    let run = lab.send(P5, &v6);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
    assert_eq!(run.frame.len(), VXLAN_OVERHEAD + v6.len() - 7);
}

// --- a tunnel with an address of its own ---------------------------------------------------------

const TUNNEL_V4: [u8; 4] = [10, 245, 1, 0];

fn lab_with_tunnel_address() -> Lab {
    let mut lab = Lab::vxlan();
    lab.apply(&[TableOp::AddAddress {
        port: PortId(TUNNEL),
        address: iface("10.245.1.0/32"),
    }]);
    lab
}

#[test]
fn arp_request_through_the_tunnel_is_answered_through_it() {
    let mut lab = lab_with_tunnel_address();
    let inner = arp(
        REMOTE_MAC,
        BROADCAST,
        1,
        REMOTE_MAC,
        [10, 245, 2, 0],
        [0; 6],
        TUNNEL_V4,
    );
    let run = lab.send(1, &from_remote_vtep(&inner));
    assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
    let reply = check_outer(&run.frame, 1, N[1], REMOTE_VTEP);
    assert_eq!(&reply.inner[0..6], &REMOTE_MAC);
    assert_eq!(&reply.inner[6..12], &TUNNEL_MAC);
    let (op, sha, spa, tha, tpa) = parse_arp(&reply.inner);
    assert_eq!(op, 2);
    assert_eq!(sha, TUNNEL_MAC);
    assert_eq!(spa, TUNNEL_V4);
    assert_eq!(tha, REMOTE_MAC);
    assert_eq!(tpa, [10, 245, 2, 0]);
}

#[test]
fn errors_about_tunnelled_packets_come_from_the_tunnel_address() {
    let mut lab = lab_with_tunnel_address();
    let inner = inner_to_pod(1);
    let run = lab.send(1, &from_remote_vtep(&inner));
    assert_eq!(run.verdict, Verdict::Drop(DropReason::TtlExceeded));
    assert_eq!(run.emitted.len(), 1);
    let error = check_outer(&run.emitted[0].frame, 1, N[1], REMOTE_VTEP);
    check_icmp4_error_frame(
        &error.inner,
        TUNNEL_MAC,
        TUNNEL_V4,
        REMOTE_MAC,
        REMOTE_POD_V4,
        11,
        0,
        &inner,
    );
    // Echo to the tunnel's address.
    let echo = icmp4_echo(
        REMOTE_MAC,
        TUNNEL_MAC,
        REMOTE_POD_V4,
        TUNNEL_V4,
        64,
        1,
        1,
        PAYLOAD,
    );
    let run = lab.send(1, &from_remote_vtep(&echo));
    assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
    let reply = check_outer(&run.frame, 1, N[1], REMOTE_VTEP);
    let ip = ipv4_of(&reply.inner);
    assert_eq!(&ip[12..16], &TUNNEL_V4);
    assert_eq!(ip[20], 0);
    // And from the pod side: the tunnel's address answers.
    let echo = icmp4_echo(POD, R5, POD_V4, TUNNEL_V4, 64, 1, 1, PAYLOAD);
    let run = lab.send(P5, &echo);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(P5)));
    assert_eq!(&run.frame[0..6], &POD);
}

#[test]
fn neighbor_solicitation_through_the_tunnel_is_answered_through_it() {
    // An NS for the tunnel's link-local address: the advertisement goes back encapsulated,
    // never raw on the tunnel port.
    let mut lab = Lab::vxlan();
    let link_local = lab
        .tables
        .port(PortId(TUNNEL))
        .expect("tunnel")
        .link_local
        .octets();
    let remote_ll = v6b([0xfe80, 0, 0, 0, 0, 0, 0, 0x99]);
    let inner = neighbor_solicit(REMOTE_MAC, remote_ll, link_local, 255, Some(REMOTE_MAC));
    let run = lab.send(1, &from_remote_vtep(&inner));
    assert_eq!(run.verdict, Verdict::Consumed);
    assert_eq!(run.emitted.len(), 1);
    assert_eq!(run.emitted[0].port, PortId(1));
    let advert = check_outer(&run.emitted[0].frame, 1, N[1], REMOTE_VTEP);
    assert_eq!(&advert.inner[0..6], &REMOTE_MAC);
    assert_eq!(&advert.inner[6..12], &TUNNEL_MAC);
    let ip = ipv6_of(&advert.inner);
    assert_eq!(&ip[8..24], &link_local);
    assert_eq!(&ip[24..40], &remote_ll);
    assert!(ipv6_l4_ok(ip, 40, 58));
    assert_eq!(ip[40], 136, "neighbor advertisement");
    assert_eq!(&ip[48..64], &link_local, "target");
    assert_eq!(&ip[66..72], &TUNNEL_MAC, "target link-layer address");
    let counters = lab.pipeline.counters();
    assert_eq!(counters.ports[1].tx_packets, 1);
    assert_eq!(counters.remotes[0].tx_packets, 1);
}

#[test]
fn answers_to_a_vtep_without_underlay_route_are_not_sent_and_not_double_counted() {
    // A packet from a VTEP the underlay cannot reach: its own verdict is counted once; the
    // error about it, which cannot be sent back, is not a second drop.
    let mut lab = Lab::vxlan();
    let inner = inner_to_pod(1);
    let outer = vxlan_frame(
        N[1],
        R[1],
        UNREACHABLE_VTEP,
        VTEP,
        50000,
        vxlan_header(0x08, VNI),
        &inner,
        false,
    );
    let run = lab.send(1, &outer);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::TtlExceeded));
    assert!(run.emitted.is_empty());
    lab.assert_drops(&[(DropReason::TtlExceeded, 1)]);
    assert_eq!(lab.pipeline.icmp_errors_suppressed(), 1);
    // An echo request: the reply is the packet itself, dropped as underlay-unreachable.
    let echo = icmp4_echo(
        REMOTE_MAC,
        TUNNEL_MAC,
        REMOTE_POD_V4,
        P5_V4,
        64,
        1,
        1,
        PAYLOAD,
    );
    let outer = vxlan_frame(
        N[1],
        R[1],
        UNREACHABLE_VTEP,
        VTEP,
        50000,
        vxlan_header(0x08, VNI),
        &echo,
        false,
    );
    let run = lab.send(1, &outer);
    assert_eq!(
        run.verdict,
        Verdict::Drop(DropReason::VxlanUnderlayUnreachable)
    );
    lab.assert_drops(&[
        (DropReason::TtlExceeded, 1),
        (DropReason::VxlanUnderlayUnreachable, 1),
    ]);
}

#[test]
fn reply_to_an_unresolved_vtep_is_held_then_released() {
    let mut lab = Lab::vxlan();
    let echo = icmp4_echo(
        REMOTE_MAC,
        TUNNEL_MAC,
        REMOTE_POD_V4,
        P5_V4,
        64,
        1,
        1,
        PAYLOAD,
    );
    let outer = vxlan_frame(
        N[3],
        R[1],
        UNRESOLVED_VTEP,
        VTEP,
        50000,
        vxlan_header(0x08, VNI),
        &echo,
        false,
    );
    let run = lab.send(1, &outer);
    assert_eq!(run.verdict, Verdict::Consumed);
    assert_eq!(lab.pipeline.held_packets(), 1);
    assert_eq!(run.emitted.len(), 1);
    assert_eq!(run.emitted[0].port, PortId(3));
    assert_eq!(parse_arp(&run.emitted[0].frame).4, UNRESOLVED_VTEP);
    // Time exceeded towards the same VTEP joins the queue.
    let outer = vxlan_frame(
        N[3],
        R[1],
        UNRESOLVED_VTEP,
        VTEP,
        50000,
        vxlan_header(0x08, VNI),
        &inner_to_pod(1),
        false,
    );
    let run = lab.send(1, &outer);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::TtlExceeded));
    assert!(run.emitted.is_empty(), "no second ARP request");
    assert_eq!(lab.pipeline.held_packets(), 2);
    let reply = arp(
        UNRESOLVED_MAC,
        R[3],
        2,
        UNRESOLVED_MAC,
        UNRESOLVED_VTEP,
        R[3],
        router_v4(3),
    );
    let run = lab.send_at(3, &reply, T0 + 10 * MS);
    assert_eq!(run.emitted.len(), 2);
    let mut types = Vec::new();
    for emitted in &run.emitted {
        assert_eq!(emitted.port, PortId(3));
        let outer = check_outer(&emitted.frame, 3, UNRESOLVED_MAC, UNRESOLVED_VTEP);
        let ip = ipv4_of(&outer.inner);
        assert!(ipv4_l4_ok(ip));
        types.push(ip[20]);
    }
    types.sort();
    assert_eq!(types, vec![0, 11], "echo reply and time exceeded");
    lab.assert_drops(&[(DropReason::TtlExceeded, 1)]);
}

#[test]
fn overlay_in_the_underlay_vrf_like_flannel() {
    // Flannel keeps everything in one table: the tunnel in VRF 0 next to its uplink.
    let mut lab = Lab::new();
    lab.apply(&[
        TableOp::AddVxlan {
            id: PortId(TUNNEL),
            name: "flannel.1".into(),
            mac: ea(TUNNEL_MAC),
            mtu: None,
            vrf: pipelines::VrfId(0),
            params: lab_vxlan_params(),
        },
        vxlan_route(pipelines::VrfId(0), "10.244.2.0/24", REMOTE_VTEP),
    ]);
    // Host on p0 to a remote pod: encapsulated.
    let frame = udp4(H0, R[0], H0_V4, REMOTE_POD_V4, 64, PAYLOAD);
    let run = lab.send(0, &frame);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
    let outer = check_outer(&run.frame, 1, N[1], REMOTE_VTEP);
    check_forwarded_v4_macs(&outer.inner, &frame, TUNNEL_MAC, REMOTE_MAC);
    // Remote pod to the host on p0: decapsulated and forwarded.
    let inner = udp4(REMOTE_MAC, TUNNEL_MAC, REMOTE_POD_V4, H0_V4, 64, PAYLOAD);
    let run = lab.send(1, &from_remote_vtep(&inner));
    assert_eq!(run.verdict, Verdict::Transmit(PortId(0)));
    check_forwarded_v4(&run.frame, &inner, 0, H0);
    // Plain traffic to the remote VTEP itself is not encapsulated.
    let frame = udp4(H0, R[0], H0_V4, REMOTE_VTEP, 64, PAYLOAD);
    let run = lab.send(0, &frame);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
    check_forwarded_v4(&run.frame, &frame, 1, N[1]);
    // A route into the tunnel for the remote VTEP's own address does not loop: the underlay
    // of a tunnel is never a tunnel.
    lab.apply(&[vxlan_route(pipelines::VrfId(0), "10.0.1.2/32", REMOTE_VTEP)]);
    let run = lab.send(0, &frame);
    assert_eq!(
        run.verdict,
        Verdict::Drop(DropReason::VxlanUnderlayUnreachable)
    );
    lab.assert_drops(&[(DropReason::VxlanUnderlayUnreachable, 1)]);
}

#[test]
fn per_remote_counters_are_bounded_against_spoofed_sources() {
    // Every outer source gets its own counters up to the cap; past it, a new source is only
    // counted on the tunnel port (sources can be spoofed, memory must not grow with them).
    let mut lab = Lab::vxlan();
    let inner = inner_to_pod(64);
    let sources = 4096 + 50;
    let frames: Vec<(u16, Vec<u8>)> = (0..sources)
        .map(|i| {
            let src = [172, 20, (i >> 8) as u8, i as u8];
            let frame = vxlan_frame(
                N[1],
                R[1],
                src,
                VTEP,
                50000,
                vxlan_header(0x08, VNI),
                &inner,
                false,
            );
            (1, frame)
        })
        .collect();
    for chunk in frames.chunks(64) {
        let run = lab.batch_at(chunk, T0);
        assert!(run
            .verdicts
            .iter()
            .all(|v| *v == Verdict::Transmit(PortId(P5))));
    }
    let counters = lab.pipeline.counters();
    assert_eq!(counters.remotes.len(), 4096);
    let counted: u64 = counters.remotes.iter().map(|r| r.rx_packets).sum();
    assert_eq!(counted, 4096);
    assert_eq!(counters.ports[6].rx_packets, sources as u64);
}

/// The inner frame of `outer` as a Linux sender with local checksum offload leaves it: the
/// TCP checksum field holding only the pseudo-header sum, the outer UDP checksum computed for
/// the completed segment.
fn with_partial_inner_tcp(outer: &mut [u8]) {
    let ip = 50 + 14;
    let tcp = ip + 20;
    let length = (outer.len() - tcp) as u16;
    let pseudo = ones_sum(&[&outer[ip + 12..ip + 20], &[0, 6], &length.to_be_bytes()]);
    outer[tcp + 16..tcp + 18].copy_from_slice(&pseudo.to_be_bytes());
}

#[test]
fn outer_checksum_over_a_partial_inner_checksum_is_accepted_and_the_inner_one_completed() {
    // What a Linux node's flannel.1 sends for a pod's TCP segment over a veth: outer UDP
    // checksum on (Linux's default), computed with local checksum offload.
    let mut lab = Lab::vxlan();
    let inner = tcp4(REMOTE_MAC, TUNNEL_MAC, REMOTE_POD_V4, POD_V4, 64, PAYLOAD);
    let mut outer = with_outer(&inner, vxlan_header(0x08, VNI), true);
    with_partial_inner_tcp(&mut outer);
    let run = lab.send(1, &outer);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(P5)));
    lab.assert_drops(&[]);
    // Delivered with the TCP checksum complete: the original segment, TTL and MACs aside.
    check_forwarded_v4_macs(&run.frame, &inner, R5, POD);
    assert_eq!(
        run.frame[14 + 20 + 16..14 + 20 + 18],
        inner[14 + 20 + 16..14 + 20 + 18]
    );

    // A flipped bit in the headers the outer checksum covers is still corruption: dropped.
    // (With local checksum offload the outer checksum cannot protect the inner payload: the
    // completed inner checksum makes the segment's sum whatever its bytes; Linux accepts
    // such packets unverified from a veth as well.)
    let mut corrupt = outer.clone();
    corrupt[14 + 20] ^= 0x01;
    decap_drop(&corrupt, DropReason::VxlanBadChecksum);
}

#[test]
fn inner_frames_larger_than_the_tunnel_mtu_are_routed_not_dropped() {
    // A peer whose overlay MTU is larger than ours (ours set to 1400 here): what comes out of
    // the tunnel is not limited by the tunnel's MTU, as on Linux; the pod port's 1500 applies.
    let mut lab = Lab::vxlan();
    lab.apply(&[TableOp::SetPortMtu {
        id: PortId(TUNNEL),
        mtu: 1400,
    }]);
    let inner = udp4(
        REMOTE_MAC,
        TUNNEL_MAC,
        REMOTE_POD_V4,
        POD_V4,
        64,
        &vec![0x42; 1450 - 28],
    );
    let run = lab.send(1, &from_remote_vtep(&inner));
    assert_eq!(run.verdict, Verdict::Transmit(PortId(P5)));
    assert_eq!(run.frame.len(), inner.len());
    lab.assert_drops(&[]);
}
