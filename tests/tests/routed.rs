//! Routed traffic end to end (issue 3): two pod namespaces behind a node namespace running the
//! real `vrouter` and `vrouter-control`, driven by the real `vrouterctl`, with real ping,
//! traceroute and iperf3. Needs root (skips visibly otherwise, fails in CI).
//!
//! Tests run one at a time (a lock): each starts its own node and the machine has 2 CPUs.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use vrouter_tests::{
    iperf3_client, iperf3_server, ping, ping_with, require_root, wait_until, IperfOptions, Lab,
    Netns, Node, PingOptions,
};

static SERIAL: Mutex<()> = Mutex::new(());

const CONFIG: &str = r#"
[[port]]
name = "vp1"
addresses = ["10.0.1.1/24", "fd00:1::1/64"]

[[port]]
name = "vp2"
addresses = ["10.0.2.1/24", "fd00:2::1/64"]
"#;

struct Topology {
    node: Node,
    pod1: Netns,
    pod2: Netns,
    dir: PathBuf,
    // Last: dropping the lab removes namespaces after the processes are stopped.
    _lab: Lab,
}

fn pod(lab: &Lab, node_ns: &Netns, name: &str, port: &str, index: u8) -> Netns {
    let pod = lab.netns(name).expect("pod namespace");
    lab.veth(node_ns, port, Some(&pod), "eth0").expect("veth");
    pod.addr_add("eth0", &format!("10.0.{index}.2/24")).unwrap();
    pod.addr_add("eth0", &format!("fd00:{index}::2/64"))
        .unwrap();
    pod.route_add("default", &format!("10.0.{index}.1"))
        .unwrap();
    pod.ip(&[
        "-6",
        "route",
        "add",
        "default",
        "via",
        &format!("fd00:{index}::1"),
    ])
    .unwrap();
    pod
}

