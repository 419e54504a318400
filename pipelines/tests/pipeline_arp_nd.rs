//! Stage tests of ARP, IPv6 neighbor discovery and neighbor resolution: replies in place,
//! learning events, the bounded hold queue, re-probing and expiry on `tick`, and release
//! when the neighbor becomes known.

mod common;

use common::*;
use pipelines::{DropReason, Event, PortId, TableOp, Verdict};

const PAYLOAD: &[u8] = b"held packet payload";
/// On p3's subnet, no neighbor entry.
const UNRESOLVED_V4: [u8; 4] = [10, 0, 3, 77];
const UNRESOLVED_V6: [u8; 16] = v6b([0x2001, 0xdb8, 3, 0, 0, 0, 0, 0x77]);
const NEW_MAC: [u8; 6] = [0x02, 0xdd, 0, 0, 0, 0x77];

// --- ARP ----------------------------------------------------------------------------------------

#[test]
fn request_for_the_router_is_answered_in_place() {
    let mut lab = Lab::new();
    let request = arp(H0, BROADCAST, 1, H0, H0_V4, [0; 6], router_v4(0));
    let run = lab.send(0, &request);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(0)));
    assert!(run.emitted.is_empty(), "in place");
    assert_eq!(&run.frame[0..6], &H0, "reply unicast to the requester");
    assert_eq!(&run.frame[6..12], &R[0]);
    let (op, sha, spa, tha, tpa) = parse_arp(&run.frame);
    assert_eq!(op, 2, "reply");
    assert_eq!(sha, R[0]);
    assert_eq!(spa, router_v4(0));
    assert_eq!(tha, H0);
    assert_eq!(tpa, H0_V4);
    assert_eq!(
        run.events,
        vec![Event::NeighborLearned {
            port: PortId(0),
            ip: ip4(H0_V4),
            mac: ea(H0),
        }]
    );
    lab.assert_drops(&[]);
    assert_eq!(lab.pipeline.counters().replied, 1);
}

#[test]
fn padded_request_is_answered() {
    let mut lab = Lab::new();
    let mut request = arp(H0, BROADCAST, 1, H0, H0_V4, [0; 6], router_v4(0));
    request.resize(60, 0);
    let run = lab.send(0, &request);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(0)));
    assert_eq!(parse_arp(&run.frame).0, 2);
}

#[test]
fn request_for_another_address_is_not_for_us() {
    let mut lab = Lab::new();
    let request = arp(H0, BROADCAST, 1, H0, H0_V4, [0; 6], [10, 0, 0, 99]);
    let run = lab.send(0, &request);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::ArpNotForUs));
    assert!(run.emitted.is_empty());
    assert!(run.events.is_empty());
    lab.assert_drops(&[(DropReason::ArpNotForUs, 1)]);
}

#[test]
fn malformed_arp() {
    let good = arp(H0, BROADCAST, 1, H0, H0_V4, [0; 6], router_v4(0));
    let cases: Vec<Vec<u8>> = vec![
        good[..14 + 27].to_vec(), // truncated
        good[..14 + 4].to_vec(),  // truncated inside the fixed part
        good[..14].to_vec(),      // no ARP at all
        {
            let mut f = good.clone();
            f[14 + 4] = 8; // hardware length
            f
        },
        {
            let mut f = good.clone();
            f[14 + 1] = 6; // hardware type IEEE 802
            f
        },
        {
            let mut f = good.clone();
            f[14 + 2..14 + 4].copy_from_slice(&[0x86, 0xdd]); // protocol type IPv6
            f
        },
    ];
    for frame in cases {
        let mut lab = Lab::new();
        let run = lab.send(0, &frame);
        assert_eq!(
            run.verdict,
            Verdict::Drop(DropReason::ArpMalformed),
            "{frame:02x?}"
        );
        lab.assert_drops(&[(DropReason::ArpMalformed, 1)]);
        assert!(run.emitted.is_empty() && run.events.is_empty());
    }
}

