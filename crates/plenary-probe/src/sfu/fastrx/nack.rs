//! Which packets of one stream are missing and due a NACK, as str0m's receive side decides
//! it (the probe's path before): the last 128 sequence numbers are watched, each missing
//! one is asked for up to 5 times, an RTT plus 5 ms apart (str0m's margin). The RTT is
//! str0m's, from XR RRTR/DLRR; until it is known, str0m's default of 100 ms.

/// Sequence numbers behind the highest that are still asked for.
const WINDOW: u64 = 128;
/// NACKs sent for one packet at most.
const MAX_NACKS: u8 = 5;
/// Added to the RTT between two NACKs for the same packet, µs.
pub const RETRY_MARGIN_US: u64 = 5_000;
/// The RTT assumed until one is measured, µs.
pub const DEFAULT_RTT_US: u64 = 100_000;

/// A missing packet: when it was last asked for and how often.
#[derive(Clone, Copy)]
struct Missing {
    seq: u64,
    nacks: u8,
    last_us: u64,
}

/// One stream's missing packets. An in-order packet only moves `highest`; the list holds
/// the holes (ascending), so the usual packet touches no per-sequence-number memory.
pub struct NackTracker {
    highest: Option<u64>,
    missing: std::collections::VecDeque<Missing>,
    /// Holes not yet asked for `MAX_NACKS` times: a scan is only needed then.
    pending: u32,
}

impl Default for NackTracker {
    fn default() -> Self {
        NackTracker {
            highest: None,
            missing: std::collections::VecDeque::with_capacity(WINDOW as usize),
            pending: 0,
        }
    }
}

impl NackTracker {
    /// Packet `seq` (extended) arrived: a repair fills its hole, a jump opens new ones.
    pub fn on_packet(&mut self, seq: u64) {
        let Some(highest) = self.highest else {
            self.highest = Some(seq);
            return;
        };
        if seq == highest + 1 {
            self.highest = Some(seq);
            self.expire(seq);
        } else if seq > highest {
            // Expire first: the list then never holds more than a window.
            self.highest = Some(seq);
            self.expire(seq);
            for s in (highest + 1).max(seq.saturating_sub(WINDOW - 1))..seq {
                self.missing.push_back(Missing {
                    seq: s,
                    nacks: 0,
                    last_us: 0,
                });
                self.pending += 1;
            }
        } else if let Ok(at) = self.missing.binary_search_by_key(&seq, |m| m.seq) {
            if self.missing[at].nacks < MAX_NACKS {
                self.pending = self.pending.saturating_sub(1);
            }
            self.missing.remove(at);
        }
    }

    /// Forgets holes that fell out of the window behind `highest`.
    fn expire(&mut self, highest: u64) {
        while let Some(m) = self.missing.front() {
            if m.seq + WINDOW > highest {
                break;
            }
            if m.nacks < MAX_NACKS {
                self.pending = self.pending.saturating_sub(1);
            }
            self.missing.pop_front();
        }
    }

    pub fn has_pending(&self) -> bool {
        self.pending > 0
    }

    /// Collects the sequence numbers due a NACK at `now_us` into `out` (ascending), and
    /// counts them as asked; returns how many. A packet already asked for is asked again
    /// `retry_us` after.
    pub fn due(&mut self, now_us: u64, retry_us: u64, out: &mut [u64]) -> usize {
        if self.pending == 0 {
            return 0;
        }
        let mut n = 0;
        for m in self.missing.iter_mut() {
            if n == out.len() {
                break;
            }
            let due = m.nacks < MAX_NACKS
                && (m.nacks == 0 || now_us.saturating_sub(m.last_us) >= retry_us);
            if due {
                m.nacks += 1;
                m.last_us = now_us;
                if m.nacks == MAX_NACKS {
                    self.pending = self.pending.saturating_sub(1);
                }
                out[n] = m.seq;
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETRY_US: u64 = DEFAULT_RTT_US + RETRY_MARGIN_US;

    fn due(t: &mut NackTracker, now: u64) -> Vec<u64> {
        let mut out = [0u64; 256];
        let n = t.due(now, RETRY_US, &mut out);
        out[..n].to_vec()
    }

    #[test]
    fn gaps_are_asked_for_until_repaired() {
        let mut t = NackTracker::default();
        for s in [10, 11, 14, 15] {
            t.on_packet(s);
        }
        assert!(t.has_pending());
        assert_eq!(due(&mut t, 1_000), [12, 13]);
        assert!(
            due(&mut t, 2_000).is_empty(),
            "not again before the retry time"
        );
        t.on_packet(12); // repaired (RTX)
        assert_eq!(due(&mut t, 1_000 + RETRY_US), [13]);
        t.on_packet(13);
        assert!(!t.has_pending());
        assert!(due(&mut t, 1_000_000).is_empty());
    }

    #[test]
    fn a_packet_is_asked_for_five_times_at_most() {
        let mut t = NackTracker::default();
        t.on_packet(1);
        t.on_packet(3);
        let asked: usize = (0..10).map(|k| due(&mut t, k * RETRY_US).len()).sum();
        assert_eq!(asked, 5);
        assert!(!t.has_pending());
    }

    #[test]
    fn a_long_jump_keeps_only_the_window() {
        let mut t = NackTracker::default();
        t.on_packet(0);
        t.on_packet(5); // 1..=4 missing
        t.on_packet(1_000);
        let got = due(&mut t, 0);
        assert_eq!(got.len(), (WINDOW - 1) as usize);
        assert_eq!(got[0], 1_000 - WINDOW + 1);
        assert_eq!(*got.last().unwrap(), 999);
        // Old reordered packets outside the window change nothing.
        t.on_packet(3);
        assert!(t.has_pending());
        for s in 1_000 - WINDOW + 1..1_000 {
            t.on_packet(s);
        }
        assert!(!t.has_pending(), "pending count stays exact");
    }
}
