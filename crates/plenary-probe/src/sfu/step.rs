//! One measured step reduced to numbers: each subscriber's tracks folded into one value per
//! metric, then p50/p95/p99 across subscribers, the verdict, and whether the probe itself
//! was the limit. Pure, so the rules are tested with exact numbers.

use super::fastrx::FastCounters;
use super::ramp::{verdict, Breach, StepQoe, Thresholds};
use super::recv::track::{TrackKind, TrackWindow};
use super::report::ReceiveWindow;
use crate::stats::percentile::Percentiles;
use crate::stats::validity::{self, Limits, LoadSide};
use serde::Serialize;
use std::collections::BTreeMap;

/// One subscriber's step, folded over its received tracks.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Subscriber {
    pub participant: u32,
    /// Lost over expected of all its audio tracks, %.
    pub audio_loss_pct: Option<f64>,
    pub video_loss_pct: Option<f64>,
    /// Frozen time over video track time, %.
    pub freeze_pct: Option<f64>,
    /// Mean over its video tracks of fps / target, %.
    pub frame_rate_pct: Option<f64>,
    /// Its worst track's p95 one-way delay, ms.
    pub delay_ms: Option<f64>,
    /// Its worst track's mean RFC 3550 jitter, ms.
    pub jitter_ms: Option<f64>,
    /// Audio gaps per minute of audio track, ms.
    pub audio_gap_ms_per_min: Option<f64>,
    /// Slowest first frame (video) or packet (audio) of its tracks since it started joining.
    pub first_media_ms: Option<f64>,
}

/// Folds tracks per participant. A track that must carry media and got none counts as
/// fully lost and frozen: a silent subscriber is the worst one, not a missing sample.
pub fn subscribers(tracks: &[(u32, bool, TrackWindow)]) -> Vec<Subscriber> {
    let mut by: BTreeMap<u32, Vec<(bool, &TrackWindow)>> = BTreeMap::new();
    for (p, must, w) in tracks {
        by.entry(*p).or_default().push((*must, w));
    }
    by.into_iter()
        .map(|(participant, ts)| {
            let mut s = Subscriber {
                participant,
                ..Subscriber::default()
            };
            let (mut a_exp, mut a_lost, mut v_exp, mut v_lost) = (0u64, 0u64, 0u64, 0u64);
            let (mut frozen_s, mut video_s, mut fps_sum, mut fps_n) = (0.0, 0.0, 0.0, 0u32);
            let (mut gap_ms, mut audio_s) = (0.0, 0.0);
            let mut has = (false, false);
            for (must, w) in ts {
                let silent = w.packets == 0;
                if w.paused || (silent && !must) {
                    continue;
                }
                let max = |a: Option<f64>, b: Option<f64>| match (a, b) {
                    (Some(x), Some(y)) => Some(x.max(y)),
                    (x, None) | (None, x) => x,
                };
                s.delay_ms = max(s.delay_ms, w.delay_p95_ms);
                s.jitter_ms = max(s.jitter_ms, w.jitter_ms);
                s.first_media_ms = max(s.first_media_ms, w.first_media_ms);
                match w.kind {
                    TrackKind::Audio => {
                        has.0 = true;
                        let exp = if silent { 1 } else { w.expected };
                        a_exp += exp;
                        a_lost += if silent { 1 } else { w.lost };
                        gap_ms += if silent { w.seconds * 1000.0 } else { w.gap_ms };
                        audio_s += w.seconds;
                    }
                    TrackKind::Video => {
                        has.1 = true;
                        v_exp += if silent { 1 } else { w.expected };
                        v_lost += if silent { 1 } else { w.lost };
                        video_s += w.seconds;
                        frozen_s += if silent {
                            w.seconds
                        } else {
                            w.freeze_pct / 100.0 * w.seconds
                        };
                        fps_sum += if silent {
                            0.0
                        } else {
                            w.fps_pct.unwrap_or(0.0)
                        };
                        fps_n += 1;
                    }
                }
            }
            let pct = |l: u64, e: u64| {
                if e == 0 {
                    0.0
                } else {
                    l as f64 * 100.0 / e as f64
                }
            };
            if has.0 {
                s.audio_loss_pct = Some(pct(a_lost, a_exp));
                s.audio_gap_ms_per_min = Some(if audio_s > 0.0 {
                    gap_ms / audio_s * 60.0
                } else {
                    0.0
                });
            }
            if has.1 {
                s.video_loss_pct = Some(pct(v_lost, v_exp));
                s.freeze_pct = Some(if video_s > 0.0 {
                    frozen_s * 100.0 / video_s
                } else {
                    0.0
                });
                s.frame_rate_pct = Some(fps_sum / f64::from(fps_n.max(1)));
            }
            s
        })
        .collect()
}

