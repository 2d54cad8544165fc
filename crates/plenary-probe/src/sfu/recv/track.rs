//! Everything one received track records: loss from sequence numbers (RFC 3550 interval
//! loss, so a server that drops a layer it switched away from is not blamed), RFC 3550
//! jitter and one-way delay from the stamp's send time, frames, freezes and audio gaps.
//! Two windows run side by side: one per second (progress and NDJSON) and one per ramp
//! step (the verdict).

use super::frames::{FrameAssembler, FrameEvent};
use super::freeze::FreezeDetector;
use crate::sfu::media::stamp::{Kind, Stamp};
use crate::sfu::media::vp8;
use crate::stats::histogram::LogHistogram;
use crate::stats::jitter::Jitter;
use crate::stats::seq::SeqTracker;
use serde::Serialize;

/// A run of this many lost audio packets is audible (shorter ones are concealed).
const AUDIO_LOSS_RUN: u64 = 3;
/// Audio arriving this much later than its RTP timestamp says is a gap.
const AUDIO_LATE_US: i64 = 60_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackKind {
    Audio,
    Video,
}

/// One received RTP packet, already decrypted.
pub struct RxPacket<'a> {
    pub seq: u64,
    pub rtp_ts: u32,
    pub marker: bool,
    pub payload: &'a [u8],
    pub arrival_us: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    packets: u64,
    bytes: u64,
    delay_sum_us: u64,
    delay_n: u64,
    delay_max_us: u64,
    rendered: u64,
    gap_us: u64,
    gaps: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Base {
    expected: u64,
    unique: u64,
    undecodable: u64,
    incomplete: u64,
    keyframes: u64,
    requests: u64,
    start_us: u64,
}

/// One track over one second.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Second {
    pub packets: u64,
    pub bytes: u64,
    pub expected: u64,
    pub lost: u64,
    pub delay_sum_us: u64,
    pub delay_n: u64,
    pub delay_max_us: u64,
    pub jitter_us: f64,
    pub frames: u64,
    pub gap_us: u64,
}

/// One track over one measured step.
#[derive(Clone, Debug, Serialize)]
pub struct TrackWindow {
    /// Last-N paused or resumed it during the window: its frame rate and silence say nothing
    /// about the server's capacity, so it is left out of the QoE figures.
    pub paused: bool,
    pub kind: TrackKind,
    pub source: Option<u32>,
    pub layer: u8,
    pub target_fps: f64,
    pub seconds: f64,
    pub packets: u64,
    pub bytes: u64,
    pub expected: u64,
    pub lost: u64,
    pub loss_pct: f64,
    /// Mean of the RFC 3550 estimate over the window.
    pub jitter_ms: Option<f64>,
    pub delay_p50_ms: Option<f64>,
    pub delay_p95_ms: Option<f64>,
    pub delay_max_ms: Option<f64>,
    pub fps: f64,
    pub fps_pct: Option<f64>,
    pub freeze_pct: f64,
    pub freezes: u64,
    pub gap_ms: f64,
    pub gaps: u64,
    pub undecodable: u64,
    pub incomplete: u64,
    pub keyframes: u64,
    pub keyframe_requests: u64,
    /// From the start of the join to the first frame (video) or packet (audio), ms.
    pub first_media_ms: Option<f64>,
}

pub struct TrackRx {
    pub kind: TrackKind,
    /// When the participant started joining, µs: time to first frame counts from here.
    pub joined_us: u64,
    pub first_packet_us: Option<u64>,
    pub first_frame_us: Option<u64>,
    pub source: Option<u32>,
    pub layer: u8,
    pub fps: u8,
    seq: SeqTracker,
    frames: FrameAssembler,
    freeze: FreezeDetector,
    jitter_sec: Jitter,
    jitter_step: Jitter,
    delay_step: LogHistogram,
    sec: Counts,
    step: Counts,
    sec_base: Base,
    step_base: Base,
    last_audio: Option<(u64, u32, u64)>,
    events: Vec<FrameEvent>,
}

