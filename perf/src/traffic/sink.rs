//! `vrouter-perf sink`: receives frames on one AF_XDP socket and measures them.
//!
//! Attaches the project's XDP program ([`vrouter::xdp`]) to `--iface` (native mode, generic as
//! fallback), binds a socket to `--queue`, registers it in the program's XSK map and fills the
//! fill ring; then (and only then) creates `--ready-file`, so a driver knows it can start the
//! generator. The XDP program redirects everything on the queue to the socket: while the sink
//! runs, the interface's kernel stack sees nothing (ARP included).
//!
//! # Loop
//! Busy-polls: RX burst (64); one CLOCK_MONOTONIC read per burst; each frame parsed
//! ([`super::frame::parse_tag`]) and accounted ([`SinkStats`]); frames back to the pool and
//! the fill ring refilled. Stops at the first of: `--duration`; `--idle-stop` seconds without
//! a tagged frame once one has arrived; `--expect N` distinct frames received; SIGINT/SIGTERM.
//!
//! # Counters
//! - `received`: tagged frames (duplicates included); `other`: frames without a valid tag.
//! - `bytes`: length of tagged frames as received (the outer frame for VXLAN) + 4 bytes FCS.
//! - `lost`: `--expect` (or highest seq + 1) minus distinct seqs received; loss before the
//!   highest seq is visible without `--expect`, loss at the tail only with it.
//! - `duration_s`: first to last tagged frame (burst clock reads); `pps = received /
//!   duration_s`. `first_rx_s`: seconds from readiness to the first tagged frame (null if none).
//! - `xsk_rx_dropped`: the kernel's `rx_dropped + rx_ring_full` for the socket (frames the
//!   socket could not take). Drops before the socket (veth's ring, XDP) show as `lost`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Args;
use vrouter::xdp::{XdpAttachment, XdpMode};
use vrouter::xsk::{BindMode, FramePool, Umem, UmemConfig, XdpDesc, XskConfig, XskSocket};

use super::stats::{LatencySummary, SinkStats};
use super::{bind_socket, check_duration, in_netns, monotonic_ns, process_cpu_seconds, progress};

/// Frames per RX burst.
pub const BATCH: usize = 64;
/// Rings sized for a sink that loses its CPU for a few milliseconds at ~1 Mpps (the CPU is
/// shared on small test machines): 8192 RX entries are 8 ms at 1 Mpps.
const UMEM_FRAMES: u32 = 16384;
const FILL_RING: u32 = 8192;
const RX_RING: u32 = 8192;

/// `vrouter-perf sink` flags.
#[derive(Debug, Clone, Args)]
pub struct SinkArgs {
    /// Network namespace of the interface (a name under /run/netns or a path).
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
    /// Interface to receive on.
    #[arg(long, value_name = "IF")]
    pub iface: String,
    /// Queue of the interface.
    #[arg(long, default_value_t = 0, value_name = "Q")]
    pub queue: u32,
    /// Longest run in seconds (at most 600).
    #[arg(long, value_name = "SECS")]
    pub duration: f64,
    /// Stop after this many seconds without a tagged frame, once one has arrived.
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    pub idle_stop: f64,
    /// Frames the generator sent: counts tail loss, and stops the sink once all arrived.
    #[arg(long, value_name = "N")]
    pub expect: Option<u64>,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Create this file once the socket is ready to receive.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<std::path::PathBuf>,
    /// With an empty RX ring: spin (`busy`, for a CPU of its own), or sleep in poll(2) until
    /// frames arrive (`poll`: the sink then costs CPU in proportion to the traffic, and can
    /// share a CPU with the generator).
    #[arg(long, value_enum, default_value_t = Wait::Busy)]
    pub wait: Wait,
}

/// How the sink waits for frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Wait {
    /// Spin on the RX ring.
    Busy,
    /// Sleep in poll(2) (at most 1 ms at a time) while the ring is empty.
    Poll,
}

