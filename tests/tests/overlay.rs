//! VXLAN overlay end to end (issue 4): nodes joined by an underlay bridge, each node a
//! namespace running its own `vrouter` and `vrouter-control` (or plain Linux with a flannel-style
//! `flannel.1` vxlan device), pods in namespaces of their own behind the nodes. Real ping,
//! iperf3 and tcpdump. Needs root (skips visibly otherwise, fails in CI).
//!
//! ```text
//!   pod1a  pod1b         pod2a               pod3a
//!     |      |             |                   |
//!   [node1: vrouter]   [node2: vrouter]   [node3: vrouter | Linux flannel.1 + cni0]
//!        eth0 192.168.100.1   eth0 .2            eth0 .3       (VTEPs, VRF 0)
//!          \____________________|___________________/
//!                       underlay: bridge br0
//! ```
//! - Pods are in VRF 1 on the vrouter nodes. Node N's pod k (0-based) has 10.244.N.(2+128k)/25
//!   behind gateway 10.244.N.(1+128k) and fd00:244:N:k::2/64 behind fd00:244:N:k::1 (one port,
//!   one subnet per pod). On a Linux node, pods sit on bridge cni0 (10.244.N.1/24), IPv4 only.
//! - VNI 100 maps to VRF 1 on every vrouter node; routes in VRF 1 send 10.244.M.0/24 and
//!   fd00:244:M::/48 to remote VTEP 192.168.100.M (with the inner MAC of flannel.1 for a Linux
//!   node). A Linux node routes `10.244.N.0/24 via 10.244.N.0 dev flannel.1 onlink` with a
//!   permanent neighbor and an fdb entry for our node's inner MAC, as flannel does.
//! - Generators (iperf3) run on CPU 0, every vrouter worker on CPU 1 in adaptive idle mode.
//!
//! Tests run one at a time (a lock): each starts up to three nodes and the machine has 2 CPUs.
//! When a test fails, every node's counters, drops, VXLAN table, routes and neighbors (or the
//! Linux node's flannel.1, neighbors and fdb) are printed before the lab is torn down.

use std::sync::Mutex;
use std::time::Duration;
use vrouter_tests::{
    iperf3_client, iperf3_server_on, parse_vxlan_capture, ping, ping_with, require_root, tcpdump,
    wait_until, IperfOptions, Lab, Netns, Node, PingOptions, UdpChecksum, VxlanPacket,
};

static SERIAL: Mutex<()> = Mutex::new(());

const VNI: u32 = 100;
/// The underlay interface of every node (its veth into the underlay bridge).
const UPLINK: &str = "eth0";
/// VRF of the pods (and of the VNI) on vrouter nodes.
const POD_VRF: &str = "1";
/// Overlay MTU: the underlay's 1500 minus 50 bytes of VXLAN/UDP/IPv4/Ethernet headers.
const OVERLAY_MTU: u32 = 1450;
/// CPU for traffic generators; vrouter workers use CPU 1 (the `Node` default).
const GENERATOR_CPU: u32 = 0;

fn vtep(index: u8) -> String {
    format!("192.168.100.{index}")
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Vrouter,
    Linux,
}

/// What one node of the lab should be.
struct NodeSpec {
    kind: Kind,
    pods: u8,
    /// `mac` option of `vxlan add` (vrouter nodes); `None` = default (the uplink's MAC).
    vxlan_mac: Option<&'static str>,
    /// More options of `vxlan add` (vrouter nodes), e.g. `["udpcsum", "ttl", "32"]`.
    vxlan_options: &'static [&'static str],
    /// Linux nodes: leave TX checksum offload on the uplink veth on (the veth default). The
    /// kernel then sends VXLAN packets whose inner TCP/UDP checksum is still partial and whose
    /// outer UDP checksum is computed as if it were complete (local checksum offload): only a
    /// receiver that gets the skb's metadata (the kernel behind a veth) accepts them as they
    /// are. With it off, the kernel completes every checksum before the wire, as a real NIC
    /// would.
    uplink_tx_offload: bool,
}

impl NodeSpec {
    fn vrouter(pods: u8) -> NodeSpec {
        NodeSpec {
            kind: Kind::Vrouter,
            pods,
            vxlan_mac: None,
            vxlan_options: &[],
            uplink_tx_offload: true,
        }
    }

    fn linux(pods: u8, uplink_tx_offload: bool) -> NodeSpec {
        NodeSpec {
            kind: Kind::Linux,
            uplink_tx_offload,
            ..NodeSpec::vrouter(pods)
        }
    }

    fn mac(self, mac: &'static str) -> NodeSpec {
        NodeSpec {
            vxlan_mac: Some(mac),
            ..self
        }
    }

