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

// --- VXLAN tunnels --------------------------------------------------------------------------------

use pipelines::tables::{PortKind, VxlanParams};
use std::net::Ipv4Addr;

fn add_vxlan(id: u16, name: &str, vrf: u32, params: VxlanParams) -> TableOp {
    TableOp::AddVxlan {
        id: PortId(id),
        name: name.into(),
        mac: ea([0x02, 0, 0, 0, 0x01, id as u8]),
        mtu: None,
        vrf: VrfId(vrf),
        params,
    }
}

fn vni(vni: u32) -> VxlanParams {
    VxlanParams {
        vni,
        ..lab_vxlan_params()
    }
}

fn vxlan_target(tunnel: u16, remote: [u8; 4], mac: Option<[u8; 6]>) -> RouteTarget {
    RouteTarget::Vxlan {
        tunnel: PortId(tunnel),
        remote: Ipv4Addr::from(remote),
        mac: mac.map(ea),
    }
}

fn route_in(vrf: VrfId, p: &str, target: RouteTarget) -> TableOp {
    TableOp::AddRoute {
        vrf,
        prefix: prefix(p),
        target,
        replace: false,
    }
}

fn overlay_route(tables: &Tables, p: &str) -> Option<NextHop> {
    let prefix = prefix(p);
    tables
        .routes(OVERLAY)
        .into_iter()
        .find(|(q, _)| *q == prefix)
        .map(|(_, nh)| nh)
}

#[test]
fn vxlan_lab_tables_are_consistent() {
    let tables = vxlan_lab_tables(lab_vxlan_params());
    check_references(&tables);
    let tunnel = tables.port(PortId(TUNNEL)).expect("tunnel");
    assert_eq!(tunnel.kind, PortKind::Vxlan(lab_vxlan_params()));
    assert_eq!(tunnel.vxlan(), Some(&lab_vxlan_params()));
    assert_eq!(tunnel.mtu, 1450, "uplink MTU minus 50");
    assert_eq!(tunnel.vrf, OVERLAY);
    assert!(tables.port(PortId(1)).expect("p1").vxlan().is_none());
    assert_eq!(
        overlay_route(&tables, "10.244.2.0/24"),
        Some(NextHop::Vxlan {
            tunnel: PortId(TUNNEL),
            remote: Ipv4Addr::from(REMOTE_VTEP),
            mac: ea(REMOTE_MAC),
        })
    );
    // One shared next hop for the IPv4 and IPv6 routes to the same remote.
    let table = tables.vrf(OVERLAY).expect("vrf 1");
    let id = table.get(prefix("10.244.2.0/24")).expect("route");
    assert_eq!(table.get(prefix("fd00:244:2::/64")), Some(id));
    assert_eq!(tables.next_hops().references(id), 2);
    let vtep = Ipv4Addr::from(VTEP);
    assert!(tables.is_vtep(VrfId(0), vtep), "in the uplink's VRF");
    assert!(!tables.is_vtep(OVERLAY, vtep), "not in the overlay");
    assert!(!tables.is_vtep(VrfId(0), Ipv4Addr::from(REMOTE_VTEP)));
    assert_eq!(
        tables.tunnel_for(VrfId(0), vtep, VNI).map(|p| p.id),
        Some(PortId(TUNNEL))
    );
    assert!(tables.tunnel_for(VrfId(0), vtep, VNI + 1).is_none());
    assert!(tables.tunnel_for(OVERLAY, vtep, VNI).is_none());
    assert_eq!(
        tables.tunnel_by_vni(VNI).map(|p| p.id),
        Some(PortId(TUNNEL))
    );
}

#[test]
fn vxlan_route_without_a_mac_uses_the_tunnel_mac() {
    let mut tables = vxlan_lab_tables(lab_vxlan_params());
    tables
        .apply_batch(&[route_in(
            OVERLAY,
            "10.244.9.0/24",
            vxlan_target(TUNNEL, [10, 0, 1, 9], None),
        )])
        .expect("route");
    assert_eq!(
        overlay_route(&tables, "10.244.9.0/24"),
        Some(NextHop::Vxlan {
            tunnel: PortId(TUNNEL),
            remote: Ipv4Addr::new(10, 0, 1, 9),
            mac: ea(TUNNEL_MAC),
        })
    );
}

