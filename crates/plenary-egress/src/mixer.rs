//! The GStreamer core: the programme's video, the screen share and the loudest voices in,
//! one H.264 stream and one AAC stream out, on two appsinks that `fanout` hands to every
//! output's own pipeline.
//!
//! A live black video source and a live silent audio source feed the compositor and the
//! audio mixer as their bottom layer. Both mixers are live aggregators: they produce output
//! on the clock whether or not a WHEP input has data, so the broadcast's timeline is never
//! interrupted by a speaker switch, a screen share that starts or stops (only the pads'
//! boxes change, `layout`), an empty room or a WHEP source being pulled again.

use anyhow::{anyhow, Context};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::avprobe;
use crate::layout::{self, Layout, Rect, ScreenPresence};
use crate::reports::ReportFilter;
use crate::source::{Frame, VideoCodec, VideoRole};
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

/// How far an audio input's stamps may drift from the sample count before the Opus decoder
/// and the audio mixer follow them. Both default to "never" (the decoder) or 40 ms after 1 s
/// (the mixer): an audio stream then stays where its first buffer put it, while the video
/// follows every correction of the sender clock, and lip sync was off by up to 93 ms for a
/// whole run. The stamps are smooth (sender time plus a slowly changing offset), so a tight
/// tolerance does not make the audio jump on jitter.
const AUDIO_TOLERANCE: Duration = Duration::from_millis(20);
/// How long the audio mixer waits before following a drift larger than `AUDIO_TOLERANCE`.
const AUDIO_DISCONT_WAIT: Duration = Duration::from_millis(200);
/// The AAC encoder's delay: `avenc_aac` (libav's AAC encoder) starts with 1024 samples of
/// priming and stamps each packet with the time of its first input sample, so every sound
/// decodes 1024 samples (21.3 ms at 48 kHz) after its stamp. FLV and MPEG-TS have no way
/// to say so and the MP4 output writes no edit list: the packets are stamped that much
/// earlier instead (measured: the beep 21.3 ms later in the MP4 than out of the audio
/// mixer, docs/decisions/0005-egress.md).
const AAC_ENCODER_DELAY: Duration = Duration::from_nanos(1024 * 1_000_000_000 / 48_000);

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

