//! The sink's statistics: sequence tracking (loss, duplicates, reordering) and latency.
//!
//! # Sequence numbers
//! A bitmap of seen sequence numbers, grown on demand up to [`MAX_TRACKED_SEQ`] sequence
//! numbers (128 MiB of bitmap at the limit; a 600 s run at 1 Mpps uses 75 MiB). A frame whose
//! seq is at or beyond the limit still counts as received (and its latency is recorded), but
//! cannot be checked for duplication or reordering: it is counted in `untracked` and assumed
//! unique. `reordered` counts frames whose seq is below the highest seq seen so far and that
//! are not duplicates; a frame arriving after a gap does not count, the frames that fill the
//! gap later do.
//!
//! # Latency
//! `now_ns - tx_ns` in ns, recorded in an HDR histogram with 3 significant digits over
//! 1 ns..[`MAX_LATENCY_NS`] (larger values are recorded as the maximum; a `tx_ns` in the
//! future, which a clock shared by all namespaces cannot produce, is recorded as 0).
//! Percentiles are the histogram's (equivalent within 0.1 %); min and max are exact.

use hdrhistogram::Histogram;

/// Highest sequence number + 1 the duplicate/reorder bitmap covers.
pub const MAX_TRACKED_SEQ: u64 = 1 << 30;
/// Largest latency the histogram resolves (60 s).
pub const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// What one sequence number turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqKind {
    /// Seen for the first time, not below the highest seq so far.
    InOrder,
    /// Seen for the first time, below the highest seq so far.
    Reordered,
    /// Seen before.
    Duplicate,
    /// Beyond the bitmap: counted, not checked.
    Untracked,
}

/// Seen sequence numbers.
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    bits: Vec<u64>,
    highest: Option<u64>,
    unique: u64,
    duplicates: u64,
    reordered: u64,
    untracked: u64,
}

impl SeqTracker {
    /// Records `seq`.
    pub fn record(&mut self, seq: u64) -> SeqKind {
        if seq >= MAX_TRACKED_SEQ {
            self.untracked += 1;
            self.unique += 1;
            self.highest = Some(self.highest.map_or(seq, |h| h.max(seq)));
            return SeqKind::Untracked;
        }
        let word = (seq / 64) as usize;
        let bit = 1u64 << (seq % 64);
        if word >= self.bits.len() {
            // Grow geometrically, bounded by the limit.
            let want = (word + 1).max(self.bits.len() * 2).max(1024);
            let cap = (MAX_TRACKED_SEQ / 64) as usize;
            self.bits.resize(want.min(cap), 0);
        }
        if self.bits[word] & bit != 0 {
            self.duplicates += 1;
            return SeqKind::Duplicate;
        }
        self.bits[word] |= bit;
        self.unique += 1;
        match self.highest {
            Some(h) if seq < h => {
                self.reordered += 1;
                SeqKind::Reordered
            }
            _ => {
                self.highest = Some(seq);
                SeqKind::InOrder
            }
        }
    }

    /// Distinct sequence numbers seen.
    pub fn unique(&self) -> u64 {
        self.unique
    }

    /// Frames whose seq was seen before.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// First arrivals below the highest seq seen so far.
    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    /// Frames beyond [`MAX_TRACKED_SEQ`].
    pub fn untracked(&self) -> u64 {
        self.untracked
    }

    /// Highest seq seen.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// Frames missing: `expect` (or highest seq + 1) minus distinct frames received. Never
    /// negative (frames beyond `expect` do not make up for missing ones below it, but cannot
    /// be told apart here either: the count saturates at 0).
    pub fn lost(&self, expect: Option<u64>) -> u64 {
        let sent = expect.unwrap_or_else(|| self.highest.map_or(0, |h| h + 1));
        sent.saturating_sub(self.unique)
    }
}

/// Latency summary in ns (all 0 when nothing was recorded).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct LatencySummary {
    /// Smallest (exact).
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest (exact, unless beyond [`MAX_LATENCY_NS`]).
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

