//! Control plane of the vRouter: the desired-state model ([`config`], NAT in [`nat`]), the protocol every
//! binary speaks ([`proto`]), socket setup and peer checks ([`socket`]), a blocking client
//! ([`client`]), and the logic of the control daemon ([`daemon`]) and of the operator CLI
//! ([`cli`]). Binaries are thin wrappers.

pub mod acl;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod nat;
pub mod proto;
pub mod socket;
