//! Track statistics end to end: synthetic generators feed a receiver through a simulated
//! path with chosen loss and delay, and the receiver must report exactly those.

use super::track::{RxPacket, TrackKind, TrackRx};
use crate::sfu::media::opus::{AudioGen, AudioSpec, Role};
use crate::sfu::media::rng::Rng;
use crate::sfu::media::stamp::Kind;
use crate::sfu::media::video::{VideoGen, VideoSpec};
use crate::sfu::media::OutPacket;

fn audio_spec() -> AudioSpec {
    AudioSpec {
        frame_ms: 20,
        talk_bytes: 100,
        silence_bytes: 40,
        dtx_interval_ms: 400,
        talk_s: (1.0, 2.0),
        pause_s: (0.5, 1.0),
        dtx_in_pauses: false,
    }
}

fn video_spec() -> VideoSpec {
    VideoSpec {
        kind: Kind::Camera,
        layer: 0,
        width: 320,
        height: 180,
        fps: 30.0,
        kbps: 150.0,
        keyframe_interval_s: 5.0,
        keyframe_factor: 5.0,
        max_payload: 1150,
        min_keyframe_gap_ms: 200,
    }
}

/// Sends `secs` of media from `next` through a path dropping packets with probability
/// `loss` and delaying them by `delay_us` plus uniform jitter up to `jitter_us`.
fn path(
    rx: &mut TrackRx,
    secs: u64,
    loss: f64,
    delay_us: u64,
    jitter_us: u64,
    mut next: impl FnMut(&mut Vec<OutPacket>) -> u64,
) -> u64 {
    let mut rng = Rng::new(99);
    let mut out = Vec::new();
    let mut arrivals: Vec<(u64, OutPacket)> = Vec::new();
    loop {
        out.clear();
        let t = next(&mut out);
        if t >= secs * 1_000_000 {
            break;
        }
        for p in out.drain(..) {
            if rng.unit() >= loss {
                let j = (rng.unit() * jitter_us as f64) as u64;
                arrivals.push((t + delay_us + j, p));
            }
        }
    }
    arrivals.sort_by_key(|a| a.0);
    let mut kf = 0;
    for (at, p) in &arrivals {
        let ask = rx.on_packet(RxPacket {
            seq: p.seq,
            rtp_ts: p.rtp_ts,
            marker: p.marker,
            payload: &p.payload,
            arrival_us: *at,
        });
        kf += u64::from(ask);
    }
    kf
}

#[test]
fn clean_audio_path_reports_delay_and_no_loss() {
    let mut rx = TrackRx::new(TrackKind::Audio, 0, 0);
    let mut g = AudioGen::new(audio_spec(), Role::Speaker, 5, 1, 0);
    rx.begin_step(0);
    path(&mut rx, 10, 0.0, 40_000, 0, |o| {
        let t = g.due_us();
        g.frame(t, o)
    });
    let w = rx.end_step(10_040_000);
    assert_eq!((w.lost, w.loss_pct, w.expected), (0, 0.0, 500));
    assert_eq!(w.delay_p50_ms, Some(40.0));
    assert_eq!(w.jitter_ms, Some(0.0));
    assert_eq!((w.gap_ms, w.source), (0.0, Some(5)));
}

#[test]
fn lossy_jittery_audio_path_is_measured() {
    let mut rx = TrackRx::new(TrackKind::Audio, 0, 0);
    let mut g = AudioGen::new(audio_spec(), Role::Speaker, 5, 1, 0);
    rx.begin_step(0);
    path(&mut rx, 200, 0.05, 40_000, 4_000, |o| {
        let t = g.due_us();
        g.frame(t, o)
    });
    let w = rx.end_step(200_100_000);
    assert!((w.loss_pct - 5.0).abs() < 0.6, "{}", w.loss_pct);
    let p50 = w.delay_p50_ms.unwrap();
    assert!((p50 - 42.0).abs() < 0.5, "{p50}");
    // Uniform 0-4 ms: mean |D| of two uniforms is 4/3 ms.
    let j = w.jitter_ms.unwrap();
    assert!((j - 1.33).abs() < 0.2, "{j}");
}

