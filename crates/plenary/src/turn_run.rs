//! Starts the TURN service from a resolved config and runs it until it has drained.

use crate::turn_cmd::Loaded;
use anyhow::Context;
use plenary_ops::logging::{self, LogFormat as OpsLogFormat};
use plenary_turn::config::LogFormat;
use plenary_turn::net;
use tracing::{info, warn};

pub fn run(loaded: Loaded) -> anyhow::Result<()> {
    let config = &loaded.config;
    let format = match config.ops.log_format {
        LogFormat::Plain => OpsLogFormat::Plain,
        LogFormat::Json => OpsLogFormat::Json,
    };
    let log_warning = logging::init(
        &config.ops.log_level,
        format,
        config.ops.log_file.as_deref(),
    )
    .context("cannot set up logging")?;
    if let Some(warning) = log_warning {
        warn!("{warning}");
    }
    if let Some(report) = &loaded.coturn_report {
        for line in [report.summary_line(), report.differs_line(config)]
            .into_iter()
            .flatten()
        {
            warn!("{line}");
        }
    }
    if !config.auth.no_auth && config.auth.users.is_empty() && config.auth.secrets.is_empty() {
        warn!(
            "no users and no static-auth-secret configured: every Allocate will be refused \
             (STUN Binding still works); set a secret in the config or --static-auth-secret"
        );
    }
    // Metrics, /healthz and /readyz (503 until started and once draining) on one listener.
    let ops = match config.ops.metrics_addr {
        Some(addr) => {
            let ops = net::serve_ops(addr)?;
            net::describe_metrics();
            Some(ops)
        }
        None => None,
    };
    let running = net::start(config)
        .with_context(|| format!("cannot start the TURN server from {}", loaded.source_name))?;
    if let Some(ops) = &ops {
        ops.attach(running.control());
    }
    let addrs = running.addrs();
    info!(
        config = %loaded.source_name,
        udp = ?addrs.udp,
        tcp = ?addrs.tcp,
        tls = ?addrs.tls,
        relay_ips = ?addrs.relay_ips,
        relay_ports = %format!("{}-{}", config.min_port, config.max_port),
        metrics = ?ops.as_ref().map(net::OpsListener::local_addr),
        "plenary turn ready"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal-handling runtime")?;
    runtime
        .block_on(net::run_until_stopped(running))
        .map_err(|e| anyhow::anyhow!("TURN service stopped with errors: {}", e.0.join("; ")))?;
    info!("plenary turn stopped");
    Ok(())
}
