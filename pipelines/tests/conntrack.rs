//! Connection table: both-direction lookup, NAT tuples, the TCP state machine, timeouts, the
//! full-table policy, port allocation, flush, and a property test keeping the index
//! consistent with the entries under random operations.

use pipelines::conntrack::{
    invert, ConnId, ConnTable, ConntrackConfig, CreateError, Direction, Nat, State, TcpState,
    Timeouts, Translation, UpdateOutcome, MAX_PORT_PROBES,
};
use pipelines::flow::FlowKey;
use pipelines::wire::TcpFlags;
use proptest::prelude::*;
use std::net::Ipv4Addr;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const GRE: u8 = 47;
const S: u32 = 1000;

const SYN: TcpFlags = TcpFlags::SYN;
const SYNACK: TcpFlags = TcpFlags(0x12);
const ACK: TcpFlags = TcpFlags::ACK;
const FIN: TcpFlags = TcpFlags(0x11);
const RST: TcpFlags = TcpFlags::RST;
const NONE: TcpFlags = TcpFlags(0);

fn ip(a: u8, b: u8, c: u8, d: u8) -> u128 {
    u32::from(Ipv4Addr::new(a, b, c, d)) as u128
}

fn key(protocol: u8, src: u128, src_port: u16, dst: u128, dst_port: u16) -> FlowKey {
    FlowKey {
        src,
        dst,
        vrf: 0,
        protocol,
        ipv6: false,
        src_port,
        dst_port,
    }
}

fn table(capacity: usize) -> ConnTable {
    ConnTable::new(ConntrackConfig {
        capacity,
        ..ConntrackConfig::default()
    })
}

fn snat(addr: u128, port: u16) -> Nat {
    Nat {
        src: Some(Translation { addr, port }),
        dst: None,
    }
}

fn pod_to_web(port: u16) -> FlowKey {
    key(TCP, ip(10, 244, 0, 5), port, ip(93, 184, 216, 34), 443)
}

fn hits(t: &mut ConnTable, k: &FlowKey, now: u32) -> Option<(ConnId, Direction)> {
    t.lookup(k, now)
}

#[test]
fn both_directions_without_nat() {
    let mut t = table(16);
    let k = key(UDP, ip(10, 0, 0, 1), 5000, ip(10, 0, 0, 2), 53);
    let id = t.create(&k, &Nat::NONE, NONE, 60, 0).unwrap();
    assert_eq!(hits(&mut t, &k, 1), Some((id, Direction::Original)));
    assert_eq!(hits(&mut t, &invert(&k), 1), Some((id, Direction::Reply)));
    assert_eq!(t.translated(id, Direction::Original), Some(k));
    assert_eq!(t.translated(id, Direction::Reply), Some(invert(&k)));
    // Not the connection: other ports, other VRF, other protocol.
    let mut other = k;
    other.src_port = 5001;
    assert_eq!(hits(&mut t, &other, 1), None);
    other = k;
    other.vrf = 1;
    assert_eq!(hits(&mut t, &other, 1), None);
    other = k;
    other.protocol = TCP;
    assert_eq!(hits(&mut t, &other, 1), None);
    let c = t.counters();
    assert_eq!((c.lookups, c.hits, c.created, c.live), (5, 2, 1, 1));
    t.check_consistency().unwrap();
}

#[test]
fn snat_reply_tuple_and_rewrites() {
    let mut t = table(16);
    let original = pod_to_web(40000);
    let nat = snat(ip(192, 0, 2, 1), 61000);
    let id = t.create(&original, &nat, SYN, 60, 0).unwrap();
    let reply = key(TCP, ip(93, 184, 216, 34), 443, ip(192, 0, 2, 1), 61000);
    assert_eq!(nat.reply_tuple(&original), reply);
    assert_eq!(hits(&mut t, &reply, 1), Some((id, Direction::Reply)));
    // Original packets leave with the node's address and port, replies go back to the pod.
    assert_eq!(
        t.translated(id, Direction::Original),
        Some(key(TCP, ip(192, 0, 2, 1), 61000, ip(93, 184, 216, 34), 443))
    );
    assert_eq!(t.translated(id, Direction::Reply), Some(invert(&original)));
    let c = t.get(id, 1).unwrap();
    assert_eq!((c.original, c.reply), (original, reply));
    assert_eq!(c.nat(), nat);
    // The pod's own (untranslated) reply tuple is not the connection.
    assert_eq!(hits(&mut t, &invert(&original), 1), None);
}

#[test]
fn dnat_and_hairpin_reply_tuples() {
    let mut t = table(16);
    let client = ip(10, 244, 0, 7);
    let vip = ip(10, 96, 0, 10);
    let backend = ip(10, 244, 1, 3);
    let original = key(TCP, client, 5555, vip, 80);
    let dnat = Nat {
        src: None,
        dst: Some(Translation {
            addr: backend,
            port: 8080,
        }),
    };
    let id = t.create(&original, &dnat, SYN, 60, 0).unwrap();
    let reply = key(TCP, backend, 8080, client, 5555);
    assert_eq!(hits(&mut t, &reply, 1), Some((id, Direction::Reply)));
    assert_eq!(
        t.translated(id, Direction::Original),
        Some(key(TCP, client, 5555, backend, 8080))
    );
    // Reply packets leave as if from the VIP.
    assert_eq!(
        t.translated(id, Direction::Reply),
        Some(key(TCP, vip, 80, client, 5555))
    );
    assert_eq!(t.get(id, 1).unwrap().nat(), dnat);

    // Hairpin: the client is also the backend's neighbour; both translations.
    let node = ip(10, 244, 0, 1);
    let original = key(TCP, client, 5556, vip, 80);
    let both = Nat {
        src: Some(Translation {
            addr: node,
            port: 33000,
        }),
        dst: dnat.dst,
    };
    let id = t.create(&original, &both, SYN, 60, 0).unwrap();
    let reply = key(TCP, backend, 8080, node, 33000);
    assert_eq!(both.reply_tuple(&original), reply);
    assert_eq!(hits(&mut t, &reply, 1), Some((id, Direction::Reply)));
    assert_eq!(t.get(id, 1).unwrap().nat(), both);
    t.check_consistency().unwrap();
}

#[test]
fn icmp_echo_is_keyed_by_identifier_both_ways() {
    let mut t = table(16);
    let pod = ip(10, 244, 0, 5);
    let google = ip(8, 8, 8, 8);
    let node = ip(192, 0, 2, 1);
    // The pipeline keys echo requests and replies alike: identifier in src_port, 0 in dst_port.
    let request = key(ICMP, pod, 77, google, 0);
    let id = t.create(&request, &snat(node, 1234), NONE, 84, 0).unwrap();
    let echo_reply = key(ICMP, google, 1234, node, 0);
    assert_eq!(hits(&mut t, &echo_reply, 1), Some((id, Direction::Reply)));
    assert_eq!(
        t.translated(id, Direction::Original),
        Some(key(ICMP, node, 1234, google, 0))
    );
    assert_eq!(
        t.translated(id, Direction::Reply),
        Some(key(ICMP, google, 77, pod, 0))
    );
    assert_eq!(t.state(id), Some(State::Unreplied));
    t.update(id, Direction::Reply, NONE, 84, 2);
    assert_eq!(t.state(id), Some(State::Replied));
    // ICMPv6 the same.
    let v6 = FlowKey {
        src: 0x2001_0db8 << 96 | 5,
        dst: 0x2001_0db8 << 96 | 9,
        vrf: 3,
        protocol: 58,
        ipv6: true,
        src_port: 9,
        dst_port: 0,
    };
    let id6 = t.create(&v6, &Nat::NONE, NONE, 104, 0).unwrap();
    let mut back = v6;
    std::mem::swap(&mut back.src, &mut back.dst);
    assert_eq!(hits(&mut t, &back, 1), Some((id6, Direction::Reply)));
}

