//! Reading back what a broadcast receiver got, with ffprobe: codecs, decoded frame sizes,
//! packet timestamps (monotonic, largest gap), duration, picture brightness and loudness.

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::run_with_timeout;

#[derive(Debug, Default)]
pub struct MediaReport {
    /// Codec names of the audio and video streams, sorted.
    pub codecs: Vec<String>,
    /// Distinct (width, height) of the decoded video frames.
    pub sizes: Vec<(u32, u32)>,
    pub video_frames: usize,
    pub duration: f64,
    /// Per stream kind ("video", "audio"): packet DTS in seconds, in file order.
    pub video_dts: Vec<f64>,
    pub audio_dts: Vec<f64>,
}

impl MediaReport {
    /// The first place where a stream's DTS does not increase, if any.
    pub fn non_monotonic(&self) -> Option<String> {
        for (kind, ts) in [("video", &self.video_dts), ("audio", &self.audio_dts)] {
            if let Some(w) = ts.windows(2).find(|w| w[1] <= w[0]) {
                return Some(format!("{kind} dts {} then {}", w[0], w[1]));
            }
        }
        None
    }

    /// The largest step between consecutive video packets, in seconds.
    pub fn largest_video_gap(&self) -> f64 {
        self.video_dts
            .windows(2)
            .map(|w| w[1] - w[0])
            .fold(0.0, f64::max)
    }
}

fn ffprobe(args: &[&str], path: &Path) -> String {
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error"]).args(args).arg(path);
    let (out, timed_out) = run_with_timeout(cmd, Duration::from_secs(60));
    assert!(!timed_out, "ffprobe {args:?} {} hung", path.display());
    assert!(
        out.status.success(),
        "ffprobe {args:?} {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn probe(path: &Path) -> MediaReport {
    let meta: Value = serde_json::from_str(&ffprobe(
        &[
            "-show_entries",
            "stream=codec_name,codec_type:format=duration",
            "-of",
            "json",
        ],
        path,
    ))
    .expect("ffprobe json");
    let mut r = MediaReport::default();
    for s in meta["streams"].as_array().into_iter().flatten() {
        let kind = s["codec_type"].as_str().unwrap_or("");
        if kind == "audio" || kind == "video" {
            r.codecs
                .push(s["codec_name"].as_str().unwrap_or("?").to_owned());
        }
    }
    r.codecs.sort();
    r.duration = meta["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    let frames = ffprobe(
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "frame=width,height",
            "-of",
            "csv=p=0",
        ],
        path,
    );
    for line in frames.lines() {
        let mut it = line.split(',').filter_map(|v| v.trim().parse::<u32>().ok());
        if let (Some(w), Some(h)) = (it.next(), it.next()) {
            r.video_frames += 1;
            if !r.sizes.contains(&(w, h)) {
                r.sizes.push((w, h));
            }
        }
    }
    let packets = ffprobe(
        &[
            "-show_entries",
            "packet=codec_type,dts_time",
            "-of",
            "csv=p=0",
        ],
        path,
    );
    for line in packets.lines() {
        let mut it = line.split(',');
        let (Some(kind), Some(dts)) = (it.next(), it.next().and_then(|d| d.parse::<f64>().ok()))
        else {
            continue;
        };
        match kind {
            "video" => r.video_dts.push(dts),
            "audio" => r.audio_dts.push(dts),
            _ => {}
        }
    }
    r
}

/// Mean saturation (signalstats SATAVG) of each decoded frame from `from` seconds on. Black
/// or grey filler is 0; Chromium's fake camera (saturated green, about 180) is far from it
/// whatever its brightness, which cycles.
pub fn saturation(path: &Path, from: f64) -> Vec<f64> {
    let graph = format!("movie={}:seek_point={from},signalstats", path.display());
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error", "-f", "lavfi", "-i", &graph])
        .args([
            "-show_entries",
            "frame_tags=lavfi.signalstats.SATAVG",
            "-of",
            "csv=p=0",
        ]);
    let (out, timed_out) = run_with_timeout(cmd, Duration::from_secs(60));
    assert!(
        !timed_out && out.status.success(),
        "ffprobe signalstats {}",
        path.display()
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The loudest sample of the audio track, in dBFS (digital silence is about -91).
pub fn max_volume(path: &Path) -> f64 {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostats", "-i"])
        .arg(path)
        .args(["-vn", "-af", "volumedetect", "-f", "null", "-"]);
    let (out, timed_out) = run_with_timeout(cmd, Duration::from_secs(60));
    assert!(!timed_out, "ffmpeg volumedetect hung");
    let log = String::from_utf8_lossy(&out.stderr);
    log.lines()
        .find_map(|l| l.split("max_volume:").nth(1))
        .and_then(|v| v.trim().trim_end_matches("dB").trim().parse().ok())
        .unwrap_or(-120.0)
}

/// A region of the picture to read: width, height, x, y (ffmpeg's `crop`).
#[derive(Clone, Copy, Debug)]
pub struct Region {
    pub width: u32,
    pub height: u32,
    pub x: u32,
    pub y: u32,
}

/// Average luma (signalstats YAVG) of each decoded frame, or of `region` of it, with the
/// frame's time in seconds.
pub fn luma_track(path: &Path, region: Option<Region>) -> Vec<(f64, f64)> {
    let crop = region
        .map(|r| format!(",crop={}:{}:{}:{}", r.width, r.height, r.x, r.y))
        .unwrap_or_default();
    let graph = format!("movie={}{crop},signalstats", path.display());
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error", "-f", "lavfi", "-i", &graph])
        .args([
            "-show_entries",
            "frame=pts_time:frame_tags=lavfi.signalstats.YAVG",
            "-of",
            "csv=p=0",
        ]);
    let (out, timed_out) = run_with_timeout(cmd, Duration::from_secs(60));
    assert!(!timed_out, "ffprobe signalstats {} hung", path.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut it = l.split(',').filter_map(|v| v.trim().parse::<f64>().ok());
            Some((it.next()?, it.next()?))
        })
        .collect()
}