/// p50/p95/p99 across subscribers of one metric; `worst_low` flips the order for metrics
/// where less is worse (frame rate), so p95 always means "95% of subscribers did at least
/// this well" and `max` is the worst subscriber.
pub fn across(
    subs: &[Subscriber],
    f: impl Fn(&Subscriber) -> Option<f64>,
    worst_low: bool,
) -> Option<Percentiles> {
    let mut v: Vec<f64> = subs
        .iter()
        .filter_map(&f)
        .map(|x| if worst_low { -x } else { x })
        .collect();
    if v.is_empty() {
        return None;
    }
    let mut p = Percentiles::of(&mut v);
    if worst_low {
        (p.p50, p.p95, p.p99, p.max) = (-p.p50, -p.p95, -p.p99, -p.max);
    }
    Some(p)
}

/// Every metric of a step across subscribers.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Metrics {
    pub audio_loss_pct: Option<Percentiles>,
    pub video_loss_pct: Option<Percentiles>,
    pub freeze_pct: Option<Percentiles>,
    pub frame_rate_pct: Option<Percentiles>,
    pub delay_ms: Option<Percentiles>,
    pub jitter_ms: Option<Percentiles>,
    pub audio_gap_ms_per_min: Option<Percentiles>,
    pub first_media_ms: Option<Percentiles>,
}

pub fn metrics(subs: &[Subscriber]) -> Metrics {
    Metrics {
        audio_loss_pct: across(subs, |s| s.audio_loss_pct, false),
        video_loss_pct: across(subs, |s| s.video_loss_pct, false),
        freeze_pct: across(subs, |s| s.freeze_pct, false),
        frame_rate_pct: across(subs, |s| s.frame_rate_pct, true),
        delay_ms: across(subs, |s| s.delay_ms, false),
        jitter_ms: across(subs, |s| s.jitter_ms, false),
        audio_gap_ms_per_min: across(subs, |s| s.audio_gap_ms_per_min, false),
        first_media_ms: across(subs, |s| s.first_media_ms, false),
    }
}

/// Totals over every received track of a step, for checks that need counts rather than
/// a spread (the honesty test: imposed loss must come back as measured loss).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Pooled {
    pub audio_expected: u64,
    pub audio_lost: u64,
    pub audio_loss_pct: f64,
    pub video_expected: u64,
    pub video_lost: u64,
    pub video_loss_pct: f64,
    /// Median over audio tracks of each track's median one-way delay, ms.
    pub audio_delay_p50_ms: Option<f64>,
    pub video_delay_p50_ms: Option<f64>,
    /// Frames given up before all their packets arrived.
    pub frames_incomplete: u64,
    /// Complete frames no decoder could show (a predecessor was lost).
    pub frames_undecodable: u64,
    /// PLIs the receivers sent because decoding was stuck.
    pub keyframe_requests_sent: u64,
}

pub fn pooled(tracks: &[(u32, bool, TrackWindow)]) -> Pooled {
    let mut p = Pooled::default();
    let (mut ad, mut vd) = (Vec::new(), Vec::new());
    for (_, _, w) in tracks {
        let (exp, lost, delays) = match w.kind {
            TrackKind::Audio => (&mut p.audio_expected, &mut p.audio_lost, &mut ad),
            TrackKind::Video => (&mut p.video_expected, &mut p.video_lost, &mut vd),
        };
        *exp += w.expected;
        *lost += w.lost;
        delays.extend(w.delay_p50_ms);
        p.frames_incomplete += w.incomplete;
        p.frames_undecodable += w.undecodable;
        p.keyframe_requests_sent += w.keyframe_requests;
    }
    let pct = |l: u64, e: u64| {
        if e == 0 {
            0.0
        } else {
            l as f64 * 100.0 / e as f64
        }
    };
    p.audio_loss_pct = pct(p.audio_lost, p.audio_expected);
    p.video_loss_pct = pct(p.video_lost, p.video_expected);
    p.audio_delay_p50_ms = (!ad.is_empty()).then(|| Percentiles::of(&mut ad).p50);
    p.video_delay_p50_ms = (!vd.is_empty()).then(|| Percentiles::of(&mut vd).p50);
    p
}

