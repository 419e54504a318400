//! Table transactions: all-or-nothing batches, cascades, address rules, gateway resolution,
//! shared next hops and their reference counts.

mod common;

use common::*;
use pipelines::tables::{NeighborKind, NextHop, RouteTarget, TableError};
use pipelines::{PortId, TableOp, Tables, VrfId};

fn route_of(tables: &Tables, p: &str) -> Option<NextHop> {
    let prefix = prefix(p);
    tables
        .routes(VrfId(0))
        .into_iter()
        .find(|(q, _)| *q == prefix)
        .map(|(_, nh)| nh)
}

fn gateway(port: u16, ip: &str) -> NextHop {
    NextHop::Gateway {
        port: PortId(port),
        gateway: ip.parse().expect("ip"),
    }
}

fn expect_rejected_at(tables: &mut Tables, ops: &[TableOp], index: usize) -> TableError {
    let before = snapshot(tables);
    let error = tables.apply_batch(ops).expect_err("batch must be rejected");
    assert_eq!(error.index, index, "{error}");
    assert_eq!(
        snapshot(tables),
        before,
        "rejected batch left a trace: {error}"
    );
    check_references(tables);
    error.error
}

#[test]
fn lab_tables_are_consistent() {
    let tables = lab_tables();
    check_references(&tables);
    assert_eq!(
        route_of(&tables, "192.168.0.0/16"),
        Some(gateway(1, "10.0.1.2"))
    );
    assert_eq!(
        route_of(&tables, "10.0.2.0/24"),
        Some(NextHop::Connected { port: PortId(2) })
    );
    assert_eq!(route_of(&tables, "10.0.2.1/32"), Some(NextHop::Receive));
    assert_eq!(route_of(&tables, "10.0.2.255/32"), Some(NextHop::Broadcast));
    assert_eq!(
        route_of(&tables, "2001:db8:2::1/128"),
        Some(NextHop::Receive)
    );
    // Shared next hops: the gateway 10.0.1.2 is one entry used by a route and the group.
    let table = tables.vrf(VrfId(0)).expect("vrf 0");
    let id = table.get(prefix("192.168.0.0/16")).expect("route");
    assert_eq!(tables.next_hops().references(id), 2);
}

