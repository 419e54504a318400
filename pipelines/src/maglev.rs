//! Maglev consistent hashing with weights (Eisenbud et al., "Maglev: A Fast and Reliable
//! Software Network Load Balancer", NSDI 2016, section 3.4): the backend choice of a Service
//! (DNAT) for a new connection.
//!
//! A [`Maglev`] table is a lookup array of `M` entries (`M` prime), each holding the caller's
//! id of one backend. A connection's hash picks one entry, so the choice costs one multiply
//! and one load; the same set of backends always gives the same table, on every worker and
//! every node; and a change of the set moves few entries, so few new connections land on a
//! different backend than before (established ones are pinned by connection tracking, not
//! by this table).
//!
//! # Building the table (Maglev's populate)
//! Each backend has a preference list over the `M` entries, a permutation derived from its
//! [`MaglevBackend::key`] alone: `offset = h1(key) mod M`, `skip = h2(key) mod (M - 1) + 1`,
//! the `j`-th preference `(offset + j * skip) mod M` (a permutation because `M` is prime).
//! Backends then take turns: on its turn a backend takes its most preferred entry still free.
//! When every entry is taken the table is done. Because a backend's preferences do not depend
//! on the other backends, removing one mostly frees its own entries, which the others take in
//! their order of preference, and leaves most of their entries where they were.
//!
//! # Weights: a weighted order of turns
//! Classic Maglev gives every backend one turn per round, so each gets `M / N` entries give or
//! take one. With weights, backend `i` of weight `w_i` takes its `k`-th turn (k = 0, 1, ...)
//! at the virtual time `(2k + 1) / (2 w_i)`: it advances through its permutation at a speed
//! proportional to its weight. Turns are taken in order of time, ties broken by larger weight
//! first, then by (key, id). Every turn takes exactly one entry, and this is the order of the
//! Sainte-Laguë (Webster) apportionment method, so when the table fills at time `T` backend
//! `i` holds `round(T * w_i)` entries: shares follow the weights to within half an entry each
//! (exactly: for any two backends holding `c_i` and `c_j` entries,
//! `(2c_i - 1) / w_i <= (2c_j + 1) / w_j`; the property test checks it). Two properties follow:
//! - equal weights give exactly classic Maglev (rounds in (key, id) order);
//! - a backend's turn times depend only on its own weight, not on the others (unlike schemes
//!   that normalise by the largest weight, where a change of the largest weight reschedules
//!   everyone), so adding or removing a backend, or changing one weight, leaves the relative
//!   order of everyone else's turns unchanged and moves about as much as unweighted Maglev.
//!
//! Turns are grouped by weight: backends of the same weight take their turns together (one
//! sweep in (key, id) order), and a binary heap orders the groups' turns (exact fixed-point
//! times, see `turn_time`). Equal weights are therefore a plain round-robin with no heap work.
//!
//! The build computes the paper's table exactly (a unit test compares it with a literal
//! implementation) but faster: a backend tests two preferences per step without branches on
//! the wrap-around, and once only about `sqrt(M)` entries are free it stops probing (`M / F`
//! probes per entry with `F` free) and picks, among the listed free entries, the one earliest
//! in its permutation (`F` multiplications). That tail is about half the probes of the paper's
//! loop.
//!
//! # Contract
//! - **Lookup** ([`Maglev::lookup`]): O(1), one 64x64-bit multiply and one bounds-checked load
//!   (`table[(hash * M) >> 64]`, Lemire's multiply-shift range reduction: no division). The
//!   hash must be well mixed in its *high* bits, as [`FlowHasher`] output is (for example
//!   `FlowKey::hash` of the original 5-tuple, or a hash of the client address alone for
//!   client-IP affinity). Hashes computed with the same seed on every node give the same
//!   backend on every node. The hash should not also drive another choice from the same high
//!   bits (ECMP uses bits 32-63 of the flow hash: hash the original tuple with its own seed),
//!   or the two choices correlate.
//! - **Build** ([`Maglev::new`], [`Maglev::rebuild`]): `O(M log M)` expected work (the paper's
//!   bound; see above), plus `O(log G)` heap work per group turn where `G` is the number of
//!   distinct weights (none when all weights are equal; at most `M` group turns), plus sorting
//!   the backends. `rebuild` reuses the table's allocation; the scratch (a bitmap of `M` bits
//!   and 32 bytes per backend) is allocated per build. Measured on one core (EPYC, ~4.1 GHz,
//!   `vrouter-perf pipeline --scenario maglev-build`): about 0.6 ms for 10 to 1000 backends at
//!   65537 entries, 1.4 ms at 131071; the worst case, 1000 distinct weights at 131071 entries,
//!   5.6 ms (the heap).
//! - **Memory**: 4 bytes per entry (the caller's `u32` id) plus 16 bytes per backend:
//!   256 KiB for the default `M` = 65537, so 1000 Services at the default size take 256 MiB.
//!   [`Maglev::memory_bytes`] reports it.
//! - **Table size rules**: `M` must be a prime in `[2, MAX_TABLE_SIZE]` and at least the
//!   number of backends; anything else is an error ([`MaglevError`]), never a panic. Balance is
//!   within one entry, i.e. within `1/M` of the hash space, so the paper's rule `M >= 100 N`
//!   keeps every backend within 1% of its share; weights need `M >= 100 Σw / min w` for the
//!   same precision, and a backend whose fair share is below half an entry gets none.
//!   **Keep `M` fixed for a Service**: a different `M` remaps almost every entry.
//!   [`Maglev::table_size_for`] gives [`DEFAULT_TABLE_SIZE`] up to 655 backends and then the
//!   next size of a short ladder (each about double), so a Service changes size rarely; a
//!   node with very many Services may choose a smaller prime for small ones (see
//!   [`TABLE_SIZES`]) and accept the coarser balance.
//! - **Disruption** (measured in `pipelines/tests/maglev.rs`, with `table_size_for`: `M` >=
//!   65537 and `M` >= 100 N): removing one of `N` backends moves its `1/N` of the entries
//!   (necessarily) and at most 0.9% of the table between the others (tested bound 1.5%);
//!   adding one moves `1/(N + 1)` of the table to it and at most 0.9% between the others.
//!   Smaller tables disrupt more: 2.7% with 10 backends in 1021 entries, 3.3% with 100 in
//!   4093. This is the paper's trade-off: Maglev favours balance over minimal disruption (a
//!   ring hash moves nothing else but balances far worse); the connection table keeps
//!   established connections on their backend anyway.
//! - **Input**: the order of the backends does not matter. Backends of weight 0 are ignored.
//!   Entries with the same key and the same id are one backend with the largest of their
//!   weights (listing a backend twice changes nothing). Different ids with the same key (a
//!   64-bit collision of [`backend_key`]) remain distinct backends sharing one permutation:
//!   they take turns on it in id order and keep their shares; only disruption suffers.
//! - With no backend of weight > 0 the table is empty and every lookup is `None` (the
//!   Service rejects new connections).
//! - The permutation seeds are fixed constants: every node and every restart builds the same
//!   table from the same backends. Changing them (or the weighted order) changes every table,
//!   so nodes of a cluster should run the same version for the choice to agree across nodes.
//!
//! Not done here: incremental updates (a rebuild costs under a millisecond at the default
//! size, and the control plane rebuilds off the packet path, so workers can swap in a new
//! table); the lookup-side fallback when a chosen backend is unhealthy (the control plane
//! removes it instead); a faster order of turns for many distinct weights (a calendar queue
//! instead of the heap) and a smaller entry (a `u16` index into the Service's backends would
//! halve the memory at the cost of a second load).

