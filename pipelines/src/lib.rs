//! vRouter dataplane pipelines: packet views, tables, match-action stages, flow cache,
//! counters and drop reasons. No I/O and no unsafe code: everything here runs in memory,
//! is unit- and property-tested, and is benchmarked by `vrouter-perf pipeline`.
#![forbid(unsafe_code)]

pub mod acl;
pub mod conntrack;
pub mod counters;
pub mod drop;
pub mod flow;
pub mod hash;
pub mod ids;
pub mod lpm;
pub mod maglev;
pub mod pipeline;
pub mod tables;
pub mod translate;
pub mod wire;

pub use counters::{Counters, Stage};
pub use drop::DropReason;
pub use ids::{NextHopId, PortId, VrfId};
pub use pipeline::{Emitted, Event, Output, Packet, Pipeline, PipelineConfig, Verdict};
pub use tables::{IpPrefix, TableOp, Tables};
