//! Plenary's own TOML format, documented key by key in `configs/turn.toml`.
//!
//! Every key is optional and falls back to [`TurnConfig::default`], so the defaults live in
//! one place. Unknown keys are errors: a misspelt security setting must not be skipped.

use super::values::{external_ip, parse_key, relative_to};
use super::{ConfigError, LogFormat, StaticUser, TlsConfig, TurnConfig, UserSecret};
use crate::policy::IpRange;
use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Parses Plenary TOML; unknown keys are errors naming the line. The result is validated.
pub fn parse_toml(text: &str, file: &str) -> Result<TurnConfig, ConfigError> {
    let doc: Doc = toml::from_str(text).map_err(|e| toml_error(&e, text, file))?;
    let config = doc.into_config(&Source { text, file })?;
    config.validate(file)?;
    Ok(config)
}

fn toml_error(e: &toml::de::Error, text: &str, file: &str) -> ConfigError {
    let line = e.span().map(|span| line_of(text, span.start));
    let message = e.message().trim().to_string();
    if let Some(option) = coturn_line(text) {
        let fix = format!(
            "this looks like a coturn turnserver.conf (`{option}`), not Plenary TOML: \
             pass it with --coturn-conf {file} (it is read unchanged)"
        );
        return ConfigError::new(file, line, message, fix);
    }
    let fix = if message.contains("unknown field") {
        "remove the key or correct its spelling; configs/turn.toml lists every key"
    } else if message.contains("missing field") {
        "add the missing key; configs/turn.toml shows each section in full"
    } else if message.starts_with("invalid type") || message.starts_with("invalid value") {
        "give the value the type configs/turn.toml documents for this key"
    } else {
        "correct this value or the TOML syntax here; configs/turn.toml documents every key"
    };
    ConfigError::new(file, line, message, fix)
}

