//! Traffic tools with parsed results: iputils `ping` and `iperf3 -J`.
//!
//! Destinations must be IP literals (no name lookups); every run is bounded by a packet count
//! or a duration, and by a kill timeout on top.

use std::net::IpAddr;
use std::time::Duration;

use crate::cmd::{check, describe, Error, Result};
use crate::{LabProcess, Netns};

/// Options of [`ping_with`].
#[derive(Debug, Clone, PartialEq)]
pub struct PingOptions {
    /// Echo requests to send (`-c`).
    pub count: u32,
    /// Pause between requests (`-i`).
    pub interval: Duration,
    /// How long to wait for a reply when none arrived (`-W`).
    pub timeout: Duration,
    /// IP TTL of the requests (`-t`).
    pub ttl: Option<u8>,
    /// ICMP payload size in bytes (`-s`); 56 by default.
    pub size: Option<u32>,
    /// Set DF and never fragment locally (`-M do`).
    pub dont_fragment: bool,
}

impl Default for PingOptions {
    fn default() -> Self {
        PingOptions {
            count: 3,
            interval: Duration::from_millis(200),
            timeout: Duration::from_secs(1),
            ttl: None,
            size: None,
            dont_fragment: false,
        }
    }
}

/// What `ping` reported.
#[derive(Debug, Clone, PartialEq)]
pub struct PingResult {
    /// Requests sent.
    pub transmitted: u32,
    /// Replies received.
    pub received: u32,
    /// ICMP errors and local errors counted by ping (`+N errors`).
    pub errors: u32,
    /// Packet loss in percent (0 to 100).
    pub loss_percent: f64,
    /// Average round-trip time; `None` without replies.
    pub rtt_avg_ms: Option<f64>,
    /// Error lines: `From 10.0.1.1 icmp_seq=1 Time to live exceeded`,
    /// `... Frag needed and DF set (mtu = 1400)`, `... Destination Net Unreachable`,
    /// `ping: local error: message too long, mtu=1400`.
    pub icmp_errors: Vec<String>,
    /// MTU from the first "Frag needed" or "message too long" line.
    pub frag_needed_mtu: Option<u32>,
    /// Stdout followed by stderr, for messages.
    pub output: String,
}

impl PingResult {
    /// True if any error line contains `text` (e.g. "Time to live exceeded").
    pub fn has_error(&self, text: &str) -> bool {
        self.icmp_errors.iter().any(|line| line.contains(text))
    }
}

/// `ping -n -c COUNT -i INTERVAL -W TIMEOUT DST` in `ns`. See [`ping_with`].
pub fn ping(
    ns: &Netns,
    dst: &str,
    count: u32,
    interval: Duration,
    timeout: Duration,
) -> Result<PingResult> {
    ping_with(
        ns,
        dst,
        PingOptions {
            count,
            interval,
            timeout,
            ..PingOptions::default()
        },
    )
}

/// Runs iputils `ping` in `ns` and parses its summary. Loss is a result, not an error: the
/// error cases are a non-IP `dst`, a zero count, ping not finishing in time, or output without
/// the statistics line.
pub fn ping_with(ns: &Netns, dst: &str, options: PingOptions) -> Result<PingResult> {
    dst.parse::<IpAddr>()
        .map_err(|_| Error::new(format!("ping: {dst:?} is not an IP address")))?;
    if options.count == 0 {
        return Err(Error::new("ping: count must be at least 1"));
    }
    let count = options.count.to_string();
    let interval = format!("{:.3}", options.interval.as_secs_f64());
    let wait = format!("{:.3}", options.timeout.as_secs_f64().max(0.001));
    let mut args = vec!["-n", "-c", &count, "-i", &interval, "-W", &wait];
    let ttl = options.ttl.map(|t| t.to_string());
    if let Some(ttl) = &ttl {
        args.extend(["-t", ttl.as_str()]);
    }
    if options.dont_fragment {
        args.extend(["-M", "do"]);
    }
    let size = options.size.map(|s| s.to_string());
    if let Some(size) = &size {
        args.extend(["-s", size.as_str()]);
    }
    args.push(dst);

    let limit = options.interval * options.count + options.timeout + Duration::from_secs(10);
    let output = ns.exec("ping", &args, limit)?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    parse_ping(&text).map_err(|e| {
        Error::new(format!(
            "`ping {}` in {}: {e}",
            args.join(" "),
            ns.name_or_host()
        ))
    })
}

