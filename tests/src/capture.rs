//! Packet captures with `tcpdump`, and a parser for its verbose (`-vv`) view of VXLAN packets.
//!
//! A capture is bounded by a packet count (`-c`) and stopped by [`Capture::finish`] after a
//! time limit; the process is a lab process, so it also dies with the lab.

use std::net::IpAddr;
use std::time::Duration;

use crate::cmd::{Error, Result};
use crate::{wait_until, LabProcess, Netns};

/// A running `tcpdump -i IF -nn -vv -t -l -c COUNT FILTER`.
pub struct Capture {
    process: LabProcess,
    what: String,
}

/// Starts `tcpdump -i IFNAME -nn -vv -t -l -c COUNT FILTER...` in `ns` and returns once it
/// listens (it says so on stderr; 5 s limit). `filter` is a pcap filter, one word per element
/// (`["udp", "port", "4789"]`).
pub fn tcpdump(ns: &Netns, ifname: &str, count: u32, filter: &[&str]) -> Result<Capture> {
    let count_text = count.to_string();
    let mut args = vec!["-i", ifname, "-nn", "-vv", "-t", "-l", "-c", &count_text];
    args.extend_from_slice(filter);
    let process = ns.spawn("tcpdump", &args)?;
    let what = format!(
        "tcpdump -i {ifname} {} in {}",
        filter.join(" "),
        ns.name_or_host()
    );
    let listening = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        process.stderr().contains("listening on") || !process.is_running()
    });
    if !listening || !process.is_running() {
        let stderr = process.stderr();
        process.stop();
        return Err(Error::new(format!(
            "{what} did not start listening: {}",
            stderr.trim()
        )));
    }
    Ok(Capture { process, what })
}

impl Capture {
    /// Waits up to `timeout` for the capture to reach its packet count, stops it otherwise
    /// (tcpdump flushes what it has on SIGTERM), and returns what it printed.
    pub fn finish(self, timeout: Duration) -> String {
        if self.process.wait_timeout(timeout).is_err() {
            self.process.stop();
        }
        self.process.stdout()
    }

    /// The command, for messages.
    pub fn describe(&self) -> &str {
        &self.what
    }
}

/// Outer UDP checksum as tcpdump judged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpChecksum {
    /// Zero (`[no cksum]`).
    Zero,
    /// Verified (`[udp sum ok]`).
    Correct,
    /// Wrong (`[bad udp cksum 0x.. -> 0x..!]`); a partial checksum from a veth with TX offload
    /// looks like this too.
    Bad,
    /// Not shown (truncated capture, fragments).
    Unknown,
}

/// One VXLAN packet of a `tcpdump -nn -vv -t` capture.
#[derive(Debug, Clone, PartialEq)]
pub struct VxlanPacket {
    /// Outer source address.
    pub outer_src: IpAddr,
    /// Outer UDP source port.
    pub src_port: u16,
    /// Outer destination address.
    pub outer_dst: IpAddr,
    /// Outer UDP destination port.
    pub dst_port: u16,
    /// Outer IPv4 TTL.
    pub outer_ttl: Option<u8>,
    /// Outer IPv4 DF bit.
    pub outer_df: bool,
    /// Outer UDP checksum.
    pub udp_checksum: UdpChecksum,
    /// VXLAN flags byte (`flags [I] (0x08)`).
    pub vxlan_flags: Option<u8>,
    /// VNI.
    pub vni: Option<u32>,
    /// The inner packet as tcpdump printed it (lines after the VXLAN line).
    pub inner: String,
    /// Every line of the packet, for messages.
    pub text: String,
}

impl VxlanPacket {
    /// Lines in which tcpdump flags a wrong checksum of the inner packet (IP header `bad
    /// cksum`, TCP/UDP `incorrect`, ICMP `wrong icmp cksum`, inner `bad udp cksum`).
    pub fn inner_checksum_errors(&self) -> Vec<String> {
        self.inner
            .lines()
            .filter(|line| {
                line.contains("bad cksum")
                    || line.contains("(incorrect")
                    || line.contains("wrong icmp cksum")
                    || line.contains("bad udp cksum")
            })
            .map(|line| line.trim().to_string())
            .collect()
    }

    /// True if tcpdump verified at least one inner TCP/UDP checksum as correct.
    pub fn inner_checksum_verified(&self) -> bool {
        self.inner.contains("(correct)") || self.inner.contains("[udp sum ok]")
    }
}

