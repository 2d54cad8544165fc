//! The status line a person at the terminal reads, one per output: state, bitrate, frame
//! rate, dropped buffers and reconnects. Sans-IO: counters and times are passed in.

use std::time::{Duration, Instant};

/// Cumulative counters of one output at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub bytes: u64,
    pub video_frames: u64,
    pub dropped: u64,
}

/// Rates between two readings of an output's counters.
#[derive(Clone, Debug)]
pub struct Meter {
    last: Totals,
    at: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rates {
    pub kbps: f64,
    pub fps: f64,
    /// Whether anything reached the receiver since the last reading.
    pub flowing: bool,
}

impl Meter {
    pub fn new(now: Instant) -> Meter {
        Meter {
            last: Totals::default(),
            at: now,
        }
    }

    pub fn read(&mut self, now: Instant, totals: Totals) -> Rates {
        let secs = now
            .saturating_duration_since(self.at)
            .as_secs_f64()
            .max(1e-3);
        let bytes = totals.bytes.saturating_sub(self.last.bytes);
        let frames = totals.video_frames.saturating_sub(self.last.video_frames);
        self.last = totals;
        self.at = now;
        Rates {
            kbps: bytes as f64 * 8.0 / 1000.0 / secs,
            fps: frames as f64 / secs,
            flowing: bytes > 0,
        }
    }
}

/// Where an output stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    Up,
    /// Started, nothing has reached the receiver yet.
    Starting,
    /// Failed; the next attempt is in this long.
    Retrying(Duration),
}

pub fn line(name: &str, state: &State, rates: &Rates, dropped: u64, reconnects: u64) -> String {
    let state = match state {
        State::Up => "up".to_owned(),
        State::Starting => "starting".to_owned(),
        State::Retrying(d) => format!("retry in {:.0}s", d.as_secs_f64().ceil()),
    };
    format!(
        "{name}  {state}  {:.0} kbit/s  {:.1} fps  dropped {dropped}  reconnects {reconnects}",
        rates.kbps, rates.fps
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_over_the_interval() {
        let t0 = Instant::now();
        let mut m = Meter::new(t0);
        let r = m.read(
            t0 + Duration::from_secs(2),
            Totals {
                bytes: 500_000,
                video_frames: 60,
                dropped: 0,
            },
        );
        assert_eq!((r.kbps, r.fps, r.flowing), (2000.0, 30.0, true));
        let r = m.read(
            t0 + Duration::from_secs(4),
            Totals {
                bytes: 500_000,
                video_frames: 60,
                dropped: 3,
            },
        );
        assert!(!r.flowing);
        let text = line(
            "srt://h:1",
            &State::Retrying(Duration::from_millis(3500)),
            &r,
            3,
            2,
        );
        assert_eq!(
            text,
            "srt://h:1  retry in 4s  0 kbit/s  0.0 fps  dropped 3  reconnects 2"
        );
    }
}
