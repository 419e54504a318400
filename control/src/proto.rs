//! The control protocol spoken on both Unix sockets (`vrouterctl` -> `vrouter-control`, and
//! `vrouter-control` -> `vrouter`).
//!
//! Framing: a 16-byte header then a JSON body.
//! ```text
//! 0      4        6        8            12           16
//! | "VRTR" | version | kind   | request id | body length | body (JSON, `length` bytes)
//! ```
//! All integers big-endian. `version` is the framing version ([`FRAME_VERSION`]); `kind` is
//! 1 for a request and 2 for a response; a response carries the id of its request.
//!
//! Session: the client's first request must be [`Request::Hello`] with the range of protocol
//! versions it speaks; the server answers with the highest common version or an error and
//! closes. Anything before the hello is answered with an error.
//!
//! Bad input never crashes a peer and never changes state: a body that is not a known message
//! gets an `Error` response (the stream stays usable because the length was valid); a bad
//! magic or framing version, or a length above [`MAX_BODY`], gets an error response when
//! possible and the connection is closed, since the stream cannot be resynchronised.

use crate::config::{Cidr, Config, ConfigError};
use pipelines::counters::{Counters, StageStats};
use pipelines::flow::FlowRecord;
use pipelines::tables::{DfPolicy, NeighborKind};
use pipelines::wire::EthernetAddress;
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr};

/// Frame magic.
pub const MAGIC: [u8; 4] = *b"VRTR";
/// Framing version.
pub const FRAME_VERSION: u16 = 1;
/// Protocol versions this build speaks.
pub const PROTOCOL_MIN: u32 = 1;
/// Highest protocol version this build speaks.
pub const PROTOCOL_MAX: u32 = 1;
/// Largest accepted body: a full sync of about two million routes.
pub const MAX_BODY: usize = 256 << 20;
/// Header length.
pub const HEADER_LEN: usize = 16;
/// Frame kind of a request.
pub const KIND_REQUEST: u16 = 1;
/// Frame kind of a response.
pub const KIND_RESPONSE: u16 = 2;

/// Who is connecting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The operator CLI.
    Cli,
    /// The control daemon (owner of the desired state).
    Daemon,
}

/// A change to the desired state, as the CLI says it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// Adds a port, or updates it if it exists (addresses are added, MTU/MAC replaced when
    /// given; a VRF different from the port's is refused).
    AddPort(PortChange),
    /// Removes a port.
    DelPort {
        /// Interface.
        name: String,
    },
    /// Adds or replaces a route.
    AddRoute(RouteChange),
    /// Removes a route.
    DelRoute {
        /// VRF.
        vrf: u32,
        /// Prefix.
        prefix: pipelines::IpPrefix,
    },
    /// Adds or replaces a static neighbor.
    AddNeighbor(crate::config::NeighborConfig),
    /// Removes a static neighbor.
    DelNeighbor {
        /// Interface.
        dev: String,
        /// Address.
        ip: IpAddr,
    },
    /// Adds a VXLAN tunnel, or replaces the one with the same VNI as a whole (settings not
    /// given return to their defaults).
    AddVxlan(crate::config::VxlanConfig),
    /// Removes a VXLAN tunnel and the routes into it.
    DelVxlan {
        /// VNI.
        vni: u32,
    },
    /// Adds a source NAT rule, or replaces the one with the same source and egress port.
    AddSnat(crate::nat::SnatConfig),
    /// Removes a source NAT rule.
    DelSnat {
        /// Sources.
        source: pipelines::IpPrefix,
        /// Egress port.
        out: String,
    },
    /// Adds a Service, or replaces the one with the same identity as a whole.
    AddService(crate::nat::ServiceConfig),
    /// Removes a Service.
    DelService {
        /// Which.
        service: crate::nat::ServiceRef,
    },
    /// Adds a backend to a Service (or changes its weight).
    AddBackend {
        /// Which Service.
        service: crate::nat::ServiceRef,
        /// The backend.
        backend: crate::nat::BackendSpec,
    },
    /// Appends a rule to the set of a port direction (creating the set: from then on, what
    /// no rule allows is denied there).
    AddAclRule {
        /// The port or VRF.
        target: crate::acl::AclAttachment,
        /// Direction.
        direction: pipelines::tables::AclDirection,
        /// The rule.
        rule: crate::acl::AclRuleConfig,
    },
    /// Removes the rule at `position` (1-based, as `acl list` shows it).
    DelAclRule {
        /// The port or VRF.
        target: crate::acl::AclAttachment,
        /// Direction.
        direction: pipelines::tables::AclDirection,
        /// Position.
        position: usize,
    },
    /// Detaches the rule set of a port direction (everything passes again).
    DelAcl {
        /// The port or VRF.
        target: crate::acl::AclAttachment,
        /// Direction.
        direction: pipelines::tables::AclDirection,
    },
    /// Removes a backend from a Service (its established connections continue).
    DelBackend {
        /// Which Service.
        service: crate::nat::ServiceRef,
        /// The backend's address and port.
        backend: std::net::SocketAddr,
    },
}