#[test]
fn sender_outside_the_subnet_is_not_learned() {
    let mut lab = Lab::new();
    let reply = arp(H0, R[0], 2, H0, [192, 0, 2, 1], R[0], router_v4(0));
    let run = lab.send(0, &reply);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::ArpSenderInvalid));
    assert!(run.events.is_empty());
}

// --- IPv4 neighbor resolution -----------------------------------------------------------------

fn to_unresolved_v4(seq: u8) -> Vec<u8> {
    let mut payload = PAYLOAD.to_vec();
    payload.push(seq);
    udp4(H0, R[0], H0_V4, UNRESOLVED_V4, 64, &payload)
}

fn check_arp_request(frame: &pipelines::Emitted) {
    assert_eq!(frame.port, PortId(3));
    assert_eq!(&frame.frame[0..6], &BROADCAST);
    assert_eq!(&frame.frame[6..12], &R[3]);
    let (op, sha, spa, _, tpa) = parse_arp(&frame.frame);
    assert_eq!(op, 1);
    assert_eq!(sha, R[3]);
    assert_eq!(spa, router_v4(3));
    assert_eq!(tpa, UNRESOLVED_V4);
}

fn check_released(frame: &pipelines::Emitted, original: &[u8], mac: [u8; 6]) {
    assert_eq!(frame.port, PortId(3));
    check_forwarded_v4(&frame.frame, original, 3, mac);
}

#[test]
fn unresolved_neighbor_gets_one_arp_request_and_the_packet_is_held() {
    let mut lab = Lab::new();
    let run = lab.send(0, &to_unresolved_v4(0));
    assert_eq!(run.verdict, Verdict::Consumed);
    assert_eq!(run.emitted.len(), 1, "exactly one ARP request");
    check_arp_request(&run.emitted[0]);
    assert_eq!(lab.pipeline.held_packets(), 1);
    lab.assert_drops(&[]);
    // A second packet to the same neighbor: held, no second request.
    let run = lab.send(0, &to_unresolved_v4(1));
    assert_eq!(run.verdict, Verdict::Consumed);
    assert!(run.emitted.is_empty());
    assert_eq!(lab.pipeline.held_packets(), 2);
}

#[test]
fn arp_reply_releases_held_packets() {
    let mut lab = Lab::new();
    let frames: Vec<Vec<u8>> = (0..3).map(to_unresolved_v4).collect();
    for frame in &frames {
        assert_eq!(lab.send(0, frame).verdict, Verdict::Consumed);
    }
    let reply = arp(NEW_MAC, R[3], 2, NEW_MAC, UNRESOLVED_V4, R[3], router_v4(3));
    let run = lab.send_at(3, &reply, T0 + 10 * MS);
    assert_eq!(run.verdict, Verdict::Consumed);
    assert_eq!(
        run.events,
        vec![Event::NeighborLearned {
            port: PortId(3),
            ip: ip4(UNRESOLVED_V4),
            mac: ea(NEW_MAC),
        }]
    );
    assert_eq!(run.emitted.len(), 3, "every held packet released");
    for (released, original) in run.emitted.iter().zip(&frames) {
        check_released(released, original, NEW_MAC);
    }
    assert_eq!(lab.pipeline.held_packets(), 0);
    lab.assert_drops(&[]);
    // Nothing left to time out.
    assert!(lab.tick(T0 + 10_000 * MS).is_empty());
    lab.assert_drops(&[]);
}

