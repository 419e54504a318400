//! `vrouter-perf gen` and `vrouter-perf sink`: a tagged-packet generator and a sink over
//! AF_XDP, on the project's own port code ([`vrouter::xsk`], [`vrouter::xdp`]).
//!
//! # Contract
//! - Every frame carries an 18-byte tag directly after its L4 header (UDP payload, or the
//!   payload of a TCP SYN): `magic 0x5650 | seq u64 | tx_ns u64`, big-endian ([`frame`]).
//!   `seq` is one counter per generator run from 0; `tx_ns` is CLOCK_MONOTONIC (shared by all
//!   network namespaces) when the batch was put on the TX ring.
//! - `--size` is the Ethernet frame size on the wire including the 4-byte FCS (RFC 2544):
//!   `--size 64` puts 60-byte frames on the TX ring. With `--vxlan` it is the inner frame's
//!   size; the outer headers add 50 bytes (outer IPv4) or 70 bytes (outer IPv6).
//! - The generator ([`gen`]) prints one summary (text, or one JSON object with `--json`);
//!   the sink ([`sink`]) likewise. Their JSON keys are the interface `vrouter-perf compare`
//!   reads; see `docs/vrouter-perf.md`.
//! - Both stop cleanly on SIGINT/SIGTERM (the signals are blocked and taken by a thread with
//!   `sigwait`, so no unsafe signal handler is needed) and print their summary.
//! - Sockets and the XDP program are created inside `--netns` with
//!   [`vrouter::xsk::run_in_netns`]; the XDP program (sink only) is attached through a BPF
//!   link, so it goes away with the process even if the process is killed.
//!
//! # Limitations
//! - One queue per process (`--queue`); the test topologies use one-queue veths.
//! - The sink busy-polls (it is meant to be pinned with `--cpu`), bounded by `--duration`.
//! - No `unsafe` here: the OS calls go through `nix` and the AF_XDP code of `vrouter::xsk`.

pub mod frame;
pub mod gen;
pub mod sink;
pub mod stats;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use frame::Mac;

/// Longest run of either command.
pub const MAX_DURATION_S: f64 = 600.0;

/// CLOCK_MONOTONIC in ns (the clock of the tag's `tx_ns`).
pub fn monotonic_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64,
        Err(_) => 0,
    }
}

/// User + system CPU time of the whole process so far, in seconds.
pub fn process_cpu_seconds() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            secs(u.user_time()) + secs(u.system_time())
        }
        Err(_) => 0.0,
    }
}

/// A flag set when SIGINT or SIGTERM arrives. Blocks both signals in the calling thread (call
/// it before any thread is started, so every thread inherits the mask) and waits for them on
/// a background thread.
pub fn stop_on_signals() -> std::io::Result<Arc<AtomicBool>> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block().map_err(std::io::Error::from)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if set.wait().is_ok() {
                flag.store(true, Ordering::Relaxed);
            }
        })?;
    Ok(stop)
}

/// Runs `f` inside `netns` when given, in the current namespace otherwise.
pub fn in_netns<T: Send>(netns: Option<&str>, f: impl FnOnce() -> T + Send) -> Result<T, String> {
    match netns {
        Some(ns) => vrouter::xsk::run_in_netns(ns, f)
            .map_err(|e| format!("cannot enter network namespace {ns}: {e}")),
        None => Ok(f()),
    }
}

/// The MAC of `iface` in the calling thread's network namespace (from `getifaddrs`, which asks
/// the kernel over netlink: right under `setns`, unlike sysfs).
pub fn interface_mac(iface: &str) -> Result<Mac, String> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| format!("getifaddrs: {e}"))?;
    for a in addrs {
        if a.interface_name != iface {
            continue;
        }
        if let Some(mac) = a
            .address
            .as_ref()
            .and_then(|s| s.as_link_addr())
            .and_then(|l| l.addr())
        {
            return Ok(Mac(mac));
        }
    }
    Err(format!(
        "no interface {iface} with a MAC address in this network namespace"
    ))
}

/// Binds an AF_XDP socket, retrying for up to [`BIND_RETRY`] while the kernel answers `EBUSY`:
/// the socket of a process that just exited stays bound to the queue for a moment (its release
/// is deferred), which back-to-back runs hit.
pub fn bind_socket(
    umem: &vrouter::xsk::Umem,
    iface: &str,
    queue: u32,
    config: &vrouter::xsk::XskConfig,
) -> Result<vrouter::xsk::XskSocket, String> {
    let deadline = std::time::Instant::now() + BIND_RETRY;
    loop {
        match vrouter::xsk::XskSocket::new(umem, iface, queue, config) {
            Ok(sock) => return Ok(sock),
            Err(vrouter::xsk::XskError::Sys { source, .. })
                if source.raw_os_error() == Some(libc::EBUSY)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(format!("AF_XDP socket on {iface} queue {queue}: {e}")),
        }
    }
}

/// How long [`bind_socket`] retries a busy queue.
pub const BIND_RETRY: std::time::Duration = std::time::Duration::from_secs(3);

/// Checks `--duration`: positive, finite, at most [`MAX_DURATION_S`].
pub fn check_duration(flag: &str, secs: f64) -> Result<std::time::Duration, String> {
    if !secs.is_finite() || secs <= 0.0 || secs > MAX_DURATION_S {
        return Err(format!(
            "{flag} {secs}: must be above 0 and at most {MAX_DURATION_S} s"
        ));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// Writes `line` to stderr (progress lines), ignoring errors.
pub fn progress(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}
