//! The broadcast's layout, sans-IO: where the speaker's camera and the screen share go in
//! the output frame, and when the screen share counts as live.
//!
//! - Nobody shares: the speaker fills the frame (letterboxed to its aspect ratio).
//! - Someone shares: the screen fills the frame (letterboxed) and the speaker is a
//!   picture-in-picture, a quarter of the width, in the bottom-right corner with a margin.
//!
//! The screen is live from its first decoded frame until none has been decoded for
//! `SCREEN_HOLD`. A browser sends a static screen at about one frame a second (Chrome
//! repeats the last frame every second while the picture does not change), so a shorter
//! hold would flip the layout back and forth on a slide that stays up.

use std::time::Instant;

/// How long the screen stays up after its last decoded frame.
pub const SCREEN_HOLD: std::time::Duration = std::time::Duration::from_millis(2000);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// The speaker's camera fills the frame.
    Speaker,
    /// The screen share fills the frame, the speaker is a picture-in-picture.
    ScreenWithSpeaker,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::Speaker => "speaker",
            Layout::ScreenWithSpeaker => "screen+speaker",
        }
    }
}

/// A box in the output frame, in pixels; the picture is fitted inside, keeping its aspect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rect {
    pub x: i32,
    pub y: i32,
    pub width: i32,
    pub height: i32,
}

/// Where each picture goes. `screen: None` hides the screen share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub speaker: Rect,
    pub screen: Option<Rect>,
}

/// The picture-in-picture is this fraction of the frame's width and height.
const PIP_DIVISOR: i32 = 4;
/// Its margin to the frame's edges, as a fraction of the frame's height (24 px at 720p).
const MARGIN_DIVISOR: i32 = 30;

/// The boxes of `layout` in a `width` x `height` frame.
pub fn place(layout: Layout, width: u32, height: u32) -> Placement {
    let (w, h) = (width as i32, height as i32);
    let full = Rect {
        x: 0,
        y: 0,
        width: w,
        height: h,
    };
    match layout {
        Layout::Speaker => Placement {
            speaker: full,
            screen: None,
        },
        Layout::ScreenWithSpeaker => {
            // Even sizes and offsets: I420 chroma is subsampled by two.
            let even = |v: i32| v & !1;
            let (pw, ph) = (even(w / PIP_DIVISOR), even(h / PIP_DIVISOR));
            let margin = even(h / MARGIN_DIVISOR);
            Placement {
                speaker: Rect {
                    x: w - pw - margin,
                    y: h - ph - margin,
                    width: pw,
                    height: ph,
                },
                screen: Some(full),
            }
        }
    }
}

/// Whether the screen share is live, from the moments its frames were decoded.
#[derive(Clone, Debug, Default)]
pub struct ScreenPresence {
    last_frame: Option<Instant>,
}

impl ScreenPresence {
    /// A screen frame was decoded at `at`.
    pub fn frame(&mut self, at: Instant) {
        self.last_frame = Some(at);
    }

    pub fn layout(&self, now: Instant) -> Layout {
        match self.last_frame {
            Some(t) if now.saturating_duration_since(t) <= SCREEN_HOLD => Layout::ScreenWithSpeaker,
            _ => Layout::Speaker,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_speaker_fills_the_frame_when_nobody_shares() {
        let p = place(Layout::Speaker, 1280, 720);
        assert_eq!(
            p,
            Placement {
                speaker: Rect {
                    x: 0,
                    y: 0,
                    width: 1280,
                    height: 720
                },
                screen: None
            }
        );
    }

    #[test]
    fn a_screen_fills_the_frame_and_the_speaker_sits_bottom_right() {
        let p = place(Layout::ScreenWithSpeaker, 1280, 720);
        assert_eq!(
            p.screen,
            Some(Rect {
                x: 0,
                y: 0,
                width: 1280,
                height: 720
            })
        );
        assert_eq!(
            p.speaker,
            Rect {
                x: 936,
                y: 516,
                width: 320,
                height: 180
            }
        );
        // Other sizes: inside the frame, even, a quarter of the width.
        for (w, h) in [(1920, 1080), (640, 360), (854, 480), (16, 16)] {
            let s = place(Layout::ScreenWithSpeaker, w, h).speaker;
            assert!(s.x >= 0 && s.y >= 0, "{w}x{h}: {s:?}");
            assert!(s.x + s.width <= w as i32 && s.y + s.height <= h as i32);
            assert_eq!((s.x % 2, s.y % 2, s.width % 2, s.height % 2), (0, 0, 0, 0));
            assert!((s.width - w as i32 / 4).abs() <= 1, "{w}x{h}: {s:?}");
        }
    }

    #[test]
    fn the_screen_is_live_from_its_first_frame_until_it_pauses_for_the_hold() {
        let t0 = Instant::now();
        let mut p = ScreenPresence::default();
        assert_eq!(p.layout(t0), Layout::Speaker);
        p.frame(t0);
        assert_eq!(p.layout(t0), Layout::ScreenWithSpeaker);
        // A static slide: one frame a second keeps it up.
        for s in 1..10 {
            p.frame(t0 + Duration::from_secs(s));
            assert_eq!(
                p.layout(t0 + Duration::from_secs(s) + Duration::from_millis(999)),
                Layout::ScreenWithSpeaker
            );
        }
        let last = t0 + Duration::from_secs(9);
        assert_eq!(p.layout(last + SCREEN_HOLD), Layout::ScreenWithSpeaker);
        assert_eq!(
            p.layout(last + SCREEN_HOLD + Duration::from_millis(1)),
            Layout::Speaker
        );
    }
}
