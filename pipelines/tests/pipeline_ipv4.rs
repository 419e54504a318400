//! Stage tests of the IPv4 path: built frames through `Pipeline::process`, asserting the exact
//! verdict, the named drop counter and every frame the router emits.

mod common;

use common::*;
use pipelines::{DropReason, PortId, TableOp, Verdict, VrfId};

const PAYLOAD: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

fn from_h0_udp(dst: [u8; 4], ttl: u8, payload: &[u8]) -> Vec<u8> {
    udp4(H0, R[0], H0_V4, dst, ttl, payload)
}

// --- forwarding -------------------------------------------------------------------------------

#[test]
fn udp_is_forwarded_with_ttl_decremented_and_checksum_valid() {
    let mut lab = Lab::new();
    let frame = from_h0_udp([192, 168, 5, 5], 64, PAYLOAD);
    let run = lab.send(0, &frame);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
    check_forwarded_v4(&run.frame, &frame, 1, N[1]);
    assert!(run.emitted.is_empty());
    lab.assert_drops(&[]);
    let counters = lab.pipeline.counters();
    assert_eq!(counters.ports[0].rx_packets, 1);
    assert_eq!(counters.ports[1].tx_packets, 1);
    assert_eq!(counters.ports[1].tx_bytes, frame.len() as u64);
}

#[test]
fn ttl_two_is_forwarded_with_ttl_one() {
    let mut lab = Lab::new();
    let frame = from_h0_udp([192, 168, 5, 5], 2, PAYLOAD);
    let run = lab.send(0, &frame);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
    check_forwarded_v4(&run.frame, &frame, 1, N[1]);
    assert_eq!(ipv4_of(&run.frame)[8], 1);
    lab.assert_drops(&[]);
}

#[test]
fn ttl_one_and_zero_get_time_exceeded() {
    for ttl in [1u8, 0] {
        let mut lab = Lab::new();
        let frame = from_h0_udp([192, 168, 5, 5], ttl, PAYLOAD);
        let run = lab.send(0, &frame);
        assert_eq!(
            run.verdict,
            Verdict::Drop(DropReason::TtlExceeded),
            "ttl {ttl}"
        );
        lab.assert_drops(&[(DropReason::TtlExceeded, 1)]);
        assert_eq!(run.emitted.len(), 1, "one ICMP error for ttl {ttl}");
        let rest = check_icmp4_error(&run.emitted[0], 0, H0, H0_V4, 11, 0, &frame);
        assert_eq!(rest, [0; 4]);
    }
}

#[test]
fn udp_with_empty_payload_is_forwarded() {
    let mut lab = Lab::new();
    let frame = from_h0_udp([192, 168, 5, 5], 64, &[]);
    assert_eq!(ipv4_of(&frame).len(), 28);
    let run = lab.send(0, &frame);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
    check_forwarded_v4(&run.frame, &frame, 1, N[1]);
    lab.assert_drops(&[]);
}

#[test]
fn ip_options_are_forwarded_untouched() {
    let mut lab = Lab::new();
    let mut header = ipv4_header(H0_V4, [192, 168, 5, 5], 64, true);
    // Two NOPs and an end-of-list padded to 4 bytes: IHL 6.
    header.options = [1u8, 1, 0, 0].into();
    let frame = udp4_with_header(H0, R[0], header, PAYLOAD);
    assert_eq!(ihl(ipv4_of(&frame)), 24);
    let run = lab.send(0, &frame);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
    check_forwarded_v4(&run.frame, &frame, 1, N[1]);
}

// --- malformed input --------------------------------------------------------------------------

fn single_drop(frame: &[u8], reason: DropReason) {
    let mut lab = Lab::new();
    let run = lab.send(0, frame);
    assert_eq!(run.verdict, Verdict::Drop(reason), "frame {frame:02x?}");
    lab.assert_drops(&[(reason, 1)]);
    assert!(run.emitted.is_empty(), "no reply to a malformed frame");
    assert_eq!(lab.pipeline.counters().ports[0].rx_dropped, 1);
}

#[test]
fn truncated_ethernet_header() {
    let frame = from_h0_udp([192, 168, 5, 5], 64, PAYLOAD);
    single_drop(&frame[..13], DropReason::EthernetTruncated);
    single_drop(&[], DropReason::EthernetTruncated);
}

#[test]
fn truncated_ipv4_header() {
    let frame = from_h0_udp([192, 168, 5, 5], 64, PAYLOAD);
    single_drop(&frame[..14 + 19], DropReason::Ipv4Truncated);
    single_drop(&frame[..14], DropReason::Ipv4Truncated);
}

fn with_ip_edit(frame: &[u8], edit: impl FnOnce(&mut [u8]), fix_checksum: bool) -> Vec<u8> {
    let mut frame = frame.to_vec();
    edit(&mut frame[14..]);
    if fix_checksum {
        let ip = &mut frame[14..];
        let len = ihl(ip).clamp(20, ip.len());
        ip[10] = 0;
        ip[11] = 0;
        let sum = !ones_sum(&[&ip[..len]]);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
    }
    frame
}

