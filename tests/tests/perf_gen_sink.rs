//! `vrouter-perf gen` into `vrouter-perf sink` over a bare veth pair between two lab
//! namespaces: the real binary, real AF_XDP sockets, the real XDP program. Needs root (skips
//! visibly otherwise, fails in CI). The veth delivers directly, so at a paced rate every
//! frame must arrive, once, in order.
//!
//! Tests run one at a time (a lock): gen is pinned to CPU 0 and the busy-polling sink to CPU 1.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;
use vrouter_tests::{binary_path, require_root, wait_until, Lab, Netns};

static SERIAL: Mutex<()> = Mutex::new(());

struct Pair {
    a: Netns,
    b: Netns,
    b_mac: String,
    // Last: dropping the lab stops the processes, then removes the namespaces.
    lab: Lab,
}

fn pair() -> Pair {
    let lab = Lab::new().expect("lab");
    let a = lab.netns("a").expect("namespace a");
    let b = lab.netns("b").expect("namespace b");
    lab.veth(&a, "eth0", Some(&b), "eth0").expect("veth");
    let b_mac = b.mac("eth0").expect("MAC of b's veth");
    Pair { a, b, b_mac, lab }
}

/// Runs the sink on b, then the generator on a with `gen_args`; returns both JSON summaries.
fn run(p: &Pair, expect: u64, gen_args: &[&str]) -> (serde_json::Value, serde_json::Value) {
    let bin = binary_path("vrouter-perf").expect("vrouter-perf built");
    let bin = bin.to_str().unwrap();
    let ready = p.lab.dir().join("sink.ready");
    let _ = std::fs::remove_file(&ready);
    let expect_s = expect.to_string();
    let host = p.lab.host();
    let sink = host
        .spawn(
            bin,
            &[
                "--cpu",
                "1",
                "sink",
                "--netns",
                p.b.name(),
                "--iface",
                "eth0",
                "--duration",
                "20",
                "--idle-stop",
                "1",
                "--expect",
                &expect_s,
                "--json",
                "--quiet",
                "--ready-file",
                ready.to_str().unwrap(),
            ],
        )
        .expect("sink starts");
    let up = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        Path::new(&ready).exists() || !sink.is_running()
    });
    assert!(up && sink.is_running(), "sink not ready: {}", sink.stderr());
    let mut args = vec![
        "--cpu",
        "0",
        "gen",
        "--netns",
        p.a.name(),
        "--iface",
        "eth0",
        "--dst-mac",
        &p.b_mac,
        "--count",
        &expect_s,
        "--json",
        "--quiet",
    ];
    args.extend_from_slice(gen_args);
    let gen_out = host
        .run_timeout(bin, &args, Duration::from_secs(30))
        .expect("gen runs");
    let status = sink
        .wait_timeout(Duration::from_secs(25))
        .expect("sink stops");
    assert!(status.success(), "sink failed: {}", sink.stderr());
    let gen: serde_json::Value = serde_json::from_str(gen_out.trim()).expect("gen JSON");
    let sink: serde_json::Value = serde_json::from_str(sink.stdout().trim()).expect("sink JSON");
    (gen, sink)
}

fn u(v: &serde_json::Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing or not a count in {v}"))
}

/// Every frame sent arrived once, in order, with a positive latency.
fn assert_clean(gen: &serde_json::Value, sink: &serde_json::Value, count: u64) {
    assert_eq!(u(gen, "sent"), count, "gen: {gen}");
    assert_eq!(u(gen, "first_seq"), 0);
    assert_eq!(u(gen, "last_seq"), count - 1);
    assert_eq!(u(sink, "received"), count, "sink: {sink}\ngen: {gen}");
    assert_eq!(u(sink, "lost"), 0, "sink: {sink}");
    assert_eq!(u(sink, "duplicates"), 0, "sink: {sink}");
    assert_eq!(u(sink, "reordered"), 0, "sink: {sink}");
    assert_eq!(u(sink, "xsk_rx_dropped"), 0, "sink: {sink}");
    assert!(
        u(&sink["latency_ns"], "p50") > 0,
        "latency p50 must be positive: {sink}"
    );
    assert!(u(&sink["latency_ns"], "min") <= u(&sink["latency_ns"], "max"));
}

