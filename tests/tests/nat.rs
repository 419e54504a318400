//! NAT end to end (issue 5): pods behind one vrouter node, masqueraded towards an "external"
//! namespace that has no route back to them, and Services load-balanced over pods. Real
//! `vrouter`, `vrouter-control` and `vrouterctl`; real ping, traceroute, iperf3, and small
//! Python servers and clients (python3 is installed by scripts/setup.sh). Needs root (skips
//! visibly otherwise, fails in CI).
//!
//! ```text
//! pod1 10.0.1.2 ── vp1 ┐                 ┌ ve0 203.0.113.1 ── 203.0.113.2 ext ── 198.51.101.1 ── far
//! pod2 10.0.2.2 ── vp2 ├ vrouter (node) ─┘   (masquerade      198.51.100.1/32     198.51.101.2
//! pod3 10.0.3.2 ── vp3 ┘                      10.0.0.0/16)      (no route to 10.0.0.0/16)
//! ```
//! Tests run one at a time (a lock): each starts its own node and the machine has 2 CPUs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use vrouter_tests::{
    iperf3_client, iperf3_server, ping, require_root, wait_until, IperfOptions, Lab, Netns, Node,
};

static SERIAL: Mutex<()> = Mutex::new(());

const CONFIG: &str = r#"
[[port]]
name = "vp1"
addresses = ["10.0.1.1/24"]

[[port]]
name = "vp2"
addresses = ["10.0.2.1/24"]

[[port]]
name = "vp3"
addresses = ["10.0.3.1/24"]

[[port]]
name = "ve0"
addresses = ["203.0.113.1/24"]

[[route]]
prefix = "198.51.0.0/16"
via = "203.0.113.2"

[[snat]]
source = "10.0.0.0/16"
out = "ve0"
"#;

/// A TCP server recording each peer (`IP:PORT` per line) and answering `ok`.
const PEER_LOG_SERVER: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(4096)
with open(sys.argv[2], "a", buffering=1) as log:
    while True:
        c, a = s.accept()
        log.write(f"{a[0]}:{a[1]}\n")
        c.sendall(b"ok\n")
        c.close()
"#;

/// N connections at once; prints how many got `ok`.
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
        print(errors[:3], file=sys.stderr)
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

/// Opens one connection, exchanges a line, waits for the file `argv[3]`, exchanges another.
const LONG_CLIENT: &str = r#"
import os, socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
f = s.makefile("rw")
f.write("first\n"); f.flush(); print(f.readline().strip(), flush=True)
deadline = time.time() + 30
while not os.path.exists(sys.argv[3]) and time.time() < deadline:
    time.sleep(0.05)
f.write("second\n"); f.flush(); print(f.readline().strip(), flush=True)
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

/// How a connection attempt ends: `refused SECONDS` or something else.
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
    far: Netns,
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

    fn connections(&self) -> Vec<serde_json::Value> {
        let json = self
            .node
            .ctl_json(&["conntrack", "list"])
            .expect("conntrack list");
        json["connections"].as_array().cloned().unwrap_or_default()
    }
}

fn topology(vrouter_args: &[&str]) -> Topology {
    let lab = Lab::new().expect("lab");
    let node_ns = lab.netns("node").expect("node namespace");
    let mut pods = Vec::new();
    for i in 1..=3u8 {
        let pod = lab.netns(&format!("pod{i}")).expect("pod namespace");
        lab.veth(&node_ns, &format!("vp{i}"), Some(&pod), "eth0")
            .expect("veth");
        pod.addr_add("eth0", &format!("10.0.{i}.2/24")).unwrap();
        pod.route_add("default", &format!("10.0.{i}.1")).unwrap();
        pods.push(pod);
    }
    // The external router: its own link and a farther network; nothing back to the pods.
    let ext = lab.netns("ext").expect("ext namespace");
    lab.veth(&node_ns, "ve0", Some(&ext), "eth0").expect("veth");
    ext.addr_add("eth0", "203.0.113.2/24").unwrap();
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
        far,
        dir,
        _lab: lab,
    }
}