/// Latency histogram with exact min and max.
#[derive(Debug, Clone)]
pub struct Latency {
    hist: Histogram<u64>,
    min: u64,
    max: u64,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty histogram.
    pub fn new() -> Self {
        Latency {
            hist: Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)
                .expect("constant histogram bounds are valid"),
            min: u64::MAX,
            max: 0,
        }
    }

    /// Records one latency.
    pub fn record(&mut self, ns: u64) {
        self.hist.saturating_record(ns);
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
    }

    /// Forgets everything.
    pub fn reset(&mut self) {
        self.hist.reset();
        self.min = u64::MAX;
        self.max = 0;
    }

    /// The percentile `q` (0..=1), 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.hist.is_empty() {
            0
        } else {
            self.hist.value_at_quantile(q)
        }
    }

    /// The summary.
    pub fn summary(&self) -> LatencySummary {
        if self.hist.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            min: self.min,
            p50: self.quantile(0.5),
            p90: self.quantile(0.9),
            p99: self.quantile(0.99),
            p999: self.quantile(0.999),
            max: self.max,
            mean: self.hist.mean(),
        }
    }
}

/// Everything the sink counts.
#[derive(Debug, Default, Clone)]
pub struct SinkStats {
    /// Sequence tracking.
    pub seqs: SeqTracker,
    /// Tagged frames received (duplicates included).
    pub received: u64,
    /// Bytes of tagged frames as received, plus 4 (FCS) per frame.
    pub bytes: u64,
    /// Frames without a valid tag.
    pub other: u64,
    /// Tagged frames that came in VXLAN.
    pub vxlan: u64,
    /// Whole-run latency.
    pub latency: Latency,
    /// Latency since the last progress line.
    pub window: Latency,
    /// CLOCK_MONOTONIC ns of the first and last tagged frame's burst.
    pub first_rx_ns: Option<u64>,
    /// See `first_rx_ns`.
    pub last_rx_ns: u64,
}

impl SinkStats {
    /// Accounts one received frame, read at `now_ns` (one clock read per burst). Returns
    /// whether it carried a valid tag.
    pub fn record_frame(&mut self, frame: &[u8], now_ns: u64) -> bool {
        let Some(parsed) = super::frame::parse_tag(frame) else {
            self.other += 1;
            return false;
        };
        self.received += 1;
        self.bytes += frame.len() as u64 + super::frame::FCS_LEN as u64;
        if parsed.vxlan {
            self.vxlan += 1;
        }
        self.seqs.record(parsed.tag.seq);
        let latency = now_ns.saturating_sub(parsed.tag.tx_ns);
        self.latency.record(latency);
        self.window.record(latency);
        if self.first_rx_ns.is_none() {
            self.first_rx_ns = Some(now_ns);
        }
        self.last_rx_ns = now_ns;
        true
    }

