//! Control plane of the vRouter: the desired-state model ([`config`]), the protocol every
//! binary speaks ([`proto`]), a blocking client ([`client`]), and the logic of the control
//! daemon ([`daemon`]) and of the operator CLI ([`cli`]). Binaries are thin wrappers.

pub mod config;
pub mod proto;