/// Parses iputils ping output (stdout and stderr together).
pub fn parse_ping(text: &str) -> Result<PingResult> {
    let mut result = PingResult {
        transmitted: 0,
        received: 0,
        errors: 0,
        loss_percent: 100.0,
        rtt_avg_ms: None,
        icmp_errors: Vec::new(),
        frag_needed_mtu: None,
        output: text.to_string(),
    };
    let mut saw_summary = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("From ") || line.contains("local error") {
            if result.frag_needed_mtu.is_none() {
                result.frag_needed_mtu = mtu_in(line);
            }
            result.icmp_errors.push(line.to_string());
        } else if line.contains("packets transmitted") {
            saw_summary = true;
            // "3 packets transmitted, 0 received, +3 errors, 100% packet loss, time 408ms"
            for part in line.split(',') {
                let part = part.trim();
                let number = part.split_whitespace().next().unwrap_or("");
                if part.ends_with("packets transmitted") {
                    result.transmitted = parse_number(number, line)?;
                } else if part.ends_with("received") {
                    result.received = parse_number(number, line)?;
                } else if part.ends_with("errors") {
                    result.errors = parse_number(number.trim_start_matches('+'), line)?;
                } else if part.ends_with("packet loss") {
                    result.loss_percent = parse_number(number.trim_end_matches('%'), line)?;
                }
            }
        } else if let Some(values) = line
            .strip_prefix("rtt min/avg/max/mdev = ")
            .or_else(|| line.strip_prefix("round-trip min/avg/max = "))
        {
            // "rtt min/avg/max/mdev = 0.064/0.167/0.271/0.103 ms"
            let avg = values.split('/').nth(1).unwrap_or("");
            result.rtt_avg_ms = Some(parse_number(avg, line)?);
        }
    }
    if !saw_summary {
        return Err(Error::new(format!(
            "no statistics line in ping output: {}",
            text.trim()
        )));
    }
    Ok(result)
}

fn parse_number<T: std::str::FromStr>(word: &str, line: &str) -> Result<T> {
    word.trim()
        .parse()
        .map_err(|_| Error::new(format!("cannot parse {word:?} in {line:?}")))
}