/// The sink's summary (the JSON object of `--json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SinkSummary {
    /// Always "sink".
    pub role: &'static str,
    /// Interface.
    pub iface: String,
    /// Network namespace.
    pub netns: Option<String>,
    /// Tagged frames.
    pub received: u64,
    /// Their bytes, FCS included.
    pub bytes: u64,
    /// Frames without a valid tag.
    pub other: u64,
    /// Tagged frames whose seq was seen before.
    pub duplicates: u64,
    /// First arrivals below the highest seq seen.
    pub reordered: u64,
    /// Missing frames.
    pub lost: u64,
    /// `lost` in percent of the frames expected.
    pub loss_pct: f64,
    /// Seconds from readiness to the first tagged frame.
    pub first_rx_s: Option<f64>,
    /// Seconds from the first to the last tagged frame.
    pub duration_s: f64,
    /// `received / duration_s`.
    pub pps: f64,
    /// One-way latency in ns.
    pub latency_ns: LatencySummary,
    /// Kernel drops of the socket (`rx_dropped + rx_ring_full`).
    pub xsk_rx_dropped: u64,
    /// Process user + system CPU seconds.
    pub cpu_s: f64,
    /// Distinct seqs received.
    pub unique: u64,
    /// Highest seq received.
    pub highest_seq: Option<u64>,
    /// Frames beyond the duplicate/reorder bitmap (seq >= 2^30): counted, not checked.
    pub untracked: u64,
    /// Tagged frames that came in VXLAN.
    pub vxlan: u64,
    /// Mode the XDP program was attached in ("native" or "generic").
    pub xdp_mode: &'static str,
}

/// Runs the sink and prints its summary.
pub fn run(args: &SinkArgs) -> Result<(), String> {
    let duration = check_duration("--duration", args.duration)?;
    if !args.idle_stop.is_finite() || args.idle_stop <= 0.0 {
        return Err(format!("--idle-stop {}: must be above 0", args.idle_stop));
    }
    let idle_stop = Duration::from_secs_f64(args.idle_stop.min(super::MAX_DURATION_S));
    let stop = super::stop_on_signals().map_err(|e| format!("signal setup: {e}"))?;

    let config = XskConfig {
        fill_size: FILL_RING,
        comp_size: 64,
        rx_size: RX_RING,
        tx_size: 64,
        bind_mode: BindMode::Auto,
    };
    let (iface, queue) = (args.iface.as_str(), args.queue);
    let (umem, mut sock, mut xdp) = in_netns(args.netns.as_deref(), || -> Result<_, String> {
        let xdp = XdpAttachment::attach(iface, XdpMode::Auto)
            .map_err(|e| format!("XDP program on {iface}: {e}"))?;
        let umem = Umem::new(UmemConfig {
            frame_count: UMEM_FRAMES,
            frame_size: 2048,
            headroom: 0,
        })
        .map_err(|e| format!("UMEM: {e}"))?;
        let sock = bind_socket(&umem, iface, queue, &config)?;
        Ok((umem, sock, xdp))
    })??;
    let mut pool = FramePool::new(&umem);
    pool.refill(&mut sock, FILL_RING as usize);
    xdp.register_socket(queue, sock.fd())
        .map_err(|e| format!("registering the socket in the XDP program: {e}"))?;
    let xdp_mode = match xdp.attached_mode() {
        XdpMode::Native => "native",
        _ => "generic",
    };
    if let Some(path) = &args.ready_file {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    }

    let ready_ns = monotonic_ns();
    let mut stats = SinkStats::default();
    receive(
        &umem,
        &mut pool,
        &mut sock,
        &mut stats,
        Limits {
            wait: args.wait,
            duration,
            idle_stop,
            expect: args.expect,
            quiet: args.quiet,
        },
        &stop,
    );

    let _ = xdp.unregister_socket(queue);
    let kernel = sock.statistics().unwrap_or_default();
    sock.close(&mut pool);
    drop(xdp);

    let expected = args
        .expect
        .unwrap_or_else(|| stats.seqs.highest().map_or(0, |h| h + 1));
    let lost = stats.seqs.lost(args.expect);
    let active = stats.active_seconds();
    let summary = SinkSummary {
        role: "sink",
        iface: args.iface.clone(),
        netns: args.netns.clone(),
        received: stats.received,
        bytes: stats.bytes,
        other: stats.other,
        duplicates: stats.seqs.duplicates(),
        reordered: stats.seqs.reordered(),
        lost,
        loss_pct: if expected > 0 {
            lost as f64 * 100.0 / expected as f64
        } else {
            0.0
        },
        first_rx_s: stats
            .first_rx_ns
            .map(|t| t.saturating_sub(ready_ns) as f64 / 1e9),
        duration_s: active,
        pps: if active > 0.0 {
            stats.received as f64 / active
        } else {
            0.0
        },
        latency_ns: stats.latency.summary(),
        xsk_rx_dropped: kernel.rx_dropped + kernel.rx_ring_full,
        cpu_s: process_cpu_seconds(),
        unique: stats.seqs.unique(),
        highest_seq: stats.seqs.highest(),
        untracked: stats.seqs.untracked(),
        vxlan: stats.vxlan,
        xdp_mode,
    };
    if args.json {
        let text = serde_json::to_string(&summary).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        let l = &summary.latency_ns;
        println!(
            "sink {}{}: received {} ({} other, {} duplicates, {} reordered, {} lost = {:.3} %) \
             in {:.3} s = {:.0} pps; latency ns min {} p50 {} p90 {} p99 {} p99.9 {} max {} \
             mean {:.0}; socket drops {}; cpu {:.3} s",
            summary.iface,
            summary
                .netns
                .as_deref()
                .map(|n| format!(" in {n}"))
                .unwrap_or_default(),
            summary.received,
            summary.other,
            summary.duplicates,
            summary.reordered,
            summary.lost,
            summary.loss_pct,
            summary.duration_s,
            summary.pps,
            l.min,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            l.mean,
            summary.xsk_rx_dropped,
            summary.cpu_s,
        );
    }
    Ok(())
}

