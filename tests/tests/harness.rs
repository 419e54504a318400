//! Self-test of the harness: real namespaces, a veth, ping and iperf3, and cleanup.
//! Needs root; skips (or fails under CI) otherwise.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use vrouter_tests::*;

fn assert_netns_gone(names: &[String]) {
    let now = list_netns().unwrap();
    for name in names {
        assert!(
            !now.contains(name),
            "namespace {name} still exists: {now:?}"
        );
    }
}

fn pair(lab: &Lab) -> (Netns, Netns) {
    let a = lab.netns("a").unwrap();
    let b = lab.netns("b").unwrap();
    lab.veth(&a, "eth0", Some(&b), "eth0").unwrap();
    a.addr_add("eth0", "10.0.1.1/24").unwrap();
    b.addr_add("eth0", "10.0.1.2/24").unwrap();
    (a, b)
}

#[test]
fn ping_and_iperf3_across_a_veth() {
    if !require_root("ping_and_iperf3_across_a_veth") {
        return;
    }
    let names;
    {
        let lab = Lab::new().unwrap();
        let (a, b) = pair(&lab);
        names = vec![a.name().to_string(), b.name().to_string()];

        // One RX and one TX queue per end.
        let queues = a.run("ls", &["/sys/class/net/eth0/queues"]).unwrap();
        assert_eq!(
            queues.split_whitespace().collect::<Vec<_>>(),
            ["rx-0", "tx-0"]
        );

        let r = ping(
            &a,
            "10.0.1.2",
            3,
            Duration::from_millis(100),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!((r.transmitted, r.received), (3, 3), "{}", r.output);
        assert_eq!(r.loss_percent, 0.0);
        assert!(r.rtt_avg_ms.is_some());

        let _server = iperf3_server(&b, 5201).unwrap();
        let tcp = iperf3_client(&a, "10.0.1.2", 5201, IperfOptions::default()).unwrap();
        assert!(tcp.bits_per_second > 0.0, "{:?}", tcp.raw_json["end"]);
        assert!(tcp.retransmits.is_some());

        let _server = iperf3_server(&b, 5202).unwrap();
        let udp = iperf3_client(
            &a,
            "10.0.1.2",
            5202,
            IperfOptions {
                udp: true,
                bitrate: Some("10M".into()),
                ..IperfOptions::default()
            },
        )
        .unwrap();
        assert!(udp.packets.unwrap_or(0) > 0, "{:?}", udp.raw_json["end"]);
        assert!(udp.lost_percent.is_some());
        assert!(udp.bits_per_second > 1e6);
    }
    assert_netns_gone(&names);
}

#[test]
fn ttl_errors_and_frag_needed_are_reported() {
    if !require_root("ttl_errors_and_frag_needed_are_reported") {
        return;
    }
    let lab = Lab::new().unwrap();
    let a = lab.netns("a").unwrap();
    let r = lab.netns("r").unwrap();
    let b = lab.netns("b").unwrap();
    lab.veth(&a, "eth0", Some(&r), "ra").unwrap();
    lab.veth(&b, "eth0", Some(&r), "rb").unwrap();
    a.addr_add("eth0", "10.0.1.2/24").unwrap();
    r.addr_add("ra", "10.0.1.1/24").unwrap();
    r.addr_add("rb", "10.0.2.1/24").unwrap();
    b.addr_add("eth0", "10.0.2.2/24").unwrap();
    a.route_add("default", "10.0.1.1").unwrap();
    b.route_add("default", "10.0.2.1").unwrap();
    r.sysctl("net.ipv4.ip_forward", "1").unwrap();
    r.set_mtu("rb", 1400).unwrap();

    let fast = PingOptions {
        count: 1,
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(1),
        ..PingOptions::default()
    };
    let ttl = ping_with(
        &a,
        "10.0.2.2",
        PingOptions {
            ttl: Some(1),
            ..fast.clone()
        },
    )
    .unwrap();
    assert_eq!(ttl.received, 0);
    assert!(ttl.has_error("Time to live exceeded"), "{}", ttl.output);

    let big = PingOptions {
        dont_fragment: true,
        size: Some(1450),
        ..fast
    };
    let frag = ping_with(&a, "10.0.2.2", big).unwrap();
    assert_eq!(frag.frag_needed_mtu, Some(1400), "{}", frag.output);
}

/// True once `pid` no longer runs a program whose command line contains `word`.
fn process_gone(pid: u32, word: &str) -> bool {
    wait_until(Duration::from_secs(2), Duration::from_millis(20), || {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        !String::from_utf8_lossy(&cmdline).contains(word)
    })
}

#[test]
fn everything_is_removed_when_the_test_panics() {
    if !require_root("everything_is_removed_when_the_test_panics") {
        return;
    }
    let mut names = Vec::new();
    let mut host_link = String::new();
    let mut pids = Vec::new();
    let mut dir = None;
    let result = catch_unwind(AssertUnwindSafe(|| {
        let lab = Lab::new().unwrap();
        dir = Some(lab.dir().to_path_buf());
        let a = lab.netns("a").unwrap();
        names.push(a.name().to_string());
        host_link = lab.ifname("h");
        lab.veth(&a, "eth0", None, &host_link).unwrap();
        // A spawned process that ignores SIGTERM and whose handle is leaked...
        let stubborn = a
            .spawn("sh", &["-c", "trap '' TERM; echo started; sleep 30"])
            .unwrap();
        pids.push(stubborn.pid());
        std::mem::forget(stubborn);
        // ...and a process in the namespace that the harness never saw.
        let orphan = a
            .run("sh", &["-c", "sleep 30 >/dev/null 2>&1 & echo $!"])
            .unwrap();
        pids.push(orphan.trim().parse().unwrap());
        panic!("test failure inside the lab");
    }));
    assert!(result.is_err());
    assert_netns_gone(&names);
    let links = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains(&format!(" {host_link}@")), "{links}");
    assert!(process_gone(pids[0], "sleep"));
    assert!(process_gone(pids[1], "sleep"));
    // Logs are kept for a failed test.
    let dir = dir.unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("00-sh.stdout")).unwrap(),
        "started\n"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn commands_are_bounded_and_failures_explained() {
    if !require_root("commands_are_bounded_and_failures_explained") {
        return;
    }
    let lab = Lab::new().unwrap();
    let a = lab.netns("a").unwrap();
    let start = Instant::now();
    assert!(a
        .exec("sleep", &["10"], Duration::from_millis(200))
        .is_err());
    assert!(start.elapsed() < Duration::from_secs(3));

    let err = a
        .run("ip", &["link", "set", "nosuchdev", "up"])
        .unwrap_err();
    assert!(err.message().contains("nosuchdev"), "{err}");
    assert!(err.message().contains(a.name()), "{err}");

    // The host handle refuses interfaces that are not the lab's.
    assert!(lab.host().link_up("lo").is_err());
    assert!(lab.host().route_add("default", "10.0.1.1").is_err());
}

#[test]
fn cleanup_stale_removes_only_dead_labs() {
    if !require_root("cleanup_stale_removes_only_dead_labs") {
        return;
    }
    let live = Lab::new().unwrap();
    let live_ns = live.netns("live").unwrap();

    // A namespace of a "crashed" lab: its owner file names our pid with a wrong start time.
    let dead_prefix = format!("vrt{}-4000000000", std::process::id() % 100_000);
    let dead_dir = state_dir().join(&dead_prefix);
    std::fs::create_dir_all(&dead_dir).unwrap();
    std::fs::write(
        dead_dir.join("owner"),
        format!("{} 1\n", std::process::id()),
    )
    .unwrap();
    let dead_ns = format!("{dead_prefix}-x");
    let output = std::process::Command::new("ip")
        .args(["netns", "add", &dead_ns])
        .status()
        .unwrap();
    assert!(output.success());

    let removed = cleanup_stale().unwrap();
    std::fs::remove_dir_all(&dead_dir).unwrap();
    assert!(removed.contains(&dead_ns), "{removed:?}");
    let now = list_netns().unwrap();
    assert!(!now.contains(&dead_ns));
    assert!(now.contains(&live_ns.name().to_string()));
}