    fn options(self, options: &'static [&'static str]) -> NodeSpec {
        NodeSpec {
            vxlan_options: options,
            ..self
        }
    }
}

struct Pod {
    ns: Netns,
    v4: String,
    v6: Option<String>,
}

struct OverlayNode {
    index: u8,
    kind: Kind,
    ns: Netns,
    /// The vrouter processes (vrouter nodes only).
    vrouter: Option<Node>,
    pods: Vec<Pod>,
    /// MAC that this node's overlay endpoint answers to (inner destination MAC for it).
    inner_mac: String,
}

impl OverlayNode {
    fn vrouter(&self) -> &Node {
        self.vrouter
            .as_ref()
            .unwrap_or_else(|| panic!("node{} is not a vrouter node", self.index))
    }
}

struct Overlay {
    nodes: Vec<OverlayNode>,
    underlay: Netns,
    // Last: dropping the lab stops the processes and removes the namespaces.
    lab: Lab,
}

impl Overlay {
    fn node(&self, index: u8) -> &OverlayNode {
        &self.nodes[usize::from(index) - 1]
    }

    fn pod(&self, node: u8, pod: usize) -> &Pod {
        &self.node(node).pods[pod]
    }

    /// Every node's view, for a failing test.
    fn dump(&self) {
        eprintln!("==== overlay lab {} state", self.lab.prefix());
        for node in &self.nodes {
            eprintln!("---- node{} ({:?})", node.index, node.kind);
            match &node.vrouter {
                Some(vr) => {
                    for args in [
                        &["vxlan", "list"][..],
                        &["stats"],
                        &["drops", "all"],
                        &["port", "list"],
                        &["route", "list", "vrf", POD_VRF],
                        &["route", "list"],
                        &["neigh", "list"],
                    ] {
                        match vr.ctl(args) {
                            Ok(out) => eprintln!(
                                "-- vrouterctl {} (exit {}):\n{}{}",
                                args.join(" "),
                                out.code,
                                out.stdout,
                                out.stderr
                            ),
                            Err(e) => eprintln!("-- vrouterctl {}: {e}", args.join(" ")),
                        }
                    }
                }
                None => {
                    for args in [
                        &["-d", "link", "show", "flannel.1"][..],
                        &["route"],
                        &["neigh"],
                        &["-s", "link"],
                    ] {
                        eprintln!(
                            "-- ip {}:\n{}",
                            args.join(" "),
                            node.ns.ip(args).unwrap_or_else(|e| e.to_string())
                        );
                    }
                    eprintln!(
                        "-- bridge fdb show dev flannel.1:\n{}",
                        node.ns
                            .run("bridge", &["fdb", "show", "dev", "flannel.1"])
                            .unwrap_or_else(|e| e.to_string())
                    );
                }
            }
        }
        eprintln!(
            "---- underlay ip -s link:\n{}",
            self.underlay
                .ip(&["-s", "link"])
                .unwrap_or_else(|e| e.to_string())
        );
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump();
        }
    }
}

/// Builds the lab: underlay bridge, nodes, pods, VXLAN and routes; waits until the first pod
/// of node 1 reaches the first pod of every other node.
fn overlay(specs: &[NodeSpec], pod_mtu: u32) -> Overlay {
    let lab = Lab::new().expect("lab");
    let underlay = lab.netns("ul").expect("underlay namespace");
    lab.bridge(&underlay, "br0").expect("underlay bridge");
    let mut nodes = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let index = u8::try_from(i + 1).unwrap();
        let ns = lab.netns(&format!("node{index}")).expect("node namespace");
        let ul_end = format!("n{index}");
        lab.veth(&ns, UPLINK, Some(&underlay), &ul_end)
            .expect("uplink veth");
        underlay.link_set_master(&ul_end, "br0").unwrap();
        let node = match spec.kind {
            Kind::Vrouter => vrouter_node(&lab, ns, index, spec, pod_mtu),
            Kind::Linux => linux_node(&lab, ns, index, spec, pod_mtu),
        };
        nodes.push(node);
    }
    let overlay = Overlay {
        nodes,
        underlay,
        lab,
    };
    connect(&overlay);
    let first = &overlay.pod(1, 0).ns;
    for node in overlay.nodes.iter().skip(1) {
        let dst = node.pods[0].v4.clone();
        let reachable = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
            ping(
                first,
                &dst,
                1,
                Duration::from_millis(200),
                Duration::from_millis(500),
            )
            .is_ok_and(|r| r.received == 1)
        });
        assert!(
            reachable,
            "pod1a never reached {dst} (node{}) across the overlay",
            node.index
        );
    }
    overlay
}

