//! TCP (RFC 9293) header view.
//!
//! The view's buffer is the whole segment (the IP payload, padding excluded): the checksum
//! and `payload()` cover everything after the header to the end of the buffer. No Repr: the
//! dataplane rewrites TCP headers in place but never builds segments.

use core::ops::{BitAnd, BitOr};

use super::checksum::{self, PseudoHeaderAddr};
use super::{read_u16, read_u32, write_u16, write_u32, IpProtocol, WireError};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ_NUM: usize = 4;
    pub const ACK_NUM: usize = 8;
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
    pub const OPTIONS: usize = 20;
}

/// Length of a TCP header without options.
pub const TCP_HEADER_LEN: usize = field::OPTIONS;

/// The eight TCP flag bits (CWR ECE URG ACK PSH RST SYN FIN) of header byte 13.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// No more data from sender.
    pub const FIN: TcpFlags = TcpFlags(0x01);
    /// Synchronize sequence numbers.
    pub const SYN: TcpFlags = TcpFlags(0x02);
    /// Reset the connection.
    pub const RST: TcpFlags = TcpFlags(0x04);
    /// Push.
    pub const PSH: TcpFlags = TcpFlags(0x08);
    /// Acknowledgment field significant.
    pub const ACK: TcpFlags = TcpFlags(0x10);
    /// Urgent pointer significant.
    pub const URG: TcpFlags = TcpFlags(0x20);
    /// ECN echo.
    pub const ECE: TcpFlags = TcpFlags(0x40);
    /// Congestion window reduced.
    pub const CWR: TcpFlags = TcpFlags(0x80);

    /// The raw bits.
    #[inline]
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every bit of `other` is set.
    #[inline]
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for TcpFlags {
    type Output = TcpFlags;
    #[inline]
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl BitAnd for TcpFlags {
    type Output = TcpFlags;
    #[inline]
    fn bitand(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 & rhs.0)
    }
}