/// Builds the lab and starts both daemons with [`CONFIG`]; waits until pods reach each other.
fn topology() -> Topology {
    let lab = Lab::new().expect("lab");
    let node_ns = lab.netns("node").expect("node namespace");
    let pod1 = pod(&lab, &node_ns, "pod1", "vp1", 1);
    let pod2 = pod(&lab, &node_ns, "pod2", "vp2", 2);
    let dir = lab.dir().to_path_buf();
    let config = dir.join("vrouter.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let mut node = Node::new(&lab, &node_ns, "node").unwrap();
    node.start_vrouter().expect("vrouter starts");
    node.start_daemon(Some(&config))
        .expect("vrouter-control starts");
    let reachable = wait_until(Duration::from_secs(15), Duration::from_millis(200), || {
        ping(
            &pod1,
            "10.0.2.2",
            1,
            Duration::from_millis(200),
            Duration::from_millis(500),
        )
        .is_ok_and(|r| r.received == 1)
    });
    if !reachable {
        lab.dump_logs();
        panic!("pods never reached each other through the vrouter");
    }
    Topology {
        node,
        pod1,
        pod2,
        dir,
        _lab: lab,
    }
}

/// The dataplane's table generation and its number of neighbors. Learning a new neighbor
/// bumps the generation too (at times the test does not control: a pod's first neighbor
/// solicitation), so "the tables were not rewritten" means: the generation moved by no more
/// than the number of neighbors learned meanwhile. The two figures come from two requests; a
/// neighbor learned between them must not look like a rewrite, so "before" reads the
/// neighbors first and "after" reads the generation first.
fn generation_and_neighbors(node: &Node, before: bool) -> (u64, u64) {
    let generation = || {
        node.ctl_json(&["stats"]).unwrap()["stats"]["generation"]
            .as_u64()
            .expect("generation")
    };
    let neighbors = || {
        node.ctl_json(&["neigh", "list"]).unwrap()["neighbors"]
            .as_array()
            .map_or(0, |n| n.len() as u64)
    };
    if before {
        let n = neighbors();
        (generation(), n)
    } else {
        let g = generation();
        (g, neighbors())
    }
}

fn assert_tables_not_rewritten(before: (u64, u64), after: (u64, u64), what: &str) {
    let learned = after.1.saturating_sub(before.1);
    assert!(
        after.0 - before.0 <= learned,
        "{what}: generation {} -> {} with only {learned} neighbors learned meanwhile",
        before.0,
        after.0
    );
}

fn drop_count(node: &Node, reason: &str) -> u64 {
    let drops = node.ctl_json(&["drops", "all"]).expect("drops");
    drops["drops"]
        .as_array()
        .and_then(|list| {
            list.iter()
                .find(|d| d["reason"] == reason)
                .and_then(|d| d["count"].as_u64())
        })
        .unwrap_or(0)
}

#[test]
fn ping_both_ways_arp_ttl_and_traceroute() {
    if !require_root("ping_both_ways_arp_ttl_and_traceroute") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = topology();
    for (from, to) in [
        (&t.pod1, "10.0.2.2"),
        (&t.pod2, "10.0.1.2"),
        (&t.pod1, "fd00:2::2"),
        (&t.pod2, "fd00:1::2"),
    ] {
        let r = ping(
            from,
            to,
            5,
            Duration::from_millis(100),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(r.received, 5, "ping {to}: {}", r.output);
    }
    // The vrouter resolved the pods itself (ARP and ND), learning their real MACs.
    let neighbors = t.node.ctl_json(&["neigh", "list"]).unwrap();
    let pod1_mac = t.pod1.mac("eth0").unwrap();
    let learned = neighbors["neighbors"].as_array().unwrap().iter().any(|n| {
        n["ip"] == "10.0.1.2"
            && n["mac"].as_str() == Some(pod1_mac.as_str())
            && n["kind"] == "learned"
    });
    assert!(learned, "pod1 not learned: {neighbors}");
    // TTL: one hop to the router.
    let expired = ping_with(
        &t.pod1,
        "10.0.2.2",
        PingOptions {
            count: 2,
            ttl: Some(1),
            ..PingOptions::default()
        },
    )
    .unwrap();
    assert!(
        expired.has_error("Time to live exceeded"),
        "{}",
        expired.output
    );
    assert!(
        expired.output.contains("From 10.0.1.1"),
        "{}",
        expired.output
    );
    std::thread::sleep(Duration::from_millis(300));
    let ttl_drops = drop_count(&t.node, "ttl-exceeded");
    assert!(
        ttl_drops >= 2,
        "ttl-exceeded = {ttl_drops}: {}",
        t.node.ctl_ok(&["-j", "drops", "all"]).unwrap_or_default()
    );
    // traceroute sees the router, then the pod, each hop once.
    let trace = t
        .pod1
        .run_timeout(
            "traceroute",
            &["-n", "-q", "1", "-w", "1", "-m", "4", "10.0.2.2"],
            Duration::from_secs(20),
        )
        .unwrap();
    let hops: Vec<&str> = trace.lines().skip(1).collect();
    assert!(
        hops.first().is_some_and(|l| l.contains("10.0.1.1")),
        "{trace}"
    );
    assert!(
        hops.get(1).is_some_and(|l| l.contains("10.0.2.2")),
        "{trace}"
    );
}

#[test]
fn tcp_and_udp_streams_with_tx_offload_on_and_off() {
    if !require_root("tcp_and_udp_streams_with_tx_offload_on_and_off") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = topology();
    for offload in [true, false] {
        t.pod1.ethtool_offload("eth0", "tx", offload).unwrap();
        t.pod2.ethtool_offload("eth0", "tx", offload).unwrap();
        let _server = iperf3_server(&t.pod2, 5201).unwrap();
        let tcp = iperf3_client(
            &t.pod1,
            "10.0.2.2",
            5201,
            IperfOptions {
                seconds: 2,
                ..IperfOptions::default()
            },
        )
        .unwrap();
        assert!(
            tcp.bits_per_second > 20e6,
            "TCP with tx offload {offload}: {} bit/s",
            tcp.bits_per_second
        );
        eprintln!(
            "TCP through vrouter (tx offload {offload}): {:.0} Mbit/s",
            tcp.bits_per_second / 1e6
        );
    }
    let _server = iperf3_server(&t.pod2, 5202).unwrap();
    let udp = iperf3_client(
        &t.pod1,
        "10.0.2.2",
        5202,
        IperfOptions {
            seconds: 2,
            udp: true,
            bitrate: Some("20M".into()),
            length: Some(1000),
            ..IperfOptions::default()
        },
    )
    .unwrap();
    let packets = udp.packets.expect("UDP packet count");
    let lost = udp.lost_percent.expect("UDP loss");
    eprintln!("UDP 20 Mbit/s fixed rate: {packets} packets, {lost:.2}% lost");
    assert!(packets > 4000, "{udp:?}");
    assert!(lost < 2.0, "UDP loss at 20 Mbit/s: {udp:?}");
}

#[test]
fn route_change_while_traffic_flows() {
    if !require_root("route_change_while_traffic_flows") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = topology();
    // A third pod, plugged in at run time: the port is added while the vrouter forwards.
    let pod3 = pod(&t._lab, &t.node.ns, "pod3", "vp3", 3);
    t.node
        .ctl_ok(&["port", "add", "vp3", "addr", "10.0.3.1/24"])
        .unwrap();
    let r = ping(
        &pod3,
        "10.0.1.2",
        3,
        Duration::from_millis(100),
        Duration::from_secs(1),
    )
    .unwrap();
    assert_eq!(r.received, 3, "new port does not forward: {}", r.output);
    // 10.9.9.9 lives on pod2 and pod3; the route decides who answers.
    for pod in [&t.pod2, &pod3] {
        pod.addr_add("lo", "10.9.9.9/32").unwrap();
    }
    t.node
        .ctl_ok(&["route", "add", "10.9.9.0/24", "via", "10.0.2.2"])
        .unwrap();
    let pinger = t
        .pod1
        .spawn(
            "ping",
            &["-n", "-i", "0.05", "-c", "80", "-W", "1", "10.9.9.9"],
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    t.node
        .ctl_ok(&["route", "add", "10.9.9.0/24", "via", "10.0.3.2"])
        .unwrap();
    let vp2_at_change = port_tx(&t.node, "vp2");
    let vp3_at_change = port_tx(&t.node, "vp3");
    pinger.wait_timeout(Duration::from_secs(15)).unwrap();
    let summary = pinger.stdout();
    let result = vrouter_tests::parse_ping(&summary).unwrap();
    assert!(result.loss_percent <= 5.0, "{summary}");
    // Counters are published every 100 ms: let the last snapshot land.
    std::thread::sleep(Duration::from_millis(300));
    let vp2_after = port_tx(&t.node, "vp2");
    let vp3_after = port_tx(&t.node, "vp3");
    assert!(vp2_at_change > 20, "pod2 saw no traffic before the change");
    assert!(
        vp2_after - vp2_at_change < 10,
        "traffic still sent to pod2 after the change: {vp2_at_change} -> {vp2_after}"
    );
    assert!(
        vp3_after > vp3_at_change + 30,
        "traffic did not move to pod3: {vp3_at_change} -> {vp3_after}"
    );
    let config = t.node.ctl_ok(&["show", "config"]).unwrap();
    assert!(
        config.contains("10.0.3.2") && config.contains("vp3"),
        "{config}"
    );
    // Remove the port at run time: its route goes with it, its XDP program is detached, and
    // the other pods keep forwarding.
    t.node.ctl_ok(&["port", "del", "vp3"]).unwrap();
    let vp3 = t.node.ns.ip(&["-d", "link", "show", "vp3"]).unwrap();
    assert!(
        !vp3.contains("prog/xdp"),
        "XDP still attached to a removed port: {vp3}"
    );
    let routes = t.node.ctl_ok(&["route", "list"]).unwrap();
    assert!(!routes.contains("10.9.9.0/24"), "{routes}");
    let r = ping(
        &t.pod1,
        "10.0.2.2",
        3,
        Duration::from_millis(100),
        Duration::from_secs(1),
    )
    .unwrap();
    assert_eq!(r.received, 3, "{}", r.output);
    let r = ping(
        &pod3,
        "10.0.1.2",
        2,
        Duration::from_millis(100),
        Duration::from_millis(500),
    )
    .unwrap();
    assert_eq!(r.received, 0, "a removed port still forwards");
}

fn port_tx(node: &Node, name: &str) -> u64 {
    let ports = node.ctl_json(&["port", "list"]).unwrap();
    ports["ports"]
        .as_array()
        .and_then(|list| list.iter().find(|p| p["name"] == name))
        .and_then(|p| p["tx_packets"].as_u64())
        .unwrap_or_else(|| panic!("no port {name} in {ports}"))
}

#[test]
fn daemon_crash_keeps_forwarding_and_restart_resyncs() {
    if !require_root("daemon_crash_keeps_forwarding_and_restart_resyncs") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = topology();
    t.node
        .ctl_ok(&["route", "add", "10.7.0.0/16", "blackhole"])
        .unwrap();
    let pinger = t
        .pod1
        .spawn(
            "ping",
            &["-n", "-i", "0.05", "-c", "60", "-W", "1", "10.0.2.2"],
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let before = generation_and_neighbors(&t.node, true);
    let daemon = t.node.daemon.take().unwrap();
    Node::crash(&daemon).unwrap();
    // Headless: the CLI cannot reach the daemon, forwarding goes on.
    let refused = t.node.ctl(&["route", "list"]).unwrap();
    assert_eq!(refused.code, 2, "{refused:?}");
    pinger.wait_timeout(Duration::from_secs(15)).unwrap();
    let result = vrouter_tests::parse_ping(&pinger.stdout()).unwrap();
    assert_eq!(result.received, 60, "{}", pinger.stdout());
    // Restart without --config: the state directory has everything, including the CLI change.
    // Traffic runs across the restart and the re-sync.
    let across = t
        .pod1
        .spawn(
            "ping",
            &["-n", "-i", "0.05", "-c", "40", "-W", "1", "10.0.2.2"],
        )
        .unwrap();
    t.node.start_daemon(None).unwrap();
    let synced = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        t.node
            .ctl_json(&["status"])
            .is_ok_and(|s| s["status"]["in_sync"] == true && s["status"]["peer_connected"] == true)
    });
    assert!(synced, "daemon did not re-sync");
    across.wait_timeout(Duration::from_secs(15)).unwrap();
    let result = vrouter_tests::parse_ping(&across.stdout()).unwrap();
    assert_eq!(
        result.received,
        40,
        "traffic disturbed by the re-sync: {}",
        across.stdout()
    );
    // The re-sync found nothing to change: the dataplane's tables were not rewritten.
    assert_tables_not_rewritten(
        before,
        generation_and_neighbors(&t.node, false),
        "the re-sync of an unchanged state",
    );
    let routes = t.node.ctl_ok(&["route", "list"]).unwrap();
    assert!(routes.contains("10.7.0.0/16"), "{routes}");
    let config = t.node.ctl_ok(&["show", "config"]).unwrap();
    assert!(config.contains("vp1") && config.contains("vp2") && config.contains("10.7.0.0/16"));
}

#[test]
fn vrouter_crash_leaves_no_xdp_and_traffic_resumes_by_itself() {
    if !require_root("vrouter_crash_leaves_no_xdp_and_traffic_resumes_by_itself") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = topology();
    assert!(
        t.node.xdp_attached().unwrap(),
        "XDP program expected while running"
    );
    let vrouter = t.node.vrouter.take().unwrap();
    Node::crash(&vrouter).unwrap();
    let detached = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        t.node.xdp_attached().is_ok_and(|attached| !attached)
    });
    assert!(detached, "XDP program left attached after a crash");
    let _ = std::fs::remove_file(&t.node.vrouter_socket);
    t.node.start_vrouter().unwrap();
    let start = Instant::now();
    let resumed = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        ping(
            &t.pod1,
            "10.0.2.2",
            1,
            Duration::from_millis(200),
            Duration::from_millis(500),
        )
        .is_ok_and(|r| r.received == 1)
    });
    assert!(
        resumed,
        "traffic did not resume after the vrouter restarted"
    );
    eprintln!(
        "traffic resumed {:?} after the vrouter restarted",
        start.elapsed()
    );
}