#[test]
fn hold_queue_is_bounded() {
    let mut lab = Lab::new(); // 4 per neighbor
    let frames: Vec<(u16, Vec<u8>)> = (0..6).map(|i| (0, to_unresolved_v4(i))).collect();
    let batch = lab.batch_at(&frames, T0);
    assert_eq!(
        batch.verdicts,
        vec![
            Verdict::Consumed,
            Verdict::Consumed,
            Verdict::Consumed,
            Verdict::Consumed,
            Verdict::Drop(DropReason::NeighborQueueFull),
            Verdict::Drop(DropReason::NeighborQueueFull),
        ]
    );
    assert_eq!(
        batch.emitted.len(),
        1,
        "one ARP request for the whole batch"
    );
    check_arp_request(&batch.emitted[0]);
    assert_eq!(lab.pipeline.held_packets(), 4);
    lab.assert_drops(&[(DropReason::NeighborQueueFull, 2)]);
}

#[test]
fn tick_reprobes_then_drops_held_packets_once() {
    let mut lab = Lab::new(); // retry 1 s, 3 probes
    for i in 0..4 {
        assert_eq!(lab.send(0, &to_unresolved_v4(i)).verdict, Verdict::Consumed);
    }
    assert!(
        lab.tick(T0 + 999 * MS).is_empty(),
        "not before the retry interval"
    );
    let probe = lab.tick(T0 + 1000 * MS);
    assert_eq!(probe.len(), 1, "second probe");
    check_arp_request(&probe[0]);
    assert!(lab.tick(T0 + 1500 * MS).is_empty());
    let probe = lab.tick(T0 + 2000 * MS);
    assert_eq!(probe.len(), 1, "third probe");
    check_arp_request(&probe[0]);
    assert_eq!(lab.pipeline.held_packets(), 4);
    lab.assert_drops(&[]);
    // After the last probe's interval: dropped, counted once each.
    assert!(lab.tick(T0 + 3000 * MS).is_empty());
    assert_eq!(lab.pipeline.held_packets(), 0);
    lab.assert_drops(&[(DropReason::NeighborUnresolved, 4)]);
    assert!(lab.tick(T0 + 4000 * MS).is_empty());
    assert!(lab.tick(T0 + 9000 * MS).is_empty());
    lab.assert_drops(&[(DropReason::NeighborUnresolved, 4)]);
    // A new packet starts a new resolution.
    let run = lab.send_at(0, &to_unresolved_v4(9), T0 + 9500 * MS);
    assert_eq!(run.verdict, Verdict::Consumed);
    assert_eq!(run.emitted.len(), 1);
}

#[test]
fn learn_neighbor_in_the_tables_releases_on_tick() {
    let mut lab = Lab::new();
    let frames: Vec<Vec<u8>> = (0..2).map(to_unresolved_v4).collect();
    for frame in &frames {
        lab.send(0, frame);
    }
    lab.apply(&[TableOp::LearnNeighbor {
        port: PortId(3),
        ip: ip4(UNRESOLVED_V4),
        mac: ea(NEW_MAC),
        now_ns: T0 + MS,
    }]);
    let released = lab.tick(T0 + 2 * MS);
    assert_eq!(released.len(), 2);
    for (released, original) in released.iter().zip(&frames) {
        check_released(released, original, NEW_MAC);
    }
    assert_eq!(lab.pipeline.held_packets(), 0);
    lab.assert_drops(&[]);
    // And new packets now go straight out.
    let frame = to_unresolved_v4(5);
    let run = lab.send_at(0, &frame, T0 + 3 * MS);
    assert_eq!(run.verdict, Verdict::Transmit(PortId(3)));
    check_forwarded_v4(&run.frame, &frame, 3, NEW_MAC);
}

#[test]
fn learn_neighbor_in_the_tables_releases_on_process() {
    let mut lab = Lab::new();
    let held = to_unresolved_v4(0);
    lab.send(0, &held);
    lab.apply(&[TableOp::LearnNeighbor {
        port: PortId(3),
        ip: ip4(UNRESOLVED_V4),
        mac: ea(NEW_MAC),
        now_ns: T0,
    }]);
    // Any batch, even unrelated traffic, releases what the tables now resolve.
    let run = lab.send_at(
        0,
        &udp4(H0, R[0], H0_V4, [192, 168, 5, 5], 64, PAYLOAD),
        T0 + MS,
    );
    assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
    assert_eq!(run.emitted.len(), 1);
    check_released(&run.emitted[0], &held, NEW_MAC);
}

