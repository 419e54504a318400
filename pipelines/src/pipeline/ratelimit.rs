//! Token bucket for ICMP errors (the kernel's `icmp_msgs_per_sec` / `icmp_msgs_burst`).

/// A token bucket refilled from the batch clock.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate_per_sec: u32,
    burst: u32,
    tokens_milli: u64,
    last_ns: u64,
}

impl TokenBucket {
    /// `rate_per_sec` tokens per second, at most `burst` saved up. A rate of 0 disables the
    /// limit (every `take` succeeds).
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        TokenBucket {
            rate_per_sec,
            burst: burst.max(1),
            tokens_milli: burst.max(1) as u64 * 1000,
            last_ns: 0,
        }
    }

    /// Takes one token at time `now_ns`; false if none is left.
    pub fn take(&mut self, now_ns: u64) -> bool {
        if self.rate_per_sec == 0 {
            return true;
        }
        let elapsed = now_ns.saturating_sub(self.last_ns);
        self.last_ns = now_ns.max(self.last_ns);
        // tokens (in thousandths) gained: elapsed_ns * rate / 1e6
        let gained = (elapsed as u128 * self.rate_per_sec as u128 / 1_000_000) as u64;
        self.tokens_milli = (self.tokens_milli + gained).min(self.burst as u64 * 1000);
        if self.tokens_milli >= 1000 {
            self.tokens_milli -= 1000;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let mut bucket = TokenBucket::new(10, 3);
        let t0 = 1_000_000_000;
        assert!(bucket.take(t0));
        assert!(bucket.take(t0));
        assert!(bucket.take(t0));
        assert!(!bucket.take(t0));
        // 100 ms later one token (10/s) is back.
        assert!(bucket.take(t0 + 100_000_000));
        assert!(!bucket.take(t0 + 100_000_000));
        let mut unlimited = TokenBucket::new(0, 1);
        assert!((0..100).all(|_| unlimited.take(0)));
    }
}
