//! The controller: per step, join participants at the scenario's rate, warm up, measure,
//! judge; one progress line and one NDJSON line per second. Thin on purpose: judging is in
//! [`super::step`] and [`super::ramp`], measuring in the drivers.

use super::cpu::{Cpu, ServerCpu};
use super::engine::clock::Clock;
use super::engine::driver::{Cmd, Harvest, Snapshot};
use super::join::{self, JoinCtx, Joined};
use super::plan::Plan;
use super::ramp::{staircase, Knee};
use super::report::{CascadeStep, Joins, NodeCpu, RepeatResult, ServerWindow, StepResult, Tick};
use super::step::{self, ProbeLoad};
use crate::stats::histogram::LogHistogram;
use crate::stats::percentile::Percentiles;
use crate::stats::validity::{Limits, LoadSide};
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

pub struct Outcome {
    pub steps: Vec<StepResult>,
    pub repeats: Vec<RepeatResult>,
    pub timeline: Vec<Tick>,
    pub interrupted: bool,
}

pub struct Runner<'a> {
    pub plan: &'a Plan,
    pub ctx: Arc<JoinCtx>,
    pub clock: Clock,
    pub server: ServerCpu,
    /// CPUs the probe may use (the validity limit scales with it).
    pub probe_threads: usize,
    pub repeat_count: u32,
    pub quiet: bool,
    pub ndjson: Option<std::io::BufWriter<std::fs::File>>,
    /// One line per received track and measured step (`tracks.ndjson`).
    pub tracks: Option<std::io::BufWriter<std::fs::File>>,
    /// The nodes' metrics, read for the bytes per link.
    pub links: Option<super::links::Scraper>,
    timeline: Vec<Tick>,
    joined: Vec<Joined>,
    present: u32,
    last: Snapshot,
    cpu: Cpu,
    repeat: u32,
    interrupted: Arc<AtomicBool>,
    started: Instant,
    /// Probe clock when the current step started joining: its re-homings are those since.
    step_from_us: u64,
    /// `--kill-node` / `--freeze-node`: a node to SIGKILL or SIGSTOP during the first
    /// measured step.
    pub kill: Option<NodeKill>,
    /// Probe clock when that fault happened (0: none yet).
    fault_us: Arc<std::sync::atomic::AtomicU64>,
}

/// A node of the local cascade to kill or freeze (ours: started by `local`), and when.
pub struct NodeKill {
    pub pid: u32,
    pub name: String,
    pub after: Duration,
    /// SIGKILL, or SIGSTOP for a node that vanishes without closing anything.
    pub signal: libc::c_int,
}

