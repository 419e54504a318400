//! ACLs in the pipeline: allow/deny/reject by the sets of the ingress and egress ports,
//! statefulness (replies pass without a reverse rule), policy changes cutting established
//! connections, established traffic on the flow cache.

mod common;

use common::*;
use etherparse::PacketBuilder;
use pipelines::acl::{AclAction, AclRule};
use pipelines::tables::{AclDirection, AclTarget};
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
    for _ in 0..4 {
        lab.send(0, &ack); // flow-cache hits, counted when the cache is accounted
    }
    // Replies pass by state: no rule counts them.
    let synack = tcp(N[2], R[2], POD, H0_V4, 80, 40000, true, true);
    lab.send(2, &synack);
    lab.send(2, &synack);
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
    assert_eq!(
        (hits[0].rule, hits[0].packets),
        (Some(0), 1),
        "the cache's packets are not folded in yet"
    );
    lab.tick(T0 + 1_500_000_000);
    let hits = lab.pipeline.counters().acl_hits;
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert_eq!(
        (hits[0].rule, hits[0].packets),
        (Some(0), 5),
        "every packet the rule allowed, cached or not"
    );
    assert_eq!((hits[1].rule, hits[1].packets), (None, 3));
    assert!(hits
        .iter()
        .all(|h| h.target == AclTarget::Port(PortId(2)) && h.direction == AclDirection::Out));
}

#[test]
fn rule_counters_match_the_packets_sent_across_evictions_and_policy_changes() {
    // A one-bucket cache: flows evict each other, so packets alternate between the slow
    // path and the cache.
    let mut config = lab_config();
    config.flow_capacity = 4;
    let mut lab = Lab::with_config(config);
    let allow_udp = |port| {
        let mut r = rule(Some(17), Some((port, port)), AclAction::Allow);
        r.priority = 10 + u32::from(port);
        r
    };
    lab.apply(&[set(
        2,
        AclDirection::Out,
        vec![allow_udp(53), allow_udp(54)],
    )]);
    let mut sent = [0u64; 2];
    let mut now = T0;
    for round in 0..40u16 {
        for sport in 0..(1 + round % 6) {
            let dport = 53 + (sport % 2);
            let udp = udp4_ports(H0, R[0], H0_V4, POD, 64, 7000 + sport, dport, b"x");
            assert_eq!(
                lab.send_at(0, &udp, now).verdict,
                Verdict::Transmit(PortId(2))
            );
            sent[usize::from(dport - 53)] += 1;
        }
        if round == 20 {
            // A policy change (same rules): every cached flow is revalidated.
            lab.apply(&[set(
                2,
                AclDirection::Out,
                vec![allow_udp(53), allow_udp(54)],
            )]);
        }
        now += 300_000_000;
    }
    lab.tick(now + 2_000_000_000);
    let hits = lab.pipeline.counters().acl_hits;
    let count = |rule| {
        hits.iter()
            .find(|h| h.rule == Some(rule))
            .map_or(0, |h| h.packets)
    };
    assert_eq!([count(0), count(1)], sent, "{hits:?}");
    assert!(
        lab.pipeline.counters().flow.hits > 0,
        "the cache served some"
    );
    assert!(
        lab.pipeline.counters().flow.evictions > 0,
        "and evicted some"
    );
}

