//! Several SFU nodes sharing a room (DESIGN.md, Cascade): which node each participant
//! joins, how far redirects are followed, where a participant whose node died goes next,
//! and the figures a cascade adds to a step (re-home times, the delay a node-to-node link
//! adds). Pure, so the rules are tested without a cluster.

use super::recv::track::TrackWindow;
use crate::stats::percentile::Percentiles;
use serde::Serialize;
use std::collections::BTreeMap;

/// Redirects followed per join before giving up: two nodes pointing at each other must
/// not keep a participant bouncing until its join timeout.
pub const MAX_REDIRECTS: u32 = 3;

/// `--target URL1,URL2,...` into base URLs without a trailing slash.
pub fn parse_targets(s: &str) -> Result<Vec<String>, String> {
    let v: Vec<String> = s
        .split(',')
        .map(|t| t.trim().trim_end_matches('/').to_string())
        .collect();
    if v.iter().any(String::is_empty) {
        return Err(format!("--target {s:?}: an empty URL in the list"));
    }
    Ok(v)
}

/// Roles whose media the scenario is about. They all go to the first target, so the other
/// targets' participants receive them over a node-to-node link.
fn is_publisher(role: &str) -> bool {
    matches!(role, "presenter" | "camera")
}

/// Which of `n` targets participant `index` joins: publishers the first, everyone else
/// round-robin.
pub fn target_of(index: u32, role: &str, n: usize) -> usize {
    if n <= 1 || is_publisher(role) {
        0
    } else {
        index as usize % n
    }
}

/// The node a URL points at (`http://host:port`), so a base URL, a WHIP resource and a
/// redirect's Location compare equal when they name the same server.
pub fn node_of(url: &str) -> String {
    match url.strip_prefix("http://") {
        Some(rest) => format!("http://{}", rest.split('/').next().unwrap_or(rest)),
        None => url.trim_end_matches('/').to_string(),
    }
}

/// Redirects one join has followed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Redirects {
    pub followed: u32,
}

impl Redirects {
    /// Accepts one more redirect to `to`, or refuses past [`MAX_REDIRECTS`].
    pub fn follow(&mut self, to: &str) -> Result<String, String> {
        if self.followed >= MAX_REDIRECTS {
            return Err(format!(
                "more than {MAX_REDIRECTS} redirects (the last to {to})"
            ));
        }
        self.followed += 1;
        Ok(to.trim_end_matches('/').to_string())
    }
}

/// Where a participant whose node `dead` went away tries next, in order: the room's nodes
/// as the server listed them at join (after the dead one, wrapping), then the command
/// line's targets. Never the dead node itself.
pub fn rehome_candidates(nodes: &[String], targets: &[String], dead: &str) -> Vec<String> {
    let dead = node_of(dead);
    let mut out: Vec<String> = Vec::new();
    for list in [nodes, targets] {
        let start = list
            .iter()
            .position(|u| node_of(u) == dead)
            .map_or(0, |i| i + 1);
        for i in 0..list.len() {
            let u = list[(start + i) % list.len()]
                .trim_end_matches('/')
                .to_string();
            if node_of(&u) != dead && !out.iter().any(|o| node_of(o) == node_of(&u)) {
                out.push(u);
            }
        }
    }
    out
}

/// One participant re-homed after its node closed its room socket (or redirected it).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Rehome {
    pub participant: u32,
    pub from: String,
    /// Where it joined again; None when no node took it.
    pub to: Option<String>,
    /// Probe clock, µs, when the socket closed.
    pub closed_us: u64,
    /// From the close to joined and connected again, ms.
    pub rejoin_ms: Option<f64>,
    /// From the close to the first audio packet / first complete video frame again, ms.
    pub audio_ms: Option<f64>,
    pub video_ms: Option<f64>,
    pub redirects: u32,
}

/// The re-homings of one step.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RehomeStats {
    pub count: u32,
    pub failed: u32,
    pub redirects: u32,
    pub rejoin_ms: Option<Percentiles>,
    pub audio_ms: Option<Percentiles>,
    pub video_ms: Option<Percentiles>,
    /// Re-homed participants that had no audio (video) yet when the step ended.
    pub without_audio: u32,
    pub without_video: u32,
    /// With `--kill-node`/`--freeze-node`: from the fault to the participant's close (how
    /// long it took to notice), and from the fault to audio and video back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noticed_ms: Option<Percentiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_since_fault_ms: Option<Percentiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video_since_fault_ms: Option<Percentiles>,
}

