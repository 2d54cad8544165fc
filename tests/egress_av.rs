//! The egress against publishers whose media is made here: str0m WHIP clients sending VP8
//! and Opus encoded by GStreamer from frames drawn in the test, both stamped from one clock.
//! - Lip sync: a white flash and a beep start at the same media time every 2 s; in the MP4
//!   each flash onset must have a beep onset within ±80 ms (ignored for now: not reliable).
//! - Speaker switches: two speakers take turns; the programme must switch with no gap.
//! - Glass-to-RTMP latency: printed as a figure, never asserted.

mod common;

use common::sfu::Sfu;
use common::{plenary_bin, require_peer, run_with_timeout};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::net::UdpSocket;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

/// One test at a time: each runs publishers, encoders and an egress on a 2-core machine, and
/// a starved CPU would make lateness that is not the egress's.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

const PERIOD_MS: u64 = 2000;
const MARK_MS: u64 = 120;
const FPS: u64 = 30;

/// What a publisher shows and says.
#[derive(Clone, Copy)]
enum Look {
    /// Black, with a white flash and a beep at the start of every period.
    BeepAndFlash,
    /// A flat grey of this luma, and a tone while `talks(ms)` (with RFC 6464 levels, so the
    /// SFU can tell who speaks).
    Speaker { luma: u8, talks: fn(u64) -> bool },
}

impl Look {
    fn luma(self, t_ms: u64) -> u8 {
        match self {
            Look::BeepAndFlash if t_ms % PERIOD_MS < MARK_MS => 235,
            Look::BeepAndFlash => 16,
            Look::Speaker { luma, .. } => luma,
        }
    }

