//! One measurement: the sink and the generator as child processes (this binary's `sink` and
//! `gen`), the DUT's CPU time from /proc/stat, the RFC 2544 zero-loss search built on it, and
//! the trafgen cross-check.

use super::lab::{cpu_busy_seconds, run, Lab, Result};
use super::scenario::{Scenario, Topology};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the binaries are and which CPUs to use.
#[derive(Clone, Debug)]
pub struct Setup {
    /// This binary (`gen` and `sink`).
    pub perf: PathBuf,
    /// `vrouter` and `vrouter-control`.
    pub bin_dir: PathBuf,
    /// CPU of the generator and the sink.
    pub gen_cpu: usize,
    /// CPU of the device under test: our worker, or the kernel's receive processing (RPS).
    pub dut_cpu: usize,
    /// XDP mode of our ports.
    pub xdp_mode: XdpMode,
    /// `vrouter --busy-poll` (µs; 0: off).
    pub busy_poll: u32,
}

/// How our ports' XDP program is attached in a comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Generic (skb) mode with RPS on the ingress link: the redirect and the copy into our
    /// UMEM run on the DUT's CPU, as the kernel's forwarding does.
    Generic,
    /// veth's native mode: the redirect and the copy run in the sender's context (the
    /// generator's CPU), which then offers less.
    Native,
}

/// One-way latency percentiles, ns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Maximum.
    pub max: u64,
}

/// What one trial measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// The generator's rate target (0: as fast as it could).
    pub rate_target: u64,
    /// Frames sent.
    pub sent: u64,
    /// The generator's achieved rate, pps.
    pub offered_pps: f64,
    /// Distinct frames the sink received.
    pub delivered: u64,
    /// `delivered` over the generator's sending time, pps.
    pub delivered_pps: f64,
    /// `(sent - delivered) / sent`, %.
    pub loss_pct: f64,
    /// One-way latency of the delivered frames.
    pub latency: Latency,
    /// Busy seconds of the DUT's CPU while the generator ran.
    pub dut_cpu_s: f64,
    /// `dut_cpu_s` per million delivered frames.
    pub cpu_s_per_mpkt: f64,
    /// Where our dataplane's time went during the trial (our trials only).
    #[serde(default)]
    pub vrouter: Option<WorkerTime>,
}

/// Our worker's own account of a trial, from `vrouterctl stats` and `drops` before and
/// after it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerTime {
    /// Frames the pipeline received.
    pub packets: u64,
    /// Frames per RX batch.
    pub batch: f64,
    /// Per pipeline stage: name and ns per packet of the stage.
    pub stages: Vec<(String, f64)>,
    /// Pipeline ns per received frame (the stages summed).
    pub pipeline_ns: f64,
    /// Share of the trial's wall time the worker spent in the pipeline (the rest: ring
    /// operations, syscalls, polling).
    pub pipeline_share: f64,
    /// Wakeup syscalls (TX kicks, RX wakeups) per frame.
    pub wakeups_per_packet: f64,
    /// ns per frame inside TX kicks (copy mode: the kernel's transmission, skb and copy).
    #[serde(default)]
    pub tx_kick_ns: f64,
    /// ns per frame inside busy polls (the kernel's receive work: XDP and the copy in).
    #[serde(default)]
    pub rx_poll_ns: f64,
    /// Frames a full TX ring refused.
    pub tx_ring_full: u64,
    /// Frames the kernel dropped before our RX ring: RX ring full, no fill-ring frame.
    pub rx_dropped: u64,
    /// Of those, frames dropped because the RX ring was full (the worker fell behind).
    /// `None` in results saved before it was counted.
    #[serde(default)]
    pub rx_ring_full: Option<u64>,
    /// Times the kernel found the fill ring empty (frames not handed back in time).
    #[serde(default)]
    pub fill_ring_empty: Option<u64>,
}

