//! NAT in the slow path, with the worker's connection table: Services (destination NAT with
//! Maglev load balancing), source NAT (masquerade), and ICMP errors about translated packets.
//!
//! A packet that misses the flow cache goes through two steps:
//! 1. **Before routing** ([`Pipeline::nat_plan`]): a packet of a tracked connection will leave
//!    as the connection says, in either direction; an ICMP error quoting a packet of a tracked
//!    connection gets its quoted headers and its destination translated back (the traceroute
//!    case) and is routed as such; the first packet of a connection to a Service (a VIP, or a
//!    node port on one of the router's addresses) gets a backend. A Service without backends
//!    refuses: TCP reset, UDP port unreachable, from the Service's address (`service-reject`).
//!    The route is looked up for the destination the packet will have.
//! 2. **After routing and the checks that answer the sender** (TTL, MTU: their ICMP errors
//!    quote the packet as its sender sent it) ([`Pipeline::nat_apply`]): the packet is
//!    rewritten. A new connection is created first: with the Service's backend, and a source
//!    translation when an SNAT rule of the egress port matches its source, when the client is
//!    the chosen backend itself (hairpin: without it the backend would answer itself
//!    directly), or when it came to a node port (like `externalTrafficPolicy: Cluster`, so
//!    the reply comes back through this node). The source address is the rule's, else the
//!    egress port's address facing the destination; the port is one no connection to the
//!    same destination uses.
//!
//! The result is cached in the flow cache with the connection's id (both directions get their
//! own entry as their first packets pass here); a hit rewrites the packet and updates the
//! connection ([`Pipeline::nat_hit`]).
//!
//! Contract and limitations:
//! - Checksums are updated incrementally ([`crate::translate`]); an ICMP error's own checksum
//!   is recomputed over its (small) message.
//! - A UDP connection whose backend was removed from its Service (or whose Service is gone)
//!   is forgotten at its client's next packet, which chooses again (kube-proxy clears such
//!   conntrack entries); TCP connections keep their backend until they end.
//! - Backend choice: client-IP affinity first (kube-proxy's semantics: the backend of the
//!   client's last new connection to the Service, for the affinity time after it; a backend
//!   since removed is not reused), else Maglev on a hash of the connection's tuple, the same
//!   on every worker and node. A connection keeps its backend until it ends, whatever
//!   happens to the Service.
//! - Fragments of a translated connection are dropped (`nat-fragment`: no reassembly);
//!   fragments to a Service address are routed as addressed.
//! - ICMP errors are translated when they quote TCP, UDP or an ICMP echo directly after the
//!   IP header (IPv6 extension headers in the quote are not walked).

use super::{Meta, Output, Packet, Pipeline};
use crate::conntrack::{invert, ConnId, CreateError, Direction, Nat, Translation};
use crate::drop::DropReason;
use crate::flow::{FlowKey, NatAction};
use crate::hash::FlowHasher;
use crate::tables::{Frontend, L4Protocol, Port, ServiceKey, Tables};
use crate::translate::{translate, End, Layout};
use crate::wire::{checksum, IpProtocol, TcpFlags, ETHERNET_HEADER_LEN};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Source ports of masquerade that no rule configured (hairpin, node port).
const MASQUERADE_PORTS: (u16, u16) = (1024, 65535);

/// Seed of the backend-choice hash: fixed, so every worker and every node maps a tuple to the
/// same backend (independent of the per-worker flow hash seed).
const BACKEND_SEED: u64 = 0x6d61_676c_6576_2121;

/// Client-IP affinity entries per worker; beyond it new clients get no affinity record until
/// expired ones are swept.
const MAX_AFFINITY: usize = 65_536;

/// The NAT decision for a packet, taken before routing.
#[derive(Clone, Copy, Debug)]
pub(super) enum Plan {
    /// Nothing decided yet: an SNAT rule of the egress port may still apply.
    None,
    /// An ICMP error already translated in place: route it, translate nothing more, cache
    /// nothing.
    Related,
    /// A packet of a tracked connection: leaves as the action says.
    Tracked(NatAction),
    /// The first packet of a connection to a Service: goes to `backend`.
    Service {
        /// The backend's address and port.
        backend: (IpAddr, u16),
        /// Reached on a node port (masqueraded).
        node_port: bool,
        /// The Service (for the affinity record).
        service: ServiceKey,
        /// The Service keeps client-IP affinity for this long.
        affinity_ms: Option<u32>,
    },
}

