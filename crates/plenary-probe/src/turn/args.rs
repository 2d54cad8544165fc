//! Command-line arguments of `plenary probe turn`, and what they resolve to.

use crate::stats::knee::{RampSpec, Thresholds};
use crate::stats::validity::Limits;
use clap::{Args, ValueEnum};
use std::path::PathBuf;

/// The name as typed on the command line ("udp", "audio", "echo"...).
pub fn name(v: &impl ValueEnum) -> String {
    v.to_possible_value()
        .map_or_else(String::new, |p| p.get_name().to_string())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowKind {
    /// 50 packets/s of 160 bytes (20 ms Opus frames).
    Audio,
    /// 30 frames/s of 3 packets of 1100 bytes, sent back to back (≈ 90 packets/s).
    Video,
    /// --pps packets/s of --size bytes, evenly spaced.
    Fixed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerMode {
    /// The peer sends every packet back through the relay: round-trip delay and loss.
    Echo,
    /// The peer only counts: one-way delay and loss, half the relay work per packet.
    Sink,
}

/// Synthetic TURN clients against any TURN server (coturn, eturnal, Plenary...): N
/// allocations, each with a permission and a channel to a peer the probe runs itself,
/// carrying audio- or video-shaped flows. Reports allocation times, relayed packets/s,
/// loss, delay, jitter, and with --server-pid the relay work per server CPU-second.
///
/// Exit status: 0 held, 1 thresholds breached (or capacity below --require), 2 invalid
/// run (the probe, not the server, was the limit).
#[derive(Args, Clone, Debug)]
pub struct TurnProbeArgs {
    /// TURN server address (host:port).
    #[arg(long, default_value = "127.0.0.1:3478")]
    pub server: String,
    /// Transport to the server.
    #[arg(long, value_enum, default_value_t = Transport::Udp)]
    pub transport: Transport,
    /// TURN REST shared secret (coturn's static-auth-secret): usernames are
    /// "expiry:probeN" and passwords base64(HMAC-SHA1(secret, username)).
    #[arg(long, conflicts_with = "user")]
    pub secret: Option<String>,
    /// Static long-term credentials, "name:password".
    #[arg(long)]
    pub user: Option<String>,
    /// Realm for the credentials; by default the one the server names in its 401.
    #[arg(long)]
    pub realm: Option<String>,
    /// Seconds a REST username stays valid (its expiry is now + this).
    #[arg(long, default_value_t = 86_400)]
    pub rest_ttl: u64,
    /// Allocations (one flow each) for a single step; ignored with --ramp.
    #[arg(long, default_value_t = 10)]
    pub allocations: u32,
    /// Shape of each flow.
    #[arg(long, value_enum, default_value_t = FlowKind::Audio)]
    pub flow: FlowKind,
    /// Packets per second per flow (--flow fixed; overrides the audio/video rate).
    #[arg(long)]
    pub pps: Option<u32>,
    /// Payload bytes per packet (--flow fixed; overrides the audio/video size). At least
    /// 28, the probe's timestamp header.
    #[arg(long)]
    pub size: Option<usize>,
    /// Measured seconds of a single step (after --warmup).
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Staircase START:STEP:MAX allocations, one step per --hold seconds, until two
    /// consecutive steps fail or MAX is reached. Replaces --allocations/--duration.
    #[arg(long)]
    pub ramp: Option<RampSpec>,
    /// Measured seconds per ramp step (after --warmup).
    #[arg(long, default_value_t = 10)]
    pub hold: u64,
    /// Seconds of traffic discarded at the start of each step, after new allocations.
    #[arg(long, default_value_t = 1)]
    pub warmup: u64,
    /// PID of the server process: its CPU seconds and peak RSS go in the report, with the
    /// relayed packets per server CPU-second.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Directory for report.json and report.html (created if missing).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Exit 1 unless capacity (allocations of the largest step that held) is at least N.
    #[arg(long)]
    pub require: Option<u32>,
    /// Send data in Send indications (CreatePermission, no channel) instead of ChannelData.
    #[arg(long)]
    pub send_indications: bool,
    /// TLS: do not verify the server certificate (self-signed test certificates).
    #[arg(long)]
    pub insecure: bool,
    /// TLS: PEM file of CA certificates to trust (default: the system bundle).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// TLS: server name to send and verify (default: the host of --server).
    #[arg(long)]
    pub sni: Option<String>,
    /// Address the probe's peers listen on (it must be reachable from the relay and
    /// allowed by its peer policy).
    #[arg(long, default_value = "127.0.0.1")]
    pub peer_ip: std::net::IpAddr,
    /// What the peers do with packets.
    #[arg(long, value_enum, default_value_t = PeerMode::Echo)]
    pub peer_mode: PeerMode,
    /// Step fails when loss (p95 across flows) reaches this %.
    #[arg(long, default_value_t = 1.0)]
    pub max_loss_pct: f64,
    /// Step fails when delay (each flow's p95, p95 across flows) reaches this, ms.
    #[arg(long, default_value_t = 150.0)]
    pub max_rtt_ms: f64,
    /// Step fails when RFC 3550 jitter (p95 across flows) reaches this, ms.
    #[arg(long, default_value_t = 30.0)]
    pub max_jitter_ms: f64,
    /// Step fails when fewer than this % of allocations are ready.
    #[arg(long, default_value_t = 100.0)]
    pub min_join_pct: f64,
    /// Run is invalid when the probe uses more than this % of a core per thread.
    #[arg(long, default_value_t = 90.0)]
    pub max_probe_cpu_pct: f64,
    /// Run is invalid when packets leave later than their schedule by this much at p99, ms.
    #[arg(long, default_value_t = 20.0)]
    pub max_lag_ms: f64,
    /// Runtime worker threads (1: a single-threaded runtime, best pinned with taskset).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Allocations being set up at once.
    #[arg(long, default_value_t = 32)]
    pub setup_concurrency: usize,
    /// Milliseconds one TURN transaction (or connect/handshake) may take.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

impl TurnProbeArgs {
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            max_loss_pct: self.max_loss_pct,
            max_delay_ms: self.max_rtt_ms,
            max_jitter_ms: self.max_jitter_ms,
            min_join_pct: self.min_join_pct,
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_cpu_pct: self.max_probe_cpu_pct,
            max_lag_p99_ms: self.max_lag_ms,
            ..Limits::default()
        }
    }

    /// Allocations of each step, and the measured seconds of each.
    pub fn steps(&self) -> (Vec<u32>, u64) {
        match self.ramp {
            Some(r) => (r.steps(), self.hold),
            None => (vec![self.allocations], self.duration),
        }
    }
}
