//! `vrouter-perf compare SCENARIO...`: our dataplane and the kernel doing the same job on the
//! same topology, measured in one run with the same generator and sink, rounds alternating.
//!
//! # What a run does
//! For each scenario ([`scenario`] describes topologies and the kernel's equivalents):
//! 1. builds its namespaces (`vpc<pid>-<scenario>-{gen,dut,sink}`) and links;
//! 2. for each round, kernel first then ours: sets the DUT up, warms it (a little traffic
//!    until some arrives), and for each frame size and flow count runs the generator as fast
//!    as it can for `--duration` seconds ("max-rate trial"), then tears the DUT down;
//! 3. with `--zero-loss`: ours, then the kernel, are set up once more; for each point an
//!    RFC 2544 binary search finds the highest rate with loss at most `--loss-tolerance`,
//!    and one trial runs at half of *our* zero-loss rate for both, whose latency is compared
//!    (the issue's latency goal);
//! 4. with `--trafgen`: a max-rate run of Debian's trafgen (an independent generator) per
//!    point and dataplane, counted on the links.
//!
//! Placement: the generator and the sink share `--gen-cpu` (the sink sleeps in poll(2)
//! between bursts); our worker, or the kernel's receive processing (RPS on the DUT's ingress
//! link), runs on `--dut-cpu`. Our receive work (XDP redirect, copy into the UMEM) runs in
//! the sender's context on veth unless `--busy-poll` makes the worker drive it. "CPU s/Mpkt" is the DUT CPU's busy time (user, system, irq,
//! softirq) per million delivered frames: ours busy-polls while traffic flows, so it is
//! roughly 1 s divided by our Mpps; the kernel's is the softirq work it did.
//!
//! Output: a progress line per trial on stderr; the table ([`render_markdown`]) on stdout,
//! or the results as JSON with `--json`; `--out FILE` saves the JSON too, which
//! `vrouter-perf report` turns into the tables of BENCHMARKS.md.
//!
//! # Limitations
//! - IPv4 UDP only (the generator does IPv6 and TCP SYNs; no scenario uses them yet).
//! - Copy-mode AF_XDP on veth, 2 vCPUs: absolute figures are this machine's; the ratios are
//!   the point.
//! - The kernel's transmit side (veth to the sink) runs on the DUT CPU in both cases, but the
//!   copy of received frames into our UMEM happens in the generator's `sendto` (veth XDP
//!   runs in the sender's context), so our receive copy is charged to the generator's CPU.

pub mod lab;
pub mod measure;
pub mod scenario;

use lab::{Lab, Result};
use measure::{Bound, Latency, Load, Setup, Trial};
use scenario::{Scenario, Topology};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// `vrouter-perf compare` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// Scenarios to run (in this order).
    #[arg(required = true, value_enum)]
    pub scenarios: Vec<Scenario>,
    /// Frame sizes on the wire, FCS included.
    #[arg(long, value_delimiter = ',', default_value = "64,1500")]
    pub sizes: Vec<u32>,
    /// Flow counts.
    #[arg(long, value_delimiter = ',', default_value = "1,10000")]
    pub flows: Vec<u32>,
    /// Rounds of max-rate trials (alternating kernel and ours); medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Seconds per max-rate trial.
    #[arg(long, default_value_t = 3.0)]
    pub duration: f64,
    /// Also run the RFC 2544 zero-loss search and the latency trial at half our rate.
    #[arg(long)]
    pub zero_loss: bool,
    /// Seconds per search trial.
    #[arg(long, default_value_t = 2.0)]
    pub search_duration: f64,
    /// Largest loss (%) a search trial may have and pass (RFC 2544: 0).
    #[arg(long, default_value_t = 0.0)]
    pub loss_tolerance: f64,
    /// Most trials per search.
    #[arg(long, default_value_t = 8)]
    pub search_steps: usize,
    /// Also cross-check with trafgen (netsniff-ng) as the generator.
    #[arg(long)]
    pub trafgen: bool,
    /// CPU of the generator and the sink.
    #[arg(long, default_value_t = 0)]
    pub gen_cpu: usize,
    /// CPU of the device under test (our worker; the kernel's RPS target).
    #[arg(long, default_value_t = 1)]
    pub dut_cpu: usize,
    /// XDP mode of our ports (generic: our receive work runs on the DUT CPU, as the
    /// kernel's does with RPS; native: in the generator's context).
    #[arg(long, value_enum, default_value_t = measure::XdpMode::Native)]
    pub xdp_mode: measure::XdpMode,
    /// Our worker busy-polls its ports' queues (`vrouter --busy-poll USECS`; 0: off): the
    /// kernel's receive work for them then runs on the DUT CPU, in the worker.
    #[arg(long, default_value_t = 0, value_name = "USECS")]
    pub busy_poll: u32,
    /// Directory of `vrouter` and `vrouter-control` (default: this binary's).
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Print the results as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Save the results (JSON) to this file as well.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Which dataplane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dataplane {
    /// The Linux kernel.
    Kernel,
    /// Ours.
    Vrouter,
}

