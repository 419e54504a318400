//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Vocabulary: a *sum* is the 16-bit one's complement sum of big-endian 16-bit words (an odd
//! trailing byte is padded with a zero byte); a *checksum* is the complement of a sum, the
//! value written into headers. A buffer whose checksum field is correct sums to `0xFFFF`.
//!
//! [`sum`] reads 32 bytes per iteration as native-endian `u64` words and adds their 32-bit
//! halves into a `u64` accumulator (no carry handling inside the loop); the result is folded
//! and byte-swapped once at the end, which is exact because the one's complement sum does not
//! depend on byte order (RFC 1071 §2(B)). The accumulator cannot overflow below 2^29
//! iterations, i.e. for any buffer shorter than 16 GiB.
//!
//! Incremental updates use RFC 1624 eqn. 3, `HC' = ~(~HC + ~m + m')`, which, unlike eqn. 2,
//! produces `0x0000` (never `0xFFFF`) when the new sum is `0xFFFF`, exactly as a full
//! recomputation does. The result equals a full recomputation whenever the data covered by the
//! checksum is not all zero after the change (always true for IP headers and for pseudo-header
//! sums, which contain a non-zero protocol number).
//!
//! UDP note: a UDP checksum of 0 means "no checksum" (IPv4) and a computed 0 is sent as
//! `0xFFFF`. Callers updating a UDP checksum incrementally must leave 0 alone and map a
//! `0x0000` result to `0xFFFF`.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::IpProtocol;

#[inline(always)]
fn ne_u64(data: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&data[at..at + 8]);
    u64::from_ne_bytes(b)
}

#[inline(always)]
fn halves(word: u64) -> u64 {
    (word & 0xFFFF_FFFF) + (word >> 32)
}

/// Folds a 64-bit accumulator of 16-bit words into a 16-bit one's complement sum
/// (end-around carry). Returns 0 only for an accumulator of 0.
#[inline]
pub fn fold(acc: u64) -> u16 {
    let mut acc = (acc & 0xFFFF_FFFF) + (acc >> 32);
    acc = (acc & 0xFFFF) + (acc >> 16);
    acc = (acc & 0xFFFF) + (acc >> 16);
    acc = (acc & 0xFFFF) + (acc >> 16);
    acc as u16
}

/// One's complement sum of `data` as big-endian 16-bit words (not complemented).
#[inline]
pub fn sum(data: &[u8]) -> u16 {
    // All reads are native-endian; the folded result is swapped back once at the end.
    let mut acc: u64 = 0;
    let mut blocks = data.chunks_exact(32);
    for block in &mut blocks {
        acc += halves(ne_u64(block, 0))
            + halves(ne_u64(block, 8))
            + halves(ne_u64(block, 16))
            + halves(ne_u64(block, 24));
    }
    let mut words = blocks.remainder().chunks_exact(8);
    for word in &mut words {
        acc += halves(ne_u64(word, 0));
    }
    let mut rest = words.remainder();
    if rest.len() >= 4 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&rest[..4]);
        acc += u64::from(u32::from_ne_bytes(b));
        rest = &rest[4..];
    }
    if rest.len() >= 2 {
        acc += u64::from(u16::from_ne_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
    }
    if let Some(&last) = rest.first() {
        acc += u64::from(u16::from_ne_bytes([last, 0]));
    }
    u16::from_be(fold(acc))
}

/// One's complement addition of two sums.
#[inline]
pub fn add(a: u16, b: u16) -> u16 {
    fold(u64::from(a) + u64::from(b))
}

/// One's complement sum of several partial sums.
#[inline]
pub fn combine(sums: &[u16]) -> u16 {
    fold(sums.iter().map(|&s| u64::from(s)).sum())
}

/// The checksum of `data` (the complement of [`sum`]).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !sum(data)
}

#[inline(always)]
fn words_u32(value: u32) -> u64 {
    u64::from(value >> 16) + u64::from(value & 0xFFFF)
}

#[inline(always)]
fn words_u128(value: u128) -> u64 {
    let hi = (value >> 64) as u64;
    let lo = value as u64;
    words_u32((hi >> 32) as u32)
        + words_u32(hi as u32)
        + words_u32((lo >> 32) as u32)
        + words_u32(lo as u32)
}

