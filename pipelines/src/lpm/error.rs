//! Errors of the LPM module.

use std::net::IpAddr;

use super::RESERVED_VALUE;

/// Why a prefix or a route was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LpmError {
    /// The prefix length is longer than the address (> 32 for IPv4, > 128 for IPv6).
    #[error("prefix length /{len} is longer than the {max}-bit address")]
    BadPrefixLength {
        /// The length that was asked for.
        len: u32,
        /// The address width in bits.
        max: u8,
    },
    /// The address has bits set beyond the prefix length (`10.1.2.3/16`).
    #[error("{addr}/{len} has host bits set (the network is {network}/{len})")]
    HostBitsSet {
        /// The address as given.
        addr: IpAddr,
        /// The prefix length.
        len: u8,
        /// The address with the host bits cleared.
        network: IpAddr,
    },
    /// The text is not `ADDRESS/LENGTH` (or a bare address).
    #[error("cannot parse {0:?} as a prefix (expected ADDRESS/LENGTH, e.g. 10.1.0.0/16)")]
    Parse(String),
    /// The value is the sentinel the tables use internally for "no route" (`u32::MAX`).
    #[error("value {:#x} is reserved by the LPM tables", RESERVED_VALUE)]
    ReservedValue,
}