/// A route to add or replace. Unlike [`crate::config::RouteConfig`], the VRF is optional: a
/// route without one goes to the VRF of its `vxlan` tunnel (as the tunnel is in the desired
/// state when the change is applied), any other route to VRF 0. The CLI cannot know a VNI's
/// VRF; the daemon, which holds the desired state, resolves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteChange {
    /// Destination.
    pub prefix: pipelines::IpPrefix,
    /// VRF, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrf: Option<u32>,
    /// Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<IpAddr>,
    /// Egress port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    /// Drop silently.
    #[serde(default, skip_serializing_if = "is_false")]
    pub blackhole: bool,
    /// Drop with ICMP unreachable.
    #[serde(default, skip_serializing_if = "is_false")]
    pub unreachable: bool,
    /// ECMP paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nexthops: Vec<crate::config::PathConfig>,
    /// Into the tunnel of this VNI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan: Option<u32>,
    /// Remote VTEP of a `vxlan` route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<Ipv4Addr>,
    /// Inner destination MAC of a `vxlan` route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<EthernetAddress>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl RouteChange {
    /// The route in `vrf` (the caller resolves a missing VRF).
    pub fn into_config(self, vrf: u32) -> crate::config::RouteConfig {
        crate::config::RouteConfig {
            prefix: self.prefix,
            vrf,
            via: self.via,
            dev: self.dev,
            blackhole: self.blackhole,
            unreachable: self.unreachable,
            nexthops: self.nexthops,
            vxlan: self.vxlan,
            remote: self.remote,
            mac: self.mac,
        }
    }
}

impl From<crate::config::RouteConfig> for RouteChange {
    fn from(route: crate::config::RouteConfig) -> Self {
        RouteChange {
            prefix: route.prefix,
            vrf: Some(route.vrf),
            via: route.via,
            dev: route.dev,
            blackhole: route.blackhole,
            unreachable: route.unreachable,
            nexthops: route.nexthops,
            vxlan: route.vxlan,
            remote: route.remote,
            mac: route.mac,
        }
    }
}

/// A port to add or update. Unlike [`crate::config::PortConfig`], the VRF is optional: an
/// update leaves the port's VRF alone unless one is given; a new port goes to VRF 0.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortChange {
    /// Linux interface name.
    pub name: String,
    /// VRF, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrf: Option<u32>,
    /// Addresses to add.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<crate::config::Cidr>,
    /// New MTU, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    /// New MAC, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<EthernetAddress>,
}

impl From<crate::config::PortConfig> for PortChange {
    fn from(port: crate::config::PortConfig) -> Self {
        PortChange {
            name: port.name,
            vrf: Some(port.vrf),
            addresses: port.addresses,
            mtu: port.mtu,
            mac: port.mac,
        }
    }
}

/// Requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Opens a session.
    Hello {
        /// Lowest version spoken.
        min_version: u32,
        /// Highest version spoken.
        max_version: u32,
        /// Who is connecting.
        role: Role,
    },
    /// Replaces the whole desired state (daemon -> vrouter on (re)connect; `apply -f`).
    Sync {
        /// The state.
        config: Config,
    },
    /// Applies changes as one transaction.
    Apply {
        /// Changes, in order.
        changes: Vec<Change>,
    },
    /// The desired state.
    ShowConfig,
    /// Ports with their runtime status.
    Ports,
    /// Routes of a VRF (all VRFs if none).
    Routes {
        /// VRF filter.
        vrf: Option<u32>,
    },
    /// Neighbors, static and learned.
    Neighbors,
    /// Counters summed over workers, per port and per stage.
    Stats,
    /// Drop counters by reason.
    Drops,
    /// VXLAN tunnels with their remote VTEPs and counters.
    Vxlans,
    /// Tracked connections of every worker (at most `limit`), with the tables' counters.
    Connections {
        /// Most connections returned.
        limit: usize,
    },
    /// Forgets every tracked connection on every worker.
    FlushConnections,
    /// Flow cache entries.
    Flows {
        /// At most this many.
        limit: usize,
    },
    /// Daemon / dataplane status.
    Status,
}

