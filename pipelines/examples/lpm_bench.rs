//! Measures the LPM tables: insert and remove rates, lookup cost (batched throughput, single
//! lookups, dependent-chain latency) and memory, at 10, 10k and 1M IPv4 routes and 100k IPv6
//! routes, with a realistic prefix-length mix.
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-lpm cargo build --release -p pipelines --example lpm_bench
//! taskset -c 1 /work/target-lpm/release/examples/lpm_bench [--quick]
//! ```

use std::collections::HashSet;
use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use pipelines::lpm::{Ipv4Lpm, Ipv4Prefix, Ipv6Lpm, Ipv6Prefix};

/// Splitmix64: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// IPv4 prefix-length mix, in per-mille, roughly the shape of a full Internet table:
/// 60% /24, 29% /16-/23, 1% /8-/15, 10% /25-/32 (mostly host routes).
const V4_MIX: &[(u8, u32)] = &[
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

/// IPv6 mix: /48 dominates, then /32-/47, /64 and host routes.
const V6_MIX: &[(u8, u32)] = &[
    (16, 2),
    (20, 3),
    (24, 5),
    (28, 10),
    (29, 20),
    (32, 100),
    (36, 30),
    (40, 60),
    (44, 70),
    (46, 20),
    (47, 30),
    (48, 500),
    (56, 30),
    (64, 80),
    (128, 40),
];

fn pick_len(rng: &mut Rng, mix: &[(u8, u32)]) -> u8 {
    let total: u32 = mix.iter().map(|m| m.1).sum();
    let mut x = rng.below(u64::from(total)) as u32;
    for &(len, w) in mix {
        if x < w {
            return len;
        }
        x -= w;
    }
    mix[mix.len() - 1].0
}

fn v4_routes(n: usize, rng: &mut Rng) -> Vec<(Ipv4Prefix, u32)> {
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let len = pick_len(rng, V4_MIX);
        // Unicast space 1.0.0.0 - 223.255.255.255.
        let addr = (1 + rng.below(223) as u32) << 24 | (rng.next() as u32 & 0x00ff_ffff);
        let p = Ipv4Prefix::truncating(Ipv4Addr::from(addr), len).unwrap();
        if seen.insert(p) {
            out.push((p, rng.below(1 << 20) as u32));
        }
    }
    out
}

fn v6_routes(n: usize, rng: &mut Rng) -> Vec<(Ipv6Prefix, u32)> {
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let len = pick_len(rng, V6_MIX);
        // Global unicast 2000::/3.
        let hi = (rng.next() >> 3) | (1 << 61);
        let addr = u128::from(hi) << 64 | u128::from(rng.next());
        let p = Ipv6Prefix::truncating(Ipv6Addr::from(addr), len).unwrap();
        if seen.insert(p) {
            out.push((p, rng.below(1 << 20) as u32));
        }
    }
    out
}

/// Lookup addresses: 90% inside a random route (random host bits), 10% anywhere.
fn v4_addrs(routes: &[(Ipv4Prefix, u32)], n: usize, rng: &mut Rng) -> Vec<u32> {
    (0..n)
        .map(|_| {
            if rng.below(10) == 0 {
                rng.next() as u32
            } else {
                let (p, _) = routes[rng.below(routes.len() as u64) as usize];
                p.bits() | (rng.next() as u32 & !p.mask())
            }
        })
        .collect()
}

fn v6_addrs(routes: &[(Ipv6Prefix, u32)], n: usize, rng: &mut Rng) -> Vec<u128> {
    (0..n)
        .map(|_| {
            let r = u128::from(rng.next()) << 64 | u128::from(rng.next());
            if rng.below(10) == 0 {
                r
            } else {
                let (p, _) = routes[rng.below(routes.len() as u64) as usize];
                p.bits() | (r & !p.mask())
            }
        })
        .collect()
}

/// Runs `f` (which does `per_call` operations) until `min` has passed; ns per operation.
fn ns_per_op(min: Duration, per_call: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm up
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < min {
        f();
        calls += 1;
    }
    start.elapsed().as_nanos() as f64 / (calls as f64 * per_call as f64)
}

