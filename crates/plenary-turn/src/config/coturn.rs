//! coturn `turnserver.conf` syntax: `name=value`, `name value`, bare flags, `#` comments,
//! optional leading `--`. Every option is either honoured, named as unsupported in the
//! report (one line at start), or, when ignoring it would weaken security, an error.
//!
//! The result should behave as coturn does with the same file, with two deliberate
//! differences: Prometheus binds to loopback unless `prometheus-address` says otherwise,
//! and a file without credentials refuses Allocate instead of serving anyone.

use super::coturn_options::{self, Arg, Class, Opt};
pub use super::coturn_report::CoturnReport;
use super::values::{external_ip, parse_key, relative_to, subtract, MULTICAST};
use super::{ConfigError, ExternalIp, OpsConfig, StaticUser, TlsConfig, TurnConfig, UserSecret};
use crate::policy::IpRange;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// coturn's defaults where they differ from Plenary's TOML defaults.
const COTURN_TLS_PORT: u16 = 5349;
const COTURN_PROMETHEUS_PORT: u16 = 9641;

/// Parses coturn syntax. `file` names the source in errors; relative `cert`/`pkey` paths
/// are taken relative to its directory, as coturn does. The result is validated.
pub fn parse_coturn(text: &str, file: &str) -> Result<(TurnConfig, CoturnReport), ConfigError> {
    let mut b = Builder::new(file);
    // Editors on other systems may leave a byte-order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let Some((name, value)) = split_line(raw) else {
            continue;
        };
        let Some(opt) = coturn_options::lookup(name) else {
            return Err(ConfigError::new(
                file,
                Some(line),
                format!("unknown option `{name}`"),
                "remove the line or correct its spelling; Plenary knows every coturn turnserver.conf option",
            ));
        };
        b.line = line;
        b.option(opt, value)?;
    }
    let (config, report) = b.finish()?;
    config.validate(file)?;
    Ok((config, report))
}

/// `name` and `value` (empty for a bare flag), or `None` for a blank or comment line.
/// As in coturn, the name ends at the first space, tab or `=`, and the value starts after
/// the run of them; a value in double quotes loses the quotes.
fn split_line(raw: &str) -> Option<(&str, &str)> {
    let s = raw.trim();
    if s.is_empty() || s.starts_with('#') {
        return None;
    }
    let s = s
        .strip_prefix("--")
        .or_else(|| s.strip_prefix('-'))
        .unwrap_or(s);
    let is_sep = |c: char| c == ' ' || c == '\t' || c == '=';
    let (name, value) = match s.find(is_sep) {
        Some(i) => (&s[..i], s[i..].trim_start_matches(is_sep)),
        None => (s, ""),
    };
    let value = match value.strip_prefix('"') {
        Some(v) => v.strip_suffix('"').unwrap_or(v),
        None => value,
    };
    Some((name, value))
}

struct Builder<'f> {
    file: &'f str,
    line: usize,
    cfg: TurnConfig,
    report: CoturnReport,
    lt_cred_mech: Option<usize>,
    use_auth_secret: Option<usize>,
    cert: Option<(PathBuf, usize)>,
    pkey: Option<(PathBuf, usize)>,
    cipher_list: Vec<String>,
    tls_port: Option<u16>,
    no_tls: bool,
    no_dtls: bool,
    prometheus: bool,
    prometheus_port: u16,
    prometheus_ip: Option<IpAddr>,
    no_multicast: bool,
    simple_log: bool,
}

impl<'f> Builder<'f> {
    fn new(file: &'f str) -> Self {
        // coturn sends no SOFTWARE attribute unless asked, and has no metrics unless asked.
        let defaults = TurnConfig::default();
        let cfg = TurnConfig {
            software: None,
            ops: OpsConfig {
                metrics_addr: None,
                ..defaults.ops.clone()
            },
            ..defaults
        };
        Builder {
            file,
            line: 0,
            cfg,
            report: CoturnReport::default(),
            lt_cred_mech: None,
            use_auth_secret: None,
            cert: None,
            pkey: None,
            cipher_list: Vec::new(),
            tls_port: None,
            no_tls: false,
            no_dtls: false,
            prometheus: false,
            prometheus_port: COTURN_PROMETHEUS_PORT,
            prometheus_ip: None,
            no_multicast: false,
            simple_log: false,
        }
    }