#[test]
fn batch_failing_at_the_third_op_changes_nothing() {
    let mut tables = lab_tables();
    let new_port = |id: u16, name: &str, vrf: u32| TableOp::AddPort {
        id: PortId(id),
        name: name.into(),
        mac: ea([0x02, 9, 9, 9, 9, id as u8]),
        mtu: 1500,
        vrf: VrfId(vrf),
    };
    let cases: Vec<Vec<TableOp>> = vec![
        vec![
            route("10.99.0.0/16", via("10.0.1.2")),
            route(
                "10.98.0.0/16",
                RouteTarget::Multipath(vec![via("10.0.1.2"), via("10.0.2.2")]),
            ),
            route("10.97.0.0/16", via("10.200.0.1")), // gateway not on a subnet
        ],
        vec![
            TableOp::DelPort { id: PortId(1) },
            TableOp::AddNeighbor {
                port: PortId(0),
                ip: ip4([10, 0, 0, 50]),
                mac: ea(NEW),
            },
            route("10.97.0.0/16", RouteTarget::Dev { port: PortId(1) }), // port gone
        ],
        vec![
            new_port(7, "p7", 5),
            TableOp::AddAddress {
                port: PortId(7),
                address: iface("10.7.0.1/24"),
            },
            TableOp::AddAddress {
                port: PortId(7),
                address: iface("10.7.0.1/24"),
            },
        ],
        vec![
            TableOp::AddRoute {
                vrf: VrfId(0),
                prefix: prefix("192.168.0.0/16"),
                target: RouteTarget::Multipath(vec![via("10.0.2.2"), via("10.0.3.2")]),
                replace: true,
            },
            TableOp::DelRoute {
                vrf: VrfId(0),
                prefix: prefix("198.51.100.0/24"),
            },
            TableOp::DelRoute {
                vrf: VrfId(0),
                prefix: prefix("198.51.101.0/24"),
            },
        ],
        vec![
            TableOp::AddVrf { vrf: VrfId(9) },
            TableOp::AddRoute {
                vrf: VrfId(9),
                prefix: prefix("0.0.0.0/0"),
                target: RouteTarget::Blackhole,
                replace: false,
            },
            TableOp::DelVrf { vrf: VrfId(0) },
        ],
        vec![
            TableOp::SetPortMtu {
                id: PortId(2),
                mtu: 9000,
            },
            TableOp::DelAddress {
                port: PortId(0),
                address: iface("10.0.0.1/24"),
            },
            TableOp::SetPortMtu {
                id: PortId(2),
                mtu: 50,
            },
        ],
        vec![
            TableOp::LearnNeighbor {
                port: PortId(3),
                ip: ip4([10, 0, 3, 9]),
                mac: ea(NEW),
                now_ns: 5,
            },
            TableOp::DelNeighbor {
                port: PortId(0),
                ip: ip4(H0_V4),
            },
            TableOp::DelNeighbor {
                port: PortId(0),
                ip: ip4(H0_V4),
            },
        ],
        vec![
            TableOp::DelRoute {
                vrf: VrfId(0),
                prefix: prefix("192.168.0.0/16"),
            },
            TableOp::DelRoute {
                vrf: VrfId(0),
                prefix: prefix("198.51.100.0/24"),
            },
            // Gateway 10.0.1.2's next hop was just freed; now the batch fails.
            TableOp::DelPort { id: PortId(42) },
        ],
        vec![
            TableOp::DelPort { id: PortId(2) },
            TableOp::DelPort { id: PortId(3) },
            route("10.0.2.0/24", RouteTarget::Dev { port: PortId(2) }),
        ],
    ];
    for ops in cases {
        expect_rejected_at(&mut tables, &ops, 2);
    }
    // The same tables still accept a good batch and move on.
    let generation = tables.generation();
    tables
        .apply_batch(&[route("10.99.0.0/16", via("10.0.1.2"))])
        .expect("good batch");
    assert_eq!(tables.generation(), generation + 1);
}

const NEW: [u8; 6] = [0x02, 0xee, 0, 0, 0, 1];

#[test]
fn empty_batch_is_accepted_without_a_new_generation() {
    let mut tables = lab_tables();
    let before = snapshot(&tables);
    tables.apply_batch(&[]).expect("empty");
    assert_eq!(snapshot(&tables), before);
}

#[test]
fn del_port_cascades_to_routes_and_neighbors() {
    let mut tables = lab_tables();
    let generation = tables.generation();
    tables
        .apply_batch(&[TableOp::DelPort { id: PortId(1) }])
        .expect("del port");
    assert_eq!(tables.generation(), generation + 1);
    assert!(tables.port(PortId(1)).is_none());
    assert!(tables.port_by_name("p1").is_none());
    for gone in [
        "10.0.1.0/24",
        "10.0.1.1/32",
        "10.0.1.255/32",
        "192.168.0.0/16",
        "198.51.100.0/24", // ECMP with a member on p1
        "2001:db8:1::/64",
        "2001:db8:1::1/128",
        "2001:db8:100::/48",
    ] {
        assert_eq!(route_of(&tables, gone), None, "{gone} should be gone");
    }
    for kept in ["192.168.1.0/24", "10.0.2.0/24", "2001:db8:100:1::/64"] {
        assert!(route_of(&tables, kept).is_some(), "{kept} should stay");
    }
    assert!(tables
        .neighbors()
        .iter()
        .all(|((port, _), _)| *port != PortId(1)));
    assert!(tables
        .next_hops()
        .iter()
        .all(|(_, nh)| nh.port() != Some(PortId(1))));
    check_references(&tables);
    // The name and id can be used again.
    tables
        .apply_batch(&[
            TableOp::AddPort {
                id: PortId(1),
                name: "p1".into(),
                mac: ea(R[1]),
                mtu: 1500,
                vrf: VrfId(0),
            },
            TableOp::AddAddress {
                port: PortId(1),
                address: iface("10.0.1.1/24"),
            },
        ])
        .expect("re-add");
    check_references(&tables);
}