#[test]
fn ihl_below_five() {
    let frame = from_h0_udp([192, 168, 5, 5], 64, PAYLOAD);
    for ihl in 0..5u8 {
        let bad = with_ip_edit(&frame, |ip| ip[0] = 0x40 | ihl, true);
        single_drop(&bad, DropReason::Ipv4BadHeaderLength);
    }
}

#[test]
fn ihl_beyond_the_frame() {
    // IHL 15 (60 bytes) in a frame holding a 20-byte header and 8 bytes of UDP.
    let frame = from_h0_udp([192, 168, 5, 5], 64, &[]);
    let bad = with_ip_edit(&frame, |ip| ip[0] = 0x4f, true);
    assert!(bad.len() - 14 < 60);
    single_drop(&bad, DropReason::Ipv4BadHeaderLength);
}

#[test]
fn bad_header_checksum() {
    let frame = from_h0_udp([192, 168, 5, 5], 64, PAYLOAD);
    let bad = with_ip_edit(&frame, |ip| ip[10] ^= 0x01, false);
    single_drop(&bad, DropReason::Ipv4BadChecksum);
}

#[test]
fn total_length_larger_than_the_frame() {
    let frame = from_h0_udp([192, 168, 5, 5], 64, PAYLOAD);
    let len = ipv4_of(&frame).len() as u16 + 1;
    let bad = with_ip_edit(
        &frame,
        |ip| ip[2..4].copy_from_slice(&len.to_be_bytes()),
        true,
    );
    single_drop(&bad, DropReason::Ipv4BadTotalLength);
    let short = with_ip_edit(
        &frame,
        |ip| ip[2..4].copy_from_slice(&19u16.to_be_bytes()),
        true,
    );
    single_drop(&short, DropReason::Ipv4BadTotalLength);
}

#[test]
fn ethernet_padding_is_not_part_of_the_packet() {
    // A 60-byte minimum frame around a short packet: padding is ignored, the frame forwarded.
    let mut lab = Lab::new();
    let mut frame = from_h0_udp([192, 168, 5, 5], 64, b"x");
    frame.resize(60, 0xee);
    let run = lab.send(0, &frame);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
    check_forwarded_v4(&run.frame, &frame, 1, N[1]);
}

#[test]
fn bad_version() {
    let frame = from_h0_udp([192, 168, 5, 5], 64, PAYLOAD);
    let bad = with_ip_edit(&frame, |ip| ip[0] = 0x65, true);
    single_drop(&bad, DropReason::Ipv4BadVersion);
}

#[test]
fn truncated_transport_headers() {
    // The IP total length says the transport header is cut short.
    let udp = from_h0_udp([192, 168, 5, 5], 64, &[]);
    let cut = |frame: &[u8], keep: usize| {
        let total = (20 + keep) as u16;
        let mut f = with_ip_edit(
            frame,
            |ip| ip[2..4].copy_from_slice(&total.to_be_bytes()),
            true,
        );
        f.truncate(14 + 20 + keep);
        f
    };
    single_drop(&cut(&udp, 7), DropReason::L4Truncated);
    let tcp = tcp4(H0, R[0], H0_V4, [192, 168, 5, 5], 64, &[]);
    single_drop(&cut(&tcp, 19), DropReason::L4Truncated);
    let icmp = icmp4_echo(H0, R[0], H0_V4, [192, 168, 5, 5], 64, 1, 1, &[]);
    single_drop(&cut(&icmp, 7), DropReason::L4Truncated);
    // ICMP to the router itself, truncated.
    let icmp = icmp4_echo(H0, R[0], H0_V4, router_v4(0), 64, 1, 1, &[]);
    single_drop(&cut(&icmp, 4), DropReason::L4Truncated);
}

#[test]
fn ethernet_level_drops() {
    let frame = from_h0_udp([192, 168, 5, 5], 64, PAYLOAD);
    // Not our MAC.
    let mut other = frame.clone();
    other[0..6].copy_from_slice(&N[1]);
    single_drop(&other, DropReason::EthernetNotForUs);
    // Multicast source MAC.
    let mut multicast_src = frame.clone();
    multicast_src[6] |= 1;
    single_drop(&multicast_src, DropReason::EthernetSourceInvalid);
    // 802.1Q tag.
    let tagged = ethernet(H0, R[0], 0x8100, &[0, 5, 0x08, 0, 0x45]);
    single_drop(&tagged, DropReason::VlanUnexpected);
    // Unknown EtherType.
    single_drop(
        &ethernet(H0, R[0], 0x88cc, &[0; 46]),
        DropReason::EtherTypeUnsupported,
    );
    // Longer than the port MTU allows.
    let long = from_h0_udp([192, 168, 5, 5], 64, &[0u8; 1500 - 28 + 1]);
    single_drop(&long, DropReason::FrameTooLong);
}

