//! One outgoing RTP stream fed by a source that changes over time.
//!
//! A subscriber's m-line keeps one SSRC while what it carries changes: a simulcast layer
//! switch, or a programme feed moving to the next speaker. The receiver must see one
//! continuous stream, so the switcher owns the outgoing sequence numbers and timestamps and
//! maps each forwarded packet onto them.

use std::time::{Duration, Instant};

/// One incoming RTP packet, reduced to what the switch decision needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incoming {
    /// SSRC of the source stream.
    pub source: u32,
    /// Extended (rollover-free) sequence number in the source stream.
    pub seq: u64,
    pub ts: u32,
    /// First packet of a keyframe (see [`super::codec::is_keyframe_start`]).
    pub keyframe_start: bool,
    pub marker: bool,
}

/// What to do with an incoming packet for this outgoing stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it with these rewritten values.
    Forward {
        /// Extended outgoing sequence number.
        seq: u64,
        ts: u32,
        /// First packet after a source change: the caller may set the marker (audio) or
        /// announce the change.
        switched: bool,
    },
    Drop,
}

/// Where the current source was joined to the outgoing stream.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    /// First accepted input sequence number; older packets belong before the switch.
    in_seq: u64,
    out_seq: u64,
    ts_offset: u32,
}

/// The highest packet sent so far, which the next switch continues from.
#[derive(Debug, Clone, Copy)]
struct LastOut {
    seq: u64,
    ts: u32,
    at: Instant,
}

/// Rewrites one source at a time onto one continuous outgoing stream.
#[derive(Debug, Clone)]
pub struct Switcher {
    clock_rate: u32,
    needs_keyframe: bool,
    start_seq: u16,
    start_ts: Option<u32>,
    /// What the caller asked for.
    target: Option<u32>,
    /// What is being forwarded now.
    current: Option<u32>,
    /// `None` until the current source's first packet is mapped.
    anchor: Option<Anchor>,
    last: Option<LastOut>,
}

impl Switcher {
    /// `clock_rate` is the RTP clock (90 000 for video, 48 000 for Opus). Video
    /// (`needs_keyframe`) only switches at a keyframe of the new source; audio at once.
    pub fn new(clock_rate: u32, needs_keyframe: bool) -> Switcher {
        Switcher {
            clock_rate,
            needs_keyframe,
            start_seq: 1,
            start_ts: None,
            target: None,
            current: None,
            anchor: None,
            last: None,
        }
    }

    /// Chooses the first outgoing sequence number and timestamp (RFC 3550 wants them random).
    /// The sequence number is 16-bit so the receiver's rollover counter starts at 0. Without a
    /// start timestamp the first source's timestamps pass through unchanged.
    pub fn with_start(mut self, seq: u16, ts: Option<u32>) -> Switcher {
        self.start_seq = seq;
        self.start_ts = ts;
        self
    }

    /// Sets the source to forward; `None` pauses at once. Video keeps forwarding the current
    /// source until the new one sends a keyframe, so the picture never freezes on a switch.
    pub fn request(&mut self, source: Option<u32>) {
        self.target = source;
        match source {
            None => {
                self.current = None;
                self.anchor = None;
            }
            Some(s) if self.current == Some(s) => {}
            Some(s) => {
                if !self.needs_keyframe {
                    self.current = Some(s);
                    self.anchor = None;
                }
            }
        }
    }

    /// The source whose packets are forwarded now.
    pub fn current(&self) -> Option<u32> {
        self.current
    }

    /// The requested source still waiting for its keyframe; the caller should ask that
    /// publisher for one (rate-limited).
    pub fn pending(&self) -> Option<u32> {
        match self.target {
            Some(t) if self.current != Some(t) => Some(t),
            _ => None,
        }
    }

    /// The last requested source, switched to or not.
    pub fn target(&self) -> Option<u32> {
        self.target
    }

    /// Decides whether `p` is forwarded and with which sequence number and timestamp.
    pub fn on_packet(&mut self, now: Instant, p: &Incoming) -> Verdict {
        if self.current == Some(p.source) {
            if let Some(a) = self.anchor {
                return self.forward(now, p, a, false);
            }
        }
        if self.target != Some(p.source) {
            return Verdict::Drop;
        }
        // Joining the target: at once for audio, at a keyframe for video.
        if self.needs_keyframe && !p.keyframe_start {
            return Verdict::Drop;
        }
        let a = self.join(now, p);
        self.current = Some(p.source);
        self.anchor = Some(a);
        self.forward(now, p, a, true)
    }

    /// Continues the output where it stopped: next sequence number, and a timestamp advanced
    /// by the wall-clock time since the last packet so the receiver's jitter buffer and A/V
    /// sync see real time pass.
    fn join(&self, now: Instant, p: &Incoming) -> Anchor {
        let (out_seq, out_ts) = match self.last {
            None => (u64::from(self.start_seq), self.start_ts.unwrap_or(p.ts)),
            Some(l) => {
                let ticks = rtp_ticks(now.saturating_duration_since(l.at), self.clock_rate);
                (l.seq.wrapping_add(1), l.ts.wrapping_add(ticks.max(1)))
            }
        };
        Anchor {
            in_seq: p.seq,
            out_seq,
            ts_offset: out_ts.wrapping_sub(p.ts),
        }
    }

    fn forward(&mut self, now: Instant, p: &Incoming, a: Anchor, switched: bool) -> Verdict {
        if p.seq < a.in_seq {
            // From before the switch point: its output slot belongs to the previous source.
            return Verdict::Drop;
        }
        let seq = a.out_seq.wrapping_add(p.seq - a.in_seq);
        let ts = p.ts.wrapping_add(a.ts_offset);
        if self.last.is_none_or(|l| seq > l.seq) {
            self.last = Some(LastOut { seq, ts, at: now });
        }
        Verdict::Forward { seq, ts, switched }
    }
}

/// `elapsed` in RTP clock ticks, wrapping like RTP timestamps do.
fn rtp_ticks(elapsed: Duration, clock_rate: u32) -> u32 {
    let ticks = elapsed.as_nanos() * u128::from(clock_rate) / 1_000_000_000;
    // Truncation is the RTP timestamp wrap.
    ticks as u32
}
