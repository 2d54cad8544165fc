//! The fast path's own bandwidth estimate per subscriber, from transport-wide feedback.
//! str0m's estimator is crate-private and sees none of these packets, so it cannot be fed.
//!
//! The rule (one decision per window of at least [`WINDOW`] of feedback):
//! - **loss** above 10% of the window's packets: estimate × (1 − loss / 2);
//! - else **queueing**: the window's mean one-way delay (arrival on the receiver's clock
//!   less our send time; the clocks' offset cancels out) above the lowest mean seen
//!   (the base, which drifts up by [`BASE_DRIFT`] per window so a changed route or clock
//!   drift is absorbed) by more than [`QUEUE_DELAY`], in [`OVERUSE_WINDOWS`] windows in a
//!   row: estimate × 0.85. A mean over the window, not one packet, so receiver
//!   scheduling jitter does not count as a queue; relative to the estimate, not to the
//!   goodput, so a subscriber that is sent less than its estimate is not driven down;
//! - else, with loss under 2%: estimate × 1.08, but never above twice the goodput or the
//!   starting estimate, whichever is higher, so the estimate grows only while the path
//!   carries what is sent (no probing yet);
//! - otherwise it holds. It stays within [`MIN_BPS`] and [`MAX_BPS`].

use std::time::{Duration, Instant};

/// Shortest feedback window decided on.
pub(crate) const WINDOW: Duration = Duration::from_millis(200);
/// Mean delay above the base by this much counts as a queue on the path.
pub(crate) const QUEUE_DELAY: Duration = Duration::from_millis(30);
/// Windows in a row with a queue before the estimate is lowered.
pub(crate) const OVERUSE_WINDOWS: u8 = 2;
/// How far the delay base rises per window while the mean stays above it.
pub(crate) const BASE_DRIFT: Duration = Duration::from_micros(500);
pub(crate) const MIN_BPS: u64 = 100_000;
pub(crate) const MAX_BPS: u64 = 50_000_000;
/// Transport-wide sequence numbers remembered; feedback for older ones is ignored.
const LOG: usize = 4096;

#[derive(Clone, Copy)]
struct SentAt {
    seq: u16,
    at: Instant,
    size: u16,
}

/// Send time and size per transport-wide sequence number.
pub(crate) struct SendLog {
    slots: Box<[Option<SentAt>]>,
}

impl Default for SendLog {
    fn default() -> Self {
        Self {
            slots: vec![None; LOG].into_boxed_slice(),
        }
    }
}

impl SendLog {
    pub(crate) fn record(&mut self, seq: u16, at: Instant, size: usize) {
        self.slots[usize::from(seq) % LOG] = Some(SentAt {
            seq,
            at,
            size: size.min(usize::from(u16::MAX)) as u16,
        });
    }

    fn get(&self, seq: u16) -> Option<SentAt> {
        self.slots[usize::from(seq) % LOG].filter(|s| s.seq == seq)
    }
}

/// What one window of feedback saw.
#[derive(Default, Clone, Copy)]
struct Window {
    received: u32,
    lost: u32,
    bytes: u64,
    /// (send time, arrival µs) of the first and last received packet.
    first: Option<(Instant, i64)>,
    last: Option<(Instant, i64)>,
    /// Sum of one-way delays (arrival µs less send µs since `Estimator::origin`).
    delay_sum: i64,
}

pub(crate) struct Estimator {
    bps: u64,
    start_bps: u64,
    window: Window,
    /// Set by each decision, so `take_update` reports it once.
    changed: bool,
    /// Send times are µs since this.
    origin: Instant,
    /// Lowest mean one-way delay seen (µs), drifting up slowly.
    base_delay: Option<i64>,
    overuse: u8,
}

impl Estimator {
    pub(crate) fn new(start_bps: u64, now: Instant) -> Self {
        let start_bps = start_bps.clamp(MIN_BPS, MAX_BPS);
        Self {
            bps: start_bps,
            start_bps,
            window: Window::default(),
            changed: false,
            origin: now,
            base_delay: None,
            overuse: 0,
        }
    }

    pub(crate) fn estimate(&self) -> u64 {
        self.bps
    }

    /// The estimate, once after each decision.
    pub(crate) fn take_update(&mut self) -> Option<u64> {
        std::mem::take(&mut self.changed).then_some(self.bps)
    }

    /// One packet of a feedback message: `arrival` in µs of the receiver's clock, or lost.
    pub(crate) fn on_packet(&mut self, log: &SendLog, seq: u16, arrival: Option<i64>) {
        let Some(sent) = log.get(seq) else {
            return; // not ours or too old
        };
        let w = &mut self.window;
        match arrival {
            None => w.lost += 1,
            Some(a) => {
                w.received += 1;
                w.bytes += u64::from(sent.size);
                let sent_us = sent.at.saturating_duration_since(self.origin).as_micros() as i64;
                w.delay_sum += a - sent_us;
                if w.first.is_none() {
                    w.first = Some((sent.at, a));
                }
                w.last = Some((sent.at, a));
            }
        }
    }

    /// Called after each feedback message: decides once the window is long enough.
    pub(crate) fn on_feedback_end(&mut self) {
        let w = self.window;
        let (Some((s0, a0)), Some((s1, a1))) = (w.first, w.last) else {
            if w.lost >= 20 {
                // Everything lost: halve.
                self.set(self.bps / 2);
                self.window = Window::default();
            }
            return;
        };
        let send_span = s1.saturating_duration_since(s0);
        let recv_span_us = (a1 - a0).max(0) as u64;
        if send_span < WINDOW && Duration::from_micros(recv_span_us) < WINDOW {
            return;
        }
        let total = u64::from(w.received + w.lost);
        let loss = w.lost as f64 / total.max(1) as f64;
        let goodput = (w.bytes * 8 * 1_000_000)
            .checked_div(recv_span_us)
            .unwrap_or(0);
        let mean_delay = w.delay_sum / i64::from(w.received.max(1));
        let drift = BASE_DRIFT.as_micros() as i64;
        let base = self
            .base_delay
            .map_or(mean_delay, |b| (b + drift).min(mean_delay));
        self.base_delay = Some(base);
        let queued = mean_delay - base > QUEUE_DELAY.as_micros() as i64;
        self.overuse = if queued { self.overuse + 1 } else { 0 };
        let next = if loss > 0.10 {
            (self.bps as f64 * (1.0 - loss / 2.0)) as u64
        } else if self.overuse >= OVERUSE_WINDOWS {
            self.overuse = 0;
            self.bps * 85 / 100
        } else if queued {
            self.bps
        } else if loss < 0.02 {
            let cap = (2 * goodput).max(self.start_bps);
            (self.bps * 108 / 100).min(cap.max(self.bps))
        } else {
            self.bps
        };
        self.set(next);
        self.window = Window::default();
    }

    fn set(&mut self, bps: u64) {
        self.bps = bps.clamp(MIN_BPS, MAX_BPS);
        self.changed = true;
    }
}
