//! NAT in the desired state: `[[snat]]` rules (masquerade when leaving the cluster) and
//! `[[service]]` tables (a VIP or a node port load-balanced to backends).
//!
//! ```toml
//! [[snat]]                      # pods leaving through eth1 get eth1's address
//! source = "10.244.0.0/16"
//! out = "eth1"
//! to = "192.168.100.1"          # default: the port's address facing the destination
//! ports = "1024-65535"          # default
//!
//! [[service]]
//! vip = "10.96.0.10:80"         # or: node_port = 30080 (every address of the node)
//! protocol = "tcp"              # or "udp"
//! backends = ["10.244.1.5:8080", "10.244.2.7:8080@2"]   # IP:PORT[@WEIGHT]; none: refuse
//! affinity = "client-ip"        # optional
//! affinity_timeout = 10800      # seconds, default 10800 (kube-proxy's)
//! vrf = 0                       # default 0
//! ```
//! An SNAT rule lives in the VRF of its `out` port and is identified by (source, out); a
//! Service by (VRF, frontend, protocol). Adding either with an existing identity replaces it.

use pipelines::tables::{Backend, Frontend, L4Protocol, Service, ServiceKey, SnatKey, SnatRule};
use pipelines::{IpPrefix, PortId, VrfId};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// Source ports of an SNAT rule without `ports`.
pub const DEFAULT_SNAT_PORTS: PortRange = PortRange {
    low: 1024,
    high: 65535,
};

/// Affinity time of a Service without `affinity_timeout` (kube-proxy's default, 3 hours).
pub const DEFAULT_AFFINITY_SECS: u32 = 10_800;

/// Longest affinity time accepted (Kubernetes' limit, one day).
pub const MAX_AFFINITY_SECS: u32 = 86_400;

/// An inclusive range of ports, written `LO-HI`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortRange {
    /// First port.
    pub low: u16,
    /// Last port.
    pub high: u16,
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (low, high) = s
            .split_once('-')
            .ok_or_else(|| format!("{s:?} is not a port range LO-HI"))?;
        let parse = |p: &str| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| format!("{p:?} is not a port (1-65535)"))
        };
        let range = PortRange {
            low: parse(low)?,
            high: parse(high)?,
        };
        if range.low == 0 || range.low > range.high {
            return Err(format!("{s:?}: ports must satisfy 1 <= LO <= HI"));
        }
        Ok(range)
    }
}

impl TryFrom<String> for PortRange {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<PortRange> for String {
    fn from(r: PortRange) -> String {
        r.to_string()
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.low, self.high)
    }
}

/// One `[[snat]]` rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnatConfig {
    /// Sources translated.
    pub source: IpPrefix,
    /// Egress port (its VRF is the rule's).
    pub out: String,
    /// Translated source address; default: the port's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<IpAddr>,
    /// Translated source ports; default [`DEFAULT_SNAT_PORTS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<PortRange>,
}

impl SnatConfig {
    /// The identity: (source, out).
    pub fn identity(&self) -> (IpPrefix, &str) {
        (self.source, self.out.as_str())
    }

    /// The tables' rule, for an `out` port resolved to `port` in `vrf`.
    pub fn rule(&self, port: PortId, vrf: u32) -> SnatRule {
        let ports = self.ports.unwrap_or(DEFAULT_SNAT_PORTS);
        SnatRule {
            vrf: VrfId(vrf),
            source: self.source,
            out_port: port,
            to: self.to,
            ports: (ports.low, ports.high),
        }
    }

    /// The tables' key, as [`SnatConfig::rule`] would make it.
    pub fn key(&self, port: PortId, vrf: u32) -> SnatKey {
        self.rule(port, vrf).key()
    }
}

/// A backend, written `IP:PORT[@WEIGHT]` (`[IPv6]:PORT[@WEIGHT]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BackendSpec {
    /// Address and port.
    pub addr: SocketAddr,
    /// Relative weight (1-65535, default 1).
    pub weight: u16,
}

