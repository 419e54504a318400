//! The dataplane's tables: ports, VRFs with their IPv4/IPv6 routes, shared next hops and
//! neighbors, changed only through transactions.
//!
//! Contract:
//! - [`Tables::apply_batch`] validates and applies a batch of [`TableOp`]s in order; if any op
//!   is rejected, every earlier op of the batch is undone (an undo log of exact inverses) and
//!   the tables are as before, byte for byte in behaviour. The error names the op and why.
//! - Every successful batch that changes forwarding bumps [`Tables::generation`]; flow-cache
//!   entries computed under an older generation are never used again.
//! - Nothing in here panics on any op: ids, prefixes, addresses and MACs are all validated.
//!
//! Adding an address to a port installs, as the kernel does, its connected route (the subnet
//! via the port), a receive route for the address itself and, for IPv4 subnets up to /30,
//! a drop route for the directed broadcast address. Deleting a port removes its addresses,
//! every route whose next hop uses it and its neighbors.
//!
//! Limitations, chosen: route origin (connected vs static) is not stored separately, a route
//! is shown by its next hop; removing an address does not remove static routes via gateways
//! on that subnet (the kernel does); they keep forwarding while the neighbor resolves.

pub mod nat;
mod neighbor;
mod nexthop;

pub use nat::{Backend, Frontend, L4Protocol, Service, ServiceKey, SnatKey, SnatRule};
pub use neighbor::{Neighbor, NeighborKind, NeighborTable};
pub use nexthop::{NextHop, NextHopTable};

use crate::hash::FastMap;
use crate::ids::{NextHopId, PortId, VrfId};
use crate::lpm::{Ipv4Lpm, Ipv4Prefix, Ipv6Lpm, Ipv6Prefix, LpmError};
use crate::wire::EthernetAddress;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Highest port id accepted.
pub const MAX_PORTS: u16 = 1024;
/// Smallest MTU accepted on a port (the IPv4 minimum).
pub const MIN_MTU: u16 = 68;
/// Largest MTU accepted on a port (jumbo frames that fit a 16 KiB frame).
pub const MAX_MTU: u16 = 9000;
/// Bytes VXLAN over IPv4 adds in front of the inner frame: outer Ethernet (14), IPv4 (20),
/// UDP (8) and VXLAN (8). The inner Ethernet header rides inside, so the overlay's IP MTU is
/// the underlay's minus 50 (RFC 7348 section 4.3).
pub const VXLAN_OVERHEAD: u16 = 50;
/// Largest VXLAN network identifier (24 bits).
pub const MAX_VNI: u32 = 0x00ff_ffff;

/// An IPv4 or IPv6 prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum IpPrefix {
    /// IPv4.
    V4(Ipv4Prefix),
    /// IPv6.
    V6(Ipv6Prefix),
}

impl IpPrefix {
    /// Builds a prefix, rejecting a length beyond the family's and set host bits.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, LpmError> {
        match addr {
            IpAddr::V4(a) => Ipv4Prefix::new(a, len).map(IpPrefix::V4),
            IpAddr::V6(a) => Ipv6Prefix::new(a, len).map(IpPrefix::V6),
        }
    }

    /// The prefix covering `addr` with `len` bits (host bits cleared).
    pub fn containing(addr: IpAddr, len: u8) -> Result<Self, LpmError> {
        match addr {
            IpAddr::V4(a) => {
                if len > 32 {
                    return Ipv4Prefix::new(a, len).map(IpPrefix::V4);
                }
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                Ipv4Prefix::new(Ipv4Addr::from(u32::from(a) & mask), len).map(IpPrefix::V4)
            }
            IpAddr::V6(a) => {
                if len > 128 {
                    return Ipv6Prefix::new(a, len).map(IpPrefix::V6);
                }
                let mask = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - len)
                };
                Ipv6Prefix::new(Ipv6Addr::from(u128::from(a) & mask), len).map(IpPrefix::V6)
            }
        }
    }

    /// The host route for `addr` (/32 or /128).
    pub fn host(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(a) => IpPrefix::V4(Ipv4Prefix::new(a, 32).expect("/32 is always valid")),
            IpAddr::V6(a) => IpPrefix::V6(Ipv6Prefix::new(a, 128).expect("/128 is always valid")),
        }
    }

    /// Prefix length.
    pub fn prefix_len(&self) -> u8 {
        match self {
            IpPrefix::V4(p) => p.len(),
            IpPrefix::V6(p) => p.len(),
        }
    }

    /// True for the default route.
    pub fn is_default(&self) -> bool {
        self.prefix_len() == 0
    }

    /// Network address.
    pub fn network(&self) -> IpAddr {
        match self {
            IpPrefix::V4(p) => IpAddr::V4(p.network()),
            IpPrefix::V6(p) => IpAddr::V6(p.network()),
        }
    }

    /// True if `addr` is inside the prefix (false across families).
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self, addr) {
            (IpPrefix::V4(p), IpAddr::V4(a)) => p.contains(a),
            (IpPrefix::V6(p), IpAddr::V6(a)) => p.contains(a),
            _ => false,
        }
    }

    /// True if the two prefixes share any address.
    pub fn overlaps(&self, other: &IpPrefix) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpPrefix::V4(p) => p.fmt(f),
            IpPrefix::V6(p) => p.fmt(f),
        }
    }
}

impl FromStr for IpPrefix {
    type Err = LpmError;
    fn from_str(s: &str) -> Result<Self, LpmError> {
        if s.contains(':') {
            s.parse().map(IpPrefix::V6)
        } else {
            s.parse().map(IpPrefix::V4)
        }
    }
}

impl From<IpPrefix> for String {
    fn from(p: IpPrefix) -> String {
        p.to_string()
    }
}

impl TryFrom<String> for IpPrefix {
    type Error = LpmError;
    fn try_from(s: String) -> Result<Self, LpmError> {
        s.parse()
    }
}

/// An address configured on a port, with its subnet length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InterfaceAddress {
    /// The address.
    pub addr: IpAddr,
    /// Subnet length (the connected route).
    pub prefix_len: u8,
}

impl InterfaceAddress {
    /// The connected subnet.
    pub fn subnet(&self) -> Option<IpPrefix> {
        IpPrefix::containing(self.addr, self.prefix_len).ok()
    }

    /// The IPv4 directed-broadcast address, for subnets of up to /30.
    pub fn broadcast(&self) -> Option<Ipv4Addr> {
        match self.addr {
            IpAddr::V4(a) if self.prefix_len <= 30 => {
                let host_mask = u32::MAX >> self.prefix_len;
                Some(Ipv4Addr::from(u32::from(a) | host_mask))
            }
            _ => None,
        }
    }
}

impl fmt::Display for InterfaceAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// The outer DF bit of VXLAN packets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DfPolicy {
    /// Never set: the underlay may fragment (Linux's default for vxlan devices).
    #[default]
    Unset,
    /// Always set.
    Set,
    /// Copied from an inner IPv4 packet (unset for inner IPv6).
    Inherit,
}

/// Encapsulation settings of a VXLAN tunnel port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VxlanParams {
    /// VXLAN network identifier (24 bits).
    pub vni: u32,
    /// Local VTEP: an IPv4 address of the uplink port, the outer source.
    pub local: Ipv4Addr,
    /// The port the underlay is reached through (it holds `local`).
    pub uplink: PortId,
    /// Outer TTL; 0 copies the inner TTL / hop limit (after its decrement).
    pub ttl: u8,
    /// Outer DF bit.
    pub df: DfPolicy,
    /// Compute the outer UDP checksum (RFC 7348: it SHOULD be zero, and a receiver MUST
    /// accept zero; Linux vxlan devices compute it by default).
    pub udp_checksum: bool,
}

/// What a port is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortKind {
    /// A Linux interface with AF_XDP sockets.
    #[default]
    Ethernet,
    /// A logical VXLAN tunnel: frames "sent" on it are encapsulated towards a remote VTEP
    /// and leave through the underlay; decapsulated frames arrive on it in its VRF. It has no
    /// socket of its own.
    Vxlan(VxlanParams),
}

/// A dataplane port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    /// Dense id.
    pub id: PortId,
    /// Linux interface name.
    pub name: String,
    /// The router's MAC on this port (source of everything it sends there).
    pub mac: EthernetAddress,
    /// IP MTU of the link.
    pub mtu: u16,
    /// Routing instance of the port.
    pub vrf: VrfId,
    /// Addresses, in the order they were added.
    pub addresses: Vec<InterfaceAddress>,
    /// IPv6 link-local address derived from the MAC (EUI-64), used for neighbor discovery.
    pub link_local: Ipv6Addr,
    /// Interface or VXLAN tunnel.
    #[serde(default)]
    pub kind: PortKind,
}

