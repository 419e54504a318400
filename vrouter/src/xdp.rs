//! XDP program loading: the program that hands a port's frames to its AF_XDP sockets.
//!
//! # What the program does
//! `xdp/vrouter_xdp.c` (compiled by `build.rs` with clang, embedded in the binary) runs on every
//! frame a port receives, before the kernel allocates anything for it:
//!
//! - the node's own traffic goes to the kernel (`XDP_PASS`): IPv4 or IPv6 (with or without one
//!   802.1Q/802.1ad tag) whose destination address is in the `host_addrs` map; ARP whose target
//!   protocol address is in `host_addrs`; ICMPv6 neighbor solicitations and advertisements whose
//!   target address is in `host_addrs` (only when the ICMPv6 header directly follows the IPv6
//!   header, which is how every stack sends them);
//! - everything else is redirected to the AF_XDP socket registered for the frame's RX queue in
//!   `xsks_map` (`bpf_redirect_map(&xsks_map, rx_queue_index, XDP_PASS)`); a queue without a
//!   socket falls back to the kernel, so attaching the program before the sockets exist does not
//!   black-hole the interface.
//!
//! This is how an uplink shared by the node and the vRouter keeps working: add the node's
//! addresses with [`XdpAttachment::add_host_addr`] and its SSH, kubelet, BGP, ARP and neighbor
//! discovery stay with the kernel, while the overlay and pod traffic goes to the dataplane.
//!
//! # Decisions and limitations
//! - Broadcast and multicast that is not addressed to a host address (DHCP replies, IPv6 router
//!   advertisements, MLD, neighbor solicitations for other targets) goes to the dataplane. If the
//!   host needs it, the dataplane's exception path must hand it over.
//! - IPv6 extension headers before ICMPv6 are not walked: an NS/NA behind an extension header
//!   goes to the dataplane (unless its IPv6 destination is a host address).
//! - Keys of `host_addrs` are 16 bytes; IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`),
//!   so `add_host_addr` of `10.0.0.1` and of `::ffff:10.0.0.1` are the same entry.
//! - At most [`MAX_QUEUES`] queues per interface (size of `xsks_map`) and
//!   [`MAX_HOST_ADDRS`] host addresses per attachment.
//! - The program is attached through a BPF link (`bpf_link_create`), which the kernel detaches
//!   when the last file descriptor of the link is closed: when the [`XdpAttachment`] is dropped
//!   or the process dies. aya falls back to the legacy netlink attach when the kernel rejects
//!   link creation with `EINVAL`; such an attachment is still detached on drop but would
//!   survive a crash. [`XdpAttachment::is_bpf_link`] tells which one happened (a BPF link on
//!   the kernels this project supports).
//! - Each attachment loads its own copy of the program and maps (one per interface), so host
//!   addresses are per interface.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use aya::maps::{HashMap, MapData, MapError, XskMap};
use aya::programs::{ProgramError, Xdp};
use aya::{Ebpf, EbpfError};

/// Capacity of `xsks_map`: the highest usable queue id is `MAX_QUEUES - 1`.
pub const MAX_QUEUES: u32 = 64;
/// Capacity of `host_addrs`.
pub const MAX_HOST_ADDRS: u32 = 1024;

const PROGRAM_NAME: &str = "vrouter_xdp";
const XSKS_MAP: &str = "xsks_map";
const HOST_ADDRS_MAP: &str = "host_addrs";

/// The compiled program (ELF object with BTF), built by `build.rs`.
static PROGRAM_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vrouter_xdp.o"));

