//! ICMP for IPv4 (RFC 792, RFC 1191 for "fragmentation needed").
//!
//! The view's buffer is the whole ICMP message (the IPv4 payload): the checksum covers all
//! of it. `Icmpv4Repr` models echo request/reply and the two errors the dataplane sends
//! (destination unreachable, time exceeded). Errors quote the offending packet's IPv4 header
//! and the first 8 bytes of its payload as raw bytes ([`Icmpv4Repr::quote`]), so options and
//! the original checksum are reproduced exactly.

use super::checksum;
use super::ipv4::Ipv4Packet;
use super::{read_u16, read_u32, write_bytes, write_u16, write_u32, WireError};

enum_with_unknown! {
    /// ICMPv4 message type.
    pub enum Icmpv4Message(u8) {
        /// Echo reply (0).
        EchoReply = 0,
        /// Destination unreachable (3).
        DstUnreachable = 3,
        /// Source quench, deprecated (4).
        SourceQuench = 4,
        /// Redirect (5).
        Redirect = 5,
        /// Echo request (8).
        EchoRequest = 8,
        /// Router advertisement (9).
        RouterAdvert = 9,
        /// Router solicitation (10).
        RouterSolicit = 10,
        /// Time exceeded (11).
        TimeExceeded = 11,
        /// Parameter problem (12).
        ParamProblem = 12,
        /// Timestamp (13).
        Timestamp = 13,
        /// Timestamp reply (14).
        TimestampReply = 14,
    }
}

impl Icmpv4Message {
    /// Whether this is an error message (no ICMP error may be sent in response to one,
    /// RFC 1812 §4.3.2.7).
    #[inline]
    pub fn is_error(self) -> bool {
        matches!(
            self,
            Icmpv4Message::DstUnreachable
                | Icmpv4Message::SourceQuench
                | Icmpv4Message::Redirect
                | Icmpv4Message::TimeExceeded
                | Icmpv4Message::ParamProblem
        )
    }
}

enum_with_unknown! {
    /// Destination unreachable codes (RFC 792, RFC 1812).
    pub enum Icmpv4DstUnreachable(u8) {
        /// Network unreachable (0).
        NetUnreachable = 0,
        /// Host unreachable (1).
        HostUnreachable = 1,
        /// Protocol unreachable (2).
        ProtoUnreachable = 2,
        /// Port unreachable (3).
        PortUnreachable = 3,
        /// Fragmentation needed and DF set (4); carries the next-hop MTU (RFC 1191).
        FragRequired = 4,
        /// Source route failed (5).
        SrcRouteFailed = 5,
        /// Destination network unknown (6).
        DstNetUnknown = 6,
        /// Destination host unknown (7).
        DstHostUnknown = 7,
        /// Source host isolated (8).
        SrcHostIsolated = 8,
        /// Network administratively prohibited (9).
        NetProhibited = 9,
        /// Host administratively prohibited (10).
        HostProhibited = 10,
        /// Network unreachable for TOS (11).
        NetUnreachToS = 11,
        /// Host unreachable for TOS (12).
        HostUnreachToS = 12,
        /// Communication administratively prohibited (13).
        CommProhibited = 13,
        /// Host precedence violation (14).
        HostPrecedViol = 14,
        /// Precedence cutoff in effect (15).
        PrecedCutoff = 15,
    }
}

enum_with_unknown! {
    /// Time exceeded codes.
    pub enum Icmpv4TimeExceeded(u8) {
        /// TTL expired in transit (0).
        TtlExpired = 0,
        /// Fragment reassembly time exceeded (1).
        FragExpired = 1,
    }
}

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    /// The 4 "rest of header" bytes: echo ident/seq, unused, or unused + next-hop MTU.
    pub const REST: usize = 4;
    pub const ECHO_IDENT: usize = 4;
    pub const ECHO_SEQNO: usize = 6;
    pub const NEXT_HOP_MTU: usize = 6;
    pub const PAYLOAD: usize = 8;
}

/// Length of the ICMPv4 header (type, code, checksum, 4 bytes of rest-of-header).
pub const ICMPV4_HEADER_LEN: usize = field::PAYLOAD;

/// How many bytes of the offending datagram's payload an ICMPv4 error quotes (RFC 792).
pub const ICMPV4_QUOTE_PAYLOAD_LEN: usize = 8;