impl Port {
    /// The tunnel settings, if this is a VXLAN tunnel port.
    #[inline]
    pub fn vxlan(&self) -> Option<&VxlanParams> {
        match &self.kind {
            PortKind::Vxlan(params) => Some(params),
            PortKind::Ethernet => None,
        }
    }

    /// The first IPv4 address of the port, the source of its ARP requests and ICMP errors.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        self.addresses.iter().find_map(|a| match a.addr {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
    }

    /// The IPv4 address of the port on the subnet containing `peer`, else the first one.
    pub fn ipv4_towards(&self, peer: Ipv4Addr) -> Option<Ipv4Addr> {
        self.addresses
            .iter()
            .find_map(|a| match (a.addr, a.subnet()) {
                (IpAddr::V4(v4), Some(subnet)) if subnet.contains(IpAddr::V4(peer)) => Some(v4),
                _ => None,
            })
            .or_else(|| self.ipv4())
    }

    /// The global IPv6 address of the port on the subnet containing `peer`, else the first
    /// global one, else the link-local one.
    pub fn ipv6_towards(&self, peer: Ipv6Addr) -> Ipv6Addr {
        let mut first = None;
        for a in &self.addresses {
            if let IpAddr::V6(v6) = a.addr {
                if a.subnet().is_some_and(|s| s.contains(IpAddr::V6(peer))) {
                    return v6;
                }
                first.get_or_insert(v6);
            }
        }
        first.unwrap_or(self.link_local)
    }

    /// True if `addr` is on one of the port's connected subnets.
    pub fn on_link(&self, addr: IpAddr) -> bool {
        self.addresses
            .iter()
            .any(|a| a.subnet().is_some_and(|s| s.contains(addr)))
    }
}

/// EUI-64 link-local address for `mac` (RFC 4291 appendix A).
pub fn link_local_from_mac(mac: EthernetAddress) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 0x02,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}

/// A routing instance.
#[derive(Clone, Debug, Default)]
pub struct Vrf {
    /// IPv4 routes.
    pub ipv4: Ipv4Lpm,
    /// IPv6 routes.
    pub ipv6: Ipv6Lpm,
}

impl Vrf {
    /// The next hop id for an exact prefix.
    pub fn get(&self, prefix: IpPrefix) -> Option<NextHopId> {
        match prefix {
            IpPrefix::V4(p) => self.ipv4.get(p),
            IpPrefix::V6(p) => self.ipv6.get(p),
        }
        .map(NextHopId)
    }

    /// Longest-prefix match.
    #[inline]
    pub fn lookup(&self, addr: IpAddr) -> Option<NextHopId> {
        match addr {
            IpAddr::V4(a) => self.ipv4.lookup_u32(u32::from(a)),
            IpAddr::V6(a) => self.ipv6.lookup(a),
        }
        .map(NextHopId)
    }

    /// Number of routes.
    pub fn route_count(&self) -> usize {
        self.ipv4.len() + self.ipv6.len()
    }
}

/// What a route points at, as the operator says it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteTarget {
    /// Drop silently.
    Blackhole,
    /// Drop and send ICMP unreachable.
    Unreachable,
    /// Directly connected on a port.
    Dev {
        /// Egress port.
        port: PortId,
    },
    /// Via a gateway; the port is found from the connected routes when not given.
    Via {
        /// Gateway address.
        gateway: IpAddr,
        /// Egress port, if pinned.
        port: Option<PortId>,
    },
    /// ECMP over several paths (each a `Dev` or a `Via`).
    Multipath(Vec<RouteTarget>),
    /// Into a VXLAN tunnel port (of the route's VRF), towards a remote VTEP.
    Vxlan {
        /// The tunnel port.
        tunnel: PortId,
        /// Remote VTEP.
        remote: Ipv4Addr,
        /// Inner destination MAC; default: the tunnel's own MAC (what another vrouter, which
        /// accepts any unicast inner destination, needs; a Linux peer needs its device's MAC).
        mac: Option<EthernetAddress>,
    },
}

/// One change of a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableOp {
    /// Creates a VRF (also created implicitly by a port or route naming it).
    AddVrf {
        /// VRF id.
        vrf: VrfId,
    },
    /// Deletes a VRF and its routes; refused while a port is in it. VRF 0 cannot be deleted.
    DelVrf {
        /// VRF id.
        vrf: VrfId,
    },
    /// Adds a port.
    AddPort {
        /// Id chosen by the dataplane.
        id: PortId,
        /// Interface name.
        name: String,
        /// Router MAC on the port.
        mac: EthernetAddress,
        /// IP MTU.
        mtu: u16,
        /// VRF.
        vrf: VrfId,
    },
    /// Adds a VXLAN tunnel port: the VNI's frames are decapsulated into `vrf`, and routes
    /// with a [`RouteTarget::Vxlan`] target encapsulate through it. Removed with `DelPort`.
    AddVxlan {
        /// Id chosen by the dataplane.
        id: PortId,
        /// Name (shown in listings; `vxlan<VNI>` by convention).
        name: String,
        /// Overlay MAC: inner source of what we encapsulate.
        mac: EthernetAddress,
        /// Overlay IP MTU; `None`: the uplink's MTU minus 50.
        mtu: Option<u16>,
        /// Overlay VRF.
        vrf: VrfId,
        /// Encapsulation settings.
        params: VxlanParams,
    },
    /// Changes a port's MTU.
    SetPortMtu {
        /// Port.
        id: PortId,
        /// New MTU.
        mtu: u16,
    },
    /// Removes a port with its addresses, routes using it and its neighbors.
    DelPort {
        /// Port.
        id: PortId,
    },
    /// Adds an address to a port, with its connected, receive and broadcast routes.
    AddAddress {
        /// Port.
        port: PortId,
        /// Address and subnet length.
        address: InterfaceAddress,
    },
    /// Removes an address and the routes it installed.
    DelAddress {
        /// Port.
        port: PortId,
        /// Address and subnet length.
        address: InterfaceAddress,
    },
    /// Adds a route; fails if the prefix exists unless `replace`.
    AddRoute {
        /// VRF.
        vrf: VrfId,
        /// Destination.
        prefix: IpPrefix,
        /// Next hop.
        target: RouteTarget,
        /// Replace an existing route instead of failing.
        replace: bool,
    },
    /// Deletes a route.
    DelRoute {
        /// VRF.
        vrf: VrfId,
        /// Destination.
        prefix: IpPrefix,
    },
    /// Adds or replaces a static neighbor.
    AddNeighbor {
        /// Port.
        port: PortId,
        /// Neighbor address.
        ip: IpAddr,
        /// Neighbor MAC.
        mac: EthernetAddress,
    },
    /// Deletes a neighbor (static or learned).
    DelNeighbor {
        /// Port.
        port: PortId,
        /// Neighbor address.
        ip: IpAddr,
    },
    /// Adds or replaces a source NAT rule (same VRF, source prefix and egress port).
    AddSnat {
        /// The rule.
        rule: SnatRule,
    },
    /// Deletes a source NAT rule.
    DelSnat {
        /// Its identity.
        key: SnatKey,
    },
    /// Adds or replaces a Service (same VRF, frontend and protocol).
    AddService {
        /// The Service.
        service: Service,
    },
    /// Deletes a Service.
    DelService {
        /// Its identity.
        key: ServiceKey,
    },
    /// Attaches a rule set to one direction of a port, or replaces the one attached (the
    /// whole set in one op: a 10k-rule policy is one transaction). An empty set denies
    /// everything (a policy selects the port).
    SetAcl {
        /// Port.
        port: PortId,
        /// Direction.
        direction: AclDirection,
        /// Rules.
        rules: Vec<crate::acl::AclRule>,
    },
    /// Detaches the rule set of one direction of a port (everything passes again).
    DelAcl {
        /// Port.
        port: PortId,
        /// Direction.
        direction: AclDirection,
    },
    /// Attaches a rule set to one direction of a VRF, or replaces it: `In` sees every packet
    /// entering the VRF (received on one of its ports or decapsulated into it), `Out` every
    /// packet leaving through one of its ports (tunnels included). It applies on top of the
    /// port sets: every attached set on the way must allow a connection.
    SetVrfAcl {
        /// VRF.
        vrf: VrfId,
        /// Direction.
        direction: AclDirection,
        /// Rules.
        rules: Vec<crate::acl::AclRule>,
    },
    /// Detaches the rule set of one direction of a VRF.
    DelVrfAcl {
        /// VRF.
        vrf: VrfId,
        /// Direction.
        direction: AclDirection,
    },
    /// Records a neighbor learned from ARP/ND at time `now_ns`. Never overrides a static one;
    /// refreshing with the same MAC does not change forwarding (no generation bump).
    LearnNeighbor {
        /// Port.
        port: PortId,
        /// Neighbor address.
        ip: IpAddr,
        /// Neighbor MAC.
        mac: EthernetAddress,
        /// Monotonic time of the observation.
        now_ns: u64,
    },
}

