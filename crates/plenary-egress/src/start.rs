//! Where one output's timeline starts, so that its audio and its video start together.
//!
//! Each output's timestamps start at zero on the first keyframe it gets. Its audio must
//! start there too: a muxer may not keep a gap between the two tracks' first stamps.
//! `mp4mux` in fragmented mode does not (GStreamer 1.22: no edit list, each track's first
//! fragment starts at zero), so audio that started 300 ms after the video in the stream
//! started with it in the file, 300 ms early for the whole recording. How long that gap
//! was depended on how late in wall time the encoded keyframe reached the output after the
//! audio of the same moment (x264enc's start, a busy CPU), which is why lip sync changed
//! from run to run (docs/decisions/0005-egress.md).
//!
//! So the audio that comes out of the encoder before the output's first keyframe is held
//! (up to `HOLD`), and the start is put on the AAC frame boundary nearest the keyframe:
//! the frame around the keyframe if the keyframe is in its first half (the video then
//! starts up to half a frame, 10.7 ms, after zero), else the next one (the audio starts up
//! to half a frame after zero). Sans-IO: stamps are running times, passed in.

use std::collections::VecDeque;
use std::time::Duration;

/// Audio older than this (behind the newest held) is let go while the output waits for its
/// first keyframe. The encoder is asked for one when an output starts, and a keyframe
/// comes every 2 s anyway; this only bounds the memory if the video stalls.
pub const HOLD: Duration = Duration::from_secs(3);

/// An audio buffer with its stamp and its end (`pts` if its duration is unknown).
struct Held<T> {
    pts: Duration,
    end: Duration,
    item: T,
}

/// One output's start: its base (the running time that becomes zero) once set.
pub struct OutputStart<T> {
    base: Option<Duration>,
    held: VecDeque<Held<T>>,
}

impl<T> Default for OutputStart<T> {
    fn default() -> Self {
        OutputStart {
            base: None,
            held: VecDeque::new(),
        }
    }
}

impl<T> OutputStart<T> {
    /// The running time that is zero in this output, once its first keyframe came.
    pub fn base(&self) -> Option<Duration> {
        self.base
    }

    /// An encoded audio buffer: what to send now, with the output's stamps. Before the
    /// first keyframe it is held; after, audio from before the base is dropped.
    pub fn audio(
        &mut self,
        pts: Duration,
        duration: Option<Duration>,
        item: T,
    ) -> Vec<(Duration, T)> {
        match self.base {
            Some(base) => pts
                .checked_sub(base)
                .map(|out| vec![(out, item)])
                .unwrap_or_default(),
            None => {
                let end = pts + duration.unwrap_or_default();
                self.held.push_back(Held { pts, end, item });
                while self
                    .held
                    .front()
                    .is_some_and(|oldest| pts.saturating_sub(oldest.pts) > HOLD)
                {
                    self.held.pop_front();
                }
                Vec::new()
            }
        }
    }

    /// The output's first keyframe, at running time `keyframe`: sets the base and returns
    /// the keyframe's stamp in the output and the held audio to send before it.
    pub fn first_keyframe(&mut self, keyframe: Duration) -> (Duration, Vec<(Duration, T)>) {
        let around = self
            .held
            .iter()
            .find(|a| a.pts <= keyframe && keyframe < a.end)
            .map(|a| (a.pts, a.end));
        let base = match around {
            // The keyframe is in the first half of this audio frame: start on the frame.
            Some((pts, end)) if keyframe - pts <= end - keyframe => pts,
            // Otherwise on the keyframe; the audio starts with the next frame.
            _ => keyframe,
        };
        self.base = Some(base);
        let audio = std::mem::take(&mut self.held)
            .into_iter()
            .filter(|a| a.pts >= base)
            .map(|a| (a.pts - base, a.item))
            .collect();
        (keyframe - base, audio)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: Duration = Duration::from_nanos(21_333_333);

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// AAC frames `from..to` (by index), stamped from zero.
    fn feed(start: &mut OutputStart<u32>, from: u32, to: u32) -> Vec<(Duration, u32)> {
        (from..to)
            .flat_map(|i| start.audio(FRAME * i, Some(FRAME), i))
            .collect()
    }

    #[test]
    fn audio_that_came_before_the_keyframe_is_not_lost() {
        // The encoded keyframe at 1000 ms reaches the output after audio up to 1.3 s: the
        // old code dropped that audio and started the audio track 300 ms late.
        let mut start = OutputStart::default();
        assert!(feed(&mut start, 0, 61).is_empty());
        let (video, audio) = start.first_keyframe(ms(1000));
        // 1000 ms is in frame 46 (981.3 to 1002.7 ms), in its second half: start on the
        // keyframe, the audio with frame 47 (1002.7 ms).
        assert_eq!(video, Duration::ZERO);
        assert_eq!(audio.first().map(|a| a.1), Some(47));
        assert_eq!(audio[0].0, FRAME * 47 - ms(1000));
        assert_eq!(audio.len(), 61 - 47);
        assert_eq!(start.base(), Some(ms(1000)));
        // Later audio follows on the same base.
        assert_eq!(feed(&mut start, 61, 62), vec![(FRAME * 61 - ms(1000), 61)]);
    }

    #[test]
    fn a_keyframe_early_in_an_audio_frame_starts_on_that_frame() {
        let mut start = OutputStart::default();
        feed(&mut start, 0, 100);
        // 1990 ms is in frame 93 (1984 to 2005.3 ms), in its first half.
        let (video, audio) = start.first_keyframe(ms(1990));
        assert_eq!(start.base(), Some(FRAME * 93));
        assert_eq!(video, ms(1990) - FRAME * 93);
        assert!(video <= FRAME / 2);
        assert_eq!(audio.first(), Some(&(Duration::ZERO, 93)));
    }

    #[test]
    fn audio_behind_the_video_starts_when_it_comes() {
        let mut start = OutputStart::default();
        feed(&mut start, 0, 10);
        let (video, audio) = start.first_keyframe(ms(1000));
        assert_eq!(video, Duration::ZERO);
        assert!(audio.is_empty());
        assert!(
            feed(&mut start, 10, 46).is_empty(),
            "audio before the start"
        );
        assert_eq!(feed(&mut start, 47, 48), vec![(FRAME * 47 - ms(1000), 47)]);
    }

    #[test]
    fn held_audio_is_bounded() {
        let mut start = OutputStart::default();
        feed(&mut start, 0, 1000);
        let (_, audio) = start.first_keyframe(FRAME * 1000);
        assert!(audio.is_empty());
        assert!(start.held.is_empty());
        let mut start = OutputStart::default();
        feed(&mut start, 0, 1000);
        let kept = start.held.len() as u32;
        assert!((140..=142).contains(&kept), "{kept} frames held");
    }
}