impl Plan {
    /// The destination the packet (of family `ipv6`) will have once translated, if planned.
    pub(super) fn destination(&self, ipv6: bool) -> Option<IpAddr> {
        match self {
            Plan::Tracked(action) => Some(to_ip(action.dst, ipv6)),
            Plan::Service { backend, .. } => Some(backend.0),
            Plan::None | Plan::Related => None,
        }
    }
}

/// A client's affinity to a backend.
#[derive(Clone, Copy, Debug)]
pub(super) struct Affinity {
    backend: (IpAddr, u16),
    expires_ms: u32,
}

fn to_ip(value: u128, ipv6: bool) -> IpAddr {
    if ipv6 {
        IpAddr::V6(Ipv6Addr::from(value))
    } else {
        IpAddr::V4(Ipv4Addr::from(value as u32))
    }
}

fn layout(m: &Meta) -> Layout {
    Layout {
        l3: m.l3 as usize,
        l4: m.l4 as usize,
        ip_len: m.ip_len as usize,
        ipv6: m.key.ipv6,
        protocol: m.key.protocol,
    }
}

/// TCP flags of the packet (none for other protocols).
#[inline]
pub(super) fn tcp_flags(frame: &[u8], m: &Meta) -> TcpFlags {
    if m.key.protocol == 6 && m.l4 != 0 {
        TcpFlags(frame.get(m.l4 as usize + 13).copied().unwrap_or(0))
    } else {
        TcpFlags(0)
    }
}

/// The action that makes a packet with key `key` leave as `to`, with the checksum
/// adjustments of that rewrite computed once for every packet of the flow.
fn action_to(key: &FlowKey, to: &FlowKey, conn: ConnId, direction: Direction) -> NatAction {
    let addresses = if key.ipv6 {
        checksum::delta_u128(key.src, to.src) + checksum::delta_u128(key.dst, to.dst)
    } else {
        checksum::delta_u32(key.src as u32, to.src as u32)
            + checksum::delta_u32(key.dst as u32, to.dst as u32)
    };
    // An echo's identifier is its only "port" (both directions carry it in `src_port`).
    let ports = if matches!(key.protocol, 1 | 58) {
        checksum::delta_u16(key.src_port, to.src_port)
    } else {
        checksum::delta_u16(key.src_port, to.src_port)
            + checksum::delta_u16(key.dst_port, to.dst_port)
    };
    // ICMPv4's checksum has no pseudo-header.
    let l4 = if key.protocol == 1 {
        ports
    } else {
        addresses + ports
    };
    NatAction {
        src: to.src,
        dst: to.dst,
        src_port: to.src_port,
        dst_port: to.dst_port,
        conn,
        direction,
        ip_delta: if key.ipv6 {
            0
        } else {
            checksum::fold(addresses)
        },
        l4_delta: checksum::fold(l4),
    }
}

/// The cached action of an untranslated (ACL-tracked) connection's flow: its packets leave as
/// they came, and its hits account the connection.
pub(super) fn identity_action(key: &FlowKey, conn: ConnId, direction: Direction) -> NatAction {
    action_to(key, key, conn, direction)
}

/// Whether `action` leaves the packet of `key` as it is.
fn is_identity(key: &FlowKey, action: &NatAction) -> bool {
    (action.src, action.dst, action.src_port, action.dst_port)
        == (key.src, key.dst, key.src_port, key.dst_port)
}