#[test]
fn unknown_ingress_port() {
    let mut lab = Lab::new();
    let run = lab.send(9, &from_h0_udp([192, 168, 5, 5], 64, PAYLOAD));
    assert_eq!(run.verdict, Verdict::Drop(DropReason::PortUnknown));
    lab.assert_drops(&[(DropReason::PortUnknown, 1)]);
}

#[test]
fn martian_addresses() {
    single_drop(
        &udp4(H0, R[0], [127, 0, 0, 1], [192, 168, 5, 5], 64, PAYLOAD),
        DropReason::Ipv4SourceInvalid,
    );
    single_drop(
        &udp4(H0, R[0], [224, 0, 0, 1], [192, 168, 5, 5], 64, PAYLOAD),
        DropReason::Ipv4SourceInvalid,
    );
    single_drop(
        &from_h0_udp([224, 0, 0, 5], 64, PAYLOAD),
        DropReason::Ipv4DestinationInvalid,
    );
    single_drop(
        &from_h0_udp([255, 255, 255, 255], 64, PAYLOAD),
        DropReason::Ipv4DestinationInvalid,
    );
}

// --- routing ----------------------------------------------------------------------------------

#[test]
fn longest_prefix_wins() {
    let mut lab = Lab::new();
    let wide = lab.send(0, &from_h0_udp([192, 168, 2, 9], 64, PAYLOAD));
    assert_eq!(wide.verdict, Verdict::Transmit(PortId(1)));
    assert_eq!(&wide.frame[0..6], &N[1]);
    let narrow = lab.send(0, &from_h0_udp([192, 168, 1, 9], 64, PAYLOAD));
    assert_eq!(narrow.verdict, Verdict::Transmit(PortId(3)));
    assert_eq!(&narrow.frame[0..6], &N[3]);
    // The connected /24 beats nothing else; its neighbor is the destination itself.
    let connected = lab.send(0, &from_h0_udp(neighbor_v4(2), 64, PAYLOAD));
    assert_eq!(connected.verdict, Verdict::Transmit(PortId(2)));
    assert_eq!(&connected.frame[0..6], &N[2]);
    lab.assert_drops(&[]);
}

#[test]
fn blackhole_drops_silently() {
    let mut lab = Lab::new();
    let run = lab.send(0, &from_h0_udp([172, 16, 1, 1], 64, PAYLOAD));
    assert_eq!(run.verdict, Verdict::Drop(DropReason::Blackhole));
    assert!(run.emitted.is_empty());
    lab.assert_drops(&[(DropReason::Blackhole, 1)]);
}

#[test]
fn unreachable_route_sends_host_unreachable() {
    let mut lab = Lab::new();
    let frame = from_h0_udp([172, 17, 1, 1], 64, PAYLOAD);
    let run = lab.send(0, &frame);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::Unreachable));
    lab.assert_drops(&[(DropReason::Unreachable, 1)]);
    assert_eq!(run.emitted.len(), 1);
    check_icmp4_error(&run.emitted[0], 0, H0, H0_V4, 3, 1, &frame);
}

#[test]
fn no_route_sends_net_unreachable() {
    let mut lab = Lab::new();
    let frame = from_h0_udp([8, 8, 8, 8], 64, PAYLOAD);
    let run = lab.send(0, &frame);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::NoRoute));
    lab.assert_drops(&[(DropReason::NoRoute, 1)]);
    assert_eq!(run.emitted.len(), 1);
    check_icmp4_error(&run.emitted[0], 0, H0, H0_V4, 3, 0, &frame);
}

#[test]
fn directed_broadcast_is_dropped() {
    let mut lab = Lab::new();
    let run = lab.send(0, &from_h0_udp([10, 0, 1, 255], 64, PAYLOAD));
    assert_eq!(run.verdict, Verdict::Drop(DropReason::DirectedBroadcast));
    assert!(run.emitted.is_empty());
    lab.assert_drops(&[(DropReason::DirectedBroadcast, 1)]);
}

#[test]
fn no_icmp_error_about_an_icmp_error() {
    let mut lab = Lab::new();
    // A time-exceeded message in transit, itself expiring.
    let frame = icmp4_raw(H0, R[0], H0_V4, [192, 168, 5, 5], 1, 11, 0, &[0u8; 28]);
    let run = lab.send(0, &frame);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::TtlExceeded));
    assert!(run.emitted.is_empty());
    assert_eq!(lab.pipeline.icmp_errors_suppressed(), 1);
    // An echo request expiring does get one.
    let echo = icmp4_echo(H0, R[0], H0_V4, [192, 168, 5, 5], 1, 7, 1, PAYLOAD);
    let run = lab.send(0, &echo);
    assert_eq!(run.emitted.len(), 1);
    check_icmp4_error(&run.emitted[0], 0, H0, H0_V4, 11, 0, &echo);
}

