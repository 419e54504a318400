//! NAT end to end (issue 5): pods behind one vrouter node, masqueraded towards an "external"
//! namespace that has no route back to them, and Services load-balanced over pods. Real
//! `vrouter`, `vrouter-control` and `vrouterctl`; real ping, traceroute, iperf3, tcpdump, and
//! small Python servers and clients (python3 is installed by scripts/setup.sh). Needs root
//! (skips visibly otherwise, fails in CI).
//!
//! ```text
//! pod1 10.0.1.2 fd00:1::2 ── vp1 ┐
//! pod2 10.0.2.2 fd00:2::2 ── vp2 │                  ┌ ve0 203.0.113.1  ── 203.0.113.2  ext ── 198.51.101.1 ── far
//! pod3 10.0.3.2 fd00:3::2 ── vp3 ├ vrouter (node) ──┘     2001:db8:1::1 ── 2001:db8:1::2      198.51.100.1/32  198.51.101.2
//! pod4 10.0.4.2 fd00:4::2 ── vp4 ┘   masquerade of 10.0.0.0/16 and fd00::/16 out of ve0
//! ```
//! `ext` routes only the Service range 10.96.0.0/16 to the node: un-translated pod traffic
//! cannot come back. `far` is one more hop, for traceroute. pod3's eth0 has TX checksum offload
//! off, the other pods keep the veth default (on: partial checksums reach the vrouter).
//!
//! Each test starts its own node (about 1 s); they run one at a time (a lock), as the machine
//! has 2 CPUs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use vrouter_tests::{
    iperf3_client, iperf3_server, ping, require_root, tcpdump, wait_until, Capture, IperfOptions,
    Lab, Netns, Node,
};

static SERIAL: Mutex<()> = Mutex::new(());

const CONFIG: &str = r#"
[[port]]
name = "vp1"
addresses = ["10.0.1.1/24", "fd00:1::1/64"]

[[port]]
name = "vp2"
addresses = ["10.0.2.1/24", "fd00:2::1/64"]

[[port]]
name = "vp3"
addresses = ["10.0.3.1/24", "fd00:3::1/64"]

[[port]]
name = "vp4"
addresses = ["10.0.4.1/24", "fd00:4::1/64"]

[[port]]
name = "ve0"
addresses = ["203.0.113.1/24", "2001:db8:1::1/64"]

[[route]]
prefix = "198.51.0.0/16"
via = "203.0.113.2"

[[snat]]
source = "10.0.0.0/16"
out = "ve0"

[[snat]]
source = "fd00::/16"
out = "ve0"
"#;

/// A TCP server recording each peer (`IP:PORT` per line) and answering `ok`.
const PEER_LOG_SERVER: &str = r#"
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[3] else socket.AF_INET
s = socket.socket(family)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[3], int(sys.argv[1])))
s.listen(4096)
with open(sys.argv[2], "a", buffering=1) as log:
    while True:
        c, a = s.accept()
        log.write(f"{a[0]}:{a[1]}\n")
        c.sendall(b"ok\n")
        c.close()
"#;

/// N connections at once; prints how many got `ok`, then what the others got.
const MANY_CLIENTS: &str = r#"
import asyncio, sys
async def one(host, port):
    r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 20)
    data = await asyncio.wait_for(r.read(16), 20)
    w.close()
    return data == b"ok\n"
async def main():
    n = int(sys.argv[3])
    results = await asyncio.gather(*[one(sys.argv[1], int(sys.argv[2])) for _ in range(n)],
                                   return_exceptions=True)
    errors = [repr(r) for r in results if r is not True]
    print(sum(1 for r in results if r is True))
    if errors:
        print(len(errors), "failed, e.g.", errors[:3])
asyncio.run(main())
"#;

/// A TCP server answering every line with `NAME LINE` (a long-lived connection).
const NAMED_ECHO_SERVER: &str = r#"
import socketserver, sys
name = sys.argv[2]
class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(f"{name} {line.decode().strip()}\n".encode())
            self.wfile.flush()
class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
Server(("0.0.0.0", int(sys.argv[1])), Handler).serve_forever()
"#;

/// Opens one connection and exchanges a line every 100 ms until the file `argv[3]` exists,
/// then 10 more; prints each answer. Any break ends it with an error on stderr.
const LONG_CLIENT: &str = r#"
import os, socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
f = s.makefile("rw")
def exchange(i):
    f.write(f"line{i}\n"); f.flush(); print(f.readline().strip(), flush=True)
i = 0
deadline = time.time() + 30
while not os.path.exists(sys.argv[3]) and time.time() < deadline:
    exchange(i); i += 1; time.sleep(0.1)
for _ in range(10):
    exchange(i); i += 1; time.sleep(0.1)
"#;

