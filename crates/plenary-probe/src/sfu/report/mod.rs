//! What `plenary probe sfu` writes: `report.json` (capacity, validity, first breach, every
//! step's p50/p95/p99 of every metric, config and environment), a self-contained
//! `report.html` beside it, `timeseries.ndjson` (one line per second) and `tracks.ndjson`
//! (every received track's window of every step, to find which streams broke).

pub mod html;

use super::ramp::{Breach, CapacityRange, Metric, StepQoe, Thresholds};
use super::scenario::Scenario;
use super::step::{Metrics, ProbeLoad, Subscriber};
use crate::stats::percentile::Percentiles;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// One second of the run (a line of `timeseries.ndjson`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Tick {
    pub t: f64,
    pub repeat: u32,
    pub step: usize,
    pub phase: &'static str,
    /// The step's size in the scenario's unit.
    pub target: u32,
    pub peers: u32,
    pub connected: u32,
    pub rx_mbps: f64,
    pub tx_mbps: f64,
    pub rx_pps: f64,
    pub audio_loss_pct: f64,
    pub video_loss_pct: f64,
    pub delay_mean_ms: f64,
    pub delay_max_ms: f64,
    pub frames_per_s: f64,
    pub lag_p99_ms: f64,
    pub socket_drops: u64,
    pub probe_cpu_pct: f64,
    pub server_cpu_pct: Option<f64>,
    pub server_rss_kb: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Joins {
    pub attempted: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub join_pct: f64,
    pub join_ms: Percentiles,
    pub errors: BTreeMap<String, u32>,
    /// Redirects the joins followed (room API `redirect`, WHIP/WHEP 307).
    pub redirects: u32,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ServerWindow {
    pub cpu_seconds: f64,
    /// % of one core.
    pub cpu_pct: f64,
    pub rss_kb: Option<u64>,
    /// Media received by subscribers per server CPU-second, Mbit.
    pub rx_mbit_per_cpu_s: Option<f64>,
    /// Each node of a cascade (one per `--server-pid`), in `--target` order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeCpu>,
}

/// One node's process over a step; null figures when it could not be read at both ends
/// (it died during the step).
#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeCpu {
    pub target: Option<String>,
    pub pid: u32,
    pub cpu_pct: Option<f64>,
    pub cpu_seconds: Option<f64>,
    pub rss_kb: Option<u64>,
}

/// What a step looks like over several nodes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CascadeStep {
    /// Participants per node at the end of the step (`http://host:port`).
    pub participants_per_node: BTreeMap<String, u32>,
    /// Subscribers' one-way delay from publishers on their own node and on another.
    pub delay: super::cascade::NodeDelay,
    /// Participants whose node let them go during the step (from its join to its end).
    pub rehome: Option<super::cascade::RehomeStats>,
    /// Bytes per link direction over the step, from the nodes' metrics (`--metrics-url`,
    /// `--local-nodes`), in node order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<super::links::Link>,
    /// Nodes whose links are not known over the step (unread, or restarted).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub links_missing: Vec<super::links::Missing>,
    /// Sum of the known links' `tx_mbps`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_mbps: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct StepResult {
    pub repeat: u32,
    pub index: usize,
    /// Size of the step in the scenario's unit.
    pub participants: u32,
    /// Everyone present, publishers included.
    pub population: u32,
    pub seconds: f64,
    pub joins: Joins,
    pub metrics: Metrics,
    /// Totals over all received tracks.
    pub pooled: super::step::Pooled,
    pub qoe: StepQoe,
    pub breaches: Vec<Breach>,
    pub held: bool,
    pub valid: bool,
    pub invalid_reasons: Vec<String>,
    pub rx_mbps: f64,
    pub tx_mbps: f64,
    pub rx_pps: f64,
    pub tracks_audio: usize,
    pub tracks_video: usize,
    pub keyframes_sent: u64,
    pub keyframe_requests_received: u64,
    pub probe: ProbeLoad,
    pub receive: ReceiveWindow,
    pub probe_lag_ms: Percentiles,
    pub server: Option<ServerWindow>,
    /// Several targets, or a redirect or re-homing on one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cascade: Option<CascadeStep>,
    /// Per-subscriber values, for the report's distributions (not in the JSON: large).
    #[serde(skip)]
    pub subscribers: Vec<Subscriber>,
}

/// The subscribers' receive path over the window: the probe's CPU per datagram it
/// received, and, on the fast path, the feedback it sent back and the RTX it got.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ReceiveWindow {
    /// "fast" (the probe's own SRTP, recvmmsg) or "str0m" (`--str0m-receive`).
    pub path: &'static str,
    /// All the probe's CPU (sending included) over the datagrams it received, µs.
    pub probe_cpu_us_per_rx_datagram: Option<f64>,
    /// Zero on str0m's path (str0m does not say).
    pub fast: crate::sfu::fastrx::FastCounters,
}

#[derive(Clone, Debug, Serialize)]
pub struct RepeatResult {
    pub capacity: Option<u32>,
    pub first_breach: Option<Metric>,
    pub first_breach_at: Option<u32>,
    pub ended_by_failures: bool,
}

