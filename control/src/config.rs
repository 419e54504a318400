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
//! ```
//! [`Config::parse`] reports syntax errors with their line (from the TOML parser) and
//! semantic errors with the line of the `[[port]]`/`[[route]]`/`[[neighbor]]` table at fault.
//! Checks that need the dataplane's view (overlapping subnets, gateways on a connected subnet)
//! are made by building the tables in memory ([`Config::check_tables`]), so the daemon refuses
//! such a file before any change reaches the dataplane.

use pipelines::lpm::LpmError;
use pipelines::tables::{InterfaceAddress, RouteTarget, TableOp, Tables};
use pipelines::wire::EthernetAddress;
use pipelines::{IpPrefix, PortId, VrfId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
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
}

fn is_false(b: &bool) -> bool {
    !*b
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
    /// Routes.
    #[serde(default, rename = "route", skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
    /// Neighbors.
    #[serde(default, rename = "neighbor", skip_serializing_if = "Vec::is_empty")]
    pub neighbors: Vec<NeighborConfig>,
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
}

impl Item {
    fn table_name(&self) -> (&'static str, usize) {
        match self {
            Item::Vrf(i) => ("vrf", *i),
            Item::Port(i) => ("port", *i),
            Item::Route(i) => ("route", *i),
            Item::Neighbor(i) => ("neighbor", *i),
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
            ];
            if kinds.iter().filter(|k| **k).count() != 1 {
                return Err(err(
                    "give exactly one of via/dev, blackhole, unreachable or nexthops".into(),
                ));
            }
            let devs = route
                .dev
                .iter()
                .chain(route.nexthops.iter().filter_map(|p| p.dev.as_ref()));
            for dev in devs {
                match self.port(dev) {
                    None => return Err(err(format!("dev {dev} is not a configured port"))),
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
        (ops, origins)
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
    let target = if route.blackhole {
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
/// include every port of `new`.
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
    let affected_ids: HashSet<PortId> = affected
        .iter()
        .filter_map(|n| tables.port_by_name(n).map(|p| p.id))
        .collect();
    let mut ops = Vec::new();

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
    // 3. Addresses removed from kept ports; affected ports deleted.
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
/// - `AddRoute` / `AddNeighbor` replace an entry with the same key.
/// - `DelRoute` / `DelNeighbor` / `DelPort` of something absent is an error.
pub fn apply_changes(
    config: &Config,
    changes: &[crate::proto::Change],
) -> Result<Config, ConfigError> {
    let next = merge_changes(config, changes)?;
    next.check_tables()?;
    Ok(next)
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
            }
            Change::AddRoute(route) => {
                match next
                    .routes
                    .iter_mut()
                    .find(|r| r.vrf == route.vrf && r.prefix == route.prefix)
                {
                    Some(existing) => *existing = route.clone(),
                    None => next.routes.push(route.clone()),
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
        }
    }
    next.validate()?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Change;

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
        };
        assert!(apply_changes(&config, &[Change::AddRoute(bad_route)]).is_err());
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
}