/// `N` connections to a named echo server, one after the other; prints each answer's name.
const SHORT_CLIENTS: &str = r#"
import socket, sys
for i in range(int(sys.argv[3])):
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    f = s.makefile("rw")
    f.write("hi\n"); f.flush()
    print(f.readline().split()[0], flush=True)
    s.close()
"#;

/// How a connection attempt ends: `refused SECONDS`, `connected`, `answered` or `error ...`.
const PROBE: &str = r#"
import socket, sys, time
host, port, proto = sys.argv[1], int(sys.argv[2]), sys.argv[3]
start = time.time()
try:
    if proto == "tcp":
        socket.create_connection((host, port), timeout=5).close()
        print("connected")
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(3)
        s.connect((host, port))
        s.send(b"x")
        s.recv(16)
        print("answered")
except ConnectionRefusedError:
    print(f"refused {time.time() - start:.3f}")
except Exception as e:
    print(f"error {e!r}")
"#;

/// A UDP server on `ADDRESS PORT` echoing every datagram (bound to the address, so its answers
/// come from it, not from the address of the route back).
const UDP_ECHO_SERVER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data, peer)
"#;

/// Sends `N` datagrams from one socket, each answered; prints how many answers came back.
const UDP_EXCHANGE: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.connect((sys.argv[1], int(sys.argv[2])))
n = 0
for i in range(int(sys.argv[3])):
    s.send(b"ping %d" % i)
    try:
        if s.recv(64) == b"ping %d" % i:
            n += 1
    except socket.timeout:
        pass
print(n)
"#;

/// `N` HTTP GETs of `URL`; prints each body.
const HTTP_GETS: &str = r#"
import sys, urllib.request
for i in range(int(sys.argv[2])):
    print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode().strip(), flush=True)
"#;

struct Topology {
    node: Node,
    pods: Vec<Netns>,
    ext: Netns,
    dir: PathBuf,
    // Last: dropping the lab removes namespaces after the processes are stopped.
    _lab: Lab,
}

impl Topology {
    /// Writes a script into the lab directory; returns its path.
    fn script(&self, name: &str, text: &str) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, text).expect("write script");
        path.to_string_lossy().into_owned()
    }

    fn python(&self, ns: &Netns, script: &str, args: &[&str], timeout: Duration) -> String {
        let mut all = vec![script];
        all.extend_from_slice(args);
        ns.run_timeout("python3", &all, timeout)
            .unwrap_or_else(|e| panic!("python3 {script} {args:?}: {e}"))
    }

    /// `conntrack list -j`, the `connection` objects.
    fn connections(&self) -> Vec<serde_json::Value> {
        let json = self
            .node
            .ctl_json(&["conntrack", "list"])
            .expect("conntrack list");
        json["connections"]
            .as_array()
            .map(|list| list.iter().map(|c| c["connection"].clone()).collect())
            .unwrap_or_default()
    }

    /// A counter of `conntrack stats -j`.
    fn conntrack_counter(&self, name: &str) -> u64 {
        let json = self
            .node
            .ctl_json(&["conntrack", "stats"])
            .expect("conntrack stats");
        json["conntrack"]["counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no conntrack counter {name}: {json}"))
    }

    /// A drop counter of `drops all -j` (0 when absent).
    fn drop_count(&self, reason: &str) -> u64 {
        let drops = self.node.ctl_json(&["drops", "all"]).expect("drops");
        drops["drops"]
            .as_array()
            .and_then(|list| list.iter().find(|d| d["reason"] == reason))
            .and_then(|d| d["count"].as_u64())
            .unwrap_or(0)
    }

    /// Waits until the workers publish `drop reason >= at_least` (counters are published
    /// periodically); returns the last value read.
    fn wait_drop_count(&self, reason: &str, at_least: u64) -> u64 {
        let mut last = 0;
        wait_until(Duration::from_secs(3), Duration::from_millis(100), || {
            last = self.drop_count(reason);
            last >= at_least
        });
        last
    }

    /// Starts `python3 -m http.server PORT` in `pod`, serving an index naming `name`.
    fn http_server(&self, pod: &Netns, name: &str, port: u16) -> vrouter_tests::LabProcess {
        let root = self.dir.join(format!("www-{name}-{port}"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("index.html"), format!("{name}\n")).unwrap();
        let server = pod
            .spawn(
                "python3",
                &[
                    "-m",
                    "http.server",
                    &port.to_string(),
                    "-d",
                    &root.to_string_lossy(),
                ],
            )
            .expect("http server");
        pod.wait_listening(port, false, Duration::from_secs(10))
            .unwrap();
        server
    }
}