/// The hit path's rewrite of a packet of a cached NAT flow: the new addresses and ports are
/// written and the checksums adjusted by the flow's precomputed deltas (the slow path's
/// [`rewrite_nat`] computes the same result field by field). A zero UDP/IPv4 checksum stays
/// zero.
#[inline]
pub(super) fn rewrite_cached(
    frame: &mut [u8],
    m: &Meta,
    action: &NatAction,
) -> Result<(), DropReason> {
    let (l3, l4) = (m.l3 as usize, m.l4 as usize);
    let protocol = m.key.protocol;
    // Protocols without ports or a checksum over the addresses get their addresses only.
    let l4_fields = match protocol {
        6 => Some((16, 4)),
        17 => Some((6, 4)),
        1 | 58 => Some((2, 0)),
        _ => None,
    };
    if let Some((sum_at, _)) = l4_fields {
        if l4 == 0 || frame.len() < l4 + 8.max(sum_at + 2) {
            return Err(DropReason::L4Truncated);
        }
    }
    let ip_header = if m.key.ipv6 { 40 } else { 20 };
    if frame.len() < l3 + ip_header {
        return Err(DropReason::L4Truncated);
    }
    if m.key.ipv6 {
        frame[l3 + 8..l3 + 24].copy_from_slice(&action.src.to_be_bytes());
        frame[l3 + 24..l3 + 40].copy_from_slice(&action.dst.to_be_bytes());
    } else {
        frame[l3 + 12..l3 + 16].copy_from_slice(&(action.src as u32).to_be_bytes());
        frame[l3 + 16..l3 + 20].copy_from_slice(&(action.dst as u32).to_be_bytes());
        let header = u16::from_be_bytes([frame[l3 + 10], frame[l3 + 11]]);
        frame[l3 + 10..l3 + 12]
            .copy_from_slice(&checksum::apply_delta(header, action.ip_delta).to_be_bytes());
    }
    let Some((sum_at, ports_len)) = l4_fields else {
        return Ok(());
    };
    if ports_len == 4 {
        frame[l4..l4 + 2].copy_from_slice(&action.src_port.to_be_bytes());
        frame[l4 + 2..l4 + 4].copy_from_slice(&action.dst_port.to_be_bytes());
    } else {
        frame[l4 + 4..l4 + 6].copy_from_slice(&action.src_port.to_be_bytes());
    }
    let old = u16::from_be_bytes([frame[l4 + sum_at], frame[l4 + sum_at + 1]]);
    let new = if protocol == 17 && old == 0 && !m.key.ipv6 {
        0
    } else {
        match checksum::apply_delta(old, action.l4_delta) {
            0 if protocol == 17 => 0xffff,
            sum => sum,
        }
    };
    frame[l4 + sum_at..l4 + sum_at + 2].copy_from_slice(&new.to_be_bytes());
    Ok(())
}

/// Rewrites the packet (key `m.key`, unchanged: the flow cache and the rest of the path keep
/// the packet's key as received) to leave as `action` says.
#[inline]
pub(super) fn rewrite_nat(
    frame: &mut [u8],
    m: &Meta,
    action: &NatAction,
) -> Result<(), DropReason> {
    let layout = layout(m);
    let ipv6 = m.key.ipv6;
    let echo = matches!(m.key.protocol, 1 | 58);
    if action.src != m.key.src || action.src_port != m.key.src_port {
        translate(
            frame,
            &layout,
            End::Source,
            to_ip(action.src, ipv6),
            action.src_port,
        )
        .map_err(|_| DropReason::L4Truncated)?;
    }
    // An echo's identifier is in `src_port` in both directions: a reply gets it back on the
    // destination side.
    let dst_port = if echo {
        action.src_port
    } else {
        action.dst_port
    };
    if action.dst != m.key.dst || (!echo && action.dst_port != m.key.dst_port) {
        translate(
            frame,
            &layout,
            End::Destination,
            to_ip(action.dst, ipv6),
            dst_port,
        )
        .map_err(|_| DropReason::L4Truncated)?;
    }
    Ok(())
}

/// The address masquerade gives a connection leaving through `port` towards `dst`.
fn port_address(port: &Port, dst: IpAddr) -> Option<IpAddr> {
    match dst {
        IpAddr::V4(d) => port.ipv4_towards(d).map(IpAddr::V4),
        IpAddr::V6(d) => {
            let a = port.ipv6_towards(d);
            (a != port.link_local).then_some(IpAddr::V6(a))
        }
    }
}

/// The Service a packet is addressed to, by VIP.
fn vip_key(m: &Meta) -> Option<ServiceKey> {
    let protocol = match m.key.protocol {
        6 => L4Protocol::Tcp,
        17 => L4Protocol::Udp,
        _ => return None,
    };
    Some(ServiceKey {
        vrf: m.key.vrf_id(),
        frontend: Frontend::Vip {
            addr: m.key.dst_addr(),
            port: m.key.dst_port,
        },
        protocol,
    })
}

