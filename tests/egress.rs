//! `plenary egress` (the built binary) against the SFU in-process on 127.0.0.1, with real
//! receivers: ffmpeg as an RTMP server, srt-live-transmit as an SRT listener, HLS and MP4
//! files read back with ffprobe. Publishers: Chromium with a fake camera and microphone, or
//! nobody (the broadcast then carries black and silence, and must still be continuous).

mod common;

use common::media::{max_volume, probe, saturation, MediaReport};
use common::sfu::{browser, poll, Sfu};
use common::webdriver::require_browser;
use common::{free_port, plenary_bin, require_peer, run_with_timeout, Guard};
use serde_json::json;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One egress test at a time: each encodes 720p30 on a 2-core machine.
static SERIAL: Mutex<()> = Mutex::new(());

fn require_media_peers() -> bool {
    ["ffmpeg", "ffprobe", "srt-live-transmit", "gst-inspect-1.0"]
        .iter()
        .all(|p| require_peer(p).is_some())
}

/// Runs `plenary egress ARGS --duration SECS`; returns its output and the wall time it took.
fn egress(args: &[String], secs: u32) -> (Output, Duration) {
    let mut cmd = Command::new(plenary_bin());
    cmd.arg("egress")
        .args(args)
        .args(["--duration", &secs.to_string(), "--status-every", "2"]);
    let started = Instant::now();
    let (out, timed_out) = run_with_timeout(cmd, Duration::from_secs(u64::from(secs) + 40));
    let took = started.elapsed();
    eprintln!("egress stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        !timed_out,
        "egress {args:?} did not stop after --duration {secs}"
    );
    (out, took)
}

/// `ffmpeg -listen 1` receiving RTMP into an FLV file, as a WebTV's ingest would.
fn rtmp_receiver(port: u16, out: &Path) -> Guard {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error"])
        // A short probe, and every packet written as it arrives: a receiver killed
        // mid-stream leaves a readable file of what it got.
        .args(["-analyzeduration", "1000000", "-listen", "1", "-i"])
        .arg(format!("rtmp://127.0.0.1:{port}/live/x"))
        .args(["-c", "copy", "-flush_packets", "1", "-y"])
        .arg(out)
        .stdout(Stdio::null());
    let g = Guard::spawn(cmd, "ffmpeg rtmp receiver");
    wait_listening(port);
    g
}