#[test]
fn video_frames_rate_and_freezes() {
    let mut rx = TrackRx::new(TrackKind::Video, 0, 0);
    let mut g = VideoGen::new(video_spec(), 8, 1, 0);
    rx.begin_step(0);
    path(&mut rx, 10, 0.0, 10_000, 0, |o| {
        let t = g.due_us();
        g.frame(t, o)
    });
    let w = rx.end_step(10_000_000);
    assert_eq!(w.lost, 0);
    assert!((w.fps - 30.0).abs() < 0.2, "{}", w.fps);
    assert!((w.fps_pct.unwrap() - 100.0).abs() < 1.0);
    assert_eq!((w.freezes, w.freeze_pct, w.undecodable), (0, 0.0, 0));
    assert_eq!(rx.first_frame_us, Some(10_000));
}

#[test]
fn a_silent_second_is_a_freeze() {
    let mut rx = TrackRx::new(TrackKind::Video, 0, 0);
    let mut g = VideoGen::new(video_spec(), 8, 1, 0);
    rx.begin_step(0);
    // The path goes dark between 4 and 5 s; the sender sends a keyframe at 5 s on PLI.
    let mut out_all: Vec<(u64, OutPacket)> = Vec::new();
    let mut out = Vec::new();
    while g.due_us() < 10_000_000 {
        out.clear();
        let t = g.due_us();
        if (5_000_000..5_030_000).contains(&t) {
            g.request_keyframe();
        }
        g.frame(t, &mut out);
        if !(4_000_000..5_000_000).contains(&t) {
            out_all.extend(out.drain(..).map(|p| (t, p)));
        }
    }
    for (t, p) in &out_all {
        rx.on_packet(RxPacket {
            seq: p.seq,
            rtp_ts: p.rtp_ts,
            marker: p.marker,
            payload: &p.payload,
            arrival_us: *t,
        });
    }
    let w = rx.end_step(10_000_000);
    assert_eq!(w.freezes, 1);
    assert!((w.freeze_pct - 10.0).abs() < 0.5, "{}", w.freeze_pct);
    assert!(w.loss_pct > 9.0 && w.loss_pct < 11.0, "{}", w.loss_pct);
}

#[test]
fn dtx_is_not_a_gap_but_a_lost_run_is() {
    let mut rx = TrackRx::new(TrackKind::Audio, 0, 0);
    let mut g = AudioGen::new(audio_spec(), Role::Muted, 1, 1, 0);
    rx.begin_step(0);
    path(&mut rx, 10, 0.0, 1_000, 0, |o| {
        let t = g.due_us();
        g.frame(t, o)
    });
    assert_eq!(rx.end_step(10_000_000).gap_ms, 0.0);
    let mut rx = TrackRx::new(TrackKind::Audio, 0, 0);
    let mut g = AudioGen::new(audio_spec(), Role::Speaker, 1, 1, 0);
    let mut out = Vec::new();
    for i in 0..50u64 {
        out.clear();
        let t = g.due_us();
        g.frame(t, &mut out);
        if !(10..15).contains(&i) {
            let p = &out[0];
            rx.on_packet(RxPacket {
                seq: p.seq,
                rtp_ts: p.rtp_ts,
                marker: false,
                payload: &p.payload,
                arrival_us: t,
            });
        }
    }
    let w = rx.end_step(1_000_000);
    assert_eq!((w.gaps, w.gap_ms), (1, 100.0));
}

#[test]
fn per_second_windows_add_up() {
    let mut rx = TrackRx::new(TrackKind::Audio, 0, 0);
    let mut g = AudioGen::new(audio_spec(), Role::Speaker, 1, 1, 0);
    let mut out = Vec::new();
    let mut seconds = Vec::new();
    let mut t_next = 1_000_000;
    while g.due_us() < 3_000_000 {
        out.clear();
        let t = g.due_us();
        if t >= t_next {
            seconds.push(rx.take_second(t));
            t_next += 1_000_000;
        }
        g.frame(t, &mut out);
        if !g.packets.is_multiple_of(10) {
            let p = &out[0];
            rx.on_packet(RxPacket {
                seq: p.seq,
                rtp_ts: p.rtp_ts,
                marker: false,
                payload: &p.payload,
                arrival_us: t + 5_000,
            });
        }
    }
    seconds.push(rx.take_second(3_000_000));
    let (exp, lost): (u64, u64) = seconds
        .iter()
        .fold((0, 0), |a, s| (a.0 + s.expected, a.1 + s.lost));
    assert_eq!((exp, lost), (149, 14), "{seconds:?}");
    assert!(seconds
        .iter()
        .all(|s| s.delay_n == 0 || s.delay_sum_us / s.delay_n == 5_000));
}
