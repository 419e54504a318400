//! Stage tests of the IPv6 path: forwarding, extension header chains, hop limit, Packet Too
//! Big, unreachable routes, echo and errors for packets addressed to the router.

mod common;

use common::*;
use etherparse::{
    IpFragOffset, IpNumber, Ipv6Extensions, Ipv6FragmentHeader, Ipv6Header, Ipv6RawExtHeader,
    Ipv6RoutingExtensions, PacketBuilder,
};
use pipelines::tables::link_local_from_mac;
use pipelines::{DropReason, PortId, Verdict};

const PAYLOAD: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
const FAR: [u8; 16] = v6b([0x2001, 0xdb8, 0x100, 2, 0, 0, 0, 9]);

fn from_h0_udp6(dst: [u8; 16], hop_limit: u8, payload: &[u8]) -> Vec<u8> {
    udp6(H0, R[0], H0_V6, dst, hop_limit, payload)
}

fn single_drop(frame: &[u8], reason: DropReason) -> Run {
    let mut lab = Lab::new();
    let run = lab.send(0, frame);
    assert_eq!(run.verdict, Verdict::Drop(reason), "frame {frame:02x?}");
    lab.assert_drops(&[(reason, 1)]);
    run
}

#[test]
fn udp_is_forwarded_with_hop_limit_decremented() {
    let mut lab = Lab::new();
    let frame = from_h0_udp6(FAR, 64, PAYLOAD);
    let run = lab.send(0, &frame);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
    check_forwarded_v6(&run.frame, &frame, 1, N[1]);
    assert!(ipv6_l4_ok(ipv6_of(&run.frame), 40, 17));
    lab.assert_drops(&[]);
}

#[test]
fn hop_limit_two_is_forwarded_and_empty_payload_is_fine() {
    let mut lab = Lab::new();
    let frame = from_h0_udp6(FAR, 2, &[]);
    let run = lab.send(0, &frame);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
    check_forwarded_v6(&run.frame, &frame, 1, N[1]);
    assert_eq!(ipv6_of(&run.frame)[7], 1);
}

#[test]
fn longest_prefix_wins() {
    let mut lab = Lab::new();
    let narrow = lab.send(
        0,
        &from_h0_udp6(v6b([0x2001, 0xdb8, 0x100, 1, 0, 0, 0, 9]), 64, PAYLOAD),
    );
    assert_eq!(narrow.verdict, Verdict::Transmit(PortId(3)));
    assert_eq!(&narrow.frame[0..6], &N[3]);
    let wide = lab.send(0, &from_h0_udp6(FAR, 64, PAYLOAD));
    assert_eq!(wide.verdict, Verdict::Transmit(PortId(1)));
    let connected = lab.send(0, &from_h0_udp6(neighbor_v6(2), 64, PAYLOAD));
    assert_eq!(connected.verdict, Verdict::Transmit(PortId(2)));
    assert_eq!(&connected.frame[0..6], &N[2]);
}

#[test]
fn second_packet_is_a_cache_hit_with_identical_output() {
    let mut lab = Lab::new();
    let frame = from_h0_udp6(FAR, 64, PAYLOAD);
    let first = lab.send(0, &frame);
    let second = lab.send(0, &frame);
    assert_eq!(lab.pipeline.counters().flow.hits, 1);
    assert_eq!(first.verdict, second.verdict);
    assert_eq!(first.frame, second.frame);
}

/// HopByHop -> Routing -> Fragment (atomic) -> Destination Options -> UDP.
fn extension_chain_frame(dst: [u8; 16], hop_limit: u8) -> Vec<u8> {
    let pad = [1u8, 4, 0, 0, 0, 0]; // PadN filling the 8-byte header
    let exts = Ipv6Extensions {
        hop_by_hop_options: Some(Ipv6RawExtHeader::new_raw(IpNumber(0), &pad).expect("hbh")),
        destination_options: None,
        routing: Some(Ipv6RoutingExtensions {
            // Experimental routing type 253 with no segments left.
            routing: Ipv6RawExtHeader::new_raw(IpNumber(0), &[253, 0, 0, 0, 0, 0])
                .expect("routing"),
            final_destination_options: Some(
                Ipv6RawExtHeader::new_raw(IpNumber(0), &pad).expect("dest opts"),
            ),
        }),
        fragment: Some(Ipv6FragmentHeader::new(
            IpNumber(0),
            IpFragOffset::ZERO,
            false,
            0x1234_5678,
        )),
        auth: None,
    };
    let header = Ipv6Header {
        traffic_class: 0,
        flow_label: Default::default(),
        payload_length: 0,
        next_header: IpNumber(0),
        hop_limit,
        source: H0_V6,
        destination: dst,
    };
    let mut out = Vec::new();
    PacketBuilder::ethernet2(H0, R[0])
        .ip(etherparse::IpHeaders::Ipv6(header, exts))
        .udp(SPORT, DPORT)
        .write(&mut out, PAYLOAD)
        .expect("extension chain");
    out
}

