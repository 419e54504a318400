//! IPv4: ingress validation and flow key, the slow path (route lookup, TTL, MTU and
//! fragmentation, ICMP errors) and packets addressed to the router.

use super::acl::AclOutcome;
use super::resolve::Route;
use super::{Meta, Next, Output, Pipeline, Verdict};
use crate::drop::DropReason;
use crate::flow::FlowKey;
use crate::tables::{Port, Tables};
use crate::wire::{
    checksum, IpProtocol, Ipv4Packet, WireError, ETHERNET_HEADER_LEN, IPV4_HEADER_LEN,
};
use std::net::{IpAddr, Ipv4Addr};

pub(super) const ICMP_ECHO_REPLY: u8 = 0;
pub(super) const ICMP_DEST_UNREACHABLE: u8 = 3;
pub(super) const ICMP_ECHO_REQUEST: u8 = 8;
pub(super) const ICMP_TIME_EXCEEDED: u8 = 11;
pub(super) const CODE_NET_UNREACHABLE: u8 = 0;
pub(super) const CODE_HOST_UNREACHABLE: u8 = 1;
pub(super) const CODE_PROTOCOL_UNREACHABLE: u8 = 2;
pub(super) const CODE_PORT_UNREACHABLE: u8 = 3;
pub(super) const CODE_FRAGMENTATION_NEEDED: u8 = 4;

/// Validates the IPv4 header and fills the flow key. Header checksum is verified here: a
/// router must not forward a corrupted header (RFC 1812 5.2.2).
#[inline]
pub(super) fn parse(port: &Port, frame: &[u8], m: &mut Meta) -> Result<(), DropReason> {
    let l3 = ETHERNET_HEADER_LEN;
    let bytes = &frame[l3..];
    let ip = Ipv4Packet::new_checked(bytes).map_err(|e| match e {
        WireError::BadVersion => DropReason::Ipv4BadVersion,
        WireError::BadHeaderLength => DropReason::Ipv4BadHeaderLength,
        WireError::BadTotalLength => DropReason::Ipv4BadTotalLength,
        // With the fixed 20 bytes present, `Truncated` means the IHL points past the end of
        // the frame: a bad header length (`ipv4-bad-ihl` covers "IHL below 5 or beyond the
        // frame"), not a short frame.
        WireError::Truncated if bytes.len() >= IPV4_HEADER_LEN => DropReason::Ipv4BadHeaderLength,
        _ => DropReason::Ipv4Truncated,
    })?;
    if !ip.verify_checksum() {
        return Err(DropReason::Ipv4BadChecksum);
    }
    let src = ip.src_addr();
    let dst = ip.dst_addr();
    if src.is_multicast() || src.is_broadcast() || src.is_loopback() || src.is_unspecified() {
        return Err(DropReason::Ipv4SourceInvalid);
    }
    if dst.is_multicast() || dst.is_broadcast() || dst.is_loopback() || dst.is_unspecified() {
        return Err(DropReason::Ipv4DestinationInvalid);
    }
    let header_len = ip.header_len() as usize;
    let protocol = ip.protocol();
    let fragment = ip.is_fragment();
    m.l3 = l3 as u16;
    m.ip_len = ip.total_len();
    m.ttl = ip.ttl();
    m.dont_fragment = ip.dont_frag();
    m.fragment = fragment;
    m.later_fragment = fragment && !ip.is_first_fragment();
    m.l4 = if m.later_fragment {
        0
    } else {
        (l3 + header_len) as u16
    };
    let (src_port, dst_port) = if fragment {
        (0, 0)
    } else {
        l4_ports(protocol, ip.payload())?
    };
    m.key = FlowKey {
        src: u32::from(src) as u128,
        dst: u32::from(dst) as u128,
        vrf: port.vrf.0 as u16,
        protocol: protocol.into(),
        ipv6: false,
        src_port,
        dst_port,
    };
    m.next = Next::Flow;
    Ok(())
}

/// Ports of the flow key: TCP/UDP ports, the ICMP/ICMPv6 echo identifier, else zeros.
#[inline]
pub(super) fn l4_ports(protocol: IpProtocol, l4: &[u8]) -> Result<(u16, u16), DropReason> {
    match protocol {
        IpProtocol::Tcp | IpProtocol::Udp => {
            let minimum = if protocol == IpProtocol::Tcp { 20 } else { 8 };
            if l4.len() < minimum {
                return Err(DropReason::L4Truncated);
            }
            Ok((
                u16::from_be_bytes([l4[0], l4[1]]),
                u16::from_be_bytes([l4[2], l4[3]]),
            ))
        }
        IpProtocol::Icmp | IpProtocol::Icmpv6 => {
            if l4.len() < 8 {
                return Err(DropReason::L4Truncated);
            }
            // Echo request/reply (v4: 8/0, v6: 128/129) carry an identifier.
            let echo = matches!(l4[0], 0 | 8 | 128 | 129);
            let ident = if echo {
                u16::from_be_bytes([l4[4], l4[5]])
            } else {
                0
            };
            Ok((ident, 0))
        }
        _ => Ok((0, 0)),
    }
}

