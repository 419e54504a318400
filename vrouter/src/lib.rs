//! The vrouter dataplane: AF_XDP ports ([`xsk`]), XDP program loading ([`xdp`]), pinned
//! polling workers ([`worker`]), read-copy-update table publication ([`publish`]), the
//! dataplane state and request handling ([`dataplane`]) and the control socket ([`server`]).
//! All `unsafe` of the workspace lives in `xsk`.

pub mod dataplane;
pub mod iface;
pub mod publish;
pub mod server;
pub mod worker;
pub mod xdp;
pub mod xsk;