/// `mtu = 1400` or `mtu=1400` in a line.
fn mtu_in(line: &str) -> Option<u32> {
    let rest = &line[line.find("mtu")? + 3..];
    let rest = rest.trim_start().strip_prefix('=')?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Options of [`iperf3_client`].
#[derive(Debug, Clone, PartialEq)]
pub struct IperfOptions {
    /// Test length in seconds (`-t`), at least 1.
    pub seconds: u32,
    /// UDP instead of TCP (`-u`).
    pub udp: bool,
    /// Target bitrate (`-b`), e.g. "10M"; iperf3 defaults to 1M for UDP, unlimited for TCP.
    pub bitrate: Option<String>,
    /// Write size / datagram size in bytes (`-l`).
    pub length: Option<u32>,
    /// Server sends, client receives (`-R`).
    pub reverse: bool,
    /// Parallel streams (`-P`); 1 by default.
    pub parallel: u32,
    /// CPU the client runs on (`-A N`, iperf3's own affinity option); unpinned by default.
    /// On a 2-vCPU machine, keeps the generator off the dataplane's CPU.
    pub cpu: Option<u32>,
}

impl Default for IperfOptions {
    fn default() -> Self {
        IperfOptions {
            seconds: 1,
            udp: false,
            bitrate: None,
            length: None,
            reverse: false,
            parallel: 1,
            cpu: None,
        }
    }
}

/// What `iperf3 -J` reported.
#[derive(Debug, Clone, PartialEq)]
pub struct IperfResult {
    /// Throughput seen by the receiver (TCP: `end.sum_received`; UDP: `end.sum_received` when
    /// present, else `end.sum`).
    pub bits_per_second: f64,
    /// Throughput the sender offered (`end.sum_sent`, else `end.sum`).
    pub sender_bits_per_second: f64,
    /// TCP retransmits (`end.sum_sent.retransmits`); `None` for UDP.
    pub retransmits: Option<u64>,
    /// UDP loss in percent (`end.sum.lost_percent`); `None` for TCP.
    pub lost_percent: Option<f64>,
    /// UDP datagrams lost (`end.sum.lost_packets`).
    pub lost_packets: Option<u64>,
    /// UDP datagrams sent (`end.sum.packets`).
    pub packets: Option<u64>,
    /// UDP jitter (`end.sum.jitter_ms`).
    pub jitter_ms: Option<f64>,
    /// The whole JSON document.
    pub raw_json: serde_json::Value,
}

/// Starts a one-off server `iperf3 -s -1 -p PORT` in `ns` and returns once it listens (5 s
/// limit; the error carries the server's stderr). It exits after one test and is stopped when
/// the handle or the lab drops.
pub fn iperf3_server(ns: &Netns, port: u16) -> Result<LabProcess> {
    iperf3_server_on(ns, port, None)
}

/// [`iperf3_server`] pinned to `cpu` (`-A N`) when given.
pub fn iperf3_server_on(ns: &Netns, port: u16, cpu: Option<u32>) -> Result<LabProcess> {
    let port_text = port.to_string();
    let cpu_text = cpu.map(|c| c.to_string());
    let mut args = vec!["-s", "-1", "-p", &port_text];
    if let Some(cpu) = &cpu_text {
        args.extend(["-A", cpu.as_str()]);
    }
    let server = ns.spawn("iperf3", &args)?;
    // iperf3 always listens on TCP (its control connection), also for UDP tests.
    if let Err(e) = ns.wait_listening(port, false, Duration::from_secs(5)) {
        let status = server.try_wait();
        return Err(Error::new(format!(
            "{e}; iperf3 server {}; stderr: {}",
            status.map_or("still running".to_string(), |s| s.to_string()),
            server.stderr().trim()
        )));
    }
    Ok(server)
}

/// Runs `iperf3 -c SERVER_IP -p PORT -J` in `ns` and parses the JSON. Errors name the command
/// and carry iperf3's own error text. Killed if it runs 20 s longer than `seconds`.
pub fn iperf3_client(
    ns: &Netns,
    server_ip: &str,
    port: u16,
    options: IperfOptions,
) -> Result<IperfResult> {
    server_ip
        .parse::<IpAddr>()
        .map_err(|_| Error::new(format!("iperf3: {server_ip:?} is not an IP address")))?;
    if options.seconds == 0 {
        return Err(Error::new("iperf3: seconds must be at least 1"));
    }
    let port_text = port.to_string();
    let seconds = options.seconds.to_string();
    let mut args = vec!["-c", server_ip, "-p", &port_text, "-J", "-t", &seconds];
    args.extend(["--connect-timeout", "3000"]);
    if options.udp {
        args.push("-u");
    }
    if let Some(bitrate) = &options.bitrate {
        args.extend(["-b", bitrate.as_str()]);
    }
    let length = options.length.map(|l| l.to_string());
    if let Some(length) = &length {
        args.extend(["-l", length.as_str()]);
    }
    if options.reverse {
        args.push("-R");
    }
    let parallel = options.parallel.to_string();
    if options.parallel > 1 {
        args.extend(["-P", parallel.as_str()]);
    }
    let cpu = options.cpu.map(|c| c.to_string());
    if let Some(cpu) = &cpu {
        args.extend(["-A", cpu.as_str()]);
    }

    let limit = Duration::from_secs(u64::from(options.seconds) + 20);
    let output = ns.exec("iperf3", &args, limit)?;
    let cmdline = format!("{} (in {})", describe("iperf3", &args), ns.name_or_host());
    let stdout = String::from_utf8_lossy(&output.stdout);
    match parse_iperf3_json(&stdout) {
        Ok(result) => {
            check(&cmdline, &output)?;
            Ok(result)
        }
        Err(e) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            Err(Error::new(format!(
                "`{cmdline}` ({}): {e}; stderr: {}",
                output.status,
                stderr.trim()
            )))
        }
    }
}

