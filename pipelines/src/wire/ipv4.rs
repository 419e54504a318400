//! IPv4 (RFC 791).
//!
//! `new_checked` validates version, IHL and total length against the buffer; `payload()`
//! ends at the total length, so Ethernet padding is excluded. The header checksum is checked
//! separately (`verify_checksum()`), and fragments are reported, not rejected
//! (`is_fragment()`, `frag_offset()`).

use std::net::Ipv4Addr;

use super::checksum;
use super::{read_array, read_u16, write_bytes, write_u16, IpProtocol, WireError};

mod field {
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLG_OFF: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC_ADDR: usize = 12;
    pub const DST_ADDR: usize = 16;
    pub const OPTIONS: usize = 20;
}

/// Length of an IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = field::OPTIONS;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1FFF;

/// A view of an IPv4 packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer without checking it.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps a buffer and checks it (see [`check_len`](Self::check_len)).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// In order: `Truncated` if shorter than 20 bytes; `BadVersion` unless version 4;
    /// `BadHeaderLength` if IHL < 5; `Truncated` if the buffer ends inside the header (options);
    /// `BadTotalLength` if the total length is below the header length or beyond the buffer.
    /// Bytes after the total length (link padding) are allowed and ignored.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < IPV4_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.version() != 4 {
            return Err(WireError::BadVersion);
        }
        let header_len = usize::from(self.header_len());
        if header_len < IPV4_HEADER_LEN {
            return Err(WireError::BadHeaderLength);
        }
        if len < header_len {
            return Err(WireError::Truncated);
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len || total_len > len {
            return Err(WireError::BadTotalLength);
        }
        Ok(())
    }

    /// The underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version (4 after `new_checked`).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4).
    #[inline]
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::VER_IHL] & 0x0F) * 4
    }

    /// Differentiated services code point (6 bits).
    #[inline]
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }

    /// Explicit congestion notification (2 bits).
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x03
    }

    /// Total length (header plus payload) in bytes.
    #[inline]
    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT)
    }

    /// Don't Fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_DF != 0
    }

    /// More Fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_MF != 0
    }

    /// Fragment offset in bytes (the field × 8).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (read_u16(self.buffer.as_ref(), field::FLG_OFF) & OFFSET_MASK) * 8
    }

    /// Part of a fragmented datagram: MF set or a non-zero offset.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & (FLAG_MF | OFFSET_MASK) != 0
    }

    /// The first fragment of a fragmented datagram (MF set, offset 0). `false` for an
    /// unfragmented packet: use `frag_offset() == 0` to know whether the transport header is
    /// present.
    #[inline]
    pub fn is_first_fragment(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & (FLAG_MF | OFFSET_MASK) == FLAG_MF
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Payload protocol.
    #[inline]
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::PROTOCOL])
    }

    /// Header checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_array::<4>(self.buffer.as_ref(), field::SRC_ADDR))
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_array::<4>(self.buffer.as_ref(), field::DST_ADDR))
    }

    /// The options bytes (empty for IHL 5).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..usize::from(self.header_len())]
    }

    /// The header bytes, options included.
    #[inline]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..usize::from(self.header_len())]
    }

    /// Whether the header checksum is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::sum(self.header()) == 0xFFFF
    }

    /// The payload, from the end of the header to the total length (padding excluded).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let start = usize::from(self.header_len());
        let end = usize::from(self.total_len());
        &self.buffer.as_ref()[start..end]
    }

    /// Header and payload up to the total length (padding excluded).
    #[inline]
    pub fn packet(&self) -> &[u8] {
        &self.buffer.as_ref()[..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the version nibble.
    #[inline]
    pub fn set_version(&mut self, version: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0F) | (version << 4);
    }

    /// Sets the header length in bytes (a multiple of 4, at most 60). Check the view again
    /// before reading it.
    #[inline]
    pub fn set_header_len(&mut self, len: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xF0) | ((len / 4) & 0x0F);
    }

    /// Sets the DSCP (6 bits).
    #[inline]
    pub fn set_dscp(&mut self, dscp: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0x03) | (dscp << 2);
    }

    /// Sets the ECN bits (2 bits).
    #[inline]
    pub fn set_ecn(&mut self, ecn: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0xFC) | (ecn & 0x03);
    }

    /// Sets the total length. Check the view again before reading it.
    #[inline]
    pub fn set_total_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, len);
    }

    /// Sets the identification.
    #[inline]
    pub fn set_ident(&mut self, ident: u16) {
        write_u16(self.buffer.as_mut(), field::IDENT, ident);
    }

    #[inline]
    fn set_flag(&mut self, flag: u16, value: bool) {
        let old = read_u16(self.buffer.as_ref(), field::FLG_OFF);
        let new = if value { old | flag } else { old & !flag };
        write_u16(self.buffer.as_mut(), field::FLG_OFF, new);
    }

    /// Sets the Don't Fragment flag.
    #[inline]
    pub fn set_dont_frag(&mut self, value: bool) {
        self.set_flag(FLAG_DF, value);
    }

    /// Sets the More Fragments flag.
    #[inline]
    pub fn set_more_frags(&mut self, value: bool) {
        self.set_flag(FLAG_MF, value);
    }

    /// Sets the fragment offset in bytes (rounded down to a multiple of 8).
    #[inline]
    pub fn set_frag_offset(&mut self, offset: u16) {
        let old = read_u16(self.buffer.as_ref(), field::FLG_OFF);
        let new = (old & !OFFSET_MASK) | ((offset / 8) & OFFSET_MASK);
        write_u16(self.buffer.as_mut(), field::FLG_OFF, new);
    }

    /// Sets the TTL (checksum untouched).
    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Decrements the TTL (saturating at 0) and updates the checksum incrementally
    /// (RFC 1624). Returns the new TTL. Callers drop packets whose TTL is ≤ 1 first.
    #[inline]
    pub fn decrement_ttl(&mut self) -> u8 {
        let old_word = read_u16(self.buffer.as_ref(), field::TTL);
        let ttl = self.ttl().saturating_sub(1);
        let new_word = (u16::from(ttl) << 8) | (old_word & 0x00FF);
        let sum = checksum::update_u16(self.checksum(), old_word, new_word);
        write_u16(self.buffer.as_mut(), field::TTL, new_word);
        self.set_checksum(sum);
        ttl
    }

    /// Sets the protocol (checksum untouched).
    #[inline]
    pub fn set_protocol(&mut self, protocol: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol.into();
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Sets the source address (checksum untouched).
    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        write_bytes(self.buffer.as_mut(), field::SRC_ADDR, &addr.octets());
    }

    /// Sets the destination address (checksum untouched).
    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        write_bytes(self.buffer.as_mut(), field::DST_ADDR, &addr.octets());
    }

    /// Sets the source address and updates the header checksum incrementally. The transport
    /// checksum (pseudo-header) is the caller's: use `checksum::update_u32` with the same
    /// addresses.
    #[inline]
    pub fn set_src_addr_update_checksum(&mut self, addr: Ipv4Addr) {
        let old = u32::from(self.src_addr());
        let sum = checksum::update_u32(self.checksum(), old, u32::from(addr));
        self.set_src_addr(addr);
        self.set_checksum(sum);
    }

    /// Sets the destination address and updates the header checksum incrementally.
    #[inline]
    pub fn set_dst_addr_update_checksum(&mut self, addr: Ipv4Addr) {
        let old = u32::from(self.dst_addr());
        let sum = checksum::update_u32(self.checksum(), old, u32::from(addr));
        self.set_dst_addr(addr);
        self.set_checksum(sum);
    }

    /// Computes and writes the header checksum.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::checksum(self.header());
        self.set_checksum(sum);
    }

    /// Mutable options bytes.
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.header_len());
        &mut self.buffer.as_mut()[field::OPTIONS..end]
    }

    /// Mutable payload (up to the total length).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = usize::from(self.header_len());
        let end = usize::from(self.total_len());
        &mut self.buffer.as_mut()[start..end]
    }
}