/// A dataplane's figures at one point.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Figures {
    /// Max-rate trials, one per round.
    pub trials: Vec<Trial>,
    /// RFC 2544 throughput (highest rate with loss within tolerance), pps.
    #[serde(default)]
    pub zero_loss_pps: Option<u64>,
    /// The trial at half of our zero-loss rate.
    #[serde(default)]
    pub at_half_of_ours: Option<Trial>,
    /// trafgen as the generator: (offered, delivered) pps.
    #[serde(default)]
    pub trafgen: Option<(f64, f64)>,
}

impl Figures {
    /// The max-rate trial with the median delivered rate.
    pub fn median(&self) -> Option<&Trial> {
        let mut sorted: Vec<&Trial> = self.trials.iter().collect();
        sorted.sort_by(|a, b| a.delivered_pps.total_cmp(&b.delivered_pps));
        sorted.get(sorted.len().saturating_sub(1) / 2).copied()
    }
}

/// One measurement point.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Point {
    /// Scenario.
    pub scenario: Scenario,
    /// Frame size, FCS included.
    pub size: u32,
    /// Flows.
    pub flows: u32,
    /// The kernel's figures.
    pub kernel: Figures,
    /// Ours.
    pub vrouter: Figures,
}

impl Point {
    fn figures(&mut self, dataplane: Dataplane) -> &mut Figures {
        match dataplane {
            Dataplane::Kernel => &mut self.kernel,
            Dataplane::Vrouter => &mut self.vrouter,
        }
    }
}

/// A whole run, as saved with `--out` and read by `vrouter-perf report`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    /// `vrouter-perf compare`.
    pub tool: String,
    /// This binary's version.
    pub version: String,
    /// When the run started (UTC, RFC 3339).
    pub started: String,
    /// The machine: CPUs and kernel release.
    pub host: String,
    /// The command line.
    pub command: String,
    /// Rounds of max-rate trials.
    pub rounds: usize,
    /// Seconds per max-rate trial.
    pub duration_s: f64,
    /// Zero-loss tolerance, %.
    pub loss_tolerance_pct: f64,
    /// The points.
    pub points: Vec<Point>,
}

