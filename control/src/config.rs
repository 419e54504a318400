//! The desired state: what the operator wants the node's dataplane to be. One TOML document,
//! the same format for the config file, `vrouterctl apply -f`, `vrouterctl show config` and
//! the state the daemon persists.
//!
//! ```toml
//! [[port]]
//! name = "veth-pod1"          # Linux interface
//! vrf = 0                     # default 0
//! addresses = ["10.0.1.1/24", "fd00:1::1/64"]
//! mtu = 1500                  # default: the interface's MTU
//! mac = "02:00:00:00:01:01"   # default: the interface's MAC
//!
//! [[route]]
//! prefix = "10.2.0.0/16"
//! via = "10.0.1.2"            # or: dev = "...", blackhole = true, unreachable = true,
//! dev = "veth-pod1"           #     nexthops = [{ via = "...", dev = "..." }, ...] (ECMP)
//! vrf = 0
//!
//! [[neighbor]]
//! ip = "10.0.1.2"
//! mac = "02:00:00:00:01:02"
//! dev = "veth-pod1"
//!
//! [[vxlan]]                   # overlay: VNI 100 is VRF 0, encapsulated from eth1's address
//! vni = 100
//! vrf = 0
//! local = "192.168.100.1"
//! dev = "eth1"                # the uplink port holding `local`
//!
//! [[route]]                   # pods of another node, behind its VTEP
//! prefix = "10.244.2.0/24"
//! vxlan = 100
//! remote = "192.168.100.2"
//! ```
//! NAT (`[[snat]]`, `[[service]]`) is described in [`crate::nat`].
//!
//! [`Config::parse`] reports syntax errors with their line (from the TOML parser) and
//! semantic errors with the line of the `[[port]]`/`[[route]]`/`[[neighbor]]`/`[[vxlan]]`
//! table at fault.
//!
//! A `[[vxlan]]` becomes a tunnel *port* named `vxlan<VNI>` in the dataplane (no interface, no
//! socket): [`plan`] creates it after its uplink and the uplink's addresses, before the routes,
//! and deletes it before anything it depends on, because the tables refuse to remove an uplink
//! or a VTEP address a tunnel uses. A changed `[[vxlan]]` is re-created (with its routes).
//! Checks that need the dataplane's view (overlapping subnets, gateways on a connected subnet)
//! are made by building the tables in memory ([`Config::check_tables`]), so the daemon refuses
//! such a file before any change reaches the dataplane.

use crate::nat::{ServiceConfig, SnatConfig};
use pipelines::lpm::LpmError;
use pipelines::tables::{
    DfPolicy, InterfaceAddress, RouteTarget, TableOp, Tables, VxlanParams, MAX_VNI, VXLAN_OVERHEAD,
};
use pipelines::wire::EthernetAddress;
use pipelines::{IpPrefix, PortId, VrfId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

/// An address with its subnet length, written `A/LEN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Cidr {
    /// Address.
    pub addr: IpAddr,
    /// Subnet length.
    pub len: u8,
}

impl Cidr {
    /// As the tables' interface address.
    pub fn interface_address(&self) -> InterfaceAddress {
        InterfaceAddress {
            addr: self.addr,
            prefix_len: self.len,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("address {s:?} needs a /LEN"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let len: u8 = len
            .parse()
            .map_err(|_| format!("{len:?} is not a prefix length"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(format!("prefix length {len} exceeds {max}"));
        }
        Ok(Cidr { addr, len })
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.to_string()
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// A port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// Linux interface name.
    pub name: String,
    /// VRF.
    #[serde(default)]
    pub vrf: u32,
    /// Addresses with subnet lengths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<Cidr>,
    /// IP MTU; default: the interface's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    /// Router MAC on the port; default: the interface's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<EthernetAddress>,
}

/// One path of an ECMP route.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathConfig {
    /// Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<IpAddr>,
    /// Egress port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
}

/// A static route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Destination.
    pub prefix: IpPrefix,
    /// VRF.
    #[serde(default)]
    pub vrf: u32,
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
    pub nexthops: Vec<PathConfig>,
    /// Into the tunnel of this VNI (a `[[vxlan]]` of the route's VRF), towards `remote`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan: Option<u32>,
    /// Remote VTEP of a `vxlan` route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<Ipv4Addr>,
    /// Inner destination MAC of a `vxlan` route; default: the tunnel's own MAC (what another
    /// vrouter accepts; a Linux peer needs its vxlan device's MAC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<EthernetAddress>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Outer TTL of a `[[vxlan]]` without `ttl` (Linux's default for vxlan devices).
pub const DEFAULT_VXLAN_TTL: u8 = 64;

fn default_vxlan_ttl() -> u8 {
    DEFAULT_VXLAN_TTL
}

fn is_default_vxlan_ttl(ttl: &u8) -> bool {
    *ttl == DEFAULT_VXLAN_TTL
}

fn is_default_df(df: &DfPolicy) -> bool {
    *df == DfPolicy::default()
}

/// The dataplane name of the tunnel port of a VNI.
pub fn tunnel_name(vni: u32) -> String {
    format!("vxlan{vni}")
}

/// A VXLAN tunnel: the overlay of one VNI, bound to one VRF, encapsulated over IPv4 from a
/// local VTEP address of an uplink port. In the dataplane it is a tunnel port named
/// `vxlan<VNI>` ([`VxlanConfig::name`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VxlanConfig {
    /// VXLAN network identifier (0 to 2^24-1).
    pub vni: u32,
    /// Overlay VRF: decapsulated frames are routed there; routes into the tunnel live there.
    #[serde(default)]
    pub vrf: u32,
    /// Local VTEP: an IPv4 address of `dev`, the outer source.
    pub local: Ipv4Addr,
    /// Uplink port: the underlay is reached through it, with its VRF's routes and neighbors.
    pub dev: String,
    /// Overlay MAC (inner source of what we encapsulate); default: the uplink's MAC in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<EthernetAddress>,
    /// Overlay IP MTU; default: the uplink's MTU minus 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    /// Outer TTL; 0 copies the inner TTL / hop limit.
    #[serde(
        default = "default_vxlan_ttl",
        skip_serializing_if = "is_default_vxlan_ttl"
    )]
    pub ttl: u8,
    /// Outer DF bit: `unset` (default), `set` or `inherit` (from an inner IPv4 packet).
    #[serde(default, skip_serializing_if = "is_default_df")]
    pub df: DfPolicy,
    /// Compute the outer UDP checksum (default: zero, as RFC 7348 recommends; Linux vxlan
    /// devices compute it unless created with `noudpcsum`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub udp_checksum: bool,
    /// Host addresses (/32, /128) of the tunnel port (as flannel puts one on `flannel.1`):
    /// they answer pings and source ICMP errors about packets that came through the tunnel.
    /// Like any address, one may not fall in another port's subnet of the VRF.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<Cidr>,
}

impl VxlanConfig {
    /// A tunnel with every optional setting at its default.
    pub fn new(vni: u32, vrf: u32, local: Ipv4Addr, dev: impl Into<String>) -> Self {
        VxlanConfig {
            vni,
            vrf,
            local,
            dev: dev.into(),
            mac: None,
            mtu: None,
            ttl: DEFAULT_VXLAN_TTL,
            df: DfPolicy::default(),
            udp_checksum: false,
            addresses: Vec::new(),
        }
    }

    /// Name of the tunnel port: `vxlan<VNI>`.
    pub fn name(&self) -> String {
        tunnel_name(self.vni)
    }

    /// The tunnel port as the dataplane runs it, given its id and its uplink as resolved:
    /// MAC and MTU default to the uplink's (MTU minus the 50 bytes of VXLAN headers).
    pub fn resolve(&self, id: PortId, uplink: &ResolvedPort) -> ResolvedPort {
        ResolvedPort {
            id,
            mac: self.mac.unwrap_or(uplink.mac),
            mtu: self
                .mtu
                .unwrap_or(uplink.mtu.saturating_sub(VXLAN_OVERHEAD)),
        }
    }

    /// Encapsulation settings with the uplink's dataplane id.
    pub fn params(&self, uplink: PortId) -> VxlanParams {
        VxlanParams {
            vni: self.vni,
            local: self.local,
            uplink,
            ttl: self.ttl,
            df: self.df,
            udp_checksum: self.udp_checksum,
        }
    }
}

/// A static neighbor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeighborConfig {
    /// Address.
    pub ip: IpAddr,
    /// MAC.
    pub mac: EthernetAddress,
    /// Port.
    pub dev: String,
}

/// An explicitly declared VRF (VRFs are also created by the ports and routes naming them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VrfConfig {
    /// Id.
    pub id: u32,
}

/// The whole desired state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Declared VRFs.
    #[serde(default, rename = "vrf", skip_serializing_if = "Vec::is_empty")]
    pub vrfs: Vec<VrfConfig>,
    /// Ports.
    #[serde(default, rename = "port", skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortConfig>,
    /// VXLAN tunnels.
    #[serde(default, rename = "vxlan", skip_serializing_if = "Vec::is_empty")]
    pub vxlans: Vec<VxlanConfig>,
    /// Routes.
    #[serde(default, rename = "route", skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
    /// Neighbors.
    #[serde(default, rename = "neighbor", skip_serializing_if = "Vec::is_empty")]
    pub neighbors: Vec<NeighborConfig>,
    /// Source NAT rules.
    #[serde(default, rename = "snat", skip_serializing_if = "Vec::is_empty")]
    pub snats: Vec<SnatConfig>,
    /// Services.
    #[serde(default, rename = "service", skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceConfig>,
    /// ACLs (a rule set per port direction).
    #[serde(default, rename = "acl", skip_serializing_if = "Vec::is_empty")]
    pub acls: Vec<crate::acl::AclConfig>,
}

/// Where in the document an error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Item {
    /// `[[vrf]]` number n (0-based).
    Vrf(usize),
    /// `[[port]]` n.
    Port(usize),
    /// `[[route]]` n.
    Route(usize),
    /// `[[neighbor]]` n.
    Neighbor(usize),
    /// `[[vxlan]]` n.
    Vxlan(usize),
    /// `[[snat]]` n.
    Snat(usize),
    /// `[[service]]` n.
    Service(usize),
    /// `[[acl]]` n.
    Acl(usize),
}

impl Item {
    fn table_name(&self) -> (&'static str, usize) {
        match self {
            Item::Vrf(i) => ("vrf", *i),
            Item::Port(i) => ("port", *i),
            Item::Route(i) => ("route", *i),
            Item::Neighbor(i) => ("neighbor", *i),
            Item::Vxlan(i) => ("vxlan", *i),
            Item::Snat(i) => ("snat", *i),
            Item::Service(i) => ("service", *i),
            Item::Acl(i) => ("acl", *i),
        }
    }
}

/// A rejected configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ConfigError {
    /// TOML syntax or type error (the message includes line and column).
    #[error("{0}")]
    Syntax(String),
    /// A semantic error in one item.
    #[error("{}{what}: {message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
    Invalid {
        /// The item.
        item: Item,
        /// 1-based line of the item's table header, when known.
        line: Option<usize>,
        /// What the item is (e.g. `route 10.0.0.0/8`).
        what: String,
        /// Why it is rejected.
        message: String,
    },
}

