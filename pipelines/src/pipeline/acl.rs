//! ACLs in the slow path: the rule sets on a routed packet's way decide whether its
//! connection may open. Up to four sets apply, all of which must allow: the ingress port's
//! `In` set, the `In` set of the VRF the packet is routed in, the egress port's (or
//! tunnel's) `Out` set and the `Out` set of that port's VRF.
//!
//! - A packet is classified with its source as sent and its destination as it will be
//!   delivered (after a Service's DNAT, before masquerade), as Kubernetes policies see pod
//!   addresses. A set denies what none of its rules allows (Kubernetes semantics); ports
//!   and VRFs without sets are not filtered.
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
//! Counting: every set that classifies a packet counts it on the rule that matched
//! (`Counters::acl_hits`): denied packets, and every packet of the original direction of
//! allowed connections. The flow cache serves most of the latter without classification;
//! their flow entries carry a tag naming the decision ([`crate::flow::FlowTag`], kept off
//! the hit path), and [`Pipeline::account_flows`] folds the packets they served into the
//! rules once a second (and when an entry is replaced or the cache emptied). Replies are
//! not counted on any rule. Denied packets are sampled to [`super::Event::AclDenied`] (10
//! a second per worker, bursts of 20) for the log, with the rule that decided.
//!
//! Connection lifetime: an identity TCP connection's flows are cached with an
//! untranslating NAT action, so hits run its state machine and a closed connection times
//! out like a translated one. Identity connections of other protocols are cached as plain
//! flows whose tags keep the connection alive: the once-a-second pass refreshes every
//! connection whose flows served packets, so a long cached UDP stream outlives the UDP
//! timeout and its replies still pass after a table change sends them to the slow path.

use super::nat::Plan;
use super::{Meta, Output, Packet, Pipeline};
use crate::acl::{AclAction, AclKey};
use crate::conntrack::Direction;
use crate::drop::DropReason;
use crate::flow::FlowTag;
use crate::ids::PortId;
use crate::tables::{AclDirection, AclTarget, Tables};

/// What the ACLs said about a packet that may go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AclOutcome {
    /// No set anywhere on the node.
    NoPolicy,
    /// Allowed; `new`: the first packet of a connection (to be tracked).
    Allowed {
        /// A new connection.
        new: bool,
    },
}

/// The rules that allowed a flow: per attached set on its way (at most four: ingress port
/// and VRF, egress port and VRF), the set and the rule (`u32::MAX`: the default).
pub(super) type Decision = [Option<(AclTarget, AclDirection, u32)>; 4];

