//! What a run produces: `report.json` (everything, for scripts and the committed results
//! in `loadtest/results/`), a self-contained `report.html` with inline SVG charts (to show
//! a board), and a short table on stdout.

pub mod html;
pub mod svg;
pub mod table;

use crate::stats::knee::{Metric, RampSpec, Thresholds};
use crate::stats::percentile::Percentiles;
use crate::stats::validity::Limits;
use crate::turn::flow::FlowShape;
use crate::turn::step::StepResult;
use crate::turn::{FlowKind, PeerMode, Transport};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// One progress point (each second of the run).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Tick {
    /// Seconds since the probe started.
    pub t: f64,
    pub step: usize,
    pub measuring: bool,
    pub ready: u32,
    pub sent_pps: f64,
    pub relayed_pps: f64,
    pub probe_cpu_pct: f64,
}

#[derive(Debug, Serialize)]
pub struct RunConfig {
    pub server: String,
    pub server_addr: String,
    pub transport: Transport,
    pub flow: FlowKind,
    pub shape: FlowShape,
    pub pps_per_flow: f64,
    pub peer_mode: PeerMode,
    pub peers: Vec<String>,
    pub send_indications: bool,
    pub steps: Vec<u32>,
    pub ramp: Option<RampSpec>,
    pub measure_seconds: u64,
    pub warmup_seconds: u64,
    pub threads: usize,
    pub server_pid: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct FirstFailure {
    pub allocations: u32,
    pub metric: Metric,
}

#[derive(Debug, Serialize)]
pub struct RunResult {
    /// "ok", "breached" or "invalid".
    pub verdict: &'static str,
    pub exit_code: i32,
    pub valid: bool,
    pub invalid_reasons: Vec<String>,
    pub interrupted: bool,
    /// Largest step (allocations) that held.
    pub capacity: Option<u32>,
    /// The largest step tested held: the true capacity may be higher.
    pub capacity_at_ceiling: bool,
    pub first_failure: Option<FirstFailure>,
    pub require: Option<u32>,
    /// One sentence for people.
    pub summary: String,
}

#[derive(Debug, Serialize)]
pub struct AllocationTotals {
    pub attempted: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub alloc_time_ms: Percentiles,
    pub errors: BTreeMap<String, u32>,
}

#[derive(Debug, Serialize)]
pub struct ServerTotals {
    pub pid: u32,
    /// Over the measured windows only.
    pub cpu_seconds: f64,
    pub relayed_packets: u64,
    pub relayed_per_cpu_second: Option<f64>,
    pub peak_rss_kb: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub started_unix: u64,
    pub command: Vec<String>,
    pub config: RunConfig,
    pub thresholds: Thresholds,
    pub limits: Limits,
    pub result: RunResult,
    pub allocations: AllocationTotals,
    pub server: Option<ServerTotals>,
    pub steps: Vec<StepResult>,
    pub timeline: Vec<Tick>,
}

/// The verdict and exit code from the steps (DESIGN.md: 0 ok, 1 breached or below
/// `--require`, 2 invalid). A ramp is expected to break somewhere, so only a single step
/// or `--require` turns a breach into exit 1.
pub fn decide(
    single_step: bool,
    steps: &[StepResult],
    capacity: Option<u32>,
    interrupted: bool,
    require: Option<u32>,
) -> (&'static str, i32, Vec<String>) {
    let mut reasons: Vec<String> = steps
        .iter()
        .filter(|s| !s.valid)
        .flat_map(|s| {
            s.invalid_reasons
                .iter()
                .map(move |r| format!("step {}: {r}", s.index + 1))
        })
        .collect();
    if let Some(first) = steps.first().filter(|s| s.ready == 0) {
        let errors: Vec<String> = first
            .setup
            .errors
            .iter()
            .map(|(kind, n)| format!("{n} x {kind}"))
            .collect();
        reasons.push(format!(
            "no allocation succeeded ({}): check the server address, transport, credentials and its peer policy",
            errors.join(", ")
        ));
    }
    if interrupted {
        reasons.push("interrupted before the run finished".into());
    }
    if steps.is_empty() && reasons.is_empty() {
        reasons.push("no step was measured".into());
    }
    if !reasons.is_empty() {
        return ("invalid", 2, reasons);
    }
    let below_require = require.is_some_and(|n| capacity.unwrap_or(0) < n);
    let single_breached = single_step && !steps[0].held;
    if below_require || single_breached {
        ("breached", 1, reasons)
    } else {
        ("ok", 0, reasons)
    }
}

pub fn summary_sentence(kind: FlowKind, r: &RunResult, ceiling: u32) -> String {
    let what = crate::turn::name(&kind);
    let mut s = match r.capacity {
        Some(c) if r.capacity_at_ceiling => format!(
            "held {c} {what} allocations, the largest step tested: capacity is at least {c}"
        ),
        Some(c) => format!("holds {c} {what} allocations at these thresholds"),
        None => format!("no step held (up to {ceiling} {what} allocations)"),
    };
    if let Some(f) = &r.first_failure {
        s += &format!(
            "; {} was the first metric to break, at {}",
            f.metric, f.allocations
        );
    }
    if !r.valid {
        s += "; INVALID run: ";
        s += &r.invalid_reasons.join("; ");
    }
    s
}

/// The command line with secrets masked: reports get committed and shared.
pub fn redact_command(argv: impl IntoIterator<Item = String>) -> Vec<String> {
    let mask = |flag: &str, value: &str| match flag {
        "--user" => match value.split_once(':') {
            Some((name, _)) => format!("{name}:***"),
            None => "***".into(),
        },
        _ => "***".into(),
    };
    let mut out: Vec<String> = Vec::new();
    for arg in argv {
        let prev = out.last().map(String::as_str);
        let masked = if let Some(flag @ ("--secret" | "--user")) = prev {
            mask(flag, &arg)
        } else if let Some((flag @ ("--secret" | "--user"), value)) = arg.split_once('=') {
            format!("{flag}={}", mask(flag, value))
        } else {
            arg
        };
        out.push(masked);
    }
    out
}

/// Writes `report.json` and `report.html` into `dir`.
pub fn write(dir: &Path, report: &Report) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("report.json"), json + "\n")?;
    std::fs::write(dir.join("report.html"), html::render(report))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::flow::{FlowStats, Mode};
    use crate::turn::step::{summarize, ProbeWindow, Setup, StepInput};

    /// A step whose only flow lost `lost` of 100 packets; `cpu` is the probe's CPU %.
    fn step(index: usize, lost: u64, cpu: f64) -> StepResult {
        let mut f = FlowStats::new(Mode::Echo, 1);
        for seq in 0..100 {
            f.on_sent(1);
            if seq >= lost {
                f.on_back(1, seq, 0, 1_000);
            }
        }
        let mut probe = ProbeWindow::default();
        probe.load.cpu_pct = cpu;
        let input = StepInput {
            index,
            allocations: 10,
            ready: 10,
            setup: Setup::default(),
            measured_seconds: 2.0,
            probe,
            server: None,
        };
        summarize(
            input,
            &[f.take(3)],
            &Thresholds::default(),
            &Limits::default(),
        )
    }

    #[test]
    fn single_step_exit_codes() {
        assert_eq!(decide(true, &[step(0, 0, 5.0)], Some(10), false, None).1, 0);
        assert_eq!(decide(true, &[step(0, 5, 5.0)], None, false, None).1, 1);
        let (verdict, code, reasons) = decide(true, &[step(0, 0, 99.0)], Some(10), false, None);
        assert_eq!((verdict, code), ("invalid", 2));
        assert!(reasons[0].starts_with("step 1: load generator CPU"));
        assert_eq!(decide(true, &[step(0, 0, 5.0)], Some(10), true, None).1, 2);
        assert_eq!(decide(true, &[], None, false, None).1, 2);
        // Nothing could be set up: a configuration problem, not a capacity.
        let mut s = step(0, 0, 5.0);
        s.ready = 0;
        s.setup.errors.insert("401".into(), 10);
        let (_, code, reasons) = decide(true, &[s], None, false, None);
        assert_eq!(code, 2);
        assert!(reasons[0].contains("10 x 401"), "{reasons:?}");
    }

    #[test]
    fn ramp_exit_codes_follow_require() {
        let steps = [step(0, 0, 5.0), step(1, 5, 5.0), step(2, 5, 5.0)];
        // Breaking somewhere is what a ramp is for.
        assert_eq!(decide(false, &steps, Some(10), false, None).1, 0);
        assert_eq!(decide(false, &steps, Some(10), false, Some(10)).1, 0);
        assert_eq!(decide(false, &steps, Some(10), false, Some(11)).1, 1);
        assert_eq!(decide(false, &steps, None, false, Some(1)).1, 1);
    }

    #[test]
    fn secrets_are_masked_in_the_recorded_command() {
        let argv = [
            "probe",
            "--secret",
            "s3",
            "--user=alice:pw",
            "--user",
            "bob:pw2",
            "--secret=x",
            "--realm",
            "r",
        ];
        assert_eq!(
            redact_command(argv.map(String::from)),
            [
                "probe",
                "--secret",
                "***",
                "--user=alice:***",
                "--user",
                "bob:***",
                "--secret=***",
                "--realm",
                "r"
            ]
        );
    }

    #[test]
    fn summary_names_capacity_and_first_broken_metric() {
        let mut r = RunResult {
            verdict: "ok",
            exit_code: 0,
            valid: true,
            invalid_reasons: vec![],
            interrupted: false,
            capacity: Some(340),
            capacity_at_ceiling: false,
            first_failure: Some(FirstFailure {
                allocations: 360,
                metric: Metric::Loss,
            }),
            require: None,
            summary: String::new(),
        };
        assert_eq!(
            summary_sentence(FlowKind::Audio, &r, 500),
            "holds 340 audio allocations at these thresholds; loss was the first metric to break, at 360"
        );
        r.capacity = None;
        r.first_failure = None;
        assert_eq!(
            summary_sentence(FlowKind::Video, &r, 50),
            "no step held (up to 50 video allocations)"
        );
    }
}
