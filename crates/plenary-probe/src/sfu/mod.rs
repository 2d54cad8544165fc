//! `plenary probe sfu`: synthetic WebRTC participants against an SFU, a staircase of
//! participants, QoE measured where viewers sit, and the capacity that held.
//!
//! - [`media`]: synthetic VP8 (RFC 7741 descriptors, keyframes on PLI and periodically,
//!   simulcast layers) and Opus (RFC 6464 levels, talk/pause, DTX), with a send stamp.
//! - [`recv`]: per-track loss, RFC 3550 jitter, one-way delay, frames, W3C freezes, gaps.
//! - [`scenario`], [`plan`]: `loadtest/*.toml` and who each participant is.
//! - [`cascade`]: several nodes: who joins where, redirects, re-homing, cross-node delay;
//!   [`links`]: bytes per node-to-node link from the nodes' Prometheus counters.
//! - [`ramp`], [`step`]: thresholds, verdicts, the knee; reduction across subscribers.
//! - [`engine`]: str0m peers and the poll-loop driver threads; [`net`], [`join`]: WHIP/WHEP,
//!   the room API and Janus; [`run`]: the controller; [`report`]: JSON, HTML and NDJSON.
//!
//! Everything but `engine`, `net`, `join`, `run`, `local`, `embedded` and `links::fetch`
//! is pure and unit-tested with synthetic time.

mod args;
pub mod cascade;
pub mod cpu;
pub mod embedded;
pub mod engine;
pub mod fastrx;
pub mod join;
pub mod links;
pub mod local;
pub mod media;
pub mod net;
pub mod plan;
pub mod ramp;
pub mod recv;
pub mod report;
pub mod run;
pub mod scenario;
pub mod step;
pub mod summary;

pub use args::{Api, SfuProbeArgs};

