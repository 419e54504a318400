//! vRouter dataplane pipelines: packet views, tables, match-action stages, flow cache,
//! counters and drop reasons. No I/O and no unsafe code: everything here runs in memory,
//! is unit- and property-tested, and is benchmarked by `vrouter-perf pipeline`.
#![forbid(unsafe_code)]

pub mod lpm;
pub mod wire;