#[test]
fn no_icmp_error_about_a_later_fragment() {
    let mut lab = Lab::new();
    let mut header = ipv4_header(H0_V4, [192, 168, 5, 5], 1, false);
    header.fragment_offset = 8u16.try_into().expect("offset"); // 64 bytes
    let frame = udp4_with_header(H0, R[0], header, PAYLOAD);
    let run = lab.send(0, &frame);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::TtlExceeded));
    assert!(run.emitted.is_empty());
    assert_eq!(lab.pipeline.icmp_errors_suppressed(), 1);
}

#[test]
fn icmp_errors_are_rate_limited() {
    let mut lab = Lab::with_config(pipelines::PipelineConfig {
        icmp_errors_per_sec: 10,
        icmp_errors_burst: 2,
        ..lab_config()
    });
    let frames: Vec<(u16, Vec<u8>)> = (0..5)
        .map(|i| (0, from_h0_udp([8, 8, 8, i], 64, PAYLOAD)))
        .collect();
    let batch = lab.batch_at(&frames, T0);
    assert!(batch
        .verdicts
        .iter()
        .all(|v| *v == Verdict::Drop(DropReason::NoRoute)));
    assert_eq!(batch.emitted.len(), 2);
    assert_eq!(lab.pipeline.counters().icmp_rate_limited, 3);
    lab.assert_drops(&[(DropReason::NoRoute, 5)]);
    // 100 ms later one token is back.
    let later = lab.send_at(0, &from_h0_udp([8, 8, 8, 8], 64, PAYLOAD), T0 + 100 * MS);
    assert_eq!(later.emitted.len(), 1);
}

// --- ECMP -------------------------------------------------------------------------------------

#[test]
fn ecmp_keeps_a_flow_on_one_member() {
    let mut lab = Lab::new();
    let mut ports = std::collections::HashSet::new();
    for i in 0..50u64 {
        let frame = from_h0_udp([198, 51, 100, 7], 64, PAYLOAD);
        let run = lab.send_at(0, &frame, T0 + i * MS);
        let Verdict::Transmit(port) = run.verdict else {
            panic!("not forwarded: {:?}", run.verdict);
        };
        assert_eq!(&run.frame[0..6], &N[port.0 as usize], "MAC of that member");
        ports.insert(port);
    }
    assert_eq!(ports.len(), 1, "one flow, one member: {ports:?}");
}

#[test]
fn ecmp_spreads_flows_over_all_members() {
    let mut lab = Lab::new();
    let mut per_port = [0u32; 5];
    let frames: Vec<(u16, Vec<u8>)> = (0..1000u16)
        .map(|i| {
            (
                0,
                udp4_ports(
                    H0,
                    R[0],
                    H0_V4,
                    [198, 51, 100, (i % 200) as u8 + 1],
                    64,
                    10000 + i,
                    DPORT,
                    PAYLOAD,
                ),
            )
        })
        .collect();
    for chunk in frames.chunks(64) {
        let batch = lab.batch_at(chunk, T0);
        for (verdict, frame) in batch.verdicts.iter().zip(&batch.frames) {
            let Verdict::Transmit(port) = *verdict else {
                panic!("not forwarded: {verdict:?}");
            };
            assert_eq!(&frame[0..6], &N[port.0 as usize]);
            per_port[port.0 as usize] += 1;
        }
    }
    assert_eq!(per_port[0] + per_port[4], 0);
    for port in 1..=3 {
        // 1000 flows over 3 members: expect ~333 each; 250 is > 5 sigma away.
        assert!(per_port[port] >= 250, "member {port} got {per_port:?}");
    }
    // The same 1000 flows again take the same members (now from the cache).
    let hits_before = lab.pipeline.counters().flow.hits;
    let mut again = [0u32; 5];
    for chunk in frames.chunks(64) {
        for verdict in lab.batch_at(chunk, T0 + MS).verdicts {
            let Verdict::Transmit(port) = verdict else {
                panic!("not forwarded")
            };
            again[port.0 as usize] += 1;
        }
    }
    assert_eq!(again, per_port);
    assert_eq!(lab.pipeline.counters().flow.hits - hits_before, 1000);
}

// --- flow cache -------------------------------------------------------------------------------

#[test]
fn second_packet_is_a_cache_hit_with_identical_output() {
    let mut lab = Lab::new();
    let frame = from_h0_udp([192, 168, 5, 5], 64, PAYLOAD);
    let first = lab.send_at(0, &frame, T0);
    let counters = lab.pipeline.counters();
    assert_eq!(counters.flow.hits, 0);
    assert_eq!(counters.flow.inserts, 1);
    let second = lab.send_at(0, &frame, T0 + MS);
    assert_eq!(lab.pipeline.counters().flow.hits, 1);
    assert_eq!(first.verdict, second.verdict);
    assert_eq!(
        first.frame, second.frame,
        "fast path output == slow path output"
    );
    let flows = lab.pipeline.flows(&lab.tables);
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0].stats.packets, 2);
    assert_eq!(flows[0].action.port(), PortId(1));
}

