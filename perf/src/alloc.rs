//! A global allocator that forwards to the system allocator and counts live bytes and
//! allocation calls (relaxed atomics: a few cycles per allocation, nothing on paths that do
//! not allocate).
//!
//! Used to (1) cross-check the tables' own `memory_bytes` against the heap they really hold,
//! (2) prove that the timed packet loops allocate nothing and (3) measure what transparent
//! huge pages would do for the big tables (`--huge-pages`): blocks of [`HUGE_THRESHOLD`] or
//! more are always 2 MiB aligned, and with huge pages on they are `madvise(MADV_HUGEPAGE)`d
//! before first use (this machine's THP mode is `madvise`, so nothing else gets them).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Blocks at least this big are 2 MiB aligned (and huge-page advised when enabled).
pub const HUGE_THRESHOLD: usize = 4 << 20;
const HUGE_ALIGN: usize = 2 << 20;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static HUGE_PAGES: AtomicBool = AtomicBool::new(false);

/// The counting allocator (registered in `main.rs`).
pub struct CountingAllocator;

/// Bytes currently allocated (requested sizes, not the allocator's rounding or overhead).
pub fn live_bytes() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

/// Allocation calls so far (`alloc`, `alloc_zeroed` and `realloc` each count one).
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// Advise huge pages for blocks of [`HUGE_THRESHOLD`] bytes or more allocated from now on.
pub fn set_huge_pages(on: bool) {
    HUGE_PAGES.store(on, Ordering::Relaxed);
}

/// The layout actually requested from the system: a pure function of the caller's layout, so
/// `dealloc` recomputes the same one.
fn system_layout(layout: Layout) -> Layout {
    if layout.size() >= HUGE_THRESHOLD {
        Layout::from_size_align(layout.size(), layout.align().max(HUGE_ALIGN)).unwrap_or(layout)
    } else {
        layout
    }
}

fn advise(ptr: *mut u8, layout: Layout) {
    if !ptr.is_null() && layout.size() >= HUGE_THRESHOLD && HUGE_PAGES.load(Ordering::Relaxed) {
        // SAFETY: `ptr..ptr + size` is a block the system allocator just returned to us and
        // nobody else uses yet; MADV_HUGEPAGE only changes how the kernel backs those pages,
        // never their contents. A failure (e.g. THP disabled) is harmless and ignored.
        unsafe {
            libc::madvise(ptr.cast(), layout.size(), libc::MADV_HUGEPAGE);
        }
    }
}

fn counted(ptr: *mut u8, size: usize) -> *mut u8 {
    if !ptr.is_null() {
        LIVE_BYTES.fetch_add(size, Ordering::Relaxed);
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
    ptr
}

// SAFETY: every block comes from `System` with a layout at least as strict as the caller's
// (same size, alignment possibly raised to 2 MiB) and goes back to `System` with exactly the
// layout it was allocated with (`system_layout` is deterministic); the counters and the
// huge-page advice have no effect on which memory is handed out.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let system = system_layout(layout);
        // SAFETY: `system` has the caller's non-zero size and a valid alignment.
        let ptr = unsafe { System.alloc(system) };
        advise(ptr, system);
        counted(ptr, layout.size())
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let system = system_layout(layout);
        // SAFETY: as in `alloc`.
        let ptr = unsafe { System.alloc_zeroed(system) };
        advise(ptr, system);
        counted(ptr, layout.size())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller guarantees `ptr` came from this allocator with `layout`, so from
        // `System` with `system_layout(layout)`.
        unsafe { System.dealloc(ptr, system_layout(layout)) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.size() < HUGE_THRESHOLD && new_size < HUGE_THRESHOLD {
            // SAFETY: both layouts are the caller's own (no alignment change below the
            // threshold), `ptr` came from `System` with `layout`, `new_size` is valid for it.
            let new = unsafe { System.realloc(ptr, layout, new_size) };
            if !new.is_null() {
                LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
                LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
                ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            }
            return new;
        }
        // Crossing or above the threshold the system layout's alignment differs: move the
        // block by hand.
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        // SAFETY: `new_layout` has a non-zero size (the caller's `new_size`) and the caller's
        // alignment.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live, distinct, and at least `min(old, new)` bytes long;
            // the old one is freed with the layout it was allocated with.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}