    /// Seconds from the first to the last tagged frame.
    pub fn active_seconds(&self) -> f64 {
        match self.first_rx_ns {
            Some(first) => (self.last_rx_ns - first) as f64 / 1e9,
            None => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::frame::{FrameSpec, Mac, Proto, Tag, Templates};
    use super::*;

    fn templates() -> Templates {
        Templates::build(&FrameSpec {
            src_mac: Mac([2, 0, 0, 0, 0, 1]),
            dst_mac: Mac([2, 0, 0, 0, 0, 2]),
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            proto: Proto::Udp,
            sport: 1024,
            dport: 9,
            flows: 4,
            size: 100,
            vxlan: None,
        })
        .unwrap()
    }

    fn feed(stats: &mut SinkStats, t: &Templates, seqs: &[u64], tx_ns: u64, now_ns: u64) {
        let mut buf = vec![0u8; t.frame_len()];
        for (i, &seq) in seqs.iter().enumerate() {
            t.write(i % t.flows(), Tag { seq, tx_ns }, &mut buf);
            assert!(stats.record_frame(&buf, now_ns));
        }
    }

    #[test]
    fn in_order_stream_has_no_loss() {
        let t = templates();
        let mut s = SinkStats::default();
        let seqs: Vec<u64> = (0..1000).collect();
        feed(&mut s, &t, &seqs, 1_000, 3_000);
        assert_eq!(s.received, 1000);
        assert_eq!(s.bytes, 1000 * 100, "frame length + FCS = --size");
        assert_eq!(s.seqs.unique(), 1000);
        assert_eq!(s.seqs.lost(None), 0);
        assert_eq!(s.seqs.lost(Some(1000)), 0);
        assert_eq!(s.seqs.lost(Some(1010)), 10, "tail loss needs --expect");
        assert_eq!(s.seqs.duplicates(), 0);
        assert_eq!(s.seqs.reordered(), 0);
    }

    #[test]
    fn gaps_duplicates_and_reordering_are_counted_exactly() {
        let t = templates();
        let mut s = SinkStats::default();
        // 0..10 with 3 and 7 missing, 5 twice, 2 after 9 (reordered), 9 again (duplicate).
        feed(&mut s, &t, &[0, 1, 4, 5, 5, 6, 8, 9, 2, 9], 0, 10);
        assert_eq!(s.received, 10);
        assert_eq!(s.seqs.unique(), 8);
        assert_eq!(s.seqs.duplicates(), 2);
        assert_eq!(s.seqs.reordered(), 1);
        assert_eq!(s.seqs.lost(None), 2, "3 and 7");
        assert_eq!(s.seqs.lost(Some(12)), 4);
        assert_eq!(s.seqs.highest(), Some(9));
    }

    #[test]
    fn seqs_beyond_the_bitmap_are_counted_not_checked() {
        let mut tr = SeqTracker::default();
        assert_eq!(tr.record(MAX_TRACKED_SEQ - 1), SeqKind::InOrder);
        assert_eq!(tr.record(MAX_TRACKED_SEQ - 1), SeqKind::Duplicate);
        assert_eq!(tr.record(MAX_TRACKED_SEQ), SeqKind::Untracked);
        assert_eq!(tr.record(MAX_TRACKED_SEQ), SeqKind::Untracked);
        assert_eq!(tr.untracked(), 2);
        assert_eq!(tr.unique(), 3);
        assert_eq!(tr.record(5), SeqKind::Reordered);
    }

    #[test]
    fn untagged_frames_are_other() {
        let mut s = SinkStats::default();
        assert!(!s.record_frame(&[0u8; 60], 5));
        assert!(!s.record_frame(&[], 5));
        assert_eq!((s.received, s.other), (0, 2));
        assert_eq!(s.latency.summary(), LatencySummary::default());
        assert_eq!(s.first_rx_ns, None);
    }

    #[test]
    fn latency_percentiles() {
        let t = templates();
        let mut s = SinkStats::default();
        let mut buf = vec![0u8; t.frame_len()];
        // Latencies 1 µs .. 1000 µs, one each.
        for i in 1..=1000u64 {
            t.write(
                0,
                Tag {
                    seq: i - 1,
                    tx_ns: 1_000_000_000,
                },
                &mut buf,
            );
            s.record_frame(&buf, 1_000_000_000 + i * 1000);
        }
        let l = s.latency.summary();
        assert_eq!(l.min, 1_000);
        assert_eq!(l.max, 1_000_000);
        let near = |got: u64, want: u64| got.abs_diff(want) * 1000 <= want;
        assert!(near(l.p50, 500_000), "p50 {}", l.p50);
        assert!(near(l.p90, 900_000), "p90 {}", l.p90);
        assert!(near(l.p99, 990_000), "p99 {}", l.p99);
        assert!(near(l.p999, 999_000), "p999 {}", l.p999);
        assert!((l.mean - 500_500.0).abs() < 1_000.0, "mean {}", l.mean);
        assert_eq!(s.first_rx_ns, Some(1_000_001_000));
        assert!((s.active_seconds() - 0.000999).abs() < 1e-9);
        // A tx time in the future is recorded as 0, not as a huge number.
        t.write(
            0,
            Tag {
                seq: 5000,
                tx_ns: u64::MAX,
            },
            &mut buf,
        );
        s.record_frame(&buf, 1);
        assert_eq!(s.latency.summary().min, 0);
        assert_eq!(s.latency.summary().max, 1_000_000);
    }
}
