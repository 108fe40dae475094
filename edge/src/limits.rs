//! Per-session request rate limiting (plain code): a token bucket, and the rule that turns
//! sustained abuse into a disconnect.

use std::time::Instant;

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    /// Requests refused since the last one allowed.
    refused_in_a_row: u32,
}

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Answer 429.
    Refuse,
    /// The client keeps going over the limit: close the connection.
    Disconnect,
}

impl TokenBucket {
    pub fn new(rate: u32, burst: u32, now: Instant) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: f64::from(rate.max(1)),
            burst,
            tokens: burst,
            last: now,
            refused_in_a_row: 0,
        }
    }

    /// Refusals in a row after which the connection is closed: five bursts' worth, at least 50.
    pub fn abuse_threshold(&self) -> u32 {
        ((self.burst * 5.0) as u32).max(50)
    }

    pub fn check(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused_in_a_row = 0;
            return Verdict::Allow;
        }
        self.refused_in_a_row += 1;
        if self.refused_in_a_row >= self.abuse_threshold() {
            Verdict::Disconnect
        } else {
            Verdict::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 5, t0);
        for _ in 0..5 {
            assert_eq!(b.check(t0), Verdict::Allow);
        }
        assert_eq!(b.check(t0), Verdict::Refuse);
        // 10/s: one more token after 100 ms.
        assert_eq!(b.check(t0 + Duration::from_millis(100)), Verdict::Allow);
        assert_eq!(b.check(t0 + Duration::from_millis(100)), Verdict::Refuse);
        // Never more than the burst saved up.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..5 {
            assert_eq!(b.check(later), Verdict::Allow);
        }
        assert_eq!(b.check(later), Verdict::Refuse);
    }

    #[test]
    fn sustained_abuse_disconnects() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1, 1, t0);
        assert_eq!(b.check(t0), Verdict::Allow);
        let n = b.abuse_threshold();
        for _ in 1..n {
            assert_eq!(b.check(t0), Verdict::Refuse);
        }
        assert_eq!(b.check(t0), Verdict::Disconnect);
    }
}
