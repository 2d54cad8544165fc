//! The egress pulling from a cascade node that goes away: two real `plenary sfu` processes
//! (nodes a and b) on 127.0.0.1 with a real redis-server as their directory, a WHIP
//! publisher (a str0m client with GStreamer-encoded media) on a, and `plenary egress`
//! pulling the room from b. b is killed with SIGKILL (the egress notices: nothing received
//! for 3 s), or drained with SIGTERM (b closes the egress's session). Either way the egress
//! must pull the room again from a, which b's WHEP answer listed as `Link:
//! rel="alternate"`, and the HLS and MP4 outputs must run on without a gap in their
//! timestamps, the camera back in the picture within seconds.

mod common;
#[allow(dead_code)] // redis.rs serves several test binaries
#[path = "../crates/plenary-sfu/tests/common/redis.rs"]
mod redis;
#[path = "common/whip_publisher.rs"]
mod whip_publisher;

use common::cascade_node::Node;
use common::media::{luma_track, probe};
use common::{free_port_except, plenary_bin, require_peer, Guard};
use redis::Redis;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use whip_publisher::{Look, Publisher};

const ROOM: &str = "webtv";
const SECRET: &str = "cluster-secret-for-the-egress-test-0123";
/// From b going to the camera back in the broadcast: 3 s of silence to notice, 0.5 s of
/// backoff, the WHEP POST, ICE and DTLS with a, and a keyframe (about 5 s when measured).
const BACK_WITHIN: f64 = 10.0;

/// Segments listed in an HLS playlist so far.
fn hls_segments(playlist: &Path) -> usize {
    std::fs::read_to_string(playlist)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("#EXTINF"))
        .count()
}

/// One sample of a Prometheus text exposition: `name{labels} value` whose labels contain
/// `label`.
fn sample(metrics: &str, name: &str, label: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let (labels, value) = rest.rsplit_once(' ')?;
        labels.contains(label).then(|| value.parse().ok())?
    })
}

/// How the node the egress pulls from goes away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gone {
    Killed,
    Drained,
}

#[test]
fn egress_pulls_again_from_another_node_when_its_node_dies() {
    scenario(Gone::Killed);
}

#[test]
fn egress_pulls_again_from_another_node_when_its_node_drains() {
    scenario(Gone::Drained);
}

