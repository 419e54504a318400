//! ARP: answer requests for the ingress port's addresses in place, learn from requests and
//! replies addressed to us (RFC 826 merge, limited to senders on the port's subnets so a
//! stranger cannot plant entries), refresh known entries from gratuitous ARP.

use super::{Event, Meta, Output, Pipeline, Verdict};
use crate::drop::DropReason;
use crate::tables::{NeighborKind, Tables};
use crate::wire::{ArpOperation, ArpPacket};
use std::net::IpAddr;

impl Pipeline {
    pub(super) fn arp_input(
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
        let l3 = m.l3 as usize;
        let frame = packet.frame_mut();
        let Ok(arp) = ArpPacket::new_checked(&frame[l3..]) else {
            return Some(Verdict::Drop(DropReason::ArpMalformed));
        };
        let operation = arp.operation();
        let sender_mac = arp.source_hardware_addr();
        let sender_ip = arp.source_protocol_addr();
        let target_ip = arp.target_protocol_addr();
        if !sender_mac.is_unicast() || sender_mac.0 == [0; 6] {
            return Some(Verdict::Drop(DropReason::ArpSenderInvalid));
        }
        let for_us = port
            .addresses
            .iter()
            .any(|a| a.addr == IpAddr::V4(target_ip));
        let sender_valid = !sender_ip.is_unspecified()
            && !sender_ip.is_broadcast()
            && !sender_ip.is_multicast()
            && port.on_link(IpAddr::V4(sender_ip))
            && !port
                .addresses
                .iter()
                .any(|a| a.addr == IpAddr::V4(sender_ip));
        let gratuitous = sender_ip == target_ip;
        let learn = |this: &mut Self, out: &mut Output| {
            out.events.push(Event::NeighborLearned {
                port: in_port,
                ip: IpAddr::V4(sender_ip),
                mac: sender_mac,
            });
            this.release(in_port, IpAddr::V4(sender_ip), sender_mac, out);
        };
        match operation {
            ArpOperation::Request if for_us => {
                if sender_valid {
                    learn(self, out);
                }
                // Reply in place: the requester's addresses become the target's.
                let mut reply = ArpPacket::new_unchecked(&mut frame[l3..]);
                reply.set_operation(ArpOperation::Reply);
                reply.set_target_hardware_addr(sender_mac);
                reply.set_target_protocol_addr(sender_ip);
                reply.set_source_hardware_addr(port.mac);
                reply.set_source_protocol_addr(target_ip);
                frame[0..6].copy_from_slice(&sender_mac.0);
                frame[6..12].copy_from_slice(&port.mac.0);
                self.counters.replied += 1;
                Some(Verdict::Transmit(in_port))
            }
            ArpOperation::Reply if for_us && sender_valid => {
                learn(self, out);
                Some(Verdict::Consumed)
            }
            ArpOperation::Request | ArpOperation::Reply if gratuitous && sender_valid => {
                // Update only what we already know (as the kernel does with arp_accept=0).
                let known = tables
                    .neighbors()
                    .get(in_port, IpAddr::V4(sender_ip))
                    .is_some_and(|n| n.kind == NeighborKind::Learned);
                if known {
                    learn(self, out);
                    Some(Verdict::Consumed)
                } else {
                    Some(Verdict::Drop(DropReason::ArpNotForUs))
                }
            }
            ArpOperation::Request | ArpOperation::Reply if !sender_valid && for_us => {
                Some(Verdict::Drop(DropReason::ArpSenderInvalid))
            }
            _ => Some(Verdict::Drop(DropReason::ArpNotForUs)),
        }
    }
}