/// A pod namespace `pod<N><a|b|..>` behind a veth whose node end is `node_end`, both ends with
/// `mtu`.
fn pod_ns(lab: &Lab, node_ns: &Netns, name: &str, node_end: &str, mtu: u32) -> Netns {
    let pod = lab.netns(name).expect("pod namespace");
    lab.veth(node_ns, node_end, Some(&pod), "eth0")
        .expect("pod veth");
    node_ns.set_mtu(node_end, mtu).unwrap();
    pod.set_mtu("eth0", mtu).unwrap();
    pod
}

fn vrouter_node(lab: &Lab, ns: Netns, index: u8, spec: &NodeSpec, pod_mtu: u32) -> OverlayNode {
    let mut pods = Vec::new();
    let mut ports = Vec::new();
    for k in 0..spec.pods {
        let letter = char::from(b'a' + k);
        let port = format!("p{index}{letter}");
        let pod = pod_ns(lab, &ns, &format!("pod{index}{letter}"), &port, pod_mtu);
        let base = 128 * u32::from(k);
        let v4 = format!("10.244.{index}.{}", base + 2);
        let gw4 = format!("10.244.{index}.{}", base + 1);
        let v6 = format!("fd00:244:{index}:{k}::2");
        let gw6 = format!("fd00:244:{index}:{k}::1");
        pod.addr_add("eth0", &format!("{v4}/25")).unwrap();
        // No duplicate address detection: the address is usable at once.
        pod.ip(&["addr", "add", &format!("{v6}/64"), "dev", "eth0", "nodad"])
            .unwrap();
        pod.route_add("default", &gw4).unwrap();
        pod.ip(&["-6", "route", "add", "default", "via", &gw6])
            .unwrap();
        ports.push((port, format!("{gw4}/25"), format!("{gw6}/64")));
        pods.push(Pod {
            ns: pod,
            v4,
            v6: Some(v6),
        });
    }
    let mut node = Node::new(lab, &ns, &format!("node{index}")).unwrap();
    node.start_vrouter().expect("vrouter starts");
    node.start_daemon(None).expect("vrouter-control starts");
    let uplink_addr = format!("{}/24", vtep(index));
    node.ctl_ok(&["port", "add", UPLINK, "addr", &uplink_addr])
        .unwrap();
    for (port, gw4, gw6) in &ports {
        node.ctl_ok(&[
            "port", "add", port, "vrf", POD_VRF, "addr", gw4, "addr", gw6,
        ])
        .unwrap();
    }
    let vni = VNI.to_string();
    let local = vtep(index);
    let mut args = vec![
        "vxlan", "add", &vni, "vrf", POD_VRF, "local", &local, "dev", UPLINK,
    ];
    if let Some(mac) = spec.vxlan_mac {
        args.extend(["mac", mac]);
    }
    args.extend_from_slice(spec.vxlan_options);
    node.ctl_ok(&args).unwrap();
    let inner_mac = match spec.vxlan_mac {
        Some(mac) => mac.to_string(),
        // Default: the uplink port's MAC, which is the interface's.
        None => ns.mac(UPLINK).unwrap(),
    };
    OverlayNode {
        index,
        kind: Kind::Vrouter,
        ns,
        vrouter: Some(node),
        pods,
        inner_mac,
    }
}

/// A plain Linux node configured as flannel's VXLAN backend does it.
fn linux_node(lab: &Lab, ns: Netns, index: u8, spec: &NodeSpec, pod_mtu: u32) -> OverlayNode {
    let local = vtep(index);
    ns.addr_add(UPLINK, &format!("{local}/24")).unwrap();
    if !spec.uplink_tx_offload {
        // As a real NIC delivers them: checksums complete on the wire (see NodeSpec).
        ns.ethtool_offload(UPLINK, "tx", false).unwrap();
    }
    let vni = VNI.to_string();
    ns.ip(&[
        "link",
        "add",
        "flannel.1",
        "type",
        "vxlan",
        "id",
        &vni,
        "local",
        &local,
        "dev",
        UPLINK,
        "dstport",
        "4789",
        "nolearning",
    ])
    .unwrap();
    ns.set_mtu("flannel.1", OVERLAY_MTU).unwrap();
    ns.link_up("flannel.1").unwrap();
    ns.addr_add("flannel.1", &format!("10.244.{index}.0/32"))
        .unwrap();
    ns.sysctl("net.ipv4.ip_forward", "1").unwrap();
    lab.bridge(&ns, "cni0").unwrap();
    ns.addr_add("cni0", &format!("10.244.{index}.1/24"))
        .unwrap();
    let mut pods = Vec::new();
    for k in 0..spec.pods {
        let letter = char::from(b'a' + k);
        let node_end = format!("veth{index}{letter}");
        let pod = pod_ns(lab, &ns, &format!("pod{index}{letter}"), &node_end, pod_mtu);
        ns.link_set_master(&node_end, "cni0").unwrap();
        let v4 = format!("10.244.{index}.{}", 2 + k);
        pod.addr_add("eth0", &format!("{v4}/24")).unwrap();
        pod.route_add("default", &format!("10.244.{index}.1"))
            .unwrap();
        pods.push(Pod {
            ns: pod,
            v4,
            v6: None,
        });
    }
    let inner_mac = ns.mac("flannel.1").unwrap();
    OverlayNode {
        index,
        kind: Kind::Linux,
        ns,
        vrouter: None,
        pods,
        inner_mac,
    }
}