/// Runs the comparison.
pub fn run(args: &CompareArgs, stop: Arc<AtomicBool>) -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err("compare needs root (namespaces, XDP, AF_XDP)".into());
    }
    if args.gen_cpu == args.dut_cpu {
        return Err("--gen-cpu and --dut-cpu must differ".into());
    }
    if args.sizes.iter().any(|s| !(64..=1518).contains(s)) {
        return Err("--sizes: 64 to 1518 bytes".into());
    }
    if args.flows.iter().any(|f| *f == 0 || *f > 65_536) {
        return Err("--flows: 1 to 65536".into());
    }
    if !(0.5..=60.0).contains(&args.duration) || !(0.5..=60.0).contains(&args.search_duration) {
        return Err("--duration and --search-duration: 0.5 to 60 s".into());
    }
    if args.rounds == 0 || args.rounds > 20 {
        return Err("--rounds: 1 to 20".into());
    }
    let perf = std::env::current_exe().map_err(|e| format!("this binary: {e}"))?;
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => perf.parent().map(PathBuf::from).unwrap_or_default(),
    };
    for bin in ["vrouter", "vrouter-control"] {
        if !bin_dir.join(bin).exists() {
            return Err(format!(
                "{} not found (build with `cargo build --release --bins`, or give --bin-dir)",
                bin_dir.join(bin).display()
            ));
        }
    }
    if args.trafgen && lab::run("which", &["trafgen"]).is_err() {
        return Err("--trafgen needs trafgen (apt install netsniff-ng)".into());
    }
    let setup = Setup {
        perf,
        bin_dir,
        gen_cpu: args.gen_cpu,
        dut_cpu: args.dut_cpu,
        xdp_mode: args.xdp_mode,
        busy_poll: args.busy_poll,
    };
    let mut results = Results {
        tool: "vrouter-perf compare".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        started: lab::run("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"])
            .unwrap_or_default()
            .trim()
            .into(),
        host: format!(
            "{} CPUs, Linux {}",
            std::thread::available_parallelism().map_or(0, usize::from),
            lab::run("uname", &["-r"]).unwrap_or_default().trim()
        ),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        rounds: args.rounds,
        duration_s: args.duration,
        loss_tolerance_pct: args.loss_tolerance,
        points: Vec::new(),
    };
    let mut progress = |line: &str| eprintln!("{line}");
    let mut failed = Vec::new();
    for &scenario in &args.scenarios {
        if results.points.iter().any(|p| p.scenario == scenario) {
            continue;
        }
        if stop.load(Ordering::Relaxed) {
            failed.push(format!("{}: interrupted", scenario.name()));
            continue;
        }
        // A scenario that fails is reported, and the others still run.
        match run_scenario(args, &setup, scenario, &stop, &mut progress) {
            Ok(points) => results.points.extend(points),
            Err(e) => {
                eprintln!("vrouter-perf: {}: {e}", scenario.name());
                failed.push(format!("{}: {e}", scenario.name()));
            }
        }
    }
    let json = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
    if let Some(path) = &args.out {
        std::fs::write(path, format!("{json}\n"))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("results saved to {}", path.display());
    }
    if args.json {
        println!("{json}");
    } else {
        print!("{}", render_markdown(&results));
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} scenario(s) failed: {}",
            failed.len(),
            failed.join("; ")
        ))
    }
}

