//! VXLAN (RFC 7348) header.
//!
//! ```text
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! ```
//!
//! `new_checked` only checks the length: whether the I flag is set (`has_vni()`) is the
//! decapsulation stage's decision and drop reason. The payload is the inner Ethernet frame.

use super::{read_u32, write_u32, WireError};

mod field {
    pub const FLAGS: usize = 0;
    /// Flags (8 bits) + reserved (24 bits).
    pub const WORD0: usize = 0;
    /// VNI (24 bits) + reserved (8 bits).
    pub const WORD1: usize = 4;
    pub const PAYLOAD: usize = 8;
}

/// Length of the VXLAN header.
pub const VXLAN_HEADER_LEN: usize = field::PAYLOAD;

/// IANA-assigned UDP destination port for VXLAN.
pub const VXLAN_PORT: u16 = 4789;

/// The I flag: the VNI is valid.
const FLAG_I: u8 = 0x08;

/// A view of a VXLAN header and its inner frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VxlanPacket<T> {
    /// Wraps a buffer without checking it.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        VxlanPacket { buffer }
    }

    /// Wraps a buffer and checks it (see [`check_len`](Self::check_len)).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// `Truncated` if shorter than 8 bytes.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < VXLAN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// The underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The flags byte.
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Whether the I flag is set (RFC 7348: MUST be set for a valid VNI).
    #[inline]
    pub fn has_vni(&self) -> bool {
        self.flags() & FLAG_I != 0
    }

    /// The 24-bit VXLAN network identifier.
    #[inline]
    pub fn vni(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::WORD1) >> 8
    }

    /// The 24 reserved bits after the flags.
    #[inline]
    pub fn reserved0(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::WORD0) & 0x00FF_FFFF
    }

    /// The 8 reserved bits after the VNI.
    #[inline]
    pub fn reserved1(&self) -> u8 {
        self.buffer.as_ref()[field::WORD1 + 3]
    }

    /// The inner Ethernet frame.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VxlanPacket<T> {
    /// Sets the flags byte.
    #[inline]
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    /// Sets the VNI (the low 24 bits of `vni`), keeping the reserved byte after it.
    #[inline]
    pub fn set_vni(&mut self, vni: u32) {
        let reserved = u32::from(self.reserved1());
        write_u32(
            self.buffer.as_mut(),
            field::WORD1,
            ((vni & 0x00FF_FFFF) << 8) | reserved,
        );
    }

    /// Sets the 24 reserved bits after the flags (the low 24 bits of `value`).
    #[inline]
    pub fn set_reserved0(&mut self, value: u32) {
        let flags = u32::from(self.flags()) << 24;
        write_u32(
            self.buffer.as_mut(),
            field::WORD0,
            flags | (value & 0x00FF_FFFF),
        );
    }

    /// Sets the 8 reserved bits after the VNI.
    #[inline]
    pub fn set_reserved1(&mut self, value: u8) {
        self.buffer.as_mut()[field::WORD1 + 3] = value;
    }

    /// The inner Ethernet frame, mutable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// A VXLAN header to build: the I flag set, reserved fields zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VxlanRepr {
    /// VXLAN network identifier (24 bits).
    pub vni: u32,
}

impl VxlanRepr {
    /// Reads the VNI; `Malformed` if the I flag is clear.
    pub fn parse<T: AsRef<[u8]>>(packet: &VxlanPacket<T>) -> Result<Self, WireError> {
        packet.check_len()?;
        if !packet.has_vni() {
            return Err(WireError::Malformed);
        }
        Ok(VxlanRepr { vni: packet.vni() })
    }

    /// 8.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        VXLAN_HEADER_LEN
    }

    /// Writes the header (`Truncated` if the buffer is shorter than 8 bytes).
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut VxlanPacket<T>,
    ) -> Result<(), WireError> {
        let data = packet.buffer.as_mut();
        if data.len() < VXLAN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        write_u32(data, field::WORD0, u32::from(FLAG_I) << 24);
        write_u32(data, field::WORD1, (self.vni & 0x00FF_FFFF) << 8);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEADER: [u8; 10] = [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0, 0xAB, 0xCD];

    #[test]
    fn parse_fixture() {
        let p = VxlanPacket::new_checked(&HEADER[..]).unwrap();
        assert_eq!(p.flags(), 0x08);
        assert!(p.has_vni());
        assert_eq!(p.vni(), 0x123456);
        assert_eq!((p.reserved0(), p.reserved1()), (0, 0));
        assert_eq!(p.payload(), &[0xAB, 0xCD]);
        assert_eq!(VxlanRepr::parse(&p).unwrap(), VxlanRepr { vni: 0x123456 });
    }

    #[test]
    fn emit_round_trip() {
        let mut out = [0xFFu8; 10];
        let r = VxlanRepr { vni: 0x123456 };
        r.emit(&mut VxlanPacket::new_unchecked(&mut out[..]))
            .unwrap();
        assert_eq!(&out[..8], &HEADER[..8]);
        let mut short = [0u8; 7];
        assert_eq!(
            r.emit(&mut VxlanPacket::new_unchecked(&mut short[..])),
            Err(WireError::Truncated)
        );
        assert_eq!(r.buffer_len(), 8);
    }

    #[test]
    fn missing_i_flag_and_truncation() {
        let mut b = HEADER;
        b[0] = 0;
        let p = VxlanPacket::new_checked(&b[..]).unwrap();
        assert!(!p.has_vni());
        assert_eq!(VxlanRepr::parse(&p).unwrap_err(), WireError::Malformed);
        for n in 0..8 {
            assert_eq!(
                VxlanPacket::new_checked(&HEADER[..n]).unwrap_err(),
                WireError::Truncated
            );
        }
        assert!(VxlanPacket::new_checked(&HEADER[..8])
            .unwrap()
            .payload()
            .is_empty());
    }

    #[test]
    fn setters() {
        let mut b = HEADER;
        let mut p = VxlanPacket::new_checked(&mut b[..]).unwrap();
        p.set_reserved1(0x77);
        p.set_vni(0xFF00_0001);
        assert_eq!(p.vni(), 0x000001);
        assert_eq!(p.reserved1(), 0x77);
        p.set_reserved0(0xABCDEF);
        assert_eq!(p.reserved0(), 0xABCDEF);
        assert!(p.has_vni());
        p.set_flags(0);
        assert!(!p.has_vni());
        assert_eq!(p.reserved0(), 0xABCDEF);
        p.payload_mut()[0] = 1;
        assert_eq!(p.into_inner()[8], 1);
    }

    proptest! {
        #[test]
        fn getters_never_panic(data in proptest::collection::vec(any::<u8>(), 0..16)) {
            if let Ok(p) = VxlanPacket::new_checked(&data[..]) {
                let _ = (p.flags(), p.has_vni(), p.vni(), p.reserved0(), p.reserved1(), p.payload());
                let _ = VxlanRepr::parse(&p);
            }
        }

        #[test]
        fn vni_round_trip(vni in 0u32..(1 << 24)) {
            let mut b = [0u8; 8];
            VxlanRepr { vni }.emit(&mut VxlanPacket::new_unchecked(&mut b[..])).unwrap();
            let p = VxlanPacket::new_checked(&b[..]).unwrap();
            prop_assert_eq!(VxlanRepr::parse(&p).unwrap().vni, vni);
        }
    }
}
