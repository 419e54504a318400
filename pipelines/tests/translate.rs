//! Address and port translation: the translated packet must be byte for byte what a sender
//! would have built with the new addresses and ports (etherparse computes every checksum of
//! the expected packet from scratch).

use etherparse::PacketBuilder;
use pipelines::translate::{translate, End, Layout, TranslateError};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const A: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const B: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

#[derive(Clone, Copy, Debug)]
enum Kind {
    Tcp,
    Udp,
    Echo,
}

/// A frame of `kind` between (src, sport) and (dst, dport); for an echo request the
/// identifier is `sport`.
fn frame(kind: Kind, src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(A, B);
    let mut out = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let ip = eth.ipv4(s.octets(), d.octets(), 64);
            match kind {
                Kind::Tcp => ip
                    .tcp(sport, dport, 7, 1000)
                    .ack(9)
                    .write(&mut out, payload),
                Kind::Udp => ip.udp(sport, dport).write(&mut out, payload),
                Kind::Echo => ip.icmpv4_echo_request(sport, 3).write(&mut out, payload),
            }
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let ip = eth.ipv6(s.octets(), d.octets(), 64);
            match kind {
                Kind::Tcp => ip
                    .tcp(sport, dport, 7, 1000)
                    .ack(9)
                    .write(&mut out, payload),
                Kind::Udp => ip.udp(sport, dport).write(&mut out, payload),
                Kind::Echo => ip.icmpv6_echo_request(sport, 3).write(&mut out, payload),
            }
        }
        _ => unreachable!("same family"),
    }
    .expect("build");
    out
}

fn layout(kind: Kind, frame: &[u8], ipv6: bool) -> Layout {
    let l3 = 14;
    let header = if ipv6 { 40 } else { 20 };
    Layout {
        l3,
        l4: l3 + header,
        ip_len: frame.len() - l3,
        ipv6,
        protocol: match (kind, ipv6) {
            (Kind::Tcp, _) => 6,
            (Kind::Udp, _) => 17,
            (Kind::Echo, false) => 1,
            (Kind::Echo, true) => 58,
        },
    }
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn v6(last: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x244, 1, 0, 0, 0, 0, last))
}

/// Translates one end of a packet and compares with the packet built directly.
fn check(
    kind: Kind,
    end: End,
    src: IpAddr,
    dst: IpAddr,
    new: IpAddr,
    new_port: u16,
    payload: &[u8],
) {
    let (sport, dport) = (40000, 80);
    let mut packet = frame(kind, src, dst, sport, dport, payload);
    let layout = layout(kind, &packet, src.is_ipv6());
    translate(&mut packet, &layout, end, new, new_port).expect("translated");
    let expected = match (kind, end) {
        // An echo's identifier is its "port" at both ends.
        (Kind::Echo, _) => frame(
            kind,
            if end == End::Source { new } else { src },
            if end == End::Destination { new } else { dst },
            new_port,
            dport,
            payload,
        ),
        (_, End::Source) => frame(kind, new, dst, new_port, dport, payload),
        (_, End::Destination) => frame(kind, src, new, sport, new_port, payload),
    };
    assert_eq!(packet, expected, "{kind:?} {end:?}");
}

#[test]
fn every_protocol_and_family_translates_like_a_fresh_packet() {
    let payload = b"hello, translated world";
    for kind in [Kind::Tcp, Kind::Udp, Kind::Echo] {
        for end in [End::Source, End::Destination] {
            check(
                kind,
                end,
                v4(10, 244, 1, 5),
                v4(1, 1, 1, 1),
                v4(192, 168, 1, 10),
                61000,
                payload,
            );
            check(kind, end, v6(5), v6(0x99), v6(0x77), 1024, payload);
            // Odd payload lengths exercise the checksum's padding.
            check(
                kind,
                end,
                v4(10, 244, 1, 5),
                v4(1, 1, 1, 1),
                v4(192, 168, 1, 10),
                1,
                b"odd",
            );
        }
    }
}