/// Sends raw bytes on a fresh connection and returns whatever comes back within a second.
fn send_raw(path: &Path, bytes: &[u8]) -> Vec<u8> {
    let mut stream = UnixStream::connect(path).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let _ = stream.write_all(bytes);
    let mut reply = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buffer) {
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buffer[..n]);
        if reply.len() >= 16 {
            let length = u32::from_be_bytes([reply[12], reply[13], reply[14], reply[15]]) as usize;
            if reply.len() >= 16 + length {
                break;
            }
        }
    }
    reply
}

#[test]
fn garbage_and_oversized_messages_change_nothing() {
    if !require_root("garbage_and_oversized_messages_change_nothing") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = topology();
    let config_before = t.node.ctl_ok(&["show", "config"]).unwrap();
    let before = generation_and_neighbors(&t.node, true);
    use control::proto::{encode, KIND_REQUEST};
    let hello = encode(
        KIND_REQUEST,
        1,
        &serde_json::json!({"type": "hello", "min_version": 1, "max_version": 1, "role": "cli"}),
    );
    let mut oversized = encode(KIND_REQUEST, 2, &serde_json::json!({"type": "status"}));
    oversized[12..16].copy_from_slice(&u32::MAX.to_be_bytes());
    let unknown = encode(
        KIND_REQUEST,
        3,
        &serde_json::json!({"type": "reboot", "now": true}),
    );
    let sync_before_hello = encode(
        KIND_REQUEST,
        4,
        &serde_json::json!({"type": "sync", "config": {}}),
    );
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    for socket in [&t.node.vrouter_socket, &t.node.control_socket] {
        // Random bytes and a huge length: the peer closes (maybe after an error reply).
        send_raw(socket, &random);
        send_raw(socket, &oversized);
        // A request before hello: an error, nothing applied (an empty sync would remove all).
        let reply = send_raw(socket, &sync_before_hello);
        assert!(
            String::from_utf8_lossy(&reply).contains("error"),
            "{socket:?}: {reply:?}"
        );
        // After hello, an unknown message type: an error reply, connection still usable.
        let mut both = hello.clone();
        both.extend_from_slice(&unknown);
        let mut stream = UnixStream::connect(socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        stream.write_all(&both).unwrap();
        let first = control::proto::read_frame(&mut stream).unwrap();
        assert!(String::from_utf8_lossy(&first.1).contains("hello"));
        let second = control::proto::read_frame(&mut stream).unwrap();
        assert!(
            String::from_utf8_lossy(&second.1).contains("bad_message"),
            "{:?}",
            String::from_utf8_lossy(&second.1)
        );
    }
    let r = ping(
        &t.pod1,
        "10.0.2.2",
        5,
        Duration::from_millis(100),
        Duration::from_secs(1),
    )
    .unwrap();
    assert_eq!(r.received, 5);
    assert_eq!(t.node.ctl_ok(&["show", "config"]).unwrap(), config_before);
    assert_tables_not_rewritten(
        before,
        generation_and_neighbors(&t.node, false),
        "garbage input",
    );
    assert!(t.node.vrouter.as_ref().unwrap().is_running());
    assert!(t.node.daemon.as_ref().unwrap().is_running());
}

#[test]
fn bad_config_file_is_refused_naming_the_line() {
    if !require_root("bad_config_file_is_refused_naming_the_line") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = topology();
    let bad = format!("{CONFIG}\n[[route]]\nprefix = \"10.5.0.0/16\"\nvia = \"192.0.2.1\"\n");
    let line = bad.lines().position(|l| l == "[[route]]").unwrap() + 1;
    let path = t.dir.join("bad.toml");
    std::fs::write(&path, &bad).unwrap();
    let out = t
        .node
        .ctl(&["apply", "-f", &path.to_string_lossy()])
        .unwrap();
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains(&format!("line {line}")), "{out:?}");
    let syntax = t.dir.join("syntax.toml");
    std::fs::write(&syntax, "[[port]]\nname = \"vp1\"\nmtu = \"big\"\n").unwrap();
    let out = t
        .node
        .ctl(&["apply", "-f", &syntax.to_string_lossy()])
        .unwrap();
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("line 3"), "{out:?}");
    // The daemon refuses to start on it too, naming the line.
    let daemon = vrouter_tests::binary_path("vrouter-control").unwrap();
    let out = std::process::Command::new(daemon)
        .args(["--config", &path.to_string_lossy(), "--state-dir"])
        .arg(t.dir.join("fresh-state"))
        .arg("--listen")
        .arg(t.dir.join("other.sock"))
        .arg("--vrouter-socket")
        .arg(t.dir.join("none.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("line {line}")), "{stderr}");
    // Nothing changed.
    let r = ping(
        &t.pod1,
        "10.0.2.2",
        2,
        Duration::from_millis(100),
        Duration::from_secs(1),
    )
    .unwrap();
    assert_eq!(r.received, 2);
}

#[test]
fn two_workers_share_ports_and_a_port_with_too_few_queues_is_refused() {
    if !require_root("two_workers_share_ports_and_a_port_with_too_few_queues_is_refused") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::new().expect("lab");
    let node_ns = lab.netns("node").unwrap();
    let mut pods = Vec::new();
    for i in 1..=2u8 {
        let pod = lab.netns(&format!("pod{i}")).unwrap();
        // Two queues on each end: one per worker.
        let port = format!("vp{i}");
        vrouter_tests::Netns::run(
            &lab.host(),
            "ip",
            &[
                "link",
                "add",
                &port,
                "netns",
                node_ns.name(),
                "numrxqueues",
                "2",
                "numtxqueues",
                "2",
                "type",
                "veth",
                "peer",
                "eth0",
                "netns",
                pod.name(),
                "numrxqueues",
                "2",
                "numtxqueues",
                "2",
            ],
        )
        .unwrap();
        node_ns.link_up(&port).unwrap();
        pod.link_up("eth0").unwrap();
        pod.addr_add("eth0", &format!("10.0.{i}.2/24")).unwrap();
        pod.route_add("default", &format!("10.0.{i}.1")).unwrap();
        pods.push(pod);
    }
    let config = lab.dir().join("two.toml");
    std::fs::write(
        &config,
        "[[port]]\nname = \"vp1\"\naddresses = [\"10.0.1.1/24\"]\n\n[[port]]\nname = \"vp2\"\naddresses = [\"10.0.2.1/24\"]\n",
    )
    .unwrap();
    let mut node = Node::new(&lab, &node_ns, "node").unwrap();
    node.cores = "0,1".into();
    node.start_vrouter().unwrap();
    node.start_daemon(Some(&config)).unwrap();
    let reachable = wait_until(Duration::from_secs(15), Duration::from_millis(200), || {
        ping(
            &pods[0],
            "10.0.2.2",
            1,
            Duration::from_millis(200),
            Duration::from_millis(500),
        )
        .is_ok_and(|r| r.received == 1)
    });
    assert!(reachable, "no forwarding with two workers");
    let stats = node.ctl_json(&["stats"]).unwrap();
    assert_eq!(stats["stats"]["workers"], 2, "{stats}");
    let _server = iperf3_server(&pods[1], 5201).unwrap();
    let tcp = iperf3_client(
        &pods[0],
        "10.0.2.2",
        5201,
        IperfOptions {
            seconds: 2,
            parallel: 4,
            ..IperfOptions::default()
        },
    )
    .unwrap();
    eprintln!(
        "TCP, 4 streams, two workers: {:.0} Mbit/s",
        tcp.bits_per_second / 1e6
    );
    assert!(tcp.bits_per_second > 20e6, "{tcp:?}");
    // Both directions both ways, on both queues of each port.
    let r = ping(
        &pods[1],
        "10.0.1.2",
        5,
        Duration::from_millis(100),
        Duration::from_secs(1),
    )
    .unwrap();
    assert_eq!(r.received, 5);
    // A port with one queue cannot serve two workers: refused, with the reason.
    let lonely = lab.netns("pod3").unwrap();
    lab.veth(&node_ns, "vp3", Some(&lonely), "eth0").unwrap();
    let out = node
        .ctl(&["port", "add", "vp3", "addr", "10.0.3.1/24"])
        .unwrap();
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("RX queue"), "{out:?}");
    let config_now = node.ctl_ok(&["show", "config"]).unwrap();
    assert!(!config_now.contains("vp3"), "{config_now}");
}
