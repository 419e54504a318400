//! Measures the LPM tables: insert and remove rates, lookup cost (batched throughput, single
//! lookups, dependent-chain latency) and memory, at 10, 10k and 1M IPv4 routes and 10 and 100k
//! IPv6 routes, with a realistic prefix-length mix (IPv4: 60% /24, 29% /16-/23, 1% /8-/15,
//! 10% /25-/32; addresses: 90% inside a random route, 10% anywhere).
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-lpm cargo build --release -p pipelines --example lpm_bench
//! taskset -c 1 /work/target-lpm/release/examples/lpm_bench [--quick] [--v4 10,10000,1000000] [--v6 10,100000]
//! ```
//!
//! Lookup figures are the best of 25 short windows (the machine is shared); insert figures the
//! best of 3 builds. `LPM_BENCH_HOT=1` looks up the same 4096 IPv4 addresses over and over:
//! the compute cost of a lookup without cache misses.

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

/// Runs `f` (which does `per_call` operations) in 25 windows of `window` each and returns the
/// best window's ns per operation: the machine is shared, and the minimum is the figure least
/// disturbed by other processes.
fn ns_per_op(window: Duration, per_call: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm up
    let mut best = f64::MAX;
    for _ in 0..25 {
        let start = Instant::now();
        let mut calls = 0u64;
        while start.elapsed() < window {
            f();
            calls += 1;
        }
        best = best.min(start.elapsed().as_nanos() as f64 / (calls as f64 * per_call as f64));
    }
    best
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
        // Insert into an empty table, in random order (the generator's order) and in sorted
        // order (a routing daemon's dump); best of 3 runs each.
        let build = |routes: &[(_, u32)]| {
            let mut best = Duration::MAX;
            let mut table = <$table>::new();
            for _ in 0..3 {
                let start = Instant::now();
                let mut t = <$table>::new();
                for &(p, v) in routes {
                    t.insert(p, v).unwrap();
                }
                best = best.min(start.elapsed());
                table = t;
            }
            (table, best)
        };
        let mut sorted = routes.clone();
        sorted.sort();
        let (_, insert_sorted) = build(&sorted);
        drop(sorted);
        let (mut t, insert) = build(&routes);
        assert_eq!(t.len(), n);
        let mem = t.memory_bytes();
        let (fast, free, records) = t.fast_path_stats();
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
            "{:<6} routes {:>8}  root /{:<2} memory {:>10} ({:>5.1} B/route); lookup structure {} ({} free-listed), {} records",
            $label,
            n,
            t.root_stride(),
            kib(mem),
            mem as f64 / n as f64,
            kib(fast),
            kib(free),
            records,
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

/// The value of `--name a,b,c` as numbers, or `default`.
fn sizes_arg(name: &str, default: &[usize]) -> Vec<usize> {
    let args: Vec<String> = std::env::args().collect();
    match args
        .iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
    {
        Some(list) => list.split(',').filter_map(|n| n.parse().ok()).collect(),
        None => default.to_vec(),
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let min = Duration::from_millis(if quick { 2 } else { 5 });
    let mut rng = Rng(0x5eed);
    let naddrs = 1 << 20;
    for n in sizes_arg("--v4", &[10, 10_000, 1_000_000]) {
        let routes = v4_routes(n, &mut rng);
        let mut addrs = v4_addrs(&routes, naddrs, &mut rng);
        if std::env::var_os("LPM_BENCH_HOT").is_some() {
            addrs.truncate(4096);
        }
        bench_table!("IPv4", Ipv4Lpm, u32, routes, addrs, lookup_u32, min);
    }
    for n in sizes_arg("--v6", &[10, 100_000]) {
        let routes = v6_routes(n, &mut rng);
        let addrs = v6_addrs(&routes, naddrs, &mut rng);
        bench_table!("IPv6", Ipv6Lpm, u128, routes, addrs, lookup_u128, min);
    }
}