impl Pipeline {
    /// Step 1 (module docs): what NAT will do with this packet. `Err` is the packet's verdict
    /// (refused by a Service without backends, or an untranslatable fragment).
    pub(super) fn nat_plan(
        &mut self,
        tables: &Tables,
        packet: &mut Packet<'_>,
        m: &mut Meta,
        out: &mut Output,
    ) -> Result<Plan, DropReason> {
        if !self.conntrack.is_empty() {
            if self.related_error(packet.frame_mut(), m)? {
                m.no_cache = true;
                return Ok(Plan::Related);
            }
            let flags = tcp_flags(packet.frame(), m);
            let hash = self.conntrack.key_hash(&m.key);
            if let Some(hit) =
                self.conntrack
                    .lookup_update(&m.key, hash, flags, m.ip_len as u32, self.now_ms)
            {
                if m.fragment {
                    return Err(DropReason::NatFragment);
                }
                if !self.stale_udp_backend(tables, m, &hit) {
                    return Ok(Plan::Tracked(action_to(
                        &m.key,
                        &hit.translated,
                        hit.id,
                        hit.direction,
                    )));
                }
                // Its backend is gone: forgotten, and this packet chooses again below.
                self.conntrack.remove(hit.id);
            }
        }
        if !tables.has_services() || m.later_fragment {
            return Ok(Plan::None);
        }
        let Some(key) = vip_key(m) else {
            return Ok(Plan::None);
        };
        let (service, node_port) = match tables.balancer(&key) {
            Some(found) => (found, false),
            None => {
                let key = ServiceKey {
                    frontend: Frontend::NodePort {
                        port: m.key.dst_port,
                    },
                    ..key
                };
                match tables.balancer(&key) {
                    Some(found)
                        if matches!(
                            self.route(tables, packet.in_port, m.key.dst_addr(), m.hash),
                            super::resolve::Route::Local
                        ) =>
                    {
                        (found, true)
                    }
                    _ => return Ok(Plan::None),
                }
            }
        };
        let (service, maglev) = service;
        if m.fragment {
            return Err(DropReason::NatFragment);
        }
        let Some(maglev) = maglev else {
            self.refuse(tables, packet, m, out);
            return Err(DropReason::ServiceReject);
        };
        let client = m.key.src;
        let affinity_ms = service.affinity_secs.map(|s| s.saturating_mul(1000));
        let remembered = affinity_ms.and_then(|_| {
            let entry = self.affinity.get(&(service.key, client))?;
            let alive = entry.expires_ms.wrapping_sub(self.now_ms) as i32 > 0;
            let present = service
                .backends
                .iter()
                .any(|b| (b.addr, b.port) == entry.backend);
            (alive && present).then_some(entry.backend)
        });
        let backend = match remembered {
            Some(backend) => backend,
            None => {
                let mut h = FlowHasher::with_seed(BACKEND_SEED);
                h.add(m.key.src as u64 ^ (m.key.src >> 64) as u64);
                h.add(m.key.dst as u64 ^ (m.key.dst >> 64) as u64);
                h.add(
                    (m.key.src_port as u64) << 32
                        | (m.key.dst_port as u64) << 16
                        | m.key.protocol as u64,
                );
                let index = maglev.lookup(h.finish64()).unwrap_or(0) as usize;
                let Some(chosen) = service.backends.get(index) else {
                    return Err(DropReason::ServiceReject);
                };
                (chosen.addr, chosen.port)
            }
        };
        if backend.0.is_ipv6() != m.key.ipv6 {
            return Err(DropReason::ServiceReject);
        }
        Ok(Plan::Service {
            backend,
            node_port,
            service: service.key,
            affinity_ms,
        })
    }

    /// Whether `hit` is a UDP connection to a Service whose backend is no longer one of the
    /// Service's (or whose Service is gone). Such a connection is forgotten when its client
    /// sends again, as kube-proxy clears UDP conntrack entries of removed endpoints: UDP has
    /// no end, and a client reusing its port would otherwise send to the removed backend
    /// forever. TCP connections keep their backend until they end. Checked on the slow path
    /// only, which every flow takes again after a table change.
    fn stale_udp_backend(&self, tables: &Tables, m: &Meta, hit: &crate::conntrack::Hit) -> bool {
        if m.key.protocol != 17 || hit.direction != Direction::Original || !tables.has_services() {
            return false;
        }
        let to = &hit.translated;
        if to.dst == m.key.dst && to.dst_port == m.key.dst_port {
            return false; // source NAT only
        }
        let Some(key) = vip_key(m) else {
            return false;
        };
        let node_port = ServiceKey {
            frontend: Frontend::NodePort {
                port: m.key.dst_port,
            },
            ..key
        };
        let service = tables
            .balancer(&key)
            .or_else(|| tables.balancer(&node_port))
            .map(|(service, _)| service);
        service.is_none_or(|service| {
            !service
                .backends
                .iter()
                .any(|b| (b.addr, b.port) == (to.dst_addr(), to.dst_port))
        })
    }

