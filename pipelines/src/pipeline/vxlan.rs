//! VXLAN over an IPv4 underlay (RFC 7348), byte-compatible with the Linux `vxlan` device.
//!
//! Decapsulation (stage `vxlan-input`): ethernet-input sends here the unfragmented UDP
//! packets to port 4789 of one of our VTEP addresses that arrived on a port of the VTEP's
//! underlay VRF (its uplink's; not a tunnel port, so nothing is decapsulated twice). The
//! outer UDP checksum is verified when non-zero; the VXLAN header must carry exactly the I
//! flag with every reserved bit clear (Linux drops anything else too); the VNI selects the
//! tunnel port. The inner frame then re-enters ethernet-input on the tunnel port, so it is
//! routed in the tunnel's VRF like any received frame. The outer header stays in front of it
//! in the buffer: a reply sent back through the tunnel is re-encapsulated in place.
//!
//! Encapsulation: a route whose next hop is [`NextHop::Vxlan`] resolves the remote VTEP in
//! the uplink's VRF (underlay route and neighbor, resolved and held like any next hop). The
//! inner packet is rewritten as a forwarded one (TTL/hop limit minus one, inner source MAC the
//! tunnel's, inner destination the route's), then 50 bytes of outer Ethernet/IPv4/UDP/VXLAN
//! are written into the buffer's headroom. The UDP source port comes from the inner flow hash
//! (49152-65535, RFC 7348 5) so underlay ECMP spreads flows while one flow keeps its path.
//! Outer TTL, DF and UDP checksum follow the tunnel's settings. The flow cache remembers
//! the next hop, so established flows are encapsulated on the fast path.
//!
//! MTU: the path MTU of a tunnel route is the tunnel port's MTU, capped by the underlay
//! egress port's MTU minus 50. A larger IPv4 packet with DF, or any larger IPv6 packet, is
//! answered with fragmentation-needed / packet-too-big carrying that MTU; a larger IPv4
//! packet without DF is fragmented before encapsulation (as Linux does), never the outer one.
//!
//! Limitations: IPv4 underlay only; no outer fragment reassembly (outer fragments to a VTEP
//! are dropped as `local-fragment`); no ECMP across remote VTEPs; no VXLAN extensions (GBP,
//! GPE); no learning of remote MACs (routes name the remote VTEP, as flannel programs it).

use super::{rewrite, Meta, Output, Packet, Pipeline, Verdict};
use crate::counters::RemoteCounters;
use crate::drop::DropReason;
use crate::flow::FlowAction;
use crate::ids::{NextHopId, PortId, VrfId};
use crate::tables::{DfPolicy, NextHop, Port, Tables, VxlanParams, VXLAN_OVERHEAD};
use crate::wire::{
    checksum, EthernetAddress, IpProtocol, ETHERNET_HEADER_LEN, VXLAN_HEADER_LEN, VXLAN_PORT,
};
use std::net::{IpAddr, Ipv4Addr};

/// Remote VTEPs with counters of their own, per worker.
pub(super) const MAX_REMOTES: usize = 4096;
/// Bytes of outer headers in front of the inner frame.
pub(super) const OUTER_LEN: usize = VXLAN_OVERHEAD as usize;
/// Offsets inside the outer headers.
const OUTER_IP: usize = ETHERNET_HEADER_LEN;
const OUTER_UDP: usize = OUTER_IP + 20;
const OUTER_VXLAN: usize = OUTER_UDP + 8;
/// The VXLAN flags byte with only the I (valid VNI) flag.
const FLAG_I: u8 = 0x08;
/// First UDP source port used (the dynamic range, RFC 7348 section 5).
const SOURCE_PORT_BASE: u16 = 49152;

/// Everything the outer headers say.
#[derive(Clone, Copy, Debug)]
pub(super) struct Outer {
    pub src_mac: EthernetAddress,
    pub dst_mac: EthernetAddress,
    pub local: Ipv4Addr,
    pub remote: Ipv4Addr,
    pub vni: u32,
    pub ttl: u8,
    pub dont_fragment: bool,
    pub udp_checksum: bool,
    pub source_port: u16,
    pub ident: u16,
}