#[test]
fn portless_protocols_ignore_translated_ports() {
    let mut t = table(16);
    let gre = key(GRE, ip(10, 244, 0, 5), 0, ip(203, 0, 113, 9), 0);
    let nat = snat(ip(192, 0, 2, 1), 4000);
    let id = t.create(&gre, &nat, NONE, 100, 0).unwrap();
    let reply = key(GRE, ip(203, 0, 113, 9), 0, ip(192, 0, 2, 1), 0);
    assert_eq!(hits(&mut t, &reply, 1), Some((id, Direction::Reply)));
    // A second GRE connection to the same peer cannot be told apart: the port is refused.
    let template = nat.reply_tuple(&key(GRE, ip(10, 244, 0, 6), 0, ip(203, 0, 113, 9), 0));
    assert_eq!(t.allocate_port(&template, 1..=100, 7), None);
    let elsewhere = nat.reply_tuple(&key(GRE, ip(10, 244, 0, 6), 0, ip(203, 0, 113, 10), 0));
    assert_eq!(t.allocate_port(&elsewhere, 1..=100, 7), Some(1));
}

#[test]
fn packets_and_bytes_per_direction_and_listing() {
    let mut t = table(16);
    let k = key(UDP, ip(10, 0, 0, 1), 5000, ip(10, 0, 0, 2), 53);
    let id = t.create(&k, &Nat::NONE, NONE, 60, 1000).unwrap();
    assert_eq!(
        t.update(id, Direction::Original, NONE, 70, 2000),
        UpdateOutcome::Tracked
    );
    assert_eq!(
        t.update(id, Direction::Reply, NONE, 500, 3000),
        UpdateOutcome::Tracked
    );
    t.set_user(id, 42);
    let list: Vec<_> = t.iter(4000).collect();
    assert_eq!(list.len(), 1);
    let c = list[0];
    assert_eq!(c.id, id);
    assert_eq!(c.packets, [2, 1]);
    assert_eq!(c.bytes, [130, 500]);
    assert_eq!(c.state, State::Replied);
    assert_eq!((c.age_ms, c.idle_ms), (3000, 1000));
    assert_eq!(c.expires_in_ms, 119_000);
    assert_eq!(c.user, 42);
    assert_eq!(t.user(id), Some(42));
    assert_eq!(c.state.to_string(), "REPLIED");
    assert_eq!(State::Tcp(TcpState::SynSent).name(), "SYN_SENT");
    // Expired connections are not listed.
    assert_eq!(t.iter(3000 + 120_001).count(), 0);
}

#[test]
fn lookup_update_is_lookup_then_update_then_translated() {
    let mut t = table(16);
    let original = pod_to_web(40000);
    let nat = snat(ip(192, 0, 2, 1), 61000);
    let id = t.create(&original, &nat, SYN, 60, 0).unwrap();
    let reply = nat.reply_tuple(&original);
    let hit = t
        .lookup_update(&reply, t.key_hash(&reply), SYNACK, 60, 1)
        .unwrap();
    assert_eq!((hit.id, hit.direction), (id, R));
    assert_eq!(hit.outcome, UpdateOutcome::Tracked);
    assert_eq!(Some(hit.translated), t.translated(id, R));
    assert_eq!(t.state(id), Some(State::Tcp(SynRecv)));
    // Ignored and invalid packets are told apart (and only the latter counted).
    let hit = t
        .lookup_update(&reply, t.key_hash(&reply), SYN, 60, 2)
        .unwrap();
    assert_eq!(hit.outcome, UpdateOutcome::Ignored);
    let hit = t
        .lookup_update(&original, t.key_hash(&original), NONE, 60, 2)
        .unwrap();
    assert_eq!(hit.outcome, UpdateOutcome::Invalid);
    assert_eq!(t.counters().invalid, 1);
    assert_eq!(t.get(id, 2).unwrap().packets, [1, 2]);
    // Misses: unknown tuple, or a wrong hash.
    let other = pod_to_web(1);
    assert!(t
        .lookup_update(&other, t.key_hash(&other), ACK, 60, 2)
        .is_none());
    assert!(t.lookup_update(&original, 12345, ACK, 60, 2).is_none());
}

#[test]
fn touches_never_fail() {
    let mut t = table(64);
    let k = pod_to_web(1);
    t.create(&k, &Nat::NONE, SYN, 60, 0).unwrap();
    for hash in [0, 1, u64::MAX, t.key_hash(&k), t.key_hash(&pod_to_web(2))] {
        let _ = t.touch(hash);
        let _ = t.touch_entry(hash);
        let _ = t.touch_port(&k, 1..=65535, hash);
        let _ = t.touch_port(&k, 7..=7, hash);
        let _ = t.touch_port(&key(GRE, 1, 0, 2, 0), 7..=7, hash);
    }
    #[allow(clippy::reversed_empty_ranges)]
    let empty = 9..=8;
    assert_eq!(t.touch_port(&k, empty, 3), 0);
    assert_ne!(t.touch_entry(t.key_hash(&k)), 0);
}

// ---- TCP state machine ----

#[derive(Clone, Copy, Debug)]
enum Ev {
    Syn,
    SynAck,
    Fin,
    Ack,
    Rst,
    None,
}

fn flags(ev: Ev) -> TcpFlags {
    match ev {
        Ev::Syn => SYN,
        Ev::SynAck => SYNACK,
        Ev::Fin => FIN,
        Ev::Ack => ACK | TcpFlags::PSH,
        Ev::Rst => RST | TcpFlags::ACK,
        Ev::None => TcpFlags::PSH,
    }
}

use Direction::{Original as O, Reply as R};
use TcpState::{Close, CloseWait, Established, FinWait, LastAck, SynRecv, SynSent, TimeWait};

/// A connection driven into `state` by the canonical path (FIN from the original side).
fn tcp_in(t: &mut ConnTable, state: TcpState, port: u16) -> ConnId {
    let k = pod_to_web(port);
    let id = t
        .create(&k, &snat(ip(192, 0, 2, 1), port), SYN, 60, 0)
        .unwrap();
    let path: &[(Direction, TcpFlags)] = match state {
        SynSent => &[],
        SynRecv => &[(R, SYNACK)],
        Established => &[(R, SYNACK), (O, ACK)],
        FinWait => &[(R, SYNACK), (O, ACK), (O, FIN)],
        CloseWait => &[(R, SYNACK), (O, ACK), (O, FIN), (R, ACK)],
        LastAck => &[(R, SYNACK), (O, ACK), (O, FIN), (R, ACK), (R, FIN)],
        TimeWait => &[
            (R, SYNACK),
            (O, ACK),
            (O, FIN),
            (R, ACK),
            (R, FIN),
            (O, ACK),
        ],
        Close => &[(R, SYNACK), (O, ACK), (R, RST)],
        TcpState::None => unreachable!("never stored"),
    };
    for &(dir, f) in path {
        assert_eq!(t.update(id, dir, f, 60, 0), UpdateOutcome::Tracked);
    }
    assert_eq!(t.state(id), Some(State::Tcp(state)));
    id
}