/// Sum of the IPv4 pseudo-header (RFC 768/793): addresses, protocol and the transport length.
#[inline]
pub fn pseudo_header_v4(src: &Ipv4Addr, dst: &Ipv4Addr, protocol: IpProtocol, length: u32) -> u16 {
    fold(
        words_u32(u32::from(*src))
            + words_u32(u32::from(*dst))
            + u64::from(u8::from(protocol))
            + words_u32(length),
    )
}

/// Sum of the IPv6 pseudo-header (RFC 8200 §8.1): addresses, upper-layer length, next header.
#[inline]
pub fn pseudo_header_v6(src: &Ipv6Addr, dst: &Ipv6Addr, protocol: IpProtocol, length: u32) -> u16 {
    fold(
        words_u128(u128::from(*src))
            + words_u128(u128::from(*dst))
            + u64::from(u8::from(protocol))
            + words_u32(length),
    )
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for std::net::Ipv4Addr {}
    impl Sealed for std::net::Ipv6Addr {}
}

/// An address family whose addresses go into a transport pseudo-header: implemented for
/// [`Ipv4Addr`] and [`Ipv6Addr`], so that both addresses of a checksum are the same family.
pub trait PseudoHeaderAddr: Copy + sealed::Sealed {
    /// `true` for IPv6, where a UDP checksum of 0 is invalid; `false` for IPv4, where it
    /// means "no checksum".
    const IS_IPV6: bool;

    /// The pseudo-header sum for a transport segment of `length` bytes.
    fn pseudo_header_sum(src: &Self, dst: &Self, protocol: IpProtocol, length: u32) -> u16;
}

impl PseudoHeaderAddr for Ipv4Addr {
    const IS_IPV6: bool = false;

    #[inline]
    fn pseudo_header_sum(src: &Self, dst: &Self, protocol: IpProtocol, length: u32) -> u16 {
        pseudo_header_v4(src, dst, protocol, length)
    }
}

impl PseudoHeaderAddr for Ipv6Addr {
    const IS_IPV6: bool = true;

    #[inline]
    fn pseudo_header_sum(src: &Self, dst: &Self, protocol: IpProtocol, length: u32) -> u16 {
        pseudo_header_v6(src, dst, protocol, length)
    }
}

/// The RFC 1624 adjustment (`~m + m'` over its 16-bit words) for a 16-bit value changing;
/// adjustments of several fields add up, and [`apply_delta`] applies their folded sum. Lets a
/// caller that rewrites the same fields of many packets the same way (a NAT flow) compute the
/// adjustment once.
#[inline]
pub fn delta_u16(old: u16, new: u16) -> u64 {
    if old == new {
        0
    } else {
        u64::from(!old) + u64::from(new)
    }
}

/// [`delta_u16`] for a 32-bit value (an IPv4 address).
#[inline]
pub fn delta_u32(old: u32, new: u32) -> u64 {
    if old == new {
        0
    } else {
        words_u32(!old) + words_u32(new)
    }
}

/// [`delta_u16`] for a 128-bit value (an IPv6 address).
#[inline]
pub fn delta_u128(old: u128, new: u128) -> u64 {
    if old == new {
        0
    } else {
        words_u128(!old) + words_u128(new)
    }
}

/// Applies a folded adjustment ([`fold`] of summed deltas) to a checksum; 0 changes nothing.
#[inline]
pub fn apply_delta(old_checksum: u16, delta: u16) -> u16 {
    if delta == 0 {
        old_checksum
    } else {
        update(old_checksum, u64::from(delta))
    }
}

/// RFC 1624 eqn. 3 over an accumulator holding `~m + m'` as 16-bit words.
#[inline(always)]
fn update(old_checksum: u16, delta: u64) -> u16 {
    !fold(u64::from(!old_checksum) + delta)
}

/// New checksum after one 16-bit word covered by it changed from `old` to `new`
/// (e.g. TTL+protocol, a port).
#[inline]
pub fn update_u16(old_checksum: u16, old: u16, new: u16) -> u16 {
    if old == new {
        return old_checksum;
    }
    update(old_checksum, u64::from(!old) + u64::from(new))
}