/// Parses `iperf3 -J` output; a document with an `"error"` key is an error.
pub fn parse_iperf3_json(text: &str) -> Result<IperfResult> {
    let json: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Error::new(format!("iperf3 output is not JSON ({e}): {}", text.trim())))?;
    if let Some(error) = json.get("error").and_then(|e| e.as_str()) {
        return Err(Error::new(format!("iperf3: {error}")));
    }
    let end = &json["end"];
    let udp =
        json["start"]["test_start"]["protocol"].as_str() == Some("UDP") || end.get("sum").is_some();
    let f64_at = |v: &serde_json::Value, key: &str| v.get(key).and_then(|x| x.as_f64());
    let u64_at = |v: &serde_json::Value, key: &str| v.get(key).and_then(|x| x.as_u64());
    let missing = |what: &str| Error::new(format!("iperf3 JSON has no {what}"));

    let result = if udp {
        let sum = end.get("sum").or_else(|| end.get("sum_received"));
        let sum = sum.ok_or_else(|| missing("end.sum"))?;
        let received = end.get("sum_received").unwrap_or(sum);
        let sent = end.get("sum_sent").unwrap_or(sum);
        IperfResult {
            bits_per_second: f64_at(received, "bits_per_second")
                .ok_or_else(|| missing("end.sum.bits_per_second"))?,
            sender_bits_per_second: f64_at(sent, "bits_per_second").unwrap_or(0.0),
            retransmits: None,
            lost_percent: f64_at(sum, "lost_percent"),
            lost_packets: u64_at(sum, "lost_packets"),
            packets: u64_at(sum, "packets"),
            jitter_ms: f64_at(sum, "jitter_ms"),
            raw_json: serde_json::Value::Null,
        }
    } else {
        let received = end
            .get("sum_received")
            .ok_or_else(|| missing("end.sum_received"))?;
        let sent = end.get("sum_sent").unwrap_or(received);
        IperfResult {
            bits_per_second: f64_at(received, "bits_per_second")
                .ok_or_else(|| missing("end.sum_received.bits_per_second"))?,
            sender_bits_per_second: f64_at(sent, "bits_per_second").unwrap_or(0.0),
            retransmits: u64_at(sent, "retransmits"),
            lost_percent: None,
            lost_packets: None,
            packets: None,
            jitter_ms: None,
            raw_json: serde_json::Value::Null,
        }
    };
    Ok(IperfResult {
        raw_json: json,
        ..result
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "PING 10.0.2.2 (10.0.2.2) 56(84) bytes of data.
64 bytes from 10.0.2.2: icmp_seq=1 ttl=63 time=0.271 ms
64 bytes from 10.0.2.2: icmp_seq=2 ttl=63 time=0.064 ms

--- 10.0.2.2 ping statistics ---
2 packets transmitted, 2 received, 0% packet loss, time 201ms
rtt min/avg/max/mdev = 0.064/0.167/0.271/0.103 ms
";

    const TTL: &str = "PING 10.0.2.2 (10.0.2.2) 56(84) bytes of data.
From 10.0.1.1 icmp_seq=1 Time to live exceeded
From 10.0.1.1 icmp_seq=2 Time to live exceeded

--- 10.0.2.2 ping statistics ---
2 packets transmitted, 0 received, +2 errors, 100% packet loss, time 204ms
";

    const FRAG: &str = "PING 10.0.2.2 (10.0.2.2) 1450(1478) bytes of data.
From 10.0.1.1 icmp_seq=1 Frag needed and DF set (mtu = 1400)

--- 10.0.2.2 ping statistics ---
3 packets transmitted, 0 received, +3 errors, 100% packet loss, time 408ms

ping: local error: message too long, mtu=1400
ping: local error: message too long, mtu=1400
";

    const LOCAL: &str = "PING 10.0.2.2 (10.0.2.2) 1600(1628) bytes of data.

--- 10.0.2.2 ping statistics ---
2 packets transmitted, 0 received, +2 errors, 100% packet loss, time 200ms

ping: local error: message too long, mtu=1400
";

    #[test]
    fn parses_replies() {
        let r = parse_ping(OK).unwrap();
        assert_eq!((r.transmitted, r.received, r.errors), (2, 2, 0));
        assert_eq!(r.loss_percent, 0.0);
        assert_eq!(r.rtt_avg_ms, Some(0.167));
        assert!(r.icmp_errors.is_empty());
        assert_eq!(r.frag_needed_mtu, None);
    }

    #[test]
    fn parses_ttl_exceeded() {
        let r = parse_ping(TTL).unwrap();
        assert_eq!((r.transmitted, r.received, r.errors), (2, 0, 2));
        assert_eq!(r.loss_percent, 100.0);
        assert_eq!(r.rtt_avg_ms, None);
        assert_eq!(r.icmp_errors.len(), 2);
        assert!(r.has_error("Time to live exceeded"));
    }

    #[test]
    fn parses_frag_needed() {
        let r = parse_ping(FRAG).unwrap();
        assert_eq!(r.frag_needed_mtu, Some(1400));
        assert_eq!(r.icmp_errors.len(), 3);
        assert!(r.has_error("Frag needed"));
        let r = parse_ping(LOCAL).unwrap();
        assert_eq!(r.frag_needed_mtu, Some(1400));
    }

    #[test]
    fn missing_summary_is_an_error() {
        assert!(parse_ping("ping: connect: Network is unreachable\n").is_err());
    }

    #[test]
    fn parses_iperf_tcp_and_udp() {
        let tcp = r#"{"start":{"test_start":{"protocol":"TCP"}},"end":{
            "sum_sent":{"bits_per_second":2.0e9,"retransmits":5},
            "sum_received":{"bits_per_second":1.9e9}}}"#;
        let r = parse_iperf3_json(tcp).unwrap();
        assert_eq!(r.bits_per_second, 1.9e9);
        assert_eq!(r.sender_bits_per_second, 2.0e9);
        assert_eq!(r.retransmits, Some(5));
        assert_eq!(r.packets, None);

        let udp = r#"{"start":{"test_start":{"protocol":"UDP"}},"end":{
            "sum":{"bits_per_second":9995538.5,"jitter_ms":0.0085,"lost_packets":3,
                   "packets":927,"lost_percent":0.32},
            "sum_sent":{"bits_per_second":9995538.5},
            "sum_received":{"bits_per_second":9994938.9}}}"#;
        let r = parse_iperf3_json(udp).unwrap();
        assert_eq!(r.bits_per_second, 9994938.9);
        assert_eq!(r.packets, Some(927));
        assert_eq!(r.lost_packets, Some(3));
        assert_eq!(r.lost_percent, Some(0.32));
        assert_eq!(r.jitter_ms, Some(0.0085));
        assert_eq!(r.retransmits, None);
    }

    #[test]
    fn iperf_error_document_is_an_error() {
        let text = r#"{"start":{},"intervals":[],"end":{},
            "error":"unable to connect to server: Connection refused"}"#;
        let err = parse_iperf3_json(text).unwrap_err();
        assert!(err.message().contains("Connection refused"), "{err}");
    }
}
