//! Synthetic Opus: 20 ms frames of Opus-like sizes with an RFC 6464 audio level, speakers
//! alternating talk bursts and pauses, and muted microphones in DTX (one small packet every
//! 400 ms), which is what hundreds of open-but-muted microphones cost a server.

use super::rng::{filler, Rng};
use super::stamp::{self, Kind, Stamp};
use super::OutPacket;

/// TOC byte of a 20 ms fullband hybrid-mode mono frame (RFC 6716 §3.1, config 15).
const TOC: u8 = 15 << 3;

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct AudioSpec {
    pub frame_ms: u32,
    /// Mean bytes of a frame while talking.
    pub talk_bytes: usize,
    /// Bytes of a frame in a pause when DTX is off.
    pub silence_bytes: usize,
    /// Interval of DTX packets, ms.
    pub dtx_interval_ms: u32,
    /// Talk bursts last between these, seconds.
    pub talk_s: (f64, f64),
    /// Pauses between bursts last between these, seconds.
    pub pause_s: (f64, f64),
    /// Speakers go to DTX in their pauses too (otherwise they send quiet frames).
    pub dtx_in_pauses: bool,
}

/// Whether this microphone speaks now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Role {
    /// Open but muted: DTX only.
    Muted,
    /// Always a speaker (talk/pause pattern).
    Speaker,
    /// One of `pool` participants of whom `active` speak at a time, the set moving by
    /// `active` every `rotate_us` (participant `index` of the pool).
    Rotating {
        index: u32,
        pool: u32,
        active: u32,
        rotate_us: u64,
    },
}

impl Role {
    pub fn speaks_at(&self, t_us: u64) -> bool {
        match *self {
            Role::Muted => false,
            Role::Speaker => true,
            Role::Rotating {
                index,
                pool,
                active,
                rotate_us,
            } => {
                if pool == 0 || index >= pool {
                    return false;
                }
                let first =
                    (t_us / rotate_us.max(1)).wrapping_mul(u64::from(active)) % u64::from(pool);
                (u64::from(index) + u64::from(pool) - first) % u64::from(pool) < u64::from(active)
            }
        }
    }
}

pub struct AudioGen {
    spec: AudioSpec,
    pub role: Role,
    source: u32,
    rng: Rng,
    next_us: u64,
    seq: u64,
    ts0: u32,
    talking: bool,
    phase_end_us: u64,
    pub packets: u64,
    /// How late (µs) each frame was that the generator skipped after falling behind; the
    /// driver counts them as send lag, so a probe stall cannot pass for a server freeze.
    pub skipped_lags_us: Vec<u64>,
}

impl AudioGen {
    pub fn new(spec: AudioSpec, role: Role, source: u32, seed: u64, start_us: u64) -> AudioGen {
        let mut rng = Rng::new(seed);
        AudioGen {
            seq: (rng.next_u64() % 30_000) + 1,
            ts0: rng.next_u64() as u32,
            next_us: start_us,
            talking: false,
            phase_end_us: start_us,
            packets: 0,
            skipped_lags_us: Vec::new(),
            spec,
            role,
            source,
            rng,
        }
    }

    pub fn due_us(&self) -> u64 {
        self.next_us
    }

