//! The probe's figures against a real browser's: at light load, what `plenary probe sfu`
//! reports for its own viewers must agree with what Chromium's getStats says for a viewer of
//! the same room over the same seconds.
//!
//! The SFU runs in-process on 127.0.0.1. Chromium plays the room with whep.html; then the
//! probe (the `plenary` binary) runs a one-step webinar into that room: one presenter over
//! WHIP and two viewers over WHEP. Chromium's inbound-rtp stats are sampled at the probe's
//! progress lines, so its window is the probe's measured step (to within a WebDriver call),
//! and each probe viewer's audio and video track (tracks.ndjson) is compared with it: loss,
//! jitter, packet rate, payload bitrate and frame rate.

mod common;

use common::sfu::{browser, poll, Sfu};
use common::webdriver::{require_browser, Driver};
use common::{plenary_bin, Guard};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The scenario's rooms are `{ROOM_PREFIX}-0`, ...; one presenter means one room.
const ROOM_PREFIX: &str = "agree";
const VIEWERS: u32 = 2;
const WARMUP_S: u64 = 3;
const HOLD_S: u64 = 10;
/// Joins, warm-up, the measured step, teardown and the report, with room to spare.
const PROBE_LIMIT: Duration = Duration::from_secs(45);
const CONNECT: Duration = Duration::from_secs(20);

// Tolerances. Chromium and the probe's viewers get the same packets from the same SFU over
// loopback, so counts differ only by what is counted; timing can differ a little.
/// Loss is ~0 for both; one point is the requirement's bound.
const LOSS_PP: f64 = 1.0;
/// Jitter, ms, audio then video. Chromium's was higher in every trial. Audio by 0.1-0.4 ms
/// (1.2 when the machine stalled): its estimate runs on RTP timestamps, so the publisher's
/// send lag counts, which the probe's send stamps leave out on purpose. Video by 0.5-2.6
/// ms, and still 1-2 ms with the probe's estimate run on RTP timestamps and frame starts as
/// libwebrtc does, so most likely the delivery differs: the SFU paces each subscriber's
/// keyframe bursts by that subscriber's bandwidth estimate. A unit slip or a broken
/// estimator is far outside these.
const JITTER_MS: [f64; 2] = [2.0, 4.0];
/// Packet, byte and frame rates agreed within 0.5% in trials: the windows differ by a
/// WebDriver call (tens of ms of 10 s) and a keyframe at an edge is ~1.3% of the packets.
/// 5% leaves room for a slow call on a busy machine and still catches a miscounted frame or
/// packet class (Chromium's unasked retransmissions alone were 1.5-4% of its video packets).
const RATE_PCT: f64 = 5.0;

/// webinar.toml with one camera layer (each viewer's simulcast layer would follow its own
/// bandwidth estimate, so Chromium and a probe viewer could get different streams) and a
/// presenter who talks throughout (in pauses the SFU stops forwarding the quiet audio, so
/// the audio rate would depend on where the window falls).
fn scenario(dir: &Path) -> std::path::PathBuf {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("loadtest/webinar.toml");
    let mut text = std::fs::read_to_string(&base).expect("read loadtest/webinar.toml");
    for (from, to) in [
        ("name = \"webinar\"", "name = \"probe-vs-chromium\""),
        ("simulcast = true", "simulcast = false"),
        ("talk_s = [2.0, 8.0]", "talk_s = [600.0, 600.0]"),
        (
            "room_prefix = \"webinar\"",
            &format!("room_prefix = \"{ROOM_PREFIX}\""),
        ),
    ] {
        assert_eq!(
            text.matches(from).count(),
            1,
            "loadtest/webinar.toml changed: `{from}` is not there once; update this test"
        );
        text = text.replace(from, to);
    }
    let path = dir.join("probe-vs-chromium.toml");
    std::fs::write(&path, text).expect("write scenario");
    path
}

/// whep.html's inbound-rtp stats, one object per kind; `ok` once playing with audio packets
/// and assembled video frames.
const STATS: &str = r#"
const done = arguments[arguments.length - 1];
const w = window.whep;
const page = { state: w && w.state, error: w && w.error,
  status: document.getElementById('status').textContent };