/// Routes between every pair of nodes: `route add ... vxlan` on vrouter nodes, flannel's
/// route + permanent neighbor + fdb entry on Linux nodes.
fn connect(overlay: &Overlay) {
    let vni = VNI.to_string();
    for node in &overlay.nodes {
        for remote in overlay.nodes.iter().filter(|r| r.index != node.index) {
            let m = remote.index;
            let remote_vtep = vtep(m);
            match &node.vrouter {
                Some(vr) => {
                    let v4 = format!("10.244.{m}.0/24");
                    let mut args = vec!["route", "add", &v4, "vxlan", &vni, "remote", &remote_vtep];
                    if remote.kind == Kind::Linux {
                        args.extend(["mac", remote.inner_mac.as_str()]);
                    }
                    args.extend(["vrf", POD_VRF]);
                    vr.ctl_ok(&args).unwrap();
                    if remote.kind == Kind::Vrouter {
                        let v6 = format!("fd00:244:{m}::/48");
                        vr.ctl_ok(&[
                            "route",
                            "add",
                            &v6,
                            "vxlan",
                            &vni,
                            "remote",
                            &remote_vtep,
                            "vrf",
                            POD_VRF,
                        ])
                        .unwrap();
                    }
                }
                None => {
                    let gw = format!("10.244.{m}.0");
                    node.ns
                        .ip(&[
                            "route",
                            "add",
                            &format!("10.244.{m}.0/24"),
                            "via",
                            &gw,
                            "dev",
                            "flannel.1",
                            "onlink",
                        ])
                        .unwrap();
                    node.ns
                        .ip(&[
                            "neigh",
                            "replace",
                            &gw,
                            "lladdr",
                            &remote.inner_mac,
                            "dev",
                            "flannel.1",
                            "nud",
                            "permanent",
                        ])
                        .unwrap();
                    node.ns
                        .run(
                            "bridge",
                            &[
                                "fdb",
                                "append",
                                &remote.inner_mac,
                                "dst",
                                &remote_vtep,
                                "dev",
                                "flannel.1",
                            ],
                        )
                        .unwrap();
                }
            }
        }
    }
}

/// `count` pings from `from` to `to`; all must be answered.
fn ping_all(from: &Pod, to: &str, count: u32) {
    let r = ping(
        &from.ns,
        to,
        count,
        Duration::from_millis(100),
        Duration::from_secs(1),
    )
    .unwrap();
    assert_eq!(
        r.received,
        count,
        "ping {} -> {to}: {}",
        from.ns.name(),
        r.output
    );
}

