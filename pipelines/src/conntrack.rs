//! Connection tracking: the per-worker table of connections that NAT (masquerade, Service
//! load balancing) needs, in the manner of netfilter's conntrack but built for a polling
//! dataplane: bounded, preallocated, no locks, no timers, no full scans on the packet path.
//!
//! # Model
//! A connection has two tuples ([`FlowKey`]s): the *original* one, as the initiator sent its
//! first packet, and the *reply* one, what the answer looks like on the wire: source = the
//! translated destination, destination = the translated source, ports swapped accordingly.
//! Both tuples are in one hash index, so a lookup of either finds the connection and tells
//! the packet's [`Direction`]. The NAT of a connection is implied by its tuples (as in
//! netfilter): a packet of direction `d` leaves with the tuple [`ConnTable::translated`]
//! gives, the other direction's tuple inverted. [`Nat::reply_tuple`] builds the reply tuple
//! from the original one and the translations.
//!
//! Tuple conventions follow the pipeline's flow keys: TCP and UDP carry ports; ICMP and
//! ICMPv6 echo carry the echo identifier in `src_port` (and 0 in `dst_port`) in *both*
//! directions, so inverting an ICMP tuple swaps the addresses and keeps the identifier, and
//! the "port" a source translation gives an ICMP connection is its identifier; every other
//! protocol has ports 0, and translated ports are ignored for it.
//!
//! # Contract
//! - [`ConnTable::lookup`] of a tuple returns the connection and direction, or `None`;
//!   expired connections are absent (and are reclaimed when a lookup meets them).
//!   [`ConnTable::update`] accounts one packet: state transition, last-seen time, per-direction
//!   packets and bytes. [`ConnTable::create`] admits a connection from its first packet.
//! - A [`ConnId`] stays valid until its connection is removed (by [`ConnTable::remove`],
//!   [`ConnTable::flush`], expiry seen by a lookup, create or [`ConnTable::expire`], or
//!   eviction by create). It carries a 16-bit generation: using a stale id is detected (the
//!   call returns `None`/`false`/[`UpdateOutcome::Unknown`]) unless its slot was reused 65,536
//!   times since, in which case the call acts on the slot's current connection. Nothing
//!   panics, whatever the id, the tuples or the clock.
//! - Time is a caller-provided `u32` millisecond clock that may wrap (as in the flow cache).
//!   Ages are `now - then` in wrapping arithmetic read as signed: time going backwards makes
//!   an age 0, never an expiry; an age above 2^31 ms (24.8 days) reads as 0 too, so timeouts
//!   are capped at 2^31 - 1 ms and the caller must sweep ([`ConnTable::expire`]) the table at
//!   least once every 24 days (any sensible sweep rate does) — and ages reported by
//!   [`ConnTable::iter`] are modulo that.
//! - Bounded: `capacity` connections, chosen at construction, memory allocated once. When
//!   the table is full, [`ConnTable::create`] looks at the next [`EVICTION_CANDIDATES`]
//!   slots of a rotating cursor: it reclaims the first expired connection it meets; failing
//!   that it evicts the one idle longest among the embryonic (TCP `SYN_SENT`/`SYN_RECV`, any
//!   other protocol never replied) and closing (TCP `FIN_WAIT` to `CLOSE`) candidates;
//!   failing that it refuses with [`CreateError::Full`]. Established TCP and replied
//!   UDP/ICMP/other connections are never evicted. Every outcome is counted.
//! - Expiry never scans the table on the packet path: lookups treat expired connections as
//!   absent, and the worker calls [`ConnTable::expire`] periodically with a budget of slots
//!   to visit (a rotating cursor: a full pass takes `capacity / budget` calls; an expired
//!   connection lingers at most that long, taking room but never matching).
//! - [`ConnTable::allocate_port`] finds a source port (ICMP: identifier) that makes a reply
//!   tuple no connection in the table uses, probing at most [`MAX_PORT_PROBES`] candidates.
//!   Connections expired but not yet reclaimed still hold their tuples (allocation is `&self`
//!   and never reuses a port a connection in the table holds).
//! - One table per worker, nothing shared or locked. For NAT both directions of a connection
//!   must reach the same worker (the dataplane steers the reply by its translated port, or
//!   the hardware's RSS is symmetric); that steering is the integrator's part.
//!
//! # TCP state machine
//! netfilter's table (`nf_conntrack_proto_tcp.c`) driven by the SYN/ACK/FIN/RST flags seen
//! in each direction, simplified:
//! - No sequence-number or window tracking: any RST closes (`CLOSE`, 10 s), where Linux
//!   checks the RST is in window. An off-path attacker who knows a connection's tuples can
//!   therefore move its entry to `CLOSE`: the endpoints ignore the forged RST and keep
//!   talking, and their packets keep the entry alive, but a pause of more than 10 s then
//!   loses it (instead of 5 days).
//! - No `SYN_SENT2`: a SYN in the reply direction while `SYN_SENT` (simultaneous open) goes
//!   to `SYN_RECV`; the original side's ACK then establishes, as in Linux.
//! - FIN and ACK are direction-aware where Linux's table is not: a FIN retransmitted by a
//!   side that already sent one leaves the state as it is (Linux moves `FIN_WAIT` to
//!   `LAST_ACK`), and only an ACK from the side that did *not* send the FIN moves
//!   `FIN_WAIT` to `CLOSE_WAIT`.
//! - A connection is admitted by a SYN (`SYN_SENT`) or, with [`ConntrackConfig::tcp_loose`]
//!   (Linux's `nf_conntrack_tcp_loose`, on by default), by an ACK mid-stream
//!   (`ESTABLISHED`, e.g. after a restart). Anything else cannot open a connection
//!   ([`CreateError::InvalidFirstPacket`]).
//! - A SYN from the original side on a `TIME_WAIT` or `CLOSE` connection reopens it in place
//!   (`SYN_SENT`, counters and age reset, same tuples and NAT): [`UpdateOutcome::Reopened`].
//!   Linux deletes and re-creates the entry instead; a caller that wants fresh NAT (e.g. a
//!   new backend choice) removes the connection and creates it again.
//! - Packets that do not fit the state (e.g. an ACK while `SYN_SENT`) are
//!   [`UpdateOutcome::Invalid`]: counted in [`ConntrackCounters::invalid`], not in the
//!   connection, the timer not refreshed. Packets Linux ignores (e.g. a SYN on an established
//!   connection) are [`UpdateOutcome::Ignored`]: counted in the connection, timer not
//!   refreshed. The caller decides what to do with either (kube-proxy drops invalid ones).
//!
//! # Layout and memory
//! - Connections live in a dense array of 128-byte, 128-byte-aligned entries (two cache
//!   lines): both packed tuples (80 B), packets and bytes per direction (32 B), last-seen and
//!   creation times, the caller's `u32`, state, FIN flags and generation (16 B). Free entries
//!   are on a stack of `u32` indices (LIFO: a freed entry, still cached, is reused first).
//! - The index is a power-of-two array of 64-byte buckets, each with 7 slots (32-bit
//!   signature, 32-bit reference = entry index and direction) and an overflow count. Probing
//!   is linear over buckets; a bucket's overflow count is the number of slots stored past it
//!   by inserts that found it full, so a lookup stops at the first bucket whose count is 0
//!   and removal needs no tombstones (the scheme of Folly's F14). Two slots per connection,
//!   sized for a load of at most 75% (at least 37.5%).
//! - A hit reads one index line and the entry's two adjacent lines. A batch can load them
//!   for all its packets before looking any up, as the pipeline does for the flow cache (the
//!   pipeline's slow path does not do this for the connection table yet):
//!   [`ConnTable::touch`] (index line), then [`ConnTable::touch_entry`] (entry lines); for
//!   new connections [`ConnTable::touch_port`] loads the index line of the first port
//!   candidate. The sweep gathers up to 16 expired entries and loads their index lines
//!   before releasing them.
//! - Memory per connection: 128 B entry + 4 B free-list slot + 24.4 to 48.8 B of index
//!   (depending on how `capacity` rounds to a power of two) = 157 to 181 B. For 1,000,000
//!   connections: 128 MB + 4 MB + 32 MiB = 165.6 MB (158 MiB), 165.6 B per connection.
//!
//! Speed (`vrouter-perf pipeline --scenario conntrack-hit|conntrack-setup|conntrack-1m`, one
//! core of the project's 2-vCPU AMD EPYC VM, when written): `lookup_update` (lookup +
//! update + translated tuple) 58-62 ns per packet with 100,000 connections and 79-83 ns with
//! 1,000,000 — memory-bound: 12 ns when the table fits in L2 (1,024 connections), 25-29 ns
//! at 10,000 (3 MB); connection setup (lookup miss, port allocation, create, with the sweep
//! reclaiming as many) 3.1-3.4 million per second.
//!
//! # Example: masquerade
//! ```
//! use pipelines::conntrack::{ConnTable, ConntrackConfig, Direction, Nat, Translation};
//! use pipelines::conntrack::UpdateOutcome;
//! use pipelines::flow::FlowKey;
//! use pipelines::wire::TcpFlags;
//!
//! let mut table = ConnTable::new(ConntrackConfig { capacity: 1024, ..Default::default() });
//! let node = u32::from(std::net::Ipv4Addr::new(192, 0, 2, 1)) as u128;
//! let pod = u32::from(std::net::Ipv4Addr::new(10, 244, 0, 5)) as u128;
//! let server = u32::from(std::net::Ipv4Addr::new(93, 184, 216, 34)) as u128;
//! let now = 1_000; // ms
//!
//! // A SYN from the pod: no connection yet; pick a port, create.
//! let syn = FlowKey { src: pod, dst: server, vrf: 0, protocol: 6, ipv6: false,
//!                     src_port: 40000, dst_port: 443 };
//! assert!(table.lookup(&syn, now).is_none());
//! let template = Nat { src: Some(Translation { addr: node, port: 0 }), dst: None }
//!     .reply_tuple(&syn);
//! let port = table.allocate_port(&template, 1024..=65535, table.key_hash(&syn)).unwrap();
//! let nat = Nat { src: Some(Translation { addr: node, port }), dst: None };
//! let id = table.create(&syn, &nat, TcpFlags::SYN, 74, now).unwrap();
//! let out = table.translated(id, Direction::Original).unwrap(); // rewrite the SYN to this
//! assert_eq!((out.src, out.src_port, out.dst), (node, port, server));
//!
//! // The SYN/ACK arrives for the node's address and port: found as a reply.
//! let synack = FlowKey { src: server, dst: node, src_port: 443, dst_port: port, ..syn };
//! let (id, dir) = table.lookup(&synack, now + 1).unwrap();
//! assert_eq!(dir, Direction::Reply);
//! assert_eq!(table.update(id, dir, TcpFlags(0x12), 74, now + 1), UpdateOutcome::Tracked);
//! let back = table.translated(id, dir).unwrap(); // rewrite it to go back to the pod
//! assert_eq!((back.dst, back.dst_port), (pod, 40000));
//!
//! // Now and then, the worker sweeps a few slots.
//! table.expire(now + 2, 64);
//! ```
//!
//! Left out (the integrator's part or later work): ICMP errors are not connections — the
//! caller looks up the tuple embedded in the error (it finds the connection and the
//! direction of the packet the error reports on; the error travels the other way); no
//! helpers or expectations (FTP, SIP); no per-zone tables; no NAT64 (both tuples have the
//! same family and VRF).

