//! QoE thresholds, the verdict on one step, and the ramp's knee.
//!
//! A step holds when, at p95 across flows, loss, delay and jitter are under their limits
//! and enough allocations joined (DESIGN.md, "QoE thresholds"). Capacity is the largest
//! step that held; two consecutive failing steps end the ramp.

use serde::Serialize;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Thresholds {
    /// Loss of a flow, %, at p95 across flows: must be below.
    pub max_loss_pct: f64,
    /// Delay (RTT with an echo peer, one-way with a sink) of a flow at its own p95, ms,
    /// at p95 across flows: must be below.
    pub max_delay_ms: f64,
    /// RFC 3550 jitter of a flow, ms, at p95 across flows: must be below.
    pub max_jitter_ms: f64,
    /// Allocations ready out of those asked for, %: must be at least.
    pub min_join_pct: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            max_loss_pct: 1.0,
            max_delay_ms: 150.0,
            max_jitter_ms: 30.0,
            min_join_pct: 100.0,
        }
    }
}

/// The numbers a verdict looks at, already reduced to "p95 across flows".
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepQoe {
    pub join_pct: f64,
    pub loss_pct: f64,
    pub delay_ms: f64,
    pub jitter_ms: f64,
}

/// Metrics in the order they are checked, which is also the order a report names them
/// when several break in the same step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Joins,
    Loss,
    Delay,
    Jitter,
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Metric::Joins => "joins",
            Metric::Loss => "loss",
            Metric::Delay => "delay",
            Metric::Jitter => "jitter",
        })
    }
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
            Metric::Joins => ("%", "<"),
            Metric::Loss => ("%", ">="),
            Metric::Delay | Metric::Jitter => (" ms", ">="),
        };
        write!(
            f,
            "{} {:.2}{unit} {op} {}{unit}",
            self.metric, self.value, self.limit
        )
    }
}

/// One line for a step's outcome, as the progress output and the HTML table print it:
/// invalid with its reasons, held, or the thresholds it broke.
pub fn step_verdict<B: fmt::Display>(
    valid: bool,
    held: bool,
    invalid_reasons: &[String],
    breaches: &[B],
) -> String {
    if !valid {
        format!("INVALID: {}", invalid_reasons.join("; "))
    } else if held {
        "held".into()
    } else {
        breaches
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Every threshold the step breaks; empty when it held. NaN values count as breaches,
/// since a metric that could not be measured cannot be said to hold.
pub fn verdict(t: &Thresholds, q: &StepQoe) -> Vec<Breach> {
    let mut out = Vec::new();
    let mut check = |metric, value: f64, limit: f64, ok: bool| {
        if !ok || value.is_nan() {
            out.push(Breach {
                metric,
                value,
                limit,
            });
        }
    };
    check(
        Metric::Joins,
        q.join_pct,
        t.min_join_pct,
        q.join_pct >= t.min_join_pct,
    );
    check(
        Metric::Loss,
        q.loss_pct,
        t.max_loss_pct,
        q.loss_pct < t.max_loss_pct,
    );
    check(
        Metric::Delay,
        q.delay_ms,
        t.max_delay_ms,
        q.delay_ms < t.max_delay_ms,
    );
    check(
        Metric::Jitter,
        q.jitter_ms,
        t.max_jitter_ms,
        q.jitter_ms < t.max_jitter_ms,
    );
    out
}

/// `--ramp START:STEP:MAX`, in allocations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RampSpec {
    pub start: u32,
    pub step: u32,
    pub max: u32,
}

impl RampSpec {
    /// The allocation counts of each step: start, start+step, ... up to max (inclusive);
    /// the last step is max itself when the staircase does not land on it.
    pub fn steps(&self) -> Vec<u32> {
        let mut out = Vec::new();
        let mut n = self.start;
        while n < self.max {
            out.push(n);
            n = n.saturating_add(self.step.max(1));
        }
        out.push(self.max);
        out
    }
}

impl std::str::FromStr for RampSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let [start, step, max] = parts.as_slice() else {
            return Err(format!("expected START:STEP:MAX, got {s:?}"));
        };
        let num = |v: &str, what: &str| {
            v.trim()
                .parse::<u32>()
                .map_err(|_| format!("{what} in {s:?} is not a whole number"))
        };
        let spec = RampSpec {
            start: num(start, "START")?,
            step: num(step, "STEP")?,
            max: num(max, "MAX")?,
        };
        if spec.start == 0 || spec.step == 0 || spec.max < spec.start {
            return Err(format!(
                "ramp {s:?} needs START >= 1, STEP >= 1 and MAX >= START"
            ));
        }
        Ok(spec)
    }
}

