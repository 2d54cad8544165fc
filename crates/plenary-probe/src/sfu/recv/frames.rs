//! Frames from packets, and which of them a decoder could show. A frame is the run of
//! packets with one RTP timestamp from the VP8 start packet to the marker; it is complete
//! when every sequence number in between arrived. Without temporal layers every interframe
//! needs its predecessor, so after a frame is given up for lost nothing renders until a
//! keyframe, and the receiver asks for one, as a browser does.

use crate::sfu::media::vp8::Vp8Packet;

/// Incomplete frames kept at once; older ones are given up.
const MAX_PENDING: usize = 16;
/// Room reserved for complete frames waiting for a predecessor: 200 ms of 60 fps is 12,
/// so the packet path does not allocate when a loss makes frames wait.
const WAITING_ROOM: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameEvent {
    /// A frame became renderable at `at_us`.
    Rendered { at_us: u64, keyframe: bool },
    /// Decoding is stuck: send a PLI.
    NeedKeyframe,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    ts: u32,
    first_seq: Option<u64>,
    marker_seq: Option<u64>,
    count: u64,
    keyframe: bool,
    picture_id: Option<u64>,
    first_us: u64,
}

#[derive(Clone, Debug, Default)]
pub struct FrameCounts {
    pub rendered: u64,
    pub keyframes: u64,
    /// Complete but not decodable (a predecessor was lost).
    pub undecodable: u64,
    /// Given up before all their packets arrived.
    pub incomplete: u64,
    pub keyframe_requests: u64,
}

#[derive(Clone, Debug)]
pub struct FrameAssembler {
    pending: Vec<Pending>,
    /// Complete frames waiting for a missing predecessor: (unwrapped PictureID, since µs),
    /// sorted by PictureID.
    waiting: Vec<(u64, u64)>,
    next_pid: Option<u64>,
    /// No decodable reference: only a keyframe helps.
    broken: bool,
    last_request_us: Option<u64>,
    last_pid: Option<u64>,
    /// How long a complete frame waits for a missing predecessor (a NACK repair).
    pub max_wait_us: u64,
    /// Least time between two keyframe requests.
    pub request_interval_us: u64,
    pub counts: FrameCounts,
}

impl Default for FrameAssembler {
    fn default() -> Self {
        FrameAssembler {
            pending: Vec::with_capacity(MAX_PENDING + 1),
            waiting: Vec::with_capacity(WAITING_ROOM),
            next_pid: None,
            broken: true,
            last_request_us: None,
            last_pid: None,
            max_wait_us: 200_000,
            request_interval_us: 1_000_000,
            counts: FrameCounts::default(),
        }
    }
}

impl FrameAssembler {
    /// Unwraps a 15-bit PictureID against the last one seen.
    fn unwrap_pid(&mut self, pid: u16) -> u64 {
        let v = match self.last_pid {
            None => u64::from(pid) + (1 << 20),
            Some(last) => {
                let diff =
                    (i32::from(pid) - (last & 0x7fff) as i32 + 0x4000).rem_euclid(0x8000) - 0x4000;
                (last as i64 + i64::from(diff)).max(0) as u64
            }
        };
        if self.last_pid.is_none_or(|l| v > l) {
            self.last_pid = Some(v);
        }
        v
    }