/// Error classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The message could not be decoded.
    BadMessage,
    /// Hello missing or version mismatch.
    Protocol,
    /// The change was refused; nothing changed.
    Rejected,
    /// The peer (dataplane) is not reachable.
    Unavailable,
    /// Permission denied.
    Denied,
    /// Unexpected failure.
    Internal,
}

/// A port as the dataplane runs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStatus {
    /// Interface.
    pub name: String,
    /// Dataplane id.
    pub id: u16,
    /// Kernel ifindex.
    pub ifindex: u32,
    /// MAC.
    pub mac: EthernetAddress,
    /// MTU.
    pub mtu: u16,
    /// VRF.
    pub vrf: u32,
    /// Addresses.
    pub addresses: Vec<Cidr>,
    /// RX queues bound.
    pub queues: u32,
    /// What the port is: "ethernet" (an interface with AF_XDP sockets) or "vxlan" (a tunnel:
    /// no interface, so `ifindex` and `queues` are 0 and `xdp_mode` is "none").
    #[serde(default = "ethernet_kind")]
    pub kind: String,
    /// VNI of a tunnel port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// XDP attach mode ("native" or "generic"; "none" for a tunnel).
    pub xdp_mode: String,
    /// AF_XDP zero-copy in use.
    pub zero_copy: bool,
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Frames received and dropped.
    pub rx_dropped: u64,
}

fn ethernet_kind() -> String {
    "ethernet".into()
}

/// A route as installed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteEntry {
    /// VRF.
    pub vrf: u32,
    /// Prefix.
    pub prefix: String,
    /// Kind: local, connected, via, blackhole, unreachable, broadcast, multipath, vxlan.
    pub kind: String,
    /// Gateways (via and multipath).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Egress ports (the tunnel port `vxlan<VNI>` for a vxlan route).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devs: Vec<String>,
    /// VNI of a vxlan route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// Remote VTEP of a vxlan route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<Ipv4Addr>,
    /// Inner destination MAC of a vxlan route (the tunnel's own MAC unless one was given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<EthernetAddress>,
}

/// Traffic with one remote VTEP of a tunnel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteEntry {
    /// Remote VTEP.
    pub remote: Ipv4Addr,
    /// Routes of the tunnel's VRF pointing at it.
    pub routes: u64,
    /// Packets decapsulated from it.
    pub rx_packets: u64,
    /// Their outer bytes.
    pub rx_bytes: u64,
    /// Packets encapsulated towards it.
    pub tx_packets: u64,
    /// Their outer bytes.
    pub tx_bytes: u64,
}

/// A VXLAN tunnel as the dataplane runs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanEntry {
    /// VNI.
    pub vni: u32,
    /// Tunnel port name (`vxlan<VNI>`).
    pub name: String,
    /// Tunnel port id.
    pub id: u16,
    /// Overlay VRF.
    pub vrf: u32,
    /// Local VTEP.
    pub local: Ipv4Addr,
    /// Uplink port.
    pub dev: String,
    /// Overlay MAC.
    pub mac: EthernetAddress,
    /// Overlay IP MTU.
    pub mtu: u16,
    /// Outer TTL (0: copied from the inner packet).
    pub ttl: u8,
    /// Outer DF policy.
    pub df: DfPolicy,
    /// Outer UDP checksum computed.
    pub udp_checksum: bool,
    /// Host addresses of the tunnel port.
    pub addresses: Vec<Cidr>,
    /// Packets decapsulated (received on the tunnel).
    pub rx_packets: u64,
    /// Their inner bytes.
    pub rx_bytes: u64,
    /// Packets encapsulated (sent into the tunnel).
    pub tx_packets: u64,
    /// Their inner bytes.
    pub tx_bytes: u64,
    /// Remote VTEPs that routes point at or that traffic was exchanged with, by address.
    pub remotes: Vec<RemoteEntry>,
}

/// A neighbor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighborEntry {
    /// Port.
    pub dev: String,
    /// Address.
    pub ip: IpAddr,
    /// MAC.
    pub mac: EthernetAddress,
    /// Static or learned.
    pub kind: NeighborKind,
    /// Seconds since confirmed (learned entries).
    pub age_secs: Option<u64>,
}

/// A drop reason with its count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropEntry {
    /// Stable name.
    pub reason: String,
    /// Description.
    pub description: String,
    /// Packets.
    pub count: u64,
}

