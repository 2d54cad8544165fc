//! `configs/sfu.toml`: parsing and validation. Errors name the file, the line and the fix.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use crate::{IceServers, SfuConfig};

/// Settings for the binary around the SFU (metrics, logs, drain).
#[derive(Debug, Clone)]
pub struct OpsConfig {
    pub metrics: Option<SocketAddr>,
    pub log_level: String,
    pub log_json: bool,
    pub drain_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {message}; fix: {fix}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
    pub fix: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Doc {
    #[serde(default)]
    http: HttpDoc,
    #[serde(default)]
    media: MediaDoc,
    #[serde(default)]
    rooms: RoomsDoc,
    #[serde(default)]
    ice: IceDoc,
    #[serde(default)]
    ops: OpsDoc,
    #[serde(default)]
    cascade: CascadeDoc,
    #[serde(default)]
    egress: crate::egress::config::EgressDoc,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct CascadeDoc {
    directory: Option<String>,
    listen: Option<String>,
    advertise: Option<String>,
    node: Option<String>,
    cluster_secret: Option<String>,
    cluster_secret_file: Option<String>,
    max_load: Option<u32>,
    public_url: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct HttpDoc {
    listen: Option<String>,
    admin_token: Option<String>,
    admin_token_file: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct MediaDoc {
    listen: Option<String>,
    public_ip: Option<String>,
    pin_cpus: Option<Vec<usize>>,
    workers: Option<usize>,
    max_peers: Option<usize>,
    bandwidth_estimation: Option<bool>,
    initial_estimate_kbps: Option<u64>,
    egress: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RoomsDoc {
    spill_at: Option<usize>,
    audio_slots: Option<usize>,
    last_n: Option<usize>,
    token_secrets: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct IceDoc {
    urls: Option<Vec<String>>,
    secret: Option<String>,
    ttl_seconds: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct OpsDoc {
    metrics: Option<String>,
    log_level: Option<String>,
    log_format: Option<String>,
    drain_timeout_seconds: Option<u64>,
}

/// Line of `section.key` (1-based): the key's first occurrence after its `[section]` header.
fn line_of(text: &str, dotted: &str) -> Option<usize> {
    let (section, key) = dotted.split_once('.')?;
    let header = format!("[{section}]");
    let mut in_section = false;
    for (i, l) in text.lines().enumerate() {
        let l = l.trim_start();
        if l.starts_with('[') {
            in_section = l.starts_with(&header);
        } else if in_section && l.starts_with(key) {
            return Some(i + 1);
        }
    }
    None
}

/// Parses `text` (from `file`) into the SFU config and the ops settings.
pub fn parse_toml(text: &str, file: &str) -> Result<(SfuConfig, OpsConfig), ConfigError> {
    let err = |key: &str, message: String, fix: &str| ConfigError {
        file: file.to_owned(),
        line: line_of(text, key),
        message,
        fix: fix.to_owned(),
    };
    let doc: Doc = toml::from_str(text).map_err(|e| ConfigError {
        file: file.to_owned(),
        line: e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1),
        message: e.message().trim().to_owned(),
        fix: "correct the key or value; configs/sfu.toml documents every key".into(),
    })?;
    let mut c = SfuConfig::default();
    let addr = |key: &str, v: &str| -> Result<SocketAddr, ConfigError> {
        v.parse().map_err(|_| {
            let short = key.rsplit('.').next().unwrap_or(key);
            err(
                key,
                format!("{short} = \"{v}\" is not an IP:port"),
                "write it as \"127.0.0.1:8280\" or \"[::]:8280\"",
            )
        })
    };
    if let Some(v) = &doc.http.listen {
        c.http = addr("http.listen", v)?;
    }
    c.admin_token = admin_token(&doc.http, &err)?;
    if let Some(v) = &doc.media.listen {
        c.media = addr("media.listen", v)?;
    }
    if let Some(v) = doc.media.public_ip.as_deref().filter(|v| !v.is_empty()) {
        c.public_ip = Some(v.parse::<IpAddr>().map_err(|_| {
            err(
                "media.public-ip",
                format!("public-ip = \"{v}\" is not an IP address"),
                "give the public IPv4 or IPv6 address, or \"\" to announce the listen address",
            )
        })?);
    }
    if let Some(v) = doc.media.pin_cpus.filter(|v| !v.is_empty()) {
        c.pin_cpus = Some(v);
    }
    if let Some(v) = doc.media.workers {
        if v > crate::workers::MAX_WORKERS {
            return Err(err(
                "media.workers",
                format!("workers = {v} is more than {}", crate::workers::MAX_WORKERS),
                "use 0 (one per CPU) or the number of cores to use",
            ));
        }
        c.workers = v;
    }
    if let Some(v) = doc.media.bandwidth_estimation {
        c.bandwidth_estimation = v;
    }
    if let Some(v) = doc.media.initial_estimate_kbps {
        if !(100..=100_000).contains(&v) {
            return Err(err(
                "media.initial-estimate-kbps",
                format!("initial-estimate-kbps = {v} is outside 100..=100000"),
                "set what one subscriber usually receives, e.g. 3000",
            ));
        }
        c.initial_estimate_kbps = v;
    }
    if let Some(v) = &doc.media.egress {
        c.egress_path = crate::EgressPath::parse(v).ok_or_else(|| {
            err(
                "media.egress",
                format!("egress = {v:?} is not a known egress path"),
                "use \"fast\" (the default) or \"str0m\"",
            )
        })?;
    }
    if let Some(v) = doc.media.max_peers {
        if v == 0 {
            return Err(err(
                "media.max-peers",
                "max-peers = 0 admits nobody".into(),
                "set 1 or more",
            ));
        }
        c.max_peers = v;
    }
    if let Some(v) = doc.rooms.spill_at {
        c.room_spill = v;
    }
    if let Some(v) = doc.rooms.audio_slots {
        if !(1..=16).contains(&v) {
            return Err(err(
                "rooms.audio-slots",
                format!("audio-slots = {v} is out of range"),
                "use 1 to 16 (3 is usual)",
            ));
        }
        c.audio_slots = v;
    }
    if let Some(v) = doc.rooms.last_n {
        c.last_n = v;
    }
    if let Some(v) = doc.rooms.token_secrets {
        if v.iter().any(|s| s.len() < 16) {
            return Err(err(
                "rooms.token-secrets",
                "a token secret is shorter than 16 characters".into(),
                "use long random secrets, e.g. `openssl rand -hex 32`",
            ));
        }
        c.room_token_secrets = v;
    }
    let urls = doc.ice.urls.unwrap_or_default();
    if let Some(bad) = urls.iter().find(|u| {
        !["stun:", "stuns:", "turn:", "turns:"]
            .iter()
            .any(|p| u.starts_with(p))
    }) {
        return Err(err(
            "ice.urls",
            format!("ICE server URL \"{bad}\" is not stun:, stuns:, turn: or turns:"),
            "write e.g. \"turn:turn.example.coop:3478?transport=udp\"",
        ));
    }
    if !urls.is_empty() {
        let secret = doc.ice.secret.unwrap_or_default();
        let has_turn = urls.iter().any(|u| u.starts_with("turn"));
        if has_turn && secret.is_empty() {
            return Err(err(
                "ice.secret",
                "TURN URLs are listed but [ice] secret is empty".into(),
                "set secret to plenary turn's static-auth-secret",
            ));
        }
        c.ice_servers = Some(IceServers {
            urls,
            secret,
            ttl: Duration::from_secs(doc.ice.ttl_seconds.unwrap_or(86400)),
        });
    }
    c.cascade = cascade_doc(&doc.cascade, &err, &addr)?;
    c.egress = crate::egress::config::parse(&doc.egress, &err)?;
    let metrics = match doc.ops.metrics.as_deref() {
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9642))),
        Some("") => None,
        Some(v) => Some(addr("ops.metrics", v)?),
    };
    let log_json = match doc.ops.log_format.as_deref() {
        None | Some("plain") => false,
        Some("json") => true,
        Some(v) => {
            return Err(err(
                "ops.log-format",
                format!("log-format = \"{v}\" is not known"),
                "use \"plain\" or \"json\"",
            ))
        }
    };
    let ops = OpsConfig {
        metrics,
        log_level: doc.ops.log_level.unwrap_or_else(|| "info".into()),
        log_json,
        drain_timeout: Duration::from_secs(doc.ops.drain_timeout_seconds.unwrap_or(60)),
    };
    Ok((c, ops))
}

/// Shortest admin token accepted: the room listing names every participant.
pub const MIN_ADMIN_TOKEN: usize = 16;

/// Reads an admin token file: its first line, trimmed, at least [`MIN_ADMIN_TOKEN`] long.
pub fn read_admin_token_file(path: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read admin token file {path}: {e}"))?;
    check_admin_token(text.lines().next().unwrap_or("").trim())
}

/// An admin token as given (flag or file), refused when too short to be a secret.
pub fn check_admin_token(token: &str) -> Result<String, String> {
    if token.len() < MIN_ADMIN_TOKEN {
        return Err(format!(
            "the admin token is shorter than {MIN_ADMIN_TOKEN} characters"
        ));
    }
    Ok(token.to_owned())
}

fn admin_token(
    d: &HttpDoc,
    err: &dyn Fn(&str, String, &str) -> ConfigError,
) -> Result<Option<String>, ConfigError> {
    let set = |v: &Option<String>| v.as_deref().filter(|v| !v.is_empty()).map(str::to_owned);
    let fix = "use a long random token, e.g. `openssl rand -hex 32 > /etc/plenary/admin.token`";
    match (set(&d.admin_token), set(&d.admin_token_file)) {
        (Some(_), Some(_)) => Err(err(
            "http.admin-token-file",
            "both admin-token and admin-token-file are set".into(),
            "keep one (a file keeps the token out of the config)",
        )),
        (Some(t), None) => check_admin_token(&t)
            .map(Some)
            .map_err(|e| err("http.admin-token", e, fix)),
        (None, Some(f)) => read_admin_token_file(&f)
            .map(Some)
            .map_err(|e| err("http.admin-token-file", e, fix)),
        (None, None) => Ok(None),
    }
}

/// The cascade defaults: links on UDP 8282 of loopback, the node named after the host.
pub fn default_cascade() -> crate::CascadeConfig {
    crate::CascadeConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 8282)),
        advertise: None,
        directory: String::new(),
        secret: Vec::new(),
        node: hostname(),
        max_load: 0,
        public_url: None,
    }
}

