//! IPv6 (RFC 8200) base header and extension-header walk.
//!
//! `new_checked` validates the version and the payload length against the buffer;
//! `payload()` ends at the payload length (padding excluded). Extension headers are walked on
//! demand by [`Ipv6Packet::upper_layer`], with a bound on the chain length.

use std::net::Ipv6Addr;

use super::{read_array, read_u16, read_u32, write_bytes, write_u16, write_u32};
use super::{IpProtocol, WireError};

mod field {
    pub const VER_TC_FLOW: usize = 0;
    pub const LENGTH: usize = 4;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: usize = 8;
    pub const DST_ADDR: usize = 24;
    pub const PAYLOAD: usize = 40;
}

/// Length of the IPv6 base header.
pub const IPV6_HEADER_LEN: usize = field::PAYLOAD;

/// The most extension headers [`Ipv6Packet::upper_layer`] walks before giving up with
/// `ExtensionHeaderChainTooLong`.
pub const IPV6_MAX_EXTENSION_HEADERS: usize = 8;

/// What the Fragment extension header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6FragInfo {
    /// Fragment offset in bytes (a multiple of 8).
    pub offset: u16,
    /// More Fragments flag.
    pub more_frags: bool,
    /// Identification.
    pub ident: u32,
}

/// A view of an IPv6 packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps a buffer without checking it.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wraps a buffer and checks it (see [`check_len`](Self::check_len)).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// `Truncated` if shorter than 40 bytes; `BadVersion` unless version 6; `BadTotalLength`
    /// if the payload length goes beyond the buffer. Trailing bytes are allowed and ignored.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < IPV6_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.version() != 6 {
            return Err(WireError::BadVersion);
        }
        if IPV6_HEADER_LEN + usize::from(self.payload_len()) > len {
            return Err(WireError::BadTotalLength);
        }
        Ok(())
    }

    /// The underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version (6 after `new_checked`).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW] >> 4
    }

    /// Traffic class (DSCP << 2 | ECN).
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (read_u16(self.buffer.as_ref(), field::VER_TC_FLOW) >> 4) as u8
    }

    /// Flow label (20 bits).
    #[inline]
    pub fn flow_label(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::VER_TC_FLOW) & 0x000F_FFFF
    }

    /// Payload length (extension headers included).
    #[inline]
    pub fn payload_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Next header of the base header (the first extension header, if any).
    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::NXT_HDR])
    }

    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(read_array::<16>(self.buffer.as_ref(), field::SRC_ADDR))
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(read_array::<16>(self.buffer.as_ref(), field::DST_ADDR))
    }

    /// The payload after the base header, up to the payload length (padding excluded).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let end = IPV6_HEADER_LEN + usize::from(self.payload_len());
        &self.buffer.as_ref()[field::PAYLOAD..end]
    }

    /// Header and payload up to the payload length (padding excluded).
    #[inline]
    pub fn packet(&self) -> &[u8] {
        let end = IPV6_HEADER_LEN + usize::from(self.payload_len());
        &self.buffer.as_ref()[..end]
    }

    /// Walks the extension headers: Hop-by-Hop (first only), Routing, Fragment, Destination
    /// Options and AH. Returns the upper-layer protocol, the offset of its header within
    /// `payload()`, and the Fragment header's content if there was one.
    ///
    /// The walk ends at any other protocol, which is returned as is: TCP, UDP, ICMPv6, but
    /// also ESP, No Next Header and unknown numbers. It also ends right after a Fragment header
    /// with a non-zero offset, since what follows is not a header; callers must check
    /// `frag.offset` before reading a transport header at the returned offset.
    ///
    /// Errors: `Truncated` if a header runs past the payload; `Malformed` for a Hop-by-Hop
    /// header that is not first; `ExtensionHeaderChainTooLong` if there are more than
    /// [`IPV6_MAX_EXTENSION_HEADERS`] extension headers.
    pub fn upper_layer(&self) -> Result<(IpProtocol, usize, Option<Ipv6FragInfo>), WireError> {
        let payload = self.payload();
        let mut protocol = self.next_header();
        let mut offset = 0usize;
        let mut frag = None;
        let mut count = 0usize;
        loop {
            let header_len = match protocol {
                IpProtocol::HopByHop | IpProtocol::Ipv6Route | IpProtocol::Ipv6Opts => {
                    if protocol == IpProtocol::HopByHop && count != 0 {
                        return Err(WireError::Malformed);
                    }
                    let len_byte = *payload.get(offset + 1).ok_or(WireError::Truncated)?;
                    (usize::from(len_byte) + 1) * 8
                }
                IpProtocol::Ah => {
                    let len_byte = *payload.get(offset + 1).ok_or(WireError::Truncated)?;
                    (usize::from(len_byte) + 2) * 4
                }
                IpProtocol::Ipv6Frag => 8,
                _ => return Ok((protocol, offset, frag)),
            };
            if count == IPV6_MAX_EXTENSION_HEADERS {
                return Err(WireError::ExtensionHeaderChainTooLong);
            }
            count += 1;
            let header = payload
                .get(offset..offset + header_len)
                .ok_or(WireError::Truncated)?;
            let next = IpProtocol::from(header[0]);
            offset += header_len;
            if protocol == IpProtocol::Ipv6Frag {
                let off_flags = u16::from_be_bytes([header[2], header[3]]);
                let info = Ipv6FragInfo {
                    offset: off_flags & 0xFFF8,
                    more_frags: off_flags & 0x0001 != 0,
                    ident: u32::from_be_bytes([header[4], header[5], header[6], header[7]]),
                };
                frag = Some(info);
                if info.offset != 0 {
                    return Ok((next, offset, frag));
                }
            }
            protocol = next;
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets the version nibble.
    #[inline]
    pub fn set_version(&mut self, version: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_TC_FLOW];
        *b = (*b & 0x0F) | (version << 4);
    }

    /// Sets the traffic class.
    #[inline]
    pub fn set_traffic_class(&mut self, tc: u8) {
        let old = read_u16(self.buffer.as_ref(), field::VER_TC_FLOW);
        let new = (old & 0xF00F) | (u16::from(tc) << 4);
        write_u16(self.buffer.as_mut(), field::VER_TC_FLOW, new);
    }

    /// Sets the flow label (low 20 bits of `label`).
    #[inline]
    pub fn set_flow_label(&mut self, label: u32) {
        let old = read_u32(self.buffer.as_ref(), field::VER_TC_FLOW);
        let new = (old & 0xFFF0_0000) | (label & 0x000F_FFFF);
        write_u32(self.buffer.as_mut(), field::VER_TC_FLOW, new);
    }

    /// Sets the payload length. Check the view again before reading it.
    #[inline]
    pub fn set_payload_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, len);
    }

    /// Sets the next header of the base header.
    #[inline]
    pub fn set_next_header(&mut self, protocol: IpProtocol) {
        self.buffer.as_mut()[field::NXT_HDR] = protocol.into();
    }

    /// Sets the hop limit (IPv6 has no header checksum).
    #[inline]
    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hop_limit;
    }

    /// Sets the source address. The transport checksum is the caller's
    /// (`checksum::update_u128`).
    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        write_bytes(self.buffer.as_mut(), field::SRC_ADDR, &addr.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        write_bytes(self.buffer.as_mut(), field::DST_ADDR, &addr.octets());
    }

    /// Mutable payload (up to the payload length).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = IPV6_HEADER_LEN + usize::from(self.payload_len());
        &mut self.buffer.as_mut()[field::PAYLOAD..end]
    }
}

