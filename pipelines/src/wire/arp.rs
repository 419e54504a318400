//! ARP (RFC 826) for Ethernet hardware and IPv4 protocol addresses only.
//!
//! Other hardware or protocol types are `WireError::Unsupported`; an Ethernet/IPv4 packet
//! whose address lengths are not 6 and 4 is `WireError::Malformed`.

use std::net::Ipv4Addr;

use super::ethernet::{EtherType, EthernetAddress};
use super::{read_array, read_u16, write_bytes, write_u16, WireError};

enum_with_unknown! {
    /// ARP operation code.
    pub enum ArpOperation(u16) {
        /// Who has `target_protocol_addr`? (1)
        Request = 1,
        /// `source_protocol_addr` is at `source_hardware_addr`. (2)
        Reply = 2,
    }
}

/// ARP hardware type for Ethernet.
const HTYPE_ETHERNET: u16 = 1;

mod field {
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const FIXED_END: usize = 8;
    pub const SHA: usize = 8;
    pub const SPA: usize = 14;
    pub const THA: usize = 18;
    pub const TPA: usize = 24;
    pub const END: usize = 28;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const ARP_PACKET_LEN: usize = field::END;

/// A view of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wraps a buffer without checking it.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        ArpPacket { buffer }
    }

    /// Wraps a buffer and checks it (see [`check_len`](Self::check_len)).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// `Truncated` if shorter than the fixed part or than 28 bytes; `Unsupported` unless the
    /// hardware type is Ethernet and the protocol type IPv4; `Malformed` unless the address
    /// lengths are 6 and 4. Trailing bytes (Ethernet padding) are allowed.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let data = self.buffer.as_ref();
        if data.len() < field::FIXED_END {
            return Err(WireError::Truncated);
        }
        if self.hardware_type() != HTYPE_ETHERNET || self.protocol_type() != EtherType::Ipv4 {
            return Err(WireError::Unsupported);
        }
        if self.hardware_len() != 6 || self.protocol_len() != 4 {
            return Err(WireError::Malformed);
        }
        if data.len() < field::END {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// The underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Hardware type (1 for Ethernet).
    #[inline]
    pub fn hardware_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::HTYPE)
    }

    /// Protocol type (IPv4).
    #[inline]
    pub fn protocol_type(&self) -> EtherType {
        EtherType::from(read_u16(self.buffer.as_ref(), field::PTYPE))
    }

    /// Hardware address length (6).
    #[inline]
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    /// Protocol address length (4).
    #[inline]
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// Operation.
    #[inline]
    pub fn operation(&self) -> ArpOperation {
        ArpOperation::from(read_u16(self.buffer.as_ref(), field::OPER))
    }

    /// Sender hardware address.
    #[inline]
    pub fn source_hardware_addr(&self) -> EthernetAddress {
        EthernetAddress(read_array(self.buffer.as_ref(), field::SHA))
    }

    /// Sender protocol address.
    #[inline]
    pub fn source_protocol_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_array::<4>(self.buffer.as_ref(), field::SPA))
    }

    /// Target hardware address.
    #[inline]
    pub fn target_hardware_addr(&self) -> EthernetAddress {
        EthernetAddress(read_array(self.buffer.as_ref(), field::THA))
    }

    /// Target protocol address.
    #[inline]
    pub fn target_protocol_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_array::<4>(self.buffer.as_ref(), field::TPA))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Sets the hardware type.
    #[inline]
    pub fn set_hardware_type(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::HTYPE, value);
    }

    /// Sets the protocol type.
    #[inline]
    pub fn set_protocol_type(&mut self, value: EtherType) {
        write_u16(self.buffer.as_mut(), field::PTYPE, value.into());
    }

    /// Sets the hardware address length.
    #[inline]
    pub fn set_hardware_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::HLEN] = value;
    }

    /// Sets the protocol address length.
    #[inline]
    pub fn set_protocol_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::PLEN] = value;
    }

    /// Sets the operation.
    #[inline]
    pub fn set_operation(&mut self, value: ArpOperation) {
        write_u16(self.buffer.as_mut(), field::OPER, value.into());
    }

    /// Sets the sender hardware address.
    #[inline]
    pub fn set_source_hardware_addr(&mut self, value: EthernetAddress) {
        write_bytes(self.buffer.as_mut(), field::SHA, &value.0);
    }

    /// Sets the sender protocol address.
    #[inline]
    pub fn set_source_protocol_addr(&mut self, value: Ipv4Addr) {
        write_bytes(self.buffer.as_mut(), field::SPA, &value.octets());
    }

    /// Sets the target hardware address.
    #[inline]
    pub fn set_target_hardware_addr(&mut self, value: EthernetAddress) {
        write_bytes(self.buffer.as_mut(), field::THA, &value.0);
    }

    /// Sets the target protocol address.
    #[inline]
    pub fn set_target_protocol_addr(&mut self, value: Ipv4Addr) {
        write_bytes(self.buffer.as_mut(), field::TPA, &value.octets());
    }
}