impl ConfigError {
    fn invalid(item: Item, what: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            item,
            line: None,
            what: what.into(),
            message: message.into(),
        }
    }

    /// Fills in the line of the item from the source text.
    fn locate(mut self, text: &str) -> Self {
        if let ConfigError::Invalid { item, line, .. } = &mut self {
            *line = item_line(text, *item);
        }
        self
    }
}

/// 1-based line of the n-th `[[name]]` header in `text`.
fn item_line(text: &str, item: Item) -> Option<usize> {
    let (name, index) = item.table_name();
    let header = format!("[[{name}]]");
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let l = l.trim();
            l.starts_with(&header)
                && l[header.len()..]
                    .trim_start()
                    .chars()
                    .next()
                    .is_none_or(|c| c == '#')
        })
        .nth(index)
        .map(|(n, _)| n + 1)
}

/// MAC used for ports while checking a config without the dataplane.
const PLACEHOLDER_MAC_BASE: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x00];

impl Config {
    /// Parses and validates a TOML document.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        config.validate().map_err(|e| e.locate(text))?;
        config.check_tables().map_err(|e| e.locate(text))?;
        Ok(config)
    }

    /// Renders as TOML (the format `parse` reads).
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }

    /// The port named `name`.
    pub fn port(&self, name: &str) -> Option<&PortConfig> {
        self.ports.iter().find(|p| p.name == name)
    }

    /// The `[[vxlan]]` of a VNI.
    pub fn vxlan(&self, vni: u32) -> Option<&VxlanConfig> {
        self.vxlans.iter().find(|v| v.vni == vni)
    }

    /// Checks what can be checked item by item.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, vrf) in self.vrfs.iter().enumerate() {
            if vrf.id > VrfId::MAX {
                return Err(ConfigError::invalid(
                    Item::Vrf(i),
                    format!("vrf {}", vrf.id),
                    format!("VRF id exceeds {}", VrfId::MAX),
                ));
            }
        }
        let mut names = HashSet::new();
        for (i, port) in self.ports.iter().enumerate() {
            // The item's name is formatted only on error: this runs for every item of a
            // possibly million-route file.
            let err =
                |m: String| ConfigError::invalid(Item::Port(i), format!("port {}", port.name), m);
            if port.name.is_empty()
                || port.name.len() > 15
                || port.name.contains('/')
                || port
                    .name
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(err(
                    "interface names are 1-15 characters without '/' or spaces".into(),
                ));
            }
            if !names.insert(port.name.as_str()) {
                return Err(err("port configured twice".into()));
            }
            if port.vrf > VrfId::MAX {
                return Err(err(format!("VRF {} exceeds {}", port.vrf, VrfId::MAX)));
            }
            if let Some(mtu) = port.mtu {
                if !(pipelines::tables::MIN_MTU..=pipelines::tables::MAX_MTU).contains(&mtu) {
                    return Err(err(format!(
                        "MTU {mtu} out of range {}-{}",
                        pipelines::tables::MIN_MTU,
                        pipelines::tables::MAX_MTU
                    )));
                }
            }
            if let Some(mac) = port.mac {
                if !mac.is_unicast() || mac.0 == [0; 6] {
                    return Err(err(format!("MAC {mac} is not unicast")));
                }
            }
            let mut seen = HashSet::new();
            for address in &port.addresses {
                if !seen.insert(address.addr) {
                    return Err(err(format!("address {address} listed twice")));
                }
            }
        }
        let mut vnis = HashSet::new();
        for (i, vxlan) in self.vxlans.iter().enumerate() {
            let err =
                |m: String| ConfigError::invalid(Item::Vxlan(i), format!("vxlan {}", vxlan.vni), m);
            if vxlan.vni > MAX_VNI {
                return Err(err(format!("VNI exceeds {MAX_VNI}")));
            }
            if !vnis.insert(vxlan.vni) {
                return Err(err("VNI configured twice".into()));
            }
            if vxlan.vrf > VrfId::MAX {
                return Err(err(format!("VRF {} exceeds {}", vxlan.vrf, VrfId::MAX)));
            }
            let name = vxlan.name();
            if names.contains(name.as_str()) {
                return Err(err(format!(
                    "its tunnel port name {name} is already a configured port"
                )));
            }
            let Some(uplink) = self.port(&vxlan.dev) else {
                return Err(err(format!("dev {} is not a configured port", vxlan.dev)));
            };
            if !uplink
                .addresses
                .iter()
                .any(|a| a.addr == IpAddr::V4(vxlan.local))
            {
                return Err(err(format!(
                    "local {} is not an address of dev {}",
                    vxlan.local, vxlan.dev
                )));
            }
            if let Some(mtu) = vxlan.mtu {
                if !(pipelines::tables::MIN_MTU..=pipelines::tables::MAX_MTU).contains(&mtu) {
                    return Err(err(format!(
                        "MTU {mtu} out of range {}-{}",
                        pipelines::tables::MIN_MTU,
                        pipelines::tables::MAX_MTU
                    )));
                }
            }
            if let Some(mac) = vxlan.mac {
                if !mac.is_unicast() || mac.0 == [0; 6] {
                    return Err(err(format!("MAC {mac} is not unicast")));
                }
            }
            let mut seen = HashSet::new();
            for address in &vxlan.addresses {
                if !seen.insert(address.addr) {
                    return Err(err(format!("address {address} listed twice")));
                }
                let host = if address.addr.is_ipv4() { 32 } else { 128 };
                if address.len != host {
                    return Err(err(format!(
                        "address {address}: a tunnel takes host addresses only (/32, /128)"
                    )));
                }
            }
        }
        let mut routes = HashSet::new();
        for (i, route) in self.routes.iter().enumerate() {
            let err = |m: String| {
                ConfigError::invalid(Item::Route(i), format!("route {}", route.prefix), m)
            };
            if !routes.insert((route.vrf, route.prefix)) {
                return Err(err(format!("configured twice in VRF {}", route.vrf)));
            }
            if route.vrf > VrfId::MAX {
                return Err(err(format!("VRF {} exceeds {}", route.vrf, VrfId::MAX)));
            }
            let kinds = [
                route.via.is_some() || route.dev.is_some(),
                route.blackhole,
                route.unreachable,
                !route.nexthops.is_empty(),
                route.vxlan.is_some(),
            ];
            if kinds.iter().filter(|k| **k).count() != 1 {
                return Err(err(
                    "give exactly one of via/dev, blackhole, unreachable, nexthops or vxlan".into(),
                ));
            }
            match route.vxlan {
                None if route.remote.is_some() || route.mac.is_some() => {
                    return Err(err("remote and mac belong to vxlan routes".into()))
                }
                None => {}
                Some(vni) => {
                    if route.remote.is_none() {
                        return Err(err(format!(
                            "vxlan {vni} needs remote (the remote VTEP's IPv4 address)"
                        )));
                    }
                    match self.vxlan(vni) {
                        None => {
                            return Err(err(format!("vxlan {vni} is not a configured [[vxlan]]")))
                        }
                        Some(v) if v.vrf != route.vrf => {
                            return Err(err(format!(
                                "vxlan {vni} is in VRF {}, the route in VRF {}",
                                v.vrf, route.vrf
                            )))
                        }
                        Some(_) => {}
                    }
                    if let Some(mac) = route.mac {
                        if !mac.is_unicast() || mac.0 == [0; 6] {
                            return Err(err(format!("MAC {mac} is not unicast")));
                        }
                    }
                }
            }
            let devs = route
                .dev
                .iter()
                .chain(route.nexthops.iter().filter_map(|p| p.dev.as_ref()));
            for dev in devs {
                match self.port(dev) {
                    None => {
                        if let Some(v) = self.vxlans.iter().find(|v| v.name() == *dev) {
                            return Err(err(format!(
                                "dev {dev} is a VXLAN tunnel: give vxlan = {} and remote instead",
                                v.vni
                            )));
                        }
                        return Err(err(format!("dev {dev} is not a configured port")));
                    }
                    Some(p) if p.vrf != route.vrf => {
                        return Err(err(format!(
                            "dev {dev} is in VRF {}, the route in VRF {}",
                            p.vrf, route.vrf
                        )))
                    }
                    Some(_) => {}
                }
            }
            for path in &route.nexthops {
                if path.via.is_none() && path.dev.is_none() {
                    return Err(err("each nexthop needs via or dev".into()));
                }
            }
        }
        let mut neighbors = HashSet::new();
        for (i, neighbor) in self.neighbors.iter().enumerate() {
            let err = |m: String| {
                ConfigError::invalid(Item::Neighbor(i), format!("neighbor {}", neighbor.ip), m)
            };
            if self.port(&neighbor.dev).is_none() {
                return Err(err(format!(
                    "dev {} is not a configured port",
                    neighbor.dev
                )));
            }
            if !neighbors.insert((neighbor.dev.as_str(), neighbor.ip)) {
                return Err(err("configured twice".into()));
            }
        }
        let mut snats = HashSet::new();
        for (i, rule) in self.snats.iter().enumerate() {
            let err =
                |m: String| ConfigError::invalid(Item::Snat(i), self.describe(Item::Snat(i)), m);
            if self.port(&rule.out).is_none() {
                return Err(err(format!("out {} is not a configured port", rule.out)));
            }
            if let Some(to) = rule.to {
                if to.is_ipv6() != matches!(rule.source, IpPrefix::V6(_)) {
                    return Err(err(format!(
                        "to {to} is not of the source's address family"
                    )));
                }
            }
            if !snats.insert(rule.identity()) {
                return Err(err("configured twice".into()));
            }
        }
        let mut services = HashSet::new();
        for (i, service) in self.services.iter().enumerate() {
            let err = |m: String| {
                ConfigError::invalid(Item::Service(i), self.describe(Item::Service(i)), m)
            };
            service.validate().map_err(err)?;
            if !services.insert(service.identity()) {
                return Err(err("configured twice".into()));
            }
        }
        let mut acls = HashSet::new();
        for (i, acl) in self.acls.iter().enumerate() {
            let err =
                |m: String| ConfigError::invalid(Item::Acl(i), self.describe(Item::Acl(i)), m);
            acl.validate().map_err(err)?;
            match acl.attachment() {
                crate::acl::AclAttachment::Port(name) if self.port(&name).is_none() => {
                    return Err(err(format!("port {name} is not a configured port")));
                }
                crate::acl::AclAttachment::Vrf(vrf) if !self.has_vrf(vrf) => {
                    return Err(err(format!("vrf {vrf} is not a configured vrf")));
                }
                _ => {}
            }
            if !acls.insert((acl.attachment(), acl.direction)) {
                return Err(err(
                    "configured twice (one rule set per port or vrf direction)".into(),
                ));
            }
        }
        Ok(())
    }

    /// Builds the tables in memory (placeholder MACs, default MTU) to run every check the
    /// dataplane will run, and maps a rejection back to the item that caused it.
    pub fn check_tables(&self) -> Result<(), ConfigError> {
        let mut ports = HashMap::new();
        for (i, port) in self.ports.iter().enumerate() {
            let mut mac = PLACEHOLDER_MAC_BASE;
            mac[4] = (i >> 8) as u8;
            mac[5] = i as u8;
            ports.insert(
                port.name.clone(),
                ResolvedPort {
                    id: PortId(i as u16),
                    mac: port.mac.unwrap_or(EthernetAddress(mac)),
                    mtu: port.mtu.unwrap_or(1500),
                },
            );
        }
        for (i, vxlan) in self.vxlans.iter().enumerate() {
            if let Some(uplink) = ports.get(&vxlan.dev).copied() {
                let id = PortId((self.ports.len() + i) as u16);
                ports.insert(vxlan.name(), vxlan.resolve(id, &uplink));
            }
        }
        let mut tables = Tables::new();
        let (ops, origins) = self.ops(&ports, None);
        match tables.apply_batch(&ops) {
            Ok(()) => Ok(()),
            Err(e) => {
                let item = origins.get(e.index).copied().unwrap_or(Item::Port(0));
                Err(ConfigError::invalid(
                    item,
                    self.describe(item),
                    e.error.to_string(),
                ))
            }
        }
    }

    /// Whether VRF `id` exists in this configuration (VRF 0 always does).
    pub fn has_vrf(&self, id: u32) -> bool {
        id == 0 || self.vrfs.iter().any(|v| v.id == id)
    }

    fn describe(&self, item: Item) -> String {
        match item {
            Item::Vrf(i) => format!("vrf {}", self.vrfs.get(i).map_or(0, |v| v.id)),
            Item::Port(i) => format!("port {}", self.ports.get(i).map_or("?", |p| &p.name)),
            Item::Route(i) => format!(
                "route {}",
                self.routes
                    .get(i)
                    .map_or(String::from("?"), |r| r.prefix.to_string())
            ),
            Item::Neighbor(i) => format!(
                "neighbor {}",
                self.neighbors
                    .get(i)
                    .map_or(String::from("?"), |n| n.ip.to_string())
            ),
            Item::Vxlan(i) => format!(
                "vxlan {}",
                self.vxlans
                    .get(i)
                    .map_or(String::from("?"), |v| v.vni.to_string())
            ),
            Item::Snat(i) => self.snats.get(i).map_or(String::from("snat ?"), |r| {
                format!("snat {} out {}", r.source, r.out)
            }),
            Item::Service(i) => self.services.get(i).map_or(String::from("service ?"), |v| {
                format!("service {}", v.identity())
            }),
            Item::Acl(i) => self.acls.get(i).map_or(String::from("acl ?"), |a| {
                format!(
                    "acl {} {}",
                    a.attachment(),
                    crate::acl::direction_name(a.direction)
                )
            }),
        }
    }

    /// The ops that build this config from empty tables, with the item each op comes from.
    /// `only_ports`, when given, restricts port-level ops to those ports (used by the planner).
    pub fn ops(
        &self,
        ports: &HashMap<String, ResolvedPort>,
        only_ports: Option<&HashSet<String>>,
    ) -> (Vec<TableOp>, Vec<Item>) {
        let mut ops = Vec::new();
        let mut origins = Vec::new();
        for (i, vrf) in self.vrfs.iter().enumerate() {
            ops.push(TableOp::AddVrf { vrf: VrfId(vrf.id) });
            origins.push(Item::Vrf(i));
        }
        for (i, port) in self.ports.iter().enumerate() {
            if only_ports.is_some_and(|only| !only.contains(&port.name)) {
                continue;
            }
            let Some(resolved) = ports.get(&port.name) else {
                continue;
            };
            ops.push(port_op(port, resolved));
            origins.push(Item::Port(i));
            for address in &port.addresses {
                ops.push(TableOp::AddAddress {
                    port: resolved.id,
                    address: address.interface_address(),
                });
                origins.push(Item::Port(i));
            }
        }
        for (i, vxlan) in self.vxlans.iter().enumerate() {
            if only_ports.is_some_and(|only| !only.contains(&vxlan.name())) {
                continue;
            }
            let Some((op, addresses)) = vxlan_ops(vxlan, ports) else {
                continue;
            };
            ops.push(op);
            origins.push(Item::Vxlan(i));
            for address in addresses {
                ops.push(address);
                origins.push(Item::Vxlan(i));
            }
        }
        for (i, route) in self.routes.iter().enumerate() {
            if let Some(op) = route_op(route, ports) {
                ops.push(op);
                origins.push(Item::Route(i));
            }
        }
        for (i, neighbor) in self.neighbors.iter().enumerate() {
            if let Some(resolved) = ports.get(&neighbor.dev) {
                ops.push(TableOp::AddNeighbor {
                    port: resolved.id,
                    ip: neighbor.ip,
                    mac: neighbor.mac,
                });
                origins.push(Item::Neighbor(i));
            }
        }
        for (i, rule) in self.snats.iter().enumerate() {
            if let Some(op) = self.snat_op(rule, ports) {
                ops.push(op);
                origins.push(Item::Snat(i));
            }
        }
        for (i, service) in self.services.iter().enumerate() {
            ops.push(TableOp::AddService {
                service: service.service(),
            });
            origins.push(Item::Service(i));
        }
        for (i, acl) in self.acls.iter().enumerate() {
            match acl.attachment() {
                crate::acl::AclAttachment::Port(name) => {
                    if let Some(resolved) = ports.get(&name) {
                        ops.push(TableOp::SetAcl {
                            port: resolved.id,
                            direction: acl.direction,
                            rules: acl.rules(),
                        });
                        origins.push(Item::Acl(i));
                    }
                }
                crate::acl::AclAttachment::Vrf(vrf) => {
                    ops.push(TableOp::SetVrfAcl {
                        vrf: VrfId(vrf),
                        direction: acl.direction,
                        rules: acl.rules(),
                    });
                    origins.push(Item::Acl(i));
                }
            }
        }
        (ops, origins)
    }
}

