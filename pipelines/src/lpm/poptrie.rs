//! The engine behind [`Ipv4Lpm`](super::Ipv4Lpm) and [`Ipv6Lpm`](super::Ipv6Lpm): a
//! poptrie-style bitmap-compressed multibit trie (after Asai and Ohara, SIGCOMM 2015) with a
//! direct-indexed root, generic over the key width, plus the control-plane shadow that keeps
//! updates local.
//!
//! # Layout
//!
//! * **Root**: the top `s` bits of the key index `direct` (`2^s` entries). An entry is either a
//!   result (the value itself, or `NONE`) or the offset of a node record; the `direct_node`
//!   bitmap says which. Routes with `len <= s` live in `root_routes`, an implicit binary tree
//!   in heap order (entry `(1 << len) | top_len_bits`, `2^(s+1)` values, `NONE` if absent).
//! * **Node records** cover 6 more bits each and live in one `u32` arena, `words`:
//!   `[vector:2][leafvec:2][leaf count][shadow id][leaves...][children...]`. Bit `j` of
//!   `vector` set means slot `j` leads to a child record, whose offset is
//!   `children[rank(vector, j)]`. Other slots are leaves, leaf-pushed (a leaf holds the result
//!   for its whole range) and run-length compressed: `leafvec` marks the leaf slots where the
//!   result changes, and slot `j`'s result is `leaves[rank(leafvec, j) - 1]`. The header, the
//!   leaves and the child offsets are contiguous, so each level of a lookup is one cache line
//!   or two adjacent ones (a lookup ending in a /24 at root stride 18 reads `direct` and one
//!   record). Whatever the root stride, the last record of a path covers the last 2 bits of
//!   the key (32 and 128 are both 2 mod 6), indexed like the others with the missing low bits
//!   read as zero. Record 0 is a dummy (no children, one `NONE` leaf) that the batched lookup
//!   sends finished lanes to.
//! * **Shadow** (`rib`, by shadow id, never read by lookups): per record, the routes that end
//!   inside its 6 bits (`LocalRoute`: first slot, length within the record, value) sorted by
//!   (address, length), and `inherited`, the result of the longest route above the record that
//!   covers it. A record is a pure function of these two and of which slots have children, so
//!   an update rebuilds one record and then only the descendants whose `inherited` changed.
//!
//! Records, shadow entries and local routes live in flat vectors with exact-size free lists,
//! so the whole table is a handful of allocations and `Clone` is a few `memcpy`s.

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

/// The most records a path can have below the root (IPv6 with the smallest root stride).
const MAX_DEPTH: usize = 128 / STRIDE as usize + 1;

/// Record header: vector (2 words), leafvec (2), leaf count, shadow id.
const HEADER: usize = 6;
const H_LEAVES: usize = 4;
const H_RIB: usize = 5;

/// Largest record: every slot is a leaf or a child, and there is at most one leaf per slot.
const MAX_RECORD: usize = HEADER + SLOTS;

/// The dummy record at offset 0: no children, one leaf, `NONE`.
const DUMMY: [u32; HEADER + 1] = [0, 0, 1, 0, 1, NONE, NONE];

/// An unsigned integer holding an address, most significant bit first.
pub(crate) trait Key: Copy + Eq + Debug + Send + Sync + 'static {
    /// Width in bits.
    const BITS: u32;
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
}