/// How to attach the program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum XdpMode {
    /// Native (driver) mode if the driver supports it, generic (skb) mode otherwise.
    #[default]
    Auto,
    /// Native (driver) mode only (`XDP_FLAGS_DRV_MODE`).
    Native,
    /// Generic (skb) mode only (`XDP_FLAGS_SKB_MODE`): slower, works on every device.
    Generic,
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// The embedded object could not be loaded (parse, BTF, map creation).
    #[error("loading the XDP object: {0}")]
    Load(#[from] EbpfError),
    /// The object lacks a program or map this module expects (build mismatch).
    #[error("the XDP object has no {0}")]
    Missing(&'static str),
    /// Verifying, loading or attaching the program failed.
    #[error("XDP program on {ifname} ({mode:?} mode): {source}")]
    Program {
        /// Interface name.
        ifname: String,
        /// Mode that was tried.
        mode: XdpMode,
        /// aya's error.
        #[source]
        source: ProgramError,
    },
    /// A map update failed.
    #[error("updating {map}: {source}")]
    Map {
        /// Map name.
        map: &'static str,
        /// aya's error.
        #[source]
        source: MapError,
    },
    /// The queue id does not fit `xsks_map`.
    #[error("queue {0} is out of range (the program supports queues 0..{MAX_QUEUES})")]
    QueueOutOfRange(u32),
}

/// The program attached to one interface, with its maps. Detaches when dropped.
pub struct XdpAttachment {
    // Field order matters for drop: the maps first, then the `Ebpf` that owns the program and
    // its link (dropping it detaches the program). It is only kept alive, never read.
    xsks: XskMap<MapData>,
    host_addrs: HashMap<MapData, [u8; 16], u8>,
    _ebpf: Ebpf,
    ifname: String,
    mode: XdpMode,
    bpf_link: bool,
}

impl std::fmt::Debug for XdpAttachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpAttachment")
            .field("ifname", &self.ifname)
            .field("mode", &self.mode)
            .field("bpf_link", &self.bpf_link)
            .finish_non_exhaustive()
    }
}

impl XdpAttachment {
    /// Loads a fresh copy of the program and its maps and attaches it to `ifname` (an interface
    /// of the calling thread's network namespace).
    ///
    /// `Auto` tries native mode first and falls back to generic mode on any error of the native
    /// attach; [`attached_mode`](Self::attached_mode) tells which one is in place.
    pub fn attach(ifname: &str, mode: XdpMode) -> Result<Self, XdpError> {
        let mut ebpf = Ebpf::load(PROGRAM_OBJECT)?;
        let xsks = ebpf.take_map(XSKS_MAP).ok_or(XdpError::Missing(XSKS_MAP))?;
        let xsks = XskMap::try_from(xsks).map_err(|source| XdpError::Map {
            map: XSKS_MAP,
            source,
        })?;
        let hosts = ebpf
            .take_map(HOST_ADDRS_MAP)
            .ok_or(XdpError::Missing(HOST_ADDRS_MAP))?;
        let host_addrs = HashMap::try_from(hosts).map_err(|source| XdpError::Map {
            map: HOST_ADDRS_MAP,
            source,
        })?;

        let prog_err = |mode, source| XdpError::Program {
            ifname: ifname.to_string(),
            mode,
            source,
        };
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(XdpError::Missing(PROGRAM_NAME))?
            .try_into()
            .map_err(|e| prog_err(mode, e))?;
        program.load().map_err(|e| prog_err(mode, e))?;

        let (link_id, attached) = match mode {
            XdpMode::Native => (
                program
                    .attach(ifname, aya::programs::XdpMode::Driver)
                    .map_err(|e| prog_err(mode, e))?,
                XdpMode::Native,
            ),
            XdpMode::Generic => (
                program
                    .attach(ifname, aya::programs::XdpMode::Skb)
                    .map_err(|e| prog_err(mode, e))?,
                XdpMode::Generic,
            ),
            XdpMode::Auto => match program.attach(ifname, aya::programs::XdpMode::Driver) {
                Ok(id) => (id, XdpMode::Native),
                Err(ProgramError::UnknownInterface { name }) => {
                    return Err(prog_err(mode, ProgramError::UnknownInterface { name }));
                }
                Err(_) => (
                    program
                        .attach(ifname, aya::programs::XdpMode::Skb)
                        .map_err(|e| prog_err(XdpMode::Generic, e))?,
                    XdpMode::Generic,
                ),
            },
        };
        // aya does not expose the link kind; its Debug form names it (`FdLinkId` for a BPF
        // link, `NlLinkId` for the netlink fallback).
        let bpf_link = format!("{link_id:?}").contains("FdLink");

        Ok(Self {
            xsks,
            host_addrs,
            _ebpf: ebpf,
            ifname: ifname.to_string(),
            mode: attached,
            bpf_link,
        })
    }