#[test]
fn cached_flow_with_ttl_one_still_gets_time_exceeded() {
    let mut lab = Lab::new();
    lab.send(0, &from_h0_udp([192, 168, 5, 5], 64, PAYLOAD));
    let expiring = from_h0_udp([192, 168, 5, 5], 1, PAYLOAD);
    let run = lab.send(0, &expiring);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::TtlExceeded));
    check_icmp4_error(&run.emitted[0], 0, H0, H0_V4, 11, 0, &expiring);
}

#[test]
fn route_change_is_never_served_from_a_stale_flow() {
    let mut lab = Lab::new();
    let frame = from_h0_udp([192, 168, 5, 5], 64, PAYLOAD);
    assert_eq!(lab.send(0, &frame).verdict, Verdict::Transmit(PortId(1)));
    assert_eq!(lab.send(0, &frame).verdict, Verdict::Transmit(PortId(1)));
    assert_eq!(lab.pipeline.counters().flow.hits, 1);
    let generation = lab.tables.generation();
    lab.apply(&[TableOp::AddRoute {
        vrf: VrfId(0),
        prefix: prefix("192.168.0.0/16"),
        target: via("10.0.2.2"),
        replace: true,
    }]);
    assert_eq!(lab.tables.generation(), generation + 1);
    let run = lab.send(0, &frame);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(2)));
    check_forwarded_v4(&run.frame, &frame, 2, N[2]);
    let counters = lab.pipeline.counters();
    assert_eq!(counters.flow.hits, 1);
    assert_eq!(counters.flow.stale, 1);
    // A neighbor MAC change is a forwarding change too.
    let new_mac = [0x02, 0xcc, 0, 0, 0, 2];
    lab.apply(&[TableOp::LearnNeighbor {
        port: PortId(2),
        ip: ip4(neighbor_v4(2)),
        mac: ea(new_mac),
        now_ns: T0,
    }]);
    // Static entries are not overridden by learning: same MAC, no generation bump.
    assert_eq!(lab.send(0, &frame).frame[0..6], N[2]);
    lab.apply(&[TableOp::AddNeighbor {
        port: PortId(2),
        ip: ip4(neighbor_v4(2)),
        mac: ea(new_mac),
    }]);
    assert_eq!(lab.send(0, &frame).frame[0..6], new_mac);
    // Deleting the route: the next packet gets no-route, not the cached path.
    lab.apply(&[TableOp::DelRoute {
        vrf: VrfId(0),
        prefix: prefix("192.168.0.0/16"),
    }]);
    let run = lab.send(0, &frame);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::NoRoute));
}

#[test]
fn mtu_decrease_is_not_served_from_the_cache() {
    let mut lab = Lab::new();
    let mut header = ipv4_header(H0_V4, [192, 168, 5, 5], 64, true);
    header.identification = 9;
    let frame = udp4_with_header(H0, R[0], header, &[7u8; 1000]);
    assert_eq!(lab.send(0, &frame).verdict, Verdict::Transmit(PortId(1)));
    lab.apply(&[TableOp::SetPortMtu {
        id: PortId(1),
        mtu: 600,
    }]);
    let run = lab.send(0, &frame);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::FragmentationNeeded));
    let rest = check_icmp4_error(&run.emitted[0], 0, H0, H0_V4, 3, 4, &frame);
    assert_eq!(u16::from_be_bytes([rest[2], rest[3]]), 600);
}

// --- MTU and fragmentation --------------------------------------------------------------------

#[test]
fn df_set_and_too_big_gets_frag_needed_with_mtu() {
    let mut lab = Lab::new();
    let frame = udp4(H0, R[0], H0_V4, [203, 0, 113, 9], 64, &[1u8; 1000]);
    let run = lab.send(0, &frame);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::FragmentationNeeded));
    lab.assert_drops(&[(DropReason::FragmentationNeeded, 1)]);
    assert_eq!(run.emitted.len(), 1);
    let rest = check_icmp4_error(&run.emitted[0], 0, H0, H0_V4, 3, 4, &frame);
    assert_eq!(rest[0..2], [0, 0], "unused");
    assert_eq!(u16::from_be_bytes([rest[2], rest[3]]), 576, "next-hop MTU");
}

#[test]
fn exactly_the_mtu_is_not_fragmented() {
    let mut lab = Lab::new();
    let frame = udp4(H0, R[0], H0_V4, [203, 0, 113, 9], 64, &[1u8; 576 - 28]);
    let run = lab.send(0, &frame);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(4)));
    check_forwarded_v4(&run.frame, &frame, 4, N[4]);
}