macro_rules! impl_key {
    ($t:ty) => {
        impl Key for $t {
            const BITS: u32 = <$t>::BITS;
            const ZERO: Self = 0;

            #[inline(always)]
            fn bits_at(self, off: u32, width: u32) -> u32 {
                ((self << off) >> (Self::BITS - width)) as u32
            }

            #[inline(always)]
            fn place(v: u32, off: u32, width: u32) -> Self {
                let v = <$t>::from(v);
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
        }
    };
}

impl_key!(u32);
impl_key!(u128);

/// The decoded header of a record.
#[derive(Clone, Copy, Debug)]
struct Head {
    vector: u64,
    leafvec: u64,
    leaves: usize,
    rib: u32,
}

impl Head {
    fn children(&self) -> usize {
        self.vector.count_ones() as usize
    }

    fn size(&self) -> usize {
        HEADER + self.leaves + self.children()
    }
}

/// Shadow data of a record (never read by lookups).
#[derive(Clone, Copy, Default, Debug)]
struct RibInfo {
    /// Result of the longest route above the record covering it (`NONE` if there is none).
    inherited: u32,
    /// First local route in `locals`.
    local_start: u32,
    /// Number of local routes.
    local_len: u8,
    /// Size of the block at `local_start` (0 or a power of two up to 128).
    local_cap: u8,
}

/// A route ending inside a record.
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
        self.free.iter().enumerate().map(|(size, f)| size * f.len()).sum()
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

/// The header words of the record at `r`, or the dummy's if `r` is out of range (which a
/// consistent table never asks for).
#[inline(always)]
fn header_at(words: &[u32], r: usize) -> [u32; HEADER] {
    match words.get(r..r + HEADER) {
        Some(h) => h.try_into().unwrap_or([0, 0, 1, 0, 1, NONE]),
        None => [0, 0, 1, 0, 1, NONE],
    }
}

#[inline(always)]
fn join(lo: u32, hi: u32) -> u64 {
    u64::from(lo) | (u64::from(hi) << 32)
}

/// When the root stride changes (see `Poptrie::restride`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StridePolicy {
    /// Use this root stride forever.
    pub fixed: Option<u32>,
    /// Move from `ROOT_STRIDES[i]` to the next one at `promote[i]` routes.
    pub promote: [usize; 2],
    /// Move from `ROOT_STRIDES[i + 1]` back to `ROOT_STRIDES[i]` below `demote[i]` routes.
    pub demote: [usize; 2],
}

impl StridePolicy {
    /// 6 bits (a 256-byte root) up to 256 routes, 12 bits (16 KiB) up to 64k, 18 bits (1 MiB)
    /// beyond; back down at a quarter of each threshold.
    pub const DEFAULT: Self = Self { fixed: None, promote: [256, 65536], demote: [64, 16384] };

