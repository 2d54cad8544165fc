//! A WHIP publisher for the egress tests: a str0m client sending VP8 and Opus encoded by
//! GStreamer (`vp8enc`, `opusenc`) from frames and samples made here, both stamped from one
//! clock (media time 0 when the connection is up). Included by `#[path]` from the egress
//! tests only, so the other test binaries do not link GStreamer; each uses part of it.
#![allow(dead_code)]

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

pub const PERIOD_MS: u64 = 2000;
pub const MARK_MS: u64 = 120;
pub const FPS: u64 = 30;

/// What a publisher shows and says.
#[derive(Clone, Copy)]
pub enum Look {
    /// Black, with a white flash and a beep at the start of every period.
    BeepAndFlash,
    /// A flat grey of this luma, and a tone while `talks(ms)` (with RFC 6464 levels, so the
    /// SFU can tell who speaks).
    Speaker { luma: u8, talks: fn(u64) -> bool },
    /// Like `Speaker`, but a bright grey whose luma sweeps from 170 to 230 and back every
    /// 2 s, two steps a frame: a picture frozen downstream shows as values that stop moving.
    Sweep { talks: fn(u64) -> bool },
}

impl Look {
    fn luma(self, t_ms: u64) -> u8 {
        match self {
            Look::BeepAndFlash if t_ms % PERIOD_MS < MARK_MS => 235,
            Look::BeepAndFlash => 16,
            Look::Speaker { luma, .. } => luma,
            Look::Sweep { .. } => {
                let phase = (t_ms % 2000) * 120 / 2000;
                170 + phase.min(120 - phase) as u8
            }
        }
    }

    pub fn sounds(self, t_ms: u64) -> bool {
        match self {
            Look::BeepAndFlash => t_ms % PERIOD_MS < MARK_MS,
            Look::Speaker { talks, .. } | Look::Sweep { talks } => talks(t_ms),
        }
    }
}

/// VP8 and Opus encoders fed with frames made here, drained synchronously.
struct Encoders {
    pipeline: gst::Pipeline,
    video_in: gst_app::AppSrc,
    video_out: gst_app::AppSink,
    audio_in: gst_app::AppSrc,
    audio_out: gst_app::AppSink,
    size: (usize, usize),
}

impl Encoders {
    fn new(size: (usize, usize)) -> Encoders {
        gst::init().expect("gstreamer");
        let (w, h) = size;
        let desc = format!(
            "appsrc name=vin format=time \
              caps=video/x-raw,format=I420,width={w},height={h},framerate={FPS}/1 \
              ! vp8enc deadline=1 lag-in-frames=0 keyframe-max-dist=30 target-bitrate=500000 \
              ! appsink name=vout sync=false \
            appsrc name=ain format=time \
              caps=audio/x-raw,format=S16LE,rate=48000,channels=1,layout=interleaved \
              ! opusenc frame-size=20 bitrate=64000 ! appsink name=aout sync=false"
        );
        let pipeline = gst::parse::launch(&desc)
            .expect("encoder pipeline")
            .downcast::<gst::Pipeline>()
            .expect("a pipeline");
        let get = |n: &str| pipeline.by_name(n).expect("element");
        let enc = Encoders {
            video_in: get("vin").downcast().expect("appsrc"),
            video_out: get("vout").downcast().expect("appsink"),
            audio_in: get("ain").downcast().expect("appsrc"),
            audio_out: get("aout").downcast().expect("appsink"),
            pipeline,
            size,
        };
        enc.pipeline
            .set_state(gst::State::Playing)
            .expect("encoders start");
        enc
    }

    /// Video frame `i`.
    fn video(&self, look: Look, i: u64) {
        let t_ms = i * 1000 / FPS;
        let luma = look.luma(t_ms);
        let (w, h) = self.size;
        let mut data = vec![luma; w * h];
        data.extend(std::iter::repeat_n(128u8, w * h / 2));
        let mut buf = gst::Buffer::from_mut_slice(data);
        if let Some(b) = buf.get_mut() {
            b.set_pts(gst::ClockTime::from_mseconds(t_ms));
            b.set_duration(gst::ClockTime::from_nseconds(1_000_000_000 / FPS));
        }
        self.video_in.push_buffer(buf).expect("video in");
    }

    /// 20 ms audio chunk `i`: a 1 kHz tone while the look sounds, else silence.
    fn audio(&self, look: Look, i: u64) {
        let mut data = Vec::with_capacity(960 * 2);
        for s in 0..960u64 {
            let n = i * 960 + s;
            let t_ms = n / 48;
            let v = if look.sounds(t_ms) {
                let phase = (n % 48) as f64 / 48.0 * std::f64::consts::TAU;
                (phase.sin() * 16000.0) as i16
            } else {
                0
            };
            data.extend_from_slice(&v.to_le_bytes());
        }
        let mut buf = gst::Buffer::from_mut_slice(data);
        if let Some(b) = buf.get_mut() {
            b.set_pts(gst::ClockTime::from_mseconds(i * 20));
            b.set_duration(gst::ClockTime::from_mseconds(20));
        }
        self.audio_in.push_buffer(buf).expect("audio in");
    }
}