/// Short iperf3 TCP run `from` -> `to` (client on the generator CPU); at least 20 Mbit/s.
fn tcp(from: &Pod, to: &Pod, port: u16, what: &str) -> f64 {
    let _server = iperf3_server_on(&to.ns, port, Some(GENERATOR_CPU)).unwrap();
    let r = iperf3_client(
        &from.ns,
        &to.v4,
        port,
        IperfOptions {
            seconds: 2,
            cpu: Some(GENERATOR_CPU),
            ..IperfOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("iperf3 {what}: {e}"));
    let mbps = r.bits_per_second / 1e6;
    eprintln!(
        "TCP {what} ({} -> {}): {mbps:.0} Mbit/s, {} retransmits",
        from.v4,
        to.v4,
        r.retransmits.unwrap_or(0)
    );
    assert!(mbps > 20.0, "TCP {what}: {mbps:.1} Mbit/s");
    mbps
}

/// The remote-VTEP entries of `vxlan list -j` on `node`, by remote address: (rx, tx) packets.
/// Walks the JSON for objects that name the remote and carry rx/tx packet counters.
fn remote_counters(node: &Node, remote: &str) -> Option<(u64, u64)> {
    let json = node.ctl_json(&["vxlan", "list"]).unwrap();
    fn walk(v: &serde_json::Value, remote: &str) -> Option<(u64, u64)> {
        match v {
            serde_json::Value::Object(map) => {
                let names_remote = map.values().any(|x| x.as_str() == Some(remote));
                let counter = |prefix: &str| {
                    map.get(&format!("{prefix}_packets"))
                        .and_then(serde_json::Value::as_u64)
                };
                if names_remote {
                    if let (Some(rx), Some(tx)) = (counter("rx"), counter("tx")) {
                        return Some((rx, tx));
                    }
                }
                map.values().find_map(|x| walk(x, remote))
            }
            serde_json::Value::Array(list) => list.iter().find_map(|x| walk(x, remote)),
            _ => None,
        }
    }
    walk(&json, remote)
}

fn assert_remote_counters(node: &OverlayNode, remote: u8) {
    let vr = node.vrouter();
    // Counters are published every 100 ms.
    let remote_ip = vtep(remote);
    let mut last = None;
    let ok = wait_until(Duration::from_secs(2), Duration::from_millis(100), || {
        last = remote_counters(vr, &remote_ip);
        last.is_some_and(|(rx, tx)| rx > 0 && tx > 0)
    });
    assert!(
        ok,
        "node{}: remote VTEP {remote_ip}: rx/tx {last:?} in {}",
        node.index,
        vr.ctl_ok(&["-j", "vxlan", "list"]).unwrap_or_default()
    );
}

#[test]
fn three_vrouter_nodes_pod_to_pod_both_ways_ipv4_ipv6_and_counters() {
    if !require_root("three_vrouter_nodes_pod_to_pod_both_ways_ipv4_ipv6_and_counters") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let o = overlay(
        &[
            NodeSpec::vrouter(2).mac("0e:00:00:00:64:01"),
            NodeSpec::vrouter(1),
            NodeSpec::vrouter(1),
        ],
        OVERLAY_MTU,
    );
    // IPv4 across nodes, every ordered pair of nodes, and within node 1.
    for (from, to) in [
        ((1, 0), (2, 0)),
        ((2, 0), (1, 0)),
        ((1, 1), (3, 0)),
        ((3, 0), (1, 1)),
        ((2, 0), (3, 0)),
        ((3, 0), (2, 0)),
        ((1, 0), (1, 1)),
        ((1, 1), (1, 0)),
    ] {
        let dst = o.pod(to.0, to.1).v4.clone();
        ping_all(o.pod(from.0, from.1), &dst, 4);
    }
    // IPv6 inner over the IPv4 underlay.
    for (from, to) in [((1, 0), (2, 0)), ((2, 0), (1, 0)), ((3, 0), (1, 1))] {
        let dst = o.pod(to.0, to.1).v6.clone().unwrap();
        ping_all(o.pod(from.0, from.1), &dst, 4);
    }
    // A ping that fills the overlay MTU exactly (1450-byte IP packets), DF set.
    let fits = ping_with(
        &o.pod(1, 0).ns,
        &o.pod(2, 0).v4,
        PingOptions {
            count: 3,
            size: Some(OVERLAY_MTU - 28),
            dont_fragment: true,
            ..PingOptions::default()
        },
    )
    .unwrap();
    assert_eq!(fits.received, 3, "{}", fits.output);
    // TCP across nodes, both directions, and within a node.
    tcp(o.pod(1, 0), o.pod(2, 0), 5201, "node1 -> node2");
    tcp(o.pod(2, 0), o.pod(1, 0), 5202, "node2 -> node1");
    tcp(o.pod(3, 0), o.pod(1, 1), 5203, "node3 -> node1");
    tcp(o.pod(1, 0), o.pod(1, 1), 5204, "within node1");
    // Pods that checksum in software (TX offload off) go through the same way.
    for (node, pod) in [(1, 0), (2, 0)] {
        o.pod(node, pod)
            .ns
            .ethtool_offload("eth0", "tx", false)
            .unwrap();
    }
    tcp(
        o.pod(1, 0),
        o.pod(2, 0),
        5205,
        "node1 -> node2, tx offload off",
    );
    // Every vrouter counted traffic to and from each remote VTEP.
    for (node, remote) in [(1, 2), (1, 3), (2, 1), (2, 3), (3, 1), (3, 2)] {
        assert_remote_counters(o.node(node), remote);
    }
}

/// Captures VXLAN on `ifname` of the underlay (`n<N>`: node N's uplink, seen from the bridge)
/// while `traffic` runs; at most `count` packets.
fn capture_vxlan(
    o: &Overlay,
    ifname: &str,
    count: u32,
    traffic: impl FnOnce(),
) -> (String, Vec<VxlanPacket>) {
    let capture = tcpdump(&o.underlay, ifname, count, &["udp", "port", "4789"]).unwrap();
    traffic();
    let text = capture.finish(Duration::from_secs(5));
    let packets = parse_vxlan_capture(&text);
    (text, packets)
}

/// The packets `from` -> `to` of a capture; checks what every VXLAN packet of ours must have:
/// UDP port 4789, exactly the I flag, our VNI, the expected outer UDP checksum and correct inner
/// checksums.
fn check_our_packets<'a>(
    text: &str,
    packets: &'a [VxlanPacket],
    from: &str,
    to: &str,
    udp_checksum: UdpChecksum,
) -> Vec<&'a VxlanPacket> {
    let ours: Vec<&VxlanPacket> = packets
        .iter()
        .filter(|p| p.outer_src.to_string() == from && p.outer_dst.to_string() == to)
        .collect();
    assert!(
        !ours.is_empty(),
        "no VXLAN packet {from} -> {to} captured:\n{text}"
    );
    for p in &ours {
        assert_eq!(p.dst_port, 4789, "{}", p.text);
        assert_eq!(p.vxlan_flags, Some(0x08), "{}", p.text);
        assert_eq!(p.vni, Some(VNI), "{}", p.text);
        assert_eq!(
            p.udp_checksum, udp_checksum,
            "outer UDP checksum: {}",
            p.text
        );
        let errors = p.inner_checksum_errors();
        assert!(
            errors.is_empty(),
            "bad inner checksum in {from} -> {to}: {errors:?}\n{}",
            p.text
        );
    }
    ours
}