    /// Emits the packet scheduled at [`Self::due_us`] and returns its scheduled time.
    pub fn frame(&mut self, now_us: u64, out: &mut Vec<OutPacket>) -> u64 {
        let scheduled = self.next_us;
        let frame = u64::from(self.spec.frame_ms.max(1)) * 1000;
        let speaks = self.role.speaks_at(scheduled);
        if speaks && scheduled >= self.phase_end_us {
            self.talking = !self.talking;
            let (lo, hi) = if self.talking {
                self.spec.talk_s
            } else {
                self.spec.pause_s
            };
            self.phase_end_us = scheduled + (self.rng.range(lo, hi.max(lo)) * 1e6) as u64;
        }
        let talking = speaks && self.talking;
        let dtx = !talking && (!speaks || self.spec.dtx_in_pauses);
        let (size, level) = if talking {
            let size = self.spec.talk_bytes as f64 * self.rng.range(0.85, 1.15);
            (size as usize, self.rng.range(20.0, 45.0) as i8)
        } else if dtx {
            (1 + stamp::LEN, 127)
        } else {
            (self.spec.silence_bytes, self.rng.range(80.0, 110.0) as i8)
        };
        let mut p = Vec::with_capacity(size.max(1 + stamp::LEN));
        p.push(TOC);
        let stamp = Stamp {
            kind: Kind::Audio,
            layer: 0,
            fps: 0,
            source: self.source,
            sent_us: now_us,
        };
        p.extend_from_slice(&stamp.to_bytes());
        let fill = filler();
        while p.len() < size {
            let take = (size - p.len()).min(fill.len());
            p.extend_from_slice(&fill[..take]);
        }
        out.push(OutPacket {
            payload: p,
            marker: false,
            rtp_ts: self
                .ts0
                .wrapping_add((scheduled as u128 * 48 / 1000) as u32),
            seq: self.seq,
            audio_level: Some((-level, talking)),
        });
        self.seq += 1;
        self.packets += 1;
        let step = if dtx {
            u64::from(self.spec.dtx_interval_ms) * 1000
        } else {
            frame
        };
        self.next_us += step;
        if now_us > self.next_us + step {
            let resume = now_us - (now_us - self.next_us) % frame;
            let mut t = self.next_us;
            while t < resume && self.skipped_lags_us.len() < super::MAX_SKIPPED {
                self.skipped_lags_us.push(now_us - t);
                t += step;
            }
            self.next_us = resume;
        }
        scheduled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn spec() -> AudioSpec {
        AudioSpec {
            frame_ms: 20,
            talk_bytes: 100,
            silence_bytes: 40,
            dtx_interval_ms: 400,
            talk_s: (1.0, 2.0),
            pause_s: (0.5, 1.0),
            dtx_in_pauses: false,
        }
    }

    fn run(g: &mut AudioGen, until_us: u64) -> Vec<OutPacket> {
        let mut out = Vec::new();
        while g.due_us() < until_us {
            let t = g.due_us();
            g.frame(t, &mut out);
        }
        out
    }

    #[test]
    fn muted_microphone_sends_dtx_every_400_ms() {
        let mut g = AudioGen::new(spec(), Role::Muted, 3, 1, 0);
        let out = run(&mut g, 10_000_000);
        assert_eq!(out.len(), 25);
        assert!(out
            .iter()
            .all(|p| p.payload.len() == 17 && p.audio_level == Some((-127, false))));
        // RTP time still advances by the real interval (48 kHz), so receivers see no gap.
        assert!(out
            .windows(2)
            .all(|w| w[1].rtp_ts.wrapping_sub(w[0].rtp_ts) == 19_200));
        let s = Stamp::parse(&out[3].payload[1..]).unwrap();
        assert_eq!((s.kind, s.source, s.sent_us), (Kind::Audio, 3, 1_200_000));
    }

    #[test]
    fn speaker_alternates_talk_and_pauses() {
        let mut g = AudioGen::new(spec(), Role::Speaker, 1, 2, 0);
        let out = run(&mut g, 30_000_000);
        assert_eq!(out.len(), 1500, "50 packets/s without DTX");
        let talking = out
            .iter()
            .filter(|p| p.audio_level.is_some_and(|l| l.1))
            .count();
        // Bursts of 1-2 s and pauses of 0.5-1 s: about two thirds talking.
        assert!((800..1200).contains(&talking), "{talking}");
        let loud = out
            .iter()
            .filter(|p| {
                p.audio_level
                    .is_some_and(|l| l.1 && l.0 >= -45 && l.0 <= -20)
            })
            .count();
        assert_eq!(loud, talking);
    }

    #[test]
    fn a_stalled_generator_counts_each_skipped_frame_as_late() {
        let mut g = AudioGen::new(spec(), Role::Speaker, 1, 2, 0);
        let mut out = Vec::new();
        g.frame(0, &mut out);
        assert!(g.skipped_lags_us.is_empty());
        // 200 ms late for the frame due at 20 ms: the frames due at 40..=200 ms are skipped.
        let sched = g.frame(220_000, &mut out);
        assert_eq!(sched, 20_000);
        assert_eq!(g.due_us(), 220_000);
        assert_eq!(g.skipped_lags_us.len(), 9);
        assert_eq!(g.skipped_lags_us[0], 180_000);
        assert_eq!(*g.skipped_lags_us.last().unwrap(), 20_000);
    }

    #[test]
    fn dtx_in_pauses_cuts_the_packet_rate() {
        let mut s = spec();
        s.dtx_in_pauses = true;
        let mut g = AudioGen::new(s, Role::Speaker, 1, 2, 0);
        let n = run(&mut g, 30_000_000).len();
        assert!(n < 1300 && n > 700, "{n}");
    }

    #[test]
    fn rotation_keeps_the_number_of_speakers() {
        let pool = 12;
        for t in (0..120_000_000u64).step_by(1_000_000) {
            let speaking = (0..pool)
                .filter(|&i| {
                    Role::Rotating {
                        index: i,
                        pool,
                        active: 3,
                        rotate_us: 20_000_000,
                    }
                    .speaks_at(t)
                })
                .count();
            assert_eq!(speaking, 3, "at {t}");
        }
        let r = |i| Role::Rotating {
            index: i,
            pool,
            active: 3,
            rotate_us: 20_000_000,
        };
        assert!(r(0).speaks_at(0) && !r(0).speaks_at(20_000_000) && r(3).speaks_at(20_000_000));
        assert!(!Role::Rotating {
            index: 5,
            pool: 0,
            active: 3,
            rotate_us: 1
        }
        .speaks_at(0));
    }
}
