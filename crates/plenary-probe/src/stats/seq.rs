//! Loss, duplicate and reordering accounting from sequence numbers.
//!
//! Loss is `sent - unique received`: the probe knows exactly how many packets it sent in a
//! window, which is better than RFC 3550's `highest - first + 1` when the first or last
//! packets of a window are the lost ones. Duplicates are found with a sliding bitmap of
//! the last [`WINDOW`] sequence numbers, so memory is fixed and nothing allocates.

/// How far behind the highest sequence number a packet can arrive and still be checked
/// for duplication. 1024 packets is 20 s of audio or 11 s of video.
pub const WINDOW: u64 = 1024;
const WORDS: usize = (WINDOW / 64) as usize;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// First time this number is seen, in order.
    InOrder,
    /// First time seen, but after a higher number.
    Reordered,
    Duplicate,
    /// Older than the window: counted as received, cannot be checked for duplication.
    TooOld,
}

#[derive(Clone, Debug, Default)]
pub struct SeqTracker {
    bits: [u64; WORDS],
    first: Option<u64>,
    highest: u64,
    pub unique: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub too_old: u64,
}

impl SeqTracker {
    fn bit(seq: u64) -> (usize, u64) {
        let slot = seq % WINDOW;
        ((slot / 64) as usize, 1u64 << (slot % 64))
    }

    pub fn record(&mut self, seq: u64) -> Arrival {
        let Some(_) = self.first else {
            self.first = Some(seq);
            self.highest = seq;
            let (w, m) = Self::bit(seq);
            self.bits[w] |= m;
            self.unique += 1;
            return Arrival::InOrder;
        };
        if seq > self.highest {
            // Forget the slots the window slides over (they belonged to seq - WINDOW).
            let gap = seq - self.highest;
            if gap >= WINDOW {
                self.bits = [0; WORDS];
            } else {
                for s in self.highest + 1..seq {
                    let (w, m) = Self::bit(s);
                    self.bits[w] &= !m;
                }
            }
            let (w, m) = Self::bit(seq);
            self.bits[w] |= m;
            self.highest = seq;
            self.unique += 1;
            return Arrival::InOrder;
        }
        self.first = self.first.map(|f| f.min(seq));
        if self.highest - seq >= WINDOW {
            self.unique += 1;
            self.too_old += 1;
            self.reordered += 1;
            return Arrival::TooOld;
        }
        let (w, m) = Self::bit(seq);
        if self.bits[w] & m != 0 {
            self.duplicates += 1;
            return Arrival::Duplicate;
        }
        self.bits[w] |= m;
        self.unique += 1;
        self.reordered += 1;
        Arrival::Reordered
    }

    /// RFC 3550's expected count: highest - lowest + 1 (0 before any packet).
    pub fn expected_from_range(&self) -> u64 {
        self.first.map_or(0, |f| self.highest - f + 1)
    }

    /// Packets lost out of `sent`. Never negative: duplicates are already excluded, and a
    /// packet from outside the window (which should not happen) cannot make loss negative.
    pub fn lost(&self, sent: u64) -> u64 {
        sent.saturating_sub(self.unique)
    }
}

/// Loss as a percentage of `sent` (0 when nothing was sent).
pub fn loss_pct(sent: u64, lost: u64) -> f64 {
    if sent == 0 {
        0.0
    } else {
        lost as f64 * 100.0 / sent as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream_has_no_loss() {
        let mut t = SeqTracker::default();
        for s in 100..200 {
            assert_eq!(t.record(s), Arrival::InOrder);
        }
        assert_eq!(
            (t.unique, t.expected_from_range(), t.lost(100)),
            (100, 100, 0)
        );
    }

    #[test]
    fn gaps_are_loss() {
        let mut t = SeqTracker::default();
        for s in (0..100).filter(|s| s % 10 != 3) {
            t.record(s);
        }
        assert_eq!(t.lost(100), 10);
        assert_eq!(loss_pct(100, t.lost(100)), 10.0);
        // Losing the last packets is loss too, which the range rule would miss.
        let mut t = SeqTracker::default();
        (0..95).for_each(|s| {
            t.record(s);
        });
        assert_eq!((t.expected_from_range(), t.lost(100)), (95, 5));
    }

    #[test]
    fn reordering_is_not_loss_and_duplicates_are_not_received() {
        let mut t = SeqTracker::default();
        assert_eq!(t.record(0), Arrival::InOrder);
        assert_eq!(t.record(2), Arrival::InOrder);
        assert_eq!(t.record(1), Arrival::Reordered);
        assert_eq!(t.record(1), Arrival::Duplicate);
        assert_eq!(t.record(2), Arrival::Duplicate);
        assert_eq!(t.record(3), Arrival::InOrder);
        assert_eq!(
            (t.unique, t.duplicates, t.reordered, t.lost(4)),
            (4, 2, 1, 0)
        );
    }

    #[test]
    fn window_slides_and_forgets_old_slots() {
        let mut t = SeqTracker::default();
        t.record(0);
        t.record(WINDOW + 5); // slides past 0..=5
                              // 5 is now older than the window: counted once, unchecked.
        assert_eq!(t.record(5), Arrival::TooOld);
        // 10 is inside the window and was never seen: its slot was cleared by the slide.
        assert_eq!(t.record(10), Arrival::Reordered);
        assert_eq!(t.record(10), Arrival::Duplicate);
        // A slot reused by a new number is not mistaken for a duplicate.
        assert_eq!(t.record(WINDOW + 10), Arrival::InOrder);
        assert_eq!(t.record(2 * WINDOW + 6), Arrival::InOrder);
        // The window is now (WINDOW + 7)..=(2 * WINDOW + 6).
        assert_eq!(t.record(WINDOW + 6), Arrival::TooOld);
        assert_eq!(t.record(WINDOW + 11), Arrival::Reordered);
    }

    #[test]
    fn empty_tracker_and_zero_sent() {
        let t = SeqTracker::default();
        assert_eq!((t.expected_from_range(), t.lost(0), t.lost(3)), (0, 0, 3));
        assert_eq!(loss_pct(0, 0), 0.0);
    }
}