impl<'a> Runner<'a> {
    pub fn new(
        plan: &'a Plan,
        ctx: Arc<JoinCtx>,
        clock: Clock,
        server: ServerCpu,
        probe_threads: usize,
        repeat_count: u32,
        quiet: bool,
    ) -> Runner<'a> {
        Runner {
            plan,
            ctx,
            clock,
            server,
            probe_threads,
            repeat_count,
            quiet,
            ndjson: None,
            tracks: None,
            links: None,
            timeline: Vec::new(),
            joined: Vec::new(),
            present: 0,
            last: Snapshot::default(),
            cpu: Cpu::default(),
            repeat: 0,
            interrupted: Arc::new(AtomicBool::new(false)),
            started: Instant::now(),
            step_from_us: 0,
            kill: None,
            fault_us: Default::default(),
        }
    }

    fn say(&self, line: std::fmt::Arguments<'_>) {
        if !self.quiet {
            eprintln!("{line}");
        }
    }

    pub async fn execute(mut self) -> Outcome {
        let flag = self.interrupted.clone();
        let signal = tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                flag.store(true, Relaxed);
            }
        });
        let mut steps = Vec::new();
        let mut repeats = Vec::new();
        for r in 0..self.repeat_count {
            self.repeat = r;
            let (s, knee, valid) = self.ramp().await;
            steps.extend(s);
            repeats.push(RepeatResult {
                capacity: knee.capacity,
                first_breach: knee.first_failure.map(|f| f.1),
                first_breach_at: knee.first_failure.map(|f| f.0),
                ended_by_failures: knee.ended_by_failures,
            });
            self.teardown().await;
            if !valid || self.interrupted.load(Relaxed) {
                break;
            }
        }
        signal.abort();
        Outcome {
            steps,
            repeats,
            timeline: self.timeline,
            interrupted: self.interrupted.load(Relaxed),
        }
    }

    async fn ramp(&mut self) -> (Vec<StepResult>, Knee, bool) {
        let r = &self.plan.scenario.ramp;
        let stairs = staircase(r.start, r.step, r.max);
        let warmup = Duration::from_secs(r.warmup_s);
        let mut knee = Knee::default();
        let mut out = Vec::new();
        let mut valid = true;
        for (k, &n) in stairs.iter().enumerate() {
            self.step_from_us = self.clock.now_us();
            let joins = self.grow(k, n).await;
            self.say(format_args!(
                "[repeat {}] step {}/{}: {n} {} | joins {}/{} ok, join p95 {:.0} ms",
                self.repeat + 1,
                k + 1,
                stairs.len(),
                self.plan.unit(),
                joins.succeeded,
                joins.attempted,
                joins.join_ms.p95
            ));
            self.tick_for(k, "warmup", n, warmup).await;
            if self.interrupted.load(Relaxed) {
                break;
            }
            let s = self.measure(k, n, joins).await;
            self.say(format_args!(
                "[repeat {}] step {}: {}",
                self.repeat + 1,
                k + 1,
                super::summary::describe(&s)
            ));
            valid &= s.valid;
            // An invalid step says nothing about the server: it neither holds nor fails.
            let go_on = s.valid && knee.record(n, s.breaches.first().map(|b| b.metric));
            out.push(s);
            if !valid || !go_on || self.interrupted.load(Relaxed) {
                break;
            }
        }
        (out, knee, valid)
    }

    /// Joins participants until the step's population is present: publishers first (a
    /// viewer of an empty room has nothing to receive), then the rest at the join rate.
    async fn grow(&mut self, k: usize, n: u32) -> Joins {
        let population = self.plan.population(n);
        self.ctx.population.store(population, Relaxed);
        let new: Vec<u32> = (self.present..population).collect();
        // Webinar viewers play rooms that must already have their presenter; room and
        // Janus participants wait for the publishers they need by themselves.
        let webinar = !self.plan.uses_rooms();
        let (first, rest): (Vec<u32>, Vec<u32>) = new
            .into_iter()
            .partition(|&i| webinar && self.plan.participant(i).role == "presenter");
        self.join_batch(k, n, first).await;
        self.join_batch(k, n, rest).await;
        self.present = population;
        let mut ms: Vec<f64> = self.joined.iter().filter_map(|j| j.join_ms).collect();
        let mut j = Joins {
            attempted: self.joined.len() as u32,
            succeeded: self.joined.iter().filter(|j| j.ok).count() as u32,
            join_ms: Percentiles::of(&mut ms),
            redirects: self.joined.iter().map(|j| j.redirects).sum(),
            ..Joins::default()
        };
        j.failed = j.attempted - j.succeeded;
        j.join_pct = if j.attempted == 0 {
            100.0
        } else {
            f64::from(j.succeeded) * 100.0 / f64::from(j.attempted)
        };
        for e in self.joined.iter().filter_map(|j| j.error.as_ref()) {
            *j.errors.entry(e.clone()).or_default() += 1;
        }
        j
    }

    async fn join_batch(&mut self, k: usize, n: u32, ids: Vec<u32>) {
        let interval =
            Duration::from_secs_f64(1.0 / self.plan.scenario.ramp.join_rate_per_s.max(0.01));
        let mut pending = ids.into_iter();
        let mut set = JoinSet::new();
        let mut next_spawn = Instant::now();
        let mut next_tick = Instant::now() + Duration::from_secs(1);
        let mut more = true;
        loop {
            while more && Instant::now() >= next_spawn {
                match pending.next() {
                    Some(i) => {
                        set.spawn(join::join(self.ctx.clone(), self.plan.participant(i)));
                        next_spawn += interval;
                    }
                    None => more = false,
                }
            }
            if !more && set.is_empty() {
                break;
            }
            let wake = if more {
                next_spawn.min(next_tick)
            } else {
                next_tick
            };
            tokio::select! {
                Some(res) = set.join_next(), if !set.is_empty() => {
                    if let Ok(j) = res {
                        if let (false, Some(e)) = (j.ok, &j.error) {
                            if self.joined.iter().all(|x| x.ok) {
                                self.say(format_args!("participant {} could not join: {e}", j.participant));
                            }
                        }
                        self.joined.push(j);
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
            if Instant::now() >= next_tick {
                next_tick += Duration::from_secs(1);
                self.tick(k, "join", n).await;
            }
            if self.interrupted.load(Relaxed) {
                set.abort_all();
                break;
            }
        }
    }

    fn drivers(&self, cmd: impl Fn() -> Cmd) {
        for d in &self.ctx.drivers {
            d.send(cmd());
        }
    }

    fn snapshot(&self) -> Snapshot {
        let mut total = Snapshot {
            lag: LogHistogram::new(),
            ..Snapshot::default()
        };
        for d in &self.ctx.drivers {
            let (tx, rx) = mpsc::channel();
            d.send(Cmd::Snapshot(tx));
            if let Ok(s) = rx.recv_timeout(Duration::from_secs(2)) {
                super::summary::merge(&mut total, &s);
            }
        }
        total
    }

    async fn tick_for(&mut self, k: usize, phase: &'static str, n: u32, total: Duration) {
        let end = Instant::now() + total;
        while Instant::now() < end && !self.interrupted.load(Relaxed) {
            let wait = (end - Instant::now()).min(Duration::from_secs(1));
            tokio::time::sleep(wait).await;
            self.tick(k, phase, n).await;
        }
    }

    async fn tick(&mut self, k: usize, phase: &'static str, n: u32) {
        let snap = self.snapshot();
        let cpu = self.server.sample();
        let dt = self
            .cpu
            .at
            .map_or(1.0, |t| t.elapsed().as_secs_f64().max(1e-3));
        let (probe_cpu, server_cpu) = self.server.pct(&self.cpu, &cpu);
        let c0 = &self.last.counters;
        let c1 = &snap.counters;
        let pct = |l: u64, e: u64| {
            if e == 0 {
                0.0
            } else {
                l as f64 * 100.0 / e as f64
            }
        };
        let tick = Tick {
            t: self.started.elapsed().as_secs_f64(),
            repeat: self.repeat,
            step: k,
            phase,
            target: n,
            peers: snap.peers,
            connected: snap.connected,
            rx_mbps: (c1.rx_bytes - c0.rx_bytes.min(c1.rx_bytes)) as f64 * 8.0 / 1e6 / dt,
            tx_mbps: (c1.tx_bytes - c0.tx_bytes.min(c1.tx_bytes)) as f64 * 8.0 / 1e6 / dt,
            rx_pps: (c1.rx_datagrams - c0.rx_datagrams.min(c1.rx_datagrams)) as f64 / dt,
            audio_loss_pct: pct(snap.audio_lost, snap.audio_expected),
            video_loss_pct: pct(snap.video_lost, snap.video_expected),
            delay_mean_ms: if snap.delay_n == 0 {
                0.0
            } else {
                snap.delay_sum_us as f64 / snap.delay_n as f64 / 1000.0
            },
            delay_max_ms: snap.delay_max_us as f64 / 1000.0,
            frames_per_s: snap.frames as f64 / dt,
            lag_p99_ms: snap.lag.quantile(0.99).map_or(0.0, |us| us as f64 / 1000.0),
            socket_drops: snap.socket_drops - self.last.socket_drops.min(snap.socket_drops),
            probe_cpu_pct: probe_cpu,
            server_cpu_pct: server_cpu,
            server_rss_kb: cpu.server_rss,
        };
        self.say(format_args!(
            "[{:6.1}s] step {} {:<7} {:>4} peers ({} up) | rx {:>7.1} Mbit/s | audio loss {:.2}% video loss {:.2}% | delay {:.1}/{:.1} ms | lag p99 {:.1} ms | probe cpu {:.0}%{}",
            tick.t,
            k + 1,
            phase,
            tick.peers,
            tick.connected,
            tick.rx_mbps,
            tick.audio_loss_pct,
            tick.video_loss_pct,
            tick.delay_mean_ms,
            tick.delay_max_ms,
            tick.lag_p99_ms,
            tick.probe_cpu_pct,
            tick.server_cpu_pct.map_or(String::new(), |c| format!(" server cpu {c:.0}%"))
        ));
        if let Some(w) = self.ndjson.as_mut() {
            if let Ok(line) = serde_json::to_string(&tick) {
                let _ = writeln!(w, "{line}");
                let _ = w.flush();
            }
        }
        self.timeline.push(tick);
        self.last = snap;
        self.cpu = cpu;
    }

    async fn measure(&mut self, k: usize, n: u32, joins: Joins) -> StepResult {
        self.drivers(|| Cmd::BeginStep);
        if let Some(kill) = self.kill.take() {
            let how = if kill.signal == libc::SIGSTOP {
                "freezing"
            } else {
                "killing"
            };
            self.say(format_args!(
                "  {how} node {} (pid {}) {:?} into this step",
                kill.name, kill.pid, kill.after
            ));
            let (clock, fault_us) = (self.clock, self.fault_us.clone());
            std::thread::spawn(move || {
                std::thread::sleep(kill.after);
                // SAFETY: kill(2) on a child this probe started (the local cascade's node);
                // a stopped node is SIGKILLed with the others when the run ends.
                unsafe { libc::kill(kill.pid as libc::pid_t, kill.signal) };
                fault_us.store(clock.now_us().max(1), Relaxed);
            });
        }
        let (snap0, cpu0, t0) = (self.snapshot(), self.server.sample(), Instant::now());
        let links0 = self.links.as_ref().map(|l| l.read());
        self.last = snap0.clone();
        self.cpu = cpu0.clone();
        self.tick_for(
            k,
            "measure",
            n,
            Duration::from_secs(self.plan.scenario.ramp.hold_s),
        )
        .await;
        let mut harvest = Harvest {
            tracks: Vec::new(),
            lag: LogHistogram::new(),
        };
        for d in &self.ctx.drivers {
            let (tx, rx) = mpsc::channel();
            d.send(Cmd::EndStep(tx));
            if let Ok(h) = rx.recv_timeout(Duration::from_secs(5)) {
                harvest.tracks.extend(h.tracks);
                harvest.lag.merge(&h.lag);
            }
        }
        if let Some(w) = self.tracks.as_mut() {
            for (participant, must_flow, t) in &harvest.tracks {
                let line = serde_json::json!({
                    "repeat": self.repeat, "step": k, "participant": participant, "must_flow": must_flow, "track": t,
                });
                let _ = writeln!(w, "{line}");
            }
            let _ = w.flush();
        }
        let secs = t0.elapsed().as_secs_f64().max(1e-3);
        let (snap1, cpu1) = (self.snapshot(), self.server.sample());
        let links1 = self.links.as_ref().map(|l| l.read());
        self.last = snap1.clone();
        self.cpu = cpu1.clone();
        let (probe_cpu, server_cpu) = self.server.pct(&cpu0, &cpu1);
        let (c0, c1) = (&snap0.counters, &snap1.counters);
        let rx_bytes = c1.rx_bytes.saturating_sub(c0.rx_bytes);
        let lag = harvest.lag.percentiles_ms();
        let s = &self.plan.scenario;
        let probe = ProbeLoad {
            load: LoadSide {
                cpu_pct: probe_cpu,
                threads: self.probe_threads,
                lag_p99_ms: lag.p99,
                local_drops: c1.send_drops.saturating_sub(c0.send_drops),
                send_attempts: c1.tx_packets.saturating_sub(c0.tx_packets)
                    + c1.send_drops.saturating_sub(c0.send_drops),
            },
            socket_drops: snap1.socket_drops.saturating_sub(snap0.socket_drops),
            rx_datagrams: c1.rx_datagrams.saturating_sub(c0.rx_datagrams),
            lag_p50_ms: lag.p50,
        };
        let limits = Limits {
            max_cpu_pct: s.probe.max_cpu_pct,
            max_lag_p99_ms: s.probe.max_lag_ms,
            ..Limits::default()
        };
        let mut invalid = step::invalid_reasons(&limits, s.probe.max_socket_drop_pct, &probe);
        if joins.succeeded == 0 {
            let first = joins.errors.keys().next().cloned().unwrap_or_default();
            invalid.push(format!(
                "no participant could join ({first}): check --target, --api and the server"
            ));
        }
        let subs = step::subscribers(&harvest.tracks);
        let metrics = step::metrics(&subs);
        let (qoe, breaches) = step::judge(&s.thresholds, joins.join_pct, &metrics);
        let server = server_cpu.map(|pct| {
            let cpu_s = pct / 100.0 * secs;
            ServerWindow {
                cpu_seconds: cpu_s,
                cpu_pct: pct,
                rss_kb: cpu1.server_rss,
                rx_mbit_per_cpu_s: (cpu_s > 0.0).then(|| rx_bytes as f64 * 8.0 / 1e6 / cpu_s),
                nodes: self.node_cpu(&cpu0, &cpu1, secs),
            }
        });
        let mut cascade = self.cascade_step(&harvest.tracks, joins.redirects);
        if let (Some(c), Some(l), Some(a), Some(b)) = (&mut cascade, &self.links, links0, links1) {
            (c.links, c.links_missing) = super::links::step_links(&l.names(), &a, &b);
            c.link_mbps = super::links::total_mbps(&c.links);
        }
        let count = |kind| harvest.tracks.iter().filter(|t| t.2.kind == kind).count();
        StepResult {
            repeat: self.repeat,
            index: k,
            participants: n,
            population: self.plan.population(n),
            seconds: secs,
            joins,
            metrics,
            pooled: step::pooled(&harvest.tracks),
            qoe,
            held: breaches.is_empty() && invalid.is_empty(),
            valid: invalid.is_empty(),
            breaches,
            invalid_reasons: invalid,
            rx_mbps: rx_bytes as f64 * 8.0 / 1e6 / secs,
            tx_mbps: c1.tx_bytes.saturating_sub(c0.tx_bytes) as f64 * 8.0 / 1e6 / secs,
            rx_pps: probe.rx_datagrams as f64 / secs,
            tracks_audio: count(super::recv::track::TrackKind::Audio),
            tracks_video: count(super::recv::track::TrackKind::Video),
            keyframes_sent: c1.keyframes_out.saturating_sub(c0.keyframes_out),
            keyframe_requests_received: c1
                .keyframe_requests_in
                .saturating_sub(c0.keyframe_requests_in),
            receive: step::receive_window(
                self.ctx.build.fast_receive,
                probe_cpu,
                secs,
                probe.rx_datagrams,
                &c0.fast,
                &c1.fast,
            ),
            probe,
            probe_lag_ms: lag,
            server,
            cascade,
            subscribers: subs,
        }
    }

    /// Each `--server-pid`'s CPU over the window, beside the target it serves.
    fn node_cpu(&self, a: &super::cpu::Cpu, b: &super::cpu::Cpu, secs: f64) -> Vec<NodeCpu> {
        let super::cpu::ServerCpu::Pids(pids) = &self.server else {
            return Vec::new();
        };
        if pids.len() < 2 {
            return Vec::new();
        }
        let targets = self.ctx.targets();
        super::cpu::node_pct(a, b)
            .into_iter()
            .zip(pids)
            .enumerate()
            .map(|(i, (pct, &pid))| NodeCpu {
                target: targets.get(i).cloned(),
                pid,
                cpu_pct: pct,
                cpu_seconds: pct.map(|p| p / 100.0 * secs),
                rss_kb: b.nodes.get(i).and_then(|n| n.rss_kb),
            })
            .collect()
    }

    /// Where participants are, the delay a node-to-node link adds, and the step's
    /// re-homings; None on a single node where nothing moved.
    fn cascade_step(
        &self,
        tracks: &[(u32, bool, super::recv::track::TrackWindow)],
        redirects: u32,
    ) -> Option<CascadeStep> {
        let from = self.step_from_us;
        let events: Vec<super::cascade::Rehome> = {
            let v = self.ctx.rehomes.lock().unwrap_or_else(|e| e.into_inner());
            v.iter().filter(|e| e.closed_us >= from).cloned().collect()
        };
        if self.ctx.targets().len() < 2 && events.is_empty() && redirects == 0 {
            return None;
        }
        let homes = self.ctx.homes();
        let mut per_node = std::collections::BTreeMap::new();
        for j in self.joined.iter().filter(|j| j.ok) {
            if let Some(h) = homes.get(&j.participant) {
                *per_node.entry(h.clone()).or_insert(0) += 1;
            }
        }
        Some(CascadeStep {
            participants_per_node: per_node,
            delay: super::cascade::node_delay(tracks, |p| homes.get(&p).map(String::as_str)),
            rehome: super::cascade::rehome_stats(
                &events,
                Some(self.fault_us.load(Relaxed)).filter(|&f| f > 0),
            ),
            ..CascadeStep::default()
        })
    }

    /// Everyone leaves (the next repeat starts from an empty server).
    async fn teardown(&mut self) {
        let mut set = JoinSet::new();
        for j in self.joined.drain(..) {
            let ctx = self.ctx.clone();
            set.spawn(async move { join::leave(&ctx, j).await });
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while set.join_next().await.is_some() {}
        })
        .await;
        self.ctx.janus.clear();
        self.ctx
            .homes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.present = 0;
        if self.repeat + 1 < self.repeat_count {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}
