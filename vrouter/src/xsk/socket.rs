//! An AF_XDP socket bound to one (interface, queue), on a shared [`Umem`].

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, Weak};

use super::ring::Ring;
use super::sys;
use super::umem::{Umem, UmemArea};
use super::{FramePool, XdpDesc, XskError};

/// How to bind the first socket of a UMEM (later sockets inherit the UMEM's mode).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BindMode {
    /// Try zero-copy, fall back to copy mode when the driver refuses (`EOPNOTSUPP`/`EINVAL`).
    #[default]
    Auto,
    /// Copy mode (`XDP_COPY`): works on every driver.
    Copy,
    /// Zero-copy (`XDP_ZEROCOPY`): fails on drivers without support (veth among them).
    ZeroCopy,
}

/// Ring sizes and bind mode of a socket. Sizes must be powers of two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XskConfig {
    /// Fill ring entries (frames lent to the kernel for receiving).
    pub fill_size: u32,
    /// Completion ring entries (transmitted frames handed back).
    pub comp_size: u32,
    /// RX ring entries.
    pub rx_size: u32,
    /// TX ring entries.
    pub tx_size: u32,
    /// Bind mode.
    pub bind_mode: BindMode,
}

impl Default for XskConfig {
    /// Generous rings: fill 4096, completion 4096, RX 2048, TX 2048, `BindMode::Auto`. A fill
    /// ring of 2048 with 4096 frames ran empty at about 400 kpps on veth on this project's test
    /// machines.
    fn default() -> Self {
        Self {
            fill_size: 4096,
            comp_size: 4096,
            rx_size: 2048,
            tx_size: 2048,
            bind_mode: BindMode::Auto,
        }
    }
}

/// Counters of `getsockopt(XDP_STATISTICS)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XskStats {
    /// Frames dropped by the kernel for this socket (too long for a frame, no fill frame...).
    pub rx_dropped: u64,
    /// Invalid descriptors found on the fill ring.
    pub rx_invalid_descs: u64,
    /// Invalid descriptors found on the TX ring (their frames are not completed).
    pub tx_invalid_descs: u64,
    /// Frames dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times the kernel found the fill ring empty.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the kernel found the TX ring empty when asked to send.
    pub tx_ring_empty_descs: u64,
}

/// Options of `getsockopt(XDP_OPTIONS)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XskOptions {
    /// The socket runs in zero-copy mode.
    pub zero_copy: bool,
}

/// Frames this socket moved between userspace and the kernel, since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XskCounters {
    /// Frames put on the fill ring.
    pub filled: u64,
    /// Descriptors taken from the RX ring.
    pub received: u64,
    /// Descriptors put on the TX ring.
    pub transmitted: u64,
    /// Addresses taken from the completion ring.
    pub completed: u64,
}

/// What [`XskSocket::close`] did with the socket's frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CloseReport {
    /// Frames returned to the pool (from the RX, completion, fill and TX rings).
    pub reclaimed: u64,
    /// Frames the kernel still held (inside the kernel, not on a ring): removed from the pool's
    /// total, so the pool accounting stays exact.
    pub lost: u64,
}

/// An AF_XDP socket bound to one queue of one interface, with its own RX, TX, fill and
/// completion rings, on a [`Umem`] shared with the worker's other sockets.
///
/// Because every socket of a worker shares one UMEM, a frame received on port A is transmitted
/// on port B by passing its descriptor to B's [`tx_burst`](Self::tx_burst): no copy in
/// userspace; its address comes back on B's completion ring.
///
/// One socket per (interface, queue) per UMEM: the kernel refuses a second bind on a queue that
/// already has a socket.
#[derive(Debug)]
pub struct XskSocket {
    // Drop order matters: the rings are unmapped before the socket is closed (the kernel frees
    // the ring memory when the socket goes away), and the UMEM area is released last.
    rx: Ring<XdpDesc>,
    tx: Ring<XdpDesc>,
    fill: Ring<u64>,
    comp: Ring<u64>,
    fd: Arc<OwnedFd>,
    area: Arc<UmemArea>,
    umem_id: usize,
    ifindex: u32,
    queue_id: u32,
    zero_copy: bool,
    counters: XskCounters,
}

