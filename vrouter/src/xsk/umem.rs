//! The UMEM: one memory area of equal-sized frames shared by all sockets of a worker.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, Weak};

use super::sys::Mapping;
use super::{XdpDesc, XskError, XDP_PACKET_HEADROOM};

/// Shape of a UMEM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UmemConfig {
    /// Number of frames. `frame_count * frame_size` must be a multiple of the page size (4096).
    pub frame_count: u32,
    /// Frame (chunk) size: 2048 or 4096.
    pub frame_size: u32,
    /// Extra headroom the kernel leaves before received data, on top of its own
    /// [`XDP_PACKET_HEADROOM`] (256 bytes). Usually 0.
    pub headroom: u32,
}

impl Default for UmemConfig {
    /// 16384 frames of 2048 bytes (32 MiB): enough for a few sockets with the default rings
    /// (4096 fill + 2048 RX + 2048 TX + 4096 completion each) without running dry.
    fn default() -> Self {
        Self {
            frame_count: 16384,
            frame_size: 2048,
            headroom: 0,
        }
    }
}

/// The memory area itself; shared (`Arc`) by the [`Umem`] and every socket using it, so the
/// mapping outlives whoever may still hand addresses in it to the kernel.
#[derive(Debug)]
pub(super) struct UmemArea {
    map: Mapping,
    pub(super) frame_size: u32,
    pub(super) frame_count: u32,
    pub(super) headroom: u32,
}

impl UmemArea {
    pub(super) fn len(&self) -> u64 {
        self.map.len() as u64
    }

    pub(super) fn base(&self) -> u64 {
        self.map.ptr().as_ptr() as u64
    }

    /// Whether `[addr, addr + len)` lies inside one frame.
    #[inline]
    pub(super) fn range_ok(&self, addr: u64, len: u64) -> bool {
        let fs = u64::from(self.frame_size);
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        end <= self.len() && (len == 0 || addr / fs == (end - 1) / fs)
    }
}

/// Which sockets share the UMEM, and in which mode it was bound.
#[derive(Debug, Default)]
pub(super) struct UmemShared {
    /// Bound sockets using this UMEM. Any live one can be named in `sxdp_shared_umem_fd` when
    /// binding another socket (the kernel needs a *bound* socket that holds the UMEM).
    pub(super) sockets: Vec<Weak<OwnedFd>>,
    /// Whether the UMEM is in zero-copy mode; decided by the first bind, inherited by the rest.
    pub(super) zero_copy: Option<bool>,
}

/// One mmap'd area of `frame_count` frames of `frame_size` bytes, registered with the kernel
/// (`XDP_UMEM_REG`) by the first socket created on it and shared (`XDP_SHARED_UMEM`) by every
/// further socket, on any interface and queue.
///
/// A frame is named by its byte offset in the area (its *address*); descriptors carry an
/// address that may point into the frame (received data starts at
/// [`rx_offset`](Self::rx_offset) bytes into its frame).
///
/// # Ownership rule
/// At any time a frame is owned either by userspace (the [`FramePool`](super::FramePool), or the
/// worker between `rx_burst` and `tx_burst`/free) or by the kernel (on a fill ring, in flight
/// inside the kernel, on an RX ring not yet read, on a TX ring or a completion ring not yet
/// read). Userspace reads or writes a frame only while it owns it; the kernel likewise. The
/// accessors below are bounds-checked and cannot reach outside the area, and the area stays
/// mapped while any socket uses it, so no misuse can produce a dangling or out-of-bounds access.
/// What the API cannot check (it would cost a per-frame state lookup on every packet) is the
/// rule itself: reading a frame that was handed to the kernel returns whatever bytes the kernel
/// is writing (garbage, every byte value being a valid `u8`), and writing one corrupts the packet
/// the kernel sends or delivers. The kernel's writes happen outside the Rust abstract machine, as
/// with any memory shared with a device or another process; keeping to the ownership rule is
/// what makes the `&[u8]` views exact. The [`FramePool`](super::FramePool) accounting and its
/// invariant check exist to catch violations in tests.
#[derive(Debug)]
pub struct Umem {
    pub(super) area: Arc<UmemArea>,
    pub(super) shared: Mutex<UmemShared>,
    /// Per-frame stamps for `frames_mut`'s distinctness check.
    stamps: Vec<u32>,
    epoch: u32,
}

