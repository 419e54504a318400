//! ICMP for IPv6 (RFC 4443) and Neighbor Discovery (RFC 4861) solicitations and
//! advertisements.
//!
//! The view's buffer is the whole ICMPv6 message (the upper-layer data of the IPv6 packet);
//! the checksum covers all of it plus the IPv6 pseudo-header. `new_checked` checks the 8-byte
//! header and, for Neighbor Solicitation/Advertisement, the 24 bytes up to the target address.
//! Fields that only exist in some message types beyond byte 8 have `Option` getters
//! (`target_addr()`), so no getter can panic whatever the type.
//!
//! `Icmpv6Repr::parse` checks what can be checked without the IPv6 header; RFC 4861 §7.1
//! also requires a hop limit of 255 for NDP messages, which is the caller's to check.

use std::net::Ipv6Addr;

use super::checksum;
use super::ethernet::EthernetAddress;
use super::ipv6::{Ipv6Packet, IPV6_HEADER_LEN};
use super::{read_array, read_u16, read_u32, write_bytes, write_u16, write_u32};
use super::{IpProtocol, WireError};

enum_with_unknown! {
    /// ICMPv6 message type.
    pub enum Icmpv6Message(u8) {
        /// Destination unreachable (1).
        DstUnreachable = 1,
        /// Packet too big (2).
        PktTooBig = 2,
        /// Time exceeded (3).
        TimeExceeded = 3,
        /// Parameter problem (4).
        ParamProblem = 4,
        /// Echo request (128).
        EchoRequest = 128,
        /// Echo reply (129).
        EchoReply = 129,
        /// Multicast listener query (130).
        MldQuery = 130,
        /// Multicast listener report (131).
        MldReport = 131,
        /// Multicast listener done (132).
        MldDone = 132,
        /// Router solicitation (133).
        RouterSolicit = 133,
        /// Router advertisement (134).
        RouterAdvert = 134,
        /// Neighbor solicitation (135).
        NeighborSolicit = 135,
        /// Neighbor advertisement (136).
        NeighborAdvert = 136,
        /// Redirect (137).
        Redirect = 137,
        /// Multicast listener report v2 (143).
        MldV2Report = 143,
    }
}

impl Icmpv6Message {
    /// Error messages are types 0–127 (RFC 4443 §2.1); no error may answer one.
    #[inline]
    pub fn is_error(self) -> bool {
        u8::from(self) < 128
    }
}

enum_with_unknown! {
    /// Destination unreachable codes.
    pub enum Icmpv6DstUnreachable(u8) {
        /// No route to destination (0).
        NoRoute = 0,
        /// Communication administratively prohibited (1).
        AdminProhibit = 1,
        /// Beyond scope of source address (2).
        BeyondScope = 2,
        /// Address unreachable (3).
        AddrUnreachable = 3,
        /// Port unreachable (4).
        PortUnreachable = 4,
        /// Source address failed ingress/egress policy (5).
        FailedPolicy = 5,
        /// Reject route to destination (6).
        RejectRoute = 6,
    }
}

enum_with_unknown! {
    /// Time exceeded codes.
    pub enum Icmpv6TimeExceeded(u8) {
        /// Hop limit exceeded in transit (0).
        HopLimitExceeded = 0,
        /// Fragment reassembly time exceeded (1).
        FragReassemExceeded = 1,
    }
}

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    /// The 4 bytes after the checksum: echo ident/seq, MTU, pointer, NA flags, unused.
    pub const REST: usize = 4;
    pub const ECHO_IDENT: usize = 4;
    pub const ECHO_SEQNO: usize = 6;
    pub const NA_FLAGS: usize = 4;
    pub const PAYLOAD: usize = 8;
    pub const TARGET_ADDR: usize = 8;
    pub const NDISC_OPTIONS: usize = 24;
}

/// Length of the ICMPv6 header (type, code, checksum, 4 bytes of rest-of-header).
pub const ICMPV6_HEADER_LEN: usize = field::PAYLOAD;

/// Length of a Neighbor Solicitation/Advertisement before its options.
pub const NDISC_HEADER_LEN: usize = field::NDISC_OPTIONS;

/// An ICMPv6 error packet, IPv6 header included, must not exceed the minimum IPv6 MTU
/// (RFC 4443 §2.4(c)).
pub const ICMPV6_ERROR_MAX_LEN: usize = 1280;

const NA_ROUTER: u8 = 0x80;
const NA_SOLICITED: u8 = 0x40;
const NA_OVERRIDE: u8 = 0x20;

const NDISC_OPT_SOURCE_LLADDR: u8 = 1;
const NDISC_OPT_TARGET_LLADDR: u8 = 2;
/// Length of a link-layer address option for Ethernet (one 8-byte unit).
const NDISC_LLADDR_OPT_LEN: usize = 8;