/// Writes the outer headers into `frame[..OUTER_LEN]`; the inner frame follows them.
pub(super) fn write_outer(frame: &mut [u8], outer: &Outer) {
    if frame.len() < OUTER_LEN {
        return;
    }
    let inner_len = frame.len() - OUTER_LEN;
    frame[0..6].copy_from_slice(&outer.dst_mac.0);
    frame[6..12].copy_from_slice(&outer.src_mac.0);
    frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip_len = (OUTER_LEN - ETHERNET_HEADER_LEN + inner_len) as u16;
    {
        let ip = &mut frame[OUTER_IP..OUTER_UDP];
        ip[0] = 0x45;
        ip[1] = 0;
        ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
        ip[4..6].copy_from_slice(&outer.ident.to_be_bytes());
        let flags: u16 = if outer.dont_fragment { 0x4000 } else { 0 };
        ip[6..8].copy_from_slice(&flags.to_be_bytes());
        ip[8] = outer.ttl;
        ip[9] = IpProtocol::Udp.into();
        ip[10..12].copy_from_slice(&[0, 0]);
        ip[12..16].copy_from_slice(&outer.local.octets());
        ip[16..20].copy_from_slice(&outer.remote.octets());
        let sum = checksum::checksum(ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
    }
    let udp_len = (OUTER_LEN - OUTER_UDP + inner_len) as u16;
    {
        let udp = &mut frame[OUTER_UDP..OUTER_VXLAN];
        udp[0..2].copy_from_slice(&outer.source_port.to_be_bytes());
        udp[2..4].copy_from_slice(&VXLAN_PORT.to_be_bytes());
        udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
        udp[6..8].copy_from_slice(&[0, 0]);
    }
    {
        let vxlan = &mut frame[OUTER_VXLAN..OUTER_LEN];
        vxlan[0] = FLAG_I;
        vxlan[1..4].copy_from_slice(&[0, 0, 0]);
        vxlan[4..7].copy_from_slice(&outer.vni.to_be_bytes()[1..4]);
        vxlan[7] = 0;
    }
    if outer.udp_checksum {
        let pseudo = checksum::pseudo_header_v4(
            &outer.local,
            &outer.remote,
            IpProtocol::Udp,
            udp_len as u32,
        );
        let sum = !checksum::add(pseudo, checksum::sum(&frame[OUTER_UDP..]));
        // Zero means "no checksum" in UDP over IPv4: a computed zero is sent as all ones.
        let sum = if sum == 0 { 0xffff } else { sum };
        frame[OUTER_UDP + 6..OUTER_UDP + 8].copy_from_slice(&sum.to_be_bytes());
    }
}

/// The UDP source port for a flow hash: a stable function of the inner flow.
#[inline]
pub(super) fn source_port(hash: u64) -> u16 {
    SOURCE_PORT_BASE | ((hash >> 16) as u16 & 0x3fff)
}

/// Outer TTL and DF for an inner packet (`m` after its TTL decrement is applied by the
/// caller: `ttl` is the inner TTL as sent).
#[inline]
fn outer_ttl_df(params: &VxlanParams, m: &Meta, inner_ttl: u8) -> (u8, bool) {
    let ttl = if params.ttl == 0 {
        inner_ttl
    } else {
        params.ttl
    };
    let dont_fragment = match params.df {
        DfPolicy::Unset => false,
        DfPolicy::Set => true,
        DfPolicy::Inherit => !m.key.ipv6 && m.dont_fragment,
    };
    (ttl, dont_fragment)
}

/// Makes room for the outer headers in front of the packet's frame: uses the headroom, or
/// moves the frame right when the buffer has room behind it.
fn make_room(packet: &mut Packet<'_>) -> Result<(), DropReason> {
    if packet.offset < OUTER_LEN {
        let end = packet.offset.saturating_add(packet.len);
        if end > packet.buf.len() || packet.buf.len() < OUTER_LEN + packet.len {
            return Err(DropReason::EncapNoHeadroom);
        }
        packet.buf.copy_within(packet.offset..end, OUTER_LEN);
        packet.offset = OUTER_LEN;
    }
    packet.offset -= OUTER_LEN;
    packet.len += OUTER_LEN;
    Ok(())
}

/// Completes a partial TCP/UDP checksum of an inner frame; returns the checksum field's
/// value before and after, or `None` if it had none to complete (or does not parse).
fn complete_inner_partial(port: &Port, inner: &mut [u8]) -> Option<(u16, u16)> {
    let mut m = Meta::default();
    if inner.len() < ETHERNET_HEADER_LEN {
        return None;
    }
    let parsed = match u16::from_be_bytes([inner[12], inner[13]]) {
        0x0800 => super::ipv4::parse(port, inner, &mut m),
        0x86dd => super::ipv6::parse(port, inner, false, &mut m),
        _ => return None,
    };
    parsed.ok()?;
    let field = m.l4 as usize
        + match IpProtocol::from(m.key.protocol) {
            IpProtocol::Tcp => 16,
            IpProtocol::Udp => 6,
            _ => return None,
        };
    let read = |inner: &[u8]| u16::from_be_bytes([inner[field], inner[field + 1]]);
    let before = read(inner);
    if !super::offload::complete_partial_checksum(inner, &m) {
        return None;
    }
    Some((before, read(inner)))
}

/// The underlay next hop of a remote VTEP.
struct Underlay<'t> {
    port: &'t Port,
    neighbor: IpAddr,
    mac: Option<EthernetAddress>,
}

