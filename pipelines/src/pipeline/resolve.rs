//! The slow path's common tail: ECMP member choice, neighbor lookup, rewrite and flow
//! install; and neighbor resolution: packets for an unresolved next hop are copied into a
//! small bounded per-worker hold queue while ARP requests / neighbor solicitations go out, and
//! are released when the neighbor appears (from a reply seen by this worker, or from the shared
//! table once another worker's event was applied) or dropped after the last probe.

use super::{rewrite, Meta, Output, Pipeline, Verdict};
use crate::drop::DropReason;
use crate::flow::FlowAction;
use crate::ids::{NextHopId, PortId, VrfId};
use crate::tables::{NextHop, Port, Tables};
use crate::wire::{checksum, EthernetAddress, IpProtocol, ETHERNET_HEADER_LEN};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug)]
struct PendingNeighbor {
    port: PortId,
    ip: IpAddr,
    frames: Vec<Vec<u8>>,
    probes: u32,
    next_probe_ns: u64,
}

/// Unresolved neighbors of one worker with their held frames.
#[derive(Debug, Default)]
pub(super) struct Pending {
    entries: Vec<PendingNeighbor>,
    held: usize,
}

impl Pending {
    pub(super) fn held(&self) -> usize {
        self.held
    }
}

/// What routing decided for a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Route {
    /// One of the router's addresses: continue in ip-local.
    Local,
    /// Drop silently for this reason.
    Drop(DropReason),
    /// No route (`NoRoute`) or an unreachable route (`Unreachable`): drop and answer with the
    /// family's destination-unreachable message.
    Unreachable(DropReason),
    /// Encapsulate with the VXLAN next hop `next_hop` (a [`NextHop::Vxlan`]).
    Tunnel {
        /// The next hop.
        next_hop: NextHopId,
    },
    /// Send out of `port` to the neighbor `neighbor` (the destination or the gateway).
    Forward {
        /// Egress port.
        port: PortId,
        /// Address to resolve on the egress port.
        neighbor: IpAddr,
    },
}

impl Pipeline {
    /// Route lookup in the ingress port's VRF, ECMP member choice by the flow hash, and the
    /// next hop turned into a decision. Shared by IPv4 and IPv6; only their ICMP differs.
    pub(super) fn route(&self, tables: &Tables, in_port: PortId, dst: IpAddr, hash: u64) -> Route {
        let Some(port) = tables.port(in_port) else {
            return Route::Drop(DropReason::PortUnknown);
        };
        self.route_in(tables, port.vrf, dst, hash)
    }

    /// Route lookup in `vrf` (the underlay's, for a remote VTEP).
    pub(super) fn route_in(&self, tables: &Tables, vrf: VrfId, dst: IpAddr, hash: u64) -> Route {
        let Some(vrf) = tables.vrf(vrf) else {
            return Route::Drop(DropReason::VrfUnknown);
        };
        let Some(id) = vrf.lookup(dst) else {
            return Route::Unreachable(DropReason::NoRoute);
        };
        let Some(next_hop) = self.select_path(tables, id, hash) else {
            return Route::Drop(DropReason::NextHopInvalid);
        };
        match next_hop {
            NextHop::Receive => Route::Local,
            NextHop::Blackhole => Route::Drop(DropReason::Blackhole),
            NextHop::Broadcast => Route::Drop(DropReason::DirectedBroadcast),
            NextHop::Unreachable => Route::Unreachable(DropReason::Unreachable),
            NextHop::Connected { port } => Route::Forward {
                port: *port,
                neighbor: dst,
            },
            NextHop::Gateway { port, gateway } if gateway.is_ipv4() == dst.is_ipv4() => {
                Route::Forward {
                    port: *port,
                    neighbor: *gateway,
                }
            }
            NextHop::Vxlan { .. } => Route::Tunnel { next_hop: id },
            NextHop::Gateway { .. } | NextHop::Ecmp { .. } => {
                Route::Drop(DropReason::NextHopInvalid)
            }
        }
    }

