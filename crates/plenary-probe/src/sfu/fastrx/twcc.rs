//! Which transport-wide sequence numbers arrived and when, until a feedback report has
//! told the sender. Fixed memory: a ring indexed by the unwrapped sequence number.

use super::feedback::{TwccReport, TwccWriter};

/// Sequence numbers remembered; older unreported ones are dropped (a stalled reporter).
/// 2048 is 3 s of a 620 packets/s assembly listener, 30 report intervals.
const CAPACITY: usize = 2048;
/// Arrival times are kept in TWCC's own 250 µs ticks: reports floor to them anyway, and a
/// slot fits in 8 bytes, so a window of packets shares few cache lines.
const TICK_US: u64 = 250;

/// The transport-wide sequence numbers received and not yet reported.
pub struct TwccRegister {
    /// (low 32 bits of the unwrapped sequence number, arrival in 250 µs ticks) per slot
    /// `seq % CAPACITY`.
    slots: Vec<(u32, u32)>,
    highest: Option<u64>,
    /// First sequence number the next report starts at.
    report_from: u64,
    reports: u8,
    writer: TwccWriter,
    /// Arrived after their report went out (too late to tell the sender).
    pub late: u64,
}

impl Default for TwccRegister {
    fn default() -> Self {
        TwccRegister {
            slots: vec![(u32::MAX, 0); CAPACITY],
            highest: None,
            report_from: 0,
            reports: 0,
            writer: TwccWriter::default(),
            late: 0,
        }
    }
}

/// `seq` unwrapped to the 64-bit value nearest `highest` (RFC 3550 A.1 style).
pub fn extend_seq(highest: Option<u64>, seq: u16) -> u64 {
    let Some(h) = highest else {
        return u64::from(seq);
    };
    let roc = h >> 16;
    let low = (h & 0xffff) as u16;
    let diff = seq.wrapping_sub(low) as i16;
    let candidate = (roc << 16 | u64::from(seq)) as i64;
    let v = if diff > 0 && seq < low {
        candidate + (1 << 16)
    } else if diff < 0 && seq > low {
        candidate - (1 << 16)
    } else {
        candidate
    };
    v.max(0) as u64
}

impl TwccRegister {
    /// A packet with transport-wide sequence number `seq` arrived at `arrival_us`.
    pub fn record(&mut self, seq: u16, arrival_us: u64) {
        let seq = extend_seq(self.highest, seq);
        match self.highest {
            None => self.report_from = seq,
            Some(_) if seq < self.report_from => {
                self.late += 1;
                return;
            }
            _ => {}
        }
        if self.highest.is_none_or(|h| seq > h) {
            self.highest = Some(seq);
            let window = CAPACITY as u64 - 1;
            if seq - self.report_from > window {
                self.report_from = seq - window;
            }
        }
        let slot = &mut self.slots[(seq % CAPACITY as u64) as usize];
        if slot.0 != seq as u32 {
            *slot = (seq as u32, (arrival_us / TICK_US) as u32);
        }
    }

    /// Anything received since the last report.
    pub fn has_unreported(&self) -> bool {
        self.highest.is_some_and(|h| h >= self.report_from)
    }

    /// Writes the next report into `out` (sender SSRC `sender`, media SSRC `media`) and
    /// returns its length; None when nothing is left to report. Call again while it
    /// returns Some: a report stops at `out`'s size.
    pub fn write_report(&mut self, out: &mut [u8], sender: u32, media: u32) -> Option<usize> {
        let highest = self.highest?;
        if highest < self.report_from {
            return None;
        }
        let from = self.report_from;
        let statuses = (highest - from + 1) as usize;
        let slots = &self.slots;
        let arrival = |i: usize| {
            let seq = from + i as u64;
            let (s, tick) = slots[(seq % CAPACITY as u64) as usize];
            (s == seq as u32).then_some(u64::from(tick) * TICK_US)
        };
        let r = TwccReport {
            sender,
            media,
            base_seq: from as u16,
            count: self.reports,
        };
        let (n, covered) = self.writer.write(out, r, statuses, arrival);
        if covered == 0 {
            return None;
        }
        self.reports = self.reports.wrapping_add(1);
        self.report_from = from + covered as u64;
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::rtp::rtcp::Rtcp;

    /// (16-bit sequence number, received) per status of a report, as str0m reads it.
    fn statuses(bytes: &[u8]) -> Vec<(u16, bool)> {
        let Ok(Rtcp::Twcc(t)) = Rtcp::try_from(bytes) else {
            panic!("not TWCC")
        };
        let base = u64::from(t.base_seq);
        t.into_iter(std::time::Instant::now(), base.into())
            .map(|(seq, _, at)| (*seq as u16, at.is_some()))
            .collect()
    }

    #[test]
    fn unwraps_across_the_16_bit_edge() {
        assert_eq!(extend_seq(None, 65_535), 65_535);
        assert_eq!(extend_seq(Some(65_535), 0), 65_536);
        assert_eq!(extend_seq(Some(65_536), 65_534), 65_534);
        assert_eq!(extend_seq(Some(3 << 16 | 5), 2), 3 << 16 | 2);
        assert_eq!(extend_seq(Some(10), 65_530), 0, "never below zero");
    }

    #[test]
    fn reports_each_number_once_with_gaps_as_lost() {
        let mut reg = TwccRegister::default();
        let mut out = [0u8; 1200];
        assert!(reg.write_report(&mut out, 1, 2).is_none());
        for (seq, at) in [(65_534u16, 1_000), (65_535, 2_000), (1, 4_000)] {
            reg.record(seq, at);
        }
        let n = reg.write_report(&mut out, 1, 2).unwrap();
        assert_eq!(
            statuses(&out[..n]),
            [(65_534, true), (65_535, true), (0, false), (1, true)]
        );
        assert!(!reg.has_unreported());
        assert!(reg.write_report(&mut out, 1, 2).is_none());
        // The lost one turns up after its report: too late, not reported again.
        reg.record(0, 5_000);
        assert_eq!(reg.late, 1);
        reg.record(2, 6_000);
        let n = reg.write_report(&mut out, 1, 2).unwrap();
        assert_eq!(statuses(&out[..n]), [(2, true)]);
        assert_eq!(out[19], 1, "second report's feedback count");
    }

    #[test]
    fn a_long_stall_keeps_only_the_newest_numbers() {
        let mut reg = TwccRegister::default();
        for i in 0..10_000u64 {
            reg.record(i as u16, i * 100);
        }
        let mut out = [0u8; 1200];
        let mut total = 0;
        while let Some(n) = reg.write_report(&mut out, 1, 2) {
            total += statuses(&out[..n]).len();
        }
        assert_eq!(total, CAPACITY);
    }
}