#[test]
fn del_port_with_two_addresses_in_one_subnet_leaves_no_route_behind() {
    let mut tables = lab_tables();
    let before = snapshot(&tables);
    tables
        .apply_batch(&[
            TableOp::AddPort {
                id: PortId(6),
                name: "p6".into(),
                mac: ea(NEW),
                mtu: 1500,
                vrf: VrfId(0),
            },
            TableOp::AddAddress {
                port: PortId(6),
                address: iface("10.6.0.1/24"),
            },
            TableOp::AddAddress {
                port: PortId(6),
                address: iface("10.6.0.5/24"),
            },
        ])
        .expect("port with two addresses");
    assert_eq!(route_of(&tables, "10.6.0.255/32"), Some(NextHop::Broadcast));
    tables
        .apply_batch(&[TableOp::DelPort { id: PortId(6) }])
        .expect("del port");
    for gone in ["10.6.0.0/24", "10.6.0.1/32", "10.6.0.5/32", "10.6.0.255/32"] {
        assert_eq!(route_of(&tables, gone), None, "{gone} should be gone");
    }
    let after = snapshot(&tables);
    assert_eq!(after.routes, before.routes);
    assert_eq!(after.next_hops, before.next_hops);
    check_references(&tables);
}

#[test]
fn del_address_keeps_the_subnet_while_another_address_uses_it() {
    let mut tables = lab_tables();
    tables
        .apply_batch(&[TableOp::AddAddress {
            port: PortId(2),
            address: iface("10.0.2.9/24"),
        }])
        .expect("second address");
    tables
        .apply_batch(&[TableOp::DelAddress {
            port: PortId(2),
            address: iface("10.0.2.1/24"),
        }])
        .expect("del first");
    assert_eq!(route_of(&tables, "10.0.2.1/32"), None);
    assert_eq!(route_of(&tables, "10.0.2.9/32"), Some(NextHop::Receive));
    assert_eq!(
        route_of(&tables, "10.0.2.0/24"),
        Some(NextHop::Connected { port: PortId(2) })
    );
    assert_eq!(route_of(&tables, "10.0.2.255/32"), Some(NextHop::Broadcast));
    tables
        .apply_batch(&[TableOp::DelAddress {
            port: PortId(2),
            address: iface("10.0.2.9/24"),
        }])
        .expect("del second");
    for gone in ["10.0.2.0/24", "10.0.2.9/32", "10.0.2.255/32"] {
        assert_eq!(route_of(&tables, gone), None, "{gone}");
    }
    check_references(&tables);
}

