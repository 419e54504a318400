//! The four single-producer single-consumer rings of an AF_XDP socket, shared with the kernel
//! through `mmap`.
//!
//! Layout (from `getsockopt(XDP_MMAP_OFFSETS)`): a `u32` producer index, a `u32` consumer index,
//! a `u32` flags word and an array of `size` entries (`u64` frame addresses for the fill and
//! completion rings, [`XdpDesc`] for RX and TX). Indices run freely and wrap at 2^32; the slot of
//! index `i` is `i & (size - 1)`.
//!
//! Memory ordering (the kernel side uses `smp_load_acquire` / `smp_store_release`):
//! - producer side (fill, TX): write the entries, then store our producer index with `Release`;
//!   read the kernel's consumer index with `Acquire` before reusing slots;
//! - consumer side (RX, completion): load the kernel's producer index with `Acquire`, read the
//!   entries, then store our consumer index with `Release` (so the reads happen before the
//!   kernel may overwrite the slots).
//!
//! The other side's index is cached and only reloaded when the cache says there is not enough
//! room (producer) or not enough entries (consumer), so a burst touches the shared cache line of
//! the other side at most once.

use std::io;
use std::marker::PhantomData;
use std::os::fd::BorrowedFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use super::sys::Mapping;
use super::XdpDesc;

/// An entry type of a ring: `u64` (fill, completion) or [`XdpDesc`] (RX, TX).
///
/// # Safety
/// Implementors are `Copy` plain-old-data types for which every bit pattern is valid.
pub(super) unsafe trait RingEntry: Copy {}
// SAFETY: integer.
unsafe impl RingEntry for u64 {}
// SAFETY: `XdpDesc` is repr(C) with integer fields only.
unsafe impl RingEntry for XdpDesc {}

#[derive(Debug)]
pub(super) struct Ring<T: RingEntry> {
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    entries: NonNull<T>,
    mask: u32,
    size: u32,
    /// Our copy of the producer index (ours on a producer ring, the kernel's on a consumer ring).
    cached_prod: u32,
    /// Our copy of the consumer index (the kernel's on a producer ring, ours on a consumer ring).
    cached_cons: u32,
    /// Keeps the pointers above valid; unmapped when the ring is dropped.
    _map: Mapping,
    _entries: PhantomData<T>,
}

// SAFETY: the ring is plain shared memory plus indices; nothing ties it to a thread. It is not
// `Sync`: the cached indices make it single-owner, which `&mut self` on every mutating method
// enforces.
unsafe impl<T: RingEntry + Send> Send for Ring<T> {}

impl<T: RingEntry> Ring<T> {
    /// Maps the ring of `size` entries at `pgoff` of the socket `fd`, using the offsets the kernel
    /// reported for it.
    pub(super) fn map(
        fd: BorrowedFd<'_>,
        off: &libc::xdp_ring_offset,
        size: u32,
        pgoff: libc::off_t,
    ) -> io::Result<Self> {
        debug_assert!(size.is_power_of_two());
        let entry = std::mem::size_of::<T>() as u64;
        let len = off
            .desc
            .checked_add(u64::from(size) * entry)
            .ok_or_else(|| io::Error::other("ring size overflows"))?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        let map = Mapping::socket(fd, len, pgoff)?;

        let check = |what: &str, at: u64, width: u64, align: usize| -> io::Result<usize> {
            let at = usize::try_from(at).map_err(io::Error::other)?;
            let fits = (at as u64)
                .checked_add(width)
                .is_some_and(|end| end <= len as u64);
            let addr = map.ptr().as_ptr() as usize + at;
            if !fits || !addr.is_multiple_of(align) {
                return Err(io::Error::other(format!(
                    "kernel ring offset of {what} ({at}) is out of bounds or misaligned"
                )));
            }
            Ok(at)
        };
        let p = check("producer", off.producer, 4, 4)?;
        let c = check("consumer", off.consumer, 4, 4)?;
        let f = check("flags", off.flags, 4, 4)?;
        let d = check(
            "descriptors",
            off.desc,
            u64::from(size) * entry,
            std::mem::align_of::<T>(),
        )?;

        let base = map.ptr();
        let at = |o: usize| {
            // SAFETY: each offset was checked above to lie, with its width, inside the
            // `len`-byte mapping, and to be aligned for the type it is cast to.
            unsafe { base.add(o) }
        };
        let producer = at(p).cast::<AtomicU32>();
        let consumer = at(c).cast::<AtomicU32>();
        let flags = at(f).cast::<AtomicU32>();
        let entries = at(d).cast::<T>();

        let mut ring = Self {
            producer,
            consumer,
            flags,
            entries,
            mask: size - 1,
            size,
            cached_prod: 0,
            cached_cons: 0,
            _map: map,
            _entries: PhantomData,
        };
        ring.cached_prod = ring.prod().load(Ordering::Acquire);
        ring.cached_cons = ring.cons().load(Ordering::Acquire);
        Ok(ring)
    }

    fn prod(&self) -> &AtomicU32 {
        // SAFETY: points into our live mapping, 4-byte aligned (checked in `map`); the kernel
        // accesses the index only atomically (READ_ONCE / smp_store_release), so sharing it as
        // an `AtomicU32` is sound.
        unsafe { self.producer.as_ref() }
    }