use crate::hash::FlowHasher;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::IpAddr;

/// Table size used for up to 655 backends (the paper's `M >= 100 N`): a prime (2^16 + 1).
pub const DEFAULT_TABLE_SIZE: usize = 65_537;

/// Largest table size accepted (the largest prime below 2^20): 4 MiB of entries.
pub const MAX_TABLE_SIZE: usize = 1_048_573;

/// Primes suggested as table sizes, each about double the previous one. Any prime up to
/// [`MAX_TABLE_SIZE`] is accepted; these are the sizes [`Maglev::table_size_for`] chooses
/// from (from [`DEFAULT_TABLE_SIZE`] up), and the small ones suit Services with few backends
/// on nodes with very many Services.
pub const TABLE_SIZES: &[usize] = &[
    251,
    509,
    1_021,
    2_039,
    4_093,
    8_191,
    16_381,
    32_749,
    DEFAULT_TABLE_SIZE,
    131_071,
    262_139,
    524_287,
    MAX_TABLE_SIZE,
];

/// Seeds of the two permutation hashes (fixed: see the module docs).
const OFFSET_SEED: u64 = 0x6d61_676c_6576_6f66; // "maglevof"
const SKIP_SEED: u64 = 0x6d61_676c_6576_736b; // "maglevsk"
/// Seed of [`backend_key`].
const KEY_SEED: u64 = 0x6261_636b_656e_6473; // "backends"

