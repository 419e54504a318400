//! IPv6: ingress validation and flow key (extension headers skipped to find L4), the slow
//! path (hop limit, Packet Too Big: routers never fragment IPv6), neighbor discovery and
//! packets addressed to the router.

use super::acl::AclOutcome;
use super::resolve::{icmpv6_frame, Route};
use super::{ipv4::l4_ports, Event, Meta, Next, Output, Pipeline, Verdict};
use crate::drop::DropReason;
use crate::flow::FlowKey;
use crate::tables::{NextHop, Port, Tables};
use crate::wire::{
    checksum, EthernetAddress, IpProtocol, Ipv6Packet, WireError, ETHERNET_HEADER_LEN,
};
use std::net::{IpAddr, Ipv6Addr};

const ICMPV6_DEST_UNREACHABLE: u8 = 1;
pub(super) const ICMPV6_PACKET_TOO_BIG: u8 = 2;
const ICMPV6_TIME_EXCEEDED: u8 = 3;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;
const ND_NEIGHBOR_SOLICIT: u8 = 135;
const ND_NEIGHBOR_ADVERT: u8 = 136;
const CODE_NO_ROUTE: u8 = 0;
const CODE_ADDRESS_UNREACHABLE: u8 = 3;
const CODE_PORT_UNREACHABLE: u8 = 4;
/// RFC 4443: an ICMPv6 error must not exceed the minimum IPv6 MTU.
const IPV6_MIN_MTU: usize = 1280;

fn is_link_local(addr: &Ipv6Addr) -> bool {
    addr.segments()[0] & 0xffc0 == 0xfe80
}

/// Multicast groups the router listens to: all-nodes, all-routers, solicited-node.
fn is_router_group(addr: &Ipv6Addr) -> bool {
    let s = addr.segments();
    s[0] == 0xff02
        && s[1..5] == [0, 0, 0, 0]
        && ((s[5] == 0 && s[6] == 0 && (s[7] == 1 || s[7] == 2))
            || (s[5] == 1 && s[6] & 0xff00 == 0xff00))
}

/// Validates the IPv6 header and extension chain and fills the flow key.
#[inline]
pub(super) fn parse(
    port: &Port,
    frame: &[u8],
    multicast_frame: bool,
    m: &mut Meta,
) -> Result<(), DropReason> {
    let l3 = ETHERNET_HEADER_LEN;
    let ip = Ipv6Packet::new_checked(&frame[l3..]).map_err(|e| match e {
        WireError::BadVersion => DropReason::Ipv6BadVersion,
        _ => DropReason::Ipv6Truncated,
    })?;
    let src = ip.src_addr();
    let dst = ip.dst_addr();
    if src.is_multicast() || src.is_loopback() {
        return Err(DropReason::Ipv6SourceInvalid);
    }
    let to_router_group = dst.is_multicast() && is_router_group(&dst);
    if dst.is_loopback() || dst.is_unspecified() || (dst.is_multicast() && !to_router_group) {
        return Err(DropReason::Ipv6DestinationInvalid);
    }
    if multicast_frame != dst.is_multicast() {
        return Err(DropReason::EthernetNotForUs);
    }
    if src.is_unspecified() && !to_router_group {
        return Err(DropReason::Ipv6SourceInvalid);
    }
    let (protocol, offset, fragment) = ip
        .upper_layer()
        .map_err(|_| DropReason::Ipv6ExtensionHeaders)?;
    let later_fragment = fragment.is_some_and(|f| f.offset != 0);
    let l4_start = l3 + 40 + offset;
    let l3_end = l3 + 40 + ip.payload_len() as usize;
    let (src_port, dst_port) = if fragment.is_some() {
        (0, 0)
    } else {
        l4_ports(protocol, frame.get(l4_start..l3_end).unwrap_or(&[]))?
    };
    m.l3 = l3 as u16;
    m.l4 = if later_fragment { 0 } else { l4_start as u16 };
    m.ip_len = (40 + ip.payload_len() as usize).min(u16::MAX as usize) as u16;
    m.ttl = ip.hop_limit();
    m.dont_fragment = true;
    m.later_fragment = later_fragment;
    m.fragment = fragment.is_some_and(|f| f.offset != 0 || f.more_frags);
    m.key = FlowKey {
        src: u128::from(src),
        dst: u128::from(dst),
        vrf: port.vrf.0 as u16,
        protocol: protocol.into(),
        ipv6: true,
        src_port,
        dst_port,
    };
    m.next = if to_router_group || is_link_local(&dst) {
        Next::Local
    } else {
        Next::Flow
    };
    Ok(())
}