    fn error(&self, message: impl Into<String>, fix: impl Into<String>) -> ConfigError {
        ConfigError::new(self.file, Some(self.line), message, fix)
    }

    fn option(&mut self, opt: &Opt, value: &str) -> Result<(), ConfigError> {
        let name = opt.name;
        let on = match opt.arg {
            Arg::Flag => self.flag(name, value)?,
            Arg::Value if value.is_empty() => {
                return Err(self.error(
                    format!("`{name}` needs a value"),
                    format!("write it as {name}=VALUE, or remove the line"),
                ))
            }
            Arg::Value | Arg::Optional => true,
        };
        match opt.class {
            // `no-udp=off` and the like ask for coturn's default: nothing to report.
            _ if !on => self.flag_off(name),
            Class::Honoured => self.honour(name, value),
            Class::Differs(how) => {
                self.report.differ(name, how);
                self.honour(name, value)
            }
            Class::Unsupported(why) => {
                self.report.note(name, why);
                Ok(())
            }
            Class::Refused(fix) => Err(self.error(
                format!("option `{name}` is not supported by Plenary, and ignoring it could weaken security or open what this file closes"),
                fix,
            )),
        }
    }

    /// coturn's boolean spellings: empty, 1–9, y/yes, t/true, on → true; 0, n/no, f/false,
    /// off → false.
    fn flag(&self, name: &str, value: &str) -> Result<bool, ConfigError> {
        let v = value.trim();
        let first = v.chars().next();
        match first {
            None => Ok(true),
            _ if v.eq_ignore_ascii_case("on") => Ok(true),
            _ if v.eq_ignore_ascii_case("off") => Ok(false),
            Some('0' | 'n' | 'N' | 'f' | 'F') => Ok(false),
            Some('1'..='9' | 'y' | 'Y' | 't' | 'T') => Ok(true),
            _ => Err(self.error(
                format!("`{name}={v}` is not a boolean"),
                "use on/off, yes/no, true/false or 1/0, or write the bare option name for on",
            )),
        }
    }

    /// A honoured flag set to false. Most simply keep the default; a few ask for
    /// something Plenary never does, and the operator should hear about it.
    fn flag_off(&mut self, name: &str) -> Result<(), ConfigError> {
        match name {
            "fingerprint" => self
                .report
                .note("fingerprint=off", "Plenary always sends FINGERPRINT"),
            "no-cli" => self.report.note("no-cli=off", "Plenary has no CLI"),
            "no-tlsv1" | "no-tlsv1_1" | "no-sslv2" | "no-sslv3" => self.report.note(
                name,
                "set to off, but rustls never offers protocols before TLS 1.2",
            ),
            "no-multicast-peers" => {
                self.no_multicast = false;
                self.report.note(
                    "no-multicast-peers=off",
                    "multicast peers stay refused unless allowed-peer-ip names them",
                )
            }
            "no-dtls" => self.report.note("no-dtls=off", "DTLS is never offered"),
            "no-tcp-relay" => self.report.note(
                "no-tcp-relay=off",
                "relays are UDP only (no RFC 6062 TCP relay)",
            ),
            "no-software-attribute" | "prod" => self.cfg.software = TurnConfig::default().software,
            "verbose" if self.cfg.ops.log_level != "trace" => {
                self.cfg.ops.log_level = "info".into()
            }
            "software-attribute" => self.cfg.software = None,
            "lt-cred-mech" => self.lt_cred_mech = None,
            "use-auth-secret" => self.use_auth_secret = None,
            "allow-loopback-peers" => self.cfg.peers.allow_loopback = false,
            "no-auth" => self.cfg.auth.no_auth = false,
            "keep-address-family" => self.cfg.keep_address_family = false,
            "prometheus" => self.prometheus = false,
            "no-tls" => self.no_tls = false,
            _ => {}
        }
        Ok(())
    }

