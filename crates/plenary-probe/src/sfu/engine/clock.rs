//! The one clock senders and receivers share: microseconds since the probe started. One
//! process, one `Instant` epoch, so a stamp's send time and a packet's arrival compare
//! exactly (no NTP, no clock skew).

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            epoch: Instant::now(),
        }
    }

    pub fn us(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_micros() as u64
    }

    pub fn now_us(&self) -> u64 {
        self.us(Instant::now())
    }

    pub fn instant(&self, us: u64) -> Instant {
        self.epoch + Duration::from_micros(us)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
