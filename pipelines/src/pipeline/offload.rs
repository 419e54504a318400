//! Completion of partial L4 checksums.
//!
//! A sender with TX checksum offload (every pod veth by default) hands TCP/UDP packets over
//! with `CHECKSUM_PARTIAL`: the checksum field holds only the folded pseudo-header sum, and the
//! NIC is expected to finish it. AF_XDP carries no such flag, so the frame reaches us as it is;
//! a kernel receiving it from our AF_XDP transmit (a fresh skb) validates the checksum and
//! drops it. The router therefore finishes the job, as the NIC would have: if the field equals
//! the pseudo-header sum and the checksum does not already verify, the one's complement sum of
//! the segment is written in. Cost: one pseudo-header sum per TCP/UDP packet, plus one pass
//! over the segment for packets that need completing. Operators who want to save that pass set
//! `ethtool -K <pod-interface> tx off` in the pod (the CNI can do it): the pod then checksums
//! in software and nothing is left to complete here.

use super::Meta;
use crate::wire::{checksum, IpProtocol};
use std::net::Ipv6Addr;

/// Completes a partial TCP/UDP checksum in place; true if it did.
#[inline]
pub(super) fn complete_partial_checksum(frame: &mut [u8], m: &Meta) -> bool {
    if m.l4 == 0 || m.later_fragment || m.key.src_port == 0 && m.key.dst_port == 0 {
        return false;
    }
    let protocol = IpProtocol::from(m.key.protocol);
    let field = match protocol {
        IpProtocol::Tcp => 16,
        IpProtocol::Udp => 6,
        _ => return false,
    };
    let l4 = m.l4 as usize;
    let end = m.l3 as usize + m.ip_len as usize;
    if end > frame.len() || l4 + field + 2 > end {
        return false;
    }
    let length = (end - l4) as u32;
    let pseudo = if m.key.ipv6 {
        checksum::pseudo_header_v6(
            &Ipv6Addr::from(m.key.src),
            &Ipv6Addr::from(m.key.dst),
            protocol,
            length,
        )
    } else {
        // Straight from the key's words: this runs on every TCP/UDP packet, hits included.
        let src = m.key.src as u32;
        let dst = m.key.dst as u32;
        let sum = (src >> 16) as u64
            + (src & 0xffff) as u64
            + (dst >> 16) as u64
            + (dst & 0xffff) as u64
            + m.key.protocol as u64
            + length as u64;
        checksum::fold(sum)
    };
    let current = u16::from_be_bytes([frame[l4 + field], frame[l4 + field + 1]]);
    // UDP over IPv4 with checksum 0 has none; a full checksum is never equal to the
    // pseudo-header sum except by coincidence, which the verification below catches.
    if current != pseudo || (protocol == IpProtocol::Udp && !m.key.ipv6 && current == 0) {
        return false;
    }
    let segment = checksum::sum(&frame[l4..end]);
    if checksum::add(pseudo, segment) == 0xffff {
        return false;
    }
    let mut completed = !segment;
    if protocol == IpProtocol::Udp && completed == 0 {
        completed = 0xffff;
    }
    frame[l4 + field..l4 + field + 2].copy_from_slice(&completed.to_be_bytes());
    true
}
