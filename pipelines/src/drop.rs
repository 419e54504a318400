//! Drop reasons: every packet the pipeline drops increments exactly one of these.
//!
//! Names are stable (scripts and dashboards key on them, like Contrail's `dropstats` or VPP's
//! node errors); descriptions are one line for `vrouterctl drops`. Add new reasons at the end
//! so indices of existing ones do not move.

use serde::{Deserialize, Serialize};

macro_rules! drop_reasons {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal, $desc:literal; )*) => {
        /// Why a packet was dropped.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[repr(u8)]
        pub enum DropReason {
            $( $(#[$doc])* $variant, )*
        }

        impl DropReason {
            /// Every reason, in index order.
            pub const ALL: &'static [DropReason] = &[ $( DropReason::$variant, )* ];
            /// Number of reasons (size of per-worker counter arrays).
            pub const COUNT: usize = Self::ALL.len();

            /// Stable machine-readable name (kebab-case).
            pub const fn name(self) -> &'static str {
                match self { $( DropReason::$variant => $name, )* }
            }

            /// One-line description for operators.
            pub const fn description(self) -> &'static str {
                match self { $( DropReason::$variant => $desc, )* }
            }

            /// Dense index for counter arrays.
            pub const fn index(self) -> usize {
                self as usize
            }

            /// Looks a reason up by its stable name.
            pub fn from_name(name: &str) -> Option<DropReason> {
                Self::ALL.iter().copied().find(|r| r.name() == name)
            }
        }
    };
}