fn topology(vrouter_args: &[&str]) -> Topology {
    let lab = Lab::new().expect("lab");
    let node_ns = lab.netns("node").expect("node namespace");
    let mut pods = Vec::new();
    for i in 1..=4u8 {
        let pod = lab.netns(&format!("pod{i}")).expect("pod namespace");
        lab.veth(&node_ns, &format!("vp{i}"), Some(&pod), "eth0")
            .expect("veth");
        pod.addr_add("eth0", &format!("10.0.{i}.2/24")).unwrap();
        // nodad: usable at once (duplicate address detection would hold it ~1 s).
        pod.ip(&[
            "addr",
            "add",
            &format!("fd00:{i}::2/64"),
            "dev",
            "eth0",
            "nodad",
        ])
        .unwrap();
        pod.route_add("default", &format!("10.0.{i}.1")).unwrap();
        pod.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &format!("fd00:{i}::1"),
        ])
        .unwrap();
        pods.push(pod);
    }
    // One pod checksums in software, the others leave partial checksums to the vrouter.
    pods[2].ethtool_offload("eth0", "tx", false).unwrap();
    // The external router: its own link and a farther network; nothing back to the pods.
    let ext = lab.netns("ext").expect("ext namespace");
    lab.veth(&node_ns, "ve0", Some(&ext), "eth0").expect("veth");
    ext.addr_add("eth0", "203.0.113.2/24").unwrap();
    ext.ip(&["addr", "add", "2001:db8:1::2/64", "dev", "eth0", "nodad"])
        .unwrap();
    ext.addr_add("lo", "198.51.100.1/32").unwrap();
    ext.route_add("10.96.0.0/16", "203.0.113.1").unwrap();
    ext.sysctl("net.ipv4.ip_forward", "1").unwrap();
    let far = lab.netns("far").expect("far namespace");
    lab.veth(&ext, "eth1", Some(&far), "eth0").expect("veth");
    ext.addr_add("eth1", "198.51.101.1/24").unwrap();
    far.addr_add("eth0", "198.51.101.2/24").unwrap();
    far.route_add("default", "198.51.101.1").unwrap();

    let dir = lab.dir().to_path_buf();
    let config = dir.join("vrouter.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let mut node = Node::new(&lab, &node_ns, "node").unwrap();
    node.vrouter_args = vrouter_args.iter().map(|a| a.to_string()).collect();
    node.start_vrouter().expect("vrouter starts");
    node.start_daemon(Some(&config))
        .expect("vrouter-control starts");
    let reachable = wait_until(Duration::from_secs(15), Duration::from_millis(200), || {
        ping(
            &pods[0],
            "198.51.100.1",
            1,
            Duration::from_millis(200),
            Duration::from_millis(500),
        )
        .is_ok_and(|r| r.received == 1)
    });
    if !reachable {
        lab.dump_logs();
        panic!("pod1 never reached the external address through the masquerade");
    }
    Topology {
        node,
        pods,
        ext,
        dir,
        _lab: lab,
    }
}

/// A capture on the external side of every packet from or to a pod address: it must stay
/// empty while the masquerade works.
fn leak_capture(ext: &Netns) -> Capture {
    tcpdump(
        ext,
        "eth0",
        5,
        &["net", "10.0.0.0/16", "or", "net", "fd00::/16"],
    )
    .expect("tcpdump")
}

fn assert_no_leak(capture: Capture) {
    let what = capture.describe().to_string();
    let seen = capture.finish(Duration::from_millis(300));
    assert!(
        seen.trim().is_empty(),
        "pod addresses reached the external side ({what}):\n{seen}"
    );
}

/// The TCP lines of a `tcpdump -vv` capture, and how many carry a checksum tcpdump judged
/// `(correct)`; panics on any `incorrect` one.
fn assert_tcp_checksums_correct(text: &str, what: &str) -> usize {
    let bad: Vec<&str> = text.lines().filter(|l| l.contains("incorrect")).collect();
    assert!(
        bad.is_empty(),
        "{what}: bad TCP checksums:\n{}",
        bad.join("\n")
    );
    text.lines().filter(|l| l.contains("(correct)")).count()
}