/// Checks fragments against the original (`later_options`: the options expected in all but
/// the first fragment) and returns (offset of the first, MF of the last, payload).
fn reassemble(
    fragments: &[pipelines::Emitted],
    original: &[u8],
    later_options: &[u8],
    mtu: usize,
) -> (usize, bool, Vec<u8>) {
    let before = ipv4_of(original);
    let mut pieces: Vec<(usize, bool, Vec<u8>)> = Vec::new();
    for (index, fragment) in fragments.iter().enumerate() {
        assert_eq!(fragment.port, PortId(4));
        let frame = &fragment.frame;
        assert_eq!(&frame[0..6], &N[4], "fragment to the next hop");
        assert_eq!(&frame[6..12], &R[4], "fragment from the egress port");
        let ip = ipv4_of(frame);
        assert_eq!(ip.len(), frame.len() - 14, "total length = frame");
        assert!(ip.len() <= mtu, "fragment {} > MTU {mtu}", ip.len());
        assert!(ipv4_header_ok(ip), "fragment header checksum");
        let options = &ip[20..ihl(ip)];
        if index == 0 {
            assert_eq!(
                options,
                &before[20..ihl(before)],
                "first fragment keeps all options"
            );
        } else {
            assert_eq!(
                options, later_options,
                "later fragments: copied options only"
            );
        }
        assert_eq!(ip[8], before[8] - 1, "TTL decremented");
        assert_eq!(&ip[4..6], &before[4..6], "same identification");
        assert_eq!(ip[9], before[9]);
        assert_eq!(&ip[12..20], &before[12..20], "same addresses");
        let flags = u16::from_be_bytes([ip[6], ip[7]]);
        assert_eq!(flags & 0x4000, 0, "DF clear");
        let offset = ((flags & 0x1fff) as usize) * 8;
        let more = flags & 0x2000 != 0;
        pieces.push((offset, more, ip[ihl(ip)..].to_vec()));
    }
    let first_offset = pieces[0].0;
    let mut payload = Vec::new();
    for (index, (offset, more, data)) in pieces.iter().enumerate() {
        assert_eq!(
            *offset,
            first_offset + payload.len(),
            "contiguous offsets, in order"
        );
        let last = index + 1 == pieces.len();
        if !last {
            assert!(*more, "MF on all but the last");
            assert_eq!(data.len() % 8, 0, "non-last fragment payload multiple of 8");
        }
        payload.extend_from_slice(data);
    }
    (first_offset, pieces[pieces.len() - 1].1, payload)
}

#[test]
fn df_clear_and_too_big_is_fragmented() {
    let mut lab = Lab::new();
    let data: Vec<u8> = (0..1400u32).map(|i| (i * 7 + 3) as u8).collect();
    let frame = udp4_with_header(
        H0,
        R[0],
        ipv4_header(H0_V4, [203, 0, 113, 9], 64, false),
        &data,
    );
    let run = lab.send(0, &frame);
    assert_eq!(run.verdict, Verdict::Consumed);
    lab.assert_drops(&[]);
    // 1408 bytes of IP payload in chunks of (576 - 20) & !7 = 552.
    assert_eq!(run.emitted.len(), 3);
    let sizes: Vec<usize> = run.emitted.iter().map(|e| e.frame.len() - 14).collect();
    assert_eq!(sizes, vec![572, 572, 324]);
    let (offset, more, payload) = reassemble(&run.emitted, &frame, &[], 576);
    assert_eq!(offset, 0);
    assert!(!more, "last fragment has MF clear");
    assert_eq!(
        payload,
        &ipv4_of(&frame)[20..],
        "reassembles to the original"
    );
    let counters = lab.pipeline.counters();
    assert_eq!(counters.ports[4].tx_packets, 3);
}

/// Router alert (type 148, copied) + record route (type 7, not copied) + end of list.
const OPTIONS: [u8; 12] = [0x94, 4, 0, 0, 7, 7, 4, 0, 0, 0, 0, 0];
const COPIED: [u8; 4] = [0x94, 4, 0, 0];

#[test]
fn fragments_carry_only_copied_options_after_the_first() {
    let mut lab = Lab::new();
    let mut header = ipv4_header(H0_V4, [203, 0, 113, 9], 64, false);
    header.options = OPTIONS.into();
    let data = vec![0x5au8; 992];
    let frame = udp4_with_header(H0, R[0], header, &data);
    assert_eq!(ihl(ipv4_of(&frame)), 32);
    let run = lab.send(0, &frame);
    assert_eq!(run.verdict, Verdict::Consumed);
    // 1000 bytes: (576 - 32) & !7 = 544 in the first, (576 - 24) & !7 = 552 after.
    let sizes: Vec<usize> = run.emitted.iter().map(|e| e.frame.len() - 14).collect();
    assert_eq!(sizes, vec![32 + 544, 24 + 456]);
    let (offset, more, payload) = reassemble(&run.emitted, &frame, &COPIED, 576);
    assert_eq!((offset, more), (0, false));
    assert_eq!(payload, &ipv4_of(&frame)[32..]);
    // NOPs are not copied: later fragments get a bare 20-byte header.
    let mut header = ipv4_header(H0_V4, [203, 0, 113, 9], 64, false);
    header.options = [1u8, 1, 1, 0].into();
    let frame = udp4_with_header(H0, R[0], header, &data);
    let run = lab.send(0, &frame);
    let (_, _, payload) = reassemble(&run.emitted, &frame, &[], 576);
    assert_eq!(payload, &ipv4_of(&frame)[24..]);
}