#[test]
fn add_vxlan_validation() {
    let mut tables = vxlan_lab_tables(lab_vxlan_params());
    let expect = |tables: &mut Tables, op: TableOp| expect_rejected_at(tables, &[op], 0);

    let error = expect(&mut tables, add_vxlan(7, "vx", 1, vni(0x0100_0000)));
    assert_eq!(error, TableError::VniOutOfRange(0x0100_0000));
    let error = expect(&mut tables, add_vxlan(7, "vx", 2, vni(VNI)));
    assert!(
        matches!(&error, TableError::VniInUse { vni: 100, port } if port == "vxlan100"),
        "{error:?}"
    );
    for local in [[10, 0, 0, 1], [10, 0, 1, 9], [10, 244, 1, 1]] {
        let params = VxlanParams {
            local: Ipv4Addr::from(local),
            ..vni(200)
        };
        let error = expect(&mut tables, add_vxlan(7, "vx", 1, params));
        assert!(
            matches!(error, TableError::VtepNotOnUplink { .. }),
            "{local:?}: {error:?}"
        );
    }
    let params = VxlanParams {
        uplink: PortId(TUNNEL),
        ..vni(200)
    };
    let error = expect(&mut tables, add_vxlan(7, "vx", 1, params));
    assert!(
        matches!(error, TableError::WrongPortKind { .. }),
        "{error:?}"
    );
    let params = VxlanParams {
        uplink: PortId(40),
        ..vni(200)
    };
    let error = expect(&mut tables, add_vxlan(7, "vx", 1, params));
    assert_eq!(error, TableError::UnknownPort(PortId(40)));
    for mac in [[0x03, 0, 0, 0, 0, 1], [0xff; 6], [0; 6]] {
        let op = TableOp::AddVxlan {
            id: PortId(7),
            name: "vx".into(),
            mac: ea(mac),
            mtu: None,
            vrf: VrfId(1),
            params: vni(200),
        };
        let error = expect(&mut tables, op);
        assert_eq!(error, TableError::BadMac(ea(mac)));
    }
    let error = expect(&mut tables, add_vxlan(5, "vx", 1, vni(200)));
    assert_eq!(error, TableError::PortIdInUse(5));
    let error = expect(&mut tables, add_vxlan(7, "p1", 1, vni(200)));
    assert!(matches!(error, TableError::PortNameInUse(_)));
    let error = expect(&mut tables, add_vxlan(1024, "vx", 1, vni(200)));
    assert_eq!(error, TableError::PortIdOutOfRange(1024));
    let error = expect(&mut tables, add_vxlan(7, "a/b", 1, vni(200)));
    assert!(matches!(error, TableError::BadPortName(_)));
    for mtu in [67, 9001] {
        let op = TableOp::AddVxlan {
            id: PortId(7),
            name: "vx".into(),
            mac: ea([0x02, 0, 0, 0, 1, 7]),
            mtu: Some(mtu),
            vrf: VrfId(1),
            params: vni(200),
        };
        assert_eq!(expect(&mut tables, op), TableError::BadMtu(mtu));
    }
    let error = expect(&mut tables, add_vxlan(7, "vx", 5000, vni(200)));
    assert_eq!(error, TableError::VrfOutOfRange(5000));

    // The largest VNI, a new VRF, a second tunnel on the same VTEP: all fine.
    tables
        .apply_batch(&[
            add_vxlan(7, "vx7", 2, vni(0x00ff_ffff)),
            add_vxlan(8, "vx8", 1, vni(200)),
        ])
        .expect("more tunnels");
    assert!(tables.vrf(VrfId(2)).is_some());
    let vtep = Ipv4Addr::from(VTEP);
    assert_eq!(
        tables.tunnel_for(VrfId(0), vtep, 0x00ff_ffff).map(|p| p.id),
        Some(PortId(7))
    );
    assert_eq!(
        tables.tunnel_for(VrfId(0), vtep, 200).map(|p| p.id),
        Some(PortId(8))
    );
    // A tunnel on p4 (MTU 576) defaults to 526.
    let params = VxlanParams {
        local: Ipv4Addr::new(10, 0, 4, 1),
        uplink: PortId(4),
        ..vni(300)
    };
    tables
        .apply_batch(&[add_vxlan(9, "vx9", 1, params)])
        .expect("tunnel on p4");
    assert_eq!(tables.port(PortId(9)).expect("vx9").mtu, 526);
    assert!(tables.is_vtep(VrfId(0), Ipv4Addr::new(10, 0, 4, 1)));
    check_references(&tables);
}

#[test]
fn uplink_and_vtep_address_cannot_go_while_the_tunnel_exists() {
    let mut tables = vxlan_lab_tables(lab_vxlan_params());
    let error = expect_rejected_at(&mut tables, &[TableOp::DelPort { id: PortId(1) }], 0);
    assert!(
        matches!(&error, TableError::UsedByTunnel { tunnel, .. } if tunnel == "vxlan100"),
        "{error:?}"
    );
    let error = expect_rejected_at(
        &mut tables,
        &[TableOp::DelAddress {
            port: PortId(1),
            address: iface("10.0.1.1/24"),
        }],
        0,
    );
    assert!(
        matches!(error, TableError::UsedByTunnel { .. }),
        "{error:?}"
    );
    // Other addresses of the uplink may go.
    tables
        .apply_batch(&[TableOp::DelAddress {
            port: PortId(1),
            address: iface("2001:db8:1::1/64"),
        }])
        .expect("other address");
    // Tunnel first, then the uplink, in one batch.
    tables
        .apply_batch(&[
            TableOp::DelPort { id: PortId(TUNNEL) },
            TableOp::DelPort { id: PortId(1) },
        ])
        .expect("tunnel then uplink");
    assert!(!tables.is_vtep(VrfId(0), Ipv4Addr::from(VTEP)));
    check_references(&tables);
}