/// Our worker's cumulative counters at one instant (see [`WorkerTime`]).
#[derive(Clone, Debug, Default)]
pub struct WorkerCounters {
    stages: Vec<(String, u64, u64, u64)>,
    wakeups: u64,
    tx_kick_nanos: u64,
    rx_poll_nanos: u64,
    tx_dropped: u64,
    rx_dropped: u64,
    rx_ring_full: u64,
    fill_ring_empty: u64,
}

/// `vrouterctl ARGS...` against our dataplane's control socket in the lab.
fn vrouterctl(lab: &Lab, setup: &Setup, args: &[&str]) -> Result<String> {
    let ctl = setup.bin_dir.join("vrouterctl");
    let socket = lab.dir().join("control.sock");
    let mut all = vec!["--socket", socket.to_str().unwrap_or_default()];
    all.extend_from_slice(args);
    run(ctl.to_str().unwrap_or("vrouterctl"), &all)
}

/// `vrouterctl status`, `port list` and `drops` of our dataplane, the DUT links' kernel
/// counters (now and at our start) and the DUT's threads, for an error message.
pub fn status(lab: &Lab, setup: &Setup, topology: &Topology) -> Result<String> {
    let mut out = dut_links(lab, topology);
    for args in [&["status"][..], &["port", "list"], &["drops"]] {
        match vrouterctl(lab, setup, args) {
            Ok(text) => out.push_str(&text),
            Err(e) => out.push_str(&format!("{e}\n")),
        }
    }
    out.push_str("--- links when our dataplane started:\n");
    out.push_str(&std::fs::read_to_string(lab.dir().join(LINKS_AT_START)).unwrap_or_default());
    out.push_str("--- generator and sink links now:\n");
    for (ns, dev) in [(&topology.gen_ns, "g0"), (&topology.sink_ns, "s0")] {
        out.push_str(&lab.ip(ns, &["-s", "link", "show", dev]).unwrap_or_default());
    }
    // Whether our threads run at all: what tells a stuck worker from frames going elsewhere
    // (the links' lines above name the XDP program each port runs).
    out.push_str(&format!(
        "--- threads in the DUT namespace:\n{}",
        threads(topology)
    ));
    std::thread::sleep(Duration::from_secs(1));
    out.push_str(&format!("--- 1 s later:\n{}", threads(topology)));
    Ok(out)
}

/// File in the lab directory with the DUT links' counters at our dataplane's start.
const LINKS_AT_START: &str = "links-at-start.txt";

/// Every thread of every process in the DUT namespace: name, state, CPU ticks, wait channel.
fn threads(topology: &Topology) -> String {
    let pids = run("ip", &["netns", "pids", &topology.dut_ns]).unwrap_or_default();
    let mut out = String::new();
    for pid in pids.split_whitespace() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        let mut tasks: Vec<_> = tasks.flatten().map(|t| t.path()).collect();
        tasks.sort();
        for task in tasks {
            let stat = std::fs::read_to_string(task.join("stat")).unwrap_or_default();
            let wchan = std::fs::read_to_string(task.join("wchan")).unwrap_or_default();
            // `pid (comm) state ...`: the comm may hold spaces, so split after its ')'.
            let (head, rest) = stat.rsplit_once(") ").unwrap_or((&stat, ""));
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let field = |i: usize| fields.get(i).copied().unwrap_or("?");
            out.push_str(&format!(
                "{head}) state {} utime {} stime {} cpu {} wchan {wchan}\n",
                field(0),
                field(11),
                field(12),
                field(36),
            ));
        }
    }
    out
}

/// The DUT links as the kernel sees them: `ip -s link` (counters, and the XDP program
/// attached) and the non-zero `ethtool -S` counters (veth's XDP packets, redirects, drops).
fn dut_links(lab: &Lab, topology: &Topology) -> String {
    let mut out = String::new();
    for dev in ["d0", "d1"] {
        out.push_str(
            &lab.ip(&topology.dut_ns, &["-s", "link", "show", dev])
                .unwrap_or_default(),
        );
        out.push_str(
            &lab.exec(&topology.dut_ns, &["ethtool", "-S", dev])
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.trim_end().ends_with(": 0"))
                .map(|l| format!("{dev} {}\n", l.trim()))
                .collect::<String>(),
        );
    }
    out
}

