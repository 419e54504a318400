//! Zero-copy packet views and packet builders (smoltcp's `wire` shape).
//!
//! One protocol per file. Each protocol has:
//!
//! - a **view** `XxxPacket<T: AsRef<[u8]>>` (`EthernetFrame` for Ethernet) over a borrowed or
//!   owned buffer: getters need `T: AsRef<[u8]>`, setters need `T: AsMut<[u8]>`, nothing is
//!   copied and nothing allocates. The forwarding path reads and rewrites packets in place
//!   through these views;
//! - where packets are built (ARP and ICMP replies, ICMP errors, VXLAN outer headers,
//!   generators and tests), a **representation** `XxxRepr` with `parse(&view)`,
//!   `buffer_len()` and `emit(&mut view)`.
//!
//! # The checking contract
//!
//! `XxxPacket::new_unchecked(buf)` wraps a buffer without looking at it.
//! `XxxPacket::new_checked(buf)` (equivalently `new_unchecked` followed by `check_len()`)
//! validates **every** length the view depends on, once, at ingress: the fixed header, header
//! length fields (IPv4 IHL, TCP data offset), total length fields (IPv4 total length, IPv6
//! payload length, UDP length), and the optional 802.1Q tag. After `new_checked` has returned
//! `Ok`, **no getter of that view can panic, whatever the bytes are**; every getter,
//! including `payload()`, is a bounded slice or a fixed-offset read. This is property-tested
//! for each view by feeding arbitrary bytes to `new_checked` and calling every getter.
//!
//! Things `new_checked` deliberately does *not* check, because they are policy and map to
//! distinct drop reasons in the stages: checksums (`verify_checksum()`), IPv4 fragmentation,
//! the VXLAN I flag (`has_vni()`), and the IPv6 extension-header chain (`upper_layer()`).
//!
//! Limits of the contract:
//!
//! - Setters that change a length or a structure field (`set_header_len`, `set_total_len`,
//!   `set_payload_len`, `set_len`, `set_ethertype` to 802.1Q on an untagged frame, ...) void
//!   the guarantee: check the view again (`check_len()`) before reading it.
//! - Setters for fields that only exist in some message types (e.g. the NDP target address)
//!   panic if the buffer is too short for that type; `Repr::emit` checks the length first.
//! - `XxxRepr::emit` never panics: it returns [`WireError::Truncated`] if the view's buffer is
//!   shorter than the packet it is asked to write; after it returns `Ok`, the view satisfies
//!   the same invariants as one that passed `new_checked`.
//!
//! Views do not own the decision to drop: they report a precise [`WireError`] and the stage
//! maps it to its own drop reason.
//!
//! # Design decisions and limitations
//!
//! - Unknown protocol numbers are data, not errors ([`EtherType::Unknown`],
//!   [`IpProtocol::Unknown`], `Icmpv4Message::Unknown`, ...). Always convert numbers with
//!   `From`, so that e.g. `IpProtocol::from(6)` is `Tcp` and never `Unknown(6)`.
//! - Ethernet: at most one 802.1Q tag is parsed; QinQ (0x88A8) shows up as
//!   `EtherType::Unknown(0x88A8)`, a second 0x8100 tag as `EtherType::Vlan` after the first.
//! - IPv4 payloads end at the total length and IPv6 payloads at the payload length, so
//!   Ethernet padding never reaches the transport layer (and its checksums).
//! - IPv6 jumbograms (payload length 0 with a Jumbo option) are not supported: payload
//!   length 0 means an empty payload.
//! - ARP: only Ethernet/IPv4 ARP is accepted (`WireError::Unsupported` otherwise).
//! - Repr types do not model IPv4 options or IPv6 extension headers: `parse` ignores them and
//!   `emit` writes none.
//! - ICMP errors quote raw bytes of the offending packet (exact, including options) rather
//!   than a re-emitted header: see `Icmpv4Repr::quote` and `Icmpv6Repr::quote`.

pub mod checksum;