impl Config {
    /// The `AddSnat` of a rule whose `out` port is resolved (`None` otherwise).
    fn snat_op(&self, rule: &SnatConfig, ports: &HashMap<String, ResolvedPort>) -> Option<TableOp> {
        let resolved = ports.get(&rule.out)?;
        let vrf = self.port(&rule.out).map_or(0, |p| p.vrf);
        Some(TableOp::AddSnat {
            rule: rule.rule(resolved.id, vrf),
        })
    }
}

/// What the dataplane knows of a port beyond its config: its id, MAC and MTU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResolvedPort {
    /// Dataplane id.
    pub id: PortId,
    /// MAC in use.
    pub mac: EthernetAddress,
    /// MTU in use.
    pub mtu: u16,
}

fn port_op(port: &PortConfig, resolved: &ResolvedPort) -> TableOp {
    TableOp::AddPort {
        id: resolved.id,
        name: port.name.clone(),
        mac: resolved.mac,
        mtu: resolved.mtu,
        vrf: VrfId(port.vrf),
    }
}

/// The ops that create a tunnel: its `AddVxlan` and the `AddAddress` of each of its
/// addresses (`None` if the tunnel or its uplink is not resolved).
pub fn vxlan_ops(
    vxlan: &VxlanConfig,
    ports: &HashMap<String, ResolvedPort>,
) -> Option<(TableOp, Vec<TableOp>)> {
    let name = vxlan.name();
    let tunnel = ports.get(&name)?;
    let uplink = ports.get(&vxlan.dev)?;
    let add = TableOp::AddVxlan {
        id: tunnel.id,
        name,
        mac: tunnel.mac,
        // Resolved here rather than left to the tables, so the planner can compare the MTU
        // in use with the wanted one when the uplink's MTU changes.
        mtu: Some(tunnel.mtu),
        vrf: VrfId(vxlan.vrf),
        params: vxlan.params(uplink.id),
    };
    let addresses = vxlan
        .addresses
        .iter()
        .map(|address| TableOp::AddAddress {
            port: tunnel.id,
            address: address.interface_address(),
        })
        .collect();
    Some((add, addresses))
}

/// The table op for a route (`None` if a port it names is not resolved).
pub fn route_op(route: &RouteConfig, ports: &HashMap<String, ResolvedPort>) -> Option<TableOp> {
    let port_of = |dev: &Option<String>| -> Option<Option<PortId>> {
        match dev {
            None => Some(None),
            Some(name) => ports.get(name).map(|p| Some(p.id)),
        }
    };
    let path = |via: Option<IpAddr>, dev: &Option<String>| -> Option<RouteTarget> {
        let port = port_of(dev)?;
        Some(match (via, port) {
            (Some(gateway), port) => RouteTarget::Via { gateway, port },
            (None, Some(port)) => RouteTarget::Dev { port },
            (None, None) => return None,
        })
    };
    let target = if let Some(vni) = route.vxlan {
        RouteTarget::Vxlan {
            tunnel: ports.get(&tunnel_name(vni))?.id,
            remote: route.remote?,
            mac: route.mac,
        }
    } else if route.blackhole {
        RouteTarget::Blackhole
    } else if route.unreachable {
        RouteTarget::Unreachable
    } else if !route.nexthops.is_empty() {
        let paths: Option<Vec<RouteTarget>> =
            route.nexthops.iter().map(|p| path(p.via, &p.dev)).collect();
        RouteTarget::Multipath(paths?)
    } else {
        path(route.via, &route.dev)?
    };
    Some(TableOp::AddRoute {
        vrf: VrfId(route.vrf),
        prefix: route.prefix,
        target,
        replace: true,
    })
}

/// Keys for diffing.
fn route_key(r: &RouteConfig) -> (u32, IpPrefix) {
    (r.vrf, r.prefix)
}