/// Why an op was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// Port id out of range.
    #[error("port id {0} out of range (max {max})", max = MAX_PORTS - 1)]
    PortIdOutOfRange(u16),
    /// Port id already used.
    #[error("port id {0} already in use")]
    PortIdInUse(u16),
    /// Name already used.
    #[error("interface {0} is already a port")]
    PortNameInUse(String),
    /// Bad interface name.
    #[error("invalid interface name {0:?} (1-15 characters, no '/' or whitespace)")]
    BadPortName(String),
    /// Unknown port.
    #[error("unknown port {0}")]
    UnknownPort(PortId),
    /// Bad MTU.
    #[error("MTU {0} out of range {MIN_MTU}-{MAX_MTU}")]
    BadMtu(u16),
    /// Bad MAC.
    #[error("MAC {0} is not a unicast address")]
    BadMac(EthernetAddress),
    /// VRF id out of range.
    #[error("VRF {0} out of range (max {max})", max = VrfId::MAX)]
    VrfOutOfRange(u32),
    /// Unknown VRF.
    #[error("unknown VRF {0}")]
    UnknownVrf(VrfId),
    /// VRF still used.
    #[error("VRF {vrf} is in use by port {port}")]
    VrfInUse {
        /// The VRF.
        vrf: VrfId,
        /// A port in it.
        port: String,
    },
    /// VRF 0 is permanent.
    #[error("VRF 0 cannot be deleted")]
    DefaultVrf,
    /// Bad prefix.
    #[error("bad prefix: {0}")]
    BadPrefix(#[from] LpmError),
    /// Address unusable on an interface.
    #[error(
        "address {0} cannot be assigned to a port (multicast, loopback, unspecified or broadcast)"
    )]
    BadAddress(IpAddr),
    /// Address already present.
    #[error("address {address} already configured on {port}")]
    AddressExists {
        /// The address.
        address: InterfaceAddress,
        /// The port that has it.
        port: String,
    },
    /// Subnet overlaps another port's subnet.
    #[error("subnet {subnet} overlaps {other} on port {port} in the same VRF")]
    OverlappingAddress {
        /// The new subnet.
        subnet: IpPrefix,
        /// The existing subnet.
        other: IpPrefix,
        /// Its port.
        port: String,
    },
    /// Address not configured.
    #[error("address {0} is not configured on that port")]
    NoSuchAddress(InterfaceAddress),
    /// Route exists.
    #[error("route {prefix} already exists in VRF {vrf} (use replace)")]
    RouteExists {
        /// VRF.
        vrf: VrfId,
        /// Prefix.
        prefix: IpPrefix,
    },
    /// Route does not exist.
    #[error("no route {prefix} in VRF {vrf}")]
    NoSuchRoute {
        /// VRF.
        vrf: VrfId,
        /// Prefix.
        prefix: IpPrefix,
    },
    /// Route belongs to an interface address.
    #[error("route {0} belongs to a port address; remove the address instead")]
    AddressRoute(IpPrefix),
    /// Gateway not reachable on any connected subnet.
    #[error(
        "gateway {0} is not on a connected subnet of the VRF (give dev, or add the address first)"
    )]
    GatewayUnreachable(IpAddr),
    /// Gateway of the wrong family or not unicast.
    #[error("gateway {gateway} is not a unicast address of the route's family ({prefix})")]
    BadGateway {
        /// Gateway.
        gateway: IpAddr,
        /// Prefix.
        prefix: IpPrefix,
    },
    /// The port given is in another VRF.
    #[error("port {port} is in VRF {port_vrf}, not VRF {vrf}")]
    PortInOtherVrf {
        /// Port.
        port: String,
        /// Its VRF.
        port_vrf: VrfId,
        /// The route's VRF.
        vrf: VrfId,
    },
    /// Bad multipath.
    #[error("multipath route needs 1-64 paths, each dev or via")]
    BadMultipath,
    /// Bad neighbor address.
    #[error("neighbor address {0} is not a unicast address")]
    BadNeighborAddress(IpAddr),
    /// VNI out of range.
    #[error("VNI {0} out of range (max {MAX_VNI})")]
    VniOutOfRange(u32),
    /// VNI already used.
    #[error("VNI {vni} is already tunnel {port}")]
    VniInUse {
        /// VNI.
        vni: u32,
        /// The tunnel port that has it.
        port: String,
    },
    /// The local VTEP address is not on the uplink.
    #[error("local VTEP {local} is not an address of {uplink}")]
    VtepNotOnUplink {
        /// The address.
        local: Ipv4Addr,
        /// The uplink.
        uplink: String,
    },
    /// The port is not what the op needs.
    #[error("port {port} is not {expected}")]
    WrongPortKind {
        /// Port.
        port: String,
        /// What was needed.
        expected: &'static str,
    },
    /// A port (or address) that a tunnel depends on cannot be removed.
    #[error("{what} is used by VXLAN tunnel {tunnel}; remove the tunnel first")]
    UsedByTunnel {
        /// What is in use.
        what: String,
        /// The tunnel.
        tunnel: String,
    },
    /// Bad remote VTEP.
    #[error("remote VTEP {0} is not a unicast IPv4 address")]
    BadRemoteVtep(Ipv4Addr),
    /// Bad NAT port range.
    #[error("port range {0}-{1} is empty or starts at 0")]
    BadPortRange(u16, u16),
    /// Bad NAT address (translated source, virtual IP or backend).
    #[error("{0} cannot be used here (not unicast, or of the wrong family)")]
    BadNatAddress(IpAddr),
    /// The SNAT address is not the egress port's.
    #[error("SNAT address {addr} is not an address of port {port}")]
    SnatAddressNotOnPort {
        /// The address.
        addr: IpAddr,
        /// The port.
        port: String,
    },
    /// Bad Service or backend port.
    #[error("port {0} is not a valid Service or backend port")]
    BadServicePort(u16),
    /// Too many backends.
    #[error("{0} backends (max {max})", max = nat::MAX_BACKENDS)]
    TooManyBackends(usize),
    /// Zero weight.
    #[error("backend {0} port {1}: weight must be 1-65535")]
    BadWeight(IpAddr, u16),
    /// Duplicate backend.
    #[error("backend {0} port {1} is listed twice")]
    DuplicateBackend(IpAddr, u16),
    /// Zero affinity timeout.
    #[error("client-IP affinity needs a timeout of at least 1 s")]
    BadAffinity,
    /// SNAT rule absent.
    #[error("no SNAT rule for {source} out of port {port} in VRF {vrf}", source = .0.source, port = .0.out_port, vrf = .0.vrf)]
    NoSuchSnat(SnatKey),
    /// Service absent.
    #[error("no service {frontend}/{protocol} in VRF {vrf}", frontend = .0.frontend, protocol = .0.protocol, vrf = .0.vrf)]
    NoSuchService(ServiceKey),
    /// A rule of an ACL is invalid.
    #[error("{0}")]
    Acl(#[from] crate::acl::AclError),
    /// No ACL attached there.
    #[error("no ACL on {0} {1:?}")]
    NoSuchAcl(AclTarget, AclDirection),
    /// Neighbor absent.
    #[error("no neighbor {ip} on port {port}")]
    NoSuchNeighbor {
        /// Port.
        port: PortId,
        /// Address.
        ip: IpAddr,
    },
}

/// A rejected batch: which op (0-based) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("change {index} rejected: {error}")]
pub struct BatchError {
    /// Index of the rejected op in the batch.
    pub index: usize,
    /// The reason.
    pub error: TableError,
}

/// A primitive change with an exact inverse; ops decompose into these.
#[derive(Clone, Debug)]
enum Mutation {
    CreateVrf(VrfId),
    /// Remove an empty VRF.
    RemoveVrf(VrfId),
    InsertPort(Box<Port>),
    RemovePort(PortId),
    SetMtu(PortId, u16),
    AddAddress(PortId, InterfaceAddress),
    /// Re-insert an address at its former position: the inverse of `RemoveAddress`. The
    /// order of a port's addresses is behaviour (the first IPv4 address sources ARP requests
    /// and ICMP errors), so an undo must not move an address to the end.
    InsertAddress(PortId, usize, InterfaceAddress),
    RemoveAddress(PortId, InterfaceAddress),
    SetRoute(VrfId, IpPrefix, NextHopValue),
    RemoveRoute(VrfId, IpPrefix),
    SetNeighbor(PortId, IpAddr, Neighbor),
    RemoveNeighbor(PortId, IpAddr),
    /// Set (Some) or remove (None) an SNAT rule.
    SetSnat(SnatKey, Option<Box<SnatRule>>),
    /// Set (Some) or remove (None) the ACL of a port's or VRF's direction.
    SetAcl((AclTarget, AclDirection), Option<Box<AclPolicy>>),
    /// Set (Some) or remove (None) a Service.
    SetService(ServiceKey, Option<Box<Service>>),
}