#[test]
fn masquerade_iperf_shows_only_the_node_address_with_and_without_offload() {
    if !require_root("masquerade_iperf_shows_only_the_node_address_with_and_without_offload") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = topology(&[]);
    let leak = leak_capture(&t.ext);
    let completed_before = t.node.ctl_json(&["stats"]).unwrap()["stats"]["counters"]
        ["checksums_completed"]
        .as_u64()
        .expect("checksums_completed");

    // pod1 (partial checksums from TX offload) and pod3 (offload off).
    for (pod, address) in [(&t.pods[0], "10.0.1.2"), (&t.pods[2], "10.0.3.2")] {
        let server = iperf3_server(&t.ext, 5201).expect("iperf3 server");
        // What the external side receives from the node: full, correct TCP checksums.
        let capture = tcpdump(
            &t.ext,
            "eth0",
            40,
            &["tcp", "and", "src", "host", "203.0.113.1"],
        )
        .expect("tcpdump");
        let result = iperf3_client(
            pod,
            "198.51.100.1",
            5201,
            IperfOptions {
                seconds: 2,
                ..IperfOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("iperf3 from {address} through the masquerade: {e}"));
        let seen = capture.finish(Duration::from_secs(2));
        let correct = assert_tcp_checksums_correct(&seen, address);
        assert!(
            correct >= 20,
            "{address}: only {correct} TCP checksums judged correct:\n{seen}"
        );
        assert!(
            result.bits_per_second > 50e6,
            "{address}: {} bit/s",
            result.bits_per_second
        );
        let _ = server.wait_timeout(Duration::from_secs(5));
        let log = server.stdout();
        assert!(
            log.contains("Accepted connection from 203.0.113.1"),
            "iperf3 server log:\n{log}"
        );
        assert!(!log.contains("10.0."), "{log}");

        // The connection, with the tuple the pod sent and the one the server answers.
        let connections = t.connections();
        let found = connections.iter().find(|c| {
            c["original"]["src"] == address
                && c["original"]["dst"] == "198.51.100.1"
                && c["original"]["dst_port"] == 5201
                && c["original"]["protocol"] == 6
                && c["packets"][0].as_u64().unwrap_or(0) > 1000
        });
        let Some(c) = found else {
            panic!("no iperf3 data connection from {address} in {connections:#?}");
        };
        assert_eq!(c["reply"]["src"], "198.51.100.1", "{c:#}");
        assert_eq!(c["reply"]["src_port"], 5201, "{c:#}");
        assert_eq!(c["reply"]["dst"], "203.0.113.1", "{c:#}");
        assert!(
            c["reply"]["dst_port"].as_u64().unwrap_or(0) >= 1024,
            "{c:#}"
        );
        assert!(c["packets"][1].as_u64().unwrap_or(0) > 100, "{c:#}");
    }
    assert_no_leak(leak);
    // pod1's partial checksums (and ext's, it has offload on too) were completed.
    let completed_after = t.node.ctl_json(&["stats"]).unwrap()["stats"]["counters"]
        ["checksums_completed"]
        .as_u64()
        .unwrap();
    assert!(
        completed_after > completed_before,
        "checksums_completed {completed_before} -> {completed_after}"
    );
    assert!(t.conntrack_counter("created") >= 4);
}

#[test]
fn masquerade_a_thousand_parallel_connections_get_distinct_source_ports() {
    if !require_root("masquerade_a_thousand_parallel_connections_get_distinct_source_ports") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = topology(&[]);
    let leak = leak_capture(&t.ext);
    let log_path = t.dir.join("peers.log");
    let server = t.script("peer_log_server.py", PEER_LOG_SERVER);
    let _server = t
        .ext
        .spawn(
            "python3",
            &[&server, "7000", &log_path.to_string_lossy(), "0.0.0.0"],
        )
        .expect("peer log server");
    t.ext
        .wait_listening(7000, false, Duration::from_secs(5))
        .unwrap();
    let created_before = t.conntrack_counter("created");
    // 500 from pod2 (offload on) and 500 from pod3 (offload off), at the same time.
    let clients = t.script("many_clients.py", MANY_CLIENTS);
    let args = ["198.51.100.1", "7000", "500"];
    let mut all = vec![clients.as_str()];
    all.extend_from_slice(&args);
    let pod2 = t.pods[1].spawn("python3", &all).expect("clients in pod2");
    let out3 = t.python(&t.pods[2], &clients, &args, Duration::from_secs(60));
    let _ = pod2.wait_timeout(Duration::from_secs(60));
    let out2 = pod2.stdout();
    assert_eq!(
        (out2.trim(), out3.trim()),
        ("500", "500"),
        "connections completed (pod2, pod3); pod2's stderr: {}",
        pod2.stderr()
    );
    let peers = std::fs::read_to_string(&log_path).unwrap();
    let peers: Vec<&str> = peers.lines().collect();
    assert_eq!(peers.len(), 1000);
    assert!(
        peers.iter().all(|p| p.starts_with("203.0.113.1:")),
        "{:?}",
        peers.iter().find(|p| !p.starts_with("203.0.113.1:"))
    );
    let ports: BTreeSet<&str> = peers.iter().copied().collect();
    assert_eq!(ports.len(), 1000, "source ports reused");
    assert_no_leak(leak);
    assert!(t.conntrack_counter("created") >= created_before + 1000);
    assert_eq!(t.conntrack_counter("refused_full"), 0);
    for reason in ["snat-ports-exhausted", "conntrack-full"] {
        assert_eq!(t.drop_count(reason), 0, "{reason}");
    }
}

#[test]
fn masquerade_carries_ping_and_traceroute_udp_and_icmp() {
    if !require_root("masquerade_carries_ping_and_traceroute_udp_and_icmp") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = topology(&[]);
    let pod1 = &t.pods[0];
    let leak = leak_capture(&t.ext);

    // ping, to the external router, one hop farther, and over IPv6.
    for target in ["198.51.100.1", "198.51.101.2", "2001:db8:1::2"] {
        let result = ping(
            pod1,
            target,
            3,
            Duration::from_millis(200),
            Duration::from_secs(1),
        )
        .expect("ping");
        assert_eq!(result.received, 3, "ping {target}: {result:?}");
    }
    let echo = t
        .connections()
        .into_iter()
        .find(|c| c["original"]["dst"] == "198.51.101.2" && c["original"]["protocol"] == 1);
    let Some(echo) = echo else {
        panic!("no ICMP echo connection in {:#?}", t.connections());
    };
    assert_eq!(echo["reply"]["dst"], "203.0.113.1", "{echo:#}");

    // traceroute, UDP and ICMP: every hop answers, the errors come back translated.
    for mode in [&[][..], &["-I"][..]] {
        let mut args = vec!["-n", "-q", "1", "-w", "2", "-m", "5"];
        args.extend_from_slice(mode);
        args.push("198.51.101.2");
        let out = pod1
            .run_timeout("traceroute", &args, Duration::from_secs(30))
            .expect("traceroute");
        let hops: Vec<&str> = out
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(1))
            .collect();
        assert_eq!(
            hops,
            ["10.0.1.1", "203.0.113.2", "198.51.101.2"],
            "traceroute {mode:?}:\n{out}"
        );
    }
    assert_no_leak(leak);
}

