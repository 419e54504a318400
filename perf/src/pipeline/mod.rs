//! `vrouter-perf pipeline`: the in-memory dataplane on prebuilt frames, one core.
//!
//! Scenarios (run in this order, all by default):
//! - `lpm-10`, `lpm-10k`, `lpm-1m`: IPv4 route lookup alone ([`lpm`]);
//! - `vrf-small`: table memory of small VRFs ([`vrf`]);
//! - `maglev-lookup`, `maglev-build`: Service backend choice by Maglev hashing, lookup and
//!   table build ([`maglev`]);
//! - `slow-path`: the whole pipeline with every packet missing the flow cache ([`traffic`]);
//! - `flow-hit-1`, `flow-hit-10k`, `flow-hit-1m`: the flow-cache hit path ([`traffic`]);
//! - `vxlan-encap`, `vxlan-decap`, `vxlan-decap-csum`: overlay traffic on the flow-cache hit
//!   path ([`overlay`]);
//! - `conntrack-hit`, `conntrack-setup`, `conntrack-1m`: the connection table's hit path, new
//!   connections per second with port allocation, memory of 1M connections ([`conntrack`]);
//! - `nat-hit`, `nat-setup`, `service-select`: NAT through the whole pipeline: masqueraded
//!   flows on the flow-cache hit path against plain ones, new masqueraded connections, new
//!   connections to a Service of 100 backends ([`nat`]).
//!
//! Each scenario prints one line (or one JSON object): the median ns/packet over the runs,
//! Mpps on one core, table memory and, where relevant, flow-cache memory, stage statistics and
//! the targets of the brief. Every timed loop is checked: a scenario whose packets are not
//! all transmitted (or whose flow cache did not behave as the scenario says) fails with an
//! error instead of reporting a figure.
//!
//! Run it pinned: `taskset -c 1 vrouter-perf pipeline` (or `--cpu 1`).

mod acl;
mod conntrack;
mod gen;
mod lpm;
mod maglev;
mod nat;
mod overlay;
mod report;
mod traffic;
mod vrf;

use clap::{Args, ValueEnum};
use report::ScenarioResult;
use std::io::Write;

/// Arguments of `vrouter-perf pipeline`.
#[derive(Debug, Args)]
pub struct PipelineArgs {
    /// Scenario to run (repeat the flag for several); every scenario when omitted.
    #[arg(long = "scenario", value_enum, value_name = "NAME")]
    scenarios: Vec<Scenario>,
    /// Print the results as a JSON array instead of one text line per scenario.
    #[arg(long)]
    json: bool,
    /// Packets (lookups for the LPM scenarios) per timed run [default: 5000000, 1000000 with
    /// --quick].
    #[arg(long, value_name = "N")]
    packets: Option<u64>,
    /// Timed runs per scenario; the median is reported [default: 5, 3 with --quick].
    #[arg(long, value_name = "N")]
    runs: Option<usize>,
    /// Keep runs during which another process took the CPU instead of repeating them (up to
    /// 3x the runs); for instruction counting under valgrind, where every run must be the same.
    #[arg(long)]
    no_repeat: bool,
    /// Shorter and fewer runs: a smoke test, noisier figures.
    #[arg(long)]
    quick: bool,
    /// Experiment: back every heap block of 4 MiB or more (flow cache, big LPM tables, frame
    /// pools) with transparent huge pages (madvise), to show what TLB misses cost.
    #[arg(long)]
    huge_pages: bool,
}

/// The scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Scenario {
    /// IPv4 LPM, 10 routes.
    #[value(name = "lpm-10")]
    Lpm10,
    /// IPv4 LPM, 10,000 routes.
    #[value(name = "lpm-10k")]
    Lpm10k,
    /// IPv4 LPM, 1,000,000 routes.
    #[value(name = "lpm-1m")]
    Lpm1m,
    /// Memory of one small VRF (10 routes) and of 1000 of them.
    #[value(name = "vrf-small")]
    VrfSmall,
    /// Maglev backend choice: lookups, 100 backends.
    #[value(name = "maglev-lookup")]
    MaglevLookup,
    /// Maglev table build: 10, 100, 1000 backends, weighted.
    #[value(name = "maglev-build")]
    MaglevBuild,
    /// ACL classification, 10 rules.
    #[value(name = "acl-10")]
    Acl10,
    /// ACL classification, 1000 rules.
    #[value(name = "acl-1k")]
    Acl1k,
    /// ACL classification, 10,000 rules (and the ratio to 10 rules).
    #[value(name = "acl-10k")]
    Acl10k,
    /// Full pipeline, every packet a flow-cache miss.
    #[value(name = "slow-path")]
    SlowPath,
    /// Flow-cache hit path, 1 flow.
    #[value(name = "flow-hit-1")]
    FlowHit1,
    /// Flow-cache hit path, 10,000 flows.
    #[value(name = "flow-hit-10k")]
    FlowHit10k,
    /// Flow-cache hit path, 1,000,000 flows.
    #[value(name = "flow-hit-1m")]
    FlowHit1m,
    /// `flow-hit-10k` with 10,003-rule ACLs on both ports (established flows).
    #[value(name = "acl-established")]
    AclEstablished,
    /// VXLAN encapsulation on the hit path, 1024 flows.
    #[value(name = "vxlan-encap")]
    VxlanEncap,
    /// VXLAN decapsulation then the hit path, 1024 flows.
    #[value(name = "vxlan-decap")]
    VxlanDecap,
    /// VXLAN decapsulation with a verified outer UDP checksum, 1024 flows.
    #[value(name = "vxlan-decap-csum")]
    VxlanDecapCsum,
    /// Connection table hit path (lookup + update + NAT tuple), 100,000 connections.
    #[value(name = "conntrack-hit")]
    ConntrackHit,
    /// New connections: lookup miss + SNAT port allocation + create, steady state.
    #[value(name = "conntrack-setup")]
    ConntrackSetup,
    /// Connection table memory with 1,000,000 connections (and its hit path).
    #[value(name = "conntrack-1m")]
    Conntrack1m,
    /// Masqueraded UDP flows on the flow-cache hit path, 1024 flows, against plain hits.
    #[value(name = "nat-hit")]
    NatHit,
    /// New masqueraded TCP connections through the whole pipeline, full connection table.
    #[value(name = "nat-setup")]
    NatSetup,
    /// New TCP connections to a Service VIP with 100 backends (Maglev, DNAT).
    #[value(name = "service-select")]
    ServiceSelect,
}