    fn honour(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        match name {
            "listening-port" => self.cfg.listening_port = self.port(name, value)?,
            "tls-listening-port" => self.tls_port = Some(self.port(name, value)?),
            "listening-ip" => {
                let ip = self.ip(name, value)?;
                self.cfg.listening_ips.push(ip);
            }
            "relay-ip" => {
                let ip = self.ip(name, value)?;
                self.cfg.relay_ips.push(ip);
            }
            "external-ip" => {
                let e = self.external_ip(value)?;
                self.cfg.external_ips.push(e);
            }
            // coturn runs relays on one thread when told 0.
            "relay-threads" => self.cfg.workers = self.number::<usize>(name, value)?.max(1),
            "min-port" => self.cfg.min_port = self.port(name, value)?,
            "max-port" => self.cfg.max_port = self.port(name, value)?,
            "allocation-default-address-family" => match value {
                "keep" => self.cfg.keep_address_family = true,
                "ipv4" => self.cfg.keep_address_family = false,
                "ipv6" => self.report.note(
                    "allocation-default-address-family=ipv6",
                    "allocations default to IPv4 as RFC 6156 requires; clients may ask for IPv6",
                ),
                _ => {
                    return Err(self.error(
                        format!("`{name}={value}` is not one of ipv4, ipv6, keep"),
                        format!("write {name}=ipv4, ipv6 or keep"),
                    ))
                }
            },
            "keep-address-family" => self.cfg.keep_address_family = true,
            "lt-cred-mech" => self.lt_cred_mech = Some(self.line),
            "use-auth-secret" => self.use_auth_secret = Some(self.line),
            "no-auth" => self.cfg.auth.no_auth = true,
            "user" => {
                let user = self.user(value)?;
                self.cfg.auth.users.push(user);
            }
            "static-auth-secret" => self.cfg.auth.secrets.push(value.to_string()),
            "rest-api-separator" => self.cfg.auth.rest_separator = self.separator(value)?,
            "realm" => self.cfg.realm = value.to_string(),
            "user-quota" => self.cfg.limits.user_quota = self.number(name, value)?,
            "total-quota" => self.cfg.limits.total_quota = self.number(name, value)?,
            "max-bps" => self.cfg.limits.max_bps = self.number(name, value)?,
            "stale-nonce" => match self.seconds(name, value, 600, true)? {
                Some(d) => self.cfg.limits.nonce_lifetime = d,
                None => self.report.note(
                    "stale-nonce=0",
                    "nonces always expire in Plenary; 600 s is used",
                ),
            },
            "max-allocate-lifetime" => {
                let max = self.required_seconds(name, value, 3600)?;
                let l = &mut self.cfg.limits;
                l.max_lifetime = max;
                // coturn grants min(requested or 600 s, max); keep the default inside.
                l.default_lifetime = l.default_lifetime.min(max);
            }
            "channel-lifetime" => {
                self.cfg.limits.channel_lifetime = self.required_seconds(name, value, 600)?
            }
            "permission-lifetime" => {
                self.cfg.limits.permission_lifetime = self.required_seconds(name, value, 300)?
            }
            "no-multicast-peers" => self.no_multicast = true,
            "no-dtls" => self.no_dtls = true,
            "no-tcp-relay" | "no-sslv2" | "no-sslv3" | "no-tlsv1" | "no-tlsv1_1" | "no-cli"
            | "no-rfc5780" | "fingerprint" | "no-stdout-log" | "no-auth-pings"
            | "no-dynamic-ip-list" | "no-dynamic-realms" => {} // Plenary always behaves this way.
            "simple-log" => self.simple_log = true,
            "no-loopback-peers" => self.cfg.peers.allow_loopback = false,
            "allow-loopback-peers" => self.cfg.peers.allow_loopback = true,
            "allowed-peer-ip" => {
                let r = self.range(name, value)?;
                self.cfg.peers.allowed.push(r);
            }
            "denied-peer-ip" => {
                let r = self.range(name, value)?;
                self.cfg.peers.denied.push(r);
            }
            "no-tls" => self.no_tls = true,
            "cert" => self.cert = Some((self.path(value), self.line)),
            "pkey" => self.pkey = Some((self.path(value), self.line)),
            "cipher-list" => self.cipher_list = cipher_list(value),
            // `Verbose` (extra) is not lowered by a later `verbose`, as in coturn.
            "verbose" if self.cfg.ops.log_level != "trace" => {
                self.cfg.ops.log_level = "debug".into()
            }
            "verbose" => {}
            "Verbose" => self.cfg.ops.log_level = "trace".into(),
            "log-file" => self.cfg.ops.log_file = self.log_file(value),
            "prometheus" => self.prometheus = true,
            "prometheus-port" if value.is_empty() => self.prometheus_port = COTURN_PROMETHEUS_PORT,
            "prometheus-port" => self.prometheus_port = self.port(name, value)?,
            "prometheus-address" => self.prometheus_ip = Some(self.ip(name, value)?),
            "no-software-attribute" | "prod" => self.cfg.software = None,
            "software-attribute" => self.cfg.software = TurnConfig::default().software,
            _ => unreachable!("option `{name}` is marked honoured but has no mapping"),
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(TurnConfig, CoturnReport), ConfigError> {
        let no_secrets = self.cfg.auth.secrets.is_empty();
        let no_users = self.cfg.auth.users.is_empty();
        if let Some(line) = self.use_auth_secret {
            if no_secrets {
                self.line = line;
                return Err(self.error(
                    "use-auth-secret is set but no static-auth-secret is given",
                    "add static-auth-secret=<the secret BBB uses>; Plenary reads no secret database",
                ));
            }
        }
        if let Some(line) = self.lt_cred_mech {
            if no_users && no_secrets {
                self.line = line;
                return Err(self.error(
                    "lt-cred-mech is set but no user= line and no static-auth-secret is given",
                    "add user=NAME:PASSWORD lines or static-auth-secret=SECRET",
                ));
            }
        }
        self.finish_tls()?;
        if self.no_multicast {
            // coturn refuses multicast before looking at allowed-peer-ip; so must we.
            let allowed = std::mem::take(&mut self.cfg.peers.allowed);
            self.cfg.peers.allowed = MULTICAST
                .iter()
                .fold(allowed, |r, &(lo, hi)| subtract(r, lo, hi));
        }
        if self.prometheus {
            let ip = match self.prometheus_ip {
                Some(ip) => ip,
                None => {
                    self.report.differ(
                        "prometheus",
                        "metrics bind to 127.0.0.1, not every address; set prometheus-address to expose them",
                    );
                    IpAddr::V4(Ipv4Addr::LOCALHOST)
                }
            };
            self.cfg.ops.metrics_addr = Some(SocketAddr::new(ip, self.prometheus_port));
        }
        if self.cfg.ops.log_file.is_some() && !self.simple_log {
            self.report.differ(
                "log-file",
                "written to exactly this path, as with coturn's simple-log: no date or pid is added and nothing rolls over; rotate it with logrotate (copytruncate)",
            );
        }
        Ok((self.cfg, self.report))
    }

    fn finish_tls(&mut self) -> Result<(), ConfigError> {
        if self.no_tls {
            self.cfg.tls = None;
            self.cfg.tls_listening_port = None;
            return Ok(());
        }
        if !self.no_dtls && (self.cert.is_some() || self.cfg.tls_listening_port.is_some()) {
            // coturn would also answer DTLS on the TLS port; browsers use TLS or TCP there.
            self.report.note(
                "DTLS",
                "coturn serves it on the TLS port unless no-dtls; Plenary serves TLS and plain TCP there",
            );
        }
        match (self.cert.take(), self.pkey.take()) {
            (Some((cert, _)), Some((key, _))) => {
                self.cfg.tls = Some(TlsConfig {
                    cert,
                    key,
                    cipher_list: std::mem::take(&mut self.cipher_list),
                });
                self.cfg.tls_listening_port = Some(self.tls_port.unwrap_or(COTURN_TLS_PORT));
            }
            (Some((_, line)), None) | (None, Some((_, line))) => {
                self.line = line;
                return Err(self.error(
                    "TLS needs both cert= and pkey=, and only one is given",
                    "add the missing cert= (certificate chain) or pkey= (private key) line, or add no-tls",
                ));
            }
            // A TLS port without certificate: `validate` explains it.
            (None, None) => self.cfg.tls_listening_port = self.tls_port,
        }
        Ok(())
    }

    fn port(&self, name: &str, value: &str) -> Result<u16, ConfigError> {
        match value.trim().parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(self.error(
                format!("`{name}`: `{value}` is not a port number"),
                format!("write {name}=N with N from 1 to 65535"),
            )),
        }
    }

    fn number<T: FromStr>(&self, name: &str, value: &str) -> Result<T, ConfigError> {
        value.trim().parse().map_err(|_| {
            self.error(
                format!("`{name}`: `{value}` is not a whole number in range"),
                format!("write {name}=N with a non-negative whole number"),
            )
        })
    }

    /// Seconds, with coturn's default for an empty value; `None` for 0 when allowed.
    fn seconds(
        &self,
        name: &str,
        value: &str,
        default: u64,
        zero_ok: bool,
    ) -> Result<Option<Duration>, ConfigError> {
        let secs = if value.is_empty() {
            default
        } else {
            self.number::<u32>(name, value)?.into()
        };
        match secs {
            0 if zero_ok => Ok(None),
            0 => Err(self.error(
                format!("`{name}` is 0"),
                format!("give {name} in seconds, at least 1, or remove the line for the default"),
            )),
            s => Ok(Some(Duration::from_secs(s))),
        }
    }

    fn required_seconds(
        &self,
        name: &str,
        value: &str,
        default: u64,
    ) -> Result<Duration, ConfigError> {
        let d = self.seconds(name, value, default, false)?;
        Ok(d.unwrap_or(Duration::from_secs(default)))
    }

    fn ip(&self, name: &str, value: &str) -> Result<IpAddr, ConfigError> {
        value.trim().parse().map_err(|_| {
            self.error(
                format!("`{name}`: `{value}` is not an IP address"),
                format!("write {name}=ADDRESS with an IPv4 or IPv6 address (not a host name)"),
            )
        })
    }

    fn range(&self, name: &str, value: &str) -> Result<IpRange, ConfigError> {
        value.parse().map_err(|why: String| {
            self.error(
                format!("`{name}`: {why}"),
                format!(
                    "write {name}=ADDRESS, {name}=FIRST-LAST (one family) or {name}=NETWORK/BITS"
                ),
            )
        })
    }

    fn external_ip(&self, value: &str) -> Result<ExternalIp, ConfigError> {
        external_ip(value).map_err(|why| {
            self.error(
                format!("`external-ip`: {why}"),
                "write external-ip=PUBLIC or external-ip=PUBLIC/PRIVATE with IP addresses",
            )
        })
    }

    fn user(&self, value: &str) -> Result<StaticUser, ConfigError> {
        let fix = "write user=NAME:PASSWORD, or user=NAME:0x<32 hex digits> for a turnadmin key";
        let Some((name, secret)) = value.split_once(':') else {
            return Err(self.error("`user` has no `:` between name and password", fix));
        };
        if name.is_empty() || secret.is_empty() {
            return Err(self.error("`user` has an empty name or password", fix));
        }
        let secret = match secret.strip_prefix("0x") {
            Some(hex) => UserSecret::Key(parse_key(hex).ok_or_else(|| {
                self.error(
                    format!("the key of user `{name}` is not 32 hex digits"),
                    fix,
                )
            })?),
            None => UserSecret::Password(secret.to_string()),
        };
        Ok(StaticUser {
            name: name.to_string(),
            secret,
        })
    }

    fn separator(&self, value: &str) -> Result<char, ConfigError> {
        let mut chars = value.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => Ok(c),
            _ => Err(self.error(
                format!("rest-api-separator `{value}` is not a single character"),
                "write rest-api-separator=: (or another single character)",
            )),
        }
    }

    fn path(&self, value: &str) -> PathBuf {
        relative_to(self.file, Path::new(value))
    }

    fn log_file(&mut self, value: &str) -> Option<PathBuf> {
        match value {
            "stdout" | "-" => None,
            "syslog" => {
                self.report.note("log-file=syslog", SYSLOG_NOTE);
                None
            }
            path => Some(PathBuf::from(path)),
        }
    }
}

const SYSLOG_NOTE: &str = "logs go to stderr, which journald collects under systemd";

/// `cipher-list="A:B:C"` → `[A, B, C]`; OpenSSL's `DEFAULT` means rustls defaults.
fn cipher_list(value: &str) -> Vec<String> {
    if value.trim().eq_ignore_ascii_case("DEFAULT") {
        return Vec::new();
    }
    value
        .split(':')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}