#[test]
fn linux_vxlan_node_interoperates_both_ways_with_a_clean_capture() {
    if !require_root("linux_vxlan_node_interoperates_both_ways_with_a_clean_capture") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Node 1: our defaults (outer UDP checksum zero, DF unset). Node 2: the default inner MAC
    // (the uplink's), a computed outer UDP checksum, outer TTL 32 and DF set. Node 3: Linux.
    let o = overlay(
        &[
            NodeSpec::vrouter(1).mac("0e:00:00:00:64:01"),
            NodeSpec::vrouter(1).options(&["udpcsum", "ttl", "32", "df", "set"]),
            NodeSpec::linux(1, false),
        ],
        OVERLAY_MTU,
    );
    let linux_pod = o.pod(3, 0).v4.clone();
    for node in [1, 2] {
        let ours = o.pod(node, 0).v4.clone();
        ping_all(o.pod(node, 0), &linux_pod, 4);
        ping_all(o.pod(3, 0), &ours, 4);
    }
    // A ping exchange node 1 (vrouter) <-> node 3 (Linux): 4 requests, 4 replies.
    let (text, ping_packets) = capture_vxlan(&o, "n1", 8, || ping_all(o.pod(1, 0), &linux_pod, 4));
    let ours = check_our_packets(&text, &ping_packets, &vtep(1), &vtep(3), UdpChecksum::Zero);
    assert_eq!(ours.len(), 4, "{text}");
    assert!(
        ours.iter().all(|p| !p.outer_df),
        "DF unset by default:\n{text}"
    );
    eprintln!("node1 outer TTL (default): {:?}", ours[0].outer_ttl);
    // What the kernel sent, and our node accepted: a verified non-zero outer UDP checksum.
    let from_linux: Vec<&VxlanPacket> = ping_packets
        .iter()
        .filter(|p| p.outer_src.to_string() == vtep(3))
        .collect();
    assert_eq!(from_linux.len(), 4, "{text}");
    for p in from_linux {
        assert_eq!((p.dst_port, p.vni), (4789, Some(VNI)), "{}", p.text);
        assert_eq!(p.udp_checksum, UdpChecksum::Correct, "{}", p.text);
    }
    // Node 2's settings on the wire; the kernel accepts its computed checksums.
    let (text2, packets2) = capture_vxlan(&o, "n2", 8, || ping_all(o.pod(2, 0), &linux_pod, 4));
    let ours2 = check_our_packets(&text2, &packets2, &vtep(2), &vtep(3), UdpChecksum::Correct);
    assert_eq!(ours2.len(), 4, "{text2}");
    for p in ours2 {
        assert_eq!(p.outer_ttl, Some(32), "{}", p.text);
        assert!(p.outer_df, "{}", p.text);
    }
    // TCP both ways. The start of a stream from our side shows the inner TCP checksums: the
    // pod has TX offload on, so the vrouter completed them before encapsulating.
    let (text, packets) = capture_vxlan(&o, "n1", 20, || {
        tcp(
            o.pod(1, 0),
            o.pod(3, 0),
            5201,
            "vrouter node1 -> Linux node3",
        );
    });
    let ours = check_our_packets(&text, &packets, &vtep(1), &vtep(3), UdpChecksum::Zero);
    assert!(
        ours.iter().any(|p| p.inner_checksum_verified()),
        "no inner TCP checksum verified by tcpdump:\n{text}"
    );
    // Different flows (the ICMP echo, iperf3's control and data connections), different outer
    // source ports: the entropy underlay ECMP spreads flows by.
    let ports: std::collections::BTreeSet<u16> = ping_packets
        .iter()
        .chain(packets.iter())
        .filter(|p| p.outer_src.to_string() == vtep(1))
        .map(|p| p.src_port)
        .collect();
    eprintln!("outer UDP source ports from node1: {ports:?}");
    assert!(
        ports.len() >= 2,
        "one outer UDP source port for every flow: {ports:?}"
    );
    tcp(
        o.pod(3, 0),
        o.pod(1, 0),
        5202,
        "Linux node3 -> vrouter node1",
    );
    tcp(
        o.pod(2, 0),
        o.pod(3, 0),
        5203,
        "vrouter node2 -> Linux node3",
    );
    tcp(
        o.pod(3, 0),
        o.pod(2, 0),
        5204,
        "Linux node3 -> vrouter node2",
    );
    // Our two nodes still talk to each other.
    let v4 = o.pod(2, 0).v4.clone();
    ping_all(o.pod(1, 0), &v4, 3);
    for (node, remote) in [(1, 3), (2, 3)] {
        assert_remote_counters(o.node(node), remote);
    }
}