use anyhow::Context as _;
use cpu::ServerCpu;
use engine::build::BuildCtx;
use engine::clock::Clock;
use engine::{driver, load};
use join::{JoinCtx, Target};
use plan::Plan;
use run::Runner;
use std::net::{IpAddr, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

/// The local address that routes to `url`'s host.
fn route_to(url: &str) -> anyhow::Result<IpAddr> {
    let (auth, _) = net::http::split_url(url)?;
    let addr = auth
        .to_socket_addrs()?
        .next()
        .with_context(|| format!("{auth} does not resolve"))?;
    let any: IpAddr = if addr.is_ipv4() {
        [0, 0, 0, 0].into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    let s = UdpSocket::bind((any, 0))?;
    s.connect(addr)?;
    Ok(s.local_addr()?.ip())
}

/// Runs the probe; returns the exit code (0 held, 1 below `--require`, 2 invalid).
pub fn run(args: SfuProbeArgs) -> anyhow::Result<i32> {
    let started = std::time::SystemTime::now();
    let scenario = args.scenario()?;
    let plan = Plan::new(scenario);
    let local_nodes = args.local_nodes.unwrap_or(0);
    let kill = match (args.kill_node()?, args.freeze_node()?) {
        (Some((k, s)), _) => Some((k, s, libc::SIGKILL)),
        (None, Some((k, s))) => Some((k, s, libc::SIGSTOP)),
        (None, None) => None,
    };
    let embedded = (args.embedded || args.target.is_none()) && local_nodes == 0;
    let cpus = load::cpu_count();
    let pinning = !args.no_pin;
    let sfu_cpus = ((embedded || local_nodes > 0) && pinning)
        .then(|| args.sfu_cpus.iter().map(|c| c % cpus).collect::<Vec<_>>());
    let probe_cpus = match &args.probe_cpus {
        Some(v) => Some(v.clone()),
        None => sfu_cpus
            .as_ref()
            .filter(|_| cpus > 1)
            .map(|s| vec![(s.iter().max().copied().unwrap_or(0) + 1) % cpus]),
    };
    if let Some(c) = &probe_cpus {
        load::pin(0, c).with_context(|| format!("pinning the probe to CPUs {c:?}"))?;
    }
    let environment = report::Environment::read();
    let mut sfu = None;
    let mut local = None;
    let mut server_pids = args.server_pid.clone();
    let mut metrics = Vec::new();
    let targets = match &args.target {
        Some(t) => cascade::parse_targets(t).map_err(anyhow::Error::msg)?,
        None if local_nodes > 0 => {
            let ip = args.bind_ip.unwrap_or([127, 0, 0, 1].into());
            let c = local::LocalCascade::start(local_nodes, ip, sfu_cpus.as_deref())
                .context("starting the local cascade")?;
            if !args.quiet {
                eprintln!(
                    "plenary probe sfu: local cascade of {local_nodes} nodes (logs in {})",
                    c.dir().display()
                );
            }
            server_pids = c.pids();
            metrics = c.metrics();
            let urls = c.urls();
            local = Some(c);
            urls
        }
        None => Vec::new(),
    };
    if targets.len() > 1 && args.api == Api::Janus {
        anyhow::bail!(
            "several --target URLs are the nodes of a Plenary cascade; --api janus takes one"
        );
    }
    if server_pids.len() > 1 && server_pids.len() != targets.len() {
        anyhow::bail!(
            "--server-pid: {} PIDs for {} --target URLs (one per node, in the same order)",
            server_pids.len(),
            targets.len()
        );
    }
    if !args.metrics_url.is_empty() {
        if args.metrics_url.len() != targets.len() {
            anyhow::bail!(
                "--metrics-url: {} URLs for {} --target URLs (one per node, in the same order)",
                args.metrics_url.len(),
                targets.len()
            );
        }
        // Without node names, a node is known by its --target URL.
        metrics = targets
            .iter()
            .cloned()
            .zip(args.metrics_url.clone())
            .collect();
    }
    let target = match (targets.first(), args.api) {
        (Some(url), Api::Janus) => Target::Janus { base: url.clone() },
        (Some(_), Api::Plenary) => Target::Plenary {
            bases: targets.clone(),
        },
        (None, _) => {
            let ip = args.bind_ip.unwrap_or([127, 0, 0, 1].into());
            let base_config = match &args.sfu_config {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    plenary_sfu::config::parse_toml(&text, &path.display().to_string())?.0
                }
                None => plenary_sfu::SfuConfig::default(),
            };
            let e = embedded::Embedded::start(ip, sfu_cpus.as_deref(), base_config)
                .context("starting the embedded SFU")?;
            let base = e.base_url();
            sfu = Some(e);
            Target::Plenary { bases: vec![base] }
        }
    };
    let all: Vec<String> = match &target {
        Target::Plenary { bases } => bases.clone(),
        Target::Janus { base } => vec![base.clone()],
    };
    let base = &all[0];
    let bind_ip = match args.bind_ip {
        Some(ip) => ip,
        None => route_to(base)?,
    };
    if !args.quiet {
        eprintln!(
            "plenary probe sfu: scenario {} against {}{}; probe CPUs {probe_cpus:?}, server CPUs {sfu_cpus:?}",
            plan.scenario.name,
            all.join(", "),
            if embedded { " (embedded)" } else { "" }
        );
    }
    let clock = Clock::new();
    let drivers = (0..args.drivers.max(1))
        .map(|i| {
            driver::spawn(
                format!("probe-driver-{i}"),
                clock,
                probe_cpus.clone(),
                !args.str0m_receive,
            )
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let ctx = Arc::new(JoinCtx {
        build: BuildCtx {
            clock,
            bind_ip,
            fast_receive: !args.str0m_receive,
        },
        drivers,
        target: target.clone(),
        timeout: Duration::from_secs(plan.scenario.ramp.join_timeout_s),
        next_id: 1.into(),
        rooms: plan.uses_rooms(),
        janus: Default::default(),
        population: 0.into(),
        homes: Default::default(),
        rehomes: Default::default(),
    });
    let server = match (embedded, server_pids.is_empty()) {
        (true, _) => ServerCpu::Embedded,
        (false, false) => ServerCpu::Pids(server_pids.clone()),
        _ => ServerCpu::Unknown,
    };
    let probe_threads = probe_cpus.as_ref().map_or_else(
        || cpus - sfu_cpus.as_ref().map_or(0, |s| s.len().min(cpus - 1)),
        |c| c.len(),
    );
    let mut runner = Runner::new(
        &plan,
        ctx.clone(),
        clock,
        server,
        probe_threads.max(1),
        args.repeat.max(1),
        args.quiet,
    );
    runner.links = (!metrics.is_empty()).then_some(links::Scraper { nodes: metrics });
    if let (Some((k, secs, signal)), Some(c)) = (kill, &local) {
        runner.kill = Some(run::NodeKill {
            pid: c.pids()[k],
            name: format!("n{k}"),
            after: Duration::from_secs(secs),
            signal,
        });
    }
    if let Some(dir) = &args.report {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let f = std::fs::File::create(dir.join("timeseries.ndjson"))?;
        runner.ndjson = Some(std::io::BufWriter::new(f));
        let f = std::fs::File::create(dir.join("tracks.ndjson"))?;
        runner.tracks = Some(std::io::BufWriter::new(f));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(runner.execute());
    runtime.shutdown_timeout(Duration::from_secs(1));
    if let Ok(ctx) = Arc::try_unwrap(ctx) {
        for d in ctx.drivers {
            d.stop();
        }
    }
    if let Some(e) = sfu {
        e.stop();
    }
    drop(local);
    // The report names the PIDs measured, the local cascade's included.
    let args = SfuProbeArgs {
        server_pid: server_pids,
        ..args
    };
    let r = build_report(
        &args,
        &plan,
        outcome,
        environment,
        started,
        embedded,
        &all,
        probe_cpus,
        sfu_cpus,
        bind_ip,
    );
    print!("{}", text_summary(&r));
    if let Some(dir) = &args.report {
        report::write(dir, &r)
            .with_context(|| format!("writing the report to {}", dir.display()))?;
        eprintln!("report: {}/report.html", dir.display());
    }
    Ok(r.exit_code)
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    args: &SfuProbeArgs,
    plan: &Plan,
    o: run::Outcome,
    mut environment: report::Environment,
    started: std::time::SystemTime,
    embedded: bool,
    targets: &[String],
    probe_cpus: Option<Vec<usize>>,
    sfu_cpus: Option<Vec<usize>>,
    bind_ip: IpAddr,
) -> report::Report {
    environment.loadavg_end = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string();
    let caps: Vec<Option<u32>> = o.repeats.iter().map(|r| r.capacity).collect();
    let range = ramp::capacity_range(&caps);
    let capacity = range.map_or(0, |r| r.min);
    let mut invalid: Vec<String> = o
        .steps
        .iter()
        .filter(|s| !s.valid)
        .flat_map(|s| {
            s.invalid_reasons
                .iter()
                .map(move |r| format!("repeat {} step {}: {r}", s.repeat + 1, s.index + 1))
        })
        .collect();
    if o.interrupted {
        invalid.push("interrupted before the run finished".into());
    }
    if o.steps.is_empty() {
        invalid.push("no step was measured".into());
    }
    let valid = invalid.is_empty();
    let first = report::reported_repeat(&o.repeats);
    let r = &plan.scenario.ramp;
    let single = r.start == r.max;
    let any_breach = o.steps.iter().any(|s| !s.breaches.is_empty());
    let (verdict, exit_code) = report::decide(valid, single, any_breach, capacity, args.require);
    let mut rep = report::Report {
        tool: "plenary probe sfu",
        version: env!("CARGO_PKG_VERSION"),
        started_unix: started
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        command: crate::report::redact_command(std::env::args()),
        capacity,
        capacity_range: range,
        unit: plan.unit(),
        valid,
        first_breach: first.and_then(|f| f.first_breach),
        first_breach_at: first.and_then(|f| f.first_breach_at),
        verdict,
        exit_code,
        summary: String::new(),
        invalid_reasons: invalid,
        interrupted: o.interrupted,
        thresholds: plan.scenario.thresholds,
        config: report::RunConfig {
            scenario: plan.scenario.clone(),
            target: targets.first().cloned().unwrap_or_default(),
            targets: targets.to_vec(),
            api: args.api,
            embedded,
            repeat: args.repeat,
            require: args.require,
            drivers: args.drivers,
            probe_cpus,
            sfu_cpus,
            server_pid: args.server_pid.first().copied(),
            server_pids: args.server_pid.clone(),
            bind_ip: bind_ip.to_string(),
            receive_path: receive_path(args),
        },
        environment,
        repeats: o.repeats,
        steps: o.steps,
        timeline: o.timeline,
    };
    rep.summary = report::summary(&rep);
    rep
}

fn receive_path(args: &SfuProbeArgs) -> &'static str {
    if args.str0m_receive {
        "str0m"
    } else {
        "fast"
    }
}

fn text_summary(r: &report::Report) -> String {
    let mut s = String::new();
    for step in &r.steps {
        s += &format!(
            "repeat {} step {} ({} {}): {}\n",
            step.repeat + 1,
            step.index + 1,
            step.participants,
            r.unit,
            summary::describe(step)
        );
    }
    s += &format!("{}: {}\n", r.verdict.to_uppercase(), r.summary);
    s
}
