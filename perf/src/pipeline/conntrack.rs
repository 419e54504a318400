//! `conntrack-hit`, `conntrack-setup`, `conntrack-1m`: the connection table
//! (`pipelines::conntrack::ConnTable`) alone, in memory, one core.
//!
//! # Workload
//! Masquerade: pods 10.244.0.0/20 (4096 pods) open connections to external servers
//! 203.0.x.y, every connection source-translated to the node address 192.0.2.1 with a port
//! from 1024-65535 chosen by `allocate_port`.
//! - `conntrack-hit`: 100,000 live connections (80% TCP established, 20% UDP replied; 4096
//!   destinations on ports 443/80/53) in a table of 200,000. Every packet is one of the two
//!   tuples of a connection (both directions, shuffled). As the pipeline does for the flow
//!   cache, a batch of 64 first computes its tuple hashes and touches the index lines
//!   (`touch`), then the entries (`touch_entry`); then each packet is looked up, updated (an
//!   ACK of 64 bytes) and its translated tuple read (what the NAT rewrite needs), in one
//!   `lookup_update` call. Also
//!   reported ("single"): the same without the touches, one packet after the other.
//! - `conntrack-setup`: every packet a new TCP connection (SYN): lookup miss, port
//!   allocation, create. A batch first touches the index lines of its tuples and of their
//!   first port candidates (`touch`, `touch_port`). The table holds 1,000,000 and stays at a
//!   steady state of about 500,000 connections: the synthetic clock advances 0.24 ms per
//!   connection (SYN_SENT expires after 120 s, i.e. 500,000 connections later) and after
//!   each batch of 64 the worker's sweep visits 512 slots (a full pass every 125,000
//!   connections, 30 s of synthetic time), reclaiming the expired ones. The sweep is inside
//!   the timed region. 256 destinations on port 443: about 2,000 live connections per
//!   destination.
//! - `conntrack-1m`: 1,000,000 live connections filling a table of 1,000,000: its memory
//!   (`memory_bytes` and the heap it holds), bytes per connection, and the hit path as in
//!   `conntrack-hit` over them.
//!
//! # Honesty checks
//! Hit scenarios: every lookup must find its connection in the expected direction and every
//! update be `Tracked`; the table's counters must show exactly as many hits as packets, no
//! invalid packet, no connection created or lost. Setup: every lookup must miss, every port
//! allocation and create succeed; the counters must show one connection created per packet,
//! none refused or evicted, as many expired as created give or take the change of the live
//! count, which must stay within the steady-state bounds; after the runs the whole table is
//! checked (`check_consistency`). No timed loop may allocate.

use super::gen::Rng;
use super::report::{RunSet, ScenarioResult, TargetCheck};
use super::Settings;
use crate::alloc;
use crate::os::Stopwatch;
use pipelines::conntrack::{
    ConnTable, ConntrackConfig, ConntrackCounters, Direction, Nat, Translation, UpdateOutcome,
};
use pipelines::flow::FlowKey;
use pipelines::wire::TcpFlags;
use std::hint::black_box;
use std::time::Instant;

/// Packets per batch (a worker's).
const BATCH: usize = 64;
/// Connections of `conntrack-hit`.
const HIT_CONNECTIONS: usize = 100_000;
/// Connections of `conntrack-1m`.
const MILLION: usize = 1_000_000;
/// Capacity of the `conntrack-setup` table.
const SETUP_CAPACITY: usize = 1_000_000;
/// Synthetic time per new connection in `conntrack-setup`, as a fraction (0.24 ms).
const SETUP_MS_NUM: u64 = 6;
const SETUP_MS_DEN: u64 = 25;
/// Sweep budget per batch in `conntrack-setup`.
const SETUP_SWEEP: usize = 512;
/// Steady-state bounds of the live count in `conntrack-setup`: 500,000 unexpired plus up to a
/// sweep pass (125,000) of expired ones not yet reclaimed.
const SETUP_LIVE: std::ops::RangeInclusive<usize> = 450_000..=650_000;
/// Destinations of `conntrack-setup`.
const SETUP_DESTINATIONS: u64 = 256;
/// Start of the synthetic millisecond clock.
const START_MS: u32 = 1_000;

const TCP: u8 = 6;
const UDP: u8 = 17;
const NODE: u128 = 0xc000_0201; // 192.0.2.1
const PORTS: std::ops::RangeInclusive<u16> = 1024..=65535;