#[test]
fn masquerade_ipv6_tcp_shows_the_node_address() {
    if !require_root("masquerade_ipv6_tcp_shows_the_node_address") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = topology(&[]);
    let leak = leak_capture(&t.ext);
    let log_path = t.dir.join("peers6.log");
    let server = t.script("peer_log_server.py", PEER_LOG_SERVER);
    let _server = t
        .ext
        .spawn(
            "python3",
            &[&server, "7000", &log_path.to_string_lossy(), "::"],
        )
        .expect("peer log server");
    t.ext
        .wait_listening(7000, false, Duration::from_secs(5))
        .unwrap();
    let clients = t.script("many_clients.py", MANY_CLIENTS);
    for pod in [&t.pods[0], &t.pods[2]] {
        let reachable = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
            ping(
                pod,
                "2001:db8:1::2",
                1,
                Duration::from_millis(100),
                Duration::from_millis(300),
            )
            .is_ok_and(|r| r.received == 1)
        });
        assert!(reachable, "{} does not reach 2001:db8:1::2", pod.name());
        let out = t.python(
            pod,
            &clients,
            &["2001:db8:1::2", "7000", "20"],
            Duration::from_secs(30),
        );
        assert_eq!(out.trim(), "20", "completed from {}", pod.name());
    }
    let peers = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(peers.lines().count(), 40, "{peers}");
    assert!(
        peers.lines().all(|p| p.starts_with("2001:db8:1::1:")),
        "{peers}"
    );
    assert_no_leak(leak);
}

#[test]
fn service_spreads_new_connections_over_three_backends() {
    if !require_root("service_spreads_new_connections_over_three_backends") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = topology(&[]);
    let _servers: Vec<_> = (0..3)
        .map(|i| t.http_server(&t.pods[i], &format!("pod{}", i + 1), 8080))
        .collect();
    t.node
        .ctl_ok(&[
            "service",
            "add",
            "10.96.0.10:80/tcp",
            "backend",
            "10.0.1.2:8080",
            "backend",
            "10.0.2.2:8080",
            "backend",
            "10.0.3.2:8080",
        ])
        .unwrap();
    let list = t.node.ctl_json(&["service", "list"]).unwrap();
    assert_eq!(
        list["services"][0]["backends"].as_array().map(Vec::len),
        Some(3),
        "{list:#}"
    );

    // 36 requests from a client pod, 9 from the external namespace: all answered, all three
    // backends used.
    let gets = t.script("http_gets.py", HTTP_GETS);
    let url = "http://10.96.0.10/";
    let from_pod = t.python(&t.pods[3], &gets, &[url, "36"], Duration::from_secs(60));
    let from_ext = t.python(&t.ext, &gets, &[url, "9"], Duration::from_secs(60));
    for (out, count, client) in [(&from_pod, 36, "pod4"), (&from_ext, 9, "ext")] {
        let mut spread: BTreeMap<&str, usize> = BTreeMap::new();
        for body in out.lines() {
            *spread.entry(body).or_default() += 1;
        }
        assert_eq!(spread.values().sum::<usize>(), count, "{client}: {out}");
        assert!(
            spread.keys().all(|k| ["pod1", "pod2", "pod3"].contains(k)),
            "{client}: {spread:?}"
        );
        if count >= 30 {
            assert_eq!(spread.len(), 3, "{client}'s requests went to {spread:?}");
        }
    }

    // The connections: original tuple to the VIP, reply from the backend it went to.
    let connections = t.connections();
    let mut backends = BTreeSet::new();
    for c in &connections {
        if c["original"]["dst"] == "10.96.0.10" && c["original"]["src"] == "10.0.4.2" {
            assert_eq!(c["original"]["dst_port"], 80, "{c:#}");
            assert_eq!(c["reply"]["src_port"], 8080, "{c:#}");
            assert_eq!(c["reply"]["dst"], "10.0.4.2", "{c:#}");
            backends.insert(c["reply"]["src"].as_str().unwrap_or("").to_string());
        }
    }
    assert_eq!(
        backends,
        BTreeSet::from(["10.0.1.2".into(), "10.0.2.2".into(), "10.0.3.2".into()]),
        "{connections:#?}"
    );
}

