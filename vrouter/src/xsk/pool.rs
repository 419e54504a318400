//! The per-worker free list of UMEM frames.

use super::{Umem, XdpDesc, XskSocket};

/// Free frames of one [`Umem`], as a stack of frame addresses, with the accounting that makes
/// leaks visible.
///
/// Every frame is at any time in exactly one place: this pool, a fill ring, inside the kernel
/// (taken from a fill ring, not yet on an RX ring), an RX ring, held by the worker (received and
/// not yet transmitted or freed), a TX ring, or a completion ring. The pool cannot see the worker's
/// hands, so [`check_invariant`](Self::check_invariant) takes that count as an argument and
/// checks `free + held + Σ socket.frames_in_kernel() == total`, plus that the free list has no
/// duplicates and only frame-aligned addresses inside the UMEM.
#[derive(Debug)]
pub struct FramePool {
    free: Vec<u64>,
    total: u64,
    lost: u64,
    frame_size: u64,
    umem_len: u64,
    umem_id: usize,
}

/// A broken frame-pool invariant: a leak, a double free, or a foreign address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "frame accounting broken: free {free} + held {held} + in kernel {in_kernel} != total {total} \
     ({duplicates} duplicate and {foreign} foreign addresses in the free list)"
)]
pub struct FrameLeak {
    /// Frames in the pool.
    pub free: u64,
    /// Frames the caller said the worker holds.
    pub held: u64,
    /// Frames the sockets said the kernel holds.
    pub in_kernel: u64,
    /// Frames the pool accounts for.
    pub total: u64,
    /// Addresses present more than once in the free list.
    pub duplicates: u64,
    /// Addresses in the free list that are not frame-aligned or lie outside the UMEM.
    pub foreign: u64,
}

impl FramePool {
    /// A pool holding every frame of `umem`. Frames are handed out lowest address first.
    pub fn new(umem: &Umem) -> Self {
        let n = umem.frame_count();
        let fs = u64::from(umem.frame_size());
        Self {
            free: (0..u64::from(n)).rev().map(|i| i * fs).collect(),
            total: u64::from(n),
            lost: 0,
            frame_size: fs,
            umem_len: umem.len(),
            umem_id: umem.id(),
        }
    }

    /// Free frames.
    pub fn len(&self) -> usize {
        self.free.len()
    }

    /// True when no frame is free.
    pub fn is_empty(&self) -> bool {
        self.free.is_empty()
    }

    /// Frames the pool accounts for: the UMEM's frames minus those lost with closed sockets.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Frames outside the pool (on rings, in the kernel, held by the worker).
    pub fn in_use(&self) -> u64 {
        self.total - self.free.len() as u64
    }

    /// Frames lost with closed sockets (see [`XskSocket::close`]).
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Takes a free frame (its base address).
    pub fn alloc(&mut self) -> Option<u64> {
        self.free.pop()
    }

    /// Returns a frame. `addr` may point anywhere inside the frame (an RX or completion
    /// address); it is rounded down to the frame start. Addresses outside the UMEM are ignored
    /// (and trip a debug assertion): they can only come from a bug.
    pub fn free(&mut self, addr: u64) {
        let base = addr & !(self.frame_size - 1);
        debug_assert!(
            base < self.umem_len,
            "freeing address {addr:#x} outside the UMEM"
        );
        debug_assert!(
            (self.free.len() as u64) < self.total,
            "more frames freed than the pool accounts for (double free of {addr:#x}?)"
        );
        if base < self.umem_len {
            self.free.push(base);
        }
    }

    /// Returns the frames of `descs`.
    pub fn free_descs(&mut self, descs: &[XdpDesc]) {
        for d in descs {
            self.free(d.addr);
        }
    }

    /// Moves up to `max` free frames onto the fill ring of `sock`, as many as it has room for.
    /// Returns how many moved.
    pub fn refill(&mut self, sock: &mut XskSocket, max: usize) -> usize {
        debug_assert_eq!(sock.umem_id(), self.umem_id, "socket of another UMEM");
        let room = sock.fill_free() as usize;
        let n = max.min(room).min(self.free.len());
        if n == 0 {
            return 0;
        }
        let start = self.free.len() - n;
        let done = sock.fill(&self.free[start..]);
        // `fill` took a prefix of the slice: remove exactly those.
        self.free.drain(start..start + done);
        done
    }

    /// Takes every completed TX frame of `sock` back into the pool. Returns how many.
    pub fn reclaim_completions(&mut self, sock: &mut XskSocket) -> usize {
        debug_assert_eq!(sock.umem_id(), self.umem_id, "socket of another UMEM");
        let mut buf = [0u64; 64];
        let mut total = 0;
        loop {
            let n = sock.complete(&mut buf);
            for &a in &buf[..n] {
                self.free(a);
            }
            total += n;
            if n < buf.len() {
                return total;
            }
        }
    }

    /// Checks the accounting against the sockets sharing the UMEM (pass all of them) and the
    /// number of frames the worker holds. For tests and debugging: sorts a copy of the free list.
    pub fn check_invariant(&self, held: u64, sockets: &[&XskSocket]) -> Result<(), FrameLeak> {
        debug_assert!(sockets.iter().all(|s| s.umem_id() == self.umem_id));
        let in_kernel = sockets.iter().map(|s| s.frames_in_kernel()).sum();
        self.check_counts(held, in_kernel)
    }

