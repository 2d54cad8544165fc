//! A synthetic VP8 encoder: frames on a fixed schedule whose sizes average the layer's
//! bitrate, keyframes several times larger, periodically and on PLI, packetized the way a
//! browser does (a frame's packets back to back, the marker on the last one).

use super::rng::{filler, Rng};
use super::stamp::{self, Kind, Stamp};
use super::vp8;
use super::OutPacket;

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct VideoSpec {
    pub kind: Kind,
    /// Simulcast layer index (0 = low); 0 when not simulcast.
    pub layer: u8,
    pub width: u16,
    pub height: u16,
    pub fps: f64,
    pub kbps: f64,
    pub keyframe_interval_s: f64,
    /// Keyframe size as a multiple of the mean interframe.
    pub keyframe_factor: f64,
    /// Largest RTP payload, bytes.
    pub max_payload: usize,
    /// A PLI sooner than this after the last keyframe waits (encoders throttle too).
    pub min_keyframe_gap_ms: u64,
}

pub struct VideoGen {
    spec: VideoSpec,
    source: u32,
    rng: Rng,
    /// Frame `n` is due at `base_us + n / fps` (rounded), so 30 fps does not drift.
    base_us: u64,
    n: u64,
    picture_id: u16,
    seq: u64,
    ts0: u32,
    last_key_us: Option<u64>,
    key_pending: bool,
    delta_mean: f64,
    /// Off while the server says nobody watches this layer (dynacast).
    pub active: bool,
    pub keyframes: u64,
    pub keyframe_requests: u64,
    pub frames: u64,
    /// How late (µs) each frame was that the generator skipped after falling behind; the
    /// driver counts them as send lag, so a probe stall cannot pass for a server freeze.
    pub skipped_lags_us: Vec<u64>,
}

impl VideoGen {
    pub fn new(spec: VideoSpec, source: u32, seed: u64, start_us: u64) -> VideoGen {
        let mut rng = Rng::new(seed);
        let per_frame = spec.kbps * 1000.0 / 8.0 / spec.fps.max(0.1);
        // Keep the mean at the bitrate: one keyframe of k·d per interval of n frames.
        let n = (spec.keyframe_interval_s * spec.fps).max(1.0);
        let delta_mean = per_frame * n / (spec.keyframe_factor.max(1.0) + n - 1.0);
        VideoGen {
            seq: (rng.next_u64() % 30_000) + 1,
            ts0: rng.next_u64() as u32,
            picture_id: (rng.next_u64() % 0x7fff) as u16,
            base_us: start_us,
            n: 0,
            last_key_us: None,
            key_pending: true,
            delta_mean,
            active: true,
            keyframes: 0,
            keyframe_requests: 0,
            frames: 0,
            skipped_lags_us: Vec::new(),
            spec,
            source,
            rng,
        }
    }

    pub fn spec(&self) -> &VideoSpec {
        &self.spec
    }

    /// When the next frame is scheduled, µs.
    pub fn due_us(&self) -> u64 {
        self.base_us + (self.n as f64 * self.frame_interval_us()).round() as u64
    }

    pub fn frame_interval_us(&self) -> f64 {
        1e6 / self.spec.fps.max(0.1)
    }

    pub fn request_keyframe(&mut self) {
        self.keyframe_requests += 1;
        self.key_pending = true;
    }

    /// Emits the frame scheduled at [`Self::due_us`] into `out` (nothing while inactive) and
    /// returns its scheduled time. A generator that fell more than a frame behind skips the
    /// missed frames, as an encoder starved of CPU drops them.
    pub fn frame(&mut self, now_us: u64, out: &mut Vec<OutPacket>) -> u64 {
        let scheduled = self.due_us();
        let step = self.frame_interval_us();
        self.n += 1;
        let next = self.due_us();
        if now_us as f64 > next as f64 + step {
            let behind = (now_us - next) as f64 % step;
            let resume = now_us - behind as u64;
            let mut t = next as f64;
            while (t as u64) < resume && self.skipped_lags_us.len() < super::MAX_SKIPPED {
                self.skipped_lags_us.push(now_us - t as u64);
                t += step;
            }
            self.base_us = resume;
            self.n = 0;
        }
        if !self.active {
            // Resuming must start with a keyframe, as it would in a browser.
            self.key_pending = true;
            return scheduled;
        }
        let since_key = self.last_key_us.map(|k| scheduled.saturating_sub(k));
        let periodic = since_key.is_none_or(|d| d as f64 >= self.spec.keyframe_interval_s * 1e6);
        let allowed = since_key.is_none_or(|d| d >= self.spec.min_keyframe_gap_ms * 1000);
        let key = periodic || (self.key_pending && allowed);
        if key {
            self.key_pending = false;
            self.last_key_us = Some(scheduled);
            self.keyframes += 1;
        }
        let factor = if key { self.spec.keyframe_factor } else { 1.0 };
        let size = (self.delta_mean * factor * self.rng.range(0.75, 1.25)).max(40.0) as usize;
        self.packetize(key, size, scheduled, now_us, out);
        self.frames += 1;
        self.picture_id = (self.picture_id + 1) & 0x7fff;
        scheduled
    }

