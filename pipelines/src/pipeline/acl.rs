//! ACLs in the slow path (issue 6, second stage): the rule sets attached to the ingress port
//! (`In`) and the egress port (`Out`) of a routed packet decide whether its connection may
//! open.
//!
//! - A packet is classified with its source as sent and its destination as it will be
//!   delivered (after a Service's DNAT, before masquerade), as Kubernetes policies see pod
//!   addresses. Both attached sets must allow it; a set attached to a port denies what none
//!   of its rules allows (Kubernetes semantics). Ports without sets are not filtered.
//! - Stateful: once any set is attached on the node, every new connection is tracked (with
//!   its NAT, or as an identity connection), filtered or not, and its replies pass without a
//!   reverse rule, whatever set they cross; so do ICMP errors about it.
//! - Policy changes apply to existing connections: a connection records the table generation
//!   it was allowed under; any table change makes its flows stale, and the next packet of its
//!   original direction is classified again: a connection now denied is cut (forgotten)
//!   there. Replies keep passing until that next original packet.
//! - Allowed flows are cached like any other (the cache entry is the decision: established
//!   traffic costs no classification); denied packets are not cached.
//! - Later fragments carry no L4 header: only rules without ports or ICMP fields can match
//!   them (so a port-based allow lets no later fragment through: `acl-deny`).
//! - Packets to the router's own addresses are not filtered.
//!
//! - Every decision is counted per rule (`Counters::acl_hits`): every denied packet and the
//!   first packet of each allowed connection (later ones are flow-cache hits). Denied packets
//!   are sampled to [`super::Event::AclDenied`] (10 a second per worker, bursts of 20) for the
//!   log, with the rule that decided.
//!
//! Limitation: identity connections are refreshed on the slow path only (a cached flow does
//! not touch its connection), so an idle-on-the-slow-path UDP connection can expire under a
//! long-lived cached flow, after which its reply is classified on its own.

use super::nat::Plan;
use super::{Meta, Output, Packet, Pipeline};
use crate::acl::{AclAction, AclKey};
use crate::conntrack::Direction;
use crate::drop::DropReason;
use crate::ids::PortId;
use crate::tables::{AclDirection, Tables};

/// What the ACLs said about a packet that may go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AclOutcome {
    /// No set on either port.
    NoPolicy,
    /// Allowed; `new`: the first packet of a connection (to be tracked).
    Allowed {
        /// A new connection.
        new: bool,
    },
}

/// ICMP "administratively prohibited" codes (RFC 1812, RFC 4443).
const CODE4_PROHIBITED: u8 = 13;
const CODE6_PROHIBITED: u8 = 1;

fn acl_key(frame: &[u8], m: &Meta, plan: &Plan) -> AclKey {
    let l4 = m.l4 as usize;
    let has_l4 = l4 != 0 && !m.later_fragment;
    let (dst, dst_port) = match plan {
        Plan::Tracked(action) => (action.dst, action.dst_port),
        Plan::Service { backend, .. } => (crate::flow::ip_value(backend.0), backend.1),
        Plan::None | Plan::Related => (m.key.dst, m.key.dst_port),
    };
    let (l4_a, l4_b) = match m.key.protocol {
        6 | 17 => (m.key.src_port, dst_port),
        132 if has_l4 => frame.get(l4..l4 + 4).map_or((0, 0), |p| {
            (
                u16::from_be_bytes([p[0], p[1]]),
                u16::from_be_bytes([p[2], p[3]]),
            )
        }),
        1 | 58 if has_l4 => frame
            .get(l4..l4 + 2)
            .map_or((0, 0), |t| (u16::from(t[0]), u16::from(t[1]))),
        _ => (0, 0),
    };
    AclKey {
        ipv6: m.key.ipv6,
        src: m.key.src,
        dst,
        protocol: m.key.protocol,
        has_l4,
        l4_a,
        l4_b,
    }
}