impl Pipeline {
    /// Slow path. `None` sends the packet on to ip-local.
    pub(super) fn ipv6_lookup(
        &mut self,
        tables: &Tables,
        packet: &mut super::Packet<'_>,
        m: &mut Meta,
        out: &mut Output,
    ) -> Option<Verdict> {
        self.flow_tag = None;
        let plan = match self.nat_plan(tables, packet, m, out) {
            Ok(plan) => plan,
            Err(reason) => return Some(Verdict::Drop(reason)),
        };
        let dst = plan
            .destination(true)
            .unwrap_or(IpAddr::V6(Ipv6Addr::from(m.key.dst)));
        let (out_port, neighbor) = match self.route(tables, packet.in_port, dst, m.hash) {
            Route::Local => return None,
            Route::Drop(reason) => return Some(Verdict::Drop(reason)),
            Route::Tunnel { next_hop } => {
                if is_link_local(&Ipv6Addr::from(m.key.src)) {
                    return Some(Verdict::Drop(DropReason::Ipv6SourceInvalid));
                }
                let egress = self.tunnel_egress(tables, next_hop, m);
                let acl = match egress {
                    Some((tunnel, _)) => {
                        match self.acl_check(tables, packet, m, tunnel.id, &plan, out) {
                            Ok(acl) => acl,
                            Err(reason) => return Some(Verdict::Drop(reason)),
                        }
                    }
                    None => AclOutcome::NoPolicy,
                };
                if m.ttl <= 1 {
                    self.icmp6_error(tables, packet, m, ICMPV6_TIME_EXCEEDED, 0, 0, out);
                    return Some(Verdict::Drop(DropReason::TtlExceeded));
                }
                let mut nat = match egress {
                    Some((tunnel, false)) => {
                        match self.nat_apply(tables, packet.frame_mut(), m, tunnel, plan) {
                            Ok(nat) => nat,
                            Err(reason) => return Some(Verdict::Drop(reason)),
                        }
                    }
                    _ => None,
                };
                if acl == (AclOutcome::Allowed { new: true }) {
                    if let Some(identity) = self.acl_track(tables, packet.frame(), m, nat.as_ref())
                    {
                        nat = Some(identity);
                    }
                }
                return Some(self.forward_tunnel(tables, packet, m, next_hop, nat, out));
            }
            Route::Unreachable(reason) => {
                let code = if reason == DropReason::NoRoute {
                    CODE_NO_ROUTE
                } else {
                    CODE_ADDRESS_UNREACHABLE
                };
                self.icmp6_error(tables, packet, m, ICMPV6_DEST_UNREACHABLE, code, 0, out);
                return Some(Verdict::Drop(reason));
            }
            Route::Forward { port, neighbor } => (port, neighbor),
        };
        // Link-local sources never leave their link (RFC 4291 2.5.6).
        if is_link_local(&Ipv6Addr::from(m.key.src)) {
            return Some(Verdict::Drop(DropReason::Ipv6SourceInvalid));
        }
        if m.ttl <= 1 {
            self.icmp6_error(tables, packet, m, ICMPV6_TIME_EXCEEDED, 0, 0, out);
            return Some(Verdict::Drop(DropReason::TtlExceeded));
        }
        let Some(out_port) = tables.port(out_port) else {
            return Some(Verdict::Drop(DropReason::NextHopInvalid));
        };
        let acl = match self.acl_check(tables, packet, m, out_port.id, &plan, out) {
            Ok(acl) => acl,
            Err(reason) => return Some(Verdict::Drop(reason)),
        };
        if m.ip_len > out_port.mtu {
            let mtu = out_port.mtu as u32;
            self.icmp6_error(tables, packet, m, ICMPV6_PACKET_TOO_BIG, 0, mtu, out);
            return Some(Verdict::Drop(DropReason::FragmentationNeeded));
        }
        let mut nat = match self.nat_apply(tables, packet.frame_mut(), m, out_port, plan) {
            Ok(nat) => nat,
            Err(reason) => return Some(Verdict::Drop(reason)),
        };
        if acl == (AclOutcome::Allowed { new: true }) {
            if let Some(identity) = self.acl_track(tables, packet.frame(), m, nat.as_ref()) {
                nat = Some(identity);
            }
        }
        Some(self.forward_to(tables, packet, m, out_port, neighbor, nat, out))
    }

