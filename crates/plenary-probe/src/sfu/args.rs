//! Command-line arguments of `plenary probe sfu`.

use super::ramp::Thresholds;
use super::scenario::Scenario;
use clap::{Args, ValueEnum};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// Plenary: WHIP/WHEP and the room API (docs/decisions/0003).
    Plenary,
    /// Janus VideoRoom over Janus's HTTP API (--target is its API root, e.g.
    /// http://127.0.0.1:8088/janus).
    Janus,
}

/// Synthetic WebRTC participants (str0m, no encoders) against an SFU: a scenario from
/// loadtest/*.toml, a staircase ramp of participants, receiver-side QoE (loss, jitter,
/// one-way delay, frame rate, W3C freezes, audio gaps, time to first frame, joins), and
/// the capacity: the largest step whose p95 across subscribers held every threshold.
///
/// Exit status: 0 capacity >= --require (or no --require and the run was valid), 1 below
/// it (or a single-step run that breached), 2 invalid run (the probe, not the server, was
/// the limit, or nobody could join).
#[derive(Args, Clone, Debug)]
pub struct SfuProbeArgs {
    /// Scenario: webinar, assembly, meeting, assembly-500 (built in, same as loadtest/NAME.toml) or a
    /// path to a scenario file.
    #[arg(long, default_value = "webinar")]
    pub scenario: String,
    /// Start an SFU in this process, pinned to --sfu-cpus, with the probe on
    /// --probe-cpus (the default when no --target is given).
    #[arg(long, conflicts_with = "target")]
    pub embedded: bool,
    /// The server to drive: its HTTP base URL (http://host:port) for Plenary, or the
    /// Janus HTTP API root with --api janus. Several comma-separated Plenary URLs are the
    /// nodes of one cascade: participant i joins URL i % n, except the scenario's
    /// publishers (presenters, cameras), who all join the first, so the others receive
    /// them over node-to-node links. Room API participants whose node closes their socket
    /// re-join at the next node of the room (joined.nodes) or the next URL.
    #[arg(long, value_name = "URL[,URL...]")]
    pub target: Option<String>,
    /// Start a cascade on this machine for the run: a redis-server and N `plenary sfu`
    /// processes on loopback (node i pinned to the i-th of --sfu-cpus, cycling; one media
    /// worker each, metrics on a free loopback port, read as with --metrics-url), driven
    /// as several --target URLs are. Their logs stay in a temp directory named at start;
    /// every process is stopped at the end.
    #[arg(long, value_name = "N", conflicts_with_all = ["target", "embedded", "sfu_config"])]
    pub local_nodes: Option<usize>,
    /// With --local-nodes: SIGKILL node K (0-based; node 0 holds the publishers) SECS seconds
    /// into the first measured step, once. That step's report holds the re-homings of the
    /// killed node's participants (steps[].cascade.rehome: rejoin, audio and video back).
    #[arg(long, value_name = "K@SECS", requires = "local_nodes")]
    pub kill_node: Option<String>,
    /// With --local-nodes: SIGSTOP node K SECS seconds into the first measured step, and
    /// leave it stopped (a machine gone off the network: no FIN, no RST, no ICMP). Its
    /// participants must notice by themselves (room API pings stop) and re-home; reported
    /// as for --kill-node.
    #[arg(
        long,
        value_name = "K@SECS",
        requires = "local_nodes",
        conflicts_with = "kill_node"
    )]
    pub freeze_node: Option<String>,
    /// Which signalling the target speaks.
    #[arg(long, value_enum, default_value_t = Api::Plenary)]
    pub api: Api,
    /// Override the scenario's ramp: START:STEP:MAX (in the scenario's unit).
    #[arg(long)]
    pub ramp: Option<String>,
    /// Override the scenario's measured seconds per step.
    #[arg(long)]
    pub hold: Option<u64>,
    /// Override the scenario's warm-up seconds per step (discarded).
    #[arg(long)]
    pub warmup: Option<u64>,
    /// Run the whole ramp K times; the report gives the capacity range and `capacity` is
    /// the smallest.
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
    /// Exit 1 unless the capacity is at least N.
    #[arg(long)]
    pub require: Option<u32>,
    /// Directory for report.json, report.html, timeseries.ndjson (per second) and
    /// tracks.ndjson (per received track and step); created if missing.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// PID of a local server process: its CPU and RSS go in the report. With several
    /// --target URLs, one PID per URL in the same order (comma-separated): each node's CPU
    /// is reported, and their sum is the server's.
    #[arg(long, value_delimiter = ',', value_name = "PID[,PID...]")]
    pub server_pid: Vec<u32>,
    /// Each node's Prometheus endpoint, one per --target URL in the same order
    /// (comma-separated; e.g. http://127.0.0.1:9642/metrics, as set by `plenary sfu
    /// --metrics`). Read at each step's start and end for the bytes each node sent each
    /// peer over the cascade links (steps[].cascade.links). A node that cannot be read is
    /// reported as missing; the run goes on. --local-nodes sets this itself.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "URL[,URL...]",
        requires = "target"
    )]
    pub metrics_url: Vec<String>,
    /// CPUs of the embedded SFU (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub sfu_cpus: Vec<usize>,
    /// The embedded SFU's config (configs/sfu.toml format), to measure the settings you run;
    /// its listen addresses and pin-cpus are replaced by the probe's.
    #[arg(long, value_name = "FILE.toml", conflicts_with = "target")]
    pub sfu_config: Option<std::path::PathBuf>,
    /// CPUs the probe's threads are pinned to (comma-separated). By default the CPU after
    /// the embedded SFU's when the machine has one; not pinned against a --target.
    #[arg(long, value_delimiter = ',')]
    pub probe_cpus: Option<Vec<usize>>,
    /// Pin nothing (neither the probe nor the embedded SFU): results are then only
    /// indicative, since the two compete for the same cores.
    #[arg(long, conflicts_with = "probe_cpus")]
    pub no_pin: bool,
    /// Receive media through str0m, as before the receive fast path: one `recv_from` per
    /// datagram and str0m's SRTP, NACKs and TWCC feedback. For before/after comparisons;
    /// by default subscribers open SRTP with the probe's own contexts (keys from the DTLS
    /// handshake), read with `recvmmsg` and send their own TWCC, NACKs and PLIs.
    #[arg(long)]
    pub str0m_receive: bool,
    /// Driver threads (each runs a poll loop over its share of the peers).
    #[arg(long, default_value_t = 1)]
    pub drivers: usize,
    /// Log filter for the probe and the embedded SFU, on stderr: e.g. "info" shows peers the
    /// SFU gave up on; "info,plenary_sfu::dtls=debug,plenary_probe::dtls=debug" traces every
    /// handshake datagram.
    #[arg(long, default_value = "warn")]
    pub log_level: String,
    /// Local address the synthetic clients bind (default: the one that routes to the
    /// target).
    #[arg(long)]
    pub bind_ip: Option<std::net::IpAddr>,
    /// Step fails when audio loss (p95 across subscribers) reaches this %.
    #[arg(long)]
    pub max_audio_loss_pct: Option<f64>,
    /// Step fails when frozen time (p95) reaches this %.
    #[arg(long)]
    pub max_freeze_pct: Option<f64>,
    /// Step fails when frame rate (worst 5%) is below this % of target.
    #[arg(long)]
    pub min_frame_rate_pct: Option<f64>,
    /// Step fails when one-way delay (p95) reaches this, ms.
    #[arg(long)]
    pub max_delay_ms: Option<f64>,
    /// Step fails when jitter (p95) reaches this, ms.
    #[arg(long)]
    pub max_jitter_ms: Option<f64>,
    /// Step fails when fewer than this % of joins succeed.
    #[arg(long)]
    pub min_join_pct: Option<f64>,
    /// Run is invalid when the probe uses more than this % of its CPUs.
    #[arg(long)]
    pub max_probe_cpu_pct: Option<f64>,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