/// (state, direction, [(outcome, next state) for SYN, SYN/ACK, FIN, ACK, RST, none]).
type Row = (TcpState, Direction, [(UpdateOutcome, TcpState); 6]);

#[test]
fn every_tcp_transition() {
    use UpdateOutcome::{Ignored as Ig, Invalid as Iv, Reopened as Ro, Tracked as Tr};
    // (state, direction, event) -> (outcome, next state)
    #[rustfmt::skip]
    let matrix: &[Row] = &[
        // events:      SYN           SYN/ACK       FIN            ACK              RST         none
        (SynSent, O, [(Tr, SynSent), (Iv, SynSent), (Iv, SynSent), (Iv, SynSent), (Tr, Close), (Iv, SynSent)]),
        (SynSent, R, [(Tr, SynRecv), (Tr, SynRecv), (Iv, SynSent), (Ig, SynSent), (Tr, Close), (Iv, SynSent)]),
        (SynRecv, O, [(Ig, SynRecv), (Tr, SynRecv), (Tr, FinWait), (Tr, Established), (Tr, Close), (Iv, SynRecv)]),
        (SynRecv, R, [(Ig, SynRecv), (Tr, SynRecv), (Tr, FinWait), (Tr, SynRecv), (Tr, Close), (Iv, SynRecv)]),
        (Established, O, [(Ig, Established), (Iv, Established), (Tr, FinWait), (Tr, Established), (Tr, Close), (Iv, Established)]),
        (Established, R, [(Iv, Established), (Ig, Established), (Tr, FinWait), (Tr, Established), (Tr, Close), (Iv, Established)]),
        // FIN_WAIT after the original side's FIN: its own FIN/ACK change nothing.
        (FinWait, O, [(Ig, FinWait), (Iv, FinWait), (Tr, FinWait), (Tr, FinWait), (Tr, Close), (Iv, FinWait)]),
        (FinWait, R, [(Iv, FinWait), (Ig, FinWait), (Tr, LastAck), (Tr, CloseWait), (Tr, Close), (Iv, FinWait)]),
        (CloseWait, O, [(Ig, CloseWait), (Iv, CloseWait), (Tr, CloseWait), (Tr, CloseWait), (Tr, Close), (Iv, CloseWait)]),
        (CloseWait, R, [(Iv, CloseWait), (Ig, CloseWait), (Tr, LastAck), (Tr, CloseWait), (Tr, Close), (Iv, CloseWait)]),
        (LastAck, O, [(Ig, LastAck), (Iv, LastAck), (Tr, LastAck), (Tr, TimeWait), (Tr, Close), (Iv, LastAck)]),
        (LastAck, R, [(Iv, LastAck), (Ig, LastAck), (Tr, LastAck), (Tr, TimeWait), (Tr, Close), (Iv, LastAck)]),
        (TimeWait, O, [(Ro, SynSent), (Iv, TimeWait), (Tr, TimeWait), (Tr, TimeWait), (Tr, Close), (Iv, TimeWait)]),
        (TimeWait, R, [(Ro, SynSent), (Ig, TimeWait), (Tr, TimeWait), (Tr, TimeWait), (Tr, Close), (Iv, TimeWait)]),
        (Close, O, [(Ro, SynSent), (Iv, Close), (Tr, Close), (Tr, Close), (Tr, Close), (Iv, Close)]),
        (Close, R, [(Iv, Close), (Ig, Close), (Tr, Close), (Tr, Close), (Tr, Close), (Iv, Close)]),
    ];
    let events = [Ev::Syn, Ev::SynAck, Ev::Fin, Ev::Ack, Ev::Rst, Ev::None];
    let mut port = 1000;
    for &(state, dir, expected) in matrix {
        for (ev, (outcome, next)) in events.iter().zip(expected) {
            port += 1;
            let mut t = table(4);
            let id = tcp_in(&mut t, state, port);
            let before = t.get(id, 0).unwrap();
            let invalid_before = t.counters().invalid;
            let got = t.update(id, dir, flags(*ev), 100, 5);
            assert_eq!(got, outcome, "{state:?} {dir:?} {ev:?}");
            let after = t.get(id, 5).unwrap();
            assert_eq!(after.state, State::Tcp(next), "{state:?} {dir:?} {ev:?}");
            let d = dir.index();
            match outcome {
                Tr => {
                    assert_eq!(after.idle_ms, 0, "timer refreshed");
                    assert_eq!(after.packets[d], before.packets[d] + 1);
                }
                Ig => {
                    assert_eq!(after.idle_ms, 5, "timer not refreshed");
                    assert_eq!(after.packets[d], before.packets[d] + 1);
                }
                Iv => {
                    assert_eq!(after.idle_ms, 5);
                    assert_eq!(after.packets, before.packets);
                    assert_eq!(t.counters().invalid, invalid_before + 1);
                }
                Ro => {
                    assert_eq!((after.age_ms, after.idle_ms), (0, 0));
                    assert_eq!(after.packets[d], 1);
                    assert_eq!(after.packets[1 - d], 0);
                    assert_eq!(after.original, before.original, "same tuples");
                    assert_eq!(after.reply, before.reply);
                }
                UpdateOutcome::Unknown => unreachable!(),
            }
        }
    }
}

#[test]
fn normal_open_and_close() {
    let mut t = table(4);
    let k = pod_to_web(40000);
    let id = t.create(&k, &Nat::NONE, SYN, 74, 0).unwrap();
    let steps = [
        (R, SYNACK, SynRecv),
        (O, ACK, Established),
        (R, ACK, Established),
        (O, FIN, FinWait),
        (R, ACK, CloseWait),
        (R, ACK, CloseWait),
        (R, FIN, LastAck),
        (O, ACK, TimeWait),
    ];
    for (i, (dir, f, state)) in steps.into_iter().enumerate() {
        assert_eq!(t.update(id, dir, f, 66, i as u32), UpdateOutcome::Tracked);
        assert_eq!(t.state(id), Some(State::Tcp(state)), "step {i}");
    }
}