    /// Step 2 (module docs): translates the packet as planned, creating its connection if it
    /// is new. Returns what the flow cache should remember.
    pub(super) fn nat_apply(
        &mut self,
        tables: &Tables,
        frame: &mut [u8],
        m: &mut Meta,
        out_port: &Port,
        plan: Plan,
    ) -> Result<Option<NatAction>, DropReason> {
        let (dnat, node_port, service) = match plan {
            Plan::Related => return Ok(None),
            // An untranslated connection other than TCP is cached as a plain flow whose tag
            // keeps the connection alive (no state to follow on the hit path; see
            // `acl_track`).
            Plan::Tracked(action) if m.key.protocol != 6 && is_identity(&m.key, &action) => {
                self.tag_connection(action.conn);
                return Ok(None);
            }
            Plan::Tracked(action) => {
                rewrite_nat(frame, m, &action)?;
                return Ok(Some(action));
            }
            Plan::None => (None, false, None),
            Plan::Service {
                backend,
                node_port,
                service,
                affinity_ms,
            } => (
                Some(backend),
                node_port,
                affinity_ms.map(|ms| (service, ms, backend)),
            ),
        };
        let src = m.key.src_addr();
        let destination = dnat.map_or(m.key.dst_addr(), |b| b.0);
        let rule = tables.snat_for(out_port.id, src);
        let snat = match rule {
            Some(rule) => {
                let address = match rule.to {
                    Some(to) if to.is_ipv6() == m.key.ipv6 => to,
                    _ => port_address(out_port, destination).ok_or(DropReason::SnatNoAddress)?,
                };
                Some((address, rule.ports))
            }
            // Hairpin: the client is the backend.
            None if dnat.is_some_and(|b| b.0 == src) => Some((
                port_address(out_port, destination).ok_or(DropReason::SnatNoAddress)?,
                MASQUERADE_PORTS,
            )),
            // A node port: masquerade if the egress has an address to do it with.
            None if node_port => {
                port_address(out_port, destination).map(|address| (address, MASQUERADE_PORTS))
            }
            None => None,
        };
        if snat.is_none() && dnat.is_none() {
            return Ok(None);
        }
        if m.fragment {
            return Err(DropReason::NatFragment);
        }
        let original = m.key;
        let dst = dnat.map(|(addr, port)| Translation::new(addr, port));
        let nat = match snat {
            Some((address, ports)) => {
                let template = Nat {
                    src: Some(Translation::new(address, 0)),
                    dst,
                }
                .reply_tuple(&original);
                let port = self
                    .conntrack
                    .allocate_port(&template, ports.0..=ports.1, m.hash)
                    .ok_or(DropReason::SnatPortsExhausted)?;
                Nat {
                    src: Some(Translation::new(address, port)),
                    dst,
                }
            }
            None => Nat { src: None, dst },
        };
        let flags = tcp_flags(frame, m);
        let id = match self
            .conntrack
            .create(&original, &nat, flags, m.ip_len as u32, self.now_ms)
        {
            Ok(id) => id,
            Err(CreateError::Full) => return Err(DropReason::ConntrackFull),
            Err(_) => return Err(DropReason::ConntrackInvalid),
        };
        if let Some((service, ms, backend)) = service {
            self.remember_affinity(service, original.src, backend, ms);
        }
        let action = action_to(
            &original,
            &nat.translate(&original),
            id,
            Direction::Original,
        );
        rewrite_nat(frame, m, &action)?;
        Ok(Some(action))
    }

    fn remember_affinity(
        &mut self,
        service: ServiceKey,
        client: u128,
        backend: (IpAddr, u16),
        ms: u32,
    ) {
        let now = self.now_ms;
        if self.affinity.len() >= MAX_AFFINITY && !self.affinity.contains_key(&(service, client)) {
            self.affinity
                .retain(|_, a| a.expires_ms.wrapping_sub(now) as i32 > 0);
            if self.affinity.len() >= MAX_AFFINITY {
                return;
            }
        }
        self.affinity.insert(
            (service, client),
            Affinity {
                backend,
                expires_ms: now.wrapping_add(ms),
            },
        );
    }

    /// Flow-cache hit of a NAT flow: the connection is updated (false: it is gone, the slow
    /// path decides) — called by the cache before it counts the hit.
    #[inline]
    pub(super) fn nat_usable(
        conntrack: &mut crate::conntrack::ConnTable,
        action: &NatAction,
        frame: &[u8],
        m: &Meta,
        now_ms: u32,
    ) -> bool {
        !m.fragment
            && conntrack.update(
                action.conn,
                action.direction,
                tcp_flags(frame, m),
                m.ip_len as u32,
                now_ms,
            ) != crate::conntrack::UpdateOutcome::Unknown
    }