fn check_size(what: &str, n: u32) -> Result<(), XskError> {
    if n == 0 || !n.is_power_of_two() {
        return Err(XskError::Config(format!(
            "{what} must be a non-zero power of two, not {n}"
        )));
    }
    Ok(())
}

fn sys_err(op: &'static str) -> impl FnOnce(io::Error) -> XskError {
    move |source| XskError::Sys { op, source }
}

impl XskSocket {
    /// Creates a socket on `umem` and binds it to queue `queue_id` of interface `ifname`.
    ///
    /// Must run in the network namespace of the interface (see
    /// [`run_in_netns`](super::run_in_netns)); the socket can be used from any thread afterwards.
    pub fn new(
        umem: &Umem,
        ifname: &str,
        queue_id: u32,
        config: &XskConfig,
    ) -> Result<Self, XskError> {
        let ifindex = sys::if_index(ifname).map_err(|source| XskError::NoSuchInterface {
            name: ifname.to_string(),
            source,
        })?;
        Self::with_ifindex(umem, ifindex, queue_id, config)
    }

    /// As [`new`](Self::new), with an interface index.
    pub fn with_ifindex(
        umem: &Umem,
        ifindex: u32,
        queue_id: u32,
        config: &XskConfig,
    ) -> Result<Self, XskError> {
        check_size("fill_size", config.fill_size)?;
        check_size("comp_size", config.comp_size)?;
        check_size("rx_size", config.rx_size)?;
        check_size("tx_size", config.tx_size)?;

        let fd = sys::xdp_socket().map_err(sys_err("socket(AF_XDP)"))?;
        let area = Arc::clone(&umem.area);

        // Hold the sharing state for the whole creation: two sockets created at once on the same
        // UMEM must not both register it.
        let mut shared = umem
            .shared
            .lock()
            .map_err(|_| XskError::Config("UMEM state lock poisoned".into()))?;
        shared.sockets.retain(|w| w.strong_count() > 0);
        // Live sockets of this UMEM; any *bound* one can be named when sharing it.
        let sharers: Vec<Arc<OwnedFd>> = shared.sockets.iter().filter_map(Weak::upgrade).collect();

        if sharers.is_empty() {
            let reg = libc::xdp_umem_reg {
                addr: area.base(),
                len: area.len(),
                chunk_size: area.frame_size,
                headroom: area.headroom,
                flags: 0,
                tx_metadata_len: 0,
            };
            sys::set_xdp_opt(fd.as_fd(), libc::XDP_UMEM_REG, &reg)
                .map_err(sys_err("XDP_UMEM_REG"))?;
            shared.zero_copy = None;
        } else {
            match (config.bind_mode, shared.zero_copy) {
                (BindMode::ZeroCopy, Some(false)) | (BindMode::Copy, Some(true)) => {
                    return Err(XskError::ModeMismatch {
                        requested: config.bind_mode,
                        umem_zero_copy: shared.zero_copy.unwrap_or(false),
                    });
                }
                _ => {}
            }
        }

        // Every socket gets its own fill and completion ring, which is what the kernel requires
        // to share a UMEM across queues and devices.
        let size = |n: u32| n as libc::c_int;
        sys::set_xdp_opt(
            fd.as_fd(),
            libc::XDP_UMEM_FILL_RING,
            &size(config.fill_size),
        )
        .map_err(sys_err("XDP_UMEM_FILL_RING"))?;
        sys::set_xdp_opt(
            fd.as_fd(),
            libc::XDP_UMEM_COMPLETION_RING,
            &size(config.comp_size),
        )
        .map_err(sys_err("XDP_UMEM_COMPLETION_RING"))?;
        sys::set_xdp_opt(fd.as_fd(), libc::XDP_RX_RING, &size(config.rx_size))
            .map_err(sys_err("XDP_RX_RING"))?;
        sys::set_xdp_opt(fd.as_fd(), libc::XDP_TX_RING, &size(config.tx_size))
            .map_err(sys_err("XDP_TX_RING"))?;

        let off: libc::xdp_mmap_offsets = sys::get_xdp_opt(fd.as_fd(), libc::XDP_MMAP_OFFSETS)
            .map_err(sys_err("XDP_MMAP_OFFSETS"))?;
        // Rings are mapped before bind: the kernel refuses mmap on a bound socket.
        let fill = Ring::<u64>::map(
            fd.as_fd(),
            &off.fr,
            config.fill_size,
            libc::XDP_UMEM_PGOFF_FILL_RING as libc::off_t,
        )
        .map_err(sys_err("mmap fill ring"))?;
        let comp = Ring::<u64>::map(
            fd.as_fd(),
            &off.cr,
            config.comp_size,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING as libc::off_t,
        )
        .map_err(sys_err("mmap completion ring"))?;
        let rx = Ring::<XdpDesc>::map(fd.as_fd(), &off.rx, config.rx_size, libc::XDP_PGOFF_RX_RING)
            .map_err(sys_err("mmap RX ring"))?;
        let tx = Ring::<XdpDesc>::map(fd.as_fd(), &off.tx, config.tx_size, libc::XDP_PGOFF_TX_RING)
            .map_err(sys_err("mmap TX ring"))?;

        let mut addr = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: 0,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue_id,
            sxdp_shared_umem_fd: 0,
        };
        if !sharers.is_empty() {
            // Flags must be exactly XDP_SHARED_UMEM: copy/zero-copy and need_wakeup are
            // inherited from the UMEM's first socket (the kernel rejects them here). A
            // socket whose device went away is unbound (EBADF here): try the next one.
            addr.sxdp_flags = libc::XDP_SHARED_UMEM;
            let mut last = io::Error::from_raw_os_error(libc::EBADF);
            let mut bound = false;
            for owner in &sharers {
                addr.sxdp_shared_umem_fd = owner.as_raw_fd() as u32;
                match sys::bind_xdp(fd.as_fd(), &addr) {
                    Ok(()) => {
                        bound = true;
                        break;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EBADF) => last = e,
                    Err(source) => {
                        return Err(XskError::Sys {
                            op: "bind (shared UMEM)",
                            source,
                        })
                    }
                }
            }
            if !bound {
                return Err(XskError::Sys {
                    op: "bind (shared UMEM: no socket of this UMEM is still bound)",
                    source: last,
                });
            }
        } else {
            let wake = libc::XDP_USE_NEED_WAKEUP;
            match config.bind_mode {
                BindMode::Copy => {
                    addr.sxdp_flags = libc::XDP_COPY | wake;
                    sys::bind_xdp(fd.as_fd(), &addr).map_err(sys_err("bind (copy)"))?;
                }
                BindMode::ZeroCopy => {
                    addr.sxdp_flags = libc::XDP_ZEROCOPY | wake;
                    sys::bind_xdp(fd.as_fd(), &addr).map_err(sys_err("bind (zero-copy)"))?;
                }
                BindMode::Auto => {
                    addr.sxdp_flags = libc::XDP_ZEROCOPY | wake;
                    match sys::bind_xdp(fd.as_fd(), &addr) {
                        Ok(()) => {}
                        Err(e)
                            if matches!(
                                e.raw_os_error(),
                                Some(libc::EOPNOTSUPP | libc::EINVAL)
                            ) =>
                        {
                            addr.sxdp_flags = libc::XDP_COPY | wake;
                            sys::bind_xdp(fd.as_fd(), &addr)
                                .map_err(sys_err("bind (copy after zero-copy failed)"))?;
                        }
                        Err(source) => {
                            return Err(XskError::Sys {
                                op: "bind (zero-copy)",
                                source,
                            })
                        }
                    }
                }
            }
        }