#[test]
fn fin_piggybacked_on_the_ack_and_simultaneous_close() {
    // The responder acknowledges the FIN with its own FIN: straight to LAST_ACK.
    let mut t = table(4);
    let id = tcp_in(&mut t, Established, 1);
    t.update(id, O, FIN, 66, 1);
    assert_eq!(t.update(id, R, FIN, 66, 2), UpdateOutcome::Tracked);
    assert_eq!(t.state(id), Some(State::Tcp(LastAck)));
    t.update(id, O, ACK, 66, 3);
    assert_eq!(t.state(id), Some(State::Tcp(TimeWait)));

    // Both FINs cross, then both ACKs.
    let id = tcp_in(&mut t, Established, 2);
    t.update(id, O, FIN, 66, 1);
    t.update(id, R, FIN, 66, 1);
    assert_eq!(t.state(id), Some(State::Tcp(LastAck)));
    t.update(id, R, ACK, 66, 2);
    assert_eq!(t.state(id), Some(State::Tcp(TimeWait)));
    t.update(id, O, ACK, 66, 2);
    assert_eq!(t.state(id), Some(State::Tcp(TimeWait)));

    // The responder closes first.
    let id = tcp_in(&mut t, Established, 3);
    t.update(id, R, FIN, 66, 1);
    assert_eq!(t.state(id), Some(State::Tcp(FinWait)));
    t.update(id, R, ACK, 66, 1);
    assert_eq!(
        t.state(id),
        Some(State::Tcp(FinWait)),
        "the FIN sender's own ACK"
    );
    t.update(id, O, ACK, 66, 1);
    assert_eq!(t.state(id), Some(State::Tcp(CloseWait)));
    t.update(id, O, FIN, 66, 1);
    assert_eq!(t.state(id), Some(State::Tcp(LastAck)));
    t.update(id, R, ACK, 66, 1);
    assert_eq!(t.state(id), Some(State::Tcp(TimeWait)));
}

#[test]
fn simultaneous_open() {
    let mut t = table(4);
    let id = t.create(&pod_to_web(1), &Nat::NONE, SYN, 60, 0).unwrap();
    assert_eq!(t.update(id, R, SYN, 60, 1), UpdateOutcome::Tracked);
    assert_eq!(t.state(id), Some(State::Tcp(SynRecv)));
    assert_eq!(t.update(id, O, SYNACK, 60, 2), UpdateOutcome::Tracked);
    assert_eq!(t.update(id, R, SYNACK, 60, 2), UpdateOutcome::Tracked);
    assert_eq!(t.update(id, O, ACK, 60, 3), UpdateOutcome::Tracked);
    assert_eq!(t.state(id), Some(State::Tcp(Established)));
}

#[test]
fn rst_closes_from_every_state_in_both_directions() {
    for state in [
        SynSent,
        SynRecv,
        Established,
        FinWait,
        CloseWait,
        LastAck,
        TimeWait,
        Close,
    ] {
        for dir in [O, R] {
            let mut t = table(2);
            let id = tcp_in(&mut t, state, 9);
            assert_eq!(t.update(id, dir, RST, 54, 1), UpdateOutcome::Tracked);
            assert_eq!(t.state(id), Some(State::Tcp(Close)), "{state:?} {dir:?}");
            // CLOSE lasts 10 s.
            assert!(t.lookup(&pod_to_web(9), 1 + 10 * S).is_some());
            assert!(t.lookup(&pod_to_web(9), 2 + 10 * S).is_none());
        }
    }
}

#[test]
fn first_packet_decides_admission() {
    let mut t = table(8);
    let k = pod_to_web(1);
    for f in [SYNACK, FIN, RST, NONE] {
        assert_eq!(
            t.create(&k, &Nat::NONE, f, 60, 0),
            Err(CreateError::InvalidFirstPacket),
            "{f:?}"
        );
    }
    let id = t.create(&k, &Nat::NONE, ACK, 60, 0).unwrap();
    assert_eq!(t.state(id), Some(State::Tcp(Established)), "loose pickup");
    let mut strict = ConnTable::new(ConntrackConfig {
        capacity: 8,
        tcp_loose: false,
        ..ConntrackConfig::default()
    });
    assert_eq!(
        strict.create(&k, &Nat::NONE, ACK, 60, 0),
        Err(CreateError::InvalidFirstPacket)
    );
    // Flags mean nothing to other protocols.
    let u = key(UDP, 1, 2, 3, 4);
    assert!(t.create(&u, &Nat::NONE, RST, 60, 0).is_ok());
    assert_eq!(t.counters().created, 2);
}

// ---- timeouts ----

/// Live at `last + timeout`, gone (and counted as expired) at `last + timeout + 1`.
fn expires_after(t: &mut ConnTable, k: &FlowKey, last: u32, timeout: u32, what: &str) {
    assert!(
        t.lookup(k, last.wrapping_add(timeout)).is_some(),
        "{what}: alive at timeout"
    );
    let expired = t.counters().expired;
    assert!(
        t.lookup(k, last.wrapping_add(timeout + 1)).is_none(),
        "{what}: expired"
    );
    assert_eq!(
        t.counters().expired,
        expired + 1,
        "{what}: reclaimed by the lookup"
    );
    assert!(t.is_empty());
    t.check_consistency().unwrap();
}

#[test]
fn tcp_timeouts_per_state() {
    let timeouts = Timeouts::default();
    for (state, timeout) in [
        (SynSent, 120 * S),
        (SynRecv, 60 * S),
        (Established, 5 * 24 * 3600 * S),
        (FinWait, 120 * S),
        (CloseWait, 60 * S),
        (LastAck, 30 * S),
        (TimeWait, 120 * S),
        (Close, 10 * S),
    ] {
        let mut t = table(4);
        let id = tcp_in(&mut t, state, 7);
        assert_eq!(t.get(id, 0).unwrap().expires_in_ms, timeout);
        expires_after(&mut t, &pod_to_web(7), 0, timeout, state.name());
    }
    assert_eq!(timeouts.tcp_established_ms, 432_000_000);
    // Kubernetes' settings: ESTABLISHED 24 h, CLOSE_WAIT 1 h.
    let mut t = ConnTable::new(ConntrackConfig {
        capacity: 4,
        timeouts: Timeouts::kubernetes(),
        ..ConntrackConfig::default()
    });
    tcp_in(&mut t, Established, 7);
    expires_after(&mut t, &pod_to_web(7), 0, 86_400 * S, "k8s established");
    tcp_in(&mut t, CloseWait, 7);
    expires_after(&mut t, &pod_to_web(7), 0, 3600 * S, "k8s close_wait");
}

#[test]
fn udp_icmp_and_generic_timeouts() {
    let mut t = table(4);
    let u = key(UDP, ip(10, 0, 0, 1), 5000, ip(10, 0, 0, 2), 53);
    t.create(&u, &Nat::NONE, NONE, 60, 100).unwrap();
    expires_after(&mut t, &u, 100, 30 * S, "udp unreplied");

    let id = t.create(&u, &Nat::NONE, NONE, 60, 100).unwrap();
    t.update(id, R, NONE, 60, 200);
    expires_after(&mut t, &u, 200, 120 * S, "udp replied");

    let i = key(ICMP, ip(10, 0, 0, 1), 7, ip(10, 0, 0, 2), 0);
    let id = t.create(&i, &Nat::NONE, NONE, 60, 0).unwrap();
    t.update(id, R, NONE, 60, 10);
    expires_after(&mut t, &i, 10, 30 * S, "icmp");

    let g = key(GRE, ip(10, 0, 0, 1), 0, ip(10, 0, 0, 2), 0);
    t.create(&g, &Nat::NONE, NONE, 60, 0).unwrap();
    expires_after(&mut t, &g, 0, 600 * S, "generic");
}

