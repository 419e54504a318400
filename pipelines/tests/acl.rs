//! The ACL classifier against the reference linear scan: random rule sets built from small
//! pools (so rules overlap and contradict), random keys biased to rule boundaries; splitting
//! into several automata; validation; a 10k-rule policy.

use pipelines::acl::{
    classify_linear, validate_rule, AclAction, AclError, AclKey, AclRule, Classifier,
};
use pipelines::tables::IpPrefix;
use proptest::prelude::*;

const V4_PREFIXES: &[&str] = &[
    "0.0.0.0/0",
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "10.1.2.3/32",
    "10.1.2.4/31",
    "10.1.2.128/25",
    "192.168.0.0/16",
    "10.255.255.255/32",
];
const V6_PREFIXES: &[&str] = &[
    "::/0",
    "fd00::/8",
    "fd00:1::/32",
    "fd00:1::5/128",
    "2001:db8::/64",
];
const PORTS: &[(u16, u16)] = &[
    (80, 80),
    (443, 443),
    (1000, 2000),
    (0, 65535),
    (1024, 65535),
    (0, 0),
    (255, 256),
    (65535, 65535),
];

fn prefix() -> impl Strategy<Value = Option<IpPrefix>> {
    prop_oneof![
        2 => Just(None),
        4 => prop::sample::select(V4_PREFIXES).prop_map(|p| Some(p.parse().expect("prefix"))),
        1 => prop::sample::select(V6_PREFIXES).prop_map(|p| Some(p.parse().expect("prefix"))),
    ]
}

fn rule() -> impl Strategy<Value = AclRule> {
    (
        0u32..6,
        prefix(),
        prefix(),
        prop::option::of(prop::sample::select(&[1u8, 6, 17, 58, 132][..])),
        prop::option::of(prop::sample::select(PORTS)),
        prop::option::of(prop::sample::select(PORTS)),
        prop::option::of(0u8..4),
        prop::option::of(0u8..3),
        prop::sample::select(&[AclAction::Allow, AclAction::Deny, AclAction::Reject][..]),
    )
        .prop_map(|(priority, src, dst, protocol, sp, dp, t, c, action)| {
            let ports = protocol.is_some_and(|p| matches!(p, 6 | 17 | 132));
            let icmp = matches!(protocol, Some(1 | 58));
            let mut rule = AclRule {
                priority,
                src,
                dst,
                protocol,
                src_ports: if ports { sp } else { None },
                dst_ports: if ports { dp } else { None },
                icmp_type: if icmp { t } else { None },
                icmp_code: if icmp && t.is_some() { c } else { None },
                action,
            };
            // Keep the families consistent (invalid rules are tested separately).
            let v6 = |p: &Option<IpPrefix>| matches!(p, Some(IpPrefix::V6(_)));
            let v4 = |p: &Option<IpPrefix>| matches!(p, Some(IpPrefix::V4(_)));
            if (v6(&rule.src) && v4(&rule.dst)) || (v4(&rule.src) && v6(&rule.dst)) {
                rule.dst = None;
            }
            if rule.icmp_type.is_some() {
                let family_v6 = v6(&rule.src) || v6(&rule.dst);
                let family_v4 = v4(&rule.src) || v4(&rule.dst);
                if (family_v6 && rule.protocol == Some(1))
                    || (family_v4 && rule.protocol == Some(58))
                {
                    rule.icmp_type = None;
                    rule.icmp_code = None;
                }
            }
            rule
        })
}

/// Addresses near the pools' boundaries.
fn v4_addr() -> impl Strategy<Value = u128> {
    prop_oneof![
        prop::sample::select(
            &[
                0x0a00_0000u32,
                0x0a01_0000,
                0x0a01_0203,
                0x0a01_0204,
                0x0a01_0205,
                0x0a01_0206,
                0x0a01_027f,
                0x0a01_0280,
                0x0a01_02ff,
                0x0a01_0300,
                0x0aff_ffff,
                0x0b00_0000,
                0x09ff_ffff,
                0xc0a8_0001,
                0xc0a9_0000,
                0x0a01_ffff,
            ][..]
        ),
        any::<u32>(),
    ]
    .prop_map(|a| a as u128)
}

