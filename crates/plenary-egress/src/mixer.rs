//! The GStreamer core: the programme's video and the loudest voices in, one H.264 stream and
//! one AAC stream out, on two appsinks that `fanout` hands to every output's own pipeline.
//!
//! A live black video source and a live silent audio source feed the compositor and the
//! audio mixer as their bottom layer. Both mixers are live aggregators: they produce output
//! on the clock whether or not a WHEP input has data, so the broadcast's timeline is never
//! interrupted by a speaker switch, an empty room or a WHEP source being pulled again.

use anyhow::{anyhow, Context};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::time::Duration;

use crate::source::{Frame, VideoCodec};
use crate::timeline::{SenderClock, Timeline};

/// The broadcast's fixed format.
#[derive(Clone, Copy, Debug)]
pub struct Format {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub keyframe_secs: u32,
    pub video_kbps: u32,
    pub audio_kbps: u32,
}

/// How late a WHEP input's data may be before the mixers go on without it.
const MIX_LATENCY: Duration = Duration::from_millis(200);
/// A stamp this far behind its arrival re-anchors the stream (see `timeline`): well inside
/// MIX_LATENCY, or the mixers would drop the buffers as late.
const MAX_LATE: Duration = Duration::from_millis(100);
/// A stamp this far ahead of its arrival re-anchors the stream. Kept wide: each stream is
/// anchored on its own arrivals, and audio and video anchored at the same moment (the join)
/// stay in sync; re-anchoring each on its own earliest arrival measured audio 100 ms ahead
/// of video (docs/decisions/0005-egress.md). The price is up to this much added latency.
const MAX_EARLY: Duration = Duration::from_millis(500);

/// GStreamer elements the egress cannot run without, and the Debian package holding each.
pub const REQUIRED: &[(&str, &str)] = &[
    ("appsrc", "gstreamer1.0-plugins-base"),
    ("compositor", "gstreamer1.0-plugins-base"),
    ("audiomixer", "gstreamer1.0-plugins-base"),
    ("opusdec", "gstreamer1.0-plugins-base"),
    ("vp8dec", "gstreamer1.0-plugins-good"),
    ("vp9dec", "gstreamer1.0-plugins-good"),
    ("avdec_h264", "gstreamer1.0-libav"),
    ("x264enc", "gstreamer1.0-plugins-ugly"),
    ("avenc_aac", "gstreamer1.0-libav"),
    ("h264parse", "gstreamer1.0-plugins-bad"),
    ("aacparse", "gstreamer1.0-plugins-good"),
    ("flvmux", "gstreamer1.0-plugins-good"),
    ("rtmp2sink", "gstreamer1.0-plugins-bad"),
    ("mpegtsmux", "gstreamer1.0-plugins-bad"),
    ("srtsink", "gstreamer1.0-plugins-bad"),
    ("hlssink2", "gstreamer1.0-plugins-good"),
    ("mp4mux", "gstreamer1.0-plugins-good"),
];

/// Names the missing elements, with the package to install.
pub fn missing_elements() -> Vec<String> {
    REQUIRED
        .iter()
        .filter(|(name, _)| gst::ElementFactory::find(name).is_none())
        .map(|(name, pkg)| format!("{name} (apt-get install {pkg})"))
        .collect()
}

/// The decode chain of the programme video, rebuilt when the speaker's codec changes.
struct VideoInput {
    codec: VideoCodec,
    src: gst_app::AppSrc,
    elements: Vec<gst::Element>,
    mixer_pad: gst::Pad,
    timeline: Timeline,
    last: Option<Duration>,
    /// Frames are dropped until a keyframe, so the decoder never starts on a delta frame.
    synced: bool,
}

struct AudioInput {
    src: gst_app::AppSrc,
    timeline: Timeline,
    last: Option<Duration>,
}

