//! ACLs in the pipeline: allow/deny/reject by the sets of the ingress and egress ports,
//! statefulness (replies pass without a reverse rule), policy changes cutting established
//! connections, established traffic on the flow cache.

mod common;

use common::*;
use etherparse::PacketBuilder;
use pipelines::acl::{AclAction, AclRule};
use pipelines::tables::AclDirection;
use pipelines::{DropReason, PortId, TableOp, Verdict};

fn rule(protocol: Option<u8>, dst_ports: Option<(u16, u16)>, action: AclAction) -> AclRule {
    AclRule {
        priority: 10,
        src: Some(prefix("10.0.0.0/24")),
        dst: None,
        protocol,
        src_ports: None,
        dst_ports,
        icmp_type: None,
        icmp_code: None,
        action,
    }
}

fn set(port: u16, direction: AclDirection, rules: Vec<AclRule>) -> TableOp {
    TableOp::SetAcl {
        port: PortId(port),
        direction,
        rules,
    }
}

#[allow(clippy::too_many_arguments)]
fn tcp(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    syn: bool,
    ack: bool,
) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1, 65535);
    if syn {
        b = b.syn();
    }
    if ack {
        b = b.ack(1);
    }
    let mut out = Vec::new();
    b.write(&mut out, b"").expect("tcp");
    out
}

/// The lab with pod 10.0.2.2 (behind p2) admitting TCP 80 from 10.0.0.0/24 only.
fn lab() -> Lab {
    let mut lab = Lab::new();
    lab.apply(&[set(
        2,
        AclDirection::Out,
        vec![rule(Some(6), Some((80, 80)), AclAction::Allow)],
    )]);
    lab
}

const POD: [u8; 4] = [10, 0, 2, 2];

#[test]
fn an_attached_set_allows_what_it_allows_and_denies_the_rest() {
    let mut lab = lab();
    let web = tcp(H0, R[0], H0_V4, POD, 40000, 80, true, false);
    assert_eq!(lab.send(0, &web).verdict, Verdict::Transmit(PortId(2)));
    let ssh = tcp(H0, R[0], H0_V4, POD, 40001, 22, true, false);
    assert_eq!(
        lab.send(0, &ssh).verdict,
        Verdict::Drop(DropReason::AclDeny)
    );
    let udp = udp4_ports(H0, R[0], H0_V4, POD, 64, 5000, 80, b"x");
    assert_eq!(
        lab.send(0, &udp).verdict,
        Verdict::Drop(DropReason::AclDeny)
    );
    // Ports without a set are not filtered.
    let other = udp4_ports(H0, R[0], H0_V4, neighbor_v4(3), 64, 5000, 22, b"x");
    assert_eq!(lab.send(0, &other).verdict, Verdict::Transmit(PortId(3)));
    lab.assert_drops(&[(DropReason::AclDeny, 2)]);
}

#[test]
fn replies_pass_without_a_reverse_rule_and_established_traffic_hits_the_cache() {
    let mut lab = lab();
    // The pod's own port denies everything it sends (a reverse rule would be needed
    // statelessly).
    lab.apply(&[set(2, AclDirection::In, vec![])]);
    let syn = tcp(H0, R[0], H0_V4, POD, 40000, 80, true, false);
    assert_eq!(lab.send(0, &syn).verdict, Verdict::Transmit(PortId(2)));
    let synack = tcp(N[2], R[2], POD, H0_V4, 80, 40000, true, true);
    assert_eq!(lab.send(2, &synack).verdict, Verdict::Transmit(PortId(0)));
    // A new connection from the pod is denied by its In set.
    let new = tcp(N[2], R[2], POD, H0_V4, 80, 40001, true, false);
    assert_eq!(
        lab.send(2, &new).verdict,
        Verdict::Drop(DropReason::AclDeny)
    );
    // Both directions are now flow-cache hits: no classification.
    let hits = lab.pipeline.counters().flow.hits;
    let ack = tcp(H0, R[0], H0_V4, POD, 40000, 80, false, true);
    assert_eq!(lab.send(0, &ack).verdict, Verdict::Transmit(PortId(2)));
    assert_eq!(lab.send(2, &synack).verdict, Verdict::Transmit(PortId(0)));
    assert_eq!(lab.pipeline.counters().flow.hits, hits + 2);
}

#[test]
fn a_rule_change_cuts_an_established_connection_at_its_next_packet() {
    let mut lab = lab();
    let syn = tcp(H0, R[0], H0_V4, POD, 40000, 80, true, false);
    assert_eq!(lab.send(0, &syn).verdict, Verdict::Transmit(PortId(2)));
    assert_eq!(
        lab.pipeline.conntrack().len(),
        1,
        "the allowed connection is tracked"
    );
    // The same set with a deny of 80 in front of the allow.
    let mut deny = rule(Some(6), Some((80, 80)), AclAction::Deny);
    deny.priority = 1;
    lab.apply(&[set(
        2,
        AclDirection::Out,
        vec![deny, rule(Some(6), Some((80, 80)), AclAction::Allow)],
    )]);
    let ack = tcp(H0, R[0], H0_V4, POD, 40000, 80, false, true);
    assert_eq!(
        lab.send(0, &ack).verdict,
        Verdict::Drop(DropReason::AclDeny)
    );
    assert!(
        lab.pipeline.conntrack().is_empty(),
        "the connection was cut"
    );
    // Allowed again: a new connection passes.
    lab.apply(&[set(
        2,
        AclDirection::Out,
        vec![rule(Some(6), Some((80, 80)), AclAction::Allow)],
    )]);
    assert_eq!(lab.send(0, &syn).verdict, Verdict::Transmit(PortId(2)));
}