#[test]
fn fragmenting_a_fragment_keeps_mf_and_offsets() {
    let mut lab = Lab::new();
    // A first fragment (MF set), itself too big for p4: every piece keeps MF.
    let mut header = ipv4_header(H0_V4, [203, 0, 113, 9], 64, false);
    header.options = OPTIONS.into();
    header.more_fragments = true;
    let data = vec![0x5au8; 992];
    let frame = udp4_with_header(H0, R[0], header, &data);
    let run = lab.send(0, &frame);
    assert_eq!(run.verdict, Verdict::Consumed);
    let (offset, more, payload) = reassemble(&run.emitted, &frame, &COPIED, 576);
    assert_eq!((offset, more), (0, true), "MF kept from the original");
    assert_eq!(payload, &ipv4_of(&frame)[32..]);
    // The datagram's last fragment, at offset 1000 (copied options only, as a sender makes
    // it): offsets continue from 1000 and the last piece has MF clear.
    let mut header = ipv4_header(H0_V4, [203, 0, 113, 9], 64, false);
    header.options = COPIED.into();
    header.fragment_offset = 125u16.try_into().expect("offset");
    let frame = udp4_with_header(H0, R[0], header, &data);
    let run = lab.send(0, &frame);
    assert_eq!(run.verdict, Verdict::Consumed);
    let (offset, more, payload) = reassemble(&run.emitted, &frame, &COPIED, 576);
    assert_eq!((offset, more), (1000, false));
    assert_eq!(payload, &ipv4_of(&frame)[24..]);
    let offsets: Vec<usize> = run
        .emitted
        .iter()
        .map(|e| {
            let ip = ipv4_of(&e.frame);
            (u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff) as usize * 8
        })
        .collect();
    assert_eq!(offsets, vec![1000, 1000 + 552]);
}

#[test]
fn fragment_beyond_the_datagram_limit_is_not_refragmented() {
    // Offset 65000 + 1008 bytes of payload: pieces past 65528 are unrepresentable.
    let mut lab = Lab::new();
    let mut header = ipv4_header(H0_V4, [203, 0, 113, 9], 64, false);
    header.fragment_offset = (65000u16 / 8).try_into().expect("offset");
    let frame = udp4_with_header(H0, R[0], header, &[1u8; 1000]);
    let run = lab.send(0, &frame);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::Ipv4BadTotalLength));
    assert!(run.emitted.is_empty());
    lab.assert_drops(&[(DropReason::Ipv4BadTotalLength, 1)]);
    // Small enough to forward whole: the router does not judge it.
    let mut header = ipv4_header(H0_V4, [192, 168, 5, 5], 64, false);
    header.fragment_offset = (65000u16 / 8).try_into().expect("offset");
    let frame = udp4_with_header(H0, R[0], header, &[1u8; 1000]);
    assert_eq!(lab.send(0, &frame).verdict, Verdict::Transmit(PortId(1)));
}

// --- packets for the router -------------------------------------------------------------------

fn check_echo_reply(run: &Run, request: &[u8], router_ip: [u8; 4]) {
    assert_eq!(run.verdict, Verdict::Transmit(PortId(0)));
    assert!(run.emitted.is_empty(), "answered in place");
    let frame = &run.frame;
    assert_eq!(&frame[0..6], &H0);
    assert_eq!(&frame[6..12], &R[0]);
    let ip = ipv4_of(frame);
    let before = ipv4_of(request);
    assert!(ipv4_header_ok(ip), "reply IPv4 checksum");
    assert!(ipv4_l4_ok(ip), "reply ICMP checksum");
    assert_eq!(&ip[12..16], &router_ip, "reply from the address pinged");
    assert_eq!(&ip[16..20], &H0_V4);
    assert_eq!(ip[20], 0, "echo reply");
    assert_eq!(ip[21], 0);
    assert_eq!(
        &ip[24..],
        &before[24..],
        "identifier, sequence and data echoed"
    );
}

#[test]
fn echo_to_the_router_is_answered_in_place() {
    let mut lab = Lab::new();
    let request = icmp4_echo(H0, R[0], H0_V4, router_v4(0), 64, 0x1234, 7, PAYLOAD);
    let run = lab.send(0, &request);
    check_echo_reply(&run, &request, router_v4(0));
    lab.assert_drops(&[]);
    assert_eq!(lab.pipeline.counters().replied, 1);
    // Odd-length data.
    let request = icmp4_echo(H0, R[0], H0_V4, router_v4(0), 1, 0x1234, 8, b"odd");
    let run = lab.send(0, &request);
    check_echo_reply(&run, &request, router_v4(0));
}

#[test]
fn echo_to_another_ports_address_is_answered() {
    let mut lab = Lab::new();
    let request = icmp4_echo(H0, R[0], H0_V4, router_v4(3), 64, 1, 1, PAYLOAD);
    let run = lab.send(0, &request);
    check_echo_reply(&run, &request, router_v4(3));
}