/// The same interop with the Linux node's uplink veth left as veths come (TX checksum offload
/// on): the kernel's VXLAN packets then carry a partial inner TCP/UDP checksum under an outer
/// UDP checksum computed as if the inner one were complete. A kernel receiver on the same host
/// accepts them (the skb says "partial"); the frames our AF_XDP sockets get carry no such flag,
/// so the vrouter must complete the inner checksum before the outer one verifies (without
/// that, every TCP segment from the Linux node is dropped as `vxlan-udp-checksum` while pings,
/// whose inner checksum is complete, pass).
#[test]
fn linux_vxlan_node_with_tx_offload_on_its_veth_uplink_interoperates() {
    if !require_root("linux_vxlan_node_with_tx_offload_on_its_veth_uplink_interoperates") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let o = overlay(
        &[NodeSpec::vrouter(1), NodeSpec::linux(1, true)],
        OVERLAY_MTU,
    );
    let (ours, linux) = (o.pod(1, 0).v4.clone(), o.pod(2, 0).v4.clone());
    ping_all(o.pod(1, 0), &linux, 3);
    ping_all(o.pod(2, 0), &ours, 3);
    tcp(
        o.pod(1, 0),
        o.pod(2, 0),
        5201,
        "vrouter node1 -> Linux node2 (offload on)",
    );
    tcp(
        o.pod(2, 0),
        o.pod(1, 0),
        5202,
        "Linux node2 -> vrouter node1 (offload on)",
    );
}

#[test]
fn large_df_ping_gets_frag_needed_with_the_overlay_mtu_and_pmtud_works() {
    if !require_root("large_df_ping_gets_frag_needed_with_the_overlay_mtu_and_pmtud_works") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Pods with a 1500-byte MTU in front of a 1450-byte overlay.
    let o = overlay(&[NodeSpec::vrouter(1), NodeSpec::vrouter(1)], 1500);
    let remote = o.pod(2, 0).v4.clone();
    let big = ping_with(
        &o.pod(1, 0).ns,
        &remote,
        PingOptions {
            count: 3,
            size: Some(1500 - 28),
            dont_fragment: true,
            ..PingOptions::default()
        },
    )
    .unwrap();
    assert_eq!(big.received, 0, "{}", big.output);
    assert!(
        big.has_error("Frag needed") && big.output.contains("From 10.244.1.1"),
        "expected fragmentation-needed from the vrouter (10.244.1.1): {}",
        big.output
    );
    assert_eq!(big.frag_needed_mtu, Some(OVERLAY_MTU), "{}", big.output);
    let fits = ping_with(
        &o.pod(1, 0).ns,
        &remote,
        PingOptions {
            count: 3,
            size: Some(OVERLAY_MTU - 28),
            dont_fragment: true,
            ..PingOptions::default()
        },
    )
    .unwrap();
    assert_eq!(fits.received, 3, "{}", fits.output);
    // Path-MTU discovery end to end: TCP from a pod that has not learned the overlay MTU yet
    // starts with 1500-byte packets and must recover through the ICMP error.
    tcp(
        o.pod(2, 0),
        o.pod(1, 0),
        5201,
        "node2 -> node1, pod MTU 1500",
    );
}