#[test]
fn extension_header_chain_is_routed() {
    let mut lab = Lab::new();
    let frame = extension_chain_frame(v6b([0x2001, 0xdb8, 0x100, 1, 0, 0, 0, 9]), 64);
    let ip = ipv6_of(&frame);
    // The chain as built: next headers 0 -> 43 -> 44 -> 60 -> 17.
    assert_eq!(ip[6], 0);
    assert_eq!(ip[40], 43);
    assert_eq!(ip[48], 44);
    assert_eq!(ip[56], 60);
    assert_eq!(ip[64], 17);
    let run = lab.send(0, &frame);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(3)), "routed by LPM");
    check_forwarded_v6(&run.frame, &frame, 3, N[3]);
    assert!(ipv6_l4_ok(ipv6_of(&run.frame), 72, 17), "UDP intact");
    lab.assert_drops(&[]);
}

/// `count` Destination Options headers then UDP, built by hand.
fn dest_opts_chain(count: usize) -> Vec<u8> {
    let mut payload = Vec::new();
    for i in 0..count {
        let next = if i + 1 == count { 17 } else { 60 };
        payload.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    payload.extend_from_slice(&[0x9c, 0x40, 0x13, 0x89, 0, 8, 0, 0]);
    ethernet(H0, R[0], 0x86dd, &ipv6_raw(H0_V6, FAR, 64, 60, &payload))
}

#[test]
fn over_long_extension_chain_is_dropped() {
    let mut lab = Lab::new();
    let eight = lab.send(0, &dest_opts_chain(8));
    assert_eq!(
        eight.verdict,
        Verdict::Transmit(PortId(1)),
        "8 headers are fine"
    );
    single_drop(&dest_opts_chain(9), DropReason::Ipv6ExtensionHeaders);
    single_drop(&dest_opts_chain(20), DropReason::Ipv6ExtensionHeaders);
}

#[test]
fn truncated_extension_header_is_dropped() {
    let mut frame = dest_opts_chain(2);
    // Claim the second header is 16 bytes long: it runs past the payload.
    frame[14 + 40 + 8 + 1] = 20;
    single_drop(&frame, DropReason::Ipv6ExtensionHeaders);
}

#[test]
fn hop_limit_one_and_zero_get_time_exceeded() {
    for hop_limit in [1u8, 0] {
        let frame = from_h0_udp6(FAR, hop_limit, PAYLOAD);
        let run = single_drop(&frame, DropReason::TtlExceeded);
        assert_eq!(run.emitted.len(), 1, "hop limit {hop_limit}");
        let rest = check_icmp6_error(&run.emitted[0], 0, H0, H0_V6, 3, 0, &frame);
        assert_eq!(rest, [0; 4]);
    }
}

#[test]
fn too_big_gets_packet_too_big_with_the_mtu() {
    let frame = from_h0_udp6(v6b([0x2001, 0xdb8, 0x200, 0, 0, 0, 0, 9]), 64, &[3u8; 1400]);
    assert_eq!(ipv6_of(&frame).len(), 1448);
    let run = single_drop(&frame, DropReason::FragmentationNeeded);
    assert_eq!(run.emitted.len(), 1);
    let rest = check_icmp6_error(&run.emitted[0], 0, H0, H0_V6, 2, 0, &frame);
    assert_eq!(u32::from_be_bytes(rest), 1400, "MTU of the egress link");
    assert_eq!(
        run.emitted[0].frame.len(),
        14 + 1280,
        "quote fills the minimum MTU"
    );
}

#[test]
fn exactly_the_mtu_is_forwarded() {
    let mut lab = Lab::new();
    let frame = from_h0_udp6(
        v6b([0x2001, 0xdb8, 0x200, 0, 0, 0, 0, 9]),
        64,
        &[3u8; 1400 - 48],
    );
    let run = lab.send(0, &frame);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(2)));
}

#[test]
fn no_route_unreachable_and_blackhole() {
    let frame = from_h0_udp6(v6b([0x2001, 0xdb9, 0, 0, 0, 0, 0, 1]), 64, PAYLOAD);
    let run = single_drop(&frame, DropReason::NoRoute);
    check_icmp6_error(&run.emitted[0], 0, H0, H0_V6, 1, 0, &frame);

    let frame = from_h0_udp6(v6b([0x2001, 0xdb8, 0xbeef, 0, 0, 0, 0, 1]), 64, PAYLOAD);
    let run = single_drop(&frame, DropReason::Unreachable);
    check_icmp6_error(&run.emitted[0], 0, H0, H0_V6, 1, 3, &frame);

    let frame = from_h0_udp6(v6b([0x2001, 0xdb8, 0xdead, 0, 0, 0, 0, 1]), 64, PAYLOAD);
    let run = single_drop(&frame, DropReason::Blackhole);
    assert!(run.emitted.is_empty());
}