use crate::flow::FlowKey;
use crate::hash::FlowHasher;
use crate::wire::TcpFlags;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::ops::RangeInclusive;

/// Slots per index bucket.
pub const BUCKET_SLOTS: usize = 7;
/// Slots looked at when the table is full and a connection must be created (see the module
/// docs for the policy).
pub const EVICTION_CANDIDATES: usize = 32;
/// Most candidate ports [`ConnTable::allocate_port`] tries.
pub const MAX_PORT_PROBES: u32 = 128;
/// Largest capacity (entry indices and their direction bit fit a `u32`, with room).
pub const MAX_CAPACITY: usize = 1 << 28;
/// Largest timeout, in ms: ages are read as signed 32-bit differences.
pub const MAX_TIMEOUT_MS: u32 = i32::MAX as u32;

const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;

/// Whether `protocol` is ICMP or ICMPv6 (echo identifier in `src_port`, both directions).
#[inline]
fn is_icmp(protocol: u8) -> bool {
    protocol == PROTO_ICMP || protocol == PROTO_ICMPV6
}

/// Whether keys of `protocol` carry ports (as the pipeline's flow keys do).
#[inline]
fn has_ports(protocol: u8) -> bool {
    protocol == PROTO_TCP || protocol == PROTO_UDP
}

/// Direction of a packet relative to its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Direction {
    /// From the initiator, as its first packet.
    Original = 0,
    /// From the responder, towards the initiator.
    Reply = 1,
}

impl Direction {
    /// 0 for original, 1 for reply (index of the per-direction arrays).
    #[inline]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The other direction.
    #[inline]
    pub const fn reverse(self) -> Direction {
        match self {
            Direction::Original => Direction::Reply,
            Direction::Reply => Direction::Original,
        }
    }
}

/// Inverts a tuple: addresses swapped, and ports swapped except for ICMP/ICMPv6, whose echo
/// identifier stays in `src_port` both ways.
#[inline]
pub fn invert(key: &FlowKey) -> FlowKey {
    let (src_port, dst_port) = if is_icmp(key.protocol) {
        (key.src_port, key.dst_port)
    } else {
        (key.dst_port, key.src_port)
    };
    FlowKey {
        src: key.dst,
        dst: key.src,
        src_port,
        dst_port,
        ..*key
    }
}

/// One translated endpoint: address (IPv4 in the low 32 bits, as in [`FlowKey`]) and port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Translation {
    /// New address.
    pub addr: u128,
    /// New port (ICMP: new echo identifier, source side only; ignored for protocols
    /// without ports).
    pub port: u16,
}

impl Translation {
    /// From an `IpAddr`.
    pub fn new(addr: IpAddr, port: u16) -> Self {
        Translation {
            addr: match addr {
                IpAddr::V4(a) => u32::from(a) as u128,
                IpAddr::V6(a) => u128::from(a),
            },
            port,
        }
    }
}

/// The translations a connection applies to its original direction (the reply direction
/// gets the inverse).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Nat {
    /// Source NAT (masquerade): the initiator's address and port as the responder sees them.
    pub src: Option<Translation>,
    /// Destination NAT (Service): where the original packets really go.
    pub dst: Option<Translation>,
}

impl Nat {
    /// No translation: a tracked connection whose reply tuple is the inverted original.
    pub const NONE: Nat = Nat {
        src: None,
        dst: None,
    };

    /// The original tuple after translation: what the original packets look like when they
    /// leave.
    #[inline]
    pub fn translate(&self, original: &FlowKey) -> FlowKey {
        let mut key = *original;
        if let Some(src) = self.src {
            key.src = src.addr;
            if has_ports(key.protocol) || is_icmp(key.protocol) {
                key.src_port = src.port;
            }
        }
        if let Some(dst) = self.dst {
            key.dst = dst.addr;
            if has_ports(key.protocol) {
                key.dst_port = dst.port;
            }
        }
        key
    }

    /// The reply tuple of a connection with this NAT: [`invert`] of [`Nat::translate`].
    #[inline]
    pub fn reply_tuple(&self, original: &FlowKey) -> FlowKey {
        invert(&self.translate(original))
    }

    /// The NAT implied by two tuples: a translation for each side whose address or port
    /// differs between the original tuple and the inverted reply.
    pub fn from_tuples(original: &FlowKey, reply: &FlowKey) -> Nat {
        let out = invert(reply);
        let src =
            (out.src != original.src || out.src_port != original.src_port).then_some(Translation {
                addr: out.src,
                port: out.src_port,
            });
        let dst =
            (out.dst != original.dst || out.dst_port != original.dst_port).then_some(Translation {
                addr: out.dst,
                port: out.dst_port,
            });
        Nat { src, dst }
    }
}

/// TCP connection states (netfilter's, without `SYN_SENT2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[repr(u8)]
pub enum TcpState {
    /// Before the first packet (never stored: a connection starts from its first packet).
    None = 0,
    /// SYN seen from the initiator.
    SynSent = 1,
    /// SYN/ACK seen from the responder.
    SynRecv = 2,
    /// Handshake completed (or picked up mid-stream).
    Established = 3,
    /// FIN seen from one side.
    FinWait = 4,
    /// That FIN acknowledged by the other side.
    CloseWait = 5,
    /// FIN seen from both sides.
    LastAck = 6,
    /// Last ACK seen.
    TimeWait = 7,
    /// Reset.
    Close = 8,
}

impl TcpState {
    const ALL: [TcpState; 9] = [
        TcpState::None,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::Established,
        TcpState::FinWait,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::TimeWait,
        TcpState::Close,
    ];

