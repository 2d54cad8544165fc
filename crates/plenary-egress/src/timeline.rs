//! Puts one incoming stream on the broadcast's clock.
//!
//! Each WHEP m-line carries RTP time from whichever publisher feeds it now. The SFU keeps
//! that time continuous across switches, but a publisher that restarts, a source that is
//! pulled again, a sender clock that drifts or a switch to a source whose media was sent at
//! another moment can still make it jump. Buffers are stamped at their RTP spacing from an
//! anchor taken at arrival. The stream is re-anchored at arrival, and the buffer marked as a
//! discontinuity, when a stamp would go backwards, lands more than `max_early` ahead of its
//! arrival, or has stayed more than `max_late` behind it for `LATE_FOR` (the live mixers
//! drop late buffers, so `max_late` must stay below their latency). A single late buffer,
//! say after a CPU spike, keeps its stamp: re-anchoring on it would shift that stream, and
//! lip sync with it, for good. The output timeline, made by the live mixers, never
//! jumps. Sans-IO: times are passed in.

use std::time::Duration;

/// How long stamps must stay late before the stream is re-anchored.
const LATE_FOR: Duration = Duration::from_millis(300);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Presentation time on the pipeline's running-time clock.
    pub pts: Duration,
    /// The stream was (re-)anchored here: downstream should not expect continuity.
    pub discont: bool,
}

#[derive(Clone, Debug)]
pub struct Timeline {
    max_late: Duration,
    max_early: Duration,
    /// (media time in µs, running time) of the anchor.
    anchor: Option<(u64, Duration)>,
    last: Option<Duration>,
    /// Arrival of the first of the current run of late stamps.
    late_since: Option<Duration>,
    reanchors: u64,
}

impl Timeline {
    pub fn new(max_late: Duration, max_early: Duration) -> Timeline {
        Timeline {
            max_late,
            max_early,
            anchor: None,
            last: None,
            late_since: None,
            reanchors: 0,
        }
    }

    /// Stamps a buffer whose media time is `media_us` (RTP time in µs, extended) and which
    /// arrived at running time `arrival`.
    pub fn stamp(&mut self, media_us: u64, arrival: Duration) -> Stamp {
        let projected = self.anchor.and_then(|(m0, r0)| {
            let delta = media_us.checked_sub(m0)?;
            r0.checked_add(Duration::from_micros(delta))
        });
        let late = projected.is_some_and(|p| p < arrival && arrival - p > self.max_late);
        if !late {
            self.late_since = None;
        } else if self.late_since.is_none() {
            self.late_since = Some(arrival);
        }
        let late_too_long = self
            .late_since
            .is_some_and(|since| arrival.saturating_sub(since) >= LATE_FOR);
        let fits = |p: Duration| {
            let early_ok = p <= arrival || p - arrival <= self.max_early;
            early_ok && !late_too_long && self.last.is_none_or(|l| p > l)
        };
        match projected.filter(|p| fits(*p)) {
            Some(pts) => {
                self.last = Some(pts);
                Stamp {
                    pts,
                    discont: false,
                }
            }
            None => {
                // Never behind what was already handed downstream.
                let pts = match self.last {
                    Some(l) if l >= arrival => l + Duration::from_millis(1),
                    _ => arrival,
                };
                if self.anchor.is_some() {
                    self.reanchors += 1;
                }
                self.late_since = None;
                self.anchor = Some((media_us, pts));
                self.last = Some(pts);
                Stamp { pts, discont: true }
            }
        }
    }

    /// How often the stream jumped and was re-anchored (not counting the first buffer).
    pub fn reanchors(&self) -> u64 {
        self.reanchors
    }
}

/// Lip sync across streams from the sender's clock.
///
/// Once the SFU's RTCP sender reports map a stream's RTP time to wallclock, every buffer has
/// a sender time on one clock shared by audio and video. Each stream's delay (arrival minus
/// sender time) is tracked as its minimum over 2 s windows, and all streams are stamped at
/// sender time plus the largest of those delays, so the slowest stream arrives in time and
/// the others wait for it: audio and video leave the mixers as they were captured. Sans-IO.
#[derive(Clone, Debug, Default)]
pub struct SenderClock {
    /// Per stream: (window start, minimum in this window, minimum in the previous one),
    /// delays in µs (signed: clocks of two machines need not agree).
    streams: Vec<Option<(Duration, i64, Option<i64>)>>,
}

/// The window over which a stream's smallest delay is kept.
const DELAY_WINDOW: Duration = Duration::from_secs(2);