/// All tables of the dataplane, one generation.
#[derive(Clone, Debug)]
pub struct Tables {
    generation: u64,
    ports: Vec<Option<Port>>,
    port_names: FastMap<String, PortId>,
    vrfs: Vec<Option<Box<Vrf>>>,
    next_hops: NextHopTable,
    neighbors: NeighborTable,
    /// Tunnel ports with their VNIs (decapsulation index; a handful of entries).
    tunnels: Vec<(PortId, u32)>,
    /// Local VTEP addresses with their uplinks.
    vteps: Vec<(VrfId, Ipv4Addr)>,
    /// Source NAT rules, by identity.
    snat: BTreeMap<SnatKey, SnatRule>,
    /// Services, by identity.
    services: BTreeMap<ServiceKey, Service>,
    /// The Maglev table of every Service with backends, built when the Service is set (on the
    /// control thread), shared by the generations that have the same Service.
    balancers: BTreeMap<ServiceKey, std::sync::Arc<crate::maglev::Maglev>>,
    /// ACLs by port or VRF and direction, compiled.
    acls: BTreeMap<(AclTarget, AclDirection), AclPolicy>,
}

/// What an ACL is attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AclTarget {
    /// A port.
    Port(PortId),
    /// A VRF (every port in it, and its tunnels).
    Vrf(VrfId),
}

impl std::fmt::Display for AclTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AclTarget::Port(port) => write!(f, "port {}", port.0),
            AclTarget::Vrf(vrf) => write!(f, "vrf {}", vrf.0),
        }
    }
}

/// Which packets of a port an ACL sees, from the router's side: `In`, those received on the
/// port (what a pod sends: its Kubernetes egress); `Out`, those sent out of it (what reaches
/// the pod: its Kubernetes ingress).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AclDirection {
    /// Received on the port.
    In,
    /// Sent out of the port.
    Out,
}

/// An attached rule set and its compiled classifier (shared by the table generations that
/// have it).
#[derive(Clone, Debug)]
pub struct AclPolicy {
    /// The rules as given.
    pub rules: Vec<crate::acl::AclRule>,
    /// Compiled.
    pub classifier: std::sync::Arc<crate::acl::Classifier>,
}

impl Default for Tables {
    fn default() -> Self {
        Self::new()
    }
}

impl Tables {
    /// Empty tables with VRF 0.
    pub fn new() -> Self {
        Tables {
            generation: 1,
            ports: Vec::new(),
            port_names: FastMap::default(),
            vrfs: vec![Some(Box::default())],
            next_hops: NextHopTable::new(),
            neighbors: NeighborTable::new(),
            tunnels: Vec::new(),
            vteps: Vec::new(),
            snat: BTreeMap::new(),
            services: BTreeMap::new(),
            balancers: BTreeMap::new(),
            acls: BTreeMap::new(),
        }
    }

    /// Generation: bumped by every batch that changes forwarding.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// A port by id.
    #[inline]
    pub fn port(&self, id: PortId) -> Option<&Port> {
        self.ports.get(id.0 as usize).and_then(Option::as_ref)
    }

    /// A port by interface name.
    pub fn port_by_name(&self, name: &str) -> Option<&Port> {
        self.port_names.get(name).and_then(|&id| self.port(id))
    }

