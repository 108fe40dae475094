//! Per-session request rate limiting (plain code): a token bucket, and the rule that turns
//! sustained abuse into a disconnect.
//!
//! The abuse rule is a second, leaky counter of refusals: each refused request adds one, and the
//! count drains at the allowed rate (`rate` per second). A client whose refusals outpace the rate
//! until the count reaches [`TokenBucket::abuse_threshold`] (five bursts' worth, at least 50) is
//! disconnected. Unlike "refusals in a row", this is not reset by the one request a flood gets
//! through whenever the bucket refills, so a sustained flood trips it (4,000 requests/s against
//! 100/s trips in about a quarter of a second), while a client that overshoots once — even by
//! several bursts — or sends a little over the rate for a while recovers on its own.

use std::time::Instant;

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    /// Leaky count of recent refusals (drains at `rate` per second).
    refusals: f64,
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
            refusals: 0.0,
        }
    }

    /// Refusals (net of the drain) after which the connection is closed: five bursts' worth, at
    /// least 50.
    pub fn abuse_threshold(&self) -> u32 {
        ((self.burst * 5.0) as u32).max(50)
    }

    pub fn check(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.refusals = (self.refusals - elapsed * self.rate).max(0.0);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allow;
        }
        self.refusals += 1.0;
        if self.refusals >= f64::from(self.abuse_threshold()) {
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

    /// Simulates `per_sec` requests per second, evenly spaced, for `secs`; returns (allowed,
    /// refused) and when the disconnect came, if it did.
    fn flood(
        b: &mut TokenBucket,
        t0: Instant,
        per_sec: u32,
        secs: u32,
    ) -> (u32, u32, Option<Duration>) {
        let step = Duration::from_secs(1) / per_sec;
        let (mut allowed, mut refused) = (0, 0);
        for i in 0..per_sec * secs {
            let at = step * i;
            match b.check(t0 + at) {
                Verdict::Allow => allowed += 1,
                Verdict::Refuse => refused += 1,
                Verdict::Disconnect => return (allowed, refused, Some(at)),
            }
        }
        (allowed, refused, None)
    }

    #[test]
    fn a_sustained_flood_is_cut_off_although_refills_let_requests_through() {
        // The outside testers' flood: ~4,000 requests/s against 100/s, bursts of 200. The old
        // "refusals in a row" rule never tripped (a refill every 10 ms reset the run).
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, 200, t0);
        let (allowed, refused, cut) = flood(&mut b, t0, 4_000, 8);
        let cut = cut.expect("a sustained flood must be disconnected");
        assert!(cut < Duration::from_secs(1), "cut off after {cut:?}");
        assert!(allowed > 200, "refills did let requests through: {allowed}");
        // Refusals drain at the rate, so a little more than the threshold were answered 429.
        assert!(refused + 1 >= b.abuse_threshold() && refused < 2 * b.abuse_threshold());
    }

    #[test]
    fn legitimate_bursts_and_mild_overshoot_stay_connected() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, 200, t0);
        // One burst of three bursts' worth at once: 200 allowed, 400 refused, no disconnect.
        let verdicts: Vec<Verdict> = (0..600).map(|_| b.check(t0)).collect();
        assert!(!verdicts.contains(&Verdict::Disconnect));
        // It happens again every 10 s, with the rate respected in between: still fine.
        for round in 1..=5 {
            let at = t0 + Duration::from_secs(10 * round);
            assert!(
                (0..600).all(|_| b.check(at) != Verdict::Disconnect),
                "round {round}"
            );
        }
        // 50% over the rate for a minute: refused, never disconnected.
        let t1 = t0 + Duration::from_secs(100);
        let mut b = TokenBucket::new(100, 200, t1);
        let (allowed, refused, cut) = flood(&mut b, t1, 150, 60);
        assert_eq!(cut, None);
        assert!(
            refused > 0 && allowed > 6_000,
            "{allowed} allowed, {refused} refused"
        );
    }
}