impl FromStr for BackendSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (endpoint, weight) = match s.rsplit_once('@') {
            Some((endpoint, weight)) => {
                let weight = weight
                    .parse::<u16>()
                    .ok()
                    .filter(|w| *w > 0)
                    .ok_or_else(|| format!("{s:?}: weight must be 1-65535"))?;
                (endpoint, weight)
            }
            None => (s, 1),
        };
        let addr = parse_endpoint(endpoint)?;
        Ok(BackendSpec { addr, weight })
    }
}

impl TryFrom<String> for BackendSpec {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<BackendSpec> for String {
    fn from(b: BackendSpec) -> String {
        b.to_string()
    }
}

impl fmt::Display for BackendSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.weight == 1 {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}@{}", self.addr, self.weight)
        }
    }
}

/// `IP:PORT` or `[IPv6]:PORT`, port 1-65535.
pub fn parse_endpoint(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s
        .parse()
        .map_err(|_| format!("{s:?} is not IP:PORT (IPv6: [ADDR]:PORT)"))?;
    if addr.port() == 0 {
        return Err(format!("{s:?}: port 0"));
    }
    if let SocketAddr::V6(v6) = addr {
        if v6.scope_id() != 0 || v6.flowinfo() != 0 {
            return Err(format!("{s:?}: no scope or flow info"));
        }
    }
    Ok(addr)
}

/// `vip = "IP:PORT"` read with [`parse_endpoint`]'s checks and messages.
fn deserialize_endpoint<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_endpoint(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// Client affinity of a Service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Affinity {
    /// A client's new connections go to the backend of its last one.
    #[serde(rename = "client-ip")]
    ClientIp,
}

/// Where a Service is reached, in config terms (`vip` or `node_port`) with its protocol and
/// VRF: a Service's identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServiceRef {
    /// VIP and port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<SocketAddr>,
    /// Node port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
    /// Protocol.
    pub protocol: L4Protocol,
    /// VRF.
    #[serde(default)]
    pub vrf: u32,
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.vip, self.node_port) {
            (Some(vip), _) => write!(f, "{vip}/{}", self.protocol)?,
            (None, Some(port)) => write!(f, "node-port {port}/{}", self.protocol)?,
            (None, None) => write!(f, "?/{}", self.protocol)?,
        }
        if self.vrf != 0 {
            write!(f, " vrf {}", self.vrf)?;
        }
        Ok(())
    }
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// One `[[service]]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Virtual IP and port (ClusterIP); exclusive with `node_port`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "deserialize_endpoint"
    )]
    pub vip: Option<SocketAddr>,
    /// Port on every address of the node (NodePort); exclusive with `vip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
    /// `tcp` or `udp`.
    pub protocol: L4Protocol,
    /// Backends; none: connections are refused.
    #[serde(default)]
    pub backends: Vec<BackendSpec>,
    /// Client affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Affinity time in seconds (default [`DEFAULT_AFFINITY_SECS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_timeout: Option<u32>,
    /// VRF of the clients and backends.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub vrf: u32,
}

impl ServiceConfig {
    /// The identity.
    pub fn identity(&self) -> ServiceRef {
        ServiceRef {
            vip: self.vip,
            node_port: self.node_port,
            protocol: self.protocol,
            vrf: self.vrf,
        }
    }

