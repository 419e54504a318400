//! Source NAT (masquerade) in the slow path, with the worker's connection table.
//!
//! - A packet routed out of a port with an SNAT rule matching its source, or belonging to a
//!   connection already tracked, leaves with the connection's translated source address and
//!   port (ICMP echo: identifier). A new connection gets the rule's address (default: the
//!   egress port's address of the packet's family, on the destination's subnet if it has one)
//!   and a port from the rule's range that no connection to the same destination uses.
//! - A packet to one of the router's addresses that is the reply of a tracked connection is
//!   translated back to the original source and routed again.
//! - Checksums are updated incrementally ([`crate::translate`]).
//!
//! Limitations of this first stage (issue 5 continues): translated packets are not installed
//! in the flow cache (every packet of a NAT connection takes the slow path); fragments of a
//! NAT connection are dropped (`nat-fragment`: no reassembly); ICMP errors about translated
//! packets are not translated; no destination NAT (Services) yet.

use super::{Meta, Pipeline};
use crate::conntrack::{Direction, Nat, Translation};
use crate::drop::DropReason;
use crate::flow::FlowKey;
use crate::tables::{Port, Tables};
use crate::translate::{translate, End, Layout};
use crate::wire::TcpFlags;
use std::net::IpAddr;

/// What NAT did to a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NatOutcome {
    /// Not translated: forward as it is.
    Untouched,
    /// Translated in place (the meta's key follows): forward, do not cache.
    Translated,
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

fn tcp_flags(frame: &[u8], m: &Meta) -> TcpFlags {
    let at = m.l4 as usize + 13;
    if m.key.protocol == 6 && m.l4 != 0 {
        TcpFlags(frame.get(at).copied().unwrap_or(0))
    } else {
        TcpFlags(0)
    }
}

/// Applies `to` (the tuple the packet must leave with) to the packet and its meta.
fn rewrite_to(frame: &mut [u8], m: &mut Meta, to: &FlowKey) -> Result<(), DropReason> {
    let layout = layout(m);
    let echo = matches!(m.key.protocol, 1 | 58);
    if to.src != m.key.src || to.src_port != m.key.src_port {
        translate(frame, &layout, End::Source, to.src_addr(), to.src_port)
            .map_err(|_| DropReason::L4Truncated)?;
    }
    // An echo's identifier is in `src_port` in both directions: a reply gets it back on the
    // destination side.
    let dst_port = if echo { to.src_port } else { to.dst_port };
    if to.dst != m.key.dst || (!echo && to.dst_port != m.key.dst_port) {
        translate(frame, &layout, End::Destination, to.dst_addr(), dst_port)
            .map_err(|_| DropReason::L4Truncated)?;
    }
    m.key.src = to.src;
    m.key.dst = to.dst;
    m.key.src_port = to.src_port;
    m.key.dst_port = to.dst_port;
    Ok(())
}

/// The address masquerade gives a connection leaving through `port`.
fn port_address(port: &Port, dst: IpAddr) -> Option<IpAddr> {
    match dst {
        IpAddr::V4(d) => port.ipv4_towards(d).map(IpAddr::V4),
        IpAddr::V6(d) => {
            let a = port.ipv6_towards(d);
            (a != port.link_local).then_some(IpAddr::V6(a))
        }
    }
}

impl Pipeline {
    /// Source NAT for a packet routed out of `out_port` (TTL and MTU already checked).
    pub(super) fn snat(
        &mut self,
        tables: &Tables,
        frame: &mut [u8],
        m: &mut Meta,
        out_port: &Port,
    ) -> Result<NatOutcome, DropReason> {
        let now = self.now_ms;
        let flags = tcp_flags(frame, m);
        let len = m.ip_len as u32;
        if !self.conntrack.is_empty() {
            let hash = self.conntrack.key_hash(&m.key);
            if let Some(hit) = self.conntrack.lookup_update(&m.key, hash, flags, len, now) {
                if hit.translated == m.key {
                    return Ok(NatOutcome::Untouched);
                }
                if m.fragment {
                    return Err(DropReason::NatFragment);
                }
                rewrite_to(frame, m, &hit.translated)?;
                return Ok(NatOutcome::Translated);
            }
        }
        let src = m.key.src_addr();
        let Some(rule) = tables.snat_for(out_port.id, src) else {
            return Ok(NatOutcome::Untouched);
        };
        if m.fragment {
            return Err(DropReason::NatFragment);
        }
        let dst = m.key.dst_addr();
        let address = match rule.to {
            Some(to) if to.is_ipv6() == m.key.ipv6 => to,
            _ => port_address(out_port, dst).ok_or(DropReason::SnatNoAddress)?,
        };
        let original = m.key;
        let template = Nat {
            src: Some(Translation::new(address, 0)),
            dst: None,
        }
        .reply_tuple(&original);
        let port = self
            .conntrack
            .allocate_port(&template, rule.ports.0..=rule.ports.1, m.hash)
            .ok_or(DropReason::SnatPortsExhausted)?;
        let nat = Nat {
            src: Some(Translation::new(address, port)),
            dst: None,
        };
        match self.conntrack.create(&original, &nat, flags, len, now) {
            Ok(_) => {}
            Err(crate::conntrack::CreateError::Full) => return Err(DropReason::ConntrackFull),
            Err(_) => return Err(DropReason::ConntrackInvalid),
        }
        rewrite_to(frame, m, &nat.translate(&original))?;
        Ok(NatOutcome::Translated)
    }

    /// For a packet to one of the router's addresses: if it is the reply of a tracked
    /// connection, translates it back (the caller routes it again). `false`: not ours to
    /// translate, the packet is for the router.
    pub(super) fn reverse_nat(
        &mut self,
        frame: &mut [u8],
        m: &mut Meta,
    ) -> Result<bool, DropReason> {
        if self.conntrack.is_empty() {
            return Ok(false);
        }
        let flags = tcp_flags(frame, m);
        let hash = self.conntrack.key_hash(&m.key);
        let Some(hit) =
            self.conntrack
                .lookup_update(&m.key, hash, flags, m.ip_len as u32, self.now_ms)
        else {
            return Ok(false);
        };
        if hit.direction != Direction::Reply || hit.translated == m.key {
            return Ok(false);
        }
        if m.fragment {
            return Err(DropReason::NatFragment);
        }
        rewrite_to(frame, m, &hit.translated)?;
        Ok(true)
    }
}