/// Waits until something listens on 127.0.0.1:`port`, without connecting: `ffmpeg -listen 1`
/// serves exactly one connection, so a probing connect would use it up.
fn wait_listening(port: u16) {
    let until = Instant::now() + Duration::from_secs(10);
    let needle = format!(":{port:04X} ");
    loop {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        // Columns: sl local_address rem_address st ...; 0A is LISTEN.
        let listening = table.lines().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() > 3 && format!("{} ", cols[1]).ends_with(&needle) && cols[3] == "0A"
        });
        if listening {
            return;
        }
        assert!(
            Instant::now() < until,
            "RTMP receiver never listened on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for a receiver to finish its file after the sender closed (bounded), else kills it.
fn finish(mut g: Guard, limit: Duration) {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if let Ok(Some(_)) = g.child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    unsafe { libc::kill(g.pid() as i32, libc::SIGINT) };
    std::thread::sleep(Duration::from_millis(500));
}

/// The broadcast format every receiver must see.
fn assert_broadcast(what: &str, r: &MediaReport, wall: f64) {
    eprintln!(
        "{what}: codecs {:?} sizes {:?} frames {} duration {:.2}s (wall {wall:.2}s) largest video gap {:.3}s",
        r.codecs,
        r.sizes,
        r.video_frames,
        r.duration,
        r.largest_video_gap()
    );
    assert_eq!(r.codecs, ["aac", "h264"], "{what}: codecs");
    assert_eq!(r.sizes, [(1280, 720)], "{what}: frame sizes");
    assert!(
        r.video_frames > 0 && !r.audio_dts.is_empty(),
        "{what}: empty"
    );
    assert_eq!(r.non_monotonic(), None, "{what}: timestamps go back");
    let off = (r.duration - wall).abs() / wall;
    assert!(
        off <= 0.05,
        "{what}: duration {:.2}s vs wall {wall:.2}s",
        r.duration
    );
}

/// The SFU's own whip.html in Chromium publishes the fake camera and microphone into `room`.
const WHIP_READY: &str = r#"
const done = arguments[arguments.length - 1];
const w = window.whip;
const page = { state: w && w.state, error: w && w.error };
if (!w || !w.pc) { done(page); return; }
Plenary.outboundStats(w.pc).then((out) => {
  const video = out.filter((s) => s.kind === 'video' && s.bytesSent > 0);
  done(Object.assign(page, { ok: w.state === 'publishing' && video.length > 0 }));
}, (e) => done(Object.assign(page, { statsError: String(e) })));
"#;

const STOP: &str = r#"
const done = arguments[arguments.length - 1];
stop().then(() => done(window.whip.lastDelete), (e) => done(String(e)));
"#;

/// Chromium publishes; the egress pushes to RTMP and SRT and writes HLS and MP4 at once.
/// Halfway, the publisher leaves (the room empties) and comes back: every output must stay
/// one continuous 1280x720 H.264 + AAC stream as long as the egress ran, and carry the
/// publisher's picture and sound, not only the black and silent filler.
#[test]
fn chromium_to_rtmp_srt_hls_and_mp4() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_media_peers() {
        return;
    }
    let Some(chromedriver) = require_browser() else {
        return;
    };
    let sfu = Sfu::start();
    let driver = browser(&chromedriver);
    let room = "egress-tv";
    let whip = format!("{0}/whip.html?sfu={0}&room={room}&autostart=1", sfu.base());
    driver.navigate(&whip);
    poll(&driver, WHIP_READY, &json!([]), Duration::from_secs(20))
        .unwrap_or_else(|last| panic!("publisher did not start: {last:#}"));

    let dir = tempfile::tempdir().expect("tempdir");
    let flv = dir.path().join("rtmp.flv");
    let ts = dir.path().join("srt.ts");
    let hls = dir.path().join("hls");
    let mp4 = dir.path().join("rec.mp4");
    let rtmp_port = free_port();
    let srt_port = free_port();
    let rtmp = rtmp_receiver(rtmp_port, &flv);
    let srt = {
        let mut cmd = Command::new("srt-live-transmit");
        cmd.args(["-q", "-a:no"])
            .arg(format!("srt://127.0.0.1:{srt_port}?mode=listener"))
            .arg("file://con")
            .stdout(std::fs::File::create(&ts).expect("srt output file"));
        Guard::spawn(cmd, "srt-live-transmit")
    };
    std::thread::sleep(Duration::from_millis(300));

    let secs = 20;
    let args: Vec<String> = vec![
        "--from".into(),
        format!("{}/whep/{room}", sfu.base()),
        "--to".into(),
        format!("rtmp://127.0.0.1:{rtmp_port}/live/x"),
        "--to".into(),
        format!("srt://127.0.0.1:{srt_port}?streamid=egress-test"),
        "--hls".into(),
        hls.display().to_string(),
        "--record".into(),
        mp4.display().to_string(),
    ];
    let run = std::thread::spawn(move || egress(&args, secs));
    // The room empties at ~7 s and fills again at ~10 s.
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(
        driver.execute_async(STOP, json!([])),
        json!(204),
        "WHIP DELETE"
    );
    std::thread::sleep(Duration::from_secs(3));
    driver.navigate(&whip);
    poll(&driver, WHIP_READY, &json!([]), Duration::from_secs(20))
        .unwrap_or_else(|last| panic!("publisher did not come back: {last:#}"));
    let (out, _took) = run.join().expect("egress thread");
    assert_eq!(out.status.code(), Some(0), "egress exit code");
    finish(rtmp, Duration::from_secs(10));
    finish(srt, Duration::from_secs(2));

    let wall = f64::from(secs);
    for (what, path) in [
        ("rtmp", flv.clone()),
        ("srt", ts),
        ("hls", hls.join("index.m3u8")),
        ("mp4", mp4.clone()),
    ] {
        let r = probe(&path);
        assert_broadcast(what, &r, wall);
        assert!(
            r.largest_video_gap() <= 0.2,
            "{what}: a gap of {:.3}s in the video",
            r.largest_video_gap()
        );
    }
    // The publisher's picture (not the black filler) at the end, after it came back.
    let colour = saturation(&mp4, wall - 4.0);
    let green = colour.iter().filter(|c| **c > 20.0).count();
    eprintln!(
        "mp4 last 4 s: {green} of {} frames show the camera",
        colour.len()
    );
    assert!(
        !colour.is_empty() && green * 10 >= colour.len() * 8,
        "the programme video is missing at the end: saturation {colour:?}"
    );
    let loudest = max_volume(&flv);
    eprintln!("rtmp audio max volume {loudest} dBFS");
    assert!(
        loudest > -40.0,
        "the publisher's audio is missing: {loudest} dBFS"
    );
}