fn run_scenario(
    args: &CompareArgs,
    setup: &Setup,
    scenario: Scenario,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Point>> {
    let mut lab = Lab::new()?;
    let topology = Topology::build(&mut lab, scenario)?;
    let loads: Vec<Load> = args
        .sizes
        .iter()
        .flat_map(|&size| args.flows.iter().map(move |&flows| Load { size, flows }))
        .collect();
    let mut points: Vec<Point> = loads
        .iter()
        .map(|l| Point {
            scenario,
            size: l.size,
            flows: l.flows,
            kernel: Figures::default(),
            vrouter: Figures::default(),
        })
        .collect();
    let check = |stop: &AtomicBool| {
        if stop.load(Ordering::Relaxed) {
            Err("interrupted".to_string())
        } else {
            Ok(())
        }
    };
    for round in 1..=args.rounds {
        for dataplane in [Dataplane::Kernel, Dataplane::Vrouter] {
            check(stop)?;
            with_dut(&mut lab, setup, &topology, dataplane, loads[0], |lab| {
                for (load, point) in loads.iter().zip(points.iter_mut()) {
                    check(stop)?;
                    measure::learn(lab, setup, &topology, *load)?;
                    let before = match dataplane {
                        Dataplane::Vrouter => Some(measure::worker_counters(lab, setup)?),
                        Dataplane::Kernel => None,
                    };
                    let mut t = measure::trial(
                        lab,
                        setup,
                        &topology,
                        *load,
                        0,
                        Bound::Duration(args.duration),
                    )?;
                    if let Some(before) = before {
                        let after = measure::worker_counters(lab, setup)?;
                        let seconds = t.sent as f64 / t.offered_pps.max(1.0);
                        t.vrouter = Some(measure::WorkerTime::between(&before, &after, seconds));
                    }
                    progress(&format!(
                        "{} {} B {} flow(s) round {round} {:?}: {}",
                        scenario.name(),
                        load.size,
                        load.flows,
                        dataplane,
                        describe(&t)
                    ));
                    point.figures(dataplane).trials.push(t);
                }
                Ok(())
            })?;
        }
    }
    if args.zero_loss {
        // Ours first: the latency trials of both run at half of our zero-loss rate.
        for dataplane in [Dataplane::Vrouter, Dataplane::Kernel] {
            check(stop)?;
            with_dut(&mut lab, setup, &topology, dataplane, loads[0], |lab| {
                for (load, point) in loads.iter().zip(points.iter_mut()) {
                    check(stop)?;
                    let ceiling = point
                        .figures(dataplane)
                        .median()
                        .map_or(100_000.0, |t| t.delivered_pps.max(t.offered_pps));
                    progress(&format!(
                        "{} {} B {} flow(s) {:?}: zero-loss search",
                        scenario.name(),
                        load.size,
                        load.flows,
                        dataplane
                    ));
                    measure::learn(lab, setup, &topology, *load)?;
                    let (rate, _) = measure::zero_loss(
                        lab,
                        setup,
                        &topology,
                        *load,
                        ceiling,
                        args.search_duration,
                        args.loss_tolerance,
                        args.search_steps,
                        progress,
                    )?;
                    point.figures(dataplane).zero_loss_pps = Some(rate);
                    let half = point.vrouter.zero_loss_pps.unwrap_or(rate) / 2;
                    if half > 0 {
                        let t = measure::trial(
                            lab,
                            setup,
                            &topology,
                            *load,
                            half,
                            Bound::Duration(args.search_duration),
                        )?;
                        progress(&format!(
                            "    at {half} pps (half of our zero-loss rate): {}",
                            describe(&t)
                        ));
                        point.figures(dataplane).at_half_of_ours = Some(t);
                    }
                }
                Ok(())
            })?;
        }
    }
    if args.trafgen {
        // trafgen's PACKET_MMAP ring stalls when veth's receive work is deferred to another
        // context (RPS for the kernel, busy polling for us: a few hundred pps measured), so
        // both receive in trafgen's context here: the kernel without RPS, we without busy
        // polling (veth's native XDP).
        let setup = &Setup {
            busy_poll: 0,
            ..setup.clone()
        };
        for dataplane in [Dataplane::Kernel, Dataplane::Vrouter] {
            check(stop)?;
            with_dut(&mut lab, setup, &topology, dataplane, loads[0], |lab| {
                for (load, point) in loads.iter().zip(points.iter_mut()) {
                    check(stop)?;
                    measure::learn(lab, setup, &topology, *load)?;
                    let got = measure::trafgen(lab, setup, &topology, *load, args.duration)?;
                    if let Some((offered, delivered)) = got {
                        progress(&format!(
                            "{} {} B {} flow(s) {:?}: trafgen offered {:.0} pps, delivered {:.0} pps",
                            scenario.name(),
                            load.size,
                            load.flows,
                            dataplane,
                            offered,
                            delivered
                        ));
                    }
                    point.figures(dataplane).trafgen = got;
                }
                Ok(())
            })?;
        }
    }
    Ok(points)
}

/// Sets the DUT up as `dataplane`, warms it, runs `body`, and tears it down (also when
/// `body` fails).
fn with_dut(
    lab: &mut Lab,
    setup: &Setup,
    topology: &Topology,
    dataplane: Dataplane,
    warm: Load,
    body: impl FnOnce(&mut Lab) -> Result<()>,
) -> Result<()> {
    match dataplane {
        Dataplane::Kernel => topology.kernel_on(lab, setup.dut_cpu)?,
        Dataplane::Vrouter => measure::vrouter_on(lab, setup, topology)?,
    }
    let mut outcome = measure::warm_up(lab, setup, topology, warm).and_then(|()| body(lab));
    if let (Err(e), Dataplane::Vrouter) = (&outcome, dataplane) {
        // What our processes said is the first thing to read when they did not forward.
        let tail = |label: &str| {
            let log = lab.log(label);
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(8)..].join("\n")
        };
        let status = measure::status(lab, setup, topology).unwrap_or_else(|e| e.to_string());
        outcome = Err(format!(
            "{e}\n--- vrouter log:\n{}\n--- vrouter-control log:\n{}\n--- status:\n{status}",
            tail("vrouter"),
            tail("vrouter-control")
        ));
    }
    match dataplane {
        Dataplane::Kernel => topology.kernel_off(lab)?,
        Dataplane::Vrouter => measure::vrouter_off(lab, topology)?,
    }
    outcome.map_err(|e| format!("{} {:?}: {e}", topology.scenario.name(), dataplane))
}