#[test]
fn masquerade_carries_iperf_ping_traceroute_and_a_thousand_parallel_connections() {
    if !require_root("masquerade_carries_iperf_ping_traceroute_and_a_thousand_parallel_connections")
    {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = topology(&[]);
    let (pod1, pod2) = (&t.pods[0], &t.pods[1]);

    // ping, to the external router and one hop farther.
    for target in ["198.51.100.1", "198.51.101.2"] {
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

    // iperf3: the external server only ever sees the node's address.
    let server = iperf3_server(&t.ext, 5201).expect("iperf3 server");
    let result = iperf3_client(
        pod1,
        "198.51.100.1",
        5201,
        IperfOptions {
            seconds: 2,
            ..IperfOptions::default()
        },
    )
    .expect("iperf3 through the masquerade");
    assert!(
        result.bits_per_second > 50e6,
        "{} bit/s",
        result.bits_per_second
    );
    let _ = server.wait_timeout(Duration::from_secs(5));
    let log = server.stdout();
    assert!(
        log.contains("Accepted connection from 203.0.113.1"),
        "iperf3 server log:\n{log}"
    );
    assert!(!log.contains("10.0.1.2"), "{log}");
    let connections = t.connections();
    assert!(
        connections.iter().any(|c| {
            let c = &c["connection"];
            c["original"]["src"] == "10.0.1.2"
                && c["original"]["dst_port"] == 5201
                && c["reply"]["dst"] == "203.0.113.1"
        }),
        "no iperf3 connection in {connections:#?}"
    );

    // 1000 short connections at once from pod2: all complete, 1000 distinct source ports.
    let log_path = t.dir.join("peers.log");
    let server = t.script("peer_log_server.py", PEER_LOG_SERVER);
    let _server = t
        .ext
        .spawn("python3", &[&server, "7000", &log_path.to_string_lossy()])
        .expect("peer log server");
    t.ext
        .wait_listening(7000, false, Duration::from_secs(5))
        .unwrap();
    let clients = t.script("many_clients.py", MANY_CLIENTS);
    let out = t.python(
        pod2,
        &clients,
        &["198.51.100.1", "7000", "1000"],
        Duration::from_secs(60),
    );
    assert_eq!(out.trim(), "1000", "connections completed: {out}");
    let peers = std::fs::read_to_string(&log_path).unwrap();
    let peers: Vec<&str> = peers.lines().collect();
    assert_eq!(peers.len(), 1000);
    assert!(peers.iter().all(|p| p.starts_with("203.0.113.1:")));
    let ports: BTreeSet<&str> = peers.iter().copied().collect();
    assert_eq!(ports.len(), 1000, "source ports reused");
    let drops = t.node.ctl_ok(&["drops"]).unwrap();
    assert!(
        !drops.contains("snat-ports-exhausted") && !drops.contains("conntrack-full"),
        "{drops}"
    );
}

#[test]
fn services_spread_keep_established_connections_and_refuse_without_backends() {
    if !require_root("services_spread_keep_established_connections_and_refuse_without_backends") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = topology(&[]);

    // HTTP: three backends, each serving its name; clients in the external namespace.
    let mut servers = Vec::new();
    for (i, pod) in t.pods.iter().enumerate() {
        let root = t.dir.join(format!("www{}", i + 1));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("index.html"), format!("pod{}\n", i + 1)).unwrap();
        servers.push(
            pod.spawn(
                "python3",
                &["-m", "http.server", "8080", "-d", &root.to_string_lossy()],
            )
            .expect("http server"),
        );
        let named = t.script("named_echo_server.py", NAMED_ECHO_SERVER);
        servers.push(
            pod.spawn("python3", &[&named, "9000", &format!("pod{}", i + 1)])
                .expect("echo server"),
        );
    }
    for pod in &t.pods {
        pod.wait_listening(8080, false, Duration::from_secs(10))
            .unwrap();
        pod.wait_listening(9000, false, Duration::from_secs(10))
            .unwrap();
    }
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
    let gets = t.script("http_gets.py", HTTP_GETS);
    let out = t.python(
        &t.ext,
        &gets,
        &["http://10.96.0.10/", "45"],
        Duration::from_secs(60),
    );
    let mut spread: BTreeMap<&str, usize> = BTreeMap::new();
    for body in out.lines() {
        *spread.entry(body).or_default() += 1;
    }
    assert_eq!(spread.values().sum::<usize>(), 45, "{out}");
    assert_eq!(
        spread.keys().copied().collect::<Vec<_>>(),
        ["pod1", "pod2", "pod3"],
        "requests went to {spread:?}"
    );
    let list = t.node.ctl_json(&["service", "list"]).unwrap();
    assert_eq!(
        list["services"][0]["backends"].as_array().map(Vec::len),
        Some(3)
    );

    // A long connection survives the removal of its backend; new ones avoid it.
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
    let client = t
        .ext
        .spawn(
            "python3",
            &[&long, "10.96.0.11", "9000", &go.to_string_lossy()],
        )
        .expect("long client");
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            client.stdout().lines().count() >= 1
        }),
        "no first answer: {}",
        client.stderr()
    );
    let first = client.stdout();
    let backend = first.split_whitespace().next().unwrap_or("").to_string();
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
    std::fs::write(&go, "").unwrap();
    let _ = client.wait_timeout(Duration::from_secs(15));
    let lines: Vec<String> = client.stdout().lines().map(str::to_string).collect();
    assert_eq!(
        lines,
        [format!("{backend} first"), format!("{backend} second")],
        "the established connection moved or broke: {}",
        client.stderr()
    );
    let short = t.script("short_clients.py", SHORT_CLIENTS);
    let out = t.python(
        &t.ext,
        &short,
        &["10.96.0.11", "9000", "20"],
        Duration::from_secs(60),
    );
    assert_eq!(out.lines().count(), 20, "{out}");
    assert!(
        out.lines().all(|name| name != backend),
        "a new connection went to the removed {backend}:\n{out}"
    );

    // No backends: TCP refused at once (reset), UDP refused (port unreachable).
    t.node
        .ctl_ok(&["service", "add", "10.96.0.12:80/tcp"])
        .unwrap();
    t.node
        .ctl_ok(&["service", "add", "10.96.0.12:53/udp"])
        .unwrap();
    let probe = t.script("probe.py", PROBE);
    for (port, proto) in [("80", "tcp"), ("53", "udp")] {
        let out = t.python(
            &t.ext,
            &probe,
            &["10.96.0.12", port, proto],
            Duration::from_secs(20),
        );
        let seconds: f64 = out
            .trim()
            .strip_prefix("refused ")
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{proto}: not refused: {out}"));
        assert!(seconds < 1.0, "{proto} refused after {seconds} s");
    }
    // Workers publish their counters periodically: wait for the second refusal to show.
    let rejected = || {
        let drops = t.node.ctl_json(&["drops"]).unwrap();
        drops["drops"]
            .as_array()
            .and_then(|d| d.iter().find(|r| r["reason"] == "service-reject"))
            .and_then(|r| r["count"].as_u64())
            .unwrap_or(0)
    };
    assert!(
        wait_until(
            Duration::from_secs(3),
            Duration::from_millis(100),
            || rejected() >= 2
        ),
        "service-reject drops: {}",
        rejected()
    );
    drop(servers);
}