/// An Ethernet/IPv4 ARP packet to build or after parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArpRepr {
    /// Operation.
    pub operation: ArpOperation,
    /// Sender hardware address.
    pub source_hardware_addr: EthernetAddress,
    /// Sender protocol address.
    pub source_protocol_addr: Ipv4Addr,
    /// Target hardware address (zero in requests).
    pub target_hardware_addr: EthernetAddress,
    /// Target protocol address.
    pub target_protocol_addr: Ipv4Addr,
}

impl ArpRepr {
    /// Reads an ARP packet (checked again here, so an unchecked view is fine).
    pub fn parse<T: AsRef<[u8]>>(packet: &ArpPacket<T>) -> Result<Self, WireError> {
        packet.check_len()?;
        Ok(ArpRepr {
            operation: packet.operation(),
            source_hardware_addr: packet.source_hardware_addr(),
            source_protocol_addr: packet.source_protocol_addr(),
            target_hardware_addr: packet.target_hardware_addr(),
            target_protocol_addr: packet.target_protocol_addr(),
        })
    }

    /// The reply a host owning `target_protocol_addr` at `our_hardware_addr` sends to this
    /// request.
    pub fn reply(&self, our_hardware_addr: EthernetAddress) -> ArpRepr {
        ArpRepr {
            operation: ArpOperation::Reply,
            source_hardware_addr: our_hardware_addr,
            source_protocol_addr: self.target_protocol_addr,
            target_hardware_addr: self.source_hardware_addr,
            target_protocol_addr: self.source_protocol_addr,
        }
    }