    /// The next hop to use for `id`: ECMP groups pick a member by the flow hash, so every
    /// packet of a flow takes the same member while the group is unchanged.
    pub(super) fn select_path<'t>(
        &self,
        tables: &'t Tables,
        id: NextHopId,
        hash: u64,
    ) -> Option<&'t NextHop> {
        match tables.next_hop(id)? {
            NextHop::Ecmp { members } => {
                if members.is_empty() {
                    return None;
                }
                // High bits: the low ones index the flow cache, keep the two independent.
                let index = ((hash >> 32) as usize) % members.len();
                tables.next_hop(members[index])
            }
            other => Some(other),
        }
    }

    /// Rewrites and transmits towards `neighbor` on `out_port`, installing the flow (with
    /// `nat`, the translation already applied to the packet); or holds the packet and starts
    /// resolution.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward_to(
        &mut self,
        tables: &Tables,
        packet: &mut super::Packet<'_>,
        m: &Meta,
        out_port: &Port,
        neighbor: IpAddr,
        nat: Option<crate::flow::NatAction>,
        out: &mut Output,
    ) -> Verdict {
        super::trim(packet, m);
        let mut action = FlowAction {
            out_port: out_port.id.0,
            mtu: out_port.mtu,
            src_mac: out_port.mac,
            dst_mac: EthernetAddress::UNSPECIFIED,
            encap: None,
            nat: false,
        };
        match tables.neighbors().get(out_port.id, neighbor) {
            Some(entry) => {
                action.dst_mac = entry.mac;
                rewrite(packet.frame_mut(), m, &action);
                if !m.no_cache {
                    self.cache_flow(m, action, nat, tables.generation(), packet.len as u32);
                }
                Verdict::Transmit(out_port.id)
            }
            None => {
                rewrite(packet.frame_mut(), m, &action);
                let mut copy = out.buffer(packet.len);
                copy.copy_from_slice(packet.frame());
                match self.hold(out_port, neighbor, copy, out) {
                    Ok(()) => Verdict::Consumed,
                    Err(reason) => Verdict::Drop(reason),
                }
            }
        }
    }

    /// Holds a rewritten frame (destination MAC still to fill) until `ip` resolves.
    pub(super) fn hold(
        &mut self,
        out_port: &Port,
        ip: IpAddr,
        frame: Vec<u8>,
        out: &mut Output,
    ) -> Result<(), DropReason> {
        if self.pending.held >= self.config.neighbor_queue_total {
            return Err(DropReason::NeighborQueueFull);
        }
        let per_entry = self.config.neighbor_queue_per_entry;
        if let Some(entry) = self
            .pending
            .entries
            .iter_mut()
            .find(|e| e.port == out_port.id && e.ip == ip)
        {
            if entry.frames.len() >= per_entry {
                return Err(DropReason::NeighborQueueFull);
            }
            entry.frames.push(frame);
            self.pending.held += 1;
            return Ok(());
        }
        if self.pending.entries.len() >= self.config.neighbor_pending_max || per_entry == 0 {
            return Err(DropReason::NeighborQueueFull);
        }
        self.pending.entries.push(PendingNeighbor {
            port: out_port.id,
            ip,
            frames: vec![frame],
            probes: 1,
            next_probe_ns: self.now_ns + self.config.neighbor_retry_ms as u64 * 1_000_000,
        });
        self.pending.held += 1;
        self.send_probe(out_port, ip, out);
        Ok(())
    }

    /// Sends the held frames for (`port`, `ip`) to `mac` now (a reply was just seen).
    pub(super) fn release(
        &mut self,
        port: PortId,
        ip: IpAddr,
        mac: EthernetAddress,
        out: &mut Output,
    ) {
        let Some(position) = self
            .pending
            .entries
            .iter()
            .position(|e| e.port == port && e.ip == ip)
        else {
            return;
        };
        let entry = self.pending.entries.swap_remove(position);
        self.pending.held -= entry.frames.len();
        for mut frame in entry.frames {
            if frame.len() >= 6 {
                frame[0..6].copy_from_slice(&mac.0);
            }
            self.emit(out, port, frame);
        }
    }

    /// Releases what the shared table now resolves, re-probes, and drops what timed out.
    pub(super) fn resolve_pending(&mut self, tables: &Tables, out: &mut Output) {
        let mut index = 0;
        while index < self.pending.entries.len() {
            let (port_id, ip) = {
                let e = &self.pending.entries[index];
                (e.port, e.ip)
            };
            let Some(port) = tables.port(port_id) else {
                self.drop_pending(index, DropReason::NeighborUnresolved);
                continue;
            };
            if let Some(neighbor) = tables.neighbors().get(port_id, ip) {
                let mac = neighbor.mac;
                self.release(port_id, ip, mac, out);
                continue;
            }
            let entry = &mut self.pending.entries[index];
            if self.now_ns >= entry.next_probe_ns {
                if entry.probes >= self.config.neighbor_max_probes {
                    self.drop_pending(index, DropReason::NeighborUnresolved);
                    continue;
                }
                entry.probes += 1;
                entry.next_probe_ns =
                    self.now_ns + self.config.neighbor_retry_ms as u64 * 1_000_000;
                let port = port.clone();
                self.send_probe(&port, ip, out);
            }
            index += 1;
        }
    }

    fn drop_pending(&mut self, index: usize, reason: DropReason) {
        let entry = self.pending.entries.swap_remove(index);
        self.pending.held -= entry.frames.len();
        for _ in &entry.frames {
            self.counters.count_drop(reason);
        }
    }

    /// An ARP request (IPv4) or neighbor solicitation (IPv6) for `ip` out of `port`.
    fn send_probe(&mut self, port: &Port, ip: IpAddr, out: &mut Output) {
        let frame = match ip {
            IpAddr::V4(target) => arp_request(port, target, out),
            IpAddr::V6(target) => neighbor_solicitation(port, target, out),
        };
        self.emit(out, port.id, frame);
    }
}