#[test]
fn packets_refresh_the_timer_and_custom_timeouts_apply() {
    let mut t = table(4);
    let u = key(UDP, 1, 2, 3, 4);
    let id = t.create(&u, &Nat::NONE, NONE, 60, 0).unwrap();
    for now in (10 * S..=300 * S).step_by(10 * S as usize) {
        assert_eq!(t.lookup(&u, now), Some((id, O)));
        t.update(id, O, NONE, 60, now);
    }
    t.set_timeouts(Timeouts {
        udp_unreplied_ms: 5 * S,
        ..Timeouts::default()
    });
    assert_eq!(t.timeouts().udp_unreplied_ms, 5 * S);
    expires_after(&mut t, &u, 300 * S, 5 * S, "custom");
    // Absurd timeouts are capped, not wrapped.
    t.set_timeouts(Timeouts {
        udp_unreplied_ms: u32::MAX,
        ..Timeouts::default()
    });
    t.create(&u, &Nat::NONE, NONE, 60, 0).unwrap();
    assert!(t.lookup(&u, 20 * 24 * 3600 * S).is_some());
}

#[test]
fn time_going_backwards_or_wrapping_never_expires() {
    let mut t = table(4);
    let u = key(UDP, 1, 2, 3, 4);
    let start = u32::MAX - 10;
    let id = t.create(&u, &Nat::NONE, NONE, 60, start).unwrap();
    // Backwards: age 0.
    assert!(t.lookup(&u, start - 1_000_000).is_some());
    assert_eq!(t.get(id, start - 5).unwrap().idle_ms, 0);
    // Across the wrap: 30 s after `start` is a small number.
    assert!(t.lookup(&u, start.wrapping_add(30 * S)).is_some());
    assert!(t.lookup(&u, start.wrapping_add(30 * S + 1)).is_none());
    assert_eq!(t.expire(0, 100), 0);
}

#[test]
fn expire_sweeps_within_its_budget() {
    let mut t = table(100);
    for port in 0..100u16 {
        t.create(&key(UDP, 1, port, 2, 53), &Nat::NONE, NONE, 60, 0)
            .unwrap();
    }
    // Keep ten of them alive.
    for port in 0..10u16 {
        let (id, dir) = t.lookup(&key(UDP, 1, port, 2, 53), 20 * S).unwrap();
        t.update(id, dir, NONE, 60, 20 * S);
    }
    let now = 31 * S;
    assert_eq!(t.expire(now, 0), 0);
    let mut removed = Vec::new();
    for _ in 0..4 {
        removed.push(t.expire(now, 30));
        t.check_consistency().unwrap();
    }
    assert!(removed.iter().all(|&n| n <= 30), "{removed:?}");
    assert_eq!(removed.iter().sum::<usize>(), 90);
    assert_eq!(t.len(), 10);
    assert_eq!(t.counters().expired, 90);
    // A budget beyond the capacity visits each slot once.
    assert_eq!(t.expire(51 * S, 1_000_000), 10);
    assert!(t.is_empty());
}

// ---- full table ----

fn established(t: &mut ConnTable, port: u16, now: u32) -> ConnId {
    let id = t
        .create(&pod_to_web(port), &Nat::NONE, SYN, 60, now)
        .unwrap();
    t.update(id, R, SYNACK, 60, now);
    t.update(id, O, ACK, 60, now);
    id
}

#[test]
fn full_table_evicts_embryonic_before_established_then_refuses() {
    let mut t = table(4);
    let e1 = established(&mut t, 1, 0);
    let e2 = established(&mut t, 2, 0);
    let young = t.create(&pod_to_web(3), &Nat::NONE, SYN, 60, 50).unwrap();
    let old = t.create(&pod_to_web(4), &Nat::NONE, SYN, 60, 10).unwrap();
    assert_eq!(t.len(), 4);
    let new = t.create(&pod_to_web(5), &Nat::NONE, SYN, 60, 100).unwrap();
    let c = t.counters();
    assert_eq!((c.evicted_embryonic, c.evicted_closing, c.live), (1, 0, 4));
    assert_eq!(t.state(old), None, "the oldest embryonic went");
    assert!(t.lookup(&pod_to_web(4), 100).is_none());
    for id in [e1, e2, young, new] {
        assert!(t.state(id).is_some());
    }
    // Established both: nothing evictable.
    for (id, port) in [(young, 3), (new, 5)] {
        t.update(id, R, SYNACK, 60, 100);
        t.update(id, O, ACK, 60, 100);
        assert_eq!(t.lookup(&pod_to_web(port), 100), Some((id, O)));
    }
    assert_eq!(
        t.create(&pod_to_web(6), &Nat::NONE, SYN, 60, 100),
        Err(CreateError::Full)
    );
    assert_eq!(
        t.create(&key(UDP, 1, 2, 3, 4), &Nat::NONE, NONE, 60, 100),
        Err(CreateError::Full)
    );
    let c = t.counters();
    assert_eq!((c.refused_full, c.live, c.created), (2, 4, 5));
    t.check_consistency().unwrap();
}

#[test]
fn full_table_evicts_closing_and_unreplied_udp_but_not_replied() {
    let mut t = table(4);
    established(&mut t, 1, 0);
    let closing = established(&mut t, 2, 0);
    t.update(closing, O, FIN, 60, 5);
    t.update(closing, R, FIN, 60, 5);
    t.update(closing, O, ACK, 60, 5);
    assert_eq!(t.state(closing), Some(State::Tcp(TimeWait)));
    let replied = t
        .create(&key(UDP, 1, 1, 2, 53), &Nat::NONE, NONE, 60, 0)
        .unwrap();
    t.update(replied, R, NONE, 60, 0);
    let unreplied = t
        .create(&key(UDP, 1, 2, 2, 53), &Nat::NONE, NONE, 60, 1)
        .unwrap();
    // Oldest evictable: the TIME_WAIT one (idle since 5) vs the unreplied UDP (since 1).
    t.create(&key(UDP, 1, 3, 2, 53), &Nat::NONE, NONE, 60, 10)
        .unwrap();
    assert_eq!(t.state(unreplied), None);
    assert_eq!(t.counters().evicted_embryonic, 1);
    t.create(&key(UDP, 1, 4, 2, 53), &Nat::NONE, NONE, 60, 11)
        .unwrap();
    // Now the closing one (idle 6) is older than the new unreplied one (idle 1).
    assert_eq!(t.state(closing), None);
    assert_eq!(t.counters().evicted_closing, 1);
    assert!(t.state(replied).is_some());
    t.check_consistency().unwrap();
}

#[test]
fn full_table_reclaims_an_expired_connection_first() {
    let mut t = ConnTable::new(ConntrackConfig {
        capacity: 4,
        timeouts: Timeouts {
            udp_replied_ms: S,
            ..Timeouts::default()
        },
        ..ConntrackConfig::default()
    });
    let stale = t
        .create(&key(UDP, 1, 1, 2, 53), &Nat::NONE, NONE, 60, 0)
        .unwrap();
    t.update(stale, R, NONE, 60, 0);
    let embryos: Vec<_> = (2..5)
        .map(|p| t.create(&pod_to_web(p), &Nat::NONE, SYN, 60, 0).unwrap())
        .collect();
    t.create(&pod_to_web(9), &Nat::NONE, SYN, 60, 2 * S)
        .unwrap();
    let c = t.counters();
    assert_eq!((c.expired, c.evicted_embryonic), (1, 0));
    assert_eq!(t.state(stale), None);
    assert!(embryos.iter().all(|&id| t.state(id).is_some()));
}