impl TrackRx {
    pub fn new(kind: TrackKind, joined_us: u64, now_us: u64) -> TrackRx {
        let base = Base {
            start_us: now_us,
            ..Base::default()
        };
        TrackRx {
            kind,
            joined_us,
            first_packet_us: None,
            first_frame_us: None,
            source: None,
            layer: 0,
            fps: 0,
            seq: SeqTracker::default(),
            frames: FrameAssembler::default(),
            freeze: FreezeDetector::default(),
            jitter_sec: Jitter::default(),
            jitter_step: Jitter::default(),
            delay_step: LogHistogram::new(),
            sec: Counts::default(),
            step: Counts::default(),
            sec_base: base,
            step_base: base,
            last_audio: None,
            events: Vec::with_capacity(8),
        }
    }

    /// Records a packet; returns true when the receiver should ask for a keyframe.
    pub fn on_packet(&mut self, p: RxPacket<'_>) -> bool {
        let now = p.arrival_us;
        self.first_packet_us.get_or_insert(now);
        if self.seq.record(p.seq) == crate::stats::seq::Arrival::Duplicate {
            return false;
        }
        let (body, vp8) = match self.kind {
            TrackKind::Audio => (p.payload.get(1..), None),
            TrackKind::Video => match vp8::parse(p.payload) {
                Some(v) => (p.payload.get(v.body..), Some(v)),
                None => (None, None),
            },
        };
        let stamp = body.and_then(Stamp::parse);
        for c in [&mut self.sec, &mut self.step] {
            c.packets += 1;
            c.bytes += p.payload.len() as u64;
        }
        if let Some(s) = stamp {
            self.source = Some(s.source);
            if s.kind != Kind::Audio {
                (self.layer, self.fps) = (s.layer, s.fps);
            }
            let delay = now.saturating_sub(s.sent_us);
            for c in [&mut self.sec, &mut self.step] {
                c.delay_sum_us += delay;
                c.delay_n += 1;
                c.delay_max_us = c.delay_max_us.max(delay);
            }
            self.delay_step.record(delay);
            self.jitter_sec.update(s.sent_us, now);
            self.jitter_step.update(s.sent_us, now);
        }
        if self.kind == TrackKind::Audio {
            self.audio_gap(p.seq, p.rtp_ts, now);
            if self.first_frame_us.is_none() {
                self.first_frame_us = Some(now);
            }
            return false;
        }
        let Some(v) = vp8 else { return false };
        self.frames
            .on_packet(p.seq, p.rtp_ts, p.marker, &v, now, &mut self.events);
        self.drain_events()
    }

    /// Lets the frame assembler give up on missing frames; true to ask for a keyframe.
    pub fn poll(&mut self, now_us: u64) -> bool {
        if self.kind == TrackKind::Video {
            self.frames.poll(now_us, &mut self.events);
        }
        self.drain_events()
    }

    fn drain_events(&mut self) -> bool {
        let mut ask = false;
        for e in self.events.drain(..) {
            match e {
                FrameEvent::NeedKeyframe => ask = true,
                FrameEvent::Rendered { at_us, .. } => {
                    self.first_frame_us.get_or_insert(at_us);
                    self.freeze.on_frame(at_us);
                    self.sec.rendered += 1;
                    self.step.rendered += 1;
                }
            }
        }
        ask
    }

    fn audio_gap(&mut self, seq: u64, ts: u32, now: u64) {
        if let Some((lseq, lts, larr)) = self.last_audio {
            if seq <= lseq {
                return;
            }
            let rtp_us = i64::from(ts.wrapping_sub(lts) as i32) * 1000 / 48;
            let mut gap = 0u64;
            let missing = seq - lseq - 1;
            if missing >= AUDIO_LOSS_RUN {
                gap += (rtp_us.max(0) as u64) * missing / (missing + 1);
            }
            let late = now as i64 - larr as i64 - rtp_us;
            if late > AUDIO_LATE_US {
                gap += late as u64;
            }
            if gap > 0 {
                for c in [&mut self.sec, &mut self.step] {
                    c.gap_us += gap;
                    c.gaps += 1;
                }
            }
        }
        self.last_audio = Some((seq, ts, now));
    }

