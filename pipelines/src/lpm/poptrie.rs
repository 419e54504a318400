//! The engine behind [`Ipv4Lpm`](super::Ipv4Lpm) and [`Ipv6Lpm`](super::Ipv6Lpm): a
//! poptrie-style bitmap-compressed multibit trie (after Asai and Ohara, SIGCOMM 2015) with a
//! direct-indexed root and path compression, generic over the key width, plus the
//! control-plane shadow that keeps updates local.
//!
//! # Layout
//!
//! * **Root**: the top `s` bits of the key index `direct` (`2^s` entries). An entry is either a
//!   result (the value itself, or `NONE`) or the offset of a record; the `direct_node` bitmap
//!   says which. Routes with `len <= s` live in `root_routes`, an implicit binary tree in heap
//!   order (entry `(1 << len) | top_len_bits`, `2^(s+1)` values, `NONE` if absent).
//! * **Records** cover 6 bits of the key each, at an offset `off` (`s + 6k`), and live in one
//!   `u32` arena, `words`: a header `[vector:2][leafvec:2][leaves | off << 8][shadow id]
//!   [miss][prefix: 1 or 4]`, then the leaves, then the child offsets. Bit `j` of `vector` set
//!   means slot `j` leads to a child record, at `children[rank(vector, j)]`. Other slots are
//!   leaves, leaf-pushed (a leaf holds the result for its whole range) and run-length
//!   compressed: `leafvec` marks the leaf slots where the result changes, and slot `j`'s result
//!   is `leaves[rank(leafvec, j) - 1]`. The header, the leaves and the child offsets are
//!   contiguous, so each level of a lookup is one cache line or two adjacent ones (a lookup
//!   ending in a /24 at root stride 18 reads `direct` and one record). The last record of a
//!   path covers the last 2 bits of the key (32 and 128 are both 2 mod 6), indexed like the
//!   others with the missing low bits read as zero.
//! * **Path compression**: a record that would have no routes of its own and a single child
//!   is left out; its child hangs directly where it would have been. Every record therefore
//!   stores its own `off` and `prefix` (the key bits above `off`), and a lookup whose key
//!   differs from `prefix` gets `miss`, the result inherited from above. Every record has
//!   routes of its own or at least two children, so a table has fewer records than routes and
//!   an IPv6 /48 or /128 costs one or two records instead of a chain of up to 19.
//! * **Shadow** (`shadow`, never read by lookups): one block per record, found through the
//!   record's shadow id: a header (`inherited`, the result of the longest route above the
//!   record that covers it, and the block's length and capacity), then the routes that end
//!   inside the record's 6 bits (`LocalRoute`: first slot, length within the record, value)
//!   sorted by (address, length). A record is a pure function of its shadow block and of which
//!   slots have children, so an update rewrites one record and then only the descendants
//!   whose inherited result changed.
//!
//! Records and shadow blocks live in two flat vectors with exact-size free lists, so the whole
//! table is a handful of allocations and `Clone` is a few `memcpy`s.

use std::fmt::Debug;
use std::marker::PhantomData;

/// The reserved value meaning "no route" inside the structure.
pub(crate) const NONE: u32 = u32::MAX;

/// Bits per record.
const STRIDE: u32 = 6;

/// Slots per record.
const SLOTS: usize = 1 << STRIDE;

/// Root strides the table moves between as it grows and shrinks (multiples of `STRIDE`, so a
/// /24 always ends on a record boundary).
const ROOT_STRIDES: [u32; 3] = [6, 12, 18];

/// The most records on a path below the root (IPv6 with the smallest root stride).
const MAX_DEPTH: usize = 128 / STRIDE as usize + 1;

/// Header words before the prefix: vector (2), leafvec (2), leaf count and offset, shadow id,
/// miss result.
const H_FIXED: usize = 7;
const H_META: usize = 4;
const H_SHADOW: usize = 5;
const H_MISS: usize = 6;

/// Largest record: header, and at most one leaf or child per slot.
const MAX_RECORD: usize = H_FIXED + 4 + SLOTS;

/// How far into a record the batched lookup's touch pass reads a second word: one cache line
/// (16 words) on, so that both the record's first line and the next one are on their way
/// (records are not cache-line aligned, and the leaf or child a lookup needs is often past
/// the header's line).
const TOUCH_AHEAD: usize = 16;

/// Tables whose lookup structure is at most this many bytes (half the L2 cache of the machine
/// this was tuned on)
/// are looked up in a plain loop by `lookup_batch`: they stay cached, and the pipeline that
/// overlaps cache misses would only add work.
const CACHE_RESIDENT: usize = 1 << 20;

/// An unsigned integer holding an address, most significant bit first.
pub(crate) trait Key: Copy + Ord + Debug + Send + Sync + 'static {
    /// Width in bits.
    const BITS: u32;
    /// `u32` words it takes in a record header.
    const WORDS: usize;
    /// The all-zero key.
    const ZERO: Self;
    /// The `width` bits (1..=32) starting `off` bits (< `BITS`) from the top; bits past the
    /// end of the key read as zero.
    fn bits_at(self, off: u32, width: u32) -> u32;
    /// The key with the `width`-bit value `v` placed `off` bits from the top (bits past the end
    /// are dropped) and zeros elsewhere.
    fn place(v: u32, off: u32, width: u32) -> Self;
    /// Bitwise or.
    fn or(self, other: Self) -> Self;
    /// The first `len` bits, the others cleared.
    fn truncate(self, len: u32) -> Self;
    /// Number of leading bits on which `self` and `other` agree (`BITS` if equal).
    fn common_bits(self, other: Self) -> u32;
    /// Whether `self` and `other` differ within their first `len` bits.
    fn differs(self, other: Self, len: u32) -> bool;
    /// Reads the key from `WORDS` words (most significant first); zero if `w` is too short.
    fn from_words(w: &[u32]) -> Self;
    /// Writes the key as `WORDS` words (most significant first).
    fn to_words(self, out: &mut [u32]);
}

impl Key for u32 {
    const BITS: u32 = 32;
    const WORDS: usize = 1;
    const ZERO: Self = 0;

    #[inline(always)]
    fn bits_at(self, off: u32, width: u32) -> u32 {
        (self << off) >> (Self::BITS - width)
    }

    #[inline(always)]
    fn place(v: u32, off: u32, width: u32) -> Self {
        if off + width <= Self::BITS {
            v << (Self::BITS - off - width)
        } else {
            v >> (off + width - Self::BITS)
        }
    }

    #[inline(always)]
    fn or(self, other: Self) -> Self {
        self | other
    }

