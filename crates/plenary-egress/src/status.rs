//! The status lines a person at the terminal reads: one for the WHEP source (its state,
//! the node it pulls from, the layout, re-pulls), one per output (state, bitrate, frame
//! rate, dropped buffers and reconnects). Sans-IO: counters and times are passed in.

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

/// Where the WHEP source stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceState {
    /// A WHEP POST to the node is under way.
    Pulling,
    /// The node answered; ICE and DTLS are being set up.
    Answered,
    Connected,
    /// Lost for this reason; the next attempt is at this time.
    Lost {
        reason: String,
        retry_at: Instant,
    },
}

/// What the source line shows.
#[derive(Clone, Debug)]
pub struct Source {
    /// The WHEP endpoint of the current or last session (a URL token masked).
    pub node: String,
    pub state: SourceState,
    /// Sessions lost and pulled again.
    pub repulls: u64,
}

pub fn source_line(s: &Source, layout: &str, now: Instant) -> String {
    let state = match &s.state {
        SourceState::Pulling => "pulling".to_owned(),
        SourceState::Answered => "connecting".to_owned(),
        SourceState::Connected => "connected".to_owned(),
        SourceState::Lost { reason, retry_at } => format!(
            "lost ({reason}), pulling again in {:.0}s",
            retry_at.saturating_duration_since(now).as_secs_f64().ceil()
        ),
    };
    format!(
        "source {}  {state}  layout {layout}  re-pulls {}",
        s.node, s.repulls
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

    #[test]
    fn the_source_line_names_the_node_and_the_state() {
        let t0 = Instant::now();
        let mut s = Source {
            node: "http://127.0.0.1:8080/whep/r?screen=1".into(),
            state: SourceState::Connected,
            repulls: 0,
        };
        assert_eq!(
            source_line(&s, "screen+speaker", t0),
            "source http://127.0.0.1:8080/whep/r?screen=1  connected  layout screen+speaker  re-pulls 0"
        );
        s.state = SourceState::Lost {
            reason: "silence".into(),
            retry_at: t0 + Duration::from_millis(400),
        };
        s.repulls = 1;
        assert_eq!(
            source_line(&s, "speaker", t0),
            "source http://127.0.0.1:8080/whep/r?screen=1  lost (silence), pulling again in 1s  layout speaker  re-pulls 1"
        );
    }
}
