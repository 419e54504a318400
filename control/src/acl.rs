//! ACLs in the desired state: a rule set per port direction.
//!
//! ```toml
//! [[acl]]
//! port = "veth-pod1"
//! direction = "out"             # "out": what the port sends to the pod (its Kubernetes
//!                               # ingress); "in": what the pod sends
//! [[acl.rule]]
//! priority = 10                 # lower first; ties by position; default 1000
//! src = "10.244.0.0/16"         # optional prefixes
//! protocol = "tcp"              # tcp, udp, sctp, icmp, icmpv6 or a number; optional
//! dst_ports = "80"              # "80" or "8000-8100" (tcp, udp, sctp)
//! action = "allow"              # allow, deny, reject
//! [[acl.rule]]
//! protocol = "icmp"
//! icmp_type = 8                 # optional, with icmp_code
//! action = "allow"
//! ```
//! A set attached to a port denies what none of its rules allows (an empty set denies
//! everything); ports without a set are not filtered. A set is identified by (port,
//! direction) and replaced as a whole.
//!
//! A set can attach to a VRF instead (`vrf = 5` in place of `port`): `in` then sees every
//! packet entering the VRF (from its ports or decapsulated into it), `out` every packet
//! leaving through its ports or tunnels, on top of the port sets (every set on the way must
//! allow a connection).

use crate::nat::PortRange;
use pipelines::acl::{AclAction, AclRule};
use pipelines::tables::AclDirection;
use pipelines::IpPrefix;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Priority of a rule that gives none.
pub const DEFAULT_PRIORITY: u32 = 1000;

/// An IP protocol, by name or number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "ProtocolText", into = "ProtocolText")]
pub struct Protocol(pub u8);

/// How a protocol is written: a name or a number.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum ProtocolText {
    Number(u8),
    Name(String),
}

impl TryFrom<ProtocolText> for Protocol {
    type Error = String;

    fn try_from(t: ProtocolText) -> Result<Self, String> {
        match t {
            ProtocolText::Number(n) => Ok(Protocol(n)),
            ProtocolText::Name(s) => s.parse(),
        }
    }
}

impl From<Protocol> for ProtocolText {
    fn from(p: Protocol) -> Self {
        match p.0 {
            1 | 6 | 17 | 58 | 132 => ProtocolText::Name(p.to_string()),
            n => ProtocolText::Number(n),
        }
    }
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(Protocol(match s {
            "tcp" => 6,
            "udp" => 17,
            "sctp" => 132,
            "icmp" => 1,
            "icmpv6" | "ipv6-icmp" => 58,
            _ => s.parse::<u8>().map_err(|_| {
                format!("bad protocol '{s}': expected tcp, udp, sctp, icmp, icmpv6 or 0-255")
            })?,
        }))
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            6 => f.write_str("tcp"),
            17 => f.write_str("udp"),
            132 => f.write_str("sctp"),
            1 => f.write_str("icmp"),
            58 => f.write_str("icmpv6"),
            n => write!(f, "{n}"),
        }
    }
}

/// A port or a port range, written `80` or `8000-8100`.
pub fn parse_ports(s: &str) -> Result<PortRange, String> {
    if s.contains('-') {
        let (lo, hi) = s
            .split_once('-')
            .ok_or_else(|| format!("bad ports '{s}'"))?;
        let parse = |p: &str| {
            p.parse::<u16>()
                .map_err(|_| format!("bad ports '{s}': expected PORT or LO-HI (0-65535)"))
        };
        let (lo, hi) = (parse(lo)?, parse(hi)?);
        if lo > hi {
            return Err(format!("bad ports '{s}': empty range"));
        }
        Ok(PortRange { low: lo, high: hi })
    } else {
        let p = s
            .parse::<u16>()
            .map_err(|_| format!("bad ports '{s}': expected PORT or LO-HI (0-65535)"))?;
        Ok(PortRange { low: p, high: p })
    }
}

/// Ports in a rule: `"80"` or `"8000-8100"` (port 0 allowed, unlike NAT ranges).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ports(pub u16, pub u16);

impl TryFrom<String> for Ports {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        parse_ports(&s).map(|r| Ports(r.low, r.high))
    }
}

impl From<Ports> for String {
    fn from(p: Ports) -> String {
        p.to_string()
    }
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == self.1 {
            write!(f, "{}", self.0)
        } else {
            write!(f, "{}-{}", self.0, self.1)
        }
    }
}