#[test]
fn tuples_in_use_are_refused_and_expired_holders_reclaimed() {
    let mut t = table(8);
    let k = pod_to_web(1);
    let nat = snat(ip(192, 0, 2, 1), 61000);
    t.create(&k, &nat, SYN, 60, 0).unwrap();
    assert_eq!(
        t.create(&k, &Nat::NONE, SYN, 60, 0),
        Err(CreateError::TupleInUse)
    );
    // Another pod mapped onto the same translated port and destination.
    let other = key(TCP, ip(10, 244, 0, 9), 1, ip(93, 184, 216, 34), 443);
    assert_eq!(
        t.create(&other, &nat, SYN, 60, 0),
        Err(CreateError::TupleInUse)
    );
    // Once the first expired (SYN_SENT: 120 s), its tuples are free.
    let id = t.create(&other, &nat, SYN, 60, 121 * S).unwrap();
    assert_eq!(t.counters().expired, 1);
    assert_eq!(t.len(), 1);
    assert_eq!(t.lookup(&nat.reply_tuple(&other), 121 * S), Some((id, R)));
    t.check_consistency().unwrap();
}

#[test]
fn a_connection_to_itself_is_seen_in_the_original_direction() {
    let mut t = table(4);
    let k = key(UDP, ip(10, 0, 0, 1), 7, ip(10, 0, 0, 1), 7);
    assert_eq!(invert(&k), k);
    let id = t.create(&k, &Nat::NONE, NONE, 60, 0).unwrap();
    assert_eq!(t.lookup(&k, 1), Some((id, O)));
    t.check_consistency().unwrap();
    assert!(t.remove(id));
    assert!(t.lookup(&k, 1).is_none());
    t.check_consistency().unwrap();
}

// ---- ids ----

#[test]
fn stale_and_foreign_ids_are_harmless() {
    let mut big = table(100);
    let mut far = None;
    for port in 0..100 {
        far = Some(
            big.create(&key(UDP, 1, port, 2, 3), &Nat::NONE, NONE, 60, 0)
                .unwrap(),
        );
    }
    let far = far.unwrap();
    assert_eq!(far.index(), 99);
    let mut t = table(4);
    assert_eq!(t.update(far, O, ACK, 60, 0), UpdateOutcome::Unknown);
    assert_eq!(t.get(far, 0), None);
    assert!(!t.remove(far));
    assert!(!t.set_user(far, 1));
    assert_eq!(t.translated(far, R), None);

    let a = t
        .create(&key(UDP, 1, 1, 2, 3), &Nat::NONE, NONE, 60, 0)
        .unwrap();
    assert!(t.remove(a));
    assert!(!t.remove(a));
    let b = t
        .create(&key(UDP, 1, 2, 2, 3), &Nat::NONE, NONE, 60, 0)
        .unwrap();
    assert_eq!(a.index(), b.index(), "the freed entry is reused first");
    assert_ne!(a, b);
    assert_eq!(t.update(a, O, NONE, 60, 0), UpdateOutcome::Unknown);
    assert_eq!(t.state(a), None);
    assert_eq!(t.update(b, O, NONE, 60, 0), UpdateOutcome::Tracked);
    assert_eq!(t.counters().removed, 1);
    // Capacity 0 is clamped to 1.
    let mut tiny = table(0);
    assert_eq!(tiny.capacity(), 1);
    assert!(tiny
        .create(&key(UDP, 1, 1, 2, 3), &Nat::NONE, NONE, 60, 0)
        .is_ok());
    assert_eq!(tiny.expire(0, usize::MAX), 0);
}

#[test]
fn flush_empties_and_invalidates_ids() {
    let mut t = table(64);
    let ids: Vec<_> = (0..50)
        .map(|p| {
            t.create(
                &pod_to_web(p),
                &snat(ip(192, 0, 2, 1), 2000 + p),
                SYN,
                60,
                0,
            )
            .unwrap()
        })
        .collect();
    assert_eq!(t.flush(), 50);
    assert!(t.is_empty());
    assert_eq!(t.iter(0).count(), 0);
    t.check_consistency().unwrap();
    for (p, id) in (0..50).zip(&ids) {
        assert_eq!(t.lookup(&pod_to_web(p), 1), None);
        assert_eq!(t.update(*id, O, ACK, 60, 1), UpdateOutcome::Unknown);
    }
    let c = t.counters();
    assert_eq!((c.removed, c.live, c.created), (50, 0, 50));
    // Everything can be created again, the whole capacity.
    for p in 0..64 {
        t.create(&pod_to_web(p), &Nat::NONE, SYN, 60, 2).unwrap();
    }
    assert_eq!(t.len(), 64);
    t.check_consistency().unwrap();
}

// ---- port allocation ----

/// The masquerade flow: allocate a port for `original`, create the connection with it.
fn masquerade(
    t: &mut ConnTable,
    original: &FlowKey,
    node: u128,
    range: std::ops::RangeInclusive<u16>,
    now: u32,
) -> Option<(ConnId, u16)> {
    let template = snat(node, 0).reply_tuple(original);
    let port = t.allocate_port(&template, range, t.key_hash(original))?;
    let id = t.create(original, &snat(node, port), SYN, 60, now).ok()?;
    Some((id, port))
}

#[test]
fn a_thousand_connections_to_one_destination_get_distinct_ports() {
    let mut t = table(4096);
    let node = ip(192, 0, 2, 1);
    let mut ports = std::collections::HashSet::new();
    for i in 0..1000u16 {
        // Many pods, some reusing the same source port.
        let original = key(
            TCP,
            ip(10, 244, (i % 7) as u8, 2),
            40000 + i % 13,
            ip(1, 1, 1, 1),
            443,
        );
        if t.lookup(&original, 0).is_some() {
            continue;
        }
        let (id, port) = masquerade(&mut t, &original, node, 1024..=65535, 0).unwrap();
        assert!((1024..=65535).contains(&port));
        assert!(ports.insert(port), "port {port} given twice");
        assert_eq!(
            t.lookup(&key(TCP, ip(1, 1, 1, 1), 443, node, port), 0),
            Some((id, R))
        );
    }
    assert_eq!(ports.len(), 7 * 13);
    // Distinct original tuples: 1000 of them.
    let mut t = table(4096);
    let mut ports = std::collections::HashSet::new();
    for i in 0..1000u16 {
        let original = key(TCP, ip(10, 244, 0, 2), 30000 + i, ip(1, 1, 1, 1), 443);
        let (_, port) = masquerade(&mut t, &original, node, 1024..=65535, 0).unwrap();
        assert!(ports.insert(port), "port {port} given twice");
    }
    assert_eq!(t.len(), 1000);
    t.check_consistency().unwrap();
}

