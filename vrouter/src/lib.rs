//! The vrouter dataplane: AF_XDP ports, XDP program loading, workers, table publication and
//! the control socket server. All `unsafe` of the workspace lives in `xsk`.

pub mod xdp;
pub mod xsk;
