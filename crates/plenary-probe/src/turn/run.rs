//! The run: peers and sender up, then per step: add allocations, warm up, measure, close
//! the window, judge. Thin on purpose; the judging is in [`super::step`] and
//! [`crate::stats`].

use super::alloc::{self, Ready, SetupContext};
use super::args::TurnProbeArgs;
use super::client::ClientConfig;
use super::peer;
use super::plan::Plan;
use super::sender::{SendFlow, Sender};
use super::shared::{lock, measure_epoch, Counters, Shared};
use super::step::{summarize, ProbeWindow, ServerWindow, Setup, StepInput, StepResult};
use crate::procfs::{self, ProcSample};
use crate::report::Tick;
use crate::stats::knee::{Knee, Metric};
use crate::stats::percentile::Percentiles;
use crate::stats::validity::LoadSide;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// Channel number for every allocation (channels are per allocation, so one suffices).
const CHANNEL: u16 = 0x4000;

pub struct RunOutput {
    pub steps: Vec<StepResult>,
    pub knee: Knee<Metric>,
    pub timeline: Vec<Tick>,
    pub interrupted: bool,
    pub peers: Vec<SocketAddr>,
    /// Peak RSS of the server at the end of the run.
    pub server_peak_rss_kb: Option<u64>,
}

struct Driver<'a> {
    args: &'a TurnProbeArgs,
    plan: &'a Plan,
    shared: Arc<Shared>,
    ctx: Arc<SetupContext>,
    peers: Vec<SocketAddr>,
    add: mpsc::UnboundedSender<SendFlow>,
    stop: watch::Receiver<bool>,
    serving: JoinSet<()>,
    ready: Vec<u32>,
    free_ids: Vec<u32>,
    next_id: u32,
    timeline: Vec<Tick>,
    interrupted: Arc<AtomicBool>,
}

pub async fn execute(args: &TurnProbeArgs, plan: &Plan) -> anyhow::Result<RunOutput> {
    let shared = Arc::new(Shared::new(plan.max_flows as usize, plan.mode));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (peers, peer_tasks) = peer::spawn(
        args.peer_ip,
        plan.peers,
        args.peer_mode,
        shared.clone(),
        stop_rx.clone(),
    )?;
    let (add, add_rx) = mpsc::unbounded_channel();
    let sender = Sender::new(plan.shape, shared.clone(), plan.max_flows as usize);
    let sender_task = tokio::spawn(sender.run(add_rx, stop_rx.clone()));
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    let signal_task = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            flag.store(true, Relaxed);
        }
    });
    let mut d = Driver {
        args,
        plan,
        shared,
        ctx: Arc::new(SetupContext {
            transport: args.transport,
            server: plan.server,
            tls: plan.tls.clone(),
            timeout: plan.timeout,
        }),
        peers,
        add,
        stop: stop_rx,
        serving: JoinSet::new(),
        ready: Vec::new(),
        free_ids: Vec::new(),
        next_id: 0,
        timeline: Vec::new(),
        interrupted,
    };
    let (steps, knee) = d.steps().await;
    // Stop everything; allocations release themselves within a bounded wait.
    let _ = stop_tx.send(true);
    let drain = async {
        while d.serving.join_next().await.is_some() {}
        let _ = sender_task.await;
        for t in peer_tasks {
            let _ = t.await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(3), drain).await;
    signal_task.abort();
    let server_peak_rss_kb = args
        .server_pid
        .and_then(|pid| procfs::sample(Some(pid)).ok())
        .and_then(|s| s.peak_rss_kb);
    Ok(RunOutput {
        steps,
        knee,
        timeline: d.timeline,
        interrupted: d.interrupted.load(Relaxed),
        peers: d.peers,
        server_peak_rss_kb,
    })
}

