//! Reconnect delays for one output or the WHEP source: doubling from `min` to `max`, back to
//! `min` once a connection has stayed up for `stable`. Sans-IO: the caller passes `now`.

use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    stable: Duration,
    failures: u32,
    up_since: Option<Instant>,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration, stable: Duration) -> Backoff {
        Backoff {
            min,
            max,
            stable,
            failures: 0,
            up_since: None,
        }
    }

    /// The connection works (media flows).
    pub fn up(&mut self, now: Instant) {
        self.up_since.get_or_insert(now);
    }

    /// The connection failed at `now`: how long to wait before the next attempt.
    pub fn failed(&mut self, now: Instant) -> Duration {
        if let Some(since) = self.up_since.take() {
            if now.saturating_duration_since(since) >= self.stable {
                self.failures = 0;
            }
        }
        let delay = self
            .min
            .saturating_mul(1u32 << self.failures.min(16))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// Consecutive failures since the last stable connection.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn doubles_to_the_cap() {
        let t0 = Instant::now();
        let mut b = Backoff::new(secs(1), secs(10), secs(30));
        let delays: Vec<u64> = (0..6).map(|_| b.failed(t0).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        assert_eq!(b.failures(), 6);
    }

    #[test]
    fn a_stable_connection_resets_a_flapping_one_does_not() {
        let t0 = Instant::now();
        let mut b = Backoff::new(secs(1), secs(60), secs(30));
        b.failed(t0);
        b.failed(t0);
        b.up(t0);
        assert_eq!(b.failed(t0 + secs(5)), secs(4), "up 5 s is not stable");
        b.up(t0 + secs(10));
        assert_eq!(b.failed(t0 + secs(41)), secs(1), "up 31 s resets");
    }
}