/// An IPv6 base header (no extension headers), to build or after parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Repr {
    /// Source address.
    pub src_addr: Ipv6Addr,
    /// Destination address.
    pub dst_addr: Ipv6Addr,
    /// Next header.
    pub next_header: IpProtocol,
    /// Payload length in bytes.
    pub payload_len: usize,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
}

impl Ipv6Repr {
    /// A header with traffic class and flow label 0.
    pub const fn new(
        src_addr: Ipv6Addr,
        dst_addr: Ipv6Addr,
        next_header: IpProtocol,
        payload_len: usize,
        hop_limit: u8,
    ) -> Self {
        Ipv6Repr {
            src_addr,
            dst_addr,
            next_header,
            payload_len,
            hop_limit,
            traffic_class: 0,
            flow_label: 0,
        }
    }

    /// Reads the base header (extension headers stay in the payload).
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv6Packet<T>) -> Result<Self, WireError> {
        packet.check_len()?;
        Ok(Ipv6Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.payload_len()),
            hop_limit: packet.hop_limit(),
            traffic_class: packet.traffic_class(),
            flow_label: packet.flow_label(),
        })
    }

    /// Header length: 40.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        IPV6_HEADER_LEN
    }

    /// Writes the base header; the payload is the caller's. `Truncated` if the buffer cannot
    /// hold header and payload; `BadTotalLength` if the payload exceeds 65535 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Ipv6Packet<T>,
    ) -> Result<(), WireError> {
        let payload_len = u16::try_from(self.payload_len).map_err(|_| WireError::BadTotalLength)?;
        if packet.buffer.as_ref().len() < IPV6_HEADER_LEN + self.payload_len {
            return Err(WireError::Truncated);
        }
        let first =
            (6u32 << 28) | (u32::from(self.traffic_class) << 20) | (self.flow_label & 0x000F_FFFF);
        let data = packet.buffer.as_mut();
        write_u32(data, field::VER_TC_FLOW, first);
        write_u16(data, field::LENGTH, payload_len);
        data[field::NXT_HDR] = self.next_header.into();
        data[field::HOP_LIMIT] = self.hop_limit;
        write_bytes(data, field::SRC_ADDR, &self.src_addr.octets());
        write_bytes(data, field::DST_ADDR, &self.dst_addr.octets());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn src() -> Ipv6Addr {
        "2001:db8::1".parse().unwrap()
    }

    fn dst() -> Ipv6Addr {
        "2001:db8::2".parse().unwrap()
    }

    /// Base header (tc 0xb8, flow 0x12345, hop limit 64) + `payload`.
    fn packet(next_header: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0x6b, 0x81, 0x23, 0x45];
        v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        v.push(next_header);
        v.push(64);
        v.extend_from_slice(&src().octets());
        v.extend_from_slice(&dst().octets());
        v.extend_from_slice(payload);
        v
    }

    /// HopByHop(8) -> Routing(24) -> Fragment(8, offset 0, M) -> DestOpts(16) -> UDP.
    fn chain() -> Vec<u8> {
        let mut p = Vec::new();
        // Hop-by-Hop: next Routing, len 0, PadN.
        p.extend_from_slice(&[43, 0, 1, 4, 0, 0, 0, 0]);
        // Routing: next Fragment, len 2 (24 bytes), type 0, segments left 0.
        p.extend_from_slice(&[44, 2, 0, 0]);
        p.extend_from_slice(&[0; 20]);
        // Fragment: next DestOpts, offset 0, M = 1, ident 0xdeadbeef.
        p.extend_from_slice(&[60, 0, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef]);
        // Destination options: next UDP, len 1 (16 bytes), PadN.
        p.extend_from_slice(&[17, 1, 1, 12]);
        p.extend_from_slice(&[0; 12]);
        // UDP header + 2 bytes.
        p.extend_from_slice(&[0x12, 0x34, 0x00, 0x35, 0x00, 0x0a, 0x00, 0x00, 0xab, 0xcd]);
        packet(0, &p)
    }

    #[test]
    fn parse_base_header() {
        let buf = packet(17, &[1, 2, 3, 4, 5, 6, 7, 8]);
        let p = Ipv6Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0xb8);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 8);
        assert_eq!(p.next_header(), IpProtocol::Udp);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), src());
        assert_eq!(p.dst_addr(), dst());
        assert_eq!(p.payload(), &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(p.upper_layer().unwrap(), (IpProtocol::Udp, 0, None));
        let r = Ipv6Repr::parse(&p).unwrap();
        assert_eq!(
            r,
            Ipv6Repr {
                traffic_class: 0xb8,
                flow_label: 0x12345,
                ..Ipv6Repr::new(src(), dst(), IpProtocol::Udp, 8, 64)
            }
        );
    }

    #[test]
    fn emit_round_trip() {
        let buf = packet(17, &[1, 2, 3, 4, 5, 6, 7, 8]);
        let r = Ipv6Repr::parse(&Ipv6Packet::new_checked(&buf[..]).unwrap()).unwrap();
        let mut out = vec![0u8; r.buffer_len() + r.payload_len];
        let mut p = Ipv6Packet::new_unchecked(&mut out[..]);
        r.emit(&mut p).unwrap();
        p.payload_mut().copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(out, buf);
        let mut short = [0u8; 47];
        assert_eq!(
            r.emit(&mut Ipv6Packet::new_unchecked(&mut short[..])),
            Err(WireError::Truncated)
        );
        let huge = Ipv6Repr {
            payload_len: 65536,
            ..r
        };
        assert_eq!(
            huge.emit(&mut Ipv6Packet::new_unchecked(&mut out[..])),
            Err(WireError::BadTotalLength)
        );
    }

    #[test]
    fn zero_length_payload_and_padding() {
        let buf = packet(59, &[]);
        let p = Ipv6Packet::new_checked(&buf[..]).unwrap();
        assert!(p.payload().is_empty());
        assert_eq!(p.upper_layer().unwrap(), (IpProtocol::Ipv6NoNxt, 0, None));
        let mut padded = packet(17, &[9; 8]);
        padded.extend_from_slice(&[0xAA; 6]);
        let p = Ipv6Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(p.payload(), &[9; 8]);
        assert_eq!(p.packet().len(), 48);
    }

    #[test]
    fn truncated_and_bad_rejected() {
        let buf = chain();
        for n in 0..buf.len() {
            assert!(Ipv6Packet::new_checked(&buf[..n]).is_err(), "prefix {n}");
        }
        assert_eq!(
            Ipv6Packet::new_checked(&buf[..39]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            Ipv6Packet::new_checked(&buf[..41]).unwrap_err(),
            WireError::BadTotalLength
        );
        let mut b = buf.clone();
        b[0] = 0x4b;
        assert_eq!(
            Ipv6Packet::new_checked(&b[..]).unwrap_err(),
            WireError::BadVersion
        );
    }

    #[test]
    fn extension_header_chain() {
        let buf = chain();
        let p = Ipv6Packet::new_checked(&buf[..]).unwrap();
        let (proto, offset, frag) = p.upper_layer().unwrap();
        assert_eq!(proto, IpProtocol::Udp);
        assert_eq!(offset, 8 + 24 + 8 + 16);
        assert_eq!(&p.payload()[offset..offset + 2], &[0x12, 0x34]);
        assert_eq!(
            frag,
            Some(Ipv6FragInfo {
                offset: 0,
                more_frags: true,
                ident: 0xdeadbeef
            })
        );
    }

    #[test]
    fn extension_header_truncated_inside_payload() {
        // The payload length covers only part of the Routing header.
        let full = chain();
        for cut in [9usize, 10, 20, 33, 41, 50] {
            let mut payload = full[40..40 + cut].to_vec();
            payload.truncate(cut);
            let buf = packet(0, &payload);
            let p = Ipv6Packet::new_checked(&buf[..]).unwrap();
            assert_eq!(
                p.upper_layer().unwrap_err(),
                WireError::Truncated,
                "cut {cut}"
            );
        }
    }

    #[test]
    fn non_first_fragment_stops_the_walk() {
        // Fragment (offset 1448, next DestOpts) followed by data that is not a header.
        let mut payload = vec![60, 0, 0x05, 0xa8, 0, 0, 0, 7];
        payload.extend_from_slice(&[0xFF; 4]);
        let buf = packet(44, &payload);
        let p = Ipv6Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(
            p.upper_layer().unwrap(),
            (
                IpProtocol::Ipv6Opts,
                8,
                Some(Ipv6FragInfo {
                    offset: 1448,
                    more_frags: false,
                    ident: 7
                })
            )
        );
    }

    #[test]
    fn ah_esp_and_unknown_end_the_walk() {
        // AH with payload len 4 ((4 + 2) * 4 = 24 bytes), then ESP.
        let mut payload = vec![50, 4, 0, 0];
        payload.extend_from_slice(&[0; 20]);
        payload.extend_from_slice(&[0xAB; 8]);
        let buf = packet(51, &payload);
        let p = Ipv6Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.upper_layer().unwrap(), (IpProtocol::Esp, 24, None));
        let buf = packet(200, &[0; 8]);
        let p = Ipv6Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(
            p.upper_layer().unwrap(),
            (IpProtocol::Unknown(200), 0, None)
        );
    }

    #[test]
    fn hop_by_hop_must_be_first() {
        let mut payload = vec![0, 0, 1, 4, 0, 0, 0, 0]; // DestOpts -> HopByHop
        payload.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]);
        let buf = packet(60, &payload);
        let p = Ipv6Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.upper_layer().unwrap_err(), WireError::Malformed);
    }

    #[test]
    fn over_long_chain_rejected() {
        // n Destination Options headers, then UDP.
        let build = |n: usize| {
            let mut payload = Vec::new();
            for i in 0..n {
                let next = if i + 1 == n { 17 } else { 60 };
                payload.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
            }
            payload.extend_from_slice(&[0; 8]);
            packet(60, &payload)
        };
        let ok = build(IPV6_MAX_EXTENSION_HEADERS);
        let p = Ipv6Packet::new_checked(&ok[..]).unwrap();
        assert_eq!(
            p.upper_layer().unwrap(),
            (IpProtocol::Udp, 8 * IPV6_MAX_EXTENSION_HEADERS, None)
        );
        let too_long = build(IPV6_MAX_EXTENSION_HEADERS + 1);
        let p = Ipv6Packet::new_checked(&too_long[..]).unwrap();
        assert_eq!(
            p.upper_layer().unwrap_err(),
            WireError::ExtensionHeaderChainTooLong
        );
    }

    #[test]
    fn setters() {
        let mut buf = packet(17, &[0; 8]);
        let mut p = Ipv6Packet::new_checked(&mut buf[..]).unwrap();
        p.set_hop_limit(1);
        p.set_traffic_class(0x04);
        p.set_flow_label(0xFFFFFFFF);
        p.set_next_header(IpProtocol::Tcp);
        p.set_src_addr(dst());
        p.set_dst_addr(src());
        p.payload_mut()[7] = 3;
        assert_eq!(p.hop_limit(), 1);
        assert_eq!(p.traffic_class(), 0x04);
        assert_eq!(p.flow_label(), 0xFFFFF);
        assert_eq!(p.version(), 6);
        assert_eq!(p.next_header(), IpProtocol::Tcp);
        assert_eq!((p.src_addr(), p.dst_addr()), (dst(), src()));
        assert_eq!(p.payload()[7], 3);
        p.set_payload_len(9);
        assert_eq!(p.check_len(), Err(WireError::BadTotalLength));
        p.set_version(4);
        assert_eq!(p.version(), 4);
    }

    #[test]
    fn matches_etherparse() {
        use etherparse::{IpNumber, Ipv6FragmentHeader, Ipv6RawExtHeader};
        // etherparse builds the chain HopByHop -> DestOpts -> Routing -> Fragment -> UDP;
        // build it by hand from its header types and compare offsets.
        let hbh =
            Ipv6RawExtHeader::new_raw(IpNumber::IPV6_DESTINATION_OPTIONS, &[1, 4, 0, 0, 0, 0])
                .unwrap();
        let dest = Ipv6RawExtHeader::new_raw(
            IpNumber::IPV6_ROUTE_HEADER,
            &[1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        )
        .unwrap();
        let route =
            Ipv6RawExtHeader::new_raw(IpNumber::IPV6_FRAGMENTATION_HEADER, &[0, 0, 0, 0, 0, 0])
                .unwrap();
        let frag = Ipv6FragmentHeader::new(IpNumber::UDP, 0.try_into().unwrap(), true, 77);
        let mut payload = Vec::new();
        payload.extend_from_slice(&hbh.to_bytes());
        payload.extend_from_slice(&dest.to_bytes());
        payload.extend_from_slice(&route.to_bytes());
        payload.extend_from_slice(&frag.to_bytes());
        let ext_len = payload.len();
        payload.extend_from_slice(&[0, 1, 0, 2, 0, 8, 0, 0]);
        let buf = packet(0, &payload);

        let (ep_header, rest) = etherparse::Ipv6Header::from_slice(&buf).unwrap();
        let (exts, ep_next, ep_rest) =
            etherparse::Ipv6Extensions::from_slice(ep_header.next_header, rest).unwrap();
        assert!(exts.fragment.is_some());
        let p = Ipv6Packet::new_checked(&buf[..]).unwrap();
        let (proto, offset, info) = p.upper_layer().unwrap();
        assert_eq!(u8::from(proto), ep_next.0);
        assert_eq!(offset, ext_len);
        assert_eq!(&p.payload()[offset..], ep_rest);
        assert_eq!(
            info,
            Some(Ipv6FragInfo {
                offset: 0,
                more_frags: true,
                ident: 77
            })
        );

        // A PacketBuilder-built packet.
        let builder =
            etherparse::PacketBuilder::ipv6(src().octets(), dst().octets(), 47).udp(21, 1234);
        let mut out = Vec::new();
        builder.write(&mut out, &[1, 2, 3]).unwrap();
        let p = Ipv6Packet::new_checked(&out[..]).unwrap();
        assert_eq!(p.hop_limit(), 47);
        assert_eq!(p.payload_len(), 11);
        assert_eq!(p.upper_layer().unwrap(), (IpProtocol::Udp, 0, None));
    }

    proptest! {
        #[test]
        fn getters_never_panic(mut data in proptest::collection::vec(any::<u8>(), 0..200),
                               len in any::<u16>(), next in prop::sample::select(vec![0u8, 43, 44, 51, 60, 17, 50, 59, 99])) {
            if data.len() >= 40 {
                data[0] = 0x60 | (data[0] & 0x0F);
                let payload_len = len % (data.len() as u16 - 39);
                data[4..6].copy_from_slice(&payload_len.to_be_bytes());
                data[6] = next;
            }
            if let Ok(p) = Ipv6Packet::new_checked(&data[..]) {
                let _ = (p.version(), p.traffic_class(), p.flow_label(), p.payload_len());
                let _ = (p.next_header(), p.hop_limit(), p.src_addr(), p.dst_addr(), p.packet());
                let payload_len = p.payload().len();
                if let Ok((_, offset, _)) = p.upper_layer() {
                    prop_assert!(offset <= payload_len);
                }
                let _ = Ipv6Repr::parse(&p).unwrap();
            }
        }
    }
}
