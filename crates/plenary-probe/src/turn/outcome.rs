//! From a finished run to its [`Report`]: totals over steps, capacity, verdict.

use super::args::TurnProbeArgs;
use super::plan::Plan;
use super::run::RunOutput;
use crate::report::{
    decide, redact_command, summary_sentence, AllocationTotals, FirstFailure, Report, RunConfig,
    RunResult, ServerTotals,
};
use crate::stats::percentile::Percentiles;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

pub fn build_report(
    args: &TurnProbeArgs,
    plan: &Plan,
    out: RunOutput,
    started: SystemTime,
) -> Report {
    let single_step = args.ramp.is_none();
    let capacity = if single_step {
        out.steps.first().filter(|s| s.held).map(|s| s.allocations)
    } else {
        out.knee.capacity
    };
    let ceiling = plan.steps.last().copied().unwrap_or(0);
    let (verdict, exit_code, invalid_reasons) = decide(
        single_step,
        &out.steps,
        capacity,
        out.interrupted,
        args.require,
    );
    let mut result = RunResult {
        verdict,
        exit_code,
        valid: exit_code != 2,
        invalid_reasons,
        interrupted: out.interrupted,
        capacity,
        capacity_at_ceiling: !single_step && capacity == Some(ceiling),
        first_failure: out
            .knee
            .first_failure
            .map(|(allocations, metric)| FirstFailure {
                allocations,
                metric,
            }),
        require: args.require,
        summary: String::new(),
    };
    result.summary = summary_sentence(args.flow, &result, ceiling);

    let mut errors: BTreeMap<String, u32> = BTreeMap::new();
    let mut samples = Vec::new();
    for s in &out.steps {
        for (k, v) in &s.setup.errors {
            *errors.entry(k.clone()).or_default() += v;
        }
        samples.extend_from_slice(&s.setup.alloc_samples_ms);
    }
    let sum = |f: fn(&crate::turn::step::StepResult) -> u32| out.steps.iter().map(f).sum();
    let allocations = AllocationTotals {
        attempted: sum(|s| s.setup.attempted),
        succeeded: sum(|s| s.setup.succeeded),
        failed: sum(|s| s.setup.failed),
        alloc_time_ms: Percentiles::of(&mut samples),
        errors,
    };

    let server = args.server_pid.map(|pid| {
        let windows = out.steps.iter().filter_map(|s| s.server.map(|w| (s, w)));
        let cpu_seconds: f64 = windows.clone().map(|(_, w)| w.cpu_seconds).sum();
        let relayed_packets: u64 = windows.clone().map(|(s, _)| s.at_peer + s.back).sum();
        let peak = windows
            .filter_map(|(_, w)| w.peak_rss_kb)
            .chain(out.server_peak_rss_kb)
            .max();
        ServerTotals {
            pid,
            cpu_seconds,
            relayed_packets,
            relayed_per_cpu_second: (cpu_seconds > 0.0)
                .then(|| relayed_packets as f64 / cpu_seconds),
            peak_rss_kb: peak,
        }
    });

    Report {
        tool: "plenary probe turn",
        version: env!("CARGO_PKG_VERSION"),
        started_unix: started
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        command: redact_command(std::env::args()),
        config: RunConfig {
            server: args.server.clone(),
            server_addr: plan.server.to_string(),
            transport: args.transport,
            flow: args.flow,
            shape: plan.shape,
            pps_per_flow: plan.shape.pps(),
            peer_mode: args.peer_mode,
            peers: out.peers.iter().map(ToString::to_string).collect(),
            send_indications: args.send_indications,
            steps: plan.steps.clone(),
            ramp: args.ramp,
            measure_seconds: plan.measure.as_secs(),
            warmup_seconds: plan.warmup.as_secs(),
            threads: args.threads,
            server_pid: args.server_pid,
        },
        thresholds: args.thresholds(),
        limits: args.limits(),
        result,
        allocations,
        server,
        steps: out.steps,
        timeline: out.timeline,
    }
}