    /// Name as netfilter prints it.
    pub const fn name(self) -> &'static str {
        match self {
            TcpState::None => "NONE",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
        }
    }
}

/// State of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// A TCP connection.
    Tcp(TcpState),
    /// UDP, ICMP echo or another protocol, no packet seen in the reply direction yet.
    Unreplied,
    /// UDP, ICMP echo or another protocol, packets seen both ways.
    Replied,
}

impl State {
    /// Name for listings (`SYN_SENT`, ..., `UNREPLIED`, `REPLIED`).
    pub const fn name(self) -> &'static str {
        match self {
            State::Tcp(state) => state.name(),
            State::Unreplied => "UNREPLIED",
            State::Replied => "REPLIED",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// Internal state codes: TCP states 0..=8, then unreplied/replied pairs per protocol class.
const CODE_UDP_UNREPLIED: u8 = 9;
const CODE_UDP_REPLIED: u8 = 10;
const CODE_ICMP_UNREPLIED: u8 = 11;
const CODE_ICMP_REPLIED: u8 = 12;
const CODE_OTHER_UNREPLIED: u8 = 13;
const CODE_OTHER_REPLIED: u8 = 14;
/// A free entry.
const CODE_FREE: u8 = 15;
const CODES: usize = 16;

const TCP_NONE: u8 = TcpState::None as u8;
const TCP_SYN_SENT: u8 = TcpState::SynSent as u8;
const TCP_SYN_RECV: u8 = TcpState::SynRecv as u8;
const TCP_ESTABLISHED: u8 = TcpState::Established as u8;
const TCP_FIN_WAIT: u8 = TcpState::FinWait as u8;
const TCP_CLOSE_WAIT: u8 = TcpState::CloseWait as u8;
const TCP_LAST_ACK: u8 = TcpState::LastAck as u8;
const TCP_TIME_WAIT: u8 = TcpState::TimeWait as u8;
const TCP_CLOSE: u8 = TcpState::Close as u8;

/// Eviction class of each state code.
const CLASS_PROTECTED: u8 = 0;
const CLASS_EMBRYONIC: u8 = 1;
const CLASS_CLOSING: u8 = 2;
const EVICTION_CLASS: [u8; CODES] = {
    let mut classes = [CLASS_PROTECTED; CODES];
    classes[TCP_NONE as usize] = CLASS_EMBRYONIC;
    classes[TCP_SYN_SENT as usize] = CLASS_EMBRYONIC;
    classes[TCP_SYN_RECV as usize] = CLASS_EMBRYONIC;
    classes[TCP_FIN_WAIT as usize] = CLASS_CLOSING;
    classes[TCP_CLOSE_WAIT as usize] = CLASS_CLOSING;
    classes[TCP_LAST_ACK as usize] = CLASS_CLOSING;
    classes[TCP_TIME_WAIT as usize] = CLASS_CLOSING;
    classes[TCP_CLOSE as usize] = CLASS_CLOSING;
    classes[CODE_UDP_UNREPLIED as usize] = CLASS_EMBRYONIC;
    classes[CODE_ICMP_UNREPLIED as usize] = CLASS_EMBRYONIC;
    classes[CODE_OTHER_UNREPLIED as usize] = CLASS_EMBRYONIC;
    classes
};

fn state_of(code: u8) -> State {
    match code {
        0..=8 => State::Tcp(TcpState::ALL[code as usize]),
        CODE_UDP_REPLIED | CODE_ICMP_REPLIED | CODE_OTHER_REPLIED => State::Replied,
        _ => State::Unreplied,
    }
}

/// The unreplied code of a non-TCP protocol (replied is one more).
#[inline]
fn unreplied_code(protocol: u8) -> u8 {
    match protocol {
        PROTO_UDP => CODE_UDP_UNREPLIED,
        p if is_icmp(p) => CODE_ICMP_UNREPLIED,
        _ => CODE_OTHER_UNREPLIED,
    }
}

/// Timeouts per state, in milliseconds of idleness (time since the connection's last
/// tracked packet). Defaults are Linux's `nf_conntrack` ones; values above
/// [`MAX_TIMEOUT_MS`] are capped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// TCP `SYN_SENT` (120 s).
    pub tcp_syn_sent_ms: u32,
    /// TCP `SYN_RECV` (60 s).
    pub tcp_syn_recv_ms: u32,
    /// TCP `ESTABLISHED` (5 days; kube-proxy sets 24 h, see [`Timeouts::kubernetes`]).
    pub tcp_established_ms: u32,
    /// TCP `FIN_WAIT` (120 s).
    pub tcp_fin_wait_ms: u32,
    /// TCP `CLOSE_WAIT` (60 s).
    pub tcp_close_wait_ms: u32,
    /// TCP `LAST_ACK` (30 s).
    pub tcp_last_ack_ms: u32,
    /// TCP `TIME_WAIT` (120 s).
    pub tcp_time_wait_ms: u32,
    /// TCP `CLOSE` (10 s).
    pub tcp_close_ms: u32,
    /// UDP, no reply seen (30 s).
    pub udp_unreplied_ms: u32,
    /// UDP, replied (120 s, Linux's "stream").
    pub udp_replied_ms: u32,
    /// ICMP/ICMPv6 echo (30 s).
    pub icmp_ms: u32,
    /// Any other protocol (600 s).
    pub generic_ms: u32,
}

const SECOND: u32 = 1000;

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn_sent_ms: 120 * SECOND,
            tcp_syn_recv_ms: 60 * SECOND,
            tcp_established_ms: 5 * 24 * 3600 * SECOND,
            tcp_fin_wait_ms: 120 * SECOND,
            tcp_close_wait_ms: 60 * SECOND,
            tcp_last_ack_ms: 30 * SECOND,
            tcp_time_wait_ms: 120 * SECOND,
            tcp_close_ms: 10 * SECOND,
            udp_unreplied_ms: 30 * SECOND,
            udp_replied_ms: 120 * SECOND,
            icmp_ms: 30 * SECOND,
            generic_ms: 600 * SECOND,
        }
    }
}

impl Timeouts {
    /// What kube-proxy configures: `ESTABLISHED` 24 h, `CLOSE_WAIT` 1 h, the rest Linux's.
    pub fn kubernetes() -> Self {
        Timeouts {
            tcp_established_ms: 24 * 3600 * SECOND,
            tcp_close_wait_ms: 3600 * SECOND,
            ..Timeouts::default()
        }
    }

    /// The timeout of each state code.
    fn table(&self) -> [u32; CODES] {
        let mut table = [0; CODES];
        table[TCP_NONE as usize] = self.tcp_close_ms;
        table[TCP_SYN_SENT as usize] = self.tcp_syn_sent_ms;
        table[TCP_SYN_RECV as usize] = self.tcp_syn_recv_ms;
        table[TCP_ESTABLISHED as usize] = self.tcp_established_ms;
        table[TCP_FIN_WAIT as usize] = self.tcp_fin_wait_ms;
        table[TCP_CLOSE_WAIT as usize] = self.tcp_close_wait_ms;
        table[TCP_LAST_ACK as usize] = self.tcp_last_ack_ms;
        table[TCP_TIME_WAIT as usize] = self.tcp_time_wait_ms;
        table[TCP_CLOSE as usize] = self.tcp_close_ms;
        table[CODE_UDP_UNREPLIED as usize] = self.udp_unreplied_ms;
        table[CODE_UDP_REPLIED as usize] = self.udp_replied_ms;
        table[CODE_ICMP_UNREPLIED as usize] = self.icmp_ms;
        table[CODE_ICMP_REPLIED as usize] = self.icmp_ms;
        table[CODE_OTHER_UNREPLIED as usize] = self.generic_ms;
        table[CODE_OTHER_REPLIED as usize] = self.generic_ms;
        for timeout in &mut table {
            *timeout = (*timeout).min(MAX_TIMEOUT_MS);
        }
        table
    }
}

/// Construction parameters of a [`ConnTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConntrackConfig {
    /// Most connections (clamped to 1..=[`MAX_CAPACITY`]); all memory is allocated up front.
    pub capacity: usize,
    /// Per-state timeouts.
    pub timeouts: Timeouts,
    /// Admit TCP connections picked up mid-stream (first packet an ACK), as Linux's
    /// `nf_conntrack_tcp_loose` does by default.
    pub tcp_loose: bool,
    /// Seed of the tuple hash (per process, random in production).
    pub hash_seed: u64,
}

impl Default for ConntrackConfig {
    fn default() -> Self {
        ConntrackConfig {
            capacity: 65_536,
            timeouts: Timeouts::default(),
            tcp_loose: true,
            hash_seed: 0x2545_f491_4f6c_dd1d,
        }
    }
}

