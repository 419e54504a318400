//! NAT configuration in the tables: SNAT rules and Services, their validation, their removal
//! with the port or VRF they depend on, and transactional undo.

use pipelines::tables::{
    Backend, Frontend, InterfaceAddress, L4Protocol, Service, ServiceKey, SnatKey, SnatRule,
    TableError, VxlanParams,
};
use pipelines::wire::EthernetAddress;
use pipelines::{IpPrefix, PortId, TableOp, Tables, VrfId};
use std::net::{IpAddr, Ipv4Addr};

const UPLINK: PortId = PortId(0);
const POD: PortId = PortId(1);

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn prefix(s: &str) -> IpPrefix {
    s.parse().expect("prefix")
}

/// An uplink 192.168.1.10/24 and a pod port 10.244.1.1/24, both in VRF 0.
fn tables() -> Tables {
    let mut tables = Tables::new();
    let port = |id: PortId, name: &str, last: u8| TableOp::AddPort {
        id,
        name: name.into(),
        mac: EthernetAddress([0x02, 0, 0, 0, 0, last]),
        mtu: 1500,
        vrf: VrfId(0),
    };
    let address = |port: PortId, addr: IpAddr, prefix_len: u8| TableOp::AddAddress {
        port,
        address: InterfaceAddress { addr, prefix_len },
    };
    tables
        .apply_batch(&[
            port(UPLINK, "eth0", 1),
            port(POD, "vp1", 2),
            address(UPLINK, v4(192, 168, 1, 10), 24),
            address(POD, v4(10, 244, 1, 1), 24),
        ])
        .expect("lab");
    tables
}

fn masquerade(source: &str) -> SnatRule {
    SnatRule {
        vrf: VrfId(0),
        source: prefix(source),
        out_port: UPLINK,
        to: None,
        ports: (1024, 65535),
    }
}

fn service(backends: &[(u8, u16)]) -> Service {
    Service {
        key: ServiceKey {
            vrf: VrfId(0),
            frontend: Frontend::Vip {
                addr: v4(10, 96, 0, 1),
                port: 80,
            },
            protocol: L4Protocol::Tcp,
        },
        backends: backends
            .iter()
            .map(|&(last, weight)| Backend {
                addr: v4(10, 244, 1, last),
                port: 8080,
                weight,
            })
            .collect(),
        affinity_secs: None,
    }
}

fn error(tables: &mut Tables, ops: &[TableOp]) -> TableError {
    tables.apply_batch(ops).expect_err("refused").error
}

#[test]
fn snat_rules_match_by_egress_port_and_longest_source_prefix() {
    let mut tables = tables();
    let generation = tables.generation();
    tables
        .apply_batch(&[
            TableOp::AddSnat {
                rule: masquerade("10.244.0.0/16"),
            },
            TableOp::AddSnat {
                rule: SnatRule {
                    to: Some(v4(192, 168, 1, 10)),
                    ports: (20000, 20999),
                    ..masquerade("10.244.1.0/24")
                },
            },
        ])
        .expect("rules");
    assert!(tables.generation() > generation);
    let rule = tables
        .snat_for(UPLINK, v4(10, 244, 1, 5))
        .expect("a rule matches");
    assert_eq!(rule.source, prefix("10.244.1.0/24"), "longest prefix");
    assert_eq!(
        tables.snat_for(UPLINK, v4(10, 244, 7, 5)).map(|r| r.source),
        Some(prefix("10.244.0.0/16"))
    );
    assert!(tables.snat_for(UPLINK, v4(10, 99, 0, 1)).is_none());
    assert!(
        tables.snat_for(POD, v4(10, 244, 1, 5)).is_none(),
        "other egress"
    );

    // Same identity replaces.
    tables
        .apply_batch(&[TableOp::AddSnat {
            rule: SnatRule {
                ports: (3000, 3999),
                ..masquerade("10.244.0.0/16")
            },
        }])
        .expect("replace");
    assert_eq!(tables.snat_rules().count(), 2);
    assert_eq!(
        tables.snat_for(UPLINK, v4(10, 244, 7, 5)).map(|r| r.ports),
        Some((3000, 3999))
    );
    tables
        .apply_batch(&[TableOp::DelSnat {
            key: masquerade("10.244.0.0/16").key(),
        }])
        .expect("delete");
    assert_eq!(tables.snat_rules().count(), 1);
}