#[test]
fn service_backend_removal_keeps_the_established_connection_and_avoids_it() {
    if !require_root("service_backend_removal_keeps_the_established_connection_and_avoids_it") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = topology(&[]);
    let named = t.script("named_echo_server.py", NAMED_ECHO_SERVER);
    let _servers: Vec<_> = t.pods[..3]
        .iter()
        .enumerate()
        .map(|(i, pod)| {
            let s = pod
                .spawn("python3", &[&named, "9000", &format!("pod{}", i + 1)])
                .expect("echo server");
            pod.wait_listening(9000, false, Duration::from_secs(10))
                .unwrap();
            s
        })
        .collect();
    t.node
        .ctl_ok(&[
            "service",
            "add",
            "10.96.0.11:9000/tcp",
            "backend",
            "10.0.1.2:9000",
            "backend",
            "10.0.2.2:9000",
            "backend",
            "10.0.3.2:9000",
        ])
        .unwrap();
    let go = t.dir.join("go");
    let long = t.script("long_client.py", LONG_CLIENT);
    let client = t.pods[3]
        .spawn(
            "python3",
            &[&long, "10.96.0.11", "9000", &go.to_string_lossy()],
        )
        .expect("long client");
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            client.stdout().lines().count() >= 3
        }),
        "no answers on the long connection: {}",
        client.stderr()
    );
    let backend = client
        .stdout()
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string();
    let index: usize = backend.trim_start_matches("pod").parse().expect("podN");
    t.node
        .ctl_ok(&[
            "service",
            "backend",
            "del",
            "10.96.0.11:9000/tcp",
            &format!("10.0.{index}.2:9000"),
        ])
        .unwrap();
    let list = t.node.ctl_json(&["service", "list"]).unwrap();
    assert_eq!(
        list["services"][0]["backends"].as_array().map(Vec::len),
        Some(2),
        "{list:#}"
    );

    // New connections, while the long one keeps exchanging: none to the removed backend.
    let short = t.script("short_clients.py", SHORT_CLIENTS);
    let out = t.python(
        &t.pods[3],
        &short,
        &["10.96.0.11", "9000", "20"],
        Duration::from_secs(60),
    );
    assert_eq!(out.lines().count(), 20, "{out}");
    assert!(
        out.lines().all(|name| name != backend),
        "a new connection went to the removed {backend}:\n{out}"
    );
    let used: BTreeSet<&str> = out.lines().collect();
    assert_eq!(used.len(), 2, "new connections used {used:?}");

    std::fs::write(&go, "").unwrap();
    let status = client
        .wait_timeout(Duration::from_secs(15))
        .expect("long client ends");
    let lines: Vec<String> = client.stdout().lines().map(str::to_string).collect();
    assert!(
        status.success() && lines.len() >= 13,
        "the long connection broke ({status}) after {} answers: {}",
        lines.len(),
        client.stderr()
    );
    let moved: Vec<&String> = lines
        .iter()
        .filter(|l| !l.starts_with(&format!("{backend} ")))
        .collect();
    assert!(
        moved.is_empty(),
        "the established connection moved: {moved:?}"
    );
}