    pub fn on_packet(
        &mut self,
        seq: u64,
        ts: u32,
        marker: bool,
        vp8: &Vp8Packet,
        now_us: u64,
        out: &mut Vec<FrameEvent>,
    ) {
        let pid = vp8.picture_id.map(|p| self.unwrap_pid(p));
        let i = match self.pending.iter().position(|f| f.ts == ts) {
            Some(i) => i,
            None => {
                if self.pending.len() >= MAX_PENDING {
                    self.pending.remove(0);
                    self.counts.incomplete += 1;
                }
                self.pending.push(Pending {
                    ts,
                    first_seq: None,
                    marker_seq: None,
                    count: 0,
                    keyframe: false,
                    picture_id: pid,
                    first_us: now_us,
                });
                self.pending.len() - 1
            }
        };
        let f = &mut self.pending[i];
        f.count += 1;
        if vp8.frame_start {
            f.first_seq = Some(seq);
            f.keyframe = vp8.keyframe == Some(true);
        }
        if marker {
            f.marker_seq = Some(seq);
        }
        if let (Some(a), Some(b)) = (f.first_seq, f.marker_seq) {
            if b >= a && f.count > b - a {
                let f = self.pending.remove(i);
                self.complete(f, now_us, out);
            }
        }
        self.poll(now_us, out);
    }

    fn complete(&mut self, f: Pending, now_us: u64, out: &mut Vec<FrameEvent>) {
        // Frames older than this one that are still incomplete will never be needed.
        let Some(pid) = f.picture_id else {
            // No PictureID: nothing to order by, render as it comes.
            self.render(now_us, f.keyframe, out);
            return;
        };
        if f.keyframe {
            self.waiting.retain(|&(p, _)| p > pid);
            self.drop_pending_before(f.first_us);
            self.broken = false;
            self.render(now_us, true, out);
            self.next_pid = Some(pid + 1);
            self.drain(now_us, out);
        } else if self.broken {
            self.counts.undecodable += 1;
            self.ask(now_us, out);
        } else if self.next_pid == Some(pid) {
            self.render(now_us, false, out);
            self.next_pid = Some(pid + 1);
            self.drain(now_us, out);
        } else if self.next_pid.is_some_and(|n| pid > n) {
            if let Err(at) = self.waiting.binary_search_by_key(&pid, |w| w.0) {
                self.waiting.insert(at, (pid, now_us));
            }
        }
    }

    fn drain(&mut self, now_us: u64, out: &mut Vec<FrameEvent>) {
        while let Some(next) = self.next_pid {
            match self.waiting.binary_search_by_key(&next, |w| w.0) {
                Ok(at) => self.waiting.remove(at),
                Err(_) => break,
            };
            self.render(now_us, false, out);
            self.next_pid = Some(next + 1);
        }
    }

    fn render(&mut self, at_us: u64, keyframe: bool, out: &mut Vec<FrameEvent>) {
        self.counts.rendered += 1;
        self.counts.keyframes += u64::from(keyframe);
        out.push(FrameEvent::Rendered { at_us, keyframe });
    }

    fn drop_pending_before(&mut self, first_us: u64) {
        let before = self.pending.len();
        self.pending.retain(|p| p.first_us >= first_us);
        self.counts.incomplete += (before - self.pending.len()) as u64;
    }

    fn ask(&mut self, now_us: u64, out: &mut Vec<FrameEvent>) {
        if self
            .last_request_us
            .is_none_or(|t| now_us >= t + self.request_interval_us)
        {
            self.last_request_us = Some(now_us);
            self.counts.keyframe_requests += 1;
            out.push(FrameEvent::NeedKeyframe);
        }
    }