pub struct Mixer {
    pub pipeline: gst::Pipeline,
    pub video_out: gst_app::AppSink,
    pub audio_out: gst_app::AppSink,
    compositor: gst::Element,
    audiomixer: gst::Element,
    format: Format,
    video: Option<VideoInput>,
    audio: Vec<Option<AudioInput>>,
    /// Lip sync once sender reports are in (stream 0: video, 1 + k: audio slot k).
    sender_clock: SenderClock,
}

impl Mixer {
    pub fn new(format: Format, audio_slots: usize) -> anyhow::Result<Mixer> {
        let Format {
            width: w,
            height: h,
            fps,
            ..
        } = format;
        let latency = MIX_LATENCY.as_nanos();
        let keyint = fps * format.keyframe_secs.max(1);
        let desc = format!(
            "compositor name=vmix background=black latency={latency} \
               ! video/x-raw,width={w},height={h},framerate={fps}/1,format=I420 \
               ! queue max-size-buffers=4 max-size-bytes=0 max-size-time=0 \
               ! x264enc speed-preset=veryfast tune=zerolatency bitrate={vk} \
                 key-int-max={keyint} option-string=scenecut=0 \
               ! video/x-h264,stream-format=byte-stream,alignment=au,profile=high \
               ! appsink name=vout sync=false async=false max-buffers=64 drop=true \
             videotestsrc is-live=true pattern=black \
               ! video/x-raw,width={w},height={h},framerate={fps}/1 ! vmix. \
             audiomixer name=amix latency={latency} \
               ! audio/x-raw,rate=48000,channels=2 \
               ! avenc_aac bitrate={ab} \
               ! appsink name=aout sync=false async=false max-buffers=64 drop=true \
             audiotestsrc is-live=true wave=silence \
               ! audio/x-raw,rate=48000,channels=2 ! amix.",
            vk = format.video_kbps,
            ab = format.audio_kbps * 1000,
        );
        let pipeline = gst::parse::launch(&desc)
            .context("building the mixer pipeline")?
            .downcast::<gst::Pipeline>()
            .map_err(|_| anyhow!("the mixer description did not make a pipeline"))?;
        let by_name = |n: &str| {
            pipeline
                .by_name(n)
                .ok_or_else(|| anyhow!("mixer element {n} missing"))
        };
        let appsink = |n: &str| {
            by_name(n)?
                .downcast::<gst_app::AppSink>()
                .map_err(|_| anyhow!("{n} is not an appsink"))
        };
        Ok(Mixer {
            video_out: appsink("vout")?,
            audio_out: appsink("aout")?,
            compositor: by_name("vmix")?,
            audiomixer: by_name("amix")?,
            pipeline,
            format,
            video: None,
            audio: (0..audio_slots).map(|_| None).collect(),
            sender_clock: SenderClock::default(),
        })
    }

    fn running_time(&self) -> Duration {
        self.pipeline
            .current_running_time()
            .map(|t| Duration::from_nanos(t.nseconds()))
            .unwrap_or_default()
    }

    /// Hands one frame from the WHEP source to its input. Returns true when the video
    /// decoder waits for a keyframe (the source should ask the publisher for one).
    pub fn push(&mut self, frame: Frame) -> anyhow::Result<bool> {
        let now = self.running_time();
        match frame {
            Frame::Video {
                codec,
                keyframe,
                media_us,
                sender_us,
                data,
            } => {
                if self.video.as_ref().is_some_and(|v| v.codec != codec) {
                    tracing::info!(codec = codec.name(), "programme video changes codec");
                    self.drop_video();
                }
                if self.video.is_none() {
                    self.video = Some(self.video_input(codec)?);
                }
                let Some(v) = self.video.as_mut() else {
                    return Ok(false);
                };
                if !v.synced && !keyframe {
                    return Ok(true);
                }
                v.synced = true;
                let stamp = v.timeline.stamp(media_us, now);
                let (pts, discont) = on_sender_clock(
                    &mut self.sender_clock,
                    0,
                    sender_us,
                    now,
                    stamp,
                    &mut v.last,
                );
                push_buffer(&v.src, &data, pts, discont || keyframe, keyframe);
                Ok(false)
            }
            Frame::Audio {
                slot,
                media_us,
                sender_us,
                data,
            } => {
                if slot >= self.audio.len() {
                    return Ok(false);
                }
                if self.audio[slot].is_none() {
                    self.audio[slot] = Some(self.audio_input(slot)?);
                }
                if let Some(a) = self.audio[slot].as_mut() {
                    let stamp = a.timeline.stamp(media_us, now);
                    let (pts, discont) = on_sender_clock(
                        &mut self.sender_clock,
                        1 + slot,
                        sender_us,
                        now,
                        stamp,
                        &mut a.last,
                    );
                    push_buffer(&a.src, &data, pts, discont, true);
                }
                Ok(false)
            }
        }
    }