/// One backend as the caller gives it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MaglevBackend {
    /// Stable identity from which the backend's permutation derives, e.g. [`backend_key`] of
    /// its address and port. The same key gives the same preferences in every table.
    pub key: u64,
    /// The caller's id, returned by [`Maglev::lookup`] (an index into the Service's backend
    /// list, for example). Ids are opaque: only the key positions the backend.
    pub id: u32,
    /// Relative weight; 0 means the backend takes no new connections.
    pub weight: u16,
}

impl MaglevBackend {
    /// A backend from its parts.
    pub const fn new(key: u64, id: u32, weight: u16) -> Self {
        MaglevBackend { key, id, weight }
    }
}

impl From<(u64, u32, u16)> for MaglevBackend {
    /// From `(key, id, weight)`.
    fn from((key, id, weight): (u64, u32, u16)) -> Self {
        MaglevBackend { key, id, weight }
    }
}

/// The stable key of a backend at `addr`:`port`, for [`MaglevBackend::key`]: a fixed-seed
/// hash, the same on every node.
pub fn backend_key(addr: IpAddr, port: u16) -> u64 {
    let mut h = FlowHasher::with_seed(KEY_SEED);
    match addr {
        IpAddr::V4(a) => h.add(u64::from(u32::from(a))),
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            h.add(bits as u64);
            h.add((bits >> 64) as u64);
        }
    }
    h.add(u64::from(port) | u64::from(addr.is_ipv6()) << 16);
    h.finish64()
}

/// Why a table could not be built. The table is left as it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MaglevError {
    /// The table size is not a prime in `[2, MAX_TABLE_SIZE]`.
    #[error("Maglev table size {0} is not a prime between 2 and {MAX_TABLE_SIZE}")]
    TableSize(usize),
    /// More backends (of weight > 0) than table entries.
    #[error("{backends} backends do not fit a Maglev table of {table_size} entries")]
    TooManyBackends {
        /// Distinct backends of weight > 0.
        backends: usize,
        /// The table size asked for.
        table_size: usize,
    },
}

/// A Maglev lookup table: hash of a connection -> caller's backend id.
#[derive(Clone, Debug)]
pub struct Maglev {
    /// `M` entries of backend ids; empty when there is no backend of weight > 0.
    table: Vec<u32>,
    /// `M`.
    table_size: usize,
    /// The backends in the table: weight > 0, deduplicated, sorted by (key, id).
    backends: Vec<MaglevBackend>,
}

impl Maglev {
    /// Builds the table of `backends` with `table_size` entries (see the module docs for the
    /// size rules; [`Maglev::table_size_for`] chooses one).
    pub fn new(backends: &[MaglevBackend], table_size: usize) -> Result<Self, MaglevError> {
        let mut maglev = Maglev {
            table: Vec::new(),
            table_size,
            backends: Vec::new(),
        };
        maglev.rebuild_with_size(backends, table_size)?;
        Ok(maglev)
    }

    /// An empty table of `table_size` entries: every lookup is `None` until a rebuild.
    pub fn empty(table_size: usize) -> Result<Self, MaglevError> {
        Maglev::new(&[], table_size)
    }

    /// Rebuilds the table for a new set of backends, keeping its size and reusing its memory.
    /// On error the table is unchanged.
    pub fn rebuild(&mut self, backends: &[MaglevBackend]) -> Result<(), MaglevError> {
        self.rebuild_with_size(backends, self.table_size)
    }

    /// Rebuilds the table with a new size (almost every entry moves when the size changes).
    /// On error the table is unchanged.
    pub fn rebuild_with_size(
        &mut self,
        backends: &[MaglevBackend],
        table_size: usize,
    ) -> Result<(), MaglevError> {
        if !is_valid_table_size(table_size) {
            return Err(MaglevError::TableSize(table_size));
        }
        let members = canonical(backends);
        if members.len() > table_size {
            return Err(MaglevError::TooManyBackends {
                backends: members.len(),
                table_size,
            });
        }
        populate(&members, table_size, &mut self.table);
        self.backends = members;
        self.table_size = table_size;
        Ok(())
    }

