//! `vrf-small`: memory of `Tables` holding small VRFs, the common case of a node with many
//! tenants: one VRF with one port, its address and 10 routes via a gateway; then 1000 such
//! VRFs (each with its own port, as a VRF needs a port for its gateway to be reachable).
//!
//! Reported twice: what `Tables::memory_bytes` says, and the heap the tables really hold
//! (the counting allocator's live bytes before and after building them).

use super::gen::{v4_prefixes, Rng};
use super::report::{ScenarioResult, TargetCheck};
use crate::alloc;
use pipelines::lpm::Ipv4Prefix;
use pipelines::tables::{InterfaceAddress, RouteTarget};
use pipelines::wire::EthernetAddress;
use pipelines::{IpPrefix, PortId, TableOp, Tables, VrfId};
use std::net::{IpAddr, Ipv4Addr};

/// Routes per VRF.
const ROUTES_PER_VRF: usize = 10;
/// VRFs in the large variant.
const MANY_VRFS: usize = 1000;

/// The ops creating `vrfs` VRFs `0..vrfs`, VRF `v` with port `v` (address 10.x.y.1/24 from
/// `v`) and [`ROUTES_PER_VRF`] routes via 10.x.y.2.
fn ops(vrfs: usize, rng: &mut Rng) -> Vec<TableOp> {
    let mut ops = Vec::new();
    for v in 0..vrfs {
        let (hi, lo) = ((v >> 8) as u8, (v & 0xff) as u8);
        let port = PortId(v as u16);
        let vrf = VrfId(v as u32);
        ops.push(TableOp::AddPort {
            id: port,
            name: format!("vrf{v}"),
            mac: EthernetAddress([0x02, 0, 0, 1, hi, lo]),
            mtu: 1500,
            vrf,
        });
        ops.push(TableOp::AddAddress {
            port,
            address: InterfaceAddress {
                addr: IpAddr::V4(Ipv4Addr::new(10, hi, lo, 1)),
                prefix_len: 24,
            },
        });
        let gateway = IpAddr::V4(Ipv4Addr::new(10, hi, lo, 2));
        for prefix in v4_prefixes(ROUTES_PER_VRF, rng) {
            ops.push(route(vrf, prefix, gateway, port));
        }
    }
    ops
}

fn route(vrf: VrfId, prefix: Ipv4Prefix, gateway: IpAddr, port: PortId) -> TableOp {
    TableOp::AddRoute {
        vrf,
        prefix: IpPrefix::V4(prefix),
        target: RouteTarget::Via {
            gateway,
            port: Some(port),
        },
        replace: false,
    }
}

/// Builds tables from `ops`; returns them with the heap they hold.
fn build(ops: &[TableOp]) -> Result<(Tables, usize), String> {
    let before = alloc::live_bytes();
    let mut tables = Tables::new();
    tables
        .apply_batch(ops)
        .map_err(|e| format!("vrf-small: building the tables failed: {e}"))?;
    let heap = alloc::live_bytes().saturating_sub(before);
    Ok((tables, heap))
}

/// Runs the scenario.
pub fn run() -> Result<ScenarioResult, String> {
    let mut rng = Rng::new(0x0f0f_5a11);
    let one_ops = ops(1, &mut rng);
    let (one, one_heap) = build(&one_ops)?;
    let many_ops = ops(MANY_VRFS, &mut rng);
    let (many, many_heap) = build(&many_ops)?;
    let check = |tables: &Tables, vrfs: usize| {
        let routes: usize = (0..vrfs)
            .map(|v| tables.vrf(VrfId(v as u32)).map_or(0, |t| t.route_count()))
            .sum();
        // Each VRF: the 10 routes plus connected, receive and broadcast routes of its address.
        if routes < vrfs * ROUTES_PER_VRF {
            return Err(format!("vrf-small: {routes} routes in {vrfs} VRFs"));
        }
        Ok(())
    };
    check(&one, 1)?;
    check(&many, MANY_VRFS)?;
    let one_bytes = one.memory_bytes();
    let mut result = ScenarioResult {
        scenario: "vrf-small",
        description: format!(
            "memory of Tables with 1 VRF (1 port, 1 address, {ROUTES_PER_VRF} routes via a \
             gateway) and with {MANY_VRFS} such VRFs; no packets"
        ),
        routes: Some(ROUTES_PER_VRF),
        table_bytes: one_bytes,
        table_heap_bytes: Some(one_heap),
        many_vrfs: Some(MANY_VRFS),
        many_vrfs_table_bytes: Some(many.memory_bytes()),
        many_vrfs_heap_bytes: Some(many_heap),
        ..ScenarioResult::default()
    };
    // "Well under 1 MB": checked against the larger of the two figures, at 1 MiB.
    result.targets.push(TargetCheck::at_most(
        "bytes_one_small_vrf",
        1_048_576.0,
        one_bytes.max(one_heap) as f64,
    ));
    Ok(result)
}