/// The name of the first option in a line that reads as coturn's (`name` or `name=value`
/// with a name coturn knows), so a turnserver.conf given to --config is told apart from
/// broken TOML. Only the name: the value may be a secret.
fn coturn_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).find_map(|line| {
        let name = line.split('=').next().unwrap_or("").trim();
        let coturn = name.contains('-')
            && !line.contains('"')
            && !line.contains('[')
            && super::coturn_options::lookup(name).is_some();
        coturn.then_some(name)
    })
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Doc {
    listen: Listen,
    relay: Relay,
    auth: Auth,
    tls: Option<Tls>,
    peers: Peers,
    limits: Limits,
    ops: Ops,
    server: Server,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Listen {
    ips: Option<Vec<Item>>,
    port: Option<u16>,
    tls_port: Option<u16>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Relay {
    ips: Option<Vec<Item>>,
    min_port: Option<u16>,
    max_port: Option<u16>,
    external_ips: Option<Vec<Item>>,
    keep_address_family: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Auth {
    realm: Option<String>,
    secrets: Option<Vec<String>>,
    rest_separator: Option<char>,
    no_auth: Option<bool>,
    users: Option<Vec<User>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Tls {
    cert: PathBuf,
    key: PathBuf,
    #[serde(default)]
    cipher_list: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Peers {
    allowed: Option<Vec<Item>>,
    denied: Option<Vec<Item>>,
    allow_loopback: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Limits {
    user_quota: Option<u32>,
    total_quota: Option<u32>,
    max_bps: Option<u64>,
    default_lifetime: Option<u64>,
    max_lifetime: Option<u64>,
    permission_lifetime: Option<u64>,
    channel_lifetime: Option<u64>,
    nonce_lifetime: Option<u64>,
    unauthorized_per_sec: Option<u32>,
    stream_idle_timeout: Option<u64>,
    tls_handshake_timeout: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Ops {
    metrics_addr: Option<MetricsAddr>,
    log_format: Option<Format>,
    log_level: Option<String>,
    log_file: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Server {
    software: Option<String>,
    drain_timeout: Option<u64>,
    workers: Option<usize>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Format {
    Plain,
    Json,
}

/// A `[[auth.users]]` entry: a name and exactly one of `password` or `key`.
#[derive(Deserialize)]
#[serde(try_from = "RawUser")]
struct User(StaticUser);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    name: String,
    password: Option<String>,
    key: Option<String>,
}

impl TryFrom<RawUser> for User {
    type Error = String;

    fn try_from(u: RawUser) -> Result<Self, String> {
        let secret = match (u.password, u.key) {
            (Some(p), None) => UserSecret::Password(p),
            (None, Some(k)) => UserSecret::Key(parse_key(&k).ok_or_else(|| {
                format!(
                    "key of user `{}` must be 32 hex digits (0x prefix optional)",
                    u.name
                )
            })?),
            _ => {
                return Err(format!(
                    "user `{}` needs exactly one of `password` or `key`",
                    u.name
                ))
            }
        };
        Ok(User(StaticUser {
            name: u.name,
            secret,
        }))
    }
}

/// A list entry parsed after deserializing, keeping its span so an error names the
/// entry's own line rather than the line where the list starts.
type Item = toml::Spanned<String>;

fn ip_addr(s: &str) -> Result<IpAddr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("`{s}` is not an IP address (host names are not resolved)"))
}

/// Where list entries come from, to turn a bad entry into an error at its line.
struct Source<'a> {
    text: &'a str,
    file: &'a str,
}

impl Source<'_> {
    fn list<T>(
        &self,
        items: Option<Vec<Item>>,
        key: &str,
        format: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<Vec<T>>, ConfigError> {
        let Some(items) = items else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let value = parse(item.get_ref()).map_err(|why| {
                ConfigError::new(
                    self.file,
                    Some(line_of(self.text, item.span().start)),
                    format!("`{key}`: {why}"),
                    format!("write each entry of `{key}` as {format}"),
                )
            })?;
            out.push(value);
        }
        Ok(Some(out))
    }
}

/// `"ADDR:PORT"`, or `"off"` to serve no metrics.
struct MetricsAddr(Option<SocketAddr>);

impl<'de> Deserialize<'de> for MetricsAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "off" {
            return Ok(MetricsAddr(None));
        }
        s.parse()
            .map(|a| MetricsAddr(Some(a)))
            .map_err(|_| de::Error::custom(format!("`{s}` is not ADDRESS:PORT (or \"off\")")))
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl Doc {
    fn into_config(self, src: &Source) -> Result<TurnConfig, ConfigError> {
        let file = src.file;
        let mut c = TurnConfig::default();
        let Doc {
            listen,
            relay,
            auth,
            tls,
            peers,
            limits,
            ops,
            server,
        } = self;

        const IP: &str = "an IP address, e.g. \"192.0.2.1\" or \"2001:db8::1\"";
        const RANGE: &str = "\"ADDRESS\", \"FIRST-LAST\" (one family) or \"NETWORK/BITS\"";
        set(
            &mut c.listening_ips,
            src.list(listen.ips, "listen.ips", IP, ip_addr)?,
        );
        set(&mut c.listening_port, listen.port);
        c.tls_listening_port = listen.tls_port;

        set(
            &mut c.relay_ips,
            src.list(relay.ips, "relay.ips", IP, ip_addr)?,
        );
        set(&mut c.min_port, relay.min_port);
        set(&mut c.max_port, relay.max_port);
        let external = src.list(
            relay.external_ips,
            "relay.external_ips",
            "\"PUBLIC\" or \"PUBLIC/PRIVATE\"",
            external_ip,
        )?;
        set(&mut c.external_ips, external);
        set(&mut c.keep_address_family, relay.keep_address_family);

        set(&mut c.realm, auth.realm);
        set(&mut c.auth.secrets, auth.secrets);
        set(&mut c.auth.rest_separator, auth.rest_separator);
        set(&mut c.auth.no_auth, auth.no_auth);
        set(
            &mut c.auth.users,
            auth.users.map(|v| v.into_iter().map(|u| u.0).collect()),
        );

        c.tls = tls.map(|t| TlsConfig {
            cert: relative_to(file, &t.cert),
            key: relative_to(file, &t.key),
            cipher_list: t.cipher_list,
        });

        let range = |s: &str| s.parse::<IpRange>();
        set(
            &mut c.peers.allowed,
            src.list(peers.allowed, "peers.allowed", RANGE, range)?,
        );
        set(
            &mut c.peers.denied,
            src.list(peers.denied, "peers.denied", RANGE, range)?,
        );
        set(&mut c.peers.allow_loopback, peers.allow_loopback);

        let l = &mut c.limits;
        set(&mut l.user_quota, limits.user_quota);
        set(&mut l.total_quota, limits.total_quota);
        set(&mut l.max_bps, limits.max_bps);
        set(&mut l.default_lifetime, limits.default_lifetime.map(secs));
        set(&mut l.max_lifetime, limits.max_lifetime.map(secs));
        set(
            &mut l.permission_lifetime,
            limits.permission_lifetime.map(secs),
        );
        set(&mut l.channel_lifetime, limits.channel_lifetime.map(secs));
        set(&mut l.nonce_lifetime, limits.nonce_lifetime.map(secs));
        set(&mut l.unauthorized_per_sec, limits.unauthorized_per_sec);
        set(
            &mut l.stream_idle_timeout,
            limits.stream_idle_timeout.map(secs),
        );
        set(
            &mut l.tls_handshake_timeout,
            limits.tls_handshake_timeout.map(secs),
        );

        set(&mut c.ops.metrics_addr, ops.metrics_addr.map(|m| m.0));
        set(
            &mut c.ops.log_format,
            ops.log_format.map(|f| match f {
                Format::Plain => LogFormat::Plain,
                Format::Json => LogFormat::Json,
            }),
        );
        set(&mut c.ops.log_level, ops.log_level);
        set(
            &mut c.ops.log_file,
            ops.log_file.map(|f| non_empty(f).map(PathBuf::from)),
        );

        set(&mut c.software, server.software.map(non_empty));
        set(&mut c.drain_timeout, server.drain_timeout.map(secs));
        set(&mut c.workers, server.workers);
        Ok(c)
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}