fn default_priority() -> u32 {
    DEFAULT_PRIORITY
}

/// One rule as written in the config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclRuleConfig {
    /// Lower first.
    #[serde(default = "default_priority")]
    pub priority: u32,
    /// Source prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<IpPrefix>,
    /// Destination prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<IpPrefix>,
    /// Protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Source ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_ports: Option<Ports>,
    /// Destination ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_ports: Option<Ports>,
    /// ICMP type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    /// ICMP code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    /// Action.
    pub action: AclAction,
}

impl AclRuleConfig {
    /// The dataplane's rule.
    pub fn rule(&self) -> AclRule {
        AclRule {
            priority: self.priority,
            src: self.src,
            dst: self.dst,
            protocol: self.protocol.map(|p| p.0),
            src_ports: self.src_ports.map(|p| (p.0, p.1)),
            dst_ports: self.dst_ports.map(|p| (p.0, p.1)),
            icmp_type: self.icmp_type,
            icmp_code: self.icmp_code,
            action: self.action,
        }
    }
}

impl fmt::Display for AclRuleConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "priority {}", self.priority)?;
        if let Some(p) = self.src {
            write!(f, " src {p}")?;
        }
        if let Some(p) = self.dst {
            write!(f, " dst {p}")?;
        }
        if let Some(p) = self.protocol {
            write!(f, " proto {p}")?;
        }
        if let Some(p) = self.src_ports {
            write!(f, " sport {p}")?;
        }
        if let Some(p) = self.dst_ports {
            write!(f, " dport {p}")?;
        }
        if let Some(t) = self.icmp_type {
            write!(f, " icmp-type {t}")?;
        }
        if let Some(c) = self.icmp_code {
            write!(f, " code {c}")?;
        }
        let action = match self.action {
            AclAction::Allow => "allow",
            AclAction::Deny => "deny",
            AclAction::Reject => "reject",
        };
        write!(f, " {action}")
    }
}

/// What a rule set is attached to, as operators name it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AclAttachment {
    /// A port, by name.
    Port(String),
    /// A VRF, by id.
    Vrf(u32),
}

impl fmt::Display for AclAttachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AclAttachment::Port(name) => f.write_str(name),
            AclAttachment::Vrf(vrf) => write!(f, "vrf {vrf}"),
        }
    }
}

/// One `[[acl]]`: the rule set of a port's or a VRF's direction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclConfig {
    /// Port (empty when the set is attached to a VRF).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub port: String,
    /// VRF, in place of a port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrf: Option<u32>,
    /// Direction.
    pub direction: AclDirection,
    /// Rules, in order.
    #[serde(default, rename = "rule")]
    pub rules: Vec<AclRuleConfig>,
}

impl AclConfig {
    /// A set attached to `attachment`.
    pub fn new(
        attachment: &AclAttachment,
        direction: AclDirection,
        rules: Vec<AclRuleConfig>,
    ) -> Self {
        let (port, vrf) = match attachment {
            AclAttachment::Port(name) => (name.clone(), None),
            AclAttachment::Vrf(vrf) => (String::new(), Some(*vrf)),
        };
        AclConfig {
            port,
            vrf,
            direction,
            rules,
        }
    }

    /// What the set is attached to (the VRF when both are given: `validate` refuses that).
    pub fn attachment(&self) -> AclAttachment {
        match self.vrf {
            Some(vrf) => AclAttachment::Vrf(vrf),
            None => AclAttachment::Port(self.port.clone()),
        }
    }

    /// The dataplane's rules.
    pub fn rules(&self) -> Vec<AclRule> {
        self.rules.iter().map(AclRuleConfig::rule).collect()
    }

    /// Checks every rule; the message names the rule by position (1-based).
    pub fn validate(&self) -> Result<(), String> {
        match (self.port.is_empty(), self.vrf) {
            (true, None) => return Err("give the port or the vrf the set attaches to".into()),
            (false, Some(_)) => return Err("give either a port or a vrf, not both".into()),
            _ => {}
        }
        for (i, rule) in self.rules.iter().enumerate() {
            // Positions are 1-based for operators (as `acl list` shows them).
            pipelines::acl::validate_rule(i + 1, &rule.rule())
                .map_err(|e| format!("{e} ({rule})"))?;
        }
        Ok(())
    }
}

/// How a direction is written on the command line and in lists.
pub fn direction_name(d: AclDirection) -> &'static str {
    match d {
        AclDirection::In => "in",
        AclDirection::Out => "out",
    }
}