impl Pipeline {
    /// Slow path. `None` sends the packet on to ip-local.
    pub(super) fn ipv4_lookup(
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
            .destination(false)
            .unwrap_or(IpAddr::V4(Ipv4Addr::from(m.key.dst as u32)));
        let (out_port, neighbor) = match self.route(tables, packet.in_port, dst, m.hash) {
            Route::Local => return None,
            Route::Drop(reason) => return Some(Verdict::Drop(reason)),
            Route::Tunnel { next_hop } => {
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
                    self.icmp4_error(tables, packet, m, ICMP_TIME_EXCEEDED, 0, 0, out);
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
                    CODE_NET_UNREACHABLE
                } else {
                    CODE_HOST_UNREACHABLE
                };
                self.icmp4_error(tables, packet, m, ICMP_DEST_UNREACHABLE, code, 0, out);
                return Some(Verdict::Drop(reason));
            }
            Route::Forward { port, neighbor } => (port, neighbor),
        };
        if m.ttl <= 1 {
            self.icmp4_error(tables, packet, m, ICMP_TIME_EXCEEDED, 0, 0, out);
            return Some(Verdict::Drop(DropReason::TtlExceeded));
        }
        let Some(out_port) = tables.port(out_port) else {
            return Some(Verdict::Drop(DropReason::NextHopInvalid));
        };
        let acl = match self.acl_check(tables, packet, m, out_port.id, &plan, out) {
            Ok(acl) => acl,
            Err(reason) => return Some(Verdict::Drop(reason)),
        };
        if m.ip_len > out_port.mtu && m.dont_fragment {
            let mtu = out_port.mtu;
            self.icmp4_error(
                tables,
                packet,
                m,
                ICMP_DEST_UNREACHABLE,
                CODE_FRAGMENTATION_NEEDED,
                mtu,
                out,
            );
            return Some(Verdict::Drop(DropReason::FragmentationNeeded));
        }
        // NAT after the checks that answer the sender (its ICMP errors quote the packet as it
        // sent it), before fragmentation (every fragment leaves translated).
        let mut nat = match self.nat_apply(tables, packet.frame_mut(), m, out_port, plan) {
            Ok(nat) => nat,
            Err(reason) => return Some(Verdict::Drop(reason)),
        };
        if acl == (AclOutcome::Allowed { new: true }) {
            if let Some(identity) = self.acl_track(tables, packet.frame(), m, nat.as_ref()) {
                nat = Some(identity);
            }
        }
        if m.ip_len > out_port.mtu {
            return Some(self.fragment_and_send(tables, packet, m, out_port, neighbor, out));
        }
        Some(self.forward_to(tables, packet, m, out_port, neighbor, nat, out))
    }

    /// Splits an IPv4 packet bigger than the egress MTU (DF clear) into fragments, each
    /// rewritten and sent or held like a packet of its own. RFC 791: fragment payloads are
    /// multiples of 8 bytes; offsets continue from the original's own offset; the first
    /// fragment keeps every option, the others only options with the copied flag.
    fn fragment_and_send(
        &mut self,
        tables: &Tables,
        packet: &mut super::Packet<'_>,
        m: &Meta,
        out_port: &Port,
        neighbor: IpAddr,
        out: &mut Output,
    ) -> Verdict {
        let fragments = match self.fragments(packet, m, out_port.mtu as usize, out) {
            Ok(fragments) => fragments,
            Err(reason) => return Verdict::Drop(reason),
        };
        let mac = tables.neighbors().get(out_port.id, neighbor).map(|n| n.mac);
        let mut verdict = Verdict::Consumed;
        for mut fragment in fragments {
            fragment[6..12].copy_from_slice(&out_port.mac.0);
            match mac {
                Some(mac) => {
                    fragment[0..6].copy_from_slice(&mac.0);
                    self.emit(out, out_port.id, fragment);
                }
                None => {
                    if let Err(reason) = self.hold(out_port, neighbor, fragment, out) {
                        verdict = Verdict::Drop(reason);
                    }
                }
            }
        }
        verdict
    }

    /// The fragments of an IPv4 packet for an IP MTU of `mtu`: complete Ethernet frames
    /// (the original's Ethernet header, MACs still to set), TTL decremented, checksums done.
    pub(super) fn fragments(
        &mut self,
        packet: &super::Packet<'_>,
        m: &Meta,
        mtu: usize,
        out: &mut Output,
    ) -> Result<Vec<Vec<u8>>, DropReason> {
        let l3 = m.l3 as usize;
        let frame = packet.frame();
        let Ok(ip) = Ipv4Packet::new_checked(&frame[l3..]) else {
            return Err(DropReason::Ipv4Truncated);
        };
        let first_header = &frame[l3..l3 + ip.header_len() as usize];
        let later_header = later_fragment_header(first_header);
        let first_chunk = mtu.saturating_sub(first_header.len()) & !7;
        let later_chunk = mtu.saturating_sub(later_header.len()) & !7;
        if first_chunk == 0 || later_chunk == 0 {
            return Err(DropReason::FragmentationNeeded);
        }
        let payload = ip.payload();
        // In bytes.
        let base_offset = ip.frag_offset() as usize;
        // A fragment reaching past 65535 bytes of datagram (RFC 791's limit) cannot be split:
        // its pieces' offsets would not fit the 13-bit field and would wrap, overlapping the
        // datagram's start at the destination. Forwarded whole it would be the receiver's
        // problem; re-fragmenting it would be ours.
        if base_offset + payload.len() > u16::MAX as usize {
            return Err(DropReason::Ipv4BadTotalLength);
        }
        let original_more = ip.more_frags();
        let mut fragments = Vec::with_capacity(payload.len() / later_chunk + 1);
        let mut done = 0;
        while done < payload.len() {
            let (header, chunk) = if done == 0 {
                (first_header, first_chunk)
            } else {
                (later_header.as_slice(), later_chunk)
            };
            let piece = &payload[done..payload.len().min(done + chunk)];
            let last = done + piece.len() == payload.len();
            let total = header.len() + piece.len();
            let mut fragment = out.buffer(ETHERNET_HEADER_LEN + total);
            fragment[..ETHERNET_HEADER_LEN].copy_from_slice(&frame[..ETHERNET_HEADER_LEN]);
            fragment[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + header.len()]
                .copy_from_slice(header);
            fragment[ETHERNET_HEADER_LEN + header.len()..].copy_from_slice(piece);
            {
                let mut view = Ipv4Packet::new_unchecked(&mut fragment[ETHERNET_HEADER_LEN..]);
                view.set_header_len(header.len() as u8);
                view.set_total_len(total as u16);
                view.set_frag_offset((base_offset + done) as u16);
                view.set_more_frags(!last || original_more);
                view.set_ttl(m.ttl - 1);
                view.fill_checksum();
            }
            fragments.push(fragment);
            done += piece.len();
        }
        Ok(fragments)
    }

    /// Packets to one of the router's IPv4 addresses.
    pub(super) fn ipv4_local(
        &mut self,
        tables: &Tables,
        packet: &mut super::Packet<'_>,
        m: &Meta,
        out: &mut Output,
    ) -> Option<Verdict> {
        let Some(port) = tables.port(packet.in_port) else {
            return Some(Verdict::Drop(DropReason::PortUnknown));
        };
        if m.fragment {
            return Some(Verdict::Drop(DropReason::LocalFragment));
        }
        let l3 = m.l3 as usize;
        let l4 = m.l4 as usize;
        let end = l3 + m.ip_len as usize;
        match IpProtocol::from(m.key.protocol) {
            IpProtocol::Icmp => {
                let frame = packet.frame_mut();
                if l4 == 0 || end > frame.len() || end < l4 + 8 {
                    return Some(Verdict::Drop(DropReason::IcmpMalformed));
                }
                if checksum::checksum(&frame[l4..end]) != 0 {
                    return Some(Verdict::Drop(DropReason::IcmpMalformed));
                }
                if frame[l4] != ICMP_ECHO_REQUEST || frame[l4 + 1] != 0 {
                    return Some(Verdict::Drop(DropReason::LocalUnhandled));
                }
                // Echo reply in place: swap addresses (the header checksum does not change),
                // fresh TTL, type 8 -> 0 with the ICMP checksum updated incrementally.
                let src_mac: [u8; 6] = frame[6..12].try_into().unwrap_or_default();
                frame[0..6].copy_from_slice(&src_mac);
                frame[6..12].copy_from_slice(&port.mac.0);
                let mut ip = Ipv4Packet::new_unchecked(&mut frame[l3..end]);
                let src = ip.src_addr();
                let dst = ip.dst_addr();
                ip.set_src_addr(dst);
                ip.set_dst_addr(src);
                ip.set_ttl(64);
                ip.fill_checksum();
                let old = u16::from_be_bytes([frame[l4], frame[l4 + 1]]);
                frame[l4] = ICMP_ECHO_REPLY;
                let icmp_checksum = u16::from_be_bytes([frame[l4 + 2], frame[l4 + 3]]);
                let updated = checksum::update_u16(
                    icmp_checksum,
                    old,
                    u16::from_be_bytes([ICMP_ECHO_REPLY, 0]),
                );
                frame[l4 + 2..l4 + 4].copy_from_slice(&updated.to_be_bytes());
                self.counters.replied += 1;
                super::trim(packet, m);
                Some(Verdict::Transmit(packet.in_port))
            }
            IpProtocol::Udp | IpProtocol::Tcp => {
                self.icmp4_error(
                    tables,
                    packet,
                    m,
                    ICMP_DEST_UNREACHABLE,
                    CODE_PORT_UNREACHABLE,
                    0,
                    out,
                );
                Some(Verdict::Drop(DropReason::LocalUnhandled))
            }
            _ => {
                self.icmp4_error(
                    tables,
                    packet,
                    m,
                    ICMP_DEST_UNREACHABLE,
                    CODE_PROTOCOL_UNREACHABLE,
                    0,
                    out,
                );
                Some(Verdict::Drop(DropReason::LocalUnhandled))
            }
        }
    }

    /// Builds an ICMP error about the packet and emits it back to the previous hop, unless
    /// RFC 1812 forbids it (about an ICMP error, a non-first fragment) or the rate limit says
    /// no. Quotes the offending IP header and the first 8 bytes of its payload.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn icmp4_error(
        &mut self,
        tables: &Tables,
        packet: &super::Packet<'_>,
        m: &Meta,
        icmp_type: u8,
        code: u8,
        mtu: u16,
        out: &mut Output,
    ) {
        let frame = packet.frame();
        let l3 = m.l3 as usize;
        let l4 = m.l4 as usize;
        if m.later_fragment {
            self.icmp_suppressed += 1;
            return;
        }
        if m.key.protocol == u8::from(IpProtocol::Icmp)
            && (l4 == 0 || frame.get(l4).is_none_or(|t| !matches!(t, 0 | 8 | 13 | 14)))
        {
            self.icmp_suppressed += 1;
            return;
        }
        let Some(port) = tables.port(packet.in_port) else {
            return;
        };
        let original_src = Ipv4Addr::from(m.key.src as u32);
        // A tunnel usually has no address of its own: answer from one of its VRF's.
        let source = port.ipv4_towards(original_src).or_else(|| {
            port.vxlan()?;
            tables
                .ports()
                .filter(|p| p.vrf == port.vrf)
                .find_map(|p| p.ipv4_towards(original_src))
        });
        let Some(source) = source else {
            self.icmp_suppressed += 1;
            return;
        };
        if !self.icmp_limit.take(self.now_ns) {
            self.counters.icmp_rate_limited += 1;
            return;
        }
        let header_len = (frame.get(l3).map_or(5, |b| b & 0x0f) as usize) * 4;
        let quote_len = (header_len + 8)
            .min(m.ip_len as usize)
            .min(frame.len().saturating_sub(l3));
        let total = 20 + 8 + quote_len;
        let ident = self.next_ident();
        let mut reply = out.buffer(ETHERNET_HEADER_LEN + total);
        reply[0..6].copy_from_slice(&frame[6..12]);
        reply[6..12].copy_from_slice(&port.mac.0);
        reply[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        {
            let ip = &mut reply[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            ip[4..6].copy_from_slice(&ident.to_be_bytes());
            ip[8] = 64;
            ip[9] = IpProtocol::Icmp.into();
            ip[12..16].copy_from_slice(&source.octets());
            ip[16..20].copy_from_slice(&original_src.octets());
            let sum = checksum::checksum(ip);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
        }
        {
            let icmp = &mut reply[ETHERNET_HEADER_LEN + 20..];
            icmp[0] = icmp_type;
            icmp[1] = code;
            icmp[6..8].copy_from_slice(&mtu.to_be_bytes());
            icmp[8..].copy_from_slice(&frame[l3..l3 + quote_len]);
            let sum = checksum::checksum(icmp);
            icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        }
        self.emit(out, packet.in_port, reply);
    }
}

/// The header of the second and later fragments (RFC 791 3.2): the fixed part plus only the
/// options whose copied flag (bit 7 of the type) is set, padded with end-of-list to a
/// multiple of 4. A malformed option ends the walk (nothing after it is copied).
fn later_fragment_header(header: &[u8]) -> Vec<u8> {
    let fixed = header.len().min(IPV4_HEADER_LEN);
    let mut out = header[..fixed].to_vec();
    let mut options = &header[fixed..];
    while let Some(&kind) = options.first() {
        let len = match kind {
            0 => break, // end of option list
            1 => 1,     // no-operation, never copied
            _ => match options.get(1) {
                Some(&len) if len >= 2 && (len as usize) <= options.len() => len as usize,
                _ => break,
            },
        };
        if kind & 0x80 != 0 {
            out.extend_from_slice(&options[..len]);
        }
        options = &options[len..];
    }
    out.resize(out.len().div_ceil(4) * 4, 0);
    out
}