/// Plans the ops that turn the tables built from `old` into those of `new`, touching only
/// what changed: unchanged ports keep their sockets and learned neighbors, unchanged routes
/// are not rewritten. `tables` is the dataplane's current state (used to find routes that
/// depend on a port being removed through a gateway resolved on it). Ports in `ports` must
/// include every port of `new`, and every tunnel of `new` under its name `vxlan<VNI>`.
///
/// Tunnels: one removed, changed in any field, or whose uplink is re-created, is deleted
/// before any port or address is (the tables refuse to remove an uplink or a VTEP address
/// a tunnel uses) and created again after the ports and their addresses, before the routes;
/// its routes are re-added (deleting a tunnel port removes the routes through it).
pub fn plan(
    old: &Config,
    new: &Config,
    tables: &Tables,
    ports: &HashMap<String, ResolvedPort>,
) -> Vec<TableOp> {
    let old_ports: BTreeMap<&str, &PortConfig> =
        old.ports.iter().map(|p| (p.name.as_str(), p)).collect();
    let new_ports: BTreeMap<&str, &PortConfig> =
        new.ports.iter().map(|p| (p.name.as_str(), p)).collect();
    // Ports removed, or changed in identity (VRF, MAC or a dataplane id that moved).
    let mut affected: HashSet<String> = HashSet::new();
    for (name, old_port) in &old_ports {
        let current = tables.port_by_name(name);
        match (new_ports.get(name), ports.get(*name), current) {
            (Some(new_port), Some(resolved), Some(current))
                if new_port.vrf == old_port.vrf
                    && current.id == resolved.id
                    && current.mac == resolved.mac
                    && current.vrf.0 == new_port.vrf => {}
            _ => {
                affected.insert(name.to_string());
            }
        }
    }
    // Tunnels removed, changed, on an affected uplink, or whose port in the tables is not
    // what the config now resolves to.
    let old_vxlans: BTreeMap<u32, &VxlanConfig> = old.vxlans.iter().map(|v| (v.vni, v)).collect();
    let new_vxlans: BTreeMap<u32, &VxlanConfig> = new.vxlans.iter().map(|v| (v.vni, v)).collect();
    let mut affected_tunnels: BTreeMap<u32, String> = BTreeMap::new();
    for (vni, old_vxlan) in &old_vxlans {
        let name = old_vxlan.name();
        let current = tables.port_by_name(&name);
        let kept = match (new_vxlans.get(vni), ports.get(&name), current) {
            (Some(new_vxlan), Some(resolved), Some(current)) => {
                new_vxlan == old_vxlan
                    && !affected.contains(&new_vxlan.dev)
                    && current.id == resolved.id
                    && current.mac == resolved.mac
                    && current.vrf.0 == new_vxlan.vrf
                    && ports
                        .get(&new_vxlan.dev)
                        .is_some_and(|uplink| current.vxlan() == Some(&new_vxlan.params(uplink.id)))
            }
            _ => false,
        };
        if !kept {
            affected_tunnels.insert(*vni, name);
        }
    }
    let affected_ids: HashSet<PortId> = affected
        .iter()
        .chain(affected_tunnels.values())
        .filter_map(|n| tables.port_by_name(n).map(|p| p.id))
        .collect();
    let mut ops = Vec::new();

    // 0. NAT rules and Services that go away (a rule on a port deleted below goes with it).
    let new_snats: HashSet<(IpPrefix, &str)> = new.snats.iter().map(|r| r.identity()).collect();
    for rule in &old.snats {
        if new_snats.contains(&rule.identity()) || affected.contains(&rule.out) {
            continue;
        }
        if let Some(port) = tables.port_by_name(&rule.out) {
            let key = rule.key(port.id, port.vrf.0);
            if tables.snat_rules().any(|r| r.key() == key) {
                ops.push(TableOp::DelSnat { key });
            }
        }
    }
    let new_services: HashSet<crate::nat::ServiceRef> =
        new.services.iter().map(|s| s.identity()).collect();
    for service in &old.services {
        if !new_services.contains(&service.identity()) && tables.service(&service.key()).is_some() {
            ops.push(TableOp::DelService { key: service.key() });
        }
    }

    // 0b. ACLs that go away (a set on a port deleted below goes with it).
    let new_acls: HashSet<(crate::acl::AclAttachment, pipelines::tables::AclDirection)> = new
        .acls
        .iter()
        .map(|a| (a.attachment(), a.direction))
        .collect();
    for acl in &old.acls {
        let attachment = acl.attachment();
        if new_acls.contains(&(attachment.clone(), acl.direction)) {
            continue;
        }
        match attachment {
            crate::acl::AclAttachment::Port(name) => {
                if affected.contains(&name) {
                    continue;
                }
                if let Some(port) = tables.port_by_name(&name) {
                    if tables.acl(port.id, acl.direction).is_some() {
                        ops.push(TableOp::DelAcl {
                            port: port.id,
                            direction: acl.direction,
                        });
                    }
                }
            }
            crate::acl::AclAttachment::Vrf(vrf) => {
                if tables.vrf_acl(VrfId(vrf), acl.direction).is_some() {
                    ops.push(TableOp::DelVrfAcl {
                        vrf: VrfId(vrf),
                        direction: acl.direction,
                    });
                }
            }
        }
    }

    // 1. Routes that go away, change, or ride on an affected port: delete now (re-added below).
    let new_routes: HashMap<(u32, IpPrefix), &RouteConfig> =
        new.routes.iter().map(|r| (route_key(r), r)).collect();
    let mut readd: HashSet<(u32, IpPrefix)> = HashSet::new();
    for route in &old.routes {
        let key = route_key(route);
        let exists = tables
            .vrf(VrfId(route.vrf))
            .and_then(|v| v.get(route.prefix))
            .is_some();
        let on_affected = route_uses_ports(tables, route, &affected_ids);
        match new_routes.get(&key) {
            Some(new_route) if *new_route == route && !on_affected => {}
            Some(_) => {
                readd.insert(key);
            }
            None => {
                if exists {
                    ops.push(TableOp::DelRoute {
                        vrf: VrfId(route.vrf),
                        prefix: route.prefix,
                    });
                }
            }
        }
    }
    // 2. Neighbors removed or on affected ports.
    let new_neighbors: HashMap<(&str, IpAddr), &NeighborConfig> = new
        .neighbors
        .iter()
        .map(|n| ((n.dev.as_str(), n.ip), n))
        .collect();
    for neighbor in &old.neighbors {
        if affected.contains(&neighbor.dev) {
            continue; // removed with the port
        }
        if !new_neighbors.contains_key(&(neighbor.dev.as_str(), neighbor.ip)) {
            if let Some(port) = tables.port_by_name(&neighbor.dev) {
                if tables.neighbors().get(port.id, neighbor.ip).is_some() {
                    ops.push(TableOp::DelNeighbor {
                        port: port.id,
                        ip: neighbor.ip,
                    });
                }
            }
        }
    }
    // 3. Affected tunnels deleted (first: they hold their uplink and VTEP address), then
    //    addresses removed from kept ports and affected ports deleted.
    for name in affected_tunnels.values() {
        if let Some(current) = tables.port_by_name(name).filter(|p| p.vxlan().is_some()) {
            ops.push(TableOp::DelPort { id: current.id });
        }
    }
    for (name, old_port) in &old_ports {
        let Some(current) = tables.port_by_name(name) else {
            continue;
        };
        if affected.contains(*name) {
            ops.push(TableOp::DelPort { id: current.id });
            continue;
        }
        let new_port = new_ports[name];
        for address in &old_port.addresses {
            if !new_port.addresses.contains(address)
                && current.addresses.contains(&address.interface_address())
            {
                ops.push(TableOp::DelAddress {
                    port: current.id,
                    address: address.interface_address(),
                });
            }
        }
    }
    // 4. New and re-created ports with their addresses; MTU and address changes on kept ones.
    for vrf in &new.vrfs {
        if !old.vrfs.contains(vrf) {
            ops.push(TableOp::AddVrf { vrf: VrfId(vrf.id) });
        }
    }
    for port in &new.ports {
        let Some(resolved) = ports.get(&port.name) else {
            continue;
        };
        let fresh = !old_ports.contains_key(port.name.as_str()) || affected.contains(&port.name);
        if fresh {
            ops.push(port_op(port, resolved));
            for address in &port.addresses {
                ops.push(TableOp::AddAddress {
                    port: resolved.id,
                    address: address.interface_address(),
                });
            }
            continue;
        }
        let old_port = old_ports[port.name.as_str()];
        let current_mtu = tables.port(resolved.id).map(|p| p.mtu);
        if current_mtu != Some(resolved.mtu) {
            ops.push(TableOp::SetPortMtu {
                id: resolved.id,
                mtu: resolved.mtu,
            });
        }
        for address in &port.addresses {
            if !old_port.addresses.contains(address) {
                ops.push(TableOp::AddAddress {
                    port: resolved.id,
                    address: address.interface_address(),
                });
            }
        }
    }
    // 4b. New and re-created tunnels with their addresses; MTU changes on kept ones (their
    //     default MTU follows the uplink's).
    for vxlan in &new.vxlans {
        let Some(resolved) = ports.get(&vxlan.name()) else {
            continue;
        };
        let fresh =
            !old_vxlans.contains_key(&vxlan.vni) || affected_tunnels.contains_key(&vxlan.vni);
        if fresh {
            if let Some((add, addresses)) = vxlan_ops(vxlan, ports) {
                ops.push(add);
                ops.extend(addresses);
            }
            continue;
        }
        if tables.port(resolved.id).map(|p| p.mtu) != Some(resolved.mtu) {
            ops.push(TableOp::SetPortMtu {
                id: resolved.id,
                mtu: resolved.mtu,
            });
        }
    }
    // 5. Routes new, changed or to restore.
    let old_routes: HashMap<(u32, IpPrefix), &RouteConfig> =
        old.routes.iter().map(|r| (route_key(r), r)).collect();
    for route in &new.routes {
        let key = route_key(route);
        if old_routes.contains_key(&key) && !readd.contains(&key) {
            continue;
        }
        if let Some(op) = route_op(route, ports) {
            ops.push(op);
        }
    }
    // 6. Neighbors new, changed or on re-created ports.
    let old_neighbors: HashMap<(&str, IpAddr), &NeighborConfig> = old
        .neighbors
        .iter()
        .map(|n| ((n.dev.as_str(), n.ip), n))
        .collect();
    for neighbor in &new.neighbors {
        let unchanged = old_neighbors.get(&(neighbor.dev.as_str(), neighbor.ip)) == Some(&neighbor)
            && !affected.contains(&neighbor.dev);
        if unchanged {
            continue;
        }
        if let Some(resolved) = ports.get(&neighbor.dev) {
            ops.push(TableOp::AddNeighbor {
                port: resolved.id,
                ip: neighbor.ip,
                mac: neighbor.mac,
            });
        }
    }
    // 7. NAT rules new, changed or on re-created ports; Services new or changed.
    for rule in &new.snats {
        let Some(TableOp::AddSnat { rule: wanted }) = new.snat_op(rule, ports) else {
            continue;
        };
        let installed = !affected.contains(&rule.out) && tables.snat_rules().any(|r| *r == wanted);
        if !installed {
            ops.push(TableOp::AddSnat { rule: wanted });
        }
    }
    for service in &new.services {
        let wanted = service.service();
        if tables.service(&wanted.key) != Some(&wanted) {
            ops.push(TableOp::AddService { service: wanted });
        }
    }
    // 8. ACLs new, changed or on re-created ports.
    for acl in &new.acls {
        let rules = acl.rules();
        match acl.attachment() {
            crate::acl::AclAttachment::Port(name) => {
                let Some(resolved) = ports.get(&name) else {
                    continue;
                };
                let installed = !affected.contains(&name)
                    && tables
                        .acl(resolved.id, acl.direction)
                        .is_some_and(|a| a.rules == rules);
                if !installed {
                    ops.push(TableOp::SetAcl {
                        port: resolved.id,
                        direction: acl.direction,
                        rules,
                    });
                }
            }
            crate::acl::AclAttachment::Vrf(vrf) => {
                let installed = tables
                    .vrf_acl(VrfId(vrf), acl.direction)
                    .is_some_and(|a| a.rules == rules);
                if !installed {
                    ops.push(TableOp::SetVrfAcl {
                        vrf: VrfId(vrf),
                        direction: acl.direction,
                        rules,
                    });
                }
            }
        }
    }
    ops
}