if (!w || !w.pc) { done(page); return; }
w.pc.getStats().then((report) => {
  const streams = { audio: 0, video: 0 };
  report.forEach((s) => {
    if (s.type !== 'inbound-rtp' || !(s.kind in streams)) return;
    streams[s.kind] += 1;
    page[s.kind] = { ssrc: s.ssrc, timestamp: s.timestamp,
      packetsReceived: s.packetsReceived || 0, packetsLost: s.packetsLost || 0,
      jitter: s.jitter || 0, bytesReceived: s.bytesReceived || 0,
      retransmittedPacketsReceived: s.retransmittedPacketsReceived || 0,
      retransmittedBytesReceived: s.retransmittedBytesReceived || 0,
      framesReceived: s.framesReceived || 0, framesDecoded: s.framesDecoded || 0,
      nackCount: s.nackCount || 0, pliCount: s.pliCount || 0 };
  });
  page.streams = streams;
  page.ok = w.state === 'playing' && !!page.audio && page.audio.packetsReceived > 0
    && !!page.video && page.video.framesReceived > 0;
  done(page);
}, (e) => done(Object.assign(page, { statsError: String(e) })));
"#;

/// Records getStats' jitter ten times a second in the page (`window.jitterLog`): the
/// estimate moves with every frame, so a few samples would be a noisy mean.
const JITTER_LOG: &str = r#"
window.jitterLog = [];
setInterval(() => {
  const pc = window.whep.pc;
  if (!pc) return;
  pc.getStats().then((report) => {
    const e = {};
    report.forEach((s) => {
      if (s.type === 'inbound-rtp') { e[s.kind] = s.jitter; e.t = s.timestamp; }
    });
    window.jitterLog.push(e);
  });
}, 100);
return true;
"#;

/// The mean of the page's jitter samples of `kind` between two getStats timestamps, s.
fn mean_jitter(log: &Value, kind: &str, from: f64, to: f64) -> f64 {
    let samples: Vec<f64> = log
        .as_array()
        .expect("jitter log")
        .iter()
        .filter(|e| e["t"].as_f64().is_some_and(|t| t >= from && t <= to))
        .filter_map(|e| e[kind].as_f64())
        .collect();
    assert!(
        samples.len() >= 20,
        "too few {kind} jitter samples between {from} and {to}: {samples:?}"
    );
    samples.iter().sum::<f64>() / samples.len() as f64
}

fn stats(driver: &Driver) -> Value {
    driver.execute_async(STATS, json!([]))
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number `{key}` in {v}"))
}

/// Chromium's figures for one kind between two samples.
#[derive(Debug)]
struct Chromium {
    seconds: f64,
    packets: f64,
    pps: f64,
    loss_pct: f64,
    jitter_ms: f64,
    fps: f64,
    kbps: f64,
    retransmitted: f64,
    nacks: f64,
    plis: f64,
    frames_decoded: f64,
}

fn chromium_window(kind: &str, start: &Value, end: &Value, log: &Value) -> Chromium {
    let (a, b) = (&start[kind], &end[kind]);
    assert_eq!(
        a["ssrc"], b["ssrc"],
        "Chromium's {kind} stream changed during the window: {a} then {b}"
    );
    let d = |k: &str| num(b, k) - num(a, k);
    let seconds = d("timestamp") / 1000.0;
    assert!(seconds > 1.0, "window of {seconds} s: {a} then {b}");
    // packetsReceived counts retransmissions too, and Chromium gets some it never asked
    // for (0 NACKs in trials; likely the SFU's bandwidth probing). The probe counts each
    // sequence number once, so compare that.
    let retransmitted = d("retransmittedPacketsReceived");
    let (packets, lost) = (d("packetsReceived") - retransmitted, d("packetsLost"));
    Chromium {
        seconds,
        packets,
        retransmitted,
        nacks: d("nackCount"),
        plis: d("pliCount"),
        pps: packets / seconds,
        loss_pct: if packets + lost > 0.0 {
            lost.max(0.0) * 100.0 / (packets + lost)
        } else {
            0.0
        },
        // getStats gives seconds, the probe ms; the probe's is the mean of its estimate
        // over the step.
        jitter_ms: mean_jitter(log, kind, num(a, "timestamp"), num(b, "timestamp")) * 1000.0,
        fps: d("framesReceived") / seconds,
        kbps: (d("bytesReceived") - d("retransmittedBytesReceived")) * 8.0 / 1000.0 / seconds,
        frames_decoded: d("framesDecoded"),
    }
}

