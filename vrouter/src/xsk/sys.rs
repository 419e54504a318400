//! Thin wrappers over the syscalls AF_XDP needs. Every `unsafe` block of the port layer that is
//! not about ring or frame memory lives here.

use std::ffi::CString;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::{self, NonNull};

/// Marker for the plain-old-data kernel structs passed through `{get,set}sockopt`: only
/// integer fields, every bit pattern valid, no padding the kernel could leak into.
///
/// # Safety
/// Implementors must be `repr(C)` structs (or integers) made of integers only.
pub(super) unsafe trait SockOpt: Copy {}

// SAFETY: integer.
unsafe impl SockOpt for libc::c_int {}
// SAFETY: the libc mirrors of the kernel's if_xdp.h structs are repr(C) and made of u32/u64.
unsafe impl SockOpt for libc::xdp_umem_reg {}
// SAFETY: as above.
unsafe impl SockOpt for libc::xdp_mmap_offsets {}
// SAFETY: as above.
unsafe impl SockOpt for libc::xdp_statistics {}
// SAFETY: as above.
unsafe impl SockOpt for libc::xdp_options {}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0)` in the calling thread's network namespace.
pub(super) fn xdp_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; a non-negative return is a new fd we own.
    let fd = cvt(unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `setsockopt(fd, SOL_XDP, opt, val)`.
pub(super) fn set_xdp_opt<T: SockOpt>(
    fd: BorrowedFd<'_>,
    opt: libc::c_int,
    val: &T,
) -> io::Result<()> {
    set_opt(fd, libc::SOL_XDP, opt, val)
}

/// `setsockopt(fd, SOL_SOCKET, opt, val)`.
pub(super) fn set_socket_opt(
    fd: BorrowedFd<'_>,
    opt: libc::c_int,
    val: libc::c_int,
) -> io::Result<()> {
    set_opt(fd, libc::SOL_SOCKET, opt, &val)
}

fn set_opt<T: SockOpt>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    opt: libc::c_int,
    val: &T,
) -> io::Result<()> {
    // SAFETY: `val` points to a live `T` of exactly the length passed; the kernel only reads it.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            ptr::from_ref(val).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// `getsockopt(fd, SOL_XDP, opt)`; fails unless the kernel fills the whole `T` (a shorter
/// answer means an older struct version that this code does not speak).
pub(super) fn get_xdp_opt<T: SockOpt>(fd: BorrowedFd<'_>, opt: libc::c_int) -> io::Result<T> {
    let mut val = mem::MaybeUninit::<T>::zeroed();
    let mut len = mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `val` is writable for `len` bytes and `len` is a valid socklen_t; the kernel
    // writes at most `len` bytes and reports how many.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            opt,
            val.as_mut_ptr().cast(),
            &mut len,
        )
    })?;
    if len as usize != mem::size_of::<T>() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "getsockopt(SOL_XDP, {opt}) returned {len} bytes, expected {}",
                mem::size_of::<T>()
            ),
        ));
    }
    // SAFETY: zero-initialised and then (partly) written by the kernel; `T: SockOpt` means
    // every bit pattern, zero included, is a valid `T`.
    Ok(unsafe { val.assume_init() })
}

/// `bind(fd, sockaddr_xdp)`.
pub(super) fn bind_xdp(fd: BorrowedFd<'_>, addr: &libc::sockaddr_xdp) -> io::Result<()> {
    // SAFETY: `addr` is a live sockaddr_xdp and the length passed is its size.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            ptr::from_ref(addr).cast(),
            mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// `sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0)`: the TX kick.
pub(super) fn kick(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: a zero-length send with null buffer and address; the kernel reads nothing.
    let r = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            ptr::null(),
            0,
            libc::MSG_DONTWAIT,
            ptr::null(),
            0,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `recvfrom(fd, NULL, 0, MSG_DONTWAIT, NULL, NULL)`: the RX (fill ring) wakeup.
pub(super) fn wake(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: a zero-length receive with null buffer and address; the kernel writes nothing.
    let r = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `if_nametoindex(name)` in the calling thread's network namespace.
pub(super) fn if_index(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(idx)
    }
}

/// An owned memory mapping, unmapped on drop.
///
/// It hands out only a raw pointer; whoever dereferences it upholds Rust's aliasing rules.
#[derive(Debug)]
pub(super) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a mapping is plain memory owned by this value; it has no thread affinity, and the
// raw pointer it exposes can only be used through `unsafe` code that takes care of aliasing.
unsafe impl Send for Mapping {}
// SAFETY: `&Mapping` only gives out the pointer and length (no interior mutability).
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Private anonymous memory of `len` bytes (page-aligned), pre-faulted, and not inherited
    /// by children after fork (the kernel pins UMEM pages; a copy-on-write split after fork
    /// would leave the parent writing to pages the kernel does not use).
    pub(super) fn anonymous(len: usize) -> io::Result<Self> {
        // SAFETY: a fresh anonymous mapping at an address the kernel picks; no existing memory
        // is affected.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        let m = Self::from_mmap(p, len)?;
        // SAFETY: advice on the range we just mapped; failure is harmless and ignored.
        unsafe { libc::madvise(m.ptr.as_ptr().cast(), len, libc::MADV_DONTFORK) };
        Ok(m)
    }

    /// A shared mapping of `len` bytes of `fd` at `offset` (an AF_XDP ring).
    pub(super) fn socket(fd: BorrowedFd<'_>, len: usize, offset: libc::off_t) -> io::Result<Self> {
        // SAFETY: a fresh shared mapping of the socket's ring at an address the kernel picks; no
        // existing memory is affected.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                offset,
            )
        };
        Self::from_mmap(p, len)
    }

    fn from_mmap(p: *mut libc::c_void, len: usize) -> io::Result<Self> {
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(Self { ptr, len })
    }

    pub(super) fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping created by `mmap` and owned by this value; no
        // reference into it outlives the value (users hold an `Arc` to its owner or are
        // dropped first).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Moves the calling thread into the network namespace at `path`.
pub(super) fn setns_net(path: &str) -> io::Result<()> {
    let f = std::fs::File::open(path)?;
    // SAFETY: setns(2) on a namespace fd we hold open; it affects only the calling thread.
    cvt(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) })?;
    Ok(())
}