/// The decode chain of one video m-line (the programme or the screen share), rebuilt when
/// its codec changes.
struct VideoInput {
    codec: VideoCodec,
    src: gst_app::AppSrc,
    elements: Vec<gst::Element>,
    mixer_pad: gst::Pad,
    timeline: Timeline,
    last: Option<Duration>,
    /// Frames are dropped until a keyframe, so the decoder never starts on a delta frame.
    synced: bool,
    /// Frames out of the decoder (counted on its streaming thread).
    decoded: Arc<AtomicU64>,
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
    /// Indexed by `VideoRole::index`.
    video: [Option<VideoInput>; 2],
    audio: Vec<Option<AudioInput>>,
    /// Lip sync once sender reports are in (stream 0: the speaker's video, 1 + k: audio
    /// slot k). The screen share is stamped on its arrival (`Timeline`) and waits for none.
    sender_clock: SenderClock,
    /// Sets aside sender reports made from a packet that reached the SFU late (same
    /// stream numbers as `sender_clock`).
    reports: ReportFilter,
    screen: ScreenPresence,
    /// Screen frames decoded when `tick` last looked.
    screen_seen: u64,
    layout: Layout,
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
             audiomixer name=amix latency={latency} alignment-threshold={align} \
               discont-wait={discont_wait} \
               ! audio/x-raw,rate=48000,channels=2 \
               ! avenc_aac bitrate={ab} \
               ! appsink name=aout sync=false async=false max-buffers=64 drop=true \
             audiotestsrc is-live=true wave=silence \
               ! audio/x-raw,rate=48000,channels=2 ! amix.",
            vk = format.video_kbps,
            ab = format.audio_kbps * 1000,
            align = AUDIO_TOLERANCE.as_nanos(),
            discont_wait = AUDIO_DISCONT_WAIT.as_nanos(),
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
        for (n, stage) in [("vmix", "video mixed"), ("amix", "audio mixed")] {
            if let Some(pad) = by_name(n)?.static_pad("src") {
                avprobe::watch(&pad, stage);
            }
        }
        let audio_out = appsink("aout")?;
        stamp_sound_not_priming(&audio_out)?;
        Ok(Mixer {
            video_out: appsink("vout")?,
            audio_out,
            compositor: by_name("vmix")?,
            audiomixer: by_name("amix")?,
            pipeline,
            format,
            video: [None, None],
            audio: (0..audio_slots).map(|_| None).collect(),
            sender_clock: SenderClock::default(),
            reports: ReportFilter::default(),
            screen: ScreenPresence::default(),
            screen_seen: 0,
            layout: Layout::Speaker,
        })
    }

    fn running_time(&self) -> Duration {
        self.pipeline
            .current_running_time()
            .map(|t| Duration::from_nanos(t.nseconds()))
            .unwrap_or_default()
    }

    /// Hands one frame from the WHEP source to its input. Returns the video m-line whose
    /// decoder waits for a keyframe (the source should ask the publisher for one).
    pub fn push(&mut self, frame: Frame) -> anyhow::Result<Option<VideoRole>> {
        let now = self.running_time();
        match frame {
            Frame::Video {
                role,
                codec,
                keyframe,
                media_us,
                sender_us,
                data,
            } => {
                let i = role.index();
                if self.video[i].as_ref().is_some_and(|v| v.codec != codec) {
                    tracing::info!(codec = codec.name(), ?role, "video changes codec");
                    self.drop_video(role);
                }
                if self.video[i].is_none() {
                    self.video[i] = Some(self.video_input(role, codec)?);
                }
                let Some(v) = self.video[i].as_mut() else {
                    return Ok(None);
                };
                if !v.synced && !keyframe {
                    return Ok(Some(role));
                }
                v.synced = true;
                let stamp = v.timeline.stamp(media_us, now);
                // The screen share keeps its arrival stamps: it waits for no other stream.
                let sender_us = sender_us
                    .filter(|_| role == VideoRole::Speaker)
                    .and_then(|us| self.reports.sender_us(0, media_us, us));
                let (pts, discont) = on_sender_clock(
                    &mut self.sender_clock,
                    0,
                    media_us,
                    sender_us,
                    now,
                    stamp,
                    &mut v.last,
                );
                // The compositor shows a picture from the output frame that contains its
                // stamp, up to a frame early: half a frame later, it is the nearest one.
                let half_frame = Duration::from_secs(1) / (2 * self.format.fps.max(1));
                let pts = pts + half_frame;
                push_buffer(&v.src, &data, pts, discont || keyframe, keyframe);
                Ok(None)
            }
            Frame::Audio {
                slot,
                media_us,
                sender_us,
                data,
            } => {
                if slot >= self.audio.len() {
                    return Ok(None);
                }
                if self.audio[slot].is_none() {
                    self.audio[slot] = Some(self.audio_input(slot)?);
                }
                if let Some(a) = self.audio[slot].as_mut() {
                    let stamp = a.timeline.stamp(media_us, now);
                    let sender_us =
                        sender_us.and_then(|us| self.reports.sender_us(1 + slot, media_us, us));
                    let (pts, discont) = on_sender_clock(
                        &mut self.sender_clock,
                        1 + slot,
                        media_us,
                        sender_us,
                        now,
                        stamp,
                        &mut a.last,
                    );
                    push_buffer(&a.src, &data, pts, discont, true);
                }
                Ok(None)
            }
        }
    }

    /// The WHEP source is lost: black until the next session's first keyframe (rather than
    /// its last picture frozen for seconds), silence as the voices stop. The next session
    /// may come from another node, whose sender reports start a new sender clock.
    pub fn source_lost(&mut self) {
        for role in VideoRole::ALL {
            self.drop_video(role);
        }
        self.sender_clock = SenderClock::default();
        self.reports = ReportFilter::default();
    }

    /// Follows the screen share: shows it while its frames are decoded, hides it when they
    /// stop. Returns the new layout when it changes.
    pub fn tick(&mut self, now: Instant) -> Option<Layout> {
        let decoded = self.video[VideoRole::Screen.index()]
            .as_ref()
            .map_or(0, |v| v.decoded.load(Ordering::Relaxed));
        if decoded != self.screen_seen {
            self.screen_seen = decoded;
            self.screen.frame(now);
        }
        let layout = self.screen.layout(now);
        if layout == self.layout {
            return None;
        }
        self.layout = layout;
        for role in VideoRole::ALL {
            self.place(role);
        }
        Some(layout)
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Puts the input's compositor pad where the current layout wants it.
    fn place(&self, role: VideoRole) {
        if let Some(v) = self.video[role.index()].as_ref() {
            let (rect, zorder) = self.box_of(role);
            set_box(&v.mixer_pad, rect, zorder);
        }
    }

    /// The box and stacking order of `role`'s picture in the current layout (the speaker's
    /// picture-in-picture above the screen).
    fn box_of(&self, role: VideoRole) -> (Option<Rect>, u32) {
        let placement = layout::place(self.layout, self.format.width, self.format.height);
        match role {
            VideoRole::Speaker => (Some(placement.speaker), 2),
            VideoRole::Screen => (placement.screen, 1),
        }
    }

    fn video_input(&self, role: VideoRole, codec: VideoCodec) -> anyhow::Result<VideoInput> {
        let caps = match codec {
            VideoCodec::Vp8 => gst::Caps::builder("video/x-vp8").build(),
            VideoCodec::Vp9 => gst::Caps::builder("video/x-vp9").build(),
            VideoCodec::H264 => gst::Caps::builder("video/x-h264")
                .field("stream-format", "byte-stream")
                .field("alignment", "au")
                .build(),
        };
        let name = match role {
            VideoRole::Speaker => "speaker",
            VideoRole::Screen => "screen",
        };
        let src = live_appsrc(&format!("{name}-{}", codec.name()), &caps)?;
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
        // Letterboxed into its box, above the black background.
        pad.set_property_from_str("sizing-policy", "keep-aspect-ratio");
        let (rect, zorder) = self.box_of(role);
        set_box(&pad, rect, zorder);
        let last = chain.last().ok_or_else(|| anyhow!("empty chain"))?;
        let out = last
            .static_pad("src")
            .ok_or_else(|| anyhow!("no src pad"))?;
        out.link(&pad)?;
        avprobe::watch(&out, "video in");
        let decoded = Arc::new(AtomicU64::new(0));
        let counter = decoded.clone();
        out.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            counter.fetch_add(1, Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        });
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
            decoded,
        })
    }

    fn drop_video(&mut self, role: VideoRole) {
        let Some(v) = self.video[role.index()].take() else {
            return;
        };
        if role == VideoRole::Screen {
            self.screen_seen = 0;
        }
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
        // Follow the stamps when they drift (see AUDIO_TOLERANCE), not the first one forever.
        decoder.set_property("tolerance", AUDIO_TOLERANCE.as_nanos() as i64);
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
        let apad = chain[3]
            .static_pad("src")
            .ok_or_else(|| anyhow!("no src pad"))?;
        avprobe::watch(&apad, "audio in");
        apad.link(&pad)?;
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

/// Moves the encoded audio's stamps back by the encoder's delay (`AAC_ENCODER_DELAY`), so
/// they are those of the sound the packets decode to. The first packet (priming only) gets
/// no stamp and is not sent.
fn stamp_sound_not_priming(audio_out: &gst_app::AppSink) -> anyhow::Result<()> {
    let pad = audio_out
        .static_pad("sink")
        .ok_or_else(|| anyhow!("the audio appsink has no sink pad"))?;
    let delay = gst::ClockTime::from_nseconds(AAC_ENCODER_DELAY.as_nanos() as u64);
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(buffer) = info.buffer_mut() {
            let b = buffer.make_mut();
            let pts = b.pts().and_then(|t| t.checked_sub(delay));
            let dts = b.dts().and_then(|t| t.checked_sub(delay));
            b.set_pts(pts);
            b.set_dts(dts);
        }
        gst::PadProbeReturn::Ok
    });
    Ok(())
}