    /// Packets to the router: neighbor discovery, echo, unreachable for the rest.
    pub(super) fn ipv6_local(
        &mut self,
        tables: &Tables,
        packet: &mut super::Packet<'_>,
        m: &Meta,
        out: &mut Output,
    ) -> Option<Verdict> {
        let in_port = packet.in_port;
        let Some(port) = tables.port(in_port) else {
            return Some(Verdict::Drop(DropReason::PortUnknown));
        };
        let dst = Ipv6Addr::from(m.key.dst);
        let ours = |addr: &Ipv6Addr| {
            *addr == port.link_local || port.addresses.iter().any(|a| a.addr == IpAddr::V6(*addr))
        };
        if is_link_local(&dst) && dst != port.link_local {
            return Some(Verdict::Drop(DropReason::Ipv6DestinationInvalid));
        }
        // No reassembly: every fragment of a datagram for us is dropped, the first one too
        // (it used to reach the UDP/TCP branch and draw a port unreachable built from a
        // partial datagram).
        if m.fragment {
            return Some(Verdict::Drop(DropReason::LocalFragment));
        }
        let l3 = m.l3 as usize;
        let l4 = m.l4 as usize;
        let end = l3 + m.ip_len as usize;
        let protocol = IpProtocol::from(m.key.protocol);
        if protocol != IpProtocol::Icmpv6 {
            if dst.is_multicast() {
                return Some(Verdict::Drop(DropReason::LocalUnhandled));
            }
            self.icmp6_error(
                tables,
                packet,
                m,
                ICMPV6_DEST_UNREACHABLE,
                CODE_PORT_UNREACHABLE,
                0,
                out,
            );
            return Some(Verdict::Drop(DropReason::LocalUnhandled));
        }
        let frame = packet.frame_mut();
        if l4 == 0 || end > frame.len() || end < l4 + 8 {
            return Some(Verdict::Drop(DropReason::IcmpMalformed));
        }
        let src = Ipv6Addr::from(m.key.src);
        let pseudo = checksum::pseudo_header_v6(&src, &dst, IpProtocol::Icmpv6, (end - l4) as u32);
        if checksum::add(pseudo, checksum::sum(&frame[l4..end])) != 0xffff {
            return Some(Verdict::Drop(DropReason::IcmpMalformed));
        }
        let icmp_type = frame[l4];
        let src_mac = EthernetAddress(frame[6..12].try_into().unwrap_or_default());
        match icmp_type {
            ND_NEIGHBOR_SOLICIT | ND_NEIGHBOR_ADVERT => {
                if m.ttl != 255 || frame[l4 + 1] != 0 || end < l4 + 24 {
                    return Some(Verdict::Drop(DropReason::NdMalformed));
                }
                let target = Ipv6Addr::from(
                    <[u8; 16]>::try_from(&frame[l4 + 8..l4 + 24]).unwrap_or_default(),
                );
                let option_type = if icmp_type == ND_NEIGHBOR_SOLICIT {
                    1
                } else {
                    2
                };
                let link_layer = nd_link_layer_option(&frame[l4 + 24..end], option_type);
                let Ok(link_layer) = link_layer else {
                    return Some(Verdict::Drop(DropReason::NdMalformed));
                };
                if icmp_type == ND_NEIGHBOR_SOLICIT {
                    if !ours(&target) {
                        return Some(Verdict::Drop(DropReason::NdNotForUs));
                    }
                    if src.is_unspecified() {
                        // Duplicate address detection for one of our addresses: defend it
                        // with an advertisement to all-nodes, Solicited clear (RFC 4861
                        // 7.2.4); nothing to learn. Such a solicitation carries no source
                        // link-layer option (7.1.1). It used to be dropped unanswered,
                        // letting the prober take our address.
                        if link_layer.is_some() {
                            return Some(Verdict::Drop(DropReason::NdMalformed));
                        }
                        let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
                        let mac = EthernetAddress::from_ipv6_multicast(&all_nodes);
                        let reply =
                            neighbor_advertisement(port, target, all_nodes, mac, false, out);
                        self.counters.replied += 1;
                        self.emit(out, in_port, reply);
                        return Some(Verdict::Consumed);
                    }
                    let mac = link_layer.unwrap_or(src_mac);
                    if !mac.is_unicast() {
                        return Some(Verdict::Drop(DropReason::NdMalformed));
                    }
                    self.learn_v6(port, src, mac, out);
                    let reply = neighbor_advertisement(port, target, src, mac, true, out);
                    self.counters.replied += 1;
                    self.emit(out, in_port, reply);
                    Some(Verdict::Consumed)
                } else {
                    let mac = link_layer.unwrap_or(src_mac);
                    if !mac.is_unicast() || ours(&target) {
                        return Some(Verdict::Drop(DropReason::NdMalformed));
                    }
                    self.learn_v6(port, target, mac, out);
                    Some(Verdict::Consumed)
                }
            }
            ICMPV6_ECHO_REQUEST if !dst.is_multicast() && frame[l4 + 1] == 0 => {
                if !ours(&dst) && !is_receive(tables, port, dst) {
                    return Some(Verdict::Drop(DropReason::LocalUnhandled));
                }
                frame[0..6].copy_from_slice(&src_mac.0);
                frame[6..12].copy_from_slice(&port.mac.0);
                let mut ip = Ipv6Packet::new_unchecked(&mut frame[l3..end]);
                ip.set_src_addr(dst);
                ip.set_dst_addr(src);
                ip.set_hop_limit(64);
                // Swapping addresses keeps the pseudo-header sum; only the type changes.
                frame[l4] = ICMPV6_ECHO_REPLY;
                let old = u16::from_be_bytes([ICMPV6_ECHO_REQUEST, 0]);
                let new = u16::from_be_bytes([ICMPV6_ECHO_REPLY, 0]);
                let sum = u16::from_be_bytes([frame[l4 + 2], frame[l4 + 3]]);
                let updated = checksum::update_u16(sum, old, new);
                frame[l4 + 2..l4 + 4].copy_from_slice(&updated.to_be_bytes());
                self.counters.replied += 1;
                super::trim(packet, m);
                Some(Verdict::Transmit(in_port))
            }
            _ => Some(Verdict::Drop(DropReason::LocalUnhandled)),
        }
    }

