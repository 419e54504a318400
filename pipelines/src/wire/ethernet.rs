//! Ethernet II frames with at most one 802.1Q tag.
//!
//! `EthernetFrame::ethertype()` is the *inner* EtherType (after the tag, if any) and
//! `payload()` starts after the tag, so stages never need to care whether a frame was tagged;
//! `vlan_id()` says whether it was. QinQ outer tags (0x88A8) are not parsed and show up as
//! `EtherType::Unknown(0x88A8)`; a second 0x8100 tag shows up as `EtherType::Vlan`.

use core::fmt;
use core::str::FromStr;

use super::{read_array, read_u16, write_bytes, write_u16, WireError};

enum_with_unknown! {
    /// EtherType (IEEE 802.3 type field).
    pub enum EtherType(u16) {
        /// IPv4 (0x0800).
        Ipv4 = 0x0800,
        /// ARP (0x0806).
        Arp = 0x0806,
        /// IEEE 802.1Q VLAN tag (0x8100).
        Vlan = 0x8100,
        /// IPv6 (0x86DD).
        Ipv6 = 0x86DD,
    }
}

impl fmt::Display for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EtherType::Ipv4 => f.write_str("ipv4"),
            EtherType::Arp => f.write_str("arp"),
            EtherType::Vlan => f.write_str("802.1q"),
            EtherType::Ipv6 => f.write_str("ipv6"),
            EtherType::Unknown(t) => write!(f, "0x{t:04x}"),
        }
    }
}

/// A 48-bit Ethernet (MAC) address. Displays and parses as `aa:bb:cc:dd:ee:ff`
/// and (de)serializes as that string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EthernetAddress(pub [u8; 6]);

impl EthernetAddress {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: EthernetAddress = EthernetAddress([0xFF; 6]);
    /// `00:00:00:00:00:00`.
    pub const UNSPECIFIED: EthernetAddress = EthernetAddress([0; 6]);

    /// The six octets.
    #[inline]
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// `ff:ff:ff:ff:ff:ff`.
    #[inline]
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// Group bit set (includes broadcast).
    #[inline]
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Group bit clear.
    #[inline]
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// Locally administered bit set.
    #[inline]
    pub fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }

    /// The multicast MAC for an IPv6 multicast address (RFC 2464 §7: `33:33` + low 32 bits),
    /// e.g. for a solicited-node address in Neighbor Solicitations.
    #[inline]
    pub fn from_ipv6_multicast(addr: &std::net::Ipv6Addr) -> EthernetAddress {
        let o = addr.octets();
        EthernetAddress([0x33, 0x33, o[12], o[13], o[14], o[15]])
    }
}

impl From<[u8; 6]> for EthernetAddress {
    #[inline]
    fn from(octets: [u8; 6]) -> Self {
        EthernetAddress(octets)
    }
}

impl From<EthernetAddress> for [u8; 6] {
    #[inline]
    fn from(addr: EthernetAddress) -> Self {
        addr.0
    }
}

impl fmt::Display for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// The string is not six two-digit hex octets separated by `:` (or `-`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid Ethernet address (expected six hex octets such as 02:00:00:aa:bb:cc)")]
pub struct ParseEthernetAddressError;

impl FromStr for EthernetAddress {
    type Err = ParseEthernetAddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut out = [0u8; 6];
        let mut parts = s.split(sep);
        for octet in out.iter_mut() {
            let part = parts.next().ok_or(ParseEthernetAddressError)?;
            if part.len() != 2 || !part.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(ParseEthernetAddressError);
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| ParseEthernetAddressError)?;
        }
        if parts.next().is_some() {
            return Err(ParseEthernetAddressError);
        }
        Ok(EthernetAddress(out))
    }
}

