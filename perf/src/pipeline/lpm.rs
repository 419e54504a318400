//! `lpm-10`, `lpm-10k`, `lpm-1m`: IPv4 route lookup alone (`Ipv4Lpm`), as the slow path uses
//! it, on a table built from the realistic prefix-length mix of [`super::gen::V4_MIX`].
//!
//! Timed: `lookup_batch` over 64 addresses at a time (a worker's batch), addresses streaming
//! from a 4 MiB pool of which 90% fall inside a route. Also measured: the latency of one lookup
//! (a dependent chain: each address depends on the previous result, so lookups cannot
//! overlap), a loop of independent single `lookup` calls, and the insert rate (the whole
//! route set into an empty table, in generation order, i.e. random).

use super::gen::{lookup_addresses, v4_prefixes, Rng};
use super::report::{RunSet, ScenarioResult, TargetCheck};
use super::Settings;
use crate::alloc;
use crate::os::Stopwatch;
use pipelines::lpm::{Ipv4Lpm, Ipv4Prefix};
use std::hint::black_box;
use std::time::Instant;

/// Lookup addresses in the pool (4 MiB of `u32`).
const ADDRESS_POOL: usize = 1 << 20;
/// Addresses per `lookup_batch` call (the pipeline's batch).
const BATCH: usize = 64;

fn build(prefixes: &[Ipv4Prefix]) -> Result<Ipv4Lpm, String> {
    let mut table = Ipv4Lpm::new();
    for (i, prefix) in prefixes.iter().enumerate() {
        table
            .insert(*prefix, i as u32)
            .map_err(|e| format!("inserting {prefix}: {e}"))?;
    }
    Ok(table)
}

/// The route of `addr` by linear scan (reference for the spot check).
fn reference_lookup(prefixes: &[Ipv4Prefix], addr: u32) -> Option<u32> {
    prefixes
        .iter()
        .enumerate()
        .filter(|(_, p)| addr & p.mask() == p.bits())
        .max_by_key(|(_, p)| p.len())
        .map(|(i, _)| i as u32)
}

/// Runs one LPM scenario with `routes` routes.
pub fn run(
    name: &'static str,
    routes: usize,
    settings: &Settings,
) -> Result<ScenarioResult, String> {
    let mut rng = Rng::new(0x1be7_0000 ^ routes as u64);
    let prefixes = v4_prefixes(routes, &mut rng);
    let addrs = lookup_addresses(&prefixes, ADDRESS_POOL, &mut rng);

    // Insert rate and heap: build the table from empty, several times, keep the last one.
    let insert_settings = Settings {
        runs: settings.runs.min(3),
        ..*settings
    };
    let mut table = Ipv4Lpm::new();
    let mut heap = 0;
    let inserts = RunSet::collect(&insert_settings, || {
        drop(std::mem::take(&mut table));
        let before = alloc::live_bytes();
        let stopwatch = Stopwatch::start();
        let start = Instant::now();
        table = build(black_box(&prefixes))?;
        let elapsed = start.elapsed();
        heap = alloc::live_bytes().saturating_sub(before);
        Ok((routes as f64 / elapsed.as_secs_f64(), stopwatch.read()))
    })?;
    if table.len() != routes {
        return Err(format!(
            "{name}: table has {} routes, expected {routes}",
            table.len()
        ));
    }

    // Spot check against a linear scan, so the benchmark never times a broken table.
    for &addr in addrs.iter().step_by(ADDRESS_POOL / 64) {
        let expected = reference_lookup(&prefixes, addr);
        let got = table.lookup_u32(addr);
        if got != expected {
            return Err(format!(
                "{name}: lookup of {} gave {got:?}, a scan of the routes gives {expected:?}",
                std::net::Ipv4Addr::from(addr)
            ));
        }
    }
    let mut found = 0usize;
    for &addr in &addrs {
        found += usize::from(table.lookup_u32(addr).is_some());
    }

    let lookups = settings.packets.max(BATCH as u64) as usize / BATCH * BATCH;
    let per_run = |elapsed: std::time::Duration| elapsed.as_nanos() as f64 / lookups as f64;
    let mut allocs = 0;

    // Batched lookups: the figure compared with the target.
    let mut out = [None; BATCH];
    let mut pos = 0;
    let mut pass = || {
        for _ in 0..lookups / BATCH {
            if pos + BATCH > addrs.len() {
                pos = 0;
            }
            table.lookup_batch(black_box(&addrs[pos..pos + BATCH]), &mut out);
            black_box(&mut out);
            pos += BATCH;
        }
    };
    pass(); // warm up
    let batched = RunSet::collect(settings, || {
        let stopwatch = Stopwatch::start();
        let allocs_before = alloc::allocations();
        let start = Instant::now();
        pass();
        let elapsed = start.elapsed();
        allocs += alloc::allocations() - allocs_before;
        Ok((per_run(elapsed), stopwatch.read()))
    })?;

    // Independent single lookups.
    let single = RunSet::collect(settings, || {
        let stopwatch = Stopwatch::start();
        let allocs_before = alloc::allocations();
        let start = Instant::now();
        let mut pos = 0;
        for _ in 0..lookups {
            if pos == addrs.len() {
                pos = 0;
            }
            black_box(table.lookup_u32(black_box(addrs[pos])));
            pos += 1;
        }
        let elapsed = start.elapsed();
        allocs += alloc::allocations() - allocs_before;
        Ok((per_run(elapsed), stopwatch.read()))
    })?;

    // Dependent chain: the next address is xored with (previous result & a zero the compiler
    // cannot see through), so each lookup waits for the previous one.
    let zero = black_box(0u32);
    let latency = RunSet::collect(settings, || {
        let stopwatch = Stopwatch::start();
        let allocs_before = alloc::allocations();
        let start = Instant::now();
        let mut prev = 0u32;
        let mut pos = 0;
        for _ in 0..lookups {
            if pos == addrs.len() {
                pos = 0;
            }
            prev = table.lookup_u32(addrs[pos] ^ (prev & zero)).unwrap_or(0);
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
            "Ipv4Lpm::lookup_batch, {BATCH} addresses per call, {routes} routes \
             (60% /24, /8-/32 mix); {:.0}% of lookups find a route; per-lookup figures",
            100.0 * found as f64 / addrs.len() as f64
        ),
        packets_per_run: Some(lookups as u64),
        routes: Some(routes),
        table_bytes: table.memory_bytes(),
        table_heap_bytes: Some(heap),
        lookup_latency_ns: Some(latency.median()),
        lookup_single_ns: Some(single.median()),
        insert_routes_per_sec: Some(inserts.median()),
        allocations_in_timed_loop: Some(allocs),
        ..ScenarioResult::default()
    };
    result.set_runs(batched);
    if routes >= 1_000_000 {
        let ns = result.ns_per_packet.unwrap_or(f64::MAX);
        result
            .targets
            .push(TargetCheck::at_most("ns_per_lookup", 25.0, ns));
        let rate = result.insert_routes_per_sec.unwrap_or(0.0);
        result
            .targets
            .push(TargetCheck::at_least("insert_routes_per_sec", 1e6, rate));
    }
    Ok(result)
}