/// The probe's own load over the window, and the socket drops it saw.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ProbeLoad {
    pub load: LoadSide,
    pub socket_drops: u64,
    pub rx_datagrams: u64,
    pub lag_p50_ms: f64,
}

/// The receive path's figures over a window: the probe's CPU per datagram it received
/// and the fast path's counts between the window's two snapshots.
pub fn receive_window(
    fast: bool,
    probe_cpu_pct: f64,
    secs: f64,
    rx_datagrams: u64,
    before: &FastCounters,
    after: &FastCounters,
) -> ReceiveWindow {
    ReceiveWindow {
        path: if fast { "fast" } else { "str0m" },
        probe_cpu_us_per_rx_datagram: (rx_datagrams > 0)
            .then(|| probe_cpu_pct / 100.0 * secs * 1e6 / rx_datagrams as f64),
        fast: after.since(before),
    }
}

/// Why the step is not about the server, if it is not.
pub fn invalid_reasons(limits: &Limits, max_socket_drop_pct: f64, p: &ProbeLoad) -> Vec<String> {
    let mut out: Vec<String> = validity::check(limits, &p.load)
        .iter()
        .map(ToString::to_string)
        .collect();
    if p.rx_datagrams > 0 {
        let pct = p.socket_drops as f64 * 100.0 / p.rx_datagrams as f64;
        if pct > max_socket_drop_pct {
            out.push(format!(
                "probe sockets dropped {pct:.2}% of received packets (> {max_socket_drop_pct}%): the probe did not read fast enough"
            ));
        }
    }
    out
}

/// The values the verdict judges: p95 across subscribers (the worst 5% for frame rate).
pub fn qoe(join_pct: f64, m: &Metrics) -> StepQoe {
    let p95 = |p: &Option<Percentiles>| p.map(|p| p.p95);
    StepQoe {
        join_pct,
        audio_loss_pct: p95(&m.audio_loss_pct),
        freeze_pct: p95(&m.freeze_pct),
        frame_rate_pct: p95(&m.frame_rate_pct),
        delay_ms: p95(&m.delay_ms),
        jitter_ms: p95(&m.jitter_ms),
    }
}

