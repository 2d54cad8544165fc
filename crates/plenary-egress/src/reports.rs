//! Keeps late RTCP sender reports from moving a stream's sender time.
//!
//! The SFU writes its sender reports from the arrival time of the stream's latest packet
//! (str0m extrapolates RTP time from it). A packet that reached the SFU late, because its
//! CPU was busy or the packet waited in a queue, gives a report that maps the stream's RTP
//! time to a later wallclock, and every frame until the next report (1 s for video, 5 s
//! for audio) is stamped that much later. Measured with another build sharing the CPU:
//! reports move by ±20 ms from one to the next, and single ones came 235 ms (video), 64 ms
//! and 400 ms (audio) late, which put the beep and the flash up to 254 ms apart for one to
//! five seconds (docs/decisions/0005-egress.md).
//!
//! A report can only be late, never early. So a stream's mapping (sender time minus media
//! time) is the earliest its reports gave over the last `WINDOW` of media time, at least
//! two reports (the audio's come every 5 s): one late report is never used, and the jitter
//! goes. A stream stays on its arrival stamps (`timeline::Timeline`) until its second
//! report, since the first one has nothing to be checked against. A step of more than
//! `MAX_STEP_US` either way is the RTP time jumping (a new source): the window starts
//! again. The price: a real step later (a publisher's path that got slower) is followed
//! only after `WINDOW`; the sender clock's delay tracking keeps its frames in time for the
//! mixers meanwhile. Sans-IO.

use std::collections::VecDeque;

/// How long (media time) a report's mapping is kept as a candidate.
const WINDOW_US: u64 = 10_000_000;
/// A step larger than this is a jump of the RTP time, not a late report (µs).
const MAX_STEP_US: i64 = 1_000_000;
/// A report later than the earliest by more than this is logged (µs).
const LOG_LATE_US: i64 = 40_000;
/// Mappings closer than this come from the same report (rounding of the µs arithmetic).
const SAME_REPORT_US: i64 = 1_000;

/// Per stream: the reports' mappings (media time of the first frame on each, sender time
/// minus media time), oldest first, and how many reports the stream has had.
#[derive(Clone, Debug, Default)]
struct Stream {
    reports: VecDeque<(u64, i64)>,
    seen: u32,
}

#[derive(Clone, Debug, Default)]
pub struct ReportFilter {
    streams: Vec<Stream>,
}

impl ReportFilter {
    /// The frame's sender time (µs), given its media time and the sender time its
    /// stream's latest report gives it; `None` until the stream's second report.
    pub fn sender_us(&mut self, stream: usize, media_us: u64, sender_us: u64) -> Option<u64> {
        if self.streams.len() <= stream {
            self.streams.resize(stream + 1, Stream::default());
        }
        let s = &mut self.streams[stream];
        let map = sender_us as i64 - media_us as i64;
        let latest = s.reports.back().map(|r| r.1);
        if latest.is_none_or(|l| (map - l).abs() > SAME_REPORT_US) {
            if latest.is_some_and(|l| (map - l).abs() > MAX_STEP_US) {
                s.reports.clear();
                s.seen = 0;
            }
            s.reports.push_back((media_us, map));
            s.seen = s.seen.saturating_add(1);
            while s.reports.len() > 2
                && s.reports
                    .front()
                    .is_some_and(|r| media_us.saturating_sub(r.0) > WINDOW_US)
            {
                s.reports.pop_front();
            }
            let earliest = s.reports.iter().map(|r| r.1).min().unwrap_or(map);
            if map - earliest > LOG_LATE_US {
                tracing::debug!(
                    stream,
                    late_ms = (map - earliest) / 1000,
                    "a late sender report is set aside"
                );
            }
        }
        if s.seen < 2 {
            return None;
        }
        let used = s.reports.iter().map(|r| r.1).min()?;
        Some((media_us as i64 + used).max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 1_800_000_000_000_000;

    #[test]
    fn late_reports_are_set_aside() {
        let mut f = ReportFilter::default();
        // The first report waits for the second, for all its frames.
        assert_eq!(f.sender_us(0, 0, BASE + 10_000), None);
        assert_eq!(f.sender_us(0, 20_000, BASE + 30_000), None);
        // The earliest mapping of the two is taken.
        assert_eq!(
            f.sender_us(0, 1_000_000, BASE + 1_000_000),
            Some(BASE + 1_000_000)
        );
        assert_eq!(
            f.sender_us(0, 2_000_000, BASE + 2_015_000),
            Some(BASE + 2_000_000)
        );
        // A report 235 ms late changes nothing, for every frame until the next.
        assert_eq!(
            f.sender_us(0, 4_000_000, BASE + 4_235_000),
            Some(BASE + 4_000_000)
        );
        assert_eq!(
            f.sender_us(0, 4_033_000, BASE + 4_268_000),
            Some(BASE + 4_033_000)
        );
        // An earlier one is taken at once.
        assert_eq!(
            f.sender_us(0, 5_000_000, BASE + 4_995_000),
            Some(BASE + 4_995_000)
        );
    }

    #[test]
    fn a_late_first_report_is_never_taken() {
        let mut f = ReportFilter::default();
        assert_eq!(f.sender_us(1, 0, BASE + 400_000), None);
        assert_eq!(
            f.sender_us(1, 5_000_000, BASE + 5_000_000),
            Some(BASE + 5_000_000)
        );
    }

    #[test]
    fn a_later_mapping_is_followed_after_the_window() {
        let mut f = ReportFilter::default();
        f.sender_us(1, 0, BASE);
        f.sender_us(1, 5_000_000, BASE + 5_000_000);
        assert_eq!(
            f.sender_us(1, 10_000_000, BASE + 10_100_000),
            Some(BASE + 10_000_000)
        );
        assert_eq!(
            f.sender_us(1, 15_000_000, BASE + 15_100_000),
            Some(BASE + 15_000_000)
        );
        // The reports of 0 s and 5 s are more than 10 s old.
        assert_eq!(
            f.sender_us(1, 20_000_000, BASE + 20_110_000),
            Some(BASE + 20_100_000)
        );
    }

    #[test]
    fn a_jump_starts_again() {
        let mut f = ReportFilter::default();
        f.sender_us(0, 0, BASE);
        f.sender_us(0, 1_000_000, BASE + 1_000_000);
        assert_eq!(f.sender_us(0, 2_000_000, BASE + 7_000_000), None);
        assert_eq!(
            f.sender_us(0, 3_000_000, BASE + 8_010_000),
            Some(BASE + 8_000_000)
        );
        // Streams are apart.
        assert_eq!(f.sender_us(2, 0, BASE + 300_000), None);
    }
}