/// True if the route's installed next hop uses one of `ports`.
fn route_uses_ports(tables: &Tables, route: &RouteConfig, ports: &HashSet<PortId>) -> bool {
    if ports.is_empty() {
        return false;
    }
    let Some(vrf) = tables.vrf(VrfId(route.vrf)) else {
        return false;
    };
    let Some(id) = vrf.get(route.prefix) else {
        return false;
    };
    let uses = |nh: &pipelines::tables::NextHop| nh.port().is_some_and(|p| ports.contains(&p));
    match tables.next_hop(id) {
        Some(pipelines::tables::NextHop::Ecmp { members }) => members
            .iter()
            .any(|m| tables.next_hop(*m).is_some_and(uses)),
        Some(nh) => uses(nh),
        None => false,
    }
}

impl From<LpmError> for ConfigError {
    fn from(e: LpmError) -> Self {
        ConfigError::Syntax(e.to_string())
    }
}

/// Applies CLI changes to a desired state, returning the new state (validated whole) or the
/// first error. The daemon uses this; the dataplane uses [`merge_changes`] (the same
/// semantics) and validates by applying the result to its tables, so both agree.
///
/// Semantics (iproute2-like):
/// - `AddPort` on an existing port merges: new addresses are added, MTU and MAC replaced when
///   given; the VRF is kept unless one is given, and a different one is refused (delete the
///   port first).
/// - `DelPort` also removes the routes and neighbors that use the port: routes with `dev`
///   naming it and routes whose gateway is only on its subnets (the kernel does the same).
///   `DelPort` of the uplink of a `[[vxlan]]` is refused: delete the tunnel first.
/// - `AddRoute` / `AddNeighbor` / `AddVxlan` replace an entry with the same key (for
///   `AddVxlan` the whole tunnel: settings not given return to their defaults).
/// - `AddRoute` without a VRF: a `vxlan` route goes to its tunnel's VRF (as the state is at
///   that point of the change list), any other route to VRF 0.
/// - `DelVxlan` also removes the routes into the tunnel (as `DelPort` does for a port).
/// - `DelRoute` / `DelNeighbor` / `DelPort` / `DelVxlan` of something absent is an error.
pub fn apply_changes(
    config: &Config,
    changes: &[crate::proto::Change],
) -> Result<Config, ConfigError> {
    let next = merge_changes(config, changes)?;
    next.check_tables()?;
    Ok(next)
}

/// Replaces the item `same` finds, or appends `item`.
fn upsert<T: Clone>(items: &mut Vec<T>, item: &T, same: impl Fn(&T) -> bool) {
    match items.iter_mut().find(|i| same(i)) {
        Some(existing) => *existing = item.clone(),
        None => items.push(item.clone()),
    }
}

/// [`apply_changes`] without the in-memory table build: item checks only. For the dataplane,
/// whose own transaction on its tables is the authoritative (and all-or-nothing) check.
pub fn merge_changes(
    config: &Config,
    changes: &[crate::proto::Change],
) -> Result<Config, ConfigError> {
    use crate::proto::Change;
    let mut next = config.clone();
    for (index, change) in changes.iter().enumerate() {
        let refuse = |what: String, message: String| ConfigError::Invalid {
            item: Item::Port(index),
            line: None,
            what,
            message,
        };
        match change {
            Change::AddPort(port) => match next.ports.iter_mut().find(|p| p.name == port.name) {
                Some(existing) => {
                    if let Some(vrf) = port.vrf.filter(|v| *v != existing.vrf) {
                        return Err(refuse(
                            format!("port {}", port.name),
                            format!(
                                "already in VRF {}; delete it before moving it to VRF {vrf}",
                                existing.vrf
                            ),
                        ));
                    }
                    for address in &port.addresses {
                        if !existing.addresses.contains(address) {
                            existing.addresses.push(*address);
                        }
                    }
                    if port.mtu.is_some() {
                        existing.mtu = port.mtu;
                    }
                    if port.mac.is_some() {
                        existing.mac = port.mac;
                    }
                }
                None => next.ports.push(PortConfig {
                    name: port.name.clone(),
                    vrf: port.vrf.unwrap_or(0),
                    addresses: port.addresses.clone(),
                    mtu: port.mtu,
                    mac: port.mac,
                }),
            },
            Change::DelPort { name } => {
                let Some(position) = next.ports.iter().position(|p| &p.name == name) else {
                    return Err(refuse(format!("port {name}"), "no such port".into()));
                };
                if let Some(vxlan) = next.vxlans.iter().find(|v| &v.dev == name) {
                    return Err(refuse(
                        format!("port {name}"),
                        format!(
                            "it is the uplink of vxlan {}; delete the vxlan first",
                            vxlan.vni
                        ),
                    ));
                }
                let port = next.ports.remove(position);
                let subnets: Vec<IpPrefix> = port
                    .addresses
                    .iter()
                    .filter_map(|a| IpPrefix::containing(a.addr, a.len).ok())
                    .collect();
                let remaining: Vec<IpPrefix> = next
                    .ports
                    .iter()
                    .filter(|p| p.vrf == port.vrf)
                    .flat_map(|p| p.addresses.iter())
                    .filter_map(|a| IpPrefix::containing(a.addr, a.len).ok())
                    .collect();
                let only_via_port = |gateway: &IpAddr| {
                    subnets.iter().any(|s| s.contains(*gateway))
                        && !remaining.iter().any(|s| s.contains(*gateway))
                };
                next.routes.retain(|r| {
                    let uses_dev = r.dev.as_deref() == Some(name.as_str())
                        || r.nexthops
                            .iter()
                            .any(|p| p.dev.as_deref() == Some(name.as_str()));
                    let uses_gateway = r.vrf == port.vrf
                        && (r.dev.is_none() && r.via.as_ref().is_some_and(only_via_port)
                            || r.nexthops.iter().any(|p| {
                                p.dev.is_none() && p.via.as_ref().is_some_and(only_via_port)
                            }));
                    !(uses_dev || uses_gateway)
                });
                next.neighbors.retain(|n| &n.dev != name);
                next.snats.retain(|r| &r.out != name);
                next.acls.retain(|a| &a.port != name || a.vrf.is_some());
            }
            Change::AddRoute(change) => {
                let vrf = change.vrf.unwrap_or_else(|| {
                    change
                        .vxlan
                        .and_then(|vni| next.vxlan(vni))
                        .map_or(0, |v| v.vrf)
                });
                let route = change.clone().into_config(vrf);
                match next
                    .routes
                    .iter_mut()
                    .find(|r| r.vrf == route.vrf && r.prefix == route.prefix)
                {
                    Some(existing) => *existing = route,
                    None => next.routes.push(route),
                }
            }
            Change::DelRoute { vrf, prefix } => {
                let before = next.routes.len();
                next.routes
                    .retain(|r| !(r.vrf == *vrf && r.prefix == *prefix));
                if next.routes.len() == before {
                    return Err(refuse(
                        format!("route {prefix}"),
                        format!("no such static route in VRF {vrf}"),
                    ));
                }
            }
            Change::AddNeighbor(neighbor) => {
                match next
                    .neighbors
                    .iter_mut()
                    .find(|n| n.dev == neighbor.dev && n.ip == neighbor.ip)
                {
                    Some(existing) => *existing = neighbor.clone(),
                    None => next.neighbors.push(neighbor.clone()),
                }
            }
            Change::DelNeighbor { dev, ip } => {
                let before = next.neighbors.len();
                next.neighbors.retain(|n| !(&n.dev == dev && n.ip == *ip));
                if next.neighbors.len() == before {
                    return Err(refuse(
                        format!("neighbor {ip}"),
                        format!("no static neighbor on {dev}"),
                    ));
                }
            }
            Change::AddVxlan(vxlan) => match next.vxlans.iter_mut().find(|v| v.vni == vxlan.vni) {
                Some(existing) => *existing = vxlan.clone(),
                None => next.vxlans.push(vxlan.clone()),
            },
            Change::DelVxlan { vni } => {
                let Some(position) = next.vxlans.iter().position(|v| v.vni == *vni) else {
                    return Err(refuse(format!("vxlan {vni}"), "no such vxlan".into()));
                };
                next.vxlans.remove(position);
                next.routes.retain(|r| r.vxlan != Some(*vni));
            }
            Change::AddAclRule {
                target,
                direction,
                rule,
            } => match next
                .acls
                .iter_mut()
                .find(|a| &a.attachment() == target && a.direction == *direction)
            {
                Some(acl) => acl.rules.push(rule.clone()),
                None => next.acls.push(crate::acl::AclConfig::new(
                    target,
                    *direction,
                    vec![rule.clone()],
                )),
            },
            Change::DelAclRule {
                target,
                direction,
                position,
            } => {
                let what = format!("acl {target} {}", crate::acl::direction_name(*direction));
                let Some(acl) = next
                    .acls
                    .iter_mut()
                    .find(|a| &a.attachment() == target && a.direction == *direction)
                else {
                    return Err(refuse(what, "no rule set there".into()));
                };
                if *position == 0 || *position > acl.rules.len() {
                    return Err(refuse(
                        what,
                        format!("no rule {position} (the set has {})", acl.rules.len()),
                    ));
                }
                acl.rules.remove(position - 1);
            }
            Change::DelAcl { target, direction } => {
                let before = next.acls.len();
                next.acls
                    .retain(|a| !(&a.attachment() == target && a.direction == *direction));
                if next.acls.len() == before {
                    return Err(refuse(
                        format!("acl {target} {}", crate::acl::direction_name(*direction)),
                        "no rule set there".into(),
                    ));
                }
            }
            Change::AddSnat(rule) => {
                upsert(&mut next.snats, rule, |r| r.identity() == rule.identity())
            }
            Change::DelSnat { source, out } => {
                let before = next.snats.len();
                next.snats
                    .retain(|r| !(r.source == *source && &r.out == out));
                if next.snats.len() == before {
                    return Err(refuse(
                        format!("snat {source} out {out}"),
                        "no such rule".into(),
                    ));
                }
            }
            Change::AddService(service) => upsert(&mut next.services, service, |s| {
                s.identity() == service.identity()
            }),
            Change::DelService { service } => {
                let before = next.services.len();
                next.services.retain(|s| s.identity() != *service);
                if next.services.len() == before {
                    return Err(refuse(
                        format!("service {service}"),
                        "no such service".into(),
                    ));
                }
            }
            Change::AddBackend { service, backend } => {
                let Some(existing) = next.services.iter_mut().find(|s| s.identity() == *service)
                else {
                    return Err(refuse(
                        format!("service {service}"),
                        "no such service".into(),
                    ));
                };
                match existing
                    .backends
                    .iter_mut()
                    .find(|b| b.addr == backend.addr)
                {
                    Some(b) => b.weight = backend.weight,
                    None => existing.backends.push(*backend),
                }
            }
            Change::DelBackend { service, backend } => {
                let Some(existing) = next.services.iter_mut().find(|s| s.identity() == *service)
                else {
                    return Err(refuse(
                        format!("service {service}"),
                        "no such service".into(),
                    ));
                };
                let before = existing.backends.len();
                existing.backends.retain(|b| b.addr != *backend);
                if existing.backends.len() == before {
                    return Err(refuse(
                        format!("service {service}"),
                        format!("no backend {backend}"),
                    ));
                }
            }
        }
    }
    next.validate()?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Change, RouteChange};

    const SAMPLE: &str = r#"
