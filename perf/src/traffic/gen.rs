//! `vrouter-perf gen`: transmits tagged frames on one AF_XDP socket.
//!
//! # Loop
//! Per iteration: take completed frames back into the pool; decide how many frames may go
//! (the token bucket, the count, the room on the TX ring, free frames); read CLOCK_MONOTONIC
//! once; copy each frame from its flow's template into a UMEM frame and write its tag
//! ([`Templates::write`]); put the batch on the TX ring; kick the kernel while frames are
//! pending (in copy mode each `sendto` sends at most 32 frames; at most [`MAX_KICKS`] per
//! iteration). Flows take turns round robin.
//!
//! # Pacing
//! `--rate R`: by time `t` since the start, at most `floor(R * t)` frames have been sent (a
//! token bucket refilled from CLOCK_MONOTONIC, computed from the start, so there is no drift
//! over long runs; a generator that fell behind catches up in bursts of at most one batch per
//! iteration). The batch size is `R / 10000` frames, between 1 and [`BATCH`], i.e. a batch
//! every 100 µs or less; the generator sleeps (timer slack 1 µs) when the next batch is more
//! than 30 µs away and spins otherwise, so a paced generator leaves most of its CPU to a
//! sink sharing it.
//!
//! # Where the CPU time goes (veth, copy mode)
//! `sendto` does the whole transmission synchronously: an skb per frame, the copy, and
//! `veth_xmit`, which hands the frame to the peer and schedules the peer's NAPI on the
//! *calling* CPU; the peer's XDP program and the copy into the receiving AF_XDP socket then
//! run in the softirq on the generator's CPU (`/proc/softirqs` NET_RX grows on the
//! generator's CPU only). Over a bare veth pair the generator's CPU is thus the bottleneck
//! and frame size hardly matters (per-packet costs dominate).
//!
//! # Counters
//! `sent` counts frames put on the TX ring (each has a sequence number; `last_seq` is
//! `sent - 1`). `tx_ring_full` counts iterations where the TX ring had room for less than the
//! batch. `kicks` counts `sendto` calls. Frames the device drops after `sendto` took them
//! (veth: when the peer's ring is full) are not visible here: the sink sees them as lost.
//!
//! No XDP program is needed on the generator's interface: AF_XDP transmission in copy mode
//! does not involve one.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Args;
use vrouter::xsk::{BindMode, FramePool, Umem, UmemConfig, XdpDesc, XskConfig, XskSocket};

use super::frame::{FrameSpec, Mac, Proto, Tag, Templates, VxlanSpec};
use super::{
    bind_socket, check_duration, in_netns, interface_mac, monotonic_ns, process_cpu_seconds,
    progress,
};

/// Frames per TX batch at full speed: what one `sendto` sends in copy mode. Measured on veth
/// (64 B, unpaced): 64-frame batches gave ~600 kpps and a p50 latency of ~50 µs, 32-frame
/// batches ~750 kpps and ~21 µs: the second half of a 64-frame batch waited on the TX ring for
/// the first half's `sendto`, with its tag's `tx_ns` already taken.
pub const BATCH: usize = 32;
/// Most `sendto` calls per loop iteration.
pub const MAX_KICKS: usize = 16;
const TX_RING: u32 = 2048;
const UMEM_FRAMES: u32 = 4096;
/// Longest frame on the TX ring with a 1500-byte MTU.
const STANDARD_FRAME_LEN: usize = 1514;
/// How long the generator waits for outstanding completions before exiting.
const DRAIN: Duration = Duration::from_millis(200);
/// A paced generator sleeps until its next batch when that is further than this...
const SLEEP_ABOVE: Duration = Duration::from_micros(30);
/// ...and wakes this much early (timer slack is set to 1 µs, wakeup latency is ~5-10 µs).
const WAKE_EARLY: Duration = Duration::from_micros(15);