impl serde::Serialize for EthernetAddress {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for EthernetAddress {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = EthernetAddress;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an Ethernet address such as \"02:00:00:aa:bb:cc\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

mod field {
    pub const DESTINATION: usize = 0;
    pub const SOURCE: usize = 6;
    pub const ETHERTYPE: usize = 12;
    pub const PAYLOAD: usize = 14;
    /// 802.1Q tag control information, when the frame is tagged.
    pub const VLAN_TCI: usize = 14;
    pub const VLAN_ETHERTYPE: usize = 16;
    pub const VLAN_PAYLOAD: usize = 18;
}

/// Length of an untagged Ethernet II header.
pub const ETHERNET_HEADER_LEN: usize = field::PAYLOAD;
/// Length of an Ethernet II header with one 802.1Q tag.
pub const ETHERNET_VLAN_HEADER_LEN: usize = field::VLAN_PAYLOAD;

/// A view of an Ethernet II frame (no FCS), optionally with one 802.1Q tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps a buffer without checking it.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// Wraps a buffer and checks its length (see [`check_len`](Self::check_len)).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// `Truncated` if the buffer is shorter than the header, including the 802.1Q tag when
    /// the outer EtherType is 0x8100.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let data = self.buffer.as_ref();
        if data.len() < field::PAYLOAD {
            return Err(WireError::Truncated);
        }
        if self.is_tagged() && data.len() < field::VLAN_PAYLOAD {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// The underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination MAC.
    #[inline]
    pub fn dst_addr(&self) -> EthernetAddress {
        EthernetAddress(read_array(self.buffer.as_ref(), field::DESTINATION))
    }

    /// Source MAC.
    #[inline]
    pub fn src_addr(&self) -> EthernetAddress {
        EthernetAddress(read_array(self.buffer.as_ref(), field::SOURCE))
    }

    #[inline]
    fn is_tagged(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::ETHERTYPE) == 0x8100
    }

    /// The EtherType right after the source MAC (0x8100 for a tagged frame).
    #[inline]
    pub fn outer_ethertype(&self) -> EtherType {
        EtherType::from(read_u16(self.buffer.as_ref(), field::ETHERTYPE))
    }

    /// The EtherType of the payload: after the 802.1Q tag if there is one.
    #[inline]
    pub fn ethertype(&self) -> EtherType {
        let at = if self.is_tagged() {
            field::VLAN_ETHERTYPE
        } else {
            field::ETHERTYPE
        };
        EtherType::from(read_u16(self.buffer.as_ref(), at))
    }

    /// The whole 802.1Q TCI (PCP, DEI, VID) if the frame is tagged.
    #[inline]
    pub fn vlan_tci(&self) -> Option<u16> {
        if self.is_tagged() {
            Some(read_u16(self.buffer.as_ref(), field::VLAN_TCI))
        } else {
            None
        }
    }

    /// The 12-bit VLAN ID if the frame is tagged (0 for priority-tagged frames).
    #[inline]
    pub fn vlan_id(&self) -> Option<u16> {
        self.vlan_tci().map(|tci| tci & 0x0FFF)
    }

    /// The 3-bit priority code point if the frame is tagged.
    #[inline]
    pub fn vlan_pcp(&self) -> Option<u8> {
        self.vlan_tci().map(|tci| (tci >> 13) as u8)
    }

    /// 14, or 18 for a tagged frame.
    #[inline]
    pub fn header_len(&self) -> usize {
        if self.is_tagged() {
            ETHERNET_VLAN_HEADER_LEN
        } else {
            ETHERNET_HEADER_LEN
        }
    }

    /// Everything after the header (and tag).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination MAC.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: EthernetAddress) {
        write_bytes(self.buffer.as_mut(), field::DESTINATION, &addr.0);
    }

    /// Sets the source MAC.
    #[inline]
    pub fn set_src_addr(&mut self, addr: EthernetAddress) {
        write_bytes(self.buffer.as_mut(), field::SOURCE, &addr.0);
    }

    /// Sets the payload EtherType (after the tag, if tagged). Setting `Vlan` on an untagged
    /// frame makes it tagged: check the frame again before reading it.
    #[inline]
    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        let at = if self.is_tagged() {
            field::VLAN_ETHERTYPE
        } else {
            field::ETHERTYPE
        };
        write_u16(self.buffer.as_mut(), at, ethertype.into());
    }

    /// Sets the VLAN ID of a tagged frame, keeping PCP and DEI; does nothing on an untagged
    /// frame (adding a tag changes the frame length, which a view cannot do).
    #[inline]
    pub fn set_vlan_id(&mut self, vlan_id: u16) {
        if let Some(tci) = self.vlan_tci() {
            let tci = (tci & 0xF000) | (vlan_id & 0x0FFF);
            write_u16(self.buffer.as_mut(), field::VLAN_TCI, tci);
        }
    }

    /// Mutable payload (after the header and tag).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }
}

/// An Ethernet II header to build: addresses, optional VLAN ID and payload EtherType.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EthernetRepr {
    /// Source MAC.
    pub src_addr: EthernetAddress,
    /// Destination MAC.
    pub dst_addr: EthernetAddress,
    /// VLAN ID of the 802.1Q tag to write (PCP 0), or `None` for an untagged frame.
    pub vlan_id: Option<u16>,
    /// Payload EtherType.
    pub ethertype: EtherType,
}

