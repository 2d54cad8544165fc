//! `plenary sfu`: config (embedded `configs/sfu.toml`, `--config`, flag overrides), then the
//! SFU until SIGTERM has drained it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use plenary_ops::logging::{self, LogFormat};
use plenary_ops::signals::{SignalEvent, Signals};
use plenary_sfu::config::{parse_toml, OpsConfig};
use plenary_sfu::SfuConfig;
use tracing::{info, warn};

const EMBEDDED_DEFAULT: &str = include_str!("../../../configs/sfu.toml");

#[derive(Args)]
pub struct SfuArgs {
    /// Plenary SFU config (every key documented in configs/sfu.toml, which is also the
    /// embedded default).
    #[arg(long, value_name = "FILE.toml")]
    config: Option<PathBuf>,
    /// HTTP listener for WHIP, WHEP, the room WebSocket and the demo page (overrides
    /// [http] listen).
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// The UDP socket every peer's media uses (overrides [media] listen).
    #[arg(long, value_name = "ADDR")]
    media: Option<SocketAddr>,
    /// IP announced in ICE candidates instead of the media socket's (overrides
    /// [media] public-ip).
    #[arg(long, value_name = "IP")]
    public_ip: Option<IpAddr>,
    /// Prometheus listener (overrides [ops] metrics).
    #[arg(long, value_name = "ADDR", conflicts_with = "no_metrics")]
    metrics: Option<SocketAddr>,
    /// Do not serve Prometheus metrics.
    #[arg(long)]
    no_metrics: bool,
    /// Log filter, e.g. "debug" or "plenary_sfu=debug,info" (overrides [ops] log-level).
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Cascade: QUIC (UDP) address the links to other nodes listen on (overrides
    /// [cascade] listen; default 127.0.0.1:8282).
    #[arg(long = "cascade", value_name = "ADDR")]
    cascade_listen: Option<SocketAddr>,
    /// Cascade: the address other nodes dial for this node's links, when it is not the
    /// listen address (a 0.0.0.0 listener, NAT, a proxy). Overrides [cascade] advertise.
    #[arg(long, value_name = "IP:PORT")]
    cascade_advertise: Option<SocketAddr>,
    /// Cascade: the Redis (or Valkey) directory every node of the cluster shares,
    /// redis://HOST:PORT[/DB]. Without it (and without [cascade] directory) the SFU is a
    /// single node.
    #[arg(long, value_name = "URL")]
    directory: Option<String>,
    /// Cascade: the secret every node of the cluster shares (at least 16 bytes); links from
    /// nodes without it are refused. Prefer --cluster-secret-file: arguments are visible
    /// in ps.
    #[arg(long, value_name = "SECRET", conflicts_with = "cluster_secret_file")]
    cluster_secret: Option<String>,
    /// Cascade: file whose first line is the cluster secret.
    #[arg(long, value_name = "FILE")]
    cluster_secret_file: Option<PathBuf>,
    /// Cascade: this node's name in the directory and on links (default: the hostname).
    #[arg(long, value_name = "NAME")]
    node: Option<String>,
    /// File whose first line is the admin token (16+ characters) that `GET /rooms` asks for
    /// as `Authorization: Bearer`; overrides [http] admin-token(-file). Without a token the
    /// listing answers 403.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
}

pub fn load(args: &SfuArgs) -> anyhow::Result<(SfuConfig, OpsConfig, String)> {
    let (text, name) = match &args.config {
        Some(p) => (
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read config {}", p.display()))?,
            p.display().to_string(),
        ),
        None => (
            EMBEDDED_DEFAULT.to_owned(),
            "<embedded configs/sfu.toml>".to_owned(),
        ),
    };
    let (mut sfu, mut ops) = parse_toml(&text, &name)?;
    // Egresses started over HTTP run this same executable as `plenary egress`.
    if sfu.egress.binary.is_none() {
        sfu.egress.binary = std::env::current_exe().ok();
    }
    if let Some(a) = args.http {
        sfu.http = a;
    }
    if let Some(a) = args.media {
        sfu.media = a;
    }
    if let Some(ip) = args.public_ip {
        sfu.public_ip = Some(ip);
    }
    if args.no_metrics {
        ops.metrics = None;
    } else if let Some(a) = args.metrics {
        ops.metrics = Some(a);
    }
    if let Some(l) = &args.log_level {
        ops.log_level = l.clone();
    }
    if let Some(f) = &args.admin_token_file {
        let token = plenary_sfu::config::read_admin_token_file(&f.display().to_string())
            .map_err(|e| anyhow::anyhow!("--admin-token-file: {e}"))?;
        sfu.admin_token = Some(token);
    }
    let flags = args.cascade_listen.is_some()
        || args.cascade_advertise.is_some()
        || args.directory.is_some()
        || args.cluster_secret.is_some()
        || args.cluster_secret_file.is_some()
        || args.node.is_some();
    if flags {
        let mut c = sfu
            .cascade
            .take()
            .unwrap_or_else(plenary_sfu::config::default_cascade);
        if let Some(a) = args.cascade_listen {
            c.listen = a;
        }
        if let Some(a) = args.cascade_advertise {
            c.advertise = Some(a);
        }
        if let Some(d) = &args.directory {
            c.directory = d.clone();
        }
        if let Some(s) = &args.cluster_secret {
            c.secret = s.as_bytes().to_vec();
        }
        if let Some(f) = &args.cluster_secret_file {
            c.secret = plenary_sfu::config::read_secret_file(&f.display().to_string())
                .map_err(anyhow::Error::msg)?;
        }
        if let Some(n) = &args.node {
            c.node = n.clone();
        }
        plenary_sfu::config::check_cascade(&c).map_err(anyhow::Error::msg)?;
        sfu.cascade = Some(c);
    }
    Ok((sfu, ops, name))
}

pub fn run(args: SfuArgs) -> anyhow::Result<()> {
    let (sfu, ops, name) = load(&args)?;
    let format = if ops.log_json {
        LogFormat::Json
    } else {
        LogFormat::Plain
    };
    if let Some(w) = logging::init(&ops.log_level, format, None).context("cannot set up logging")? {
        warn!("{w}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the HTTP runtime")?;
    runtime.block_on(async move {
        if let Some(addr) = ops.metrics {
            plenary_ops::metrics::start_exporter(addr)
                .with_context(|| format!("cannot serve Prometheus metrics on {addr}"))?;
            plenary_sfu::describe_metrics();
        }
        let mut signals = Signals::new().context("cannot install signal handlers")?;
        let running = plenary_sfu::serve(sfu.clone())
            .await
            .with_context(|| format!("cannot start the SFU from {name}"))?;
        info!(
            config = %name,
            http = %running.http_addr(),
            media = %running.media_addr(),
            metrics = ?ops.metrics,
            "plenary sfu ready: open http://{}/ for the demo room",
            running.http_addr()
        );
        loop {
            let sig = signals.recv().await;
            if sig.event == SignalEvent::Terminate {
                info!(
                    signal = sig.name,
                    peers = running.peers(),
                    timeout_s = ops.drain_timeout.as_secs(),
                    "draining: new sessions get 503; send the signal again to stop now"
                );
                let left = tokio::select! {
                    n = running.drain(ops.drain_timeout) => n,
                    _ = signals.recv() => running.peers(),
                };
                info!(peers_left = left, "stopping");
                break;
            }
        }
        running.shutdown().await;
        info!("plenary sfu stopped");
        anyhow::Ok(())
    })
}