/// An IPv4 header without options, to build or after parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Payload protocol.
    pub protocol: IpProtocol,
    /// Payload length in bytes (total length minus header length).
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
    /// DSCP (6 bits).
    pub dscp: u8,
    /// ECN (2 bits).
    pub ecn: u8,
    /// Identification.
    pub ident: u16,
    /// Don't Fragment.
    pub dont_frag: bool,
    /// More Fragments.
    pub more_frags: bool,
    /// Fragment offset in bytes (a multiple of 8).
    pub frag_offset: u16,
}

impl Ipv4Repr {
    /// An unfragmented header with DSCP/ECN 0, ident 0, DF clear.
    pub const fn new(
        src_addr: Ipv4Addr,
        dst_addr: Ipv4Addr,
        protocol: IpProtocol,
        payload_len: usize,
        ttl: u8,
    ) -> Self {
        Ipv4Repr {
            src_addr,
            dst_addr,
            protocol,
            payload_len,
            ttl,
            dscp: 0,
            ecn: 0,
            ident: 0,
            dont_frag: false,
            more_frags: false,
            frag_offset: 0,
        }
    }

    /// Reads a header: checks lengths and the checksum (`BadChecksum`). Options are skipped
    /// (`payload_len` excludes them).
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv4Packet<T>) -> Result<Self, WireError> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(WireError::BadChecksum);
        }
        Ok(Ipv4Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: packet.payload().len(),
            ttl: packet.ttl(),
            dscp: packet.dscp(),
            ecn: packet.ecn(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
            more_frags: packet.more_frags(),
            frag_offset: packet.frag_offset(),
        })
    }

    /// Header length: 20.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        IPV4_HEADER_LEN
    }

    /// Writes the header (checksum filled). The payload is the caller's: write it into
    /// `payload_mut()` afterwards. `Truncated` if the buffer cannot hold header and payload;
    /// `BadTotalLength` if header plus payload exceed 65535 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Ipv4Packet<T>,
    ) -> Result<(), WireError> {
        let total = IPV4_HEADER_LEN + self.payload_len;
        let total = u16::try_from(total).map_err(|_| WireError::BadTotalLength)?;
        if packet.buffer.as_ref().len() < usize::from(total) {
            return Err(WireError::Truncated);
        }
        let data = packet.buffer.as_mut();
        data[field::VER_IHL] = 0x45;
        data[field::DSCP_ECN] = (self.dscp << 2) | (self.ecn & 0x03);
        write_u16(data, field::LENGTH, total);
        write_u16(data, field::IDENT, self.ident);
        let mut flg_off = (self.frag_offset / 8) & OFFSET_MASK;
        if self.dont_frag {
            flg_off |= FLAG_DF;
        }
        if self.more_frags {
            flg_off |= FLAG_MF;
        }
        write_u16(data, field::FLG_OFF, flg_off);
        data[field::TTL] = self.ttl;
        data[field::PROTOCOL] = self.protocol.into();
        write_bytes(data, field::SRC_ADDR, &self.src_addr.octets());
        write_bytes(data, field::DST_ADDR, &self.dst_addr.octets());
        packet.fill_checksum();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 192.168.0.1 -> 192.168.0.199, UDP, TTL 64, DF, total 28 (8 bytes of payload).
    const PACKET: [u8; 28] = [
        0x45, 0x00, 0x00, 0x1c, // ver/ihl, tos, total length 28
        0x12, 0x34, 0x40, 0x00, // ident, DF
        0x40, 0x11, 0x00, 0x00, // ttl 64, udp, checksum (filled in tests)
        0xc0, 0xa8, 0x00, 0x01, // src
        0xc0, 0xa8, 0x00, 0xc7, // dst
        0x00, 0x35, 0x00, 0x35, 0x00, 0x08, 0x00, 0x00, // payload
    ];

    fn fixture() -> Vec<u8> {
        let mut v = PACKET.to_vec();
        let c = checksum::checksum(&v[..20]);
        v[10..12].copy_from_slice(&c.to_be_bytes());
        v
    }

    fn repr() -> Ipv4Repr {
        Ipv4Repr {
            ident: 0x1234,
            dont_frag: true,
            ..Ipv4Repr::new(
                Ipv4Addr::new(192, 168, 0, 1),
                Ipv4Addr::new(192, 168, 0, 199),
                IpProtocol::Udp,
                8,
                64,
            )
        }
    }

    #[test]
    fn parse_fixture() {
        let buf = fixture();
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!((p.dscp(), p.ecn()), (0, 0));
        assert_eq!(p.total_len(), 28);
        assert_eq!(p.ident(), 0x1234);
        assert!(p.dont_frag() && !p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert!(!p.is_fragment() && !p.is_first_fragment());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), IpProtocol::Udp);
        assert_eq!(p.src_addr(), Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(192, 168, 0, 199));
        assert!(p.options().is_empty());
        assert!(p.verify_checksum());
        assert_eq!(p.payload(), &PACKET[20..]);
        assert_eq!(Ipv4Repr::parse(&p).unwrap(), repr());
    }

    #[test]
    fn emit_matches_fixture_and_round_trips() {
        let mut buf = vec![0xEEu8; 28];
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        repr().emit(&mut p).unwrap();
        p.payload_mut().copy_from_slice(&PACKET[20..]);
        assert_eq!(buf, fixture());
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(Ipv4Repr::parse(&p).unwrap(), repr());
        assert_eq!(repr().buffer_len(), 20);

        // Too small for header + payload.
        let mut short = [0u8; 27];
        assert_eq!(
            repr().emit(&mut Ipv4Packet::new_unchecked(&mut short[..])),
            Err(WireError::Truncated)
        );
        let huge = Ipv4Repr {
            payload_len: 65516,
            ..repr()
        };
        let mut buf = vec![0u8; 70000];
        assert_eq!(
            huge.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..])),
            Err(WireError::BadTotalLength)
        );
    }

    #[test]
    fn padding_excluded_from_payload() {
        let mut buf = fixture();
        buf.resize(46, 0xAA); // Ethernet minimum frame padding
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.payload(), &PACKET[20..]);
        assert_eq!(p.packet().len(), 28);
    }

    #[test]
    fn zero_length_payload() {
        let mut buf = fixture();
        buf.truncate(20);
        buf[2..4].copy_from_slice(&20u16.to_be_bytes());
        let mut p = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        p.fill_checksum();
        assert!(p.payload().is_empty());
        assert_eq!(Ipv4Repr::parse(&p).unwrap().payload_len, 0);
    }

    #[test]
    fn truncated_prefixes_rejected() {
        let buf = fixture();
        for n in 0..buf.len() {
            assert!(Ipv4Packet::new_checked(&buf[..n]).is_err(), "prefix {n}");
        }
        assert_eq!(
            Ipv4Packet::new_checked(&buf[..19]).unwrap_err(),
            WireError::Truncated
        );
        // Whole header present, payload cut: the total length lies.
        assert_eq!(
            Ipv4Packet::new_checked(&buf[..27]).unwrap_err(),
            WireError::BadTotalLength
        );
    }

    #[test]
    fn bad_fields_rejected() {
        let mut b = fixture();
        b[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap_err(),
            WireError::BadVersion
        );

        for ihl in 0..5u8 {
            let mut b = fixture();
            b[0] = 0x40 | ihl;
            assert_eq!(
                Ipv4Packet::new_checked(&b[..]).unwrap_err(),
                WireError::BadHeaderLength
            );
        }
        // IHL 15 (60 bytes) in a 28-byte buffer.
        let mut b = fixture();
        b[0] = 0x4F;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap_err(),
            WireError::Truncated
        );

        // Total length larger than the buffer.
        let mut b = fixture();
        b[2..4].copy_from_slice(&29u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap_err(),
            WireError::BadTotalLength
        );
        // Total length smaller than the header.
        let mut b = fixture();
        b[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap_err(),
            WireError::BadTotalLength
        );
    }

    #[test]
    fn bad_checksum_detected() {
        let mut b = fixture();
        b[11] ^= 0x01;
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(!p.verify_checksum());
        assert_eq!(Ipv4Repr::parse(&p).unwrap_err(), WireError::BadChecksum);
        // A flipped bit elsewhere in the header is caught too; one in the payload is not ours.
        let mut b = fixture();
        b[15] ^= 0x80;
        assert!(!Ipv4Packet::new_checked(&b[..]).unwrap().verify_checksum());
        let mut b = fixture();
        b[25] ^= 0x80;
        assert!(Ipv4Packet::new_checked(&b[..]).unwrap().verify_checksum());
    }

    #[test]
    fn options_and_fragments() {
        // IHL 6 with a 4-byte option (NOP NOP NOP EOL), a middle fragment.
        let mut b = vec![
            0x46, 0xb8, 0x00, 0x1c, 0xab, 0xcd, 0x20, 0x03, 0x01, 0x06, 0x00, 0x00, 10, 0, 0, 1,
            10, 0, 0, 2, 1, 1, 1, 0, 9, 9, 9, 9,
        ];
        let c = checksum::checksum(&b[..24]);
        b[10..12].copy_from_slice(&c.to_be_bytes());
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.options(), &[1, 1, 1, 0]);
        assert_eq!(p.dscp(), 46);
        assert!(p.verify_checksum());
        assert!(p.more_frags() && !p.dont_frag());
        assert_eq!(p.frag_offset(), 24);
        assert!(p.is_fragment() && !p.is_first_fragment());
        assert_eq!(p.payload(), &[9, 9, 9, 9]);
        let r = Ipv4Repr::parse(&p).unwrap();
        assert_eq!(r.payload_len, 4);
        assert_eq!(r.frag_offset, 24);

        let mut b2 = b.clone();
        let mut p = Ipv4Packet::new_checked(&mut b2[..]).unwrap();
        p.set_frag_offset(0);
        assert!(p.is_first_fragment());
        p.set_more_frags(false);
        assert!(!p.is_fragment());
        p.set_dont_frag(true);
        assert!(p.dont_frag());
        p.set_dscp(10);
        p.set_ecn(3);
        assert_eq!((p.dscp(), p.ecn()), (10, 3));
        p.options_mut()[0] = 0;
        assert_eq!(p.options(), &[0, 1, 1, 0]);
    }

    #[test]
    fn setters_and_incremental_updates() {
        let mut b = fixture();
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        assert_eq!(p.decrement_ttl(), 63);
        assert!(p.verify_checksum());
        assert_eq!(p.ttl(), 63);
        assert_eq!(p.protocol(), IpProtocol::Udp);
        p.set_src_addr_update_checksum(Ipv4Addr::new(100, 64, 1, 2));
        p.set_dst_addr_update_checksum(Ipv4Addr::new(8, 8, 4, 4));
        assert!(p.verify_checksum());
        let incremental = p.checksum();
        p.fill_checksum();
        assert_eq!(p.checksum(), incremental);
        p.set_ttl(0);
        p.fill_checksum();
        assert_eq!(p.decrement_ttl(), 0);
        assert!(p.verify_checksum());

        p.set_ident(7);
        p.set_protocol(IpProtocol::Tcp);
        p.set_src_addr(Ipv4Addr::new(1, 2, 3, 4));
        p.set_dst_addr(Ipv4Addr::new(5, 6, 7, 8));
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert!(p.verify_checksum());
        p.set_checksum(0xBEEF);
        assert_eq!(p.checksum(), 0xBEEF);
        p.set_version(6);
        assert_eq!(p.version(), 6);
        p.set_version(4);
        p.set_header_len(24);
        assert_eq!(p.header_len(), 24);
        p.set_total_len(100);
        assert!(p.check_len().is_err());
        let _ = p.into_inner();
    }

    #[test]
    fn matches_etherparse() {
        let builder =
            etherparse::PacketBuilder::ethernet2([1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12])
                .ipv4([192, 168, 1, 1], [192, 168, 1, 2], 20)
                .udp(21, 1234);
        let payload = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        let mut frame = Vec::new();
        builder.write(&mut frame, &payload).unwrap();
        let p = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        let ep = etherparse::Ipv4HeaderSlice::from_slice(&frame[14..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.checksum(), ep.header_checksum());
        assert_eq!(p.total_len(), ep.total_len());
        assert_eq!(p.ttl(), ep.ttl());
        assert_eq!(u8::from(p.protocol()), ep.protocol().0);
        assert_eq!(p.src_addr(), ep.source_addr());
        assert_eq!(p.dst_addr(), ep.destination_addr());
        assert_eq!(p.dont_frag(), ep.dont_fragment());
        assert_eq!(p.ident(), ep.identification());
        assert_eq!(p.payload().len(), 8 + payload.len());

        // What we emit, etherparse accepts, and its checksum agrees.
        let mut ours = vec![0u8; 20 + 4];
        let r = Ipv4Repr {
            dscp: 34,
            ecn: 1,
            ident: 999,
            dont_frag: true,
            ..Ipv4Repr::new(
                Ipv4Addr::new(10, 1, 2, 3),
                Ipv4Addr::new(10, 3, 2, 1),
                IpProtocol::Unknown(253),
                4,
                255,
            )
        };
        r.emit(&mut Ipv4Packet::new_unchecked(&mut ours[..]))
            .unwrap();
        let (h, rest) = etherparse::Ipv4Header::from_slice(&ours).unwrap();
        assert_eq!(rest.len(), 4);
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        assert_eq!(h.dscp.value(), 34);
        assert_eq!(h.ecn.value(), 1);
        assert_eq!(h.identification, 999);
        assert_eq!(h.time_to_live, 255);
        assert_eq!(h.protocol.0, 253);
    }

    proptest! {
        #[test]
        fn getters_never_panic(mut data in proptest::collection::vec(any::<u8>(), 0..80), v4 in any::<bool>()) {
            if v4 && !data.is_empty() {
                data[0] = 0x40 | (data[0] & 0x0F);
            }
            if let Ok(p) = Ipv4Packet::new_checked(&data[..]) {
                let _ = (p.version(), p.header_len(), p.dscp(), p.ecn(), p.total_len(), p.ident());
                let _ = (p.dont_frag(), p.more_frags(), p.frag_offset(), p.is_fragment(), p.is_first_fragment());
                let _ = (p.ttl(), p.protocol(), p.checksum(), p.src_addr(), p.dst_addr());
                let _ = (p.options(), p.header(), p.verify_checksum(), p.payload(), p.packet());
                if let Ok(r) = Ipv4Repr::parse(&p) {
                    prop_assert_eq!(r.payload_len, p.payload().len());
                }
            }
        }

        #[test]
        fn repr_round_trip(src in any::<u32>(), dst in any::<u32>(), proto in any::<u8>(), len in 0usize..100,
                           ttl in any::<u8>(), dscp in 0u8..64, ecn in 0u8..4, ident in any::<u16>(),
                           df in any::<bool>(), mf in any::<bool>(), off in 0u16..8192) {
            let r = Ipv4Repr {
                src_addr: Ipv4Addr::from(src), dst_addr: Ipv4Addr::from(dst),
                protocol: IpProtocol::from(proto), payload_len: len, ttl, dscp, ecn, ident,
                dont_frag: df, more_frags: mf, frag_offset: off * 8,
            };
            let mut buf = vec![0u8; r.buffer_len() + len];
            let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
            r.emit(&mut p).unwrap();
            // After emit the view satisfies new_checked's invariants.
            prop_assert!(p.check_len().is_ok());
            prop_assert_eq!(Ipv4Repr::parse(&p).unwrap(), r);
        }
    }
}