/// A view of an ICMPv4 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Wraps a buffer without checking it.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Icmpv4Packet { buffer }
    }

    /// Wraps a buffer and checks it (see [`check_len`](Self::check_len)).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// `Truncated` if shorter than the 8-byte header.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < ICMPV4_HEADER_LEN {
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
    pub fn msg_type(&self) -> Icmpv4Message {
        Icmpv4Message::from(self.buffer.as_ref()[field::TYPE])
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

    /// Next-hop MTU (destination unreachable, code 4; RFC 1191).
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::NEXT_HOP_MTU)
    }

    /// Everything after the 8-byte header: echo data, or the quoted datagram of an error.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }

    /// Whether the checksum over the whole buffer is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::sum(self.buffer.as_ref()) == 0xFFFF
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    /// Sets the message type.
    #[inline]
    pub fn set_msg_type(&mut self, value: Icmpv4Message) {
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

    /// Sets the 4 bytes after the checksum.
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

    /// Sets the next-hop MTU.
    #[inline]
    pub fn set_next_hop_mtu(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::NEXT_HOP_MTU, value);
    }

    /// Computes and writes the checksum over the whole buffer.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(sum);
    }

    /// Mutable payload.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// An ICMPv4 message to build or after parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Icmpv4Repr<'a> {
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
        reason: Icmpv4DstUnreachable,
        /// Next-hop MTU for `FragRequired`; written as 0 and read as 0 for other codes.
        next_hop_mtu: u16,
        /// The offending datagram's IPv4 header and leading payload ([`Icmpv4Repr::quote`]).
        quote: &'a [u8],
    },
    /// Time exceeded.
    TimeExceeded {
        /// Code.
        reason: Icmpv4TimeExceeded,
        /// The offending datagram's IPv4 header and leading payload ([`Icmpv4Repr::quote`]).
        quote: &'a [u8],
    },
}

impl<'a> Icmpv4Repr<'a> {
    /// How many bytes of `original` an error about it quotes: its header (options included)
    /// and the first 8 bytes of its payload, or less if the datagram is shorter (RFC 792).
    #[inline]
    pub fn quote_len<T: AsRef<[u8]>>(original: &Ipv4Packet<T>) -> usize {
        let len = usize::from(original.header_len()) + ICMPV4_QUOTE_PAYLOAD_LEN;
        len.min(original.packet().len())
    }

    /// The bytes of `original` an error about it quotes (see [`quote_len`](Self::quote_len)).
    #[inline]
    pub fn quote<T: AsRef<[u8]>>(original: &Ipv4Packet<T>) -> &[u8] {
        &original.packet()[..Self::quote_len(original)]
    }