/// A broadcast ARP request from `port` for `target`.
pub(super) fn arp_request(port: &Port, target: Ipv4Addr, out: &mut Output) -> Vec<u8> {
    let sender = port.ipv4_towards(target).unwrap_or(Ipv4Addr::UNSPECIFIED);
    let mut frame = out.buffer(ETHERNET_HEADER_LEN + 28);
    frame[0..6].copy_from_slice(&EthernetAddress::BROADCAST.0);
    frame[6..12].copy_from_slice(&port.mac.0);
    frame[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    let arp = &mut frame[ETHERNET_HEADER_LEN..];
    arp[0..2].copy_from_slice(&1u16.to_be_bytes());
    arp[2..4].copy_from_slice(&0x0800u16.to_be_bytes());
    arp[4] = 6;
    arp[5] = 4;
    arp[6..8].copy_from_slice(&1u16.to_be_bytes());
    arp[8..14].copy_from_slice(&port.mac.0);
    arp[14..18].copy_from_slice(&sender.octets());
    arp[24..28].copy_from_slice(&target.octets());
    frame
}

/// Solicited-node multicast address of `target` (RFC 4291 2.7.1).
pub(super) fn solicited_node(target: Ipv6Addr) -> Ipv6Addr {
    let t = target.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | t[13] as u16,
        u16::from_be_bytes([t[14], t[15]]),
    )
}

/// Builds an IPv6 + ICMPv6 frame: Ethernet to `dst_mac`, hop limit, and the ICMPv6 checksum
/// over the pseudo-header filled in. `icmp` is the ICMPv6 message with a zero checksum.
pub(super) fn icmpv6_frame(
    out: &mut Output,
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    icmp: &[u8],
) -> Vec<u8> {
    let mut frame = out.buffer(ETHERNET_HEADER_LEN + 40 + icmp.len());
    frame[0..6].copy_from_slice(&dst_mac.0);
    frame[6..12].copy_from_slice(&src_mac.0);
    frame[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    {
        let ip = &mut frame[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + 40];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&(icmp.len() as u16).to_be_bytes());
        ip[6] = IpProtocol::Icmpv6.into();
        ip[7] = hop_limit;
        ip[8..24].copy_from_slice(&src.octets());
        ip[24..40].copy_from_slice(&dst.octets());
    }
    let body = &mut frame[ETHERNET_HEADER_LEN + 40..];
    body.copy_from_slice(icmp);
    body[2] = 0;
    body[3] = 0;
    let pseudo = checksum::pseudo_header_v6(&src, &dst, IpProtocol::Icmpv6, icmp.len() as u32);
    let sum = !checksum::add(pseudo, checksum::sum(body));
    body[2..4].copy_from_slice(&sum.to_be_bytes());
    frame
}

/// A multicast neighbor solicitation from `port` for `target`, with our link-layer address.
pub(super) fn neighbor_solicitation(port: &Port, target: Ipv6Addr, out: &mut Output) -> Vec<u8> {
    let mut icmp = [0u8; 32];
    icmp[0] = 135;
    icmp[8..24].copy_from_slice(&target.octets());
    icmp[24] = 1; // source link-layer address option
    icmp[25] = 1;
    icmp[26..32].copy_from_slice(&port.mac.0);
    let group = solicited_node(target);
    let source = if target.segments()[0] & 0xffc0 == 0xfe80 {
        port.link_local
    } else {
        port.ipv6_towards(target)
    };
    icmpv6_frame(
        out,
        port.mac,
        EthernetAddress::from_ipv6_multicast(&group),
        source,
        group,
        255,
        &icmp,
    )
}