impl Pipeline {
    /// Applies the ACLs of `in_port` (`In`) and `out_port` (`Out`) to a routed packet whose
    /// NAT is planned as `plan`. `Err`: the packet's drop (after a reset or ICMP for
    /// `reject`).
    pub(super) fn acl_check(
        &mut self,
        tables: &Tables,
        packet: &Packet<'_>,
        m: &Meta,
        out_port: PortId,
        plan: &Plan,
        out: &mut Output,
    ) -> Result<AclOutcome, DropReason> {
        if !tables.has_acls() {
            return Ok(AclOutcome::NoPolicy);
        }
        let ingress = tables.acl(packet.in_port, AclDirection::In);
        let egress = tables.acl(out_port, AclDirection::Out);
        if ingress.is_none() && egress.is_none() {
            // Not filtered here, but tracked: its replies may cross a port with a set (the
            // sender's own ingress policy must not block the answers to what it opened).
            return Ok(match plan {
                Plan::None | Plan::Service { .. } => AclOutcome::Allowed { new: true },
                Plan::Tracked(_) | Plan::Related => AclOutcome::Allowed { new: false },
            });
        }
        let generation = tables.generation() as u32;
        let tracked = match plan {
            Plan::Related => return Ok(AclOutcome::Allowed { new: false }),
            Plan::Tracked(action) if action.direction == Direction::Reply => {
                return Ok(AclOutcome::Allowed { new: false })
            }
            Plan::Tracked(action) => {
                if self.conntrack.user(action.conn) == Some(generation) {
                    return Ok(AclOutcome::Allowed { new: false });
                }
                Some(action.conn)
            }
            Plan::None | Plan::Service { .. } => None,
        };
        let key = acl_key(packet.frame(), m, plan);
        let sets = [
            (packet.in_port, AclDirection::In, ingress),
            (out_port, AclDirection::Out, egress),
        ];
        for (port, direction, policy) in sets {
            let Some(policy) = policy else {
                continue;
            };
            let decision = policy.classifier.classify(&key);
            let rule = decision.map(|(i, _)| i as u32);
            *self
                .acl_hits
                .entry((port, direction, rule.unwrap_or(u32::MAX)))
                .or_insert(0) += 1;
            let action = decision.map(|(_, a)| a);
            if action == Some(AclAction::Allow) {
                continue;
            }
            if self.acl_log.take(self.now_ns) {
                out.events.push(super::Event::AclDenied {
                    port,
                    direction,
                    rule,
                    action: action.unwrap_or(AclAction::Deny),
                    protocol: key.protocol,
                    src: m.key.src_addr(),
                    src_port: key.l4_a,
                    dst: if key.ipv6 {
                        std::net::IpAddr::V6(key.dst.into())
                    } else {
                        std::net::IpAddr::V4((key.dst as u32).into())
                    },
                    dst_port: key.l4_b,
                });
            }
            if let Some(conn) = tracked {
                self.conntrack.remove(conn);
            }
            if action == Some(AclAction::Reject) {
                if self.reject(tables, packet, m, out, CODE4_PROHIBITED, CODE6_PROHIBITED) {
                    self.counters.acl_resets += 1;
                }
                return Err(DropReason::AclReject);
            }
            return Err(DropReason::AclDeny);
        }
        match tracked {
            Some(conn) => {
                self.conntrack.set_user(conn, generation);
                Ok(AclOutcome::Allowed { new: false })
            }
            None => Ok(AclOutcome::Allowed { new: true }),
        }
    }

    /// After NAT: tracks a newly allowed connection so its replies pass (its NAT connection
    /// if NAT made one, else an identity connection), recording the generation it was
    /// allowed under. A connection that cannot be tracked (table full, a TCP packet that is
    /// not a SYN) is forwarded untracked.
    pub(super) fn acl_track(
        &mut self,
        tables: &Tables,
        frame: &[u8],
        m: &Meta,
        nat: Option<&crate::flow::NatAction>,
    ) {
        let generation = tables.generation() as u32;
        match nat {
            Some(action) => {
                self.conntrack.set_user(action.conn, generation);
            }
            None => {
                if m.fragment {
                    return;
                }
                let identity = crate::conntrack::Nat {
                    src: None,
                    dst: None,
                };
                let flags = super::nat::tcp_flags(frame, m);
                if let Ok(id) =
                    self.conntrack
                        .create(&m.key, &identity, flags, m.ip_len as u32, self.now_ms)
                {
                    self.conntrack.set_user(id, generation);
                }
            }
        }
    }
}
