//! Results of the pipeline scenarios: one [`ScenarioResult`] per scenario, printed as one text
//! line or as JSON, plus the small statistics helpers the scenarios share.

use super::Settings;
use crate::os::Reading;
use serde::Serialize;
use std::fmt::Write as _;

/// Runtime figures of one pipeline stage over the timed runs (from `Pipeline::counters()`).
#[derive(Clone, Debug, Serialize)]
pub struct StageFigure {
    /// Stage name (`ethernet-input`, `flow-lookup`, ...).
    pub stage: &'static str,
    /// Wall-clock ns per packet the stage measured itself.
    pub ns_per_packet: f64,
    /// Packets per call (VPP's vectors/call).
    pub packets_per_call: f64,
}

/// A figure particular to one scenario (e.g. `build-1000` `640.2` `us`), printed after the
/// common ones.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    /// What is measured.
    pub name: String,
    /// The measured value.
    pub value: f64,
    /// Its unit (`us`, `ns`, `%`), or empty for a count (printed without decimals).
    pub unit: &'static str,
}

/// A target from the project's brief and whether the measurement meets it.
#[derive(Clone, Debug, Serialize)]
pub struct TargetCheck {
    /// What is compared, e.g. `ns_per_packet`.
    pub metric: &'static str,
    /// The target, e.g. `<= 40`.
    pub target: String,
    /// The measured value.
    pub measured: f64,
    /// Whether the target is met.
    pub met: bool,
}

impl TargetCheck {
    /// `measured <= limit`.
    pub fn at_most(metric: &'static str, limit: f64, measured: f64) -> Self {
        TargetCheck {
            metric,
            target: format!("<= {limit}"),
            measured,
            met: measured <= limit,
        }
    }

    /// `measured >= limit`.
    pub fn at_least(metric: &'static str, limit: f64, measured: f64) -> Self {
        TargetCheck {
            metric,
            target: format!(">= {limit}"),
            measured,
            met: measured >= limit,
        }
    }
}

/// Everything measured for one scenario. Optional figures are absent from the JSON when they
/// do not apply.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ScenarioResult {
    /// Scenario name.
    pub scenario: &'static str,
    /// What exactly was timed.
    pub description: String,
    /// Median ns per packet (per lookup for the LPM scenarios) over the runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ns_per_packet: Option<f64>,
    /// `1000 / ns_per_packet`: million packets per second on one core.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mpps: Option<f64>,
    /// Fastest run's ns per packet (the least disturbed on a shared machine).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best_ns_per_packet: Option<f64>,
    /// ns per packet of every run, in run order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runs_ns_per_packet: Vec<f64>,
    /// Lowest fraction of a timed run's wall-clock time the benchmark thread was on a CPU
    /// (thread CPU time / wall time). Below ~0.95 other processes took the CPU during the
    /// run and the figures are inflated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_share: Option<f64>,
    /// Highest busy fraction of the other CPUs during a kept run (other processes share the
    /// caches and memory bandwidth, and the vCPUs may be SMT siblings on the host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub others_busy: Option<f64>,
    /// Timed runs thrown away and repeated because another process took the CPU.
    #[serde(skip_serializing_if = "is_zero")]
    pub discarded_runs: usize,
    /// Packets (lookups) per timed run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets_per_run: Option<u64>,
    /// Routes in the table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routes: Option<usize>,
    /// Distinct flows in the traffic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flows: Option<usize>,
    /// Table memory as the tables report it (`memory_bytes()`).
    pub table_bytes: usize,
    /// Heap bytes the tables really hold, measured by the counting allocator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_heap_bytes: Option<usize>,
    /// Flow cache memory (`FlowCache::memory_bytes()`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_cache_bytes: Option<usize>,
    /// Flow cache slots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_cache_slots: Option<usize>,
    /// LPM: median latency of one lookup in a dependent chain, ns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lookup_latency_ns: Option<f64>,
    /// LPM: median ns per lookup for a loop of independent single `lookup` calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lookup_single_ns: Option<f64>,
    /// LPM: routes per second inserting the whole set into an empty table (median).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insert_routes_per_sec: Option<f64>,
    /// vrf-small: VRFs in the large variant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub many_vrfs: Option<usize>,
    /// vrf-small: `memory_bytes()` of the tables with `many_vrfs` VRFs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub many_vrfs_table_bytes: Option<usize>,
    /// vrf-small: heap bytes of the tables with `many_vrfs` VRFs (counting allocator).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub many_vrfs_heap_bytes: Option<usize>,
    /// Stage runtime statistics over the timed runs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageFigure>,
    /// Estimated cost of collecting the stage statistics (clock reads), ns per packet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats_overhead_ns_per_packet: Option<f64>,
    /// Heap allocations made inside the timed loops (should be 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocations_in_timed_loop: Option<u64>,
    /// Core clock estimate of this invocation (`os::clock_ghz_estimate`), GHz.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_ghz_estimate: Option<f64>,
    /// Run with `--huge-pages`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub huge_pages: bool,
    /// Targets from the brief.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetCheck>,
    /// Figures particular to the scenario.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub figures: Vec<Figure>,
}

