//! Longest-prefix-match tables: [`Ipv4Lpm`] and [`Ipv6Lpm`] map prefixes ([`Ipv4Prefix`],
//! [`Ipv6Prefix`]) to a `u32` chosen by the caller (a next-hop id) and answer "which route is
//! the most specific one containing this address". One table per VRF and address family.
//!
//! ```
//! use pipelines::lpm::{Ipv4Lpm, Ipv4Prefix};
//! let mut vrf = Ipv4Lpm::new();
//! vrf.insert("0.0.0.0/0".parse()?, 1)?;
//! vrf.insert("10.1.0.0/16".parse()?, 2)?;
//! assert_eq!(vrf.lookup("10.1.2.3".parse()?), Some(2));
//! assert_eq!(vrf.lookup("192.0.2.1".parse()?), Some(1));
//! vrf.remove("10.1.0.0/16".parse::<Ipv4Prefix>()?);
//! assert_eq!(vrf.lookup("10.1.2.3".parse()?), Some(1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Design
//!
//! A poptrie-style multibit trie (Asai and Ohara, SIGCOMM 2015), chosen because it is compact
//! (so it stays in cache, which is what makes lookups fast) and its updates are local:
//!
//! * **Root array** indexed by the top `s` bits of the address. `s` grows with the table: 6
//!   bits (a 256-byte array) up to 256 routes, 12 bits up to 64k routes, 18 bits beyond, and
//!   shrinks back at a quarter of each threshold. So an empty or tiny VRF costs about 1 KiB
//!   and a full table gets one array read for its top 18 bits. DIR-24-8 (DPDK) was rejected:
//!   64 MiB per table even when empty, times thousands of VRFs times two copies.
//! * **Records** of 6 more bits each below the root: 64 slots, each either a child or a leaf,
//!   with two 64-bit bitmaps and popcounts instead of 64 pointers. Leaves are leaf-pushed (a
//!   leaf holds the final answer for its range) and run-length compressed, and a record's
//!   header, leaves and child offsets are contiguous `u32`s in one arena, so a lookup reads
//!   one or two adjacent cache lines per level. With `s = 18` a /24 (60% of an Internet
//!   table) is the root array plus one record; /25-/30 one more record.
//! * **Path compression**: a record with no routes of its own and a single child is left out
//!   (records store their offset and prefix, and answer the inherited result to keys that
//!   leave the path). There are fewer records than routes, and an IPv6 /48 or /128 costs one
//!   or two records rather than a chain of up to 19.
//! * **Control-plane shadow**: per record, the routes that end inside it and the result it
//!   inherits from above. A record is a pure function of that, so an insert or remove
//!   rewrites the record the route ends in and then only the records below whose inherited
//!   result changed. `get` and `iter` read the shadow; lookups never do.
//! * **Batched lookups** (`lookup_batch`) run a software pipeline of 64 lookups that first
//!   *touches* (loads and discards via `black_box`) the cache lines every lookup will need
//!   next, then uses them: the misses of all lookups overlap instead of each lookup waiting
//!   for its own chain of misses. (Prefetch instructions would be the usual tool; they need
//!   `unsafe`, which this crate forbids.) Tables small enough to stay in cache (<= 1 MiB of
//!   lookup structure) use a plain loop instead.
//!
//! IPv4 and IPv6 share one implementation, generic over the key (`u32` or `u128`).
//!
//! # Contract and limits
//!
//! * Values are any `u32` except [`RESERVED_VALUE`] (`u32::MAX`), the internal "no route";
//!   `insert` rejects it with [`LpmError::ReservedValue`]. Prefixes with host bits set are
//!   rejected when the prefix is built ([`Ipv4Prefix::new`], `FromStr`), so the tables never
//!   see one. No input to any method panics.
//! * Lookups take `&self` and never allocate; updates take `&mut self`. The dataplane keeps
//!   two copies and replays each update batch on both (left-right); a table's layout is a
//!   deterministic function of its update sequence, so the copies stay identical.
//! * Update cost is proportional to what changes: a route longer than the root stride
//!   rewrites its record (plus the records it splits or merges); a route over existing more
//!   specific ones rewrites every record whose inherited result it changes (inserting a /8
//!   over 4,000 routes rewrites their records, as in any leaf-pushed structure), and a route
//!   at most `s` bits long repaints up to `2^(s - len)` root entries (`0.0.0.0/0` on a full
//!   table: 2^18 entries). Moving between root strides rebuilds the table once (about
//!   65,000 re-inserts when crossing 64k routes).
//! * Records move when they change size; freed space goes to exact-size free lists and is
//!   reused but never compacted, so a table built by random inserts has about 13% of its
//!   arena on free lists (counted by `memory_bytes`).
//! * `iter` collects the routes into a vector first (O(routes)); `memory_bytes` reports
//!   allocated capacities, shadow included.
//! * Not done, and why: huge pages (the allocations are plain `Vec`s; the `vrouter` process
//!   could back them with a hugepage allocator to remove most TLB misses, the largest cost
//!   left at 1M routes); hardware `popcnt` (the workspace builds for baseline x86-64, so
//!   `count_ones` is a dozen instructions; building with `-C target-cpu=x86-64-v2` made
//!   cached lookups (10 and 10k routes) about 27% faster and batched lookups at 1M routes
//!   about 18% faster in one measurement).
//!
//! # Measurements
//!
//! `examples/lpm_bench.rs`, release build, one core of a shared 2-vCPU KVM guest (AMD EPYC,
//! 2 MiB L2, 4 KiB pages), best of 25 windows; realistic IPv4 mix (60% /24, 29% /16-/23, 1%
//! /8-/15, 10% /25-/32), addresses 90% inside a route. Ranges are over two runs.
//!
//! | table     | batch of 32 / 64 / 256, ns | single / chain, ns | insert, M/s | memory    |
//! |-----------|----------------------------|--------------------|-------------|-----------|
//! | IPv4 10   | 4.8 / 4.7 / 4.6            | 4.5 / 9.4          | 7.7-8.5     | 1.5 KiB   |
//! | IPv4 10k  | 12.1 / 12.1 / 11.9         | 12.0 / 23          | 5.5-6.2     | 934 KiB   |
//! | IPv4 1M   | 24.7-26.3 / 21.5-22 / 19.6-20.5 | 50-53 / 155-190 | 1.5-1.8    | 41.2 MiB  |
//! | IPv6 10   | 12.3 / 12.2 / 12.1         | 14 / 18            | 4.9-5.3     | 2.2 KiB   |
//! | IPv6 100k | 27-34 / 23-28 / 22-29      | 38-69 / 97-198     | 1.7-1.8     | 13.3 MiB  |
//!
//! "single" is a loop of independent `lookup` calls, "chain" one lookup's latency (each
//! address depends on the previous result). At 1M routes the structure lookups read is
//! 21.9 MiB (of which 3 MiB free-listed); the rest of the memory is the shadow and the root
//! route tree. Sorted inserts run at about 5.5 M/s, removes at 1.4 M/s.

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