    /// As [`check_invariant`](Self::check_invariant), with the kernel's share given as a count
    /// (for callers that keep their own accounting).
    pub fn check_counts(&self, held: u64, in_kernel: u64) -> Result<(), FrameLeak> {
        let mut sorted = self.free.clone();
        sorted.sort_unstable();
        let duplicates = sorted.windows(2).filter(|w| w[0] == w[1]).count() as u64;
        let foreign = sorted
            .iter()
            .filter(|&&a| !a.is_multiple_of(self.frame_size) || a >= self.umem_len)
            .count() as u64;
        let free = self.free.len() as u64;
        if duplicates == 0 && foreign == 0 && free + held + in_kernel == self.total {
            Ok(())
        } else {
            Err(FrameLeak {
                free,
                held,
                in_kernel,
                total: self.total,
                duplicates,
                foreign,
            })
        }
    }

    /// Forgets `n` frames that went down with a closed socket.
    pub(super) fn retire(&mut self, n: u64) {
        self.total -= n.min(self.total);
        self.lost += n;
    }

    pub(super) fn umem_id(&self) -> usize {
        self.umem_id
    }
}

#[cfg(test)]
mod tests {
    use super::super::UmemConfig;
    use super::*;
    use std::collections::VecDeque;

    fn umem(frames: u32) -> Umem {
        Umem::new(UmemConfig {
            frame_count: frames,
            frame_size: 2048,
            headroom: 0,
        })
        .unwrap()
    }

    #[test]
    fn new_pool_holds_every_frame_once() {
        let u = umem(64);
        let mut p = FramePool::new(&u);
        assert_eq!(p.len(), 64);
        assert_eq!(p.total(), 64);
        p.check_counts(0, 0).unwrap();
        assert_eq!(p.alloc(), Some(0), "lowest address first");
        assert_eq!(p.alloc(), Some(2048));
        p.check_counts(2, 0).unwrap();
        assert!(
            p.check_counts(1, 0).is_err(),
            "a held frame not declared is a leak"
        );
        p.free(2048 + 256 + 10); // an RX-style address inside frame 1
        p.free(0);
        p.check_counts(0, 0).unwrap();
    }

    #[test]
    fn duplicates_and_foreign_addresses_are_reported() {
        let u = umem(8);
        let mut p = FramePool::new(&u);
        let a = p.alloc().unwrap();
        let b = p.alloc().unwrap();
        p.free.push(a);
        p.free.push(a); // double free, bypassing the debug assertion
        let e = p.check_counts(0, 0).unwrap_err();
        assert_eq!(e.duplicates, 1);
        p.free.pop();
        p.free.push(b + 1);
        let e = p.check_counts(0, 0).unwrap_err();
        assert_eq!(e.foreign, 1);
    }

    /// A burst loop against a simulated kernel (queues standing in for the rings, with the
    /// kernel keeping some frames to itself like copy mode's internal free list), checking the
    /// invariant after every step.
    #[test]
    fn invariant_holds_through_a_burst_loop() {
        let u = umem(256);
        let mut pool = FramePool::new(&u);
        let mut fill: VecDeque<u64> = VecDeque::new();
        let mut in_kernel_only: Vec<u64> = Vec::new();
        let mut rx: VecDeque<u64> = VecDeque::new();
        let mut tx: VecDeque<u64> = VecDeque::new();
        let mut comp: VecDeque<u64> = VecDeque::new();
        let mut held: Vec<u64> = Vec::new();
        let kernel = |f: &VecDeque<u64>,
                      k: &Vec<u64>,
                      r: &VecDeque<u64>,
                      t: &VecDeque<u64>,
                      c: &VecDeque<u64>| {
            (f.len() + k.len() + r.len() + t.len() + c.len()) as u64
        };
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for round in 0..2000 {
            // refill: up to 32 frames onto a fill ring of 128
            let room = 128 - fill.len();
            for _ in 0..room.min(32) {
                match pool.alloc() {
                    Some(a) => fill.push_back(a),
                    None => break,
                }
            }
            // kernel: receive some frames (some detour through its internal list)
            for _ in 0..rand(40) {
                if let Some(a) = in_kernel_only.pop().or_else(|| fill.pop_front()) {
                    if rx.len() < 64 {
                        rx.push_back(a + 256);
                    } else {
                        in_kernel_only.push(a); // RX ring full: kernel keeps the frame
                    }
                }
            }
            // worker: rx burst, forward some, drop some
            for _ in 0..32 {
                if let Some(d) = rx.pop_front() {
                    held.push(d);
                }
            }
            while let Some(d) = held.pop() {
                if rand(4) == 0 {
                    pool.free(d);
                } else if tx.len() < 64 {
                    tx.push_back(d);
                } else {
                    pool.free(d);
                }
            }
            // kernel: send and complete some
            for _ in 0..rand(48) {
                if let Some(d) = tx.pop_front() {
                    comp.push_back(d);
                }
            }
            // worker: reclaim completions
            for _ in 0..rand(64) {
                if let Some(a) = comp.pop_front() {
                    pool.free(a);
                }
            }
            let k = kernel(&fill, &in_kernel_only, &rx, &tx, &comp);
            if let Err(e) = pool.check_counts(held.len() as u64, k) {
                panic!("round {round}: {e}");
            }
        }
    }
}
