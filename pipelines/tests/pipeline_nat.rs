//! Source NAT (masquerade): translation of the first and later (flow-cached) packets,
//! replies translated back, port allocation, exhaustion, ICMP echo, IPv6, expiry.

mod common;

use common::*;
use pipelines::tables::SnatRule;
use pipelines::{DropReason, PortId, TableOp, Verdict, VrfId};
use std::collections::BTreeSet;

/// The lab's H0 subnet masqueraded out of p1 (10.0.1.1 / 2001:db8:1::1).
fn nat_lab(ports: (u16, u16)) -> Lab {
    let mut lab = Lab::new();
    lab.apply(&[
        TableOp::AddSnat {
            rule: SnatRule {
                vrf: VrfId(0),
                source: prefix("10.0.0.0/24"),
                out_port: PortId(1),
                to: None,
                ports,
            },
        },
        TableOp::AddSnat {
            rule: SnatRule {
                vrf: VrfId(0),
                source: prefix("2001:db8::/64"),
                out_port: PortId(1),
                to: None,
                ports,
            },
        },
    ]);
    lab
}

const EXTERNAL: [u8; 4] = [192, 168, 5, 5];

fn outbound(sport: u16) -> Vec<u8> {
    udp4_ports(H0, R[0], H0_V4, EXTERNAL, 64, sport, 53, b"query")
}

fn source(frame: &[u8]) -> ([u8; 4], u16) {
    let ip = ipv4_of(frame);
    let l4 = ihl(ip);
    (
        ip[12..16].try_into().expect("4 bytes"),
        u16::from_be_bytes([ip[l4], ip[l4 + 1]]),
    )
}

fn destination(frame: &[u8]) -> ([u8; 4], u16) {
    let ip = ipv4_of(frame);
    let l4 = ihl(ip);
    (
        ip[16..20].try_into().expect("4 bytes"),
        u16::from_be_bytes([ip[l4 + 2], ip[l4 + 3]]),
    )
}

fn checksums_ok(frame: &[u8]) {
    let ip = ipv4_of(frame);
    assert!(ipv4_header_ok(ip), "IPv4 header checksum");
    assert!(ipv4_l4_ok(ip), "L4 checksum");
}

#[test]
fn outbound_udp_is_masqueraded_and_the_reply_translated_back() {
    let mut lab = nat_lab((1024, 65535));
    let run = lab.send(0, &outbound(40000));
    assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
    let (addr, port) = source(&run.frame);
    assert_eq!(addr, router_v4(1), "the egress port's address");
    assert!(port >= 1024);
    checksums_ok(&run.frame);
    assert_eq!(destination(&run.frame), (EXTERNAL, 53));

    // The reply to the translated address and port goes back to H0's original port.
    let reply = udp4_ports(N[1], R[1], EXTERNAL, router_v4(1), 60, 53, port, b"answer");
    let back = lab.send(1, &reply);
    assert_eq!(back.verdict, Verdict::Transmit(PortId(0)));
    assert_eq!(destination(&back.frame), (H0_V4, 40000));
    assert_eq!(source(&back.frame), (EXTERNAL, 53));
    checksums_ok(&back.frame);
    assert_eq!(&back.frame[0..6], &H0);

    // Both directions were cached with their translation: later packets are flow-cache hits
    // that keep the connection's port and count on the connection.
    let counters = lab.pipeline.counters();
    assert_eq!(counters.flow.inserts, 2);
    let again = lab.send(0, &outbound(40000));
    assert_eq!(source(&again.frame), (router_v4(1), port));
    checksums_ok(&again.frame);
    let back = lab.send(1, &reply);
    assert_eq!(destination(&back.frame), (H0_V4, 40000));
    checksums_ok(&back.frame);
    let counters = lab.pipeline.counters();
    assert_eq!(counters.flow.hits, 2);
    assert_eq!(counters.flow.inserts, 2);
    assert_eq!(lab.pipeline.conntrack().len(), 1);
    let connection = lab.pipeline.connections()[0];
    assert_eq!(connection.packets, [2, 2]);
    lab.assert_drops(&[]);
}

#[test]
fn connections_to_one_destination_get_distinct_ports_until_the_range_runs_out() {
    // 1000 connections in a range of 4000 ports: all admitted, all distinct. (Allocation
    // probes a bounded number of candidates, so a range nearly full can refuse before its
    // last free port: see `ConnTable::allocate_port`.)
    let mut lab = nat_lab((2000, 5999));
    let mut ports = BTreeSet::new();
    for sport in 0..1000u16 {
        let run = lab.send(0, &outbound(10000 + sport));
        assert_eq!(
            run.verdict,
            Verdict::Transmit(PortId(1)),
            "connection {sport}"
        );
        let (_, port) = source(&run.frame);
        assert!((2000..=5999).contains(&port));
        ports.insert(port);
    }
    assert_eq!(ports.len(), 1000);
    assert_eq!(lab.pipeline.conntrack().len(), 1000);

    let mut small = nat_lab((3000, 3003));
    for sport in 0..4u16 {
        assert_eq!(
            small.send(0, &outbound(20000 + sport)).verdict,
            Verdict::Transmit(PortId(1))
        );
    }
    let run = small.send(0, &outbound(20010));
    assert_eq!(run.verdict, Verdict::Drop(DropReason::SnatPortsExhausted));
    small.assert_drops(&[(DropReason::SnatPortsExhausted, 1)]);
    // Another destination has the whole range again.
    let other = udp4_ports(H0, R[0], H0_V4, [192, 168, 9, 9], 64, 20010, 53, b"q");
    assert_eq!(small.send(0, &other).verdict, Verdict::Transmit(PortId(1)));
}