impl SfuProbeArgs {
    /// `--kill-node K@SECS` as (node index, seconds into the first measured step).
    pub fn kill_node(&self) -> anyhow::Result<Option<(usize, u64)>> {
        self.node_fault("--kill-node", self.kill_node.as_deref())
    }

    /// `--freeze-node K@SECS`, read as `--kill-node` is.
    pub fn freeze_node(&self) -> anyhow::Result<Option<(usize, u64)>> {
        self.node_fault("--freeze-node", self.freeze_node.as_deref())
    }

    fn node_fault(&self, flag: &str, spec: Option<&str>) -> anyhow::Result<Option<(usize, u64)>> {
        let Some(spec) = spec else {
            return Ok(None);
        };
        let parsed = spec
            .split_once('@')
            .and_then(|(k, s)| Some((k.trim().parse().ok()?, s.trim().parse().ok()?)));
        let Some((k, secs)) = parsed else {
            anyhow::bail!("{flag} {spec}: expected K@SECS, e.g. 1@5 (node 1, 5 s in)");
        };
        let nodes = self.local_nodes.unwrap_or(0);
        if k >= nodes {
            anyhow::bail!("{flag} {spec}: node {k} does not exist (--local-nodes {nodes})");
        }
        Ok(Some((k, secs)))
    }