[[port]]
name = "pod1"
addresses = ["10.0.1.1/24"]

[[port]]
name = "pod2"
addresses = ["10.0.2.1/24"]

[[route]]
prefix = "10.9.0.0/16"
via = "10.0.2.7"

[[neighbor]]
ip = "10.0.1.2"
mac = "02:00:00:00:00:02"
dev = "pod1"
"#;

    #[test]
    fn parses_and_round_trips() {
        let config = Config::parse(SAMPLE).unwrap();
        assert_eq!(config.ports.len(), 2);
        let again = Config::parse(&config.to_toml().unwrap()).unwrap();
        assert_eq!(again, config);
    }

    #[test]
    fn errors_name_the_line() {
        let bad = SAMPLE.replace("via = \"10.0.2.7\"", "via = \"10.7.7.7\"");
        let err = Config::parse(&bad).unwrap_err().to_string();
        assert!(err.starts_with("line 10: route 10.9.0.0/16"), "{err}");
        assert!(err.contains("gateway 10.7.7.7"), "{err}");

        let overlap = SAMPLE.replace("10.0.2.1/24", "10.0.1.9/16");
        let err = Config::parse(&overlap).unwrap_err().to_string();
        assert!(err.starts_with("line 6: port pod2"), "{err}");

        let syntax = "[[port]]\nname = \"a\"\nmtu = \"big\"\n";
        let err = Config::parse(syntax).unwrap_err().to_string();
        assert!(err.contains("line 3"), "{err}");

        let unknown = "[[port]]\nname = \"a\"\ncolour = 1\n";
        assert!(Config::parse(unknown).is_err());
    }

    #[test]
    fn deleting_a_port_takes_its_routes_and_neighbors() {
        let config = Config::parse(SAMPLE).unwrap();
        let next = apply_changes(
            &config,
            &[Change::DelPort {
                name: "pod2".into(),
            }],
        )
        .unwrap();
        assert!(next.routes.is_empty());
        let next = apply_changes(
            &next,
            &[Change::DelPort {
                name: "pod1".into(),
            }],
        )
        .unwrap();
        assert!(next.neighbors.is_empty());
        assert!(apply_changes(
            &next,
            &[Change::DelPort {
                name: "pod1".into()
            }]
        )
        .is_err());
    }

    #[test]
    fn port_update_keeps_its_vrf_unless_one_is_given() {
        let config =
            Config::parse("[[port]]\nname = \"p\"\nvrf = 2\naddresses = [\"10.0.1.1/24\"]\n")
                .unwrap();
        let update = crate::proto::PortChange {
            name: "p".into(),
            vrf: None,
            addresses: vec!["10.0.9.1/24".parse().unwrap()],
            mtu: Some(1400),
            mac: None,
        };
        let next = apply_changes(&config, &[Change::AddPort(update.clone())]).unwrap();
        assert_eq!(next.ports[0].vrf, 2);
        assert_eq!(next.ports[0].addresses.len(), 2);
        assert_eq!(next.ports[0].mtu, Some(1400));
        let moved = crate::proto::PortChange {
            vrf: Some(3),
            ..update
        };
        assert!(apply_changes(&config, &[Change::AddPort(moved)]).is_err());
    }

    #[test]
    fn rejected_changes_leave_the_input_alone() {
        let config = Config::parse(SAMPLE).unwrap();
        let bad_route = RouteConfig {
            prefix: "10.8.0.0/16".parse().unwrap(),
            vrf: 0,
            via: Some("192.0.2.1".parse().unwrap()),
            dev: None,
            blackhole: false,
            unreachable: false,
            nexthops: vec![],
            vxlan: None,
            remote: None,
            mac: None,
        };
        assert!(apply_changes(&config, &[Change::AddRoute(bad_route.into())]).is_err());
        assert_eq!(config, Config::parse(SAMPLE).unwrap());
    }

    #[test]
    fn plan_of_identical_configs_is_empty_and_changes_are_minimal() {
        let config = Config::parse(SAMPLE).unwrap();
        let mut ports = HashMap::new();
        for (i, p) in config.ports.iter().enumerate() {
            ports.insert(
                p.name.clone(),
                ResolvedPort {
                    id: PortId(i as u16),
                    mac: EthernetAddress([2, 0, 0, 0, 1, i as u8]),
                    mtu: 1500,
                },
            );
        }
        let mut tables = Tables::new();
        let ops = plan(&Config::default(), &config, &tables, &ports);
        tables.apply_batch(&ops).unwrap();
        assert!(plan(&config, &config, &tables, &ports).is_empty());

        let mut changed = config.clone();
        changed.routes[0].via = Some("10.0.2.8".parse().unwrap());
        let ops = plan(&config, &changed, &tables, &ports);
        assert_eq!(ops.len(), 1, "{ops:?}");
        tables.apply_batch(&ops).unwrap();

        let removed = apply_changes(
            &changed,
            &[Change::DelPort {
                name: "pod2".into(),
            }],
        )
        .unwrap();
        let ops = plan(&changed, &removed, &tables, &ports);
        tables.apply_batch(&ops).unwrap();
        assert!(tables.port_by_name("pod2").is_none());
        assert!(tables.port_by_name("pod1").is_some());
    }
    const OVERLAY: &str = r#"
[[port]]
name = "eth1"
addresses = ["192.168.100.1/24"]

[[port]]
name = "pod1"
vrf = 5
addresses = ["10.244.1.1/24"]

[[vxlan]]
vni = 100
vrf = 5
local = "192.168.100.1"
dev = "eth1"

[[route]]
prefix = "10.244.2.0/24"
vrf = 5
vxlan = 100
remote = "192.168.100.2"