fn pod(index: u64) -> u128 {
    u128::from(0x0af4_0000u32 | (index % 4096) as u32) // 10.244.0.0/20
}

fn server(index: u64) -> u128 {
    u128::from(0xcb00_0000u32 | (index & 0xffff) as u32) // 203.0.0.0/16
}

fn masquerade() -> Nat {
    Nat {
        src: Some(Translation {
            addr: NODE,
            port: 0,
        }),
        dst: None,
    }
}

/// Allocates a port for `original` and creates its connection (SYN for TCP).
fn open(table: &mut ConnTable, original: &FlowKey, hash: u64, now: u32) -> Result<(), String> {
    let mut nat = masquerade();
    let template = nat.reply_tuple(original);
    let port = table
        .allocate_port(&template, PORTS, hash)
        .ok_or_else(|| format!("no port for {original:?}"))?;
    if let Some(src) = nat.src.as_mut() {
        src.port = port;
    }
    let flags = if original.protocol == TCP {
        TcpFlags::SYN
    } else {
        TcpFlags(0)
    };
    table
        .create(original, &nat, flags, 64, now)
        .map(|_| ())
        .map_err(|e| format!("create {original:?}: {e}"))
}

/// A table of `capacity` with `n` live connections (80% TCP established, 20% UDP replied),
/// and the packets of the hit loop: both tuples of each, shuffled, with their directions.
/// Also returns the heap the table holds.
fn populated(
    n: usize,
    capacity: usize,
    rng: &mut Rng,
) -> Result<(ConnTable, Vec<FlowKey>, Vec<Direction>, usize), String> {
    let before = alloc::live_bytes();
    let mut table = ConnTable::new(ConntrackConfig {
        capacity,
        ..ConntrackConfig::default()
    });
    let heap = alloc::live_bytes().saturating_sub(before);
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        let udp = rng.below(5) == 0;
        let original = FlowKey {
            src: pod(rng.next_u64()),
            dst: server(rng.below(4096)),
            vrf: 0,
            protocol: if udp { UDP } else { TCP },
            ipv6: false,
            src_port: 32768 + rng.below(28232) as u16,
            dst_port: if udp {
                53
            } else if rng.below(2) == 0 {
                443
            } else {
                80
            },
        };
        if table.lookup(&original, START_MS).is_some() {
            continue;
        }
        let hash = table.key_hash(&original);
        open(&mut table, &original, hash, START_MS)?;
        let (id, _) = table
            .lookup(&original, START_MS)
            .ok_or("connection not found after create")?;
        if udp {
            table.update(id, Direction::Reply, TcpFlags(0), 64, START_MS);
        } else {
            table.update(id, Direction::Reply, TcpFlags(0x12), 64, START_MS);
            table.update(id, Direction::Original, TcpFlags::ACK, 64, START_MS);
        }
        ids.push(id);
    }
    let mut packets = Vec::with_capacity(2 * n);
    for &id in &ids {
        let conn = table
            .get(id, START_MS)
            .ok_or("connection gone after creation")?;
        packets.push((conn.original, Direction::Original));
        packets.push((conn.reply, Direction::Reply));
    }
    // Fisher-Yates.
    for i in (1..packets.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        packets.swap(i, j);
    }
    let (keys, dirs) = packets.into_iter().unzip();
    Ok((table, keys, dirs, heap))
}

/// The hit loop over `keys`, starting at batch `*next`, `batches` batches; returns the number
/// of packets that did not find their connection in the expected direction or were not
/// `Tracked`.
fn hit_batches(
    table: &mut ConnTable,
    keys: &[FlowKey],
    dirs: &[Direction],
    next: &mut usize,
    batches: usize,
    now: &mut u32,
    touch: bool,
) -> usize {
    let per_pass = keys.len() / BATCH;
    let mut bad = 0;
    let mut hashes = [0u64; BATCH];
    for _ in 0..batches {
        let first = *next * BATCH;
        let keys = &keys[first..first + BATCH];
        let dirs = &dirs[first..first + BATCH];
        if touch {
            for (hash, key) in hashes.iter_mut().zip(keys) {
                *hash = table.key_hash(key);
                black_box(table.touch(*hash));
            }
            for &hash in &hashes {
                black_box(table.touch_entry(hash));
            }
        } else {
            for (hash, key) in hashes.iter_mut().zip(keys) {
                *hash = table.key_hash(key);
            }
        }
        for ((key, &hash), &want) in keys.iter().zip(&hashes).zip(dirs) {
            match table.lookup_update(key, hash, TcpFlags::ACK, 64, *now) {
                Some(hit) => {
                    black_box(&hit.translated);
                    bad +=
                        usize::from(hit.direction != want || hit.outcome != UpdateOutcome::Tracked);
                }
                None => bad += 1,
            }
        }
        *now = now.wrapping_add(1);
        *next += 1;
        if *next == per_pass {
            *next = 0;
        }
    }
    bad
}