/// The solicited-node multicast address of `addr` (`ff02::1:ffXX:XXXX`, RFC 4291 §2.7.1),
/// the destination of a Neighbor Solicitation for it.
#[inline]
pub fn solicited_node_multicast(addr: &Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// A view of an ICMPv6 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Icmpv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// Wraps a buffer without checking it.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Icmpv6Packet { buffer }
    }

    /// Wraps a buffer and checks it (see [`check_len`](Self::check_len)).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// `Truncated` if shorter than 8 bytes, or than 24 bytes for a Neighbor Solicitation or
    /// Advertisement.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < ICMPV6_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if matches!(
            self.msg_type(),
            Icmpv6Message::NeighborSolicit | Icmpv6Message::NeighborAdvert
        ) && len < NDISC_HEADER_LEN
        {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// The underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Message type.
    #[inline]
    pub fn msg_type(&self) -> Icmpv6Message {
        Icmpv6Message::from(self.buffer.as_ref()[field::TYPE])
    }

    /// Message code (meaning depends on the type).
    #[inline]
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The 4 bytes after the checksum, as one number.
    #[inline]
    pub fn rest_of_header(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::REST)
    }

    /// Echo identifier (echo request/reply).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    /// Echo sequence number (echo request/reply).
    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_SEQNO)
    }

    /// MTU (packet too big).
    #[inline]
    pub fn mtu(&self) -> u32 {
        self.rest_of_header()
    }

    /// Pointer (parameter problem).
    #[inline]
    pub fn pointer(&self) -> u32 {
        self.rest_of_header()
    }

    /// Router flag (neighbor advertisement).
    #[inline]
    pub fn router_flag(&self) -> bool {
        self.buffer.as_ref()[field::NA_FLAGS] & NA_ROUTER != 0
    }

    /// Solicited flag (neighbor advertisement).
    #[inline]
    pub fn solicited_flag(&self) -> bool {
        self.buffer.as_ref()[field::NA_FLAGS] & NA_SOLICITED != 0
    }

    /// Override flag (neighbor advertisement).
    #[inline]
    pub fn override_flag(&self) -> bool {
        self.buffer.as_ref()[field::NA_FLAGS] & NA_OVERRIDE != 0
    }

    /// Target address (neighbor solicitation/advertisement, redirect): `None` if the message
    /// is too short to have one, which `new_checked` rules out for NS and NA.
    #[inline]
    pub fn target_addr(&self) -> Option<Ipv6Addr> {
        let data = self.buffer.as_ref();
        if data.len() < NDISC_HEADER_LEN {
            return None;
        }
        Some(Ipv6Addr::from(read_array::<16>(data, field::TARGET_ADDR)))
    }

    /// NDP options of a neighbor solicitation/advertisement (empty if too short).
    #[inline]
    pub fn ndisc_options(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .get(field::NDISC_OPTIONS..)
            .unwrap_or_default()
    }

    /// Everything after the 8-byte header: echo data, or the quoted packet of an error.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }

    /// Whether the checksum over the pseudo-header and the whole buffer is correct.
    #[inline]
    pub fn verify_checksum(&self, src_addr: &Ipv6Addr, dst_addr: &Ipv6Addr) -> bool {
        let data = self.buffer.as_ref();
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let pseudo = checksum::pseudo_header_v6(src_addr, dst_addr, IpProtocol::Icmpv6, len);
        checksum::add(pseudo, checksum::sum(data)) == 0xFFFF
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    /// Sets the message type. Check the view again before reading it.
    #[inline]
    pub fn set_msg_type(&mut self, value: Icmpv6Message) {
        self.buffer.as_mut()[field::TYPE] = value.into();
    }

    /// Sets the message code.
    #[inline]
    pub fn set_msg_code(&mut self, value: u8) {
        self.buffer.as_mut()[field::CODE] = value;
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Sets the 4 bytes after the checksum (MTU, pointer, reserved).
    #[inline]
    pub fn set_rest_of_header(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::REST, value);
    }

    /// Sets the echo identifier.
    #[inline]
    pub fn set_echo_ident(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ECHO_IDENT, value);
    }

    /// Sets the echo sequence number.
    #[inline]
    pub fn set_echo_seq_no(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ECHO_SEQNO, value);
    }

    /// Sets the MTU (packet too big).
    #[inline]
    pub fn set_mtu(&mut self, value: u32) {
        self.set_rest_of_header(value);
    }

    /// Sets the neighbor advertisement flags; the reserved bits are cleared.
    #[inline]
    pub fn set_neighbor_flags(&mut self, router: bool, solicited: bool, override_flag: bool) {
        let mut flags = 0u8;
        if router {
            flags |= NA_ROUTER;
        }
        if solicited {
            flags |= NA_SOLICITED;
        }
        if override_flag {
            flags |= NA_OVERRIDE;
        }
        self.set_rest_of_header(u32::from(flags) << 24);
    }

    /// Sets the target address. Panics if the buffer is shorter than 24 bytes, which
    /// `new_checked` rules out only for NS/NA messages.
    #[inline]
    pub fn set_target_addr(&mut self, addr: Ipv6Addr) {
        write_bytes(self.buffer.as_mut(), field::TARGET_ADDR, &addr.octets());
    }

    /// Computes and writes the checksum over the pseudo-header and the whole buffer.
    #[inline]
    pub fn fill_checksum(&mut self, src_addr: &Ipv6Addr, dst_addr: &Ipv6Addr) {
        self.set_checksum(0);
        let data = self.buffer.as_ref();
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let pseudo = checksum::pseudo_header_v6(src_addr, dst_addr, IpProtocol::Icmpv6, len);
        let sum = !checksum::add(pseudo, checksum::sum(data));
        self.set_checksum(sum);
    }

    /// Mutable payload (after the 8-byte header).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }

    /// Mutable NDP options (empty if the buffer is shorter than 24 bytes).
    #[inline]
    pub fn ndisc_options_mut(&mut self) -> &mut [u8] {
        self.buffer
            .as_mut()
            .get_mut(field::NDISC_OPTIONS..)
            .unwrap_or_default()
    }
}