    fn stride_for(&self, current: u32, routes: usize) -> u32 {
        if let Some(s) = self.fixed {
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
    /// Node records (record 0 is the dummy).
    words: Blocks<u32>,
    /// Shadow entries by id, and the free ids.
    rib: Vec<RibInfo>,
    rib_free: Vec<u32>,
    locals: Blocks<LocalRoute>,
    len: usize,
    policy: StridePolicy,
    _key: PhantomData<K>,
}

impl<K: Key> Default for Poptrie<K> {
    fn default() -> Self {
        Self::with_policy(StridePolicy::DEFAULT)
    }
}

impl<K: Key> Poptrie<K> {
    pub(crate) fn with_policy(policy: StridePolicy) -> Self {
        let s = policy.stride_for(ROOT_STRIDES[0], 0);
        Self::with_stride(s, policy)
    }

    fn with_stride(s: u32, policy: StridePolicy) -> Self {
        assert!(ROOT_STRIDES.contains(&s), "root stride {s} not supported");
        let slots = 1usize << s;
        Self {
            s,
            direct: vec![NONE; slots],
            direct_node: vec![0; slots.div_ceil(64)],
            root_routes: vec![NONE; slots * 2],
            words: Blocks { items: DUMMY.to_vec(), free: Vec::new() },
            rib: Vec::new(),
            rib_free: Vec::new(),
            locals: Blocks::default(),
            len: 0,
            policy,
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
            + self.rib.capacity() * size_of::<RibInfo>()
            + self.rib_free.capacity() * 4
            + self.locals.heap_bytes()
    }

    /// Sizes for the benchmark: (fast-path bytes, of which free-listed, records).
    pub(crate) fn fast_path_bytes(&self) -> (usize, usize, usize) {
        let records = self.rib.len() - self.rib_free.len();
        (
            self.direct.len() * 4 + self.direct_node.len() * 8 + self.words.items.len() * 4,
            self.words.free_items() * 4,
            records,
        )
    }

    // ---------------------------------------------------------------- lookups

    #[inline(always)]
    fn is_root_node(&self, j: usize) -> bool {
        self.direct_node.get(j >> 6).is_some_and(|w| (w >> (j & 63)) & 1 != 0)
    }

    /// Longest-prefix match; `NONE` when nothing matches.
    #[inline]
    pub(crate) fn lookup(&self, key: K) -> u32 {
        let j = key.bits_at(0, self.s) as usize;
        let Some(&entry) = self.direct.get(j) else { return NONE };
        if !self.is_root_node(j) {
            return entry;
        }
        let words = &self.words.items[..];
        let mut r = entry as usize;
        let mut off = self.s;
        while off < K::BITS {
            let h = header_at(words, r);
            let v = key.bits_at(off, STRIDE);
            let vector = join(h[0], h[1]);
            if (vector >> v) & 1 != 0 {
                let at = r + HEADER + h[H_LEAVES] as usize + rank_incl(vector, v) - 1;
                r = words.get(at).copied().unwrap_or(0) as usize;
                off += STRIDE;
            } else {
                let at = r + HEADER + rank_incl(join(h[2], h[3]), v);
                return words.get(at.wrapping_sub(1)).copied().unwrap_or(NONE);
            }
        }
        NONE
    }

    /// Lookups of `keys[i]` into `out[i]` for `i < min(keys.len(), out.len())`.
    ///
    /// Runs level by level over groups of 32 keys without data-dependent branches: a lane
    /// that has its result reads the (cached) dummy record until the group is done. The loads
    /// of different lanes are independent, so the CPU keeps many cache misses in flight
    /// instead of waiting for each lookup's chain of misses in turn.
    pub(crate) fn lookup_batch(&self, keys: &[K], out: &mut [Option<u32>]) {
        const GROUP: usize = 32;
        let words = &self.words.items[..];
        for (keys, out) in keys.chunks(GROUP).zip(out.chunks_mut(GROUP)) {
            let n = keys.len().min(out.len());
            let (keys, out) = (&keys[..n], &mut out[..n]);
            let mut rec = [0u32; GROUP];
            let mut res = [NONE; GROUP];
            let mut alive = 0u32;
            for (i, key) in keys.iter().enumerate() {
                let j = key.bits_at(0, self.s) as usize;
                let entry = self.direct.get(j).copied().unwrap_or(NONE);
                let node = self.is_root_node(j);
                rec[i] = if node { entry } else { 0 };
                res[i] = entry;
                alive |= u32::from(node) << i;
            }
            let mut off = self.s;
            while alive != 0 && off < K::BITS {
                let mut still = 0u32;
                for (i, key) in keys.iter().enumerate() {
                    let r = rec[i] as usize;
                    let h = header_at(words, r);
                    let v = key.bits_at(off, STRIDE);
                    let vector = join(h[0], h[1]);
                    let leafvec = join(h[2], h[3]);
                    let child = (vector >> v) & 1;
                    let mask = 0u64.wrapping_sub(child);
                    let select = (vector & mask) | (leafvec & !mask);
                    let skip = h[H_LEAVES] as usize & mask as usize;
                    let at = (r + HEADER + skip + rank_incl(select, v)).wrapping_sub(1);
                    let word = words.get(at).copied().unwrap_or(NONE);
                    let was_alive = (alive >> i) & 1;
                    let descend = was_alive & child as u32;
                    rec[i] = if descend != 0 { word } else { 0 };
                    res[i] = if was_alive != 0 && child == 0 { word } else { res[i] };
                    still |= descend << i;
                }
                alive = still;
                off += STRIDE;
            }
            for (i, o) in out.iter_mut().enumerate() {
                // A lane still alive here would mean a corrupt table; answer "no route".
                *o = if (alive >> i) & 1 != 0 { None } else { decode(res[i]) };
            }
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
        let mut off = self.s;
        while len > off + STRIDE {
            let h = self.head(r);
            r = self.words.items[self.child_at(r, &h, key.bits_at(off, STRIDE))?] as usize;
            off += STRIDE;
        }
        let rib = self.head(r).rib;
        let locals = self.local_slice(rib);
        let i = locals.binary_search_by_key(&local_key(key, off, len), |l| l.key).ok()?;
        Some(locals[i].value)
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
        let prev = if len <= self.s { self.remove_root(key, len) } else { self.remove_deep(key, len) };
        if prev.is_some() {
            self.len -= 1;
            self.restride();
        }
        prev
    }

    /// Moves to the root stride the policy wants for the current size, by rebuilding the whole
    /// table (amortized: it happens once per factor-of-4 change in size).
    fn restride(&mut self) {
        let s = self.policy.stride_for(self.s, self.len);
        if s == self.s {
            return;
        }
        let mut fresh = Self::with_stride(s, self.policy);
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

    fn insert_deep(&mut self, key: K, len: u32, value: u32) -> Option<u32> {
        let j0 = key.bits_at(0, self.s) as usize;
        if !self.is_root_node(j0) {
            let r = self.new_record(self.direct[j0]);
            self.direct[j0] = index_u32(r);
            self.direct_node[j0 >> 6] |= 1 << (j0 & 63);
        }
        let mut parent = Parent::Direct(j0);
        let mut r = self.direct[j0] as usize;
        let mut off = self.s;
        while len > off + STRIDE {
            let j = key.bits_at(off, STRIDE);
            let h = self.head(r);
            let at = match self.child_at(r, &h, j) {
                Some(at) => at,
                None => self.add_child(r, parent, j),
            };
            parent = Parent::Word(at);
            r = self.words.items[at] as usize;
            off += STRIDE;
        }
        let route = LocalRoute { key: local_key(key, off, len), value };
        let rib = self.head(r).rib;
        match self.local_slice(rib).binary_search_by_key(&route.key, |l| l.key) {
            Ok(i) => {
                let at = self.rib[rib as usize].local_start as usize + i;
                let old = std::mem::replace(&mut self.locals.items[at].value, value);
                if old != value {
                    self.refresh(r, parent);
                }
                Some(old)
            }
            Err(i) => {
                self.local_insert(rib, i, route);
                self.refresh(r, parent);
                None
            }
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
        let mut off = self.s;
        while len > off + STRIDE {
            let j = key.bits_at(off, STRIDE);
            let h = self.head(r);
            let at = self.child_at(r, &h, j)?;
            path[depth] = (r, parent, j);
            depth += 1;
            parent = Parent::Word(at);
            r = self.words.items[at] as usize;
            off += STRIDE;
        }
        let rib = self.head(r).rib;
        let i = self.local_slice(rib).binary_search_by_key(&local_key(key, off, len), |l| l.key).ok()?;
        let old = self.local_remove(rib, i);
        if !self.is_empty_record(r) {
            self.refresh(r, parent);
            return Some(old);
        }
        // `r` has no routes and no children left: unlink it, then every ancestor this leaves
        // empty. The parent slot becomes a leaf with the result `r` inherited.
        loop {
            let inherited = self.free_record(r);
            if depth == 0 {
                self.direct[j0] = inherited;
                self.direct_node[j0 >> 6] &= !(1 << (j0 & 63));
                break;
            }
            depth -= 1;
            let (p, pp, j) = path[depth];
            let p = self.remove_child(p, pp, j);
            if !self.is_empty_record(p) {
                break;
            }
            r = p;
        }
        Some(old)
    }

    // ---------------------------------------------------------------- records

    fn head(&self, r: usize) -> Head {
        let h = header_at(&self.words.items, r);
        Head {
            vector: join(h[0], h[1]),
            leafvec: join(h[2], h[3]),
            leaves: h[H_LEAVES] as usize,
            rib: h[H_RIB],
        }
    }

    /// Index of the word holding the offset of the child in slot `j`, if there is one.
    fn child_at(&self, r: usize, h: &Head, j: u32) -> Option<usize> {
        ((h.vector >> j) & 1 != 0).then(|| r + HEADER + h.leaves + rank_below(h.vector, j))
    }

    /// Result of leaf slot `j` of record `r`.
    fn leaf_value(&self, r: usize, h: &Head, j: u32) -> u32 {
        self.words.items[r + HEADER + rank_incl(h.leafvec, j) - 1]
    }

    fn is_empty_record(&self, r: usize) -> bool {
        let h = self.head(r);
        h.vector == 0 && self.rib[h.rib as usize].local_len == 0
    }

    fn set_parent(&mut self, parent: Parent, r: usize) {
        match parent {
            Parent::Direct(j) => self.direct[j] = index_u32(r),
            Parent::Word(at) => self.words.items[at] = index_u32(r),
        }
    }

    /// A new record without routes or children, all slots `inherited`.
    fn new_record(&mut self, inherited: u32) -> usize {
        let rib = match self.rib_free.pop() {
            Some(id) => id,
            None => {
                reserve(&mut self.rib, 1);
                self.rib.push(RibInfo::default());
                index_u32(self.rib.len() - 1)
            }
        };
        self.rib[rib as usize] = RibInfo { inherited, ..RibInfo::default() };
        let r = self.words.alloc(HEADER + 1);
        self.words.items[r..r + HEADER + 1].copy_from_slice(&[0, 0, 1, 0, 1, rib, inherited]);
        r
    }

    /// Frees record `r` and its shadow entry; returns its inherited result.
    fn free_record(&mut self, r: usize) -> u32 {
        let h = self.head(r);
        let info = self.rib[h.rib as usize];
        self.locals.release(info.local_start as usize, usize::from(info.local_cap));
        self.rib_free.push(h.rib);
        self.words.release(r, h.size());
        info.inherited
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
        let old_size = self.head(r).size();
        let rib = self.head(r).rib;
        let mut buf = [0u32; MAX_RECORD];
        let mut leaves = 0;
        let mut leafvec = 0u64;
        let mut leaf_slots = !vector;
        while leaf_slots != 0 {
            let j = leaf_slots.trailing_zeros();
            leaf_slots &= leaf_slots - 1;
            let v = values[j as usize];
            if leaves == 0 || buf[HEADER + leaves - 1] != v {
                leafvec |= 1 << j;
                buf[HEADER + leaves] = v;
                leaves += 1;
            }
        }
        buf[..HEADER].copy_from_slice(&[
            vector as u32,
            (vector >> 32) as u32,
            leafvec as u32,
            (leafvec >> 32) as u32,
            leaves as u32,
            rib,
        ]);
        let size = HEADER + leaves + children.len();
        buf[HEADER + leaves..size].copy_from_slice(children);
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

    /// Copies the child offsets of record `r` out.
    fn children_of(&self, r: usize, h: &Head) -> ([u32; SLOTS], usize) {
        let mut children = [0u32; SLOTS];
        let count = h.children();
        let start = r + HEADER + h.leaves;
        children[..count].copy_from_slice(&self.words.items[start..start + count]);
        (children, count)
    }

    /// Turns leaf slot `j` of record `r` into a new empty child; returns the index of the word
    /// holding the child's offset (in `r`, which may have moved).
    fn add_child(&mut self, r: usize, parent: Parent, j: u32) -> usize {
        let h = self.head(r);
        let inherited = self.leaf_value(r, &h, j);
        let child = self.new_record(inherited);
        let (mut children, count) = self.children_of(r, &h);
        let rank = rank_below(h.vector, j);
        children.copy_within(rank..count, rank + 1);
        children[rank] = index_u32(child);
        let values = self.slot_values(h.rib);
        let vector = h.vector | (1 << j);
        let (r, leaves) = self.write_record(r, parent, vector, &values, &children[..count + 1]);
        r + HEADER + leaves + rank
    }

    /// Drops the (already freed) child in slot `j` of record `r`; the slot becomes a leaf.
    /// Returns the record's offset (it may have moved).
    fn remove_child(&mut self, r: usize, parent: Parent, j: u32) -> usize {
        let h = self.head(r);
        let (mut children, count) = self.children_of(r, &h);
        let rank = rank_below(h.vector, j);
        children.copy_within(rank + 1..count, rank);
        let values = self.slot_values(h.rib);
        let vector = h.vector & !(1 << j);
        self.write_record(r, parent, vector, &values, &children[..count - 1]).0
    }

    /// Rebuilds record `r` after its routes or inherited result changed, and pushes the new
    /// slot results down to the children whose inherited result changed.
    fn refresh(&mut self, r: usize, parent: Parent) {
        let h = self.head(r);
        let values = self.slot_values(h.rib);
        let (children, count) = self.children_of(r, &h);
        let (r, leaves) = self.write_record(r, parent, h.vector, &values, &children[..count]);
        let mut slots = h.vector;
        let mut at = r + HEADER + leaves;
        while slots != 0 {
            let j = slots.trailing_zeros();
            slots &= slots - 1;
            let child = self.words.items[at] as usize;
            self.set_inherited(child, values[j as usize], Parent::Word(at));
            at += 1;
        }
    }

    fn set_inherited(&mut self, r: usize, value: u32, parent: Parent) {
        let rib = self.head(r).rib as usize;
        if self.rib[rib].inherited != value {
            self.rib[rib].inherited = value;
            self.refresh(r, parent);
        }
    }

    /// The result of every slot of a record: its inherited result, overwritten by its local
    /// routes in (address, length) order, which paints longer prefixes over the shorter ones
    /// that contain them.
    fn slot_values(&self, rib: u32) -> [u32; SLOTS] {
        let mut values = [self.rib[rib as usize].inherited; SLOTS];
        for route in self.local_slice(rib) {
            values[route.slots()].fill(route.value);
        }
        values
    }

    // ---------------------------------------------------------------- local routes

    fn local_slice(&self, rib: u32) -> &[LocalRoute] {
        let info = &self.rib[rib as usize];
        let start = info.local_start as usize;
        &self.locals.items[start..start + usize::from(info.local_len)]
    }

    fn local_insert(&mut self, rib: u32, i: usize, route: LocalRoute) {
        let info = self.rib[rib as usize];
        let len = usize::from(info.local_len);
        let cap = usize::from(info.local_cap);
        let old = info.local_start as usize;
        let start = if len < cap {
            self.locals.items.copy_within(old + i..old + len, old + i + 1);
            old
        } else {
            let new_cap = (cap * 2).max(1);
            let start = self.locals.alloc(new_cap);
            self.locals.items.copy_within(old..old + i, start);
            self.locals.items.copy_within(old + i..old + len, start + i + 1);
            self.locals.release(old, cap);
            let info = &mut self.rib[rib as usize];
            info.local_start = index_u32(start);
            info.local_cap = u8::try_from(new_cap).unwrap_or(u8::MAX);
            start
        };
        self.locals.items[start + i] = route;
        self.rib[rib as usize].local_len += 1;
    }

    fn local_remove(&mut self, rib: u32, i: usize) -> u32 {
        let info = self.rib[rib as usize];
        let start = info.local_start as usize;
        let len = usize::from(info.local_len);
        let old = self.locals.items[start + i].value;
        self.locals.items.copy_within(start + i + 1..start + len, start + i);
        let info = &mut self.rib[rib as usize];
        info.local_len -= 1;
        let cap = usize::from(info.local_cap);
        // Shrink when a quarter full, so a record that lost its routes gives the space back.
        if usize::from(info.local_len) <= cap / 4 {
            let new_cap = cap / 2;
            if info.local_len == 0 {
                info.local_cap = 0;
                info.local_start = 0;
                self.locals.release(start, cap);
            } else {
                info.local_cap = u8::try_from(new_cap).unwrap_or(u8::MAX);
                self.locals.release(start + new_cap, cap - new_cap);
            }
        }
        old
    }

    // ---------------------------------------------------------------- iteration

    /// Every route as (key, length, value), in (address, length) order.
    pub(crate) fn routes(&self) -> Vec<(K, u32, u32)> {
        let mut out = Vec::with_capacity(self.len);
        self.collect_root(1, 0, &mut out);
        out
    }

    /// Pre-order walk of the root tree: a route comes before the longer ones it contains and
    /// the left half before the right half, which is (address, length) order.
    fn collect_root(&self, t: usize, depth: u32, out: &mut Vec<(K, u32, u32)>) {
        let prefix = (t - (1 << depth)) as u32;
        let key = if depth == 0 { K::ZERO } else { K::place(prefix, 0, depth) };
        if let Some(v) = decode(self.root_routes[t]) {
            out.push((key, depth, v));
        }
        if depth == self.s {
            let j = prefix as usize;
            if self.is_root_node(j) {
                self.collect_record(self.direct[j] as usize, key, self.s, out);
            }
            return;
        }
        self.collect_root(2 * t, depth + 1, out);
        self.collect_root(2 * t + 1, depth + 1, out);
    }

    fn collect_record(&self, r: usize, base: K, off: u32, out: &mut Vec<(K, u32, u32)>) {
        let h = self.head(r);
        let locals = self.local_slice(h.rib);
        let mut next = 0;
        for j in 0..SLOTS as u32 {
            let key = base.or(K::place(j, off, STRIDE));
            while let Some(route) = locals.get(next).filter(|l| l.first_slot() == j as usize) {
                out.push((key, off + route.rel_len(), route.value));
                next += 1;
            }
            if let Some(at) = self.child_at(r, &h, j) {
                self.collect_record(self.words.items[at] as usize, key, off + STRIDE, out);
            }
        }
    }

    // ---------------------------------------------------------------- self-check (tests)

    /// Verifies the structure: every record reachable once, blocks disjoint and either used or
    /// free (no leaks), leaves equal to the slot results with maximal compression, inherited
    /// results consistent, no empty records, local routes sorted and valid, `len` right.
    /// Panics with a description on the first violation.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let words = &self.words.items;
        let mut word_used = vec![false; words.len()];
        let mut local_used = vec![false; self.locals.items.len()];
        let mut rib_used = vec![false; self.rib.len()];
        let mark = |used: &mut Vec<bool>, start: usize, size: usize, what: &str| {
            for u in &mut used[start..start + size] {
                assert!(!*u, "{what} block at {start} (+{size}) used twice");
                *u = true;
            }
        };
        assert_eq!(words[..HEADER + 1], DUMMY, "dummy record");
        mark(&mut word_used, 0, HEADER + 1, "dummy");
        let mut routes = self.root_routes.iter().skip(1).filter(|&&v| v != NONE).count();
        // The result of every root tree entry, top down.
        let mut expect = vec![NONE; self.root_routes.len()];
        for t in 1..expect.len() {
            expect[t] = if self.root_routes[t] != NONE { self.root_routes[t] } else { expect[t / 2] };
        }
        let mut stack = Vec::new();
        for j in 0..1usize << self.s {
            let expect = expect[(1 << self.s) + j];
            if self.is_root_node(j) {
                stack.push((self.direct[j] as usize, expect, self.s + STRIDE));
            } else {
                assert_eq!(self.direct[j], expect, "root slot {j}");
            }
        }
        while let Some((r, inherited, end)) = stack.pop() {
            let h = self.head(r);
            mark(&mut word_used, r, h.size(), "record");
            mark(&mut rib_used, h.rib as usize, 1, "shadow");
            let info = self.rib[h.rib as usize];
            assert_eq!(info.inherited, inherited, "inherited of record {r}");
            assert!(h.vector != 0 || info.local_len != 0, "empty record {r}");
            assert!(info.local_len <= info.local_cap);
            mark(&mut local_used, info.local_start as usize, usize::from(info.local_cap), "locals");
            let locals = self.local_slice(h.rib);
            assert!(locals.windows(2).all(|w| w[0].key < w[1].key), "locals of {r} unsorted");
            for l in locals {
                assert!((1..=STRIDE).contains(&l.rel_len()));
                assert!(end - STRIDE + l.rel_len() <= K::BITS, "local route too long");
                assert_eq!(l.first_slot() % (1 << (STRIDE - l.rel_len())), 0, "host bits");
                assert_ne!(l.value, NONE);
            }
            routes += locals.len();
            assert_eq!(h.vector & h.leafvec, 0);
            if h.vector != 0 {
                assert!(end < K::BITS, "children below the last bit");
            }
            let values = self.slot_values(h.rib);
            let mut prev = None;
            for j in 0..SLOTS as u32 {
                if let Some(at) = self.child_at(r, &h, j) {
                    stack.push((words[at] as usize, values[j as usize], end + STRIDE));
                } else {
                    assert_eq!(self.leaf_value(r, &h, j), values[j as usize], "leaf {j} of {r}");
                    // Maximal compression: a leafvec bit exactly where the result changes.
                    let starts = (h.leafvec >> j) & 1 != 0;
                    assert_eq!(starts, prev != Some(values[j as usize]), "leafvec of {r}");
                    prev = Some(values[j as usize]);
                }
            }
            assert_eq!(h.leaves, h.leafvec.count_ones() as usize);
        }
        assert_eq!(routes, self.len, "route count");
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
        check_free(&mut local_used, &self.locals.free, "local");
        for &id in &self.rib_free {
            mark(&mut rib_used, id as usize, 1, "free shadow");
        }
        assert!(rib_used.iter().all(|&u| u), "shadow entry leaked");
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