/// Saves the DUT links' counters for [`status`].
fn save_links(lab: &Lab, topology: &Topology) {
    let _ = std::fs::write(lab.dir().join(LINKS_AT_START), dut_links(lab, topology));
}

/// Reads our worker's counters through `vrouterctl`.
pub fn worker_counters(lab: &Lab, setup: &Setup) -> Result<WorkerCounters> {
    let query = |args: &[&str]| -> Result<Value> {
        let out = vrouterctl(lab, setup, args)?;
        serde_json::from_str(&out).map_err(|e| format!("vrouterctl {}: {e}", args.join(" ")))
    };
    let stats = query(&["-j", "stats"])?;
    let drops = query(&["-j", "drops", "all"])?;
    let stats = &stats["stats"];
    let u = |v: &Value| v.as_u64().unwrap_or(0);
    let stages = stats["stages"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s[0].as_str().unwrap_or("?").to_string(),
                        u(&s[1]["calls"]),
                        u(&s[1]["packets"]),
                        u(&s[1]["nanos"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let rx_dropped = drops["drops"]
        .as_array()
        .and_then(|d| d.iter().find(|r| r["reason"] == "xsk-kernel-rx-dropped"))
        .map_or(0, |r| u(&r["count"]));
    Ok(WorkerCounters {
        stages,
        wakeups: u(&stats["wakeups"]),
        tx_kick_nanos: u(&stats["tx_kick_nanos"]),
        rx_poll_nanos: u(&stats["rx_poll_nanos"]),
        tx_dropped: u(&stats["tx_dropped"]),
        rx_dropped,
        rx_ring_full: u(&stats["rx_ring_full"]),
        fill_ring_empty: u(&stats["fill_ring_empty"]),
    })
}

impl WorkerTime {
    /// What happened between two readings `seconds` apart.
    pub fn between(before: &WorkerCounters, after: &WorkerCounters, seconds: f64) -> WorkerTime {
        let mut stages = Vec::new();
        let (mut packets, mut calls, mut nanos) = (0u64, 0u64, 0u64);
        for (name, c1, p1, n1) in &after.stages {
            let (c0, p0, n0) = before
                .stages
                .iter()
                .find(|s| &s.0 == name)
                .map_or((0, 0, 0), |s| (s.1, s.2, s.3));
            let (c, p, n) = (c1 - c0, p1 - p0, n1 - n0);
            if name == "ethernet-input" {
                packets = p;
                calls = c;
            }
            nanos += n;
            if p > 0 {
                stages.push((name.clone(), n as f64 / p as f64));
            }
        }
        let per = |x: u64| {
            if packets == 0 {
                0.0
            } else {
                x as f64 / packets as f64
            }
        };
        WorkerTime {
            packets,
            batch: if calls == 0 {
                0.0
            } else {
                packets as f64 / calls as f64
            },
            stages,
            pipeline_ns: per(nanos),
            pipeline_share: nanos as f64 / 1e9 / seconds.max(1e-9),
            wakeups_per_packet: per(after.wakeups - before.wakeups),
            tx_kick_ns: per(after.tx_kick_nanos - before.tx_kick_nanos),
            rx_poll_ns: per(after.rx_poll_nanos - before.rx_poll_nanos),
            tx_ring_full: after.tx_dropped - before.tx_dropped,
            rx_dropped: after.rx_dropped - before.rx_dropped,
            rx_ring_full: Some(after.rx_ring_full - before.rx_ring_full),
            fill_ring_empty: Some(after.fill_ring_empty - before.fill_ring_empty),
        }
    }
}

/// The frames of a measurement point.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    /// Frame size on the wire, FCS included.
    pub size: u32,
    /// Flows.
    pub flows: u32,
}

/// Runs the sink, then the generator for `duration` at `rate` pps (0: as fast as it can),
/// and collects both summaries.
pub fn trial(
    lab: &Lab,
    setup: &Setup,
    topology: &Topology,
    load: Load,
    rate: u64,
    bound: Bound,
) -> Result<Trial> {
    let ready = lab.dir().join("sink.ready");
    let _ = std::fs::remove_file(&ready);
    let sink_out = lab.dir().join("sink.json");
    let sink_log = lab.dir().join("sink.log");
    let limit = bound.seconds() + 15.0;
    let mut sink = ChildGuard(
        Command::new(&setup.perf)
            .args(["--cpu", &setup.gen_cpu.to_string(), "sink"])
            .args(["--netns", &topology.sink_ns, "--iface", "s0"])
            .args(["--duration", &format!("{limit}"), "--idle-stop", "0.5"])
            .args(["--wait", "poll", "--json", "--quiet", "--ready-file"])
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(file(&sink_out)?)
            .stderr(file(&sink_log)?)
            .spawn()
            .map_err(|e| format!("{}: {e}", setup.perf.display()))?,
    );
    let started = Instant::now();
    while !ready.exists() {
        if started.elapsed() > Duration::from_secs(10) || sink.exited() {
            return Err(format!(
                "the sink did not start: {}",
                std::fs::read_to_string(&sink_log)
                    .unwrap_or_default()
                    .trim()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut gen = Command::new(&setup.perf);
    gen.args(["--cpu", &setup.gen_cpu.to_string(), "gen"])
        .args(topology.gen_args())
        .args(["--size", &load.size.to_string()])
        .args(["--flows", &load.flows.to_string()])
        .args(["--rate", &rate.to_string(), "--json", "--quiet"]);
    match bound {
        Bound::Duration(secs) => gen.args(["--duration", &format!("{secs}")]),
        Bound::Count(n) => gen.args(["--count", &n.to_string(), "--duration", "30"]),
    };
    let cpu_before = cpu_busy_seconds(setup.dut_cpu)?;
    let output = gen
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", setup.perf.display()))?;
    let cpu_after = cpu_busy_seconds(setup.dut_cpu)?;
    if !output.status.success() {
        return Err(format!(
            "the generator failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let gen: Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("the generator's summary: {e}"))?;
    // The sink stops 0.5 s after the last frame; one that got nothing would wait out its
    // whole duration, so it is told to stop (it still writes its summary) once whatever was
    // in flight has had time to arrive.
    if !sink.wait(SINK_GRACE) {
        sink.terminate();
        if !sink.wait(Duration::from_secs(5)) {
            return Err("the sink did not stop".into());
        }
    }
    let sink: Value = serde_json::from_str(&std::fs::read_to_string(&sink_out).unwrap_or_default())
        .map_err(|e| {
            format!(
                "the sink's summary: {e}: {}",
                std::fs::read_to_string(&sink_log)
                    .unwrap_or_default()
                    .trim()
            )
        })?;
    let u = |v: &Value, key: &str| v[key].as_u64().unwrap_or(0);
    let f = |v: &Value, key: &str| v[key].as_f64().unwrap_or(0.0);
    let sent = u(&gen, "sent");
    let seconds = f(&gen, "duration_s").max(1e-9);
    let delivered = match sink.get("unique").and_then(Value::as_u64) {
        Some(unique) => unique,
        None => u(&sink, "received").saturating_sub(u(&sink, "duplicates")),
    }
    .min(sent);
    let latency = &sink["latency_ns"];
    let dut_cpu_s = (cpu_after - cpu_before).max(0.0);
    Ok(Trial {
        rate_target: rate,
        sent,
        offered_pps: f(&gen, "pps"),
        delivered,
        delivered_pps: delivered as f64 / seconds,
        loss_pct: if sent == 0 {
            0.0
        } else {
            100.0 * (sent - delivered) as f64 / sent as f64
        },
        latency: Latency {
            p50: u(latency, "p50"),
            p99: u(latency, "p99"),
            p999: u(latency, "p999"),
            max: u(latency, "max"),
        },
        dut_cpu_s,
        cpu_s_per_mpkt: if delivered == 0 {
            0.0
        } else {
            dut_cpu_s / (delivered as f64 / 1e6)
        },
        vrouter: None,
    })
}

/// How long a generator runs.
#[derive(Clone, Copy, Debug)]
pub enum Bound {
    /// Seconds.
    Duration(f64),
    /// Frames (within 30 s).
    Count(u64),
}

impl Bound {
    fn seconds(self) -> f64 {
        match self {
            Bound::Duration(secs) => secs,
            Bound::Count(_) => 30.0,
        }
    }
}

/// RFC 2544 throughput: the highest rate at which `loss_pct <= tolerance`, by binary search
/// between 0 and `ceiling` (the rate delivered at full speed, plus 10%), trials of `seconds`,
/// until the bounds are within 2% or after `steps` trials. Returns the rate and the trial at
/// it (`None` if no rate tried passed).
#[allow(clippy::too_many_arguments)]
pub fn zero_loss(
    lab: &Lab,
    setup: &Setup,
    topology: &Topology,
    load: Load,
    ceiling: f64,
    seconds: f64,
    tolerance: f64,
    steps: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<(u64, Option<Trial>)> {
    let mut low = 0.0f64;
    let mut high = ceiling.max(1000.0) * 1.1;
    let mut best = None;
    // RFC 2544 starts at the top: a DUT that keeps up at full rate needs one trial.
    let mut rate = ceiling.max(1000.0);
    for _ in 0..steps {
        let t = trial(
            lab,
            setup,
            topology,
            load,
            rate as u64,
            Bound::Duration(seconds),
        )?;
        let pass = t.loss_pct <= tolerance;
        progress(&format!(
            "    search {:>9.0} pps: loss {:.4}% {}",
            rate,
            t.loss_pct,
            if pass { "pass" } else { "fail" }
        ));
        if pass {
            // A generator that could not offer the target rate (by more than 2%): what it
            // did offer passed, and no higher rate can be tried.
            let limited = t.offered_pps < 0.98 * rate;
            low = if limited { t.offered_pps } else { rate };
            best = Some(t);
            if limited {
                break;
            }
        } else {
            high = rate;
        }
        if high - low <= 0.02 * high {
            break;
        }
        rate = (low + high) / 2.0;
    }
    Ok((low as u64, best))
}

/// What trafgen (netsniff-ng), an independent generator, got through: offered and delivered
/// pps from the links' counters (`g0` transmitted, `s0` received) over `seconds` at full
/// speed, `load.flows` flows by source port. Plain UDP sources only (`None` for
/// `vxlan-decap`, whose inner flows trafgen's header syntax cannot vary).
pub fn trafgen(
    lab: &Lab,
    setup: &Setup,
    topology: &Topology,
    load: Load,
    seconds: f64,
) -> Result<Option<(f64, f64)>> {
    if topology.scenario == Scenario::VxlanDecap {
        return Ok(None);
    }
    let (src, dst) = topology.endpoints();
    let src_mac = lab.mac(&topology.gen_ns, "g0")?;
    let payload = load.size.saturating_sub(4 + 14 + 20 + 8);
    let flows = load.flows.clamp(1, 50_000);
    let sport = if flows == 1 {
        "10000".to_string()
    } else {
        format!("dinc(10000, {}, 1)", 10_000 + flows - 1)
    };
    let config = format!(
        "{{ eth(da={}, sa={src_mac}), ipv4(saddr={src}, daddr={dst}, ttl=64), udp(sp={sport}, dp=9), fill(0x00, {payload}) }}\n",
        topology.d0_mac(),
    );
    let conf = lab.dir().join("trafgen.cfg");
    std::fs::write(&conf, config).map_err(|e| format!("{}: {e}", conf.display()))?;
    let counter = |ns: &str, path: &str| -> Result<u64> {
        lab.exec(ns, &["cat", path])?
            .trim()
            .parse()
            .map_err(|e| format!("{path}: {e}"))
    };
    // Without RPS: trafgen's PACKET_MMAP ring stalls when veth hands its frames to another
    // CPU's backlog (~900 pps measured here, against ~590k without), so in this run the
    // kernel forwards in trafgen's context, as our native-mode XDP receives in it.
    topology.set_rps(lab, None)?;
    let tx = "/sys/class/net/g0/statistics/tx_packets";
    let rx = "/sys/class/net/s0/statistics/rx_packets";
    let (tx0, rx0) = (
        counter(&topology.gen_ns, tx)?,
        counter(&topology.sink_ns, rx)?,
    );
    let started = Instant::now();
    // trafgen's worker is a child of its own: the run gets a process group of its own, and
    // the whole group is interrupted after `seconds` (and killed if it lingers).
    use std::os::unix::process::CommandExt;
    let mut child = Command::new("ip")
        .args(["netns", "exec", &topology.gen_ns, "taskset", "-c"])
        .arg(setup.gen_cpu.to_string())
        .args(["trafgen", "--dev", "g0", "--cpus", "1", "-q", "--conf"])
        .arg(&conf)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("trafgen: {e}"))?;
    let group = format!("-{}", child.id());
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let _ = run("kill", &["-INT", "--", &group]);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut status = None;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if status.is_none() {
        let _ = run("kill", &["-KILL", "--", &group]);
        let _ = child.wait();
    }
    let stderr = child
        .stderr
        .take()
        .map(|mut e| {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut e, &mut text);
            text
        })
        .unwrap_or_default();
    let elapsed = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    let (tx1, rx1) = (
        counter(&topology.gen_ns, tx)?,
        counter(&topology.sink_ns, rx)?,
    );
    if tx1 == tx0 {
        return Err(format!("trafgen sent nothing: {}", stderr.trim()));
    }
    Ok(Some((
        (tx1 - tx0) as f64 / elapsed,
        (rx1 - rx0) as f64 / elapsed,
    )))
}

/// Starts our dataplane in the DUT namespace with the scenario's configuration: `vrouter`
/// (one worker on the DUT CPU, adaptive idle) and `vrouter-control`.
pub fn vrouter_on(lab: &mut Lab, setup: &Setup, topology: &Topology) -> Result<()> {
    if setup.xdp_mode == XdpMode::Generic {
        topology.set_rps(lab, Some(setup.dut_cpu))?;
    }
    save_links(lab, topology);
    let dir = lab.dir().to_path_buf();
    let config = dir.join("vrouter.toml");
    std::fs::write(&config, topology.vrouter_config())
        .map_err(|e| format!("{}: {e}", config.display()))?;
    let state = dir.join("state");
    let _ = std::fs::remove_dir_all(&state);
    let vsock = dir.join("vrouter.sock");
    let csock = dir.join("control.sock");
    let _ = std::fs::remove_file(&vsock);
    let _ = std::fs::remove_file(&csock);
    let ns = topology.dut_ns.clone();
    lab.spawn(
        "vrouter",
        &ns,
        &setup.bin_dir.join("vrouter"),
        &[
            "--socket",
            &vsock.to_string_lossy(),
            "--cores",
            &setup.dut_cpu.to_string(),
            "--idle",
            "adaptive",
            "--xdp-mode",
            match setup.xdp_mode {
                XdpMode::Generic => "generic",
                XdpMode::Native => "native",
            },
            "--busy-poll",
            &setup.busy_poll.to_string(),
            "--log-level",
            "warn",
        ],
    )?;
    wait_for(&vsock, Duration::from_secs(10), || lab.running("vrouter"))
        .map_err(|e| format!("vrouter: {e}: {}", lab.log("vrouter").trim()))?;
    lab.spawn(
        "vrouter-control",
        &ns,
        &setup.bin_dir.join("vrouter-control"),
        &[
            "--vrouter-socket",
            &vsock.to_string_lossy(),
            "--listen",
            &csock.to_string_lossy(),
            "--state-dir",
            &state.to_string_lossy(),
            "--config",
            &config.to_string_lossy(),
            "--log-level",
            "warn",
        ],
    )?;
    wait_for(&csock, Duration::from_secs(10), || {
        lab.running("vrouter-control")
    })
    .map_err(|e| {
        format!(
            "vrouter-control: {e}: {}",
            lab.log("vrouter-control").trim()
        )
    })?;
    wait_in_sync(lab, setup)
}

/// Waits until vrouter-control reports the configuration applied by the dataplane: only then
/// are the ports' sockets in their XSK maps. Until then the XDP program passes every frame
/// to the kernel, so traffic sent earlier is lost (a 10k-rule policy takes a while to
/// compile on a busy machine).
fn wait_in_sync(lab: &mut Lab, setup: &Setup) -> Result<()> {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < Duration::from_secs(60) {
        if !lab.running("vrouter") || !lab.running("vrouter-control") {
            return Err(format!(
                "our dataplane exited while loading its configuration: {}{}",
                lab.log("vrouter").trim(),
                lab.log("vrouter-control").trim()
            ));
        }
        match vrouterctl(lab, setup, &["-j", "status"]) {
            Ok(out) => {
                let answer: Value = serde_json::from_str(&out).unwrap_or_default();
                let status = &answer["status"];
                if status["in_sync"].as_bool() == Some(true) {
                    return Ok(());
                }
                last = status["last_error"]
                    .as_str()
                    .unwrap_or("not in sync")
                    .to_string();
            }
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "the dataplane did not take its configuration in 60 s: {last}"
    ))
}

/// Stops our dataplane (its XDP programs go with it).
pub fn vrouter_off(lab: &mut Lab, topology: &Topology) -> Result<()> {
    lab.stop("vrouter-control");
    lab.stop("vrouter");
    topology.set_rps(lab, None)
}

/// RFC 2544's learning frames (section 23): one frame per flow of `load`, at a moderate rate,
/// before a point's trials, so that both dataplanes meet the trial with their per-flow state
/// in place (our flow cache, the kernel's connection tracking) and the trial measures the
/// steady state. What a first packet costs us is measured by `vrouter-perf pipeline`
/// (`slow-path`), not here.
pub fn learn(lab: &Lab, setup: &Setup, topology: &Topology, load: Load) -> Result<()> {
    let frames = u64::from(load.flows.max(1));
    trial(
        lab,
        setup,
        topology,
        load,
        LEARNING_PPS,
        Bound::Count(frames),
    )
    .map(drop)
}

/// Rate of the learning frames: far below every dataplane's zero-loss rate here.
const LEARNING_PPS: u64 = 50_000;

/// Sends a little traffic until some of it arrives (configuration loaded, caches warm):
/// 2000 frames at 20k pps per attempt, for at most 30 s.
pub fn warm_up(lab: &Lab, setup: &Setup, topology: &Topology, load: Load) -> Result<()> {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < Duration::from_secs(30) {
        match trial(lab, setup, topology, load, 20_000, Bound::Count(2000)) {
            Ok(t) if t.delivered > 0 => return Ok(()),
            Ok(t) => last = format!("{} of {} frames arrived", t.delivered, t.sent),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Err(format!("no traffic got through the DUT in 30 s ({last})"))
}

fn wait_for(path: &Path, limit: Duration, mut alive: impl FnMut() -> bool) -> Result<()> {
    let started = Instant::now();
    while !path.exists() {
        if !alive() {
            return Err("exited".into());
        }
        if started.elapsed() > limit {
            return Err(format!("{} did not appear", path.display()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn file(path: &Path) -> Result<std::fs::File> {
    std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// How long the sink may take to stop by itself after the generator's end: far above the
/// worst latency measured (the kernel with 10k rules, ~110 ms p99).
const SINK_GRACE: Duration = Duration::from_secs(3);

/// A child process killed and reaped when dropped.
struct ChildGuard(Child);

impl ChildGuard {
    /// Asks the child to stop (SIGTERM).
    fn terminate(&mut self) {
        let _ = run("kill", &["-TERM", &self.0.id().to_string()]);
    }

    fn exited(&mut self) -> bool {
        !matches!(self.0.try_wait(), Ok(None))
    }

    /// Waits up to `limit` for the child to exit by itself.
    fn wait(&mut self, limit: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.exited() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if !self.exited() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}