    /// The scenario with the command line's overrides applied.
    pub fn scenario(&self) -> anyhow::Result<Scenario> {
        let mut s = Scenario::load(&self.scenario)?;
        if let Some(r) = &self.ramp {
            let v: Vec<u32> = r
                .split(':')
                .map(|x| x.trim().parse())
                .collect::<Result<_, _>>()
                .map_err(|_| anyhow::anyhow!("--ramp {r:?}: expected START:STEP:MAX"))?;
            let [start, step, max] = v[..] else {
                anyhow::bail!("--ramp {r:?}: expected START:STEP:MAX")
            };
            if start == 0 || step == 0 || max < start {
                anyhow::bail!("--ramp {r:?} needs START >= 1, STEP >= 1 and MAX >= START");
            }
            (s.ramp.start, s.ramp.step, s.ramp.max) = (start, step, max);
        }
        if let Some(h) = self.hold {
            s.ramp.hold_s = h.max(1);
        }
        if let Some(w) = self.warmup {
            s.ramp.warmup_s = w;
        }
        let t: &mut Thresholds = &mut s.thresholds;
        let set = |dst: &mut f64, v: Option<f64>| {
            if let Some(v) = v {
                *dst = v;
            }
        };
        set(&mut t.max_audio_loss_pct, self.max_audio_loss_pct);
        set(&mut t.max_freeze_pct, self.max_freeze_pct);
        set(&mut t.min_frame_rate_pct, self.min_frame_rate_pct);
        set(&mut t.max_delay_ms, self.max_delay_ms);
        set(&mut t.max_jitter_ms, self.max_jitter_ms);
        set(&mut t.min_join_pct, self.min_join_pct);
        set(&mut s.probe.max_cpu_pct, self.max_probe_cpu_pct);
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::SfuProbeArgs;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SfuProbeArgs,
    }

    fn kill(argv: &[&str]) -> Result<Option<(usize, u64)>, String> {
        let cli = Cli::try_parse_from(std::iter::once("probe").chain(argv.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.args.kill_node().map_err(|e| e.to_string())
    }

    #[test]
    fn kill_node_names_a_local_node_and_a_time() {
        assert_eq!(kill(&[]), Ok(None));
        assert_eq!(
            kill(&["--local-nodes", "3", "--kill-node", "1@5"]),
            Ok(Some((1, 5)))
        );
        let e = kill(&["--local-nodes", "3", "--kill-node", "3@5"]).unwrap_err();
        assert!(e.contains("node 3 does not exist"), "{e}");
        let e = kill(&["--local-nodes", "3", "--kill-node", "one"]).unwrap_err();
        assert!(e.contains("expected K@SECS"), "{e}");
        // Only a cascade this probe started may be killed.
        assert!(kill(&["--kill-node", "1@5"]).is_err());
    }

    #[test]
    fn freeze_node_reads_as_kill_node_and_excludes_it() {
        let parse = |argv: &[&str]| {
            Cli::try_parse_from(std::iter::once("probe").chain(argv.iter().copied()))
                .map_err(|e| e.to_string())
        };
        let cli = parse(&["--local-nodes", "3", "--freeze-node", "2@7"]).unwrap();
        assert_eq!(cli.args.freeze_node().unwrap(), Some((2, 7)));
        assert_eq!(cli.args.kill_node().unwrap(), None);
        let cli = parse(&["--local-nodes", "2", "--freeze-node", "2@7"]).unwrap();
        let e = cli.args.freeze_node().unwrap_err().to_string();
        assert!(
            e.starts_with("--freeze-node 2@7: node 2 does not exist"),
            "{e}"
        );
        let both = [
            "--local-nodes",
            "3",
            "--kill-node",
            "1@5",
            "--freeze-node",
            "1@5",
        ];
        assert!(parse(&both).is_err());
    }
}