    /// All ports in id order.
    pub fn ports(&self) -> impl Iterator<Item = &Port> + '_ {
        self.ports.iter().filter_map(Option::as_ref)
    }

    /// Lowest unused port id.
    pub fn free_port_id(&self) -> Option<PortId> {
        (0..MAX_PORTS)
            .map(PortId)
            .find(|id| self.port(*id).is_none())
    }

    /// A VRF by id.
    #[inline]
    pub fn vrf(&self, id: VrfId) -> Option<&Vrf> {
        self.vrfs.get(id.0 as usize).and_then(|v| v.as_deref())
    }

    /// Existing VRF ids.
    pub fn vrf_ids(&self) -> impl Iterator<Item = VrfId> + '_ {
        self.vrfs
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_some())
            .map(|(i, _)| VrfId(i as u32))
    }

    /// The next-hop table.
    #[inline]
    pub fn next_hops(&self) -> &NextHopTable {
        &self.next_hops
    }

    /// A next hop by id.
    #[inline]
    pub fn next_hop(&self, id: NextHopId) -> Option<&NextHop> {
        self.next_hops.get(id)
    }

    /// The neighbor table.
    #[inline]
    pub fn neighbors(&self) -> &NeighborTable {
        &self.neighbors
    }

    /// Source NAT rules in identity order.
    pub fn snat_rules(&self) -> impl Iterator<Item = &SnatRule> + '_ {
        self.snat.values()
    }

    /// The SNAT rule for a connection from `src` leaving through `out_port`: the one with
    /// the longest matching source prefix.
    pub fn snat_for(&self, out_port: PortId, src: IpAddr) -> Option<&SnatRule> {
        self.snat
            .values()
            .filter(|r| r.out_port == out_port && r.source.contains(src))
            .max_by_key(|r| r.source.prefix_len())
    }

    /// Services in identity order.
    pub fn services(&self) -> impl Iterator<Item = &Service> + '_ {
        self.services.values()
    }

    /// A Service by identity with its Maglev table (`None` when it has no backend).
    pub fn balancer(&self, key: &ServiceKey) -> Option<(&Service, Option<&crate::maglev::Maglev>)> {
        let service = self.services.get(key)?;
        Some((service, self.balancers.get(key).map(|m| &**m)))
    }

    /// Whether any ACL is attached (the packet path skips ACL lookups otherwise).
    pub fn has_acls(&self) -> bool {
        !self.acls.is_empty()
    }

    /// The ACL attached to one direction of a port.
    pub fn acl(&self, port: PortId, direction: AclDirection) -> Option<&AclPolicy> {
        self.acls.get(&(AclTarget::Port(port), direction))
    }

    /// The ACL attached to one direction of a VRF.
    pub fn vrf_acl(&self, vrf: VrfId, direction: AclDirection) -> Option<&AclPolicy> {
        self.acls.get(&(AclTarget::Vrf(vrf), direction))
    }

    /// Every attached ACL, by target and direction.
    pub fn acls(&self) -> impl Iterator<Item = (&(AclTarget, AclDirection), &AclPolicy)> + '_ {
        self.acls.iter()
    }

    /// Whether any Service is configured (the packet path skips Service matching otherwise).
    pub fn has_services(&self) -> bool {
        !self.services.is_empty()
    }

    /// A Service by identity.
    pub fn service(&self, key: &ServiceKey) -> Option<&Service> {
        self.services.get(key)
    }

    /// Routes of a VRF as (prefix, next hop), IPv4 first, in prefix order.
    pub fn routes(&self, vrf: VrfId) -> Vec<(IpPrefix, NextHop)> {
        let Some(table) = self.vrf(vrf) else {
            return Vec::new();
        };
        let v4 = table
            .ipv4
            .iter()
            .map(|(p, nh)| (IpPrefix::V4(p), NextHopId(nh)));
        let v6 = table
            .ipv6
            .iter()
            .map(|(p, nh)| (IpPrefix::V6(p), NextHopId(nh)));
        v4.chain(v6)
            .filter_map(|(p, id)| self.next_hops.get(id).map(|nh| (p, nh.clone())))
            .collect()
    }

    /// Heap bytes of all tables (routes dominate).
    pub fn memory_bytes(&self) -> usize {
        let vrfs: usize = self
            .vrfs
            .iter()
            .flatten()
            .map(|v| std::mem::size_of::<Vrf>() + v.ipv4.memory_bytes() + v.ipv6.memory_bytes())
            .sum();
        vrfs + self.vrfs.capacity() * 8
            + self.ports.capacity() * std::mem::size_of::<Option<Port>>()
            + self.next_hops.memory_bytes()
            + self.neighbors.memory_bytes()
            + self
                .acls
                .values()
                .map(|a| {
                    a.classifier.memory_bytes()
                        + a.rules.len() * std::mem::size_of::<crate::acl::AclRule>()
                })
                .sum::<usize>()
    }

    /// Validates and applies `ops` as one transaction (see the module docs).
    pub fn apply_batch(&mut self, ops: &[TableOp]) -> Result<(), BatchError> {
        let mut undo: Vec<Mutation> = Vec::new();
        let mut forwarding_changed = false;
        for (index, op) in ops.iter().enumerate() {
            match self.apply_op(op, &mut undo) {
                Ok(changed) => forwarding_changed |= changed,
                Err(error) => {
                    while let Some(m) = undo.pop() {
                        // Inverses restore a state that existed, so they cannot fail.
                        let _ = self.mutate(m);
                    }
                    return Err(BatchError { index, error });
                }
            }
        }
        if forwarding_changed {
            self.generation += 1;
        }
        Ok(())
    }

    /// Applies one op, recording inverses; returns whether forwarding changed.
    fn set_acl(
        &mut self,
        target: AclTarget,
        direction: AclDirection,
        rules: &[crate::acl::AclRule],
        undo: &mut Vec<Mutation>,
    ) -> Result<bool, TableError> {
        let classifier = crate::acl::Classifier::build(rules)?;
        let policy = AclPolicy {
            rules: rules.to_vec(),
            classifier: std::sync::Arc::new(classifier),
        };
        self.record(
            Mutation::SetAcl((target, direction), Some(Box::new(policy))),
            undo,
        );
        Ok(true)
    }

    fn del_acl(
        &mut self,
        target: AclTarget,
        direction: AclDirection,
        undo: &mut Vec<Mutation>,
    ) -> Result<bool, TableError> {
        if !self.acls.contains_key(&(target, direction)) {
            return Err(TableError::NoSuchAcl(target, direction));
        }
        self.record(Mutation::SetAcl((target, direction), None), undo);
        Ok(true)
    }

    fn apply_op(&mut self, op: &TableOp, undo: &mut Vec<Mutation>) -> Result<bool, TableError> {
        match op {
            TableOp::AddVrf { vrf } => {
                self.ensure_vrf(*vrf, undo)?;
                Ok(true)
            }
            TableOp::DelVrf { vrf } => {
                if vrf.0 == 0 {
                    return Err(TableError::DefaultVrf);
                }
                self.vrf(*vrf).ok_or(TableError::UnknownVrf(*vrf))?;
                if let Some(port) = self.ports().find(|p| p.vrf == *vrf) {
                    return Err(TableError::VrfInUse {
                        vrf: *vrf,
                        port: port.name.clone(),
                    });
                }
                for (prefix, _) in self.routes(*vrf) {
                    self.record(Mutation::RemoveRoute(*vrf, prefix), undo);
                }
                let services: Vec<ServiceKey> = self
                    .services
                    .keys()
                    .filter(|k| k.vrf == *vrf)
                    .copied()
                    .collect();
                for key in services {
                    self.record(Mutation::SetService(key, None), undo);
                }
                for direction in [AclDirection::In, AclDirection::Out] {
                    let key = (AclTarget::Vrf(*vrf), direction);
                    if self.acls.contains_key(&key) {
                        self.record(Mutation::SetAcl(key, None), undo);
                    }
                }
                self.record(Mutation::RemoveVrf(*vrf), undo);
                Ok(true)
            }
            TableOp::AddPort {
                id,
                name,
                mac,
                mtu,
                vrf,
            } => {
                if id.0 >= MAX_PORTS {
                    return Err(TableError::PortIdOutOfRange(id.0));
                }
                if self.port(*id).is_some() {
                    return Err(TableError::PortIdInUse(id.0));
                }
                validate_port_name(name)?;
                if self.port_names.contains_key(name.as_str()) {
                    return Err(TableError::PortNameInUse(name.clone()));
                }
                validate_mtu(*mtu)?;
                if !mac.is_unicast() || mac.0 == [0; 6] {
                    return Err(TableError::BadMac(*mac));
                }
                self.ensure_vrf(*vrf, undo)?;
                let port = Port {
                    id: *id,
                    name: name.clone(),
                    mac: *mac,
                    mtu: *mtu,
                    vrf: *vrf,
                    addresses: Vec::new(),
                    link_local: link_local_from_mac(*mac),
                    kind: PortKind::Ethernet,
                };
                self.record(Mutation::InsertPort(Box::new(port)), undo);
                Ok(true)
            }
            TableOp::AddVxlan {
                id,
                name,
                mac,
                mtu,
                vrf,
                params,
            } => {
                self.add_vxlan(*id, name, *mac, *mtu, *vrf, *params, undo)?;
                Ok(true)
            }
            TableOp::SetPortMtu { id, mtu } => {
                validate_mtu(*mtu)?;
                self.port(*id).ok_or(TableError::UnknownPort(*id))?;
                self.record(Mutation::SetMtu(*id, *mtu), undo);
                Ok(true)
            }
            TableOp::DelPort { id } => {
                let port = self.port(*id).ok_or(TableError::UnknownPort(*id))?.clone();
                if let Some(tunnel) = self.tunnel_using(*id, None) {
                    return Err(TableError::UsedByTunnel {
                        what: format!("port {}", port.name),
                        tunnel,
                    });
                }
                for address in port.addresses.iter().rev() {
                    // The port as it is now, without the addresses already removed: with the
                    // original copy, the last of several addresses sharing a subnet still saw
                    // the others and left the subnet's broadcast route behind.
                    let current = self.port(*id).ok_or(TableError::UnknownPort(*id))?.clone();
                    self.remove_address(&current, *address, undo)?;
                }
                // Routes in any VRF whose next hop (or an ECMP member) uses the port.
                let vrf_ids: Vec<VrfId> = self.vrf_ids().collect();
                for vrf in vrf_ids {
                    for (prefix, nh) in self.routes(vrf) {
                        if self.next_hop_uses_port(&nh, *id) {
                            self.record(Mutation::RemoveRoute(vrf, prefix), undo);
                        }
                    }
                }
                let neighbors: Vec<IpAddr> = self
                    .neighbors
                    .iter()
                    .filter(|((p, _), _)| *p == *id)
                    .map(|((_, ip), _)| *ip)
                    .collect();
                for ip in neighbors {
                    self.record(Mutation::RemoveNeighbor(*id, ip), undo);
                }
                let rules: Vec<SnatKey> = self
                    .snat
                    .keys()
                    .filter(|k| k.out_port == *id)
                    .copied()
                    .collect();
                for key in rules {
                    self.record(Mutation::SetSnat(key, None), undo);
                }
                for direction in [AclDirection::In, AclDirection::Out] {
                    let key = (AclTarget::Port(*id), direction);
                    if self.acls.contains_key(&key) {
                        self.record(Mutation::SetAcl(key, None), undo);
                    }
                }
                self.record(Mutation::RemovePort(*id), undo);
                Ok(true)
            }
            TableOp::AddAddress { port, address } => {
                self.add_address(*port, *address, undo)?;
                Ok(true)
            }
            TableOp::DelAddress { port, address } => {
                let port = self
                    .port(*port)
                    .ok_or(TableError::UnknownPort(*port))?
                    .clone();
                if !port.addresses.contains(address) {
                    return Err(TableError::NoSuchAddress(*address));
                }
                if let Some(tunnel) = self.tunnel_using(port.id, Some(address.addr)) {
                    return Err(TableError::UsedByTunnel {
                        what: format!("address {address}"),
                        tunnel,
                    });
                }
                self.remove_address(&port, *address, undo)?;
                Ok(true)
            }
            TableOp::AddRoute {
                vrf,
                prefix,
                target,
                replace,
            } => {
                if vrf.0 > VrfId::MAX {
                    return Err(TableError::VrfOutOfRange(vrf.0));
                }
                let next_hop = self.resolve_target(*vrf, *prefix, target)?;
                if let Some(existing) = self.vrf(*vrf).and_then(|v| v.get(*prefix)) {
                    if matches!(
                        self.next_hop(existing),
                        Some(NextHop::Receive | NextHop::Broadcast)
                    ) {
                        return Err(TableError::AddressRoute(*prefix));
                    }
                    if !replace {
                        return Err(TableError::RouteExists {
                            vrf: *vrf,
                            prefix: *prefix,
                        });
                    }
                }
                self.ensure_vrf(*vrf, undo)?;
                self.record(Mutation::SetRoute(*vrf, *prefix, next_hop), undo);
                Ok(true)
            }
            TableOp::DelRoute { vrf, prefix } => {
                let table = self.vrf(*vrf).ok_or(TableError::UnknownVrf(*vrf))?;
                let existing = table.get(*prefix).ok_or(TableError::NoSuchRoute {
                    vrf: *vrf,
                    prefix: *prefix,
                })?;
                if matches!(
                    self.next_hop(existing),
                    Some(NextHop::Receive | NextHop::Broadcast)
                ) {
                    return Err(TableError::AddressRoute(*prefix));
                }
                self.record(Mutation::RemoveRoute(*vrf, *prefix), undo);
                Ok(true)
            }
            TableOp::AddNeighbor { port, ip, mac } => {
                self.port(*port).ok_or(TableError::UnknownPort(*port))?;
                validate_neighbor(*ip, *mac)?;
                let neighbor = Neighbor {
                    mac: *mac,
                    kind: NeighborKind::Static,
                    confirmed_ns: 0,
                };
                self.record(Mutation::SetNeighbor(*port, *ip, neighbor), undo);
                Ok(true)
            }
            TableOp::DelNeighbor { port, ip } => {
                if self.neighbors.get(*port, *ip).is_none() {
                    return Err(TableError::NoSuchNeighbor {
                        port: *port,
                        ip: *ip,
                    });
                }
                self.record(Mutation::RemoveNeighbor(*port, *ip), undo);
                Ok(true)
            }
            TableOp::AddSnat { rule } => {
                nat::validate_snat(rule)?;
                self.check_port_in_vrf(rule.out_port, rule.vrf)?;
                self.check_ethernet(rule.out_port)?;
                if let Some(to) = rule.to {
                    let port = self
                        .port(rule.out_port)
                        .ok_or(TableError::UnknownPort(rule.out_port))?;
                    if !port.addresses.iter().any(|a| a.addr == to) {
                        return Err(TableError::SnatAddressNotOnPort {
                            addr: to,
                            port: port.name.clone(),
                        });
                    }
                }
                self.record(
                    Mutation::SetSnat(rule.key(), Some(Box::new(rule.clone()))),
                    undo,
                );
                Ok(true)
            }
            TableOp::SetAcl {
                port,
                direction,
                rules,
            } => {
                self.port(*port).ok_or(TableError::UnknownPort(*port))?;
                self.set_acl(AclTarget::Port(*port), *direction, rules, undo)
            }
            TableOp::SetVrfAcl {
                vrf,
                direction,
                rules,
            } => {
                self.vrf(*vrf).ok_or(TableError::UnknownVrf(*vrf))?;
                self.set_acl(AclTarget::Vrf(*vrf), *direction, rules, undo)
            }
            TableOp::DelAcl { port, direction } => {
                self.del_acl(AclTarget::Port(*port), *direction, undo)
            }
            TableOp::DelVrfAcl { vrf, direction } => {
                self.del_acl(AclTarget::Vrf(*vrf), *direction, undo)
            }
            TableOp::DelSnat { key } => {
                if !self.snat.contains_key(key) {
                    return Err(TableError::NoSuchSnat(*key));
                }
                self.record(Mutation::SetSnat(*key, None), undo);
                Ok(true)
            }
            TableOp::AddService { service } => {
                nat::validate_service(service)?;
                self.ensure_vrf(service.key.vrf, undo)?;
                self.record(
                    Mutation::SetService(service.key, Some(Box::new(service.clone()))),
                    undo,
                );
                Ok(true)
            }
            TableOp::DelService { key } => {
                if !self.services.contains_key(key) {
                    return Err(TableError::NoSuchService(*key));
                }
                self.record(Mutation::SetService(*key, None), undo);
                Ok(true)
            }
            TableOp::LearnNeighbor {
                port,
                ip,
                mac,
                now_ns,
            } => {
                self.port(*port).ok_or(TableError::UnknownPort(*port))?;
                validate_neighbor(*ip, *mac)?;
                let previous = self.neighbors.get(*port, *ip).copied();
                if previous.is_some_and(|n| n.kind == NeighborKind::Static) {
                    return Ok(false);
                }
                let neighbor = Neighbor {
                    mac: *mac,
                    kind: NeighborKind::Learned,
                    confirmed_ns: *now_ns,
                };
                self.record(Mutation::SetNeighbor(*port, *ip, neighbor), undo);
                Ok(previous.map(|n| n.mac) != Some(*mac))
            }
        }
    }

    /// Removes learned neighbors not confirmed for `max_age_ns` before `now_ns`; returns
    /// how many. Static neighbors never expire. Bumps the generation if any was removed.
    pub fn expire_neighbors(&mut self, now_ns: u64, max_age_ns: u64) -> usize {
        let removed = self.neighbors.expire(now_ns, max_age_ns);
        if removed > 0 {
            self.generation += 1;
        }
        removed
    }

    fn record(&mut self, mutation: Mutation, undo: &mut Vec<Mutation>) {
        if let Some(inverse) = self.mutate(mutation) {
            undo.push(inverse);
        }
    }

    fn ensure_vrf(&mut self, vrf: VrfId, undo: &mut Vec<Mutation>) -> Result<(), TableError> {
        if vrf.0 > VrfId::MAX {
            return Err(TableError::VrfOutOfRange(vrf.0));
        }
        if self.vrf(vrf).is_none() {
            self.record(Mutation::CreateVrf(vrf), undo);
        }
        Ok(())
    }

    fn next_hop_uses_port(&self, next_hop: &NextHop, port: PortId) -> bool {
        match next_hop {
            NextHop::Ecmp { members } => members
                .iter()
                .any(|m| self.next_hop(*m).and_then(NextHop::port) == Some(port)),
            other => other.port() == Some(port),
        }
    }

    fn add_address(
        &mut self,
        port_id: PortId,
        address: InterfaceAddress,
        undo: &mut Vec<Mutation>,
    ) -> Result<(), TableError> {
        let port = self.port(port_id).ok_or(TableError::UnknownPort(port_id))?;
        let subnet = IpPrefix::containing(address.addr, address.prefix_len)?;
        // A tunnel has no link: a subnet on it would be a connected route with no neighbors.
        // A host address (flannel's 10.244.N.0/32 on flannel.1) sources ICMP errors about
        // packets that arrived through the tunnel.
        if port.vxlan().is_some() && subnet != IpPrefix::host(address.addr) {
            return Err(TableError::WrongPortKind {
                port: port.name.clone(),
                expected: "an Ethernet port (a tunnel takes host addresses only, /32 or /128)",
            });
        }
        if !usable_interface_address(address.addr)
            || address.broadcast() == Some(address_v4(address.addr))
            || (matches!(address.addr, IpAddr::V4(_)) && address.prefix_len <= 30 && {
                let host = u32::from(address_v4(address.addr)) & (u32::MAX >> address.prefix_len);
                host == 0
            })
        {
            return Err(TableError::BadAddress(address.addr));
        }
        let vrf = port.vrf;
        for other in self.ports() {
            for existing in &other.addresses {
                // VRFs are separate address spaces: tenants may reuse an address (every
                // tenant's gateway being 10.0.0.1 is the usual case).
                if existing.addr == address.addr && other.vrf == vrf {
                    return Err(TableError::AddressExists {
                        address: *existing,
                        port: other.name.clone(),
                    });
                }
                // A tunnel's host address may sit inside another port's subnet: flannel puts
                // 10.244.N.0/32 on flannel.1 while the pods' 10.244.N.0/24 is on the bridge.
                // Its receive route is more specific than the connected one; no link shares it.
                let tunnel_host = |p: &Port, a: &InterfaceAddress| {
                    p.vxlan().is_some() && a.subnet() == Some(IpPrefix::host(a.addr))
                };
                if other.vrf == vrf
                    && other.id != port_id
                    && !tunnel_host(port, &address)
                    && !tunnel_host(other, existing)
                {
                    if let Some(other_subnet) = existing.subnet() {
                        if other_subnet.overlaps(&subnet) {
                            return Err(TableError::OverlappingAddress {
                                subnet,
                                other: other_subnet,
                                port: other.name.clone(),
                            });
                        }
                    }
                }
            }
        }
        // The subnet and host routes must not already be static routes the operator owns:
        // the connected route would silently replace one, and removing the address later
        // would delete it.
        if let Some(existing) = self.vrf(vrf).and_then(|v| v.get(subnet)) {
            if self.next_hop(existing) != Some(&NextHop::Connected { port: port_id }) {
                return Err(TableError::RouteExists {
                    vrf,
                    prefix: subnet,
                });
            }
        }
        let host = IpPrefix::host(address.addr);
        if let Some(existing) = self.vrf(vrf).and_then(|v| v.get(host)) {
            if self.next_hop(existing) != Some(&NextHop::Receive) {
                return Err(TableError::RouteExists { vrf, prefix: host });
            }
        }
        self.record(Mutation::AddAddress(port_id, address), undo);
        self.record(
            Mutation::SetRoute(
                vrf,
                subnet,
                NextHopValue::Single(NextHop::Connected { port: port_id }),
            ),
            undo,
        );
        self.record(
            Mutation::SetRoute(vrf, host, NextHopValue::Single(NextHop::Receive)),
            undo,
        );
        if let Some(broadcast) = address.broadcast() {
            self.record(
                Mutation::SetRoute(
                    vrf,
                    IpPrefix::host(IpAddr::V4(broadcast)),
                    NextHopValue::Single(NextHop::Broadcast),
                ),
                undo,
            );
        }
        Ok(())
    }

    fn remove_address(
        &mut self,
        port: &Port,
        address: InterfaceAddress,
        undo: &mut Vec<Mutation>,
    ) -> Result<(), TableError> {
        let subnet = IpPrefix::containing(address.addr, address.prefix_len)?;
        let others_share_subnet = port
            .addresses
            .iter()
            .any(|a| *a != address && a.subnet() == Some(subnet));
        let vrf = port.vrf;
        // Another address of the VRF may have the same broadcast address with a different
        // subnet (10.0.0.1/24 and 10.0.0.129/25): its broadcast route must stay.
        let others_share_broadcast = address.broadcast().is_some_and(|broadcast| {
            self.ports().filter(|p| p.vrf == vrf).any(|p| {
                p.addresses
                    .iter()
                    .any(|a| *a != address && a.broadcast() == Some(broadcast))
            })
        });
        if !others_share_subnet {
            if let Some(broadcast) = address.broadcast().filter(|_| !others_share_broadcast) {
                let prefix = IpPrefix::host(IpAddr::V4(broadcast));
                if self.vrf(vrf).and_then(|v| v.get(prefix)).is_some() {
                    self.record(Mutation::RemoveRoute(vrf, prefix), undo);
                }
            }
            if self.vrf(vrf).and_then(|v| v.get(subnet)).is_some() {
                self.record(Mutation::RemoveRoute(vrf, subnet), undo);
            }
        }
        let host = IpPrefix::host(address.addr);
        if self.vrf(vrf).and_then(|v| v.get(host)).is_some() {
            self.record(Mutation::RemoveRoute(vrf, host), undo);
        }
        self.record(Mutation::RemoveAddress(port.id, address), undo);
        Ok(())
    }

    fn resolve_target(
        &self,
        vrf: VrfId,
        prefix: IpPrefix,
        target: &RouteTarget,
    ) -> Result<NextHopValue, TableError> {
        match target {
            RouteTarget::Blackhole => Ok(NextHopValue::Single(NextHop::Blackhole)),
            RouteTarget::Unreachable => Ok(NextHopValue::Single(NextHop::Unreachable)),
            RouteTarget::Dev { port } => {
                self.check_port_in_vrf(*port, vrf)?;
                self.check_ethernet(*port)?;
                Ok(NextHopValue::Single(NextHop::Connected { port: *port }))
            }
            RouteTarget::Via { gateway, port } => {
                let family_ok = matches!(
                    (prefix, gateway),
                    (IpPrefix::V4(_), IpAddr::V4(_)) | (IpPrefix::V6(_), IpAddr::V6(_))
                );
                if !family_ok || !is_unicast(*gateway) {
                    return Err(TableError::BadGateway {
                        gateway: *gateway,
                        prefix,
                    });
                }
                let port = match port {
                    Some(port) => {
                        self.check_port_in_vrf(*port, vrf)?;
                        self.check_ethernet(*port)?;
                        *port
                    }
                    None => self
                        .ports()
                        .find(|p| p.vrf == vrf && p.vxlan().is_none() && p.on_link(*gateway))
                        .map(|p| p.id)
                        .ok_or(TableError::GatewayUnreachable(*gateway))?,
                };
                Ok(NextHopValue::Single(NextHop::Gateway {
                    port,
                    gateway: *gateway,
                }))
            }
            RouteTarget::Vxlan {
                tunnel,
                remote,
                mac,
            } => {
                self.check_port_in_vrf(*tunnel, vrf)?;
                let port = self.port(*tunnel).ok_or(TableError::UnknownPort(*tunnel))?;
                if port.vxlan().is_none() {
                    return Err(TableError::WrongPortKind {
                        port: port.name.clone(),
                        expected: "a VXLAN tunnel",
                    });
                }
                if !is_unicast(IpAddr::V4(*remote)) {
                    return Err(TableError::BadRemoteVtep(*remote));
                }
                let mac = mac.unwrap_or(port.mac);
                if !mac.is_unicast() || mac.0 == [0; 6] {
                    return Err(TableError::BadMac(mac));
                }
                Ok(NextHopValue::Single(NextHop::Vxlan {
                    tunnel: *tunnel,
                    remote: *remote,
                    mac,
                }))
            }
            RouteTarget::Multipath(paths) => {
                if paths.is_empty() || paths.len() > 64 {
                    return Err(TableError::BadMultipath);
                }
                // Members are resolved here and acquired by `mutate` (as `Ecmp` of values).
                let mut members = Vec::with_capacity(paths.len());
                for path in paths {
                    match path {
                        RouteTarget::Dev { .. } | RouteTarget::Via { .. } => {
                            if let NextHopValue::Single(member) =
                                self.resolve_target(vrf, prefix, path)?
                            {
                                members.push(member);
                            }
                        }
                        _ => return Err(TableError::BadMultipath),
                    }
                }
                Ok(NextHopValue::Ecmp(members))
            }
        }
    }

    /// Validates and inserts a VXLAN tunnel port.
    #[allow(clippy::too_many_arguments)]
    fn add_vxlan(
        &mut self,
        id: PortId,
        name: &str,
        mac: EthernetAddress,
        mtu: Option<u16>,
        vrf: VrfId,
        params: VxlanParams,
        undo: &mut Vec<Mutation>,
    ) -> Result<(), TableError> {
        if id.0 >= MAX_PORTS {
            return Err(TableError::PortIdOutOfRange(id.0));
        }
        if self.port(id).is_some() {
            return Err(TableError::PortIdInUse(id.0));
        }
        validate_port_name(name)?;
        if self.port_names.contains_key(name) {
            return Err(TableError::PortNameInUse(name.to_string()));
        }
        if params.vni > MAX_VNI {
            return Err(TableError::VniOutOfRange(params.vni));
        }
        if let Some(other) = self.tunnel_by_vni(params.vni) {
            return Err(TableError::VniInUse {
                vni: params.vni,
                port: other.name.clone(),
            });
        }
        if !mac.is_unicast() || mac.0 == [0; 6] {
            return Err(TableError::BadMac(mac));
        }
        let uplink = self
            .port(params.uplink)
            .ok_or(TableError::UnknownPort(params.uplink))?;
        if uplink.vxlan().is_some() {
            return Err(TableError::WrongPortKind {
                port: uplink.name.clone(),
                expected: "an Ethernet port",
            });
        }
        if !uplink
            .addresses
            .iter()
            .any(|a| a.addr == IpAddr::V4(params.local))
        {
            return Err(TableError::VtepNotOnUplink {
                local: params.local,
                uplink: uplink.name.clone(),
            });
        }
        let mtu = match mtu {
            Some(mtu) => mtu,
            None => uplink.mtu.saturating_sub(VXLAN_OVERHEAD),
        };
        validate_mtu(mtu)?;
        self.ensure_vrf(vrf, undo)?;
        let port = Port {
            id,
            name: name.to_string(),
            mac,
            mtu,
            vrf,
            addresses: Vec::new(),
            link_local: link_local_from_mac(mac),
            kind: PortKind::Vxlan(params),
        };
        self.record(Mutation::InsertPort(Box::new(port)), undo);
        Ok(())
    }

    /// The tunnel port of a VNI.
    pub fn tunnel_by_vni(&self, vni: u32) -> Option<&Port> {
        self.ports()
            .find(|p| p.vxlan().is_some_and(|params| params.vni == vni))
    }

    /// The tunnel whose local VTEP is `local` in the underlay VRF `underlay` (its uplink's)
    /// and whose VNI is `vni`: the decapsulation lookup. Like Linux, a VTEP takes its packets
    /// from any port of its underlay, not only the uplink (a multi-homed node's underlay ECMP
    /// may bring them in through another port).
    #[inline]
    pub fn tunnel_for(&self, underlay: VrfId, local: Ipv4Addr, vni: u32) -> Option<&Port> {
        self.tunnels.iter().find_map(|&(id, tunnel_vni)| {
            if tunnel_vni != vni {
                return None;
            }
            let port = self.port(id)?;
            let params = port.vxlan()?;
            let uplink_vrf = self.port(params.uplink)?.vrf;
            (uplink_vrf == underlay && params.local == local).then_some(port)
        })
    }

    /// True if `addr` is a local VTEP in the underlay VRF `underlay` (so UDP 4789 to it is
    /// VXLAN for us).
    #[inline]
    pub fn is_vtep(&self, underlay: VrfId, addr: Ipv4Addr) -> bool {
        self.vteps.iter().any(|&(v, a)| v == underlay && a == addr)
    }

    /// Name of a tunnel that uses `port` as its uplink (and `addr` as its VTEP, if given).
    fn tunnel_using(&self, port: PortId, addr: Option<IpAddr>) -> Option<String> {
        self.ports()
            .find(|p| {
                p.vxlan().is_some_and(|params| {
                    params.uplink == port && addr.is_none_or(|a| a == IpAddr::V4(params.local))
                })
            })
            .map(|p| p.name.clone())
    }

    /// Rebuilds the small decapsulation indexes after a port change.
    fn reindex_tunnels(&mut self) {
        self.tunnels.clear();
        self.vteps.clear();
        for port in self.ports.iter().flatten() {
            if let PortKind::Vxlan(params) = &port.kind {
                self.tunnels.push((port.id, params.vni));
                // The uplink exists while its tunnel does (its removal is refused), and a
                // port's VRF never changes.
                let Some(underlay) = self
                    .ports
                    .get(params.uplink.0 as usize)
                    .and_then(Option::as_ref)
                    .map(|uplink| uplink.vrf)
                else {
                    continue;
                };
                if !self.vteps.contains(&(underlay, params.local)) {
                    self.vteps.push((underlay, params.local));
                }
            }
        }
    }

    /// Refuses a tunnel port where a route needs a link with neighbors.
    fn check_ethernet(&self, port: PortId) -> Result<(), TableError> {
        let p = self.port(port).ok_or(TableError::UnknownPort(port))?;
        if p.vxlan().is_some() {
            return Err(TableError::WrongPortKind {
                port: p.name.clone(),
                expected: "an Ethernet port (route via a tunnel with a vxlan target)",
            });
        }
        Ok(())
    }

    fn check_port_in_vrf(&self, port: PortId, vrf: VrfId) -> Result<(), TableError> {
        let p = self.port(port).ok_or(TableError::UnknownPort(port))?;
        if p.vrf != vrf {
            return Err(TableError::PortInOtherVrf {
                port: p.name.clone(),
                port_vrf: p.vrf,
                vrf,
            });
        }
        Ok(())
    }

    /// Applies a primitive mutation and returns its inverse (None if it was a no-op).
    fn mutate(&mut self, mutation: Mutation) -> Option<Mutation> {
        match mutation {
            Mutation::CreateVrf(id) => {
                let index = id.0 as usize;
                if self.vrfs.len() <= index {
                    self.vrfs.resize_with(index + 1, || None);
                }
                if self.vrfs[index].is_some() {
                    return None;
                }
                self.vrfs[index] = Some(Box::default());
                Some(Mutation::RemoveVrf(id))
            }
            Mutation::RemoveVrf(id) => {
                let slot = self.vrfs.get_mut(id.0 as usize)?;
                slot.take()?;
                Some(Mutation::CreateVrf(id))
            }
            Mutation::InsertPort(port) => {
                let index = port.id.0 as usize;
                if self.ports.len() <= index {
                    self.ports.resize_with(index + 1, || None);
                }
                self.port_names.insert(port.name.clone(), port.id);
                let id = port.id;
                let tunnel = port.vxlan().is_some();
                self.ports[index] = Some(*port);
                if tunnel {
                    self.reindex_tunnels();
                }
                Some(Mutation::RemovePort(id))
            }
            Mutation::RemovePort(id) => {
                let port = self.ports.get_mut(id.0 as usize)?.take()?;
                self.port_names.remove(&port.name);
                if port.vxlan().is_some() {
                    self.reindex_tunnels();
                }
                Some(Mutation::InsertPort(Box::new(port)))
            }
            Mutation::SetMtu(id, mtu) => {
                let port = self.ports.get_mut(id.0 as usize)?.as_mut()?;
                let old = std::mem::replace(&mut port.mtu, mtu);
                Some(Mutation::SetMtu(id, old))
            }
            Mutation::AddAddress(id, address) => {
                let port = self.ports.get_mut(id.0 as usize)?.as_mut()?;
                port.addresses.push(address);
                Some(Mutation::RemoveAddress(id, address))
            }
            Mutation::InsertAddress(id, position, address) => {
                let port = self.ports.get_mut(id.0 as usize)?.as_mut()?;
                let position = position.min(port.addresses.len());
                port.addresses.insert(position, address);
                Some(Mutation::RemoveAddress(id, address))
            }
            Mutation::RemoveAddress(id, address) => {
                let port = self.ports.get_mut(id.0 as usize)?.as_mut()?;
                let position = port.addresses.iter().position(|a| *a == address)?;
                port.addresses.remove(position);
                Some(Mutation::InsertAddress(id, position, address))
            }
            Mutation::SetRoute(vrf, prefix, next_hop) => {
                let id = self.acquire_value(next_hop);
                let table = self.vrfs.get_mut(vrf.0 as usize)?.as_mut()?;
                let previous = match prefix {
                    IpPrefix::V4(p) => table.ipv4.insert(p, id.0),
                    IpPrefix::V6(p) => table.ipv6.insert(p, id.0),
                };
                match previous {
                    Ok(Some(old)) => {
                        let old_value = self.next_hop_value(NextHopId(old));
                        self.next_hops.release(NextHopId(old));
                        old_value.map(|v| Mutation::SetRoute(vrf, prefix, v))
                    }
                    Ok(None) => Some(Mutation::RemoveRoute(vrf, prefix)),
                    Err(_) => {
                        self.next_hops.release(id);
                        None
                    }
                }
            }
            Mutation::RemoveRoute(vrf, prefix) => {
                let table = self.vrfs.get_mut(vrf.0 as usize)?.as_mut()?;
                let old = match prefix {
                    IpPrefix::V4(p) => table.ipv4.remove(p),
                    IpPrefix::V6(p) => table.ipv6.remove(p),
                }?;
                let old_value = self.next_hop_value(NextHopId(old));
                self.next_hops.release(NextHopId(old));
                old_value.map(|v| Mutation::SetRoute(vrf, prefix, v))
            }
            Mutation::SetNeighbor(port, ip, neighbor) => {
                match self.neighbors.insert(port, ip, neighbor) {
                    Some(previous) => Some(Mutation::SetNeighbor(port, ip, previous)),
                    None => Some(Mutation::RemoveNeighbor(port, ip)),
                }
            }
            Mutation::RemoveNeighbor(port, ip) => {
                let previous = self.neighbors.remove(port, ip)?;
                Some(Mutation::SetNeighbor(port, ip, previous))
            }
            Mutation::SetAcl(key, policy) => {
                let previous = match policy {
                    Some(policy) => self.acls.insert(key, *policy),
                    None => Some(self.acls.remove(&key)?),
                };
                Some(Mutation::SetAcl(key, previous.map(Box::new)))
            }
            Mutation::SetSnat(key, rule) => {
                let previous = match rule {
                    Some(rule) => self.snat.insert(key, *rule),
                    None => Some(self.snat.remove(&key)?),
                };
                Some(Mutation::SetSnat(key, previous.map(Box::new)))
            }
            Mutation::SetService(key, service) => {
                let previous = match service {
                    Some(service) => {
                        match nat::balancer(&service) {
                            Some(maglev) => self.balancers.insert(key, maglev),
                            None => self.balancers.remove(&key),
                        };
                        self.services.insert(key, *service)
                    }
                    None => {
                        self.balancers.remove(&key);
                        Some(self.services.remove(&key)?)
                    }
                };
                Some(Mutation::SetService(key, previous.map(Box::new)))
            }
        }
    }

    /// Acquires a next hop given by value (ECMP members first, then the group).
    fn acquire_value(&mut self, value: NextHopValue) -> NextHopId {
        match value {
            NextHopValue::Single(next_hop) => self.next_hops.acquire(next_hop),
            NextHopValue::Ecmp(members) => {
                let ids: Vec<NextHopId> = members
                    .into_iter()
                    .map(|member| self.next_hops.acquire(member))
                    .collect();
                let group = self.next_hops.acquire(NextHop::Ecmp {
                    members: ids.clone().into(),
                });
                // The group holds its own reference on each member; drop ours.
                for id in ids {
                    self.next_hops.release(id);
                }
                group
            }
        }
    }

    /// The value form of a next hop, to re-acquire it later.
    fn next_hop_value(&self, id: NextHopId) -> Option<NextHopValue> {
        match self.next_hops.get(id)? {
            NextHop::Ecmp { members } => Some(NextHopValue::Ecmp(
                members
                    .iter()
                    .filter_map(|m| self.next_hops.get(*m).cloned())
                    .collect(),
            )),
            other => Some(NextHopValue::Single(other.clone())),
        }
    }
}