    fn truncate(self, len: u32) -> Self {
        self & u32::MAX.checked_shl(Self::BITS - len).unwrap_or(0)
    }

    fn common_bits(self, other: Self) -> u32 {
        (self ^ other).leading_zeros()
    }

    #[inline(always)]
    fn differs(self, other: Self, len: u32) -> bool {
        (self ^ other).checked_shr(Self::BITS - len).unwrap_or(0) != 0
    }

    #[inline(always)]
    fn from_words(w: &[u32]) -> Self {
        w.first().copied().unwrap_or(0)
    }

    fn to_words(self, out: &mut [u32]) {
        out[0] = self;
    }
}

impl Key for u128 {
    const BITS: u32 = 128;
    const WORDS: usize = 4;
    const ZERO: Self = 0;

    #[inline(always)]
    fn bits_at(self, off: u32, width: u32) -> u32 {
        ((self << off) >> (Self::BITS - width)) as u32
    }

    #[inline(always)]
    fn place(v: u32, off: u32, width: u32) -> Self {
        let v = u128::from(v);
        if off + width <= Self::BITS {
            v << (Self::BITS - off - width)
        } else {
            v >> (off + width - Self::BITS)
        }
    }

    #[inline(always)]
    fn or(self, other: Self) -> Self {
        self | other
    }

    fn truncate(self, len: u32) -> Self {
        self & u128::MAX.checked_shl(Self::BITS - len).unwrap_or(0)
    }

    fn common_bits(self, other: Self) -> u32 {
        (self ^ other).leading_zeros()
    }

    #[inline(always)]
    fn differs(self, other: Self, len: u32) -> bool {
        (self ^ other).checked_shr(Self::BITS - len).unwrap_or(0) != 0
    }

    #[inline(always)]
    fn from_words(w: &[u32]) -> Self {
        match w.get(..4) {
            Some(&[a, b, c, d]) => {
                u128::from(a) << 96 | u128::from(b) << 64 | u128::from(c) << 32 | u128::from(d)
            }
            _ => 0,
        }
    }

    fn to_words(self, out: &mut [u32]) {
        for (i, w) in out[..4].iter_mut().enumerate() {
            *w = (self >> (96 - 32 * i)) as u32;
        }
    }
}

/// The decoded header of a record.
#[derive(Clone, Copy, Debug)]
struct Head<K> {
    vector: u64,
    leafvec: u64,
    leaves: usize,
    off: u32,
    shadow: u32,
    prefix: K,
}

impl<K: Key> Head<K> {
    fn children(&self) -> usize {
        self.vector.count_ones() as usize
    }

    fn size(&self) -> usize {
        header_len::<K>() + self.leaves + self.children()
    }
}

/// Header words of a record for key type `K`.
const fn header_len<K: Key>() -> usize {
    H_FIXED + K::WORDS
}

/// A route ending inside a record. The first entry of a shadow block is a header in the same
/// shape: `key` = `len | cap << 8`, `value` = the record's inherited result.
#[derive(Clone, Copy, Default, Debug)]
struct LocalRoute {
    /// `first_slot << 3 | len_in_record`: sorts by (address, length).
    key: u16,
    value: u32,
}

impl LocalRoute {
    fn first_slot(self) -> usize {
        usize::from(self.key >> 3)
    }

    fn rel_len(self) -> u32 {
        u32::from(self.key & 7)
    }

    fn slots(self) -> std::ops::Range<usize> {
        let first = self.first_slot();
        first..first + (1 << (STRIDE - self.rel_len()))
    }
}

/// Where the offset of a record is stored: a root slot, or a word of the parent record.
#[derive(Clone, Copy, Debug)]
enum Parent {
    Direct(usize),
    Word(usize),
}

/// Grows `v` by 1/4 at a time rather than doubling, so `memory_bytes` (capacity) stays close
/// to what is used. Amortized O(1) all the same.
fn reserve<T>(v: &mut Vec<T>, additional: usize) {
    if v.len() + additional > v.capacity() {
        v.reserve_exact(additional.max(v.len() / 4).max(16));
    }
}

/// A flat vector of blocks with exact-size free lists.
#[derive(Clone, Debug, Default)]
struct Blocks<T> {
    items: Vec<T>,
    /// `free[n]`: starts of free blocks of `n` items.
    free: Vec<Vec<u32>>,
}

impl<T: Copy + Default> Blocks<T> {
    fn alloc(&mut self, size: usize) -> usize {
        if size == 0 {
            return 0;
        }
        if let Some(start) = self.free.get_mut(size).and_then(Vec::pop) {
            return start as usize;
        }
        let start = self.items.len();
        reserve(&mut self.items, size);
        self.items.resize(start + size, T::default());
        start
    }

    fn release(&mut self, start: usize, size: usize) {
        if size == 0 {
            return;
        }
        if start + size == self.items.len() {
            self.items.truncate(start);
            return;
        }
        if self.free.len() <= size {
            self.free.resize_with(size + 1, Vec::new);
        }
        self.free[size].push(index_u32(start));
    }

    fn heap_bytes(&self) -> usize {
        self.items.capacity() * size_of::<T>()
            + self.free.capacity() * size_of::<Vec<u32>>()
            + self.free.iter().map(|f| f.capacity() * 4).sum::<usize>()
    }

    fn free_items(&self) -> usize {
        self.free
            .iter()
            .enumerate()
            .map(|(size, f)| size * f.len())
            .sum()
    }
}

/// Converts a vector index to the `u32` stored in records. A table would need tens of GB to
/// overflow this; reaching it is a bug, not an input the table can be given.
fn index_u32(i: usize) -> u32 {
    u32::try_from(i).expect("LPM table exceeds 2^32 entries")
}

/// `vector` bits strictly below `j`.
#[inline(always)]
fn rank_below(vector: u64, j: u32) -> usize {
    (vector & ((1u64 << j) - 1)).count_ones() as usize
}

/// `vector` bits at or below `j`.
#[inline(always)]
fn rank_incl(vector: u64, j: u32) -> usize {
    (vector << (63 - j)).count_ones() as usize
}

/// What a lookup reads in a record header: (vector, leafvec, leaf count, offset, miss).
/// Out of range (which a consistent table never asks for) reads as a record that answers
/// "no route".
#[inline(always)]
fn read_header(words: &[u32], r: usize) -> (u64, u64, usize, u32, u32) {
    match words.get(r..r + H_FIXED) {
        Some(h) => {
            let meta = h[H_META];
            (
                join(h[0], h[1]),
                join(h[2], h[3]),
                (meta & 0xff) as usize,
                meta >> 8,
                h[H_MISS],
            )
        }
        _ => (0, 1, 1, STRIDE, NONE),
    }
}