/// Names a connection of a [`ConnTable`] (entry index and generation; see the module docs for
/// how long it stays valid).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConnId {
    index: u32,
    generation: u16,
}

impl ConnId {
    /// Index of the connection's entry (below the table's capacity).
    pub const fn index(self) -> u32 {
        self.index
    }
}

/// What [`ConnTable::update`] did with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateOutcome {
    /// Accounted, state advanced (or kept), timer refreshed.
    Tracked,
    /// A SYN restarted a `TIME_WAIT`/`CLOSE` connection: now `SYN_SENT`, counters and age
    /// reset, same tuples and NAT.
    Reopened,
    /// Accounted but neither state nor timer changed (Linux's "ignore": e.g. a SYN or a
    /// responder's SYN/ACK on an established connection).
    Ignored,
    /// Does not fit the state machine (e.g. an ACK while `SYN_SENT`, a packet without
    /// SYN/ACK/FIN/RST): not accounted in the connection, counted in
    /// [`ConntrackCounters::invalid`].
    Invalid,
    /// The id names no live connection: nothing done.
    Unknown,
}

/// What [`ConnTable::lookup_update`] found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    /// The connection.
    pub id: ConnId,
    /// The packet's direction.
    pub direction: Direction,
    /// What the update did.
    pub outcome: UpdateOutcome,
    /// The tuple the packet must leave with ([`ConnTable::translated`]).
    pub translated: FlowKey,
}

/// Why [`ConnTable::create`] admitted no connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum CreateError {
    /// Table full and no candidate could be reclaimed or evicted (counted).
    #[error("connection table full")]
    Full,
    /// The original or the reply tuple belongs to a live connection.
    #[error("a tuple of the connection is in use")]
    TupleInUse,
    /// A TCP first packet that cannot open a connection (not a SYN, or not an ACK with
    /// loose pickup).
    #[error("TCP packet cannot open a connection")]
    InvalidFirstPacket,
}

/// Counters of one table (one worker). Monotonic except `live`; sum workers with
/// [`ConntrackCounters::merge`]. `live == created - expired - evicted_embryonic -
/// evicted_closing - removed` always.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackCounters {
    /// Lookups.
    pub lookups: u64,
    /// Lookups that found a live connection.
    pub hits: u64,
    /// Connections created.
    pub created: u64,
    /// Creations refused because the table was full.
    pub refused_full: u64,
    /// Embryonic connections evicted to make room.
    pub evicted_embryonic: u64,
    /// Closing connections evicted to make room.
    pub evicted_closing: u64,
    /// Expired connections reclaimed (by a lookup, a create or the sweep).
    pub expired: u64,
    /// Connections removed by `remove` or `flush`.
    pub removed: u64,
    /// Packets that did not fit their connection's state machine.
    pub invalid: u64,
    /// Live connections (those expired but not yet reclaimed included).
    pub live: u64,
}

impl ConntrackCounters {
    /// Adds `other` (another worker's) to these.
    pub fn merge(&mut self, other: &ConntrackCounters) {
        self.lookups += other.lookups;
        self.hits += other.hits;
        self.created += other.created;
        self.refused_full += other.refused_full;
        self.evicted_embryonic += other.evicted_embryonic;
        self.evicted_closing += other.evicted_closing;
        self.expired += other.expired;
        self.removed += other.removed;
        self.invalid += other.invalid;
        self.live += other.live;
    }
}

/// A connection, for listing (`conntrack list`) and inspection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// Id (valid until the connection is removed).
    pub id: ConnId,
    /// Tuple of the original direction, as the initiator sends it.
    pub original: FlowKey,
    /// Tuple of the reply direction, as the responder sends it.
    pub reply: FlowKey,
    /// State.
    pub state: State,
    /// The caller's value ([`ConnTable::set_user`]), e.g. a Service backend id.
    pub user: u32,
    /// Milliseconds since the connection's first packet (or its reopening).
    pub age_ms: u32,
    /// Milliseconds since its last tracked packet.
    pub idle_ms: u32,
    /// Milliseconds until it expires if no packet comes.
    pub expires_in_ms: u32,
    /// Packets per direction (index [`Direction::index`]).
    pub packets: [u64; 2],
    /// Bytes per direction.
    pub bytes: [u64; 2],
}

impl Connection {
    /// The NAT the connection applies to its original direction.
    pub fn nat(&self) -> Nat {
        Nat::from_tuples(&self.original, &self.reply)
    }
}

/// A tuple packed into five words (the flow cache's layout: keeps entries free of `u128`
/// alignment padding).
type Words = [u64; 5];

#[inline(always)]
fn pack(key: &FlowKey) -> Words {
    [
        key.src as u64,
        (key.src >> 64) as u64,
        key.dst as u64,
        (key.dst >> 64) as u64,
        (key.vrf as u64)
            | (key.protocol as u64) << 16
            | (key.ipv6 as u64) << 24
            | (key.src_port as u64) << 32
            | (key.dst_port as u64) << 48,
    ]
}

fn unpack(w: &Words) -> FlowKey {
    FlowKey {
        src: w[0] as u128 | (w[1] as u128) << 64,
        dst: w[2] as u128 | (w[3] as u128) << 64,
        vrf: w[4] as u16,
        protocol: (w[4] >> 16) as u8,
        ipv6: (w[4] >> 24) & 1 == 1,
        src_port: (w[4] >> 32) as u16,
        dst_port: (w[4] >> 48) as u16,
    }
}

/// The packed reply template of a port allocation and the bit position of its "port" in
/// word 4 (ICMP: `src_port`; TCP/UDP: `dst_port`); no position, and ports zeroed, for
/// protocols without ports.
#[inline]
fn port_words(template: &FlowKey) -> (Words, Option<u32>) {
    if is_icmp(template.protocol) {
        (pack(template), Some(32))
    } else if has_ports(template.protocol) {
        (pack(template), Some(48))
    } else {
        let key = FlowKey {
            src_port: 0,
            dst_port: 0,
            ..*template
        };
        (pack(&key), None)
    }
}

/// Equal to `FlowKey::hash(seed)` of the unpacked key.
#[inline(always)]
fn hash_words(seed: u64, words: &Words) -> u64 {
    let mut h = FlowHasher::with_seed(seed);
    for &word in words {
        h.add(word);
    }
    h.finish64()
}

#[inline(always)]
fn same_words(a: &Words, b: &Words) -> bool {
    ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4])) == 0
}

#[inline(always)]
fn signature(hash: u64) -> u32 {
    ((hash >> 32) as u32) | 1
}

/// Age of an event at `then` seen at `now`: wrapping difference read as signed, negative
/// (time went backwards) read as 0.
#[inline(always)]
fn age(now: u32, then: u32) -> u32 {
    let d = now.wrapping_sub(then);
    if d > MAX_TIMEOUT_MS {
        0
    } else {
        d
    }
}

const FIN_SEEN_ORIGINAL: u8 = 1;
const FIN_SEEN_REPLY: u8 = 2;

#[inline(always)]
fn fin_bit(dir: Direction) -> u8 {
    match dir {
        Direction::Original => FIN_SEEN_ORIGINAL,
        Direction::Reply => FIN_SEEN_REPLY,
    }
}

/// One connection: two cache lines. Line 0: the original tuple and the first 24 bytes of
/// the reply tuple; line 1: the rest of the reply tuple, counters, times, state.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(128))]
struct Entry {
    tuples: [Words; 2],
    packets: [u64; 2],
    bytes: [u64; 2],
    last_seen: u32,
    created: u32,
    user: u32,
    state: u8,
    fin: u8,
    generation: u16,
}

impl Entry {
    const FREE: Entry = Entry {
        tuples: [[0; 5]; 2],
        packets: [0; 2],
        bytes: [0; 2],
        last_seen: 0,
        created: 0,
        user: 0,
        state: CODE_FREE,
        fin: 0,
        generation: 0,
    };

    #[inline(always)]
    fn is_live(&self) -> bool {
        self.state != CODE_FREE
    }
}

/// One index line: 7 slots (signature 0 = empty; reference = entry index << 1 | direction)
/// and the count of slots stored beyond this bucket by inserts that found it full.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(64))]
struct Bucket {
    signatures: [u32; BUCKET_SLOTS],
    overflow: u32,
    refs: [u32; BUCKET_SLOTS],
    _pad: u32,
}

/// Where an index search stopped.
#[derive(Clone, Copy, Debug)]
struct Found {
    reference: u32,
}