/// Runtime statistics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatsReport {
    /// Workers running.
    pub workers: usize,
    /// Table generation in use.
    pub generation: u64,
    /// Counters summed over workers.
    pub counters: Counters,
    /// Per-stage figures by stage name.
    pub stages: Vec<(String, StageStats)>,
    /// Port names by id.
    pub port_names: Vec<(u16, String)>,
    /// Frames handed to TX that the ring did not take, summed.
    pub tx_dropped: u64,
    /// Wakeup syscalls made (TX kicks and RX wakeups).
    pub wakeups: u64,
    /// Nanoseconds the workers spent in TX kicks (copy mode transmits inside them).
    #[serde(default)]
    pub tx_kick_nanos: u64,
    /// Nanoseconds the workers spent in busy polls (`vrouter --busy-poll`).
    #[serde(default)]
    pub rx_poll_nanos: u64,
    /// Frames the kernel dropped because an RX ring was full (workers behind).
    #[serde(default)]
    pub rx_ring_full: u64,
    /// Times the kernel found a fill ring empty (frames not given back in time).
    #[serde(default)]
    pub fill_ring_empty: u64,
}

/// A flow for display.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowEntry {
    /// Worker index.
    pub worker: usize,
    /// The record.
    pub record: FlowRecord,
    /// Egress port name.
    pub out_dev: String,
}

/// A tracked connection for display.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionEntry {
    /// Worker index.
    pub worker: usize,
    /// The connection.
    pub connection: pipelines::conntrack::Connection,
}

/// The connection tables, summed over workers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackReport {
    /// Counters.
    pub counters: pipelines::conntrack::ConntrackCounters,
    /// Connections the tables can hold.
    pub capacity: u64,
    /// Bytes the tables take.
    pub memory_bytes: u64,
    /// Connections (at most the requested number).
    pub connections: Vec<ConnectionEntry>,
}

/// Status of the daemon and dataplane.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Who answers.
    pub server: String,
    /// Connected to the dataplane (daemon) / to a daemon (dataplane).
    pub peer_connected: bool,
    /// Desired state pushed to the dataplane and accepted.
    pub in_sync: bool,
    /// Last error of a sync, if any.
    pub last_error: Option<String>,
    /// Table generation of the dataplane, if known.
    pub generation: Option<u64>,
}

/// Responses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// Session opened.
    Hello {
        /// Agreed version.
        version: u32,
        /// Server identity.
        server: String,
    },
    /// Done.
    Ok {
        /// Table generation after the change (0 if not applied to a dataplane yet).
        generation: u64,
    },
    /// Failed; nothing changed.
    Error {
        /// Class.
        code: ErrorCode,
        /// What was wrong.
        message: String,
    },
    /// Desired state.
    Config {
        /// The state.
        config: Config,
    },
    /// Ports.
    Ports {
        /// Ports.
        ports: Vec<PortStatus>,
    },
    /// Routes.
    Routes {
        /// Routes.
        routes: Vec<RouteEntry>,
    },
    /// Neighbors.
    Neighbors {
        /// Neighbors.
        neighbors: Vec<NeighborEntry>,
    },
    /// Stats.
    Stats {
        /// Report.
        stats: Box<StatsReport>,
    },
    /// Drops.
    Drops {
        /// Non-zero and zero reasons.
        drops: Vec<DropEntry>,
    },
    /// VXLAN tunnels.
    Vxlans {
        /// Tunnels by VNI.
        vxlans: Vec<VxlanEntry>,
    },
    /// Flows.
    Flows {
        /// Flows.
        flows: Vec<FlowEntry>,
    },
    /// Tracked connections.
    Connections {
        /// The tables and their connections.
        conntrack: Box<ConntrackReport>,
    },
    /// Connections forgotten by a flush.
    Flushed {
        /// How many.
        connections: u64,
    },
    /// Status.
    Status {
        /// Status.
        status: Status,
    },
}

impl Response {
    /// An error response.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Response::Error {
            code,
            message: message.into(),
        }
    }
}

impl From<ConfigError> for Response {
    fn from(e: ConfigError) -> Self {
        Response::error(ErrorCode::Rejected, e.to_string())
    }
}