    /// The backend id for a connection of hash `hash`; `None` when there is no backend of
    /// weight > 0. One multiply and one load.
    #[inline]
    pub fn lookup(&self, hash: u64) -> Option<u32> {
        // Multiply-shift: `hash * len / 2^64` is below `len` for every hash; an empty table
        // gives index 0, which `get` refuses.
        let index = ((u128::from(hash) * self.table.len() as u128) >> 64) as usize;
        self.table.get(index).copied()
    }

    /// Number of backends in the table (weight > 0, duplicates merged).
    pub fn len(&self) -> usize {
        self.backends.len()
    }

    /// No backend of weight > 0: every lookup is `None`.
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    /// `M`, the number of entries (also when the table is empty).
    pub fn table_size(&self) -> usize {
        self.table_size
    }

    /// The backends in the table, sorted by (key, id), weight > 0, duplicates merged.
    pub fn backends(&self) -> &[MaglevBackend] {
        &self.backends
    }

    /// The entries (backend ids), `M` of them; empty when there is no backend. For listing a
    /// Service's shares and for measuring how much a change moved.
    pub fn entries(&self) -> &[u32] {
        &self.table
    }

    /// Heap and inline bytes this table holds.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.table.capacity() * std::mem::size_of::<u32>()
            + self.backends.capacity() * std::mem::size_of::<MaglevBackend>()
    }

    /// The table size for `backends` backends: the smallest of [`TABLE_SIZES`] that is at
    /// least [`DEFAULT_TABLE_SIZE`] and at least `100 * backends`, at most
    /// [`MAX_TABLE_SIZE`] (beyond 10,485 backends balance is coarser than 1%; beyond
    /// `MAX_TABLE_SIZE` backends no table fits).
    pub fn table_size_for(backends: usize) -> usize {
        let wanted = backends.saturating_mul(100).max(DEFAULT_TABLE_SIZE);
        TABLE_SIZES
            .iter()
            .copied()
            .find(|&size| size >= wanted)
            .unwrap_or(MAX_TABLE_SIZE)
    }
}

/// Whether `size` is accepted as a table size: a prime in `[2, MAX_TABLE_SIZE]`.
pub fn is_valid_table_size(size: usize) -> bool {
    (2..=MAX_TABLE_SIZE).contains(&size) && is_prime(size)
}

/// Trial division (sizes are at most 2^20: at most ~500 divisions).
fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// The backends that take part: weight > 0, sorted by (key, id), one per (key, id) with the
/// largest weight.
fn canonical(backends: &[MaglevBackend]) -> Vec<MaglevBackend> {
    let mut members: Vec<MaglevBackend> =
        backends.iter().copied().filter(|b| b.weight > 0).collect();
    // Largest weight first within a (key, id), so `dedup` keeps it.
    members.sort_unstable_by(|a, b| {
        (a.key, a.id)
            .cmp(&(b.key, b.id))
            .then(b.weight.cmp(&a.weight))
    });
    members.dedup_by(|later, kept| later.key == kept.key && later.id == kept.id);
    members
}

/// Preferences a backend examines at once while probing (see [`Filler::probe`]; 2 measured
/// faster than 1, 4 and 8).
const LANES: usize = 2;

/// The tail phase starts with `TAIL_FACTOR * sqrt(M)` entries free (1 measured faster than 2
/// and 4).
const TAIL_FACTOR: usize = 1;

/// A backend's position in its permutation.
#[derive(Clone, Copy, Debug)]
struct Cursor {
    /// The next preference to examine.
    next: u32,
    /// `steps[k]` = `(k + 1) * skip mod M`: the offsets of the following preferences.
    steps: [u32; LANES],
    /// `skip^-1 mod M`, computed on the first turn in the tail (0 until then).
    inverse: u32,
}

impl Cursor {
    /// The start of the permutation of `key` over `m` entries (`m` prime, at least 2).
    fn new(key: u64, m: u32) -> Cursor {
        let hash = |seed| {
            let mut h = FlowHasher::with_seed(seed);
            h.add(key);
            h.finish64()
        };
        let m = u64::from(m);
        let skip = hash(SKIP_SEED) % (m - 1) + 1;
        let mut steps = [0u32; LANES];
        for (k, step) in steps.iter_mut().enumerate() {
            *step = ((k as u64 + 1) * skip % m) as u32;
        }
        Cursor {
            next: (hash(OFFSET_SEED) % m) as u32,
            steps,
            inverse: 0,
        }
    }
}