    /// After the WHEP source was pulled again: the next video must start on a keyframe.
    pub fn resync(&mut self) {
        if let Some(v) = self.video.as_mut() {
            v.synced = false;
        }
    }

    fn video_input(&self, codec: VideoCodec) -> anyhow::Result<VideoInput> {
        let caps = match codec {
            VideoCodec::Vp8 => gst::Caps::builder("video/x-vp8").build(),
            VideoCodec::Vp9 => gst::Caps::builder("video/x-vp9").build(),
            VideoCodec::H264 => gst::Caps::builder("video/x-h264")
                .field("stream-format", "byte-stream")
                .field("alignment", "au")
                .build(),
        };
        let src = live_appsrc(&format!("video-{}", codec.name()), &caps)?;
        let mut chain: Vec<gst::Element> = vec![src.clone().upcast()];
        if codec == VideoCodec::H264 {
            chain.push(make("h264parse")?);
        }
        let decoder = make(match codec {
            VideoCodec::Vp8 => "vp8dec",
            VideoCodec::Vp9 => "vp9dec",
            VideoCodec::H264 => "avdec_h264",
        })?;
        // A corrupt frame is concealed, never fatal: the stream goes on at the next keyframe.
        decoder.set_property("max-errors", -1i32);
        chain.push(decoder);
        chain.push(make("videoconvert")?);
        let refs: Vec<&gst::Element> = chain.iter().collect();
        self.pipeline.add_many(refs.iter().copied())?;
        gst::Element::link_many(refs.iter().copied())?;
        let pad = self
            .compositor
            .request_pad_simple("sink_%u")
            .ok_or_else(|| anyhow!("compositor gave no sink pad"))?;
        // Letterboxed to the full frame, above the black background.
        pad.set_property("zorder", 1u32);
        pad.set_property("width", self.format.width as i32);
        pad.set_property("height", self.format.height as i32);
        pad.set_property_from_str("sizing-policy", "keep-aspect-ratio");
        let last = chain.last().ok_or_else(|| anyhow!("empty chain"))?;
        last.static_pad("src")
            .ok_or_else(|| anyhow!("no src pad"))?
            .link(&pad)?;
        for e in &chain {
            e.sync_state_with_parent()?;
        }
        Ok(VideoInput {
            codec,
            src,
            elements: chain,
            mixer_pad: pad,
            timeline: Timeline::new(MAX_LATE, MAX_EARLY),
            last: None,
            synced: false,
        })
    }

    fn drop_video(&mut self) {
        let Some(v) = self.video.take() else {
            return;
        };
        let _ = v.src.end_of_stream();
        for e in &v.elements {
            let _ = e.set_state(gst::State::Null);
        }
        for e in &v.elements {
            let _ = self.pipeline.remove(e);
        }
        self.compositor.release_request_pad(&v.mixer_pad);
    }

