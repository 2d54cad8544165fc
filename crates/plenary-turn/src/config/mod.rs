//! The TURN server's configuration: one typed struct, loaded from Plenary's TOML
//! (`configs/turn.toml`) or from coturn's `turnserver.conf` syntax.

mod coturn;
mod coturn_options;
mod coturn_report;
mod toml_format;
mod validate;
mod values;

#[cfg(test)]
mod tests;

pub use coturn::{parse_coturn, CoturnReport};
pub use toml_format::parse_toml;

use crate::policy::IpRange;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// A config problem, always naming the file, the line (when there is one) and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {message}\n  fix: {fix}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
    pub fix: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TurnConfig {
    /// Addresses to listen on; empty means all (0.0.0.0 and ::).
    pub listening_ips: Vec<IpAddr>,
    /// UDP and TCP (plain, with TLS detected on the same port when TLS is configured).
    pub listening_port: u16,
    /// TLS and plain TCP, detected per connection (BBB advertises both on 443).
    pub tls_listening_port: Option<u16>,
    /// Addresses relay sockets bind to; empty means the listening IPs (or all).
    pub relay_ips: Vec<IpAddr>,
    /// Public address mapping, coturn's `external-ip=PUBLIC[/PRIVATE]`.
    pub external_ips: Vec<ExternalIp>,
    pub min_port: u16,
    pub max_port: u16,
    pub realm: String,
    pub auth: AuthConfig,
    pub tls: Option<TlsConfig>,
    pub peers: PeerRules,
    pub limits: Limits,
    pub ops: OpsConfig,
    /// RFC 6156: an allocation keeps the client's address family unless it asks otherwise.
    pub keep_address_family: bool,
    /// SOFTWARE attribute on authenticated responses; `None` sends none.
    pub software: Option<String>,
    /// On SIGTERM: refuse new allocations, then wait at most this long for current ones.
    pub drain_timeout: Duration,
    /// Worker threads for the UDP data plane (0 = one per core).
    pub workers: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExternalIp {
    pub public: IpAddr,
    /// The local address it maps (`None`: applies to every relay address of its family).
    pub private: Option<IpAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AuthConfig {
    /// Long-term static users: (name, key material).
    pub users: Vec<StaticUser>,
    /// TURN REST shared secrets; all are valid at once so a secret can be rotated.
    pub secrets: Vec<String>,
    /// Separator between expiry and user id in REST usernames (coturn `rest-api-separator`).
    pub rest_separator: char,
    /// Serve without authentication. Only ever set explicitly.
    pub no_auth: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticUser {
    pub name: String,
    pub secret: UserSecret,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserSecret {
    Password(String),
    /// coturn `user=name:0x<32 hex>`: the precomputed MD5 long-term key.
    Key([u8; 16]),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// OpenSSL-style suite names (coturn `cipher-list`); empty means rustls defaults.
    pub cipher_list: Vec<String>,
}

/// Peer filter rules (see `policy`). `allowed` wins over `denied` and the built-in list,
/// except for loopback, which needs `allow_loopback` (enough by itself, as in coturn).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PeerRules {
    pub allowed: Vec<IpRange>,
    pub denied: Vec<IpRange>,
    pub allow_loopback: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Allocations per user (0 = unlimited) → 486.
    pub user_quota: u32,
    /// Allocations in total (0 = unlimited) → 486.
    pub total_quota: u32,
    /// Per-allocation relay bandwidth cap in bytes per second, each direction (0 = none).
    pub max_bps: u64,
    pub default_lifetime: Duration,
    pub max_lifetime: Duration,
    pub permission_lifetime: Duration,
    pub channel_lifetime: Duration,
    pub nonce_lifetime: Duration,
    /// 401 responses per second per worker (excess requests are dropped).
    pub unauthorized_per_sec: u32,
    /// Longest a TCP/TLS connection may stay silent (no complete frame) before it has
    /// authenticated; half-open and abandoned connections are closed after it.
    pub stream_idle_timeout: Duration,
    /// Longest a TLS handshake may take; a client that vanishes mid-handshake is dropped.
    pub tls_handshake_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            user_quota: 0,
            total_quota: 0,
            max_bps: 0,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            nonce_lifetime: Duration::from_secs(600),
            unauthorized_per_sec: 1000,
            stream_idle_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Plain,
    Json,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpsConfig {
    /// Prometheus endpoint; loopback by default. `None` disables it.
    pub metrics_addr: Option<SocketAddr>,
    pub log_format: LogFormat,
    /// tracing filter directive, e.g. "info" or "debug".
    pub log_level: String,
    /// Log to this file instead of stderr (falls back to stderr, with a warning, if it
    /// cannot be opened).
    pub log_file: Option<PathBuf>,
}

impl Default for OpsConfig {
    fn default() -> Self {
        OpsConfig {
            metrics_addr: Some(SocketAddr::from(([127, 0, 0, 1], 9641))),
            log_format: LogFormat::Plain,
            log_level: "info".into(),
            log_file: None,
        }
    }
}

impl Default for TurnConfig {
    /// The embedded default: STUN/TURN on 3478 on all addresses, relays 49152–65535, no
    /// TLS, and no credentials, which means every Allocate is refused until a user or a
    /// secret is configured (Binding still works).
    fn default() -> Self {
        TurnConfig {
            listening_ips: Vec::new(),
            listening_port: 3478,
            tls_listening_port: None,
            relay_ips: Vec::new(),
            external_ips: Vec::new(),
            min_port: 49152,
            max_port: 65535,
            realm: "plenary".into(),
            auth: AuthConfig {
                rest_separator: ':',
                ..AuthConfig::default()
            },
            tls: None,
            peers: PeerRules::default(),
            limits: Limits::default(),
            ops: OpsConfig::default(),
            keep_address_family: false,
            software: Some(concat!("plenary/", env!("CARGO_PKG_VERSION")).into()),
            drain_timeout: Duration::from_secs(60),
            workers: 0,
        }
    }
}

impl ConfigError {
    pub(crate) fn new(
        file: &str,
        line: Option<usize>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        ConfigError {
            file: file.to_string(),
            line,
            message: message.into(),
            fix: fix.into(),
        }
    }
}

impl TurnConfig {
    /// Cross-field checks shared by both formats (ports, TLS files present, ...). File
    /// existence is left to the driver at start: a config may be checked on another host.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        validate::check(self, file)
    }
}