#[inline(always)]
fn join(lo: u32, hi: u32) -> u64 {
    u64::from(lo) | (u64::from(hi) << 32)
}

/// Size-dependent choices of a table: when the root stride changes (see
/// `Poptrie::restride`), and up to what size `lookup_batch` uses a plain loop. Tests change
/// them to reach every code path with small route sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tuning {
    /// Use this root stride forever.
    pub fixed_stride: Option<u32>,
    /// Move from `ROOT_STRIDES[i]` to the next one at `promote[i]` routes.
    pub promote: [usize; 2],
    /// Move from `ROOT_STRIDES[i + 1]` back to `ROOT_STRIDES[i]` below `demote[i]` routes.
    pub demote: [usize; 2],
    /// `lookup_batch` uses a plain loop when the lookup structure is at most this many bytes.
    pub cache_resident: usize,
}

impl Tuning {
    /// Root stride 6 (a 256-byte root) up to 256 routes, 12 (16 KiB) up to 64k, 18 (1 MiB)
    /// beyond; back down at a quarter of each threshold. Batched lookups pipelined above
    /// `CACHE_RESIDENT`.
    pub const DEFAULT: Self = Self {
        fixed_stride: None,
        promote: [256, 65536],
        demote: [64, 16384],
        cache_resident: CACHE_RESIDENT,
    };

    fn stride_for(&self, current: u32, routes: usize) -> u32 {
        if let Some(s) = self.fixed_stride {
            return s;
        }
        let mut tier = ROOT_STRIDES.iter().position(|&s| s == current).unwrap_or(0);
        while tier + 1 < ROOT_STRIDES.len() && routes >= self.promote[tier] {
            tier += 1;
        }
        while tier > 0 && routes < self.demote[tier - 1] {
            tier -= 1;
        }
        ROOT_STRIDES[tier]
    }
}

/// The table. Keys are addresses as integers; values are anything but `NONE`. Callers
/// guarantee `len <= K::BITS`, zero host bits and `value != NONE`.
#[derive(Clone, Debug)]
pub(crate) struct Poptrie<K: Key> {
    /// Root stride.
    s: u32,
    /// `2^s` entries: a result, or a record offset if the `direct_node` bit is set.
    direct: Vec<u32>,
    direct_node: Vec<u64>,
    /// Routes with `len <= s` in heap order (see the module docs).
    root_routes: Vec<u32>,
    /// Records.
    words: Blocks<u32>,
    /// Shadow blocks (see the module docs).
    shadow: Blocks<LocalRoute>,
    /// Number of records.
    records: usize,
    len: usize,
    tuning: Tuning,
    _key: PhantomData<K>,
}

impl<K: Key> Default for Poptrie<K> {
    fn default() -> Self {
        Self::with_tuning(Tuning::DEFAULT)
    }
}

impl<K: Key> Poptrie<K> {
    /// Header words of a record.
    const HEADER: usize = header_len::<K>();

    pub(crate) fn with_tuning(tuning: Tuning) -> Self {
        let s = tuning.stride_for(ROOT_STRIDES[0], 0);
        Self::with_stride(s, tuning)
    }

