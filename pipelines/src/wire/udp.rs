//! UDP (RFC 768).
//!
//! The view's buffer is the IP payload; `new_checked` validates the UDP length against it and
//! `payload()` ends at the UDP length. Checksums go over the pseudo-header of either family
//! ([`PseudoHeaderAddr`]): over IPv4 a checksum of 0 means "none" and always verifies; over
//! IPv6 it is invalid (RFC 8200 §8.1).

use super::checksum::{self, PseudoHeaderAddr};
use super::{read_u16, write_u16, IpProtocol, WireError};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
    pub const PAYLOAD: usize = 8;
}

/// Length of the UDP header.
pub const UDP_HEADER_LEN: usize = field::PAYLOAD;

/// A view of a UDP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps a buffer without checking it.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Wraps a buffer and checks it (see [`check_len`](Self::check_len)).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// `Truncated` if shorter than 8 bytes; `BadTotalLength` if the length field is below 8
    /// or beyond the buffer.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < UDP_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let udp_len = usize::from(self.len());
        if udp_len < UDP_HEADER_LEN || udp_len > len {
            return Err(WireError::BadTotalLength);
        }
        Ok(())
    }

    /// The underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Length field (header plus payload).
    #[inline]
    pub fn len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Whether the payload is empty (length field 8).
    #[inline]
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= UDP_HEADER_LEN
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The payload, up to the length field.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..usize::from(self.len())]
    }

    /// Whether the checksum is correct for these pseudo-header addresses. Over IPv4, a
    /// checksum of 0 ("none") verifies; over IPv6 it does not.
    #[inline]
    pub fn verify_checksum<A: PseudoHeaderAddr>(&self, src_addr: &A, dst_addr: &A) -> bool {
        if self.checksum() == 0 {
            return !A::IS_IPV6;
        }
        let len = self.len();
        let datagram = &self.buffer.as_ref()[..usize::from(len)];
        let pseudo = A::pseudo_header_sum(src_addr, dst_addr, IpProtocol::Udp, u32::from(len));
        checksum::add(pseudo, checksum::sum(datagram)) == 0xFFFF
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the source port (checksum untouched).
    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT, port);
    }

    /// Sets the destination port (checksum untouched).
    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT, port);
    }

    /// Sets the length field. Check the view again before reading it.
    #[inline]
    pub fn set_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, len);
    }

    /// Sets the checksum field (0 disables it over IPv4).
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Computes and writes the checksum; a computed 0 is written as `0xFFFF`.
    #[inline]
    pub fn fill_checksum<A: PseudoHeaderAddr>(&mut self, src_addr: &A, dst_addr: &A) {
        self.set_checksum(0);
        let len = self.len();
        let pseudo = A::pseudo_header_sum(src_addr, dst_addr, IpProtocol::Udp, u32::from(len));
        let datagram = &self.buffer.as_ref()[..usize::from(len)];
        let sum = !checksum::add(pseudo, checksum::sum(datagram));
        self.set_checksum(if sum == 0 { 0xFFFF } else { sum });
    }

    /// Mutable payload (up to the length field).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        &mut self.buffer.as_mut()[field::PAYLOAD..end]
    }
}

/// A UDP header to build or after parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Payload length in bytes.
    pub payload_len: usize,
}