/// `vrouter-perf gen` flags.
#[derive(Debug, Clone, Args)]
pub struct GenArgs {
    /// Network namespace of the interface (a name under /run/netns or a path).
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
    /// Interface to transmit on.
    #[arg(long, value_name = "IF")]
    pub iface: String,
    /// Queue of the interface.
    #[arg(long, default_value_t = 0, value_name = "Q")]
    pub queue: u32,
    /// Source MAC (default: the interface's MAC).
    #[arg(long, value_name = "MAC")]
    pub src_mac: Option<Mac>,
    /// Destination MAC.
    #[arg(long, value_name = "MAC")]
    pub dst_mac: Mac,
    /// Source address of flow 0 (IPv4 or IPv6).
    #[arg(long, value_name = "IP")]
    pub src: std::net::IpAddr,
    /// Destination address (same family as --src).
    #[arg(long, value_name = "IP")]
    pub dst: std::net::IpAddr,
    /// L4 protocol.
    #[arg(long, value_enum, default_value_t = Proto::Udp)]
    pub proto: Proto,
    /// Source port of flow 0.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub sport: u16,
    /// Destination port.
    #[arg(long, default_value_t = 9, value_name = "N")]
    pub dport: u16,
    /// Flows: flow i has source port sport + (i % 65536) and source address src + i / 65536.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub flows: u32,
    /// Frame size on the wire, FCS included (64..=1518); the inner frame's with --vxlan.
    #[arg(long, default_value_t = 64, value_name = "BYTES")]
    pub size: usize,
    /// Encapsulate in VXLAN with this VNI (needs --outer-src and --outer-dst).
    #[arg(long, value_name = "VNI", requires_all = ["outer_src", "outer_dst"])]
    pub vxlan: Option<u32>,
    /// Outer source address (VXLAN).
    #[arg(long, value_name = "IP", requires = "vxlan")]
    pub outer_src: Option<std::net::IpAddr>,
    /// Outer destination address (VXLAN).
    #[arg(long, value_name = "IP", requires = "vxlan")]
    pub outer_dst: Option<std::net::IpAddr>,
    /// Inner source MAC (VXLAN).
    #[arg(long, value_name = "MAC", default_value = "02:00:00:00:00:01")]
    pub inner_src_mac: Mac,
    /// Inner destination MAC (VXLAN).
    #[arg(long, value_name = "MAC", default_value = "02:00:00:00:00:02")]
    pub inner_dst_mac: Mac,
    /// Frames per second (0 or absent: as fast as possible).
    #[arg(long, value_name = "PPS")]
    pub rate: Option<u64>,
    /// Stop after this many frames.
    #[arg(long, value_name = "N", required_unless_present = "duration")]
    pub count: Option<u64>,
    /// Stop after this many seconds (at most 600).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// The generator's summary (the JSON object of `--json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct GenSummary {
    /// Always "gen".
    pub role: &'static str,
    /// Interface.
    pub iface: String,
    /// Network namespace.
    pub netns: Option<String>,
    /// `--size`.
    pub size: usize,
    /// `--flows`.
    pub flows: u32,
    /// `--proto`.
    pub proto: &'static str,
    /// Inner addresses are IPv6.
    pub ipv6: bool,
    /// VNI with `--vxlan`.
    pub vxlan: Option<u32>,
    /// `--rate` (0: unpaced).
    pub rate_target: u64,
    /// Frames put on the TX ring.
    pub sent: u64,
    /// Seconds from the first batch to the last.
    pub duration_s: f64,
    /// `sent / duration_s`.
    pub pps: f64,
    /// Iterations where the TX ring could not take the whole batch.
    pub tx_ring_full: u64,
    /// `sendto` calls.
    pub kicks: u64,
    /// First sequence number (0).
    pub first_seq: u64,
    /// Last sequence number (`sent - 1`; 0 when nothing was sent).
    pub last_seq: u64,
    /// Process user + system CPU seconds.
    pub cpu_s: f64,
    /// Frames whose completion came back before exit (equals `sent` unless the device
    /// stalled).
    pub completed: u64,
    /// Bytes per frame on the TX ring (FCS not included).
    pub frame_len: usize,
    /// Frames the kernel refused (`tx_invalid_descs`: e.g. longer than the interface's MTU
    /// allows); they are counted in `sent` but never left the host.
    pub tx_invalid: u64,
}