/// Most distinct decisions remembered before the table is compacted to those still in use.
const MAX_DECISIONS: usize = 1 << 16;

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
        let in_vrf = crate::ids::VrfId(u32::from(m.key.vrf));
        let out_vrf = tables.port(out_port).map(|p| p.vrf);
        let sets = [
            (AclTarget::Port(packet.in_port), AclDirection::In),
            (AclTarget::Vrf(in_vrf), AclDirection::In),
            (AclTarget::Port(out_port), AclDirection::Out),
            (AclTarget::Vrf(out_vrf.unwrap_or(in_vrf)), AclDirection::Out),
        ]
        .map(|(target, direction)| {
            let policy = match target {
                AclTarget::Port(port) => tables.acl(port, direction),
                AclTarget::Vrf(vrf) => tables.vrf_acl(vrf, direction),
            };
            policy.map(|p| (target, direction, p))
        });
        let tracked = match plan {
            Plan::Related => return Ok(AclOutcome::Allowed { new: false }),
            Plan::Tracked(action) if action.direction == Direction::Reply => {
                return Ok(AclOutcome::Allowed { new: false })
            }
            Plan::Tracked(action) => Some(action.conn),
            Plan::None | Plan::Service { .. } => None,
        };
        if sets.iter().all(Option::is_none) {
            // Not filtered here, but tracked: its replies may cross a port with a set (the
            // sender's own ingress policy must not block the answers to what it opened).
            return Ok(AclOutcome::Allowed {
                new: tracked.is_none(),
            });
        }
        // A connection allowed under these tables is classified again all the same, so its
        // rules count the packets the flow cache did not serve (the decision is the same).
        let generation = tables.generation() as u32;
        let key = acl_key(packet.frame(), m, plan);
        let mut decision: Decision = [None; 4];
        for (slot, set) in decision.iter_mut().zip(sets) {
            let Some((target, direction, policy)) = set else {
                continue;
            };
            let matched = policy.classifier.classify(&key);
            let rule = matched.map(|(i, _)| i as u32);
            *slot = Some((target, direction, rule.unwrap_or(u32::MAX)));
            let action = matched.map(|(_, a)| a);
            if action == Some(AclAction::Allow) {
                continue;
            }
            // Every set that classified the packet counts it, the allowing ones before too.
            for &(target, direction, rule) in decision.iter().flatten() {
                *self.acl_hits.entry((target, direction, rule)).or_insert(0) += 1;
            }
            if self.acl_log.take(self.now_ns) {
                out.events.push(super::Event::AclDenied {
                    target,
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
        for &(target, direction, rule) in decision.iter().flatten() {
            *self.acl_hits.entry((target, direction, rule)).or_insert(0) += 1;
        }
        self.flow_tag = Some(FlowTag {
            decision: self.intern_decision(decision),
            conn: None,
        });
        match tracked {
            Some(conn) => {
                self.conntrack.set_user(conn, generation);
                Ok(AclOutcome::Allowed { new: false })
            }
            None => Ok(AclOutcome::Allowed { new: true }),
        }
    }

    /// The index of `decision` in the decision table, added if new.
    fn intern_decision(&mut self, decision: Decision) -> u32 {
        if let Some(&index) = self.acl_decision_index.get(&decision) {
            return index;
        }
        let index = self.acl_decisions.len() as u32;
        self.acl_decisions.push(decision);
        self.acl_decision_index.insert(decision, index);
        index
    }

    /// Counts `packets` served by the flow cache under `decision` for each of its rules.
    pub(super) fn count_decision(&mut self, decision: u32, packets: u64) {
        if packets == 0 || decision == FlowTag::NO_DECISION {
            return;
        }
        let Some(rules) = self.acl_decisions.get(decision as usize) else {
            return;
        };
        for &key in rules.iter().flatten() {
            *self.acl_hits.entry(key).or_insert(0) += packets;
        }
    }

    /// Folds what the tagged cached flows served since the last pass into their rules'
    /// counters, and keeps the identity connections of the active ones alive (their hits
    /// do not touch them). Compacts the decision table when it grew past
    /// [`MAX_DECISIONS`]. Called once a second with the tables' generation, and with `None`
    /// before the flow cache is emptied (every tag goes).
    pub(super) fn account_flows(&mut self, generation: Option<u64>) {
        if self.flow.tagged() == 0 {
            return;
        }
        // A scratch vector kept between passes: no allocation once it has grown.
        let mut served = std::mem::take(&mut self.tag_scratch);
        served.clear();
        let now = self.now_ms;
        self.flow.tags(generation, now, |flow| served.push(flow));
        for &flow in &served {
            self.count_decision(flow.tag.decision, flow.packets);
            if let (Some(conn), true) = (flow.tag.conn, flow.packets > 0) {
                self.conntrack.refresh(conn, flow.last_used, now);
            }
        }
        self.tag_scratch = served;
        if self.acl_decisions.len() > MAX_DECISIONS {
            let mut used = crate::hash::FastMap::default();
            let mut kept = Vec::new();
            let old = std::mem::take(&mut self.acl_decisions);
            self.flow.retag(|index| {
                *used.entry(index).or_insert_with(|| {
                    kept.push(old[index as usize]);
                    kept.len() as u32 - 1
                })
            });
            self.acl_decision_index = kept
                .iter()
                .enumerate()
                .map(|(i, d)| (*d, i as u32))
                .collect();
            self.acl_decisions = kept;
        }
    }

    /// After NAT: tracks a newly allowed connection so its replies pass (its NAT connection
    /// if NAT made one, else an identity connection), recording the generation it was
    /// allowed under. A connection that cannot be tracked (table full, a TCP packet that is
    /// not a SYN) is forwarded untracked.
    ///
    /// An identity TCP connection comes back as an untranslating [`NatAction`] for the flow
    /// cache, so its hits run its state machine (a closed connection then times out in
    /// seconds, not in the five days of an established one); any other identity connection
    /// is kept alive by the flow's tag ([`Pipeline::account_flows`]) and its flow is a plain
    /// one.
    ///
    /// [`NatAction`]: crate::flow::NatAction
    pub(super) fn acl_track(
        &mut self,
        tables: &Tables,
        frame: &[u8],
        m: &Meta,
        nat: Option<&crate::flow::NatAction>,
    ) -> Option<crate::flow::NatAction> {
        let generation = tables.generation() as u32;
        if let Some(action) = nat {
            self.conntrack.set_user(action.conn, generation);
            return None;
        }
        if m.fragment {
            return None;
        }
        let identity = crate::conntrack::Nat {
            src: None,
            dst: None,
        };
        let flags = super::nat::tcp_flags(frame, m);
        let id = self
            .conntrack
            .create(&m.key, &identity, flags, m.ip_len as u32, self.now_ms)
            .ok()?;
        self.conntrack.set_user(id, generation);
        if m.key.protocol == 6 {
            return Some(super::nat::identity_action(&m.key, id, Direction::Original));
        }
        self.tag_connection(id);
        None
    }

    /// Caches the slow path's decision for `m`'s flow with the tag the ACL and NAT steps
    /// left, counting what the entry it replaces served since it was last accounted.
    pub(super) fn cache_flow(
        &mut self,
        m: &Meta,
        action: crate::flow::FlowAction,
        nat: Option<crate::flow::NatAction>,
        generation: u64,
        bytes: u32,
    ) {
        let tag = self.flow_tag.take();
        let replaced = self.flow.insert_nat(
            m.key,
            m.hash,
            action,
            nat,
            tag,
            generation,
            self.now_ms,
            bytes,
        );
        if let Some(flow) = replaced {
            self.count_decision(flow.tag.decision, flow.packets);
        }
    }

    /// Records that the flow about to be cached keeps connection `conn` alive.
    pub(super) fn tag_connection(&mut self, conn: crate::conntrack::ConnId) {
        let tag = self.flow_tag.get_or_insert(FlowTag {
            decision: FlowTag::NO_DECISION,
            conn: None,
        });
        tag.conn = Some(conn);
    }
}