    fn audio_input(&self, slot: usize) -> anyhow::Result<AudioInput> {
        let caps = gst::Caps::builder("audio/x-opus")
            .field("channel-mapping-family", 0i32)
            .field("rate", 48000i32)
            .field("channels", 2i32)
            .build();
        let src = live_appsrc(&format!("audio-{slot}"), &caps)?;
        let decoder = make("opusdec")?;
        // Packet loss concealment rather than clicks.
        decoder.set_property("plc", true);
        let chain = [
            src.clone().upcast(),
            decoder,
            make("audioconvert")?,
            make("audioresample")?,
        ];
        self.pipeline.add_many(&chain)?;
        gst::Element::link_many(&chain)?;
        let pad = self
            .audiomixer
            .request_pad_simple("sink_%u")
            .ok_or_else(|| anyhow!("audiomixer gave no sink pad"))?;
        chain[3]
            .static_pad("src")
            .ok_or_else(|| anyhow!("no src pad"))?
            .link(&pad)?;
        for e in &chain {
            e.sync_state_with_parent()?;
        }
        Ok(AudioInput {
            src,
            timeline: Timeline::new(MAX_LATE, MAX_EARLY),
            last: None,
        })
    }

    /// Asks the encoder for a keyframe with SPS/PPS now (a new output starts on it).
    pub fn force_keyframe(&self) {
        let request = gst::Structure::builder("GstForceKeyUnit")
            .field("all-headers", true)
            .build();
        if let Some(pad) = self.video_out.static_pad("sink") {
            pad.push_event(gst::event::CustomUpstream::new(request));
        }
    }

    pub fn stop(&self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// The stamp to use: on the sender's clock once its reports are in (lip sync across
/// streams), else the stream's own arrival timeline. Never backwards within a stream.
fn on_sender_clock(
    clock: &mut SenderClock,
    stream: usize,
    sender_us: Option<u64>,
    now: Duration,
    own: crate::timeline::Stamp,
    last: &mut Option<Duration>,
) -> (Duration, bool) {
    let (mut pts, mut discont) = match sender_us {
        Some(us) => {
            let pts = clock.stamp(stream, us, now);
            tracing::trace!(stream, sender_us = us, ?now, ?pts, own = ?own.pts, "sender clock");
            (pts, false)
        }
        None => (own.pts, own.discont),
    };
    if let Some(l) = *last {
        if pts <= l {
            pts = l + Duration::from_millis(1);
        }
        // A step of more than a second: not continuous, whatever its cause.
        discont |= pts - l > Duration::from_secs(1);
    }
    *last = Some(pts);
    (pts, discont)
}

pub fn make(factory: &str) -> anyhow::Result<gst::Element> {
    gst::ElementFactory::make(factory)
        .build()
        .with_context(|| format!("GStreamer element {factory}"))
}

fn live_appsrc(name: &str, caps: &gst::Caps) -> anyhow::Result<gst_app::AppSrc> {
    let src = gst_app::AppSrc::builder()
        .name(name)
        .caps(caps)
        .is_live(true)
        .format(gst::Format::Time)
        .do_timestamp(false)
        .max_bytes(4 * 1024 * 1024)
        .build();
    // A stalled pipeline drops the oldest frames instead of growing without bound.
    src.set_property_from_str("leaky-type", "downstream");
    src.set_property("block", false);
    Ok(src)
}

fn push_buffer(src: &gst_app::AppSrc, data: &[u8], pts: Duration, discont: bool, sync: bool) {
    let mut buffer = gst::Buffer::from_slice(data.to_vec());
    if let Some(b) = buffer.get_mut() {
        b.set_pts(gst::ClockTime::from_nseconds(pts.as_nanos() as u64));
        let mut flags = gst::BufferFlags::empty();
        if discont {
            flags |= gst::BufferFlags::DISCONT;
        }
        if !sync {
            flags |= gst::BufferFlags::DELTA_UNIT;
        }
        b.set_flags(flags);
    }
    let _ = src.push_buffer(buffer);
}