    /// 28.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        ARP_PACKET_LEN
    }

    /// Writes the packet (`Truncated` if the buffer is shorter than 28 bytes).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut ArpPacket<T>,
    ) -> Result<(), WireError> {
        if packet.buffer.as_ref().len() < ARP_PACKET_LEN {
            return Err(WireError::Truncated);
        }
        packet.set_hardware_type(HTYPE_ETHERNET);
        packet.set_protocol_type(EtherType::Ipv4);
        packet.set_hardware_len(6);
        packet.set_protocol_len(4);
        packet.set_operation(self.operation);
        packet.set_source_hardware_addr(self.source_hardware_addr);
        packet.set_source_protocol_addr(self.source_protocol_addr);
        packet.set_target_hardware_addr(self.target_hardware_addr);
        packet.set_target_protocol_addr(self.target_protocol_addr);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const REQUEST: [u8; 28] = [
        0x00, 0x01, // Ethernet
        0x08, 0x00, // IPv4
        6, 4, // lengths
        0x00, 0x01, // request
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // sha
        10, 0, 0, 1, // spa
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // tha
        10, 0, 0, 2, // tpa
    ];

    fn request_repr() -> ArpRepr {
        ArpRepr {
            operation: ArpOperation::Request,
            source_hardware_addr: EthernetAddress([2, 0, 0, 0, 0, 1]),
            source_protocol_addr: Ipv4Addr::new(10, 0, 0, 1),
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: Ipv4Addr::new(10, 0, 0, 2),
        }
    }

    #[test]
    fn parse_request() {
        let p = ArpPacket::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(p.hardware_type(), 1);
        assert_eq!(p.protocol_type(), EtherType::Ipv4);
        assert_eq!((p.hardware_len(), p.protocol_len()), (6, 4));
        assert_eq!(p.operation(), ArpOperation::Request);
        assert_eq!(ArpRepr::parse(&p).unwrap(), request_repr());
    }

    #[test]
    fn emit_and_round_trip() {
        let mut buf = [0xAAu8; 28];
        let mut p = ArpPacket::new_unchecked(&mut buf[..]);
        request_repr().emit(&mut p).unwrap();
        assert_eq!(buf, REQUEST);
        assert_eq!(request_repr().buffer_len(), 28);

        let reply = request_repr().reply(EthernetAddress([2, 0, 0, 0, 0, 2]));
        let mut buf = [0u8; 28];
        reply
            .emit(&mut ArpPacket::new_unchecked(&mut buf[..]))
            .unwrap();
        let p = ArpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(p.operation(), ArpOperation::Reply);
        assert_eq!(p.source_protocol_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(
            p.target_hardware_addr(),
            EthernetAddress([2, 0, 0, 0, 0, 1])
        );
        assert_eq!(ArpRepr::parse(&p).unwrap(), reply);

        let mut short = [0u8; 27];
        assert_eq!(
            reply.emit(&mut ArpPacket::new_unchecked(&mut short[..])),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn padding_is_allowed() {
        let mut padded = REQUEST.to_vec();
        padded.resize(46, 0);
        assert_eq!(
            ArpRepr::parse(&ArpPacket::new_checked(&padded[..]).unwrap()).unwrap(),
            request_repr()
        );
    }

    #[test]
    fn truncated_prefixes_rejected() {
        for n in 0..REQUEST.len() {
            assert_eq!(
                ArpPacket::new_checked(&REQUEST[..n]).unwrap_err(),
                WireError::Truncated,
                "prefix {n}"
            );
        }
    }

    #[test]
    fn other_types_rejected() {
        let mut b = REQUEST;
        b[1] = 6; // IEEE 802
        assert_eq!(
            ArpPacket::new_checked(&b[..]).unwrap_err(),
            WireError::Unsupported
        );
        let mut b = REQUEST;
        b[2..4].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(
            ArpPacket::new_checked(&b[..]).unwrap_err(),
            WireError::Unsupported
        );
        let mut b = REQUEST;
        b[4] = 8;
        assert_eq!(
            ArpPacket::new_checked(&b[..]).unwrap_err(),
            WireError::Malformed
        );
        let mut b = REQUEST;
        b[5] = 16;
        assert_eq!(
            ArpPacket::new_checked(&b[..]).unwrap_err(),
            WireError::Malformed
        );
        let mut b = REQUEST;
        b[7] = 9;
        let p = ArpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.operation(), ArpOperation::Unknown(9));
    }

    #[test]
    fn matches_etherparse() {
        use etherparse::{ArpHardwareId, ArpOperation as EpOp, EtherType as EpType, NetHeaders};
        let arp = etherparse::ArpPacket::new(
            ArpHardwareId::ETHERNET,
            EpType::IPV4,
            EpOp::REPLY,
            &[2, 0, 0, 0, 0, 9],
            &[192, 168, 7, 1],
            &[2, 0, 0, 0, 0, 8],
            &[192, 168, 7, 2],
        )
        .unwrap();
        let builder =
            etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 9], [2, 0, 0, 0, 0, 8]).arp(arp);
        let mut frame = Vec::new();
        builder.write(&mut frame).unwrap();
        let p = ArpPacket::new_checked(&frame[14..]).unwrap();
        let repr = ArpRepr::parse(&p).unwrap();
        assert_eq!(repr.operation, ArpOperation::Reply);
        assert_eq!(
            repr.source_hardware_addr,
            EthernetAddress([2, 0, 0, 0, 0, 9])
        );
        assert_eq!(repr.source_protocol_addr, Ipv4Addr::new(192, 168, 7, 1));
        assert_eq!(
            repr.target_hardware_addr,
            EthernetAddress([2, 0, 0, 0, 0, 8])
        );
        assert_eq!(repr.target_protocol_addr, Ipv4Addr::new(192, 168, 7, 2));

        // And the other way: what we emit, etherparse reads.
        let mut ours = vec![0u8; 14 + 28];
        ours[12..14].copy_from_slice(&[0x08, 0x06]);
        request_repr()
            .emit(&mut ArpPacket::new_unchecked(&mut ours[14..]))
            .unwrap();
        let headers = etherparse::PacketHeaders::from_ethernet_slice(&ours).unwrap();
        let Some(NetHeaders::Arp(arp)) = headers.net else {
            panic!("etherparse did not see ARP: {headers:?}");
        };
        assert_eq!(arp.operation, EpOp::REQUEST);
        assert_eq!(arp.sender_protocol_addr(), &[10, 0, 0, 1]);
        assert_eq!(arp.target_protocol_addr(), &[10, 0, 0, 2]);
    }

    proptest! {
        #[test]
        fn getters_never_panic(data in proptest::collection::vec(any::<u8>(), 0..40), valid_prefix in any::<bool>()) {
            let mut data = data;
            if valid_prefix && data.len() >= 6 {
                data[..6].copy_from_slice(&REQUEST[..6]);
            }
            if let Ok(p) = ArpPacket::new_checked(&data[..]) {
                let _ = (p.hardware_type(), p.protocol_type(), p.hardware_len(), p.protocol_len());
                let _ = (p.operation(), p.source_hardware_addr(), p.source_protocol_addr());
                let _ = (p.target_hardware_addr(), p.target_protocol_addr());
                let repr = ArpRepr::parse(&p).unwrap();
                let mut out = vec![0u8; repr.buffer_len()];
                repr.emit(&mut ArpPacket::new_unchecked(&mut out[..])).unwrap();
                prop_assert_eq!(&out[..], &data[..28]);
            }
        }
    }
}