#[test]
fn a_small_range_runs_out_cleanly_and_freed_ports_come_back() {
    let mut t = table(64);
    let node = ip(192, 0, 2, 1);
    let dst = ip(1, 1, 1, 1);
    let mut given = Vec::new();
    for i in 0..10u16 {
        let original = key(TCP, ip(10, 244, 0, 2), 30000 + i, dst, 443);
        given.push(masquerade(&mut t, &original, node, 5000..=5009, 0).unwrap());
    }
    let mut ports: Vec<u16> = given.iter().map(|g| g.1).collect();
    ports.sort_unstable();
    assert_eq!(ports, (5000..=5009).collect::<Vec<_>>());
    let eleventh = key(TCP, ip(10, 244, 0, 2), 31000, dst, 443);
    assert_eq!(masquerade(&mut t, &eleventh, node, 5000..=5009, 0), None);
    // Another destination, or another destination port, has the whole range again.
    let elsewhere = key(TCP, ip(10, 244, 0, 2), 31000, ip(1, 1, 1, 2), 443);
    assert!(masquerade(&mut t, &elsewhere, node, 5000..=5009, 0).is_some());
    let other_port = key(TCP, ip(10, 244, 0, 2), 31000, dst, 80);
    assert!(masquerade(&mut t, &other_port, node, 5000..=5009, 0).is_some());
    // Removing a connection frees its port.
    let (id, port) = given[3];
    assert!(t.remove(id));
    assert_eq!(
        masquerade(&mut t, &eleventh, node, 5000..=5009, 0).map(|g| g.1),
        Some(port)
    );
    // An expired connection holds its port until reclaimed by the sweep.
    let later = 121 * S;
    let next = key(TCP, ip(10, 244, 0, 2), 31001, dst, 443);
    assert_eq!(masquerade(&mut t, &next, node, 5000..=5009, later), None);
    assert!(t.expire(later, 64) >= 10);
    assert!(masquerade(&mut t, &next, node, 5000..=5009, later).is_some());
    // Degenerate ranges.
    let template = snat(node, 0).reply_tuple(&next);
    #[allow(clippy::reversed_empty_ranges)]
    let empty = 10..=9;
    assert_eq!(t.allocate_port(&template, empty, 0), None);
    assert_eq!(t.allocate_port(&template, 7..=7, 123), Some(7));
    t.check_consistency().unwrap();
}

#[test]
fn icmp_identifiers_are_allocated_like_ports() {
    let mut t = table(64);
    let node = ip(192, 0, 2, 1);
    let mut ids = std::collections::HashSet::new();
    for pod in 0..20u8 {
        // Every pod pings 8.8.8.8 with identifier 1.
        let original = key(ICMP, ip(10, 244, 0, pod), 1, ip(8, 8, 8, 8), 0);
        let template = snat(node, 0).reply_tuple(&original);
        let id = t
            .allocate_port(&template, 1..=65535, t.key_hash(&original))
            .unwrap();
        assert!(ids.insert(id));
        let conn = t.create(&original, &snat(node, id), NONE, 84, 0).unwrap();
        // The echo reply as the pipeline keys it.
        assert_eq!(
            t.lookup(&key(ICMP, ip(8, 8, 8, 8), id, node, 0), 0),
            Some((conn, R))
        );
        assert_eq!(
            t.translated(conn, R),
            Some(key(ICMP, ip(8, 8, 8, 8), 1, ip(10, 244, 0, pod), 0))
        );
    }
}

#[test]
fn large_ranges_fill_up_with_distinct_ports_and_bounded_probes() {
    // 1000 ports: more than MAX_PORT_PROBES, so probing is by runs.
    const RANGE: u32 = 1000;
    const { assert!(RANGE > MAX_PORT_PROBES) };
    let mut t = table(2048);
    let node = ip(192, 0, 2, 1);
    let mut ports = std::collections::HashSet::new();
    let mut first_failure = None;
    for i in 0..1000u16 {
        let original = key(UDP, ip(10, 244, 1, 2), 10000 + i, ip(1, 1, 1, 1), 53);
        match masquerade(&mut t, &original, node, 20000..=20999, 0) {
            Some((_, port)) => assert!(ports.insert(port)),
            None => {
                first_failure.get_or_insert(i);
            }
        }
    }
    // Most of the range is handed out before the bounded search starts failing.
    let first_failure = first_failure.unwrap_or(1000);
    assert!(
        first_failure >= 850,
        "first failure after {first_failure} ports"
    );
    assert!(ports.len() >= 950, "{} ports of 1000", ports.len());
    t.check_consistency().unwrap();
}

// ---- property test ----

#[derive(Clone, Debug)]
enum Op {
    /// Create from tuple pieces, NAT choice, first-packet flags.
    Create {
        src: u8,
        sport: u8,
        dst: u8,
        dport: u8,
        protocol: u8,
        nat: u8,
        flags: u8,
    },
    /// Allocate a port (small range) then create.
    Masquerade {
        src: u8,
        sport: u8,
        dst: u8,
        range: u8,
    },
    /// Look up a live connection's tuple (or a random one).
    Lookup { pick: usize, reply: bool },
    /// Update a known id (possibly stale).
    Update {
        pick: usize,
        reply: bool,
        flags: u8,
        len: u16,
    },
    /// Remove a known id (possibly stale).
    Remove { pick: usize },
    /// Incremental expiry.
    Expire { budget: u8 },
    /// Move the clock (possibly backwards).
    Advance { ms: i32 },
    /// Empty the table.
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..4u8, 0..4u8, 0..3u8, 0..3u8, 0..4u8, 0..4u8, any::<u8>()).prop_map(
            |(src, sport, dst, dport, protocol, nat, flags)| Op::Create {
                src, sport, dst, dport, protocol, nat, flags
            }
        ),
        3 => (0..4u8, 0..4u8, 0..3u8, 0..3u8).prop_map(|(src, sport, dst, range)| {
            Op::Masquerade { src, sport, dst, range }
        }),
        4 => (any::<usize>(), any::<bool>()).prop_map(|(pick, reply)| Op::Lookup { pick, reply }),
        5 => (any::<usize>(), any::<bool>(), any::<u8>(), any::<u16>())
            .prop_map(|(pick, reply, flags, len)| Op::Update { pick, reply, flags, len }),
        2 => any::<usize>().prop_map(|pick| Op::Remove { pick }),
        2 => any::<u8>().prop_map(|budget| Op::Expire { budget }),
        3 => (-5_000i32..200_000).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Flush),
    ]
}

const PROTOCOLS: [u8; 4] = [TCP, UDP, ICMP, GRE];

fn tuple(src: u8, sport: u8, dst: u8, dport: u8, protocol: u8) -> FlowKey {
    let protocol = PROTOCOLS[protocol as usize % 4];
    let (src_port, dst_port) = match protocol {
        TCP | UDP => (1000 + u16::from(sport), 80 + u16::from(dport)),
        ICMP => (u16::from(sport), 0),
        _ => (0, 0),
    };
    key(
        protocol,
        ip(10, 0, 0, src),
        src_port,
        ip(10, 1, 0, dst),
        dst_port,
    )
}

fn nat_choice(n: u8, sport: u8) -> Nat {
    match n % 4 {
        0 => Nat::NONE,
        1 => snat(ip(192, 0, 2, 1), 5000 + u16::from(sport % 2)),
        2 => Nat {
            src: None,
            dst: Some(Translation {
                addr: ip(10, 1, 0, 0),
                port: 8080,
            }),
        },
        _ => Nat {
            src: Some(Translation {
                addr: ip(10, 1, 0, 1),
                port: 7000,
            }),
            dst: Some(Translation {
                addr: ip(10, 0, 0, 1),
                port: 1000,
            }),
        },
    }
}