/// `a^-1 mod m` for `0 < a < m`, `m` prime (extended Euclid).
fn mod_inverse(a: u32, m: u32) -> u32 {
    let (mut r0, mut r1) = (i64::from(m), i64::from(a));
    let (mut t0, mut t1) = (0i64, 1i64);
    while r1 != 0 {
        let q = r0 / r1;
        (r0, r1) = (r1, r0 - q * r1);
        (t0, t1) = (t1, t0 - q * t1);
    }
    t0.rem_euclid(i64::from(m)) as u32
}

/// `x mod m` by multiplication (Lemire, Kaser and Kurz, "Faster remainder by direct
/// computation", 2019): exact for `x < 2^40` and `m < 2^24` (64 >= 40 + 24 bits).
#[derive(Clone, Copy, Debug)]
struct FastMod {
    m: u32,
    magic: u64,
}

impl FastMod {
    fn new(m: u32) -> FastMod {
        FastMod {
            m,
            magic: u64::MAX / u64::from(m) + 1,
        }
    }

    #[inline]
    fn rem(self, x: u64) -> u32 {
        let low = self.magic.wrapping_mul(x);
        ((u128::from(low) * u128::from(self.m)) >> 64) as u32
    }
}

/// The backends of one weight, taking their turns together.
#[derive(Clone, Copy, Debug)]
struct Group {
    weight: u32,
    /// Range of the group in the turn order.
    start: usize,
    end: usize,
}

/// Virtual time of turn `k` of a backend of weight `w`, `(2k + 1) / (2w)`, in fixed point:
/// `floor((2k + 1) 2^39 / w)`. Exact for ordering: two different times (denominators at most
/// 2^17) differ by at least 2^-34, i.e. 2^6 units, and equal times give equal values; with
/// `k < 2^20` the value stays below 2^61.
#[inline]
fn turn_time(turn: u64, weight: u32) -> u64 {
    ((2 * turn + 1) << 39) / u64::from(weight)
}

/// Fills `table` (cleared first) with the ids of `members` (canonical, at most `m` of them),
/// `m` entries, Maglev's way with weighted turns; leaves it empty for no member.
fn populate(members: &[MaglevBackend], m: usize, table: &mut Vec<u32>) {
    table.clear();
    if members.is_empty() {
        table.shrink_to_fit();
        return;
    }
    let m = m as u32;
    // Turn order: weight descending, then (key, id) as `members` are sorted.
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(members[i].weight));
    let mut cursors: Vec<Cursor> = order
        .iter()
        .map(|&i| Cursor::new(members[i].key, m))
        .collect();
    let ids: Vec<u32> = order.iter().map(|&i| members[i].id).collect();
    let mut groups: Vec<Group> = Vec::new();
    for (position, &i) in order.iter().enumerate() {
        let weight = u32::from(members[i].weight);
        match groups.last_mut() {
            Some(group) if group.weight == weight => group.end = position + 1,
            _ => groups.push(Group {
                weight,
                start: position,
                end: position + 1,
            }),
        }
    }

    table.resize(m as usize, 0);
    let mut filler = Filler::new(table, m);
    if let [group] = groups[..] {
        // Equal weights: classic Maglev rounds.
        while filler.sweep(
            &mut cursors[group.start..group.end],
            &ids[group.start..group.end],
        ) {}
        return;
    }
    // Earliest time first, then the lower group index (the larger weight). A group's next
    // turn number is in `turns`, so heap entries stay small (a 64-bit time, a 32-bit index).
    let mut turns = vec![0u64; groups.len()];
    let mut heap: BinaryHeap<Reverse<(u64, u32)>> = groups
        .iter()
        .enumerate()
        .map(|(group, g)| Reverse((turn_time(0, g.weight), group as u32)))
        .collect();
    while let Some(mut next) = heap.peek_mut() {
        let Reverse((time, group)) = &mut *next;
        let g = groups[*group as usize];
        if !filler.sweep(&mut cursors[g.start..g.end], &ids[g.start..g.end]) {
            return;
        }
        let turn = &mut turns[*group as usize];
        *turn += 1;
        *time = turn_time(*turn, g.weight);
    }
}