impl ScenarioResult {
    /// Sets the median, best run, CPU share and runs from the main measurement.
    pub fn set_runs(&mut self, runs: RunSet) {
        let m = runs.median();
        self.ns_per_packet = Some(m);
        self.best_ns_per_packet = runs.values.iter().copied().reduce(f64::min);
        self.mpps = Some(1000.0 / m);
        self.cpu_share = Some(runs.cpu_share);
        self.others_busy = runs.others_busy;
        self.discarded_runs = runs.discarded;
        self.runs_ns_per_packet = runs.values;
    }

    /// One line of text: scenario, ns/packet, Mpps, memory, then the scenario's extras.
    pub fn text_line(&self) -> String {
        let mut line = format!("{:<13}", self.scenario);
        match (self.ns_per_packet, self.mpps) {
            (Some(ns), Some(mpps)) => {
                let _ = write!(line, " {ns:>8.2} ns/pkt {mpps:>8.2} Mpps");
            }
            _ => line.push_str(&format!(" {:>8} ns/pkt {:>8} Mpps", "-", "-")),
        }
        let _ = write!(line, "  tables {:>9}", human_bytes(self.table_bytes));
        if let Some(heap) = self.table_heap_bytes {
            let _ = write!(line, " (heap {})", human_bytes(heap));
        }
        if let Some(flow) = self.flow_cache_bytes {
            let _ = write!(line, "  flow-cache {}", human_bytes(flow));
            if let Some(slots) = self.flow_cache_slots {
                let _ = write!(line, " ({slots} slots)");
            }
        }
        if let Some(routes) = self.routes {
            let _ = write!(line, "  routes {routes}");
        }
        if let Some(flows) = self.flows {
            let _ = write!(line, "  flows {flows}");
        }
        if let Some(latency) = self.lookup_latency_ns {
            let _ = write!(line, "  latency {latency:.1} ns");
        }
        if let Some(single) = self.lookup_single_ns {
            let _ = write!(line, "  single {single:.1} ns");
        }
        if let Some(rate) = self.insert_routes_per_sec {
            let _ = write!(line, "  insert {:.2} M routes/s", rate / 1e6);
        }
        if let (Some(n), Some(bytes)) = (self.many_vrfs, self.many_vrfs_table_bytes) {
            let _ = write!(
                line,
                "  {n} VRFs {} ({} per VRF)",
                human_bytes(bytes),
                human_bytes(bytes / n.max(1))
            );
            if let Some(heap) = self.many_vrfs_heap_bytes {
                let _ = write!(line, " heap {}", human_bytes(heap));
            }
        }
        if !self.stages.is_empty() {
            line.push_str("  stages");
            for stage in &self.stages {
                let _ = write!(line, " {} {:.1}", stage.stage, stage.ns_per_packet);
            }
            if let Some(overhead) = self.stats_overhead_ns_per_packet {
                let _ = write!(line, " (stats cost ~{overhead:.2})");
            }
        }
        if let Some(allocs) = self.allocations_in_timed_loop {
            let _ = write!(line, "  allocs {allocs}");
        }
        if let Some(busy) = self.others_busy.filter(|b| *b >= 0.25) {
            let _ = write!(line, "  (other CPU {:.0}% busy)", busy * 100.0);
        }
        if self.discarded_runs > 0 {
            let _ = write!(line, "  ({} disturbed runs repeated)", self.discarded_runs);
        }
        if let Some(share) = self.cpu_share.filter(|s| *s < DISTURBED_BELOW) {
            let _ = write!(
                line,
                "  DISTURBED (on CPU {:.0}% of a run; best run {:.2} ns)",
                share * 100.0,
                self.best_ns_per_packet.unwrap_or(0.0)
            );
        }
        for figure in &self.figures {
            if figure.unit.is_empty() {
                let _ = write!(line, "  {} {:.0}", figure.name, figure.value);
            } else {
                let _ = write!(
                    line,
                    "  {} {:.1} {}",
                    figure.name, figure.value, figure.unit
                );
            }
        }
        for target in &self.targets {
            let _ = write!(
                line,
                "  [{} {}: {}]",
                target.metric,
                target.target,
                if target.met { "met" } else { "MISSED" }
            );
        }
        line
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// CPU share below which a run is reported as disturbed.
pub const DISTURBED_BELOW: f64 = 0.95;

/// Timed runs of one measurement, with disturbed runs set aside.
#[derive(Clone, Debug, Default)]
pub struct RunSet {
    /// The kept runs' figures (ns per packet), in run order.
    pub values: Vec<f64>,
    /// Lowest CPU share among the kept runs.
    pub cpu_share: f64,
    /// Highest busy fraction of the other CPUs during a kept run, when measurable.
    pub others_busy: Option<f64>,
    /// Runs discarded because another process took the CPU during them.
    pub discarded: usize,
    /// Which calls of `measure` (0-based) the kept runs are, in run order.
    pub kept_calls: Vec<usize>,
}

impl RunSet {
    /// Runs `measure` (which returns a run's figure and its CPU share) until `settings.runs`
    /// runs were undisturbed (CPU share >= [`DISTURBED_BELOW`]), at most three times as often
    /// (exactly `settings.runs` times without `settings.repeat_disturbed`). If too few were
    /// undisturbed, the least disturbed of the others fill in and `cpu_share` says so.
    pub fn collect(
        settings: &Settings,
        mut measure: impl FnMut() -> Result<(f64, Reading), String>,
    ) -> Result<RunSet, String> {
        let runs = settings.runs;
        let max_attempts = if settings.repeat_disturbed {
            3 * runs
        } else {
            runs
        };
        let mut kept = Vec::with_capacity(runs);
        let mut disturbed = Vec::with_capacity(2 * runs);
        let mut attempts = 0;
        while kept.len() < runs && attempts < max_attempts {
            attempts += 1;
            let (value, reading) = measure()?;
            if reading.share >= DISTURBED_BELOW {
                kept.push((value, reading, attempts - 1));
            } else {
                disturbed.push((value, reading, attempts - 1));
            }
        }
        let discarded = disturbed.len();
        if kept.len() < runs {
            disturbed.sort_by(|a, b| b.1.share.total_cmp(&a.1.share));
            let missing = runs - kept.len();
            kept.extend(disturbed.into_iter().take(missing));
            kept.sort_by_key(|r| r.2);
        }
        Ok(RunSet {
            cpu_share: kept.iter().map(|r| r.1.share).fold(1.0, f64::min),
            others_busy: kept.iter().filter_map(|r| r.1.others_busy).reduce(f64::max),
            kept_calls: kept.iter().map(|r| r.2).collect(),
            values: kept.into_iter().map(|r| r.0).collect(),
            discarded,
        })
    }

    /// Median of the kept runs.
    pub fn median(&self) -> f64 {
        median(&self.values)
    }
}

/// Median (mean of the two middle values for an even count); 0 for no values.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// `1234` -> `1.2 KiB`, etc.
pub fn human_bytes(bytes: usize) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b < KIB {
        format!("{bytes} B")
    } else if b < KIB * KIB {
        format!("{:.1} KiB", b / KIB)
    } else if b < KIB * KIB * KIB {
        format!("{:.1} MiB", b / (KIB * KIB))
    } else {
        format!("{:.2} GiB", b / (KIB * KIB * KIB))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(2048), "2.0 KiB");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
    }
}