        let opts: libc::xdp_options =
            sys::get_xdp_opt(fd.as_fd(), libc::XDP_OPTIONS).map_err(sys_err("XDP_OPTIONS"))?;
        let zero_copy = opts.flags & libc::XDP_OPTIONS_ZEROCOPY != 0;
        if sharers.is_empty() {
            shared.zero_copy = Some(zero_copy);
        }
        let fd = Arc::new(fd);
        shared.sockets.push(Arc::downgrade(&fd));
        drop(shared);

        Ok(Self {
            rx,
            tx,
            fill,
            comp,
            fd,
            area,
            umem_id: umem.id(),
            ifindex,
            queue_id,
            zero_copy,
            counters: XskCounters::default(),
        })
    }

    /// The socket's file descriptor, for `poll`/`epoll` and for
    /// [`XdpAttachment::register_socket`](crate::xdp::XdpAttachment::register_socket).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Interface index the socket is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Queue the socket is bound to.
    pub fn queue_id(&self) -> u32 {
        self.queue_id
    }

    /// Whether the bind ended up in zero-copy mode (also in [`options`](Self::options)).
    pub fn is_zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Takes up to `out.len()` received descriptors. `desc.addr` points at the frame data
    /// (inside the frame, after the RX headroom); the frame now belongs to the caller, who
    /// transmits it (on any socket of the same UMEM) or frees it to the pool.
    pub fn rx_burst(&mut self, out: &mut [XdpDesc]) -> usize {
        let n = self.rx.consume(out);
        self.counters.received += n as u64;
        n
    }

    /// Lends frames to the kernel for receiving. Returns how many of `addrs` (a prefix) were
    /// queued; the caller keeps the rest. Stops early at an address outside the UMEM.
    pub fn fill(&mut self, addrs: &[u64]) -> usize {
        let len = self.area.len();
        let valid = addrs.iter().position(|&a| a >= len).unwrap_or(addrs.len());
        let n = self.fill.produce(&addrs[..valid]);
        self.counters.filled += n as u64;
        n
    }

    /// Free slots on the fill ring.
    pub fn fill_free(&self) -> u32 {
        self.fill.prod_free_now()
    }

    /// Queues descriptors for transmission. Returns how many (a prefix of `descs`) were queued;
    /// the caller keeps the rest (and frees them or retries). Stops early at a descriptor that
    /// does not lie inside one frame or that has options set ([`Umem::is_valid_desc`]): the
    /// kernel would drop such a descriptor without completing its frame.
    ///
    /// Queued frames are sent when the kernel is kicked: call [`kick_tx`](Self::kick_tx) after a
    /// burst, and again while [`tx_pending`](Self::tx_pending) is non-zero.
    pub fn tx_burst(&mut self, descs: &[XdpDesc]) -> usize {
        let area = &self.area;
        let valid = descs
            .iter()
            .position(|d| !(d.len > 0 && d.options == 0 && area.range_ok(d.addr, u64::from(d.len))))
            .unwrap_or(descs.len());
        let n = self.tx.produce(&descs[..valid]);
        self.counters.transmitted += n as u64;
        n
    }

    /// Descriptors on the TX ring that the kernel has not taken yet.
    pub fn tx_pending(&self) -> u32 {
        self.tx.prod_outstanding()
    }

    /// Whether the kernel wants a `sendto` to process the TX ring (`XDP_RING_NEED_WAKEUP` on
    /// the TX ring). Always true in copy mode.
    pub fn tx_needs_wakeup(&self) -> bool {
        self.tx.needs_wakeup()
    }

    /// Kicks the kernel to send what is on the TX ring, if the TX ring asks for it. Returns
    /// whether a syscall was made.
    ///
    /// In copy mode the kernel sends a limited batch per kick (32 frames by default) and
    /// answers `EAGAIN` when more is left, so the caller kicks again while
    /// [`tx_pending`](Self::tx_pending) is non-zero. `EAGAIN`, `EBUSY` (the device dropped a
    /// frame; it is still completed) and `ENOBUFS` are not errors.
    pub fn kick_tx(&self) -> io::Result<bool> {
        if !self.tx.needs_wakeup() {
            return Ok(false);
        }
        transient_ok(sys::kick(self.fd.as_fd())).map(|()| true)
    }

    /// Whether the kernel asks for a wakeup to keep filling the RX ring
    /// (`XDP_RING_NEED_WAKEUP` on the fill ring; only zero-copy drivers set it).
    pub fn rx_needs_wakeup(&self) -> bool {
        self.fill.needs_wakeup()
    }

    /// Wakes the driver to receive (a non-blocking `recvfrom`, as the kernel documentation
    /// allows besides `poll`), if the fill ring asks for it. Returns whether a syscall was made.
    pub fn wake_rx(&self) -> io::Result<bool> {
        if !self.fill.needs_wakeup() {
            return Ok(false);
        }
        transient_ok(sys::wake(self.fd.as_fd())).map(|()| true)
    }

    /// Turns on busy polling for this socket (`SO_PREFER_BUSY_POLL`, `SO_BUSY_POLL`
    /// `usecs`, `SO_BUSY_POLL_BUDGET` `budget`): [`XskSocket::busy_poll`] then runs the
    /// receive processing of the socket's queue (the driver's NAPI poll: XDP program,
    /// redirect, and in copy mode the copy into the UMEM) in the calling thread, instead of
    /// in softirq context wherever the kernel schedules it (on veth: the sender's CPU). The
    /// device keeps its NAPI context for the busy poller when its `napi_defer_hard_irqs` and
    /// `gro_flush_timeout` are non-zero. Needs Linux 5.11+ (and CAP_NET_ADMIN for a budget
    /// above `net.core.busy_poll_budget`'s default).
    pub fn enable_busy_poll(&self, usecs: u32, budget: u16) -> io::Result<()> {
        // Linux's values (include/uapi/asm-generic/socket.h), not in every libc release.
        const SO_BUSY_POLL: libc::c_int = 46;
        const SO_PREFER_BUSY_POLL: libc::c_int = 69;
        const SO_BUSY_POLL_BUDGET: libc::c_int = 70;
        let fd = self.fd.as_fd();
        sys::set_socket_opt(fd, SO_PREFER_BUSY_POLL, 1)?;
        sys::set_socket_opt(fd, SO_BUSY_POLL, usecs.min(i32::MAX as u32) as libc::c_int)?;
        sys::set_socket_opt(fd, SO_BUSY_POLL_BUDGET, libc::c_int::from(budget))
    }

    /// One busy poll of the socket's queue (`recvfrom(MSG_DONTWAIT)`; see
    /// [`XskSocket::enable_busy_poll`]). Errors that only say "nothing to do" are not errors.
    pub fn busy_poll(&self) -> io::Result<()> {
        transient_ok(sys::wake(self.fd.as_fd()))
    }

    /// Takes up to `out.len()` addresses of transmitted frames (as they were in the TX
    /// descriptors, so possibly inside a frame: round down with [`Umem::frame_base`] or let
    /// [`FramePool::free`] do it).
    pub fn complete(&mut self, out: &mut [u64]) -> usize {
        let n = self.comp.consume(out);
        self.counters.completed += n as u64;
        n
    }

    /// Entries waiting on the RX ring.
    pub fn rx_ready(&self) -> u32 {
        self.rx.cons_ready_now()
    }

    /// Entries waiting on the completion ring.
    pub fn completions_ready(&self) -> u32 {
        self.comp.cons_ready_now()
    }

    /// The kernel's counters for this socket.
    pub fn statistics(&self) -> io::Result<XskStats> {
        let s: libc::xdp_statistics = sys::get_xdp_opt(self.fd.as_fd(), libc::XDP_STATISTICS)?;
        Ok(XskStats {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: s.tx_ring_empty_descs,
        })
    }

    /// The kernel's view of the socket's options.
    pub fn options(&self) -> io::Result<XskOptions> {
        let o: libc::xdp_options = sys::get_xdp_opt(self.fd.as_fd(), libc::XDP_OPTIONS)?;
        Ok(XskOptions {
            zero_copy: o.flags & libc::XDP_OPTIONS_ZEROCOPY != 0,
        })
    }

    /// Frames moved through this socket so far.
    pub fn counters(&self) -> XskCounters {
        self.counters
    }

    /// Frames the kernel holds on behalf of this socket: lent on the fill ring and not yet
    /// received, plus queued for TX and not yet completed. Exact at any time (it counts what
    /// this side did, not what the rings show, so frames the kernel took off the fill ring but
    /// has not delivered yet are included).
    pub fn frames_in_kernel(&self) -> u64 {
        let c = &self.counters;
        c.filled.saturating_sub(c.received) + c.transmitted.saturating_sub(c.completed)
    }

    /// Ring sizes (fill, completion, RX, TX).
    pub fn ring_sizes(&self) -> (u32, u32, u32, u32) {
        (
            self.fill.size(),
            self.comp.size(),
            self.rx.size(),
            self.tx.size(),
        )
    }

    pub(super) fn umem_id(&self) -> usize {
        self.umem_id
    }

    /// Closes the socket and returns its frames to `pool`: everything on the RX and
    /// completion rings, and what the kernel has not yet taken from the fill and TX rings.
    /// Frames the kernel holds elsewhere (taken from the fill ring and not delivered) cannot be
    /// recovered: they are removed from the pool's total and reported as `lost`.
    ///
    /// Unregister the socket from the XDP program first
    /// ([`XdpAttachment::unregister_socket`](crate::xdp::XdpAttachment::unregister_socket)),
    /// or frames arriving meanwhile end up lost. Until this returns the kernel may still write
    /// into reclaimed frames; nothing can allocate them from `pool` before it returns.
    pub fn close(mut self, pool: &mut FramePool) -> CloseReport {
        debug_assert_eq!(pool.umem_id(), self.umem_id, "pool of another UMEM");
        // Frames the kernel side holds for this socket, rings included.
        let owned = self.frames_in_kernel();
        let frame_mask = !(u64::from(self.area.frame_size) - 1);
        let mut back: Vec<u64> = Vec::new();
        let mut descs = [XdpDesc::default(); 64];
        loop {
            let n = self.rx_burst(&mut descs);
            back.extend(descs[..n].iter().map(|d| d.addr & frame_mask));
            if n == 0 {
                break;
            }
        }
        let mut addrs = [0u64; 64];
        loop {
            let n = self.complete(&mut addrs);
            back.extend(addrs[..n].iter().map(|a| a & frame_mask));
            if n == 0 {
                break;
            }
        }
        self.fill.unconsumed(|a| back.push(a & frame_mask));
        self.tx.unconsumed(|d| back.push(d.addr & frame_mask));
        // While traffic still arrives, the kernel can publish a received frame on the RX ring
        // a moment before it publishes the fill ring's consumer index, so one frame can be seen
        // in both places: each frame is returned once.
        back.sort_unstable();
        back.dedup();
        let area_len = self.area.len();
        back.retain(|&a| a < area_len);
        for &a in &back {
            pool.free(a);
        }
        let report = CloseReport {
            reclaimed: back.len() as u64,
            lost: owned.saturating_sub(back.len() as u64),
        };
        pool.retire(report.lost);
        // Rings are unmapped, then the socket is closed (unbinding it; the kernel waits for
        // in-flight use of the socket before the close returns).
        drop(self);
        report
    }
}

/// A wakeup syscall's result with the answers that only mean "busy, try again" (`EAGAIN`,
/// `EBUSY`, `ENOBUFS`) taken as success: the next loop iteration kicks again.
fn transient_ok(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS)
            ) =>
        {
            Ok(())
        }
        other => other,
    }
}

impl AsFd for XskSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for XskSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