fn describe(t: &Trial) -> String {
    let mut line = format!(
        "delivered {:.0} pps of {:.0} offered (loss {:.3}%), p50 {} p99 {}, DUT CPU {:.2} s/Mpkt",
        t.delivered_pps,
        t.offered_pps,
        t.loss_pct,
        micros(t.latency.p50),
        micros(t.latency.p99),
        t.cpu_s_per_mpkt
    );
    if let Some(w) = &t.vrouter {
        let _ = write!(
            line,
            "; worker: batch {:.1}, pipeline {:.0} ns/pkt ({:.0}% of the time), in TX kicks {:.0} ns/pkt, in RX polls {:.0} ns/pkt, {:.3} wakeups/pkt, TX ring full {}, RX dropped {} (RX ring full {}, fill ring empty {})",
            w.batch,
            w.pipeline_ns,
            100.0 * w.pipeline_share,
            w.tx_kick_ns,
            w.rx_poll_ns,
            w.wakeups_per_packet,
            w.tx_ring_full,
            w.rx_dropped,
            optional(w.rx_ring_full),
            optional(w.fill_ring_empty)
        );
    }
    line
}

/// A counter that older result files lack: `-`.
fn optional(count: Option<u64>) -> String {
    count.map_or("-".into(), |c| c.to_string())
}

fn micros(ns: u64) -> String {
    format!("{:.1} µs", ns as f64 / 1000.0)
}

fn ratio(ours: f64, kernel: f64) -> String {
    if kernel > 0.0 {
        format!("{:.2}", ours / kernel)
    } else {
        "-".into()
    }
}

/// The goal of the issue for a scenario: our delivered pps over the kernel's.
pub fn goal(scenario: Scenario) -> Option<f64> {
    match scenario {
        Scenario::Fwd => Some(1.0),
        Scenario::Nat | Scenario::VxlanEncap => Some(1.5),
        Scenario::Full => Some(2.0),
        Scenario::VxlanDecap | Scenario::Acl10k => None,
    }
}