/// Finds an Ethernet link-layer address option of type `wanted` in NDP options, checking
/// every option's length on the way: `Malformed` for a zero length or a link-layer option
/// that is not 8 bytes, `Truncated` for an option running past the end.
fn find_lladdr_option(options: &[u8], wanted: u8) -> Result<Option<EthernetAddress>, WireError> {
    let mut rest = options;
    let mut found = None;
    while !rest.is_empty() {
        if rest.len() < 2 {
            return Err(WireError::Truncated);
        }
        let (kind, len) = (rest[0], usize::from(rest[1]) * 8);
        if len == 0 {
            return Err(WireError::Malformed);
        }
        let option = rest.get(..len).ok_or(WireError::Truncated)?;
        if kind == wanted && found.is_none() {
            if len != NDISC_LLADDR_OPT_LEN {
                return Err(WireError::Malformed);
            }
            found = Some(EthernetAddress(read_array(option, 2)));
        }
        rest = &rest[len..];
    }
    Ok(found)
}

fn write_lladdr_option(data: &mut [u8], at: usize, kind: u8, addr: EthernetAddress) {
    data[at] = kind;
    data[at + 1] = 1;
    write_bytes(data, at + 2, &addr.0);
}

/// An ICMPv6 message to build or after parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Icmpv6Repr<'a> {
    /// Echo request.
    EchoRequest {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Echo data.
        data: &'a [u8],
    },
    /// Echo reply.
    EchoReply {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Echo data.
        data: &'a [u8],
    },
    /// Destination unreachable.
    DstUnreachable {
        /// Code.
        reason: Icmpv6DstUnreachable,
        /// The offending packet, from its IPv6 header on ([`Icmpv6Repr::quote`]).
        quote: &'a [u8],
    },
    /// Packet too big.
    PacketTooBig {
        /// MTU of the next-hop link.
        mtu: u32,
        /// The offending packet, from its IPv6 header on ([`Icmpv6Repr::quote`]).
        quote: &'a [u8],
    },
    /// Time exceeded.
    TimeExceeded {
        /// Code.
        reason: Icmpv6TimeExceeded,
        /// The offending packet, from its IPv6 header on ([`Icmpv6Repr::quote`]).
        quote: &'a [u8],
    },
    /// Neighbor solicitation.
    NeighborSolicit {
        /// The address whose link-layer address is asked for.
        target_addr: Ipv6Addr,
        /// The sender's link-layer address option (absent for DAD probes).
        source_lladdr: Option<EthernetAddress>,
    },
    /// Neighbor advertisement.
    NeighborAdvert {
        /// The sender is a router.
        router_flag: bool,
        /// Sent in response to a solicitation.
        solicited_flag: bool,
        /// Override an existing cache entry.
        override_flag: bool,
        /// The address being advertised.
        target_addr: Ipv6Addr,
        /// The target's link-layer address option.
        target_lladdr: Option<EthernetAddress>,
    },
}

impl<'a> Icmpv6Repr<'a> {
    /// How many bytes of `original` (IPv6 header included, padding excluded) an error about
    /// it quotes: as much as fits in a 1280-byte error packet (RFC 4443 §2.4(c)).
    #[inline]
    pub fn quote_len<T: AsRef<[u8]>>(original: &Ipv6Packet<T>) -> usize {
        let max = ICMPV6_ERROR_MAX_LEN - IPV6_HEADER_LEN - ICMPV6_HEADER_LEN;
        original.packet().len().min(max)
    }

    /// The bytes of `original` an error about it quotes (see [`quote_len`](Self::quote_len)).
    #[inline]
    pub fn quote<T: AsRef<[u8]>>(original: &Ipv6Packet<T>) -> &[u8] {
        &original.packet()[..Self::quote_len(original)]
    }

