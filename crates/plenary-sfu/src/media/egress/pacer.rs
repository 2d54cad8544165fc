//! Per-subscriber pacing of forwarded video: a token bucket filled at
//! [`PACING_FACTOR`] × the estimate, as libwebrtc paces (str0m paces at 1.1×, which holds
//! a join's keyframe burst back for long). Audio and RTX go at once but spend the budget;
//! video waits in order behind queued video. No estimate (estimation off): no pacing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Pacing rate over the estimate.
pub(crate) const PACING_FACTOR: f64 = 2.5;
/// Budget a quiet subscriber may save up: this long at the pacing rate.
const BURST: Duration = Duration::from_millis(25);
/// Video packets queued at most per subscriber; beyond, the newest are dropped (counted)
/// and the receiver's NACK or PLI repairs it.
pub(crate) const MAX_QUEUE: usize = 1024;

/// A video packet waiting for budget (the payload is the shared `Arc`, not a copy).
pub(crate) type Queued = super::Outgoing<Arc<[u8]>>;

pub(crate) struct Pacer {
    /// Bytes that may go now; negative after a packet larger than what was left.
    budget: f64,
    at: Instant,
    queue: VecDeque<Queued>,
    pub dropped: u64,
}

impl Pacer {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            budget: 0.0,
            at: now,
            queue: VecDeque::new(),
            dropped: 0,
        }
    }

    fn refill(&mut self, rate_bps: Option<u64>, now: Instant) {
        let Some(bps) = rate_bps else {
            return;
        };
        let bytes_per_s = bps as f64 * PACING_FACTOR / 8.0;
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.budget = (self.budget + bytes_per_s * dt).min(bytes_per_s * BURST.as_secs_f64());
    }

    /// Whether a video packet may go now (nothing queued before it, budget left). If so,
    /// its `bytes` are spent; if not, the caller queues it.
    pub(crate) fn admit(&mut self, rate_bps: Option<u64>, bytes: usize, now: Instant) -> bool {
        if rate_bps.is_none() {
            return true;
        }
        self.refill(rate_bps, now);
        if !self.queue.is_empty() || self.budget < 0.0 {
            return false;
        }
        self.budget -= bytes as f64;
        true
    }

    /// Spends budget on a packet that goes regardless (audio, RTX).
    pub(crate) fn spend(&mut self, rate_bps: Option<u64>, bytes: usize, now: Instant) {
        if rate_bps.is_some() {
            self.refill(rate_bps, now);
            self.budget -= bytes as f64;
        }
    }

    /// Queues a packet `admit` refused. False when the queue is full (dropped).
    pub(crate) fn push(&mut self, q: Queued) -> bool {
        if self.queue.len() >= MAX_QUEUE {
            self.dropped += 1;
            return false;
        }
        self.queue.push_back(q);
        true
    }

    /// The next queued packet if the budget allows it now; its bytes are spent.
    pub(crate) fn pop(&mut self, rate_bps: Option<u64>, now: Instant) -> Option<Queued> {
        self.refill(rate_bps, now);
        if self.budget < 0.0 && rate_bps.is_some() {
            return None;
        }
        let q = self.queue.pop_front()?;
        self.budget -= q.payload.len() as f64;
        Some(q)
    }

    pub(crate) fn queued(&self) -> usize {
        self.queue.len()
    }
}
