//! NAT configuration: source NAT rules (masquerade when leaving the cluster) and Services
//! (a virtual IP, or a port on every node address, load-balanced to backends).
//!
//! This is desired state only, changed through [`super::TableOp`]s like the rest of the
//! tables; per-connection state (which backend, which translated port) lives in each worker's
//! connection table. Contract:
//! - An SNAT rule is identified by (VRF, source prefix, egress port); adding one with the same
//!   identity replaces it. It applies to connections from the prefix whose route leaves
//!   through that port (a tunnel port is a different egress than the uplink, so pod-to-pod
//!   traffic through the overlay is never masqueraded, as Kubernetes wants).
//! - A Service is identified by (VRF, frontend, protocol); adding one replaces it (its
//!   backends, weights and affinity). A Service may have no backend: its connections are
//!   refused (ICMP unreachable / TCP reset), as kube-proxy does.
//! - Validation never panics: address families must agree, ports and weights are checked,
//!   backends are unique per Service and bounded in number.

use super::{is_unicast, IpPrefix, TableError};
use crate::ids::{PortId, VrfId};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;

/// Most backends per Service (the load-balancing table is sized from this).
pub const MAX_BACKENDS: usize = 1024;

/// Transport protocol of a Service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum L4Protocol {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
}

impl L4Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            L4Protocol::Tcp => 6,
            L4Protocol::Udp => 17,
        }
    }
}

impl fmt::Display for L4Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            L4Protocol::Tcp => "tcp",
            L4Protocol::Udp => "udp",
        })
    }
}

/// Source NAT: connections from `source` leaving through `out_port` get the address `to`
/// (default: the egress port's address of the destination's family) and a source port from
/// `ports`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnatRule {
    /// VRF of the traffic (the egress port's).
    pub vrf: VrfId,
    /// Sources translated.
    pub source: IpPrefix,
    /// Egress port the rule applies to.
    pub out_port: PortId,
    /// Translated source address; `None`: the egress port's own (masquerade).
    pub to: Option<IpAddr>,
    /// Translated source ports (inclusive).
    pub ports: (u16, u16),
}

impl SnatRule {
    /// The rule's identity.
    pub fn key(&self) -> SnatKey {
        SnatKey {
            vrf: self.vrf,
            source: self.source,
            out_port: self.out_port,
        }
    }
}

/// Identity of an SNAT rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SnatKey {
    /// VRF.
    pub vrf: VrfId,
    /// Sources translated.
    pub source: IpPrefix,
    /// Egress port.
    pub out_port: PortId,
}

/// Where a Service is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Frontend {
    /// A virtual IP and port (ClusterIP).
    Vip {
        /// Virtual address.
        addr: IpAddr,
        /// Port.
        port: u16,
    },
    /// A port on every address of the node (NodePort).
    NodePort {
        /// Port.
        port: u16,
    },
}

impl fmt::Display for Frontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Frontend::Vip {
                addr: IpAddr::V6(a),
                port,
            } => write!(f, "[{a}]:{port}"),
            Frontend::Vip { addr, port } => write!(f, "{addr}:{port}"),
            Frontend::NodePort { port } => write!(f, "node-port {port}"),
        }
    }
}

/// Identity of a Service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceKey {
    /// VRF of the clients (and of the backends).
    pub vrf: VrfId,
    /// Where it is reached.
    pub frontend: Frontend,
    /// Transport protocol.
    pub protocol: L4Protocol,
}

/// One backend of a Service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Backend {
    /// Address.
    pub addr: IpAddr,
    /// Port.
    pub port: u16,
    /// Relative weight (1-65535); new connections are spread in proportion.
    pub weight: u16,
}

/// A Service: its frontend and its backends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Identity.
    pub key: ServiceKey,
    /// Backends (possibly none: connections are then refused).
    pub backends: Vec<Backend>,
    /// Client-IP affinity: a client's new connections go to the backend its previous one
    /// used, for this many seconds after its last new connection to the Service (kube-proxy's
    /// semantics; kept per worker). `None`: no affinity.
    pub affinity_secs: Option<u32>,
}

/// Checks an SNAT rule on its own (the egress port's existence and VRF are checked by the
/// tables).
pub fn validate_snat(rule: &SnatRule) -> Result<(), TableError> {
    if rule.ports.0 == 0 || rule.ports.0 > rule.ports.1 {
        return Err(TableError::BadPortRange(rule.ports.0, rule.ports.1));
    }
    if let Some(to) = rule.to {
        if !is_unicast(to) || to.is_ipv4() != rule.source.network().is_ipv4() {
            return Err(TableError::BadNatAddress(to));
        }
    }
    Ok(())
}

