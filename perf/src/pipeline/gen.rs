//! Deterministic test data: a seeded xorshift generator, route sets with a realistic
//! prefix-length mix, and lookup addresses.

use pipelines::lpm::Ipv4Prefix;
use std::collections::HashSet;
use std::net::Ipv4Addr;

/// xorshift64* (Vigna): fast, deterministic, good enough for test data. Never seeded with 0.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced by a fixed non-zero constant).
    pub fn new(seed: u64) -> Self {
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Next 32 random bits (the high half, the better one).
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// IPv4 prefix-length mix in per-mille, roughly the shape of a full Internet table: 60% /24,
/// 29% /16-/23, 1% /8-/15, 10% /25-/32 (mostly host routes).
pub const V4_MIX: &[(u8, u32)] = &[
    (8, 1),
    (9, 1),
    (10, 1),
    (11, 1),
    (12, 1),
    (13, 1),
    (14, 2),
    (15, 2),
    (16, 15),
    (17, 8),
    (18, 15),
    (19, 25),
    (20, 40),
    (21, 40),
    (22, 80),
    (23, 70),
    (24, 600),
    (25, 5),
    (26, 5),
    (27, 5),
    (28, 5),
    (29, 5),
    (30, 5),
    (31, 5),
    (32, 62),
];

fn pick_len(rng: &mut Rng) -> u8 {
    let total: u32 = V4_MIX.iter().map(|m| m.1).sum();
    let mut x = rng.below(u64::from(total)) as u32;
    for &(len, weight) in V4_MIX {
        if x < weight {
            return len;
        }
        x -= weight;
    }
    V4_MIX[V4_MIX.len() - 1].0
}

/// `n` distinct IPv4 prefixes drawn from [`V4_MIX`], with addresses in unicast space
/// (first octet 1-223) outside 10.0.0.0/8 and 127.0.0.0/8, so that a route set never covers
/// the benchmark topology's own subnets (10.0.0.0/24 and 10.1.0.0/24) or invalid
/// destinations. Generation order is random; it is the insertion order.
pub fn v4_prefixes(n: usize, rng: &mut Rng) -> Vec<Ipv4Prefix> {
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let len = pick_len(rng);
        let first = 1 + rng.below(223) as u32;
        if first == 10 || first == 127 {
            continue;
        }
        let addr = (first << 24) | (rng.next_u32() & 0x00ff_ffff);
        let prefix = Ipv4Prefix::truncating(Ipv4Addr::from(addr), len)
            .expect("lengths of the mix are at most 32");
        if seen.insert(prefix) {
            out.push(prefix);
        }
    }
    out
}

/// A random address inside `prefix`.
pub fn address_in(prefix: &Ipv4Prefix, rng: &mut Rng) -> u32 {
    prefix.bits() | (rng.next_u32() & !prefix.mask())
}

/// `n` lookup addresses: 90% inside a random prefix of `prefixes` (random host bits; a more
/// specific prefix may win), 10% anywhere in the address space (mostly misses).
pub fn lookup_addresses(prefixes: &[Ipv4Prefix], n: usize, rng: &mut Rng) -> Vec<u32> {
    (0..n)
        .map(|_| {
            if rng.below(10) == 0 {
                rng.next_u32()
            } else {
                let prefix = &prefixes[rng.below(prefixes.len() as u64) as usize];
                address_in(prefix, rng)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_is_mostly_slash_24_and_deterministic() {
        let a = v4_prefixes(10_000, &mut Rng::new(7));
        let b = v4_prefixes(10_000, &mut Rng::new(7));
        assert_eq!(a, b);
        let slash24 = a.iter().filter(|p| p.len() == 24).count();
        assert!((5_500..6_500).contains(&slash24), "{slash24}");
        assert!(a.iter().any(|p| (16..24).contains(&p.len())));
        assert!(a.iter().any(|p| (25..=32).contains(&p.len())));
        assert!(a.iter().any(|p| p.len() < 16));
        assert!(a.iter().all(|p| {
            let first = p.bits() >> 24;
            (1..=223).contains(&first) && first != 10 && first != 127
        }));
    }

    #[test]
    fn addresses_fall_inside_their_prefix() {
        let mut rng = Rng::new(3);
        let prefixes = v4_prefixes(100, &mut rng);
        for p in &prefixes {
            let a = address_in(p, &mut rng);
            assert!(p.contains(Ipv4Addr::from(a)));
        }
    }
}
