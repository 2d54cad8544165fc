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
    if let Some(line) = loaded.coturn_report.as_ref().and_then(|r| r.summary_line()) {
        warn!("{line}");
    }
    if !config.auth.no_auth && config.auth.users.is_empty() && config.auth.secrets.is_empty() {
        warn!(
            "no users and no static-auth-secret configured: every Allocate will be refused \
             (STUN Binding still works); set a secret in the config or --static-auth-secret"
        );
    }
    if let Some(addr) = config.ops.metrics_addr {
        plenary_ops::metrics::start_exporter(addr)
            .with_context(|| format!("cannot serve Prometheus metrics on {addr}"))?;
        net::describe_metrics();
    }
    let running = net::start(config)
        .with_context(|| format!("cannot start the TURN server from {}", loaded.source_name))?;
    let addrs = running.addrs();
    info!(
        config = %loaded.source_name,
        udp = ?addrs.udp,
        tcp = ?addrs.tcp,
        tls = ?addrs.tls,
        relay_ips = ?addrs.relay_ips,
        relay_ports = %format!("{}-{}", config.min_port, config.max_port),
        metrics = ?config.ops.metrics_addr,
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