    fn packetize(
        &mut self,
        key: bool,
        size: usize,
        scheduled: u64,
        now_us: u64,
        out: &mut Vec<OutPacket>,
    ) {
        let room = self
            .spec
            .max_payload
            .max(vp8::DESC_LEN + vp8::KEY_HEADER_LEN + stamp::LEN + 1);
        let n = size.div_ceil(room).max(1);
        let each = size.div_ceil(n);
        let rtp_ts = self
            .ts0
            .wrapping_add(((scheduled as u128 * 90 + 500) / 1000) as u32);
        let stamp = Stamp {
            kind: self.spec.kind,
            layer: self.spec.layer,
            fps: self.spec.fps.round().clamp(0.0, 255.0) as u8,
            source: self.source,
            sent_us: now_us,
        }
        .to_bytes();
        for i in 0..n {
            let mut p = Vec::with_capacity(each.max(32));
            let mut d = [0u8; vp8::DESC_LEN];
            vp8::write_descriptor(&mut d, i == 0, self.picture_id);
            p.extend_from_slice(&d);
            if i == 0 {
                let (h, len) =
                    vp8::payload_header(key, (size / 8) as u32, self.spec.width, self.spec.height);
                p.extend_from_slice(&h[..len]);
            }
            p.extend_from_slice(&stamp);
            let fill = filler();
            while p.len() < each {
                let take = (each - p.len()).min(fill.len());
                p.extend_from_slice(&fill[..take]);
            }
            out.push(OutPacket {
                payload: p,
                marker: i + 1 == n,
                rtp_ts,
                seq: self.seq,
                audio_level: None,
            });
            self.seq += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn spec(kbps: f64) -> VideoSpec {
        VideoSpec {
            kind: Kind::Camera,
            layer: 2,
            width: 1280,
            height: 720,
            fps: 30.0,
            kbps,
            keyframe_interval_s: 2.0,
            keyframe_factor: 6.0,
            max_payload: 1150,
            min_keyframe_gap_ms: 200,
        }
    }

    fn run(g: &mut VideoGen, secs: u64) -> Vec<OutPacket> {
        let mut out = Vec::new();
        while g.due_us() < secs * 1_000_000 {
            let t = g.due_us();
            g.frame(t, &mut out);
        }
        out
    }

    #[test]
    fn bitrate_frame_rate_and_keyframes_follow_the_spec() {
        let mut g = VideoGen::new(spec(1500.0), 9, 1, 0);
        let out = run(&mut g, 10);
        let bytes: usize = out.iter().map(|p| p.payload.len()).sum();
        let kbps = bytes as f64 * 8.0 / 10.0 / 1000.0;
        assert!((kbps - 1500.0).abs() < 100.0, "{kbps} kbps");
        assert_eq!(g.frames, 300);
        assert_eq!(out.iter().filter(|p| p.marker).count(), 300);
        assert_eq!(g.keyframes, 5, "every 2 s");
        assert!(out.iter().all(|p| p.payload.len() <= 1150));
        // Sequence numbers are consecutive; timestamps step 3000 per frame at 90 kHz.
        assert!(out.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        let ts: Vec<u32> = out.iter().filter(|p| p.marker).map(|p| p.rtp_ts).collect();
        assert!(ts.windows(2).all(|w| w[1].wrapping_sub(w[0]) == 3000));
    }

    #[test]
    fn packets_carry_descriptor_header_and_stamp() {
        let mut g = VideoGen::new(spec(500.0), 77, 2, 1_000);
        let mut out = Vec::new();
        g.frame(1_500, &mut out);
        let first = vp8::parse(&out[0].payload).unwrap();
        assert_eq!((first.frame_start, first.keyframe), (true, Some(true)));
        let s = Stamp::parse(&out[0].payload[first.body..]).unwrap();
        assert_eq!(
            (s.source, s.sent_us, s.layer, s.fps, s.kind),
            (77, 1_500, 2, 30, Kind::Camera)
        );
        let last = out.last().unwrap();
        let p = vp8::parse(&last.payload).unwrap();
        assert!(!p.frame_start || out.len() == 1);
        assert!(Stamp::parse(&last.payload[p.body..]).is_some());
        // The next frame is an interframe with the next PictureID.
        out.clear();
        g.frame(35_000, &mut out);
        let next = vp8::parse(&out[0].payload).unwrap();
        assert_eq!(next.keyframe, Some(false));
        assert_eq!(next.picture_id, first.picture_id.map(|p| (p + 1) & 0x7fff));
    }

    #[test]
    fn pli_brings_a_throttled_keyframe() {
        let mut g = VideoGen::new(spec(500.0), 1, 3, 0);
        let mut out = Vec::new();
        g.frame(0, &mut out); // the first frame is a keyframe
        g.request_keyframe();
        for _ in 0..5 {
            let t = g.due_us();
            g.frame(t, &mut out);
        }
        assert_eq!(
            g.keyframes, 1,
            "within 200 ms of the last keyframe the PLI waits"
        );
        while g.due_us() < 250_000 {
            let t = g.due_us();
            g.frame(t, &mut out);
        }
        assert_eq!((g.keyframes, g.keyframe_requests), (2, 1));
    }

    #[test]
    fn late_generator_skips_frames_and_inactive_sends_nothing() {
        let mut g = VideoGen::new(spec(150.0), 1, 4, 0);
        let mut out = Vec::new();
        g.frame(0, &mut out);
        let sched = g.frame(1_000_000, &mut out);
        assert_eq!(sched, 33_333);
        // Frames 2..=29 (66.7 ms .. 966.7 ms) were skipped, each counted with its lateness.
        assert_eq!(g.skipped_lags_us.len(), 28);
        assert_eq!(g.skipped_lags_us[0], 1_000_000 - 66_667);
        assert!(g.skipped_lags_us.iter().all(|&l| l > 33_000));
        assert!(g.due_us() >= 1_000_000 - 33_333 && g.due_us() <= 1_000_000 + 33_333);
        g.active = false;
        out.clear();
        let t = g.due_us();
        g.frame(t, &mut out);
        assert!(out.is_empty());
        g.active = true;
        let t = g.due_us();
        g.frame(t, &mut out);
        assert_eq!(vp8::parse(&out[0].payload).unwrap().keyframe, Some(true));
    }
}