#[test]
fn deleting_the_port_drops_held_packets() {
    let mut lab = Lab::new();
    lab.send(0, &to_unresolved_v4(0));
    lab.send(0, &to_unresolved_v4(1));
    lab.apply(&[TableOp::DelPort { id: PortId(3) }]);
    assert!(lab.tick(T0 + MS).is_empty());
    assert_eq!(lab.pipeline.held_packets(), 0);
    lab.assert_drops(&[(DropReason::NeighborUnresolved, 2)]);
}

#[test]
fn fragments_for_an_unresolved_neighbor_are_held_and_released() {
    let mut lab = Lab::with_config(pipelines::PipelineConfig {
        neighbor_queue_per_entry: 8,
        ..lab_config()
    });
    // p4 (MTU 576) gets a connected host without a neighbor entry.
    let dst = [10, 0, 4, 77];
    let frame = udp4_with_header(H0, R[0], ipv4_header(H0_V4, dst, 64, false), &[9u8; 1000]);
    let run = lab.send(0, &frame);
    assert_eq!(run.verdict, Verdict::Consumed);
    assert_eq!(run.emitted.len(), 1, "one ARP request");
    assert_eq!(lab.pipeline.held_packets(), 2, "two fragments held");
    let reply = arp(NEW_MAC, R[4], 2, NEW_MAC, dst, R[4], router_v4(4));
    let run = lab.send(4, &reply);
    assert_eq!(run.emitted.len(), 2);
    for fragment in &run.emitted {
        assert_eq!(&fragment.frame[0..6], &NEW_MAC);
        let ip = ipv4_of(&fragment.frame);
        assert!(ip.len() <= 576 && ipv4_header_ok(ip));
    }
}

// --- IPv6 neighbor discovery ----------------------------------------------------------------------

#[test]
fn neighbor_solicitation_for_the_router_gets_an_advertisement() {
    let mut lab = Lab::new();
    let solicit = neighbor_solicit(H0, H0_V6, router_v6(0), 255, Some(H0));
    let run = lab.send(0, &solicit);
    assert_eq!(run.verdict, Verdict::Consumed);
    assert_eq!(run.emitted.len(), 1);
    let advert = &run.emitted[0];
    assert_eq!(advert.port, PortId(0));
    assert_eq!(&advert.frame[0..6], &H0);
    assert_eq!(&advert.frame[6..12], &R[0]);
    let ip = ipv6_of(&advert.frame);
    assert_eq!(&ip[8..24], &router_v6(0), "from the target address");
    assert_eq!(&ip[24..40], &H0_V6, "to the solicitor");
    assert_eq!(ip[6], 58);
    assert_eq!(ip[7], 255, "hop limit 255");
    assert!(ipv6_l4_ok(ip, 40, 58), "NA checksum");
    let icmp = &ip[40..];
    assert_eq!(icmp[0], 136);
    assert_eq!(icmp[1], 0);
    assert_eq!(icmp[4] & 0xe0, 0xe0, "router, solicited, override");
    assert_eq!(&icmp[8..24], &router_v6(0), "target");
    assert_eq!(&icmp[24..26], &[2, 1], "target link-layer address option");
    assert_eq!(&icmp[26..32], &R[0]);
    assert_eq!(
        run.events,
        vec![Event::NeighborLearned {
            port: PortId(0),
            ip: ip6(H0_V6),
            mac: ea(H0),
        }]
    );
    lab.assert_drops(&[]);
}

#[test]
fn solicitation_for_the_link_local_address() {
    let mut lab = Lab::new();
    let link_local = pipelines::tables::link_local_from_mac(ea(R[1])).octets();
    let solicit = neighbor_solicit(N[1], neighbor_v6(1), link_local, 255, Some(N[1]));
    let run = lab.send(1, &solicit);
    assert_eq!(run.verdict, Verdict::Consumed);
    let ip = ipv6_of(&run.emitted[0].frame);
    assert_eq!(&ip[8..24], &link_local);
    assert_eq!(&ip[40 + 8..40 + 24], &link_local);
    assert!(ipv6_l4_ok(ip, 40, 58));
}