/// The table being filled.
///
/// Two phases. While many entries are free, a backend probes its preferences in order until
/// one is free (`M / F` probes on average with `F` entries free). Once `F` falls to about
/// `sqrt(M)`, probing would cost more than looking at every free entry, so the free entries
/// are listed and a backend takes the one it prefers most: the one fewest steps after its
/// cursor in its permutation, `(slot - next) * skip^-1 mod M`. Both phases pick the same
/// entry; the second only replaces the `M ln sqrt(M)` probes of the tail (about half of all)
/// with `M / 2` multiplications.
struct Filler<'a> {
    table: &'a mut [u32],
    /// One bit per entry: taken.
    taken: Vec<u64>,
    /// Entries still free.
    left: usize,
    m: u32,
    /// `left` at which the free entries are listed.
    tail: usize,
    /// The free entries once listed (in no particular order).
    free: Vec<u32>,
    listed: bool,
    modulo: FastMod,
}

impl<'a> Filler<'a> {
    fn new(table: &'a mut [u32], m: u32) -> Self {
        Filler {
            table,
            taken: vec![0u64; (m as usize).div_ceil(64)],
            left: m as usize,
            m,
            // At least `LANES`: with `M` <= `LANES` a step can wrap around to 0 and probing
            // could stall on a taken entry.
            tail: (TAIL_FACTOR * (f64::from(m).sqrt() as usize)).max(LANES),
            free: Vec::new(),
            listed: false,
            modulo: FastMod::new(m),
        }
    }

    /// One turn for each backend of `cursors` in order; false once the table is full.
    fn sweep(&mut self, cursors: &mut [Cursor], ids: &[u32]) -> bool {
        for (cursor, &id) in cursors.iter_mut().zip(ids) {
            let slot = if self.left > self.tail {
                self.probe(cursor)
            } else {
                self.search(cursor)
            };
            self.table[slot as usize] = id;
            self.left -= 1;
            if self.left == 0 {
                return false;
            }
        }
        true
    }

    /// `s mod M` for `s < 2M`, without a branch (which would be mispredicted half the time):
    /// below `M` the subtraction wraps around to a larger number.
    #[inline]
    fn wrap(&self, s: u32) -> u32 {
        s.min(s.wrapping_sub(self.m))
    }

    /// Takes the first free entry in the rest of `cursor`'s permutation (there is one while
    /// `left > 0`: the permutation visits every entry) and moves the cursor past it.
    ///
    /// The next [`LANES`] preferences are computed from `next` independently
    /// (`next + steps[k] mod M`) and tested together, so the probes do not wait on each other.
    /// Looking past the free entry changes nothing: the result is that of probing one
    /// preference at a time.
    #[inline]
    fn probe(&mut self, cursor: &mut Cursor) -> u32 {
        loop {
            let base = cursor.next;
            let mut free = 0u32;
            for k in 0..LANES {
                let slot = if k == 0 {
                    base
                } else {
                    self.wrap(base + cursor.steps[k - 1])
                };
                let word = self.taken[(slot / 64) as usize];
                free |= (((!word) >> (slot % 64)) as u32 & 1) << k;
            }
            if free != 0 {
                let k = free.trailing_zeros() as usize;
                let slot = if k == 0 {
                    base
                } else {
                    self.wrap(base + cursor.steps[k - 1])
                };
                self.taken[(slot / 64) as usize] |= 1u64 << (slot % 64);
                cursor.next = self.wrap(slot + cursor.steps[0]);
                return slot;
            }
            cursor.next = self.wrap(base + cursor.steps[LANES - 1]);
        }
    }