/// Times the hit loop (batched with touch, then single) and fills `result`.
fn measure_hits(
    name: &str,
    table: &mut ConnTable,
    keys: &[FlowKey],
    dirs: &[Direction],
    settings: &Settings,
    result: &mut ScenarioResult,
) -> Result<(), String> {
    let batches = (settings.packets as usize / BATCH).max(1);
    let packets = (batches * BATCH) as u64;
    let per_pass = keys.len() / BATCH;
    let mut now = START_MS + 1;
    let mut next = 0;
    // Warm-up: one pass.
    let bad = hit_batches(table, keys, dirs, &mut next, per_pass, &mut now, true);
    if bad != 0 {
        return Err(format!(
            "{name}: warm-up: {bad} packets missed or mismatched"
        ));
    }
    let before = table.counters();
    let mut allocs = 0;
    let mut attempts = 0u64;
    let mut bad = 0;
    let batched = RunSet::collect(settings, || {
        attempts += 1;
        let stopwatch = Stopwatch::start();
        let allocs_before = alloc::allocations();
        let start = Instant::now();
        bad += hit_batches(table, keys, dirs, &mut next, batches, &mut now, true);
        let elapsed = start.elapsed();
        allocs += alloc::allocations() - allocs_before;
        Ok((elapsed.as_nanos() as f64 / packets as f64, stopwatch.read()))
    })?;
    let single = RunSet::collect(settings, || {
        attempts += 1;
        let stopwatch = Stopwatch::start();
        let allocs_before = alloc::allocations();
        let start = Instant::now();
        bad += hit_batches(table, keys, dirs, &mut next, batches, &mut now, false);
        let elapsed = start.elapsed();
        allocs += alloc::allocations() - allocs_before;
        Ok((elapsed.as_nanos() as f64 / packets as f64, stopwatch.read()))
    })?;
    if bad != 0 {
        return Err(format!("{name}: {bad} packets missed or mismatched"));
    }
    let after = table.counters();
    let total = packets * attempts;
    check_hits(&before, &after, total).map_err(|e| format!("{name}: {e}"))?;
    result.packets_per_run = Some(packets);
    result.lookup_single_ns = Some(single.median());
    result.allocations_in_timed_loop = Some(allocs);
    result.set_runs(batched);
    Ok(())
}

fn check_hits(
    before: &ConntrackCounters,
    after: &ConntrackCounters,
    packets: u64,
) -> Result<(), String> {
    let lookups = after.lookups - before.lookups;
    let hits = after.hits - before.hits;
    let invalid = after.invalid - before.invalid;
    let created = after.created - before.created;
    if lookups != packets || hits != packets || invalid != 0 || created != 0 {
        return Err(format!(
            "counters: {lookups} lookups, {hits} hits, {invalid} invalid, {created} created \
             for {packets} packets"
        ));
    }
    if after.live != before.live {
        return Err(format!(
            "live connections went from {} to {}",
            before.live, after.live
        ));
    }
    Ok(())
}

/// `conntrack-hit`.
pub fn hit(settings: &Settings) -> Result<ScenarioResult, String> {
    let name = "conntrack-hit";
    let mut rng = Rng::new(0xc07a_0001);
    let (mut table, keys, dirs, heap) = populated(HIT_CONNECTIONS, 2 * HIT_CONNECTIONS, &mut rng)?;
    let mut result = ScenarioResult {
        scenario: name,
        description: format!(
            "ConnTable::lookup_update (lookup + update + translated tuple), batches of \
             {BATCH} (hashes computed, index lines then entries touched first; 'single': no \
             touch); {HIT_CONNECTIONS} live connections (80% TCP established, 20% UDP \
             replied, SNAT) in a table of {}, both directions shuffled",
            2 * HIT_CONNECTIONS
        ),
        flows: Some(HIT_CONNECTIONS),
        table_bytes: table.memory_bytes(),
        table_heap_bytes: Some(heap),
        ..ScenarioResult::default()
    };
    measure_hits(name, &mut table, &keys, &dirs, settings, &mut result)?;
    Ok(result)
}