    /// The interface this attachment is on.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The mode the program was attached in: `Native` or `Generic` (never `Auto`).
    pub fn attached_mode(&self) -> XdpMode {
        self.mode
    }

    /// True when the program is attached through a BPF link, which the kernel removes when the
    /// process dies; false for aya's netlink fallback, which would outlive a crash.
    pub fn is_bpf_link(&self) -> bool {
        self.bpf_link
    }

    /// Directs frames received on `queue_id` to the AF_XDP socket `fd` (which must be bound to
    /// this interface and queue, or the kernel drops the redirected frames).
    pub fn register_socket(&mut self, queue_id: u32, fd: BorrowedFd<'_>) -> Result<(), XdpError> {
        if queue_id >= MAX_QUEUES {
            return Err(XdpError::QueueOutOfRange(queue_id));
        }
        self.xsks
            .set(queue_id, fd.as_raw_fd(), 0)
            .map_err(|source| XdpError::Map {
                map: XSKS_MAP,
                source,
            })
    }

    /// Removes the socket of `queue_id`: its frames go to the kernel again. Removing an empty
    /// slot is not an error.
    pub fn unregister_socket(&mut self, queue_id: u32) -> Result<(), XdpError> {
        if queue_id >= MAX_QUEUES {
            return Err(XdpError::QueueOutOfRange(queue_id));
        }
        match self.xsks.unset(queue_id) {
            Ok(()) => Ok(()),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                Ok(())
            }
            Err(source) => Err(XdpError::Map {
                map: XSKS_MAP,
                source,
            }),
        }
    }

    /// Passes traffic for `addr` (and ARP / neighbor discovery for it) to the kernel.
    pub fn add_host_addr(&mut self, addr: IpAddr) -> Result<(), XdpError> {
        self.host_addrs
            .insert(host_key(addr), 1, 0)
            .map_err(|source| XdpError::Map {
                map: HOST_ADDRS_MAP,
                source,
            })
    }

    /// Stops passing traffic for `addr` to the kernel. Removing an absent address is not an
    /// error.
    pub fn remove_host_addr(&mut self, addr: IpAddr) -> Result<(), XdpError> {
        match self.host_addrs.remove(&host_key(addr)) {
            Ok(()) => Ok(()),
            Err(MapError::KeyNotFound) => Ok(()),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                Ok(())
            }
            Err(source) => Err(XdpError::Map {
                map: HOST_ADDRS_MAP,
                source,
            }),
        }
    }

    /// The host addresses currently in the map (IPv4-mapped keys are returned as IPv4).
    pub fn host_addrs(&self) -> Vec<IpAddr> {
        self.host_addrs
            .keys()
            .filter_map(Result::ok)
            .map(|k| {
                let v6 = std::net::Ipv6Addr::from(k);
                match v6.to_ipv4_mapped() {
                    Some(v4) => IpAddr::V4(v4),
                    None => IpAddr::V6(v6),
                }
            })
            .collect()
    }
}

/// The 16-byte key of `addr` in `host_addrs` (IPv4 as `::ffff:a.b.c.d`).
pub fn host_key(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_key_maps_ipv4() {
        let k = host_key("10.1.2.3".parse().unwrap());
        assert_eq!(k, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3]);
        let k6 = host_key("::ffff:10.1.2.3".parse().unwrap());
        assert_eq!(k, k6);
        let k = host_key("2001:db8::1".parse().unwrap());
        assert_eq!(&k[..4], &[0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(k[15], 1);
    }

    #[test]
    fn object_is_embedded_with_expected_names() {
        // No kernel needed: the ELF string table names the program and both maps.
        for name in [PROGRAM_NAME, XSKS_MAP, HOST_ADDRS_MAP] {
            let needle = name.as_bytes();
            assert!(
                PROGRAM_OBJECT.windows(needle.len()).any(|w| w == needle),
                "{name} missing from the embedded object"
            );
        }
    }
}