/// A view of a TCP segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps a buffer without checking it.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    /// Wraps a buffer and checks it (see [`check_len`](Self::check_len)).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// `Truncated` if shorter than 20 bytes or than the data offset; `BadHeaderLength` if the
    /// data offset is below 5.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < TCP_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let header_len = usize::from(self.header_len());
        if header_len < TCP_HEADER_LEN {
            return Err(WireError::BadHeaderLength);
        }
        if header_len > len {
            return Err(WireError::Truncated);
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

    /// Sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SEQ_NUM)
    }

    /// Acknowledgment number.
    #[inline]
    pub fn ack_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::ACK_NUM)
    }

    /// Header length in bytes (data offset × 4).
    #[inline]
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::DATA_OFFSET] >> 4) * 4
    }

    /// All eight flag bits.
    #[inline]
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.buffer.as_ref()[field::FLAGS])
    }

    /// FIN flag.
    #[inline]
    pub fn fin(&self) -> bool {
        self.flags().contains(TcpFlags::FIN)
    }

    /// SYN flag.
    #[inline]
    pub fn syn(&self) -> bool {
        self.flags().contains(TcpFlags::SYN)
    }

    /// RST flag.
    #[inline]
    pub fn rst(&self) -> bool {
        self.flags().contains(TcpFlags::RST)
    }

    /// PSH flag.
    #[inline]
    pub fn psh(&self) -> bool {
        self.flags().contains(TcpFlags::PSH)
    }

    /// ACK flag.
    #[inline]
    pub fn ack(&self) -> bool {
        self.flags().contains(TcpFlags::ACK)
    }

    /// URG flag.
    #[inline]
    pub fn urg(&self) -> bool {
        self.flags().contains(TcpFlags::URG)
    }

    /// Window size (unscaled).
    #[inline]
    pub fn window_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::WINDOW)
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Urgent pointer.
    #[inline]
    pub fn urgent_at(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::URGENT)
    }

    /// Options bytes (empty for data offset 5).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..usize::from(self.header_len())]
    }

    /// Segment data, to the end of the buffer.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[usize::from(self.header_len())..]
    }

    /// Whether the checksum over the whole buffer and the pseudo-header is correct.
    #[inline]
    pub fn verify_checksum<A: PseudoHeaderAddr>(&self, src_addr: &A, dst_addr: &A) -> bool {
        let data = self.buffer.as_ref();
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let pseudo = A::pseudo_header_sum(src_addr, dst_addr, IpProtocol::Tcp, len);
        checksum::add(pseudo, checksum::sum(data)) == 0xFFFF
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
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

    /// Sets the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::SEQ_NUM, value);
    }

    /// Sets the acknowledgment number.
    #[inline]
    pub fn set_ack_number(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::ACK_NUM, value);
    }

    /// Sets the header length in bytes (a multiple of 4, at most 60). Check the view again
    /// before reading it.
    #[inline]
    pub fn set_header_len(&mut self, len: u8) {
        let b = &mut self.buffer.as_mut()[field::DATA_OFFSET];
        *b = (*b & 0x0F) | (((len / 4) & 0x0F) << 4);
    }

    /// Sets all eight flag bits.
    #[inline]
    pub fn set_flags(&mut self, flags: TcpFlags) {
        self.buffer.as_mut()[field::FLAGS] = flags.0;
    }

    /// Sets the window size.
    #[inline]
    pub fn set_window_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::WINDOW, value);
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Sets the urgent pointer.
    #[inline]
    pub fn set_urgent_at(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::URGENT, value);
    }

    /// Computes and writes the checksum over the whole buffer and the pseudo-header.
    #[inline]
    pub fn fill_checksum<A: PseudoHeaderAddr>(&mut self, src_addr: &A, dst_addr: &A) {
        self.set_checksum(0);
        let data = self.buffer.as_ref();
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let pseudo = A::pseudo_header_sum(src_addr, dst_addr, IpProtocol::Tcp, len);
        let sum = !checksum::add(pseudo, checksum::sum(data));
        self.set_checksum(sum);
    }

    /// Mutable options bytes.
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.header_len());
        &mut self.buffer.as_mut()[field::OPTIONS..end]
    }

    /// Mutable segment data.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = usize::from(self.header_len());
        &mut self.buffer.as_mut()[start..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    /// SYN 49152 -> 80, seq 1, window 64240, MSS option 1460, no data; no checksum yet.
    const SYN: [u8; 24] = [
        0xc0, 0x00, 0x00, 0x50, // ports
        0x00, 0x00, 0x00, 0x01, // seq
        0x00, 0x00, 0x00, 0x00, // ack
        0x60, 0x02, 0xfa, 0xf0, // offset 6, SYN, window
        0x00, 0x00, 0x00, 0x00, // checksum, urgent
        0x02, 0x04, 0x05, 0xb4, // MSS
    ];

    fn addrs() -> (Ipv4Addr, Ipv4Addr) {
        (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
    }

    #[test]
    fn parse_fixture() {
        let mut b = SYN;
        let (s, d) = addrs();
        let mut p = TcpPacket::new_checked(&mut b[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (49152, 80));
        assert_eq!(p.seq_number(), 1);
        assert_eq!(p.ack_number(), 0);
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.flags(), TcpFlags::SYN);
        assert!(p.syn() && !p.ack() && !p.fin() && !p.rst() && !p.psh() && !p.urg());
        assert_eq!(p.window_len(), 64240);
        assert_eq!(p.urgent_at(), 0);
        assert_eq!(p.options(), &[0x02, 0x04, 0x05, 0xb4]);
        assert!(p.payload().is_empty());
        assert!(!p.verify_checksum(&s, &d));
        p.fill_checksum(&s, &d);
        assert!(p.verify_checksum(&s, &d));
        assert!(!p.verify_checksum(&s, &Ipv4Addr::new(10, 0, 0, 3)));
    }

    #[test]
    fn setters() {
        let mut b = SYN.to_vec();
        b.extend_from_slice(b"data");
        let (s, d): (Ipv6Addr, Ipv6Addr) = ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
        let mut p = TcpPacket::new_checked(&mut b[..]).unwrap();
        p.set_src_port(1);
        p.set_dst_port(2);
        p.set_seq_number(0xdeadbeef);
        p.set_ack_number(0xfeedface);
        p.set_flags(TcpFlags::ACK | TcpFlags::PSH | TcpFlags::FIN);
        p.set_window_len(7);
        p.set_urgent_at(9);
        p.options_mut().copy_from_slice(&[1, 1, 1, 1]);
        p.payload_mut()[0] = b'D';
        p.fill_checksum(&s, &d);
        assert!(p.verify_checksum(&s, &d));
        assert_eq!((p.src_port(), p.dst_port()), (1, 2));
        assert_eq!((p.seq_number(), p.ack_number()), (0xdeadbeef, 0xfeedface));
        assert!(p.ack() && p.psh() && p.fin() && !p.syn());
        assert_eq!(p.flags().bits(), 0x19);
        assert_eq!((p.flags() & TcpFlags::ACK), TcpFlags::ACK);
        assert_eq!((p.window_len(), p.urgent_at()), (7, 9));
        assert_eq!(p.payload(), b"Data");
        p.set_header_len(20);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.payload().len(), 8);
        p.set_header_len(60);
        assert_eq!(p.check_len(), Err(WireError::Truncated));
        let _ = p.into_inner();
    }

    #[test]
    fn truncated_and_bad_offsets_rejected() {
        for n in 0..SYN.len() {
            assert_eq!(
                TcpPacket::new_checked(&SYN[..n]).unwrap_err(),
                WireError::Truncated,
                "prefix {n}"
            );
        }
        for off in 0..5u8 {
            let mut b = SYN;
            b[12] = off << 4;
            assert_eq!(
                TcpPacket::new_checked(&b[..]).unwrap_err(),
                WireError::BadHeaderLength
            );
        }
    }

    #[test]
    fn incremental_rewrite_matches_full() {
        let mut b = SYN.to_vec();
        b.extend_from_slice(&[1, 2, 3]); // odd length
        let (s, d) = addrs();
        let new_dst = Ipv4Addr::new(172, 16, 5, 5);
        let mut p = TcpPacket::new_checked(&mut b[..]).unwrap();
        p.fill_checksum(&s, &d);
        let mut sum = checksum::update_u32(p.checksum(), u32::from(d), u32::from(new_dst));
        sum = checksum::update_u16(sum, p.dst_port(), 8080);
        p.set_dst_port(8080);
        p.set_checksum(sum);
        assert!(p.verify_checksum(&s, &new_dst));
    }

    #[test]
    fn matches_etherparse() {
        let (s, d) = addrs();
        let mut header = etherparse::TcpHeader::new(1111, 2222, 0x01020304, 512);
        header.ack = true;
        header.psh = true;
        header.acknowledgment_number = 77;
        let builder =
            etherparse::PacketBuilder::ethernet2([1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12])
                .single_vlan(42.try_into().unwrap())
                .ipv4(s.octets(), d.octets(), 20)
                .tcp_header(header);
        let mut frame = Vec::new();
        builder.write(&mut frame, b"hello tcp").unwrap();
        let eth = crate::wire::EthernetFrame::new_checked(&frame[..]).unwrap();
        assert_eq!(eth.vlan_id(), Some(42));
        let ip = crate::wire::Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(ip.verify_checksum());
        let p = TcpPacket::new_checked(ip.payload()).unwrap();
        let ep = etherparse::TcpHeaderSlice::from_slice(ip.payload()).unwrap();
        assert_eq!(
            (p.src_port(), p.dst_port()),
            (ep.source_port(), ep.destination_port())
        );
        assert_eq!(p.seq_number(), ep.sequence_number());
        assert_eq!(p.ack_number(), ep.acknowledgment_number());
        assert_eq!(usize::from(p.header_len()), ep.slice().len());
        assert_eq!((p.ack(), p.psh(), p.syn()), (ep.ack(), ep.psh(), ep.syn()));
        assert_eq!(p.window_len(), ep.window_size());
        assert_eq!(p.checksum(), ep.checksum());
        assert!(p.verify_checksum(&s, &d));
        assert_eq!(p.payload(), b"hello tcp");
    }

    proptest! {
        #[test]
        fn getters_never_panic(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(p) = TcpPacket::new_checked(&data[..]) {
                let _ = (p.src_port(), p.dst_port(), p.seq_number(), p.ack_number(), p.header_len());
                let _ = (p.flags(), p.fin(), p.syn(), p.rst(), p.psh(), p.ack(), p.urg());
                let _ = (p.window_len(), p.checksum(), p.urgent_at(), p.options(), p.payload());
                let (s, d) = addrs();
                let _ = p.verify_checksum(&s, &d);
                let s6 = Ipv6Addr::LOCALHOST;
                let _ = p.verify_checksum(&s6, &s6);
            }
        }
    }
}