/// `conntrack-1m`.
pub fn million(settings: &Settings) -> Result<ScenarioResult, String> {
    let name = "conntrack-1m";
    let mut rng = Rng::new(0xc07a_0003);
    let (mut table, keys, dirs, heap) = populated(MILLION, MILLION, &mut rng)?;
    if table.len() != MILLION {
        return Err(format!(
            "{name}: {} connections, expected {MILLION}",
            table.len()
        ));
    }
    table
        .check_consistency()
        .map_err(|e| format!("{name}: {e}"))?;
    let bytes = table.memory_bytes();
    let mut result = ScenarioResult {
        scenario: name,
        description: format!(
            "memory of a ConnTable holding {MILLION} live connections (capacity {MILLION}: \
             {} B/connection by memory_bytes, {} index buckets of 64 B); timed: the \
             conntrack-hit loop over them",
            bytes / MILLION,
            table.index_buckets()
        ),
        flows: Some(MILLION),
        table_bytes: bytes,
        table_heap_bytes: Some(heap),
        ..ScenarioResult::default()
    };
    measure_hits(name, &mut table, &keys, &dirs, settings, &mut result)?;
    result.targets.push(TargetCheck::at_most(
        "bytes_per_connection",
        256.0,
        bytes.max(heap) as f64 / MILLION as f64,
    ));
    Ok(result)
}

/// The `i`-th new connection of `conntrack-setup`: (pod, source port) unique over 4096 x
/// 60,000 connections, destination one of [`SETUP_DESTINATIONS`] servers on port 443.
#[inline]
fn setup_key(i: u64) -> FlowKey {
    FlowKey {
        src: pod(i),
        dst: server((i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) % SETUP_DESTINATIONS),
        vrf: 0,
        protocol: TCP,
        ipv6: false,
        src_port: 1024 + ((i / 4096) % 60_000) as u16,
        dst_port: 443,
    }
}

#[inline]
fn setup_now(i: u64) -> u32 {
    START_MS.wrapping_add((i * SETUP_MS_NUM / SETUP_MS_DEN) as u32)
}

/// Opens connections `*next..*next + batches * BATCH`; returns how many failed (lookup hit,
/// no port, create refused).
fn setup_batches(table: &mut ConnTable, next: &mut u64, batches: usize) -> usize {
    let mut bad = 0;
    let mut keys = [FlowKey::default(); BATCH];
    let mut hashes = [0u64; BATCH];
    let nat = masquerade();
    for _ in 0..batches {
        for (j, (key, hash)) in keys.iter_mut().zip(hashes.iter_mut()).enumerate() {
            *key = setup_key(*next + j as u64);
            *hash = table.key_hash(key);
            black_box(table.touch(*hash));
            black_box(table.touch_port(&nat.reply_tuple(key), PORTS, *hash));
        }
        for (j, (key, &hash)) in keys.iter().zip(&hashes).enumerate() {
            let now = setup_now(*next + j as u64);
            if table.lookup_hashed(key, hash, now).is_some() {
                bad += 1;
                continue;
            }
            let template = nat.reply_tuple(key);
            let Some(port) = table.allocate_port(&template, PORTS, hash) else {
                bad += 1;
                continue;
            };
            let translated = Nat {
                src: Some(Translation { addr: NODE, port }),
                dst: None,
            };
            bad += usize::from(
                table
                    .create(key, &translated, TcpFlags::SYN, 64, now)
                    .is_err(),
            );
        }
        *next += BATCH as u64;
        table.expire(setup_now(*next), SETUP_SWEEP);
    }
    bad
}