#[test]
fn no_error_about_an_icmpv6_error() {
    // A Destination Unreachable in transit with hop limit 1.
    let frame = icmp6_raw(H0, R[0], H0_V6, FAR, 1, 1, 0, [0; 4], &[0u8; 48]);
    let mut lab = Lab::new();
    let run = lab.send(0, &frame);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::TtlExceeded));
    assert!(run.emitted.is_empty());
    assert_eq!(lab.pipeline.icmp_errors_suppressed(), 1);
}

#[test]
fn truncated_and_malformed_headers() {
    let frame = from_h0_udp6(FAR, 64, PAYLOAD);
    single_drop(&frame[..14 + 39], DropReason::Ipv6Truncated);
    single_drop(&frame[..14], DropReason::Ipv6Truncated);
    // Payload length beyond the frame.
    let mut long = frame.clone();
    let claimed = (frame.len() - 14 - 40 + 1) as u16;
    long[18..20].copy_from_slice(&claimed.to_be_bytes());
    single_drop(&long, DropReason::Ipv6Truncated);
    // Version 4 under the IPv6 EtherType.
    let mut version = frame.clone();
    version[14] = 0x40;
    single_drop(&version, DropReason::Ipv6BadVersion);
    // UDP header cut by the payload length.
    let mut short_udp = frame[..14 + 40 + 6].to_vec();
    short_udp[18..20].copy_from_slice(&6u16.to_be_bytes());
    single_drop(&short_udp, DropReason::L4Truncated);
    // TCP header cut short (next header 6, 12 bytes).
    let tcp = ethernet(H0, R[0], 0x86dd, &ipv6_raw(H0_V6, FAR, 64, 6, &[0u8; 12]));
    single_drop(&tcp, DropReason::L4Truncated);
    // ICMPv6 header cut short.
    let icmp = ethernet(
        H0,
        R[0],
        0x86dd,
        &ipv6_raw(H0_V6, FAR, 64, 58, &[128, 0, 0, 0]),
    );
    single_drop(&icmp, DropReason::L4Truncated);
}

#[test]
fn address_checks() {
    // Link-local source must not be forwarded off its link.
    let frame = udp6(
        H0,
        R[0],
        v6b([0xfe80, 0, 0, 0, 0, 0, 0, 2]),
        FAR,
        64,
        PAYLOAD,
    );
    single_drop(&frame, DropReason::Ipv6SourceInvalid);
    // Multicast source.
    let frame = udp6(
        H0,
        R[0],
        v6b([0xff02, 0, 0, 0, 0, 0, 0, 1]),
        FAR,
        64,
        PAYLOAD,
    );
    single_drop(&frame, DropReason::Ipv6SourceInvalid);
    // Site-scope multicast destination the router does not handle.
    let group = v6b([0xff05, 0, 0, 0, 0, 0, 0, 1]);
    let frame = udp6(H0, multicast_mac(group), H0_V6, group, 64, PAYLOAD);
    single_drop(&frame, DropReason::Ipv6DestinationInvalid);
    // Unicast destination in a multicast frame.
    let frame = udp6(H0, [0x33, 0x33, 0, 0, 0, 1], H0_V6, FAR, 64, PAYLOAD);
    single_drop(&frame, DropReason::EthernetNotForUs);
}

// --- packets for the router -------------------------------------------------------------------

fn check_echo6_reply(run: &Run, request: &[u8], from: [u8; 16]) {
    assert_eq!(run.verdict, Verdict::Transmit(PortId(0)));
    assert!(run.emitted.is_empty(), "answered in place");
    assert_eq!(&run.frame[0..6], &H0);
    assert_eq!(&run.frame[6..12], &R[0]);
    let ip = ipv6_of(&run.frame);
    let before = ipv6_of(request);
    assert_eq!(&ip[8..24], &from, "reply from the address pinged");
    assert_eq!(&ip[24..40], &H0_V6);
    assert_eq!(ip[6], 58);
    assert!(ip[7] >= 64, "fresh hop limit");
    assert_eq!(ip[40], 129, "echo reply");
    assert_eq!(ip[41], 0);
    assert!(ipv6_l4_ok(ip, 40, 58), "ICMPv6 checksum of the reply");
    assert_eq!(
        &ip[44..],
        &before[44..],
        "identifier, sequence and data echoed"
    );
}

