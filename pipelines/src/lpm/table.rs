//! The public tables: thin typed wrappers around the generic [`Poptrie`].

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::poptrie::{decode, Poptrie};
use super::{Ipv4Prefix, Ipv6Prefix, LpmError, RESERVED_VALUE};

macro_rules! lpm_table {
    (
        $(#[$doc:meta])*
        $name:ident, $prefix:ty, $addr:ty, $bits:ty, $lookup_int:ident
    ) => {
        $(#[$doc])*
        #[derive(Clone, Default)]
        pub struct $name {
            trie: Poptrie<$bits>,
        }

        impl $name {
            /// An empty table (a few hundred bytes).
            pub fn new() -> Self {
                Self::default()
            }

            /// A table with non-default size thresholds (tests reach every root stride, the
            /// rebuilds between them and the pipelined batch lookup with small route sets).
            #[cfg(test)]
            pub(crate) fn with_tuning(tuning: super::poptrie::Tuning) -> Self {
                Self { trie: Poptrie::with_tuning(tuning) }
            }

            /// Adds the route `prefix -> value`, or changes the value of an existing route.
            /// Returns the previous value of exactly this prefix. `value` may be anything but
            /// [`RESERVED_VALUE`] (`u32::MAX`), which is rejected with
            /// [`LpmError::ReservedValue`].
            pub fn insert(&mut self, prefix: $prefix, value: u32) -> Result<Option<u32>, LpmError> {
                if value == RESERVED_VALUE {
                    return Err(LpmError::ReservedValue);
                }
                Ok(self.trie.insert(prefix.bits(), u32::from(prefix.len()), value))
            }

            /// Removes the route for exactly `prefix`; addresses it covered fall back to the
            /// next longest covering route. Returns its value, `None` if there was none.
            pub fn remove(&mut self, prefix: $prefix) -> Option<u32> {
                self.trie.remove(prefix.bits(), u32::from(prefix.len()))
            }

            /// The value of exactly `prefix` (no longest-prefix matching).
            pub fn get(&self, prefix: $prefix) -> Option<u32> {
                self.trie.get(prefix.bits(), u32::from(prefix.len()))
            }

            /// Longest-prefix match of `addr`.
            #[inline]
            pub fn lookup(&self, addr: $addr) -> Option<u32> {
                self.$lookup_int(<$bits>::from(addr))
            }

            /// Longest-prefix match of an address given as an integer in host order
            /// (`u32::from(Ipv4Addr)`, i.e. the big-endian wire bytes read as a number).
            #[inline]
            pub fn $lookup_int(&self, addr: $bits) -> Option<u32> {
                decode(self.trie.lookup(addr))
            }

            /// `out[i] = lookup(addrs[i])` for every `i` below `min(addrs.len(), out.len())`
            /// (the rest of the longer slice is left alone). Faster than a loop of `lookup`:
            /// the lookups advance level by level in groups of 32, so their memory loads are
            /// independent and overlap.
            pub fn lookup_batch(&self, addrs: &[$bits], out: &mut [Option<u32>]) {
                self.trie.lookup_batch(addrs, out);
            }

            /// Number of routes.
            pub fn len(&self) -> usize {
                self.trie.len()
            }

            /// Whether the table has no routes.
            pub fn is_empty(&self) -> bool {
                self.trie.len() == 0
            }

            /// Every route, ordered by address then length (the order of the prefix's `Ord`).
            /// Collects the routes first: O(routes), one allocation.
            pub fn iter(&self) -> impl Iterator<Item = ($prefix, u32)> + '_ {
                self.trie
                    .routes()
                    .into_iter()
                    .map(|(bits, len, value)| (<$prefix>::from_raw(bits, len as u8), value))
            }

            /// Heap bytes allocated by the table (capacities, not lengths; the fast path and
            /// the control-plane shadow together).
            pub fn memory_bytes(&self) -> usize {
                self.trie.memory_bytes()
            }

            /// Bits of the address the root array indexes (6, 12 or 18, growing with the
            /// table). Exposed for statistics.
            pub fn root_stride(&self) -> u32 {
                self.trie.root_stride()
            }

            /// Size breakdown for benchmarks: (bytes of the structure lookups read, of which
            /// free-listed, number of node records).
            #[doc(hidden)]
            pub fn fast_path_stats(&self) -> (usize, usize, usize) {
                self.trie.fast_path_bytes()
            }

            #[cfg(test)]
            pub(crate) fn check_invariants(&self) {
                self.trie.check_invariants();
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("len", &self.len())
                    .field("root_stride", &self.root_stride())
                    .field("memory_bytes", &self.memory_bytes())
                    .finish()
            }
        }

        impl Extend<($prefix, u32)> for $name {
            /// Inserts every route; routes with the reserved value are skipped.
            fn extend<I: IntoIterator<Item = ($prefix, u32)>>(&mut self, routes: I) {
                for (prefix, value) in routes {
                    let _ = self.insert(prefix, value);
                }
            }
        }
    };
}

lpm_table!(
    /// IPv4 longest-prefix-match table: [`Ipv4Prefix`] -> `u32` (a next-hop id).
    ///
    /// Lookups take `&self` and never allocate; updates take `&mut self` (the dataplane
    /// publishes copies, see the module docs).
    Ipv4Lpm,
    Ipv4Prefix,
    Ipv4Addr,
    u32,
    lookup_u32
);

lpm_table!(
    /// IPv6 longest-prefix-match table: [`Ipv6Prefix`] -> `u32` (a next-hop id).
    ///
    /// Same structure and API as [`Ipv4Lpm`], on addresses as `u128`.
    Ipv6Lpm,
    Ipv6Prefix,
    Ipv6Addr,
    u128,
    lookup_u128
);