/// Encoded buffers ready now, with their PTS in µs. Drained on every turn of the loop, so a
/// frame leaves as soon as it is encoded.
fn drain(sink: &gst_app::AppSink) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::ZERO) {
        let Some(buf) = sample.buffer() else { continue };
        let Ok(map) = buf.map_readable() else {
            continue;
        };
        let pts = buf.pts().map(|p| p.useconds()).unwrap_or(0);
        out.push((pts, map.as_slice().to_vec()));
    }
    out
}

/// A publisher running on its own thread until dropped (or `stop`).
pub struct Publisher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The wallclock of media time 0, sent once the connection is up.
    pub started: std::sync::mpsc::Receiver<SystemTime>,
}

impl Publisher {
    /// Publishes `look` at `size` (width, height) to the WHIP endpoint `whip` (a URL with
    /// `?source=screen` publishes a screen share).
    pub fn start(whip: String, look: Look, size: (usize, usize)) -> Publisher {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, started) = std::sync::mpsc::channel();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || publish(whip, look, size, tx, flag));
        Publisher {
            stop,
            thread: Some(thread),
            started,
        }
    }

    /// Stops sending at once (no WHIP DELETE: the media just stops, as when a browser
    /// tab closes).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Publishes `look` over WHIP until `stop`: frames made and sent in real time from the
/// moment the connection is up (media time 0, reported through `started` as wallclock), so
/// no backlog is sent in a burst.
pub fn publish(
    whip: String,
    look: Look,
    size: (usize, usize),
    started: std::sync::mpsc::Sender<SystemTime>,
    stop: Arc<AtomicBool>,
) {
    let enc = Encoders::new(size);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let local = sock.local_addr().expect("addr");
    let mut rtc = RtcConfig::new()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").expect("candidate"));
    let mut api = rtc.sdp_api();
    let amid = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let vmid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, pending) = api.apply().expect("offer");
    let answer = ureq::post(&whip)
        .set("Content-Type", "application/sdp")
        .send_string(&offer.to_sdp_string())
        .unwrap_or_else(|e| panic!("WHIP POST {whip}: {e}"))
        .into_string()
        .expect("answer");
    let answer = SdpAnswer::from_sdp_string(&answer).expect("answer parses");
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .expect("answer accepted");
    let (mut v, mut a) = (0u64, 0u64);
    let mut start: Option<Instant> = None;
    let mut buf = vec![0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    let _ = sock.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(Event::Connected)) => {}
                Ok(_) => {}
                Err(e) => panic!("publisher: {e}"),
            }
        };
        let now = Instant::now();
        if rtc.is_connected() {
            let start = *start.get_or_insert_with(|| {
                let _ = started.send(SystemTime::now());
                now
            });
            let elapsed = now.duration_since(start).as_millis() as u64;
            while v * 1000 / FPS <= elapsed {
                enc.video(look, v);
                v += 1;
            }
            while a * 20 <= elapsed {
                enc.audio(look, a);
                a += 1;
            }
            for (pts, data) in drain(&enc.video_out) {
                send(&mut rtc, vmid, Codec::Vp8, start, pts, None, data);
            }
            for (pts, data) in drain(&enc.audio_out) {
                let talking = look.sounds(pts / 1000);
                let level = (!matches!(look, Look::BeepAndFlash)).then_some(if talking {
                    -20
                } else {
                    -127
                });
                send(&mut rtc, amid, Codec::Opus, start, pts, level, data);
            }
        }
        let wait = timeout
            .saturating_duration_since(now)
            .clamp(Duration::from_micros(100), Duration::from_millis(5));
        sock.set_read_timeout(Some(wait)).expect("timeout");
        match sock.recv_from(&mut buf) {
            Ok((n, src)) => {
                if let Ok(r) = Receive::new(Protocol::Udp, src, local, &buf[..n]) {
                    let _ = rtc.handle_input(Input::Receive(Instant::now(), r));
                }
            }
            Err(_) => {
                let _ = rtc.handle_input(Input::Timeout(Instant::now()));
            }
        }
    }
    let _ = enc.pipeline.set_state(gst::State::Null);
}

/// Both media take their RTP time and wallclock from the same PTS: they are in sync here.
/// `level`: the RFC 6464 audio level to send, if any (0 loudest, -127 silence).
fn send(
    rtc: &mut Rtc,
    mid: Mid,
    codec: Codec,
    start: Instant,
    pts_us: u64,
    level: Option<i8>,
    data: Vec<u8>,
) {
    let Some(mut writer) = rtc.writer(mid) else {
        return;
    };
    let rate = if codec == Codec::Opus { 48_000 } else { 90_000 };
    if let Some(level) = level {
        writer = writer.audio_level(level, level > -127);
    }
    let Some(pt) = writer
        .payload_params()
        .find(|p| p.spec().codec == codec)
        .map(|p| p.pt())
    else {
        return;
    };
    let rtp =
        MediaTime::from_micros(pts_us).rebase(str0m::media::Frequency::new(rate).expect("rate"));
    let _ = writer.write(pt, start + Duration::from_micros(pts_us), rtp, data);
}