/// The connection table of one worker.
#[derive(Clone, Debug)]
pub struct ConnTable {
    buckets: Vec<Bucket>,
    bucket_mask: usize,
    entries: Vec<Entry>,
    free: Vec<u32>,
    timeouts: Timeouts,
    timeout_of: [u32; CODES],
    tcp_loose: bool,
    seed: u64,
    live: usize,
    sweep_cursor: usize,
    evict_cursor: usize,
    counters: ConntrackCounters,
}

impl ConnTable {
    /// A table for `config.capacity` connections, all memory allocated now (see the module
    /// docs for the bytes per connection).
    pub fn new(config: ConntrackConfig) -> Self {
        let capacity = config.capacity.clamp(1, MAX_CAPACITY);
        // Two index slots per connection, at most 75% of the slots used.
        let slots = (2 * capacity * 4).div_ceil(3);
        let buckets = slots.div_ceil(BUCKET_SLOTS).next_power_of_two();
        let mut free = Vec::with_capacity(capacity);
        free.extend((0..capacity as u32).rev());
        ConnTable {
            buckets: vec![Bucket::default(); buckets],
            bucket_mask: buckets - 1,
            entries: vec![Entry::FREE; capacity],
            free,
            timeouts: config.timeouts,
            timeout_of: config.timeouts.table(),
            tcp_loose: config.tcp_loose,
            seed: config.hash_seed,
            live: 0,
            sweep_cursor: 0,
            evict_cursor: 0,
            counters: ConntrackCounters::default(),
        }
    }

    /// Most connections.
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Live connections (those expired but not yet reclaimed included).
    pub fn len(&self) -> usize {
        self.live
    }