    /// Reads a message from a view over a shared buffer; the result borrows its data.
    /// Checks the checksum (`BadChecksum`), a zero code for echo messages (`Malformed`), that
    /// an error quotes at least an IPv4 header (`Truncated`); other message types are
    /// `Unsupported`.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Icmpv4Packet<&'a T>) -> Result<Self, WireError> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(WireError::BadChecksum);
        }
        let buffer: &'a T = packet.buffer;
        let data: &'a [u8] = &buffer.as_ref()[field::PAYLOAD..];
        let code = packet.msg_code();
        match packet.msg_type() {
            Icmpv4Message::EchoRequest | Icmpv4Message::EchoReply if code != 0 => {
                Err(WireError::Malformed)
            }
            Icmpv4Message::EchoRequest => Ok(Icmpv4Repr::EchoRequest {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            }),
            Icmpv4Message::EchoReply => Ok(Icmpv4Repr::EchoReply {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            }),
            Icmpv4Message::DstUnreachable | Icmpv4Message::TimeExceeded
                if data.len() < super::IPV4_HEADER_LEN =>
            {
                Err(WireError::Truncated)
            }
            Icmpv4Message::DstUnreachable => {
                let reason = Icmpv4DstUnreachable::from(code);
                let next_hop_mtu = if reason == Icmpv4DstUnreachable::FragRequired {
                    packet.next_hop_mtu()
                } else {
                    0
                };
                Ok(Icmpv4Repr::DstUnreachable {
                    reason,
                    next_hop_mtu,
                    quote: data,
                })
            }
            Icmpv4Message::TimeExceeded => Ok(Icmpv4Repr::TimeExceeded {
                reason: Icmpv4TimeExceeded::from(code),
                quote: data,
            }),
            _ => Err(WireError::Unsupported),
        }
    }

    /// Message length: 8 plus data or quote.
    #[inline]
    pub fn buffer_len(&self) -> usize {
        ICMPV4_HEADER_LEN
            + match self {
                Icmpv4Repr::EchoRequest { data, .. } | Icmpv4Repr::EchoReply { data, .. } => {
                    data.len()
                }
                Icmpv4Repr::DstUnreachable { quote, .. }
                | Icmpv4Repr::TimeExceeded { quote, .. } => quote.len(),
            }
    }

    /// Writes the message and fills the checksum over the whole buffer, which should be
    /// exactly `buffer_len()` bytes (the IPv4 payload). `Truncated` if it is shorter.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Icmpv4Packet<T>,
    ) -> Result<(), WireError> {
        if packet.buffer.as_ref().len() < self.buffer_len() {
            return Err(WireError::Truncated);
        }
        let (msg_type, code, rest, body): (Icmpv4Message, u8, u32, &[u8]) = match *self {
            Icmpv4Repr::EchoRequest {
                ident,
                seq_no,
                data,
            } => (
                Icmpv4Message::EchoRequest,
                0,
                (u32::from(ident) << 16) | u32::from(seq_no),
                data,
            ),
            Icmpv4Repr::EchoReply {
                ident,
                seq_no,
                data,
            } => (
                Icmpv4Message::EchoReply,
                0,
                (u32::from(ident) << 16) | u32::from(seq_no),
                data,
            ),
            Icmpv4Repr::DstUnreachable {
                reason,
                next_hop_mtu,
                quote,
            } => {
                let mtu = if reason == Icmpv4DstUnreachable::FragRequired {
                    next_hop_mtu
                } else {
                    0
                };
                (
                    Icmpv4Message::DstUnreachable,
                    reason.into(),
                    u32::from(mtu),
                    quote,
                )
            }
            Icmpv4Repr::TimeExceeded { reason, quote } => {
                (Icmpv4Message::TimeExceeded, reason.into(), 0, quote)
            }
        };
        packet.set_msg_type(msg_type);
        packet.set_msg_code(code);
        packet.set_rest_of_header(rest);
        write_bytes(packet.buffer.as_mut(), field::PAYLOAD, body);
        packet.fill_checksum();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::IpProtocol;
    use std::net::Ipv4Addr;

    use proptest::prelude::*;

    /// Echo request ident 0x1234 seq 1, data "abcd"; checksum filled by `fixture()`.
    const ECHO: [u8; 12] = [8, 0, 0, 0, 0x12, 0x34, 0x00, 0x01, b'a', b'b', b'c', b'd'];

    fn fixture() -> Vec<u8> {
        let mut b = ECHO.to_vec();
        Icmpv4Packet::new_unchecked(&mut b[..]).fill_checksum();
        b
    }

    /// An IPv4/UDP datagram with options and 12 bytes of payload, as an error would quote it.
    fn original() -> Vec<u8> {
        let mut b = vec![0u8; 24 + 12];
        let mut ip = Ipv4Packet::new_unchecked(&mut b[..]);
        // IHL 6 with a 4-byte option: Ipv4Repr cannot build it, so use the setters.
        ip.set_version(4);
        ip.set_header_len(24);
        ip.set_total_len(36);
        ip.set_ttl(1);
        ip.set_protocol(IpProtocol::Udp);
        ip.set_src_addr(Ipv4Addr::new(10, 0, 0, 1));
        ip.set_dst_addr(Ipv4Addr::new(10, 9, 9, 9));
        ip.options_mut().copy_from_slice(&[1, 1, 1, 0]);
        ip.payload_mut()
            .copy_from_slice(&[0x30, 0x39, 0x00, 0x35, 0x00, 0x0c, 0x00, 0x00, 1, 2, 3, 4]);
        ip.fill_checksum();
        b
    }

    #[test]
    fn parse_echo() {
        let b = fixture();
        let p = Icmpv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.msg_type(), Icmpv4Message::EchoRequest);
        assert_eq!(p.msg_code(), 0);
        assert_eq!(p.echo_ident(), 0x1234);
        assert_eq!(p.echo_seq_no(), 1);
        assert_eq!(p.rest_of_header(), 0x1234_0001);
        assert_eq!(p.payload(), b"abcd");
        assert!(p.verify_checksum());
        assert_eq!(
            Icmpv4Repr::parse(&p).unwrap(),
            Icmpv4Repr::EchoRequest {
                ident: 0x1234,
                seq_no: 1,
                data: b"abcd"
            }
        );
    }

    #[test]
    fn echo_reply_emit_round_trip() {
        let b = fixture();
        let p = Icmpv4Packet::new_checked(&b[..]).unwrap();
        let Icmpv4Repr::EchoRequest {
            ident,
            seq_no,
            data,
        } = Icmpv4Repr::parse(&p).unwrap()
        else {
            panic!("not an echo request");
        };
        let reply = Icmpv4Repr::EchoReply {
            ident,
            seq_no,
            data,
        };
        let mut out = vec![0u8; reply.buffer_len()];
        reply
            .emit(&mut Icmpv4Packet::new_unchecked(&mut out[..]))
            .unwrap();
        let q = Icmpv4Packet::new_checked(&out[..]).unwrap();
        assert!(q.verify_checksum());
        assert_eq!(q.msg_type(), Icmpv4Message::EchoReply);
        assert_eq!(Icmpv4Repr::parse(&q).unwrap(), reply);
        // Only the type byte differs, and the checksum by exactly that (0x0800).
        assert_eq!(&out[4..], &b[4..]);
        assert_eq!(
            checksum::update_u16(p.checksum(), 0x0800, 0x0000),
            q.checksum()
        );
        let mut short = vec![0u8; reply.buffer_len() - 1];
        assert_eq!(
            reply.emit(&mut Icmpv4Packet::new_unchecked(&mut short[..])),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn quote_is_header_plus_eight_bytes() {
        let orig = original();
        let ip = Ipv4Packet::new_checked(&orig[..]).unwrap();
        assert_eq!(Icmpv4Repr::quote_len(&ip), 24 + 8);
        assert_eq!(Icmpv4Repr::quote(&ip), &orig[..32]);
        // A datagram with less than 8 bytes of payload is quoted whole (padding excluded).
        let mut short = orig[..28].to_vec();
        short[2..4].copy_from_slice(&28u16.to_be_bytes());
        short.extend_from_slice(&[0xAA; 10]);
        let ip = Ipv4Packet::new_checked(&short[..]).unwrap();
        assert_eq!(Icmpv4Repr::quote(&ip), &short[..28]);
    }

    #[test]
    fn time_exceeded_and_frag_required() {
        let orig = original();
        let ip = Ipv4Packet::new_checked(&orig[..]).unwrap();
        let quote = Icmpv4Repr::quote(&ip);
        let reprs = [
            Icmpv4Repr::TimeExceeded {
                reason: Icmpv4TimeExceeded::TtlExpired,
                quote,
            },
            Icmpv4Repr::DstUnreachable {
                reason: Icmpv4DstUnreachable::FragRequired,
                next_hop_mtu: 1400,
                quote,
            },
            Icmpv4Repr::DstUnreachable {
                reason: Icmpv4DstUnreachable::PortUnreachable,
                next_hop_mtu: 0,
                quote,
            },
        ];
        for repr in reprs {
            let mut out = vec![0u8; repr.buffer_len()];
            assert_eq!(out.len(), 8 + 32);
            let mut p = Icmpv4Packet::new_unchecked(&mut out[..]);
            repr.emit(&mut p).unwrap();
            assert!(p.verify_checksum());
            assert!(p.msg_type().is_error());
            assert_eq!(p.payload(), quote);
            let p = Icmpv4Packet::new_checked(&out[..]).unwrap();
            assert_eq!(Icmpv4Repr::parse(&p).unwrap(), repr);
        }
        let mut out = [0u8; 40];
        reprs[1]
            .emit(&mut Icmpv4Packet::new_unchecked(&mut out[..]))
            .unwrap();
        let p = Icmpv4Packet::new_checked(&out[..]).unwrap();
        assert_eq!(p.msg_code(), 4);
        assert_eq!(p.next_hop_mtu(), 1400);
        assert_eq!(p.rest_of_header(), 1400);
        // A code other than 4 never carries an MTU.
        let sloppy = Icmpv4Repr::DstUnreachable {
            reason: Icmpv4DstUnreachable::HostUnreachable,
            next_hop_mtu: 999,
            quote,
        };
        sloppy
            .emit(&mut Icmpv4Packet::new_unchecked(&mut out[..]))
            .unwrap();
        assert_eq!(
            Icmpv4Packet::new_checked(&out[..]).unwrap().next_hop_mtu(),
            0
        );
    }

    #[test]
    fn parse_errors() {
        let mut b = fixture();
        b[9] ^= 1;
        let p = Icmpv4Packet::new_checked(&b[..]).unwrap();
        assert!(!p.verify_checksum());
        assert_eq!(Icmpv4Repr::parse(&p).unwrap_err(), WireError::BadChecksum);

        let mut b = ECHO.to_vec();
        b[1] = 1;
        let mut p = Icmpv4Packet::new_checked(&mut b[..]).unwrap();
        p.fill_checksum();
        let p = Icmpv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Icmpv4Repr::parse(&p).unwrap_err(), WireError::Malformed);

        let mut b = vec![11, 0, 0, 0, 0, 0, 0, 0, 0x45, 0, 0, 20];
        Icmpv4Packet::new_unchecked(&mut b[..]).fill_checksum();
        let p = Icmpv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Icmpv4Repr::parse(&p).unwrap_err(), WireError::Truncated);

        let mut b = [13u8, 0, 0, 0, 0, 0, 0, 0];
        Icmpv4Packet::new_unchecked(&mut b[..]).fill_checksum();
        let p = Icmpv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.msg_type(), Icmpv4Message::Timestamp);
        assert_eq!(Icmpv4Repr::parse(&p).unwrap_err(), WireError::Unsupported);
        let mut b = [200u8, 0, 0, 0, 0, 0, 0, 0];
        Icmpv4Packet::new_unchecked(&mut b[..]).fill_checksum();
        let p = Icmpv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.msg_type(), Icmpv4Message::Unknown(200));
    }

    #[test]
    fn zero_length_payload_and_truncation() {
        let mut b = ECHO[..8].to_vec();
        Icmpv4Packet::new_unchecked(&mut b[..]).fill_checksum();
        let p = Icmpv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.payload().is_empty());
        assert!(matches!(
            Icmpv4Repr::parse(&p).unwrap(),
            Icmpv4Repr::EchoRequest { data: &[], .. }
        ));
        for n in 0..8 {
            assert_eq!(
                Icmpv4Packet::new_checked(&ECHO[..n]).unwrap_err(),
                WireError::Truncated
            );
        }
    }

    #[test]
    fn setters() {
        let mut b = fixture();
        let mut p = Icmpv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_msg_type(Icmpv4Message::EchoReply);
        p.set_msg_code(0);
        p.set_echo_ident(7);
        p.set_echo_seq_no(8);
        p.payload_mut()[0] = b'z';
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!((p.echo_ident(), p.echo_seq_no()), (7, 8));
        p.set_next_hop_mtu(1500);
        assert_eq!(p.next_hop_mtu(), 1500);
        p.set_checksum(1);
        assert_eq!(p.checksum(), 1);
        assert_eq!(p.into_inner()[8], b'z');
    }

    #[test]
    fn matches_etherparse() {
        let builder = etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .icmpv4_echo_request(0x4242, 9);
        let mut out = Vec::new();
        builder.write(&mut out, b"ping data").unwrap();
        let ip = Ipv4Packet::new_checked(&out[..]).unwrap();
        assert_eq!(ip.protocol(), IpProtocol::Icmp);
        let p = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(
            Icmpv4Repr::parse(&p).unwrap(),
            Icmpv4Repr::EchoRequest {
                ident: 0x4242,
                seq_no: 9,
                data: b"ping data"
            }
        );

        // Ours, read by etherparse.
        let orig = original();
        let quote = Icmpv4Repr::quote(&Ipv4Packet::new_checked(&orig[..]).unwrap()).to_vec();
        let repr = Icmpv4Repr::DstUnreachable {
            reason: Icmpv4DstUnreachable::FragRequired,
            next_hop_mtu: 1280,
            quote: &quote,
        };
        let mut out = vec![0u8; repr.buffer_len()];
        repr.emit(&mut Icmpv4Packet::new_unchecked(&mut out[..]))
            .unwrap();
        let slice = etherparse::Icmpv4Slice::from_slice(&out).unwrap();
        assert_eq!(
            slice.icmp_type(),
            etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                    next_hop_mtu: 1280
                }
            )
        );
        assert_eq!(
            slice.icmp_type().calc_checksum(slice.payload()),
            slice.checksum()
        );
        assert_eq!(slice.payload(), &quote[..]);
    }

    proptest! {
        #[test]
        fn getters_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(p) = Icmpv4Packet::new_checked(&data[..]) {
                let _ = (p.msg_type(), p.msg_code(), p.checksum(), p.rest_of_header());
                let _ = (p.echo_ident(), p.echo_seq_no(), p.next_hop_mtu(), p.payload(), p.verify_checksum());
                let _ = p.msg_type().is_error();
            }
            // With a correct checksum, parse goes past the checksum test.
            let mut fixed = data.clone();
            if fixed.len() >= 8 {
                Icmpv4Packet::new_unchecked(&mut fixed[..]).fill_checksum();
                let p = Icmpv4Packet::new_checked(&fixed[..]).unwrap();
                if let Ok(repr) = Icmpv4Repr::parse(&p) {
                    let mut out = vec![0u8; repr.buffer_len()];
                    repr.emit(&mut Icmpv4Packet::new_unchecked(&mut out[..])).unwrap();
                    let q = Icmpv4Packet::new_checked(&out[..]).unwrap();
                    prop_assert_eq!(Icmpv4Repr::parse(&q).unwrap(), repr);
                }
            }
        }
    }
}
