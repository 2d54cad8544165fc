//! One measured step, reduced from its flows' windows to the numbers a report shows and
//! a verdict checks. Pure: everything the driver measured is passed in.

use crate::stats::flow::FlowWindow;
use crate::stats::histogram::LogHistogram;
use crate::stats::knee::{verdict, Breach, StepQoe, Thresholds};
use crate::stats::percentile::Percentiles;
use crate::stats::validity::{check, Limits, LoadSide};
use serde::Serialize;
use std::collections::BTreeMap;

/// Allocation setup in one step (only the allocations this step added).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Setup {
    pub attempted: u32,
    pub succeeded: u32,
    pub failed: u32,
    /// Allocate request to success, ms.
    pub alloc_time_ms: Percentiles,
    /// Allocate request to permission/channel in place, ms.
    pub ready_time_ms: Percentiles,
    /// Failures by kind ("timeout", "401", "486", "connect"...).
    pub errors: BTreeMap<String, u32>,
    /// Every allocation time, for percentiles pooled over the run.
    #[serde(skip)]
    pub alloc_samples_ms: Vec<f64>,
}

/// The server process over the measured window (`--server-pid`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct ServerWindow {
    pub cpu_seconds: f64,
    pub cpu_pct: f64,
    pub rss_kb: Option<u64>,
    pub peak_rss_kb: Option<u64>,
    /// Relayed packets (both directions) per server CPU-second.
    pub relayed_per_cpu_second: Option<f64>,
}

/// The load generator over the measured window.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProbeWindow {
    #[serde(flatten)]
    pub load: LoadSide,
    pub lag_ms: Percentiles,
    pub send_errors: u64,
    pub misrouted: u64,
    pub refresh_failures: u64,
    pub broken_connections: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct StepResult {
    pub index: usize,
    /// Allocations this step asked for.
    pub allocations: u32,
    /// Allocations carrying traffic during the measurement.
    pub ready: u32,
    pub setup: Setup,
    pub measured_seconds: f64,
    pub sent: u64,
    pub at_peer: u64,
    pub back: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub offered_pps: f64,
    /// Packets the relay forwarded per second, both directions.
    pub relayed_pps: f64,
    /// All flows pooled: lost / sent.
    pub loss_pct: f64,
    /// Each flow's loss, across flows.
    pub flow_loss_pct: Percentiles,
    /// Every packet's delay, pooled (RTT with echo peers, one-way with sinks).
    pub delay_ms: Percentiles,
    /// Each flow's p95 delay, across flows.
    pub flow_delay_p95_ms: Percentiles,
    /// Each flow's RFC 3550 jitter (window mean), across flows.
    pub flow_jitter_ms: Percentiles,
    /// What the verdict looked at (p95 across flows).
    pub join_pct: f64,
    pub held: bool,
    pub breaches: Vec<Breach>,
    pub valid: bool,
    pub invalid_reasons: Vec<String>,
    pub probe: ProbeWindow,
    pub server: Option<ServerWindow>,
}

/// What the driver hands over for one step besides the flows' windows.
pub struct StepInput {
    pub index: usize,
    pub allocations: u32,
    pub ready: u32,
    pub setup: Setup,
    pub measured_seconds: f64,
    pub probe: ProbeWindow,
    /// Server CPU seconds and memory over the window, before the per-CPU-second ratio.
    pub server: Option<ServerWindow>,
}

