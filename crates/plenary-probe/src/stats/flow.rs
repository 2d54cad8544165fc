//! What one flow records during a measured window ("epoch"). The pacer, the client's
//! reader and the peer all update one `FlowStats`; each packet carries the epoch it was
//! sent in, so packets still in flight when a window closes are counted in their own
//! window (or ignored), never in the next one.

use super::histogram::LogHistogram;
use super::jitter::Jitter;
use super::seq::{loss_pct, Arrival, SeqTracker};

/// Where a flow's packets end: back at the client (echo peer, round-trip delay) or at the
/// peer (sink, one-way delay).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Echo,
    Sink,
}

#[derive(Debug)]
pub struct FlowStats {
    mode: Mode,
    epoch: u32,
    sent: u64,
    send_drops: u64,
    at_peer: SeqTracker,
    back: SeqTracker,
    delay: LogHistogram,
    jitter: Jitter,
    other_epoch: u64,
}

/// A closed window of one flow.
#[derive(Clone, Debug)]
pub struct FlowWindow {
    pub sent: u64,
    /// Sends the probe itself could not make (socket buffer full): a load-side problem.
    pub send_drops: u64,
    /// Unique packets that reached the peer (relayed client → peer).
    pub at_peer: u64,
    /// Unique packets back at the client (echo only; relayed peer → client).
    pub back: u64,
    pub lost: u64,
    pub loss_pct: f64,
    pub duplicates: u64,
    pub reordered: u64,
    /// Round-trip (echo) or one-way (sink) delay of every packet, µs.
    pub delay: LogHistogram,
    /// RFC 3550 jitter averaged over the window, µs.
    pub jitter_us: Option<f64>,
}

impl FlowWindow {
    /// Packets the relay forwarded in this window, in both directions.
    pub fn relayed(&self) -> u64 {
        self.at_peer + self.back
    }
}

impl FlowStats {
    pub fn new(mode: Mode, epoch: u32) -> Self {
        FlowStats {
            mode,
            epoch,
            sent: 0,
            send_drops: 0,
            at_peer: SeqTracker::default(),
            back: SeqTracker::default(),
            delay: LogHistogram::new(),
            jitter: Jitter::default(),
            other_epoch: 0,
        }
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    pub fn on_sent(&mut self, epoch: u32) {
        if epoch == self.epoch {
            self.sent += 1;
        }
    }

    pub fn on_send_drop(&mut self, epoch: u32) {
        if epoch == self.epoch {
            self.send_drops += 1;
        }
    }

    /// A packet reached the peer. In sink mode this is where delay and jitter are taken.
    pub fn on_peer(&mut self, epoch: u32, seq: u64, sent_us: u64, now_us: u64) {
        if epoch != self.epoch {
            self.other_epoch += 1;
            return;
        }
        let arrival = self.at_peer.record(seq);
        if self.mode == Mode::Sink && arrival != Arrival::Duplicate {
            self.timing(sent_us, now_us);
        }
    }

    /// An echoed packet came back to the client.
    pub fn on_back(&mut self, epoch: u32, seq: u64, sent_us: u64, now_us: u64) {
        if epoch != self.epoch {
            self.other_epoch += 1;
            return;
        }
        if self.back.record(seq) != Arrival::Duplicate {
            self.timing(sent_us, now_us);
        }
    }

    fn timing(&mut self, sent_us: u64, now_us: u64) {
        self.delay.record(now_us.saturating_sub(sent_us));
        self.jitter.update(sent_us, now_us);
    }

    /// Packets seen from other windows (late or early); for diagnostics.
    pub fn other_epoch(&self) -> u64 {
        self.other_epoch
    }

    /// Closes the window and starts recording `next_epoch`.
    pub fn take(&mut self, next_epoch: u32) -> FlowWindow {
        let end = match self.mode {
            Mode::Echo => &self.back,
            Mode::Sink => &self.at_peer,
        };
        let lost = end.lost(self.sent);
        let window = FlowWindow {
            sent: self.sent,
            send_drops: self.send_drops,
            at_peer: self.at_peer.unique,
            back: self.back.unique,
            lost,
            loss_pct: loss_pct(self.sent, lost),
            duplicates: self.at_peer.duplicates + self.back.duplicates,
            reordered: self.at_peer.reordered + self.back.reordered,
            delay: self.delay.clone(),
            jitter_us: self.jitter.mean_us(),
        };
        self.epoch = next_epoch;
        self.sent = 0;
        self.send_drops = 0;
        self.at_peer = SeqTracker::default();
        self.back = SeqTracker::default();
        self.delay.clear();
        self.jitter.reset_window();
        self.other_epoch = 0;
        window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_window_counts_both_directions() {
        let mut f = FlowStats::new(Mode::Echo, 1);
        for seq in 0..10u64 {
            f.on_sent(1);
            let t = seq * 20_000;
            if seq != 4 {
                f.on_peer(1, seq, t, t + 1_000);
            }
            if seq != 4 && seq != 7 {
                f.on_back(1, seq, t, t + 2_000);
            }
        }
        f.on_back(1, 3, 60_000, 62_000); // duplicate: no delay sample
        let w = f.take(3);
        assert_eq!((w.sent, w.at_peer, w.back, w.lost), (10, 9, 8, 2));
        assert_eq!(w.loss_pct, 20.0);
        assert_eq!(w.relayed(), 17);
        assert_eq!(w.duplicates, 1);
        assert_eq!(w.delay.count(), 8);
        assert_eq!(w.delay.quantile(0.5), Some(2_000));
        assert_eq!(w.jitter_us, Some(0.0));
        assert_eq!(f.epoch(), 3);
    }

    #[test]
    fn sink_window_measures_at_the_peer() {
        let mut f = FlowStats::new(Mode::Sink, 0);
        for seq in 0..4u64 {
            f.on_sent(0);
            f.on_peer(0, seq, seq * 10, seq * 10 + 500);
        }
        let w = f.take(1);
        assert_eq!((w.sent, w.at_peer, w.back, w.lost), (4, 4, 0, 0));
        assert_eq!(w.delay.quantile(0.99), Some(500));
    }

    #[test]
    fn other_epochs_are_ignored() {
        let mut f = FlowStats::new(Mode::Echo, 5);
        f.on_sent(4); // warm-up send
        f.on_back(4, 0, 0, 10); // warm-up packet arriving late
        f.on_sent(5);
        f.on_send_drop(5);
        f.on_back(5, 1, 0, 10);
        f.on_back(6, 2, 0, 10); // next window's packet, early
        assert_eq!(f.other_epoch(), 2);
        let w = f.take(7);
        assert_eq!((w.sent, w.send_drops, w.back, w.lost), (1, 1, 1, 0));
        // The new window starts empty.
        let w = f.take(8);
        assert_eq!((w.sent, w.back, w.delay.count()), (0, 0, 0));
        assert_eq!(w.jitter_us, None);
    }
}
