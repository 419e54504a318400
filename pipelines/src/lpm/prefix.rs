//! `Ipv4Prefix` and `Ipv6Prefix`: a network address and a length, host bits zero.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::ser::{Serialize, Serializer};

use super::LpmError;

/// Longest input kept verbatim in [`LpmError::Parse`].
const MAX_ECHO: usize = 64;

fn parse_error(input: &str) -> LpmError {
    LpmError::Parse(input.chars().take(MAX_ECHO).collect())
}

/// Splits `ADDR/LEN` (or a bare `ADDR`, which means a host route) and parses the length:
/// 1 to 3 ASCII digits, nothing else (no sign, no spaces).
fn split_prefix(input: &str, max: u8) -> Result<(&str, u8), LpmError> {
    let Some((addr, len)) = input.split_once('/') else {
        return Ok((input, max));
    };
    if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err(parse_error(input));
    }
    let len: u32 = len.parse().map_err(|_| parse_error(input))?;
    match u8::try_from(len) {
        Ok(l) if l <= max => Ok((addr, l)),
        _ => Err(LpmError::BadPrefixLength { len, max }),
    }
}

macro_rules! prefix_type {
    (
        $(#[$doc:meta])*
        $name:ident, $addr:ty, $bits:ty, $max:expr, $expecting:expr
    ) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name {
            // Field order matters: the derived `Ord` sorts by address, then by length, which is
            // the order of `iter()` on the tables.
            addr: $addr,
            len: u8,
        }

        impl $name {
            /// Address width in bits.
            pub const MAX_LEN: u8 = $max;

            /// The prefix `addr/len`. Rejects `len` longer than the address and addresses with
            /// host bits set.
            pub fn new(addr: $addr, len: u8) -> Result<Self, LpmError> {
                if len > Self::MAX_LEN {
                    return Err(LpmError::BadPrefixLength { len: len.into(), max: Self::MAX_LEN });
                }
                let bits = <$bits>::from(addr);
                let network = bits & Self::mask_bits(len);
                if network != bits {
                    return Err(LpmError::HostBitsSet {
                        addr: IpAddr::from(addr),
                        len,
                        network: IpAddr::from(<$addr>::from(network)),
                    });
                }
                Ok(Self { addr, len })
            }

            /// The prefix of length `len` that contains `addr` (host bits are cleared instead of
            /// rejected). Rejects only a length longer than the address.
            pub fn truncating(addr: $addr, len: u8) -> Result<Self, LpmError> {
                if len > Self::MAX_LEN {
                    return Err(LpmError::BadPrefixLength { len: len.into(), max: Self::MAX_LEN });
                }
                let bits = <$bits>::from(addr) & Self::mask_bits(len);
                Ok(Self { addr: <$addr>::from(bits), len })
            }

            /// The host route for `addr` (full length).
            pub const fn host(addr: $addr) -> Self {
                Self { addr, len: Self::MAX_LEN }
            }

            /// The network address (host bits are zero).
            pub const fn network(&self) -> $addr {
                self.addr
            }

            /// The prefix length in bits.
            #[allow(clippy::len_without_is_empty)] // a prefix length, not a collection
            pub const fn len(&self) -> u8 {
                self.len
            }

            /// The network address as an integer (what the tables store).
            pub fn bits(&self) -> $bits {
                <$bits>::from(self.addr)
            }

            /// The netmask as an integer (`len` leading ones).
            pub fn mask(&self) -> $bits {
                Self::mask_bits(self.len)
            }

            /// Whether `addr` is inside this prefix.
            pub fn contains(&self, addr: $addr) -> bool {
                <$bits>::from(addr) & self.mask() == self.bits()
            }

            /// Whether `other` is this prefix or a more specific one inside it.
            pub fn covers(&self, other: &Self) -> bool {
                other.len >= self.len && self.contains(other.addr)
            }

            fn mask_bits(len: u8) -> $bits {
                <$bits>::MAX
                    .checked_shl(u32::from(Self::MAX_LEN) - u32::from(len))
                    .unwrap_or(0)
            }

            /// Builds a prefix from parts that are already known to be valid.
            pub(crate) fn from_raw(bits: $bits, len: u8) -> Self {
                debug_assert!(Self::new(<$addr>::from(bits), len).is_ok());
                Self { addr: <$addr>::from(bits), len }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}/{}", self.addr, self.len)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = LpmError;

            /// Parses `ADDR/LEN`; a bare `ADDR` is the host route (`/32`, `/128`), as in
            /// iproute2. Host bits must be zero.
            fn from_str(input: &str) -> Result<Self, LpmError> {
                let (addr, len) = split_prefix(input, Self::MAX_LEN)?;
                let addr: $addr = addr.parse().map_err(|_| parse_error(input))?;
                Self::new(addr, len)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct PrefixVisitor;

                impl Visitor<'_> for PrefixVisitor {
                    type Value = $name;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }

                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$name, E> {
                        v.parse().map_err(E::custom)
                    }
                }

                deserializer.deserialize_str(PrefixVisitor)
            }
        }
    };
}

prefix_type!(
    /// An IPv4 prefix such as `10.1.0.0/16`: a network address with its host bits zero and a
    /// length of 0 to 32. Ordered by address, then length. Serialized as its string form.
    Ipv4Prefix,
    Ipv4Addr,
    u32,
    32,
    "an IPv4 prefix such as \"10.1.0.0/16\""
);

prefix_type!(
    /// An IPv6 prefix such as `2001:db8::/32`: a network address with its host bits zero and a
    /// length of 0 to 128. Ordered by address, then length. Serialized as its string form.
    Ipv6Prefix,
    Ipv6Addr,
    u128,
    128,
    "an IPv6 prefix such as \"2001:db8::/32\""
);