/// Run parameters shared by the scenarios.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Packets (lookups) per timed run.
    pub packets: u64,
    /// Timed runs.
    pub runs: usize,
    /// Repeat runs during which another process took the CPU.
    pub repeat_disturbed: bool,
}

/// Runs the selected scenarios and prints their results.
pub fn run(args: &PipelineArgs) -> Result<(), String> {
    let settings = Settings {
        packets: args
            .packets
            .unwrap_or(if args.quick { 1_000_000 } else { 5_000_000 })
            .max(1),
        runs: args.runs.unwrap_or(if args.quick { 3 } else { 5 }).max(1),
        repeat_disturbed: !args.no_repeat,
    };
    crate::alloc::set_huge_pages(args.huge_pages);
    let mut scenarios = if args.scenarios.is_empty() {
        Scenario::value_variants().to_vec()
    } else {
        args.scenarios.clone()
    };
    scenarios.sort();
    scenarios.dedup();

    let traffic_selected = scenarios.iter().any(|s| *s >= Scenario::SlowPath);
    let clock_ns = if traffic_selected {
        traffic::clock_read_ns()
    } else {
        0.0
    };
    let ghz = crate::os::clock_ghz_estimate();
    let mut results = Vec::new();
    let mut stdout = std::io::stdout();
    if !args.json {
        let _ = writeln!(
            stdout,
            "# vrouter-perf pipeline: {} runs x {} packets, median; batches of 64 x 64 B \
             frames; core clock ~{ghz:.2} GHz{}",
            settings.runs,
            settings.packets,
            if args.huge_pages {
                "; huge pages on blocks >= 4 MiB"
            } else {
                ""
            }
        );
    }
    for scenario in scenarios {
        let mut result = run_one(scenario, &settings, clock_ns)?;
        result.huge_pages = args.huge_pages;
        result.clock_ghz_estimate = Some(ghz);
        if !args.json {
            let _ = writeln!(stdout, "{}", result.text_line());
            let _ = stdout.flush();
        }
        results.push(result);
    }
    if args.json {
        let json = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
        let _ = writeln!(stdout, "{json}");
    } else if traffic_selected {
        let _ = writeln!(
            stdout,
            "# stage figures are the pipeline's own counters().stages; stats cost = its clock \
             reads ({clock_ns:.1} ns each, 1 per batch + 1 per stage run) per packet"
        );
    }
    Ok(())
}

fn run_one(
    scenario: Scenario,
    settings: &Settings,
    clock_ns: f64,
) -> Result<ScenarioResult, String> {
    let result = match scenario {
        Scenario::Lpm10 => lpm::run("lpm-10", 10, settings),
        Scenario::Lpm10k => lpm::run("lpm-10k", 10_000, settings),
        Scenario::Lpm1m => lpm::run("lpm-1m", 1_000_000, settings),
        Scenario::VrfSmall => vrf::run(),
        Scenario::MaglevLookup => maglev::lookup(settings),
        Scenario::MaglevBuild => maglev::build(settings),
        Scenario::Acl10 => acl::run("acl-10", 10, settings),
        Scenario::Acl1k => acl::run("acl-1k", 1_000, settings),
        Scenario::Acl10k => acl::run("acl-10k", 10_000, settings),
        Scenario::SlowPath => traffic::slow_path(settings, clock_ns),
        Scenario::FlowHit1 => traffic::flow_hit("flow-hit-1", 1, settings, clock_ns),
        Scenario::FlowHit10k => traffic::flow_hit("flow-hit-10k", 10_000, settings, clock_ns),
        Scenario::FlowHit1m => traffic::flow_hit("flow-hit-1m", 1_000_000, settings, clock_ns),
        Scenario::AclEstablished => traffic::acl_established(settings, clock_ns),
        Scenario::VxlanEncap => overlay::run("vxlan-encap", true, false, settings, clock_ns),
        Scenario::VxlanDecap => overlay::run("vxlan-decap", false, false, settings, clock_ns),
        Scenario::VxlanDecapCsum => {
            overlay::run("vxlan-decap-csum", false, true, settings, clock_ns)
        }
        Scenario::ConntrackHit => conntrack::hit(settings),
        Scenario::ConntrackSetup => conntrack::setup(settings),
        Scenario::Conntrack1m => conntrack::million(settings),
        Scenario::NatHit => nat::hit(settings, clock_ns),
        Scenario::NatSetup => nat::setup(settings, clock_ns),
        Scenario::ServiceSelect => nat::service_select(settings, clock_ns),
    };
    result.map_err(|e| format!("scenario {}: {e}", scenario_name(scenario)))
}

fn scenario_name(scenario: Scenario) -> String {
    scenario
        .to_possible_value()
        .map_or_else(|| format!("{scenario:?}"), |v| v.get_name().to_string())
}