/// The results as markdown: the max-rate table, and the zero-loss/latency and trafgen tables
/// when the run has them.
pub fn render_markdown(results: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Max-rate trials: medians of {} round(s) of {} s; `{}`; {}; started {}.\n",
        results.rounds, results.duration_s, results.command, results.host, results.started
    );
    out.push_str(
        "| scenario | frame | flows | kernel pps | vrouter pps | ours/kernel | goal | loss % kernel / ours | p99 µs kernel / ours | DUT CPU s/Mpkt kernel / ours |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for p in &results.points {
        let (Some(k), Some(v)) = (p.kernel.median(), p.vrouter.median()) else {
            continue;
        };
        let achieved = if k.delivered_pps > 0.0 {
            v.delivered_pps / k.delivered_pps
        } else {
            0.0
        };
        let goal = goal(p.scenario).map_or("-".to_string(), |g| {
            format!("≥ {g} {}", if achieved >= g { "met" } else { "**missed**" })
        });
        let _ = writeln!(
            out,
            "| {} | {} B | {} | {:.0} | {:.0} | **{}** | {} | {:.2} / {:.2} | {:.1} / {:.1} | {:.2} / {:.2} |",
            p.scenario.name(),
            p.size,
            p.flows,
            k.delivered_pps,
            v.delivered_pps,
            ratio(v.delivered_pps, k.delivered_pps),
            goal,
            k.loss_pct,
            v.loss_pct,
            k.latency.p99 as f64 / 1000.0,
            v.latency.p99 as f64 / 1000.0,
            k.cpu_s_per_mpkt,
            v.cpu_s_per_mpkt
        );
    }
    let timed: Vec<(&Point, &measure::WorkerTime)> = results
        .points
        .iter()
        .filter_map(|p| Some((p, p.vrouter.median()?.vrouter.as_ref()?)))
        .collect();
    if !timed.is_empty() {
        out.push_str(
            "\nWhere our worker's time went in those trials (its own counters: `vrouterctl stats`, `drops`):\n\n\
             | scenario | frame | flows | frames/batch | pipeline ns/pkt | pipeline share of the time | stages (ns/pkt) | in TX kicks ns/pkt | in RX busy polls ns/pkt | wakeup syscalls/pkt | TX ring full | RX dropped by the kernel | of which RX ring full | fill ring found empty |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for (p, w) in timed {
            let stages: Vec<String> = w
                .stages
                .iter()
                .map(|(name, ns)| format!("{name} {ns:.0}"))
                .collect();
            let _ = writeln!(
                out,
                "| {} | {} B | {} | {:.1} | {:.0} | {:.0}% | {} | {:.0} | {:.0} | {:.3} | {} | {} | {} | {} |",
                p.scenario.name(),
                p.size,
                p.flows,
                w.batch,
                w.pipeline_ns,
                100.0 * w.pipeline_share,
                stages.join(", "),
                w.tx_kick_ns,
                w.rx_poll_ns,
                w.wakeups_per_packet,
                w.tx_ring_full,
                w.rx_dropped,
                optional(w.rx_ring_full),
                optional(w.fill_ring_empty)
            );
        }
    }
    let searched: Vec<&Point> = results
        .points
        .iter()
        .filter(|p| p.vrouter.zero_loss_pps.is_some() || p.kernel.zero_loss_pps.is_some())
        .collect();
    if !searched.is_empty() {
        let _ = writeln!(
            out,
            "\nZero-loss rate (RFC 2544 binary search, loss ≤ {}%) and latency at half of our zero-loss rate (both dataplanes offered the same rate):\n",
            results.loss_tolerance_pct
        );
        out.push_str(
            "| scenario | frame | flows | zero-loss pps kernel | ours | ours/kernel | offered pps | p50 µs kernel / ours | p99 µs kernel / ours | p99.9 µs kernel / ours | p99 goal |\n\
             |---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for p in searched {
            let k = p.kernel.zero_loss_pps.unwrap_or(0);
            let v = p.vrouter.zero_loss_pps.unwrap_or(0);
            let kl = p.kernel.at_half_of_ours.as_ref().map(|t| t.latency);
            let vl = p.vrouter.at_half_of_ours.as_ref().map(|t| t.latency);
            let offered = p
                .vrouter
                .at_half_of_ours
                .as_ref()
                .map_or(0, |t| t.rate_target);
            let pair = |f: fn(&Latency) -> u64| match (kl, vl) {
                (Some(k), Some(v)) => {
                    format!(
                        "{:.1} / {:.1}",
                        f(&k) as f64 / 1000.0,
                        f(&v) as f64 / 1000.0
                    )
                }
                _ => "-".into(),
            };
            let p99_goal = match (kl, vl) {
                (Some(k), Some(v)) if v.p99 <= k.p99 => "met",
                (Some(_), Some(_)) => "**missed**",
                _ => "-",
            };
            let _ = writeln!(
                out,
                "| {} | {} B | {} | {} | {} | **{}** | {} | {} | {} | {} | {} |",
                p.scenario.name(),
                p.size,
                p.flows,
                k,
                v,
                ratio(v as f64, k as f64),
                offered,
                pair(|l| l.p50),
                pair(|l| l.p99),
                pair(|l| l.p999),
                p99_goal
            );
        }
    }
    let crossed: Vec<&Point> = results
        .points
        .iter()
        .filter(|p| p.vrouter.trafgen.is_some() && p.kernel.trafgen.is_some())
        .collect();
    if !crossed.is_empty() {
        out.push_str(
            "\nCross-check with trafgen (netsniff-ng) as the generator, counted on the links:\n\n\
             | scenario | frame | flows | trafgen offered pps (kernel run) | delivered kernel | delivered ours | ours/kernel | with our gen |\n\
             |---|---|---|---|---|---|---|---|\n",
        );
        for p in crossed {
            let (ko, kd) = p.kernel.trafgen.unwrap_or_default();
            let (_, vd) = p.vrouter.trafgen.unwrap_or_default();
            let ours = match (p.kernel.median(), p.vrouter.median()) {
                (Some(k), Some(v)) => ratio(v.delivered_pps, k.delivered_pps),
                _ => "-".into(),
            };
            let _ = writeln!(
                out,
                "| {} | {} B | {} | {:.0} | {:.0} | {:.0} | **{}** | {} |",
                p.scenario.name(),
                p.size,
                p.flows,
                ko,
                kd,
                vd,
                ratio(vd, kd),
                ours
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(delivered_pps: f64, p99: u64) -> Trial {
        Trial {
            delivered_pps,
            offered_pps: delivered_pps,
            sent: 1000,
            delivered: 1000,
            latency: Latency {
                p50: p99 / 2,
                p99,
                p999: p99 * 2,
                max: p99 * 3,
            },
            ..Trial::default()
        }
    }

    fn results() -> Results {
        Results {
            tool: "vrouter-perf compare".into(),
            version: "0".into(),
            started: "2026-11-21T00:00:00Z".into(),
            host: "2 CPUs".into(),
            command: "vrouter-perf compare fwd".into(),
            rounds: 3,
            duration_s: 3.0,
            loss_tolerance_pct: 0.0,
            points: vec![Point {
                scenario: Scenario::Fwd,
                size: 64,
                flows: 1,
                kernel: Figures {
                    trials: vec![trial(300.0, 10), trial(100.0, 10), trial(200.0, 10)],
                    zero_loss_pps: Some(180),
                    at_half_of_ours: Some(trial(100.0, 5_000)),
                    trafgen: Some((400.0, 250.0)),
                },
                vrouter: Figures {
                    trials: vec![trial(500.0, 10), trial(300.0, 10), trial(400.0, 10)],
                    zero_loss_pps: Some(360),
                    at_half_of_ours: Some(trial(180.0, 4_000)),
                    trafgen: Some((400.0, 375.0)),
                },
            }],
        }
    }

    #[test]
    fn the_median_is_a_real_trial_and_ratios_use_it() {
        let r = results();
        assert_eq!(r.points[0].kernel.median().unwrap().delivered_pps, 200.0);
        assert_eq!(r.points[0].vrouter.median().unwrap().delivered_pps, 400.0);
        assert!(Figures::default().median().is_none());
        let text = render_markdown(&r);
        assert!(
            text.contains("| fwd | 64 B | 1 | 200 | 400 | **2.00** | ≥ 1 met |"),
            "{text}"
        );
        // Zero-loss ratio, the offered rate of the latency trial, p99 4.0 vs 5.0 µs: met.
        assert!(
            text.contains("| fwd | 64 B | 1 | 180 | 360 | **2.00** | 0 | 2.5 / 2.0 | 5.0 / 4.0 |"),
            "{text}"
        );
        assert!(text.contains("| met |"), "{text}");
        // trafgen: 375 / 250.
        assert!(text.contains("**1.50** | 2.00 |"), "{text}");
        // Round trip through the saved form.
        let json = serde_json::to_string(&r).unwrap();
        let back: Results = serde_json::from_str(&json).unwrap();
        assert_eq!(render_markdown(&back), text);
    }
}