/// New checksum after a 32-bit value at an even offset changed (e.g. an IPv4 address).
#[inline]
pub fn update_u32(old_checksum: u16, old: u32, new: u32) -> u16 {
    if old == new {
        return old_checksum;
    }
    update(old_checksum, words_u32(!old) + words_u32(new))
}

/// New checksum after a 128-bit value at an even offset changed (e.g. an IPv6 address).
#[inline]
pub fn update_u128(old_checksum: u16, old: u128, new: u128) -> u16 {
    if old == new {
        return old_checksum;
    }
    update(old_checksum, words_u128(!old) + words_u128(new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Byte-by-byte reference implementation (RFC 1071 §4.1).
    fn naive_sum(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for pair in data.chunks(2) {
            let word = if pair.len() == 2 {
                u16::from_be_bytes([pair[0], pair[1]])
            } else {
                u16::from_be_bytes([pair[0], 0])
            };
            acc += u32::from(word);
            while acc > 0xFFFF {
                acc = (acc & 0xFFFF) + (acc >> 16);
            }
        }
        acc as u16
    }

    fn put(data: &mut [u8], at: usize, bytes: &[u8]) {
        data[at..at + bytes.len()].copy_from_slice(bytes);
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum(&data), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn known_ipv4_header_checksum() {
        // A classic example header whose checksum is 0xb861.
        let mut header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&header), 0xb861);
        put(&mut header, 10, &0xb861u16.to_be_bytes());
        assert_eq!(sum(&header), 0xFFFF);
    }

    #[test]
    fn empty_and_odd_lengths() {
        assert_eq!(sum(&[]), 0);
        assert_eq!(sum(&[0xab]), 0xab00);
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        assert_eq!(checksum(&[0u8; 40]), 0xFFFF);
        // Carries wrap around: 0xFFFF + 0x0001 is 0x0001 in one's complement.
        assert_eq!(sum(&[0xFF, 0xFF, 0x00, 0x01]), 0x0001);
        assert_eq!(add(0xFFFF, 0x0001), 0x0001);
        assert_eq!(combine(&[0x8000, 0x8000, 0x0001]), 0x0002);
        assert_eq!(fold(u64::MAX), 0xFFFF);
        assert_eq!(fold(0), 0);
    }

    #[test]
    fn rfc1624_example_eqn3_gives_zero_not_minus_zero() {
        // RFC 1624 §4: other words sum to 0xCD7A, m = 0x5555 changes to m' = 0x3285.
        let hc = !add(0xCD7A, 0x5555);
        assert_eq!(hc, 0xDD2F);
        assert_eq!(update_u16(hc, 0x5555, 0x3285), 0x0000);
        // And back: from a checksum of 0x0000 (sum 0xFFFF).
        assert_eq!(update_u16(0x0000, 0x3285, 0x5555), 0xDD2F);
    }

    #[test]
    fn pseudo_headers_match_byte_layout() {
        let s4 = Ipv4Addr::new(192, 168, 1, 1);
        let d4 = Ipv4Addr::new(10, 0, 0, 254);
        let mut ph4 = [0u8; 12];
        put(&mut ph4, 0, &s4.octets());
        put(&mut ph4, 4, &d4.octets());
        ph4[9] = 17;
        put(&mut ph4, 10, &1234u16.to_be_bytes());
        assert_eq!(
            pseudo_header_v4(&s4, &d4, IpProtocol::Udp, 1234),
            naive_sum(&ph4)
        );

        let s6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let d6: Ipv6Addr = "fe80::abcd:ef01:2345:6789".parse().unwrap();
        let mut ph6 = [0u8; 40];
        put(&mut ph6, 0, &s6.octets());
        put(&mut ph6, 16, &d6.octets());
        put(&mut ph6, 32, &70000u32.to_be_bytes());
        ph6[39] = 58;
        assert_eq!(
            pseudo_header_v6(&s6, &d6, IpProtocol::Icmpv6, 70000),
            naive_sum(&ph6)
        );
        assert_eq!(
            <Ipv6Addr as PseudoHeaderAddr>::pseudo_header_sum(&s6, &d6, IpProtocol::Icmpv6, 70000),
            naive_sum(&ph6)
        );
    }

    /// A header-like buffer: a non-zero first word (so it is never all zero) and random words.
    fn header_strategy() -> impl Strategy<Value = Vec<u8>> {
        (2usize..40).prop_flat_map(|words| {
            proptest::collection::vec(any::<u8>(), words * 2).prop_map(|mut v| {
                v[0] = 0x45;
                v
            })
        })
    }

    proptest! {
        #[test]
        fn sum_matches_naive(data in proptest::collection::vec(any::<u8>(), 0..1600), skip in 0usize..8) {
            let skip = skip.min(data.len());
            // Unaligned sub-slices too.
            prop_assert_eq!(sum(&data[skip..]), naive_sum(&data[skip..]));
            prop_assert_eq!(sum(&data), naive_sum(&data));
        }

        #[test]
        fn update_u16_matches_recomputation(mut data in header_strategy(), idx in any::<prop::sample::Index>(), new in any::<u16>()) {
            let word = 1 + idx.index(data.len() / 2 - 1);
            let at = word * 2;
            let hc = checksum(&data);
            let old = u16::from_be_bytes([data[at], data[at + 1]]);
            put(&mut data, at, &new.to_be_bytes());
            prop_assert_eq!(update_u16(hc, old, new), checksum(&data));
        }

        #[test]
        fn update_u32_matches_recomputation(mut data in header_strategy(), idx in any::<prop::sample::Index>(), new in any::<u32>()) {
            prop_assume!(data.len() >= 6);
            // Any even offset after the first word (IPv4 addresses sit at 12 and 16).
            let at = 2 + 2 * idx.index((data.len() - 6) / 2 + 1);
            let hc = checksum(&data);
            let old = u32::from_be_bytes(data[at..at + 4].try_into().unwrap());
            put(&mut data, at, &new.to_be_bytes());
            prop_assert_eq!(update_u32(hc, old, new), checksum(&data));
        }

        #[test]
        fn update_u128_matches_recomputation(mut data in header_strategy(), idx in any::<prop::sample::Index>(), new in any::<u128>()) {
            prop_assume!(data.len() >= 18);
            let at = 2 + 2 * idx.index((data.len() - 18) / 2 + 1);
            let hc = checksum(&data);
            let old = u128::from_be_bytes(data[at..at + 16].try_into().unwrap());
            put(&mut data, at, &new.to_be_bytes());
            prop_assert_eq!(update_u128(hc, old, new), checksum(&data));
        }

        /// RFC 1624 corner cases: the new sum is 0xFFFF (checksum 0x0000), and the old one was.
        #[test]
        fn update_u16_corner_cases(mut data in header_strategy(), idx in any::<prop::sample::Index>()) {
            let word = 1 + idx.index(data.len() / 2 - 1);
            let at = word * 2;
            let old = u16::from_be_bytes([data[at], data[at + 1]]);
            // Choose the new word so that the whole buffer sums to 0xFFFF.
            put(&mut data, at, &[0, 0]);
            let others = sum(&data);
            let new = !others;
            put(&mut data, at, &old.to_be_bytes());
            let hc = checksum(&data);
            put(&mut data, at, &new.to_be_bytes());
            prop_assert_eq!(checksum(&data), 0x0000);
            prop_assert_eq!(update_u16(hc, old, new), 0x0000);
            // From checksum 0x0000 back to the old word.
            let hc0 = checksum(&data);
            put(&mut data, at, &old.to_be_bytes());
            prop_assert_eq!(update_u16(hc0, new, old), checksum(&data));
        }

        /// The checksum field itself lies inside the covered data, as in an IPv4 header.
        #[test]
        fn update_inside_a_header_still_verifies(mut data in header_strategy(), new in any::<u32>()) {
            prop_assume!(data.len() >= 20);
            put(&mut data, 10, &[0, 0]);
            let hc = checksum(&data);
            put(&mut data, 10, &hc.to_be_bytes());
            prop_assert_eq!(sum(&data), 0xFFFF);
            let old = u32::from_be_bytes(data[12..16].try_into().unwrap());
            put(&mut data, 12, &new.to_be_bytes());
            let hc2 = update_u32(hc, old, new);
            put(&mut data, 10, &hc2.to_be_bytes());
            prop_assert_eq!(sum(&data), 0xFFFF);
        }
    }
}