#[test]
fn bad_solicitations() {
    let cases = [
        (
            neighbor_solicit(H0, H0_V6, router_v6(0), 64, Some(H0)),
            DropReason::NdMalformed,
        ),
        (
            neighbor_solicit(
                H0,
                H0_V6,
                v6b([0x2001, 0xdb8, 0, 0, 0, 0, 0, 9]),
                255,
                Some(H0),
            ),
            DropReason::NdNotForUs,
        ),
        (
            // Option of length 0.
            {
                let mut f = neighbor_solicit(H0, H0_V6, router_v6(0), 255, Some(H0));
                let at = 14 + 40 + 24 + 1;
                f[at] = 0;
                // Keep the checksum right so only the option is wrong.
                let ip_len = f.len() - 14;
                let ip = &mut f[14..14 + ip_len];
                ip[42] = 0;
                ip[43] = 0;
                let body_len = (ip_len - 40) as u32;
                let pseudo = [&ip[8..40], &body_len.to_be_bytes()[..], &[0, 0, 0, 58]].concat();
                let sum = !ones_sum(&[&pseudo, &ip[40..]]);
                ip[42..44].copy_from_slice(&sum.to_be_bytes());
                f
            },
            DropReason::NdMalformed,
        ),
    ];
    for (frame, reason) in cases {
        let mut lab = Lab::new();
        let run = lab.send(0, &frame);
        assert_eq!(run.verdict, Verdict::Drop(reason));
        lab.assert_drops(&[(reason, 1)]);
        assert!(run.emitted.is_empty());
    }
}

#[test]
fn unresolved_ipv6_neighbor_gets_one_solicitation_and_an_advert_releases() {
    let mut lab = Lab::new();
    let frames: Vec<Vec<u8>> = (0..2u8)
        .map(|i| udp6(H0, R[0], H0_V6, UNRESOLVED_V6, 64, &[i; 20]))
        .collect();
    let run = lab.send(0, &frames[0]);
    assert_eq!(run.verdict, Verdict::Consumed);
    assert_eq!(run.emitted.len(), 1, "one neighbor solicitation");
    let solicit = &run.emitted[0];
    let group = solicited_node(UNRESOLVED_V6);
    assert_eq!(solicit.port, PortId(3));
    assert_eq!(&solicit.frame[0..6], &multicast_mac(group));
    assert_eq!(&solicit.frame[6..12], &R[3]);
    let ip = ipv6_of(&solicit.frame);
    assert_eq!(&ip[8..24], &router_v6(3));
    assert_eq!(&ip[24..40], &group);
    assert_eq!(ip[7], 255);
    assert!(ipv6_l4_ok(ip, 40, 58), "NS checksum");
    assert_eq!(ip[40], 135);
    assert_eq!(&ip[48..64], &UNRESOLVED_V6);
    assert_eq!(&ip[64..66], &[1, 1], "source link-layer address option");
    assert_eq!(&ip[66..72], &R[3]);
    assert_eq!(lab.send(0, &frames[1]).verdict, Verdict::Consumed);
    assert_eq!(lab.pipeline.held_packets(), 2);

    let advert = neighbor_advert(NEW_MAC, R[3], UNRESOLVED_V6, router_v6(3), NEW_MAC);
    let run = lab.send(3, &advert);
    assert_eq!(run.verdict, Verdict::Consumed);
    assert_eq!(
        run.events,
        vec![Event::NeighborLearned {
            port: PortId(3),
            ip: ip6(UNRESOLVED_V6),
            mac: ea(NEW_MAC),
        }]
    );
    assert_eq!(run.emitted.len(), 2);
    for (released, original) in run.emitted.iter().zip(&frames) {
        assert_eq!(released.port, PortId(3));
        check_forwarded_v6(&released.frame, original, 3, NEW_MAC);
    }
    assert_eq!(lab.pipeline.held_packets(), 0);
    lab.assert_drops(&[]);
}

