//! Longest-prefix-match tables: [`Ipv4Lpm`] and [`Ipv6Lpm`] map prefixes to a `u32` (a
//! next-hop id chosen by the caller) and answer "which route is the most specific one
//! containing this address".
//!
//! (Design and measurements: filled in below.)

mod error;
mod poptrie;
mod prefix;
mod table;

#[cfg(test)]
mod tests;

pub use error::LpmError;
pub use prefix::{Ipv4Prefix, Ipv6Prefix};
pub use table::{Ipv4Lpm, Ipv6Lpm};

/// The one `u32` a route cannot map to: the tables use it internally for "no route", and
/// `insert` rejects it with [`LpmError::ReservedValue`].
pub const RESERVED_VALUE: u32 = poptrie::NONE;