/// No publisher: an RTMP receiver that nobody listens on, one that dies mid-stream and comes
/// back, and HLS. The dead one is retried with backoff; the restarted one gets the stream
/// again; HLS never notices.
#[test]
fn outputs_stand_alone_and_reconnect() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_media_peers() {
        return;
    }
    let sfu = Sfu::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let hls = dir.path().join("hls");
    let (first, second) = (dir.path().join("first.flv"), dir.path().join("second.flv"));
    let nobody = free_port();
    let port = free_port();
    let receiver = rtmp_receiver(port, &first);
    let secs = 16;
    let metrics_port = free_port();
    let args: Vec<String> = vec![
        "--metrics".into(),
        format!("127.0.0.1:{metrics_port}"),
        "--from".into(),
        format!("{}/whep/empty-room", sfu.base()),
        "--to".into(),
        format!("rtmp://127.0.0.1:{nobody}/live/unreachable"),
        "--to".into(),
        format!("rtmp://127.0.0.1:{port}/live/x"),
        "--hls".into(),
        hls.display().to_string(),
    ];
    let run = std::thread::spawn(move || egress(&args, secs));
    std::thread::sleep(Duration::from_secs(5));
    // Prometheus: the HLS output is up, the unreachable one is not and has been retried.
    let metrics = ureq::get(&format!("http://127.0.0.1:{metrics_port}/metrics"))
        .timeout(Duration::from_secs(5))
        .call()
        .expect("scrape /metrics")
        .into_string()
        .expect("metrics text");
    let sample = |name: &str, output: &str| -> Option<f64> {
        metrics.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = rest.rsplit_once(' ')?;
            labels.contains(output).then(|| value.parse().ok())?
        })
    };
    let dead = format!("rtmp://127.0.0.1:{nobody}/live/****");
    assert_eq!(
        sample("plenary_egress_output_up{", "hls:"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample("plenary_egress_output_up{", &dead),
        Some(0.0),
        "{metrics}"
    );
    assert!(
        sample("plenary_egress_output_reconnects_total{", &dead).is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    assert_eq!(
        sample("plenary_egress_source_up", ""),
        Some(1.0),
        "{metrics}"
    );
    std::thread::sleep(Duration::from_secs(1));
    // The receiver crashes (SIGKILL); a new one listens on the same port 1 s later.
    drop(receiver);
    std::thread::sleep(Duration::from_secs(1));
    let receiver = rtmp_receiver(port, &second);
    let (out, _) = run.join().expect("egress thread");
    finish(receiver, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(0), "egress exit code");
    let log = String::from_utf8_lossy(&out.stderr);
    let unreachable = format!("rtmp://127.0.0.1:{nobody}/live/****");
    assert!(
        log.lines()
            .any(|l| l.contains(&unreachable) && l.contains("retrying")),
        "no clear line about the unreachable receiver"
    );
    assert!(
        !log.contains("unreachable"),
        "the stream key leaked into the log"
    );
    let hls = probe(&hls.join("index.m3u8"));
    assert_broadcast("hls", &hls, f64::from(secs));
    assert!(
        hls.largest_video_gap() <= 0.2,
        "hls gap {:.3}",
        hls.largest_video_gap()
    );
    let before = probe(&first);
    assert_eq!(before.codecs, ["aac", "h264"]);
    assert!(
        before.duration > 3.0,
        "the first receiver got {:.1}s",
        before.duration
    );
    let again = probe(&second);
    eprintln!(
        "second receiver: {again:?}",
        again = (again.codecs.clone(), again.duration)
    );
    assert_eq!(again.codecs, ["aac", "h264"]);
    assert!(
        again.duration > 4.0,
        "the restarted receiver got {:.1}s",
        again.duration
    );
}

fn run_egress_expecting(args: &[&str], code: i32, needle: &str) -> String {
    let mut cmd = Command::new(plenary_bin());
    cmd.arg("egress").args(args);
    let (out, timed_out) = run_with_timeout(cmd, Duration::from_secs(40));
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!timed_out, "egress {args:?} hung: {log}");
    assert_eq!(out.status.code(), Some(code), "egress {args:?}: {log}");
    assert!(
        log.contains(needle),
        "egress {args:?}: no {needle:?} in {log}"
    );
    log
}