impl EthernetRepr {
    /// Reads the header of a checked frame.
    pub fn parse<T: AsRef<[u8]>>(frame: &EthernetFrame<T>) -> Result<Self, WireError> {
        frame.check_len()?;
        Ok(EthernetRepr {
            src_addr: frame.src_addr(),
            dst_addr: frame.dst_addr(),
            vlan_id: frame.vlan_id(),
            ethertype: frame.ethertype(),
        })
    }

    /// Header length: 14, or 18 with a tag.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        match self.vlan_id {
            Some(_) => ETHERNET_VLAN_HEADER_LEN,
            None => ETHERNET_HEADER_LEN,
        }
    }

    /// Writes the header into the start of the frame's buffer (`Truncated` if it does not fit).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        frame: &mut EthernetFrame<T>,
    ) -> Result<(), WireError> {
        let data = frame.buffer.as_mut();
        if data.len() < self.buffer_len() {
            return Err(WireError::Truncated);
        }
        write_bytes(data, field::DESTINATION, &self.dst_addr.0);
        write_bytes(data, field::SOURCE, &self.src_addr.0);
        match self.vlan_id {
            Some(vid) => {
                write_u16(data, field::ETHERTYPE, EtherType::Vlan.into());
                write_u16(data, field::VLAN_TCI, vid & 0x0FFF);
                write_u16(data, field::VLAN_ETHERTYPE, self.ethertype.into());
            }
            None => write_u16(data, field::ETHERTYPE, self.ethertype.into()),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const UNTAGGED: [u8; 18] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // dst
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, // src
        0x08, 0x00, // IPv4
        0xde, 0xad, 0xbe, 0xef, // payload
    ];

    const TAGGED: [u8; 20] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, // src
        0x81, 0x00, // 802.1Q
        0xa0, 0x64, // PCP 5, VID 100
        0x08, 0x06, // ARP
        0xca, 0xfe, // payload
    ];

    #[test]
    fn parse_untagged() {
        let f = EthernetFrame::new_checked(&UNTAGGED[..]).unwrap();
        assert_eq!(f.dst_addr(), EthernetAddress([2, 0, 0, 0, 0, 1]));
        assert_eq!(f.src_addr(), EthernetAddress([2, 0, 0, 0, 0, 2]));
        assert_eq!(f.ethertype(), EtherType::Ipv4);
        assert_eq!(f.outer_ethertype(), EtherType::Ipv4);
        assert_eq!(f.vlan_id(), None);
        assert_eq!(f.vlan_pcp(), None);
        assert_eq!(f.header_len(), 14);
        assert_eq!(f.payload(), &[0xde, 0xad, 0xbe, 0xef]);
    }

    #[test]
    fn parse_tagged() {
        let f = EthernetFrame::new_checked(&TAGGED[..]).unwrap();
        assert!(f.dst_addr().is_broadcast());
        assert_eq!(f.outer_ethertype(), EtherType::Vlan);
        assert_eq!(f.ethertype(), EtherType::Arp);
        assert_eq!(f.vlan_id(), Some(100));
        assert_eq!(f.vlan_pcp(), Some(5));
        assert_eq!(f.header_len(), 18);
        assert_eq!(f.payload(), &[0xca, 0xfe]);
    }

    #[test]
    fn zero_length_payloads() {
        let f = EthernetFrame::new_checked(&UNTAGGED[..14]).unwrap();
        assert!(f.payload().is_empty());
        let f = EthernetFrame::new_checked(&TAGGED[..18]).unwrap();
        assert!(f.payload().is_empty());
    }

    #[test]
    fn truncated_prefixes_rejected() {
        for n in 0..14 {
            assert_eq!(
                EthernetFrame::new_checked(&UNTAGGED[..n]).unwrap_err(),
                WireError::Truncated
            );
        }
        for n in 0..18 {
            assert_eq!(
                EthernetFrame::new_checked(&TAGGED[..n]).unwrap_err(),
                WireError::Truncated
            );
        }
    }

    #[test]
    fn setters() {
        let mut buf = TAGGED;
        let mut f = EthernetFrame::new_checked(&mut buf[..]).unwrap();
        f.set_dst_addr(EthernetAddress([1, 2, 3, 4, 5, 6]));
        f.set_src_addr(EthernetAddress([7, 8, 9, 10, 11, 12]));
        f.set_ethertype(EtherType::Ipv6);
        f.set_vlan_id(4000);
        f.payload_mut()[0] = 0x11;
        assert_eq!(f.dst_addr(), EthernetAddress([1, 2, 3, 4, 5, 6]));
        assert_eq!(f.src_addr(), EthernetAddress([7, 8, 9, 10, 11, 12]));
        assert_eq!(f.ethertype(), EtherType::Ipv6);
        assert_eq!(f.vlan_id(), Some(4000));
        assert_eq!(f.vlan_pcp(), Some(5));
        assert_eq!(buf[18], 0x11);
    }

    #[test]
    fn repr_round_trip() {
        for fixture in [&UNTAGGED[..], &TAGGED[..]] {
            let f = EthernetFrame::new_checked(fixture).unwrap();
            let repr = EthernetRepr::parse(&f).unwrap();
            assert_eq!(repr.buffer_len(), f.header_len());
            let mut out = fixture.to_vec();
            out[..repr.buffer_len()].fill(0);
            let mut g = EthernetFrame::new_unchecked(&mut out[..]);
            repr.emit(&mut g).unwrap();
            // The PCP is not part of the repr; everything else round-trips.
            let mut expected = fixture.to_vec();
            if repr.vlan_id.is_some() {
                expected[14] &= 0x0F;
            }
            assert_eq!(out, expected);
        }
        let repr = EthernetRepr {
            src_addr: EthernetAddress([2, 0, 0, 0, 0, 1]),
            dst_addr: EthernetAddress::BROADCAST,
            vlan_id: Some(7),
            ethertype: EtherType::Arp,
        };
        let mut short = [0u8; 17];
        assert_eq!(
            repr.emit(&mut EthernetFrame::new_unchecked(&mut short[..])),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn ethertype_numbers() {
        assert_eq!(EtherType::from(0x0800), EtherType::Ipv4);
        assert_eq!(EtherType::from(0x86dd), EtherType::Ipv6);
        assert_eq!(EtherType::from(0x88a8), EtherType::Unknown(0x88a8));
        assert_eq!(u16::from(EtherType::Arp), 0x0806);
        assert_eq!(EtherType::Unknown(0x88cc).to_string(), "0x88cc");
    }

    #[test]
    fn address_text_forms() {
        let a: EthernetAddress = "02:0A:bc:00:ff:10".parse().unwrap();
        assert_eq!(a, EthernetAddress([0x02, 0x0a, 0xbc, 0x00, 0xff, 0x10]));
        assert_eq!(a.to_string(), "02:0a:bc:00:ff:10");
        assert_eq!("02-0a-bc-00-ff-10".parse::<EthernetAddress>().unwrap(), a);
        for bad in [
            "",
            "02:0a:bc:00:ff",
            "02:0a:bc:00:ff:10:11",
            "2:0a:bc:00:ff:10",
            "02:0a:bc:00:ff:1g",
            "02:0a:bc:00:ff:+1",
            "02:0a-bc:00:ff:10",
        ] {
            assert!(bad.parse::<EthernetAddress>().is_err(), "{bad:?}");
        }
        assert!(EthernetAddress::BROADCAST.is_broadcast());
        assert!(EthernetAddress::BROADCAST.is_multicast());
        assert!(a.is_unicast() && a.is_local());
        assert!(EthernetAddress([0x01, 0, 0x5e, 0, 0, 1]).is_multicast());
        let mc = EthernetAddress::from_ipv6_multicast(&"ff02::1:ff00:1234".parse().unwrap());
        assert_eq!(mc.to_string(), "33:33:ff:00:12:34");
    }

    #[test]
    fn address_deserializes_from_string() {
        use serde::de::value::{Error as DeError, StrDeserializer};
        use serde::de::IntoDeserializer;
        use serde::Deserialize;

        let de: StrDeserializer<'_, DeError> = "aa:bb:cc:dd:ee:ff".into_deserializer();
        assert_eq!(
            EthernetAddress::deserialize(de).unwrap(),
            EthernetAddress([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff])
        );
        let bad: StrDeserializer<'_, DeError> = "nope".into_deserializer();
        assert!(EthernetAddress::deserialize(bad).is_err());
    }

    proptest! {
        #[test]
        fn getters_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(f) = EthernetFrame::new_checked(&data[..]) {
                let _ = (f.dst_addr(), f.src_addr(), f.ethertype(), f.outer_ethertype());
                let _ = (f.vlan_id(), f.vlan_tci(), f.vlan_pcp());
                prop_assert_eq!(f.header_len() + f.payload().len(), data.len());
                let _ = EthernetRepr::parse(&f).unwrap();
            }
        }

        #[test]
        fn address_display_parse_round_trip(octets in any::<[u8; 6]>()) {
            let a = EthernetAddress(octets);
            prop_assert_eq!(a.to_string().parse::<EthernetAddress>().unwrap(), a);
        }
    }
}