    /// Refuses a connection to a Service without backends as kube-proxy does: TCP reset (not
    /// in answer to a reset), else ICMP port unreachable. Rate-limited with the ICMP errors.
    fn refuse(&mut self, tables: &Tables, packet: &Packet<'_>, m: &Meta, out: &mut Output) {
        if self.reject(
            tables,
            packet,
            m,
            out,
            super::ipv4::CODE_PORT_UNREACHABLE,
            4,
        ) {
            self.counters.service_resets += 1;
        }
    }

    /// Answers a refused packet: a TCP reset from its destination (not in answer to a reset),
    /// else ICMP destination unreachable with `code4` (IPv4) or `code6` (IPv6). True if a
    /// reset was sent.
    pub(super) fn reject(
        &mut self,
        tables: &Tables,
        packet: &Packet<'_>,
        m: &Meta,
        out: &mut Output,
        code4: u8,
        code6: u8,
    ) -> bool {
        if m.key.protocol != 6 {
            if m.key.ipv6 {
                self.icmp6_error(tables, packet, m, 1, code6, 0, out);
            } else {
                self.icmp4_error(
                    tables,
                    packet,
                    m,
                    super::ipv4::ICMP_DEST_UNREACHABLE,
                    code4,
                    0,
                    out,
                );
            }
            return false;
        }
        let frame = packet.frame();
        let flags = tcp_flags(frame, m);
        if flags.0 & TcpFlags::RST.0 != 0 || m.l4 == 0 {
            return false;
        }
        let Some(port) = tables.port(packet.in_port) else {
            return false;
        };
        if !self.icmp_limit.take(self.now_ns) {
            self.counters.icmp_rate_limited += 1;
            return false;
        }
        let l4 = m.l4 as usize;
        let Some(tcp) = frame.get(l4..m.l3 as usize + m.ip_len as usize) else {
            return false;
        };
        if tcp.len() < 20 || frame.len() < ETHERNET_HEADER_LEN {
            return false;
        }
        let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
        let ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
        let data_offset = ((tcp[12] >> 4) as usize * 4).clamp(20, tcp.len());
        let payload = (tcp.len() - data_offset) as u32;
        // RFC 9293 3.10.7.1: answer an ACK with seq = its ack; anything else with seq 0 and an
        // ACK of everything it occupied (SYN and FIN count one each).
        let (reply_seq, reply_ack, reply_flags) = if flags.0 & TcpFlags::ACK.0 != 0 {
            (ack, 0, TcpFlags::RST.0)
        } else {
            let occupied = payload
                + u32::from(flags.0 & TcpFlags::SYN.0 != 0)
                + u32::from(flags.0 & TcpFlags::FIN.0 != 0);
            (
                0,
                seq.wrapping_add(occupied),
                TcpFlags::RST.0 | TcpFlags::ACK.0,
            )
        };
        let ip_header = if m.key.ipv6 { 40 } else { 20 };
        let total = ip_header + 20;
        let mut reply = out.buffer(ETHERNET_HEADER_LEN + total);
        reply[0..6].copy_from_slice(&frame[6..12]);
        reply[6..12].copy_from_slice(&port.mac.0);
        let ethertype: u16 = if m.key.ipv6 { 0x86dd } else { 0x0800 };
        reply[12..14].copy_from_slice(&ethertype.to_be_bytes());
        let ip = ETHERNET_HEADER_LEN;
        let pseudo = if m.key.ipv6 {
            let (src, dst) = (Ipv6Addr::from(m.key.dst), Ipv6Addr::from(m.key.src));
            let h = &mut reply[ip..ip + 40];
            h[0] = 0x60;
            h[4..6].copy_from_slice(&20u16.to_be_bytes());
            h[6] = IpProtocol::Tcp.into();
            h[7] = 64;
            h[8..24].copy_from_slice(&src.octets());
            h[24..40].copy_from_slice(&dst.octets());
            checksum::pseudo_header_v6(&src, &dst, IpProtocol::Tcp, 20)
        } else {
            let (src, dst) = (
                Ipv4Addr::from(m.key.dst as u32),
                Ipv4Addr::from(m.key.src as u32),
            );
            let ident = self.next_ident();
            let h = &mut reply[ip..ip + 20];
            h[0] = 0x45;
            h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            h[4..6].copy_from_slice(&ident.to_be_bytes());
            h[6] = 0x40; // DF, as Linux sends resets
            h[8] = 64;
            h[9] = IpProtocol::Tcp.into();
            h[12..16].copy_from_slice(&src.octets());
            h[16..20].copy_from_slice(&dst.octets());
            let sum = checksum::checksum(h);
            h[10..12].copy_from_slice(&sum.to_be_bytes());
            checksum::pseudo_header_v4(&src, &dst, IpProtocol::Tcp, 20)
        };
        {
            let t = &mut reply[ip + ip_header..];
            t[0..2].copy_from_slice(&m.key.dst_port.to_be_bytes());
            t[2..4].copy_from_slice(&m.key.src_port.to_be_bytes());
            t[4..8].copy_from_slice(&reply_seq.to_be_bytes());
            t[8..12].copy_from_slice(&reply_ack.to_be_bytes());
            t[12] = 5 << 4;
            t[13] = reply_flags;
            let sum = !checksum::combine(&[pseudo, checksum::sum(t)]);
            t[16..18].copy_from_slice(&sum.to_be_bytes());
        }
        self.emit(out, packet.in_port, reply);
        true
    }