    fn learn_v6(&mut self, port: &Port, ip: Ipv6Addr, mac: EthernetAddress, out: &mut Output) {
        if ip.is_unspecified() || ip.is_multicast() {
            return;
        }
        if !is_link_local(&ip) && !port.on_link(IpAddr::V6(ip)) {
            return;
        }
        out.events.push(Event::NeighborLearned {
            port: port.id,
            ip: IpAddr::V6(ip),
            mac,
        });
        self.release(port.id, IpAddr::V6(ip), mac, out);
    }

    /// ICMPv6 error back to the previous hop (RFC 4443 2.4: never about an ICMPv6 error or a
    /// packet to a multicast group, except Packet Too Big; at most 1280 bytes).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn icmp6_error(
        &mut self,
        tables: &Tables,
        packet: &super::Packet<'_>,
        m: &Meta,
        icmp_type: u8,
        code: u8,
        parameter: u32,
        out: &mut Output,
    ) {
        let frame = packet.frame();
        let l3 = m.l3 as usize;
        let l4 = m.l4 as usize;
        let src = Ipv6Addr::from(m.key.src);
        let dst = Ipv6Addr::from(m.key.dst);
        let about_error = m.key.protocol == u8::from(IpProtocol::Icmpv6)
            && (l4 == 0 || frame.get(l4).is_none_or(|t| *t < 128));
        if about_error
            || src.is_unspecified()
            || (dst.is_multicast() && icmp_type != ICMPV6_PACKET_TOO_BIG)
        {
            self.icmp_suppressed += 1;
            return;
        }
        let Some(port) = tables.port(packet.in_port) else {
            return;
        };
        if !self.icmp_limit.take(self.now_ns) {
            self.counters.icmp_rate_limited += 1;
            return;
        }
        // RFC 4443 2.2 (a): an error about a packet sent to one of our unicast addresses
        // comes from that address (it used to come from the ingress port's address even when
        // the packet was for another port's address or the link-local one).
        let to_us =
            !dst.is_multicast() && (dst == port.link_local || is_receive(tables, port, dst));
        let source = if to_us {
            dst
        } else if is_link_local(&src) {
            port.link_local
        } else if port.vxlan().is_some() {
            // A tunnel usually has no address of its own, and its link-local one means
            // nothing to a remote sender: answer from a global address of its VRF.
            tables
                .ports()
                .filter(|p| p.vrf == port.vrf)
                .map(|p| p.ipv6_towards(src))
                .find(|a| !is_link_local(a))
                .unwrap_or(port.link_local)
        } else {
            port.ipv6_towards(src)
        };
        let quote_len = (m.ip_len as usize)
            .min(IPV6_MIN_MTU - 40 - 8)
            .min(frame.len().saturating_sub(l3));
        let mut icmp = vec![0u8; 8 + quote_len];
        icmp[0] = icmp_type;
        icmp[1] = code;
        icmp[4..8].copy_from_slice(&parameter.to_be_bytes());
        icmp[8..].copy_from_slice(&frame[l3..l3 + quote_len]);
        let previous_hop = EthernetAddress(frame[6..12].try_into().unwrap_or_default());
        let reply = icmpv6_frame(out, port.mac, previous_hop, source, src, 64, &icmp);
        self.emit(out, packet.in_port, reply);
    }
}