#[test]
fn echo_to_the_router_is_answered_in_place() {
    let mut lab = Lab::new();
    let request = icmp6_echo(H0, R[0], H0_V6, router_v6(0), 64, 0x77, 1, PAYLOAD);
    let run = lab.send(0, &request);
    check_echo6_reply(&run, &request, router_v6(0));
    lab.assert_drops(&[]);
    // Another port's address in the same VRF.
    let request = icmp6_echo(H0, R[0], H0_V6, router_v6(3), 64, 0x77, 2, b"odd");
    let run = lab.send(0, &request);
    check_echo6_reply(&run, &request, router_v6(3));
    // The port's link-local address, hop limit 1.
    let link_local = link_local_from_mac(ea(R[0])).octets();
    let request = icmp6_echo(H0, R[0], H0_V6, link_local, 1, 0x77, 3, PAYLOAD);
    let run = lab.send(0, &request);
    check_echo6_reply(&run, &request, link_local);
    assert_eq!(lab.pipeline.counters().replied, 3);
}

#[test]
fn echo_with_bad_checksum_is_dropped() {
    let mut request = icmp6_echo(H0, R[0], H0_V6, router_v6(0), 64, 1, 1, PAYLOAD);
    let last = request.len() - 1;
    request[last] ^= 0x55;
    single_drop(&request, DropReason::IcmpMalformed);
}

#[test]
fn udp_to_the_router_gets_port_unreachable() {
    let frame = from_h0_udp6(router_v6(0), 64, PAYLOAD);
    let run = single_drop(&frame, DropReason::LocalUnhandled);
    assert_eq!(run.emitted.len(), 1);
    check_icmp6_error(&run.emitted[0], 0, H0, H0_V6, 1, 4, &frame);
}

#[test]
fn fragments_to_the_router_are_dropped() {
    // A first fragment (offset 0, M set) of a UDP datagram: no reassembly, no port
    // unreachable built from a partial datagram.
    let mut body = vec![17u8, 0, 0, 1, 0, 0, 0, 9]; // fragment header: offset 0, M=1
    body.extend_from_slice(&[0x9c, 0x40, 0x13, 0x89, 0, 48, 0, 0]);
    body.extend_from_slice(&[0u8; 32]);
    let first = ethernet(
        H0,
        R[0],
        0x86dd,
        &ipv6_raw(H0_V6, router_v6(0), 64, 44, &body),
    );
    let run = single_drop(&first, DropReason::LocalFragment);
    assert!(run.emitted.is_empty());
    // A later fragment.
    let later_body = [&[17u8, 0, 0, 0x20, 0, 0, 0, 9][..], &[0u8; 16]].concat();
    let later = ethernet(
        H0,
        R[0],
        0x86dd,
        &ipv6_raw(H0_V6, router_v6(0), 64, 44, &later_body),
    );
    let run = single_drop(&later, DropReason::LocalFragment);
    assert!(run.emitted.is_empty());
}

#[test]
fn atomic_fragment_to_the_router_is_a_whole_datagram() {
    // RFC 8200 4.5 / RFC 6946: offset 0 and M clear is processed as a whole packet.
    let mut lab = Lab::new();
    let frame = extension_chain_frame(router_v6(0), 64);
    let run = lab.send(0, &frame);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::LocalUnhandled));
    assert_eq!(run.emitted.len(), 1, "port unreachable");
    check_icmp6_error(&run.emitted[0], 0, H0, H0_V6, 1, 4, &frame);
}

#[test]
fn errors_about_packets_to_the_router_come_from_the_address_used() {
    // RFC 4443 2.2 (a): the source of a reply to a packet sent to one of our unicast
    // addresses is that address, even when it belongs to another port.
    let mut lab = Lab::new();
    let frame = from_h0_udp6(router_v6(3), 64, PAYLOAD);
    let run = lab.send(0, &frame);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::LocalUnhandled));
    assert_eq!(run.emitted.len(), 1);
    let ip = ipv6_of(&run.emitted[0].frame);
    assert_eq!(&ip[8..24], &router_v6(3));
    assert_eq!(&ip[24..40], &H0_V6);
    assert!(ipv6_l4_ok(ip, 40, 58));
    assert_eq!(&ip[40..42], &[1, 4]);
    // To the link-local address: the error comes from it.
    let link_local = link_local_from_mac(ea(R[0])).octets();
    let frame = from_h0_udp6(link_local, 64, PAYLOAD);
    let run = lab.send(0, &frame);
    let ip = ipv6_of(&run.emitted[0].frame);
    assert_eq!(&ip[8..24], &link_local);
    assert!(ipv6_l4_ok(ip, 40, 58));
}