#[test]
fn del_tunnel_removes_its_routes_and_decapsulation() {
    let mut tables = vxlan_lab_tables(lab_vxlan_params());
    let generation = tables.generation();
    let next_hops = tables.next_hops().len();
    tables
        .apply_batch(&[TableOp::DelPort { id: PortId(TUNNEL) }])
        .expect("del tunnel");
    assert_eq!(tables.generation(), generation + 1);
    assert!(tables.port(PortId(TUNNEL)).is_none());
    for p in [
        "10.244.2.0/24",
        "fd00:244:2::/64",
        "10.244.3.0/24",
        "10.244.4.0/24",
        "10.244.5.0/24",
    ] {
        assert_eq!(overlay_route(&tables, p), None, "{p}");
    }
    // p5's routes stay.
    assert_eq!(
        overlay_route(&tables, "10.244.1.0/24"),
        Some(NextHop::Connected { port: PortId(P5) })
    );
    assert_eq!(
        tables.next_hops().len(),
        next_hops - 4,
        "the four remote next hops are freed"
    );
    assert!(!tables.is_vtep(VrfId(0), Ipv4Addr::from(VTEP)));
    assert!(tables.tunnel_by_vni(VNI).is_none());
    check_references(&tables);
    // The VNI and the name are free again.
    tables
        .apply_batch(&[add_vxlan(TUNNEL, "vxlan100", 1, vni(VNI))])
        .expect("re-added");
    assert!(tables.is_vtep(VrfId(0), Ipv4Addr::from(VTEP)));
    check_references(&tables);
}

#[test]
fn routes_through_a_tunnel_need_a_vxlan_target() {
    let mut tables = vxlan_lab_tables(lab_vxlan_params());
    let kind = |error: TableError| matches!(error, TableError::WrongPortKind { .. });
    let bad = [
        RouteTarget::Dev {
            port: PortId(TUNNEL),
        },
        RouteTarget::Via {
            gateway: "10.244.2.1".parse().expect("ip"),
            port: Some(PortId(TUNNEL)),
        },
        RouteTarget::Multipath(vec![
            RouteTarget::Dev { port: PortId(P5) },
            RouteTarget::Dev {
                port: PortId(TUNNEL),
            },
        ]),
    ];
    for target in bad {
        let error = expect_rejected_at(
            &mut tables,
            &[route_in(OVERLAY, "10.250.0.0/16", target.clone())],
            0,
        );
        assert!(kind(error.clone()), "{target:?}: {error:?}");
    }
    // A vxlan target naming an Ethernet port.
    let error = expect_rejected_at(
        &mut tables,
        &[route_in(
            OVERLAY,
            "10.250.0.0/16",
            vxlan_target(P5, REMOTE_VTEP, None),
        )],
        0,
    );
    assert!(kind(error.clone()), "{error:?}");
    // A vxlan target in another VRF than the tunnel's.
    let error = expect_rejected_at(
        &mut tables,
        &[route(
            "10.250.0.0/16",
            vxlan_target(TUNNEL, REMOTE_VTEP, None),
        )],
        0,
    );
    assert!(
        matches!(error, TableError::PortInOtherVrf { .. }),
        "{error:?}"
    );
    // An unknown tunnel.
    let error = expect_rejected_at(
        &mut tables,
        &[route_in(
            OVERLAY,
            "10.250.0.0/16",
            vxlan_target(40, REMOTE_VTEP, None),
        )],
        0,
    );
    assert!(matches!(error, TableError::UnknownPort(_)), "{error:?}");
    // Bad remote VTEPs and inner MACs.
    for remote in [
        [0, 0, 0, 0],
        [255, 255, 255, 255],
        [224, 0, 0, 1],
        [127, 0, 0, 1],
    ] {
        let error = expect_rejected_at(
            &mut tables,
            &[route_in(
                OVERLAY,
                "10.250.0.0/16",
                vxlan_target(TUNNEL, remote, None),
            )],
            0,
        );
        assert_eq!(error, TableError::BadRemoteVtep(Ipv4Addr::from(remote)));
    }
    for mac in [[0x01, 0, 0x5e, 0, 0, 1], [0xff; 6], [0; 6]] {
        let error = expect_rejected_at(
            &mut tables,
            &[route_in(
                OVERLAY,
                "10.250.0.0/16",
                vxlan_target(TUNNEL, REMOTE_VTEP, Some(mac)),
            )],
            0,
        );
        assert_eq!(error, TableError::BadMac(ea(mac)));
    }
    // Not an ECMP member.
    let error = expect_rejected_at(
        &mut tables,
        &[route_in(
            OVERLAY,
            "10.250.0.0/16",
            RouteTarget::Multipath(vec![
                vxlan_target(TUNNEL, REMOTE_VTEP, None),
                vxlan_target(TUNNEL, FAR_VTEP, None),
            ]),
        )],
        0,
    );
    assert_eq!(error, TableError::BadMultipath);
    // A gateway is never resolved onto a tunnel, even one with an address.
    tables
        .apply_batch(&[TableOp::AddAddress {
            port: PortId(TUNNEL),
            address: iface("10.245.1.0/32"),
        }])
        .expect("host address");
    let error = expect_rejected_at(
        &mut tables,
        &[route_in(OVERLAY, "10.250.0.0/16", via("10.245.1.0"))],
        0,
    );
    assert!(
        matches!(error, TableError::GatewayUnreachable(_)),
        "{error:?}"
    );
}