#[test]
fn snat_rules_are_refused_when_invalid() {
    let mut tables = tables();
    let not_ours = SnatRule {
        to: Some(v4(192, 168, 1, 99)),
        ..masquerade("10.244.0.0/16")
    };
    assert!(matches!(
        error(&mut tables, &[TableOp::AddSnat { rule: not_ours }]),
        TableError::SnatAddressNotOnPort { .. }
    ));
    let other_vrf = SnatRule {
        vrf: VrfId(3),
        ..masquerade("10.244.0.0/16")
    };
    assert!(matches!(
        error(&mut tables, &[TableOp::AddSnat { rule: other_vrf }]),
        TableError::PortInOtherVrf { .. }
    ));
    let unknown_port = SnatRule {
        out_port: PortId(9),
        ..masquerade("10.244.0.0/16")
    };
    assert_eq!(
        error(&mut tables, &[TableOp::AddSnat { rule: unknown_port }]),
        TableError::UnknownPort(PortId(9))
    );
    let bad_range = SnatRule {
        ports: (5000, 4000),
        ..masquerade("10.244.0.0/16")
    };
    assert_eq!(
        error(&mut tables, &[TableOp::AddSnat { rule: bad_range }]),
        TableError::BadPortRange(5000, 4000)
    );
    let absent = SnatKey {
        vrf: VrfId(0),
        source: prefix("10.0.0.0/8"),
        out_port: UPLINK,
    };
    assert_eq!(
        error(&mut tables, &[TableOp::DelSnat { key: absent }]),
        TableError::NoSuchSnat(absent)
    );
    // Not through a tunnel: pod-to-pod over the overlay is never masqueraded.
    tables
        .apply_batch(&[TableOp::AddVxlan {
            id: PortId(2),
            name: "vxlan1".into(),
            mac: EthernetAddress([0x02, 0, 0, 0, 0, 3]),
            mtu: None,
            vrf: VrfId(0),
            params: VxlanParams {
                vni: 1,
                local: Ipv4Addr::new(192, 168, 1, 10),
                uplink: UPLINK,
                ttl: 64,
                df: Default::default(),
                udp_checksum: false,
            },
        }])
        .expect("tunnel");
    let tunnel = SnatRule {
        out_port: PortId(2),
        ..masquerade("10.244.0.0/16")
    };
    assert!(matches!(
        error(&mut tables, &[TableOp::AddSnat { rule: tunnel }]),
        TableError::WrongPortKind { .. }
    ));
    assert_eq!(tables.snat_rules().count(), 0);
}

#[test]
fn services_are_added_replaced_and_deleted() {
    let mut tables = tables();
    tables
        .apply_batch(&[TableOp::AddService {
            service: service(&[(2, 1), (3, 1), (4, 2)]),
        }])
        .expect("service");
    let key = service(&[]).key;
    assert_eq!(tables.service(&key).map(|s| s.backends.len()), Some(3));
    // Replacing keeps one entry; an empty backend list is a valid (refusing) Service.
    tables
        .apply_batch(&[TableOp::AddService {
            service: service(&[]),
        }])
        .expect("no backends");
    assert_eq!(tables.services().count(), 1);
    assert_eq!(tables.service(&key).map(|s| s.backends.len()), Some(0));
    assert!(matches!(
        error(
            &mut tables,
            &[TableOp::AddService {
                service: service(&[(2, 1), (2, 5)])
            }]
        ),
        TableError::DuplicateBackend(..)
    ));
    assert!(matches!(
        error(
            &mut tables,
            &[TableOp::AddService {
                service: service(&[(2, 0)])
            }]
        ),
        TableError::BadWeight(..)
    ));
    tables
        .apply_batch(&[TableOp::DelService { key }])
        .expect("delete");
    assert_eq!(
        error(&mut tables, &[TableOp::DelService { key }]),
        TableError::NoSuchService(key)
    );
    // A Service in a new VRF creates it; deleting the VRF takes its Services.
    let mut in_vrf = service(&[(2, 1)]);
    in_vrf.key.vrf = VrfId(7);
    tables
        .apply_batch(&[TableOp::AddService {
            service: in_vrf.clone(),
        }])
        .expect("service in VRF 7");
    assert!(tables.vrf(VrfId(7)).is_some());
    tables
        .apply_batch(&[TableOp::DelVrf { vrf: VrfId(7) }])
        .expect("delete VRF");
    assert!(tables.service(&in_vrf.key).is_none());
}