impl UdpRepr {
    /// Reads a datagram and verifies its checksum (`BadChecksum`) for these addresses.
    pub fn parse<T: AsRef<[u8]>, A: PseudoHeaderAddr>(
        packet: &UdpPacket<T>,
        src_addr: &A,
        dst_addr: &A,
    ) -> Result<Self, WireError> {
        packet.check_len()?;
        if !packet.verify_checksum(src_addr, dst_addr) {
            return Err(WireError::BadChecksum);
        }
        Ok(UdpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            payload_len: packet.payload().len(),
        })
    }

    /// Header plus payload length.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        UDP_HEADER_LEN + self.payload_len
    }

    /// Writes the header with checksum 0. Write the payload into `payload_mut()`, then call
    /// `fill_checksum` unless a zero checksum is wanted (e.g. VXLAN over IPv4, RFC 7348).
    /// `Truncated` if the buffer cannot hold the datagram; `BadTotalLength` above 65535 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut UdpPacket<T>,
    ) -> Result<(), WireError> {
        let len = u16::try_from(self.buffer_len()).map_err(|_| WireError::BadTotalLength)?;
        if packet.buffer.as_ref().len() < self.buffer_len() {
            return Err(WireError::Truncated);
        }
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len(len);
        packet.set_checksum(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    fn v4() -> (Ipv4Addr, Ipv4Addr) {
        (Ipv4Addr::new(192, 168, 1, 1), Ipv4Addr::new(192, 168, 1, 2))
    }

    fn v6() -> (Ipv6Addr, Ipv6Addr) {
        (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        )
    }

    /// A DNS-ish datagram 1234 -> 53 with 4 bytes of payload; checksum for v4().
    fn fixture() -> Vec<u8> {
        let mut b = vec![
            0x04, 0xd2, 0x00, 0x35, 0x00, 0x0c, 0x00, 0x00, 0xde, 0xad, 0xbe, 0xef,
        ];
        let (s, d) = v4();
        UdpPacket::new_unchecked(&mut b[..]).fill_checksum(&s, &d);
        b
    }

    #[test]
    fn parse_fixture() {
        let b = fixture();
        let (s, d) = v4();
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.src_port(), 1234);
        assert_eq!(p.dst_port(), 53);
        assert_eq!(p.len(), 12);
        assert!(!p.is_empty());
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert!(p.verify_checksum(&s, &d));
        assert!(!p.verify_checksum(&d, &Ipv4Addr::new(1, 1, 1, 1)));
        let r = UdpRepr::parse(&p, &s, &d).unwrap();
        assert_eq!(
            r,
            UdpRepr {
                src_port: 1234,
                dst_port: 53,
                payload_len: 4
            }
        );
    }

    #[test]
    fn emit_round_trip_v4_and_v6() {
        let r = UdpRepr {
            src_port: 40000,
            dst_port: 4789,
            payload_len: 5,
        };
        let mut buf = vec![0xEEu8; r.buffer_len()];
        let mut p = UdpPacket::new_unchecked(&mut buf[..]);
        r.emit(&mut p).unwrap();
        assert_eq!(p.checksum(), 0);
        p.payload_mut().copy_from_slice(b"hello");
        let (s4, d4) = v4();
        assert!(
            p.verify_checksum(&s4, &d4),
            "zero checksum over IPv4 means none"
        );
        let (s6, d6) = v6();
        assert!(
            !p.verify_checksum(&s6, &d6),
            "zero checksum over IPv6 is invalid"
        );
        p.fill_checksum(&s6, &d6);
        assert!(p.verify_checksum(&s6, &d6));
        assert_eq!(UdpRepr::parse(&p, &s6, &d6).unwrap(), r);
        assert_eq!(
            UdpRepr::parse(&p, &d6, &d6).unwrap_err(),
            WireError::BadChecksum
        );
        let mut short = [0u8; 12];
        assert_eq!(
            r.emit(&mut UdpPacket::new_unchecked(&mut short[..])),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn zero_sum_is_sent_as_ffff() {
        // Find a payload word that makes the computed checksum 0.
        let (s, d) = v4();
        let mut b = vec![0x00, 0x07, 0x00, 0x07, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x00];
        let pseudo = checksum::pseudo_header_v4(&s, &d, IpProtocol::Udp, 10);
        let rest = checksum::add(pseudo, checksum::sum(&b));
        b[8..10].copy_from_slice(&(!rest).to_be_bytes());
        let mut p = UdpPacket::new_checked(&mut b[..]).unwrap();
        p.fill_checksum(&s, &d);
        assert_eq!(p.checksum(), 0xFFFF);
        assert!(p.verify_checksum(&s, &d));
    }

    #[test]
    fn zero_length_payload_and_padding() {
        let b = [0, 1, 0, 2, 0, 8, 0, 0, 0xAA, 0xAA];
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        assert!(p.payload().is_empty());
        assert!(p.is_empty());
    }

    #[test]
    fn truncated_and_bad_lengths_rejected() {
        let b = fixture();
        for n in 0..b.len() {
            assert!(UdpPacket::new_checked(&b[..n]).is_err(), "prefix {n}");
        }
        assert_eq!(
            UdpPacket::new_checked(&b[..7]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            UdpPacket::new_checked(&b[..11]).unwrap_err(),
            WireError::BadTotalLength
        );
        let mut bad = b.clone();
        bad[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(
            UdpPacket::new_checked(&bad[..]).unwrap_err(),
            WireError::BadTotalLength
        );
    }

    #[test]
    fn setters() {
        let mut b = fixture();
        let (s, d) = v4();
        let mut p = UdpPacket::new_checked(&mut b[..]).unwrap();
        p.set_src_port(1);
        p.set_dst_port(2);
        assert!(!p.verify_checksum(&s, &d));
        p.fill_checksum(&s, &d);
        assert!(p.verify_checksum(&s, &d));
        assert_eq!((p.src_port(), p.dst_port()), (1, 2));
        p.set_len(100);
        assert!(p.check_len().is_err());
        let _ = p.into_inner();
    }

    #[test]
    fn incremental_port_and_address_rewrite() {
        // NAT-style rewrite, checked against a full recomputation.
        let mut b = fixture();
        let (s, d) = v4();
        let new_src = Ipv4Addr::new(100, 64, 0, 9);
        let mut p = UdpPacket::new_checked(&mut b[..]).unwrap();
        let mut sum = checksum::update_u16(p.checksum(), p.src_port(), 61000);
        sum = checksum::update_u32(sum, u32::from(s), u32::from(new_src));
        p.set_src_port(61000);
        p.set_checksum(sum);
        assert!(p.verify_checksum(&new_src, &d));
    }

    #[test]
    fn matches_etherparse() {
        let (s, d) = v4();
        let builder =
            etherparse::PacketBuilder::ethernet2([1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12])
                .ipv4(s.octets(), d.octets(), 20)
                .udp(21, 1234);
        let payload = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        let mut frame = Vec::new();
        builder.write(&mut frame, &payload).unwrap();
        let p = UdpPacket::new_checked(&frame[34..]).unwrap();
        let ep = etherparse::UdpHeaderSlice::from_slice(&frame[34..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (21, 1234));
        assert_eq!(p.len(), ep.length());
        assert_eq!(p.checksum(), ep.checksum());
        assert!(p.verify_checksum(&s, &d));
        assert_eq!(p.payload(), &payload);

        let (s6, d6) = v6();
        let builder = etherparse::PacketBuilder::ipv6(s6.octets(), d6.octets(), 64).udp(5000, 6000);
        let mut packet = Vec::new();
        builder.write(&mut packet, &payload).unwrap();
        let mut p = UdpPacket::new_checked(&mut packet[40..]).unwrap();
        assert!(p.verify_checksum(&s6, &d6));
        let theirs = p.checksum();
        p.fill_checksum(&s6, &d6);
        assert_eq!(p.checksum(), theirs);
    }

    proptest! {
        #[test]
        fn getters_never_panic(data in proptest::collection::vec(any::<u8>(), 0..40), len in 0u16..48) {
            let mut data = data;
            if data.len() >= 6 {
                data[4..6].copy_from_slice(&len.to_be_bytes());
            }
            if let Ok(p) = UdpPacket::new_checked(&data[..]) {
                let _ = (p.src_port(), p.dst_port(), p.len(), p.is_empty(), p.checksum(), p.payload());
                let (s, d) = v4();
                let _ = p.verify_checksum(&s, &d);
                let (s, d) = v6();
                let _ = p.verify_checksum(&s, &d);
            }
        }

        #[test]
        fn fill_then_verify(payload in proptest::collection::vec(any::<u8>(), 0..64), sp in any::<u16>(), dp in any::<u16>(),
                            s in any::<u128>(), d in any::<u128>()) {
            let r = UdpRepr { src_port: sp, dst_port: dp, payload_len: payload.len() };
            let mut buf = vec![0u8; r.buffer_len()];
            let mut p = UdpPacket::new_unchecked(&mut buf[..]);
            r.emit(&mut p).unwrap();
            prop_assert!(p.check_len().is_ok());
            p.payload_mut().copy_from_slice(&payload);
            let (s, d) = (Ipv6Addr::from(s), Ipv6Addr::from(d));
            p.fill_checksum(&s, &d);
            prop_assert!(p.checksum() != 0);
            prop_assert_eq!(UdpRepr::parse(&p, &s, &d).unwrap(), r);
        }
    }
}