/// Checks a cascade config once every source (file, flags) has been applied.
pub fn check_cascade(c: &crate::CascadeConfig) -> Result<(), String> {
    if c.directory.is_empty() {
        return Err(
            "cascading needs a directory: set [cascade] directory or --directory redis://HOST:PORT"
                .into(),
        );
    }
    if !c.directory.starts_with("redis://") {
        return Err(format!(
            "directory \"{}\" is not a redis://HOST:PORT[/DB] URL",
            c.directory
        ));
    }
    if c.secret.len() < 16 {
        return Err("cascading needs a cluster secret of at least 16 bytes: set [cascade] cluster-secret(-file) or --cluster-secret(-file); every node of the cluster uses the same".into());
    }
    let dialled = c.advertise.unwrap_or(c.listen);
    if dialled.ip().is_unspecified() || (dialled.port() == 0 && c.advertise.is_some()) {
        return Err(format!(
            "other nodes cannot dial {dialled}: with cascade listen on {}, set [cascade] advertise \
             (or --cascade-advertise) to the IP:PORT they reach this node's links at",
            c.listen
        ));
    }
    if c.node.is_empty() || c.node.contains(char::is_whitespace) {
        return Err(format!(
            "node name \"{}\" must be non-empty without spaces",
            c.node
        ));
    }
    Ok(())
}

