//! AF_XDP ports: UMEM, sockets with shared UMEM, rings, and the per-worker frame pool.
//!
//! Hand-written on `libc` (no crate with a permissive licence offers shared UMEM across
//! devices plus `need_wakeup`; see `shared/notes/afxdp.md`). All `unsafe` of the workspace is
//! in this module, each block with a `// SAFETY:` comment; the public API is safe.
//!
//! # Shape
//! - [`Umem`]: one anonymous mapping of equal frames per worker. The first [`XskSocket`] created
//!   on it registers it (`XDP_UMEM_REG`); every further socket binds with `XDP_SHARED_UMEM`
//!   naming a bound socket of the same UMEM, on any interface and queue. Each socket has its own
//!   fill and completion rings (set before bind), which is what the kernel requires to share a
//!   UMEM across queues and devices (Linux 5.10+).
//! - [`XskSocket`]: RX/TX/fill/completion rings with cached indices and acquire/release
//!   ordering; burst operations; `need_wakeup`-aware kicks; kernel statistics.
//! - [`FramePool`]: the worker's free list of frame addresses, with an accounting invariant
//!   that catches leaks and double frees.
//! - [`run_in_netns`]: create sockets and attachments inside another network namespace.
//!
//! A frame received on port A goes out on port B by passing its [`XdpDesc`] to B's
//! [`XskSocket::tx_burst`]; its completion arrives on B's completion ring. Nothing is copied in
//! userspace (in copy mode the kernel copies once on receive and once on transmit).
//!
//! # Decisions and limitations
//! - Aligned chunk mode only (frames of 2048 or 4096 bytes); no multi-buffer (`XDP_USE_SG`)
//!   frames: a frame longer than [`Umem::rx_frame_capacity`] is dropped by the kernel.
//! - A UMEM is either in copy or in zero-copy mode, decided by its first bind
//!   ([`BindMode::Auto`] tries zero-copy first); later sockets inherit it. A zero-copy UMEM
//!   cannot take a socket on a device without zero-copy support (veth): use separate UMEMs.
//! - Always binds with `XDP_USE_NEED_WAKEUP`. In copy mode the kernel keeps the TX ring's
//!   need-wakeup flag set, so every TX burst costs a `sendto`, and each `sendto` sends a bounded
//!   batch (32 frames by default): kick again while [`XskSocket::tx_pending`] is non-zero.
//! - Frames the kernel took off a fill ring but has not delivered are unrecoverable when their
//!   socket closes; [`XskSocket::close`] counts them as lost instead of leaking them silently.

mod netns;
mod pool;
mod ring;
mod socket;
mod sys;
mod umem;

pub use netns::run_in_netns;
pub use pool::{FrameLeak, FramePool};
pub use socket::{BindMode, CloseReport, XskConfig, XskCounters, XskOptions, XskSocket, XskStats};
pub use umem::{Umem, UmemConfig};

/// Headroom the kernel reserves in front of received data in every frame (`XDP_PACKET_HEADROOM`).
pub const XDP_PACKET_HEADROOM: u32 = 256;

/// A descriptor on the RX and TX rings (`struct xdp_desc`): a frame address in the UMEM (may
/// point inside the frame), a length, and options (0; multi-buffer flags are not used).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct XdpDesc {
    /// Byte offset of the data in the UMEM.
    pub addr: u64,
    /// Length of the data.
    pub len: u32,
    /// Descriptor options (`XDP_PKT_CONTD`...); always 0 here.
    pub options: u32,
}

const _: () = assert!(std::mem::size_of::<XdpDesc>() == std::mem::size_of::<libc::xdp_desc>());
const _: () = assert!(std::mem::align_of::<XdpDesc>() == std::mem::align_of::<libc::xdp_desc>());

/// Errors of the AF_XDP layer.
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    /// A syscall failed.
    #[error("{op}: {source}")]
    Sys {
        /// What was being done.
        op: &'static str,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// The interface does not exist in the calling thread's network namespace.
    #[error("no interface {name:?} in this network namespace: {source}")]
    NoSuchInterface {
        /// Interface name.
        name: String,
        /// The lookup error.
        #[source]
        source: std::io::Error,
    },
    /// A size or shape is not acceptable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The requested bind mode differs from the mode of the UMEM's first socket.
    #[error("bind mode {requested:?} requested, but the UMEM is bound in {} mode", if *umem_zero_copy { "zero-copy" } else { "copy" })]
    ModeMismatch {
        /// Requested mode.
        requested: BindMode,
        /// Mode of the UMEM.
        umem_zero_copy: bool,
    },
}