impl Driver<'_> {
    fn say(&self, line: std::fmt::Arguments<'_>) {
        if !self.args.quiet {
            eprintln!("{line}");
        }
    }

    async fn steps(&mut self) -> (Vec<StepResult>, Knee<Metric>) {
        let mut knee = Knee::default();
        let mut out = Vec::new();
        let plan = self.plan;
        let total = plan.steps.len();
        for (k, &target) in plan.steps.iter().enumerate() {
            let setup = self.grow(k, target).await;
            self.say(format_args!(
                "step {}/{total}: {} allocations ready ({} failed), alloc p95 {:.1} ms",
                k + 1,
                self.ready.len(),
                setup.failed,
                setup.alloc_time_ms.p95
            ));
            self.tick_for(k, false, self.plan.warmup).await;
            if self.interrupted.load(Relaxed) {
                break;
            }
            let result = self.measure(k, target, setup).await;
            self.say(format_args!(
                "step {}/{total}: {} | relayed {:.0}/s, loss {:.2}%, delay p95 {:.1} ms, jitter p95 {:.2} ms{}",
                k + 1,
                if result.held { "held" } else { "FAILED" },
                result.relayed_pps,
                result.loss_pct,
                result.flow_delay_p95_ms.p95,
                result.flow_jitter_ms.p95,
                if result.valid { String::new() } else { format!(" | INVALID: {}", result.invalid_reasons.join("; ")) }
            ));
            let (valid, go_on) = (
                result.valid,
                knee.record(target, result.breaches.first().map(|b| b.metric)),
            );
            out.push(result);
            if !valid || !go_on || self.interrupted.load(Relaxed) {
                break;
            }
        }
        (out, knee)
    }

    /// Sets up allocations until `target` are ready (ids of failed ones are reused, so
    /// ids stay below the largest step).
    async fn grow(&mut self, step: usize, target: u32) -> Setup {
        let need = (target as usize).saturating_sub(self.ready.len());
        let mut ids = Vec::with_capacity(need);
        while ids.len() < need {
            ids.push(self.free_ids.pop().unwrap_or_else(|| {
                self.next_id += 1;
                self.next_id - 1
            }));
        }
        let mut setup = Setup {
            attempted: need as u32,
            ..Setup::default()
        };
        let (mut alloc_ms, mut ready_ms) = (Vec::new(), Vec::new());
        let mut errors: BTreeMap<String, u32> = BTreeMap::new();
        let mut pending = ids.into_iter();
        let mut set = JoinSet::new();
        loop {
            while set.len() < self.args.setup_concurrency {
                let Some(id) = pending.next() else { break };
                let ctx = self.ctx.clone();
                let cfg = self.client_config(id);
                set.spawn(async move { alloc::setup(id, &ctx, cfg).await });
            }
            let Some(joined) = set.join_next().await else {
                break;
            };
            match joined {
                Ok(Ok(r)) => {
                    alloc_ms.push(r.alloc_ms);
                    ready_ms.push(r.setup_ms);
                    self.start_flow(step, r);
                }
                Ok(Err(f)) => {
                    if errors.is_empty() {
                        self.say(format_args!("allocation {} failed: {}", f.id, f.message));
                    }
                    *errors.entry(f.label).or_default() += 1;
                    self.free_ids.push(f.id);
                }
                Err(_) => *errors.entry("panic".into()).or_default() += 1,
            }
        }
        setup.succeeded = alloc_ms.len() as u32;
        setup.failed = setup.attempted - setup.succeeded;
        setup.alloc_time_ms = Percentiles::of(&mut alloc_ms);
        setup.alloc_samples_ms = alloc_ms;
        setup.ready_time_ms = Percentiles::of(&mut ready_ms);
        setup.errors = errors;
        setup
    }

    fn client_config(&self, id: u32) -> ClientConfig {
        ClientConfig {
            credentials: self.plan.credentials.for_id(id),
            realm: self.args.realm.clone(),
            peer: self.peers[id as usize % self.peers.len()],
            channel: (!self.args.send_indications).then_some(CHANNEL),
            reliable: self.args.transport != super::args::Transport::Udp,
            timeout: self.plan.timeout,
            seed: (u64::from(id) << 32) ^ self.shared.now_us() ^ 0x5eed,
        }
    }

    fn start_flow(&mut self, step: usize, r: Ready) {
        if let Some(mut flow) = self.shared.flow(r.id) {
            // A new flow starts recording at this step's window.
            flow.take(measure_epoch(step));
        }
        let (id, conn) = (r.id, r.conn.clone());
        let (peer, channel) = (r.client.peer(), r.client.channel());
        self.serving.spawn(alloc::serve(
            r.reader,
            r.conn,
            r.client,
            id,
            self.shared.clone(),
            self.stop.clone(),
        ));
        let _ = self.add.send(SendFlow {
            id,
            conn,
            channel,
            peer,
        });
        self.ready.push(id);
        Counters::add(&self.shared.counters.active, 1);
    }

    async fn measure(&mut self, k: usize, target: u32, setup: Setup) -> StepResult {
        let c = &self.shared.counters;
        let before = (Counters::get(&c.send_errors), Counters::get(&c.misrouted));
        let before2 = (Counters::get(&c.refresh_failures), Counters::get(&c.broken));
        let drops_before = Counters::get(&c.local_drops);
        lock(&self.shared.lag).clear();
        let (probe0, server0) = (sample(None), self.args.server_pid.map(|p| sample(Some(p))));
        let t0 = Instant::now();
        self.shared.set_epoch(measure_epoch(k));
        self.tick_for(k, true, self.plan.measure).await;
        self.shared.set_epoch(measure_epoch(k) + 1);
        let secs = t0.elapsed().as_secs_f64();
        let (probe1, server1) = (sample(None), self.args.server_pid.map(|p| sample(Some(p))));
        let lag = lock(&self.shared.lag).percentiles_ms();
        // Let packets of the window still in flight arrive before closing it.
        let grace = (self.args.max_rtt_ms * 2.0).clamp(500.0, 3000.0);
        tokio::time::sleep(Duration::from_millis(grace as u64)).await;
        let windows: Vec<_> = self
            .ready
            .iter()
            .filter_map(|&id| {
                self.shared
                    .flow(id)
                    .map(|mut f| f.take(measure_epoch(k + 1)))
            })
            .collect();
        let c = &self.shared.counters;
        let probe = ProbeWindow {
            load: LoadSide {
                cpu_pct: cpu_pct(probe0, probe1, secs),
                threads: self.args.threads,
                lag_p99_ms: lag.p99,
                // Sender and echo peers both: either way the probe failed to send.
                local_drops: Counters::get(&c.local_drops) - drops_before,
                send_attempts: windows.iter().map(|w| w.sent + w.send_drops).sum::<u64>()
                    + Counters::get(&c.local_drops)
                    - drops_before,
            },
            lag_ms: lag,
            send_errors: Counters::get(&c.send_errors) - before.0,
            misrouted: Counters::get(&c.misrouted) - before.1,
            refresh_failures: Counters::get(&c.refresh_failures) - before2.0,
            broken_connections: Counters::get(&c.broken) - before2.1,
        };
        let server = match (server0, server1) {
            (Some(Some(a)), Some(Some(b))) => Some(ServerWindow {
                cpu_seconds: b.cpu_seconds - a.cpu_seconds,
                cpu_pct: cpu_pct(Some(a), Some(b), secs),
                rss_kb: b.rss_kb,
                peak_rss_kb: b.peak_rss_kb,
                relayed_per_cpu_second: None,
            }),
            _ => None,
        };
        let input = StepInput {
            index: k,
            allocations: target,
            ready: self.ready.len() as u32,
            setup,
            measured_seconds: secs,
            probe,
            server,
        };
        summarize(
            input,
            &windows,
            &self.args.thresholds(),
            &self.args.limits(),
        )
    }

    /// Waits `total`, printing a progress line and recording a timeline point each second.
    async fn tick_for(&mut self, step: usize, measuring: bool, total: Duration) {
        let end = Instant::now() + total;
        let c = &self.shared.counters;
        let snap = || {
            (
                Counters::get(&c.sent),
                Counters::get(&c.at_peer) + Counters::get(&c.back),
                Instant::now(),
                sample(None),
            )
        };
        let mut last = snap();
        while Instant::now() < end && !self.interrupted.load(Relaxed) {
            let wait = (end - Instant::now()).min(Duration::from_secs(1));
            tokio::time::sleep(wait).await;
            let now = snap();
            let dt = now.2.duration_since(last.2).as_secs_f64().max(1e-6);
            let tick = Tick {
                t: now.2.duration_since(self.shared.start).as_secs_f64(),
                step,
                measuring,
                ready: self.ready.len() as u32,
                sent_pps: (now.0 - last.0) as f64 / dt,
                relayed_pps: (now.1 - last.1) as f64 / dt,
                probe_cpu_pct: cpu_pct(last.3, now.3, dt),
            };
            self.say(format_args!(
                "[{:6.1}s] step {} {:<7} {:>5} allocs | sent {:>8.0}/s relayed {:>8.0}/s | probe cpu {:>3.0}%",
                tick.t,
                step + 1,
                if measuring { "measure" } else { "warmup" },
                tick.ready,
                tick.sent_pps,
                tick.relayed_pps,
                tick.probe_cpu_pct
            ));
            self.timeline.push(tick);
            last = now;
        }
    }
}

fn sample(pid: Option<u32>) -> Option<ProcSample> {
    procfs::sample(pid).ok()
}

fn cpu_pct(a: Option<ProcSample>, b: Option<ProcSample>, secs: f64) -> f64 {
    match (a, b) {
        (Some(a), Some(b)) if secs > 0.0 => (b.cpu_seconds - a.cpu_seconds) * 100.0 / secs,
        _ => 0.0,
    }
}
