//! `vrouter-perf`: the project's benchmark tool.
//!
//! Subcommands:
//! - `pipeline`: the in-memory dataplane (`pipelines` crate) on prebuilt frames: route lookup,
//!   table memory, the slow path and the flow-cache hit path (see [`pipeline`]).
//!
//! - `gen`: a tagged-packet generator over AF_XDP (see [`traffic`] and [`traffic::gen`]);
//! - `sink`: receives the generator's frames over AF_XDP and reports loss, duplicates,
//!   reordering and one-way latency ([`traffic::sink`]).
//!
//! - `compare`: our dataplane against the kernel's doing the same job (routing, NAT, VXLAN,
//!   ACLs) on the same namespace topology, measured with `gen` and `sink` ([`compare`]);
//! - `report`: the BENCHMARKS.md tables of saved `compare` results ([`report`]).

mod alloc;
mod compare;
mod os;
mod pipeline;
mod report;
mod traffic;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Counts live heap bytes and allocations, so table memory can be cross-checked against what
/// the tables report and the timed loops can prove they do not allocate.
#[global_allocator]
static ALLOCATOR: alloc::CountingAllocator = alloc::CountingAllocator;

#[derive(Debug, Parser)]
#[command(name = "vrouter-perf", version, about = "vRouter benchmarks", long_about = None)]
struct Cli {
    /// Pin the process to this CPU before running (same effect as `taskset -c N`).
    #[arg(long, global = true, value_name = "N")]
    cpu: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// In-memory pipeline benchmarks: ns/packet, Mpps on one core, table and flow-cache memory.
    Pipeline(pipeline::PipelineArgs),
    /// Tagged-packet generator over AF_XDP (sequence numbers and TX timestamps in every frame).
    Gen(traffic::gen::GenArgs),
    /// Receives tagged frames over AF_XDP: loss, duplicates, reordering, one-way latency.
    Sink(traffic::sink::SinkArgs),
    /// Our vrouter against the kernel on the same topology, same run: delivered pps, loss,
    /// latency, CPU per packet, zero-loss rate.
    Compare(compare::CompareArgs),
    /// Tables (markdown) of saved `compare` results; `--update BENCHMARKS.md` rewrites its
    /// generated region.
    Report(report::ReportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(cpu) = cli.cpu {
        if let Err(error) = os::pin_to_cpu(cpu) {
            eprintln!("vrouter-perf: cannot pin to CPU {cpu}: {error}");
            return ExitCode::FAILURE;
        }
    }
    let result = match cli.command {
        Command::Pipeline(args) => pipeline::run(&args),
        Command::Gen(args) => traffic::gen::run(&args),
        Command::Sink(args) => traffic::sink::run(&args),
        Command::Compare(args) => traffic::stop_on_signals()
            .map_err(|e| format!("signals: {e}"))
            .and_then(|stop| compare::run(&args, stop)),
        Command::Report(args) => report::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("vrouter-perf: {error}");
            ExitCode::FAILURE
        }
    }
}