#[test]
fn tunnels_take_host_addresses_only() {
    let mut tables = vxlan_lab_tables(lab_vxlan_params());
    for address in [
        "10.245.1.1/24",
        "10.245.1.1/31",
        "fd00:245::1/64",
        "fd00:245::1/127",
    ] {
        let error = expect_rejected_at(
            &mut tables,
            &[TableOp::AddAddress {
                port: PortId(TUNNEL),
                address: iface(address),
            }],
            0,
        );
        assert!(
            matches!(error, TableError::WrongPortKind { .. }),
            "{address}: {error:?}"
        );
    }
    tables
        .apply_batch(&[
            TableOp::AddAddress {
                port: PortId(TUNNEL),
                address: iface("10.245.1.0/32"),
            },
            TableOp::AddAddress {
                port: PortId(TUNNEL),
                address: iface("fd00:245::1/128"),
            },
        ])
        .expect("host addresses");
    assert_eq!(
        overlay_route(&tables, "10.245.1.0/32"),
        Some(NextHop::Receive),
        "a receive route, no connected one"
    );
    assert_eq!(
        overlay_route(&tables, "fd00:245::1/128"),
        Some(NextHop::Receive)
    );
    check_references(&tables);
    tables
        .apply_batch(&[TableOp::DelAddress {
            port: PortId(TUNNEL),
            address: iface("10.245.1.0/32"),
        }])
        .expect("del host address");
    assert_eq!(overlay_route(&tables, "10.245.1.0/32"), None);
    check_references(&tables);
}

#[test]
fn failed_batches_with_tunnels_change_nothing() {
    let mut tables = vxlan_lab_tables(lab_vxlan_params());
    let cases: Vec<Vec<TableOp>> = vec![
        // A new tunnel and its route, then a failure.
        vec![
            add_vxlan(7, "vx7", 2, vni(200)),
            route_in(VrfId(2), "10.9.0.0/16", vxlan_target(7, REMOTE_VTEP, None)),
            TableOp::DelPort { id: PortId(42) },
        ],
        // The tunnel and its uplink removed, then a failure.
        vec![
            TableOp::DelPort { id: PortId(TUNNEL) },
            TableOp::DelPort { id: PortId(1) },
            TableOp::DelPort { id: PortId(42) },
        ],
        // The tunnel removed and re-added with another VNI and VTEP uplink, then a failure.
        vec![
            TableOp::DelPort { id: PortId(TUNNEL) },
            add_vxlan(
                TUNNEL,
                "vxlan100",
                1,
                VxlanParams {
                    local: Ipv4Addr::new(10, 0, 3, 1),
                    uplink: PortId(3),
                    ..vni(101)
                },
            ),
            add_vxlan(7, "vx7", 1, vni(101)), // duplicate VNI
        ],
        // A second tunnel, then the uplink deleted (refused: used by both).
        vec![
            add_vxlan(7, "vx7", 1, vni(200)),
            TableOp::DelPort { id: PortId(TUNNEL) },
            TableOp::DelPort { id: PortId(1) },
        ],
    ];
    for ops in cases {
        expect_rejected_at(&mut tables, &ops, 2);
        check_references(&tables);
        assert_eq!(
            tables
                .tunnel_for(VrfId(0), Ipv4Addr::from(VTEP), VNI)
                .map(|p| p.id),
            Some(PortId(TUNNEL))
        );
        assert!(!tables.is_vtep(VrfId(0), Ipv4Addr::new(10, 0, 3, 1)));
        assert!(tables.port(PortId(7)).is_none());
    }
}
