//! Hashing for the packet path: flow keys, ECMP member choice and the small hash maps of the
//! tables. The standard library's SipHash is DoS-resistant but costs ~20 ns for a flow key;
//! these tables are keyed by packet fields an attacker controls, so the per-process random
//! seed matters more than a cryptographic mix (the flow cache is bucketed and bounded, so a
//! collision attack degrades to evictions, never to unbounded chains).

use std::hash::{BuildHasher, Hasher};

const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

/// Mixes 64-bit words (multiply-rotate, the FxHash family), finalised with a murmur3 fmix64
/// so that low bits (used for bucket indices) depend on every input bit.
#[derive(Clone, Copy, Debug)]
pub struct FlowHasher {
    state: u64,
}

impl FlowHasher {
    /// A hasher starting from `seed`.
    #[inline]
    pub const fn with_seed(seed: u64) -> Self {
        FlowHasher { state: seed }
    }

    /// Adds one word.
    #[inline]
    pub fn add(&mut self, word: u64) {
        self.state = (self.state.rotate_left(5) ^ word).wrapping_mul(MULTIPLIER);
    }

    /// The final mixed value.
    #[inline]
    pub fn finish64(&self) -> u64 {
        let mut h = self.state;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

impl Hasher for FlowHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.finish64()
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 56));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(n as u64);
    }
    #[inline]
    fn write_u16(&mut self, n: u16) {
        self.add(n as u64);
    }
    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(n as u64);
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    #[inline]
    fn write_u128(&mut self, n: u128) {
        self.add(n as u64);
        self.add((n >> 64) as u64);
    }
    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
}

/// `BuildHasher` for `HashMap`s of the tables.
#[derive(Clone, Copy, Debug, Default)]
pub struct FastHash;

impl BuildHasher for FastHash {
    type Hasher = FlowHasher;
    #[inline]
    fn build_hasher(&self) -> FlowHasher {
        FlowHasher::with_seed(0x243F_6A88_85A3_08D3)
    }
}

/// A `HashMap` with [`FastHash`].
pub type FastMap<K, V> = std::collections::HashMap<K, V, FastHash>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_bits_spread() {
        // 64k sequential keys into 1024 buckets: no bucket more than 4x the mean.
        let mut buckets = vec![0u32; 1024];
        for i in 0u32..65536 {
            buckets[(FastHash.hash_one(i) & 1023) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| n < 256),
            "{:?}",
            buckets.iter().max()
        );
    }
}