/// Garbage URLs stop at once with exit 2; a WHEP endpoint answering 404 is retried while the
/// outputs go on; a refused token stops with exit 3.
#[test]
fn bad_input_is_explained() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_media_peers() {
        return;
    }
    run_egress_expecting(
        &["--from", "http://127.0.0.1:9/whep/r", "--to", "garbage"],
        2,
        "\"garbage\" is not a URL",
    );
    run_egress_expecting(
        &["--from", "nowhere", "--hls", "/nonexistent/x"],
        2,
        "is not an http:// WHEP URL",
    );
    run_egress_expecting(
        &["--from", "http://127.0.0.1:9/whep/r"],
        2,
        "at least one --to",
    );

    let sfu = Sfu::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let hls = dir.path().join("hls");
    let wrong = format!("{}/whepx/room", sfu.base());
    let hls_arg = hls.display().to_string();
    run_egress_expecting(
        &["--from", &wrong, "--hls", &hls_arg, "--duration", "6"],
        0,
        "answered 404",
    );
    let r = probe(&hls.join("index.m3u8"));
    assert_broadcast("hls while WHEP answers 404", &r, 6.0);
    drop(sfu);

    let secret = "egress-test-secret-0123456789";
    let sfu = Sfu::start_with(|c| c.room_token_secrets = vec![secret.to_owned()]);
    let from = format!("{}/whep/guarded", sfu.base());
    let hls_arg = dir.path().join("hls2").display().to_string();
    run_egress_expecting(
        &["--from", &from, "--hls", &hls_arg, "--duration", "20"],
        3,
        "401",
    );
}

/// The SFU goes away mid-run and a new one comes up on the same address: the egress notices
/// within seconds, pulls the room again, and HLS runs on without a gap.
#[test]
fn whep_source_that_disappears_is_pulled_again() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_media_peers() {
        return;
    }
    let http: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let sfu = Sfu::start_with(|c| c.http = http);
    let dir = tempfile::tempdir().expect("tempdir");
    let hls = dir.path().join("hls");
    let secs = 24;
    let args: Vec<String> = vec![
        "--from".into(),
        format!("http://{http}/whep/comeback"),
        "--hls".into(),
        hls.display().to_string(),
    ];
    let run = std::thread::spawn(move || egress(&args, secs));
    std::thread::sleep(Duration::from_secs(4));
    drop(sfu);
    std::thread::sleep(Duration::from_secs(2));
    let _again = Sfu::start_with(|c| c.http = http);
    let (out, _) = run.join().expect("egress thread");
    assert_eq!(out.status.code(), Some(0), "egress exit code");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("WHEP source lost"),
        "the loss was not reported"
    );
    assert_eq!(
        log.matches("WHEP source connected").count(),
        2,
        "expected a first and a second WHEP session"
    );
    let r = probe(&hls.join("index.m3u8"));
    assert_broadcast("hls across a lost source", &r, f64::from(secs));
    assert!(
        r.largest_video_gap() <= 0.2,
        "hls gap {:.3}",
        r.largest_video_gap()
    );
}