fn v6_addr() -> impl Strategy<Value = u128> {
    prop_oneof![
        prop::sample::select(
            &[
                0xfd00_0000_0000_0000_0000_0000_0000_0000u128,
                0xfd00_0001_0000_0000_0000_0000_0000_0005,
                0xfd00_0001_0000_0000_0000_0000_0000_0006,
                0xfdff_ffff_ffff_ffff_ffff_ffff_ffff_ffff,
                0x2001_0db8_0000_0000_0000_0000_0000_0001,
                0x2001_0db8_0000_0001_0000_0000_0000_0000,
            ][..]
        ),
        any::<u128>(),
    ]
}

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![
        prop::sample::select(
            &[
                0u16, 1, 79, 80, 81, 255, 256, 257, 443, 999, 1000, 1500, 2000, 2001, 1023, 1024,
                65534, 65535
            ][..]
        ),
        any::<u16>(),
    ]
}

fn key() -> impl Strategy<Value = AclKey> {
    (
        any::<bool>(),
        v4_addr(),
        v4_addr(),
        v6_addr(),
        v6_addr(),
        prop::sample::select(&[1u8, 6, 17, 58, 132, 47][..]),
        prop::bool::weighted(0.9),
        port(),
        port(),
    )
        .prop_map(|(ipv6, s4, d4, s6, d6, protocol, has_l4, a, b)| AclKey {
            ipv6,
            src: if ipv6 { s6 } else { s4 },
            dst: if ipv6 { d6 } else { d4 },
            protocol,
            has_l4,
            l4_a: if matches!(protocol, 1 | 58) { a % 4 } else { a },
            l4_b: if matches!(protocol, 1 | 58) { b % 3 } else { b },
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_automaton_decides_as_the_linear_scan(
        rules in prop::collection::vec(rule(), 0..40),
        keys in prop::collection::vec(key(), 1..64),
    ) {
        let classifier = Classifier::build(&rules).expect("valid rules");
        // The same set split into many small automata.
        let split = Classifier::build_with_limit(&rules, 16).expect("valid rules");
        for key in &keys {
            let expected = classify_linear(&rules, key);
            prop_assert_eq!(classifier.classify(key), expected, "key {:?}", key);
            prop_assert_eq!(split.classify(key), expected, "split, key {:?}", key);
        }
    }
}

fn tcp_key(src: u32, dport: u16) -> AclKey {
    AclKey {
        ipv6: false,
        src: src as u128,
        dst: 0x0a00_0005,
        protocol: 6,
        has_l4: true,
        l4_a: 40000,
        l4_b: dport,
    }
}

#[test]
fn priority_then_position_decides_and_later_fragments_skip_port_rules() {
    let allow_web = AclRule {
        priority: 10,
        src: None,
        dst: None,
        protocol: Some(6),
        src_ports: None,
        dst_ports: Some((80, 80)),
        icmp_type: None,
        icmp_code: None,
        action: AclAction::Allow,
    };
    let deny_all = AclRule {
        priority: 20,
        src: None,
        dst: None,
        protocol: None,
        src_ports: None,
        dst_ports: None,
        icmp_type: None,
        icmp_code: None,
        action: AclAction::Deny,
    };
    let same_priority_reject = AclRule {
        action: AclAction::Reject,
        ..allow_web.clone()
    };
    let rules = vec![deny_all, allow_web, same_priority_reject];
    let classifier = Classifier::build(&rules).unwrap();
    assert_eq!(
        classifier.classify(&tcp_key(1, 80)),
        Some((1, AclAction::Allow)),
        "priority 10 before 20; the earlier of two equal priorities"
    );
    assert_eq!(
        classifier.classify(&tcp_key(1, 81)),
        Some((0, AclAction::Deny))
    );
    let fragment = AclKey {
        has_l4: false,
        ..tcp_key(1, 80)
    };
    assert_eq!(classifier.classify(&fragment), Some((0, AclAction::Deny)));
    assert_eq!(
        Classifier::build(&[]).unwrap().classify(&tcp_key(1, 80)),
        None
    );
}

#[test]
fn invalid_rules_are_refused_with_their_position() {
    let base = AclRule {
        priority: 1,
        src: None,
        dst: None,
        protocol: Some(6),
        src_ports: None,
        dst_ports: None,
        icmp_type: None,
        icmp_code: None,
        action: AclAction::Allow,
    };
    let cases = [
        (
            AclRule {
                dst_ports: Some((9, 3)),
                ..base.clone()
            },
            AclError::EmptyPortRange(0, 9, 3),
        ),
        (
            AclRule {
                protocol: Some(1),
                dst_ports: Some((1, 3)),
                ..base.clone()
            },
            AclError::PortsWithoutPortProtocol(0),
        ),
        (
            AclRule {
                protocol: None,
                dst_ports: Some((1, 3)),
                ..base.clone()
            },
            AclError::PortsWithoutPortProtocol(0),
        ),
        (
            AclRule {
                icmp_type: Some(8),
                ..base.clone()
            },
            AclError::IcmpWithoutIcmpProtocol(0),
        ),
        (
            AclRule {
                protocol: Some(1),
                icmp_code: Some(0),
                ..base.clone()
            },
            AclError::IcmpCodeWithoutType(0),
        ),
        (
            AclRule {
                src: Some("10.0.0.0/8".parse().unwrap()),
                dst: Some("fd00::/8".parse().unwrap()),
                ..base.clone()
            },
            AclError::MixedFamilies(0),
        ),
        (
            AclRule {
                protocol: Some(58),
                icmp_type: Some(128),
                src: Some("10.0.0.0/8".parse().unwrap()),
                ..base.clone()
            },
            AclError::MixedFamilies(0),
        ),
    ];
    for (rule, expected) in cases {
        assert_eq!(validate_rule(0, &rule), Err(expected.clone()));
        assert_eq!(
            Classifier::build(&[base.clone(), rule]).err(),
            Some(match expected {
                AclError::EmptyPortRange(_, a, b) => AclError::EmptyPortRange(1, a, b),
                AclError::PortsWithoutPortProtocol(_) => AclError::PortsWithoutPortProtocol(1),
                AclError::IcmpWithoutIcmpProtocol(_) => AclError::IcmpWithoutIcmpProtocol(1),
                AclError::IcmpCodeWithoutType(_) => AclError::IcmpCodeWithoutType(1),
                AclError::MixedFamilies(_) => AclError::MixedFamilies(1),
            })
        );
    }
}

/// A NetworkPolicy-like set: `n` allow rules for single peers (/32) on a port each, a few
/// CIDR rules, then deny everything.
pub fn policy(n: usize) -> Vec<AclRule> {
    let mut rules = Vec::with_capacity(n + 2);
    for i in 0..n {
        rules.push(AclRule {
            priority: 100,
            src: Some(IpPrefix::host(std::net::IpAddr::V4(
                std::net::Ipv4Addr::from(0x0a00_0000 + (i as u32) * 7),
            ))),
            dst: None,
            protocol: Some(if i % 3 == 0 { 17 } else { 6 }),
            src_ports: None,
            dst_ports: Some(if i % 5 == 0 {
                (8000, 8100)
            } else {
                (80 + (i % 50) as u16, 80 + (i % 50) as u16)
            }),
            icmp_type: None,
            icmp_code: None,
            action: AclAction::Allow,
        });
    }
    rules.push(AclRule {
        priority: 50,
        src: Some("172.16.0.0/12".parse().unwrap()),
        dst: None,
        protocol: None,
        src_ports: None,
        dst_ports: None,
        icmp_type: None,
        icmp_code: None,
        action: AclAction::Allow,
    });
    rules.push(AclRule {
        priority: 1000,
        src: None,
        dst: None,
        protocol: None,
        src_ports: None,
        dst_ports: None,
        icmp_type: None,
        icmp_code: None,
        action: AclAction::Deny,
    });
    rules
}

#[test]
fn a_ten_thousand_rule_policy_compiles_and_allows_exactly_what_it_should() {
    let rules = policy(10_000);
    let classifier = Classifier::build(&rules).unwrap();
    assert_eq!(classifier.automata(), (1, 1), "no split needed");
    let mut state = 0x1234_5678u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let r = next();
        let i = (r % 12_000) as u32;
        let key = AclKey {
            ipv6: false,
            src: (0x0a00_0000 + i * 7 + u32::from(r % 9 == 0)) as u128,
            dst: 0x0a63_0001,
            protocol: if r % 3 == 0 { 17 } else { 6 },
            has_l4: true,
            l4_a: 40000,
            l4_b: [80, 81, 129, 130, 8000, 8050, 8101, 443][((r >> 20) % 8) as usize],
        };
        assert_eq!(
            classifier.classify(&key),
            classify_linear(&rules, &key),
            "{key:?}"
        );
    }
}

mod tables {
    use super::*;
    use pipelines::tables::{AclDirection, InterfaceAddress, TableError, TableOp, Tables};
    use pipelines::wire::EthernetAddress;
    use pipelines::{PortId, VrfId};

    fn port_ops() -> Vec<TableOp> {
        vec![
            TableOp::AddPort {
                id: PortId(0),
                name: "p0".into(),
                mac: EthernetAddress([2, 0, 0, 0, 0, 1]),
                mtu: 1500,
                vrf: VrfId(0),
            },
            TableOp::AddAddress {
                port: PortId(0),
                address: InterfaceAddress {
                    addr: "10.0.0.1".parse().unwrap(),
                    prefix_len: 24,
                },
            },
        ]
    }

    #[test]
    fn acls_attach_replace_detach_and_go_with_their_port() {
        let mut tables = Tables::new();
        tables.apply_batch(&port_ops()).unwrap();
        let rules = policy(1000);
        tables
            .apply_batch(&[TableOp::SetAcl {
                port: PortId(0),
                direction: AclDirection::Out,
                rules: rules.clone(),
            }])
            .unwrap();
        let attached = tables.acl(PortId(0), AclDirection::Out).expect("attached");
        assert_eq!(attached.rules.len(), 1002);
        let key = tcp_key(0x0a00_0000 + 7, 81);
        assert_eq!(
            attached.classifier.classify(&key),
            classify_linear(&rules, &key)
        );
        assert!(tables.acl(PortId(0), AclDirection::In).is_none());

        // A bad rule in a batch: refused, nothing changes (the old set stays).
        let before = tables.generation();
        let mut bad = rules.clone();
        bad[3].dst_ports = Some((9, 1));
        let err = tables
            .apply_batch(&[
                TableOp::DelAcl {
                    port: PortId(0),
                    direction: AclDirection::Out,
                },
                TableOp::SetAcl {
                    port: PortId(0),
                    direction: AclDirection::Out,
                    rules: bad,
                },
            ])
            .unwrap_err();
        assert_eq!(err.index, 1);
        assert_eq!(
            err.error,
            TableError::Acl(AclError::EmptyPortRange(3, 9, 1))
        );
        assert_eq!(tables.generation(), before);
        assert_eq!(
            tables
                .acl(PortId(0), AclDirection::Out)
                .unwrap()
                .rules
                .len(),
            1002
        );

        // Unknown port, absent ACL.
        assert!(tables
            .apply_batch(&[TableOp::SetAcl {
                port: PortId(7),
                direction: AclDirection::In,
                rules: vec![],
            }])
            .is_err());
        assert!(tables
            .apply_batch(&[TableOp::DelAcl {
                port: PortId(0),
                direction: AclDirection::In,
            }])
            .is_err());

        // The port's removal takes its ACLs.
        tables
            .apply_batch(&[TableOp::DelPort { id: PortId(0) }])
            .unwrap();
        assert_eq!(tables.acls().count(), 0);
    }

    #[test]
    fn vrf_acls_need_their_vrf_and_go_with_it() {
        let mut tables = Tables::new();
        let set = |vrf| TableOp::SetVrfAcl {
            vrf: VrfId(vrf),
            direction: AclDirection::In,
            rules: policy(10),
        };
        assert_eq!(
            tables.apply_batch(&[set(5)]).unwrap_err().error,
            TableError::UnknownVrf(VrfId(5))
        );
        tables
            .apply_batch(&[TableOp::AddVrf { vrf: VrfId(5) }, set(5)])
            .unwrap();
        assert!(tables.vrf_acl(VrfId(5), AclDirection::In).is_some());
        assert!(tables.vrf_acl(VrfId(5), AclDirection::Out).is_none());
        assert!(tables
            .apply_batch(&[TableOp::DelVrfAcl {
                vrf: VrfId(5),
                direction: AclDirection::Out,
            }])
            .is_err());
        tables
            .apply_batch(&[TableOp::DelVrf { vrf: VrfId(5) }])
            .unwrap();
        assert_eq!(tables.acls().count(), 0);
    }
}