    /// The same choice as [`Filler::probe`] by looking at every free entry (tail phase).
    fn search(&mut self, cursor: &mut Cursor) -> u32 {
        if !self.listed {
            self.listed = true;
            self.free.reserve_exact(self.left);
            for (w, &word) in self.taken.iter().enumerate() {
                let mut free = !word;
                while free != 0 {
                    let slot = (w * 64) as u32 + free.trailing_zeros();
                    if slot < self.m {
                        self.free.push(slot);
                    }
                    free &= free - 1;
                }
            }
        }
        if cursor.inverse == 0 {
            cursor.inverse = mod_inverse(cursor.steps[0], self.m);
        }
        let (next, inverse, m) = (cursor.next, u64::from(cursor.inverse), self.m);
        let mut best = (u32::MAX, 0);
        for (i, &slot) in self.free.iter().enumerate() {
            let distance = if slot >= next {
                slot - next
            } else {
                slot + m - next
            };
            let steps = self.modulo.rem(u64::from(distance) * inverse);
            if steps < best.0 {
                best = (steps, i);
            }
        }
        let slot = self.free.swap_remove(best.1);
        self.taken[(slot / 64) as usize] |= 1u64 << (slot % 64);
        cursor.next = self.wrap(slot + cursor.steps[0]);
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(n: u32) -> Vec<MaglevBackend> {
        (0..n)
            .map(|i| MaglevBackend::new(backend_key([10, 0, 0, i as u8].into(), 80), i, 1))
            .collect()
    }

    fn counts(maglev: &Maglev, n: usize) -> Vec<usize> {
        let mut counts = vec![0; n];
        for &id in maglev.entries() {
            counts[id as usize] += 1;
        }
        counts
    }

    #[test]
    fn ladder_is_prime_and_doubling() {
        for pair in TABLE_SIZES.windows(2) {
            assert!(pair[0] < pair[1]);
        }
        assert!(TABLE_SIZES.iter().all(|&s| is_valid_table_size(s)));
        assert!(!is_valid_table_size(MAX_TABLE_SIZE + 2));
        assert!(!is_valid_table_size(0) && !is_valid_table_size(1) && !is_valid_table_size(9));
        assert!(is_valid_table_size(2) && is_valid_table_size(3));
    }

    #[test]
    fn table_size_for_rules() {
        assert_eq!(Maglev::table_size_for(0), DEFAULT_TABLE_SIZE);
        assert_eq!(Maglev::table_size_for(655), DEFAULT_TABLE_SIZE);
        assert_eq!(Maglev::table_size_for(656), 131_071);
        assert_eq!(Maglev::table_size_for(1024), 131_071);
        assert_eq!(Maglev::table_size_for(usize::MAX), MAX_TABLE_SIZE);
    }

    #[test]
    fn classic_rounds_give_equal_counts() {
        let maglev = Maglev::new(&backends(7), 251).unwrap();
        let c = counts(&maglev, 7);
        // 251 = 7 * 35 + 6: the first six in (key, id) order get 36.
        assert_eq!(c.iter().sum::<usize>(), 251);
        assert!(c.iter().all(|&n| n == 35 || n == 36), "{c:?}");
        assert_eq!(c.iter().filter(|&&n| n == 36).count(), 6);
    }

    #[test]
    fn weights_follow_sainte_lague() {
        let mut b = backends(3);
        b[1].weight = 2;
        b[2].weight = 3;
        let maglev = Maglev::new(&b, 251).unwrap();
        let c = counts(&maglev, 3);
        // 251 / 6 = 41.83: 41.8, 83.7, 125.5 -> 42, 84, 125 or 42, 83, 126.
        assert_eq!(c.iter().sum::<usize>(), 251);
        assert!((c[0] as f64 - 41.83).abs() <= 1.0, "{c:?}");
        assert!((c[1] as f64 - 83.67).abs() <= 1.0, "{c:?}");
        assert!((c[2] as f64 - 125.5).abs() <= 1.0, "{c:?}");
    }

    #[test]
    fn empty_and_errors() {
        let empty = Maglev::empty(251).unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.lookup(u64::MAX), None);
        assert_eq!(empty.table_size(), 251);
        assert_eq!(
            Maglev::new(&backends(3), 250).unwrap_err(),
            MaglevError::TableSize(250)
        );
        assert_eq!(
            Maglev::new(&backends(5), 3).unwrap_err(),
            MaglevError::TooManyBackends {
                backends: 5,
                table_size: 3
            }
        );
        let mut maglev = Maglev::new(&backends(3), 251).unwrap();
        let before = maglev.entries().to_vec();
        assert!(maglev.rebuild_with_size(&backends(4), 100).is_err());
        assert_eq!(maglev.entries(), &before[..]);
        assert_eq!(maglev.len(), 3);
    }

    #[test]
    fn turn_times_order_exactly() {
        // 1/2 (weight 1, turn 0) after 1/6 (weight 3, turn 0).
        assert!(turn_time(0, 1) > turn_time(0, 3));
        // Equal times: turn 1 of weight 1 (3/2) and turn 4 of weight 3 (9/6).
        assert_eq!(turn_time(1, 1), turn_time(4, 3));
        // The closest distinct times at the largest weights and turns stay apart and ordered.
        let (a, b) = (65_535u32, 65_534u32);
        for turn in [0u64, 1, 1000, (1 << 20) - 1] {
            for other in [turn.saturating_sub(1), turn, turn + 1] {
                let exact = ((2 * turn + 1) * u64::from(b)).cmp(&((2 * other + 1) * u64::from(a)));
                assert_eq!(turn_time(turn, a).cmp(&turn_time(other, b)), exact);
            }
        }
    }

