//! `maglev-lookup` and `maglev-build`: the Service backend choice ([`pipelines::maglev`])
//! alone.
//!
//! - `maglev-lookup`: `Maglev::lookup` over batches of 64 hashes (a worker's batch) from a
//!   pool of 4096 random hashes, 100 backends of weight 1, the default table (65537 entries,
//!   256 KiB). Also measured: the latency of one lookup (a dependent chain: each hash depends
//!   on the previous result).
//! - `maglev-build`: `Maglev::rebuild` (the table's allocation reused, its scratch not) of 10,
//!   100 and 1000 backends of weight 1 at 65537 entries, 1000 backends at the size
//!   `table_size_for` gives them (131071), and two weighted sets of 1000 backends: three
//!   distinct weights (the common case of weights: a grouped turn order, cheap) and 1000
//!   distinct weights 100-1099 (the worst case: a heap of 1000 groups). Figures in µs per build.
//!
//! # Honesty checks
//! Every lookup of the pool must find a backend and agree with the table entry the hash
//! selects; each backend's share of 2^20 random hashes must be within 5% of 1/100; every
//! built table must give each equal-weight backend its entries within one.

use super::gen::Rng;
use super::report::{Figure, RunSet, ScenarioResult, TargetCheck};
use super::Settings;
use crate::alloc;
use crate::os::Stopwatch;
use pipelines::maglev::{backend_key, Maglev, MaglevBackend, DEFAULT_TABLE_SIZE};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

/// Hashes per `lookup` batch.
const BATCH: usize = 64;
/// Distinct hashes (32 KiB).
const HASH_POOL: usize = 4096;
/// Extra random hashes for the spread check (each backend within 5% of 1/100: 5 standard
/// deviations).
const SPREAD_SAMPLES: usize = 1 << 20;
/// Backends of `maglev-lookup`.
const LOOKUP_BACKENDS: u32 = 100;

/// `n` backends 10.x.y.z:8080 with ids `0..n`; weights from `weight(i)`.
fn backends(n: u32, weight: impl Fn(u32) -> u16) -> Vec<MaglevBackend> {
    (0..n)
        .map(|i| {
            let addr = IpAddr::V4(Ipv4Addr::from(0x0a01_0000 + i));
            MaglevBackend::new(backend_key(addr, 8080), i, weight(i))
        })
        .collect()
}

/// Entries per id, for the checks.
fn counts(maglev: &Maglev, n: u32) -> Vec<usize> {
    let mut counts = vec![0; n as usize];
    for &id in maglev.entries() {
        counts[id as usize] += 1;
    }
    counts
}

/// `maglev-lookup`.
pub fn lookup(settings: &Settings) -> Result<ScenarioResult, String> {
    let name = "maglev-lookup";
    let list = backends(LOOKUP_BACKENDS, |_| 1);
    let before = alloc::live_bytes();
    let maglev = Maglev::new(&list, Maglev::table_size_for(list.len()))
        .map_err(|e| format!("{name}: {e}"))?;
    let heap = alloc::live_bytes().saturating_sub(before);
    let mut rng = Rng::new(0x6a91_e700);
    let hashes: Vec<u64> = (0..HASH_POOL).map(|_| rng.next_u64()).collect();

    // Checks: every hash finds the entry its range selects; 2^20 hashes spread evenly.
    let m = maglev.entries().len() as u128;
    let mut hits = vec![0usize; LOOKUP_BACKENDS as usize];
    let mut check_rng = Rng::new(0x6a91_e701);
    for hash in hashes
        .iter()
        .copied()
        .chain((0..SPREAD_SAMPLES).map(|_| check_rng.next_u64()))
    {
        let expected = maglev.entries()[((u128::from(hash) * m) >> 64) as usize];
        match maglev.lookup(hash) {
            Some(id) if id == expected => hits[id as usize] += 1,
            other => {
                return Err(format!(
                    "{name}: hash {hash:#x} gave {other:?}, the table says {expected}"
                ))
            }
        }
    }
    let samples = HASH_POOL + SPREAD_SAMPLES;
    let mean = samples as f64 / f64::from(LOOKUP_BACKENDS);
    if let Some((id, &n)) = hits
        .iter()
        .enumerate()
        .find(|(_, &n)| (n as f64 - mean).abs() > 0.05 * mean)
    {
        return Err(format!(
            "{name}: backend {id} got {n} of {samples} lookups, expected about {mean:.0}"
        ));
    }

    let lookups = settings.packets.max(BATCH as u64) as usize / BATCH * BATCH;
    let per_run = |elapsed: std::time::Duration| elapsed.as_nanos() as f64 / lookups as f64;
    let mut allocs = 0;
    let mut out = [None; BATCH];
    let mut pos = 0;
    let mut pass = |maglev: &Maglev| {
        for _ in 0..lookups / BATCH {
            if pos + BATCH > hashes.len() {
                pos = 0;
            }
            for (slot, &hash) in out.iter_mut().zip(black_box(&hashes[pos..pos + BATCH])) {
                *slot = maglev.lookup(hash);
            }
            black_box(&mut out);
            pos += BATCH;
        }
    };
    pass(&maglev); // warm up
    let batched = RunSet::collect(settings, || {
        let stopwatch = Stopwatch::start();
        let allocs_before = alloc::allocations();
        let start = Instant::now();
        pass(&maglev);
        let elapsed = start.elapsed();
        allocs += alloc::allocations() - allocs_before;
        Ok((per_run(elapsed), stopwatch.read()))
    })?;

    // Dependent chain: the next hash is xored with (previous id & a zero the compiler cannot
    // see through), so each lookup waits for the previous one.
    let zero = black_box(0u32);
    let latency = RunSet::collect(settings, || {
        let stopwatch = Stopwatch::start();
        let allocs_before = alloc::allocations();
        let start = Instant::now();
        let mut prev = 0u32;
        let mut pos = 0;
        for _ in 0..lookups {
            if pos == hashes.len() {
                pos = 0;
            }
            prev = maglev
                .lookup(hashes[pos] ^ u64::from(prev & zero))
                .unwrap_or(0);
            pos += 1;
        }
        black_box(prev);
        let elapsed = start.elapsed();
        allocs += alloc::allocations() - allocs_before;
        Ok((per_run(elapsed), stopwatch.read()))
    })?;

    let mut result = ScenarioResult {
        scenario: name,
        description: format!(
            "Maglev::lookup, batches of {BATCH} hashes from a pool of {HASH_POOL}, \
             {LOOKUP_BACKENDS} backends of weight 1, {} entries; per-lookup figures",
            maglev.table_size()
        ),
        packets_per_run: Some(lookups as u64),
        table_bytes: maglev.memory_bytes(),
        table_heap_bytes: Some(heap),
        lookup_latency_ns: Some(latency.median()),
        allocations_in_timed_loop: Some(allocs),
        ..ScenarioResult::default()
    };
    result.figures.push(Figure {
        name: "backends".into(),
        value: f64::from(LOOKUP_BACKENDS),
        unit: "",
    });
    result.figures.push(Figure {
        name: "entries".into(),
        value: maglev.table_size() as f64,
        unit: "",
    });
    result.set_runs(batched);
    Ok(result)
}