/// The repeat whose capacity the report gives (the lowest; the first of equals), so its first
/// breach is the one named beside that capacity.
pub fn reported_repeat(repeats: &[RepeatResult]) -> Option<&RepeatResult> {
    repeats.iter().min_by_key(|r| r.capacity.unwrap_or(0))
}

#[derive(Clone, Debug, Serialize)]
pub struct RunConfig {
    pub scenario: Scenario,
    /// The first of `targets`.
    pub target: String,
    pub targets: Vec<String>,
    pub api: super::args::Api,
    pub embedded: bool,
    pub repeat: u32,
    pub require: Option<u32>,
    pub drivers: usize,
    pub probe_cpus: Option<Vec<usize>>,
    pub sfu_cpus: Option<Vec<usize>>,
    /// The first of `server_pids`.
    pub server_pid: Option<u32>,
    pub server_pids: Vec<u32>,
    pub bind_ip: String,
    /// "fast" or "str0m" (`--str0m-receive`).
    pub receive_path: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct Environment {
    pub kernel: String,
    pub cpus: usize,
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub webrtc_stack: &'static str,
}

impl Environment {
    pub fn read() -> Environment {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        Environment {
            kernel: read("/proc/sys/kernel/osrelease"),
            cpus: super::engine::load::cpu_count(),
            loadavg_start: read("/proc/loadavg"),
            loadavg_end: String::new(),
            webrtc_stack: "str0m 0.25.0 (aws-lc-rs), RTP mode",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub started_unix: u64,
    pub command: Vec<String>,
    /// Largest step (in `unit`) that held; the smallest over repeats; 0 if none held.
    pub capacity: u32,
    pub capacity_range: Option<CapacityRange>,
    pub unit: &'static str,
    pub valid: bool,
    /// The metric that broke first (first failing step of the first repeat), or null.
    pub first_breach: Option<Metric>,
    pub first_breach_at: Option<u32>,
    pub verdict: &'static str,
    pub exit_code: i32,
    pub summary: String,
    pub invalid_reasons: Vec<String>,
    pub interrupted: bool,
    pub thresholds: Thresholds,
    pub config: RunConfig,
    pub environment: Environment,
    pub repeats: Vec<RepeatResult>,
    pub steps: Vec<StepResult>,
    #[serde(skip)]
    pub timeline: Vec<Tick>,
}

/// Writes `report.json` and `report.html` into `dir` (the NDJSON is written as it runs).
pub fn write(dir: &Path, report: &Report) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("report.json"), json + "\n")?;
    std::fs::write(dir.join("report.html"), html::render(report))?;
    Ok(())
}

/// The verdict and exit code: 2 invalid, 1 below `--require` (or a single-step run that
/// breached), else 0.
pub fn decide(
    valid: bool,
    single_step: bool,
    any_breach: bool,
    capacity: u32,
    require: Option<u32>,
) -> (&'static str, i32) {
    if !valid {
        ("invalid", 2)
    } else if require.is_some_and(|n| capacity < n)
        || (require.is_none() && single_step && any_breach)
    {
        ("breached", 1)
    } else {
        ("ok", 0)
    }
}

pub fn summary(r: &Report) -> String {
    let mut s = match (r.capacity, r.capacity_range) {
        (0, _) => format!("no step held ({})", r.unit),
        (c, Some(range)) if range.min != range.max => format!(
            "holds {c} {} at these thresholds (range {}-{} over {} ramps)",
            r.unit,
            range.min,
            range.max,
            r.repeats.len()
        ),
        (c, _) => format!("holds {c} {} at these thresholds", r.unit),
    };
    if let (Some(m), Some(at)) = (r.first_breach, r.first_breach_at) {
        s += &format!(
            "; {} was the first metric to break, at {at}",
            m.name().replace('_', " ")
        );
    }
    if !r.valid {
        s += "; INVALID run: ";
        s += &r.invalid_reasons.join("; ");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(decide(false, false, false, 100, None), ("invalid", 2));
        assert_eq!(decide(true, false, true, 100, None), ("ok", 0));
        assert_eq!(decide(true, false, true, 100, Some(100)), ("ok", 0));
        assert_eq!(decide(true, false, true, 90, Some(100)), ("breached", 1));
        assert_eq!(decide(true, true, true, 0, None), ("breached", 1));
        assert_eq!(decide(true, true, false, 5, None), ("ok", 0));
    }

    #[test]
    fn the_breach_named_is_the_lowest_repeats() {
        let rep = |capacity, at| RepeatResult {
            capacity,
            first_breach: Some(Metric::VideoFreeze),
            first_breach_at: Some(at),
            ended_by_failures: true,
        };
        let repeats = [rep(Some(40), 50), rep(Some(30), 40), rep(Some(30), 60)];
        assert_eq!(reported_repeat(&repeats).unwrap().first_breach_at, Some(40));
        // A repeat where nothing held counts as capacity 0.
        let repeats = [rep(Some(40), 50), rep(None, 10)];
        assert_eq!(reported_repeat(&repeats).unwrap().first_breach_at, Some(10));
        assert!(reported_repeat(&[]).is_none());
    }
}