/// Where a staircase ramp stands after each step; shared by the TURN and SFU probes, each
/// with its own metric type `M`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Knee<M> {
    /// Largest step (allocations, participants) that held; `None` if none did.
    pub capacity: Option<u32>,
    /// The first step that failed and the first metric it broke.
    pub first_failure: Option<(u32, M)>,
    /// Two consecutive failures ended the ramp.
    pub ended_by_failures: bool,
    consecutive_failures: u32,
}

impl<M> Default for Knee<M> {
    fn default() -> Self {
        Self {
            capacity: None,
            first_failure: None,
            ended_by_failures: false,
            consecutive_failures: 0,
        }
    }
}

impl<M: Copy> Knee<M> {
    /// Records a step and the first metric it broke (`None`: it held); returns whether the
    /// ramp should go on.
    pub fn record(&mut self, step: u32, first_breach: Option<M>) -> bool {
        match first_breach {
            None => {
                self.capacity = Some(self.capacity.map_or(step, |c| c.max(step)));
                self.consecutive_failures = 0;
            }
            Some(metric) => {
                self.first_failure.get_or_insert((step, metric));
                self.consecutive_failures += 1;
                if self.consecutive_failures >= 2 {
                    self.ended_by_failures = true;
                }
            }
        }
        !self.ended_by_failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_verdict_says_invalid_held_or_what_broke() {
        let reasons = vec!["probe cpu 95%".to_string()];
        assert_eq!(
            step_verdict::<String>(false, true, &reasons, &[]),
            "INVALID: probe cpu 95%"
        );
        assert_eq!(step_verdict::<String>(true, true, &[], &[]), "held");
        let broke = ["delay".to_string(), "jitter".to_string()];
        assert_eq!(step_verdict(true, false, &[], &broke), "delay, jitter");
    }

    fn qoe(join: f64, loss: f64, delay: f64, jitter: f64) -> StepQoe {
        StepQoe {
            join_pct: join,
            loss_pct: loss,
            delay_ms: delay,
            jitter_ms: jitter,
        }
    }

    #[test]
    fn verdict_checks_every_threshold_in_order() {
        let t = Thresholds::default();
        assert!(verdict(&t, &qoe(100.0, 0.99, 149.0, 29.0)).is_empty());
        let b = verdict(&t, &qoe(90.0, 1.0, 150.0, 30.0));
        let metrics: Vec<_> = b.iter().map(|b| b.metric).collect();
        assert_eq!(
            metrics,
            [Metric::Joins, Metric::Loss, Metric::Delay, Metric::Jitter]
        );
        assert_eq!(b[1].to_string(), "loss 1.00% >= 1%");
        assert_eq!(b[0].to_string(), "joins 90.00% < 100%");
        let b = verdict(&t, &qoe(100.0, 0.0, f64::NAN, 0.0));
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].metric, Metric::Delay);
    }

    #[test]
    fn ramp_spec_parses_and_expands() {
        let r: RampSpec = "50:50:200".parse().unwrap();
        assert_eq!(r.steps(), [50, 100, 150, 200]);
        let r: RampSpec = "10:25:60".parse().unwrap();
        assert_eq!(r.steps(), [10, 35, 60]);
        let r: RampSpec = "5:1:5".parse().unwrap();
        assert_eq!(r.steps(), [5]);
        for bad in ["", "1:2", "1:2:3:4", "0:1:5", "5:0:10", "10:5:5", "a:1:2"] {
            assert!(bad.parse::<RampSpec>().is_err(), "{bad}");
        }
    }

    fn breach(metric: Metric) -> Option<Metric> {
        Some(metric)
    }

    #[test]
    fn knee_is_the_largest_step_that_held() {
        let mut k = Knee::default();
        assert!(k.record(50, None));
        assert!(k.record(100, None));
        assert!(k.record(150, breach(Metric::Loss)));
        // A single failure does not end the ramp; a later pass raises capacity.
        assert!(k.record(200, None));
        assert!(k.record(250, breach(Metric::Delay)));
        assert!(!k.record(300, breach(Metric::Loss)));
        assert_eq!(k.capacity, Some(200));
        assert_eq!(k.first_failure, Some((150, Metric::Loss)));
        assert!(k.ended_by_failures);
    }

    #[test]
    fn no_step_held() {
        let mut k = Knee::default();
        assert!(k.record(10, breach(Metric::Joins)));
        assert!(!k.record(20, breach(Metric::Joins)));
        assert_eq!(k.capacity, None);
        assert_eq!(k.first_failure, Some((10, Metric::Joins)));
    }
}