/// Defines a `Copy` enum over an integer type with named values and an `Unknown(raw)` variant,
/// plus lossless `From` conversions both ways.
macro_rules! enum_with_unknown {
    (
        $(#[$enum_attr:meta])*
        pub enum $name:ident($ty:ty) {
            $( $(#[$variant_attr:meta])* $variant:ident = $value:literal ),+ $(,)?
        }
    ) => {
        $(#[$enum_attr])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $( $(#[$variant_attr])* $variant, )+
            /// A value without a name here; carried as data, never an error by itself.
            Unknown($ty),
        }

        impl ::core::convert::From<$ty> for $name {
            #[inline]
            fn from(value: $ty) -> Self {
                match value {
                    $( $value => $name::$variant, )+
                    other => $name::Unknown(other),
                }
            }
        }

        impl ::core::convert::From<$name> for $ty {
            #[inline]
            fn from(value: $name) -> Self {
                match value {
                    $( $name::$variant => $value, )+
                    $name::Unknown(other) => other,
                }
            }
        }
    };
}

mod arp;
mod ethernet;
mod icmpv4;
mod icmpv6;
mod ipv4;
mod ipv6;
mod tcp;
mod udp;
mod vxlan;

pub use arp::{ArpOperation, ArpPacket, ArpRepr, ARP_PACKET_LEN};
pub use checksum::PseudoHeaderAddr;
pub use ethernet::{
    EtherType, EthernetAddress, EthernetFrame, EthernetRepr, ParseEthernetAddressError,
    ETHERNET_HEADER_LEN, ETHERNET_VLAN_HEADER_LEN,
};
pub use icmpv4::{
    Icmpv4DstUnreachable, Icmpv4Message, Icmpv4Packet, Icmpv4Repr, Icmpv4TimeExceeded,
    ICMPV4_HEADER_LEN, ICMPV4_QUOTE_PAYLOAD_LEN,
};
pub use icmpv6::{
    solicited_node_multicast, Icmpv6DstUnreachable, Icmpv6Message, Icmpv6Packet, Icmpv6Repr,
    Icmpv6TimeExceeded, ICMPV6_ERROR_MAX_LEN, ICMPV6_HEADER_LEN, NDISC_HEADER_LEN,
};
pub use ipv4::{Ipv4Packet, Ipv4Repr, IPV4_HEADER_LEN};
pub use ipv6::{Ipv6FragInfo, Ipv6Packet, Ipv6Repr, IPV6_HEADER_LEN, IPV6_MAX_EXTENSION_HEADERS};
pub use tcp::{TcpFlags, TcpPacket, TCP_HEADER_LEN};
pub use udp::{UdpPacket, UdpRepr, UDP_HEADER_LEN};
pub use vxlan::{VxlanPacket, VxlanRepr, VXLAN_HEADER_LEN, VXLAN_PORT};

/// Why a buffer is not a valid packet of the expected protocol.
///
/// Each variant is a distinct cause so that stages can map it to their own drop reason
/// one to one; "which layer" is known by the stage that called the parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum WireError {
    /// The buffer ends before a fixed header, or before a header whose length the packet
    /// itself declares (IPv4 IHL, TCP data offset, IPv6 extension header, NDP option).
    #[error("truncated: buffer ends inside a header")]
    Truncated,
    /// The IP version field does not match the view (4 for IPv4, 6 for IPv6).
    #[error("bad IP version")]
    BadVersion,
    /// A header length field is below its minimum: IPv4 IHL < 5, TCP data offset < 5.
    #[error("bad header length field")]
    BadHeaderLength,
    /// A total length field is inconsistent with the header or with the buffer: IPv4 total
    /// length below the header length or beyond the buffer, IPv6 payload length beyond the
    /// buffer, UDP length below 8 or beyond the buffer.
    #[error("bad total length field")]
    BadTotalLength,
    /// A checksum does not verify. Only returned by `Repr::parse`; views report checksums
    /// through `verify_checksum()` so that the fast path can choose when to pay for it.
    #[error("bad checksum")]
    BadChecksum,
    /// Lengths are fine but the content violates the protocol: ARP address lengths that do
    /// not match Ethernet/IPv4, an NDP option of length 0, a Hop-by-Hop header that is not
    /// first, an NDP message with a non-zero code or a multicast target.
    #[error("malformed packet")]
    Malformed,
    /// The IPv6 extension header chain has more than [`IPV6_MAX_EXTENSION_HEADERS`] headers.
    #[error("IPv6 extension header chain too long")]
    ExtensionHeaderChainTooLong,
    /// A valid packet of a kind this module does not handle: ARP for other hardware or
    /// protocol types, ICMP message types `Repr::parse` does not model.
    #[error("unsupported packet type")]
    Unsupported,
}

enum_with_unknown! {
    /// IP protocol number (IPv4 `protocol`, IPv6 `next header`).
    pub enum IpProtocol(u8) {
        /// IPv6 Hop-by-Hop options (0).
        HopByHop = 0,
        /// ICMP for IPv4 (1).
        Icmp = 1,
        /// TCP (6).
        Tcp = 6,
        /// UDP (17).
        Udp = 17,
        /// IPv6 Routing header (43).
        Ipv6Route = 43,
        /// IPv6 Fragment header (44).
        Ipv6Frag = 44,
        /// IPsec Encapsulating Security Payload (50).
        Esp = 50,
        /// IPsec Authentication Header (51).
        Ah = 51,
        /// ICMP for IPv6 (58).
        Icmpv6 = 58,
        /// IPv6 No Next Header (59).
        Ipv6NoNxt = 59,
        /// IPv6 Destination options (60).
        Ipv6Opts = 60,
    }
}

impl core::fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            IpProtocol::HopByHop => f.write_str("hop-by-hop"),
            IpProtocol::Icmp => f.write_str("icmp"),
            IpProtocol::Tcp => f.write_str("tcp"),
            IpProtocol::Udp => f.write_str("udp"),
            IpProtocol::Ipv6Route => f.write_str("ipv6-route"),
            IpProtocol::Ipv6Frag => f.write_str("ipv6-frag"),
            IpProtocol::Esp => f.write_str("esp"),
            IpProtocol::Ah => f.write_str("ah"),
            IpProtocol::Icmpv6 => f.write_str("ipv6-icmp"),
            IpProtocol::Ipv6NoNxt => f.write_str("ipv6-nonxt"),
            IpProtocol::Ipv6Opts => f.write_str("ipv6-opts"),
            IpProtocol::Unknown(n) => write!(f, "{n}"),
        }
    }
}