pub fn summarize(
    input: StepInput,
    windows: &[FlowWindow],
    thresholds: &Thresholds,
    limits: &Limits,
) -> StepResult {
    let sum = |f: fn(&FlowWindow) -> u64| windows.iter().map(f).sum::<u64>();
    let (sent, at_peer, back, lost) = (
        sum(|w| w.sent),
        sum(|w| w.at_peer),
        sum(|w| w.back),
        sum(|w| w.lost),
    );
    let secs = input.measured_seconds.max(1e-9);
    let mut pooled = LogHistogram::new();
    windows.iter().for_each(|w| pooled.merge(&w.delay));
    // Flows that sent nothing (none should) say nothing about quality.
    let active = || windows.iter().filter(|w| w.sent > 0);
    let flow_loss = Percentiles::from_iter(active().map(|w| w.loss_pct));
    let flow_delay = Percentiles::from_iter(active().map(|w| {
        w.delay
            .quantile(0.95)
            .map_or(f64::NAN, |us| us as f64 / 1000.0)
    }));
    let flow_jitter =
        Percentiles::from_iter(active().map(|w| w.jitter_us.map_or(f64::NAN, |us| us / 1000.0)));
    let join_pct = if input.allocations == 0 {
        100.0
    } else {
        f64::from(input.ready) * 100.0 / f64::from(input.allocations)
    };
    // With no flow at all only joins can be judged (and they fail). A flow that delivered
    // nothing has no delay samples: NaN, which fails the step rather than passing it.
    let ran = flow_loss.count > 0;
    let p95_or = |p: Percentiles| {
        if p.count > 0 {
            p.p95
        } else if ran {
            f64::NAN
        } else {
            0.0
        }
    };
    let qoe = StepQoe {
        join_pct,
        loss_pct: p95_or(flow_loss),
        delay_ms: p95_or(flow_delay),
        jitter_ms: p95_or(flow_jitter),
    };
    let breaches = verdict(thresholds, &qoe);
    let invalid: Vec<String> = check(limits, &input.probe.load)
        .iter()
        .map(ToString::to_string)
        .collect();
    let relayed = at_peer + back;
    let server = input.server.map(|mut s| {
        s.relayed_per_cpu_second = (s.cpu_seconds > 0.0).then(|| relayed as f64 / s.cpu_seconds);
        s
    });
    StepResult {
        index: input.index,
        allocations: input.allocations,
        ready: input.ready,
        setup: input.setup,
        measured_seconds: input.measured_seconds,
        sent,
        at_peer,
        back,
        lost,
        duplicates: sum(|w| w.duplicates),
        reordered: sum(|w| w.reordered),
        offered_pps: sent as f64 / secs,
        relayed_pps: relayed as f64 / secs,
        loss_pct: crate::stats::seq::loss_pct(sent, lost),
        flow_loss_pct: flow_loss,
        delay_ms: pooled.percentiles_ms(),
        flow_delay_p95_ms: flow_delay,
        flow_jitter_ms: flow_jitter,
        join_pct,
        held: breaches.is_empty(),
        breaches,
        valid: invalid.is_empty(),
        invalid_reasons: invalid,
        probe: input.probe,
        server,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::flow::{FlowStats, Mode};
    use crate::stats::knee::Metric;

    fn window(sent: u64, back: u64, rtt_us: u64) -> FlowWindow {
        let mut f = FlowStats::new(Mode::Echo, 1);
        for seq in 0..sent {
            f.on_sent(1);
            f.on_peer(1, seq, 0, rtt_us / 2);
            if seq < back {
                f.on_back(1, seq, seq * 20_000, seq * 20_000 + rtt_us);
            }
        }
        f.take(3)
    }

    fn input(allocations: u32, ready: u32) -> StepInput {
        StepInput {
            index: 0,
            allocations,
            ready,
            setup: Setup::default(),
            measured_seconds: 2.0,
            probe: ProbeWindow {
                load: LoadSide {
                    cpu_pct: 10.0,
                    threads: 1,
                    lag_p99_ms: 1.0,
                    local_drops: 0,
                    send_attempts: 400,
                },
                ..ProbeWindow::default()
            },
            server: Some(ServerWindow {
                cpu_seconds: 0.5,
                ..ServerWindow::default()
            }),
        }
    }

    #[test]
    fn clean_step_holds() {
        let w: Vec<_> = (0..4).map(|_| window(100, 100, 2_000)).collect();
        let r = summarize(input(4, 4), &w, &Thresholds::default(), &Limits::default());
        assert!(
            r.held && r.valid,
            "{:?} {:?}",
            r.breaches,
            r.invalid_reasons
        );
        assert_eq!((r.sent, r.at_peer, r.back, r.lost), (400, 400, 400, 0));
        assert_eq!(r.relayed_pps, 400.0);
        assert_eq!(r.offered_pps, 200.0);
        assert_eq!(r.delay_ms.p95, 2.0);
        assert_eq!(r.flow_delay_p95_ms.p95, 2.0);
        assert_eq!(r.server.unwrap().relayed_per_cpu_second, Some(1600.0));
    }

    #[test]
    fn one_lossy_flow_fails_the_step_on_loss() {
        let mut w: Vec<_> = (0..19).map(|_| window(100, 100, 2_000)).collect();
        w.push(window(100, 90, 2_000));
        let r = summarize(
            input(20, 20),
            &w,
            &Thresholds::default(),
            &Limits::default(),
        );
        assert_eq!(r.loss_pct, 0.5);
        // p95 across 20 flows is the 19th worst: still 0, the step holds.
        assert!(r.held);
        w.push(window(100, 90, 2_000));
        let r = summarize(
            input(21, 21),
            &w,
            &Thresholds::default(),
            &Limits::default(),
        );
        assert_eq!(r.breaches[0].metric, Metric::Loss);
        assert_eq!(r.flow_loss_pct.max, 10.0);
    }

    #[test]
    fn missing_allocations_and_slow_probe() {
        let w = vec![window(10, 10, 1_000)];
        let mut i = input(2, 1);
        i.probe.load.cpu_pct = 99.0;
        let r = summarize(i, &w, &Thresholds::default(), &Limits::default());
        assert_eq!(r.join_pct, 50.0);
        assert_eq!(r.breaches[0].metric, Metric::Joins);
        assert!(!r.valid);
        assert!(r.invalid_reasons[0].contains("CPU"));
        // Nothing at all: joins fail and nothing else can be judged.
        let r = summarize(input(3, 0), &[], &Thresholds::default(), &Limits::default());
        assert!(!r.held);
        assert_eq!(r.breaches.len(), 1, "only joins: {:?}", r.breaches);
        assert_eq!(r.relayed_pps, 0.0);
        // Flows that sent but got nothing back: loss fails, and delay cannot pass.
        let r = summarize(
            input(1, 1),
            &[window(10, 0, 0)],
            &Thresholds::default(),
            &Limits::default(),
        );
        let metrics: Vec<_> = r.breaches.iter().map(|b| b.metric).collect();
        assert_eq!(metrics, [Metric::Loss, Metric::Delay, Metric::Jitter]);
    }
}