#[test]
fn address_rules() {
    let mut tables = lab_tables();
    let add = |port: u16, a: &str| TableOp::AddAddress {
        port: PortId(port),
        address: iface(a),
    };
    // Overlapping subnets across ports of one VRF.
    for op in [
        add(1, "10.0.0.200/16"),
        add(1, "10.0.0.129/25"),
        add(1, "10.0.0.9/8"),
    ] {
        let error = expect_rejected_at(&mut tables, &[op], 0);
        assert!(
            matches!(error, TableError::OverlappingAddress { .. }),
            "{error}"
        );
    }
    let error = expect_rejected_at(&mut tables, &[add(1, "2001:db8::9/48")], 0);
    assert!(matches!(error, TableError::OverlappingAddress { .. }));
    // Same address twice.
    let error = expect_rejected_at(&mut tables, &[add(0, "10.0.0.1/24")], 0);
    assert!(matches!(error, TableError::AddressExists { .. }));
    // Network and broadcast addresses, multicast, bad lengths.
    for bad in ["10.5.0.0/24", "10.5.0.255/24", "224.0.0.1/24", "0.0.0.0/8"] {
        let error = expect_rejected_at(&mut tables, &[add(1, bad)], 0);
        assert!(matches!(error, TableError::BadAddress(_)), "{bad}: {error}");
    }
    let error = expect_rejected_at(
        &mut tables,
        &[TableOp::AddAddress {
            port: PortId(1),
            address: pipelines::tables::InterfaceAddress {
                addr: ip4([10, 5, 0, 1]),
                prefix_len: 33,
            },
        }],
        0,
    );
    assert!(matches!(error, TableError::BadPrefix(_)));
    // Overlap in another VRF is fine.
    tables
        .apply_batch(&[
            TableOp::AddPort {
                id: PortId(5),
                name: "red0".into(),
                mac: ea(NEW),
                mtu: 1500,
                vrf: VrfId(1),
            },
            add(5, "10.0.0.5/24"),
        ])
        .expect("overlap across VRFs");
    assert_eq!(
        tables
            .routes(VrfId(1))
            .into_iter()
            .find(|(p, _)| *p == prefix("10.0.0.0/24"))
            .map(|(_, nh)| nh),
        Some(NextHop::Connected { port: PortId(5) })
    );
    // /31: both addresses usable, no broadcast route.
    tables.apply_batch(&[add(5, "10.9.9.0/31")]).expect("/31");
    assert_eq!(
        tables
            .routes(VrfId(1))
            .into_iter()
            .filter(|(_, nh)| *nh == NextHop::Broadcast)
            .count(),
        1,
        "only the /24 has a broadcast route"
    );
    check_references(&tables);
}

#[test]
fn gateway_resolution() {
    let mut tables = lab_tables();
    tables
        .apply_batch(&[
            route("100.64.0.0/10", via("10.0.2.2")),
            route(
                "100.128.0.0/10",
                RouteTarget::Via {
                    gateway: "10.9.9.9".parse().expect("ip"),
                    port: Some(PortId(3)),
                },
            ),
            route("2001:db8:300::/48", via("2001:db8:3::2")),
        ])
        .expect("routes via gateways");
    assert_eq!(
        route_of(&tables, "100.64.0.0/10"),
        Some(gateway(2, "10.0.2.2")),
        "port found from the connected subnet"
    );
    assert_eq!(
        route_of(&tables, "100.128.0.0/10"),
        Some(gateway(3, "10.9.9.9")),
        "pinned port"
    );
    assert_eq!(
        route_of(&tables, "2001:db8:300::/48"),
        Some(gateway(3, "2001:db8:3::2"))
    );
    let error = expect_rejected_at(&mut tables, &[route("100.0.0.0/16", via("10.77.0.1"))], 0);
    assert!(matches!(error, TableError::GatewayUnreachable(_)));
    let error = expect_rejected_at(&mut tables, &[route("100.0.0.0/16", via("2001:db8::2"))], 0);
    assert!(matches!(error, TableError::BadGateway { .. }));
    let error = expect_rejected_at(&mut tables, &[route("100.0.0.0/16", via("224.0.0.1"))], 0);
    assert!(matches!(error, TableError::BadGateway { .. }));
    // Existing route without replace; a port's receive route even with it.
    let error = expect_rejected_at(
        &mut tables,
        &[route("192.168.0.0/16", RouteTarget::Blackhole)],
        0,
    );
    assert!(matches!(error, TableError::RouteExists { .. }));
    let error = expect_rejected_at(
        &mut tables,
        &[TableOp::AddRoute {
            vrf: VrfId(0),
            prefix: prefix("10.0.0.1/32"),
            target: RouteTarget::Blackhole,
            replace: true,
        }],
        0,
    );
    assert!(matches!(error, TableError::AddressRoute(_)));
    let error = expect_rejected_at(
        &mut tables,
        &[TableOp::DelRoute {
            vrf: VrfId(0),
            prefix: prefix("10.0.0.255/32"),
        }],
        0,
    );
    assert!(matches!(error, TableError::AddressRoute(_)));
    check_references(&tables);
}