pub fn judge(t: &Thresholds, join_pct: f64, m: &Metrics) -> (StepQoe, Vec<Breach>) {
    let q = qoe(join_pct, m);
    let b = verdict(t, &q);
    (q, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(kind: TrackKind, packets: u64, expected: u64, lost: u64) -> TrackWindow {
        TrackWindow {
            paused: false,
            kind,
            source: Some(0),
            layer: 0,
            target_fps: 30.0,
            seconds: 10.0,
            packets,
            bytes: packets * 100,
            expected,
            lost,
            loss_pct: 0.0,
            jitter_ms: Some(1.0),
            delay_p50_ms: Some(5.0),
            delay_p95_ms: Some(9.0),
            delay_max_ms: Some(12.0),
            fps: 27.0,
            fps_pct: Some(90.0),
            freeze_pct: 2.0,
            freezes: 1,
            gap_ms: 120.0,
            gaps: 1,
            undecodable: 0,
            incomplete: 0,
            keyframes: 1,
            keyframe_requests: 0,
            first_media_ms: Some(300.0),
        }
    }

    #[test]
    fn folds_tracks_per_subscriber() {
        let mut v2 = w(TrackKind::Video, 900, 900, 0);
        v2.fps_pct = Some(100.0);
        v2.freeze_pct = 0.0;
        v2.delay_p95_ms = Some(30.0);
        let tracks = vec![
            (1, true, w(TrackKind::Audio, 490, 500, 10)),
            (1, true, w(TrackKind::Audio, 500, 500, 0)),
            (1, true, w(TrackKind::Video, 900, 900, 0)),
            (1, true, v2),
            // A silent audio slot that may stay silent is ignored.
            (1, false, w(TrackKind::Audio, 0, 0, 0)),
            // A WHEP track that got nothing: fully lost and frozen.
            (2, true, w(TrackKind::Video, 0, 0, 0)),
            // Resumed by last-N during the window: left out, whatever it got.
            (1, true, {
                let mut p = w(TrackKind::Video, 0, 0, 0);
                p.paused = true;
                p
            }),
        ];
        let s = subscribers(&tracks);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].audio_loss_pct, Some(1.0));
        assert_eq!(s[0].freeze_pct, Some(1.0));
        assert_eq!(s[0].frame_rate_pct, Some(95.0));
        assert_eq!(s[0].delay_ms, Some(30.0));
        assert_eq!(s[0].audio_gap_ms_per_min, Some(240.0 / 20.0 * 60.0));
        assert_eq!(
            (s[1].video_loss_pct, s[1].freeze_pct, s[1].frame_rate_pct),
            (Some(100.0), Some(100.0), Some(0.0))
        );
        assert_eq!(s[1].audio_loss_pct, None);
        let p = pooled(&tracks);
        assert_eq!(
            (p.audio_expected, p.audio_lost, p.audio_loss_pct),
            (1000, 10, 1.0)
        );
        assert_eq!(p.video_delay_p50_ms, Some(5.0));
    }

    #[test]
    fn percentiles_across_subscribers_and_the_frame_rate_flip() {
        let subs: Vec<Subscriber> = (0..20)
            .map(|i| Subscriber {
                participant: i,
                frame_rate_pct: Some(100.0 - f64::from(i)),
                audio_loss_pct: Some(f64::from(i) / 10.0),
                ..Subscriber::default()
            })
            .collect();
        let m = metrics(&subs);
        let fr = m.frame_rate_pct.unwrap();
        // 95% of subscribers had at least 82% of the target; the worst had 81%.
        assert_eq!((fr.p50, fr.p95, fr.max), (91.0, 82.0, 81.0));
        let loss = m.audio_loss_pct.unwrap();
        assert_eq!((loss.p95, loss.max), (1.8, 1.9));
        assert!(m.freeze_pct.is_none());
        let (q, b) = judge(&Thresholds::default(), 100.0, &m);
        assert_eq!(q.frame_rate_pct, Some(82.0));
        assert_eq!(
            b.iter().map(|b| b.metric.name()).collect::<Vec<_>>(),
            ["audio_loss", "frame_rate"]
        );
    }

    #[test]
    fn socket_drops_invalidate() {
        let p = ProbeLoad {
            socket_drops: 5,
            rx_datagrams: 1000,
            ..ProbeLoad::default()
        };
        let r = invalid_reasons(&Limits::default(), 0.1, &p);
        assert_eq!(r.len(), 1);
        assert!(r[0].contains("0.50%"), "{r:?}");
        assert!(invalid_reasons(&Limits::default(), 1.0, &p).is_empty());
    }

    #[test]
    fn receive_window_gives_cpu_per_datagram_and_the_window_counts() {
        let before = FastCounters {
            nacked: 5,
            rtx: 2,
            ..FastCounters::default()
        };
        let after = FastCounters {
            nacked: 9,
            rtx: 5,
            twcc_reports: 10,
            ..FastCounters::default()
        };
        // 25% of a core over 2 s for 100,000 datagrams: 5 µs each.
        let w = receive_window(true, 25.0, 2.0, 100_000, &before, &after);
        assert_eq!(w.path, "fast");
        assert!((w.probe_cpu_us_per_rx_datagram.unwrap() - 5.0).abs() < 1e-9);
        assert_eq!((w.fast.nacked, w.fast.rtx, w.fast.twcc_reports), (4, 3, 10));
        assert!(receive_window(false, 25.0, 2.0, 0, &after, &after)
            .probe_cpu_us_per_rx_datagram
            .is_none());
    }
}