#[test]
fn reject_answers_with_a_reset_or_administratively_prohibited() {
    let mut lab = Lab::new();
    lab.apply(&[set(
        2,
        AclDirection::Out,
        vec![
            rule(Some(6), None, AclAction::Reject),
            rule(Some(17), None, AclAction::Reject),
        ],
    )]);
    let syn = tcp(H0, R[0], H0_V4, POD, 40000, 80, true, false);
    let run = lab.send(0, &syn);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::AclReject));
    assert_eq!(run.emitted.len(), 1);
    let ip = ipv4_of(&run.emitted[0].frame);
    let t = &ip[ihl(ip)..];
    assert_eq!(t[13], 0x14, "RST|ACK");
    assert_eq!(&ip[12..16], &POD, "from the destination");
    let udp = udp4_ports(H0, R[0], H0_V4, POD, 64, 5000, 53, b"x");
    let run = lab.send(0, &udp);
    assert_eq!(run.verdict, Verdict::Drop(DropReason::AclReject));
    let ip = ipv4_of(&run.emitted[0].frame);
    let icmp = &ip[ihl(ip)..];
    assert_eq!((icmp[0], icmp[1]), (3, 13), "administratively prohibited");
    assert_eq!(lab.pipeline.counters().acl_resets, 1);
}

#[test]
fn later_fragments_match_only_rules_without_ports() {
    let mut lab = lab();
    let mut frame = udp4_ports(H0, R[0], H0_V4, POD, 64, 5000, 80, &[0u8; 64]);
    // A later fragment: offset 8 (64 bytes), no L4 header.
    frame[14 + 6..14 + 8].copy_from_slice(&8u16.to_be_bytes());
    frame[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
    let sum = {
        let ip = &frame[14..34];
        let mut acc = 0u32;
        for w in ip.chunks(2) {
            acc += u16::from_be_bytes([w[0], w[1]]) as u32;
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    };
    frame[14 + 10..14 + 12].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(
        lab.send(0, &frame).verdict,
        Verdict::Drop(DropReason::AclDeny)
    );
    lab.apply(&[set(
        2,
        AclDirection::Out,
        vec![rule(Some(17), None, AclAction::Allow)],
    )]);
    assert_eq!(lab.send(0, &frame).verdict, Verdict::Transmit(PortId(2)));
}

#[test]
fn replies_to_an_unfiltered_connection_cross_a_filtered_port() {
    // Only pod 10.0.2.2's port has a set (admitting TCP 80); the pod opens a connection to
    // H0 (not filtered on the way out): H0's answer must pass the set.
    let mut lab = lab();
    let syn = tcp(N[2], R[2], POD, H0_V4, 40000, 22, true, false);
    assert_eq!(lab.send(2, &syn).verdict, Verdict::Transmit(PortId(0)));
    let synack = tcp(H0, R[0], H0_V4, POD, 22, 40000, true, true);
    assert_eq!(lab.send(0, &synack).verdict, Verdict::Transmit(PortId(2)));
    // An unsolicited one is still denied.
    let other = tcp(H0, R[0], H0_V4, POD, 22, 40001, true, false);
    assert_eq!(
        lab.send(0, &other).verdict,
        Verdict::Drop(DropReason::AclDeny)
    );
}

#[test]
fn decisions_are_counted_per_rule_and_denials_sampled_to_events() {
    let mut lab = lab();
    let syn = tcp(H0, R[0], H0_V4, POD, 40000, 80, true, false);
    lab.send(0, &syn);
    let ack = tcp(H0, R[0], H0_V4, POD, 40000, 80, false, true);
    lab.send(0, &ack); // a flow-cache hit: not classified
    let mut events = 0;
    for sport in 0..3u16 {
        let udp = udp4_ports(H0, R[0], H0_V4, POD, 64, 6000 + sport, 53, b"x");
        let run = lab.send(0, &udp);
        events += run
            .events
            .iter()
            .filter(|e| matches!(e, pipelines::Event::AclDenied { rule: None, .. }))
            .count();
    }
    assert_eq!(events, 3, "each denial sampled (under the rate limit)");
    let hits = lab.pipeline.counters().acl_hits;
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert_eq!((hits[0].rule, hits[0].packets), (Some(0), 1));
    assert_eq!((hits[1].rule, hits[1].packets), (None, 3));
    assert!(hits
        .iter()
        .all(|h| h.port == 2 && h.direction == AclDirection::Out));
}