/// The step's re-homings; `fault_us` is the probe clock when the run's node fault happened.
pub fn rehome_stats(events: &[Rehome], fault_us: Option<u64>) -> Option<RehomeStats> {
    if events.is_empty() {
        return None;
    }
    let of = |f: &dyn Fn(&Rehome) -> Option<f64>| {
        let mut v: Vec<f64> = events.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| Percentiles::of(&mut v))
    };
    let ok = || events.iter().filter(|e| e.to.is_some());
    Some(RehomeStats {
        count: events.len() as u32,
        failed: events.iter().filter(|e| e.to.is_none()).count() as u32,
        redirects: events.iter().map(|e| e.redirects).sum(),
        rejoin_ms: of(&|e| e.rejoin_ms),
        audio_ms: of(&|e| e.audio_ms),
        video_ms: of(&|e| e.video_ms),
        without_audio: ok().filter(|e| e.audio_ms.is_none()).count() as u32,
        without_video: ok().filter(|e| e.video_ms.is_none()).count() as u32,
        noticed_ms: fault_us.and_then(|f| of(&|e| noticed(e, f))),
        audio_since_fault_ms: fault_us.and_then(|f| of(&|e| Some(noticed(e, f)? + e.audio_ms?))),
        video_since_fault_ms: fault_us.and_then(|f| of(&|e| Some(noticed(e, f)? + e.video_ms?))),
    })
}

/// From the fault to this participant's close, ms; None for a close before the fault.
fn noticed(e: &Rehome, fault_us: u64) -> Option<f64> {
    (e.closed_us >= fault_us).then(|| (e.closed_us - fault_us) as f64 / 1000.0)
}

/// One-way delay of subscribers, split by whether the track's publisher sat on the
/// subscriber's node: the difference is what a node-to-node link adds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct NodeDelay {
    /// Across subscribers, each one's worst p95 delay over its same-node tracks, ms.
    pub same_node_ms: Option<Percentiles>,
    pub cross_node_ms: Option<Percentiles>,
    /// cross − same, at p50 and p95.
    pub added_p50_ms: Option<f64>,
    pub added_p95_ms: Option<f64>,
}