    #[test]
    fn fast_mod_is_exact() {
        let mut x = 0x1234_5678_9abc_def1u64;
        for &m in TABLE_SIZES.iter().chain(&[2, 3, 7]) {
            let modulo = FastMod::new(m as u32);
            for _ in 0..20_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let v = x >> 24; // 40 bits
                assert_eq!(u64::from(modulo.rem(v)), v % m as u64, "{v} mod {m}");
            }
            let top = (1u64 << 40) - 1;
            assert_eq!(u64::from(modulo.rem(top)), top % m as u64);
            assert_eq!(modulo.rem(0), 0);
        }
    }

    #[test]
    fn inverse() {
        for &m in &[2u32, 3, 251, 65_537, MAX_TABLE_SIZE as u32] {
            for a in [1, 2, m / 2, m - 1].into_iter().filter(|&a| a > 0 && a < m) {
                let inv = mod_inverse(a, m);
                assert_eq!(
                    u64::from(a) * u64::from(inv) % u64::from(m),
                    1 % u64::from(m)
                );
            }
        }
    }

    /// The paper's populate, literally: every turn picks the backend with the earliest time
    /// (ties: larger weight, then key, then id) by scanning them all, and probes one
    /// preference at a time with `%`.
    fn reference(backends: &[MaglevBackend], m: usize) -> Vec<u32> {
        let members = canonical(backends);
        if members.is_empty() {
            return Vec::new();
        }
        let m = m as u64;
        let hash = |seed, key| {
            let mut h = FlowHasher::with_seed(seed);
            h.add(key);
            h.finish64()
        };
        let mut next: Vec<u64> = members
            .iter()
            .map(|b| hash(OFFSET_SEED, b.key) % m)
            .collect();
        let skip: Vec<u64> = members
            .iter()
            .map(|b| hash(SKIP_SEED, b.key) % (m - 1) + 1)
            .collect();
        let mut turns = vec![0u64; members.len()];
        let mut table = vec![None; m as usize];
        for _ in 0..m {
            let i = (0..members.len())
                .min_by(|&a, &b| {
                    let (wa, wb) = (u64::from(members[a].weight), u64::from(members[b].weight));
                    ((2 * turns[a] + 1) * wb)
                        .cmp(&((2 * turns[b] + 1) * wa))
                        .then(wb.cmp(&wa))
                        .then(members[a].key.cmp(&members[b].key))
                        .then(members[a].id.cmp(&members[b].id))
                })
                .unwrap();
            loop {
                let slot = next[i] as usize;
                next[i] = (next[i] + skip[i]) % m;
                if table[slot].is_none() {
                    table[slot] = Some(members[i].id);
                    break;
                }
            }
            turns[i] += 1;
        }
        table.into_iter().map(|id| id.unwrap()).collect()
    }

    #[test]
    fn matches_the_reference_on_larger_tables() {
        let mut list = backends(50);
        assert_eq!(
            Maglev::new(&list, 4093).unwrap().entries(),
            reference(&list, 4093)
        );
        for (i, b) in list.iter_mut().enumerate() {
            b.weight = (i % 7 + 1) as u16 * 3;
        }
        assert_eq!(
            Maglev::new(&list, 8191).unwrap().entries(),
            reference(&list, 8191)
        );
    }

    proptest::proptest! {
        /// Grouped turns, multi-preference probing and the tail search give exactly the
        /// paper's table.
        #[test]
        fn matches_the_reference(
            list in proptest::collection::vec((0u64..6, 0u32..40, 0u16..5), 0..30),
            size in proptest::sample::select(vec![2usize, 3, 31, 251, 509, 1021]),
        ) {
            let list: Vec<MaglevBackend> =
                list.into_iter().map(|(k, i, w)| MaglevBackend::new(k, i, w)).collect();
            if let Ok(maglev) = Maglev::new(&list, size) {
                proptest::prop_assert_eq!(maglev.entries(), &reference(&list, size)[..]);
            }
        }
    }
}