// Big-endian field access shared by the views. Each is a single bounds check plus a load;
// callers only use offsets that `check_len()` has validated.

#[inline(always)]
fn read_array<const N: usize>(data: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&data[at..at + N]);
    out
}

#[inline(always)]
fn read_u16(data: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(read_array(data, at))
}

#[inline(always)]
fn read_u32(data: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(read_array(data, at))
}

#[inline(always)]
fn write_bytes(data: &mut [u8], at: usize, bytes: &[u8]) {
    data[at..at + bytes.len()].copy_from_slice(bytes);
}

#[inline(always)]
fn write_u16(data: &mut [u8], at: usize, value: u16) {
    write_bytes(data, at, &value.to_be_bytes());
}

#[inline(always)]
fn write_u32(data: &mut [u8], at: usize, value: u32) {
    write_bytes(data, at, &value.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_protocol_round_trips_every_number() {
        for n in 0..=255u8 {
            let p = IpProtocol::from(n);
            assert_eq!(u8::from(p), n);
            if matches!(n, 0 | 1 | 6 | 17 | 43 | 44 | 50 | 51 | 58 | 59 | 60) {
                assert!(!matches!(p, IpProtocol::Unknown(_)), "{n} should be named");
            } else {
                assert_eq!(p, IpProtocol::Unknown(n));
            }
        }
        assert_eq!(IpProtocol::from(17), IpProtocol::Udp);
        assert_eq!(IpProtocol::Udp.to_string(), "udp");
        assert_eq!(IpProtocol::Unknown(99).to_string(), "99");
    }

    #[test]
    fn errors_display_distinctly() {
        let all = [
            WireError::Truncated,
            WireError::BadVersion,
            WireError::BadHeaderLength,
            WireError::BadTotalLength,
            WireError::BadChecksum,
            WireError::Malformed,
            WireError::ExtensionHeaderChainTooLong,
            WireError::Unsupported,
        ];
        let texts: std::collections::HashSet<String> = all.iter().map(|e| e.to_string()).collect();
        assert_eq!(texts.len(), all.len());
    }
}