    fn sounds(self, t_ms: u64) -> bool {
        match self {
            Look::BeepAndFlash => t_ms % PERIOD_MS < MARK_MS,
            Look::Speaker { talks, .. } => talks(t_ms),
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
}

impl Encoders {
    fn new() -> Encoders {
        gst::init().expect("gstreamer");
        let desc = "appsrc name=vin format=time \
              caps=video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
              ! vp8enc deadline=1 lag-in-frames=0 keyframe-max-dist=30 target-bitrate=500000 \
              ! appsink name=vout sync=false \
            appsrc name=ain format=time \
              caps=audio/x-raw,format=S16LE,rate=48000,channels=1,layout=interleaved \
              ! opusenc frame-size=20 bitrate=64000 ! appsink name=aout sync=false";
        let pipeline = gst::parse::launch(desc)
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
        let (w, h) = (320usize, 240usize);
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

/// Publishes `look` over WHIP until `stop`: frames made and sent in real time from the
/// moment the connection is up (media time 0, reported through `started` as wallclock), so
/// no backlog is sent in a burst.
fn publish(
    whip: String,
    look: Look,
    started: std::sync::mpsc::Sender<std::time::SystemTime>,
    stop: Arc<AtomicBool>,
) {
    let enc = Encoders::new();
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
        .expect("WHIP POST")
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
                let _ = started.send(std::time::SystemTime::now());
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
                let level = matches!(look, Look::Speaker { .. }).then_some(if talking {
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

/// ffmpeg, ffprobe and GStreamer's tools, which every test here reads back with (a missing
/// one fails under CI=true, in `require_peer`).
fn media_peers_present() -> bool {
    ["ffmpeg", "ffprobe", "gst-inspect-1.0"]
        .iter()
        .all(|p| require_peer(p).is_some())
}

/// Onsets (s) where a per-frame luma average crosses mid-grey upwards.
fn flash_onsets(path: &std::path::Path) -> Vec<f64> {
    let mut onsets = Vec::new();
    let mut was_bright = true;
    for (t, y) in luma_track(path) {
        let bright = y > 40.0;
        if bright && !was_bright {
            onsets.push(t);
        }
        was_bright = bright;
    }
    onsets
}

/// Onsets (s) of sound after at least 0.5 s of silence.
fn beep_onsets(path: &std::path::Path) -> Vec<f64> {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostats", "-i"])
        .arg(path)
        .args([
            "-vn",
            "-af",
            "silencedetect=noise=-30dB:d=0.5",
            "-f",
            "null",
            "-",
        ]);
    let (out, _) = run_with_timeout(cmd, Duration::from_secs(60));
    String::from_utf8_lossy(&out.stderr)
        .split("silence_end: ")
        .skip(1)
        .filter_map(|s| s.split_whitespace().next()?.parse().ok())
        .collect()
}

#[test]
#[ignore = "lip sync is not reliable yet: audio minus video measured from -93 to +34 ms \
            across runs (docs/decisions/0005-egress.md); run with --ignored"]
fn beep_and_flash_stay_within_80_ms() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !media_peers_present() {
        return;
    }
    let sfu = Sfu::start();
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (whip, stop) = (format!("{}/whip/lipsync", sfu.base()), stop.clone());
        let (started, _) = std::sync::mpsc::channel();
        std::thread::spawn(move || publish(whip, Look::BeepAndFlash, started, stop))
    };
    std::thread::sleep(Duration::from_secs(2));
    let dir = tempfile::tempdir().expect("tempdir");
    let mp4 = dir.path().join("av.mp4");
    let mut cmd = Command::new(plenary_bin());
    cmd.args(["egress", "--from", &format!("{}/whep/lipsync", sfu.base())])
        .arg("--record")
        .arg(&mp4)
        .args(["--duration", "20", "--status-every", "0"])
        .args(["--log-level", "info,plenary_egress::mixer=trace"]);
    let (out, timed_out) = run_with_timeout(cmd, Duration::from_secs(60));
    stop.store(true, Ordering::Relaxed);
    let _ = publisher.join();
    // Lip sync must have run on the SFU's sender reports, not on arrival times.
    let log = String::from_utf8_lossy(&out.stderr);
    let on_sender_clock = log.matches("sender clock").count();
    eprintln!("buffers stamped on the sender clock: {on_sender_clock}");
    assert!(
        !timed_out && out.status.success(),
        "egress: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let flashes = flash_onsets(&mp4);
    let beeps = beep_onsets(&mp4);
    assert!(
        on_sender_clock > 100,
        "no buffer was stamped from sender reports"
    );
    eprintln!("flashes {flashes:?}\nbeeps {beeps:?}");
    // After the first 4 s (the first keyframe and the mixers settling).
    let offsets: Vec<f64> = flashes
        .iter()
        .filter(|f| **f > 4.0)
        .filter_map(|f| {
            beeps
                .iter()
                .map(|b| b - f)
                .min_by(|x, y| x.abs().total_cmp(&y.abs()))
        })
        .collect();
    eprintln!(
        "audio minus video, ms: {:?}",
        offsets
            .iter()
            .map(|o| (o * 1000.0).round())
            .collect::<Vec<_>>()
    );
    assert!(offsets.len() >= 5, "too few flash/beep pairs: {offsets:?}");
    for o in &offsets {
        assert!(
            o.abs() <= 0.080,
            "audio {:.0} ms off the video: {offsets:?}",
            o * 1000.0
        );
    }
}

/// Luma of each decoded frame, with its time.
fn luma_track(path: &std::path::Path) -> Vec<(f64, f64)> {
    let graph = format!("movie={},signalstats", path.display());
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error", "-f", "lavfi", "-i", &graph])
        .args([
            "-show_entries",
            "frame=pts_time:frame_tags=lavfi.signalstats.YAVG",
            "-of",
            "csv=p=0",
        ]);
    let (out, _) = run_with_timeout(cmd, Duration::from_secs(60));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut it = l.split(',').filter_map(|v| v.trim().parse::<f64>().ok());
            Some((it.next()?, it.next()?))
        })
        .collect()
}

/// Two speakers take turns every 3 s (RFC 6464 levels): the programme follows them. The
/// broadcast must show at least three switches from one camera straight to the other, with
/// nothing else (black) for more than 200 ms between them, and no gap in its timestamps.
#[test]
fn speaker_switches_leave_no_gap() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !media_peers_present() {
        return;
    }
    const A: u8 = 80;
    const B: u8 = 200;
    let sfu = Sfu::start();
    let stop = Arc::new(AtomicBool::new(false));
    let publishers: Vec<_> = [
        Look::Speaker {
            luma: A,
            talks: |ms| (ms / 3000) % 2 == 0,
        },
        Look::Speaker {
            luma: B,
            talks: |ms| (ms / 3000) % 2 == 1,
        },
    ]
    .into_iter()
    .map(|look| {
        let (whip, stop) = (format!("{}/whip/turns", sfu.base()), stop.clone());
        let (started, _) = std::sync::mpsc::channel();
        std::thread::spawn(move || publish(whip, look, started, stop))
    })
    .collect();
    std::thread::sleep(Duration::from_secs(2));
    let dir = tempfile::tempdir().expect("tempdir");
    let mp4 = dir.path().join("turns.mp4");
    let mut cmd = Command::new(plenary_bin());
    cmd.args(["egress", "--from", &format!("{}/whep/turns", sfu.base())])
        .arg("--record")
        .arg(&mp4)
        .args(["--duration", "16", "--status-every", "0"]);
    let (out, timed_out) = run_with_timeout(cmd, Duration::from_secs(60));
    stop.store(true, Ordering::Relaxed);
    for p in publishers {
        let _ = p.join();
    }
    assert!(
        !timed_out && out.status.success(),
        "egress: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Who is on screen, frame by frame. The two greys come out of the conversions (publisher
    // encode, mixer, broadcast encode, signalstats) at other values than sent (about 64 and
    // 155 for 80 and 200), but still apart from each other and from the black filler (16).
    let who = |y: f64| match y {
        y if y < 40.0 => '-',
        y if y < 110.0 => 'A',
        _ => 'B',
    };
    let frames = luma_track(&mp4);
    let mut switches = Vec::new();
    let mut last: Option<(char, f64)> = None;
    for (t, y) in &frames {
        let w = who(*y);
        if w == '-' {
            continue;
        }
        if let Some((prev, at)) = last {
            if prev != w {
                switches.push((prev, w, *t - at));
            }
        }
        last = Some((w, *t));
    }
    let timeline: String = frames.iter().map(|(_, y)| who(*y)).collect();
    eprintln!("on screen, one character per frame: {timeline}");
    eprintln!("switches (from, to, seconds between the two cameras): {switches:?}");
    assert!(
        switches.len() >= 3,
        "fewer than three speaker switches: {switches:?}"
    );
    for (from, to, between) in &switches {
        assert!(
            *between <= 0.2 + 1e-6,
            "{from} to {to}: {:.0} ms without either camera",
            between * 1000.0
        );
    }
    let r = common::media::probe(&mp4);
    assert!(
        r.largest_video_gap() <= 0.2,
        "a gap of {:.3}s",
        r.largest_video_gap()
    );
    assert_eq!(r.non_monotonic(), None);
}

/// Glass-to-RTMP latency: from the moment a flash is made at the publisher to the moment
/// an RTMP receiver (ffmpeg, stamping packets with its wallclock on arrival) has it. A
/// figure, printed for docs/decisions/0005-egress.md; the test only checks that the flashes
/// arrive, never how fast (timings are no pass/fail criterion on a shared machine).
#[test]
fn glass_to_rtmp_latency_is_reported() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !media_peers_present() {
        return;
    }
    let sfu = Sfu::start();
    let stop = Arc::new(AtomicBool::new(false));
    let (started, media_zero) = std::sync::mpsc::channel();
    let publisher = {
        let (whip, stop) = (format!("{}/whip/latency", sfu.base()), stop.clone());
        std::thread::spawn(move || publish(whip, Look::BeepAndFlash, started, stop))
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let stats = dir.path().join("arrivals.txt");
    let port = common::free_port();
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-copyts"])
        .args(["-use_wallclock_as_timestamps", "1", "-listen", "1", "-i"])
        .arg(format!("rtmp://127.0.0.1:{port}/live/x"))
        .arg("-vf")
        .arg(format!(
            "signalstats,metadata=print:key=lavfi.signalstats.YAVG:file={}",
            stats.display()
        ))
        .args(["-f", "null", "-"]);
    let receiver = common::Guard::spawn(cmd, "ffmpeg rtmp receiver");
    std::thread::sleep(Duration::from_secs(1));
    let mut cmd = Command::new(plenary_bin());
    cmd.args(["egress", "--from", &format!("{}/whep/latency", sfu.base())])
        .arg("--to")
        .arg(format!("rtmp://127.0.0.1:{port}/live/x"))
        .args(["--duration", "20", "--status-every", "0"]);
    let (out, timed_out) = run_with_timeout(cmd, Duration::from_secs(60));
    stop.store(true, Ordering::Relaxed);
    let _ = publisher.join();
    std::thread::sleep(Duration::from_secs(1));
    drop(receiver);
    assert!(
        !timed_out && out.status.success(),
        "egress: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // "frame:N pts:P pts_time:T" then "lavfi.signalstats.YAVG=Y": T is the arrival wallclock.
    let text = std::fs::read_to_string(&stats).expect("receiver's frame log");
    let mut arrivals = Vec::new();
    let mut at = None;
    for line in text.lines() {
        if let Some(t) = line.split("pts_time:").nth(1) {
            at = t.trim().parse::<f64>().ok();
        } else if let Some(y) = line.strip_prefix("lavfi.signalstats.YAVG=") {
            if let (Some(t), Ok(y)) = (at, y.trim().parse::<f64>()) {
                arrivals.push((t, y > 100.0));
            }
        }
    }
    let origin = media_zero
        .recv_timeout(Duration::from_secs(1))
        .expect("the publisher connected")
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let period = PERIOD_MS as f64 / 1000.0;
    let mut latencies: Vec<f64> = arrivals
        .windows(2)
        .filter(|w| w[1].1 && !w[0].1)
        .map(|w| {
            // The flash made at the start of the period this arrival falls in (latency < 2 s).
            let since = w[1].0 - origin;
            since - (since / period).floor() * period
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    assert!(
        latencies.len() >= 5,
        "too few flashes reached the receiver: {latencies:?}"
    );
    eprintln!(
        "glass-to-RTMP latency over {} flashes: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        latencies.len(),
        pick(0.5) * 1000.0,
        pick(0.95) * 1000.0,
        pick(1.0) * 1000.0
    );
}
