//! RFC 3550 §6.4.1 interarrival jitter: J += (|D| - J) / 16, where D is the change in
//! transit time between two packets in arrival order. Send and arrival times come from the
//! same clock here (the probe stamps and receives in one process), so transit is exact up
//! to a constant that cancels out.

#[derive(Clone, Copy, Debug, Default)]
pub struct Jitter {
    last_transit: Option<i64>,
    /// Current estimate, µs.
    j: f64,
    /// Sum and count of the estimate after each update, for a window mean.
    sum: f64,
    updates: u64,
}

impl Jitter {
    /// Feeds one packet: its send timestamp and arrival time, µs on the same clock.
    pub fn update(&mut self, sent_us: u64, arrived_us: u64) {
        let transit = arrived_us as i64 - sent_us as i64;
        if let Some(last) = self.last_transit {
            let d = (transit - last).unsigned_abs() as f64;
            self.j += (d - self.j) / 16.0;
            self.sum += self.j;
            self.updates += 1;
        }
        self.last_transit = Some(transit);
    }

    /// The current estimate, µs (what an RTCP receiver report would carry).
    pub fn current_us(&self) -> f64 {
        self.j
    }

    /// The estimate averaged over the window, µs: steadier than the last value, which
    /// depends on the final few packets only.
    pub fn mean_us(&self) -> Option<f64> {
        (self.updates > 0).then(|| self.sum / self.updates as f64)
    }

    /// Starts a new window but keeps the estimate and the last transit time, so the first
    /// packets of the window are judged against their predecessors.
    pub fn reset_window(&mut self) {
        self.sum = 0.0;
        self.updates = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_transit_has_no_jitter() {
        let mut j = Jitter::default();
        for i in 0..100 {
            j.update(i * 20_000, i * 20_000 + 5_000);
        }
        assert_eq!(j.current_us(), 0.0);
        assert_eq!(j.mean_us(), Some(0.0));
    }

    #[test]
    fn follows_the_rfc_recurrence() {
        let mut j = Jitter::default();
        j.update(0, 1_000); // transit 1000, no estimate yet
        assert_eq!(j.mean_us(), None);
        j.update(20_000, 21_800); // transit 1800, D = 800
        assert_eq!(j.current_us(), 50.0);
        j.update(40_000, 41_000); // transit 1000, D = 800
        assert_eq!(j.current_us(), 50.0 + (800.0 - 50.0) / 16.0);
    }

    #[test]
    fn converges_to_the_mean_deviation() {
        // Transit alternates 0 and 2 ms: |D| is always 2000 µs, so J tends to 2000.
        let mut j = Jitter::default();
        for i in 0..1000u64 {
            j.update(i * 20_000, i * 20_000 + (i % 2) * 2_000);
        }
        assert!((j.current_us() - 2000.0).abs() < 1.0);
    }

    #[test]
    fn window_reset_keeps_the_estimate() {
        let mut j = Jitter::default();
        j.update(0, 0);
        j.update(20_000, 21_600);
        let before = j.current_us();
        j.reset_window();
        assert_eq!(j.mean_us(), None);
        j.update(40_000, 41_600);
        assert_eq!(j.mean_us(), Some(before * 15.0 / 16.0));
    }
}