[[route]]
prefix = "10.244.3.0/24"
vrf = 5
vxlan = 100
remote = "192.168.100.3"
mac = "0e:00:00:00:64:03"
"#;

    /// Ports resolved as the dataplane does: interfaces by position, tunnels keeping their
    /// id in `tables` or taking the first id nobody holds.
    fn resolve(config: &Config, tables: &Tables) -> HashMap<String, ResolvedPort> {
        let mut ports = HashMap::new();
        for (i, p) in config.ports.iter().enumerate() {
            ports.insert(
                p.name.clone(),
                ResolvedPort {
                    id: PortId(i as u16),
                    mac: p.mac.unwrap_or(EthernetAddress([2, 0, 0, 0, 1, i as u8])),
                    mtu: p.mtu.unwrap_or(1500),
                },
            );
        }
        for v in &config.vxlans {
            let taken: HashSet<PortId> = ports
                .values()
                .map(|p| p.id)
                .chain(tables.ports().map(|p| p.id))
                .collect();
            let id = tables
                .port_by_name(&v.name())
                .map(|p| p.id)
                .unwrap_or_else(|| (0..).map(PortId).find(|id| !taken.contains(id)).unwrap());
            let uplink = ports[&v.dev];
            ports.insert(v.name(), v.resolve(id, &uplink));
        }
        ports
    }

    /// Plans `old` -> `new` on `tables`, applies the ops and returns them.
    fn step(old: &Config, new: &Config, tables: &mut Tables) -> Vec<TableOp> {
        let ports = resolve(new, tables);
        let ops = plan(old, new, tables, &ports);
        tables
            .apply_batch(&ops)
            .unwrap_or_else(|e| panic!("{e}: {ops:#?}"));
        ops
    }

    fn vxlan_next_hop(tables: &Tables, vrf: u32, prefix: &str) -> Option<NextHop> {
        let id = tables.vrf(VrfId(vrf))?.get(prefix.parse().unwrap())?;
        tables.next_hop(id).cloned()
    }

    use pipelines::tables::NextHop;

    #[test]
    fn vxlan_parses_with_defaults_and_round_trips() {
        let config = Config::parse(OVERLAY).unwrap();
        let v = &config.vxlans[0];
        assert_eq!(v.name(), "vxlan100");
        assert_eq!((v.ttl, v.df, v.udp_checksum), (64, DfPolicy::Unset, false));
        assert_eq!((v.mac, v.mtu), (None, None));
        assert_eq!(config.routes[0].vxlan, Some(100));
        assert_eq!(
            config.routes[1].mac,
            Some("0e:00:00:00:64:03".parse().unwrap())
        );
        let text = config.to_toml().unwrap();
        assert!(!text.contains("ttl"), "defaults are not written: {text}");
        assert_eq!(Config::parse(&text).unwrap(), config);

        let full = OVERLAY.replace(
            "dev = \"eth1\"\n",
            "dev = \"eth1\"\nmac = \"0e:00:00:00:64:01\"\nmtu = 1400\nttl = 0\ndf = \"inherit\"\nudp_checksum = true\naddresses = [\"10.245.1.0/32\"]\n",
        );
        let config = Config::parse(&full).unwrap();
        let v = &config.vxlans[0];
        assert_eq!(
            (v.ttl, v.df, v.udp_checksum, v.mtu),
            (0, DfPolicy::Inherit, true, Some(1400))
        );
        assert_eq!(Config::parse(&config.to_toml().unwrap()).unwrap(), config);
    }

    #[test]
    fn vxlan_errors_name_the_line() {
        let cases: &[(&str, &str, &str)] = &[
            ("vni = 100", "vni = 16777216", "line 11: vxlan 16777216: VNI exceeds 16777215"),
            ("dev = \"eth1\"\n\n[[route]]", "dev = \"eth9\"\n\n[[route]]", "line 11: vxlan 100: dev eth9 is not a configured port"),
            ("local = \"192.168.100.1\"", "local = \"192.168.100.7\"", "line 11: vxlan 100: local 192.168.100.7 is not an address of dev eth1"),
            ("name = \"pod1\"", "name = \"vxlan100\"", "line 11: vxlan 100: its tunnel port name vxlan100 is already a configured port"),
            ("vxlan = 100\nremote = \"192.168.100.2\"", "vxlan = 101\nremote = \"192.168.100.2\"", "line 17: route 10.244.2.0/24: vxlan 101 is not a configured [[vxlan]]"),
            ("vrf = 5\nvxlan = 100\nremote = \"192.168.100.2\"", "vxlan = 100\nremote = \"192.168.100.2\"", "line 17: route 10.244.2.0/24: vxlan 100 is in VRF 5, the route in VRF 0"),
            ("vxlan = 100\nremote = \"192.168.100.2\"", "vxlan = 100", "line 17: route 10.244.2.0/24: vxlan 100 needs remote"),
            ("vxlan = 100\nremote = \"192.168.100.2\"", "remote = \"192.168.100.2\"\nblackhole = true", "line 17: route 10.244.2.0/24: remote and mac belong to vxlan routes"),
            ("vxlan = 100\nremote = \"192.168.100.2\"", "vxlan = 100\nremote = \"192.168.100.2\"\nblackhole = true", "line 17: route 10.244.2.0/24: give exactly one of via/dev, blackhole, unreachable, nexthops or vxlan"),
            ("vxlan = 100\nremote = \"192.168.100.2\"", "dev = \"vxlan100\"", "line 17: route 10.244.2.0/24: dev vxlan100 is a VXLAN tunnel: give vxlan = 100 and remote instead"),
            ("dev = \"eth1\"\n\n[[route]]", "dev = \"eth1\"\naddresses = [\"10.244.9.0/24\"]\n\n[[route]]", "line 11: vxlan 100: address 10.244.9.0/24: a tunnel takes host addresses only"),
            ("dev = \"eth1\"\n\n[[route]]", "dev = \"eth1\"\nmtu = 20\n\n[[route]]", "line 11: vxlan 100: MTU 20 out of range"),
            ("dev = \"eth1\"\n\n[[route]]", "dev = \"eth1\"\nmac = \"01:00:5e:00:00:01\"\n\n[[route]]", "line 11: vxlan 100: MAC 01:00:5e:00:00:01 is not unicast"),
            // Found by the table build (the remote is checked there).
            ("remote = \"192.168.100.3\"", "remote = \"224.0.0.1\"", "line 23: route 10.244.3.0/24: remote VTEP 224.0.0.1"),
        ];
        for (from, to, expected) in cases {
            assert!(OVERLAY.contains(from), "{from}");
            let text = OVERLAY.replacen(from, to, 1);
            let err = Config::parse(&text).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{expected}\n  got: {err}");
        }
        let twice =
            format!("{OVERLAY}\n[[vxlan]]\nvni = 100\nlocal = \"192.168.100.1\"\ndev = \"eth1\"\n");
        let err = Config::parse(&twice).unwrap_err().to_string();
        assert!(err.contains("vxlan 100: VNI configured twice"), "{err}");
        let v6 = OVERLAY.replace("remote = \"192.168.100.2\"", "remote = \"fd00::2\"");
        assert!(Config::parse(&v6).is_err());
        let unknown = OVERLAY.replace("vni = 100", "vni = 100\ngroup = \"239.1.1.1\"");
        assert!(Config::parse(&unknown).is_err());
    }

    #[test]
    fn vxlan_ops_come_after_the_uplink_and_before_the_routes() {
        let config = Config::parse(OVERLAY).unwrap();
        let mut tables = Tables::new();
        let ops = step(&Config::default(), &config, &mut tables);
        let position = |want: &dyn Fn(&TableOp) -> bool| ops.iter().position(want).unwrap();
        let uplink_address = position(
            &|op| matches!(op, TableOp::AddAddress { address, .. } if address.addr == "192.168.100.1".parse::<IpAddr>().unwrap()),
        );
        let tunnel = position(&|op| matches!(op, TableOp::AddVxlan { .. }));
        let route = position(&|op| {
            matches!(
                op,
                TableOp::AddRoute {
                    target: RouteTarget::Vxlan { .. },
                    ..
                }
            )
        });
        assert!(uplink_address < tunnel && tunnel < route, "{ops:#?}");
        let port = tables.port_by_name("vxlan100").unwrap();
        let params = port.vxlan().unwrap();
        assert_eq!((port.vrf, port.mtu, params.ttl), (VrfId(5), 1450, 64));
        assert_eq!(port.mac, tables.port_by_name("eth1").unwrap().mac);
        assert_eq!(
            vxlan_next_hop(&tables, 5, "10.244.2.0/24"),
            Some(NextHop::Vxlan {
                tunnel: port.id,
                remote: "192.168.100.2".parse().unwrap(),
                mac: port.mac
            })
        );
        assert!(plan(&config, &config, &tables, &resolve(&config, &tables)).is_empty());
        // check_tables builds the same thing.
        config.check_tables().unwrap();
    }

    #[test]
    fn changed_vxlan_is_recreated_with_its_routes() {
        let config = Config::parse(OVERLAY).unwrap();
        let mut tables = Tables::new();
        step(&Config::default(), &config, &mut tables);
        let mut changed = config.clone();
        changed.vxlans[0].ttl = 0;
        let ops = step(&config, &changed, &mut tables);
        assert!(matches!(ops[0], TableOp::DelPort { .. }), "{ops:#?}");
        assert_eq!(
            ops.iter()
                .filter(|op| matches!(op, TableOp::AddRoute { .. }))
                .count(),
            2
        );
        assert_eq!(
            tables
                .port_by_name("vxlan100")
                .unwrap()
                .vxlan()
                .unwrap()
                .ttl,
            0
        );
        assert!(vxlan_next_hop(&tables, 5, "10.244.2.0/24").is_some());
        assert!(vxlan_next_hop(&tables, 5, "10.244.3.0/24").is_some());

        // The uplink re-created (new MAC): the tunnel goes first and comes back with the
        // uplink's new MAC (its default).
        let mut remac = changed.clone();
        remac.ports[0].mac = Some("02:00:00:00:99:01".parse().unwrap());
        let ops = step(&changed, &remac, &mut tables);
        let tunnel_id = tables.port_by_name("vxlan100").unwrap().id;
        assert_eq!(ops[0], TableOp::DelPort { id: tunnel_id }, "{ops:#?}");
        assert_eq!(
            tables.port_by_name("vxlan100").unwrap().mac,
            remac.ports[0].mac.unwrap()
        );
        assert!(vxlan_next_hop(&tables, 5, "10.244.2.0/24").is_some());

        // The uplink's MTU changes: the tunnel's default MTU follows, nothing is re-created.
        let mut jumbo = remac.clone();
        jumbo.ports[0].mtu = Some(9000);
        let ops = step(&remac, &jumbo, &mut tables);
        assert!(
            ops.iter()
                .all(|op| matches!(op, TableOp::SetPortMtu { .. })),
            "{ops:#?}"
        );
        assert_eq!(tables.port_by_name("vxlan100").unwrap().mtu, 8950);

        // A route changed to another remote is replaced in place.
        let mut moved = jumbo.clone();
        moved.routes[0].remote = Some("192.168.100.9".parse().unwrap());
        let ops = step(&jumbo, &moved, &mut tables);
        assert_eq!(ops.len(), 1, "{ops:#?}");
    }

    #[test]
    fn vxlan_is_deleted_before_its_uplink_and_vtep_address() {
        let config = Config::parse(OVERLAY).unwrap();
        let mut tables = Tables::new();
        step(&Config::default(), &config, &mut tables);
        // The whole overlay and the uplink go in one transaction.
        let mut bare = config.clone();
        bare.vxlans.clear();
        bare.routes.clear();
        bare.ports.remove(0);
        step(&config, &bare, &mut tables);
        assert!(tables.port_by_name("vxlan100").is_none());
        assert!(tables.port_by_name("eth1").is_none());

        // The VTEP moves to another address of the same uplink.
        let mut tables = Tables::new();
        step(&Config::default(), &config, &mut tables);
        let mut moved = config.clone();
        moved.ports[0].addresses = vec!["192.168.100.11/24".parse().unwrap()];
        moved.vxlans[0].local = "192.168.100.11".parse().unwrap();
        step(&config, &moved, &mut tables);
        let tunnel = tables.port_by_name("vxlan100").unwrap();
        assert_eq!(tunnel.vxlan().unwrap().local.to_string(), "192.168.100.11");
        assert!(vxlan_next_hop(&tables, 5, "10.244.3.0/24").is_some());
    }

    #[test]
    fn vxlan_changes_through_the_cli_model() {
        let mut base = Config::parse(OVERLAY).unwrap();
        base.vxlans.clear();
        base.routes.clear();
        let local: Ipv4Addr = "192.168.100.1".parse().unwrap();
        let route = |vrf: Option<u32>| RouteChange {
            prefix: "10.244.2.0/24".parse().unwrap(),
            vrf,
            via: None,
            dev: None,
            blackhole: false,
            unreachable: false,
            nexthops: vec![],
            vxlan: Some(100),
            remote: Some("192.168.100.2".parse().unwrap()),
            mac: None,
        };
        // Without a VRF the route lands in the VNI's, also when the tunnel comes earlier in
        // the same change list.
        let next = apply_changes(
            &base,
            &[
                Change::AddVxlan(VxlanConfig::new(100, 5, local, "eth1")),
                Change::AddRoute(route(None)),
            ],
        )
        .unwrap();
        assert_eq!(next.routes[0].vrf, 5);
        let err = apply_changes(&next, &[Change::AddRoute(route(Some(0)))]).unwrap_err();
        assert!(
            err.to_string()
                .contains("vxlan 100 is in VRF 5, the route in VRF 0"),
            "{err}"
        );
        // A route to an unknown VNI goes to VRF 0 and is refused for the VNI.
        let unknown = RouteChange {
            vxlan: Some(7),
            ..route(None)
        };
        let err = apply_changes(&next, &[Change::AddRoute(unknown)]).unwrap_err();
        assert!(
            err.to_string().contains("vxlan 7 is not a configured"),
            "{err}"
        );

        // AddVxlan replaces the tunnel as a whole.
        let replaced = apply_changes(
            &next,
            &[Change::AddVxlan(VxlanConfig {
                ttl: 9,
                ..VxlanConfig::new(100, 5, local, "eth1")
            })],
        )
        .unwrap();
        assert_eq!((replaced.vxlans.len(), replaced.vxlans[0].ttl), (1, 9));
        assert_eq!(replaced.routes.len(), 1);

        // The uplink cannot go while the tunnel uses it.
        let err = apply_changes(
            &next,
            &[Change::DelPort {
                name: "eth1".into(),
            }],
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("it is the uplink of vxlan 100; delete the vxlan first"),
            "{err}"
        );
        // DelVxlan takes its routes; then the uplink may go.
        let gone = apply_changes(
            &next,
            &[
                Change::DelVxlan { vni: 100 },
                Change::DelPort {
                    name: "eth1".into(),
                },
            ],
        )
        .unwrap();
        assert!(gone.vxlans.is_empty() && gone.routes.is_empty());
        assert!(apply_changes(&gone, &[Change::DelVxlan { vni: 100 }]).is_err());
    }

    const NAT_SAMPLE: &str = r#"
[[port]]
name = "pod1"
addresses = ["10.0.1.1/24"]

[[port]]
name = "uplink"
addresses = ["192.168.1.1/24"]

[[snat]]
source = "10.0.0.0/16"
out = "uplink"
ports = "20000-29999"

[[service]]
vip = "10.96.0.10:80"
protocol = "tcp"
backends = ["10.0.1.5:8080", "10.0.1.6:8080@2"]
affinity = "client-ip"

