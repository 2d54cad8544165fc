//! `plenary turn` and `plenary check-config`: load a config (embedded default, Plenary
//! TOML, or coturn syntax), apply command-line overrides, then validate or run.

use anyhow::{bail, Context};
use clap::Args;
use plenary_turn::config::{parse_coturn, parse_toml, CoturnReport, LogFormat, TurnConfig};
use plenary_turn::policy::IpRange;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// The documented example, which is also the embedded default.
const EMBEDDED_DEFAULT: &str = include_str!("../../../configs/turn.toml");

#[derive(Args, Clone, Default)]
pub struct ConfigSource {
    /// Plenary TOML config (documented in configs/turn.toml).
    #[arg(long, value_name = "FILE.toml", conflicts_with = "coturn_conf")]
    pub config: Option<PathBuf>,
    /// coturn `turnserver.conf` (as BigBlueButton's installer writes it), used unchanged.
    #[arg(long, value_name = "FILE")]
    pub coturn_conf: Option<PathBuf>,
}

#[derive(Args, Clone, Default)]
pub struct TurnArgs {
    #[command(flatten)]
    pub source: ConfigSource,
    /// Override the UDP/TCP listening port (0 picks a free one; the bound port is logged).
    #[arg(long)]
    pub listening_port: Option<u16>,
    /// Override the TLS (+ plain TCP) listening port.
    #[arg(long)]
    pub tls_listening_port: Option<u16>,
    /// Override the listening addresses (repeatable).
    #[arg(long, value_name = "IP")]
    pub listening_ip: Vec<IpAddr>,
    /// Override the relay addresses (repeatable).
    #[arg(long, value_name = "IP")]
    pub relay_ip: Vec<IpAddr>,
    /// Lowest relay port.
    #[arg(long)]
    pub min_port: Option<u16>,
    /// Highest relay port.
    #[arg(long)]
    pub max_port: Option<u16>,
    /// TLS certificate chain (PEM); overrides `cert`.
    #[arg(long, value_name = "PEM")]
    pub cert: Option<PathBuf>,
    /// TLS private key (PEM); overrides `pkey`.
    #[arg(long, value_name = "PEM")]
    pub pkey: Option<PathBuf>,
    /// Realm for long-term credentials.
    #[arg(long)]
    pub realm: Option<String>,
    /// Add a TURN REST shared secret (repeatable; all are valid at once).
    #[arg(
        long,
        value_name = "SECRET",
        env = "PLENARY_TURN_SECRET",
        hide_env_values = true
    )]
    pub static_auth_secret: Vec<String>,
    /// Let peers on loopback be relayed to, as coturn's allow-loopback-peers does (a
    /// `denied-peer-ip` range still refuses them, and this server's own addresses need
    /// `--allowed-peer-ip`). For tests and single-host setups.
    #[arg(long)]
    pub allow_loopback_peers: bool,
    /// Add an allowed peer range (`IP`, `IP-IP` or `IP/LEN`; repeatable).
    #[arg(long, value_name = "RANGE")]
    pub allowed_peer_ip: Vec<IpRange>,
    /// Prometheus endpoint address (loopback by default).
    #[arg(long, value_name = "ADDR", conflicts_with = "no_metrics")]
    pub metrics: Option<SocketAddr>,
    /// Do not serve Prometheus metrics.
    #[arg(long)]
    pub no_metrics: bool,
    /// Log format.
    #[arg(long, value_parser = ["plain", "json"])]
    pub log_format: Option<String>,
    /// Log level or tracing filter (e.g. `debug`, `info,plenary_turn=debug`).
    #[arg(long)]
    pub log_level: Option<String>,
    /// Data-plane worker threads (0 = one per core).
    #[arg(long)]
    pub workers: Option<usize>,
}

/// A loaded config plus what the operator must be told about it.
pub struct Loaded {
    pub config: TurnConfig,
    pub source_name: String,
    pub coturn_report: Option<CoturnReport>,
}

pub fn load(source: &ConfigSource) -> anyhow::Result<Loaded> {
    if let Some(path) = &source.coturn_conf {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read coturn config {name}"))?;
        let (config, report) = parse_coturn(&text, &name)?;
        return Ok(Loaded {
            config,
            source_name: name,
            coturn_report: Some(report),
        });
    }
    let (text, name) = match &source.config {
        Some(path) => {
            let name = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config {name}"))?;
            (text, name)
        }
        None => (
            EMBEDDED_DEFAULT.to_owned(),
            "<embedded configs/turn.toml>".to_owned(),
        ),
    };
    let config = parse_toml(&text, &name)?;
    Ok(Loaded {
        config,
        source_name: name,
        coturn_report: None,
    })
}

impl TurnArgs {
    fn apply(&self, config: &mut TurnConfig) -> anyhow::Result<()> {
        if let Some(port) = self.listening_port {
            config.listening_port = port;
        }
        if let Some(port) = self.tls_listening_port {
            config.tls_listening_port = Some(port);
        }
        if !self.listening_ip.is_empty() {
            config.listening_ips = self.listening_ip.clone();
        }
        if !self.relay_ip.is_empty() {
            config.relay_ips = self.relay_ip.clone();
        }
        if let Some(port) = self.min_port {
            config.min_port = port;
        }
        if let Some(port) = self.max_port {
            config.max_port = port;
        }
        if self.cert.is_some() || self.pkey.is_some() {
            let Some(tls) = config.tls.as_mut() else {
                bail!("--cert/--pkey given but the config enables no TLS listener (set tls-listening-port)");
            };
            if let Some(cert) = &self.cert {
                tls.cert = cert.clone();
            }
            if let Some(key) = &self.pkey {
                tls.key = key.clone();
            }
        }
        if let Some(realm) = &self.realm {
            config.realm = realm.clone();
        }
        config
            .auth
            .secrets
            .extend(self.static_auth_secret.iter().cloned());
        config.peers.allow_loopback |= self.allow_loopback_peers;
        config
            .peers
            .allowed
            .extend(self.allowed_peer_ip.iter().copied());
        if self.no_metrics {
            config.ops.metrics_addr = None;
        } else if let Some(addr) = self.metrics {
            config.ops.metrics_addr = Some(addr);
        }
        match self.log_format.as_deref() {
            Some("json") => config.ops.log_format = LogFormat::Json,
            Some(_) => config.ops.log_format = LogFormat::Plain,
            None => {}
        }
        if let Some(level) = &self.log_level {
            config.ops.log_level = level.clone();
        }
        if let Some(workers) = self.workers {
            config.workers = workers;
        }
        Ok(())
    }
}

/// Loads, applies overrides and validates.
pub fn resolve(args: &TurnArgs) -> anyhow::Result<Loaded> {
    let mut loaded = load(&args.source)?;
    args.apply(&mut loaded.config)?;
    loaded.config.validate(&loaded.source_name)?;
    Ok(loaded)
}

pub fn check(source: ConfigSource) -> anyhow::Result<()> {
    let args = TurnArgs {
        source,
        ..TurnArgs::default()
    };
    let loaded = resolve(&args)?;
    if let Some(report) = &loaded.coturn_report {
        for line in [report.summary_line(), report.differs_line(&loaded.config)]
            .into_iter()
            .flatten()
        {
            println!("{line}");
        }
    }
    println!("{}: OK", loaded.source_name);
    Ok(())
}

pub fn run(args: TurnArgs) -> anyhow::Result<()> {
    let loaded = resolve(&args)?;
    crate::turn_run::run(loaded)
}
