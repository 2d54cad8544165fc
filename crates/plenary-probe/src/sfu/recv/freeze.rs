//! Freezes by the W3C webrtc-stats rule: an interval between two rendered frames is a
//! freeze when it exceeds max(3 × avg, avg + 150 ms), avg being the mean of the last 30
//! intervals. A freeze still open when a window closes counts up to that moment, and only
//! the rest counts when it ends, so no time is counted twice.

const HISTORY: usize = 30;
const EXTRA_US: u64 = 150_000;

#[derive(Clone, Debug, Default)]
pub struct FreezeDetector {
    ring: [u64; HISTORY],
    n: usize,
    next: usize,
    sum: u64,
    last_us: Option<u64>,
    /// Part of the open interval already attributed to earlier windows.
    counted_open_us: u64,
    /// Freeze time and count in the current window.
    pub window_us: u64,
    pub window_count: u64,
}

impl FreezeDetector {
    /// The freeze threshold given the history, if there is any.
    pub fn threshold_us(&self) -> Option<u64> {
        (self.n > 0).then(|| {
            let avg = self.sum / self.n as u64;
            (3 * avg).max(avg + EXTRA_US)
        })
    }

    /// A frame was rendered at `t_us`; returns the freeze it ended, if any.
    pub fn on_frame(&mut self, t_us: u64) -> Option<u64> {
        let mut freeze = None;
        if let Some(last) = self.last_us {
            let interval = t_us.saturating_sub(last);
            if self.threshold_us().is_some_and(|th| interval > th) {
                self.window_us += interval.saturating_sub(self.counted_open_us);
                self.window_count += 1;
                freeze = Some(interval);
            }
            if self.n == HISTORY {
                self.sum -= self.ring[self.next];
            } else {
                self.n += 1;
            }
            self.ring[self.next] = interval;
            self.sum += interval;
            self.next = (self.next + 1) % HISTORY;
        }
        self.last_us = Some(t_us);
        self.counted_open_us = 0;
        freeze
    }

    /// Closes a window at `now_us`: returns (freeze µs, freezes) in it, counting an open
    /// freeze up to now.
    pub fn take_window(&mut self, now_us: u64) -> (u64, u64) {
        if let (Some(last), Some(th)) = (self.last_us, self.threshold_us()) {
            let open = now_us.saturating_sub(last);
            if open > th {
                self.window_us += open - self.counted_open_us.min(open);
                self.counted_open_us = open;
            }
        }
        let out = (self.window_us, self.window_count);
        self.window_us = 0;
        self.window_count = 0;
        out
    }

    /// Forgets the history (a pause the server announced is not a freeze).
    pub fn reset(&mut self) {
        let window = (self.window_us, self.window_count);
        *self = FreezeDetector::default();
        (self.window_us, self.window_count) = window;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steady(d: &mut FreezeDetector, from: u64, frames: u64, step: u64) -> u64 {
        let mut t = from;
        for _ in 0..frames {
            assert_eq!(d.on_frame(t), None);
            t += step;
        }
        t - step
    }

    #[test]
    fn threshold_is_the_w3c_rule() {
        let mut d = FreezeDetector::default();
        let t = steady(&mut d, 0, 31, 33_333);
        // avg 33 ms: max(100 ms, 183 ms) = 183 ms.
        assert_eq!(d.threshold_us(), Some(33_333 + 150_000));
        assert_eq!(
            d.on_frame(t + 183_333),
            None,
            "at the threshold is not a freeze"
        );
        let mut d = FreezeDetector::default();
        let t = steady(&mut d, 0, 31, 33_333);
        assert_eq!(d.on_frame(t + 183_334), Some(183_334));
        // At 5 fps (200 ms), 3 × avg wins: 600 ms.
        let mut d = FreezeDetector::default();
        steady(&mut d, 0, 31, 200_000);
        assert_eq!(d.threshold_us(), Some(600_000));
    }

    #[test]
    fn average_is_over_the_last_30_intervals() {
        let mut d = FreezeDetector::default();
        let t = steady(&mut d, 0, 40, 100_000);
        let t = steady(&mut d, t + 20_000, 31, 20_000);
        assert_eq!(d.threshold_us(), Some(170_000));
        assert!(d.on_frame(t + 170_001).is_some());
    }

    #[test]
    fn window_accounting_splits_an_open_freeze() {
        let mut d = FreezeDetector::default();
        let t = steady(&mut d, 0, 31, 33_333); // t = 1 s
                                               // Frozen from t; window closes 500 ms later, freeze ends 900 ms after t.
        assert_eq!(d.take_window(t + 500_000), (500_000, 0));
        assert_eq!(d.on_frame(t + 900_000), Some(900_000));
        assert_eq!(d.take_window(t + 1_000_000), (400_000, 1));
        // No frames and no freeze: nothing.
        assert_eq!(FreezeDetector::default().take_window(5_000_000), (0, 0));
    }

    #[test]
    fn reset_forgets_history_but_keeps_the_window() {
        let mut d = FreezeDetector::default();
        let t = steady(&mut d, 0, 31, 33_333);
        d.on_frame(t + 400_000);
        d.reset();
        assert_eq!(d.threshold_us(), None);
        assert_eq!(d.on_frame(t + 5_000_000), None);
        assert_eq!(d.take_window(t + 5_000_000).1, 1);
    }
}