/// A VXLAN next hop with its tunnel, resolved from the tables.
struct TunnelHop<'t> {
    tunnel: &'t Port,
    params: VxlanParams,
    remote: Ipv4Addr,
    inner_mac: EthernetAddress,
}

fn tunnel_hop(tables: &Tables, next_hop: NextHopId) -> Option<TunnelHop<'_>> {
    let NextHop::Vxlan {
        tunnel,
        remote,
        mac,
    } = tables.next_hop(next_hop)?
    else {
        return None;
    };
    let port = tables.port(*tunnel)?;
    Some(TunnelHop {
        tunnel: port,
        params: *port.vxlan()?,
        remote: *remote,
        inner_mac: *mac,
    })
}

impl Pipeline {
    /// The `vxlan-input` stage for one packet: decapsulates, then runs the inner frame
    /// through ethernet-input on the tunnel port (which sets its next stage or drops it).
    pub(super) fn vxlan_input(
        &mut self,
        tables: &Tables,
        packet: &mut Packet<'_>,
        m: &mut Meta,
        verdict: &mut Verdict,
    ) {
        match self.decapsulate(tables, packet, m) {
            Ok(()) => self.ethernet_input(tables, packet, m, verdict),
            Err(reason) => {
                m.next = super::Next::Done;
                self.drop_packet(verdict, packet.in_port, reason);
            }
        }
    }