impl Umem {
    /// Maps the area. Registration with the kernel happens when the first socket is created.
    pub fn new(config: UmemConfig) -> Result<Self, XskError> {
        let UmemConfig {
            frame_count,
            frame_size,
            headroom,
        } = config;
        if frame_size != 2048 && frame_size != 4096 {
            return Err(XskError::Config(format!(
                "frame_size must be 2048 or 4096, not {frame_size}"
            )));
        }
        if frame_count == 0 {
            return Err(XskError::Config("frame_count must be at least 1".into()));
        }
        let len = u64::from(frame_count) * u64::from(frame_size);
        if !len.is_multiple_of(4096) {
            return Err(XskError::Config(format!(
                "frame_count * frame_size ({len}) must be a multiple of 4096"
            )));
        }
        // The kernel requires headroom < chunk_size - XDP_PACKET_HEADROOM; keep room for at
        // least a full-size Ethernet frame on top.
        if u64::from(headroom) + u64::from(XDP_PACKET_HEADROOM) + 1518 > u64::from(frame_size) {
            return Err(XskError::Config(format!(
                "headroom {headroom} leaves less than 1518 bytes of a {frame_size}-byte frame"
            )));
        }
        let len = usize::try_from(len).map_err(|_| XskError::Config("UMEM too large".into()))?;
        let map = Mapping::anonymous(len).map_err(|source| XskError::Sys {
            op: "mmap UMEM",
            source,
        })?;
        Ok(Self {
            area: Arc::new(UmemArea {
                map,
                frame_size,
                frame_count,
                headroom,
            }),
            shared: Mutex::new(UmemShared::default()),
            stamps: vec![0; frame_count as usize],
            epoch: 0,
        })
    }

    /// Number of frames.
    pub fn frame_count(&self) -> u32 {
        self.area.frame_count
    }

    /// Size of one frame in bytes.
    pub fn frame_size(&self) -> u32 {
        self.area.frame_size
    }

    /// Size of the area in bytes.
    pub fn len(&self) -> u64 {
        self.area.len()
    }