    fn with_stride(s: u32, tuning: Tuning) -> Self {
        assert!(ROOT_STRIDES.contains(&s), "root stride {s} not supported");
        let slots = 1usize << s;
        Self {
            s,
            direct: vec![NONE; slots],
            direct_node: vec![0; slots.div_ceil(64)],
            root_routes: vec![NONE; slots * 2],
            words: Blocks::default(),
            shadow: Blocks::default(),
            records: 0,
            len: 0,
            tuning,
            _key: PhantomData,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn root_stride(&self) -> u32 {
        self.s
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        self.direct.capacity() * 4
            + self.direct_node.capacity() * 8
            + self.root_routes.capacity() * 4
            + self.words.heap_bytes()
            + self.shadow.heap_bytes()
    }

    /// Sizes for the benchmark: (bytes lookups can read, of which free-listed, records).
    pub(crate) fn fast_path_bytes(&self) -> (usize, usize, usize) {
        (
            self.direct.len() * 4 + self.direct_node.len() * 8 + self.words.items.len() * 4,
            self.words.free_items() * 4,
            self.records,
        )
    }

    // ---------------------------------------------------------------- lookups

    #[inline(always)]
    fn is_root_node(&self, j: usize) -> bool {
        self.direct_node
            .get(j >> 6)
            .is_some_and(|w| (w >> (j & 63)) & 1 != 0)
    }

    /// Longest-prefix match; `NONE` when nothing matches.
    #[inline]
    pub(crate) fn lookup(&self, key: K) -> u32 {
        let j = key.bits_at(0, self.s) as usize;
        let Some(&entry) = self.direct.get(j) else {
            return NONE;
        };
        if !self.is_root_node(j) {
            return entry;
        }
        let words = &self.words.items[..];
        let mut r = entry as usize;
        for _ in 0..MAX_DEPTH {
            let (vector, leafvec, leaves, off, miss) = read_header(words, r);
            let prefix = K::from_words(words.get(r + H_FIXED..).unwrap_or(&[]));
            if off >= K::BITS || key.differs(prefix, off) {
                return miss;
            }
            let v = key.bits_at(off, STRIDE);
            if (vector >> v) & 1 != 0 {
                let at = r + Self::HEADER + leaves + rank_incl(vector, v) - 1;
                r = words.get(at).copied().unwrap_or(0) as usize;
            } else {
                let at = r + Self::HEADER + rank_incl(leafvec, v);
                return words.get(at.wrapping_sub(1)).copied().unwrap_or(NONE);
            }
        }
        NONE
    }

    /// Lookups of `keys[i]` into `out[i]` for `i < min(keys.len(), out.len())`.
    ///
    /// A software pipeline of up to `LANES` lookups in flight, advanced in rounds. A round
    /// admits new keys into the free lanes (reading their root entries), then advances every
    /// lane by one level. Before each of the two steps uses loaded data, a *touch pass* reads
    /// the cache lines the step will need and feeds them to `black_box`, which keeps the loads
    /// (the table cannot use prefetch instructions: they need `unsafe`). A touch loop is a few
    /// instructions per lane, so the cache and TLB misses of all lanes are in flight together
    /// and a round waits for about one miss, instead of waiting for one lookup's chain of
    /// misses at a time. Lanes that need more levels stay for the next round, next to newly
    /// admitted keys, so deep lookups do not get rounds of their own. The loop bodies have no
    /// data-dependent branches: a lane's result is stored at every level (a deeper level
    /// overwrites it) and the lane list is compacted with a branch-free append.
    pub(crate) fn lookup_batch(&self, keys: &[K], out: &mut [Option<u32>]) {
        /// Lookups in flight.
        const LANES: usize = 64;
        #[derive(Clone, Copy)]
        struct Lane<K> {
            key: K,
            /// Index in `keys` and `out`.
            idx: usize,
            /// Record to visit next.
            rec: u32,
            /// Records visited so far (a guard against a corrupt table).
            depth: u32,
        }
        let n = keys.len().min(out.len());
        let (keys, out) = (&keys[..n], &mut out[..n]);
        let words = &self.words.items[..];
        if (words.len() + self.direct.len()) * 4 <= self.tuning.cache_resident {
            // Everything fits in the core's cache: no misses to overlap, and the plain loop
            // has less work per lookup than the pipeline.
            for (o, &key) in out.iter_mut().zip(keys) {
                *o = decode(self.lookup(key));
            }
            return;
        }
        let zero = Lane {
            key: K::ZERO,
            idx: 0,
            rec: 0,
            depth: 0,
        };
        let mut lanes = [zero; LANES];
        let mut slots = [0u32; LANES];
        let mut active = 0;
        let mut admitted = 0;
        while admitted < n || active > 0 {
            // Admit new keys: touch their root entries, then read them.
            let admit = (LANES - active).min(n - admitted);
            let mut acc = 0;
            for (slot, key) in slots.iter_mut().zip(&keys[admitted..admitted + admit]) {
                *slot = key.bits_at(0, self.s);
                acc ^= self.direct.get(*slot as usize).copied().unwrap_or(0);
            }
            std::hint::black_box(acc);
            for (k, &j) in slots[..admit].iter().enumerate() {
                let j = j as usize;
                let entry = self.direct.get(j).copied().unwrap_or(NONE);
                let idx = admitted + k;
                out[idx] = decode(entry);
                lanes[active] = Lane {
                    key: keys[idx],
                    idx,
                    rec: entry,
                    depth: 0,
                };
                active += usize::from(self.is_root_node(j));
            }
            admitted += admit;
            // Touch the two cache lines at the start of every lane's record.
            let mut acc = 0;
            for lane in &lanes[..active] {
                let r = lane.rec as usize;
                acc ^= words.get(r).copied().unwrap_or(0);
                acc ^= words.get(r + TOUCH_AHEAD).copied().unwrap_or(0);
            }
            std::hint::black_box(acc);
            // Advance every lane one level.
            let mut kept = 0;
            for k in 0..active {
                let mut lane = lanes[k];
                let r = lane.rec as usize;
                let (vector, leafvec, leaves, off, miss) = read_header(words, r);
                let prefix = K::from_words(words.get(r + H_FIXED..).unwrap_or(&[]));
                let off = off.min(K::BITS - 1);
                let hit = u64::from(!lane.key.differs(prefix, off));
                let v = lane.key.bits_at(off, STRIDE);
                let child = (vector >> v) & hit & 1;
                let mask = 0u64.wrapping_sub(child);
                let select = (vector & mask) | (leafvec & !mask);
                let skip = leaves & mask as usize;
                let at = (r + Self::HEADER + skip + rank_incl(select, v)).wrapping_sub(1);
                // Descending: the child's offset; otherwise the result (or `miss`).
                let word = words.get(at).copied().unwrap_or(NONE);
                let hit = 0u32.wrapping_sub(hit as u32);
                let word = (word & hit) | (miss & !hit);
                lane.depth += 1;
                let keep = child as u32 & u32::from(lane.depth < MAX_DEPTH as u32);
                // A lane that would go deeper than any path means a corrupt table: "no route".
                let poison = 0u32.wrapping_sub(child as u32 & !keep);
                if let Some(o) = out.get_mut(lane.idx) {
                    *o = decode(word | poison);
                }
                lane.rec = word;
                lanes[kept] = lane;
                kept += keep as usize;
            }
            active = kept;
        }
    }

    /// Exact match.
    pub(crate) fn get(&self, key: K, len: u32) -> Option<u32> {
        if len <= self.s {
            return decode(self.root_routes[root_index(key, len)]);
        }
        let j0 = key.bits_at(0, self.s) as usize;
        if !self.is_root_node(j0) {
            return None;
        }
        let mut r = self.direct[j0] as usize;
        loop {
            let h = self.head(r);
            if len <= h.off || key.differs(h.prefix, h.off) {
                return None;
            }
            if len <= h.off + STRIDE {
                let locals = self.local_slice(h.shadow);
                let i = locals
                    .binary_search_by_key(&local_key(key, h.off, len), |l| l.key)
                    .ok()?;
                return Some(locals[i].value);
            }
            r = self.words.items[self.child_at(r, &h, key.bits_at(h.off, STRIDE))?] as usize;
        }
    }

    // ---------------------------------------------------------------- updates

    /// Inserts or replaces; returns the previous value of this exact prefix.
    pub(crate) fn insert(&mut self, key: K, len: u32, value: u32) -> Option<u32> {
        debug_assert!(len <= K::BITS && value != NONE);
        let prev = if len <= self.s {
            self.insert_root(key, len, value)
        } else {
            self.insert_deep(key, len, value)
        };
        if prev.is_none() {
            self.len += 1;
            self.restride();
        }
        prev
    }

    /// Removes an exact prefix; returns its value.
    pub(crate) fn remove(&mut self, key: K, len: u32) -> Option<u32> {
        if len > K::BITS {
            return None;
        }
        let prev = if len <= self.s {
            self.remove_root(key, len)
        } else {
            self.remove_deep(key, len)
        };
        if prev.is_some() {
            self.len -= 1;
            self.restride();
        }
        prev
    }

    /// Moves to the root stride `tuning` wants for the current size, by rebuilding the whole
    /// table (amortized: it happens once per factor-of-4 change in size).
    fn restride(&mut self) {
        let s = self.tuning.stride_for(self.s, self.len);
        if s == self.s {
            return;
        }
        let mut fresh = Self::with_stride(s, self.tuning);
        for (key, len, value) in self.routes() {
            if len <= s {
                fresh.insert_root(key, len, value);
            } else {
                fresh.insert_deep(key, len, value);
            }
        }
        fresh.len = self.len;
        *self = fresh;
    }

    fn insert_root(&mut self, key: K, len: u32, value: u32) -> Option<u32> {
        let t = root_index(key, len);
        let old = std::mem::replace(&mut self.root_routes[t], value);
        if old != value {
            self.paint_root(t, len, value);
        }
        decode(old)
    }

    fn remove_root(&mut self, key: K, len: u32) -> Option<u32> {
        let t = root_index(key, len);
        let old = std::mem::replace(&mut self.root_routes[t], NONE);
        if old == NONE {
            return None;
        }
        let mut up = t >> 1;
        let mut replacement = NONE;
        while up >= 1 {
            if self.root_routes[up] != NONE {
                replacement = self.root_routes[up];
                break;
            }
            up >>= 1;
        }
        self.paint_root(t, len, replacement);
        Some(old)
    }

    /// Gives every root slot under tree entry `t` (depth `depth`) that is not covered by a
    /// longer root route the result `value`.
    fn paint_root(&mut self, t: usize, depth: u32, value: u32) {
        if depth == self.s {
            let j = t - (1 << self.s);
            if self.is_root_node(j) {
                let r = self.direct[j] as usize;
                self.set_inherited(r, value, Parent::Direct(j));
            } else {
                self.direct[j] = value;
            }
            return;
        }
        for c in [2 * t, 2 * t + 1] {
            if self.root_routes[c] == NONE {
                self.paint_root(c, depth + 1, value);
            }
        }
    }

    /// Offset of the record a route of length `len > s` ends in, were no record compressed.
    fn home_offset(&self, len: u32) -> u32 {
        self.align(len - 1)
    }

    /// The record offset (`s + 6k`) whose 6 bits contain bit `bit` (`bit >= s`).
    fn align(&self, bit: u32) -> u32 {
        self.s + (bit - self.s) / STRIDE * STRIDE
    }

    fn insert_deep(&mut self, key: K, len: u32, value: u32) -> Option<u32> {
        let j0 = key.bits_at(0, self.s) as usize;
        if !self.is_root_node(j0) {
            let off = self.home_offset(len);
            let route = LocalRoute {
                key: local_key(key, off, len),
                value,
            };
            let r = self.new_route_record(self.direct[j0], off, key.truncate(off), route);
            self.direct[j0] = index_u32(r);
            self.direct_node[j0 >> 6] |= 1 << (j0 & 63);
            return None;
        }
        let mut parent = Parent::Direct(j0);
        let mut r = self.direct[j0] as usize;
        loop {
            let h = self.head(r);
            let common = key.common_bits(h.prefix);
            if common < h.off || len <= h.off {
                // The route leaves the compressed path above `r`, or ends on it: put a record
                // where it does, with `r` below it, then carry on from that record.
                let o = self.align(common.min(len - 1));
                let inherited = self.shadow_head(h.shadow).0;
                let split = self.new_record(inherited, o, h.prefix.truncate(o));
                self.set_parent(parent, split);
                let values = [inherited; SLOTS];
                let vector = 1u64 << h.prefix.bits_at(o, STRIDE);
                r = self
                    .write_record(split, parent, vector, &values, &[index_u32(r)])
                    .0;
                continue;
            }
            if len <= h.off + STRIDE {
                let route = LocalRoute {
                    key: local_key(key, h.off, len),
                    value,
                };
                return match self
                    .local_slice(h.shadow)
                    .binary_search_by_key(&route.key, |l| l.key)
                {
                    Ok(i) => {
                        let at = h.shadow as usize + 1 + i;
                        let before = self.slot_values(h.shadow);
                        let old = std::mem::replace(&mut self.shadow.items[at].value, value);
                        if old != value {
                            self.refresh(r, parent, &before);
                        }
                        Some(old)
                    }
                    Err(i) => {
                        let before = self.slot_values(h.shadow);
                        self.local_insert(r, h.shadow, i, route);
                        self.refresh(r, parent, &before);
                        None
                    }
                };
            }
            let j = key.bits_at(h.off, STRIDE);
            let Some(at) = self.child_at(r, &h, j) else {
                // A new record for the route alone, right below `r`.
                let off = self.home_offset(len);
                let route = LocalRoute {
                    key: local_key(key, off, len),
                    value,
                };
                let inherited = self.leaf_value(r, &h, j);
                let child = self.new_route_record(inherited, off, key.truncate(off), route);
                self.add_child(r, parent, j, child);
                return None;
            };
            parent = Parent::Word(at);
            r = self.words.items[at] as usize;
        }
    }

    fn remove_deep(&mut self, key: K, len: u32) -> Option<u32> {
        let j0 = key.bits_at(0, self.s) as usize;
        if !self.is_root_node(j0) {
            return None;
        }
        // Ancestors of the target: (record, where its offset is stored, slot taken).
        let mut path = [(0usize, Parent::Direct(0), 0u32); MAX_DEPTH];
        let mut depth = 0;
        let mut parent = Parent::Direct(j0);
        let mut r = self.direct[j0] as usize;
        let h = loop {
            let h = self.head(r);
            if len <= h.off || key.differs(h.prefix, h.off) {
                return None;
            }
            if len <= h.off + STRIDE {
                break h;
            }
            let j = key.bits_at(h.off, STRIDE);
            let at = self.child_at(r, &h, j)?;
            path[depth] = (r, parent, j);
            depth += 1;
            parent = Parent::Word(at);
            r = self.words.items[at] as usize;
        };
        let lkey = local_key(key, h.off, len);
        let i = self
            .local_slice(h.shadow)
            .binary_search_by_key(&lkey, |l| l.key)
            .ok()?;
        let before = self.slot_values(h.shadow);
        let old = self.local_remove(h.shadow, i);
        // Restore the shape: a record keeps routes of its own or at least two children.
        let mut rewritten = false;
        loop {
            let h = self.head(r);
            let locals = self.shadow_head(h.shadow).1;
            match (locals, h.children()) {
                (0, 0) => {
                    // Empty: unlink it; the parent's slot becomes a leaf.
                    let inherited = self.free_record(r);
                    if depth == 0 {
                        self.direct[j0] = inherited;
                        self.direct_node[j0 >> 6] &= !(1 << (j0 & 63));
                        break;
                    }
                    depth -= 1;
                    let (p, pp, j) = path[depth];
                    r = self.remove_child(p, pp, j);
                    parent = pp;
                    rewritten = true;
                }
                (0, 1) => {
                    // A single child and no routes: the child takes its place, inheriting
                    // what this record inherited.
                    let (inherited, _, _) = self.shadow_head(h.shadow);
                    let child = self.words.items[r + Self::HEADER + h.leaves] as usize;
                    self.set_parent(parent, child);
                    self.free_record(r);
                    self.set_inherited(child, inherited, parent);
                    break;
                }
                _ => {
                    if !rewritten {
                        self.refresh(r, parent, &before);
                    }
                    break;
                }
            }
        }
        Some(old)
    }

    // ---------------------------------------------------------------- records

    fn head(&self, r: usize) -> Head<K> {
        let w = &self.words.items[r..r + Self::HEADER];
        Head {
            vector: join(w[0], w[1]),
            leafvec: join(w[2], w[3]),
            leaves: (w[H_META] & 0xff) as usize,
            off: w[H_META] >> 8,
            shadow: w[H_SHADOW],
            prefix: K::from_words(&w[H_FIXED..]),
        }
    }

    /// Index of the word holding the offset of the child in slot `j`, if there is one.
    fn child_at(&self, r: usize, h: &Head<K>, j: u32) -> Option<usize> {
        ((h.vector >> j) & 1 != 0).then(|| r + Self::HEADER + h.leaves + rank_below(h.vector, j))
    }

    /// Result of leaf slot `j` of record `r`.
    fn leaf_value(&self, r: usize, h: &Head<K>, j: u32) -> u32 {
        self.words.items[r + Self::HEADER + rank_incl(h.leafvec, j) - 1]
    }

    fn set_parent(&mut self, parent: Parent, r: usize) {
        match parent {
            Parent::Direct(j) => self.direct[j] = index_u32(r),
            Parent::Word(at) => self.words.items[at] = index_u32(r),
        }
    }

    /// A new record at offset `off` for the keys starting with `prefix`, without routes or
    /// children: every slot `inherited`.
    fn new_record(&mut self, inherited: u32, off: u32, prefix: K) -> usize {
        let shadow = self.shadow.alloc(1);
        self.shadow.items[shadow] = LocalRoute {
            key: 0,
            value: inherited,
        };
        self.records += 1;
        let r = self.words.alloc(Self::HEADER + 1);
        let rec = &mut self.words.items[r..r + Self::HEADER + 1];
        rec[..H_FIXED].copy_from_slice(&[0, 0, 1, 0, 1 | off << 8, index_u32(shadow), inherited]);
        prefix.to_words(&mut rec[H_FIXED..Self::HEADER]);
        rec[Self::HEADER] = inherited;
        r
    }

    /// Frees record `r` and its shadow block; returns its inherited result.
    fn free_record(&mut self, r: usize) -> u32 {
        let h = self.head(r);
        let (inherited, _, cap) = self.shadow_head(h.shadow);
        self.shadow.release(h.shadow as usize, 1 + cap);
        self.words.release(r, h.size());
        self.records -= 1;
        inherited
    }

    /// Rewrites record `r` with the given children (`vector` and offsets in slot order) and
    /// leaves computed from `values`. Moves it if its size changes, updating `parent`.
    /// Returns the record's offset and leaf count.
    fn write_record(
        &mut self,
        r: usize,
        parent: Parent,
        vector: u64,
        values: &[u32; SLOTS],
        children: &[u32],
    ) -> (usize, usize) {
        let h = self.head(r);
        let mut buf = [0u32; MAX_RECORD];
        let (size, leaves) = self.encode(
            &mut buf, h.shadow, h.off, h.prefix, vector, values, children,
        );
        let old_size = h.size();
        let items = &mut self.words.items;
        let r = if size == old_size {
            r
        } else if r + old_size == items.len() {
            // Last record of the arena: resize in place.
            reserve(items, size.saturating_sub(old_size));
            items.resize(r + size, 0);
            r
        } else {
            let new = self.words.alloc(size);
            self.words.release(r, old_size);
            self.set_parent(parent, new);
            new
        };
        self.words.items[r..r + size].copy_from_slice(&buf[..size]);
        (r, leaves)
    }

    /// Lays out a record in `buf`: header, leaves computed from `values` (run-length
    /// compressed over the slots that are not children), child offsets. Returns its size and
    /// leaf count.
    #[allow(clippy::too_many_arguments)] // the fields of a record, all needed
    fn encode(
        &self,
        buf: &mut [u32; MAX_RECORD],
        shadow: u32,
        off: u32,
        prefix: K,
        vector: u64,
        values: &[u32; SLOTS],
        children: &[u32],
    ) -> (usize, usize) {
        let header = Self::HEADER;
        let mut leaves = 0;
        let mut leafvec = 0u64;
        let mut leaf_slots = !vector;
        while leaf_slots != 0 {
            let j = leaf_slots.trailing_zeros();
            leaf_slots &= leaf_slots - 1;
            let v = values[j as usize];
            if leaves == 0 || buf[header + leaves - 1] != v {
                leafvec |= 1 << j;
                buf[header + leaves] = v;
                leaves += 1;
            }
        }
        buf[..H_FIXED].copy_from_slice(&[
            vector as u32,
            (vector >> 32) as u32,
            leafvec as u32,
            (leafvec >> 32) as u32,
            leaves as u32 | off << 8,
            shadow,
            self.shadow_head(shadow).0,
        ]);
        prefix.to_words(&mut buf[H_FIXED..header]);
        let size = header + leaves + children.len();
        buf[header + leaves..size].copy_from_slice(children);
        (size, leaves)
    }

    /// A new record at offset `off` for the keys starting with `prefix`, holding one route
    /// and no children.
    fn new_route_record(
        &mut self,
        inherited: u32,
        off: u32,
        prefix: K,
        route: LocalRoute,
    ) -> usize {
        let shadow = self.shadow.alloc(2);
        self.shadow.items[shadow] = LocalRoute {
            key: 1 | 1 << 8,
            value: inherited,
        };
        self.shadow.items[shadow + 1] = route;
        self.records += 1;
        let shadow = index_u32(shadow);
        let values = self.slot_values(shadow);
        let mut buf = [0u32; MAX_RECORD];
        let (size, _) = self.encode(&mut buf, shadow, off, prefix, 0, &values, &[]);
        let r = self.words.alloc(size);
        self.words.items[r..r + size].copy_from_slice(&buf[..size]);
        r
    }

    /// Copies the child offsets of record `r` out.
    fn children_of(&self, r: usize, h: &Head<K>) -> ([u32; SLOTS], usize) {
        let mut children = [0u32; SLOTS];
        let count = h.children();
        let start = r + Self::HEADER + h.leaves;
        children[..count].copy_from_slice(&self.words.items[start..start + count]);
        (children, count)
    }

    /// Hangs record `child` in leaf slot `j` of record `r`; returns the index of the word
    /// holding the child's offset (in `r`, which may have moved).
    fn add_child(&mut self, r: usize, parent: Parent, j: u32, child: usize) -> usize {
        let h = self.head(r);
        let (mut children, count) = self.children_of(r, &h);
        let rank = rank_below(h.vector, j);
        children.copy_within(rank..count, rank + 1);
        children[rank] = index_u32(child);
        let values = self.slot_values(h.shadow);
        let vector = h.vector | (1 << j);
        let (r, leaves) = self.write_record(r, parent, vector, &values, &children[..count + 1]);
        r + Self::HEADER + leaves + rank
    }

    /// Drops the (already freed) child in slot `j` of record `r`; the slot becomes a leaf.
    /// Returns the record's offset (it may have moved).
    fn remove_child(&mut self, r: usize, parent: Parent, j: u32) -> usize {
        let h = self.head(r);
        let (mut children, count) = self.children_of(r, &h);
        let rank = rank_below(h.vector, j);
        children.copy_within(rank + 1..count, rank);
        let values = self.slot_values(h.shadow);
        let vector = h.vector & !(1 << j);
        self.write_record(r, parent, vector, &values, &children[..count - 1])
            .0
    }

    /// Rewrites record `r` after its routes or inherited result changed, and pushes the new
    /// slot results down to the children whose slot result differs from `before` (the slot
    /// results before the change); the other children are not even read.
    fn refresh(&mut self, r: usize, parent: Parent, before: &[u32; SLOTS]) {
        let h = self.head(r);
        let values = self.slot_values(h.shadow);
        let (children, count) = self.children_of(r, &h);
        let (r, leaves) = self.write_record(r, parent, h.vector, &values, &children[..count]);
        let mut slots = h.vector;
        let mut at = r + Self::HEADER + leaves;
        while slots != 0 {
            let j = slots.trailing_zeros();
            slots &= slots - 1;
            if values[j as usize] != before[j as usize] {
                let child = self.words.items[at] as usize;
                self.set_inherited(child, values[j as usize], Parent::Word(at));
            }
            at += 1;
        }
    }

    fn set_inherited(&mut self, r: usize, value: u32, parent: Parent) {
        let id = self.head(r).shadow;
        if self.shadow.items[id as usize].value != value {
            let before = self.slot_values(id);
            self.shadow.items[id as usize].value = value;
            self.refresh(r, parent, &before);
        }
    }

    /// The result of every slot of a record: its inherited result, overwritten by its local
    /// routes in (address, length) order, which paints longer prefixes over the shorter ones
    /// that contain them.
    fn slot_values(&self, shadow: u32) -> [u32; SLOTS] {
        let mut values = [self.shadow_head(shadow).0; SLOTS];
        for route in self.local_slice(shadow) {
            values[route.slots()].fill(route.value);
        }
        values
    }

    // ---------------------------------------------------------------- local routes

    /// (inherited result, number of local routes, capacity) of shadow block `id`.
    fn shadow_head(&self, id: u32) -> (u32, usize, usize) {
        let h = self.shadow.items[id as usize];
        (h.value, usize::from(h.key & 0xff), usize::from(h.key >> 8))
    }

    fn local_slice(&self, id: u32) -> &[LocalRoute] {
        let start = id as usize + 1;
        &self.shadow.items[start..start + self.shadow_head(id).1]
    }

    /// Inserts `route` at position `i` of the routes of record `r` (shadow block `id`), moving
    /// the block to a bigger one (and updating `r`) when it is full.
    fn local_insert(&mut self, r: usize, id: u32, i: usize, route: LocalRoute) {
        let (inherited, len, cap) = self.shadow_head(id);
        let old = id as usize;
        let items = &mut self.shadow.items;
        let (start, cap) = if len < cap {
            items.copy_within(old + 1 + i..old + 1 + len, old + 2 + i);
            (old, cap)
        } else {
            let new_cap = (cap * 2).max(1);
            let start = self.shadow.alloc(1 + new_cap);
            let items = &mut self.shadow.items;
            items.copy_within(old + 1..old + 1 + i, start + 1);
            items.copy_within(old + 1 + i..old + 1 + len, start + 2 + i);
            self.shadow.release(old, 1 + cap);
            self.words.items[r + H_SHADOW] = index_u32(start);
            (start, new_cap)
        };
        let items = &mut self.shadow.items;
        items[start + 1 + i] = route;
        items[start] = LocalRoute {
            key: ((len + 1) | cap << 8) as u16,
            value: inherited,
        };
    }

    /// Removes the route at position `i` of shadow block `id`; returns its value. Shrinks the
    /// block in place when it is a quarter full.
    fn local_remove(&mut self, id: u32, i: usize) -> u32 {
        let (inherited, len, mut cap) = self.shadow_head(id);
        let start = id as usize;
        let items = &mut self.shadow.items;
        let old = items[start + 1 + i].value;
        items.copy_within(start + 2 + i..start + 1 + len, start + 1 + i);
        let len = len - 1;
        if len <= cap / 4 {
            let new_cap = if len == 0 { 0 } else { cap / 2 };
            self.shadow.release(start + 1 + new_cap, cap - new_cap);
            cap = new_cap;
        }
        self.shadow.items[start] = LocalRoute {
            key: (len | cap << 8) as u16,
            value: inherited,
        };
        old
    }

    // ---------------------------------------------------------------- iteration

    /// Every route as (key, length, value), in (address, length) order: the root routes,
    /// sorted, merged with the routes below the root slots taken in slot order (a root route
    /// starts on a slot boundary, so it goes right before the deep routes of its first slot).
    pub(crate) fn routes(&self) -> Vec<(K, u32, u32)> {
        let mut root: Vec<(K, u32, u32)> = Vec::new();
        for (t, &value) in self.root_routes.iter().enumerate().skip(1) {
            if value != NONE {
                let depth = usize::BITS - 1 - t.leading_zeros();
                let prefix = (t - (1 << depth)) as u32;
                let key = if depth == 0 {
                    K::ZERO
                } else {
                    K::place(prefix, 0, depth)
                };
                root.push((key, depth, value));
            }
        }
        root.sort_unstable_by_key(|&(key, len, _)| (key, len));
        let mut root = root.into_iter().peekable();
        let mut out = Vec::with_capacity(self.len);
        for (w, &bits) in self.direct_node.iter().enumerate() {
            let mut bits = bits;
            while bits != 0 {
                let j = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let key = K::place(j as u32, 0, self.s);
                while let Some(r) = root.next_if(|r| r.0 <= key) {
                    out.push(r);
                }
                self.collect_record(self.direct[j] as usize, &mut out);
            }
        }
        out.extend(root);
        out
    }

    /// The routes of record `r` and below, in order: for each slot, the local routes that
    /// start there (shorter first), then the child's routes.
    fn collect_record(&self, r: usize, out: &mut Vec<(K, u32, u32)>) {
        let h = self.head(r);
        let locals = self.local_slice(h.shadow);
        let mut next = 0;
        for j in 0..SLOTS as u32 {
            while let Some(route) = locals.get(next).filter(|l| l.first_slot() == j as usize) {
                let key = h.prefix.or(K::place(j, h.off, STRIDE));
                out.push((key, h.off + route.rel_len(), route.value));
                next += 1;
            }
            if let Some(at) = self.child_at(r, &h, j) {
                self.collect_record(self.words.items[at] as usize, out);
            }
        }
    }

    // ---------------------------------------------------------------- self-check (tests)

    /// Verifies the structure: every record reachable once, blocks disjoint and either used or
    /// free (no leaks), the compressed shape (routes or two children everywhere, prefixes and
    /// offsets consistent), leaves equal to the slot results with maximal compression,
    /// inherited and miss results consistent, local routes sorted and valid, counts right.
    /// Panics with a description on the first violation.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let words = &self.words.items;
        let mut word_used = vec![false; words.len()];
        let mut shadow_used = vec![false; self.shadow.items.len()];
        let mark = |used: &mut Vec<bool>, start: usize, size: usize, what: &str| {
            for u in &mut used[start..start + size] {
                assert!(!*u, "{what} block at {start} (+{size}) used twice");
                *u = true;
            }
        };
        let mut routes = self
            .root_routes
            .iter()
            .skip(1)
            .filter(|&&v| v != NONE)
            .count();
        // The result of every root tree entry, top down.
        let mut expect = vec![NONE; self.root_routes.len()];
        for t in 1..expect.len() {
            expect[t] = if self.root_routes[t] != NONE {
                self.root_routes[t]
            } else {
                expect[t / 2]
            };
        }
        // (record, inherited, key bits fixed by the path, how many of them).
        let mut stack = Vec::new();
        for j in 0..1usize << self.s {
            let expect = expect[(1 << self.s) + j];
            if self.is_root_node(j) {
                stack.push((
                    self.direct[j] as usize,
                    expect,
                    K::place(j as u32, 0, self.s),
                    self.s,
                ));
            } else {
                assert_eq!(self.direct[j], expect, "root slot {j}");
            }
        }
        let mut records = 0;
        while let Some((r, inherited, path, path_len)) = stack.pop() {
            records += 1;
            let h = self.head(r);
            mark(&mut word_used, r, h.size(), "record");
            let (shadow_inherited, len, cap) = self.shadow_head(h.shadow);
            mark(&mut shadow_used, h.shadow as usize, 1 + cap, "shadow");
            assert_eq!(shadow_inherited, inherited, "inherited of record {r}");
            assert_eq!(words[r + H_MISS], inherited, "miss of record {r}");
            assert!(len <= cap && (cap == 0 || cap.is_power_of_two()) && cap <= 128);
            assert!(
                len > 0 || h.children() >= 2,
                "record {r} should be compressed away"
            );
            assert!(h.off >= path_len && h.off < K::BITS, "offset of record {r}");
            assert_eq!((h.off - self.s) % STRIDE, 0, "unaligned record {r}");
            assert_eq!(
                h.prefix.truncate(h.off),
                h.prefix,
                "prefix of {r} longer than its offset"
            );
            assert!(
                !h.prefix.differs(path, path_len),
                "prefix of {r} off its path"
            );
            let locals = self.local_slice(h.shadow);
            assert!(
                locals.windows(2).all(|w| w[0].key < w[1].key),
                "locals of {r} unsorted"
            );
            for l in locals {
                assert!((1..=STRIDE).contains(&l.rel_len()));
                assert!(h.off + l.rel_len() <= K::BITS, "local route too long");
                assert_eq!(
                    l.first_slot() % (1 << (STRIDE - l.rel_len())),
                    0,
                    "host bits"
                );
                assert_ne!(l.value, NONE);
            }
            routes += locals.len();
            assert_eq!(h.vector & h.leafvec, 0);
            if h.vector != 0 {
                assert!(h.off + STRIDE < K::BITS, "children below the last bit");
            }
            let values = self.slot_values(h.shadow);
            let mut prev = None;
            for j in 0..SLOTS as u32 {
                if let Some(at) = self.child_at(r, &h, j) {
                    let slot_key = h.prefix.or(K::place(j, h.off, STRIDE));
                    stack.push((
                        words[at] as usize,
                        values[j as usize],
                        slot_key,
                        h.off + STRIDE,
                    ));
                } else {
                    assert_eq!(
                        self.leaf_value(r, &h, j),
                        values[j as usize],
                        "leaf {j} of {r}"
                    );
                    // Maximal compression: a leafvec bit exactly where the result changes.
                    let starts = (h.leafvec >> j) & 1 != 0;
                    assert_eq!(starts, prev != Some(values[j as usize]), "leafvec of {r}");
                    prev = Some(values[j as usize]);
                }
            }
            assert_eq!(h.leaves, h.leafvec.count_ones() as usize);
        }
        assert_eq!(routes, self.len, "route count");
        assert_eq!(self.records, records, "record count");
        let check_free = |used: &mut Vec<bool>, free: &[Vec<u32>], what: &str| {
            for (size, starts) in free.iter().enumerate() {
                for &start in starts {
                    for u in &mut used[start as usize..start as usize + size] {
                        assert!(!*u, "free {what} block at {start} is in use");
                        *u = true;
                    }
                }
            }
            assert!(used.iter().all(|&u| u), "{what} leaked");
        };
        check_free(&mut word_used, &self.words.free, "record");
        check_free(&mut shadow_used, &self.shadow.free, "shadow");
    }
}

/// Heap index of the root route `key/len` (`len <= s`).
fn root_index<K: Key>(key: K, len: u32) -> usize {
    if len == 0 {
        1
    } else {
        (1usize << len) | key.bits_at(0, len) as usize
    }
}

/// Local key of a route of length `len` in the record at offset `off` (`off < len <= off + 6`).
fn local_key<K: Key>(key: K, off: u32, len: u32) -> u16 {
    let first = key.bits_at(off, STRIDE);
    ((first << 3) | (len - off)) as u16
}

/// `NONE` to `None`.
#[inline(always)]
pub(crate) fn decode(raw: u32) -> Option<u32> {
    (raw != NONE).then_some(raw)
}