    fn decapsulate(
        &mut self,
        tables: &Tables,
        packet: &mut Packet<'_>,
        m: &mut Meta,
    ) -> Result<(), DropReason> {
        let frame = packet.frame();
        let l4 = m.l4 as usize;
        let ip_end = m.l3 as usize + m.ip_len as usize;
        let minimum = l4 + 8 + VXLAN_HEADER_LEN + ETHERNET_HEADER_LEN;
        if l4 == 0 || ip_end > frame.len() || ip_end < minimum {
            return Err(DropReason::VxlanTruncated);
        }
        // The UDP length, not the IP length, ends the datagram (Linux trims to it too).
        let udp_len = u16::from_be_bytes([frame[l4 + 4], frame[l4 + 5]]) as usize;
        let end = l4 + udp_len;
        if end > ip_end || end < minimum {
            return Err(DropReason::VxlanTruncated);
        }
        let src = Ipv4Addr::from(m.key.src as u32);
        let dst = Ipv4Addr::from(m.key.dst as u32);
        if frame[l4 + 6..l4 + 8] != [0, 0] {
            let pseudo = checksum::pseudo_header_v4(&src, &dst, IpProtocol::Udp, udp_len as u32);
            let total = checksum::add(pseudo, checksum::sum(&frame[l4..end]));
            if total != 0xffff {
                // Local checksum offload: a Linux sender (its vxlan devices checksum by
                // default) whose inner segment still has a partial checksum, as over a veth,
                // computes the outer checksum for the inner one completed. Complete it as the
                // sender's NIC would have, then check again: the field sits at an even offset
                // of the datagram, so the new sum is the old one with one word replaced.
                let inner = l4 + 8 + VXLAN_HEADER_LEN;
                let port = tables.port(packet.in_port).ok_or(DropReason::PortUnknown)?;
                let completed = complete_inner_partial(port, &mut packet.frame_mut()[inner..end]);
                let valid = completed.is_some_and(|(before, after)| {
                    checksum::add(checksum::add(total, !before), after) == 0xffff
                });
                if !valid {
                    return Err(DropReason::VxlanBadChecksum);
                }
            }
        }
        let frame = packet.frame();
        let vxlan = &frame[l4 + 8..l4 + 8 + VXLAN_HEADER_LEN];
        if vxlan[0] != FLAG_I || vxlan[1..4] != [0, 0, 0] || vxlan[7] != 0 {
            return Err(DropReason::VxlanBadFlags);
        }
        let vni = u32::from_be_bytes([0, vxlan[4], vxlan[5], vxlan[6]]);
        let tunnel = tables
            .tunnel_for(
                tables
                    .port(packet.in_port)
                    .map_or(VrfId(u32::MAX), |p| p.vrf),
                dst,
                vni,
            )
            .ok_or(DropReason::VxlanUnknownVni)?;
        let tunnel_id = tunnel.id;
        self.count_remote(tunnel_id, src, packet.len, true);
        let inner = l4 + 8 + VXLAN_HEADER_LEN;
        packet.offset += inner;
        packet.len = end - inner;
        packet.in_port = tunnel.id;
        *m = Meta {
            tunnel_src: u32::from(src),
            ..Meta::default()
        };
        Ok(())
    }