/// A next hop by value: what a route mutation carries, so that an inverse can re-create an
/// ECMP group whose members were freed in between.
#[derive(Clone, Debug, PartialEq, Eq)]
enum NextHopValue {
    Single(NextHop),
    Ecmp(Vec<NextHop>),
}

fn validate_port_name(name: &str) -> Result<(), TableError> {
    if name.is_empty()
        || name.len() > 15
        || name.contains('/')
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(TableError::BadPortName(name.to_string()));
    }
    Ok(())
}

fn validate_mtu(mtu: u16) -> Result<(), TableError> {
    if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
        return Err(TableError::BadMtu(mtu));
    }
    Ok(())
}

fn validate_neighbor(ip: IpAddr, mac: EthernetAddress) -> Result<(), TableError> {
    if !is_unicast(ip) {
        return Err(TableError::BadNeighborAddress(ip));
    }
    if !mac.is_unicast() || mac.0 == [0; 6] {
        return Err(TableError::BadMac(mac));
    }
    Ok(())
}

fn address_v4(addr: IpAddr) -> Ipv4Addr {
    match addr {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    }
}

/// True for an address a host or router can use as its own or as a neighbor.
pub fn is_unicast(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            !(a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_broadcast())
        }
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_loopback() || a.is_multicast()),
    }
}

fn usable_interface_address(addr: IpAddr) -> bool {
    is_unicast(addr)
}