#[test]
fn deleting_the_egress_port_takes_its_snat_rules() {
    let mut tables = tables();
    tables
        .apply_batch(&[TableOp::AddSnat {
            rule: masquerade("10.244.0.0/16"),
        }])
        .expect("rule");
    tables
        .apply_batch(&[TableOp::DelPort { id: UPLINK }])
        .expect("delete port");
    assert_eq!(tables.snat_rules().count(), 0);
}

#[test]
fn a_failed_batch_restores_nat_configuration() {
    let mut tables = tables();
    tables
        .apply_batch(&[
            TableOp::AddSnat {
                rule: masquerade("10.244.0.0/16"),
            },
            TableOp::AddService {
                service: service(&[(2, 1), (3, 1)]),
            },
        ])
        .expect("config");
    let generation = tables.generation();
    let rules: Vec<SnatRule> = tables.snat_rules().cloned().collect();
    let services: Vec<Service> = tables.services().cloned().collect();
    let refused = tables.apply_batch(&[
        TableOp::DelSnat {
            key: masquerade("10.244.0.0/16").key(),
        },
        TableOp::AddService {
            service: service(&[(9, 1)]),
        },
        TableOp::DelPort { id: UPLINK },
        TableOp::DelService {
            key: service(&[]).key,
        },
        TableOp::AddRoute {
            vrf: VrfId(0),
            prefix: prefix("10.9.0.0/16"),
            target: pipelines::tables::RouteTarget::Dev { port: PortId(42) },
            replace: false,
        },
    ]);
    assert!(refused.is_err());
    assert_eq!(refused.map_err(|e| e.index), Err(4));
    assert_eq!(tables.generation(), generation);
    assert_eq!(tables.snat_rules().cloned().collect::<Vec<_>>(), rules);
    assert_eq!(tables.services().cloned().collect::<Vec<_>>(), services);
    assert!(tables.port(UPLINK).is_some());
}

#[test]
fn a_tunnel_host_address_may_sit_inside_a_pod_subnet() {
    // flannel's layout: 10.244.1.0/32 on the tunnel, 10.244.1.1/24 on the pods' port.
    let mut tables = tables();
    tables
        .apply_batch(&[TableOp::AddVxlan {
            id: PortId(2),
            name: "vxlan1".into(),
            mac: EthernetAddress([0x02, 0, 0, 0, 0, 3]),
            mtu: None,
            vrf: VrfId(0),
            params: VxlanParams {
                vni: 1,
                local: Ipv4Addr::new(192, 168, 1, 10),
                uplink: UPLINK,
                ttl: 64,
                df: Default::default(),
                udp_checksum: false,
            },
        }])
        .expect("tunnel");
    let on_tunnel = |addr, prefix_len| TableOp::AddAddress {
        port: PortId(2),
        address: InterfaceAddress { addr, prefix_len },
    };
    tables
        .apply_batch(&[on_tunnel(v4(10, 244, 1, 0), 32)])
        .expect("flannel's /32 inside the pod /24");
    let vrf = tables.vrf(VrfId(0)).expect("vrf 0");
    assert_eq!(
        tables.next_hop(vrf.lookup(v4(10, 244, 1, 0)).expect("route")),
        Some(&pipelines::tables::NextHop::Receive)
    );
    assert!(matches!(
        tables.next_hop(vrf.lookup(v4(10, 244, 1, 7)).expect("route")),
        Some(pipelines::tables::NextHop::Connected { port: POD })
    ));
    // Still one owner per address, and a non-host address on a pod subnet still overlaps.
    assert!(matches!(
        error(&mut tables, &[on_tunnel(v4(10, 244, 1, 1), 32)]),
        TableError::AddressExists { .. }
    ));
    assert!(matches!(
        error(
            &mut tables,
            &[TableOp::AddAddress {
                port: UPLINK,
                address: InterfaceAddress {
                    addr: v4(10, 244, 1, 200),
                    prefix_len: 25,
                },
            }]
        ),
        TableError::OverlappingAddress { .. }
    ));
}