    /// Counts a packet exchanged with `remote` (outer bytes). Entries are created on first
    /// use, at most [`MAX_REMOTES`] per worker: outer sources can be spoofed, and past the
    /// cap a new remote is only counted on its tunnel port.
    fn count_remote(&mut self, tunnel: PortId, remote: Ipv4Addr, bytes: usize, received: bool) {
        let full = self.remotes.len() >= MAX_REMOTES;
        let counters = match self.remotes.entry((tunnel, remote)) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(_) if full => return,
            std::collections::hash_map::Entry::Vacant(entry) => entry.insert(RemoteCounters {
                tunnel,
                remote,
                rx_packets: 0,
                rx_bytes: 0,
                tx_packets: 0,
                tx_bytes: 0,
            }),
        };
        if received {
            counters.rx_packets += 1;
            counters.rx_bytes += bytes as u64;
        } else {
            counters.tx_packets += 1;
            counters.tx_bytes += bytes as u64;
        }
    }

    fn count_encapsulated(&mut self, tunnel: PortId, remote: Ipv4Addr, len: usize) {
        let port = self.counters.port(tunnel);
        port.tx_packets += 1;
        port.tx_bytes += (len - OUTER_LEN) as u64;
        self.count_remote(tunnel, remote, len, false);
    }

    /// Fast path: a flow-cache hit whose action encapsulates. Rewrites the inner packet and
    /// prepends the outer headers; the caller transmits on `action.out_port`.
    #[inline]
    pub(super) fn encapsulate_hit(
        &mut self,
        tables: &Tables,
        packet: &mut Packet<'_>,
        m: &Meta,
        action: &FlowAction,
        next_hop: NextHopId,
    ) -> Result<(), DropReason> {
        let hop = tunnel_hop(tables, next_hop).ok_or(DropReason::NextHopInvalid)?;
        let outer = Outer {
            src_mac: action.src_mac,
            dst_mac: action.dst_mac,
            ..self.outer_for(&hop, m)
        };
        let tunnel = hop.tunnel.id;
        let remote = hop.remote;
        self.encapsulate_in_place(packet, m, &hop, &outer)?;
        self.count_encapsulated(tunnel, remote, packet.len);
        Ok(())
    }

    /// The outer header fields that do not depend on the underlay next hop.
    fn outer_for(&mut self, hop: &TunnelHop<'_>, m: &Meta) -> Outer {
        let inner_ttl = m.ttl.saturating_sub(1);
        let (ttl, dont_fragment) = outer_ttl_df(&hop.params, m, inner_ttl);
        Outer {
            src_mac: EthernetAddress::UNSPECIFIED,
            dst_mac: EthernetAddress::UNSPECIFIED,
            local: hop.params.local,
            remote: hop.remote,
            vni: hop.params.vni,
            ttl,
            dont_fragment,
            udp_checksum: hop.params.udp_checksum,
            source_port: source_port(m.hash),
            ident: self.next_ident(),
        }
    }

    /// Forwarding rewrite of the inner packet, then the outer headers in front of it.
    fn encapsulate_in_place(
        &mut self,
        packet: &mut Packet<'_>,
        m: &Meta,
        hop: &TunnelHop<'_>,
        outer: &Outer,
    ) -> Result<(), DropReason> {
        let inner_action = FlowAction {
            src_mac: hop.tunnel.mac,
            dst_mac: hop.inner_mac,
            ..FlowAction::default()
        };
        // Only the IP packet goes in: Ethernet padding or bytes behind it would make the
        // outer packet exceed the path MTU the inner one was checked against (Linux trims
        // them on receive as well).
        packet.len = packet.len.min(m.l3 as usize + m.ip_len as usize);
        rewrite(packet.frame_mut(), m, &inner_action);
        make_room(packet)?;
        write_outer(packet.frame_mut(), outer);
        Ok(())
    }

    /// The underlay next hop towards `remote`, routed in the uplink's VRF: an Ethernet
    /// egress port, the neighbor to resolve there and its MAC if known.
    fn underlay<'t>(
        &self,
        tables: &'t Tables,
        params: &VxlanParams,
        remote: Ipv4Addr,
        hash: u64,
    ) -> Option<Underlay<'t>> {
        let uplink = tables.port(params.uplink)?;
        let super::resolve::Route::Forward { port, neighbor } =
            self.route_in(tables, uplink.vrf, IpAddr::V4(remote), hash)
        else {
            return None;
        };
        let port = tables.port(port).filter(|p| p.vxlan().is_none())?;
        let mac = tables.neighbors().get(port.id, neighbor).map(|n| n.mac);
        Some(Underlay {
            port,
            neighbor,
            mac,
        })
    }

    /// The outer headers of a reply sent back into a tunnel (no inner packet being forwarded:
    /// outer TTL from the tunnel, 64 when it inherits; DF only when always set).
    fn reply_outer(
        &mut self,
        params: &VxlanParams,
        remote: Ipv4Addr,
        underlay: &Underlay<'_>,
        hash: u64,
    ) -> Outer {
        Outer {
            src_mac: underlay.port.mac,
            dst_mac: underlay.mac.unwrap_or(EthernetAddress::UNSPECIFIED),
            local: params.local,
            remote,
            vni: params.vni,
            ttl: if params.ttl == 0 { 64 } else { params.ttl },
            dont_fragment: params.df == DfPolicy::Set,
            udp_checksum: params.udp_checksum,
            source_port: source_port(hash),
            ident: self.next_ident(),
        }
    }

    /// Transmits an encapsulated packet on its underlay port, or copies it into the hold
    /// queue while the underlay neighbor resolves.
    fn transmit_or_hold(
        &mut self,
        packet: &Packet<'_>,
        underlay: &Underlay<'_>,
        out: &mut Output,
    ) -> Verdict {
        if underlay.mac.is_some() {
            return Verdict::Transmit(underlay.port.id);
        }
        let mut copy = out.buffer(packet.len);
        copy.copy_from_slice(packet.frame());
        match self.hold(underlay.port, underlay.neighbor, copy, out) {
            Ok(()) => Verdict::Consumed,
            Err(reason) => Verdict::Drop(reason),
        }
    }

    /// The tunnel port a VXLAN next hop leaves through, and whether [`Pipeline::forward_tunnel`]
    /// will answer the packet with an ICMP error instead of forwarding it (over the path MTU
    /// with DF, or IPv6): NAT leaves such a packet untranslated so the error quotes what its
    /// sender sent.
    pub(super) fn tunnel_egress<'t>(
        &self,
        tables: &'t Tables,
        next_hop: NextHopId,
        m: &Meta,
    ) -> Option<(&'t Port, bool)> {
        let hop = tunnel_hop(tables, next_hop)?;
        let answered = self
            .underlay(tables, &hop.params, hop.remote, m.hash)
            .is_some_and(|underlay| {
                let mtu = hop
                    .tunnel
                    .mtu
                    .min(underlay.port.mtu.saturating_sub(VXLAN_OVERHEAD));
                m.ip_len > mtu && (m.key.ipv6 || m.dont_fragment)
            });
        Some((hop.tunnel, answered))
    }

    /// Slow path of a packet routed into a tunnel (TTL already checked by the caller): path
    /// MTU, underlay resolution, encapsulation, flow install (with `nat`, the translation
    /// already applied to the packet); or ICMP, fragments, hold.
    pub(super) fn forward_tunnel(
        &mut self,
        tables: &Tables,
        packet: &mut Packet<'_>,
        m: &Meta,
        next_hop: NextHopId,
        nat: Option<crate::flow::NatAction>,
        out: &mut Output,
    ) -> Verdict {
        let Some(hop) = tunnel_hop(tables, next_hop) else {
            return Verdict::Drop(DropReason::NextHopInvalid);
        };
        let Some(underlay) = self.underlay(tables, &hop.params, hop.remote, m.hash) else {
            return Verdict::Drop(DropReason::VxlanUnderlayUnreachable);
        };
        let mtu = hop
            .tunnel
            .mtu
            .min(underlay.port.mtu.saturating_sub(VXLAN_OVERHEAD));
        if m.ip_len > mtu {
            if m.key.ipv6 {
                self.icmp6_error(
                    tables,
                    packet,
                    m,
                    super::ipv6::ICMPV6_PACKET_TOO_BIG,
                    0,
                    mtu as u32,
                    out,
                );
                return Verdict::Drop(DropReason::FragmentationNeeded);
            }
            if m.dont_fragment {
                self.icmp4_error(
                    tables,
                    packet,
                    m,
                    super::ipv4::ICMP_DEST_UNREACHABLE,
                    super::ipv4::CODE_FRAGMENTATION_NEEDED,
                    mtu,
                    out,
                );
                return Verdict::Drop(DropReason::FragmentationNeeded);
            }
            let fragments = match self.fragments(packet, m, mtu as usize, out) {
                Ok(fragments) => fragments,
                Err(reason) => return Verdict::Drop(reason),
            };
            let mut verdict = Verdict::Consumed;
            for mut fragment in fragments {
                // Each fragment already carries its TTL; set the inner MACs, then wrap it.
                if fragment.len() >= 12 {
                    fragment[0..6].copy_from_slice(&hop.inner_mac.0);
                    fragment[6..12].copy_from_slice(&hop.tunnel.mac.0);
                }
                let outer = Outer {
                    src_mac: underlay.port.mac,
                    dst_mac: underlay.mac.unwrap_or(EthernetAddress::UNSPECIFIED),
                    ..self.outer_for(&hop, m)
                };
                let mut frame = out.buffer(OUTER_LEN + fragment.len());
                frame[OUTER_LEN..].copy_from_slice(&fragment);
                out.recycle(fragment);
                write_outer(&mut frame, &outer);
                self.count_encapsulated(hop.tunnel.id, hop.remote, frame.len());
                if underlay.mac.is_some() {
                    self.emit(out, underlay.port.id, frame);
                } else if let Err(reason) = self.hold(underlay.port, underlay.neighbor, frame, out)
                {
                    verdict = Verdict::Drop(reason);
                }
            }
            return verdict;
        }
        let outer = Outer {
            src_mac: underlay.port.mac,
            dst_mac: underlay.mac.unwrap_or(EthernetAddress::UNSPECIFIED),
            ..self.outer_for(&hop, m)
        };
        if let Err(reason) = self.encapsulate_in_place(packet, m, &hop, &outer) {
            return Verdict::Drop(reason);
        }
        self.count_encapsulated(hop.tunnel.id, hop.remote, packet.len);
        if let Some(mac) = underlay.mac {
            let action = FlowAction {
                out_port: underlay.port.id.0,
                mtu,
                src_mac: underlay.port.mac,
                dst_mac: mac,
                encap: Some(next_hop),
                nat: false,
            };
            // The flow's bytes are its inner bytes, as for a routed flow.
            if !m.no_cache {
                self.cache_flow(
                    m,
                    action,
                    nat,
                    tables.generation(),
                    (packet.len - OUTER_LEN) as u32,
                );
            }
        }
        self.transmit_or_hold(packet, &underlay, out)
    }

    /// Sends a reply built in place for a packet that came out of a tunnel (echo reply, ARP
    /// reply: its MACs already set) back through the tunnel to the VTEP it came from.
    pub(super) fn reply_into_tunnel(
        &mut self,
        tables: &Tables,
        packet: &mut Packet<'_>,
        m: &Meta,
        tunnel: PortId,
        out: &mut Output,
    ) -> Verdict {
        let remote = Ipv4Addr::from(m.tunnel_src);
        let Some(port) = tables.port(tunnel) else {
            return Verdict::Drop(DropReason::NextHopInvalid);
        };
        let Some(params) = port.vxlan().copied() else {
            return Verdict::Drop(DropReason::NextHopInvalid);
        };
        let Some(underlay) = self.underlay(tables, &params, remote, m.hash) else {
            return Verdict::Drop(DropReason::VxlanUnderlayUnreachable);
        };
        let outer = self.reply_outer(&params, remote, &underlay, m.hash);
        if let Err(reason) = make_room(packet) {
            return Verdict::Drop(reason);
        }
        write_outer(packet.frame_mut(), &outer);
        self.count_encapsulated(tunnel, remote, packet.len);
        self.transmit_or_hold(packet, &underlay, out)
    }

    /// Wraps the frames emitted on a tunnel port since index `from` (ICMP errors and ND
    /// answers about a packet that came out of the tunnel) towards the VTEP `remote`.
    pub(super) fn encapsulate_emitted(
        &mut self,
        tables: &Tables,
        out: &mut Output,
        from: usize,
        remote: Ipv4Addr,
        hash: u64,
    ) {
        let mut index = from;
        while index < out.emitted.len() {
            let port_id = out.emitted[index].port;
            let Some(params) = tables.port(port_id).and_then(|p| p.vxlan()).copied() else {
                index += 1;
                continue;
            };
            let emitted = out.emitted.remove(index);
            // An answer that cannot go back is not sent. It is not a drop of a received
            // packet (that one has its own verdict, counted once): it counts as suppressed.
            let Some(underlay) = self.underlay(tables, &params, remote, hash) else {
                self.icmp_suppressed += 1;
                out.recycle(emitted.frame);
                continue;
            };
            let outer = self.reply_outer(&params, remote, &underlay, hash);
            let mut frame = out.buffer(OUTER_LEN + emitted.frame.len());
            frame[OUTER_LEN..].copy_from_slice(&emitted.frame);
            out.recycle(emitted.frame);
            write_outer(&mut frame, &outer);
            // `emit` counted the frame on the tunnel port already.
            self.count_remote(port_id, remote, frame.len(), false);
            if underlay.mac.is_some() {
                let counters = self.counters.port(underlay.port.id);
                counters.tx_packets += 1;
                counters.tx_bytes += frame.len() as u64;
                out.emitted.insert(
                    index,
                    super::Emitted {
                        port: underlay.port.id,
                        frame,
                    },
                );
                index += 1;
            } else if self
                .hold(underlay.port, underlay.neighbor, frame, out)
                .is_err()
            {
                self.icmp_suppressed += 1;
            }
        }
    }
}
