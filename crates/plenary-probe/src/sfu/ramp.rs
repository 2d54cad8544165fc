//! The SFU's QoE thresholds (DESIGN.md, "QoE thresholds"), the verdict on one step, and the
//! knee: capacity is the largest step that held, and two consecutive failing steps end the
//! ramp.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// Audio loss of a subscriber, %, at p95 across subscribers: must be below.
    pub max_audio_loss_pct: f64,
    /// Share of time video was frozen (W3C rule), %, at p95: must be below.
    pub max_freeze_pct: f64,
    /// Frame rate as % of the layer's target, at the worst 5%: must be at least.
    pub min_frame_rate_pct: f64,
    /// One-way delay added by the server (a subscriber's worst track's p95), ms, at p95.
    pub max_delay_ms: f64,
    /// RFC 3550 jitter (a subscriber's worst track), ms, at p95: must be below.
    pub max_jitter_ms: f64,
    /// Joins that succeeded, %: must be at least.
    pub min_join_pct: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            max_audio_loss_pct: 1.0,
            max_freeze_pct: 1.0,
            min_frame_rate_pct: 90.0,
            max_delay_ms: 150.0,
            max_jitter_ms: 30.0,
            min_join_pct: 100.0,
        }
    }
}

/// Metrics in the order they are checked, which is the order a report names them when
/// several break in the same step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Joins,
    AudioLoss,
    VideoFreeze,
    FrameRate,
    Delay,
    Jitter,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Joins => "joins",
            Metric::AudioLoss => "audio_loss",
            Metric::VideoFreeze => "video_freeze",
            Metric::FrameRate => "frame_rate",
            Metric::Delay => "delay",
            Metric::Jitter => "jitter",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The values a verdict looks at, already reduced across subscribers. `None`: nothing of
/// that kind was received in this scenario (no video), so it is not judged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct StepQoe {
    pub join_pct: f64,
    pub audio_loss_pct: Option<f64>,
    pub freeze_pct: Option<f64>,
    pub frame_rate_pct: Option<f64>,
    pub delay_ms: Option<f64>,
    pub jitter_ms: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Breach {
    pub metric: Metric,
    pub value: f64,
    pub limit: f64,
}

impl fmt::Display for Breach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (unit, op) = match self.metric {
            Metric::Joins | Metric::FrameRate => ("%", "<"),
            Metric::AudioLoss | Metric::VideoFreeze => ("%", ">="),
            Metric::Delay | Metric::Jitter => (" ms", ">="),
        };
        write!(
            f,
            "{} {:.2}{unit} {op} {}{unit}",
            self.metric, self.value, self.limit
        )
    }
}

/// Every threshold the step breaks; empty when it held. NaN counts as a breach: a metric
/// that could not be measured cannot be said to hold.
pub fn verdict(t: &Thresholds, q: &StepQoe) -> Vec<Breach> {
    let mut out = Vec::new();
    let mut check = |metric, value: Option<f64>, limit: f64, at_least: bool| {
        let Some(value) = value else { return };
        let ok = if at_least {
            value >= limit
        } else {
            value < limit
        };
        if !ok || value.is_nan() {
            out.push(Breach {
                metric,
                value,
                limit,
            });
        }
    };
    check(Metric::Joins, Some(q.join_pct), t.min_join_pct, true);
    check(
        Metric::AudioLoss,
        q.audio_loss_pct,
        t.max_audio_loss_pct,
        false,
    );
    check(Metric::VideoFreeze, q.freeze_pct, t.max_freeze_pct, false);
    check(
        Metric::FrameRate,
        q.frame_rate_pct,
        t.min_frame_rate_pct,
        true,
    );
    check(Metric::Delay, q.delay_ms, t.max_delay_ms, false);
    check(Metric::Jitter, q.jitter_ms, t.max_jitter_ms, false);
    out
}

/// The participant counts of a staircase: start, start+step, ... up to max (inclusive).
pub fn staircase(start: u32, step: u32, max: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut n = start.max(1);
    while n < max {
        out.push(n);
        n = n.saturating_add(step.max(1));
    }
    out.push(max.max(start.max(1)));
    out
}

/// Where the SFU ramp stands after each step (the shared staircase logic).
pub type Knee = crate::stats::knee::Knee<Metric>;

/// Capacity over `--repeat` ramps: the smallest is what can be promised, the spread says
/// how noisy the machine was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CapacityRange {
    pub min: u32,
    pub max: u32,
}

pub fn capacity_range(caps: &[Option<u32>]) -> Option<CapacityRange> {
    let vals: Vec<u32> = caps.iter().map(|c| c.unwrap_or(0)).collect();
    Some(CapacityRange {
        min: *vals.iter().min()?,
        max: *vals.iter().max()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> StepQoe {
        StepQoe {
            join_pct: 100.0,
            audio_loss_pct: Some(0.5),
            freeze_pct: Some(0.0),
            frame_rate_pct: Some(95.0),
            delay_ms: Some(20.0),
            jitter_ms: Some(2.0),
        }
    }

    #[test]
    fn verdict_checks_each_threshold_in_order() {
        let t = Thresholds::default();
        assert!(verdict(&t, &good()).is_empty());
        let bad = StepQoe {
            join_pct: 99.0,
            audio_loss_pct: Some(1.0),
            freeze_pct: Some(1.0),
            frame_rate_pct: Some(89.9),
            delay_ms: Some(150.0),
            jitter_ms: Some(30.0),
        };
        let metrics: Vec<Metric> = verdict(&t, &bad).iter().map(|b| b.metric).collect();
        use Metric::*;
        assert_eq!(
            metrics,
            [Joins, AudioLoss, VideoFreeze, FrameRate, Delay, Jitter]
        );
        assert_eq!(verdict(&t, &bad)[3].to_string(), "frame_rate 89.90% < 90%");
        // Unjudged metrics are skipped; NaN is a breach.
        let q = StepQoe {
            freeze_pct: None,
            frame_rate_pct: None,
            delay_ms: Some(f64::NAN),
            ..good()
        };
        assert_eq!(
            verdict(&t, &q).iter().map(|b| b.metric).collect::<Vec<_>>(),
            [Delay]
        );
    }

    #[test]
    fn staircase_and_knee() {
        assert_eq!(staircase(10, 10, 40), [10, 20, 30, 40]);
        assert_eq!(staircase(10, 25, 60), [10, 35, 60]);
        assert_eq!(staircase(5, 1, 5), [5]);
        let b = Some(Metric::AudioLoss);
        let mut k = Knee::default();
        assert!(k.record(10, None));
        assert!(k.record(20, b));
        assert!(k.record(30, None));
        assert!(k.record(40, b));
        assert!(!k.record(50, b));
        assert_eq!(
            (k.capacity, k.first_failure),
            (Some(30), Some((20, Metric::AudioLoss)))
        );
        assert_eq!(
            capacity_range(&[Some(30), None, Some(40)]),
            Some(CapacityRange { min: 0, max: 40 })
        );
        assert_eq!(capacity_range(&[]), None);
    }
}
