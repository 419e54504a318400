//! `vrouter-perf compare` end to end: it builds its namespaces, runs the kernel and our
//! vrouter with the real generator and sink, saves the results, and `vrouter-perf report`
//! renders them into a document's generated region. Needs root (skips visibly otherwise,
//! fails in CI). Short trials: this checks that the figures are measured and consistent,
//! not how large they are (BENCHMARKS.md has those).

use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use vrouter_tests::{binary_path, require_root};

/// One comparison at a time: each pins its generator and DUT to the machine's two CPUs.
static SERIAL: Mutex<()> = Mutex::new(());

/// Namespaces a compare run creates: `vpc<pid>-<scenario>-{gen,dut,sink}`.
fn compare_namespaces(pid: u32) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("vpc{pid}-")))
        .map(String::from)
        .collect()
}

#[test]
fn compare_measures_the_kernel_and_us_and_report_renders_the_tables() {
    if !require_root("compare_measures_the_kernel_and_us_and_report_renders_the_tables") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bin = binary_path("vrouter-perf").expect("vrouter-perf built");
    let dir = std::env::temp_dir().join(format!("vrouter-compare-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let results = dir.join("results.json");
    let started = Instant::now();
    let mut child = Command::new(&bin)
        .args([
            "compare", "fwd", "nat", "--sizes", "64,1500", "--flows", "1,100",
        ])
        .args(["--rounds", "1", "--duration", "1", "--out"])
        .arg(&results)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("compare starts");
    let pid = child.id();
    // Bounded: kill it (its namespaces are then checked below) after 4 minutes.
    let deadline = started + Duration::from_secs(240);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(status.success(), "compare failed: {status}\n{stderr}");
    assert!(
        compare_namespaces(pid).is_empty(),
        "namespaces left: {:?}",
        compare_namespaces(pid)
    );
    // One progress line per trial: 2 scenarios x 4 points x 2 dataplanes.
    assert_eq!(
        stderr.lines().filter(|l| l.contains(" round 1 ")).count(),
        16,
        "{stderr}"
    );
    assert!(stdout.contains("| fwd | 64 B | 1 |"), "{stdout}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&results).unwrap()).unwrap();
    let points = json["points"].as_array().unwrap();
    assert_eq!(points.len(), 8);
    for p in points {
        let what = format!("{} {} B {} flows", p["scenario"], p["size"], p["flows"]);
        for dataplane in ["kernel", "vrouter"] {
            let t = &p[dataplane]["trials"][0];
            let sent = t["sent"].as_u64().unwrap();
            let delivered = t["delivered"].as_u64().unwrap();
            assert!(sent > 10_000, "{what} {dataplane}: sent {sent}");
            assert!(
                delivered <= sent && delivered as f64 >= 0.5 * sent as f64,
                "{what} {dataplane}: {delivered} of {sent} delivered"
            );
            let loss = t["loss_pct"].as_f64().unwrap();
            let expected = 100.0 * (sent - delivered) as f64 / sent as f64;
            assert!((loss - expected).abs() < 1e-6, "{what}: loss {loss}");
            assert!(t["latency"]["p50"].as_u64().unwrap() > 0, "{what}");
            assert!(
                t["latency"]["p50"].as_u64() <= t["latency"]["p99"].as_u64(),
                "{what}"
            );
            assert!(t["dut_cpu_s"].as_f64().unwrap() > 0.0, "{what} {dataplane}");
        }
        // Our worker's own account covers at least the frames the sink got.
        let worker = &p["vrouter"]["trials"][0]["vrouter"];
        assert!(
            worker["packets"].as_u64().unwrap()
                >= p["vrouter"]["trials"][0]["delivered"].as_u64().unwrap(),
            "{what}: {worker}"
        );
        // The kernel's drops for our sockets are split: those of a full RX ring are part of
        // them; fill-ring-empty events are counted beside them.
        let dropped = worker["rx_dropped"].as_u64().unwrap();
        let ring_full = worker["rx_ring_full"].as_u64().unwrap();
        assert!(ring_full <= dropped, "{what}: {worker}");
        assert!(worker["fill_ring_empty"].is_u64(), "{what}: {worker}");
        assert!(p["kernel"]["trials"][0]["vrouter"].is_null());
    }

    // report: the same tables, into the generated region of a document.
    let doc = dir.join("BENCH.md");
    std::fs::write(
        &doc,
        "# B\nkept\n<!-- vrouter-perf report: begin -->\nstale\n<!-- vrouter-perf report: end -->\ntail\n",
    )
    .unwrap();
    let report = Command::new(&bin)
        .arg("report")
        .arg(&results)
        .arg("--update")
        .arg(&doc)
        .output()
        .unwrap();
    assert!(report.status.success(), "{report:?}");
    let text = std::fs::read_to_string(&doc).unwrap();
    assert!(
        text.starts_with("# B\nkept\n")
            && text.ends_with("<!-- vrouter-perf report: end -->\ntail\n")
    );
    assert!(!text.contains("stale"));
    assert!(text.contains("| nat | 1500 B | 100 |"), "{text}");
    // A document without the region is refused and left alone.
    std::fs::write(&doc, "no region\n").unwrap();
    let refused = Command::new(&bin)
        .arg("report")
        .arg(&results)
        .arg("--update")
        .arg(&doc)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert_eq!(std::fs::read_to_string(&doc).unwrap(), "no region\n");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_busy_polling_vrouter_forwards_and_receives_in_its_own_thread() {
    if !require_root("a_busy_polling_vrouter_forwards_and_receives_in_its_own_thread") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bin = binary_path("vrouter-perf").expect("vrouter-perf built");
    let output = Command::new(&bin)
        .args([
            "compare", "fwd", "--sizes", "64", "--flows", "1", "--rounds", "1",
        ])
        .args(["--duration", "1", "--busy-poll", "50", "--json"])
        .output()
        .expect("compare runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let t = &json["points"][0]["vrouter"]["trials"][0];
    let delivered = t["delivered"].as_u64().unwrap();
    assert!(
        delivered as f64 >= 0.5 * t["sent"].as_u64().unwrap() as f64,
        "{t}"
    );
    // The worker drove its queue: it spent time inside busy polls doing the kernel's
    // receive work (without busy polling it makes no such call: exactly 0). How much of that
    // work the polls get, against the deferral timer's softirq, depends on timing.
    let in_polls = t["vrouter"]["rx_poll_ns"].as_f64().unwrap();
    assert!(in_polls > 0.0, "no time in busy polls: {t}");
}