#[test]
fn udp_over_ipv4_without_checksum_stays_without() {
    let mut packet = frame(
        Kind::Udp,
        v4(10, 244, 1, 5),
        v4(1, 1, 1, 1),
        40000,
        53,
        b"query",
    );
    packet[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    let layout = layout(Kind::Udp, &packet, false);
    translate(
        &mut packet,
        &layout,
        End::Source,
        v4(192, 168, 1, 10),
        61000,
    )
    .expect("translated");
    let mut expected = frame(
        Kind::Udp,
        v4(192, 168, 1, 10),
        v4(1, 1, 1, 1),
        61000,
        53,
        b"query",
    );
    expected[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    assert_eq!(packet, expected);
}

#[test]
fn later_fragments_change_addresses_only() {
    let mut packet = frame(
        Kind::Udp,
        v4(10, 244, 1, 5),
        v4(1, 1, 1, 1),
        40000,
        53,
        b"12345678",
    );
    let original = packet.clone();
    let mut layout = layout(Kind::Udp, &packet, false);
    layout.l4 = 0;
    translate(
        &mut packet,
        &layout,
        End::Source,
        v4(192, 168, 1, 10),
        61000,
    )
    .expect("translated");
    assert_eq!(&packet[26..30], &[192, 168, 1, 10]);
    assert_eq!(
        packet[34..],
        original[34..],
        "payload (no L4 header) untouched"
    );
    let header = &packet[14..34];
    let sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    let folded = (sum & 0xffff) + (sum >> 16);
    assert_eq!(
        (folded & 0xffff) + (folded >> 16),
        0xffff,
        "IPv4 header checksum valid"
    );
}

#[test]
fn bad_layouts_and_families_are_refused_without_change() {
    let packet = frame(
        Kind::Tcp,
        v4(10, 244, 1, 5),
        v4(1, 1, 1, 1),
        40000,
        80,
        b"x",
    );
    let good = layout(Kind::Tcp, &packet, false);
    let mut copy = packet.clone();
    assert_eq!(
        translate(&mut copy, &good, End::Source, v6(1), 1),
        Err(TranslateError::Family)
    );
    for bad in [
        Layout {
            ip_len: packet.len(),
            ..good
        },
        Layout { l4: 20, ..good },
        Layout {
            l4: packet.len() - 2,
            ..good
        },
        Layout {
            l3: usize::MAX,
            ..good
        },
    ] {
        let mut copy = packet.clone();
        assert_eq!(
            translate(&mut copy, &bad, End::Source, v4(1, 2, 3, 4), 1),
            Err(TranslateError::Layout),
            "{bad:?}"
        );
        assert_eq!(copy, packet, "unchanged");
    }
}

proptest! {
    #[test]
    fn any_addresses_and_ports_translate_like_a_fresh_packet(
        src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), new in any::<[u8; 4]>(),
        port in 1u16.., payload in proptest::collection::vec(any::<u8>(), 0..64),
        kind in 0..3usize, source in any::<bool>(),
    ) {
        let kind = [Kind::Tcp, Kind::Udp, Kind::Echo][kind];
        let end = if source { End::Source } else { End::Destination };
        check(kind, end, IpAddr::from(src), IpAddr::from(dst), IpAddr::from(new), port, &payload);
    }

    #[test]
    fn arbitrary_frames_and_layouts_never_panic(
        mut frame in proptest::collection::vec(any::<u8>(), 0..128),
        l3 in 0usize..140, l4 in 0usize..160, ip_len in 0usize..160,
        ipv6 in any::<bool>(), protocol in prop_oneof![Just(1u8), Just(6), Just(17), Just(58), any::<u8>()],
        source in any::<bool>(), v4addr in any::<[u8; 4]>(), port in any::<u16>(),
    ) {
        let layout = Layout { l3, l4, ip_len, ipv6, protocol };
        let end = if source { End::Source } else { End::Destination };
        let addr = if ipv6 { v6(port) } else { IpAddr::from(v4addr) };
        let _ = translate(&mut frame, &layout, end, addr, port);
    }
}