#[test]
fn echo_with_bad_icmp_checksum_is_dropped() {
    let mut lab = Lab::new();
    let mut request = icmp4_echo(H0, R[0], H0_V4, router_v4(0), 64, 1, 1, PAYLOAD);
    let last = request.len() - 1;
    request[last] ^= 0xff;
    let run = lab.send(0, &request);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::IcmpMalformed));
    lab.assert_drops(&[(DropReason::IcmpMalformed, 1)]);
}

#[test]
fn udp_and_tcp_to_the_router_get_port_unreachable() {
    let mut lab = Lab::new();
    let udp = from_h0_udp(router_v4(0), 64, PAYLOAD);
    let run = lab.send(0, &udp);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::LocalUnhandled));
    assert_eq!(run.emitted.len(), 1);
    check_icmp4_error(&run.emitted[0], 0, H0, H0_V4, 3, 3, &udp);
    let tcp = tcp4(H0, R[0], H0_V4, router_v4(1), 64, &[]);
    let run = lab.send(0, &tcp);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::LocalUnhandled));
    check_icmp4_error(&run.emitted[0], 0, H0, H0_V4, 3, 3, &tcp);
    lab.assert_drops(&[(DropReason::LocalUnhandled, 2)]);
}

#[test]
fn unknown_protocol_to_the_router_gets_protocol_unreachable() {
    let mut lab = Lab::new();
    let mut header = ipv4_header(H0_V4, router_v4(0), 64, true);
    header.protocol = etherparse::IpNumber(47);
    header.total_len = 20 + 8;
    header.header_checksum = header.calc_header_checksum();
    let frame = ethernet(
        H0,
        R[0],
        0x0800,
        &[&header.to_bytes()[..], &[0u8; 8]].concat(),
    );
    let run = lab.send(0, &frame);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::LocalUnhandled));
    check_icmp4_error(&run.emitted[0], 0, H0, H0_V4, 3, 2, &frame);
}

#[test]
fn fragments_to_the_router_are_dropped() {
    let mut lab = Lab::new();
    let mut header = ipv4_header(H0_V4, router_v4(0), 64, false);
    header.more_fragments = true;
    let first = udp4_with_header(H0, R[0], header.clone(), PAYLOAD);
    assert_eq!(
        lab.send(0, &first).verdict,
        Verdict::Drop(DropReason::LocalFragment)
    );
    header.more_fragments = false;
    header.fragment_offset = 4u16.try_into().expect("offset");
    let later = udp4_with_header(H0, R[0], header, PAYLOAD);
    let run = lab.send(0, &later);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::LocalFragment));
    assert!(run.emitted.is_empty());
    lab.assert_drops(&[(DropReason::LocalFragment, 2)]);
}

#[test]
fn ttl_one_to_the_router_is_accepted() {
    let mut lab = Lab::new();
    let request = icmp4_echo(H0, R[0], H0_V4, router_v4(0), 1, 1, 1, PAYLOAD);
    let run = lab.send(0, &request);
    check_echo_reply(&run, &request, router_v4(0));
}

#[test]
fn bytes_after_the_ip_packet_are_not_forwarded() {
    // Ethernet padding (or junk) behind the IP packet: Linux trims it on receive; so do we,
    // on the first packet and on the cached path, so a frame never grows past the IP length.
    let mut lab = Lab::new();
    let frame = from_h0_udp([192, 168, 5, 5], 64, PAYLOAD);
    let mut padded = frame.clone();
    padded.extend_from_slice(&[0xee; 30]);
    for _ in 0..2 {
        let run = lab.send(0, &padded);
        assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
        assert_eq!(run.frame.len(), frame.len());
        check_forwarded_v4(&run.frame, &frame, 1, N[1]);
    }
    assert_eq!(lab.pipeline.counters().flow.hits, 1);
}

#[test]
fn echo_reply_carries_no_padding() {
    let mut lab = Lab::new();
    let request = icmp4_echo(H0, R[0], H0_V4, router_v4(0), 64, 7, 1, b"ping");
    let mut padded = request.clone();
    padded.extend_from_slice(&[0; 18]);
    let run = lab.send(0, &padded);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(0)));
    assert_eq!(run.frame.len(), request.len());
}

#[test]
fn a_cached_flow_whose_packet_goes_to_the_slow_path_counts_as_a_miss() {
    let mut lab = Lab::new();
    lab.send(0, &from_h0_udp([192, 168, 5, 5], 64, PAYLOAD));
    // TTL 1: the cache has the flow, but the slow path answers time exceeded.
    let run = lab.send(0, &from_h0_udp([192, 168, 5, 5], 1, PAYLOAD));
    assert_eq!(run.verdict, Verdict::Drop(DropReason::TtlExceeded));
    let flow = lab.pipeline.counters().flow;
    assert_eq!((flow.hits, flow.misses), (0, 2));
}