/// Framing errors.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// I/O.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// Wrong magic.
    #[error("bad magic {0:02x?}: not a vrouter control peer")]
    BadMagic([u8; 4]),
    /// Wrong framing version.
    #[error("unsupported framing version {0} (this build speaks {FRAME_VERSION})")]
    BadVersion(u16),
    /// Wrong kind.
    #[error("unexpected frame kind {0}")]
    BadKind(u16),
    /// Too big.
    #[error("message of {0} bytes exceeds the limit of {MAX_BODY}")]
    TooLarge(usize),
    /// Peer closed.
    #[error("connection closed")]
    Closed,
    /// Body not understood (the stream stays in sync).
    #[error("bad message: {0}")]
    BadBody(String),
}

impl FrameError {
    /// True if the stream cannot continue after this error.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, FrameError::BadBody(_))
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Request or response.
    pub kind: u16,
    /// Request id.
    pub id: u32,
    /// Body length.
    pub length: usize,
}

/// Parses and checks a header.
pub fn decode_header(bytes: &[u8; HEADER_LEN]) -> Result<Header, FrameError> {
    let magic: [u8; 4] = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if magic != MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    let version = u16::from_be_bytes([bytes[4], bytes[5]]);
    if version != FRAME_VERSION {
        return Err(FrameError::BadVersion(version));
    }
    let kind = u16::from_be_bytes([bytes[6], bytes[7]]);
    if kind != KIND_REQUEST && kind != KIND_RESPONSE {
        return Err(FrameError::BadKind(kind));
    }
    let id = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let length = u32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) as usize;
    if length > MAX_BODY {
        return Err(FrameError::TooLarge(length));
    }
    Ok(Header { kind, id, length })
}

/// Encodes a frame.
pub fn encode<T: Serialize>(kind: u16, id: u32, message: &T) -> Vec<u8> {
    let body = serde_json::to_vec(message).unwrap_or_else(|e| {
        serde_json::to_vec(&Response::error(ErrorCode::Internal, e.to_string())).unwrap_or_default()
    });
    let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&FRAME_VERSION.to_be_bytes());
    frame.extend_from_slice(&kind.to_be_bytes());
    frame.extend_from_slice(&id.to_be_bytes());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// Decodes a body.
pub fn decode_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, FrameError> {
    serde_json::from_slice(body).map_err(|e| FrameError::BadBody(e.to_string()))
}

/// Incremental decoder for non-blocking sockets: feed bytes, take complete frames.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
}

impl FrameDecoder {
    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes waiting.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed, or a fatal error.
    pub fn next_frame(&mut self) -> Result<Option<(Header, Vec<u8>)>, FrameError> {
        if self.buffer.len() < HEADER_LEN {
            return Ok(None);
        }
        let mut raw = [0u8; HEADER_LEN];
        raw.copy_from_slice(&self.buffer[..HEADER_LEN]);
        let header = decode_header(&raw)?;
        if self.buffer.len() < HEADER_LEN + header.length {
            return Ok(None);
        }
        let body = self.buffer[HEADER_LEN..HEADER_LEN + header.length].to_vec();
        self.buffer.drain(..HEADER_LEN + header.length);
        Ok(Some((header, body)))
    }
}

/// Reads one frame from a blocking stream.
pub fn read_frame<R: Read>(reader: &mut R) -> Result<(Header, Vec<u8>), FrameError> {
    let mut raw = [0u8; HEADER_LEN];
    match reader.read_exact(&mut raw) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let header = decode_header(&raw)?;
    // Grow with what actually arrives: a header announcing 256 MiB must not make us reserve
    // 256 MiB before the peer has sent anything.
    let mut body = Vec::with_capacity(header.length.min(64 * 1024));
    let read = reader.take(header.length as u64).read_to_end(&mut body)?;
    if read < header.length {
        return Err(FrameError::Closed);
    }
    Ok((header, body))
}

/// Writes one frame to a blocking stream.
pub fn write_frame<W: Write, T: Serialize>(
    writer: &mut W,
    kind: u16,
    id: u32,
    message: &T,
) -> io::Result<()> {
    writer.write_all(&encode(kind, id, message))?;
    writer.flush()
}