impl GenArgs {
    fn frame_spec(&self, src_mac: Mac) -> Result<FrameSpec, String> {
        let vxlan = match (self.vxlan, self.outer_src, self.outer_dst) {
            (Some(vni), Some(outer_src), Some(outer_dst)) => Some(VxlanSpec {
                vni,
                outer_src,
                outer_dst,
                inner_src_mac: self.inner_src_mac,
                inner_dst_mac: self.inner_dst_mac,
            }),
            (None, _, _) => None,
            _ => return Err("--vxlan needs --outer-src and --outer-dst".into()),
        };
        Ok(FrameSpec {
            src_mac,
            dst_mac: self.dst_mac,
            src: self.src,
            dst: self.dst,
            proto: self.proto,
            sport: self.sport,
            dport: self.dport,
            flows: self.flows,
            size: self.size,
            vxlan,
        })
    }
}

/// Runs the generator and prints its summary.
pub fn run(args: &GenArgs) -> Result<(), String> {
    let duration = match args.duration {
        Some(d) => check_duration("--duration", d)?,
        None => Duration::from_secs_f64(super::MAX_DURATION_S),
    };
    let count = args.count.unwrap_or(u64::MAX);
    let rate = args.rate.unwrap_or(0);
    // Precise sleeps for pacing (the default slack is 50 µs); failure only costs precision.
    let _ = nix::sys::prctl::set_timerslack(1000);
    // Frames are checked before anything is opened (with a placeholder MAC when the real one
    // is not known yet), so a bad --size fails fast.
    args.frame_spec(args.src_mac.unwrap_or(Mac([0; 6])))?
        .validate()
        .map_err(|e| e.to_string())?;
    let stop = super::stop_on_signals().map_err(|e| format!("signal setup: {e}"))?;

    let config = XskConfig {
        fill_size: 64,
        comp_size: 4096,
        rx_size: 64,
        tx_size: TX_RING,
        bind_mode: BindMode::Auto,
    };
    let (iface, queue, src_mac) = (args.iface.as_str(), args.queue, args.src_mac);
    let (umem, sock, src_mac) = in_netns(args.netns.as_deref(), || -> Result<_, String> {
        let mac = match src_mac {
            Some(mac) => mac,
            None => interface_mac(iface)?,
        };
        let umem = Umem::new(UmemConfig {
            frame_count: UMEM_FRAMES,
            frame_size: 2048,
            headroom: 0,
        })
        .map_err(|e| format!("UMEM: {e}"))?;
        let sock = bind_socket(&umem, iface, queue, &config)?;
        Ok((umem, sock, mac))
    })??;
    let templates = Templates::build(&args.frame_spec(src_mac)?).map_err(|e| e.to_string())?;
    if templates.frame_len() > STANDARD_FRAME_LEN {
        // The kernel does not tell: veth drops an oversized frame after the socket completed
        // it. Only a warning: the link's MTU may be larger.
        progress(&format!(
            "gen: warning: frames of {} bytes (VXLAN headers included) exceed {STANDARD_FRAME_LEN}: \
             they need an MTU of at least {} on {} and its peer, or they are dropped silently",
            templates.frame_len(),
            templates.frame_len() - 14,
            args.iface
        ));
    }

    let mut gen = Generator {
        pool: FramePool::new(&umem),
        umem,
        sock,
        templates,
        sent: 0,
        tx_ring_full: 0,
        kicks: 0,
        flow: 0,
    };
    let started = Instant::now();
    let result = gen.run_loop(count, duration, rate, &stop, args.quiet);
    let elapsed = started.elapsed().as_secs_f64();
    let completed = gen.drain();
    result?;
    let tx_invalid = gen
        .sock
        .statistics()
        .map(|s| s.tx_invalid_descs)
        .unwrap_or(0);
    if tx_invalid > 0 {
        progress(&format!(
            "gen: warning: the kernel refused {tx_invalid} of {} frames (frames of {} bytes \
             longer than the MTU of {} allows?)",
            gen.sent,
            gen.templates.frame_len(),
            args.iface
        ));
    }

    let summary = GenSummary {
        role: "gen",
        iface: args.iface.clone(),
        netns: args.netns.clone(),
        size: args.size,
        flows: args.flows,
        proto: args.proto.name(),
        ipv6: args.src.is_ipv6(),
        vxlan: args.vxlan,
        rate_target: rate,
        sent: gen.sent,
        duration_s: elapsed,
        pps: if elapsed > 0.0 {
            gen.sent as f64 / elapsed
        } else {
            0.0
        },
        tx_ring_full: gen.tx_ring_full,
        kicks: gen.kicks,
        first_seq: 0,
        last_seq: gen.sent.saturating_sub(1),
        cpu_s: process_cpu_seconds(),
        completed,
        frame_len: gen.templates.frame_len(),
        tx_invalid,
    };
    print_summary(&summary, args.json)
}