#[test]
fn ecmp_reference_counts_return_to_zero() {
    let mut tables = lab_tables();
    let baseline = snapshot(&tables);
    let g1 = tables
        .vrf(VrfId(0))
        .and_then(|v| v.get(prefix("192.168.0.0/16")))
        .expect("gateway 10.0.1.2");
    let refs_g1 = tables.next_hops().references(g1);
    let group = RouteTarget::Multipath(vec![via("10.0.1.2"), via("10.0.4.2")]);
    tables
        .apply_batch(&[
            route("100.64.0.0/16", group.clone()),
            route("100.65.0.0/16", group.clone()),
        ])
        .expect("two routes over one group");
    check_references(&tables);
    let id_a = tables
        .vrf(VrfId(0))
        .and_then(|v| v.get(prefix("100.64.0.0/16")))
        .expect("a");
    let id_b = tables
        .vrf(VrfId(0))
        .and_then(|v| v.get(prefix("100.65.0.0/16")))
        .expect("b");
    assert_eq!(id_a, id_b, "identical groups are shared");
    assert_eq!(tables.next_hops().references(id_a), 2);
    assert_eq!(
        tables.next_hops().references(g1),
        refs_g1 + 1,
        "one ref from the group"
    );
    assert_eq!(
        tables.next_hops().len(),
        baseline.next_hops + 1,
        "only the group is new: both gateways are shared"
    );
    tables
        .apply_batch(&[TableOp::DelRoute {
            vrf: VrfId(0),
            prefix: prefix("100.64.0.0/16"),
        }])
        .expect("del a");
    assert_eq!(tables.next_hops().references(id_b), 1);
    tables
        .apply_batch(&[TableOp::DelRoute {
            vrf: VrfId(0),
            prefix: prefix("100.65.0.0/16"),
        }])
        .expect("del b");
    assert_eq!(tables.next_hops().references(id_b), 0, "group freed");
    assert_eq!(tables.next_hops().references(g1), refs_g1);
    let after = snapshot(&tables);
    assert_eq!(after.next_hops, baseline.next_hops);
    assert_eq!(after.references, baseline.references);
    assert_eq!(after.routes, baseline.routes);
    check_references(&tables);
    // Replacing a group route by a single next hop frees the group too.
    tables
        .apply_batch(&[TableOp::AddRoute {
            vrf: VrfId(0),
            prefix: prefix("198.51.100.0/24"),
            target: via("10.0.1.2"),
            replace: true,
        }])
        .expect("replace ecmp");
    assert!(tables
        .next_hops()
        .iter()
        .all(|(_, nh)| !matches!(nh, NextHop::Ecmp { .. })));
    check_references(&tables);
}