    /// Reads a message from a view over a shared buffer; the result borrows its data.
    /// Checks the checksum for these addresses (`BadChecksum`); a zero code for echo and NDP
    /// messages and a non-multicast NDP target (`Malformed`); NDP option lengths
    /// (`Malformed`/`Truncated`); that an error quotes at least an IPv6 header (`Truncated`).
    /// Other message types are `Unsupported`; unknown NDP options are skipped.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &Icmpv6Packet<&'a T>,
        src_addr: &Ipv6Addr,
        dst_addr: &Ipv6Addr,
    ) -> Result<Self, WireError> {
        packet.check_len()?;
        if !packet.verify_checksum(src_addr, dst_addr) {
            return Err(WireError::BadChecksum);
        }
        let buffer: &'a T = packet.buffer;
        let bytes: &'a [u8] = buffer.as_ref();
        let data = &bytes[field::PAYLOAD..];
        let code = packet.msg_code();
        let msg_type = packet.msg_type();
        match msg_type {
            Icmpv6Message::EchoRequest
            | Icmpv6Message::EchoReply
            | Icmpv6Message::NeighborSolicit
            | Icmpv6Message::NeighborAdvert
                if code != 0 =>
            {
                Err(WireError::Malformed)
            }
            Icmpv6Message::DstUnreachable
            | Icmpv6Message::PktTooBig
            | Icmpv6Message::TimeExceeded
                if data.len() < IPV6_HEADER_LEN =>
            {
                Err(WireError::Truncated)
            }
            Icmpv6Message::EchoRequest => Ok(Icmpv6Repr::EchoRequest {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            }),
            Icmpv6Message::EchoReply => Ok(Icmpv6Repr::EchoReply {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            }),
            Icmpv6Message::DstUnreachable => Ok(Icmpv6Repr::DstUnreachable {
                reason: Icmpv6DstUnreachable::from(code),
                quote: data,
            }),
            Icmpv6Message::PktTooBig => Ok(Icmpv6Repr::PacketTooBig {
                mtu: packet.mtu(),
                quote: data,
            }),
            Icmpv6Message::TimeExceeded => Ok(Icmpv6Repr::TimeExceeded {
                reason: Icmpv6TimeExceeded::from(code),
                quote: data,
            }),
            Icmpv6Message::NeighborSolicit | Icmpv6Message::NeighborAdvert => {
                let target_addr = packet.target_addr().ok_or(WireError::Truncated)?;
                if target_addr.is_multicast() {
                    return Err(WireError::Malformed);
                }
                let options = packet.ndisc_options();
                if msg_type == Icmpv6Message::NeighborSolicit {
                    Ok(Icmpv6Repr::NeighborSolicit {
                        target_addr,
                        source_lladdr: find_lladdr_option(options, NDISC_OPT_SOURCE_LLADDR)?,
                    })
                } else {
                    Ok(Icmpv6Repr::NeighborAdvert {
                        router_flag: packet.router_flag(),
                        solicited_flag: packet.solicited_flag(),
                        override_flag: packet.override_flag(),
                        target_addr,
                        target_lladdr: find_lladdr_option(options, NDISC_OPT_TARGET_LLADDR)?,
                    })
                }
            }
            _ => Err(WireError::Unsupported),
        }
    }

    /// Message length.
    #[inline]
    pub fn buffer_len(&self) -> usize {
        match self {
            Icmpv6Repr::EchoRequest { data, .. } | Icmpv6Repr::EchoReply { data, .. } => {
                ICMPV6_HEADER_LEN + data.len()
            }
            Icmpv6Repr::DstUnreachable { quote, .. }
            | Icmpv6Repr::PacketTooBig { quote, .. }
            | Icmpv6Repr::TimeExceeded { quote, .. } => ICMPV6_HEADER_LEN + quote.len(),
            Icmpv6Repr::NeighborSolicit {
                source_lladdr: lladdr,
                ..
            }
            | Icmpv6Repr::NeighborAdvert {
                target_lladdr: lladdr,
                ..
            } => NDISC_HEADER_LEN + lladdr.map_or(0, |_| NDISC_LLADDR_OPT_LEN),
        }
    }

    /// Writes the message and fills the checksum for these addresses over the whole buffer,
    /// which should be exactly `buffer_len()` bytes. `Truncated` if it is shorter.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Icmpv6Packet<T>,
        src_addr: &Ipv6Addr,
        dst_addr: &Ipv6Addr,
    ) -> Result<(), WireError> {
        if packet.buffer.as_ref().len() < self.buffer_len() {
            return Err(WireError::Truncated);
        }
        let echo = |ident: u16, seq_no: u16| (u32::from(ident) << 16) | u32::from(seq_no);
        match *self {
            Icmpv6Repr::EchoRequest {
                ident,
                seq_no,
                data,
            } => {
                packet.set_msg_type(Icmpv6Message::EchoRequest);
                packet.set_msg_code(0);
                packet.set_rest_of_header(echo(ident, seq_no));
                write_bytes(packet.buffer.as_mut(), field::PAYLOAD, data);
            }
            Icmpv6Repr::EchoReply {
                ident,
                seq_no,
                data,
            } => {
                packet.set_msg_type(Icmpv6Message::EchoReply);
                packet.set_msg_code(0);
                packet.set_rest_of_header(echo(ident, seq_no));
                write_bytes(packet.buffer.as_mut(), field::PAYLOAD, data);
            }
            Icmpv6Repr::DstUnreachable { reason, quote } => {
                packet.set_msg_type(Icmpv6Message::DstUnreachable);
                packet.set_msg_code(reason.into());
                packet.set_rest_of_header(0);
                write_bytes(packet.buffer.as_mut(), field::PAYLOAD, quote);
            }
            Icmpv6Repr::PacketTooBig { mtu, quote } => {
                packet.set_msg_type(Icmpv6Message::PktTooBig);
                packet.set_msg_code(0);
                packet.set_mtu(mtu);
                write_bytes(packet.buffer.as_mut(), field::PAYLOAD, quote);
            }
            Icmpv6Repr::TimeExceeded { reason, quote } => {
                packet.set_msg_type(Icmpv6Message::TimeExceeded);
                packet.set_msg_code(reason.into());
                packet.set_rest_of_header(0);
                write_bytes(packet.buffer.as_mut(), field::PAYLOAD, quote);
            }
            Icmpv6Repr::NeighborSolicit {
                target_addr,
                source_lladdr,
            } => {
                packet.set_msg_type(Icmpv6Message::NeighborSolicit);
                packet.set_msg_code(0);
                packet.set_rest_of_header(0);
                packet.set_target_addr(target_addr);
                if let Some(lladdr) = source_lladdr {
                    let data = packet.buffer.as_mut();
                    write_lladdr_option(
                        data,
                        field::NDISC_OPTIONS,
                        NDISC_OPT_SOURCE_LLADDR,
                        lladdr,
                    );
                }
            }
            Icmpv6Repr::NeighborAdvert {
                router_flag,
                solicited_flag,
                override_flag,
                target_addr,
                target_lladdr,
            } => {
                packet.set_msg_type(Icmpv6Message::NeighborAdvert);
                packet.set_msg_code(0);
                packet.set_neighbor_flags(router_flag, solicited_flag, override_flag);
                packet.set_target_addr(target_addr);
                if let Some(lladdr) = target_lladdr {
                    let data = packet.buffer.as_mut();
                    write_lladdr_option(
                        data,
                        field::NDISC_OPTIONS,
                        NDISC_OPT_TARGET_LLADDR,
                        lladdr,
                    );
                }
            }
        }
        packet.fill_checksum(src_addr, dst_addr);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Ipv6Repr;

    use proptest::prelude::*;

    fn host() -> Ipv6Addr {
        "fe80::1".parse().unwrap()
    }

    fn peer() -> Ipv6Addr {
        "fe80::2".parse().unwrap()
    }

    const MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x01]);

    /// A Neighbor Solicitation for fe80::2 from fe80::1 (to fe80::2's solicited-node group),
    /// with a source link-layer address option; checksum computed independently below.
    fn ns_fixture() -> (Vec<u8>, Ipv6Addr, Ipv6Addr) {
        let mut b = vec![135, 0, 0, 0, 0, 0, 0, 0];
        b.extend_from_slice(&peer().octets());
        b.extend_from_slice(&[1, 1, 0x02, 0, 0, 0, 0, 0x01]);
        let dst = solicited_node_multicast(&peer());
        // Independent checksum: naive pseudo-header + message bytes.
        let mut ph = Vec::new();
        ph.extend_from_slice(&host().octets());
        ph.extend_from_slice(&dst.octets());
        ph.extend_from_slice(&(b.len() as u32).to_be_bytes());
        ph.extend_from_slice(&[0, 0, 0, 58]);
        ph.extend_from_slice(&b);
        let mut acc = 0u32;
        for w in ph.chunks(2) {
            acc += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        while acc > 0xFFFF {
            acc = (acc & 0xFFFF) + (acc >> 16);
        }
        b[2..4].copy_from_slice(&(!(acc as u16)).to_be_bytes());
        (b, host(), dst)
    }

    #[test]
    fn solicited_node() {
        assert_eq!(
            solicited_node_multicast(&"2001:db8::1234:5678".parse().unwrap()),
            "ff02::1:ff34:5678".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn parse_neighbor_solicitation() {
        let (b, src, dst) = ns_fixture();
        let p = Icmpv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.msg_type(), Icmpv6Message::NeighborSolicit);
        assert!(!p.msg_type().is_error());
        assert!(p.verify_checksum(&src, &dst));
        assert!(!p.verify_checksum(&src, &peer()));
        assert_eq!(p.target_addr(), Some(peer()));
        assert_eq!(p.ndisc_options(), &[1, 1, 2, 0, 0, 0, 0, 1]);
        let repr = Icmpv6Repr::parse(&p, &src, &dst).unwrap();
        assert_eq!(
            repr,
            Icmpv6Repr::NeighborSolicit {
                target_addr: peer(),
                source_lladdr: Some(MAC)
            }
        );
        let mut out = vec![0u8; repr.buffer_len()];
        repr.emit(&mut Icmpv6Packet::new_unchecked(&mut out[..]), &src, &dst)
            .unwrap();
        assert_eq!(out, b);
    }

    #[test]
    fn neighbor_advertisement_round_trip() {
        let repr = Icmpv6Repr::NeighborAdvert {
            router_flag: true,
            solicited_flag: true,
            override_flag: false,
            target_addr: peer(),
            target_lladdr: Some(EthernetAddress([2, 0, 0, 0, 0, 2])),
        };
        assert_eq!(repr.buffer_len(), 32);
        let mut out = [0xEEu8; 32];
        let mut p = Icmpv6Packet::new_unchecked(&mut out[..]);
        repr.emit(&mut p, &peer(), &host()).unwrap();
        assert!(p.router_flag() && p.solicited_flag() && !p.override_flag());
        assert_eq!(p.rest_of_header(), 0xC000_0000);
        assert!(p.verify_checksum(&peer(), &host()));
        let p = Icmpv6Packet::new_checked(&out[..]).unwrap();
        assert_eq!(Icmpv6Repr::parse(&p, &peer(), &host()).unwrap(), repr);

        // Without the option.
        let bare = Icmpv6Repr::NeighborAdvert {
            router_flag: false,
            solicited_flag: false,
            override_flag: true,
            target_addr: peer(),
            target_lladdr: None,
        };
        let mut out = vec![0u8; bare.buffer_len()];
        assert_eq!(out.len(), 24);
        bare.emit(
            &mut Icmpv6Packet::new_unchecked(&mut out[..]),
            &peer(),
            &host(),
        )
        .unwrap();
        let p = Icmpv6Packet::new_checked(&out[..]).unwrap();
        assert_eq!(Icmpv6Repr::parse(&p, &peer(), &host()).unwrap(), bare);
    }

    /// Re-fills the checksum of an NS fixture after an edit.
    fn refill(b: &mut [u8], src: &Ipv6Addr, dst: &Ipv6Addr) {
        Icmpv6Packet::new_unchecked(b).fill_checksum(src, dst);
    }

    #[test]
    fn ndisc_validation() {
        let (b, src, dst) = ns_fixture();
        fn parse(b: &[u8]) -> Result<Icmpv6Repr<'_>, WireError> {
            let (src, dst) = (host(), solicited_node_multicast(&peer()));
            let p = Icmpv6Packet::new_checked(b).unwrap();
            Icmpv6Repr::parse(&p, &src, &dst)
        }
        // Zero-length option.
        let mut z = b.clone();
        z[25] = 0;
        refill(&mut z, &src, &dst);
        assert_eq!(parse(&z).unwrap_err(), WireError::Malformed);
        // Option longer than the message.
        let mut t = b.clone();
        t[25] = 2;
        refill(&mut t, &src, &dst);
        assert_eq!(parse(&t).unwrap_err(), WireError::Truncated);
        // A single stray byte of options.
        let mut s = b[..25].to_vec();
        refill(&mut s, &src, &dst);
        assert_eq!(parse(&s).unwrap_err(), WireError::Truncated);
        // Non-zero code.
        let mut c = b.clone();
        c[1] = 1;
        refill(&mut c, &src, &dst);
        assert_eq!(parse(&c).unwrap_err(), WireError::Malformed);
        // Multicast target.
        let mut m = b.clone();
        m[8] = 0xff;
        refill(&mut m, &src, &dst);
        assert_eq!(parse(&m).unwrap_err(), WireError::Malformed);
        // An unknown option (type 14, nonce) first is skipped; no options at all is fine.
        let mut u = b[..24].to_vec();
        u.extend_from_slice(&[14, 1, 1, 2, 3, 4, 5, 6]);
        u.extend_from_slice(&b[24..]);
        refill(&mut u, &src, &dst);
        assert_eq!(
            parse(&u).unwrap(),
            Icmpv6Repr::NeighborSolicit {
                target_addr: peer(),
                source_lladdr: Some(MAC)
            }
        );
        let mut n = b[..24].to_vec();
        refill(&mut n, &src, &dst);
        assert_eq!(
            parse(&n).unwrap(),
            Icmpv6Repr::NeighborSolicit {
                target_addr: peer(),
                source_lladdr: None
            }
        );
        // Bad checksum.
        let mut k = b.clone();
        k[30] ^= 1;
        assert_eq!(parse(&k).unwrap_err(), WireError::BadChecksum);
    }

    #[test]
    fn truncated_prefixes_rejected() {
        let (b, ..) = ns_fixture();
        for n in 0..NDISC_HEADER_LEN {
            assert_eq!(
                Icmpv6Packet::new_checked(&b[..n]).unwrap_err(),
                WireError::Truncated,
                "prefix {n}"
            );
        }
        // An echo needs only 8 bytes.
        let echo = [128u8, 0, 0, 0, 0, 1, 0, 1];
        assert!(Icmpv6Packet::new_checked(&echo[..]).is_ok());
        let p = Icmpv6Packet::new_checked(&echo[..]).unwrap();
        assert_eq!(p.target_addr(), None);
        assert!(p.ndisc_options().is_empty());
        assert!(p.payload().is_empty());
    }

    #[test]
    fn echo_round_trip() {
        let req = Icmpv6Repr::EchoRequest {
            ident: 1,
            seq_no: 2,
            data: b"hello",
        };
        let mut out = vec![0u8; req.buffer_len()];
        req.emit(
            &mut Icmpv6Packet::new_unchecked(&mut out[..]),
            &host(),
            &peer(),
        )
        .unwrap();
        let p = Icmpv6Packet::new_checked(&out[..]).unwrap();
        assert_eq!((p.echo_ident(), p.echo_seq_no()), (1, 2));
        assert_eq!(Icmpv6Repr::parse(&p, &host(), &peer()).unwrap(), req);
        let reply = Icmpv6Repr::EchoReply {
            ident: 1,
            seq_no: 2,
            data: b"hello",
        };
        reply
            .emit(
                &mut Icmpv6Packet::new_unchecked(&mut out[..]),
                &peer(),
                &host(),
            )
            .unwrap();
        let p = Icmpv6Packet::new_checked(&out[..]).unwrap();
        assert_eq!(Icmpv6Repr::parse(&p, &peer(), &host()).unwrap(), reply);
        let mut short = [0u8; 12];
        assert_eq!(
            reply.emit(
                &mut Icmpv6Packet::new_unchecked(&mut short[..]),
                &peer(),
                &host()
            ),
            Err(WireError::Truncated)
        );
    }

    /// A 1500-byte IPv6/UDP packet.
    fn big_original() -> Vec<u8> {
        let src: Ipv6Addr = "2001:db8::10".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8:1::20".parse().unwrap();
        let r = Ipv6Repr::new(src, dst, IpProtocol::Udp, 1460, 1);
        let mut b = vec![0u8; 1500];
        let mut p = Ipv6Packet::new_unchecked(&mut b[..]);
        r.emit(&mut p).unwrap();
        for (i, byte) in p.payload_mut().iter_mut().enumerate() {
            *byte = i as u8;
        }
        b
    }

    #[test]
    fn errors_quote_up_to_1280_bytes() {
        let orig = big_original();
        let ip = Ipv6Packet::new_checked(&orig[..]).unwrap();
        assert_eq!(Icmpv6Repr::quote_len(&ip), 1232);
        let quote = Icmpv6Repr::quote(&ip);
        let router: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let src = ip.src_addr();
        for repr in [
            Icmpv6Repr::PacketTooBig { mtu: 1400, quote },
            Icmpv6Repr::TimeExceeded {
                reason: Icmpv6TimeExceeded::HopLimitExceeded,
                quote,
            },
            Icmpv6Repr::DstUnreachable {
                reason: Icmpv6DstUnreachable::NoRoute,
                quote,
            },
        ] {
            // The whole error packet, IPv6 header included, is exactly 1280 bytes.
            let ip_repr = Ipv6Repr::new(router, src, IpProtocol::Icmpv6, repr.buffer_len(), 64);
            assert_eq!(
                ip_repr.buffer_len() + repr.buffer_len(),
                ICMPV6_ERROR_MAX_LEN
            );
            let mut out = vec![0u8; ICMPV6_ERROR_MAX_LEN];
            let mut op = Ipv6Packet::new_unchecked(&mut out[..]);
            ip_repr.emit(&mut op).unwrap();
            let mut icmp = Icmpv6Packet::new_unchecked(op.payload_mut());
            repr.emit(&mut icmp, &router, &src).unwrap();
            assert!(icmp.msg_type().is_error());
            let op = Ipv6Packet::new_checked(&out[..]).unwrap();
            let icmp = Icmpv6Packet::new_checked(op.payload()).unwrap();
            assert_eq!(Icmpv6Repr::parse(&icmp, &router, &src).unwrap(), repr);
            if let Icmpv6Repr::PacketTooBig { .. } = repr {
                assert_eq!(icmp.mtu(), 1400);
            }
        }
        // A small original is quoted whole, padding excluded.
        let mut small = big_original()[..48].to_vec();
        small[4..6].copy_from_slice(&8u16.to_be_bytes());
        small.extend_from_slice(&[0; 6]);
        let ip = Ipv6Packet::new_checked(&small[..]).unwrap();
        assert_eq!(Icmpv6Repr::quote(&ip), &small[..48]);
    }

    #[test]
    fn parse_rejects_short_quotes_and_unsupported_types() {
        let mut b = vec![3u8, 0, 0, 0, 0, 0, 0, 0];
        b.extend_from_slice(&[0x60; 39]);
        refill(&mut b, &host(), &peer());
        let p = Icmpv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(
            Icmpv6Repr::parse(&p, &host(), &peer()).unwrap_err(),
            WireError::Truncated
        );
        let mut b = vec![133u8, 0, 0, 0, 0, 0, 0, 0];
        refill(&mut b, &host(), &peer());
        let p = Icmpv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.msg_type(), Icmpv6Message::RouterSolicit);
        assert_eq!(
            Icmpv6Repr::parse(&p, &host(), &peer()).unwrap_err(),
            WireError::Unsupported
        );
    }

    #[test]
    fn setters() {
        let (mut b, src, dst) = ns_fixture();
        let mut p = Icmpv6Packet::new_checked(&mut b[..]).unwrap();
        p.set_msg_type(Icmpv6Message::NeighborAdvert);
        p.set_neighbor_flags(false, true, true);
        p.set_target_addr(host());
        p.ndisc_options_mut()[0] = NDISC_OPT_TARGET_LLADDR;
        p.fill_checksum(&src, &dst);
        assert!(p.verify_checksum(&src, &dst));
        assert!(!p.router_flag() && p.solicited_flag() && p.override_flag());
        assert_eq!(p.target_addr(), Some(host()));
        p.set_echo_ident(0x0102);
        p.set_echo_seq_no(0x0304);
        assert_eq!(p.rest_of_header(), 0x0102_0304);
        p.set_mtu(9000);
        assert_eq!((p.mtu(), p.pointer()), (9000, 9000));
        p.set_msg_code(3);
        assert_eq!(p.msg_code(), 3);
        p.set_checksum(0xAAAA);
        assert_eq!(p.checksum(), 0xAAAA);
        p.payload_mut()[0] = 0;
        let _ = p.into_inner();
    }

    #[test]
    fn matches_etherparse() {
        use etherparse::icmpv6::{Icmpv6PayloadSlice, NdpOptionSlice};
        let (src, dst) = (host(), peer());
        let builder = etherparse::PacketBuilder::ipv6(src.octets(), dst.octets(), 64)
            .icmpv6_echo_request(77, 88);
        let mut out = Vec::new();
        builder.write(&mut out, b"etherparse").unwrap();
        let ip = Ipv6Packet::new_checked(&out[..]).unwrap();
        assert_eq!(ip.upper_layer().unwrap(), (IpProtocol::Icmpv6, 0, None));
        let p = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert!(p.verify_checksum(&src, &dst));
        assert_eq!(
            Icmpv6Repr::parse(&p, &src, &dst).unwrap(),
            Icmpv6Repr::EchoRequest {
                ident: 77,
                seq_no: 88,
                data: b"etherparse"
            }
        );

        // Our NS and NA, read by etherparse.
        let (ns, ns_src, ns_dst) = ns_fixture();
        let slice = etherparse::Icmpv6Slice::from_slice(&ns).unwrap();
        assert!(slice.is_checksum_valid(ns_src.octets(), ns_dst.octets()));
        let Ok(Icmpv6PayloadSlice::NeighborSolicitation(ns_payload)) = slice.payload_slice() else {
            panic!("etherparse did not read a neighbor solicitation");
        };
        assert_eq!(ns_payload.target_address(), peer());
        let options: Vec<_> = ns_payload.options_iterator().collect();
        assert_eq!(options.len(), 1);
        let Ok(NdpOptionSlice::SourceLinkLayerAddress(opt)) = &options[0] else {
            panic!("no source link-layer address option: {options:?}");
        };
        assert_eq!(opt.link_layer_address(), &MAC.0);

        let na = Icmpv6Repr::NeighborAdvert {
            router_flag: false,
            solicited_flag: true,
            override_flag: true,
            target_addr: peer(),
            target_lladdr: Some(MAC),
        };
        let mut out = vec![0u8; na.buffer_len()];
        na.emit(&mut Icmpv6Packet::new_unchecked(&mut out[..]), &dst, &src)
            .unwrap();
        let slice = etherparse::Icmpv6Slice::from_slice(&out).unwrap();
        assert!(slice.is_checksum_valid(dst.octets(), src.octets()));
        assert_eq!(
            slice.icmp_type(),
            etherparse::Icmpv6Type::NeighborAdvertisement(
                etherparse::icmpv6::NeighborAdvertisementHeader {
                    router: false,
                    solicited: true,
                    r#override: true
                }
            )
        );
    }

    proptest! {
        #[test]
        fn getters_never_panic(mut data in proptest::collection::vec(any::<u8>(), 0..64),
                               kind in prop::sample::select(vec![1u8, 2, 3, 128, 129, 135, 136, 137, 200])) {
            if !data.is_empty() {
                data[0] = kind;
            }
            let (src, dst) = (host(), peer());
            if let Ok(p) = Icmpv6Packet::new_checked(&data[..]) {
                let _ = (p.msg_type(), p.msg_code(), p.checksum(), p.rest_of_header(), p.echo_ident());
                let _ = (p.echo_seq_no(), p.mtu(), p.pointer(), p.router_flag(), p.solicited_flag());
                let _ = (p.override_flag(), p.target_addr(), p.ndisc_options(), p.payload());
                let _ = p.verify_checksum(&src, &dst);
            }
            let mut fixed = data.clone();
            if Icmpv6Packet::new_checked(&fixed[..]).is_ok() {
                refill(&mut fixed, &src, &dst);
                let p = Icmpv6Packet::new_checked(&fixed[..]).unwrap();
                if let Ok(repr) = Icmpv6Repr::parse(&p, &src, &dst) {
                    let mut out = vec![0u8; repr.buffer_len()];
                    repr.emit(&mut Icmpv6Packet::new_unchecked(&mut out[..]), &src, &dst).unwrap();
                    let q = Icmpv6Packet::new_checked(&out[..]).unwrap();
                    prop_assert_eq!(Icmpv6Repr::parse(&q, &src, &dst).unwrap(), repr);
                }
            }
        }
    }
}
