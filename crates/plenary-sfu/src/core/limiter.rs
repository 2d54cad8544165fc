//! Rate limit for keyframe requests (PLI/FIR) towards one publisher track.
//!
//! Every subscriber that joins or switches layer wants a keyframe, and each keyframe is a
//! burst several times a normal frame; a hundred viewers joining must not make the publisher
//! send a hundred keyframes. Requests inside the interval are folded into one that is sent
//! when the interval ends, so a subscriber that asked late is never left waiting forever.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct KeyframeLimiter {
    min_interval: Duration,
    last_sent: Option<Instant>,
    deferred: bool,
}

impl KeyframeLimiter {
    pub fn new(min_interval: Duration) -> KeyframeLimiter {
        KeyframeLimiter {
            min_interval,
            last_sent: None,
            deferred: false,
        }
    }

    fn open(&self, now: Instant) -> bool {
        self.last_sent
            .is_none_or(|t| now.saturating_duration_since(t) >= self.min_interval)
    }

    /// A keyframe is wanted: `true` means send the request now. Otherwise it is remembered
    /// and [`KeyframeLimiter::due`] reports when to send it.
    pub fn allow(&mut self, now: Instant) -> bool {
        if self.open(now) {
            self.last_sent = Some(now);
            self.deferred = false;
            true
        } else {
            self.deferred = true;
            false
        }
    }

    /// `true` once when a deferred request may go out; the caller sends it then.
    pub fn due(&mut self, now: Instant) -> bool {
        if self.deferred && self.open(now) {
            self.last_sent = Some(now);
            self.deferred = false;
            true
        } else {
            false
        }
    }

    /// When a deferred request becomes due, for the driver's timer.
    pub fn next_due(&self) -> Option<Instant> {
        if !self.deferred {
            return None;
        }
        self.last_sent
            .and_then(|t| t.checked_add(self.min_interval))
    }

    /// A keyframe arrived anyway (another requester, or the encoder's own): the deferred
    /// request is satisfied.
    pub fn keyframe_seen(&mut self) {
        self.deferred = false;
    }
}