fn is_receive(tables: &Tables, port: &Port, dst: Ipv6Addr) -> bool {
    tables
        .vrf(port.vrf)
        .and_then(|v| v.lookup(IpAddr::V6(dst)))
        .and_then(|id| tables.next_hop(id))
        == Some(&NextHop::Receive)
}

/// Finds the source (1) or target (2) link-layer address option. Options with length 0 make
/// the message invalid (RFC 4861 4.6).
fn nd_link_layer_option(
    mut options: &[u8],
    wanted: u8,
) -> Result<Option<EthernetAddress>, DropReason> {
    let mut found = None;
    while !options.is_empty() {
        if options.len() < 2 {
            return Err(DropReason::NdMalformed);
        }
        let length = options[1] as usize * 8;
        if length == 0 || length > options.len() {
            return Err(DropReason::NdMalformed);
        }
        if options[0] == wanted && length >= 8 {
            found = Some(EthernetAddress(
                options[2..8].try_into().unwrap_or_default(),
            ));
        }
        options = &options[length..];
    }
    Ok(found)
}

/// Neighbor advertisement for `target` to `dst` at `dst_mac`, with the Solicited flag as
/// given (clear when answering duplicate address detection).
fn neighbor_advertisement(
    port: &Port,
    target: Ipv6Addr,
    dst: Ipv6Addr,
    dst_mac: EthernetAddress,
    solicited: bool,
    out: &mut Output,
) -> Vec<u8> {
    let mut icmp = [0u8; 32];
    icmp[0] = ND_NEIGHBOR_ADVERT;
    // Router and override, plus solicited when answering a solicitation from a neighbor.
    icmp[4] = if solicited { 0b1110_0000 } else { 0b1010_0000 };
    icmp[8..24].copy_from_slice(&target.octets());
    icmp[24] = 2; // target link-layer address option
    icmp[25] = 1;
    icmp[26..32].copy_from_slice(&port.mac.0);
    icmpv6_frame(out, port.mac, dst_mac, target, dst, 255, &icmp)
}