    /// An ICMP error quoting a packet of a tracked connection: translates the quoted headers
    /// back to what that packet's sender sent, the error's destination to that sender, and its
    /// source when the error comes from the translated peer itself (so traceroute still shows
    /// the intermediate hops). True if translated.
    fn related_error(&mut self, frame: &mut [u8], m: &mut Meta) -> Result<bool, DropReason> {
        let l4 = m.l4 as usize;
        if m.fragment || l4 == 0 || !matches!(m.key.protocol, 1 | 58) {
            return Ok(false);
        }
        let end = (m.l3 as usize + m.ip_len as usize).min(frame.len());
        let Some(&icmp_type) = frame.get(l4) else {
            return Ok(false);
        };
        let error = if m.key.ipv6 {
            matches!(icmp_type, 1..=4)
        } else {
            matches!(icmp_type, 3 | 11 | 12)
        };
        if !error || l4 + 8 > end {
            return Ok(false);
        }
        let inner = l4 + 8;
        let Some(quoted) = QuotedHeaders::parse(&frame[inner..end], m.key.ipv6) else {
            return Ok(false);
        };
        let quoted_key = FlowKey {
            vrf: m.key.vrf,
            ..quoted.key
        };
        // The error travels against the quoted packet: it belongs to the opposite direction.
        let Some((id, direction)) = self.conntrack.lookup(&invert(&quoted_key), self.now_ms) else {
            return Ok(false);
        };
        let Some(leaves_as) = self.conntrack.translated(id, direction) else {
            return Ok(false);
        };
        // The quoted packet as its sender sent it: the reverse of how this direction leaves.
        let restored = invert(&leaves_as);
        quoted.rewrite(&mut frame[inner..end], &quoted_key, &restored);
        let layout = layout(m);
        let outer_src = m.key.src;
        if outer_src == quoted_key.dst && leaves_as.src != outer_src {
            translate(
                frame,
                &layout,
                End::Source,
                to_ip(leaves_as.src, m.key.ipv6),
                0,
            )
            .map_err(|_| DropReason::L4Truncated)?;
            m.key.src = leaves_as.src;
        }
        if leaves_as.dst != m.key.dst {
            translate(
                frame,
                &layout,
                End::Destination,
                to_ip(leaves_as.dst, m.key.ipv6),
                0,
            )
            .map_err(|_| DropReason::L4Truncated)?;
            m.key.dst = leaves_as.dst;
        }
        // The quote changed under the ICMP checksum: recompute it over the message.
        let icmp = &mut frame[l4..end];
        icmp[2] = 0;
        icmp[3] = 0;
        let sum = if m.key.ipv6 {
            let (src, dst) = (Ipv6Addr::from(m.key.src), Ipv6Addr::from(m.key.dst));
            let pseudo =
                checksum::pseudo_header_v6(&src, &dst, IpProtocol::Icmpv6, icmp.len() as u32);
            !checksum::combine(&[pseudo, checksum::sum(icmp)])
        } else {
            checksum::checksum(icmp)
        };
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        self.counters.icmp_errors_translated += 1;
        Ok(true)
    }
}

/// The headers an ICMP error quotes: where the quoted packet's fields are, and its tuple.
struct QuotedHeaders {
    key: FlowKey,
    /// Offset of the quoted L4 header in the quote.
    l4: usize,
    ipv6: bool,
}

