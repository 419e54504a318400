//! Partial L4 checksums (a sender with TX offload) are completed in software; complete ones
//! are left alone.

mod common;

use common::*;
use pipelines::{PortId, Verdict};

const PAYLOAD: &[u8] = b"offloaded payload, odd length.";

/// Folded one's complement sum of 16-bit big-endian words (test-side reference).
fn fold_words(bytes: &[u8]) -> u32 {
    let mut sum: u32 = 0;
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += word as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

/// Replaces the L4 checksum at `field` with the pseudo-header sum, as a NIC-offloading sender
/// leaves it; returns the original (complete) checksum.
fn make_partial(frame: &mut [u8], ipv6: bool, protocol: u8, field: usize) -> u16 {
    let (l4, src_dst, length) = if ipv6 {
        let length = u16::from_be_bytes([frame[18], frame[19]]) as u32;
        (14 + 40, frame[22..54].to_vec(), length)
    } else {
        let ihl = (frame[14] & 0x0f) as usize * 4;
        let total = u16::from_be_bytes([frame[16], frame[17]]) as u32;
        (14 + ihl, frame[26..34].to_vec(), total - ihl as u32)
    };
    let mut pseudo = src_dst;
    pseudo.extend_from_slice(&[0, protocol]);
    pseudo.extend_from_slice(&(length as u16).to_be_bytes());
    let partial = fold_words(&pseudo) as u16;
    let at = l4 + field;
    let original = u16::from_be_bytes([frame[at], frame[at + 1]]);
    frame[at..at + 2].copy_from_slice(&partial.to_be_bytes());
    original
}

fn checksum_at(frame: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([frame[at], frame[at + 1]])
}

#[test]
fn partial_udp_and_tcp_checksums_over_ipv4_are_completed() {
    for (tcp, field) in [(false, 6usize), (true, 16usize)] {
        let mut lab = Lab::new();
        let mut frame = if tcp {
            tcp4(H0, R[0], H0_V4, [192, 168, 5, 5], 64, PAYLOAD)
        } else {
            udp4(H0, R[0], H0_V4, [192, 168, 5, 5], 64, PAYLOAD)
        };
        let complete = make_partial(&mut frame, false, if tcp { 6 } else { 17 }, field);
        let run = lab.send(0, &frame);
        assert_eq!(run.verdict, Verdict::Transmit(PortId(1)));
        assert_eq!(checksum_at(&run.frame, 34 + field), complete, "tcp={tcp}");
        assert_eq!(lab.pipeline.counters().checksums_completed, 1);
    }
}

#[test]
fn partial_udp_checksum_over_ipv6_is_completed() {
    let mut lab = Lab::new();
    let mut frame = udp6(H0, R[0], H0_V6, neighbor_v6(1), 64, PAYLOAD);
    let complete = make_partial(&mut frame, true, 17, 6);
    let run = lab.send(0, &frame);
    assert!(
        matches!(run.verdict, Verdict::Transmit(_)),
        "{:?}",
        run.verdict
    );
    assert_eq!(checksum_at(&run.frame, 54 + 6), complete);
    assert_eq!(lab.pipeline.counters().checksums_completed, 1);
}

#[test]
fn complete_checksums_and_udp_without_checksum_are_left_alone() {
    let mut lab = Lab::new();
    let frame = udp4(H0, R[0], H0_V4, [192, 168, 5, 5], 64, PAYLOAD);
    let run = lab.send(0, &frame);
    assert_eq!(checksum_at(&run.frame, 34 + 6), checksum_at(&frame, 34 + 6));
    let mut no_checksum = frame.clone();
    no_checksum[40] = 0;
    no_checksum[41] = 0;
    let run = lab.send(0, &no_checksum);
    assert_eq!(checksum_at(&run.frame, 40), 0);
    assert_eq!(lab.pipeline.counters().checksums_completed, 0);
}