fn check(t: &mut ConnTable, now: u32) -> Result<(), TestCaseError> {
    t.check_consistency().map_err(TestCaseError::fail)?;
    let c = t.counters();
    prop_assert_eq!(c.live as usize, t.len());
    prop_assert!(t.len() <= t.capacity());
    prop_assert_eq!(
        c.live,
        c.created - c.expired - c.evicted_embryonic - c.evicted_closing - c.removed
    );
    prop_assert!(c.hits <= c.lookups);
    // Every live, unexpired connection is found by both tuples, in the right direction.
    let live: Vec<_> = t.iter(now).collect();
    for conn in live {
        prop_assert_eq!(t.lookup(&conn.original, now), Some((conn.id, O)));
        let want = if conn.reply == conn.original { O } else { R };
        prop_assert_eq!(t.lookup(&conn.reply, now), Some((conn.id, want)));
        prop_assert_eq!(conn.nat().reply_tuple(&conn.original), conn.reply);
        prop_assert_eq!(t.translated(conn.id, O), Some(invert(&conn.reply)));
    }
    Ok(())
}

fn run_ops(capacity: usize, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut t = ConnTable::new(ConntrackConfig {
        capacity,
        hash_seed: 7,
        ..ConntrackConfig::default()
    });
    let mut now: u32 = u32::MAX - 300_000;
    let mut ids: Vec<ConnId> = Vec::new();
    for op in ops {
        match *op {
            Op::Create {
                src,
                sport,
                dst,
                dport,
                protocol,
                nat,
                flags,
            } => {
                let k = tuple(src, sport, dst, dport, protocol);
                let nat = nat_choice(nat, sport);
                let before = t.counters();
                match t.create(&k, &nat, TcpFlags(flags), 60, now) {
                    Ok(id) => {
                        prop_assert_eq!(t.lookup(&k, now), Some((id, O)));
                        let reply = nat.reply_tuple(&k);
                        if reply != k {
                            prop_assert_eq!(t.lookup(&reply, now), Some((id, R)));
                        }
                        ids.push(id);
                    }
                    Err(CreateError::Full) => {
                        prop_assert_eq!(t.counters().refused_full, before.refused_full + 1);
                    }
                    Err(CreateError::TupleInUse) => {
                        let reply = nat.reply_tuple(&k);
                        prop_assert!(
                            t.lookup(&k, now).is_some() || t.lookup(&reply, now).is_some()
                        );
                    }
                    Err(CreateError::InvalidFirstPacket) => {
                        prop_assert_eq!(k.protocol, TCP);
                    }
                }
            }
            Op::Masquerade {
                src,
                sport,
                dst,
                range,
            } => {
                let k = tuple(src, sport, dst, 0, 0);
                let node = ip(192, 0, 2, 1);
                let range = 6000..=6000 + u16::from(range);
                let template = snat(node, 0).reply_tuple(&k);
                if let Some(port) = t.allocate_port(&template, range.clone(), t.key_hash(&k)) {
                    prop_assert!(range.contains(&port));
                    let reply = snat(node, port).reply_tuple(&k);
                    // Not held by any live connection.
                    prop_assert!(t.iter(now).all(|c| c.original != reply && c.reply != reply));
                    if let Ok(id) = t.create(&k, &snat(node, port), TcpFlags::SYN, 60, now) {
                        prop_assert_eq!(t.lookup(&reply, now), Some((id, R)));
                        ids.push(id);
                    }
                }
            }
            Op::Lookup { pick, reply } => {
                if let Some(&id) = ids.get(pick % ids.len().max(1)) {
                    if let Some(conn) = t.get(id, now) {
                        let k = if reply { conn.reply } else { conn.original };
                        let found = t.lookup(&k, now);
                        prop_assert_eq!(found.map(|f| f.0), Some(id));
                    }
                }
            }
            Op::Update {
                pick,
                reply,
                flags,
                len,
            } => {
                if let Some(&id) = ids.get(pick % ids.len().max(1)) {
                    // Live and not expired (an expired one is reclaimed, not revived).
                    let alive = t.get(id, now).is_some();
                    let dir = if reply { R } else { O };
                    let outcome = t.update(id, dir, TcpFlags(flags), u32::from(len), now);
                    prop_assert_eq!(outcome == UpdateOutcome::Unknown, !alive);
                    prop_assert!(alive || t.state(id).is_none());
                }
            }
            Op::Remove { pick } => {
                if !ids.is_empty() {
                    let id = ids.swap_remove(pick % ids.len());
                    let conn = t.get(id, now);
                    let removed = t.remove(id);
                    if let Some(conn) = conn {
                        prop_assert!(removed);
                        prop_assert!(t.lookup(&conn.original, now).is_none_or(|f| f.0 != id));
                        prop_assert!(t.lookup(&conn.reply, now).is_none_or(|f| f.0 != id));
                    }
                    prop_assert!(t.get(id, now).is_none());
                }
            }
            Op::Expire { budget } => {
                let before = t.len();
                let removed = t.expire(now, usize::from(budget));
                prop_assert!(removed <= usize::from(budget));
                prop_assert_eq!(t.len(), before - removed);
            }
            Op::Advance { ms } => now = now.wrapping_add_signed(ms),
            Op::Flush => {
                let before = t.len();
                prop_assert_eq!(t.flush(), before);
                prop_assert!(t.is_empty());
            }
        }
        check(&mut t, now)?;
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(128)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random operations on a small, often full table keep the index and the entries
    /// consistent.
    #[test]
    fn random_operations_keep_the_index_consistent(
        capacity in 1usize..24,
        ops in prop::collection::vec(op(), 1..120),
    ) {
        run_ops(capacity, &ops)?;
    }

    /// Arbitrary tuples (any addresses, ports, protocols, VRFs) and translations never
    /// panic, and what is created is found both ways.
    #[test]
    fn arbitrary_tuples_round_trip(
        keys in prop::collection::vec(
            (any::<u128>(), any::<u128>(), any::<u16>(), any::<u8>(), any::<bool>(),
             any::<u16>(), any::<u16>(), any::<Option<(u128, u16)>>(), any::<u8>()),
            1..40),
        now in any::<u32>(),
    ) {
        let mut t = ConnTable::new(ConntrackConfig { capacity: 32, ..ConntrackConfig::default() });
        for (src, dst, vrf, protocol, ipv6, src_port, dst_port, translation, flags) in keys {
            let k = FlowKey { src, dst, vrf, protocol, ipv6, src_port, dst_port };
            let nat = Nat {
                src: translation.map(|(addr, port)| Translation { addr, port }),
                dst: None,
            };
            if let Ok(id) = t.create(&k, &nat, TcpFlags(flags), 1500, now) {
                prop_assert_eq!(t.lookup(&k, now), Some((id, O)));
                let reply = nat.reply_tuple(&k);
                let want = if reply == k { O } else { R };
                prop_assert_eq!(t.lookup(&reply, now), Some((id, want)));
            }
            let _ = t.allocate_port(&k, 0..=65535, src as u64);
        }
        t.check_consistency().map_err(TestCaseError::fail)?;
    }
}