impl QuotedHeaders {
    /// The quoted IP header and the first 8 bytes of TCP/UDP/ICMP echo after it.
    fn parse(quote: &[u8], ipv6: bool) -> Option<QuotedHeaders> {
        let (l4, protocol, src, dst) = if ipv6 {
            if quote.len() < 48 || quote[0] >> 4 != 6 {
                return None;
            }
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&quote[8..24]);
            d.copy_from_slice(&quote[24..40]);
            (40, quote[6], u128::from_be_bytes(s), u128::from_be_bytes(d))
        } else {
            if quote.len() < 28 || quote[0] >> 4 != 4 {
                return None;
            }
            let ihl = (quote[0] & 0x0f) as usize * 4;
            // A quoted fragment after the first has no ports to match.
            let offset = u16::from_be_bytes([quote[6], quote[7]]) & 0x1fff;
            if ihl < 20 || quote.len() < ihl + 8 || offset != 0 {
                return None;
            }
            let s = u32::from_be_bytes([quote[12], quote[13], quote[14], quote[15]]);
            let d = u32::from_be_bytes([quote[16], quote[17], quote[18], quote[19]]);
            (ihl, quote[9], s as u128, d as u128)
        };
        let l4h = &quote[l4..l4 + 8];
        let (src_port, dst_port) = match protocol {
            6 | 17 => (
                u16::from_be_bytes([l4h[0], l4h[1]]),
                u16::from_be_bytes([l4h[2], l4h[3]]),
            ),
            1 if matches!(l4h[0], 0 | 8) => (u16::from_be_bytes([l4h[4], l4h[5]]), 0),
            58 if matches!(l4h[0], 128 | 129) => (u16::from_be_bytes([l4h[4], l4h[5]]), 0),
            _ => return None,
        };
        Some(QuotedHeaders {
            key: FlowKey {
                src,
                dst,
                vrf: 0,
                protocol,
                ipv6,
                src_port,
                dst_port,
            },
            l4,
            ipv6,
        })
    }

    /// Rewrites the quote from `from` to `to`: addresses, ports (an echo's identifier), the
    /// quoted IPv4 header checksum, and the quoted L4 checksum when the quote holds it.
    fn rewrite(&self, quote: &mut [u8], from: &FlowKey, to: &FlowKey) {
        let l4 = self.l4;
        let protocol = from.protocol;
        // Where the quoted L4 checksum is, if quoted; ICMPv4's has no pseudo-header.
        let sum_at = match protocol {
            17 => Some(6),
            6 if quote.len() >= l4 + 18 => Some(16),
            1 | 58 => Some(2),
            _ => None,
        };
        let mut sum = sum_at.map(|at| u16::from_be_bytes([quote[l4 + at], quote[l4 + at + 1]]));
        let udp_without = protocol == 17 && !self.ipv6 && sum == Some(0);
        let pseudo = protocol != 1;
        if self.ipv6 {
            for (at, old, new) in [(8, from.src, to.src), (24, from.dst, to.dst)] {
                quote[at..at + 16].copy_from_slice(&new.to_be_bytes());
                if pseudo {
                    sum = sum.map(|c| checksum::update_u128(c, old, new));
                }
            }
        } else {
            for (at, old, new) in [(12, from.src, to.src), (16, from.dst, to.dst)] {
                let (old, new) = (old as u32, new as u32);
                quote[at..at + 4].copy_from_slice(&new.to_be_bytes());
                if pseudo {
                    sum = sum.map(|c| checksum::update_u32(c, old, new));
                }
            }
            let ihl = l4;
            quote[10] = 0;
            quote[11] = 0;
            let header = checksum::checksum(&quote[..ihl]);
            quote[10..12].copy_from_slice(&header.to_be_bytes());
        }
        let ports: &[(usize, u16, u16)] = if matches!(protocol, 1 | 58) {
            &[(4, from.src_port, to.src_port)]
        } else {
            &[
                (0, from.src_port, to.src_port),
                (2, from.dst_port, to.dst_port),
            ]
        };
        for &(at, old, new) in ports {
            quote[l4 + at..l4 + at + 2].copy_from_slice(&new.to_be_bytes());
            sum = sum.map(|c| checksum::update_u16(c, old, new));
        }
        if let (Some(at), Some(value)) = (sum_at, sum) {
            let value = if udp_without {
                0
            } else if protocol == 17 && value == 0 {
                0xffff
            } else {
                value
            };
            quote[l4 + at..l4 + at + 2].copy_from_slice(&value.to_be_bytes());
        }
    }
}