/// `|a - b|` as a % of `b`.
fn off_pct(a: f64, b: f64) -> f64 {
    (a - b).abs() * 100.0 / b.abs().max(1e-9)
}

#[test]
fn probe_figures_agree_with_chromium_get_stats() {
    let Some(chromedriver) = require_browser() else {
        return;
    };
    let sfu = Sfu::start();
    let room = format!("{ROOM_PREFIX}-0");
    let driver = browser(&chromedriver);
    // Chromium plays the room before anyone publishes, so it sees the stream the probe's
    // viewers see from its first keyframe.
    driver.navigate(&format!(
        "{base}/whep.html?sfu={base}&room={room}&autoplay=1",
        base = sfu.base()
    ));
    let connected = poll(
        &driver,
        r#"const done = arguments[arguments.length - 1];
           const w = window.whep;
           done({ ok: !!w && w.state === 'playing', state: w && w.state, error: w && w.error,
                  status: document.getElementById('status').textContent });"#,
        &json!([]),
        CONNECT,
    );
    if let Err(last) = connected {
        panic!(
            "Chromium did not connect to room {room} within {CONNECT:?}: {last:#}\nconsole: {:#?}",
            driver.browser_log()
        );
    }
    driver.execute(JITTER_LOG, json!([]));

    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("report");
    let mut cmd = Command::new(plenary_bin());
    cmd.arg("probe").arg("sfu");
    cmd.arg("--target").arg(sfu.base());
    cmd.arg("--scenario").arg(scenario(dir.path()));
    cmd.arg("--ramp")
        .arg(format!("{VIEWERS}:1:{VIEWERS}"))
        .arg("--warmup")
        .arg(WARMUP_S.to_string())
        .arg("--hold")
        .arg(HOLD_S.to_string())
        .arg("--report")
        .arg(&report);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut probe = Guard::spawn(cmd, "plenary probe sfu");
    let stderr = probe.child.stderr.take().expect("probe stderr");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    // The measured step starts right after the last warm-up line and ends just before the
    // step's verdict line.
    let deadline = Instant::now() + PROBE_LIMIT;
    let mut log = Vec::new();
    let (mut last_warmup, mut start, mut end) = (None, None, None);
    while end.is_none() {
        let wait = deadline.saturating_duration_since(Instant::now());
        let line = match lines.recv_timeout(wait) {
            Ok(line) => line,
            Err(e) => panic!(
                "probe's measured step did not end within {PROBE_LIMIT:?} ({e}); its output:\n{}",
                log.join("\n")
            ),
        };
        eprintln!("probe: {line}");
        log.push(line.clone());
        if line.contains("] step 1 warmup") {
            last_warmup = Some(stats(&driver));
        } else if line.contains("] step 1 measure") {
            if start.is_none() {
                start = Some(last_warmup.take().unwrap_or_else(|| {
                    panic!(
                        "probe measured without a warm-up line first:\n{}",
                        log.join("\n")
                    )
                }));
            }
        } else if line.starts_with("[repeat 1] step 1: ") {
            end = Some(stats(&driver));
        }
    }
    let (start, end) = (start.expect("start sample"), end.expect("end sample"));
    for s in [&start, &end] {
        assert_eq!(s["ok"], json!(true), "Chromium is not receiving: {s:#}");
        assert_eq!(
            s["streams"],
            json!({ "audio": 1, "video": 1 }),
            "one stream per kind expected: {s:#}"
        );
    }
    // The probe now tears down and writes its report.
    let finished = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = probe.child.try_wait().expect("wait for the probe") {
            break status;
        }
        assert!(
            Instant::now() < finished,
            "probe did not exit after its step"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    while let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
        eprintln!("probe: {line}");
        log.push(line);
    }
    let text = std::fs::read_to_string(report.join("report.json")).unwrap_or_else(|e| {
        panic!(
            "no report.json ({e}); probe exited {status}:\n{}",
            log.join("\n")
        )
    });
    let r: Value = serde_json::from_str(&text).expect("report.json is JSON");
    assert_eq!(
        r["valid"],
        json!(true),
        "the probe ruled its own run invalid (exit {status}): {}",
        r["summary"]
    );
    assert_eq!(
        r["steps"][0]["joins"]["succeeded"],
        json!(VIEWERS + 1),
        "presenter and viewers joined: {}",
        r["steps"][0]["joins"]
    );

    let jitter_log = driver.execute("return window.jitterLog;", json!([]));
    let audio = chromium_window("audio", &start, &end, &jitter_log);
    let video = chromium_window("video", &start, &end, &jitter_log);
    eprintln!("chromium audio: {audio:?}");
    eprintln!("chromium video: {video:?}");
    // Not vacuous: Chromium got a talking microphone (50 packets/s) and a 30 fps camera.
    assert!(
        audio.packets >= 30.0 * audio.seconds && video.fps >= 20.0 && video.packets > 100.0,
        "Chromium received too little to compare: audio {audio:?} video {video:?}"
    );

    let tracks = std::fs::read_to_string(report.join("tracks.ndjson")).expect("tracks.ndjson");
    let mut compared = [0u32, 0];
    for line in tracks.lines() {
        let row: Value = serde_json::from_str(line).expect("one JSON object per line");
        let t = &row["track"];
        let kind = t["kind"].as_str().expect("track kind");
        let seconds = num(t, "seconds");
        let probe_pps = num(t, "packets") / seconds;
        let probe_kbps = num(t, "bytes") * 8.0 / 1000.0 / seconds;
        let probe_jitter = t["jitter_ms"]
            .as_f64()
            .unwrap_or_else(|| panic!("no jitter for {t}"));
        let b = if kind == "video" { &video } else { &audio };
        eprintln!(
            "viewer {} {kind}: probe {probe_pps:.1} pkt/s, {probe_kbps:.0} kbit/s, loss {:.2}%, \
             jitter {probe_jitter:.2} ms, {:.2} fps over {seconds:.2} s | chromium {:.1} pkt/s, \
             {:.0} kbit/s, loss {:.2}%, jitter {:.2} ms, {:.2} fps over {:.2} s",
            row["participant"],
            num(t, "loss_pct"),
            num(t, "fps"),
            b.pps,
            b.kbps,
            b.loss_pct,
            b.jitter_ms,
            b.fps,
            b.seconds,
        );
        let what = format!(
            "viewer {} {kind}: probe {t} vs chromium {b:?}",
            row["participant"]
        );
        assert!(
            (num(t, "loss_pct") - b.loss_pct).abs() <= LOSS_PP,
            "loss differs by more than {LOSS_PP} points: {what}"
        );
        let tolerance = JITTER_MS[usize::from(kind == "video")];
        // A stalled publisher sends late, which only Chromium's jitter counts: the probe's
        // send lag is in the message to tell that apart from a broken estimate.
        assert!(
            probe_jitter > 0.0 && (probe_jitter - b.jitter_ms).abs() <= tolerance,
            "jitter differs by more than {tolerance} ms: {what}; probe send lag {}",
            r["steps"][0]["probe_lag_ms"]
        );
        assert!(
            off_pct(probe_pps, b.pps) <= RATE_PCT,
            "packet rate differs by more than {RATE_PCT}%: {what}"
        );
        assert!(
            off_pct(probe_kbps, b.kbps) <= RATE_PCT,
            "payload bitrate differs by more than {RATE_PCT}%: {what}"
        );
        if kind == "video" {
            assert!(
                off_pct(num(t, "fps"), b.fps) <= RATE_PCT,
                "frame rate differs by more than {RATE_PCT}%: {what}"
            );
            compared[1] += 1;
        } else {
            compared[0] += 1;
        }
    }
    assert_eq!(
        compared,
        [VIEWERS, VIEWERS],
        "one audio and one video track per probe viewer in tracks.ndjson:\n{tracks}"
    );
    // The synthetic interframes do not decode, so Chromium keeps asking for keyframes;
    // everyone in the room gets them, which changes the stream but not the comparison.
    eprintln!(
        "chromium decoded {} frames, sent {} PLIs and {} NACKs, got {} retransmissions",
        video.frames_decoded, video.plis, video.nacks, video.retransmitted
    );
}