/// Checks a Service on its own.
pub fn validate_service(service: &Service) -> Result<(), TableError> {
    let (family_v4, frontend_port) = match service.key.frontend {
        Frontend::Vip { addr, port } => {
            if !is_unicast(addr) {
                return Err(TableError::BadNatAddress(addr));
            }
            (Some(addr.is_ipv4()), port)
        }
        Frontend::NodePort { port } => (None, port),
    };
    if frontend_port == 0 {
        return Err(TableError::BadServicePort(frontend_port));
    }
    if service.backends.len() > MAX_BACKENDS {
        return Err(TableError::TooManyBackends(service.backends.len()));
    }
    for (i, backend) in service.backends.iter().enumerate() {
        if !is_unicast(backend.addr) || family_v4.is_some_and(|v4| v4 != backend.addr.is_ipv4()) {
            return Err(TableError::BadNatAddress(backend.addr));
        }
        if backend.port == 0 {
            return Err(TableError::BadServicePort(backend.port));
        }
        if backend.weight == 0 {
            return Err(TableError::BadWeight(backend.addr, backend.port));
        }
        if service.backends[..i]
            .iter()
            .any(|b| b.addr == backend.addr && b.port == backend.port)
        {
            return Err(TableError::DuplicateBackend(backend.addr, backend.port));
        }
    }
    if service.affinity_secs == Some(0) {
        return Err(TableError::BadAffinity);
    }
    Ok(())
}

/// Smallest Maglev table of a Service: 16381 entries (64 KiB) keep up to 163 backends within
/// 1% of their share, so a Service keeps its size (and its mapping) as backends come and go;
/// 1000 Services take 64 MiB per table generation (shared between generations).
pub const MIN_BALANCER_SIZE: usize = 16_381;

/// The Maglev table of a Service (`None` without backends): each backend's entry id is its
/// index in [`Service::backends`], its weight the backend's. The size is the first of
/// [`crate::maglev::TABLE_SIZES`] at least [`MIN_BALANCER_SIZE`] and 100 entries per backend.
pub(crate) fn balancer(service: &Service) -> Option<std::sync::Arc<crate::maglev::Maglev>> {
    use crate::maglev::{backend_key, Maglev, MaglevBackend};
    if service.backends.is_empty() {
        return None;
    }
    let backends: Vec<MaglevBackend> = service
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| MaglevBackend::new(backend_key(b.addr, b.port), i as u32, b.weight))
        .collect();
    // Validation bounds the backends and weights, and the size comes from the table's own
    // sizing rule, so building cannot fail; if it ever did, the Service would refuse
    // connections rather than crash the control thread.
    let wanted = (backends.len() * 100).max(MIN_BALANCER_SIZE);
    let size = crate::maglev::TABLE_SIZES
        .iter()
        .copied()
        .find(|&size| size >= wanted)
        .unwrap_or(crate::maglev::MAX_TABLE_SIZE);
    Maglev::new(&backends, size).ok().map(std::sync::Arc::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn service(backends: Vec<Backend>) -> Service {
        Service {
            key: ServiceKey {
                vrf: VrfId(0),
                frontend: Frontend::Vip {
                    addr: IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)),
                    port: 53,
                },
                protocol: L4Protocol::Udp,
            },
            backends,
            affinity_secs: None,
        }
    }

    fn backend(last: u8, port: u16, weight: u16) -> Backend {
        Backend {
            addr: IpAddr::V4(Ipv4Addr::new(10, 244, 1, last)),
            port,
            weight,
        }
    }

    #[test]
    fn services_are_validated() {
        assert_eq!(validate_service(&service(vec![])), Ok(()));
        assert_eq!(
            validate_service(&service(vec![backend(2, 53, 1), backend(3, 53, 2)])),
            Ok(())
        );
        assert!(validate_service(&service(vec![backend(2, 0, 1)])).is_err());
        assert!(validate_service(&service(vec![backend(2, 53, 0)])).is_err());
        assert!(validate_service(&service(vec![backend(2, 53, 1), backend(2, 53, 3)])).is_err());
        let mut v6 = service(vec![backend(2, 53, 1)]);
        v6.backends[0].addr = "fd00::2".parse().expect("address");
        assert!(validate_service(&v6).is_err(), "family mismatch");
        let mut zero_affinity = service(vec![]);
        zero_affinity.affinity_secs = Some(0);
        assert!(validate_service(&zero_affinity).is_err());
        let too_many: Vec<Backend> = (0..=MAX_BACKENDS)
            .map(|i| backend(1, 1 + i as u16, 1))
            .collect();
        assert!(validate_service(&service(too_many)).is_err());
    }

    #[test]
    fn snat_rules_are_validated() {
        let rule = SnatRule {
            vrf: VrfId(0),
            source: "10.244.0.0/16".parse().expect("prefix"),
            out_port: PortId(0),
            to: None,
            ports: (1024, 65535),
        };
        assert_eq!(validate_snat(&rule), Ok(()));
        assert!(validate_snat(&SnatRule {
            ports: (2000, 1000),
            ..rule.clone()
        })
        .is_err());
        assert!(validate_snat(&SnatRule {
            ports: (0, 10),
            ..rule.clone()
        })
        .is_err());
        assert!(validate_snat(&SnatRule {
            to: Some("fd00::1".parse().expect("address")),
            ..rule
        })
        .is_err());
    }
}