#[test]
fn hairpin_node_port_and_connection_expiry() {
    if !require_root("hairpin_node_port_and_connection_expiry") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = topology(&["--ct-timeout", "udp=2", "--ct-timeout", "udp-stream=3"]);
    let pod1 = &t.pods[0];
    let root = t.dir.join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), "pod1\n").unwrap();
    let _http = pod1
        .spawn(
            "python3",
            &["-m", "http.server", "8080", "-d", &root.to_string_lossy()],
        )
        .expect("http server");
    pod1.wait_listening(8080, false, Duration::from_secs(10))
        .unwrap();

    // Hairpin: pod1 reaches a Service whose only backend is itself.
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

    // Node port: the external namespace reaches pod1 through the node's address.
    t.node
        .ctl_ok(&[
            "service",
            "add",
            "node-port",
            "30080/tcp",
            "backend",
            "10.0.1.2:8080",
        ])
        .unwrap();
    let out = t.python(
        &t.ext,
        &gets,
        &["http://203.0.113.1:30080/", "2"],
        Duration::from_secs(30),
    );
    assert_eq!(out.lines().collect::<Vec<_>>(), ["pod1"; 2], "{out}");

    // Expiry: a UDP exchange is tracked, then gone after its (shortened) timeout.
    let _ = t.node.ctl_ok(&["conntrack", "flush"]).unwrap();
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
    let udp = |t: &Topology| {
        t.connections()
            .into_iter()
            .filter(|c| c["connection"]["original"]["protocol"] == 17)
            .count()
    };
    assert_eq!(udp(&t), 1, "{:#?}", t.connections());
    let started = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(250), || udp(
            &t
        )
            == 0),
        "the UDP connection did not expire"
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    // Flush forgets everything else.
    let flushed = t.node.ctl_json(&["conntrack", "flush"]).unwrap();
    assert!(flushed["flushed"].as_u64().is_some(), "{flushed}");
    assert!(t.connections().is_empty());
    let _ = &t.far;
}