fn print_summary(s: &GenSummary, json: bool) -> Result<(), String> {
    if json {
        let text = serde_json::to_string(s).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        println!(
            "gen {}{}: sent {} frames of {} B ({} {}{}, {} flows) in {:.3} s = {:.0} pps \
             (target {}); tx ring full {} times, {} sendto calls, {} completed, cpu {:.3} s",
            s.iface,
            s.netns
                .as_deref()
                .map(|n| format!(" in {n}"))
                .unwrap_or_default(),
            s.sent,
            s.size,
            if s.ipv6 { "IPv6" } else { "IPv4" },
            s.proto,
            s.vxlan
                .map(|v| format!(" in VXLAN {v}"))
                .unwrap_or_default(),
            s.flows,
            s.duration_s,
            s.pps,
            if s.rate_target == 0 {
                "max".to_string()
            } else {
                s.rate_target.to_string()
            },
            s.tx_ring_full,
            s.kicks,
            s.completed,
            s.cpu_s,
        );
    }
    Ok(())
}

struct Generator {
    umem: Umem,
    pool: FramePool,
    sock: XskSocket,
    templates: Templates,
    sent: u64,
    tx_ring_full: u64,
    kicks: u64,
    flow: usize,
}

/// Frames allowed by time `elapsed` at `rate` per second.
pub fn tokens(rate: u64, elapsed: Duration) -> u64 {
    (u128::from(rate) * elapsed.as_nanos() / 1_000_000_000) as u64
}

/// Frames per batch at `rate` (0: unpaced).
pub fn batch_for_rate(rate: u64) -> usize {
    if rate == 0 {
        BATCH
    } else {
        ((rate / 10_000) as usize).clamp(1, BATCH)
    }
}