    /// Checks what can be checked on the Service alone (the tables check the rest: address
    /// families, backend count).
    pub fn validate(&self) -> Result<(), String> {
        match (self.vip, self.node_port) {
            (Some(_), Some(_)) => return Err("give vip or node_port, not both".into()),
            (None, None) => return Err("give vip (IP:PORT) or node_port".into()),
            (Some(vip), None) => {
                parse_endpoint(&vip.to_string())?;
            }
            (None, Some(0)) => return Err("node_port 0".into()),
            (None, Some(_)) => {}
        }
        if self.vrf > VrfId::MAX {
            return Err(format!("VRF {} exceeds {}", self.vrf, VrfId::MAX));
        }
        for (i, backend) in self.backends.iter().enumerate() {
            if backend.addr.port() == 0 {
                return Err(format!("backend {backend}: port 0"));
            }
            if self.backends[..i].iter().any(|b| b.addr == backend.addr) {
                return Err(format!("backend {} given twice", backend.addr));
            }
        }
        match (self.affinity, self.affinity_timeout) {
            (None, Some(_)) => return Err("affinity_timeout needs affinity = \"client-ip\"".into()),
            (Some(_), Some(t)) if t == 0 || t > MAX_AFFINITY_SECS => {
                return Err(format!(
                    "affinity_timeout must be 1-{MAX_AFFINITY_SECS} seconds"
                ))
            }
            _ => {}
        }
        Ok(())
    }

    /// The tables' key.
    pub fn key(&self) -> ServiceKey {
        let frontend = match (self.vip, self.node_port) {
            (Some(vip), _) => Frontend::Vip {
                addr: vip.ip(),
                port: vip.port(),
            },
            (None, port) => Frontend::NodePort {
                port: port.unwrap_or(0),
            },
        };
        ServiceKey {
            vrf: VrfId(self.vrf),
            frontend,
            protocol: self.protocol,
        }
    }

    /// The tables' Service.
    pub fn service(&self) -> Service {
        Service {
            key: self.key(),
            backends: self
                .backends
                .iter()
                .map(|b| Backend {
                    addr: b.addr.ip(),
                    port: b.addr.port(),
                    weight: b.weight,
                })
                .collect(),
            affinity_secs: self
                .affinity
                .map(|_| self.affinity_timeout.unwrap_or(DEFAULT_AFFINITY_SECS)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_and_backends_parse_and_print_back() {
        let r: PortRange = "1024-2047".parse().expect("range");
        assert_eq!((r.low, r.high), (1024, 2047));
        assert_eq!(r.to_string(), "1024-2047");
        for bad in ["0-10", "10-5", "5", "a-b", "1-65536", ""] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
        let b: BackendSpec = "10.0.0.1:80@3".parse().expect("backend");
        assert_eq!(b.weight, 3);
        assert_eq!(b.to_string(), "10.0.0.1:80@3");
        let b: BackendSpec = "[fd00::1]:8080".parse().expect("v6 backend");
        assert_eq!(b.to_string(), "[fd00::1]:8080");
        for bad in [
            "10.0.0.1",
            "10.0.0.1:0",
            "10.0.0.1:80@0",
            "10.0.0.1:80@70000",
            "fd00::1:80",
            "10.0.0.1:80@",
            "[fe80::1%2]:80",
        ] {
            assert!(bad.parse::<BackendSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn service_validation_names_the_problem() {
        let base = ServiceConfig {
            vip: Some("10.96.0.1:80".parse().expect("vip")),
            node_port: None,
            protocol: L4Protocol::Tcp,
            backends: vec!["10.0.0.1:80".parse().expect("b")],
            affinity: None,
            affinity_timeout: None,
            vrf: 0,
        };
        assert!(base.validate().is_ok());
        let both = ServiceConfig {
            node_port: Some(30000),
            ..base.clone()
        };
        assert!(both.validate().unwrap_err().contains("not both"));
        let none = ServiceConfig {
            vip: None,
            ..base.clone()
        };
        assert!(none.validate().is_err());
        let twice = ServiceConfig {
            backends: vec![
                "10.0.0.1:80".parse().expect("b"),
                "10.0.0.1:80@2".parse().expect("b"),
            ],
            ..base.clone()
        };
        assert!(twice.validate().unwrap_err().contains("twice"));
        let timeout_alone = ServiceConfig {
            affinity_timeout: Some(5),
            ..base.clone()
        };
        assert!(timeout_alone.validate().is_err());
        let affinity = ServiceConfig {
            affinity: Some(Affinity::ClientIp),
            ..base
        };
        assert_eq!(
            affinity.service().affinity_secs,
            Some(DEFAULT_AFFINITY_SECS)
        );
    }
}