#[test]
fn neighbor_ops_and_generations() {
    let mut tables = lab_tables();
    let learn = |mac: [u8; 6], now_ns: u64| TableOp::LearnNeighbor {
        port: PortId(3),
        ip: ip4([10, 0, 3, 9]),
        mac: ea(mac),
        now_ns,
    };
    let g = tables.generation();
    tables.apply_batch(&[learn(NEW, 1)]).expect("learn");
    assert_eq!(tables.generation(), g + 1, "new neighbor");
    tables.apply_batch(&[learn(NEW, 2)]).expect("refresh");
    assert_eq!(tables.generation(), g + 1, "refresh with the same MAC");
    let entry = tables
        .neighbors()
        .get(PortId(3), ip4([10, 0, 3, 9]))
        .copied()
        .expect("entry");
    assert_eq!(entry.kind, NeighborKind::Learned);
    assert_eq!(entry.confirmed_ns, 2);
    tables.apply_batch(&[learn(N[1], 3)]).expect("moved");
    assert_eq!(tables.generation(), g + 2, "MAC change");
    // Learning never overrides a static entry.
    tables
        .apply_batch(&[TableOp::LearnNeighbor {
            port: PortId(1),
            ip: ip4(neighbor_v4(1)),
            mac: ea(NEW),
            now_ns: 4,
        }])
        .expect("learn over static");
    let static_entry = tables
        .neighbors()
        .get(PortId(1), ip4(neighbor_v4(1)))
        .expect("static");
    assert_eq!(static_entry.mac, ea(N[1]));
    assert_eq!(static_entry.kind, NeighborKind::Static);
    assert_eq!(tables.generation(), g + 2);
    // Expiry removes only learned entries and bumps the generation.
    assert_eq!(tables.expire_neighbors(1_000, 10), 1);
    assert_eq!(tables.generation(), g + 3);
    assert!(tables
        .neighbors()
        .get(PortId(3), ip4([10, 0, 3, 9]))
        .is_none());
    assert!(tables
        .neighbors()
        .get(PortId(1), ip4(neighbor_v4(1)))
        .is_some());
    // Bad neighbors.
    for op in [
        TableOp::AddNeighbor {
            port: PortId(1),
            ip: ip4([224, 0, 0, 1]),
            mac: ea(NEW),
        },
        TableOp::AddNeighbor {
            port: PortId(1),
            ip: ip4([10, 0, 1, 9]),
            mac: ea([0x01, 0, 0x5e, 0, 0, 1]),
        },
        TableOp::AddNeighbor {
            port: PortId(1),
            ip: ip4([10, 0, 1, 9]),
            mac: ea([0; 6]),
        },
        TableOp::AddNeighbor {
            port: PortId(40),
            ip: ip4([10, 0, 1, 9]),
            mac: ea(NEW),
        },
    ] {
        expect_rejected_at(&mut tables, &[op], 0);
    }
}

#[test]
fn vrf_and_port_rules() {
    let mut tables = lab_tables();
    let error = expect_rejected_at(&mut tables, &[TableOp::DelVrf { vrf: VrfId(0) }], 0);
    assert_eq!(error, TableError::DefaultVrf);
    tables
        .apply_batch(&[
            TableOp::AddPort {
                id: PortId(5),
                name: "red0".into(),
                mac: ea(NEW),
                mtu: 1500,
                vrf: VrfId(1),
            },
            TableOp::AddAddress {
                port: PortId(5),
                address: iface("10.50.0.1/24"),
            },
            TableOp::AddRoute {
                vrf: VrfId(1),
                prefix: prefix("0.0.0.0/0"),
                target: via("10.50.0.2"),
                replace: false,
            },
        ])
        .expect("vrf 1");
    let error = expect_rejected_at(&mut tables, &[TableOp::DelVrf { vrf: VrfId(1) }], 0);
    assert!(matches!(error, TableError::VrfInUse { .. }));
    // A route in VRF 0 cannot use a port of VRF 1.
    let error = expect_rejected_at(
        &mut tables,
        &[route("100.0.0.0/8", RouteTarget::Dev { port: PortId(5) })],
        0,
    );
    assert!(matches!(error, TableError::PortInOtherVrf { .. }));
    tables
        .apply_batch(&[
            TableOp::DelPort { id: PortId(5) },
            TableOp::DelVrf { vrf: VrfId(1) },
        ])
        .expect("del port then vrf");
    assert!(tables.vrf(VrfId(1)).is_none());
    check_references(&tables);
    let bad_ports = [
        (PortId(1024), "x", [0x02, 1, 1, 1, 1, 1], 1500, 0),
        (PortId(0), "x", [0x02, 1, 1, 1, 1, 1], 1500, 0),
        (PortId(9), "p0", [0x02, 1, 1, 1, 1, 1], 1500, 0),
        (PortId(9), "", [0x02, 1, 1, 1, 1, 1], 1500, 0),
        (PortId(9), "a/b", [0x02, 1, 1, 1, 1, 1], 1500, 0),
        (PortId(9), "x", [0x03, 1, 1, 1, 1, 1], 1500, 0),
        (PortId(9), "x", [0x02, 1, 1, 1, 1, 1], 67, 0),
        (PortId(9), "x", [0x02, 1, 1, 1, 1, 1], 9001, 0),
        (PortId(9), "x", [0x02, 1, 1, 1, 1, 1], 1500, 4096),
    ];
    for (id, name, mac, mtu, vrf) in bad_ports {
        expect_rejected_at(
            &mut tables,
            &[TableOp::AddPort {
                id,
                name: name.into(),
                mac: ea(mac),
                mtu,
                vrf: VrfId(vrf),
            }],
            0,
        );
    }
}

