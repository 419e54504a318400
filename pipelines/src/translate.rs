//! Address and port translation of a packet in place, with every checksum it touches updated
//! incrementally (RFC 1624): the building block of source and destination NAT.
//!
//! Contract:
//! - The caller gives the packet's layout ([`Layout`]: where its IP and L4 headers start and
//!   what it carries), as ethernet-input computed it; nothing here re-parses the packet.
//! - Changing an address updates the IPv4 header checksum, and the TCP/UDP/ICMPv6 checksum
//!   through its pseudo-header. Changing a port updates the TCP/UDP checksum. ICMP echo
//!   request/reply carry their identifier where other protocols carry a port ("the port" of
//!   an echo is its identifier, as in the flow key), and ICMPv4's checksum has no
//!   pseudo-header.
//! - UDP over IPv4 with a zero checksum has none (RFC 768): it stays zero. A UDP checksum that
//!   computes to zero is sent as all ones.
//! - Fragments after the first have no L4 header (`l4 == 0`): only addresses change. Ports of
//!   protocols without them are ignored.
//! - Nothing panics: a layout that does not fit the frame is refused before anything changes.
//!
//! Limitation: the headers quoted inside ICMP errors are not translated here (the NAT stage
//! does that with these same functions on the quoted packet).

use crate::wire::checksum;
use std::net::IpAddr;

/// Where a packet's headers are, as ethernet-input found them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Offset of the IP header in the frame.
    pub l3: usize,
    /// Offset of the L4 header (0: none, e.g. a later fragment).
    pub l4: usize,
    /// Bytes of the IP packet (header included).
    pub ip_len: usize,
    /// IPv6 (else IPv4).
    pub ipv6: bool,
    /// IP protocol of the L4 header.
    pub protocol: u8,
}

/// Which end of the packet to rewrite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The source address and port.
    Source,
    /// The destination address and port.
    Destination,
}

/// Why a translation was refused (the frame is unchanged).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// The layout does not fit the frame, or its L4 header is truncated.
    #[error("packet layout does not fit the frame")]
    Layout,
    /// The new address is of the other family.
    #[error("address family differs from the packet's")]
    Family,
}

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

/// Offset of the checksum in the L4 header, and of the port of `end` (None: no port).
fn l4_fields(protocol: u8, l4: &[u8], end: End) -> Option<(usize, Option<usize>)> {
    let port = |source: usize, destination: usize| match end {
        End::Source => Some(source),
        End::Destination => Some(destination),
    };
    match protocol {
        TCP if l4.len() >= 20 => Some((16, port(0, 2))),
        UDP if l4.len() >= 8 => Some((6, port(0, 2))),
        // Echo request/reply: the identifier is both ends' "port".
        ICMP if l4.len() >= 8 => Some((2, matches!(l4[0], 0 | 8).then_some(4))),
        ICMPV6 if l4.len() >= 8 => Some((2, matches!(l4[0], 128 | 129).then_some(4))),
        _ => None,
    }
}

/// Rewrites the address and port of one end of the packet in `frame`. `port` is ignored for
/// packets without one (and for non-echo ICMP).
pub fn translate(
    frame: &mut [u8],
    layout: &Layout,
    end: End,
    addr: IpAddr,
    port: u16,
) -> Result<(), TranslateError> {
    let Layout {
        l3,
        l4,
        ip_len,
        ipv6,
        protocol,
    } = *layout;
    let header_min = if ipv6 { 40 } else { 20 };
    let ip_end = l3.checked_add(ip_len).ok_or(TranslateError::Layout)?;
    if ip_end > frame.len()
        || ip_len < header_min
        || (l4 != 0 && (l4 < l3 + header_min || l4 > ip_end))
    {
        return Err(TranslateError::Layout);
    }
    if addr.is_ipv6() != ipv6 {
        return Err(TranslateError::Family);
    }
    let fields = if l4 == 0 {
        None
    } else {
        let fields = l4_fields(protocol, &frame[l4..ip_end], end);
        if fields.is_none() && matches!(protocol, TCP | UDP | ICMP | ICMPV6) {
            return Err(TranslateError::Layout);
        }
        fields
    };
    // The L4 checksum covers the addresses through the pseudo-header (not ICMPv4's), and the
    // port itself.
    let pseudo_header = protocol != ICMP;
    let udp4_without_checksum = protocol == UDP
        && !ipv6
        && fields.is_some_and(|(at, _)| frame[l4 + at..l4 + at + 2] == [0, 0]);
    let mut l4_checksum =
        fields.map(|(at, _)| u16::from_be_bytes([frame[l4 + at], frame[l4 + at + 1]]));

    match addr {
        IpAddr::V4(new) => {
            let at = l3 + if end == End::Source { 12 } else { 16 };
            let old = u32::from_be_bytes([frame[at], frame[at + 1], frame[at + 2], frame[at + 3]]);
            let new = u32::from(new);
            frame[at..at + 4].copy_from_slice(&new.to_be_bytes());
            let header = u16::from_be_bytes([frame[l3 + 10], frame[l3 + 11]]);
            frame[l3 + 10..l3 + 12]
                .copy_from_slice(&checksum::update_u32(header, old, new).to_be_bytes());
            if pseudo_header {
                l4_checksum = l4_checksum.map(|c| checksum::update_u32(c, old, new));
            }
        }
        IpAddr::V6(new) => {
            let at = l3 + if end == End::Source { 8 } else { 24 };
            let mut old = [0u8; 16];
            old.copy_from_slice(&frame[at..at + 16]);
            let old = u128::from_be_bytes(old);
            let new = u128::from(new);
            frame[at..at + 16].copy_from_slice(&new.to_be_bytes());
            l4_checksum = l4_checksum.map(|c| checksum::update_u128(c, old, new));
        }
    }
    if let Some((at, port_at)) = fields {
        let mut sum = l4_checksum.unwrap_or(0);
        if let Some(port_at) = port_at {
            let p = l4 + port_at;
            let old = u16::from_be_bytes([frame[p], frame[p + 1]]);
            frame[p..p + 2].copy_from_slice(&port.to_be_bytes());
            sum = checksum::update_u16(sum, old, port);
        }
        let sum = if udp4_without_checksum {
            0
        } else if protocol == UDP && sum == 0 {
            0xffff
        } else {
            sum
        };
        frame[l4 + at..l4 + at + 2].copy_from_slice(&sum.to_be_bytes());
    }
    Ok(())
}