struct Limits {
    wait: Wait,
    duration: Duration,
    idle_stop: Duration,
    expect: Option<u64>,
    quiet: bool,
}

fn receive(
    umem: &Umem,
    pool: &mut FramePool,
    sock: &mut XskSocket,
    stats: &mut SinkStats,
    limits: Limits,
    stop: &std::sync::atomic::AtomicBool,
) {
    let mut descs = [XdpDesc::default(); BATCH];
    let start = Instant::now();
    let mut last_tagged: Option<Instant> = None;
    let mut next_report = Duration::from_secs(1);
    let mut reported = (Duration::ZERO, 0u64);
    let mut polls: u32 = 0;
    loop {
        let n = sock.rx_burst(&mut descs);
        if n > 0 {
            let now_ns = monotonic_ns();
            let before = stats.received;
            for d in &descs[..n] {
                match umem.data(d) {
                    Some(frame) => {
                        stats.record_frame(frame, now_ns);
                    }
                    None => stats.other += 1,
                }
                pool.free(d.addr);
            }
            if stats.received > before {
                last_tagged = Some(Instant::now());
            }
            if sock.fill_free() as usize >= BATCH {
                pool.refill(sock, pool.len());
            }
            if limits
                .expect
                .is_some_and(|e| e > 0 && stats.seqs.unique() >= e)
            {
                return;
            }
        } else if limits.wait == Wait::Poll {
            let mut fds = [nix::poll::PollFd::new(
                sock.fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(1u16));
        } else {
            let _ = sock.wake_rx();
            std::hint::spin_loop();
            polls = polls.wrapping_add(1);
            // Clock and flags every 64 empty polls: cheap, and still sub-millisecond.
            if !polls.is_multiple_of(64) {
                continue;
            }
        }
        let elapsed = start.elapsed();
        if elapsed >= limits.duration || stop.load(Ordering::Relaxed) {
            return;
        }
        if last_tagged.is_some_and(|t| t.elapsed() >= limits.idle_stop) {
            return;
        }
        if !limits.quiet && elapsed >= next_report {
            let (t0, r0) = reported;
            let pps = (stats.received - r0) as f64 / (elapsed - t0).as_secs_f64();
            progress(&format!(
                "sink: {:.0} s: received {} ({:.0} pps), lost by gaps {}, p99 last second {} ns",
                elapsed.as_secs_f64(),
                stats.received,
                pps,
                stats.seqs.lost(None),
                stats.window.quantile(0.99)
            ));
            stats.window.reset();
            reported = (elapsed, stats.received);
            next_report += Duration::from_secs(1);
        }
    }
}