#[test]
fn del_address_keeps_a_broadcast_route_another_address_needs() {
    // 10.0.0.128/25 and 10.0.0.1/24 on p0 share the broadcast address 10.0.0.255.
    let mut tables = lab_tables();
    let add = TableOp::AddAddress {
        port: PortId(0),
        address: iface("10.0.0.129/25"),
    };
    tables.apply_batch(&[add]).expect("second subnet");
    tables
        .apply_batch(&[TableOp::DelAddress {
            port: PortId(0),
            address: iface("10.0.0.129/25"),
        }])
        .expect("del");
    assert_eq!(route_of(&tables, "10.0.0.128/25"), None);
    assert_eq!(
        route_of(&tables, "10.0.0.255/32"),
        Some(NextHop::Broadcast),
        "10.0.0.1/24 still needs its broadcast route"
    );
    assert_eq!(snapshot(&tables).routes, snapshot(&lab_tables()).routes);
    check_references(&tables);
}

#[test]
fn the_same_address_may_serve_ports_in_different_vrfs() {
    use pipelines::wire::EthernetAddress;
    use pipelines::VrfId;
    let mut tables = Tables::new();
    let port = |id: u16, vrf: u32| TableOp::AddPort {
        id: PortId(id),
        name: format!("tenant{id}"),
        mac: EthernetAddress([2, 0, 0, 0, 7, id as u8]),
        mtu: 1500,
        vrf: VrfId(vrf),
    };
    let gateway = |id: u16| TableOp::AddAddress {
        port: PortId(id),
        address: iface("10.0.0.1/24"),
    };
    tables
        .apply_batch(&[port(1, 1), gateway(1), port(2, 2), gateway(2)])
        .expect("one gateway address per tenant VRF");
    for vrf in [1, 2] {
        let table = tables.vrf(VrfId(vrf)).unwrap();
        assert!(table.get(prefix("10.0.0.1/32")).is_some());
    }
    // In one VRF it is still a conflict.
    tables.apply_batch(&[port(3, 1)]).unwrap();
    assert!(tables.apply_batch(&[gateway(3)]).is_err());
}

#[test]
fn an_address_does_not_silently_replace_a_static_route() {
    use pipelines::wire::EthernetAddress;
    use pipelines::VrfId;
    let mut tables = Tables::new();
    tables
        .apply_batch(&[
            TableOp::AddPort {
                id: PortId(1),
                name: "up".into(),
                mac: EthernetAddress([2, 0, 0, 0, 8, 1]),
                mtu: 1500,
                vrf: VrfId(0),
            },
            TableOp::AddAddress {
                port: PortId(1),
                address: iface("192.168.1.1/24"),
            },
            route("10.9.0.0/24", via("192.168.1.2")),
        ])
        .unwrap();
    let before = tables.routes(VrfId(0));
    let error = tables
        .apply_batch(&[TableOp::AddAddress {
            port: PortId(1),
            address: iface("10.9.0.1/24"),
        }])
        .unwrap_err();
    assert!(
        matches!(error.error, TableError::RouteExists { .. }),
        "{error}"
    );
    assert_eq!(tables.routes(VrfId(0)), before);
    // A second address in an already connected subnet of the same port is fine.
    tables
        .apply_batch(&[TableOp::AddAddress {
            port: PortId(1),
            address: iface("192.168.1.7/24"),
        }])
        .unwrap();
}