    /// A pause announced by the server (last-N): the silence after it is not a freeze.
    pub fn paused(&mut self) {
        self.freeze.reset();
    }

    fn base(&self, now_us: u64) -> Base {
        let c = &self.frames.counts;
        Base {
            expected: self.seq.expected_from_range(),
            unique: self.seq.unique,
            undecodable: c.undecodable,
            incomplete: c.incomplete,
            keyframes: c.keyframes,
            requests: c.keyframe_requests,
            start_us: now_us,
        }
    }

    fn loss(&self, b: &Base) -> (u64, u64) {
        let expected = self.seq.expected_from_range() - b.expected;
        let got = self.seq.unique - b.unique;
        (expected, expected.saturating_sub(got))
    }

    /// Closes the one-second window.
    pub fn take_second(&mut self, now_us: u64) -> Second {
        let (expected, lost) = self.loss(&self.sec_base);
        let c = std::mem::take(&mut self.sec);
        let jitter_us = self.jitter_sec.current_us();
        self.jitter_sec.reset_window();
        self.sec_base = self.base(now_us);
        Second {
            packets: c.packets,
            bytes: c.bytes,
            expected,
            lost,
            delay_sum_us: c.delay_sum_us,
            delay_n: c.delay_n,
            delay_max_us: c.delay_max_us,
            jitter_us,
            frames: c.rendered,
            gap_us: c.gap_us,
        }
    }

    /// Starts a step's measured window.
    pub fn begin_step(&mut self, now_us: u64) {
        self.step = Counts::default();
        self.step_base = self.base(now_us);
        self.jitter_step.reset_window();
        self.delay_step.clear();
        self.freeze.take_window(now_us);
    }

    /// Closes the step window.
    pub fn end_step(&mut self, now_us: u64) -> TrackWindow {
        let b = self.step_base;
        let secs = (now_us.saturating_sub(b.start_us) as f64 / 1e6).max(1e-3);
        let (expected, lost) = self.loss(&b);
        let (freeze_us, freezes) = self.freeze.take_window(now_us);
        let c = self.step;
        let ms = |q: f64| self.delay_step.quantile(q).map(|us| us as f64 / 1000.0);
        let fps = c.rendered as f64 / secs;
        let f = &self.frames.counts;
        let video = self.kind == TrackKind::Video;
        TrackWindow {
            paused: false,
            kind: self.kind,
            source: self.source,
            layer: self.layer,
            target_fps: f64::from(self.fps),
            seconds: secs,
            packets: c.packets,
            bytes: c.bytes,
            expected,
            lost,
            loss_pct: crate::stats::seq::loss_pct(expected, lost),
            jitter_ms: self.jitter_step.mean_us().map(|us| us / 1000.0),
            delay_p50_ms: ms(0.50),
            delay_p95_ms: ms(0.95),
            delay_max_ms: self.delay_step.max().map(|us| us as f64 / 1000.0),
            fps: if video { fps } else { 0.0 },
            fps_pct: (video && self.fps > 0).then(|| fps * 100.0 / f64::from(self.fps)),
            freeze_pct: if video {
                freeze_us as f64 / 1e4 / secs
            } else {
                0.0
            },
            freezes,
            gap_ms: c.gap_us as f64 / 1000.0,
            gaps: c.gaps,
            undecodable: f.undecodable - b.undecodable,
            incomplete: f.incomplete - b.incomplete,
            keyframes: f.keyframes - b.keyframes,
            keyframe_requests: f.keyframe_requests - b.requests,
            first_media_ms: self
                .first_frame_us
                .map(|t| t.saturating_sub(self.joined_us) as f64 / 1000.0),
        }
    }
}