impl Generator {
    fn run_loop(
        &mut self,
        count: u64,
        duration: Duration,
        rate: u64,
        stop: &std::sync::atomic::AtomicBool,
        quiet: bool,
    ) -> Result<(), String> {
        let batch = batch_for_rate(rate);
        let start = Instant::now();
        let mut next_report = Duration::from_secs(2);
        let mut reported = (Duration::ZERO, 0u64);
        let mut descs = [XdpDesc::default(); BATCH];
        let mut addrs = [0u64; BATCH];
        let len = self.templates.frame_len();
        loop {
            let elapsed = start.elapsed();
            if self.sent >= count || elapsed >= duration || stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            if !quiet && elapsed >= next_report {
                let (t0, s0) = reported;
                let pps = (self.sent - s0) as f64 / (elapsed - t0).as_secs_f64();
                progress(&format!(
                    "gen: {:.0} s: sent {} ({:.0} pps)",
                    elapsed.as_secs_f64(),
                    self.sent,
                    pps
                ));
                reported = (elapsed, self.sent);
                next_report += Duration::from_secs(1);
            }
            self.pool.reclaim_completions(&mut self.sock);

            let mut want = (count - self.sent).min(batch as u64) as usize;
            if rate > 0 {
                let allowed = tokens(rate, elapsed).saturating_sub(self.sent);
                if allowed < want as u64 {
                    // Wait for the batch: sleep when it is far, spin when it is near.
                    let due = Duration::from_nanos(
                        ((self.sent + want as u64) as u128 * 1_000_000_000 / u128::from(rate))
                            as u64,
                    );
                    let wait = due.saturating_sub(elapsed);
                    // Sleeping leaves the CPU to a sink sharing it (`compare` runs them on
                    // one CPU): a spinning generator would delay the sink's wakeups by a
                    // scheduler slice and inflate the latency it measures.
                    if wait > SLEEP_ABOVE {
                        std::thread::sleep(wait - WAKE_EARLY);
                    } else {
                        std::hint::spin_loop();
                    }
                    self.kick();
                    continue;
                }
                want = want.min(allowed as usize);
            }
            let room = TX_RING.saturating_sub(self.sock.tx_pending()) as usize;
            if room < want {
                self.tx_ring_full += 1;
            }
            let n = want.min(room).min(self.pool.len());
            if n > 0 {
                let tx_ns = monotonic_ns();
                for i in 0..n {
                    let Some(addr) = self.pool.alloc() else {
                        break;
                    };
                    addrs[i] = addr;
                    let Some(frame) = self.umem.frame_mut(addr, len) else {
                        return Err(format!("UMEM frame {addr:#x} cannot hold {len} bytes"));
                    };
                    let seq = self.sent + i as u64;
                    self.templates.write(self.flow, Tag { seq, tx_ns }, frame);
                    self.flow += 1;
                    if self.flow == self.templates.flows() {
                        self.flow = 0;
                    }
                    descs[i] = XdpDesc {
                        addr,
                        len: len as u32,
                        options: 0,
                    };
                }
                let accepted = self.sock.tx_burst(&descs[..n]);
                for &addr in &addrs[accepted..n] {
                    self.pool.free(addr);
                }
                if accepted < n {
                    // Cannot happen after the room check; rewinding the flow keeps the round
                    // robin exact anyway (seqs of refused frames are reused).
                    self.tx_ring_full += 1;
                    let refused = n - accepted;
                    let flows = self.templates.flows();
                    self.flow = (self.flow + flows - refused % flows) % flows;
                }
                self.sent += accepted as u64;
            }
            self.kick();
        }
    }

    /// Kicks while frames are pending, at most [`MAX_KICKS`] times.
    fn kick(&mut self) {
        for _ in 0..MAX_KICKS {
            if self.sock.tx_pending() == 0 || !self.sock.tx_needs_wakeup() {
                break;
            }
            self.kicks += 1;
            if self.sock.kick_tx().is_err() {
                break;
            }
        }
    }

    /// Sends what is pending and takes completions back, for at most [`DRAIN`]. Returns the
    /// frames completed over the whole run.
    fn drain(&mut self) -> u64 {
        let deadline = Instant::now() + DRAIN;
        while self.sock.frames_in_kernel() > 0 && Instant::now() < deadline {
            self.kick();
            self.pool.reclaim_completions(&mut self.sock);
            if self.sock.frames_in_kernel() > 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        self.sock.counters().completed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_has_no_drift() {
        assert_eq!(tokens(50_000, Duration::from_secs(1)), 50_000);
        assert_eq!(tokens(50_000, Duration::from_secs(600)), 30_000_000);
        assert_eq!(tokens(3, Duration::from_millis(999)), 2);
        assert_eq!(
            tokens(1_000_000_000, Duration::from_secs(600)),
            600_000_000_000
        );
        assert_eq!(tokens(0, Duration::from_secs(5)), 0);
    }

    #[test]
    fn batch_follows_rate() {
        assert_eq!(batch_for_rate(0), BATCH);
        assert_eq!(batch_for_rate(100), 1);
        assert_eq!(batch_for_rate(50_000), 5);
        assert_eq!(batch_for_rate(10_000_000), BATCH);
    }
}