/// Picks the version for a hello, or explains the mismatch.
pub fn negotiate(min_version: u32, max_version: u32) -> Result<u32, String> {
    let high = max_version.min(PROTOCOL_MAX);
    let low = min_version.max(PROTOCOL_MIN);
    if low > high {
        return Err(format!(
            "no common protocol version: peer speaks {min_version}-{max_version}, this build {PROTOCOL_MIN}-{PROTOCOL_MAX}"
        ));
    }
    Ok(high)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_through_the_decoder_in_pieces() {
        let request = Request::Routes { vrf: Some(3) };
        let frame = encode(KIND_REQUEST, 42, &request);
        let mut decoder = FrameDecoder::default();
        for byte in &frame[..frame.len() - 1] {
            decoder.push(std::slice::from_ref(byte));
            assert!(decoder.next_frame().unwrap().is_none());
        }
        decoder.push(&frame[frame.len() - 1..]);
        let (header, body) = decoder.next_frame().unwrap().unwrap();
        assert_eq!(header.id, 42);
        assert_eq!(header.kind, KIND_REQUEST);
        assert_eq!(decode_body::<Request>(&body).unwrap(), request);
    }

    #[test]
    fn bad_frames_are_rejected() {
        let mut frame = encode(KIND_REQUEST, 1, &Request::Status);
        frame[0] = b'X';
        let mut d = FrameDecoder::default();
        d.push(&frame);
        assert!(matches!(d.next_frame(), Err(FrameError::BadMagic(_))));

        let mut frame = encode(KIND_REQUEST, 1, &Request::Status);
        frame[12..16].copy_from_slice(&(MAX_BODY as u32 + 1).to_be_bytes());
        let mut d = FrameDecoder::default();
        d.push(&frame);
        assert!(matches!(d.next_frame(), Err(FrameError::TooLarge(_))));

        let mut frame = encode(KIND_REQUEST, 1, &Request::Status);
        frame[5] = 9;
        let mut d = FrameDecoder::default();
        d.push(&frame);
        assert!(matches!(d.next_frame(), Err(FrameError::BadVersion(9))));

        let garbage = encode(KIND_REQUEST, 1, &serde_json::json!({"type": "reboot"}));
        let mut d = FrameDecoder::default();
        d.push(&garbage);
        let (_, body) = d.next_frame().unwrap().unwrap();
        let err = decode_body::<Request>(&body).unwrap_err();
        assert!(!err.is_fatal());
    }

    #[test]
    fn a_promised_body_that_never_comes_is_a_closed_connection() {
        let mut frame = encode(KIND_REQUEST, 1, &Request::Status);
        frame[12..16].copy_from_slice(&(MAX_BODY as u32).to_be_bytes());
        let mut reader = std::io::Cursor::new(frame);
        assert!(matches!(read_frame(&mut reader), Err(FrameError::Closed)));
    }

    #[test]
    fn route_changes_say_when_no_vrf_was_given() {
        let change = Change::AddRoute(RouteChange {
            prefix: "10.244.2.0/24".parse().unwrap(),
            vrf: None,
            via: None,
            dev: None,
            blackhole: false,
            unreachable: false,
            nexthops: vec![],
            vxlan: Some(100),
            remote: Some("192.168.100.2".parse().unwrap()),
            mac: None,
        });
        let json = serde_json::to_value(&change).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"op": "add_route", "prefix": "10.244.2.0/24", "vxlan": 100, "remote": "192.168.100.2"})
        );
        assert_eq!(serde_json::from_value::<Change>(json).unwrap(), change);
        // What a client built before VXLAN sends still means the same route.
        let old: Change = serde_json::from_str(
            r#"{"op": "add_route", "prefix": "10.9.0.0/16", "vrf": 0, "via": "10.0.1.2"}"#,
        )
        .unwrap();
        assert!(matches!(
            old,
            Change::AddRoute(RouteChange { vrf: Some(0), .. })
        ));
        let vxlan: Change = serde_json::from_str(
            r#"{"op": "add_vxlan", "vni": 100, "vrf": 1, "local": "192.168.100.1", "dev": "eth0", "df": "inherit"}"#,
        )
        .unwrap();
        let Change::AddVxlan(v) = vxlan else {
            panic!("{vxlan:?}")
        };
        assert_eq!((v.ttl, v.df), (64, DfPolicy::Inherit));
        let request = Request::Vxlans;
        let frame = encode(KIND_REQUEST, 1, &request);
        assert_eq!(
            decode_body::<Request>(&frame[HEADER_LEN..]).unwrap(),
            request
        );
    }

    #[test]
    fn version_negotiation() {
        assert_eq!(negotiate(1, 5), Ok(1));
        assert!(negotiate(2, 3).is_err());
    }

    proptest! {
        #[test]
        fn decoder_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
            let mut d = FrameDecoder::default();
            for c in chunks {
                d.push(&c);
                match d.next_frame() {
                    Ok(Some((_, body))) => { let _ = decode_body::<Request>(&body); }
                    Ok(None) => {}
                    Err(_) => break,
                }
            }
        }
    }
}