#[test]
fn large_ipv6_ping_gets_packet_too_big_with_the_overlay_mtu() {
    if !require_root("large_ipv6_ping_gets_packet_too_big_with_the_overlay_mtu") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let o = overlay(&[NodeSpec::vrouter(1), NodeSpec::vrouter(1)], 1500);
    let remote = o.pod(2, 0).v6.clone().unwrap();
    // 1452 bytes of payload + 8 (ICMPv6) + 40 (IPv6) = 1500.
    let big = ping_with(
        &o.pod(1, 0).ns,
        &remote,
        PingOptions {
            count: 3,
            size: Some(1500 - 48),
            dont_fragment: true,
            ..PingOptions::default()
        },
    )
    .unwrap();
    assert_eq!(big.received, 0, "{}", big.output);
    assert_eq!(big.frag_needed_mtu, Some(OVERLAY_MTU), "{}", big.output);
    let fits = ping_with(
        &o.pod(1, 0).ns,
        &remote,
        PingOptions {
            count: 3,
            size: Some(OVERLAY_MTU - 48),
            dont_fragment: true,
            ..PingOptions::default()
        },
    )
    .unwrap();
    assert_eq!(fits.received, 3, "{}", fits.output);
}

/// Non-zero packet count of drop reason `reason` on `node`.
fn drop_count(node: &Node, reason: &str) -> u64 {
    let drops = node.ctl_json(&["drops", "all"]).unwrap();
    drops["drops"]
        .as_array()
        .and_then(|list| list.iter().find(|d| d["reason"] == reason))
        .and_then(|d| d["count"].as_u64())
        .unwrap_or_else(|| panic!("no drop reason {reason} in {drops}"))
}

#[test]
fn malformed_vxlan_from_the_underlay_is_dropped_with_named_reasons() {
    if !require_root("malformed_vxlan_from_the_underlay_is_dropped_with_named_reasons") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let o = overlay(
        &[NodeSpec::vrouter(1), NodeSpec::linux(1, false)],
        OVERLAY_MTU,
    );
    let vr = o.node(1).vrouter();
    let sender = &o.node(2).ns;
    let da = o.node(1).ns.mac(UPLINK).unwrap();
    let sa = sender.mac(UPLINK).unwrap();
    // Outer headers from the Linux node's uplink to our VTEP, UDP 4789 (checksum left zero);
    // then the VXLAN header and the inner frame of each case.
    let inner = "fill(0x02, 12), c16(0x0800), 0x45, 0x00, c16(28), fill(0x00, 4), 0x40, 0x01, \
                 fill(0x00, 2), 10, 244, 2, 2, 10, 244, 1, 2, 0x08, 0x00, fill(0x00, 6)";
    let cases = [
        (
            "vxlan-unknown-vni",
            format!("0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc8, 0x00, {inner}"),
        ),
        (
            "vxlan-bad-flags",
            format!("0x0c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x64, 0x00, {inner}"),
        ),
        (
            "vxlan-truncated",
            "0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x64, 0x00, fill(0x02, 4)".to_string(),
        ),
    ];
    for (reason, payload) in cases {
        let before = drop_count(vr, reason);
        let conf = o.lab.dir().join(format!("{reason}.trafgen"));
        std::fs::write(
            &conf,
            format!(
                "{{ eth(da={da}, sa={sa}), ipv4(saddr={}, daddr={}, ttl=64), \
                 udp(sp=50000, dp=4789, csum=0), {payload} }}\n",
                vtep(2),
                vtep(1)
            ),
        )
        .unwrap();
        sender
            .run(
                "trafgen",
                &[
                    "--dev",
                    UPLINK,
                    "--conf",
                    &conf.to_string_lossy(),
                    "--num",
                    "5",
                    "--cpus",
                    "1",
                    "-q",
                ],
            )
            .unwrap();
        let mut after = before;
        let counted = wait_until(Duration::from_secs(2), Duration::from_millis(100), || {
            after = drop_count(vr, reason);
            after >= before + 5
        });
        assert!(
            counted && after == before + 5,
            "{reason}: {before} -> {after} after 5 packets"
        );
    }
    // Nothing of that disturbed the tunnel.
    let linux_pod = o.pod(2, 0).v4.clone();
    ping_all(o.pod(1, 0), &linux_pod, 3);
}