    /// Gives up on a missing frame once a later one has waited `max_wait_us` for it, and
    /// on incomplete frames older than a second.
    pub fn poll(&mut self, now_us: u64, out: &mut Vec<FrameEvent>) {
        let stale = |t: u64| now_us.saturating_sub(t) > 1_000_000;
        let before = self.pending.len();
        self.pending.retain(|p| !stale(p.first_us));
        self.counts.incomplete += (before - self.pending.len()) as u64;
        let oldest_wait = self.waiting.iter().map(|w| w.1).min();
        if oldest_wait.is_some_and(|t| now_us.saturating_sub(t) > self.max_wait_us) {
            self.counts.undecodable += self.waiting.len() as u64;
            self.waiting.clear();
            self.broken = true;
            self.ask(now_us, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(start: bool, key: bool, pid: u16) -> Vp8Packet {
        Vp8Packet {
            frame_start: start,
            keyframe: start.then_some(key),
            picture_id: Some(pid),
            body: 0,
        }
    }

    /// Feeds frame `n` (3 packets, seq 3n..3n+2), skipping packet indices in `drop`.
    fn frame(a: &mut FrameAssembler, n: u64, key: bool, drop: &[u64], now: u64) -> Vec<FrameEvent> {
        let mut out = Vec::new();
        for k in 0..3 {
            if !drop.contains(&k) {
                a.on_packet(
                    3 * n + k,
                    n as u32 * 3000,
                    k == 2,
                    &pkt(k == 0, key, n as u16),
                    now,
                    &mut out,
                );
            }
        }
        out
    }

    fn rendered(ev: &[FrameEvent]) -> usize {
        ev.iter()
            .filter(|e| matches!(e, FrameEvent::Rendered { .. }))
            .count()
    }

    #[test]
    fn renders_from_the_first_keyframe_in_order() {
        let mut a = FrameAssembler::default();
        // Interframes before any keyframe are undecodable and ask for a keyframe once.
        let ev = frame(&mut a, 0, false, &[], 0);
        assert_eq!(ev, [FrameEvent::NeedKeyframe]);
        assert!(frame(&mut a, 1, false, &[], 10).is_empty());
        assert_eq!(rendered(&frame(&mut a, 2, true, &[], 20)), 1);
        for n in 3..10 {
            assert_eq!(rendered(&frame(&mut a, n, false, &[], n * 33_000)), 1);
        }
        assert_eq!(
            (a.counts.rendered, a.counts.keyframes, a.counts.undecodable),
            (8, 1, 2)
        );
    }

    #[test]
    fn repaired_packet_within_the_wait_keeps_the_chain() {
        let mut a = FrameAssembler::default();
        frame(&mut a, 0, true, &[], 0);
        assert!(frame(&mut a, 1, false, &[1], 33_000).is_empty());
        // Frame 2 waits for frame 1, whose missing packet comes back 50 ms later.
        assert!(frame(&mut a, 2, false, &[], 66_000).is_empty());
        let mut out = Vec::new();
        a.on_packet(4, 3000, false, &pkt(false, false, 1), 83_000, &mut out);
        assert_eq!(rendered(&out), 2, "frames 1 and 2 render at once");
        assert_eq!(a.counts.undecodable, 0);
    }

    #[test]
    fn lost_frame_breaks_the_chain_until_a_keyframe() {
        let mut a = FrameAssembler::default();
        frame(&mut a, 0, true, &[], 0);
        frame(&mut a, 1, false, &[1], 33_000);
        frame(&mut a, 2, false, &[], 66_000);
        // 200 ms later frame 2 is given up and a keyframe is requested.
        let ev = frame(&mut a, 3, false, &[], 300_000);
        assert!(ev.contains(&FrameEvent::NeedKeyframe), "{ev:?}");
        assert_eq!(rendered(&ev), 0);
        assert_eq!(rendered(&frame(&mut a, 4, false, &[], 333_000)), 0);
        assert_eq!(rendered(&frame(&mut a, 5, true, &[], 366_000)), 1);
        assert_eq!(rendered(&frame(&mut a, 6, false, &[], 400_000)), 1);
        assert_eq!(a.counts.keyframe_requests, 1);
        assert!(
            a.counts.incomplete >= 1 && a.counts.undecodable >= 2,
            "{:?}",
            a.counts
        );
    }

    #[test]
    fn picture_id_wraps() {
        let mut a = FrameAssembler::default();
        let mut out = Vec::new();
        for (i, pid) in [0x7ffeu16, 0x7fff, 0, 1].into_iter().enumerate() {
            let seq = i as u64;
            a.on_packet(
                seq,
                i as u32,
                true,
                &pkt(true, i == 0, pid),
                i as u64 * 1000,
                &mut out,
            );
        }
        assert_eq!(rendered(&out), 4);
    }
}