[[service]]
node_port = 30053
protocol = "udp"
"#;

    fn resolve_all(config: &Config) -> HashMap<String, ResolvedPort> {
        config
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (
                    p.name.clone(),
                    ResolvedPort {
                        id: PortId(i as u16),
                        mac: EthernetAddress([2, 0, 0, 0, 1, i as u8]),
                        mtu: 1500,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn nat_tables_parse_round_trip_and_reach_the_tables() {
        let config = Config::parse(NAT_SAMPLE).unwrap();
        assert_eq!(config.snats.len(), 1);
        assert_eq!(config.services.len(), 2);
        assert_eq!(config.services[0].backends[1].weight, 2);
        let again = Config::parse(&config.to_toml().unwrap()).unwrap();
        assert_eq!(again, config);
        let ports = resolve_all(&config);
        let mut tables = Tables::new();
        tables
            .apply_batch(&plan(&Config::default(), &config, &tables, &ports))
            .unwrap();
        assert_eq!(tables.snat_rules().count(), 1);
        assert_eq!(tables.services().count(), 2);
        assert_eq!(
            tables.services().next().unwrap().affinity_secs,
            Some(crate::nat::DEFAULT_AFFINITY_SECS)
        );
        assert!(plan(&config, &config, &tables, &ports).is_empty());

        // One backend fewer: one op, the Service replaced; the rule untouched.
        let mut fewer = config.clone();
        fewer.services[0].backends.pop();
        let ops = plan(&config, &fewer, &tables, &ports);
        assert_eq!(ops.len(), 1, "{ops:?}");
        assert!(matches!(ops[0], TableOp::AddService { .. }));
        // Rule and node port gone: two deletions.
        let mut gone = config.clone();
        gone.snats.clear();
        gone.services.pop();
        let ops = plan(&config, &gone, &tables, &ports);
        assert_eq!(ops.len(), 2, "{ops:?}");
        tables.apply_batch(&ops).unwrap();
        assert_eq!(tables.snat_rules().count(), 0);
        assert_eq!(tables.services().count(), 1);
    }

    #[test]
    fn bad_nat_tables_are_refused_with_their_line() {
        let cases = [
            (
                "out = \"uplink\"",
                "out = \"eth9\"",
                "line 10: snat 10.0.0.0/16 out eth9",
            ),
            ("ports = \"20000-29999\"", "ports = \"3-2\"", "LO <= HI"),
            (
                "ports = \"20000-29999\"",
                "to = \"fd00::1\"",
                "address family",
            ),
            ("\"10.0.1.6:8080@2\"", "\"10.0.1.6:8080@0\"", "weight"),
            ("\"10.0.1.6:8080@2\"", "\"10.0.1.5:8080@2\"", "twice"),
            (
                "\"10.0.1.6:8080@2\"",
                "\"[fd00::6]:8080\"",
                "service 10.96.0.10:80/tcp",
            ),
            ("vip = \"10.96.0.10:80\"", "vip = \"10.96.0.10\"", "IP:PORT"),
            (
                "node_port = 30053",
                "node_port = 30053\nvip = \"10.96.0.1:53\"",
                "not both",
            ),
            (
                "affinity = \"client-ip\"",
                "affinity = \"sticky\"",
                "sticky",
            ),
            (
                "affinity = \"client-ip\"",
                "affinity_timeout = 5",
                "needs affinity",
            ),
            ("protocol = \"udp\"", "protocol = \"sctp\"", "sctp"),
            (
                "protocol = \"udp\"",
                "protocol = \"udp\"\ncolour = 1",
                "colour",
            ),
        ];
        for (from, to, expected) in cases {
            let bad = NAT_SAMPLE.replacen(from, to, 1);
            assert_ne!(bad, NAT_SAMPLE, "{from}");
            let err = Config::parse(&bad).unwrap_err().to_string();
            assert!(err.contains(expected), "{to}: {err}");
        }
        let twice = format!("{NAT_SAMPLE}\n[[service]]\nnode_port = 30053\nprotocol = \"udp\"\n");
        let err = Config::parse(&twice).unwrap_err().to_string();
        assert!(err.contains("configured twice"), "{err}");
    }

    #[test]
    fn nat_changes_apply_and_refuse_what_is_absent() {
        use crate::nat::{BackendSpec, ServiceRef};
        let config = Config::parse(NAT_SAMPLE).unwrap();
        let service: ServiceRef = config.services[0].identity();
        let backend: BackendSpec = "10.0.1.7:8080@3".parse().unwrap();
        let next = apply_changes(&config, &[Change::AddBackend { service, backend }]).unwrap();
        assert_eq!(next.services[0].backends.len(), 3);
        let next = apply_changes(
            &next,
            &[Change::DelBackend {
                service,
                backend: "10.0.1.5:8080".parse().unwrap(),
            }],
        )
        .unwrap();
        assert_eq!(next.services[0].backends.len(), 2);
        let absent = Change::DelBackend {
            service,
            backend: "10.0.1.99:1".parse().unwrap(),
        };
        assert!(apply_changes(&next, &[absent]).is_err());
        let other = ServiceRef { vrf: 3, ..service };
        assert!(apply_changes(&next, &[Change::DelService { service: other }]).is_err());
        let next = apply_changes(&next, &[Change::DelService { service }]).unwrap();
        assert_eq!(next.services.len(), 1);
        // Deleting the egress port takes its rules.
        let next = apply_changes(
            &next,
            &[Change::DelPort {
                name: "uplink".into(),
            }],
        )
        .unwrap();
        assert!(next.snats.is_empty());
        let rule = Change::DelSnat {
            source: "10.0.0.0/16".parse().unwrap(),
            out: "uplink".into(),
        };
        assert!(apply_changes(&next, &[rule]).is_err());
    }

    const ACL_SAMPLE: &str = r#"
[[port]]
name = "pod1"
addresses = ["10.0.1.1/24"]

[[acl]]
port = "pod1"
direction = "out"

[[acl.rule]]
priority = 10
src = "10.0.0.0/16"
protocol = "tcp"
dst_ports = "80"
action = "allow"

[[acl.rule]]
protocol = "icmp"
icmp_type = 8
action = "allow"
"#;

    #[test]
    fn acls_parse_round_trip_plan_minimally_and_refuse_bad_rules() {
        let config = Config::parse(ACL_SAMPLE).unwrap();
        assert_eq!(config.acls[0].rules.len(), 2);
        assert_eq!(
            config.acls[0].rules[1].priority,
            crate::acl::DEFAULT_PRIORITY
        );
        let again = Config::parse(&config.to_toml().unwrap()).unwrap();
        assert_eq!(again, config);
        let ports = resolve_all(&config);
        let mut tables = Tables::new();
        tables
            .apply_batch(&plan(&Config::default(), &config, &tables, &ports))
            .unwrap();
        assert_eq!(tables.acls().count(), 1);
        assert!(plan(&config, &config, &tables, &ports).is_empty());
        let mut fewer = config.clone();
        fewer.acls[0].rules.pop();
        assert_eq!(plan(&config, &fewer, &tables, &ports).len(), 1);
        let mut gone = config.clone();
        gone.acls.clear();
        let ops = plan(&config, &gone, &tables, &ports);
        assert!(matches!(ops[..], [TableOp::DelAcl { .. }]), "{ops:?}");

        for (from, to, expected) in [
            ("dst_ports = \"80\"", "dst_ports = \"90-80\"", "empty range"),
            (
                "protocol = \"tcp\"",
                "protocol = \"icmp\"",
                "rule 1: ports need protocol",
            ),
            (
                "port = \"pod1\"",
                "port = \"pod9\"",
                "not a configured port",
            ),
            (
                "direction = \"out\"",
                "direction = \"sideways\"",
                "sideways",
            ),
            ("action = \"allow\"", "action = \"maybe\"", "maybe"),
            ("icmp_type = 8", "icmp_code = 8", "rule 2: icmp code needs"),
        ] {
            let bad = ACL_SAMPLE.replacen(from, to, 1);
            let err = Config::parse(&bad).unwrap_err().to_string();
            assert!(err.contains(expected), "{to}: {err}");
        }
        let twice = format!("{ACL_SAMPLE}\n[[acl]]\nport = \"pod1\"\ndirection = \"out\"\n");
        assert!(Config::parse(&twice)
            .unwrap_err()
            .to_string()
            .contains("configured twice"));

        // Rule changes and the port's removal.
        let rule = config.acls[0].rules[0].clone();
        let next = apply_changes(
            &config,
            &[Change::AddAclRule {
                target: crate::acl::AclAttachment::Port("pod1".into()),
                direction: pipelines::tables::AclDirection::In,
                rule,
            }],
        )
        .unwrap();
        assert_eq!(next.acls.len(), 2);
        let next = apply_changes(
            &next,
            &[Change::DelAclRule {
                target: crate::acl::AclAttachment::Port("pod1".into()),
                direction: pipelines::tables::AclDirection::Out,
                position: 1,
            }],
        )
        .unwrap();
        assert_eq!(next.acls[0].rules.len(), 1);
        assert!(apply_changes(
            &next,
            &[Change::DelAclRule {
                target: crate::acl::AclAttachment::Port("pod1".into()),
                direction: pipelines::tables::AclDirection::Out,
                position: 5,
            }]
        )
        .is_err());
        let next = apply_changes(
            &next,
            &[Change::DelPort {
                name: "pod1".into(),
            }],
        )
        .unwrap();
        assert!(next.acls.is_empty());
    }

    #[test]
    fn vrf_acls_parse_plan_and_go_with_their_vrf() {
        let sample = format!(
            "{ACL_SAMPLE}\n[[vrf]]\nid = 5\n\n[[acl]]\nvrf = 5\ndirection = \"in\"\n\n[[acl.rule]]\nprotocol = \"udp\"\naction = \"allow\"\n"
        );
        let config = Config::parse(&sample).unwrap();
        assert_eq!(
            config.acls[1].attachment(),
            crate::acl::AclAttachment::Vrf(5)
        );
        assert_eq!(Config::parse(&config.to_toml().unwrap()).unwrap(), config);
        let ports = resolve_all(&config);
        let mut tables = Tables::new();
        let ops = plan(&Config::default(), &config, &tables, &ports);
        assert!(
            ops.iter()
                .any(|op| matches!(op, TableOp::SetVrfAcl { vrf: VrfId(5), .. })),
            "{ops:?}"
        );
        tables.apply_batch(&ops).unwrap();
        assert!(tables
            .vrf_acl(VrfId(5), pipelines::tables::AclDirection::In)
            .is_some());
        assert!(plan(&config, &config, &tables, &ports).is_empty());
        // Removing the set detaches it; removing the VRF takes its set along.
        let mut unset = config.clone();
        unset.acls.truncate(1);
        let ops = plan(&config, &unset, &tables, &ports);
        assert!(matches!(ops[..], [TableOp::DelVrfAcl { .. }]), "{ops:?}");
        let mut no_vrf = unset.clone();
        no_vrf.vrfs.clear();
        let ops = plan(&config, &no_vrf, &tables, &ports);
        let mut gone = tables.clone();
        gone.apply_batch(&ops).unwrap();
        assert_eq!(gone.acls().count(), 1, "{ops:?}");

        for (from, to, expected) in [
            (
                "vrf = 5\ndirection",
                "vrf = 6\ndirection",
                "vrf 6 is not a configured vrf",
            ),
            (
                "vrf = 5\ndirection",
                "vrf = 5\nport = \"pod1\"\ndirection",
                "either a port or a vrf",
            ),
            (
                "vrf = 5\ndirection",
                "direction",
                "give the port or the vrf",
            ),
        ] {
            let bad = sample.replacen(from, to, 1);
            assert_ne!(bad, sample, "{from}");
            let err = Config::parse(&bad).unwrap_err().to_string();
            assert!(err.contains(expected), "{to}: {err}");
        }
        let next = apply_changes(
            &config,
            &[Change::DelAcl {
                target: crate::acl::AclAttachment::Vrf(5),
                direction: pipelines::tables::AclDirection::In,
            }],
        )
        .unwrap();
        assert_eq!(next.acls.len(), 1);
    }
}