/// One build measurement of `maglev-build`.
struct BuildCase {
    /// Figure name.
    name: &'static str,
    backends: u32,
    table_size: usize,
    weight: fn(u32) -> u16,
    /// Equal weights: check the balance.
    equal: bool,
}

/// `maglev-build`.
pub fn build(settings: &Settings) -> Result<ScenarioResult, String> {
    let name = "maglev-build";
    let cases = [
        BuildCase {
            name: "build-10",
            backends: 10,
            table_size: DEFAULT_TABLE_SIZE,
            weight: |_| 1,
            equal: true,
        },
        BuildCase {
            name: "build-100",
            backends: 100,
            table_size: DEFAULT_TABLE_SIZE,
            weight: |_| 1,
            equal: true,
        },
        BuildCase {
            name: "build-1000",
            backends: 1000,
            table_size: DEFAULT_TABLE_SIZE,
            weight: |_| 1,
            equal: true,
        },
        BuildCase {
            name: "build-1000@131071",
            backends: 1000,
            table_size: Maglev::table_size_for(1000),
            weight: |_| 1,
            equal: true,
        },
        BuildCase {
            name: "build-1000-3-weights",
            backends: 1000,
            table_size: DEFAULT_TABLE_SIZE,
            weight: |i| (i % 3 + 1) as u16,
            equal: false,
        },
        BuildCase {
            name: "build-1000-distinct-weights@131071",
            backends: 1000,
            table_size: Maglev::table_size_for(1000),
            weight: |i| (100 + i) as u16,
            equal: false,
        },
    ];
    // Builds per timed run: 20 by default, 4 with --quick.
    let builds = (settings.packets / 250_000).max(2) as usize;
    let mut result = ScenarioResult {
        scenario: name,
        description: format!(
            "Maglev::rebuild (table allocation reused), median µs per build over {} runs of \
             {builds} builds; 65537 entries unless @size",
            settings.runs
        ),
        cpu_share: Some(1.0),
        ..ScenarioResult::default()
    };
    let mut build_1000 = 0.0;
    for case in &cases {
        let list = backends(case.backends, case.weight);
        let mut maglev = Maglev::new(&list, case.table_size)
            .map_err(|e| format!("{name} {}: {e}", case.name))?;
        let runs = RunSet::collect(settings, || {
            let stopwatch = Stopwatch::start();
            let start = Instant::now();
            for _ in 0..builds {
                maglev
                    .rebuild(black_box(&list))
                    .map_err(|e| format!("{name} {}: {e}", case.name))?;
                black_box(maglev.entries());
            }
            let us = start.elapsed().as_secs_f64() * 1e6 / builds as f64;
            Ok((us, stopwatch.read()))
        })?;
        let counts = counts(&maglev, case.backends);
        let (min, max) = (
            counts.iter().copied().min().unwrap_or(0),
            counts.iter().copied().max().unwrap_or(0),
        );
        if maglev.entries().len() != case.table_size || min == 0 || (case.equal && max - min > 1) {
            return Err(format!(
                "{name} {}: {} entries, {min}..{max} per backend",
                case.name,
                maglev.entries().len()
            ));
        }
        let us = runs.median();
        if case.name == "build-1000" {
            build_1000 = us;
        }
        result.cpu_share = result.cpu_share.map(|s| s.min(runs.cpu_share));
        result.others_busy = match (result.others_busy, runs.others_busy) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        result.discarded_runs += runs.discarded;
        result.table_bytes = result.table_bytes.max(maglev.memory_bytes());
        result.figures.push(Figure {
            name: case.name.into(),
            value: us,
            unit: "us",
        });
    }
    result.targets.push(TargetCheck::at_most(
        "build_us_1000_backends_65537",
        1000.0,
        build_1000,
    ));
    Ok(result)
}