#[test]
fn service_without_backends_refuses_tcp_and_udp_at_once() {
    if !require_root("service_without_backends_refuses_tcp_and_udp_at_once") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = topology(&[]);
    t.node
        .ctl_ok(&["service", "add", "10.96.0.12:80/tcp"])
        .unwrap();
    t.node
        .ctl_ok(&["service", "add", "10.96.0.12:53/udp"])
        .unwrap();
    let before = t.drop_count("service-reject");
    let probe = t.script("probe.py", PROBE);
    // From a pod and from outside: TCP reset, ICMP port unreachable, each well under 1 s.
    for client in [&t.pods[3], &t.ext] {
        for (port, proto) in [("80", "tcp"), ("53", "udp")] {
            let out = t.python(
                client,
                &probe,
                &["10.96.0.12", port, proto],
                Duration::from_secs(20),
            );
            let seconds: f64 = out
                .trim()
                .strip_prefix("refused ")
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("{proto} from {}: not refused: {out}", client.name()));
            assert!(
                seconds < 0.5,
                "{proto} from {} refused after {seconds} s",
                client.name()
            );
        }
    }
    let rejected = t.wait_drop_count("service-reject", before + 4);
    assert!(
        rejected >= before + 4,
        "service-reject {before} -> {rejected}"
    );

    // A backend added later is used at once.
    let _server = t.http_server(&t.pods[0], "pod1", 8080);
    t.node
        .ctl_ok(&[
            "service",
            "backend",
            "add",
            "10.96.0.12:80/tcp",
            "10.0.1.2:8080",
        ])
        .unwrap();
    let gets = t.script("http_gets.py", HTTP_GETS);
    let out = t.python(
        &t.pods[3],
        &gets,
        &["http://10.96.0.12/", "2"],
        Duration::from_secs(20),
    );
    assert_eq!(out.lines().collect::<Vec<_>>(), ["pod1"; 2], "{out}");
}

#[test]
fn hairpin_a_pod_reaches_a_service_whose_only_backend_is_itself() {
    if !require_root("hairpin_a_pod_reaches_a_service_whose_only_backend_is_itself") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = topology(&[]);
    let pod1 = &t.pods[0];
    let server = t.http_server(pod1, "pod1", 8080);
    t.node
        .ctl_ok(&[
            "service",
            "add",
            "10.96.0.20:80/tcp",
            "backend",
            "10.0.1.2:8080",
        ])
        .unwrap();
    let gets = t.script("http_gets.py", HTTP_GETS);
    let out = t.python(
        pod1,
        &gets,
        &["http://10.96.0.20/", "3"],
        Duration::from_secs(30),
    );
    assert_eq!(out.lines().collect::<Vec<_>>(), ["pod1"; 3], "{out}");
    // The backend saw the router's address on its port, not itself.
    let log = server.stderr();
    let peers: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"GET / "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(peers, ["10.0.1.1"; 3], "http.server log:\n{log}");
    let c = t
        .connections()
        .into_iter()
        .find(|c| c["original"]["dst"] == "10.96.0.20");
    let Some(c) = c else {
        panic!("no hairpin connection in {:#?}", t.connections());
    };
    assert_eq!(c["original"]["src"], "10.0.1.2", "{c:#}");
    assert_eq!(c["reply"]["src"], "10.0.1.2", "{c:#}");
    assert_eq!(c["reply"]["dst"], "10.0.1.1", "{c:#}");
}

#[test]
fn node_port_reaches_a_pod_from_the_external_namespace() {
    if !require_root("node_port_reaches_a_pod_from_the_external_namespace") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = topology(&[]);
    let server = t.http_server(&t.pods[1], "pod2", 8080);
    t.node
        .ctl_ok(&[
            "service",
            "add",
            "node-port",
            "30080/tcp",
            "backend",
            "10.0.2.2:8080",
        ])
        .unwrap();
    let gets = t.script("http_gets.py", HTTP_GETS);
    let out = t.python(
        &t.ext,
        &gets,
        &["http://203.0.113.1:30080/", "3"],
        Duration::from_secs(30),
    );
    assert_eq!(out.lines().collect::<Vec<_>>(), ["pod2"; 3], "{out}");
    // Masqueraded to the egress port's address (externalTrafficPolicy: Cluster).
    let log = server.stderr();
    let peers: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"GET / "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(peers, ["10.0.2.1"; 3], "http.server log:\n{log}");
    // A port that is no node port is not answered as one.
    let probe = t.script("probe.py", PROBE);
    let out = t.python(
        &t.ext,
        &probe,
        &["203.0.113.1", "30081", "tcp"],
        Duration::from_secs(20),
    );
    assert_ne!(out.trim(), "connected", "{out}");
}