    /// No live connection.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Heap bytes (entries, index, free list): fixed at construction.
    pub fn memory_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.buckets.capacity() * std::mem::size_of::<Bucket>()
            + self.free.capacity() * std::mem::size_of::<u32>()
    }

    /// Index buckets (64 bytes each).
    pub fn index_buckets(&self) -> usize {
        self.buckets.len()
    }

    /// The counters, `live` filled in.
    pub fn counters(&self) -> ConntrackCounters {
        ConntrackCounters {
            live: self.live as u64,
            ..self.counters
        }
    }

    /// Current timeouts.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Changes the timeouts; they apply to every connection from now on.
    pub fn set_timeouts(&mut self, timeouts: Timeouts) {
        self.timeouts = timeouts;
        self.timeout_of = timeouts.table();
    }

    /// The hash [`ConnTable::lookup_hashed`] and [`ConnTable::touch`] want for `key`
    /// (`key.hash(seed)` with this table's seed).
    #[inline]
    pub fn key_hash(&self, key: &FlowKey) -> u64 {
        hash_words(self.seed, &pack(key))
    }

    /// Reads the index line of `hash` so that a later lookup finds it in cache; a batch
    /// touches all its packets' lines before looking them up. The value only keeps the load.
    #[inline]
    pub fn touch(&self, hash: u64) -> u32 {
        self.buckets
            .get(hash as usize & self.bucket_mask)
            .map_or(0, |b| b.signatures[0])
    }

    /// Second touch, once the index line is cached: reads both lines of the entry whose
    /// signature matches `hash` (the first one if several do), so that the entry misses of a
    /// batch overlap too. The value only keeps the loads.
    #[inline]
    pub fn touch_entry(&self, hash: u64) -> u64 {
        let Some(bucket) = self.buckets.get(hash as usize & self.bucket_mask) else {
            return 0;
        };
        let sig = signature(hash);
        let Some(s) = bucket.signatures.iter().position(|&x| x == sig) else {
            return 0;
        };
        self.entries
            .get((bucket.refs[s % BUCKET_SLOTS] >> 1) as usize)
            .map_or(0, |e| e.tuples[0][0] ^ u64::from(e.last_seen))
    }

    /// Reads the index line of the first candidate [`ConnTable::allocate_port`] tries for
    /// the same arguments, so that a batch of new connections overlaps those misses. The
    /// value only keeps the load.
    #[inline]
    pub fn touch_port(
        &self,
        reply_template: &FlowKey,
        range: RangeInclusive<u16>,
        hash: u64,
    ) -> u32 {
        let (low, high) = (*range.start(), *range.end());
        if low > high {
            return 0;
        }
        let size = u64::from(high - low) + 1;
        let (mut words, shift) = port_words(reply_template);
        if let Some(shift) = shift {
            let port = low.wrapping_add((hash % size) as u16);
            words[4] = (words[4] & !(0xffff << shift)) | u64::from(port) << shift;
        }
        self.touch(hash_words(self.seed, &words))
    }

    #[inline(always)]
    fn is_expired(&self, entry: &Entry, now: u32) -> bool {
        age(now, entry.last_seen) > self.timeout_of[(entry.state & 15) as usize]
    }

    /// The index slot holding `words` (whose hash is `hash`), if any.
    #[inline(always)]
    fn find(&self, words: &Words, hash: u64) -> Option<Found> {
        let sig = signature(hash);
        let mut b = hash as usize & self.bucket_mask;
        for _ in 0..self.buckets.len() {
            let bucket = &self.buckets[b];
            for s in 0..BUCKET_SLOTS {
                if bucket.signatures[s] != sig {
                    continue;
                }
                let reference = bucket.refs[s];
                if let Some(entry) = self.entries.get((reference >> 1) as usize) {
                    if same_words(&entry.tuples[(reference & 1) as usize], words) {
                        return Some(Found { reference });
                    }
                }
            }
            if bucket.overflow == 0 {
                return None;
            }
            b = (b + 1) & self.bucket_mask;
        }
        None
    }

    /// Stores `reference` under `hash`. False only if every slot is taken, which the sizing
    /// (at most 75% load) rules out.
    fn index_insert(&mut self, hash: u64, reference: u32) -> bool {
        let sig = signature(hash);
        let mut b = hash as usize & self.bucket_mask;
        for _ in 0..self.buckets.len() {
            let bucket = &mut self.buckets[b];
            if let Some(s) = bucket.signatures.iter().position(|&x| x == 0) {
                bucket.signatures[s] = sig;
                bucket.refs[s] = reference;
                return true;
            }
            bucket.overflow = bucket.overflow.wrapping_add(1);
            b = (b + 1) & self.bucket_mask;
        }
        false
    }

    /// Removes the slot holding `reference` under `hash`, undoing the overflow counts its
    /// insert added.
    fn index_remove(&mut self, hash: u64, reference: u32) {
        let sig = signature(hash);
        let home = hash as usize & self.bucket_mask;
        let mut b = home;
        for distance in 0..self.buckets.len() {
            let bucket = &mut self.buckets[b];
            let slot = (0..BUCKET_SLOTS)
                .find(|&s| bucket.signatures[s] == sig && bucket.refs[s] == reference);
            if let Some(s) = slot {
                bucket.signatures[s] = 0;
                bucket.refs[s] = 0;
                let mut p = home;
                for _ in 0..distance {
                    let passed = &mut self.buckets[p];
                    passed.overflow = passed.overflow.saturating_sub(1);
                    p = (p + 1) & self.bucket_mask;
                }
                return;
            }
            if bucket.overflow == 0 {
                return;
            }
            b = (b + 1) & self.bucket_mask;
        }
    }

    /// Frees entry `index` (live) and its two index slots.
    fn release(&mut self, index: usize) {
        let Some(entry) = self.entries.get(index) else {
            return;
        };
        let hashes = [
            hash_words(self.seed, &entry.tuples[0]),
            hash_words(self.seed, &entry.tuples[1]),
        ];
        self.release_hashed(index, hashes);
    }

    /// [`ConnTable::release`] with the hashes of the entry's two tuples.
    fn release_hashed(&mut self, index: usize, hashes: [u64; 2]) {
        let Some(entry) = self.entries.get(index) else {
            return;
        };
        if !entry.is_live() {
            return;
        }
        for (dir, &hash) in hashes.iter().enumerate() {
            self.index_remove(hash, (index as u32) << 1 | dir as u32);
        }
        let entry = &mut self.entries[index];
        entry.state = CODE_FREE;
        entry.generation = entry.generation.wrapping_add(1);
        self.free.push(index as u32);
        self.live -= 1;
    }

    #[inline]
    fn live_entry(&self, id: ConnId) -> Option<&Entry> {
        self.entries
            .get(id.index as usize)
            .filter(|e| e.is_live() && e.generation == id.generation)
    }

    /// Looks a tuple up at `now_ms`: the connection and the packet's direction. An expired
    /// connection met here is reclaimed and the lookup misses.
    #[inline]
    pub fn lookup(&mut self, key: &FlowKey, now_ms: u32) -> Option<(ConnId, Direction)> {
        let hash = self.key_hash(key);
        self.lookup_hashed(key, hash, now_ms)
    }

    /// [`ConnTable::lookup`] with the key's hash already computed by
    /// [`ConnTable::key_hash`] (a wrong hash makes the lookup miss, nothing worse).
    #[inline]
    pub fn lookup_hashed(
        &mut self,
        key: &FlowKey,
        hash: u64,
        now_ms: u32,
    ) -> Option<(ConnId, Direction)> {
        self.counters.lookups += 1;
        let found = self.find(&pack(key), hash)?;
        let index = (found.reference >> 1) as usize;
        let entry = &self.entries[index];
        if self.is_expired(entry, now_ms) {
            self.release(index);
            self.counters.expired += 1;
            return None;
        }
        self.counters.hits += 1;
        let direction = if found.reference & 1 == 0 {
            Direction::Original
        } else {
            Direction::Reply
        };
        Some((
            ConnId {
                index: index as u32,
                generation: entry.generation,
            },
            direction,
        ))
    }

    /// Accounts one packet of `len` bytes of connection `id` seen in direction `dir` at
    /// `now_ms`; `flags` are the TCP flags (ignored for other protocols). A connection whose
    /// timeout has passed is reclaimed here as a lookup would ([`UpdateOutcome::Unknown`]):
    /// an id cached elsewhere (the flow cache) never revives it.
    #[inline]
    pub fn update(
        &mut self,
        id: ConnId,
        dir: Direction,
        flags: TcpFlags,
        len: u32,
        now_ms: u32,
    ) -> UpdateOutcome {
        let index = id.index as usize;
        let Some(entry) = self.entries.get(index) else {
            return UpdateOutcome::Unknown;
        };
        if !entry.is_live() || entry.generation != id.generation {
            return UpdateOutcome::Unknown;
        }
        // Expired but not swept yet: gone, as a lookup would find (not revived by a packet
        // that a cached id still points at).
        if self.is_expired(entry, now_ms) {
            self.release(index);
            self.counters.expired += 1;
            return UpdateOutcome::Unknown;
        }
        let outcome = account(&mut self.entries[index], dir, flags, len, now_ms);
        self.counters.invalid += u64::from(outcome == UpdateOutcome::Invalid);
        outcome
    }

    /// The hit path in one call: [`ConnTable::lookup_hashed`], then [`ConnTable::update`] and
    /// [`ConnTable::translated`] of what it found, without validating the id again.
    #[inline]
    pub fn lookup_update(
        &mut self,
        key: &FlowKey,
        hash: u64,
        flags: TcpFlags,
        len: u32,
        now_ms: u32,
    ) -> Option<Hit> {
        let (id, direction) = self.lookup_hashed(key, hash, now_ms)?;
        let entry = &mut self.entries[id.index as usize];
        let outcome = account(entry, direction, flags, len, now_ms);
        let translated = invert(&unpack(&entry.tuples[direction.reverse().index() & 1]));
        self.counters.invalid += u64::from(outcome == UpdateOutcome::Invalid);
        Some(Hit {
            id,
            direction,
            outcome,
            translated,
        })
    }

    /// Admits a connection from its first packet (`flags`, `len` bytes, seen at `now_ms`):
    /// original tuple `original`, reply tuple `nat.reply_tuple(original)`. When the table is
    /// full, reclaims or evicts as the module docs say. A tuple held by an expired connection
    /// is reclaimed; one held by a live connection is [`CreateError::TupleInUse`].
    pub fn create(
        &mut self,
        original: &FlowKey,
        nat: &Nat,
        flags: TcpFlags,
        len: u32,
        now_ms: u32,
    ) -> Result<ConnId, CreateError> {
        let state = if original.protocol == PROTO_TCP {
            match tcp_event(flags) {
                TcpEvent::Syn => TCP_SYN_SENT,
                TcpEvent::Ack if self.tcp_loose => TCP_ESTABLISHED,
                _ => return Err(CreateError::InvalidFirstPacket),
            }
        } else {
            unreplied_code(original.protocol)
        };
        let tuples = [pack(original), pack(&nat.reply_tuple(original))];
        let hashes = [
            hash_words(self.seed, &tuples[0]),
            hash_words(self.seed, &tuples[1]),
        ];
        for (words, &hash) in tuples.iter().zip(&hashes) {
            if let Some(found) = self.find(words, hash) {
                let index = (found.reference >> 1) as usize;
                if !self.is_expired(&self.entries[index], now_ms) {
                    return Err(CreateError::TupleInUse);
                }
                self.release(index);
                self.counters.expired += 1;
            }
        }
        if self.free.is_empty() {
            self.make_room(now_ms)?;
        }
        let Some(index) = self.free.pop() else {
            return Err(CreateError::Full);
        };
        let i = index as usize;
        let generation = self.entries[i].generation;
        self.entries[i] = Entry {
            tuples,
            packets: [1, 0],
            bytes: [u64::from(len), 0],
            last_seen: now_ms,
            created: now_ms,
            user: 0,
            state,
            fin: 0,
            generation,
        };
        // Cannot fail: at most 2 * capacity references in at least 8/3 * capacity slots.
        let inserted = self.index_insert(hashes[0], index << 1)
            && self.index_insert(hashes[1], index << 1 | 1);
        self.live += 1;
        self.counters.created += 1;
        if !inserted {
            self.release(i);
            self.counters.created -= 1;
            self.counters.refused_full += 1;
            return Err(CreateError::Full);
        }
        Ok(ConnId { index, generation })
    }

    /// The full-table policy: frees one entry or refuses (counted).
    fn make_room(&mut self, now: u32) -> Result<(), CreateError> {
        let n = self.entries.len();
        let mut best: Option<(u32, usize)> = None;
        let mut i = self.evict_cursor % n.max(1);
        for _ in 0..EVICTION_CANDIDATES.min(n) {
            let entry = &self.entries[i];
            let next = if i + 1 == n { 0 } else { i + 1 };
            if entry.is_live() {
                if self.is_expired(entry, now) {
                    self.evict_cursor = next;
                    self.release(i);
                    self.counters.expired += 1;
                    return Ok(());
                }
                if EVICTION_CLASS[(entry.state & 15) as usize] != CLASS_PROTECTED {
                    let idle = age(now, entry.last_seen);
                    if best.is_none_or(|(oldest, _)| idle > oldest) {
                        best = Some((idle, i));
                    }
                }
            }
            i = next;
        }
        self.evict_cursor = i;
        match best {
            Some((_, victim)) => {
                if EVICTION_CLASS[(self.entries[victim].state & 15) as usize] == CLASS_EMBRYONIC {
                    self.counters.evicted_embryonic += 1;
                } else {
                    self.counters.evicted_closing += 1;
                }
                self.release(victim);
                Ok(())
            }
            None => {
                self.counters.refused_full += 1;
                Err(CreateError::Full)
            }
        }
    }

    /// A port `p` in `range` such that `reply_template` with `dst_port = p` (ICMP/ICMPv6:
    /// `src_port = p`, the echo identifier) is a tuple no connection in the table holds, or
    /// `None`.
    ///
    /// The template is the reply tuple of the connection to be created with the source
    /// translation's port left open (`Nat::reply_tuple` with any port); so a port is never
    /// reused while a connection holds it for the same (translated address, destination
    /// address, destination port, protocol, VRF). Candidates start at `hash % range_len`
    /// (`hash`: e.g. the original tuple's): a range of at most [`MAX_PORT_PROBES`] ports is
    /// searched exhaustively; a larger one in runs of 64, 32, 16, 8, 4, 2 and 1 consecutive
    /// ports, each run starting at a new offset drawn from `hash` (127 candidates at most;
    /// with a fraction `f` of the range in use, all runs fail with probability about
    /// `f^7` when free ports are spread out). For protocols without ports (neither TCP, UDP
    /// nor ICMP) ports are not part of the tuples: the template (ports 0) is checked as it is
    /// and the range's first port returned if it is free.
    pub fn allocate_port(
        &self,
        reply_template: &FlowKey,
        range: RangeInclusive<u16>,
        hash: u64,
    ) -> Option<u16> {
        let (low, high) = (*range.start(), *range.end());
        if low > high {
            return None;
        }
        let (mut words, shift) = port_words(reply_template);
        let Some(shift) = shift else {
            let free = self.find(&words, hash_words(self.seed, &words)).is_none();
            return free.then_some(low);
        };
        let size = u32::from(high - low) + 1;
        let mut is_free = |offset: u32| -> Option<u16> {
            let port = low.wrapping_add((offset % size) as u16);
            words[4] = (words[4] & !(0xffff << shift)) | u64::from(port) << shift;
            self.find(&words, hash_words(self.seed, &words))
                .is_none()
                .then_some(port)
        };
        if size <= MAX_PORT_PROBES {
            let start = (hash % u64::from(size)) as u32;
            return (0..size).find_map(|i| is_free(start + i));
        }
        let mut h = hash;
        let mut run = 64;
        while run >= 1 {
            let start = (h % u64::from(size)) as u32;
            if let Some(port) = (0..run).find_map(|i| is_free(start + i)) {
                return Some(port);
            }
            let mut next = FlowHasher::with_seed(h);
            next.add(run as u64);
            h = next.finish64();
            run /= 2;
        }
        None
    }

    /// The connection `id` as of `now_ms`; `None` if it is not live or has expired.
    pub fn get(&self, id: ConnId, now_ms: u32) -> Option<Connection> {
        let entry = self.live_entry(id)?;
        if self.is_expired(entry, now_ms) {
            return None;
        }
        Some(self.record(id.index as usize, entry, now_ms))
    }

    fn record(&self, index: usize, entry: &Entry, now: u32) -> Connection {
        let idle = age(now, entry.last_seen);
        let timeout = self.timeout_of[(entry.state & 15) as usize];
        Connection {
            id: ConnId {
                index: index as u32,
                generation: entry.generation,
            },
            original: unpack(&entry.tuples[0]),
            reply: unpack(&entry.tuples[1]),
            state: state_of(entry.state),
            user: entry.user,
            age_ms: age(now, entry.created),
            idle_ms: idle,
            expires_in_ms: timeout.saturating_sub(idle),
            packets: entry.packets,
            bytes: entry.bytes,
        }
    }

    /// State of connection `id` (expired or not), `None` if it is not live.
    pub fn state(&self, id: ConnId) -> Option<State> {
        self.live_entry(id).map(|e| state_of(e.state))
    }

    /// The tuple a packet of connection `id` travelling in `dir` must carry when it leaves:
    /// the other direction's tuple inverted (equal to the packet's own tuple when the
    /// connection has no NAT).
    #[inline]
    pub fn translated(&self, id: ConnId, dir: Direction) -> Option<FlowKey> {
        let entry = self.live_entry(id)?;
        Some(invert(&unpack(&entry.tuples[dir.reverse().index() & 1])))
    }

    /// The caller's value stored with connection `id`.
    pub fn user(&self, id: ConnId) -> Option<u32> {
        self.live_entry(id).map(|e| e.user)
    }

    /// Marks connection `id` as used at `last_used_ms` (a packet the flow cache served for
    /// it), unless it is gone or already expired at `now_ms` (never revived). False then.
    pub fn refresh(&mut self, id: ConnId, last_used_ms: u32, now_ms: u32) -> bool {
        let index = id.index as usize;
        match self.entries.get(index) {
            Some(e) if e.is_live() && e.generation == id.generation => {}
            _ => return false,
        }
        if self.is_expired(&self.entries[index], now_ms) {
            return false;
        }
        let entry = &mut self.entries[index];
        if age(now_ms, last_used_ms) < age(now_ms, entry.last_seen) {
            entry.last_seen = last_used_ms;
        }
        true
    }

    /// Stores a value with connection `id` (0 at creation); false if `id` is not live.
    pub fn set_user(&mut self, id: ConnId, value: u32) -> bool {
        match self.entries.get_mut(id.index as usize) {
            Some(e) if e.is_live() && e.generation == id.generation => {
                e.user = value;
                true
            }
            _ => false,
        }
    }

    /// Live, unexpired connections as of `now_ms`, in entry order (for listing; walks the
    /// whole entry array).
    pub fn iter(&self, now_ms: u32) -> impl Iterator<Item = Connection> + '_ {
        self.entries
            .iter()
            .enumerate()
            .filter(move |(_, e)| e.is_live() && !self.is_expired(e, now_ms))
            .map(move |(i, e)| self.record(i, e, now_ms))
    }

    /// Removes connection `id`; false if it is not live.
    pub fn remove(&mut self, id: ConnId) -> bool {
        if self.live_entry(id).is_none() {
            return false;
        }
        self.release(id.index as usize);
        self.counters.removed += 1;
        true
    }

    /// Removes every connection; returns how many there were. Ids issued before are stale
    /// afterwards. Walks the whole table (a control operation).
    pub fn flush(&mut self) -> usize {
        let removed = self.live;
        self.buckets.fill(Bucket::default());
        self.free.clear();
        for (i, entry) in self.entries.iter_mut().enumerate().rev() {
            if entry.is_live() {
                entry.state = CODE_FREE;
                entry.generation = entry.generation.wrapping_add(1);
            }
            self.free.push(i as u32);
        }
        self.live = 0;
        self.counters.removed += removed as u64;
        removed
    }

    /// Incremental expiry: visits the next `budget` entry slots (at most the capacity) of a
    /// rotating cursor and reclaims the expired connections among them; returns how many.
    /// A full pass takes `capacity / budget` calls: e.g. 1,000,000 slots swept 512 at a time
    /// every 64 new connections (the `conntrack-setup` benchmark) is a pass per 125,000
    /// connections; a worker sweeping 256 slots per poll loop at 10,000 loops/s passes over
    /// 1,000,000 slots in 0.4 s.
    pub fn expire(&mut self, now_ms: u32, budget: usize) -> usize {
        // Expired entries are gathered a few at a time and their index lines touched before
        // any is released, so that those cache misses overlap.
        const GATHER: usize = 16;
        let n = self.entries.len();
        let mut i = self.sweep_cursor % n.max(1);
        let mut removed = 0;
        let mut remaining = budget.min(n);
        let mut gathered = [(0usize, [0u64; 2]); GATHER];
        while remaining > 0 {
            let mut count = 0;
            while remaining > 0 && count < GATHER {
                let entry = &self.entries[i];
                if entry.is_live() && self.is_expired(entry, now_ms) {
                    let hashes = [
                        hash_words(self.seed, &entry.tuples[0]),
                        hash_words(self.seed, &entry.tuples[1]),
                    ];
                    std::hint::black_box(self.touch(hashes[0]) ^ self.touch(hashes[1]));
                    gathered[count] = (i, hashes);
                    count += 1;
                }
                i = if i + 1 == n { 0 } else { i + 1 };
                remaining -= 1;
            }
            for &(index, hashes) in &gathered[..count] {
                self.release_hashed(index, hashes);
            }
            removed += count;
        }
        self.sweep_cursor = i;
        self.counters.expired += removed as u64;
        removed
    }

    /// Checks every internal invariant, walking the whole table (for tests and debugging):
    /// each live connection is indexed exactly by its two tuples and found by both, no index
    /// slot refers to anything else, overflow counts match the slots stored past their
    /// buckets, the free list holds exactly the free entries, `len` matches.
    pub fn check_consistency(&self) -> Result<(), String> {
        let live = self.entries.iter().filter(|e| e.is_live()).count();
        if live != self.live {
            return Err(format!("{live} live entries, len says {}", self.live));
        }
        if self.free.len() + live != self.entries.len() {
            return Err(format!(
                "{} free + {live} live != capacity {}",
                self.free.len(),
                self.entries.len()
            ));
        }
        let mut seen = vec![false; self.entries.len()];
        for &f in &self.free {
            let Some(entry) = self.entries.get(f as usize) else {
                return Err(format!("free list holds {f}, beyond the capacity"));
            };
            if entry.is_live() || std::mem::replace(&mut seen[f as usize], true) {
                return Err(format!("free list entry {f} is live or listed twice"));
            }
        }
        let mut expected_overflow = vec![0u32; self.buckets.len()];
        let mut slots = 0;
        let mut indexed = vec![[false; 2]; self.entries.len()];
        for (b, bucket) in self.buckets.iter().enumerate() {
            for s in 0..BUCKET_SLOTS {
                let sig = bucket.signatures[s];
                if sig == 0 {
                    continue;
                }
                slots += 1;
                let reference = bucket.refs[s];
                let (index, dir) = ((reference >> 1) as usize, (reference & 1) as usize);
                let Some(entry) = self.entries.get(index).filter(|e| e.is_live()) else {
                    return Err(format!("bucket {b} slot {s} refers to free entry {index}"));
                };
                if std::mem::replace(&mut indexed[index][dir], true) {
                    return Err(format!("entry {index} direction {dir} indexed twice"));
                }
                let hash = hash_words(self.seed, &entry.tuples[dir]);
                if signature(hash) != sig {
                    return Err(format!("bucket {b} slot {s}: signature does not match"));
                }
                let mut p = hash as usize & self.bucket_mask;
                while p != b {
                    expected_overflow[p] += 1;
                    p = (p + 1) & self.bucket_mask;
                }
            }
        }
        if slots != 2 * live {
            return Err(format!("{slots} index slots for {live} connections"));
        }
        for (b, bucket) in self.buckets.iter().enumerate() {
            if bucket.overflow != expected_overflow[b] {
                return Err(format!(
                    "bucket {b}: overflow {} but {} slots stored past it",
                    bucket.overflow, expected_overflow[b]
                ));
            }
        }
        for (index, entry) in self.entries.iter().enumerate() {
            if !entry.is_live() {
                continue;
            }
            for (dir, words) in entry.tuples.iter().enumerate() {
                let found = self.find(words, hash_words(self.seed, words));
                let ok = match found {
                    Some(f) => {
                        f.reference >> 1 == index as u32
                            && (f.reference & 1 == dir as u32
                                || same_words(&entry.tuples[0], &entry.tuples[1]))
                    }
                    None => false,
                };
                if !ok {
                    return Err(format!(
                        "entry {index}: tuple of direction {dir} found as {found:?}"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Accounts one packet in a live entry (see [`ConnTable::update`]).
#[inline(always)]
fn account(
    entry: &mut Entry,
    dir: Direction,
    flags: TcpFlags,
    len: u32,
    now: u32,
) -> UpdateOutcome {
    let outcome = if entry.state <= TCP_CLOSE {
        let (next, fin, outcome) = tcp_transition(entry.state, entry.fin, dir, flags);
        match outcome {
            UpdateOutcome::Tracked => {
                entry.state = next;
                entry.fin = fin;
                entry.last_seen = now;
            }
            UpdateOutcome::Reopened => {
                entry.state = next;
                entry.fin = 0;
                entry.last_seen = now;
                entry.created = now;
                entry.packets = [0; 2];
                entry.bytes = [0; 2];
            }
            UpdateOutcome::Invalid => return UpdateOutcome::Invalid,
            UpdateOutcome::Ignored | UpdateOutcome::Unknown => {}
        }
        outcome
    } else {
        // Unreplied codes are odd, replied ones even: a reply moves to the replied one.
        if dir == Direction::Reply && entry.state & 1 == 1 {
            entry.state += 1;
        }
        entry.last_seen = now;
        UpdateOutcome::Tracked
    };
    let d = dir.index() & 1;
    entry.packets[d] += 1;
    entry.bytes[d] += u64::from(len);
    outcome
}

/// TCP events, as netfilter classifies flags (RST first, then SYN, FIN, ACK).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TcpEvent {
    Syn,
    SynAck,
    Fin,
    Ack,
    Rst,
    None,
}

#[inline(always)]
fn tcp_event(flags: TcpFlags) -> TcpEvent {
    if flags.contains(TcpFlags::RST) {
        TcpEvent::Rst
    } else if flags.contains(TcpFlags::SYN) {
        if flags.contains(TcpFlags::ACK) {
            TcpEvent::SynAck
        } else {
            TcpEvent::Syn
        }
    } else if flags.contains(TcpFlags::FIN) {
        TcpEvent::Fin
    } else if flags.contains(TcpFlags::ACK) {
        TcpEvent::Ack
    } else {
        TcpEvent::None
    }
}

/// Next (state, FIN flags, outcome) for a TCP packet with `flags` in direction `dir`. The
/// state and FIN flags returned matter only for `Tracked` and `Reopened`.
#[inline(always)]
fn tcp_transition(state: u8, fin: u8, dir: Direction, flags: TcpFlags) -> (u8, u8, UpdateOutcome) {
    use UpdateOutcome::{Ignored, Invalid, Reopened, Tracked};
    let event = tcp_event(flags);
    // The hot case first: data or ACKs on an established connection.
    if state == TCP_ESTABLISHED && event == TcpEvent::Ack {
        return (state, fin, Tracked);
    }
    let original = dir == Direction::Original;
    let own_fin = fin & fin_bit(dir) != 0;
    let other_fin = fin & fin_bit(dir.reverse()) != 0;
    let keep = |outcome| (state, fin, outcome);
    let to = |next| (next, fin, Tracked);
    match event {
        TcpEvent::Rst => {
            if state == TCP_NONE {
                keep(Invalid)
            } else {
                to(TCP_CLOSE)
            }
        }
        TcpEvent::None => keep(Invalid),
        TcpEvent::Syn => match state {
            TCP_NONE | TCP_SYN_SENT if original => to(TCP_SYN_SENT),
            TCP_TIME_WAIT | TCP_CLOSE if original => (TCP_SYN_SENT, 0, Reopened),
            TCP_SYN_RECV..=TCP_LAST_ACK if original => keep(Ignored),
            // Reply direction: simultaneous open, retransmitted simultaneous SYN, and a
            // reopening by the responder (Linux: "server may have switched role").
            TCP_SYN_SENT => to(TCP_SYN_RECV),
            TCP_SYN_RECV => keep(Ignored),
            TCP_TIME_WAIT => (TCP_SYN_SENT, 0, Reopened),
            _ => keep(Invalid),
        },
        TcpEvent::SynAck => match state {
            TCP_SYN_RECV => to(TCP_SYN_RECV),
            TCP_SYN_SENT if !original => to(TCP_SYN_RECV),
            TCP_ESTABLISHED..=TCP_CLOSE if !original => keep(Ignored),
            _ => keep(Invalid),
        },
        TcpEvent::Fin => {
            let fin = fin | fin_bit(dir);
            match state {
                TCP_SYN_RECV | TCP_ESTABLISHED => (TCP_FIN_WAIT, fin, Tracked),
                TCP_FIN_WAIT | TCP_CLOSE_WAIT if own_fin => (state, fin, Tracked),
                TCP_FIN_WAIT | TCP_CLOSE_WAIT => (TCP_LAST_ACK, fin, Tracked),
                TCP_LAST_ACK | TCP_TIME_WAIT | TCP_CLOSE => (state, fin, Tracked),
                _ => keep(Invalid),
            }
        }
        TcpEvent::Ack => match state {
            TCP_NONE if original => to(TCP_ESTABLISHED),
            TCP_SYN_SENT if original => keep(Invalid),
            TCP_SYN_SENT => keep(Ignored),
            TCP_SYN_RECV if original => to(TCP_ESTABLISHED),
            TCP_SYN_RECV => to(TCP_SYN_RECV),
            TCP_FIN_WAIT if other_fin => to(TCP_CLOSE_WAIT),
            TCP_FIN_WAIT => to(TCP_FIN_WAIT),
            TCP_CLOSE_WAIT => to(TCP_CLOSE_WAIT),
            TCP_LAST_ACK | TCP_TIME_WAIT => to(TCP_TIME_WAIT),
            TCP_CLOSE => to(TCP_CLOSE),
            _ => keep(Invalid),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_two_lines_per_entry_and_one_per_bucket() {
        assert_eq!(std::mem::size_of::<Entry>(), 128);
        assert_eq!(std::mem::align_of::<Entry>(), 128);
        assert_eq!(std::mem::size_of::<Bucket>(), 64);
    }

    #[test]
    fn packed_words_round_trip_and_hash_like_flow_keys() {
        let key = FlowKey {
            src: u128::MAX - 3,
            dst: 7,
            vrf: 4095,
            protocol: 58,
            ipv6: true,
            src_port: 65535,
            dst_port: 1,
        };
        assert_eq!(unpack(&pack(&key)), key);
        assert_eq!(hash_words(99, &pack(&key)), key.hash(99));
    }

    #[test]
    fn memory_for_one_million_is_as_documented() {
        let table = ConnTable::new(ConntrackConfig {
            capacity: 1_000_000,
            ..ConntrackConfig::default()
        });
        assert_eq!(table.index_buckets(), 1 << 19);
        assert_eq!(table.memory_bytes(), 128_000_000 + 4_000_000 + (64 << 19));
        assert!(table.memory_bytes() / 1_000_000 <= 181);
    }

    #[test]
    fn ages_ignore_time_going_backwards() {
        assert_eq!(age(10, 20), 0);
        assert_eq!(age(5, u32::MAX - 4), 10);
        assert_eq!(age(100, 40), 60);
    }
}