    fn cons(&self) -> &AtomicU32 {
        // SAFETY: as in `prod`.
        unsafe { self.consumer.as_ref() }
    }

    fn flags(&self) -> &AtomicU32 {
        // SAFETY: as in `prod`; the kernel sets and clears the flags word with plain stores of a
        // whole u32, which an atomic load observes either before or after.
        unsafe { self.flags.as_ref() }
    }

    /// Number of slots.
    pub(super) fn size(&self) -> u32 {
        self.size
    }

    /// Whether the kernel set `XDP_RING_NEED_WAKEUP` on this ring.
    pub(super) fn needs_wakeup(&self) -> bool {
        self.flags().load(Ordering::Acquire) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    // ---- producer side (fill, TX) ----

    /// Free slots, reloading the kernel's consumer index only if the cache shows fewer than
    /// `wanted`.
    fn prod_free(&mut self, wanted: u32) -> u32 {
        let free = self.size
            - self
                .cached_prod
                .wrapping_sub(self.cached_cons)
                .min(self.size);
        if free >= wanted {
            return free;
        }
        self.cached_cons = self.cons().load(Ordering::Acquire);
        self.size
            - self
                .cached_prod
                .wrapping_sub(self.cached_cons)
                .min(self.size)
    }

    /// Free slots now (always reloads the consumer index).
    pub(super) fn prod_free_now(&self) -> u32 {
        let cons = self.cons().load(Ordering::Acquire);
        self.size - self.cached_prod.wrapping_sub(cons).min(self.size)
    }

    /// Entries produced and not yet consumed by the kernel.
    pub(super) fn prod_outstanding(&self) -> u32 {
        let cons = self.cons().load(Ordering::Acquire);
        self.cached_prod.wrapping_sub(cons).min(self.size)
    }

    /// Queues as many of `items` as fit, in order, and publishes them. Returns how many.
    pub(super) fn produce(&mut self, items: &[T]) -> usize {
        let want = u32::try_from(items.len()).unwrap_or(u32::MAX);
        let n = self.prod_free(want).min(want);
        for (i, item) in items.iter().take(n as usize).enumerate() {
            let slot = self.cached_prod.wrapping_add(i as u32) & self.mask;
            // SAFETY: `slot <= mask < size`, so the write stays inside the entry array of our
            // mapping; the slot is free (between the kernel's consumer and our producer plus
            // `size`), so the kernel does not read it until we publish the producer index below.
            unsafe { self.entries.add(slot as usize).write(*item) };
        }
        if n > 0 {
            self.cached_prod = self.cached_prod.wrapping_add(n);
            self.prod().store(self.cached_prod, Ordering::Release);
        }
        n as usize
    }

    /// Reads back the entries we produced that the kernel has not consumed yet (oldest first),
    /// without changing the ring. Used when a socket is closed to take back its frames.
    pub(super) fn unconsumed(&self, mut f: impl FnMut(T)) -> u32 {
        let cons = self.cons().load(Ordering::Acquire);
        let n = self.cached_prod.wrapping_sub(cons).min(self.size);
        for i in 0..n {
            let slot = cons.wrapping_add(i) & self.mask;
            // SAFETY: in bounds (`slot < size`); these slots hold entries we wrote and the
            // kernel only reads them, so a plain read of a RingEntry (any bit pattern valid) is
            // fine even if the kernel consumes it concurrently.
            f(unsafe { self.entries.add(slot as usize).read() });
        }
        n
    }

    // ---- consumer side (RX, completion) ----

    /// Entries ready, reloading the kernel's producer index only if the cache shows fewer than
    /// `wanted`.
    fn cons_ready(&mut self, wanted: u32) -> u32 {
        let ready = self
            .cached_prod
            .wrapping_sub(self.cached_cons)
            .min(self.size);
        if ready >= wanted {
            return ready;
        }
        self.cached_prod = self.prod().load(Ordering::Acquire);
        self.cached_prod
            .wrapping_sub(self.cached_cons)
            .min(self.size)
    }

    /// Entries the kernel has published and we have not consumed (reloads the producer index).
    pub(super) fn cons_ready_now(&self) -> u32 {
        let prod = self.prod().load(Ordering::Acquire);
        prod.wrapping_sub(self.cached_cons).min(self.size)
    }

    /// Takes up to `out.len()` entries, oldest first, and releases their slots to the kernel.
    pub(super) fn consume(&mut self, out: &mut [T]) -> usize {
        let want = u32::try_from(out.len()).unwrap_or(u32::MAX);
        let n = self.cons_ready(want).min(want);
        for (i, o) in out.iter_mut().take(n as usize).enumerate() {
            let slot = self.cached_cons.wrapping_add(i as u32) & self.mask;
            // SAFETY: `slot < size`, inside the entry array; the kernel published this entry
            // (our Acquire load of its producer index orders its writes before this read) and
            // will not overwrite it until we release the slot below.
            *o = unsafe { self.entries.add(slot as usize).read() };
        }
        if n > 0 {
            self.cached_cons = self.cached_cons.wrapping_add(n);
            self.cons().store(self.cached_cons, Ordering::Release);
        }
        n as usize
    }
}