#[test]
fn connections_expire_after_their_timeouts_and_flush_empties_the_table() {
    if !require_root("connections_expire_after_their_timeouts_and_flush_empties_the_table") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = topology(&["--ct-timeout", "udp=2", "--ct-timeout", "udp-stream=3"]);
    let echo = t.script("udp_echo_server.py", UDP_ECHO_SERVER);
    let _echo = t
        .ext
        .spawn("python3", &[&echo, "198.51.100.1", "5300"])
        .expect("udp echo");
    t.ext
        .wait_listening(5300, true, Duration::from_secs(5))
        .unwrap();
    let _ = t.node.ctl_ok(&["conntrack", "flush"]).unwrap();

    // An unanswered UDP flow (far answers port unreachable, translated back to the pod) and
    // an answered one.
    let probe = t.script("probe.py", PROBE);
    let out = t.python(
        &t.pods[1],
        &probe,
        &["198.51.101.2", "5353", "udp"],
        Duration::from_secs(20),
    );
    assert!(
        out.starts_with("refused"),
        "far answers port unreachable: {out}"
    );
    let exchange = t.script("udp_exchange.py", UDP_EXCHANGE);
    let out = t.python(
        &t.pods[1],
        &exchange,
        &["198.51.100.1", "5300", "3"],
        Duration::from_secs(20),
    );
    assert_eq!(out.trim(), "3", "UDP answers through the masquerade");
    let started = Instant::now();
    let udp = |t: &Topology| -> Vec<(String, String)> {
        t.connections()
            .into_iter()
            .filter(|c| c["original"]["protocol"] == 17)
            .map(|c| {
                (
                    c["original"]["dst"].as_str().unwrap_or("").to_string(),
                    c["state"].to_string().to_ascii_lowercase(),
                )
            })
            .collect()
    };
    let tracked = udp(&t);
    assert_eq!(tracked.len(), 2, "{:#?}", t.connections());
    assert!(
        tracked
            .iter()
            .any(|(dst, state)| dst == "198.51.101.2" && state.contains("unreplied")),
        "{tracked:?}"
    );
    assert!(
        tracked.iter().any(|(dst, state)| dst == "198.51.100.1"
            && state.contains("eplied")
            && !state.contains("unreplied")),
        "{tracked:?}"
    );
    // Both gone after their timeouts (2 s and 3 s), not before the shorter one.
    let mut remaining = tracked.len();
    let mut first_gone = None;
    let gone = wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        let now = udp(&t).len();
        if now < remaining && first_gone.is_none() {
            first_gone = Some(started.elapsed());
        }
        remaining = now;
        now == 0
    });
    assert!(gone, "UDP connections did not expire: {:?}", udp(&t));
    let first_gone = first_gone.unwrap_or_default();
    assert!(
        first_gone >= Duration::from_millis(1500),
        "a UDP connection expired after {first_gone:?}"
    );

    // Flush forgets everything else (a TCP connection in TIME_WAIT here).
    let _server = t.http_server(&t.pods[0], "pod1", 8080);
    t.node
        .ctl_ok(&[
            "service",
            "add",
            "10.96.0.30:80/tcp",
            "backend",
            "10.0.1.2:8080",
        ])
        .unwrap();
    let gets = t.script("http_gets.py", HTTP_GETS);
    t.python(
        &t.pods[3],
        &gets,
        &["http://10.96.0.30/", "2"],
        Duration::from_secs(20),
    );
    let before = t.connections().len();
    assert!(before >= 2, "{:#?}", t.connections());
    let flushed = t.node.ctl_json(&["conntrack", "flush"]).unwrap();
    // The count also includes expired connections not yet reclaimed (the UDP ones above).
    let count = flushed["flushed"].as_u64().unwrap_or(0);
    assert!(count >= before as u64, "{flushed} with {before} listed");
    assert!(t.connections().is_empty(), "{:#?}", t.connections());
    // And the Service still works after the flush.
    let out = t.python(
        &t.pods[3],
        &gets,
        &["http://10.96.0.30/", "1"],
        Duration::from_secs(20),
    );
    assert_eq!(out.trim(), "pod1");
}

#[test]
fn expired_connections_are_reclaimed_and_counted_while_idle() {
    if !require_root("expired_connections_are_reclaimed_and_counted_while_idle") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = topology(&["--ct-timeout", "icmp=1"]);
    let _ = t.node.ctl_ok(&["conntrack", "flush"]).unwrap();
    let expired_before = t.conntrack_counter("expired");
    let result = ping(
        &t.pods[0],
        "198.51.100.1",
        1,
        Duration::from_millis(100),
        Duration::from_secs(1),
    )
    .expect("ping");
    assert_eq!(result.received, 1);
    assert_eq!(t.connections().len(), 1, "{:#?}", t.connections());
    let listed = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        t.connections().is_empty()
    });
    assert!(listed, "the ICMP connection is still listed");
    // No more traffic: the worker's sweep alone must reclaim it (the pipeline's docs: the
    // 64k-slot default table swept in about a second), and `stats` count it.
    let mut stats = serde_json::Value::Null;
    let reclaimed = wait_until(Duration::from_secs(5), Duration::from_millis(200), || {
        stats = t.node.ctl_json(&["conntrack", "stats"]).unwrap();
        stats["conntrack"]["counters"]["expired"]
            .as_u64()
            .unwrap_or(0)
            > expired_before
    });
    assert!(
        reclaimed,
        "5 s after expiring, the connection is not reclaimed: {stats:#}"
    );
    assert_eq!(stats["conntrack"]["counters"]["live"], 0, "{stats:#}");
}