    /// Never true (a UMEM has at least one frame); here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.area.len() == 0
    }

    /// Address of frame number `index` (None past the end).
    pub fn frame_addr(&self, index: u32) -> Option<u64> {
        (index < self.area.frame_count).then(|| u64::from(index) * u64::from(self.area.frame_size))
    }

    /// The frame address containing `addr` (rounds down to the frame boundary).
    pub fn frame_base(&self, addr: u64) -> u64 {
        addr & !(u64::from(self.area.frame_size) - 1)
    }

    /// Offset from the frame start at which the kernel places received data:
    /// `headroom + XDP_PACKET_HEADROOM`. The bytes before it are free headroom for prepending
    /// headers (encapsulation) in place.
    pub fn rx_offset(&self) -> u32 {
        self.area.headroom + XDP_PACKET_HEADROOM
    }

    /// Largest frame the kernel can deliver into this UMEM (`frame_size - rx_offset`); longer
    /// ones are dropped by the kernel and counted in `rx_dropped`.
    pub fn rx_frame_capacity(&self) -> u32 {
        self.area.frame_size - self.rx_offset()
    }

    /// Whether `desc` names bytes inside a single frame (what `tx_burst` accepts).
    pub fn is_valid_desc(&self, desc: &XdpDesc) -> bool {
        desc.len > 0 && desc.options == 0 && self.area.range_ok(desc.addr, u64::from(desc.len))
    }

    /// The bytes `[addr, addr + len)`, or None unless they lie inside one frame.
    /// See the ownership rule in the type's documentation.
    pub fn frame(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let (off, len) = self.checked(addr, len)?;
        // SAFETY: `checked` proved `off + len <= area length`, so the range lies in the live
        // mapping (kept alive by `self.area`); the returned borrow of `self` prevents a
        // `frame_mut` overlapping it. Concurrent kernel writes to a frame userspace does not own
        // are excluded by the ownership rule documented on the type.
        Some(unsafe { std::slice::from_raw_parts(self.area.map.ptr().as_ptr().add(off), len) })
    }

    /// The bytes `[addr, addr + len)` for writing, or None unless they lie inside one frame.
    /// See the ownership rule in the type's documentation.
    pub fn frame_mut(&mut self, addr: u64, len: usize) -> Option<&mut [u8]> {
        let (off, len) = self.checked(addr, len)?;
        // SAFETY: as in `frame`; `&mut self` makes this the only userspace view of the area for
        // the borrow's lifetime (sockets hold the area but never create references into it).
        Some(unsafe { std::slice::from_raw_parts_mut(self.area.map.ptr().as_ptr().add(off), len) })
    }

    /// Whole frames (each `frame_size` bytes) containing the given addresses, at once, for a
    /// batch: `out[i]` is the frame of `addrs[i]`. Fails (and returns nothing) if an address is
    /// outside the area or two addresses fall in the same frame, which is what makes handing
    /// out several `&mut` slices sound. O(n): a stamp per frame, renewed per call.
    pub fn frames_mut<'a>(
        &'a mut self,
        addrs: &[u64],
        out: &mut Vec<&'a mut [u8]>,
    ) -> Result<(), XskError> {
        out.clear();
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.stamps.fill(0);
            self.epoch = 1;
        }
        let frame_size = u64::from(self.area.frame_size);
        for &addr in addrs {
            let index = addr / frame_size;
            let stamp = self
                .stamps
                .get_mut(index as usize)
                .ok_or_else(|| XskError::Config(format!("frame address {addr:#x} out of range")))?;
            if *stamp == self.epoch {
                return Err(XskError::Config(format!(
                    "frame {index} appears twice in one batch"
                )));
            }
            *stamp = self.epoch;
        }
        let base = self.area.map.ptr().as_ptr();
        for &addr in addrs {
            let offset = (addr / frame_size * frame_size) as usize;
            // SAFETY: every index was checked above to be < frame_count, so
            // `offset + frame_size <= area length` and the range lies in the live mapping kept
            // alive by `self.area`. The stamps prove the frames are pairwise distinct, so the
            // slices do not overlap, and `&'a mut self` excludes any other userspace view of the
            // area for `'a`. Kernel access is excluded by the ownership rule on the type.
            out.push(unsafe {
                std::slice::from_raw_parts_mut(base.add(offset), self.area.frame_size as usize)
            });
        }
        Ok(())
    }

    /// The data a descriptor names (`frame(desc.addr, desc.len)`).
    pub fn data(&self, desc: &XdpDesc) -> Option<&[u8]> {
        self.frame(desc.addr, desc.len as usize)
    }

    /// The data a descriptor names, for writing.
    pub fn data_mut(&mut self, desc: &XdpDesc) -> Option<&mut [u8]> {
        self.frame_mut(desc.addr, desc.len as usize)
    }

    /// Whether the UMEM is bound in zero-copy mode (None before the first socket is bound).
    pub fn zero_copy(&self) -> Option<bool> {
        self.shared.lock().map(|s| s.zero_copy).unwrap_or(None)
    }

    fn checked(&self, addr: u64, len: usize) -> Option<(usize, usize)> {
        let len64 = u64::try_from(len).ok()?;
        if !self.area.range_ok(addr, len64) {
            return None;
        }
        Some((usize::try_from(addr).ok()?, len))
    }

    /// Identity of the area, to check that pools and sockets belong to the same UMEM.
    pub(super) fn id(&self) -> usize {
        Arc::as_ptr(&self.area) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Umem {
        Umem::new(UmemConfig {
            frame_count: 8,
            frame_size: 2048,
            headroom: 0,
        })
        .unwrap()
    }

    #[test]
    fn rejects_bad_shapes() {
        let bad = |frame_count, frame_size, headroom| {
            Umem::new(UmemConfig {
                frame_count,
                frame_size,
                headroom,
            })
            .is_err()
        };
        assert!(bad(8, 1000, 0));
        assert!(bad(0, 2048, 0));
        assert!(bad(3, 2048, 0)); // 6144 is not a page multiple
        assert!(bad(8, 2048, 512));
        assert!(!bad(8, 4096, 1024));
    }

    #[test]
    fn frame_accessors_are_bounds_checked() {
        let mut u = small();
        assert_eq!(u.len(), 8 * 2048);
        assert_eq!(u.frame(0, 2048).map(<[u8]>::len), Some(2048));
        assert!(u.frame(0, 2049).is_none(), "crosses into frame 1");
        assert!(u.frame(2047, 2).is_none(), "crosses a frame boundary");
        assert!(u.frame(7 * 2048 + 256, 1792).is_some());
        assert!(u.frame(8 * 2048, 1).is_none(), "past the end");
        assert!(u.frame(u64::MAX, 2).is_none(), "overflow");
        assert_eq!(u.frame(8 * 2048, 0), Some(&[][..]));
        u.frame_mut(2048 + 256, 4).unwrap().copy_from_slice(b"abcd");
        assert_eq!(u.frame(2048 + 256, 4).unwrap(), b"abcd");
        assert_eq!(u.frame_base(2048 + 300), 2048);
        assert_eq!(u.rx_offset(), 256);
        assert_eq!(u.rx_frame_capacity(), 1792);
        let d = XdpDesc {
            addr: 2048 + 256,
            len: 4,
            options: 0,
        };
        assert!(u.is_valid_desc(&d));
        assert_eq!(u.data(&d).unwrap(), b"abcd");
        assert!(!u.is_valid_desc(&XdpDesc { len: 0, ..d }));
        assert!(!u.is_valid_desc(&XdpDesc { len: 1793, ..d }));
        assert_eq!(u.frame_addr(7), Some(7 * 2048));
        assert_eq!(u.frame_addr(8), None);
    }
}