/// One scenario at a time: each runs two nodes, a publisher and a 720p egress on 2 cores.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn scenario(gone: Gone) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(redis) = Redis::start() else { return };
    if !["ffmpeg", "ffprobe", "gst-inspect-1.0"]
        .iter()
        .all(|p| require_peer(p).is_some())
    {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let lo = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
    let mut ports = Vec::new();
    for _ in 0..7 {
        ports.push(free_port_except(&lo, &ports));
    }
    let node = |name: &str, p: &[u16]| {
        let mut n = Node::new(name, [p[0], p[1], p[2]], dir.path(), &redis.url(), SECRET);
        n.start_blocking();
        n
    };
    let a = node("a", &ports[0..3]);
    let mut b = node("b", &ports[3..6]);
    let metrics_port = ports[6];

    let mut camera = Publisher::start(
        format!("{}/whip/{ROOM}", a.url()),
        Look::Sweep { talks: |_| true },
        (320, 240),
    );
    std::thread::sleep(Duration::from_secs(2));

    let hls = dir.path().join("hls");
    let mp4 = dir.path().join("rec.mp4");
    let egress_log = dir.path().join("egress.log");
    let secs = 26u64;
    let mut cmd = Command::new(plenary_bin());
    cmd.arg("egress")
        .args(["--from", &format!("{}/whep/{ROOM}", b.url())])
        .arg("--hls")
        .arg(&hls)
        .arg("--record")
        .arg(&mp4)
        .args(["--metrics", &format!("127.0.0.1:{metrics_port}")])
        .args(["--duration", &secs.to_string(), "--status-every", "1"])
        .stdout(Stdio::null())
        .stderr(File::create(&egress_log).expect("egress log"));
    let started = Instant::now();
    let mut egress = Guard::spawn(cmd, "plenary egress");
    let log = || std::fs::read_to_string(&egress_log).unwrap_or_default();

    // The broadcast runs from b for 9 s.
    std::thread::sleep(Duration::from_secs(9));
    assert!(
        log().contains("WHEP source connected"),
        "the egress never connected to b:\n{}",
        log()
    );
    let playlist = hls.join("index.m3u8");
    let before = hls_segments(&playlist);
    let gone_at = started.elapsed().as_secs_f64();
    match gone {
        Gone::Killed => b.kill9(),
        Gone::Drained => b.drain(),
    }
    eprintln!("node b {gone:?} {gone_at:.1} s into the egress; {before} HLS segments so far");

    // Pulled again from a: the source line names a's URL, connected.
    let from_a = format!("source {}/whep/{ROOM}?screen=1  connected", a.url());
    let t0 = Instant::now();
    while !log().contains(&from_a) && t0.elapsed() < Duration::from_secs(12) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let repulled_after = t0.elapsed().as_secs_f64();
    assert!(
        log().contains(&from_a),
        "no status line {from_a:?} within 12 s of b going:\n{}",
        log()
    );
    eprintln!("status line names a, connected, {repulled_after:.1} s after b went");
    let metrics = ureq::get(&format!("http://127.0.0.1:{metrics_port}/metrics"))
        .timeout(Duration::from_secs(5))
        .call()
        .expect("scrape /metrics")
        .into_string()
        .expect("metrics text");
    let repulls = |reason: &str| {
        sample(
            &metrics,
            "plenary_egress_source_repulls_total{",
            &format!("reason=\"{reason}\""),
        )
        .unwrap_or(0.0)
    };
    let counted = ["silence", "ice", "closed", "http"].map(|r| (r, repulls(r)));
    eprintln!("re-pulls by reason: {counted:?}");
    // A killed node goes silent; a draining one closes the session (DTLS close_notify).
    let expected = match gone {
        Gone::Killed => repulls("silence") + repulls("ice"),
        Gone::Drained => repulls("closed"),
    };
    assert!(
        expected >= 1.0,
        "no re-pull counted for {gone:?}:\n{metrics}"
    );
    assert_eq!(sample(&metrics, "plenary_egress_source_up", ""), Some(1.0));

    // The egress ends on its own (--duration), the outputs finished.
    let deadline = started + Duration::from_secs(secs + 30);
    let status = loop {
        if let Ok(Some(status)) = egress.child.try_wait() {
            break status;
        }
        assert!(Instant::now() < deadline, "egress did not stop:\n{}", log());
        std::thread::sleep(Duration::from_millis(200));
    };
    camera.stop();
    let text = log();
    eprintln!("egress log:\n{text}");
    assert_eq!(status.code(), Some(0), "egress exit code");
    let after = hls_segments(&playlist);
    assert!(
        after >= before + 6,
        "HLS stopped growing after b went: {before} segments then {after}"
    );
    let a_whep = format!("{}/whep/{ROOM}?screen=1", a.url());
    assert!(
        text.lines()
            .any(|l| l.contains("pulling the WHEP source") && l.contains(&a_whep)),
        "the egress did not pull from a (b's alternate)"
    );

    for (what, path) in [("hls", playlist.clone()), ("mp4", mp4.clone())] {
        let r = probe(&path);
        eprintln!(
            "{what}: codecs {:?} sizes {:?} duration {:.2}s largest video gap {:.3}s",
            r.codecs,
            r.sizes,
            r.duration,
            r.largest_video_gap()
        );
        assert_eq!(r.codecs, ["aac", "h264"], "{what}");
        assert_eq!(r.sizes, [(1280, 720)], "{what}");
        assert_eq!(r.non_monotonic(), None, "{what}");
        assert!(
            r.largest_video_gap() <= 0.2,
            "{what}: a gap of {:.3}s across the re-pull",
            r.largest_video_gap()
        );
        let wall = secs as f64;
        assert!(
            (r.duration - wall).abs() / wall <= 0.05,
            "{what}: duration {:.2}s vs {wall}s",
            r.duration
        );
    }

    // The camera (bright, its luma changing every frame) before b went; then its last
    // picture frozen until the loss is noticed, black while the source is pulled again, and
    // the camera again, from a. A live frame is bright and differs from the one before by
    // more than the encoder's touch-ups of a still picture.
    let frames = luma_track(&mp4, None);
    let live_at: Vec<f64> = frames
        .windows(2)
        .filter(|w| w[1].1 > 110.0 && (w[1].1 - w[0].1).abs() > 0.5)
        .map(|w| w[1].0)
        .collect();
    let before_gone = live_at.iter().filter(|t| **t < gone_at - 1.0).count();
    let (gap, gap_from) = live_at
        .windows(2)
        .map(|w| (w[1] - w[0], w[0]))
        .max_by(|x, y| x.0.total_cmp(&y.0))
        .unwrap_or((f64::MAX, 0.0));
    let last = live_at.last().copied().unwrap_or(0.0);
    eprintln!(
        "camera: {before_gone} live frames before b went; none for {gap:.2} s from {gap_from:.2} s \
         (b went at about {gone_at:.1} s); the last at {last:.2} s"
    );
    assert!(before_gone >= 60, "the camera was not on before b went");
    assert!(
        last > secs as f64 - 3.0,
        "the camera did not come back after the re-pull"
    );
    assert!(
        gap <= BACK_WITHIN,
        "the camera was away {gap:.1} s across the re-pull (at most {BACK_WITHIN} s)"
    );
    drop(a);
    drop(redis);
}