/// `conntrack-setup`.
pub fn setup(settings: &Settings) -> Result<ScenarioResult, String> {
    let name = "conntrack-setup";
    let before = alloc::live_bytes();
    let mut table = ConnTable::new(ConntrackConfig {
        capacity: SETUP_CAPACITY,
        ..ConntrackConfig::default()
    });
    let heap = alloc::live_bytes().saturating_sub(before);
    let mut next = 0u64;
    // Warm-up: three timeouts' worth of connections, reaching the steady state.
    let warm = 3 * 500_000 / BATCH;
    let bad = setup_batches(&mut table, &mut next, warm);
    if bad != 0 {
        return Err(format!("{name}: warm-up: {bad} connections failed"));
    }
    if !SETUP_LIVE.contains(&table.len()) {
        return Err(format!(
            "{name}: {} live connections after the warm-up, expected {SETUP_LIVE:?}",
            table.len()
        ));
    }
    let batches = (settings.packets as usize / BATCH).max(1);
    let connections = (batches * BATCH) as u64;
    let counters_before = table.counters();
    let mut allocs = 0;
    let mut attempts = 0u64;
    let mut bad = 0;
    let mut live_range = (usize::MAX, 0usize);
    let runs = RunSet::collect(settings, || {
        attempts += 1;
        let stopwatch = Stopwatch::start();
        let allocs_before = alloc::allocations();
        let start = Instant::now();
        bad += setup_batches(&mut table, &mut next, batches);
        let elapsed = start.elapsed();
        allocs += alloc::allocations() - allocs_before;
        live_range = (live_range.0.min(table.len()), live_range.1.max(table.len()));
        Ok((
            elapsed.as_nanos() as f64 / connections as f64,
            stopwatch.read(),
        ))
    })?;
    if bad != 0 {
        return Err(format!("{name}: {bad} connections failed"));
    }
    let after = table.counters();
    let total = connections * attempts;
    let d = |f: fn(&ConntrackCounters) -> u64| f(&after) - f(&counters_before);
    let (lookups, hits, created) = (d(|c| c.lookups), d(|c| c.hits), d(|c| c.created));
    let refused = d(|c| c.refused_full);
    let evicted = d(|c| c.evicted_embryonic) + d(|c| c.evicted_closing);
    let expired = d(|c| c.expired);
    if lookups != total || hits != 0 || created != total || refused != 0 || evicted != 0 {
        return Err(format!(
            "{name}: counters: {lookups} lookups, {hits} hits, {created} created, {refused} \
             refused, {evicted} evicted for {total} new connections"
        ));
    }
    // Steady state: connections are recycled (expired and reclaimed) as fast as they come,
    // and nothing else left the table.
    if after.live + expired != counters_before.live + created || 2 * expired < created {
        return Err(format!(
            "{name}: {created} created, {expired} expired, live {} -> {}: not a steady state",
            counters_before.live, after.live
        ));
    }
    if !SETUP_LIVE.contains(&live_range.0) || !SETUP_LIVE.contains(&live_range.1) {
        return Err(format!(
            "{name}: live connections ranged {live_range:?}, expected within {SETUP_LIVE:?}"
        ));
    }
    table
        .check_consistency()
        .map_err(|e| format!("{name}: {e}"))?;
    let mut result = ScenarioResult {
        scenario: name,
        description: format!(
            "new TCP connections (SYN) with masquerade: ConnTable lookup miss + allocate_port \
             (1024-65535, {SETUP_DESTINATIONS} destinations) + create, plus the expiry sweep \
             ({SETUP_SWEEP} slots per {BATCH}); capacity {SETUP_CAPACITY}, steady state \
             {}-{} live; {expired} expired connections reclaimed during the runs; figures per \
             new connection (Mpps = million new connections/s)",
            live_range.0, live_range.1
        ),
        flows: Some(live_range.1),
        table_bytes: table.memory_bytes(),
        table_heap_bytes: Some(heap),
        packets_per_run: Some(connections),
        allocations_in_timed_loop: Some(allocs),
        ..ScenarioResult::default()
    };
    result.set_runs(runs);
    let rate = 1e9 / result.ns_per_packet.unwrap_or(f64::MAX);
    result
        .targets
        .push(TargetCheck::at_least("new_connections_per_sec", 1e6, rate));
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_keys_are_unique_over_the_live_window() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..200_000u64 {
            assert!(seen.insert(setup_key(i)));
        }
    }

    #[test]
    fn small_hit_loop_finds_everything() {
        let mut rng = Rng::new(5);
        let (mut table, keys, dirs, _) = populated(640, 1280, &mut rng).unwrap();
        let mut next = 0;
        let mut now = START_MS;
        let passes = keys.len() / BATCH;
        assert_eq!(
            hit_batches(&mut table, &keys, &dirs, &mut next, passes, &mut now, true),
            0
        );
        assert_eq!(table.counters().hits, 640 + 2 * 640);
    }

    #[test]
    fn setup_loop_opens_connections() {
        let mut table = ConnTable::new(ConntrackConfig {
            capacity: 10_000,
            ..ConntrackConfig::default()
        });
        let mut next = 0;
        assert_eq!(setup_batches(&mut table, &mut next, 10), 0);
        assert_eq!(table.len(), 640);
        table.check_consistency().unwrap();
    }
}