/// Shows a compositor pad's picture fitted into `rect`, or hides it (`None`).
fn set_box(pad: &gst::Pad, rect: Option<Rect>, zorder: u32) {
    match rect {
        Some(r) => {
            pad.set_property("xpos", r.x);
            pad.set_property("ypos", r.y);
            pad.set_property("width", r.width);
            pad.set_property("height", r.height);
            pad.set_property("zorder", zorder);
            pad.set_property("alpha", 1.0f64);
        }
        None => pad.set_property("alpha", 0.0f64),
    }
}

/// The stamp to use: on the sender's clock once its reports are in (lip sync across
/// streams), else the stream's own arrival timeline. Never backwards within a stream.
fn on_sender_clock(
    clock: &mut SenderClock,
    stream: usize,
    media_us: u64,
    sender_us: Option<u64>,
    now: Duration,
    own: crate::timeline::Stamp,
    last: &mut Option<Duration>,
) -> (Duration, bool) {
    let (mut pts, mut discont) = match sender_us {
        Some(us) => {
            let pts = clock.stamp(stream, us, now);
            tracing::trace!(stream, media_us, sender_us = us, ?now, ?pts, own = ?own.pts, "sender clock");
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
    // Left unset, a live appsrc answers the latency query with a maximum of 0 (GStreamer
    // 1.22), below the live test sources' minimum of one buffer: the mixers' latency is
    // then invalid, and they fall back to waiting for data on every pad instead of timing
    // out on the clock. Any input that stops (a screen share ending, a speaker leaving)
    // then stalls the whole broadcast. Unbounded: our stamps leave the mixers their latency.
    src.set_latency(gst::ClockTime::ZERO, gst::ClockTime::NONE);
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