/// Parses the VXLAN packets of a `tcpdump -nn -vv -t` capture. A packet starts with an outer
/// `IP (...)` line whose next line holds `SRC.PORT > DST.PORT: ... VXLAN, flags [..] (0x..),
/// vni N`; its inner packet is every following line up to the next such pair. Lines of other
/// packets are skipped.
pub fn parse_vxlan_capture(text: &str) -> Vec<VxlanPacket> {
    let lines: Vec<&str> = text.lines().collect();
    let starts: Vec<usize> = (0..lines.len().saturating_sub(1))
        .filter(|&i| lines[i].starts_with("IP ") && lines[i + 1].contains("VXLAN"))
        .collect();
    let mut packets = Vec::new();
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(lines.len());
        // Inner packets start with "IP " too, so only the VXLAN pairs are reliable boundaries:
        // capture VXLAN only (`udp port 4789`), or other packets end up in an inner part.
        let outer = lines[start];
        let udp = lines[start + 1].trim();
        let Some((endpoints, rest)) = udp.split_once(": ") else {
            continue;
        };
        let Some((src, dst)) = endpoints.split_once(" > ") else {
            continue;
        };
        let (Some((outer_src, src_port)), Some((outer_dst, dst_port))) =
            (split_endpoint(src), split_endpoint(dst))
        else {
            continue;
        };
        let udp_checksum = if rest.contains("[no cksum]") {
            UdpChecksum::Zero
        } else if rest.contains("[udp sum ok]") {
            UdpChecksum::Correct
        } else if rest.contains("[bad udp cksum") {
            UdpChecksum::Bad
        } else {
            UdpChecksum::Unknown
        };
        let vxlan = &rest[rest.find("VXLAN").unwrap_or(0)..];
        let vxlan_flags = vxlan
            .find("(0x")
            .and_then(|i| u8::from_str_radix(vxlan.get(i + 3..i + 5)?, 16).ok());
        let vni = vxlan.find("vni ").and_then(|i| {
            let digits: String = vxlan[i + 4..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        });
        let outer_ttl = outer.find("ttl ").and_then(|i| {
            let digits: String = outer[i + 4..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        });
        let outer_df = outer.contains("flags [DF]");
        packets.push(VxlanPacket {
            outer_src,
            src_port,
            outer_dst,
            dst_port,
            outer_ttl,
            outer_df,
            udp_checksum,
            vxlan_flags,
            vni,
            inner: lines[start + 2..end].join("\n"),
            text: lines[start..end].join("\n"),
        });
    }
    packets
}

/// `192.168.100.1.4789` -> (address, port); IPv6 `fd00::1.4789` works the same way.
fn split_endpoint(text: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = text.rsplit_once('.')?;
    Some((addr.parse().ok()?, port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPTURE: &str = "\
IP (tos 0x0, ttl 64, id 62593, offset 0, flags [none], proto UDP (17), length 134)
    192.168.100.1.56387 > 192.168.100.2.4789: [no cksum] VXLAN, flags [I] (0x08), vni 100
IP (tos 0x0, ttl 63, id 4600, offset 0, flags [DF], proto ICMP (1), length 84)
    10.244.1.2 > 10.244.2.2: ICMP echo request, id 4576, seq 1, length 64
IP (tos 0x0, ttl 64, id 24439, offset 0, flags [DF], proto UDP (17), length 134)
    192.168.100.2.56387 > 192.168.100.1.4789: [bad udp cksum 0x49d8 -> 0x7401!] VXLAN, flags [I] (0x08), vni 100
IP (tos 0x0, ttl 63, id 1960, offset 0, flags [DF], proto ICMP (1), length 84)
    10.244.2.2 > 10.244.1.2: ICMP echo reply, id 4271, seq 1, length 64 (wrong icmp cksum 1234 (->4321)!)
IP (tos 0x0, ttl 64, id 24770, offset 0, flags [none], proto UDP (17), length 110)
    192.168.100.1.48170 > 192.168.100.2.4789: [udp sum ok] VXLAN, flags [I] (0x08), vni 7
IP (tos 0x0, ttl 63, id 28381, offset 0, flags [DF], proto TCP (6), length 60)
    10.244.1.2.43166 > 10.244.2.2.5201: Flags [S], cksum 0x191a (incorrect -> 0xf0fc), seq 1067843262, length 0
IP (tos 0x0, ttl 64, id 1, offset 0, flags [none], proto UDP (17), length 110)
    192.168.100.1.48170 > 192.168.100.2.4789: [no cksum] VXLAN, flags [I] (0x08), vni 100
IP (tos 0x0, ttl 63, id 28382, offset 0, flags [DF], proto TCP (6), length 52)
    10.244.1.2.43166 > 10.244.2.2.5201: Flags [.], cksum 0x3423 (correct), seq 1, ack 1, length 0
";

    #[test]
    fn parses_vxlan_packets() {
        let packets = parse_vxlan_capture(CAPTURE);
        assert_eq!(packets.len(), 4);
        let first = &packets[0];
        assert_eq!(first.outer_src.to_string(), "192.168.100.1");
        assert_eq!(first.src_port, 56387);
        assert_eq!(first.outer_dst.to_string(), "192.168.100.2");
        assert_eq!(first.dst_port, 4789);
        assert_eq!(first.outer_ttl, Some(64));
        assert!(!first.outer_df);
        assert_eq!(first.udp_checksum, UdpChecksum::Zero);
        assert_eq!(first.vxlan_flags, Some(0x08));
        assert_eq!(first.vni, Some(100));
        assert!(first.inner.contains("ICMP echo request"));
        assert!(first.inner_checksum_errors().is_empty());
        assert!(!first.inner_checksum_verified());

        assert_eq!(packets[1].udp_checksum, UdpChecksum::Bad);
        assert!(packets[1].outer_df);
        assert_eq!(packets[1].inner_checksum_errors().len(), 1);

        assert_eq!(packets[2].udp_checksum, UdpChecksum::Correct);
        assert_eq!(packets[2].vni, Some(7));
        assert_eq!(packets[2].inner_checksum_errors().len(), 1);

        assert!(packets[3].inner_checksum_errors().is_empty());
        assert!(packets[3].inner_checksum_verified());
    }

    #[test]
    fn ignores_other_packets() {
        let text = "IP (tos 0x0, ttl 64, id 1, offset 0, flags [DF], proto ICMP (1), length 84)\n    10.0.0.1 > 10.0.0.2: ICMP echo request, id 1, seq 1, length 64\n";
        assert!(parse_vxlan_capture(text).is_empty());
    }
}