#[test]
fn ping_through_masquerade_translates_the_identifier_both_ways() {
    let mut lab = nat_lab((1024, 65535));
    let request = icmp4_echo(H0, R[0], H0_V4, EXTERNAL, 64, 0x1234, 1, b"ping");
    let run = lab.send(0, &request);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
    let ip = ipv4_of(&run.frame);
    assert_eq!(&ip[12..16], &router_v4(1));
    let id = u16::from_be_bytes([ip[20 + 4], ip[20 + 5]]);
    checksums_ok(&run.frame);

    let mut reply = icmp4_echo(N[1], R[1], EXTERNAL, router_v4(1), 60, id, 1, b"ping");
    // Type 0: echo reply (checksum fixed for the type change).
    reply[34] = 0;
    let sum = u16::from_be_bytes([reply[36], reply[37]]).wrapping_add(0x0800);
    reply[36..38].copy_from_slice(&sum.to_be_bytes());
    assert!(ipv4_l4_ok(ipv4_of(&reply)), "test reply is valid");
    let back = lab.send(1, &reply);
    assert_eq!(back.verdict, Verdict::Transmit(PortId(0)));
    let ip = ipv4_of(&back.frame);
    assert_eq!(&ip[16..20], &H0_V4);
    assert_eq!(u16::from_be_bytes([ip[24], ip[25]]), 0x1234);
    checksums_ok(&back.frame);
}

#[test]
fn udp_without_checksum_stays_without_and_other_sources_are_untouched() {
    let mut lab = nat_lab((1024, 65535));
    let mut frame = outbound(40000);
    frame[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    let run = lab.send(0, &frame);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
    assert_eq!(&run.frame[14 + 20 + 6..14 + 20 + 8], &[0, 0]);
    assert_eq!(source(&run.frame).0, router_v4(1));

    // From p2's subnet: no rule, forwarded as it is (and cached).
    let plain = udp4_ports(N[2], R[2], neighbor_v4(2), EXTERNAL, 64, 40000, 53, b"q");
    let run = lab.send(2, &plain);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
    assert_eq!(source(&run.frame), (neighbor_v4(2), 40000));
    assert_eq!(lab.pipeline.counters().flow.inserts, 2);
}

#[test]
fn packets_for_the_router_itself_are_still_answered() {
    let mut lab = nat_lab((1024, 65535));
    lab.send(0, &outbound(40000));
    let ping = icmp4_echo(N[1], R[1], neighbor_v4(1), router_v4(1), 64, 9, 1, b"hi");
    let run = lab.send(1, &ping);
    assert_eq!(
        run.verdict,
        Verdict::Transmit(PortId(1)),
        "echo reply in place"
    );
}

#[test]
fn ipv6_is_masqueraded_too() {
    let mut lab = nat_lab((1024, 65535));
    let external = v6b([0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 5]);
    let frame = udp6_ports(H0, R[0], H0_V6, external, 64, 40000, 53, b"query");
    let run = lab.send(0, &frame);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
    let ip = ipv6_of(&run.frame);
    assert_eq!(&ip[8..24], &router_v6(1));
    assert!(ipv6_l4_ok(ip, 40, 17));
    let port = u16::from_be_bytes([ip[40], ip[41]]);
    let reply = udp6_ports(N[1], R[1], external, router_v6(1), 60, 53, port, b"answer");
    let back = lab.send(1, &reply);
    assert_eq!(back.verdict, Verdict::Transmit(PortId(0)));
    let ip = ipv6_of(&back.frame);
    assert_eq!(&ip[24..40], &H0_V6);
    assert_eq!(u16::from_be_bytes([ip[42], ip[43]]), 40000);
    assert!(ipv6_l4_ok(ip, 40, 17));
}

#[test]
fn an_expired_connection_no_longer_translates_replies() {
    let mut lab = nat_lab((1024, 65535));
    let run = lab.send(0, &outbound(40000));
    let (_, port) = source(&run.frame);
    // Unreplied UDP expires after 30 s; sweeps run with every tick.
    for second in 1..=40u64 {
        lab.tick(T0 + second * 1000 * MS);
    }
    let reply = udp4_ports(N[1], R[1], EXTERNAL, router_v4(1), 60, 53, port, b"late");
    let late = lab.send_at(1, &reply, T0 + 41_000 * MS);
    assert_eq!(
        late.verdict,
        Verdict::Drop(DropReason::LocalUnhandled),
        "for the router now"
    );
    assert_eq!(lab.pipeline.conntrack().len(), 0);
}

#[test]
fn fragments_of_a_masqueraded_connection_are_dropped_with_a_reason() {
    let mut lab = nat_lab((1024, 65535));
    let mut frame = outbound(40000);
    // More fragments: a first fragment.
    frame[14 + 6] |= 0x20;
    let sum = {
        frame[14 + 10] = 0;
        frame[14 + 11] = 0;
        !ones_sum(&[&frame[14..34]])
    };
    frame[14 + 10..14 + 12].copy_from_slice(&sum.to_be_bytes());
    let run = lab.send(0, &frame);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::NatFragment));
}