/// Reads a cluster secret file: its first line, trimmed.
pub fn read_secret_file(path: &str) -> Result<Vec<u8>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read cluster secret file {path}: {e}"))?;
    Ok(text.lines().next().unwrap_or("").trim().as_bytes().to_vec())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "plenary".to_owned())
}

fn cascade_doc(
    d: &CascadeDoc,
    err: &dyn Fn(&str, String, &str) -> ConfigError,
    addr: &dyn Fn(&str, &str) -> Result<SocketAddr, ConfigError>,
) -> Result<Option<crate::CascadeConfig>, ConfigError> {
    let set = |v: &Option<String>| v.as_deref().filter(|v| !v.is_empty()).map(str::to_owned);
    let Some(directory) = set(&d.directory) else {
        return Ok(None);
    };
    let mut c = default_cascade();
    c.directory = directory;
    if let Some(v) = set(&d.listen) {
        c.listen = addr("cascade.listen", &v)?;
    }
    if let Some(v) = set(&d.advertise) {
        c.advertise = Some(addr("cascade.advertise", &v)?);
    }
    if let Some(v) = set(&d.node) {
        c.node = v;
    }
    match (set(&d.cluster_secret), set(&d.cluster_secret_file)) {
        (Some(_), Some(_)) => {
            return Err(err(
                "cascade.cluster-secret-file",
                "both cluster-secret and cluster-secret-file are set".into(),
                "keep one (a file keeps the secret out of the config)",
            ))
        }
        (Some(s), None) => c.secret = s.into_bytes(),
        (None, Some(f)) => {
            c.secret = read_secret_file(&f)
                .map_err(|e| err("cascade.cluster-secret-file", e, "give a readable file"))?
        }
        (None, None) => {}
    }
    c.max_load = d.max_load.unwrap_or(0);
    c.public_url = set(&d.public_url);
    check_cascade(&c).map_err(|e| {
        err(
            "cascade.directory",
            e,
            "see the [cascade] section of configs/sfu.toml",
        )
    })?;
    Ok(Some(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMBEDDED: &str = include_str!("../../../configs/sfu.toml");

    #[test]
    fn the_embedded_config_parses_to_the_defaults() {
        let (c, ops) = parse_toml(EMBEDDED, "configs/sfu.toml").unwrap();
        assert_eq!(c.http.to_string(), "127.0.0.1:8280");
        assert_eq!(c.media.to_string(), "127.0.0.1:8281");
        assert_eq!(c.audio_slots, 3);
        assert_eq!(c.last_n, 9);
        assert!(c.ice_servers.is_none() && c.room_token_secrets.is_empty());
        assert_eq!(ops.metrics.unwrap().to_string(), "127.0.0.1:9642");
    }

    #[test]
    fn errors_name_file_line_and_fix() {
        let e = parse_toml("[media]\nmax-peers = 10\nlisten = \"nope\"\n", "x.toml").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(
            e.to_string().starts_with("x.toml:3: listen = \"nope\""),
            "{e}"
        );
        let e = parse_toml("[media]\nworkers = 1\negress = \"quick\"\n", "e.toml").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.to_string().contains("\"fast\""), "{e}");
        let (c, _) = parse_toml("[media]\negress = \"str0m\"\n", "e.toml").unwrap();
        assert_eq!(c.egress_path, crate::EgressPath::Str0m);
        // The documented example parses, with the fast path as its default.
        let example = include_str!("../../../configs/sfu.toml");
        let (c, _) = parse_toml(example, "configs/sfu.toml").unwrap();
        assert_eq!(c.egress_path, crate::EgressPath::Fast);
        assert_eq!(
            crate::SfuConfig::default().egress_path,
            crate::EgressPath::Fast
        );
        let e = parse_toml("[rooms]\nlast-m = 3\n", "y.toml").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.to_string().contains("unknown field"), "{e}");
        let e = parse_toml("[ice]\nurls = [\"turn:x:3478\"]\n", "z.toml").unwrap_err();
        assert!(e.to_string().contains("secret"), "{e}");
        let e = parse_toml("[ice]\nurls = [\"http://x\"]\n", "z.toml").unwrap_err();
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn admin_token_from_key_or_file_and_never_short() {
        let (c, _) = parse_toml(EMBEDDED, "configs/sfu.toml").unwrap();
        assert!(c.admin_token.is_none(), "off by default");
        let (c, _) = parse_toml("[http]\nadmin-token = \"0123456789abcdef\"\n", "a.toml").unwrap();
        assert_eq!(c.admin_token.as_deref(), Some("0123456789abcdef"));
        let e = parse_toml("[http]\nadmin-token = \"short\"\n", "a.toml").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        let dir = std::env::temp_dir().join(format!("plenary-admin-{}", std::process::id()));
        std::fs::write(&dir, "fedcba9876543210fedcba\nignored\n").unwrap();
        let doc = format!("[http]\nadmin-token-file = \"{}\"\n", dir.display());
        let (c, _) = parse_toml(&doc, "a.toml").unwrap();
        let _ = std::fs::remove_file(&dir);
        assert_eq!(c.admin_token.as_deref(), Some("fedcba9876543210fedcba"));
        let e = parse_toml(
            "[http]\nadmin-token = \"0123456789abcdef\"\nadmin-token-file = \"/x\"\n",
            "a.toml",
        )
        .unwrap_err();
        assert!(e.to_string().contains("keep one"), "{e}");
    }

    #[test]
    fn cascade_needs_a_directory_and_a_secret() {
        let (c, _) = parse_toml(EMBEDDED, "configs/sfu.toml").unwrap();
        assert!(c.cascade.is_none(), "a single node by default");
        let e = parse_toml(
            "[cascade]\ndirectory = \"redis://127.0.0.1:6379\"\n",
            "c.toml",
        )
        .unwrap_err();
        assert!(e.to_string().contains("cluster secret"), "{e}");
        assert_eq!(e.line, Some(2), "{e}");
        let (c, _) = parse_toml(
            "[cascade]\ndirectory = \"redis://127.0.0.1:6379/2\"\ncluster-secret = \"0123456789abcdef0\"\nnode = \"a\"\nlisten = \"127.0.0.1:9000\"\n",
            "c.toml",
        )
        .unwrap();
        let c = c.cascade.unwrap();
        assert_eq!((c.node.as_str(), c.listen.port()), ("a", 9000));
        let e = parse_toml(
            "[cascade]\ndirectory = \"http://x\"\ncluster-secret = \"0123456789abcdef0\"\n",
            "c.toml",
        )
        .unwrap_err();
        assert!(e.to_string().contains("redis://"), "{e}");
    }

    #[test]
    fn a_wildcard_cascade_listener_needs_an_advertised_address() {
        let base = "[cascade]\ndirectory = \"redis://127.0.0.1:6379\"\ncluster-secret = \"0123456789abcdef0\"\nlisten = \"0.0.0.0:8282\"\n";
        let e = parse_toml(base, "c.toml").unwrap_err();
        assert!(e.to_string().contains("advertise"), "{e}");
        let (c, _) =
            parse_toml(&format!("{base}advertise = \"192.0.2.7:8282\"\n"), "c.toml").unwrap();
        assert_eq!(
            c.cascade.unwrap().advertise,
            Some("192.0.2.7:8282".parse().unwrap())
        );
        let e = parse_toml(&format!("{base}advertise = \"nowhere\"\n"), "c.toml").unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
    }
}