/// Groups the step's received tracks by (subscriber, same node?) with the same fold as the
/// step's `delay_ms` (worst track p95), then takes percentiles across subscribers. Tracks
/// whose publisher or subscriber node is unknown, and paused tracks, are left out. An audio
/// slot carries whoever speaks; it counts for the last speaker it carried.
pub fn node_delay<'a>(
    tracks: &[(u32, bool, TrackWindow)],
    home: impl Fn(u32) -> Option<&'a str>,
) -> NodeDelay {
    let mut worst: BTreeMap<(u32, bool), f64> = BTreeMap::new();
    for (sub, _, w) in tracks {
        let (Some(src), Some(d)) = (w.source, w.delay_p95_ms) else {
            continue;
        };
        if w.paused || src == *sub {
            continue;
        }
        let (Some(a), Some(b)) = (home(*sub), home(src)) else {
            continue;
        };
        let e = worst.entry((*sub, node_of(a) == node_of(b))).or_insert(d);
        *e = e.max(d);
    }
    let group = |same: bool| {
        let mut v: Vec<f64> = worst
            .iter()
            .filter(|((_, s), _)| *s == same)
            .map(|(_, d)| *d)
            .collect();
        (!v.is_empty()).then(|| Percentiles::of(&mut v))
    };
    let (same, cross) = (group(true), group(false));
    let diff = |f: fn(&Percentiles) -> f64| match (&same, &cross) {
        (Some(s), Some(c)) => Some(f(c) - f(s)),
        _ => None,
    };
    NodeDelay {
        same_node_ms: same,
        cross_node_ms: cross,
        added_p50_ms: diff(|p| p.p50),
        added_p95_ms: diff(|p| p.p95),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sfu::recv::track::TrackKind;

    #[test]
    fn targets_parse_and_round_robin() {
        assert_eq!(
            parse_targets("http://a:1/, http://b:2").unwrap(),
            ["http://a:1", "http://b:2"]
        );
        assert!(parse_targets("http://a:1,,http://b:2").is_err());
        let got: Vec<usize> = (0..6).map(|i| target_of(i, "listener", 3)).collect();
        assert_eq!(got, [0, 1, 2, 0, 1, 2]);
        // Publishers stay on the first node; one target is always target 0.
        assert_eq!(target_of(4, "presenter", 3), 0);
        assert_eq!(target_of(5, "camera", 3), 0);
        assert_eq!(target_of(5, "member", 3), 2);
        assert_eq!(target_of(7, "viewer", 1), 0);
    }

    #[test]
    fn nodes_compare_by_host_and_port() {
        assert_eq!(node_of("http://h:1/whip/r?x=1"), "http://h:1");
        assert_eq!(node_of("http://h:1"), "http://h:1");
        assert_eq!(node_of("http://h:1/"), node_of("http://h:1/resource/9"));
    }

    #[test]
    fn redirects_stop_after_the_limit() {
        let mut r = Redirects::default();
        for i in 0..MAX_REDIRECTS {
            assert_eq!(
                r.follow(&format!("http://n{i}:1/")).unwrap(),
                format!("http://n{i}:1")
            );
        }
        let e = r.follow("http://loop:1").unwrap_err();
        assert!(e.contains("more than 3 redirects"), "{e}");
        assert_eq!(r.followed, MAX_REDIRECTS);
    }

    #[test]
    fn rehome_goes_to_the_next_live_node() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let nodes = s(&["http://b:2", "http://c:3", "http://a:1"]);
        let targets = s(&["http://a:1", "http://b:2", "http://d:4/"]);
        assert_eq!(
            rehome_candidates(&nodes, &targets, "http://b:2"),
            ["http://c:3", "http://a:1", "http://d:4"]
        );
        // No list from the server (a single node at join): the next target.
        assert_eq!(
            rehome_candidates(&[], &targets, "http://b:2/"),
            ["http://d:4", "http://a:1"]
        );
        assert!(rehome_candidates(&[], &s(&["http://a:1"]), "http://a:1").is_empty());
    }

    fn track(source: u32, p95: f64) -> TrackWindow {
        TrackWindow {
            paused: false,
            kind: TrackKind::Video,
            source: Some(source),
            layer: 0,
            target_fps: 30.0,
            seconds: 10.0,
            packets: 100,
            bytes: 10_000,
            expected: 100,
            lost: 0,
            loss_pct: 0.0,
            jitter_ms: None,
            delay_p50_ms: Some(p95 / 2.0),
            delay_p95_ms: Some(p95),
            delay_max_ms: Some(p95),
            fps: 30.0,
            fps_pct: Some(100.0),
            freeze_pct: 0.0,
            freezes: 0,
            gap_ms: 0.0,
            gaps: 0,
            undecodable: 0,
            incomplete: 0,
            keyframes: 1,
            keyframe_requests: 0,
            first_media_ms: None,
        }
    }

    #[test]
    fn delay_is_grouped_by_same_or_cross_node() {
        // Publisher 0 on A; subscribers 1, 3 on A and 2, 4 on B; 5 has no known node.
        let home = |p: u32| match p {
            0 | 1 | 3 => Some("http://a:1"),
            2 | 4 => Some("http://b:2/"),
            _ => None,
        };
        let mut paused = track(0, 500.0);
        paused.paused = true;
        let tracks = vec![
            (1, true, track(0, 4.0)),
            (1, true, track(0, 6.0)),
            (3, true, track(0, 8.0)),
            (2, true, track(0, 10.0)),
            (4, true, track(0, 14.0)),
            (4, true, paused),
            (5, true, track(0, 900.0)),
            // Its own track, and one from a publisher on B: 2 sees it same-node.
            (0, true, track(0, 700.0)),
            (2, true, track(4, 3.0)),
        ];
        let d = node_delay(&tracks, home);
        let same = d.same_node_ms.unwrap();
        let cross = d.cross_node_ms.unwrap();
        assert_eq!((same.count, same.p50, same.p95), (3, 6.0, 8.0));
        assert_eq!((cross.count, cross.p50, cross.p95), (2, 10.0, 14.0));
        assert_eq!((d.added_p50_ms, d.added_p95_ms), (Some(4.0), Some(6.0)));
        let single = node_delay(&tracks[..2], home);
        assert!(single.cross_node_ms.is_none() && single.added_p95_ms.is_none());
    }

    #[test]
    fn rehome_times_per_step() {
        assert!(rehome_stats(&[], None).is_none());
        let ev = |audio: Option<f64>, video: Option<f64>, to: Option<&str>| Rehome {
            to: to.map(str::to_string),
            audio_ms: audio,
            video_ms: video,
            rejoin_ms: to.map(|_| 50.0),
            redirects: 1,
            ..Rehome::default()
        };
        let s = rehome_stats(
            &[
                ev(Some(100.0), Some(300.0), Some("http://b:2")),
                ev(Some(200.0), None, Some("http://b:2")),
                ev(None, None, None),
            ],
            None,
        )
        .unwrap();
        assert_eq!((s.count, s.failed, s.redirects), (3, 1, 3));
        assert_eq!(s.audio_ms.unwrap().p95, 200.0);
        assert_eq!(s.video_ms.unwrap().count, 1);
        assert_eq!((s.without_audio, s.without_video), (0, 1));
        assert!(s.noticed_ms.is_none() && s.audio_since_fault_ms.is_none());
    }

    #[test]
    fn rehome_times_since_the_fault() {
        let ev = |closed_us: u64, audio: f64| Rehome {
            to: Some("http://b:2".into()),
            closed_us,
            audio_ms: Some(audio),
            ..Rehome::default()
        };
        // A freeze at 10 s, noticed 3.5 s and 3.6 s later; a close before it is not counted.
        let events = [
            ev(13_500_000, 200.0),
            ev(13_600_000, 300.0),
            ev(9_000_000, 1.0),
        ];
        let s = rehome_stats(&events, Some(10_000_000)).unwrap();
        assert_eq!(s.noticed_ms.unwrap().count, 2);
        assert_eq!(s.noticed_ms.unwrap().p95, 3600.0);
        assert_eq!(s.audio_since_fault_ms.unwrap().p95, 3900.0);
        assert!(s.video_since_fault_ms.is_none());
    }
}