#[test]
fn unresolved_ipv6_neighbor_times_out() {
    let mut lab = Lab::new();
    lab.send(0, &udp6(H0, R[0], H0_V6, UNRESOLVED_V6, 64, PAYLOAD));
    assert_eq!(lab.tick(T0 + 1000 * MS).len(), 1);
    assert_eq!(lab.tick(T0 + 2000 * MS).len(), 1);
    assert!(lab.tick(T0 + 3000 * MS).is_empty());
    lab.assert_drops(&[(DropReason::NeighborUnresolved, 1)]);
}

#[test]
fn duplicate_address_detection_for_our_address_is_defended() {
    // RFC 4861 7.2.4: a solicitation from the unspecified address (DAD) for one of our
    // addresses is answered with an advertisement multicast to all-nodes, S flag clear.
    let mut lab = Lab::new();
    let dad = neighbor_solicit(H0, [0; 16], router_v6(0), 255, None);
    let run = lab.send(0, &dad);
    assert_eq!(run.verdict, Verdict::Consumed);
    assert!(
        run.events.is_empty(),
        "nothing to learn from the unspecified address"
    );
    assert_eq!(run.emitted.len(), 1);
    let advert = &run.emitted[0];
    assert_eq!(advert.port, PortId(0));
    let all_nodes = v6b([0xff02, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!(&advert.frame[0..6], &multicast_mac(all_nodes));
    assert_eq!(&advert.frame[6..12], &R[0]);
    let ip = ipv6_of(&advert.frame);
    assert_eq!(&ip[8..24], &router_v6(0));
    assert_eq!(&ip[24..40], &all_nodes);
    assert_eq!(ip[7], 255);
    assert!(ipv6_l4_ok(ip, 40, 58));
    let icmp = &ip[40..];
    assert_eq!(icmp[0], 136);
    assert_eq!(icmp[4] & 0xe0, 0xa0, "router and override, not solicited");
    assert_eq!(&icmp[8..24], &router_v6(0));
    assert_eq!(&icmp[24..32], &[&[2u8, 1][..], &R[0]].concat()[..]);
    lab.assert_drops(&[]);
    // A DAD probe for an address that is not ours is not our business.
    let other = neighbor_solicit(
        H0,
        [0; 16],
        v6b([0x2001, 0xdb8, 0, 0, 0, 0, 0, 9]),
        255,
        None,
    );
    let run = lab.send(0, &other);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::NdNotForUs));
    assert!(run.emitted.is_empty());
}

#[test]
fn hold_queue_total_and_pending_bounds() {
    let mut lab = Lab::with_config(pipelines::PipelineConfig {
        neighbor_queue_per_entry: 4,
        neighbor_queue_total: 6,
        neighbor_pending_max: 3,
        ..lab_config()
    });
    // Four unresolved neighbors on p3, two packets each.
    let frames: Vec<(u16, Vec<u8>)> = (0..8u8)
        .map(|i| {
            (
                0,
                udp4(H0, R[0], H0_V4, [10, 0, 3, 100 + i / 2], 64, &[i; 8]),
            )
        })
        .collect();
    let batch = lab.batch_at(&frames, T0);
    let consumed = batch
        .verdicts
        .iter()
        .filter(|v| **v == Verdict::Consumed)
        .count();
    assert_eq!(consumed, 6, "total bound: {:?}", batch.verdicts);
    assert_eq!(lab.pipeline.held_packets(), 6);
    assert_eq!(batch.emitted.len(), 3, "one request per tracked neighbor");
    lab.assert_drops(&[(DropReason::NeighborQueueFull, 2)]);
}
