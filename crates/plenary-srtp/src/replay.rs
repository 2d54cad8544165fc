//! Packet index estimation (RFC 3711 §3.3.1 and Appendix A) and the replay window
//! (RFC 3711 §3.3.2).

use crate::Error;

/// Packets this far behind the highest index seen are still accepted once. 128 like
/// libsrtp: video bursts reorder more than the RFC's minimum of 64.
pub(crate) const WINDOW: u64 = 128;

/// The 48-bit index (ROC·2^16 + SEQ) for `seq`, taking the rollover counter that puts it
/// nearest to `highest`. `None` when that would be before the stream's first ROC.
pub(crate) fn estimate_index(highest: u64, seq: u16) -> Option<u64> {
    let roc = highest >> 16;
    let s_l = highest as u16;
    let v = if s_l < 0x8000 {
        if seq > s_l && seq - s_l > 0x8000 {
            roc.checked_sub(1)?
        } else {
            roc
        }
    } else if seq < s_l - 0x8000 {
        roc + 1
    } else {
        roc
    };
    Some((v << 16) | u64::from(seq))
}

/// Which indexes of one stream were already accepted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplayWindow {
    highest: u64,
    /// Bit `i` set: index `highest - i` was accepted.
    seen: u128,
}

impl ReplayWindow {
    /// A window whose first accepted index will be `first`.
    pub(crate) fn new(first: u64) -> Self {
        Self {
            highest: first,
            seen: 0,
        }
    }

    pub(crate) fn highest(&self) -> u64 {
        self.highest
    }

    /// Whether `index` may be accepted. Call before spending work on authentication.
    pub(crate) fn check(&self, index: u64) -> Result<(), Error> {
        if index > self.highest {
            return Ok(());
        }
        let behind = self.highest - index;
        if behind >= WINDOW {
            return Err(Error::TooOld);
        }
        if self.seen & (1u128 << behind) != 0 {
            return Err(Error::Replayed);
        }
        Ok(())
    }

    /// Records `index` as accepted. Call only once the packet authenticated.
    pub(crate) fn accept(&mut self, index: u64) {
        if index > self.highest {
            let ahead = index - self.highest;
            self.seen = if ahead >= WINDOW {
                0
            } else {
                self.seen << ahead
            };
            self.highest = index;
            self.seen |= 1;
        } else {
            let behind = self.highest - index;
            if behind < WINDOW {
                self.seen |= 1u128 << behind;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_follows_wraps_both_ways() {
        // Just after a wrap to ROC 1, a late packet of ROC 0.
        assert_eq!(estimate_index(0x1_0005, 0xfffb), Some(0xfffb));
        // Just before a wrap, the first packet of the next ROC.
        assert_eq!(estimate_index(0xfff0, 0x0003), Some(0x1_0003));
        // Ordinary steps.
        assert_eq!(estimate_index(0x2_1000, 0x1001), Some(0x2_1001));
        assert_eq!(estimate_index(0x2_9000, 0x8fff), Some(0x2_8fff));
        // Half a cycle behind ROC 0 would need ROC -1.
        assert_eq!(estimate_index(0x0010, 0xf000), None);
    }

    #[test]
    fn window_rejects_duplicates_and_the_too_old() {
        let mut w = ReplayWindow::new(1000);
        assert!(w.check(1000).is_ok());
        w.accept(1000);
        assert!(matches!(w.check(1000), Err(Error::Replayed)));
        // Out of order but inside the window: accepted once.
        w.accept(1005);
        assert!(w.check(1002).is_ok());
        w.accept(1002);
        assert!(matches!(w.check(1002), Err(Error::Replayed)));
        assert!(w.check(1001).is_ok());
        assert!(matches!(w.check(1005 - WINDOW), Err(Error::TooOld)));
        // A jump clears the history it leaves behind.
        w.accept(1005 + 500);
        assert!(matches!(w.check(1005), Err(Error::TooOld)));
        assert!(w.check(1005 + 499).is_ok());
        assert_eq!(w.highest(), 1505);
    }
}