drop_reasons! {
    EthernetTruncated => "eth-truncated", "frame shorter than an Ethernet header";
    EthernetSourceInvalid => "eth-src-invalid", "Ethernet source address is multicast or broadcast";
    EthernetNotForUs => "eth-not-for-us", "destination MAC is neither the port's, broadcast nor accepted multicast";
    VlanUnexpected => "vlan-unexpected", "802.1Q-tagged frame on an untagged port";
    EtherTypeUnsupported => "ethertype-unsupported", "EtherType is not IPv4, IPv6 or ARP";
    FrameTooLong => "frame-too-long", "frame exceeds the ingress port's MTU";
    PortUnknown => "port-unknown", "frame arrived on a port that is not (or no longer) configured";
    ArpMalformed => "arp-malformed", "ARP packet truncated or not Ethernet/IPv4";
    ArpNotForUs => "arp-not-for-us", "ARP request for an address that is not the router's";
    ArpSenderInvalid => "arp-sender-invalid", "ARP sender address outside the port's subnets or invalid";
    Ipv4Truncated => "ipv4-truncated", "IPv4 header truncated";
    Ipv4BadVersion => "ipv4-bad-version", "IP version field does not match the EtherType";
    Ipv4BadHeaderLength => "ipv4-bad-ihl", "IPv4 IHL below 5 or beyond the frame";
    Ipv4BadTotalLength => "ipv4-bad-total-length", "IPv4 total length shorter than the header or longer than the frame";
    Ipv4BadChecksum => "ipv4-bad-checksum", "IPv4 header checksum is wrong";
    Ipv4SourceInvalid => "ipv4-src-invalid", "IPv4 source is multicast, broadcast, loopback or unspecified (martian)";
    Ipv4DestinationInvalid => "ipv4-dst-invalid", "IPv4 destination is multicast, broadcast, loopback or unspecified";
    Ipv6Truncated => "ipv6-truncated", "IPv6 header truncated or payload length beyond the frame";
    Ipv6BadVersion => "ipv6-bad-version", "IPv6 version field is not 6";
    Ipv6ExtensionHeaders => "ipv6-ext-headers", "IPv6 extension header chain malformed or too long";
    Ipv6SourceInvalid => "ipv6-src-invalid", "IPv6 source is multicast, loopback or unspecified";
    Ipv6DestinationInvalid => "ipv6-dst-invalid", "IPv6 destination is loopback, unspecified or a multicast scope not handled";
    L4Truncated => "l4-truncated", "TCP/UDP/ICMP header truncated or bad header length";
    TtlExceeded => "ttl-exceeded", "IPv4 TTL or IPv6 hop limit expired in transit (ICMP time exceeded sent)";
    NoRoute => "no-route", "no route to the destination in the VRF (ICMP unreachable sent)";
    VrfUnknown => "vrf-unknown", "the port's VRF does not exist";
    Blackhole => "blackhole", "route is a blackhole";
    Unreachable => "unreachable", "route is unreachable (ICMP unreachable sent)";
    DirectedBroadcast => "directed-broadcast", "destination is a connected subnet's broadcast address";
    FragmentationNeeded => "frag-needed", "packet exceeds the egress MTU with DF set or is IPv6 (ICMP sent)";
    NeighborUnresolved => "neighbor-unresolved", "next hop did not answer ARP/ND before the timeout";
    NeighborQueueFull => "neighbor-queue-full", "too many packets held while the next hop is being resolved";
    NextHopInvalid => "nexthop-invalid", "route points at a next hop or port that no longer exists";
    IcmpMalformed => "icmp-malformed", "ICMP message to the router truncated or with a bad checksum";
    LocalUnhandled => "local-unhandled", "packet to a router address with a protocol the router does not serve (ICMP unreachable sent)";
    LocalFragment => "local-fragment", "fragmented packet to a router address (no reassembly)";
    NdMalformed => "nd-malformed", "IPv6 neighbor discovery message malformed or with hop limit != 255";
    NdNotForUs => "nd-not-for-us", "neighbor solicitation for an address that is not the router's";
    IcmpErrorSuppressed => "icmp-error-suppressed", "ICMP error not sent: about an ICMP error, a non-first fragment or a non-unicast packet";
    LoopbackPort => "loopback-port", "packet would leave on the port it arrived on towards itself";
    HostPathUnavailable => "host-path-unavailable", "packet for the host stack but no exception path is configured";
    TxRingFull => "tx-ring-full", "transmit ring of the egress port was full";
    NoFreeFrame => "no-free-frame", "no free frame to build an emitted packet";
    PortDown => "port-down", "egress port has no socket (removed or not yet bound)";
    VxlanTruncated => "vxlan-truncated", "VXLAN packet to our VTEP too short for its header and an inner Ethernet header";
    VxlanBadFlags => "vxlan-bad-flags", "VXLAN header without the I flag, or with flags or reserved bits we do not support set";
    VxlanUnknownVni => "vxlan-unknown-vni", "VXLAN packet to our VTEP with a VNI no tunnel of that VTEP has";
    VxlanBadChecksum => "vxlan-udp-checksum", "outer UDP checksum of a VXLAN packet is wrong";
    VxlanUnderlayUnreachable => "vxlan-underlay-unreachable", "no usable underlay route to the remote VTEP";
    EncapNoHeadroom => "encap-no-headroom", "no room in the packet buffer for the encapsulation headers";
    SnatPortsExhausted => "snat-ports-exhausted", "no free source port in the SNAT rule's range for this destination";
    SnatNoAddress => "snat-no-address", "masquerade out of a port without an address of the packet's family";
    ConntrackFull => "conntrack-full", "connection table full (no expired, embryonic or closing connection to evict)";
    ConntrackInvalid => "conntrack-invalid", "packet cannot open a NAT connection (a TCP packet that is not a SYN or ACK)";
    NatFragment => "nat-fragment", "fragment of a translated connection (no reassembly)";
    ServiceReject => "service-reject", "connection to a Service without backends (refused with a TCP reset or ICMP port unreachable)";
    AclDeny => "acl-deny", "denied by a port's ACL (a deny rule, or no rule of an attached set allows it)";
    AclReject => "acl-reject", "rejected by a port's ACL (TCP reset or ICMP administratively prohibited sent)";
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_round_trip() {
        let mut seen = HashSet::new();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert!(seen.insert(r.name()), "duplicate name {}", r.name());
            assert!(!r.description().is_empty());
            assert_eq!(DropReason::from_name(r.name()), Some(*r));
        }
        assert_eq!(DropReason::from_name("no-such-reason"), None);
    }
}