#[test]
fn cached_udp_flows_keep_their_connection_alive() {
    // The pod may not open anything (its In set is empty); H0 talks to it over UDP 53.
    let mut lab = Lab::new();
    lab.apply(&[
        set(2, AclDirection::In, vec![]),
        set(
            2,
            AclDirection::Out,
            vec![rule(Some(17), Some((53, 53)), AclAction::Allow)],
        ),
    ]);
    let query = udp4_ports(H0, R[0], H0_V4, POD, 64, 5353, 53, b"q");
    let answer = udp4_ports(N[2], R[2], POD, H0_V4, 64, 53, 5353, b"a");
    let mut now = T0;
    assert_eq!(
        lab.send_at(0, &query, now).verdict,
        Verdict::Transmit(PortId(2))
    );
    assert_eq!(
        lab.send_at(2, &answer, now).verdict,
        Verdict::Transmit(PortId(0))
    );
    // Queries keep coming for longer than a replied UDP connection lives (120 s) without
    // a packet on the slow path: the cache serves them all.
    let slow = lab.pipeline.counters().flow.misses;
    for _ in 0..30 {
        now += 10_000_000_000;
        assert_eq!(
            lab.send_at(0, &query, now).verdict,
            Verdict::Transmit(PortId(2))
        );
    }
    assert_eq!(lab.pipeline.counters().flow.misses, slow, "all cache hits");
    // Any table change sends the next answer through the slow path: its connection must
    // still be there, or the pod's empty In set denies it.
    lab.apply(&[route("192.0.2.0/24", via("10.0.1.2"))]);
    now += 1_000_000;
    assert_eq!(
        lab.send_at(2, &answer, now).verdict,
        Verdict::Transmit(PortId(0))
    );
}

#[test]
fn a_vrf_set_filters_every_port_of_the_vrf_on_top_of_port_sets() {
    let mut lab = Lab::new();
    // VRF 0 admits UDP only into its ports.
    lab.apply(&[TableOp::SetVrfAcl {
        vrf: pipelines::VrfId(0),
        direction: AclDirection::Out,
        rules: vec![rule(Some(17), None, AclAction::Allow)],
    }]);
    let to3 = tcp(H0, R[0], H0_V4, neighbor_v4(3), 40000, 80, true, false);
    assert_eq!(
        lab.send(0, &to3).verdict,
        Verdict::Drop(DropReason::AclDeny)
    );
    let udp3 = udp4_ports(H0, R[0], H0_V4, neighbor_v4(3), 64, 5000, 80, b"x");
    assert_eq!(lab.send(0, &udp3).verdict, Verdict::Transmit(PortId(3)));
    // A port set narrows it further: both must allow.
    lab.apply(&[set(
        2,
        AclDirection::Out,
        vec![rule(Some(17), Some((53, 53)), AclAction::Allow)],
    )]);
    let udp2 = udp4_ports(H0, R[0], H0_V4, POD, 64, 5000, 80, b"x");
    assert_eq!(
        lab.send(0, &udp2).verdict,
        Verdict::Drop(DropReason::AclDeny)
    );
    let dns2 = udp4_ports(H0, R[0], H0_V4, POD, 64, 5000, 53, b"x");
    assert_eq!(lab.send(0, &dns2).verdict, Verdict::Transmit(PortId(2)));
    let hits = lab.pipeline.counters().acl_hits;
    let vrf = AclTarget::Vrf(pipelines::VrfId(0));
    let of = |target, rule| {
        hits.iter()
            .find(|h| h.target == target && h.rule == rule)
            .map_or(0, |h| h.packets)
    };
    assert_eq!(of(vrf, None), 1, "the TCP SYN: {hits:?}");
    // The port set decides before the VRF's out set: the denied UDP packet never reached it.
    assert_eq!(of(vrf, Some(0)), 2, "the allowed UDP packets: {hits:?}");
    assert_eq!(of(AclTarget::Port(PortId(2)), None), 1, "{hits:?}");
    assert_eq!(of(AclTarget::Port(PortId(2)), Some(0)), 1, "{hits:?}");
    // Detached: TCP passes again.
    lab.apply(&[TableOp::DelVrfAcl {
        vrf: pipelines::VrfId(0),
        direction: AclDirection::Out,
    }]);
    let to3 = tcp(H0, R[0], H0_V4, neighbor_v4(3), 40001, 80, true, false);
    assert_eq!(lab.send(0, &to3).verdict, Verdict::Transmit(PortId(3)));
}