fn kib(bytes: usize) -> String {
    if bytes >= 10 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

macro_rules! bench_table {
    ($label:expr, $table:ty, $int:ty, $routes:expr, $addrs:expr, $lookup_int:ident, $min:expr) => {{
        let routes = $routes;
        let addrs = $addrs;
        let n = routes.len();
        // Insert, in random order (the generator's order).
        let start = Instant::now();
        let mut t = <$table>::new();
        for &(p, v) in &routes {
            t.insert(p, v).unwrap();
        }
        let insert = start.elapsed();
        assert_eq!(t.len(), n);
        let mem = t.memory_bytes();
        println!("    {}", t.debug_stats());
        // Sorted insert (a routing daemon's dump order).
        let mut sorted = routes.clone();
        sorted.sort();
        let start = Instant::now();
        let mut t2 = <$table>::new();
        for &(p, v) in &sorted {
            t2.insert(p, v).unwrap();
        }
        let insert_sorted = start.elapsed();
        drop(t2);
        // Correctness spot check against a scan of the routes for a few addresses.
        for &a in addrs.iter().take(if n > 10_000 { 20 } else { 200 }) {
            let expect = routes
                .iter()
                .filter(|(p, _)| p.bits() == a & p.mask())
                .max_by_key(|(p, _)| p.len())
                .map(|r| r.1);
            assert_eq!(t.$lookup_int(a), expect);
        }
        let start = Instant::now();
        let c = t.clone();
        let clone = start.elapsed();
        drop(c);

        println!(
            "{:<22} routes {:>8}  root /{:<2} memory {:>10} ({:>5.1} B/route)",
            $label,
            n,
            t.root_stride(),
            kib(mem),
            mem as f64 / n as f64
        );
        println!(
            "    insert {:>6.2} M routes/s random order ({:.0} ns each), {:>6.2} M/s sorted; clone {:.2} ms",
            n as f64 / insert.as_secs_f64() / 1e6,
            insert.as_nanos() as f64 / n as f64,
            n as f64 / insert_sorted.as_secs_f64() / 1e6,
            clone.as_secs_f64() * 1e3,
        );
        let mut line = String::from("    lookup_batch ns/lookup:");
        for batch in [32usize, 64, 256] {
            let mut out = vec![None; batch];
            let mut pos = 0;
            let chunks = 64;
            let ns = ns_per_op($min, batch * chunks, || {
                for _ in 0..chunks {
                    if pos + batch > addrs.len() {
                        pos = 0;
                    }
                    t.lookup_batch(black_box(&addrs[pos..pos + batch]), &mut out);
                    black_box(&out);
                    pos += batch;
                }
            });
            line += &format!("  {batch}: {ns:.2}");
        }
        println!("{line}");
        let mut pos = 0;
        let chunk = 4096;
        let single = ns_per_op($min, chunk, || {
            if pos + chunk > addrs.len() {
                pos = 0;
            }
            for &a in &addrs[pos..pos + chunk] {
                black_box(t.$lookup_int(black_box(a)));
            }
            pos += chunk;
        });
        // Latency: each address depends on the previous result (xor with a zero the compiler
        // cannot see through), so lookups cannot overlap.
        let zero = black_box(0u32);
        let mut pos = 0;
        let latency = ns_per_op($min, chunk, || {
            if pos + chunk > addrs.len() {
                pos = 0;
            }
            let mut prev = 0u32;
            for &a in &addrs[pos..pos + chunk] {
                prev = t.$lookup_int(a ^ <$int>::from(prev & zero)).unwrap_or(0);
            }
            black_box(prev);
            pos += chunk;
        });
        println!("    lookup single ns: {single:.2} (independent loop), {latency:.2} (dependent chain latency)");
        // Remove everything, in random order.
        let start = Instant::now();
        for &(p, _) in routes.iter().rev() {
            t.remove(p).unwrap();
        }
        let remove = start.elapsed();
        assert!(t.is_empty());
        println!(
            "    remove {:>6.2} M routes/s; memory when empty again {}",
            n as f64 / remove.as_secs_f64() / 1e6,
            kib(t.memory_bytes())
        );
    }};
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let min = Duration::from_millis(if quick { 100 } else { 400 });
    let mut rng = Rng(0x5eed);
    let naddrs = 1 << 20;
    for n in [10usize, 10_000, 1_000_000] {
        let routes = v4_routes(n, &mut rng);
        let addrs = v4_addrs(&routes, naddrs, &mut rng);
        bench_table!("IPv4", Ipv4Lpm, u32, routes, addrs, lookup_u32, min);
    }
    for n in [10usize, 100_000] {
        let routes = v6_routes(n, &mut rng);
        let addrs = v6_addrs(&routes, naddrs, &mut rng);
        bench_table!("IPv6", Ipv6Lpm, u128, routes, addrs, lookup_u128, min);
    }
}