#[test]
fn ipv4_udp_paced_arrives_complete_and_in_order() {
    if !require_root("ipv4_udp_paced_arrives_complete_and_in_order") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let p = pair();
    let (gen, sink) = run(
        &p,
        100_000,
        &[
            "--src",
            "10.77.0.1",
            "--dst",
            "10.77.0.2",
            "--rate",
            "50000",
            "--flows",
            "16",
        ],
    );
    assert_clean(&gen, &sink, 100_000);
    assert_eq!(
        u(&sink, "bytes"),
        100_000 * 64,
        "64 B per frame, FCS included"
    );
    // Paced at 50 kpps: 100k frames take about 2 s.
    let secs = gen["duration_s"].as_f64().unwrap();
    assert!((1.9..3.0).contains(&secs), "gen took {secs} s: {gen}");
    let pps = gen["pps"].as_f64().unwrap();
    assert!((40_000.0..=50_100.0).contains(&pps), "gen pps {pps}: {gen}");
    assert_eq!(gen["rate_target"], 50_000);
    assert_eq!(gen["proto"], "udp");
    assert_eq!(gen["ipv6"], false);
    assert!(gen["vxlan"].is_null());
    assert!(gen["cpu_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn ipv4_udp_max_rate_is_counted_consistently() {
    if !require_root("ipv4_udp_max_rate_is_counted_consistently") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let p = pair();
    let count = 200_000;
    let (gen, sink) = run(&p, count, &["--src", "10.77.0.1", "--dst", "10.77.0.2"]);
    assert_eq!(u(&gen, "sent"), count, "gen: {gen}");
    assert_eq!(u(&gen, "rate_target"), 0);
    // At full speed the veth may drop (its ring toward the sink is finite): whatever was
    // sent is either received or lost, never both, and never duplicated.
    assert_eq!(
        u(&sink, "received") + u(&sink, "lost"),
        count,
        "sink: {sink}"
    );
    assert!(u(&sink, "received") > 0, "sink: {sink}");
    assert_eq!(u(&sink, "duplicates"), 0, "sink: {sink}");
    assert_eq!(u(&sink, "reordered"), 0, "sink: {sink}");
    eprintln!(
        "max rate over veth: gen {:.0} pps, sink {:.0} pps, lost {} (socket drops {})",
        gen["pps"].as_f64().unwrap(),
        sink["pps"].as_f64().unwrap(),
        u(&sink, "lost"),
        u(&sink, "xsk_rx_dropped")
    );
}

#[test]
fn ipv6_tcp_syn_and_vxlan_variants_arrive() {
    if !require_root("ipv6_tcp_syn_and_vxlan_variants_arrive") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let p = pair();
    let count = 2_000;
    let cases: [(&str, &[&str], u64); 4] = [
        (
            "IPv6 UDP",
            &["--src", "fd77::1", "--dst", "fd77::2", "--size", "84"],
            84,
        ),
        (
            "IPv6 TCP SYN",
            &[
                "--src", "fd77::1", "--dst", "fd77::2", "--proto", "tcp-syn", "--size", "200",
            ],
            200,
        ),
        (
            "IPv4 in VXLAN over IPv4",
            &[
                "--src",
                "10.77.0.1",
                "--dst",
                "10.77.0.2",
                "--vxlan",
                "42",
                "--outer-src",
                "10.78.0.1",
                "--outer-dst",
                "10.78.0.2",
                "--flows",
                "8",
            ],
            64 + 50,
        ),
        (
            "IPv6 TCP SYN in VXLAN over IPv6",
            &[
                "--src",
                "fd77::1",
                "--dst",
                "fd77::2",
                "--proto",
                "tcp-syn",
                "--size",
                "512",
                "--vxlan",
                "42",
                "--outer-src",
                "fd78::1",
                "--outer-dst",
                "fd78::2",
            ],
            512 + 70,
        ),
    ];
    for (what, args, wire_size) in cases {
        let mut args = args.to_vec();
        args.extend(["--rate", "20000"]);
        let (gen, sink) = run(&p, count, &args);
        assert_clean(&gen, &sink, count);
        assert_eq!(u(&sink, "bytes"), count * wire_size, "{what}: {sink}");
        let vxlan = args.contains(&"--vxlan");
        assert_eq!(u(&sink, "vxlan"), if vxlan { count } else { 0 }, "{what}");
        assert_eq!(gen["ipv6"], args.contains(&"fd77::1"), "{what}");
    }
}

/// Needs no root: the size check happens before any socket is opened.
#[test]
fn too_small_frames_are_rejected_with_the_minimum() {
    let bin = binary_path("vrouter-perf").expect("vrouter-perf built");
    let out = std::process::Command::new(bin)
        .args([
            "gen",
            "--iface",
            "lo",
            "--dst-mac",
            "02:00:00:00:00:02",
            "--src",
            "fd77::1",
            "--dst",
            "fd77::2",
            "--size",
            "64",
            "--count",
            "1",
        ])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--size 84"), "{stderr}");
}

/// SIGTERM stops both with a complete summary; the sink's XDP program leaves with it.
#[test]
fn sigterm_stops_both_with_a_summary_and_no_xdp_program_stays() {
    if !require_root("sigterm_stops_both_with_a_summary_and_no_xdp_program_stays") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let p = pair();
    let bin = binary_path("vrouter-perf").expect("vrouter-perf built");
    let bin = bin.to_str().unwrap();
    let ready = p.lab.dir().join("sink.ready");
    let host = p.lab.host();
    let sink = host
        .spawn(
            bin,
            &[
                "--cpu",
                "1",
                "sink",
                "--netns",
                p.b.name(),
                "--iface",
                "eth0",
                "--duration",
                "20",
                "--json",
                "--quiet",
                "--ready-file",
                ready.to_str().unwrap(),
            ],
        )
        .expect("sink starts");
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
            ready.exists() || !sink.is_running()
        }) && sink.is_running(),
        "sink not ready: {}",
        sink.stderr()
    );
    let xdp_attached = || {
        p.b.ip(&["link", "show", "dev", "eth0"])
            .expect("ip link")
            .contains("xdp")
    };
    assert!(xdp_attached(), "the sink attached its XDP program");
    let gen = host
        .spawn(
            bin,
            &[
                "--cpu",
                "0",
                "gen",
                "--netns",
                p.a.name(),
                "--iface",
                "eth0",
                "--dst-mac",
                &p.b_mac,
                "--src",
                "10.77.0.1",
                "--dst",
                "10.77.0.2",
                "--duration",
                "30",
                "--rate",
                "10000",
                "--json",
                "--quiet",
            ],
        )
        .expect("gen starts");
    std::thread::sleep(Duration::from_millis(1500));
    let status = gen.stop().expect("gen exited");
    assert!(
        status.success(),
        "gen on SIGTERM: {status:?} {}",
        gen.stderr()
    );
    let g: serde_json::Value = serde_json::from_str(gen.stdout().trim()).expect("gen JSON");
    let sent = u(&g, "sent");
    assert!((5_000..=20_000).contains(&sent), "gen: {g}");
    assert_eq!(
        u(&g, "completed"),
        sent,
        "every frame completed before exit: {g}"
    );
    // The sink stops by itself one second after the last frame (--idle-stop 1).
    let status = sink
        .wait_timeout(Duration::from_secs(10))
        .expect("sink stops");
    assert!(status.success(), "{}", sink.stderr());
    let s: serde_json::Value = serde_json::from_str(sink.stdout().trim()).expect("sink JSON");
    assert_eq!(u(&s, "received"), sent, "sink: {s}\ngen: {g}");
    assert_eq!(u(&s, "lost"), 0, "sink: {s}");
    assert!(!xdp_attached(), "the XDP program left with the sink");
}