impl SenderClock {
    /// Stamps a buffer of stream `stream` sent at `sender_us` (µs on the sender's clock) that
    /// arrived at running time `arrival`.
    pub fn stamp(&mut self, stream: usize, sender_us: u64, arrival: Duration) -> Duration {
        if self.streams.len() <= stream {
            self.streams.resize(stream + 1, None);
        }
        let delay = arrival.as_micros() as i64 - sender_us as i64;
        let slot = &mut self.streams[stream];
        *slot = Some(match *slot {
            None => (arrival, delay, None),
            Some((start, min, _)) if arrival.saturating_sub(start) >= DELAY_WINDOW => {
                (arrival, delay, Some(min))
            }
            Some((start, min, prev)) => (start, min.min(delay), prev),
        });
        let offset = self
            .streams
            .iter()
            .flatten()
            .map(|(_, min, prev)| prev.map_or(*min, |p| p.min(*min)))
            .max()
            .unwrap_or(delay);
        Duration::from_micros((sender_us as i64 + offset).max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn follows_rtp_spacing_despite_arrival_jitter() {
        let mut t = Timeline::new(ms(100), ms(500));
        assert_eq!(
            t.stamp(1_000_000, ms(100)),
            Stamp {
                pts: ms(100),
                discont: true
            }
        );
        // 20 ms of media arriving 35 ms later (jitter): stamped at 20 ms spacing.
        assert_eq!(
            t.stamp(1_020_000, ms(135)),
            Stamp {
                pts: ms(120),
                discont: false
            }
        );
        assert_eq!(t.stamp(1_040_000, ms(141)).pts, ms(140));
        assert_eq!(t.reanchors(), 0);
    }

    #[test]
    fn a_jump_reanchors_at_arrival_and_never_goes_back() {
        let mut t = Timeline::new(ms(100), ms(500));
        t.stamp(0, ms(1000));
        // The source restarts: its RTP time goes back to a small value.
        let s = t.stamp(0, ms(1020));
        assert!(s.discont);
        assert!(s.pts > ms(1000));
        // A forward jump of an hour.
        let s = t.stamp(3_600_000_000, ms(1040));
        assert_eq!(
            s,
            Stamp {
                pts: ms(1040),
                discont: true
            }
        );
        assert_eq!(t.reanchors(), 2);
        // Then continuity again from the new anchor.
        assert_eq!(t.stamp(3_600_020_000, ms(1070)).pts, ms(1060));
    }

    #[test]
    fn a_stream_staying_behind_is_brought_back_to_arrival() {
        let mut t = Timeline::new(ms(100), ms(500));
        t.stamp(0, ms(1000));
        // 20 ms of media arriving 320 ms later. One late buffer keeps its stamp: a CPU
        // spike must not shift the stream, and lip sync with it, for good.
        let s = t.stamp(20_000, ms(1320));
        assert_eq!((s.pts, s.discont), (ms(1020), false));
        assert!(!t.stamp(40_000, ms(1340)).discont);
        // Still late 300 ms on (a switch to a source whose media runs behind): the mixers
        // would drop all of it, so the stream is re-anchored at arrival.
        let s = t.stamp(320_000, ms(1620));
        assert_eq!((s.pts, s.discont), (ms(1620), true));
        // Back on time: stamps follow the new anchor.
        assert_eq!(t.stamp(340_000, ms(1645)).pts, ms(1640));
        // 400 ms early is kept (the buffer just waits), over 1 s is not.
        assert!(!t.stamp(340_000 + 420_000, ms(1650)).discont);
        assert!(t.stamp(340_000 + 1_100_000, ms(1660)).discont);
    }

    #[test]
    fn streams_wait_for_the_slowest_one() {
        let mut c = SenderClock::default();
        // Audio (stream 0) arrives 20 ms after it was sent, video (1) 120 ms after.
        assert_eq!(c.stamp(0, 1_000_000, ms(20)), ms(20));
        assert_eq!(c.stamp(1, 1_000_000, ms(120)), ms(120));
        // From now on both are stamped at sender time + 120 ms: captured together, together.
        assert_eq!(c.stamp(0, 1_100_000, ms(125)), ms(220));
        assert_eq!(c.stamp(1, 1_100_000, ms(230)), ms(220));
        // A late audio packet does not raise the delay; its window minimum stays.
        assert_eq!(c.stamp(0, 1_200_000, ms(400)), ms(320));
    }

    #[test]
    fn a_delay_that_grows_for_good_is_followed_after_a_window() {
        let mut c = SenderClock::default();
        c.stamp(0, 0, ms(50));
        // The path gets 100 ms slower: stamps follow once the old window has passed.
        for t in (100..=4_100).step_by(100) {
            c.stamp(0, t * 1000, ms(t + 150));
        }
        assert_eq!(c.stamp(0, 4_200_000, ms(4_350)), ms(4_350));
    }

    #[test]
    fn stamps_are_strictly_increasing() {
        let mut t = Timeline::new(ms(100), ms(500));
        let mut last = None;
        // Same media time twice, then arrival earlier than the last stamp.
        for (m, a) in [(0, 500), (0, 500), (10_000, 400), (2_000_000, 450)] {
            let s = t.stamp(m, ms(a));
            assert!(last.is_none_or(|l| s.pts > l), "{s:?} after {last:?}");
            last = Some(s.pts);
        }
    }
}
