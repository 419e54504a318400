//! What the kernel says about an interface: index, MAC, MTU, RX queue count and the host's
//! own addresses on it (the ones the XDP program passes to the kernel).
//!
//! Read from sysfs and `getifaddrs` in the calling thread's network namespace (under
//! `ip netns exec`, /sys is remounted for the namespace, so sysfs answers for it).

use pipelines::wire::EthernetAddress;
use std::fs;
use std::net::IpAddr;
use std::path::PathBuf;

/// Kernel facts about one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// Name.
    pub name: String,
    /// ifindex.
    pub ifindex: u32,
    /// MAC.
    pub mac: EthernetAddress,
    /// MTU.
    pub mtu: u16,
    /// RX queues (`/sys/class/net/IF/queues/rx-*`).
    pub rx_queues: u32,
    /// Addresses the kernel has on the interface.
    pub host_addresses: Vec<IpAddr>,
}

/// Why an interface could not be used.
#[derive(Debug, thiserror::Error)]
pub enum InterfaceError {
    /// No such interface.
    #[error("unknown interface {0} (not present in this network namespace)")]
    Unknown(String),
    /// Sysfs said something unexpected.
    #[error("interface {name}: cannot read {what}: {detail}")]
    Unreadable {
        /// Interface.
        name: String,
        /// What.
        what: &'static str,
        /// Why.
        detail: String,
    },
}

impl InterfaceInfo {
    /// Reads the facts about `name`.
    pub fn read(name: &str) -> Result<InterfaceInfo, InterfaceError> {
        if name.is_empty() || name.contains('/') || name.contains("..") || name.len() > 15 {
            return Err(InterfaceError::Unknown(name.to_string()));
        }
        let base = PathBuf::from("/sys/class/net").join(name);
        if !base.exists() {
            return Err(InterfaceError::Unknown(name.to_string()));
        }
        let read = |file: &'static str| -> Result<String, InterfaceError> {
            fs::read_to_string(base.join(file))
                .map(|s| s.trim().to_string())
                .map_err(|e| InterfaceError::Unreadable {
                    name: name.to_string(),
                    what: file,
                    detail: e.to_string(),
                })
        };
        let unreadable = |what: &'static str, detail: String| InterfaceError::Unreadable {
            name: name.to_string(),
            what,
            detail,
        };
        let ifindex = read("ifindex")?
            .parse()
            .map_err(|e| unreadable("ifindex", format!("{e}")))?;
        let mac: EthernetAddress = read("address")?
            .parse()
            .map_err(|_| unreadable("address", "not a MAC".into()))?;
        let mtu = read("mtu")?
            .parse::<u32>()
            .map_err(|e| unreadable("mtu", format!("{e}")))?
            .min(u16::MAX as u32) as u16;
        let rx_queues = fs::read_dir(base.join("queues"))
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                    .count() as u32
            })
            .unwrap_or(1)
            .max(1);
        Ok(InterfaceInfo {
            name: name.to_string(),
            ifindex,
            mac,
            mtu,
            rx_queues,
            host_addresses: host_addresses(name),
        })
    }
}

/// The addresses the kernel has on `name`.
pub fn host_addresses(name: &str) -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter(|a| a.interface_name == name)
        .filter_map(|a| {
            let address = a.address?;
            if let Some(v4) = address.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_readable_and_garbage_names_are_refused() {
        let lo = InterfaceInfo::read("lo").unwrap();
        assert!(lo.ifindex >= 1);
        assert!(lo.rx_queues >= 1);
        assert!(matches!(
            InterfaceInfo::read("../etc"),
            Err(InterfaceError::Unknown(_))
        ));
        assert!(matches!(
            InterfaceInfo::read("nosuchif0"),
            Err(InterfaceError::Unknown(_))
        ));
    }
}
