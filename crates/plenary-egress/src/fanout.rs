//! Hands the encoder's H.264 and AAC buffers to every output's own pipeline.
//!
//! Each output is a separate GStreamer pipeline fed by two appsrcs, so an output that fails
//! (a receiver refusing, a socket error, a full disk) stops only its own pipeline: nothing
//! travels back to the encoder, and it can be torn down and rebuilt at any time. Buffers
//! are shared, not copied. Per output, timestamps are rebased to start at zero at its first
//! keyframe, with the audio that came out of the encoder before that keyframe held so that
//! both tracks start together (`start`). A buffer the output cannot take (its queue is
//! full) is dropped and counted; after a dropped video buffer, video resumes at the next
//! keyframe.

use gstreamer as gst;
use gstreamer_app as gst_app;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::start::OutputStart;

/// Counters updated from GStreamer's streaming threads, read for status lines and metrics:
/// bytes and frames an output sent on (`output`), buffers it had to drop (here).
#[derive(Default, Debug)]
pub struct Counters {
    pub bytes: AtomicU64,
    pub video_frames: AtomicU64,
    pub dropped: AtomicU64,
}

/// What one output's pipeline is fed through.
pub struct Feed {
    pub id: usize,
    pub video: gst_app::AppSrc,
    pub audio: gst_app::AppSrc,
    pub counters: Arc<Counters>,
    /// Where this output's timeline starts (near its first keyframe), and its audio until
    /// then: encoded buffers with their caps.
    start: OutputStart<(gst::Buffer, Option<gst::Caps>)>,
    /// Video waits for a keyframe (at start, and after a dropped buffer).
    resync: bool,
}

impl Feed {
    pub fn new(
        id: usize,
        video: gst_app::AppSrc,
        audio: gst_app::AppSrc,
        counters: Arc<Counters>,
    ) -> Feed {
        Feed {
            id,
            video,
            audio,
            counters,
            start: OutputStart::default(),
            resync: true,
        }
    }
}

/// An output may hold this much encoded data unsent before its buffers are dropped.
const BACKLOG_BYTES: u64 = 2 * 1024 * 1024;

#[derive(Clone, Default)]
pub struct Fanout {
    feeds: Arc<Mutex<Vec<Feed>>>,
}

impl Fanout {
    fn feeds(&self) -> MutexGuard<'_, Vec<Feed>> {
        self.feeds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Installs the callbacks on the encoder's two appsinks.
    pub fn attach(&self, video_out: &gst_app::AppSink, audio_out: &gst_app::AppSink) {
        for (sink, video) in [(video_out, true), (audio_out, false)] {
            let me = self.clone();
            sink.set_callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |sink| {
                        if let Ok(sample) = sink.pull_sample() {
                            me.deliver(&sample, video);
                        }
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            );
        }
    }

    pub fn add(&self, feed: Feed) {
        self.feeds().push(feed);
    }

    /// Stops feeding output `id`; returns whether it was fed.
    pub fn remove(&self, id: usize) -> bool {
        let mut feeds = self.feeds();
        let before = feeds.len();
        feeds.retain(|f| f.id != id);
        feeds.len() != before
    }

    fn deliver(&self, sample: &gst::Sample, video: bool) {
        let Some(buffer) = sample.buffer_owned() else {
            return;
        };
        let caps = sample.caps_owned();
        let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
        // Compare the two streams in running time: encoders shift their timestamps (x264enc
        // by 1000 hours, so DTS never goes negative) and say so in the segment.
        let segment = sample
            .segment()
            .and_then(|s| s.downcast_ref::<gst::ClockTime>().cloned());
        let running = |t: Option<gst::ClockTime>| match &segment {
            Some(seg) => t.and_then(|t| seg.to_running_time(t)),
            None => t,
        };
        let Some(pts) = running(buffer.pts()).map(duration) else {
            return;
        };
        let dts = running(buffer.dts()).map(duration);
        for feed in self.feeds().iter_mut() {
            if !video {
                let length = buffer.duration().map(duration);
                let encoded = (buffer.clone(), caps.clone());
                for (out_pts, (b, c)) in feed.start.audio(pts, length, encoded) {
                    send(&feed.audio, &feed.counters, c, b, out_pts, Some(out_pts));
                }
                continue;
            }
            if feed.resync {
                if !keyframe {
                    continue;
                }
                feed.resync = false;
                if feed.start.base().is_none() {
                    let (at, audio) = feed.start.first_keyframe(pts);
                    tracing::debug!(
                        output = feed.id,
                        keyframe = ?pts,
                        video_starts_at = ?at,
                        audio_starts_at = ?audio.first().map(|a| a.0),
                        "output timeline starts"
                    );
                    for (out_pts, (b, c)) in audio {
                        send(&feed.audio, &feed.counters, c, b, out_pts, Some(out_pts));
                    }
                }
            }
            let Some(base) = feed.start.base() else {
                continue;
            };
            let Some(out_pts) = pts.checked_sub(base) else {
                continue;
            };
            let out_dts = dts.and_then(|d| d.checked_sub(base));
            let sent = send(
                &feed.video,
                &feed.counters,
                caps.clone(),
                buffer.clone(),
                out_pts,
                out_dts,
            );
            if !sent {
                // Video resumes at the next keyframe.
                feed.resync = true;
            }
        }
    }
}

fn duration(t: gst::ClockTime) -> Duration {
    Duration::from_nanos(t.nseconds())
}

fn clock_time(d: Duration) -> gst::ClockTime {
    gst::ClockTime::from_nseconds(d.as_nanos() as u64)
}

/// Pushes one encoded buffer into an output's appsrc with the output's stamps; false if
/// the output is too far behind and the buffer was dropped (counted).
fn send(
    src: &gst_app::AppSrc,
    counters: &Counters,
    caps: Option<gst::Caps>,
    buffer: gst::Buffer,
    pts: Duration,
    dts: Option<Duration>,
) -> bool {
    if src.current_level_bytes() > BACKLOG_BYTES {
        counters.dropped.fetch_add(1, Ordering::Relaxed);
        return false;
    }
    if src.caps() != caps {
        src.set_caps(caps.as_ref());
    }
    // Shared, not copied: only the metadata is new.
    let mut out = buffer.copy();
    if let Some(b) = out.get_mut() {
        b.set_pts(clock_time(pts));
        b.set_dts(dts.map(clock_time));
    }
    // A stopped output refuses buffers; its pipeline's bus tells the supervisor why.
    let _ = src.push_buffer(out);
    true
}
